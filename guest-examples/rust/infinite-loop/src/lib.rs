//! Hostile `infinite-loop`: spins forever without a single host call, so only the host's
//! deadline can stop it.
use wasmq_guest::{Handler, Job, JobError};

struct Spin;

impl Handler for Spin {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let mut x = job.attempt as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

wasmq_guest::export_handler!(Spin);
