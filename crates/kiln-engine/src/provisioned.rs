//! Provisioned concurrency: keeping N initialised environments per version ready.
//!
//! [`Engine::reconcile`] compares, for every pool of a function, the provisioned environments
//! alive or starting with the target the configs give it, starts the missing ones (with
//! `AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency` and without the 10 s Init cap) and
//! destroys the extra idle ones. It runs when a config changes, when an alias moves, at start-up,
//! and after a provisioned environment died, so a crashed one is replaced.

use crate::env::{ColdStart, InitResult, InitType};
use crate::function::{FnState, Function};
use crate::{Engine, ProvisionedStatus};
use std::sync::Arc;
use std::time::Duration;

/// Provisioned Init may take up to `max(130 s, timeout)`, as on Lambda.
fn provisioned_init_timeout(timeout_secs: u32) -> Duration {
    Duration::from_secs(u64::from(timeout_secs).max(130))
}

impl Engine {
    pub(crate) fn reconcile(&self, f: &Arc<Function>) {
        let (starts, extra) = {
            let mut st = f.lock();
            if st.deleted {
                return;
            }
            let mut starts = Vec::new();
            let mut extra = Vec::new();
            for (version, pool) in &mut st.pools {
                let (n, surplus) = pool.reconcile();
                for _ in 0..n {
                    starts.push((*version, pool.ready().clone(), pool.generation()));
                }
                extra.extend(surplus);
            }
            (starts, extra)
        };
        for e in extra {
            e.retire();
        }
        for (version, ready, generation) in starts {
            let engine = self.clone();
            let f = f.clone();
            tokio::spawn(async move {
                let lease = engine.claim_memory(u64::from(ready.config.memory_mb));
                let request_id = uuid::Uuid::new_v4().to_string();
                let result = match lease {
                    Ok(lease) => ColdStart {
                        backend: &engine.inner.backend,
                        partition: &engine.inner.opts.partition,
                        runtimes: &engine.inner.opts.runtimes,
                        logs: &engine.inner.logs,
                        teardown: &engine.inner.teardown,
                        init_timeout: provisioned_init_timeout(ready.config.timeout_secs),
                        config: ready.config.clone(),
                        code_dir: ready.code_dir.clone(),
                        opt_dir: ready.opt_dir.clone(),
                        generation,
                        init_type: InitType::Provisioned,
                        lease: Some(lease),
                    }
                    .run(&request_id)
                    .await
                    .map_err(|e| e.chain().to_string()),
                    Err(e) => Err(e.chain().to_string()),
                };
                let mut st = f.lock();
                let deleted = st.deleted;
                let failure = {
                    let Some(pool) = st.pools.get_mut(&version) else { return };
                    let failure = match result {
                        Ok(InitResult::Ready { env, init_ms }) => {
                            let id = env.id.clone();
                            match pool.provisioned_done(Some(env), deleted) {
                                None => tracing::debug!(env = %id, init_ms, "provisioned environment ready"),
                                Some(unwanted) => unwanted.retire(),
                            }
                            None
                        }
                        Ok(InitResult::Failed { error_type, payload }) => Some(format!(
                            "FUNCTION_ERROR_INIT_FAILURE: {error_type}: {}",
                            String::from_utf8_lossy(&payload)
                        )),
                        Err(e) => Some(format!("kiln could not create the environment: {e}")),
                    };
                    if failure.is_some() {
                        pool.provisioned_done(None, deleted);
                    }
                    failure
                };
                if let Some(reason) = failure {
                    tracing::warn!(function = %ready.config.name, %version, %reason, "provisioning failed");
                    let qualifiers: Vec<String> =
                        st.settings.provisioned.keys().filter(|q| st.version_of(q) == Some(version)).cloned().collect();
                    for q in qualifiers {
                        st.pc_failures.insert(q, reason.clone());
                    }
                }
            });
        }
    }
}

/// The status of the provisioned config of `qualifier`, if there is one.
pub(crate) fn status(st: &FnState, qualifier: &str) -> Option<ProvisionedStatus> {
    let setting = st.settings.provisioned.get(qualifier)?;
    let pool = st.version_of(qualifier).and_then(|v| st.pools.get(&v));
    let allocated = pool.map_or(0, |p| p.pc_allocated()).min(setting.requested);
    let available = pool.map_or(0, |p| p.pc_available()).min(setting.requested);
    let failure = st.pc_failures.get(qualifier).cloned();
    let status = match (&failure, allocated >= setting.requested) {
        (Some(_), false) => "FAILED",
        (_, true) => "READY",
        _ => "IN_PROGRESS",
    };
    Some(ProvisionedStatus {
        qualifier: qualifier.to_string(),
        requested: setting.requested,
        allocated,
        available,
        status,
        status_reason: if status == "FAILED" { failure } else { None },
        last_modified_ms: setting.last_modified_ms,
    })
}
