//! Code signing configs: which signing profiles a function's code must come from and what
//! Lambda does with unsigned code. kiln stores and returns them as Lambda does but cannot
//! check AWS Signer signatures, so it never refuses code because of them.

use crate::error::ModelError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One code signing config as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeSigningConfig {
    /// `csc-` and 17 lowercase letters or digits.
    pub id: String,
    pub arn: String,
    pub description: String,
    pub signing_profile_version_arns: Vec<String>,
    /// `Warn` or `Enforce`.
    pub untrusted_artifact_on_deployment: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Checks `AllowedPublishers.SigningProfileVersionArns`.
pub fn validate_publishers(arns: &[String]) -> Result<(), ModelError> {
    if arns.is_empty() || arns.len() > 20 {
        return Err(ModelError::constraint(
            format!("{arns:?}"),
            "allowedPublishers.signingProfileVersionArns",
            "Member must have length less than or equal to 20, Member must have length greater than or equal to 1",
        ));
    }
    for a in arns {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        let ok = parts.len() == 6 && parts[0] == "arn" && parts[1].starts_with("aws") && !parts[2].is_empty();
        if !ok {
            return Err(ModelError::constraint(
                a,
                "allowedPublishers.signingProfileVersionArns.member",
                "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)",
            ));
        }
    }
    Ok(())
}

/// Checks `CodeSigningPolicies.UntrustedArtifactOnDeployment`.
pub fn validate_policy(p: &str) -> Result<(), ModelError> {
    if p == "Warn" || p == "Enforce" {
        Ok(())
    } else {
        Err(ModelError::constraint(
            p,
            "codeSigningPolicies.untrustedArtifactOnDeployment",
            "Member must satisfy enum value set: [Warn, Enforce]",
        ))
    }
}

/// Checks a `Description` (at most 256 characters).
pub fn validate_description(d: &str) -> Result<(), ModelError> {
    if d.chars().count() > 256 {
        return Err(ModelError::constraint(d, "description", "Member must have length less than or equal to 256"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_and_policies_are_checked() {
        assert!(validate_publishers(&["arn:aws:signer:us-east-1:123456789012:/signing-profiles/p/abc".into()]).is_ok());
        assert!(validate_publishers(&[]).is_err());
        assert!(validate_publishers(&["nope".into()]).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("arn:aws:signer:us-east-1:123456789012:/p/{i}")).collect();
        assert!(validate_publishers(&many).is_err());
        assert!(validate_policy("Warn").is_ok() && validate_policy("Enforce").is_ok());
        assert!(validate_policy("Block").is_err());
        assert!(validate_description(&"d".repeat(257)).is_err());
    }
}
