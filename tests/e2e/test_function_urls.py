"""Function URLs end to end: the config API through boto3, and the HTTP front through a plain
HTTP client (http.client), by host name and by path, with a Python function that echoes the
payload format 2.0 event or answers in the shape the query asks for."""

import base64
import http.client
import json
import re
import socket
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import kiln_e2e as k

URL_RE = re.compile(r"^http://([a-z0-9]{32})\.lambda-url\.us-east-1\.localhost:(\d+)/$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

HANDLER = r'''
import base64, json, time

def handle(event, context):
    q = event.get("queryStringParameters") or {}
    mode = q.get("mode", "echo")
    if mode == "echo":
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps({"event": event, "request_id": context.aws_request_id})}
    if mode == "plain":
        return {"message": "hi"}
    if mode == "string":
        return "Hello, world!"
    if mode == "cookies":
        return {"statusCode": 201, "headers": {"X-Custom": "v", "Content-Type": "text/plain"},
                "cookies": ["a=1; Path=/", "b=2; Max-Age=60"], "body": "created"}
    if mode == "binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if mode == "malformed":
        return {"statusCode": "abc", "body": 1}
    if mode == "badbase64":
        return {"statusCode": 200, "body": "%%%", "isBase64Encoded": True}
    if mode == "raise":
        raise ValueError("boom")
    if mode == "sleep":
        time.sleep(float(q.get("secs", "5")))
        return "late"
    if mode == "theircors":
        return {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "https://evil.example"}, "body": "x"}
    return {"statusCode": 400, "body": "unknown mode"}
'''


@pytest.fixture(scope="module")
def url_zip():
    return k.python_zip(HANDLER)


def url_id(config):
    m = URL_RE.match(config["FunctionUrl"])
    assert m, config["FunctionUrl"]
    return m.group(1)


def request(server, method, path, url_id_=None, headers=None, body=None, by_path=False):
    """One HTTP request to a function URL; returns (status, headers message, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = dict(headers or {})
    if by_path:
        path = "/lambda-url/%s%s" % (url_id_, path)
    else:
        headers["Host"] = "%s.lambda-url.us-east-1.localhost:%d" % (url_id_, server.port)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.msg, data


def echo(server, uid, path="/", **kw):
    status, _, body = request(server, kw.pop("method", "GET"), path, uid, **kw)
    assert status == 200, body
    return json.loads(body)


def test_url_config_lifecycle_and_errors(lam, lam_raw, deploy, url_zip):
    name = deploy(url_zip, prefix="url")
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert k.http_status(created) == 201
    assert created["FunctionArn"] == k.function_arn(name)
    assert created["AuthType"] == "NONE"
    assert created["InvokeMode"] == "BUFFERED"
    assert ISO_RE.match(created["CreationTime"]), created["CreationTime"]
    assert "Cors" not in created
    uid = url_id(created)

    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert k.error_code(e.value) == "ResourceConflictException"
    assert "FunctionUrlConfig exists for this Lambda function" in e.value.response["Error"]["Message"]

    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == created["FunctionUrl"]
    assert ISO_RE.match(got["LastModifiedTime"])

    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"], "MaxAge": 300}
    updated = lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM", Cors=cors)
    assert updated["AuthType"] == "AWS_IAM"
    assert updated["Cors"] == cors
    assert url_id(updated) == uid, "an update keeps the url id"
    assert updated["LastModifiedTime"] >= updated["CreationTime"]

    # URLs go on $LATEST or an alias; a version number is refused by the model's pattern.
    lam.publish_version(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam_raw.create_function_url_config(FunctionName=name, Qualifier="1", AuthType="NONE")
    assert k.error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam_raw.get_function_url_config(FunctionName=name, Qualifier="nope")
    assert k.error_code(e.value) == "ResourceNotFoundException"
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    on_alias = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    assert on_alias["FunctionArn"] == k.function_arn(name) + ":live"
    assert url_id(on_alias) != uid

    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == [k.function_arn(name), k.function_arn(name) + ":live"]
    page = lam.list_function_url_configs(FunctionName=name, MaxItems=1)
    assert len(page["FunctionUrlConfigs"]) == 1 and "NextMarker" in page

    # Deleting the alias deletes its URL.
    lam.delete_alias(FunctionName=name, Name="live")
    assert len(lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]) == 1

    for bad in (
        {"AuthType": "OPEN"},
        {"AuthType": "NONE", "InvokeMode": "FAST"},
        {"AuthType": "NONE", "Cors": {"MaxAge": 86401}},
        {"AuthType": "NONE", "Cors": {"AllowMethods": ["GET"] * 7}},
    ):
        with pytest.raises(ClientError) as e:
            lam_raw.update_function_url_config(FunctionName=name, **bad)
        assert k.error_code(e.value) == "ValidationException", bad

    lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.get_function_url_config(FunctionName=name)
    assert k.error_code(e.value) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == "The resource you requested does not exist."
    with pytest.raises(ClientError) as e:
        lam.delete_function_url_config(FunctionName=name)
    assert k.error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=k.unique_name("missing"), AuthType="NONE")
    assert k.error_code(e.value) == "ResourceNotFoundException"


def test_requests_become_payload_2_0_events(kiln, lam, deploy, url_zip):
    name = deploy(url_zip, prefix="url")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE"))
    conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=60)
    conn.putrequest("GET", "/some/path?mode=echo&a=1&a=2&b=x%20y", skip_host=True)
    conn.putheader("Host", "%s.lambda-url.us-east-1.localhost:%d" % (uid, kiln.port))
    conn.putheader("X-Multi", "one")
    conn.putheader("X-Multi", "two")
    conn.putheader("Cookie", "c1=v1; c2=v2")
    conn.putheader("User-Agent", "kiln-e2e/1")
    conn.endheaders()
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    assert resp.status == 200
    ev = out["event"]
    assert ev["version"] == "2.0"
    assert ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/some/path"
    assert ev["rawQueryString"] == "mode=echo&a=1&a=2&b=x%20y"
    assert ev["queryStringParameters"] == {"mode": "echo", "a": "1,2", "b": "x y"}
    assert ev["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in ev["headers"]
    assert ev["headers"]["x-multi"] == "one,two"
    assert ev["headers"]["user-agent"] == "kiln-e2e/1"
    assert all(h == h.lower() for h in ev["headers"])
    assert ev["isBase64Encoded"] is False
    assert "body" not in ev
    rc = ev["requestContext"]
    assert rc["accountId"] == k.ACCOUNT
    assert rc["apiId"] == uid and rc["domainPrefix"] == uid
    assert rc["domainName"] == "%s.lambda-url.us-east-1.localhost" % uid
    assert rc["http"] == {
        "method": "GET",
        "path": "/some/path",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "kiln-e2e/1",
    }
    assert rc["requestId"] == out["request_id"], "the event's request id is the invocation's"
    assert re.match(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$", rc["time"]), rc["time"]
    assert abs(rc["timeEpoch"] / 1000 - time.time()) < 600
    assert resp.getheader("x-amzn-RequestId") == out["request_id"]

    # A text body is passed as text, anything else base64-encoded.
    ev = echo(kiln, uid, "/?mode=echo", method="POST", body=b'{"k": "v"}', headers={"Content-Type": "application/json"})["event"]
    assert (ev["body"], ev["isBase64Encoded"]) == ('{"k": "v"}', False)
    raw = bytes(range(256))
    ev = echo(kiln, uid, "/?mode=echo", method="POST", body=raw, headers={"Content-Type": "application/octet-stream"})["event"]
    assert ev["isBase64Encoded"] is True
    assert base64.b64decode(ev["body"]) == raw
    ev = echo(kiln, uid, "/?mode=echo", method="PUT", body=b"\xff\xfe", headers={"Content-Type": "text/plain"})["event"]
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == b"\xff\xfe"
    assert ev["requestContext"]["http"]["method"] == "PUT"


def test_the_path_form_reaches_the_same_function(kiln, lam, deploy, url_zip):
    name = deploy(url_zip, prefix="url")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE"))
    status, _, body = request(kiln, "GET", "/deep/er/path?mode=echo", uid, by_path=True)
    assert status == 200, body
    ev = json.loads(body)["event"]
    assert ev["rawPath"] == "/deep/er/path"
    assert ev["requestContext"]["apiId"] == uid
    status, _, body = request(kiln, "GET", "?mode=plain", uid, by_path=True)
    assert (status, json.loads(body)) == (200, {"message": "hi"})


def test_answers_map_to_http_by_lambdas_rules(kiln, lam, deploy, url_zip):
    name = deploy(url_zip, prefix="url", Timeout=2)
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE"))

    status, h, body = request(kiln, "GET", "/?mode=plain", uid)
    assert (status, h["Content-Type"], json.loads(body)) == (200, "application/json", {"message": "hi"})

    status, h, body = request(kiln, "GET", "/?mode=string", uid)
    assert (status, body) == (200, b"Hello, world!")

    status, h, body = request(kiln, "GET", "/?mode=cookies", uid)
    assert status == 201
    assert h["X-Custom"] == "v" and h["Content-Type"] == "text/plain"
    assert h.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Max-Age=60"]
    assert body == b"created"

    status, h, body = request(kiln, "GET", "/?mode=binary", uid)
    assert (status, h["Content-Type"], body) == (200, "application/octet-stream", bytes(range(256)))

    for mode in ("malformed", "badbase64", "raise"):
        status, _, body = request(kiln, "GET", "/?mode=" + mode, uid)
        assert (status, body) == (502, b"Internal Server Error"), mode

    # A timeout is a function error: 502, as on Lambda.
    status, _, body = request(kiln, "GET", "/?mode=sleep&secs=5", uid)
    assert status == 502, body

    # After all that the function still answers.
    assert request(kiln, "GET", "/?mode=plain", uid)[0] == 200

    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    status, h, body = request(kiln, "GET", "/?mode=plain", uid)
    assert status == 429, body
    assert h["x-amzn-ErrorType"] == "TooManyRequestsException"


def test_unknown_urls_are_404_and_oversize_requests_413(kiln, lam, deploy, url_zip):
    for uid in ("a" * 32, "not-an-id"):
        for by_path in (False, True):
            status, h, body = request(kiln, "GET", "/", uid, by_path=by_path)
            assert status == 404, (uid, by_path, body)
            assert "Message" in json.loads(body)

    name = deploy(url_zip, prefix="url")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE"))
    # The declared length alone is refused, before kiln reads any of it.
    with socket.create_connection(("127.0.0.1", kiln.port), timeout=30) as s:
        s.sendall(
            (
                "POST / HTTP/1.1\r\nHost: %s.lambda-url.us-east-1.localhost\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % (uid, 6 * 1024 * 1024 + 1)
            ).encode()
        )
        head = s.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    # A body just over the limit, sent in full and chunked (no length to judge by).
    conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=60)
    conn.putrequest("POST", "/lambda-url/%s/" % uid)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "text/plain")
    conn.endheaders()
    chunk = b"x" * (1024 * 1024)
    try:
        for _ in range(7):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # kiln may answer and close before the last chunk
    resp = conn.getresponse()
    assert resp.status == 413
    assert "6291456" in json.loads(resp.read())["Message"]

    # Deleting the function deletes its URL.
    lam.delete_function(FunctionName=name)
    assert request(kiln, "GET", "/", uid)[0] == 404


def test_aws_iam_urls_refuse_unsigned_requests(kiln, lam, deploy, url_zip):
    name = deploy(url_zip, prefix="url")
    config = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    uid = url_id(config)
    status, h, body = request(kiln, "GET", "/?mode=plain", uid)
    assert (status, json.loads(body)) == (403, {"Message": "Forbidden"})

    url = "http://127.0.0.1:%d/lambda-url/%s/?mode=echo" % (kiln.port, uid)
    aws_req = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials("AKIDKILNTEST", "secret"), "lambda", "us-east-1").add_auth(aws_req)
    status, _, body = request(kiln, "GET", "/?mode=echo", uid, headers=dict(aws_req.headers.items()), by_path=True)
    assert status == 200, body
    assert json.loads(body)["event"]["requestContext"]["authorizer"]["iam"]["accessKey"] == "AKIDKILNTEST"

    # A malformed Authorization header is no signature.
    status, _, _ = request(kiln, "GET", "/?mode=plain", uid, headers={"Authorization": "AWS4-HMAC-SHA256 nonsense"})
    assert status == 403


def test_cors_preflight_is_answered_without_the_function(kiln, lam, deploy, url_zip):
    name = deploy(url_zip, prefix="url")
    cors = {
        "AllowOrigins": ["https://app.example"],
        "AllowMethods": ["GET", "POST"],
        "AllowHeaders": ["x-token"],
        "ExposeHeaders": ["x-custom"],
        "MaxAge": 600,
        "AllowCredentials": True,
    }
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM", Cors=cors))
    # A preflight needs no signature and never reaches the function (whose answer has a body).
    status, h, body = request(
        kiln,
        "OPTIONS",
        "/?mode=echo",
        uid,
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert (status, body) == (200, b"")
    assert h["Access-Control-Allow-Origin"] == "https://app.example"
    assert h["Access-Control-Allow-Methods"] == "GET,POST"
    assert h["Access-Control-Allow-Headers"] == "x-token"
    assert h["Access-Control-Max-Age"] == "600"
    assert h["Access-Control-Allow-Credentials"] == "true"
    status, h, _ = request(
        kiln, "OPTIONS", "/", uid, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert status == 200 and h["Access-Control-Allow-Origin"] is None

    lam.update_function_url_config(FunctionName=name, AuthType="NONE")
    status, h, body = request(kiln, "GET", "/?mode=theircors", uid, headers={"Origin": "https://app.example"})
    assert (status, body) == (200, b"x")
    assert h["Access-Control-Allow-Origin"] == "https://app.example", "the URL's CORS replaces the function's"
    assert h["Access-Control-Expose-Headers"] == "x-custom"
    status, h, _ = request(kiln, "GET", "/?mode=theircors", uid, headers={"Origin": "https://evil.example"})
    assert status == 200 and h["Access-Control-Allow-Origin"] is None


def test_url_ids_survive_a_restart(kiln_factory, url_zip):
    server = kiln_factory("urls")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("url")
    k.create(lam, name, url_zip)
    config = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    server.restart()
    again = lam.get_function_url_config(FunctionName=name)
    assert again["FunctionUrl"] == config["FunctionUrl"]
    assert again["InvokeMode"] == "RESPONSE_STREAM"
    # A function that answers buffered through a RESPONSE_STREAM URL is mapped by the buffered rules.
    status, _, body = request(server, "GET", "/?mode=plain", url_id(config))
    assert (status, json.loads(body)) == (200, {"message": "hi"})


def test_cli_url_and_deploy_url(kiln, tmp_path, url_zip):
    name = k.unique_name("urlcli")
    zip_path = tmp_path / "fn.zip"
    zip_path.write_bytes(url_zip)
    out = k.run_cli("deploy", name, zip_path, "--runtime", "provided.al2023", "--handler", "handler.handle", "--url", endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    urls = [line for line in out.stdout.splitlines() if line.startswith("http://")]
    assert len(urls) == 1 and URL_RE.match(urls[0]), out.stdout
    shown = k.run_cli("url", name, endpoint=kiln.endpoint)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == urls[0], "kiln url shows the URL deploy created"
    assert "/lambda-url/" in shown.stderr
    uid = URL_RE.match(urls[0]).group(1)
    assert request(kiln, "GET", "/?mode=plain", uid)[0] == 200
    k.run_cli("rm", name, endpoint=kiln.endpoint)
