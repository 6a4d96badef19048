//! The Rust SDK for wasmq job handlers.
//!
//! A handler is a type that implements [`Handler`]; [`export_handler!`] turns it into the
//! `handle` export of the `wasmq:job/handler` world. Build the crate as a `cdylib` for
//! `wasm32-wasip2` and the result is a component the wasmq host runs:
//!
//! ```ignore
//! struct Echo;
//! impl wasmq_guest::Handler for Echo {
//!     fn handle(job: wasmq_guest::Job) -> Result<Vec<u8>, wasmq_guest::JobError> {
//!         Ok(job.payload)
//!     }
//! }
//! wasmq_guest::export_handler!(Echo);
//! ```
//!
//! - [`Job`] - one attempt of one job: id, queue, handler, payload, attempt, max attempts.
//! - [`JobError`] - `Retry` (transient, retried per policy) or `Fail` (straight to the
//!   dead-letter queue).
//! - [`log`], [`progress`] - the host functions of the `context` interface.
//! - [`step::run`], [`step::sleep`] - durable steps and sleeps: a step's result is stored
//!   before the handler goes on, and every later attempt of the job gets it back instead of
//!   running the step again; a sleep frees the host and resumes the job later, on any host.
//! - [`enqueue`], [`Child`] - child jobs, written only if this attempt completes.
//!
//! A durable handler replays: every attempt runs `handle` from the top, and the steps that
//! are already stored return at once. Code outside steps runs again on every attempt (and
//! after every sleep), so keep side effects inside steps. Children are written with the
//! completion of the attempt that enqueued them: enqueue them outside steps (or in the last
//! one), since a step replayed from storage does not run its body again. See
//! docs/workflows.md.
//!
//! ```ignore
//! fn handle(job: Job) -> Result<Vec<u8>, JobError> {
//!     let charge: String = step::run("charge", || charge_card(&job.payload))?;
//!     step::sleep("cool-off", Duration::from_secs(3600))?;
//!     let receipt: Vec<u8> = step::run("receipt", || send_receipt(&charge))?;
//!     enqueue(Child::new("audit", receipt.clone()))?;
//!     Ok(receipt)
//! }
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "wasmq_guest::bindings",
        // Since 0.1.2 the world imports wasi:http and wasi:config too; only what the SDK calls
        // ends up imported by a component.
        generate_all,
    });
}

pub use bindings::wasmq::job::context::Level;
pub use bindings::{Job, JobError};

/// A job handler: the one function the host calls per job attempt.
pub trait Handler {
    fn handle(job: Job) -> Result<Vec<u8>, JobError>;
}

/// Writes one line to the job's log at `level`.
pub fn log(level: Level, message: &str) {
    bindings::wasmq::job::context::log(level, message);
}

/// Reports progress in percent (values above 100 are taken as 100).
pub fn progress(percent: u8) {
    bindings::wasmq::job::context::progress(percent);
}

impl<H: Handler> bindings::Guest for H {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        <H as Handler>::handle(job)
    }
}

/// Exports `$handler` (a type implementing [`Handler`]) as this component's `handle`.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        // wit-bindgen's export macro takes a bare identifier, hence the alias.
        const _: () = {
            type WasmqHandler = $handler;
            $crate::bindings::__export_handler_world!(WasmqHandler);
        };
    };
}

/// Durable steps and sleeps (the `workflow` interface of `wasmq:job@0.1.1`).
pub mod step {
    use std::time::Duration;

    use crate::JobError;
    use crate::bindings::wasmq::job::workflow;

    /// Largest result a step may store, in bytes (the host's limit).
    pub const MAX_STEP_BYTES: usize = 512 * 1024;
    /// Longest step or sleep name, in bytes.
    pub const MAX_NAME_LEN: usize = 256;
    /// Longest durable sleep.
    pub const MAX_SLEEP: Duration = Duration::from_secs(366 * 24 * 3600);

    /// A value a step can store: its bytes, and back.
    pub trait StepValue: Sized {
        fn to_bytes(&self) -> Vec<u8>;
        fn from_bytes(bytes: Vec<u8>) -> Result<Self, String>;
    }

    impl StepValue for Vec<u8> {
        fn to_bytes(&self) -> Vec<u8> {
            self.clone()
        }
        fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
            Ok(bytes)
        }
    }

    impl StepValue for String {
        fn to_bytes(&self) -> Vec<u8> {
            self.as_bytes().to_vec()
        }
        fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
            String::from_utf8(bytes).map_err(|err| err.to_string())
        }
    }

    impl StepValue for () {
        fn to_bytes(&self) -> Vec<u8> {
            Vec::new()
        }
        fn from_bytes(_: Vec<u8>) -> Result<Self, String> {
            Ok(())
        }
    }

    fn check_name(what: &str, name: &str) -> Result<(), JobError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(JobError::Fail(format!(
                "{what} name {name:?} must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// Runs step `name` once per job: if an earlier attempt (or an earlier call in this one)
    /// completed it, returns its stored result without calling `f`; else calls `f` and, if
    /// it succeeds, stores its result durably before returning it. An error from `f` is
    /// returned as is and nothing is stored, so the step runs again on the next attempt.
    ///
    /// A result over [`MAX_STEP_BYTES`] fails the job (`Fail`: it would be too large again);
    /// a store that cannot be read or written asks for a retry.
    pub fn run<T: StepValue>(
        name: &str,
        f: impl FnOnce() -> Result<T, JobError>,
    ) -> Result<T, JobError> {
        check_name("step", name)?;
        let stored = workflow::step_get(name)
            .map_err(|err| JobError::Retry(format!("step {name:?}: {err}")))?;
        if let Some(bytes) = stored {
            return T::from_bytes(bytes).map_err(|err| {
                JobError::Fail(format!(
                    "step {name:?}: stored result does not decode: {err}"
                ))
            });
        }
        let value = f()?;
        let bytes = value.to_bytes();
        if bytes.len() > MAX_STEP_BYTES {
            return Err(JobError::Fail(format!(
                "step {name:?}: result of {} bytes is over the limit of {MAX_STEP_BYTES} bytes",
                bytes.len()
            )));
        }
        workflow::step_save(name, &bytes).map_err(JobError::Retry)?;
        Ok(value)
    }

    /// Sleeps `duration` durably. The first time the job gets here the attempt ends (this call
    /// does not return): the job waits without holding a host, its attempt not counted, and
    /// then runs again from the top on any host, where this call returns at once.
    pub fn sleep(name: &str, duration: Duration) -> Result<(), JobError> {
        check_name("sleep", name)?;
        if duration > MAX_SLEEP {
            return Err(JobError::Fail(format!(
                "sleep {name:?}: {duration:?} is longer than {MAX_SLEEP:?}"
            )));
        }
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        workflow::sleep(name, ms).map_err(|err| JobError::Retry(format!("sleep {name:?}: {err}")))
    }
}

/// A child job: enqueued when, and only if, the attempt that asked for it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    handler: String,
    payload: Vec<u8>,
    queue: Option<String>,
    id: Option<String>,
    priority: Option<i32>,
    delay: Option<std::time::Duration>,
}

impl Child {
    /// A child job for `handler`, in the parent's queue, with a deterministic id.
    pub fn new(handler: impl Into<String>, payload: impl Into<Vec<u8>>) -> Child {
        Child {
            handler: handler.into(),
            payload: payload.into(),
            queue: None,
            id: None,
            priority: None,
            delay: None,
        }
    }

    /// Enqueues it in `queue` instead of the parent's.
    pub fn queue(mut self, queue: impl Into<String>) -> Child {
        self.queue = Some(queue.into());
        self
    }

    /// Gives it this id instead of `<parent queue>/<parent id>:c<n>`.
    pub fn id(mut self, id: impl Into<String>) -> Child {
        self.id = Some(id.into());
        self
    }

    /// -1000..1000, higher runs first.
    pub fn priority(mut self, priority: i32) -> Child {
        self.priority = Some(priority);
        self
    }

    /// Runs it this long after the parent completes.
    pub fn delay(mut self, delay: std::time::Duration) -> Child {
        self.delay = Some(delay);
        self
    }
}

/// Asks for a child job, written with this attempt's completion (none if it fails), and
/// returns its id. A child the host refuses (bad queue, handler or id, too many children)
/// fails the job: it would be refused again.
pub fn enqueue(child: Child) -> Result<String, JobError> {
    let job = bindings::wasmq::job::workflow::ChildJob {
        queue: child.queue,
        handler: child.handler,
        payload: child.payload,
        id: child.id,
        priority: child.priority,
        delay_ms: child
            .delay
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    bindings::wasmq::job::workflow::enqueue(&job).map_err(JobError::Fail)
}
