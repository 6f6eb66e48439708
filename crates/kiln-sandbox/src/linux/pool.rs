//! The pool of blank environments: built ahead of time by background threads, taken by
//! [`crate::Backend::spawn`], never reused.
//!
//! A blank is an environment without a function (see [`super::blank::Blank`]): its init has built
//! everything that does not depend on the spec and waits for a claim. The filler threads keep
//! `target` blanks ready; each new blank gets the limits and `/tmp` size of the latest claim, so
//! a run of claims of one function needs no cgroup writes and no `/tmp` remount. A blank whose
//! build fails is not retried for a second (the error is logged), so a broken host does not spin.
//!
//! # Sizing from recent demand
//!
//! The target is not a constant: it is the most spawns seen in any tenth of a second of the last
//! [`DEMAND_MEMORY`] ([`Demand`]), at least the configured floor (`set_target`, 0 disables the
//! pool) and at most [`LinuxOptions::pool_max`](super::LinuxOptions::pool_max). So after a burst
//! of 200 cold starts the pool refills to 200 in the background, and the next such burst finds
//! its environments built; a steady trickle of cold starts keeps the floor. Idle blanks cost
//! memory (an init process, its namespaces and tmpfs root), so once no window of the last
//! [`DEMAND_MEMORY`] saw that many spawns the target falls back and the fillers discard the
//! extra blanks, oldest first. Up to [`MAX_BUILDERS`] threads build at once when more than one
//! blank is missing.
//!
//! # Refills that wait for the cold start
//!
//! A blank's build is mostly kernel work (cgroup `mkdir`s, a network namespace, mounts, a
//! `clone`), and on a kernel without preemption a task woken on a CPU inside such a path waits
//! until it ends: a refill started by the take competes with the very cold start that took the
//! blank. So a *lone* take (no other cold start in progress, blanks still ready after it) holds
//! its refill back ([`Holds`]) until that environment is first frozen (the engine freezes an
//! environment idle for a few milliseconds: after its first call was answered, or after a
//! provisioned Init), it is destroyed or its claim failed, or [`REFILL_HOLD`] passed, whichever
//! comes first. Releasing it at the end of the first call instead put the build beside the
//! answer's way back to the caller. A take while another cold start is in progress, or one that
//! empties the pool, is demand that cannot wait: the held refill is released and the fillers
//! build at once, as before.
//!
//! A lone take does not wake the fillers at all (that was two thread wake-ups on the cold
//! start's path, and in traces the woken filler preempted the claiming thread), so no filler
//! sets a timer for the hold: its time limit is checked whenever the pool is next looked at (a
//! take, a release, a filler's wake-up, [`Pool::wait_full`]). A hold past its limit therefore
//! lasts at most until the next take, and a take is the only thing the missing blank is for.
use super::backend::Inner;
use super::blank::{build_blank, discard_all, Blank};
use super::lock;
use crate::linux::cgroups::Limits;
use crate::PoolStats;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the filler waits after a failed build.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The filler's nice value. In a burst a blank is built right after a cold start took one, while
/// that cold start still runs; at nice 10 the build gets about a tenth of a CPU the cold start
/// wants.
/// Blanks inherit it and go back to 0 once built (see `child::init`).
const FILLER_NICE: i32 = 10;

/// How long a peak of demand keeps the pool at its size.
pub(super) const DEMAND_MEMORY: Duration = Duration::from_secs(30);
/// The window demand is counted in: the pool holds as many blanks as the busiest window of the
/// last [`DEMAND_MEMORY`] took. Short, so that it measures bursts (calls that arrive together
/// and each need an environment at once) rather than rates: a steady 200 cold starts a second
/// asks for 20 blanks, which the fillers replace as fast as they go, while 200 simultaneous
/// calls ask for 200.
const DEMAND_WINDOW: Duration = Duration::from_millis(100);
/// Filler threads: more than one when many blanks are missing. Each build is mostly kernel work
/// of its own (cgroups, namespaces, mounts), so two builders on two CPUs refill twice as fast.
pub(super) const MAX_BUILDERS: usize = 2;

/// The longest a lone cold start holds back the refill of the blank it took (see the module
/// docs): far longer than a cold start here (a few milliseconds), short enough that a pool
/// never stays below its target for long if the signal is lost.
pub(super) const REFILL_HOLD: Duration = Duration::from_millis(100);

/// The refill held back by a lone cold start in progress, until released or expired: at most
/// one, since a take while one is held is no longer alone and releases it. Time is passed in, as
/// for [`Demand`].
#[derive(Debug, Default)]
pub(super) struct Holds {
    /// (id, expiry) of the hold in force.
    held: Option<(u64, Instant)>,
    last_id: u64,
}

impl Holds {
    /// A take at `now` that left `ready_after` blanks ready: the id of the hold on its refill
    /// when the take is alone, or `None` after releasing the hold in force when it is not
    /// (another cold start is still in progress, or the pool is empty: demand the fillers must
    /// meet at once).
    pub(super) fn on_take(&mut self, now: Instant, ready_after: usize) -> Option<u64> {
        self.expire(now);
        if ready_after == 0 || self.held.is_some() {
            self.held = None;
            return None;
        }
        self.last_id += 1;
        self.held = Some((self.last_id, now + REFILL_HOLD));
        Some(self.last_id)
    }

    /// Ends the hold `id`; false if it had already ended (released, expired or cleared).
    pub(super) fn release(&mut self, id: u64) -> bool {
        self.held.take_if(|(h, _)| *h == id).is_some()
    }

    /// Drops the hold if it expired at `now`; true if it did.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        self.held.take_if(|(_, until)| *until <= now).is_some()
    }

    /// How many refills are held back (once [`Holds::expire`] ran at the present): 0 or 1.
    pub(super) fn count(&self) -> usize {
        usize::from(self.held.is_some())
    }

    /// When the hold in force expires, if there is one.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.held.map(|h| h.1)
    }
}

/// Spawns counted per [`DEMAND_WINDOW`] over the last [`DEMAND_MEMORY`]. Time is passed in, so
/// the rules are tested without waiting.
#[derive(Debug, Default)]
pub(super) struct Demand {
    /// (start of the window, spawns in it), oldest first; only windows with spawns.
    windows: VecDeque<(Instant, usize)>,
}

impl Demand {
    /// Counts one spawn at `now`.
    pub(super) fn record(&mut self, now: Instant) {
        self.forget(now);
        match self.windows.back_mut() {
            Some((start, n)) if now.saturating_duration_since(*start) < DEMAND_WINDOW => *n += 1,
            _ => self.windows.push_back((now, 1)),
        }
    }

    /// The most spawns of one window among those that started within [`DEMAND_MEMORY`] of `now`.
    pub(super) fn peak(&self, now: Instant) -> usize {
        self.windows
            .iter()
            .filter(|(start, _)| now.saturating_duration_since(*start) < DEMAND_MEMORY)
            .map(|w| w.1)
            .max()
            .unwrap_or(0)
    }

    /// When the peak may next fall (the oldest window leaves the memory), if there is a window;
    /// in the future once [`Demand::forget`] ran at the present.
    pub(super) fn next_change(&self) -> Option<Instant> {
        self.windows.front().map(|(start, _)| *start + DEMAND_MEMORY)
    }

    /// Drops the windows that started [`DEMAND_MEMORY`] or more before `now`.
    pub(super) fn forget(&mut self, now: Instant) {
        while self.windows.front().is_some_and(|(start, _)| now.saturating_duration_since(*start) >= DEMAND_MEMORY) {
            self.windows.pop_front();
        }
    }
}

/// The pool's target: the recent peak of demand, at least `floor`, at most `max`; 0 when the
/// floor is 0 (the pool is disabled).
pub(super) fn target(floor: usize, peak: usize, max: usize) -> usize {
    if floor == 0 {
        return 0;
    }
    peak.max(floor).min(max.max(floor))
}

/// How many blanks the fillers should start building now: what the target asks beyond the
/// ready ones, those being built and the refills held for cold starts in progress.
pub(super) fn to_build(target: usize, ready: usize, building: usize, held: usize) -> usize {
    target.saturating_sub(ready + building + held)
}

pub(crate) struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a blank is taken or added, the target changes, or the pool stops.
    cv: Condvar,
}

struct PoolState {
    /// The configured size: the target when demand is low; 0 disables the pool.
    floor: usize,
    /// The most blanks demand may ask for.
    max: usize,
    /// What the fillers build towards: [`target`] of the floor, the demand and the maximum.
    target: usize,
    demand: Demand,
    /// Most recently built last: taken from the end, discarded from the front.
    ready: VecDeque<Blank>,
    /// Builds in progress in the fillers.
    building: usize,
    /// Refills that wait for the cold start that took their blank.
    holds: Holds,
    stopped: bool,
    /// Limits and `/tmp` size of the latest claim, for the next blanks.
    limits: Limits,
    tmp_mb: u32,
    stats: PoolStats,
}

impl PoolState {
    /// Recomputes the target from the demand at `now`; true if it changed.
    fn retarget(&mut self, now: Instant) -> bool {
        // Forgotten windows go first, so that `next_change` is always in the future.
        self.demand.forget(now);
        let t = target(self.floor, self.demand.peak(now), self.max);
        std::mem::replace(&mut self.target, t) != t
    }

    /// The ready blanks beyond the target, oldest first, for the caller to discard.
    fn excess(&mut self) -> Vec<Blank> {
        let n = self.ready.len().saturating_sub(self.target);
        self.ready.drain(..n).collect()
    }
}

impl Pool {
    pub(crate) fn new(floor: usize, max: usize, limits: Limits, tmp_mb: u32) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                floor,
                max,
                target: target(floor, 0, max),
                demand: Demand::default(),
                ready: VecDeque::new(),
                building: 0,
                holds: Holds::default(),
                stopped: false,
                limits,
                tmp_mb,
                stats: PoolStats::default(),
            }),
            cv: Condvar::new(),
        }
    }

    /// A ready blank, if any, with the id of the hold on its refill when the take is alone (see
    /// the module docs; [`Pool::release`] ends it); counts the demand, remembers `limits` and
    /// `tmp_mb` for the next builds and wakes the fillers when there is something to build.
    pub(crate) fn take(&self, limits: Limits, tmp_mb: u32) -> Option<(Blank, Option<u64>)> {
        let mut st = lock(&self.state);
        st.limits = limits;
        st.tmp_mb = tmp_mb;
        let now = Instant::now();
        st.demand.record(now);
        let retargeted = st.retarget(now);
        let blank = st.ready.pop_back();
        let ready_after = if blank.is_some() { st.ready.len() } else { 0 };
        let hold = st.holds.on_take(now, ready_after);
        // A take whose refill is held, with the target unchanged, gives the fillers nothing to
        // do: waking them would only put two thread wake-ups on the cold start's path.
        if retargeted || to_build(st.target, st.ready.len(), st.building, st.holds.count()) > 0 {
            self.cv.notify_all();
        }
        blank.map(|b| (b, hold))
    }

    /// Ends the hold `id` on a refill: the cold start that took its blank is over (or failed).
    pub(crate) fn release(&self, id: u64) {
        let mut st = lock(&self.state);
        if st.holds.release(id) {
            self.cv.notify_all();
        }
    }

    pub(crate) fn count_spawn(&self, pooled: bool) {
        let mut st = lock(&self.state);
        if pooled {
            st.stats.pooled_spawns += 1;
        } else {
            st.stats.fresh_spawns += 1;
        }
    }

    /// Sets the floor (0 disables the pool); returns the blanks beyond the new target, for the
    /// caller to discard.
    pub(crate) fn set_target(&self, floor: usize) -> Vec<Blank> {
        let mut st = lock(&self.state);
        st.floor = floor;
        st.retarget(Instant::now());
        let extra = st.excess();
        self.cv.notify_all();
        extra
    }

    /// Stops the pool for good: no more builds. Waits for the builds in progress to end (the
    /// fillers discard what they built) and returns the ready blanks, for the caller to discard.
    pub(crate) fn stop(&self, timeout: Duration) -> Vec<Blank> {
        let mut st = lock(&self.state);
        st.stopped = true;
        self.cv.notify_all();
        let blanks = std::mem::take(&mut st.ready).into();
        let (_st, _) =
            self.cv.wait_timeout_while(st, timeout, |s| s.building > 0).unwrap_or_else(PoisonError::into_inner);
        blanks
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = lock(&self.state);
        PoolStats { target: st.target, ready: st.ready.len(), held_refills: st.holds.count(), ..st.stats }
    }

    /// Waits until the pool holds its target (or has stopped); false on timeout. Refills held
    /// for cold starts still in progress are let go once their time is up.
    pub(crate) fn wait_full(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        loop {
            if st.stopped || st.ready.len() >= st.target {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if st.holds.expire(now) {
                self.cv.notify_all();
            }
            let until = st.holds.next_expiry().map_or(deadline, |e| e.min(deadline));
            st = self
                .cv
                .wait_timeout(st, until.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A filler thread: keeps the pool at its target until the pool stops, building when a blank is
/// missing and discarding the oldest blanks when the target has fallen.
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
            if st.retarget(now) {
                pool.cv.notify_all();
            }
            let extra = st.excess();
            if !extra.is_empty() {
                drop(st);
                tracing::debug!(instance = %inner.instance_id, discarded = extra.len(), "demand fell: pool shrinks");
                discard_all(extra, inner.cgroups.as_ref());
                st = lock(&pool.state);
                continue;
            }
            if let Some(until) = pause_until.filter(|u| *u > now) {
                st = pool.cv.wait_timeout(st, until - now).unwrap_or_else(PoisonError::into_inner).0;
                continue;
            }
            st.holds.expire(now);
            if to_build(st.target, st.ready.len(), st.building, st.holds.count()) > 0 {
                break;
            }
            // Wake when a held refill's time is up, and above the floor when the oldest demand is
            // forgotten, to shrink.
            let shrink = st.demand.next_change().filter(|_| st.target > st.floor);
            st = match [st.holds.next_expiry(), shrink].into_iter().flatten().min() {
                Some(at) => {
                    let wait = at.saturating_duration_since(now) + Duration::from_millis(1);
                    pool.cv.wait_timeout(st, wait).unwrap_or_else(PoisonError::into_inner).0
                }
                None => pool.cv.wait(st).unwrap_or_else(PoisonError::into_inner),
            };
        }
        pause_until = None;
        st.building += 1;
        let (limits, tmp_mb) = (st.limits, st.tmp_mb);
        drop(st);

        let name = format!("blank.{}", inner.blank_seq.fetch_add(1, Ordering::Relaxed));
        let built = build_blank(inner, &name, limits, tmp_mb);
        let mut st = lock(&pool.state);
        match built {
            Ok(blank) if !st.stopped && st.ready.len() < st.target => st.ready.push_back(blank),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_peak_is_the_busiest_window_of_the_memory() {
        let t0 = Instant::now();
        let mut d = Demand::default();
        assert_eq!(d.peak(t0), 0);
        assert_eq!(d.next_change(), None);
        // A burst of 200 within a few milliseconds: one window.
        for i in 0..200 {
            d.record(t0 + Duration::from_micros(i * 10));
        }
        assert_eq!(d.peak(t0 + Duration::from_millis(5)), 200);
        // A trickle afterwards does not lower the peak while the burst is remembered.
        for s in 2..10 {
            d.record(t0 + Duration::from_secs(s));
        }
        assert_eq!(d.peak(t0 + Duration::from_secs(10)), 200);
        assert_eq!(d.next_change(), Some(t0 + DEMAND_MEMORY));
        // Once forgotten, the burst's window no longer says when the peak changes.
        d.forget(t0 + DEMAND_MEMORY);
        assert_eq!(d.next_change(), Some(t0 + Duration::from_secs(2) + DEMAND_MEMORY));
        // Once the burst's window is forgotten, the trickle is what is left.
        assert_eq!(d.peak(t0 + DEMAND_MEMORY), 1);
        assert_eq!(d.peak(t0 + DEMAND_MEMORY + Duration::from_secs(10)), 0);
    }

    #[test]
    fn demand_windows_split_a_steady_rate() {
        let t0 = Instant::now();
        let mut d = Demand::default();
        // 200 spawns a second for 5 seconds: 20 per window.
        for i in 0..1000u64 {
            d.record(t0 + Duration::from_millis(i * 5));
        }
        assert_eq!(d.peak(t0 + Duration::from_secs(5)), 20);
        // Recording forgets windows older than the memory, so the list stays short.
        d.record(t0 + DEMAND_MEMORY + Duration::from_secs(6));
        assert_eq!(d.windows.len(), 1);
        assert_eq!(d.peak(t0 + DEMAND_MEMORY + Duration::from_secs(6)), 1);
    }

    #[test]
    fn target_follows_demand_between_floor_and_max() {
        assert_eq!(target(4, 0, 256), 4);
        assert_eq!(target(4, 3, 256), 4);
        assert_eq!(target(4, 200, 256), 200);
        assert_eq!(target(4, 1000, 256), 256);
        // A floor above the maximum wins; a floor of 0 disables the pool whatever the demand.
        assert_eq!(target(8, 100, 2), 8);
        assert_eq!(target(0, 200, 256), 0);
    }

    #[test]
    fn a_lone_take_holds_its_refill_until_released() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        let id = h.on_take(t0, 3).expect("a lone take with blanks left is held");
        assert_eq!(h.count(), 1);
        assert_eq!(h.next_expiry(), Some(t0 + REFILL_HOLD));
        // Released once: the second release (a destroy after the signal) finds nothing.
        assert!(h.release(id));
        assert!(!h.release(id));
        assert_eq!(h.count(), 0);
        assert_eq!(h.next_expiry(), None);
        // The next lone take is held again, with its own id.
        let id2 = h.on_take(t0 + Duration::from_millis(5), 3).unwrap();
        assert_ne!(id, id2);
        assert_eq!(h.count(), 1);
    }

    #[test]
    fn a_hold_ends_by_itself_after_its_time() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        let id = h.on_take(t0, 3).unwrap();
        assert!(!h.expire(t0 + REFILL_HOLD - Duration::from_millis(1)));
        assert_eq!(h.count(), 1);
        assert!(h.expire(t0 + REFILL_HOLD));
        assert_eq!(h.count(), 0);
        // A signal that arrives late has nothing left to release.
        assert!(!h.release(id));
        // A take after the limit is alone again: the expired hold does not make it a burst.
        assert!(h.on_take(t0 + REFILL_HOLD + Duration::from_millis(1), 3).is_some());
        assert_eq!(h.count(), 1);
    }

    #[test]
    fn concurrent_takes_or_an_empty_pool_refill_at_once() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        // A second cold start while the first is in progress: a burst; both refills go now.
        let first = h.on_take(t0, 3).unwrap();
        assert_eq!(h.on_take(t0 + Duration::from_millis(1), 2), None);
        assert_eq!(h.count(), 0);
        assert!(!h.release(first));
        // Every further take of the burst finds no hold and adds one only once the others ended.
        assert!(h.on_take(t0 + Duration::from_millis(2), 1).is_some());
        assert_eq!(h.on_take(t0 + Duration::from_millis(2), 0), None);
        assert_eq!(h.count(), 0);
        // A take that leaves the pool empty (or found it empty) is never held, even alone.
        assert_eq!(h.on_take(t0 + Duration::from_secs(1), 0), None);
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn held_refills_are_not_built_and_released_ones_are() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        // A pool of 4 after a lone take: 3 ready, the fourth held.
        let id = h.on_take(t0, 3).unwrap();
        assert_eq!(to_build(4, 3, 0, h.count()), 0);
        h.release(id);
        assert_eq!(to_build(4, 3, 0, h.count()), 1);
        // Demand above the pool (a burst raised the target to 10) is built whatever is held.
        let _ = h.on_take(t0, 3).unwrap();
        assert_eq!(to_build(10, 3, 1, h.count()), 5);
        // More ready than the target (it fell) builds nothing.
        assert_eq!(to_build(4, 6, 0, 0), 0);
    }
}
