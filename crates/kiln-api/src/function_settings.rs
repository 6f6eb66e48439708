//! Per-function settings tools set as a matter of course: the recursion config
//! (`/2024-08-31/functions/{name}/recursion-config`) and the runtime-management config
//! (`/2021-07-20/functions/{name}/runtime-management-config`). Stored and returned as Lambda
//! does; kiln does not detect recursive loops, and its managed runtimes are the host's.

use crate::error::ApiError;
use crate::handlers::{function_ref, ok_json, parse_json, plain_name, read_body, small_too_large, Result, SMALL_BODY};
use crate::ReqBody;
use crate::{Body, Call};
use http::{Method, Request, Response, StatusCode};
use kiln_engine::{Engine, RuntimeManagement};
use serde_json::{json, Value};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecursionIn {
    recursive_loop: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeIn {
    update_runtime_on: Option<String>,
    runtime_version_arn: Option<String>,
}

fn runtime_json(m: &RuntimeManagement) -> Value {
    let mut v = json!({ "UpdateRuntimeOn": m.update_runtime_on, "FunctionArn": m.function_arn });
    if let Some(a) = &m.runtime_version_arn {
        v["RuntimeVersionArn"] = json!(a);
    }
    v
}

pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    seg: &[&str],
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    match (method, seg) {
        (&Method::GET, ["2024-08-31", "functions", name, "recursion-config"]) => {
            let value = engine.recursion(&plain_name(name)?)?;
            ok_json(StatusCode::OK, json!({ "RecursiveLoop": value }))
        }
        (&Method::PUT, ["2024-08-31", "functions", name, "recursion-config"]) => {
            let n = plain_name(name)?;
            let body = read_body(req, SMALL_BODY, small_too_large).await?;
            let input: RecursionIn = parse_json(&body)?;
            let value = engine
                .put_recursion(&n, &input.recursive_loop.ok_or_else(|| ApiError::null_member("recursiveLoop"))?)?;
            ok_json(StatusCode::OK, json!({ "RecursiveLoop": value }))
        }
        (&Method::GET, ["2021-07-20", "functions", name, "runtime-management-config"]) => {
            let m = engine.runtime_management(&function_ref(name, call)?)?;
            ok_json(StatusCode::OK, runtime_json(&m))
        }
        (&Method::PUT, ["2021-07-20", "functions", name, "runtime-management-config"]) => {
            let r = function_ref(name, call)?;
            let body = read_body(req, SMALL_BODY, small_too_large).await?;
            let input: RuntimeIn = parse_json(&body)?;
            let on = input.update_runtime_on.ok_or_else(|| ApiError::null_member("updateRuntimeOn"))?;
            let m = engine.put_runtime_management(&r, &on, input.runtime_version_arn.as_deref())?;
            ok_json(StatusCode::OK, runtime_json(&m))
        }
        _ => Err(ApiError::unknown_operation()),
    }
}
