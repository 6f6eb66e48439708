//! The **peer** scenario (`--peer cargo-lambda`): kiln beside another local Lambda emulator,
//! with the same function binary and the same client.
//!
//! cargo-lambda's emulator runs as `cargo lambda watch --only-lambda-apis` (it serves the Invoke
//! API and a Runtime API under `/.rt`, but starts no function), in a work dir holding an empty
//! Cargo package (the emulator reads `cargo metadata` at start), with `--concurrency` set to the
//! most callers of the scenario. The bench then starts that many copies of the function by hand
//! against its Runtime API (`AWS_LAMBDA_RUNTIME_API=http://ADDR/.rt`, the function name `_` the
//! emulator announces), so that parallel callers find a function each, as on kiln.
//!
//! On each server: sequential warm calls (`--warm`), the server process's CPU time per call
//! (utime + stime of /proc/PID/stat: kiln serve, or the emulator), and throughput with 1 and 8
//! callers (`--seconds` each). Printed side by side with kiln/peer ratios.

use super::{invoke, new_client, process_cpu_stat, throughput, Api, BenchArgs, Server, Stats, TempDir, ECHO};
use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Caller counts of the throughput runs.
const CALLERS: [usize; 2] = [1, 8];
/// The function name cargo-lambda's emulator gives a function started by hand.
const PEER_FUNCTION: &str = "_";

/// One server's figures.
pub struct Side {
    pub warm: Stats,
    pub cpu_per_call: Duration,
    pub throughput: Vec<(usize, f64)>,
}

pub struct PeerResult {
    pub peer: String,
    pub memory: u32,
    pub kiln: Side,
    pub other: Side,
}

/// Where the peer's program is: `--peer-bin`, else `cargo-lambda` on PATH.
fn peer_bin(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.peer_bin {
        return Ok(p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("cargo-lambda"))
        .find(|p| p.is_file())
        .context("cargo-lambda is not on PATH (pip install cargo-lambda, or pass --peer-bin)")
}

/// Runs kiln first, then the peer, each alone on the machine.
pub async fn run(exe: &Path, work: &TempDir, function_bin: &Path, args: &BenchArgs) -> anyhow::Result<PeerResult> {
    let bin = peer_bin(args)?;
    let version = std::process::Command::new(&bin)
        .args(["lambda", "--version"])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let peer = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let most = CALLERS.iter().copied().max().unwrap_or(1);

    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(super::zip_bootstrap(function_bin)?);
    let server =
        Server::start(exe, &work.path.join("peer-kiln"), args, most * 2 + 8, args.server_log.as_deref()).await?;
    let kiln = async {
        Api::new(server.addr).create_function("bench-peer", &zip_b64, 10, args.memory).await?;
        measure(server.addr, "bench-peer", server.pid, args).await
    }
    .await;
    server.stop();
    let kiln = kiln?;
    eprintln!("bench: kiln side done");

    let mut emulator = Emulator::start(&bin, &work.path.join("peer"), most).await?;
    let other = async {
        emulator.start_functions(function_bin, most, args.memory)?;
        measure(emulator.addr, PEER_FUNCTION, emulator.pid(), args).await
    }
    .await;
    emulator.stop();
    let other = other.with_context(|| format!("{peer}: see its log in {}", emulator.log.display()))?;
    Ok(PeerResult { peer, memory: args.memory, kiln, other })
}

async fn measure(addr: SocketAddr, function: &'static str, pid: u32, args: &BenchArgs) -> anyhow::Result<Side> {
    let client = new_client(addr);
    // The first call may be the function's first (kiln: a cold start).
    for _ in 0..10 {
        invoke(&client, function, ECHO).await?;
    }
    let n = args.warm.max(1);
    let mut warm = Vec::with_capacity(n);
    let cpu_before = process_cpu_stat(pid);
    for _ in 0..n {
        let t = Instant::now();
        invoke(&client, function, ECHO).await?;
        warm.push(t.elapsed());
    }
    let cpu = process_cpu_stat(pid).saturating_sub(cpu_before);
    let mut rates = Vec::new();
    for callers in CALLERS {
        let rate =
            throughput(addr, args.seconds, callers, move |c| async move { invoke(&c, function, ECHO).await.map(drop) })
                .await?;
        rates.push((callers, rate));
    }
    Ok(Side { warm: Stats::of(&warm), cpu_per_call: cpu / u32::try_from(n).unwrap_or(u32::MAX), throughput: rates })
}

/// cargo-lambda's emulator and the functions started against it; all killed on `stop`.
struct Emulator {
    child: Child,
    functions: Vec<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Emulator {
    async fn start(bin: &Path, dir: &Path, concurrency: usize) -> anyhow::Result<Emulator> {
        std::fs::create_dir_all(dir.join("src")).with_context(|| format!("cannot create {}", dir.display()))?;
        // `cargo lambda watch` reads the package's metadata even when it builds nothing.
        std::fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"bench-peer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .context("cannot write the peer's Cargo.toml")?;
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").context("cannot write the peer's main.rs")?;
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("cannot find a free port")?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = dir.join("emulator.log");
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot share the log file")?;
        let child = std::process::Command::new(bin)
            .args(["lambda", "watch", "--only-lambda-apis", "--ignore-changes"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port", &port.to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        crate::children::track_pid(child.id());
        let mut emulator = Emulator { child, functions: Vec::new(), addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(emulator);
            }
            if let Ok(Some(status)) = emulator.child.try_wait() {
                let text = std::fs::read_to_string(&emulator.log).unwrap_or_default();
                bail!("cargo lambda watch exited at start-up ({status}):\n{}", text.trim());
            }
            if Instant::now() > deadline {
                emulator.stop();
                bail!("cargo lambda watch did not listen on {addr} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `n` copies of the function, each polling the emulator's Runtime API.
    fn start_functions(&mut self, bin: &Path, n: usize, memory: u32) -> anyhow::Result<()> {
        for _ in 0..n {
            let child = std::process::Command::new(bin)
                .env_clear()
                .env("AWS_LAMBDA_RUNTIME_API", format!("http://{}/.rt", self.addr))
                .env("AWS_LAMBDA_FUNCTION_NAME", PEER_FUNCTION)
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string())
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            crate::children::track_pid(child.id());
            self.functions.push(child);
        }
        Ok(())
    }

    fn stop(&mut self) {
        for c in self.functions.iter_mut().chain(std::iter::once(&mut self.child)) {
            crate::children::untrack_pid(c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl PeerResult {
    fn rows(&self) -> Vec<(&'static str, f64, f64, &'static str)> {
        let rate = |s: &Side, c: usize| s.throughput.iter().find(|(n, _)| *n == c).map_or(0.0, |(_, r)| *r);
        let (k, p) = (&self.kiln, &self.other);
        vec![
            ("warm p50", super::ms(k.warm.p50), super::ms(p.warm.p50), "ms"),
            ("warm p99", super::ms(k.warm.p99), super::ms(p.warm.p99), "ms"),
            ("throughput, 1 caller", rate(k, 1), rate(p, 1), "/s"),
            ("throughput, 8 callers (parallel calls)", rate(k, 8), rate(p, 8), "/s"),
            ("server CPU per warm call", k.cpu_per_call.as_secs_f64() * 1e6, p.cpu_per_call.as_secs_f64() * 1e6, "µs"),
        ]
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "kiln vs {} (its emulator, `cargo lambda watch --only-lambda-apis`, the function started \
             by hand; same hello-rust binary, same client; kiln's function has MemorySize {} MB; \
             {} warm calls)\n",
            self.peer, self.memory, self.kiln.warm.n
        );
        s += &format!("  {:<40} {:>12} {:>12} {:>10}\n", "", "kiln", "peer", "kiln/peer");
        for (what, k, p, unit) in self.rows() {
            let (kv, pv) = match unit {
                "ms" => (format!("{k:.3} ms"), format!("{p:.3} ms")),
                "/s" => (format!("{k:.0}/s"), format!("{p:.0}/s")),
                _ => (format!("{k:.0} µs"), format!("{p:.0} µs")),
            };
            s += &format!("  {what:<40} {kv:>12} {pv:>12} {:>9.2}×\n", k / p.max(1e-9));
        }
        s += "  (latency and CPU: lower is better; throughput: higher is better)\n";
        s
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|(what, k, p, unit)| json!({ "what": what, "unit": unit, "kiln": k, "peer": p, "ratio": k / p.max(1e-9) }))
            .collect();
        json!({ "peer": self.peer, "memory_mb": self.memory, "rows": rows })
    }
}
