//! `kiln serve`: opens the data dir, builds the sandbox backend and the engine, and serves the
//! REST API until SIGTERM or SIGINT.

use crate::datalock::DataDirLock;
use anyhow::Context as _;
use kiln_engine::{Engine, EngineOptions};
use kiln_model::Partition;
use kiln_sandbox::Backend;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address of the REST API.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Where functions, code and logs are kept [default: $XDG_DATA_HOME/kiln or ~/.local/share/kiln].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How environments are isolated: `sandbox` (namespaces, cgroups, seccomp; needs root) or
    /// `none` (plain child processes; for machines without privileges).
    #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "none"])]
    isolation: String,
    /// Region shown in ARNs and AWS_REGION.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Account-wide concurrency (`ConcurrentExecutions`); at least 100 stay unreserved.
    #[arg(long, default_value_t = kiln_model::limits::ACCOUNT_CONCURRENCY_DEFAULT, value_parser = clap::value_parser!(u32).range(100..))]
    concurrency_limit: u32,
    /// How long an idle on-demand environment is kept warm (e.g. `500ms`, `2s`, `10m`, `1h`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    keep_alive: Duration,
    /// Sum of MemorySize of all live environments (e.g. `4096` MB, `512M`, `16G`)
    /// [default: three quarters of the machine's memory].
    #[arg(long, value_parser = parse_megabytes)]
    memory_budget: Option<u64>,
    /// Wait before the first retry of an asynchronous event whose function failed (the second
    /// retry waits twice as long), e.g. `1m` (Lambda's) or `1s` for tests.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    async_retry_base: Duration,
    /// The interpreter of a managed runtime, as NAME=PATH (e.g. python3.12=/usr/bin/python3.12);
    /// repeatable. Without it kiln finds interpreters on PATH, in /usr/bin, /usr/local/bin and
    /// pyenv's versions.
    #[arg(long = "runtime", value_name = "NAME=PATH")]
    runtimes: Vec<String>,
    /// Delete function log streams whose last event is older than this (e.g. `7d`, `12h`)
    /// [default: keep everything]; a log group's PutRetentionPolicy wins.
    #[arg(long, value_parser = parse_retention)]
    log_retention: Option<Duration>,
    /// Bytes of log one environment (one log stream) keeps at most (e.g. `64M`); then a marker
    /// line and the rest is dropped.
    #[arg(long, default_value = "64M", value_parser = parse_megabytes)]
    log_stream_max: u64,
    /// Bytes of log one function keeps at most (e.g. `512M`, `2G`); its oldest streams go first.
    #[arg(long, default_value = "512M", value_parser = parse_megabytes)]
    log_function_max: u64,
    /// The web console at `/`: `on`, `read-only` (no invoking from the page) or `off`
    /// [default: on when listening on a loopback address, read-only otherwise].
    #[arg(long, value_parser = ["on", "read-only", "off"])]
    console: Option<String>,
    /// Require AWS Signature Version 4 on every API request, with the keys of this file (AWS's
    /// shared-credentials format: `[name]` sections with `aws_access_key_id`,
    /// `aws_secret_access_key`, `account_id` and optionally `concurrency_limit`); each key acts
    /// in its own account. SIGHUP re-reads the file.
    #[arg(long, value_name = "FILE")]
    auth_keys: Option<PathBuf>,
    /// Serve without authentication on an address other than loopback (anyone who reaches the
    /// port can run code on this machine).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Format of kiln's own log on stderr: `text` or `json` (one object per line, for log shippers).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Threads that run kiln's requests and Runtime APIs [default: one per CPU]. A warm call
    /// wakes no second thread with the default either, and one thread serves many callers at
    /// once more slowly (docs/benchmarks.md).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

/// `7d`, or a duration as `parse_duration` reads it; never zero.
fn parse_retention(s: &str) -> Result<Duration, String> {
    let d = match s.trim().strip_suffix('d') {
        Some(days) => days
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(|d| Duration::from_secs_f64(d * 86_400.0))
            .ok_or_else(|| format!("'{s}' is not a retention like 7d, 12h or 30m"))?,
        None => parse_duration(s)?,
    };
    if d.is_zero() {
        return Err("the log retention must be longer than zero".into());
    }
    Ok(d)
}

/// `500ms`, `2s`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 500ms, 2s, 10m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("'{s}' is not a duration like 500ms, 2s, 10m or 1h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `4096` (MB), `512M`, `16G`.
fn parse_megabytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|_| format!("'{s}' is not a size like 4096, 512M or 16G"))
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kiln");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/kiln"),
        None => PathBuf::from("kiln-data"),
    }
}

/// A short id of the data dir; every name the sandbox leaves in the system carries it, so two
/// servers with different data dirs never touch each other's environments.
fn instance_id(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

pub fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::logging::init(&args.log_format);
    // Before anything is opened: the soft descriptor limit goes up to the hard one, and a reserve
    // is kept so that clean-up and the REST API never starve (kiln-engine's `fds`).
    match kiln_engine::fds::raise_limit() {
        Ok(b) => tracing::debug!(
            limit = b.soft,
            reserve = b.reserve,
            runtime_api_connections = b.runtime_api_connections,
            "descriptor limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the descriptor limit"),
    }
    // The keys before anything else: a bad file or an unsafe address stops kiln at once.
    let keys = match &args.auth_keys {
        Some(path) => Some((path.clone(), read_keys(path)?)),
        None if args.addr.ip().is_loopback() => None,
        None if args.insecure_no_auth => {
            tracing::warn!(
                "authentication is off on {}: anyone who reaches this port can deploy and run code on this machine",
                args.addr
            );
            None
        }
        None => anyhow::bail!(
            "refusing to listen on {} without authentication: give --auth-keys FILE, or --insecure-no-auth to accept anyone",
            args.addr
        ),
    };
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
    // First, before anything in the data dir or the system is touched: another live server on
    // this data dir would otherwise lose its environments to our clean-up of leftovers.
    let mut lock = DataDirLock::acquire(&data_dir)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.into());
    }
    let runtime = runtime.enable_all().build().context("cannot start tokio")?;
    let memory_budget_mb = args.memory_budget.unwrap_or_else(kiln_client::host::default_memory_budget_mb);
    let mut runtimes = kiln_engine::runtimes::Runtimes::discover(&args.runtimes)?;
    runtimes.install(&data_dir)?;
    let opts = EngineOptions {
        data_dir,
        partition: Partition { region: args.region, ..Partition::default() },
        init_timeout: Duration::from_secs(kiln_model::limits::INIT_TIMEOUT_SECS),
        concurrency_limit: args.concurrency_limit,
        keep_alive: args.keep_alive,
        memory_budget_mb,
        async_retry_base: args.async_retry_base,
        runtimes: Arc::new(runtimes),
        logs: kiln_engine::logs::LogOptions {
            stream_max_bytes: args.log_stream_max * 1024 * 1024,
            function_max_bytes: args.log_function_max * 1024 * 1024,
            retention: args.log_retention,
        },
    };
    let console = match args.console.as_deref().and_then(kiln_api::console::ConsoleMode::parse) {
        Some(mode) => mode,
        None if args.addr.ip().is_loopback() => kiln_api::console::ConsoleMode::On,
        None => kiln_api::console::ConsoleMode::ReadOnly,
    };
    let api = kiln_api::ApiOptions { console };
    let served = runtime.block_on(serve(args.addr, opts, args.isolation, api, keys, &mut lock));
    // The lock goes last: until the runtime's tasks have dropped the backend, its environments
    // are still this server's.
    drop(runtime);
    drop(lock);
    served.map(|()| std::process::ExitCode::SUCCESS)
}

/// How long start-up waits for the pool of blank sandboxes to fill before it accepts calls.
const POOL_FILL_WAIT: Duration = Duration::from_secs(10);

async fn serve(
    addr: SocketAddr,
    opts: EngineOptions,
    isolation: String,
    api: kiln_api::ApiOptions,
    keys: Option<(PathBuf, kiln_api::keys::Keys)>,
    lock: &mut DataDirLock,
) -> anyhow::Result<()> {
    let data_dir = opts.data_dir.clone();
    let mut opts = opts;
    let template = opts.clone();
    // The port before any clean-up: a server that cannot listen must leave everything as it is.
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("cannot read the listening address")?;
    if let Err(e) = lock.record(Some(&local.to_string())) {
        tracing::warn!(error = %e, "cannot write the address into the data dir's lock file");
    }
    let mut linux = None;
    let backend: Arc<dyn Backend> = match isolation.as_str() {
        "none" => {
            tracing::warn!("isolation is off: functions run as plain processes with kiln's privileges");
            Arc::new(kiln_sandbox::process::ProcessBackend)
        }
        _ => {
            // Holding the data dir's lock, every leftover of this instance is a dead server's.
            let b = sandbox_backend(&data_dir, opts.runtimes.read_only_binds())?;
            linux = Some(b.clone());
            b
        }
    };
    let found: Vec<String> = opts
        .runtimes
        .interpreters()
        .iter()
        .map(|i| {
            let pinned = i.pinned_for.as_deref().map(|r| format!(" for {r}")).unwrap_or_default();
            format!("{} ({}{pinned})", i.describe(), i.path.display())
        })
        .collect();
    if let Some(limit) =
        keys.as_ref().and_then(|(_, k)| k.accounts().get(kiln_api::keys::DEFAULT_ACCOUNT).copied().flatten())
    {
        opts.concurrency_limit = limit;
    }
    let engine = Engine::open(opts, backend.clone()).map_err(|e| anyhow::anyhow!("{}", e.chain()))?;
    let accounts = match keys {
        None => None,
        Some((path, keys)) => {
            let n = keys.len();
            let base_limit = template.concurrency_limit;
            let accounts = kiln_api::accounts::Accounts::new(
                template.partition.region.clone(),
                keys,
                engine.clone(),
                account_opener(template, backend.clone()),
            )?
            .with_base_limit(base_limit);
            tracing::info!("authentication on: {n} keys from {}, SIGHUP re-reads it", path.display());
            let accounts = Arc::new(accounts);
            tokio::spawn(reload_on_hangup(path, accounts.clone()));
            Some(accounts)
        }
    };
    if let Some(b) = linux {
        // The first calls after a start should find blanks ready, not build sandboxes on the
        // spot; connections made meanwhile wait in the listen queue.
        let full = tokio::task::spawn_blocking(move || b.wait_pool_full(POOL_FILL_WAIT)).await.unwrap_or(false);
        if !full {
            tracing::warn!("the sandbox pool is still filling; `kiln status` shows its progress");
        }
    }
    let detail = if isolation == "none" { "none (plain processes)" } else { "sandbox (namespaces, cgroups, seccomp)" };
    tracing::info!("kiln listening on http://{local} (data dir {}, isolation {detail})", data_dir.display());
    tracing::info!("console ({}) at http://{local}/, metrics at http://{local}/metrics", api.console.as_str());
    tracing::info!("managed runtimes: {}", if found.is_empty() { "none found".into() } else { found.join(", ") });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let engines = match &accounts {
        Some(a) => a.engines(),
        None => vec![engine.clone()],
    };
    let server = tokio::spawn(kiln_api::serve_accounts(engine.clone(), listener, stop_rx, api, accounts));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for e in &engines {
        e.shutdown();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    // The log writer batches lines; what the last calls logged goes to disk before kiln exits.
    for e in &engines {
        let _ = tokio::time::timeout(Duration::from_secs(5), e.logs().flush()).await;
    }
    Ok(())
}

/// Reads and checks a keys file; the error names the file and the line.
fn read_keys(path: &std::path::Path) -> anyhow::Result<kiln_api::keys::Keys> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the keys file {}", path.display()))?;
    kiln_api::keys::Keys::parse(&text).map_err(|e| anyhow::anyhow!("bad keys file {}: {e}", path.display()))
}

/// Opens an account's engine: its own data dir under `<data>/accounts/<id>`, its ARNs, its
/// concurrency limit; the sandbox backend and managed runtimes are shared.
fn account_opener(template: EngineOptions, backend: Arc<dyn Backend>) -> kiln_api::accounts::Opener {
    Box::new(move |account: &str, limit: Option<u32>| {
        let mut opts = template.clone();
        opts.data_dir = template.data_dir.join("accounts").join(account);
        opts.partition = Partition { account_id: account.to_string(), ..template.partition.clone() };
        if let Some(limit) = limit {
            opts.concurrency_limit = limit;
        }
        Engine::open(opts, backend.clone()).map_err(|e| e.chain().to_string())
    })
}

/// SIGHUP: the keys file again; a file kiln cannot use leaves the keys in force as they were.
async fn reload_on_hangup(path: PathBuf, accounts: Arc<kiln_api::accounts::Accounts>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: the keys file will not be re-read");
        return;
    };
    while hup.recv().await.is_some() {
        match read_keys(&path).map(|k| (k.len(), accounts.reload(k))) {
            Ok((n, Ok(()))) => tracing::info!("reloaded {n} keys from {}", path.display()),
            Ok((_, Err(e))) => tracing::warn!("keeping the previous keys: {e}"),
            Err(e) => tracing::warn!("keeping the previous keys: {e:#}"),
        }
    }
}

fn sandbox_backend(
    data_dir: &std::path::Path,
    read_only_binds: Vec<(PathBuf, PathBuf)>,
) -> anyhow::Result<Arc<kiln_sandbox::linux::LinuxBackend>> {
    let state_dir = data_dir.join("sandbox");
    let opts = kiln_sandbox::linux::LinuxOptions { read_only_binds, ..Default::default() };
    match kiln_sandbox::linux::LinuxBackend::with_options(&instance_id(data_dir), &state_dir, opts) {
        Ok(b) => Ok(Arc::new(b)),
        // One clear line at start-up, not a failure inside the first invocation.
        Err(e @ kiln_sandbox::SandboxError::Privileges(_)) => anyhow::bail!("{e}"),
        Err(e) => Err(anyhow::Error::new(e).context("cannot set up sandboxes")),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
