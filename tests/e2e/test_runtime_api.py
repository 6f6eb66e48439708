"""Runtime API conformance (docs/runtime-api.md), seen from inside a real environment.

The function is a stdlib-Python `bootstrap` that probes the Runtime API itself on its first
event and returns what it saw; what it saw after replying to the first event (posting twice)
it returns on the second event.
"""

import base64
import json
import re
import time
import uuid

import pytest

import kiln_e2e as k

PROBE_BOOTSTRAP = r'''#!/usr/bin/python3
import http.client, json, os, time

HOST, _, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].rpartition(":")
PREFIX = "/2018-06-01/runtime"
OTHER_ID = "00000000-0000-4000-8000-000000000000"


def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(HOST, int(PORT), timeout=None)
    conn.request(method, PREFIX + path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    out = {"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()}}
    conn.close()
    try:
        out["body"] = json.loads(data) if data else None
    except ValueError:
        out["body"] = data.decode("utf-8", "replace")
    out["raw"] = data.decode("utf-8", "replace")
    return out


def error(path):
    body = json.dumps({"errorMessage": "probe", "errorType": "Probe.Error", "stackTrace": []}).encode()
    return call("POST", path, body, {"Lambda-Runtime-Function-Error-Type": "Function.Probe"})


after_first_reply = None
count = 0
while True:
    nxt = call("GET", "/invocation/next")
    rid = nxt["headers"].get("lambda-runtime-aws-request-id", "")
    count += 1
    event = json.loads(nxt["raw"]) if nxt["raw"].strip() else {}
    if count == 1:
        seen = {
            "next": nxt,
            "now_ms": int(time.time() * 1000),
            "wrong_id_response": call("POST", "/invocation/%s/response" % OTHER_ID, b"{}"),
            "wrong_id_error": error("/invocation/%s/error" % OTHER_ID),
            "init_error_after_init": error("/init/error"),
        }
        first = call("POST", "/invocation/%s/response" % rid, json.dumps(seen).encode())
        after_first_reply = {
            "first": first,
            "second_response": call("POST", "/invocation/%s/response" % rid, b'{"second": true}'),
            "error_after_response": error("/invocation/%s/error" % rid),
        }
    elif isinstance(event, dict) and "raw" in event:
        call("POST", "/invocation/%s/response" % rid, event["raw"].encode())
    else:
        reply = {"after_first_reply": after_first_reply, "next": nxt, "count": count}
        call("POST", "/invocation/%s/response" % rid, json.dumps(reply).encode())
'''

TRACE_RE = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24}")


@pytest.fixture(scope="module")
def probe(lam):
    """A function running the probe bootstrap, and the result of its first (probing) invoke."""
    name = k.unique_name("rapi")
    k.create(lam, name, k.script_zip(PROBE_BOOTSTRAP), Timeout=5)
    client_context = {"client": {"app_title": "kiln-e2e"}, "custom": {"k": "v"}, "env": {"locale": "en"}}
    payload = '{"a":  1, "b" : [ 2 ]}'  # odd spacing: the runtime must get these exact bytes
    before = int(time.time() * 1000)
    resp, body = k.invoke(
        lam,
        name,
        payload,
        ClientContext=base64.b64encode(json.dumps(client_context).encode()).decode(),
    )
    after = int(time.time() * 1000)
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp, body
    seen = json.loads(body)
    yield {
        "name": name,
        "resp": resp,
        "seen": seen,
        "before": before,
        "after": after,
        "payload": payload,
        "client_context": client_context,
    }
    lam.delete_function(FunctionName=name)


def test_next_returns_the_payload_verbatim(probe):
    nxt = probe["seen"]["next"]
    assert nxt["status"] == 200
    assert nxt["raw"] == probe["payload"]


def test_next_carries_invoke_headers(probe):
    headers = probe["seen"]["next"]["headers"]
    assert headers["lambda-runtime-aws-request-id"] == probe["resp"]["ResponseMetadata"]["RequestId"]
    assert headers["lambda-runtime-invoked-function-arn"] == k.function_arn(probe["name"])
    assert TRACE_RE.match(headers["lambda-runtime-trace-id"]), headers["lambda-runtime-trace-id"]
    deadline = int(headers["lambda-runtime-deadline-ms"])
    # Absolute epoch milliseconds: the invoke's start plus the 5 s timeout.
    assert probe["before"] + 5000 - 1500 <= deadline <= probe["after"] + 5000 + 1500
    assert deadline > probe["seen"]["now_ms"]


def test_client_context_arrives_decoded(probe):
    headers = probe["seen"]["next"]["headers"]
    assert json.loads(headers["lambda-runtime-client-context"]) == probe["client_context"]


def test_response_with_wrong_request_id_is_invalid_request_id(probe):
    reply = probe["seen"]["wrong_id_response"]
    assert reply["status"] == 400, reply
    assert reply["body"]["errorType"] == "InvalidRequestID"
    assert reply["body"]["errorMessage"]


def test_error_with_wrong_request_id_is_invalid_request_id(probe):
    reply = probe["seen"]["wrong_id_error"]
    assert reply["status"] == 400, reply
    assert reply["body"]["errorType"] == "InvalidRequestID"


def test_init_error_after_init_is_invalid_state_transition(probe):
    reply = probe["seen"]["init_error_after_init"]
    assert reply["status"] == 403, reply
    assert reply["body"]["errorType"] == "InvalidStateTransition"


def test_second_reply_for_one_invoke_is_refused(lam, probe):
    # The probe reports what happened after its first reply on the next event.
    second = k.invoke_json(lam, probe["name"], {"second": "call"})
    after = second["after_first_reply"]
    assert after is not None, "the second invoke went to a new environment"
    assert after["first"]["status"] == 202
    assert after["first"]["body"] == {"status": "OK"}
    assert after["second_response"]["status"] == 403, after
    assert after["second_response"]["body"]["errorType"] == "InvalidStateTransition"
    assert after["error_after_response"]["status"] == 403, after
    assert after["error_after_response"]["body"]["errorType"] == "InvalidStateTransition"
    # Without ClientContext the header is absent.
    assert "lambda-runtime-client-context" not in second["next"]["headers"]


def test_response_body_is_returned_verbatim(lam, probe):
    raw = '{"spaced" :   [1,2 ,3],  "unicode": "\\u00e9"}'
    resp, body = k.invoke(lam, probe["name"], {"raw": raw})
    assert "FunctionError" not in resp, body
    assert body == raw.encode()


def test_each_invoke_gets_a_new_request_id(lam, probe):
    ids = {probe["resp"]["ResponseMetadata"]["RequestId"]}
    for _ in range(3):
        resp, _ = k.invoke(lam, probe["name"], {"raw": "{}"})
        ids.add(resp["ResponseMetadata"]["RequestId"])
    assert len(ids) == 4
    for request_id in ids:
        assert uuid.UUID(request_id)
