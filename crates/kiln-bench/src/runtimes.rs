//! The **runtimes** scenario: a trivial Python and Node.js handler on kiln's own runtime
//! clients, cold and warm through kiln, each beside the same client started bare on the host.
//!
//! The bench finds the host's interpreters as `kiln serve` does and writes the same launchers
//! (a `#!` line naming the interpreter, and the client it loads) into its work dir. For each
//! language, on one fresh server:
//!
//! - **cold**: as the example's cold scenario (a configuration update retires the environment,
//!   the bench waits until its processes are gone, then times one invoke), split with the
//!   engine's REPORT lines into init (sandbox + interpreter + client until its first `GET next`),
//!   invoke and the rest.
//! - **warm**: sequential invokes on one warm environment.
//! - **bare start**: the launcher as a plain child process (no sandbox) against the bench's own
//!   Runtime API, with the handler in a task dir of the bench: spawn → first response posted.
//!   These alternate with the cold starts in blocks (`BLOCK` in the crate root), so that both
//!   sides see the same stretches of the host's speed.
//! - **bare warm**: the same process, started once, answering events in sequence: event handed
//!   to its waiting `next` → response posted.
//!
//! Goals: cold p50 ≤ bare start p50 + 2 ms; warm p50 ≤ bare warm p50 + one loopback request
//! p50 + 0.1 ms. The functions get `--runtime-memory` (one vCPU by default, as the bare process
//! has): at 128 MB the sandbox's CPU share (10 % of a CPU) and not kiln would set an
//! interpreter's cold start.

use super::{
    cold_split, echo_request, floor_latency, invoke, ms, new_client, process_tree, start_echo_server, warm_calls, Api,
    Bare, BenchArgs, ColdSplit, Server, Stats, TempDir, ECHO,
};
use anyhow::{bail, Context as _};
use base64::Engine as _;
use http::Method;
use kiln_engine::runtimes::{Interpreter, Kind, Launch, Runtimes};
use kiln_model::Runtime;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Python handler of the scenario.
const PYTHON_APP: (&str, &str) = ("app.py", "def handler(event, context):\n    return event\n");
/// Node.js handler of the scenario (CommonJS, async).
const NODE_APP: (&str, &str) = ("index.js", "exports.handler = async (event) => event;\n");

/// The figures of one language.
pub struct LangResult {
    pub runtime: String,
    pub interpreter: String,
    pub cold: Stats,
    pub cold_split: Option<ColdSplit>,
    pub bare_start: Stats,
    pub warm: Stats,
    pub bare_warm: Stats,
}

pub struct RuntimesResult {
    pub memory: u32,
    /// One loopback request of the bench's client to its echo server.
    pub floor1: Stats,
    pub langs: Vec<LangResult>,
    /// Languages without an interpreter on this host.
    pub skipped: Vec<&'static str>,
}

/// One goal, evaluated.
#[derive(Debug, PartialEq)]
pub struct Goal {
    pub what: String,
    pub value_ms: f64,
    pub goal_ms: f64,
    pub met: bool,
}

/// The two goals of a language, from the p50s in ms.
pub fn goals(cold: f64, bare_start: f64, warm: f64, bare_warm: f64, floor1: f64) -> [Goal; 2] {
    let cold_goal = bare_start + 2.0;
    let warm_goal = bare_warm + floor1 + 0.1;
    [
        Goal {
            what: "cold p50 ≤ bare start p50 + 2 ms".into(),
            value_ms: cold,
            goal_ms: cold_goal,
            met: cold <= cold_goal,
        },
        Goal {
            what: "warm p50 ≤ bare warm p50 + 1 loopback request + 0.1 ms".into(),
            value_ms: warm,
            goal_ms: warm_goal,
            met: warm <= warm_goal,
        },
    ]
}

/// The Lambda runtime value that runs exactly on `i` (`python3.11`, `nodejs20.x`), if Lambda has
/// one.
pub fn runtime_for(kind: Kind, version: (u32, u32, u32)) -> Option<Runtime> {
    let name = match kind {
        Kind::Python => format!("python{}.{}", version.0, version.1),
        Kind::Node => format!("nodejs{}.x", version.0),
    };
    Runtime::parse(&name).ok()
}

impl LangResult {
    fn goals(&self, floor1: &Stats) -> [Goal; 2] {
        goals(ms(self.cold.p50), ms(self.bare_start.p50), ms(self.warm.p50), ms(self.bare_warm.p50), ms(floor1.p50))
    }
}

impl RuntimesResult {
    pub fn render(&self) -> String {
        let mut out = format!(
            "\nManaged runtimes (trivial handler on kiln's runtime client, MemorySize {} MB; loopback request p50 {:.3} ms)\n",
            self.memory,
            ms(self.floor1.p50)
        );
        let row = |label: &str, s: &Stats| {
            format!(
                "  {label:<44} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  (n = {})\n",
                ms(s.p50),
                ms(s.p90),
                ms(s.p99),
                s.n
            )
        };
        for l in &self.langs {
            out.push_str(&format!("{} on {}\n", l.runtime, l.interpreter));
            out.push_str(&row("cold invoke through kiln", &l.cold));
            if let Some(s) = &l.cold_split {
                out.push_str(&format!(
                    "    split (p50): init {:.2} ms, invoke {:.2} ms, rest {:.2} ms\n",
                    ms(s.init.p50),
                    ms(s.invoke.p50),
                    ms(s.rest.p50)
                ));
            }
            out.push_str(&row("baseline: bare start → response", &l.bare_start));
            out.push_str(&row("warm invoke through kiln", &l.warm));
            out.push_str(&row("baseline: bare warm (client alone)", &l.bare_warm));
            for g in l.goals(&self.floor1) {
                out.push_str(&format!(
                    "  goal {:<56} {:>8.2} ms vs {:>8.2} ms  {}\n",
                    g.what,
                    g.value_ms,
                    g.goal_ms,
                    if g.met { "met" } else { "NOT MET" }
                ));
            }
        }
        for s in &self.skipped {
            out.push_str(&format!("{s}: no interpreter on this host, skipped\n"));
        }
        out
    }

    pub fn json(&self) -> Value {
        let langs: Vec<Value> = self
            .langs
            .iter()
            .map(|l| {
                let goals: Vec<Value> = l
                    .goals(&self.floor1)
                    .iter()
                    .map(|g| json!({ "what": g.what, "value_ms": g.value_ms, "goal_ms": g.goal_ms, "met": g.met }))
                    .collect();
                json!({
                    "runtime": l.runtime,
                    "interpreter": l.interpreter,
                    "cold": l.cold.json(),
                    "cold_split": l.cold_split.as_ref().map(|s| json!({
                        "init": s.init.json(), "invoke": s.invoke.json(), "rest": s.rest.json(),
                    })),
                    "bare_start": l.bare_start.json(),
                    "warm": l.warm.json(),
                    "bare_warm": l.bare_warm.json(),
                    "goals": goals,
                })
            })
            .collect();
        json!({ "memory_mb": self.memory, "loopback_1": self.floor1.json(), "languages": langs, "skipped": self.skipped })
    }
}

/// Runs the scenario: baselines first, then each language on its own fresh server.
pub async fn run(
    exe: &Path,
    work: &TempDir,
    servers: &tokio::runtime::Handle,
    args: &BenchArgs,
) -> anyhow::Result<RuntimesResult> {
    let mut found = Runtimes::discover(&[]).context("cannot look for interpreters")?;
    let rt_dir = work.path.join("runtimes");
    found.install(&rt_dir).context("cannot write the runtime clients")?;
    let echo = start_echo_server(servers).await?;
    let floor1 = Stats::of(&floor_latency(echo, args.warm, 1).await?);
    // Checks the echo server once more, so a dead one fails here and not in a goal.
    echo_request(new_client(echo)).await?;
    let mut result = RuntimesResult { memory: args.runtime_memory, floor1, langs: Vec::new(), skipped: Vec::new() };
    for (kind, label, app) in [(Kind::Python, "Python", PYTHON_APP), (Kind::Node, "Node.js", NODE_APP)] {
        let Some((rt, interp)) = pick(&found, kind) else {
            eprintln!("bench: no {label} interpreter kiln can run; skipping its rows");
            result.skipped.push(label);
            continue;
        };
        let Launch::Client { launcher, .. } = found.launch(rt) else {
            bail!("{}: kiln found {} but would not run it", rt.as_str(), interp.describe());
        };
        let task = work.path.join(format!("task-{label}"));
        std::fs::create_dir_all(&task).with_context(|| format!("cannot create {}", task.display()))?;
        std::fs::write(task.join(app.0), app.1).with_context(|| format!("cannot write {}", app.0))?;
        let handler = match kind {
            Kind::Python => "app.handler",
            Kind::Node => "index.handler",
        };
        let env = BareEnv { task: &task, handler, runtime: rt.as_str() };
        let comms = [comm_of(&launcher), comm_of(&interp.path)];
        let bare_warm = Stats::of(&bare_warm(servers, &launcher, &env, args.warm).await?);
        let data = work.path.join(format!("serve-{label}"));
        let server = Server::start(exe, &data, args, 8, args.server_log.as_deref()).await?;
        let bare = Bare { servers, bin: &launcher, vars: env.vars(), cwd: env.task };
        let measured = through_kiln(&server, rt, handler, app, &comms, &bare, args).await;
        server.stop();
        let (cold, cold_split, bare_start, warm) = measured?;
        eprintln!("bench: {} done", rt.as_str());
        result.langs.push(LangResult {
            runtime: rt.as_str().to_string(),
            interpreter: format!("{} ({})", interp.describe(), interp.path.display()),
            cold,
            cold_split,
            bare_start,
            warm,
            bare_warm,
        });
    }
    Ok(result)
}

/// The interpreter of `kind` the bench measures: the newest one with an exact Lambda runtime.
fn pick(found: &Runtimes, kind: Kind) -> Option<(Runtime, Interpreter)> {
    found
        .interpreters()
        .iter()
        .filter(|i| i.kind == kind && i.pinned_for.is_none())
        .filter_map(|i| runtime_for(kind, i.version).map(|rt| (rt, i.clone())))
        .max_by_key(|(_, i)| i.version)
}

/// What a kernel shows as the command name of a process started from `path`.
fn comm_of(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().take(15).collect()
}

async fn through_kiln(
    server: &Server,
    rt: Runtime,
    handler: &str,
    app: (&str, &str),
    comms: &[String],
    bare: &Bare<'_>,
    args: &BenchArgs,
) -> anyhow::Result<(Stats, Option<ColdSplit>, Stats, Stats)> {
    let api = Api::new(server.addr);
    let zip = base64::engine::general_purpose::STANDARD.encode(zip_file(app.0, app.1)?);
    for name in ["bench-rt-cold", "bench-rt-warm"] {
        let body = json!({
            "FunctionName": name,
            "Runtime": rt.as_str(),
            "Handler": handler,
            "MemorySize": args.runtime_memory,
            "Role": "arn:aws:iam::123456789012:role/x",
            "Timeout": 10,
            "Code": { "ZipFile": zip },
        });
        api.call(Method::POST, "/2015-03-31/functions", Some(body)).await?;
        api.wait_ready(name).await?;
    }
    let client = new_client(server.addr);
    let mut cold = Vec::with_capacity(args.cold);
    let mut ids = Vec::with_capacity(args.cold);
    let mut bares = Vec::with_capacity(args.cold);
    for i in 0..args.cold {
        bare.block_before(&api, "bench-rt-cold", i, args.cold, &mut bares).await?;
        api.call(
            Method::PUT,
            "/2015-03-31/functions/bench-rt-cold/configuration",
            Some(json!({ "Description": format!("cold {i}") })),
        )
        .await?;
        api.wait_ready("bench-rt-cold").await?;
        wait_no_runtime(server.pid, comms, Duration::from_secs(5));
        let t = Instant::now();
        let id = invoke(&client, "bench-rt-cold", ECHO).await?;
        cold.push(t.elapsed());
        ids.push(id);
    }
    let split = cold_split(&server.data_dir, "bench-rt-cold", &cold, &ids);
    let (warm, _, _, _) = warm_calls(server, "bench-rt-warm", args.warm).await?;
    Ok((Stats::of(&cold), split, Stats::of(&bares), Stats::of(&warm)))
}

/// Waits until no runtime client of the retired environment runs under the server.
fn wait_no_runtime(server: u32, comms: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
    let running = || {
        process_tree(server).into_iter().any(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comms.iter().any(|c| c == comm.trim_end())
        })
    };
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The environment a bare client gets: Lambda's variables, the task dir and the handler.
struct BareEnv<'a> {
    task: &'a Path,
    handler: &'a str,
    runtime: &'a str,
}

impl BareEnv<'_> {
    fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("LAMBDA_TASK_ROOT".into(), self.task.display().to_string()),
            ("_HANDLER".into(), self.handler.into()),
            ("AWS_EXECUTION_ENV".into(), format!("AWS_Lambda_{}", self.runtime)),
            ("LANG".into(), "en_US.UTF-8".into()),
            ("TZ".into(), ":UTC".into()),
        ]
    }
}

/// One bare client answering `n` events in sequence (after one warm-up event).
async fn bare_warm(
    servers: &tokio::runtime::Handle,
    launcher: &Path,
    env: &BareEnv<'_>,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    Ok(super::bare_warm_with(servers, launcher, &env.vars(), env.task, n).await?.0)
}

fn zip_file(name: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    let mut zip = kiln_client::package::ZipBuilder::new();
    zip.file(name, text.as_bytes(), None)?;
    Ok(zip.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_add_the_allowances() {
        let [cold, warm] = goals(30.0, 28.5, 0.55, 0.30, 0.10);
        assert!(cold.met);
        assert!((cold.goal_ms - 30.5).abs() < 1e-9);
        assert!(!warm.met);
        assert!((warm.goal_ms - 0.50).abs() < 1e-9);
        let [cold, warm] = goals(31.0, 28.5, 0.45, 0.30, 0.10);
        assert!(!cold.met);
        assert!(warm.met);
    }

    #[test]
    fn runtime_values_of_interpreters() {
        assert_eq!(runtime_for(Kind::Python, (3, 11, 2)).map(Runtime::as_str), Some("python3.11"));
        assert_eq!(runtime_for(Kind::Node, (20, 20, 2)).map(Runtime::as_str), Some("nodejs20.x"));
        // Lambda has no such runtimes: the bench cannot deploy them under their own name.
        assert_eq!(runtime_for(Kind::Python, (3, 5, 0)).map(Runtime::as_str), None);
        assert_eq!(runtime_for(Kind::Node, (17, 0, 0)).map(Runtime::as_str), None);
    }

    #[test]
    fn comm_is_the_file_name_cut_to_15_bytes() {
        assert_eq!(comm_of(Path::new("/var/runtime/python3.11")), "python3.11");
        assert_eq!(comm_of(Path::new("/x/a-very-long-launcher-name")), "a-very-long-lau");
    }
}
