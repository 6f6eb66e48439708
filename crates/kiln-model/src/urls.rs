//! Function URLs: a function (or one of its aliases) behind a plain HTTP endpoint.
//!
//! A [`UrlConfig`] is what CreateFunctionUrlConfig stores: the url id that names the endpoint
//! (32 lowercase letters and digits, as Lambda's), who may call it ([`AuthType`]), how answers
//! come back ([`InvokeMode`]) and the CORS rules kiln applies in front of the function. The
//! limits and messages follow botocore's model of the `Cors` and `FunctionUrlQualifier` shapes.

use crate::ModelError;
use serde::{Deserialize, Serialize};

/// Length of a url id.
pub const URL_ID_LEN: usize = 32;

/// Who may call a function URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

impl AuthType {
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "NONE" => Ok(Self::None),
            "AWS_IAM" => Ok(Self::AwsIam),
            _ => Err(ModelError::constraint(s, "authType", "Member must satisfy enum value set: [NONE, AWS_IAM]")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::AwsIam => "AWS_IAM",
        }
    }
}

/// How a function URL returns the function's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum InvokeMode {
    #[default]
    #[serde(rename = "BUFFERED")]
    Buffered,
    #[serde(rename = "RESPONSE_STREAM")]
    ResponseStream,
}

impl InvokeMode {
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "BUFFERED" => Ok(Self::Buffered),
            "RESPONSE_STREAM" => Ok(Self::ResponseStream),
            _ => Err(ModelError::constraint(
                s,
                "invokeMode",
                "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buffered => "BUFFERED",
            Self::ResponseStream => "RESPONSE_STREAM",
        }
    }
}

/// The CORS settings of a function URL, as given (absent members stay absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
}

impl Cors {
    /// Checks the model's limits: list lengths, item lengths and `MaxAge` in 0..=86400.
    pub fn validate(&self) -> Result<(), ModelError> {
        let list = |v: &Option<Vec<String>>, field: &str, max_items: usize, item: (usize, usize)| {
            let Some(v) = v else { return Ok(()) };
            if v.len() > max_items {
                return Err(ModelError::constraint(
                    format!("[{}]", v.join(", ")),
                    field,
                    &format!("Member must have length less than or equal to {max_items}"),
                ));
            }
            for s in v {
                if s.len() < item.0 || s.len() > item.1 {
                    let rule = if s.len() < item.0 {
                        format!("Member must have length greater than or equal to {}", item.0)
                    } else {
                        format!("Member must have length less than or equal to {}", item.1)
                    };
                    return Err(ModelError::constraint(
                        format!("[{}]", v.join(", ")),
                        field,
                        &format!("Member must satisfy constraint: [{rule}]"),
                    ));
                }
            }
            Ok(())
        };
        list(&self.allow_headers, "cors.allowHeaders", 100, (0, 1024))?;
        list(&self.allow_methods, "cors.allowMethods", 6, (0, 6))?;
        list(&self.allow_origins, "cors.allowOrigins", 100, (1, 253))?;
        list(&self.expose_headers, "cors.exposeHeaders", 100, (0, 1024))?;
        if let Some(m) = self.max_age {
            if m < 0 {
                return Err(ModelError::constraint(
                    m,
                    "cors.maxAge",
                    "Member must have value greater than or equal to 0",
                ));
            }
            if m > 86_400 {
                return Err(ModelError::constraint(
                    m,
                    "cors.maxAge",
                    "Member must have value less than or equal to 86400",
                ));
            }
        }
        Ok(())
    }

    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if it is allowed:
    /// `*` when every origin is, else the origin itself (compared without case, as host names).
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        let origins = self.allow_origins.as_deref()?;
        if origins.iter().any(|o| o == "*") {
            return Some("*".to_string());
        }
        origins.iter().any(|o| o.eq_ignore_ascii_case(origin)).then(|| origin.to_string())
    }
}

/// One function URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlConfig {
    pub url_id: String,
    pub auth_type: AuthType,
    #[serde(default)]
    pub invoke_mode: InvokeMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    pub creation_ms: i64,
    pub last_modified_ms: i64,
}

/// Checks the `Qualifier` of a function URL: an alias name. botocore's pattern
/// `((?!^\d+$)^[0-9a-zA-Z-_]+$)` refuses a version number and `$LATEST` alike.
pub fn validate_qualifier(q: &str) -> Result<(), ModelError> {
    let word =
        !q.is_empty() && q.len() <= 128 && q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !word || q.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ModelError::constraint(
            q,
            "qualifier",
            r"Member must satisfy regular expression pattern: ((?!^\d+$)^[0-9a-zA-Z-_]+$)",
        ));
    }
    Ok(())
}

/// Whether `s` has the form of a url id.
pub fn is_url_id(s: &str) -> bool {
    s.len() == URL_ID_LEN && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A new url id from 32 random bytes (each taken modulo 36; the bias is irrelevant for a name).
pub fn url_id_from(random: &[u8; URL_ID_LEN]) -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    random.iter().map(|b| ALPHABET[usize::from(*b) % 36] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifier_refuses_versions_and_latest() {
        assert!(validate_qualifier("live").is_ok());
        assert!(validate_qualifier("v1-blue_2").is_ok());
        assert!(validate_qualifier("1").is_err());
        assert!(validate_qualifier("$LATEST").is_err());
        assert!(validate_qualifier("").is_err());
    }

    #[test]
    fn cors_limits_follow_the_model() {
        assert!(Cors { max_age: Some(86_400), ..Default::default() }.validate().is_ok());
        let e = Cors { max_age: Some(86_401), ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("cors.maxAge"), "{e}");
        let methods = Some(vec!["GET".into(), "PATCHES".into()]);
        assert!(Cors { allow_methods: methods, ..Default::default() }.validate().is_err());
        let seven = Some(vec!["GET".to_string(); 7]);
        assert!(Cors { allow_methods: seven, ..Default::default() }.validate().is_err());
        assert!(Cors { allow_origins: Some(vec![String::new()]), ..Default::default() }.validate().is_err());
    }

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let c = Cors { allow_origins: Some(vec!["https://a.example".into()]), ..Default::default() };
        assert_eq!(c.allowed_origin("https://A.example").as_deref(), Some("https://A.example"));
        assert_eq!(c.allowed_origin("https://b.example"), None);
        let any = Cors { allow_origins: Some(vec!["*".into()]), ..Default::default() };
        assert_eq!(any.allowed_origin("http://x").as_deref(), Some("*"));
        assert_eq!(Cors::default().allowed_origin("http://x"), None);
    }

    #[test]
    fn url_ids_are_32_lowercase_alphanumerics() {
        let id = url_id_from(&[255; 32]);
        assert!(is_url_id(&id), "{id}");
        assert!(!is_url_id("ABC"));
    }
}
