"""A second `kiln serve` on a data dir that a live server uses is refused, and cannot harm it.

The data dir is locked by the first server before it touches anything; a second one, on the same
or another port, must stop with a message naming the first one's pid and address, without
cleaning "leftovers" (the first server's live sandboxes) or binding anything. The first server
must keep serving every kind of call afterwards. The lock dies with its holder: after `kill -9`
a new server starts on the same data dir and removes what the dead one left.
"""

import json
import os
import socket
import subprocess
import urllib.request

import pytest

import kiln_e2e as k

SECOND_SERVER_TIMEOUT_SECS = 60


def _status(server):
    with urllib.request.urlopen(server.endpoint + "/kiln/v1/status", timeout=10) as resp:
        return json.loads(resp.read())


def _is_root():
    return os.geteuid() == 0


def _start_second(first, port):
    cmd = [str(k.KILN_BIN), "serve", "--addr", "127.0.0.1:%d" % port, "--data-dir", str(first.data_dir)]
    cmd += first.extra_args
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=SECOND_SERVER_TIMEOUT_SECS, stdin=subprocess.DEVNULL, cwd=str(k.ROOT)
    )


def _count(lam, name):
    return k.invoke_json(lam, name, {"action": "count"})["count"]


@pytest.mark.parametrize("port", ["same", "other"])
def test_second_server_on_the_same_data_dir_is_refused_and_the_first_keeps_serving(kiln_factory, port):
    first = kiln_factory("first")
    lam = k.lambda_client(first.endpoint)
    warm = k.unique_name("warm")
    k.create(lam, warm, k.python_zip())
    assert _count(lam, warm) == 1  # a live environment the second server must not touch
    pool_before = _status(first).get("SandboxPool")

    second_port = first.port if port == "same" else k.free_port()
    out = _start_second(first, second_port)

    assert out.returncode != 0, "second server started:\n%s" % out.stderr
    assert "another kiln server (pid %d, listening on %s)" % (first.proc.pid, first.endpoint) in out.stderr, out.stderr
    assert str(first.data_dir.resolve()) in out.stderr, out.stderr
    assert "leftover" not in out.stderr, out.stderr
    assert "Address already in use" not in out.stderr, out.stderr
    if port == "other":
        # The refusal comes before the bind: the other port stays free.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", second_port))

    # The first server still serves every kind of call.
    assert first.proc.poll() is None, first.log_tail()
    assert _count(lam, warm) == 2, "the warm environment was lost"
    cold = k.unique_name("cold")
    k.create(lam, cold, k.python_zip())
    assert k.invoke_json(lam, cold, {"name": "cold"})["hello"] == "cold"
    resp = lam.invoke(FunctionName=warm, InvocationType="Event", Payload=b'{"action": "print", "text": "event-ran"}')
    assert resp["StatusCode"] == 202
    k.wait_for(
        lambda: "event-ran" in k.run_cli("logs", warm, endpoint=first.endpoint).stdout, timeout=30, what="the Event call's log"
    )
    lam.delete_function(FunctionName=cold)
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert cold not in names and warm in names
    status = k.run_cli("status", endpoint=first.endpoint)
    assert status.returncode == 0, status.stderr
    pool_after = _status(first).get("SandboxPool")
    if pool_before is not None:
        assert pool_after["FailedBuilds"] == pool_before["FailedBuilds"], (pool_before, pool_after)
    assert "cannot build a blank" not in first.log_tail(400)
    assert "removing leftover" not in first.log_tail(400)


def test_kill_9_leaves_no_stale_lock(kiln_factory):
    first = kiln_factory("killed")
    lam = k.lambda_client(first.endpoint)
    name = k.unique_name("k9")
    k.create(lam, name, k.python_zip())
    assert _count(lam, name) == 1
    first.kill()

    first.start()  # same data dir and port; fails the test if the lock were stale
    lam = k.lambda_client(first.endpoint)
    assert _count(lam, name) == 1, "expected a fresh environment after the restart"
    if _is_root() and "--isolation" not in first.extra_args:
        # The dead server's environment (and pool) were its own: the new one removed them.
        assert "removing leftover environment" in first.log_tail(400), first.log_tail()
