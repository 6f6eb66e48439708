//! The **events** scenario: `Event` invokes (`InvocationType: Event`) with 32 concurrent
//! callers on a fresh server. Each 202 is timed; it comes only after the event is committed and
//! synced in the server's queue, so this measures durable acceptance (group commit) while the
//! server also delivers what it accepted.

use super::{new_client, Api, BenchArgs, Server, Stats, TempDir};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use kiln_client::Conn;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Concurrent callers of the events scenario.
pub const EVENT_CALLERS: usize = 32;

pub struct EventsResult {
    pub callers: usize,
    pub per_second: f64,
    pub accepted: Stats,
}

impl EventsResult {
    pub fn render(&self) -> String {
        format!(
            "Event invokes (durable 202, {} callers): {:.0}/s; 202 p50 {:.2} ms, p99 {:.2} ms (n = {})\n",
            self.callers,
            self.per_second,
            super::ms(self.accepted.p50),
            super::ms(self.accepted.p99),
            self.accepted.n
        )
    }

    pub fn json(&self) -> Value {
        json!({ "callers": self.callers, "per_second": self.per_second, "accepted": self.accepted.json() })
    }
}

/// Runs the scenario on its own server.
pub async fn run(exe: &Path, work: &TempDir, zip_b64: &str, args: &BenchArgs) -> anyhow::Result<EventsResult> {
    let server =
        Server::start(exe, &work.path.join("events"), args, EVENT_CALLERS + 8, args.server_log.as_deref()).await?;
    let result = measure(&server, zip_b64, args).await;
    server.stop();
    result
}

async fn measure(server: &Server, zip_b64: &str, args: &BenchArgs) -> anyhow::Result<EventsResult> {
    let api = Api::new(server.addr);
    let name = "bench-events";
    api.create_function(name, zip_b64, 10, args.memory).await?;
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs_f64(args.seconds);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..EVENT_CALLERS {
        let path = path.clone();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let client = new_client(addr);
            let mut samples = Vec::new();
            loop {
                let t = Instant::now();
                let req = http::Request::builder()
                    .method(Method::POST)
                    .uri(&path)
                    .header(http::header::HOST, addr.to_string())
                    .header("x-amz-invocation-type", "Event")
                    .body(http_body_util::Full::new(Bytes::from_static(super::ECHO.as_bytes())))
                    .context("cannot build the request")?;
                let status = request_with(&client, req).await?;
                let took = t.elapsed();
                if status != StatusCode::ACCEPTED {
                    bail!("Event invoke answered {status}");
                }
                let now = Instant::now();
                if now >= end {
                    return anyhow::Ok(samples);
                }
                if now >= start {
                    samples.push(took);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("a caller panicked")??);
    }
    let per_second = all.len() as f64 / measure.as_secs_f64();
    Ok(EventsResult { callers: EVENT_CALLERS, per_second, accepted: Stats::of(&all) })
}

/// One request with the invocation-type header (`Conn::request` sends none): its status.
async fn request_with(client: &Conn, req: http::Request<http_body_util::Full<Bytes>>) -> anyhow::Result<StatusCode> {
    let resp = client.send(req).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    Ok(status)
}
