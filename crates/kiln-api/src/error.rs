//! AWS error shapes: header `x-amzn-ErrorType` plus a JSON body (lambda-compat.md §5.2).

use kiln_engine::EngineError;
use kiln_model::ModelError;

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
                "ResourceNotFoundException"
                    | "ServiceException"
                    | "InvalidZipFileException"
                    | "CodeSigningConfigNotFoundException"
                    | "PublicPolicyException"
                    | "AccessDeniedException"
            ),
            reason: None,
            client_fault: status < 500,
        }
    }

    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequestContentException", message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterValueException", message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    pub fn unknown_operation() -> Self {
        Self::new(404, "UnknownOperationException", "Unknown operation")
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
            EngineError::NotFound(m) => Self::new(404, "ResourceNotFoundException", m),
            EngineError::Conflict(m) => Self::new(409, "ResourceConflictException", m),
            EngineError::ProvisionedNotFound(m) => Self::new(404, "ProvisionedConcurrencyConfigNotFoundException", m),
            EngineError::PreconditionFailed(m) => Self::new(412, "PreconditionFailedException", m),
            EngineError::PolicyLengthExceeded(m) => Self::new(400, "PolicyLengthExceededException", m),
            EngineError::CodeSigningConfigNotFound(m) => Self::new(404, "CodeSigningConfigNotFoundException", m),
            EngineError::TooLarge(m) => Self::new(413, "RequestEntityTooLargeException", m),
            EngineError::Throttled { reason, message } => {
                let mut e = Self::new(429, "TooManyRequestsException", message);
                e.reason = Some(reason.as_str());
                e
            }
            EngineError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Self::new(500, "ServiceException", "An internal error occurred in kiln; see the server log.")
            }
        }
    }
}
