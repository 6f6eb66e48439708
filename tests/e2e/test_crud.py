"""Create, read, list, update and delete functions through boto3 (docs/lambda-api.md)."""

import hashlib
import json
import urllib.request

import pytest
from botocore.exceptions import ClientError

import kiln_e2e as k

UPDATED_HANDLER = '''
def handle(event, context):
    return {"code": "v2"}
'''


def test_create_returns_function_configuration(lam):
    name = k.unique_name("crud")
    code = k.python_zip()
    resp = k.create(lam, name, code, wait=False, Description="first")
    try:
        assert k.http_status(resp) == 201
        assert resp["FunctionName"] == name
        assert resp["FunctionArn"] == k.function_arn(name)
        assert resp["Version"] == "$LATEST"
        assert resp["Runtime"] == k.RUNTIME
        assert resp["Role"] == k.ROLE
        assert resp["Handler"] == k.HANDLER
        assert resp["Description"] == "first"
        assert resp["CodeSha256"] == k.code_sha256(code)
        assert resp["CodeSize"] == len(code)
        assert resp["MemorySize"] == 128
        assert resp["Timeout"] == 3
        assert resp["EphemeralStorage"] == {"Size": 512}
        assert resp["PackageType"] == "Zip"
        assert resp["Architectures"] == ["x86_64"]
        assert k.LAST_MODIFIED_RE.match(resp["LastModified"]), resp["LastModified"]
        assert resp["RevisionId"]
        assert resp["State"] in ("Pending", "Active")
        if resp["State"] == "Pending":
            assert resp["StateReasonCode"] == "Creating"
        k.wait_active(lam, name)
        conf = lam.get_function_configuration(FunctionName=name)
        assert conf["State"] == "Active"
    finally:
        lam.delete_function(FunctionName=name)


def test_get_function_returns_configuration_and_code_location(lam, deploy):
    code = k.python_zip()
    name = deploy(code, prefix="get", Environment={"Variables": {"GREETING": "hi"}})
    resp = lam.get_function(FunctionName=name)
    conf = resp["Configuration"]
    assert conf["FunctionName"] == name
    assert conf["FunctionArn"] == k.function_arn(name)
    assert conf["State"] == "Active"
    assert conf["CodeSha256"] == k.code_sha256(code)
    assert conf["Environment"] == {"Variables": {"GREETING": "hi"}}
    location = resp["Code"]["Location"]
    assert location.startswith("http"), location
    # The location is a URL the caller can download the zip from.
    with urllib.request.urlopen(location, timeout=30) as download:
        assert hashlib.sha256(download.read()).digest() == hashlib.sha256(code).digest()


def test_get_function_configuration_matches_get_function(lam, deploy):
    name = deploy(k.python_zip(), prefix="getconf", MemorySize=256, Timeout=10)
    conf = lam.get_function_configuration(FunctionName=name)
    full = lam.get_function(FunctionName=name)["Configuration"]
    for key in ("FunctionName", "FunctionArn", "CodeSha256", "CodeSize", "MemorySize", "Timeout", "Version"):
        assert conf[key] == full[key], key
    assert conf["MemorySize"] == 256
    assert conf["Timeout"] == 10
    assert k.LAST_MODIFIED_RE.match(conf["LastModified"])


def test_get_function_accepts_arn(lam, deploy):
    name = deploy(k.python_zip(), prefix="arn")
    conf = lam.get_function_configuration(FunctionName=k.function_arn(name))
    assert conf["FunctionName"] == name


def test_list_functions_pages_with_marker_without_duplicates(lam, deploy):
    prefix = k.unique_name("list")
    names = {deploy(k.python_zip(), name="%s-%d" % (prefix, i)) for i in range(5)}

    seen = []
    marker = None
    pages = 0
    while True:
        kw = {"MaxItems": 2}
        if marker:
            kw["Marker"] = marker
        page = lam.list_functions(**kw)
        pages += 1
        assert len(page["Functions"]) <= 2
        seen.extend(f["FunctionName"] for f in page["Functions"])
        marker = page.get("NextMarker")
        if not marker:
            break
        assert pages < 1000, "NextMarker never ends"
    assert len(seen) == len(set(seen)), "duplicates across pages: %r" % seen
    assert names <= set(seen)
    assert pages >= 3

    paged = []
    for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}):
        paged.extend(f["FunctionName"] for f in page["Functions"])
    assert len(paged) == len(set(paged))
    assert names <= set(paged)

    listed = {f["FunctionName"]: f for f in lam.list_functions()["Functions"] if f["FunctionName"] in names}
    for name, entry in listed.items():
        assert entry["FunctionArn"] == k.function_arn(name)
        assert entry["Version"] == "$LATEST"


def test_update_function_code_runs_new_code(lam, deploy):
    name = deploy(k.python_zip(), prefix="upcode")
    assert k.invoke_json(lam, name, {"name": "before"})["hello"] == "before"

    new_code = k.python_zip(handler_source=UPDATED_HANDLER)
    resp = lam.update_function_code(FunctionName=name, ZipFile=new_code)
    assert k.http_status(resp) == 200
    assert resp["CodeSha256"] == k.code_sha256(new_code)
    assert resp["CodeSize"] == len(new_code)
    k.wait_updated(lam, name)

    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["CodeSha256"] == k.code_sha256(new_code)
    assert conf["LastUpdateStatus"] == "Successful"
    assert k.invoke_json(lam, name, {}) == {"code": "v2"}


def test_update_function_configuration_retires_old_environments(lam, deploy):
    name = deploy(k.python_zip(), prefix="upconf", Environment={"Variables": {"OLD_VAR": "1"}})
    env = k.invoke_json(lam, name, {"action": "env"})  # leaves a warm environment behind
    assert env["OLD_VAR"] == "1"

    resp = lam.update_function_configuration(
        FunctionName=name,
        Environment={"Variables": {"NEW_VAR": "2"}},
        MemorySize=256,
        Timeout=10,
        Description="updated",
    )
    assert k.http_status(resp) == 200
    k.wait_updated(lam, name)

    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["Environment"] == {"Variables": {"NEW_VAR": "2"}}
    assert conf["MemorySize"] == 256
    assert conf["Timeout"] == 10
    assert conf["Description"] == "updated"
    assert conf["LastUpdateStatus"] == "Successful"

    env = k.invoke_json(lam, name, {"action": "env"})
    assert env.get("NEW_VAR") == "2"
    assert "OLD_VAR" not in env, "an environment with the old configuration served the invoke"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"


def test_update_function_configuration_changes_revision_id(lam, deploy):
    name = deploy(k.python_zip(), prefix="rev")
    before = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    lam.update_function_configuration(FunctionName=name, Description="x")
    k.wait_updated(lam, name)
    after = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert after != before


def test_delete_function_then_get_is_not_found(lam):
    name = k.unique_name("del")
    k.create(lam, name, k.python_zip())
    resp = lam.delete_function(FunctionName=name)
    assert k.http_status(resp) == 204
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=name)
    assert k.error_code(exc.value) == "ResourceNotFoundException"
    assert k.http_status(exc.value) == 404
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert name not in names


def test_create_duplicate_name_conflicts(lam, deploy):
    name = deploy(k.python_zip(), prefix="dup")
    with pytest.raises(ClientError) as exc:
        k.create(lam, name, k.python_zip(), wait=False)
    assert k.error_code(exc.value) == "ResourceConflictException"
    assert k.http_status(exc.value) == 409


def test_create_keeps_environment_and_settings(lam, deploy):
    name = deploy(
        k.python_zip(),
        prefix="settings",
        MemorySize=512,
        Timeout=30,
        Environment={"Variables": {"ALPHA": "1", "BETA": "two"}},
        EphemeralStorage={"Size": 1024},
    )
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["MemorySize"] == 512
    assert conf["Timeout"] == 30
    assert conf["Environment"] == {"Variables": {"ALPHA": "1", "BETA": "two"}}
    assert conf["EphemeralStorage"] == {"Size": 1024}
    env = k.invoke_json(lam, name, {"action": "env"})
    assert env["ALPHA"] == "1" and env["BETA"] == "two"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert json.dumps(env)  # the whole map came back as JSON
