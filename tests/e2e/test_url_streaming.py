"""RESPONSE_STREAM function URLs and AWS_IAM URLs verified against `--auth-keys` (issue 11).

Streaming: a Python custom runtime speaks raw HTTP to the Runtime API so that it can write a
chunked body with pauses, a prelude or not, error trailers, or forever; and the official
`lambda_runtime` crate's streaming helpers (examples/hello-stream). The client is http.client,
reading the chunked answer a line at a time as it arrives. Whether the first chunk came before
the function finished is judged from the times the function itself writes into its lines.

IAM: requests signed by botocore's own SigV4 signer, with the right key, a wrong secret, no
signature, and another account's key.

These tests run real sandboxes, so they need root and fail (never skip) without it."""

import base64
import hashlib
import http.client
import json
import os
import time
from pathlib import Path

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

import kiln_e2e as k
from test_auth import ALICE, BOB, keys_text
from test_function_urls import HANDLER, url_id

URL_STREAMER = r'''#!/usr/bin/python3
import base64, http.client, json, os, socket, time
HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
PORT = int(PORT)

def chunk(sock, data):
    sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

while True:
    c = http.client.HTTPConnection(HOST, PORT)
    c.request("GET", "/2018-06-01/runtime/invocation/next")
    r = c.getresponse()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(r.read() or b"{}")
    c.close()
    q = event.get("queryStringParameters") or {}
    action = q.get("action", "prelude")
    content_type = "application/vnd.awslambda.http-integration-response" if action == "prelude" else "text/event-stream"
    s = socket.create_connection((HOST, PORT))
    s.sendall(("POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\n"
               "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n"
               "Content-Type: %s\r\n"
               "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"
               % (rid, content_type)).encode())
    trailers = b""
    err = base64.b64encode(json.dumps({"errorType": "Boom", "errorMessage": "boom"}).encode())
    if action in ("prelude", "plain"):
        if action == "prelude":
            prelude = {"statusCode": 201, "headers": {"content-type": "text/plain", "x-stream": "yes"},
                       "cookies": ["a=1; Path=/", "b=2"]}
            chunk(s, json.dumps(prelude).encode() + b"\0" * 8)
        n, pause = int(q.get("n", "3")), float(q.get("pause_ms", "400")) / 1000.0
        for i in range(n):
            chunk(s, json.dumps({"i": i, "at": time.time()}).encode() + b"\n")
            time.sleep(pause)
        chunk(s, json.dumps({"done": True, "at": time.time()}).encode() + b"\n")
    elif action == "fail_first":
        trailers = b"Lambda-Runtime-Function-Error-Type: Boom\r\nLambda-Runtime-Function-Error-Body: " + err + b"\r\n"
    elif action == "fail_later":
        chunk(s, b"first\n")
        trailers = b"Lambda-Runtime-Function-Error-Type: Boom\r\nLambda-Runtime-Function-Error-Body: " + err + b"\r\n"
    elif action == "big":
        total, block = int(q["bytes"]), bytes(range(256)) * 256
        sent = 0
        while sent < total:
            part = block[: min(len(block), total - sent)]
            chunk(s, part)
            sent += len(part)
    elif action == "forever":
        try:
            while True:
                chunk(s, b"tick %f\n" % time.time())
                time.sleep(0.2)
        except OSError:
            os._exit(0)
    s.sendall(b"0\r\n" + trailers + b"\r\n")
    resp = b""
    while b"\r\n\r\n" not in resp:
        got = s.recv(4096)
        if not got:
            break
        resp += got
    s.close()
'''

HELLO_STREAM_BIN = Path(os.environ.get("HELLO_STREAM_BIN", k.TARGET_DIR / "debug" / "hello-stream"))


def need_root():
    if os.geteuid() != 0:
        pytest.fail("these tests need root: kiln runs functions in real sandboxes", pytrace=False)


@pytest.fixture
def streaming_url(kiln, lam, deploy):
    """A RESPONSE_STREAM URL of the raw streaming runtime: its url id."""
    need_root()
    name = deploy(k.script_zip(URL_STREAMER), prefix="urlstream", Timeout=60)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    return url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM"))


def open_stream(server, uid, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/lambda-url/%s%s" % (uid, path), headers=headers or {})
    return conn, conn.getresponse()


def read_lines(resp):
    """[(time received, line)] until the end of the body."""
    out = []
    while True:
        line = resp.readline()
        if not line:
            return out
        out.append((time.time(), line))


def test_a_streaming_url_sends_the_prelude_head_and_the_first_chunk_before_the_function_returns(kiln, streaming_url):
    conn, resp = open_stream(kiln, streaming_url, "/?action=prelude&n=3&pause_ms=400", headers={"Origin": "https://x.example"})
    assert resp.status == 201
    assert resp.getheader("Content-Type") == "text/plain"
    assert resp.getheader("X-Stream") == "yes"
    assert resp.msg.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("x-amzn-RequestId")
    lines = read_lines(resp)
    conn.close()
    parsed = [json.loads(l) for _, l in lines]
    assert [p.get("i") for p in parsed] == [0, 1, 2, None], parsed
    # The function's own clock: it wrote `done` 3 x 400 ms after the first line, which the
    # client already held by then.
    assert lines[0][0] < parsed[-1]["at"], (lines[0][0], parsed[-1])
    assert lines[0][0] < parsed[1]["at"], (lines[0][0], parsed[1])


def test_a_stream_without_a_prelude_is_a_200_with_the_runtimes_content_type(kiln, streaming_url):
    conn, resp = open_stream(kiln, streaming_url, "/?action=plain&n=2&pause_ms=300")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    lines = read_lines(resp)
    conn.close()
    parsed = [json.loads(l) for _, l in lines]
    assert [p.get("i") for p in parsed] == [0, 1, None]
    assert lines[0][0] < parsed[-1]["at"]


def test_failures_before_the_first_byte_are_502_and_after_it_cut_the_stream(kiln, streaming_url):
    conn, resp = open_stream(kiln, streaming_url, "/?action=fail_first")
    assert resp.status == 502
    assert resp.read() == b"Internal Server Error"
    conn.close()
    conn, resp = open_stream(kiln, streaming_url, "/?action=fail_later")
    assert resp.status == 200
    assert resp.readline() == b"first\n"
    # The connection is closed without the chunked body's last chunk.
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    # And the function is still served afterwards.
    conn, resp = open_stream(kiln, streaming_url, "/?action=plain&n=1&pause_ms=0")
    assert resp.status == 200 and len(read_lines(resp)) == 2
    conn.close()


def test_a_streamed_answer_larger_than_the_buffered_limit(kiln, streaming_url):
    size = 7 * 1024 * 1024
    conn, resp = open_stream(kiln, streaming_url, "/?action=big&bytes=%d" % size)
    assert resp.status == 200
    body = resp.read()
    conn.close()
    assert len(body) == size
    block = bytes(range(256)) * 256
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256((block * (size // len(block) + 1))[:size]).hexdigest()


def test_a_client_that_disconnects_mid_stream_frees_the_environment(kiln, streaming_url):
    # Reserved concurrency 1 (the fixture): the next call is served only once the first one's
    # environment is free again; otherwise it would write until its 60 s timeout.
    conn, resp = open_stream(kiln, streaming_url, "/?action=forever")
    assert resp.status == 200
    assert resp.readline().startswith(b"tick ")
    conn.sock.close()
    conn.close()

    def next_call_served():
        c, r = open_stream(kiln, streaming_url, "/?action=plain&n=1&pause_ms=0")
        try:
            if r.status == 429:
                r.read()
                return False
            assert r.status == 200, r.status
            return len(read_lines(r)) == 2
        finally:
            c.close()

    k.wait_for(next_call_served, timeout=30, interval=0.2, what="a URL call served after the disconnect")


def test_the_lambda_runtime_crates_streaming_response_through_a_url(kiln, lam, deploy):
    """examples/hello-stream: `lambda_runtime::streaming::Response` with a `MetadataPrelude`."""
    need_root()
    if not HELLO_STREAM_BIN.exists():
        pytest.fail("%s not found: cargo build -p hello-stream" % HELLO_STREAM_BIN, pytrace=False)
    name = deploy(k.make_zip({"bootstrap": (HELLO_STREAM_BIN.read_bytes(), 0o755)}), prefix="hellostreamurl")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM"))
    conn, resp = open_stream(kiln, uid, "/")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/plain"
    assert resp.msg.get_all("Set-Cookie") == ["flavour=stream"]
    lines = read_lines(resp)
    conn.close()
    parsed = [json.loads(l) for _, l in lines]
    # The function's defaults: four lines 300 ms apart, then `done`.
    assert [p.get("i") for p in parsed] == [0, 1, 2, 3, None], parsed
    assert lines[0][0] * 1000 < parsed[-1]["at_ms"], (lines[0][0], parsed[-1])


# ---- AWS_IAM with --auth-keys --------------------------------------------------------------


@pytest.fixture
def authed(kiln_factory, tmp_path):
    path = tmp_path / "keys"
    path.write_text(keys_text(ALICE, BOB))
    return kiln_factory("urlauth", extra_args=["--auth-keys", str(path)])


def client(server, key):
    return boto3.client(
        "lambda",
        endpoint_url=server.endpoint,
        region_name=k.REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120),
    )


def call(server, uid, path="/?mode=echo", key=None, secret=None, method="GET", body=b"", by_host=False):
    """A request to a URL, signed with `key` (and `secret`, default the key's own) if given."""
    headers = {}
    if by_host:
        headers["Host"] = "%s.lambda-url.us-east-1.localhost:%d" % (uid, server.port)
        url = "http://127.0.0.1:%d%s" % (server.port, path)
    else:
        url = "http://127.0.0.1:%d/lambda-url/%s%s" % (server.port, uid, path)
    if key is not None:
        req = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(Credentials(key[0], secret or key[1]), "lambda", k.REGION).add_auth(req)
        headers = dict(req.headers.items())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(method, url.split(str(server.port), 1)[1], body=body or None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_aws_iam_urls_verify_signatures_against_the_keys(authed):
    need_root()
    alice = client(authed, ALICE)
    name = k.unique_name("iamurl")
    k.create(alice, name, k.python_zip(HANDLER))
    uid = url_id(alice.create_function_url_config(FunctionName=name, AuthType="AWS_IAM"))

    status, body = call(authed, uid, key=ALICE)
    assert status == 200, body
    iam = json.loads(body)["event"]["requestContext"]["authorizer"]["iam"]
    assert (iam["accessKey"], iam["accountId"]) == (ALICE[0], ALICE[2])
    # A signed POST with a body, by host name.
    status, body = call(authed, uid, key=ALICE, method="POST", body=b'{"x":1}', by_host=True)
    assert status == 200, body
    event = json.loads(body)["event"]
    assert (event["isBase64Encoded"], base64.b64decode(event["body"])) == (True, b'{"x":1}')

    forbidden = (403, {"Message": "Forbidden"})
    status, body = call(authed, uid, key=ALICE, secret="not-alices-secret")
    assert (status, json.loads(body)) == forbidden
    status, body = call(authed, uid)
    assert (status, json.loads(body)) == forbidden
    # Bob's signature is good, but the function is Alice's account's and its policy is empty.
    status, body = call(authed, uid, key=BOB)
    assert (status, json.loads(body)) == forbidden
    # An unknown key with a well-formed signature is refused too (it was enough without keys).
    status, body = call(authed, uid, key=("AKIANOBODY000000000", "x"))
    assert (status, json.loads(body)) == forbidden

    # Alice's policy lets Bob's account in: lambda:InvokeFunctionUrl for AWS_IAM URLs, as the
    # console and `aws lambda add-permission --function-url-auth-type AWS_IAM` write it.
    alice.add_permission(FunctionName=name, StatementId="bob-url", Action="lambda:InvokeFunctionUrl",
                         Principal=BOB[2], FunctionUrlAuthType="AWS_IAM")
    status, body = call(authed, uid, key=BOB)
    assert status == 200, body
    iam = json.loads(body)["event"]["requestContext"]["authorizer"]["iam"]
    assert iam["accountId"] == BOB[2], iam
    # An Invoke permission is not a URL permission; and removing the statement shuts Bob out.
    alice.remove_permission(FunctionName=name, StatementId="bob-url")
    alice.add_permission(FunctionName=name, StatementId="bob-invoke", Action="lambda:InvokeFunction",
                         Principal=BOB[2])
    status, body = call(authed, uid, key=BOB)
    assert (status, json.loads(body)) == forbidden


def test_a_url_of_a_function_in_another_account_is_reachable(authed):
    need_root()
    alice = client(authed, ALICE)
    name = k.unique_name("accturl")
    k.create(alice, name, k.python_zip(HANDLER))
    config = alice.create_function_url_config(FunctionName=name, AuthType="NONE")
    uid = url_id(config)
    for by_host in (False, True):
        status, body = call(authed, uid, by_host=by_host)
        assert status == 200, body
        event = json.loads(body)["event"]
        assert event["requestContext"]["accountId"] == ALICE[2]
    status, _ = call(authed, "a" * 32)
    assert status == 404


def test_a_slow_url_client_does_not_grow_kilns_memory(kiln_factory):
    """A client that stops reading a 150 MB stream: the function is held back, not buffered."""
    need_root()
    server = kiln_factory("urlslow")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("urlslow")
    k.create(lam, name, k.script_zip(URL_STREAMER), Timeout=120)
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM"))
    size = 150 * 1024 * 1024

    def rss_mb():
        for line in Path("/proc/%d/status" % server.proc.pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    conn, resp = open_stream(server, uid, "/?action=plain&n=1&pause_ms=0")  # warm: the environment exists
    read_lines(resp)
    conn.close()
    before = rss_mb()
    conn, resp = open_stream(server, uid, "/?action=big&bytes=%d" % size)
    assert resp.status == 200
    got = len(resp.read(64 * 1024))
    # The function could write 150 MB in this pause if nothing held it back.
    time.sleep(3)
    paused = rss_mb()
    while True:
        block = resp.read(1024 * 1024)
        if not block:
            break
        got += len(block)
    conn.close()
    after = rss_mb()
    print("kiln RSS: before %.1f MB, reader paused %.1f MB, after %.1f MB" % (before, paused, after))
    assert got == size
    assert paused < before + 48, (before, paused)
    assert after < before + 48, (before, after)
