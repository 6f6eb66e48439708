//! AWS Signature Version 4: the verifier every REST request passes when `kiln serve` runs with
//! `--auth-keys`.
//!
//! A request carries its signature either in the `Authorization` header
//! (`AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request,
//! SignedHeaders=…, Signature=…` with `X-Amz-Date`) or in the query string (a presigned URL:
//! `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
//! `X-Amz-SignedHeaders`, `X-Amz-Signature`). Verifying rebuilds what the client signed:
//!
//! 1. the canonical request ([`canonical_request`]): method, the path with dot segments and
//!    repeated slashes removed and percent-encoded once more (as botocore does for every
//!    service but S3), the query pairs decoded, re-encoded the RFC 3986 way and sorted, the
//!    signed headers lower-cased with their values trimmed and inner runs of spaces folded,
//!    the list of signed header names, and the payload's hash;
//! 2. the string to sign ([`string_to_sign`]): algorithm, timestamp, scope, and the hex
//!    SHA-256 of the canonical request;
//! 3. the signing key ([`signing_key`]): HMAC-SHA256 chained over date, region, service and
//!    `aws4_request`, from `AWS4` + the secret;
//!
//! and compares HMAC(signing key, string to sign) with the request's signature through
//! `hmac`'s constant-time `verify_slice`.
//!
//! The payload hash is `x-amz-content-sha256` when the client sent one (`UNSIGNED-PAYLOAD`
//! skips the body; a hash must also match the body), else the SHA-256 of the body (botocore
//! signs Lambda's bodies that way without sending the header). A presigned URL signs the body's
//! hash or `UNSIGNED-PAYLOAD`; both are accepted. The timestamp must be within five minutes of
//! kiln's clock (a presigned URL: within its `X-Amz-Expires`). A session token
//! (`X-Amz-Security-Token`) is accepted and not checked: kiln's keys are long-term keys.
//!
//! [`verify`] is the one entry point: the REST API calls it for every request, and anything
//! else that must check a signature (a function URL with `AWS_IAM`) calls it the same way.
//! [`precheck`] runs the parts that need no body, so that a request with an unknown key or a
//! stale date is refused before its body is read.

use crate::keys::{Key, Keys};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use time::OffsetDateTime;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const HEADER_DATE: &str = "x-amz-date";
pub const HEADER_CONTENT_SHA256: &str = "x-amz-content-sha256";
const TERMINATOR: &str = "aws4_request";
/// How far a request's timestamp may be from kiln's clock, either way.
pub const MAX_SKEW_SECS: i64 = 5 * 60;
/// A presigned URL may be valid for at most seven days, as on AWS.
const MAX_EXPIRES_SECS: i64 = 7 * 24 * 3600;
/// An `Authorization` header longer than this is refused before it is parsed.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;
/// More signed headers than this is not a real client.
const MAX_SIGNED_HEADERS: usize = 64;

/// AWS's message for a signature that does not match.
pub const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
/// AWS's message for an access key it does not know.
pub const UNKNOWN_KEY: &str = "The security token included in the request is invalid.";
/// AWS's message when a request carries no signature at all.
pub const MISSING_TOKEN: &str = "Missing Authentication Token";

/// Who signed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account_id: String,
    pub access_key_id: String,
    /// The keys file's section name.
    pub key_name: String,
}

/// Why a request was refused; every one is a 403 with AWS's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header and no presigned query.
    #[error("{MISSING_TOKEN}")]
    Missing,
    /// A signature that cannot even be read.
    #[error("{0}")]
    Incomplete(String),
    /// An access key kiln does not know.
    #[error("{UNKNOWN_KEY}")]
    UnknownKey,
    /// A signature that does not match, a wrong scope, or a timestamp out of the window.
    #[error("{0}")]
    Invalid(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "MissingAuthenticationTokenException",
            Self::Incomplete(_) => "IncompleteSignatureException",
            Self::UnknownKey => "UnrecognizedClientException",
            Self::Invalid(_) => "InvalidSignatureException",
        }
    }

    pub fn status(&self) -> u16 {
        403
    }

    fn bad_signature() -> Self {
        Self::Invalid(BAD_SIGNATURE.into())
    }
}

/// The parts of a request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded).
    pub path: &'a str,
    /// The query exactly as sent, without `?`.
    pub query: &'a str,
    pub headers: &'a http::HeaderMap,
}

impl<'a> RequestParts<'a> {
    pub fn of<B>(req: &'a http::Request<B>) -> Self {
        Self {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query().unwrap_or(""),
            headers: req.headers(),
        }
    }
}

/// The scope kiln expects: its region and the service the endpoint belongs to
/// (`lambda` for the Lambda API, `logs` for the CloudWatch Logs API).
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// A signature as a request carries it, read but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub access_key_id: String,
    pub scope_date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: Vec<u8>,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    pub timestamp: OffsetDateTime,
    /// A presigned URL's `X-Amz-Expires`.
    pub expires_secs: Option<i64>,
}

impl Signed {
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/{TERMINATOR}", self.scope_date, self.region, self.service)
    }

    fn presigned(&self) -> bool {
        self.expires_secs.is_some()
    }
}

/// Reads the signature of a request (header or presigned form).
pub fn parse(parts: &RequestParts<'_>) -> Result<Signed, AuthError> {
    let auth = parts.headers.get(http::header::AUTHORIZATION);
    let presigned = query_pairs(parts.query).any(|(k, _)| k == "X-Amz-Algorithm");
    match (auth, presigned) {
        (Some(_), true) => Err(AuthError::Incomplete(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be supplied".into(),
        )),
        (Some(v), false) => parse_header(parts, v.as_bytes()),
        (None, true) => parse_query(parts),
        (None, false) => Err(AuthError::Missing),
    }
}

fn parse_header(parts: &RequestParts<'_>, value: &[u8]) -> Result<Signed, AuthError> {
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthError::Incomplete(format!(
            "The Authorization header is longer than {MAX_AUTHORIZATION_BYTES} bytes."
        )));
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| AuthError::Incomplete("The Authorization header is not valid text.".into()))?;
    let Some(rest) = value.strip_prefix(ALGORITHM).filter(|r| r.starts_with(' ')) else {
        // AWS names only the scheme it found, never the rest of the header.
        let scheme = value.split(' ').next().unwrap_or("");
        let scheme: String = scheme.chars().take(32).collect();
        return Err(AuthError::Incomplete(format!("Unsupported Authorization Type: '{scheme}'; use {ALGORITHM}.")));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for item in rest.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(AuthError::Incomplete(
                "A parameter of the Authorization header is not a valid key=value pair (missing equal-sign).".into(),
            ));
        };
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.is_some() {
            return Err(AuthError::Incomplete(format!("The Authorization header has '{}' twice.", k.trim())));
        }
        *slot = Some(v.trim());
    }
    let date = header_str(parts.headers, HEADER_DATE);
    let mut missing = String::new();
    for (what, present) in
        [("Credential", credential.is_some()), ("Signature", signature.is_some()), ("SignedHeaders", signed.is_some())]
    {
        if !present {
            let _ = write!(missing, "Authorization header requires '{what}' parameter. ");
        }
    }
    if date.is_none() {
        missing.push_str("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
    }
    let (Some(credential), Some(signed), Some(signature), Some(date)) = (credential, signed, signature, date) else {
        return Err(AuthError::Incomplete(missing.trim_end().to_string()));
    };
    build(credential, signed, signature, date, None)
}

fn parse_query(parts: &RequestParts<'_>) -> Result<Signed, AuthError> {
    let mut found: [Option<String>; 6] = Default::default();
    const NAMES: [&str; 6] = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Date",
        "X-Amz-Expires",
    ];
    for (k, v) in query_pairs(parts.query) {
        if let Some(i) = NAMES.iter().position(|n| *n == k) {
            found[i] = Some(String::from_utf8_lossy(&decode(v)).into_owned());
        }
    }
    let missing: Vec<&str> = NAMES.iter().zip(&found).filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
    if !missing.is_empty() {
        return Err(AuthError::Incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", ")
        )));
    }
    let [Some(alg), Some(cred), Some(signed), Some(sig), Some(date), Some(expires)] = found else {
        return Err(AuthError::Missing);
    };
    if alg != ALGORITHM {
        return Err(AuthError::Incomplete(format!("X-Amz-Algorithm only supports \"{ALGORITHM}\"")));
    }
    let expires =
        expires.parse::<i64>().ok().filter(|e| (1..=MAX_EXPIRES_SECS).contains(e)).ok_or_else(|| {
            AuthError::Incomplete(format!("X-Amz-Expires must be a number from 1 to {MAX_EXPIRES_SECS}"))
        })?;
    build(&cred, &signed, &sig, &date, Some(expires))
}

fn build(
    credential: &str,
    signed: &str,
    signature: &str,
    date: &str,
    expires: Option<i64>,
) -> Result<Signed, AuthError> {
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, scope_date, region, service, terminator] = scope.as_slice() else {
        return Err(AuthError::Incomplete(
            "Credential must have exactly five slash-delimited elements, e.g. keyid/date/region/service/term".into(),
        ));
    };
    if *terminator != TERMINATOR {
        return Err(AuthError::Invalid(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
            clip(terminator)
        )));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers.len() > MAX_SIGNED_HEADERS
        || signed_headers.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
        || signed_headers.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(AuthError::Incomplete(
            "SignedHeaders must be lower-case header names in sorted order, separated by ';'.".into(),
        ));
    }
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let signature = hex_decode(signature)
        .filter(|s| s.len() == 32)
        .ok_or_else(|| AuthError::Incomplete("The Signature must be 64 hexadecimal digits.".into()))?;
    let timestamp = parse_amz_date(date).ok_or_else(|| {
        AuthError::Incomplete(format!("Date must be in ISO-8601 'basic format'. Got '{}'.", clip(date)))
    })?;
    Ok(Signed {
        access_key_id: key.to_string(),
        scope_date: scope_date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature,
        amz_date: date.to_string(),
        timestamp,
        expires_secs: expires,
    })
}

/// Everything a signature check needs but the body: the signature read, the key known, the
/// scope and the timestamp right. Run it before reading a body.
pub fn precheck<'k>(
    keys: &'k Keys,
    parts: &RequestParts<'_>,
    expected: Expected<'_>,
    now: OffsetDateTime,
) -> Result<(Signed, &'k Key), AuthError> {
    let signed = parse(parts)?;
    let key = keys.get(&signed.access_key_id).ok_or(AuthError::UnknownKey)?;
    if signed.scope_date != signed.amz_date.get(..8).unwrap_or("") {
        return Err(AuthError::Invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            clip(&signed.scope_date),
            &signed.amz_date[..8],
            signed.amz_date
        )));
    }
    if signed.region != expected.region {
        return Err(AuthError::Invalid(format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            clip(&signed.region)
        )));
    }
    if signed.service != expected.service {
        return Err(AuthError::Invalid(format!(
            "Credential should be scoped to correct service: '{}'. ",
            expected.service
        )));
    }
    check_time(&signed, now)?;
    Ok((signed, key))
}

fn check_time(signed: &Signed, now: OffsetDateTime) -> Result<(), AuthError> {
    let t = signed.timestamp;
    let skew = time::Duration::seconds(MAX_SKEW_SECS);
    if t > now + skew {
        return Err(AuthError::Invalid(format!(
            "Signature not yet current: {} is still later than {} ({} + 5 min.)",
            signed.amz_date,
            amz_date(now + skew),
            amz_date(now)
        )));
    }
    match signed.expires_secs {
        None if t < now - skew => Err(AuthError::Invalid(format!(
            "Signature expired: {} is now earlier than {} ({} - 5 min.)",
            signed.amz_date,
            amz_date(now - skew),
            amz_date(now)
        ))),
        Some(e) if t + time::Duration::seconds(e) < now => Err(AuthError::Invalid(format!(
            "Signature expired: {} is now earlier than {} ({} - {e} sec.)",
            signed.amz_date,
            amz_date(now - time::Duration::seconds(e)),
            amz_date(now)
        ))),
        _ => Ok(()),
    }
}

/// Checks a request's signature over `body`; the one entry point for anything in kiln that
/// authenticates a request.
pub fn verify(
    keys: &Keys,
    parts: &RequestParts<'_>,
    body: &[u8],
    expected: Expected<'_>,
    now: OffsetDateTime,
) -> Result<Principal, AuthError> {
    let (signed, key) = precheck(keys, parts, expected, now)?;
    let signing = signing_key(&key.secret_access_key, &signed.scope_date, &signed.region, &signed.service);
    let claimed = header_str(parts.headers, HEADER_CONTENT_SHA256);
    let body_hash = || hex(&Sha256::digest(body));
    let candidates: Vec<String> = match (claimed, signed.presigned()) {
        (Some(UNSIGNED_PAYLOAD), _) => vec![UNSIGNED_PAYLOAD.into()],
        (Some(h), _) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => vec![h.to_ascii_lowercase()],
        (Some(_), _) => {
            return Err(AuthError::Invalid(format!(
                "x-amz-content-sha256 must be {UNSIGNED_PAYLOAD} or the hex SHA-256 of the body."
            )))
        }
        (None, false) => vec![body_hash()],
        (None, true) => vec![body_hash(), UNSIGNED_PAYLOAD.into()],
    };
    let matched = candidates.iter().any(|payload| {
        let canonical = canonical_request(parts, &signed.signed_headers, payload, signed.presigned());
        let sts = string_to_sign(&signed.amz_date, &signed.scope(), &canonical);
        matches(&signing, &sts, &signed.signature)
    });
    if !matched {
        return Err(AuthError::bad_signature());
    }
    // The signature covers the claimed hash; the body must be what was claimed.
    if let Some(h) = claimed.filter(|h| *h != UNSIGNED_PAYLOAD) {
        if !h.eq_ignore_ascii_case(&body_hash()) {
            return Err(AuthError::Invalid(
                "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
            ));
        }
    }
    Ok(Principal {
        account_id: key.account_id.clone(),
        access_key_id: key.access_key_id.clone(),
        key_name: key.name.clone(),
    })
}

/// Constant-time: `hmac` compares through `subtle`.
fn matches(signing_key: &[u8; 32], string_to_sign: &str, signature: &[u8]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(signing_key) else { return false };
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// The canonical request of SigV4 (see the module docs). `presigned`: the query's
/// `X-Amz-Signature` is left out.
pub fn canonical_request(
    parts: &RequestParts<'_>,
    signed_headers: &[String],
    payload_hash: &str,
    presigned: bool,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(parts.method);
    out.push('\n');
    out.push_str(&canonical_path(parts.path));
    out.push('\n');
    out.push_str(&canonical_query(parts.query, presigned));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        let mut first = true;
        for v in parts.headers.get_all(name.as_str()) {
            if !first {
                out.push(',');
            }
            first = false;
            let text = String::from_utf8_lossy(v.as_bytes());
            let mut words = text.split(|c: char| c.is_ascii_whitespace()).filter(|w| !w.is_empty());
            if let Some(w) = words.next() {
                out.push_str(w);
                for w in words {
                    out.push(' ');
                    out.push_str(w);
                }
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// Dot segments and empty segments removed, then every byte but unreserved ones and `/`
/// percent-encoded (a `%` of the path as sent becomes `%25`).
pub fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut segments: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normal = String::with_capacity(path.len() + 2);
    if path.starts_with('/') {
        normal.push('/');
    }
    normal.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normal.push('/');
    }
    encode(normal.as_bytes(), true)
}

/// Query pairs decoded and re-encoded the RFC 3986 way, sorted by name then value.
pub fn canonical_query(query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(query)
        .filter(|(k, _)| !(presigned && *k == "X-Amz-Signature"))
        .map(|(k, v)| (encode(&decode(k), false), encode(&decode(v), false)))
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(query.len());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// `AWS4-HMAC-SHA256\n<timestamp>\n<scope>\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical_request.as_bytes())))
}

/// The key of one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, TERMINATOR.as_bytes())
}

/// The hex signature of a string to sign (for signing clients and tests).
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac(signing_key, string_to_sign.as_bytes()))
}

/// The `Authorization` header value for a request (what a client sends): used by kiln's
/// own clients and the tests.
pub fn authorization(
    parts: &RequestParts<'_>,
    access_key_id: &str,
    secret: &str,
    amz_date: &str,
    expected: Expected<'_>,
    payload_hash: &str,
) -> String {
    let mut names: Vec<String> = parts.headers.keys().map(|k| k.as_str().to_string()).collect();
    names.sort();
    names.dedup();
    let scope = format!("{}/{}/{}/{TERMINATOR}", &amz_date[..8.min(amz_date.len())], expected.region, expected.service);
    let canonical = canonical_request(parts, &names, payload_hash, false);
    let sts = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(secret, &amz_date[..8.min(amz_date.len())], expected.region, expected.service);
    format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={}",
        names.join(";"),
        signature(&key, &sts)
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else { return [0; 32] };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = s.get(r)?;
        d.bytes().all(|c| c.is_ascii_digit()).then(|| d.parse().ok())?
    };
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(num(0..4)?).ok()?, month, u8::try_from(num(6..8)?).ok()?).ok()?;
    let t = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter(|s| !s.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = (b[i + 1] as char).to_digit(16);
            let l = (b[i + 2] as char).to_digit(16);
            if let (Some(h), Some(l)) = (h, l) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Percent-encodes every byte but `A-Z a-z 0-9 - _ . ~` (and `/` when `keep_slash`).
fn encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The body of the `sigv4_canonical` fuzz target (and of a property test over generated
/// inputs in `cargo test`): the input is split at `0xff` bytes into method, path, query, header
/// lines (`name:value`, separated by `\n`) and body. Panics when a property fails:
///
/// - building the canonical request never panics, gives the same text twice, and its path line
///   holds only unreserved bytes, `/` and `%XX`;
/// - `verify` with a key whose secret the request did not use never accepts, and answers the
///   same twice;
/// - the same request signed with the key (by [`authorization`]) verifies, unless it carries a
///   presigned query or more headers than a signature may name.
#[doc(hidden)]
pub fn fuzz_canonical(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xff);
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
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
    let canonical = canonical_request(&req, &names, UNSIGNED_PAYLOAD, false);
    assert_eq!(canonical, canonical_request(&req, &names, UNSIGNED_PAYLOAD, false), "not deterministic");
    // (The method may hold newlines itself: the path is found after it, not by splitting.)
    let path_line = canonical_path(&path);
    assert!(canonical.starts_with(&format!("{method}\n{path_line}\n")), "{canonical:?}");
    assert!(path_line.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~/%".contains(&b)), "{path_line:?}");
    assert!(path_line.starts_with('/') || !path.starts_with('/'), "{path_line:?}");
    let expected = Expected { region: "us-east-1", service: "lambda" };
    let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let stranger = Keys::parse(
        "[k]\naws_access_key_id = AKIAFUZZ\naws_secret_access_key = unknowable\naccount_id = 111111111111\n",
    );
    let Ok(stranger) = stranger else { panic!("a fixed good keys file") };
    let first = verify(&stranger, &req, body, expected, now);
    assert!(first.is_err(), "accepted without the secret");
    assert_eq!(first, verify(&stranger, &req, body, expected, now), "not deterministic");

    // Signed for real, it verifies.
    let date = amz_date(now);
    let Ok(date_value) = http::HeaderValue::from_str(&date) else { return };
    headers.remove(http::header::AUTHORIZATION);
    headers.remove(HEADER_CONTENT_SHA256);
    headers.insert(HEADER_DATE, date_value);
    if !headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, http::HeaderValue::from_static("localhost:9000"));
    }
    if query_pairs(&query).any(|(k, _)| k == "X-Amz-Algorithm") || headers.keys_len() > MAX_SIGNED_HEADERS {
        return;
    }
    let body_hash = hex(&Sha256::digest(body));
    let req = RequestParts { method: &method, path: &path, query: &query, headers: &headers };
    let value = authorization(&req, "AKIAFUZZ", "known", &date, expected, &body_hash);
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return;
    }
    let Ok(value) = http::HeaderValue::from_str(&value) else { panic!("an Authorization header that is not text") };
    headers.insert(http::header::AUTHORIZATION, value);
    let req = RequestParts { method: &method, path: &path, query: &query, headers: &headers };
    let known =
        Keys::parse("[k]\naws_access_key_id = AKIAFUZZ\naws_secret_access_key = known\naccount_id = 111111111111\n");
    let Ok(known) = known else { panic!("a fixed good keys file") };
    if let Err(e) = verify(&known, &req, body, expected, now) {
        panic!("a request signed with the key was refused: {e}; canonical {canonical:?}");
    }
}

#[cfg(test)]
mod tests;
