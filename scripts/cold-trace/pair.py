#!/usr/bin/python3
"""Paired cold-start driver: starts two builds' `kiln serve` side by side (port 0, temp data
dirs), deploys the same custom-runtime bootstrap at 128 MB on both, and makes N rounds of one
cold call on each, alternating which server goes first (A B, B A, ...). Each call comes after a
configuration update and the old environment's exit, as in drive.py. Prints each build's p50
and the median of the per-round differences (B - A), so that both builds see the same moments
of a noisy machine. Usage: pair.py KILN_A KILN_B BOOTSTRAP_BIN N. The request is sent in one
write (headers and body), as the bench's client does."""
import base64, http.client, io, json, os, socket, statistics, subprocess, sys, tempfile, time, zipfile

from procs import bootstraps_of, listening_port

kiln_a, kiln_b, hello, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ZIP = io.BytesIO()
with zipfile.ZipFile(ZIP, "w") as z:
    zi = zipfile.ZipInfo("bootstrap"); zi.external_attr = (0o755 | 0o100000) << 16
    z.writestr(zi, open(hello, "rb").read())


class Server:
    def __init__(self, kiln):
        self.data = tempfile.mkdtemp(prefix="coldpair-")
        self.srv = subprocess.Popen([kiln, "serve", "--addr", "127.0.0.1:0", "--data-dir", self.data,
                                     "--console", "off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = listening_port(self.srv.pid)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.conn.sock = self.sock
        st, d = self.req("POST", "/2015-03-31/functions", {"FunctionName": "f", "Runtime": "provided.al2023",
            "Role": "arn:aws:iam::000000000000:role/r", "Handler": "bootstrap", "MemorySize": 128,
            "Code": {"ZipFile": base64.b64encode(ZIP.getvalue()).decode()}})
        assert st == 201, (st, d)
        self.wait_ok()

    def req(self, method, path, body=None):
        b = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else (body or b"")
        head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(b)}\r\n\r\n").encode()
        self.sock.sendall(head + b)
        r = http.client.HTTPResponse(self.sock, method=method)
        r.begin(); d = r.read()
        return r.status, d

    def wait_ok(self):
        while True:
            c = json.loads(self.req("GET", "/2015-03-31/functions/f/configuration")[1])
            if c.get("State") == "Active" and c.get("LastUpdateStatus") in (None, "Successful"):
                return
            time.sleep(0.01)

    def prepare(self, i):
        st, d = self.req("PUT", "/2015-03-31/functions/f/configuration", {"Description": f"d{i}"})
        assert st == 200, (st, d)
        self.wait_ok()

    def cold(self):
        t = time.perf_counter()
        st, d = self.req("POST", "/2015-03-31/functions/f/invocations", b'{"command":"x"}')
        el = (time.perf_counter() - t) * 1000
        assert st == 200, (st, d)
        return el

    def close(self):
        self.srv.terminate(); self.srv.wait()
        subprocess.run(["rm", "-rf", self.data])


def bootstraps():
    # The bootstraps of both servers (other bootstraps on the machine may stay).
    return bootstraps_of(*(s.srv.pid for s in servers))


def gone(before):
    # The retired environment's bootstrap is gone (other bootstraps on the machine may stay).
    t_end = time.time() + 5
    while time.time() < t_end and bootstraps() & before:
        time.sleep(0.005)


a, b = Server(kiln_a), Server(kiln_b)
servers = [a, b]
la, lb, diff = [], [], []
try:
    for i in range(n):
        order = [(a, la), (b, lb)] if i % 2 == 0 else [(b, lb), (a, la)]
        for s, out in order:
            before = bootstraps()
            s.prepare(i)
            gone(before)
            time.sleep(0.03)
            out.append(s.cold())
        diff.append(lb[-1] - la[-1])
finally:
    a.close(); b.close()
q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))]
print("A p50 %.3f p10 %.3f | B p50 %.3f p10 %.3f | B-A median %+.3f ms, B faster in %d%% of %d rounds"
      % (q(la, .5), q(la, .1), q(lb, .5), q(lb, .1), statistics.median(diff),
         100 * sum(d < 0 for d in diff) // len(diff), len(diff)))
