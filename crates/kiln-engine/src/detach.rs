//! Running an invocation in its caller's task, finished in a task of its own if the caller goes.
//!
//! An invocation must run to its end even when its caller hangs up: the environment finishes its
//! event and goes back to the pool (or is destroyed), and REPORT is written. Running every
//! invocation in a task of its own does that, but costs a task hop per call: the job's task and
//! the caller's wake each other, and on a multi-threaded runtime one of them often lands on
//! another worker, whose wake-up (a futex, an inter-processor interrupt, on a VM an exit to the
//! hypervisor) costs more than kiln's own work for the call. [`finish_on_drop`] polls the job
//! inside the caller's task instead; if that task drops it before it is done (the caller hung
//! up, hyper dropped the request's future), the job moves into a task of its own there and then,
//! and finishes as it would have. A panic inside the job becomes an error, as a task's would.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The job panicked (kiln's bug); the caller gets an internal error, as from a failed task.
#[derive(Debug, thiserror::Error)]
#[error("the invocation panicked")]
pub(crate) struct Panicked;

/// Polls `job` in the current task; if dropped before `job` is done, spawns the rest of it.
pub(crate) fn finish_on_drop<F>(job: F) -> FinishOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    FinishOnDrop { job: Some(Box::pin(job)) }
}

/// See [`finish_on_drop`].
pub(crate) struct FinishOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// `None` once the job is done (or panicked).
    job: Option<Pin<Box<F>>>,
}

impl<F> Future for FinishOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(job) = self.job.as_mut() else {
            return Poll::Ready(Err(Panicked));
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| job.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                self.job = None;
                Poll::Ready(Ok(out))
            }
            Err(_) => {
                self.job = None;
                tracing::error!("an invocation panicked");
                Poll::Ready(Err(Panicked))
            }
        }
    }
}

impl<F> Drop for FinishOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let Some(job) = self.job.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = job.await;
                });
            }
            // No runtime (it is shutting down): nothing can run the rest; the job's own drops
            // release what it held.
            Err(_) => drop(job),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_job_runs_in_the_callers_task_and_returns_its_output() {
        let caller = tokio::task::try_id();
        let out = finish_on_drop(async move { (tokio::task::try_id() == caller, 7) }).await.unwrap();
        assert_eq!(out, (true, 7), "the job ran in its caller's task");
    }

    #[tokio::test]
    async fn a_job_dropped_midway_finishes_in_a_task_of_its_own() {
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<bool>();
        let started = Arc::new(tokio::sync::Notify::new());
        let started2 = started.clone();
        let caller = tokio::spawn(finish_on_drop(async move {
            started2.notify_one();
            let _ = wait.await;
            let _ = done_tx.send(true);
        }));
        started.notified().await;
        // The caller goes away while the job waits.
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(10), done).await;
        assert!(matches!(finished, Ok(Ok(true))), "the job finished after its caller left");
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_nothing_is_left_behind() {
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped.clone());
        let r = finish_on_drop(async move {
            let _flag = flag;
            if dropped_never() {
                return;
            }
            panic!("a bug");
        })
        .await;
        assert!(r.is_err());
        assert!(dropped.load(Ordering::SeqCst), "the job's state was released");
    }

    fn dropped_never() -> bool {
        std::hint::black_box(false)
    }
}
