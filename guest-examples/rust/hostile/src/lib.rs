//! Hostile `hostile`: one guest, many attacks, the payload naming which (`<attack>` or
//! `<attack>:<argument>`), for the host's hostile-guest corpus (tests/all/corpus.rs).
//!
//! Capability probes (`env`, `args`, `file-read`, `file-write`, `dir-list`, `tcp-connect:<addr>`,
//! `udp-bind`, `dns`) return `denied` when the sandbox refused and `allowed: ...` otherwise.
//! The others spin on the clock, block in a host call, flood the log, return a huge result or
//! error, store a job's worth of durable steps, or exit the process.
use std::time::{Duration, Instant, SystemTime};

use wasmq_guest::{Handler, Job, JobError, Level};

struct Hostile;

fn verdict<T: std::fmt::Debug, E>(attempt: Result<T, E>) -> Vec<u8> {
    match attempt {
        Ok(what) => format!("allowed: {what:?}").into_bytes(),
        Err(_) => b"denied".to_vec(),
    }
}

fn none_is_denied<T: std::fmt::Debug>(found: Option<T>) -> Vec<u8> {
    verdict(found.ok_or(()))
}

impl Handler for Hostile {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let payload = String::from_utf8_lossy(&job.payload).into_owned();
        let (attack, arg) = payload.split_once(':').unwrap_or((&payload, ""));
        Ok(match attack {
            "env" => none_is_denied(std::env::vars_os().next()),
            "args" => none_is_denied(std::env::args_os().next()),
            "file-read" => verdict(std::fs::read("/etc/passwd")),
            "file-write" => verdict(std::fs::write("wasmq-hostile-probe", b"x")),
            "dir-list" => verdict(std::fs::read_dir("/").map(|d| d.count())),
            "tcp-connect" => verdict(std::net::TcpStream::connect(arg)),
            "udp-bind" => verdict(std::net::UdpSocket::bind("0.0.0.0:0")),
            "dns" => verdict(std::net::ToSocketAddrs::to_socket_addrs("localhost:80")),
            // Busy-polls the wall clock (a host call each time) for an hour.
            "clock-spin" => {
                let until = SystemTime::now() + Duration::from_secs(3600);
                let mut polls = 0u64;
                while SystemTime::now() < until {
                    polls += 1;
                }
                polls.to_le_bytes().to_vec()
            }
            // Busy-polls the monotonic clock for an hour.
            "instant-spin" => {
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(3600) {}
                Vec::new()
            }
            // Blocks in one host call (a WASI poll) for an hour: only the host's timeout
            // around host calls can stop it, not the epoch deadline of guest code.
            "sleep" => {
                std::thread::sleep(Duration::from_secs(3600));
                Vec::new()
            }
            // `n` calls to `context.log`.
            "log-flood" => {
                let n: u32 = arg.parse().unwrap_or(1_000_000);
                for i in 0..n {
                    wasmq_guest::log(Level::Info, &format!("line {i}"));
                }
                format!("logged {n}").into_bytes()
            }
            // A result of `n` bytes.
            "huge-result" => vec![b'r'; arg.parse().unwrap_or(8 << 20)],
            // A permanent error whose message is `n` bytes.
            "huge-error" => {
                return Err(JobError::Fail("e".repeat(arg.parse().unwrap_or(4 << 20))));
            }
            // `exit(n)` (3 unless given): 0 completes with an empty result, others fail.
            "exit" => std::process::exit(arg.parse().unwrap_or(3)),
            // `n` empty lines on stdout (1,000,000 unless given): each counts against the log cap.
            "empty-lines" => {
                let n: u32 = arg.parse().unwrap_or(1_000_000);
                let mut out = std::io::stdout().lock();
                for _ in 0..n {
                    let _ = std::io::Write::write_all(&mut out, b"\n");
                }
                format!("printed {n}").into_bytes()
            }
            // `n` random bytes in one `get-random-bytes` call (64 MiB unless given).
            "random" => {
                let n: u64 = arg.parse().unwrap_or(64 << 20);
                let bytes = wasip2::random::random::get_random_bytes(n);
                format!("got {}", bytes.len()).into_bytes()
            }
            // `n` durable steps of `size` bytes each (`steps:<n>:<size>`, 1,000 of 512 KiB
            // unless given), as one job may store: the host counts them against its per-job
            // step bytes. Stops at the first step the host refuses, failing with its error.
            "steps" => {
                let (n, size) = arg.split_once(':').unwrap_or((arg, ""));
                let n: u32 = n.parse().unwrap_or(1000);
                let size: usize = size.parse().unwrap_or(512 * 1024);
                for i in 0..n {
                    wasmq_guest::step::run(&format!("s{i}"), || Ok(vec![b's'; size])).map_err(
                        |err| match err {
                            JobError::Retry(msg) | JobError::Fail(msg) => JobError::Fail(msg),
                        },
                    )?;
                }
                format!("saved {n}").into_bytes()
            }
            "abort" => std::process::abort(),
            other => return Err(JobError::Fail(format!("unknown attack {other:?}"))),
        })
    }
}

wasmq_guest::export_handler!(Hostile);
