//! `capdma-sim stream --drivers bus-image --trace`: the bus image's ETW
//! `TraceLogging` events, recorded by the trace session the machine starts
//! in the emulated kernel before `DriverEntry`, decoded, with their virtual
//! time: `DeviceStart` with its mode, an `EngineReset` when the board
//! raises a DMA error, and none in a clean run.
//!
//! Needs `/dev/kvm` and the image (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

mod support;

use std::path::PathBuf;

use capdma_sim::board::{BoardFault, BoardKind};
use capdma_sim::machine::{Action, Drivers, Machine, MachineConfig, RunHooks, RunReport, TraceEvent};

/// The bus image, or `None` (reason printed) outside CI.
fn image() -> Option<PathBuf> {
    support::image("capdma_bus")
}

fn config(path: PathBuf, board: BoardKind) -> MachineConfig {
    MachineConfig {
        board,
        width: 160,
        height: 120,
        frames: 30,
        drivers: Drivers::BusImage { path, map_register_limit: None },
        ..MachineConfig::default()
    }
}

/// Runs the machine, with a DMA error on channel 0 before capture `k` when given.
fn run(config: MachineConfig, dma_error_at: Option<u32>) -> RunReport {
    let mut m = Machine::new(config).expect("the machine");
    m.start().expect("the start");
    if let Some(k) = dma_error_at {
        m.schedule(m.frame_time(k) - 1, Action::InjectFault { card: 0, fault: BoardFault::DmaError { channel: 0 } });
    }
    m.run(&mut RunHooks::default());
    m.teardown();
    m.report()
}

fn events<'a>(trace: &'a [TraceEvent], name: &'a str) -> impl Iterator<Item = &'a TraceEvent> + 'a {
    trace.iter().filter(move |e| e.provider == "Capdma.Bus" && e.event == name)
}

#[test]
fn device_start_states_its_mode_and_a_clean_run_has_no_reset() {
    let Some(path) = image() else { return };
    for (board, mode) in [(BoardKind::Legacy, "common-buffer"), (BoardKind::ScatterGather, "scatter-gather")] {
        let report = run(config(path.clone(), board), None);
        assert!(report.passed(), "{}", report.summary());
        let trace = report.trace.as_deref().expect("a bus-image run keeps its trace");
        let starts: Vec<&TraceEvent> = events(trace, "DeviceStart").collect();
        assert_eq!(starts.len(), 1, "{mode}: {trace:#?}");
        assert_eq!(starts[0].field("Mode"), Some(format!("{mode:?}").as_str()), "{:?}", starts[0]);
        assert!(starts[0].field("Reason").is_some_and(|r| r.len() > 2), "{:?}", starts[0]);
        assert!(starts[0].line.contains("Capdma.Bus/DeviceStart") && starts[0].line.contains(&format!("Mode=\"{mode}\"")));
        // Load, start, children, and at the end the stop and the unload, in order.
        let order: Vec<&str> = trace.iter().map(|e| e.event.as_str()).collect();
        let at = |name: &str| order.iter().position(|e| *e == name).unwrap_or_else(|| panic!("{name} missing: {order:?}"));
        assert!(at("DriverLoad") < at("DeviceStart") && at("DeviceStart") < at("DriverUnload"), "{order:?}");
        // Virtual time only goes forward.
        assert!(trace.windows(2).all(|w| w[0].time_100ns <= w[1].time_100ns));
        assert_eq!(events(trace, "EngineReset").count(), 0, "{mode}: no reset in a clean run: {trace:#?}");
        assert_eq!(events(trace, "WatchdogReset").count(), 0, "{mode}");
    }
}

#[test]
fn a_dma_error_writes_an_engine_reset_with_its_cause_at_its_time() {
    let Some(path) = image() else { return };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let cfg = config(path.clone(), board);
        let k = 12;
        let fault_at = cfg.frame_interval_100ns() * u64::from(k - 1);
        let report = run(cfg, Some(k));
        assert!(report.violations.is_empty(), "{board:?}: {:?}", report.violations);
        let trace = report.trace.as_deref().expect("the trace");
        let resets: Vec<&TraceEvent> = events(trace, "EngineReset").collect();
        assert_eq!(resets.len(), 1, "{board:?}: {trace:#?}");
        assert_eq!(resets[0].field("Cause"), Some("\"error-interrupt\""), "{:?}", resets[0]);
        assert_eq!(resets[0].field("Channel"), Some("0"));
        assert_eq!(resets[0].level, "warning");
        assert!(resets[0].time_100ns >= fault_at, "the reset comes after the fault: {} < {fault_at}", resets[0].time_100ns);
    }
}


#[test]
fn the_cli_prints_the_trace_after_the_summary_or_as_a_json_array() {
    let Some(_) = image() else { return };
    let base = ["stream", "--drivers", "bus-image", "--size", "160x120", "--frames", "10"];
    let out = support::sim(&[&base[..], &["--trace"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let result = text.find("result: PASS").expect("the summary");
    let start = text.find("Capdma.Bus/DeviceStart").expect("the DeviceStart line");
    assert!(result < start, "the trace follows the summary:\n{text}");
    assert!(text.contains("Mode=\"common-buffer\""), "{text}");
    // Without --trace: no trace lines.
    let out = support::sim(&base);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Capdma.Bus/"), "no --trace, no trace");
    // --json --trace: the array; --json alone: no key.
    let out = support::sim(&[&base[..], &["--trace", "--json"]].concat());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let trace = json["trace"].as_array().expect("the trace array");
    let start = trace.iter().find(|e| e["event"] == "DeviceStart").expect("DeviceStart");
    assert_eq!(start["provider"], "Capdma.Bus");
    assert!(start["fields"].as_array().unwrap().iter().any(|f| f["name"] == "Mode" && f["value"] == "\"common-buffer\""), "{start}");
    assert!(start["time_100ns"].is_u64());
    let out = support::sim(&[&base[..], &["--json"]].concat());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(json.get("trace").is_none(), "{json}");
    // The cores write no ETW: --trace with them is a usage error.
    let out = support::sim(&["stream", "--trace", "--frames", "1"]);
    assert_eq!(out.status.code(), Some(2));
}
