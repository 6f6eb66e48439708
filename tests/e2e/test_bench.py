"""`kiln bench`, run for real on short scenarios: it starts its own `kiln serve`, deploys the
example through the REST API (kiln-client) and reports its figures. Only the shape of the report
is checked, never a time."""

import json
import subprocess

import kiln_e2e as k


def bench(*args, timeout=300):
    cmd = [str(k.KILN_BIN), "bench", "--isolation", "none", "--function-bin", str(k.HELLO_RUST_BIN)]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def test_url_scenario_reports_both_paths_with_ratios():
    out = bench("--only", "url", "--warm", 5, "--seconds", 0.2, "--json")
    assert out.returncode == 0, out.stderr
    url = json.loads(out.stdout)["url"]
    assert url["warm_invoke"]["n"] == 5 and url["warm_url"]["n"] == 5, url
    assert url["invoke_per_second"] > 0 and url["url_per_second"] > 0, url
    assert url["warm_p50_ratio"] > 0 and url["throughput_ratio"] > 0, url


def test_events_scenario_counts_durable_accepts():
    out = bench("--only", "events", "--seconds", 0.2)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Event invokes (durable 202, 32 callers): "), out.stdout


def test_a_missing_peer_program_is_named():
    out = bench("--peer", "cargo-lambda", "--peer-bin", "/nonexistent/cargo-lambda", "--warm", 1)
    assert out.returncode == 1
    assert "cannot run /nonexistent/cargo-lambda" in out.stderr, out.stderr


def test_bench_rejects_an_unknown_peer():
    out = bench("--peer", "sam-local")
    assert out.returncode == 2
    assert "invalid value 'sam-local'" in out.stderr, out.stderr
