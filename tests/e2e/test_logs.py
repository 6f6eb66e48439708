"""Function logs: the store's bounds (descriptors, byte caps, idle output, deletion, retention)
and the CloudWatch Logs API on kiln's port, through boto3 and the AWS CLI v1."""

import json
import os
import re
import subprocess
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import kiln_e2e as k

HANDLER = r'''
import json, os, sys, threading, time

def handle(event, context):
    a = event.get("action")
    if a == "lines":
        for i in range(event["n"]):
            print("%s %d" % (event.get("tag", "line"), i))
        return {"ok": True}
    if a == "json":
        for rec in event["records"]:
            print(json.dumps(rec))
        return {"ok": True}
    if a == "text":
        print(event["text"])
        return {"ok": True}
    if a == "exit":
        print("about to crash")
        sys.stdout.flush()
        os._exit(3)
    if a == "flood":
        chunk = (("x" * 999) + "\n").encode() * 1024
        for _ in range(event["mb"]):
            os.write(1, chunk)
        return {"ok": True}
    if a == "long":
        sys.stdout.write("L" * event["bytes"] + "\n")
        sys.stdout.flush()
        return {"ok": True}
    return {"ok": True}
'''

# A runtime that answers its first event and then prints without end, never asking for `next`:
# its output is all outside an invocation.
IDLE_FLOODER = r'''#!/usr/bin/python3
import http.client, json, os
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
host, port = api.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
c.request("GET", "/2018-06-01/runtime/invocation/next")
r = c.getresponse(); r.read()
rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
c.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, body=b'{"ok":true}')
c.getresponse().read()
chunk = (("i" * 999) + "\n").encode() * 64
while True:
    os.write(1, chunk)
'''


def logs_client(endpoint, validate=True):
    return boto3.client(
        "logs",
        endpoint_url=endpoint,
        region_name=k.REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, parameter_validation=validate),
    )


@pytest.fixture(scope="module")
def cw(kiln):
    return logs_client(kiln.endpoint)


@pytest.fixture(scope="module")
def cw_raw(kiln):
    return logs_client(kiln.endpoint, validate=False)


@pytest.fixture
def fn(deploy):
    return deploy(k.python_zip(HANDLER), prefix="logs", Timeout=60)


def group(name):
    return "/aws/lambda/%s" % name


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except FileNotFoundError:
                pass
    return total


def all_events(cw, name, stream):
    """Every event of a stream, from the head, following forward tokens."""
    out, token = [], None
    while True:
        kw = {"logGroupName": group(name), "logStreamName": stream, "startFromHead": True}
        if token:
            kw["nextToken"] = token
        page = cw.get_log_events(**kw)
        out += page["events"]
        if page["nextForwardToken"] == token:
            return out
        token = page["nextForwardToken"]


# ---------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------


def test_descriptor_count_stays_flat_after_100_crashed_environments(kiln_factory):
    server = kiln_factory("fds")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("crash")
    k.create(lam, name, k.python_zip(HANDLER), Timeout=30)
    # One crash and one good call first, so lazily opened descriptors are in the baseline.
    k.invoke(lam, name, {"action": "exit"})
    k.invoke_json(lam, name, {"action": "text", "text": "warm"})
    time.sleep(0.5)
    baseline = fd_count(server.proc.pid)
    for _ in range(100):
        resp, body = k.invoke(lam, name, {"action": "exit"})
        assert resp.get("FunctionError") == "Unhandled", body
    # Environments end (and their captures close) just after the answers.
    k.wait_for(lambda: fd_count(server.proc.pid) <= baseline + 10, timeout=30, what="descriptors back to baseline")
    after = fd_count(server.proc.pid)
    print("descriptors: baseline %d, after 100 crashes %d" % (baseline, after))
    out = k.run_cli("logs", name, endpoint=server.endpoint)
    assert out.stdout.count("about to crash") == 101, out.stdout[-2000:]


def test_a_flooding_function_is_capped_with_a_marker_and_kiln_stays_small(kiln_factory):
    server = kiln_factory("caps", extra_args=["--log-stream-max", "2M", "--log-function-max", "5M"])
    lam = k.lambda_client(server.endpoint)
    cw = logs_client(server.endpoint)
    name = k.unique_name("flood")
    k.create(lam, name, k.python_zip(HANDLER), Timeout=120, MemorySize=256)
    rss_before = rss_kb(server.proc.pid)
    # 4 x 100 MB, each in its own environment (the crash after each makes the next one new).
    for _ in range(4):
        k.invoke_json(lam, name, {"action": "flood", "mb": 100})
        k.invoke(lam, name, {"action": "exit"})
    rss_after = rss_kb(server.proc.pid)
    logs_dir = server.data_dir / "logs" / name
    kept = dir_bytes(logs_dir)
    print("400 MB written, %d bytes kept; kiln RSS %d -> %d kB" % (kept, rss_before, rss_after))
    assert 0 < kept <= 5 * 1024 * 1024
    for f in logs_dir.iterdir():
        if f.suffix == ".log":
            assert f.stat().st_size <= 3 * 1024 * 1024, f
    assert rss_after - rss_before < 150 * 1024
    marked = cw.filter_log_events(logGroupName=group(name), filterPattern='"[kiln] this log stream reached its limit"')
    assert marked["events"], "no truncation marker"
    # The platform lines of a truncated stream are still there.
    reports = cw.filter_log_events(logGroupName=group(name), filterPattern="REPORT")
    assert reports["events"]


def test_output_outside_an_invocation_is_bounded(kiln_factory):
    server = kiln_factory("idle", extra_args=["--log-stream-max", "8M"])
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("idleflood")
    k.create(lam, name, k.script_zip(IDLE_FLOODER), Timeout=10)
    k.invoke_json(lam, name, {})
    logs_dir = server.data_dir / "logs" / name

    # Two bounds stop it, whichever comes first: the environment is frozen 10 ms after an answer
    # that no `next` follows, and at most 1 MB of output after the answer is read (then a marker
    # line, and the pipe waits for the next invocation). Either way the log stops growing.
    def settled():
        k.run_cli("logs", name, endpoint=server.endpoint)  # flushes the writer
        before = dir_bytes(logs_dir)
        time.sleep(1)
        k.run_cli("logs", name, endpoint=server.endpoint)
        return before > 0 and dir_bytes(logs_dir) == before

    k.wait_for(settled, timeout=30, what="the idle output to stop")
    size = dir_bytes(logs_dir)
    time.sleep(2)
    # The pipe is no longer read: nothing more lands while the function keeps printing.
    assert dir_bytes(logs_dir) == size
    assert size < 2 * 1024 * 1024, size


def test_a_function_flooding_after_its_answer_cannot_stall_or_fill_a_shutdown(kiln_factory):
    """The END and REPORT of an answered call are written when its environment is destroyed at
    shutdown, should the task that writes them not have run: that drain of the function's output
    stops at its 1 MB bound however fast the function keeps printing, and the server exits."""
    server = kiln_factory("stopflood")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("stopflood")
    k.create(lam, name, k.script_zip(IDLE_FLOODER), Timeout=10)
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert json.loads(resp["Payload"].read()) == {"ok": True}
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    logs_dir = server.data_dir / "logs" / name
    size = dir_bytes(logs_dir)
    print("stopped in %.2f s with %d bytes of log" % (took, size))
    assert server.last_exit_code == 0, server.log_tail()
    assert size < 2 * 1024 * 1024, size
    server.start()
    out = k.run_cli("logs", name, endpoint=server.endpoint)
    assert "REPORT RequestId: %s" % request_id in out.stdout, out.stdout[-2000:]


def test_a_line_longer_than_256_kb_is_split_into_events(cw, lam, fn):
    k.invoke_json(lam, fn, {"action": "long", "bytes": 600_000})
    ev = cw.filter_log_events(logGroupName=group(fn), filterPattern="LLLLLLLLLL")["events"]
    sizes = [len(e["message"].rstrip("\n")) for e in ev]
    assert sum(sizes) == 600_000, sizes
    assert len(sizes) == 3 and max(sizes) <= 256 * 1024 - 26, sizes


def test_delete_function_deletes_its_logs(kiln, lam, deploy):
    name = deploy(k.python_zip(HANDLER), prefix="dellogs")
    k.invoke_json(lam, name, {"action": "text", "text": "soon gone"})
    k.run_cli("logs", name, endpoint=kiln.endpoint)
    logs_dir = kiln.data_dir / "logs" / name
    assert dir_bytes(logs_dir) > 0
    lam.delete_function(FunctionName=name)
    assert not logs_dir.exists()
    assert dir_bytes(logs_dir) == 0


def test_retention_flag_deletes_old_streams(kiln_factory):
    server = kiln_factory("retention", extra_args=["--log-retention", "2d"])
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("ret")
    k.create(lam, name, k.python_zip(HANDLER))
    k.invoke(lam, name, {"action": "exit"})
    k.invoke_json(lam, name, {"action": "text", "text": "fresh"})
    server.stop()
    logs_dir = server.data_dir / "logs" / name
    files = sorted(logs_dir.glob("*.log"), key=lambda f: "about to crash" in f.read_text())
    assert len(files) == 2
    fresh, old = files
    three_days_ago = time.time() - 3 * 86400
    os.utime(old, (three_days_ago, three_days_ago))
    server.start()
    k.wait_for(lambda: not old.exists(), timeout=30, what="the old stream deleted")
    assert fresh.exists()


def test_put_retention_policy_deletes_old_streams(cw, kiln, lam, fn):
    k.invoke(lam, fn, {"action": "exit"})
    k.invoke_json(lam, fn, {"action": "text", "text": "keep me"})
    logs_dir = kiln.data_dir / "logs" / fn
    old = next(f for f in logs_dir.glob("*.log") if "about to crash" in f.read_text())
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))

    def applied():
        cw.put_retention_policy(logGroupName=group(fn), retentionInDays=7)
        return not old.exists()

    k.wait_for(applied, timeout=20, what="retention applied")
    g = cw.describe_log_groups(logGroupNamePrefix=group(fn))["logGroups"][0]
    assert g["retentionInDays"] == 7
    assert len(cw.describe_log_streams(logGroupName=group(fn))["logStreams"]) == 1
    cw.delete_retention_policy(logGroupName=group(fn))
    g = cw.describe_log_groups(logGroupNamePrefix=group(fn))["logGroups"][0]
    assert "retentionInDays" not in g
    with pytest.raises(ClientError) as e:
        cw.put_retention_policy(logGroupName=group(fn), retentionInDays=8)
    assert k.error_code(e.value) == "InvalidParameterException"


# ---------------------------------------------------------------------------------------------
# The CloudWatch Logs API
# ---------------------------------------------------------------------------------------------


def test_log_groups_list_functions_that_logged(cw, lam, deploy):
    a = deploy(k.python_zip(HANDLER), prefix="grpa")
    b = deploy(k.python_zip(HANDLER), prefix="grpb", LoggingConfig={"LogGroup": "/custom/kiln-%s" % k.unique_name("g")})
    k.invoke_json(lam, a, {"action": "text", "text": "a"})
    k.invoke_json(lam, b, {"action": "text", "text": "b"})
    custom = lam.get_function_configuration(FunctionName=b)["LoggingConfig"]["LogGroup"]
    groups = cw.describe_log_groups(logGroupNamePrefix=group(a))["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group(a)]
    assert groups[0]["arn"] == "arn:aws:logs:us-east-1:%s:log-group:%s:*" % (k.ACCOUNT, group(a))
    assert [g["logGroupName"] for g in cw.describe_log_groups(logGroupNamePrefix=custom)["logGroups"]] == [custom]
    assert not cw.describe_log_groups(logGroupNamePrefix=group(b))["logGroups"]
    # Paging: one group per page through every group.
    seen, token = [], None
    while True:
        kw = {"limit": 1}
        if token:
            kw["nextToken"] = token
        page = cw.describe_log_groups(**kw)
        assert len(page["logGroups"]) <= 1
        seen += [g["logGroupName"] for g in page["logGroups"]]
        token = page.get("nextToken")
        if not token:
            break
    assert group(a) in seen and custom in seen and len(seen) == len(set(seen))
    ev = cw.filter_log_events(logGroupName=custom)["events"]
    assert any(e["message"] == "b\n" for e in ev)


def test_log_streams_have_aws_names_and_order(cw, lam, fn):
    k.invoke(lam, fn, {"action": "exit"})
    k.invoke_json(lam, fn, {"action": "text", "text": "second env"})
    streams = cw.describe_log_streams(logGroupName=group(fn))["logStreams"]
    assert len(streams) == 2
    for s in streams:
        assert k.LOG_STREAM_RE.match(s["logStreamName"]), s
        assert s["firstEventTimestamp"] <= s["lastEventTimestamp"] <= s["lastIngestionTime"] + 1000
    assert [s["logStreamName"] for s in streams] == sorted(s["logStreamName"] for s in streams)
    latest = cw.describe_log_streams(logGroupName=group(fn), orderBy="LastEventTime", descending=True, limit=1)
    assert len(latest["logStreams"]) == 1 and "nextToken" in latest
    ev = all_events(cw, fn, latest["logStreams"][0]["logStreamName"])
    assert any(e["message"] == "second env\n" for e in ev)
    rest = cw.describe_log_streams(
        logGroupName=group(fn), orderBy="LastEventTime", descending=True, nextToken=latest["nextToken"]
    )
    assert len(rest["logStreams"]) == 1 and "nextToken" not in rest
    prefix = streams[0]["logStreamName"][:11]
    assert len(cw.describe_log_streams(logGroupName=group(fn), logStreamNamePrefix=prefix)["logStreams"]) == 2


def test_get_log_events_pages_both_ways_with_tokens(cw, lam, fn):
    k.invoke_json(lam, fn, {"action": "lines", "n": 30, "tag": "row"})
    stream = cw.describe_log_streams(logGroupName=group(fn))["logStreams"][0]["logStreamName"]
    everything = all_events(cw, fn, stream)
    rows = [e["message"] for e in everything if e["message"].startswith("row ")]
    assert rows == ["row %d\n" % i for i in range(30)]
    assert everything[0]["message"].startswith("INIT_START")
    assert all(e["timestamp"] <= e["ingestionTime"] for e in everything)
    assert all(a["timestamp"] <= b["timestamp"] for a, b in zip(everything, everything[1:]))
    # Without a token and startFromHead: the newest events.
    tail = cw.get_log_events(logGroupName=group(fn), logStreamName=stream, limit=5)
    assert [e["message"] for e in tail["events"]] == [e["message"] for e in everything[-5:]]
    assert re.match(r"^f/\d{56}", tail["nextForwardToken"]) and re.match(r"^b/\d{56}", tail["nextBackwardToken"])
    # Backward from there: the five before.
    before = cw.get_log_events(logGroupName=group(fn), logStreamName=stream, limit=5, nextToken=tail["nextBackwardToken"])
    assert [e["message"] for e in before["events"]] == [e["message"] for e in everything[-10:-5]]
    # Forward from the backward page lands on the tail again.
    again = cw.get_log_events(logGroupName=group(fn), logStreamName=stream, limit=5, nextToken=before["nextForwardToken"])
    assert again["events"] == tail["events"]
    # At the end, the forward token comes back unchanged.
    end = cw.get_log_events(logGroupName=group(fn), logStreamName=stream, nextToken=tail["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == tail["nextForwardToken"]
    # A time range.
    t = everything[5]["timestamp"]
    ranged = cw.get_log_events(logGroupName=group(fn), logStreamName=stream, startTime=t, endTime=t + 1, startFromHead=True)
    assert ranged["events"] and all(e["timestamp"] == t for e in ranged["events"])


def test_filter_log_events_understands_cloudwatch_patterns(cw, lam, fn):
    records = [
        {"level": "ERROR", "latency": 900, "msg": "disk full"},
        {"level": "INFO", "latency": 12, "msg": "ok"},
        {"level": "WARN", "latency": 600, "msg": "slow"},
    ]
    k.invoke_json(lam, fn, {"action": "json", "records": records})
    k.invoke_json(lam, fn, {"action": "text", "text": "ERROR plain text Exiting"})
    k.invoke_json(lam, fn, {"action": "text", "text": "ERROR plain text retrying"})

    def msgs(pattern, **kw):
        return [e["message"].rstrip("\n") for e in cw.filter_log_events(logGroupName=group(fn), filterPattern=pattern, **kw)["events"]]

    assert msgs('{ $.level = "ERROR" }') == [json.dumps(records[0])]
    assert msgs("{ $.latency > 500 }") == [json.dumps(records[0]), json.dumps(records[2])]
    assert msgs('{ ($.level = "INFO") || ($.msg = "sl*") }') == [json.dumps(records[1]), json.dumps(records[2])]
    assert msgs("ERROR -Exiting plain") == ["ERROR plain text retrying"]
    assert msgs('"plain text Exiting"') == ["ERROR plain text Exiting"]
    assert msgs("?retrying ?Exiting") == ["ERROR plain text Exiting", "ERROR plain text retrying"]
    assert len(msgs("START RequestId")) == 3
    # Paging with nextToken returns each event once.
    seen, token = [], None
    while True:
        kw = {"logGroupName": group(fn), "limit": 2}
        if token:
            kw["nextToken"] = token
        page = cw.filter_log_events(**kw)
        seen += [e["eventId"] for e in page["events"]]
        token = page.get("nextToken")
        if not token:
            break
    everything = cw.filter_log_events(logGroupName=group(fn))["events"]
    assert seen == [e["eventId"] for e in everything] and len(seen) == len(set(seen)) > 6
    stream = everything[0]["logStreamName"]
    assert cw.filter_log_events(logGroupName=group(fn), logStreamNames=[stream])["events"]
    assert not cw.filter_log_events(logGroupName=group(fn), logStreamNames=["2020/01/01/[$LATEST]nope"])["events"]


def test_polling_like_logs_tail_follow_sees_new_events_once(cw, lam, fn):
    """`aws logs tail --follow` (CLI v2) polls FilterLogEvents with startTime and drops eventIds
    it has seen; the same calls through boto3."""
    start = int(time.time() * 1000) - 1000
    seen = {}

    def poll():
        token = None
        while True:
            kw = {"logGroupName": group(fn), "startTime": start}
            if token:
                kw["nextToken"] = token
            page = cw.filter_log_events(**kw)
            for e in page["events"]:
                seen.setdefault(e["eventId"], e["message"])
            token = page.get("nextToken")
            if not token:
                return

    k.invoke_json(lam, fn, {"action": "text", "text": "tail-one"})
    poll()
    assert "tail-one\n" in seen.values()
    k.invoke_json(lam, fn, {"action": "text", "text": "tail-two"})
    poll()
    poll()
    values = list(seen.values())
    assert values.count("tail-one\n") == 1 and values.count("tail-two\n") == 1


def test_the_last_10000_events_of_a_stream_come_back_fast(cw, kiln, lam, fn):
    k.invoke_json(lam, fn, {"action": "lines", "n": 12_000, "tag": "bulk"})
    stream = cw.describe_log_streams(logGroupName=group(fn))["logStreams"][0]["logStreamName"]
    page = cw.get_log_events(logGroupName=group(fn), logStreamName=stream, limit=10_000)
    assert len(page["events"]) == 10_000
    assert page["events"][-1]["message"].startswith("REPORT")
    assert any(e["message"] == "bulk 11999\n" for e in page["events"][-10:])
    # The server's part, without boto3's parsing: one raw JSON 1.1 request.
    body = json.dumps({"logGroupName": group(fn), "logStreamName": stream, "limit": 10_000}).encode()
    req = urllib.request.Request(
        kiln.endpoint + "/",
        data=body,
        method="POST",
        headers={"X-Amz-Target": "Logs_20140328.GetLogEvents", "Content-Type": "application/x-amz-json-1.1"},
    )
    best = None
    for _ in range(5):
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        ms = (time.monotonic() - t) * 1000
        best = ms if best is None else min(best, ms)
    assert len(json.loads(raw)["events"]) == 10_000
    print("last 10,000 events (%d bytes of JSON): best of 5 raw requests %.1f ms" % (len(raw), best))


def test_bad_input_gets_aws_errors(cw, cw_raw, kiln, lam, fn):
    k.invoke_json(lam, fn, {"action": "text", "text": "x"})
    stream = cw.describe_log_streams(logGroupName=group(fn))["logStreams"][0]["logStreamName"]

    def code(call, **kw):
        with pytest.raises(ClientError) as e:
            call(**kw)
        return k.error_code(e.value), e.value.response["Error"]["Message"]

    assert code(cw.describe_log_streams, logGroupName="/aws/lambda/no-such-fn")[0] == "ResourceNotFoundException"
    assert code(cw.filter_log_events, logGroupName="/aws/lambda/no-such-fn")[0] == "ResourceNotFoundException"
    assert code(cw.delete_log_group, logGroupName="/aws/lambda/no-such-fn")[0] == "ResourceNotFoundException"
    assert code(cw.get_log_events, logGroupName=group(fn), logStreamName="2020/01/01/[$LATEST]nope") == (
        "ResourceNotFoundException",
        "The specified log stream does not exist.",
    )
    for token in ("f/123", "b/999999999999999999999", "garbage", "f/", "x/0000"):
        assert code(cw.get_log_events, logGroupName=group(fn), logStreamName=stream, nextToken=token)[0] == "InvalidParameterException", token
    assert code(cw.filter_log_events, logGroupName=group(fn), nextToken="nope")[0] == "InvalidParameterException"
    c, m = code(cw_raw.get_log_events, logGroupName=group(fn), logStreamName=stream, limit=100_000)
    assert c == "InvalidParameterException" and "less than or equal to 10000" in m
    assert code(cw_raw.filter_log_events, logGroupName=group(fn), limit=10**12)[0] == "InvalidParameterException"
    assert code(cw_raw.describe_log_streams, logGroupName=group(fn), limit=51)[0] == "InvalidParameterException"
    for pattern in ('{ $.level = "ERROR" ', '"open', "{ level = 1 }", "{ $.a > \"x\" }"):
        c, m = code(cw.filter_log_events, logGroupName=group(fn), filterPattern=pattern)
        assert c == "InvalidParameterException" and "filter pattern" in m, pattern
    # Raw JSON 1.1 requests: unknown and malformed targets.
    for target, want in (("Logs_20140328.NoSuchThing", "UnknownOperationException"), ("garbage", "UnknownOperationException")):
        req = urllib.request.Request(
            kiln.endpoint + "/",
            data=b"{}",
            method="POST",
            headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400
        assert json.loads(e.value.read())["__type"] == want
    req = urllib.request.Request(
        kiln.endpoint + "/",
        data=b"[not json",
        method="POST",
        headers={"X-Amz-Target": "Logs_20140328.DescribeLogGroups", "Content-Type": "application/x-amz-json-1.1"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert json.loads(e.value.read())["__type"] == "SerializationException"


def test_delete_log_group_and_the_aws_cli(cw, kiln, lam, fn):
    k.invoke_json(lam, fn, {"action": "text", "text": "cli-visible"})
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    aws = str(k.ROOT / ".venv" / "bin" / "aws")

    def cli(*args):
        out = subprocess.run([aws, "logs", *args, "--endpoint-url", kiln.endpoint], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    groups = cli("describe-log-groups", "--log-group-name-prefix", group(fn))["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group(fn)]
    ev = cli("filter-log-events", "--log-group-name", group(fn), "--filter-pattern", "cli-visible")["events"]
    assert [e["message"] for e in ev] == ["cli-visible\n"]
    cli("delete-log-group", "--log-group-name", group(fn))
    assert not cw.describe_log_groups(logGroupNamePrefix=group(fn))["logGroups"]
    assert not (kiln.data_dir / "logs" / fn).exists()
    # The next invocation logs again, into a new group.
    k.invoke_json(lam, fn, {"action": "text", "text": "after delete"})
    k.wait_for(lambda: cw.describe_log_groups(logGroupNamePrefix=group(fn))["logGroups"], timeout=10, what="group back")
