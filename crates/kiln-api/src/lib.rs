//! The AWS Lambda REST API of kiln.
//!
//! [`serve`] accepts connections and hands each request to [`route`], which matches the method
//! and the percent-decoded path segments against Lambda's operation map (docs/lambda-api.md, "Operations and their paths")
//! and calls one handler. Handlers parse the wire JSON into the engine's domain requests, call
//! the engine, and render the answer; every failure becomes an [`error::ApiError`] in AWS's
//! shape at this edge. A small matcher over decoded segments is used instead of a router
//! framework because Lambda paths carry percent-encoded ARNs (with `:`) in one segment and
//! several date prefixes, which is simplest to get exactly right by hand.
//!
//! Besides Lambda's operations, `/kiln/v1/…` serves what kiln's CLI needs and Lambda has no API
//! for: function logs (optionally followed live), live environments, and code downloads.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod auth;
mod codesigning;
pub mod console;
pub mod cross_account;
pub mod error;
pub mod eventstream;
mod function_settings;
mod handlers;
pub mod keys;
mod layers;
pub mod logs_api;
pub mod metrics;
pub mod metrics_auth;
mod policy;
mod runtimes;
mod stream;
mod tags;
mod timeouts;
mod url_stream;
pub mod urls;
pub mod wire;

use bytes::Bytes;
use error::ApiError;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use kiln_engine::Engine;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};

pub type Body = BoxBody<Bytes, Infallible>;

/// A request's body as handlers see it: streamed from the connection, or already read (and
/// hashed) by the signature check.
pub type ReqBody = http_body_util::Either<Incoming, Full<Bytes>>;

/// What the listener serves besides the Lambda API.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiOptions {
    pub console: console::ConsoleMode,
}

/// Serves the REST API on `listener` until `shutdown` turns true.
pub async fn serve(engine: Engine, listener: tokio::net::TcpListener, shutdown: watch::Receiver<bool>) {
    serve_with(engine, listener, shutdown, ApiOptions::default()).await;
}

/// Everything a connection needs to answer requests.
struct Server {
    engine: Engine,
    metrics: metrics::Metrics,
    options: ApiOptions,
    /// With `--auth-keys`: the keys and an engine per account; every request is authenticated.
    accounts: Option<Arc<accounts::Accounts>>,
    /// With `--auth-keys`: each account's `/metrics` (its engine, the requests its keys made).
    account_metrics: std::sync::Mutex<std::collections::BTreeMap<String, Arc<metrics::Metrics>>>,
}

impl Server {
    /// The metrics of `account`, made on its first request.
    fn metrics_of(&self, account: &str) -> Option<Arc<metrics::Metrics>> {
        let engine = self.accounts.as_ref()?.engine(account)?;
        let mut all = self.account_metrics.lock().ok()?;
        Some(all.entry(account.to_string()).or_insert_with(|| Arc::new(metrics::Metrics::new(engine))).clone())
    }
}

/// How many connections may be open at once: half of what the process may open (the rest is
/// for environments, logs and the database), so that a client opening thousands of
/// connections runs kiln out of nothing but its own connection slots.
fn connection_limit() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse::<usize>().ok()))
        })
        .unwrap_or(1024);
    (soft.saturating_sub(256) / 2).clamp(64, 16_384)
}

/// Serves the REST API, `/metrics` and the console on `listener` until `shutdown` turns true.
pub async fn serve_with(
    engine: Engine,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
    options: ApiOptions,
) {
    serve_accounts(engine, listener, shutdown, options, None).await;
}

/// [`serve_with`], and with `accounts` every request must carry a valid SigV4 signature and
/// acts in its signer's account (`engine` is the default account's, which `/metrics` and the
/// console show).
pub async fn serve_accounts(
    engine: Engine,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
    options: ApiOptions,
    accounts: Option<Arc<accounts::Accounts>>,
) {
    let server = std::sync::Arc::new(Server {
        metrics: metrics::Metrics::new(engine.clone()),
        engine,
        options,
        accounts,
        account_metrics: Default::default(),
    });
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(connection_limit()));
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit, a new connection is closed at once; established ones keep their speed.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(refused, "connection limit reached: closing new connections");
            }
            drop(stream);
            continue;
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let mut shutdown = shutdown.clone();
        // An Invoke's body read wakes the connection's own task; `rewake` polls it again at
        // once instead of having the scheduler wake another thread for it.
        tokio::spawn(kiln_runtime_api::rewake::rewake(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handle(&server, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeouts::HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let stop = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = conn.as_mut() => return,
                () = stop => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }));
    }
}

/// Answers one request: function URLs (by host or path), `/metrics` and the console here, the
/// rest through [`route`]; counts it.
async fn handle(server: &Server, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<urls::UrlBody> {
    if let Some(u) = urls::url_request(&req) {
        let resp = urls::serve(&server.engine, server.accounts.as_deref(), u, req, peer).await;
        server.metrics.requests.count("InvokeFunctionUrl", resp.status().as_u16());
        return resp;
    }
    let seg: Vec<&str> = req.uri().path().split('/').filter(|s| !s.is_empty()).collect();
    let op = metrics::operation(req.method(), &seg);
    let get = req.method() == http::Method::GET;
    let console = if get {
        console::asset(server.options.console, server.accounts.as_deref().map(|a| a.region()), &seg)
    } else {
        None
    };
    drop(seg);
    let resp = match (op, console) {
        (_, Some(r)) => r,
        ("Metrics", _) => match &server.accounts {
            None => metrics_response(server.metrics.render().await),
            Some(accounts) => signed_metrics(server, accounts, &req).await,
        },
        _ => match &server.accounts {
            None => route(&server.engine, req.map(http_body_util::Either::Left)).await,
            Some(accounts) => {
                let mut signer = None;
                let resp = authenticated(accounts, req, &mut signer).await;
                if let Some(m) = signer.and_then(|a| server.metrics_of(&a)) {
                    m.requests.count(op, resp.status().as_u16());
                }
                resp
            }
        },
    };
    server.metrics.requests.count(op, resp.status().as_u16());
    resp.map(http_body_util::Either::Left)
}

fn metrics_response(text: String) -> Response<Body> {
    let mut r = Response::new(full(text));
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
    r
}

/// `/metrics` with `--auth-keys`: the caller's account's series only ([`metrics_auth`]).
async fn signed_metrics(server: &Server, accounts: &accounts::Accounts, req: &Request<Incoming>) -> Response<Body> {
    let expected = auth::Expected { region: accounts.region(), service: wire::SERVICE_LAMBDA };
    let keys = accounts.keys();
    let who = metrics_auth::principal(&keys, &auth::RequestParts::of(req), expected, time::OffsetDateTime::now_utc());
    match who.map(|p| server.metrics_of(&p.account_id)) {
        Ok(Some(m)) => metrics_response(m.render().await),
        Ok(None) => error_response(&ApiError::service()),
        Err(e) => {
            tracing::debug!(code = e.code(), "scrape refused: {e}");
            auth_error_response(&e, false)
        }
    }
}

/// A parsed request: method, decoded path segments, decoded query pairs.
pub(crate) struct Call {
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub request_id: String,
}

impl Call {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Checks a request's signature and answers it in its signer's account. Only a request whose
/// key is known and whose date is in the window gets its body read.
/// `signer` is set to the signer's account once the signature is good.
async fn authenticated(
    accounts: &accounts::Accounts,
    req: Request<Incoming>,
    signer: &mut Option<String>,
) -> Response<Body> {
    let logs = logs_api::is_logs_call(&req);
    let expected = auth::Expected {
        region: accounts.region(),
        service: if logs { wire::SERVICE_LOGS } else { wire::SERVICE_LAMBDA },
    };
    let keys = accounts.keys();
    let refuse = |e: auth::AuthError| {
        tracing::debug!(code = e.code(), "request refused: {e}");
        auth_error_response(&e, logs)
    };
    if let Err(e) = auth::precheck(&keys, &auth::RequestParts::of(&req), expected, time::OffsetDateTime::now_utc()) {
        return refuse(e);
    }
    let limit = kiln_model::limits::CREATE_BODY_MAX_BYTES;
    let (parts, body) = req.into_parts();
    let too_large = || error_response(&ApiError::request_too_large(limit, None));
    if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
        return too_large();
    }
    let bytes = match timeouts::read_limited(body, limit).await {
        Ok(b) => b,
        Err(timeouts::BodyError::TooLarge) => return too_large(),
        Err(_) => return error_response(&ApiError::invalid_content("The request body could not be read")),
    };
    let signed = auth::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
    };
    let principal = match auth::verify(&keys, &signed, &bytes, expected, time::OffsetDateTime::now_utc()) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    *signer = Some(principal.account_id.clone());
    let Some(engine) = accounts.engine(&principal.account_id) else {
        tracing::error!(account = %principal.account_id, "no engine for a signed request's account");
        return error_response(&ApiError::service());
    };
    // Another account's ARN: only what that account's resource policy allows.
    let foreign = parts
        .uri
        .path()
        .split('/')
        .map(percent_decode)
        .chain(
            parts
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .map(|kv| percent_decode(kv.split_once('=').map_or("", |(_, v)| v))),
        )
        .find(|v| accounts::named_account(v).is_some_and(|a| a != principal.account_id));
    let req = Request::from_parts(parts, http_body_util::Either::Right(Full::new(bytes)));
    match foreign {
        Some(arn) => cross_account::answer(accounts, &principal, &arn, req).await,
        None => route(&engine, req).await,
    }
}

/// A refused signature in the shape of the API it was meant for.
fn auth_error_response(e: &auth::AuthError, logs: bool) -> Response<Body> {
    let mut r = if logs {
        let mut r =
            Response::new(full(serde_json::json!({ "__type": e.code(), "message": e.to_string() }).to_string()));
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(logs_api::CONTENT_TYPE));
        r
    } else {
        error_response(&ApiError::new(403, e.code(), e.to_string()))
    };
    *r.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        r.headers_mut().insert(wire::REQUEST_ID, v);
    }
    r
}

/// Answers one request.
pub async fn route(engine: &Engine, req: Request<ReqBody>) -> Response<Body> {
    let call = Call {
        segments: req.uri().path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect(),
        query: req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect(),
        request_id: kiln_engine::ids::request_id(),
    };
    if logs_api::is_logs_call(&req) {
        return logs_api::handle(engine, req, &call.request_id).await;
    }
    let method = req.method().clone();
    let result = handlers::dispatch(engine, &method, &call, req).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::warn!(status = e.status, code = e.code, "request failed");
            }
            error_response(&e)
        }
    };
    if !resp.headers().contains_key(wire::REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(&call.request_id) {
            resp.headers_mut().insert(wire::REQUEST_ID, v);
        }
    }
    resp
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Response::new(full(e.body()));
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(wire::ERROR_TYPE, HeaderValue::from_static(e.code));
    r
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A body fed by a channel: each message is one chunk; it ends when the sender goes.
pub(crate) struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    // Most segments have nothing to decode (every Invoke's path, say).
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding_handles_arns_and_edges() {
        assert_eq!(super::percent_decode("arn%3Aaws%3Alambda"), "arn:aws:lambda");
        assert_eq!(super::percent_decode("%24LATEST"), "$LATEST");
        assert_eq!(super::percent_decode("a%2"), "a%2");
        assert_eq!(super::percent_decode("%"), "%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
        for plain in ["", "fn", "my-function:prod", "$LATEST", "é"] {
            assert_eq!(super::percent_decode(plain), plain);
        }
    }
}
