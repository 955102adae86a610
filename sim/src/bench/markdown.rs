//! The Markdown form of a [`BenchReport`] (`capdma-sim bench --markdown`):
//! the table the README and `docs/benchmark.md` show, pasted unchanged.
//!
//! Every figure is the median over the runs of each run's median, followed
//! by the range of the runs' medians in brackets; the header names the
//! machine, the date and the load, and the goals (≥ 0.90 of the contiguous limit, ≥ 0.95 of the scattered one) are checked
//! against the medians. Then the share of one core the driver's path
//! costs, the S/G programming cost, and every method's GB/s.
use super::{BenchReport, CopyCase};
use std::fmt::Write;

/// Goal: the driver's path at least this fraction of the contiguous limit.
pub const GOAL_VS_LIMIT: f64 = 0.90;
/// Goal: the driver's path at least this fraction of the scattered limit.
pub const GOAL_VS_SCATTERED_LIMIT: f64 = 0.95;

/// `median [min–max]` of `values` with `digits` decimals (no range for
/// fewer than two values).
fn with_range(median: f64, values: &[f64], digits: usize) -> String {
    if values.len() < 2 {
        return format!("{median:.digits$}");
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{median:.digits$} [{min:.digits$}–{max:.digits$}]")
}

fn method_cell(case: &CopyCase, id: &str) -> String {
    case.methods.iter().find(|m| m.method == id).map_or_else(|| "n/a".to_owned(), |m| with_range(m.gbps_median, &m.gbps_by_run, 2))
}

/// Renders `report` as Markdown: a header line, the summary table, the
/// goals, and every method's GB/s.
#[must_use]
pub fn render_markdown(report: &BenchReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_markdown(&mut out, report);
    out
}

fn write_markdown(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    let m = &report.machine;
    let s = &report.settings;
    let family = m.cpu_family_model.map(|(f, md)| format!(" (family {f}, model {md})")).unwrap_or_default();
    writeln!(
        out,
        "`capdma-sim bench --runs {} --markdown`{}, {}: CPU {}{family}, {} logical CPUs, {} MiB L{} cache, AVX2 {}; load average {} at the start, {} at the end; {} run(s) of {} interleaved rounds, cold rings of {:.1} x LLC; byte checks {}. GB/s: the median of the runs' medians [their range].",
        s.runs,
        if s.quick { " (quick configuration: numbers mean nothing)" } else { "" },
        report.started,
        m.cpu_model,
        m.logical_cpus,
        m.llc_bytes >> 20,
        m.llc_level,
        if m.avx2 { "yes" } else { "no" },
        s.load_average.0,
        s.load_average.1,
        s.runs,
        s.samples,
        s.ring_over_llc,
        if report.checks_passed { "all passed" } else { "FAILED" }
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| frame | limit (contiguous) | scattered limit | driver (scattered pages) | driver / limit | driver / scattered limit | driver into contiguous | `copy_from_slice` |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for c in &report.cases {
        writeln!(
            out,
            "| {} ({:.2} MB) | {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            c.frame_bytes as f64 / 1e6,
            with_range(c.limit.gbps, &c.limit.gbps_by_run, 2),
            with_range(c.scattered_limit.gbps, &c.scattered_limit.gbps_by_run, 2),
            method_cell(c, "driver"),
            with_range(c.driver_vs_limit, &c.driver_vs_limit_by_run, 3),
            with_range(c.driver_vs_scattered_limit, &c.driver_vs_scattered_limit_by_run, 3),
            method_cell(c, "driver_contiguous"),
            method_cell(c, "copy_from_slice"),
        )?;
    }
    writeln!(out)?;
    for c in &report.cases {
        writeln!(
            out,
            "{}: limit from {}; scattered limit from {}.",
            c.name,
            c.limit.method_by_run.join(", "),
            c.scattered_limit.method_by_run.join(", ")
        )?;
    }
    writeln!(out)?;
    writeln!(out, "Goals (medians): driver / limit >= {GOAL_VS_LIMIT:.2}, driver / scattered limit >= {GOAL_VS_SCATTERED_LIMIT:.2}.")?;
    writeln!(out)?;
    for c in &report.cases {
        let verdict = |ratio: f64, goal: f64| {
            if ratio >= goal {
                format!("{ratio:.3}, met")
            } else {
                format!("{ratio:.3}, missed by {:.3}", goal - ratio)
            }
        };
        writeln!(
            out,
            "* {}: vs limit {}; vs scattered limit {}",
            c.name,
            verdict(c.driver_vs_limit, GOAL_VS_LIMIT),
            verdict(c.driver_vs_scattered_limit, GOAL_VS_SCATTERED_LIMIT)
        )?;
    }
    writeln!(out)?;
    write_costs(out, report)?;
    writeln!(out)?;
    write!(out, "| method | destination |")?;
    for c in &report.cases {
        write!(out, " {} |", c.name)?;
    }
    writeln!(out)?;
    writeln!(out, "|---|---|{}", "---|".repeat(report.cases.len()))?;
    let Some(first) = report.cases.first() else { return Ok(()) };
    for (i, method) in first.methods.iter().enumerate() {
        write!(out, "| `{}` | {} |", method.method, method.destination)?;
        for c in &report.cases {
            let cell = c.methods.get(i).map_or_else(|| "n/a".to_owned(), |mr| with_range(mr.gbps_median, &mr.gbps_by_run, 2));
            write!(out, " {cell} |")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The share of one core (median speed) and the S/G programming cost, one
/// line each.
fn write_costs(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    let shares: Vec<String> = report.core_share.iter().map(|c| format!("{} {:.1} %", c.workload, c.share_median * 100.0)).collect();
    writeln!(out, "Share of one core on the driver's path (median speed): {}.", shares.join(", "))?;
    writeln!(out)?;
    let frames: Vec<String> = report
        .sg
        .frames
        .iter()
        .map(|f| {
            format!(
                "{} {:.0} elements page by page ({:.2} us), {:.0} with physically adjacent pages merged ({:.2} us)",
                f.frame,
                f.elements_unmerged.mean,
                f.ns_per_frame_unmerged / 1e3,
                f.elements_merged.mean,
                f.ns_per_frame_merged / 1e3
            )
        })
        .collect();
    let per_element = report.sg.frames.first().map_or(0.0, |f| f.ns_per_element.median);
    writeln!(out, "S/G mode instead: {per_element:.2} ns per element to program; {}.", frames.join("; "))
}
