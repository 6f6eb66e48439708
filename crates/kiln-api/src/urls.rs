//! Function URLs: the config operations (`/2021-10-31/functions/{name}/url[s]`) and the HTTP
//! front that turns a plain HTTP request into an invocation.
//!
//! A request reaches a function URL in one of two ways: its `Host` is
//! `<url-id>.lambda-url.<region>.<anything>` (the `FunctionUrl` kiln hands out ends in
//! `.localhost:<port>`), or its path is `/lambda-url/<url-id>/<rest>` for clients that cannot
//! choose a host name. [`serve`] then builds the payload format 2.0 event the way Lambda does,
//! invokes the function through the engine, and maps the answer back to HTTP by Lambda's rules:
//! an object with `statusCode` is an HTTP response (headers, `cookies` as `Set-Cookie`, a body
//! that may be base64), any other JSON is a 200 `application/json` with that JSON as its body.
//! CORS preflights are answered here without invoking.
//!
//! `AWS_IAM` URLs need a SigV4 signature (service `lambda`, kiln's region). With
//! `--auth-keys` it is verified for real by [`crate::auth::verify`] against the key set, and the
//! signer must then be allowed to call the URL ([`url_caller_allowed`]: the function's own
//! account, or one its resource policy allows `lambda:InvokeFunctionUrl`); without keys any well-formed signature is accepted ([`iam_caller`]), as every
//! other request is. Every refusal is Lambda's 403 `{"Message":"Forbidden"}`.
//!
//! A url id is looked up in the default account's engine and then in every other account's
//! (ids are 32 random base-36 characters, so they do not collide across accounts).
//!
//! `RESPONSE_STREAM` URLs stream: [`crate::url_stream`] sends the answer as the function
//! writes it. `BUFFERED` ones send it once the function has finished.

use crate::accounts::Accounts;
use crate::auth;
use crate::error::{code, ApiError};
use crate::handlers::{empty, marker, ok_json, parse_json, read_body, small_too_large, Result, SMALL_BODY};
use crate::{full, Body, Call};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use kiln_engine::{Engine, EngineError, UrlInput, UrlTarget};
use kiln_model::urls::{self as model, AuthType, Cors, InvokeMode, UrlConfig};
use kiln_model::{limits, FunctionRef};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

/// The first path segment of the path form.
pub const PATH_PREFIX: &str = "lambda-url";
/// The label after the url id in a function URL's host name.
const HOST_LABEL: &str = "lambda-url";

// ---- config operations ------------------------------------------------------------------

/// The config operations; anything else under `2021-10-31` is an unknown operation.
pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    seg: &[&str],
    req: Request<crate::ReqBody>,
) -> Result<Response<Body>> {
    let host = host_header(req.headers()).unwrap_or_default().to_string();
    match (method, seg) {
        (&Method::POST, ["2021-10-31", "functions", name, "url"]) => {
            let r = url_ref(name, call)?;
            let input = url_input(req).await?;
            let (q, c) = engine.create_url(&r, input)?;
            ok_json(StatusCode::CREATED, config_json(engine, &r, &q, &c, &host, false))
        }
        (&Method::GET, ["2021-10-31", "functions", name, "url"]) => {
            let r = url_ref(name, call)?;
            let (q, c) = engine.get_url(&r)?;
            ok_json(StatusCode::OK, config_json(engine, &r, &q, &c, &host, true))
        }
        (&Method::PUT, ["2021-10-31", "functions", name, "url"]) => {
            let r = url_ref(name, call)?;
            let input = url_input(req).await?;
            let (q, c) = engine.update_url(&r, input)?;
            ok_json(StatusCode::OK, config_json(engine, &r, &q, &c, &host, true))
        }
        (&Method::DELETE, ["2021-10-31", "functions", name, "url"]) => {
            engine.delete_url(&url_ref(name, call)?)?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["2021-10-31", "functions", name, "urls"]) => {
            let r = FunctionRef { name: FunctionRef::parse(name, None)?.name, qualifier: None };
            let max = match call.query("MaxItems") {
                None => None,
                Some(v) => match v.parse::<usize>() {
                    Ok(m) if (1..=50).contains(&m) => Some(m),
                    _ => return Err(ApiError::validation(format!(
                        "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 50"
                    ))),
                },
            };
            let page = engine.list_urls(&r.name, marker(call), max)?;
            let items: Vec<Value> =
                page.items.iter().map(|(q, c)| config_json(engine, &r, q, c, &host, true)).collect();
            let mut out = json!({ "FunctionUrlConfigs": items });
            if let Some(m) = page.next_marker {
                out["NextMarker"] = json!(m);
            }
            ok_json(StatusCode::OK, out)
        }
        _ => Err(ApiError::unknown_operation()),
    }
}

/// The function and alias of a config operation. The qualifier (in the name or the query) must
/// match the model's `FunctionUrlQualifier`: an alias, never a version number or `$LATEST`.
fn url_ref(name: &str, call: &Call) -> Result<FunctionRef> {
    let query = call.query("Qualifier").filter(|q| !q.is_empty());
    if let Some(q) = query {
        model::validate_qualifier(q)?;
    }
    if let Some(q) = FunctionRef::parse(name, None)?.qualifier {
        model::validate_qualifier(&q.to_string())?;
    }
    Ok(FunctionRef::parse(name, query)?)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UrlIn {
    auth_type: Option<String>,
    invoke_mode: Option<String>,
    cors: Option<Cors>,
}

async fn url_input(req: Request<crate::ReqBody>) -> Result<UrlInput> {
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let input: UrlIn = parse_json(&body)?;
    Ok(UrlInput {
        auth_type: input.auth_type.as_deref().map(AuthType::parse).transpose()?,
        invoke_mode: input.invoke_mode.as_deref().map(InvokeMode::parse).transpose()?,
        cors: input.cors,
    })
}

/// `2021-10-06T18:18:20.436000Z`: ISO-8601 with microseconds, as Lambda writes URL times.
fn iso_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.format(&f).unwrap_or_default()
}

/// `http://<url-id>.lambda-url.<region>.localhost[:port]/`, with the port the client reached
/// kiln on (from the `Host` of the config request).
pub fn function_url(url_id: &str, region: &str, host: &str) -> String {
    let port = host.rsplit_once(':').map(|(_, p)| p).filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match port {
        Some(p) => format!("http://{url_id}.{HOST_LABEL}.{region}.localhost:{p}/"),
        None => format!("http://{url_id}.{HOST_LABEL}.{region}.localhost/"),
    }
}

/// `FunctionUrlConfig`; CreateFunctionUrlConfig's answer has no `LastModifiedTime`.
fn config_json(engine: &Engine, r: &FunctionRef, q: &str, c: &UrlConfig, host: &str, modified: bool) -> Value {
    let qualifier = (q != kiln_model::Qualifier::LATEST).then_some(q);
    let mut v = json!({
        "FunctionUrl": function_url(&c.url_id, &engine.partition().region, host),
        "FunctionArn": engine.partition().function_arn(r.name.as_str(), qualifier),
        "AuthType": c.auth_type.as_str(),
        "CreationTime": iso_time(c.creation_ms),
        "InvokeMode": c.invoke_mode.as_str(),
    });
    if modified {
        v["LastModifiedTime"] = json!(iso_time(c.last_modified_ms));
    }
    if let Some(cors) = &c.cors {
        v["Cors"] = serde_json::to_value(cors).unwrap_or(Value::Null);
    }
    v
}

// ---- the HTTP front -------------------------------------------------------------------------

/// A request for a function URL: the url id it names and the path the function sees.
pub(crate) struct UrlRequest {
    pub url_id: String,
    pub raw_path: String,
}

fn host_header(h: &HeaderMap) -> Option<&str> {
    h.get(http::header::HOST).and_then(|v| v.to_str().ok())
}

/// Whether `req` is for a function URL, by its host name or its path.
pub(crate) fn url_request<B>(req: &Request<B>) -> Option<UrlRequest> {
    let host = host_header(req.headers()).or_else(|| req.uri().host()).unwrap_or("");
    let host =
        host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    let mut labels = host.splitn(3, '.');
    if let (Some(id), Some(label), Some(_)) = (labels.next(), labels.next(), labels.next()) {
        if label.eq_ignore_ascii_case(HOST_LABEL) && !id.is_empty() {
            return Some(UrlRequest { url_id: id.to_ascii_lowercase(), raw_path: req.uri().path().to_string() });
        }
    }
    let rest = req.uri().path().strip_prefix('/')?.strip_prefix(PATH_PREFIX)?.strip_prefix('/')?;
    let (id, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Some(UrlRequest { url_id: id.to_ascii_lowercase(), raw_path: path.to_string() })
}

/// What the URL front answers: a buffered body or a streamed one.
pub(crate) type UrlBody = http_body_util::Either<Body, crate::url_stream::StreamedBody>;

/// An answer of the URL front in Lambda's shape for its own refusals: `{"Message": …}`.
fn refusal(status: u16, error_type: &'static str, message: Option<&str>) -> Response<Body> {
    let mut r = Response::new(full(json!({ "Message": message }).to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(crate::wire::ERROR_TYPE, HeaderValue::from_static(error_type));
    r
}

/// What Lambda answers when the function failed, timed out or answered with a malformed
/// HTTP response: a 502 with a plain `Internal Server Error`.
pub(crate) fn bad_gateway() -> Response<Body> {
    let mut r = Response::new(full("Internal Server Error"));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The access key of a request to an `AWS_IAM` URL if it carries a well-formed SigV4
/// signature (an `Authorization` header or a presigned query), else `None` (403).
///
/// Only the form is checked: this is what an `AWS_IAM` URL asks of a request when kiln runs
/// without `--auth-keys` (as every API request is then accepted); with keys, [`invoke`]
/// verifies the signature through [`crate::auth::verify`] instead.
pub(crate) fn iam_caller(headers: &HeaderMap, query: &[(String, String)]) -> Option<String> {
    fn credential_key(c: &str) -> Option<String> {
        let parts: Vec<&str> = c.split('/').collect();
        match parts.as_slice() {
            [key, date, region, service, "aws4_request"]
                if !key.is_empty()
                    && date.len() == 8
                    && date.bytes().all(|b| b.is_ascii_digit())
                    && !region.is_empty()
                    && !service.is_empty() =>
            {
                Some((*key).to_string())
            }
            _ => None,
        }
    }
    fn is_signature(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
    }
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let fields = auth.strip_prefix("AWS4-HMAC-SHA256 ")?;
        let (mut key, mut signed, mut sig) = (None, false, false);
        for f in fields.split(',') {
            match f.trim().split_once('=') {
                Some(("Credential", c)) => key = credential_key(c),
                Some(("SignedHeaders", h)) => signed = !h.is_empty(),
                Some(("Signature", s)) => sig = is_signature(s),
                _ => {}
            }
        }
        return key.filter(|_| signed && sig && headers.contains_key("x-amz-date"));
    }
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if q("X-Amz-Algorithm") != Some("AWS4-HMAC-SHA256") {
        return None;
    }
    let ok = q("X-Amz-SignedHeaders").is_some_and(|h| !h.is_empty())
        && q("X-Amz-Signature").is_some_and(is_signature)
        && q("X-Amz-Date").is_some();
    q("X-Amz-Credential").and_then(credential_key).filter(|_| ok)
}

/// Whether a body with this `Content-Type` is passed as text (otherwise base64).
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct.to_ascii_lowercase();
    ct.starts_with("text/")
        || ["json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "graphql"].iter().any(|t| ct.contains(t))
}

/// `07/Sep/2021:22:50:22 +0000`, the event's `requestContext.time`, written into a stack buffer
/// (this runs on every call: no format description to interpret, no allocation).
struct ClfTime([u8; 26]);

impl ClfTime {
    fn of(ms: i64) -> Self {
        const MONTHS: [&[u8; 3]; 12] =
            [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
        let t =
            time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut out = *b"01/Jan/1970:00:00:00 +0000";
        let two = |out: &mut [u8; 26], at: usize, n: u8| {
            out[at] = b'0' + n / 10;
            out[at + 1] = b'0' + n % 10;
        };
        two(&mut out, 0, t.day());
        out[3..6].copy_from_slice(MONTHS[usize::from(u8::from(t.month()) - 1)]);
        // Four digits, as the format has; years past 9999 are out of the timestamp's range here.
        let year = t.year().clamp(0, 9999) as u16;
        for (i, d) in [year / 1000, year / 100 % 10, year / 10 % 10, year % 10].into_iter().enumerate() {
            out[7 + i] = b'0' + d as u8;
        }
        two(&mut out, 12, t.hour());
        two(&mut out, 15, t.minute());
        two(&mut out, 18, t.second());
        Self(out)
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and letters are ever written.
        std::str::from_utf8(&self.0).unwrap_or("01/Jan/1970:00:00:00 +0000")
    }
}

impl serde::Serialize for ClfTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `<url-id>.lambda-url.<region>.localhost`, the event's `requestContext.domainName`, put
/// together by concatenation (no formatting machinery on every call).
struct Domain<'a> {
    url_id: &'a str,
    region: &'a str,
}

impl serde::Serialize for Domain<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut d = String::with_capacity(self.url_id.len() + self.region.len() + HOST_LABEL.len() + 12);
        for part in [self.url_id, ".", HOST_LABEL, ".", self.region, ".localhost"] {
            d.push_str(part);
        }
        s.serialize_str(&d)
    }
}

/// The caller's address as the event writes it (`sourceIp`, `x-forwarded-for`); IPv4, the
/// common case, without the formatting machinery.
fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
            out
        }
        std::net::IpAddr::V6(_) => ip.to_string(),
    }
}

/// What the event is built from, besides the body.
struct EventInput<'a> {
    url_id: &'a str,
    region: &'a str,
    account_id: &'a str,
    method: &'a str,
    raw_path: &'a str,
    raw_query: &'a str,
    headers: &'a HeaderMap,
    source_ip: String,
    request_id: &'a str,
    now_ms: i64,
    /// The caller of an `AWS_IAM` URL: access key and account.
    iam: Option<(&'a str, &'a str)>,
}

/// A JSON object written from pairs in the order given.
struct Pairs<'a, K: serde::Serialize, V: serde::Serialize>(&'a [(K, V)]);

impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for Pairs<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

// The event is written straight from borrowed request parts (no `serde_json::Value` tree):
// this is the URL front's share of every invocation's cost.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    version: &'static str,
    route_key: &'static str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: Pairs<'a, &'a str, Cow<'a, str>>,
    #[serde(skip_serializing_if = "Pairs::is_empty")]
    query_string_parameters: Pairs<'a, String, String>,
    request_context: RequestContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

impl<K: serde::Serialize, V: serde::Serialize> Pairs<'_, K, V> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    account_id: &'a str,
    api_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorizer: Option<Authorizer<'a>>,
    domain_name: Domain<'a>,
    domain_prefix: &'a str,
    http: HttpContext<'a>,
    request_id: &'a str,
    route_key: &'static str,
    stage: &'static str,
    time: ClfTime,
    time_epoch: i64,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpContext<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    source_ip: &'a str,
    user_agent: Cow<'a, str>,
}

#[derive(serde::Serialize)]
struct Authorizer<'a> {
    iam: IamContext<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct IamContext<'a> {
    access_key: &'a str,
    account_id: &'a str,
    caller_id: Option<&'a str>,
    cognito_identity: Option<&'a str>,
    principal_org_id: Option<&'a str>,
    user_arn: Option<&'a str>,
    user_id: Option<&'a str>,
}

fn lossy(v: &HeaderValue) -> Cow<'_, str> {
    match v.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(String::from_utf8_lossy(v.as_bytes()).into_owned()),
    }
}

/// The payload format 2.0 event of one request, as JSON.
fn event_json(e: &EventInput<'_>, body: &[u8]) -> Vec<u8> {
    let mut cookies: Vec<&str> = Vec::new();
    let mut headers: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(e.headers.keys_len() + 2);
    // `HeaderMap::iter` yields a name's values one after the other: they are joined as they come,
    // with no lookup by name.
    for (name, v) in e.headers {
        if name == http::header::COOKIE {
            if let Ok(v) = v.to_str() {
                cookies.extend(v.split(';').map(str::trim).filter(|c| !c.is_empty()));
            }
            continue;
        }
        match headers.last_mut() {
            Some((last, joined)) if *last == name.as_str() => {
                let j = joined.to_mut();
                j.push(',');
                j.push_str(&lossy(v));
            }
            _ => headers.push((name.as_str(), lossy(v))),
        }
    }
    match headers.iter_mut().find(|(n, _)| *n == "x-forwarded-for") {
        Some((_, v)) => {
            let v = v.to_mut();
            v.push_str(", ");
            v.push_str(&e.source_ip);
        }
        None => headers.push(("x-forwarded-for", Cow::Borrowed(&e.source_ip))),
    }
    if !headers.iter().any(|(n, _)| *n == "x-forwarded-proto") {
        headers.push(("x-forwarded-proto", Cow::Borrowed("http")));
    }
    let mut query: Vec<(String, String)> = Vec::new();
    for pair in e.raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (crate::percent_decode(k), crate::percent_decode(v));
        match query.iter_mut().find(|(n, _)| *n == k) {
            Some((_, prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            None => query.push((k, v)),
        }
    }
    let user_agent = e.headers.get(http::header::USER_AGENT).map_or(Cow::Borrowed(""), lossy);
    let (body, is_base64_encoded) = if body.is_empty() {
        (None, false)
    } else {
        let content_type = e.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        match std::str::from_utf8(body) {
            Ok(text) if is_text(content_type) => (Some(Cow::Borrowed(text)), false),
            _ => (Some(Cow::Owned(crate::wire::b64(body))), true),
        }
    };
    let event = Event {
        version: "2.0",
        route_key: "$default",
        raw_path: e.raw_path,
        raw_query_string: e.raw_query,
        cookies,
        headers: Pairs(&headers),
        query_string_parameters: Pairs(&query),
        request_context: RequestContext {
            account_id: e.account_id,
            api_id: e.url_id,
            authorizer: e.iam.map(|(access_key, account_id)| Authorizer {
                iam: IamContext {
                    access_key,
                    account_id,
                    caller_id: None,
                    cognito_identity: None,
                    principal_org_id: None,
                    user_arn: None,
                    user_id: None,
                },
            }),
            domain_name: Domain { url_id: e.url_id, region: e.region },
            domain_prefix: e.url_id,
            http: HttpContext {
                method: e.method,
                path: e.raw_path,
                protocol: "HTTP/1.1",
                source_ip: &e.source_ip,
                user_agent,
            },
            request_id: e.request_id,
            route_key: "$default",
            stage: "$default",
            time: ClfTime::of(e.now_ms),
            time_epoch: e.now_ms,
        },
        body,
        is_base64_encoded,
    };
    // One pass into one buffer, sized for the event's fixed members (~450 bytes), its headers,
    // query and cookies, and the body (base64 grows it by a third; text may need escapes).
    let variable: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 6).sum::<usize>()
        + 2 * e.raw_query.len()
        + event.cookies.iter().map(|c| c.len() + 3).sum::<usize>()
        + event.body.as_ref().map_or(0, |b| b.len() + b.len() / 8);
    let mut out = Vec::with_capacity(512 + variable);
    // Strings, integers and maps with string keys: serializing them into a Vec cannot fail.
    match serde_json::to_writer(&mut out, &event) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// Headers a function may not set: the connection's own, and the length hyper computes.
pub(crate) fn is_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade" | "te" | "trailer"
    )
}

/// The members of an HTTP-shaped answer Lambda reads; the rest is skipped unread.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpAnswer {
    /// `Some(Null)` for an explicit `null`: the answer still claims to be an HTTP response.
    #[serde(default, deserialize_with = "present")]
    status_code: Option<Value>,
    headers: Option<Value>,
    cookies: Option<Value>,
    body: Option<Value>,
    is_base64_encoded: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

/// The HTTP response for a function's answer, by Lambda's rules; `None` when the answer claims
/// to be an HTTP response (it has `statusCode`) but is malformed. The answer is parsed once,
/// into the members that matter.
pub(crate) fn answer_response(payload: &Bytes) -> Option<Response<Body>> {
    let json_response = |body: Bytes| {
        let mut r = Response::new(full(body));
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    // Most answers that are not HTTP responses can be told without parsing them: the member
    // `statusCode` can only be spelled out literally or with `\u` escapes, and a JSON string
    // starts with a quote. Anything else (an object without `statusCode`, other JSON, no JSON)
    // is passed on as it is, which is what the parse below would decide.
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'"') && !contains(payload, b"statusCode") && !contains(payload, b"\\u") {
        return Some(json_response(payload.clone()));
    }
    let answer = match serde_json::from_slice::<HttpAnswer>(payload) {
        Ok(a) if a.status_code.is_some() => a,
        // An object without `statusCode` is sent as the JSON it is (the function's own bytes,
        // not a copy).
        Ok(_) => return Some(json_response(payload.clone())),
        // A string is its own body; any other JSON, or no JSON at all, is passed through.
        Err(_) => {
            return Some(json_response(match serde_json::from_slice::<String>(payload) {
                Ok(s) => Bytes::from(s),
                Err(_) => payload.clone(),
            }))
        }
    };
    let status = answer.status_code?.as_u64().filter(|s| (100..=599).contains(s))?;
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(u16::try_from(status).ok()?).ok()?;
    match answer.headers {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let v = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                let name = HeaderName::from_bytes(k.as_bytes()).ok()?;
                if is_hop_header(&name) {
                    continue;
                }
                r.headers_mut().insert(name, HeaderValue::from_str(&v).ok()?);
            }
        }
        Some(_) => return None,
    }
    match answer.cookies {
        None | Some(Value::Null) => {}
        Some(Value::Array(cs)) => {
            for c in cs {
                let v = HeaderValue::from_str(c.as_str()?).ok()?;
                r.headers_mut().append(http::header::SET_COOKIE, v);
            }
        }
        Some(_) => return None,
    }
    let base64 = match answer.is_base64_encoded {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return None,
    };
    let body = match answer.body {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if base64 => Bytes::from(crate::wire::unb64(&s)?),
        Some(Value::String(s)) => Bytes::from(s),
        Some(_) => return None,
    };
    if !r.headers().contains_key(http::header::CONTENT_TYPE) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    *r.body_mut() = full(body);
    Some(r)
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn header_list(v: &Option<Vec<String>>) -> Option<HeaderValue> {
    v.as_ref().filter(|l| !l.is_empty()).and_then(|l| HeaderValue::from_str(&l.join(",")).ok())
}

/// Answers a CORS preflight from the URL's config, without invoking the function.
fn preflight(cors: &Cors, origin: Option<&str>) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    let h = r.headers_mut();
    h.insert(http::header::VARY, HeaderValue::from_static("Origin"));
    let Some(allowed) = origin.and_then(|o| cors.allowed_origin(o)) else { return r };
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if let Some(v) = header_list(&cors.allow_methods) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = header_list(&cors.allow_headers) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(v) = header_list(&cors.expose_headers) {
        h.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    if let Some(age) = cors.max_age {
        h.insert(http::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    if cors.allow_credentials == Some(true) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    r
}

/// Puts the URL's CORS headers on an answer (replacing any the function set).
pub(crate) fn add_cors<B>(r: &mut Response<B>, cors: &Cors, origin: Option<&str>) {
    let h = r.headers_mut();
    let theirs: Vec<HeaderName> = h.keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
    for k in theirs {
        h.remove(k);
    }
    h.append(http::header::VARY, HeaderValue::from_static("Origin"));
    let Some(allowed) = origin.and_then(|o| cors.allowed_origin(o)) else { return };
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if let Some(v) = header_list(&cors.expose_headers) {
        h.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    if cors.allow_credentials == Some(true) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

/// Serves one request for a function URL; `accounts` is set when kiln runs with `--auth-keys`.
pub(crate) async fn serve(
    engine: &Engine,
    accounts: Option<&Accounts>,
    u: UrlRequest,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<UrlBody> {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    // The engine's id generator, as Invoke's: no system call per request.
    let request_id: &str = kiln_engine::ids::uuid_v4().hyphenated().encode_lower(&mut id);
    let header = HeaderValue::from_str(request_id).ok();
    let mut resp = match model::is_url_id(&u.url_id).then(|| find_target(engine, accounts, &u.url_id)).flatten() {
        None => refusal(404, code::RESOURCE_NOT_FOUND, Some("Not Found")).map(http_body_util::Either::Left),
        Some((engine, target)) => invoke(&engine, accounts, &target, &u, req, peer, request_id).await,
    };
    if let Some(v) = header {
        resp.headers_mut().insert(crate::wire::REQUEST_ID, v);
    }
    resp
}

/// The engine (account) a url id belongs to, and what it leads to.
fn find_target(default: &Engine, accounts: Option<&Accounts>, url_id: &str) -> Option<(Engine, Arc<UrlTarget>)> {
    if let Some(t) = default.url_target(url_id) {
        return Some((default.clone(), t));
    }
    accounts?.engines().into_iter().find_map(|e| e.url_target(url_id).map(|t| (e, t)))
}

/// Whether a verified signer may call an `AWS_IAM` URL of `url_account`'s function: its own
/// account may, another one when the function's resource policy (`policy`, read only then)
/// allows it `lambda:InvokeFunctionUrl` for `AWS_IAM` URLs, as Lambda does.
pub(crate) fn url_caller_allowed(
    caller: &auth::Principal,
    url_account: &str,
    policy: impl FnOnce() -> Option<String>,
) -> bool {
    caller.account_id == url_account
        || policy().is_some_and(|p| kiln_model::policy::allows_url(&p, &caller.account_id, "AWS_IAM"))
}

/// The resource policy that governs a URL's target: the alias's, or the unqualified function's.
fn url_policy(engine: &Engine, target: &UrlTarget) -> Option<String> {
    engine.resource_policy(target.function_ref()).ok().flatten()
}

/// Lambda's answer to every refused `AWS_IAM` request (unsigned, bad signature, not allowed).
fn forbidden() -> Response<UrlBody> {
    refusal(403, code::ACCESS_DENIED, Some("Forbidden")).map(http_body_util::Either::Left)
}

/// The buffered answer for an invocation the engine refused or could not run.
pub(crate) fn engine_refusal(e: EngineError) -> Response<Body> {
    match e {
        EngineError::Throttled { .. } => refusal(429, code::TOO_MANY_REQUESTS, Some("Rate Exceeded.")),
        EngineError::TooLarge(m) => refusal(413, code::REQUEST_TOO_LARGE, Some(&m)),
        EngineError::NotFound(_) => refusal(404, code::RESOURCE_NOT_FOUND, Some("Not Found")),
        e @ EngineError::Internal { .. } => {
            tracing::error!(error = %e.chain(), "function url invocation failed");
            refusal(500, code::SERVICE, Some("Internal Server Error"))
        }
        // The function cannot run (still Pending, failed, …): as a function that failed.
        e => {
            tracing::info!(error = %e, "function url invocation refused");
            bad_gateway()
        }
    }
}

/// Who called an `AWS_IAM` URL: access key and account.
struct IamCaller {
    access_key: String,
    account_id: String,
}

async fn invoke(
    engine: &Engine,
    accounts: Option<&Accounts>,
    target: &Arc<UrlTarget>,
    u: &UrlRequest,
    req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &str,
) -> Response<UrlBody> {
    let config = &target.config;
    let partition = engine.partition();
    let origin = req.headers().get(http::header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let is_preflight = req.method() == Method::OPTIONS
        && origin.is_some()
        && req.headers().contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if let (true, Some(cors)) = (is_preflight, &config.cors) {
        return preflight(cors, origin.as_deref()).map(http_body_util::Either::Left);
    }
    let raw_query = req.uri().query().unwrap_or("").to_string();
    // With keys, the parts of the signature that need no body are checked before it is read.
    let keys = accounts.map(|a| (a.keys(), a.region().to_string()));
    let mut iam = None;
    if config.auth_type == AuthType::AwsIam {
        match &keys {
            None => {
                let query: Vec<(String, String)> = raw_query
                    .split('&')
                    .filter(|s| !s.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (crate::percent_decode(k), crate::percent_decode(v))
                    })
                    .collect();
                match iam_caller(req.headers(), &query) {
                    Some(key) => iam = Some(IamCaller { access_key: key, account_id: partition.account_id.clone() }),
                    None => return forbidden(),
                }
            }
            Some((keys, region)) => {
                let expected = auth::Expected { region, service: crate::wire::SERVICE_LAMBDA };
                if let Err(e) =
                    auth::precheck(keys, &auth::RequestParts::of(&req), expected, time::OffsetDateTime::now_utc())
                {
                    tracing::debug!(url_id = %config.url_id, code = e.code(), "function url request refused: {e}");
                    return forbidden();
                }
            }
        }
    }
    let (parts, body) = req.into_parts();
    let limit = limits::SYNC_PAYLOAD_MAX_BYTES;
    let too_large = || {
        let m = limits::request_too_large_message(limit, Some("InvokeFunction"));
        refusal(413, code::REQUEST_TOO_LARGE, Some(&m)).map(http_body_util::Either::Left)
    };
    // A declared Content-Length over the limit is refused before anything is read.
    if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
        return too_large();
    }
    let body = match crate::timeouts::read_limited(body, limit).await {
        Ok(b) => b,
        Err(crate::timeouts::BodyError::TooLarge) => return too_large(),
        Err(crate::timeouts::BodyError::TimedOut) => {
            return refusal(400, code::INVALID_REQUEST_CONTENT, Some("The request body was not received in time"))
                .map(http_body_util::Either::Left)
        }
        Err(crate::timeouts::BodyError::Broken) => {
            return refusal(400, code::INVALID_REQUEST_CONTENT, Some("The request body could not be read"))
                .map(http_body_util::Either::Left)
        }
    };
    if let (AuthType::AwsIam, Some((keys, region))) = (config.auth_type, &keys) {
        let expected = auth::Expected { region, service: crate::wire::SERVICE_LAMBDA };
        let signed = auth::RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
        };
        match auth::verify(keys, &signed, &body, expected, time::OffsetDateTime::now_utc()) {
            Ok(p) if url_caller_allowed(&p, &partition.account_id, || url_policy(engine, target)) => {
                iam = Some(IamCaller { access_key: p.access_key_id, account_id: p.account_id });
            }
            Ok(p) => {
                tracing::debug!(url_id = %config.url_id, caller = %p.account_id, "function url caller not allowed");
                return forbidden();
            }
            Err(e) => {
                tracing::debug!(url_id = %config.url_id, code = e.code(), "function url request refused: {e}");
                return forbidden();
            }
        }
    }
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let input = EventInput {
        url_id: &config.url_id,
        region: &partition.region,
        account_id: &partition.account_id,
        method: parts.method.as_str(),
        raw_path: &u.raw_path,
        raw_query: &raw_query,
        headers: &parts.headers,
        source_ip: ip_text(peer.ip()),
        request_id,
        now_ms,
        iam: iam.as_ref().map(|c| (c.access_key.as_str(), c.account_id.as_str())),
    };
    let payload = Bytes::from(event_json(&input, &body));
    drop(body);
    if config.invoke_mode == InvokeMode::ResponseStream {
        return match engine.invoke_url_streaming(target, request_id.to_string(), payload) {
            Ok(run) => crate::url_stream::respond(run, config.cors.as_ref(), origin.as_deref()).await,
            Err(e) => {
                let mut resp = engine_refusal(e);
                if let Some(cors) = &config.cors {
                    add_cors(&mut resp, cors, origin.as_deref());
                }
                resp.map(http_body_util::Either::Left)
            }
        };
    }
    let mut resp = match engine.invoke_url(target, request_id.to_string(), payload).await {
        Ok((_, true)) => bad_gateway(),
        Ok((answer, false)) => answer_response(&answer).unwrap_or_else(|| {
            tracing::info!(url_id = %config.url_id, request_id, "function answered with a malformed HTTP response");
            bad_gateway()
        }),
        Err(e) => engine_refusal(e),
    };
    if let Some(cors) = &config.cors {
        add_cors(&mut resp, cors, origin.as_deref());
    }
    resp.map(http_body_util::Either::Left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(r: Response<Body>) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async { http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes().to_vec() })
    }

    #[test]
    fn url_requests_are_found_by_host_or_path() {
        let id = "abcdefghijklmnopqrstuvwxyz012345";
        let req = Request::builder()
            .uri("/x/y?z=1")
            .header("host", format!("{id}.lambda-url.us-east-1.localhost:9000"))
            .body(())
            .unwrap();
        let u = url_request(&req).unwrap();
        assert_eq!((u.url_id.as_str(), u.raw_path.as_str()), (id, "/x/y"));
        let req =
            Request::builder().uri(format!("/lambda-url/{id}/a/b")).header("host", "127.0.0.1:1").body(()).unwrap();
        let u = url_request(&req).unwrap();
        assert_eq!((u.url_id.as_str(), u.raw_path.as_str()), (id, "/a/b"));
        let req = Request::builder().uri(format!("/lambda-url/{id}")).body(()).unwrap();
        assert_eq!(url_request(&req).unwrap().raw_path, "/");
        let req = Request::builder().uri("/2015-03-31/functions").header("host", "localhost:9000").body(()).unwrap();
        assert!(url_request(&req).is_none());
    }

    fn answer(payload: &'static [u8]) -> Option<Response<Body>> {
        answer_response(&Bytes::from_static(payload))
    }

    #[test]
    fn answers_map_by_lambdas_rules() {
        let r = answer(br#"{"message":"hi"}"#).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(body_of(r), br#"{"message":"hi"}"#);

        let r = answer(br#""Hello""#).unwrap();
        assert_eq!(body_of(r), b"Hello");
        let r = answer(b" \n \"Hi\"").unwrap();
        assert_eq!(body_of(r), b"Hi");
        for other in [&b"[1,2]"[..], b"42", b"not json", b"", br#"{"a":{"statusCode":1}}"#] {
            let r = answer(other).unwrap();
            assert_eq!((r.status(), body_of(r)), (StatusCode::OK, other.to_vec()));
        }
        // `statusCode` spelled with an escape is still an HTTP response.
        let r = answer(br#"{"status\u0043ode":204}"#).unwrap();
        assert_eq!(r.status(), 204);

        let r = answer(
            br#"{"statusCode":201,"headers":{"X-A":"1","Content-Type":"text/plain"},"cookies":["a=1","b=2"],"body":"aGk=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["content-type"], "text/plain");
        let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(body_of(r), b"hi");

        for bad in [
            &br#"{"statusCode":"abc"}"#[..],
            br#"{"statusCode":99}"#,
            br#"{"statusCode":200,"headers":[1]}"#,
            br#"{"statusCode":200,"headers":{"bad name":"x"}}"#,
            br#"{"statusCode":200,"cookies":"a=1"}"#,
            br#"{"statusCode":200,"body":"%%%","isBase64Encoded":true}"#,
            br#"{"statusCode":200,"isBase64Encoded":"yes"}"#,
        ] {
            assert!(answer(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn events_have_the_2_0_shape() {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.append("cookie", HeaderValue::from_static("c1=v1; c2=v2"));
        headers.append("content-type", HeaderValue::from_static("application/octet-stream"));
        let e = EventInput {
            url_id: "id",
            region: "us-east-1",
            account_id: "000000000000",
            method: "POST",
            raw_path: "/p",
            raw_query: "a=1&a=2&b=%20x",
            headers: &headers,
            source_ip: "127.0.0.1".into(),
            request_id: "rid",
            now_ms: 1_631_055_022_677,
            iam: None,
        };
        let event =
            |e: &EventInput<'_>, body: &[u8]| -> Value { serde_json::from_slice(&event_json(e, body)).unwrap() };
        let v = event(&e, &[0xff, 0x00]);
        assert_eq!(v["headers"]["x-multi"], "a,b");
        assert!(v["headers"].get("cookie").is_none());
        assert_eq!(v["cookies"], json!(["c1=v1", "c2=v2"]));
        assert_eq!(v["queryStringParameters"], json!({ "a": "1,2", "b": " x" }));
        assert_eq!(v["isBase64Encoded"], true);
        assert_eq!(v["body"], "/wA=");
        assert_eq!(v["requestContext"]["time"], "07/Sep/2021:22:50:22 +0000");
        assert_eq!(v["requestContext"]["timeEpoch"], 1_631_055_022_677_i64);
        assert_eq!(v["requestContext"]["domainName"], "id.lambda-url.us-east-1.localhost");
        assert!(v["requestContext"].get("authorizer").is_none());
        let v = event(&EventInput { raw_query: "", ..e }, b"");
        assert!(v.get("body").is_none() && v.get("queryStringParameters").is_none());
    }

    #[test]
    fn clf_times_are_written_as_the_time_crate_formats_them() {
        let f = time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
        // Across leap days, month and year ends, and the epoch.
        for ms in [0, 951_782_400_000, 1_631_055_022_677, 1_709_164_799_999, 1_709_251_200_000, 1_798_761_599_999]
            .into_iter()
            .chain((0..400).map(|d| 1_704_067_200_000 + d * 86_400_000 + d * 3_723_456))
        {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            assert_eq!(ClfTime::of(ms).as_str(), t.format(&f).unwrap(), "{ms}");
        }
    }

    #[test]
    fn source_ips_are_written_as_display_writes_them() {
        for ip in ["127.0.0.1", "0.0.0.0", "10.20.100.255", "192.168.1.9", "::1", "::ffff:10.0.0.1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn iam_needs_a_well_formed_signature() {
        let sig = "a".repeat(64);
        let mut h = HeaderMap::new();
        assert_eq!(iam_caller(&h, &[]), None);
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ))
            .unwrap(),
        );
        assert_eq!(iam_caller(&h, &[]), None, "x-amz-date is part of a signed request");
        h.insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
        assert_eq!(iam_caller(&h, &[]).as_deref(), Some("AKID"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        assert_eq!(iam_caller(&h, &[]), None);
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let presigned = q(&[
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "AKID/20240101/us-east-1/lambda/aws4_request"),
            ("X-Amz-Date", "20240101T000000Z"),
            ("X-Amz-SignedHeaders", "host"),
            ("X-Amz-Signature", &sig),
        ]);
        assert_eq!(iam_caller(&HeaderMap::new(), &presigned).as_deref(), Some("AKID"));
        assert_eq!(iam_caller(&HeaderMap::new(), &presigned[..4]), None);
    }

    #[test]
    fn an_iam_url_admits_its_own_account_and_those_its_policy_names() {
        let caller = |account: &str| auth::Principal {
            account_id: account.into(),
            access_key_id: "AKID".into(),
            key_name: "k".into(),
        };
        assert!(url_caller_allowed(&caller("111111111111"), "111111111111", || unreachable!()));
        assert!(!url_caller_allowed(&caller("222222222222"), "111111111111", || None));
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "bob", "Effect": "Allow", "Principal": {"AWS": "222222222222"},
            "Action": "lambda:InvokeFunctionUrl",
            "Resource": "arn:aws:lambda:us-east-1:111111111111:function:f",
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}}}]})
        .to_string();
        assert!(url_caller_allowed(&caller("222222222222"), "111111111111", || Some(policy.clone())));
        assert!(!url_caller_allowed(&caller("333333333333"), "111111111111", || Some(policy.clone())));
    }

    #[test]
    fn preflight_answers_from_the_config() {
        let cors = Cors {
            allow_origins: Some(vec!["https://a.example".into()]),
            allow_methods: Some(vec!["GET".into(), "POST".into()]),
            max_age: Some(60),
            allow_credentials: Some(true),
            ..Default::default()
        };
        let r = preflight(&cors, Some("https://a.example"));
        assert_eq!(r.headers()["access-control-allow-origin"], "https://a.example");
        assert_eq!(r.headers()["access-control-allow-methods"], "GET,POST");
        assert_eq!(r.headers()["access-control-max-age"], "60");
        assert_eq!(r.headers()["access-control-allow-credentials"], "true");
        let r = preflight(&cors, Some("https://evil.example"));
        assert!(!r.headers().contains_key("access-control-allow-origin"));
    }

    #[test]
    fn function_urls_carry_the_port_of_the_request() {
        assert_eq!(function_url("x", "us-east-1", "127.0.0.1:9000"), "http://x.lambda-url.us-east-1.localhost:9000/");
        assert_eq!(function_url("x", "us-east-1", "kiln"), "http://x.lambda-url.us-east-1.localhost/");
    }
}
