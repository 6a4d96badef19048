//! The `wasmq` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wasmq::cli::Cli::parse();
    wasmq::cli::init_tracing(&cli);
    match wasmq::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", wasmq::chain::ErrorChain(err.as_ref()));
            ExitCode::from(wasmq::cli::EXIT_ERROR)
        }
    }
}
