"""The AWS CLI (awscli from PyPI) against kiln: create, invoke, delete."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kiln_e2e as k


def find_aws():
    beside_python = Path(sys.executable).parent / "aws"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("aws")


AWS = find_aws()


def aws_major_version():
    out = subprocess.run([AWS, "--version"], capture_output=True, text=True, timeout=60)
    match = re.search(r"aws-cli/(\d+)", out.stdout + out.stderr)
    return int(match.group(1)) if match else 1


@pytest.fixture
def aws(kiln, tmp_path):
    if AWS is None:
        pytest.skip("the `aws` CLI is not installed (pip install awscli)")
    env = dict(os.environ)
    for var in list(env):
        if var.startswith("AWS_"):
            del env[var]
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": k.REGION,
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
        }
    )

    def run(*args):
        cmd = [AWS, "--endpoint-url", kiln.endpoint, "--output", "json", "lambda"] + [str(a) for a in args]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=str(tmp_path))
        assert out.returncode == 0, "%s failed (%d):\n%s%s" % (" ".join(cmd), out.returncode, out.stdout, out.stderr)
        return json.loads(out.stdout) if out.stdout.strip() else None

    return run


def test_aws_cli_create_invoke_delete(aws, tmp_path):
    name = k.unique_name("awscli")
    zip_path = tmp_path / "function.zip"
    code = k.python_zip()
    zip_path.write_bytes(code)

    created = aws(
        "create-function",
        "--function-name",
        name,
        "--runtime",
        k.RUNTIME,
        "--role",
        k.ROLE,
        "--handler",
        k.HANDLER,
        "--zip-file",
        "fileb://%s" % zip_path,
    )
    assert created["FunctionName"] == name
    assert created["CodeSha256"] == k.code_sha256(code)
    aws("wait", "function-active-v2", "--function-name", name)

    out_path = tmp_path / "out.json"
    # AWS CLI v2 reads blobs as base64 unless told otherwise; v1 (what PyPI has) takes raw
    # text and does not know the flag.
    binary_format = ["--cli-binary-format", "raw-in-base64-out"] if aws_major_version() >= 2 else []
    result = aws(
        "invoke",
        "--function-name",
        name,
        *binary_format,
        "--payload",
        '{"name":"aws-cli"}',
        str(out_path),
    )
    assert result["StatusCode"] == 200
    assert result["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in result
    assert json.loads(out_path.read_text())["hello"] == "aws-cli"

    listed = aws("list-functions")
    assert name in {f["FunctionName"] for f in listed["Functions"]}

    aws("delete-function", "--function-name", name)
    listed = aws("list-functions")
    assert name not in {f["FunctionName"] for f in listed["Functions"]}
