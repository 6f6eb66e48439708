//! The HTTP side: routes runtime calls to the state machine and answers in the wire format.
//!
//! A runtime is untrusted, so everything it can make kiln hold is bounded here:
//!
//! - connections: at most [`MAX_CONNECTIONS`] per environment and a process-wide budget
//!   ([`set_connection_limit`]) so the Runtime API can never take the descriptors that clean-up
//!   and the REST API need; connections over either are closed at once;
//! - every connection task lives in a `JoinSet` owned by the accept loop, which
//!   [`RuntimeApi::close`] aborts: nothing a runtime opened outlives its environment, whatever it
//!   sent (a `GET next` followed by a pipelined byte included);
//! - request heads: at most [`READ_BUF_BYTES`] buffered per connection, and
//!   [`HEADER_READ_TIMEOUT`] from a head's first byte to its end (time frozen does not count;
//!   an idle keep-alive connection is not timed, since a runtime may keep one for its next call);
//! - bodies: admitted by the state machine before a byte is read (state, request id, one body
//!   at a time per event), at most 6 MB each, at most [`ENV_BODY_BUDGET`] buffered per
//!   environment, and read within a time limit (the event's deadline for answers,
//!   [`INIT_ERROR_BODY_TIMEOUT`] for `init/error`);
//! - streamed answers (`Lambda-Runtime-Function-Response-Mode: streaming`): not buffered at all
//!   but forwarded a chunk at a time through a bounded channel (see [`crate::stream`]), at most
//!   200 MB, within the event's deadline.

use crate::state::{BodySlot, Outcome, Refusal, RuntimeApi};
use crate::stream::{ResponseStream, StreamEnd, StreamEvent};
use crate::wire;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kiln_model::limits::{RESPONSE_MAX_BYTES, STREAMED_RESPONSE_MAX_BYTES};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

type Reply = Response<Full<Bytes>>;

/// Connections one environment may hold at once. Runtime clients use one or two.
pub const MAX_CONNECTIONS: usize = 16;
/// Bytes hyper may buffer per connection while reading a request head (its minimum is 8 KB).
pub const READ_BUF_BYTES: usize = 64 * 1024;
/// From the first byte of a request head to its end.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an `init/error` body may take to arrive.
pub const INIT_ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Body bytes one environment may have kiln buffer at once: one answer at the limit, and room
/// for its framing.
pub const ENV_BODY_BUDGET: usize = RESPONSE_MAX_BYTES + 64 * 1024;

/// Runtime API connections of all environments of this process.
static LIVE_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
static CONNECTION_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Caps the Runtime API connections of all environments together; kiln sets it from its
/// descriptor limit so that the Runtime API alone can never exhaust it.
pub fn set_connection_limit(limit: usize) {
    CONNECTION_LIMIT.store(limit, Ordering::Relaxed);
}

/// Runtime API connections open now, over all environments.
pub fn live_connections() -> usize {
    LIVE_CONNECTIONS.load(Ordering::Relaxed)
}

/// One connection counted against the process-wide limit; released when dropped.
struct ConnectionSlot;

impl ConnectionSlot {
    fn take() -> Option<Self> {
        let limit = CONNECTION_LIMIT.load(Ordering::Relaxed);
        LIVE_CONNECTIONS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).ok()?;
        Some(Self)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        LIVE_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn serve(api: RuntimeApi, listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let accept_api = api.clone();
    let task = tokio::spawn(async move {
        let api = accept_api;
        // Dropped with this task when the API closes, which aborts every connection task.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "runtime api accept failed");
                    if api.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if api.is_closed() {
                return;
            }
            while conns.try_join_next().is_some() {}
            if conns.len() >= MAX_CONNECTIONS {
                tracing::debug!(limit = MAX_CONNECTIONS, "runtime api connection refused: per-environment cap");
                continue;
            }
            let Some(slot) = ConnectionSlot::take() else {
                tracing::warn!(
                    live = live_connections(),
                    "runtime api connection refused: kiln keeps its remaining descriptors for clean-up and the REST API"
                );
                continue;
            };
            let _ = stream.set_nodelay(true);
            // Its body reads wake the connection itself: see `rewake`.
            conns.spawn(crate::rewake::rewake(connection(api.clone(), stream, slot)));
        }
    });
    *crate::state::lock(&api.shared.accept) = Some(task.abort_handle());
    if api.is_closed() {
        task.abort();
    }
    Ok(())
}

async fn connection(api: RuntimeApi, stream: tokio::net::TcpStream, _slot: ConnectionSlot) {
    let clock = Arc::new(HeadClock {
        // A second descriptor of the socket, for the handlers to acknowledge a body's bytes at
        // once while they wait for the rest of it (see [`Clocked`]).
        #[cfg(target_os = "linux")]
        ack: {
            use std::os::fd::AsFd;
            stream.as_fd().try_clone_to_owned().ok()
        },
        ..HeadClock::default()
    });
    let io = TokioIo::new(Clocked { inner: stream, clock: clock.clone() });
    let service_api = api.clone();
    let service_clock = clock.clone();
    let service = hyper::service::service_fn(move |req| {
        let api = service_api.clone();
        let clock = service_clock.clone();
        clock.enter();
        async move {
            let reply = route(&api, req, &clock).await;
            clock.leave();
            Ok::<_, std::convert::Infallible>(reply)
        }
    });
    // Head and body go out in one buffer, one `write` per response, instead of a `writev` of
    // two: the answers are small (an event, a 202), so the copy costs less than the iovec.
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .writev(false)
        .max_buf_size(READ_BUF_BYTES)
        .serve_connection(io, service);
    // Biased: the watchdog is polled right after the connection, in the same pass, so it sees a
    // head that began during that poll without being woken for it (see [`head_watchdog`]).
    tokio::select! {
        biased;
        _ = conn => {}
        () = head_watchdog(&api, &clock) => {
            tracing::debug!("runtime api connection closed: request head not complete in time");
        }
    }
}

/// When the head now being read started: set by the first byte that arrives while no request is
/// being served, cleared when hyper hands a complete head to the service.
#[derive(Default)]
struct HeadClock {
    in_service: AtomicBool,
    since: Mutex<Option<Instant>>,
    /// Bytes of a head arrived and the head is not complete yet (`since` is set).
    head_started: AtomicBool,
    /// The connection's socket (a duplicate descriptor), to send `TCP_QUICKACK`.
    #[cfg(target_os = "linux")]
    ack: Option<std::os::fd::OwnedFd>,
}

impl HeadClock {
    fn since(&self) -> Option<Instant> {
        *crate::state::lock(&self.since)
    }

    fn bytes_arrived(&self) {
        if self.in_service.load(Ordering::Acquire) {
            return;
        }
        let mut since = crate::state::lock(&self.since);
        if since.is_none() {
            *since = Some(Instant::now());
            self.head_started.store(true, Ordering::Release);
        }
    }

    /// Acknowledges what the connection has received at once, instead of with the delayed ACK
    /// (40 ms later) or with the answer. Only called while kiln waits for more of a request.
    fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.ack {
            let _ = socket2::SockRef::from(fd).set_tcp_quickack(true);
        }
    }

    fn restart(&self) {
        let mut since = crate::state::lock(&self.since);
        if since.is_some() {
            *since = Some(Instant::now());
        }
    }

    fn enter(&self) {
        self.in_service.store(true, Ordering::Release);
        *crate::state::lock(&self.since) = None;
        self.head_started.store(false, Ordering::Release);
    }

    fn leave(&self) {
        self.in_service.store(false, Ordering::Release);
    }
}

/// Resolves when a request head took longer than [`HEADER_READ_TIMEOUT`] of thawed time.
///
/// Polled after the connection in the same task: bytes of a head arrive only while hyper reads,
/// inside the connection's poll, so this future looks at the clock again right after it and
/// needs no wake-up of its own. A wake-up here would be the task waking itself, which tokio's
/// multi-threaded scheduler answers by queueing the task behind others and waking another
/// worker thread to take it: two wake-ups of another thread per warm call, for nothing.
async fn head_watchdog(api: &RuntimeApi, clock: &HeadClock) {
    loop {
        let since = std::future::poll_fn(|_| match clock.since() {
            Some(since) => Poll::Ready(since),
            None => Poll::Pending,
        })
        .await;
        tokio::time::sleep_until(since + HEADER_READ_TIMEOUT).await;
        if clock.since() != Some(since) {
            continue;
        }
        if api.is_frozen() {
            // A frozen runtime cannot send; its time frozen does not count.
            clock.restart();
            continue;
        }
        return;
    }
}

/// The connection's stream, telling the [`HeadClock`] when bytes arrive.
///
/// Acknowledgements: runtime clients write with Nagle's algorithm on (the `lambda_runtime`
/// crate's hyper client does), so a request's next small write waits for the ACK of the previous
/// one, and while kiln sends nothing back (it waits for the rest of the request) that ACK is a
/// delayed one, 40 ms later: every chunk of a streamed answer after the first, and its end,
/// would arrive that late. So whenever kiln waits for more of a request — a head begun but not
/// complete (here, when the read would block), a body not complete (the handlers, through
/// [`next_frame`]) — it acknowledges at once (`TCP_QUICKACK`, which Linux clears again by
/// itself, hence each time). A request that came whole, as a `next` or a buffered answer does,
/// costs no extra system call or ACK packet: its answer carries the ACK.
struct Clocked {
    inner: tokio::net::TcpStream,
    clock: Arc<HeadClock>,
}

impl AsyncRead for Clocked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.clock.bytes_arrived(),
            Poll::Pending if this.clock.head_started.load(Ordering::Acquire) => this.clock.ack_now(),
            _ => {}
        }
        r
    }
}

impl AsyncWrite for Clocked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a request asks for, read off its method and path without copying them (only an
/// answer's request id is copied out, since the handler takes the request itself).
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Next,
    Response(String),
    Error(String),
    InitError,
    NotFound,
}

fn route_of(method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix(wire::PREFIX) else {
        return Route::NotFound;
    };
    let mut segments = rest.trim_start_matches('/').split('/');
    let mut next = || segments.next();
    let (a, b, c, d, e) = (next(), next(), next(), next(), next());
    match (method, a, b, c, d, e) {
        (&Method::GET, Some("runtime"), Some("invocation"), Some("next"), None, _) => Route::Next,
        (&Method::POST, Some("runtime"), Some("invocation"), Some(id), Some("response"), None) => {
            Route::Response(id.to_owned())
        }
        (&Method::POST, Some("runtime"), Some("invocation"), Some(id), Some("error"), None) => {
            Route::Error(id.to_owned())
        }
        (&Method::POST, Some("runtime"), Some("init"), Some("error"), None, _) => Route::InitError,
        _ => Route::NotFound,
    }
}

async fn route(api: &RuntimeApi, req: Request<Incoming>, clock: &HeadClock) -> Reply {
    match route_of(req.method(), req.uri().path()) {
        Route::Next => next(api).await,
        Route::Response(id) => response(api, &id, req, clock).await,
        Route::Error(id) => error(api, &id, req, clock).await,
        Route::InitError => init_error(api, req, clock).await,
        Route::NotFound => not_found(),
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
    insert(h, wire::names::REQUEST_ID, &inv.request_id);
    h.insert(wire::names::DEADLINE_MS, HeaderValue::from(inv.deadline_ms));
    insert(h, wire::names::INVOKED_FUNCTION_ARN, &inv.invoked_function_arn);
    if !inv.trace_id.is_empty() {
        insert(h, wire::names::TRACE_ID, &inv.trace_id);
    }
    if let Some(cc) = &inv.client_context {
        insert(h, wire::names::CLIENT_CONTEXT, cc);
    }
    if let Some(ci) = &inv.cognito_identity {
        insert(h, wire::names::COGNITO_IDENTITY, ci);
    }
    resp
}

async fn init_error(api: &RuntimeApi, req: Request<Incoming>, clock: &HeadClock) -> Reply {
    // The state is checked before a byte of the body is read.
    let _slot = match api.claim_init_error_body() {
        Ok(s) => s,
        Err(r) => return refusal(&r),
    };
    let error_type = header(&req, wire::FUNCTION_ERROR_TYPE);
    if declared_too_large(&req) {
        return refusal(&too_large_refusal());
    }
    match read_body(api, req.into_body(), INIT_ERROR_BODY_TIMEOUT, clock).await {
        Ok((body, _)) => accepted(api.init_error(error_type, body)),
        Err(e) => refusal(&e.refusal()),
    }
}

async fn response(api: &RuntimeApi, id: &str, req: Request<Incoming>, clock: &HeadClock) -> Reply {
    // The id and the state are checked before anything else changes, as RIE does, and before a
    // byte of the body is read.
    let slot = match api.claim_answer_body(id) {
        Ok(s) => s,
        Err(r) => return refusal(&r),
    };
    let streaming = match req.headers().get(wire::RESPONSE_MODE) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"streaming") => true,
        Some(_) => {
            let _ = api.answer(id, Outcome::InvalidResponseMode);
            return json(StatusCode::BAD_REQUEST, wire::INVALID_RESPONSE_MODE, "Invalid function response mode");
        }
    };
    if streaming {
        return stream_response(api, id, req, slot, clock).await;
    }
    // A declared Content-Length over the limit is refused before reading anything.
    if declared_too_large(&req) {
        return too_large(api, id);
    }
    let (body, _) = match read_body(api, req.into_body(), answer_timeout(&slot), clock).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(api, id),
        Err(e) => return refusal(&e.refusal()),
    };
    drop(slot);
    accepted(api.answer(id, Outcome::Response(body)))
}

/// A streamed answer: the engine gets the stream at once, then every chunk as it arrives,
/// through a bounded channel (a slow caller slows the runtime, not kiln's memory), and last how
/// the body ended.
async fn stream_response(
    api: &RuntimeApi,
    id: &str,
    req: Request<Incoming>,
    slot: BodySlot,
    clock: &HeadClock,
) -> Reply {
    let deadline = Instant::now() + answer_timeout(&slot);
    let content_type = header(&req, http::header::CONTENT_TYPE.as_str());
    let (tx, events) = tokio::sync::mpsc::channel(crate::stream::STREAM_CHANNEL_CHUNKS);
    if let Err(r) = api.answer_stream(id, ResponseStream { content_type, events }) {
        return refusal(&r);
    }
    let mut body = req.into_body();
    let mut len: u64 = 0;
    let end = loop {
        let frame = match tokio::time::timeout_at(deadline, next_frame(&mut body, clock)).await {
            Err(_) => break StreamEnd::TimedOut,
            Ok(None) => break StreamEnd::Complete,
            Ok(Some(Err(_))) => break StreamEnd::Truncated,
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                len += data.len() as u64;
                if len > STREAMED_RESPONSE_MAX_BYTES {
                    break StreamEnd::TooLarge;
                }
                if data.is_empty() {
                    continue;
                }
                // Waits while the channel is full: this is the back-pressure. The deadline
                // still holds, and a receiver that went away (the engine gave up on the
                // invocation) ends the read.
                match tokio::time::timeout_at(deadline, tx.send(StreamEvent::Chunk(data))).await {
                    Err(_) => break StreamEnd::TimedOut,
                    Ok(Err(_)) => {
                        drop(slot);
                        return refusal(&Refusal::closed_stream());
                    }
                    Ok(Ok(())) => {}
                }
            }
            Err(frame) => {
                if let Some((error_type, body)) = frame.trailers_ref().and_then(crate::stream::trailer_error) {
                    break StreamEnd::Error { error_type, body };
                }
            }
        }
    };
    let reply = match &end {
        StreamEnd::Complete | StreamEnd::Error { .. } => accepted(Ok(())),
        StreamEnd::TooLarge => json(
            StatusCode::PAYLOAD_TOO_LARGE,
            wire::REQUEST_TOO_LARGE,
            &format!("Exceeded maximum allowed payload size ({STREAMED_RESPONSE_MAX_BYTES} bytes)."),
        ),
        StreamEnd::Truncated => refusal(&truncated_refusal()),
        StreamEnd::TimedOut => refusal(&timed_out_refusal()),
    };
    // The end waits for room like any chunk, within the deadline; past it the engine's own
    // timeout ends the invocation anyway.
    let _ = tokio::time::timeout_at(deadline, tx.send(StreamEvent::End(end))).await;
    drop(slot);
    api.stream_ended(id);
    reply
}

async fn error(api: &RuntimeApi, id: &str, req: Request<Incoming>, clock: &HeadClock) -> Reply {
    let slot = match api.claim_answer_body(id) {
        Ok(s) => s,
        Err(r) => return refusal(&r),
    };
    let error_type = header(&req, wire::FUNCTION_ERROR_TYPE);
    if declared_too_large(&req) {
        return refusal(&too_large_refusal());
    }
    match read_body(api, req.into_body(), answer_timeout(&slot), clock).await {
        Ok((body, _)) => {
            drop(slot);
            accepted(api.answer(id, Outcome::Error { error_type, body }))
        }
        Err(e) => refusal(&e.refusal()),
    }
}

/// An answer's body may arrive until the event's deadline (after which the environment is
/// destroyed anyway), and a second more.
fn answer_timeout(slot: &BodySlot) -> Duration {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let left = slot.deadline_ms.map_or(0, |d| d.saturating_sub(now_ms));
    Duration::from_millis(left.saturating_add(1000))
}

fn declared_too_large(req: &Request<Incoming>) -> bool {
    hyper::body::Body::size_hint(req.body()).lower() > RESPONSE_MAX_BYTES as u64
}

/// Bytes of one body counted against the environment's budget; returned when dropped.
struct Reserved<'a> {
    api: &'a RuntimeApi,
    bytes: usize,
}

impl Reserved<'_> {
    fn add(&mut self, n: usize) -> bool {
        let total = self.api.shared.buffered.fetch_add(n, Ordering::AcqRel) + n;
        self.bytes += n;
        total <= ENV_BODY_BUDGET
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.api.shared.buffered.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The next frame of a request's body; when it has not arrived yet, what came so far is
/// acknowledged at once before waiting (see [`Clocked`]).
async fn next_frame(body: &mut Incoming, clock: &HeadClock) -> Option<Result<hyper::body::Frame<Bytes>, hyper::Error>> {
    let mut acked = false;
    std::future::poll_fn(|cx| {
        let p = hyper::body::Body::poll_frame(Pin::new(&mut *body), cx);
        if p.is_pending() && !acked {
            acked = true;
            clock.ack_now();
        }
        p
    })
    .await
}

/// Reads a body of at most 6 MB within `limit`, counting it against the environment's budget.
async fn read_body(
    api: &RuntimeApi,
    body: Incoming,
    limit: Duration,
    clock: &HeadClock,
) -> Result<(Bytes, Option<HeaderMap>), BodyError> {
    let mut reserved = Reserved { api, bytes: 0 };
    let read = async {
        let mut body = body;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut trailers = None;
        let mut len = 0usize;
        while let Some(frame) = next_frame(&mut body, clock).await {
            let frame = frame.map_err(|_| BodyError::Truncated)?;
            match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    if len > RESPONSE_MAX_BYTES || !reserved.add(data.len()) {
                        return Err(BodyError::TooLarge);
                    }
                    chunks.push(data);
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(len);
                for c in chunks {
                    all.extend_from_slice(&c);
                }
                all.freeze()
            }
        };
        Ok((body, trailers))
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// Why a buffered body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyError {
    TooLarge,
    Truncated,
    TimedOut,
}

impl BodyError {
    fn refusal(self) -> Refusal {
        match self {
            Self::TooLarge => too_large_refusal(),
            Self::Truncated => truncated_refusal(),
            Self::TimedOut => timed_out_refusal(),
        }
    }
}

fn timed_out_refusal() -> Refusal {
    Refusal { status: 408, error_type: wire::REQUEST_TIMEOUT, message: "Timed out reading the request body".into() }
}

fn too_large_refusal() -> Refusal {
    Refusal {
        status: 413,
        error_type: wire::REQUEST_TOO_LARGE,
        message: format!("Exceeded maximum allowed payload size ({RESPONSE_MAX_BYTES} bytes)."),
    }
}

fn truncated_refusal() -> Refusal {
    Refusal { status: 400, error_type: wire::TRUNCATED_REQUEST, message: "Received a truncated HTTP request".into() }
}

fn too_large(api: &RuntimeApi, id: &str) -> Reply {
    let _ = api.answer(id, Outcome::ResponseTooLarge);
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        wire::REQUEST_TOO_LARGE,
        &format!("Exceeded maximum allowed payload size ({RESPONSE_MAX_BYTES} bytes)."),
    )
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn insert(h: &mut http::HeaderMap, name: http::HeaderName, value: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Freezer, Invocation};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct NoFreeze;
    impl Freezer for NoFreeze {
        fn freeze(&self) {}
        fn thaw(&self) {}
    }

    /// The tests share the process-wide connection count.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn eof_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// The routing as it was written before `route_of` (segments collected, then matched), kept
    /// here as the reference the allocation-free version must agree with.
    fn reference_route(method: &Method, path: &str) -> Route {
        let Some(rest) = path.strip_prefix(wire::PREFIX) else {
            return Route::NotFound;
        };
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["runtime", "invocation", "next"]) => Route::Next,
            (&Method::POST, ["runtime", "invocation", id, "response"]) => Route::Response((*id).to_owned()),
            (&Method::POST, ["runtime", "invocation", id, "error"]) => Route::Error((*id).to_owned()),
            (&Method::POST, ["runtime", "init", "error"]) => Route::InitError,
            _ => Route::NotFound,
        }
    }

    #[test]
    fn routes_match_the_reference() {
        let paths = [
            "/2018-06-01/runtime/invocation/next",
            "/2018-06-01//runtime/invocation/next",
            "/2018-06-01/runtime/invocation/next/",
            "/2018-06-01/runtime/invocation/next/x",
            "/2018-06-01/runtime/invocation/abc/response",
            "/2018-06-01/runtime/invocation//response",
            "/2018-06-01/runtime/invocation/abc/response/",
            "/2018-06-01/runtime/invocation/abc/error",
            "/2018-06-01/runtime/invocation/abc/error/x",
            "/2018-06-01/runtime/invocation/next/response",
            "/2018-06-01/runtime/init/error",
            "/2018-06-01/runtime/init/error/",
            "/2018-06-01/runtime/init",
            "/2018-06-01/runtime",
            "/2018-06-01",
            "/2018-06-01/",
            "/2018-06-011/runtime/invocation/next",
            "/2018-06-02/runtime/invocation/next",
            "/runtime/invocation/next",
            "/",
            "",
        ];
        for method in [Method::GET, Method::POST, Method::PUT] {
            for path in paths {
                assert_eq!(route_of(&method, path), reference_route(&method, path), "{method} {path}");
            }
        }
        assert_eq!(route_of(&Method::GET, "/2018-06-01/runtime/invocation/next"), Route::Next);
        assert_eq!(
            route_of(&Method::POST, "/2018-06-01/runtime/invocation/r-1/response"),
            Route::Response("r-1".into())
        );
        assert_eq!(route_of(&Method::POST, "/2018-06-01/runtime/invocation/r-1/error"), Route::Error("r-1".into()));
        assert_eq!(route_of(&Method::POST, "/2018-06-01/runtime/init/error"), Route::InitError);
    }

    #[test]
    fn the_event_header_names_are_the_wire_strings() {
        for (name, wire) in [
            (wire::names::REQUEST_ID, wire::REQUEST_ID),
            (wire::names::DEADLINE_MS, wire::DEADLINE_MS),
            (wire::names::INVOKED_FUNCTION_ARN, wire::INVOKED_FUNCTION_ARN),
            (wire::names::TRACE_ID, wire::TRACE_ID),
            (wire::names::CLIENT_CONTEXT, wire::CLIENT_CONTEXT),
            (wire::names::COGNITO_IDENTITY, wire::COGNITO_IDENTITY),
        ] {
            assert_eq!(name.as_str(), wire);
        }
        assert_eq!(HeaderValue::from(1_796_086_629_524u64), "1796086629524");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_capped_and_all_end_when_the_api_closes() {
        let _serial = SERIAL.lock().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let api = RuntimeApi::new(Box::new(NoFreeze), false, Duration::ZERO);
        api.serve(listener).unwrap();
        // Each connection parks in `next` and pipelines one more byte, which kept hyper from
        // noticing a hang-up before.
        let mut conns = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 8 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\nX").await.unwrap();
            conns.push(s);
        }
        api.wait_init().await;
        // The connections over the cap were closed at once; the others are held in `next`.
        let mut refused = 0;
        for s in &mut conns {
            if eof_within(s, Duration::from_millis(300)).await {
                refused += 1;
            }
        }
        assert_eq!(refused, 8, "connections over the per-environment cap are closed");
        assert!(live_connections() <= MAX_CONNECTIONS, "{} live", live_connections());
        api.close();
        for (i, s) in conns.iter_mut().enumerate() {
            assert!(eof_within(s, Duration::from_secs(10)).await, "connection {i} still open after close");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while live_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(live_connections(), 0, "every connection task ended");
        // The listener went with the accept loop.
        let gone = tokio::net::TcpStream::connect(addr).await;
        if let Ok(mut s) = gone {
            assert!(eof_within(&mut s, Duration::from_secs(10)).await);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_head_is_cut_off_but_an_idle_keep_alive_connection_is_not() {
        let _serial = SERIAL.lock().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let api = RuntimeApi::new(Box::new(NoFreeze), false, Duration::ZERO);
        api.serve(listener).unwrap();
        // A complete request, then nothing for longer than the head timeout.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let bogus = b"POST /2018-06-01/runtime/invocation/nope/error HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
        idle.write_all(bogus).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 400"));
        // A head that never ends.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nx-slow: ").await.unwrap();
        assert!(eof_within(&mut slow, HEADER_READ_TIMEOUT * 3).await, "an unfinished head is cut off");
        // The idle connection, older than the head timeout now, still serves.
        idle.write_all(bogus).await.unwrap();
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&buf[..n]));
        api.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_for_a_wrong_id_is_refused_before_it_is_read() {
        let _serial = SERIAL.lock().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let api = RuntimeApi::new(Box::new(NoFreeze), false, Duration::ZERO);
        api.serve(listener).unwrap();
        let _rx = api.dispatch(Invocation {
            request_id: "r1".into(),
            payload: Bytes::from_static(b"{}"),
            deadline_ms: u64::MAX,
            invoked_function_arn: "arn".into(),
            trace_id: String::new(),
            client_context: None,
            cognito_identity: None,
        });
        api.next().await.unwrap();
        // Each declares 6 MB and sends none of it: the answer comes at once, without the body.
        for (path, status, error_type) in [
            ("init/error", "403", "InvalidStateTransition"),
            ("invocation/nope/response", "400", "InvalidRequestID"),
            ("invocation/nope/error", "400", "InvalidRequestID"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("POST /2018-06-01/runtime/{path} HTTP/1.1\r\nhost: x\r\ncontent-length: 6000000\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
            let head = String::from_utf8_lossy(&buf[..n]);
            assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {head}");
            assert!(head.contains(error_type), "{path}: {head}");
        }
        assert_eq!(api.shared.buffered.load(Ordering::SeqCst), 0);
        api.close();
    }
}
