//! Streamed invocations: the engine side of `InvokeWithResponseStream` and `RESPONSE_STREAM`
//! function URLs.
//!
//! [`Engine::invoke_streaming`] runs an invocation like [`Engine::invoke`] but hands its caller
//! a bounded receiver of [`StreamPart`]s instead of one payload:
//!
//! 1. at most one [`StreamPart::Head`], when the runtime starts answering: its `Content-Type`
//!    and whether it streams (a runtime that answers buffered gets a head with `streaming:
//!    false` and its whole payload as one chunk);
//! 2. [`StreamPart::Chunk`]s, each forwarded as soon as the runtime wrote it;
//! 3. exactly one [`StreamPart::End`]: `Err` when the call was refused before it ran (not found,
//!    throttled, …), else how it ended (a function error's type and payload, the log tail).
//!
//! Back-pressure runs end to end: the caller's channel holds [`CALLER_CHANNEL_CHUNKS`], the
//! Runtime API's channel [`kiln_runtime_api::STREAM_CHANNEL_CHUNKS`]; when both are full the
//! runtime's connection is not read and the function blocks in `write`. The function's timeout
//! still holds, so a caller that never reads ends the invocation at the deadline. A caller that
//! drops its receiver ends the invocation at once and the environment is destroyed (its runtime
//! is in the middle of a write that nobody will read); the next call gets a fresh one.
//!
//! A buffered `Invoke` of a function that streams collects the stream up to the buffered limit
//! (6 MB); past it the answer is `Function.ResponseSizeTooLarge`. A streamed caller gets at most
//! [`kiln_model::limits::STREAMED_RESPONSE_MAX_BYTES`] (Lambda's 200 MB).
//!
//! For function URLs, [`PreludeSplitter`] parses the
//! `application/vnd.awslambda.http-integration-response` prelude (a JSON object with
//! `statusCode`, `headers`, `cookies`, then 8 NUL bytes, then the body) as the `lambda_runtime`
//! crate and the Node.js runtime write it.

use crate::env::{error_payload, Environment};
use crate::{Engine, EngineError, InvokeKind, InvokeRequest};
use bytes::{Bytes, BytesMut};
use kiln_model::error_type::{request_message, response_too_large_message};
use kiln_model::ErrorType;
use kiln_runtime_api::{ResponseStream, StreamEnd, StreamEvent};
use kiln_sandbox::ExitInfo;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Parts a streamed invocation may have queued for its caller at once.
pub const CALLER_CHANNEL_CHUNKS: usize = 8;

/// The `Content-Type` of an HTTP-shaped streamed answer.
pub const HTTP_INTEGRATION_CONTENT_TYPE: &str = "application/vnd.awslambda.http-integration-response";

/// The largest prelude [`PreludeSplitter`] reads before it gives up.
pub const PRELUDE_MAX_BYTES: usize = 64 * 1024;

/// One part of a streamed invocation, in the order described in the module docs.
#[derive(Debug)]
pub enum StreamPart {
    Head { content_type: Option<String>, streaming: bool },
    Chunk(Bytes),
    End(Result<StreamOutcome, EngineError>),
}

/// How a streamed invocation ended.
#[derive(Debug, Clone, Default)]
pub struct StreamOutcome {
    /// Set when the function (or the platform on its behalf) failed, before or during the stream.
    pub error: Option<FunctionFailure>,
    /// The last 4 KB of the invocation's log, when asked for.
    pub log_tail: Option<Vec<u8>>,
}

/// A failed invocation: the error object as Lambda gives it to a buffered caller, and its
/// `errorType` and `errorMessage` read out of it.
#[derive(Debug, Clone)]
pub struct FunctionFailure {
    pub error_type: String,
    pub message: String,
    pub payload: Bytes,
}

impl FunctionFailure {
    fn from_payload(payload: Bytes) -> Self {
        let v = serde_json::from_slice::<serde_json::Value>(&payload).ok();
        let field = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(|s| s.as_str()).map(str::to_owned);
        Self {
            error_type: field("errorType").unwrap_or_else(|| ErrorType::Unhandled.as_str().into()),
            message: field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(&payload).into_owned()),
            payload,
        }
    }
}

/// A streamed invocation under way.
#[derive(Debug)]
pub struct StreamingInvoke {
    pub request_id: String,
    pub executed_version: String,
    pub parts: mpsc::Receiver<StreamPart>,
}

/// Where an environment sends a streamed invocation's parts.
pub(crate) type Sink = mpsc::Sender<StreamPart>;

/// How following a stream ended, for the environment to settle.
pub(crate) enum Followed {
    /// The runtime's body ended; `collected` holds it when nobody streams it on.
    Ended {
        end: StreamEnd,
        collected: Bytes,
    },
    /// A buffered caller's answer went past the buffered limit.
    Oversize,
    Exit(ExitInfo),
    Timeout,
    /// The caller stopped reading for good.
    CallerGone,
}

enum Stop {
    Gone,
    Timeout,
}

async fn send(sink: &Sink, part: StreamPart, deadline: Instant) -> Result<(), Stop> {
    match tokio::time::timeout_at(deadline, sink.send(part)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stop::Gone),
        Err(_) => Err(Stop::Timeout),
    }
}

fn stopped(s: Stop) -> Followed {
    match s {
        Stop::Gone => Followed::CallerGone,
        Stop::Timeout => Followed::Timeout,
    }
}

async fn caller_gone(sink: Option<&Sink>) {
    match sink {
        Some(s) => s.closed().await,
        None => std::future::pending().await,
    }
}

impl Environment {
    /// Forwards (or, without a sink, collects) a streamed answer until it ends, the bootstrap
    /// dies, the deadline passes or the caller goes away.
    pub(crate) async fn follow_stream(
        &self,
        stream: ResponseStream,
        sink: Option<&Sink>,
        deadline: Instant,
    ) -> Followed {
        let ResponseStream { content_type, mut events } = stream;
        if let Some(sink) = sink {
            if let Err(s) = send(sink, StreamPart::Head { content_type, streaming: true }, deadline).await {
                return stopped(s);
            }
        }
        let mut collected = BytesMut::new();
        loop {
            let event = tokio::select! {
                biased;
                e = events.recv() => e,
                info = self.exited() => return Followed::Exit(info),
                () = tokio::time::sleep_until(deadline) => return Followed::Timeout,
                () = caller_gone(sink) => return Followed::CallerGone,
            };
            match event {
                Some(StreamEvent::Chunk(data)) => match sink {
                    Some(sink) => {
                        if let Err(s) = send(sink, StreamPart::Chunk(data), deadline).await {
                            return stopped(s);
                        }
                    }
                    None => {
                        if collected.len() + data.len() > kiln_model::limits::RESPONSE_MAX_BYTES {
                            return Followed::Oversize;
                        }
                        collected.extend_from_slice(&data);
                    }
                },
                // A body cut off (or a connection aborted) usually means the runtime died:
                // report its exit when it comes within a moment.
                Some(StreamEvent::End(StreamEnd::Truncated)) | None => {
                    return match tokio::time::timeout(Duration::from_millis(500), self.exited()).await {
                        Ok(info) => Followed::Exit(info),
                        Err(_) => Followed::Ended { end: StreamEnd::Truncated, collected: collected.freeze() },
                    };
                }
                Some(StreamEvent::End(StreamEnd::TimedOut)) => return Followed::Timeout,
                Some(StreamEvent::End(end)) => return Followed::Ended { end, collected: collected.freeze() },
            }
        }
    }

    /// Sends a buffered answer to a streamed caller: a head and one chunk.
    pub(crate) async fn forward_buffered(&self, body: Bytes, sink: &Sink, deadline: Instant) -> Option<Followed> {
        if let Err(s) = send(sink, StreamPart::Head { content_type: None, streaming: false }, deadline).await {
            return Some(stopped(s));
        }
        if !body.is_empty() {
            if let Err(s) = send(sink, StreamPart::Chunk(body), deadline).await {
                return Some(stopped(s));
            }
        }
        None
    }
}

/// What an ended invocation settles to: payload, function error, healthy, and the REPORT status.
pub(crate) type Settled = (Bytes, bool, bool, Option<crate::env::Status>);

/// What a followed stream means for the invocation. Exits and timeouts are settled by the
/// environment's own rules.
pub(crate) fn settle(f: Followed, request_id: &str) -> Settled {
    let failed = |error_type: ErrorType, message: String| crate::env::failed(error_type, &message);
    match f {
        Followed::Ended { end: StreamEnd::Complete, collected } => (collected, false, true, None),
        Followed::Ended { end: StreamEnd::Error { error_type, body }, .. } => {
            let payload = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if v.is_object() => body,
                _ => error_payload(&error_type, &String::from_utf8_lossy(&body)),
            };
            (payload, true, true, None)
        }
        Followed::Ended { end: StreamEnd::TooLarge, .. } => failed(
            ErrorType::FunctionResponseSizeTooLarge,
            response_too_large_message(kiln_model::limits::STREAMED_RESPONSE_MAX_BYTES),
        ),
        Followed::Oversize => failed(
            ErrorType::FunctionResponseSizeTooLarge,
            response_too_large_message(kiln_model::limits::RESPONSE_MAX_BYTES as u64),
        ),
        // The environment settles exits and timeouts itself; reaching here is a bug, reported as
        // a cut-off stream.
        Followed::Ended { end: StreamEnd::Truncated | StreamEnd::TimedOut, .. }
        | Followed::Exit(_)
        | Followed::Timeout => failed(
            ErrorType::RuntimeTruncatedResponse,
            request_message(request_id, "the runtime's streamed response was cut off"),
        ),
        Followed::CallerGone => failed(
            ErrorType::SandboxClientDisconnected,
            request_message(request_id, "the caller disconnected before the end of the streamed response"),
        ),
    }
}

impl Engine {
    /// Runs a synchronous invocation whose answer is streamed to the caller (see the module
    /// docs). Refusals known before the call is queued (unknown function, payload too large,
    /// …) are an `Err` here; later ones (throttling) come as the `End` part.
    pub async fn invoke_streaming(&self, req: InvokeRequest) -> Result<StreamingInvoke, EngineError> {
        if req.kind != InvokeKind::RequestResponse {
            return Err(EngineError::invalid("a streamed invocation is RequestResponse only"));
        }
        let (job, request_id, version) = self.sync_job(req)?;
        Ok(start_streaming(job, request_id, version))
    }
}

/// Runs `job` in a task of its own, its answer going to the returned receiver as it is written.
pub(crate) fn start_streaming(job: crate::invoke::Job, request_id: String, version: String) -> StreamingInvoke {
    {
        let (tx, parts) = mpsc::channel(CALLER_CHANNEL_CHUNKS);
        let job = job.with_sink(tx.clone());
        tokio::spawn(async move {
            let end = job.run().await.map(|(payload, function_error, log_tail)| StreamOutcome {
                error: function_error.then(|| FunctionFailure::from_payload(payload)),
                log_tail,
            });
            // A caller that stopped reading without hanging up gets a bounded wait.
            let _ = tokio::time::timeout(Duration::from_secs(60), tx.send(StreamPart::End(end))).await;
        });
        StreamingInvoke { request_id, executed_version: version, parts }
    }
}

/// An HTTP-shaped answer's prelude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPrelude {
    pub status_code: u16,
    /// In the order given; a header with several values (a JSON array) appears once per value.
    pub headers: Vec<(String, String)>,
    pub cookies: Vec<String>,
}

/// Why a prelude could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreludeError {
    #[error("the prelude is longer than {PRELUDE_MAX_BYTES} bytes")]
    TooLong,
    #[error("the stream ended before the prelude's delimiter")]
    Unterminated,
    #[error("the prelude is not a JSON object with a valid statusCode, headers and cookies: {0}")]
    Invalid(String),
}

/// Splits an `application/vnd.awslambda.http-integration-response` stream into its prelude and
/// its body, a chunk at a time: feed chunks to [`PreludeSplitter::push`] until it returns the
/// prelude and the first body bytes; every later chunk is body.
#[derive(Debug, Default)]
pub struct PreludeSplitter {
    buf: BytesMut,
}

const DELIMITER: &[u8; 8] = &[0u8; 8];

impl PreludeSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next chunk: `Ok(None)` while the delimiter has not come yet, then the prelude
    /// and whatever body bytes followed it in the same chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<(HttpPrelude, Bytes)>, PreludeError> {
        // The delimiter may straddle chunks: search from 7 bytes before the new data.
        let from = self.buf.len().saturating_sub(DELIMITER.len() - 1);
        self.buf.extend_from_slice(chunk);
        let Some(at) = self.buf[from..].windows(DELIMITER.len()).position(|w| w == DELIMITER).map(|p| p + from) else {
            if self.buf.len() > PRELUDE_MAX_BYTES {
                return Err(PreludeError::TooLong);
            }
            return Ok(None);
        };
        if at > PRELUDE_MAX_BYTES {
            return Err(PreludeError::TooLong);
        }
        let mut all = std::mem::take(&mut self.buf);
        let rest = all.split_off(at + DELIMITER.len()).freeze();
        all.truncate(at);
        Ok(Some((parse_prelude(&all)?, rest)))
    }

    /// The stream ended: an error if the prelude never completed.
    pub fn finish(&self) -> PreludeError {
        PreludeError::Unterminated
    }
}

/// Parses a prelude's JSON (`statusCode` defaults to 200, `headers` values may be strings or
/// arrays of strings, `cookies` an array of strings).
pub fn parse_prelude(json: &[u8]) -> Result<HttpPrelude, PreludeError> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| PreludeError::Invalid(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| PreludeError::Invalid("not an object".into()))?;
    let status_code = match obj.get("statusCode") {
        None | Some(serde_json::Value::Null) => 200,
        Some(s) => s
            .as_u64()
            .filter(|n| (100..=599).contains(n))
            .map(|n| n as u16)
            .ok_or_else(|| PreludeError::Invalid(format!("statusCode {s}")))?,
    };
    let mut headers = Vec::new();
    if let Some(h) = obj.get("headers").filter(|h| !h.is_null()) {
        let h = h.as_object().ok_or_else(|| PreludeError::Invalid("headers is not an object".into()))?;
        for (name, value) in h {
            match value {
                serde_json::Value::String(s) => headers.push((name.clone(), s.clone())),
                serde_json::Value::Array(items) => {
                    for item in items {
                        let s = item.as_str().ok_or_else(|| PreludeError::Invalid(format!("header {name}")))?;
                        headers.push((name.clone(), s.to_owned()));
                    }
                }
                other => headers.push((name.clone(), other.to_string())),
            }
        }
    }
    let cookies = match obj.get("cookies") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|c| c.as_str().map(str::to_owned).ok_or_else(|| PreludeError::Invalid("cookies".into())))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(PreludeError::Invalid("cookies is not an array".into())),
    };
    Ok(HttpPrelude { status_code, headers, cookies })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prelude_is_split_even_when_its_delimiter_straddles_chunks() {
        let prelude =
            br#"{"statusCode":201,"headers":{"content-type":"text/plain","x-a":["1","2"]},"cookies":["a=b"]}"#;
        let mut stream = prelude.to_vec();
        stream.extend_from_slice(&[0u8; 8]);
        stream.extend_from_slice(b"hello");
        for cut in 0..stream.len() {
            let mut s = PreludeSplitter::new();
            let first = s.push(&stream[..cut]).unwrap();
            let (p, rest) = match first {
                Some(done) => done,
                None => s.push(&stream[cut..]).unwrap().expect("the prelude after the whole stream"),
            };
            assert_eq!(p.status_code, 201);
            assert_eq!(
                p.headers,
                vec![
                    ("content-type".into(), "text/plain".into()),
                    ("x-a".into(), "1".into()),
                    ("x-a".into(), "2".into())
                ]
            );
            assert_eq!(p.cookies, vec!["a=b".to_string()]);
            // What came with the delimiter's chunk is body; the rest follows as later chunks.
            let body_start = prelude.len() + 8;
            let got = if cut >= body_start { &stream[body_start..cut] } else { &stream[body_start..] };
            assert_eq!(&rest[..], got, "cut at {cut}");
        }
    }

    #[test]
    fn bad_preludes_are_refused() {
        let mut s = PreludeSplitter::new();
        assert_eq!(s.push(&vec![b' '; PRELUDE_MAX_BYTES + 1]), Err(PreludeError::TooLong));
        let mut s = PreludeSplitter::new();
        assert!(matches!(s.push(b"[1]\0\0\0\0\0\0\0\0"), Err(PreludeError::Invalid(_))));
        let mut s = PreludeSplitter::new();
        assert!(matches!(s.push(b"{\"statusCode\":99}\0\0\0\0\0\0\0\0"), Err(PreludeError::Invalid(_))));
        let mut s = PreludeSplitter::new();
        let (p, rest) = s.push(b"{}\0\0\0\0\0\0\0\0").unwrap().unwrap();
        assert_eq!((p.status_code, p.headers.len(), p.cookies.len(), rest.len()), (200, 0, 0, 0));
    }

    #[test]
    fn a_failure_payload_gives_its_type_and_message() {
        let f = FunctionFailure::from_payload(Bytes::from_static(br#"{"errorType":"E","errorMessage":"m"}"#));
        assert_eq!((f.error_type.as_str(), f.message.as_str()), ("E", "m"));
        let f = FunctionFailure::from_payload(Bytes::from_static(b"oops"));
        assert_eq!((f.error_type.as_str(), f.message.as_str()), ("Unhandled", "oops"));
    }
}
