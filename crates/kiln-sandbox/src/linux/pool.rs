//! The pool of blank environments: built ahead of time by one background thread, taken by
//! [`crate::Backend::spawn`], never reused.
//!
//! A blank is an environment without a function (see [`super::blank::Blank`]): its init has built
//! everything that does not depend on the spec and waits for a claim. The filler thread keeps
//! `target` blanks ready, building one at a time; each new blank gets the limits and `/tmp` size
//! of the latest claim, so a run of claims of one function needs no cgroup writes and no `/tmp`
//! remount. A blank whose build fails is not retried for a second (the error is logged), so a
//! broken host does not spin.

use super::backend::Inner;
use super::blank::{build_blank, Blank};
use super::lock;
use crate::linux::cgroups::Limits;
use crate::PoolStats;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the filler waits after a failed build.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The filler's nice value. A blank is built right after a cold start took one, while that cold
/// start still runs; at nice 10 the build gets about a tenth of a CPU the cold start wants.
/// Blanks inherit it and go back to 0 once built (see `child::init`).
const FILLER_NICE: i32 = 10;

pub(crate) struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a blank is taken or added, the target changes, or the pool stops.
    cv: Condvar,
}

struct PoolState {
    target: usize,
    /// Most recently built last: taken from the end.
    ready: Vec<Blank>,
    /// Builds in progress in the filler (0 or 1).
    building: usize,
    stopped: bool,
    /// Limits and `/tmp` size of the latest claim, for the next blanks.
    limits: Limits,
    tmp_mb: u32,
    stats: PoolStats,
}

impl Pool {
    pub(crate) fn new(target: usize, limits: Limits, tmp_mb: u32) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                target,
                ready: Vec::new(),
                building: 0,
                stopped: false,
                limits,
                tmp_mb,
                stats: PoolStats::default(),
            }),
            cv: Condvar::new(),
        }
    }

    /// A ready blank, if any; remembers `limits` and `tmp_mb` for the next builds and wakes the
    /// filler.
    pub(crate) fn take(&self, limits: Limits, tmp_mb: u32) -> Option<Blank> {
        let mut st = lock(&self.state);
        st.limits = limits;
        st.tmp_mb = tmp_mb;
        let blank = st.ready.pop();
        if blank.is_some() {
            self.cv.notify_all();
        }
        blank
    }

    pub(crate) fn count_spawn(&self, pooled: bool) {
        let mut st = lock(&self.state);
        if pooled {
            st.stats.pooled_spawns += 1;
        } else {
            st.stats.fresh_spawns += 1;
        }
    }

    /// Sets the target; returns the blanks beyond it, for the caller to discard.
    pub(crate) fn set_target(&self, target: usize) -> Vec<Blank> {
        let mut st = lock(&self.state);
        st.target = target;
        let keep = st.ready.len().min(target);
        let extra = st.ready.split_off(keep);
        self.cv.notify_all();
        extra
    }

    /// Stops the pool for good: no more builds. Waits for a build in progress to end (the filler
    /// discards what it built) and returns the ready blanks, for the caller to discard.
    pub(crate) fn stop(&self, timeout: Duration) -> Vec<Blank> {
        let mut st = lock(&self.state);
        st.stopped = true;
        self.cv.notify_all();
        let blanks = std::mem::take(&mut st.ready);
        let (_st, _) =
            self.cv.wait_timeout_while(st, timeout, |s| s.building > 0).unwrap_or_else(PoisonError::into_inner);
        blanks
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = lock(&self.state);
        PoolStats { target: st.target, ready: st.ready.len(), ..st.stats }
    }

    /// Waits until the pool holds its target (or has stopped); false on timeout.
    pub(crate) fn wait_full(&self, timeout: Duration) -> bool {
        let st = lock(&self.state);
        let (st, _) = self
            .cv
            .wait_timeout_while(st, timeout, |s| !s.stopped && s.ready.len() < s.target)
            .unwrap_or_else(PoisonError::into_inner);
        st.stopped || st.ready.len() >= st.target
    }
}

/// The filler thread: keeps the pool at its target until the pool stops.
pub(crate) fn filler_loop(inner: &Arc<Inner>) {
    if let Err(e) = super::sys::host::nice_this_thread(FILLER_NICE) {
        tracing::debug!(error = %e, "cannot lower the pool's priority");
    }
    let pool = &inner.pool;
    let mut pause_until: Option<Instant> = None;
    loop {
        let mut st = lock(&pool.state);
        loop {
            if st.stopped {
                return;
            }
            let now = Instant::now();
            if let Some(until) = pause_until.filter(|u| *u > now) {
                st = pool.cv.wait_timeout(st, until - now).unwrap_or_else(PoisonError::into_inner).0;
                continue;
            }
            if st.ready.len() + st.building < st.target {
                break;
            }
            st = pool.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        pause_until = None;
        st.building += 1;
        let (limits, tmp_mb) = (st.limits, st.tmp_mb);
        drop(st);

        let name = format!("blank.{}", inner.blank_seq.fetch_add(1, Ordering::Relaxed));
        let built = build_blank(inner, &name, limits, tmp_mb);
        let mut st = lock(&pool.state);
        match built {
            Ok(blank) if !st.stopped && st.ready.len() < st.target => st.ready.push(blank),
            Ok(blank) => {
                // Stopped or shrunk meanwhile: discard it before saying the build is over, so
                // `stop` returns only once nothing of it is left.
                drop(st);
                blank.discard(inner.cgroups.as_ref());
                st = lock(&pool.state);
            }
            Err(e) => {
                st.stats.failed_builds += 1;
                tracing::warn!(instance = %inner.instance_id, blank = %name, error = %e, "cannot build a blank environment");
                pause_until = Some(Instant::now() + RETRY_PAUSE);
            }
        }
        st.building -= 1;
        pool.cv.notify_all();
    }
}
