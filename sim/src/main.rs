//! `capdma-sim`: the simulated machine's command line.
//!
//! * `capdma-sim stream`: the main job: a capture stream end to end, every
//!   frame verified.
//! * `capdma-sim faults`: the fault matrix.
//! * `capdma-sim bench`: the common-buffer copy against the memory limit.
//!
//! Exit status: 0 the run passed, 1 it failed or could not be made, 2 a
//! usage error (`cli::EXIT_STATUS_HELP`). Every `--json` object carries
//! `schema_version` and `result` (`cli::JsonReport`).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// capdma's simulated machine: a PC with a capdma capture card, running the
/// bus driver and the AVStream minidriver cores in virtual time — memory
/// with scattered pages and RAM above 4 GiB, a DMA adapter with an IOMMU
/// checker, IRQLs, the KS queue, PnP stacks and the boards — and checking
/// every frame and every rule.
#[derive(Parser)]
#[command(name = "capdma-sim", version, after_help = cli::EXIT_STATUS_HELP)]
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
            // --help and --version print and succeed; a bad argument is one
            // line and clap's exit status (2).
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("capdma-sim: {first} (see --help)");
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(cli::EXIT_USAGE));
        }
    };
    match cli.command {
        Command::Stream(args) => cli::stream::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Faults(args) => cli::faults::run(&args),
    }
}
