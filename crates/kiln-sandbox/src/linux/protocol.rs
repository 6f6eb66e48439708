//! What kiln and an environment's init say to each other over their `SOCK_SEQPACKET` pair, in
//! one place for both ends.
//!
//! - init → kiln: fixed-size [`Msg`] records; [`Message`] is their typed form. The first is
//!   [`Message::Ready`] (the Runtime API listener travels with it, `SCM_RIGHTS`); after a claim
//!   comes [`Message::Started`], and at the end the bootstrap's fate. A failure at any step is
//!   [`Message::SetupFailed`] with the [`Step`] and its `errno`. The bootstrap's process reports
//!   to init in the same records over a `CLOEXEC` pipe.
//! - kiln → init: one claim ([`encode_claim`], read back by [`decode_claim`]): a
//!   [`ClaimHeader`] and its strings, with the code directory (and the layers directory) as
//!   detached mounts (`SCM_RIGHTS`).
//!
//! The decoding side of the claim runs in init, which may not allocate or panic: it works in
//! place on the buffer the parent allocated before the clone.

use libc::c_char;
use std::mem::{offset_of, size_of};
use std::ptr::null;

macro_rules! steps {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every step init and the bootstrap's process take; the number travels in a [`Msg`],
        /// the name ends up in [`crate::SandboxError::Step`].
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Step {
            $($(#[$doc])* $variant,)*
        }

        impl Step {
            /// Every step, in the order of their numbers.
            pub(crate) const ALL: &'static [Step] = &[$(Step::$variant,)*];

            /// What the step does, for error messages.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Step::$variant => $name,)*
                }
            }
        }
    };
}

steps! {
    Signals = "reset signals",
    CloseFds = "close inherited descriptors",
    DevNull = "open /dev/null",
    Cgroups = "join cgroups",
    CgroupNs = "unshare namespaces",
    Private = "make mounts private",
    RootTmpfs = "mount root tmpfs",
    EnterRoot = "enter new root",
    RootDirs = "create root directories",
    Bind = "bind host directory",
    Tmp = "mount /tmp",
    Proc = "mount /proc",
    Dev = "mount /dev",
    DevNodes = "create device nodes",
    Pivot = "pivot_root",
    Detach = "detach old root",
    RemountRo = "remount root read-only",
    Loopback = "bring loopback up",
    Listener = "bind runtime api listener",
    SendListener = "send runtime api listener",
    RecvClaim = "receive claim",
    CheckClaim = "check claim",
    AttachCode = "attach code at /var/task",
    ResizeTmp = "resize /tmp",
    Hostname = "set hostname",
    ReportPipe = "create exec report pipe",
    Fork = "fork bootstrap",
    SendStarted = "report bootstrap started",
    Setsid = "new session",
    Output = "redirect output",
    Chdir = "enter /var/task",
    Rlimit = "set rlimits",
    Capbset = "drop capability bounding set",
    Setgroups = "drop supplementary groups",
    Setgid = "set gid",
    Setuid = "set uid",
    Capset = "clear capabilities",
    NoNewPrivs = "set no_new_privs",
    Seccomp = "install seccomp filter",
    Exec = "exec bootstrap",
    Priority = "reset scheduling priority",
    EtcFiles = "private /etc/hosts, /etc/hostname and /etc/passwd",
    Watch = "watch kiln and the bootstrap",
    Userns = "enter user namespace",
    AttachOpt = "attach layers at /opt",
    Unpark = "start the parked bootstrap",
}

impl Step {
    /// The step a [`Msg`] names; `None` for a number no step has.
    pub(crate) fn from_wire(n: u32) -> Option<Step> {
        Step::ALL.get(n as usize).copied()
    }
}

/// A message of init (or of the bootstrap's process, to init) as it travels: plain integers.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Msg {
    pub kind: u32,
    pub step: u32,
    pub value: i32,
}

const KIND_READY: u32 = 1;
const KIND_SETUP_FAILED: u32 = 2;
const KIND_EXITED: u32 = 3;
const KIND_SIGNALED: u32 = 4;
const KIND_EXEC_FAILED: u32 = 5;
const KIND_STARTED: u32 = 6;

/// What init tells kiln.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// The blank environment is ready to be claimed; the Runtime API listener travels with it.
    Ready,
    /// Setting up failed at `step` with `errno`.
    SetupFailed { step: Step, errno: i32 },
    /// The bootstrap exited with this status.
    Exited(i32),
    /// The bootstrap was killed by this signal.
    Signaled(i32),
    /// The bootstrap could not be executed (this errno).
    ExecFailed(i32),
    /// After a claim: the code is attached and the bootstrap's process is being let go (its
    /// `execve` may not have happened yet; a failure comes later as [`Message::ExecFailed`]).
    Started,
}

impl Message {
    /// The wire form. No allocation: init sends these.
    pub(crate) fn to_wire(self) -> Msg {
        let (kind, step, value) = match self {
            Message::Ready => (KIND_READY, 0, 0),
            Message::SetupFailed { step, errno } => (KIND_SETUP_FAILED, step as u32, errno),
            Message::Exited(code) => (KIND_EXITED, 0, code),
            Message::Signaled(sig) => (KIND_SIGNALED, 0, sig),
            Message::ExecFailed(errno) => (KIND_EXEC_FAILED, Step::Exec as u32, errno),
            Message::Started => (KIND_STARTED, 0, 0),
        };
        Msg { kind, step, value }
    }

    /// The typed form of a record; `None` for one no sender writes.
    pub(crate) fn from_wire(m: Msg) -> Option<Message> {
        Some(match m.kind {
            KIND_READY => Message::Ready,
            KIND_SETUP_FAILED => Message::SetupFailed { step: Step::from_wire(m.step)?, errno: m.value },
            KIND_EXITED => Message::Exited(m.value),
            KIND_SIGNALED => Message::Signaled(m.value),
            KIND_EXEC_FAILED => Message::ExecFailed(m.value),
            KIND_STARTED => Message::Started,
            _ => return None,
        })
    }

    /// Whether this tells how the bootstrap ended.
    pub(crate) fn is_exit(self) -> bool {
        matches!(self, Message::Exited(_) | Message::Signaled(_) | Message::ExecFailed(_))
    }
}

impl Msg {
    /// The record's bytes, as written to a socket or pipe.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        // SAFETY: a Msg is three plain integers (repr(C), no padding), so all its
        // size_of::<Msg>() bytes are initialised; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts((self as *const Msg).cast::<u8>(), size_of::<Msg>()) }
    }

    /// The record in `bytes`, if it is exactly one.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Msg> {
        if bytes.len() != size_of::<Msg>() {
            return None;
        }
        // SAFETY: `bytes` holds size_of::<Msg>() readable bytes; a Msg is plain integers,
        // valid for any bit pattern; read_unaligned tolerates any alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Msg>()) })
    }
}

/// The header of the one message kiln sends init: which code to attach and what to run. The
/// strings follow it in this order: hostname (`hostname_len` bytes, no NUL), the bootstrap's
/// absolute path inside the environment (`exe_len` bytes including its NUL), then `env_count`
/// `NAME=value` strings, each NUL-terminated (`env_len` bytes in all). The code directory
/// travels as a detached mount (`SCM_RIGHTS`), followed by the layers directory (attached at
/// `/opt`) when the function has layers.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClaimHeader {
    /// [`CLAIM_KIND`].
    pub kind: u32,
    /// New size of `/tmp` in MiB; 0 keeps the blank's.
    pub tmp_mb: u32,
    pub hostname_len: u32,
    pub exe_len: u32,
    pub env_count: u32,
    pub env_len: u32,
}

pub(crate) const CLAIM_KIND: u32 = 0x6b69_6c6e;
/// Descriptors a claim carries: the code tree, then optionally the layers tree.
pub(crate) const MAX_FDS: usize = 2;
/// Largest claim message (header included): Lambda allows 4 KB of variables plus kiln's own,
/// so this is generous; a bigger environment is refused before any blank is touched.
pub(crate) const CLAIM_MAX: usize = 64 * 1024;
/// Most variables a claim may carry (the `envp` array init fills has one more slot, for NULL).
pub(crate) const MAX_ENV_VARS: usize = 4096;
/// Longest hostname (`HOST_NAME_MAX`).
pub(crate) const HOSTNAME_MAX: usize = 64;
/// The port of the Runtime API inside every environment.
pub(crate) const RUNTIME_API_PORT: u16 = 9001;

/// Why a claim could not be encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error(
        "environment too large: {bytes} bytes in {count} variables (at most {CLAIM_MAX} bytes, {MAX_ENV_VARS} variables)"
    )]
    TooLarge { bytes: usize, count: usize },
    #[error("a claim's strings may not contain NUL bytes")]
    Nul,
}

/// Encodes a claim: the hostname (cut to [`HOSTNAME_MAX`]), the bootstrap's absolute path and
/// the `NAME=value` variables. Its `/tmp` size is 0 until [`set_claim_tmp_mb`].
pub(crate) fn encode_claim<'a>(
    hostname: &[u8],
    exe: &[u8],
    vars: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<u8>, ClaimError> {
    let hostname = hostname.get(..HOSTNAME_MAX).unwrap_or(hostname);
    if exe.contains(&0) || hostname.contains(&0) {
        return Err(ClaimError::Nul);
    }
    let mut env = Vec::new();
    let mut count = 0usize;
    for (k, v) in vars {
        if k.contains('\0') || v.contains('\0') {
            return Err(ClaimError::Nul);
        }
        env.extend_from_slice(k.as_bytes());
        env.push(b'=');
        env.extend_from_slice(v.as_bytes());
        env.push(0);
        count += 1;
    }
    let total = size_of::<ClaimHeader>() + hostname.len() + exe.len() + 1 + env.len();
    if total > CLAIM_MAX || count > MAX_ENV_VARS {
        return Err(ClaimError::TooLarge { bytes: total, count });
    }
    // Every length is below CLAIM_MAX, so the casts are exact.
    let header = ClaimHeader {
        kind: CLAIM_KIND,
        tmp_mb: 0,
        hostname_len: hostname.len() as u32,
        exe_len: exe.len() as u32 + 1,
        env_count: count as u32,
        env_len: env.len() as u32,
    };
    let mut msg = Vec::with_capacity(total);
    for field in [header.kind, header.tmp_mb, header.hostname_len, header.exe_len, header.env_count, header.env_len] {
        msg.extend_from_slice(&field.to_ne_bytes());
    }
    msg.extend_from_slice(hostname);
    msg.extend_from_slice(exe);
    msg.push(0);
    msg.extend_from_slice(&env);
    Ok(msg)
}

/// Sets the `/tmp` size (MiB, 0: keep the blank's) of an encoded claim.
pub(crate) fn set_claim_tmp_mb(msg: &mut [u8], tmp_mb: u32) {
    let at = offset_of!(ClaimHeader, tmp_mb);
    if let Some(field) = msg.get_mut(at..at + size_of::<u32>()) {
        field.copy_from_slice(&tmp_mb.to_ne_bytes());
    }
}

/// A claim decoded in place: slices of the receive buffer plus the filled `envp` array.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    pub tmp_mb: u32,
    pub hostname: &'a [u8],
    /// NUL-terminated.
    pub exe: &'a [u8],
}

/// Checks a claim message and points `envp` at its variables (NULL-terminated). No allocation,
/// no panics: it runs in init. Returns `EINVAL` for a malformed message, `E2BIG` for too many
/// variables.
pub(crate) fn decode_claim<'a>(msg: &'a [u8], envp: &mut [*const c_char]) -> Result<Claim<'a>, i32> {
    let h = size_of::<ClaimHeader>();
    let Some(head) = msg.get(..h) else { return Err(libc::EINVAL) };
    // SAFETY: `head` is exactly size_of::<ClaimHeader>() readable bytes; the header is plain
    // integers, valid for any bit pattern; read_unaligned tolerates any alignment.
    let hdr: ClaimHeader = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
    if hdr.kind != CLAIM_KIND || hdr.hostname_len as usize > HOSTNAME_MAX {
        return Err(libc::EINVAL);
    }
    let (hl, el, vl) = (hdr.hostname_len as usize, hdr.exe_len as usize, hdr.env_len as usize);
    if h.checked_add(hl).and_then(|x| x.checked_add(el)).and_then(|x| x.checked_add(vl)) != Some(msg.len()) {
        return Err(libc::EINVAL);
    }
    let rest = msg.get(h..).unwrap_or_default();
    let (hostname, rest) = rest.split_at_checked(hl).ok_or(libc::EINVAL)?;
    let (exe, vars) = rest.split_at_checked(el).ok_or(libc::EINVAL)?;
    // An absolute path with exactly one NUL, at its end.
    if exe.first() != Some(&b'/') || exe.iter().position(|&b| b == 0) != Some(el.wrapping_sub(1)) {
        return Err(libc::EINVAL);
    }
    if vars.last().is_some_and(|&b| b != 0) {
        return Err(libc::EINVAL);
    }
    let mut count = 0usize;
    let mut start = 0usize;
    for (i, &b) in vars.iter().enumerate() {
        if b != 0 {
            continue;
        }
        let slot = envp.get_mut(count).ok_or(libc::E2BIG)?;
        *slot = vars.get(start..).map_or(null(), |v| v.as_ptr().cast());
        count += 1;
        start = i + 1;
    }
    *envp.get_mut(count).ok_or(libc::E2BIG)? = null();
    if count != hdr.env_count as usize || count > MAX_ENV_VARS {
        return Err(libc::EINVAL);
    }
    Ok(Claim { tmp_mb: hdr.tmp_mb, hostname, exe })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn steps_have_their_numbers_and_names() {
        for (n, step) in Step::ALL.iter().enumerate() {
            assert_eq!(*step as usize, n);
            assert_eq!(Step::from_wire(n as u32), Some(*step));
        }
        assert_eq!(Step::from_wire(Step::ALL.len() as u32), None);
        assert_eq!(Step::Pivot.name(), "pivot_root");
        assert_eq!(Step::AttachOpt.name(), "attach layers at /opt");
        assert_eq!(Step::Exec.name(), "exec bootstrap");
    }

    #[test]
    fn messages_round_trip_through_their_wire_form() {
        let all = [
            Message::Ready,
            Message::SetupFailed { step: Step::Pivot, errno: libc::EPERM },
            Message::SetupFailed { step: Step::AttachOpt, errno: libc::ENOENT },
            Message::Exited(3),
            Message::Signaled(libc::SIGKILL),
            Message::ExecFailed(libc::ENOEXEC),
            Message::Started,
        ];
        for m in all {
            let wire = m.to_wire();
            assert_eq!(Msg::from_bytes(wire.as_bytes()), Some(wire));
            assert_eq!(Message::from_wire(wire), Some(m));
        }
        assert_eq!(Message::from_wire(Msg { kind: 99, step: 0, value: 0 }), None);
        assert_eq!(Message::from_wire(Msg { kind: KIND_SETUP_FAILED, step: 1000, value: 1 }), None);
        assert_eq!(Msg::from_bytes(&[0u8; 11]), None);
    }

    fn vars_of(envp: &[*const c_char]) -> Vec<String> {
        envp.iter()
            .take_while(|p| !p.is_null())
            // SAFETY: decode_claim points every slot at a NUL-terminated string of the message.
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn claims_round_trip() {
        let vars = [("A", "b"), ("EMPTY", ""), ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")];
        let mut msg = encode_claim(b"kiln-env-1", b"/var/task/bootstrap", vars.iter().copied()).unwrap();
        set_claim_tmp_mb(&mut msg, 512);
        let mut envp = vec![null(); MAX_ENV_VARS + 1];
        let claim = decode_claim(&msg, &mut envp).unwrap();
        assert_eq!(claim.tmp_mb, 512);
        assert_eq!(claim.hostname, b"kiln-env-1");
        assert_eq!(claim.exe, b"/var/task/bootstrap\0");
        assert_eq!(vars_of(&envp), ["A=b", "EMPTY=", "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001"]);
        // A long hostname is cut to HOST_NAME_MAX; no variables at all is fine.
        let long = [b'h'; 100];
        let msg = encode_claim(&long, b"/opt/bootstrap", std::iter::empty()).unwrap();
        let claim = decode_claim(&msg, &mut envp).unwrap();
        assert_eq!(claim.hostname.len(), HOSTNAME_MAX);
        assert_eq!(claim.tmp_mb, 0);
        assert!(envp[0].is_null());
    }

    #[test]
    fn claims_too_large_or_with_nul_bytes_are_refused() {
        let big = "x".repeat(CLAIM_MAX);
        let e = encode_claim(b"h", b"/x", [("BIG", big.as_str())].into_iter()).unwrap_err();
        assert!(e.to_string().contains("environment too large"), "{e}");
        assert!(matches!(encode_claim(b"h", b"/x\0y", std::iter::empty()), Err(ClaimError::Nul)));
        assert!(matches!(encode_claim(b"h", b"/x", [("A", "b\0")].into_iter()), Err(ClaimError::Nul)));
    }
}
