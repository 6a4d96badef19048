//! Hostile `memory-bomb`: allocates 1 MiB blocks and touches them until the host refuses to
//! grow its memory.
use wasmq_guest::{Handler, Job, JobError};

struct Bomb;

impl Handler for Bomb {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let block = vec![0xA5u8; 1 << 20];
            hoard.push(std::hint::black_box(block));
        }
    }
}

wasmq_guest::export_handler!(Bomb);
