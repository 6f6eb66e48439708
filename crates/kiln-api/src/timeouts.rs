//! Time limits of the REST listener, so that a client that sends slowly cannot hold a
//! connection (and its buffers) for ever: a request head must be complete within
//! [`HEADER_READ_TIMEOUT`] (hyper's timer; it also closes a keep-alive connection idle that
//! long, which clients expect), and a body must keep arriving — no gap longer than
//! [`BODY_IDLE_TIMEOUT`] — and be complete within [`BODY_READ_TIMEOUT`].

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use std::time::Duration;

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A 50 MB zip upload (70 MB of base64 JSON) at a slow 300 kB/s still fits.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads a body of at most `limit` bytes within the time limits.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    tokio::time::timeout(BODY_READ_TIMEOUT, read_frames(body, limit, BODY_IDLE_TIMEOUT))
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

async fn read_frames<B>(mut body: B, limit: usize, idle: Duration) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut out = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(BodyError::TimedOut),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChannelBody;

    fn body(chunks: &[&'static [u8]]) -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.try_send(Bytes::from_static(c)).unwrap();
        }
        (tx, ChannelBody(rx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_times_out_and_limits_hold() {
        let (tx, b) = body(&[b"ab", b"cd"]);
        drop(tx);
        assert_eq!(read_frames(b, 10, BODY_IDLE_TIMEOUT).await.unwrap(), Bytes::from_static(b"abcd"));
        let (tx, b) = body(&[b"abc", b"def"]);
        drop(tx);
        assert_eq!(read_frames(b, 5, BODY_IDLE_TIMEOUT).await, Err(BodyError::TooLarge));
        // One chunk, then nothing while the sender stays: the idle limit ends the read.
        let (tx, b) = body(&[b"x"]);
        assert_eq!(read_frames(b, 10, BODY_IDLE_TIMEOUT).await, Err(BodyError::TimedOut));
        drop(tx);
    }
}
