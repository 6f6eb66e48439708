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


def test_density_scenario_prints_both_sides_cold_starts_and_their_conditions():
    # Sandboxes (the default isolation), so the pool and the retired environments' processes
    # are waited for; two callers a second keep the pool at its floor, so nothing waits 30 s.
    cmd = [str(k.KILN_BIN), "bench", "--only", "density", "--density", "3", "--density-rate", "2",
           "--idle-cold", "4", "--function-bin", str(k.HELLO_RUST_BIN)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("density: 3 environments idle (0 failed)\n"), text
    assert "(n = 4)" in text and "95% interval of the ratio (bootstrap): " in text, text
    for side in ("with none", "with these idle"):
        line = next(l for l in text.splitlines() if l.strip().startswith(side + ": p25 "))
        assert "kiln serve CPU" in line and "pgscan kswapd" in line and "pool " in line, line
        assert "waits cut" not in line, line
    assert text.count("    p50 of init ") == 2, text
    sorted_lines = [l for l in text.splitlines() if l.strip().startswith("sorted:")]
    assert len(sorted_lines) == 2, text
    for l in sorted_lines:
        samples = [float(v) for v in l.split(":", 1)[1].split()]
        assert len(samples) == 4 and samples == sorted(samples), l
    assert "bench: idle-cold with none: start" in out.stderr, out.stderr
