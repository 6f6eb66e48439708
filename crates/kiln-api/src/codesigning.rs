//! Code signing configs (`/2020-04-22/code-signing-configs`) and a function's config
//! (`/2020-06-30/functions/{name}/code-signing-config`). Stored and returned as Lambda does;
//! kiln cannot verify AWS Signer signatures, so a config never makes kiln refuse code.

use crate::error::ApiError;
use crate::handlers::{
    empty, marker, max_items, ok_json, page_json, parse_json, plain_name, read_body, small_too_large, Result,
    SMALL_BODY,
};
use crate::wire::timestamp;
use crate::ReqBody;
use crate::{Body, Call};
use http::{Method, Request, Response, StatusCode};
use kiln_engine::{CodeSigningInput, Engine};
use kiln_model::codesigning::CodeSigningConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishersIn {
    signing_profile_version_arns: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoliciesIn {
    untrusted_artifact_on_deployment: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigIn {
    description: Option<String>,
    allowed_publishers: Option<PublishersIn>,
    code_signing_policies: Option<PoliciesIn>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FunctionConfigIn {
    code_signing_config_arn: Option<String>,
}

fn input(c: ConfigIn, create: bool) -> Result<CodeSigningInput> {
    let arns = match c.allowed_publishers {
        Some(p) => Some(
            p.signing_profile_version_arns
                .ok_or_else(|| ApiError::null_member("allowedPublishers.signingProfileVersionArns"))?,
        ),
        None if create => return Err(ApiError::null_member("allowedPublishers")),
        None => None,
    };
    Ok(CodeSigningInput {
        description: c.description,
        signing_profile_version_arns: arns,
        untrusted_artifact_on_deployment: c.code_signing_policies.and_then(|p| p.untrusted_artifact_on_deployment),
        tags: c.tags,
    })
}

/// `CodeSigningConfig`.
fn config_json(c: &CodeSigningConfig) -> Value {
    json!({
        "CodeSigningConfigId": c.id,
        "CodeSigningConfigArn": c.arn,
        "Description": c.description,
        "AllowedPublishers": { "SigningProfileVersionArns": c.signing_profile_version_arns },
        "CodeSigningPolicies": { "UntrustedArtifactOnDeployment": c.untrusted_artifact_on_deployment },
        "LastModified": timestamp(c.last_modified_ms),
    })
}

pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    seg: &[&str],
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    match (method, seg) {
        (&Method::POST, ["2020-04-22", "code-signing-configs"]) => {
            let body = read_body(req, SMALL_BODY, small_too_large).await?;
            let c = engine.create_code_signing_config(input(parse_json(&body)?, true)?)?;
            ok_json(StatusCode::CREATED, json!({ "CodeSigningConfig": config_json(&c) }))
        }
        (&Method::GET, ["2020-04-22", "code-signing-configs"]) => {
            let page = engine.list_code_signing_configs(marker(call), max_items(call)?)?;
            let items = page.items.iter().map(config_json).collect();
            ok_json(StatusCode::OK, page_json("CodeSigningConfigs", items, page.next_marker))
        }
        (&Method::GET, ["2020-04-22", "code-signing-configs", arn]) => {
            let c = engine.get_code_signing_config(arn)?;
            ok_json(StatusCode::OK, json!({ "CodeSigningConfig": config_json(&c) }))
        }
        (&Method::PUT, ["2020-04-22", "code-signing-configs", arn]) => {
            let body = read_body(req, SMALL_BODY, small_too_large).await?;
            let c = engine.update_code_signing_config(arn, input(parse_json(&body)?, false)?)?;
            ok_json(StatusCode::OK, json!({ "CodeSigningConfig": config_json(&c) }))
        }
        (&Method::DELETE, ["2020-04-22", "code-signing-configs", arn]) => {
            engine.delete_code_signing_config(arn)?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["2020-04-22", "code-signing-configs", arn, "functions"]) => {
            let page = engine.functions_by_code_signing_config(arn, marker(call), max_items(call)?)?;
            let mut out = json!({ "FunctionArns": page.items });
            if let Some(m) = page.next_marker {
                out["NextMarker"] = json!(m);
            }
            ok_json(StatusCode::OK, out)
        }
        (&Method::PUT, ["2020-06-30", "functions", name, "code-signing-config"]) => {
            let n = plain_name(name)?;
            let body = read_body(req, SMALL_BODY, small_too_large).await?;
            let input: FunctionConfigIn = parse_json(&body)?;
            let arn = input.code_signing_config_arn.ok_or_else(|| ApiError::null_member("codeSigningConfigArn"))?;
            engine.put_function_code_signing_config(&n, &arn)?;
            ok_json(StatusCode::OK, json!({ "CodeSigningConfigArn": arn, "FunctionName": n.as_str() }))
        }
        (&Method::GET, ["2020-06-30", "functions", name, "code-signing-config"]) => {
            let n = plain_name(name)?;
            let out = match engine.function_code_signing_config(&n)? {
                Some(arn) => json!({ "CodeSigningConfigArn": arn, "FunctionName": n.as_str() }),
                None => json!({}),
            };
            ok_json(StatusCode::OK, out)
        }
        (&Method::DELETE, ["2020-06-30", "functions", name, "code-signing-config"]) => {
            engine.delete_function_code_signing_config(&plain_name(name)?)?;
            empty(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::unknown_operation()),
    }
}
