//! Who may scrape `/metrics` when kiln runs with `--auth-keys`, and what they see.
//!
//! Without keys `/metrics` is open, as before. With keys a scrape must be authenticated, and it
//! shows only the series of the caller's account (its functions, its event queue, and the REST
//! requests made with its keys). Two ways, as MinIO does for its metrics (signed admin requests,
//! or a bearer token derived from a key for Prometheus, which cannot sign SigV4 scrapes):
//!
//! - a SigV4-signed `GET /metrics` (header or presigned URL, service `lambda`), verified by
//!   [`crate::auth::verify`] like every REST request;
//! - `Authorization: Bearer <access key id>:<token>`, where the token is the hex
//!   HMAC-SHA256 of [`TOKEN_MESSAGE`] under the key's secret (see [`token`]); it lives as long
//!   as the key does, so rotating the key revokes it.
//!
//! Anything else is refused in the REST API's shape (`MissingAuthenticationTokenException`,
//! `UnrecognizedClientException`, `InvalidSignatureException`, all 403).

use crate::auth::{self, AuthError, Expected, Principal, RequestParts};
use crate::keys::Keys;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write as _;

/// What a metrics token is the HMAC of.
pub const TOKEN_MESSAGE: &str = "kiln metrics";

/// The bearer token of a key: `<access key id>:<hex HMAC-SHA256(secret, "kiln metrics")>`.
pub fn token(access_key_id: &str, secret: &str) -> String {
    let mut out = format!("{access_key_id}:");
    if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        mac.update(TOKEN_MESSAGE.as_bytes());
        for b in mac.finalize().into_bytes() {
            let _ = write!(out, "{b:02x}");
        }
    }
    out
}

/// Authenticates a scrape: a bearer token, else a SigV4 signature over an empty body.
pub fn principal(
    keys: &Keys,
    parts: &RequestParts<'_>,
    expected: Expected<'_>,
    now: time::OffsetDateTime,
) -> Result<Principal, AuthError> {
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(bearer) = bearer else {
        return auth::verify(keys, parts, b"", expected, now);
    };
    let (id, hex_mac) = bearer
        .trim()
        .split_once(':')
        .ok_or_else(|| AuthError::Incomplete("A metrics token must be '<access key id>:<hex HMAC-SHA256>'.".into()))?;
    let key = keys.get(id).ok_or(AuthError::UnknownKey)?;
    let given = hex_decode(hex_mac).ok_or_else(|| AuthError::Invalid(auth::BAD_SIGNATURE.into()))?;
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.secret_access_key.as_bytes()) else {
        return Err(AuthError::Invalid(auth::BAD_SIGNATURE.into()));
    };
    mac.update(TOKEN_MESSAGE.as_bytes());
    // Constant time, through `subtle`.
    mac.verify_slice(&given).map_err(|_| AuthError::Invalid(auth::BAD_SIGNATURE.into()))?;
    Ok(Principal {
        account_id: key.account_id.clone(),
        access_key_id: key.access_key_id.clone(),
        key_name: key.name.clone(),
    })
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::parse("[a]\naws_access_key_id = AKIAA\naws_secret_access_key = sec\naccount_id = 111111111111\n").unwrap()
    }

    fn with_auth(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(value).unwrap());
        h
    }

    const EXP: Expected<'static> = Expected { region: "us-east-1", service: "lambda" };

    #[test]
    fn a_bearer_token_of_a_known_key_passes_and_nothing_else_does() {
        let keys = keys();
        let now = time::OffsetDateTime::now_utc();
        let good = token("AKIAA", "sec");
        // What the README's one-liner computes (Python's hmac, HMAC-SHA256 of "kiln metrics").
        assert_eq!(good, "AKIAA:7472ae99ba67bcea86f6051809cf2210ec9bcf99a9c77d79061f1f7bb25bb872");
        let h = with_auth(&format!("Bearer {good}"));
        let p = RequestParts { method: "GET", path: "/metrics", query: "", headers: &h };
        assert_eq!(principal(&keys, &p, EXP, now).unwrap().account_id, "111111111111");
        let cases = [
            (format!("Bearer {}", token("AKIAA", "wrong")), "InvalidSignatureException"),
            (format!("Bearer {}", token("AKIANOBODY", "sec")), "UnrecognizedClientException"),
            ("Bearer AKIAA".to_string(), "IncompleteSignatureException"),
            ("Bearer AKIAA:zz".to_string(), "InvalidSignatureException"),
        ];
        for (value, code) in cases {
            let h = with_auth(&value);
            let p = RequestParts { method: "GET", path: "/metrics", query: "", headers: &h };
            assert_eq!(principal(&keys, &p, EXP, now).unwrap_err().code(), code, "{value}");
        }
        let h = http::HeaderMap::new();
        let p = RequestParts { method: "GET", path: "/metrics", query: "", headers: &h };
        assert_eq!(principal(&keys, &p, EXP, now).unwrap_err().code(), "MissingAuthenticationTokenException");
    }
}
