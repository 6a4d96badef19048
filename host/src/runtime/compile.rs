//! Compiling a handler in a child process, under a memory limit and a time limit.
//!
//! Compiling is the step of loading a handler whose cost the handler's author decides: a
//! 61 KB component of 20,000 nested loops takes 44 s and 7.7 GB to compile, and nothing in
//! the bytes says so beforehand. A [`Runtime`] whose [`CompileConfig::program`] is set (the
//! `wasmq` binary sets its own path) therefore compiles in a child process, the same
//! executable run as `wasmq compile-child` (a hidden command), in [`Runtime::load_async`]:
//! 1. The parent checks what is cheap (magic number, `wasmq:job` version, function count) and
//!    looks in the artifact cache: a hit is loaded at once, and no process is started.
//! 2. It starts the child with the engine's settings, the limits and a cache directory (the
//!    host's, or a private temporary one when the caller has none, as a deploy has), and
//!    writes the component to the child's stdin.
//! 3. The child limits its own address space (`setrlimit(RLIMIT_AS)`, which needs no
//!    privilege) to [`CompileConfig::memory`], builds an engine of the parent's
//!    configuration but without the instance pool (the pool reserves far more address space
//!    than any limit, and does not change compiled code: the child checks that its engine
//!    fingerprint is the parent's), compiles, and stores the artifact in the cache, tagged
//!    with the cache's secret like any artifact. Its exit status says how it ended. A
//!    watchdog thread ends it a second past the time limit, for when no parent is left to
//!    (a SIGKILLed host).
//! 4. The parent waits at most [`CompileConfig::timeout`] and kills the child past it; it
//!    kills it too when the load is dropped, so a host shutting down never waits for a
//!    compile. Then it loads the artifact through the cache's HMAC check
//!    ([`ArtifactCache`]): no compiled code reaches the parent any other way.
//!
//! A compile over either limit is [`LoadError::CompileMemory`] or
//! [`LoadError::CompileTimeout`]. What a compile can cost a host is then bounded: one child's
//! address space and wall-clock time per compile, times the compiles a caller runs at once.
//!
//! Without a program (library users, in-process tests) [`Runtime::load_async`] compiles in
//! this process on the blocking pool, unbounded, as [`Runtime::load_with_cache`] does.
//! **Invariant:** a cache hit never starts a process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{ArtifactCache, Handler, LoadError, LoadSource, Runtime, RuntimeConfig, cache};

/// The hidden command of the `wasmq` binary that runs [`compile_child`].
pub const CHILD_COMMAND: &str = "compile-child";

/// Default of [`CompileConfig::memory`].
pub const DEFAULT_COMPILE_MEMORY: u64 = 2 * 1024 * 1024 * 1024;
/// Default of [`CompileConfig::timeout`].
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// The child's exit codes besides 0 (the artifact is stored).
const EXIT_MEMORY: u8 = 3;
const EXIT_INVALID: u8 = 4;
const EXIT_FAILED: u8 = 5;
/// SIGABRT: how a Rust process ends when an allocation fails (under `RLIMIT_AS`).
const SIGABRT: i32 = 6;
/// Bytes of the child's stderr kept for an error message.
const MAX_CHILD_MESSAGE: usize = 8 * 1024;

/// Where and under which limits a [`Runtime`] compiles handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileConfig {
    /// The `wasmq` executable to compile in, as `<program> compile-child`. `None` compiles in
    /// this process, without the limits below (the default of the library, whose caller may
    /// not be `wasmq`: in tests `current_exe()` is the test binary). The `wasmq` binary sets
    /// its own path; tests set `env!("CARGO_BIN_EXE_wasmq")`.
    pub program: Option<PathBuf>,
    /// The child's address space (`RLIMIT_AS`): a compile that needs more is refused with
    /// [`LoadError::CompileMemory`]. Address space, not resident memory: it covers the
    /// executable's own mappings and thread stacks (some tens of MB) too.
    pub memory: u64,
    /// Wall-clock time a compile may take; past it the child is killed and the component
    /// refused with [`LoadError::CompileTimeout`].
    pub timeout: Duration,
}

impl Default for CompileConfig {
    fn default() -> Self {
        Self {
            program: None,
            memory: DEFAULT_COMPILE_MEMORY,
            timeout: DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

/// What the parent tells a compiler process (the arguments of `wasmq compile-child`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRequest {
    /// The artifact cache to store the compiled component in.
    pub cache_dir: PathBuf,
    /// The address-space limit, bytes.
    pub memory: u64,
    /// The time limit: the parent kills the child past it, and the child ends itself a second
    /// later should the parent be gone (SIGKILLed hosts have no one to kill their compiles).
    pub timeout: Duration,
    /// The engine settings that decide compiled code, as [`RuntimeConfig`] has them.
    pub fuel: bool,
    pub max_wasm_stack: usize,
    /// The parent's engine fingerprint, which the child's must equal.
    pub fingerprint: String,
}

impl ChildRequest {
    fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            CHILD_COMMAND.into(),
            "--cache-dir".into(),
            self.cache_dir.clone().into(),
            "--memory".into(),
            self.memory.to_string().into(),
            "--timeout-ms".into(),
            self.timeout.as_millis().to_string().into(),
            "--max-wasm-stack".into(),
            self.max_wasm_stack.to_string().into(),
            "--fingerprint".into(),
            self.fingerprint.clone().into(),
        ];
        if self.fuel {
            args.push("--fuel".into());
        }
        args
    }
}

/// The body of `wasmq compile-child`: compiles the component on stdin into the cache of
/// `request`, under its memory limit. Returns the process's exit code. It prints only to
/// stderr (the reason, when it fails), which the parent reads.
pub fn compile_child(request: &ChildRequest) -> u8 {
    // Started before the limit, which it would count against.
    let backstop = request.timeout.saturating_add(Duration::from_secs(1));
    let watchdog = std::thread::Builder::new()
        .name("wasmq-compile-watchdog".to_string())
        .spawn(move || {
            std::thread::sleep(backstop);
            std::process::exit(i32::from(EXIT_FAILED));
        });
    if let Err(err) = watchdog {
        eprintln!("cannot start the compiler's watchdog: {err}");
        return EXIT_FAILED;
    }
    if let Err(err) = limit_address_space(request.memory) {
        eprintln!("cannot limit the compiler's address space: {err}");
        return EXIT_FAILED;
    }
    // A panic under the limit (a thread that could not be started, an allocation that
    // returned an error) is the limit's doing when the process came close to it.
    let limit = request.memory;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if near_limit(limit) {
            std::process::exit(i32::from(EXIT_MEMORY));
        }
        default_hook(info);
    }));
    match compile_into_cache(request) {
        Ok(()) => 0,
        Err((code, message)) => {
            if code == EXIT_INVALID && near_limit(limit) {
                return EXIT_MEMORY;
            }
            eprintln!("{message}");
            code
        }
    }
}

fn compile_into_cache(request: &ChildRequest) -> Result<(), (u8, String)> {
    let config = RuntimeConfig {
        pooling: false,
        fuel: request.fuel,
        max_wasm_stack: request.max_wasm_stack,
        ..RuntimeConfig::default()
    };
    let engine = Engine::new(&super::wasm_config(&config))
        .map_err(|e| (EXIT_FAILED, format!("the engine could not be built: {e:#}")))?;
    let fingerprint = cache::engine_fingerprint(&engine);
    if fingerprint != request.fingerprint {
        return Err((
            EXIT_FAILED,
            format!(
                "the compiler's engine ({fingerprint}) is not the host's ({}); is the compiler \
                 program another wasmq version?",
                request.fingerprint
            ),
        ));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
        .map_err(|e| (EXIT_FAILED, format!("reading the component: {e}")))?;
    let cache = ArtifactCache::open(&request.cache_dir)
        .map_err(|e| (EXIT_FAILED, format!("opening the cache: {e}")))?;
    let component = Component::new(&engine, &bytes).map_err(|e| {
        let code = if out_of_memory(&e) {
            EXIT_MEMORY
        } else {
            EXIT_INVALID
        };
        (code, format!("{e:?}"))
    })?;
    cache
        .store(&cache.key(&bytes, &fingerprint), &component)
        .map_err(|e| (EXIT_FAILED, format!("storing the artifact: {e}")))
}

fn limit_address_space(bytes: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        },
    )
    .map_err(std::io::Error::from)
}

/// Whether an error says that memory ran out (a map or an allocation refused: `ENOMEM`).
fn out_of_memory(err: &wasmtime::Error) -> bool {
    err.is::<wasmtime::OutOfMemory>()
        || err.chain().any(|cause| {
            cause.is::<wasmtime::OutOfMemory>()
                || cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::OutOfMemory)
                || cause.downcast_ref::<rustix::io::Errno>() == Some(&rustix::io::Errno::NOMEM)
        })
}

/// Whether this process's peak address space came within an eighth of `limit`.
fn near_limit(limit: u64) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let peak_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmPeak:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        });
    peak_kib.is_some_and(|kib| kib.saturating_mul(1024) >= limit - limit / 8)
}

/// The cache a load stores into: the caller's, or a private one for this load only.
struct Artifacts {
    cache: Arc<ArtifactCache>,
    _private: Option<tempfile::TempDir>,
}

impl Artifacts {
    fn new(cache: Option<Arc<ArtifactCache>>) -> Result<Self, LoadError> {
        if let Some(cache) = cache {
            return Ok(Self {
                cache,
                _private: None,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("wasmq-compile-")
            .tempdir()
            .map_err(|e| {
                LoadError::Compiler(format!("making a directory for the artifact: {e}"))
            })?;
        let cache = ArtifactCache::open(dir.path())
            .map_err(|e| LoadError::Compiler(crate::chain::ErrorChain(&e).to_string()))?;
        Ok(Self {
            cache: Arc::new(cache),
            _private: Some(dir),
        })
    }
}

impl Runtime {
    /// [`Runtime::load_with_cache`], compiling in a child process under the limits of
    /// [`RuntimeConfig::compile`] when it names a program (see the module documentation), so
    /// that the caller's process spends neither the memory nor the time of a compile and its
    /// async threads never block. The errors are those of [`Runtime::load_with_cache`], plus
    /// [`LoadError::CompileMemory`], [`LoadError::CompileTimeout`] and
    /// [`LoadError::Compiler`].
    ///
    /// Dropping the future kills the child.
    pub async fn load_async(
        &self,
        bytes: Bytes,
        cache: Option<Arc<ArtifactCache>>,
    ) -> Result<(Handler, LoadSource), LoadError> {
        let Some(program) = self.inner.config.compile.program.clone() else {
            let runtime = self.clone();
            return blocking(move || runtime.load_with_cache(&bytes, cache.as_deref())).await;
        };
        let runtime = self.clone();
        let component = bytes.clone();
        let found = blocking(move || {
            super::check(&component)?;
            let artifacts = Artifacts::new(cache)?;
            let key = artifacts.cache.key(&component, &runtime.inner.fingerprint);
            let lookup = match artifacts.cache.get(&runtime.inner.engine, &key) {
                cache::Lookup::Hit(compiled) => {
                    return Ok(Found::Cached(runtime.prepare(&compiled)?));
                }
                cache::Lookup::Miss => LoadSource::Compiled,
                cache::Lookup::Discarded(reason) => LoadSource::Recompiled { reason },
            };
            Ok(Found::Compile(artifacts, key, lookup))
        })
        .await?;
        let (artifacts, key, source) = match found {
            Found::Cached(handler) => return Ok((handler, LoadSource::Cached)),
            Found::Compile(artifacts, key, source) => (artifacts, key, source),
        };
        let request = ChildRequest {
            cache_dir: artifacts.cache.dir().to_path_buf(),
            memory: self.inner.config.compile.memory,
            timeout: self.inner.config.compile.timeout,
            fuel: self.inner.config.fuel,
            max_wasm_stack: self.inner.config.max_wasm_stack,
            fingerprint: self.inner.fingerprint.clone(),
        };
        self.inner.compiles.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        run_child(
            &program,
            &request,
            &bytes,
            self.inner.config.compile.timeout,
        )
        .await?;
        tracing::debug!(elapsed = ?started.elapsed(), size = bytes.len(), "compiled a handler in a child process");
        let runtime = self.clone();
        blocking(
            move || match artifacts.cache.get(&runtime.inner.engine, &key) {
                cache::Lookup::Hit(compiled) => Ok((runtime.prepare(&compiled)?, source)),
                // What only an engine with the pool checks (tables or memories larger than its
                // slots), as `Component::new` would have refused it here.
                cache::Lookup::Discarded(reason) => Err(LoadError::Invalid(reason)),
                cache::Lookup::Miss => Err(LoadError::Compiler(
                    "it ended well but left no artifact".to_string(),
                )),
            },
        )
        .await
    }
}

/// What [`Runtime::load_cached`] found.
#[derive(Debug)]
pub enum CacheLookup {
    /// The handler, loaded from the cache.
    Hit(Handler),
    /// Nothing usable: a compile is needed, and will be this ([`LoadSource::Compiled`], or
    /// [`LoadSource::Recompiled`] when a refused artifact was deleted).
    Miss(LoadSource),
}

impl Runtime {
    /// The handler from `cache`, if the cache holds this component compiled by an engine of
    /// this configuration; otherwise compile it with [`Runtime::load_async`]. Never compiles,
    /// never starts a process; the checks are those of [`Runtime::load_with_cache`].
    pub fn load_cached(
        &self,
        bytes: &[u8],
        cache: &ArtifactCache,
    ) -> Result<CacheLookup, LoadError> {
        super::check(bytes)?;
        match cache.get(
            &self.inner.engine,
            &cache.key(bytes, &self.inner.fingerprint),
        ) {
            cache::Lookup::Hit(compiled) => Ok(CacheLookup::Hit(self.prepare(&compiled)?)),
            cache::Lookup::Miss => Ok(CacheLookup::Miss(LoadSource::Compiled)),
            cache::Lookup::Discarded(reason) => {
                Ok(CacheLookup::Miss(LoadSource::Recompiled { reason }))
            }
        }
    }
}

enum Found {
    Cached(Handler),
    Compile(Artifacts, cache::Key, LoadSource),
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LoadError> + Send + 'static,
) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(LoadError::Compiler(format!("loading did not finish: {e}"))))
}

/// Runs `program compile-child` on `component` and waits for it, at most `timeout`.
async fn run_child(
    program: &Path,
    request: &ChildRequest,
    component: &[u8],
    timeout: Duration,
) -> Result<(), LoadError> {
    let mut child = tokio::process::Command::new(program)
        .args(request.args())
        // glibc reserves 64 MiB of address space per thread arena, up to eight per core: a
        // compile's threads would spend the limit on reservations.
        .env("MALLOC_ARENA_MAX", "2")
        // Its stderr is the reason it gives when it fails, not a log.
        .env("WASMQ_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LoadError::Compiler(format!("starting {}: {e}", program.display())))?;
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let run = async {
        let feed = async {
            if let Some(mut stdin) = stdin {
                // A child that ends early (out of memory) closes its end: not our error.
                let _ = stdin.write_all(component).await;
            }
        };
        let ((), message, status) = tokio::join!(feed, read_message(stderr), child.wait());
        (message, status)
    };
    let (message, status) = match tokio::time::timeout(timeout, run).await {
        Ok(ended) => ended,
        Err(_elapsed) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(LoadError::CompileTimeout { limit: timeout });
        }
    };
    let status =
        status.map_err(|e| LoadError::Compiler(format!("waiting for the compiler: {e}")))?;
    exit_error(status, &message, request.memory)
}

/// The first [`MAX_CHILD_MESSAGE`] bytes of what the child writes to stderr, reading on to
/// the end so that it never blocks on a full pipe.
async fn read_message(stderr: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_CHILD_MESSAGE.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).trim().to_string()
}

/// What the child's exit status says about the compile.
fn exit_error(
    status: std::process::ExitStatus,
    message: &str,
    memory: u64,
) -> Result<(), LoadError> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) if code == i32::from(EXIT_MEMORY) => {
            Err(LoadError::CompileMemory { limit: memory })
        }
        (_, Some(SIGABRT)) => Err(LoadError::CompileMemory { limit: memory }),
        (Some(code), _) if code == i32::from(EXIT_INVALID) => {
            Err(LoadError::Invalid(message.to_string()))
        }
        _ => Err(LoadError::Compiler(if message.is_empty() {
            format!("it ended with {status}")
        } else {
            format!("it ended with {status}: {message}")
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child compiles without the pool; its artifacts are only loadable if that leaves
    /// the engine's fingerprint as it is.
    #[test]
    fn the_pool_does_not_change_the_engine_fingerprint() {
        for fuel in [false, true] {
            let host = RuntimeConfig {
                fuel,
                ..RuntimeConfig::default()
            };
            let pooled = Engine::new(&super::super::wasm_config(&host)).unwrap();
            let child = Engine::new(&super::super::wasm_config(&RuntimeConfig {
                pooling: false,
                ..host
            }))
            .unwrap();
            assert_eq!(
                cache::engine_fingerprint(&pooled),
                cache::engine_fingerprint(&child)
            );
        }
    }

    #[test]
    fn exit_statuses_name_the_limit_or_carry_the_reason() {
        use std::os::unix::process::ExitStatusExt;
        let exit = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        let killed = |signal: i32| std::process::ExitStatus::from_raw(signal);
        assert!(exit_error(exit(0), "", 1).is_ok());
        assert!(matches!(
            exit_error(exit(3), "", 7),
            Err(LoadError::CompileMemory { limit: 7 })
        ));
        assert!(matches!(
            exit_error(killed(SIGABRT), "memory allocation failed", 7),
            Err(LoadError::CompileMemory { limit: 7 })
        ));
        assert!(matches!(
            exit_error(exit(4), "bad section", 7),
            Err(LoadError::Invalid(m)) if m == "bad section"
        ));
        assert!(matches!(
            exit_error(exit(101), "panicked", 7),
            Err(LoadError::Compiler(m)) if m.contains("panicked")
        ));
    }
}
