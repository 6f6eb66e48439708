"""Escape attempts and lifecycle of the sandbox, run by real functions through the real server
(issue 3). Every attempt must fail for the function, leave kiln healthy and the host clean.

Host cleanliness is checked per server: each `kiln serve` names its cgroups `kiln-<id>` with an
id derived from its data dir, so the checks see only that server's environments even while other
tests run in parallel."""

import json
import os
import re
import signal
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import kiln_e2e as k

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root; kiln runs with --isolation sandbox")

PROBE = r'''
import ctypes, json, os, socket, threading, time
TICKS = 0
def _tick():
    global TICKS
    while True:
        TICKS += 1
        time.sleep(0.01)
threading.Thread(target=_tick, daemon=True).start()
HOLD = []

def handle(event, context):
    a = event["action"]
    if a == "ps":
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        names = {}
        for p in pids:
            try:
                names[p] = open("/proc/%d/comm" % p).read().strip()
            except OSError:
                pass
        return {"pids": pids, "names": names}
    if a == "read":
        try:
            with open(event["path"], "rb") as f:
                return {"ok": True, "bytes": len(f.read())}
        except OSError as e:
            return {"ok": False, "error": e.__class__.__name__}
    if a == "write":
        try:
            with open(event["path"], "w") as f:
                f.write("x")
            return {"ok": True}
        except OSError as e:
            return {"ok": False, "error": e.__class__.__name__}
    if a == "connect":
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", event["port"]))
            return {"ok": True}
        except OSError as e:
            return {"ok": False, "error": e.__class__.__name__}
    if a == "forkbomb":
        n = 0
        for _ in range(event["max"]):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(3)
                os._exit(0)
            n += 1
        return {"forked": n}
    if a == "alloc":
        HOLD.append(bytearray(event["mb"] * 1024 * 1024))
        for i in range(0, len(HOLD[-1]), 4096):
            HOLD[-1][i] = 1
        return {"held_mb": sum(len(b) for b in HOLD) // (1024 * 1024)}
    if a == "free":
        HOLD.clear()
        return {}
    if a == "daemon":
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        os.wait()
        return {"daemonised": True}
    if a == "ticks":
        return {"ticks": TICKS}
    if a == "identity":
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
        return {"uid": os.getuid(), "gid": os.getgid(), "cap_eff": status["CapEff"].strip(),
                "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
                "hostname": socket.gethostname(), "runtime_api": os.environ["AWS_LAMBDA_RUNTIME_API"]}
    if a == "unshare":
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.unshare(0x40000000)  # CLONE_NEWNET
        return {"rc": rc, "errno": ctypes.get_errno()}
    raise ValueError(a)
'''


_env_pids = k.env_processes


def leftover_processes(server):
    """Function processes (uid 993) of this server still alive. A running server also keeps a few
    blank sandboxes ready, whose root-owned init and parked bootstrap process do not count."""
    return [pid for pid, _ in k.function_processes(server)]


def leftover_cgroups(server, blanks_allowed=True):
    """Environment cgroup directories of this server still on the host. Idle blanks (`blank.<n>`
    holding no function process) are allowed while the server runs."""
    name = "kiln-%s" % k.instance_id(server)
    busy = bool(leftover_processes(server))
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(root) == name:
            found.extend(
                os.path.join(root, d) for d in dirs if not (blanks_allowed and d.startswith("blank.") and not busy)
            )
            dirs[:] = []
        elif root.count("/") > 9:
            dirs[:] = []
    return found


def leftover_mounts(server):
    data = str(Path(server.data_dir).resolve())
    return [l for l in Path("/proc/self/mountinfo").read_text().splitlines() if data in l]


def assert_host_clean(server, timeout=10, running=True):
    k.wait_for(lambda: not leftover_processes(server), timeout=timeout, what="no environment processes left")
    k.wait_for(lambda: not leftover_cgroups(server, blanks_allowed=running), timeout=timeout, what="no environment cgroups left")
    if not running:
        assert not _env_pids(server), "a stopped server leaves no process at all"
    assert not leftover_mounts(server)


@pytest.fixture
def own(kiln_factory):
    server = kiln_factory("sandbox")
    return server, k.lambda_client(server.endpoint)


def probe(lam, name, **event):
    return k.invoke_json(lam, name, event)


def test_function_sees_only_its_own_processes(lam, deploy):
    name = deploy(k.python_zip(PROBE))
    out = probe(lam, name, action="ps")
    assert len(out["pids"]) <= 3, out
    assert not any("kiln" in n or "pytest" in n for n in out["names"].values()), out


def test_host_files_outside_the_mounts_are_invisible(lam, deploy, kiln, tmp_path):
    secret = Path("/tmp") / ("kiln-secret-%s" % uuid.uuid4().hex)
    secret.write_text("secret")
    try:
        name = deploy(k.python_zip(PROBE))
        for path in [str(secret), "/root/.bashrc", str(Path(kiln.data_dir) / "kiln.db"), "/etc/shadow", "/proc/1/environ"]:
            out = probe(lam, name, action="read", path=path)
            assert not out["ok"], (path, out)
        assert probe(lam, name, action="read", path="/var/task/handler.py")["ok"]
    finally:
        secret.unlink()


def test_only_tmp_is_writable(lam, deploy):
    name = deploy(k.python_zip(PROBE))
    for path in ["/usr/x", "/etc/x", "/var/task/x", "/x", "/opt/x", "/var/x"]:
        out = probe(lam, name, action="write", path=path)
        assert not out["ok"], (path, out)
    assert probe(lam, name, action="write", path="/tmp/x")["ok"]


def test_identity_is_unprivileged(lam, deploy):
    name = deploy(k.python_zip(PROBE))
    out = probe(lam, name, action="identity")
    assert out["uid"] == 993 and out["gid"] == 993
    assert int(out["cap_eff"], 16) == 0
    assert out["no_new_privs"] == "1" and out["seccomp"] == "2"
    assert out["runtime_api"] == "127.0.0.1:9001"
    unshare = probe(lam, name, action="unshare")
    assert unshare["rc"] == -1 and unshare["errno"] == 1  # EPERM


PASSWD_PROBE = (
    "import os, pwd, site\n"
    "def handler(event, context):\n"
    "    try:\n"
    "        open('/etc/passwd', 'a').write('x')\n"
    "        writable = True\n"
    "    except OSError:\n"
    "        writable = False\n"
    "    me = pwd.getpwuid(os.getuid())\n"
    "    return {'name': me.pw_name, 'dir': me.pw_dir, 'home': os.path.expanduser('~'),\n"
    "            'user_site': site.getusersitepackages(), 'root': pwd.getpwuid(0).pw_name,\n"
    "            'lines': open('/etc/passwd').read().splitlines(), 'writable': writable}\n"
)


def test_the_function_user_is_in_etc_passwd(lam, deploy):
    """The environment's /etc/passwd is the host's with Lambda's user for uid 993 after it, so
    the function's own uid resolves (Python's `site` looks it up at every start) as on Lambda;
    it stays read-only and the host's file is untouched."""
    name = deploy(k.make_zip({"app.py": PASSWD_PROBE}), prefix="py", Runtime="python3.11", Handler="app.handler")
    out = k.invoke_json(lam, name)
    host = Path("/etc/passwd").read_text().splitlines()
    assert out["lines"][: len(host)] == host
    assert out["lines"][len(host) :] == ["sbx_user1051:x:993:993::/home/sbx_user1051:/sbin/nologin"]
    assert not any(line.startswith("sbx_user1051:") for line in host)
    host_993 = [line.split(":")[0] for line in host if line.split(":")[2:3] == ["993"]]
    assert out["name"] == (host_993[0] if host_993 else "sbx_user1051"), out
    if not host_993:
        assert out["dir"] == out["home"] == "/home/sbx_user1051", out
        assert out["user_site"] == "/home/sbx_user1051/.local/lib/python3.11/site-packages", out
    assert out["root"] == "root"
    assert out["writable"] is False


def test_node_functions_see_the_function_user_too(lam, deploy):
    """Node.js reads the same entry: `os.userInfo()` and `os.homedir()` answer as on Lambda
    (before, `os.userInfo()` threw: uid 993 was unknown)."""
    src = (
        "const os = require('os');\n"
        "exports.handler = async () => {\n"
        "  const u = os.userInfo();\n"
        "  return { user: u.username, uid: u.uid, home: os.homedir() };\n"
        "};\n"
    )
    name = deploy(k.make_zip({"index.js": src}), prefix="js", Runtime="nodejs20.x", Handler="index.handler")
    host = Path("/etc/passwd").read_text().splitlines()
    if any(line.split(":")[2:3] == ["993"] for line in host):
        pytest.fail("this host has its own uid 993 in /etc/passwd: the function would see that user")
    assert k.invoke_json(lam, name) == {"user": "sbx_user1051", "uid": 993, "home": "/home/sbx_user1051"}


def test_host_loopback_is_unreachable(lam, deploy):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        name = deploy(k.python_zip(PROBE))
        out = probe(lam, name, action="connect", port=listener.getsockname()[1])
        assert not out["ok"], out
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_fork_bomb_is_bounded_and_kiln_stays_healthy(lam, deploy):
    # A full vCPU, so a thousand forks take a second, not the 10 % share of 128 MB.
    name = deploy(k.python_zip(PROBE), Timeout=60, MemorySize=1769)
    out = probe(lam, name, action="forkbomb", max=2000)
    assert out["forked"] < 1024, out
    assert probe(lam, name, action="ticks")["ticks"] >= 0


def test_allocating_past_the_memory_limit_ends_the_call_not_kiln(lam, deploy):
    name = deploy(k.python_zip(PROBE), MemorySize=128, Timeout=20)
    resp, error = k.invoke_error(lam, name, {"action": "alloc", "mb": 400})
    assert error["errorType"] in ("Runtime.OutOfMemory", "Runtime.ExitError"), error
    assert "signal: killed" in error["errorMessage"], error
    assert probe(lam, name, action="ticks")["ticks"] >= 0


def test_max_memory_used_is_the_real_peak(lam, deploy):
    # A quarter of a CPU touches 100 MB slowly on a busy machine: a generous timeout.
    name = deploy(k.python_zip(PROBE), MemorySize=256, Timeout=60)
    resp, body = k.invoke(lam, name, {"action": "alloc", "mb": 100}, LogType="Tail")
    assert "FunctionError" not in resp, body
    used = int(re.search(r"Max Memory Used: (\d+) MB", k.log_result(resp)).group(1))
    assert 100 <= used <= 256, used


def test_an_idle_environment_is_frozen(lam, deploy):
    name = deploy(k.python_zip(PROBE))
    first = probe(lam, name, action="ticks")["ticks"]
    time.sleep(1.5)
    second = probe(lam, name, action="ticks")["ticks"]
    # A thread ticking every 10 ms would count ~150 while idle if it were not frozen.
    assert second - first < 40, (first, second)


def test_tmp_is_kept_while_warm_and_empty_in_a_new_environment(lam, deploy):
    name = deploy(k.python_zip())
    k.invoke_json(lam, name, {"action": "tmp_write", "text": "kept"})
    assert k.invoke_json(lam, name, {"action": "tmp_read"}) == {"text": "kept"}
    lam.update_function_configuration(FunctionName=name, Description="new environments please")
    k.wait_updated(lam, name)
    assert k.invoke_json(lam, name, {"action": "tmp_read"}) == {"text": None}


def test_daemonised_orphan_dies_with_the_function(own):
    server, lam = own
    name = k.unique_name("daemon")
    k.create(lam, name, k.python_zip(PROBE))
    assert probe(lam, name, action="daemon")["daemonised"]
    assert leftover_processes(server), "the environment should be alive while warm"
    lam.delete_function(FunctionName=name)
    assert_host_clean(server)


def test_sigterm_leaves_nothing_behind(own):
    server, lam = own
    name = k.unique_name("term")
    k.create(lam, name, k.python_zip(PROBE))
    probe(lam, name, action="daemon")
    assert server.stop(signal.SIGTERM) == 0
    assert_host_clean(server, running=False)


def test_a_killed_zygote_is_replaced_and_cold_starts_go_on(own):
    # The zygote every init is cloned from: killed, it is noticed by the next blank's build,
    # which goes to a new one; more cold starts than the pool holds all succeed.
    server, lam = own
    envs = {pid for pid, _ in _env_pids(server)}
    zygotes = [pid for pid in _children(server.proc.pid) if pid not in envs]
    assert len(zygotes) == 1, zygotes
    os.kill(zygotes[0], signal.SIGKILL)
    k.wait_for(lambda: not _alive(zygotes[0]), what="the zygote gone")
    for i in range(6):
        name = k.unique_name("zygote%d" % i)
        k.create(lam, name, k.python_zip(PROBE))
        assert probe(lam, name, action="ticks")["ticks"] >= 0
    def outside_envs():
        envs = {pid for pid, _ in _env_pids(server)}
        return [p for p in _children(server.proc.pid) if p not in envs]

    k.wait_for(lambda: len(outside_envs()) == 1, what="one new zygote")
    assert zygotes[0] not in outside_envs()


def test_kill_9_leftovers_are_removed_at_the_next_start(own):
    server, lam = own
    name = k.unique_name("kill9")
    k.create(lam, name, k.python_zip(PROBE))
    probe(lam, name, action="daemon")
    before = {pid for pid, _ in _env_pids(server)}
    assert before
    server.stop(signal.SIGKILL)
    time.sleep(0.5)
    server.start()
    assert_host_clean(server)
    # Every process of the killed server (environments and blanks alike) is gone.
    k.wait_for(lambda: not before & {pid for pid, _ in _env_pids(server)}, what="the dead server's processes removed")
    # And the function still works after the restart.
    assert probe(k.lambda_client(server.endpoint), name, action="ticks")["ticks"] >= 0


def _children(ppid):
    """Live processes whose parent is `ppid`."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit() and _alive(int(p)):
            try:
                if int(Path("/proc/%s/stat" % p).read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    found.append(int(p))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _alive(pid):
    """Whether `pid` runs (a zombie does not)."""
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def instance_cgroups(server):
    """Every cgroup directory named after the server's instance (`kiln-<id>`), in any hierarchy."""
    name = "kiln-%s" % k.instance_id(server)
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(root) == name:
            found.append(root)
            dirs[:] = []
        elif root.count("/") > 9:
            dirs[:] = []
    return found


def test_kill_9_leftovers_are_removed_by_any_server_that_starts(kiln_factory):
    # A server killed with SIGKILL whose data dir is never served again: its environments die
    # with it, and its cgroups go when any other kiln starts.
    dead = kiln_factory("dead")
    lam = k.lambda_client(dead.endpoint)
    name = k.unique_name("kill9other")
    k.create(lam, name, k.python_zip(PROBE))
    probe(lam, name, action="daemon")
    assert instance_cgroups(dead)
    # The sandbox zygote: the server's child outside its environments' cgroups.
    envs = {pid for pid, _ in _env_pids(dead)}
    zygotes = [pid for pid in _children(dead.proc.pid) if pid not in envs]
    assert zygotes, "no sandbox zygote beside the server"
    dead.stop(signal.SIGKILL)
    k.wait_for(lambda: not _env_pids(dead), what="the dead server's processes gone")
    k.wait_for(lambda: not [p for p in zygotes if _alive(p)], what="the dead server's zygote gone")
    kiln_factory("other")
    k.wait_for(lambda: not instance_cgroups(dead), what="the dead server's cgroups removed by another server")


def test_without_privileges_kiln_says_so_in_one_line_at_start():
    # pytest's own temp dirs are private to root; nobody needs one it can write.
    data = Path(tempfile.mkdtemp(prefix="kiln-unprivileged-"))
    os.chmod(data, 0o777)
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(k.KILN_BIN), "serve",
           "--addr", "127.0.0.1:0", "--data-dir", str(data / "d")]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert proc.returncode != 0
    assert time.monotonic() - started < 10
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "root" in lines[0] and "--isolation none" in lines[0], lines[0]
