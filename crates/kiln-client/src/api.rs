//! The JSON client of kiln's REST API (the Lambda API and `/kiln/v1`), on one [`Conn`].

use crate::conn::{Conn, ConnError};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changes a request just before it is sent: e.g. signs it.
pub type Signer = Arc<dyn Fn(&mut Request<Full<Bytes>>) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the endpoint must be an http:// URL, not {0}")]
    NotHttp(String),
    #[error("cannot reach kiln at {base}; is `kiln serve` running?")]
    Unreachable { base: String },
    /// A non-2xx answer: `Code: message` from AWS's JSON error shape, or the body as text.
    #[error("{message}")]
    Refused {
        status: StatusCode,
        /// The AWS error code: the body's `__type`, else the `x-amzn-ErrorType` header's.
        code: Option<String>,
        message: String,
    },
    #[error("kiln answered with something that is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the function could not be made ready: {0}")]
    NotReady(String),
    #[error("the function did not become ready within {0} seconds")]
    ReadyTimeout(u64),
    #[error(transparent)]
    Conn(ConnError),
}

impl ApiError {
    /// The AWS error code of a refusal; what callers that act on a refusal look at, never its
    /// text.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl From<ConnError> for ApiError {
    fn from(e: ConnError) -> Self {
        ApiError::Conn(e)
    }
}

/// kiln's REST API at one endpoint.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port` and any path prefix, without a trailing `/`.
    base: String,
    /// The path prefix of `base` (usually empty).
    prefix: String,
    conn: Conn,
    signer: Option<Signer>,
}

impl Api {
    /// The API at `endpoint`, an `http://host[:port][/prefix]` URL.
    pub fn new(endpoint: &str) -> Result<Api, ApiError> {
        let base = endpoint.trim_end_matches('/').to_string();
        let Some(rest) = base.strip_prefix("http://") else { return Err(ApiError::NotHttp(base)) };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, String::new()),
        };
        if authority.is_empty() {
            return Err(ApiError::NotHttp(base));
        }
        // A bracketed IPv6 address ends in `]`; anything else without `:port` gets port 80.
        let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && !p.contains(']'));
        let target = if has_port { authority.to_string() } else { format!("{authority}:80") };
        Ok(Api { conn: Conn::new(target), base, prefix, signer: None })
    }

    /// The API of a server on `addr`.
    pub fn at(addr: std::net::SocketAddr) -> Api {
        Api { base: format!("http://{addr}"), prefix: String::new(), conn: Conn::new(addr.to_string()), signer: None }
    }

    /// Every request goes through `signer` before it is sent.
    pub fn with_signer(mut self, signer: Signer) -> Api {
        self.signer = Some(signer);
        self
    }

    /// `http://host:port` as given, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The connection the API's requests go on.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// A request to `path` (e.g. `/2015-03-31/functions/`), to finish with headers and a body.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder().method(method).uri(format!("{}{path}", self.prefix))
    }

    /// Signs (when a signer is set) and sends `req`; the answer's head, whatever its status.
    pub async fn send(&self, mut req: Request<Full<Bytes>>) -> Result<Response<Incoming>, ApiError> {
        if let Some(sign) = &self.signer {
            sign(&mut req);
        }
        self.conn.send(req).await.map_err(|e| match e {
            e if e.is_unreachable() => ApiError::Unreachable { base: self.base.clone() },
            e => ApiError::Conn(e),
        })
    }

    /// A JSON call; a non-2xx answer becomes [`ApiError::Refused`] reading `<Code>: <message>`.
    /// An empty body is `null`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = self
            .request(method, path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ApiError::Conn(ConnError::Build(e)))?;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let bytes = body.collect().await.map_err(ConnError::Body)?.to_bytes();
        if !status.is_success() {
            let code = error_code(&parts.headers, &bytes);
            return Err(ApiError::Refused { status, code, message: aws_error(&bytes) });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(ApiError::NotJson)
    }

    /// Waits until the function is `Active` and its last update is over (polling every 1 ms at
    /// first, every 50 ms after the first 100 ms); answers its configuration.
    pub async fn wait_ready(&self, name: &str, limit: Duration) -> Result<Value, ApiError> {
        let path = format!("/2015-03-31/functions/{name}/configuration");
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let cfg = self.call(Method::GET, &path, None).await?;
            let state = cfg["State"].as_str().unwrap_or("");
            let update = cfg["LastUpdateStatus"].as_str().unwrap_or("Successful");
            match (state, update) {
                ("Failed", _) | (_, "Failed") => {
                    let why = cfg["StateReason"].as_str().or(cfg["LastUpdateStatusReason"].as_str());
                    return Err(ApiError::NotReady(why.unwrap_or("unknown reason").to_string()));
                }
                ("Active", "Successful") => return Ok(cfg),
                _ if started.elapsed() >= limit => return Err(ApiError::ReadyTimeout(limit.as_secs())),
                _ => {
                    tokio::time::sleep(pause).await;
                    if started.elapsed() >= Duration::from_millis(100) {
                        pause = Duration::from_millis(50);
                    }
                }
            }
        }
    }
}

/// The AWS error code of an error answer: the body's `__type`, else the `x-amzn-ErrorType`
/// header's (without the `:<url>` AWS may append).
pub fn error_code(headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    let from_body = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["__type"].as_str().map(str::to_string));
    from_body.or_else(|| {
        let v = headers.get("x-amzn-errortype")?.to_str().ok()?;
        let code = v.split(':').next()?.trim();
        (!code.is_empty()).then(|| code.to_string())
    })
}

/// An error answer as one line: `Code: message` from AWS's JSON shape (`__type`, `message` or
/// `Message`), else the body as text.
pub fn aws_error(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let code = v["__type"].as_str().unwrap_or("Error");
            let msg = v["message"].as_str().or(v["Message"].as_str()).unwrap_or("");
            format!("{code}: {msg}")
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_s_code_comes_from_the_body_then_the_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(
            error_code(&h, br#"{"__type":"ResourceNotFoundException"}"#).as_deref(),
            Some("ResourceNotFoundException")
        );
        assert_eq!(error_code(&h, b"{}"), None);
        h.insert("x-amzn-errortype", http::HeaderValue::from_static("TooManyRequestsException:http://x/"));
        assert_eq!(error_code(&h, b"not json").as_deref(), Some("TooManyRequestsException"));
        assert_eq!(error_code(&h, br#"{"__type":"ServiceException"}"#).as_deref(), Some("ServiceException"));
    }

    #[test]
    fn endpoints_are_http_urls_with_a_port_by_default() {
        let api = Api::new("http://127.0.0.1:9000/").unwrap();
        assert_eq!((api.base(), api.conn().target()), ("http://127.0.0.1:9000", "127.0.0.1:9000"));
        let api = Api::new("http://localhost").unwrap();
        assert_eq!(api.conn().target(), "localhost:80");
        let api = Api::new("http://[::1]:9001/kiln").unwrap();
        assert_eq!(api.conn().target(), "[::1]:9001");
        assert_eq!(api.request(Method::GET, "/x").body(()).unwrap().uri(), "/kiln/x");
        assert_eq!(Api::new("http://[::1]").unwrap().conn().target(), "[::1]:80");
        for bad in ["https://example.com", "127.0.0.1:9000", "http://"] {
            assert!(matches!(Api::new(bad), Err(ApiError::NotHttp(_))), "{bad}");
        }
    }

    #[test]
    fn aws_errors_read_as_code_and_message() {
        assert_eq!(
            aws_error(br#"{"__type":"ResourceNotFoundException","message":"Function not found: x"}"#),
            "ResourceNotFoundException: Function not found: x"
        );
        assert_eq!(aws_error(br#"{"Message":"m"}"#), "Error: m");
        assert_eq!(aws_error(b" plain text \n"), "plain text");
    }

    #[tokio::test]
    async fn an_unreachable_server_names_the_endpoint() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let api = Api::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = api.call(Method::GET, "/2015-03-31/functions/", None).await.unwrap_err();
        assert_eq!(err.to_string(), format!("cannot reach kiln at http://127.0.0.1:{port}; is `kiln serve` running?"));
    }
}
