//! Function URL configs: which url id calls which function (and alias), with what auth and
//! CORS rules.
//!
//! The configs live in SQLite (`function_urls`) and, for the HTTP front, in memory as two maps:
//! by function and qualifier (the control plane's view) and by url id (what a request names).
//! The second map holds each URL's [`UrlTarget`] ready-made (function name parsed, reference
//! built), so a request only takes the read lock, hashes the id and clones an `Arc`: the URL
//! front adds no write, no database read and no allocation to an invocation. A URL goes with
//! its alias and its function.

use crate::{now_ms, Engine, EngineError, Page};
use kiln_model::urls::{self, AuthType, Cors, InvokeMode, UrlConfig};
use kiln_model::{FunctionName, FunctionRef, Qualifier};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// CreateFunctionUrlConfig / UpdateFunctionUrlConfig; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct UrlInput {
    pub auth_type: Option<AuthType>,
    pub invoke_mode: Option<InvokeMode>,
    pub cors: Option<Cors>,
}

/// What a url id leads to.
#[derive(Debug, Clone)]
pub struct UrlTarget {
    pub function: FunctionName,
    /// `None` for the function's `$LATEST`, else the alias.
    pub alias: Option<String>,
    pub config: Arc<UrlConfig>,
    /// `function` and `alias` as the reference an invocation uses, built once.
    reference: FunctionRef,
}

impl UrlTarget {
    /// `None` when the stored name is not a function name (it was checked when stored).
    fn new(name: &str, qualifier: &str, config: Arc<UrlConfig>) -> Option<Self> {
        let function = FunctionName::parse(name).ok()?;
        let alias = (qualifier != Qualifier::LATEST).then(|| qualifier.to_string());
        let reference = FunctionRef { name: function.clone(), qualifier: alias.clone().map(Qualifier::Alias) };
        Some(Self { function, alias, config, reference })
    }

    /// The reference an invocation through this URL uses.
    pub fn function_ref(&self) -> &FunctionRef {
        &self.reference
    }
}

/// The URLs of every function, in memory.
#[derive(Debug, Default)]
pub(crate) struct UrlMap {
    by_key: BTreeMap<(String, String), Arc<UrlConfig>>,
    /// What each url id leads to, ready for a request.
    by_id: HashMap<String, Arc<UrlTarget>>,
}

impl UrlMap {
    fn insert(&mut self, name: String, qualifier: String, c: Arc<UrlConfig>) {
        match UrlTarget::new(&name, &qualifier, c.clone()) {
            Some(t) => {
                self.by_id.insert(c.url_id.clone(), Arc::new(t));
            }
            None => {
                tracing::warn!(function = %name, url_id = %c.url_id, "function url of an invalid function name ignored");
                self.by_id.remove(&c.url_id);
            }
        }
        self.by_key.insert((name, qualifier), c);
    }

    fn remove(&mut self, key: &(String, String)) -> Option<Arc<UrlConfig>> {
        let c = self.by_key.remove(key)?;
        self.by_id.remove(&c.url_id);
        Some(c)
    }
}

fn not_found() -> EngineError {
    EngineError::resource_not_found()
}

fn new_url_id() -> String {
    let mut bytes = [0u8; urls::URL_ID_LEN];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    urls::url_id_from(&bytes)
}

impl Engine {
    fn urls(&self) -> std::sync::RwLockReadGuard<'_, UrlMap> {
        self.inner.urls.read().unwrap_or_else(|e| e.into_inner())
    }

    fn urls_mut(&self) -> std::sync::RwLockWriteGuard<'_, UrlMap> {
        self.inner.urls.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the stored function URLs.
    pub(crate) fn load_urls(&self) -> Result<(), EngineError> {
        let all = self.inner.meta.all_urls().map_err(|e| crate::internal("cannot read function urls", e))?;
        let mut map = self.urls_mut();
        for (name, (q, c)) in all {
            map.insert(name, q, Arc::new(c));
        }
        Ok(())
    }

    /// Forgets the URLs of a deleted function (its rows went with the function's).
    pub(crate) fn forget_urls(&self, name: &str) {
        let mut map = self.urls_mut();
        let keys: Vec<(String, String)> = map.by_key.keys().filter(|(f, _)| f == name).cloned().collect();
        for k in keys {
            map.remove(&k);
        }
    }

    /// Deletes the URL of a deleted alias.
    pub(crate) fn forget_alias_url(&self, name: &str, alias: &str) -> Result<(), EngineError> {
        let key = (name.to_string(), alias.to_string());
        let mut map = self.urls_mut();
        if map.by_key.contains_key(&key) {
            self.inner.meta.delete_url(name, alias).map_err(|e| crate::internal("cannot delete function url", e))?;
            map.remove(&key);
        }
        Ok(())
    }

    /// The key a URL is kept under: `$LATEST` for the function, else an existing alias.
    fn url_key(&self, r: &FunctionRef) -> Result<(String, String), EngineError> {
        let f = self.function(&r.name)?;
        let q = match &r.qualifier {
            None => Qualifier::LATEST.to_string(),
            Some(Qualifier::Alias(a)) => {
                if !f.lock().aliases.contains_key(a) {
                    return Err(self.not_found(r.name.as_str(), Some(a)));
                }
                a.clone()
            }
            Some(q) => {
                return Err(kiln_model::ModelError::constraint(
                    q,
                    "qualifier",
                    r"Member must satisfy regular expression pattern: ((?!^\d+$)^[0-9a-zA-Z-_]+$)",
                )
                .into())
            }
        };
        Ok((r.name.to_string(), q))
    }

    /// CreateFunctionUrlConfig: one URL per function and qualifier.
    pub fn create_url(&self, r: &FunctionRef, input: UrlInput) -> Result<(String, Arc<UrlConfig>), EngineError> {
        let auth_type = input.auth_type.ok_or_else(|| {
            kiln_model::ModelError::Validation(
                "1 validation error detected: Value null at 'authType' failed to satisfy constraint: Member must not be null"
                    .into(),
            )
        })?;
        if let Some(c) = &input.cors {
            c.validate()?;
        }
        let key = self.url_key(r)?;
        let mut map = self.urls_mut();
        if map.by_key.contains_key(&key) {
            let arn = self.arn(&key.0, (key.1 != Qualifier::LATEST).then_some(key.1.as_str()));
            return Err(EngineError::url_config_exists(&arn));
        }
        let now = now_ms();
        let mut url_id = new_url_id();
        while map.by_id.contains_key(&url_id) {
            url_id = new_url_id();
        }
        let c = UrlConfig {
            url_id,
            auth_type,
            invoke_mode: input.invoke_mode.unwrap_or_default(),
            cors: input.cors,
            creation_ms: now,
            last_modified_ms: now,
        };
        self.inner.meta.put_url(&key.0, &key.1, &c).map_err(|e| crate::internal("cannot store function url", e))?;
        let c = Arc::new(c);
        map.insert(key.0, key.1.clone(), c.clone());
        Ok((key.1, c))
    }

    pub fn get_url(&self, r: &FunctionRef) -> Result<(String, Arc<UrlConfig>), EngineError> {
        let key = self.url_key(r)?;
        let c = self.urls().by_key.get(&key).cloned().ok_or_else(not_found)?;
        Ok((key.1, c))
    }

    /// UpdateFunctionUrlConfig: the given members replace the stored ones (`Cors` as a whole).
    pub fn update_url(&self, r: &FunctionRef, input: UrlInput) -> Result<(String, Arc<UrlConfig>), EngineError> {
        if let Some(c) = &input.cors {
            c.validate()?;
        }
        let key = self.url_key(r)?;
        let mut map = self.urls_mut();
        let mut c = UrlConfig::clone(map.by_key.get(&key).ok_or_else(not_found)?);
        if let Some(a) = input.auth_type {
            c.auth_type = a;
        }
        if let Some(m) = input.invoke_mode {
            c.invoke_mode = m;
        }
        if let Some(cors) = input.cors {
            c.cors = Some(cors);
        }
        c.last_modified_ms = now_ms();
        self.inner.meta.put_url(&key.0, &key.1, &c).map_err(|e| crate::internal("cannot store function url", e))?;
        let c = Arc::new(c);
        map.insert(key.0, key.1.clone(), c.clone());
        Ok((key.1, c))
    }

    pub fn delete_url(&self, r: &FunctionRef) -> Result<(), EngineError> {
        let key = self.url_key(r)?;
        let mut map = self.urls_mut();
        if !map.by_key.contains_key(&key) {
            return Err(not_found());
        }
        self.inner.meta.delete_url(&key.0, &key.1).map_err(|e| crate::internal("cannot delete function url", e))?;
        map.remove(&key);
        Ok(())
    }

    /// ListFunctionUrlConfigs: the function's URLs by qualifier.
    pub fn list_urls(
        &self,
        name: &FunctionName,
        marker: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Page<(String, Arc<UrlConfig>)>, EngineError> {
        self.function(name)?;
        let all: Vec<(String, Arc<UrlConfig>)> = self
            .urls()
            .by_key
            .iter()
            .filter(|((f, _), _)| f == name.as_str())
            .map(|((_, q), c)| (q.clone(), c.clone()))
            .collect();
        Ok(crate::paginate(all, marker, max_items, |(q, _)| q.clone()))
    }

    /// Runs an invocation through a function URL with the request id the event already carries
    /// (`requestContext.requestId`), in the caller's task but moved to a task of its own if the
    /// caller hangs up, so that it does not lose the environment. Returns the answer and whether
    /// it is a function error. As Invoke does, the function is resolved here and only the job
    /// runs in the task.
    pub async fn invoke_url(
        &self,
        target: &UrlTarget,
        request_id: String,
        payload: bytes::Bytes,
    ) -> Result<(bytes::Bytes, bool), EngineError> {
        let limit = kiln_model::limits::SYNC_PAYLOAD_MAX_BYTES;
        if payload.len() > limit {
            return Err(EngineError::request_too_large(limit, "InvokeFunction"));
        }
        let (job, _) = self.job_with_id(target.function_ref(), request_id, payload)?;
        let (payload, function_error, _) = crate::detach::finish_on_drop(job.run())
            .await
            .map_err(|e| EngineError::internal("invocation task failed", e))??;
        Ok((payload, function_error))
    }

    /// Runs an invocation through a `RESPONSE_STREAM` function URL: as [`Engine::invoke_url`],
    /// but the answer comes as the parts of [`crate::stream`], each as soon as the function
    /// wrote it. The invocation runs in a task of its own; dropping the receiver ends it.
    pub fn invoke_url_streaming(
        &self,
        target: &UrlTarget,
        request_id: String,
        payload: bytes::Bytes,
    ) -> Result<crate::stream::StreamingInvoke, EngineError> {
        let limit = kiln_model::limits::SYNC_PAYLOAD_MAX_BYTES;
        if payload.len() > limit {
            return Err(EngineError::TooLarge(format!(
                "Request must be smaller than {limit} bytes for the InvokeFunction operation"
            )));
        }
        let (job, version) = self.job_with_id(target.function_ref(), request_id.clone(), payload)?;
        Ok(crate::stream::start_streaming(job, request_id, version))
    }

    /// The function a url id names, for the HTTP front: a read lock and an `Arc` clone.
    pub fn url_target(&self, url_id: &str) -> Option<Arc<UrlTarget>> {
        self.urls().by_id.get(url_id).cloned()
    }
}
