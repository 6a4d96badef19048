//! The compile limits' flags (`wasmq run`, `wasmq serve`, `wasmq handler deploy`), and the
//! hidden `wasmq compile-child`, the process a handler is compiled in (`runtime::compile`).
//! `cli::run` dispatches `compile-child` before it builds any tokio runtime, so the child
//! spends its address space on the compile.

use std::path::PathBuf;

use anyhow::Context;

use crate::runtime::{ChildRequest, CompileConfig};
use crate::units::{parse_bytes, parse_duration};

/// Where and under which limits handlers are compiled.
#[derive(Debug, Clone, clap::Args)]
pub struct CompileArgs {
    /// Address space a handler's compile may take, in a process of its own; a handler that
    /// needs more is refused [default: 2GiB]
    #[arg(long, env = "WASMQ_COMPILE_MEMORY")]
    pub compile_memory: Option<String>,
    /// Time a handler's compile may take; a handler that takes longer is refused
    /// [default: 120s]
    #[arg(long, env = "WASMQ_COMPILE_TIMEOUT")]
    pub compile_timeout: Option<String>,
}

impl CompileArgs {
    /// The flags (and environment) over the `--config` file's `compile_memory` and
    /// `compile_timeout` over the defaults, compiling in this executable.
    pub fn config(
        &self,
        file_memory: Option<&str>,
        file_timeout: Option<&str>,
    ) -> anyhow::Result<CompileConfig> {
        let mut config = CompileConfig {
            program: Some(this_executable()?),
            ..CompileConfig::default()
        };
        if let Some(text) = self.compile_memory.as_deref().or(file_memory) {
            config.memory = parse_bytes("compile memory", text).map_err(anyhow::Error::msg)?;
        }
        if let Some(text) = self.compile_timeout.as_deref().or(file_timeout) {
            config.timeout = parse_duration("compile timeout", text).map_err(anyhow::Error::msg)?;
        }
        if config.timeout.is_zero() {
            anyhow::bail!("the compile timeout must be more than 0");
        }
        Ok(config)
    }
}

/// This executable, the `wasmq` binary, which has the `compile-child` command. On Linux,
/// `/proc/self/exe`: it runs this very binary even after a package upgrade replaced (or
/// deleted) the file at its path, where the new binary's engine could differ.
fn this_executable() -> anyhow::Result<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("finding this executable to compile in")
}

/// The arguments of `wasmq compile-child` ([`ChildRequest`]), which only wasmq itself runs.
#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub cache_dir: PathBuf,
    #[arg(long)]
    pub memory: u64,
    #[arg(long)]
    pub timeout_ms: u64,
    #[arg(long)]
    pub fuel: bool,
    #[arg(long)]
    pub max_wasm_stack: usize,
    #[arg(long)]
    pub fingerprint: String,
}

/// Runs the compiler process; returns its exit code.
pub fn run_child(args: ChildArgs) -> u8 {
    crate::runtime::compile_child(&ChildRequest {
        cache_dir: args.cache_dir,
        memory: args.memory,
        timeout: std::time::Duration::from_millis(args.timeout_ms),
        fuel: args.fuel,
        max_wasm_stack: args.max_wasm_stack,
        fingerprint: args.fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::runtime::{DEFAULT_COMPILE_MEMORY, DEFAULT_COMPILE_TIMEOUT};
    use crate::worker::{DEFAULT_COMPILE_CONCURRENCY, FileConfig, WorkerConfig};

    fn run_config(argv: &[&str], file: &str) -> WorkerConfig {
        let file: FileConfig = toml::from_str(file).unwrap();
        let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not a run command");
        };
        args.to_config(&file).unwrap()
    }

    #[test]
    fn compile_flags_override_the_config_file_which_overrides_the_defaults() {
        let config = run_config(
            &["wasmq", "run", "--compile-timeout", "5s"],
            "compile_memory = \"1GiB\"\ncompile_timeout = \"30s\"\ncompile_concurrency = 3",
        );
        assert_eq!(config.runtime.compile.memory, 1024 * 1024 * 1024);
        assert_eq!(config.runtime.compile.timeout, Duration::from_secs(5));
        assert_eq!(config.compile_concurrency, 3);
        // `wasmq run` compiles in a child process, of this executable.
        assert!(config.runtime.compile.program.is_some());

        let config = run_config(&["wasmq", "run"], "");
        assert_eq!(config.runtime.compile.memory, DEFAULT_COMPILE_MEMORY);
        assert_eq!(config.runtime.compile.timeout, DEFAULT_COMPILE_TIMEOUT);
        assert_eq!(config.compile_concurrency, DEFAULT_COMPILE_CONCURRENCY);
    }
}
