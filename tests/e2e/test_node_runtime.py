"""Managed Node.js runtimes: `Runtime: nodejsN.x` zips with `Handler: file.function` run on
kiln's runtime client as on Lambda (CommonJS and ES modules, async and callback handlers, the
context object, error payloads, console formats).
"""

import json
import re
import shutil
import subprocess

import pytest

import kiln_e2e as k


def node_major():
    node = shutil.which("node")
    if node is None:
        pytest.fail("these tests need Node.js on the host (apt-get install nodejs)")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


NODE = "nodejs%d.x" % node_major()


def deploy_js(deploy, files, handler="index.handler", runtime=NODE, **kw):
    return deploy(k.make_zip(files), prefix="js", Runtime=runtime, Handler=handler, **kw)


def tail(lam, name, payload=None):
    resp, body = k.invoke(lam, name, payload if payload is not None else {}, LogType="Tail")
    return resp, body, k.log_result(resp)


def test_commonjs_async_handler(lam, deploy):
    name = deploy_js(deploy, {"index.js": "exports.handler = async (event) => ({ got: event, n: 1 });\n"})
    assert k.invoke_json(lam, name, {"a": 1}) == {"got": {"a": 1}, "n": 1}


def test_es_module_by_extension_and_by_package_type(lam, deploy):
    name = deploy_js(deploy, {"index.mjs": "export const handler = async () => 'mjs';\n"})
    assert k.invoke_json(lam, name) == "mjs"
    files = {
        "package.json": json.dumps({"type": "module"}),
        "src/app.js": "import { v } from './dep.js';\nexport async function run() { return v; }\n",
        "src/dep.js": "export const v = 'esm package';\n",
    }
    name = deploy_js(deploy, files, handler="src/app.run")
    assert k.invoke_json(lam, name) == "esm package"
    name = deploy_js(deploy, {"lib.cjs": "module.exports.h = async () => 'cjs';\n"}, handler="lib.h")
    assert k.invoke_json(lam, name) == "cjs"


def test_callback_handler_waits_for_the_event_loop_unless_told_not_to(lam, deploy):
    src = (
        "exports.wait = (event, context, callback) => {\n"
        "  setTimeout(() => console.log('timer fired'), 200);\n"
        "  callback(null, 'first');\n"
        "};\n"
        "exports.nowait = (event, context, callback) => {\n"
        "  context.callbackWaitsForEmptyEventLoop = false;\n"
        "  setTimeout(() => {}, 60000);\n"
        "  callback(null, 'answered');\n"
        "};\n"
        "exports.fail = (event, context, callback) => callback(new TypeError('bad input'));\n"
    )
    files = {"index.js": src}
    name = deploy_js(deploy, files, handler="index.wait")
    resp, body, log = tail(lam, name)
    assert body == b'"first"'
    # The answer waited for the timer: its line is in this invocation's log, before END.
    assert log.index("timer fired") < log.index("END RequestId"), log
    name2 = deploy_js(deploy, files, handler="index.nowait", Timeout=5)
    assert k.invoke_json(lam, name2) == "answered"
    name3 = deploy_js(deploy, files, handler="index.fail")
    _, err = k.invoke_error(lam, name3)
    assert err["errorType"] == "TypeError" and err["errorMessage"] == "bad input"
    assert err["trace"][0] == "TypeError: bad input"


def test_callback_result_comes_after_pending_work(lam, deploy):
    src = (
        "let n = 0;\n"
        "exports.handler = (event, context, callback) => {\n"
        "  n += 1;\n"
        "  const mine = n;\n"
        "  setTimeout(() => { globalThis.done = mine; }, 30);\n"
        "  callback(null, { n: mine, previousTimerRan: globalThis.done === mine - 1 || mine === 1 });\n"
        "};\n"
    )
    name = deploy_js(deploy, {"index.js": src})
    assert k.invoke_json(lam, name) == {"n": 1, "previousTimerRan": True}
    assert k.invoke_json(lam, name) == {"n": 2, "previousTimerRan": True}


def test_context_fields_and_environment(lam, deploy):
    src = (
        "exports.handler = async (event, context) => ({\n"
        "  functionName: context.functionName, functionVersion: context.functionVersion,\n"
        "  invokedFunctionArn: context.invokedFunctionArn, memoryLimitInMB: context.memoryLimitInMB,\n"
        "  awsRequestId: context.awsRequestId, logGroupName: context.logGroupName,\n"
        "  logStreamName: context.logStreamName, remaining: context.getRemainingTimeInMillis(),\n"
        "  waits: context.callbackWaitsForEmptyEventLoop,\n"
        "  env: { exec: process.env.AWS_EXECUTION_ENV, handler: process.env._HANDLER,\n"
        "         nodePath: process.env.NODE_PATH, taskRoot: process.env.LAMBDA_TASK_ROOT },\n"
        "  cwd: process.cwd(),\n"
        "});\n"
    )
    name = deploy_js(deploy, {"index.js": src}, MemorySize=512, Timeout=20)
    resp, body = k.invoke(lam, name, {})
    out = json.loads(body)
    major = NODE[len("nodejs"):-2]
    assert out == {
        "functionName": name,
        "functionVersion": "$LATEST",
        "invokedFunctionArn": k.function_arn(name),
        "memoryLimitInMB": "512",
        "awsRequestId": resp["ResponseMetadata"]["RequestId"],
        "logGroupName": "/aws/lambda/%s" % name,
        "logStreamName": out["logStreamName"],
        "remaining": out["remaining"],
        "waits": True,
        "env": {
            "exec": "AWS_Lambda_%s" % NODE,
            "handler": "index.handler",
            "nodePath": "/opt/nodejs/node%s/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task" % major,
            "taskRoot": "/var/task",
        },
        "cwd": "/var/task",
    }
    assert k.LOG_STREAM_RE.match(out["logStreamName"])
    assert 0 < out["remaining"] <= 20_000


def test_module_state_survives_warm_starts(lam, deploy):
    name = deploy_js(deploy, {"index.js": "let n = 0;\nexports.handler = async () => ++n;\n"})
    assert [k.invoke_json(lam, name) for _ in range(3)] == [1, 2, 3]


def test_thrown_error_payload_and_log(lam, deploy):
    src = "class MyError extends Error { constructor(m) { super(m); this.name = 'MyError'; } }\n" \
          "exports.handler = async () => { throw new MyError('it broke'); };\n"
    name = deploy_js(deploy, {"index.js": src})
    resp, body, log = tail(lam, name)
    assert resp["FunctionError"] == "Unhandled"
    err = json.loads(body)
    assert list(err) == ["errorType", "errorMessage", "trace"]
    assert err["errorType"] == "MyError" and err["errorMessage"] == "it broke"
    assert err["trace"][0] == "MyError: it broke"
    assert any("/var/task/index.js" in line for line in err["trace"])
    assert re.search(r"\t%s\tERROR\tInvoke Error \t\{\"errorType\":\"MyError\"" % resp["ResponseMetadata"]["RequestId"], log), log


@pytest.mark.parametrize(
    "files, handler, error_type, message",
    [
        ({"index.js": "exports.other = async () => 1;\n"}, "index.handler", "Runtime.HandlerNotFound",
         "index.handler is undefined or not exported"),
        ({"other.js": ""}, "index.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'index'"),
        ({"index.js": "require('left-pad-not-here');\n"}, "index.handler", "Runtime.ImportModuleError",
         "Error: Cannot find module 'left-pad-not-here'"),
        ({"index.js": "exports.handler = async () => {;\n"}, "index.handler", "Runtime.UserCodeSyntaxError",
         "SyntaxError: "),
        ({"index.mjs": "export const handler = async () => {;\n"}, "index.handler", "Runtime.UserCodeSyntaxError",
         "SyntaxError: "),
        ({"index.js": ""}, "nodots", "Runtime.MalformedHandlerName", "Bad handler"),
        ({"index.js": "throw new RangeError('at load');\n"}, "index.handler", "RangeError", "at load"),
    ],
)
def test_init_failures_answer_awss_runtime_errors(lam, deploy, files, handler, error_type, message):
    name = deploy_js(deploy, files, handler=handler)
    for _ in range(2):
        _, err = k.invoke_error(lam, name)
        assert err["errorType"] == error_type, err
        assert err["errorMessage"].startswith(message), err
        assert isinstance(err["trace"], list)


def test_unserialisable_result_and_unhandled_rejection(lam, deploy):
    src = (
        "exports.circular = async () => { const o = {}; o.o = o; return o; };\n"
        "exports.reject = async () => { Promise.reject(new Error('floating')); await new Promise(r => setTimeout(r, 1000)); return 1; };\n"
    )
    name = deploy_js(deploy, {"index.js": src}, handler="index.circular")
    _, err = k.invoke_error(lam, name)
    assert err["errorType"] == "Runtime.MarshalError"
    name = deploy_js(deploy, {"index.js": src}, handler="index.reject")
    _, err = k.invoke_error(lam, name)
    assert err["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert err["errorMessage"] == "Error: floating"


def test_console_text_and_json_formats(lam, deploy):
    src = (
        "exports.handler = async () => {\n"
        "  console.log('hello %s', 'world');\n"
        "  console.debug('debug line');\n"
        "  console.warn('two\\nlines');\n"
        "  return 1;\n"
        "};\n"
    )
    name = deploy_js(deploy, {"index.js": src})
    resp, _, log = tail(lam, name)
    rid = resp["ResponseMetadata"]["RequestId"]
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t%s\tINFO\thello world\n" % rid, log), log
    assert "\t%s\tWARN\ttwo\rlines\n" % rid in log
    name = deploy_js(deploy, {"index.js": src}, LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "INFO"})
    resp, _, log = tail(lam, name)
    rid = resp["ResponseMetadata"]["RequestId"]
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [(e["level"], e["message"]) for e in entries] == [("INFO", "hello world"), ("WARN", "two\nlines")], log
    assert all(e["requestId"] == rid for e in entries)


def test_process_exit_and_timeout_leave_no_broken_environment(lam, deploy):
    src = (
        "let n = 0;\n"
        "exports.handler = async (event) => {\n"
        "  n += 1;\n"
        "  if (event.exit) process.exit(7);\n"
        "  if (event.hang) await new Promise(() => setInterval(() => {}, 1000));\n"
        "  return n;\n"
        "};\n"
    )
    name = deploy_js(deploy, {"index.js": src}, Timeout=2)
    assert k.invoke_json(lam, name) == 1
    _, err = k.invoke_error(lam, name, {"exit": True})
    assert err["errorType"] == "Runtime.ExitError" and "exit status 7" in err["errorMessage"]
    assert k.invoke_json(lam, name) == 1
    _, err = k.invoke_error(lam, name, {"hang": True})
    assert err["errorType"] == "Sandbox.Timedout"
    assert k.invoke_json(lam, name) == 1
