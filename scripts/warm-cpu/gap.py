#!/usr/bin/env python3
"""The control: a trivial blocking echo server's CPU per round trip, with and without a pause.

Usage: gap.py N PAUSE_SECONDS

A forked child echoes what it reads on one TCP connection; the parent makes N round trips of
200 bytes, sleeping PAUSE_SECONDS after each, and prints the child's run time per round trip
(/proc/PID/schedstat). Nothing of kiln is involved: the difference between pauses 0 and 0.001
is what this machine charges a process for waking after its CPUs were idle.
"""
import os
import socket
import sys
import time

n, pause = int(sys.argv[1]), float(sys.argv[2])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
pid = os.fork()
if pid == 0:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(4096)
        if not data:
            os._exit(0)
        conn.sendall(data)
s = socket.create_connection(listener.getsockname())
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 200


def run_ns():
    return int(open(f"/proc/{pid}/schedstat").read().split()[0])


for _ in range(200):
    s.sendall(msg)
    s.recv(4096)
a = run_ns()
for _ in range(n):
    s.sendall(msg)
    s.recv(4096)
    if pause:
        time.sleep(pause)
b = run_ns()
print(f"pause {pause * 1e3:.1f} ms: echo server CPU per round trip {(b - a) / n / 1e3:.1f} us; load {os.getloadavg()[0]:.1f}")
s.close()
os.waitpid(pid, 0)
