//! The HTTP side: routes runtime calls to the state machine and answers in the wire format.

use crate::state::{Outcome, Refusal, RuntimeApi};
use crate::wire;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kiln_model::limits::RESPONSE_MAX_BYTES;

type Reply = Response<Full<Bytes>>;

pub(crate) fn serve(api: RuntimeApi, listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let accept_api = api.clone();
    let task = tokio::spawn(async move {
        let api = accept_api;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "runtime api accept failed");
                    if api.is_closed() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if api.is_closed() {
                return;
            }
            let _ = stream.set_nodelay(true);
            let api = api.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(&api, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    *crate::state::lock(&api.shared.accept) = Some(task.abort_handle());
    if api.is_closed() {
        task.abort();
    }
    Ok(())
}

async fn route(api: &RuntimeApi, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(wire::PREFIX) else {
        return not_found();
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["runtime", "invocation", "next"]) => next(api).await,
        (&Method::POST, ["runtime", "invocation", id, "response"]) => response(api, id, req).await,
        (&Method::POST, ["runtime", "invocation", id, "error"]) => error(api, id, req).await,
        (&Method::POST, ["runtime", "init", "error"]) => {
            let error_type = header(&req, wire::FUNCTION_ERROR_TYPE);
            match read_body(req.into_body(), RESPONSE_MAX_BYTES).await {
                Ok(body) => accepted(api.init_error(error_type, body)),
                Err(r) => refusal(&r),
            }
        }
        _ => not_found(),
    }
}

async fn next(api: &RuntimeApi) -> Reply {
    let inv = match api.next().await {
        Ok(inv) => inv,
        Err(r) => return refusal(&r),
    };
    let mut resp = Response::new(Full::new(inv.payload.clone()));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert(h, wire::REQUEST_ID, &inv.request_id);
    insert(h, wire::DEADLINE_MS, &inv.deadline_ms.to_string());
    insert(h, wire::INVOKED_FUNCTION_ARN, &inv.invoked_function_arn);
    if !inv.trace_id.is_empty() {
        insert(h, wire::TRACE_ID, &inv.trace_id);
    }
    if let Some(cc) = &inv.client_context {
        insert(h, wire::CLIENT_CONTEXT, cc);
    }
    if let Some(ci) = &inv.cognito_identity {
        insert(h, wire::COGNITO_IDENTITY, ci);
    }
    resp
}

async fn response(api: &RuntimeApi, id: &str, req: Request<Incoming>) -> Reply {
    // The id is checked before anything else changes, as RIE does.
    if let Err(r) = api.check_request(id) {
        return refusal(&r);
    }
    let streaming = match req.headers().get(wire::RESPONSE_MODE) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"streaming") => true,
        Some(_) => {
            let _ = api.answer(id, Outcome::InvalidResponseMode);
            return json(StatusCode::BAD_REQUEST, wire::INVALID_RESPONSE_MODE, "Invalid function response mode");
        }
    };
    // A declared Content-Length over the limit is refused before reading anything.
    if hyper::body::Body::size_hint(req.body()).lower() > RESPONSE_MAX_BYTES as u64 {
        return too_large(api, id);
    }
    let collected = match Limited::new(req.into_body(), RESPONSE_MAX_BYTES).collect().await {
        Ok(c) => c,
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(api, id),
        Err(_) => return truncated(),
    };
    // A streamed response reports a failure after the fact, in trailers.
    let stream_error = if streaming {
        collected.trailers().and_then(|t| {
            t.get(wire::FUNCTION_ERROR_TYPE).and_then(|v| v.to_str().ok()).map(|ty| {
                let body = t
                    .get(wire::FUNCTION_ERROR_BODY)
                    .and_then(|v| v.to_str().ok())
                    .map(|b| Bytes::from(b.to_owned()))
                    .unwrap_or_default();
                (ty.to_owned(), body)
            })
        })
    } else {
        None
    };
    let body = collected.to_bytes();
    let outcome = match stream_error {
        Some((error_type, body)) => Outcome::Error { error_type: Some(error_type), body },
        None => Outcome::Response(body),
    };
    accepted(api.answer(id, outcome))
}

async fn error(api: &RuntimeApi, id: &str, req: Request<Incoming>) -> Reply {
    if let Err(r) = api.check_request(id) {
        return refusal(&r);
    }
    let error_type = header(&req, wire::FUNCTION_ERROR_TYPE);
    match read_body(req.into_body(), RESPONSE_MAX_BYTES).await {
        Ok(body) => accepted(api.answer(id, Outcome::Error { error_type, body })),
        Err(r) => refusal(&r),
    }
}

fn too_large(api: &RuntimeApi, id: &str) -> Reply {
    let _ = api.answer(id, Outcome::ResponseTooLarge);
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        wire::REQUEST_TOO_LARGE,
        &format!("Exceeded maximum allowed payload size ({RESPONSE_MAX_BYTES} bytes)."),
    )
}

fn truncated() -> Reply {
    json(StatusCode::BAD_REQUEST, wire::TRUNCATED_REQUEST, "Received a truncated HTTP request")
}

async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Refusal> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal {
            status: 413,
            error_type: wire::REQUEST_TOO_LARGE,
            message: format!("Exceeded maximum allowed payload size ({limit} bytes)."),
        }),
        Err(_) => Err(Refusal {
            status: 400,
            error_type: wire::TRUNCATED_REQUEST,
            message: "Received a truncated HTTP request".into(),
        }),
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn insert(h: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn accepted(result: Result<(), Refusal>) -> Reply {
    match result {
        Ok(()) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")));
            *r.status_mut() = StatusCode::ACCEPTED;
            r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(r) => refusal(&r),
    }
}

fn refusal(r: &Refusal) -> Reply {
    json(StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN), r.error_type, &r.message)
}

fn not_found() -> Reply {
    json(StatusCode::NOT_FOUND, "NotFound", "Not found")
}

fn json(status: StatusCode, error_type: &str, message: &str) -> Reply {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
