//! The `smsdrop` binary: parses arguments, starts logging, loads config, calls the library and maps
//! the result to an exit code. No business rules here.

#![forbid(unsafe_code)]

mod cli;
mod generate;

use clap::Parser;
use smsdrop::Outcome;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(err) => {
            eprintln!("smsdrop: error: {err:#}");
            ExitCode::from(
                err.downcast_ref::<cli::UsageError>()
                    .map_or(Outcome::Failure, |_| Outcome::Usage) as u8,
            )
        }
    }
}
