//! Layer versions in SQLite (the `layer_versions` and `layer_names` tables of [`MetaStore`]).

use crate::meta::{MetaError, MetaStore};
use kiln_model::layers::LayerVersion;
use rusqlite::{params, OptionalExtension};

impl MetaStore {
    /// Publishes the next version of layer `name`: `make` gets the number (one more than the
    /// highest ever published under that name) and builds the row, in one transaction.
    pub fn publish_layer_version(
        &self,
        name: &str,
        make: impl FnOnce(u64) -> LayerVersion,
    ) -> Result<LayerVersion, MetaError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let last: Option<i64> = tx
            .query_row("SELECT last_version FROM layer_names WHERE name = ?1", params![name], |r| r.get(0))
            .optional()?;
        let version = last.map_or(1, |v| v as u64 + 1);
        let layer = make(version);
        let json = layer_json(&layer)?;
        tx.execute(
            "INSERT OR REPLACE INTO layer_names (name, last_version) VALUES (?1, ?2)",
            params![name, version as i64],
        )?;
        tx.execute(
            "INSERT INTO layer_versions (name, version, config) VALUES (?1, ?2, ?3)",
            params![name, version as i64, json],
        )?;
        tx.commit()?;
        Ok(layer)
    }

    /// Replaces a stored layer version (its policy changed).
    pub fn put_layer_version(&self, layer: &LayerVersion) -> Result<(), MetaError> {
        let json = layer_json(layer)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO layer_versions (name, version, config) VALUES (?1, ?2, ?3)",
            params![layer.name, layer.version as i64, json],
        )?;
        Ok(())
    }

    pub fn get_layer_version(&self, name: &str, version: u64) -> Result<Option<LayerVersion>, MetaError> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT config FROM layer_versions WHERE name = ?1 AND version = ?2",
                params![name, version as i64],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| parse_layer(name, &j)).transpose()
    }

    /// Every version of one layer (`Some(name)`) or of all layers, by name, newest version first.
    pub fn layer_versions(&self, name: Option<&str>) -> Result<Vec<LayerVersion>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, config FROM layer_versions WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version DESC",
        )?;
        let rows = stmt.query_map(params![name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, json) = row?;
            out.push(parse_layer(&name, &json)?);
        }
        Ok(out)
    }

    /// Deletes one layer version; returns it if it existed.
    pub fn delete_layer_version(&self, name: &str, version: u64) -> Result<Option<LayerVersion>, MetaError> {
        let existing = self.get_layer_version(name, version)?;
        self.conn()
            .execute("DELETE FROM layer_versions WHERE name = ?1 AND version = ?2", params![name, version as i64])?;
        Ok(existing)
    }
}

fn layer_json(layer: &LayerVersion) -> Result<String, MetaError> {
    serde_json::to_string(layer).map_err(|source| MetaError::Corrupt {
        name: layer.name.clone(),
        version: layer.version.to_string(),
        source,
    })
}

fn parse_layer(name: &str, json: &str) -> Result<LayerVersion, MetaError> {
    serde_json::from_str(json).map_err(|source| MetaError::Corrupt {
        name: name.to_string(),
        version: "layer".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, version: u64, sha: &str) -> LayerVersion {
        LayerVersion {
            name: name.into(),
            version,
            description: String::new(),
            license_info: None,
            compatible_runtimes: vec![],
            compatible_architectures: vec![],
            code_sha256: sha.into(),
            code_size: 1,
            unzipped_size: 1,
            created_ms: 0,
            policy: None,
        }
    }

    #[test]
    fn versions_count_up_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("kiln.db")).unwrap();
        assert_eq!(store.publish_layer_version("a", |v| layer("a", v, "x=")).unwrap().version, 1);
        assert_eq!(store.publish_layer_version("a", |v| layer("a", v, "x=")).unwrap().version, 2);
        assert_eq!(store.publish_layer_version("b", |v| layer("b", v, "y=")).unwrap().version, 1);
        assert!(store.delete_layer_version("a", 2).unwrap().is_some());
        assert!(store.delete_layer_version("a", 2).unwrap().is_none());
        // Reopening keeps the counter.
        drop(store);
        let store = MetaStore::open(&dir.path().join("kiln.db")).unwrap();
        assert_eq!(store.publish_layer_version("a", |v| layer("a", v, "x=")).unwrap().version, 3);
        let all: Vec<(String, u64)> =
            store.layer_versions(None).unwrap().into_iter().map(|l| (l.name, l.version)).collect();
        assert_eq!(all, vec![("a".into(), 3), ("a".into(), 1), ("b".into(), 1)]);
        assert_eq!(store.layer_versions(Some("b")).unwrap().len(), 1);
    }

    #[test]
    fn layer_code_stays_in_use_while_a_layer_or_function_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("kiln.db")).unwrap();
        store.publish_layer_version("a", |v| layer("a", v, "lay=")).unwrap();
        assert!(store.code_in_use("lay=").unwrap());
        store
            .conn()
            .execute(
                "INSERT INTO versions (name, version, config) VALUES ('f', '$LATEST', ?1)",
                params![r#"{"code_sha256":"fn=","layers":[{"arn":"x","code_size":1,"code_sha256":"lay=","unzipped_size":1}]}"#],
            )
            .unwrap();
        store.delete_layer_version("a", 1).unwrap();
        assert!(store.code_in_use("lay=").unwrap());
        store.delete_function("f").unwrap();
        assert!(!store.code_in_use("lay=").unwrap());
    }
}
