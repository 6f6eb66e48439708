//! A refusal from kiln as the client reads it: the AWS error code, from the body's `__type` or
//! else the `x-amzn-ErrorType` header, and the text shown to the user (`<Code>: <message>`).
//! Callers that act on a refusal look at its code, never its text (as they do with
//! [`kiln_client::ApiError::code`] for the answers of `Api::call`).

use serde_json::Value;
use std::fmt;

/// A non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The AWS error code, if the answer named one.
    pub code: Option<String>,
    /// What the user sees.
    shown: String,
}

impl Refusal {
    /// Reads an error answer: its headers (if the caller still has them) and its body.
    pub fn read(headers: Option<&http::HeaderMap>, body: &[u8]) -> Self {
        let header_code = headers
            .and_then(|h| h.get(kiln_api::wire::ERROR_TYPE))
            .and_then(|v| v.to_str().ok())
            // AWS may append `:<url>` to the header's code.
            .and_then(|v| v.split(':').next())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                let code = v["__type"].as_str().map(str::to_string).or(header_code);
                let msg = v["message"].as_str().or(v["Message"].as_str()).unwrap_or("");
                let shown = format!("{}: {msg}", code.as_deref().unwrap_or("Error"));
                Self { code, shown }
            }
            Err(_) => Self { code: header_code, shown: String::from_utf8_lossy(body).trim().to_string() },
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::error::code;

    fn headers(error_type: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(kiln_api::wire::ERROR_TYPE, http::HeaderValue::from_str(error_type).unwrap());
        h
    }

    #[test]
    fn the_code_comes_from_the_body_then_the_header() {
        let body = br#"{"__type":"ResourceNotFoundException","Message":"Function not found: x"}"#;
        let r = Refusal::read(None, body);
        assert_eq!(r.code.as_deref(), Some(code::RESOURCE_NOT_FOUND));
        assert_eq!(r.to_string(), "ResourceNotFoundException: Function not found: x");

        let r = Refusal::read(Some(&headers("TooManyRequestsException:http://x/")), br#"{"message":"slow down"}"#);
        assert_eq!(r.code.as_deref(), Some(code::TOO_MANY_REQUESTS));
        assert_eq!(r.to_string(), "TooManyRequestsException: slow down");

        let r = Refusal::read(Some(&headers("ServiceException")), b"  not json\n");
        assert_eq!(r.code.as_deref(), Some(code::SERVICE));
        assert_eq!(r.to_string(), "not json");
    }

    #[test]
    fn without_a_code_nothing_matches() {
        let r = Refusal::read(None, br#"{"message":"The resource you requested does not exist."}"#);
        assert_eq!(r.code, None);
        assert_eq!(r.to_string(), "Error: The resource you requested does not exist.");
    }
}
