"""Plain helpers of the end-to-end suite: the server process, clients, zips and invokes.

Fixtures in conftest.py wrap these; tests import the helpers directly (`from kiln_e2e import ...`).
Nothing here knows about kiln internals: it only talks to the real `kiln` binary, over the AWS
Lambda REST API (boto3) and the CLI.
"""

import base64
import functools
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
KILN_BIN = Path(os.environ.get("KILN_BIN", TARGET_DIR / "debug" / "kiln"))
HELLO_RUST_BIN = Path(os.environ.get("HELLO_RUST_BIN", TARGET_DIR / "debug" / "hello-rust"))
PYTHON_RUNTIME_DIR = ROOT / "examples" / "python-runtime"

REGION = "us-east-1"
ACCOUNT = "000000000000"  # what an access key like "test" maps to (docs/lambda-api.md, "Accounts")
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
RUNTIME = "provided.al2023"
HANDLER = "handler.handle"

READY_PATH = "/2015-03-31/functions/"
READY_TIMEOUT_SECS = 30
STOP_TIMEOUT_SECS = 15

LAST_MODIFIED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
LOG_STREAM_RE = re.compile(r"^\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}$")


def function_arn(name):
    return "arn:aws:lambda:%s:%s:function:%s" % (REGION, ACCOUNT, name)


def unique_name(prefix="fn"):
    """A function name no other test (or xdist worker) uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


class KilnServer:
    """One `kiln serve` process on 127.0.0.1 with its own data dir.

    `start()` waits until the REST API answers; `stop()` sends SIGTERM and waits; `restart()`
    does both on the same data dir and port, which is what a persistence test needs.
    """

    def __init__(self, data_dir, log_dir, port=None, binary=KILN_BIN, extra_args=(), nofile=None):
        self.binary = Path(binary)
        # Both descriptor limits of the server (soft and hard), for tests of its own bounds:
        # kiln raises its soft limit to the hard one at start.
        self.nofile = nofile
        self.extra_args = [str(a) for a in extra_args]
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        self.last_exit_code = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def stdout_path(self):
        return self.log_dir / ("server-%d.stdout" % self.starts)

    @property
    def stderr_path(self):
        return self.log_dir / ("server-%d.stderr" % self.starts)

    def start(self):
        if not self.binary.exists():
            raise RuntimeError(
                "kiln binary not found at %s (build it with `cargo build -p kiln` or set KILN_BIN)" % self.binary
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        cmd = [str(self.binary), "serve", "--addr", "127.0.0.1:%d" % self.port, "--data-dir", str(self.data_dir)]
        cmd += self.extra_args
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            preexec = None
            if self.nofile is not None:
                import resource

                limit = self.nofile

                def set_nofile():
                    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

                preexec = set_nofile

            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=str(ROOT), preexec_fn=preexec
            )
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_SECS
        last_error = None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    "kiln serve exited with %s before answering\n--- stderr ---\n%s" % (code, self.log_tail())
                )
            try:
                with urllib.request.urlopen(self.endpoint + READY_PATH, timeout=2) as resp:
                    resp.read()
                return
            except urllib.error.HTTPError:
                # Any HTTP answer (even an auth error) means the listener is up.
                return
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(
            "kiln serve did not answer GET %s within %d s (last error: %s)\n--- stderr ---\n%s"
            % (READY_PATH, READY_TIMEOUT_SECS, last_error, self.log_tail())
        )

    def stop(self, sig=signal.SIGTERM):
        """Send `sig` and wait; SIGKILL if it is still alive after STOP_TIMEOUT_SECS."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.last_exit_code = self.proc.returncode
        self.proc = None
        return self.last_exit_code

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def log_tail(self, lines=60):
        chunks = []
        for path in (self.stderr_path, self.stdout_path):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                chunks.append("[%s]\n%s" % (path.name, "\n".join(text.splitlines()[-lines:])))
        return "\n".join(chunks) or "(no output)"


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


def lambda_client(endpoint, validate=True, read_timeout=120):
    """A boto3 Lambda client pointed at kiln with dummy credentials and no retries.

    `validate=False` turns off botocore's client-side checks (e.g. MemorySize >= 128) so a test
    can send values only the server is supposed to reject.
    """
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            read_timeout=read_timeout,
            connect_timeout=10,
            parameter_validation=validate,
        ),
    )


# --------------------------------------------------------------------------------------------
# Zips
# --------------------------------------------------------------------------------------------

# A fixed timestamp keeps zips (and so CodeSha256) identical for identical content.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def make_zip(files):
    """Build a zip in memory from {name: (bytes|str, mode)} or {name: bytes|str} (mode 0o644)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, spec in files.items():
            data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            if isinstance(data, str):
                data = data.encode()
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.create_system = 3  # Unix, so extractors honour the mode bits below
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def rust_zip():
    """target/debug/hello-rust as an executable `bootstrap`."""
    if not HELLO_RUST_BIN.exists():
        raise RuntimeError(
            "%s not found: build it with `cargo build -p hello-rust` (or set HELLO_RUST_BIN)" % HELLO_RUST_BIN
        )
    return make_zip({"bootstrap": (HELLO_RUST_BIN.read_bytes(), 0o755)})


def python_zip(handler_source=None, extra=None, bootstrap=True):
    """examples/python-runtime/bootstrap + handler.py (or `handler_source` instead of it)."""
    files = {}
    if bootstrap:
        files["bootstrap"] = ((PYTHON_RUNTIME_DIR / "bootstrap").read_bytes(), 0o755)
    files["handler.py"] = handler_source if handler_source is not None else (PYTHON_RUNTIME_DIR / "handler.py").read_bytes()
    files.update(extra or {})
    return make_zip(files)


def script_zip(bootstrap_text, extra=None):
    """An ad-hoc `bootstrap` (any `#!` script) plus optional extra files."""
    files = {"bootstrap": (bootstrap_text, 0o755)}
    files.update(extra or {})
    return make_zip(files)


def code_sha256(zip_bytes):
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


# --------------------------------------------------------------------------------------------
# Control plane and invokes
# --------------------------------------------------------------------------------------------


def create(lam, name, zip_bytes, wait=True, **kw):
    """CreateFunction with the suite's defaults, then wait until the function is Active."""
    params = {
        "FunctionName": name,
        "Role": ROLE,
        "Runtime": RUNTIME,
        "Handler": HANDLER,
        "Code": {"ZipFile": zip_bytes},
    }
    params.update(kw)
    resp = lam.create_function(**params)
    if wait:
        wait_active(lam, name)
    return resp


def wait_active(lam, name):
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def wait_updated(lam, name):
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def invoke(lam, name, payload=None, **kw):
    """Invoke and return (response, payload bytes). `payload` may be a dict, str or bytes."""
    if payload is not None:
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        kw["Payload"] = payload
    resp = lam.invoke(FunctionName=name, **kw)
    body = resp["Payload"].read() if "Payload" in resp else b""
    return resp, body


def invoke_json(lam, name, payload=None, **kw):
    """Invoke synchronously, require success (no FunctionError) and return the parsed result."""
    resp, body = invoke(lam, name, payload, **kw)
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, "function failed: %r" % body[:2000]
    return json.loads(body)


def invoke_error(lam, name, payload=None, **kw):
    """Invoke synchronously, require a function error and return (response, parsed error)."""
    resp, body = invoke(lam, name, payload, **kw)
    assert resp["StatusCode"] == 200, resp
    assert resp.get("FunctionError") == "Unhandled", "expected FunctionError, got %r / %r" % (resp, body[:2000])
    return resp, json.loads(body)


def log_result(resp):
    """The decoded `X-Amz-Log-Result` of a `LogType="Tail"` invoke."""
    assert "LogResult" in resp, "no LogResult in %r" % resp
    return base64.b64decode(resp["LogResult"]).decode("utf-8", errors="replace")


def report_line(log_text, request_id):
    for line in log_text.splitlines():
        if line.startswith("REPORT RequestId: %s\t" % request_id):
            return line
    raise AssertionError("no REPORT line for %s in:\n%s" % (request_id, log_text))


REPORT_RE = re.compile(
    r"^REPORT RequestId: (?P<id>[0-9a-f-]{36})\t"
    r"Duration: (?P<duration>\d+\.\d{2}) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\t"
    r"Memory Size: (?P<memory>\d+) MB\t"
    r"Max Memory Used: (?P<used>\d+) MB"
    r"(?:\tInit Duration: (?P<init>\d+\.\d{2}) ms)?"
    r"(?P<rest>\t.*)?$"
)


def error_code(exc):
    return exc.response["Error"]["Code"]


def http_status(exc_or_resp):
    meta = exc_or_resp.response["ResponseMetadata"] if hasattr(exc_or_resp, "response") else exc_or_resp["ResponseMetadata"]
    return meta["HTTPStatusCode"]


# --------------------------------------------------------------------------------------------
# The kiln CLI
# --------------------------------------------------------------------------------------------


def run_cli(*args, endpoint=None, env=None, timeout=120, input_text=None):
    """Run `kiln ARGS... [--endpoint URL]`; return the CompletedProcess (text mode)."""
    cmd = [str(KILN_BIN)] + [str(a) for a in args]
    if endpoint is not None:
        cmd += ["--endpoint", endpoint]
    full_env = dict(os.environ)
    full_env.pop("KILN_ENDPOINT", None)
    full_env.update(env or {})
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(ROOT), input=input_text
    )


def wait_for(predicate, timeout=15.0, interval=0.25, what="condition"):
    """Poll `predicate` until it returns a truthy value; return it or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))


def instance_id(server):
    """The sandbox instance id kiln derives from the server's data dir (it names its cgroups)."""
    return hashlib.sha256(str(Path(server.data_dir).resolve()).encode()).hexdigest()[:8]


def env_processes(server):
    """(pid, host uid) of every process in one of this server's cgroups (inits are root)."""
    marker = "/kiln-%s/" % instance_id(server)
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cg = Path("/proc/%s/cgroup" % p).read_text()
            uid = int(Path("/proc/%s/status" % p).read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        if marker in cg:
            found.append((int(p), uid))
    return found


def function_processes(server):
    """(pid, host uid) of this server's function processes: not root (inits are), and not the
    bootstrap process a blank keeps parked before its exec (it still bears the name of the
    sandbox zygote its init was cloned from)."""
    found = []
    for pid, uid in env_processes(server):
        try:
            parked = Path("/proc/%d/comm" % pid).read_text().startswith("kiln-zygote")
        except OSError:
            continue
        if uid != 0 and not parked:
            found.append((pid, uid))
    return found
