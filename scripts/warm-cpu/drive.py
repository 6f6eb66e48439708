#!/usr/bin/env python3
"""kiln serve's CPU per warm call, for one function and one think time.

Usage: drive.py KILN BOOTSTRAP N [hold]
Environment: MEM (MemorySize, default 128), BODY (the event; default {"name":"bench"};
{"action":"sleep","ms":1} makes `minimal-runtime` and `hello-rust` wait 1 ms per event),
WORKERS (kiln serve --workers).

Starts `kiln serve` on a free port with a temporary data dir, deploys BOOTSTRAP as `fn`, makes
200 warm-up calls and then N sequential Invokes on one kept-alive connection, and prints the
latency percentiles and kiln serve's CPU per call: utime + stime (/proc/PID/stat, the bench's
goal line) and the sum of its threads' run time (/proc/PID/task/*/schedstat, nanoseconds).
With `hold` it prints `PID <kiln serve>` before the measured calls and waits for the file
$WARM_CPU_DIR/go (default /tmp/warm-cpu), so that perf or strace can attach; it creates
$WARM_CPU_DIR/done after them, and keeps the server up for LINGER seconds more (default 0).
"""
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

kiln, boot, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
hold = len(sys.argv) > 4 and sys.argv[4] == "hold"
mem = os.environ.get("MEM", "128")
body = os.environ.get("BODY", '{"name":"bench"}').encode()
signal_dir = os.environ.get("WARM_CPU_DIR", "/tmp/warm-cpu")
work = tempfile.mkdtemp(prefix="warm-cpu-")
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
args = [kiln, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", work + "/data"]
if os.environ.get("WORKERS"):
    args += ["--workers", os.environ["WORKERS"]]
log = open(work + "/serve.log", "w")
server = subprocess.Popen(args, stdout=log, stderr=log)


def cpu_ticks():
    f = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def run_ns():
    total = 0
    for tid in os.listdir(f"/proc/{server.pid}/task"):
        try:
            total += int(open(f"/proc/{server.pid}/task/{tid}/schedstat").read().split()[0])
        except OSError:
            pass
    return total


try:
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port)
            c.request("GET", "/2015-03-31/functions/")
            c.getresponse().read()
            break
        except OSError:
            time.sleep(0.05)
    code = work + "/fn"
    os.mkdir(code)
    shutil.copy(boot, code + "/bootstrap")
    endpoint = f"http://127.0.0.1:{port}"
    subprocess.run([kiln, "deploy", "fn", code, "--memory", mem, "--endpoint", endpoint], check=True,
                   stdout=subprocess.DEVNULL)
    c = http.client.HTTPConnection("127.0.0.1", port)

    def call():
        c.request("POST", "/2015-03-31/functions/fn/invocations", body=body)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"invoke answered {r.status}")

    for _ in range(200):
        call()
    if hold:
        os.makedirs(signal_dir, exist_ok=True)
        print("PID", server.pid, flush=True)
        while not os.path.exists(signal_dir + "/go"):
            time.sleep(0.05)
    ticks0, ns0, wall0 = cpu_ticks(), run_ns(), time.time()
    lat = []
    for _ in range(n):
        a = time.perf_counter()
        call()
        lat.append(time.perf_counter() - a)
    ticks1, ns1, wall1 = cpu_ticks(), run_ns(), time.time()
    if hold:
        open(signal_dir + "/done", "w").close()
        time.sleep(float(os.environ.get("LINGER", "0")))
    lat.sort()
    q = lambda f: lat[int(f * (len(lat) - 1))] * 1e6
    tick = os.sysconf("SC_CLK_TCK")
    print(f"latency us: p50 {q(.5):.0f} p90 {q(.9):.0f} p99 {q(.99):.0f} mean {sum(lat) / n * 1e6:.0f}")
    print(f"{os.path.basename(boot)} {mem} MB body {body.decode()}: kiln serve CPU per call "
          f"{(ticks1 - ticks0) / tick / n * 1e6:.0f} us (utime+stime), {(ns1 - ns0) / n / 1e3:.0f} us (schedstat); "
          f"wall per call {(wall1 - wall0) / n * 1e6:.0f} us; load {os.getloadavg()[0]:.1f}", flush=True)
finally:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=20)
    shutil.rmtree(work, ignore_errors=True)
