//! The sandbox: the wasmtime engine and everything one job attempt runs inside.
//!
//! Owns: the [`Runtime`] (one `Engine` with the component model, epoch interruption driven by
//! one ticker thread, optional fuel, the pooling instance allocator; one `Linker` with the
//! default-deny WASI context and the `context` host functions), loading a [`Handler`] from bytes
//! (validated against the `wasmq:job/handler` world and pre-linked into an `InstancePre`), and
//! [`Runtime::run`], which runs one attempt in a fresh `Store` and instance under
//! [`JobLimits`] and returns a [`RunReport`].
//!
//! Lifecycle of one attempt:
//! 1. A `Store` is made with the job's limiter (memory and table caps), fuel, a wall-clock
//!    deadline and a WASI context that grants nothing; stdout/stderr go to the job's log.
//! 2. The handler's `InstancePre` is instantiated (the pooling allocator makes this cheap).
//!    A handler two of whose last four attempts ran long (`cpu.rs`) first waits for a CPU
//!    slot (see 3) and is a long job from the start.
//! 3. `handle` is called. Every epoch tick the guest yields to tokio, so a busy guest never
//!    holds a runtime thread for longer than a tick; past the deadline the next tick traps it.
//!    A job that has used `long_job_after` of CPU time is a long job: from then on it
//!    runs only while it holds one of the `long_job_cpu_slots` (by default all cores but
//!    one), taken in turn at each tick, so CPU hogs share those slots and short jobs always
//!    find a core.
//! 4. The result or the error is classified into an [`Outcome`]; the store is dropped. The
//!    CPU time its polls used says whether it ran long.
//!
//! Each step is one function (`Runtime::new_store`, `instantiate`, `call`, `report`); the
//! CPU-fairness hooks of steps 2 and 3 are in `cpu.rs`. With tracing on and an attempt span
//! current (the worker's `process` span), steps 2 and 3 are its child spans `instantiate` and
//! `run` (`telemetry.rs`); `run` is the current context of the guest's outbound requests and
//! SQL statements, and takes its log lines as events.
//!
//! Loading with an [`ArtifactCache`] ([`Runtime::load_with_cache`]) skips the compile when the
//! cache holds this component compiled by an engine of this configuration; the cached component
//! passes the same checks as a compiled one, and only validated handlers are stored.
//!
//! Concurrency: an attempt is an async call on tokio (wasmtime's async support), not a thread:
//! a host keeps hundreds of attempts in flight, many waiting on I/O, and a thread each would
//! cost a stack and a context switch. The epoch callback yields with `tokio::task::yield_now`
//! every tick (`epoch_tick`, 2 ms), which puts the attempt behind the other ready tasks.
//!
//! Invariant: nothing a guest does can panic the host or block it past the deadline. Guest
//! errors are values ([`Outcome`]); a deadline is enforced twice, by the epoch callback for
//! guest code and by a tokio timeout for time spent inside host calls (a guest blocked in a
//! WASI poll, which epochs cannot interrupt).
//! Invariant: every attempt starts from the component's initial state. With pooling, a slot
//! keeps the first `keep_resident` bytes (1 MiB) of its memories and tables mapped between
//! jobs, and wasmtime resets the pages a job dirtied there (`PAGEMAP_SCAN`, Linux 6.7+)
//! instead of unmapping them: that is what brings instantiate + call under 10 us. The
//! `leftovers` guest (`runtime::a_job_never_sees_what_an_earlier_job_left_in_memory`) checks
//! that no static, heap or stack byte of one job reaches the next in the same slot.
//! Invariant: this module knows nothing about Redis.
//! Invariant: compiled code is deserialized only from artifacts this host wrote (checked by
//! HMAC in `cache.rs`, the one place wasmq uses `unsafe`).

mod cache;
pub(crate) mod calls;
mod capture;
mod compile;
mod cpu;
mod kv;
mod limits;
mod outcome;
mod returned;
mod share;
mod size;
mod sql;
mod version;
mod workflow;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfig;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capability::{Capabilities, OutboundHooks};
use crate::telemetry::{self, LogEvents};

pub use cache::{ArtifactCache, CacheError};
pub use capture::{LogLine, LogSource};
pub use compile::{
    CHILD_COMMAND, CacheLookup, ChildRequest, CompileConfig, DEFAULT_COMPILE_MEMORY,
    DEFAULT_COMPILE_TIMEOUT, compile_child,
};
pub use limits::JobLimits;
pub use outcome::{MAX_RETURNED_BYTES, Outcome, OutcomeClass};
pub use workflow::{
    Backlog, BoxFuture, ChildJob, DEFAULT_MAX_JOB_STEP_BYTES, MAX_CHILDREN, MAX_CHILDREN_BYTES,
    MAX_SLEEP, MAX_STEP_BYTES, MAX_STEPS, Suspend, WorkflowStore, child_id, namespaced_child_id,
};

use calls::{CallLog, SharedCalls};
use capture::{CaptureStream, JobLog};
use cpu::RecentAttempts;
use limits::StoreLimiter;
use workflow::{MemoryStore, WorkflowState};

mod bindings {
    // The `handler` world of wit/job.wit less its WASI imports that wasmtime implements
    // (`wasi:http/outgoing-handler`, `wasi:config/store`): the linker gets those from
    // wasmtime-wasi-http and wasmtime-wasi-config, so they are not generated here a second
    // time. `wasi:keyvalue` is generated here: wasmq implements it (`kv.rs`). The rest must
    // stay the world's own: `HandlerPre::new` checks the `handle` export against it.
    wasmtime::component::bindgen!({
        world: "wasmq:host/handler",
        path: "../wit",
        inline: "
            package wasmq:host;

            world handler {
                use wasmq:job/types@0.1.3.{job, job-error};
                import wasmq:job/context@0.1.3;
                import wasmq:job/workflow@0.1.3;
                import wasmq:job/sql@0.1.3;
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
                import wasi:keyvalue/batch@0.2.0-draft;

                export handle: func(job: job) -> result<list<u8>, job-error>;
            }
        ",
        imports: {
            "wasmq:job/workflow.step-get": async,
            "wasmq:job/workflow.step-save": async,
            "wasmq:job/workflow.sleep": async | trappable,
            "wasmq:job/workflow.enqueue": async,
            "wasmq:job/sql": async,
            "wasi:keyvalue": async,
        },
        with: {
            "wasi:keyvalue/store.bucket": super::kv::KvBucket,
            "wasmq:job/sql.connection": super::sql::SqlConnection,
        },
        exports: { default: async },
    });
}

use bindings::wasi::keyvalue::{atomics as kv_atomics, batch as kv_batch, store as kv_store};
use bindings::wasmq::job::{context, sql as sql_bindings, workflow as workflow_bindings};
use bindings::{HandlerPre, Job};

/// wasmtime's default "hostcall fuel": the most bytes one call from the guest may have the
/// host allocate for its arguments. The host sets it back before each host call, having
/// lifted it for the `handle` export's result (see the call hook in `cpu.rs`).
const HOSTCALL_FUEL: usize = 128 << 20;

/// Most bytes one `wasi:random` `get-random-bytes` call may ask for. The host fills them
/// outside the instance's memory cap before copying them in, so a bigger request traps
/// instead of allocating (wasmtime's own limit is 64 MiB). Guests' libraries ask for a few
/// bytes at a time.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Engine-wide settings of a host. Per-job limits are in [`JobLimits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Use the pooling instance allocator (pre-reserved slots: instantiation in microseconds).
    /// Off means on-demand allocation (mmap per instance), slower but with no reservation.
    pub pooling: bool,
    /// Component instances that may be alive at once (the pool's size).
    pub max_instances: u32,
    /// Upper bound for any single linear memory; a job's memory cap above it is clamped.
    pub max_memory_per_instance: u64,
    /// Core instances per component (Python and JavaScript components need dozens).
    pub max_core_instances_per_component: u32,
    /// Linear memories per component.
    pub max_memories_per_component: u32,
    /// Tables per component.
    pub max_tables_per_component: u32,
    /// Elements per table, which also caps table growth per job.
    pub max_table_elements: u32,
    /// Compile with fuel metering, so jobs can have a CPU budget (costs some guest speed).
    pub fuel: bool,
    /// The epoch tick: the granularity of deadlines and of the guest's yields to tokio.
    pub epoch_tick: Duration,
    /// Wasm stack per instance; runaway recursion past it is a `StackOverflow` outcome.
    pub max_wasm_stack: usize,
    /// Bytes of stdout, stderr and log lines kept per job; the rest is dropped and counted.
    pub log_capacity: usize,
    /// Bytes one job's durable steps and sleeps may hold in all (`workflow.rs`): what the
    /// host reads for it each attempt and Redis keeps for it.
    pub max_job_step_bytes: usize,
    /// With pooling: bytes at the start of each linear memory and table that stay mapped when
    /// a pool slot is given back, their dirty pages reset in place (found with Linux's
    /// `PAGEMAP_SCAN` where the kernel has it, 6.7+) instead of unmapped with `madvise`, so
    /// the next job in the slot takes no page faults there. 0 unmaps everything.
    pub keep_resident: usize,
    /// A job that has used this much CPU time (its threads' CPU clocks, not the time since
    /// it started, which counts its waits: `cpu.rs`) is a long job; an attempt that used
    /// this much in all ran long, and a handler two of whose last four attempts ran long
    /// starts its next ones as long jobs.
    pub long_job_after: Duration,
    /// How many long jobs may execute guest code at once. The default, one less than the
    /// machine's cores (at least one), keeps a core for short jobs and the host's own work,
    /// so a queue of CPU hogs cannot starve its neighbours.
    pub long_job_cpu_slots: usize,
    /// The threads guest code runs on, and so the attempts that run guest code at once (one
    /// poll each), shared fairly between queues (`share.rs`); one queue's attempts take at
    /// most all of them but one. The default, one more than the cores: a queue can use every
    /// core, and a neighbour's attempt still finds a thread of its own at once, which the
    /// OS then shares the cores with.
    pub guest_threads: usize,
    /// Where handlers are compiled, and under which memory and time limits (`compile.rs`).
    pub compile: CompileConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 256,
            max_memory_per_instance: 4 * 1024 * 1024 * 1024,
            max_core_instances_per_component: 64,
            max_memories_per_component: 4,
            max_tables_per_component: 16,
            max_table_elements: 100_000,
            fuel: false,
            epoch_tick: Duration::from_millis(2),
            max_wasm_stack: 512 * 1024,
            log_capacity: 64 * 1024,
            max_job_step_bytes: DEFAULT_MAX_JOB_STEP_BYTES,
            keep_resident: 1024 * 1024,
            long_job_after: Duration::from_millis(4),
            long_job_cpu_slots: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            guest_threads: std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
            compile: CompileConfig::default(),
        }
    }
}

/// Why a component was refused as a handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a WebAssembly binary: it does not start with the `\\0asm` magic number")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build the handler as a component \
         (for Rust, target wasm32-wasip2; otherwise `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "the component does not export `handle`: it does not implement the \
         wasmq:job/handler world"
    )]
    MissingExport,
    #[error("the component needs an import the host does not provide: {0}")]
    UnsupportedImport(String),
    #[error("the component's exports do not match the wasmq:job/handler world: {0}")]
    WrongWorld(String),
    #[error("the engine could not be configured: {0}")]
    Engine(String),
    /// The component defines more functions than this host compiles: compiling costs time
    /// and memory per function, and a small file can declare a great many.
    #[error(
        "the component defines {found} functions; this host compiles at most {limit} per \
         component"
    )]
    TooManyFunctions { found: u64, limit: u64 },
    /// The component imports the `wasmq:job` package at a version outside this host's
    /// compatibility unit (for 0.x, the minor version).
    #[error(
        "the handler was built against wasmq:job@{found}; this host implements \
         wasmq:job@{host} (incompatible)"
    )]
    IncompatibleWit { found: String, host: String },
    /// Compiling the component took more address space than the compile memory limit
    /// ([`CompileConfig::memory`]).
    #[error(
        "compiling the component needs more memory than the compile memory limit ({}; \
         --compile-memory)",
        bytesize::ByteSize(*limit)
    )]
    CompileMemory { limit: u64 },
    /// Compiling the component took longer than the compile time limit
    /// ([`CompileConfig::timeout`]); the compiler was stopped.
    #[error(
        "compiling the component takes longer than the compile time limit ({}; \
         --compile-timeout)",
        humantime::format_duration(*limit)
    )]
    CompileTimeout { limit: Duration },
    /// The compiler process could not be run, or failed for a reason of its own.
    #[error("the compiler process failed: {0}")]
    Compiler(String),
}

/// How [`Runtime::load_with_cache`] got a handler's compiled code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadSource {
    /// Compiled now: no cache was given, or it held nothing for this component and engine.
    Compiled,
    /// Deserialized from the cache; nothing was compiled.
    Cached,
    /// The cache held an artifact that was refused (`reason`, already logged); it was deleted
    /// and the component compiled again.
    Recompiled { reason: String },
}

/// One attempt of one job, as the handler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobInput {
    pub id: String,
    pub queue: String,
    pub handler: String,
    pub payload: Vec<u8>,
    pub attempt: u32,
    pub max_attempts: u32,
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    /// The job's log: stdout, stderr and `context.log` lines, bounded by the log capacity,
    /// ending with a truncation marker if anything was dropped.
    pub logs: Vec<LogLine>,
    /// Bytes of guest output dropped past the log capacity.
    pub logs_dropped: u64,
    /// The last progress the guest reported, 0-100.
    pub progress: Option<u8>,
    /// The attempt's call record (`calls.rs`) as the scripts take it: '' when it made no
    /// outbound request or SQL statement.
    pub calls: String,
    /// From the start of the attempt to the end of the call: instantiation, the call, and
    /// for a job that started long (`RuntimeConfig::long_job_after`), its wait for a CPU slot.
    pub duration: Duration,
    /// Time spent instantiating.
    pub instantiation: Duration,
    /// The most linear memory the instance held at once, in bytes.
    pub peak_memory: u64,
    /// Fuel consumed, when the runtime meters fuel.
    pub fuel_consumed: Option<u64>,
    /// The child jobs the attempt enqueued (`workflow.enqueue`), in order, with their ids: to
    /// be written with the job's completion, and dropped with any other outcome.
    pub children: Vec<ChildJob>,
}

/// The shared, cheaply cloneable runtime of a host: one engine, one linker, one epoch ticker.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    /// The engine's part of an artifact cache key (see `cache::engine_fingerprint`).
    fingerprint: String,
    /// Components compiled by this runtime (cache hits are not compiles).
    compiles: AtomicU64,
    /// CPU slots for long jobs (see [`RuntimeConfig::long_job_cpu_slots`]).
    long_jobs: Arc<Semaphore>,
    /// Turns on the guest threads, shared between queues (`share.rs`).
    turns: Arc<share::CpuShare>,
}

/// A validated handler component, compiled and pre-linked: each attempt only instantiates it.
#[derive(Clone)]
pub struct Handler {
    pre: HandlerPre<HostState>,
    /// Which of its last attempts ran long (shared by the clones of this handler): whether
    /// the next one starts as a long job (see `cpu.rs`).
    recent: Arc<RecentAttempts>,
    /// What its attempts may reach outside the sandbox; none unless granted.
    caps: Arc<Capabilities>,
}

impl Handler {
    /// This handler, its attempts granted `caps` (a handler version's grants resolved on this
    /// host). Shares the compiled code and the record of recent attempts.
    pub fn with_capabilities(&self, caps: Arc<Capabilities>) -> Handler {
        Handler {
            pre: self.pre.clone(),
            recent: self.recent.clone(),
            caps,
        }
    }

    /// The capabilities its attempts run with.
    pub fn capabilities(&self) -> &Arc<Capabilities> {
        &self.caps
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").finish_non_exhaustive()
    }
}

/// The data of one attempt's `Store`.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: StoreLimiter,
    log: Arc<Mutex<JobLog>>,
    progress: Option<u8>,
    /// The CPU time the attempt has used, and whether that makes it a long job yet (after
    /// `long_job_after` of it, or from its start for a handler whose recent attempts ran
    /// long).
    cpu: Arc<cpu::CpuUse>,
    deadline: Instant,
    /// The long-job CPU slot this attempt holds while its guest code runs, once it is long.
    /// Shared with the future that acquires it at an epoch yield; dropped with the store.
    cpu_slot: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    /// Steps, sleeps and child jobs (the `workflow` interface).
    workflow: WorkflowState,
    /// `wasi:http`: the resource limits of its fields, and the hooks that decide each
    /// outgoing request (`capability::http`).
    http: WasiHttpCtx,
    outbound: OutboundHooks,
    /// The handler's grants: `wasi:config` reads its values, `wasi:keyvalue` and `sql` open
    /// only what they name.
    caps: Arc<Capabilities>,
    /// Key-value calls made so far (`kv.rs`).
    kv_calls: u32,
    /// `sql` connections open now (`sql.rs`).
    sql_open: usize,
    /// The attempt's call record, shared with `outbound` (`calls.rs`).
    calls: SharedCalls,
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// `wasi:config/store` reads the handler's config values and resolved secrets; a key not
/// granted reads as none.
fn config_view(state: &mut HostState) -> WasiConfig<'_> {
    WasiConfig::from(&state.caps.config)
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl context::Host for HostState {
    fn log(&mut self, level: context::Level, message: String) {
        let source = match level {
            context::Level::Trace => LogSource::Trace,
            context::Level::Debug => LogSource::Debug,
            context::Level::Info => LogSource::Info,
            context::Level::Warn => LogSource::Warn,
            context::Level::Error => LogSource::Error,
        };
        capture::lock(&self.log).line(source, &message);
    }

    fn progress(&mut self, percent: u8) {
        self.progress = Some(percent.min(100));
    }
}

impl Runtime {
    /// Builds the engine (and its pool) and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let engine =
            Engine::new(&wasm_config(&config)).map_err(|e| LoadError::Engine(format!("{e:?}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        context::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        workflow_bindings::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        // Capabilities are always linked, so components whose toolchains import them (a
        // JavaScript `fetch`) load; whether a call may do anything is decided per call.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        wasmtime_wasi_config::add_to_linker(&mut linker, config_view)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        kv_store::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        kv_atomics::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        kv_batch::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;
        sql_bindings::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("{e:?}")))?;

        spawn_epoch_ticker(&engine, config.epoch_tick);
        Ok(Self {
            inner: Arc::new(Inner {
                fingerprint: cache::engine_fingerprint(&engine),
                compiles: AtomicU64::new(0),
                engine,
                linker,
                long_jobs: Arc::new(Semaphore::new(config.long_job_cpu_slots.max(1))),
                turns: share::CpuShare::new(
                    config.guest_threads,
                    config.guest_threads.saturating_sub(1),
                ),
                config,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Validates, compiles and pre-links a handler component.
    pub fn load(&self, bytes: &[u8]) -> Result<Handler, LoadError> {
        self.load_with_cache(bytes, None)
            .map(|(handler, _)| handler)
    }

    /// [`Runtime::load`], taking the compiled code from `cache` when it holds this component
    /// compiled by an engine of this runtime's configuration, and storing it there otherwise.
    ///
    /// The checks are those of [`Runtime::load`], with the same errors, whether the code was
    /// compiled or cached: a WebAssembly component, whose `wasmq:job` imports are of a version
    /// this host runs ([`LoadError::IncompatibleWit`], checked before compiling), that defines
    /// no more functions than the host compiles ([`LoadError::TooManyFunctions`], likewise),
    /// that exports `handle` and links against the host. Only a component that passed them is stored.
    ///
    /// The cache never makes a load fail: an artifact that fails its integrity check or that
    /// wasmtime refuses is deleted and the component compiled again
    /// ([`LoadSource::Recompiled`]); one that cannot be written is logged, and the handler runs
    /// from memory. [`Runtime::compiles`] counts the compiles.
    pub fn load_with_cache(
        &self,
        bytes: &[u8],
        cache: Option<&ArtifactCache>,
    ) -> Result<(Handler, LoadSource), LoadError> {
        check(bytes)?;
        let Some(cache) = cache else {
            let component = self.compile(bytes)?;
            return Ok((self.prepare(&component)?, LoadSource::Compiled));
        };
        let key = cache.key(bytes, &self.inner.fingerprint);
        let (component, source) = match cache.get(&self.inner.engine, &key) {
            cache::Lookup::Hit(component) => (component, LoadSource::Cached),
            cache::Lookup::Miss => (self.compile(bytes)?, LoadSource::Compiled),
            cache::Lookup::Discarded(reason) => {
                (self.compile(bytes)?, LoadSource::Recompiled { reason })
            }
        };
        let handler = self.prepare(&component)?;
        if source != LoadSource::Cached {
            cache.put(&key, &component);
        }
        Ok((handler, source))
    }

    /// How many components this runtime has compiled (or tried to: a component that does not
    /// compile counts too). Loads from an [`ArtifactCache`] do not count, so a restart with a
    /// warm cache reports 0.
    pub fn compiles(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    fn compile(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        self.inner.compiles.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let component = Component::new(&self.inner.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:?}")))?;
        tracing::debug!(elapsed = ?started.elapsed(), size = bytes.len(), "compiled a handler");
        Ok(component)
    }

    /// Checks that `component` implements the handler world and pre-links it.
    fn prepare(&self, component: &Component) -> Result<Handler, LoadError> {
        match component.get_export(None, "handle") {
            Some((wasmtime::component::types::ComponentItem::ComponentFunc(_), _)) => {}
            Some(_) => {
                return Err(LoadError::WrongWorld(
                    "`handle` is exported but is not a function".to_string(),
                ));
            }
            None => return Err(LoadError::MissingExport),
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::UnsupportedImport(format!("{e:?}")))?;
        let pre = HandlerPre::new(pre).map_err(|e| LoadError::WrongWorld(format!("{e:?}")))?;
        returned::check(&pre).map_err(|e| LoadError::WrongWorld(format!("{e:?}")))?;
        Ok(Handler {
            pre,
            recent: Arc::default(),
            caps: Arc::new(Capabilities::none()),
        })
    }

    /// [`Runtime::load`] from a file.
    pub fn load_file(&self, path: &Path) -> Result<Handler, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.load(&bytes)
    }

    /// Runs one attempt of `job` in a fresh instance of `handler` under `limits`, its steps
    /// kept in memory for this attempt only (see [`Runtime::run_with_store`]).
    ///
    /// Never fails: every way an attempt can end is an [`Outcome`].
    pub async fn run(&self, handler: &Handler, job: JobInput, limits: &JobLimits) -> RunReport {
        self.run_with_store(handler, job, limits, Arc::new(MemoryStore::default()))
            .await
    }

    /// [`Runtime::run`], with the job's durable steps in `store` (the `workflow` interface).
    ///
    /// Every poll of the attempt, from making its store to dropping it (giving its memory
    /// back to the pool is part of its cost), takes a turn on the guest threads, shared
    /// fairly between queues (`share.rs`).
    pub async fn run_with_store(
        &self,
        handler: &Handler,
        job: JobInput,
        limits: &JobLimits,
        store: Arc<dyn WorkflowStore>,
    ) -> RunReport {
        let queue: Arc<str> = Arc::from(job.queue.as_str());
        let attempt = self.attempt(handler, job, limits, store);
        tokio::pin!(attempt);
        share::Fair::new(attempt.as_mut(), self.inner.turns.clone(), queue).await
    }

    /// One attempt, in the steps of the module doc: its store ([`Runtime::new_store`]), the
    /// instance ([`instantiate`]), the call ([`call`]), and the report ([`report`]), the first
    /// two under the job's timeout and counted by [`cpu::timed`].
    async fn attempt(
        &self,
        handler: &Handler,
        job: JobInput,
        limits: &JobLimits,
        steps: Arc<dyn WorkflowStore>,
    ) -> RunReport {
        let started = Instant::now();
        let (mut store, setup) = self.new_store(handler, &job, limits, steps, started);
        let job = Job {
            id: job.id,
            queue: job.queue,
            handler: job.handler,
            payload: job.payload,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
        };
        let mut instantiation = Duration::ZERO;
        let slots = self.inner.long_jobs.clone();
        // The epoch callback stops guest code at the deadline; this timeout covers time spent
        // inside host calls (a guest blocked in a WASI poll), which epochs cannot interrupt.
        let result = cpu::timed(limits.timeout, &setup.cpu, async {
            if setup.start_long {
                // A `wait` span: the handler's attempts run long, so this one waits for a
                // CPU slot before it starts (cpu.rs).
                let span = telemetry::child_span("wait", Vec::new());
                cpu::wait_for_slot(slots, &setup.cpu_slot).await;
                if let Some(span) = span {
                    telemetry::end_span(span, None);
                }
            }
            let instance = instantiate(handler, &mut store, &mut instantiation).await?;
            call(instance, &mut store, &job).await
        })
        .await;
        handler.recent.record(setup.cpu.ran_long());
        report(store, &setup, result, instantiation, self.inner.config.fuel)
    }

    /// Step 1: the attempt's store, under the job's limits, with the CPU-fairness hooks
    /// (`cpu.rs`) installed.
    fn new_store(
        &self,
        handler: &Handler,
        job: &JobInput,
        limits: &JobLimits,
        steps: Arc<dyn WorkflowStore>,
        started: Instant,
    ) -> (Store<HostState>, Setup) {
        let config = &self.inner.config;
        let deadline = started + limits.timeout;
        let job_id: Arc<str> = Arc::from(job.id.as_str());
        let log = Arc::new(Mutex::new(JobLog::new(job_id, config.log_capacity)));
        let wasi = WasiCtx::builder()
            .stdout(CaptureStream::new(log.clone(), LogSource::Stdout))
            .stderr(CaptureStream::new(log.clone(), LogSource::Stderr))
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        let memory_cap = limits.memory.min(config.max_memory_per_instance);
        let start_long = handler.recent.start_long();
        let cpu = cpu::CpuUse::new(if start_long {
            Duration::ZERO
        } else {
            config.long_job_after
        });
        let cpu_slot = Arc::new(Mutex::new(None));
        let calls = CallLog::shared(started);
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: StoreLimiter::new(memory_cap, config.max_table_elements as usize),
            log: log.clone(),
            progress: None,
            cpu: cpu.clone(),
            deadline,
            cpu_slot: cpu_slot.clone(),
            workflow: WorkflowState::new(steps, &job.queue, &job.id, config.max_job_step_bytes),
            http: WasiHttpCtx::new(),
            outbound: OutboundHooks::new(handler.caps.clone(), deadline, calls.clone()),
            caps: handler.caps.clone(),
            kv_calls: 0,
            sql_open: 0,
            calls: calls.clone(),
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        cpu::install_hooks(&mut store, &self.inner.long_jobs);
        let fuel_budget = limits.fuel.unwrap_or(u64::MAX);
        if config.fuel {
            // Cannot fail: fuel is enabled on this engine.
            let _ = store.set_fuel(fuel_budget);
        }
        let setup = Setup {
            started,
            log,
            calls,
            cpu_slot,
            cpu,
            start_long,
            fuel_budget,
        };
        (store, setup)
    }
}

/// What [`Runtime::new_store`] made besides the store, for the rest of the attempt.
struct Setup {
    started: Instant,
    log: Arc<Mutex<JobLog>>,
    calls: SharedCalls,
    cpu_slot: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    /// The CPU time the attempt has used (`cpu.rs`).
    cpu: Arc<cpu::CpuUse>,
    /// The handler's recent attempts ran long: this one waits for a CPU slot first.
    start_long: bool,
    fuel_budget: u64,
}

/// What the call to `handle` returned: a trap, or the guest's result.
type Returned = wasmtime::Result<returned::Returned>;

/// Step 2: a fresh instance of the handler, timed into `took`; an `instantiate` span of the
/// attempt's when tracing is on, whose events are the lines the component's start code logs.
async fn instantiate(
    handler: &Handler,
    store: &mut Store<HostState>,
    took: &mut Duration,
) -> wasmtime::Result<bindings::Handler> {
    // With no span (tracing off), nothing more than the instantiation itself.
    let traced = telemetry::child_span("instantiate", Vec::new()).map(|span| {
        let log = store.data().log.clone();
        capture::lock(&log).set_events(LogEvents::new(span));
        log
    });
    let started = Instant::now();
    let instance = handler.pre.instantiate_async(&mut *store).await;
    *took = started.elapsed();
    if let Some(events) = traced.and_then(|log| capture::lock(&log).take_events()) {
        let failed = instance.as_ref().err().map(|_| "instantiation failed");
        telemetry::end_span(events.into_span(), failed);
    }
    instance
}

/// Step 3: the call to `handle`. With tracing on it is a `run` span of the attempt's, the
/// parent of the outbound requests and queries the guest makes, whose events are the guest's
/// log lines (`capture.rs`, at most `telemetry::MAX_LOG_EVENTS`).
async fn call(instance: bindings::Handler, store: &mut Store<HostState>, job: &Job) -> Returned {
    let Some(span) = telemetry::child_span("run", Vec::new()) else {
        return call_handle(&instance, store, job).await;
    };
    let context = telemetry::context_of(&span);
    let log = store.data().log.clone();
    capture::lock(&log).set_events(LogEvents::new(span));
    let running = call_handle(&instance, store, job);
    let returned = opentelemetry::context::FutureExt::with_context(running, context).await;
    if let Some(events) = capture::lock(&log).take_events() {
        let failed = match &returned {
            Ok(Ok(_)) => None,
            Ok(Err(_)) => Some("the handler returned an error"),
            Err(_) => Some("the handler trapped"),
        };
        telemetry::end_span(events.into_span(), failed);
    }
    returned
}

/// Calls `handle`, its result measured before it is copied out of the guest (`returned.rs`).
async fn call_handle(
    instance: &bindings::Handler,
    store: &mut Store<HostState>,
    job: &Job,
) -> Returned {
    let (returned,) = returned::handle(instance)
        .call_async(&mut *store, (job,))
        .await?;
    Ok(returned)
}

/// Step 4: the outcome of the attempt, what it used, and its log; the store is dropped (its
/// memory goes back to the pool).
fn report(
    mut store: Store<HostState>,
    setup: &Setup,
    result: Result<Returned, tokio::time::error::Elapsed>,
    instantiation: Duration,
    fuel: bool,
) -> RunReport {
    let suspend = store.data_mut().workflow.suspend.take();
    let limiter = &store.data().limiter;
    let outcome = match result {
        Err(_elapsed) => Outcome::Timeout,
        // Checked and cut here, on the guest thread: a guest can return megabytes, and every
        // copy the host would make of them further on costs its own threads.
        Ok(Ok(returned)) => outcome::returned(returned),
        Ok(Err(err)) => match suspend {
            // Only a `sleep` sets it, just before it traps to end the attempt.
            Some(Suspend { field, delay }) => Outcome::Suspended { field, delay },
            None => outcome::classify(&err, limiter.hit),
        },
    };
    let peak_memory = limiter.peak_memory as u64;
    let progress = store.data().progress;
    let children = match outcome {
        Outcome::Ok(_) => std::mem::take(&mut store.data_mut().workflow.children),
        _ => Vec::new(),
    };
    let fuel_consumed = fuel.then(|| {
        setup
            .fuel_budget
            .saturating_sub(store.get_fuel().unwrap_or(0))
    });
    drop(store);
    let mut log = capture::lock(&setup.log);
    // A call cut by the timeout left its span here.
    if let Some(events) = log.take_events() {
        telemetry::end_span(events.into_span(), Some(outcome.class().as_str()));
    }
    let (logs, logs_dropped) = log.finish();
    RunReport {
        outcome,
        logs,
        logs_dropped,
        progress,
        calls: calls::lock(&setup.calls).encode(),
        duration: setup.started.elapsed(),
        instantiation,
        peak_memory,
        fuel_consumed,
        children,
    }
}

/// The checks made before compiling: cheap, and refusing what would cost a compile for nothing.
fn check(bytes: &[u8]) -> Result<(), LoadError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm);
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(LoadError::CoreModule);
    }
    version::check(bytes)?;
    size::check(bytes)
}

/// The engine configuration of `config`: what [`Runtime::new`] builds its engine with, and
/// what the compiler process (`compile.rs`) builds its own with, without the pool.
fn wasm_config(config: &RuntimeConfig) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(config.fuel)
        .max_wasm_stack(config.max_wasm_stack);
    if config.pooling {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances;
        // Totals sized so that `n` instances of the largest admitted component fit at once
        // (a Python component makes 14 core instances per job): a job must never fail for
        // want of a pool slot. The slots are address space, committed only when used.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(config.max_core_instances_per_component))
            .total_memories(n.saturating_mul(config.max_memories_per_component))
            .total_tables(n.saturating_mul(config.max_tables_per_component))
            .total_stacks(n)
            .max_core_instances_per_component(config.max_core_instances_per_component)
            .max_memories_per_component(config.max_memories_per_component)
            .max_tables_per_component(config.max_tables_per_component)
            .table_elements(config.max_table_elements as usize)
            .max_memory_size(usize::try_from(config.max_memory_per_instance).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(config.keep_resident)
            .table_keep_resident(config.keep_resident)
            .pagemap_scan(wasmtime::Enabled::Auto);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    wasm
}

fn lock_slot(
    slot: &Mutex<Option<OwnedSemaphorePermit>>,
) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
    // Holds only an Option; nothing can be left half-done by a panic.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Increments the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasmq-epoch".to_string())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        });
    if let Err(err) = spawned {
        // Without a ticker no deadline fires; the tokio timeout in `run` still stops jobs.
        tracing::error!(%err, "could not start the epoch ticker thread");
    }
}
