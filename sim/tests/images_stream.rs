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
use capdma_sim::board::BoardKind;
use capdma_sim::machine::{Drivers, Machine, MachineConfig, RunHooks, RunReport};
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
