//! `keygate`: an OpenID Connect provider and authenticating gateway for Kubernetes.

#[macro_use]
mod output;
mod cli;
mod commands;
mod logging;
mod login;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
