//! What the engine refuses, in domain terms; the API crate maps each to an AWS error.

use kiln_model::ModelError;

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
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Model(ModelError::InvalidParameterValue(msg.into()))
    }
}
