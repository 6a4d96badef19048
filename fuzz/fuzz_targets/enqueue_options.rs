//! Enqueue option parsing: how a producer's options become the job sent to Redis.
//!
//! The first byte picks the front end:
//! - even: the rest is the JSON body of `POST /api/queues/{queue}/jobs`, given to
//!   `wasmq::api::enqueue_job` (everything the endpoint does with the body before
//!   `Client::enqueue`).
//! - odd: the rest is a `wasmq` command line, arguments separated by NUL (`enqueue q h
//!   --priority 5 ...`), parsed by the real `Cli` (clap) and turned into the job by
//!   `EnqueueArgs::job`, then checked by `NewJob::validate` as `Client::enqueue` does.
//!
//! Properties of a job either front end accepts:
//! - enqueue.lua accepts its wire fields too (`wasmq_fuzz::enqueue_hash` mirrors the script's
//!   checks): the client never sends what the server refuses;
//! - the hash enqueue.lua writes decodes (`Job::from_hash`) to the options asked for, to the
//!   millisecond: handler, payload, priority, attempts, backoff, timeout, group.
//!
//! And no input panics.
#![no_main]

use std::time::Duration;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use wasmq::cli::{Cli, Command, QueueCommand};
use wasmq::queue::{Backoff, DEFAULT_MAX_ATTEMPTS, Job, NewJob};
use wasmq_fuzz::{enqueue_hash, fields};

/// The Redis time the model enqueues at (any fixed instant will do).
const NOW_MS: u64 = 1_750_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let job = if mode % 2 == 0 {
        match wasmq::api::enqueue_job(rest) {
            Ok(job) => job,
            Err(err) => {
                assert!(err.status.is_client_error(), "{err:?}");
                return;
            }
        }
    } else {
        let mut argv = vec!["wasmq".to_string()];
        argv.extend(
            fields(rest)
                .into_iter()
                .map(|arg| String::from_utf8_lossy(arg).into_owned()),
        );
        let Ok(cli) = Cli::try_parse_from(argv) else {
            return;
        };
        let Command::Queue(QueueCommand::Enqueue(args)) = cli.command else {
            return;
        };
        // --payload-file would be read here; its content is any bytes, like --payload's.
        let payload = args.payload.clone().unwrap_or_default().into_bytes();
        let job = args.job(payload);
        if job.validate().is_err() {
            return;
        }
        job
    };
    check_accepted(&job);
});

fn check_accepted(job: &NewJob) {
    let id = job.options.id.clone().unwrap_or_else(|| "generated".into());
    let wire = job.wire_fields();
    let hash = enqueue_hash(&id, &wire, NOW_MS)
        .unwrap_or_else(|reason| panic!("enqueue.lua refuses {job:?}: {reason}"));
    let stored = Job::from_hash("q", &id, hash)
        .unwrap_or_else(|err| panic!("the hash of {job:?} does not decode: {err}"));
    let options = &job.options;
    assert_eq!(stored.handler, job.handler);
    assert_eq!(stored.payload, job.payload);
    assert_eq!(stored.priority, options.priority);
    assert_eq!(
        stored.max_attempts,
        options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    );
    assert_eq!(stored.group, options.group);
    let ms = |d: Duration| Duration::from_millis(d.as_millis() as u64);
    let asked = match options.backoff.unwrap_or_default() {
        Backoff::Fixed { delay, jitter } => Backoff::Fixed {
            delay: ms(delay),
            jitter,
        },
        Backoff::Exponential { base, cap, jitter } => Backoff::Exponential {
            base: ms(base),
            cap: ms(cap),
            jitter,
        },
    };
    assert_eq!(stored.backoff, asked, "backoff of {job:?}");
    assert_eq!(
        stored.timeout,
        options.timeout.map(ms),
        "timeout of {job:?}"
    );
}
