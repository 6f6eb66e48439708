"""Functions survive a restart of `kiln serve` on the same data dir."""

import kiln_e2e as k


def test_function_survives_restart(kiln_factory):
    server = kiln_factory("persist")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("persist")
    code = k.python_zip()
    k.create(
        lam,
        name,
        code,
        MemorySize=256,
        Timeout=7,
        Description="kept",
        Environment={"Variables": {"KEPT": "yes"}},
    )
    assert k.invoke_json(lam, name, {"name": "before"})["hello"] == "before"
    before = lam.get_function_configuration(FunctionName=name)

    server.restart()  # SIGTERM, wait, start again on the same data dir and port

    lam = k.lambda_client(server.endpoint)
    names = {f["FunctionName"] for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]}
    assert name in names
    after = lam.get_function_configuration(FunctionName=name)
    assert after["CodeSha256"] == k.code_sha256(code) == before["CodeSha256"]
    assert after["CodeSize"] == len(code)
    for key in ("FunctionArn", "MemorySize", "Timeout", "Description", "Environment", "LastModified", "RevisionId"):
        assert after[key] == before[key], key
    assert after["State"] == "Active"
    env = k.invoke_json(lam, name, {"action": "env"})
    assert env["KEPT"] == "yes"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert k.invoke_json(lam, name, {"name": "after"})["hello"] == "after"


def test_sigterm_stops_the_server(kiln_factory):
    server = kiln_factory("stop")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("stop")
    k.create(lam, name, k.python_zip())
    k.invoke_json(lam, name, {})  # leaves a warm environment to clean up
    code = server.stop()
    assert code == 0, "kiln serve exited with %s on SIGTERM\n%s" % (code, server.log_tail())


def test_deleted_function_stays_deleted_after_restart(kiln_factory):
    server = kiln_factory("deleted")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("gone")
    k.create(lam, name, k.python_zip())
    lam.delete_function(FunctionName=name)
    server.restart()
    lam = k.lambda_client(server.endpoint)
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert name not in names


def test_log_lines_of_the_last_calls_survive_a_prompt_shutdown(kiln_factory):
    # The log writer batches lines; SIGTERM right after a call must not lose its lines.
    server = kiln_factory("logs-stop")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("logstop")
    k.create(lam, name, k.python_zip())
    resp = lam.invoke(FunctionName=name, Payload=b'{"action": "print", "text": "last-words"}')
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert resp["StatusCode"] == 200
    server.restart()
    out = k.run_cli("logs", name, endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    assert "last-words" in out.stdout, out.stdout
    assert "REPORT RequestId: %s" % request_id in out.stdout, out.stdout
