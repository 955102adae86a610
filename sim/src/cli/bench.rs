//! `capdma-sim bench`: the common-buffer copy against the memory limit.
use std::process::ExitCode;

use capdma_sim::bench::{measure_stack, render_table, run as run_bench, BenchOptions};
use clap::Args;

/// `capdma-sim bench` arguments.
#[derive(Args)]
pub struct BenchArgs {
    /// A tiny configuration for smoke tests (its numbers mean nothing).
    #[arg(long)]
    quick: bool,
    /// Timed rounds per frame size.
    #[arg(long)]
    samples: Option<usize>,
    /// Seed of page placement and data.
    #[arg(long, default_value_t = 0xCAFD_BE4C)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `capdma-sim bench`.
pub fn run(args: &BenchArgs) -> ExitCode {
    let options = BenchOptions { quick: args.quick, samples: args.samples, seed: args.seed, ..BenchOptions::default() };
    match run_bench(&options) {
        Ok(mut report) => {
            let frames = if args.quick { 30 } else { 300 };
            match measure_stack(&report, frames) {
                Ok(stack) => report.stack = Some(stack),
                Err(e) => {
                    eprintln!("capdma-sim: bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => super::stream::print_line(&json),
                    Err(e) => {
                        eprintln!("capdma-sim: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                super::stream::print_line(&render_table(&report));
            }
            if report.checks_passed {
                ExitCode::SUCCESS
            } else {
                eprintln!("capdma-sim: bench: a byte check failed: a copy method wrote wrong bytes");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("capdma-sim: bench: {e}");
            ExitCode::FAILURE
        }
    }
}
