//! A fake [`Backend`] for tests: environments that answer like a runtime, without a process.
//!
//! [`FakeBackend::spawn`] binds the Runtime API listener as a real backend does and starts a
//! thread that plays a runtime against it over plain HTTP/1.1 (one keep-alive connection, as
//! runtime clients hold): `GET next`, then `POST response` or `POST error`, again and again. What
//! it does is scripted by the function's `bootstrap` file (so UpdateFunctionCode can change it),
//! one `key=value` a line:
//!
//! - `init=ok` (default), `init=fail` (posts `init/error`), `init=exit:N` (ends before `next`),
//!   `init=sleep:MS` (a slow Init, then `next`);
//! - `invoke=echo` (default): answers `{"tag", "env", "event", "n"}`; `invoke=fail`: posts an
//!   error (`Fake.Failure`); `invoke=exit:N`: the bootstrap ends with status N;
//!   `invoke=sleep:MS`: sleeps, then echoes; `invoke=gate`: waits until the test opens the
//!   backend's gate ([`FakeBackend::open_gate`]), then echoes;
//! - `tag=TEXT`: put in every answer, to tell code versions apart.
//!
//! An event `{"fake": "STEP"}` overrides `invoke` for that one call (`{"fake": "exit:2"}`).
//!
//! The [`Sandbox`] side records what the engine did to each environment (freeze, thaw,
//! end of Init, destroy) in a [`FakeEnv`] the test can read through [`FakeBackend::envs`].
//! Destroying an environment reports it killed by SIGKILL on its exit watch and cuts its
//! connection, which ends its thread.

use kiln_sandbox::{Backend, ExitInfo, Sandbox, SandboxError, SandboxSpec, Spawned};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the fake runtime does at Init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Init {
    Ok,
    Fail,
    Exit(i32),
    Sleep(u64),
}

/// What the fake runtime does with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Echo,
    Fail,
    Exit(i32),
    Sleep(u64),
    Gate,
}

impl Step {
    fn parse(s: &str) -> Option<Self> {
        let (verb, arg) = s.split_once(':').unwrap_or((s, ""));
        Some(match verb {
            "echo" => Self::Echo,
            "fail" => Self::Fail,
            "exit" => Self::Exit(arg.parse().ok()?),
            "sleep" => Self::Sleep(arg.parse().ok()?),
            "gate" => Self::Gate,
            _ => return None,
        })
    }
}

/// A fake function's behaviour, as its `bootstrap` file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Script {
    pub init: Init,
    pub invoke: Step,
    pub tag: String,
}

impl Default for Script {
    fn default() -> Self {
        Self { init: Init::Ok, invoke: Step::Echo, tag: String::new() }
    }
}

impl Script {
    pub fn tag(tag: &str) -> Self {
        Self { tag: tag.into(), ..Self::default() }
    }

    /// The `bootstrap` file that makes a fake environment follow this script.
    pub fn bootstrap(&self) -> String {
        let init = match self.init {
            Init::Ok => "ok".to_string(),
            Init::Fail => "fail".to_string(),
            Init::Exit(n) => format!("exit:{n}"),
            Init::Sleep(ms) => format!("sleep:{ms}"),
        };
        let invoke = match self.invoke {
            Step::Echo => "echo".to_string(),
            Step::Fail => "fail".to_string(),
            Step::Exit(n) => format!("exit:{n}"),
            Step::Sleep(ms) => format!("sleep:{ms}"),
            Step::Gate => "gate".to_string(),
        };
        format!("#!kiln-fake\ninit={init}\ninvoke={invoke}\ntag={}\n", self.tag)
    }

    fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("init", v)) => {
                    s.init = match Step::parse(v) {
                        Some(Step::Fail) => Init::Fail,
                        Some(Step::Exit(n)) => Init::Exit(n),
                        Some(Step::Sleep(ms)) => Init::Sleep(ms),
                        _ => Init::Ok,
                    }
                }
                Some(("invoke", v)) => s.invoke = Step::parse(v).unwrap_or(Step::Echo),
                Some(("tag", v)) => s.tag = v.to_string(),
                _ => {}
            }
        }
        s
    }

    /// A zip holding this script as an executable `bootstrap`.
    pub fn zip(&self) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        w.start_file("bootstrap", opts).expect("zip entry");
        w.write_all(self.bootstrap().as_bytes()).expect("zip write");
        w.finish().expect("zip finish").into_inner()
    }
}

/// One environment the fake backend built, and what happened to it.
#[derive(Debug)]
pub(crate) struct FakeEnv {
    pub id: String,
    /// `AWS_LAMBDA_FUNCTION_NAME` of the spec.
    pub function: String,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE` of the spec.
    pub init_type: String,
    pub tag: String,
    pub destroyed: AtomicBool,
    pub freezes: AtomicU32,
    pub thaws: AtomicU32,
    pub end_inits: AtomicU32,
    /// Events the fake runtime fetched.
    pub events: AtomicU32,
    exit: watch::Sender<Option<ExitInfo>>,
    /// A handle on the runtime's connection, to cut it when the environment dies.
    conn: Mutex<Option<TcpStream>>,
}

impl FakeEnv {
    /// A live environment with nothing done to it yet.
    fn new(
        id: String,
        function: String,
        init_type: String,
        tag: String,
        exit: watch::Sender<Option<ExitInfo>>,
    ) -> Self {
        FakeEnv {
            id,
            function,
            init_type,
            tag,
            destroyed: AtomicBool::new(false),
            freezes: AtomicU32::new(0),
            thaws: AtomicU32::new(0),
            end_inits: AtomicU32::new(0),
            events: AtomicU32::new(0),
            exit,
            conn: Mutex::new(None),
        }
    }

    pub fn destroyed(&self) -> bool {
        self.destroyed.load(Ordering::SeqCst)
    }

    /// The bootstrap ends with `code`, as if it crashed.
    pub fn exit(&self, code: i32) {
        self.end(ExitInfo::Code(code));
    }

    /// The bootstrap ended (or was killed): report it once and cut the connection.
    fn end(&self, info: ExitInfo) {
        self.exit.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(info);
                true
            } else {
                false
            }
        });
        if let Some(c) = crate::fake::lock(&self.conn).take() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn ended(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A gate that `invoke=gate` events wait at until the test opens it.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    waiting: u32,
}

/// The fake backend. Keep an `Arc` of it to look at what it built.
#[derive(Debug, Default)]
pub(crate) struct FakeBackend {
    envs: Mutex<Vec<Arc<FakeEnv>>>,
    gate: Arc<Gate>,
    /// While held, destroying a sandbox blocks (as the Linux backend's does while it waits for
    /// the reap), until released.
    destroys: Arc<Held>,
}

/// A switch that makes `destroy` block while it is on.
#[derive(Debug, Default)]
struct Held {
    on: Mutex<bool>,
    changed: Condvar,
    /// Destroys blocked now.
    blocked: AtomicU32,
}

impl Held {
    fn wait(&self) {
        let mut on = lock(&self.on);
        if *on {
            self.blocked.fetch_add(1, Ordering::SeqCst);
            while *on {
                on = self.changed.wait(on).unwrap_or_else(|e| e.into_inner());
            }
            self.blocked.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl FakeBackend {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every environment built so far, oldest first.
    pub fn envs(&self) -> Vec<Arc<FakeEnv>> {
        lock(&self.envs).clone()
    }

    pub fn env(&self, id: &str) -> Option<Arc<FakeEnv>> {
        lock(&self.envs).iter().find(|e| e.id == id).cloned()
    }

    pub fn spawns(&self) -> usize {
        lock(&self.envs).len()
    }

    /// Environments not destroyed yet.
    pub fn live(&self) -> usize {
        lock(&self.envs).iter().filter(|e| !e.destroyed()).count()
    }

    /// Events waiting at the gate now.
    pub fn at_gate(&self) -> u32 {
        lock(&self.gate.state).waiting
    }

    /// Lets every event at the gate (and any later one, until [`FakeBackend::close_gate`])
    /// through.
    pub fn open_gate(&self) {
        lock(&self.gate.state).open = true;
        self.gate.changed.notify_all();
    }

    /// Makes later `gate` events wait again.
    pub fn close_gate(&self) {
        lock(&self.gate.state).open = false;
    }

    /// Makes every destroy from now on block until [`FakeBackend::release_destroys`].
    pub fn hold_destroys(&self) {
        *lock(&self.destroys.on) = true;
    }

    pub fn release_destroys(&self) {
        *lock(&self.destroys.on) = false;
        self.destroys.changed.notify_all();
    }

    /// Destroys blocked by [`FakeBackend::hold_destroys`] now.
    pub fn destroys_blocked(&self) -> u32 {
        self.destroys.blocked.load(Ordering::SeqCst)
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, SandboxError> {
        let step = |step, e| SandboxError::step(&spec.id, step, e);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| step("bind runtime api", e))?;
        listener.set_nonblocking(true).map_err(|e| step("bind runtime api", e))?;
        let addr = listener.local_addr().map_err(|e| step("bind runtime api", e))?;
        let (reader, writer) = std::io::pipe().map_err(|e| step("create output pipe", e))?;
        let base = match (&spec.opt_dir, spec.bootstrap_in_opt) {
            (Some(opt), true) => opt.clone(),
            _ => spec.code_dir.clone(),
        };
        let text = std::fs::read_to_string(base.join(&spec.bootstrap)).map_err(|e| step("read bootstrap", e))?;
        let script = Script::parse(&text);
        let var = |k: &str| spec.env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let (exit, exit_rx) = watch::channel(None);
        let env = Arc::new(FakeEnv::new(
            spec.id.clone(),
            var(kiln_model::env::FUNCTION_NAME),
            var(kiln_model::env::INITIALIZATION_TYPE),
            script.tag.clone(),
            exit,
        ));
        lock(&self.envs).push(env.clone());
        let runtime = FakeRuntime { env: env.clone(), script, gate: self.gate.clone(), output: writer };
        std::thread::Builder::new()
            .name(format!("fake-{}", &spec.id[..8.min(spec.id.len())]))
            .spawn(move || runtime.run(addr))
            .map_err(|e| step("start fake runtime", e))?;
        Ok(Spawned {
            sandbox: Box::new(FakeSandbox { env, exit: exit_rx, destroys: self.destroys.clone() }),
            runtime_listener: listener,
            output: OwnedFd::from(reader),
        })
    }
}

/// A sandbox with no runtime at all, for [`crate::env::Environment::detached`]: the returned
/// [`FakeEnv`] records what is done to it, and [`FakeEnv::exit`] makes it die.
pub(crate) fn detached_sandbox() -> (Arc<dyn Sandbox>, Arc<FakeEnv>) {
    let (exit, exit_rx) = watch::channel(None);
    let env = Arc::new(FakeEnv::new(String::new(), String::new(), String::new(), String::new(), exit));
    (Arc::new(FakeSandbox { env: env.clone(), exit: exit_rx, destroys: Arc::default() }), env)
}

struct FakeSandbox {
    env: Arc<FakeEnv>,
    exit: watch::Receiver<Option<ExitInfo>>,
    destroys: Arc<Held>,
}

impl Sandbox for FakeSandbox {
    fn pid(&self) -> u32 {
        0
    }

    fn freeze(&self) -> Result<(), SandboxError> {
        self.env.freezes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn thaw(&self) -> Result<(), SandboxError> {
        self.env.thaws.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn end_init(&self) -> Result<(), SandboxError> {
        self.env.end_inits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn max_memory_bytes(&self) -> u64 {
        0
    }

    fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit.clone()
    }

    fn destroy(&self) {
        if !self.env.destroyed() {
            self.destroys.wait();
        }
        self.env.destroyed.store(true, Ordering::SeqCst);
        self.env.end(ExitInfo::Signal { signal: 9, oom: false });
    }
}

impl Drop for FakeSandbox {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The runtime side of one fake environment, on its own thread.
struct FakeRuntime {
    env: Arc<FakeEnv>,
    script: Script,
    gate: Arc<Gate>,
    output: std::io::PipeWriter,
}

/// An HTTP answer of the Runtime API.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn call(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Reply> {
        let mut req =
            format!("{method} /2018-06-01{path} HTTP/1.1\r\nhost: fake\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let closed = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "runtime api closed the connection");
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().and_then(|n| if n == 0 { Err(closed()) } else { Ok(()) })?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        while self.buf.len() < head_end + len {
            self.fill().and_then(|n| if n == 0 { Err(closed()) } else { Ok(()) })?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok(Reply { status, headers, body })
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

impl FakeRuntime {
    fn run(mut self, addr: SocketAddr) {
        let info = match self.serve(addr) {
            Ok(code) => ExitInfo::Code(code),
            // The connection broke: the environment was destroyed, or the runtime gives up as a
            // real client does when its API goes away.
            Err(_) => ExitInfo::Code(1),
        };
        self.env.end(info);
    }

    /// Plays the script; returns the exit status of a scripted exit.
    fn serve(&mut self, addr: SocketAddr) -> std::io::Result<i32> {
        let stream = TcpStream::connect(addr)?;
        *lock(&self.env.conn) = Some(stream.try_clone()?);
        if self.env.ended() {
            // Destroyed before it got going.
            return Ok(137);
        }
        let mut client = Client { stream, buf: Vec::new() };
        let _ = writeln!(self.output, "fake runtime {} starting", self.script.tag);
        match self.script.init {
            Init::Ok => {}
            Init::Sleep(ms) => self.sleep(ms),
            Init::Exit(n) => return Ok(n),
            Init::Fail => {
                let body = br#"{"errorType":"Fake.InitFailure","errorMessage":"scripted init failure"}"#;
                client.call(
                    "POST",
                    "/runtime/init/error",
                    &[("lambda-runtime-function-error-type", "Fake.InitFailure")],
                    body,
                )?;
                // Like a real runtime, it stays until the platform destroys it.
                self.wait_for_end();
                return Ok(0);
            }
        }
        let mut n = 0u32;
        loop {
            let event = client.call("GET", "/runtime/invocation/next", &[], b"")?;
            if event.status != 200 {
                return Err(std::io::Error::other(format!("next answered {}", event.status)));
            }
            n += 1;
            self.env.events.fetch_add(1, Ordering::SeqCst);
            let id = event.header("lambda-runtime-aws-request-id").unwrap_or_default().to_string();
            let payload: serde_json::Value = serde_json::from_slice(&event.body).unwrap_or(serde_json::Value::Null);
            let step = payload.get("fake").and_then(|s| s.as_str()).and_then(Step::parse).unwrap_or(self.script.invoke);
            let _ = writeln!(self.output, "handling {id}");
            match step {
                Step::Exit(code) => return Ok(code),
                Step::Fail => {
                    let body = br#"{"errorType":"Fake.Failure","errorMessage":"scripted failure"}"#;
                    let path = format!("/runtime/invocation/{id}/error");
                    client.call("POST", &path, &[("lambda-runtime-function-error-type", "Fake.Failure")], body)?;
                    continue;
                }
                Step::Sleep(ms) => self.sleep(ms),
                Step::Gate => self.wait_at_gate(),
                Step::Echo => {}
            }
            if self.env.ended() {
                return Ok(137);
            }
            let answer = serde_json::json!({ "tag": self.script.tag, "env": self.env.id, "event": payload, "n": n });
            client.call("POST", &format!("/runtime/invocation/{id}/response"), &[], answer.to_string().as_bytes())?;
        }
    }

    /// Sleeps `ms`, or less if the environment is destroyed meanwhile.
    fn sleep(&self, ms: u64) {
        let until = std::time::Instant::now() + Duration::from_millis(ms);
        while !self.env.ended() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    fn wait_at_gate(&self) {
        let mut st = lock(&self.gate.state);
        st.waiting += 1;
        while !st.open && !self.env.ended() {
            st = self.gate.changed.wait_timeout(st, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
        }
        st.waiting -= 1;
    }

    fn wait_for_end(&self) {
        while !self.env.ended() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
