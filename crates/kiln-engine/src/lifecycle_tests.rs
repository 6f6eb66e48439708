//! The invocation lifecycle over the fake backend ([`crate::fake`]): a real engine (SQLite, code
//! store, log writer, Runtime API) whose environments are threads playing a runtime. Each test
//! ends by checking the pools' invariants with nothing in flight.

use crate::fake::{FakeBackend, Init, Script, Step};
use crate::{ConfigChange, CreateFunction, Engine, EngineError, EngineOptions, InvokeKind, InvokeRequest, UpdateCode};
use bytes::Bytes;
use kiln_model::config::UpdateStatus;
use kiln_model::{FunctionName, FunctionRef, FunctionState, Qualifier};
use std::sync::Arc;
use std::time::Duration;

/// How long a test waits for something that happens in the background. Far above what it takes,
/// so that a slow machine does not fail a test; only something that never happens does.
const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Harness {
    pub engine: Engine,
    backend: Arc<FakeBackend>,
    _dir: tempfile::TempDir,
}

pub(crate) fn harness(tweak: impl FnOnce(&mut EngineOptions)) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opts = EngineOptions {
        data_dir: dir.path().join("data"),
        partition: kiln_model::Partition::default(),
        init_timeout: Duration::from_secs(10),
        concurrency_limit: 1000,
        keep_alive: Duration::from_secs(3600),
        memory_budget_mb: 1 << 20,
        async_retry_base: Duration::from_secs(1),
        runtimes: Arc::new(crate::runtimes::Runtimes::default()),
        logs: crate::logs::LogOptions::default(),
    };
    tweak(&mut opts);
    let backend = FakeBackend::new();
    let engine = Engine::open(opts, backend.clone()).expect("engine opens");
    Harness { engine, backend, _dir: dir }
}

/// Waits until `cond` holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fref(name: &str, qualifier: Option<&str>) -> FunctionRef {
    FunctionRef {
        name: FunctionName::parse(name).expect("name"),
        qualifier: qualifier.map(|q| Qualifier::parse(q).expect("qualifier")),
    }
}

/// What an invocation answered: its payload as JSON and whether it is a function error.
#[derive(Debug)]
struct Answer {
    body: serde_json::Value,
    function_error: bool,
}

impl Answer {
    /// The environment that answered (the fake echoes its id).
    fn env(&self) -> &str {
        self.body["env"].as_str().unwrap_or_default()
    }
    fn error_type(&self) -> &str {
        self.body["errorType"].as_str().unwrap_or_default()
    }
    fn error_message(&self) -> &str {
        self.body["errorMessage"].as_str().unwrap_or_default()
    }
}

impl Harness {
    pub(crate) async fn deploy(&self, name: &str, script: &Script, timeout_secs: i64, memory_mb: i64) {
        self.engine
            .create_function(CreateFunction {
                name: name.into(),
                zip: script.zip(),
                config: ConfigChange {
                    runtime: Some("provided.al2023".into()),
                    role: Some("arn:aws:iam::000000000000:role/kiln-test".into()),
                    timeout_secs: Some(timeout_secs),
                    memory_mb: Some(memory_mb),
                    ..ConfigChange::default()
                },
                ..CreateFunction::default()
            })
            .await
            .expect("create function");
        self.wait_ready(name).await;
    }

    async fn wait_ready(&self, name: &str) {
        let engine = self.engine.clone();
        let r = fref(name, None);
        eventually("the function is active and not updating", move || {
            engine.get_function(&r).is_ok_and(|c| {
                c.state == FunctionState::Active && c.last_update_status != Some(UpdateStatus::InProgress)
            })
        })
        .await;
    }

    async fn try_invoke(&self, name: &str, qualifier: Option<&str>, event: &str) -> Result<Answer, EngineError> {
        let r = self
            .engine
            .invoke(InvokeRequest {
                function: fref(name, qualifier),
                kind: InvokeKind::RequestResponse,
                payload: Bytes::from(event.to_string()),
                tail_logs: false,
                client_context: None,
            })
            .await?;
        Ok(Answer {
            body: serde_json::from_slice(&r.payload).expect("the answer is JSON"),
            function_error: r.function_error,
        })
    }

    async fn invoke(&self, name: &str, event: &str) -> Answer {
        self.try_invoke(name, None, event).await.expect("invoke")
    }

    /// Starts an invocation that waits at the fake's gate, and returns once it is there.
    async fn invoke_held(&self, name: &str, qualifier: Option<&str>) -> tokio::task::JoinHandle<Answer> {
        let before = self.backend.at_gate();
        let engine = self.engine.clone();
        let r = fref(name, qualifier);
        let call = tokio::spawn(async move {
            let out = engine
                .invoke(InvokeRequest {
                    function: r,
                    kind: InvokeKind::RequestResponse,
                    payload: Bytes::from_static(br#"{"fake":"gate"}"#),
                    tail_logs: false,
                    client_context: None,
                })
                .await
                .expect("held invoke");
            Answer { body: serde_json::from_slice(&out.payload).expect("JSON"), function_error: out.function_error }
        });
        let backend = self.backend.clone();
        eventually("the held call reaches the gate", move || backend.at_gate() > before).await;
        call
    }

    fn stats(&self, name: &str) -> crate::StartStats {
        let name = FunctionName::parse(name).expect("name");
        self.engine.status(Some(&name)).expect("status").remove(0).stats
    }

    fn env_states(&self, name: &str) -> Vec<&'static str> {
        let name = FunctionName::parse(name).expect("name");
        self.engine.status(Some(&name)).expect("status").remove(0).environments.iter().map(|e| e.state).collect()
    }

    /// Every pool keeps its invariants, and nothing is starting or busy any more.
    fn check_quiet(&self) {
        for (name, f) in self.engine.read_functions().iter() {
            let st = f.lock();
            for (version, pool) in &st.pools {
                if let Err(e) = pool.check_invariants() {
                    panic!("{name}:{version}: {e}");
                }
                assert_eq!(pool.starting(), (0, 0), "{name}:{version}: starts still counted");
                let busy = pool.environments().filter(|(_, s)| *s == crate::pool::EnvState::Busy).count();
                assert_eq!(busy, 0, "{name}:{version}: environments still busy");
            }
        }
    }

    pub(crate) fn finish(self) {
        self.check_quiet();
        self.engine.shutdown();
        assert_eq!(self.backend.live(), 0, "shutdown destroys every environment");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_then_a_warm_one_in_the_same_environment() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    let first = h.invoke("f", r#"{"x":1}"#).await;
    assert!(!first.function_error, "{first:?}");
    assert_eq!(first.body["event"]["x"], 1);
    assert_eq!(first.body["n"], 1);
    let second = h.invoke("f", r#"{"x":2}"#).await;
    assert_eq!(second.env(), first.env(), "the second call reuses the environment");
    assert_eq!(second.body["n"], 2);
    assert_eq!(h.backend.spawns(), 1);
    let stats = h.stats("f");
    assert_eq!((stats.cold_starts, stats.warm_starts, stats.provisioned_starts), (1, 1, 0));
    let env = h.backend.env(first.env()).expect("recorded");
    assert_eq!(env.end_inits.load(std::sync::atomic::Ordering::SeqCst), 1, "Init ends once");
    assert_eq!(env.init_type, "on-demand");
    assert_eq!(h.env_states("f"), ["idle"]);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_recently_used_idle_environment_is_taken_first() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    // Two environments: one held busy while a second call starts another.
    let held = h.invoke_held("f", None).await;
    let b = h.invoke("f", "{}").await;
    h.backend.open_gate();
    let a = held.await.expect("held call");
    assert_ne!(a.env(), b.env());
    // `a` came back last, so it is the most recently used.
    assert_eq!(h.invoke("f", "{}").await.env(), a.env());
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_code_retires_idle_environments_at_once_and_busy_ones_when_they_finish() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    let busy = h.invoke_held("f", None).await;
    let idle = h.invoke("f", "{}").await;
    assert_eq!(idle.body["tag"], "v1");
    h.engine
        .update_code(&fref("f", None), UpdateCode { zip: Script::tag("v2").zip(), ..UpdateCode::default() })
        .await
        .expect("update code");
    h.wait_ready("f").await;
    let idle_env = h.backend.env(idle.env()).expect("recorded");
    eventually("the idle v1 environment is destroyed", || idle_env.destroyed()).await;
    let busy_env = h.backend.envs().into_iter().find(|e| e.id != idle_env.id).expect("the busy one");
    assert!(!busy_env.destroyed(), "a busy environment finishes its event");
    h.backend.open_gate();
    let finished = busy.await.expect("held call");
    assert_eq!(finished.body["tag"], "v1", "the event in flight ran on the old code");
    eventually("the busy v1 environment is destroyed once done", || busy_env.destroyed()).await;
    let next = h.invoke("f", "{}").await;
    assert_eq!(next.body["tag"], "v2");
    assert_eq!(h.backend.spawns(), 3, "v2 needed a cold start");
    assert_eq!(h.env_states("f"), ["idle"]);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_destroys_the_environment_and_the_next_call_is_cold() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    let ok = h.invoke("f", "{}").await;
    let crashed = h.invoke("f", r#"{"fake":"exit:2"}"#).await;
    assert!(crashed.function_error);
    assert_eq!(crashed.error_type(), "Runtime.ExitError");
    assert!(crashed.error_message().ends_with("Error: Runtime exited with error: exit status 2"), "{crashed:?}");
    assert!(h.backend.env(ok.env()).expect("recorded").destroyed());
    let next = h.invoke("f", "{}").await;
    assert_ne!(next.env(), ok.env());
    assert_eq!(next.body["n"], 1);
    assert_eq!(h.stats("f").cold_starts, 2);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_destroys_the_environment_with_sandbox_timedout() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 1, 128).await;
    let out = h.invoke("f", r#"{"fake":"sleep:600000"}"#).await;
    assert!(out.function_error);
    assert_eq!(out.error_type(), "Sandbox.Timedout");
    assert!(out.error_message().ends_with("Error: Task timed out after 1.00 seconds"), "{out:?}");
    let first = h.backend.envs().remove(0);
    assert!(first.destroyed(), "a timed-out environment is destroyed");
    let next = h.invoke("f", "{}").await;
    assert_ne!(next.env(), first.id);
    assert_eq!(h.backend.spawns(), 2);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_evicts_the_least_recently_used_idle_environment_then_throttles() {
    let h = harness(|o| o.memory_budget_mb = 384);
    for name in ["a", "b", "c"] {
        h.deploy(name, &Script::tag(name), 3, 128).await;
    }
    // Two environments of `a`: a1 is held busy while a2 starts, and comes back after it.
    let held = h.invoke_held("a", None).await;
    let a2 = h.invoke("a", "{}").await;
    h.backend.open_gate();
    let a1 = held.await.expect("held call");
    h.backend.close_gate();
    assert_ne!(a1.env(), a2.env());
    assert_eq!(h.invoke("a", "{}").await.env(), a1.env(), "the most recently used goes first");
    let b = h.invoke("b", "{}").await;
    // The budget is full; `c` needs room, and a2 is the environment idle for longest.
    let c = h.invoke("c", "{}").await;
    assert!(!c.function_error, "{c:?}");
    let evicted = h.backend.env(a2.env()).expect("recorded");
    assert_eq!(evicted.function, "a");
    // Out of the pool and its memory returned at once; destroyed on the teardown thread.
    eventually("a2 is evicted", || evicted.destroyed()).await;
    for kept in [a1.env(), b.env(), c.env()] {
        assert!(!h.backend.env(kept).expect("recorded").destroyed(), "{kept} was not");
    }
    // With every environment busy there is nothing to evict.
    let held: Vec<_> =
        [h.invoke_held("a", None).await, h.invoke_held("b", None).await, h.invoke_held("c", None).await].into();
    match h.try_invoke("a", None, "{}").await {
        Err(EngineError::Throttled { reason, message }) => {
            assert_eq!(reason, crate::ThrottleReason::ConcurrentInvocationLimitExceeded);
            assert!(message.contains("memory budget (384 MB)"), "{message}");
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    h.backend.open_gate();
    for call in held {
        assert!(!call.await.expect("held call").function_error);
    }
    assert_eq!(h.engine.inner.memory.used_mb(), 384);
    assert_eq!(h.backend.spawns(), 4);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_environments_go_first_and_calls_spill_over_to_on_demand() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    h.engine.publish_version(&fref("f", None), None, None, None).expect("publish");
    h.engine.put_provisioned(&fref("f", Some("1")), 1).expect("provisioned config");
    let engine = h.engine.clone();
    eventually("the provisioned environment is ready", move || {
        engine.get_provisioned(&fref("f", Some("1"))).is_ok_and(|s| s.status == "READY")
    })
    .await;
    let pc = h.backend.envs().remove(0);
    assert_eq!(pc.init_type, "provisioned-concurrency");
    // The provisioned environment is busy: the next call spills over to a cold on-demand one.
    let held = h.invoke_held("f", Some("1")).await;
    let spilled = h.try_invoke("f", Some("1"), "{}").await.expect("spill-over call");
    let on_demand = h.backend.env(spilled.env()).expect("recorded");
    assert_eq!(on_demand.init_type, "on-demand");
    h.backend.open_gate();
    assert_eq!(held.await.expect("held").env(), pc.id);
    // Both are idle now; the provisioned one is taken first.
    let next = h.try_invoke("f", Some("1"), "{}").await.expect("call");
    assert_eq!(next.env(), pc.id);
    let stats = h.stats("f");
    assert_eq!((stats.provisioned_starts, stats.cold_starts, stats.warm_starts), (2, 1, 0));
    let spillovers: u64 = h
        .engine
        .metrics()
        .functions
        .iter()
        .flat_map(|f| &f.versions)
        .filter(|v| v.version == "1")
        .filter_map(|v| v.metrics.as_ref().map(|m| m.spillovers()))
        .sum();
    assert_eq!(spillovers, 1);
    let status = h.engine.get_provisioned(&fref("f", Some("1"))).expect("status");
    assert_eq!((status.allocated, status.available), (1, 1));
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_provisioned_environment_is_replaced() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    h.engine.publish_version(&fref("f", None), None, None, None).expect("publish");
    h.engine.put_provisioned(&fref("f", Some("1")), 1).expect("provisioned config");
    let engine = h.engine.clone();
    eventually("the provisioned environment is ready", move || {
        engine.get_provisioned(&fref("f", Some("1"))).is_ok_and(|s| s.status == "READY")
    })
    .await;
    let crashed = h.try_invoke("f", Some("1"), r#"{"fake":"exit:3"}"#).await.expect("call");
    assert_eq!(crashed.error_type(), "Runtime.ExitError");
    let backend = h.backend.clone();
    eventually("a new provisioned environment is built", move || {
        backend.envs().iter().filter(|e| e.init_type == "provisioned-concurrency" && !e.destroyed()).count() == 1
            && backend.spawns() == 2
    })
    .await;
    let engine = h.engine.clone();
    eventually("the config is ready again", move || {
        engine.get_provisioned(&fref("f", Some("1"))).is_ok_and(|s| s.status == "READY")
    })
    .await;
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_environments_expire_after_the_keep_alive() {
    let h = harness(|o| o.keep_alive = Duration::from_millis(300));
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    let first = h.invoke("f", "{}").await;
    let env = h.backend.env(first.env()).expect("recorded");
    eventually("the idle environment expires", || env.destroyed()).await;
    assert!(h.env_states("f").is_empty());
    let next = h.invoke("f", "{}").await;
    assert_ne!(next.env(), first.env());
    assert_eq!(h.stats("f").cold_starts, 2);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_concurrency_throttles_a_second_concurrent_call() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    h.engine.put_reserved_concurrency(&FunctionName::parse("f").expect("name"), 1).expect("reserve");
    let held = h.invoke_held("f", None).await;
    match h.try_invoke("f", None, "{}").await {
        Err(EngineError::Throttled { reason, .. }) => {
            assert_eq!(reason, crate::ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded);
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    h.backend.open_gate();
    let first = held.await.expect("held");
    // The permit came back with the first call.
    assert_eq!(h.invoke("f", "{}").await.env(), first.env());
    assert_eq!(h.backend.spawns(), 1, "the throttled call built nothing");
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_failure_reaches_the_caller_and_leaves_no_environment() {
    let h = harness(|_| {});
    h.deploy("f", &Script { init: Init::Fail, ..Script::tag("v1") }, 3, 128).await;
    for round in 1..=2 {
        let out = h.invoke("f", "{}").await;
        assert!(out.function_error);
        assert_eq!(out.error_type(), "Fake.InitFailure");
        assert_eq!(h.backend.spawns(), round, "every call tries a new environment");
        assert_eq!(h.backend.live(), 0, "the failed environment is destroyed");
        assert!(h.env_states("f").is_empty());
    }
    assert_eq!(h.stats("f").cold_starts, 0);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_past_the_init_timeout_goes_on_within_the_function_timeout() {
    let h = harness(|o| o.init_timeout = Duration::from_millis(100));
    h.deploy("slow", &Script { init: Init::Sleep(500), ..Script::tag("slow") }, 30, 128).await;
    h.deploy("stuck", &Script { init: Init::Sleep(600_000), ..Script::tag("stuck") }, 1, 128).await;
    let slow = h.invoke("slow", "{}").await;
    assert!(!slow.function_error, "{slow:?}");
    assert_eq!(slow.body["tag"], "slow");
    let stuck = h.invoke("stuck", "{}").await;
    assert_eq!(stuck.error_type(), "Sandbox.Timedout");
    assert!(stuck.error_message().ends_with("Error: Task timed out after 1.00 seconds"), "{stuck:?}");
    let stuck_env = h.backend.envs().into_iter().find(|e| e.tag == "stuck").expect("recorded");
    assert!(stuck_env.destroyed());
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_environment_is_frozen_and_thawed_for_its_next_call() {
    use std::sync::atomic::Ordering;
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    let first = h.invoke("f", "{}").await;
    let env = h.backend.env(first.env()).expect("recorded");
    eventually("the idle environment is frozen", || env.freezes.load(Ordering::SeqCst) >= 1).await;
    let thaws = env.thaws.load(Ordering::SeqCst);
    assert_eq!(h.invoke("f", "{}").await.env(), env.id);
    assert!(env.thaws.load(Ordering::SeqCst) > thaws, "the next call thawed it");
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_function_error_keeps_the_environment() {
    let h = harness(|_| {});
    h.deploy("f", &Script { invoke: Step::Fail, ..Script::tag("v1") }, 3, 128).await;
    let first = h.invoke("f", "{}").await;
    assert!(first.function_error);
    assert_eq!(first.error_type(), "Fake.Failure");
    let second = h.invoke("f", r#"{"fake":"echo"}"#).await;
    assert!(!second.function_error);
    assert_eq!(h.backend.spawns(), 1, "a handled error does not cost the environment");
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_function_destroys_its_environments() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    let held = h.invoke_held("f", None).await;
    h.invoke("f", "{}").await;
    h.engine.delete_function(&fref("f", None)).await.expect("delete");
    assert_eq!(h.backend.live(), 0, "idle and busy environments are destroyed");
    let out = held.await.expect("held call ends");
    assert!(out.function_error, "the event in flight ends with its environment: {out:?}");
    assert!(h.engine.read_functions().is_empty());
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_init_failure_fails_the_config() {
    let h = harness(|_| {});
    h.deploy("f", &Script { init: Init::Fail, ..Script::tag("v1") }, 3, 128).await;
    h.engine.publish_version(&fref("f", None), None, None, None).expect("publish");
    h.engine.put_provisioned(&fref("f", Some("1")), 1).expect("provisioned config");
    let engine = h.engine.clone();
    eventually("the provisioned config fails", move || {
        engine.get_provisioned(&fref("f", Some("1"))).is_ok_and(|s| s.status == "FAILED")
    })
    .await;
    let status = h.engine.get_provisioned(&fref("f", Some("1"))).expect("status");
    let reason = status.status_reason.unwrap_or_default();
    assert!(reason.starts_with("FUNCTION_ERROR_INIT_FAILURE: Fake.InitFailure: "), "{reason}");
    assert_eq!((status.allocated, status.available), (0, 0));
    assert_eq!(h.backend.live(), 0);
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_environment_that_died_is_skipped_and_the_call_is_cold() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    let first = h.invoke("f", "{}").await;
    // Its bootstrap dies while idle (a background thread of the function crashed it, say).
    h.backend.env(first.env()).expect("recorded").exit(1);
    let next = h.invoke("f", "{}").await;
    assert!(!next.function_error, "{next:?}");
    assert_ne!(next.env(), first.env());
    let stats = h.stats("f");
    assert_eq!((stats.cold_starts, stats.warm_starts), (2, 0), "the dead one was never handed an event");
    assert_eq!(h.env_states("f"), ["idle"], "the dead one is out of the pool");
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_versions_in_numeric_order() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("v"), 3, 128).await;
    for i in 1..=10 {
        let change = ConfigChange { timeout_secs: Some(3 + i), ..ConfigChange::default() };
        h.engine
            .update_config(&fref("f", None), crate::UpdateConfig { config: change, revision_id: None })
            .await
            .expect("update");
        h.wait_ready("f").await;
        h.engine.publish_version(&fref("f", None), None, None, None).expect("publish");
    }
    for q in [Some("10"), Some("2"), None] {
        h.try_invoke("f", q, "{}").await.expect("call");
    }
    let name = FunctionName::parse("f").expect("name");
    let status = h.engine.status(Some(&name)).expect("status").remove(0);
    let versions: Vec<&str> = status.environments.iter().map(|e| e.version.as_str()).collect();
    assert_eq!(versions, ["$LATEST", "2", "10"]);
    h.finish();
}

/// Fails the test instead of hanging it if `f` never ends.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("never ended: {what}"),
    }
}

/// Runs `test` on a runtime of one thread, itself on a thread of its own, and fails if it has
/// not ended after twice [`PATIENCE`]: a blocked runtime thread cannot time itself out.
fn on_one_thread<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(test());
        let _ = done.send(());
    });
    match ended.recv_timeout(PATIENCE * 2) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the runtime's only thread was blocked"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the test failed on its runtime's thread"),
    }
}

// One runtime thread: a retirement that blocked it would stop every call.
#[test]
fn retiring_environments_does_not_block_the_runtime() {
    on_one_thread(retiring_environments_does_not_block_the_runtime_body);
}

async fn retiring_environments_does_not_block_the_runtime_body() {
    let h = harness(|o| o.keep_alive = Duration::from_millis(300));
    h.deploy("f", &Script::tag("v1"), 3, 128).await;
    h.deploy("g", &Script::tag("g"), 3, 128).await;
    let f1 = h.invoke("f", "{}").await;
    let f1_env = h.backend.env(f1.env()).expect("recorded");
    h.backend.hold_destroys();

    // A configuration update retires f's idle environment; its destroy blocks.
    let change = ConfigChange { timeout_secs: Some(4), ..ConfigChange::default() };
    within(
        "the update",
        h.engine.update_config(&fref("f", None), crate::UpdateConfig { config: change, revision_id: None }),
    )
    .await
    .expect("update");
    within("the update is ready", h.wait_ready("f")).await;
    let backend = h.backend.clone();
    within(
        "the retired environment's destroy starts",
        eventually("a destroy is held", move || backend.destroys_blocked() == 1),
    )
    .await;
    assert!(!f1_env.destroyed());
    // Its memory stays counted until its sandbox is gone.
    assert_eq!(h.engine.inner.memory.used_mb(), 128);

    // Calls go on meanwhile: a cold start of g, a cold start of f's new configuration.
    let g1 = within("a call of g", h.invoke("g", "{}")).await;
    let f2 = within("a call of f", h.invoke("f", "{}")).await;
    assert_ne!(f2.env(), f1.env());
    let g_env = h.backend.env(g1.env()).expect("recorded");

    // The keep-alive sweep retires both idle environments behind the held one, and returns.
    let engine = h.engine.clone();
    within(
        "the sweep",
        eventually("the sweep takes both idle environments out", move || {
            let names = [FunctionName::parse("f").expect("name"), FunctionName::parse("g").expect("name")];
            names.iter().all(|n| engine.status(Some(n)).is_ok_and(|s| s[0].environments.is_empty()))
        }),
    )
    .await;
    assert!(!g_env.destroyed(), "its destroy waits behind the held one");
    let g2 = within("another call of g", h.invoke("g", "{}")).await;
    assert_ne!(g2.env(), g1.env());

    assert!(h.engine.inner.memory.used_mb() >= 3 * 128, "f1, g1 and f2 are not destroyed yet");
    h.backend.release_destroys();
    eventually("every retired environment is destroyed", || f1_env.destroyed() && g_env.destroyed()).await;
    let engine = h.engine.clone();
    eventually("their memory is given back", move || engine.inner.memory.used_mb() <= 128).await;
    h.finish();
}

#[test]
fn delete_function_answers_once_its_environments_are_destroyed_without_blocking_others() {
    on_one_thread(delete_function_answers_body);
}

async fn delete_function_answers_body() {
    let h = harness(|_| {});
    h.deploy("f", &Script::tag("f"), 3, 128).await;
    h.deploy("g", &Script::tag("g"), 3, 128).await;
    let f = h.invoke("f", "{}").await;
    let f_env = h.backend.env(f.env()).expect("recorded");
    h.backend.hold_destroys();
    let engine = h.engine.clone();
    let delete = tokio::spawn(async move { engine.delete_function(&fref("f", None)).await });
    let backend = h.backend.clone();
    within("the destroy starts", eventually("a destroy is held", move || backend.destroys_blocked() == 1)).await;
    // The delete waits for its environment; another function's call is served meanwhile.
    let g = within("a call of g", h.invoke("g", "{}")).await;
    assert!(!g.function_error, "{g:?}");
    assert!(!delete.is_finished(), "DeleteFunction answers once the environment is gone");
    h.backend.release_destroys();
    within("the delete", delete).await.expect("task").expect("delete");
    assert!(f_env.destroyed());
    h.finish();
}

// The task that writes an answered call's END and REPORT has not run when the server stops (and
// its runtime, with the task, goes): they are written all the same.
#[test]
fn an_answered_call_keeps_its_report_when_the_server_stops_before_it_is_written() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let h = rt.block_on(async {
        let h = harness(|_| {});
        h.deploy("f", &Script::tag("v1"), 3, 128).await;
        let answer = h.invoke("f", "{}").await;
        assert!(!answer.function_error, "{answer:?}");
        // No await from here on: the task spawned after the answer has not run.
        h.check_quiet();
        h.engine.shutdown();
        h
    });
    drop(rt);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(h.engine.logs().flush());
    let mut text = Vec::new();
    h.engine.logs().copy_text("f", |b| {
        text.extend_from_slice(&b);
        true
    });
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("START RequestId:"), "{text}");
    assert!(text.contains("END RequestId:"), "{text}");
    assert!(text.contains("REPORT RequestId:"), "{text}");
    assert_eq!(h.backend.live(), 0, "shutdown destroys every environment");
}
