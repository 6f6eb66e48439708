//! Polling a connection again at once when it wakes itself, instead of through the scheduler.
//!
//! hyper's HTTP/1 server reads a request's body into a channel that the service reads in the
//! same task, and taking the body out of that channel wakes the connection's side of it: the
//! connection task wakes itself once per request with a body (an Invoke, a runtime's `POST
//! response`). tokio's multi-threaded scheduler answers a task that woke itself while it ran by
//! putting it at the back of the queue and waking another worker thread to take it over, so each
//! such request cost a wake-up of an idle thread (a futex, on a VM an exit to the hypervisor)
//! that then found nothing to do. [`rewake`] gives the connection a waker of its own: a wake-up
//! that comes while the connection is being polled only makes this wrapper poll it once more,
//! right away, on the same thread; any other wake-up goes to the task as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// How many times in a row one poll may poll the connection again before it yields to the
/// scheduler like any task that woke itself (so that a connection that keeps waking itself
/// cannot hold the thread).
const MAX_REPOLLS: usize = 16;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN_WHILE_POLLING: u8 = 2;

/// Wraps `fut` so that wake-ups during its own poll poll it again at once (see the module docs).
pub fn rewake<F: Future>(fut: F) -> Rewake<F> {
    Rewake {
        fut: Box::pin(fut),
        shared: Arc::new(Shared { state: AtomicU8::new(IDLE), task: Mutex::new(None) }),
        waker: None,
    }
}

/// See [`rewake`].
pub struct Rewake<F> {
    /// Boxed once per connection, so that the wrapper is `Unpin` without unsafe code.
    fut: Pin<Box<F>>,
    shared: Arc<Shared>,
    /// The waker handed to `fut`, made once.
    waker: Option<Waker>,
}

struct Shared {
    state: AtomicU8,
    /// The task's own waker, for wake-ups from outside a poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                POLLING => {
                    match self.state.compare_exchange(POLLING, WOKEN_WHILE_POLLING, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => return,
                        Err(now) => state = now,
                    }
                }
                WOKEN_WHILE_POLLING => return,
                _ => {
                    let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(task) = task {
                        task.wake();
                    }
                    return;
                }
            }
        }
    }
}

impl<F: Future> Future for Rewake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            let mut task = this.shared.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let waker = this.waker.get_or_insert_with(|| Waker::from(this.shared.clone())).clone();
        let mut inner = Context::from_waker(&waker);
        for _ in 0..MAX_REPOLLS {
            this.shared.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.fut.as_mut().poll(&mut inner) {
                this.shared.state.store(IDLE, Ordering::Release);
                return Poll::Ready(out);
            }
            if this.shared.state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Poll::Pending;
            }
            // Woken while it ran: poll it again here.
        }
        this.shared.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Wakes itself during its first `n` polls, as hyper's connection does when its service reads
    /// the body; ready after that.
    struct SelfWaking {
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the wake-ups the task itself gets.
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_during_its_own_poll_polls_again_without_waking_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = rewake(SelfWaking { left: 3, polls: polls.clone() });
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 4);
        assert_eq!(task.0.load(Ordering::SeqCst), 0, "the task was never woken");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_to_the_scheduler() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = rewake(SelfWaking { left: usize::MAX, polls: polls.clone() });
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), MAX_REPOLLS);
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "woken once, to be polled later");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_from_outside_a_poll_reaches_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let waiter = tokio::spawn(rewake(rx));
        tokio::task::yield_now().await;
        tx.send(7).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await;
        assert!(matches!(got, Ok(Ok(Ok(7)))), "{got:?}");
    }
}
