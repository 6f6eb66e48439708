"""Asynchronous invocation: the durable queue, retries, destinations, the event invoke config
API, redrive, and the bounds (payload size, kiln's memory with many large waiting events).

Runs are observed through a recorder function that prints `REC {"rid": ..., "event": ...}` for
every attempt (read back through kiln's log endpoint), or, where kiln is killed with SIGKILL
and its log writer's last batch may be lost, that appends to a file on the host (those servers
run with `--isolation none` so the function can reach the file).
"""

import json
import os
import threading
import time
import urllib.request

import botocore.exceptions
import pytest

import kiln_e2e as k

RECORDER = r'''
import json, os, time

def handle(event, context):
    print("REC " + json.dumps({"rid": context.aws_request_id, "event": event}), flush=True)
    if isinstance(event, dict):
        path = os.environ.get("RECORD_FILE")
        if path and "n" in event:
            with open(path, "a") as f:
                f.write("%s %s\n" % (event["n"], context.aws_request_id))
                f.flush()
                os.fsync(f.fileno())
        if event.get("sleep_ms"):
            time.sleep(event["sleep_ms"] / 1000)
        if event.get("fail") or os.environ.get("FAIL") == "1":
            raise RuntimeError("failing on purpose")
    if os.environ.get("NO_ECHO") == "1":
        return {"ok": True}
    return {"ok": True, "echo": event}
'''


def recorder_zip():
    return k.python_zip(handler_source=RECORDER)


def http(endpoint, method, path, body=None):
    req = urllib.request.Request(endpoint + path, method=method, data=body)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def records(endpoint, name):
    """Every REC line of the function's log, parsed, oldest first."""
    status, body = http(endpoint, "GET", "/kiln/v1/functions/%s/logs" % name)
    if status != 200:
        return []
    out = []
    for line in body.decode(errors="replace").splitlines():
        i = line.find("REC {")
        if i >= 0:
            try:
                out.append(json.loads(line[i + 4 :]))
            except ValueError:
                pass
    return out


def events_of(endpoint, name):
    status, body = http(endpoint, "GET", "/kiln/v1/functions/%s/events" % name)
    assert status == 200, body
    return json.loads(body)["Events"]


def send_event(lam, name, payload, **kw):
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload), **kw)
    assert resp["StatusCode"] == 202, resp
    return resp["ResponseMetadata"]["RequestId"]


# ---- config API -------------------------------------------------------------------------------


def test_event_invoke_config_api_shapes_and_errors(lam, lam_raw, deploy):
    name = deploy(recorder_zip(), prefix="eic")
    other = deploy(recorder_zip(), prefix="eicdest")
    arn = k.function_arn(name)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert k.error_code(e.value) == "ResourceNotFoundException"
    assert "doesn't have an EventInvokeConfig" in str(e.value)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    assert k.error_code(e.value) == "ResourceNotFoundException"

    out = lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": k.function_arn(other)}},
    )
    assert out["FunctionArn"] == arn + ":$LATEST"
    assert out["MaximumRetryAttempts"] == 1
    assert "MaximumEventAgeInSeconds" not in out
    assert out["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": k.function_arn(other)}}
    assert abs(out["LastModified"].timestamp() - time.time()) < 600

    # Update merges; Put replaces.
    up = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=120)
    assert (up["MaximumRetryAttempts"], up["MaximumEventAgeInSeconds"]) == (1, 120)
    assert up["DestinationConfig"]["OnFailure"]["Destination"] == k.function_arn(other)
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert (got["MaximumRetryAttempts"], got["MaximumEventAgeInSeconds"]) == (1, 120)
    put = lam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=3600)
    assert "MaximumRetryAttempts" not in put and put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}

    # Services kiln does not run are accepted and stored.
    sqs = "arn:aws:sqs:us-east-1:000000000000:dlq"
    put = lam.put_function_event_invoke_config(
        FunctionName=name, Qualifier="$LATEST", DestinationConfig={"OnSuccess": {"Destination": sqs}}
    )
    assert put["DestinationConfig"]["OnSuccess"] == {"Destination": sqs}

    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [arn + ":$LATEST"]

    def refused(code, **kw):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam_raw.put_function_event_invoke_config(FunctionName=name, **kw)
        assert k.error_code(e.value) == code, e.value
        assert k.http_status(e.value) in (400, 404)
        return str(e.value)

    refused("InvalidParameterValueException", MaximumRetryAttempts=3)
    refused("InvalidParameterValueException", MaximumRetryAttempts=-1)
    refused("InvalidParameterValueException", MaximumEventAgeInSeconds=59)
    refused("InvalidParameterValueException", MaximumEventAgeInSeconds=21601)
    msg = refused("InvalidParameterValueException")
    assert "at least one" in msg
    msg = refused("InvalidParameterValueException", DestinationConfig={"OnFailure": {"Destination": arn}})
    assert "destination for itself" in msg
    refused(
        "InvalidParameterValueException",
        DestinationConfig={"OnFailure": {"Destination": k.function_arn("no-such-function-xyz")}},
    )
    refused(
        "InvalidParameterValueException",
        DestinationConfig={"OnFailure": {"Destination": "arn:aws:dynamodb:us-east-1:000000000000:table/t"}},
    )
    refused("ResourceNotFoundException", Qualifier="nosuchalias", MaximumRetryAttempts=1)

    lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.delete_function_event_invoke_config(FunctionName=name)
    assert k.error_code(e.value) == "ResourceNotFoundException"
    assert lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []

    # A config goes with its function.
    lam.put_function_event_invoke_config(FunctionName=other, MaximumRetryAttempts=0)
    lam.delete_function(FunctionName=other)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_function_event_invoke_config(FunctionName=other)
    assert k.error_code(e.value) == "ResourceNotFoundException"


def test_dead_letter_config_is_accepted_and_shown(lam, deploy):
    dlq = "arn:aws:sqs:us-east-1:000000000000:dlq"
    name = deploy(recorder_zip(), prefix="dlq", DeadLetterConfig={"TargetArn": dlq})
    assert lam.get_function_configuration(FunctionName=name)["DeadLetterConfig"] == {"TargetArn": dlq}


def test_oversized_event_payload_is_refused(lam, deploy):
    name = deploy(recorder_zip(), prefix="big")
    limit = 1024 * 1024
    at_limit = b'"' + b"a" * (limit - 2) + b'"'
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=at_limit)["StatusCode"] == 202
    over = b'"' + b"a" * (limit - 1) + b'"'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=over)
    assert k.error_code(e.value) == "RequestEntityTooLargeException"
    assert k.http_status(e.value) == 413


# ---- delivery ---------------------------------------------------------------------------------


@pytest.fixture
def fast_retries(kiln_factory):
    server = kiln_factory("async", extra_args=("--async-retry-base", "1s"))
    return server, k.lambda_client(server.endpoint)


def test_retries_counted_by_maximum_retry_attempts_with_one_request_id(fast_retries):
    server, lam = fast_retries
    cases = {}
    for retries in (0, 1, 2):
        name = k.unique_name("retry%d" % retries)
        k.create(lam, name, recorder_zip(), Environment={"Variables": {"FAIL": "1"}})
        lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=retries)
        cases[name] = (retries, send_event(lam, name, {"case": retries}))

    def all_failed():
        return all(
            [e["State"] for e in events_of(server.endpoint, n)] == ["failed"] for n in cases
        )

    k.wait_for(all_failed, timeout=60, what="every event in the failed store")
    for name, (retries, rid) in cases.items():
        runs = records(server.endpoint, name)
        assert len(runs) == retries + 1, (name, runs)
        assert {r["rid"] for r in runs} == {rid}
        [failed] = events_of(server.endpoint, name)
        assert failed["Attempts"] == retries + 1
        assert failed["RequestId"] == rid
        assert failed["LastError"].startswith("RetriesExhausted"), failed
        rec = failed["Record"]
        assert rec["requestContext"]["condition"] == "RetriesExhausted"
        assert rec["requestContext"]["approximateInvokeCount"] == retries + 1
        assert rec["requestPayload"] == {"case": retries}
    # The CLI shows the same.
    name = next(iter(cases))
    out = k.run_cli("events", name, endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    assert "failed" in out.stdout and "RetriesExhausted" in out.stdout, out.stdout
    out = k.run_cli("status", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    assert "%s: events 0 queued, 0 in flight, 1 failed" % name in out.stdout, out.stdout


def test_success_and_failure_destinations_receive_the_record(fast_retries):
    server, lam = fast_retries
    sink = k.unique_name("sink")
    k.create(lam, sink, recorder_zip())
    ok = k.unique_name("ok")
    k.create(lam, ok, recorder_zip())
    bad = k.unique_name("bad")
    k.create(lam, bad, recorder_zip(), Environment={"Variables": {"FAIL": "1"}})
    lam.publish_version(FunctionName=sink)
    lam.create_alias(FunctionName=sink, Name="live", FunctionVersion="1")
    lam.put_function_event_invoke_config(
        FunctionName=ok, DestinationConfig={"OnSuccess": {"Destination": k.function_arn(sink)}}
    )
    lam.put_function_event_invoke_config(
        FunctionName=bad,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": k.function_arn(sink) + ":live"}},
    )
    ok_rid = send_event(lam, ok, {"hello": "ok"})
    bad_rid = send_event(lam, bad, {"hello": "bad"})

    def both():
        got = {r["event"].get("requestContext", {}).get("requestId"): r["event"] for r in records(server.endpoint, sink)}
        return got if ok_rid in got and bad_rid in got else None

    got = k.wait_for(both, timeout=60, what="both records at the destination")
    s = got[ok_rid]
    assert s["version"] == "1.0" and s["timestamp"].endswith("Z")
    assert s["requestContext"] == {
        "requestId": ok_rid,
        "functionArn": k.function_arn(ok) + ":$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert s["requestPayload"] == {"hello": "ok"}
    assert s["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert s["responsePayload"] == {"ok": True, "echo": {"hello": "ok"}}
    f = got[bad_rid]
    assert f["requestContext"]["condition"] == "RetriesExhausted"
    assert f["requestContext"]["approximateInvokeCount"] == 2
    assert f["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert f["responsePayload"]["errorMessage"] == "failing on purpose"
    assert f["requestPayload"] == {"hello": "bad"}
    # Delivered: nothing kept for either function.
    k.wait_for(lambda: events_of(server.endpoint, bad) == [] and events_of(server.endpoint, ok) == [], timeout=30,
               what="queues of both functions empty")


def test_unreachable_destination_keeps_the_record(fast_retries):
    server, lam = fast_retries
    name = k.unique_name("unreach")
    k.create(lam, name, recorder_zip())
    sqs = "arn:aws:sqs:us-east-1:000000000000:q"
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": sqs}})
    rid = send_event(lam, name, {"x": 1})
    [ev] = k.wait_for(lambda: [e for e in events_of(server.endpoint, name) if e["State"] == "failed"], timeout=30,
                      what="the event in the failed store")
    assert ev["RequestId"] == rid
    assert "unreachable" in ev["LastError"] and sqs in ev["LastError"]
    assert ev["Record"]["requestContext"]["condition"] == "Success"


def test_destination_of_another_account_or_region_never_reaches_a_same_named_local_function(fast_retries):
    # A function ARN names its account and region: a sink of the same name here is not it.
    server, lam = fast_retries
    sink = k.unique_name("sink")
    k.create(lam, sink, recorder_zip())
    foreign = {
        "account": "arn:aws:lambda:%s:111111111111:function:%s" % (k.REGION, sink),
        "region": "arn:aws:lambda:eu-north-1:%s:function:%s" % (k.ACCOUNT, sink),
    }
    sent = {}
    for what, arn in foreign.items():
        name = k.unique_name("to-" + what)
        k.create(lam, name, recorder_zip())
        # Accepted, as Lambda accepts it (whether it may be invoked shows at delivery).
        put = lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn}})
        assert put["DestinationConfig"]["OnSuccess"] == {"Destination": arn}
        sent[name] = (arn, send_event(lam, name, {"to": what}))
    for name, (arn, rid) in sent.items():
        [ev] = k.wait_for(lambda: [e for e in events_of(server.endpoint, name) if e["State"] == "failed"], timeout=30,
                          what="the event in the failed store")
        assert ev["RequestId"] == rid
        assert "unreachable" in ev["LastError"] and arn in ev["LastError"], ev["LastError"]
        assert "own account and region" in ev["LastError"], ev["LastError"]
    # (Delivered to the local sink, neither event would be in the failed store.)
    assert records(server.endpoint, sink) == []


def test_reserved_concurrency_zero_fails_at_once_and_redrive_runs_again(fast_retries):
    server, lam = fast_retries
    name = k.unique_name("zero")
    k.create(lam, name, recorder_zip())
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    rid = send_event(lam, name, {"z": 1})
    [ev] = k.wait_for(lambda: [e for e in events_of(server.endpoint, name) if e["State"] == "failed"], timeout=30,
                      what="the event in the failed store")
    assert ev["RequestId"] == rid and ev["Attempts"] == 0
    assert "reserved concurrency is 0" in ev["LastError"]
    assert records(server.endpoint, name) == []
    # The failed store shows in /metrics too.
    metrics = urllib.request.urlopen(server.endpoint + "/metrics", timeout=10).read().decode()
    assert 'kiln_async_events{function="%s",state="failed"} 1' % name in metrics.splitlines(), metrics

    # Once concurrency is back, a redrive runs the event, with its own request id.
    lam.delete_function_concurrency(FunctionName=name)
    out = k.run_cli("events", "redrive", name, endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    assert "1 failed events" in out.stdout, out.stdout
    runs = k.wait_for(lambda: records(server.endpoint, name), timeout=30, what="the redriven event to run")
    assert runs[0]["rid"] == rid and runs[0]["event"] == {"z": 1}
    k.wait_for(lambda: events_of(server.endpoint, name) == [], timeout=30, what="the queue to empty")
    status, body = http(server.endpoint, "POST", "/kiln/v1/functions/%s/events/redrive" % name)
    assert status == 200 and json.loads(body)["Redriven"] == 0


def test_invoke_async_old_api(fast_retries):
    server, lam = fast_retries
    name = k.unique_name("old")
    k.create(lam, name, recorder_zip())
    resp = lam.invoke_async(FunctionName=name, InvokeArgs=b'{"old": "api"}')
    assert resp["Status"] == 202
    runs = k.wait_for(lambda: records(server.endpoint, name), timeout=30, what="the event to run")
    assert runs[0]["event"] == {"old": "api"}


def test_events_survive_kill_9_and_run_after_restart(kiln_factory, tmp_path):
    server = kiln_factory("kill9", extra_args=("--isolation", "none"))
    lam = k.lambda_client(server.endpoint)
    record_file = tmp_path / "runs.txt"
    name = k.unique_name("kill")
    k.create(lam, name, recorder_zip(), Environment={"Variables": {"RECORD_FILE": str(record_file)}})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=4)
    total = 60
    rids = {}
    for n in range(total):
        rids[n] = send_event(lam, name, {"n": n, "sleep_ms": 300})

    def ran():
        try:
            lines = record_file.read_text().splitlines()
        except FileNotFoundError:
            return {}
        return {int(l.split()[0]): l.split()[1] for l in lines if l.strip()}

    # Some ran, some are in flight (4 at a time, 300 ms each), most still wait.
    k.wait_for(lambda: len(ran()) >= 6, timeout=60, what="a few events to run")
    server.kill()
    before = len(ran())
    assert before < total, "all events ran before the kill; the test proves nothing"
    server.start()
    got = k.wait_for(lambda: (lambda r: r if len(r) == total else None)(ran()), timeout=120,
                     what="every accepted event to run after the restart")
    assert set(got) == set(range(total))
    # Same request id on every run of an event, re-runs included.
    for line in record_file.read_text().splitlines():
        n, rid = line.split()
        assert rids[int(n)] == rid
    k.wait_for(lambda: events_of(server.endpoint, name) == [], timeout=30, what="the queue to empty")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_many_large_waiting_events_keep_kiln_memory_flat(kiln_factory):
    server = kiln_factory("rss")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("rss")
    k.create(lam, name, recorder_zip())
    # One slow environment: the queue fills faster than it drains.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    big = json.dumps({"sleep_ms": 3000, "pad": "x" * (1024 * 1024 - 64)}).encode()
    assert len(big) <= 1024 * 1024
    # Warm-up: the server's buffers for a 1 MB body exist before the baseline.
    for _ in range(8):
        assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=big)["StatusCode"] == 202
    baseline = rss_kb(server.proc.pid)
    count = 300
    errors = []

    def sender(share):
        client = k.lambda_client(server.endpoint)
        for _ in range(share):
            try:
                client.invoke(FunctionName=name, InvocationType="Event", Payload=big)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=sender, args=(count // 4,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    after = rss_kb(server.proc.pid)
    status, body = http(server.endpoint, "GET", "/kiln/v1/events")
    counts = {f["FunctionName"]: f for f in json.loads(body)["Functions"]}[name]
    waiting = counts["Queued"] + counts["InFlight"]
    growth_mb = (after - baseline) / 1024
    print("RSS baseline %.1f MB, after %d x 1 MB events %.1f MB (growth %.1f MB); %d waiting"
          % (baseline / 1024, count, after / 1024, growth_mb, waiting))
    assert waiting >= count - 10, counts
    # 300 MB of events accepted; kiln keeps them on disk, not in memory.
    assert growth_mb < 48, "kiln grew by %.1f MB while %d MB of events waited" % (growth_mb, waiting)
    lam.delete_function(FunctionName=name)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as the data dir needs root")
def test_full_disk_refuses_events_it_cannot_keep_and_keeps_serving(kiln_factory, tmp_path):
    import subprocess

    base = tmp_path / "full"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(base)], check=True)
    try:
        server = kiln_factory("full", extra_args=("--isolation", "none"))
        lam = k.lambda_client(server.endpoint)
        name = k.unique_name("full")
        k.create(lam, name, recorder_zip())
        # One slow environment: accepted events stay on disk.
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
        big = json.dumps({"sleep_ms": 20000, "pad": "x" * (1024 * 1024 - 64)}).encode()
        accepted, refusal = 0, None
        for _ in range(60):
            try:
                lam.invoke(FunctionName=name, InvocationType="Event", Payload=big)
                accepted += 1
            except botocore.exceptions.ClientError as exc:
                refusal = exc
                break
        assert refusal is not None, "a 24 MB disk took %d events of 1 MB" % accepted
        assert k.error_code(refusal) == "ServiceException", refusal
        assert k.http_status(refusal) == 500
        print("accepted %d events of 1 MB on a 24 MB disk, then %s" % (accepted, k.error_code(refusal)))
        assert accepted >= 5, accepted
        # Still serving, and every event that got its 202 is kept.
        assert name in {f["FunctionName"] for f in lam.list_functions()["Functions"]}
        status, body = http(server.endpoint, "GET", "/kiln/v1/events")
        assert status == 200, body
        counts = {f["FunctionName"]: f for f in json.loads(body)["Functions"]}[name]
        assert counts["Queued"] + counts["InFlight"] + counts["Failed"] >= accepted, (counts, accepted)
        server.kill()
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)


def test_destination_cycle_between_two_functions_stops_after_sixteen_hops(fast_retries):
    server, lam = fast_retries
    a, b = k.unique_name("ping"), k.unique_name("pong")
    # No echo: each record nests the one before once (as requestPayload), not twice.
    for n in (a, b):
        k.create(lam, n, recorder_zip(), Timeout=30, Environment={"Variables": {"NO_ECHO": "1"}})
    lam.put_function_event_invoke_config(FunctionName=a, DestinationConfig={"OnSuccess": {"Destination": k.function_arn(b)}})
    lam.put_function_event_invoke_config(FunctionName=b, DestinationConfig={"OnSuccess": {"Destination": k.function_arn(a)}})
    send_event(lam, a, {"start": True})

    def stopped():
        kept = [e for n in (a, b) for e in events_of(server.endpoint, n) if e["State"] == "failed"]
        return kept or None

    [kept] = k.wait_for(stopped, timeout=90, what="the chain to stop in the failed store")
    assert "loop" in kept["LastError"], kept
    assert kept["Record"]["requestContext"]["condition"] == "Success"
    # The first event and 16 records ran: 17 runs over the two functions, then nothing more.
    runs = k.wait_for(lambda: (lambda n: n if n == 17 else None)(len(records(server.endpoint, a)) + len(records(server.endpoint, b))),
                      timeout=30, what="17 runs")
    time.sleep(2)
    assert len(records(server.endpoint, a)) + len(records(server.endpoint, b)) == runs


def test_corrupt_queue_row_goes_to_failed_and_the_rest_runs(kiln_factory):
    import sqlite3

    server = kiln_factory("corrupt")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("corrupt")
    k.create(lam, name, recorder_zip())
    server.stop()
    db = sqlite3.connect(str(server.data_dir / "events.db"))
    now = int(time.time() * 1000)
    rows = [
        ("11111111-1111-1111-1111-111111111111", b'{"good": 1}', 0),
        # Damaged: a blob where the request id belongs, text where a count belongs.
        (sqlite3.Binary(b"not-a-request-id"), b'{"bad": 1}', "many"),
        ("22222222-2222-2222-2222-222222222222", b'{"good": 2}', 0),
    ]
    for rid, payload, attempts in rows:
        db.execute(
            "INSERT INTO events (request_id, function, qualifier, payload, state, enqueued_ms, due_ms, attempts)"
            " VALUES (?, ?, NULL, ?, 0, ?, ?, ?)",
            (rid, name, payload, now, now, attempts),
        )
    db.commit()
    db.close()
    server.start()
    runs = k.wait_for(lambda: (lambda r: r if len(r) == 2 else None)(records(server.endpoint, name)), timeout=60,
                      what="the two good events to run")
    assert sorted(r["event"]["good"] for r in runs) == [1, 2]
    [bad] = k.wait_for(lambda: events_of(server.endpoint, name) or None, timeout=30, what="the damaged row listed")
    assert bad["State"] == "failed" and "unreadable queue row" in bad["LastError"], bad
    # The server keeps serving.
    assert k.invoke_json(lam, name, {"sync": True})["ok"] is True
