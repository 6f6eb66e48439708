"""The README's walk-through, run as written: its own commands, taken from README.md's code blocks.

The commands are read from README.md at test time (not copied here), so the README cannot drift
from what works. What the test changes, and only that: the server is the one the test starts
(the README's `kiln serve` line, on a free port and a temporary data dir), `target/release/...`
are the binaries under test, `http://127.0.0.1:9000` is that server's address, and `/tmp/` is a
temporary directory. The AWS CLI is the suite's own (v1, from `pip install awscli`), run with no
AWS variables but those the README exports and no config file, as on a fresh machine.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import kiln_e2e as k

README = k.ROOT / "README.md"
DEFAULT_ENDPOINT = "http://127.0.0.1:9000"
HELLO_STREAM_BIN = Path(os.environ.get("HELLO_STREAM_BIN", k.TARGET_DIR / "debug" / "hello-stream"))
BLOCK_RE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def readme_blocks():
    """[(section heading, language, text)] of README.md's fenced code blocks."""
    text = README.read_text()
    blocks = []
    for m in BLOCK_RE.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: m.start()], re.M)
        blocks.append((headings[-1] if headings else "", m.group(1), m.group(2)))
    return blocks


def section_blocks(section, lang):
    found = [body for (head, lng, body) in readme_blocks() if head == section and lng == lang]
    assert found, "README.md has no %s block under '## %s'" % (lang, section)
    return found


def commands(block):
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        cmd = line.split("  #", 1)[0].strip() if "  #" in line else line.strip()
        if cmd and not cmd.startswith("#"):
            out.append(cmd)
    return out


def find_aws():
    beside_python = Path(sys.executable).parent / "aws"
    return str(beside_python) if beside_python.exists() else None


def test_readme_builds_once_and_names_every_binary_it_uses():
    setup = commands(section_blocks("Set up", "sh")[0])
    builds = [c for c in setup if c.startswith("cargo ")]
    assert len(builds) == 1, "the set-up should compile once: %r" % builds
    build = shlex.split(builds[0])
    built = {build[i + 1] for i, a in enumerate(build) if a == "-p"}
    # Every target/release binary a later step runs comes out of that one build.
    used = set(re.findall(r"target/release/([a-z-]+)", README.read_text()))
    assert used <= built, "README uses %s but builds only %s" % (sorted(used - built), sorted(built))
    assert "--release" in build
    assert not any(c.startswith("cargo ") for c in commands("\n".join(section_blocks("Use it", "sh"))))


@pytest.fixture
def walkthrough(kiln_factory, tmp_path):
    setup = commands(section_blocks("Set up", "sh")[0])
    serve = [c for c in setup if "kiln serve" in c]
    assert len(serve) == 1, setup
    extra = shlex.split(serve[0].split("kiln serve", 1)[1])
    server = kiln_factory("readme", extra_args=extra)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_") and key != "KILN_ENDPOINT"
    }
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    aws = find_aws()
    if aws is None:
        pytest.fail("the suite's AWS CLI is missing from %s (scripts/test installs it)" % Path(sys.executable).parent)
    env["PATH"] = "%s:%s" % (Path(aws).parent, env.get("PATH", ""))

    def localise(text):
        # `/tmp/` first: the binaries' own paths may lie under /tmp (a CI checkout, say).
        text = text.replace("/tmp/", str(scratch) + "/")
        text = text.replace("target/release/kiln", str(k.KILN_BIN))
        text = text.replace("target/release/hello-rust", str(k.HELLO_RUST_BIN))
        text = text.replace("target/release/hello-stream", str(HELLO_STREAM_BIN))
        assert "target/release/" not in text, "a README step uses a binary the suite does not build:\n" + text
        return text.replace(DEFAULT_ENDPOINT, server.endpoint)

    def run_sh(block, extra_env=None):
        script = "set -euo pipefail\n" + localise(block)
        full_env = dict(env, **(extra_env or {}))
        out = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, env=full_env, cwd=str(k.ROOT), timeout=300
        )
        assert out.returncode == 0, "README block failed (exit %d):\n%s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            out.returncode,
            block,
            out.stdout,
            out.stderr,
        )
        return out

    return server, localise, run_sh, env


def test_readme_walkthrough_runs_as_written(walkthrough):
    server, localise, run_sh, env = walkthrough
    use = section_blocks("Use it", "sh")
    assert len(use) == 2, "expected the kiln CLI block and the AWS CLI block under '## Use it'"
    kiln_block, aws_block = use

    # kiln's own CLI; it finds the server through KILN_ENDPOINT, as the README says.
    out = run_sh(kiln_block, {"KILN_ENDPOINT": server.endpoint})
    assert '"hello":"kiln"' in out.stdout.replace(" ", ""), out.stdout
    assert '"greeting":"hi"' in out.stdout.replace(" ", ""), "the --env step shows no effect:\n" + out.stdout
    assert "REPORT RequestId:" in out.stderr, out.stderr
    assert re.search(r"^hello\s+provided\.al2023\s+256 MB", out.stdout, re.M), out.stdout
    assert "sandbox pool:" in out.stdout or "--isolation" in " ".join(server.extra_args), out.stdout
    assert "deleted hello" in out.stdout, out.stdout

    # The AWS CLI (the suite's v1) with only the README's exports.
    assert "AWS_DEFAULT_REGION=" in aws_block, "CLI v1 and boto3 need AWS_DEFAULT_REGION"
    out = run_sh(aws_block)
    assert '"hello": "kiln"' in out.stdout, out.stdout

    # boto3 in "the same shell": the README's exports, then its Python block.
    exports = {}
    for cmd in commands(aws_block):
        if cmd.startswith("export "):
            for assignment in shlex.split(cmd)[1:]:
                key, _, value = assignment.partition("=")
                exports[key] = value
    py_blocks = section_blocks("Use it", "python")
    assert len(py_blocks) == 1
    py = subprocess.run(
        [sys.executable, "-c", localise(py_blocks[0])],
        capture_output=True,
        text=True,
        env=dict(env, **exports),
        cwd=str(k.ROOT),
        timeout=120,
    )
    assert py.returncode == 0, py.stderr
    assert "'hello': 'boto3'" in py.stdout, py.stdout


def _aws_exports():
    exports = {}
    aws_block = section_blocks("Use it", "sh")[1]
    for cmd in commands(aws_block):
        if cmd.startswith("export "):
            for assignment in shlex.split(cmd)[1:]:
                key, _, value = assignment.partition("=")
                exports[key] = value
    return exports


def test_readme_python_and_node_functions_run_as_written(walkthrough):
    _server, _localise, run_sh, _env = walkthrough
    blocks = section_blocks("Python and Node.js functions", "sh")
    assert len(blocks) == 2, "expected a Python block and a Node.js block"
    exports = _aws_exports()
    for block, name in zip(blocks, ("hello-py", "hello-js")):
        out = run_sh(block, exports)
        answer = json.loads(out.stdout.strip().splitlines()[-1])
        assert answer == {"hello": "kiln", "from": name}, out.stdout


def test_readme_layers_run_as_written(walkthrough):
    server, _localise, run_sh, _env = walkthrough
    (block,) = section_blocks("Layers", "sh")
    out = run_sh(block, {"KILN_ENDPOINT": server.endpoint})
    assert '"hello":"layers"' in out.stdout.replace(" ", ""), out.stdout
    assert "python-runtime" in out.stdout, out.stdout


def test_readme_function_urls_run_as_written(walkthrough):
    server, _localise, run_sh, _env = walkthrough
    # The section builds on the Python function of the section before it.
    python_block = section_blocks("Python and Node.js functions", "sh")[0]
    run_sh(python_block, _aws_exports())
    (block,) = section_blocks("Function URLs", "sh")
    out = run_sh(block, {"KILN_ENDPOINT": server.endpoint})
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"http://[a-z0-9]{32}\.lambda-url\.us-east-1\.localhost:%d/" % server.port, lines[0]), lines
    # Both curls reach the function (a plain JSON answer is the body of a 200).
    answers = [json.loads(l) for l in lines[1:]]
    assert answers == [{"hello": None, "from": "hello-py"}] * 2, out.stdout


def test_readme_streamed_responses_run_as_written(walkthrough):
    server, localise, run_sh, env = walkthrough
    if not HELLO_STREAM_BIN.exists():
        pytest.fail("%s not found: cargo build -p hello-stream" % HELLO_STREAM_BIN, pytrace=False)
    (block,) = section_blocks("Streamed responses", "sh")
    out = run_sh(block, {"KILN_ENDPOINT": server.endpoint})
    # curl prints the function's lines: three chunks written pause_ms apart (the function's own
    # clock), then its "done" line.
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [line.get("i") for line in lines[:3]] == [0, 1, 2], out.stdout
    assert lines[3].get("done") is True, out.stdout
    assert lines[2]["at_ms"] - lines[0]["at_ms"] >= 2 * 500, lines

    (py_block,) = section_blocks("Streamed responses", "python")
    py = subprocess.run(
        [sys.executable, "-c", localise(py_block)],
        capture_output=True,
        text=True,
        env=dict(env, **_aws_exports()),
        cwd=str(k.ROOT),
        timeout=120,
    )
    assert py.returncode == 0, py.stderr
    printed = py.stdout.strip().splitlines()
    assert printed and all("PayloadChunk" in line for line in printed[:-1]), py.stdout
    assert "InvokeComplete" in printed[-1] and "ErrorCode" not in printed[-1], py.stdout
    assert '"done":true' in py.stdout, py.stdout


def test_readme_keys_run_as_written(kiln_factory, tmp_path):
    # The keys file is the section's ini block; the server is the block's `kiln serve` line, on
    # a free loopback port instead of 0.0.0.0:9000; the AWS CLI line runs as written.
    (ini,) = section_blocks("Keys and accounts", "ini")
    (block,) = section_blocks("Keys and accounts", "sh")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cmds = commands(block)
    serve = [c for c in cmds if "kiln serve" in c]
    assert len(serve) == 1, cmds
    args = shlex.split(serve[0].replace("/tmp/", str(scratch) + "/").split("kiln serve", 1)[1])
    keys_path = Path(args[args.index("--auth-keys") + 1])
    keys_path.write_text(ini)
    addr = args.index("--addr")
    assert args[addr + 1].startswith("0.0.0.0:"), "the section shows serving beyond loopback"
    block_endpoint = "http://127.0.0.1:%s" % args[addr + 1].split(":")[1]
    del args[addr : addr + 2]
    # The test's own server has its own data dir.
    if "--data-dir" in args:
        i = args.index("--data-dir")
        del args[i : i + 2]
    server = kiln_factory("readme-keys", extra_args=args)
    aws = find_aws()
    assert aws, "the suite's AWS CLI is missing"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    env["PATH"] = "%s:%s" % (Path(aws).parent, env.get("PATH", ""))
    rest = "\n".join(line for line in block.replace("\\\n", " ").splitlines() if "kiln serve" not in line)
    script = "set -euo pipefail\n" + rest.replace(block_endpoint, server.endpoint)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"Functions": []}, out.stdout
    # Without the key the same call is refused.
    unsigned = script.replace("AWS_ACCESS_KEY_ID=AKIAALICE0000000001", "AWS_ACCESS_KEY_ID=AKIANOBODY000000000")
    out = subprocess.run(["bash", "-c", unsigned], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "UnrecognizedClientException" in out.stderr, out.stderr
