//! `gatewayctl` binary: parse arguments, run one command, report errors on stderr.

use std::{io::Write, process::ExitCode};

use clap::Parser;
use gatewayctl::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match gatewayctl::run(cli, &mut stdout).await {
        Ok(()) => {
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(err) => {
            let _ = stdout.flush();
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
