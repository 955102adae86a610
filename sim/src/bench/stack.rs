//! The whole stack's throughput: the simulated machine streaming 1080p YUY2
//! in each DMA mode, next to the frame rate the measured copy limit allows.
use capdma_bus::config::DmaModeOverride;
use capdma_interface::format::PixelFormat;

use super::{BenchReport, ModeThroughput, StackThroughput};
use crate::board::BoardKind;
use crate::machine::{run, MachineConfig, RunHooks};

/// The case whose copy limit bounds common-buffer mode here.
const CASE: &str = "1080p YUY2";

/// Runs the simulated machine for `frames` frames of 1080p60 YUY2 on the S/G
/// board in scatter-gather mode and on the legacy board in common-buffer
/// mode, and puts each beside the frame rate `report`'s copy limit allows.
///
/// # Errors
/// A one-line reason when a run cannot take place or fails its checks
/// (a throughput figure of a run that corrupted frames means nothing).
pub fn measure_stack(report: &BenchReport, frames: u32) -> Result<StackThroughput, String> {
    // The limit's GB/s of the 1080p YUY2 case (the quick configuration has
    // only small frames: then the first case's, named in the description).
    let case = report.cases.iter().find(|c| c.name == CASE).or_else(|| report.cases.first());
    let limit_gbps = case.map_or(0.0, |c| c.limit.gbps);
    let limit_case = case.map_or("no case", |c| c.name.as_str());
    let frame_bytes = 1920.0 * 1080.0 * 2.0;
    let copy_limit_fps = limit_gbps * 1e9 / frame_bytes;
    let mut modes = Vec::new();
    for (board, mode, name) in [
        (BoardKind::ScatterGather, DmaModeOverride::ScatterGather, "ScatterGather"),
        (BoardKind::Legacy, DmaModeOverride::CommonBuffer, "CommonBuffer"),
    ] {
        let config = MachineConfig { board, mode, format: PixelFormat::Yuy2, frames, ..MachineConfig::default() };
        let r = run(config, &mut RunHooks::default()).map_err(|e| format!("stack run ({name}): {e}"))?;
        if !r.passed() {
            return Err(format!("stack run ({name}) failed its checks: {}", r.summary()));
        }
        let delivered: u64 = r.channels.iter().map(|c| c.frames_delivered).sum();
        let dropped: u64 = r.channels.iter().map(|c| c.frames_dropped).sum();
        modes.push(ModeThroughput {
            mode: name.to_string(),
            format: CASE.to_string(),
            frames: delivered,
            dropped,
            virtual_seconds: r.sim_time_s,
            frames_per_second: super::ratio(delivered, 1) / r.sim_time_s.max(f64::MIN_POSITIVE),
            wall_seconds: r.wall_s,
            frames_per_wall_second: super::ratio(delivered, 1) / r.wall_s.max(f64::MIN_POSITIVE),
            copy_limit_fps,
        });
    }
    Ok(StackThroughput {
        description: format!(
            "{frames} frames of {CASE} at 60 fps per mode, every frame verified; the copy limit ({limit_gbps:.1} GB/s, measured on {limit_case}) allows {copy_limit_fps:.0} fps of {CASE}"
        ),
        modes,
    })
}
