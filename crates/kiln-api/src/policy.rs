//! Resource-based policies of functions: AddPermission, RemovePermission and GetPolicy
//! (`/2015-03-31/functions/{name}/policy`), and Put/Get/DeleteResourcePolicy
//! (`/2026-07-09/resource-policy/{ARN}`) for functions, versions and aliases.

use crate::error::ApiError;
use crate::handlers::{empty, function_ref, ok_json, parse_json, read_body, small_too_large, Result, SMALL_BODY};
use crate::ReqBody;
use crate::{Body, Call};
use http::{Method, Request, Response, StatusCode};
use kiln_engine::{Engine, EngineError};
use kiln_model::policy::PermissionInput;
use kiln_model::FunctionRef;
use serde_json::json;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddPermissionIn {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    event_source_token: Option<String>,
    revision_id: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    principal_org_id: Option<String>,
    function_url_auth_type: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourcePolicyIn {
    policy: Option<String>,
    revision_id: Option<String>,
}

/// A `ResourceArn` of the resource-policy operations: a function, version or alias ARN.
/// Runtime ARNs match the model's pattern but kiln has none of them.
fn resource(arn: &str) -> Result<FunctionRef> {
    if arn.starts_with("arn:") && arn.contains(":runtime/") {
        return Err(EngineError::resource_not_found().into());
    }
    let full = arn.starts_with("arn:") && arn.split(':').nth(5) == Some("function");
    match FunctionRef::parse(arn, None) {
        Ok(r) if full => Ok(r),
        _ => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{arn}' at 'resourceArn' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{{2}}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{{1}}:\\d{{12}}:(function:[a-zA-Z0-9-_]+(:(\\$LATEST(\\.PUBLISHED)?|[a-zA-Z0-9-_])+)?|runtime/[a-zA-Z0-9-_./]+)"
        ))),
    }
}

pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    seg: &[&str],
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    match (method, seg) {
        (&Method::POST, ["2015-03-31", "functions", name, "policy"]) => {
            let r = function_ref(name, call)?;
            let body = read_body(req, SMALL_BODY, small_too_large).await?;
            let input: AddPermissionIn = parse_json(&body)?;
            let p = PermissionInput {
                statement_id: ApiError::required(input.statement_id, "statementId")?,
                action: ApiError::required(input.action, "action")?,
                principal: ApiError::required(input.principal, "principal")?,
                source_arn: input.source_arn,
                source_account: input.source_account,
                event_source_token: input.event_source_token,
                principal_org_id: input.principal_org_id,
                function_url_auth_type: input.function_url_auth_type,
            };
            let statement = engine.add_permission(&r, &p, input.revision_id.as_deref())?;
            ok_json(StatusCode::CREATED, json!({ "Statement": statement }))
        }
        (&Method::GET, ["2015-03-31", "functions", name, "policy"]) => {
            let (policy, revision) = engine.get_policy(&function_ref(name, call)?)?;
            ok_json(StatusCode::OK, json!({ "Policy": policy, "RevisionId": revision }))
        }
        (&Method::DELETE, ["2015-03-31", "functions", name, "policy", sid]) => {
            let r = function_ref(name, call)?;
            engine.remove_permission(&r, sid, call.query("RevisionId").filter(|s| !s.is_empty()))?;
            empty(StatusCode::NO_CONTENT)
        }
        (_, ["2026-07-09", "resource-policy", rest @ ..]) if !rest.is_empty() => {
            let arn = rest.join("/");
            let r = resource(&arn)?;
            match *method {
                Method::GET => {
                    let (policy, revision) = engine.get_policy(&r)?;
                    ok_json(StatusCode::OK, json!({ "Policy": policy, "RevisionId": revision }))
                }
                Method::PUT => {
                    let body = read_body(req, SMALL_BODY, small_too_large).await?;
                    let input: ResourcePolicyIn = parse_json(&body)?;
                    let doc = ApiError::required(input.policy, "policy")?;
                    let (policy, revision) = engine.put_resource_policy(&r, &doc, input.revision_id.as_deref())?;
                    ok_json(StatusCode::OK, json!({ "Policy": policy, "RevisionId": revision }))
                }
                Method::DELETE => {
                    engine.delete_resource_policy(&r, call.query("RevisionId").filter(|s| !s.is_empty()))?;
                    empty(StatusCode::NO_CONTENT)
                }
                _ => Err(ApiError::unknown_operation()),
            }
        }
        _ => Err(ApiError::unknown_operation()),
    }
}
