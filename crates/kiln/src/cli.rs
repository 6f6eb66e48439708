//! The client verbs: `deploy`, `invoke`, `ls`, `rm`, `logs`, `status`. Each is a few calls of
//! the REST API, the same a user could make with the AWS CLI.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod layers;

#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Create or update a function from a .zip or a folder (zipped on the fly).
    Deploy {
        name: String,
        path: PathBuf,
        /// Memory in MB (128–10240).
        #[arg(long)]
        memory: Option<u32>,
        /// Timeout in seconds (1–900).
        #[arg(long)]
        timeout: Option<u32>,
        /// An environment variable, KEY=VALUE; repeat for more.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Passed to the runtime as _HANDLER.
        #[arg(long, default_value = "bootstrap")]
        handler: String,
        #[arg(long, default_value = "provided.al2023")]
        runtime: String,
        /// A layer version ARN; repeat for more (in order, later ones win at /opt).
        #[arg(long = "layer", value_name = "ARN")]
        layers: Vec<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Invoke a function and print its answer.
    Invoke {
        name: String,
        /// The event: JSON text, or @FILE to read it from a file.
        payload: Option<String>,
        /// Also print the invocation's log (to stderr).
        #[arg(long)]
        logs: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List functions.
    Ls {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete a function.
    Rm {
        name: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Print a function's log.
    Logs {
        name: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Publish and list layers.
    #[command(subcommand)]
    Layer(layers::LayerCommand),
    /// Show live execution environments and start counts, of one function or of all.
    Status {
        name: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

#[derive(clap::Args)]
pub struct Endpoint {
    /// Where kiln serves its API.
    #[arg(long = "endpoint", env = "KILN_ENDPOINT", default_value = "http://127.0.0.1:9000")]
    url: String,
}

pub fn run(cmd: ClientCommand) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: ClientCommand) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cmd {
        ClientCommand::Layer(cmd) => layers::run(cmd).await,
        ClientCommand::Deploy { name, path, memory, timeout, env, handler, runtime, layers, endpoint } => {
            let api = Api::new(&endpoint)?;
            let zip = package(&path)?;
            let mut vars = serde_json::Map::new();
            for kv in &env {
                let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv} is not KEY=VALUE"))?;
                vars.insert(k.to_string(), json!(v));
            }
            let mut config = json!({ "Handler": handler, "Runtime": runtime });
            if let Some(m) = memory {
                config["MemorySize"] = json!(m);
            }
            if let Some(t) = timeout {
                config["Timeout"] = json!(t);
            }
            if !env.is_empty() {
                config["Environment"] = json!({ "Variables": vars });
            }
            if !layers.is_empty() {
                config["Layers"] = json!(layers);
            }
            let zip_b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
            let path_fn = format!("/2015-03-31/functions/{name}");
            let exists = api.call(Method::GET, &format!("{path_fn}/configuration"), None).await;
            let cfg = match exists {
                Ok(_) => {
                    api.call(Method::PUT, &format!("{path_fn}/code"), Some(json!({ "ZipFile": zip_b64 }))).await?;
                    wait_ready(&api, &name).await?;
                    api.call(Method::PUT, &format!("{path_fn}/configuration"), Some(config)).await?;
                    wait_ready(&api, &name).await?
                }
                Err(e) if e.to_string().starts_with("ResourceNotFoundException") => {
                    config["FunctionName"] = json!(name);
                    config["Role"] = json!("arn:aws:iam::000000000000:role/kiln");
                    config["Code"] = json!({ "ZipFile": zip_b64 });
                    api.call(Method::POST, "/2015-03-31/functions", Some(config)).await?;
                    wait_ready(&api, &name).await?
                }
                Err(e) => return Err(e),
            };
            println!(
                "deployed {} ({} bytes, sha256 {}, {} MB, {} s timeout)",
                cfg["FunctionArn"].as_str().unwrap_or(&name),
                cfg["CodeSize"],
                cfg["CodeSha256"].as_str().unwrap_or(""),
                cfg["MemorySize"],
                cfg["Timeout"]
            );
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Invoke { name, payload, logs, endpoint } => {
            let api = Api::new(&endpoint)?;
            let body = match payload.as_deref() {
                None => Bytes::new(),
                Some(p) if p.starts_with('@') => {
                    Bytes::from(std::fs::read(&p[1..]).with_context(|| format!("cannot read {}", &p[1..]))?)
                }
                Some(p) => Bytes::from(p.to_string()),
            };
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(format!("{}/2015-03-31/functions/{name}/invocations", api.base));
            if logs {
                req = req.header("X-Amz-Log-Type", "Tail");
            }
            let req = req.body(Full::new(body)).context("cannot build the request")?;
            let resp = api.send(req).await?;
            let status = resp.status();
            let function_error = resp.headers().get("x-amz-function-error").is_some();
            let log = resp
                .headers()
                .get("x-amz-log-result")
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.as_bytes()).ok());
            let body = resp.into_body().collect().await.context("the answer was cut off")?.to_bytes();
            if !status.is_success() {
                bail!("{}", aws_error(&body));
            }
            if let Some(log) = log {
                std::io::stderr().write_all(&log).ok();
            }
            let mut out = std::io::stdout();
            out.write_all(&body).ok();
            out.write_all(b"\n").ok();
            Ok(if function_error { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        ClientCommand::Ls { endpoint } => {
            let api = Api::new(&endpoint)?;
            let mut marker: Option<String> = None;
            println!("{:<40} {:<16} {:>7} {:>8}  LAST MODIFIED", "NAME", "RUNTIME", "MEMORY", "TIMEOUT");
            loop {
                let path = match &marker {
                    Some(m) => format!("/2015-03-31/functions/?Marker={m}"),
                    None => "/2015-03-31/functions/".to_string(),
                };
                let page = api.call(Method::GET, &path, None).await?;
                for f in page["Functions"].as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<16} {:>4} MB {:>6} s  {}",
                        f["FunctionName"].as_str().unwrap_or(""),
                        f["Runtime"].as_str().unwrap_or(""),
                        f["MemorySize"],
                        f["Timeout"],
                        f["LastModified"].as_str().unwrap_or("")
                    );
                }
                match page["NextMarker"].as_str() {
                    Some(m) => marker = Some(m.to_string()),
                    None => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Rm { name, endpoint } => {
            let api = Api::new(&endpoint)?;
            api.call(Method::DELETE, &format!("/2015-03-31/functions/{name}"), None).await?;
            println!("deleted {name}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Logs { name, follow, endpoint } => {
            let api = Api::new(&endpoint)?;
            let uri = format!("{}/kiln/v1/functions/{name}/logs{}", api.base, if follow { "?follow=true" } else { "" });
            let req = Request::builder().uri(uri).body(Full::new(Bytes::new())).context("cannot build the request")?;
            let resp = api.send(req).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            if status != StatusCode::OK {
                let b = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                bail!("{}", aws_error(&b));
            }
            let mut out = std::io::stdout();
            while let Some(frame) = body.frame().await {
                let frame = frame.context("the log stream broke off")?;
                if let Some(data) = frame.data_ref() {
                    out.write_all(data).ok();
                    out.flush().ok();
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Status { name, endpoint } => {
            let api = Api::new(&endpoint)?;
            let path = match &name {
                Some(n) => format!("/kiln/v1/functions/{n}/environments"),
                None => "/kiln/v1/status".to_string(),
            };
            let v = api.call(Method::GET, &path, None).await?;
            if let Some(p) = v.get("SandboxPool").filter(|_| name.is_none()) {
                println!(
                    "sandbox pool: {}/{} ready; {} spawns from the pool, {} built on the spot, {} failed builds",
                    p["Ready"], p["Target"], p["PooledSpawns"], p["FreshSpawns"], p["FailedBuilds"]
                );
            }
            for f in v["Functions"].as_array().into_iter().flatten() {
                println!(
                    "{}: {} cold starts (init avg {:.1} ms, max {:.1} ms), {} warm, {} provisioned",
                    f["FunctionName"].as_str().unwrap_or(""),
                    f["ColdStarts"],
                    f["InitDurationMsAvg"].as_f64().unwrap_or(0.0),
                    f["InitDurationMsMax"].as_f64().unwrap_or(0.0),
                    f["WarmStarts"],
                    f["ProvisionedStarts"]
                );
                let envs = f["Environments"].as_array().cloned().unwrap_or_default();
                if envs.is_empty() {
                    println!("  no environments");
                    continue;
                }
                println!(
                    "  {:<34} {:<9} {:<13} {:>8} {:>11} {:>14}",
                    "ENVIRONMENT", "VERSION", "STATE", "AGE", "INVOCATIONS", "MEMORY"
                );
                for e in envs {
                    println!(
                        "  {:<34} {:<9} {:<13} {:>7.0}s {:>11} {:>6}/{:<4} MB",
                        e["Id"].as_str().filter(|s| !s.is_empty()).unwrap_or("-"),
                        e["Version"].as_str().unwrap_or(""),
                        e["State"].as_str().unwrap_or(""),
                        e["AgeSeconds"].as_f64().unwrap_or(0.0),
                        e["Invocations"],
                        e["MaxMemoryUsedBytes"].as_u64().unwrap_or(0).div_ceil(1 << 20),
                        e["MemorySize"]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Waits until the function is `Active` and its last update is over; returns its configuration.
async fn wait_ready(api: &Api, name: &str) -> anyhow::Result<Value> {
    for _ in 0..600 {
        let cfg = api.call(Method::GET, &format!("/2015-03-31/functions/{name}/configuration"), None).await?;
        let state = cfg["State"].as_str().unwrap_or("");
        let update = cfg["LastUpdateStatus"].as_str().unwrap_or("Successful");
        match (state, update) {
            ("Failed", _) | (_, "Failed") => bail!(
                "the function could not be made ready: {}",
                cfg["StateReason"].as_str().or(cfg["LastUpdateStatusReason"].as_str()).unwrap_or("unknown reason")
            ),
            ("Active", "Successful") => return Ok(cfg),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    bail!("the function did not become ready within 30 seconds")
}

/// A .zip as it is, or a folder zipped with its file modes.
fn package(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.is_file() {
        return std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    }
    if !path.is_dir() {
        bail!("{} is neither a .zip nor a folder", path.display());
    }
    use std::os::unix::fs::PermissionsExt;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut stack = vec![path.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let p = entry.path();
            let meta = std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
            if meta.is_dir() {
                stack.push(p);
            } else {
                files.push((p, meta.permissions().mode()));
            }
        }
    }
    files.sort();
    for (p, mode) in files {
        let rel = p.strip_prefix(path).unwrap_or(&p).to_string_lossy().into_owned();
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode & 0o777);
        w.start_file(rel, opts).context("cannot build the zip")?;
        let data = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        w.write_all(&data).context("cannot build the zip")?;
    }
    Ok(w.finish().context("cannot build the zip")?.into_inner())
}

struct Api {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(endpoint: &Endpoint) -> anyhow::Result<Self> {
        let base = endpoint.url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!("the endpoint must be an http:// URL, not {base}");
        }
        Ok(Self { base, client: Client::builder(TokioExecutor::new()).build_http() })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        self.client
            .request(req)
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach kiln at {}; is `kiln serve` running?", self.base))
    }

    /// A JSON call; a non-2xx answer becomes an error reading `<Code>: <message>`.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .context("cannot build the request")?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("the answer was cut off")?.to_bytes();
        if !status.is_success() {
            bail!("{}", aws_error(&bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("kiln answered with something that is not JSON")
    }
}

fn aws_error(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let code = v["__type"].as_str().unwrap_or("Error");
            let msg = v["message"].as_str().or(v["Message"].as_str()).unwrap_or("");
            format!("{code}: {msg}")
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}
