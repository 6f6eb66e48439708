//! Wire strings of the Runtime API.

pub const PREFIX: &str = "/2018-06-01";
pub const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
pub const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
pub const INVOKED_FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
pub const TRACE_ID: &str = "lambda-runtime-trace-id";
pub const CLIENT_CONTEXT: &str = "lambda-runtime-client-context";
pub const COGNITO_IDENTITY: &str = "lambda-runtime-cognito-identity";
pub const FUNCTION_ERROR_TYPE: &str = "lambda-runtime-function-error-type";
pub const FUNCTION_ERROR_BODY: &str = "lambda-runtime-function-error-body";
pub const RESPONSE_MODE: &str = "lambda-runtime-function-response-mode";

/// The event's headers as header names, built once instead of parsed on every `next`.
pub mod names {
    use http::HeaderName;

    pub const REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID);
    pub const DEADLINE_MS: HeaderName = HeaderName::from_static(super::DEADLINE_MS);
    pub const INVOKED_FUNCTION_ARN: HeaderName = HeaderName::from_static(super::INVOKED_FUNCTION_ARN);
    pub const TRACE_ID: HeaderName = HeaderName::from_static(super::TRACE_ID);
    pub const CLIENT_CONTEXT: HeaderName = HeaderName::from_static(super::CLIENT_CONTEXT);
    pub const COGNITO_IDENTITY: HeaderName = HeaderName::from_static(super::COGNITO_IDENTITY);
}

pub const INVALID_REQUEST_ID: &str = "InvalidRequestID";
pub const INVALID_STATE_TRANSITION: &str = "InvalidStateTransition";
pub const INVALID_RESPONSE_MODE: &str = "InvalidFunctionResponseMode";
pub const REQUEST_TOO_LARGE: &str = "RequestEntityTooLarge";
pub const TRUNCATED_REQUEST: &str = "TruncatedHTTPRequest";
pub const ENVIRONMENT_CLOSED: &str = "EnvironmentClosed";
pub const REQUEST_TIMEOUT: &str = "RequestTimeout";
