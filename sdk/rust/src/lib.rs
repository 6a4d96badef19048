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

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "wasmq_guest::bindings",
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
