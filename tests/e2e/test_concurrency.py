"""Concurrency, versions, aliases, provisioned concurrency, keep-alive and the memory budget
(issue 4), through boto3 against a real `kiln serve`."""

import json
import os
import threading
import time
import urllib.request

import pytest

import kiln_e2e as k

# A handler that tells which environment served the call, optionally after sleeping.
ENV_PROBE = """
import os, time
CALLS = 0
def handle(event, context):
    global CALLS
    CALLS += 1
    if event.get("action") == "exit":
        os._exit(int(event.get("code", 1)))
    start = time.time()
    time.sleep(event.get("ms", 0) / 1000)
    return {
        "start": start,
        "end": time.time(),
        "stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"],
        "count": CALLS,
        "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "init_type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
        "arn": context.invoked_function_arn,
        "tag": os.environ.get("TAG"),
    }
"""

# The same, with an Init that takes two seconds.
SLOW_INIT = "import time\ntime.sleep(2)\n" + ENV_PROBE


def parallel(fn, n):
    """Runs fn(i) in n threads at once; returns the results in order."""
    results = [None] * n
    errors = []

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_parallel_calls_run_in_distinct_environments_at_once(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE), Timeout=10)
    out = parallel(lambda i: k.invoke_json(lam, name, {"ms": 1500}), 4)
    assert len({o["stream"] for o in out}) == 4, out
    # All four handlers were running at one moment (times the functions report, not the
    # client's clock, so a slow machine cannot fail this).
    assert max(o["start"] for o in out) < min(o["end"] for o in out), out


def test_idle_environments_are_reused_most_recent_first(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE), Timeout=10)
    first = parallel(lambda i: k.invoke_json(lam, name, {"ms": 800}), 2)
    streams = {o["stream"] for o in first}
    again = [k.invoke_json(lam, name, {}) for _ in range(3)]
    assert {o["stream"] for o in again} <= streams
    assert len({o["stream"] for o in again}) == 1, "sequential calls should stick to the most recently used environment"


def running(endpoint, name):
    """kiln_concurrent_executions of `name` ($LATEST) from kiln's /metrics."""
    with urllib.request.urlopen(endpoint + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("kiln_concurrent_executions{") and 'function="%s"' % name in line:
            return float(line.rsplit(" ", 1)[1])
    return 0


def test_reserved_concurrency_one_throttles_the_second_caller(kiln, lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE), Timeout=10)
    assert lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)["ReservedConcurrentExecutions"] == 1
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 1
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 1}
    slow_out = []
    slow = threading.Thread(target=lambda: slow_out.append(k.invoke_json(lam, name, {"ms": 6000})))
    slow.start()
    k.wait_for(lambda: running(kiln.endpoint, name) == 1 or not slow.is_alive(), timeout=30, what="the slow call to start")
    with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
        lam.invoke(FunctionName=name, Payload=b"{}")
    # Answered while the slow call still holds the only slot: a throttle, not a queue.
    assert slow.is_alive() and not slow_out, "the throttle waited for the running call to end"
    assert k.http_status(exc.value) == 429
    assert exc.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    slow.join()
    # The slot came back.
    assert k.invoke_json(lam, name, {})["count"] >= 1
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)


def test_reserved_concurrency_zero_stops_every_call(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE))
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert exc.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    lam.delete_function_concurrency(FunctionName=name)
    k.invoke_json(lam, name, {})


def test_reservations_must_leave_100_unreserved(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE))
    settings = lam.get_account_settings()["AccountLimit"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=settings["ConcurrentExecutions"] - 99)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    after = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    assert after == settings["UnreservedConcurrentExecutions"] - 7


def test_published_versions_are_immutable(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE), Environment={"Variables": {"TAG": "one"}})
    v1 = lam.publish_version(FunctionName=name)
    assert v1["Version"] == "1" and v1["FunctionArn"] == k.function_arn(name) + ":1"
    # Nothing changed: no new version.
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"TAG": "two"}})
    k.wait_updated(lam, name)
    v2 = lam.publish_version(FunctionName=name, Description="second")
    assert v2["Version"] == "2" and v2["Description"] == "second"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"TAG": "three"}})
    k.wait_updated(lam, name)
    for qualifier, tag in [("1", "one"), ("2", "two"), ("$LATEST", "three")]:
        resp, body = k.invoke(lam, name, {}, Qualifier=qualifier)
        out = json.loads(body)
        assert resp["ExecutedVersion"] == qualifier and out["version"] == qualifier and out["tag"] == tag
    out = k.invoke_json(lam, k.function_arn(name) + ":1", {})
    assert out["tag"] == "one" and out["arn"] == k.function_arn(name) + ":1"
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="9", Payload=b"{}")
    lam.delete_function(FunctionName=name, Qualifier="1")
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "2"]
    # Numbers are never reused.
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"TAG": "four"}})
    k.wait_updated(lam, name)
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_publish_makes_a_version_after_any_update_and_only_then(lam, deploy):
    # Lambda publishes after any UpdateFunctionCode or UpdateFunctionConfiguration, even one
    # that changed no behaviour, and otherwise returns the last version.
    zip_bytes = k.python_zip(ENV_PROBE)
    name = deploy(zip_bytes, Description="first")
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    again = lam.publish_version(FunctionName=name, Description="not a change")
    assert again["Version"] == "1" and again["Description"] == "first"
    lam.update_function_configuration(FunctionName=name, Description="second")
    k.wait_updated(lam, name)
    v2 = lam.publish_version(FunctionName=name)
    assert v2["Version"] == "2" and v2["Description"] == "second"
    lam.update_function_code(FunctionName=name, ZipFile=zip_bytes)
    k.wait_updated(lam, name)
    v3 = lam.publish_version(FunctionName=name)
    assert v3["Version"] == "3" and v3["CodeSha256"] == v2["CodeSha256"]
    assert lam.publish_version(FunctionName=name)["Version"] == "3"
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2", "3"]


def test_alias_routes_by_weight_and_passes_its_arn(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE), Environment={"Variables": {"TAG": "one"}})
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"TAG": "two"}})
    k.wait_updated(lam, name)
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(
        FunctionName=name, Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}}
    )
    assert alias["AliasArn"] == k.function_arn(name) + ":live"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}
    counts = {"1": 0, "2": 0}
    for _ in range(200):
        resp, body = k.invoke(lam, name, {}, Qualifier="live")
        out = json.loads(body)
        assert out["arn"] == k.function_arn(name) + ":live"
        assert resp["ExecutedVersion"] == out["version"]
        counts[out["version"]] += 1
    # 30 % of 200 = 60; the bounds are four standard deviations wide.
    assert 35 <= counts["2"] <= 85, counts
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {}})
    assert all(k.invoke_json(lam, name, {}, Qualifier="live")["version"] == "2" for _ in range(10))
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["live"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="2")
    lam.delete_alias(FunctionName=name, Name="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="live")


def wait_ready(lam, name, qualifier, allocated=None, timeout=60):
    def ready():
        cfg = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        assert cfg["Status"] != "FAILED", cfg
        ok = cfg["Status"] == "READY"
        if allocated is not None:
            ok = ok and cfg["AllocatedProvisionedConcurrentExecutions"] == allocated
        return cfg if ok else None

    return k.wait_for(ready, timeout=timeout, what="provisioned concurrency READY")


def test_provisioned_concurrency_answers_without_paying_init(lam, deploy):
    name = deploy(k.python_zip(SLOW_INIT), Timeout=15)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="prod")
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="prod", ProvisionedConcurrentExecutions=1)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["Status"] == "IN_PROGRESS" and put["RequestedProvisionedConcurrentExecutions"] == 1
    wait_ready(lam, name, "prod", allocated=1)
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"] for c in listed] == [k.function_arn(name) + ":prod"]

    started = time.monotonic()
    resp, body = k.invoke(lam, name, {}, Qualifier="prod", LogType="Tail")
    provisioned_secs = time.monotonic() - started
    out = json.loads(body)
    assert out["init_type"] == "provisioned-concurrency"
    assert "Init Duration" not in k.log_result(resp)

    # The same slow Init on demand pays its two seconds.
    started = time.monotonic()
    resp, body = k.invoke(lam, name, {}, Qualifier="$LATEST", LogType="Tail")
    on_demand_secs = time.monotonic() - started
    assert json.loads(body)["init_type"] == "on-demand"
    assert "Init Duration" in k.log_result(resp)
    assert on_demand_secs > 2.0
    # Measured against each other in the same run: the provisioned call skipped the 2 s Init.
    assert provisioned_secs + 1.0 < on_demand_secs, (provisioned_secs, on_demand_secs)
    print("provisioned call %.3f s, on-demand cold call %.3f s" % (provisioned_secs, on_demand_secs))


def test_provisioned_spills_over_and_replaces_a_crashed_environment(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE), Timeout=10)
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    wait_ready(lam, name, "1", allocated=1)
    out = parallel(lambda i: k.invoke_json(lam, name, {"ms": 1000}, Qualifier="1"), 2)
    assert sorted(o["init_type"] for o in out) == ["on-demand", "provisioned-concurrency"], out

    # Crash the provisioned environment; kiln builds a new one.
    before = k.invoke_json(lam, name, {}, Qualifier="1")
    assert before["init_type"] == "provisioned-concurrency"
    resp, _ = k.invoke(lam, name, {"action": "exit", "code": 2}, Qualifier="1")
    assert resp.get("FunctionError") == "Unhandled"
    wait_ready(lam, name, "1", allocated=1)
    after = k.invoke_json(lam, name, {}, Qualifier="1")
    assert after["init_type"] == "provisioned-concurrency" and after["stream"] != before["stream"]

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


def test_provisioned_concurrency_counts_against_reserved(lam, deploy):
    name = deploy(k.python_zip(ENV_PROBE))
    lam.publish_version(FunctionName=name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2)


def test_keep_alive_expires_idle_environments(kiln_factory):
    server = kiln_factory("keepalive", extra_args=["--keep-alive", "1s"])
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("ka")
    k.create(lam, name, k.python_zip(ENV_PROBE))
    first = k.invoke_json(lam, name, {})
    assert k.invoke_json(lam, name, {})["stream"] == first["stream"]
    time.sleep(2.5)
    resp, body = k.invoke(lam, name, {}, LogType="Tail")
    assert json.loads(body)["stream"] != first["stream"]
    assert "Init Duration" in k.log_result(resp)


def environments(server, name):
    with urllib.request.urlopen("%s/kiln/v1/functions/%s/environments" % (server.endpoint, name)) as resp:
        return json.loads(resp.read())["Functions"][0]["Environments"]


def test_memory_budget_evicts_idle_and_throttles_when_full(kiln_factory):
    server = kiln_factory("budget", extra_args=["--memory-budget", "256"])
    lam = k.lambda_client(server.endpoint)
    a, b = k.unique_name("mem"), k.unique_name("mem")
    k.create(lam, a, k.python_zip(ENV_PROBE), Timeout=10)
    k.create(lam, b, k.python_zip(ENV_PROBE), Timeout=10)
    # Two 128 MB environments of A fill the budget.
    parallel(lambda i: k.invoke_json(lam, a, {"ms": 700}), 2)
    # The status call names each environment's top process.
    pids = {e["Pid"] for e in environments(server, a)}
    assert len(pids) == 2 and all(os.path.exists("/proc/%d" % p) for p in pids), pids
    # B's cold start evicts A's least recently used idle environment.
    k.invoke_json(lam, b, {})
    left = environments(server, a)
    assert len(left) == 1 and len(environments(server, b)) == 1
    # The evicted environment's processes end; the one left keeps its own.
    k.wait_for(lambda: {p for p in pids if os.path.exists("/proc/%d" % p)} == {left[0]["Pid"]},
               timeout=10, what="the evicted environment's processes gone")
    # While both environments are busy, a third cold start has no room: 429 at once.
    holder = threading.Thread(target=lambda: parallel(lambda i: k.invoke_json(lam, [a, b][i], {"ms": 2500}), 2))
    holder.start()
    k.wait_for(lambda: running(server.endpoint, a) == 1 and running(server.endpoint, b) == 1 or not holder.is_alive(),
               timeout=30, what="both environments busy")
    with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
        lam.invoke(FunctionName=a, Payload=json.dumps({"ms": 10}))
    assert "memory budget" in str(exc.value)
    holder.join()


def test_no_concurrency_slot_leaks_on_any_path(lam, deploy, kiln):
    """Success, function error, timeout, crash and a caller that hangs up all give their slot
    back: afterwards both reserved slots can be used at once."""
    name = deploy(k.python_zip(), Timeout=1)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    k.invoke_json(lam, name, {})
    k.invoke_error(lam, name, {"action": "error"})
    k.invoke_error(lam, name, {"action": "sleep", "ms": 3000})
    k.invoke_error(lam, name, {"action": "exit", "code": 4})
    impatient = k.lambda_client(kiln.endpoint, read_timeout=0.3)
    with pytest.raises(Exception):
        impatient.invoke(FunctionName=name, Payload=json.dumps({"action": "sleep", "ms": 800}))
    time.sleep(1.5)
    out = parallel(lambda i: k.invoke_json(lam, name, {"action": "sleep", "ms": 300}), 2)
    assert all(o == {"slept_ms": 300} for o in out), out


def test_versions_aliases_and_concurrency_survive_a_restart(kiln_factory):
    server = kiln_factory("restart")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("persist")
    k.create(lam, name, k.python_zip(ENV_PROBE))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="prod", ProvisionedConcurrentExecutions=1)
    wait_ready(lam, name, "prod", allocated=1)
    server.restart()
    lam = k.lambda_client(server.endpoint)
    assert lam.get_alias(FunctionName=name, Name="prod")["FunctionVersion"] == "1"
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    wait_ready(lam, name, "prod", allocated=1)
    assert k.invoke_json(lam, name, {}, Qualifier="prod")["init_type"] == "provisioned-concurrency"
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "1"]
