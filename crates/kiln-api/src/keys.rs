//! The keys file of `kiln serve --auth-keys`: AWS's shared-credentials format, one `[name]`
//! section per key, with kiln's `account_id` (and optionally the account's
//! `concurrency_limit`) beside `aws_access_key_id` and `aws_secret_access_key`.
//!
//! ```text
//! [alice]
//! aws_access_key_id = AKIAALICE0000000001
//! aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//! account_id = 111111111111
//! concurrency_limit = 200
//! ```
//!
//! A file that kiln cannot read whole is refused with the line at fault, so a typo never
//! leaves a key half-configured. Secrets never appear in an error or a log line.

use std::collections::BTreeMap;
use std::fmt;

/// The account every request acts in when kiln runs without keys.
pub const DEFAULT_ACCOUNT: &str = "000000000000";

/// Why a keys file was refused; `line` is 1-based.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct KeysError {
    pub line: usize,
    pub message: String,
}

/// One access key and the account it acts in.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// The section's name (`[alice]`), for kiln's log.
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
}

impl fmt::Debug for Key {
    // The secret stays out of every Debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// Every key of a keys file, by access key id, and the accounts' settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    by_id: BTreeMap<String, Key>,
    /// Account id → its `concurrency_limit`, when a section sets one.
    limits: BTreeMap<String, u32>,
}

impl Keys {
    pub fn get(&self, access_key_id: &str) -> Option<&Key> {
        self.by_id.get(access_key_id)
    }

    /// Every account some key acts in, with its concurrency limit if one is set.
    pub fn accounts(&self) -> BTreeMap<String, Option<u32>> {
        self.by_id.values().map(|k| (k.account_id.clone(), self.limits.get(&k.account_id).copied())).collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Reads a keys file's text.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        struct Section {
            line: usize,
            name: String,
            fields: BTreeMap<&'static str, (usize, String)>,
        }
        let mut sections: Vec<Section> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| KeysError { line, message };
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            if let Some(rest) = l.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(err("a section header must end with ']'".into()));
                };
                let name = name.trim();
                let name = name.strip_prefix("profile ").map(str::trim).unwrap_or(name);
                if name.is_empty() {
                    return Err(err("a section needs a name".into()));
                }
                if sections.iter().any(|s| s.name == name) {
                    return Err(err(format!("section [{name}] appears twice")));
                }
                sections.push(Section { line, name: name.to_string(), fields: BTreeMap::new() });
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                return Err(err("expected 'key = value' or a '[section]' header".into()));
            };
            let Some(section) = sections.last_mut() else {
                return Err(err("a setting before the first '[section]' header".into()));
            };
            let key = k.trim().to_ascii_lowercase();
            let field: &'static str = match key.as_str() {
                "aws_access_key_id" => "aws_access_key_id",
                "aws_secret_access_key" => "aws_secret_access_key",
                "account_id" => "account_id",
                "concurrency_limit" => "concurrency_limit",
                // What shared-credentials files often carry besides the keys; kiln has no use for it.
                "aws_session_token" | "region" | "output" => continue,
                other => return Err(err(format!("unknown setting '{other}'"))),
            };
            if section.fields.contains_key(field) {
                return Err(err(format!("'{field}' is set twice in [{}]", section.name)));
            }
            section.fields.insert(field, (line, v.trim().to_string()));
        }
        let mut keys = Keys::default();
        for s in sections {
            let need = |f: &str| -> Result<&(usize, String), KeysError> {
                s.fields
                    .get(f)
                    .filter(|(_, v)| !v.is_empty())
                    .ok_or_else(|| KeysError { line: s.line, message: format!("[{}] has no {f}", s.name) })
            };
            let (id_line, id) = need("aws_access_key_id")?;
            if id.len() < 3 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(KeysError {
                    line: *id_line,
                    message: "aws_access_key_id must be 3 to 128 letters and digits".into(),
                });
            }
            let (secret_line, secret) = need("aws_secret_access_key")?;
            if secret.len() > 256 || secret.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(KeysError {
                    line: *secret_line,
                    message: "aws_secret_access_key must be at most 256 printable characters without spaces".into(),
                });
            }
            let (acct_line, account) = need("account_id")?;
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(KeysError { line: *acct_line, message: "account_id must be 12 digits".into() });
            }
            if let Some((line, v)) = s.fields.get("concurrency_limit") {
                let limit = v.parse::<u32>().ok().filter(|n| (100..=1_000_000).contains(n)).ok_or_else(|| {
                    KeysError { line: *line, message: "concurrency_limit must be a number from 100 to 1000000".into() }
                })?;
                match keys.limits.get(account.as_str()) {
                    Some(other) if *other != limit => {
                        return Err(KeysError {
                            line: *line,
                            message: format!("account {account} already has concurrency_limit {other}"),
                        })
                    }
                    _ => {
                        keys.limits.insert(account.clone(), limit);
                    }
                }
            }
            if keys.by_id.contains_key(id.as_str()) {
                return Err(KeysError { line: *id_line, message: format!("access key id {id} appears twice") });
            }
            keys.by_id.insert(
                id.clone(),
                Key {
                    name: s.name.clone(),
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    account_id: account.clone(),
                },
            );
        }
        if keys.is_empty() {
            return Err(KeysError { line: text.lines().count().max(1), message: "the file holds no keys".into() });
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# kiln keys\n[alice]\naws_access_key_id = AKIAALICE\naws_secret_access_key = s3cr3t/+x\naccount_id = 111111111111\nconcurrency_limit = 200\n\n[profile bob]\naws_access_key_id=AKIABOB\naws_secret_access_key=other\naccount_id=222222222222\naws_session_token = ignored\n";

    #[test]
    fn a_good_file_gives_every_key_and_account() {
        let k = Keys::parse(GOOD).unwrap();
        assert_eq!(k.len(), 2);
        let a = k.get("AKIAALICE").unwrap();
        assert_eq!(
            (a.name.as_str(), a.account_id.as_str(), a.secret_access_key.as_str()),
            ("alice", "111111111111", "s3cr3t/+x")
        );
        assert_eq!(k.get("AKIABOB").unwrap().name, "bob");
        let accounts = k.accounts();
        assert_eq!(accounts.get("111111111111"), Some(&Some(200)));
        assert_eq!(accounts.get("222222222222"), Some(&None));
        assert!(k.get("AKIANOBODY").is_none());
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_secret() {
        let cases: &[(&str, usize, &str)] = &[
            ("[a]\naws_access_key_id = AK\n", 2, "3 to 128"),
            ("aws_access_key_id = AKIA1\n", 1, "before the first"),
            ("[a\n", 1, "must end with"),
            ("[a]\nthis is not a setting\n", 2, "expected"),
            ("[a]\naws_access_key_id = AKIA1\naws_secret_access_key = x\n", 1, "no account_id"),
            ("[a]\naws_access_key_id = AKIA1\naws_secret_access_key = x\naccount_id = 12\n", 4, "12 digits"),
            ("[a]\naws_access_key_id = AKIA1\naws_secret_access_key = x\naccount_id = 111111111111\nconcurrency_limit = 5\n", 5, "100 to"),
            ("[a]\naws_access_key_id = AKIA1\naws_secret_acess_key = topsecret\n", 3, "unknown setting"),
            ("[a]\naws_access_key_id = AKIA1\naws_secret_access_key = x\naccount_id = 111111111111\n[b]\naws_access_key_id = AKIA1\naws_secret_access_key = y\naccount_id = 111111111111\n", 6, "twice"),
            ("[a]\naws_access_key_id = AKIA1\naws_access_key_id = AKIA2\n", 3, "set twice"),
            ("# nothing\n", 1, "no keys"),
            ("[a]\naws_access_key_id = AKIA1\naws_secret_access_key = has space\naccount_id = 111111111111\n", 3, "printable"),
        ];
        for (text, line, needle) in cases {
            let e = Keys::parse(text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(!e.to_string().contains("topsecret") && !e.to_string().contains("has space"));
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let k = Keys::parse(GOOD).unwrap();
        let printed = format!("{k:?}");
        assert!(printed.contains("AKIAALICE") && !printed.contains("s3cr3t"));
    }
}
