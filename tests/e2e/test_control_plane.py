"""The rest of the control plane (issue 13, items 3-5) through boto3 and the AWS CLI: tags,
resource policies, recursion and runtime-management configs, code signing configs, RevisionId
preconditions and unknown operations. Every answer's members are checked against botocore's
model of the operation, every error against AWS's code and status."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest
from botocore.exceptions import ClientError

import kiln_e2e as k

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root; kiln runs with --isolation sandbox")

MODEL = botocore.session.get_session().get_service_model("lambda")


def members(operation):
    """The output members botocore knows for `operation`, plus ResponseMetadata."""
    shape = MODEL.operation_model(operation).output_shape
    return set(shape.members) | {"ResponseMetadata"} if shape is not None else {"ResponseMetadata"}


def assert_shape(operation, resp):
    extra = set(resp) - members(operation)
    assert not extra, "%s answered members botocore does not know: %s" % (operation, extra)


def client_error(fn, *args, **kw):
    with pytest.raises(ClientError) as exc:
        fn(*args, **kw)
    return exc.value


def expect(code, status, fn, *args, **kw):
    e = client_error(fn, *args, **kw)
    assert (k.error_code(e), k.http_status(e)) == (code, status), e.response
    return e


@pytest.fixture(scope="module")
def fn(lam):
    """One function of this module, with a published version and an alias."""
    name = k.unique_name("ctl")
    k.create(lam, name, k.rust_zip(), Tags={"team": "core", "empty": ""})
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    yield name
    lam.delete_function(FunctionName=name)


# ---- tags ---------------------------------------------------------------------------------


def test_tags_round_trip_and_show_in_get_function(lam, fn):
    arn = k.function_arn(fn)
    listed = lam.list_tags(Resource=arn)
    assert_shape("ListTags", listed)
    assert listed["Tags"] == {"team": "core", "empty": ""}
    assert lam.get_function(FunctionName=fn)["Tags"] == {"team": "core", "empty": ""}

    before = lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
    resp = lam.tag_resource(Resource=arn, Tags={"cost-center": "42", "team": "edge", "unicode é/=+@": "ok"})
    assert k.http_status(resp) == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {
        "team": "edge",
        "empty": "",
        "cost-center": "42",
        "unicode é/=+@": "ok",
    }
    after = lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
    assert after != before, "changing tags gives $LATEST a new RevisionId, as on Lambda"

    resp = lam.untag_resource(Resource=arn, TagKeys=["cost-center", "unicode é/=+@", "absent"])
    assert k.http_status(resp) == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "edge", "empty": ""}


def test_tag_limits_and_errors(lam, lam_raw, fn):
    arn = k.function_arn(fn)
    before = lam.list_tags(Resource=arn)["Tags"]
    e = expect("InvalidParameterValueException", 400, lam.tag_resource, Resource=arn, Tags={"aws:owner": "x"})
    assert "aws:" in e.response["Error"]["Message"]
    too_many = {"k%d" % i: "v" for i in range(51 - len(before))}
    e = expect("InvalidParameterValueException", 400, lam.tag_resource, Resource=arn, Tags=too_many)
    assert e.response["Error"]["Message"] == "Number of tags exceeds resource tag limit."
    fifty = {"k%d" % i: "v" for i in range(50 - len(before))}
    lam.tag_resource(Resource=arn, Tags=fifty)
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 50
    lam.untag_resource(Resource=arn, TagKeys=list(fifty))

    expect("ValidationException", 400, lam_raw.tag_resource, Resource=arn, Tags={"k" * 129: "v"})
    expect("ValidationException", 400, lam_raw.tag_resource, Resource=arn, Tags={"k": "v" * 257})
    expect("ValidationException", 400, lam_raw.tag_resource, Resource=arn, Tags={"": "v"})
    expect("ValidationException", 400, lam_raw.tag_resource, Resource=arn, Tags={"a*b": "v"})
    lam.tag_resource(Resource=arn, Tags={"k" * 128: "v" * 256})
    lam.untag_resource(Resource=arn, TagKeys=["k" * 128])
    expect("InvalidParameterValueException", 400, lam_raw.tag_resource, Resource=arn, Tags={})
    expect("ValidationException", 400, lam_raw.untag_resource, Resource=arn, TagKeys=[])
    assert lam.list_tags(Resource=arn)["Tags"] == before


def test_tag_resource_arns_are_checked(lam, lam_raw, fn):
    e = expect("ValidationException", 400, lam_raw.list_tags, Resource="not-an-arn")
    assert "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:" in e.response["Error"]["Message"]
    expect(
        "InvalidParameterValueException",
        400,
        lam.tag_resource,
        Resource=k.function_arn(fn) + ":live",
        Tags={"a": "b"},
    )
    e = expect("ResourceNotFoundException", 404, lam.list_tags, Resource=k.function_arn("nobody-here"))
    assert e.response["Error"]["Message"] == "Function not found: " + k.function_arn("nobody-here")
    expect(
        "ResourceNotFoundException",
        404,
        lam.list_tags,
        Resource="arn:aws:lambda:us-east-1:000000000000:event-source-mapping:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
    )


def test_create_with_bad_tags_creates_nothing(lam):
    name = k.unique_name("badtags")
    expect("InvalidParameterValueException", 400, k.create, lam, name, k.rust_zip(), Tags={"aws:x": "y"})
    expect("ResourceNotFoundException", 404, lam.get_function, FunctionName=name)


# ---- resource policies --------------------------------------------------------------------


def test_policy_round_trip_as_aws_builds_it(lam, fn):
    expect("ResourceNotFoundException", 404, lam.get_policy, FunctionName=fn)
    resp = lam.add_permission(
        FunctionName=fn,
        StatementId="s3-invoke",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::my-bucket",
        SourceAccount="123456789012",
    )
    assert k.http_status(resp) == 201
    assert_shape("AddPermission", resp)
    statement = {
        "Sid": "s3-invoke",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": k.function_arn(fn),
        "Condition": {
            "StringEquals": {"AWS:SourceAccount": "123456789012"},
            "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"},
        },
    }
    assert json.loads(resp["Statement"]) == statement
    lam.add_permission(FunctionName=fn, StatementId="acct", Action="lambda:*", Principal="111122223333")
    got = lam.get_policy(FunctionName=fn)
    assert_shape("GetPolicy", got)
    assert got["RevisionId"] == lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
    assert got["Policy"].startswith('{"Version":"2012-10-17","Id":"default","Statement":[{"Sid":"s3-invoke",')
    assert json.loads(got["Policy"]) == {
        "Version": "2012-10-17",
        "Id": "default",
        "Statement": [
            statement,
            {
                "Sid": "acct",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": "lambda:*",
                "Resource": k.function_arn(fn),
            },
        ],
    }

    e = expect(
        "ResourceConflictException",
        409,
        lam.add_permission,
        FunctionName=fn,
        StatementId="acct",
        Action="lambda:InvokeFunction",
        Principal="*",
    )
    assert "The statement id (acct) provided already exists" in e.response["Error"]["Message"]

    lam.remove_permission(FunctionName=fn, StatementId="s3-invoke")
    e = expect("ResourceNotFoundException", 404, lam.remove_permission, FunctionName=fn, StatementId="s3-invoke")
    assert e.response["Error"]["Message"] == "Statement s3-invoke is not found in resource policy."
    lam.remove_permission(FunctionName=fn, StatementId="acct")
    e = expect("ResourceNotFoundException", 404, lam.get_policy, FunctionName=fn)
    assert e.response["Error"]["Message"] == "The resource you requested does not exist."


def test_policies_are_per_qualifier(lam, fn):
    lam.add_permission(
        FunctionName=fn, Qualifier="live", StatementId="alias-only", Action="lambda:InvokeFunction", Principal="*"
    )
    alias_policy = json.loads(lam.get_policy(FunctionName=fn, Qualifier="live")["Policy"])
    assert alias_policy["Statement"][0]["Resource"] == k.function_arn(fn) + ":live"
    expect("ResourceNotFoundException", 404, lam.get_policy, FunctionName=fn)
    expect("ResourceNotFoundException", 404, lam.get_policy, FunctionName=fn, Qualifier="1")
    # The same statement id may exist once per qualifier.
    lam.add_permission(FunctionName=fn, Qualifier="1", StatementId="alias-only", Action="lambda:InvokeFunction", Principal="*")
    lam.remove_permission(FunctionName=fn, Qualifier="1", StatementId="alias-only")
    lam.remove_permission(FunctionName=fn, Qualifier="live", StatementId="alias-only")
    expect(
        "InvalidParameterValueException",
        400,
        lam.add_permission,
        FunctionName=fn,
        Qualifier="$LATEST",
        StatementId="x",
        Action="lambda:InvokeFunction",
        Principal="*",
    )
    expect(
        "ResourceNotFoundException",
        404,
        lam.add_permission,
        FunctionName=fn,
        Qualifier="nope",
        StatementId="x",
        Action="lambda:InvokeFunction",
        Principal="*",
    )


def test_policy_revision_ids_are_preconditions(lam, fn):
    rev = lam.get_alias(FunctionName=fn, Name="live")["RevisionId"]
    e = expect(
        "PreconditionFailedException",
        412,
        lam.add_permission,
        FunctionName=fn,
        Qualifier="live",
        StatementId="r1",
        Action="lambda:InvokeFunction",
        Principal="*",
        RevisionId="00000000-0000-0000-0000-000000000000",
    )
    assert e.response["Error"]["Message"].startswith("The Revision Id provided does not match the latest Revision Id.")
    lam.add_permission(
        FunctionName=fn, Qualifier="live", StatementId="r1", Action="lambda:InvokeFunction", Principal="*", RevisionId=rev
    )
    new_rev = lam.get_policy(FunctionName=fn, Qualifier="live")["RevisionId"]
    assert new_rev != rev and new_rev == lam.get_alias(FunctionName=fn, Name="live")["RevisionId"]
    expect(
        "PreconditionFailedException",
        412,
        lam.remove_permission,
        FunctionName=fn,
        Qualifier="live",
        StatementId="r1",
        RevisionId=rev,
    )
    lam.remove_permission(FunctionName=fn, Qualifier="live", StatementId="r1", RevisionId=new_rev)


def test_add_permission_bad_input(lam, lam_raw, fn):
    common = dict(FunctionName=fn, StatementId="bad", Action="lambda:InvokeFunction")
    e = expect("InvalidParameterValueException", 400, lam.add_permission, Principal="nobody", **common)
    assert e.response["Error"]["Message"] == "The provided principal was invalid. Please check the principal and try again."
    expect("ValidationException", 400, lam_raw.add_permission, FunctionName=fn, StatementId="bad sid", Action="lambda:InvokeFunction", Principal="*")
    expect("ValidationException", 400, lam_raw.add_permission, FunctionName=fn, StatementId="x", Action="s3:GetObject", Principal="*")
    expect("ValidationException", 400, lam_raw.add_permission, Principal="*", SourceAccount="12", **common)
    expect("ValidationException", 400, lam_raw.add_permission, Principal="*", FunctionUrlAuthType="BASIC", **common)
    expect("ResourceNotFoundException", 404, lam.add_permission, Principal="*", **dict(common, FunctionName="no-such-fn"))
    expect("ResourceNotFoundException", 404, lam.get_policy, FunctionName=fn)


def test_resource_policy_operations(lam, lam_raw, fn):
    arn = k.function_arn(fn)
    doc = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "x", "Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "lambda:InvokeFunction", "Resource": arn}
            ],
        }
    )
    put = lam.put_resource_policy(ResourceArn=arn, Policy=doc)
    assert_shape("PutResourcePolicy", put)
    assert put["Policy"] == doc
    got = lam.get_resource_policy(ResourceArn=arn)
    assert_shape("GetResourcePolicy", got)
    assert got["Policy"] == doc and got["RevisionId"] == put["RevisionId"]
    assert lam.get_policy(FunctionName=fn)["Policy"] == doc
    expect(
        "PreconditionFailedException",
        412,
        lam.delete_resource_policy,
        ResourceArn=arn,
        RevisionId="00000000-0000-0000-0000-000000000000",
    )
    expect("InvalidParameterValueException", 400, lam.put_resource_policy, ResourceArn=arn, Policy="{not json")
    expect(
        "InvalidParameterValueException",
        400,
        lam.put_resource_policy,
        ResourceArn=arn,
        Policy=json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"Nobody": "x"}, "Action": "*"}]}),
    )
    lam.delete_resource_policy(ResourceArn=arn, RevisionId=got["RevisionId"])
    expect("ResourceNotFoundException", 404, lam.get_resource_policy, ResourceArn=arn)
    expect("ResourceNotFoundException", 404, lam.delete_resource_policy, ResourceArn=arn)


# ---- recursion and runtime management -----------------------------------------------------


def test_recursion_config_round_trip(lam, lam_raw, fn):
    got = lam.get_function_recursion_config(FunctionName=fn)
    assert_shape("GetFunctionRecursionConfig", got)
    assert got["RecursiveLoop"] == "Terminate"
    put = lam.put_function_recursion_config(FunctionName=fn, RecursiveLoop="Allow")
    assert_shape("PutFunctionRecursionConfig", put)
    assert put["RecursiveLoop"] == "Allow"
    assert lam.get_function_recursion_config(FunctionName=fn)["RecursiveLoop"] == "Allow"
    lam.put_function_recursion_config(FunctionName=fn, RecursiveLoop="Terminate")
    expect("ValidationException", 400, lam_raw.put_function_recursion_config, FunctionName=fn, RecursiveLoop="Sometimes")
    expect("ResourceNotFoundException", 404, lam.get_function_recursion_config, FunctionName="no-such-fn")


def test_runtime_management_config_round_trip(lam, lam_raw, fn):
    got = lam.get_runtime_management_config(FunctionName=fn)
    assert_shape("GetRuntimeManagementConfig", got)
    assert (got["UpdateRuntimeOn"], got["FunctionArn"]) == ("Auto", k.function_arn(fn))
    version_arn = "arn:aws:lambda:us-east-1::runtime:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    put = lam.put_runtime_management_config(FunctionName=fn, UpdateRuntimeOn="Manual", RuntimeVersionArn=version_arn)
    assert_shape("PutRuntimeManagementConfig", put)
    assert (put["UpdateRuntimeOn"], put["RuntimeVersionArn"]) == ("Manual", version_arn)
    got = lam.get_runtime_management_config(FunctionName=fn)
    assert (got["UpdateRuntimeOn"], got["RuntimeVersionArn"]) == ("Manual", version_arn)
    lam.put_runtime_management_config(FunctionName=fn, UpdateRuntimeOn="FunctionUpdate")
    got = lam.get_runtime_management_config(FunctionName=fn)
    assert got["UpdateRuntimeOn"] == "FunctionUpdate" and "RuntimeVersionArn" not in got
    expect("InvalidParameterValueException", 400, lam.put_runtime_management_config, FunctionName=fn, UpdateRuntimeOn="Manual")
    expect("ValidationException", 400, lam_raw.put_runtime_management_config, FunctionName=fn, UpdateRuntimeOn="Never")
    assert lam.get_runtime_management_config(FunctionName=fn, Qualifier="1")["FunctionArn"] == k.function_arn(fn) + ":1"


# ---- code signing configs -----------------------------------------------------------------

PROFILE = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/kiln/abcdef1234"


def test_code_signing_config_lifecycle(lam, lam_raw, fn):
    created = lam.create_code_signing_config(
        Description="release builds",
        AllowedPublishers={"SigningProfileVersionArns": [PROFILE]},
        Tags={"stage": "prod"},
    )
    assert k.http_status(created) == 201
    assert_shape("CreateCodeSigningConfig", created)
    c = created["CodeSigningConfig"]
    assert set(c) == set(MODEL.shape_for("CodeSigningConfig").members)
    assert c["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Warn"}
    assert c["CodeSigningConfigArn"].endswith(":code-signing-config:" + c["CodeSigningConfigId"])
    assert len(c["CodeSigningConfigId"]) == 21 and k.LAST_MODIFIED_RE.match(c["LastModified"])
    arn = c["CodeSigningConfigArn"]
    assert lam.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"] == c
    assert lam.list_tags(Resource=arn)["Tags"] == {"stage": "prod"}
    assert arn in [x["CodeSigningConfigArn"] for x in lam.list_code_signing_configs()["CodeSigningConfigs"]]

    updated = lam.update_code_signing_config(CodeSigningConfigArn=arn, CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"})
    assert updated["CodeSigningConfig"]["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Enforce"}
    assert updated["CodeSigningConfig"]["Description"] == "release builds"

    assert "CodeSigningConfigArn" not in lam.get_function_code_signing_config(FunctionName=fn)
    put = lam.put_function_code_signing_config(CodeSigningConfigArn=arn, FunctionName=fn)
    assert_shape("PutFunctionCodeSigningConfig", put)
    assert (put["CodeSigningConfigArn"], put["FunctionName"]) == (arn, fn)
    assert lam.get_function_code_signing_config(FunctionName=fn)["CodeSigningConfigArn"] == arn
    listed = lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)
    assert_shape("ListFunctionsByCodeSigningConfig", listed)
    assert listed["FunctionArns"] == [k.function_arn(fn)]
    expect("ResourceConflictException", 409, lam.delete_code_signing_config, CodeSigningConfigArn=arn)
    lam.delete_function_code_signing_config(FunctionName=fn)
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == []
    resp = lam.delete_code_signing_config(CodeSigningConfigArn=arn)
    assert k.http_status(resp) == 204
    e = expect("ResourceNotFoundException", 404, lam.get_code_signing_config, CodeSigningConfigArn=arn)
    assert e.response["Error"]["Message"] == "The Lambda code signing configuration %s can not be found." % arn
    expect("CodeSigningConfigNotFoundException", 404, lam.put_function_code_signing_config, CodeSigningConfigArn=arn, FunctionName=fn)


def test_code_signing_config_bad_input(lam, lam_raw):
    expect("ValidationException", 400, lam_raw.create_code_signing_config, AllowedPublishers={"SigningProfileVersionArns": []})
    expect("ValidationException", 400, lam_raw.create_code_signing_config, AllowedPublishers={"SigningProfileVersionArns": ["nope"]})
    expect(
        "ValidationException",
        400,
        lam_raw.create_code_signing_config,
        AllowedPublishers={"SigningProfileVersionArns": [PROFILE]},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Block"},
    )
    expect("ValidationException", 400, lam_raw.get_code_signing_config, CodeSigningConfigArn="csc-nope")


def test_create_function_with_code_signing_config(lam):
    c = lam.create_code_signing_config(AllowedPublishers={"SigningProfileVersionArns": [PROFILE]})["CodeSigningConfig"]
    name = k.unique_name("csc")
    k.create(lam, name, k.rust_zip(), CodeSigningConfigArn=c["CodeSigningConfigArn"])
    try:
        assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == c["CodeSigningConfigArn"]
    finally:
        lam.delete_function(FunctionName=name)
    # The function's deletion let go of the config.
    lam.delete_code_signing_config(CodeSigningConfigArn=c["CodeSigningConfigArn"])
    missing = c["CodeSigningConfigArn"]
    expect("CodeSigningConfigNotFoundException", 404, k.create, lam, k.unique_name("csc"), k.rust_zip(), CodeSigningConfigArn=missing)


# ---- RevisionId on the older operations, unknown operations, the AWS CLI ------------------


def test_revision_ids_are_checked_everywhere(lam, fn):
    stale = "00000000-0000-0000-0000-000000000000"
    expect("PreconditionFailedException", 412, lam.update_function_configuration, FunctionName=fn, Description="x", RevisionId=stale)
    expect("PreconditionFailedException", 412, lam.update_function_code, FunctionName=fn, ZipFile=k.rust_zip(), RevisionId=stale)
    expect("PreconditionFailedException", 412, lam.publish_version, FunctionName=fn, RevisionId=stale)
    expect("PreconditionFailedException", 412, lam.update_alias, FunctionName=fn, Name="live", RevisionId=stale)
    rev = lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
    lam.update_function_configuration(FunctionName=fn, Description="checked", RevisionId=rev)
    k.wait_updated(lam, fn)


def test_unknown_operations_answer_in_aws_shape(kiln):
    import urllib.error
    import urllib.request

    for method, path in [("GET", "/2015-03-31/nothing-here"), ("POST", "/2099-01-01/functions/x/frobnicate"), ("PATCH", "/2017-03-31/tags/arn")]:
        req = urllib.request.Request(kiln.endpoint + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=30)
        assert exc.value.code == 404
        assert exc.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        body = json.loads(exc.value.read())
        assert body["Type"] == "User"


def find_aws():
    beside_python = Path(sys.executable).parent / "aws"
    return str(beside_python) if beside_python.exists() else shutil.which("aws")


def test_aws_cli_tags_and_permissions(kiln, fn, tmp_path):
    aws = find_aws()
    if aws is None:
        pytest.fail("the `aws` CLI is not installed (pip install awscli)")
    env = {key: v for key, v in os.environ.items() if not key.startswith("AWS_")}
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
        cmd = [aws, "--endpoint-url", kiln.endpoint, "--output", "json", "lambda"] + list(args)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    arn = k.function_arn(fn)
    run("tag-resource", "--resource", arn, "--tags", "cli=yes")
    assert run("list-tags", "--resource", arn)["Tags"]["cli"] == "yes"
    run("untag-resource", "--resource", arn, "--tag-keys", "cli")
    assert "cli" not in run("list-tags", "--resource", arn)["Tags"]
    out = run(
        "add-permission",
        "--function-name", fn,
        "--statement-id", "cli-events",
        "--action", "lambda:InvokeFunction",
        "--principal", "events.amazonaws.com",
        "--source-arn", "arn:aws:events:us-east-1:000000000000:rule/daily",
    )
    assert json.loads(out["Statement"])["Principal"] == {"Service": "events.amazonaws.com"}
    policy = json.loads(run("get-policy", "--function-name", fn)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["cli-events"]
    run("remove-permission", "--function-name", fn, "--statement-id", "cli-events")
