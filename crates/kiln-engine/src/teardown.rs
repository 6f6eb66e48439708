//! The end of retired environments, off the async threads.
//!
//! Destroying a sandbox blocks: the Linux backend kills the environment, waits until its init
//! has been reaped (the kernel tears its namespaces and address spaces down meanwhile) and
//! removes its cgroups, which takes milliseconds. Environments are retired from async code —
//! the keep-alive sweep, a configuration update, the eviction of an idle one for the memory
//! budget, a provisioned surplus, a pool dropping a dead or outdated one — and with one tokio
//! worker per CPU, a worker stuck there delays every call and cold start queued behind it.
//!
//! So an engine hands what it retires to one thread of its own (`kiln-teardown`, started at the
//! first retirement): [`Teardown::retire`] queues the sandbox and returns at once; the thread
//! destroys the queued sandboxes in order, after sending all of those queued together their
//! SIGKILL first (`Sandbox::kill`), so that the kernel tears a batch down side by side instead
//! of one environment after the other. What the engine keeps about an environment (its place
//! in the pool, its log stream) is let go by the caller as before, at once: the environment is
//! gone for the engine when it is retired, and only the kernel's part of its end happens later.
//! Its share of the memory budget is the exception: it travels with the sandbox and is given
//! back once the sandbox is destroyed, since the memory is held until then. A claim that finds
//! the budget full waits for the queue ([`Teardown::flush`]) before it evicts anything.
//!
//! Where the end of an environment must be over before the caller goes on (a function deleted:
//! its environments are gone when DeleteFunction answers; an invocation that broke its
//! environment: all the function printed is in the pipe before its REPORT), the caller awaits
//! [`Teardown::destroy`], which the same thread serves without blocking the worker.
//! [`Teardown::flush`] waits, blocking, until everything queued is destroyed: shutdown calls it
//! before the backend's own shutdown, so that nothing retired is left behind.

use crate::memory::MemoryLease;
use kiln_sandbox::Sandbox;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// One sandbox to destroy, and whom to tell when it is.
struct Job {
    sandbox: Arc<dyn Sandbox>,
    /// The environment's share of the memory budget: given back once the sandbox is gone, so
    /// that the budget never counts a retired environment's memory as free while it is held.
    lease: Option<MemoryLease>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Where an engine's retired environments are destroyed. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Teardown {
    shared: Arc<Shared>,
}

struct Shared {
    /// Destroy on the calling thread instead (tests of bookkeeping that build environments by
    /// the hundred and look at nothing else).
    inline: bool,
    state: Mutex<State>,
    /// Signalled whenever `pending` falls to 0.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    /// The thread's queue; `None` until the first retirement starts it.
    queue: Option<mpsc::Sender<Job>>,
    /// Jobs queued and not finished yet.
    pending: usize,
}

impl Teardown {
    pub fn new() -> Self {
        Self::with(false)
    }

    /// Destroys on the calling thread: for tests that need no thread.
    #[cfg(test)]
    pub fn inline() -> Self {
        Self::with(true)
    }

    fn with(inline: bool) -> Self {
        Self { shared: Arc::new(Shared { inline, state: Mutex::default(), idle: Condvar::new() }) }
    }

    /// Destroys `sandbox` on the teardown thread, then gives `lease` back; returns at once.
    pub fn retire(&self, sandbox: Arc<dyn Sandbox>, lease: Option<MemoryLease>) {
        self.submit(Job { sandbox, lease, done: None });
    }

    /// Destroys `sandbox` on the teardown thread and resolves once it is destroyed.
    pub async fn destroy(&self, sandbox: Arc<dyn Sandbox>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Job { sandbox, lease: None, done: Some(tx) });
        // The sender is dropped only once the job ran (or ran inline).
        let _ = rx.await;
    }

    /// Destroys every sandbox of `sandboxes` on the teardown thread, queued together (so
    /// killed side by side), and resolves once all are destroyed.
    pub async fn destroy_all(&self, sandboxes: impl IntoIterator<Item = Arc<dyn Sandbox>>) {
        let waits: Vec<_> = sandboxes
            .into_iter()
            .map(|sandbox| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.submit(Job { sandbox, lease: None, done: Some(tx) });
                rx
            })
            .collect();
        for rx in waits {
            let _ = rx.await;
        }
    }

    /// Whether sandboxes are queued and not destroyed yet.
    pub fn busy(&self) -> bool {
        self.shared.lock().pending > 0
    }

    /// Blocks until every sandbox queued so far is destroyed.
    pub fn flush(&self) {
        let mut st = self.shared.lock();
        while st.pending > 0 {
            st = self.shared.idle.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Sandboxes queued and not destroyed yet.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.shared.lock().pending
    }

    fn submit(&self, job: Job) {
        if self.shared.inline {
            return run(job);
        }
        let mut st = self.shared.lock();
        if st.queue.is_none() {
            st.queue = self.start();
        }
        let job = match st.queue.as_ref() {
            Some(queue) => match queue.send(job) {
                Ok(()) => {
                    st.pending += 1;
                    return;
                }
                // The thread is gone (it cannot be, short of a panic in a backend's destroy).
                Err(mpsc::SendError(job)) => {
                    st.queue = None;
                    job
                }
            },
            None => job,
        };
        drop(st);
        // No thread: the caller does it, as before there was one.
        run(job);
    }

    /// Starts the thread; `None` if it cannot be started.
    fn start(&self) -> Option<mpsc::Sender<Job>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let shared = self.shared.clone();
        let started =
            std::thread::Builder::new().name("kiln-teardown".into()).stack_size(256 * 1024).spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    if batch.len() > 1 {
                        for job in &batch {
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.sandbox.kill())).is_err() {
                                tracing::error!("killing a retired sandbox panicked");
                            }
                        }
                    }
                    for job in batch {
                        // A backend's panic must not leave `pending` up for ever: `flush` would hang.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job))).is_err() {
                            tracing::error!("destroying a retired sandbox panicked");
                        }
                        let mut st = shared.lock();
                        st.pending -= 1;
                        if st.pending == 0 {
                            shared.idle.notify_all();
                        }
                    }
                }
            });
        match started {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the teardown thread; environments are destroyed where they are retired");
                None
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn run(job: Job) {
    let started = std::time::Instant::now();
    job.sandbox.destroy();
    drop(job.sandbox);
    drop(job.lease);
    // What a tokio worker would have waited for, had it destroyed the sandbox itself.
    tracing::debug!(destroy_us = started.elapsed().as_micros() as u64, "retired sandbox destroyed");
    if let Some(done) = job.done {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_sandbox::{ExitInfo, SandboxError};
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::watch;

    /// A sandbox whose `destroy` blocks until the test lets it go, or panics as a broken
    /// backend's might.
    struct Stuck {
        let_go: Arc<(Mutex<bool>, Condvar)>,
        destroyed: Arc<AtomicBool>,
        killed: Arc<AtomicBool>,
        /// Set when `destroy` begins.
        entered: Arc<AtomicBool>,
        exit: watch::Receiver<Option<ExitInfo>>,
        panics: bool,
    }

    impl Sandbox for Stuck {
        fn pid(&self) -> u32 {
            0
        }
        fn freeze(&self) -> Result<(), SandboxError> {
            Ok(())
        }
        fn thaw(&self) -> Result<(), SandboxError> {
            Ok(())
        }
        fn max_memory_bytes(&self) -> u64 {
            0
        }
        fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
            self.exit.clone()
        }
        fn destroy(&self) {
            self.entered.store(true, Ordering::SeqCst);
            if self.panics {
                panic!("a broken backend");
            }
            let (m, cv) = &*self.let_go;
            let mut go = m.lock().unwrap_or_else(PoisonError::into_inner);
            while !*go {
                go = cv.wait(go).unwrap_or_else(PoisonError::into_inner);
            }
            self.destroyed.store(true, Ordering::SeqCst);
        }
        fn kill(&self) {
            self.killed.store(true, Ordering::SeqCst);
        }
    }

    fn stuck() -> (Arc<dyn Sandbox>, Arc<AtomicBool>, impl Fn()) {
        sandbox(false)
    }

    fn sandbox(panics: bool) -> (Arc<dyn Sandbox>, Arc<AtomicBool>, impl Fn()) {
        let w = watched(panics);
        (w.sandbox, w.destroyed, w.release)
    }

    /// A test sandbox and what the test sees of it.
    struct Watched<F> {
        sandbox: Arc<dyn Sandbox>,
        destroyed: Arc<AtomicBool>,
        killed: Arc<AtomicBool>,
        entered: Arc<AtomicBool>,
        /// Lets its `destroy` go.
        release: F,
    }

    fn watched(panics: bool) -> Watched<impl Fn()> {
        let let_go = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = || Arc::new(AtomicBool::new(false));
        let (destroyed, killed, entered) = (flag(), flag(), flag());
        let (_tx, exit) = watch::channel(None);
        let sandbox: Arc<dyn Sandbox> = Arc::new(Stuck {
            let_go: let_go.clone(),
            destroyed: destroyed.clone(),
            killed: killed.clone(),
            entered: entered.clone(),
            exit,
            panics,
        });
        let release = move || {
            *let_go.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
            let_go.1.notify_all();
        };
        Watched { sandbox, destroyed, killed, entered, release }
    }

    fn wait_for(flag: &AtomicBool, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !flag.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::yield_now();
        }
    }

    /// Sandboxes queued together are all killed before the first of them is waited for.
    #[test]
    fn a_batch_is_killed_before_its_first_destroy_is_waited_for() {
        let teardown = Teardown::new();
        let (a, b, c) = (watched(false), watched(false), watched(false));
        // `a` holds the thread while `b` and `c` queue up behind it.
        teardown.retire(a.sandbox.clone(), None);
        wait_for(&a.entered, "the thread never took the first sandbox");
        teardown.retire(b.sandbox.clone(), None);
        teardown.retire(c.sandbox.clone(), None);
        assert!(!c.killed.load(Ordering::SeqCst), "killed before its turn");
        (a.release)();
        // `b`'s destroy is held now; `c` was killed before it began.
        wait_for(&b.entered, "the second sandbox's destroy never began");
        assert!(c.killed.load(Ordering::SeqCst), "the batch behind a destroy is not killed first");
        assert!(b.killed.load(Ordering::SeqCst) && !b.destroyed.load(Ordering::SeqCst));
        (b.release)();
        (c.release)();
        teardown.flush();
        assert!(b.destroyed.load(Ordering::SeqCst) && c.destroyed.load(Ordering::SeqCst));
    }

    // A runtime of one thread: a retire that blocked it would stop the task below for good.
    #[tokio::test(flavor = "current_thread")]
    async fn a_retire_returns_while_the_destroy_is_still_blocked() {
        let teardown = Teardown::new();
        let (a, a_destroyed, release_a) = stuck();
        let (b, b_destroyed, release_b) = stuck();
        teardown.retire(a, None);
        teardown.retire(b, None);
        // The runtime goes on: a task runs to its end while both destroys are held.
        let ticked = tokio::spawn(async { tokio::task::yield_now().await }).await;
        assert!(ticked.is_ok());
        assert_eq!(teardown.pending(), 2);
        assert!(!a_destroyed.load(Ordering::SeqCst) && !b_destroyed.load(Ordering::SeqCst));
        release_a();
        release_b();
        let flusher = teardown.clone();
        tokio::task::spawn_blocking(move || flusher.flush()).await.expect("flush");
        assert!(a_destroyed.load(Ordering::SeqCst) && b_destroyed.load(Ordering::SeqCst));
        assert_eq!(teardown.pending(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn destroy_resolves_once_the_sandbox_is_destroyed() {
        let teardown = Teardown::new();
        let (a, destroyed, release) = stuck();
        let waiter = {
            let teardown = teardown.clone();
            tokio::spawn(async move { teardown.destroy(a).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the destroy is held");
        release();
        waiter.await.expect("destroy");
        assert!(destroyed.load(Ordering::SeqCst));
    }

    #[test]
    fn a_panicking_destroy_neither_stops_the_thread_nor_hangs_flush() {
        let teardown = Teardown::new();
        let (broken, _, _) = sandbox(true);
        teardown.retire(broken, None);
        let (after, destroyed, release) = stuck();
        release();
        teardown.retire(after, None);
        let (done, flushed) = mpsc::channel();
        let flusher = teardown.clone();
        std::thread::spawn(move || {
            flusher.flush();
            let _ = done.send(());
        });
        assert!(flushed.recv_timeout(std::time::Duration::from_secs(60)).is_ok(), "flush hung");
        assert!(destroyed.load(Ordering::SeqCst), "the thread went on after the panic");
    }

    #[test]
    fn inline_destroys_on_the_calling_thread() {
        let teardown = Teardown::inline();
        let (a, destroyed, release) = stuck();
        release();
        teardown.retire(a, None);
        assert!(destroyed.load(Ordering::SeqCst));
        assert_eq!(teardown.pending(), 0);
    }
}
