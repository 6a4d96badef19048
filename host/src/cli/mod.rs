//! The `wasmq` command line: clap definitions, and one thin function per command that calls
//! into the library. Nothing here holds logic that an embedder or the HTTP API would need.

/// Prints a line to stdout. Output cut short by the reader (`wasmq job ... | head`) is not an
/// error worth a panic, which is what `println!` does on a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod cancel;
mod compile;
mod dev;
mod event;
mod exec;
mod handler;
mod jobs;
mod kv;
mod queue;
mod run;
mod schedule;
mod serve;

use clap::{Parser, Subcommand};

/// `wasmq enqueue`'s arguments and the job they make ([`EnqueueArgs::job`]), for `fuzz/`.
pub use queue::{EnqueueArgs, QueueCommand};

/// Exit code for errors that are not a job outcome: bad arguments to a command, a handler that
/// cannot be loaded, Redis unreachable.
pub const EXIT_ERROR: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "wasmq",
    version,
    about = "Run Redis-queued jobs as sandboxed WebAssembly components"
)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax); overrides RUST_LOG.
    #[arg(long, global = true, env = "WASMQ_LOG")]
    pub log: Option<String>,

    /// Log lines as text, or as one JSON object per line with the fields of the spans around
    /// the event (a job's job_id, queue, handler, attempt) [default: text, or `log_format` in
    /// the --config file of `wasmq run`]
    #[arg(long, global = true, env = "WASMQ_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Exec(exec::ExecArgs),
    Dev(dev::DevArgs),
    Run(Box<run::RunArgs>),
    Serve(serve::ServeArgs),
    /// Deploy handler components to every host, list them, roll back, remove.
    Handler {
        #[command(subcommand)]
        action: handler::HandlerAction,
    },
    /// Cron schedules: jobs enqueued on a calendar, in a time zone, once per tick.
    Schedule {
        #[command(subcommand)]
        action: schedule::ScheduleAction,
    },
    /// Events: start every handler subscribed to an event name.
    Event {
        #[command(subcommand)]
        action: event::EventAction,
    },
    /// Handlers' key-value buckets (`--kv` grants): list keys, read or delete one.
    Kv {
        #[command(subcommand)]
        action: kv::KvAction,
    },
    /// Find a queue's jobs by state, handler, group, id prefix, payload text and time, a page
    /// at a time (each page's Redis work bounded by --scan).
    Jobs(jobs::JobsArgs),
    #[command(flatten)]
    Queue(queue::QueueCommand),
    /// Compiles the component on stdin into an artifact cache, under a memory limit: the
    /// process wasmq compiles handlers in. Not for people.
    #[command(name = crate::runtime::CHILD_COMMAND, hide = true)]
    CompileChild(compile::ChildArgs),
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// Parses `log_format` of a config file.
    pub fn parse(text: &str) -> Result<LogFormat, String> {
        <LogFormat as clap::ValueEnum>::from_str(text, false)
            .map_err(|_| format!("log_format: {text:?} is not text or json"))
    }

    /// `--log-format` (or `WASMQ_LOG_FORMAT`), else the `log_format` of `wasmq run`'s config
    /// file, else text. A config file that does not read is reported by the command itself.
    fn of(cli: &Cli) -> LogFormat {
        if let Some(format) = cli.log_format {
            return format;
        }
        if let Command::Run(args) = &cli.command
            && let Some(path) = &args.config
            && let Ok(file) = crate::worker::FileConfig::load(path)
            && let Some(text) = file.log_format
        {
            return LogFormat::parse(&text).unwrap_or_default();
        }
        LogFormat::Text
    }
}

/// Sets up `tracing` to stderr, filtered by `--log`, else `RUST_LOG`, else `info` for the
/// long-running host and `warn` for one-shot commands; as text or JSON (`--log-format`).
pub fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Run(_) | Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling into the CLI twice) is harmless; ignore it.
    let _ = match LogFormat::of(cli) {
        LogFormat::Text => builder
            // Colour only for a person at a terminal; log files and collectors get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // `span` is the innermost span's fields (a job's), `spans` every enclosing span's.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// Runs a long-lived command (`run`, `serve`) with OpenTelemetry tracing when the environment
/// or `file` (`run`'s `[tracing]`) turns it on (crate::telemetry), flushing the spans when it
/// ends.
async fn traced(
    file: Option<crate::telemetry::FileTracing>,
    command: impl std::future::Future<Output = anyhow::Result<u8>>,
) -> anyhow::Result<u8> {
    let on = crate::telemetry::init(file.as_ref())?;
    let code = command.await;
    if on {
        tokio::task::spawn_blocking(crate::telemetry::shutdown).await?;
    }
    code
}

/// Runs one parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    // Before any runtime: the compiler process spends its address space on the compile.
    let command = match cli.command {
        Command::CompileChild(args) => return Ok(compile::run_child(args)),
        command => command,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match command {
            Command::CompileChild(args) => Ok(compile::run_child(args)),
            Command::Exec(args) => exec::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Run(args) => {
                let file = args.tracing_file()?;
                traced(file, run::run(*args)).await
            }
            Command::Serve(args) => traced(None, serve::run(args)).await,
            Command::Handler { action } => handler::run(action).await,
            Command::Schedule { action } => schedule::run(action).await,
            Command::Event { action } => event::run(action).await,
            Command::Kv { action } => kv::run(action).await,
            Command::Jobs(args) => jobs::run(args).await,
            Command::Queue(cmd) => queue::run(cmd).await,
        }
    })
}
