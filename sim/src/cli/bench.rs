//! `capdma-sim bench`: the common-buffer copy against the memory limit, and
//! the product's own cost (the images in the emulated kernel) when the
//! images are built and KVM is usable.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use capdma_sim::bench::{
    default_images, image_unavailable, measure_image, measure_stack, render_markdown, render_svg, render_table, run_with_progress, BenchOptions,
};
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
    /// Timed rounds per frame size and run, 1..=100000.
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
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
    /// The bus image for the product's own cost (default: `target/windows/release/capdma_bus.sys` of this workspace).
    #[arg(long, value_name = "FILE.sys")]
    bus_image: Option<PathBuf>,
    /// The AVStream image for the product's own cost (default: `target/windows/release/capdma_avstream.sys` of this workspace).
    #[arg(long, value_name = "FILE.sys")]
    avstream_image: Option<PathBuf>,
}

/// Runs `capdma-sim bench`: exit 0 when every copy method wrote the right
/// bytes, 1 when one did not or the run could not be made, 2 on a usage
/// error.
pub fn run(args: &BenchArgs) -> ExitCode {
    let options = BenchOptions {
        quick: args.quick,
        samples: args.samples,
        seed: args.seed,
        runs: usize::from(args.runs),
        ..BenchOptions::default()
    };
    // Progress on stderr (a terminal only): the timed rounds, then the stack.
    let bar = progress(0, "{spinner} [{bar:40}] {pos}/{len} rounds ({eta} left) {msg}");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("timing the copy methods");
    let mut on_round = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let measured = run_with_progress(&options, &mut on_round).and_then(|mut report| {
        bar.set_message("streaming through the whole stack");
        let frames = if args.quick { 30 } else { 300 };
        report.stack = Some(measure_stack(&report, frames)?);
        let (bus, avstream) = (args.bus_image.clone(), args.avstream_image.clone());
        let (default_bus, default_avstream) = default_images();
        let (bus, avstream) = (bus.unwrap_or(default_bus), avstream.unwrap_or(default_avstream));
        report.image_unavailable = image_unavailable(&bus, &avstream);
        if report.image_unavailable.is_none() {
            bar.set_message("the images in the emulated kernel against the cores");
            let frames = if args.quick { 20 } else { 300 };
            report.image = Some(measure_image(&report, &bus, &avstream, frames)?);
        }
        Ok(report)
    });
    bar.finish_and_clear();
    let report = match measured {
        Ok(report) => report,
        Err(e) => return Outcome::Error(format!("bench: {e}")).exit(),
    };
    if let Some(path) = &args.svg {
        let written = render_svg(&report).and_then(|svg| std::fs::write(path, svg).map_err(|e| format!("--svg {}: {e}", path.display())));
        if let Err(e) = written {
            return Outcome::Error(format!("bench: {e}")).exit();
        }
    }
    if args.json {
        if let Err(e) = print_json("bench", report.checks_passed, None, &report) {
            return Outcome::Error(e).exit();
        }
    } else if args.markdown {
        print_line(&render_markdown(&report));
    } else {
        print_line(&render_table(&report));
    }
    if report.checks_passed {
        Outcome::Pass.exit()
    } else {
        Outcome::Error("bench: a byte check failed: a copy method wrote wrong bytes".into()).exit()
    }
}
