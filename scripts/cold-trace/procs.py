"""The process tree of a kiln server, for the cold-trace drivers (drive.py, pair.py)."""


def children(pid):
    try:
        return open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []


def bootstraps_of(*servers):
    """The bootstraps of these servers' environments: server -> zygote -> init -> bootstrap."""
    return {p for s in servers for z in children(s) for i in children(z) for p in children(i)}
