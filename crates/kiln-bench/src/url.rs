//! The **url** scenario (`--only url`): the same function called through its function URL
//! (the path form `/lambda-url/<id>/`, a plain HTTP request turned into a payload 2.0 event)
//! and through `Invoke`, on one server in the same run: warm latency (calls alternated one by
//! one, so both see the same machine) and 8-caller throughput, with URL/Invoke ratios.

use super::{invoke, new_client, throughput, Api, BenchArgs, Server, Stats, TempDir, ECHO};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Method, StatusCode};
use kiln_client::Conn;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// Callers of the throughput runs.
const CALLERS: usize = 8;

pub struct UrlResult {
    pub invoke: Stats,
    pub url: Stats,
    pub invoke_per_second: f64,
    pub url_per_second: f64,
}

impl UrlResult {
    pub fn render(&self) -> String {
        format!(
            "Function URL vs Invoke (same function, same server):\n  warm p50: URL {:.2} ms, Invoke {:.2} ms (URL/Invoke {:.2}); p99 URL {:.2} ms, Invoke {:.2} ms (n = {})\n  {CALLERS} callers: URL {:.0}/s, Invoke {:.0}/s (URL/Invoke {:.2})\n",
            super::ms(self.url.p50),
            super::ms(self.invoke.p50),
            super::ms(self.url.p50) / super::ms(self.invoke.p50).max(f64::EPSILON),
            super::ms(self.url.p99),
            super::ms(self.invoke.p99),
            self.url.n,
            self.url_per_second,
            self.invoke_per_second,
            self.url_per_second / self.invoke_per_second.max(f64::EPSILON),
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "warm_invoke": self.invoke.json(),
            "warm_url": self.url.json(),
            "warm_p50_ratio": super::ms(self.url.p50) / super::ms(self.invoke.p50).max(f64::EPSILON),
            "callers": CALLERS,
            "invoke_per_second": self.invoke_per_second,
            "url_per_second": self.url_per_second,
            "throughput_ratio": self.url_per_second / self.invoke_per_second.max(f64::EPSILON),
        })
    }
}

/// Runs the scenario on its own server.
pub async fn run(exe: &Path, work: &TempDir, zip_b64: &str, args: &BenchArgs) -> anyhow::Result<UrlResult> {
    let server = Server::start(exe, &work.path.join("url"), args, CALLERS * 2 + 8, args.server_log.as_deref()).await?;
    let result = measure(&server, zip_b64, args).await;
    server.stop();
    result
}

async fn url_call(client: &Conn, path: &str) -> anyhow::Result<()> {
    let (status, _, body) = client.request(Method::POST, path, Bytes::from_static(ECHO.as_bytes())).await?;
    if status != StatusCode::OK {
        bail!("function URL answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

async fn measure(server: &Server, zip_b64: &str, args: &BenchArgs) -> anyhow::Result<UrlResult> {
    let api = Api::new(server.addr);
    let name = "bench-url";
    api.create_function(name, zip_b64, 10, args.memory).await?;
    let config = api
        .call(Method::POST, &format!("/2021-10-31/functions/{name}/url"), Some(json!({ "AuthType": "NONE" })))
        .await?;
    let url = config["FunctionUrl"].as_str().context("CreateFunctionUrlConfig gave no FunctionUrl")?;
    let id = url.strip_prefix("http://").and_then(|h| h.split('.').next()).context("unexpected FunctionUrl")?;
    let path = format!("/lambda-url/{id}/");
    let addr = server.addr;

    let client = new_client(addr);
    invoke(&client, name, ECHO).await?;
    url_call(&client, &path).await?;
    let (mut via_invoke, mut via_url) = (Vec::with_capacity(args.warm), Vec::with_capacity(args.warm));
    for _ in 0..args.warm {
        let t = Instant::now();
        invoke(&client, name, ECHO).await?;
        via_invoke.push(t.elapsed());
        let t = Instant::now();
        url_call(&client, &path).await?;
        via_url.push(t.elapsed());
    }
    let invoke_per_second =
        throughput(addr, args.seconds, CALLERS, move |c| async move { invoke(&c, name, ECHO).await.map(|_| ()) })
            .await?;
    let p = path.clone();
    let url_per_second = throughput(addr, args.seconds, CALLERS, move |c| {
        let p = p.clone();
        async move { url_call(&c, &p).await }
    })
    .await?;
    Ok(UrlResult { invoke: Stats::of(&via_invoke), url: Stats::of(&via_url), invoke_per_second, url_per_second })
}
