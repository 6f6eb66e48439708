//! `RESPONSE_STREAM` function URLs: the answer is a chunked HTTP response whose bytes reach the
//! client as the function writes them.
//!
//! [`respond`] reads the engine's parts ([`kiln_engine::stream`]) until it knows the response's
//! head, then hands the rest of the channel to [`StreamedBody`], which hyper polls as the
//! client reads:
//!
//! - A runtime that streams with `Content-Type:
//!   application/vnd.awslambda.http-integration-response` (what `lambda_runtime`'s
//!   `StreamResponse`/`MetadataPrelude` and Node's `HttpResponseStream` write) starts with a
//!   JSON prelude, eight NUL bytes, then the body: the prelude's `statusCode`, `headers` and
//!   `cookies` (as `Set-Cookie`) make the head, and what follows the delimiter is the body.
//! - A runtime that streams without it gets a 200 with its own `Content-Type` (the Runtime API's
//!   default is `application/octet-stream`); the head goes with the first chunk.
//! - A runtime that answers buffered is mapped by the buffered rules (`statusCode`, …).
//!
//! Refusals and failures before the head (throttled, function error, a malformed prelude) are
//! the same answers as a buffered URL's (429, 502, …). Once the head went, a failure can only end
//! the stream: [`StreamedBody`] then returns an error, so hyper closes the connection without
//! the chunked body's last chunk, and the client sees a cut-off response, as on Lambda.
//!
//! Nothing here buffers more than one chunk: the engine's channel is bounded and only read when
//! hyper asks for the next frame, so a client that reads slowly slows the function (TCP
//! back-pressure), and a client that hangs up drops the body, the receiver with it, and the
//! engine ends the invocation and frees its environment.

use crate::urls::{add_cors, answer_response, bad_gateway, engine_refusal, is_hop_header, UrlBody};
use crate::{full, Body};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Frame;
use kiln_engine::stream::{
    HttpPrelude, PreludeSplitter, StreamOutcome, StreamPart, StreamingInvoke, HTTP_INTEGRATION_CONTENT_TYPE,
};
use kiln_model::urls::Cors;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The `Content-Type` of a streamed answer that did not name one.
const DEFAULT_STREAM_CONTENT_TYPE: &str = "application/octet-stream";

/// Why a streamed body ended before its end: the connection is closed without the last chunk.
#[derive(Debug, thiserror::Error)]
pub enum StreamAborted {
    #[error("the function failed mid-stream: {0}")]
    FunctionFailed(String),
    #[error("the invocation ended without an answer")]
    NoEnd,
}

/// The rest of a streamed answer, read from the engine's channel as the client reads.
pub struct StreamedBody {
    first: Option<Bytes>,
    parts: mpsc::Receiver<StreamPart>,
    done: bool,
    /// A failure waiting one turn: hyper drops whatever it has not written yet when a body
    /// fails, so the failure is returned only after hyper had a chance to flush what came before.
    abort: Option<StreamAborted>,
}

impl hyper::body::Body for StreamedBody {
    type Data = Bytes;
    type Error = StreamAborted;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamAborted>>> {
        if let Some(first) = self.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some(e) = self.abort.take() {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let part = match self.parts.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(p) => p,
            };
            let failure = match part {
                Some(StreamPart::Chunk(data)) if data.is_empty() => continue,
                Some(StreamPart::Chunk(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(StreamPart::Head { .. }) => continue,
                Some(StreamPart::End(Ok(StreamOutcome { error: None, .. }))) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(StreamPart::End(Ok(StreamOutcome { error: Some(f), .. }))) => {
                    tracing::info!(error_type = %f.error_type, "function url stream ended by a function error");
                    StreamAborted::FunctionFailed(f.error_type)
                }
                Some(StreamPart::End(Err(e))) => StreamAborted::FunctionFailed(e.to_string()),
                None => StreamAborted::NoEnd,
            };
            self.done = true;
            self.abort = Some(failure);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
    }
}

fn buffered(r: Response<Body>) -> Response<UrlBody> {
    r.map(http_body_util::Either::Left)
}

fn streamed(head: http::response::Builder, first: Bytes, parts: mpsc::Receiver<StreamPart>) -> Response<UrlBody> {
    let body = StreamedBody { first: Some(first), parts, done: false, abort: None };
    match head.body(http_body_util::Either::Right(body)) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "function url stream head is invalid");
            buffered(bad_gateway())
        }
    }
}

/// The head a prelude asks for; `None` when a header in it cannot be sent.
fn prelude_head(p: &HttpPrelude) -> Option<http::response::Builder> {
    let mut b = Response::builder().status(StatusCode::from_u16(p.status_code).ok()?);
    let h = b.headers_mut()?;
    for (name, value) in &p.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        if is_hop_header(&name) {
            continue;
        }
        h.append(name, HeaderValue::from_str(value).ok()?);
    }
    for c in &p.cookies {
        h.append(http::header::SET_COOKIE, HeaderValue::from_str(c).ok()?);
    }
    if !h.contains_key(http::header::CONTENT_TYPE) {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(DEFAULT_STREAM_CONTENT_TYPE));
    }
    Some(b)
}

/// An answer that ended before it had a head: a 502 for a function error, the refusal for an
/// engine error, else `ok`.
fn ended(
    end: Result<StreamOutcome, kiln_engine::EngineError>,
    ok: impl FnOnce() -> Response<UrlBody>,
) -> Response<UrlBody> {
    match end {
        Ok(StreamOutcome { error: Some(f), .. }) => {
            tracing::info!(error_type = %f.error_type, "function url invocation failed before its answer");
            buffered(bad_gateway())
        }
        Ok(_) => ok(),
        Err(e) => buffered(engine_refusal(e)),
    }
}

/// The HTTP response of a streamed invocation through a function URL (see the module docs).
pub(crate) async fn respond(run: StreamingInvoke, cors: Option<&Cors>, origin: Option<&str>) -> Response<UrlBody> {
    let mut resp = head(run).await;
    if let Some(cors) = cors {
        add_cors(&mut resp, cors, origin);
    }
    resp
}

async fn head(mut run: StreamingInvoke) -> Response<UrlBody> {
    let no_end =
        || buffered(engine_refusal(kiln_engine::EngineError::internal_msg("the invocation ended without an answer")));
    let (content_type, streaming) = match run.parts.recv().await {
        Some(StreamPart::Head { content_type, streaming }) => (content_type, streaming),
        Some(StreamPart::End(end)) => {
            return ended(end, || buffered(answer_response(&Bytes::new()).unwrap_or_else(bad_gateway)));
        }
        Some(StreamPart::Chunk(_)) | None => return no_end(),
    };
    if !streaming {
        // A buffered answer: one chunk (or none), then the end.
        let mut payload = Bytes::new();
        loop {
            match run.parts.recv().await {
                Some(StreamPart::Chunk(c)) => payload = c,
                Some(StreamPart::Head { .. }) => {}
                Some(StreamPart::End(end)) => {
                    return ended(end, || buffered(answer_response(&payload).unwrap_or_else(bad_gateway)));
                }
                None => return no_end(),
            }
        }
    }
    if content_type.as_deref() == Some(HTTP_INTEGRATION_CONTENT_TYPE) {
        let mut splitter = PreludeSplitter::new();
        loop {
            match run.parts.recv().await {
                Some(StreamPart::Chunk(c)) => match splitter.push(&c) {
                    Ok(None) => {}
                    Ok(Some((prelude, rest))) => {
                        return match prelude_head(&prelude) {
                            Some(head) => streamed(head, rest, run.parts),
                            None => {
                                tracing::info!("function url stream prelude has a header that cannot be sent");
                                buffered(bad_gateway())
                            }
                        };
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "function url stream has a malformed prelude");
                        return buffered(bad_gateway());
                    }
                },
                Some(StreamPart::Head { .. }) => {}
                Some(StreamPart::End(end)) => {
                    return ended(end, || {
                        tracing::info!(error = %splitter.finish(), "function url stream has no prelude");
                        buffered(bad_gateway())
                    });
                }
                None => return no_end(),
            }
        }
    }
    let content_type = content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
        .unwrap_or(HeaderValue::from_static(DEFAULT_STREAM_CONTENT_TYPE));
    let head = Response::builder().status(StatusCode::OK).header(http::header::CONTENT_TYPE, content_type);
    // The head goes with the first byte, so that a function that fails before writing anything
    // is a 502 like a buffered one.
    loop {
        match run.parts.recv().await {
            Some(StreamPart::Chunk(c)) if c.is_empty() => {}
            Some(StreamPart::Chunk(c)) => return streamed(head, c, run.parts),
            Some(StreamPart::Head { .. }) => {}
            Some(StreamPart::End(end)) => {
                return ended(end, || match head.body(http_body_util::Either::Left(full(Bytes::new()))) {
                    Ok(r) => r,
                    Err(_) => buffered(bad_gateway()),
                })
            }
            None => return no_end(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use kiln_engine::stream::FunctionFailure;

    fn run(parts: Vec<StreamPart>) -> StreamingInvoke {
        let (tx, rx) = mpsc::channel(parts.len().max(1));
        for p in parts {
            tx.try_send(p).unwrap();
        }
        StreamingInvoke { request_id: "r".into(), executed_version: "$LATEST".into(), parts: rx }
    }

    fn failure() -> StreamOutcome {
        StreamOutcome {
            error: Some(FunctionFailure { error_type: "E".into(), message: "m".into(), payload: Bytes::new() }),
            log_tail: None,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn a_prelude_makes_the_head_and_the_rest_is_the_body() {
        let prelude = br#"{"statusCode":201,"headers":{"x-a":"1","content-length":"9"},"cookies":["c=1"]}"#;
        let mut first = prelude.to_vec();
        first.extend_from_slice(&[0; 8]);
        first.extend_from_slice(b"hel");
        let r = rt().block_on(respond(
            run(vec![
                StreamPart::Head { content_type: Some(HTTP_INTEGRATION_CONTENT_TYPE.into()), streaming: true },
                StreamPart::Chunk(Bytes::from(first)),
                StreamPart::Chunk(Bytes::from_static(b"lo")),
                StreamPart::End(Ok(StreamOutcome::default())),
            ]),
            None,
            None,
        ));
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["set-cookie"], "c=1");
        assert_eq!(r.headers()["content-type"], DEFAULT_STREAM_CONTENT_TYPE);
        assert!(!r.headers().contains_key("content-length"));
        let body = rt().block_on(r.into_body().collect()).unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }

    #[test]
    fn without_a_prelude_the_runtimes_content_type_is_kept() {
        let r = rt().block_on(respond(
            run(vec![
                StreamPart::Head { content_type: Some("text/event-stream".into()), streaming: true },
                StreamPart::Chunk(Bytes::from_static(b"data: 1\n\n")),
                StreamPart::End(Ok(StreamOutcome::default())),
            ]),
            None,
            None,
        ));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
    }

    #[test]
    fn a_failure_before_the_first_byte_is_a_502_and_after_it_cuts_the_stream() {
        let r = rt().block_on(respond(
            run(vec![StreamPart::Head { content_type: None, streaming: true }, StreamPart::End(Ok(failure()))]),
            None,
            None,
        ));
        assert_eq!(r.status(), 502);
        let r = rt().block_on(respond(
            run(vec![
                StreamPart::Head { content_type: None, streaming: true },
                StreamPart::Chunk(Bytes::from_static(b"x")),
                StreamPart::End(Ok(failure())),
            ]),
            None,
            None,
        ));
        assert_eq!(r.status(), 200);
        assert!(rt().block_on(r.into_body().collect()).is_err(), "the body ends with an error");
    }

    #[test]
    fn a_malformed_prelude_or_a_buffered_error_is_a_502() {
        for parts in [
            vec![
                StreamPart::Head { content_type: Some(HTTP_INTEGRATION_CONTENT_TYPE.into()), streaming: true },
                StreamPart::Chunk(Bytes::from_static(b"[1]\0\0\0\0\0\0\0\0body")),
                StreamPart::End(Ok(StreamOutcome::default())),
            ],
            vec![
                StreamPart::Head { content_type: Some(HTTP_INTEGRATION_CONTENT_TYPE.into()), streaming: true },
                StreamPart::Chunk(Bytes::from_static(b"{}")),
                StreamPart::End(Ok(StreamOutcome::default())),
            ],
            vec![
                StreamPart::Head { content_type: None, streaming: false },
                StreamPart::Chunk(Bytes::from_static(b"{\"errorType\":\"E\"}")),
                StreamPart::End(Ok(failure())),
            ],
        ] {
            let r = rt().block_on(respond(run(parts), None, None));
            assert_eq!(r.status(), 502);
        }
        let r = rt().block_on(respond(
            run(vec![
                StreamPart::Head { content_type: None, streaming: false },
                StreamPart::Chunk(Bytes::from_static(br#"{"statusCode":418,"body":"tea"}"#)),
                StreamPart::End(Ok(StreamOutcome::default())),
            ]),
            None,
            None,
        ));
        assert_eq!(r.status(), 418);
    }
}
