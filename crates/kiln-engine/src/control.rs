//! The rest of the control plane: tags, resource policies, recursion and runtime-management
//! settings, and code signing configs.
//!
//! These settings live in SQLite only (`function_extras`, `code_signing_configs`); nothing on
//! the invoke path reads them. A change to a function's settings is made under the function's
//! lock, so it is atomic with the revision bump it causes: like Lambda, changing a function's
//! tags gives `$LATEST` a new `RevisionId`, and changing the policy of `$LATEST`, a version or
//! an alias gives that one a new `RevisionId`, which is also the policy's (GetPolicy returns
//! it, AddPermission and RemovePermission check it). `$LATEST` keeps its revision while it is
//! `Pending` or an update is in progress, because its activation is keyed to that revision.

use crate::function::FnState;
use crate::{internal, now_ms, paginate, revision, Engine, EngineError, Page};
use kiln_model::codesigning::{self as csc, CodeSigningConfig};
use kiln_model::config::UpdateStatus;
use kiln_model::policy::{self, PermissionInput};
use kiln_model::tags::{self, TaggedResource};
use kiln_model::{FunctionName, FunctionRef, FunctionState, ModelError, Qualifier};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Serialises read-modify-write of code signing configs.
static CSC_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TAGS_KEY: &str = "tags";
const RECURSION_KEY: &str = "recursion";
const CSC_KEY: &str = "csc";

fn policy_key(qualifier: &str) -> String {
    format!("policy:{qualifier}")
}

fn runtime_key(qualifier: &str) -> String {
    format!("runtime:{qualifier}")
}

/// Which configuration of a function a policy or setting belongs to.
enum Target {
    Latest,
    Version(u64),
    Alias(String),
}

impl Target {
    fn qualifier(&self) -> String {
        match self {
            Target::Latest => Qualifier::LATEST.to_string(),
            Target::Version(n) => n.to_string(),
            Target::Alias(a) => a.clone(),
        }
    }
}

/// RuntimeManagementConfig of one qualifier.
#[derive(Debug, Clone)]
pub struct RuntimeManagement {
    pub function_arn: String,
    pub update_runtime_on: String,
    pub runtime_version_arn: Option<String>,
}

/// CreateCodeSigningConfig / UpdateCodeSigningConfig; `None` keeps (or defaults) a member.
#[derive(Debug, Clone, Default)]
pub struct CodeSigningInput {
    pub description: Option<String>,
    pub signing_profile_version_arns: Option<Vec<String>>,
    pub untrusted_artifact_on_deployment: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
}

impl Engine {
    fn meta_err(what: &'static str) -> impl Fn(kiln_store::meta::MetaError) -> EngineError {
        move |e| internal(what, e)
    }

    fn extra(&self, name: &str, key: &str) -> Result<Option<String>, EngineError> {
        self.inner.meta.get_extra(name, key).map_err(Self::meta_err("cannot read function settings"))
    }

    fn set_extra(&self, name: &str, key: &str, value: Option<&str>) -> Result<(), EngineError> {
        self.inner.meta.put_extra(name, key, value).map_err(Self::meta_err("cannot store function settings"))
    }

    fn stored_tags(&self, name: &str) -> Result<BTreeMap<String, String>, EngineError> {
        match self.extra(name, TAGS_KEY)? {
            Some(j) => serde_json::from_str(&j).map_err(|e| internal("stored tags are unreadable", e)),
            None => Ok(BTreeMap::new()),
        }
    }

    fn store_tags(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<(), EngineError> {
        if tags.is_empty() {
            return self.set_extra(name, TAGS_KEY, None);
        }
        let json = serde_json::to_string(tags).map_err(|e| internal("cannot encode tags", e))?;
        self.set_extra(name, TAGS_KEY, Some(&json))
    }

    /// Gives `$LATEST` a new revision, unless its activation is still pending.
    fn bump_latest(&self, st: &mut FnState) -> Result<String, EngineError> {
        let v = &st.visible;
        if v.state != FunctionState::Active || v.last_update_status == Some(UpdateStatus::InProgress) {
            return Ok(v.revision_id.clone());
        }
        let mut c = (**v).clone();
        c.revision_id = revision();
        let c = Arc::new(c);
        self.persist(&c)?;
        let rev = c.revision_id.clone();
        st.visible = c;
        Ok(rev)
    }

    fn revision_of(st: &FnState, t: &Target) -> String {
        match t {
            Target::Latest => st.visible.revision_id.clone(),
            Target::Version(n) => st.versions.get(n).map(|v| v.revision_id.clone()).unwrap_or_default(),
            Target::Alias(a) => st.aliases.get(a).map(|a| a.revision_id.clone()).unwrap_or_default(),
        }
    }

    fn bump(&self, name: &FunctionName, st: &mut FnState, t: &Target) -> Result<String, EngineError> {
        match t {
            Target::Latest => self.bump_latest(st),
            Target::Version(n) => {
                let Some(v) = st.versions.get(n) else { return Ok(String::new()) };
                let mut c = (**v).clone();
                c.revision_id = revision();
                let c = Arc::new(c);
                self.persist(&c)?;
                let rev = c.revision_id.clone();
                st.versions.insert(*n, c);
                Ok(rev)
            }
            Target::Alias(a) => {
                let Some(alias) = st.aliases.get_mut(a) else { return Ok(String::new()) };
                alias.revision_id = revision();
                self.inner.meta.put_alias(name.as_str(), alias).map_err(|e| internal("cannot store alias", e))?;
                Ok(alias.revision_id.clone())
            }
        }
    }

    /// The configuration a qualifier names, which must exist.
    fn target(&self, st: &FnState, r: &FunctionRef) -> Result<Target, EngineError> {
        match &r.qualifier {
            None | Some(Qualifier::Latest) => Ok(Target::Latest),
            Some(Qualifier::Version(n)) if st.versions.contains_key(n) => Ok(Target::Version(*n)),
            Some(Qualifier::Version(n)) => Err(self.not_found(r.name.as_str(), Some(&n.to_string()))),
            Some(Qualifier::Alias(a)) if st.aliases.contains_key(a) => Ok(Target::Alias(a.clone())),
            Some(Qualifier::Alias(a)) => Err(EngineError::alias_arn_not_found(&self.arn(r.name.as_str(), Some(a)))),
        }
    }

    /// Settings of a deleted version or alias go with it.
    pub(crate) fn forget_qualifier_settings(&self, name: &str, qualifier: &str) {
        for key in [policy_key(qualifier), runtime_key(qualifier)] {
            if let Err(e) = self.set_extra(name, &key, None) {
                tracing::warn!(function = name, qualifier, error = %e.chain(), "cannot delete settings");
            }
        }
    }

    // ---- tags ----------------------------------------------------------------------------

    /// The tags of a function (GetFunction's `Tags`).
    pub fn function_tags(&self, name: &FunctionName) -> Result<BTreeMap<String, String>, EngineError> {
        let f = self.function(name)?;
        let _st = f.lock();
        self.stored_tags(name.as_str())
    }

    /// CreateFunction's `Tags`, stored right after the function is created.
    pub fn set_created_tags(&self, name: &FunctionName, new: &BTreeMap<String, String>) -> Result<(), EngineError> {
        tags::validate(new)?;
        let f = self.function(name)?;
        let _st = f.lock();
        self.store_tags(name.as_str(), new)
    }

    /// Resolves a tagging `Resource`: a function of this account, or a code signing config id.
    fn tagged(&self, arn: &str) -> Result<Result<FunctionName, String>, EngineError> {
        let p = self.partition();
        match tags::parse_resource(arn)? {
            TaggedResource::Function { region, account, name, qualifier } => {
                if qualifier.is_some() {
                    return Err(EngineError::invalid(
                        "Tags on function aliases and versions are not supported. Please specify a function ARN.",
                    ));
                }
                let name = FunctionName::parse(&name)?;
                if region != p.region || account != p.account_id || self.function(&name).is_err() {
                    return Err(EngineError::function_not_found(arn));
                }
                Ok(Ok(name))
            }
            TaggedResource::CodeSigningConfig { region, account, id } => {
                if region != p.region || account != p.account_id {
                    return Err(EngineError::code_signing_config_not_found(arn));
                }
                Ok(Err(id))
            }
            TaggedResource::EventSourceMapping { .. } | TaggedResource::Other => Err(EngineError::resource_not_found()),
        }
    }

    /// ListTags.
    pub fn list_tags(&self, arn: &str) -> Result<BTreeMap<String, String>, EngineError> {
        match self.tagged(arn)? {
            Ok(name) => self.function_tags(&name),
            Err(id) => Ok(self.load_csc(&id, arn)?.tags),
        }
    }

    /// TagResource: adds or replaces the given tags.
    pub fn tag_resource(&self, arn: &str, new: &BTreeMap<String, String>) -> Result<(), EngineError> {
        tags::validate(new)?;
        match self.tagged(arn)? {
            Ok(name) => {
                let f = self.function(&name)?;
                let mut st = f.lock();
                let mut all = self.stored_tags(name.as_str())?;
                all.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
                tags::check_count(all.len())?;
                self.store_tags(name.as_str(), &all)?;
                self.bump_latest(&mut st)?;
                Ok(())
            }
            Err(id) => {
                let _g = CSC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                let mut c = self.load_csc(&id, arn)?;
                c.tags.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
                tags::check_count(c.tags.len())?;
                self.store_csc(&c)
            }
        }
    }

    /// UntagResource: removes the given keys (absent ones are ignored).
    pub fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<(), EngineError> {
        for k in keys {
            tags::validate_key(k, "tagKeys")?;
        }
        match self.tagged(arn)? {
            Ok(name) => {
                let f = self.function(&name)?;
                let mut st = f.lock();
                let mut all = self.stored_tags(name.as_str())?;
                all.retain(|k, _| !keys.contains(k));
                self.store_tags(name.as_str(), &all)?;
                self.bump_latest(&mut st)?;
                Ok(())
            }
            Err(id) => {
                let _g = CSC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                let mut c = self.load_csc(&id, arn)?;
                c.tags.retain(|k, _| !keys.contains(k));
                self.store_csc(&c)
            }
        }
    }

    // ---- resource policies ---------------------------------------------------------------

    /// AddPermission: adds a statement to the policy of the function, version or alias `r`
    /// names; returns the statement as JSON.
    pub fn add_permission(
        &self,
        r: &FunctionRef,
        input: &PermissionInput,
        revision_id: Option<&str>,
    ) -> Result<String, EngineError> {
        if r.qualifier == Some(Qualifier::Latest) {
            return Err(EngineError::invalid("We currently do not support adding policies for $LATEST."));
        }
        let f = self.function(&r.name)?;
        let mut st = f.lock();
        let t = self.target(&st, r)?;
        if revision_id.is_some_and(|rev| rev != Self::revision_of(&st, &t)) {
            return Err(EngineError::revision_mismatch());
        }
        let q = r.qualifier.as_ref().map(|q| q.to_string());
        let statement = policy::statement(&self.arn(r.name.as_str(), q.as_deref()), input)?;
        let key = policy_key(&t.qualifier());
        let mut doc = match self.extra(r.name.as_str(), &key)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| internal("stored policy is unreadable", e))?,
            None => policy::empty_document(),
        };
        if policy::statement_ids(&doc).contains(&input.statement_id) {
            return Err(EngineError::statement_exists(&input.statement_id));
        }
        match doc.get_mut("Statement") {
            Some(serde_json::Value::Array(a)) => a.push(statement.clone()),
            Some(other) => *other = serde_json::Value::Array(vec![other.take(), statement.clone()]),
            None => doc["Statement"] = serde_json::json!([statement.clone()]),
        }
        let text = policy::render_document(&doc);
        if text.len() > policy::POLICY_MAX_BYTES {
            return Err(EngineError::policy_too_long(text.len(), policy::POLICY_MAX_BYTES));
        }
        self.set_extra(r.name.as_str(), &key, Some(&text))?;
        self.bump(&r.name, &mut st, &t)?;
        Ok(policy::render_statement(&statement))
    }

    /// RemovePermission.
    pub fn remove_permission(&self, r: &FunctionRef, sid: &str, revision_id: Option<&str>) -> Result<(), EngineError> {
        let f = self.function(&r.name).map_err(|_| EngineError::no_policy_for(&self.arn(r.name.as_str(), None)))?;
        let mut st = f.lock();
        let t = self.target(&st, r)?;
        let key = policy_key(&t.qualifier());
        let Some(text) = self.extra(r.name.as_str(), &key)? else {
            return Err(EngineError::no_policy());
        };
        let mut doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| internal("stored policy is unreadable", e))?;
        if !policy::statement_ids(&doc).iter().any(|s| s == sid) {
            return Err(EngineError::statement_not_found(sid));
        }
        if revision_id.is_some_and(|rev| rev != Self::revision_of(&st, &t)) {
            return Err(EngineError::revision_mismatch());
        }
        let left = match doc.get_mut("Statement") {
            Some(serde_json::Value::Array(a)) => {
                a.retain(|s| s.get("Sid").and_then(|v| v.as_str()) != Some(sid));
                a.len()
            }
            _ => 0,
        };
        if left == 0 {
            self.set_extra(r.name.as_str(), &key, None)?;
        } else {
            self.set_extra(r.name.as_str(), &key, Some(&policy::render_document(&doc)))?;
        }
        self.bump(&r.name, &mut st, &t)?;
        Ok(())
    }

    /// GetPolicy / GetResourcePolicy: the document and the revision of what it belongs to.
    pub fn get_policy(&self, r: &FunctionRef) -> Result<(String, String), EngineError> {
        let f = self.function(&r.name)?;
        let st = f.lock();
        let t = self.target(&st, r)?;
        let text = self.extra(r.name.as_str(), &policy_key(&t.qualifier()))?;
        let text = text.ok_or_else(EngineError::resource_not_found)?;
        Ok((text, Self::revision_of(&st, &t)))
    }

    /// The resource policy of the function, version or alias `r` names, if it has one (what a
    /// cross-account invocation is checked against); `NotFound` when `r` names nothing.
    pub fn resource_policy(&self, r: &FunctionRef) -> Result<Option<String>, EngineError> {
        let f = self.function(&r.name)?;
        let st = f.lock();
        let t = self.target(&st, r)?;
        self.extra(r.name.as_str(), &policy_key(&t.qualifier()))
    }

    /// PutResourcePolicy: replaces the whole policy with `document` (kept as given).
    pub fn put_resource_policy(
        &self,
        r: &FunctionRef,
        document: &str,
        revision_id: Option<&str>,
    ) -> Result<(String, String), EngineError> {
        policy::validate_document(document)?;
        let f = self.function(&r.name)?;
        let mut st = f.lock();
        let t = self.target(&st, r)?;
        if revision_id.is_some_and(|rev| rev != Self::revision_of(&st, &t)) {
            return Err(EngineError::revision_mismatch());
        }
        self.set_extra(r.name.as_str(), &policy_key(&t.qualifier()), Some(document))?;
        let rev = self.bump(&r.name, &mut st, &t)?;
        Ok((document.to_string(), rev))
    }

    /// DeleteResourcePolicy.
    pub fn delete_resource_policy(&self, r: &FunctionRef, revision_id: Option<&str>) -> Result<(), EngineError> {
        let f = self.function(&r.name)?;
        let mut st = f.lock();
        let t = self.target(&st, r)?;
        let key = policy_key(&t.qualifier());
        if self.extra(r.name.as_str(), &key)?.is_none() {
            return Err(EngineError::resource_not_found());
        }
        if revision_id.is_some_and(|rev| rev != Self::revision_of(&st, &t)) {
            return Err(EngineError::revision_mismatch());
        }
        self.set_extra(r.name.as_str(), &key, None)?;
        self.bump(&r.name, &mut st, &t)?;
        Ok(())
    }

    /// The policy of the configuration `r` names, for enforcement of cross-account calls.
    pub fn function_policy(&self, r: &FunctionRef) -> Result<Option<String>, EngineError> {
        let f = self.function(&r.name)?;
        let st = f.lock();
        let t = self.target(&st, r)?;
        self.extra(r.name.as_str(), &policy_key(&t.qualifier()))
    }

    // ---- recursion and runtime management ------------------------------------------------

    /// GetFunctionRecursionConfig: `Terminate` unless set.
    pub fn recursion(&self, name: &FunctionName) -> Result<String, EngineError> {
        let f = self.function(name)?;
        let _st = f.lock();
        Ok(self.extra(name.as_str(), RECURSION_KEY)?.unwrap_or_else(|| "Terminate".into()))
    }

    /// PutFunctionRecursionConfig.
    pub fn put_recursion(&self, name: &FunctionName, value: &str) -> Result<String, EngineError> {
        if value != "Allow" && value != "Terminate" {
            return Err(ModelError::constraint(
                value,
                "recursiveLoop",
                "Member must satisfy enum value set: [Allow, Terminate]",
            )
            .into());
        }
        let f = self.function(name)?;
        let _st = f.lock();
        self.set_extra(name.as_str(), RECURSION_KEY, Some(value))?;
        Ok(value.to_string())
    }

    fn runtime_arn(&self, r: &FunctionRef) -> String {
        let q = r.qualifier.as_ref().map(|q| q.to_string());
        self.arn(r.name.as_str(), q.as_deref())
    }

    /// GetRuntimeManagementConfig: `Auto` unless set.
    pub fn runtime_management(&self, r: &FunctionRef) -> Result<RuntimeManagement, EngineError> {
        let f = self.function(&r.name)?;
        let st = f.lock();
        let t = self.target(&st, r)?;
        let stored = self.extra(r.name.as_str(), &runtime_key(&t.qualifier()))?;
        let (update_runtime_on, runtime_version_arn) = match stored.as_deref().and_then(|s| s.split_once(' ')) {
            Some((on, arn)) => (on.to_string(), Some(arn.to_string())),
            None => (stored.unwrap_or_else(|| "Auto".into()), None),
        };
        Ok(RuntimeManagement { function_arn: self.runtime_arn(r), update_runtime_on, runtime_version_arn })
    }

    /// PutRuntimeManagementConfig. `Manual` needs a runtime version ARN, the others take none.
    pub fn put_runtime_management(
        &self,
        r: &FunctionRef,
        update_runtime_on: &str,
        runtime_version_arn: Option<&str>,
    ) -> Result<RuntimeManagement, EngineError> {
        if !matches!(update_runtime_on, "Auto" | "Manual" | "FunctionUpdate") {
            return Err(ModelError::constraint(
                update_runtime_on,
                "updateRuntimeOn",
                "Member must satisfy enum value set: [Auto, Manual, FunctionUpdate]",
            )
            .into());
        }
        if let Some(a) = runtime_version_arn {
            let ok = a.len() >= 26
                && a.len() <= 2048
                && a.starts_with("arn:aws")
                && a.contains(":lambda:")
                && a.contains("runtime")
                && !a.contains(' ');
            if !ok {
                return Err(ModelError::constraint(
                    a,
                    "runtimeVersionArn",
                    "Member must satisfy regular expression pattern: ^arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso(b?)))?-[a-z]+-\\d{1}::runtime:.+$",
                )
                .into());
            }
        }
        let stored = match (update_runtime_on, runtime_version_arn) {
            ("Manual", Some(a)) => format!("Manual {a}"),
            ("Manual", None) => {
                return Err(EngineError::invalid(
                    "Runtime version ARN must be provided when UpdateRuntimeOn is Manual.",
                ))
            }
            (_, Some(_)) => {
                return Err(EngineError::invalid(
                    "Runtime version ARN can only be provided when UpdateRuntimeOn is Manual.",
                ))
            }
            (on, None) => on.to_string(),
        };
        let f = self.function(&r.name)?;
        let st = f.lock();
        let t = self.target(&st, r)?;
        self.set_extra(r.name.as_str(), &runtime_key(&t.qualifier()), Some(&stored))?;
        Ok(RuntimeManagement {
            function_arn: self.runtime_arn(r),
            update_runtime_on: update_runtime_on.to_string(),
            runtime_version_arn: runtime_version_arn.map(str::to_owned),
        })
    }

    // ---- code signing configs ------------------------------------------------------------

    /// The id a code signing config ARN names; a malformed ARN is refused as the model does.
    fn csc_id(&self, arn: &str) -> Result<String, EngineError> {
        match tags::parse_resource(arn) {
            Ok(TaggedResource::CodeSigningConfig { region, account, id }) => {
                let p = self.partition();
                if region != p.region || account != p.account_id {
                    return Err(EngineError::code_signing_config_not_found(arn));
                }
                Ok(id)
            }
            _ => Err(ModelError::constraint(
                arn,
                "codeSigningConfigArn",
                "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:code-signing-config:csc-[a-z0-9]{17}",
            )
            .into()),
        }
    }

    fn load_csc(&self, id: &str, arn: &str) -> Result<CodeSigningConfig, EngineError> {
        let json = self
            .inner
            .meta
            .get_code_signing_config(id)
            .map_err(Self::meta_err("cannot read code signing config"))?
            .ok_or_else(|| EngineError::code_signing_config_not_found(arn))?;
        serde_json::from_str(&json).map_err(|e| internal("stored code signing config is unreadable", e))
    }

    fn store_csc(&self, c: &CodeSigningConfig) -> Result<(), EngineError> {
        let json = serde_json::to_string(c).map_err(|e| internal("cannot encode code signing config", e))?;
        self.inner
            .meta
            .put_code_signing_config(&c.id, &json)
            .map_err(Self::meta_err("cannot store code signing config"))
    }

    /// CreateCodeSigningConfig.
    pub fn create_code_signing_config(&self, input: CodeSigningInput) -> Result<CodeSigningConfig, EngineError> {
        let arns = input.signing_profile_version_arns.ok_or_else(|| {
            EngineError::from(ModelError::constraint("null", "allowedPublishers", "Member must not be null"))
        })?;
        csc::validate_publishers(&arns)?;
        let policy = input.untrusted_artifact_on_deployment.unwrap_or_else(|| "Warn".into());
        csc::validate_policy(&policy)?;
        let description = input.description.unwrap_or_default();
        csc::validate_description(&description)?;
        let tags = input.tags.unwrap_or_default();
        tags::validate(&tags)?;
        let id = format!("csc-{}", &uuid::Uuid::new_v4().simple().to_string()[..17]);
        let p = self.partition();
        let c = CodeSigningConfig {
            arn: format!("arn:aws:lambda:{}:{}:code-signing-config:{id}", p.region, p.account_id),
            id,
            description,
            signing_profile_version_arns: arns,
            untrusted_artifact_on_deployment: policy,
            last_modified_ms: now_ms(),
            tags,
        };
        let _g = CSC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        self.store_csc(&c)?;
        Ok(c)
    }

    pub fn get_code_signing_config(&self, arn: &str) -> Result<CodeSigningConfig, EngineError> {
        let id = self.csc_id(arn)?;
        self.load_csc(&id, arn)
    }

    /// UpdateCodeSigningConfig: only the given members change.
    pub fn update_code_signing_config(
        &self,
        arn: &str,
        input: CodeSigningInput,
    ) -> Result<CodeSigningConfig, EngineError> {
        let id = self.csc_id(arn)?;
        if let Some(a) = &input.signing_profile_version_arns {
            csc::validate_publishers(a)?;
        }
        if let Some(p) = &input.untrusted_artifact_on_deployment {
            csc::validate_policy(p)?;
        }
        if let Some(d) = &input.description {
            csc::validate_description(d)?;
        }
        let _g = CSC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.load_csc(&id, arn)?;
        if let Some(a) = input.signing_profile_version_arns {
            c.signing_profile_version_arns = a;
        }
        if let Some(p) = input.untrusted_artifact_on_deployment {
            c.untrusted_artifact_on_deployment = p;
        }
        if let Some(d) = input.description {
            c.description = d;
        }
        c.last_modified_ms = now_ms();
        self.store_csc(&c)?;
        Ok(c)
    }

    /// DeleteCodeSigningConfig; refused while a function uses it.
    pub fn delete_code_signing_config(&self, arn: &str) -> Result<(), EngineError> {
        let id = self.csc_id(arn)?;
        let _g = CSC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.load_csc(&id, arn)?;
        let users =
            self.inner.meta.extras_with_key(CSC_KEY).map_err(Self::meta_err("cannot read function settings"))?;
        if users.iter().any(|(_, a)| *a == c.arn) {
            return Err(EngineError::code_signing_config_in_use(&c.arn));
        }
        self.inner.meta.delete_code_signing_config(&id).map_err(Self::meta_err("cannot delete code signing config"))?;
        Ok(())
    }

    /// ListCodeSigningConfigs, by id.
    pub fn list_code_signing_configs(
        &self,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<CodeSigningConfig>, EngineError> {
        let rows =
            self.inner.meta.code_signing_configs().map_err(Self::meta_err("cannot read code signing configs"))?;
        let mut all = Vec::with_capacity(rows.len());
        for (_, json) in rows {
            all.push(serde_json::from_str(&json).map_err(|e| internal("stored code signing config is unreadable", e))?);
        }
        Ok(paginate(all, marker, max_items, |c: &CodeSigningConfig| c.id.clone()))
    }

    /// PutFunctionCodeSigningConfig.
    pub fn put_function_code_signing_config(&self, name: &FunctionName, arn: &str) -> Result<(), EngineError> {
        let id = self.csc_id(arn).map_err(|e| match e {
            EngineError::NotFound(_) => EngineError::function_code_signing_config_missing(arn),
            e => e,
        })?;
        let _g = CSC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.load_csc(&id, arn).map_err(|e| match e {
            EngineError::NotFound(_) => EngineError::function_code_signing_config_missing(arn),
            e => e,
        })?;
        let f = self.function(name)?;
        let _st = f.lock();
        self.set_extra(name.as_str(), CSC_KEY, Some(&c.arn))
    }

    /// GetFunctionCodeSigningConfig: the ARN in use, if any.
    pub fn function_code_signing_config(&self, name: &FunctionName) -> Result<Option<String>, EngineError> {
        let f = self.function(name)?;
        let _st = f.lock();
        self.extra(name.as_str(), CSC_KEY)
    }

    /// DeleteFunctionCodeSigningConfig.
    pub fn delete_function_code_signing_config(&self, name: &FunctionName) -> Result<(), EngineError> {
        let f = self.function(name)?;
        let _st = f.lock();
        self.set_extra(name.as_str(), CSC_KEY, None)
    }

    /// ListFunctionsByCodeSigningConfig: unqualified ARNs of the functions that use it.
    pub fn functions_by_code_signing_config(
        &self,
        arn: &str,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<String>, EngineError> {
        let c = self.get_code_signing_config(arn)?;
        let users =
            self.inner.meta.extras_with_key(CSC_KEY).map_err(Self::meta_err("cannot read function settings"))?;
        let arns: Vec<String> =
            users.into_iter().filter(|(_, a)| *a == c.arn).map(|(n, _)| self.arn(&n, None)).collect();
        Ok(paginate(arns, marker, max_items, String::clone))
    }
}
