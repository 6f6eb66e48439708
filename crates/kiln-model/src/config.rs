//! The configuration of one function version, as kiln stores and runs it.

use crate::error::ModelError;
use crate::limits::*;
use crate::names::FunctionName;
use std::collections::BTreeMap;

/// Every `Runtime` value Lambda's API accepts (botocore's `lambda` service model), in its order.
pub const RUNTIMES: &[&str] = &[
    "nodejs",
    "nodejs4.3",
    "nodejs6.10",
    "nodejs8.10",
    "nodejs10.x",
    "nodejs12.x",
    "nodejs14.x",
    "nodejs16.x",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "java8",
    "java8.al2",
    "java11",
    "java17",
    "java21",
    "java25",
    "python2.7",
    "python3.6",
    "python3.7",
    "python3.8",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "dotnetcore1.0",
    "dotnetcore2.0",
    "dotnetcore2.1",
    "dotnetcore3.1",
    "dotnet6",
    "dotnet8",
    "dotnet10",
    "nodejs4.3-edge",
    "go1.x",
    "ruby2.5",
    "ruby2.7",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "ruby4.0",
    "provided",
    "provided.al2",
    "provided.al2023",
    "nodejs26.x",
    "python3.15",
    "java8.al2023",
    "java11.al2023",
    "java17.al2023",
    "custom",
];

/// A function's `Runtime`: one of [`RUNTIMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Runtime(&'static str);

/// What a runtime needs from the host to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `provided*`: the function brings its own `bootstrap`.
    Provided,
    /// `python3.X` (and `python2.7`): kiln's Python runtime client on a host interpreter.
    Python { major: u32, minor: u32 },
    /// `nodejsN.x` (and the old `nodejs`, `nodejs4.3`, …): kiln's Node.js runtime client.
    Node { major: u32 },
    /// A language kiln has no runtime client for (Java, .NET, Ruby, Go, `custom`): its name.
    Other(&'static str),
}

impl Runtime {
    pub const PROVIDED_AL2023: Runtime = Runtime("provided.al2023");

    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match RUNTIMES.iter().find(|r| **r == s) {
            Some(r) => Ok(Runtime(r)),
            None => Err(ModelError::InvalidParameterValue(format!(
                "Value {s} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [{}] or be a valid ARN",
                RUNTIMES.join(", ")
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The language family and version this runtime asks for.
    pub fn language(self) -> Language {
        let s = self.0;
        if s.starts_with("provided") {
            Language::Provided
        } else if let Some(v) = s.strip_prefix("python") {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            Language::Python { major: parts.next().unwrap_or(3), minor: parts.next().unwrap_or(0) }
        } else if let Some(v) = s.strip_prefix("nodejs") {
            // `nodejs` alone was Node 0.10; `nodejs4.3-edge` is Node 4.
            let major = v.split(['.', '-']).next().and_then(|m| m.parse().ok()).unwrap_or(0);
            Language::Node { major }
        } else if s.starts_with("java") {
            Language::Other("Java")
        } else if s.starts_with("dotnet") {
            Language::Other(".NET")
        } else if s.starts_with("ruby") {
            Language::Other("Ruby")
        } else if s.starts_with("go") {
            Language::Other("Go")
        } else {
            Language::Other("custom")
        }
    }

    /// Whether the function's own `bootstrap` (not a kiln runtime client) starts it.
    pub fn is_custom(self) -> bool {
        self.language() == Language::Provided
    }
}

impl serde::Serialize for Runtime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Runtime::parse(&s).map_err(serde::de::Error::custom)
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
    /// `$LATEST` or a published version number (stored and shown as that string).
    pub version: crate::Version,
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
    /// `LoggingConfig.ApplicationLogLevel` / `SystemLogLevel` as given; they act (and show)
    /// only with `LogFormat` `JSON`, where an unset level means `INFO`.
    #[serde(default)]
    pub application_log_level: Option<String>,
    #[serde(default)]
    pub system_log_level: Option<String>,
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
    /// On `$LATEST`: whether UpdateFunctionCode or UpdateFunctionConfiguration ran since the last
    /// PublishVersion. Lambda publishes a new version after any such update, even one that
    /// changed nothing, and otherwise returns the last version. Older records lack the field and
    /// read as changed, so their next publish makes a version.
    #[serde(default = "changed_by_default")]
    pub changed_since_publish: bool,
    /// The function's layers, in order: what `Layers` shows and what `/opt` is built from.
    #[serde(default)]
    pub layers: Vec<crate::layers::FunctionLayer>,
    /// Sum of the sizes of the unpacked code, for the 250 MB rule of code plus layers.
    #[serde(default)]
    pub unzipped_size: u64,
}

fn changed_by_default() -> bool {
    true
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

/// Checks `LoggingConfig`'s `LogFormat`, `ApplicationLogLevel` and `SystemLogLevel` values.
pub fn validate_logging(format: Option<&str>, app: Option<&str>, system: Option<&str>) -> Result<(), ModelError> {
    let check = |field: &str, v: Option<&str>, allowed: &[&str]| {
        match v {
        Some(v) if !allowed.contains(&v) => Err(ModelError::Validation(format!(
            "1 validation error detected: Value '{v}' at 'loggingConfig.{field}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
    };
    check("logFormat", format, &["JSON", "Text"])?;
    check("applicationLogLevel", app, &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"])?;
    check("systemLogLevel", system, &["DEBUG", "INFO", "WARN"])
}

/// Checks `MemorySize` against Lambda's range.
pub fn validate_memory(mb: i64) -> Result<u32, ModelError> {
    range("MemorySize", mb, i64::from(MEMORY_MIN_MB), i64::from(MEMORY_MAX_MB))
}

/// Checks `Timeout` against Lambda's range.
pub fn validate_timeout(secs: i64) -> Result<u32, ModelError> {
    range("Timeout", secs, i64::from(TIMEOUT_MIN_SECS), i64::from(TIMEOUT_MAX_SECS))
}

/// Checks `EphemeralStorage.Size` against Lambda's range.
pub fn validate_ephemeral(mb: i64) -> Result<u32, ModelError> {
    range("EphemeralStorage.Size", mb, i64::from(EPHEMERAL_MIN_MB), i64::from(EPHEMERAL_MAX_MB))
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
    fn every_botocore_runtime_parses_and_knows_its_language() {
        for r in RUNTIMES {
            let rt = Runtime::parse(r).unwrap();
            assert_eq!(rt.as_str(), *r);
            let back: Runtime = serde_json::from_str(&serde_json::to_string(&rt).unwrap()).unwrap();
            assert_eq!(back, rt);
        }
        assert_eq!(Runtime::parse("python3.12").unwrap().language(), Language::Python { major: 3, minor: 12 });
        assert_eq!(Runtime::parse("nodejs20.x").unwrap().language(), Language::Node { major: 20 });
        assert_eq!(Runtime::parse("nodejs4.3-edge").unwrap().language(), Language::Node { major: 4 });
        assert_eq!(Runtime::parse("java21").unwrap().language(), Language::Other("Java"));
        assert!(Runtime::parse("provided.al2").unwrap().is_custom());
        assert!(Runtime::parse("cobol").is_err());
    }

    #[test]
    fn a_record_without_the_publish_flag_reads_as_changed() {
        let mut v: serde_json::Value = serde_json::to_value(FunctionConfig {
            name: FunctionName::parse("f").unwrap(),
            version: crate::Version::Latest,
            runtime: Runtime::parse("provided.al2023").unwrap(),
            role: "arn:aws:iam::123456789012:role/lambda".into(),
            handler: None,
            description: String::new(),
            timeout_secs: 3,
            memory_mb: 128,
            ephemeral_storage_mb: 512,
            environment: None,
            architectures: vec!["x86_64".into()],
            code_sha256: String::new(),
            code_size: 0,
            last_modified_ms: 0,
            revision_id: String::new(),
            tracing_mode: "PassThrough".into(),
            log_format: "Text".into(),
            application_log_level: None,
            system_log_level: None,
            log_group: "/aws/lambda/f".into(),
            state: FunctionState::Active,
            state_reason: None,
            last_update_status: None,
            last_update_reason: None,
            passthrough: BTreeMap::new(),
            last_published: 1,
            changed_since_publish: false,
            layers: Vec::new(),
            unzipped_size: 0,
        })
        .unwrap();
        let read = |v: &serde_json::Value| serde_json::from_value::<FunctionConfig>(v.clone()).unwrap();
        assert!(!read(&v).changed_since_publish);
        v.as_object_mut().unwrap().remove("changed_since_publish");
        assert!(read(&v).changed_since_publish);
    }

    #[test]
    fn role_must_look_like_an_iam_role() {
        assert!(validate_role("arn:aws:iam::123456789012:role/lambda").is_ok());
        assert!(validate_role("lambda").is_err());
        assert!(validate_role("arn:aws:iam::1:role/x").is_err());
    }
}
