//! `stamp`: returns the wall-clock time at which the handler started, in nanoseconds since the
//! Unix epoch (decimal text). `bench/` subtracts the producer's clock reading taken just before
//! the enqueue call, on the same host clock (CLOCK_REALTIME through WASI), to get the pickup
//! latency up to the moment guest code runs: lease, instantiate and call included.
use std::time::{SystemTime, UNIX_EPOCH};
use wasmq_guest::{Handler, Job, JobError};

struct Stamp;

impl Handler for Stamp {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(ns.to_string().into_bytes())
    }
}

wasmq_guest::export_handler!(Stamp);
