//! Function URL configs in SQLite (`function_urls`): one row per function and qualifier, the
//! url id in a unique column of its own so that an id never names two endpoints.

use crate::meta::{to_json, MetaError, MetaStore, QualifiedRows};
use kiln_model::urls::UrlConfig;
use rusqlite::params;

impl MetaStore {
    /// Stores (inserts or replaces) the URL of one qualifier (`$LATEST` for the function).
    pub fn put_url(&self, function: &str, qualifier: &str, c: &UrlConfig) -> Result<(), MetaError> {
        let json = to_json(function, qualifier, c)?;
        self.conn().execute(
            // Not `OR REPLACE`: that would silently delete another row holding the same url id.
            "INSERT INTO function_urls (name, qualifier, url_id, config) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name, qualifier) DO UPDATE SET url_id = excluded.url_id, config = excluded.config",
            params![function, qualifier, c.url_id, json],
        )?;
        Ok(())
    }

    pub fn delete_url(&self, function: &str, qualifier: &str) -> Result<(), MetaError> {
        self.conn()
            .execute("DELETE FROM function_urls WHERE name = ?1 AND qualifier = ?2", params![function, qualifier])?;
        Ok(())
    }

    /// Every function URL, as (function, (qualifier, config)).
    pub fn all_urls(&self) -> Result<QualifiedRows<UrlConfig>, MetaError> {
        self.qualified_rows("SELECT name, qualifier, config FROM function_urls ORDER BY name, qualifier")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::urls::{AuthType, InvokeMode};

    fn url(id: &str) -> UrlConfig {
        UrlConfig {
            url_id: id.into(),
            auth_type: AuthType::None,
            invoke_mode: InvokeMode::Buffered,
            cors: None,
            creation_ms: 1,
            last_modified_ms: 2,
        }
    }

    #[test]
    fn urls_survive_reopening_and_go_with_their_function() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.db");
        {
            let store = MetaStore::open(&path).unwrap();
            store.put_url("f", "$LATEST", &url("a")).unwrap();
            store.put_url("f", "live", &url("b")).unwrap();
            store.put_url("g", "$LATEST", &url("c")).unwrap();
            // A second row with a taken id is refused by the unique column.
            assert!(store.put_url("h", "$LATEST", &url("a")).is_err());
        }
        let store = MetaStore::open(&path).unwrap();
        let all = store.all_urls().unwrap();
        let ids: Vec<&str> = all.iter().map(|(_, (_, c))| c.url_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        store.delete_function("f").unwrap();
        store.delete_url("g", "$LATEST").unwrap();
        assert!(store.all_urls().unwrap().is_empty());
    }
}
