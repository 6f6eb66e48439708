//! The layer operations of the Lambda API (`/2018-10-31/layers…`) and the download of a layer's
//! zip (`/kiln/v1/layers/{name}/versions/{n}/content`, where `Content.Location` points).

use crate::error::ApiError;
use crate::handlers::{empty, marker, ok_json, parse_json, read_body};
use crate::wire::{self, timestamp};
use crate::ReqBody;
use crate::{full, Body, Call};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use kiln_engine::{Engine, PublishLayer};
use kiln_model::layers::{LayerStatement, LayerVersion};
use kiln_model::{limits, Partition};
use serde::Deserialize;
use serde_json::{json, Map, Value};

type Result<T> = std::result::Result<T, ApiError>;

/// Answers every `/2018-10-31/layers…` and `/kiln/v1/layers…` request.
pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    seg: &[&str],
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    match (method, seg) {
        (&Method::GET, ["2018-10-31", "layers"]) if call.query("find") == Some("LayerVersion") => {
            let arn = call.query("Arn").unwrap_or_default();
            let l = engine.get_layer_version_by_arn(arn)?;
            ok_json(StatusCode::OK, layer_json(engine.partition(), &l, &host(&req), true))
        }
        (&Method::GET, ["2018-10-31", "layers"]) => list_layers(engine, call),
        (&Method::POST, ["2018-10-31", "layers", name, "versions"]) => publish(engine, name, req).await,
        (&Method::GET, ["2018-10-31", "layers", name, "versions"]) => list_versions(engine, call, name),
        (&Method::GET, ["2018-10-31", "layers", name, "versions", n]) => {
            let l = engine.get_layer_version(name, version_number(n)?)?;
            ok_json(StatusCode::OK, layer_json(engine.partition(), &l, &host(&req), true))
        }
        (&Method::DELETE, ["2018-10-31", "layers", name, "versions", n]) => {
            engine.delete_layer_version(name, version_number(n)?).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["2018-10-31", "layers", name, "versions", n, "policy"]) => {
            add_permission(engine, call, name, n, req).await
        }
        (&Method::GET, ["2018-10-31", "layers", name, "versions", n, "policy"]) => {
            let (policy, rev) = engine.get_layer_version_policy(name, version_number(n)?)?;
            ok_json(StatusCode::OK, json!({ "Policy": policy, "RevisionId": rev }))
        }
        (&Method::DELETE, ["2018-10-31", "layers", name, "versions", n, "policy", sid]) => {
            engine.remove_layer_version_permission(name, version_number(n)?, sid, call.query("RevisionId"))?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["kiln", "v1", "layers", name, "versions", n, "content"]) => {
            let zip = engine.layer_zip(name, version_number(n)?).await?;
            let mut resp = Response::new(full(zip));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
            Ok(resp)
        }
        _ => Err(ApiError::unknown_operation()),
    }
}

fn host(req: &Request<ReqBody>) -> String {
    req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:9000").to_string()
}

fn version_number(n: &str) -> Result<i64> {
    n.parse::<i64>().map_err(|_| {
        ApiError::validation(format!(
            "1 validation error detected: Value '{n}' at 'versionNumber' failed to satisfy constraint: Member must be a number"
        ))
    })
}

/// `MaxItems` of the layer listings: 1 to 50.
fn max_items(call: &Call) -> Result<Option<usize>> {
    match call.query("MaxItems") {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=limits::LIST_PAGE_MAX).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::validation(format!(
                "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value less than or equal to 50"
            ))),
        },
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContentIn {
    zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    s3_bucket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishIn {
    content: Option<ContentIn>,
    description: Option<String>,
    license_info: Option<String>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
}

async fn publish(engine: &Engine, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let host = host(&req);
    let body = read_body(req, limits::CREATE_BODY_MAX_BYTES, || {
        limits::request_too_large_message(limits::CREATE_BODY_MAX_BYTES, Some("PublishLayerVersion"))
    })
    .await?;
    let input: PublishIn = parse_json(&body)?;
    let content = input.content.ok_or_else(|| ApiError::null_member("content"))?;
    if content.s3_bucket.is_some() {
        return Err(ApiError::invalid_parameter("kiln has no S3: upload the layer content inline as ZipFile"));
    }
    let zip = content
        .zip_file
        .as_deref()
        .ok_or_else(|| ApiError::invalid_parameter("Please provide a source for layer content."))?;
    let zip = wire::unb64(zip).ok_or_else(|| {
        ApiError::invalid_parameter("Could not unzip uploaded file. Please check your file, then try to upload again.")
    })?;
    let l = engine
        .publish_layer_version(PublishLayer {
            name: name.to_string(),
            zip,
            description: input.description,
            license_info: input.license_info,
            compatible_runtimes: input.compatible_runtimes.unwrap_or_default(),
            compatible_architectures: input.compatible_architectures.unwrap_or_default(),
        })
        .await?;
    ok_json(StatusCode::CREATED, layer_json(engine.partition(), &l, &host, true))
}

fn list_layers(engine: &Engine, call: &Call) -> Result<Response<Body>> {
    let max = max_items(call)?;
    let page =
        engine.list_layers(call.query("CompatibleRuntime"), call.query("CompatibleArchitecture"), marker(call), max)?;
    let p = engine.partition();
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|l| {
            json!({
                "LayerName": l.name,
                "LayerArn": p.layer_arn(&l.name),
                "LatestMatchingVersion": layer_json(p, l, "", false),
            })
        })
        .collect();
    let mut out = json!({ "Layers": items });
    if let Some(m) = page.next_marker {
        out["NextMarker"] = json!(m);
    }
    ok_json(StatusCode::OK, out)
}

fn list_versions(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let max = max_items(call)?;
    let page = engine.list_layer_versions(
        name,
        call.query("CompatibleRuntime"),
        call.query("CompatibleArchitecture"),
        marker(call),
        max,
    )?;
    let items: Vec<Value> = page.items.iter().map(|l| layer_json(engine.partition(), l, "", false)).collect();
    let mut out = json!({ "LayerVersions": items });
    if let Some(m) = page.next_marker {
        out["NextMarker"] = json!(m);
    }
    ok_json(StatusCode::OK, out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PermissionIn {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    organization_id: Option<String>,
}

async fn add_permission(
    engine: &Engine,
    call: &Call,
    name: &str,
    n: &str,
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    let version = version_number(n)?;
    let body = read_body(req, crate::handlers::SMALL_BODY, crate::handlers::small_too_large).await?;
    let input: PermissionIn = parse_json(&body)?;
    let statement = LayerStatement {
        sid: ApiError::required(input.statement_id, "statementId")?,
        action: ApiError::required(input.action, "action")?,
        principal: ApiError::required(input.principal, "principal")?,
        organization_id: input.organization_id,
    };
    let (rendered, rev) = engine.add_layer_version_permission(name, version, statement, call.query("RevisionId"))?;
    ok_json(StatusCode::CREATED, json!({ "Statement": rendered.to_string(), "RevisionId": rev }))
}

/// A layer version as PublishLayerVersion and GetLayerVersion return it (`full`, with
/// `Content` and `LayerArn`), or as the listings show it.
fn layer_json(p: &Partition, l: &LayerVersion, host: &str, full: bool) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    if full {
        put(
            "Content",
            json!({
                "Location": format!("http://{host}/kiln/v1/layers/{}/versions/{}/content", l.name, l.version),
                "CodeSha256": l.code_sha256,
                "CodeSize": l.code_size,
            }),
        );
        put("LayerArn", json!(p.layer_arn(&l.name)));
    }
    put("LayerVersionArn", json!(p.layer_version_arn(&l.name, l.version)));
    put("Description", json!(l.description));
    put("CreatedDate", json!(timestamp(l.created_ms)));
    put("Version", json!(l.version));
    if !l.compatible_runtimes.is_empty() {
        put("CompatibleRuntimes", json!(l.compatible_runtimes));
    }
    if !l.compatible_architectures.is_empty() {
        put("CompatibleArchitectures", json!(l.compatible_architectures));
    }
    if let Some(li) = &l.license_info {
        put("LicenseInfo", json!(li));
    }
    Value::Object(m)
}
