//! Admission: whether an invocation may start, by Lambda's concurrency rules
//! (docs/lambda-api.md, "Concurrency and throttling").
//!
//! - A function with reserved concurrency R may have at most `R − Σ provisioned` on-demand
//!   invocations in flight (provisioned environments serve the rest).
//! - The account may have at most `limit` in flight, where a function with reserved concurrency
//!   counts as R and every other function as its provisioned total plus its on-demand calls.
//!
//! A [`Permit`] is the right to run one on-demand invocation; dropping it gives the slot back,
//! so no path (success, error, timeout, crash, a caller that hangs up) can leak a slot.

use crate::error::ThrottleReason;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    reserved: Option<u32>,
    provisioned: u32,
    in_flight: u32,
}

#[derive(Debug, Default)]
struct State {
    functions: HashMap<String, Counters>,
}

impl State {
    fn account_usage(&self) -> u64 {
        self.functions
            .values()
            .map(|c| match c.reserved {
                Some(r) => u64::from(r),
                None => u64::from(c.provisioned) + u64::from(c.in_flight),
            })
            .sum()
    }

    fn reserved_total(&self, except: &str) -> u64 {
        self.functions.iter().filter(|(n, _)| n.as_str() != except).filter_map(|(_, c)| c.reserved).map(u64::from).sum()
    }
}

/// The account's concurrency bookkeeping.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The account's limit; it may change while kiln runs ([`Admission::set_limit`]).
    limit: Arc<AtomicU32>,
    state: Arc<Mutex<State>>,
}

/// One on-demand slot; released on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Admission,
    function: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        if let Some(c) = st.functions.get_mut(&self.function) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

/// How much must stay unreserved in the account.
pub const MIN_UNRESERVED: u32 = 100;

impl Admission {
    pub fn new(limit: u32) -> Self {
        Self { limit: Arc::new(AtomicU32::new(limit)), state: Arc::new(Mutex::new(State::default())) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// A new account limit. Invocations in flight keep their slots (a lower limit only refuses
    /// new ones until usage falls under it); reservations made under a higher limit stay.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Takes an on-demand slot for `function`, or says why not.
    pub fn acquire(&self, function: &str) -> Result<Permit, ThrottleReason> {
        let mut st = self.lock();
        let usage = st.account_usage();
        let c = st.functions.entry(function.to_string()).or_default();
        match c.reserved {
            Some(r) => {
                if c.in_flight + c.provisioned >= r {
                    return Err(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded);
                }
            }
            None => {
                if usage >= u64::from(self.limit()) {
                    return Err(ThrottleReason::ConcurrentInvocationLimitExceeded);
                }
            }
        }
        c.in_flight += 1;
        Ok(Permit { admission: self.clone(), function: function.to_string() })
    }

    /// Whether `function` may reserve `reserved` (None: remove the reservation).
    pub fn check_reserved(&self, function: &str, reserved: u32) -> Result<(), String> {
        let st = self.lock();
        let others = st.reserved_total(function);
        if others + u64::from(reserved) > u64::from(self.limit().saturating_sub(MIN_UNRESERVED)) {
            return Err(format!(
                "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
            ));
        }
        let pc = st.functions.get(function).map_or(0, |c| c.provisioned);
        if reserved < pc {
            return Err(format!(
                "ReservedConcurrentExecutions {reserved} should not be lower than function's total provisioned concurrency [{pc}]."
            ));
        }
        Ok(())
    }

    pub fn set_reserved(&self, function: &str, reserved: Option<u32>) {
        self.lock().functions.entry(function.to_string()).or_default().reserved = reserved;
    }

    /// Whether `function` may have `total` provisioned environments in all.
    pub fn check_provisioned(&self, function: &str, total: u32) -> Result<(), String> {
        let st = self.lock();
        let c = st.functions.get(function).copied().unwrap_or_default();
        match c.reserved {
            Some(r) if total > r => Err(format!(
                "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function [{r}]."
            )),
            Some(_) => Ok(()),
            None => {
                let others: u64 = st.account_usage() - u64::from(c.provisioned) - u64::from(c.in_flight);
                let room = u64::from(self.limit().saturating_sub(MIN_UNRESERVED));
                if others + u64::from(total) > room {
                    Err(format!(
                        "Requested Provisioned Concurrency would decrease account's UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    pub fn set_provisioned(&self, function: &str, total: u32) {
        self.lock().functions.entry(function.to_string()).or_default().provisioned = total;
    }

    /// `UnreservedConcurrentExecutions`.
    pub fn unreserved(&self) -> u32 {
        let st = self.lock();
        self.limit().saturating_sub(st.reserved_total("") as u32)
    }

    /// On-demand invocations of `function` in flight.
    #[cfg(test)]
    pub fn in_flight(&self, function: &str) -> u32 {
        self.lock().functions.get(function).map_or(0, |c| c.in_flight)
    }

    /// Forgets a deleted function (its permits still in flight release harmlessly).
    pub fn remove(&self, function: &str) {
        self.lock().functions.remove(function);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserved_concurrency_is_a_ceiling_and_zero_stops_everything() {
        let a = Admission::new(1000);
        a.set_reserved("f", Some(1));
        let p = a.acquire("f").unwrap();
        assert_eq!(a.acquire("f").unwrap_err(), ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded);
        drop(p);
        assert!(a.acquire("f").is_ok());
        a.set_reserved("g", Some(0));
        assert!(a.acquire("g").is_err());
    }

    #[test]
    fn account_limit_counts_reservations_of_others() {
        let a = Admission::new(150);
        a.set_reserved("big", Some(50));
        assert!(a.check_reserved("other", 51).is_err(), "must leave 100 unreserved");
        let permits: Vec<_> = (0..100).map(|_| a.acquire("f").unwrap()).collect();
        assert_eq!(a.acquire("g").unwrap_err(), ThrottleReason::ConcurrentInvocationLimitExceeded);
        drop(permits);
        assert!(a.acquire("g").is_ok());
        assert_eq!(a.unreserved(), 100);
    }

    #[test]
    fn a_changed_limit_applies_to_the_next_acquire() {
        let a = Admission::new(150);
        let copy = a.clone();
        let permits: Vec<_> = (0..120).map(|_| a.acquire("f").unwrap()).collect();
        copy.set_limit(120);
        assert_eq!(a.limit(), 120);
        assert_eq!(a.acquire("f").unwrap_err(), ThrottleReason::ConcurrentInvocationLimitExceeded);
        a.set_limit(200);
        assert!(a.acquire("f").is_ok());
        assert!(a.check_reserved("g", 100).is_ok() && a.check_reserved("g", 101).is_err());
        drop(permits);
    }

    #[test]
    fn provisioned_is_counted_inside_reserved() {
        let a = Admission::new(1000);
        a.set_reserved("f", Some(3));
        assert!(a.check_provisioned("f", 4).is_err());
        a.set_provisioned("f", 2);
        let _p = a.acquire("f").unwrap();
        assert!(a.acquire("f").is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u8),
        Release(usize),
        Reserve(u8, Option<u8>),
        Provision(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(Op::Acquire),
            (0usize..64).prop_map(Op::Release),
            ((0u8..4), proptest::option::of(0u8..8)).prop_map(|(f, r)| Op::Reserve(f, r)),
            ((0u8..4), (0u8..4)).prop_map(|(f, n)| Op::Provision(f, n)),
        ]
    }

    proptest! {
        /// Whatever happens, in-flight counts match the permits alive, never exceed a
        /// reservation, and are all back to zero once every permit is gone.
        #[test]
        fn no_slot_leaks_on_any_path(ops in proptest::collection::vec(op(), 1..200)) {
            let a = Admission::new(120);
            let mut held: Vec<Permit> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire(f) => {
                        let name = format!("f{f}");
                        let before = a.in_flight(&name);
                        match a.acquire(&name) {
                            Ok(p) => held.push(p),
                            Err(_) => prop_assert_eq!(a.in_flight(&name), before),
                        }
                    }
                    Op::Release(i) => {
                        if !held.is_empty() {
                            let i = i % held.len();
                            held.swap_remove(i);
                        }
                    }
                    Op::Reserve(f, r) => {
                        let name = format!("f{f}");
                        let r = r.map(u32::from);
                        if r.is_none_or(|r| a.check_reserved(&name, r).is_ok()) {
                            a.set_reserved(&name, r);
                        }
                    }
                    Op::Provision(f, n) => {
                        let name = format!("f{f}");
                        if a.check_provisioned(&name, n.into()).is_ok() {
                            a.set_provisioned(&name, n.into());
                        }
                    }
                }
                for f in 0..4 {
                    let name = format!("f{f}");
                    let alive = held.iter().filter(|p| p.function == name).count() as u32;
                    prop_assert_eq!(a.in_flight(&name), alive);
                }
            }
            held.clear();
            for f in 0..4 {
                prop_assert_eq!(a.in_flight(&format!("f{f}")), 0);
            }
        }
    }
}
