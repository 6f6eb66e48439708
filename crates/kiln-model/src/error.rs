//! Validation failures, split the way AWS splits them: `ValidationException` for values that break
//! the API model's constraints, `InvalidParameterValueException` for semantic rules.

/// Why a value from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Maps to AWS `InvalidParameterValueException` (400).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// Maps to AWS `ValidationException` (400).
    #[error("{0}")]
    Validation(String),
}

impl ModelError {
    /// The message AWS gives for a value that breaks one model constraint.
    pub fn constraint(value: impl std::fmt::Display, field: &str, rule: &str) -> Self {
        Self::Validation(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
        ))
    }
}
