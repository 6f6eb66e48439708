//! `InvokeWithResponseStream` (`POST /2021-11-15/functions/{name}/response-streaming-invocations`).
//!
//! The request is checked as Invoke's is (only `RequestResponse` and `DryRun`), then
//! [`Engine::invoke_streaming`] runs it. Refusals known before the function runs (not found,
//! throttled, too large) are ordinary HTTP errors in AWS's shape; once the function answers, the
//! response is a 200 whose body is an event stream: one `PayloadChunk` per chunk the function
//! wrote, each sent as soon as it arrives, then one `InvokeComplete` with `ErrorCode` and
//! `ErrorDetails` (the error's `errorType` and `errorMessage`) when the function failed before
//! or during its stream, and `LogResult` with `LogType: Tail`.
//!
//! The body reads the engine's bounded channel directly: a caller that reads slowly slows the
//! function, and one that hangs up drops the channel, which ends the invocation.

use crate::error::ApiError;
use crate::eventstream;
use crate::handlers::read_body;
use crate::wire;
use crate::ReqBody;
use crate::{Body, Call};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use kiln_engine::stream::{StreamOutcome, StreamPart};
use kiln_engine::{Engine, EngineError, InvokeKind, InvokeRequest};
use kiln_model::{limits, FunctionRef};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) async fn invoke_with_response_stream(
    engine: &Engine,
    call: &Call,
    name: &str,
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    let function = FunctionRef::parse(name, call.query("Qualifier"))?;
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let kind = match header(wire::INVOCATION_TYPE).as_deref() {
        None | Some("RequestResponse") => InvokeKind::RequestResponse,
        Some("DryRun") => InvokeKind::DryRun,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [RequestResponse, DryRun]"
            )))
        }
    };
    let tail_logs = crate::handlers::log_type(header(wire::LOG_TYPE).as_deref())?;
    let client_context = crate::handlers::client_context(header(wire::CLIENT_CONTEXT))?;
    let limit = limits::SYNC_PAYLOAD_MAX_BYTES;
    let payload = read_body(req, limit, || limits::request_too_large_message(limit, Some("InvokeFunction"))).await?;
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        Bytes::new()
    } else if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(ApiError::invalid_content(format!(
            "Could not parse request body into json: Could not parse payload into json: {e}"
        )));
    } else {
        payload
    };
    let req = InvokeRequest { function, kind, payload, tail_logs, client_context };
    if kind == InvokeKind::DryRun {
        let out = engine.invoke(req).await?;
        let mut resp = Response::new(crate::full(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        insert(resp.headers_mut(), wire::REQUEST_ID, &out.request_id);
        insert(resp.headers_mut(), wire::EXECUTED_VERSION, &out.executed_version);
        return Ok(resp);
    }
    let mut run = engine.invoke_streaming(req).await?;
    // The status and headers wait for the function's first part, so that a refusal that comes
    // only once the call is under way (throttling) is still an HTTP error.
    let first = match run.parts.recv().await {
        Some(StreamPart::End(Err(e))) => return Err(e.into()),
        Some(part) => Some(part),
        None => return Err(EngineError::internal_msg("the streamed invocation ended without an answer").into()),
    };
    let body = EventStreamBody { first, parts: run.parts, done: false };
    let mut resp = Response::new(body.boxed());
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(wire::EVENTSTREAM_CONTENT_TYPE));
    insert(h, wire::REQUEST_ID, &run.request_id);
    insert(h, wire::EXECUTED_VERSION, &run.executed_version);
    Ok(resp)
}

fn insert(h: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The `InvokeComplete` event of an outcome.
fn complete(outcome: &StreamOutcome) -> Bytes {
    let mut m = serde_json::Map::new();
    if let Some(e) = &outcome.error {
        m.insert("ErrorCode".into(), e.error_type.clone().into());
        m.insert("ErrorDetails".into(), e.message.clone().into());
    }
    if let Some(tail) = &outcome.log_tail {
        m.insert("LogResult".into(), wire::b64(tail).into());
    }
    let json = serde_json::Value::Object(m).to_string();
    eventstream::event(wire::EVENT_INVOKE_COMPLETE, "application/json", json.as_bytes())
}

/// The event stream of one invocation, read from the engine's channel as the caller reads.
struct EventStreamBody {
    first: Option<StreamPart>,
    parts: mpsc::Receiver<StreamPart>,
    done: bool,
}

impl hyper::body::Body for EventStreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let part = match self.first.take() {
                Some(p) => p,
                None => match self.parts.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(p)) => p,
                    // The invocation task went away without an end: close the stream with one.
                    Poll::Ready(None) => StreamPart::End(Err(EngineError::internal_msg("no end"))),
                },
            };
            let frame = match part {
                StreamPart::Head { .. } => continue,
                StreamPart::Chunk(data) => {
                    eventstream::event(wire::EVENT_PAYLOAD_CHUNK, "application/octet-stream", &data)
                }
                StreamPart::End(end) => {
                    self.done = true;
                    let outcome = end.unwrap_or_else(|e| {
                        tracing::warn!(error = %e.chain(), "streamed invocation failed after its answer began");
                        StreamOutcome {
                            error: Some(kiln_engine::stream::FunctionFailure {
                                error_type: crate::error::code::SERVICE.into(),
                                message: "The service encountered an internal error.".into(),
                                payload: Bytes::new(),
                            }),
                            log_tail: None,
                        }
                    });
                    complete(&outcome)
                }
            };
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_complete_carries_the_error_and_the_log() {
        let ok = complete(&StreamOutcome::default());
        let got = eventstream::tests::decode(&ok);
        assert_eq!(got[0].0[0], (":event-type".to_string(), "InvokeComplete".to_string()));
        assert_eq!(got[0].1, b"{}");
        let failed = complete(&StreamOutcome {
            error: Some(kiln_engine::stream::FunctionFailure {
                error_type: "Runtime.StreamError".into(),
                message: "boom".into(),
                payload: Bytes::new(),
            }),
            log_tail: Some(b"END".to_vec()),
        });
        let v: serde_json::Value = serde_json::from_slice(&eventstream::tests::decode(&failed)[0].1).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ErrorCode": "Runtime.StreamError", "ErrorDetails": "boom", "LogResult": "RU5E"})
        );
    }
}
