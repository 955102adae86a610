//! The whole data path on the simulated machine: board → bus core → query
//! interface → AVStream core → KS queue → application, every delivered
//! frame verified byte for byte, in both DMA modes.
use capdma_bus::config::DmaModeOverride;
use capdma_interface::format::PixelFormat;
use capdma_interface::mode::{DmaMode, ModeReason};
use capdma_interface::status::STATUS_INVALID_PARAMETER;
use capdma_sim::board::BoardKind;
use capdma_sim::machine::{run, Machine, MachineConfig, RunError, RunHooks, RunReport};

/// A small, fast stream: 320x240 YUY2 at 60 fps, 24 frames.
fn small(board: BoardKind) -> MachineConfig {
    MachineConfig { board, width: 320, height: 240, frames: 24, ..MachineConfig::default() }
}

fn run_ok(config: MachineConfig) -> RunReport {
    match run(config, &mut RunHooks::default()) {
        Ok(report) => report,
        Err(e) => panic!("the run did not take place: {e}"),
    }
}

/// Every frame captured was delivered and verified, nothing broke.
fn assert_clean(report: &RunReport) {
    assert!(report.violations.is_empty(), "violations: {:#?}", report.violations);
    for c in &report.channels {
        assert!(c.frames_captured > 0, "channel {} captured nothing", c.channel);
        assert_eq!(c.frames_delivered, c.frames_captured, "channel {}: {c:?}", c.channel);
        assert_eq!(c.frames_verified, c.frames_delivered, "channel {}: {c:?}", c.channel);
        assert_eq!(c.frames_corrupt, 0);
        assert_eq!(c.channel_resets, 0, "a clean run resets nothing: {c:?}");
    }
    assert!(report.passed());
}

fn image_bytes(config: &MachineConfig) -> u64 {
    u64::from(config.line_bytes()) * u64::from(config.format.lines(config.height).unwrap())
}

#[test]
fn legacy_board_streams_in_common_buffer_mode_and_copies_every_frame() {
    let config = small(BoardKind::Legacy);
    let frame = image_bytes(&config);
    let report = run_ok(config);
    assert_clean(&report);
    let c = &report.channels[0];
    assert_eq!(c.mode, DmaMode::CommonBuffer.name());
    assert_eq!(c.mode_reason, ModeReason::BoardLacksScatterGather.describe());
    assert_eq!(c.bytes_copied, c.frames_delivered * frame, "one CPU copy per frame");
    assert_eq!(c.sg_elements, 0);
}

#[test]
fn sg_board_streams_in_scatter_gather_mode_with_zero_copies() {
    let report = run_ok(small(BoardKind::ScatterGather));
    assert_clean(&report);
    let c = &report.channels[0];
    assert_eq!(c.mode, DmaMode::ScatterGather.name());
    assert_eq!(c.mode_reason, ModeReason::BoardScatterGather.describe());
    assert_eq!(c.bytes_copied, 0, "S/G mode never copies");
    assert!(c.sg_elements >= c.frames_delivered, "every frame was programmed from mappings");
}

#[test]
fn registry_override_forces_common_buffer_on_an_sg_board() {
    let report = run_ok(MachineConfig { mode: DmaModeOverride::CommonBuffer, ..small(BoardKind::ScatterGather) });
    assert_clean(&report);
    assert_eq!(report.channels[0].mode_reason, ModeReason::OverrideCommonBuffer.describe());
}

#[test]
fn nv12_in_both_modes() {
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let report = run_ok(MachineConfig { format: PixelFormat::Nv12, ..small(board) });
        assert_clean(&report);
    }
}

#[test]
fn a_stride_larger_than_the_row_in_both_modes() {
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        // 320 pixels of YUY2 are 640 bytes; the application's buffer lines are 704.
        let report = run_ok(MachineConfig { stride: Some(704), ..small(board) });
        assert_clean(&report);
        let report = run_ok(MachineConfig { stride: Some(704), format: PixelFormat::Nv12, ..small(board) });
        assert_clean(&report);
    }
}

#[test]
fn max_mapping_byte_count_below_a_page_and_not_a_multiple_of_512() {
    let config = MachineConfig { max_mapping_bytes: Some(1000), ..small(BoardKind::ScatterGather) };
    let frame = image_bytes(&config);
    let report = run_ok(config);
    assert_clean(&report);
    let c = &report.channels[0];
    // Every mapping holds at most 1000 bytes, so a frame needs at least frame/1000 of them.
    assert!(c.sg_elements >= c.frames_delivered * frame.div_ceil(1000), "{c:?}");
}

#[test]
fn four_channels_at_once_in_both_modes() {
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let report = run_ok(MachineConfig { channels: 4, ..small(board) });
        assert_eq!(report.channels.len(), 4);
        assert_clean(&report);
    }
}

#[test]
fn an_application_slower_than_the_board_drops_frames_but_corrupts_none() {
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        // Two buffers, each held for 2.5 frame intervals: the board outruns the application.
        let config = MachineConfig { app_buffers: 2, app_hold_100ns: 416_666, frames: 60, ..small(board) };
        let report = run_ok(config);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        let c = &report.channels[0];
        assert!(c.frames_dropped > 0, "{board:?}: a slow application must lose frames: {c:?}");
        assert!(c.frames_delivered > 0);
        assert_eq!(c.frames_corrupt, 0);
        assert_eq!(c.frames_verified, c.frames_delivered);
        assert_eq!(c.frames_delivered + c.frames_dropped, c.frames_captured, "every frame accounted for");
        assert!(c.board_dropped + c.driver_dropped > 0, "the drops are counted where they happen: {c:?}");
    }
}

#[test]
fn a_32_bit_board_with_memory_above_4_gib_prefers_common_buffer() {
    let config = MachineConfig { dma32: true, high_memory: true, ..small(BoardKind::ScatterGather) };
    let report = run_ok(config);
    assert_clean(&report);
    assert_eq!(report.channels[0].mode, DmaMode::CommonBuffer.name());
    assert_eq!(report.channels[0].mode_reason, ModeReason::AddressLimitPreferCommonBuffer.describe());
}

#[test]
fn forced_scatter_gather_on_a_32_bit_board_bounces_through_map_registers() {
    let config = MachineConfig {
        dma32: true,
        high_memory: true,
        mode: DmaModeOverride::ScatterGather,
        map_registers: 512,
        ..small(BoardKind::ScatterGather)
    };
    let mut machine = Machine::new(config).unwrap();
    machine.start().unwrap();
    machine.run(&mut RunHooks::default());
    let adapters = machine.bus().platform().adapters();
    machine.teardown();
    let report = machine.report();
    assert_clean(&report);
    assert_eq!(report.channels[0].mode, DmaMode::ScatterGather.name());
    let bounced: u64 = adapters.iter().map(|a| a.stats().bounced_pages).sum();
    assert!(bounced > 0, "pages above 4 GiB must go through bounce buffers");
    assert!(adapters.iter().all(|a| a.stats().map_registers_peak <= 512));
}

#[test]
fn forced_scatter_gather_without_enough_map_registers_for_a_frame_falls_back() {
    let config = MachineConfig {
        dma32: true,
        high_memory: true,
        mode: DmaModeOverride::ScatterGather,
        map_registers: 8,
        ..small(BoardKind::ScatterGather)
    };
    let report = run_ok(config);
    assert_clean(&report);
    assert_eq!(report.channels[0].mode_reason, ModeReason::AddressLimitNoMapRegisters.describe());
}

#[test]
fn invalid_formats_are_rejected_by_set_data_format_and_nothing_leaks() {
    let bad = [
        MachineConfig { width: 321, ..small(BoardKind::Legacy) },
        MachineConfig { height: 241, ..small(BoardKind::ScatterGather) },
        MachineConfig { stride: Some(600), ..small(BoardKind::ScatterGather) },
        MachineConfig { stride: Some(642), ..small(BoardKind::Legacy) },
    ];
    for config in bad {
        match run(config.clone(), &mut RunHooks::default()) {
            Err(RunError::Driver { step, status, report }) => {
                assert!(step.contains("SetDataFormat"), "{step}");
                assert_eq!(status, STATUS_INVALID_PARAMETER);
                assert!(report.violations.is_empty(), "a refused start leaks nothing: {:#?}", report.violations);
            }
            Ok(r) => panic!("{}x{} stride {:?} was accepted: {r:?}", config.width, config.height, config.stride),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn buffers_above_4_gib_stream_on_a_64_bit_board_in_both_modes() {
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let report = run_ok(MachineConfig { high_memory: true, ..small(board) });
        assert_clean(&report);
    }
}
