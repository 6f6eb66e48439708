//! The host memory budget: the sum of `MemorySize` of live environments stays under it.

use std::sync::{Arc, Mutex};

/// Memory that live environments may claim, in MB.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    budget_mb: u64,
    used_mb: Arc<Mutex<u64>>,
}

/// A claim on the budget; returned on drop.
#[derive(Debug)]
pub struct MemoryLease {
    used_mb: Arc<Mutex<u64>>,
    mb: u64,
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        let mut used = self.used_mb.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.mb);
    }
}

impl MemoryBudget {
    pub fn new(budget_mb: u64) -> Self {
        Self { budget_mb, used_mb: Arc::new(Mutex::new(0)) }
    }

    pub fn budget_mb(&self) -> u64 {
        self.budget_mb
    }

    pub fn used_mb(&self) -> u64 {
        *self.used_mb.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `mb`, or `None` when that would pass the budget.
    pub fn try_claim(&self, mb: u64) -> Option<MemoryLease> {
        let mut used = self.used_mb.lock().unwrap_or_else(|e| e.into_inner());
        if *used + mb > self.budget_mb {
            return None;
        }
        *used += mb;
        Some(MemoryLease { used_mb: self.used_mb.clone(), mb })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn leases_return_on_drop() {
        let b = super::MemoryBudget::new(256);
        let a = b.try_claim(128).unwrap();
        let c = b.try_claim(128).unwrap();
        assert!(b.try_claim(1).is_none());
        drop(a);
        assert!(b.try_claim(128).is_some());
        drop(c);
        assert_eq!(b.used_mb(), 0);
    }
}
