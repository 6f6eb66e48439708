"""Lambda layers (issue 9): every layer operation and its errors through boto3, shapes compared
with botocore's model, and what functions see of their layers at /opt in a real sandbox."""

import io
import json
import os
import zipfile

import botocore.session
import pytest
from botocore.exceptions import ClientError

import kiln_e2e as k

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root; kiln runs with --isolation sandbox")

MODEL = botocore.session.get_session().get_service_model("lambda")

# Reads what the function's layers put at /opt; runs on examples/python-runtime/bootstrap.
OPT_HANDLER = r'''
import os, subprocess

def handle(event, context):
    def read(p):
        try:
            with open(p) as f:
                return f.read()
        except OSError as e:
            return "error: %s" % type(e).__name__
    try:
        with open("/opt/new-file", "w") as f:
            f.write("x")
        writable = True
    except OSError:
        writable = False
    try:
        tool = subprocess.run(["tool"], capture_output=True, text=True).stdout.strip()
    except OSError as e:
        tool = "error: %s" % type(e).__name__
    return {
        "same": read("/opt/same"),
        "only_a": read("/opt/only-a"),
        "only_b": read("/opt/only-b"),
        "tool": tool,
        "writable": writable,
        "path": os.environ.get("PATH", ""),
        "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
        "listing": sorted(os.listdir("/opt")),
    }
'''

LAYER_A = {"same": "a", "only-a": "a", "bin/tool": ("#!/bin/sh\necho tool-a\n", 0o755)}
LAYER_B = {"same": "b", "only-b": "b", "bin/tool": ("#!/bin/sh\necho tool-b\n", 0o755)}


def layer_name(prefix="layer"):
    return k.unique_name(prefix)


def publish(lam, name, files, **kw):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": k.make_zip(files)}, **kw)


def output_members(operation):
    return set(MODEL.operation_model(operation).output_shape.members)


def assert_shape(operation, resp):
    """Every member kiln returns exists in the model's output shape of `operation`."""
    body = {key: v for key, v in resp.items() if key != "ResponseMetadata"}
    unknown = set(body) - output_members(operation)
    assert not unknown, "%s returned members the model does not have: %s" % (operation, unknown)


def layer_arn(name, version=None):
    arn = "arn:aws:lambda:%s:%s:layer:%s" % (k.REGION, k.ACCOUNT, name)
    return arn if version is None else "%s:%d" % (arn, version)


def raw_zip(entries):
    """A zip with raw names and optional symlinks: [(name, data, is_link)]."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, is_link in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = ((0o120777 if is_link else 0o100644) << 16)
            zf.writestr(info, data)
    return buf.getvalue()


def test_publish_get_list_and_delete(lam):
    name = layer_name()
    zip1 = k.make_zip(LAYER_A)
    v1 = lam.publish_layer_version(
        LayerName=name,
        Content={"ZipFile": zip1},
        Description="first",
        CompatibleRuntimes=["provided.al2023", "python3.12"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    assert k.http_status(v1) == 201
    assert_shape("PublishLayerVersion", v1)
    assert v1["Version"] == 1
    assert v1["LayerArn"] == layer_arn(name)
    assert v1["LayerVersionArn"] == layer_arn(name, 1)
    assert v1["Content"]["CodeSha256"] == k.code_sha256(zip1)
    assert v1["Content"]["CodeSize"] == len(zip1)
    assert v1["Description"] == "first" and v1["LicenseInfo"] == "MIT"
    assert v1["CompatibleRuntimes"] == ["provided.al2023", "python3.12"]
    assert v1["CompatibleArchitectures"] == ["x86_64"]
    assert k.LAST_MODIFIED_RE.match(v1["CreatedDate"]), v1["CreatedDate"]
    v2 = publish(lam, name, LAYER_B, CompatibleRuntimes=["nodejs20.x"])
    assert v2["Version"] == 2

    got = lam.get_layer_version(LayerName=name, VersionNumber=1)
    assert_shape("GetLayerVersion", got)
    assert got["Content"]["CodeSha256"] == v1["Content"]["CodeSha256"]
    assert got["Description"] == "first"
    by_arn = lam.get_layer_version_by_arn(Arn=layer_arn(name, 2))
    assert_shape("GetLayerVersionByArn", by_arn)
    assert by_arn["Version"] == 2
    # The layer ARN works where a name does.
    assert lam.get_layer_version(LayerName=layer_arn(name), VersionNumber=2)["Version"] == 2

    versions = lam.list_layer_versions(LayerName=name)
    assert_shape("ListLayerVersions", versions)
    assert [v["Version"] for v in versions["LayerVersions"]] == [2, 1], "newest first"
    assert set(versions["LayerVersions"][0]) <= set(MODEL.shape_for("LayerVersionsListItem").members)
    # Paging, one at a time.
    page1 = lam.list_layer_versions(LayerName=name, MaxItems=1)
    assert [v["Version"] for v in page1["LayerVersions"]] == [2]
    page2 = lam.list_layer_versions(LayerName=name, MaxItems=1, Marker=page1["NextMarker"])
    assert [v["Version"] for v in page2["LayerVersions"]] == [1]
    assert "NextMarker" not in page2
    filtered = lam.list_layer_versions(LayerName=name, CompatibleRuntime="python3.12")
    assert [v["Version"] for v in filtered["LayerVersions"]] == [1]

    # ListLayers shows each layer once, with its newest version that matches the filter.
    mine = [x for x in all_layers(lam) if x["LayerName"] == name]
    assert len(mine) == 1 and mine[0]["LatestMatchingVersion"]["Version"] == 2
    assert mine[0]["LayerArn"] == layer_arn(name)
    mine = [x for x in all_layers(lam, CompatibleRuntime="python3.12") if x["LayerName"] == name]
    assert mine[0]["LatestMatchingVersion"]["Version"] == 1
    assert not [x for x in all_layers(lam, CompatibleRuntime="java21") if x["LayerName"] == name]

    # Delete is idempotent, and numbers are never given twice.
    assert k.http_status(lam.delete_layer_version(LayerName=name, VersionNumber=2)) == 204
    assert k.http_status(lam.delete_layer_version(LayerName=name, VersionNumber=2)) == 204
    with pytest.raises(ClientError) as e:
        lam.get_layer_version(LayerName=name, VersionNumber=2)
    assert k.error_code(e.value) == "ResourceNotFoundException" and k.http_status(e.value) == 404
    assert e.value.response["Error"]["Message"] == "The resource you requested does not exist."
    assert publish(lam, name, LAYER_B)["Version"] == 3
    assert [v["Version"] for v in lam.list_layer_versions(LayerName=name)["LayerVersions"]] == [3, 1]


def all_layers(lam, **kw):
    out, marker = [], None
    while True:
        page = lam.list_layers(**kw, **({"Marker": marker} if marker else {}), MaxItems=2)
        assert_shape("ListLayers", page)
        out.extend(page["Layers"])
        marker = page.get("NextMarker")
        if not marker:
            return out


def test_layer_errors(lam, lam_raw):
    name = layer_name()
    for call in (
        lambda: lam.get_layer_version(LayerName=name, VersionNumber=1),
        lambda: lam.get_layer_version_by_arn(Arn=layer_arn(name, 1)),
        lambda: lam.get_layer_version_policy(LayerName=name, VersionNumber=1),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert k.error_code(e.value) == "ResourceNotFoundException", e.value
        assert k.http_status(e.value) == 404
    with pytest.raises(ClientError) as e:
        lam.get_layer_version(LayerName=name, VersionNumber=0)
    assert k.error_code(e.value) == "InvalidParameterValueException"
    assert e.value.response["Error"]["Message"] == "Layer Version Cannot be less than 1"
    with pytest.raises(ClientError) as e:
        lam_raw.get_layer_version_by_arn(Arn="arn:aws:lambda:us-east-1:000000000000:layer:x")
    assert k.error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam_raw.publish_layer_version(LayerName="bad.name", Content={"ZipFile": k.make_zip(LAYER_A)})
    assert k.error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam_raw.publish_layer_version(
            LayerName=name, Content={"ZipFile": k.make_zip(LAYER_A)}, CompatibleRuntimes=["cobol"]
        )
    assert k.error_code(e.value) == "ValidationException" and "compatibleRuntimes" in str(e.value)
    with pytest.raises(ClientError) as e:
        lam.publish_layer_version(LayerName=name, Content={"ZipFile": b"not a zip"})
    assert k.error_code(e.value) == "InvalidParameterValueException"
    # Zips that would reach outside their tree are refused at publish time.
    for entries, words in (
        ([("../evil", b"x", False)], "not a relative path"),
        ([("/etc/evil", b"x", False)], "not a relative path"),
        ([("lib/escape", b"../../etc/passwd", True)], "points outside"),
        ([("abs", b"/etc/passwd", True)], "points outside"),
    ):
        with pytest.raises(ClientError) as e:
            lam.publish_layer_version(LayerName=name, Content={"ZipFile": raw_zip(entries)})
        assert k.error_code(e.value) == "InvalidParameterValueException", entries
        assert words in e.value.response["Error"]["Message"], e.value
    # None of the refused uploads took a version number.
    assert publish(lam, name, LAYER_A)["Version"] == 1


def test_layer_permissions(lam):
    name = layer_name()
    publish(lam, name, LAYER_A)
    arn = layer_arn(name, 1)
    with pytest.raises(ClientError) as e:
        lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert k.error_code(e.value) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == "No policy is associated with the given resource."

    added = lam.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="xaccount", Action="lambda:GetLayerVersion", Principal="210987654321"
    )
    assert k.http_status(added) == 201
    assert_shape("AddLayerVersionPermission", added)
    assert json.loads(added["Statement"]) == {
        "Sid": "xaccount",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
        "Action": "lambda:GetLayerVersion",
        "Resource": arn,
    }
    org = lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=1,
        StatementId="org",
        Action="lambda:GetLayerVersion",
        Principal="*",
        OrganizationId="o-abcdefghij",
        RevisionId=added["RevisionId"],
    )
    policy = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert_shape("GetLayerVersionPolicy", policy)
    assert policy["RevisionId"] == org["RevisionId"] != added["RevisionId"]
    doc = json.loads(policy["Policy"])
    assert doc["Version"] == "2012-10-17" and doc["Id"] == "default"
    assert [s["Sid"] for s in doc["Statement"]] == ["xaccount", "org"]
    assert doc["Statement"][1]["Principal"] == "*"
    assert doc["Statement"][1]["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}

    with pytest.raises(ClientError) as e:
        lam.add_layer_version_permission(
            LayerName=name, VersionNumber=1, StatementId="xaccount", Action="lambda:GetLayerVersion", Principal="*"
        )
    assert k.error_code(e.value) == "ResourceConflictException" and k.http_status(e.value) == 409
    with pytest.raises(ClientError) as e:
        lam.add_layer_version_permission(
            LayerName=name,
            VersionNumber=1,
            StatementId="late",
            Action="lambda:GetLayerVersion",
            Principal="*",
            RevisionId=added["RevisionId"],
        )
    assert k.error_code(e.value) == "PreconditionFailedException" and k.http_status(e.value) == 412
    with pytest.raises(ClientError) as e:
        lam.add_layer_version_permission(
            LayerName=name, VersionNumber=9, StatementId="s", Action="lambda:GetLayerVersion", Principal="*"
        )
    assert k.error_code(e.value) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == "Layer version %s does not exist." % layer_arn(name, 9)

    assert k.http_status(lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="xaccount")) == 204
    with pytest.raises(ClientError) as e:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="xaccount")
    assert k.error_code(e.value) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == "Statement xaccount is not found in resource policy."
    doc = json.loads(lam.get_layer_version_policy(LayerName=name, VersionNumber=1)["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["org"]


def test_function_layers_are_checked_and_shown(lam, lam_raw, deploy):
    a, b = layer_name("a"), layer_name("b")
    va = publish(lam, a, LAYER_A)
    vb = publish(lam, b, LAYER_B)
    fn = deploy(k.python_zip(OPT_HANDLER), Layers=[va["LayerVersionArn"], vb["LayerVersionArn"]])
    cfg = lam.get_function_configuration(FunctionName=fn)
    assert cfg["Layers"] == [
        {"Arn": va["LayerVersionArn"], "CodeSize": va["Content"]["CodeSize"]},
        {"Arn": vb["LayerVersionArn"], "CodeSize": vb["Content"]["CodeSize"]},
    ]
    for item in cfg["Layers"]:
        assert set(item) <= set(MODEL.shape_for("Layer").members)

    def refused(layers, client=lam):
        with pytest.raises(ClientError) as e:
            client.create_function(
                FunctionName=k.unique_name("bad"),
                Role=k.ROLE,
                Runtime=k.RUNTIME,
                Handler=k.HANDLER,
                Code={"ZipFile": k.python_zip()},
                Layers=layers,
            )
        return e.value

    missing = layer_arn(a, 7)
    e = refused([missing])
    assert k.error_code(e) == "InvalidParameterValueException" and k.http_status(e) == 400
    assert e.response["Error"]["Message"] == "Layer version %s does not exist." % missing
    e = refused([layer_arn("l%d" % i, 1) for i in range(6)], client=lam_raw)
    assert k.error_code(e) == "InvalidParameterValueException"
    assert e.response["Error"]["Message"] == "Cannot reference more than 5 layers."
    e = refused([va["LayerVersionArn"], layer_arn(a, 2)])
    assert k.error_code(e) == "InvalidParameterValueException" and "same layer" in str(e)
    e = refused([va["LayerVersionArn"], va["LayerVersionArn"]])
    assert k.error_code(e) == "InvalidParameterValueException"
    e = refused(["not-an-arn"], client=lam_raw)
    assert k.error_code(e) == "ValidationException"
    e = refused([layer_arn(a, 1).replace(k.REGION, "eu-west-1")])
    assert k.error_code(e) == "InvalidParameterValueException" and "same region" in str(e)
    # Nothing was created by the refused calls.
    assert not [f for f in lam.list_functions()["Functions"] if f["FunctionName"].startswith("bad-")]

    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=fn, Layers=[missing])
    assert k.error_code(e.value) == "InvalidParameterValueException"
    upd = lam.update_function_configuration(FunctionName=fn, Layers=[vb["LayerVersionArn"]])
    assert [x["Arn"] for x in upd["Layers"]] == [vb["LayerVersionArn"]]
    k.wait_updated(lam, fn)
    upd = lam.update_function_configuration(FunctionName=fn, Layers=[])
    assert "Layers" not in upd


def test_opt_holds_the_layers_in_order_read_only(lam, deploy):
    a, b = layer_name("a"), layer_name("b")
    va = publish(lam, a, LAYER_A)["LayerVersionArn"]
    vb = publish(lam, b, LAYER_B)["LayerVersionArn"]
    fn = deploy(k.python_zip(OPT_HANDLER), Layers=[va, vb])
    out = k.invoke_json(lam, fn)
    assert out["same"] == "b", "the later layer wins"
    assert out["only_a"] == "a" and out["only_b"] == "b"
    assert out["tool"] == "tool-b", "/opt/bin is on PATH and holds the later layer's tool"
    assert out["writable"] is False
    assert "/opt/bin" in out["path"].split(":")
    assert "/opt/lib" in out["ld_library_path"].split(":")
    assert out["listing"] == ["bin", "only-a", "only-b", "same"]

    # The other order: the other layer wins, in environments built after the change.
    lam.update_function_configuration(FunctionName=fn, Layers=[vb, va])
    k.wait_updated(lam, fn)
    out = k.invoke_json(lam, fn)
    assert out["same"] == "a" and out["tool"] == "tool-a"

    # Without layers /opt is there and empty.
    lam.update_function_configuration(FunctionName=fn, Layers=[])
    k.wait_updated(lam, fn)
    out = k.invoke_json(lam, fn)
    assert out["listing"] == [] and out["same"].startswith("error")


def test_bootstrap_from_a_layer(lam, deploy):
    runtime_layer = layer_name("runtime")
    bootstrap = ((k.PYTHON_RUNTIME_DIR / "bootstrap").read_bytes(), 0o755)
    arn = publish(lam, runtime_layer, {"bootstrap": bootstrap}, CompatibleRuntimes=["provided.al2023"])["LayerVersionArn"]
    # The function's zip has only the handler; its bootstrap comes from /opt.
    fn = deploy(k.python_zip(bootstrap=False), Runtime="provided.al2023", Layers=[arn])
    out = k.invoke_json(lam, fn, {"name": "layer"})
    assert out["hello"] == "layer"
    # Without the layer there is no bootstrap at all.
    lam.update_function_configuration(FunctionName=fn, Layers=[])
    k.wait_updated(lam, fn)
    resp, err = k.invoke_error(lam, fn)
    assert err["errorType"] == "Runtime.InvalidEntrypoint"


def test_deleted_layer_keeps_working_for_its_functions(lam, deploy):
    name = layer_name()
    arn = publish(lam, name, LAYER_A)["LayerVersionArn"]
    fn = deploy(k.python_zip(OPT_HANDLER), Layers=[arn])
    assert k.invoke_json(lam, fn)["same"] == "a"
    lam.delete_layer_version(LayerName=name, VersionNumber=1)
    with pytest.raises(ClientError):
        lam.get_layer_version(LayerName=name, VersionNumber=1)
    # A new environment (the configuration changed) still gets the deleted layer at /opt.
    lam.update_function_configuration(FunctionName=fn, Environment={"Variables": {"AFTER": "delete"}})
    k.wait_updated(lam, fn)
    assert k.invoke_json(lam, fn)["same"] == "a"
    assert lam.get_function_configuration(FunctionName=fn)["Layers"][0]["Arn"] == arn
    # New references to it are refused.
    with pytest.raises(ClientError) as e:
        k.create(lam, k.unique_name("late"), k.python_zip(OPT_HANDLER), Layers=[arn])
    assert k.error_code(e.value) == "InvalidParameterValueException"


def big_zip(mb, name="big"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(mb):
                f.write(chunk)
    return buf.getvalue()


def test_code_and_layers_over_250_mb_are_refused(lam):
    name = layer_name()
    arn = lam.publish_layer_version(LayerName=name, Content={"ZipFile": big_zip(150)})["LayerVersionArn"]
    with pytest.raises(ClientError) as e:
        k.create(lam, k.unique_name("big"), big_zip(110, "code"), Layers=[arn], Handler="x")
    assert k.error_code(e.value) == "InvalidParameterValueException"
    msg = e.value.response["Error"]["Message"]
    assert msg.startswith(
        "Function code combined with layers exceeds the maximum allowed size of 262144000 bytes. The actual size is "
    ), msg


def test_cli_publishes_lists_and_deploys_with_layers(kiln, lam, tmp_path):
    layer_dir = tmp_path / "layer"
    (layer_dir / "bin").mkdir(parents=True)
    (layer_dir / "same").write_text("cli")
    tool = layer_dir / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool-cli\n")
    tool.chmod(0o755)
    name = layer_name("cli")
    r = k.run_cli("layer", "publish", name, layer_dir, endpoint=kiln.endpoint)
    assert r.returncode == 0, r.stderr
    assert layer_arn(name, 1) in r.stdout
    r = k.run_cli("layer", "ls", endpoint=kiln.endpoint)
    assert r.returncode == 0, r.stderr
    assert any(line.split()[:2] == [name, "1"] for line in r.stdout.splitlines()), r.stdout

    fn_dir = tmp_path / "fn"
    fn_dir.mkdir()
    (fn_dir / "bootstrap").write_bytes((k.PYTHON_RUNTIME_DIR / "bootstrap").read_bytes())
    (fn_dir / "bootstrap").chmod(0o755)
    (fn_dir / "handler.py").write_text(OPT_HANDLER)
    fn = k.unique_name("cli")
    r = k.run_cli(
        "deploy", fn, fn_dir, "--handler", "handler.handle", "--layer", layer_arn(name, 1), endpoint=kiln.endpoint
    )
    try:
        assert r.returncode == 0, r.stderr
        out = k.invoke_json(lam, fn)
        assert out["same"] == "cli" and out["tool"] == "tool-cli"
    finally:
        lam.delete_function(FunctionName=fn)


def test_layers_survive_a_restart(kiln_factory):
    server = kiln_factory()
    lam = k.lambda_client(server.endpoint)
    name = layer_name()
    arn = publish(lam, name, LAYER_A)["LayerVersionArn"]
    fn = k.unique_name("restart")
    k.create(lam, fn, k.python_zip(OPT_HANDLER), Layers=[arn])
    lam.publish_version(FunctionName=fn)
    server.restart()
    assert k.invoke_json(lam, fn)["same"] == "a"
    assert k.invoke_json(lam, fn, Qualifier="1")["same"] == "a"
    assert lam.get_layer_version(LayerName=name, VersionNumber=1)["LayerVersionArn"] == arn
    assert publish(lam, name, LAYER_B)["Version"] == 2
