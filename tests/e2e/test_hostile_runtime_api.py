"""Hostile functions against kiln's own resources (issue 17, part A): the Runtime API
(descriptors, memory, freezing) and the REST side (slow heads, deep-path zips, concurrent
identical uploads). Each test runs its own `kiln serve` so that descriptor counts, RSS and CPU
are that server's alone, and asserts the bound with numbers.

The hostile functions are Python custom runtimes (`#!/usr/bin/python3` bootstraps) that speak raw
sockets to AWS_LAMBDA_RUNTIME_API. They need real sandboxes, so these tests need root and fail
(never skip) without it."""

import base64
import http.client
import io
import json
import os
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

import kiln_e2e as k

# Bounds, generous against the numbers the issue measured before the fix.
FD_SLACK = 12  # descriptors a server may differ by at rest (blank pool refills, log files)
HOLD_FD_BUDGET = 80  # descriptors one hostile environment may make kiln hold while it lives
RSS_BUDGET_MB = 96  # kiln's RSS growth under the body and head attack (was +632 MB and +353 MB)


@pytest.fixture
def own(kiln_factory):
    if os.geteuid() != 0:
        pytest.fail("hostile-function tests need root: kiln runs them in real sandboxes", pytrace=False)
    server = kiln_factory("hostile")
    return server, k.lambda_client(server.endpoint)


def fd_count(server):
    return len(os.listdir("/proc/%d/fd" % server.proc.pid))


def rss_mb(server):
    for line in Path("/proc/%d/status" % server.proc.pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cpu_ticks(pid):
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def function_pids(server):
    """Host pids of this server's function processes (not root, in one of its cgroups)."""
    return [pid for pid, _ in k.function_processes(server)]


def settled_fds(server):
    """The server's descriptor count once it is at rest (the blank pool full)."""
    last = None
    for _ in range(40):
        now = fd_count(server)
        if now == last:
            return now
        last = now
        time.sleep(0.25)
    return last


def deploy(lam, bootstrap, timeout=30, memory=128):
    name = k.unique_name("hostile")
    k.create(lam, name, k.script_zip(bootstrap), Timeout=timeout, MemorySize=memory)
    return name


# --------------------------------------------------------------------------------------------
# Finding 1: descriptors pinned through the Runtime API
# --------------------------------------------------------------------------------------------

FLOOD = r'''#!/usr/bin/python3
import json, os, select, socket, time
HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
PORT = int(PORT)
NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n"

held = []
for _ in range(300):
    try:
        s = socket.create_connection((HOST, PORT), timeout=2)
        # A pipelined byte after `next` kept hyper from noticing a hang-up.
        s.sendall(NEXT + b"X")
        held.append(s)
    except OSError:
        pass
opened = len(held)

# The event arrives on one of the held `next` calls; kiln closes the connections over its cap.
closed, rid, got = 0, None, None
alive = list(held)
deadline = time.time() + 20
while time.time() < deadline and (rid is None or time.time() < settle):
    r, _, _ = select.select(alive, [], [], 0.5)
    for s in r:
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            closed += 1
            alive.remove(s)
            continue
        for line in data.decode("latin-1").split("\r\n"):
            if line.lower().startswith("lambda-runtime-aws-request-id:") and rid is None:
                rid, got = line.split(":", 1)[1].strip(), s
                settle = time.time() + 1.0
alive.remove(got)
got.close()

body = json.dumps({"opened": opened, "closed_by_kiln": closed, "held": len(alive)}).encode()
post = (b"POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        % (rid.encode(), len(body))) + body
for _ in range(100):
    try:
        c = socket.create_connection((HOST, PORT), timeout=2)
        c.sendall(post)
        if c.recv(4096).startswith(b"HTTP/1.1 202"):
            break
    except OSError:
        pass
    time.sleep(0.1)
# Keep every other connection, parked in `next` with a byte behind it, for good.
time.sleep(3600)
'''


def test_runtime_api_connection_flood_leaves_no_descriptor_behind(own):
    server, lam = own
    baseline = settled_fds(server)
    for round_ in range(3):
        name = deploy(lam, FLOOD)
        stats = k.invoke_json(lam, name, {})
        # At most 16 connections per environment; the rest were closed at once.
        assert stats["opened"] >= 250, stats
        assert stats["held"] <= 16, stats
        assert stats["closed_by_kiln"] >= stats["opened"] - 16, stats
        holding = fd_count(server)
        assert holding <= baseline + HOLD_FD_BUDGET, "round %d: %d descriptors, baseline %d" % (round_, holding, baseline)
        lam.delete_function(FunctionName=name)
        # Every connection task ends with the environment: back to the baseline.
        k.wait_for(
            lambda: fd_count(server) <= baseline + FD_SLACK,
            timeout=30,
            what="kiln's descriptors back to %d (+%d) after round %d" % (baseline, FD_SLACK, round_),
        )
    print("descriptors: baseline %d, after 3 rounds %d" % (baseline, fd_count(server)))


# --------------------------------------------------------------------------------------------
# Finding 2: kiln's memory through the Runtime API
# --------------------------------------------------------------------------------------------

MEMORY = r'''#!/usr/bin/python3
import json, os, socket, time
HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
PORT = int(PORT)
stats = {}

def connect():
    s = socket.create_connection((HOST, PORT), timeout=3)
    s.setblocking(False)
    return s

def push_bodies(path, conns=100, size=6000000, seconds=3.0):
    """`conns` connections each declaring a `size` body and sending all of it but 1000 bytes."""
    socks = []
    for _ in range(conns):
        try:
            s = connect()
            s.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, size))
            socks.append([s, 0])
        except OSError:
            pass
    chunk = b"a" * 262144
    sent_total, end = 0, time.time() + seconds
    while time.time() < end:
        for entry in socks:
            s, sent = entry
            if s is None or sent >= size - 1000:
                continue
            try:
                n = s.send(chunk[: size - 1000 - sent])
                entry[1] += n
                sent_total += n
            except BlockingIOError:
                pass
            except OSError:
                entry[0] = None
        time.sleep(0.005)
    for s, _ in socks:
        if s is not None:
            s.close()
    return sent_total

def request(raw, want):
    """Sends `raw` on a new connection until the answer starts with `want` (kiln may still be
    closing the attack's connections, and a body slot is freed only once it has seen the close)."""
    for _ in range(300):
        try:
            c = socket.create_connection((HOST, PORT), timeout=5)
            c.sendall(raw)
            data = b""
            while b"\r\n\r\n" not in data:
                more = c.recv(65536)
                if not more:
                    break
                data += more
            if data.startswith(want):
                return c, data
            c.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("runtime api unreachable")

# 1. During Init: unfinished 380 KB heads.
heads = []
for _ in range(900):
    try:
        s = connect()
        try:
            s.send(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nx-pad: " + b"a" * 380000)
        except OSError:
            pass
        heads.append(s)
    except OSError:
        pass
stats["heads"] = len(heads)
time.sleep(1.0)
for s in heads:
    s.close()
# 2. Still in Init: almost complete 6 MB init/error bodies on 100 connections.
stats["init_error_bytes_sent"] = push_bodies(b"/2018-06-01/runtime/init/error")
# 3. End Init and take the event.
c, data = request(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200")
rid = [l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"lambda-runtime-aws-request-id:")][0]
c.close()
# 4. Almost complete 6 MB responses for the current request id on 100 connections.
stats["response_bytes_sent"] = push_bodies(b"/2018-06-01/runtime/invocation/%s/response" % rid)
body = json.dumps(stats).encode()
request(b"POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (rid, len(body), body), b"HTTP/1.1 202")
time.sleep(3600)
'''


def test_runtime_api_body_and_head_attack_keeps_kiln_memory_bounded(own):
    server, lam = own
    baseline_fds = settled_fds(server)
    name = deploy(lam, MEMORY, timeout=60)
    before = rss_mb(server)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], rss_mb(server))
            except OSError:
                return
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        stats = k.invoke_json(lam, name, {})
    finally:
        done.set()
        t.join()
    after = rss_mb(server)
    print("RSS MB: before %.1f, peak %.1f, after %.1f; attack %r" % (before, peak[0], after, stats))
    # The attack really ran: hundreds of MB offered to kiln.
    assert stats["heads"] >= 100, stats
    assert stats["init_error_bytes_sent"] + stats["response_bytes_sent"] > 6_000_000, stats
    assert peak[0] - before < RSS_BUDGET_MB, "kiln's RSS grew by %.0f MB (budget %d MB)" % (peak[0] - before, RSS_BUDGET_MB)
    lam.delete_function(FunctionName=name)
    k.wait_for(lambda: fd_count(server) <= baseline_fds + FD_SLACK, timeout=30, what="descriptors back to baseline")


# --------------------------------------------------------------------------------------------
# Finding 5: an idle environment whose runtime never calls `next` again
# --------------------------------------------------------------------------------------------

SPIN = r'''#!/usr/bin/python3
import http.client, json, os
c = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
c.request("GET", "/2018-06-01/runtime/invocation/next")
r = c.getresponse()
rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
r.read()
c.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, body=json.dumps({"env": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]}))
c.getresponse().read()
# Never asks for `next` again: spins for ever.
x = 0
while True:
    x += 1
'''


def test_an_environment_that_never_calls_next_again_is_frozen_then_replaced(own):
    server, lam = own
    name = deploy(lam, SPIN, timeout=30)
    first = k.invoke_json(lam, name, {})
    pids = function_pids(server)
    assert pids, "the environment's processes are visible"
    time.sleep(0.5)
    t0 = {p: cpu_ticks(p) for p in pids}
    time.sleep(2.0)
    used = sum(cpu_ticks(p) - t0[p] for p in pids)
    hz = os.sysconf("SC_CLK_TCK")
    print("CPU used by the idle environment in 2 s: %.2f s" % (used / hz))
    # Before the fix it spun: ~1.8 s of CPU in 2 s. Frozen, it uses none.
    assert used <= hz // 20, "an idle environment used %.2f s of CPU in 2 s" % (used / hz)
    # The next event thaws it; it never fetches the event, so it is destroyed and the event runs
    # on a new environment instead of waiting for the 30 s timeout.
    started = time.monotonic()
    second = k.invoke_json(lam, name, {})
    took = time.monotonic() - started
    assert second["env"] != first["env"], "the event ran on a new environment"
    assert took < 25, "the event did not wait for the function's timeout (%.1f s)" % took
    k.wait_for(lambda: not (set(pids) & set(function_pids(server))), timeout=15, what="the old environment's processes gone")
    lam.delete_function(FunctionName=name)


# --------------------------------------------------------------------------------------------
# REST side
# --------------------------------------------------------------------------------------------


def deep_zip(entries=20, depth=30000):
    """About 2.4 MB of zip whose names are `depth` directories deep."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0)), "#!/bin/sh\n")
        for i in range(entries):
            zf.writestr(zipfile.ZipInfo("a/" * depth + "f%d" % i, date_time=(2020, 1, 1, 0, 0, 0)), b"x")
    return buf.getvalue()


def test_a_deep_path_zip_is_refused_quickly(own):
    server, lam = own
    z = deep_zip()
    assert len(z) > 2_000_000
    cpu0 = cpu_ticks(server.proc.pid)
    started = time.monotonic()
    with pytest.raises(Exception) as e:
        k.create(lam, k.unique_name("deep"), z, wait=False)
    took = time.monotonic() - started
    cpu = (cpu_ticks(server.proc.pid) - cpu0) / os.sysconf("SC_CLK_TCK")
    print("deep-path zip (%d bytes): answered in %.2f s, server CPU %.2f s" % (len(z), took, cpu))
    assert k.error_code(e.value) == "InvalidParameterValueException", e.value
    assert "deeper than" in str(e.value)
    # It cost 47 s of server CPU before; the check is now linear.
    assert took < 10 and cpu < 5, (took, cpu)
    # A deep package within the bounds still deploys and runs.
    files = {"bootstrap": (k.PYTHON_RUNTIME_DIR.joinpath("bootstrap").read_bytes(), 0o755),
             "handler.py": (k.PYTHON_RUNTIME_DIR / "handler.py").read_bytes()}
    files["a/" * 200 + "leaf.txt"] = "deep"
    name = k.unique_name("deepok")
    k.create(lam, name, k.make_zip(files))
    lam.delete_function(FunctionName=name)


def test_three_concurrent_identical_30mb_uploads_all_succeed(own):
    server, lam = own
    blob = os.urandom(30 * 1024 * 1024)
    z = k.python_zip(extra={"blob.bin": blob})
    assert len(z) > 30_000_000
    names = [k.unique_name("same") for _ in range(3)]
    results = [None] * 3
    code = base64.b64encode(z).decode()
    bodies = [
        json.dumps({"FunctionName": n, "Role": k.ROLE, "Runtime": k.RUNTIME, "Handler": k.HANDLER, "Code": {"ZipFile": code}}).encode()
        for n in names
    ]
    # The bodies are ready before the barrier, so the three uploads reach the store together.
    barrier = threading.Barrier(3)

    def create(i):
        try:
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
            barrier.wait()
            c.request("POST", "/2015-03-31/functions", body=bodies[i], headers={"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            results[i] = "ok" if r.status == 201 else "%d %s" % (r.status, data[:300])
        except Exception as exc:  # noqa: BLE001 - the test reports whatever went wrong
            results[i] = repr(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 3, results
    for n in names:
        k.wait_active(lam, n)
        cfg = lam.get_function_configuration(FunctionName=n)
        assert cfg["State"] == "Active" and cfg["CodeSha256"] == k.code_sha256(z), cfg
        k.invoke_json(lam, n, {})
    for n in names:
        lam.delete_function(FunctionName=n)


def test_rest_api_closes_a_connection_whose_head_never_ends(own):
    server, _ = own
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /2015-03-31/functions/ HTTP/1.1\r\nHost: x\r\nx-slow: ")
    s.settimeout(90)
    started = time.monotonic()
    data = b""
    while True:
        more = s.recv(4096)
        if not more:
            break
        data += more
    took = time.monotonic() - started
    print("slow head closed after %.1f s (%r)" % (took, data[:40]))
    assert took < 60, "the connection was held %.0f s" % took
    # The server is fine afterwards.
    k.lambda_client(server.endpoint).list_functions()
