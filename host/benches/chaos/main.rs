//! Run with `bash bench/chaos.sh [--jobs N] [--kills K] [--redis-restarts R]` (it builds what
//! this needs first); see bench/README.md. The full size is the default:
//! `bash bench/chaos.sh --jobs 10000 --kills 50 --redis-restarts 5`.
//!
//! N jobs across 3 real `wasmq run` processes while a random host is SIGKILLed (and restarted)
//! K times and Redis is SIGKILLed (and restarted from its AOF, `appendfsync always`) R times;
//! then every job is checked: lost, completed more than once without a lease loss, attempts,
//! time to drain. The run itself is `driver.rs`, which the CI test (`tests/all/chaos.rs`) runs
//! at a reduced size. Prints the report, writes it to `bench/results/chaos-<UTC timestamp>.md`
//! (the hosts' logs beside it, in `-logs/`), and exits 1 unless it passed.

mod driver;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

const USAGE: &str = "usage: bash bench/chaos.sh [--ci] [--jobs N] [--kills K] [--redis-restarts R] \
     [--hosts H] [--concurrency C] [--work-ms MS] [--lease-ms MS] [--deadline-s S] [--seed S]";

fn main() -> Result<()> {
    // `cargo bench` passes `--bench` to every bench binary; it is not ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let plan = parse(&args)?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()?;
    let stamp = command_output("date", &["-u", "+%Y%m%dT%H%M%SZ"]);
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let results = root.join("bench/results");
    // `cargo bench` runs this in host/: git is pointed at the repository's root.
    let repo = root.display().to_string();
    let paths = driver::Paths {
        wasmq: std::env::var_os("WASMQ_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wasmq")), PathBuf::from),
        handler: root.join("guest-examples/rust/target/wasm32-wasip2/release/effect.wasm"),
        logs: results.join(format!("chaos-{stamp}-logs")),
    };
    if !paths.handler.exists() {
        bail!(
            "{} is missing: run bash bench/chaos.sh, which builds it",
            paths.handler.display()
        );
    }
    let command = format!("bash bench/chaos.sh {}", args.join(" "));
    eprintln!("chaos: {command} (seed {})", plan.seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(driver::run(&plan, &paths))?;
    let mut markdown = report.markdown(command.trim_end(), &date);
    let _ = std::fmt::Write::write_fmt(
        &mut markdown,
        format_args!(
            "\nRevision: {} ({}).\n",
            command_output("git", &["-C", &repo, "rev-parse", "--short", "HEAD"]),
            if command_output(
                "git",
                &[
                    "-C",
                    &repo,
                    "status",
                    "--porcelain",
                    "--",
                    "host",
                    "guest-examples"
                ]
            )
            .is_empty()
            {
                "clean"
            } else {
                "with uncommitted changes"
            }
        ),
    );
    let out = results.join(format!("chaos-{stamp}.md"));
    std::fs::write(&out, &markdown).with_context(|| format!("write {}", out.display()))?;
    println!("{markdown}");
    eprintln!("chaos: report written to {}", out.display());
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}

fn parse(args: &[String]) -> Result<driver::Plan> {
    let mut plan = driver::Plan::full();
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        if flag == "--help" || flag == "-h" {
            eprintln!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--ci" {
            let seed = plan.seed;
            plan = driver::Plan {
                seed,
                ..driver::Plan::ci()
            };
            continue;
        }
        let value = iter
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        let number = || -> Result<u64> {
            value
                .parse()
                .with_context(|| format!("{flag} takes a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--jobs" => plan.jobs = number()?,
            "--kills" => plan.kills = u32::try_from(number()?)?,
            "--redis-restarts" => plan.redis_restarts = u32::try_from(number()?)?,
            "--hosts" => plan.hosts = usize::try_from(number()?)?,
            "--concurrency" => plan.concurrency = usize::try_from(number()?)?,
            "--work-ms" => plan.work_ms = number()?,
            "--lease-ms" => plan.lease = Duration::from_millis(number()?),
            "--deadline-s" => plan.deadline = Duration::from_secs(number()?),
            "--seed" => plan.seed = number()?,
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    Ok(plan)
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}
