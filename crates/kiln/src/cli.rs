//! The client verbs: `deploy`, `invoke`, `ls`, `rm`, `logs`, `status`. Each is a few calls of
//! the REST API, the same a user could make with the AWS CLI.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kiln_client::package::package;
use kiln_client::Api;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod layers;
mod refusal;
mod url;

use refusal::Refusal;

#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Create or update a function from a .zip or a folder (zipped on the fly).
    Deploy {
        /// The function's name: 1 to 64 letters, digits, hyphens or underscores.
        name: String,
        /// A .zip, or a folder to zip; for `provided*` runtimes it holds an executable `bootstrap`.
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
        /// The handler, passed to the runtime as _HANDLER: `module.function` for Python
        /// (`app.handler`), `file.function` for Node.js (`index.handler`) [default for
        /// provided* runtimes: bootstrap].
        #[arg(long)]
        handler: Option<String>,
        /// Any Lambda runtime: provided.al2023 (your own `bootstrap`), python3.X, nodejsN.x, …
        #[arg(long, default_value = "provided.al2023")]
        runtime: String,
        /// A layer version ARN; repeat for more (in order, later ones win at /opt).
        #[arg(long = "layer", value_name = "ARN")]
        layers: Vec<String>,
        /// Also give the function a URL (auth NONE) if it has none, and print it.
        #[arg(long = "url", id = "with_url")]
        with_url: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Invoke a function and print its answer.
    Invoke {
        /// The function: NAME, or NAME:QUALIFIER for a version or an alias (e.g. `hello:2`,
        /// `hello:live`).
        name: String,
        /// The event: JSON text, or @FILE to read it from a file.
        payload: Option<String>,
        /// Also print the invocation's log (to stderr).
        #[arg(long)]
        logs: bool,
        /// A version or alias to invoke (the same as NAME:QUALIFIER).
        #[arg(long)]
        qualifier: Option<String>,
        /// `RequestResponse` waits for the answer; `Event` queues the call and returns at once;
        /// `DryRun` only checks that the call would be allowed.
        #[arg(long = "type", value_name = "TYPE", default_value = "RequestResponse",
              value_parser = ["RequestResponse", "Event", "DryRun"])]
        invocation_type: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List functions.
    Ls {
        /// Print the ListFunctions answers' `Functions` as one JSON array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete a function.
    Rm {
        /// The function's name.
        name: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Print a function's log.
    Logs {
        /// The function's name.
        name: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List the interpreters the server found and what each Lambda runtime runs on.
    Runtimes {
        /// Also list the runtimes this host cannot run.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Show a function's URL (an HTTP endpoint that invokes it), creating it if it has none.
    Url(url::UrlArgs),
    /// Publish and list layers.
    #[command(subcommand)]
    Layer(layers::LayerCommand),
    /// Show live execution environments and start counts, of one function or of all.
    Status {
        /// Only this function (default: all, with the sandbox pool).
        name: Option<String>,
        /// Print the server's answer as JSON (what `GET /kiln/v1/status` gives).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Asynchronous events of a function: `kiln events NAME` lists queued, in-flight and failed
    /// ones; `kiln events redrive NAME [ID]` puts failed ones back in the queue.
    Events {
        /// NAME, or `redrive NAME [ID]`.
        #[arg(required = true, num_args = 1..=3)]
        args: Vec<String>,
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

impl Endpoint {
    /// The REST API there (kiln-client's), each request signed when AWS keys are set.
    fn api(&self) -> anyhow::Result<Api> {
        let api = Api::new(&self.url)?;
        let host = api.base().trim_start_matches("http://").split('/').next().unwrap_or_default().to_string();
        Ok(api.with_signer(std::sync::Arc::new(move |req: &mut Request<Full<Bytes>>| sign(req, &host))))
    }
}

/// How long `deploy` waits for a function to become ready.
const READY_WAIT: Duration = Duration::from_secs(30);

pub fn run(cmd: ClientCommand) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: ClientCommand) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cmd {
        ClientCommand::Layer(cmd) => layers::run(cmd).await,
        ClientCommand::Url(args) => url::run(args).await,
        ClientCommand::Deploy { name, path, memory, timeout, env, handler, runtime, layers, with_url, endpoint } => {
            let handler = match handler {
                Some(h) => h,
                None if runtime.starts_with("provided") => "bootstrap".to_string(),
                None => bail!("--handler is required with --runtime {runtime} (e.g. --handler app.handler)"),
            };
            let api = endpoint.api()?;
            let name = plain_name(&name)?;
            let zip = package(&path)?;
            // A layer may bring the bootstrap (`/opt/bootstrap`), as on Lambda.
            if runtime.starts_with("provided") && layers.is_empty() {
                check_bootstrap(&path, &zip)?;
            }
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
                    api.wait_ready(&name, READY_WAIT).await?;
                    api.call(Method::PUT, &format!("{path_fn}/configuration"), Some(config)).await?;
                    api.wait_ready(&name, READY_WAIT).await?
                }
                Err(e) if e.code() == Some(kiln_api::error::code::RESOURCE_NOT_FOUND) => {
                    config["FunctionName"] = json!(name);
                    config["Role"] = json!("arn:aws:iam::000000000000:role/kiln");
                    config["Code"] = json!({ "ZipFile": zip_b64 });
                    api.call(Method::POST, "/2015-03-31/functions", Some(config)).await?;
                    api.wait_ready(&name, READY_WAIT).await?
                }
                Err(e) => return Err(e.into()),
            };
            println!(
                "deployed {} ({} bytes, sha256 {}, {} MB, {} s timeout)",
                cfg["FunctionArn"].as_str().unwrap_or(&name),
                cfg["CodeSize"],
                cfg["CodeSha256"].as_str().unwrap_or(""),
                cfg["MemorySize"],
                cfg["Timeout"]
            );
            if with_url {
                let c = url::ensure(&api, &name, None, "NONE", "BUFFERED").await?;
                url::print(&api, &c);
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Invoke { name, payload, logs, qualifier, invocation_type, endpoint } => {
            let api = endpoint.api()?;
            let target = function_target(&name, qualifier.as_deref())?;
            let body = match payload.as_deref() {
                None => Bytes::new(),
                Some(p) if p.starts_with('@') => {
                    Bytes::from(std::fs::read(&p[1..]).with_context(|| format!("cannot read {}", &p[1..]))?)
                }
                Some(p) => Bytes::from(p.to_string()),
            };
            let mut req = api
                .request(Method::POST, &format!("/2015-03-31/functions/{target}/invocations"))
                .header("X-Amz-Invocation-Type", &invocation_type);
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
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.context("the answer was cut off")?.to_bytes();
            if !status.is_success() {
                return Err(Refusal::read(Some(&parts.headers), &body).into());
            }
            if let Some(log) = log {
                std::io::stderr().write_all(&log).ok();
            }
            if invocation_type != "RequestResponse" {
                let what = if invocation_type == "Event" { "queued; it runs in the background" } else { "allowed" };
                eprintln!("{invocation_type} {name}: {what} ({status})");
                return Ok(ExitCode::SUCCESS);
            }
            let mut out = std::io::stdout();
            out.write_all(&body).ok();
            out.write_all(b"\n").ok();
            Ok(if function_error { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        ClientCommand::Ls { json, endpoint } => {
            let api = endpoint.api()?;
            let mut marker: Option<String> = None;
            let mut functions = Vec::new();
            loop {
                let path = match &marker {
                    Some(m) => format!("/2015-03-31/functions/?Marker={m}"),
                    None => "/2015-03-31/functions/".to_string(),
                };
                let page = api.call(Method::GET, &path, None).await?;
                functions.extend(page["Functions"].as_array().into_iter().flatten().cloned());
                match page["NextMarker"].as_str() {
                    Some(m) => marker = Some(m.to_string()),
                    None => break,
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&functions).context("cannot print JSON")?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["NAME", "RUNTIME", ">MEMORY", ">TIMEOUT", "LAST MODIFIED"]);
            for f in &functions {
                table.row(vec![
                    text(&f["FunctionName"]),
                    text(&f["Runtime"]),
                    format!("{} MB", text(&f["MemorySize"])),
                    format!("{} s", text(&f["Timeout"])),
                    text(&f["LastModified"]),
                ]);
            }
            table.print(&mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Rm { name, endpoint } => {
            let api = endpoint.api()?;
            let name = plain_name(&name)?;
            api.call(Method::DELETE, &format!("/2015-03-31/functions/{name}"), None).await?;
            println!("deleted {name}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Logs { name, follow, endpoint } => {
            let api = endpoint.api()?;
            let name = plain_name(&name)?;
            let path = format!("/kiln/v1/functions/{name}/logs{}", if follow { "?follow=true" } else { "" });
            let req =
                api.request(Method::GET, &path).body(Full::new(Bytes::new())).context("cannot build the request")?;
            let resp = api.send(req).await?;
            let status = resp.status();
            let (parts, mut body) = resp.into_parts();
            if status != StatusCode::OK {
                let b = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                return Err(Refusal::read(Some(&parts.headers), &b).into());
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
        ClientCommand::Runtimes { all, endpoint } => {
            let api = endpoint.api()?;
            let v = api.call(Method::GET, "/kiln/v1/runtimes", None).await?;
            println!("{:<16} {:<12} RUNS ON", "RUNTIME", "STATUS");
            for r in v["Runtimes"].as_array().into_iter().flatten() {
                let status = r["Status"].as_str().unwrap_or("");
                if status == "unavailable" && !all {
                    continue;
                }
                let runs_on = match &r["Interpreter"] {
                    Value::Null if status == "custom" => "the function's own bootstrap".to_string(),
                    Value::Null => "-".to_string(),
                    i => format!(
                        "{} {} ({})",
                        i["Language"].as_str().unwrap_or(""),
                        i["Version"].as_str().unwrap_or(""),
                        i["Path"].as_str().unwrap_or("")
                    ),
                };
                println!("{:<16} {:<12} {}", r["Runtime"].as_str().unwrap_or(""), status, runs_on);
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Events { args, endpoint } => events_command(&endpoint.api()?, &args).await,
        ClientCommand::Status { name, json, endpoint } => {
            let api = endpoint.api()?;
            print_event_counts(&api, name.as_deref()).await;
            let path = match &name {
                Some(n) => format!("/kiln/v1/functions/{}/environments", plain_name(n)?),
                None => "/kiln/v1/status".to_string(),
            };
            let v = api.call(Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).context("cannot print JSON")?);
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(p) = v.get("SandboxPool").filter(|_| name.is_none()) {
                println!("{}", pool_line(p));
            }
            for f in v["Functions"].as_array().into_iter().flatten() {
                println!(
                    "{}: {} cold starts (init avg {:.1} ms, max {:.1} ms), {} warm, {} provisioned",
                    text(&f["FunctionName"]),
                    text(&f["ColdStarts"]),
                    f["InitDurationMsAvg"].as_f64().unwrap_or(0.0),
                    f["InitDurationMsMax"].as_f64().unwrap_or(0.0),
                    text(&f["WarmStarts"]),
                    text(&f["ProvisionedStarts"])
                );
                let envs = f["Environments"].as_array().cloned().unwrap_or_default();
                if envs.is_empty() {
                    println!("  no environments");
                    continue;
                }
                let mut table =
                    Table::new(&["ENVIRONMENT", "VERSION", "STATE", ">AGE", ">INVOCATIONS", ">MEMORY USED", ">PID"]);
                for e in envs {
                    table.row(vec![
                        e["Id"].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string(),
                        text(&e["Version"]),
                        text(&e["State"]),
                        format!("{:.0} s", e["AgeSeconds"].as_f64().unwrap_or(0.0)),
                        text(&e["Invocations"]),
                        format!(
                            "{}/{} MB",
                            e["MaxMemoryUsedBytes"].as_u64().unwrap_or(0).div_ceil(1 << 20),
                            text(&e["MemorySize"])
                        ),
                        e["Pid"].as_u64().map_or_else(|| "-".to_string(), |p| p.to_string()),
                    ]);
                }
                table.indent = 2;
                table.print(&mut std::io::stdout().lock());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The pool's line of `kiln status`.
fn pool_line(p: &Value) -> String {
    let (ready, target) = (p["Ready"].as_u64().unwrap_or(0), p["Target"].as_u64().unwrap_or(0));
    let filling = if ready < target { " (filling)" } else { "" };
    format!(
        "sandbox pool: {ready}/{target} ready{filling}; {} spawns from the pool, {} built on the spot, {} \
         failed builds",
        text(&p["PooledSpawns"]),
        text(&p["FreshSpawns"]),
        text(&p["FailedBuilds"])
    )
}

/// A JSON value as table text: strings without quotes, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// Columns sized to their widest cell; a header starting with `>` is right-aligned.
struct Table {
    headers: Vec<(String, bool)>,
    rows: Vec<Vec<String>>,
    indent: usize,
}

impl Table {
    fn new(headers: &[&str]) -> Table {
        let headers = headers
            .iter()
            .map(|h| match h.strip_prefix('>') {
                Some(h) => (h.to_string(), true),
                None => (h.to_string(), false),
            })
            .collect();
        Table { headers, rows: Vec::new(), indent: 0 }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self, out: &mut impl Write) {
        let mut widths: Vec<usize> = self.headers.iter().map(|(h, _)| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|(h, _)| h.clone()).collect();
        for cells in std::iter::once(&headers).chain(&self.rows) {
            let mut line = " ".repeat(self.indent);
            for (i, ((c, (_, right)), w)) in cells.iter().zip(&self.headers).zip(&widths).enumerate() {
                let last = i + 1 == self.headers.len();
                let cell = match (right, last) {
                    (true, _) => format!("{c:>w$}"),
                    (false, true) => c.clone(),
                    (false, false) => format!("{c:<w$}"),
                };
                line.push_str(&cell);
                if !last {
                    line.push_str("  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

/// Checks a function name (1 to 64 of `[a-zA-Z0-9-_]`) before it goes into a URL.
fn plain_name(name: &str) -> anyhow::Result<String> {
    match kiln_model::FunctionName::parse(name) {
        Ok(n) => Ok(n.as_str().to_string()),
        Err(_) => bail!("'{name}' is not a valid function name: {NAME_RULE}"),
    }
}

const NAME_RULE: &str = "a function name is 1 to 64 letters, digits, hyphens (-) or underscores (_)";

/// The path label of `invoke`: a name, `name:qualifier`, an ARN, or a name with `--qualifier`.
fn function_target(name: &str, qualifier: Option<&str>) -> anyhow::Result<String> {
    match kiln_model::FunctionRef::parse(name, qualifier) {
        Ok(r) => Ok(match r.qualifier {
            Some(q) => format!("{}:{q}", r.name),
            None => r.name.to_string(),
        }),
        Err(e) => {
            let why = match e {
                kiln_model::ModelError::InvalidParameterValue(m) => m,
                kiln_model::ModelError::Validation(_) => format!(
                    "{NAME_RULE}, optionally followed by :VERSION or :ALIAS (the same letters, or a version \
                     number)"
                ),
            };
            bail!("'{name}' is not a valid function to invoke: {why}")
        }
    }
}

/// Refuses a package whose `bootstrap` is missing or not executable: a `provided*` function
/// without one deploys but fails every invoke with `Runtime.InvalidEntrypoint`.
fn check_bootstrap(path: &Path, zip: &[u8]) -> anyhow::Result<()> {
    let mode = match zip::ZipArchive::new(std::io::Cursor::new(zip)) {
        Ok(mut a) => match a.by_name("bootstrap") {
            Ok(f) => Some(f.unix_mode().unwrap_or(0o755)),
            Err(_) => None,
        },
        // Not a zip: the server answers with its own error.
        Err(_) => return Ok(()),
    };
    match mode {
        None => bail!(
            "{} has no file named `bootstrap` at its top: a provided.* runtime starts              /var/task/bootstrap (e.g. your compiled binary, renamed bootstrap)",
            path.display()
        ),
        Some(m) if m & 0o111 == 0 => bail!(
            "`bootstrap` in {} is not executable: run `chmod +x` on it (and zip it again if it is in a .zip)",
            path.display()
        ),
        Some(_) => Ok(()),
    }
}

/// `kiln events NAME` and `kiln events redrive NAME [ID]`.
async fn events_command(api: &Api, args: &[String]) -> anyhow::Result<std::process::ExitCode> {
    if args.first().map(String::as_str) == Some("redrive") {
        let Some(name) = args.get(1) else { bail!("usage: kiln events redrive NAME [ID]") };
        let query = args.get(2).map(|id| format!("?Id={id}")).unwrap_or_default();
        let v = api.call(Method::POST, &format!("/kiln/v1/functions/{name}/events/redrive{query}"), None).await?;
        println!("{} failed events of {name} queued again", v["Redriven"]);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let [name] = args else { bail!("usage: kiln events NAME | kiln events redrive NAME [ID]") };
    let v = api.call(Method::GET, &format!("/kiln/v1/functions/{name}/events"), None).await?;
    let events = v["Events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        println!("no queued, in-flight or failed events");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!("{:>8} {:<36} {:<9} {:>9} {:>8}  LAST ERROR", "ID", "REQUEST ID", "STATE", "AGE", "ATTEMPTS");
    for e in events {
        println!(
            "{:>8} {:<36} {:<9} {:>8.0}s {:>8}  {}",
            e["Id"],
            e["RequestId"].as_str().unwrap_or(""),
            e["State"].as_str().unwrap_or(""),
            e["AgeSeconds"].as_f64().unwrap_or(0.0),
            e["Attempts"],
            e["LastError"].as_str().unwrap_or("-")
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The event queue's counts, for `kiln status`; prints nothing when the queue is empty.
async fn print_event_counts(api: &Api, name: Option<&str>) {
    let Ok(v) = api.call(Method::GET, "/kiln/v1/events", None).await else { return };
    for f in v["Functions"].as_array().into_iter().flatten() {
        let fname = f["FunctionName"].as_str().unwrap_or("");
        if name.is_some_and(|n| n != fname) {
            continue;
        }
        println!("{fname}: events {} queued, {} in flight, {} failed", f["Queued"], f["InFlight"], f["Failed"]);
    }
}

/// Signs a request (SigV4, `UNSIGNED-PAYLOAD`) when `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` are set, for a `kiln serve --auth-keys`; the region is `AWS_REGION`,
/// `AWS_DEFAULT_REGION` or us-east-1.
fn sign(req: &mut Request<Full<Bytes>>, host: &str) {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else { return };
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
    let date = kiln_api::auth::amz_date(time::OffsetDateTime::now_utc());
    let unsigned = kiln_api::auth::UNSIGNED_PAYLOAD;
    for (name, value) in [
        ("host", host),
        (kiln_api::auth::HEADER_DATE, date.as_str()),
        (kiln_api::auth::HEADER_CONTENT_SHA256, unsigned),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            req.headers_mut().insert(name, v);
        }
    }
    if let Some(token) = var("AWS_SESSION_TOKEN").and_then(|t| http::HeaderValue::from_str(&t).ok()) {
        req.headers_mut().insert("x-amz-security-token", token);
    }
    let parts = kiln_api::auth::RequestParts::of(req);
    let expected = kiln_api::auth::Expected { region: &region, service: kiln_api::wire::SERVICE_LAMBDA };
    let auth = kiln_api::auth::authorization(&parts, &key, &secret, &date, expected, unsigned);
    if let Ok(v) = http::HeaderValue::from_str(&auth) {
        req.headers_mut().insert(http::header::AUTHORIZATION, v);
    }
}
