//! Asynchronous invocation settings: the event invoke config of a function or qualifier, and
//! the kinds of destination it may name.

use crate::error::ModelError;

/// `MaximumRetryAttempts` when nothing is configured.
pub const RETRIES_DEFAULT: u32 = 2;
pub const RETRIES_MAX: u32 = 2;
/// `MaximumEventAgeInSeconds`: 60 s to 6 h, 6 h when nothing is configured.
pub const EVENT_AGE_MIN_SECS: u32 = 60;
pub const EVENT_AGE_MAX_SECS: u32 = 21_600;
pub const EVENT_AGE_DEFAULT_SECS: u32 = 21_600;
/// A chain of destination records (A's record to B, B's to C, …) stops after this many hops,
/// as Lambda's recursive loop detection stops a chain after about 16 invocations.
pub const DESTINATION_DEPTH_MAX: u32 = 16;

/// One qualifier's event invoke config. Unset members take Lambda's defaults at delivery.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventInvokeConfig {
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age_secs: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

impl EventInvokeConfig {
    pub fn retries(&self) -> u32 {
        self.maximum_retry_attempts.unwrap_or(RETRIES_DEFAULT)
    }

    pub fn max_age_secs(&self) -> u32 {
        self.maximum_event_age_secs.unwrap_or(EVENT_AGE_DEFAULT_SECS)
    }
}

/// What a destination ARN points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A function (`name`, optional qualifier) of the account and region the ARN names.
    Function { region: String, account: String, name: String, qualifier: Option<String> },
    /// SQS, SNS, EventBridge or S3: accepted and stored; kiln runs none of them.
    Foreign(String),
}

/// Checks `MaximumRetryAttempts`.
pub fn validate_retries(n: i64) -> Result<u32, ModelError> {
    if (0..=i64::from(RETRIES_MAX)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(ModelError::InvalidParameterValue(format!(
            "1 validation error detected: Value '{n}' at 'maximumRetryAttempts' failed to satisfy constraint: Member must have value {}",
            if n < 0 { "greater than or equal to 0" } else { "less than or equal to 2" }
        )))
    }
}

/// Checks `MaximumEventAgeInSeconds`.
pub fn validate_age(n: i64) -> Result<u32, ModelError> {
    if (i64::from(EVENT_AGE_MIN_SECS)..=i64::from(EVENT_AGE_MAX_SECS)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(ModelError::InvalidParameterValue(format!(
            "1 validation error detected: Value '{n}' at 'maximumEventAgeInSeconds' failed to satisfy constraint: Member must have value {}",
            if n < i64::from(EVENT_AGE_MIN_SECS) { "greater than or equal to 60" } else { "less than or equal to 21600" }
        )))
    }
}

/// Classifies a destination ARN; `None` when it names no service a destination may be.
pub fn parse_destination(arn: &str) -> Option<Destination> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() < 6 || parts[0] != "arn" || !parts[1].starts_with("aws") {
        return None;
    }
    match parts[2] {
        "lambda" => match parts.as_slice() {
            [_, _, _, region, account, "function", name, rest @ ..] if rest.len() <= 1 && !name.is_empty() => {
                Some(Destination::Function {
                    region: (*region).to_string(),
                    account: (*account).to_string(),
                    name: (*name).to_string(),
                    qualifier: rest.first().map(|q| q.to_string()),
                })
            }
            _ => None,
        },
        "sqs" | "sns" | "events" | "s3" => Some(Destination::Foreign(arn.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_classified() {
        assert_eq!(
            parse_destination("arn:aws:lambda:us-east-1:000000000000:function:rec"),
            Some(Destination::Function {
                region: "us-east-1".into(),
                account: "000000000000".into(),
                name: "rec".into(),
                qualifier: None
            })
        );
        assert_eq!(
            parse_destination("arn:aws:lambda:eu-west-1:111111111111:function:rec:live"),
            Some(Destination::Function {
                region: "eu-west-1".into(),
                account: "111111111111".into(),
                name: "rec".into(),
                qualifier: Some("live".into())
            })
        );
        assert!(matches!(parse_destination("arn:aws:sqs:us-east-1:000000000000:q"), Some(Destination::Foreign(_))));
        assert_eq!(parse_destination("arn:aws:dynamodb:us-east-1:000000000000:table/t"), None);
        assert_eq!(parse_destination("not-an-arn"), None);
    }

    #[test]
    fn ranges_are_lambdas() {
        assert_eq!(validate_retries(0).unwrap(), 0);
        assert_eq!(validate_retries(2).unwrap(), 2);
        assert!(validate_retries(3).is_err());
        assert!(validate_retries(-1).is_err());
        assert!(validate_age(59).is_err());
        assert_eq!(validate_age(60).unwrap(), 60);
        assert_eq!(validate_age(21_600).unwrap(), 21_600);
        assert!(validate_age(21_601).is_err());
    }
}
