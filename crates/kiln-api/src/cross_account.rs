//! Requests that name another account's resources (with `--auth-keys`).
//!
//! Accounts are engines of their own, so a name alone never reaches another account: only an
//! ARN (`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`) or the partial form
//! `<account>:function:<name>[:<qualifier>]` can. Such a request is answered here, as Lambda
//! answers a caller without identity policies in the resource's account:
//!
//! - `Invoke` (every invocation type, `DryRun` too) and `InvokeWithResponseStream` on a
//!   function of another account go to that account's engine when the resource policy of what
//!   they name (the function for an unqualified name, else that version or alias: a permission
//!   added with a qualifier covers only that qualifier, one added without covers only the
//!   unqualified function) allows `lambda:InvokeFunction` for the caller's account. Otherwise
//!   `AccessDeniedException` (403). A function, version or alias that does not exist, or an
//!   account kiln does not have, has no policy that could allow the caller: the same
//!   `AccessDeniedException`, so that a caller learns nothing about what another account has
//!   (as IAM answers: a cross-account request needs an allowing resource-based policy, and a
//!   resource that does not exist has none).
//! - Every other operation naming another account's resource is `AccessDeniedException` without
//!   looking at the resource: kiln grants nothing but invocation across accounts, and the answer
//!   is the same whether the resource exists or not.
//!
//! The caller is `arn:aws:iam::<account>:root`: a kiln key acts with all the rights of its
//! account, as an account's root keys do.

use crate::accounts::{self, Accounts};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::{error_response, route, Body, ReqBody};
use http::{HeaderValue, Method, Request, Response};
use kiln_engine::EngineError;
use kiln_model::FunctionRef;

/// The IAM action of invoking a function (Invoke and InvokeWithResponseStream alike).
pub const INVOKE_ACTION: &str = "lambda:InvokeFunction";

/// Answers a request that names `foreign` (a decoded path segment or query value naming an
/// account other than the caller's).
pub(crate) async fn answer(
    accounts: &Accounts,
    caller: &Principal,
    foreign: &str,
    req: Request<ReqBody>,
) -> Response<Body> {
    let segments: Vec<String> =
        req.uri().path().split('/').filter(|s| !s.is_empty()).map(crate::percent_decode).collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let invoked = match (req.method(), seg.as_slice()) {
        (
            &Method::POST,
            ["2015-03-31", "functions", name, "invocations"]
            | ["2021-11-15", "functions", name, "response-streaming-invocations"],
        ) => (*name == foreign).then_some(*name),
        _ => None,
    };
    let resp = match invoked {
        Some(name) => {
            let qualifier = query_value(req.uri().query().unwrap_or(""), "Qualifier");
            match invoke_target(accounts, caller, name, qualifier.as_deref()) {
                Ok(engine) => return route(&engine, req).await,
                Err(e) => error_response(&e),
            }
        }
        None => {
            let action = iam_action(req.method(), &seg);
            let resource = full_arn(foreign, accounts.region());
            tracing::debug!(caller = %caller.account_id, action, resource, "cross-account request refused");
            error_response(&access_denied(&caller.account_id, action, &resource))
        }
    };
    with_request_id(resp)
}

/// The engine of the account that owns the function `name` names, when its policy lets
/// `caller` invoke it.
fn invoke_target(
    accounts: &Accounts,
    caller: &Principal,
    name: &str,
    qualifier: Option<&str>,
) -> Result<kiln_engine::Engine, ApiError> {
    let r = FunctionRef::parse(name, qualifier)?;
    let owner = accounts::named_account(name).unwrap_or_default();
    let q = r.qualifier.as_ref().map(ToString::to_string);
    let arn = kiln_model::Partition { region: accounts.region().to_string(), account_id: owner.to_string() }
        .function_arn(r.name.as_str(), q.as_deref());
    let denied = || access_denied(&caller.account_id, INVOKE_ACTION, &arn);
    let Some(engine) = accounts.engine(owner).filter(|_| accounts.keys().accounts().contains_key(owner)) else {
        return Err(denied());
    };
    let policy = match engine.resource_policy(&r) {
        Ok(policy) => policy,
        // Nothing to allow the caller: answered as a resource that does not allow it.
        Err(EngineError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let allowed =
        policy.as_deref().is_some_and(|p| kiln_model::policy::allows(p, &caller.account_id, INVOKE_ACTION, None));
    if allowed {
        tracing::debug!(caller = %caller.account_id, owner, function = %r.name, "cross-account invocation allowed");
        return Ok(engine);
    }
    Err(denied())
}

/// Lambda's answer to a caller that no policy allows.
pub fn access_denied(caller_account: &str, action: &str, resource: &str) -> ApiError {
    ApiError::new(
        403,
        crate::error::code::ACCESS_DENIED,
        format!(
            "User: arn:aws:iam::{caller_account}:root is not authorized to perform: {action} on resource: {resource} because no resource-based policy allows the {action} action"
        ),
    )
}

/// `<account>:function:<name>…` as a whole ARN; ARNs stay as they are.
fn full_arn(value: &str, region: &str) -> String {
    if value.starts_with("arn:") {
        value.to_string()
    } else {
        format!("arn:aws:lambda:{region}:{value}")
    }
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| crate::percent_decode(k) == key)
        .map(|(_, v)| crate::percent_decode(v))
}

fn with_request_id(mut r: Response<Body>) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        r.headers_mut().insert(crate::wire::REQUEST_ID, v);
    }
    r
}

/// The IAM action of a request, for the message of a refusal.
pub fn iam_action(method: &Method, seg: &[&str]) -> &'static str {
    use Method as M;
    let action = match (method, seg) {
        (&M::POST, [_, "functions", _, "invocations" | "response-streaming-invocations"]) => "InvokeFunction",
        (&M::POST, [_, "functions", _, "invoke-async"]) => "InvokeAsync",
        (&M::POST, [_, "functions", _, "policy"]) => "AddPermission",
        (&M::GET, [_, "functions", _, "policy"]) => "GetPolicy",
        (&M::DELETE, [_, "functions", _, "policy", _]) => "RemovePermission",
        (&M::PUT, ["2026-07-09", "resource-policy", ..]) => "PutResourcePolicy",
        (&M::GET, ["2026-07-09", "resource-policy", ..]) => "GetResourcePolicy",
        (&M::DELETE, ["2026-07-09", "resource-policy", ..]) => "DeleteResourcePolicy",
        (&M::GET, [_, "tags", _]) => "ListTags",
        (&M::POST, [_, "tags", _]) => "TagResource",
        (&M::DELETE, [_, "tags", _]) => "UntagResource",
        (&M::GET, [_, "layers", _, "versions", _] | [_, "layers"]) => "GetLayerVersion",
        (&M::GET, [_, "layers", _, "versions"]) => "ListLayerVersions",
        (&M::DELETE, [_, "layers", _, "versions", _]) => "DeleteLayerVersion",
        (&M::POST, [_, "layers", _, "versions"]) => "PublishLayerVersion",
        (&M::POST, [_, "layers", _, "versions", _, "policy"]) => "AddLayerVersionPermission",
        (&M::GET, [_, "layers", _, "versions", _, "policy"]) => "GetLayerVersionPolicy",
        (&M::DELETE, [_, "layers", _, "versions", _, "policy", _]) => "RemoveLayerVersionPermission",
        (&M::PUT | &M::POST, [_, "functions", _, "event-invoke-config"]) => "PutFunctionEventInvokeConfig",
        (&M::GET, [_, "functions", _, "event-invoke-config", ..]) => "GetFunctionEventInvokeConfig",
        (&M::DELETE, [_, "functions", _, "event-invoke-config"]) => "DeleteFunctionEventInvokeConfig",
        (&M::GET, [_, "event-source-mappings"]) => "ListEventSourceMappings",
        (&M::PUT, [_, "functions", _, "code-signing-config"]) => "PutFunctionCodeSigningConfig",
        (&M::GET, [_, "functions", _, "code-signing-config"]) => "GetFunctionCodeSigningConfig",
        (&M::DELETE, [_, "functions", _, "code-signing-config"]) => "DeleteFunctionCodeSigningConfig",
        (&M::GET, [_, "functions", _, "recursion-config"]) => "GetFunctionRecursionConfig",
        (&M::PUT, [_, "functions", _, "recursion-config"]) => "PutFunctionRecursionConfig",
        (&M::GET, [_, "functions", _, "runtime-management-config"]) => "GetRuntimeManagementConfig",
        (&M::PUT, [_, "functions", _, "runtime-management-config"]) => "PutRuntimeManagementConfig",
        _ => match crate::metrics::operation(method, seg) {
            "Unknown" | "Metrics" | "Console" | "CloudWatchLogs" => "*",
            op if op.starts_with("Kiln") => "*",
            op => op,
        },
    };
    // `lambda:` + the action, from a fixed set (the strings above and the operation names).
    match action {
        "*" => "lambda:*",
        a => ACTIONS.iter().find(|x| x[7..] == *a).copied().unwrap_or("lambda:*"),
    }
}

/// Every IAM action [`iam_action`] may name.
const ACTIONS: &[&str] = &[
    "lambda:InvokeFunction",
    "lambda:InvokeAsync",
    "lambda:AddPermission",
    "lambda:GetPolicy",
    "lambda:RemovePermission",
    "lambda:PutResourcePolicy",
    "lambda:GetResourcePolicy",
    "lambda:DeleteResourcePolicy",
    "lambda:ListTags",
    "lambda:TagResource",
    "lambda:UntagResource",
    "lambda:GetLayerVersion",
    "lambda:ListLayerVersions",
    "lambda:DeleteLayerVersion",
    "lambda:PublishLayerVersion",
    "lambda:AddLayerVersionPermission",
    "lambda:GetLayerVersionPolicy",
    "lambda:RemoveLayerVersionPermission",
    "lambda:PutFunctionEventInvokeConfig",
    "lambda:GetFunctionEventInvokeConfig",
    "lambda:DeleteFunctionEventInvokeConfig",
    "lambda:ListEventSourceMappings",
    "lambda:PutFunctionCodeSigningConfig",
    "lambda:GetFunctionCodeSigningConfig",
    "lambda:DeleteFunctionCodeSigningConfig",
    "lambda:GetFunctionRecursionConfig",
    "lambda:PutFunctionRecursionConfig",
    "lambda:GetRuntimeManagementConfig",
    "lambda:PutRuntimeManagementConfig",
    "lambda:CreateFunction",
    "lambda:ListFunctions",
    "lambda:GetFunction",
    "lambda:DeleteFunction",
    "lambda:GetFunctionConfiguration",
    "lambda:UpdateFunctionConfiguration",
    "lambda:UpdateFunctionCode",
    "lambda:PublishVersion",
    "lambda:ListVersionsByFunction",
    "lambda:CreateAlias",
    "lambda:ListAliases",
    "lambda:GetAlias",
    "lambda:UpdateAlias",
    "lambda:DeleteAlias",
    "lambda:PutFunctionConcurrency",
    "lambda:GetFunctionConcurrency",
    "lambda:DeleteFunctionConcurrency",
    "lambda:PutProvisionedConcurrencyConfig",
    "lambda:GetProvisionedConcurrencyConfig",
    "lambda:DeleteProvisionedConcurrencyConfig",
    "lambda:GetAccountSettings",
    "lambda:CreateFunctionUrlConfig",
    "lambda:GetFunctionUrlConfig",
    "lambda:UpdateFunctionUrlConfig",
    "lambda:DeleteFunctionUrlConfig",
    "lambda:ListFunctionUrlConfigs",
    "lambda:InvokeFunctionUrl",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_as_iam_names_them() {
        let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
        let cases: &[(&str, &[&str], &str)] = &[
            ("POST", &["2015-03-31", "functions", "x", "invocations"], "lambda:InvokeFunction"),
            ("POST", &["2021-11-15", "functions", "x", "response-streaming-invocations"], "lambda:InvokeFunction"),
            ("GET", &["2015-03-31", "functions", "x"], "lambda:GetFunction"),
            ("DELETE", &["2015-03-31", "functions", "x"], "lambda:DeleteFunction"),
            ("GET", &["2015-03-31", "functions", "x", "policy"], "lambda:GetPolicy"),
            ("GET", &["2017-03-31", "tags", "x"], "lambda:ListTags"),
            ("GET", &["2018-10-31", "layers"], "lambda:GetLayerVersion"),
            ("GET", &["2018-10-31", "layers", "l", "versions", "1"], "lambda:GetLayerVersion"),
            ("GET", &["kiln", "v1", "functions", "x", "logs"], "lambda:*"),
            ("PATCH", &["nothing"], "lambda:*"),
        ];
        for (method, seg, want) in cases {
            assert_eq!(iam_action(&m(method), seg), *want, "{method} {seg:?}");
        }
    }

    #[test]
    fn refusals_say_who_what_and_where() {
        let e = access_denied("222222222222", INVOKE_ACTION, "arn:aws:lambda:us-east-1:111111111111:function:f:prod");
        assert_eq!((e.status, e.code), (403, "AccessDeniedException"));
        assert_eq!(
            e.message,
            "User: arn:aws:iam::222222222222:root is not authorized to perform: lambda:InvokeFunction on resource: arn:aws:lambda:us-east-1:111111111111:function:f:prod because no resource-based policy allows the lambda:InvokeFunction action"
        );
        assert_eq!(
            full_arn("111111111111:function:f", "eu-west-1"),
            "arn:aws:lambda:eu-west-1:111111111111:function:f"
        );
        assert_eq!(full_arn("arn:aws:lambda:us-east-1:1:layer:l:1", "x"), "arn:aws:lambda:us-east-1:1:layer:l:1");
        assert_eq!(query_value("a=1&Qualifier=%24LATEST", "Qualifier").as_deref(), Some("$LATEST"));
        assert_eq!(query_value("a=1", "Qualifier"), None);
    }
}
