//! `capdma-sim stream --drivers bus-image`: the simulated machine with the
//! real `capdma_bus.sys` in the emulated kernel under the AVStream core, the
//! KS model and the application — every frame verified byte for byte, no
//! Driver Verifier finding, no bugcheck, nothing leaked in either world.
//!
//! Needs `/dev/kvm` and the image (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

mod support;

use std::path::PathBuf;

use capdma_bus::config::DmaModeOverride;
use capdma_interface::format::PixelFormat;
use capdma_sim::board::BoardKind;
use capdma_sim::machine::{self, Drivers, Machine, MachineConfig, RunHooks, RunReport};
use sha2::{Digest, Sha256};

/// The bus image, or `None` (reason printed) outside CI.
fn image() -> Option<PathBuf> {
    support::image("capdma_bus")
}

/// A small bus-image configuration: 320x240 YUY2, 12 frames.
fn config(path: PathBuf, board: BoardKind) -> MachineConfig {
    MachineConfig {
        board,
        width: 320,
        height: 240,
        frames: 12,
        drivers: Drivers::BusImage { path, map_register_limit: None },
        ..MachineConfig::default()
    }
}

/// The run passed, every channel delivered every frame it captured and
/// each verified, the kernel saw no finding or bugcheck.
fn assert_clean(report: &RunReport, what: &str) {
    assert!(report.violations.is_empty(), "{what}: violations:\n{}", report.violations.join("\n"));
    assert!(report.passed(), "{what}:\n{}", report.summary());
    for c in &report.channels {
        assert!(c.frames_captured > 0, "{what}: card {} channel {} captured nothing", c.card, c.channel);
        assert_eq!(c.frames_delivered, c.frames_captured, "{what}: card {} channel {} lost frames", c.card, c.channel);
        assert_eq!(c.frames_verified, c.frames_delivered, "{what}: card {} channel {}", c.card, c.channel);
    }
    assert_eq!(report.drivers, "bus-image");
    let image = report.image.as_ref().expect("the kernel's account");
    assert_eq!((image.findings, image.bugchecks), (0, 0), "{what}");
    assert!(image.ddi_calls > 0 && image.verifier_checks > 0 && image.isr_calls > 0, "{what}: {image:?}");
}

#[test]
fn both_modes_stream_through_the_image_with_every_frame_verified() {
    let Some(path) = image() else { return };
    for (board, mode) in [(BoardKind::Legacy, "common-buffer"), (BoardKind::ScatterGather, "scatter-gather")] {
        let report = machine::run(config(path.clone(), board), &mut RunHooks::default()).expect("the run");
        assert_clean(&report, mode);
        assert_eq!(report.channels[0].mode, mode);
        let c = &report.channels[0];
        if board == BoardKind::Legacy {
            assert!(c.bytes_copied > 0, "common-buffer mode copies out of the slots");
        } else {
            assert!(c.sg_elements > 0 && c.bytes_copied == 0, "S/G mode writes straight into the frames");
        }
        let image = report.image.as_ref().unwrap();
        assert_eq!(image.isr_calls, c.frames_captured, "one interrupt per frame, through the dispatcher");
        // The budget: tens of VM exits per frame, not thousands.
        assert!(image.vm_exits_per_frame_streaming < 100.0, "{mode}: {image:?}");
    }
}

#[test]
fn both_modes_stream_clean_with_the_image_preempted_at_arbitrary_instructions() {
    let Some(path) = image() else { return };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let config = MachineConfig { frames: 30, preemption_us: Some(50), ..config(path.clone(), board) };
        let report = machine::run(config, &mut RunHooks::default()).expect("the run");
        assert_clean(&report, "preempted");
        let image = report.image.as_ref().unwrap();
        assert!(image.preemptions > 0, "no kick landed in the image's code: {image:?}");
    }
}

#[test]
fn the_board_is_programmed_with_logical_addresses_of_the_adapters_domain() {
    let Some(path) = image() else { return };
    let mut m = Machine::new(config(path, BoardKind::ScatterGather)).expect("machine");
    assert!(m.board().dma_domain().is_none(), "nothing before the start");
    m.start().expect("start");
    let domain = m.board().dma_domain().expect("the board is behind the image's adapter domain");
    let live = domain.live_ranges();
    // The descriptor ring and completion queue (common buffers) and the
    // mapped frames: all at logical addresses of the 64-bit window.
    assert!(live.len() >= 3, "{live:?}");
    assert!(live.iter().all(|r| r.start >= 64 << 30), "{live:?}");
    m.run(&mut RunHooks::default());
    assert_eq!(domain.faults(), 0);
    m.teardown();
    assert!(m.board().dma_domain().is_none(), "the adapter was put");
    assert!(domain.live_ranges().is_empty(), "everything unmapped: {:?}", domain.live_ranges());
    assert_clean(&m.report(), "sg");
}

/// A change to the base configuration.
type Change = Box<dyn Fn(&mut MachineConfig)>;

#[test]
fn the_configurations_of_stream_run_through_the_image() {
    let Some(path) = image() else { return };
    let cases: Vec<(&str, Change)> = vec![
        ("legacy, 2 channels, NV12", Box::new(|c| {
            c.channels = 2;
            c.format = PixelFormat::Nv12;
        })),
        ("sg, 3 channels", Box::new(|c| {
            c.board = BoardKind::ScatterGather;
            c.channels = 3;
        })),
        ("sg, 32-bit board, memory above 4 GiB", Box::new(|c| {
            c.board = BoardKind::ScatterGather;
            c.dma32 = true;
            c.high_memory = true;
        })),
        ("legacy, memory above 4 GiB, 8 slots", Box::new(|c| {
            c.high_memory = true;
            c.slot_count = 8;
        })),
        ("sg, 4 KiB alignment, 4 KiB mappings, a stride", Box::new(|c| {
            c.board = BoardKind::ScatterGather;
            c.alignment = Some(4096);
            c.max_mapping_bytes = Some(4096);
            c.stride = Some(1024);
        })),
        ("sg board forced to common-buffer", Box::new(|c| {
            c.board = BoardKind::ScatterGather;
            c.mode = DmaModeOverride::CommonBuffer;
        })),
        ("sg, map registers capped at what a frame needs", Box::new(|c| {
            c.board = BoardKind::ScatterGather;
            c.drivers = c.drivers.with_map_register_limit(64);
        })),
        ("two cards on the shared line", Box::new(|c| {
            c.cards = 2;
            c.board = BoardKind::ScatterGather;
        })),
    ];
    for (what, change) in cases {
        let mut c = config(path.clone(), BoardKind::Legacy);
        change(&mut c);
        let report = machine::run(c, &mut RunHooks::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_clean(&report, what);
    }
}

/// The HAL refuses one transfer needing more map registers than it granted
/// (a DMA violation, `sim/src/ks/mapping.rs`'s tests); KS maps a frame
/// larger than the grant by several transfers instead, so every frame
/// streams and nothing asks for more than the grant.
#[test]
fn a_frame_larger_than_the_map_registers_granted_is_mapped_by_several_transfers() {
    let Some(path) = image() else { return };
    let mut c = config(path, BoardKind::ScatterGather);
    // 320x240 YUY2 is 38 pages; grant 16.
    c.drivers = Drivers::BusImage { path: machine::image::default_image_path(), map_register_limit: Some(16) };
    let frames = c.frames;
    let report = machine::run(c, &mut RunHooks::default()).expect("the run");
    assert_clean(&report, "frames of 38 pages, 16 map registers");
    assert_eq!(report.channels[0].frames_delivered, u64::from(frames));
}

#[test]
fn the_json_says_which_drivers_ran_and_what_the_kernel_did() {
    let Some(path) = image() else { return };
    let out = support::sim(&["stream", "--drivers", "bus-image", "--board", "sg", "--size", "320x240", "--frames", "6", "--json"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["result"], "pass");
    assert_eq!(json["drivers"], "bus-image");
    let image = &json["image"];
    let expected = std::fs::canonicalize(&path).unwrap();
    assert_eq!(image["path"].as_str().unwrap(), expected.to_str().unwrap());
    let sha = Sha256::digest(std::fs::read(&path).unwrap()).iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        write!(s, "{b:02x}").unwrap();
        s
    });
    assert_eq!(image["sha256"].as_str().unwrap(), sha);
    for field in ["ddi_calls", "verifier_checks", "vm_exits", "isr_calls", "dpc_runs"] {
        assert!(image[field].as_u64().unwrap() > 0, "{field}: {image}");
    }
    for field in ["findings", "bugchecks", "cr8_traps"] {
        assert_eq!(image[field].as_u64(), Some(0), "{field}: {image}");
    }
    assert!(image["vm_exits_per_frame_streaming"].as_f64().unwrap() > 0.0);
    assert_eq!(json["channels"][0]["frames_verified"], 6);
    // The default path says which drivers ran too, and has no kernel.
    let out = support::sim(&["stream", "--size", "320x240", "--frames", "3", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["drivers"], "cores");
    assert!(json.get("image").is_none());
    // And the summary.
    let out = support::sim(&["stream", "--drivers", "bus-image", "--size", "320x240", "--frames", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("drivers: bus-image") && text.contains("sha256 ") && text.contains("Verifier checks"), "{text}");
}

#[test]
fn a_missing_image_is_a_clear_error_naming_the_build() {
    let out = support::sim(&["stream", "--drivers", "bus-image", "--bus-image", "/nonexistent/capdma_bus.sys", "--frames", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/capdma_bus.sys") && err.contains("cargo xtask windows"), "{err}");
    let out = support::sim(&["stream", "--bus-image", "/x.sys", "--frames", "2"]);
    assert_eq!(out.status.code(), Some(2), "--bus-image without --drivers bus-image");
}

#[test]
fn a_reference_never_dropped_fails_the_run() {
    use capdma_avstream::bus_client::BusClient;
    use capdma_interface::guid::GUID_CAPDMA_BUS_INTERFACE;
    let Some(path) = image() else { return };
    let mut m = Machine::new(config(path, BoardKind::Legacy)).expect("machine");
    m.start().expect("start");
    m.run(&mut RunHooks::default());
    // A second client on channel 0's stack takes a reference and never gives it back.
    let fdo = m.avstream_fdo(0, 0).unwrap();
    let status = m.in_driver_context(|m| {
        let mut answer = BusClient::query_buffer();
        // SAFETY: `answer` is a live local of `Size` bytes.
        let irp = unsafe {
            m.tree().query_interface(fdo, Some(GUID_CAPDMA_BUS_INTERFACE), answer.header.size, answer.header.version, (&raw mut answer).cast())
        };
        irp.status
    });
    assert_eq!(status, 0, "the image's child answered through the tree");
    m.teardown();
    let report = m.report();
    assert!(!report.passed());
    assert!(
        report.violations.iter().any(|v| v.contains("card 0 channel 0: 1 capdma interface reference(s) of the bus image never dropped")),
        "{:?}",
        report.violations
    );
}
