//! Hostile `stdout-flood`: writes 100 MB to stdout (and a line to stderr), to prove that the
//! host bounds what it keeps of a guest's output.
use std::io::Write;
use wasmq_guest::{Handler, Job, JobError};

struct Flood;

impl Handler for Flood {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        let line = [b'x'; 1023];
        let mut out = std::io::stdout().lock();
        for _ in 0..100 * 1024 {
            out.write_all(&line)
                .map_err(|e| JobError::Fail(e.to_string()))?;
            out.write_all(b"\n")
                .map_err(|e| JobError::Fail(e.to_string()))?;
        }
        out.flush().map_err(|e| JobError::Fail(e.to_string()))?;
        eprintln!("flood done");
        Ok(b"flooded".to_vec())
    }
}

wasmq_guest::export_handler!(Flood);
