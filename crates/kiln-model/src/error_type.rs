//! The `errorType`s of a failed Init or invocation, and the messages that go with the ones kiln
//! gives itself (docs/runtime-api.md, "Errors the platform reports").
//!
//! A function error carries an `errorType`: either one the function's runtime reported (any
//! string, passed through untouched) or one the platform chose because the runtime could not
//! say anything (it exited, timed out, answered too much). The platform's are a closed set,
//! [`ErrorType`]; code decides on them by matching the enum, never by comparing strings, and
//! their wire spelling lives only in [`ErrorType::as_str`].

use std::fmt;

/// An `errorType` the platform gives on the function's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// `Runtime.ExitError`: the bootstrap ended during Init or an invocation.
    RuntimeExitError,
    /// `Runtime.OutOfMemory`: the bootstrap was killed by the memory limit.
    RuntimeOutOfMemory,
    /// `Runtime.InvalidEntrypoint`: no bootstrap, or one that cannot be executed.
    RuntimeInvalidEntrypoint,
    /// `Runtime.Unknown`: Init failed and the runtime named no type.
    RuntimeUnknown,
    /// `Runtime.Unavailable` (kiln's own): this host has no runtime client for the function's
    /// managed runtime.
    RuntimeUnavailable,
    /// `Runtime.InvalidResponseModeHeader`: the runtime asked for a response mode that does not
    /// exist.
    RuntimeInvalidResponseModeHeader,
    /// `Runtime.TruncatedResponse`: a streamed response was cut off.
    RuntimeTruncatedResponse,
    /// `Sandbox.Timedout`: Init or the invocation ran past the function's timeout.
    SandboxTimedout,
    /// `Sandbox.ClientDisconnected`: the caller of a streamed invocation hung up.
    SandboxClientDisconnected,
    /// `Function.ResponseSizeTooLarge`: the answer is bigger than the limit.
    FunctionResponseSizeTooLarge,
    /// `Unhandled`: an invocation error whose runtime named no type.
    Unhandled,
}

impl ErrorType {
    /// Every variant, for tests and for [`ErrorType::parse`].
    pub const ALL: [Self; 11] = [
        Self::RuntimeExitError,
        Self::RuntimeOutOfMemory,
        Self::RuntimeInvalidEntrypoint,
        Self::RuntimeUnknown,
        Self::RuntimeUnavailable,
        Self::RuntimeInvalidResponseModeHeader,
        Self::RuntimeTruncatedResponse,
        Self::SandboxTimedout,
        Self::SandboxClientDisconnected,
        Self::FunctionResponseSizeTooLarge,
        Self::Unhandled,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RuntimeExitError => "Runtime.ExitError",
            Self::RuntimeOutOfMemory => "Runtime.OutOfMemory",
            Self::RuntimeInvalidEntrypoint => "Runtime.InvalidEntrypoint",
            Self::RuntimeUnknown => "Runtime.Unknown",
            Self::RuntimeUnavailable => "Runtime.Unavailable",
            Self::RuntimeInvalidResponseModeHeader => "Runtime.InvalidResponseModeHeader",
            Self::RuntimeTruncatedResponse => "Runtime.TruncatedResponse",
            Self::SandboxTimedout => "Sandbox.Timedout",
            Self::SandboxClientDisconnected => "Sandbox.ClientDisconnected",
            Self::FunctionResponseSizeTooLarge => "Function.ResponseSizeTooLarge",
            Self::Unhandled => "Unhandled",
        }
    }

    /// The variant with this wire spelling, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `errorType` of a failure: the platform's, or whatever the runtime reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionErrorType {
    Platform(ErrorType),
    /// Reported by the runtime (`Lambda-Runtime-Function-Error-Type` or the `errorType` of its
    /// error body). A runtime that reports `Sandbox.Timedout` has not timed out: its string
    /// stays here and is never taken for the platform's.
    Reported(String),
}

impl FunctionErrorType {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Platform(t) => t.as_str(),
            Self::Reported(s) => s,
        }
    }

    /// Whether this is the platform's timeout.
    pub fn is_timeout(&self) -> bool {
        *self == Self::Platform(ErrorType::SandboxTimedout)
    }
}

impl From<ErrorType> for FunctionErrorType {
    fn from(t: ErrorType) -> Self {
        Self::Platform(t)
    }
}

impl fmt::Display for FunctionErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `RequestId: <id> Error: <detail>`, the form of the platform's error messages.
pub fn request_message(request_id: &str, detail: impl fmt::Display) -> String {
    format!("RequestId: {request_id} Error: {detail}")
}

/// `Task timed out after <secs>.00 seconds`.
pub fn timed_out_detail(timeout_secs: u32) -> String {
    format!("Task timed out after {:.2} seconds", f64::from(timeout_secs))
}

/// The message of [`ErrorType::FunctionResponseSizeTooLarge`] for a limit of `max_bytes`.
pub fn response_too_large_message(max_bytes: u64) -> String {
    format!("Response payload size exceeded maximum allowed payload size ({max_bytes} bytes).")
}

/// `{"errorType": …, "errorMessage": …}`, the error object Lambda answers for a failure.
pub fn error_payload(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for t in ErrorType::ALL {
            assert_eq!(ErrorType::parse(t.as_str()), Some(t));
            assert!(seen.insert(t.as_str()), "{t} twice");
        }
        assert_eq!(ErrorType::parse("Runtime.Whatever"), None);
    }

    #[test]
    fn a_reported_timeout_is_not_the_platforms() {
        assert!(FunctionErrorType::from(ErrorType::SandboxTimedout).is_timeout());
        assert!(!FunctionErrorType::Reported("Sandbox.Timedout".into()).is_timeout());
    }

    #[test]
    fn messages_read_as_lambdas() {
        assert_eq!(
            request_message("r1", timed_out_detail(3)),
            "RequestId: r1 Error: Task timed out after 3.00 seconds"
        );
        assert_eq!(
            response_too_large_message(6_291_556),
            "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
        );
        let v: serde_json::Value = serde_json::from_slice(&error_payload("Unhandled", "m")).unwrap();
        assert_eq!(v, serde_json::json!({"errorType": "Unhandled", "errorMessage": "m"}));
    }
}
