//! Accounts: with `--auth-keys`, each access key acts in its own account, and each account is
//! an engine of its own (its own functions, layers, event configs, logs, metrics and
//! concurrency limit, in a data directory of its own), so nothing of one account can be found
//! through another: a name another account uses is simply not there. The default account
//! `000000000000` is the engine on the data dir itself, which is where everything lived before
//! accounts existed.
//!
//! The REST listener authenticates a request ([`crate::auth::verify`]) and hands it to the
//! engine of the signer's account. The keys can be replaced while kiln runs ([`Accounts::reload`],
//! on SIGHUP): engines for accounts that appear are opened first, and only when all of them
//! opened are the new keys used; an account whose keys went keeps its engine (its functions
//! stay, unreachable until a key names the account again).

use crate::keys::{Keys, DEFAULT_ACCOUNT};
use kiln_engine::Engine;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// Opens the engine of an account: `(account id, its concurrency limit if the keys set one)`.
pub type Opener = Box<dyn Fn(&str, Option<u32>) -> Result<Engine, String> + Send + Sync>;

/// Why an account could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open account {account}: {message}")]
pub struct AccountError {
    pub account: String,
    pub message: String,
}

/// The keys in force and an engine per account.
pub struct Accounts {
    region: String,
    keys: RwLock<Arc<Keys>>,
    engines: Mutex<BTreeMap<String, Engine>>,
    open: Opener,
    /// The limit an account has when its keys set none (kiln's `--concurrency-limit`): what an
    /// open engine goes back to when a reload drops its `concurrency_limit`.
    base_limit: Option<u32>,
}

impl Accounts {
    /// `default` is the engine of [`DEFAULT_ACCOUNT`]; every other account the keys name is
    /// opened now.
    pub fn new(region: String, keys: Keys, default: Engine, open: Opener) -> Result<Self, AccountError> {
        let accounts = Self {
            region,
            keys: RwLock::new(Arc::new(Keys::default())),
            engines: Mutex::new(BTreeMap::from([(DEFAULT_ACCOUNT.to_string(), default)])),
            open,
            base_limit: None,
        };
        accounts.reload(keys)?;
        Ok(accounts)
    }

    /// [`Accounts::new`] with the limit accounts have when their keys set none, so that a
    /// reload that drops an account's `concurrency_limit` puts that limit back.
    pub fn with_base_limit(mut self, limit: u32) -> Self {
        self.base_limit = Some(limit);
        self
    }

    /// Puts new keys in force once every account they name has an engine; an open engine
    /// takes the account's `concurrency_limit` as the keys now set it.
    pub fn reload(&self, keys: Keys) -> Result<(), AccountError> {
        for (account, limit) in keys.accounts() {
            if let Some(engine) = self.engine(&account) {
                if let Some(limit) = limit.or(self.base_limit).filter(|l| *l != engine.concurrency_limit()) {
                    tracing::info!(account = %account, limit, "account concurrency limit changed");
                    engine.set_concurrency_limit(limit);
                }
                continue;
            }
            let engine =
                (self.open)(&account, limit).map_err(|message| AccountError { account: account.clone(), message })?;
            if let Ok(mut engines) = self.engines.lock() {
                engines.entry(account).or_insert(engine);
            }
        }
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
        Ok(())
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn engine(&self, account: &str) -> Option<Engine> {
        self.engines.lock().ok().and_then(|e| e.get(account).cloned())
    }

    /// Every open engine, for shutdown.
    pub fn engines(&self) -> Vec<Engine> {
        self.engines.lock().map(|e| e.values().cloned().collect()).unwrap_or_default()
    }

    pub fn region(&self) -> &str {
        &self.region
    }
}

/// The account a path segment or query value names, when it is a Lambda ARN (or the
/// `<account>:function:<name>` short form): requests that name another account's resources are
/// answered as if the resource did not exist.
pub fn named_account(value: &str) -> Option<&str> {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, account, ..] => Some(account),
        [account, "function", ..] if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) => {
            Some(account)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_account_reads_arns_and_short_forms() {
        assert_eq!(named_account("arn:aws:lambda:us-east-1:111111111111:function:f:1"), Some("111111111111"));
        assert_eq!(named_account("arn:aws:lambda:us-east-1:222222222222:layer:l:3"), Some("222222222222"));
        assert_eq!(named_account("333333333333:function:f"), Some("333333333333"));
        assert_eq!(named_account("my-function"), None);
        assert_eq!(named_account("f:live"), None);
        assert_eq!(named_account("2015-03-31"), None);
    }
}
