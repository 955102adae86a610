//! The Markdown form of a [`BenchReport`] (`capdma-sim bench --markdown`):
//! the table the README and `docs/benchmark.md` show, pasted unchanged.
//!
//! Every figure is the median over the runs of each run's median, followed
//! by the range of the runs' medians in brackets; the header names the
//! machine, the date and the load, and the goals (≥ 0.90 of the contiguous limit, ≥ 0.95 of the scattered one) are checked
//! against the medians. Then the share of one core the driver's path
//! costs, the S/G programming cost, the product's own cost (the images in
//! the emulated kernel against the host routine and the cores, or why it
//! was not measured), and every method's GB/s.
use super::{BenchReport, CopyCase, GOAL_IMAGES_VS_CORES, GOAL_IMAGE_VS_HOST};
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
    write_image(out, report)?;
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

/// `ratio, met` or `ratio, missed by x` for a goal of at most `goal`.
fn at_most(ratio: f64, goal: f64, digits: usize) -> String {
    if ratio <= goal {
        format!("{ratio:.digits$}, met")
    } else {
        format!("{ratio:.digits$}, missed by {:.digits$}", ratio - goal)
    }
}

/// [`at_most`] for an estimate of the copy's own time against the host's:
/// no verdict when the difference it comes from was not positive (noise).
fn estimate(ratio: f64) -> String {
    if ratio > 0.0 {
        at_most(ratio, GOAL_IMAGE_VS_HOST, 3)
    } else {
        format!("{ratio:.3}, no estimate: the difference is noise")
    }
}

/// The product's own cost: the image's `Process` per frame against the
/// host routine, and the main job's wall time per frame through the images
/// against the cores, per mode (or why it was not measured).
fn write_image(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    let Some(i) = &report.image else {
        let why = report.image_unavailable.as_deref().unwrap_or("not measured here");
        return writeln!(out, "The product's own cost (the images in the emulated kernel): not measured: {why}.");
    };
    let c = &i.copy;
    let us: Vec<f64> = c.image_ns_per_frame_by_run.iter().map(|ns| ns / 1e3).collect();
    writeln!(out, "The product's own cost: {}.", i.description)?;
    writeln!(out)?;
    let ddis: Vec<String> = c.ddi_calls_per_frame_by_name.iter().map(|d| format!("`{}` {:.2}", d.ddi, d.per_frame)).collect();
    writeln!(
        out,
        "* The AVStream image's `Process`, {}: {} us per frame (median; mean {:.1}) against {:.1} us for the host routine: {} (goal <= {GOAL_IMAGE_VS_HOST:.2}). Of it {:.1} us in `KVM_RUN` (the guest's code and the world switches) and {:.1} us handling VM exits; per frame {:.2} `Process` calls, {:.1} VM exits ({:.1} per call), {:.1} DDI calls ({}), {:.2} nested guest calls.",
        c.case,
        with_range(c.image_ns_per_frame / 1e3, &us, 1),
        c.image_mean_ns_per_frame / 1e3,
        c.host_ns_per_frame / 1e3,
        at_most(c.image_vs_host, GOAL_IMAGE_VS_HOST, 3),
        c.guest_ns_per_frame / 1e3,
        c.exit_handling_ns_per_frame / 1e3,
        c.process_calls_per_frame,
        c.vm_exits_per_frame,
        c.vm_exits_per_process_call,
        c.ddi_calls_per_frame,
        if ddis.is_empty() { "none".to_owned() } else { ddis.join(", ") },
        c.nested_calls_per_frame
    )?;
    let copy_us: Vec<f64> = c.guest_copy_ns_per_frame_by_run.iter().map(|ns| ns / 1e3).collect();
    writeln!(
        out,
        "* The copy itself in the guest (its `KVM_RUN` time per frame against the same stream of {}, {:.1} us per frame with {:.1} VM exits): from the medians {} us per frame, {:.2} GB/s, against the host routine {}; from each stream's fastest call {:.1} us, {:.2} GB/s, {} (goal <= {GOAL_IMAGE_VS_HOST:.2}).",
        c.reference_case,
        c.reference_guest_ns_per_frame / 1e3,
        c.reference_vm_exits_per_frame,
        with_range(c.guest_copy_ns_per_frame / 1e3, &copy_us, 1),
        c.guest_copy_gbps,
        estimate(c.guest_copy_vs_host),
        c.guest_copy_best_ns_per_frame / 1e3,
        c.guest_copy_best_gbps,
        estimate(c.guest_copy_best_vs_host)
    )?;
    for w in &i.modes {
        writeln!(
            out,
            "* {}: the whole job {} ms per frame through the images, {} through the cores: {} (goal <= {GOAL_IMAGES_VS_CORES:.1}); streaming alone {:.3} against {:.3} ({:.2}).",
            w.mode,
            with_range(w.images_ms_per_frame, &w.images_ms_per_frame_by_run, 3),
            with_range(w.cores_ms_per_frame, &w.cores_ms_per_frame_by_run, 3),
            at_most(w.images_vs_cores, GOAL_IMAGES_VS_CORES, 2),
            w.images_streaming_ms_per_frame,
            w.cores_streaming_ms_per_frame,
            w.streaming_images_vs_cores
        )?;
    }
    Ok(())
}
