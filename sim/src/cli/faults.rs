//! `capdma-sim faults`: the fault matrix, one row per fault (and mode).
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use capdma_sim::faults::{self, FaultRow};
use clap::builder::PossibleValuesParser;
use clap::Args;
use serde::Serialize;

use super::drivers::DriversArgs;
use super::{print_json, print_line, progress, Outcome};

/// `capdma-sim faults` arguments.
#[derive(Args)]
#[command(after_help = super::EXIT_STATUS_HELP)]
pub struct FaultsArgs {
    #[command(flatten)]
    drivers: DriversArgs,
    /// Run only this row (`dma-error/sg`), or every mode of a fault (`dma-error`); `--list` names them.
    #[arg(long, value_name = "NAME", value_parser = row_names(), hide_possible_values = true)]
    only: Option<String>,
    /// Seed of the fault times, page placement and test pattern (replay a failure with it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object (the rows and the result) instead of the table.
    #[arg(long)]
    json: bool,
    /// List the rows and what each expects, run nothing.
    #[arg(long)]
    list: bool,
    /// Print every check of every row, not only the failed ones.
    #[arg(long)]
    verbose: bool,
}

/// What `--only` takes: every row's name and every fault's (the part
/// before the `/`).
fn row_names() -> PossibleValuesParser {
    let names: BTreeSet<&'static str> =
        faults::ROWS.iter().flat_map(|spec| [spec.name, spec.name.split('/').next().unwrap_or(spec.name)]).collect();
    PossibleValuesParser::new(names)
}

/// The `--json` object's own fields.
#[derive(Serialize)]
struct FaultsReport<'a> {
    drivers: &'static str,
    seed: u64,
    rows_total: usize,
    rows_failed: usize,
    rows_not_applicable: usize,
    rows: &'a [FaultRow],
}

const HEADER: [&str; 7] = ["fault", "delivered", "verified", "recovered", "violations", "leaks", "result"];
const WIDTHS: [usize; 7] = [31, 9, 8, 9, 10, 5, 6];

fn cells(row: &FaultRow) -> [String; 7] {
    if row.not_applicable.is_some() {
        return [row.name.clone(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into(), "n/a".into()];
    }
    [
        row.name.clone(),
        row.frames_delivered.to_string(),
        row.frames_verified.to_string(),
        if row.recovered { "yes" } else { "no" }.to_string(),
        row.violations.len().to_string(),
        row.leaks.len().to_string(),
        if row.not_applicable.is_some() {
            "n/a"
        } else if row.holds {
            "holds"
        } else {
            "FAILS"
        }
        .to_string(),
    ]
}

fn line(values: &[String; 7]) -> String {
    let mut out = String::new();
    for (i, (v, w)) in values.iter().zip(WIDTHS).enumerate() {
        let _ = if i == 0 { write!(out, "{v:<w$}") } else { write!(out, "  {v:>w$}") };
    }
    out
}

fn print_details(row: &FaultRow, verbose: bool) {
    if let Some(why) = &row.not_applicable {
        print_line(&format!("    not applicable to --drivers {}: {why}", row.drivers));
        return;
    }
    if row.holds && !verbose {
        return;
    }
    for c in &row.checks {
        if verbose || !c.ok {
            print_line(&format!("    {} {}", if c.ok { "ok  " } else { "FAIL" }, c.what));
        }
    }
    for v in row.violations.iter().chain(&row.leaks).take(10) {
        print_line(&format!("    - {v}"));
    }
    if !row.holds {
        let drivers = if row.drivers == "cores" { String::new() } else { format!("--drivers {} ", row.drivers) };
        print_line(&format!("    replay: capdma-sim faults {drivers}--only {} --seed {}", row.name, row.seed));
    }
}

/// Runs `capdma-sim faults`: exit 0 only when every row holds, 1 when one
/// does not, 2 on a usage error.
pub fn run(args: &FaultsArgs) -> ExitCode {
    let drivers = match args.drivers.drivers(None, &[]) {
        Ok(drivers) => drivers,
        Err(usage) => return usage.exit(),
    };
    if args.list {
        for spec in faults::ROWS {
            let with = match faults::not_applicable(spec.name, &drivers) {
                Some(why) => format!("not applicable: {why}"),
                None => spec.expectation.to_string(),
            };
            print_line(&format!("{:<31}  {with}", spec.name));
        }
        return ExitCode::SUCCESS;
    }
    let only = args.only.as_deref();
    let table = !args.json;
    if table {
        print_line(&line(&HEADER.map(String::from)));
    }
    // Progress on stderr (a terminal only): rows done, the row running.
    let names: Vec<&str> = faults::ROWS.iter().filter(|s| only.is_none_or(|name| s.matches(name))).map(|s| s.name).collect();
    let bar = progress(names.len() as u64, "{spinner} [{bar:30}] {pos}/{len} rows, {elapsed}: {msg}");
    bar.enable_steady_tick(Duration::from_millis(100));
    bar.set_message(names.first().copied().unwrap_or_default());
    let rows = faults::run_matrix(only, &drivers, args.seed, |row| {
        if table {
            bar.suspend(|| {
                print_line(&line(&cells(row)));
                print_details(row, args.verbose);
            });
        }
        bar.inc(1);
        let done = usize::try_from(bar.position()).unwrap_or(usize::MAX);
        bar.set_message(names.get(done).copied().unwrap_or_default());
    });
    bar.finish_and_clear();
    let failed = rows.iter().filter(|r| !r.holds).count();
    let not_applicable = rows.iter().filter(|r| r.not_applicable.is_some()).count();
    if args.json {
        let report = FaultsReport {
            drivers: drivers.name(),
            seed: args.seed,
            rows_total: rows.len(),
            rows_failed: failed,
            rows_not_applicable: not_applicable,
            rows: &rows,
        };
        if let Err(e) = print_json("faults", failed == 0, None, &report) {
            return Outcome::Error(e).exit();
        }
    } else {
        let wall: f64 = rows.iter().map(|r| r.wall_s).sum();
        let ran = rows.len() - not_applicable;
        print_line(&format!(
            "{} rows, {} hold, {failed} fail, {not_applicable} not applicable (drivers {}, seed {}, {wall:.1} s)",
            rows.len(),
            ran - failed,
            drivers.name(),
            args.seed
        ));
    }
    Outcome::from_passed(failed == 0).exit()
}
