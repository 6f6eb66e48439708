//! What the engine refuses, in domain terms; the API crate maps each to an AWS error.
//!
//! Every message the engine gives a client is built here, by a named constructor, so the wording
//! AWS uses for a refusal lives in one place (docs/lambda-api.md, "Errors"); the rest of the
//! engine says *which* refusal, not how it reads. Failures that are kiln's own fault
//! ([`EngineError::Internal`]) keep their cause as a `#[source]` chain, so the log line written
//! where they are handled shows the errno, while the client only hears that kiln failed.

use kiln_model::ModelError;
use std::fmt;

/// Throttling reasons, as Lambda names them in `TooManyRequestsException.Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    ConcurrentInvocationLimitExceeded,
    ReservedFunctionConcurrentInvocationLimitExceeded,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
            Self::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
        }
    }
}

/// The cause of an internal failure.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// `ResourceNotFoundException`.
    #[error("{0}")]
    NotFound(String),
    /// `ProvisionedConcurrencyConfigNotFoundException`.
    #[error("{0}")]
    ProvisionedNotFound(String),
    /// `ResourceConflictException`.
    #[error("{0}")]
    Conflict(String),
    /// `PreconditionFailedException`.
    #[error("{0}")]
    PreconditionFailed(String),
    /// `PolicyLengthExceededException`.
    #[error("{0}")]
    PolicyLengthExceeded(String),
    /// `CodeSigningConfigNotFoundException`.
    #[error("{0}")]
    CodeSigningConfigNotFound(String),
    /// `RequestEntityTooLargeException`.
    #[error("{0}")]
    TooLarge(String),
    /// `TooManyRequestsException`.
    #[error("{message}")]
    Throttled { reason: ThrottleReason, message: String },
    /// `ServiceException`: kiln's fault; the detail goes to kiln's log, not to the client.
    #[error("{context}")]
    Internal {
        /// What kiln was doing.
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

/// "The resource you requested does not exist.", Lambda's answer for a resource it cannot name.
const RESOURCE_NOT_FOUND: &str = "The resource you requested does not exist.";
const REVISION_MISMATCH: &str = "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id";
const LAYER_REVISION_MISMATCH: &str = "The Revision Id provided does not match the latest Revision Id. Call the GetLayerPolicy API to retrieve the latest Revision Id";
const CANNOT_NOW: &str = "The operation cannot be performed at this time.";

impl EngineError {
    /// `InvalidParameterValueException` with `msg`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Model(ModelError::InvalidParameterValue(msg.into()))
    }

    /// kiln failed at `context` because of `source`.
    pub fn internal(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Internal { context: context.into(), source: Some(source.into()) }
    }

    /// kiln failed at `context`, with no underlying error to keep.
    pub fn internal_msg(context: impl Into<String>) -> Self {
        Self::Internal { context: context.into(), source: None }
    }

    /// The error and all its causes, `: `-separated, for a log line.
    pub fn chain(&self) -> Chain<'_> {
        Chain(self)
    }

    // ResourceNotFoundException.

    pub fn resource_not_found() -> Self {
        Self::NotFound(RESOURCE_NOT_FOUND.into())
    }

    pub fn function_not_found(arn: &str) -> Self {
        Self::NotFound(format!("Function not found: {arn}"))
    }

    pub fn alias_not_found(arn: &str) -> Self {
        Self::NotFound(format!("Alias not found: {arn}"))
    }

    /// An alias named as the qualifier of a function setting (tags, policies) that does not exist.
    pub fn alias_arn_not_found(arn: &str) -> Self {
        Self::NotFound(format!("Cannot find alias arn: {arn}"))
    }

    pub fn layer_version_not_found(arn: &str) -> Self {
        Self::NotFound(format!("Layer version {arn} does not exist."))
    }

    pub fn no_policy_for(arn: &str) -> Self {
        Self::NotFound(format!("No policy found for: {arn}"))
    }

    pub fn no_policy() -> Self {
        Self::NotFound("No policy is associated with the given resource.".into())
    }

    pub fn statement_not_found(sid: &str) -> Self {
        Self::NotFound(format!("Statement {sid} is not found in resource policy."))
    }

    pub fn no_event_invoke_config(arn: &str) -> Self {
        Self::NotFound(format!("The function {arn} doesn't have an EventInvokeConfig"))
    }

    /// A code signing config named by an operation on the config itself.
    pub fn code_signing_config_not_found(arn: &str) -> Self {
        Self::NotFound(format!("The Lambda code signing configuration {arn} can not be found."))
    }

    /// A code signing config named by a function (`CodeSigningConfigNotFoundException`).
    pub fn function_code_signing_config_missing(arn: &str) -> Self {
        Self::CodeSigningConfigNotFound(format!(
            "The code signing configuration cannot be found. Check that the provided configuration is not deleted: {arn}."
        ))
    }

    pub fn provisioned_not_found() -> Self {
        Self::ProvisionedNotFound("No Provisioned Concurrency Config found for this function".into())
    }

    // ResourceConflictException.

    pub fn function_exists(name: &str) -> Self {
        Self::Conflict(format!("Function already exist: {name}"))
    }

    pub fn alias_exists(arn: &str) -> Self {
        Self::Conflict(format!("Alias already exists: {arn}"))
    }

    pub fn statement_exists(sid: &str) -> Self {
        Self::Conflict(format!(
            "The statement id ({sid}) provided already exists. Please provide a new statement id, or remove the existing statement."
        ))
    }

    /// The function is not in a state that allows the call (`Pending`, `Failed`).
    pub fn function_state(state: &str) -> Self {
        Self::Conflict(format!("{CANNOT_NOW} The function is currently in the following state: {state}"))
    }

    pub fn update_in_progress(arn: &str) -> Self {
        Self::Conflict(format!("{CANNOT_NOW} An update is in progress for resource: {arn}"))
    }

    pub fn version_in_use(aliases: &[&str]) -> Self {
        Self::Conflict(format!(
            "Unable to delete version because the following aliases reference it: [{}]",
            aliases.join(", ")
        ))
    }

    pub fn code_signing_config_in_use(arn: &str) -> Self {
        Self::Conflict(format!(
            "The code signing configuration {arn} cannot be deleted because it is used by one or more functions."
        ))
    }

    pub fn provisioned_elsewhere(qualifier: &str, version: &str, other: &str) -> Self {
        Self::Conflict(format!(
            "Alias {qualifier} is pointing to version {version} which already has provisioned concurrency configured through {other}."
        ))
    }

    pub fn url_config_exists(arn: &str) -> Self {
        Self::Conflict(format!(
            "Failed to create function url config for [functionArn = {arn}]. Error message:  FunctionUrlConfig exists for this Lambda function"
        ))
    }

    // PreconditionFailedException.

    /// A function's or alias's `RevisionId` does not match.
    pub fn revision_mismatch() -> Self {
        Self::PreconditionFailed(REVISION_MISMATCH.into())
    }

    /// A layer version policy's `RevisionId` does not match.
    pub fn layer_revision_mismatch() -> Self {
        Self::PreconditionFailed(LAYER_REVISION_MISMATCH.into())
    }

    pub fn code_sha256_mismatch(given: &str, latest: &str) -> Self {
        Self::PreconditionFailed(format!(
            "CodeSHA256 ({given}) is different from current CodeSHA256 in $LATEST ({latest}). Please try again with the CodeSHA256 in $LATEST."
        ))
    }

    // Others.

    pub fn policy_too_long(size: usize, limit: usize) -> Self {
        Self::PolicyLengthExceeded(format!("The final policy size ({size}) is bigger than the limit ({limit})."))
    }

    /// A request body over `limit` bytes, as the API says it when it reads one.
    pub fn request_too_large(limit: impl fmt::Display, operation: &str) -> Self {
        Self::TooLarge(kiln_model::limits::request_too_large_message(limit, Some(operation)))
    }

    pub fn event_payload_too_large(size: usize, limit: usize) -> Self {
        Self::TooLarge(format!("{size} byte payload is too large for the Event invocation type (limit {limit} bytes)"))
    }

    /// Throttled, with Lambda's plain message.
    pub fn rate_exceeded(reason: ThrottleReason) -> Self {
        Self::Throttled { reason, message: "Rate Exceeded.".into() }
    }

    /// Throttled by one of kiln's own bounds, which the message names after Lambda's words.
    pub fn rate_exceeded_because(reason: ThrottleReason, why: impl fmt::Display) -> Self {
        Self::Throttled { reason, message: format!("Rate Exceeded. {why}") }
    }
}

/// Displays an error followed by its causes.
pub struct Chain<'a>(&'a EngineError);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_keeps_its_errno_for_the_log_but_not_the_message() {
        let io = std::io::Error::from_raw_os_error(24);
        let e = EngineError::internal("cannot create execution environment", io);
        assert_eq!(e.to_string(), "cannot create execution environment");
        let logged = e.chain().to_string();
        assert!(logged.starts_with("cannot create execution environment: "), "{logged}");
        assert!(logged.contains("os error 24"), "{logged}");
    }

    #[test]
    fn size_messages_are_the_apis() {
        assert_eq!(
            EngineError::request_too_large(6_291_456, "InvokeFunction").to_string(),
            "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
        );
    }
}
