//! `capdma-sim bench`: the common-buffer copy against the memory limit.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use capdma_sim::bench::{measure_stack, render_markdown, render_svg, render_table, run_with_progress, BenchOptions};
use clap::Args;

/// `capdma-sim bench` arguments.
#[derive(Args)]
pub struct BenchArgs {
    /// A tiny configuration for smoke tests (its numbers mean nothing).
    #[arg(long)]
    quick: bool,
    /// Timed rounds per frame size and run.
    #[arg(long)]
    samples: Option<usize>,
    /// Independent runs (new rings each); figures are medians over the runs, with their range.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
    runs: u16,
    /// Seed of page placement and data.
    #[arg(long, default_value_t = 0xCAFD_BE4C)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the Markdown tables of README.md and docs/benchmark.md instead of the table.
    #[arg(long)]
    markdown: bool,
    /// Also write an SVG plot of GB/s per method and frame size, with both limits, to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// Runs `capdma-sim bench`.
pub fn run(args: &BenchArgs) -> ExitCode {
    let options = BenchOptions { quick: args.quick, samples: args.samples, seed: args.seed, runs: usize::from(args.runs), ..BenchOptions::default() };
    let bar = (std::io::stdout().is_terminal() && !args.json).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} rounds ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result = run_with_progress(&options, &mut progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(mut report) => {
            let frames = if args.quick { 30 } else { 300 };
            match measure_stack(&report, frames) {
                Ok(stack) => report.stack = Some(stack),
                Err(e) => {
                    eprintln!("capdma-sim: bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if let Some(path) = &args.svg {
                if let Err(e) = render_svg(&report).and_then(|svg| std::fs::write(path, svg).map_err(|e| format!("--svg {}: {e}", path.display()))) {
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
            } else if args.markdown {
                super::stream::print_line(&render_markdown(&report));
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
