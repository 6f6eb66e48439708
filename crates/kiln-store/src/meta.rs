//! Function metadata in SQLite.
//!
//! One row per function version; the configuration is stored as JSON so that adding a field to
//! [`FunctionConfig`] needs no migration. The SQL stays behind this type so that another
//! database can take its place when kiln spans several hosts.

use kiln_model::config::{AliasConfig, ConcurrencySettings};
use kiln_model::FunctionConfig;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database error")]
    Sql(#[from] rusqlite::Error),
    #[error("stored configuration of {name}:{version} is unreadable")]
    Corrupt {
        name: String,
        version: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Numbered migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE versions (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (name, version)
    ) WITHOUT ROWID;",
    "CREATE TABLE aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (name, alias)
    ) WITHOUT ROWID;
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        config TEXT NOT NULL
    ) WITHOUT ROWID;",
    // Event invoke configs (asynchronous invocation: retries, age, destinations), per qualifier.
    "CREATE TABLE event_configs (
        name TEXT NOT NULL,
        qualifier TEXT NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (name, qualifier)
    ) WITHOUT ROWID;",
    // Layers: one row per published layer version, and per layer name the highest version
    // ever published, so that a number is never given twice even after deletes.
    "CREATE TABLE layer_versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (name, version)
    ) WITHOUT ROWID;
    CREATE TABLE layer_names (
        name TEXT PRIMARY KEY,
        last_version INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // Per-function extras (tags, resource policies, recursion and runtime settings, code
    // signing config in use) and code signing configs (extras.rs).
    "CREATE TABLE function_extras (
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (name, key)
    ) WITHOUT ROWID;
    CREATE TABLE code_signing_configs (
        id TEXT PRIMARY KEY,
        config TEXT NOT NULL
    ) WITHOUT ROWID;",
    // Function URLs: one per function and qualifier; the url id names it for HTTP callers.
    "CREATE TABLE function_urls (
        name TEXT NOT NULL,
        qualifier TEXT NOT NULL,
        url_id TEXT NOT NULL UNIQUE,
        config TEXT NOT NULL,
        PRIMARY KEY (name, qualifier)
    ) WITHOUT ROWID;",
];

/// Rows kept per function and qualifier, as (function, (qualifier, value)).
pub type QualifiedRows<T> = Vec<(String, (String, T))>;

/// The metadata database.
pub struct MetaStore {
    conn: Mutex<Connection>,
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done) {
            conn.execute_batch(m)?;
            conn.pragma_update(None, "user_version", i + 1)?;
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces one version.
    pub fn put(&self, cfg: &FunctionConfig) -> Result<(), MetaError> {
        let json = serde_json::to_string(cfg).map_err(|source| MetaError::Corrupt {
            name: cfg.name.to_string(),
            version: cfg.version.to_string(),
            source,
        })?;
        self.conn().execute(
            "INSERT OR REPLACE INTO versions (name, version, config) VALUES (?1, ?2, ?3)",
            params![cfg.name.as_str(), cfg.version.to_string(), json],
        )?;
        Ok(())
    }

    pub fn get(&self, name: &str, version: &str) -> Result<Option<FunctionConfig>, MetaError> {
        let json: Option<String> = self
            .conn()
            .query_row("SELECT config FROM versions WHERE name = ?1 AND version = ?2", params![name, version], |r| {
                r.get(0)
            })
            .optional()?;
        json.map(|j| parse(name, version, &j)).transpose()
    }

    /// Every stored version of every function, ordered by name then version.
    pub fn all(&self) -> Result<Vec<FunctionConfig>, MetaError> {
        Ok(self
            .rows("SELECT name, version, config FROM versions ORDER BY name, version")?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// Runs `sql`, which selects (name, key, JSON), and parses each JSON; returns (name, value).
    fn rows<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<(String, T)>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, key, json) = row?;
            let value = parse(&name, &key, &json)?;
            out.push((name, value));
        }
        Ok(out)
    }

    /// Deletes a function with all its versions, aliases and settings.
    pub fn delete_function(&self, name: &str) -> Result<(), MetaError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM versions WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM aliases WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM settings WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM event_configs WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM function_extras WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM function_urls WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes one published version.
    pub fn delete_version(&self, name: &str, version: &str) -> Result<(), MetaError> {
        self.conn().execute("DELETE FROM versions WHERE name = ?1 AND version = ?2", params![name, version])?;
        Ok(())
    }

    pub fn put_alias(&self, function: &str, alias: &AliasConfig) -> Result<(), MetaError> {
        let json = to_json(function, &alias.name, alias)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO aliases (name, alias, config) VALUES (?1, ?2, ?3)",
            params![function, alias.name, json],
        )?;
        Ok(())
    }

    pub fn delete_alias(&self, function: &str, alias: &str) -> Result<(), MetaError> {
        self.conn().execute("DELETE FROM aliases WHERE name = ?1 AND alias = ?2", params![function, alias])?;
        Ok(())
    }

    /// Every alias, as (function, alias).
    pub fn all_aliases(&self) -> Result<Vec<(String, AliasConfig)>, MetaError> {
        self.rows("SELECT name, alias, config FROM aliases ORDER BY name, alias")
    }

    pub fn put_settings(&self, function: &str, settings: &ConcurrencySettings) -> Result<(), MetaError> {
        let json = to_json(function, "settings", settings)?;
        self.conn()
            .execute("INSERT OR REPLACE INTO settings (name, config) VALUES (?1, ?2)", params![function, json])?;
        Ok(())
    }

    /// Every function's concurrency settings.
    pub fn all_settings(&self) -> Result<Vec<(String, ConcurrencySettings)>, MetaError> {
        self.rows("SELECT name, 'settings', config FROM settings ORDER BY name")
    }

    /// Stores the event invoke config of one qualifier (`$LATEST` for the unqualified function).
    pub fn put_event_config<T: serde::Serialize>(
        &self,
        function: &str,
        qualifier: &str,
        c: &T,
    ) -> Result<(), MetaError> {
        let json = to_json(function, qualifier, c)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO event_configs (name, qualifier, config) VALUES (?1, ?2, ?3)",
            params![function, qualifier, json],
        )?;
        Ok(())
    }

    pub fn delete_event_config(&self, function: &str, qualifier: &str) -> Result<(), MetaError> {
        self.conn()
            .execute("DELETE FROM event_configs WHERE name = ?1 AND qualifier = ?2", params![function, qualifier])?;
        Ok(())
    }

    /// Every event invoke config, as (function, (qualifier, config)).
    pub fn all_event_configs<T: serde::de::DeserializeOwned>(&self) -> Result<QualifiedRows<T>, MetaError> {
        self.qualified_rows("SELECT name, qualifier, config FROM event_configs ORDER BY name, qualifier")
    }

    /// Every row of a `SELECT name, qualifier, config …` query, its config parsed.
    pub(crate) fn qualified_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
    ) -> Result<QualifiedRows<T>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, q, json) = row?;
            let c = parse(&name, &q, &json)?;
            out.push((name, (q, c)));
        }
        Ok(out)
    }

    /// Whether any stored function version (as its code or one of its layers) or layer version
    /// still uses this code.
    pub fn code_in_use(&self, code_sha256: &str) -> Result<bool, MetaError> {
        let used: bool = self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM versions WHERE json_extract(config, '$.code_sha256') = ?1)
                OR EXISTS (SELECT 1 FROM layer_versions WHERE json_extract(config, '$.code_sha256') = ?1)
                OR EXISTS (SELECT 1 FROM versions, json_each(versions.config, '$.layers') AS l
                           WHERE json_extract(l.value, '$.code_sha256') = ?1)",
            params![code_sha256],
            |r| r.get(0),
        )?;
        Ok(used)
    }
}

pub(crate) fn to_json<T: serde::Serialize>(name: &str, what: &str, v: &T) -> Result<String, MetaError> {
    serde_json::to_string(v).map_err(|source| MetaError::Corrupt { name: name.into(), version: what.into(), source })
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(name: &str, version: &str, json: &str) -> Result<T, MetaError> {
    serde_json::from_str(json).map_err(|source| MetaError::Corrupt {
        name: name.to_string(),
        version: version.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_in_use_looks_at_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("kiln.db")).unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO versions (name, version, config) VALUES ('f', '1', ?1)",
                params![r#"{"code_sha256":"abc="}"#],
            )
            .unwrap();
        assert!(store.code_in_use("abc=").unwrap());
        assert!(!store.code_in_use("xyz=").unwrap());
        store.delete_version("f", "1").unwrap();
        assert!(!store.code_in_use("abc=").unwrap());
    }
}
