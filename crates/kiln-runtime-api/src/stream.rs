//! Streamed responses (`Lambda-Runtime-Function-Response-Mode: streaming`).
//!
//! A runtime that streams posts its answer as a chunked body that may last as long as the
//! invocation. The Runtime API hands the engine a [`ResponseStream`] as soon as the request head
//! is admitted, and then forwards each body chunk through a bounded channel as it arrives: a
//! caller that reads slowly fills the channel, the connection task stops reading, TCP's window
//! closes, and the function blocks in its own `write`. kiln holds at most
//! [`STREAM_CHANNEL_CHUNKS`] chunks of one stream (each at most what hyper read at once, bounded
//! by the connection's read buffer) whatever the function writes.
//!
//! The body ends in one of the ways of [`StreamEnd`]: complete, with error trailers
//! (`Lambda-Runtime-Function-Error-Type` and a base64 `Lambda-Runtime-Function-Error-Body`), cut
//! off, over [`kiln_model::limits::STREAMED_RESPONSE_MAX_BYTES`], or past its deadline. The
//! engine decides what that means for the caller; this module only reports it.

use bytes::Bytes;
use tokio::sync::mpsc;

/// Chunks of one stream kiln may hold between the runtime's connection and the caller.
pub const STREAM_CHANNEL_CHUNKS: usize = 8;

/// A streamed answer being received.
pub struct ResponseStream {
    /// The runtime's `Content-Type` (`application/vnd.awslambda.http-integration-response` for
    /// an HTTP-shaped answer), if it sent one.
    pub content_type: Option<String>,
    /// The body, a chunk at a time, then exactly one [`StreamEvent::End`] unless the runtime's
    /// connection is aborted (the environment was destroyed): then the channel just closes.
    pub events: mpsc::Receiver<StreamEvent>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream").field("content_type", &self.content_type).finish_non_exhaustive()
    }
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Chunk(Bytes),
    End(StreamEnd),
}

/// How a streamed body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ended without error trailers.
    Complete,
    /// The body ended with error trailers: the error type and the decoded error body (the
    /// trailer's raw value when it is not base64).
    Error { error_type: String, body: Bytes },
    /// The connection broke before the body's end.
    Truncated,
    /// The body went past the streamed response limit; the runtime got a 413.
    TooLarge,
    /// The body did not end before the invocation's deadline.
    TimedOut,
}

/// Reads the error trailers of a streamed body, if it has them.
pub(crate) fn trailer_error(trailers: &http::HeaderMap) -> Option<(String, Bytes)> {
    use base64::Engine as _;
    let error_type = trailers.get(crate::wire::FUNCTION_ERROR_TYPE)?.to_str().ok()?.trim().to_owned();
    let raw = trailers.get(crate::wire::FUNCTION_ERROR_BODY).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    let body = base64::engine::general_purpose::STANDARD.decode(raw.trim_ascii()).unwrap_or(raw);
    Some((error_type, Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_trailers_are_decoded_and_a_bad_body_is_kept_as_sent() {
        let mut t = http::HeaderMap::new();
        assert_eq!(trailer_error(&t), None);
        t.insert(crate::wire::FUNCTION_ERROR_TYPE, http::HeaderValue::from_static("Runtime.StreamError"));
        t.insert(crate::wire::FUNCTION_ERROR_BODY, http::HeaderValue::from_static("eyJhIjoxfQ=="));
        assert_eq!(trailer_error(&t), Some(("Runtime.StreamError".into(), Bytes::from_static(b"{\"a\":1}"))));
        t.insert(crate::wire::FUNCTION_ERROR_BODY, http::HeaderValue::from_static("not base64!"));
        assert_eq!(trailer_error(&t), Some(("Runtime.StreamError".into(), Bytes::from_static(b"not base64!"))));
    }
}
