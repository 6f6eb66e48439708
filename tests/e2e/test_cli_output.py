"""The kiln CLI's output and refusals: aligned tables, --json, invoke's qualifier and type,
names and packages refused with a sentence that says what is wrong."""

import json
import os
import re
import shutil

import pytest

import kiln_e2e as k


@pytest.fixture(scope="module")
def fn(kiln, lam):
    name = k.unique_name("out")
    k.create(lam, name, k.python_zip(), MemorySize=1024, Timeout=300)
    k.invoke_json(lam, name, {})
    yield name
    lam.delete_function(FunctionName=name)


def _columns(header, row, names):
    """The end offset of each named column in `header` must equal the one in `row` (right-aligned)."""
    return [(header.index(n) + len(n), row) for n in names]


def test_ls_table_lines_up_and_json_is_the_list(kiln, lam, fn):
    short = k.unique_name("o")  # 128 MB, 3 s: numbers of other widths than fn's
    k.create(lam, short, k.python_zip())
    try:
        out = k.run_cli("ls", endpoint=kiln.endpoint)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        header = lines[0]
        assert header.startswith("NAME"), out.stdout
        mem_end = header.index("MEMORY") + len("MEMORY")
        tmo_end = header.index("TIMEOUT") + len("TIMEOUT")
        rows = {l.split()[0]: l for l in lines[1:]}
        for name in (fn, short):
            row = rows[name]
            assert re.search(r"\d MB", row[:mem_end]) and row[mem_end - 2 : mem_end] == "MB", (header, row)
            assert row[tmo_end - 1] == "s", (header, row)
            assert row.index("MB") == rows[fn].index("MB"), out.stdout
        js = k.run_cli("ls", "--json", endpoint=kiln.endpoint)
        assert js.returncode == 0, js.stderr
        listed = {f["FunctionName"]: f for f in json.loads(js.stdout)}
        assert listed[fn]["MemorySize"] == 1024 and listed[short]["MemorySize"] == 128
    finally:
        lam.delete_function(FunctionName=short)


def test_ls_without_a_server_prints_only_the_error():
    out = k.run_cli("ls", endpoint="http://127.0.0.1:%d" % k.free_port())
    assert out.returncode != 0
    assert out.stdout == "", out.stdout
    assert "cannot reach kiln" in out.stderr, out.stderr


def test_status_json_and_aligned_environments(kiln, fn):
    js = k.run_cli("status", "--json", endpoint=kiln.endpoint)
    assert js.returncode == 0, js.stderr
    body = json.loads(js.stdout)
    assert any(f["FunctionName"] == fn for f in body["Functions"]), body
    one = k.run_cli("status", fn, endpoint=kiln.endpoint)
    assert one.returncode == 0, one.stderr
    lines = one.stdout.splitlines()
    header = next(l for l in lines if "ENVIRONMENT" in l)
    row = lines[lines.index(header) + 1]
    end = header.index("MEMORY USED") + len("MEMORY USED")
    assert row[:end].endswith("/1024 MB"), (header, row)
    inv_end = header.index("INVOCATIONS") + len("INVOCATIONS")
    assert row[inv_end - 1].isdigit() and row[inv_end] == " ", (header, row)
    # The last column is the environment's top process, alive on this host.
    assert header.rstrip().endswith("PID"), header
    assert os.path.exists("/proc/%d" % int(row.split()[-1])), row


def test_invoke_qualifier_forms_and_types(kiln, lam, fn):
    version = lam.publish_version(FunctionName=fn)["Version"]
    for args in ([fn + ":" + version], [fn, "--qualifier", version]):
        out = k.run_cli("invoke", *args, '{"action": "context"}', endpoint=kiln.endpoint)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["function_version"] == version, out.stdout
    missing = k.run_cli("invoke", fn + ":nope", "{}", endpoint=kiln.endpoint)
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr, missing.stderr

    marker = k.unique_name("evt")
    ev = k.run_cli("invoke", fn, json.dumps({"action": "print", "text": marker}), "--type", "Event", endpoint=kiln.endpoint)
    assert ev.returncode == 0, ev.stderr
    assert ev.stdout == "" and "202" in ev.stderr, (ev.stdout, ev.stderr)
    k.wait_for(lambda: marker in k.run_cli("logs", fn, endpoint=kiln.endpoint).stdout, timeout=30, what="the event's log")
    dry = k.run_cli("invoke", fn, "--type", "DryRun", endpoint=kiln.endpoint)
    assert dry.returncode == 0 and "204" in dry.stderr, dry.stderr


@pytest.mark.parametrize("verb", ["invoke", "rm", "logs", "status"])
def test_a_bad_function_name_is_named_and_explained(kiln, verb):
    out = k.run_cli(verb, "bad name!", endpoint=kiln.endpoint)
    assert out.returncode != 0
    assert "'bad name!' is not a valid function" in out.stderr, out.stderr
    assert "1 to 64 letters, digits, hyphens (-) or underscores (_)" in out.stderr, out.stderr
    assert "uri" not in out.stderr.lower(), out.stderr


def test_deploy_refuses_a_missing_or_non_executable_bootstrap(kiln, lam, tmp_path):
    name = k.unique_name("noboot")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "handler.py").write_text("def handle(e, c):\n    return 1\n")
    out = k.run_cli("deploy", name, empty, endpoint=kiln.endpoint)
    assert out.returncode != 0
    assert "has no file named `bootstrap`" in out.stderr, out.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(k.PYTHON_RUNTIME_DIR / "bootstrap", plain / "bootstrap")
    os.chmod(plain / "bootstrap", 0o644)
    out = k.run_cli("deploy", name, plain, endpoint=kiln.endpoint)
    assert out.returncode != 0
    assert "is not executable" in out.stderr and "chmod +x" in out.stderr, out.stderr
    zipped = tmp_path / "plain.zip"
    zipped.write_bytes(k.make_zip({"bootstrap": ("#!/bin/sh\n", 0o644)}))
    out = k.run_cli("deploy", name, zipped, endpoint=kiln.endpoint)
    assert out.returncode != 0 and "is not executable" in out.stderr, out.stderr
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert name not in names
