//! Resource tags: Lambda's limits and the resources that take them.
//!
//! A tag map is checked whole before anything is stored, so a request with one bad tag
//! changes nothing. The limits are AWS's: at most 50 tags per resource, keys of 1 to 128
//! characters and values of 0 to 256, both from letters, numbers, white space and `_.:/=+-@`,
//! and keys starting with `aws:` are reserved for AWS.

use crate::error::ModelError;
use std::collections::BTreeMap;

/// Tags per resource.
pub const TAGS_MAX: usize = 50;
/// Characters of a key.
pub const KEY_MAX_CHARS: usize = 128;
/// Characters of a value.
pub const VALUE_MAX_CHARS: usize = 256;

/// The model's pattern for keys and values.
const PATTERN: &str = r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)";

/// The `TaggableResource` pattern of Lambda's service model, quoted in validation errors.
pub const TAGGABLE_RESOURCE_PATTERN: &str = r"arn:(aws[a-zA-Z-]*):lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:(function:[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?|code-signing-config:csc-[a-z0-9]{17}|event-source-mapping:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|(capacity-provider|network-connector):[a-zA-Z0-9-_]{1,64})";

fn allowed_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

/// Checks one key, as TagResource's `Tags` keys and UntagResource's `TagKeys` must be.
pub fn validate_key(key: &str, field: &str) -> Result<(), ModelError> {
    let n = key.chars().count();
    if n == 0 || n > KEY_MAX_CHARS {
        return Err(ModelError::constraint(
            key,
            field,
            "Member must have length less than or equal to 128, Member must have length greater than or equal to 1",
        ));
    }
    if !key.chars().all(allowed_char) {
        return Err(ModelError::constraint(
            key,
            field,
            &format!("Member must satisfy regular expression pattern: {PATTERN}"),
        ));
    }
    if key.len() >= 4 && key[..4].eq_ignore_ascii_case("aws:") {
        return Err(ModelError::InvalidParameterValue(format!(
            "Tag keys starting with 'aws:' are reserved for AWS use: {key}"
        )));
    }
    Ok(())
}

/// Checks a whole tag map as CreateFunction, CreateCodeSigningConfig and TagResource take it.
/// `existing` is the number of tags the resource keeps besides these (for the 50-tag limit).
pub fn validate(tags: &BTreeMap<String, String>) -> Result<(), ModelError> {
    for (k, v) in tags {
        validate_key(k, "tags")?;
        if v.chars().count() > VALUE_MAX_CHARS {
            return Err(ModelError::constraint(
                v,
                "tags",
                "Map value must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 0]",
            ));
        }
        if !v.chars().all(allowed_char) {
            return Err(ModelError::constraint(
                v,
                "tags",
                &format!(
                    "Map value must satisfy constraint: [Member must satisfy regular expression pattern: {PATTERN}]"
                ),
            ));
        }
    }
    check_count(tags.len())
}

/// The limit on the tags a resource ends up with.
pub fn check_count(n: usize) -> Result<(), ModelError> {
    if n > TAGS_MAX {
        return Err(ModelError::InvalidParameterValue("Number of tags exceeds resource tag limit.".into()));
    }
    Ok(())
}

/// What a `Resource` ARN of the tagging operations names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaggedResource {
    /// A function; `qualifier` is set when the ARN names a version or an alias.
    Function {
        region: String,
        account: String,
        name: String,
        qualifier: Option<String>,
    },
    CodeSigningConfig {
        region: String,
        account: String,
        id: String,
    },
    EventSourceMapping {
        region: String,
        account: String,
        uuid: String,
    },
    /// A kind Lambda tags that kiln does not have (capacity providers, network connectors).
    Other,
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_region(s: &str) -> bool {
    let s = s.strip_prefix("eusc-").unwrap_or(s);
    let parts: Vec<&str> = s.split('-').collect();
    let Some((cc, rest)) = parts.split_first() else { return false };
    let rest = match rest {
        ["gov", rest @ ..] => rest,
        [iso, rest @ ..] if iso.starts_with("iso") && iso.len() <= 4 && iso.bytes().all(|b| b.is_ascii_lowercase()) => {
            rest
        }
        rest => rest,
    };
    cc.len() == 2
        && cc.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() == 2
        && !rest[0].is_empty()
        && rest[0].bytes().all(|b| b.is_ascii_lowercase())
        && rest[1].len() == 1
        && rest[1].bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses a taggable resource ARN; anything the model's pattern refuses is a
/// `ValidationException` quoting that pattern, as AWS answers.
pub fn parse_resource(arn: &str) -> Result<TaggedResource, ModelError> {
    let bad = || {
        ModelError::constraint(
            arn,
            "resource",
            &format!("Member must satisfy regular expression pattern: {TAGGABLE_RESOURCE_PATTERN}"),
        )
    };
    if arn.len() > 10_000 {
        return Err(bad());
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, rest] = parts.as_slice() else { return Err(bad()) };
    let partition_ok =
        partition.strip_prefix("aws").is_some_and(|p| p.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'));
    if *scheme != "arn"
        || !partition_ok
        || *service != "lambda"
        || !is_region(region)
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let (region, account) = (region.to_string(), account.to_string());
    let segs: Vec<&str> = rest.split(':').collect();
    match segs.as_slice() {
        ["function", name] if is_word(name) => {
            Ok(TaggedResource::Function { region, account, name: name.to_string(), qualifier: None })
        }
        ["function", name, q] if is_word(name) && (*q == "$LATEST" || is_word(q)) => {
            Ok(TaggedResource::Function { region, account, name: name.to_string(), qualifier: Some(q.to_string()) })
        }
        ["code-signing-config", id]
            if id.len() == 21
                && id.starts_with("csc-")
                && id[4..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            Ok(TaggedResource::CodeSigningConfig { region, account, id: id.to_string() })
        }
        ["event-source-mapping", uuid] if is_uuid(uuid) => {
            Ok(TaggedResource::EventSourceMapping { region, account, uuid: uuid.to_string() })
        }
        ["capacity-provider" | "network-connector", n] if is_word(n) && n.len() <= 64 => Ok(TaggedResource::Other),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn limits_are_aws_limits() {
        assert!(validate(&tags(&[("team", "core"), ("empty", "")])).is_ok());
        let fifty: BTreeMap<String, String> = (0..50).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate(&fifty).is_ok());
        let many: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(matches!(validate(&many), Err(ModelError::InvalidParameterValue(_))));
        assert!(validate(&tags(&[(&"k".repeat(128), "v")])).is_ok());
        assert!(matches!(validate(&tags(&[(&"k".repeat(129), "v")])), Err(ModelError::Validation(_))));
        assert!(matches!(validate(&tags(&[("", "v")])), Err(ModelError::Validation(_))));
        assert!(validate(&tags(&[("k", &"v".repeat(256))])).is_ok());
        assert!(matches!(validate(&tags(&[("k", &"v".repeat(257))])), Err(ModelError::Validation(_))));
        assert!(matches!(validate(&tags(&[("aws:x", "v")])), Err(ModelError::InvalidParameterValue(_))));
        assert!(matches!(validate(&tags(&[("AWS:x", "v")])), Err(ModelError::InvalidParameterValue(_))));
        assert!(matches!(validate(&tags(&[("a*b", "v")])), Err(ModelError::Validation(_))));
        assert!(validate(&tags(&[("ключ é", "wert 1/2=+@")])).is_ok());
    }

    #[test]
    fn resource_arns_parse_as_the_model_pattern() {
        assert_eq!(
            parse_resource("arn:aws:lambda:us-east-1:000000000000:function:f").unwrap(),
            TaggedResource::Function {
                region: "us-east-1".into(),
                account: "000000000000".into(),
                name: "f".into(),
                qualifier: None
            }
        );
        assert!(matches!(
            parse_resource("arn:aws:lambda:us-east-1:000000000000:function:f:prod"),
            Ok(TaggedResource::Function { qualifier: Some(_), .. })
        ));
        assert!(matches!(
            parse_resource("arn:aws:lambda:us-gov-west-1:000000000000:code-signing-config:csc-0123456789abcdef0"),
            Ok(TaggedResource::CodeSigningConfig { .. })
        ));
        assert!(matches!(
            parse_resource(
                "arn:aws:lambda:eu-west-1:123456789012:event-source-mapping:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
            ),
            Ok(TaggedResource::EventSourceMapping { .. })
        ));
        for bad in [
            "f",
            "arn:aws:lambda:us-east-1:000000000000:function:",
            "arn:aws:lambda:us-east-1:0000:function:f",
            "arn:aws:s3:us-east-1:000000000000:function:f",
            "arn:aws:lambda:useast1:000000000000:function:f",
            "arn:aws:lambda:us-east-1:000000000000:layer:l",
            "arn:aws:lambda:us-east-1:000000000000:function:f:a:b",
            "arn:aws:lambda:us-east-1:000000000000:code-signing-config:csc-short",
        ] {
            assert!(matches!(parse_resource(bad), Err(ModelError::Validation(_))), "{bad}");
        }
    }
}
