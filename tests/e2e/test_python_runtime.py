"""Managed Python runtimes: ordinary `Runtime: python3.X` zips with `Handler: module.function`
run on kiln's runtime client, as on Lambda (handler loading, context, marshalling, errors, logs).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kiln_e2e as k

# The runtime the suite deploys most functions with: the Python the host certainly has
# (Debian's /usr/bin/python3.11) answers it exactly.
PY = "python3.11"


def deploy_py(deploy, files, handler="app.handler", runtime=PY, **kw):
    return deploy(k.make_zip(files), prefix="py", Runtime=runtime, Handler=handler, **kw)


def tail(lam, name, payload=None, **kw):
    resp, body = k.invoke(lam, name, payload if payload is not None else {}, LogType="Tail", **kw)
    return resp, body, k.log_result(resp)


def test_plain_handler_gets_event_and_returns_json(lam, deploy):
    name = deploy_py(deploy, {"app.py": "def handler(event, context):\n    return {'got': event, 'n': 1}\n"})
    assert k.invoke_json(lam, name, {"a": [1, 2]}) == {"got": {"a": [1, 2]}, "n": 1}


def test_string_result_is_a_json_string_and_decimal_keeps_its_digits(lam, deploy):
    src = (
        "import decimal\n"
        "def handler(event, context):\n"
        "    if event.get('kind') == 'str':\n"
        "        return 'hello'\n"
        "    if event.get('kind') == 'none':\n"
        "        return None\n"
        "    return {'price': decimal.Decimal('1.10'), 'big': decimal.Decimal('12345678901234567890.5')}\n"
    )
    name = deploy_py(deploy, {"app.py": src})
    _, body = k.invoke(lam, name, {"kind": "str"})
    assert body == b'"hello"'
    _, body = k.invoke(lam, name, {"kind": "none"})
    assert body == b"null"
    _, body = k.invoke(lam, name, {})
    assert body == b'{"price": 1.10, "big": 12345678901234567890.5}'


def test_packages_and_subfolders_load(lam, deploy):
    files = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": "from pkg import helper\ndef handler(e, c):\n    return helper.VALUE\n",
        "pkg/helper.py": "VALUE = 'from a package'\n",
        "src/lambda_function.py": "def lambda_handler(e, c):\n    return 'from a folder'\n",
    }
    name = deploy_py(deploy, files, handler="pkg.sub.mod.handler")
    assert k.invoke_json(lam, name) == "from a package"
    name = deploy_py(deploy, files, handler="src/lambda_function.lambda_handler")
    assert k.invoke_json(lam, name) == "from a folder"


def test_context_and_environment_are_lambdas(lam, deploy):
    src = (
        "import os, sys, time\n"
        "def handler(event, context):\n"
        "    return {\n"
        "        'function_name': context.function_name,\n"
        "        'function_version': context.function_version,\n"
        "        'invoked_function_arn': context.invoked_function_arn,\n"
        "        'memory_limit_in_mb': context.memory_limit_in_mb,\n"
        "        'aws_request_id': context.aws_request_id,\n"
        "        'log_group_name': context.log_group_name,\n"
        "        'log_stream_name': context.log_stream_name,\n"
        "        'identity': [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],\n"
        "        'client_context': context.client_context and context.client_context.custom,\n"
        "        'remaining': context.get_remaining_time_in_millis(),\n"
        "        'env': {k: os.environ.get(k) for k in ['AWS_EXECUTION_ENV', 'LAMBDA_RUNTIME_DIR', 'LAMBDA_TASK_ROOT',\n"
        "                 '_HANDLER', 'AWS_LAMBDA_FUNCTION_NAME', 'AWS_REGION', 'TZ', 'PYTHONPATH']},\n"
        "        'cwd': os.getcwd(),\n"
        "        'path': sys.path[:3],\n"
        "        'exe': sys.executable,\n"
        "    }\n"
    )
    name = deploy_py(deploy, {"app.py": src}, Timeout=30, MemorySize=256)
    import base64

    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    resp, body = k.invoke(lam, name, {}, ClientContext=cc)
    assert "FunctionError" not in resp, body
    out = json.loads(body)
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert out["function_name"] == name
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"] == k.function_arn(name)
    assert out["memory_limit_in_mb"] == "256"
    assert out["aws_request_id"] == request_id
    assert out["log_group_name"] == "/aws/lambda/%s" % name
    assert k.LOG_STREAM_RE.match(out["log_stream_name"]), out["log_stream_name"]
    assert out["identity"] == [None, None]
    assert out["client_context"] == {"k": "v"}
    assert 0 < out["remaining"] <= 30_000
    assert out["env"] == {
        "AWS_EXECUTION_ENV": "AWS_Lambda_%s" % PY,
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "LAMBDA_TASK_ROOT": "/var/task",
        "_HANDLER": "app.handler",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_REGION": k.REGION,
        "TZ": ":UTC",
        "PYTHONPATH": "/var/runtime",
    }
    assert out["cwd"] == "/var/task"
    assert out["path"] == ["/var/task", "/opt/python/lib/python3.11/site-packages", "/opt/python"]


def test_module_state_survives_warm_starts(lam, deploy):
    src = "COUNT = 0\ndef handler(e, c):\n    global COUNT\n    COUNT += 1\n    return COUNT\n"
    name = deploy_py(deploy, {"app.py": src})
    assert [k.invoke_json(lam, name) for _ in range(3)] == [1, 2, 3]


def test_raised_exception_is_lambdas_error_payload_and_log(lam, deploy):
    src = (
        "class MyError(Exception):\n    pass\n"
        "def inner():\n    raise MyError('it broke')\n"
        "def handler(e, c):\n    inner()\n"
    )
    name = deploy_py(deploy, {"app.py": src})
    resp, body, log = tail(lam, name)
    assert resp["FunctionError"] == "Unhandled"
    err = json.loads(body)
    assert list(err) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert err["errorType"] == "MyError"
    assert err["errorMessage"] == "it broke"
    assert err["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert len(err["stackTrace"]) == 2, err["stackTrace"]
    assert err["stackTrace"][0].startswith('  File "/var/task/app.py", line 6, in handler')
    assert "raise MyError('it broke')" in err["stackTrace"][1]
    assert "[ERROR] MyError: it broke\rTraceback (most recent call last):\r" in log
    # The environment stays usable: the next call runs on it.
    resp, _ = k.invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"


@pytest.mark.parametrize(
    "files, handler, error_type, message",
    [
        ({"app.py": "def other(e, c): pass\n"}, "app.handler", "Runtime.HandlerNotFound",
         "Handler 'handler' missing on module 'app'"),
        ({"app.py": "import not_a_module_anywhere\n"}, "app.handler", "Runtime.ImportModuleError",
         "Unable to import module 'app': No module named 'not_a_module_anywhere'"),
        ({"other.py": ""}, "app.handler", "Runtime.ImportModuleError",
         "Unable to import module 'app': No module named 'app'"),
        ({"app.py": "def handler(e, c)\n    return 1\n"}, "app.handler", "Runtime.UserCodeSyntaxError",
         "Syntax error in module 'app': "),
        ({"app.py": ""}, "nodots", "Runtime.MalformedHandlerName", "Bad handler 'nodots': "),
        ({"app.py": "raise ValueError('at import')\n"}, "app.handler", "ValueError", "at import"),
    ],
)
def test_init_failures_answer_awss_runtime_errors(lam, deploy, files, handler, error_type, message):
    name = deploy_py(deploy, files, handler=handler)
    for _ in range(2):  # a failed Init leaves nothing broken behind: the next call fails the same way
        resp, err = k.invoke_error(lam, name, {})
        assert err["errorType"] == error_type, err
        assert err["errorMessage"].startswith(message), err
        assert err["requestId"] == ""
        assert isinstance(err["stackTrace"], list)


def test_unserialisable_result_is_a_marshal_error(lam, deploy):
    name = deploy_py(deploy, {"app.py": "def handler(e, c):\n    return {'s': {1, 2}}\n"})
    _, err = k.invoke_error(lam, name, {})
    assert err["errorType"] == "Runtime.MarshalError"
    assert err["errorMessage"] == "Unable to marshal response: Object of type set is not JSON serializable"
    assert err["stackTrace"] == []


def test_sys_exit_is_an_exit_error_and_the_next_call_gets_a_fresh_environment(lam, deploy):
    src = "import sys\nN = 0\ndef handler(e, c):\n    global N\n    N += 1\n    if e.get('exit'):\n        sys.exit(3)\n    return N\n"
    name = deploy_py(deploy, {"app.py": src})
    assert k.invoke_json(lam, name) == 1
    _, err = k.invoke_error(lam, name, {"exit": True})
    assert err["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in err["errorMessage"]
    assert k.invoke_json(lam, name) == 1


def test_megabytes_of_print_and_a_handler_that_never_returns(lam, deploy):
    src = (
        "import time\n"
        "def handler(e, c):\n"
        "    if e.get('hang'):\n"
        "        time.sleep(60)\n"
        "    for i in range(20000):\n"
        "        print('x' * 200)\n"
        "    return 'done'\n"
    )
    name = deploy_py(deploy, {"app.py": src}, Timeout=2)
    assert k.invoke_json(lam, name) == "done"
    _, err = k.invoke_error(lam, name, {"hang": True})
    assert err["errorType"] == "Sandbox.Timedout"
    assert k.invoke_json(lam, name) == "done"


def test_print_and_logging_in_lambdas_text_format(lam, deploy):
    src = (
        "import logging\n"
        "logger = logging.getLogger()\n"
        "logger.setLevel(logging.INFO)\n"
        "def handler(e, c):\n"
        "    print('plain print')\n"
        "    logger.info('info %s', 'line')\n"
        "    logger.debug('hidden')\n"
        "    return 1\n"
    )
    name = deploy_py(deploy, {"app.py": src})
    resp, _, log = tail(lam, name)
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert "\nplain print\n" in log
    assert re.search(r"\[INFO\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t%s\tinfo line\n" % request_id, log), log
    assert "hidden" not in log


def test_logging_first_imported_inside_the_handler_is_in_lambdas_format(lam, deploy):
    # The client does not import logging at start-up (it costs every cold start ~10 ms); it
    # configures the module the moment something first imports it, here during an invocation.
    src = (
        "import sys\n"
        "def handler(e, c):\n"
        "    before = 'logging' in sys.modules\n"
        "    import logging.handlers\n"
        "    logging.getLogger('app').warning('late %s', 'line')\n"
        "    return {'before': before, 'finders': [type(f).__name__ for f in sys.meta_path]}\n"
    )
    name = deploy_py(deploy, {"app.py": src})
    resp, raw, log = tail(lam, name)
    request_id = resp["ResponseMetadata"]["RequestId"]
    body = json.loads(raw)
    assert body["before"] is False, body
    assert "_LoggingHook" not in body["finders"], body
    assert re.search(r"\[WARNING\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t%s\tlate line\n" % request_id, log), log


def test_json_logging_with_application_log_level(lam, deploy):
    src = (
        "import logging\n"
        "logger = logging.getLogger()\n"
        "def handler(e, c):\n"
        "    logger.debug('debug line')\n"
        "    logger.info('info line')\n"
        "    logger.warning('warn line', extra={'k': 'v'})\n"
        "    return 1\n"
    )
    name = deploy_py(
        deploy,
        {"app.py": src},
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN", "SystemLogLevel": "INFO"},
    )
    cfg = lam.get_function_configuration(FunctionName=name)["LoggingConfig"]
    assert cfg == {"LogFormat": "JSON", "ApplicationLogLevel": "WARN", "SystemLogLevel": "INFO", "LogGroup": "/aws/lambda/%s" % name}
    resp, _, log = tail(lam, name)
    request_id = resp["ResponseMetadata"]["RequestId"]
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [e["message"] for e in entries] == ["warn line"], log
    e = entries[0]
    # awslambdaric names the level as the logging module does.
    assert e["level"] == "WARNING" and e["requestId"] == request_id and e["logger"] == "root" and e["k"] == "v"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", e["timestamp"])


def test_logging_config_values_are_checked(lam):
    with pytest.raises(lam.exceptions.ClientError) as exc:
        lam.create_function(
            FunctionName=k.unique_name("py"), Role=k.ROLE, Runtime=PY, Handler="app.handler",
            Code={"ZipFile": k.make_zip({"app.py": ""})}, LoggingConfig={"LogFormat": "XML"},
        )
    assert k.error_code(exc.value) == "ValidationException"


def test_handler_is_required_for_managed_runtimes(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(
            FunctionName=k.unique_name("py"), Role=k.ROLE, Runtime=PY, Code={"ZipFile": k.make_zip({"app.py": ""})}
        )


def test_java_is_created_and_its_invocation_says_what_is_missing(lam, deploy):
    name = deploy(k.make_zip({"x.txt": "x"}), prefix="java", Runtime="java21", Handler="example.Handler::handleRequest")
    assert lam.get_function_configuration(FunctionName=name)["Runtime"] == "java21"
    _, err = k.invoke_error(lam, name, {})
    assert err["errorType"] == "Runtime.Unavailable"
    assert "Java" in err["errorMessage"] and "provided.al2023" in err["errorMessage"]


def test_every_botocore_runtime_is_accepted(lam, deploy):
    import botocore.session

    model = botocore.session.get_session().get_service_model("lambda")
    runtimes = model.shape_for("Runtime").enum
    name = deploy_py(deploy, {"app.py": "def handler(e, c):\n    return 1\n"})
    for rt in runtimes:
        lam.update_function_configuration(FunctionName=name, Runtime=rt)
        k.wait_updated(lam, name)
        assert lam.get_function_configuration(FunctionName=name)["Runtime"] == rt


def test_nearest_version_runs_and_the_log_says_so_once(kiln, lam, deploy):
    # No host Python of this suite is 3.14: the nearest one runs, and the log says which.
    name = deploy_py(deploy, {"app.py": "import sys\ndef handler(e, c):\n    return list(sys.version_info[:3])\n"},
                     runtime="python3.14")
    version = k.invoke_json(lam, name)
    if version[:2] == [3, 14]:
        pytest.skip("this host has Python 3.14: nothing to substitute")
    assert k.invoke_json(lam, name) == version
    expected = "kiln: python3.14 requested, running Python %d.%d.%d" % tuple(version)

    def logged():
        out = k.run_cli("logs", name, endpoint=kiln.endpoint)
        return out.stdout.count("END RequestId") == 2 and out.stdout

    text = k.wait_for(logged, timeout=20, what="two invocations in `kiln logs %s`" % name)
    assert text.count(expected) == 1, text


# --------------------------------------------------------------------------------------------
# Against AWS's own client: the same handler once on kiln's python3.11 runtime, once as a
# provided.al2023 function whose bootstrap runs awslambdaric (PyPI) from the zip.
# --------------------------------------------------------------------------------------------

RIC_DISTRIBUTIONS = ["awslambdaric", "simplejson", "snapshot-restore-py"]


def awslambdaric_files():
    import importlib.metadata as md

    files = {}
    for dist in RIC_DISTRIBUTIONS:
        try:
            d = md.distribution(dist)
        except md.PackageNotFoundError:
            pytest.fail("awslambdaric is not installed in the suite's venv (tests/e2e/requirements.txt)")
        for f in d.files:
            name = str(f)
            if name.startswith(("..", "bin/")) or ".dist-info" in name or "__pycache__" in name:
                continue
            files[name] = (Path(f.locate()).read_bytes(), 0o755 if name.endswith(".so") else 0o644)
    return files


# awslambdaric's wheel here is built for the suite's Python (3.11): run it on the same one.
RIC_BOOTSTRAP = "#!/bin/sh\nexec /usr/bin/python3.%d -m awslambdaric \"$_HANDLER\"\n" % sys.version_info[1]

COMPARE_CASES = {
    "raises": ({"app.py": "class Boom(Exception):\n    pass\ndef f():\n    raise Boom('bad \u00e9')\ndef handler(e, c):\n    f()\n"}, "app.handler"),
    "returns": ({"app.py": "import decimal\ndef handler(e, c):\n    return {'s': 'x\u00e9', 'd': decimal.Decimal('1.50'), 'n': None, 'l': [1.5, True]}\n"}, "app.handler"),
    "string": ({"app.py": "def handler(e, c):\n    return 'plain'\n"}, "app.handler"),
    "unserialisable": ({"app.py": "def handler(e, c):\n    return object()\n"}, "app.handler"),
    "missing_handler": ({"app.py": "x = 1\n"}, "app.handler"),
    "missing_module": ({"other.py": ""}, "nothere.handler"),
    "import_error": ({"app.py": "import not_installed_anywhere\n"}, "app.handler"),
    "syntax_error": ({"app.py": "def handler(e, c)\n  return 1\n"}, "app.handler"),
    "init_raises": ({"app.py": "raise KeyError('k')\n"}, "app.handler"),
    "bad_handler_name": ({"app.py": ""}, "nodot"),
}


@pytest.mark.parametrize("case", sorted(COMPARE_CASES))
def test_payloads_match_awslambdaric(lam, deploy, case):
    if sys.version_info[:2] != (3, 11) or not Path("/usr/bin/python3.11").exists():
        pytest.fail("the comparison runs awslambdaric's cp311 wheel on /usr/bin/python3.11")
    files, handler = COMPARE_CASES[case]
    ours = deploy_py(deploy, files, handler=handler)
    ric_files = dict(files)
    ric_files.update(awslambdaric_files())
    ric_files["bootstrap"] = (RIC_BOOTSTRAP, 0o755)
    theirs = deploy(k.make_zip(ric_files), prefix="ric", Runtime="provided.al2023", Handler=handler)

    results = {}
    for label, name in (("kiln", ours), ("awslambdaric", theirs)):
        resp, body = k.invoke(lam, name, {"k": 1})
        results[label] = (resp.get("FunctionError"), body, resp["ResponseMetadata"]["RequestId"])
    (our_err, our_body, our_id), (their_err, their_body, their_id) = results["kiln"], results["awslambdaric"]
    assert our_err == their_err
    if our_err is None:
        assert our_body == their_body
        return
    a, b = json.loads(our_body), json.loads(their_body)
    assert list(a) == list(b)
    for field in a:
        if field == "requestId":
            # Each names its own invocation (or "" for an Init failure).
            assert (a[field], b[field]) in ((our_id, their_id), ("", "")), (a, b)
        else:
            assert a[field] == b[field], "%s differs:\n kiln:         %r\n awslambdaric: %r" % (field, a[field], b[field])


def test_runtime_override_pins_an_interpreter_and_kiln_runtimes_lists_it(kiln_factory):
    server = kiln_factory(extra_args=["--runtime", "python3.12=/usr/bin/python3.11"])
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("py")
    src = "import sys\ndef handler(e, c):\n    return [sys.executable, list(sys.version_info[:2])]\n"
    k.create(lam, name, k.make_zip({"app.py": src}), Runtime="python3.12", Handler="app.handler")
    resp, body = k.invoke(lam, name, {}, LogType="Tail")
    assert json.loads(body) == ["/usr/bin/python3.11", [3, 11]]
    out = k.run_cli("runtimes", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("python3.12 "))
    assert "override" in line and "/usr/bin/python3.11" in line, out.stdout
    # A pinned interpreter is what the user asked for: no substitution notice.
    out = k.run_cli("logs", name, endpoint=server.endpoint)
    assert "requested, running" not in out.stdout


def test_bad_runtime_override_stops_kiln_serve_with_a_clear_message(tmp_path):
    server = k.KilnServer(tmp_path / "data", tmp_path / "logs", extra_args=["--runtime", "java21=/usr/bin/python3.11"])
    with pytest.raises(RuntimeError) as exc:
        server.start()
    assert "kiln runs only Python and Node.js runtimes" in str(exc.value)


def test_managed_runtimes_run_without_isolation(kiln_factory):
    server = kiln_factory(extra_args=["--isolation", "none"])
    lam = k.lambda_client(server.endpoint)
    py, js = k.unique_name("py"), k.unique_name("js")
    # The code is not at /var/task here: the client runs in the code directory kiln unpacked.
    k.create(lam, py, k.make_zip({"lib/app.py": "import os\ndef handler(e, c):\n    return sorted(os.listdir('.'))\n"}),
             Runtime=PY, Handler="lib/app.handler")
    assert k.invoke_json(lam, py) == ["lib"]
    k.create(lam, js, k.make_zip({"index.js": "exports.handler = async (e) => e.n + 1;\n"}),
             Runtime="nodejs20.x", Handler="index.handler")
    assert k.invoke_json(lam, js, {"n": 41}) == 42
