"""Cross-account access (`kiln serve --auth-keys FILE` with two accounts' keys).

Alice (111111111111) owns a function; Bob (222222222222) names it by ARN. Bob may invoke it only
while Alice's resource policy for what he names (the function, or that version or alias) allows
`lambda:InvokeFunction` for his account; every other operation on Alice's resources is
AccessDeniedException. `/metrics` answers only signed (or token-bearing) scrapes, with the
caller's account's series only.
"""

import hashlib
import hmac
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import kiln_e2e as k
from test_auth import ALICE, BOB, assert_refused, authed, client, send, signed  # noqa: F401 (authed is a fixture)
from test_aws_cli import AWS
from test_console import browser, wait  # noqa: F401 (browser is a fixture)

ALICE_ACCOUNT, BOB_ACCOUNT = ALICE[2], BOB[2]


def denied_message(resource, action="lambda:InvokeFunction", caller=BOB_ACCOUNT):
    return (
        "User: arn:aws:iam::%s:root is not authorized to perform: %s on resource: %s "
        "because no resource-based policy allows the %s action" % (caller, action, resource, action)
    )


def arn(name, qualifier=None, account=ALICE_ACCOUNT):
    base = "arn:aws:lambda:%s:%s:function:%s" % (k.REGION, account, name)
    return base if qualifier is None else "%s:%s" % (base, qualifier)


def refused(call, code):
    with pytest.raises(ClientError) as e:
        call()
    assert k.error_code(e.value) == code, e.value.response
    return e.value.response


def test_invoke_follows_the_owners_policy(authed):
    alice, bob = client(authed, ALICE), client(authed, BOB)
    name = k.unique_name("xacct")
    k.create(alice, name, k.rust_zip())
    # No policy: every way of invoking is refused, with AWS's message naming Bob and the function.
    for ref in (arn(name), "%s:function:%s" % (ALICE_ACCOUNT, name)):
        for kind in ("RequestResponse", "Event", "DryRun"):
            resp = refused(lambda: bob.invoke(FunctionName=ref, InvocationType=kind, Payload=b"{}"), "AccessDeniedException")
            assert resp["ResponseMetadata"]["HTTPStatusCode"] == 403
            assert resp["Error"]["Message"] == denied_message(arn(name)), resp
    refused(lambda: bob.invoke_with_response_stream(FunctionName=arn(name), Payload=b"{}"), "AccessDeniedException")

    # Alice lets Bob's account invoke the function.
    statement = alice.add_permission(
        FunctionName=name, StatementId="bob", Action="lambda:InvokeFunction", Principal=BOB_ACCOUNT
    )["Statement"]
    assert json.loads(statement)["Principal"] == {"AWS": "arn:aws:iam::%s:root" % BOB_ACCOUNT}
    resp, payload = k.invoke(bob, arn(name), {"action": "env"})
    assert resp["StatusCode"] == 200 and resp.get("FunctionError") is None, payload
    env = json.loads(payload)
    # It ran as Alice's function.
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    resp, _ = k.invoke(bob, "%s:function:%s" % (ALICE_ACCOUNT, name), {"action": "echo"})
    assert resp["StatusCode"] == 200
    assert bob.invoke(FunctionName=arn(name), InvocationType="DryRun")["StatusCode"] == 204
    assert bob.invoke(FunctionName=arn(name), InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    stream = bob.invoke_with_response_stream(FunctionName=arn(name), Payload=json.dumps({"action": "echo", "n": 7}))
    chunks = [e["PayloadChunk"]["Payload"] for e in stream["EventStream"] if "PayloadChunk" in e]
    assert json.loads(b"".join(chunks))["n"] == 7
    # Bob's own account has no such function: by name it is not found.
    refused(lambda: bob.invoke(FunctionName=name, Payload=b"{}"), "ResourceNotFoundException")

    # The permission goes: refused again.
    alice.remove_permission(FunctionName=name, StatementId="bob")
    resp = refused(lambda: bob.invoke(FunctionName=arn(name), Payload=b"{}"), "AccessDeniedException")
    assert resp["Error"]["Message"] == denied_message(arn(name))


def test_a_permission_on_an_alias_covers_only_that_alias(authed):
    alice, bob = client(authed, ALICE), client(authed, BOB)
    name = k.unique_name("xalias")
    k.create(alice, name, k.rust_zip())
    alice.publish_version(FunctionName=name)
    alice.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    alice.add_permission(
        FunctionName=name,
        Qualifier="live",
        StatementId="bob-live",
        Action="lambda:InvokeFunction",
        Principal="arn:aws:iam::%s:root" % BOB_ACCOUNT,
    )
    resp, payload = k.invoke(bob, arn(name, "live"), {"action": "echo"})
    assert resp["StatusCode"] == 200 and resp["ExecutedVersion"] == "1", payload
    # The alias named through the Qualifier parameter is the same resource.
    resp, _ = k.invoke(bob, arn(name), {"action": "echo"}, Qualifier="live")
    assert resp["StatusCode"] == 200
    # Not the unqualified function, not the version behind the alias.
    for ref, resource in ((arn(name), arn(name)), (arn(name, "1"), arn(name, "1"))):
        resp = refused(lambda: bob.invoke(FunctionName=ref, Payload=b"{}"), "AccessDeniedException")
        assert resp["Error"]["Message"] == denied_message(resource)
    # A permission for someone else, or for another action, grants Bob nothing.
    alice.add_permission(FunctionName=name, StatementId="other", Action="lambda:InvokeFunction", Principal="333333333333")
    alice.add_permission(FunctionName=name, StatementId="get", Action="lambda:GetFunction", Principal=BOB_ACCOUNT)
    refused(lambda: bob.invoke(FunctionName=arn(name), Payload=b"{}"), "AccessDeniedException")
    # `*` with a condition Bob meets (his account), through PutResourcePolicy-less AddPermission.
    alice.add_permission(FunctionName=name, StatementId="any", Action="lambda:*", Principal="*")
    resp, _ = k.invoke(bob, arn(name), {"action": "echo"})
    assert resp["StatusCode"] == 200


def test_unknown_functions_and_accounts_are_denied_as_existing_ones_are(authed):
    # What another account has does not leak: a function, alias, version or account that does
    # not exist gets the same 403 as one that exists and does not allow the caller.
    alice, bob = client(authed, ALICE), client(authed, BOB)
    name = k.unique_name("xnf")
    k.create(alice, name, k.rust_zip())
    refs = (arn(name), arn("no-such-function"), arn(name, "no-such-alias"), arn(name, "9"), arn(name, account="999999999999"))
    for ref in refs:
        resp = refused(lambda: bob.invoke(FunctionName=ref, Payload=b"{}"), "AccessDeniedException")
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 403, ref
        assert resp["Error"]["Message"] == denied_message(ref), resp["Error"]
    # The function itself, once its policy allows Bob, answers him.
    alice.add_permission(FunctionName=name, StatementId="bob", Action="lambda:InvokeFunction", Principal=BOB_ACCOUNT)
    resp, _ = k.invoke(bob, arn(name), {"action": "echo"})
    assert resp["StatusCode"] == 200


def test_other_operations_on_another_accounts_function_are_denied(authed):
    alice, bob = client(authed, ALICE), client(authed, BOB)
    name = k.unique_name("xops")
    k.create(alice, name, k.rust_zip())
    # Even with every action granted, only invocation crosses accounts.
    alice.add_permission(FunctionName=name, StatementId="all", Action="lambda:*", Principal=BOB_ACCOUNT)
    calls = [
        (lambda: bob.get_function(FunctionName=arn(name)), "lambda:GetFunction"),
        (lambda: bob.delete_function(FunctionName=arn(name)), "lambda:DeleteFunction"),
        (lambda: bob.get_function_configuration(FunctionName=arn(name)), "lambda:GetFunctionConfiguration"),
        (lambda: bob.get_policy(FunctionName=arn(name)), "lambda:GetPolicy"),
        (lambda: bob.update_function_configuration(FunctionName=arn(name), Description="bob was here"), "lambda:UpdateFunctionConfiguration"),
        (lambda: bob.add_permission(FunctionName=arn(name), StatementId="me", Action="lambda:InvokeFunction", Principal=BOB_ACCOUNT), "lambda:AddPermission"),
        (lambda: bob.list_tags(Resource=arn(name)), "lambda:ListTags"),
        (lambda: bob.get_function(FunctionName="%s:function:%s" % (ALICE_ACCOUNT, name)), "lambda:GetFunction"),
    ]
    for call, action in calls:
        resp = refused(call, "AccessDeniedException")
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert action in resp["Error"]["Message"] and ":%s:function:%s" % (ALICE_ACCOUNT, name) in resp["Error"]["Message"], resp
    # A function that does not exist gets the same answer: nothing is learnt by asking.
    resp = refused(lambda: bob.get_function(FunctionName=arn("no-such-function")), "AccessDeniedException")
    assert resp["Error"]["Message"] == denied_message(arn("no-such-function"), "lambda:GetFunction")
    cfg = alice.get_function(FunctionName=name)["Configuration"]
    assert cfg.get("Description", "") == ""
    policy = json.loads(alice.get_policy(FunctionName=name)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["all"]


def test_aws_cli_cross_account_invoke(authed, tmp_path):
    if AWS is None:
        pytest.skip("the `aws` CLI is not installed (pip install awscli)")
    alice = client(authed, ALICE)
    name = k.unique_name("xcli")
    k.create(alice, name, k.rust_zip())
    creds = tmp_path / "credentials"
    creds.write_text("[bob]\naws_access_key_id = %s\naws_secret_access_key = %s\n" % (BOB[0], BOB[1]))
    env = {v: val for v, val in os.environ.items() if not v.startswith("AWS_")}
    env.update({
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_DEFAULT_REGION": k.REGION,
        "AWS_PAGER": "",
        "AWS_MAX_ATTEMPTS": "1",
    })
    out = tmp_path / "out.json"

    def invoke():
        cmd = [AWS, "--endpoint-url", authed.endpoint, "--output", "json", "--profile", "bob", "lambda", "invoke",
               "--function-name", arn(name), "--payload", "{}", str(out)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    bad = invoke()
    assert bad.returncode != 0 and "AccessDeniedException" in bad.stderr, bad.stderr
    assert denied_message(arn(name)) in bad.stderr, bad.stderr
    alice.add_permission(FunctionName=name, StatementId="bob", Action="lambda:InvokeFunction", Principal=BOB_ACCOUNT)
    ok = invoke()
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["StatusCode"] == 200
    assert out.read_bytes()


def metrics_token(key):
    return "%s:%s" % (key[0], hmac.new(key[1].encode(), b"kiln metrics", hashlib.sha256).hexdigest())


def scrape(server, headers=None, url=None):
    req = urllib.request.Request(url or server.endpoint + "/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType", "")


def test_metrics_and_console_need_a_key_and_show_one_account(authed):
    alice, bob = client(authed, ALICE), client(authed, BOB)
    a_name, b_name = k.unique_name("ma"), k.unique_name("mb")
    k.create(alice, a_name, k.rust_zip())
    k.create(bob, b_name, k.rust_zip())
    k.invoke(alice, a_name, {})
    k.invoke(bob, b_name, {})
    # Unsigned, or with a token of a wrong secret or an unknown key: refused.
    assert scrape(authed) == (403, "MissingAuthenticationTokenException")
    assert scrape(authed, {"Authorization": "Bearer " + metrics_token((ALICE[0], "wrong"))}) == (403, "InvalidSignatureException")
    assert scrape(authed, {"Authorization": "Bearer " + metrics_token(("AKIANOBODY0000", "x"))}) == (403, "UnrecognizedClientException")
    # SigV4-signed by Alice: Alice's series only.
    status, text = scrape(authed, signed(authed, ALICE, "GET", "/metrics"))
    assert status == 200, text
    assert 'function="%s"' % a_name in text and b_name not in text, text[:2000]
    assert 'operation="Invoke"' in text
    # Bob's token: Bob's only.
    status, text = scrape(authed, {"Authorization": "Bearer " + metrics_token(BOB)})
    assert status == 200 and 'function="%s"' % b_name in text and a_name not in text, text[:2000]
    # A presigned URL for /metrics works too; an altered one does not.
    req = AWSRequest(method="GET", url=authed.endpoint + "/metrics")
    SigV4QueryAuth(Credentials(ALICE[0], ALICE[1]), "lambda", k.REGION, expires=60).add_auth(req)
    status, text = scrape(authed, url=req.url)
    assert status == 200 and 'function="%s"' % a_name in text and b_name not in text
    assert "X-Amz-Expires=60" in req.url
    assert scrape(authed, url=req.url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")) == (403, "InvalidSignatureException")

    # The console's page holds no data; everything it shows comes from signed API calls.
    status, _, _ = send(authed, "GET", "/kiln/v1/console")
    assert status == 200
    assert_refused(send(authed, "GET", "/kiln/v1/status"), "MissingAuthenticationTokenException")
    assert_refused(send(authed, "GET", "/kiln/v1/functions/%s/samples" % a_name), "MissingAuthenticationTokenException")
    path = "/kiln/v1/functions/%s/samples" % a_name
    status, _, body = send(authed, "GET", path, headers=signed(authed, ALICE, "GET", path))
    assert status == 200 and "Samples" in body
    status, _, body = send(authed, "GET", path, headers=signed(authed, BOB, "GET", path))
    assert status == 404 and body["Message"].startswith("Function not found"), body


def test_the_console_signs_in_with_a_key_and_shows_its_account(authed, browser):
    from selenium.webdriver.common.by import By

    alice, bob = client(authed, ALICE), client(authed, BOB)
    a_name, b_name = k.unique_name("ca"), k.unique_name("cb")
    k.create(alice, a_name, k.rust_zip())
    k.create(bob, b_name, k.rust_zip())
    browser.get(authed.endpoint + "/")
    wait(browser, lambda d: d.find_elements(By.ID, "signin-button"), "the sign-in card")
    # A wrong secret: refused, still signed out.
    browser.find_element(By.ID, "signin-key").send_keys(ALICE[0])
    browser.find_element(By.ID, "signin-secret").send_keys("not-the-secret")
    browser.find_element(By.ID, "signin-button").click()
    wait(browser, lambda d: "request signature we calculated does not match" in d.find_element(By.ID, "signin-error").text,
         "the signature error")
    # Alice's key: her function and not Bob's.
    browser.find_element(By.ID, "signin-key").clear()
    browser.find_element(By.ID, "signin-key").send_keys(ALICE[0])
    browser.find_element(By.ID, "signin-secret").clear()
    browser.find_element(By.ID, "signin-secret").send_keys(ALICE[1])
    browser.find_element(By.ID, "signin-button").click()
    row_css = 'tr[data-function="%s"]' % a_name
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row_css), "alice's function row")
    assert not browser.find_elements(By.CSS_SELECTOR, 'tr[data-function="%s"]' % b_name)
    # The function view: signed GETs with a query (samples), the signed log stream, a signed POST.
    browser.find_element(By.CSS_SELECTOR, row_css).click()
    wait(browser, lambda d: d.find_element(By.ID, "function-name").text == a_name, "the function view")
    payload = browser.find_element(By.ID, "invoke-payload")
    payload.clear()
    payload.send_keys(json.dumps({"action": "echo", "from": "signed console"}))
    browser.find_element(By.ID, "invoke-button").click()
    wait(browser, lambda d: d.find_element(By.ID, "invoke-status").text == "Succeeded", "the invoke result")
    assert json.loads(browser.find_element(By.ID, "invoke-output").text)["from"] == "signed console"
    wait(browser, lambda d: "START RequestId" in d.find_element(By.ID, "log").text, "the followed log")
