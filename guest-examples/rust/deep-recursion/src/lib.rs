//! Hostile `deep-recursion`: recurses without bound until the host's wasm stack limit stops it.
use wasmq_guest::{Handler, Job, JobError};

struct Recurse;

// Not a tail call and opaque to the optimiser, so every level keeps a real wasm frame.
#[inline(never)]
fn depth(n: u64) -> u64 {
    if std::hint::black_box(n) == u64::MAX {
        return 0;
    }
    depth(n + 1).wrapping_mul(31).wrapping_add(n)
}

impl Handler for Recurse {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        Ok(depth(job.attempt as u64).to_le_bytes().to_vec())
    }
}

wasmq_guest::export_handler!(Recurse);
