//! `kiln_api::auth`: the canonical-request builder and the whole verifier on arbitrary requests.
//!
//! The input is split at `0xff` bytes into method, path, query, then header lines
//! (`name:value`, separated by `\n`), then a body. Whatever it is, building the canonical
//! request never panics, its path part never holds a byte outside the unreserved set, `/` and
//! `%XX`, and `verify` answers with an error (the key is unknown or the signature wrong) rather
//! than a panic, and never with success: nobody here knows the secret.
#![no_main]

use kiln_api::auth::{self, Expected, RequestParts};
use kiln_api::keys::Keys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xff);
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header_text = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    for line in header_text.split(|&b| b == b'\n') {
        let Some(i) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(&line[..i]), http::HeaderValue::from_bytes(&line[i + 1..]))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let req = RequestParts { method: &method, path: &path, query: &query, headers: &headers };
    let names: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
    let canonical = auth::canonical_request(&req, &names, auth::UNSIGNED_PAYLOAD, false);
    let path_line = canonical.split('\n').nth(1).unwrap_or_default();
    assert!(path_line.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~/%".contains(&b)), "{path_line:?}");
    assert!(path_line.starts_with('/') || path_line.is_empty() || !path.starts_with('/'));
    let keys = Keys::parse("[k]\naws_access_key_id = AKIAFUZZ\naws_secret_access_key = unknowable\naccount_id = 111111111111\n")
        .expect("a fixed good keys file");
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let result = auth::verify(&keys, &req, body, Expected { region: "us-east-1", service: "lambda" }, now);
    assert!(result.is_err());
});
