//! `capdma-sim`: the simulated machine's command line.
//!
//! * `capdma-sim stream`: the main job: a capture stream end to end, every
//!   frame verified; exit 0 only when all verified and no rule was broken.
//! * `capdma-sim bench`: the common-buffer copy against the memory limit.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// capdma's simulated machine: a PC with a capdma capture card, running the
/// bus driver and the AVStream minidriver cores in virtual time.
#[derive(Parser)]
#[command(name = "capdma-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture a stream end to end and verify every frame.
    Stream(cli::stream::StreamArgs),
    /// Measure the common-buffer copy against the machine's memory limit.
    Bench(cli::bench::BenchArgs),
    /// Run the fault matrix: every fault injected, each row judged.
    Faults(cli::faults::FaultsArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and succeed; a bad argument is one line and exit 2.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("capdma-sim: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Stream(args) => cli::stream::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Faults(args) => cli::faults::run(&args),
    }
}
