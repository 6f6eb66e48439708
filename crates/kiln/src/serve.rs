//! `kiln serve`: opens the data dir, builds the sandbox backend and the engine, and serves the
//! REST API until SIGTERM or SIGINT.

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

/// Three quarters of the machine's memory, in MB.
fn default_memory_budget() -> u64 {
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(8 * 1024 * 1024);
    total_kb / 1024 * 3 / 4
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
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
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    let memory_budget_mb = args.memory_budget.unwrap_or_else(default_memory_budget);
    let opts = EngineOptions {
        data_dir,
        partition: Partition { region: args.region, ..Partition::default() },
        init_timeout: Duration::from_secs(kiln_model::limits::INIT_TIMEOUT_SECS),
        concurrency_limit: args.concurrency_limit,
        keep_alive: args.keep_alive,
        memory_budget_mb,
    };
    runtime.block_on(serve(args.addr, opts, args.isolation))?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve(addr: SocketAddr, opts: EngineOptions, isolation: String) -> anyhow::Result<()> {
    let data_dir = opts.data_dir.clone();
    let backend: Arc<dyn Backend> = match isolation.as_str() {
        "none" => {
            tracing::warn!("isolation is off: functions run as plain processes with kiln's privileges");
            Arc::new(kiln_sandbox::process::ProcessBackend)
        }
        _ => sandbox_backend(&data_dir)?,
    };
    let engine = Engine::open(opts, backend.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("cannot read the listening address")?;
    tracing::info!("kiln listening on http://{local} (data dir {}, isolation {})", data_dir.display(), backend.name());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(kiln_api::serve(engine.clone(), listener, stop_rx));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    engine.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    // The log writer batches lines; what the last calls logged goes to disk before kiln exits.
    let _ = tokio::time::timeout(Duration::from_secs(5), engine.logs().flush()).await;
    Ok(())
}

fn sandbox_backend(data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Backend>> {
    let state_dir = data_dir.join("sandbox");
    match kiln_sandbox::linux::LinuxBackend::new(&instance_id(data_dir), &state_dir) {
        Ok(b) => Ok(Arc::new(b)),
        // One clear line at start-up, not a failure inside the first invocation.
        Err(e @ kiln_sandbox::SandboxError::Privileges(_)) => anyhow::bail!("{e}"),
        Err(e) => Err(anyhow::Error::new(e).context("cannot set up sandboxes")),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
