//! One handler per operation.

mod events;

use crate::error::ApiError;
use crate::wire::{self, function_configuration};
use crate::ReqBody;
use crate::{full, Body, Call, ChannelBody};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kiln_engine::{
    AliasInput, ConfigChange, CreateFunction, Engine, InvokeKind, InvokeRequest, ProvisionedStatus, UpdateCode,
    UpdateConfig,
};
use kiln_model::config::AliasConfig;
use kiln_model::FunctionName;
use kiln_model::{limits, FunctionRef};
use serde_json::json;

pub(crate) type Result<T> = std::result::Result<T, ApiError>;

/// Bodies of operations other than code uploads and invokes are small.
pub(crate) const SMALL_BODY: usize = 1024 * 1024;

/// The refusal of a small body over [`SMALL_BODY`].
pub(crate) fn small_too_large() -> String {
    limits::request_too_large_message(SMALL_BODY, None)
}

pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    let seg: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match (method, seg.as_slice()) {
        (&Method::POST, ["2015-03-31", "functions"]) => create_function(engine, req).await,
        (&Method::GET, ["2015-03-31", "functions"]) => list_functions(engine, call),
        (&Method::GET, ["2015-03-31", "functions", name]) => get_function(engine, call, name, req),
        (&Method::DELETE, ["2015-03-31", "functions", name]) => delete_function(engine, call, name).await,
        (&Method::GET, ["2015-03-31", "functions", name, "configuration"]) => {
            let r = function_ref(name, call)?;
            ok_json(StatusCode::OK, function_configuration(&*engine.get_function(&r)?, engine.partition(), false))
        }
        (&Method::PUT, ["2015-03-31", "functions", name, "configuration"]) => {
            update_configuration(engine, call, name, req).await
        }
        (&Method::PUT, ["2015-03-31", "functions", name, "code"]) => update_code(engine, call, name, req).await,
        (&Method::POST, ["2015-03-31", "functions", name, "invocations"]) => invoke(engine, call, name, req).await,
        (&Method::POST, ["2021-11-15", "functions", name, "response-streaming-invocations"]) => {
            crate::stream::invoke_with_response_stream(engine, call, name, req).await
        }
        (&Method::POST, ["2015-03-31", "functions", name, "versions"]) => {
            publish_version(engine, call, name, req).await
        }
        (&Method::GET, ["2015-03-31", "functions", name, "versions"]) => list_versions(engine, call, name),
        (&Method::POST, ["2015-03-31", "functions", name, "aliases"]) => create_alias(engine, name, req).await,
        (&Method::GET, ["2015-03-31", "functions", name, "aliases"]) => list_aliases(engine, call, name),
        (&Method::GET, ["2015-03-31", "functions", name, "aliases", alias]) => {
            let n = plain_name(name)?;
            ok_json(StatusCode::OK, alias_json(engine, &n, &engine.get_alias(&n, alias)?))
        }
        (&Method::PUT, ["2015-03-31", "functions", name, "aliases", alias]) => {
            update_alias(engine, name, alias, req).await
        }
        (&Method::DELETE, ["2015-03-31", "functions", name, "aliases", alias]) => {
            engine.delete_alias(&plain_name(name)?, alias)?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::PUT, ["2017-10-31", "functions", name, "concurrency"]) => put_concurrency(engine, name, req).await,
        (&Method::GET, ["2019-09-30", "functions", name, "concurrency"]) => {
            let out = match engine.reserved_concurrency(&plain_name(name)?)? {
                Some(r) => json!({ "ReservedConcurrentExecutions": r }),
                None => json!({}),
            };
            ok_json(StatusCode::OK, out)
        }
        (&Method::DELETE, ["2017-10-31", "functions", name, "concurrency"]) => {
            engine.delete_reserved_concurrency(&plain_name(name)?)?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::PUT, ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
            put_provisioned(engine, call, name, req).await
        }
        (&Method::GET, ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
            get_provisioned(engine, call, name)
        }
        (&Method::DELETE, ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
            engine.delete_provisioned(&function_ref(name, call)?)?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["2016-08-19", "account-settings"]) => account_settings(engine),
        (_, ["2021-10-31", ..]) => crate::urls::dispatch(engine, method, call, &seg, req).await,
        (_, ["2018-10-31", "layers", ..] | ["kiln", "v1", "layers", ..]) => {
            crate::layers::dispatch(engine, method, call, &seg, req).await
        }
        (_, ["2017-03-31", "tags", ..]) => crate::tags::dispatch(engine, method, call, &seg, req).await,
        (_, ["2015-03-31", "functions", _, "policy", ..] | ["2026-07-09", "resource-policy", ..]) => {
            crate::policy::dispatch(engine, method, call, &seg, req).await
        }
        (_, ["2020-04-22", "code-signing-configs", ..] | ["2020-06-30", "functions", _, "code-signing-config"]) => {
            crate::codesigning::dispatch(engine, method, call, &seg, req).await
        }
        (
            _,
            ["2024-08-31", "functions", _, "recursion-config"]
            | ["2021-07-20", "functions", _, "runtime-management-config"],
        ) => crate::function_settings::dispatch(engine, method, call, &seg, req).await,
        (&Method::GET, ["kiln", "v1", "status"]) => status(engine, None),
        (&Method::GET, ["kiln", "v1", "runtimes"]) => ok_json(StatusCode::OK, crate::runtimes::listing(engine)),
        (&Method::GET, ["kiln", "v1", "functions", name, "code"]) => code_zip(engine, call, name).await,
        (&Method::GET, ["kiln", "v1", "functions", name, "logs"]) => logs(engine, call, name).await,
        (&Method::GET, ["kiln", "v1", "functions", name, "environments"]) => status(engine, Some(name)),
        (&Method::GET, ["kiln", "v1", "functions", name, "samples"]) => crate::console::samples(engine, call, name),
        _ => events::dispatch(engine, method, call, &seg, req).await,
    }
}

pub(crate) fn function_ref(name: &str, call: &Call) -> Result<FunctionRef> {
    Ok(FunctionRef::parse(name, call.query("Qualifier"))?)
}

pub(crate) fn ok_json(status: StatusCode, v: serde_json::Value) -> Result<Response<Body>> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

pub(crate) fn empty(status: StatusCode) -> Result<Response<Body>> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    Ok(r)
}

/// Reads a body of at most `limit` bytes; `too_large` is the message when it is bigger.
pub(crate) async fn read_body(
    req: Request<ReqBody>,
    limit: usize,
    too_large: impl FnOnce() -> String,
) -> Result<Bytes> {
    // A declared Content-Length over the limit is refused before reading anything.
    if hyper::body::Body::size_hint(req.body()).lower() > limit as u64 {
        return Err(ApiError::too_large(too_large()));
    }
    match crate::timeouts::read_limited(req.into_body(), limit).await {
        Ok(b) => Ok(b),
        Err(crate::timeouts::BodyError::TooLarge) => Err(ApiError::too_large(too_large())),
        Err(crate::timeouts::BodyError::TimedOut) => {
            Err(ApiError::invalid_content("The request body was not received in time"))
        }
        Err(crate::timeouts::BodyError::Broken) => Err(ApiError::invalid_content("The request body could not be read")),
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_content(format!("The request body could not be parsed as JSON: {e}")))
}

fn decode_zip(code: &wire::CodeIn) -> Result<Vec<u8>> {
    if code.s3_bucket.is_some() {
        return Err(ApiError::invalid_parameter("kiln has no S3: upload the deployment package inline as ZipFile"));
    }
    if code.image_uri.is_some() {
        return Err(ApiError::invalid_parameter("kiln runs .zip packages only; container images are not supported"));
    }
    let zip = code
        .zip_file
        .as_deref()
        .ok_or_else(|| ApiError::invalid_parameter("Please provide a source for function code."))?;
    wire::unb64(zip).ok_or_else(|| {
        ApiError::invalid_parameter("Could not unzip uploaded file. Please check your file, then try to upload again.")
    })
}

/// The configuration members of a CreateFunction or UpdateFunctionConfiguration body.
fn config_change(mut cfg: wire::ConfigIn) -> ConfigChange {
    let passthrough = cfg.passthrough();
    // `Layers` is acted on, not passed through.
    ConfigChange {
        runtime: cfg.runtime,
        role: cfg.role,
        handler: cfg.handler,
        description: cfg.description,
        timeout_secs: cfg.timeout,
        memory_mb: cfg.memory_size,
        environment: cfg.environment.map(|e| e.variables.unwrap_or_default()),
        ephemeral_storage_mb: cfg.ephemeral_storage.and_then(|s| s.size),
        tracing_mode: cfg.tracing_config.and_then(|t| t.mode),
        log_format: cfg.logging_config.as_ref().and_then(|l| l.log_format.clone()),
        application_log_level: cfg.logging_config.as_ref().and_then(|l| l.application_log_level.clone()),
        system_log_level: cfg.logging_config.as_ref().and_then(|l| l.system_log_level.clone()),
        log_group: cfg.logging_config.and_then(|l| l.log_group),
        layers: cfg.layers,
        passthrough,
    }
}

fn create_too_large() -> String {
    limits::request_too_large_message(limits::CREATE_BODY_MAX_BYTES, Some("CreateFunction"))
}

async fn create_function(engine: &Engine, req: Request<ReqBody>) -> Result<Response<Body>> {
    let body = read_body(req, limits::CREATE_BODY_MAX_BYTES, create_too_large).await?;
    let mut input: wire::CreateFunctionIn = parse_json(&body)?;
    let name = input.function_name.take().ok_or_else(|| ApiError::null_member("functionName"))?;
    if input.config.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(ApiError::invalid_parameter("kiln runs .zip packages only; container images are not supported"));
    }
    let code = input.code.take().ok_or_else(|| ApiError::null_member("code"))?;
    let zip = decode_zip(&code)?;
    // Tags and the code signing config are checked before the function exists.
    let tags = input.tags.take().unwrap_or_default();
    kiln_model::tags::validate(&tags)?;
    let csc = input.code_signing_config_arn.take();
    if let Some(arn) = &csc {
        engine.get_code_signing_config(arn).map_err(|e| match e {
            kiln_engine::EngineError::NotFound(_) => ApiError::code_signing_config_missing(arn),
            e => e.into(),
        })?;
    }
    let created = engine
        .create_function(CreateFunction {
            name,
            architectures: input.architectures,
            zip,
            publish: input.publish.unwrap_or(false),
            config: config_change(input.config),
        })
        .await?;
    if !tags.is_empty() {
        engine.set_created_tags(&created.name, &tags)?;
    }
    if let Some(arn) = &csc {
        engine.put_function_code_signing_config(&created.name, arn)?;
    }
    ok_json(StatusCode::CREATED, function_configuration(&created, engine.partition(), false))
}

/// `{"<key>": [...], "NextMarker": "..."}`, the shape of every Lambda listing.
pub(crate) fn page_json(key: &str, items: Vec<serde_json::Value>, next_marker: Option<String>) -> serde_json::Value {
    let mut out = json!({ key: items });
    if let Some(m) = next_marker {
        out["NextMarker"] = json!(m);
    }
    out
}

pub(crate) fn marker(call: &Call) -> Option<&str> {
    call.query("Marker").filter(|m| !m.is_empty())
}

pub(crate) fn max_items(call: &Call) -> Result<Option<usize>> {
    match call.query("MaxItems") {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::validation(format!(
                "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 10000"
            ))),
        },
    }
}

fn list_functions(engine: &Engine, call: &Call) -> Result<Response<Body>> {
    let max_items = max_items(call)?;
    let all = call.query("FunctionVersion") == Some("ALL");
    let page = engine.list_functions(marker(call), max_items, all);
    let functions: Vec<serde_json::Value> =
        page.items.iter().map(|c| function_configuration(c, engine.partition(), true)).collect();
    ok_json(StatusCode::OK, page_json("Functions", functions, page.next_marker))
}

fn get_function(engine: &Engine, call: &Call, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let cfg = engine.get_function(&r)?;
    let host =
        req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:9000").to_string();
    let mut out = json!({
        "Configuration": function_configuration(&cfg, engine.partition(), false),
        "Code": {
            "RepositoryType": "S3",
            "Location": format!("http://{host}/kiln/v1/functions/{}/code?Qualifier={}", cfg.name, cfg.version.to_string().replace('$', "%24")),
        },
    });
    let tags = engine.function_tags(&r.name)?;
    if !tags.is_empty() {
        out["Tags"] = json!(tags);
    }
    if let Some(r) = engine.reserved_concurrency(&r.name)? {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": r });
    }
    ok_json(StatusCode::OK, out)
}

async fn delete_function(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    engine.delete_function(&r).await?;
    empty(StatusCode::NO_CONTENT)
}

async fn update_configuration(
    engine: &Engine,
    call: &Call,
    name: &str,
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let mut cfg: wire::ConfigIn = parse_json(&body)?;
    let revision_id = cfg.revision_id.take();
    let updated = engine.update_config(&r, UpdateConfig { config: config_change(cfg), revision_id }).await?;
    ok_json(StatusCode::OK, function_configuration(&updated, engine.partition(), false))
}

async fn update_code(engine: &Engine, call: &Call, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let body = read_body(req, limits::CREATE_BODY_MAX_BYTES, || {
        limits::request_too_large_message(limits::CREATE_BODY_MAX_BYTES, Some("UpdateFunctionCode"))
    })
    .await?;
    let input: wire::UpdateCodeIn = parse_json(&body)?;
    let zip = decode_zip(&input.code)?;
    let updated = engine
        .update_code(
            &r,
            UpdateCode {
                zip,
                architectures: input.architectures,
                revision_id: input.revision_id,
                dry_run: input.dry_run.unwrap_or(false),
                publish: input.publish.unwrap_or(false),
            },
        )
        .await?;
    ok_json(StatusCode::OK, function_configuration(&updated, engine.partition(), false))
}

/// The `X-Amz-Log-Type` header of Invoke and InvokeWithResponseStream: whether to tail the log.
pub(crate) fn log_type(value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("None") => Ok(false),
        Some("Tail") => Ok(true),
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: Member must satisfy enum value set: [None, Tail]"
        ))),
    }
}

/// The `X-Amz-Client-Context` header: base64 of a JSON object, handed to the function decoded.
pub(crate) fn client_context(value: Option<String>) -> Result<Option<String>> {
    let Some(cc) = value else { return Ok(None) };
    wire::unb64(&cc)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| serde_json::from_str::<serde_json::Value>(s).is_ok())
        .map(Some)
        .ok_or_else(|| ApiError::invalid_parameter("Client context must be a valid Base64-encoded JSON object."))
}

async fn invoke(engine: &Engine, call: &Call, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let kind = match header(wire::INVOCATION_TYPE).as_deref() {
        None | Some("RequestResponse") => InvokeKind::RequestResponse,
        Some("Event") => InvokeKind::Event,
        Some("DryRun") => InvokeKind::DryRun,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )))
        }
    };
    let tail_logs = log_type(header(wire::LOG_TYPE).as_deref())?;
    let client_context = client_context(header(wire::CLIENT_CONTEXT))?;
    let limit = limits::SYNC_PAYLOAD_MAX_BYTES;
    let payload = read_body(req, limit, || limits::request_too_large_message(limit, Some("InvokeFunction"))).await?;
    let payload = event_payload(payload)?;
    let out = engine.invoke(InvokeRequest { function: r, kind, payload, tail_logs, client_context }).await?;
    let (status, body) = match kind {
        InvokeKind::RequestResponse => (StatusCode::OK, out.payload),
        InvokeKind::Event => (StatusCode::ACCEPTED, Bytes::new()),
        InvokeKind::DryRun => (StatusCode::NO_CONTENT, Bytes::new()),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&out.request_id) {
        h.insert(wire::REQUEST_ID, v);
    }
    if kind == InvokeKind::RequestResponse {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&out.executed_version) {
            h.insert(wire::EXECUTED_VERSION, v);
        }
        if out.function_error {
            h.insert(wire::FUNCTION_ERROR, HeaderValue::from_static("Unhandled"));
        }
        if let Some(tail) = out.log_tail {
            if let Ok(v) = HeaderValue::from_str(&wire::b64(&tail)) {
                h.insert(wire::LOG_RESULT, v);
            }
        }
    }
    Ok(resp)
}

fn account_settings(engine: &Engine) -> Result<Response<Body>> {
    let a = engine.account_settings();
    ok_json(
        StatusCode::OK,
        json!({
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800u64,
                "CodeSizeUnzipped": limits::UNZIPPED_MAX_BYTES,
                "CodeSizeZipped": limits::ZIP_MAX_BYTES,
                "ConcurrentExecutions": a.concurrency_limit,
                "UnreservedConcurrentExecutions": a.unreserved,
            },
            "AccountUsage": { "TotalCodeSize": a.total_code_size, "FunctionCount": a.function_count },
        }),
    )
}

async fn code_zip(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let zip = engine.function_zip(&r).await?;
    let mut resp = Response::new(full(zip));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    Ok(resp)
}

/// The function's log: every stored stream, oldest first; with `follow=true`, then the live
/// lines as they come, until the client hangs up. Files are read a chunk at a time.
async fn logs(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let follow = matches!(call.query("follow"), Some("true" | "1"));
    engine.get_function(&r)?;
    // Lines still on their way to the files are written first.
    engine.logs().flush().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    // Subscribe before reading the files, so no line falls between the two.
    let mut live = follow.then(|| engine.logs().subscribe());
    let sink = engine.logs().clone();
    let function = r.name.to_string();
    tokio::spawn(async move {
        let stored = {
            let tx = tx.clone();
            let function = function.clone();
            tokio::task::spawn_blocking(move || sink.copy_text(&function, |chunk| tx.blocking_send(chunk).is_ok()))
        };
        if !matches!(stored.await, Ok(true)) {
            return;
        }
        if let Some(live) = &mut live {
            loop {
                match live.recv().await {
                    Ok(line) if &*line.function == function.as_str() => {
                        if tx.send(line.text).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Bytes::from(format!("[kiln: {n} log lines skipped]\n"))).await;
                    }
                    Err(_) => return,
                }
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx).boxed());
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(resp)
}

fn status(engine: &Engine, name: Option<&str>) -> Result<Response<Body>> {
    let name = name.map(plain_name).transpose()?;
    let functions: Vec<serde_json::Value> = engine
        .status(name.as_ref())?
        .iter()
        .map(|f| {
            let envs: Vec<serde_json::Value> = f
                .environments
                .iter()
                .map(|e| {
                    json!({
                        "Id": e.id,
                        "Version": e.version,
                        "State": e.state,
                        "InitType": e.init_type.as_str(),
                        "AgeSeconds": e.age.as_secs_f64(),
                        "Invocations": e.invocations,
                        "MaxMemoryUsedBytes": e.max_memory_bytes,
                        "MemorySize": e.memory_mb,
                        "Pid": e.pid,
                    })
                })
                .collect();
            let s = &f.stats;
            json!({
                "FunctionName": f.name,
                "Environments": envs,
                "ColdStarts": s.cold_starts,
                "WarmStarts": s.warm_starts,
                "ProvisionedStarts": s.provisioned_starts,
                "InitDurationMsAvg": if s.cold_starts > 0 { s.init_ms_total / s.cold_starts as f64 } else { 0.0 },
                "InitDurationMsMax": s.init_ms_max,
                "InitDurationMsLast": s.init_ms_last,
            })
        })
        .collect();
    let mut body = json!({ "Functions": functions });
    if let Some(p) = engine.sandbox_pool() {
        body["SandboxPool"] = json!({
            "Target": p.target,
            "Ready": p.ready,
            "PooledSpawns": p.pooled_spawns,
            "FreshSpawns": p.fresh_spawns,
            "FailedBuilds": p.failed_builds,
        });
    }
    ok_json(StatusCode::OK, body)
}

/// A function name without qualifier (aliases and concurrency paths take only that).
pub(crate) fn plain_name(name: &str) -> Result<FunctionName> {
    let r = FunctionRef::parse(name, None)?;
    if let Some(q) = r.qualifier {
        return Err(ApiError::invalid_parameter(format!("A qualifier ({q}) is not allowed here")));
    }
    Ok(r.name)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishIn {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

async fn publish_version(engine: &Engine, call: &Call, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let input: PublishIn = parse_json(&body)?;
    let v =
        engine.publish_version(&r, input.code_sha256.as_deref(), input.description, input.revision_id.as_deref())?;
    ok_json(StatusCode::CREATED, function_configuration(&v, engine.partition(), false))
}

fn list_versions(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let n = plain_name(name)?;
    let page = engine.list_versions(&n, marker(call), max_items(call)?)?;
    let versions: Vec<serde_json::Value> =
        page.items.iter().map(|c| function_configuration(c, engine.partition(), true)).collect();
    ok_json(StatusCode::OK, page_json("Versions", versions, page.next_marker))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoutingIn {
    additional_version_weights: Option<std::collections::BTreeMap<String, f64>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasIn {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingIn>,
    revision_id: Option<String>,
}

fn alias_input(name: String, input: AliasIn) -> Result<AliasInput> {
    let routing = match input.routing_config {
        None => None,
        Some(r) => {
            let weights = r.additional_version_weights.unwrap_or_default();
            if weights.len() > 1 {
                return Err(ApiError::invalid_parameter(
                    "Number of items in AdditionalVersionWeights must not be more than 1",
                ));
            }
            Some(weights.into_iter().next())
        }
    };
    Ok(AliasInput {
        name,
        function_version: input.function_version,
        description: input.description,
        routing,
        revision_id: input.revision_id,
    })
}

fn alias_json(engine: &Engine, function: &FunctionName, a: &AliasConfig) -> serde_json::Value {
    let mut v = json!({
        "AliasArn": engine.partition().function_arn(function.as_str(), Some(&a.name)),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if let Some((version, weight)) = &a.additional_version {
        v["RoutingConfig"] = json!({ "AdditionalVersionWeights": { version.clone(): weight } });
    }
    v
}

async fn create_alias(engine: &Engine, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let n = plain_name(name)?;
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let mut input: AliasIn = parse_json(&body)?;
    let alias_name = input.name.take().ok_or_else(|| ApiError::null_member("name"))?;
    let alias = engine.create_alias(&n, alias_input(alias_name, input)?)?;
    ok_json(StatusCode::CREATED, alias_json(engine, &n, &alias))
}

async fn update_alias(engine: &Engine, name: &str, alias: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let n = plain_name(name)?;
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let input: AliasIn = parse_json(&body)?;
    let alias = engine.update_alias(&n, alias_input(alias.to_string(), input)?)?;
    ok_json(StatusCode::OK, alias_json(engine, &n, &alias))
}

fn list_aliases(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let n = plain_name(name)?;
    let page = engine.list_aliases(&n, call.query("FunctionVersion"), marker(call), max_items(call)?)?;
    let aliases: Vec<serde_json::Value> = page.items.iter().map(|a| alias_json(engine, &n, a)).collect();
    ok_json(StatusCode::OK, page_json("Aliases", aliases, page.next_marker))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConcurrencyIn {
    reserved_concurrent_executions: Option<i64>,
    provisioned_concurrent_executions: Option<i64>,
}

async fn put_concurrency(engine: &Engine, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let n = plain_name(name)?;
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let input: ConcurrencyIn = parse_json(&body)?;
    let wanted =
        input.reserved_concurrent_executions.ok_or_else(|| ApiError::null_member("reservedConcurrentExecutions"))?;
    let r = engine.put_reserved_concurrency(&n, wanted)?;
    ok_json(StatusCode::OK, json!({ "ReservedConcurrentExecutions": r }))
}

fn provisioned_json(engine: &Engine, name: &FunctionName, p: &ProvisionedStatus, with_arn: bool) -> serde_json::Value {
    let mut v = json!({
        "RequestedProvisionedConcurrentExecutions": p.requested,
        "AllocatedProvisionedConcurrentExecutions": p.allocated,
        "AvailableProvisionedConcurrentExecutions": p.available,
        "Status": p.status,
        "LastModified": wire::timestamp_seconds(p.last_modified_ms),
    });
    if let Some(r) = &p.status_reason {
        v["StatusReason"] = json!(r);
    }
    if with_arn {
        v["FunctionArn"] = json!(engine.partition().function_arn(name.as_str(), Some(&p.qualifier)));
    }
    v
}

async fn put_provisioned(engine: &Engine, call: &Call, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let input: ConcurrencyIn = parse_json(&body)?;
    let wanted = input
        .provisioned_concurrent_executions
        .ok_or_else(|| ApiError::null_member("provisionedConcurrentExecutions"))?;
    let p = engine.put_provisioned(&r, wanted)?;
    ok_json(StatusCode::ACCEPTED, provisioned_json(engine, &r.name, &p, false))
}

fn get_provisioned(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    if call.query("List") == Some("ALL") {
        let n = plain_name(name)?;
        let all = engine.list_provisioned(&n)?;
        let configs: Vec<serde_json::Value> = all.iter().map(|p| provisioned_json(engine, &n, p, true)).collect();
        return ok_json(StatusCode::OK, json!({ "ProvisionedConcurrencyConfigs": configs }));
    }
    let r = function_ref(name, call)?;
    let p = engine.get_provisioned(&r)?;
    ok_json(StatusCode::OK, provisioned_json(engine, &r.name, &p, false))
}

/// An invoke body as an event: a blank body is an empty event (the engine delivers `{}`);
/// anything else must be JSON.
pub(crate) fn event_payload(payload: Bytes) -> Result<Bytes> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::new());
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(ApiError::invalid_content(format!(
            "Could not parse request body into json: Could not parse payload into json: {e}"
        )));
    }
    Ok(payload)
}
