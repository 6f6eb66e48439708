"""Writes botocore_fixtures.json: requests signed by botocore's SigV4Auth, with the canonical
request, string to sign and Authorization header botocore computed, for auth/tests.rs to
compare kiln's verifier with. Run with the e2e venv: .venv/bin/python crates/kiln-api/src/auth/gen_fixtures.py
"""
import base64, json, os, random
from urllib.parse import urlsplit, quote

import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

rng = random.Random(13)
KEY, SECRET = "AKIAKILNTEST0001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


class Recording(SigV4Auth):
    def canonical_request(self, request):
        self.last_cr = super().canonical_request(request)
        return self.last_cr

    def string_to_sign(self, request, canonical_request):
        self.last_sts = super().string_to_sign(request, canonical_request)
        return self.last_sts


SEGMENTS = [
    "2015-03-31", "functions", "my-fn", "invocations", "aliases", "live", "versions",
    quote("arn:aws:lambda:us-east-1:111111111111:function:f", safe=""),
    quote("arn:aws:lambda:us-east-1:111111111111:function:f:prod", safe=""),
    "a%20b", "%7Etilde", "~ok", ".", "..", "", "UPPER", quote("ünï", safe=""), "a+b", "x%2Fy",
    "2018-10-31", "layers", "2019-09-25", "event-invoke-config",
]
QUERY_KEYS = ["Qualifier", "Marker", "MaxItems", "FunctionVersion", "CompatibleRuntime", "a b", "é", "Z", "z", "x~y"]
QUERY_VALUES = ["$LATEST", "1", "50", "ALL", "python3.12", "a b", "a/b", "=", "", "ü", "x+y", "~"]


def gen(i):
    method = rng.choice(["GET", "POST", "PUT", "DELETE"])
    path = "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 5)))
    if rng.random() < 0.2:
        path += "/"
    pairs = []
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        pairs.append((quote(rng.choice(QUERY_KEYS), safe="-_.~"), quote(rng.choice(QUERY_VALUES), safe="-_.~")))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    url = f"http://127.0.0.1:9000{path}" + (f"?{query}" if query else "")
    headers = {"Host": "127.0.0.1:9000"}
    if rng.random() < 0.5:
        headers["Content-Type"] = "application/json"
    if rng.random() < 0.4:
        headers["X-Amz-Invocation-Type"] = rng.choice(["Event", "RequestResponse", "  spaced   out  value  "])
    if rng.random() < 0.3:
        headers["X-Amz-Security-Token"] = "FQoGZXIvYXdzEXAMPLETOKEN" + str(i)
    if rng.random() < 0.2:
        headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    if rng.random() < 0.3:
        headers["X-Amz-Target"] = "Logs_20140328.DescribeLogGroups"
    body = b""
    if method in ("POST", "PUT") and rng.random() < 0.8:
        body = json.dumps({"n": i, "text": "héllo " * rng.randint(0, 5)}).encode()
    service = "logs" if "X-Amz-Target" in headers else "lambda"
    req = AWSRequest(method=method, url=url, headers=headers, data=body)
    auth = Recording(Credentials(KEY, SECRET), service, "us-east-1")
    auth.add_auth(req)
    sent = urlsplit(req.url)
    return {
        "method": method,
        "path": sent.path,
        "query": sent.query,
        "headers": [[k, v] for k, v in req.headers.items()],
        "body_b64": base64.b64encode(body).decode(),
        "service": service,
        "canonical_request": auth.last_cr,
        "string_to_sign": auth.last_sts,
        "authorization": req.headers["Authorization"],
    }


fixtures = {"botocore": botocore.__version__, "access_key_id": KEY, "secret": SECRET,
            "requests": [gen(i) for i in range(40)]}
out = os.path.join(os.path.dirname(__file__), "botocore_fixtures.json")
with open(out, "w") as f:
    json.dump(fixtures, f, indent=1, ensure_ascii=False)
    f.write("\n")
print("wrote", out, len(fixtures["requests"]))
