//! AWS error shapes: header `x-amzn-ErrorType` plus a JSON body (docs/lambda-api.md, "Errors").
//!
//! The error codes of the Lambda REST API live in [`code`] and every refusal the API crate builds
//! itself goes through a constructor here, so the wire strings of a refusal are in one module.
//! Domain errors of the engine and the model are mapped at the end of the file; an internal
//! error is logged with its whole cause chain and answered with a fixed message.

use kiln_engine::EngineError;
use kiln_model::ModelError;

/// The `__type` / `x-amzn-ErrorType` codes of the Lambda API.
pub mod code {
    pub const ACCESS_DENIED: &str = "AccessDeniedException";
    pub const CODE_SIGNING_CONFIG_NOT_FOUND: &str = "CodeSigningConfigNotFoundException";
    pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValueException";
    pub const INVALID_REQUEST_CONTENT: &str = "InvalidRequestContentException";
    pub const INVALID_ZIP_FILE: &str = "InvalidZipFileException";
    pub const POLICY_LENGTH_EXCEEDED: &str = "PolicyLengthExceededException";
    pub const PRECONDITION_FAILED: &str = "PreconditionFailedException";
    pub const PROVISIONED_CONCURRENCY_CONFIG_NOT_FOUND: &str = "ProvisionedConcurrencyConfigNotFoundException";
    pub const PUBLIC_POLICY: &str = "PublicPolicyException";
    pub const REQUEST_TOO_LARGE: &str = "RequestEntityTooLargeException";
    pub const RESOURCE_CONFLICT: &str = "ResourceConflictException";
    pub const RESOURCE_NOT_FOUND: &str = "ResourceNotFoundException";
    pub const SERVICE: &str = "ServiceException";
    pub const TOO_MANY_REQUESTS: &str = "TooManyRequestsException";
    pub const UNKNOWN_OPERATION: &str = "UnknownOperationException";
    pub const VALIDATION: &str = "ValidationException";
}

/// What the client hears about a failure that is kiln's own.
const SERVICE_MESSAGE: &str = "An internal error occurred in kiln; see the server log.";

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The member name the model gives the message (`Message` or `message`).
    pub capital_message: bool,
    pub reason: Option<&'static str>,
    pub client_fault: bool,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            capital_message: matches!(
                code,
                code::RESOURCE_NOT_FOUND
                    | code::SERVICE
                    | code::INVALID_ZIP_FILE
                    | code::CODE_SIGNING_CONFIG_NOT_FOUND
                    | code::PUBLIC_POLICY
                    | code::ACCESS_DENIED
            ),
            reason: None,
            client_fault: status < 500,
        }
    }

    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(400, code::INVALID_REQUEST_CONTENT, message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(400, code::INVALID_PARAMETER_VALUE, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, code::VALIDATION, message)
    }

    /// AWS's answer to a required member the request left out (`member` as AWS spells it,
    /// camelCase).
    pub fn null_member(member: &str) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    }

    /// `v`, or [`ApiError::null_member`] when the request left it out.
    pub fn required<T>(v: Option<T>, member: &str) -> Result<T, Self> {
        v.ok_or_else(|| Self::null_member(member))
    }

    pub fn unknown_operation() -> Self {
        Self::new(404, code::UNKNOWN_OPERATION, "Unknown operation")
    }

    /// `ResourceNotFoundException` for a function ARN the caller may not see.
    pub fn function_not_found(arn: &str) -> Self {
        Self::new(404, code::RESOURCE_NOT_FOUND, format!("Function not found: {arn}"))
    }

    /// `RequestEntityTooLargeException` with `message`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, code::REQUEST_TOO_LARGE, message)
    }

    /// `RequestEntityTooLargeException` for a body over `limit`, worded as the engine words the
    /// same check (`kiln_model::limits::request_too_large_message`).
    pub fn request_too_large(limit: usize, operation: Option<&str>) -> Self {
        Self::too_large(kiln_model::limits::request_too_large_message(limit, operation))
    }

    /// `CodeSigningConfigNotFoundException` for a function's code signing config.
    pub fn code_signing_config_missing(arn: &str) -> Self {
        Self::new(
            404,
            code::CODE_SIGNING_CONFIG_NOT_FOUND,
            format!("The code signing configuration cannot be found. Check that the provided configuration is not deleted: {arn}."),
        )
    }

    /// `ServiceException`: kiln failed; the detail is in kiln's log.
    pub fn service() -> Self {
        Self::new(500, code::SERVICE, SERVICE_MESSAGE)
    }

    pub fn body(&self) -> String {
        let key = if self.capital_message { "Message" } else { "message" };
        let mut v = serde_json::json!({
            "Type": if self.client_fault { "User" } else { "Service" },
            key: self.message,
            "__type": self.code,
        });
        if let Some(r) = self.reason {
            v["Reason"] = serde_json::json!(r);
        }
        v.to_string()
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidParameterValue(m) => Self::invalid_parameter(m),
            ModelError::Validation(m) => Self::validation(m),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Model(m) => m.into(),
            EngineError::NotFound(m) => Self::new(404, code::RESOURCE_NOT_FOUND, m),
            EngineError::Conflict(m) => Self::new(409, code::RESOURCE_CONFLICT, m),
            EngineError::ProvisionedNotFound(m) => Self::new(404, code::PROVISIONED_CONCURRENCY_CONFIG_NOT_FOUND, m),
            EngineError::PreconditionFailed(m) => Self::new(412, code::PRECONDITION_FAILED, m),
            EngineError::PolicyLengthExceeded(m) => Self::new(400, code::POLICY_LENGTH_EXCEEDED, m),
            EngineError::CodeSigningConfigNotFound(m) => Self::new(404, code::CODE_SIGNING_CONFIG_NOT_FOUND, m),
            EngineError::TooLarge(m) => Self::too_large(m),
            EngineError::Throttled { reason, message } => {
                let mut e = Self::new(429, code::TOO_MANY_REQUESTS, message);
                e.reason = Some(reason.as_str());
                e
            }
            e @ EngineError::Internal { .. } => {
                tracing::error!(error = %e.chain(), "internal error");
                Self::service()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_engine::ThrottleReason;

    fn body(e: &ApiError) -> serde_json::Value {
        serde_json::from_str(&e.body()).unwrap()
    }

    #[test]
    fn engine_refusals_map_to_their_aws_codes() {
        let e = ApiError::from(EngineError::function_not_found("arn:aws:lambda:us-east-1:0:function:f"));
        assert_eq!((e.status, e.code), (404, code::RESOURCE_NOT_FOUND));
        assert_eq!(body(&e)["Message"], "Function not found: arn:aws:lambda:us-east-1:0:function:f");

        let e = ApiError::from(EngineError::rate_exceeded(
            ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
        ));
        assert_eq!((e.status, e.code), (429, code::TOO_MANY_REQUESTS));
        let b = body(&e);
        assert_eq!(
            (b["message"].as_str(), b["Reason"].as_str()),
            (Some("Rate Exceeded."), Some("ReservedFunctionConcurrentInvocationLimitExceeded"))
        );

        let e = ApiError::from(EngineError::request_too_large(6_291_456, "InvokeFunction"));
        assert_eq!(e.message, ApiError::request_too_large(6_291_456, Some("InvokeFunction")).message);
    }

    #[test]
    fn an_internal_error_tells_the_client_nothing_of_its_cause() {
        let cause = std::io::Error::from_raw_os_error(28);
        let e = ApiError::from(EngineError::internal("cannot store code", cause));
        assert_eq!((e.status, e.code, e.message.as_str()), (500, code::SERVICE, SERVICE_MESSAGE));
        assert_eq!(body(&e)["Type"], "Service");
    }
}
