//! The environments of one runnable version, and the rules that move them.
//!
//! [`Pool`] is the only owner of a version's environments: callers take one out with
//! [`Pool::checkout`] (and give it back with [`Pool::checkin`]), count cold starts in and out,
//! and ask for expiry, eviction, retirement and provisioned reconciliation through methods; no
//! caller changes its lists directly.

use crate::env::{Environment, InitType};
use crate::function::Ready;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The environments of one version.
///
/// Invariants (checked by [`Pool::check_invariants`], after every change in debug builds):
/// - an environment is in at most one place — `idle`, `pc_idle` or `busy` — and once there;
///   `busy` is keyed by the environment's id;
/// - `idle` holds on-demand environments only, `pc_idle` provisioned ones only;
/// - every idle environment (`idle`, `pc_idle`) belongs to the pool's current generation: a new
///   generation ([`Pool::retire`]) takes every idle one out, and an environment of an older
///   generation goes back to no list when its invocation ends ([`Pool::checkin`]). Busy ones may
///   be older; none is newer than the pool;
/// - `starting.0` counts the on-demand cold starts under way ([`Pool::checkout`] returning
///   [`Checkout::Cold`] adds one, [`Pool::cold_done`] takes it back), `starting.1` the
///   provisioned ones ([`Pool::reconcile`] adds, [`Pool::provisioned_done`] takes back): with no
///   build in flight both are 0.
///
/// Idle environments may have died since they were put back (a background thread of the
/// function crashed, say); checkout skips those, so aliveness is not an invariant.
pub(crate) struct Pool {
    ready: Ready,
    /// Bumped when `$LATEST` changes; older environments are retired instead of reused.
    generation: u64,
    /// Idle on-demand environments, the most recently used last.
    idle: Vec<Arc<Environment>>,
    /// Idle provisioned environments.
    pc_idle: Vec<Arc<Environment>>,
    busy: HashMap<String, Arc<Environment>>,
    /// Environments being built: (on-demand, provisioned).
    starting: (u32, u32),
    /// How many provisioned environments this version should have.
    pc_target: u32,
}

/// Where [`Pool::checkout`] found an environment.
pub(crate) enum Checkout<P> {
    /// An idle provisioned environment, now busy; it takes no admission permit.
    Provisioned(Arc<Environment>),
    /// The most recently used idle on-demand environment, now busy.
    Warm(Arc<Environment>, P),
    /// None is free: build one from `Ready` for this generation, then call [`Pool::cold_done`].
    Cold(Ready, u64, P),
}

/// The state of one environment, for status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvState {
    /// Idle and provisioned.
    Provisioned,
    Idle,
    Busy,
}

impl EnvState {
    /// As `kiln status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioned => "provisioned",
            Self::Idle => "idle",
            Self::Busy => "busy",
        }
    }
}

/// How many environments a pool holds in each state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PoolCounts {
    pub starting_on_demand: u32,
    pub starting_provisioned: u32,
    /// Idle on-demand environments that are not frozen.
    pub idle_thawed: u32,
    /// Idle on-demand environments that are frozen.
    pub idle_frozen: u32,
    /// Idle provisioned environments.
    pub provisioned_idle: u32,
    pub busy: u32,
    /// Busy provisioned environments.
    pub provisioned_busy: u32,
}

impl Pool {
    pub fn new(ready: Ready) -> Self {
        Self {
            ready,
            generation: 0,
            idle: Vec::new(),
            pc_idle: Vec::new(),
            busy: HashMap::new(),
            starting: (0, 0),
            pc_target: 0,
        }
    }

    /// Bumped by every [`Pool::retire`]; environments carry the one they were built in.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The configuration and code new environments are built from.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    // ---- an invocation's way: checkout, cold start, checkin --------------------------------

    /// Chooses the environment of an invocation: a free provisioned one (no admission needed),
    /// else — once `admit` gives a permit — the most recently used idle on-demand one, else a
    /// cold start (counted in `starting` until [`Pool::cold_done`]). Dead or outdated idle
    /// environments met on the way are dropped. `admit` is called at most once, and only when
    /// no provisioned environment is free; its error is returned as is.
    pub fn checkout<P, E>(&mut self, admit: impl FnOnce() -> Result<P, E>) -> Result<Checkout<P>, E> {
        if let Some(e) = Self::take_live(&mut self.pc_idle, self.generation) {
            self.busy.insert(e.id.clone(), e.clone());
            self.debug_check();
            return Ok(Checkout::Provisioned(e));
        }
        let permit = admit()?;
        if let Some(e) = Self::take_live(&mut self.idle, self.generation) {
            self.busy.insert(e.id.clone(), e.clone());
            self.debug_check();
            return Ok(Checkout::Warm(e, permit));
        }
        self.starting.0 += 1;
        Ok(Checkout::Cold(self.ready.clone(), self.generation, permit))
    }

    /// Pops the most recently used environment of `list` that is alive and current.
    fn take_live(list: &mut Vec<Arc<Environment>>, generation: u64) -> Option<Arc<Environment>> {
        while let Some(e) = list.pop() {
            if e.alive() && e.generation == generation {
                return Some(e);
            }
        }
        None
    }

    /// An on-demand cold start begun by [`Pool::checkout`] ended; `env` is the environment it
    /// built, which is busy from now on (`None`: Init failed or the build did).
    pub fn cold_done(&mut self, env: Option<&Arc<Environment>>) {
        self.starting.0 = self.starting.0.saturating_sub(1);
        if let Some(env) = env {
            self.busy.insert(env.id.clone(), env.clone());
        }
        self.debug_check();
    }

    /// An invocation ended: `env` is no longer busy. A healthy environment of the current
    /// generation goes back to idle (a provisioned one only while the version wants more of
    /// them); any other is left out, for the caller to destroy. `deleted`: the function is
    /// being deleted, so nothing goes back. Returns whether a provisioned environment broke and
    /// must be replaced (the caller reconciles).
    pub fn checkin(&mut self, env: &Arc<Environment>, healthy: bool, deleted: bool) -> bool {
        self.busy.remove(&env.id);
        let current = healthy && !deleted && env.generation == self.generation;
        let replace = match env.init_type {
            InitType::Provisioned if current && self.pc_live() < self.pc_target => {
                self.pc_idle.push(env.clone());
                false
            }
            InitType::Provisioned => !healthy,
            InitType::OnDemand if current => {
                self.idle.push(env.clone());
                false
            }
            InitType::OnDemand => false,
        };
        self.debug_check();
        replace
    }

    // ---- idle environments going away --------------------------------------------------------

    /// Takes out the idle on-demand environments unused for `keep_alive` or more, to destroy.
    pub fn expire_idle(&mut self, keep_alive: Duration) -> Vec<Arc<Environment>> {
        let (old, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.idle).into_iter().partition(|e| e.idle_for() >= keep_alive);
        self.idle = keep;
        self.debug_check();
        old
    }

    /// The idle on-demand environment unused for longest, and for how long: the pool's candidate
    /// for eviction under the memory budget.
    pub fn least_recently_used(&self) -> Option<(&Arc<Environment>, Duration)> {
        let mut best: Option<(&Arc<Environment>, Duration)> = None;
        for e in &self.idle {
            let idle = e.idle_for();
            if best.is_none_or(|b| idle > b.1) {
                best = Some((e, idle));
            }
        }
        best
    }

    /// Takes the idle on-demand environment `id` out, to destroy; `None` when it is no longer
    /// idle (an invocation took it since it was chosen).
    pub fn evict(&mut self, id: &str) -> Option<Arc<Environment>> {
        let i = self.idle.iter().position(|e| e.id == id)?;
        let e = self.idle.remove(i);
        self.debug_check();
        Some(e)
    }

    /// Makes `ready` what new environments are built from, in a new generation; returns the idle
    /// environments of the old one, to destroy. Busy ones are retired when they come back.
    pub fn retire(&mut self, ready: Ready) -> Vec<Arc<Environment>> {
        self.ready = ready;
        self.generation += 1;
        let mut old = std::mem::take(&mut self.idle);
        old.append(&mut self.pc_idle);
        self.debug_check();
        old
    }

    /// Takes every environment out of the pool, for destruction.
    pub fn drain(&mut self) -> Vec<Arc<Environment>> {
        let mut v = std::mem::take(&mut self.idle);
        v.append(&mut self.pc_idle);
        v.extend(self.busy.drain().map(|(_, e)| e));
        v
    }

    // ---- provisioned concurrency -------------------------------------------------------------

    pub fn pc_target(&self) -> u32 {
        self.pc_target
    }

    pub fn set_pc_target(&mut self, target: u32) {
        self.pc_target = target;
    }

    /// Provisioned environments alive or on their way.
    pub fn pc_live(&self) -> u32 {
        self.pc_allocated() + self.starting.1
    }

    /// Provisioned environments that finished Init.
    pub fn pc_allocated(&self) -> u32 {
        (self.pc_idle.len() + self.provisioned_busy()) as u32
    }

    /// Idle provisioned environments: those an invocation would get at once.
    pub fn pc_available(&self) -> u32 {
        self.pc_idle.len() as u32
    }

    fn provisioned_busy(&self) -> usize {
        self.busy.values().filter(|e| e.init_type == InitType::Provisioned).count()
    }

    /// Brings the provisioned environments toward the target: returns how many to start (now
    /// counted in `starting` until [`Pool::provisioned_done`]) and the surplus idle ones, to
    /// destroy. Busy surplus ones are dropped when they come back ([`Pool::checkin`]).
    pub fn reconcile(&mut self) -> (u32, Vec<Arc<Environment>>) {
        let live = self.pc_live();
        if live < self.pc_target {
            let n = self.pc_target - live;
            self.starting.1 += n;
            return (n, Vec::new());
        }
        let mut extra = Vec::new();
        let mut surplus = live - self.pc_target;
        while surplus > 0 {
            match self.pc_idle.pop() {
                Some(e) => extra.push(e),
                None => break,
            }
            surplus -= 1;
        }
        self.debug_check();
        (0, extra)
    }

    /// A provisioned start begun by [`Pool::reconcile`] ended with `env` (`None`: it failed).
    /// The environment is kept idle if the version still wants it, it is of the current
    /// generation and the function is not being deleted; otherwise it is handed back, to
    /// destroy.
    pub fn provisioned_done(&mut self, env: Option<Arc<Environment>>, deleted: bool) -> Option<Arc<Environment>> {
        self.starting.1 = self.starting.1.saturating_sub(1);
        let env = env?;
        let wanted = self.pc_live() < self.pc_target;
        if !deleted && wanted && env.generation == self.generation {
            self.pc_idle.push(env);
            self.debug_check();
            None
        } else {
            Some(env)
        }
    }

    // ---- status ------------------------------------------------------------------------------

    /// Every environment with its state: idle provisioned ones, idle on-demand ones, then busy.
    pub fn environments(&self) -> impl Iterator<Item = (&Arc<Environment>, EnvState)> {
        let pc = self.pc_idle.iter().map(|e| (e, EnvState::Provisioned));
        let idle = self.idle.iter().map(|e| (e, EnvState::Idle));
        pc.chain(idle).chain(self.busy.values().map(|e| (e, EnvState::Busy)))
    }

    /// Environments being built: (on-demand, provisioned).
    pub fn starting(&self) -> (u32, u32) {
        self.starting
    }

    pub fn counts(&self) -> PoolCounts {
        let frozen = self.idle.iter().filter(|e| e.frozen()).count() as u32;
        PoolCounts {
            starting_on_demand: self.starting.0,
            starting_provisioned: self.starting.1,
            idle_thawed: self.idle.len() as u32 - frozen,
            idle_frozen: frozen,
            provisioned_idle: self.pc_idle.len() as u32,
            busy: self.busy.len() as u32,
            provisioned_busy: self.provisioned_busy() as u32,
        }
    }

    // ---- invariants --------------------------------------------------------------------------

    /// Checks the invariants stated on [`Pool`] that hold at every moment; an `Err` names the
    /// first one broken. Debug builds and tests only: a release build does not check.
    #[cfg(any(test, debug_assertions))]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (e, state) in self.environments() {
            if !seen.insert(e.id.as_str()) {
                return Err(format!("environment {} is in the pool twice", e.id));
            }
            if e.generation > self.generation {
                return Err(format!(
                    "environment {} is of generation {}, newer than the pool's {}",
                    e.id, e.generation, self.generation
                ));
            }
            match state {
                EnvState::Idle | EnvState::Provisioned if e.generation != self.generation => {
                    return Err(format!(
                        "idle environment {} is of generation {}, the pool is at {}",
                        e.id, e.generation, self.generation
                    ));
                }
                EnvState::Idle if e.init_type != InitType::OnDemand => {
                    return Err(format!("provisioned environment {} is in the on-demand idle list", e.id));
                }
                EnvState::Provisioned if e.init_type != InitType::Provisioned => {
                    return Err(format!("on-demand environment {} is in the provisioned idle list", e.id));
                }
                _ => {}
            }
        }
        if let Some((key, e)) = self.busy.iter().find(|(k, e)| **k != e.id) {
            return Err(format!("busy environment {} is filed under {key}", e.id));
        }
        Ok(())
    }

    /// In debug builds, panics when a change broke an invariant: a bug in this module.
    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if let Err(e) = self.check_invariants() {
            panic!("pool invariant broken: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    //! A model-based property test: random sequences of pool operations, each checked against
    //! the policy it should follow, with the invariants checked and no environment lost after
    //! every step.

    use super::*;
    use crate::fake::{detached_sandbox, FakeEnv};
    use crate::logs::LogSink;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[derive(Debug, Clone)]
    enum Op {
        Checkout { admit: bool },
        ColdDone { pick: usize, ok: bool },
        Checkin { pick: usize, healthy: bool, deleted: bool },
        Kill { pick: usize },
        Retire,
        Expire { all: bool },
        Evict,
        Target(u32),
        Reconcile,
        ProvisionedDone { pick: usize, ok: bool, deleted: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<bool>().prop_map(|admit| Op::Checkout { admit }),
            3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Op::ColdDone { pick, ok }),
            4 => (any::<usize>(), any::<bool>(), prop::bool::weighted(0.1))
                .prop_map(|(pick, healthy, deleted)| Op::Checkin { pick, healthy, deleted }),
            1 => any::<usize>().prop_map(|pick| Op::Kill { pick }),
            1 => Just(Op::Retire),
            1 => any::<bool>().prop_map(|all| Op::Expire { all }),
            1 => Just(Op::Evict),
            1 => (0u32..4).prop_map(Op::Target),
            2 => Just(Op::Reconcile),
            2 => (any::<usize>(), any::<bool>(), prop::bool::weighted(0.1))
                .prop_map(|(pick, ok, deleted)| Op::ProvisionedDone { pick, ok, deleted }),
        ]
    }

    /// What the test knows besides the pool.
    #[derive(Default)]
    struct World {
        /// Every environment built, with its fake sandbox.
        envs: Vec<(Arc<Environment>, Arc<FakeEnv>)>,
        /// Checked out and not back yet.
        held: Vec<Arc<Environment>>,
        /// Cold and provisioned builds under way, with their generation.
        cold: Vec<u64>,
        provisioned: Vec<u64>,
        /// Handed back by the pool to be destroyed.
        gone: HashSet<String>,
    }

    fn pick<T>(v: &mut Vec<T>, i: usize) -> Option<T> {
        (!v.is_empty()).then(|| v.remove(i % v.len()))
    }

    fn build(w: &mut World, ready: &Ready, logs: &LogSink, generation: u64, init_type: InitType) -> Arc<Environment> {
        let (sandbox, fake) = detached_sandbox();
        let env = Environment::detached(ready.config.clone(), generation, init_type, sandbox, logs).expect("env");
        w.envs.push((env.clone(), fake));
        env
    }

    /// The environment checkout should take from an idle list: the last one alive and current.
    fn expected_take(pool: &Pool, state: EnvState) -> Option<String> {
        let list: Vec<&Arc<Environment>> = pool.environments().filter(|(_, s)| *s == state).map(|(e, _)| e).collect();
        list.iter().rev().find(|e| e.alive() && e.generation == pool.generation()).map(|e| e.id.clone())
    }

    fn step(pool: &mut Pool, w: &mut World, ready: &Ready, logs: &LogSink, op: Op) {
        match op {
            Op::Checkout { admit } => {
                let pc = expected_take(pool, EnvState::Provisioned);
                let warm = expected_take(pool, EnvState::Idle);
                let generation = pool.generation();
                match pool.checkout(|| if admit { Ok(()) } else { Err(()) }) {
                    Ok(Checkout::Provisioned(e)) => {
                        assert_eq!(Some(&e.id), pc.as_ref(), "a free provisioned environment goes first");
                        w.held.push(e);
                    }
                    Ok(Checkout::Warm(e, ())) => {
                        assert!(pc.is_none() && admit);
                        assert_eq!(Some(&e.id), warm.as_ref(), "the most recently used idle one");
                        w.held.push(e);
                    }
                    Ok(Checkout::Cold(_, g, ())) => {
                        assert!(pc.is_none() && warm.is_none() && admit);
                        assert_eq!(g, generation);
                        w.cold.push(g);
                    }
                    Err(()) => assert!(pc.is_none() && !admit, "admission is asked only without a provisioned one"),
                }
            }
            Op::ColdDone { pick: i, ok } => {
                if let Some(g) = pick(&mut w.cold, i) {
                    if ok {
                        let env = build(w, ready, logs, g, InitType::OnDemand);
                        pool.cold_done(Some(&env));
                        w.held.push(env);
                    } else {
                        pool.cold_done(None);
                    }
                }
            }
            Op::Checkin { pick: i, healthy, deleted } => {
                if let Some(env) = pick(&mut w.held, i) {
                    let current = env.generation == pool.generation();
                    let replace = pool.checkin(&env, healthy, deleted);
                    let placed = pool.environments().any(|(e, _)| e.id == env.id);
                    assert_eq!(replace, env.init_type == InitType::Provisioned && !healthy);
                    if placed {
                        assert!(healthy && !deleted && current, "only a healthy current one goes back");
                    } else {
                        assert!(
                            !(healthy && !deleted && current && env.init_type == InitType::OnDemand),
                            "a healthy current on-demand environment goes back"
                        );
                        w.gone.insert(env.id.clone());
                    }
                }
            }
            Op::Kill { pick: i } => {
                if !w.envs.is_empty() {
                    w.envs[i % w.envs.len()].1.exit(1);
                }
            }
            Op::Retire => {
                let generation = pool.generation();
                let idle: HashSet<String> =
                    pool.environments().filter(|(_, s)| *s != EnvState::Busy).map(|(e, _)| e.id.clone()).collect();
                let out: HashSet<String> = pool.retire(ready.clone()).iter().map(|e| e.id.clone()).collect();
                assert_eq!(out, idle, "every idle environment is retired");
                assert_eq!(pool.generation(), generation + 1);
                w.gone.extend(out);
            }
            Op::Expire { all } => {
                let idle: HashSet<String> =
                    pool.environments().filter(|(_, s)| *s == EnvState::Idle).map(|(e, _)| e.id.clone()).collect();
                let keep_alive = if all { Duration::ZERO } else { Duration::from_secs(3600) };
                let out: HashSet<String> = pool.expire_idle(keep_alive).iter().map(|e| e.id.clone()).collect();
                assert_eq!(out, if all { idle } else { HashSet::new() });
                w.gone.extend(out);
            }
            Op::Evict => {
                let idle: Vec<String> =
                    pool.environments().filter(|(_, s)| *s == EnvState::Idle).map(|(e, _)| e.id.clone()).collect();
                match pool.least_recently_used().map(|(e, _)| e.id.clone()) {
                    Some(id) => {
                        let e = pool.evict(&id).expect("the chosen one is idle");
                        assert!(idle.contains(&e.id));
                        assert!(pool.evict(&id).is_none(), "evicted once");
                        w.gone.insert(id);
                    }
                    None => assert!(idle.is_empty()),
                }
            }
            Op::Target(n) => pool.set_pc_target(n),
            Op::Reconcile => {
                let live = pool.pc_live();
                let target = pool.pc_target();
                let (n, extra) = pool.reconcile();
                if live < target {
                    assert_eq!((n, extra.len()), (target - live, 0));
                    w.provisioned.extend(std::iter::repeat_n(pool.generation(), n as usize));
                } else {
                    assert_eq!(n, 0);
                    assert!(extra.iter().all(|e| e.init_type == InitType::Provisioned));
                    assert!(extra.len() as u32 <= live - target);
                    w.gone.extend(extra.iter().map(|e| e.id.clone()));
                }
            }
            Op::ProvisionedDone { pick: i, ok, deleted } => {
                if let Some(g) = pick(&mut w.provisioned, i) {
                    if ok {
                        let env = build(w, ready, logs, g, InitType::Provisioned);
                        let wanted = pool.pc_live() - 1 < pool.pc_target();
                        let current = g == pool.generation();
                        match pool.provisioned_done(Some(env.clone()), deleted) {
                            None => assert!(wanted && current && !deleted),
                            Some(back) => {
                                assert!(!(wanted && current && !deleted));
                                w.gone.insert(back.id.clone());
                            }
                        }
                    } else {
                        assert!(pool.provisioned_done(None, deleted).is_none());
                    }
                }
            }
        }
    }

    /// The invariants, and every environment accounted for: in the pool, held by a caller,
    /// handed back, or dropped by checkout because it was dead or outdated.
    fn check(pool: &Pool, w: &World) {
        pool.check_invariants().expect("invariants");
        assert_eq!(pool.starting(), (w.cold.len() as u32, w.provisioned.len() as u32));
        let busy: HashSet<&str> =
            pool.environments().filter(|(_, s)| *s == EnvState::Busy).map(|(e, _)| e.id.as_str()).collect();
        let held: HashSet<&str> = w.held.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(busy, held, "busy means checked out and not back");
        let in_pool: HashSet<&str> = pool.environments().map(|(e, _)| e.id.as_str()).collect();
        for (e, _) in &w.envs {
            let placed = in_pool.contains(e.id.as_str());
            let gone = w.gone.contains(&e.id);
            assert!(!(placed && gone), "{} is both in the pool and handed back", e.id);
            if !placed && !gone && !held.contains(e.id.as_str()) {
                assert!(!e.alive() || e.generation != pool.generation(), "{} was lost", e.id);
            }
        }
    }

    /// Runs `test` with a real function's `Ready` and an engine's log sink, inside a runtime.
    fn with_ready(test: impl FnOnce(&Ready, &LogSink)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let h = rt.block_on(async {
            let h = crate::lifecycle_tests::harness(|_| {});
            h.deploy("f", &crate::fake::Script::tag("v1"), 3, 128).await;
            h
        });
        let ready = {
            let fns = h.engine.read_functions();
            let st = fns["f"].lock();
            st.pools[&kiln_model::Version::Latest].ready().clone()
        };
        let logs = h.engine.logs().clone();
        {
            let _enter = rt.enter();
            test(&ready, &logs);
        }
        h.finish();
    }

    #[test]
    fn random_operations_follow_the_policy_and_keep_the_invariants() {
        with_ready(|ready, logs| {
            let config = proptest::test_runner::Config { cases: 64, ..Default::default() };
            let mut runner = proptest::test_runner::TestRunner::new(config);
            runner
                .run(&prop::collection::vec(op(), 1..80), |ops| {
                    let mut pool = Pool::new(ready.clone());
                    let mut w = World::default();
                    for op in ops {
                        step(&mut pool, &mut w, ready, logs, op);
                        check(&pool, &w);
                    }
                    w.gone.extend(pool.drain().iter().map(|e| e.id.clone()));
                    assert!(pool.environments().next().is_none(), "drain empties the pool");
                    Ok(())
                })
                .expect("property holds");
        });
    }

    #[test]
    fn check_invariants_names_each_broken_one() {
        with_ready(|ready, logs| {
            let env = |generation, init_type| {
                let (sandbox, _) = detached_sandbox();
                Environment::detached(ready.config.clone(), generation, init_type, sandbox, logs).expect("env")
            };
            let broken = |pool: Pool, what: &str| {
                let err = pool.check_invariants().expect_err(what);
                assert!(err.contains(what), "{err}");
            };
            let fresh = || Pool::new(ready.clone());

            let mut p = fresh();
            let e = env(0, InitType::OnDemand);
            p.idle.push(e.clone());
            p.busy.insert(e.id.clone(), e);
            broken(p, "in the pool twice");

            let mut p = fresh();
            p.busy.insert("elsewhere".into(), env(0, InitType::OnDemand));
            broken(p, "is filed under elsewhere");

            let mut p = fresh();
            p.idle.push(env(0, InitType::Provisioned));
            broken(p, "in the on-demand idle list");

            let mut p = fresh();
            p.pc_idle.push(env(0, InitType::OnDemand));
            broken(p, "in the provisioned idle list");

            let mut p = fresh();
            p.generation = 2;
            p.idle.push(env(1, InitType::OnDemand));
            broken(p, "the pool is at 2");

            let mut p = fresh();
            let e = env(1, InitType::OnDemand);
            p.busy.insert(e.id.clone(), e);
            broken(p, "newer than the pool's 0");

            // A busy environment of an older generation is fine: it is retired when it is back.
            let mut p = fresh();
            p.generation = 3;
            let e = env(1, InitType::OnDemand);
            p.busy.insert(e.id.clone(), e);
            p.check_invariants().expect("an older busy environment is allowed");
        });
    }
}
