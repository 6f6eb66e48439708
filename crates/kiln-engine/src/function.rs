//! A function in memory: its configurations, versions, aliases, concurrency settings and the
//! pools of environments of each version.

use crate::env::{Environment, InitType};
use kiln_model::config::{AliasConfig, ConcurrencySettings};
use kiln_model::FunctionConfig;
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

/// The environments of one version.
pub(crate) struct Pool {
    pub ready: Ready,
    /// Bumped when `$LATEST` changes; older environments are retired instead of reused.
    pub generation: u64,
    /// Idle on-demand environments, the most recently used last.
    pub idle: Vec<Arc<Environment>>,
    /// Idle provisioned environments.
    pub pc_idle: Vec<Arc<Environment>>,
    pub busy: HashMap<String, Arc<Environment>>,
    /// Environments being built: (on-demand, provisioned).
    pub starting: (u32, u32),
    /// How many provisioned environments this version should have.
    pub pc_target: u32,
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

    /// Provisioned environments alive or on their way.
    pub fn pc_live(&self) -> u32 {
        let busy = self.busy.values().filter(|e| e.init_type == InitType::Provisioned).count();
        (self.pc_idle.len() + busy) as u32 + self.starting.1
    }

    /// Provisioned environments that finished Init.
    pub fn pc_allocated(&self) -> u32 {
        let busy = self.busy.values().filter(|e| e.init_type == InitType::Provisioned).count();
        (self.pc_idle.len() + busy) as u32
    }

    /// Takes every environment out of the pool, for destruction.
    pub fn drain(&mut self) -> Vec<Arc<Environment>> {
        let mut v = std::mem::take(&mut self.idle);
        v.append(&mut self.pc_idle);
        v.extend(self.busy.drain().map(|(_, e)| e));
        v
    }
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
    pub pools: HashMap<String, Pool>,
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
    pub fn version_of(&self, qualifier: &str) -> Option<String> {
        if qualifier == kiln_model::Qualifier::LATEST {
            return Some(qualifier.to_string());
        }
        if let Ok(n) = qualifier.parse::<u64>() {
            return self.versions.contains_key(&n).then(|| qualifier.to_string());
        }
        self.aliases.get(qualifier).map(|a| a.function_version.clone())
    }

    /// Total provisioned concurrency requested for the function.
    pub fn pc_total(&self) -> u32 {
        self.settings.provisioned.values().map(|p| p.requested).sum()
    }

    /// Recomputes each pool's provisioned target from the configs.
    pub fn retarget(&mut self) {
        for pool in self.pools.values_mut() {
            pool.pc_target = 0;
        }
        let targets: Vec<(String, u32)> = self
            .settings
            .provisioned
            .iter()
            .filter_map(|(q, p)| self.version_of(q).map(|v| (v, p.requested)))
            .collect();
        for (v, n) in targets {
            if let Some(pool) = self.pools.get_mut(&v) {
                pool.pc_target += n;
            }
        }
    }
}
