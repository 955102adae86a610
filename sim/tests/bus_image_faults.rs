//! `capdma-sim faults --drivers bus-image`: the fault-matrix rows whose
//! subject is the bus driver, run through the real `capdma_bus.sys` in the
//! emulated kernel and judged as the cores are (nothing corrupt delivered
//! as good, recovery, no violation, no leak) plus no Driver Verifier finding
//! and no bugcheck; the other rows listed as not applicable with a reason.
//!
//! Needs `/dev/kvm` and the image (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

mod support;

use std::process::Command;

use capdma_sim::faults::{not_with_image, run_matrix, run_row, ROWS};
use capdma_sim::machine::Drivers;

const SEED: u64 = 5;

/// The bus-image drivers, or `None` (reason printed) outside CI.
fn image() -> Option<Drivers> {
    let path = support::image("capdma_bus")?;
    Some(Drivers::BusImage { path, map_register_limit: None })
}

/// The rows the bus image must run: the faults whose subject is the bus.
const BUS_ROWS: &[&str] = &[
    "dma-error/sg",
    "dma-error/cb",
    "hang/sg",
    "hang/cb",
    "spurious-interrupt/shared-line",
    "interrupt-storm/sg",
    "bad-slot-index/sg",
    "bad-slot-index/cb",
    "bad-descriptor-index/sg",
    "bad-descriptor-index/cb",
    "oversized-length/sg",
    "oversized-length/cb",
    "surprise-removal/sg",
    "surprise-removal/cb",
    "ring/frame-in-parts",
    "map-registers/too-few",
    "remove-while-referenced",
    "close-while-reset-hangs/images",
    "surprise-removal-open-pins/images",
];

#[test]
fn every_bus_row_holds_through_the_image_and_the_rest_say_why_not() {
    let Some(drivers) = image() else { return };
    let rows = run_matrix(None, &drivers, SEED, |_| {});
    assert_eq!(rows.len(), ROWS.len(), "every row is listed");
    for row in &rows {
        assert_eq!(row.drivers, "bus-image");
        if let Some(why) = &row.not_applicable {
            assert!(!BUS_ROWS.contains(&row.name.as_str()), "{} must run through the image, not: {why}", row.name);
            assert!(why.len() > 20, "{}: a reason, not a placeholder: {why:?}", row.name);
            assert!(row.checks.is_empty() && row.frames_captured == 0, "{}: not run", row.name);
            continue;
        }
        assert!(BUS_ROWS.contains(&row.name.as_str()), "{} ran through the image but is not listed as a bus row", row.name);
        support::assert_row_held(row);
    }
    let ran: Vec<&str> = rows.iter().filter(|r| r.not_applicable.is_none()).map(|r| r.name.as_str()).collect();
    assert_eq!(ran, BUS_ROWS, "exactly the bus rows ran");
}

#[test]
fn the_image_counts_come_from_its_trace_and_can_fail_a_row() {
    let Some(drivers) = image() else { return };
    // The DMA error: the image's EngineReset (cause error-interrupt) is what
    // the row's "the bus handled the error interrupt" check reads.
    let row = run_row("dma-error/sg", &drivers, SEED).expect("the row");
    let handled = row.checks.iter().find(|c| c.what.starts_with("the bus handled the error interrupt")).expect("the check");
    assert!(handled.ok && !handled.what.contains("board errors 0"), "{handled:?}");
    // A refused record names its fault in the trace.
    let row = run_row("oversized-length/cb", &drivers, SEED).expect("the row");
    let refused = row.checks.iter().find(|c| c.what.starts_with("the record was refused")).expect("the check");
    assert!(refused.ok && refused.what.contains("ByteCountTooLarge"), "{refused:?}");
    // Not applicable only with the image; the cores run every row.
    assert!(not_with_image("stop-start/sg").is_some());
    let cores = run_row("stop-start/sg", &Drivers::Cores, SEED).expect("the row");
    assert!(cores.not_applicable.is_none() && !cores.checks.is_empty());
}

#[test]
fn surprise_removal_goes_through_the_image_pnp_manager() {
    let Some(drivers) = image() else { return };
    let row = run_row("surprise-removal/sg", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    let order: Vec<&str> = row
        .statuses
        .iter()
        .map(String::as_str)
        .filter(|s| s.starts_with("card 0") && (s.contains("SURPRISE") || s.contains("after surprise") || s.contains("REMOVE_DEVICE")))
        .collect();
    assert_eq!(
        order,
        [
            "card 0: IRP_MN_SURPRISE_REMOVAL (bus image): STATUS_SUCCESS",
            "card 0: IRP_MN_QUERY_INTERFACE after surprise removal: STATUS_<other>",
            "card 0 channel 0: IRP_MN_REMOVE_DEVICE (AVStream stack): STATUS_SUCCESS",
            "card 0 channel 1: IRP_MN_REMOVE_DEVICE (AVStream stack): STATUS_SUCCESS",
            "card 0: bus image IRP_MN_REMOVE_DEVICE (surprise-removed): STATUS_SUCCESS",
        ],
        "Windows' order: surprise removal, the pins closed, the children's stacks removed, then the bus"
    );
}

#[test]
fn the_cli_says_which_drivers_ran_in_its_json() {
    let Some(_) = image() else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_capdma-sim"))
        .args(["faults", "--drivers", "bus-image", "--only", "hang", "--json", "--seed", "3"])
        .output()
        .expect("capdma-sim runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["result"], "pass");
    assert_eq!(json["drivers"], "bus-image");
    assert_eq!(json["rows_total"], 2);
    assert_eq!(json["rows_failed"], 0);
    for row in json["rows"].as_array().expect("rows") {
        assert_eq!(row["drivers"], "bus-image");
        assert!(row["not_applicable"].is_null(), "{row}");
        assert_eq!(row["holds"], true);
    }
    // A row that does not apply is listed with its reason, and passes.
    let out = Command::new(env!("CARGO_BIN_EXE_capdma-sim"))
        .args(["faults", "--drivers", "bus-image", "--only", "stop-start/cb", "--json"])
        .output()
        .expect("capdma-sim runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["rows_not_applicable"], 1);
    assert!(json["rows"][0]["not_applicable"].as_str().is_some_and(|why| why.contains("AVStream")), "{json}");
    // --bus-image without --drivers bus-image is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_capdma-sim"))
        .args(["faults", "--bus-image", "x.sys", "--list"])
        .output()
        .expect("capdma-sim runs");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
