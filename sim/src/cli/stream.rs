//! `capdma-sim stream`: the main job.
use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use capdma_bus::config::DmaModeOverride;
use capdma_interface::format::PixelFormat;
use capdma_sim::board::BoardKind;
use capdma_sim::machine::{self, MachineConfig, RunError, RunHooks};
use capdma_sim::pattern::snapshot_png;
use capdma_sim::y4m::{read_y4m_file, Y4mWriter};
use clap::{Args, ValueEnum};

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

/// `capdma-sim stream` arguments.
#[derive(Args)]
pub struct StreamArgs {
    /// The board model.
    #[arg(long, value_enum, default_value = "legacy")]
    board: BoardArg,
    /// The `DmaMode` registry override.
    #[arg(long, value_enum, default_value = "auto")]
    mode: ModeArg,
    /// Capture channels (one child device and pin each), 1..=8.
    #[arg(long, default_value_t = 1)]
    channels: u32,
    /// Pixel format (default yuy2, or the source clip's).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Frame size `WxH` (default 1920x1080, or the source clip's).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// The application's frame stride in bytes (default: the line's bytes).
    #[arg(long)]
    stride: Option<u32>,
    /// Frames per second (default 60, or the source clip's rate rounded).
    #[arg(long)]
    fps: Option<u32>,
    /// Frames to capture per channel.
    #[arg(long, default_value_t = 300)]
    frames: u32,
    /// Frame buffers the application keeps queued per channel.
    #[arg(long, default_value_t = 4)]
    app_buffers: u32,
    /// How long the application holds each frame, in milliseconds (a slow application drops frames).
    #[arg(long, default_value_t = 0.0)]
    app_hold_ms: f64,
    /// The `MaxMappingByteCount` registry override, bytes.
    #[arg(long)]
    max_mapping_bytes: Option<u32>,
    /// The board drives 32-bit addresses only.
    #[arg(long)]
    dma32: bool,
    /// RAM above 4 GiB, application buffers placed there.
    #[arg(long)]
    high_memory: bool,
    /// Buffer alignment the board needs, bytes (power of two).
    #[arg(long)]
    alignment: Option<u32>,
    /// Map registers `IoGetDmaAdapter` grants.
    #[arg(long, default_value_t = 64)]
    map_registers: u32,
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
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("expected WxH, got '{s}'"))?;
    let w = w.trim().parse::<u32>().map_err(|_| format!("bad width in '{s}'"))?;
    let h = h.trim().parse::<u32>().map_err(|_| format!("bad height in '{s}'"))?;
    Ok((w, h))
}

fn config_from(args: &StreamArgs) -> Result<MachineConfig, String> {
    let mut config = MachineConfig::default();
    if let Some(path) = &args.source {
        let video = read_y4m_file(path).map_err(|e| format!("--source {}: {e}", path.display()))?;
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
        return Err(format!("--app-hold-ms must be 0..=10000, got {}", args.app_hold_ms));
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
    config.dma32 = args.dma32;
    config.high_memory = args.high_memory;
    config.alignment = args.alignment;
    config.map_registers = args.map_registers;
    config.slot_count = args.slots;
    config.seed = args.seed;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Prints `text` and a newline; a closed pipe (`| head`) is not an error.
pub fn print_line(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Runs `capdma-sim stream`.
pub fn run_stream(args: &StreamArgs) -> Result<bool, String> {
    let config = config_from(args)?;
    let (format, width, height, fps) = (config.format, config.width, config.height, config.fps);
    let total = u64::from(config.frames) * u64::from(config.channels);
    let bar = (std::io::stdout().is_terminal() && !args.json).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} frames ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut writer = match &args.output {
        Some(path) => {
            let file = File::create(path).map_err(|e| format!("--output {}: {e}", path.display()))?;
            Some(Y4mWriter::new(BufWriter::new(file), format, width, height, (fps, 1)).map_err(|e| format!("--output: {e}"))?)
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
    let mut progress = |done: u64, _total: u64| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    };
    let mut hooks = RunHooks { progress: Some(&mut progress), frame_sink: Some(&mut sink) };
    let result = machine::run(config, &mut hooks);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(RunError::Driver { step, status, report }) => {
            let e = RunError::Driver { step, status, report: report.clone() };
            if args.json {
                print_line(&serde_json::to_string_pretty(&*report).unwrap_or_default());
            }
            return Err(e.to_string());
        }
        Err(e) => return Err(e.to_string()),
    };
    if let Some(w) = writer {
        w.finish().map_err(|e| format!("--output: {e}"))?;
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    if let (Some(path), Some((frame, stride))) = (&args.snapshot, last_frame) {
        snapshot_png(path, format, width, height, stride, &frame).map_err(|e| format!("--snapshot {}: {e}", path.display()))?;
    }
    let text = if args.json { serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? } else { report.summary() };
    print_line(&text);
    Ok(report.passed())
}

/// `capdma-sim stream`: exit 0 when every delivered frame verified and no rule broke.
pub fn run(args: &StreamArgs) -> ExitCode {
    match run_stream(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("capdma-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
