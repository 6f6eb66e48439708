//! The **url** scenario (`--only url`): the same function called through its function URL
//! (the path form `/lambda-url/<id>/`, a plain HTTP request turned into a payload 2.0 event)
//! and through `Invoke`, on one server in the same run: warm latency (calls alternated one by
//! one, so both see the same machine) and 8-caller throughput (in alternated rounds, see
//! [`ROUNDS`]), with URL/Invoke ratios. Both paths go through the same client code: one
//! kept-alive connection per caller, the same request headers (`host`, `content-type`,
//! `content-length`), the same function.
//!
//! A URL call hands the function a payload 2.0 event of ~600 bytes where the Invoke call hands
//! it the caller's 17 bytes, so the function does more work per URL call. The goal (the URL path
//! costs kiln no more than Invoke) is therefore judged against a third series: Invoke carrying an
//! event of the same shape and size ([`URL_EVENT`]), where both calls give the function the
//! same work and the difference is kiln's.

use super::{invoke, new_client, throughput, Api, BenchArgs, Server, Stats, TempDir, ECHO};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Method, StatusCode};
use kiln_client::Conn;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// The payload 2.0 event kiln builds for [`url_call`]'s request, byte for byte as
/// `kiln_api::urls` writes it (the same headers: `host`, `content-type`, `content-length` and the
/// two `x-forwarded-*` kiln adds; the JSON body as text), with placeholder ids and times of the
/// same lengths: 746 bytes, so the function parses the same event through both paths.
const URL_EVENT: &str = concat!(
    r#"{"version":"2.0","routeKey":"$default","rawPath":"/","rawQueryString":"","#,
    r#""headers":{"host":"127.0.0.1:40000","content-type":"application/json","content-length":"17","#,
    r#""x-forwarded-for":"127.0.0.1","x-forwarded-proto":"http"},"#,
    r#""requestContext":{"accountId":"000000000000","apiId":"abcdefghijklmnopqrstuvwxyz012345","#,
    r#""domainName":"abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.localhost","#,
    r#""domainPrefix":"abcdefghijklmnopqrstuvwxyz012345","#,
    r#""http":{"method":"POST","path":"/","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":""},"#,
    r#""requestId":"00000000-0000-0000-0000-000000000000","routeKey":"$default","stage":"$default","#,
    r#""time":"30/Nov/2026:18:00:00 +0000","timeEpoch":1796061600000},"#,
    r#""body":"{\"action\":\"echo\"}","isBase64Encoded":false}"#
);

/// Callers of the throughput runs.
const CALLERS: usize = 8;

/// The throughput runs are cut into this many rounds, each running the three series one after
/// the other (in a rotated order) for a share of `--seconds`: on a shared machine whose load
/// drifts over seconds, every series then sees the same spread of it.
const ROUNDS: usize = 4;

pub struct UrlResult {
    pub invoke: Stats,
    pub url: Stats,
    /// Invoke with [`URL_EVENT`] as its payload.
    pub invoke_event: Stats,
    pub invoke_per_second: f64,
    pub url_per_second: f64,
    pub invoke_event_per_second: f64,
}

impl UrlResult {
    pub fn render(&self) -> String {
        let ratio = |a: f64, b: f64| a / b.max(f64::EPSILON);
        let (url, inv, ev) = (super::ms(self.url.p50), super::ms(self.invoke.p50), super::ms(self.invoke_event.p50));
        format!(
            "Function URL vs Invoke (same function, same server):\n  warm p50: URL {url:.3} ms, Invoke {inv:.3} ms (URL/Invoke {:.3}); p99 URL {:.2} ms, Invoke {:.2} ms (n = {})\n  warm p50, Invoke carrying a URL-sized event: {ev:.3} ms (URL/that {:.3}; goal <= 1.00: {})\n  {CALLERS} callers: URL {:.0}/s, Invoke {:.0}/s (URL/Invoke {:.3}), Invoke with the URL-sized event {:.0}/s (URL/that {:.3}; goal >= 1.00: {})\n",
            ratio(url, inv),
            super::ms(self.url.p99),
            super::ms(self.invoke.p99),
            self.url.n,
            ratio(url, ev),
            if ratio(url, ev) <= 1.0 { "met" } else { "not met" },
            self.url_per_second,
            self.invoke_per_second,
            ratio(self.url_per_second, self.invoke_per_second),
            self.invoke_event_per_second,
            ratio(self.url_per_second, self.invoke_event_per_second),
            if ratio(self.url_per_second, self.invoke_event_per_second) >= 1.0 { "met" } else { "not met" },
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "warm_invoke": self.invoke.json(),
            "warm_url": self.url.json(),
            "warm_p50_ratio": super::ms(self.url.p50) / super::ms(self.invoke.p50).max(f64::EPSILON),
            "warm_invoke_url_sized_event": self.invoke_event.json(),
            "warm_p50_ratio_same_event": super::ms(self.url.p50) / super::ms(self.invoke_event.p50).max(f64::EPSILON),
            "invoke_url_sized_event_per_second": self.invoke_event_per_second,
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
    invoke(&client, name, URL_EVENT).await?;
    let mut via_invoke = Vec::with_capacity(args.warm);
    let mut via_url = Vec::with_capacity(args.warm);
    let mut via_event = Vec::with_capacity(args.warm);
    // Calls alternated one by one, the order rotated each time so no series always follows
    // the same other one.
    for i in 0..args.warm {
        for k in 0..3 {
            let t = Instant::now();
            match (i + k) % 3 {
                0 => {
                    invoke(&client, name, ECHO).await?;
                    via_invoke.push(t.elapsed());
                }
                1 => {
                    url_call(&client, &path).await?;
                    via_url.push(t.elapsed());
                }
                _ => {
                    invoke(&client, name, URL_EVENT).await?;
                    via_event.push(t.elapsed());
                }
            }
        }
    }
    let share = args.seconds / ROUNDS as f64;
    let (mut invoke_per_second, mut url_per_second, mut invoke_event_per_second) = (0.0, 0.0, 0.0);
    for round in 0..ROUNDS {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    invoke_per_second +=
                        throughput(
                            addr,
                            share,
                            CALLERS,
                            move |c| async move { invoke(&c, name, ECHO).await.map(|_| ()) },
                        )
                        .await?;
                }
                1 => {
                    let p = path.clone();
                    url_per_second += throughput(addr, share, CALLERS, move |c| {
                        let p = p.clone();
                        async move { url_call(&c, &p).await }
                    })
                    .await?;
                }
                _ => {
                    invoke_event_per_second += throughput(addr, share, CALLERS, move |c| async move {
                        invoke(&c, name, URL_EVENT).await.map(|_| ())
                    })
                    .await?;
                }
            }
        }
    }
    let rounds = ROUNDS as f64;
    let (invoke_per_second, url_per_second, invoke_event_per_second) =
        (invoke_per_second / rounds, url_per_second / rounds, invoke_event_per_second / rounds);
    Ok(UrlResult {
        invoke: Stats::of(&via_invoke),
        url: Stats::of(&via_url),
        invoke_event: Stats::of(&via_event),
        invoke_per_second,
        url_per_second,
        invoke_event_per_second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invoke_event_is_a_url_event_carrying_the_url_calls_body() {
        let v: Value = serde_json::from_str(URL_EVENT).unwrap();
        assert_eq!(v["body"], ECHO);
        assert_eq!(v["isBase64Encoded"], false);
        assert_eq!(v["headers"]["content-length"], ECHO.len().to_string());
        assert_eq!(URL_EVENT.len(), 746);
    }
}
