//! `capdma-sim stream --drivers images`: the main job through both real
//! images — `capdma_avstream.sys` over `capdma_bus.sys` in the emulated
//! kernel with its emulated `ks.sys`, the application's filter and pin on
//! each channel's KS device — in the configurations `stream` offers: every
//! frame verified byte for byte, no violation, no Driver Verifier finding,
//! no bugcheck, nothing leaked in either world.
//!
//! Needs `/dev/kvm` and both images (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

mod support;


use capdma_interface::format::PixelFormat;
use capdma_sim::board::{BoardKind, CaptureOutcome};
use capdma_sim::machine::{self, ChannelLog, Drivers, Machine, MachineConfig, RunHooks, RunReport};
use capdma_sim::pnp::{FilterKind, StackLayout};

/// Both images, or `None` (reason printed) outside CI.
fn images() -> Option<Drivers> {
    let bus = support::image("capdma_bus")?;
    let avstream = support::image("capdma_avstream")?;
    Some(Drivers::Images { bus, avstream, map_register_limit: None })
}

/// A small configuration through both images: 320x240 at 60 fps, 12 frames.
fn config(drivers: &Drivers, board: BoardKind, format: PixelFormat) -> MachineConfig {
    MachineConfig { board, format, width: 320, height: 240, frames: 12, drivers: drivers.clone(), ..MachineConfig::default() }
}

/// The mode the bus picks for `board` (with memory it can reach).
fn mode_of(board: BoardKind) -> &'static str {
    match board {
        BoardKind::ScatterGather => "scatter-gather",
        BoardKind::Legacy => "common-buffer",
    }
}

/// Runs `config`; a driver error fails the test with its report.
fn run(config: MachineConfig, what: &str) -> RunReport {
    machine::run(config, &mut RunHooks::default()).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runs `config` to the end; its report and channel 0's log.
fn run_logged(config: MachineConfig) -> (RunReport, ChannelLog) {
    let mut m = Machine::new(config).expect("machine");
    m.start().expect("start");
    m.run(&mut RunHooks::default());
    let log = m.channel_log(0, 0).expect("channel 0");
    m.teardown();
    (m.report(), log)
}

/// The run passed in `mode`; every channel captured and delivered every
/// frame, each verified, none corrupt, one interrupt each; no violation
/// (leaks of either world are violations) and the kernel saw no finding or
/// bugcheck; both images ran and the emulated KS drove their pins.
fn assert_clean(report: &RunReport, config: &MachineConfig, mode: &str, what: &str) {
    assert!(report.violations.is_empty(), "{what}: violations:\n{}", report.violations.join("\n"));
    assert!(report.passed(), "{what}:\n{}", report.summary());
    assert_eq!(report.channels.len(), (config.channels * config.cards) as usize, "{what}");
    for c in &report.channels {
        let at = format!("{what}: card {} channel {}", c.card, c.channel);
        assert_eq!(c.frames_captured, u64::from(config.frames), "{at}: captured");
        assert_eq!(c.frames_delivered, c.frames_captured, "{at}: lost frames");
        assert_eq!(c.frames_verified, c.frames_delivered, "{at}: verified");
        assert_eq!(c.frames_corrupt, 0, "{at}");
        assert_eq!(c.mode, mode, "{at}");
    }
    assert_images_ran(report, what);
    let captured: u64 = report.channels.iter().map(|c| c.frames_captured).sum();
    assert_eq!(report.image.as_ref().map(|i| i.isr_calls), Some(captured), "{what}: one interrupt per frame");
}

/// Both images ran in the kernel, which saw no finding or bugcheck, and the
/// emulated KS called their `Process` for the frames the application queued.
fn assert_images_ran(report: &RunReport, what: &str) {
    assert_eq!(report.drivers, "images", "{what}");
    let image = report.image.as_ref().expect("the kernel's account");
    assert_eq!((image.findings, image.bugchecks), (0, 0), "{what}: {image:?}");
    assert!(image.ddi_calls > 0 && image.verifier_checks > 0, "{what}: {image:?}");
    assert!(image.avstream_path.as_deref().is_some_and(|p| p.ends_with("capdma_avstream.sys")), "{what}: {image:?}");
    assert_eq!(image.avstream_sha256.as_ref().map(String::len), Some(64), "{what}");
    let ks = image.ks.expect("the emulated ks.sys's counters");
    let delivered: u64 = report.channels.iter().map(|c| c.frames_delivered).sum();
    assert!(ks.process_calls > 0, "{what}: {ks:?}");
    assert!(ks.frames_submitted >= delivered, "{what}: {ks:?}");
}

#[test]
fn both_modes_and_both_formats_stream_through_both_images_with_every_frame_verified() {
    let Some(drivers) = images() else { return };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        for format in [PixelFormat::Yuy2, PixelFormat::Nv12] {
            let what = format!("{board:?} {format:?}");
            let config = config(&drivers, board, format);
            let mut m = Machine::new(config.clone()).expect("machine");
            m.start().expect("start");
            m.run(&mut RunHooks::default());
            let old_entry_point = m.image_ddi_calls("KsDeviceRegisterAdapterObject");
            let outer_unknowns = m.image_ddi_calls("KsGetOuterUnknown");
            let registrations = m.image_adapters_registered_ex();
            m.teardown();
            let report = m.report();
            assert_clean(&report, &config, mode_of(board), &what);
            let c = &report.channels[0];
            if board == BoardKind::ScatterGather {
                // The image registered the bus's adapter and KS generated
                // the mappings of every frame it wrote.
                // Through IKsDeviceFunctions::RegisterAdapterObjectEx, as the
                // docs prescribe for x64, not the older entry point.
                assert_eq!((registrations, outer_unknowns, old_entry_point), (1, 1, 0), "{what}");
                assert!(c.sg_elements >= c.frames_delivered, "{what}: {c:?}");
            } else {
                assert_eq!((registrations, outer_unknowns, c.sg_elements), (0, 0, 0), "{what}: common-buffer mode maps nothing");
            }
        }
    }
}

#[test]
fn a_stride_wider_than_the_row_is_honoured_in_both_modes() {
    let Some(drivers) = images() else { return };
    for (format, stride) in [(PixelFormat::Yuy2, 1024), (PixelFormat::Nv12, 512)] {
        for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
            let config = MachineConfig { stride: Some(stride), ..config(&drivers, board, format) };
            assert!(stride > config.line_bytes());
            assert_clean(&run(config.clone(), "stride"), &config, mode_of(board), &format!("{board:?} {format:?} stride {stride}"));
        }
    }
}

#[test]
fn mappings_of_at_most_1000_bytes_deliver_every_frame() {
    let Some(drivers) = images() else { return };
    let base = config(&drivers, BoardKind::ScatterGather, PixelFormat::Yuy2);
    let whole = run(base.clone(), "default mappings");
    assert_clean(&whole, &base, "scatter-gather", "default mappings");
    // Below a page and not a multiple of 512: every KS mapping is at most
    // 1000 bytes, so a 153600-byte frame takes at least 154 of them.
    let config = MachineConfig { max_mapping_bytes: Some(1000), ..base };
    let small = run(config.clone(), "1000-byte mappings");
    assert_clean(&small, &config, "scatter-gather", "1000-byte mappings");
    let c = &small.channels[0];
    let per_frame = u64::from(config.line_bytes() * config.height).div_ceil(1000);
    assert!(c.sg_elements >= c.frames_delivered * per_frame, "{c:?}");
    assert!(c.sg_elements > whole.channels[0].sg_elements, "{c:?} vs {:?}", whole.channels[0]);
}

#[test]
fn four_channels_each_deliver_every_frame() {
    let Some(drivers) = images() else { return };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let config = MachineConfig { channels: 4, ..config(&drivers, board, PixelFormat::Nv12) };
        let report = run(config.clone(), "4 channels");
        assert_clean(&report, &config, mode_of(board), &format!("{board:?}, 4 channels"));
        let channels: Vec<u32> = report.channels.iter().map(|c| c.channel).collect();
        assert_eq!(channels, [0, 1, 2, 3]);
    }
}

#[test]
fn a_slow_application_loses_the_frames_the_cores_lose_and_none_is_corrupt() {
    let Some(drivers) = images() else { return };
    let Drivers::Images { bus, .. } = &drivers else { unreachable!() };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        // Two buffers, each held 1.8 frame intervals: for some frames there
        // is no buffer.
        let config = MachineConfig { frames: 30, app_buffers: 2, ..config(&drivers, board, PixelFormat::Yuy2) };
        let config = MachineConfig { app_hold_100ns: config.frame_interval_100ns() * 9 / 5, ..config };
        let (images, images_log) = run_logged(config.clone());
        // The AVStream core over the same bus image, and both cores.
        let bus_image = Drivers::BusImage { path: bus.clone(), map_register_limit: None };
        let (core, core_log) = run_logged(MachineConfig { drivers: bus_image, ..config.clone() });
        let cores = run(MachineConfig { drivers: Drivers::Cores, ..config }, "slow application, cores");
        for report in [&images, &core, &cores] {
            assert!(report.passed(), "{board:?} {}:\n{}", report.drivers, report.summary());
        }
        assert_images_ran(&images, "slow application");
        let (i, c) = (&images.channels[0], &cores.channels[0]);
        assert!(c.frames_delivered < c.frames_captured, "the cores dropped none: the application is not slow: {c:?}");
        assert_eq!(i.mode, mode_of(board));
        assert_eq!(
            (i.frames_captured, i.frames_delivered, i.frames_verified, i.frames_corrupt),
            (c.frames_captured, c.frames_delivered, c.frames_verified, 0),
            "{board:?}: images vs cores"
        );
        // Frame for frame and at the same virtual times as the AVStream
        // core over the same bus image; in order, none twice.
        assert_eq!(images_log.delivered, core_log.delivered, "{board:?}: the AVStream image vs its core");
        assert!(images_log.delivered.windows(2).all(|w| w[0].1 < w[1].1), "{:?}", images_log.delivered);
        // Common-buffer: the board wrote every frame (a slot is always
        // free) and the driver dropped those it had no buffer for; S/G: the
        // board had no descriptors for them. As with the cores.
        let board_dropped = images_log.captures.iter().filter(|(_, o)| matches!(o, CaptureOutcome::Dropped(_))).count() as u64;
        assert_eq!(board_dropped, c.board_dropped, "{board:?}: frames the board dropped");
    }
}

#[test]
fn an_application_holding_each_frame_longer_than_a_frame_interval_stops_with_the_run() {
    // Found hanging: frames held past the run's end went back to the
    // drivers, the bus's watchdog (the board quiet after the last capture)
    // handed them back empty, and the application resubmitted them for ever.
    let Some(drivers) = images() else { return };
    let Drivers::Images { bus, .. } = &drivers else { unreachable!() };
    for board in [BoardKind::ScatterGather, BoardKind::Legacy] {
        let config = MachineConfig { frames: 30, app_buffers: 4, ..config(&drivers, board, PixelFormat::Yuy2) };
        let interval = config.frame_interval_100ns();
        let config = MachineConfig { app_hold_100ns: interval * 12 / 5, ..config };
        let bus_image = Drivers::BusImage { path: bus.clone(), map_register_limit: None };
        let cores = run(MachineConfig { drivers: Drivers::Cores, ..config.clone() }, "long hold, cores");
        let core = run(MachineConfig { drivers: bus_image, ..config.clone() }, "long hold, bus image");
        let images = run(config, "long hold, images");
        let c = &cores.channels[0];
        assert!(c.frames_delivered < c.frames_captured, "{board:?}: the cores dropped none: the hold is not long: {c:?}");
        for report in [&core, &images] {
            assert!(report.passed(), "{board:?} {}:\n{}", report.drivers, report.summary());
            let r = &report.channels[0];
            assert_eq!(
                (r.frames_captured, r.frames_delivered, r.frames_verified, r.frames_corrupt),
                (c.frames_captured, c.frames_delivered, c.frames_verified, 0),
                "{board:?} {} vs cores",
                report.drivers
            );
            // The run ends when the cores' does, not a watchdog period later.
            let late = (report.sim_time_s - cores.sim_time_s).abs();
            assert!(late * 1e7 < f64::from(u32::try_from(interval).unwrap_or(u32::MAX)), "{board:?} {}: ended {late} s apart from the cores", report.drivers);
        }
    }
}

#[test]
fn with_a_master_clock_the_avstream_image_stamps_every_frame_with_its_stream_time() {
    let Some(drivers) = images() else { return };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let config = MachineConfig { reference_clock: true, channels: 2, ..config(&drivers, board, PixelFormat::Yuy2) };
        let what = format!("{board:?}, reference clock");
        let report = run(config.clone(), &what);
        // Every frame delivered and verified, and none stamped off the clock:
        // the emulated KS checks each time against the clock as the frame
        // comes back, the application against the clock at its capture.
        assert_clean(&report, &config, mode_of(board), &what);
        let ks = report.image.as_ref().and_then(|i| i.ks).expect("the emulated ks.sys's counters");
        // Each pin took the clock once (at STOP -> ACQUIRE) and read it once
        // per frame it delivered.
        assert_eq!(ks.clock_interfaces, 2, "{what}: {ks:?}");
        let delivered: u64 = report.channels.iter().map(|c| c.frames_delivered).sum();
        assert_eq!(ks.clock_reads, delivered, "{what}: {ks:?}");
        // Without the clock assigned, the image reads none.
        let plain = run(MachineConfig { reference_clock: false, ..config }, &what);
        let ks = plain.image.as_ref().and_then(|i| i.ks).expect("counters");
        assert_eq!((ks.clock_interfaces, ks.clock_reads), (0, 0), "{what}: no clock");
    }
}

#[test]
fn a_32_bit_board_with_memory_above_4_gib_streams_in_common_buffer_mode_as_the_cores_choose() {
    let Some(drivers) = images() else { return };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let config = MachineConfig { dma32: true, high_memory: true, ..config(&drivers, board, PixelFormat::Yuy2) };
        let what = format!("{board:?}, 32-bit board, memory above 4 GiB");
        let cores = run(MachineConfig { drivers: Drivers::Cores, ..config.clone() }, &what);
        // Bouncing every frame through map registers loses to one copy out
        // of a common buffer the board can reach.
        assert_eq!(cores.channels[0].mode, "common-buffer", "{what}: {}", cores.channels[0].mode_reason);
        let report = run(config.clone(), &what);
        assert_clean(&report, &config, "common-buffer", &what);
    }
}

#[test]
fn filters_below_and_above_both_drivers_pass_everything_and_go_with_their_stacks() {
    let Some(drivers) = images() else { return };
    let two = vec![FilterKind::PassThrough; 2];
    let stack = StackLayout { below_bus: two.clone(), above_bus: two.clone(), below_avstream: two.clone(), above_avstream: two };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let config = MachineConfig { channels: 2, stack: stack.clone(), ..config(&drivers, board, PixelFormat::Yuy2) };
        let mut m = Machine::new(config.clone()).expect("machine");
        m.start().expect("start");
        for ch in 0..2 {
            let layers = m.image_child_stack(0, ch).expect("the child's stack");
            assert_eq!(layers.len(), 6, "{layers:?}");
            assert!(layers[0].starts_with("capdma_bus"), "the bus image's child PDO at the bottom: {layers:?}");
            assert_eq!(&layers[1..], ["filter", "filter", "ks.sys (KsCreateDevice)", "filter", "filter"], "channel {ch}");
        }
        m.run(&mut RunHooks::default());
        m.teardown();
        assert!(m.image_child_stack(0, 0).is_none(), "the children were removed");
        // A filter left behind would be a leak (a finding) of the kernel.
        assert_clean(&m.report(), &config, mode_of(board), &format!("{board:?} with filters"));
    }
    // Without filters the child's stack is the PDO and the AVStream FDO.
    let config = config(&drivers, BoardKind::Legacy, PixelFormat::Yuy2);
    let mut m = Machine::new(config).expect("machine");
    m.start().expect("start");
    let layers = m.image_child_stack(0, 0).expect("the child's stack");
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert_eq!(layers[1], "ks.sys (KsCreateDevice)");
    m.teardown();
    assert!(m.report().violations.is_empty(), "{:?}", m.report().violations);
}

/// The HAL refuses one transfer needing more map registers than it
/// granted; the emulated KS maps such a frame by several transfers into one
/// whole mapping table, and the image streams it in S/G mode.
#[test]
fn a_frame_larger_than_the_map_registers_granted_streams_mapped_by_several_transfers() {
    let Some(drivers) = images() else { return };
    // 320x240 YUY2 is 38 pages; the HAL grants 16.
    let config = MachineConfig { drivers: drivers.with_map_register_limit(16), ..config(&drivers, BoardKind::ScatterGather, PixelFormat::Yuy2) };
    let frames = config.frames;
    let (report, log) = run_logged(config.clone());
    assert_clean(&report, &config, mode_of(BoardKind::ScatterGather), "16 map registers");
    assert_eq!(report.channels[0].frames_delivered, u64::from(frames));
    assert!(log.ks_sg_lists >= 3 * report.channels[0].frames_delivered, "three transfers per frame: {} lists", log.ks_sg_lists);
    let ks = report.image.as_ref().and_then(|i| i.ks).expect("the emulated ks.sys's counters");
    assert!(ks.process_calls <= ks.frames_submitted + ks.attempts + 1, "{ks:?}");
}

#[test]
fn a_y4m_clip_comes_back_bit_exact_through_both_images_in_both_modes() {
    if images().is_none() {
        return;
    }
    support::y4m_round_trip(&["--drivers", "images", "--json"], |out, what| {
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(json["drivers"], "images", "{what}");
        assert_eq!(json["channels"][0]["frames_verified"], 12, "{what}");
    });
}
