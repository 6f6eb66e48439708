"""Response streaming (issue 11): the Runtime API's streaming mode, InvokeWithResponseStream
through boto3's own event-stream decoder, and a buffered Invoke of a function that streams.

The streaming function is a Python custom runtime that speaks raw HTTP to the Runtime API so it
can write a chunked body with pauses, error trailers, or die half-way. It needs real sandboxes,
so these tests need root and fail (never skip) without it."""

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

import kiln_e2e as k

STREAMER = r'''#!/usr/bin/python3
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
    action = event.get("action", "chunks")
    if action == "buffered":
        c = http.client.HTTPConnection(HOST, PORT)
        c.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, body=b'{"buffered":true}')
        c.getresponse().read()
        c.close()
        continue
    s = socket.create_connection((HOST, PORT))
    s.sendall(("POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\n"
               "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n"
               "Content-Type: application/octet-stream\r\n"
               "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n" % rid).encode())
    trailers = b""
    if action == "chunks":
        n, pause = event.get("n", 4), event.get("pause_ms", 300) / 1000.0
        for i in range(n):
            chunk(s, json.dumps({"i": i, "at": time.time()}).encode() + b"\n")
            time.sleep(pause)
        chunk(s, json.dumps({"done": True, "at": time.time()}).encode() + b"\n")
    elif action == "error":
        chunk(s, b"first\n")
        chunk(s, b"second\n")
        err = json.dumps({"errorType": "MidStreamFailure", "errorMessage": "boom mid-stream"}).encode()
        trailers = (b"Lambda-Runtime-Function-Error-Type: MidStreamFailure\r\n"
                    b"Lambda-Runtime-Function-Error-Body: " + base64.b64encode(err) + b"\r\n")
    elif action == "crash":
        chunk(s, b"before the crash\n")
        time.sleep(0.2)
        os._exit(3)
    elif action == "big":
        total, block = event["bytes"], bytes(range(256)) * 256
        sent = 0
        while sent < total:
            part = block[: min(len(block), total - sent)]
            chunk(s, part)
            sent += len(part)
    elif action == "forever":
        # Writes a chunk every 200 ms until the invocation ends (the caller or the timeout).
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


@pytest.fixture
def streamer(lam, deploy):
    if os.geteuid() != 0:
        pytest.fail("streaming tests need root: kiln runs functions in real sandboxes", pytrace=False)
    return deploy(k.script_zip(STREAMER), prefix="stream", Timeout=60)


def stream(lam, name, payload, **kw):
    """InvokeWithResponseStream: (response, [payload chunks], InvokeComplete event)."""
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(payload), **kw)
    chunks, complete = [], None
    for event in resp["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.time(), event["PayloadChunk"]["Payload"]))
        elif "InvokeComplete" in event:
            assert complete is None, "one InvokeComplete"
            complete = event["InvokeComplete"]
    assert complete is not None, "the stream ends with InvokeComplete"
    return resp, chunks, complete


def test_chunks_arrive_in_order_and_the_first_before_the_function_returns(lam, streamer):
    resp, chunks, complete = stream(lam, streamer, {"action": "chunks", "n": 4, "pause_ms": 400})
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    assert "ErrorCode" not in complete, complete
    lines = [json.loads(l) for l in b"".join(c for _, c in chunks).splitlines()]
    assert [l.get("i") for l in lines[:-1]] == [0, 1, 2, 3], lines
    assert lines[-1]["done"] is True
    # The function's own clock says when it finished writing; the first chunk was in the
    # caller's hands well before that (the function paused 4 x 400 ms after writing it).
    first_received = chunks[0][0]
    function_done = lines[-1]["at"]
    assert first_received < function_done, (first_received, function_done)
    # Each chunk was received before the function wrote the next one.
    received_first_line = [t for t, c in chunks if b'"i": 0' in c][0]
    assert received_first_line < lines[1]["at"], (received_first_line, lines[1]["at"])


def test_a_buffered_invoke_of_a_streaming_function_gets_the_whole_stream(lam, streamer):
    resp, body = k.invoke(lam, streamer, {"action": "chunks", "n": 3, "pause_ms": 10})
    assert "FunctionError" not in resp
    lines = [json.loads(l) for l in body.splitlines()]
    assert [l.get("i") for l in lines] == [0, 1, 2, None]


def test_a_buffered_answer_through_invoke_with_response_stream_is_one_chunk(lam, streamer):
    _, chunks, complete = stream(lam, streamer, {"action": "buffered"})
    assert [c for _, c in chunks] == [b'{"buffered":true}']
    assert complete == {}


def test_error_trailers_end_the_stream_with_invoke_complete_error(lam, streamer):
    _, chunks, complete = stream(lam, streamer, {"action": "error"}, LogType="Tail")
    assert b"".join(c for _, c in chunks) == b"first\nsecond\n"
    assert complete["ErrorCode"] == "MidStreamFailure", complete
    assert complete["ErrorDetails"] == "boom mid-stream", complete
    log = base64.b64decode(complete["LogResult"]).decode()
    assert "REPORT RequestId:" in log, log
    # Buffered, the same failure is the error object with X-Amz-Function-Error.
    _, err = k.invoke_error(lam, streamer, {"action": "error"})
    assert err == {"errorType": "MidStreamFailure", "errorMessage": "boom mid-stream"}, err


def test_a_crash_mid_stream_ends_the_stream_with_an_error_and_the_next_call_is_served(lam, streamer):
    _, chunks, complete = stream(lam, streamer, {"action": "crash"})
    assert b"".join(c for _, c in chunks) == b"before the crash\n"
    assert complete["ErrorCode"] == "Runtime.ExitError", complete
    assert "exit status 3" in complete["ErrorDetails"], complete
    _, chunks, complete = stream(lam, streamer, {"action": "chunks", "n": 1, "pause_ms": 0})
    assert "ErrorCode" not in complete and len(chunks) >= 1


def test_a_stream_larger_than_the_buffered_limit(lam, streamer):
    size = 7 * 1024 * 1024
    _, chunks, complete = stream(lam, streamer, {"action": "big", "bytes": size})
    assert "ErrorCode" not in complete, complete
    body = b"".join(c for _, c in chunks)
    assert len(body) == size
    block = bytes(range(256)) * 256
    expect = hashlib.sha256((block * (size // len(block) + 1))[:size]).hexdigest()
    assert hashlib.sha256(body).hexdigest() == expect
    # A buffered Invoke of the same answer is over the 6 MB limit.
    _, err = k.invoke_error(lam, streamer, {"action": "big", "bytes": size})
    assert err["errorType"] == "Function.ResponseSizeTooLarge", err


def test_a_client_that_disconnects_mid_stream_frees_the_environment(lam, streamer):
    # One concurrent execution: the next call is served only once the first one's environment
    # is free again; the first one would otherwise write until its 60 s timeout.
    lam.put_function_concurrency(FunctionName=streamer, ReservedConcurrentExecutions=1)
    resp = lam.invoke_with_response_stream(FunctionName=streamer, Payload=json.dumps({"action": "forever"}))
    events = iter(resp["EventStream"])
    first = next(events)
    assert first["PayloadChunk"]["Payload"].startswith(b"tick ")
    resp["EventStream"].close()
    started = time.time()
    served = {}

    def next_call_served():
        try:
            _, chunks, complete = stream(lam, streamer, {"action": "chunks", "n": 1, "pause_ms": 0})
        except lam.exceptions.TooManyRequestsException:
            return False
        served["complete"], served["chunks"] = complete, chunks
        return True

    k.wait_for(next_call_served, timeout=30, interval=0.2, what="a call served after the disconnect")
    assert "ErrorCode" not in served["complete"], served
    print("next call served %.2f s after the disconnect" % (time.time() - started))


def test_invoke_with_response_stream_errors_as_aws(lam, lam_raw, streamer):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName="no-such-function-xyz", Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName=streamer, Qualifier="nope", Payload=b"{}")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke_with_response_stream(FunctionName=streamer, Payload=b"{not json")
    with pytest.raises(lam_raw.exceptions.ClientError) as e:
        lam_raw.invoke_with_response_stream(FunctionName=streamer, InvocationType="Event", Payload=b"{}")
    assert k.error_code(e.value) == "ValidationException"
    dry = lam.invoke_with_response_stream(FunctionName=streamer, InvocationType="DryRun", Payload=b"{}")
    assert dry["StatusCode"] == 204
    # A published version through the Qualifier.
    v = lam.publish_version(FunctionName=streamer)["Version"]
    resp, chunks, complete = stream(lam, streamer, {"action": "buffered"}, Qualifier=v)
    assert resp["ExecutedVersion"] == v and "ErrorCode" not in complete


def test_a_slow_reader_does_not_grow_kilns_memory(kiln_factory):
    if os.geteuid() != 0:
        pytest.fail("streaming tests need root: kiln runs functions in real sandboxes", pytrace=False)
    server = kiln_factory("slowreader")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("slow")
    k.create(lam, name, k.script_zip(STREAMER), Timeout=120)
    size = 150 * 1024 * 1024

    def rss_mb():
        for line in Path("/proc/%d/status" % server.proc.pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    k.invoke(lam, name, {"action": "buffered"})  # warm: the environment exists
    before = rss_mb()
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps({"action": "big", "bytes": size}))
    events = iter(resp["EventStream"])
    got = len(next(events)["PayloadChunk"]["Payload"])
    # The function could write 150 MB in this pause if nothing held it back.
    time.sleep(3)
    paused = rss_mb()
    for event in events:
        if "PayloadChunk" in event:
            got += len(event["PayloadChunk"]["Payload"])
        else:
            assert "ErrorCode" not in event["InvokeComplete"], event
    after = rss_mb()
    print("kiln RSS: before %.1f MB, reader paused %.1f MB, after %.1f MB" % (before, paused, after))
    assert got == size
    assert paused < before + 48, (before, paused)
    assert after < before + 48, (before, after)


HELLO_STREAM_BIN = Path(os.environ.get("HELLO_STREAM_BIN", k.TARGET_DIR / "debug" / "hello-stream"))


def test_the_lambda_runtime_crates_streaming_function(lam, deploy):
    """examples/hello-stream: the official crate's streaming helpers, through kiln unchanged."""
    if not HELLO_STREAM_BIN.exists():
        pytest.fail("%s not found: cargo build -p hello-stream" % HELLO_STREAM_BIN, pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("streaming tests need root: kiln runs functions in real sandboxes", pytrace=False)
    name = deploy(k.make_zip({"bootstrap": (HELLO_STREAM_BIN.read_bytes(), 0o755)}), prefix="hellostream")
    _, chunks, complete = stream(lam, name, {"chunks": 3, "pause_ms": 400})
    assert "ErrorCode" not in complete, complete
    data = b"".join(c for _, c in chunks)
    # The crate writes the HTTP integration prelude, eight NUL bytes, then the body.
    prelude, sep, body = data.partition(b"\0" * 8)
    assert sep, data[:200]
    assert json.loads(prelude) == {
        "statusCode": 200,
        "headers": {"content-type": "text/plain"},
        "cookies": ["flavour=stream"],
    }
    lines = [json.loads(l) for l in body.splitlines()]
    assert [l.get("i") for l in lines] == [0, 1, 2, None]
    # The line with i=0 reached the caller before the function wrote its last line.
    first_received = next(t for t, c in chunks if b'"i":0' in c)
    assert first_received * 1000 < lines[-1]["at_ms"], (first_received, lines[-1])
