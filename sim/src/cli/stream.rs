//! `capdma-sim stream`: the main job.
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use capdma_bus::config::DmaModeOverride;
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};
use capdma_sim::board::BoardKind;
use capdma_sim::machine::{self, MachineConfig, RunError, RunHooks, RunReport};
use capdma_sim::pattern::snapshot_png;
use capdma_sim::y4m::{read_y4m_file, Y4mWriter};
use clap::{value_parser, Args, ValueEnum};

use super::drivers::DriversArgs;
use super::{print_json, print_line, progress, Outcome};

#[derive(Clone, Copy, ValueEnum)]
enum BoardArg {
    /// A scatter/gather board with a descriptor ring.
    Sg,
    /// A legacy board without scatter/gather: contiguous slots only.
    Legacy,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Let the bus decide from the board and the machine.
    Auto,
    /// Force packet-based scatter/gather DMA (`DmaMode` = 1).
    ScatterGather,
    /// Force common-buffer DMA (`DmaMode` = 2).
    CommonBuffer,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// Packed 4:2:2.
    Yuy2,
    /// Planar 4:2:0.
    Nv12,
}

/// `capdma-sim stream` arguments. Ranges are checked by clap (a usage error,
/// exit 2); the registry values (`--slots`, `--max-mapping-bytes`) and the
/// adapter's grant (`--map-registers`) take what the drivers must cope with.
#[derive(Args)]
#[command(after_help = super::EXIT_STATUS_HELP)]
#[allow(clippy::struct_excessive_bools, reason = "each is an independent command-line flag")]
pub struct StreamArgs {
    #[command(flatten)]
    drivers: DriversArgs,
    /// With `--drivers bus-image`: preempt the image at arbitrary
    /// instructions, a seeded host timer kick every N microseconds on
    /// average (1..=1000000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    preempt_us: Option<u64>,
    /// The board model.
    #[arg(long, value_enum, default_value = "legacy")]
    board: BoardArg,
    /// The `DmaMode` registry override.
    #[arg(long, value_enum, default_value = "auto")]
    mode: ModeArg,
    /// Capture channels (one child device and pin each), 1..=8.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u32).range(1..=8))]
    channels: u32,
    /// Pixel format (default yuy2, or the source clip's).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Frame size `WxH`, up to 4096x2160 (default 1920x1080, or the source clip's).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// The application's frame stride in bytes (default: the line's bytes).
    #[arg(long)]
    stride: Option<u32>,
    /// Frames per second, 1..=1000 (default 60, or the source clip's rate rounded).
    #[arg(long, value_parser = value_parser!(u32).range(1..=1000))]
    fps: Option<u32>,
    /// Frames to capture per channel, 1..=1000000.
    #[arg(long, default_value_t = 300, value_parser = value_parser!(u32).range(1..=1_000_000))]
    frames: u32,
    /// Frame buffers the application keeps queued per channel, 1..=64.
    #[arg(long, default_value_t = 4, value_parser = value_parser!(u32).range(1..=64))]
    app_buffers: u32,
    /// How long the application holds each frame, in milliseconds, 0..=10000 (a slow application drops frames).
    #[arg(long, default_value_t = 0.0, value_parser = parse_hold_ms)]
    app_hold_ms: f64,
    /// The `MaxMappingByteCount` registry override, bytes (at least 1; below a page is allowed).
    #[arg(long, value_parser = value_parser!(u32).range(1..))]
    max_mapping_bytes: Option<u32>,
    /// The `DescriptorRingEntries` registry value: S/G descriptors per
    /// channel, a power of two in 64..=65536 [default: the bus's, 16384]. A
    /// frame with more mappings than this is posted in parts.
    #[arg(long, value_parser = parse_ring_entries)]
    ring_entries: Option<u32>,
    /// The board drives 32-bit addresses only.
    #[arg(long)]
    dma32: bool,
    /// RAM above 4 GiB, application buffers placed there.
    #[arg(long)]
    high_memory: bool,
    /// Buffer alignment the board needs, bytes (a power of two up to 1 MiB).
    #[arg(long, value_parser = parse_alignment)]
    alignment: Option<u32>,
    /// Map registers `IoGetDmaAdapter` grants [default: 64]. With
    /// `--drivers bus-image` the HAL grants what the adapter's
    /// `MaximumLength` needs (one per page, a mapping in the DMA-remapping
    /// domain takes one per page), at most this many when given.
    #[arg(long)]
    map_registers: Option<u32>,
    /// Slots in the common-buffer ring (the `SlotCount` registry value).
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Capture this Y4M clip (looped) instead of the test pattern.
    #[arg(long, value_name = "FILE.y4m")]
    source: Option<PathBuf>,
    /// Write channel 0's delivered frames to this Y4M file.
    #[arg(long, value_name = "FILE.y4m")]
    output: Option<PathBuf>,
    /// Write channel 0's last delivered frame as a PNG.
    #[arg(long, value_name = "FILE.png")]
    snapshot: Option<PathBuf>,
    /// Seed of page placement and the test pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// With `--drivers bus-image`: print the image's ETW events (decoded
    /// `TraceLogging`, with their virtual time), one line each after the
    /// summary, or as the JSON's `trace` array.
    #[arg(long)]
    trace: bool,
    /// With an image: print its debug output (`DbgPrint`), each line with
    /// its virtual time, IRQL and image, after the summary (or as the
    /// JSON's `debug_output` array).
    #[arg(long)]
    verbose: bool,
    /// With `--drivers images`: the application assigns its master clock
    /// to each pin (`KSPROPERTY_STREAM_MASTERCLOCK`); the AVStream image
    /// stamps frames with the clock's stream time, checked against it.
    #[arg(long)]
    reference_clock: bool,
}

/// `WxH`, each side 1 up to the format limit (4096x2160).
fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("expected WxH, got '{s}'"))?;
    let w = w.trim().parse::<u32>().map_err(|_| format!("bad width in '{s}'"))?;
    let h = h.trim().parse::<u32>().map_err(|_| format!("bad height in '{s}'"))?;
    if !(1..=MAX_WIDTH).contains(&w) || !(1..=MAX_HEIGHT).contains(&h) {
        return Err(format!("{w}x{h} is outside 1x1..={MAX_WIDTH}x{MAX_HEIGHT}"));
    }
    Ok((w, h))
}

/// Milliseconds, finite, 0..=10000.
fn parse_hold_ms(s: &str) -> Result<f64, String> {
    let ms: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number of milliseconds"))?;
    if !(ms.is_finite() && (0.0..=10_000.0).contains(&ms)) {
        return Err(format!("{ms} is outside 0..=10000"));
    }
    Ok(ms)
}

/// A power of two up to 1 MiB.
fn parse_ring_entries(s: &str) -> Result<u32, String> {
    use capdma_bus::config::{MAX_DESCRIPTOR_ENTRIES, MIN_DESCRIPTOR_ENTRIES};
    let entries: u32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number of descriptors"))?;
    if !entries.is_power_of_two() || !(MIN_DESCRIPTOR_ENTRIES..=MAX_DESCRIPTOR_ENTRIES).contains(&entries) {
        return Err(format!("{entries} is not a power of two in {MIN_DESCRIPTOR_ENTRIES}..={MAX_DESCRIPTOR_ENTRIES}"));
    }
    Ok(entries)
}

fn parse_alignment(s: &str) -> Result<u32, String> {
    let bytes: u32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number of bytes"))?;
    if !bytes.is_power_of_two() || bytes > 1 << 20 {
        return Err(format!("{bytes} is not a power of two up to 1 MiB"));
    }
    Ok(bytes)
}

/// The machine to run, or why there is none: the source clip cannot be
/// read (a failed run), or the configuration is invalid (a usage error).
fn config_from(args: &StreamArgs) -> Result<MachineConfig, Outcome> {
    let mut config = MachineConfig::default();
    if let Some(path) = &args.source {
        let video = read_y4m_file(path).map_err(|e| Outcome::Error(format!("--source {}: {e}", path.display())))?;
        config.format = video.header.format;
        config.width = video.header.width;
        config.height = video.header.height;
        let num = u64::from(video.header.frame_rate_num);
        let den = u64::from(video.header.frame_rate_den.max(1));
        config.fps = u32::try_from((num + den / 2) / den).unwrap_or(60).max(1);
        config.source = Some(Rc::new(video));
    }
    config.board = match args.board {
        BoardArg::Sg => BoardKind::ScatterGather,
        BoardArg::Legacy => BoardKind::Legacy,
    };
    config.mode = match args.mode {
        ModeArg::Auto => DmaModeOverride::Auto,
        ModeArg::ScatterGather => DmaModeOverride::ScatterGather,
        ModeArg::CommonBuffer => DmaModeOverride::CommonBuffer,
    };
    if let Some(format) = args.format {
        config.format = match format {
            FormatArg::Yuy2 => PixelFormat::Yuy2,
            FormatArg::Nv12 => PixelFormat::Nv12,
        };
    }
    if let Some((w, h)) = args.size {
        config.width = w;
        config.height = h;
    }
    if let Some(fps) = args.fps {
        config.fps = fps;
    }
    if !(args.app_hold_ms.is_finite() && (0.0..=10_000.0).contains(&args.app_hold_ms)) {
        return Err(Outcome::Usage(format!("--app-hold-ms must be 0..=10000, got {}", args.app_hold_ms)));
    }
    config.channels = args.channels;
    config.stride = args.stride;
    config.frames = args.frames;
    config.app_buffers = args.app_buffers;
    // Milliseconds to 100-ns units; the range is checked above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "0..=1e8, checked above")]
    {
        config.app_hold_100ns = (args.app_hold_ms * 10_000.0).round() as u64;
    }
    config.max_mapping_bytes = args.max_mapping_bytes;
    config.descriptor_ring_entries = args.ring_entries;
    config.dma32 = args.dma32;
    config.high_memory = args.high_memory;
    config.alignment = args.alignment;
    config.map_registers = args.map_registers.unwrap_or(64);
    config.reference_clock = args.reference_clock;
    config.drivers = args.drivers.drivers(
        args.map_registers,
        &[
            (args.preempt_us.is_some(), "--preempt-us needs --drivers bus-image or images"),
            (args.verbose, "--verbose needs --drivers bus-image or images (the debug output is the images')"),
            (args.trace, "--trace needs --drivers bus-image or images (the cores write no ETW events)"),
        ],
    )?;
    config.preemption_us = args.preempt_us;
    config.slot_count = args.slots;
    config.seed = args.seed;
    // A clip's own format or rate can be outside what the machine takes.
    config.validate().map_err(|e| Outcome::Usage(e.to_string()))?;
    Ok(config)
}

/// Runs `capdma-sim stream`: how it ended.
fn run_stream(args: &StreamArgs) -> Outcome {
    let config = match config_from(args) {
        Ok(config) => config,
        Err(outcome) => return outcome,
    };
    match stream(args, config) {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

fn stream(args: &StreamArgs, config: MachineConfig) -> Result<Outcome, Outcome> {
    let (format, width, height, fps) = (config.format, config.width, config.height, config.fps);
    let total = u64::from(config.frames) * u64::from(config.channels);
    let bar = progress(total, "{spinner} [{bar:40}] {pos}/{len} frames ({per_sec})");
    let mut writer = match &args.output {
        Some(path) => {
            let file = File::create(path).map_err(|e| Outcome::Error(format!("--output {}: {e}", path.display())))?;
            let writer = Y4mWriter::new(BufWriter::new(file), format, width, height, (fps, 1))
                .map_err(|e| Outcome::Error(format!("--output: {e}")))?;
            Some(writer)
        }
        None => None,
    };
    let mut last_frame: Option<(Vec<u8>, usize)> = None;
    let mut write_error: Option<String> = None;
    let want_snapshot = args.snapshot.is_some();
    let mut sink = |frame: &[u8], stride: usize| {
        if let Some(w) = writer.as_mut() {
            if let Err(e) = w.write_frame(frame, stride) {
                write_error.get_or_insert(format!("--output: {e}"));
            }
        }
        if want_snapshot {
            last_frame = Some((frame.to_vec(), stride));
        }
    };
    let mut on_progress = |done: u64, _total: u64| bar.set_position(done);
    let mut hooks = RunHooks { progress: Some(&mut on_progress), frame_sink: Some(&mut sink) };
    let result = machine::run(config, &mut hooks);
    bar.finish_and_clear();
    let keep_trace = |mut report: RunReport| {
        if !args.trace {
            report.trace = None;
        }
        if !args.verbose {
            report.debug_output = None;
        }
        report
    };
    let report = match result {
        Ok(report) => keep_trace(report),
        Err(RunError::Driver { step, status, report }) => {
            let report = keep_trace(*report);
            let error = RunError::Driver { step, status, report: Box::new(report.clone()) }.to_string();
            if args.json {
                print_json("stream", false, Some(&error), &report).map_err(Outcome::Error)?;
            } else {
                print_trace(&report);
                print_debug_output(&report);
            }
            return Err(Outcome::Error(error));
        }
        Err(RunError::Config(e)) => return Err(Outcome::Usage(e.to_string())),
    };
    if let Some(w) = writer {
        w.finish().map_err(|e| Outcome::Error(format!("--output: {e}")))?;
    }
    if let Some(e) = write_error {
        return Err(Outcome::Error(e));
    }
    if let (Some(path), Some((frame, stride))) = (&args.snapshot, last_frame) {
        snapshot_png(path, format, width, height, stride, &frame)
            .map_err(|e| Outcome::Error(format!("--snapshot {}: {e}", path.display())))?;
    }
    if args.json {
        print_json("stream", report.passed(), None, &report).map_err(Outcome::Error)?;
    } else {
        print_line(&report.summary());
        print_trace(&report);
        print_debug_output(&report);
    }
    Ok(Outcome::from_passed(report.passed()))
}

/// The images' debug output (`--verbose`), when the report kept it.
fn print_debug_output(report: &RunReport) {
    let Some(lines) = &report.debug_output else { return };
    print_line(&format!("debug output: {} line(s) of DbgPrint (seconds of virtual time, IRQL, image)", lines.len()));
    for line in lines {
        print_line(&format!("  {line}"));
    }
}

/// The images' ETW events, one line each (`--trace`), when the report kept them.
fn print_trace(report: &RunReport) {
    let Some(trace) = &report.trace else { return };
    print_line(&format!("trace: {} ETW event(s) of the image(s) (seconds of virtual time)", trace.len()));
    for event in trace {
        print_line(&format!("  {}", event.line));
    }
}

/// `capdma-sim stream`: exit 0 when every channel delivered and every
/// delivered frame verified with no rule broken, 1 when not, 2 on a usage
/// error.
pub fn run(args: &StreamArgs) -> ExitCode {
    run_stream(args).exit()
}
