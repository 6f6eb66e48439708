//! The runtime's state machine and the hand-off of events and answers.
//!
//! | phase     | `next`                              | `response`/`error`       | `init/error` |
//! |-----------|-------------------------------------|--------------------------|--------------|
//! | Init      | ends Init, waits for an event       | 400 (no such request)    | → InitError  |
//! | Ready     | waits for an event (frozen)         | 400                      | 403          |
//! | Running   | re-serves the current event (RIE)   | answers it → Ready       | 403          |
//! | InitError | 403                                 | 403                      | 403          |
//!
//! Bodies are admitted before they are read: [`RuntimeApi::claim_answer_body`] and
//! [`RuntimeApi::claim_init_error_body`] check the phase and the request id first, and let one
//! body at a time be read for the event in flight (or for `init/error`), so a runtime cannot make
//! kiln buffer the same 6 MB answer on many connections at once.
//!
//! Freezing: the environment is frozen when the runtime waits in `next` with nothing to do, and
//! also when it answered and does not come back to `next` within the grace, so a runtime that
//! keeps working after its answer does not run while the environment is idle.
//!
//! The grace is kept by one timer task per environment, the freeze clock ([`freeze_clock`]),
//! not by a timer per call: the state records since when the environment is idle, and the clock
//! looks at that record once per grace while the environment runs back-to-back calls, freezes it
//! once it was idle for the whole grace, and sleeps without a timer while the environment is
//! frozen or busy with a long event. Arming a timer per call, or spawning a task per answer, cost
//! wake-ups of other threads on every warm call (a timer earlier than the runtime's next one
//! unparks the thread that waits for I/O; a task spawned next to a woken one makes the scheduler
//! wake another worker to take one of them).

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

/// One event for the runtime.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: Arc<str>,
    pub payload: Bytes,
    /// Absolute deadline, Unix epoch milliseconds.
    pub deadline_ms: u64,
    pub invoked_function_arn: Arc<str>,
    pub trace_id: String,
    /// Already base64-decoded.
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
}

/// How the runtime answered one event.
#[derive(Debug)]
pub enum Outcome {
    /// `POST …/response`.
    Response(Bytes),
    /// `POST …/response` in streaming mode: delivered when its head is admitted, the body
    /// follows through the stream (see [`crate::stream`]).
    Stream(crate::stream::ResponseStream),
    /// `POST …/error`, with the error type header if given and the body (possibly empty).
    Error { error_type: Option<String>, body: Bytes },
    /// The response was over the limit; the runtime got a 413.
    ResponseTooLarge,
    /// The response used an unknown `Lambda-Runtime-Function-Response-Mode`.
    InvalidResponseMode,
}

impl PartialEq for Outcome {
    /// Two streams are never equal: each is one live body.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Response(a), Self::Response(b)) => a == b,
            (Self::Error { error_type: ta, body: ba }, Self::Error { error_type: tb, body: bb }) => {
                ta == tb && ba == bb
            }
            (Self::ResponseTooLarge, Self::ResponseTooLarge)
            | (Self::InvalidResponseMode, Self::InvalidResponseMode) => true,
            _ => false,
        }
    }
}

/// How Init ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// The runtime called `next`.
    Ready,
    /// The runtime called `init/error`.
    Error { error_type: Option<String>, body: Bytes },
}

/// Stops and resumes the environment's processes.
pub trait Freezer: Send + Sync {
    fn freeze(&self);
    fn thaw(&self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Ready,
    Running,
    InitError,
}

struct Current {
    invocation: Invocation,
    reply: Option<oneshot::Sender<Outcome>>,
    /// A `response`/`error` body for this event is being read.
    body_in_flight: bool,
}

struct State {
    phase: Phase,
    frozen: bool,
    closed: bool,
    current: Option<Current>,
    queue: VecDeque<(Invocation, oneshot::Sender<Outcome>)>,
    /// An `init/error` body is being read.
    init_body_in_flight: bool,
    /// Since when the environment has had nothing to do: its runtime waits in `next` with
    /// nothing queued, or answered and has not come back. The freeze clock freezes it once this
    /// is a grace old; `None` while an event is queued or in flight, and once frozen.
    idle_since: Option<Instant>,
    /// The freeze clock task exists.
    clock_started: bool,
    /// The freeze clock sleeps without a timer (the environment is frozen, or busy with a long
    /// event) and must be poked when that changes.
    clock_parked: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes a runtime waiting in `next`.
    event: Notify,
    freezer: Box<dyn Freezer>,
    freeze_after_init: bool,
    /// How long a runtime waiting in `next` stays thawed before it is frozen.
    freeze_grace: Duration,
    /// Becomes `Some` when Init ends: `Some(None)` if the API was closed first.
    init: watch::Sender<Option<Option<InitOutcome>>>,
    /// The accept loop, stopped by [`RuntimeApi::close`] so the listener goes with it. It owns
    /// the connection tasks, so stopping it aborts them all.
    pub(crate) accept: Mutex<Option<tokio::task::AbortHandle>>,
    /// Wakes a parked freeze clock (see [`State::clock_parked`]), and ends it when this goes.
    poke: Arc<Notify>,
    /// The freeze clock task, stopped by [`RuntimeApi::close`].
    clock: Mutex<Option<tokio::task::AbortHandle>>,
    /// Body bytes being read for this environment right now (see `server::ENV_BODY_BUDGET`).
    pub(crate) buffered: std::sync::atomic::AtomicUsize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A parked freeze clock holds only the `Notify`: it wakes, finds nothing and ends.
        self.poke.notify_one();
    }
}

/// A runtime-call refusal: HTTP status, `errorType`, `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

impl Refusal {
    fn state(from: Phase, to: &str) -> Self {
        Self {
            status: 403,
            error_type: crate::wire::INVALID_STATE_TRANSITION,
            message: format!(
                "State transition from {from:?} to {to} failed for runtime. Error: State transition is not allowed"
            ),
        }
    }

    fn request_id() -> Self {
        Self { status: 400, error_type: crate::wire::INVALID_REQUEST_ID, message: "Invalid request ID".into() }
    }

    /// Another body for the same request id (or `init/error`) is being read right now.
    fn body_in_flight(from: Phase, to: &str) -> Self {
        Self {
            status: 403,
            error_type: crate::wire::INVALID_STATE_TRANSITION,
            message: format!(
                "State transition from {from:?} to {to} failed for runtime. Error: another request for it is in progress"
            ),
        }
    }

    /// Nobody reads the streamed answer any more (its caller went away, or the invocation
    /// ended); the runtime should stop writing it.
    pub(crate) fn closed_stream() -> Self {
        Self {
            status: 410,
            error_type: crate::wire::ENVIRONMENT_CLOSED,
            message: "The invocation ended before its streamed response".into(),
        }
    }

    /// The environment is being destroyed; its runtime gets no more events.
    fn closed() -> Self {
        Self {
            status: 410,
            error_type: crate::wire::ENVIRONMENT_CLOSED,
            message: "The execution environment is shutting down".into(),
        }
    }
}

/// Which body a [`BodySlot`] admits.
enum SlotFor {
    Answer(Arc<str>),
    InitError,
}

/// Permission to read one body; released when dropped, whether the read finished or not.
pub struct BodySlot {
    api: RuntimeApi,
    what: SlotFor,
    /// The absolute deadline of the event being answered (Unix ms), for `response`/`error`.
    pub deadline_ms: Option<u64>,
}

impl Drop for BodySlot {
    fn drop(&mut self) {
        let mut st = lock(&self.api.shared.state);
        match &self.what {
            SlotFor::InitError => st.init_body_in_flight = false,
            SlotFor::Answer(id) => {
                if let Some(cur) = st.current.as_mut().filter(|c| c.invocation.request_id == *id) {
                    cur.body_in_flight = false;
                }
            }
        }
    }
}

/// The Runtime API of one environment. Cheap to clone.
#[derive(Clone)]
pub struct RuntimeApi {
    pub(crate) shared: Arc<Shared>,
}

impl RuntimeApi {
    /// A Runtime API in its Init phase, serving nothing yet.
    ///
    /// `freeze_after_init`: whether the environment is frozen when Init ends and nothing is
    /// queued. A cold start for a waiting caller says no, since its event follows at once and a
    /// freeze and thaw in between would only cost time; a provisioned environment says yes.
    ///
    /// `freeze_grace`: how long a runtime that called `next` stays thawed before it is frozen.
    /// An event within the grace skips a freeze and a thaw, which is most of what a warm call
    /// costs beyond its HTTP hops when calls come back to back; zero freezes at once.
    pub fn new(freezer: Box<dyn Freezer>, freeze_after_init: bool, freeze_grace: Duration) -> Self {
        let (init, _) = watch::channel(None);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    phase: Phase::Init,
                    frozen: false,
                    closed: false,
                    current: None,
                    queue: VecDeque::new(),
                    init_body_in_flight: false,
                    idle_since: None,
                    clock_started: false,
                    clock_parked: false,
                }),
                event: Notify::new(),
                freezer,
                freeze_after_init,
                freeze_grace,
                init,
                accept: Mutex::new(None),
                poke: Arc::new(Notify::new()),
                clock: Mutex::new(None),
                buffered: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Serves this Runtime API on `listener` until [`RuntimeApi::close`] or the listener fails.
    pub fn serve(&self, listener: std::net::TcpListener) -> std::io::Result<()> {
        crate::server::serve(self.clone(), listener)
    }

    /// Resolves when Init ends; `None` if the API was closed first.
    pub async fn wait_init(&self) -> Option<InitOutcome> {
        let mut rx = self.shared.init.subscribe();
        let outcome = rx.wait_for(Option::is_some).await.ok().and_then(|v| v.clone()).flatten();
        outcome
    }

    /// Hands `invocation` to the runtime, thawing the environment if it is frozen. The receiver
    /// yields the runtime's answer; it fails if the API is closed first.
    pub fn dispatch(&self, invocation: Invocation) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&self.shared.state);
        if st.closed {
            return rx;
        }
        if st.frozen {
            st.frozen = false;
            self.shared.freezer.thaw();
        }
        st.idle_since = None;
        self.poke_clock(&mut st);
        st.queue.push_back((invocation, tx));
        drop(st);
        self.shared.event.notify_one();
        rx
    }

    /// Ends this API: pending `next` calls end with a refusal, answers are dropped, and the
    /// accept loop stops, which aborts every connection task with it.
    pub fn close(&self) {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        st.queue.clear();
        st.current = None;
        drop(st);
        self.shared.init.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(None);
                true
            } else {
                false
            }
        });
        if let Some(accept) = lock(&self.shared.accept).take() {
            accept.abort();
        }
        if let Some(clock) = lock(&self.shared.clock).take() {
            clock.abort();
        }
        self.shared.event.notify_waiters();
    }

    /// Whether the runtime never fetched this invocation (it is still queued).
    pub fn undelivered(&self, request_id: &str) -> bool {
        lock(&self.shared.state).queue.iter().any(|(inv, _)| &*inv.request_id == request_id)
    }

    /// Whether [`RuntimeApi::close`] was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }

    /// Whether the environment is frozen now.
    pub fn is_frozen(&self) -> bool {
        lock(&self.shared.state).frozen
    }

    /// Whether the runtime answered its last event and has not come back to `next` since: such a
    /// runtime is still working (or will never ask again).
    pub fn awaiting_next(&self) -> bool {
        let st = lock(&self.shared.state);
        st.phase == Phase::Running && st.current.as_ref().is_some_and(|c| c.reply.is_none())
    }

    /// `GET next`: the next event, once there is one.
    pub async fn next(&self) -> Result<Invocation, Refusal> {
        let mut skip_freeze = false;
        loop {
            let notified = self.shared.event.notified();
            tokio::pin!(notified);
            let closed = {
                let mut st = lock(&self.shared.state);
                match st.phase {
                    Phase::InitError => return Err(Refusal::state(Phase::InitError, "Ready")),
                    Phase::Init => {
                        st.phase = Phase::Ready;
                        skip_freeze = !self.shared.freeze_after_init;
                        self.end_init(InitOutcome::Ready);
                    }
                    Phase::Running => {
                        // Asking again without answering: serve the same event again, as RIE does.
                        if let Some(cur) = &st.current {
                            if cur.reply.is_some() {
                                return Ok(cur.invocation.clone());
                            }
                        }
                        st.phase = Phase::Ready;
                        st.current = None;
                    }
                    Phase::Ready => {}
                }
                if st.closed {
                    true
                } else if let Some((invocation, reply)) = st.queue.pop_front() {
                    st.phase = Phase::Running;
                    st.current =
                        Some(Current { invocation: invocation.clone(), reply: Some(reply), body_in_flight: false });
                    return Ok(invocation);
                } else {
                    if !st.frozen && !skip_freeze {
                        if self.shared.freeze_grace.is_zero() {
                            st.frozen = true;
                            self.shared.freezer.freeze();
                        } else {
                            // The freeze clock freezes it if nothing comes within the grace.
                            self.went_idle(&mut st);
                        }
                    }
                    false
                }
            };
            if closed {
                // A closed environment never gets another event; the call ends so its
                // connection is not held.
                return Err(Refusal::closed());
            }
            notified.await;
        }
    }

    /// Checks that `request_id` is the event in flight and not yet answered.
    pub fn check_request(&self, request_id: &str) -> Result<(), Refusal> {
        let st = lock(&self.shared.state);
        match &st.current {
            Some(cur) if &*cur.invocation.request_id == request_id => {
                if cur.reply.is_some() {
                    Ok(())
                } else {
                    Err(Refusal::state(st.phase, "ResponseSent"))
                }
            }
            _ if st.phase == Phase::InitError => Err(Refusal::state(Phase::InitError, "ResponseSent")),
            _ => Err(Refusal::request_id()),
        }
    }

    /// Admits one `response`/`error` body for `request_id`, checked before a byte of it is
    /// read: the id must be the event in flight, not yet answered, and no other body for it may
    /// be on its way.
    pub fn claim_answer_body(&self, request_id: &str) -> Result<BodySlot, Refusal> {
        let mut st = lock(&self.shared.state);
        let phase = st.phase;
        match st.current.as_mut() {
            Some(cur) if &*cur.invocation.request_id == request_id => {
                if cur.reply.is_none() {
                    return Err(Refusal::state(phase, "ResponseSent"));
                }
                if cur.body_in_flight {
                    return Err(Refusal::body_in_flight(phase, "ResponseSent"));
                }
                cur.body_in_flight = true;
                let id = cur.invocation.request_id.clone();
                let deadline_ms = Some(cur.invocation.deadline_ms);
                drop(st);
                Ok(BodySlot { api: self.clone(), what: SlotFor::Answer(id), deadline_ms })
            }
            _ if phase == Phase::InitError => Err(Refusal::state(Phase::InitError, "ResponseSent")),
            _ => Err(Refusal::request_id()),
        }
    }

    /// Admits one `init/error` body, checked before a byte of it is read: only during Init, one
    /// at a time.
    pub fn claim_init_error_body(&self) -> Result<BodySlot, Refusal> {
        let mut st = lock(&self.shared.state);
        if st.phase != Phase::Init {
            return Err(Refusal::state(st.phase, "InitError"));
        }
        if st.init_body_in_flight {
            return Err(Refusal::body_in_flight(st.phase, "InitError"));
        }
        st.init_body_in_flight = true;
        drop(st);
        Ok(BodySlot { api: self.clone(), what: SlotFor::InitError, deadline_ms: None })
    }

    /// `POST response` or `POST error`: delivers `outcome` for `request_id`.
    ///
    /// Unless the runtime is back in `next` within the grace, the environment is frozen: a
    /// runtime that keeps running after its answer must not use the CPU while it is idle.
    pub fn answer(&self, request_id: &str, outcome: Outcome) -> Result<(), Refusal> {
        self.deliver(request_id, outcome)?;
        self.freeze_unless_back(request_id);
        Ok(())
    }

    /// `POST response` in streaming mode: hands the stream to the engine as soon as its head is
    /// admitted. The environment is not frozen while the runtime writes the body;
    /// [`RuntimeApi::stream_ended`] says when it is done.
    pub fn answer_stream(&self, request_id: &str, stream: crate::stream::ResponseStream) -> Result<(), Refusal> {
        self.deliver(request_id, Outcome::Stream(stream))
    }

    /// The body of a streamed answer ended: from now on the runtime is expected back in `next`,
    /// and is frozen after the grace if it does not come.
    pub fn stream_ended(&self, request_id: &str) {
        self.freeze_unless_back(request_id);
    }

    fn deliver(&self, request_id: &str, outcome: Outcome) -> Result<(), Refusal> {
        let mut st = lock(&self.shared.state);
        let phase = st.phase;
        match &mut st.current {
            Some(cur) if &*cur.invocation.request_id == request_id => match cur.reply.take() {
                Some(tx) => {
                    let _ = tx.send(outcome);
                    Ok(())
                }
                None => Err(Refusal::state(phase, "ResponseSent")),
            },
            _ => Err(Refusal::request_id()),
        }
    }

    /// Freezes the environment after the grace unless the runtime came back to `next`.
    fn freeze_unless_back(&self, request_id: &str) {
        let mut st = lock(&self.shared.state);
        let answered = st.phase == Phase::Running
            && st.current.as_ref().is_some_and(|c| c.reply.is_none() && &*c.invocation.request_id == request_id);
        if !answered || !st.queue.is_empty() || st.frozen || st.closed {
            return;
        }
        if self.shared.freeze_grace.is_zero() {
            st.frozen = true;
            self.shared.freezer.freeze();
        } else {
            // The freeze clock freezes it unless the runtime asks for work within the grace.
            self.went_idle(&mut st);
        }
    }

    /// The environment has nothing to do from now on: the freeze clock freezes it once it stayed
    /// so for the grace (a `next` with nothing queued starts the grace again).
    fn went_idle(&self, st: &mut State) {
        st.idle_since = Some(Instant::now());
        if !st.clock_started {
            // Without a runtime (some tests) nothing freezes later, as before the clock.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                st.clock_started = true;
                let task = rt.spawn(freeze_clock(Arc::downgrade(&self.shared)));
                *lock(&self.shared.clock) = Some(task.abort_handle());
                if st.closed {
                    task.abort();
                }
            }
        }
        self.poke_clock(st);
    }

    /// Wakes the freeze clock if it sleeps without a timer: the environment is idle or thawed now.
    fn poke_clock(&self, st: &mut State) {
        if st.clock_parked {
            st.clock_parked = false;
            self.shared.poke.notify_one();
        }
    }

    /// `POST init/error`.
    pub fn init_error(&self, error_type: Option<String>, body: Bytes) -> Result<(), Refusal> {
        let mut st = lock(&self.shared.state);
        if st.phase != Phase::Init {
            return Err(Refusal::state(st.phase, "InitError"));
        }
        st.phase = Phase::InitError;
        self.end_init(InitOutcome::Error { error_type, body });
        Ok(())
    }

    /// Records how Init ended, unless [`RuntimeApi::close`] came first: `wait_init` then stays
    /// `None` even if the runtime still reaches `next` or `init/error`.
    fn end_init(&self, outcome: InitOutcome) {
        self.shared.init.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(Some(outcome));
                true
            } else {
                false
            }
        });
    }
}

/// What the freeze clock does next.
enum Tick {
    /// Look at the environment again at this time.
    At(Instant),
    /// Sleep until poked: the environment is frozen, or busy with one long event.
    Park,
}

/// The freeze clock of one environment: freezes it once it has been idle for the grace.
///
/// While the environment serves calls back to back it looks once per grace (an event in flight
/// now, or idle for less than the grace), which costs one timer per grace instead of one or two
/// per call. It parks without a timer while the environment is frozen (a thaw pokes it) or when
/// the same event is still in flight one grace after it first saw it (the answer pokes it), so
/// frozen environments and long events cost nothing. Ends with the environment (`close` aborts
/// it; it holds only a weak reference, so an API dropped without `close` ends it too).
async fn freeze_clock(shared: std::sync::Weak<Shared>) {
    // The event seen in flight at the last look, to tell a long one from back-to-back calls.
    let mut in_flight: Option<Arc<str>> = None;
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let tick = look(&strong, &mut in_flight);
        let poke = strong.poke.clone();
        drop(strong);
        match tick {
            None => return,
            Some(Tick::At(at)) => tokio::time::sleep_until(at).await,
            Some(Tick::Park) => {
                // A poke between the look and this wait is kept by the `Notify` as a permit.
                poke.notified().await;
                in_flight = None;
            }
        }
    }
}

/// One look of the freeze clock: freezes the environment if it has been idle for the grace,
/// and says when to look again (`None`: the environment is closed).
fn look(shared: &Shared, in_flight: &mut Option<Arc<str>>) -> Option<Tick> {
    let grace = shared.freeze_grace;
    let mut st = lock(&shared.state);
    if st.closed {
        return None;
    }
    let now = Instant::now();
    let busy = match (&st.current, st.phase) {
        (Some(cur), Phase::Running) if st.idle_since.is_none() => Some(cur.invocation.request_id.clone()),
        _ => None,
    };
    let tick = if st.frozen {
        Tick::Park
    } else if let Some(since) = st.idle_since.filter(|_| st.queue.is_empty()) {
        if now >= since + grace {
            st.frozen = true;
            st.idle_since = None;
            shared.freezer.freeze();
            Tick::Park
        } else {
            Tick::At(since + grace)
        }
    } else if busy.is_some() && busy == *in_flight {
        Tick::Park
    } else {
        Tick::At(now + grace)
    };
    *in_flight = busy;
    if matches!(tick, Tick::Park) {
        st.clock_parked = true;
    }
    Some(tick)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update; the state is still the best
    // we have, and refusing every later call would turn one bug into an outage.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counter {
        freezes: AtomicUsize,
        thaws: AtomicUsize,
    }
    struct SharedCounter(Arc<Counter>);
    impl Freezer for SharedCounter {
        fn freeze(&self) {
            self.0.freezes.fetch_add(1, Ordering::SeqCst);
        }
        fn thaw(&self) {
            self.0.thaws.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn api() -> (RuntimeApi, Arc<Counter>) {
        let c = Arc::new(Counter::default());
        (RuntimeApi::new(Box::new(SharedCounter(c.clone())), true, Duration::ZERO), c)
    }

    fn inv(id: &str) -> Invocation {
        Invocation {
            request_id: id.into(),
            payload: Bytes::from_static(b"{}"),
            deadline_ms: 0,
            invoked_function_arn: "arn".into(),
            trace_id: String::new(),
            client_context: None,
            cognito_identity: None,
        }
    }

    #[tokio::test]
    async fn first_next_ends_init_and_freezes_until_dispatch() {
        let (api, c) = api();
        let a2 = api.clone();
        let next = tokio::spawn(async move { a2.next().await });
        assert_eq!(api.wait_init().await, Some(InitOutcome::Ready));
        tokio::task::yield_now().await;
        let rx = api.dispatch(inv("r1"));
        let got = next.await.unwrap().unwrap();
        assert_eq!(&*got.request_id, "r1");
        assert_eq!(c.freezes.load(Ordering::SeqCst), 1);
        assert_eq!(c.thaws.load(Ordering::SeqCst), 1);
        api.answer("r1", Outcome::Response(Bytes::from_static(b"ok"))).unwrap();
        assert_eq!(rx.await.unwrap(), Outcome::Response(Bytes::from_static(b"ok")));
    }

    #[tokio::test]
    async fn a_cold_start_for_a_waiting_caller_is_not_frozen_after_init() {
        let c = Arc::new(Counter::default());
        let api = RuntimeApi::new(Box::new(SharedCounter(c.clone())), false, Duration::ZERO);
        let a2 = api.clone();
        let next = tokio::spawn(async move { a2.next().await });
        assert_eq!(api.wait_init().await, Some(InitOutcome::Ready));
        tokio::task::yield_now().await;
        let _rx = api.dispatch(inv("r1"));
        next.await.unwrap().unwrap();
        assert_eq!((c.freezes.load(Ordering::SeqCst), c.thaws.load(Ordering::SeqCst)), (0, 0));
        // After the first answer the runtime waits again, and is frozen.
        api.answer("r1", Outcome::Response(Bytes::new())).unwrap();
        let a3 = api.clone();
        tokio::spawn(async move { a3.next().await });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(c.freezes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_grace_an_event_in_time_skips_the_freeze_and_a_late_one_thaws() {
        let c = Arc::new(Counter::default());
        let grace = Duration::from_millis(50);
        let api = RuntimeApi::new(Box::new(SharedCounter(c.clone())), true, grace);
        let counts = || (c.freezes.load(Ordering::SeqCst), c.thaws.load(Ordering::SeqCst));
        let a2 = api.clone();
        let next = tokio::spawn(async move { a2.next().await });
        assert_eq!(api.wait_init().await, Some(InitOutcome::Ready));
        tokio::time::sleep(grace / 2).await;
        let _rx = api.dispatch(inv("r1"));
        next.await.unwrap().unwrap();
        assert_eq!(counts(), (0, 0), "an event within the grace neither freezes nor thaws");
        api.answer("r1", Outcome::Response(Bytes::new())).unwrap();
        let a3 = api.clone();
        let next = tokio::spawn(async move { a3.next().await });
        tokio::time::sleep(grace * 2).await;
        assert_eq!(counts(), (1, 0), "frozen once the grace is over");
        let _rx = api.dispatch(inv("r2"));
        assert_eq!(&*next.await.unwrap().unwrap().request_id, "r2");
        assert_eq!(counts(), (1, 1));
        // The same `next` call, once thawed by an event, freezes again only after another grace.
        api.answer("r2", Outcome::Response(Bytes::new())).unwrap();
        let a4 = api.clone();
        tokio::spawn(async move { a4.next().await });
        tokio::time::sleep(grace / 2).await;
        assert_eq!(counts(), (1, 1));
        api.close();
        tokio::time::sleep(grace * 2).await;
        assert_eq!(counts(), (1, 1), "a closed environment is not frozen");
    }

    #[tokio::test]
    async fn wrong_request_id_is_400_and_second_answer_is_403() {
        let (api, _) = api();
        let _rx = api.dispatch(inv("r1"));
        api.next().await.unwrap();
        assert_eq!(api.answer("nope", Outcome::Response(Bytes::new())).unwrap_err().status, 400);
        assert_eq!(api.check_request("").unwrap_err().status, 400);
        api.answer("r1", Outcome::Response(Bytes::new())).unwrap();
        let second = api.answer("r1", Outcome::Response(Bytes::new())).unwrap_err();
        assert_eq!((second.status, second.error_type), (403, "InvalidStateTransition"));
    }

    #[tokio::test]
    async fn next_without_answer_reserves_the_same_event() {
        let (api, _) = api();
        let _rx = api.dispatch(inv("r1"));
        assert_eq!(&*api.next().await.unwrap().request_id, "r1");
        assert_eq!(&*api.next().await.unwrap().request_id, "r1");
    }

    #[tokio::test]
    async fn init_error_only_before_first_next() {
        let (api, _) = api();
        api.init_error(Some("Runtime.X".into()), Bytes::new()).unwrap();
        assert!(matches!(api.wait_init().await, Some(InitOutcome::Error { .. })));
        assert_eq!(api.next().await.unwrap_err().status, 403);
        assert_eq!(api.init_error(None, Bytes::new()).unwrap_err().status, 403);

        let (api, _) = api_ready().await;
        assert_eq!(api.init_error(None, Bytes::new()).unwrap_err().status, 403);
    }

    async fn api_ready() -> (RuntimeApi, Arc<Counter>) {
        let (api, c) = api();
        let _rx = api.dispatch(inv("r0"));
        api.next().await.unwrap();
        (api, c)
    }

    #[tokio::test]
    async fn init_ending_after_close_still_reports_closed() {
        // Found by fuzz/runtime_api_state: `next` after `close` turned `None` into `Ready`.
        let (a, _) = api();
        a.close();
        let a2 = a.clone();
        let next = tokio::spawn(async move { a2.next().await });
        tokio::task::yield_now().await;
        assert_eq!(a.wait_init().await, None);
        next.abort();

        let (b, _) = api();
        b.close();
        let _ = b.init_error(None, Bytes::new());
        assert_eq!(b.wait_init().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_without_next_within_the_grace_freezes() {
        let c = Arc::new(Counter::default());
        let grace = Duration::from_millis(50);
        let api = RuntimeApi::new(Box::new(SharedCounter(c.clone())), false, grace);
        let _rx = api.dispatch(inv("r1"));
        api.next().await.unwrap();
        api.answer("r1", Outcome::Response(Bytes::new())).unwrap();
        assert!(api.awaiting_next());
        tokio::time::sleep(grace / 2).await;
        assert_eq!(c.freezes.load(Ordering::SeqCst), 0, "not within the grace");
        tokio::time::sleep(grace).await;
        assert_eq!(c.freezes.load(Ordering::SeqCst), 1, "frozen: the runtime never came back to next");
        assert!(api.is_frozen());
        // The next event thaws it, once.
        let _rx = api.dispatch(inv("r2"));
        assert_eq!(c.thaws.load(Ordering::SeqCst), 1);
        assert_eq!(&*api.next().await.unwrap().request_id, "r2");
        assert!(!api.awaiting_next());
        // An answer followed by `next` in time is not frozen by the answer.
        api.answer("r2", Outcome::Response(Bytes::new())).unwrap();
        let a2 = api.clone();
        let next = tokio::spawn(async move { a2.next().await });
        tokio::time::sleep(grace / 2).await;
        assert_eq!(c.freezes.load(Ordering::SeqCst), 1);
        let _rx = api.dispatch(inv("r3"));
        assert_eq!(&*next.await.unwrap().unwrap().request_id, "r3");
        assert_eq!(c.freezes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_long_event_the_answer_still_freezes_after_the_grace() {
        let c = Arc::new(Counter::default());
        let grace = Duration::from_millis(50);
        let api = RuntimeApi::new(Box::new(SharedCounter(c.clone())), false, grace);
        let freezes = || c.freezes.load(Ordering::SeqCst);
        // Back-to-back events start the freeze clock, and none is frozen in between.
        for id in ["r1", "r2", "r3"] {
            let _rx = api.dispatch(inv(id));
            api.next().await.unwrap();
            tokio::time::sleep(grace / 5).await;
            api.answer(id, Outcome::Response(Bytes::new())).unwrap();
        }
        assert_eq!(freezes(), 0);
        // A long event: the clock stops looking while it runs, and the answer wakes it.
        let _rx = api.dispatch(inv("long"));
        api.next().await.unwrap();
        tokio::time::sleep(grace * 10).await;
        assert_eq!(freezes(), 0, "an environment is not frozen while it works on an event");
        api.answer("long", Outcome::Response(Bytes::new())).unwrap();
        tokio::time::sleep(grace / 2).await;
        assert_eq!(freezes(), 0, "not within the grace after the answer");
        tokio::time::sleep(grace).await;
        assert_eq!(freezes(), 1, "frozen one grace after the answer: the runtime never came back to next");
        // A runtime back in `next` after a long event is frozen one grace after it asked.
        let _rx = api.dispatch(inv("long2"));
        assert_eq!(&*api.next().await.unwrap().request_id, "long2");
        tokio::time::sleep(grace * 10).await;
        api.answer("long2", Outcome::Response(Bytes::new())).unwrap();
        let a2 = api.clone();
        let next = tokio::spawn(async move { a2.next().await });
        tokio::time::sleep(grace / 2).await;
        assert_eq!(freezes(), 1);
        tokio::time::sleep(grace).await;
        assert_eq!(freezes(), 2);
        api.close();
        assert_eq!(next.await.unwrap().unwrap_err().status, 410);
    }

    #[tokio::test]
    async fn bodies_are_admitted_before_reading_and_one_at_a_time() {
        let (api, _) = api();
        // No event in flight: refused before any body is read.
        assert_eq!(api.claim_answer_body("r1").err().map(|r| r.status), Some(400));
        let _rx = api.dispatch(inv("r1"));
        api.next().await.unwrap();
        assert_eq!(api.claim_answer_body("other").err().map(|r| r.status), Some(400));
        let slot = api.claim_answer_body("r1").unwrap();
        let second = api.claim_answer_body("r1").err().unwrap();
        assert_eq!((second.status, second.error_type), (403, "InvalidStateTransition"));
        // A read that ended without an answer (a truncated body) frees the slot.
        drop(slot);
        let slot = api.claim_answer_body("r1").unwrap();
        api.answer("r1", Outcome::Response(Bytes::new())).unwrap();
        drop(slot);
        assert_eq!(api.claim_answer_body("r1").err().map(|r| r.status), Some(403));
        // init/error only during Init.
        assert_eq!(api.claim_init_error_body().err().map(|r| r.status), Some(403));
        let (fresh, _) = super::tests::api();
        let slot = fresh.claim_init_error_body().unwrap();
        assert_eq!(fresh.claim_init_error_body().err().map(|r| r.status), Some(403));
        drop(slot);
        assert!(fresh.claim_init_error_body().is_ok());
    }

    #[tokio::test]
    async fn a_pending_next_ends_when_the_api_closes() {
        let (api, _) = api();
        let a2 = api.clone();
        let next = tokio::spawn(async move { a2.next().await });
        assert_eq!(api.wait_init().await, Some(InitOutcome::Ready));
        api.close();
        let r = next.await.unwrap().unwrap_err();
        assert_eq!(r.status, 410);
        assert_eq!(api.next().await.unwrap_err().status, 410);
    }

    #[tokio::test]
    async fn events_queued_before_next_are_served_in_order() {
        let (api, _) = api();
        let _a = api.dispatch(inv("a"));
        assert_eq!(&*api.next().await.unwrap().request_id, "a");
        api.answer("a", Outcome::Response(Bytes::new())).unwrap();
        let _b = api.dispatch(inv("b"));
        assert_eq!(&*api.next().await.unwrap().request_id, "b");
    }
}
