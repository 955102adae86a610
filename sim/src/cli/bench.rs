//! `capdma-sim bench`: the common-buffer copy against the memory limit.
use std::process::ExitCode;
use std::time::Duration;

use capdma_sim::bench::{measure_stack, render_table, run as run_bench, BenchOptions};
use clap::builder::RangedU64ValueParser;
use clap::Args;

use super::{print_json, print_line, progress, Outcome};

/// `capdma-sim bench` arguments.
#[derive(Args)]
#[command(after_help = super::EXIT_STATUS_HELP)]
pub struct BenchArgs {
    /// A tiny configuration for smoke tests (its numbers mean nothing).
    #[arg(long)]
    quick: bool,
    /// Timed rounds per frame size, 1..=100000.
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    samples: Option<usize>,
    /// Seed of page placement and data.
    #[arg(long, default_value_t = 0xCAFD_BE4C)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `capdma-sim bench`: exit 0 when every copy method wrote the right
/// bytes, 1 when one did not or the run could not be made, 2 on a usage
/// error.
pub fn run(args: &BenchArgs) -> ExitCode {
    let options = BenchOptions { quick: args.quick, samples: args.samples, seed: args.seed, ..BenchOptions::default() };
    // Progress on stderr (a terminal only): the phase and the time in it.
    let bar = progress(2, "{spinner} {pos}/{len} {msg} ({elapsed})");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("timing the copy methods");
    let measured = run_bench(&options).and_then(|mut report| {
        bar.inc(1);
        bar.set_message("streaming through the whole stack");
        let frames = if args.quick { 30 } else { 300 };
        report.stack = Some(measure_stack(&report, frames)?);
        bar.inc(1);
        Ok(report)
    });
    bar.finish_and_clear();
    let report = match measured {
        Ok(report) => report,
        Err(e) => return Outcome::Error(format!("bench: {e}")).exit(),
    };
    if args.json {
        if let Err(e) = print_json("bench", report.checks_passed, None, &report) {
            return Outcome::Error(e).exit();
        }
    } else {
        print_line(&render_table(&report));
    }
    if report.checks_passed {
        Outcome::Pass.exit()
    } else {
        Outcome::Error("bench: a byte check failed: a copy method wrote wrong bytes".into()).exit()
    }
}
