//! Managed runtimes: which host interpreter runs a `python3.X` or `nodejsN.x` function, and
//! kiln's own runtime clients that load the handler and speak the Runtime API.
//!
//! At start-up [`Runtimes::discover`] looks for interpreters (exact `python3.X` binaries on
//! `PATH`, in `/usr/bin`, `/usr/local/bin` and pyenv's versions; `node` binaries on `PATH` and
//! in the usual places), takes `--runtime NAME=PATH` overrides, and writes one *launcher* per
//! interpreter into `~/.cache/kiln/runtime/<digest>/` (shared by every server of the user: the
//! Python client is compiled to bytecode once per machine): a file behind a `#!` line naming the
//! interpreter, so the kernel starts the interpreter directly (no shell in between, cold start
//! bounded by the interpreter's own start-up). Node.js launchers hold the client's source;
//! Python launchers import the client module beside them, compiled to bytecode by each Python
//! interpreter when the directory is written. The directory's name is a digest of
//! its content, it is written once and made read-only, and the Linux backend shows it at
//! `/var/runtime`; interpreters installed outside `/usr` are bound read-only at their host path
//! (pyenv's builds link `libpython` by absolute path, so they cannot move).
//!
//! A runtime whose exact version is missing runs on the nearest installed version of the same
//! language, and the environment's log says so once. Languages kiln has no client for (Java,
//! .NET, Ruby, Go) resolve to [`Launch::Unavailable`]: the function exists, and its invocations
//! answer a function error of type `Runtime.Unavailable`
//! ([`kiln_model::ErrorType::RuntimeUnavailable`]) that names what is missing.

use kiln_model::{Language, Runtime};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Python runtime client (its `#!` line is prepended when the launcher is written).
const PYTHON_CLIENT: &str = include_str!("../runtimes/python/bootstrap.py");
/// Node.js runtime client.
const NODE_CLIENT: &str = include_str!("../runtimes/nodejs/bootstrap.js");
/// The Python client's module, beside the launchers; each Python launcher only imports it, so
/// that every interpreter loads it as bytecode compiled once at install (a `#!` script itself
/// is compiled again at every start: 5–10 ms of each cold start).
const PYTHON_MODULE: &str = "kiln_runtime_client";

/// Where the runtime clients show inside an environment.
pub const RUNTIME_DIR: &str = "/var/runtime";
/// Oldest interpreters kiln's clients support.
const PYTHON_MIN_MINOR: u32 = 8;
const NODE_MIN_MAJOR: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum RuntimesError {
    #[error("--runtime {0}: expected NAME=PATH, e.g. python3.12=/usr/bin/python3.12")]
    OverrideSyntax(String),
    #[error("--runtime {name}: {reason}")]
    Override { name: String, reason: String },
    #[error("cannot write the runtime clients to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The two languages kiln has clients for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Python,
    Node,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Python => "Python",
            Kind::Node => "Node.js",
        }
    }
}

/// One interpreter kiln found or was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub kind: Kind,
    /// Canonical host path of the binary.
    pub path: PathBuf,
    /// `(major, minor, patch)` as the binary reports it.
    pub version: (u32, u32, u32),
    /// The directory bound into environments when the binary lives outside `/usr`.
    pub install_root: Option<PathBuf>,
    /// The runtime an override named, if it came from `--runtime`.
    pub pinned_for: Option<String>,
    /// Launcher file name in the runtime directory.
    pub launcher: String,
}

impl Interpreter {
    /// `Python 3.11.2`, `Node.js 20.20.2`.
    pub fn describe(&self) -> String {
        let (a, b, c) = self.version;
        format!("{} {a}.{b}.{c}", self.kind.name())
    }
}

/// How a function's runtime starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// `provided*`: the function's own `bootstrap`.
    Custom,
    /// A kiln runtime client: the launcher's host path, and the line the environment's log
    /// gets when the version differs from the one asked for.
    Client { launcher: PathBuf, notice: Option<String> },
    /// Nothing on this host runs it: the error message for its invocations.
    Unavailable { message: String },
}

/// The server-wide set of managed runtimes.
#[derive(Debug, Default)]
pub struct Runtimes {
    interpreters: Vec<Interpreter>,
    /// Host directory of the launchers (shown at `/var/runtime`); `None` before `install`.
    dir: Option<PathBuf>,
}

impl Runtimes {
    /// Finds interpreters on this host and applies `overrides` (`NAME=PATH`, `NAME` a runtime
    /// such as `python3.12` or `nodejs20.x`).
    pub fn discover(overrides: &[String]) -> Result<Runtimes, RuntimesError> {
        let mut found: Vec<Interpreter> = Vec::new();
        for o in overrides {
            let (name, path) = o.split_once('=').ok_or_else(|| RuntimesError::OverrideSyntax(o.clone()))?;
            let bad = |reason: String| RuntimesError::Override { name: name.to_string(), reason };
            let rt = Runtime::parse(name).map_err(|_| bad("not a Lambda runtime name".into()))?;
            let kind = match rt.language() {
                Language::Python { .. } => Kind::Python,
                Language::Node { .. } => Kind::Node,
                _ => return Err(bad("kiln runs only Python and Node.js runtimes".into())),
            };
            let mut i = probe(kind, Path::new(path))
                .ok_or_else(|| bad(format!("{path} is not a working {} interpreter kiln supports", kind.name())))?;
            i.pinned_for = Some(name.to_string());
            i.launcher = format!("{}-{name}", i.launcher);
            found.push(i);
        }
        let mut candidates: Vec<(Kind, PathBuf)> = Vec::new();
        for dir in search_dirs() {
            let names = (PYTHON_MIN_MINOR..=20).map(|m| (Kind::Python, format!("python3.{m}")));
            for (kind, name) in names.chain([(Kind::Node, "node".to_string())]) {
                let Ok(real) = dir.join(name).canonicalize() else { continue };
                if !candidates.iter().any(|(_, p)| *p == real) {
                    candidates.push((kind, real));
                }
            }
        }
        // All `--version`s at once: a dozen interpreter starts one after another took seconds
        // on a busy machine, at every server start.
        for i in probe_all(&candidates).into_iter().flatten() {
            consider(&mut found, i);
        }
        Ok(Runtimes { interpreters: found, dir: None })
    }

    /// Writes the launchers under `<base>/<digest>/` (once per content) and remembers where;
    /// `<base>` is the user's cache (`$XDG_CACHE_HOME/kiln/runtime`, `~/.cache/kiln/runtime`),
    /// shared by every server of that user so that the Python client is compiled once per
    /// machine, not at each start; `<data_dir>/runtime` without a usable home.
    pub fn install(&mut self, data_dir: &Path) -> Result<(), RuntimesError> {
        use sha2::Digest;
        let mut files: Vec<(String, String)> =
            self.interpreters.iter().map(|i| (i.launcher.clone(), launcher(i))).collect();
        files.push((format!("{PYTHON_MODULE}.py"), PYTHON_CLIENT.to_string()));
        let mut h = sha2::Sha256::new();
        for (name, text) in &files {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        let digest: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        let base = install_base(data_dir);
        let dir = base.join(&digest);
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimesError::Write { path, source }
        };
        if !dir.is_dir() {
            let tmp = base.join(format!(".tmp-{digest}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(err(&tmp))?;
            for (name, text) in &files {
                let p = tmp.join(name);
                std::fs::write(&p, text).map_err(err(&p))?;
                set_mode(&p, 0o555).map_err(err(&p))?;
            }
            self.compile_python_client(&tmp);
            set_mode(&tmp, 0o555).map_err(err(&tmp))?;
            if let Err(e) = std::fs::rename(&tmp, &dir) {
                // Another server starting at the same moment installed the same content first.
                let _ = set_mode(&tmp, 0o755);
                let _ = std::fs::remove_dir_all(&tmp);
                if !dir.is_dir() {
                    return Err(err(&dir)(e));
                }
            }
        }
        self.dir = Some(dir);
        Ok(())
    }

    /// Compiles the Python client to bytecode (`__pycache__/<module>.cpython-3X.pyc`) with each
    /// Python interpreter, unchecked against the source (the directory never changes). Best
    /// effort: without the cache the interpreter compiles the source at each start, as before.
    fn compile_python_client(&self, dir: &Path) {
        let source = dir.join(format!("{PYTHON_MODULE}.py"));
        // All at once: each is an interpreter start (~20 ms) and a compile.
        let running: Vec<_> = self
            .interpreters
            .iter()
            .filter(|i| i.kind == Kind::Python)
            .map(|i| {
                let child = Command::new(&i.path)
                    .args(["-I", "-c", PY_COMPILE])
                    .arg(&source)
                    .env_clear()
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                (i, child)
            })
            .collect();
        for (i, child) in running {
            let ok = child.and_then(|mut c| c.wait()).is_ok_and(|s| s.success());
            if !ok {
                tracing::warn!(interpreter = %i.path.display(), "cannot compile the Python runtime client to bytecode");
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("__pycache__")) {
            for e in entries.flatten() {
                let _ = set_mode(&e.path(), 0o444);
            }
            let _ = set_mode(&dir.join("__pycache__"), 0o555);
        }
    }

    /// The read-only binds environments need: the launchers at `/var/runtime`, interpreters
    /// outside `/usr` at their host path.
    pub fn read_only_binds(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
        if let Some(d) = &self.dir {
            out.push((d.clone(), PathBuf::from(RUNTIME_DIR)));
        }
        for i in &self.interpreters {
            if let Some(root) = &i.install_root {
                // One bind per install; nested or repeated roots would stack.
                if !out.iter().any(|(s, _)| root.starts_with(s) || s.starts_with(root)) {
                    out.push((root.clone(), root.clone()));
                }
            }
        }
        out
    }

    /// The interpreters, overrides first, then in discovery order.
    pub fn interpreters(&self) -> &[Interpreter] {
        &self.interpreters
    }

    /// Which interpreter a runtime runs on: an override for it, else the exact version, else
    /// the nearest of the same language (the newer one on a tie).
    pub fn interpreter_for(&self, rt: Runtime) -> Option<&Interpreter> {
        if let Some(i) = self.interpreters.iter().find(|i| i.pinned_for.as_deref() == Some(rt.as_str())) {
            return Some(i);
        }
        let (kind, want) = match rt.language() {
            Language::Python { major, minor } => (Kind::Python, (major, minor)),
            Language::Node { major } => (Kind::Node, (major, 0)),
            _ => return None,
        };
        let distance = |i: &Interpreter| -> (u64, i64) {
            let have = match kind {
                Kind::Python => (i.version.0, i.version.1),
                Kind::Node => (i.version.0, 0),
            };
            let a = i64::from(have.0) * 1000 + i64::from(have.1);
            let b = i64::from(want.0) * 1000 + i64::from(want.1);
            (a.abs_diff(b), -a)
        };
        // Another major version is another language (Python 2 code does not run on Python 3).
        let same_major = |i: &&Interpreter| kind == Kind::Node || i.version.0 == want.0;
        self.interpreters
            .iter()
            .filter(|i| i.kind == kind && i.pinned_for.is_none())
            .filter(same_major)
            .min_by_key(|i| distance(i))
    }

    /// How a function of runtime `rt` starts on this host.
    pub fn launch(&self, rt: Runtime) -> Launch {
        let (kind, exact) = match rt.language() {
            Language::Provided => return Launch::Custom,
            Language::Python { major, minor } => (Kind::Python, (major, minor)),
            Language::Node { major } => (Kind::Node, (major, u32::MAX)),
            Language::Other(lang) => {
                return Launch::Unavailable {
                    message: format!(
                        "kiln cannot run the {rt} runtime: it has no {lang} runtime client. kiln runs python3.x and \
                         nodejsN.x functions on the host's interpreters; to run {lang}, deploy the function as \
                         provided.al2023 with a bootstrap that starts your {lang} runtime",
                        rt = rt.as_str()
                    ),
                }
            }
        };
        let (Some(i), Some(dir)) = (self.interpreter_for(rt), &self.dir) else {
            let example = match kind {
                Kind::Python => "python3.12=/usr/bin/python3.12",
                Kind::Node => "nodejs20.x=/usr/bin/node",
            };
            return Launch::Unavailable {
                message: format!(
                    "kiln cannot run the {rt} runtime: no {lang} interpreter was found on this host. Install {lang} \
                     (e.g. apt-get install {pkg}) and restart kiln serve, or point kiln at one with kiln serve \
                     --runtime {example}",
                    rt = rt.as_str(),
                    lang = kind.name(),
                    pkg = if kind == Kind::Python { "python3" } else { "nodejs" },
                ),
            };
        };
        let same = match kind {
            Kind::Python => (i.version.0, i.version.1) == exact,
            Kind::Node => i.version.0 == exact.0,
        };
        let notice = (!same && i.pinned_for.is_none())
            .then(|| format!("kiln: {} requested, running {}", rt.as_str(), i.describe()));
        Launch::Client { launcher: dir.join(&i.launcher), notice }
    }
}

/// One line of [`Runtimes::table`]: what a Lambda runtime value runs on here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRow {
    pub runtime: &'static str,
    /// `custom` (the function's bootstrap), `exact`, `nearest`, `override` or `unavailable`.
    pub status: &'static str,
    /// The interpreter, when one runs it.
    pub interpreter: Option<Interpreter>,
}

impl Runtimes {
    /// Every Lambda runtime value and how this host runs it.
    pub fn table(&self) -> Vec<RuntimeRow> {
        kiln_model::config::RUNTIMES
            .iter()
            .filter_map(|r| Runtime::parse(r).ok())
            .map(|rt| {
                let interpreter = self.interpreter_for(rt).cloned();
                let status = match (self.launch(rt), &interpreter) {
                    (Launch::Custom, _) => "custom",
                    (Launch::Unavailable { .. }, _) => "unavailable",
                    (Launch::Client { .. }, Some(i)) if i.pinned_for.is_some() => "override",
                    (Launch::Client { notice: None, .. }, _) => "exact",
                    (Launch::Client { .. }, _) => "nearest",
                };
                RuntimeRow { runtime: rt.as_str(), status, interpreter }
            })
            .collect()
    }
}

/// The runtime's name as INIT_START shows it (`python:3.12`, `nodejs:20`, `provided:al2023`).
pub fn version_label(rt: Runtime) -> String {
    match rt.language() {
        Language::Python { major, minor } => format!("python:{major}.{minor}"),
        Language::Node { major } => format!("nodejs:{major}"),
        _ => rt.as_str().replacen('.', ":", 1),
    }
}

/// Directories searched for interpreters, in order, without repeats.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        // pyenv's shims are shell scripts that pick a version at run time: never what we want.
        dirs.extend(std::env::split_paths(&path).filter(|d| !d.ends_with("shims")));
    }
    dirs.push("/usr/local/bin".into());
    dirs.push("/usr/bin".into());
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    for root in
        [pyenv, std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".nvm/versions/node"))].into_iter().flatten()
    {
        let root = if root.ends_with(".pyenv") { root.join("versions") } else { root };
        if let Ok(rd) = std::fs::read_dir(&root) {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
            v.sort();
            dirs.extend(v);
        }
    }
    let mut seen = Vec::new();
    dirs.retain(|d| {
        d.is_absolute() && !seen.contains(d) && {
            seen.push(d.clone());
            true
        }
    });
    dirs
}

/// Keeps `i` unless an interpreter of the same runtime version (Python 3.X, Node N) was found
/// before it: the first found wins (PATH order, then the fixed places); its launcher is named
/// after that version.
fn consider(found: &mut Vec<Interpreter>, i: Interpreter) {
    let unpinned = |f: &&Interpreter| f.pinned_for.is_none();
    if found.iter().filter(unpinned).any(|f| f.path == i.path || (f.kind == i.kind && f.launcher == i.launcher)) {
        return;
    }
    found.push(i);
}

/// See [`Runtimes::install`].
fn install_base(data_dir: &Path) -> PathBuf {
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .and_then(|c| absolute(c.into()))
        .or_else(|| std::env::var_os("HOME").and_then(|h| absolute(h.into())).map(|h| h.join(".cache")));
    match cache.map(|c| c.join("kiln").join("runtime")) {
        Some(base) if std::fs::create_dir_all(&base).is_ok() => base,
        _ => data_dir.join("runtime"),
    }
}

/// Runs `<path> --version` and reads the answer.
fn probe(kind: Kind, path: &Path) -> Option<Interpreter> {
    let real = path.canonicalize().ok()?;
    let child = spawn_version(&real).ok()?;
    interpreter(kind, real, child.wait_with_output().ok()?)
}

/// [`probe`] of every candidate, the interpreters started all at once; in the candidates' order.
fn probe_all(candidates: &[(Kind, PathBuf)]) -> Vec<Option<Interpreter>> {
    let running: Vec<_> = candidates.iter().map(|(kind, path)| (*kind, path, spawn_version(path))).collect();
    running
        .into_iter()
        .map(|(kind, path, child)| interpreter(kind, path.clone(), child.ok()?.wait_with_output().ok()?))
        .collect()
}

fn spawn_version(exe: &Path) -> std::io::Result<std::process::Child> {
    Command::new(exe)
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
}

/// The interpreter at `real` (canonical) from what its `--version` printed, if kiln can use it.
fn interpreter(kind: Kind, real: PathBuf, out: std::process::Output) -> Option<Interpreter> {
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout }).into_owned();
    let v = match kind {
        Kind::Python => text.trim().strip_prefix("Python ")?,
        Kind::Node => text.trim().strip_prefix('v')?,
    };
    let mut nums = v.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().ok());
    let version = (nums.next()??, nums.next()??, nums.next().flatten().unwrap_or(0));
    let supported = match kind {
        Kind::Python => version.0 == 3 && version.1 >= PYTHON_MIN_MINOR,
        Kind::Node => version.0 >= NODE_MIN_MAJOR,
    };
    if !supported {
        return None;
    }
    // The shebang line must fit the kernel's limit, and is one unquoted word.
    if real.as_os_str().len() > 200 || real.to_string_lossy().contains(char::is_whitespace) {
        return None;
    }
    let install_root = if real.starts_with("/usr/") { None } else { Some(install_root(kind, &real, version)?) };
    let launcher = match kind {
        Kind::Python => format!("python{}.{}", version.0, version.1),
        Kind::Node => format!("node{}", version.0),
    };
    Some(Interpreter { kind, path: real, version, install_root, pinned_for: None, launcher })
}

/// The directory to show in environments for an interpreter outside `/usr`: the prefix of a
/// standard installation (`<prefix>/bin/python3.X` with `<prefix>/lib/python3.X`,
/// `<prefix>/bin/node` with `<prefix>/lib/node_modules` or `<prefix>/include/node`), never
/// anything looser, so a binary lying in a home directory cannot expose that directory. Not
/// under `/opt` either: environments get their `/opt` from the function's layers.
fn install_root(kind: Kind, exe: &Path, version: (u32, u32, u32)) -> Option<PathBuf> {
    let prefix = exe.parent().filter(|d| d.ends_with("bin"))?.parent()?;
    let standard = match kind {
        Kind::Python => prefix.join(format!("lib/python{}.{}", version.0, version.1)).is_dir(),
        Kind::Node => prefix.join("lib/node_modules").is_dir() || prefix.join("include/node").is_dir(),
    };
    let ok = standard && prefix.components().count() > 2 && !prefix.starts_with("/opt");
    if !ok {
        tracing::warn!(
            interpreter = %exe.display(),
            "skipping an interpreter outside /usr that is not a standard installation kiln can show in sandboxes"
        );
    }
    ok.then(|| prefix.to_path_buf())
}

/// A launcher: behind a `#!` line that starts the interpreter on it, the client (Node.js) or an
/// import of the client's module (Python).
fn launcher(i: &Interpreter) -> String {
    match i.kind {
        // -u: unbuffered stdout/stderr, so output reaches the log in order and at once.
        Kind::Python => format!(
            "#!{} -u\n# kiln's Python runtime client is {PYTHON_MODULE}.py beside this file.\n\
             import sys\n\
             sys.path.insert(0, __file__.rpartition('/')[0])\n\
             from {PYTHON_MODULE} import main\n\
             main()\n",
            i.path.display()
        ),
        Kind::Node => format!("#!{}\n{NODE_CLIENT}", i.path.display()),
    }
}

/// Compiles `sys.argv[1]` into its standard `__pycache__` place.
const PY_COMPILE: &str = "import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True, \
                          invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)";

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp(kind: Kind, version: (u32, u32, u32)) -> Interpreter {
        Interpreter {
            kind,
            path: format!("/usr/bin/x{}{}", version.0, version.1).into(),
            version,
            install_root: None,
            pinned_for: None,
            launcher: format!("l{}.{}", version.0, version.1),
        }
    }

    fn rt(s: &str) -> Runtime {
        Runtime::parse(s).unwrap()
    }

    #[test]
    fn exact_version_runs_without_notice_and_nearest_says_so() {
        let r = Runtimes {
            interpreters: vec![
                interp(Kind::Python, (3, 11, 2)),
                interp(Kind::Python, (3, 13, 0)),
                interp(Kind::Node, (20, 1, 0)),
            ],
            dir: Some("/d".into()),
        };
        assert_eq!(r.launch(rt("python3.11")), Launch::Client { launcher: "/d/l3.11".into(), notice: None });
        // 3.12 is as far from 3.11 as from 3.13: the newer wins.
        assert_eq!(
            r.launch(rt("python3.12")),
            Launch::Client {
                launcher: "/d/l3.13".into(),
                notice: Some("kiln: python3.12 requested, running Python 3.13.0".into())
            }
        );
        assert!(
            matches!(r.launch(rt("python3.9")), Launch::Client { launcher, .. } if launcher == Path::new("/d/l3.11"))
        );
        assert_eq!(r.launch(rt("nodejs20.x")), Launch::Client { launcher: "/d/l20.1".into(), notice: None });
        assert!(
            matches!(r.launch(rt("nodejs22.x")), Launch::Client { notice: Some(n), .. } if n.contains("Node.js 20.1.0"))
        );
        assert_eq!(r.launch(rt("provided.al2023")), Launch::Custom);
        assert!(matches!(r.launch(rt("java21")), Launch::Unavailable { message } if message.contains("Java")));
        assert!(matches!(r.launch(rt("python2.7")), Launch::Unavailable { .. }));
    }

    #[test]
    fn init_start_labels_are_lambdas() {
        assert_eq!(version_label(rt("python3.12")), "python:3.12");
        assert_eq!(version_label(rt("nodejs20.x")), "nodejs:20");
        assert_eq!(version_label(rt("provided.al2023")), "provided:al2023");
        assert_eq!(version_label(rt("java8.al2")), "java8:al2");
    }

    #[test]
    fn missing_language_is_unavailable_with_a_way_out() {
        let r = Runtimes { interpreters: vec![interp(Kind::Python, (3, 11, 2))], dir: Some("/d".into()) };
        match r.launch(rt("nodejs20.x")) {
            Launch::Unavailable { message } => assert!(message.contains("--runtime nodejs20.x="), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overrides_pin_one_runtime() {
        let mut pinned = interp(Kind::Python, (3, 11, 2));
        pinned.pinned_for = Some("python3.12".into());
        pinned.launcher = "pinned".into();
        let r = Runtimes { interpreters: vec![pinned, interp(Kind::Python, (3, 13, 0))], dir: Some("/d".into()) };
        assert_eq!(r.launch(rt("python3.12")), Launch::Client { launcher: "/d/pinned".into(), notice: None });
        assert!(
            matches!(r.launch(rt("python3.11")), Launch::Client { launcher, .. } if launcher == Path::new("/d/l3.13"))
        );
        assert!(Runtimes::discover(&["python3.12".into()]).is_err());
        assert!(Runtimes::discover(&["java21=/usr/bin/true".into()]).is_err());
    }

    #[test]
    fn discovers_this_hosts_interpreters_and_writes_read_only_launchers() {
        let mut r = Runtimes::discover(&[]).unwrap();
        let dir = std::env::temp_dir().join(format!("kiln-rt-test-{}", std::process::id()));
        r.install(&dir).unwrap();
        let names: std::collections::HashSet<_> = r.interpreters().iter().map(|i| &i.launcher).collect();
        assert_eq!(names.len(), r.interpreters().len(), "one launcher per interpreter");
        for i in r.interpreters() {
            let p = r.dir.as_ref().unwrap().join(&i.launcher);
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.starts_with(&format!("#!{}", i.path.display())));
            if i.kind == Kind::Python {
                let pyc = format!("__pycache__/{PYTHON_MODULE}.cpython-3{}.pyc", i.version.1);
                assert!(r.dir.as_ref().unwrap().join(&pyc).is_file(), "{pyc} for {}", i.path.display());
            }
        }
        // Installing again reuses the same directory.
        let first = r.dir.clone();
        r.install(&dir).unwrap();
        assert_eq!(r.dir, first);
        let _ = std::process::Command::new("chmod").args(["-R", "u+w"]).arg(&dir).status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
