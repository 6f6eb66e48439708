//! kiln's descriptor budget: the soft `RLIMIT_NOFILE` is raised to the hard limit at start, and a
//! reserve is kept for what must never fail for want of a descriptor — destroying environments
//! (cgroup clean-up), the REST listener, the log writer and SQLite.
//!
//! Two things a function can make kiln open are bounded against it: Runtime API connections
//! (all environments together get at most half of what is left above the reserve; each one at
//! most `kiln_runtime_api::MAX_CONNECTIONS`) and cold starts (refused with a 429 once the
//! descriptors in use reach the limit less the reserve), so kiln answers with a clear error
//! instead of failing on `EMFILE` somewhere it cannot recover.

use crate::error::{EngineError, ThrottleReason};
use std::sync::atomic::{AtomicUsize, Ordering};

/// kiln's soft limit once raised; 0 until [`raise_limit`] ran (then nothing is checked).
static SOFT_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Descriptors one new environment takes in kiln at most while it starts (sandbox handles,
/// pipes, the Runtime API listener, cgroup files), with room to spare.
pub const COLD_START_DESCRIPTORS: usize = 32;

/// The reserve kept for clean-up and the REST API: a tenth of the limit, at least 64 and at
/// most 2,048 descriptors.
pub fn reserve_for(soft: usize) -> usize {
    (soft / 10).clamp(64, 2048)
}

/// What [`raise_limit`] did.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub soft: usize,
    pub reserve: usize,
    /// Runtime API connections allowed over all environments.
    pub runtime_api_connections: usize,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and sets the budgets from it. Called once
/// by `kiln serve` before anything is opened.
pub fn raise_limit() -> std::io::Result<Budget> {
    let lim = kiln_sandbox::fdlimit::raise_nofile()?;
    let soft = usize::try_from(lim.soft).unwrap_or(usize::MAX).min(1 << 30);
    Ok(configure(soft))
}

fn configure(soft: usize) -> Budget {
    let reserve = reserve_for(soft);
    let runtime_api_connections = soft.saturating_sub(reserve) / 2;
    SOFT_LIMIT.store(soft, Ordering::Relaxed);
    kiln_runtime_api::set_connection_limit(runtime_api_connections);
    Budget { soft, reserve, runtime_api_connections }
}

/// Refuses a cold start when it would eat into the reserve.
pub(crate) fn check_cold_start() -> Result<(), EngineError> {
    let soft = SOFT_LIMIT.load(Ordering::Relaxed);
    if soft == 0 {
        return Ok(());
    }
    if RECENT.fresh_and_far(soft) {
        return Ok(());
    }
    let Some(open) = kiln_sandbox::fdlimit::open_descriptors() else {
        return Ok(());
    };
    RECENT.record(open);
    refuse_over(open, soft)
}

/// How long a count of the open descriptors may stand in for a new one. Runtime API
/// connections, the other thing a tenant can make kiln open, have their own budget (half of
/// what is above the reserve), and the count is only reused while it is below half the limit.
const RECOUNT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The last count of open descriptors, and the cold starts let through on it since. Counting
/// lists `/proc/self/fd`, whose cost grows with the descriptors open (tens of microseconds with
/// a few dozen: 0.07–0.2 ms measured with 42; milliseconds with the thousands of a thousand
/// idle environments), on every cold start's path; a recent count far below the limit answers
/// instead.
struct Recent {
    state: std::sync::Mutex<Option<(std::time::Instant, usize, usize)>>,
}

static RECENT: Recent = Recent { state: std::sync::Mutex::new(None) };

impl Recent {
    /// True when a count younger than [`RECOUNT_AFTER`], plus everything the cold starts let
    /// through on it (and this one) may have opened, stays below half of what is allowed; then
    /// counts this cold start against it.
    fn fresh_and_far(&self, soft: usize) -> bool {
        let ceiling = soft.saturating_sub(reserve_for(soft));
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((at, open, since)) = st.as_mut() else { return false };
        let bound = *open + (*since + 1) * COLD_START_DESCRIPTORS;
        if at.elapsed() >= RECOUNT_AFTER || bound >= ceiling / 2 {
            return false;
        }
        *since += 1;
        true
    }

    fn record(&self, open: usize) {
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), open, 0));
    }
}

fn refuse_over(open: usize, soft: usize) -> Result<(), EngineError> {
    let ceiling = soft.saturating_sub(reserve_for(soft));
    if open + COLD_START_DESCRIPTORS > ceiling {
        tracing::warn!(open, soft, "cold start refused: kiln is near its descriptor limit");
        return Err(EngineError::rate_exceeded_because(
            ThrottleReason::ConcurrentInvocationLimitExceeded,
            format_args!(
                "kiln has {open} of its {soft} file descriptors open and keeps {} for clean-up; no new execution environment now.",
                reserve_for(soft)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept() {
        assert_eq!(reserve_for(1024), 102);
        assert_eq!(reserve_for(20_000), 2000);
        assert_eq!(reserve_for(1 << 20), 2048);
        assert_eq!(reserve_for(100), 64);
        assert!(refuse_over(100, 20_000).is_ok());
        assert!(refuse_over(17_968, 20_000).is_ok());
        let e = refuse_over(17_969, 20_000).unwrap_err();
        assert!(matches!(e, EngineError::Throttled { .. }), "{e}");
        assert!(e.to_string().contains("17969 of its 20000"), "{e}");
    }
}
