"""SigV4 authentication and accounts (`kiln serve --auth-keys FILE`).

Every request must be signed by a key of the file; each key acts in its own account, and one
account's functions, layers and logs cannot be found through another. Signed by boto3, by the
AWS CLI, and by hand (botocore's signer on a request that is then altered) for the refusals.
"""

import datetime
import hashlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import kiln_e2e as k
from test_aws_cli import AWS

ALICE = ("AKIAALICE0000000001", "alice/secret+key", "111111111111")
BOB = ("AKIABOB00000000002", "bob-secret", "222222222222")
DAVE = ("AKIADAVE0000000004", "dave-secret", "444444444444")


def keys_text(*keys, limits=None):
    limits = limits or {}
    out = []
    for i, (key_id, secret, account) in enumerate(keys):
        out.append("[key%d]\naws_access_key_id = %s\naws_secret_access_key = %s\naccount_id = %s\n" % (i, key_id, secret, account))
        if account in limits:
            out.append("concurrency_limit = %d\n" % limits[account])
    return "\n".join(out)


def client(server, key, service="lambda"):
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=k.REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120, connect_timeout=10),
    )


@pytest.fixture
def authed(kiln_factory, tmp_path):
    path = tmp_path / "keys"
    path.write_text(keys_text(ALICE, BOB, limits={"111111111111": 200}))
    server = kiln_factory("authed", extra_args=["--auth-keys", str(path)])
    server.keys_path = path
    return server


def send(server, method, path, body=b"", headers=None):
    """A raw request; returns (status, headers, parsed JSON body)."""
    req = urllib.request.Request(server.endpoint + path, data=body if method != "GET" else None, method=method)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {h.lower(): v for h, v in resp.headers.items()}, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, {h.lower(): v for h, v in e.headers.items()}, json.loads(e.read() or b"null")


def signed(server, key, method, path, body=b"", headers=None, service="lambda", when=None):
    """Headers botocore's SigV4 signer gives this request (at `when`, default now)."""
    req = AWSRequest(method=method, url=server.endpoint + path, data=body, headers=dict(headers or {}))
    auth = SigV4Auth(Credentials(key[0], key[1]), service, k.REGION)
    if when is None:
        auth.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            auth.add_auth(req)
    return dict(req.headers.items())


def assert_refused(result, code):
    status, headers, body = result
    assert status == 403, (status, body)
    assert headers.get("x-amzn-errortype", "").startswith(code), headers
    return body["message"]


def test_good_keys_pass_and_each_key_acts_in_its_account(authed):
    alice, bob = client(authed, ALICE), client(authed, BOB)
    name = k.unique_name("auth")
    created = k.create(alice, name, k.rust_zip())
    assert created["FunctionArn"] == "arn:aws:lambda:us-east-1:111111111111:function:%s" % name
    resp, payload = k.invoke(alice, name, {"hello": "kiln"})
    assert resp["StatusCode"] == 200 and resp.get("FunctionError") is None, payload
    assert alice.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 200
    assert bob.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 1000
    # Bob sees nothing of Alice's: by name it is not there; by ARN (his request names Alice's
    # account) it is refused as AWS refuses a caller no policy allows (test_cross_account.py).
    with pytest.raises(ClientError) as e:
        bob.get_function(FunctionName=name)
    assert k.error_code(e.value) == "ResourceNotFoundException"
    for ref in (created["FunctionArn"], "111111111111:function:" + name):
        with pytest.raises(ClientError) as e:
            bob.get_function(FunctionName=ref)
        assert k.error_code(e.value) == "AccessDeniedException", ref
    with pytest.raises(ClientError) as e:
        bob.invoke(FunctionName=created["FunctionArn"], Payload=b"{}")
    assert k.error_code(e.value) == "AccessDeniedException"
    assert [f["FunctionName"] for f in bob.list_functions()["Functions"]] == []
    assert [f["FunctionName"] for f in alice.list_functions()["Functions"]] == [name]


def test_the_same_name_lives_in_two_accounts(authed):
    alice, bob = client(authed, ALICE), client(authed, BOB)
    name = k.unique_name("same")
    k.create(alice, name, k.rust_zip(), Environment={"Variables": {"OWNER": "alice"}})
    k.create(bob, name, k.rust_zip(), Environment={"Variables": {"OWNER": "bob"}}, MemorySize=256)
    a, b = alice.get_function(FunctionName=name)["Configuration"], bob.get_function(FunctionName=name)["Configuration"]
    assert (a["Environment"]["Variables"]["OWNER"], a["MemorySize"]) == ("alice", 128)
    assert (b["Environment"]["Variables"]["OWNER"], b["MemorySize"]) == ("bob", 256)
    assert ":111111111111:" in a["FunctionArn"] and ":222222222222:" in b["FunctionArn"]
    # Deleting one leaves the other.
    alice.delete_function(FunctionName=name)
    assert bob.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
    with pytest.raises(ClientError) as e:
        alice.get_function(FunctionName=name)
    assert k.error_code(e.value) == "ResourceNotFoundException"


def test_layers_and_logs_are_invisible_to_another_account(authed):
    alice, bob = client(authed, ALICE), client(authed, BOB)
    layer = alice.publish_layer_version(LayerName="alice-layer", Content={"ZipFile": k.make_zip({"x.txt": "x"})})
    assert ":111111111111:layer:alice-layer:1" in layer["LayerVersionArn"]
    assert [l["LayerName"] for l in bob.list_layers()["Layers"]] == []
    with pytest.raises(ClientError) as e:
        bob.get_layer_version(LayerName="alice-layer", VersionNumber=1)
    assert k.error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        bob.get_layer_version_by_arn(Arn=layer["LayerVersionArn"])
    assert k.error_code(e.value) == "AccessDeniedException"

    name = k.unique_name("logs")
    k.create(alice, name, k.rust_zip())
    k.invoke(alice, name, {"n": 1})
    group = "/aws/lambda/" + name
    alice_logs, bob_logs = client(authed, ALICE, "logs"), client(authed, BOB, "logs")
    k.wait_for(lambda: alice_logs.describe_log_streams(logGroupName=group)["logStreams"], what="alice's log stream")
    assert group in [g["logGroupName"] for g in alice_logs.describe_log_groups()["logGroups"]]
    assert [g["logGroupName"] for g in bob_logs.describe_log_groups()["logGroups"]] == []
    with pytest.raises(ClientError) as e:
        bob_logs.describe_log_streams(logGroupName=group)
    assert k.error_code(e.value) == "ResourceNotFoundException"


def test_bad_signatures_get_aws_errors(authed):
    path = "/2015-03-31/functions/"
    # No signature at all.
    message = assert_refused(send(authed, "GET", path), "MissingAuthenticationTokenException")
    assert message == "Missing Authentication Token"
    # An unknown key.
    stranger = ("AKIANOBODY000000000", "whatever", "333333333333")
    message = assert_refused(send(authed, "GET", path, headers=signed(authed, stranger, "GET", path)), "UnrecognizedClientException")
    assert message == "The security token included in the request is invalid."
    # A known key with the wrong secret.
    wrong = (ALICE[0], "not-alices-secret", ALICE[2])
    message = assert_refused(send(authed, "GET", path, headers=signed(authed, wrong, "GET", path)), "InvalidSignatureException")
    assert message.startswith("The request signature we calculated does not match the signature you provided.")
    # Signed ten minutes ago.
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    message = assert_refused(send(authed, "GET", path, headers=signed(authed, ALICE, "GET", path, when=past)), "InvalidSignatureException")
    assert message.startswith("Signature expired: %s is now earlier than " % past.strftime("%Y%m%dT%H%M%SZ")), message
    assert message.endswith(" - 5 min.)"), message
    # A garbled Authorization header.
    assert_refused(send(authed, "GET", path, headers={"Authorization": "AWS4-HMAC-SHA256 Credential=x"}), "IncompleteSignatureException")
    # The signed request itself passes.
    status, _, body = send(authed, "GET", path, headers=signed(authed, ALICE, "GET", path))
    assert status == 200 and body["Functions"] == []


def test_a_body_or_header_altered_in_flight_is_refused(authed):
    alice = client(authed, ALICE)
    name = k.unique_name("tamper")
    k.create(alice, name, k.rust_zip())
    path = "/2015-03-31/functions/%s/configuration" % name
    body = json.dumps({"Description": "honest"}).encode()
    headers = signed(authed, ALICE, "PUT", path, body, {"Content-Type": "application/json"})
    evil = json.dumps({"Description": "evil!!"}).encode()
    assert len(evil) == len(body)
    assert_refused(send(authed, "PUT", path, evil, headers), "InvalidSignatureException")
    # A signed header changed.
    altered = dict(headers, **{"Content-Type": "application/x-json"})
    assert_refused(send(authed, "PUT", path, body, altered), "InvalidSignatureException")
    # Another path with the same signature.
    assert_refused(send(authed, "PUT", path.replace("/configuration", "/concurrency"), body, headers), "InvalidSignatureException")
    assert alice.get_function(FunctionName=name)["Configuration"].get("Description", "") == ""
    status, _, out = send(authed, "PUT", path, body, headers)
    assert status == 200 and out["Description"] == "honest"


def test_presigned_urls_work_and_cannot_be_altered(authed):
    alice = client(authed, ALICE)
    name = k.unique_name("presign")
    k.create(alice, name, k.rust_zip())
    url = alice.generate_presigned_url("get_function", Params={"FunctionName": name}, ExpiresIn=60)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert json.loads(resp.read())["Configuration"]["FunctionName"] == name
    for bad in (url.replace("X-Amz-Expires=60", "X-Amz-Expires=600"), url.replace(name, name + "x")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=30)
        assert e.value.code == 403 and e.value.headers["x-amzn-ErrorType"] == "InvalidSignatureException"


def test_sighup_reloads_keys_and_a_bad_file_keeps_the_old_ones(authed):
    dave = client(authed, DAVE)
    with pytest.raises(ClientError) as e:
        dave.list_functions()
    assert k.error_code(e.value) == "UnrecognizedClientException"
    authed.keys_path.write_text(keys_text(ALICE, DAVE))
    authed.proc.send_signal(signal.SIGHUP)
    k.wait_for(lambda: _works(dave), what="dave's key after SIGHUP")
    assert dave.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 1000
    # Alice's account was open with a limit of 200; the file now sets none: back to kiln's 1000.
    alice = client(authed, ALICE)
    assert alice.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 1000
    # A limit set again applies to the open engine at once.
    authed.keys_path.write_text(keys_text(ALICE, DAVE, limits={"111111111111": 300}))
    authed.proc.send_signal(signal.SIGHUP)
    k.wait_for(lambda: alice.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 300, what="alice's new limit")
    assert alice.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 300
    # Bob's key is gone.
    with pytest.raises(ClientError) as e:
        client(authed, BOB).list_functions()
    assert k.error_code(e.value) == "UnrecognizedClientException"
    # A broken file: the keys in force stay, and the log says which line.
    authed.keys_path.write_text(keys_text(ALICE) + "\n[broken]\naws_access_key_id = AKIABROKEN\n")
    authed.proc.send_signal(signal.SIGHUP)
    k.wait_for(lambda: "keeping the previous keys" in authed.stderr_path.read_text(), what="the reload warning")
    log = authed.stderr_path.read_text()
    assert "line 6" in log and "[broken] has no aws_secret_access_key" in log, authed.log_tail()
    assert "dave-secret" not in log and "alice/secret" not in log
    assert _works(dave)


def _works(c):
    try:
        c.list_functions()
        return True
    except ClientError:
        return False


def test_a_bad_keys_file_stops_kiln_naming_the_line(kiln_factory, tmp_path):
    path = tmp_path / "keys"
    path.write_text("[a]\naws_access_key_id = AKIA1234\naws_secret_access_key = s3cr3t-value\naccount_id = 12345\n")
    out = subprocess.run(
        [str(k.KILN_BIN), "serve", "--addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), "--auth-keys", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "line 4: account_id must be 12 digits" in out.stderr, out.stderr
    assert "s3cr3t-value" not in out.stderr


def test_no_keys_refuses_a_non_loopback_address(tmp_path):
    port = k.free_port()
    out = subprocess.run(
        [str(k.KILN_BIN), "serve", "--addr", "0.0.0.0:%d" % port, "--data-dir", str(tmp_path / "d"), "--isolation", "none"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "refusing to listen on 0.0.0.0:%d without authentication" % port in out.stderr, out.stderr
    # With --insecure-no-auth it starts, with a warning.
    server = k.KilnServer(data_dir=tmp_path / "d2", log_dir=tmp_path / "logs", extra_args=["--isolation", "none"])
    server.start()
    server.stop()
    proc = subprocess.Popen(
        [str(k.KILN_BIN), "serve", "--addr", "0.0.0.0:%d" % port, "--data-dir", str(tmp_path / "d3"), "--isolation", "none", "--insecure-no-auth"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        k.wait_for(lambda: _answers("http://127.0.0.1:%d" % port), timeout=60, what="kiln on 0.0.0.0")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert "authentication is off on 0.0.0.0:%d" % port in err, err


def _answers(endpoint):
    try:
        with urllib.request.urlopen(endpoint + "/2015-03-31/functions/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_aws_cli_signs_with_configured_keys(authed, tmp_path):
    if AWS is None:
        pytest.skip("the `aws` CLI is not installed (pip install awscli)")
    creds = tmp_path / "credentials"
    creds.write_text("[alice]\naws_access_key_id = %s\naws_secret_access_key = %s\n[wrong]\naws_access_key_id = %s\naws_secret_access_key = nope\n" % (ALICE[0], ALICE[1], ALICE[0]))
    env = {v: val for v, val in os.environ.items() if not v.startswith("AWS_")}
    env.update({
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_DEFAULT_REGION": k.REGION,
        "AWS_PAGER": "",
        "AWS_MAX_ATTEMPTS": "1",
    })

    def aws(profile, *args):
        cmd = [AWS, "--endpoint-url", authed.endpoint, "--output", "json", "--profile", profile, "lambda"] + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    name = k.unique_name("cli")
    k.create(client(authed, ALICE), name, k.rust_zip())
    ok = aws("alice", "get-function", "--function-name", name)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["Configuration"]["FunctionArn"].split(":")[4] == "111111111111"
    bad = aws("wrong", "list-functions")
    assert bad.returncode != 0 and "InvalidSignatureException" in bad.stderr, bad.stderr


def test_canonical_request_tricks_are_refused(authed):
    """Double encoding, header order and duplicates, enormous headers, replays, signed body hashes."""
    alice = client(authed, ALICE)
    name = k.unique_name("tricks")
    k.create(alice, name, k.rust_zip())
    path = "/2015-03-31/functions/%s/configuration" % name
    # Double encoding: a path signed with `%3A` escaped once is not the path with `%253A`.
    arn_path = "/2015-03-31/functions/%s/configuration" % ("arn%3Aaws%3Alambda%3Aus-east-1%3A111111111111%3Afunction%3A" + name)
    headers = signed(authed, ALICE, "GET", arn_path)
    status, _, body = send(authed, "GET", arn_path, headers=headers)
    assert status == 200 and body["FunctionName"] == name, body
    assert_refused(send(authed, "GET", arn_path.replace("%3A", "%253A"), headers=headers), "InvalidSignatureException")
    assert_refused(send(authed, "GET", arn_path.replace("%3A", ":"), headers=headers), "InvalidSignatureException")
    # Dot segments are removed before the path is compared, so a `..` pointing elsewhere is
    # another path.
    assert_refused(send(authed, "GET", path + "/../../" + name, headers=signed(authed, ALICE, "GET", path)), "InvalidSignatureException")

    # Header order on the wire does not matter; a second value of a signed header does.
    body = json.dumps({"Description": "ordered"}).encode()
    headers = signed(authed, ALICE, "PUT", path, body, {"Content-Type": "application/json", "X-Extra": "a"})
    reordered = dict(reversed(list(headers.items())))
    status, _, out = send(authed, "PUT", path, body, reordered)
    assert status == 200 and out["Description"] == "ordered", out
    headers = signed(authed, ALICE, "PUT", path, body, {"Content-Type": "application/json", "X-Extra": "a"})
    conn_headers = list(headers.items()) + [("X-Extra", "b")]
    status, hdrs, out = _send_raw(authed, "PUT", path, body, conn_headers)
    assert status == 403 and hdrs.get("x-amzn-errortype") == "InvalidSignatureException", (status, out)
    # SignedHeaders out of order or in upper case: not a signature kiln can read.
    auth = headers["Authorization"]
    signed_names = auth.split("SignedHeaders=")[1].split(",")[0]
    shuffled = ";".join(reversed(signed_names.split(";")))
    assert_refused(send(authed, "PUT", path, body, dict(headers, Authorization=auth.replace(signed_names, shuffled))), "IncompleteSignatureException")
    assert_refused(send(authed, "PUT", path, body, dict(headers, Authorization=auth.replace(signed_names, signed_names.upper()))), "IncompleteSignatureException")

    # An enormous Authorization header is refused unread; a giant one never reaches kiln's parser.
    huge = "AWS4-HMAC-SHA256 Credential=%s/20260101/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=%s" % (ALICE[0], "0" * 20000)
    message = assert_refused(send(authed, "GET", path, headers={"Authorization": huge, "X-Amz-Date": "20260101T000000Z"}), "IncompleteSignatureException")
    assert "longer than 8192 bytes" in message and "0000" not in message
    status, _, _ = _send_raw(authed, "GET", path, b"", [("Authorization", "x" * 2_000_000)])
    assert status in (400, 431), status

    # A replay of a good request inside the window passes (SigV4 has no nonce); older, it does not.
    headers = signed(authed, ALICE, "GET", path)
    assert send(authed, "GET", path, headers=headers)[0] == 200
    assert send(authed, "GET", path, headers=headers)[0] == 200
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5, seconds=30)
    message = assert_refused(send(authed, "GET", path, headers=signed(authed, ALICE, "GET", path, when=old)), "InvalidSignatureException")
    assert message.startswith("Signature expired:"), message

    # A body signed through x-amz-content-sha256, then altered: the hash no longer matches.
    body = json.dumps({"Description": "hashed"}).encode()
    sha = hashlib.sha256(body).hexdigest()
    headers = signed(authed, ALICE, "PUT", path, body, {"Content-Type": "application/json", "X-Amz-Content-SHA256": sha})
    evil = json.dumps({"Description": "hacked"}).encode()
    message = assert_refused(send(authed, "PUT", path, evil, headers), "InvalidSignatureException")
    assert "x-amz-content-sha256" in message, message
    # Claiming the altered body's hash breaks the signature instead.
    forged = dict(headers, **{"X-Amz-Content-SHA256": hashlib.sha256(evil).hexdigest()})
    message = assert_refused(send(authed, "PUT", path, evil, forged), "InvalidSignatureException")
    assert message.startswith("The request signature we calculated does not match"), message
    assert alice.get_function_configuration(FunctionName=name).get("Description") == "ordered"
    status, _, out = send(authed, "PUT", path, body, headers)
    assert status == 200 and out["Description"] == "hashed"


def _send_raw(server, method, path, body, header_list):
    """A request with exactly these header lines (repeats kept), over http.client."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlparse(server.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        names = {h.lower() for h, _ in header_list}
        if "host" not in names:
            conn.putheader("Host", u.netloc)
        for h, v in header_list:
            conn.putheader(h, v)
        if body and "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        try:
            parsed = json.loads(data or b"null")
        except ValueError:
            parsed = data
        return resp.status, {h.lower(): v for h, v in resp.getheaders()}, parsed
    finally:
        conn.close()
