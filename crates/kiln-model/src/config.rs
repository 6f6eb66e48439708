//! The configuration of one function version, as kiln stores and runs it.

use crate::error::ModelError;
use crate::limits::*;
use crate::names::FunctionName;
use std::collections::BTreeMap;

/// Runtimes kiln can run: the OS-only custom runtimes, whose `bootstrap` is the function's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Runtime {
    #[serde(rename = "provided.al2023")]
    ProvidedAl2023,
    #[serde(rename = "provided.al2")]
    ProvidedAl2,
    #[serde(rename = "provided")]
    Provided,
}

impl Runtime {
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "provided.al2023" => Ok(Self::ProvidedAl2023),
            "provided.al2" => Ok(Self::ProvidedAl2),
            "provided" => Ok(Self::Provided),
            other => Err(ModelError::InvalidParameterValue(format!(
                "The runtime parameter of {other} is not supported by kiln. Supported runtimes: provided.al2023, provided.al2, provided"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProvidedAl2023 => "provided.al2023",
            Self::ProvidedAl2 => "provided.al2",
            Self::Provided => "provided",
        }
    }
}

/// Lambda's function states (`State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FunctionState {
    Pending,
    Active,
    Failed,
}

/// Lambda's `LastUpdateStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpdateStatus {
    InProgress,
    Successful,
    Failed,
}

/// Everything that defines one version of a function.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionConfig {
    pub name: FunctionName,
    /// `$LATEST` or a published version number.
    pub version: String,
    pub runtime: Runtime,
    pub role: String,
    pub handler: Option<String>,
    pub description: String,
    pub timeout_secs: u32,
    pub memory_mb: u32,
    pub ephemeral_storage_mb: u32,
    /// `None` when the function never had an `Environment`.
    pub environment: Option<BTreeMap<String, String>>,
    pub architectures: Vec<String>,
    /// Base64 of the SHA-256 of the zip.
    pub code_sha256: String,
    pub code_size: u64,
    pub last_modified_ms: i64,
    pub revision_id: String,
    pub tracing_mode: String,
    pub log_format: String,
    pub log_group: String,
    pub state: FunctionState,
    pub state_reason: Option<String>,
    pub last_update_status: Option<UpdateStatus>,
    pub last_update_reason: Option<String>,
    /// Accepted fields kiln stores and echoes but does not act on (VpcConfig, …),
    /// keyed by their wire name.
    #[serde(default)]
    pub passthrough: BTreeMap<String, serde_json::Value>,
    /// On `$LATEST`: the highest version number ever published (numbers are never reused).
    #[serde(default)]
    pub last_published: u64,
    /// The function's layers, in order: what `Layers` shows and what `/opt` is built from.
    #[serde(default)]
    pub layers: Vec<crate::layers::FunctionLayer>,
    /// Sum of the sizes of the unpacked code, for the 250 MB rule of code plus layers.
    #[serde(default)]
    pub unzipped_size: u64,
}

impl FunctionConfig {
    /// Whether two versions would behave the same: same code and the same configuration.
    /// PublishVersion creates no new version when nothing changed.
    pub fn same_behaviour(&self, other: &FunctionConfig) -> bool {
        self.code_sha256 == other.code_sha256
            && self.runtime == other.runtime
            && self.handler == other.handler
            && self.timeout_secs == other.timeout_secs
            && self.memory_mb == other.memory_mb
            && self.ephemeral_storage_mb == other.ephemeral_storage_mb
            && self.environment == other.environment
            && self.role == other.role
            && self.architectures == other.architectures
            && self.layers == other.layers
    }
}

/// An alias: a name for a version, optionally sending a share of calls to a second version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AliasConfig {
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// `RoutingConfig.AdditionalVersionWeights`: at most one extra version and its weight.
    pub additional_version: Option<(String, f64)>,
    pub revision_id: String,
}

/// Per-function concurrency settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConcurrencySettings {
    /// `ReservedConcurrentExecutions`.
    pub reserved: Option<u32>,
    /// Provisioned concurrency per qualifier (version number or alias name).
    pub provisioned: BTreeMap<String, ProvisionedSetting>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProvisionedSetting {
    pub requested: u32,
    pub last_modified_ms: i64,
}

/// Checks an alias name: 1–128 of `[a-zA-Z0-9-_]`, not all digits.
pub fn validate_alias_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(ModelError::constraint(
            name,
            "name",
            "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
        ));
    }
    Ok(())
}

/// Checks `MemorySize` against Lambda's range.
pub fn validate_memory(mb: i64) -> Result<u32, ModelError> {
    range("MemorySize", mb, MEMORY_MIN_MB as i64, MEMORY_MAX_MB as i64)
}

/// Checks `Timeout` against Lambda's range.
pub fn validate_timeout(secs: i64) -> Result<u32, ModelError> {
    range("Timeout", secs, TIMEOUT_MIN_SECS as i64, TIMEOUT_MAX_SECS as i64)
}

/// Checks `EphemeralStorage.Size` against Lambda's range.
pub fn validate_ephemeral(mb: i64) -> Result<u32, ModelError> {
    range("EphemeralStorage.Size", mb, EPHEMERAL_MIN_MB as i64, EPHEMERAL_MAX_MB as i64)
}

fn range(field: &str, v: i64, min: i64, max: i64) -> Result<u32, ModelError> {
    if v < min {
        Err(ModelError::Validation(format!(
            "'{field}' value failed to satisfy constraint: Member must have value greater than or equal to {min}"
        )))
    } else if v > max {
        Err(ModelError::Validation(format!(
            "'{field}' value failed to satisfy constraint: Member must have value less than or equal to {max}"
        )))
    } else {
        Ok(v as u32)
    }
}

/// Checks `Environment.Variables`: key syntax, reserved keys and the 4 KB aggregate limit.
pub fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), ModelError> {
    for key in vars.keys() {
        let mut chars = key.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && key.len() >= 2
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ModelError::constraint(
                key,
                "environment.variables",
                "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+",
            ));
        }
    }
    let reserved: Vec<&str> = vars.keys().map(String::as_str).filter(|k| crate::env::RESERVED.contains(k)).collect();
    if !reserved.is_empty() {
        return Err(ModelError::InvalidParameterValue(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(",")
        )));
    }
    let size = serde_json::to_vec(vars).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > ENV_VARS_MAX_BYTES {
        return Err(ModelError::InvalidParameterValue(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {}",
            serde_json::to_string(vars).unwrap_or_default()
        )));
    }
    Ok(())
}

/// Checks `Handler`: at most 128 characters, no whitespace.
pub fn validate_handler(h: &str) -> Result<(), ModelError> {
    if h.chars().count() > HANDLER_MAX_CHARS || h.chars().any(char::is_whitespace) {
        return Err(ModelError::constraint(h, "handler", "Member must satisfy regular expression pattern: [^\\s]+"));
    }
    Ok(())
}

/// Checks `Description`: at most 256 characters.
pub fn validate_description(d: &str) -> Result<(), ModelError> {
    if d.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(ModelError::constraint(d, "description", "Member must have length less than or equal to 256"));
    }
    Ok(())
}

/// Checks `Role`: an IAM role ARN. kiln stores it and never assumes it.
pub fn validate_role(role: &str) -> Result<(), ModelError> {
    let ok = role.strip_prefix("arn:").and_then(|r| r.split_once(":iam::")).is_some_and(|(_, rest)| {
        rest.split_once(":role/").is_some_and(|(acct, name)| {
            acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
        })
    });
    if !ok {
        return Err(ModelError::constraint(
            role,
            "role",
            "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_lambdas() {
        assert!(validate_memory(127).is_err());
        assert_eq!(validate_memory(128), Ok(128));
        assert!(validate_memory(10_241).is_err());
        assert!(validate_timeout(0).is_err());
        assert_eq!(validate_timeout(900), Ok(900));
        assert!(validate_timeout(901).is_err());
        assert!(validate_ephemeral(511).is_err());
    }

    #[test]
    fn reserved_and_malformed_env_keys_are_refused() {
        let mut vars = BTreeMap::new();
        vars.insert("AWS_REGION".to_string(), "x".to_string());
        let err = validate_environment(&vars).unwrap_err();
        assert!(matches!(err, ModelError::InvalidParameterValue(m) if m.contains("AWS_REGION")));
        let mut vars = BTreeMap::new();
        vars.insert("1BAD".to_string(), "x".to_string());
        assert!(validate_environment(&vars).is_err());
        let mut vars = BTreeMap::new();
        vars.insert("BIG".to_string(), "x".repeat(5000));
        assert!(validate_environment(&vars).is_err());
    }

    #[test]
    fn role_must_look_like_an_iam_role() {
        assert!(validate_role("arn:aws:iam::123456789012:role/lambda").is_ok());
        assert!(validate_role("lambda").is_err());
        assert!(validate_role("arn:aws:iam::1:role/x").is_err());
    }
}
