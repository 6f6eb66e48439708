//! A function in memory: its configurations, versions, aliases, concurrency settings and the
//! pools of environments of each version.

use crate::pool::Pool;
use kiln_model::config::{AliasConfig, ConcurrencySettings};
use kiln_model::{FunctionConfig, Version};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// A runnable version: its configuration and its unpacked code.
#[derive(Clone)]
pub(crate) struct Ready {
    pub config: Arc<FunctionConfig>,
    pub code_dir: PathBuf,
    /// The merged layers, shown at `/opt`; `None` when the version has no layers.
    pub opt_dir: Option<PathBuf>,
}

/// Cold/warm start counts and Init durations.
#[derive(Debug, Default, Clone)]
pub struct StartStats {
    pub cold_starts: u64,
    pub warm_starts: u64,
    pub provisioned_starts: u64,
    pub init_ms_total: f64,
    pub init_ms_max: f64,
    pub init_ms_last: f64,
}

pub(crate) struct FnState {
    /// `$LATEST` as Get shows it.
    pub visible: Arc<FunctionConfig>,
    /// Published versions.
    pub versions: BTreeMap<u64, Arc<FunctionConfig>>,
    /// Pools by version (`$LATEST`, `1`, …); `$LATEST` has one once its code is unpacked.
    pub pools: HashMap<Version, Pool>,
    pub aliases: BTreeMap<String, AliasConfig>,
    pub settings: ConcurrencySettings,
    /// Why provisioning failed, by qualifier.
    pub pc_failures: HashMap<String, String>,
    pub stats: StartStats,
    pub metrics: crate::metrics::FnMetrics,
    pub deleted: bool,
    /// `Publish: true` asked for a version once the pending code is ready.
    pub publish_when_ready: bool,
}

pub(crate) struct Function {
    state: Mutex<FnState>,
}

impl Function {
    pub fn new(state: FnState) -> Self {
        Self { state: Mutex::new(state) }
    }

    pub fn lock(&self) -> MutexGuard<'_, FnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FnState {
    pub fn new(visible: Arc<FunctionConfig>) -> Self {
        Self {
            visible,
            versions: BTreeMap::new(),
            pools: HashMap::new(),
            aliases: BTreeMap::new(),
            settings: ConcurrencySettings::default(),
            pc_failures: HashMap::new(),
            stats: StartStats::default(),
            metrics: crate::metrics::FnMetrics::default(),
            deleted: false,
            publish_when_ready: false,
        }
    }

    /// The version a qualifier names right now (an alias resolves to its primary version).
    pub fn version_of(&self, qualifier: &str) -> Option<Version> {
        match qualifier.parse::<Version>() {
            Ok(v) => self.has_version(v).then_some(v),
            Err(_) => self.aliases.get(qualifier).and_then(|a| a.function_version.parse().ok()),
        }
    }

    /// Whether `v` exists: `$LATEST` always does, a number once it is published.
    pub fn has_version(&self, v: Version) -> bool {
        match v {
            Version::Latest => true,
            Version::Number(n) => self.versions.contains_key(&n),
        }
    }

    /// Total provisioned concurrency requested for the function.
    pub fn pc_total(&self) -> u32 {
        self.settings.provisioned.values().map(|p| p.requested).sum()
    }

    /// Recomputes each pool's provisioned target from the configs.
    pub fn retarget(&mut self) {
        let mut targets: HashMap<Version, u32> = HashMap::new();
        for (q, p) in &self.settings.provisioned {
            if let Some(v) = self.version_of(q) {
                *targets.entry(v).or_default() += p.requested;
            }
        }
        for (v, pool) in &mut self.pools {
            pool.set_pc_target(targets.get(v).copied().unwrap_or(0));
        }
    }
}
