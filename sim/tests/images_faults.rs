//! `capdma-sim faults --drivers images`: the fault matrix through both real
//! images, `capdma_avstream.sys` over `capdma_bus.sys`, in the emulated
//! kernel with its emulated `ks.sys`, each row judged as with the cores
//! (nothing corrupt delivered as good, recovery, no violation, no leak)
//! plus no Driver Verifier finding and no bugcheck; the rows that do not
//! apply are listed with the reason.
//!
//! Needs `/dev/kvm` and the images (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

mod support;

use capdma_sim::faults::{not_applicable, run_matrix, run_row, FaultRow, NOT_WITH_IMAGES, ROWS};
use capdma_sim::machine::Drivers;

const SEED: u64 = 5;

/// Both images, or `None` (reason printed) outside CI.
fn images() -> Option<Drivers> {
    let bus = support::image("capdma_bus")?;
    let avstream = support::image("capdma_avstream")?;
    Some(Drivers::Images { bus, avstream, map_register_limit: None })
}

fn describe(row: &FaultRow) -> String {
    format!(
        "{}: failed {:#?}\nviolations: {:#?}\nleaks: {:#?}\nstatuses: {:#?}\nreplay: capdma-sim faults --drivers images --only {} --seed {}",
        row.name,
        row.failures(),
        row.violations,
        row.leaks,
        row.statuses,
        row.name,
        row.seed
    )
}

#[test]
fn every_row_that_applies_holds_through_both_images() {
    let Some(drivers) = images() else { return };
    let rows = run_matrix(None, &drivers, SEED, |_| {});
    assert_eq!(rows.len(), ROWS.len(), "every row is listed");
    let mut ran = 0;
    for row in &rows {
        assert_eq!(row.drivers, "images");
        if let Some(why) = &row.not_applicable {
            assert!(why.len() > 40, "{}: a reason, not a placeholder: {why:?}", row.name);
            assert!(row.checks.is_empty() && row.frames_captured == 0, "{}: not run", row.name);
            continue;
        }
        ran += 1;
        assert!(row.holds, "{}", describe(row));
        assert!(row.recovered, "{}", describe(row));
        assert!(row.violations.is_empty() && row.leaks.is_empty(), "{}", describe(row));
        assert_eq!(row.frames_corrupt, 0, "{}", row.name);
        assert!(row.frames_delivered > 0 && row.frames_verified == row.frames_delivered, "{}", describe(row));
        let kernel = row.checks.iter().find(|c| c.what.starts_with("the emulated kernel:")).map(|c| c.ok);
        assert_eq!(kernel, Some(true), "{}: the Verifier/bugcheck check was made and held", row.name);
    }
    // The rows listed as not applicable are exactly the table's.
    let skipped = rows.iter().filter(|r| r.not_applicable.is_some()).count();
    let listed = ROWS.iter().filter(|s| not_applicable(s.name, &drivers).is_some()).count();
    assert_eq!(skipped, listed);
    assert!(listed <= NOT_WITH_IMAGES.len() + 2, "a fault's modes share one entry");
    assert!(ran >= 22, "{ran} rows ran through the images");
}

#[test]
fn the_pin_rows_reach_the_image_through_the_emulated_ks() {
    let Some(drivers) = images() else { return };
    // The minidriver's own guard refuses a wrong FromState: the image's
    // answer, through a SetDeviceState call of the emulated KS.
    let row = run_row("pin-out-of-order/sg", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", describe(&row));
    assert!(row.statuses.iter().any(|s| s.contains("SetDeviceState(Acquire, from Stop)") && s.contains("STATUS_INVALID_DEVICE_REQUEST")), "{:#?}", row.statuses);
    // The removal is vetoed while the application has the pin open (the
    // emulated PnP manager's handle check), then goes through.
    let row = run_row("remove-while-referenced", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", describe(&row));
    assert!(
        row.statuses.iter().any(|s| s.contains("vetoed for open handles (AVStream stack)") && s.contains("STATUS_DEVICE_BUSY")),
        "{:#?}",
        row.statuses
    );
    // The driver's drops come from the image's KSPROPERTY_DROPPEDFRAMES_CURRENT handler.
    let row = run_row("app-starved/cb", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", describe(&row));
    let counted = row.checks.iter().find(|c| c.what.starts_with("every lost frame was counted")).expect("the check");
    assert!(counted.ok && !counted.what.contains("+ 0 by the driver"), "{counted:?}");
}
