//! The end of environments: one thread waits on every init's pidfd (`epoll`), reaps it, reads
//! how the bootstrap ended and removes the cgroups; `destroy` kills and waits for it.

use super::backend::{Env, Inner};
use super::cgroups;
use super::protocol::Message;
use super::sys::host::{self, epoll_del, pidfd_kill, waitid_pidfd};
use super::*;
use crate::ExitInfo;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::sync::{Arc, PoisonError};

/// Waits for environments' inits to exit and handles their end.
pub(super) fn reaper_loop(inner: &Arc<Inner>) {
    let mut events = [host::empty_event(); 32];
    loop {
        let n = match host::epoll_wait(&inner.epoll, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "reaper epoll_wait failed");
                return;
            }
        };
        for ev in events.iter().take(n) {
            let key = ev.u64;
            if key == STOP_KEY {
                return;
            }
            let env = lock(&inner.envs).get(&key).cloned();
            if let Some(env) = env {
                if !env.reap(false) {
                    // Spurious wake-up: re-arm the one-shot registration.
                    host::epoll_rearm(&inner.epoll, &env.pidfd, key);
                }
            }
        }
    }
}

/// Reads the last exit record init left in the socket.
pub(super) fn read_exit_record(sock: &OwnedFd) -> Option<Message> {
    let mut last = None;
    loop {
        let Some(msg) = host::recv_record_nowait(sock) else { return last };
        if let Some(m) = Message::from_wire(msg).filter(|m| m.is_exit()) {
            last = Some(m);
        }
    }
}

/// The bootstrap's end as the engine sees it.
pub(super) fn exit_info(record: Option<Message>, init: (i32, i32), oom: bool) -> ExitInfo {
    match record {
        Some(Message::Exited(code)) => ExitInfo::Code(code),
        Some(Message::Signaled(signal)) => ExitInfo::Signal { signal, oom: oom && signal == libc::SIGKILL },
        Some(_) => ExitInfo::ExecFailed,
        // Init itself died (killed by kiln or by the OOM killer) before it could report.
        None => match init {
            (libc::CLD_EXITED, code) => ExitInfo::Code(code),
            (_, signal) => ExitInfo::Signal { signal, oom: oom && signal == libc::SIGKILL },
        },
    }
}

impl Env {
    /// Handles init's exit; returns false if it has not exited (only when `block` is false).
    pub(super) fn reap(&self, block: bool) -> bool {
        let _serial = lock(&self.reap_lock);
        if lock(&self.state).reaped {
            return true;
        }
        let Some(init) = waitid_pidfd(&self.pidfd, block) else {
            return false;
        };
        epoll_del(&self.inner.epoll, &self.pidfd);
        let record = read_exit_record(&self.sock);
        let cg = self.inner.cgroups.as_ref();
        let oom = cg.oom_killed(&self.cgroup);
        let peak = cg.peak_memory_bytes(&self.cgroup).unwrap_or(0);
        let info = exit_info(record, init, oom);
        {
            let mut st = lock(&self.state);
            st.reaped = true;
            st.peak_bytes = peak;
        }
        self.reaped_cv.notify_all();
        tracing::debug!(env = %self.id, ?info, "environment ended");
        self.exit_tx.send_replace(Some(info));
        // The pid namespace is gone with its init; release the cgroups now rather than when
        // the engine gets round to destroying the environment.
        if let Err(e) = cgroups::kill_and_remove(cg, &self.cgroup) {
            tracing::warn!(env = %self.id, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
        }
        lock(&self.inner.envs).remove(&self.key);
        true
    }

    pub(super) fn kill(&self) {
        let mut st = lock(&self.state);
        if st.reaped {
            return;
        }
        st.killed = true;
        drop(st);
        if let Err(e) = self.inner.cgroups.kill_all(&self.cgroup) {
            tracing::warn!(env = %self.id, error = %e, "cgroup kill failed");
        }
        pidfd_kill(&self.pidfd);
    }

    pub(super) fn destroy(&self) {
        {
            let mut st = lock(&self.state);
            if st.destroyed {
                return;
            }
            st.destroyed = true;
        }
        self.release_refill();
        self.kill();
        let st = lock(&self.state);
        let (st, _) =
            self.reaped_cv.wait_timeout_while(st, REAP_TIMEOUT, |s| !s.reaped).unwrap_or_else(PoisonError::into_inner);
        let reaped = st.reaped;
        drop(st);
        if !reaped {
            // The reaper is gone or stuck: init was SIGKILLed, so this returns soon.
            self.reap(true);
        }
        if let Err(e) = cgroups::kill_and_remove(self.inner.cgroups.as_ref(), &self.cgroup) {
            tracing::warn!(env = %self.id, error = %e, cause = ?std::error::Error::source(&e), "cannot remove cgroups");
        }
        lock(&self.inner.envs).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_info_prefers_the_bootstraps_own_status() {
        let killed = (libc::CLD_KILLED, libc::SIGKILL);
        assert_eq!(exit_info(Some(Message::Exited(3)), (1, 0), false), ExitInfo::Code(3));
        assert_eq!(exit_info(Some(Message::Signaled(9)), (1, 0), true), ExitInfo::Signal { signal: 9, oom: true });
        assert_eq!(exit_info(Some(Message::Signaled(15)), (1, 0), true), ExitInfo::Signal { signal: 15, oom: false });
        assert_eq!(exit_info(Some(Message::ExecFailed(2)), (1, 0), false), ExitInfo::ExecFailed);
        assert_eq!(exit_info(None, killed, false), ExitInfo::Signal { signal: 9, oom: false });
        assert_eq!(exit_info(None, killed, true), ExitInfo::Signal { signal: 9, oom: true });
    }
}
