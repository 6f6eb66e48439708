//! Lambda layers: publishing, reading, listing and deleting layer versions, their permissions,
//! and what a function's `Layers` turn into (checked references and the merged `/opt` tree).
//!
//! Layer versions live in SQLite (control plane only) and their zips in the content-addressed
//! code store, next to function code. A deleted layer version disappears from the API at once,
//! but its zip and unpacked tree stay while any function version still names it, so functions
//! that use it keep working (as on Lambda).

use crate::{internal, now_ms, paginate, revision, Engine, EngineError, Page};
use kiln_model::layers::{self as lm, FunctionLayer, LayerPolicy, LayerStatement, LayerVersion};
use kiln_model::{limits, ModelError};
use kiln_store::CodeHash;
use std::path::PathBuf;

/// PublishLayerVersion.
#[derive(Debug, Clone, Default)]
pub struct PublishLayer {
    /// A name or a layer ARN.
    pub name: String,
    pub zip: Vec<u8>,
    pub description: Option<String>,
    pub license_info: Option<String>,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
}

/// A merged `/opt` tree younger than this is never collected.
const OPT_GC_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

fn layer_not_found() -> EngineError {
    EngineError::resource_not_found()
}

fn check_version_number(version: i64) -> Result<u64, EngineError> {
    if version < 1 {
        return Err(EngineError::invalid("Layer Version Cannot be less than 1"));
    }
    Ok(version as u64)
}

impl Engine {
    fn layer_name<'a>(&self, name_or_arn: &'a str) -> Result<&'a str, EngineError> {
        Ok(self.partition().layer_name(name_or_arn)?)
    }

    pub async fn publish_layer_version(&self, req: PublishLayer) -> Result<LayerVersion, EngineError> {
        let name = self.layer_name(&req.name)?.to_string();
        let description = req.description.unwrap_or_default();
        lm::validate_publish(
            &description,
            req.license_info.as_deref(),
            &req.compatible_runtimes,
            &req.compatible_architectures,
        )?;
        let code_size = req.zip.len() as u64;
        let (hash, unzipped_size) = self.store_zip_sized(req.zip, "PublishLayerVersion").await?;
        let created_ms = now_ms();
        let layer = self
            .inner
            .meta
            .publish_layer_version(&name, |version| LayerVersion {
                name: name.clone(),
                version,
                description,
                license_info: req.license_info,
                compatible_runtimes: req.compatible_runtimes,
                compatible_architectures: req.compatible_architectures,
                code_sha256: hash.base64.clone(),
                code_size,
                unzipped_size,
                created_ms,
                policy: None,
            })
            .map_err(|e| internal("cannot store layer", e))?;
        tracing::info!(layer = %name, version = layer.version, "layer version published");
        Ok(layer)
    }

    pub fn get_layer_version(&self, name_or_arn: &str, version: i64) -> Result<LayerVersion, EngineError> {
        let version = check_version_number(version)?;
        let name = self.layer_name(name_or_arn)?;
        self.inner
            .meta
            .get_layer_version(name, version)
            .map_err(|e| internal("cannot read layer", e))?
            .ok_or_else(layer_not_found)
    }

    pub fn get_layer_version_by_arn(&self, arn: &str) -> Result<LayerVersion, EngineError> {
        let parsed = lm::LayerVersionArn::parse(arn).ok_or_else(|| {
            ModelError::constraint(
                arn,
                "arn",
                "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)",
            )
        })?;
        let p = self.partition();
        if parsed.region != p.region || parsed.account_id != p.account_id {
            return Err(layer_not_found());
        }
        self.inner
            .meta
            .get_layer_version(&parsed.name, parsed.version)
            .map_err(|e| internal("cannot read layer", e))?
            .ok_or_else(layer_not_found)
    }

    /// ListLayers: per layer name, its newest version that matches the filters.
    pub fn list_layers(
        &self,
        runtime: Option<&str>,
        architecture: Option<&str>,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<LayerVersion>, EngineError> {
        lm::validate_filters(runtime, architecture)?;
        let all = self.inner.meta.layer_versions(None).map_err(|e| internal("cannot read layers", e))?;
        let mut latest: Vec<LayerVersion> = Vec::new();
        for l in all.into_iter().filter(|l| matches(l, runtime, architecture)) {
            // Rows come by name, newest first: the first of each name is its newest match.
            if latest.last().is_none_or(|x| x.name != l.name) {
                latest.push(l);
            }
        }
        Ok(paginate(latest, marker, max_items, |l| l.name.clone()))
    }

    /// ListLayerVersions: the versions of one layer that match the filters, newest first.
    pub fn list_layer_versions(
        &self,
        name_or_arn: &str,
        runtime: Option<&str>,
        architecture: Option<&str>,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<LayerVersion>, EngineError> {
        lm::validate_filters(runtime, architecture)?;
        let name = self.layer_name(name_or_arn)?;
        let all = self.inner.meta.layer_versions(Some(name)).map_err(|e| internal("cannot read layers", e))?;
        let versions: Vec<LayerVersion> = all.into_iter().filter(|l| matches(l, runtime, architecture)).collect();
        Ok(paginate(versions, marker, max_items, |l| l.version.to_string()))
    }

    /// DeleteLayerVersion. Deleting what does not exist succeeds, as on Lambda. The code stays
    /// while a function version still uses it.
    pub async fn delete_layer_version(&self, name_or_arn: &str, version: i64) -> Result<(), EngineError> {
        let version = check_version_number(version)?;
        let name = self.layer_name(name_or_arn)?;
        let deleted =
            self.inner.meta.delete_layer_version(name, version).map_err(|e| internal("cannot delete layer", e))?;
        if let Some(l) = deleted {
            tracing::info!(layer = %name, version, "layer version deleted");
            self.collect_code(vec![l.code_sha256]).await;
        }
        Ok(())
    }

    fn layer_for_policy(&self, name_or_arn: &str, version: i64) -> Result<LayerVersion, EngineError> {
        let version = check_version_number(version)?;
        let name = self.layer_name(name_or_arn)?;
        self.inner
            .meta
            .get_layer_version(name, version)
            .map_err(|e| internal("cannot read layer", e))?
            .ok_or_else(|| EngineError::layer_version_not_found(&self.partition().layer_version_arn(name, version)))
    }

    /// The zip of a layer version (`Content.Location` points here).
    pub async fn layer_zip(&self, name_or_arn: &str, version: i64) -> Result<Vec<u8>, EngineError> {
        let layer = self.get_layer_version(name_or_arn, version)?;
        let hash =
            CodeHash::from_base64(&layer.code_sha256).ok_or_else(|| internal("stored layer hash", "malformed"))?;
        let code = self.inner.code.clone();
        tokio::task::spawn_blocking(move || code.read_zip(&hash))
            .await
            .map_err(|e| internal("code task failed", e))?
            .map_err(|e| internal("cannot read layer", e))
    }

    /// AddLayerVersionPermission: returns the new statement (as AWS renders it) and the
    /// policy's new revision.
    pub fn add_layer_version_permission(
        &self,
        name_or_arn: &str,
        version: i64,
        statement: LayerStatement,
        revision_id: Option<&str>,
    ) -> Result<(serde_json::Value, String), EngineError> {
        lm::validate_statement(&statement)?;
        let _guard = self.layer_policy_lock();
        let mut layer = self.layer_for_policy(name_or_arn, version)?;
        let mut policy = layer.policy.take().unwrap_or_default();
        if policy.statements.iter().any(|s| s.sid == statement.sid) {
            return Err(EngineError::statement_exists(&statement.sid));
        }
        check_policy_revision(&policy, revision_id)?;
        let arn = self.partition().layer_version_arn(&layer.name, layer.version);
        let rendered = statement.to_json(&arn);
        policy.statements.push(statement);
        policy.revision_id = revision();
        let rev = policy.revision_id.clone();
        layer.policy = Some(policy);
        self.inner.meta.put_layer_version(&layer).map_err(|e| internal("cannot store layer", e))?;
        Ok((rendered, rev))
    }

    /// GetLayerVersionPolicy: the policy document and its revision.
    pub fn get_layer_version_policy(&self, name_or_arn: &str, version: i64) -> Result<(String, String), EngineError> {
        let layer = self.layer_for_policy(name_or_arn, version)?;
        let policy = layer.policy.as_ref().filter(|p| !p.statements.is_empty()).ok_or_else(EngineError::no_policy)?;
        let arn = self.partition().layer_version_arn(&layer.name, layer.version);
        let doc = serde_json::json!({
            "Version": "2012-10-17",
            "Id": "default",
            "Statement": policy.statements.iter().map(|s| s.to_json(&arn)).collect::<Vec<_>>(),
        });
        Ok((doc.to_string(), policy.revision_id.clone()))
    }

    pub fn remove_layer_version_permission(
        &self,
        name_or_arn: &str,
        version: i64,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<(), EngineError> {
        let _guard = self.layer_policy_lock();
        let mut layer = self.layer_for_policy(name_or_arn, version)?;
        let mut policy = layer.policy.take().unwrap_or_default();
        check_policy_revision(&policy, revision_id)?;
        let before = policy.statements.len();
        policy.statements.retain(|s| s.sid != sid);
        if policy.statements.len() == before {
            return Err(EngineError::statement_not_found(sid));
        }
        policy.revision_id = revision();
        layer.policy = Some(policy);
        self.inner.meta.put_layer_version(&layer).map_err(|e| internal("cannot store layer", e))?;
        Ok(())
    }

    /// Serialises read-modify-write of layer policies.
    fn layer_policy_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.layer_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a function's `Layers` and looks each one up: what the configuration will hold.
    pub(crate) fn resolve_layers(&self, arns: &[String]) -> Result<Vec<FunctionLayer>, EngineError> {
        let parsed = lm::validate_layer_list(arns)?;
        let p = self.partition();
        let mut out = Vec::with_capacity(parsed.len());
        for (arn, l) in arns.iter().zip(parsed) {
            if l.region != p.region {
                return Err(EngineError::invalid(format!(
                    "Layers are not in the same region as the function. Layers are expected to be in region {}.",
                    p.region
                )));
            }
            let found = if l.account_id == p.account_id {
                self.inner.meta.get_layer_version(&l.name, l.version).map_err(|e| internal("cannot read layer", e))?
            } else {
                None
            };
            let found = found.ok_or_else(|| EngineError::invalid(format!("Layer version {arn} does not exist.")))?;
            out.push(FunctionLayer {
                arn: arn.clone(),
                code_size: found.code_size,
                code_sha256: found.code_sha256,
                unzipped_size: found.unzipped_size,
            });
        }
        Ok(out)
    }

    /// Builds (once) the merged `/opt` tree of `layers`; `None` when there are none.
    pub(crate) async fn opt_dir(&self, layers: &[FunctionLayer]) -> Result<Option<PathBuf>, EngineError> {
        if layers.is_empty() {
            return Ok(None);
        }
        let hashes = layer_hashes(layers)?;
        let code = self.inner.code.clone();
        tokio::task::spawn_blocking(move || code.opt_tree(&hashes))
            .await
            .map_err(|e| internal("layer task failed", e))?
            .map_err(|e| internal("cannot build /opt from the layers", e))
    }

    /// The merged tree of `layers` if it was built already (start-up).
    pub(crate) fn opt_dir_if_present(&self, layers: &[FunctionLayer]) -> Option<Option<PathBuf>> {
        if layers.is_empty() {
            return Some(None);
        }
        let dir = self.inner.code.opt_path(&layer_hashes(layers).ok()?);
        dir.is_dir().then_some(Some(dir))
    }

    /// Removes merged `/opt` trees no stored function version uses any more (and that were not
    /// built in the last minutes, for a change still on its way to the database).
    pub(crate) fn collect_opt_trees(&self) {
        let Ok(all) = self.inner.meta.all() else { return };
        let keep = all
            .iter()
            .filter(|c| !c.layers.is_empty())
            .filter_map(|c| layer_hashes(&c.layers).ok())
            .map(|h| kiln_store::CodeStore::opt_key(&h))
            .collect();
        self.inner.code.remove_opt_trees_except(&keep, OPT_GC_MIN_AGE);
    }
}

/// Code plus layers may unpack to at most 250 MB.
pub(crate) fn check_total_size(code_unzipped: u64, layers: &[FunctionLayer]) -> Result<(), EngineError> {
    let total = code_unzipped + layers.iter().map(|l| l.unzipped_size).sum::<u64>();
    if total > limits::UNZIPPED_MAX_BYTES {
        return Err(EngineError::invalid(format!(
            "Function code combined with layers exceeds the maximum allowed size of {} bytes. The actual size is {total} bytes.",
            limits::UNZIPPED_MAX_BYTES
        )));
    }
    Ok(())
}

fn layer_hashes(layers: &[FunctionLayer]) -> Result<Vec<CodeHash>, EngineError> {
    layers
        .iter()
        .map(|l| CodeHash::from_base64(&l.code_sha256).ok_or_else(|| internal("stored layer hash", "malformed")))
        .collect()
}

fn matches(l: &LayerVersion, runtime: Option<&str>, architecture: Option<&str>) -> bool {
    runtime.is_none_or(|r| l.compatible_runtimes.iter().any(|x| x == r))
        && architecture.is_none_or(|a| l.compatible_architectures.iter().any(|x| x == a))
}

fn check_policy_revision(policy: &LayerPolicy, revision_id: Option<&str>) -> Result<(), EngineError> {
    if revision_id.is_some_and(|r| r != policy.revision_id) {
        return Err(EngineError::layer_revision_mismatch());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fl(size: u64) -> FunctionLayer {
        FunctionLayer { arn: "a".into(), code_size: 1, code_sha256: String::new(), unzipped_size: size }
    }

    #[test]
    fn code_and_layers_share_the_250_mb() {
        assert!(check_total_size(limits::UNZIPPED_MAX_BYTES - 10, &[fl(10)]).is_ok());
        let err = check_total_size(limits::UNZIPPED_MAX_BYTES - 10, &[fl(6), fl(5)]).unwrap_err();
        assert!(err.to_string().contains("The actual size is 262144001 bytes."), "{err}");
    }

    #[test]
    fn filters_need_every_given_member() {
        let l = LayerVersion {
            name: "n".into(),
            version: 1,
            description: String::new(),
            license_info: None,
            compatible_runtimes: vec!["provided.al2023".into()],
            compatible_architectures: vec![],
            code_sha256: String::new(),
            code_size: 0,
            unzipped_size: 0,
            created_ms: 0,
            policy: None,
        };
        assert!(matches(&l, None, None));
        assert!(matches(&l, Some("provided.al2023"), None));
        assert!(!matches(&l, Some("python3.12"), None));
        assert!(!matches(&l, None, Some("x86_64")));
    }
}
