"""`GET /metrics`: Prometheus text exposition, parsed with Prometheus' own parser after known
invocations; counts must be exact. Each test has its own server so server-wide counters start
at zero."""

import http.client
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import kiln_e2e as k

ALLOWED_LABELS = {"function", "version", "result", "start", "state", "reason", "source", "operation", "status", "le"}


def scrape(server):
    with urllib.request.urlopen(server.endpoint + "/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def value(families, family, sample_name=None, **labels):
    """The value of the one sample of `family` whose labels include `labels` (0 when absent)."""
    f = families.get(family)
    if f is None:
        return 0
    found = [
        s.value
        for s in f.samples
        if (sample_name is None or s.name == sample_name) and all(s.labels.get(a) == b for a, b in labels.items())
    ]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else 0


def test_metrics_count_invocations_exactly(kiln_factory):
    server = kiln_factory("metrics")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("metrics")
    k.create(lam, name, k.python_zip(), Timeout=2)

    k.invoke_json(lam, name, {"name": "cold"})  # cold, success
    for _ in range(3):
        k.invoke_json(lam, name, {"name": "warm"})  # warm, success
    for _ in range(2):
        resp, _ = k.invoke(lam, name, {"action": "error"})  # warm, function error
        assert resp["FunctionError"] == "Unhandled"
    resp, body = k.invoke(lam, name, {"action": "sleep", "ms": 5000})  # warm, timeout
    assert b"Sandbox.Timedout" in body
    k.invoke_json(lam, name, {"name": "again"})  # cold again: the timed-out environment is gone
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(2):
        # Plain HTTP, so that exactly one request is sent per throttle (botocore may retry 429s).
        req = urllib.request.Request(server.endpoint + "/2015-03-31/functions/%s/invocations" % name, data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        assert exc.value.code == 429
    lam.delete_function_concurrency(FunctionName=name)

    m, text = scrape(server)
    fv = {"function": name, "version": "$LATEST"}
    assert value(m, "kiln_invocations", result="success", **fv) == 5
    assert value(m, "kiln_invocations", result="function_error", **fv) == 2
    assert value(m, "kiln_invocations", result="timeout", **fv) == 1
    assert value(m, "kiln_invocations", result="throttle", **fv) == 2
    assert value(m, "kiln_invocations", result="internal_error", **fv) == 0
    assert value(m, "kiln_starts", start="cold", **fv) == 2
    assert value(m, "kiln_starts", start="warm", **fv) == 6
    assert value(m, "kiln_starts", start="provisioned", **fv) == 0
    assert value(m, "kiln_admission_rejections", reason="concurrency") == 2
    assert value(m, "kiln_admission_rejections", reason="memory_budget") == 0

    # Histograms: every invocation that ran has a duration; every cold start an Init duration.
    dur = "kiln_invocation_duration_seconds"
    assert value(m, dur, sample_name=dur + "_count", **fv) == 8
    assert value(m, dur, sample_name=dur + "_bucket", le="+Inf", **fv) == 8
    # The timeout took about 2 s: not below 1 s, and within the 2.5 s bucket's neighbours.
    assert value(m, dur, sample_name=dur + "_bucket", le="1.0", **fv) == 7
    assert value(m, dur, sample_name=dur + "_sum", **fv) >= 2.0
    bounds = [s.labels["le"] for s in m[dur].samples if s.name == dur + "_bucket" and s.labels["function"] == name]
    assert bounds[0] == "0.0005" and bounds[-2] == "900.0" and bounds[-1] == "+Inf"
    init = "kiln_init_duration_seconds"
    assert value(m, init, sample_name=init + "_count", **fv) == 2
    assert value(m, init, sample_name=init + "_sum", **fv) > 0

    # Gauges computed from the pools: one environment left, idle (frozen or not), nothing busy.
    idle = value(m, "kiln_environments", state="idle", **fv) + value(m, "kiln_environments", state="frozen", **fv)
    assert idle == 1
    assert value(m, "kiln_environments", state="busy", **fv) == 0
    assert value(m, "kiln_environments", state="initialising", **fv) == 0
    assert value(m, "kiln_concurrent_executions", **fv) == 0
    assert value(m, "kiln_memory_budget_used_bytes") == 128 * 1024 * 1024
    assert value(m, "kiln_memory_budget_bytes") > 0

    # REST API requests by operation and status (function errors and timeouts are 200s).
    assert value(m, "kiln_api_requests", operation="Invoke", status="200") == 8
    assert value(m, "kiln_api_requests", operation="Invoke", status="429") == 2
    assert value(m, "kiln_api_requests", operation="CreateFunction", status="201") == 1

    # Labels are bounded: no request ids, only the fixed label names.
    for f in m.values():
        for s in f.samples:
            assert set(s.labels) <= ALLOWED_LABELS, s
    assert resp["ResponseMetadata"]["RequestId"] not in text


def test_metrics_are_per_version_and_count_provisioned_spillover(kiln_factory):
    server = kiln_factory("metrics-pc")
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("metrics-pc")
    k.create(lam, name, k.python_zip(), Timeout=10)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    k.wait_for(
        lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)["Status"] == "READY",
        timeout=30,
        what="provisioned concurrency READY",
    )
    # Two calls at once: one takes the provisioned environment, the other spills over.
    threads = [
        threading.Thread(target=lambda: k.invoke_json(lam, name, {"action": "sleep", "ms": 1500}, Qualifier=version))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    busy_seen = []

    def busy_now():
        m, _ = scrape(server)
        n = value(m, "kiln_concurrent_executions", function=name, version=version)
        busy_seen.append(n)
        return n == 2

    k.wait_for(busy_now, timeout=10, interval=0.05, what="two concurrent executions")
    for t in threads:
        t.join()
    k.invoke_json(lam, name, {})  # $LATEST: its own series

    m, _ = scrape(server)
    v = {"function": name, "version": version}
    assert value(m, "kiln_invocations", result="success", **v) == 2
    assert value(m, "kiln_starts", start="provisioned", **v) == 1
    assert value(m, "kiln_starts", start="cold", **v) == 1
    assert value(m, "kiln_provisioned_spillover_invocations", **v) == 1
    assert value(m, "kiln_environments", state="provisioned", **v) == 1
    assert value(m, "kiln_provisioned_concurrency_utilization", **v) == 0
    assert value(m, "kiln_invocations", result="success", function=name, version="$LATEST") == 1
    assert value(m, "kiln_provisioned_spillover_invocations", function=name, version="$LATEST") == 0


def test_thousands_of_connections_do_not_stop_invocations(kiln_factory):
    """A client that opens more connections than kiln allows gets new ones closed; established
    connections (a boto3 client, a scraper) keep working at their speed."""
    # kiln raises its soft descriptor limit to the hard one and then allows (limit - 256) / 2
    # connections: 384 with a hard limit of 1024.
    server = kiln_factory("flood", nofile=1024)
    lam = k.lambda_client(server.endpoint)
    name = k.unique_name("flood")
    k.create(lam, name, k.python_zip())
    k.invoke_json(lam, name, {})
    scraper = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def scrape_on_kept_connection():
        scraper.request("GET", "/metrics")
        r = scraper.getresponse()
        body = r.read()
        assert r.status == 200
        return body

    def warm_ms(n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            k.invoke_json(lam, name, {})
            out.append((time.perf_counter() - t) * 1000)
        return statistics.median(out)

    scrape_on_kept_connection()
    before = warm_ms(20)
    flood = []
    try:
        for i in range(2000):
            if i % 200 == 0:
                scrape_on_kept_connection()
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", server.port))
                s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            except OSError:
                s.close()
                continue
            flood.append(s)
        # Beyond the limit kiln closes new connections: most of the flood must be refused.
        open_ = list(flood)

        def refused():
            # The scraper keeps using its connection meanwhile (kiln closes keep-alive connections
            # idle for longer than its 20 s head timeout, as any server may; Prometheus reconnects).
            scrape_on_kept_connection()
            for s in list(open_):
                s.settimeout(0.001)
                try:
                    if s.recv(1) == b"":
                        open_.remove(s)
                except (socket.timeout, BlockingIOError):
                    pass
                except OSError:
                    open_.remove(s)
            return len(open_) <= 400

        k.wait_for(refused, timeout=20, what="kiln to close the connections over its limit")
        during = warm_ms(20)
        assert b"kiln_invocations_total" in scrape_on_kept_connection()
        # Generous: the flood must not make warm calls several times slower.
        assert during < max(5 * before, before + 50), (before, during)
    finally:
        for s in flood:
            s.close()
    # Once the flood is gone, new connections are served again.
    def fresh_connection_served():
        try:
            return urllib.request.urlopen(server.endpoint + "/metrics", timeout=5).status == 200
        except OSError:
            return False

    k.wait_for(fresh_connection_served, timeout=10, what="a new connection after the flood")
    m, _ = scrape(server)
    assert value(m, "kiln_invocations", result="success", function=name, version="$LATEST") == 41


def test_log_format_json_writes_one_object_per_line(kiln_factory):
    import json

    server = kiln_factory("jsonlog", extra_args=["--log-format", "json"])
    urllib.request.urlopen(server.endpoint + "/metrics", timeout=5).read()
    server.stop()
    lines = [l for l in server.stderr_path.read_text().splitlines() if l.strip()]
    assert lines, "kiln wrote no log"
    for line in lines:
        obj = json.loads(line)
        assert {"timestamp", "level", "fields"} <= set(obj), obj
        assert "\x1b[" not in line
    assert any("kiln listening on" in json.loads(l)["fields"].get("message", "") for l in lines)


def test_text_log_has_no_ansi_codes_when_not_a_terminal(kiln_factory):
    server = kiln_factory("textlog")
    server.stop()
    text = server.stderr_path.read_text()
    assert "kiln listening on" in text
    assert "\x1b[" not in text
