//! TagResource, UntagResource and ListTags (`/2017-03-31/tags/{ARN}`): functions and code
//! signing configs. The engine checks the ARN, the limits and the reserved `aws:` prefix.

use crate::error::ApiError;
use crate::handlers::{empty, ok_json, parse_json, read_body, small_too_large, Result, SMALL_BODY};
use crate::ReqBody;
use crate::{Body, Call};
use http::{Method, Request, Response, StatusCode};
use kiln_engine::Engine;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagsIn {
    tags: Option<BTreeMap<String, String>>,
}

pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    seg: &[&str],
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    match (method, seg) {
        (&Method::GET, ["2017-03-31", "tags", arn]) => {
            ok_json(StatusCode::OK, json!({ "Tags": engine.list_tags(arn)? }))
        }
        (&Method::POST, ["2017-03-31", "tags", arn]) => {
            let body = read_body(req, SMALL_BODY, small_too_large).await?;
            let input: TagsIn = parse_json(&body)?;
            let tags = input.tags.ok_or_else(|| ApiError::null_member("tags"))?;
            if tags.is_empty() {
                return Err(ApiError::invalid_parameter("An error occurred and the request cannot be processed."));
            }
            engine.tag_resource(arn, &tags)?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::DELETE, ["2017-03-31", "tags", arn]) => {
            let keys: Vec<String> = call.query.iter().filter(|(k, _)| k == "tagKeys").map(|(_, v)| v.clone()).collect();
            if keys.is_empty() {
                return Err(ApiError::null_member("tagKeys"));
            }
            engine.untag_resource(arn, &keys)?;
            empty(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::unknown_operation()),
    }
}
