//! A streaming Lambda function built with the official `lambda_runtime` crate.
//!
//! It answers in the Runtime API's streaming mode, as the crate's streaming support writes it:
//! an `application/vnd.awslambda.http-integration-response` prelude (status 200, `text/plain`,
//! one cookie), eight NUL bytes, then the body. The body is `{"chunks": N}` lines (default 4),
//! one every `pause_ms` (default 300; both from the event or, through a function URL, from the
//! query string), each saying when it was written (Unix ms), then a last
//! `done` line with the time the function finished writing. The end-to-end suite reads those
//! times to show that the first line reached the caller before the function was done.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::streaming::{channel, Body, Response};
use lambda_runtime::{service_fn, Error, LambdaEvent, MetadataPrelude};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

async fn handler(event: LambdaEvent<Value>) -> Result<Response<Body>, Error> {
    // From the event itself, or from the query of a function URL's payload 2.0 event.
    let knob = |name: &str| {
        event
            .payload
            .get(name)
            .and_then(Value::as_u64)
            .or_else(|| event.payload.get("queryStringParameters")?.get(name)?.as_str()?.parse().ok())
    };
    let chunks = knob("chunks").unwrap_or(4);
    let pause = Duration::from_millis(knob("pause_ms").unwrap_or(300));
    let (mut tx, rx) = channel();
    tokio::spawn(async move {
        for i in 0..chunks {
            let line = format!("{{\"i\":{i},\"at_ms\":{}}}\n", now_ms());
            if tx.send_data(bytes::Bytes::from(line)).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
        let _ = tx.send_data(bytes::Bytes::from(format!("{{\"done\":true,\"at_ms\":{}}}\n", now_ms()))).await;
    });
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    let metadata_prelude =
        MetadataPrelude { status_code: http::StatusCode::OK, headers, cookies: vec!["flavour=stream".to_owned()] };
    Ok(Response { metadata_prelude, stream: rx })
}
