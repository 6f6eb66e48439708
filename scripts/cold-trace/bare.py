#!/usr/bin/python3
"""The same bootstrap started bare (as `kiln bench`'s bare spawn) against a tiny Runtime API,
N times, with the same markers as drive.py. Usage: bare.py BOOTSTRAP_BIN N."""
import os, socket, subprocess, sys, time
bin_, n = sys.argv[1], int(sys.argv[2])
DIR = os.environ.get("COLD_TRACE_DIR", "/tmp/cold-trace")
mark_on = os.environ.get("MARK") == "1"
ctl = os.open(os.path.join(DIR, "ctl"), os.O_RDWR) if mark_on else None
ack = os.open(os.path.join(DIR, "ack"), os.O_RDWR) if mark_on else None
def marker(who):
    try: os.getpriority(os.PRIO_PROCESS, who)
    except OSError: pass
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(16)
port = ls.getsockname()[1]
env = {"AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}", "AWS_LAMBDA_FUNCTION_NAME": "bare",
       "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
       "AWS_LAMBDA_LOG_STREAM_NAME": "bare", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bare"}
env.update(dict(kv.split("=", 1) for kv in os.environ.get("EXTRA_ENV", "").split(";") if kv))
lat = []
def read_req(c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d: return None
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    cl = 0
    for l in head.split(b"\r\n"):
        if l.lower().startswith(b"content-length:"): cl = int(l.split(b":")[1])
    while len(body) < cl: body += c.recv(65536)
    return head
for i in range(n):
    time.sleep(0.05)
    if mark_on:
        os.write(ctl, b"enable\n"); os.read(ack, 100)
    marker(4242)
    t = time.perf_counter()
    p = subprocess.Popen([bin_], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    import selectors
    sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
    conns = []; done = False; el = None
    bufs = {}
    while not done:
        for key, _ in sel.select():
            if key.fileobj is ls:
                c, _ = ls.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(c, selectors.EVENT_READ); conns.append(c); bufs[c] = b""
                continue
            c = key.fileobj
            d = c.recv(65536)
            if not d:
                sel.unregister(c); continue
            bufs[c] += d
            if b"\r\n\r\n" not in bufs[c]: continue
            head, _, body = bufs[c].partition(b"\r\n\r\n")
            cl = 0
            for l in head.split(b"\r\n"):
                if l.lower().startswith(b"content-length:"): cl = int(l.split(b":")[1])
            if len(body) < cl: continue
            bufs[c] = b""
            if head.startswith(b"GET"):
                if el is not None:
                    continue  # second next: leave pending
                body = b'{"command":"x"}'
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: r%d\r\nLambda-Runtime-Deadline-Ms: 9999999999999\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:bare\r\nContent-Length: %d\r\n\r\n" % (i, len(body)) + body)
            else:
                el = time.perf_counter() - t
                marker(4243)
                if mark_on:
                    os.write(ctl, b"disable\n"); os.read(ack, 100)
                c.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                done = True
    p.kill(); p.wait()
    for c in conns: c.close()
    sel.close()
    lat.append(el * 1000)
lat.sort()
print("bare n=%d p50=%.3f p10=%.3f" % (n, lat[n//2], lat[n//10]))
