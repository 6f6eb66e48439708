"""A kiln server's port and process tree, for the cold-trace drivers (drive.py, pair.py)."""

import subprocess
import time


def listening_port(pid, timeout=30):
    """The TCP port process `pid` listens on (a server started with `--addr 127.0.0.1:0`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if f"pid={pid}," in line:
                return int(line.split()[3].rsplit(":", 1)[1])
        time.sleep(0.05)
    raise AssertionError("no port")


def children(pid):
    try:
        return open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []


def bootstraps_of(*servers):
    """The bootstraps of these servers' environments: server -> zygote -> init -> bootstrap."""
    return {p for s in servers for z in children(s) for i in children(z) for p in children(i)}
