"""The `kiln` CLI verbs against a real server: deploy, invoke, ls, logs, rm."""

import json
import time

import pytest

import kiln_e2e as k


@pytest.fixture(scope="module")
def cli_fn(kiln, lam):
    """A function deployed with `kiln deploy` from examples/python-runtime."""
    name = k.unique_name("cli")
    out = k.run_cli(
        "deploy",
        name,
        k.PYTHON_RUNTIME_DIR,
        "--handler",
        "handler.handle",
        "--memory",
        "256",
        # Names need two characters or more: AWS's pattern is [a-zA-Z]([a-zA-Z0-9_])+.
        "--env",
        "AB=CD",
        endpoint=kiln.endpoint,
    )
    assert out.returncode == 0, "kiln deploy failed (%d):\n%s%s" % (out.returncode, out.stdout, out.stderr)
    yield name
    try:
        lam.delete_function(FunctionName=name)
    except Exception:  # noqa: BLE001 - test_rm may have removed it
        pass


def test_deploy_creates_an_active_function(lam, cli_fn):
    conf = lam.get_function_configuration(FunctionName=cli_fn)
    assert conf["State"] == "Active"
    assert conf["Handler"] == "handler.handle"
    assert conf["MemorySize"] == 256
    assert conf["Environment"] == {"Variables": {"AB": "CD"}}
    assert conf["Runtime"] == "provided.al2023"
    env = k.invoke_json(lam, cli_fn, {"action": "env"})
    assert env["AB"] == "CD"


def test_invoke_prints_the_json_result(kiln, cli_fn):
    out = k.run_cli("invoke", cli_fn, '{"name":"x"}', endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hello"] == "x"


def test_invoke_reads_the_payload_from_a_file(kiln, cli_fn, tmp_path):
    payload = tmp_path / "event.json"
    payload.write_text(json.dumps({"name": "from-file"}))
    out = k.run_cli("invoke", cli_fn, "@%s" % payload, endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hello"] == "from-file"


def test_invoke_with_logs_shows_the_log_tail(kiln, cli_fn):
    out = k.run_cli("invoke", cli_fn, '{"action":"print","text":"cli-log-line"}', "--logs", endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for needle in ("START RequestId: ", "END RequestId: ", "REPORT RequestId: ", "cli-log-line"):
        assert needle in text, "%r missing from:\n%s" % (needle, text)
    assert '"printed"' in out.stdout  # the result is still printed


def test_ls_lists_the_function(kiln, cli_fn):
    out = k.run_cli("ls", endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    assert cli_fn in out.stdout


def test_logs_shows_start_end_report(kiln, cli_fn):
    k.run_cli("invoke", cli_fn, '{"action":"print","text":"for-kiln-logs"}', endpoint=kiln.endpoint)
    out = k.run_cli("logs", cli_fn, endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    for needle in ("START RequestId: ", "END RequestId: ", "REPORT RequestId: ", "for-kiln-logs"):
        assert needle in out.stdout, "%r missing from:\n%s" % (needle, out.stdout)


def test_kiln_endpoint_variable_selects_the_server(kiln, cli_fn):
    out = k.run_cli("invoke", cli_fn, '{"name":"env-endpoint"}', env={"KILN_ENDPOINT": kiln.endpoint})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hello"] == "env-endpoint"
    out = k.run_cli("ls", env={"KILN_ENDPOINT": kiln.endpoint})
    assert out.returncode == 0, out.stderr
    assert cli_fn in out.stdout


def test_rm_removes_the_function(kiln, lam):
    name = k.unique_name("cli-rm")
    k.create(lam, name, k.python_zip())
    out = k.run_cli("rm", name, endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    out = k.run_cli("ls", endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    assert name not in out.stdout


def test_errors_exit_nonzero_with_one_sentence(kiln):
    name = k.unique_name("cli-missing")
    out = k.run_cli("invoke", name, "{}", endpoint=kiln.endpoint)
    assert out.returncode != 0
    message = out.stderr.strip()
    assert message, "no error message on stderr"
    assert len(message.splitlines()) == 1, "expected one line, got:\n%s" % message
    assert "Error {" not in message and "Caused by" not in message, message
    assert name in message or "not found" in message.lower(), message


def test_logs_follow_streams_new_invocations(kiln, lam, cli_fn):
    import subprocess
    import threading

    proc = subprocess.Popen(
        [str(k.KILN_BIN), "logs", cli_fn, "--follow", "--endpoint", kiln.endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        time.sleep(0.5)
        marker = "follow-%s" % k.unique_name("m")
        resp, _ = k.invoke(lam, cli_fn, {"action": "print", "text": marker})
        request_id = resp["ResponseMetadata"]["RequestId"]
        k.wait_for(lambda: any(("REPORT RequestId: %s" % request_id) in l for l in lines), what="the REPORT line streamed")
        text = "".join(lines)
        assert marker in text and ("START RequestId: %s" % request_id) in text
        assert proc.poll() is None, "--follow must keep running"
    finally:
        proc.kill()
        proc.wait()


def test_status_shows_starts_environments_and_the_sandbox_pool(kiln, lam):
    name = k.unique_name("status")
    k.create(lam, name, k.python_zip())
    k.invoke_json(lam, name, {})
    k.invoke_json(lam, name, {})
    out = k.run_cli("status", endpoint=kiln.endpoint)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith(name + ":"))
    assert "1 cold starts" in line and "1 warm" in line, out.stdout
    pool = next(l for l in out.stdout.splitlines() if l.startswith("sandbox pool:"))
    assert "spawns from the pool" in pool, out.stdout
    one = k.run_cli("status", name, endpoint=kiln.endpoint)
    assert one.returncode == 0, one.stderr
    assert "idle" in one.stdout and "sandbox pool" not in one.stdout, one.stdout
