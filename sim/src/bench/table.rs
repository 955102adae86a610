//! The human-readable form of a [`BenchReport`].
use super::{BenchReport, GOAL_IMAGES_VS_CORES, GOAL_IMAGE_VS_HOST};
use std::fmt::Write;

fn mib(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

/// Renders `report` as plain-text tables.
#[must_use]
pub fn render_table(report: &BenchReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, report);
    out
}

fn write_report(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    write_setup(out, report)?;
    write_cases(out, report)?;
    write_core_share(out, report)?;
    write_sg(out, report)?;
    write_image(out, report)?;
    write_stack(out, report)
}

fn write_image(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    writeln!(out)?;
    let Some(i) = &report.image else {
        let why = report.image_unavailable.as_deref().unwrap_or("not measured here");
        return writeln!(out, "the product's own cost (the images in the emulated kernel): not measured: {why}");
    };
    writeln!(out, "the product's own cost: {}", i.description)?;
    let c = &i.copy;
    writeln!(
        out,
        "  the AVStream image's Process, {}: {:.1} us/frame (runs {}; mean {:.1}) vs the host routine {:.1} us/frame: {:.3} x (goal <= {GOAL_IMAGE_VS_HOST:.2}: {})",
        c.case,
        c.image_ns_per_frame / 1e3,
        range(&c.image_ns_per_frame_by_run.iter().map(|ns| ns / 1e3).collect::<Vec<_>>()),
        c.image_mean_ns_per_frame / 1e3,
        c.host_ns_per_frame / 1e3,
        c.image_vs_host,
        verdict(c.image_vs_host <= GOAL_IMAGE_VS_HOST)
    )?;
    writeln!(
        out,
        "    in KVM_RUN (guest code, world switches) {:.1} us/frame, handling exits {:.1} us/frame ({:.0} % of all Process time in KVM_RUN; {:.1} us of handling per exit)",
        c.guest_ns_per_frame / 1e3,
        c.exit_handling_ns_per_frame / 1e3,
        c.guest_share * 100.0,
        c.exit_handling_ns_per_exit / 1e3
    )?;
    writeln!(
        out,
        "    per frame: {:.2} Process calls, {:.1} VM exits ({:.1} per call), {:.1} DDI calls, {:.2} nested guest calls",
        c.process_calls_per_frame, c.vm_exits_per_frame, c.vm_exits_per_process_call, c.ddi_calls_per_frame, c.nested_calls_per_frame
    )?;
    writeln!(
        out,
        "    the copy itself in the guest (KVM_RUN time against {} at {:.1} us/frame, {:.1} exits/frame): medians {:.1} us/frame (runs {}), {:.2} GB/s: {:.3} x the host routine ({}); fastest calls {:.1} us/frame, {:.2} GB/s: {:.3} x ({})",
        c.reference_case,
        c.reference_guest_ns_per_frame / 1e3,
        c.reference_vm_exits_per_frame,
        c.guest_copy_ns_per_frame / 1e3,
        range(&c.guest_copy_ns_per_frame_by_run.iter().map(|ns| ns / 1e3).collect::<Vec<_>>()),
        c.guest_copy_gbps,
        c.guest_copy_vs_host,
        estimate_verdict(c.guest_copy_vs_host),
        c.guest_copy_best_ns_per_frame / 1e3,
        c.guest_copy_best_gbps,
        c.guest_copy_best_vs_host,
        estimate_verdict(c.guest_copy_best_vs_host)
    )?;
    let ddis: Vec<String> = c.ddi_calls_per_frame_by_name.iter().map(|d| format!("{} {:.2}", d.ddi, d.per_frame)).collect();
    writeln!(out, "    DDI calls per frame inside Process: {}", if ddis.is_empty() { "none".to_owned() } else { ddis.join(", ") })?;
    writeln!(out, "  {:<14} {:>16} {:>16} {:>14} {:>22}", "mode", "cores ms/frame", "images ms/frame", "images/cores", "streaming only (ratio)")?;
    for w in &i.modes {
        writeln!(
            out,
            "  {:<14} {:>16.3} {:>16.3} {:>8.2} ({}) {:>9.3}/{:.3} ({:.2})",
            w.mode,
            w.cores_ms_per_frame,
            w.images_ms_per_frame,
            w.images_vs_cores,
            verdict(w.images_vs_cores <= GOAL_IMAGES_VS_CORES),
            w.cores_streaming_ms_per_frame,
            w.images_streaming_ms_per_frame,
            w.streaming_images_vs_cores
        )?;
    }
    writeln!(out, "  goal: images / cores <= {GOAL_IMAGES_VS_CORES:.1} (whole job, wall ms per frame)")
}

/// The verdict of an estimate of the copy's own time against the host's:
/// none when the difference it comes from was not positive (noise).
fn estimate_verdict(ratio: f64) -> &'static str {
    if ratio > 0.0 {
        verdict(ratio <= GOAL_IMAGE_VS_HOST)
    } else {
        "no estimate: the difference is noise"
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

fn write_setup(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    let m = &report.machine;
    let s = &report.settings;
    writeln!(out, "capdma copy benchmark{}, started {}", if s.quick { " (quick configuration: numbers not meaningful)" } else { "" }, report.started)?;
    let family = m.cpu_family_model.map(|(f, md)| format!(" (family {f}, model {md})")).unwrap_or_default();
    writeln!(out, "CPU: {}{family}, {} logical CPUs, AVX2: {}", m.cpu_model, m.logical_cpus, if m.avx2 { "yes" } else { "no" })?;
    writeln!(
        out,
        "LLC: {} (L{}, {}); rings {} each ({:.1} x LLC); {} run(s) of {} rounds, warm-up {}; non-temporal threshold {}, page lookahead {}",
        mib(m.llc_bytes),
        m.llc_level,
        m.llc_source,
        mib(s.ring_bytes),
        s.ring_over_llc,
        s.runs,
        s.samples,
        s.warmup,
        mib(s.non_temporal_threshold),
        s.page_lookahead
    )?;
    writeln!(out, "load average: start {}, end {}; THP: {}", s.load_average.0, s.load_average.1, m.transparent_hugepages.as_deref().unwrap_or("n/a"))?;
    writeln!(out, "slots and contiguous destinations: {}", s.source_memory)?;
    writeln!(out, "frame buffers (driver): {}", s.scattered_memory)?;
    if let Some(why) = &s.scattered_fallback {
        writeln!(out, "  (scattered mapping unavailable: {why})")?;
    }
    for (run, a) in s.physical_adjacency.iter().enumerate() {
        writeln!(
            out,
            "physically adjacent consecutive pages, run {}: slots {}, contiguous {}, frame buffers {}",
            run + 1,
            percent(a.source),
            percent(a.contiguous),
            percent(a.scattered)
        )?;
    }
    Ok(())
}

/// `a-b`: the range of `values` (`-` for fewer than two).
fn range(values: &[f64]) -> String {
    if values.len() < 2 {
        return "-".to_owned();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2}-{max:.2}")
}

fn write_cases(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    for c in &report.cases {
        writeln!(out)?;
        writeln!(
            out,
            "{} ({} B x {} lines, slot pitch {}, stride {}, {:.2} MB per frame, {})",
            c.name,
            c.line_bytes,
            c.lines,
            c.src_pitch,
            c.dst_stride,
            c.frame_bytes as f64 / 1e6,
            if c.streamed { "streamed" } else { "ordinary stores" }
        )?;
        writeln!(
            out,
            "  {:<28} {:<16} {:>8} {:>11} {:>7} {:>7} {:>9} {:>7} {:>7}  {:>7}",
            "method", "destination", "GB/s", "run range", "min", "max", "us/frame", "x limit", "x scat.", "checks"
        )?;
        for mr in &c.methods {
            writeln!(
                out,
                "  {:<28} {:<16} {:>8.2} {:>11} {:>7.2} {:>7.2} {:>9.1} {:>7.3} {:>7.3}  {:>7}",
                mr.method,
                mr.destination,
                mr.gbps_median,
                range(&mr.gbps_by_run),
                mr.gbps.min,
                mr.gbps.max,
                mr.ns_per_frame.median / 1e3,
                mr.gbps_median / c.limit.gbps.max(1e-12),
                mr.gbps_median / c.scattered_limit.gbps.max(1e-12),
                format!("{}/{}", mr.checks - mr.check_failures, mr.checks)
            )?;
        }
        writeln!(
            out,
            "  limit (best non-temporal, contiguous): {:.2} GB/s ({}); scattered limit (best into the scattered pages): {:.2} GB/s ({})",
            c.limit.gbps,
            c.limit.method_by_run.join(", "),
            c.scattered_limit.gbps,
            c.scattered_limit.method_by_run.join(", ")
        )?;
        let b = &c.driver_vs_limit_by_round;
        writeln!(
            out,
            "  driver / limit: {:.3} (runs {}; round by round: median {:.3}, p05-p95 {:.3}-{:.3}); driver / scattered limit: {:.3} (runs {})",
            c.driver_vs_limit,
            range(&c.driver_vs_limit_by_run),
            b.median,
            b.p05,
            b.p95,
            c.driver_vs_scattered_limit,
            range(&c.driver_vs_scattered_limit_by_run)
        )?;
    }
    Ok(())
}

fn write_core_share(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    writeln!(out)?;
    writeln!(out, "share of one core, driver path")?;
    writeln!(out, "  {:<32} {:>10} {:>10} {:>10}", "workload", "MB/s", "median", "p95")?;
    for cs in &report.core_share {
        writeln!(
            out,
            "  {:<32} {:>10.0} {:>9.2}% {:>9.2}%",
            cs.workload,
            cs.bytes_per_second / 1e6,
            cs.share_median * 100.0,
            cs.share_p95 * 100.0
        )?;
    }
    Ok(())
}

fn write_sg(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    writeln!(out)?;
    writeln!(out, "S/G programming: {}", report.sg.routine)?;
    writeln!(out, "  placement: {}", report.sg.placement)?;
    writeln!(
        out,
        "  {:<12} {:>9} {:>9} {:>20} {:>14} {:>11} {:>16} {:>17}",
        "frame", "bytes", "elements", "merged (model)", "merged (host)", "ns/element", "us/frame (all)", "us/frame (merged)"
    )?;
    for f in &report.sg.frames {
        writeln!(
            out,
            "  {:<12} {:>9} {:>9.0} {:>20} {:>14} {:>11.2} {:>16.2} {:>17.2}",
            f.frame,
            f.frame_bytes,
            f.elements_unmerged.mean,
            format!("{:.1} [{:.0}-{:.0}]", f.elements_merged.mean, f.elements_merged.min, f.elements_merged.max),
            f.elements_merged_host.map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
            f.ns_per_element.median,
            f.ns_per_frame_unmerged / 1e3,
            f.ns_per_frame_merged / 1e3
        )?;
    }
    Ok(())
}

fn write_stack(out: &mut String, report: &BenchReport) -> std::fmt::Result {
    writeln!(out)?;
    match &report.stack {
        None => writeln!(out, "whole stack (virtual time): not measured here")?,
        Some(st) => {
            writeln!(out, "whole stack (virtual time): {}", st.description)?;
            for mt in &st.modes {
                writeln!(
                    out,
                    "  {:<14} {:<12} {:>6} frames {:>4} dropped  {:>6.2} s virtual at {:>5.1} fps  {:>6.2} s wall: {:>7.1} frames/s (copy limit allows {:>6.0})",
                    mt.mode,
                    mt.format,
                    mt.frames,
                    mt.dropped,
                    mt.virtual_seconds,
                    mt.frames_per_second,
                    mt.wall_seconds,
                    mt.frames_per_wall_second,
                    mt.copy_limit_fps
                )?;
            }
        }
    }
    writeln!(out, "byte checks: {}; {:.1} s", if report.checks_passed { "all passed" } else { "FAILED" }, report.elapsed_seconds)
}
