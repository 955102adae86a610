//! `capdma-sim faults`: the fault matrix, one row per fault (and mode).
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;

use capdma_sim::faults::{self, FaultRow};
use clap::Args;

use super::stream::print_line;

/// `capdma-sim faults` arguments.
#[derive(Args)]
pub struct FaultsArgs {
    /// Run only this row (`dma-error/sg`), or every mode of a fault (`dma-error`).
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// Seed of the fault times, page placement and test pattern (replay a failure with it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON array of rows instead of the table.
    #[arg(long)]
    json: bool,
    /// List the rows and what each expects, run nothing.
    #[arg(long)]
    list: bool,
    /// Print every check of every row, not only the failed ones.
    #[arg(long)]
    verbose: bool,
}

const HEADER: [&str; 7] = ["fault", "delivered", "verified", "recovered", "violations", "leaks", "result"];
const WIDTHS: [usize; 7] = [31, 9, 8, 9, 10, 5, 6];

fn cells(row: &FaultRow) -> [String; 7] {
    [
        row.name.clone(),
        row.frames_delivered.to_string(),
        row.frames_verified.to_string(),
        if row.recovered { "yes" } else { "no" }.to_string(),
        row.violations.len().to_string(),
        row.leaks.len().to_string(),
        if row.holds { "holds" } else { "FAILS" }.to_string(),
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
        print_line(&format!("    replay: capdma-sim faults --only {} --seed {}", row.name, row.seed));
    }
}

/// Runs `capdma-sim faults`: exit 0 only when every row holds.
pub fn run(args: &FaultsArgs) -> ExitCode {
    if args.list {
        for spec in faults::ROWS {
            print_line(&format!("{:<31}  {}", spec.name, spec.expectation));
        }
        return ExitCode::SUCCESS;
    }
    let only = args.only.as_deref();
    if let Some(name) = only {
        if !faults::ROWS.iter().any(|s| s.matches(name)) {
            eprintln!("capdma-sim: no fault row named '{name}' (see --list)");
            return ExitCode::from(2);
        }
    }
    let table = !args.json;
    if table {
        print_line(&line(&HEADER.map(String::from)));
    }
    let live = table && std::io::stdout().is_terminal();
    let rows = faults::run_matrix(only, args.seed, |row| {
        if table {
            print_line(&line(&cells(row)));
            print_details(row, args.verbose);
        } else if live {
            eprintln!("{}: {}", row.name, if row.holds { "holds" } else { "FAILS" });
        }
    });
    let failed = rows.iter().filter(|r| !r.holds).count();
    if args.json {
        print_line(&serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        let wall: f64 = rows.iter().map(|r| r.wall_s).sum();
        print_line(&format!("{} rows, {} hold, {failed} fail (seed {}, {wall:.1} s)", rows.len(), rows.len() - failed, args.seed));
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
