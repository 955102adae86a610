//! `capdma-sim bench`: how fast the common-buffer copy is on this machine,
//! against what the machine allows, and what S/G programming costs.
//!
//! [`run`] measures, in one process, [`BenchOptions::runs`] times over:
//!
//! * **copy methods**, for 1080p YUY2, 1080p NV12 and 2160p YUY2 frames
//!   (slot line pitch = line bytes rounded up to 256, frame stride = line
//!   bytes, as in common-buffer mode), each into one of two destinations:
//!   a **contiguous** ring (one linear mapping of a page pool) and a ring of
//!   **scattered 4 KiB pages**, the driver's frame buffers (see `region`
//!   for how that is modelled and why):
//!   * `ref_avx2`, `ref_sse2`, `ref_sse2_lookahead`: reference
//!     non-temporal copies of the frame's bytes as one run (32-byte AVX2
//!     stores, 16-byte SSE2 stores, and SSE2 with a page lookahead of their
//!     own; `kernels`), into each destination;
//!   * `copy_from_slice`: the naive stride-aware copy, line by line;
//!   * `driver`: the driver's path, `copy_frame` with the best
//!     [`VectorUnit`] and its default tuning, into the scattered pages;
//!     `driver_contiguous`: the same call into the contiguous ring;
//!   * `driver_wide`, `driver_no_lookahead`, `driver_wide_no_lookahead`,
//!     `driver_scalar`, `driver_temporal`: the same routine with 32-byte
//!     AVX2 stores, without the page lookahead, with neither, with
//!     general-purpose registers only, and with ordinary stores — to show
//!     what each choice is worth;
//! * **two limits per run and frame size**: the best median of the
//!   non-temporal methods into the contiguous ring (`limit`, the machine's
//!   copy limit) and the best into the scattered pages (`scattered_limit`,
//!   the best anything achieved into the driver's kind of destination); the
//!   driver's path is reported against both;
//! * **cold data**: slots and frames rotate through rings of at least
//!   [`BenchOptions::ring_factor`] × the last-level cache (read from sysfs),
//!   so every copy reads and writes memory that is not in any cache; each
//!   run builds its rings anew (a new physical placement);
//! * **fairness**: the methods run round-robin, one copy each per round, in
//!   an order shuffled every round (seeded). A mere rotation would keep each
//!   method behind the same predecessor every round, and a method behind
//!   one that used ordinary stores pays for writing back the megabytes of
//!   dirty lines that one left in the cache (measured: 10-15 %). Each
//!   method first gets an untimed warm-up burst;
//! * **correctness**: every method's output is byte-checked (the warm-up's
//!   last frame, every eighth round and the last), padding and the guard
//!   after the frame included;
//! * the **share of one core** that 1080p60, 2160p60 and 4 × 1080p60 cost on
//!   the driver's path;
//! * the **S/G programming cost** (see `sg`), once.
//!
//! Figures over runs: each run gives a median per method; the report's
//! figure is the median of those, with their range. The whole-stack
//! throughput in virtual time needs the simulated machine:
//! [`BenchReport::stack`] is left `None` for the caller to fill
//! ([`measure_stack`]), and so is [`BenchReport::image`], the product's own
//! cost: the AVStream image's `Process` copy in the emulated kernel and the
//! main job through the images against the cores ([`measure_image`]).
#![allow(clippy::cast_precision_loss, reason = "benchmark figures: counts far below 2^53 converted to f64")]

mod image;
mod kernels;
mod machine;
mod markdown;
mod placement;
mod plot;
mod region;
mod sg;
mod stats;
mod stack;
mod table;

pub use image::{default_images, image_unavailable, measure_image, DdiRate, ImageCopy, ImageCost, ImageWall, GOAL_IMAGES_VS_CORES, GOAL_IMAGE_VS_HOST};
pub use machine::MachineInfo;
pub use markdown::render_markdown;
pub use plot::render_svg;
pub use sg::{SgCost, SgFrameCost};
pub use stats::Summary;
pub use stack::measure_stack;
pub use table::render_table;

use capdma_avstream::copy::{copy_frame_tuned, effective_unit, CopyGeometry, CopyTuning, VectorUnit, NON_TEMPORAL_THRESHOLD, PAGE_LOOKAHEAD};

use capdma_interface::format::PixelFormat;
use placement::PAGE;
use region::Region;
use serde::Serialize;
use std::time::Instant;

/// `copy_frame`'s own tuning.
const DEFAULT_TUNING: CopyTuning = CopyTuning::DEFAULT;
/// Byte the destination rings are filled with: anything a copy did not
/// write must still read as this.
const POISON: u8 = 0xA5;
/// A timed round whose index is a multiple of this is byte-checked.
const CHECK_EVERY: usize = 8;
/// Slot line alignment of the board in common-buffer mode (the contract's).
use capdma_interface::regs::SLOT_LINE_ALIGNMENT;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// A tiny configuration (small frames, 4 MiB rings, a few samples) for
    /// tests and smoke runs: its numbers mean nothing.
    pub quick: bool,
    /// Timed rounds per frame size and run (each round times every method
    /// once); `None`: 600 (quick: 5).
    pub samples: Option<usize>,
    /// Untimed copies per method before the rounds; `None`: 8 (quick: 2).
    pub warmup: Option<usize>,
    /// Rings hold at least this many times the last-level cache (default 8).
    pub ring_factor: usize,
    /// Seed of the page placement and the data patterns (run `k` uses
    /// `seed + k` for its placement).
    pub seed: u64,
    /// Independent runs (new rings each); figures are medians over runs.
    /// At least 1 (default 1).
    pub runs: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { quick: false, samples: None, warmup: None, ring_factor: 8, seed: 0xCAFD_BE4C, runs: 1 }
    }
}

impl BenchOptions {
    /// The quick configuration.
    #[must_use]
    pub fn quick() -> Self {
        Self { quick: true, ..Self::default() }
    }
}

/// Everything one invocation measured. `serde` gives the `--json` form.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The host.
    pub machine: MachineInfo,
    /// When the measurement started (UTC, RFC 3339, seconds).
    pub started: String,
    /// How the run was set up.
    pub settings: Settings,
    /// One entry per frame size.
    pub cases: Vec<CopyCase>,
    /// Share of one core the driver's copy costs for common workloads.
    pub core_share: Vec<CoreShare>,
    /// S/G programming cost and element counts.
    pub sg: SgCost,
    /// Whole-stack throughput in virtual time, per DMA mode: filled by the
    /// CLI from the simulated machine; `run` leaves it `None`.
    pub stack: Option<StackThroughput>,
    /// The product's own cost: the AVStream image's `Process` copy timed
    /// inside the emulated kernel next to the host routine, and the main
    /// job's wall time per frame with `--drivers images` next to `--drivers
    /// cores` ([`measure_image`]). Filled by the CLI when the images are
    /// built and KVM is usable; `run` leaves it `None`.
    pub image: Option<ImageCost>,
    /// Why [`BenchReport::image`] was not measured (the images not built,
    /// no usable `/dev/kvm`), when the CLI could not; `None` otherwise.
    pub image_unavailable: Option<String>,
    /// `true` when every byte check of every method passed.
    pub checks_passed: bool,
    /// Wall-clock seconds of the run.
    pub elapsed_seconds: f64,
}

/// How the run was set up.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// The quick configuration was used (numbers not meaningful).
    pub quick: bool,
    /// Independent runs.
    pub runs: usize,
    /// Timed rounds per frame size and run.
    pub samples: usize,
    /// Untimed warm-up copies per method, frame size and run.
    pub warmup: usize,
    /// Bytes of each ring (source slots; each destination ring).
    pub ring_bytes: usize,
    /// `ring_bytes / llc_bytes`.
    pub ring_over_llc: f64,
    /// `copy_frame`'s non-temporal threshold, bytes.
    pub non_temporal_threshold: usize,
    /// `copy_frame`'s page lookahead, pages.
    pub page_lookahead: usize,
    /// The unit `driver` ran with (`effective_unit(Avx2)`).
    pub driver_unit: String,
    /// The instruction set of `ref_avx2`.
    pub reference_unit: String,
    /// Backing of the source ring (the common buffer's slots).
    pub source_memory: String,
    /// Backing of the contiguous destination ring.
    pub contiguous_memory: String,
    /// Backing of the scattered destination ring (the frame buffers), first run.
    pub scattered_memory: String,
    /// Why the scattered ring could not be built (the driver's destination
    /// was then a contiguous ring too); `None` when it was.
    pub scattered_fallback: Option<String>,
    /// Per run: fraction of virtually consecutive page pairs that are
    /// physically adjacent, per ring (`None` when `/proc/self/pagemap`
    /// hides frames).
    pub physical_adjacency: Vec<PhysicalAdjacency>,
    /// `/proc/loadavg` when the run started and when it ended (other work on
    /// the machine makes the numbers noisy).
    pub load_average: (String, String),
}

/// Physical adjacency of consecutive pages in each ring.
#[derive(Clone, Debug, Serialize)]
pub struct PhysicalAdjacency {
    /// Source ring.
    pub source: Option<f64>,
    /// Contiguous destination ring.
    pub contiguous: Option<f64>,
    /// Scattered destination ring.
    pub scattered: Option<f64>,
}

/// The copy figures of one frame size.
#[derive(Clone, Debug, Serialize)]
pub struct CopyCase {
    /// `"1080p YUY2"`.
    pub name: String,
    /// `"yuy2"` or `"nv12"`.
    pub format: String,
    /// Pixels per line.
    pub width: u32,
    /// Pixel rows.
    pub height: u32,
    /// Lines copied (NV12: luma + chroma lines).
    pub lines: u32,
    /// Bytes per line.
    pub line_bytes: u32,
    /// Slot line pitch (line bytes rounded up to 256).
    pub src_pitch: u32,
    /// Frame stride (= line bytes).
    pub dst_stride: u32,
    /// Bytes delivered per frame (`lines × line_bytes`): the GB/s basis.
    pub frame_bytes: usize,
    /// `copy_frame` streams this frame (at or above the threshold).
    pub streamed: bool,
    /// Per method.
    pub methods: Vec<MethodResult>,
    /// The machine's copy limit: per run, the best median GB/s of the
    /// non-temporal methods into the contiguous ring.
    pub limit: Limit,
    /// The limit of the driver's kind of destination: per run, the best
    /// median GB/s of the non-temporal methods into the scattered pages
    /// (the driver's path included).
    pub scattered_limit: Limit,
    /// `driver` over `limit`: the median over runs of each run's ratio of
    /// medians.
    pub driver_vs_limit: f64,
    /// `driver` over `scattered_limit`, likewise (at most 1: the driver is
    /// one of the candidates).
    pub driver_vs_scattered_limit: f64,
    /// Each run's `driver / limit`.
    pub driver_vs_limit_by_run: Vec<f64>,
    /// Each run's `driver / scattered_limit`.
    pub driver_vs_scattered_limit_by_run: Vec<f64>,
    /// `driver / limit` taken round by round (both copies of the same
    /// round, the run's limit method), over all runs.
    pub driver_vs_limit_by_round: Summary,
}

/// A limit: the best method per run.
#[derive(Clone, Debug, Serialize)]
pub struct Limit {
    /// Median over runs of `gbps_by_run`.
    pub gbps: f64,
    /// Each run's best median GB/s.
    pub gbps_by_run: Vec<f64>,
    /// The method that achieved it, per run.
    pub method_by_run: Vec<String>,
}

/// One copy method's figures for one frame size.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    /// Identifier: `ref_avx2`, `copy_from_slice`, `driver`, ...
    pub method: String,
    /// What it does.
    pub description: String,
    /// `"contiguous"` or `"scattered pages"`.
    pub destination: String,
    /// Whether it streams with non-temporal stores (a limit candidate).
    pub non_temporal: bool,
    /// GB/s (10^9 bytes per second): the median over runs of each run's
    /// median (the figure the tables show).
    pub gbps_median: f64,
    /// Each run's median GB/s.
    pub gbps_by_run: Vec<f64>,
    /// GB/s over every timed sample of every run (its `median` is not
    /// `gbps_median` when there are several runs).
    pub gbps: Summary,
    /// Nanoseconds per frame over every timed sample of every run.
    pub ns_per_frame: Summary,
    /// Byte checks run.
    pub checks: usize,
    /// Byte checks that failed.
    pub check_failures: usize,
}

/// The share of one core a workload's copies take on the driver's path.
#[derive(Clone, Debug, Serialize)]
pub struct CoreShare {
    /// `"1080p YUY2 @ 60 fps"`, `"4 x 1080p YUY2 @ 60 fps"`.
    pub workload: String,
    /// The case whose `driver` figures are used.
    pub case: String,
    /// Streams.
    pub streams: u32,
    /// Frames per second per stream.
    pub fps: u32,
    /// Bytes copied per second.
    pub bytes_per_second: f64,
    /// Fraction of one core at the median speed.
    pub share_median: f64,
    /// Fraction of one core at the slow tail: the 5th percentile of GB/s
    /// (the minimum is left out: on a shared machine it is the sample
    /// during which the process was descheduled).
    pub share_p95: f64,
}

/// Hook for the whole-stack figures the CLI measures on the simulated
/// machine (frames per second in virtual time, per DMA mode).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StackThroughput {
    /// What was run (machine, board, duration).
    pub description: String,
    /// One entry per mode and format.
    pub modes: Vec<ModeThroughput>,
}

/// Whole-stack throughput of one DMA mode and format.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModeThroughput {
    /// `"ScatterGather"` or `"CommonBuffer"`.
    pub mode: String,
    /// `"1080p YUY2"`.
    pub format: String,
    /// Frames delivered.
    pub frames: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Virtual seconds simulated.
    pub virtual_seconds: f64,
    /// `frames / virtual_seconds`: the board's rate, which the stack kept up with.
    pub frames_per_second: f64,
    /// Wall-clock seconds the simulated machine took (board model, bus and
    /// AVStream cores, KS model, byte-for-byte verification included).
    pub wall_seconds: f64,
    /// `frames / wall_seconds`: how fast the whole simulated stack runs.
    pub frames_per_wall_second: f64,
    /// Frames per second the measured copy limit (`limit`, median over
    /// runs) allows for this format: the ceiling of common-buffer mode on
    /// this machine.
    pub copy_limit_fps: f64,
}

/// `a / b` as a float (0 for `b == 0`).
pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A frame size to measure.
struct CaseSpec {
    name: String,
    format: PixelFormat,
    width: u32,
    height: u32,
}

impl CaseSpec {
    fn new(name: &str, format: PixelFormat, width: u32, height: u32) -> Self {
        Self { name: name.to_owned(), format, width, height }
    }

    fn geometry(&self) -> Result<CopyGeometry, String> {
        let line_bytes = self.format.line_bytes(self.width).ok_or("line bytes overflow")?;
        let lines = self.format.lines(self.height).ok_or("lines overflow")?;
        let src_pitch = line_bytes.checked_next_multiple_of(SLOT_LINE_ALIGNMENT).ok_or("pitch overflow")?;
        Ok(CopyGeometry { lines, line_bytes, src_pitch, dst_pitch: line_bytes })
    }
}

fn cases(quick: bool) -> Vec<CaseSpec> {
    if quick {
        vec![
            CaseSpec::new("96x16 YUY2", PixelFormat::Yuy2, 96, 16),
            CaseSpec::new("130x24 NV12", PixelFormat::Nv12, 130, 24),
            CaseSpec::new("640x240 YUY2", PixelFormat::Yuy2, 640, 240),
        ]
    } else {
        vec![
            CaseSpec::new("1080p YUY2", PixelFormat::Yuy2, 1920, 1080),
            CaseSpec::new("1080p NV12", PixelFormat::Nv12, 1920, 1080),
            CaseSpec::new("2160p YUY2", PixelFormat::Yuy2, 3840, 2160),
        ]
    }
}

/// How a method copies.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// [`kernels::limit_copy`]: wide stores or not, page lookahead.
    Reference { wide: bool, lookahead: usize },
    SliceCopy,
    Driver(VectorUnit, CopyTuning),
}

/// Where a method writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dst {
    /// The contiguous ring.
    Contiguous,
    /// Page runs of a pool, shuffled: the driver's frame buffers.
    Scattered,
}

struct Method {
    id: &'static str,
    description: String,
    op: Op,
    dst: Dst,
}

impl Method {
    /// Whether the method streams with non-temporal stores (for frames of
    /// the benchmark's sizes), so it is a candidate for the limits.
    fn non_temporal(&self) -> bool {
        match self.op {
            Op::Reference { .. } => true,
            Op::SliceCopy => false,
            Op::Driver(_, tuning) => tuning.non_temporal_threshold < usize::MAX,
        }
    }
}

fn methods(best: VectorUnit) -> Vec<Method> {
    let m = |id, description: String, op, dst| Method { id, description, op, dst };
    let wide = CopyTuning { avx2_wide_stores: true, ..DEFAULT_TUNING };
    let no_lookahead = CopyTuning { page_lookahead: 0, ..DEFAULT_TUNING };
    let wide_no_lookahead = CopyTuning { avx2_wide_stores: true, page_lookahead: 0, ..DEFAULT_TUNING };
    let temporal = CopyTuning { non_temporal_threshold: usize::MAX, ..DEFAULT_TUNING };
    let reference = |wide| Op::Reference { wide, lookahead: 0 };
    let reference_ahead = Op::Reference { wide: false, lookahead: kernels::REFERENCE_LOOKAHEAD };
    let (ref_wide, ref_narrow) = (kernels::limit_unit(true), kernels::limit_unit(false));
    let ahead = kernels::REFERENCE_LOOKAHEAD;
    vec![
        m("ref_avx2", format!("reference: the frame's bytes as one run, non-temporal {ref_wide} stores"), reference(true), Dst::Contiguous),
        m("ref_sse2", format!("reference with {ref_narrow} (16-byte) stores"), reference(false), Dst::Contiguous),
        m("ref_sse2_lookahead", format!("ref_sse2 with its own {ahead}-page lookahead"), reference_ahead, Dst::Contiguous),
        m("copy_from_slice", "copy_from_slice line by line".into(), Op::SliceCopy, Dst::Contiguous),
        m("driver_contiguous", format!("copy_frame({best:?}) into the contiguous ring"), Op::Driver(best, DEFAULT_TUNING), Dst::Contiguous),
        m("ref_avx2_scattered", "ref_avx2 into the scattered pages".into(), reference(true), Dst::Scattered),
        m("ref_sse2_scattered", "ref_sse2 into the scattered pages".into(), reference(false), Dst::Scattered),
        m("ref_sse2_lookahead_scattered", "ref_sse2_lookahead into the scattered pages".into(), reference_ahead, Dst::Scattered),
        m("driver", format!("the driver's path: copy_frame({best:?}), default tuning"), Op::Driver(best, DEFAULT_TUNING), Dst::Scattered),
        m("driver_wide", format!("copy_frame({best:?}), 32-byte stores"), Op::Driver(best, wide), Dst::Scattered),
        m("driver_no_lookahead", format!("copy_frame({best:?}), no page lookahead"), Op::Driver(best, no_lookahead), Dst::Scattered),
        m(
            "driver_wide_no_lookahead",
            format!("copy_frame({best:?}), 32-byte stores, no page lookahead"),
            Op::Driver(best, wide_no_lookahead),
            Dst::Scattered,
        ),
        m("driver_scalar", "copy_frame(Scalar): MOVNTI".into(), Op::Driver(VectorUnit::Scalar, DEFAULT_TUNING), Dst::Scattered),
        m("driver_temporal", format!("copy_frame({best:?}), ordinary stores only"), Op::Driver(best, temporal), Dst::Scattered),
    ]
}

/// The rings.
struct Rings {
    src: Region,
    contiguous: Region,
    scattered: Region,
}

impl Rings {
    fn destination(&self, dst: Dst) -> &Region {
        match dst {
            Dst::Contiguous => &self.contiguous,
            Dst::Scattered => &self.scattered,
        }
    }
}

/// Frame placement in the rings for one case.
struct Layout {
    /// Bytes from one source slot to the next.
    slot: usize,
    /// Bytes from one destination frame to the next (frame + guard).
    span: usize,
    src_slots: usize,
    contiguous_frames: usize,
    scattered_frames: usize,
}

impl Layout {
    fn new(g: &CopyGeometry, rings: &Rings) -> Result<Self, String> {
        let src_extent = g.src_extent().map_err(|s| format!("bad geometry {s:#x}"))?;
        let dst_extent = g.dst_extent().map_err(|s| format!("bad geometry {s:#x}"))?;
        let slot = src_extent.div_ceil(PAGE) * PAGE;
        let span = (dst_extent + 1).div_ceil(PAGE) * PAGE;
        let src_slots = rings.src.len() / slot;
        // Frame counts differ from the slot count, so a frame is not paired
        // with the same slot again soon (a method that wrote nothing would
        // leave another slot's bytes, and fail its check).
        let frames = |region: &Region| {
            let mut n = region.len() / span;
            if n == src_slots {
                n -= 1;
            }
            n
        };
        let (contiguous_frames, scattered_frames) = (frames(&rings.contiguous), frames(&rings.scattered));
        if src_slots < 2 || contiguous_frames < 2 || scattered_frames < 2 {
            return Err(format!("rings too small for a {dst_extent}-byte frame"));
        }
        Ok(Self { slot, span, src_slots, contiguous_frames, scattered_frames })
    }

    fn frames(&self, dst: Dst) -> usize {
        match dst {
            Dst::Contiguous => self.contiguous_frames,
            Dst::Scattered => self.scattered_frames,
        }
    }
}

/// Rotating positions in the rings (source; one per destination kind).
#[derive(Default)]
struct Cursor {
    src: usize,
    dst: [usize; 2],
}

/// Where one copy went: source slot and destination frame.
#[derive(Clone, Copy)]
struct Placement {
    slot: usize,
    frame: usize,
    dst: Dst,
}

/// Runs one copy of `method` at the next ring positions; returns the
/// nanoseconds it took and where it went.
fn copy_once(method: &Method, g: &CopyGeometry, rings: &mut Rings, layout: &Layout, cursor: &mut Cursor) -> Result<(f64, Placement), String> {
    let slot = cursor.src % layout.src_slots;
    cursor.src += 1;
    let counter = &mut cursor.dst[method.dst as usize];
    let frame = *counter % layout.frames(method.dst);
    *counter += 1;
    let region = match method.dst {
        Dst::Contiguous => &mut rings.contiguous,
        Dst::Scattered => &mut rings.scattered,
    };
    let src_extent = g.src_extent().map_err(|s| format!("{s:#x}"))?;
    let frame_bytes = g.lines as usize * g.line_bytes as usize;
    let src = &rings.src.bytes()[slot * layout.slot..slot * layout.slot + src_extent];
    let dst = &mut region.bytes_mut()[frame * layout.span..(frame + 1) * layout.span];
    let t = Instant::now();
    match method.op {
        Op::Reference { wide, lookahead } => kernels::limit_copy(&mut dst[..frame_bytes], &src[..frame_bytes], wide, lookahead),
        Op::SliceCopy => kernels::slice_copy(dst, src, g),
        Op::Driver(unit, tuning) => {
            copy_frame_tuned(dst, src, g, unit, &tuning).map_err(|s| format!("copy_frame failed: {s:#x}"))?;
        }
    }
    let ns = t.elapsed().as_secs_f64() * 1e9;
    Ok((ns, Placement { slot, frame, dst: method.dst }))
}

/// Byte-checks the output of one copy.
fn check_once(method: &Method, g: &CopyGeometry, rings: &Rings, layout: &Layout, at: Placement) -> Result<bool, String> {
    let src_extent = g.src_extent().map_err(|s| format!("{s:#x}"))?;
    let src = &rings.src.bytes()[at.slot * layout.slot..at.slot * layout.slot + src_extent];
    let dst = &rings.destination(at.dst).bytes()[at.frame * layout.span..(at.frame + 1) * layout.span];
    Ok(match method.op {
        Op::Reference { .. } => kernels::check_run(dst, &src[..g.lines as usize * g.line_bytes as usize], POISON),
        Op::SliceCopy | Op::Driver(..) => kernels::check_lines(dst, src, g, POISON),
    })
}

/// Fills `bytes` with seeded pseudo-random bytes (`ChaCha8Rng` from
/// `seed`), so every slot's content differs.
fn fill_pattern(bytes: &mut [u8], seed: u64) {
    rand_chacha::rand_core::Rng::fill_bytes(&mut placement::rng(seed), bytes);
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn adjacency(region: &Region) -> Option<f64> {
    let frames = machine::physical_frames(region.bytes().as_ptr(), region.len())?;
    let pairs = frames.len().saturating_sub(1) as u64;
    let adjacent = frames.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count() as u64;
    Some(ratio(adjacent, pairs))
}

fn gbps_of(bytes: usize, ns: &[f64]) -> Vec<f64> {
    ns.iter().map(|&t| bytes as f64 / t.max(1e-3)).collect()
}

/// Runs the benchmark ([`run_with_progress`] without a progress callback).
///
/// # Errors
/// As [`run_with_progress`].
pub fn run(options: &BenchOptions) -> Result<BenchReport, String> {
    run_with_progress(options, &mut |_, _| {})
}

/// Runs the benchmark; `progress(done, total)` is called after every timed
/// round (and each warm-up) with the steps done so far and in all.
///
/// # Errors
/// Memory could not be mapped, or a copy returned an error (a bug). A
/// failed byte check is not an error: it shows in the report
/// ([`BenchReport::checks_passed`], per method `check_failures`).
pub fn run_with_progress(options: &BenchOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<BenchReport, String> {
    let started_at = Instant::now();
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let load_before = load_average();
    let machine = machine::machine_info();
    let specs = cases(options.quick);
    let samples = options.samples.unwrap_or(if options.quick { 5 } else { 600 }).max(1);
    let warmup = options.warmup.unwrap_or(if options.quick { 2 } else { 8 }).max(1);
    let runs = options.runs.max(1);

    let geometries = specs.iter().map(CaseSpec::geometry).collect::<Result<Vec<_>, _>>()?;
    let largest = geometries.iter().map(|g| g.src_extent().unwrap_or(0).max(g.dst_extent().unwrap_or(0))).max().unwrap_or(0);
    let ring_bytes = if options.quick {
        (4 << 20).max(4 * largest)
    } else {
        machine.llc_bytes.saturating_mul(options.ring_factor.max(1)).max(8 * largest)
    };

    let best = effective_unit(VectorUnit::Avx2);
    let methods = methods(best);
    let total = (runs * specs.len() * (samples + 1)) as u64;
    let mut done = 0u64;
    let mut tick = |n: usize| {
        done += n as u64;
        progress(done, total);
    };
    let mut measured: Vec<Vec<CaseRun>> = (0..specs.len()).map(|_| Vec::with_capacity(runs)).collect();
    let mut adjacency_by_run = Vec::with_capacity(runs);
    let mut memory = None;
    for run in 0..runs {
        let seed = options.seed.wrapping_add(run as u64);
        let (mut rings, fallback) = make_rings(ring_bytes, seed);
        adjacency_by_run.push(PhysicalAdjacency {
            source: adjacency(&rings.src),
            contiguous: adjacency(&rings.contiguous),
            scattered: adjacency(&rings.scattered),
        });
        for (case_runs, g) in measured.iter_mut().zip(&geometries) {
            case_runs.push(run_case(g, &methods, &mut rings, Schedule { samples, warmup, seed }, &mut tick)?);
        }
        memory.get_or_insert((rings.src.model().to_owned(), rings.contiguous.model().to_owned(), rings.scattered.model().to_owned(), fallback));
    }
    let cases_out: Vec<CopyCase> = specs.iter().zip(&geometries).zip(&measured).map(|((spec, g), runs)| summarize_case(spec, g, &methods, runs)).collect();
    let all_passed = cases_out.iter().all(|c| c.methods.iter().all(|m| m.check_failures == 0));

    let core_share = core_share(&cases_out);
    let sg_sizes: Vec<(String, usize)> = specs
        .iter()
        .zip(&geometries)
        .take(2)
        .map(|(s, g)| (s.name.clone(), g.lines as usize * g.line_bytes as usize))
        .collect();
    // An ordinary anonymous buffer of the frame's size, as this host's
    // kernel placed it: what an application's frame buffer looks like.
    let host_runs = |bytes: usize| {
        let buffer = Region::anonymous(bytes);
        let frames = machine::physical_frames(buffer.bytes().as_ptr(), bytes)?;
        Some(machine::physical_runs(&frames))
    };
    let (sg_frames, sg_samples) = if options.quick { (4, 3) } else { (64, 40) };
    let sg = sg::measure(&sg_sizes, sg_frames, sg_samples, options.seed, &host_runs)?;

    let (source_memory, contiguous_memory, scattered_memory, scattered_fallback) = memory.unwrap_or_default();
    let settings = Settings {
        quick: options.quick,
        runs,
        samples,
        warmup,
        ring_bytes,
        ring_over_llc: ratio(ring_bytes as u64, machine.llc_bytes as u64),
        non_temporal_threshold: NON_TEMPORAL_THRESHOLD,
        page_lookahead: PAGE_LOOKAHEAD,
        driver_unit: format!("{best:?}"),
        reference_unit: kernels::limit_unit(true).to_owned(),
        source_memory,
        contiguous_memory,
        scattered_memory,
        scattered_fallback,
        physical_adjacency: adjacency_by_run,
        load_average: (load_before, load_average()),
    };
    Ok(BenchReport {
        machine,
        started,
        settings,
        cases: cases_out,
        core_share,
        sg,
        stack: None,
        image: None,
        image_unavailable: None,
        checks_passed: all_passed,
        elapsed_seconds: started_at.elapsed().as_secs_f64(),
    })
}

/// Builds one run's rings: a source ring filled with a seeded pattern, a
/// contiguous destination ring, and a scattered one (a contiguous ring
/// instead, with the reason, when the host refuses the mapping).
fn make_rings(ring_bytes: usize, seed: u64) -> (Rings, Option<String>) {
    let src = Region::contiguous(ring_bytes);
    let contiguous = Region::contiguous(ring_bytes);
    let (scattered, fallback) = match Region::scattered(ring_bytes, seed) {
        Ok(r) => (r, None),
        Err(why) => (Region::contiguous(ring_bytes), Some(why)),
    };
    let mut rings = Rings { src, contiguous, scattered };
    fill_pattern(rings.src.bytes_mut(), seed);
    (rings, fallback)
}

/// How many copies of each method, and the seed of the round order.
#[derive(Clone, Copy)]
struct Schedule {
    samples: usize,
    warmup: usize,
    seed: u64,
}

/// One run's raw figures for one frame size.
struct CaseRun {
    /// Per method: nanoseconds of each timed round.
    ns: Vec<Vec<f64>>,
    /// Per method: (byte checks, failures).
    checks: Vec<(usize, usize)>,
}

fn run_case(g: &CopyGeometry, methods: &[Method], rings: &mut Rings, schedule: Schedule, tick: &mut dyn FnMut(usize)) -> Result<CaseRun, String> {
    let Schedule { samples, warmup, seed } = schedule;
    let layout = Layout::new(g, rings)?;
    rings.contiguous.bytes_mut().fill(POISON);
    rings.scattered.bytes_mut().fill(POISON);
    let mut cursor = Cursor::default();
    let mut checks = vec![(0usize, 0usize); methods.len()];
    let mut record = |i: usize, ok: bool| {
        checks[i].0 += 1;
        checks[i].1 += usize::from(!ok);
    };

    for (i, m) in methods.iter().enumerate() {
        let mut last = None;
        for _ in 0..warmup {
            last = Some(copy_once(m, g, rings, &layout, &mut cursor)?.1);
        }
        if let Some(at) = last {
            record(i, check_once(m, g, rings, &layout, at)?);
        }
    }
    tick(1);

    let mut ns = vec![Vec::with_capacity(samples); methods.len()];
    let mut order: Vec<usize> = (0..methods.len()).collect();
    let mut order_rng = placement::rng(seed ^ 0x0DE2_0F2E_77E5);
    for round in 0..samples {
        placement::shuffle(&mut order, &mut order_rng);
        for &i in &order {
            let (t, at) = copy_once(&methods[i], g, rings, &layout, &mut cursor)?;
            ns[i].push(t);
            if round % CHECK_EVERY == 0 || round + 1 == samples {
                record(i, check_once(&methods[i], g, rings, &layout, at)?);
            }
        }
        tick(1);
    }
    Ok(CaseRun { ns, checks })
}

/// The median of `values` (0 for none).
fn median(values: &[f64]) -> f64 {
    stats::summarize(values).median
}

/// The best method among `candidates` (indices) by median GB/s in each run:
/// the [`Limit`] and, per run, the index of its method.
fn best_of(candidates: &[usize], methods: &[Method], medians: &[Vec<f64>]) -> (Limit, Vec<usize>) {
    let runs = medians.first().map_or(0, Vec::len);
    let winners: Vec<usize> = (0..runs)
        .map(|r| candidates.iter().copied().max_by(|&a, &b| medians[a][r].total_cmp(&medians[b][r])).unwrap_or(0))
        .collect();
    let gbps_by_run: Vec<f64> = winners.iter().enumerate().map(|(r, &w)| medians[w][r]).collect();
    let limit = Limit { gbps: median(&gbps_by_run), method_by_run: winners.iter().map(|&w| methods[w].id.to_owned()).collect(), gbps_by_run };
    (limit, winners)
}

/// Folds the runs of one frame size into its [`CopyCase`].
fn summarize_case(spec: &CaseSpec, g: &CopyGeometry, methods: &[Method], runs: &[CaseRun]) -> CopyCase {
    let frame_bytes = g.lines as usize * g.line_bytes as usize;
    // Per method, per run: the median GB/s.
    let medians: Vec<Vec<f64>> = (0..methods.len()).map(|i| runs.iter().map(|r| median(&gbps_of(frame_bytes, &r.ns[i]))).collect()).collect();
    let results: Vec<MethodResult> = methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let ns: Vec<f64> = runs.iter().flat_map(|r| r.ns[i].iter().copied()).collect();
            let (checks, check_failures) = runs.iter().fold((0, 0), |(c, f), r| (c + r.checks[i].0, f + r.checks[i].1));
            MethodResult {
                method: m.id.to_owned(),
                description: m.description.clone(),
                destination: match m.dst {
                    Dst::Contiguous => "contiguous".into(),
                    Dst::Scattered => "scattered pages".into(),
                },
                non_temporal: m.non_temporal(),
                gbps_median: median(&medians[i]),
                gbps_by_run: medians[i].clone(),
                gbps: stats::summarize(&gbps_of(frame_bytes, &ns)),
                ns_per_frame: stats::summarize(&ns),
                checks,
                check_failures,
            }
        })
        .collect();
    let candidates = |dst: Dst| -> Vec<usize> { (0..methods.len()).filter(|&i| methods[i].dst == dst && methods[i].non_temporal()).collect() };
    let (limit, limit_winners) = best_of(&candidates(Dst::Contiguous), methods, &medians);
    let (scattered_limit, _) = best_of(&candidates(Dst::Scattered), methods, &medians);
    let driver = methods.iter().position(|m| m.id == "driver").unwrap_or(0);
    let vs = |l: &Limit| -> Vec<f64> { medians[driver].iter().zip(&l.gbps_by_run).map(|(d, l)| d / l.max(1e-12)).collect() };
    let driver_vs_limit_by_run = vs(&limit);
    let driver_vs_scattered_limit_by_run = vs(&scattered_limit);
    let by_round: Vec<f64> = runs
        .iter()
        .zip(&limit_winners)
        .flat_map(|(r, &w)| r.ns[w].iter().zip(&r.ns[driver]).map(|(l, d)| l / d.max(1e-3)).collect::<Vec<_>>())
        .collect();
    CopyCase {
        name: spec.name.clone(),
        format: spec.format.name().to_owned(),
        width: spec.width,
        height: spec.height,
        lines: g.lines,
        line_bytes: g.line_bytes,
        src_pitch: g.src_pitch,
        dst_stride: g.dst_pitch,
        frame_bytes,
        streamed: frame_bytes >= NON_TEMPORAL_THRESHOLD,
        methods: results,
        limit,
        scattered_limit,
        driver_vs_limit: median(&driver_vs_limit_by_run),
        driver_vs_scattered_limit: median(&driver_vs_scattered_limit_by_run),
        driver_vs_limit_by_run,
        driver_vs_scattered_limit_by_run,
        driver_vs_limit_by_round: stats::summarize(&by_round),
    }
}

/// Share of one core on the driver's path: 1080p60 (each format),
/// 2160p60, and four 1080p60 YUY2 streams, from the first three cases.
fn core_share(cases: &[CopyCase]) -> Vec<CoreShare> {
    let mut out = Vec::new();
    let plan: [(usize, u32); 4] = [(0, 1), (1, 1), (2, 1), (0, 4)];
    for (index, streams) in plan {
        let Some(case) = cases.get(index) else { continue };
        let Some(driver) = case.methods.iter().find(|m| m.method == "driver") else { continue };
        let fps = 60;
        let bytes_per_second = f64::from(streams * fps) * case.frame_bytes as f64;
        let share = |gbps: f64| bytes_per_second / (gbps.max(1e-9) * 1e9);
        let workload = if streams == 1 { format!("{} @ {fps} fps", case.name) } else { format!("{streams} x {} @ {fps} fps", case.name) };
        out.push(CoreShare {
            workload,
            case: case.name.clone(),
            streams,
            fps,
            bytes_per_second,
            share_median: share(driver.gbps_median),
            share_p95: share(driver.gbps.p05),
        });
    }
    out
}

/// The report as pretty-printed JSON (the `--json` output).
///
/// # Errors
/// Serialisation failed (does not happen for this type).
pub fn render_json(report: &BenchReport) -> Result<String, String> {
    serde_json::to_string_pretty(report).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
