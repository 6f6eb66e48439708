#!/usr/bin/python3
"""Cold-start driver: starts `kiln serve` (port 0, temp data dir), deploys a custom-runtime
bootstrap at 128 MB, and makes N cold calls (each after a configuration update and the old
environment's exit). Usage: drive.py KILN_BIN BOOTSTRAP_BIN N. With MARK=1 it enables a
`perf record --control` around each call (see record.sh) and marks each call's start and end
with getpriority(PRIO_PROCESS, 4242 / 4243), which steps.py looks for."""
import base64, http.client, io, json, os, subprocess, sys, tempfile, time, zipfile, re

from procs import bootstraps_of, listening_port

kiln, hello, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
DIR = os.environ.get("COLD_TRACE_DIR", "/tmp/cold-trace")
mark_on = os.environ.get("MARK") == "1"
ctl = os.open(os.path.join(DIR, "ctl"), os.O_RDWR) if mark_on else None
ack = os.open(os.path.join(DIR, "ack"), os.O_RDWR) if mark_on else None
def marker(who):
    try:
        os.getpriority(os.PRIO_PROCESS, who)
    except OSError:
        pass
def mark(s):
    if ctl is None:
        return
    if s.startswith("COLD_START"):
        os.write(ctl, b"enable\n"); os.read(ack, 100)
        marker(4242)
    else:
        marker(4243)
        os.write(ctl, b"disable\n"); os.read(ack, 100)

data = tempfile.mkdtemp(prefix="colddrv-")
log = open(os.environ.get("SERVER_LOG", "/dev/null"), "w")
idle = int(os.environ.get("IDLE", "0"))
extra = ["--memory-budget", str(128 * idle + 4096), "--concurrency-limit", str(idle + 100)] if idle else []
srv = subprocess.Popen([kiln, "serve", "--addr", "127.0.0.1:0", "--data-dir", data, "--console", "off"] + extra,
                       stdout=subprocess.PIPE, stderr=log, text=True)
port = listening_port(srv.pid)
print("server pid", srv.pid, "port", port, file=sys.stderr)
conn = http.client.HTTPConnection("127.0.0.1", port)
conn.connect()
import socket
conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def req(method, path, body=None):
    b = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    conn.request(method, path, body=b, headers={"Content-Type": "application/json"})
    r = conn.getresponse(); d = r.read()
    return r.status, d
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    zi = zipfile.ZipInfo("bootstrap"); zi.external_attr = (0o755 | 0o100000) << 16
    z.writestr(zi, open(hello, "rb").read())
def create(name):
    st, d = req("POST", "/2015-03-31/functions", {"FunctionName": name, "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::000000000000:role/r", "Handler": "bootstrap", "MemorySize": 128,
        "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}})
    assert st == 201, (st, d)
create("f")
def wait_ok():
    while True:
        st, d = req("GET", "/2015-03-31/functions/f/configuration")
        c = json.loads(d)
        if c.get("State") == "Active" and c.get("LastUpdateStatus") in (None, "Successful"):
            return
        time.sleep(0.01)
def bootstraps():
    # This server's bootstraps only: other servers' environments on the machine would
    # otherwise hold every call for its 5 s bound.
    return bootstraps_of(srv.pid)
wait_ok()
if idle:
    # IDLE=N: N environments of another function, left idle before the cold calls (callers
    # started 200 per second, each holding its environment until all have started).
    import threading
    create("idle")
    hold = int(idle / 200 * 1000) + 3000
    errors = []
    def call():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("POST", "/2015-03-31/functions/idle/invocations", body=json.dumps({"action": "sleep", "ms": hold}))
        r = c.getresponse(); r.read()
        if r.status != 200:
            errors.append(r.status)
    ts = []
    for _ in range(idle):
        t = threading.Thread(target=call); t.start(); ts.append(t); time.sleep(1 / 200)
    for t in ts:
        t.join()
    assert not errors, errors[:5]
    print("idle environments:", idle, file=sys.stderr)
    time.sleep(5)
lat = []
for i in range(n):
    before = bootstraps()
    st, d = req("PUT", "/2015-03-31/functions/f/configuration", {"Description": f"d{i}"})
    assert st == 200, (st, d)
    wait_ok()
    # wait for old environment processes to go
    t_end = time.time() + 5
    while time.time() < t_end:
        if not (bootstraps() & before):
            break
        time.sleep(0.01)
    time.sleep(float(os.environ.get("PAUSE", "0.05")))
    mark(f"COLD_START {i}")
    t = time.perf_counter()
    st, d = req("POST", "/2015-03-31/functions/f/invocations", b'{"command":"x"}')
    el = time.perf_counter() - t
    mark(f"COLD_END {i}")
    assert st == 200, (st, d)
    lat.append(el * 1000)
lat.sort()
print("n=%d p50=%.3f p10=%.3f p90=%.3f ms" % (n, lat[n // 2], lat[n // 10], lat[9 * n // 10]))
srv.terminate(); srv.wait()
subprocess.run(["rm", "-rf", data])
