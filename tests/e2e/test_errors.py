"""Requests kiln must refuse, with the AWS error code and HTTP status (docs/lambda-api.md, "Errors").

These use `lam_raw` (botocore's client-side validation off) where botocore would otherwise
refuse the value itself, so the server's own validation is what is tested.
"""

import json

import pytest
from botocore.exceptions import ClientError

import kiln_e2e as k


def assert_error(exc_info, code, status):
    err = exc_info.value
    assert k.error_code(err) == code, err.response
    assert k.http_status(err) == status, err.response
    return err.response["Error"].get("Message", "")


@pytest.fixture(scope="module")
def target(lam):
    """A function to send bad invokes to."""
    name = k.unique_name("errs")
    k.create(lam, name, k.python_zip())
    yield name
    lam.delete_function(FunctionName=name)


# ---- unknown functions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda lam, n: lam.get_function(FunctionName=n), id="get_function"),
        pytest.param(lambda lam, n: lam.get_function_configuration(FunctionName=n), id="get_configuration"),
        pytest.param(lambda lam, n: lam.invoke(FunctionName=n, Payload=b"{}"), id="invoke"),
        pytest.param(lambda lam, n: lam.delete_function(FunctionName=n), id="delete"),
        pytest.param(
            lambda lam, n: lam.update_function_configuration(FunctionName=n, Description="x"), id="update_configuration"
        ),
        pytest.param(
            lambda lam, n: lam.update_function_code(FunctionName=n, ZipFile=k.python_zip()), id="update_code"
        ),
    ],
)
def test_unknown_function_is_not_found(lam, call):
    name = k.unique_name("missing")
    with pytest.raises(ClientError) as exc:
        call(lam, name)
    message = assert_error(exc, "ResourceNotFoundException", 404)
    assert name in message


# ---- create validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("MemorySize", 64),
        ("MemorySize", 20000),
        ("Timeout", 0),
        ("Timeout", 901),
    ],
)
def test_out_of_range_limits_are_rejected(lam_raw, field, value):
    with pytest.raises(ClientError) as exc:
        k.create(lam_raw, k.unique_name("range"), k.python_zip(), wait=False, **{field: value})
    assert_error(exc, "ValidationException", 400)


@pytest.mark.parametrize("name", ["bad name!", "a" * 65], ids=["punctuation", "65-chars"])
def test_bad_function_names_are_rejected(lam_raw, name):
    with pytest.raises(ClientError) as exc:
        k.create(lam_raw, name, k.python_zip(), wait=False)
    assert_error(exc, "ValidationException", 400)


def test_reserved_environment_key_is_rejected(lam_raw):
    with pytest.raises(ClientError) as exc:
        k.create(
            lam_raw,
            k.unique_name("reserved"),
            k.python_zip(),
            wait=False,
            Environment={"Variables": {"AWS_REGION": "eu-west-1"}},
        )
    message = assert_error(exc, "InvalidParameterValueException", 400)
    assert "reserved keys" in message


def test_reserved_environment_key_is_rejected_on_update(lam_raw, target):
    with pytest.raises(ClientError) as exc:
        lam_raw.update_function_configuration(
            FunctionName=target, Environment={"Variables": {"AWS_LAMBDA_RUNTIME_API": "1.2.3.4:1"}}
        )
    message = assert_error(exc, "InvalidParameterValueException", 400)
    assert "reserved keys" in message


def test_zip_file_that_is_not_a_zip_is_rejected(lam_raw):
    with pytest.raises(ClientError) as exc:
        k.create(lam_raw, k.unique_name("notzip"), b"this is not a zip file", wait=False)
    assert_error(exc, "InvalidParameterValueException", 400)


@pytest.mark.parametrize("entry", ["../evil", "/tmp/kiln-evil-absolute"], ids=["dotdot", "absolute"])
def test_zip_entries_escaping_the_task_root_are_rejected(lam_raw, entry):
    code = k.make_zip({"bootstrap": ("#!/bin/sh\n", 0o755), entry: "pwned"})
    with pytest.raises(ClientError) as exc:
        k.create(lam_raw, k.unique_name("evil"), code, wait=False)
    assert_error(exc, "InvalidParameterValueException", 400)


def test_unknown_runtime_is_rejected(lam_raw):
    with pytest.raises(ClientError) as exc:
        k.create(lam_raw, k.unique_name("rt"), k.python_zip(), wait=False, Runtime="cobol1.0")
    assert_error(exc, "InvalidParameterValueException", 400)
    assert "Value cobol1.0 at 'runtime' failed to satisfy constraint" in exc.value.response["Error"]["Message"]


# ---- invoke validation ----------------------------------------------------------------------


def test_invoke_payload_over_6mb_is_too_large(lam, target):
    payload = json.dumps("x" * (6_291_457 - 2))
    assert len(payload) == 6_291_457
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=target, Payload=payload)
    assert_error(exc, "RequestEntityTooLargeException", 413)


def test_invoke_payload_of_exactly_6mb_is_accepted(lam, target):
    payload = json.dumps({"action": "count", "pad": "x" * (6_291_456 - 34)})
    assert len(payload) <= 6_291_456
    resp, body = k.invoke(lam, target, payload)
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp, body[:500]


def test_invoke_invalid_json_is_rejected(lam, target):
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=target, Payload=b"{not json")
    assert_error(exc, "InvalidRequestContentException", 400)
