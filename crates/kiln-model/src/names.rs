//! Function names, qualifiers and the ways a caller may refer to a function.
//!
//! `FunctionName` on the wire may be a plain name (`my-fn`), a partial ARN
//! (`123456789012:function:my-fn`) or a full ARN, each optionally followed by `:qualifier`.
//! [`FunctionRef::parse`] accepts all of them and yields a validated name and qualifier.

use crate::error::ModelError;
use std::fmt;

/// The pattern AWS names when a function name is refused.
const NAME_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?";
const NAME_MAX: usize = 64;
const QUALIFIER_MAX: usize = 128;

/// A validated function name: 1–64 of `[a-zA-Z0-9-_]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

impl FunctionName {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        if is_word(name) && name.len() <= NAME_MAX {
            Ok(Self(name.to_string()))
        } else {
            Err(bad_name(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FunctionName {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, ModelError> {
        Self::parse(&s)
    }
}

impl From<FunctionName> for String {
    fn from(n: FunctionName) -> String {
        n.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which version of a function a call is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    /// `$LATEST`, the unpublished version that updates change.
    Latest,
    /// A published version number.
    Version(u64),
    /// An alias name (never all digits).
    Alias(String),
}

impl Qualifier {
    pub const LATEST: &'static str = "$LATEST";

    pub fn parse(q: &str) -> Result<Self, ModelError> {
        if q == Self::LATEST {
            return Ok(Self::Latest);
        }
        if q.is_empty() || q.len() > QUALIFIER_MAX || !is_word(q) {
            return Err(ModelError::constraint(
                q,
                "qualifier",
                "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)",
            ));
        }
        if q.bytes().all(|b| b.is_ascii_digit()) {
            return q
                .parse::<u64>()
                .map(Self::Version)
                .map_err(|_| ModelError::InvalidParameterValue(format!("Invalid version: {q}")));
        }
        Ok(Self::Alias(q.to_string()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str(Self::LATEST),
            Self::Version(n) => write!(f, "{n}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// A function as a caller named it: its name and, if given, a qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: FunctionName,
    pub qualifier: Option<Qualifier>,
}

impl FunctionRef {
    /// Parses a `FunctionName` path label, combining it with a `?Qualifier=` query value.
    /// A qualifier both in the name and in the query must agree, as AWS requires.
    pub fn parse(input: &str, query_qualifier: Option<&str>) -> Result<Self, ModelError> {
        let parts: Vec<&str> = input.split(':').collect();
        let (name, suffix) = match parts.as_slice() {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            [account, "function", name] if is_account(account) => (*name, None),
            [account, "function", name, q] if is_account(account) => (*name, Some(*q)),
            ["arn", partition, "lambda", region, account, "function", name, rest @ ..]
                if partition.starts_with("aws") && is_region(region) && is_account(account) && rest.len() <= 1 =>
            {
                (*name, rest.first().copied())
            }
            _ => return Err(bad_name(input)),
        };
        if input.len() > 170 {
            return Err(bad_name(input));
        }
        let name = FunctionName::parse(name).map_err(|_| bad_name(input))?;
        let from_name = suffix.map(Qualifier::parse).transpose()?;
        let from_query = query_qualifier.filter(|q| !q.is_empty()).map(Qualifier::parse).transpose()?;
        let qualifier = match (from_name, from_query) {
            (Some(a), Some(b)) if a != b => {
                return Err(ModelError::InvalidParameterValue(format!(
                    "The derived qualifier from the function name does not match the specified qualifier. Derived qualifier: {a}, specified qualifier: {b}"
                )))
            }
            (a, b) => a.or(b),
        };
        Ok(Self { name, qualifier })
    }
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    // `[a-z]{2}(-gov)?-[a-z]+-\d`
    let parts: Vec<&str> = s.split('-').collect();
    let Some((cc, rest)) = parts.split_first() else {
        return false;
    };
    let rest = match rest {
        ["gov", rest @ ..] => rest,
        rest => rest,
    };
    cc.len() == 2
        && cc.bytes().all(|b| b.is_ascii_lowercase())
        && matches!(rest, [area, n] if !area.is_empty() && area.bytes().all(|b| b.is_ascii_lowercase()) && n.len() == 1 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn bad_name(value: &str) -> ModelError {
    ModelError::constraint(
        value,
        "functionName",
        &format!("Member must satisfy regular expression pattern: {NAME_PATTERN}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_form() {
        let cases = [
            ("my-fn", None),
            ("my-fn:3", Some(Qualifier::Version(3))),
            ("123456789012:function:my-fn", None),
            ("123456789012:function:my-fn:prod", Some(Qualifier::Alias("prod".into()))),
            ("arn:aws:lambda:us-east-1:123456789012:function:my-fn", None),
            ("arn:aws:lambda:us-gov-west-1:123456789012:function:my-fn:$LATEST", Some(Qualifier::Latest)),
        ];
        for (input, q) in cases {
            let r = FunctionRef::parse(input, None).unwrap();
            assert_eq!(r.name.as_str(), "my-fn", "{input}");
            assert_eq!(r.qualifier, q, "{input}");
        }
    }

    #[test]
    fn refuses_malformed_names() {
        for bad in ["", "a b", "x/y", "arn:aws:lambda:us-east-1:1:function:f", "a:b:c", &"a".repeat(65), "f:", "f:a b"]
        {
            assert!(FunctionRef::parse(bad, None).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn qualifier_in_name_and_query_must_agree() {
        assert!(FunctionRef::parse("f:1", Some("2")).is_err());
        assert_eq!(FunctionRef::parse("f:1", Some("1")).unwrap().qualifier, Some(Qualifier::Version(1)));
        assert!(FunctionRef::parse("f", Some("%24LATEST")).is_err());
        assert_eq!(FunctionRef::parse("f", Some("$LATEST")).unwrap().qualifier, Some(Qualifier::Latest));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}", q in proptest::option::of(".{0,20}")) {
            let _ = FunctionRef::parse(&s, q.as_deref());
        }
    }
}
