//! One handler per operation.

use crate::error::ApiError;
use crate::wire::{self, function_configuration};
use crate::{full, Body, Call, ChannelBody};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use kiln_engine::{CreateFunction, Engine, InvokeKind, InvokeRequest, UpdateCode, UpdateConfig};
use kiln_model::{limits, FunctionRef};
use serde_json::json;

type Result<T> = std::result::Result<T, ApiError>;

/// Bodies of operations other than code uploads and invokes are small.
const SMALL_BODY: usize = 1024 * 1024;

pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let seg: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match (method, seg.as_slice()) {
        (&Method::POST, ["2015-03-31", "functions"]) => create_function(engine, req).await,
        (&Method::GET, ["2015-03-31", "functions"]) => list_functions(engine, call),
        (&Method::GET, ["2015-03-31", "functions", name]) => get_function(engine, call, name, req),
        (&Method::DELETE, ["2015-03-31", "functions", name]) => {
            delete_function(engine, call, name).await
        }
        (&Method::GET, ["2015-03-31", "functions", name, "configuration"]) => {
            let r = function_ref(name, call)?;
            ok_json(
                StatusCode::OK,
                function_configuration(&*engine.get_function(&r)?, engine.partition(), false),
            )
        }
        (&Method::PUT, ["2015-03-31", "functions", name, "configuration"]) => {
            update_configuration(engine, call, name, req).await
        }
        (&Method::PUT, ["2015-03-31", "functions", name, "code"]) => {
            update_code(engine, call, name, req).await
        }
        (&Method::POST, ["2015-03-31", "functions", name, "invocations"]) => {
            invoke(engine, call, name, req).await
        }
        (&Method::GET, ["2016-08-19", "account-settings"]) => account_settings(engine),
        (&Method::GET, ["kiln", "v1", "functions", name, "code"]) => {
            code_zip(engine, call, name).await
        }
        (&Method::GET, ["kiln", "v1", "functions", name, "logs"]) => logs(engine, call, name),
        (&Method::GET, ["kiln", "v1", "functions", name, "environments"]) => {
            environments(engine, call, name)
        }
        _ => Err(ApiError::unknown_operation()),
    }
}

fn function_ref(name: &str, call: &Call) -> Result<FunctionRef> {
    Ok(FunctionRef::parse(name, call.query("Qualifier"))?)
}

fn ok_json(status: StatusCode, v: serde_json::Value) -> Result<Response<Body>> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn empty(status: StatusCode) -> Result<Response<Body>> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    Ok(r)
}

/// Reads a body of at most `limit` bytes; `too_large` is the message when it is bigger.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    too_large: impl FnOnce() -> String,
) -> Result<Bytes> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLargeException",
            too_large(),
        ));
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            413,
            "RequestEntityTooLargeException",
            too_large(),
        )),
        Err(_) => Err(ApiError::invalid_content(
            "The request body could not be read",
        )),
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_content(format!("The request body could not be parsed as JSON: {e}"))
    })
}

fn decode_zip(code: &wire::CodeIn) -> Result<Vec<u8>> {
    if code.s3_bucket.is_some() {
        return Err(ApiError::invalid_parameter(
            "kiln has no S3: upload the deployment package inline as ZipFile",
        ));
    }
    if code.image_uri.is_some() {
        return Err(ApiError::invalid_parameter(
            "kiln runs .zip packages only; container images are not supported",
        ));
    }
    let zip = code
        .zip_file
        .as_deref()
        .ok_or_else(|| ApiError::invalid_parameter("Please provide a source for function code."))?;
    wire::unb64(zip).ok_or_else(|| {
        ApiError::invalid_parameter(
            "Could not unzip uploaded file. Please check your file, then try to upload again.",
        )
    })
}

fn create_too_large() -> String {
    format!(
        "Request must be smaller than {} bytes for the CreateFunction operation",
        limits::CREATE_BODY_MAX_BYTES
    )
}

async fn create_function(engine: &Engine, req: Request<Incoming>) -> Result<Response<Body>> {
    let body = read_body(req, limits::CREATE_BODY_MAX_BYTES, create_too_large).await?;
    let mut input: wire::CreateFunctionIn = parse_json(&body)?;
    let name = input
        .function_name
        .take()
        .ok_or_else(|| ApiError::validation("1 validation error detected: Value null at 'functionName' failed to satisfy constraint: Member must not be null"))?;
    if input
        .config
        .package_type
        .as_deref()
        .is_some_and(|p| p != "Zip")
    {
        return Err(ApiError::invalid_parameter(
            "kiln runs .zip packages only; container images are not supported",
        ));
    }
    let code = input
        .code
        .take()
        .ok_or_else(|| ApiError::validation("1 validation error detected: Value null at 'code' failed to satisfy constraint: Member must not be null"))?;
    let zip = decode_zip(&code)?;
    let mut cfg = input.config;
    let passthrough = cfg.passthrough();
    let created = engine
        .create_function(CreateFunction {
            name,
            runtime: cfg.runtime,
            role: cfg.role.unwrap_or_default(),
            handler: cfg.handler,
            description: cfg.description,
            timeout_secs: cfg.timeout,
            memory_mb: cfg.memory_size,
            environment: cfg.environment.map(|e| e.variables.unwrap_or_default()),
            ephemeral_storage_mb: cfg.ephemeral_storage.and_then(|s| s.size),
            architectures: input.architectures,
            tracing_mode: cfg.tracing_config.and_then(|t| t.mode),
            log_format: cfg
                .logging_config
                .as_ref()
                .and_then(|l| l.log_format.clone()),
            log_group: cfg.logging_config.and_then(|l| l.log_group),
            zip,
            passthrough,
        })
        .await?;
    ok_json(
        StatusCode::CREATED,
        function_configuration(&created, engine.partition(), false),
    )
}

fn list_functions(engine: &Engine, call: &Call) -> Result<Response<Body>> {
    let max_items = match call.query("MaxItems") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 10000"
                )))
            }
        },
    };
    let page = engine.list_functions(call.query("Marker").filter(|m| !m.is_empty()), max_items);
    let functions: Vec<serde_json::Value> = page
        .functions
        .iter()
        .map(|c| function_configuration(c, engine.partition(), true))
        .collect();
    let mut out = json!({ "Functions": functions });
    if let Some(m) = page.next_marker {
        out["NextMarker"] = json!(m);
    }
    ok_json(StatusCode::OK, out)
}

fn get_function(
    engine: &Engine,
    call: &Call,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let cfg = engine.get_function(&r)?;
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9000")
        .to_string();
    ok_json(
        StatusCode::OK,
        json!({
            "Configuration": function_configuration(&cfg, engine.partition(), false),
            "Code": {
                "RepositoryType": "S3",
                "Location": format!("http://{host}/kiln/v1/functions/{}/code", cfg.name),
            },
        }),
    )
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
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let body = read_body(req, SMALL_BODY, || {
        "Request must be smaller than 1048576 bytes".into()
    })
    .await?;
    let mut cfg: wire::ConfigIn = parse_json(&body)?;
    let passthrough = cfg.passthrough();
    let updated = engine
        .update_config(
            &r,
            UpdateConfig {
                runtime: cfg.runtime,
                role: cfg.role,
                handler: cfg.handler,
                description: cfg.description,
                timeout_secs: cfg.timeout,
                memory_mb: cfg.memory_size,
                environment: cfg.environment.map(|e| e.variables.unwrap_or_default()),
                ephemeral_storage_mb: cfg.ephemeral_storage.and_then(|s| s.size),
                tracing_mode: cfg.tracing_config.and_then(|t| t.mode),
                log_format: cfg
                    .logging_config
                    .as_ref()
                    .and_then(|l| l.log_format.clone()),
                log_group: cfg.logging_config.and_then(|l| l.log_group),
                revision_id: cfg.revision_id,
                passthrough,
            },
        )
        .await?;
    ok_json(
        StatusCode::OK,
        function_configuration(&updated, engine.partition(), false),
    )
}

async fn update_code(
    engine: &Engine,
    call: &Call,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let body = read_body(req, limits::CREATE_BODY_MAX_BYTES, || {
        format!(
            "Request must be smaller than {} bytes for the UpdateFunctionCode operation",
            limits::CREATE_BODY_MAX_BYTES
        )
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
            },
        )
        .await?;
    ok_json(
        StatusCode::OK,
        function_configuration(&updated, engine.partition(), false),
    )
}

async fn invoke(
    engine: &Engine,
    call: &Call,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
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
    let tail_logs = match header(wire::LOG_TYPE).as_deref() {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: Member must satisfy enum value set: [None, Tail]"
            )))
        }
    };
    let client_context = match header(wire::CLIENT_CONTEXT) {
        None => None,
        Some(cc) => {
            let decoded = wire::unb64(&cc)
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| serde_json::from_str::<serde_json::Value>(s).is_ok())
                .ok_or_else(|| {
                    ApiError::invalid_parameter(
                        "Client context must be a valid Base64-encoded JSON object.",
                    )
                })?;
            Some(decoded)
        }
    };
    let limit = limits::SYNC_PAYLOAD_MAX_BYTES;
    let payload = read_body(req, limit, || {
        format!("Request must be smaller than {limit} bytes for the InvokeFunction operation")
    })
    .await?;
    if !payload.iter().all(u8::is_ascii_whitespace) {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return Err(ApiError::invalid_content(format!(
                "Could not parse request body into json: Could not parse payload into json: {e}"
            )));
        }
    }
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        Bytes::new()
    } else {
        payload
    };
    let out = engine
        .invoke(InvokeRequest {
            function: r,
            kind,
            payload,
            tail_logs,
            client_context,
        })
        .await?;
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
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
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
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut marker: Option<String> = None;
    loop {
        let page = engine.list_functions(marker.as_deref(), None);
        count += page.functions.len();
        total += page.functions.iter().map(|c| c.code_size).sum::<u64>();
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    ok_json(
        StatusCode::OK,
        json!({
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800u64,
                "CodeSizeUnzipped": limits::UNZIPPED_MAX_BYTES,
                "CodeSizeZipped": limits::ZIP_MAX_BYTES,
                "ConcurrentExecutions": limits::ACCOUNT_CONCURRENCY_DEFAULT,
                "UnreservedConcurrentExecutions": limits::ACCOUNT_CONCURRENCY_DEFAULT,
            },
            "AccountUsage": { "TotalCodeSize": total, "FunctionCount": count },
        }),
    )
}

async fn code_zip(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let zip = engine.function_zip(&r).await?;
    let mut resp = Response::new(full(zip));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    Ok(resp)
}

/// The function's log: every stored stream, oldest first; with `follow=true`, then the live
/// lines as they come, until the client hangs up.
fn logs(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let follow = matches!(call.query("follow"), Some("true" | "1"));
    if !follow {
        // A deleted function's logs stay readable, as in CloudWatch; only a name never seen is 404.
        let files = engine.logs().files(r.name.as_str());
        if files.is_empty() {
            engine.get_function(&r)?;
        }
    } else {
        engine.get_function(&r)?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    // Subscribe before reading the files, so no line falls between the two.
    let mut live = follow.then(|| engine.logs().subscribe());
    let files = engine.logs().files(r.name.as_str());
    let function = r.name.to_string();
    tokio::spawn(async move {
        for f in files {
            if let Ok(data) = tokio::fs::read(&f).await {
                if tx.send(Bytes::from(data)).await.is_err() {
                    return;
                }
            }
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
                        let _ = tx
                            .send(Bytes::from(format!("[kiln: {n} log lines skipped]\n")))
                            .await;
                    }
                    Err(_) => return,
                }
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx).boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

fn environments(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let envs = engine.environments(&r)?;
    let list: Vec<serde_json::Value> = envs
        .iter()
        .map(|e| {
            json!({
                "Id": e.id,
                "Version": e.version,
                "State": if e.busy { "busy" } else { "idle" },
                "InitType": e.init_type.as_str(),
                "AgeSeconds": e.age.as_secs_f64(),
                "Invocations": e.invocations,
                "MaxMemoryUsedBytes": e.max_memory_bytes,
            })
        })
        .collect();
    ok_json(StatusCode::OK, json!({ "Environments": list }))
}
