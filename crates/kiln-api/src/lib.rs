//! The AWS Lambda REST API of kiln.
//!
//! [`serve`] accepts connections and hands each request to [`route`], which matches the method
//! and the percent-decoded path segments against Lambda's operation map (lambda-compat.md §5.4)
//! and calls one handler. Handlers parse the wire JSON into the engine's domain requests, call
//! the engine, and render the answer; every failure becomes an [`error::ApiError`] in AWS's
//! shape at this edge. A small matcher over decoded segments is used instead of a router
//! framework because Lambda paths carry percent-encoded ARNs (with `:`) in one segment and
//! several date prefixes, which is simplest to get exactly right by hand.
//!
//! Besides Lambda's operations, `/kiln/v1/…` serves what kiln's CLI needs and Lambda has no API
//! for: function logs (optionally followed live), live environments, and code downloads.
#![forbid(unsafe_code)]

pub mod error;
mod handlers;
mod layers;
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
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};

pub type Body = BoxBody<Bytes, Infallible>;

/// Serves the REST API on `listener` until `shutdown` turns true.
pub async fn serve(engine: Engine, listener: tokio::net::TcpListener, mut shutdown: watch::Receiver<bool>) {
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
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let engine = engine.clone();
                async move { Ok::<_, Infallible>(route(&engine, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let stop = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
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

/// Answers one request.
pub async fn route(engine: &Engine, req: Request<Incoming>) -> Response<Body> {
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
        request_id: uuid::Uuid::new_v4().to_string(),
    };
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

fn percent_decode(s: &str) -> String {
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
    }
}
