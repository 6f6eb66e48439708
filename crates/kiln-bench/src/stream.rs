//! The **stream** scenario (`--only stream`): time to first byte of a streamed response next to
//! the full latency of a buffered one, for the same small payload, in the same run, warm.
//!
//! - buffered: `Invoke` of `hello-rust` with `{"action":"echo"}`, timed to the last byte;
//! - streamed: `InvokeWithResponseStream` of `hello-stream` writing one line, timed to the first
//!   `PayloadChunk` byte (and, separately, to the end of the stream);
//! - streamed, buffered answer: `InvokeWithResponseStream` of `hello-rust`, to the first byte;
//! - streamed through a `RESPONSE_STREAM` function URL (`hello-stream`, `?chunks=1&pause_ms=0`):
//!   to the first body byte after the prelude, and to the end.
//!
//! Both functions are built with the `lambda_runtime` crate, so the difference is kiln's two
//! paths, not the runtimes. Calls alternate between the kinds so drift hits all alike.

use super::{new_client, zip_bootstrap, Api, BenchArgs, Server, Stats, TempDir, ECHO};
use anyhow::{bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kiln_client::Conn;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const STREAM_EVENT: &str = r#"{"chunks":1,"pause_ms":0}"#;

pub struct StreamResult {
    pub buffered: Stats,
    pub streamed_first_byte: Stats,
    pub streamed_end: Stats,
    pub buffered_as_stream_first_byte: Stats,
    pub url_first_byte: Stats,
    pub url_end: Stats,
}

impl StreamResult {
    pub fn render(&self) -> String {
        let row = |what: &str, s: &Stats| {
            format!("  {what:<48} p50 {:>7.2} ms  p99 {:>7.2} ms  (n = {})\n", super::ms(s.p50), super::ms(s.p99), s.n)
        };
        let mut out = String::from("Streaming (warm, same run):\n");
        out += &row("Invoke, buffered, full response", &self.buffered);
        out += &row("InvokeWithResponseStream, first byte", &self.streamed_first_byte);
        out += &row("InvokeWithResponseStream, end of stream", &self.streamed_end);
        out += &row("InvokeWithResponseStream of a buffered answer, first byte", &self.buffered_as_stream_first_byte);
        out += &row("RESPONSE_STREAM function URL, first body byte", &self.url_first_byte);
        out += &row("RESPONSE_STREAM function URL, end of stream", &self.url_end);
        out += &format!(
            "  first byte streamed − buffered full (p50): {:+.2} ms\n",
            super::ms(self.streamed_first_byte.p50) - super::ms(self.buffered.p50)
        );
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "buffered_full": self.buffered.json(),
            "streamed_first_byte": self.streamed_first_byte.json(),
            "streamed_end": self.streamed_end.json(),
            "buffered_answer_streamed_first_byte": self.buffered_as_stream_first_byte.json(),
            "url_first_byte": self.url_first_byte.json(),
            "url_end": self.url_end.json(),
        })
    }
}

/// One call: time to the first body byte and to the end.
async fn call(conn: &Conn, path: &str, event: &'static str) -> anyhow::Result<(Duration, Duration)> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .body(Full::new(Bytes::from_static(event.as_bytes())))
        .context("cannot build the request")?;
    let started = Instant::now();
    let resp = conn.send(req).await.context("request failed")?;
    if resp.status() != StatusCode::OK {
        bail!("{path}: {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the answer was cut off")?;
        if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first = Some(started.elapsed());
        }
    }
    let end = started.elapsed();
    Ok((first.unwrap_or(end), end))
}

/// Runs the scenario on its own server.
pub async fn run(exe: &Path, work: &TempDir, args: &BenchArgs) -> anyhow::Result<StreamResult> {
    let dir = exe.parent().context("the kiln executable has no folder")?;
    let rust_bin = args.function_bin.clone().unwrap_or_else(|| dir.join("hello-rust"));
    let stream_bin = dir.join("hello-stream");
    let b64 = |p: &Path| -> anyhow::Result<String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(zip_bootstrap(p)?))
    };
    let (rust_zip, stream_zip) = (b64(&rust_bin)?, b64(&stream_bin).context("build it: cargo build -p hello-stream")?);
    let server = Server::start(exe, &work.path.join("stream"), args, 8, args.server_log.as_deref()).await?;
    let result = measure(&server, &rust_zip, &stream_zip, args).await;
    server.stop();
    result
}

async fn measure(server: &Server, rust_zip: &str, stream_zip: &str, args: &BenchArgs) -> anyhow::Result<StreamResult> {
    let api = Api::new(server.addr);
    api.create_function("bench-buffered", rust_zip, 10, args.memory).await?;
    api.create_function("bench-stream", stream_zip, 10, args.memory).await?;
    let addr = server.addr;
    let sender = new_client(addr);
    let buffered = "/2015-03-31/functions/bench-buffered/invocations";
    let streamed = "/2021-11-15/functions/bench-stream/response-streaming-invocations";
    let buffered_streamed = "/2021-11-15/functions/bench-buffered/response-streaming-invocations";
    let config = api
        .call(
            Method::POST,
            "/2021-10-31/functions/bench-stream/url",
            Some(json!({ "AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM" })),
        )
        .await?;
    let url = config["FunctionUrl"].as_str().context("CreateFunctionUrlConfig gave no FunctionUrl")?;
    let id = url.strip_prefix("http://").and_then(|h| h.split('.').next()).context("unexpected FunctionUrl")?;
    let url_path = format!("/lambda-url/{id}/?chunks=1&pause_ms=0");
    // Warm both environments.
    for _ in 0..20 {
        call(&sender, buffered, ECHO).await?;
        call(&sender, streamed, STREAM_EVENT).await?;
        call(&sender, buffered_streamed, ECHO).await?;
        call(&sender, &url_path, "").await?;
    }
    let n = args.warm.max(1);
    let (mut b, mut s_first, mut s_end, mut bs_first) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut u_first, mut u_end) = (Vec::new(), Vec::new());
    for _ in 0..n {
        b.push(call(&sender, buffered, ECHO).await?.1);
        let (first, end) = call(&sender, streamed, STREAM_EVENT).await?;
        s_first.push(first);
        s_end.push(end);
        bs_first.push(call(&sender, buffered_streamed, ECHO).await?.0);
        let (first, end) = call(&sender, &url_path, "").await?;
        u_first.push(first);
        u_end.push(end);
    }
    Ok(StreamResult {
        buffered: Stats::of(&b),
        streamed_first_byte: Stats::of(&s_first),
        streamed_end: Stats::of(&s_end),
        buffered_as_stream_first_byte: Stats::of(&bs_first),
        url_first_byte: Stats::of(&u_first),
        url_end: Stats::of(&u_end),
    })
}
