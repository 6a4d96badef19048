//! `sandbox-probe`: tries every ambient capability a handler must not have (environment,
//! arguments, the filesystem, a TCP connection to the address given as payload) and returns
//! one line per probe, `name=allowed` or `name=denied`, for the host's tests to check.
use std::net::TcpStream;
use wasmq_guest::{Handler, Job, JobError};

struct Probe;

fn verdict(name: &str, allowed: bool) -> String {
    format!("{name}={}\n", if allowed { "allowed" } else { "denied" })
}

impl Handler for Probe {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let addr = String::from_utf8_lossy(&job.payload).into_owned();
        let mut report = String::new();
        report += &verdict("env", std::env::vars_os().next().is_some());
        report += &verdict("args", std::env::args_os().next().is_some());
        report += &verdict("fs_root", std::fs::read_dir("/").is_ok());
        report += &verdict("fs_cwd", std::fs::read_dir(".").is_ok());
        report += &verdict("fs_write", std::fs::write("/tmp/wasmq-probe", b"x").is_ok());
        report += &verdict("tcp_connect", TcpStream::connect(addr.as_str()).is_ok());
        Ok(report.into_bytes())
    }
}

wasmq_guest::export_handler!(Probe);
