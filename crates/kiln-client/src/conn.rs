//! One kept-alive HTTP/1.1 connection to one server.
//!
//! hyper's `client::conn` (no pool), so that a caller's requests never open a second connection
//! while the first is being handed back, and `TCP_NODELAY`, so that a small request is not held
//! back by Nagle. Clones share the connection; a caller's requests are sequential. A connection
//! the server closed is replaced on the next request; a request that a reused connection could
//! not even start to send goes out once more on a fresh one.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("cannot reach {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set TCP_NODELAY on the connection to {target}")]
    NoDelay {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with {target} failed")]
    Handshake {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("cannot reach {target}")]
    Send {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the answer was cut off")]
    Body(#[source] hyper::Error),
    #[error("cannot build the request")]
    Build(#[source] http::Error),
}

impl ConnError {
    /// The server could not be reached or dropped the request (as opposed to a cut-off answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConnError::Connect { .. } | ConnError::Handshake { .. } | ConnError::Send { .. })
    }
}

/// A connection to `target` (`host:port`), made on the first request.
#[derive(Clone)]
pub struct Conn {
    target: Arc<str>,
    host: HeaderValue,
    kept: Arc<Mutex<Option<SendRequest<Full<Bytes>>>>>,
}

impl Conn {
    /// A connection to `target`, `host:port` (a name is resolved when connecting).
    pub fn new(target: impl Into<String>) -> Conn {
        let target: String = target.into();
        let host = HeaderValue::from_str(&target).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Conn { target: target.into(), host, kept: Arc::default() }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ConnError> {
        let target = self.target.to_string();
        let stream = tokio::net::TcpStream::connect(&*self.target)
            .await
            .map_err(|source| ConnError::Connect { target: target.clone(), source })?;
        stream.set_nodelay(true).map_err(|source| ConnError::NoDelay { target: target.clone(), source })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnError::Handshake { target, source })?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends `req` (with a `Host` header if it has none) and answers the response head; the
    /// body streams from the connection, and the next request waits until it has been read.
    pub async fn send(&self, mut req: Request<Full<Bytes>>) -> Result<Response<Incoming>, ConnError> {
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut().insert(http::header::HOST, self.host.clone());
        }
        let kept = self.kept.lock().ok().and_then(|mut c| c.take()).filter(|s| !s.is_closed());
        let (mut sender, reused) = match kept {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let (mut sender, reused) = match sender.ready().await {
            Ok(()) => (sender, reused),
            Err(_) => (self.connect().await?, false),
        };
        let resp = match sender.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut e) => match e.take_message() {
                // The server closed a kept connection before the request left: once more, afresh.
                Some(req) if reused => {
                    sender = self.connect().await?;
                    sender
                        .send_request(req)
                        .await
                        .map_err(|source| ConnError::Send { target: self.target.to_string(), source })?
                }
                _ => return Err(ConnError::Send { target: self.target.to_string(), source: e.into_error() }),
            },
        };
        if let Ok(mut c) = self.kept.lock() {
            *c = Some(sender);
        }
        Ok(resp)
    }

    /// A JSON request (`content-type: application/json`) to `path`; the status, the headers and
    /// the whole body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ConnError> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.host.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(ConnError::Build)?;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(ConnError::Body)?.to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server that answers each request with its connection's number and closes every
    /// connection after `per_conn` requests.
    async fn server(per_conn: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let served = Arc::new(AtomicUsize::new(0));
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let served = served.clone();
                        async move {
                            let host = req.headers().get("host").cloned();
                            let _ = req.into_body().collect().await;
                            let count = served.fetch_add(1, Ordering::SeqCst) + 1;
                            let mut resp = Response::new(Full::new(Bytes::from(format!("{n}"))));
                            if let Some(h) = host {
                                resp.headers_mut().insert("x-host", h);
                            }
                            if count >= per_conn {
                                resp.headers_mut().insert("connection", HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, conns)
    }

    #[tokio::test]
    async fn requests_share_one_connection_and_carry_the_host() {
        let (addr, conns) = server(usize::MAX).await;
        let c = Conn::new(addr.to_string());
        for _ in 0..5 {
            let (status, headers, body) = c.clone().request(Method::GET, "/", Bytes::new()).await.unwrap();
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"1"[..]));
            assert_eq!(headers["x-host"], addr.to_string().as_str());
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (addr, conns) = server(2).await;
        let c = Conn::new(addr.to_string());
        let mut seen = Vec::new();
        for _ in 0..6 {
            let (_, _, body) = c.request(Method::POST, "/", Bytes::from_static(b"{}")).await.unwrap();
            seen.push(String::from_utf8(body.to_vec()).unwrap());
        }
        assert_eq!(seen, ["1", "1", "2", "2", "3", "3"]);
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = Conn::new(format!("127.0.0.1:{port}")).request(Method::GET, "/", Bytes::new()).await.unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert_eq!(err.to_string(), format!("cannot reach 127.0.0.1:{port}"));
    }
}
