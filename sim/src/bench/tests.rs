//! The quick configuration end to end: byte checks, the report's internal
//! consistency, both limits, several runs, every rendering, and the
//! product's own cost through the images (when they are built and KVM is
//! usable; in CI they must be). No test asserts a speed.
use super::*;

const IDS: [&str; 14] = [
    "ref_avx2",
    "ref_sse2",
    "ref_sse2_lookahead",
    "copy_from_slice",
    "driver_contiguous",
    "ref_avx2_scattered",
    "ref_sse2_scattered",
    "ref_sse2_lookahead_scattered",
    "driver",
    "driver_wide",
    "driver_no_lookahead",
    "driver_wide_no_lookahead",
    "driver_scalar",
    "driver_temporal",
];

fn method<'a>(case: &'a CopyCase, id: &str) -> &'a MethodResult {
    case.methods.iter().find(|m| m.method == id).unwrap_or_else(|| panic!("{id} missing"))
}

#[test]
fn quick_run_checks_bytes_and_reports_consistently() {
    let mut calls = Vec::new();
    let report = run_with_progress(&BenchOptions::quick(), &mut |done, total| calls.push((done, total))).expect("quick bench runs");
    assert!(report.checks_passed, "byte checks failed: {report:#?}");
    assert_eq!(report.cases.len(), 3);
    assert!(report.stack.is_none(), "the stack figures are the caller's");
    assert!(report.image.is_none() && report.image_unavailable.is_none(), "the image figures are the caller's");
    assert!(report.started.ends_with('Z') && report.started.len() == 20, "{}", report.started);
    let samples = report.settings.samples;
    assert_eq!(report.settings.runs, 1);
    assert_eq!(report.settings.physical_adjacency.len(), 1);
    // One step per warm-up and per round, counted up to the total.
    let total = (3 * (samples + 1)) as u64;
    assert_eq!(calls.len() as u64, total);
    assert!(calls.iter().enumerate().all(|(i, &(done, t))| done == i as u64 + 1 && t == total));
    for case in &report.cases {
        assert_eq!(case.frame_bytes, case.lines as usize * case.line_bytes as usize);
        assert_eq!(case.src_pitch % SLOT_LINE_ALIGNMENT, 0);
        assert!(case.src_pitch >= case.line_bytes && case.dst_stride == case.line_bytes);
        assert_eq!(case.methods.iter().map(|m| m.method.as_str()).collect::<Vec<_>>(), IDS);
        for m in &case.methods {
            // Warm-up check, rounds 0 and 8k, the last round.
            let expected = 1 + (0..samples).filter(|r| r % CHECK_EVERY == 0 || r + 1 == samples).count();
            assert_eq!((m.checks, m.check_failures), (expected, 0), "{} {}", case.name, m.method);
            assert_eq!(m.gbps.count, samples);
            assert!(m.gbps.min > 0.0 && m.gbps.min <= m.gbps.median && m.gbps.median <= m.gbps.max);
            // One run: the figure is that run's median.
            assert_eq!(m.gbps_by_run.len(), 1);
            assert!((m.gbps_median - m.gbps.median).abs() <= 1e-12 * m.gbps.median);
            // GB/s and ns per frame describe the same samples.
            let from_ns = case.frame_bytes as f64 / m.ns_per_frame.median;
            assert!((from_ns - m.gbps.median).abs() <= 1e-9 * from_ns, "odd sample count: same median sample");
            assert_eq!(m.non_temporal, !matches!(m.method.as_str(), "copy_from_slice" | "driver_temporal"));
        }
        let driver = method(case, "driver");
        // The limits are the best non-temporal method of each destination.
        for (limit, destination) in [(&case.limit, "contiguous"), (&case.scattered_limit, "scattered pages")] {
            let best = case.methods.iter().filter(|m| m.destination == destination && m.non_temporal).map(|m| m.gbps_median).fold(0.0, f64::max);
            assert!((limit.gbps - best).abs() < 1e-12, "{destination}");
            let winner = method(case, &limit.method_by_run[0]);
            assert_eq!(winner.destination, destination);
        }
        assert!((case.driver_vs_limit - driver.gbps_median / case.limit.gbps).abs() < 1e-12);
        assert!((case.driver_vs_scattered_limit - driver.gbps_median / case.scattered_limit.gbps).abs() < 1e-12);
        assert!(case.driver_vs_scattered_limit <= 1.0, "the driver is a candidate of its own limit");
        assert_eq!(case.driver_vs_limit_by_round.count, samples);
        assert_eq!(case.streamed, case.frame_bytes >= NON_TEMPORAL_THRESHOLD);
    }
    assert!(report.cases.iter().any(|c| c.streamed), "the quick run exercises the streamed path");
    assert_eq!(report.core_share.len(), 4);
    let one = &report.core_share[0];
    let four = &report.core_share[3];
    assert_eq!((one.streams, four.streams), (1, 4));
    assert!((four.share_median - 4.0 * one.share_median).abs() < 1e-9 * four.share_median.max(1.0));
    assert!(one.share_p95 >= one.share_median);
    let c0 = &report.cases[0];
    let expect = 60.0 * c0.frame_bytes as f64 / (method(c0, "driver").gbps_median * 1e9);
    assert!((one.share_median - expect).abs() < 1e-12);
    for f in &report.sg.frames {
        assert!(f.elements_merged.max <= f.elements_unmerged.min);
        assert!((f.elements_unmerged.min - f.frame_bytes.div_ceil(PAGE) as f64).abs() < 0.5);
        assert!(f.ns_per_element.median > 0.0);
    }
    let json = render_json(&report).unwrap();
    for field in ["\"driver_vs_limit\"", "\"driver_vs_scattered_limit\"", "\"stack\": null", "\"image\": null", "\"image_unavailable\": null"] {
        assert!(json.contains(field), "{field}");
    }
    let table = render_table(&report);
    assert!(table.contains("driver") && table.contains("96x16 YUY2") && table.contains("scattered limit"));
}

#[test]
fn runs_are_folded_into_medians_and_ranges() {
    let options = BenchOptions { runs: 3, samples: Some(3), ..BenchOptions::quick() };
    let report = run(&options).expect("quick bench runs");
    assert!(report.checks_passed);
    assert_eq!(report.settings.runs, 3);
    assert_eq!(report.settings.physical_adjacency.len(), 3);
    for case in &report.cases {
        for m in &case.methods {
            assert_eq!(m.gbps_by_run.len(), 3);
            assert_eq!(m.gbps.count, 9, "samples of all runs pooled");
            let mut sorted = m.gbps_by_run.clone();
            sorted.sort_by(f64::total_cmp);
            assert!((m.gbps_median - sorted[1]).abs() < 1e-12, "median of the three run medians");
        }
        assert_eq!(case.limit.gbps_by_run.len(), 3);
        assert_eq!(case.limit.method_by_run.len(), 3);
        for r in 0..3 {
            let best = case.methods.iter().filter(|m| m.destination == "contiguous" && m.non_temporal).map(|m| m.gbps_by_run[r]).fold(0.0, f64::max);
            assert!((case.limit.gbps_by_run[r] - best).abs() < 1e-12);
            let driver = method(case, "driver").gbps_by_run[r];
            assert!((case.driver_vs_limit_by_run[r] - driver / best).abs() < 1e-12);
        }
        let mut ratios = case.driver_vs_scattered_limit_by_run.clone();
        ratios.sort_by(f64::total_cmp);
        assert!((case.driver_vs_scattered_limit - ratios[1]).abs() < 1e-12);
        assert_eq!(case.driver_vs_limit_by_round.count, 9);
    }
    let markdown = render_markdown(&report);
    assert!(markdown.starts_with("`capdma-sim bench --runs 3 --markdown`"), "{markdown}");
    assert!(markdown.contains("| 96x16 YUY2 (0.00 MB) |") && markdown.contains("| `driver` | scattered pages |"), "{markdown}");
    for case in &report.cases {
        let verdict = if case.driver_vs_limit >= 0.90 { "met" } else { "missed by" };
        assert!(markdown.contains(&format!("* {}: vs limit {:.3}, {verdict}", case.name, case.driver_vs_limit)), "{markdown}");
    }
    assert!(markdown.contains("Share of one core on the driver's path") && markdown.contains("ns per element to program"), "{markdown}");
    let svg = render_svg(&report).expect("the plot renders");
    assert!(svg.starts_with("<svg") && svg.contains("130x24 NV12") && svg.contains("scattered limit"), "{svg}");
}

/// Asserts `a == b` up to rounding.
fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0), "{what}: {a} != {b}");
}

#[test]
fn a_missing_image_is_the_reason_and_the_renderings_say_so() {
    let missing = std::path::Path::new("/nonexistent/capdma_avstream.sys");
    let (bus, _) = default_images();
    let why = image_unavailable(&bus, missing).or_else(|| image_unavailable(missing, missing)).expect("a missing image is a reason");
    assert!(why.contains("not built") && why.contains("cargo xtask windows"), "{why}");
    let mut report = run(&BenchOptions { samples: Some(1), warmup: Some(1), ..BenchOptions::quick() }).expect("quick bench runs");
    report.image_unavailable = Some(why.clone());
    assert!(render_table(&report).contains(&format!("not measured: {why}")));
    assert!(render_markdown(&report).contains(&format!("not measured: {why}.")));
    assert!(render_json(&report).unwrap().contains("\"image_unavailable\": \""));
}

#[test]
fn a_copy_estimate_from_noise_gets_no_verdict() {
    let mut report = run(&BenchOptions { samples: Some(1), warmup: Some(1), ..BenchOptions::quick() }).expect("quick bench runs");
    let copy = ImageCopy { guest_copy_vs_host: -0.2, guest_copy_best_vs_host: 0.5, ..ImageCopy::default() };
    report.image = Some(ImageCost { copy, modes: vec![ImageWall { mode: "CommonBuffer".into(), images_vs_cores: 2.5, ..ImageWall::default() }], ..ImageCost::default() });
    let table = render_table(&report);
    assert!(table.contains("-0.200 x the host routine (no estimate: the difference is noise)") && table.contains("0.500 x (met)"), "{table}");
    assert!(table.contains("2.50 (missed)"), "{table}");
    let markdown = render_markdown(&report);
    assert!(markdown.contains("-0.200, no estimate: the difference is noise") && markdown.contains("0.500, met"), "{markdown}");
    assert!(markdown.contains("2.50, missed by 0.50"), "{markdown}");
}

#[test]
fn the_images_cost_is_measured_and_consistent() {
    let (bus, avstream) = default_images();
    if let Some(why) = image_unavailable(&bus, &avstream) {
        assert!(std::env::var_os("CI").is_none(), "CI must run this test, but: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let mut report = run(&BenchOptions { samples: Some(3), ..BenchOptions::quick() }).expect("quick bench runs");
    let frames = 6;
    let cost = measure_image(&report, &bus, &avstream, frames).expect("the images stream");
    assert_eq!((cost.runs, cost.frames), (1, frames));
    let c = &cost.copy;
    let case = report.cases.iter().find(|k| k.name == c.case).expect("the copy's case is a bench case");
    assert_eq!((c.frame_bytes, case.width, case.height), (case.frame_bytes, 640, 240));
    close(c.host_ns_per_frame, case.frame_bytes as f64 / method(case, "driver").gbps_median, "host ns per frame");
    // One run of `frames` frames, every one copied by the image's Process.
    assert_eq!(c.frames_by_run, [u64::from(frames)]);
    assert!(c.process_calls_by_run[0] >= u64::from(frames) / 2 && c.process_wall_ns_by_run[0] > 0);
    close(c.image_mean_ns_per_frame, c.process_wall_ns_by_run[0] as f64 / f64::from(frames), "mean per frame = total / frames");
    close(c.image_ns_per_frame, c.image_ns_per_frame_by_run[0], "one run: its median");
    close(c.image_vs_host, c.image_ns_per_frame / c.host_ns_per_frame, "image / host");
    close(c.process_calls_per_frame, c.process_calls_by_run[0] as f64 / f64::from(frames), "calls per frame");
    close(c.vm_exits_per_process_call * c.process_calls_per_frame, c.vm_exits_per_frame, "exits per call x calls = exits per frame");
    // Each call returns to the host (an exit) and calls KS to find and advance its frame.
    assert!(c.vm_exits_per_process_call >= 1.0 && c.vm_exits_per_frame > c.ddi_calls_per_frame);
    close(c.ddi_calls_per_frame_by_name.iter().map(|d| d.per_frame).sum(), c.ddi_calls_per_frame, "the DDIs by name add up");
    for ddi in ["KsPinGetLeadingEdgeStreamPointer", "KsStreamPointerAdvanceOffsetsAndUnlock"] {
        assert!(c.ddi_calls_per_frame_by_name.iter().any(|d| d.ddi == ddi && d.per_frame >= 1.0), "{ddi}: {:?}", c.ddi_calls_per_frame_by_name);
    }
    assert!(c.ddi_calls_per_frame_by_name.windows(2).all(|w| w[0].per_frame >= w[1].per_frame), "most called first");
    assert!(c.guest_share > 0.0 && c.guest_share <= 1.0 && c.exit_handling_ns_per_exit > 0.0);
    assert!(c.image_ns_per_frame > 0.0 && c.guest_ns_per_frame > 0.0 && c.exit_handling_ns_per_frame > 0.0);
    assert!(c.guest_ns_per_frame <= c.image_ns_per_frame, "KVM_RUN time is part of each call's");
    assert_eq!((c.reference_case.as_str(), c.reference_frame_bytes), ("576x240 YUY2", 576 * 2 * 240));
    assert!(c.reference_frame_bytes >= NON_TEMPORAL_THRESHOLD, "the reference frame is streamed too");
    assert!(c.reference_guest_ns_per_frame > 0.0 && c.reference_vm_exits_per_frame >= 1.0);
    // The copy's own time is a difference of two noisy figures: it exists.
    assert_eq!(c.guest_copy_ns_per_frame_by_run.len(), 1);
    assert!(c.guest_copy_ns_per_frame.is_finite() && c.guest_copy_best_ns_per_frame.is_finite());
    close(c.guest_copy_vs_host, c.guest_copy_ns_per_frame / c.host_ns_per_frame, "guest copy / host");
    close(c.guest_copy_gbps * c.guest_copy_ns_per_frame, c.frame_bytes as f64, "GB/s x ns = bytes");
    assert_eq!(cost.modes.iter().map(|w| w.mode.as_str()).collect::<Vec<_>>(), ["ScatterGather", "CommonBuffer"]);
    for w in &cost.modes {
        assert!(w.cores_ms_per_frame > 0.0 && w.images_ms_per_frame > 0.0, "{w:?}");
        assert!(w.cores_streaming_ms_per_frame > 0.0 && w.images_streaming_ms_per_frame > 0.0, "{w:?}");
        assert!(w.cores_streaming_ms_per_frame <= w.cores_ms_per_frame && w.images_streaming_ms_per_frame <= w.images_ms_per_frame);
        close(w.images_vs_cores, w.images_ms_per_frame / w.cores_ms_per_frame, "images / cores");
        close(w.streaming_images_vs_cores, w.images_streaming_ms_per_frame / w.cores_streaming_ms_per_frame, "streaming images / cores");
    }
    report.image = Some(cost);
    let table = render_table(&report);
    assert!(table.contains("the AVStream image's Process, 640x240 YUY2") && table.contains("DDI calls per frame inside Process"), "{table}");
    let markdown = render_markdown(&report);
    assert!(markdown.contains("* The AVStream image's `Process`, 640x240 YUY2") && markdown.contains("* CommonBuffer: the whole job"), "{markdown}");
    let json = render_json(&report).unwrap();
    assert!(json.contains("\"image_vs_host\"") && json.contains("\"images_vs_cores\"") && json.contains("\"guest_copy_ns_per_frame\""));
}
