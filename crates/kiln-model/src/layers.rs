//! Lambda layers: names, version ARNs, the stored shape of a layer version, and the rules a
//! function's `Layers` list must follow.

use crate::error::ModelError;
use crate::Partition;

/// Layers one function may use.
pub const MAX_LAYERS_PER_FUNCTION: usize = 5;
/// Longest layer name.
pub const LAYER_NAME_MAX: usize = 140;
/// `CompatibleRuntimes` holds at most this many.
pub const COMPATIBLE_RUNTIMES_MAX: usize = 15;
/// `LicenseInfo` is at most this long.
pub const LICENSE_INFO_MAX: usize = 512;

const LAYER_NAME_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:layer:[a-zA-Z0-9-_]{1,140}|[a-zA-Z0-9-_]{1,140})";
const LAYER_VERSION_ARN_PATTERN: &str = "(arn:[a-zA-Z0-9-]+:lambda:[a-z]{2}((-gov)|(-iso(b?)))?-[a-z]+-\\d{1}:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)";

/// Runtimes `CompatibleRuntimes` and the `CompatibleRuntime` filter accept: the API model's one
/// `Runtime` enum, the same list functions take.
pub const RUNTIME_VALUES: &[&str] = crate::config::RUNTIMES;

/// Architectures a layer may declare.
pub const ARCHITECTURE_VALUES: &[&str] = &["x86_64", "arm64"];

/// A layer's resource policy: statements granting `lambda:GetLayerVersion`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerPolicy {
    pub revision_id: String,
    pub statements: Vec<LayerStatement>,
}

/// One statement of a layer version's policy, as given to AddLayerVersionPermission.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerStatement {
    pub sid: String,
    pub action: String,
    pub principal: String,
    pub organization_id: Option<String>,
}

/// One published layer version, as kiln stores it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerVersion {
    pub name: String,
    pub version: u64,
    pub description: String,
    pub license_info: Option<String>,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    /// Base64 of the SHA-256 of the zip (`Content.CodeSha256`).
    pub code_sha256: String,
    /// Size of the zip (`Content.CodeSize`).
    pub code_size: u64,
    /// Sum of the sizes of the unpacked files, for the 250 MB rule.
    pub unzipped_size: u64,
    pub created_ms: i64,
    #[serde(default)]
    pub policy: Option<LayerPolicy>,
}

/// A layer as a function configuration holds it: what `Layers` shows, and what `/opt` is built from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FunctionLayer {
    /// The layer version ARN as the function named it.
    pub arn: String,
    pub code_size: u64,
    pub code_sha256: String,
    pub unzipped_size: u64,
}

/// A parsed layer version ARN: `arn:<partition>:lambda:<region>:<account>:layer:<name>:<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerVersionArn {
    pub region: String,
    pub account_id: String,
    pub name: String,
    pub version: u64,
}

impl LayerVersionArn {
    /// Parses a layer version ARN; `None` when it does not have that form.
    pub fn parse(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.split(':').collect();
        let ["arn", partition, "lambda", region, account, "layer", name, version] = parts.as_slice() else {
            return None;
        };
        let ok = partition.starts_with("aws")
            && is_region(region)
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && valid_name(name)
            && !version.is_empty()
            && version.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return None;
        }
        Some(Self {
            region: region.to_string(),
            account_id: account.to_string(),
            name: name.to_string(),
            version: version.parse().ok()?,
        })
    }
}

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts.last().is_some_and(|d| d.len() == 1 && d.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= LAYER_NAME_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Partition {
    /// `arn:aws:lambda:<region>:<account>:layer:<name>`.
    pub fn layer_arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:layer:{}", self.region, self.account_id, name)
    }

    /// `arn:aws:lambda:<region>:<account>:layer:<name>:<version>`.
    pub fn layer_version_arn(&self, name: &str, version: u64) -> String {
        format!("{}:{version}", self.layer_arn(name))
    }

    /// The layer name in a `LayerName` path member, which may be a name or a layer ARN of this
    /// region and account.
    pub fn layer_name<'a>(&self, name_or_arn: &'a str) -> Result<&'a str, ModelError> {
        let bad = || {
            ModelError::constraint(
                name_or_arn,
                "layerName",
                &format!("Member must satisfy regular expression pattern: {LAYER_NAME_PATTERN}"),
            )
        };
        if let Some(rest) = name_or_arn.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.split(':').collect();
            return match parts.as_slice() {
                [partition, "lambda", region, account, "layer", name]
                    if partition.starts_with("aws") && is_region(region) && account.len() == 12 && valid_name(name) =>
                {
                    Ok(&name_or_arn[name_or_arn.len() - name.len()..])
                }
                _ => Err(bad()),
            };
        }
        if valid_name(name_or_arn) {
            Ok(name_or_arn)
        } else {
            Err(bad())
        }
    }
}

/// Checks the form of a `Layers` list: at most five, each a layer version ARN.
pub fn validate_layer_list(arns: &[String]) -> Result<Vec<LayerVersionArn>, ModelError> {
    if arns.len() > MAX_LAYERS_PER_FUNCTION {
        return Err(ModelError::InvalidParameterValue("Cannot reference more than 5 layers.".into()));
    }
    let mut out = Vec::with_capacity(arns.len());
    for arn in arns {
        let parsed = LayerVersionArn::parse(arn).ok_or_else(|| {
            ModelError::Validation(format!(
                "1 validation error detected: Value '[{arn}]' at 'layers' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 140, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}, Member must not be null]"
            ))
        })?;
        out.push(parsed);
    }
    // Two versions of one layer (or one version twice) cannot be used together.
    for i in 0..out.len() {
        for j in 0..i {
            let (a, b) = (&out[j], &out[i]);
            if a.name == b.name && a.account_id == b.account_id && a.region == b.region {
                return Err(ModelError::InvalidParameterValue(format!(
                    "Two different versions of the same layer are not allowed to be referenced in the same function. {} and {} are versions of the same layer.",
                    arns[j], arns[i]
                )));
            }
        }
    }
    Ok(out)
}

/// Checks PublishLayerVersion's optional members.
pub fn validate_publish(
    description: &str,
    license_info: Option<&str>,
    runtimes: &[String],
    architectures: &[String],
) -> Result<(), ModelError> {
    crate::config::validate_description(description)?;
    if license_info.is_some_and(|l| l.chars().count() > LICENSE_INFO_MAX) {
        return Err(ModelError::constraint(
            license_info.unwrap_or_default(),
            "licenseInfo",
            "Member must have length less than or equal to 512",
        ));
    }
    let mut errors = Vec::new();
    if runtimes.len() > COMPATIBLE_RUNTIMES_MAX {
        errors.push(format!(
            "Value '[{}]' at 'compatibleRuntimes' failed to satisfy constraint: Member must have length less than or equal to 15",
            runtimes.join(", ")
        ));
    } else if runtimes.iter().any(|r| !RUNTIME_VALUES.contains(&r.as_str())) {
        errors.push(format!(
            "Value '[{}]' at 'compatibleRuntimes' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
            runtimes.join(", "),
            RUNTIME_VALUES.join(", ")
        ));
    }
    if architectures.len() > 2 {
        errors.push(format!(
            "Value '[{}]' at 'compatibleArchitectures' failed to satisfy constraint: Member must have length less than or equal to 2",
            architectures.join(", ")
        ));
    } else if architectures.iter().any(|a| !ARCHITECTURE_VALUES.contains(&a.as_str())) {
        errors.push(format!(
            "Value '[{}]' at 'compatibleArchitectures' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]",
            architectures.join(", ")
        ));
    }
    if !errors.is_empty() {
        let n = errors.len();
        return Err(ModelError::Validation(format!(
            "{n} validation error{} detected: {}",
            if n > 1 { "s" } else { "" },
            errors.join("; ")
        )));
    }
    Ok(())
}

/// Checks the `CompatibleRuntime` and `CompatibleArchitecture` filters of the listings.
pub fn validate_filters(runtime: Option<&str>, architecture: Option<&str>) -> Result<(), ModelError> {
    if let Some(r) = runtime.filter(|r| !RUNTIME_VALUES.contains(r)) {
        return Err(ModelError::constraint(
            r,
            "compatibleRuntime",
            &format!("Member must satisfy enum value set: [{}]", RUNTIME_VALUES.join(", ")),
        ));
    }
    if let Some(a) = architecture.filter(|a| !ARCHITECTURE_VALUES.contains(a)) {
        return Err(ModelError::constraint(
            a,
            "compatibleArchitecture",
            "Member must satisfy enum value set: [x86_64, arm64]",
        ));
    }
    Ok(())
}

/// Checks AddLayerVersionPermission's members.
pub fn validate_statement(s: &LayerStatement) -> Result<(), ModelError> {
    let sid_ok = !s.sid.is_empty()
        && s.sid.len() <= 100
        && s.sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !sid_ok {
        return Err(ModelError::constraint(
            &s.sid,
            "statementId",
            "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
        ));
    }
    if s.action != "lambda:GetLayerVersion" {
        return Err(ModelError::constraint(
            &s.action,
            "action",
            "Member must satisfy regular expression pattern: lambda:GetLayerVersion",
        ));
    }
    let digits12 = |x: &str| x.len() == 12 && x.bytes().all(|b| b.is_ascii_digit());
    let principal_ok = s.principal == "*"
        || digits12(&s.principal)
        || s.principal
            .strip_prefix("arn:")
            .and_then(|r| r.split_once(":iam::"))
            .is_some_and(|(p, rest)| p.starts_with("aws") && rest.strip_suffix(":root").is_some_and(digits12));
    if !principal_ok {
        return Err(ModelError::constraint(
            &s.principal,
            "principal",
            "Member must satisfy regular expression pattern: \\d{12}|\\*|arn:(aws[a-zA-Z-]*):iam::\\d{12}:root",
        ));
    }
    if let Some(org) = &s.organization_id {
        let ok = org.strip_prefix("o-").is_some_and(|r| {
            (10..=32).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !ok {
            return Err(ModelError::constraint(
                org,
                "organizationId",
                "Member must satisfy regular expression pattern: o-[a-z0-9]{10,32}",
            ));
        }
    }
    Ok(())
}

impl LayerStatement {
    /// The statement as AWS writes it into the policy document.
    pub fn to_json(&self, resource: &str) -> serde_json::Value {
        let principal = if self.principal == "*" {
            serde_json::json!("*")
        } else if self.principal.len() == 12 {
            serde_json::json!({ "AWS": format!("arn:aws:iam::{}:root", self.principal) })
        } else {
            serde_json::json!({ "AWS": self.principal })
        };
        let mut v = serde_json::json!({
            "Sid": self.sid,
            "Effect": "Allow",
            "Principal": principal,
            "Action": self.action,
            "Resource": resource,
        });
        if let Some(org) = &self.organization_id {
            v["Condition"] = serde_json::json!({ "StringEquals": { "aws:PrincipalOrgID": org } });
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layer_version_arns() {
        let a = LayerVersionArn::parse("arn:aws:lambda:us-east-1:123456789012:layer:my-layer:3").unwrap();
        assert_eq!((a.name.as_str(), a.version, a.account_id.as_str()), ("my-layer", 3, "123456789012"));
        for bad in [
            "arn:aws:lambda:us-east-1:123456789012:layer:my-layer",
            "arn:aws:lambda:us-east-1:1234:layer:x:1",
            "arn:aws:lambda:us-east-1:123456789012:function:x:1",
            "arn:aws:lambda:us-east-1:123456789012:layer:a b:1",
            "my-layer:1",
        ] {
            assert!(LayerVersionArn::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn layer_lists_follow_lambdas_rules() {
        let arn = |n: &str, v: u64| format!("arn:aws:lambda:us-east-1:000000000000:layer:{n}:{v}");
        let six: Vec<String> = (0..6).map(|i| arn(&format!("l{i}"), 1)).collect();
        assert!(
            matches!(validate_layer_list(&six), Err(ModelError::InvalidParameterValue(m)) if m == "Cannot reference more than 5 layers.")
        );
        let dup = vec![arn("a", 1), arn("b", 1), arn("a", 2)];
        let err = validate_layer_list(&dup).unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidParameterValue(m) if m.contains(&arn("a", 1)) && m.contains(&arn("a", 2)))
        );
        assert!(matches!(validate_layer_list(&["nope".into()]), Err(ModelError::Validation(_))));
        assert_eq!(validate_layer_list(&[arn("a", 1), arn("b", 2)]).unwrap().len(), 2);
    }

    #[test]
    fn layer_names_may_be_arns() {
        let p = Partition::default();
        assert_eq!(p.layer_name("abc").unwrap(), "abc");
        assert_eq!(p.layer_name("arn:aws:lambda:us-east-1:000000000000:layer:abc").unwrap(), "abc");
        assert!(p.layer_name("a/b").is_err());
        assert!(p.layer_name(&"x".repeat(141)).is_err());
    }

    #[test]
    fn statements_render_as_aws_does() {
        let s = LayerStatement {
            sid: "xaccount".into(),
            action: "lambda:GetLayerVersion".into(),
            principal: "210987654321".into(),
            organization_id: None,
        };
        validate_statement(&s).unwrap();
        let v = s.to_json("arn:aws:lambda:us-east-1:000000000000:layer:l:1");
        assert_eq!(v["Principal"]["AWS"], "arn:aws:iam::210987654321:root");
        let bad = LayerStatement { action: "lambda:InvokeFunction".into(), ..s };
        assert!(validate_statement(&bad).is_err());
    }
}
