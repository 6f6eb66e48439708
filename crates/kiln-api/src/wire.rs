//! Wire strings and shapes of the Lambda REST API (docs/lambda-api.md).

use base64::Engine as _;
use kiln_model::config::UpdateStatus;
use kiln_model::{FunctionConfig, FunctionState, Partition};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const REQUEST_ID: &str = "x-amzn-requestid";
pub const ERROR_TYPE: &str = "x-amzn-errortype";
/// The SigV4 service names kiln's endpoints answer to (the credential scope's fourth part).
pub const SERVICE_LAMBDA: &str = "lambda";
pub const SERVICE_LOGS: &str = "logs";
pub const INVOCATION_TYPE: &str = "x-amz-invocation-type";
pub const LOG_TYPE: &str = "x-amz-log-type";
pub const CLIENT_CONTEXT: &str = "x-amz-client-context";
pub const EXECUTED_VERSION: &str = "x-amz-executed-version";
pub const FUNCTION_ERROR: &str = "x-amz-function-error";
pub const LOG_RESULT: &str = "x-amz-log-result";

/// InvokeWithResponseStream's answer: AWS's event stream encoding and its two events.
pub const EVENTSTREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";
pub const EVENT_PAYLOAD_CHUNK: &str = "PayloadChunk";
pub const EVENT_INVOKE_COMPLETE: &str = "InvokeComplete";

/// `Code` of CreateFunction and the body of UpdateFunctionCode share these members.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentIn {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SizeIn {
    pub size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModeIn {
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingIn {
    pub log_format: Option<String>,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
}

/// Members both CreateFunction and UpdateFunctionConfiguration take.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigIn {
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<EnvironmentIn>,
    pub ephemeral_storage: Option<SizeIn>,
    pub tracing_config: Option<ModeIn>,
    pub logging_config: Option<LoggingIn>,
    pub revision_id: Option<String>,
    pub package_type: Option<String>,
    /// Accepted and echoed, not acted on (except `layers`).
    pub vpc_config: Option<Value>,
    pub dead_letter_config: Option<Value>,
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<String>,
    pub layers: Option<Vec<String>>,
    pub file_system_configs: Option<Value>,
    pub image_config: Option<Value>,
}

impl ConfigIn {
    /// The members kiln stores as they came, keyed by wire name.
    pub fn passthrough(&mut self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        if let Some(v) = self.vpc_config.take() {
            out.insert("VpcConfig".into(), v);
        }
        if let Some(v) = self.dead_letter_config.take() {
            out.insert("DeadLetterConfig".into(), v);
        }
        if let Some(v) = self.kms_key_arn.take() {
            out.insert("KMSKeyArn".into(), Value::String(v));
        }
        if let Some(v) = self.file_system_configs.take() {
            out.insert("FileSystemConfigs".into(), v);
        }
        if let Some(v) = self.image_config.take() {
            out.insert("ImageConfigResponse".into(), json!({ "ImageConfig": v }));
        }
        out
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionIn {
    pub function_name: Option<String>,
    pub code: Option<CodeIn>,
    pub architectures: Option<Vec<String>>,
    pub publish: Option<bool>,
    pub tags: Option<BTreeMap<String, String>>,
    pub code_signing_config_arn: Option<String>,
    #[serde(flatten)]
    pub config: ConfigIn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCodeIn {
    #[serde(flatten)]
    pub code: CodeIn,
    pub architectures: Option<Vec<String>>,
    pub revision_id: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
}

/// `2020-04-10T19:06:32.563+0000`.
pub fn timestamp(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000");
    t.format(&f).unwrap_or_default()
}

/// `FunctionConfiguration`. `listing` drops the members ListFunctions leaves out.
pub fn function_configuration(c: &FunctionConfig, p: &Partition, listing: bool) -> Value {
    let qualifier = c.version.number().map(|n| n.to_string());
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("FunctionName", json!(c.name.as_str()));
    put("FunctionArn", json!(p.function_arn(c.name.as_str(), qualifier.as_deref())));
    put("Runtime", json!(c.runtime.as_str()));
    put("Role", json!(c.role));
    if let Some(h) = &c.handler {
        put("Handler", json!(h));
    }
    put("CodeSize", json!(c.code_size));
    put("Description", json!(c.description));
    put("Timeout", json!(c.timeout_secs));
    put("MemorySize", json!(c.memory_mb));
    put("LastModified", json!(timestamp(c.last_modified_ms)));
    put("CodeSha256", json!(c.code_sha256));
    put("Version", json!(c.version));
    if let Some(vars) = &c.environment {
        put("Environment", json!({ "Variables": vars }));
    }
    put("TracingConfig", json!({ "Mode": c.tracing_mode }));
    put("RevisionId", json!(c.revision_id));
    put("PackageType", json!("Zip"));
    put("Architectures", json!(c.architectures));
    put("EphemeralStorage", json!({ "Size": c.ephemeral_storage_mb }));
    put("SnapStart", json!({ "ApplyOn": "None", "OptimizationStatus": "Off" }));
    if c.log_format == "JSON" {
        put(
            "LoggingConfig",
            json!({
                "LogFormat": c.log_format,
                "ApplicationLogLevel": c.application_log_level.as_deref().unwrap_or("INFO"),
                "SystemLogLevel": c.system_log_level.as_deref().unwrap_or("INFO"),
                "LogGroup": c.log_group,
            }),
        );
    } else {
        put("LoggingConfig", json!({ "LogFormat": c.log_format, "LogGroup": c.log_group }));
    }
    if !listing {
        let (state, code) = match c.state {
            FunctionState::Pending => ("Pending", Some("Creating")),
            FunctionState::Active => ("Active", None),
            FunctionState::Failed => ("Failed", Some("InvalidZipFileException")),
        };
        put("State", json!(state));
        if let Some(r) = &c.state_reason {
            put("StateReason", json!(r));
        }
        if let Some(code) = code {
            put("StateReasonCode", json!(code));
        }
        if let Some(s) = c.last_update_status {
            let (s, code) = match s {
                UpdateStatus::InProgress => ("InProgress", Some("Creating")),
                UpdateStatus::Successful => ("Successful", None),
                UpdateStatus::Failed => ("Failed", Some("InvalidZipFileException")),
            };
            put("LastUpdateStatus", json!(s));
            if let Some(r) = &c.last_update_reason {
                put("LastUpdateStatusReason", json!(r));
            }
            if let Some(code) = code {
                put("LastUpdateStatusReasonCode", json!(code));
            }
        }
    }
    for (k, v) in &c.passthrough {
        m.insert(k.clone(), v.clone());
    }
    if !c.layers.is_empty() {
        let layers: Vec<Value> = c.layers.iter().map(|l| json!({ "Arn": l.arn, "CodeSize": l.code_size })).collect();
        m.insert("Layers".into(), Value::Array(layers));
    }
    Value::Object(m)
}

/// `2019-11-21T19:32:12+0000`, the form provisioned concurrency configs use.
pub fn timestamp_seconds(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+0000");
    t.format(&f).unwrap_or_default()
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(data: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(data.trim()).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_have_millis_and_offset() {
        assert_eq!(super::timestamp(1_586_545_592_563), "2020-04-10T19:06:32.563+0000");
    }
}
