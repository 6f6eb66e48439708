//! Per-function settings beyond the configuration (tags, resource policies, recursion and
//! runtime-management settings, the code signing config in use), and code signing configs.
//!
//! `function_extras` holds one JSON value per function and key (`tags`, `policy:<qualifier>`,
//! `recursion`, `runtime:<qualifier>`, `csc`), deleted with the function;
//! `code_signing_configs` one row per config. Both live in `kiln.db` and are written by
//! control-plane operations only.

use crate::meta::{MetaError, MetaStore};
use rusqlite::{params, OptionalExtension};

impl MetaStore {
    /// The value of `key` for function `name`.
    pub fn get_extra(&self, name: &str, key: &str) -> Result<Option<String>, MetaError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM function_extras WHERE name = ?1 AND key = ?2", params![name, key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets (`Some`) or removes (`None`) the value of `key` for function `name`.
    pub fn put_extra(&self, name: &str, key: &str, value: Option<&str>) -> Result<(), MetaError> {
        match value {
            Some(v) => self.conn().execute(
                "INSERT OR REPLACE INTO function_extras (name, key, value) VALUES (?1, ?2, ?3)",
                params![name, key, v],
            )?,
            None => {
                self.conn().execute("DELETE FROM function_extras WHERE name = ?1 AND key = ?2", params![name, key])?
            }
        };
        Ok(())
    }

    /// Every function with a value for `key`, as (name, value), by name.
    pub fn extras_with_key(&self, key: &str) -> Result<Vec<(String, String)>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, value FROM function_extras WHERE key = ?1 ORDER BY name")?;
        let rows = stmt.query_map(params![key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn put_code_signing_config(&self, id: &str, json: &str) -> Result<(), MetaError> {
        self.conn()
            .execute("INSERT OR REPLACE INTO code_signing_configs (id, config) VALUES (?1, ?2)", params![id, json])?;
        Ok(())
    }

    pub fn get_code_signing_config(&self, id: &str) -> Result<Option<String>, MetaError> {
        Ok(self
            .conn()
            .query_row("SELECT config FROM code_signing_configs WHERE id = ?1", params![id], |r| r.get(0))
            .optional()?)
    }

    /// Deletes a config; whether it existed.
    pub fn delete_code_signing_config(&self, id: &str) -> Result<bool, MetaError> {
        Ok(self.conn().execute("DELETE FROM code_signing_configs WHERE id = ?1", params![id])? > 0)
    }

    /// Every config as (id, JSON), by id.
    pub fn code_signing_configs(&self) -> Result<Vec<(String, String)>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, config FROM code_signing_configs ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::MetaStore;

    #[test]
    fn extras_round_trip_and_go_with_their_function() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("kiln.db")).unwrap();
        store.put_extra("f", "tags", Some(r#"{"a":"b"}"#)).unwrap();
        store.put_extra("f", "csc", Some("arn-1")).unwrap();
        store.put_extra("g", "csc", Some("arn-1")).unwrap();
        assert_eq!(store.get_extra("f", "tags").unwrap().as_deref(), Some(r#"{"a":"b"}"#));
        assert_eq!(store.extras_with_key("csc").unwrap().len(), 2);
        store.put_extra("g", "csc", None).unwrap();
        assert_eq!(store.extras_with_key("csc").unwrap(), vec![("f".to_string(), "arn-1".to_string())]);
        store.delete_function("f").unwrap();
        assert_eq!(store.get_extra("f", "tags").unwrap(), None);

        store.put_code_signing_config("csc-1", "{}").unwrap();
        assert_eq!(store.get_code_signing_config("csc-1").unwrap().as_deref(), Some("{}"));
        assert_eq!(store.code_signing_configs().unwrap().len(), 1);
        assert!(store.delete_code_signing_config("csc-1").unwrap());
        assert!(!store.delete_code_signing_config("csc-1").unwrap());
    }
}
