//! Drives `kiln_runtime_api::RuntimeApi` with an arbitrary sequence of engine and runtime calls
//! and checks it against a model of the state machine in `state.rs`:
//!
//! - an answered request id can never be answered again (403 while it is in flight, 400 after);
//! - a request id that is not the one in flight is 400;
//! - `next` serves events in dispatch order, never one whose answer was already sent, and
//!   serves the same event again only while it is in flight and unanswered;
//! - a `next` left waiting wakes for the next dispatch (no lost wakeups) and not before;
//! - answers reach the engine's receiver; `close` drops every pending receiver;
//! - `undelivered` is true exactly for the events still queued;
//! - `wait_init` reports the first of `next` / `init/error` / `close`;
//! - freeze and thaw alternate, starting with freeze.
//!
//! Each input byte picks an operation (some read one more byte as a parameter). The runtime is a
//! current-thread tokio runtime with a paused clock, so timeouts cost no real time.
#![no_main]

use bytes::Bytes;
use kiln_runtime_api::state::Refusal;
use kiln_runtime_api::{Freezer, InitOutcome, Invocation, Outcome, RuntimeApi};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Counts {
    freezes: AtomicUsize,
    thaws: AtomicUsize,
}

/// A freezer that freezes nothing and counts the calls.
struct CountingFreezer(Arc<Counts>);

impl Freezer for CountingFreezer {
    fn freeze(&self) {
        self.0.freezes.fetch_add(1, Ordering::SeqCst);
    }
    fn thaw(&self) {
        self.0.thaws.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Ready,
    Running,
    InitError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InitSeen {
    Ready,
    Error,
    Closed,
}

/// What a `next` call is expected to do.
#[derive(Debug, PartialEq, Eq)]
enum NextExpect {
    Refused403,
    /// The API is closed: `next` ends with a 410 instead of holding its connection.
    Closed410,
    Event(u32),
    Wait,
}

#[derive(Debug)]
struct Model {
    phase: Phase,
    closed: bool,
    queue: VecDeque<u32>,
    /// The event in flight and whether it was answered.
    current: Option<(u32, bool)>,
    answered: HashSet<u32>,
    init: Option<InitSeen>,
    /// A background `next` is waiting for an event.
    bg_waiting: bool,
}

impl Model {
    /// The state change of one `next` call, up to the point where it returns or waits.
    fn next(&mut self) -> NextExpect {
        match self.phase {
            Phase::InitError => return NextExpect::Refused403,
            Phase::Init => {
                self.phase = Phase::Ready;
                if self.init.is_none() {
                    self.init = Some(InitSeen::Ready);
                }
            }
            Phase::Running => match self.current {
                Some((id, false)) => return NextExpect::Event(id),
                _ => {
                    self.phase = Phase::Ready;
                    self.current = None;
                }
            },
            Phase::Ready => {}
        }
        if self.closed {
            return NextExpect::Closed410;
        }
        match self.queue.pop_front() {
            Some(id) => {
                self.phase = Phase::Running;
                self.current = Some((id, false));
                NextExpect::Event(id)
            }
            None => NextExpect::Wait,
        }
    }
}

fn rid(id: u32) -> String {
    format!("r{id}")
}

fn invocation(id: u32) -> Invocation {
    Invocation {
        request_id: rid(id).into(),
        payload: Bytes::from(format!("payload-{id}")),
        deadline_ms: u64::from(id),
        invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
        trace_id: String::new(),
        client_context: None,
        cognito_identity: None,
    }
}

fn outcome(b: u8) -> Outcome {
    match b % 4 {
        0 => Outcome::Response(Bytes::from(vec![b; usize::from(b % 8)])),
        1 => Outcome::Error {
            error_type: (b & 0x10 != 0).then(|| "Handled".to_string()),
            body: Bytes::from_static(b"{}"),
        },
        2 => Outcome::ResponseTooLarge,
        _ => Outcome::InvalidResponseMode,
    }
}

/// Checks what a `next` returned against what the model expected of it.
fn check_next(what: &str, expect: &NextExpect, got: Option<&Result<Invocation, Refusal>>, model: &Model) {
    match (expect, got) {
        (NextExpect::Refused403, Some(Err(r))) => {
            assert_eq!(r.status, 403, "{what}: {r:?}")
        }
        (NextExpect::Event(id), Some(Ok(inv))) => {
            assert_eq!(&*inv.request_id, rid(*id), "{what}: wrong event; model {model:?}");
            assert_eq!(&inv.payload[..], format!("payload-{id}").as_bytes());
            assert!(!model.answered.contains(id), "{what}: served {id} whose answer was already sent");
        }
        (NextExpect::Closed410, Some(Err(r))) => {
            assert_eq!(r.status, 410, "{what}: {r:?}")
        }
        (NextExpect::Wait, None) => {}
        (e, g) => panic!("{what}: expected {e:?}, got {g:?}; model {model:?}"),
    }
}

struct Harness {
    api: RuntimeApi,
    counts: Arc<Counts>,
    model: Model,
    rxs: HashMap<u32, oneshot::Receiver<Outcome>>,
    next_id: u32,
    bg: Option<JoinHandle<Result<Invocation, Refusal>>>,
}

impl Harness {
    /// Lets every spawned task run until all wait, then checks the background `next`.
    async fn settle(&mut self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Freeze and thaw alternate, starting with freeze.
        let f = self.counts.freezes.load(Ordering::SeqCst);
        let t = self.counts.thaws.load(Ordering::SeqCst);
        assert!(f == t || f == t + 1, "freezes {f}, thaws {t}");

        let Some(handle) = &self.bg else { return };
        let finished = handle.is_finished();
        let expect = if self.model.bg_waiting {
            // A waiting `next` wakes for an event, or ends when the API closes.
            if self.model.closed {
                self.model.bg_waiting = false;
                NextExpect::Closed410
            } else if !self.model.queue.is_empty() {
                self.model.bg_waiting = false;
                self.model.next()
            } else {
                NextExpect::Wait
            }
        } else {
            NextExpect::Wait
        };
        if expect == NextExpect::Wait {
            assert!(!finished, "background next returned while it should wait");
            return;
        }
        assert!(finished, "background next did not wake for {expect:?} (lost wakeup)");
        let got = self.bg.take().unwrap().await.expect("next panicked");
        check_next("background next", &expect, Some(&got), &self.model);
    }

    /// An id for an answer or check: the one in flight, or an older one, or one never used.
    fn pick_id(&self, b: u8) -> String {
        match b % 4 {
            0 | 1 => match self.model.current {
                Some((id, _)) => rid(id),
                None => rid(u32::from(b) % self.next_id.max(1)),
            },
            2 => rid(u32::from(b) % self.next_id.max(1)),
            _ => match b % 3 {
                0 => String::new(),
                1 => format!("bogus-{b}"),
                _ => rid(1000 + u32::from(b)),
            },
        }
    }

    fn expect_answer(&self, id: &str) -> Result<(), u16> {
        match self.model.current {
            Some((cur, false)) if rid(cur) == id => Ok(()),
            Some((cur, true)) if rid(cur) == id => Err(403),
            _ => Err(400),
        }
    }

    async fn step(&mut self, op: u8, arg: u8) {
        match op % 10 {
            // Engine: dispatch a new event.
            0 => {
                let id = self.next_id;
                self.next_id += 1;
                let mut rx = self.api.dispatch(invocation(id));
                if self.model.closed {
                    assert!(
                        matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
                        "dispatch after close must drop the reply"
                    );
                } else {
                    self.model.queue.push_back(id);
                    self.rxs.insert(id, rx);
                }
            }
            // Runtime: `next`, given up on after a while.
            1 => {
                let expect = self.model.next();
                let got = tokio::time::timeout(Duration::from_millis(10), self.api.next()).await;
                check_next("next", &expect, got.as_ref().ok(), &self.model);
            }
            // Runtime: answer, mostly the right id.
            2 | 3 => {
                let id = self.pick_id(arg);
                let out = outcome(arg);
                let expect = self.expect_answer(&id);
                let got = self.api.answer(&id, out.clone()).map_err(|r| r.status);
                assert_eq!(got, expect, "answer {id:?}; model {:?}", self.model);
                if got.is_ok() {
                    let (cur, _) = self.model.current.unwrap();
                    self.model.current = Some((cur, true));
                    assert!(self.model.answered.insert(cur), "{cur} answered twice");
                    if let Some(mut rx) = self.rxs.remove(&cur) {
                        assert_eq!(rx.try_recv().ok(), Some(out), "answer not delivered");
                    }
                }
            }
            // Runtime: answer with an id that was never dispatched.
            4 => {
                let id = format!("x{arg}");
                let got = self.api.answer(&id, outcome(arg)).map_err(|r| r.status);
                assert_eq!(got, Err(400), "answer with wrong id {id:?}");
            }
            // Runtime: the check made before reading a response body.
            5 => {
                let id = self.pick_id(arg);
                let expect = match self.model.current {
                    Some((cur, false)) if rid(cur) == id => Ok(()),
                    Some((cur, true)) if rid(cur) == id => Err(403),
                    _ if self.model.phase == Phase::InitError => Err(403),
                    _ => Err(400),
                };
                let got = self.api.check_request(&id).map_err(|r| r.status);
                assert_eq!(got, expect, "check_request {id:?}; model {:?}", self.model);
                let queued = self.model.queue.iter().any(|&q| rid(q) == id);
                assert_eq!(self.api.undelivered(&id), queued, "undelivered {id:?}; model {:?}", self.model);
            }
            // Runtime: init/error.
            6 => {
                let got =
                    self.api.init_error(Some("Runtime.Fuzz".into()), Bytes::from_static(b"{}")).map_err(|r| r.status);
                if self.model.phase == Phase::Init {
                    assert_eq!(got, Ok(()));
                    self.model.phase = Phase::InitError;
                    if self.model.init.is_none() {
                        self.model.init = Some(InitSeen::Error);
                    }
                } else {
                    assert_eq!(got, Err(403), "init/error in {:?}", self.model.phase);
                }
            }
            // Engine: close.
            7 => {
                self.api.close();
                assert!(self.api.is_closed());
                self.model.closed = true;
                let mut dropped: Vec<u32> = self.model.queue.drain(..).collect();
                if let Some((cur, false)) = self.model.current.take() {
                    dropped.push(cur);
                }
                self.model.current = None;
                for id in dropped {
                    if let Some(mut rx) = self.rxs.remove(&id) {
                        assert!(
                            matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
                            "close left {id} pending"
                        );
                    }
                }
                if self.model.init.is_none() {
                    self.model.init = Some(InitSeen::Closed);
                }
                // A waiting `next` ends with a refusal (checked by `settle`).
            }
            // Runtime: a `next` left running in the background.
            8 => {
                if self.bg.is_none() && arg & 1 == 0 {
                    let expect = self.model.next();
                    let api = self.api.clone();
                    let handle = tokio::spawn(async move { api.next().await });
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if expect == NextExpect::Wait {
                        assert!(!handle.is_finished(), "background next did not wait");
                        self.bg = Some(handle);
                        self.model.bg_waiting = !self.model.closed;
                    } else {
                        assert!(handle.is_finished(), "background next waited for {expect:?}");
                        let got = handle.await.expect("next panicked");
                        check_next("background next", &expect, Some(&got), &self.model);
                    }
                } else if arg & 2 == 0 {
                    // Engine: gives up on one reply (as on a timeout).
                    let id = u32::from(arg) % self.next_id.max(1);
                    self.rxs.remove(&id);
                }
            }
            // Engine: wait_init, given up on after a while.
            _ => {
                let got = tokio::time::timeout(Duration::from_millis(5), self.api.wait_init()).await;
                let got = match got {
                    Err(_) => None,
                    Ok(None) => Some(InitSeen::Closed),
                    Ok(Some(InitOutcome::Ready)) => Some(InitSeen::Ready),
                    Ok(Some(InitOutcome::Error { .. })) => Some(InitSeen::Error),
                };
                assert_eq!(got, self.model.init, "wait_init; model {:?}", self.model);
            }
        }
        self.settle().await;
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    rt.block_on(async {
        let counts = Arc::new(Counts::default());
        let mut h = Harness {
            api: RuntimeApi::new(Box::new(CountingFreezer(counts.clone())), true, std::time::Duration::ZERO),
            counts,
            model: Model {
                phase: Phase::Init,
                closed: false,
                queue: VecDeque::new(),
                current: None,
                answered: HashSet::new(),
                init: None,
                bg_waiting: false,
            },
            rxs: HashMap::new(),
            next_id: 0,
            bg: None,
        };
        let mut it = data.chunks(2);
        while let Some(chunk) = it.next() {
            let op = chunk[0];
            let arg = chunk.get(1).copied().unwrap_or(0);
            h.step(op, arg).await;
        }
        h.api.close();
    });
});
