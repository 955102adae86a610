//! The product's own cost: the real images in the emulated kernel against
//! the portable cores and the host routine.
//!
//! [`measure_image`] runs the main job (the simulated machine streaming
//! 1080p60 YUY2; [`MachineConfig::default`]) in both DMA modes — the S/G
//! board in scatter-gather mode, the legacy board in common-buffer mode —
//! once with `--drivers cores` and once with `--drivers images`
//! (`capdma_avstream.sys` over `capdma_bus.sys` in the emulated Windows
//! kernel on KVM), per bench run, and reports:
//!
//! * **the image's `Process`**: from the common-buffer runs through the
//!   images, the host wall time spent inside the AVStream image's `Process`
//!   calls (the emulated `ks.sys` times each one:
//!   [`KsCounters::process_wall_ns`]) per frame, next to the host routine's
//!   time for the same frame ([`BenchReport`]'s `driver` method: the same
//!   `copy_frame` code, `frame_nt_sse2`, that the image runs with
//!   `VectorUnit::Sse2`). The figure includes everything `Process` does
//!   besides the copy: taking the slot from its FIFO, the stream pointer
//!   DDIs, the spin locks' IRQL changes, its ETW event, completing the
//!   frame, `ReturnSlot` into the bus image, and every VM exit on the way
//!   (its DDI calls and what the host does at each exit). It is split into
//!   the time inside `KVM_RUN` (the guest's own code and the world
//!   switches) and the host's handling of the exits, and the exits and DDI
//!   calls per frame are given by name;
//! * **the image's copy itself**: a second common-buffer stream through
//!   the images with a smaller streamed frame (640x240 YUY2; 576x240 in the
//!   quick configuration) makes as many exits per frame (both counts are
//!   reported), so the
//!   difference of the two frames' time inside `KVM_RUN`, over the
//!   difference of their bytes, is what the copy costs per byte running
//!   natively in the VM; times the frame's bytes, it is set against the host
//!   routine too, from the medians and from each stream's fastest call;
//! * **the wall time per frame of the whole job** (boot, start, streaming,
//!   teardown and unload; every frame verified) of each mode with the
//!   images next to the cores, and of the streaming phase alone
//!   ([`Machine::run`]).
//!
//! Per run, the `Process` figures are medians over the calls that completed
//! frames (per frame completed); the wall figures are whole-job totals over
//! the frames delivered. The report gives medians over the runs; each run's
//! ratio is taken between its own two runs (cores and images run back to
//! back, in alternating order). The data are not cold as in the copy
//! benchmark: the board model has just written the slot, and the
//! application's four frame buffers were verified by the host a few frames
//! before.
//!
//! [`KsCounters::process_wall_ns`]: crate::nt::ks::KsCounters::process_wall_ns
use std::path::{Path, PathBuf};
use std::time::Instant;

use capdma_bus::config::DmaModeOverride;
use capdma_interface::format::PixelFormat;
use serde::Serialize;

use super::{median, ratio, BenchReport};
use crate::board::BoardKind;
use crate::machine::{Drivers, Machine, MachineConfig, RunHooks, RunReport};
use crate::nt::ks::ProcessSample;

/// Goal: the image's `Process` copy per frame at most this multiple of the
/// host routine's (within 5 %).
pub const GOAL_IMAGE_VS_HOST: f64 = 1.05;
/// Goal: the whole job through the images at most this multiple of its
/// wall time through the cores.
pub const GOAL_IMAGES_VS_CORES: f64 = 2.0;

/// The product's own cost (see [`BenchReport::image`]). Goals:
/// [`GOAL_IMAGE_VS_HOST`], [`GOAL_IMAGES_VS_CORES`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageCost {
    /// What ran, in one line.
    pub description: String,
    /// The bus image (path).
    pub bus_image: String,
    /// The AVStream image (path).
    pub avstream_image: String,
    /// Runs (each: both modes, cores and images).
    pub runs: usize,
    /// Frames each run streams per mode.
    pub frames: u32,
    /// The AVStream image's `Process` copy against the host routine.
    pub copy: ImageCopy,
    /// Wall time per frame of the main job, per DMA mode.
    pub modes: Vec<ImageWall>,
}

/// The AVStream image's `Process` calls in the common-buffer runs, per
/// frame, next to the host routine (see the module documentation for what
/// the time includes).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageCopy {
    /// The frame (`"1080p YUY2"`): the bench case the host figure is from.
    pub case: String,
    /// Bytes copied per frame (`lines × line_bytes`).
    pub frame_bytes: usize,
    /// Per run: frames the image delivered (all verified).
    pub frames_by_run: Vec<u64>,
    /// Per run: `Process` calls.
    pub process_calls_by_run: Vec<u64>,
    /// Per run: host wall nanoseconds inside all the `Process` calls.
    pub process_wall_ns_by_run: Vec<u64>,
    /// Per run: the median, over the `Process` calls that completed frames,
    /// of the call's wall nanoseconds per frame it completed.
    pub image_ns_per_frame_by_run: Vec<f64>,
    /// Median over runs of `image_ns_per_frame_by_run`: the figure set
    /// against the host routine.
    pub image_ns_per_frame: f64,
    /// All runs: wall nanoseconds inside every `Process` call over the
    /// frames delivered (the mean: calls that completed no frame and the
    /// slow tail included).
    pub image_mean_ns_per_frame: f64,
    /// Per run: the median, over the calls that completed frames, of the
    /// nanoseconds inside `KVM_RUN` (the guest's code and the world
    /// switches) per frame; median over runs.
    pub guest_ns_per_frame: f64,
    /// The same for the rest (the host handling the VM exits).
    pub exit_handling_ns_per_frame: f64,
    /// All runs: the share of the `Process` time inside `KVM_RUN`.
    pub guest_share: f64,
    /// All runs: host time outside `KVM_RUN` per VM exit, nanoseconds.
    pub exit_handling_ns_per_exit: f64,
    /// `Process` calls per frame (all runs).
    pub process_calls_per_frame: f64,
    /// VM exits inside the `Process` calls per frame (all runs; each
    /// call's return to the host included).
    pub vm_exits_per_frame: f64,
    /// VM exits per `Process` call (all runs).
    pub vm_exits_per_process_call: f64,
    /// DDI calls made inside the `Process` calls per frame (all runs).
    pub ddi_calls_per_frame: f64,
    /// The same by DDI, most called first.
    pub ddi_calls_per_frame_by_name: Vec<DdiRate>,
    /// Host → guest calls nested in the `Process` calls (ISRs, DPCs,
    /// callbacks delivered at their exits) per frame (all runs).
    pub nested_calls_per_frame: f64,
    /// The host routine (`driver` method: `copy_frame` into scattered
    /// pages, cold rings): `frame_bytes` over its median GB/s, in ns.
    pub host_ns_per_frame: f64,
    /// `image_ns_per_frame / host_ns_per_frame`.
    pub image_vs_host: f64,
    /// The smaller frame of the second stream (`"640x240 YUY2"`).
    pub reference_case: String,
    /// Its bytes per frame.
    pub reference_frame_bytes: usize,
    /// Median over runs of its `guest_ns_per_frame`.
    pub reference_guest_ns_per_frame: f64,
    /// Its VM exits inside `Process` per frame (all runs): the same as
    /// `vm_exits_per_frame` when the two frames took the same path.
    pub reference_vm_exits_per_frame: f64,
    /// Per run: the copy's own time per frame in the guest,
    /// `(guest - reference guest) × frame_bytes / (frame_bytes -
    /// reference_frame_bytes)`, in ns (noise can make it wrong, even
    /// negative, when the two frames are close: the quick configuration).
    pub guest_copy_ns_per_frame_by_run: Vec<f64>,
    /// Median over runs of `guest_copy_ns_per_frame_by_run`.
    pub guest_copy_ns_per_frame: f64,
    /// `frame_bytes / guest_copy_ns_per_frame`: GB/s of the copy in the guest.
    pub guest_copy_gbps: f64,
    /// `guest_copy_ns_per_frame / host_ns_per_frame`.
    pub guest_copy_vs_host: f64,
    /// The same difference taken between each stream's fastest call (per
    /// frame) instead of the medians: on a busy machine many calls lose the
    /// processor inside `KVM_RUN`, the fastest is one that did not. Median
    /// over runs, ns per frame.
    pub guest_copy_best_ns_per_frame: f64,
    /// `frame_bytes / guest_copy_best_ns_per_frame`.
    pub guest_copy_best_gbps: f64,
    /// `guest_copy_best_ns_per_frame / host_ns_per_frame`.
    pub guest_copy_best_vs_host: f64,
}

/// Calls of one DDI per frame.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DdiRate {
    /// The DDI (`memcpy`, `KsPinGetLeadingEdgeStreamPointer`, ...).
    pub ddi: String,
    /// Calls per frame delivered.
    pub per_frame: f64,
}

/// One DMA mode's main job through the cores and through the images.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageWall {
    /// `"ScatterGather"` (S/G board) or `"CommonBuffer"` (legacy board).
    pub mode: String,
    /// Per run: wall milliseconds per frame of the whole job, cores.
    pub cores_ms_per_frame_by_run: Vec<f64>,
    /// Per run: the same through the images.
    pub images_ms_per_frame_by_run: Vec<f64>,
    /// Median over runs, cores (ms per frame).
    pub cores_ms_per_frame: f64,
    /// Median over runs, images (ms per frame).
    pub images_ms_per_frame: f64,
    /// Per run: `images / cores`.
    pub images_vs_cores_by_run: Vec<f64>,
    /// Median over runs of `images_vs_cores_by_run`.
    pub images_vs_cores: f64,
    /// Median over runs: wall ms per frame of the streaming phase alone
    /// ([`Machine::run`]), cores.
    pub cores_streaming_ms_per_frame: f64,
    /// The same through the images.
    pub images_streaming_ms_per_frame: f64,
    /// Median over runs of each run's streaming `images / cores`.
    pub streaming_images_vs_cores: f64,
}

/// Why the images cannot run here (`None`: they can): the image files
/// missing (built by `cargo xtask windows`) or `/dev/kvm` not usable.
#[must_use]
pub fn image_unavailable(bus: &Path, avstream: &Path) -> Option<String> {
    for (what, path) in [("bus", bus), ("AVStream", avstream)] {
        if !path.is_file() {
            return Some(format!("the {what} image {} is not built (`cargo xtask windows`)", path.display()));
        }
    }
    capdma_winvm::kvm_available().err().map(|e| format!("KVM is not usable ({e})"))
}

/// The default images: `target/windows/release/capdma_{bus,avstream}.sys`
/// of this workspace.
#[must_use]
pub fn default_images() -> (PathBuf, PathBuf) {
    (crate::machine::image::default_image_path(), crate::machine::image::default_avstream_image_path())
}

/// What one run of the machine gave.
struct Timed {
    frames: u64,
    whole_s: f64,
    streaming_s: f64,
    report: RunReport,
    /// The AVStream image's `Process` calls (images only).
    samples: Vec<ProcessSample>,
    /// Their DDI calls by name (images only).
    by_ddi: Vec<(&'static str, u64)>,
}

/// Runs `config` as [`crate::machine::run`] does, timing the whole job and
/// the streaming phase.
fn timed_run(config: MachineConfig, what: &str) -> Result<Timed, String> {
    let started = Instant::now();
    let mut machine = Machine::new(config).map_err(|e| format!("{what}: {e}"))?;
    if let Err(e) = machine.start() {
        machine.teardown();
        return Err(format!("{what}: {e}"));
    }
    let streaming = Instant::now();
    machine.run(&mut RunHooks::default());
    let streaming_s = streaming.elapsed().as_secs_f64();
    machine.teardown();
    let report = machine.report();
    let (samples, by_ddi) = (machine.image_process_samples().to_vec(), machine.image_process_calls_by_ddi());
    let whole_s = started.elapsed().as_secs_f64();
    if !report.passed() {
        return Err(format!("{what} failed its checks: {}", report.summary()));
    }
    let frames = report.channels.iter().map(|c| c.frames_delivered).sum();
    Ok(Timed { frames, whole_s, streaming_s, report, samples, by_ddi })
}

/// Milliseconds per frame.
fn ms_per_frame(seconds: f64, frames: u64) -> f64 {
    seconds * 1e3 / ratio(frames, 1).max(1.0)
}

/// Measures the product's own cost with the images at `bus` and
/// `avstream` (check [`image_unavailable`] first): `report.settings.runs`
/// runs of `frames` frames per mode, each mode through the cores and the
/// images, and a common-buffer stream of the reference frame through the
/// images; the frame is 1080p YUY2, or 640x240 YUY2 in the quick
/// configuration (the quick cases' largest). The host figure is `report`'s
/// `driver` method on the same frame.
///
/// # Errors
/// A one-line reason when a run cannot be made, fails its checks (a
/// figure of a run that corrupted frames means nothing), or `report` has
/// no case of the frame.
pub fn measure_image(report: &BenchReport, bus: &Path, avstream: &Path, frames: u32) -> Result<ImageCost, String> {
    let quick = report.settings.quick;
    let (width, height) = if quick { (640, 240) } else { (1920, 1080) };
    // Streamed (at least NON_TEMPORAL_THRESHOLD bytes), so the copy takes
    // the same path and Process makes the same exits.
    let (ref_width, ref_height) = if quick { (576, 240) } else { (640, 240) };
    let case = report
        .cases
        .iter()
        .find(|c| c.format == PixelFormat::Yuy2.name() && c.width == width && c.height == height)
        .ok_or_else(|| format!("the bench has no {width}x{height} YUY2 case"))?;
    let driver = case.methods.iter().find(|m| m.method == "driver").ok_or("the bench has no driver method")?;
    let runs = report.settings.runs.max(1);
    let images = Drivers::Images { bus: bus.to_path_buf(), avstream: avstream.to_path_buf(), map_register_limit: None };
    let plan = [
        (BoardKind::ScatterGather, DmaModeOverride::ScatterGather, "ScatterGather"),
        (BoardKind::Legacy, DmaModeOverride::CommonBuffer, "CommonBuffer"),
    ];
    let config = |board, mode, (width, height): (u32, u32), drivers| MachineConfig { board, mode, width, height, frames, drivers, ..MachineConfig::default() };
    // Per mode, per run: (cores, images); per run: the reference stream.
    let mut measured: Vec<Vec<(Timed, Timed)>> = plan.iter().map(|_| Vec::with_capacity(runs)).collect();
    let mut reference = Vec::with_capacity(runs);
    for run in 0..runs {
        for ((board, mode, name), out) in plan.iter().zip(&mut measured) {
            let cores = || timed_run(config(*board, *mode, (width, height), Drivers::Cores), &format!("{name} through the cores"));
            let through_images = || timed_run(config(*board, *mode, (width, height), images.clone()), &format!("{name} through the images"));
            // Alternate which goes first, so neither always runs on a
            // machine the other just warmed (or loaded).
            let pair = if run % 2 == 0 {
                let c = cores()?;
                (c, through_images()?)
            } else {
                let i = through_images()?;
                (cores()?, i)
            };
            out.push(pair);
        }
        let small = config(BoardKind::Legacy, DmaModeOverride::CommonBuffer, (ref_width, ref_height), images.clone());
        reference.push(timed_run(small, &format!("CommonBuffer {ref_width}x{ref_height} through the images"))?);
    }
    let modes = plan.iter().zip(&measured).map(|((_, _, name), runs)| wall_of(name, runs)).collect();
    let host_ns_per_frame = case.frame_bytes as f64 / driver.gbps_median.max(1e-12);
    let mut copy = copy_of(&case.name, case.frame_bytes, &measured[1], host_ns_per_frame)?;
    let reference_bytes = PixelFormat::Yuy2.line_bytes(ref_width).unwrap_or(0) as usize * PixelFormat::Yuy2.lines(ref_height).unwrap_or(0) as usize;
    add_reference(&mut copy, &format!("{ref_width}x{ref_height} YUY2"), reference_bytes, &measured[1], &reference);
    Ok(ImageCost {
        description: format!(
            "{runs} run(s) of {frames} frames of {width}x{height} YUY2 at 60 fps per mode, every frame verified, through the cores and through the images (capdma_avstream.sys over capdma_bus.sys in the emulated kernel on KVM), and {frames} frames of {ref_width}x{ref_height} YUY2 through the images; the image's Process time from the common-buffer runs, against the host routine on {}",
            case.name
        ),
        bus_image: bus.display().to_string(),
        avstream_image: avstream.display().to_string(),
        runs,
        frames,
        copy,
        modes,
    })
}

fn wall_of(mode: &str, runs: &[(Timed, Timed)]) -> ImageWall {
    let per = |t: &Timed, streaming: bool| ms_per_frame(if streaming { t.streaming_s } else { t.whole_s }, t.frames);
    let cores: Vec<f64> = runs.iter().map(|(c, _)| per(c, false)).collect();
    let images: Vec<f64> = runs.iter().map(|(_, i)| per(i, false)).collect();
    let by_run: Vec<f64> = cores.iter().zip(&images).map(|(c, i)| i / c.max(1e-12)).collect();
    let streaming_cores: Vec<f64> = runs.iter().map(|(c, _)| per(c, true)).collect();
    let streaming_images: Vec<f64> = runs.iter().map(|(_, i)| per(i, true)).collect();
    let streaming_by_run: Vec<f64> = streaming_cores.iter().zip(&streaming_images).map(|(c, i)| i / c.max(1e-12)).collect();
    ImageWall {
        mode: mode.to_owned(),
        cores_ms_per_frame: median(&cores),
        images_ms_per_frame: median(&images),
        images_vs_cores: median(&by_run),
        cores_ms_per_frame_by_run: cores,
        images_ms_per_frame_by_run: images,
        images_vs_cores_by_run: by_run,
        cores_streaming_ms_per_frame: median(&streaming_cores),
        images_streaming_ms_per_frame: median(&streaming_images),
        streaming_images_vs_cores: median(&streaming_by_run),
    }
}

/// `f(call)` per frame completed, for each call that completed frames.
fn per_frame(samples: &[ProcessSample], f: impl Fn(&ProcessSample) -> u64) -> Vec<f64> {
    samples.iter().filter(|c| c.frames_completed > 0).map(|c| ratio(f(c), c.frames_completed)).collect()
}

/// The median over the calls that completed frames of `f(call)` per frame
/// completed (0 for none).
fn per_frame_median(samples: &[ProcessSample], f: impl Fn(&ProcessSample) -> u64) -> f64 {
    median(&per_frame(samples, f))
}

/// The least over the calls that completed frames of `f(call)` per frame
/// completed (0 for none).
fn per_frame_min(samples: &[ProcessSample], f: impl Fn(&ProcessSample) -> u64) -> f64 {
    let values = per_frame(samples, f);
    if values.is_empty() {
        0.0
    } else {
        values.into_iter().fold(f64::INFINITY, f64::min)
    }
}

/// The copy's own time in the guest from the reference stream (see
/// [`ImageCopy::guest_copy_ns_per_frame`]).
fn add_reference(copy: &mut ImageCopy, case: &str, bytes: usize, main: &[(Timed, Timed)], reference: &[Timed]) {
    let extra_bytes = copy.frame_bytes.saturating_sub(bytes).max(1) as f64;
    let scale = copy.frame_bytes as f64 / extra_bytes;
    let guest = |t: &Timed| per_frame_median(&t.samples, |c| c.guest_ns);
    let best = |t: &Timed| per_frame_min(&t.samples, |c| c.guest_ns);
    copy.guest_copy_ns_per_frame_by_run = main.iter().zip(reference).map(|((_, m), r)| (guest(m) - guest(r)) * scale).collect();
    copy.guest_copy_ns_per_frame = median(&copy.guest_copy_ns_per_frame_by_run);
    copy.guest_copy_gbps = copy.frame_bytes as f64 / copy.guest_copy_ns_per_frame;
    copy.guest_copy_vs_host = copy.guest_copy_ns_per_frame / copy.host_ns_per_frame.max(1e-12);
    let best_by_run: Vec<f64> = main.iter().zip(reference).map(|((_, m), r)| (best(m) - best(r)) * scale).collect();
    copy.guest_copy_best_ns_per_frame = median(&best_by_run);
    copy.guest_copy_best_gbps = copy.frame_bytes as f64 / copy.guest_copy_best_ns_per_frame;
    copy.guest_copy_best_vs_host = copy.guest_copy_best_ns_per_frame / copy.host_ns_per_frame.max(1e-12);
    case.clone_into(&mut copy.reference_case);
    copy.reference_frame_bytes = bytes;
    copy.reference_guest_ns_per_frame = median(&reference.iter().map(guest).collect::<Vec<_>>());
    let exits: u64 = reference.iter().filter_map(|t| t.report.image.as_ref().and_then(|i| i.ks)).map(|ks| ks.process_vm_exits).sum();
    copy.reference_vm_exits_per_frame = ratio(exits, reference.iter().map(|t| t.frames).sum());
}

fn copy_of(case: &str, frame_bytes: usize, runs: &[(Timed, Timed)], host_ns_per_frame: f64) -> Result<ImageCopy, String> {
    let mut out = ImageCopy { case: case.to_owned(), frame_bytes, host_ns_per_frame, ..ImageCopy::default() };
    let (mut wall, mut guest, mut exits, mut ddi, mut nested) = (0, 0, 0, 0, 0);
    let (mut guest_by_run, mut handling_by_run) = (Vec::new(), Vec::new());
    let mut by_ddi: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (_, images) in runs {
        let ks = images.report.image.as_ref().and_then(|i| i.ks).ok_or("the images' run has no emulated ks.sys counts")?;
        if images.frames == 0 || ks.process_frames_completed == 0 {
            return Err("the images' common-buffer run completed no frame in Process".into());
        }
        out.frames_by_run.push(images.frames);
        out.process_calls_by_run.push(ks.process_calls);
        out.process_wall_ns_by_run.push(ks.process_wall_ns);
        out.image_ns_per_frame_by_run.push(per_frame_median(&images.samples, |c| c.wall_ns));
        guest_by_run.push(per_frame_median(&images.samples, |c| c.guest_ns));
        handling_by_run.push(per_frame_median(&images.samples, |c| c.wall_ns.saturating_sub(c.guest_ns)));
        wall += ks.process_wall_ns;
        guest += ks.process_guest_ns;
        exits += ks.process_vm_exits;
        ddi += ks.process_ddi_calls;
        nested += ks.process_nested_calls;
        for (name, calls) in &images.by_ddi {
            *by_ddi.entry(name).or_default() += calls;
        }
    }
    let frames: u64 = out.frames_by_run.iter().sum();
    let calls: u64 = out.process_calls_by_run.iter().sum();
    out.image_ns_per_frame = median(&out.image_ns_per_frame_by_run);
    out.image_mean_ns_per_frame = ratio(wall, frames);
    out.guest_ns_per_frame = median(&guest_by_run);
    out.exit_handling_ns_per_frame = median(&handling_by_run);
    out.guest_share = ratio(guest, wall);
    out.exit_handling_ns_per_exit = ratio(wall.saturating_sub(guest), exits);
    out.process_calls_per_frame = ratio(calls, frames);
    out.vm_exits_per_frame = ratio(exits, frames);
    out.vm_exits_per_process_call = ratio(exits, calls);
    out.ddi_calls_per_frame = ratio(ddi, frames);
    let mut rates: Vec<DdiRate> = by_ddi.into_iter().map(|(name, calls)| DdiRate { ddi: name.to_owned(), per_frame: ratio(calls, frames) }).collect();
    rates.sort_by(|a, b| b.per_frame.total_cmp(&a.per_frame).then_with(|| a.ddi.cmp(&b.ddi)));
    out.ddi_calls_per_frame_by_name = rates;
    out.nested_calls_per_frame = ratio(nested, frames);
    out.image_vs_host = out.image_ns_per_frame / host_ns_per_frame.max(1e-12);
    Ok(out)
}
