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

use capdma_sim::faults::{not_applicable, run_matrix, run_row, NOT_WITH_IMAGES, ROWS};
use capdma_sim::image::active;
use capdma_sim::machine::{Drivers, Machine, MachineConfig};

const SEED: u64 = 5;

/// Rows that expose a driver bug not fixed yet, each with the only checks
/// it may fail: the row must fail exactly there (a fixed driver makes it
/// hold, and this entry must go).
///
/// (None today: `ksedit-fails/images` is not applicable, see its reason in
/// `NOT_WITH_IMAGES`.)
const KNOWN_DRIVER_BUGS: &[(&str, &[&str])] = &[];

/// Both images, or `None` (reason printed) outside CI.
fn images() -> Option<Drivers> {
    let bus = support::image("capdma_bus")?;
    let avstream = support::image("capdma_avstream")?;
    Some(Drivers::Images { bus, avstream, map_register_limit: None })
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
        if let Some((_, allowed)) = KNOWN_DRIVER_BUGS.iter().find(|(name, _)| *name == row.name) {
            let failures = row.failures();
            assert!(!row.holds && row.frames_corrupt > 0, "{} holds now: the driver bug is fixed, remove it from KNOWN_DRIVER_BUGS\n{}", row.name, support::describe(row));
            assert!(failures.iter().all(|f| allowed.iter().any(|a| f.starts_with(a))), "{} fails elsewhere too:\n{}", row.name, support::describe(row));
            continue;
        }
        support::assert_row_held(row);
    }
    // The rows listed as not applicable are exactly the table's.
    let skipped = rows.iter().filter(|r| r.not_applicable.is_some()).count();
    let listed = ROWS.iter().filter(|s| not_applicable(s.name, &drivers).is_some()).count();
    assert_eq!(skipped, listed);
    assert!(listed <= NOT_WITH_IMAGES.len() + 2, "a fault's modes share one entry");
    assert!(ran >= 27, "{ran} rows ran through the images");
    let below = rows.iter().find(|r| r.name == "map-registers/below-a-frame").expect("the row");
    assert!(below.not_applicable.is_none(), "a frame above the HAL's grant is this layer's to run");
}

/// The rows the images make possible check what they claim.
#[test]
fn the_image_rows_check_what_they_claim() {
    let Some(drivers) = images() else { return };
    // Every call of both images failed in turn, on both boards: some
    // starts refused (with the step and status), some streams on.
    let row = run_row("low-resources/images", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    let summary = &row.statuses[0];
    assert!(summary.contains("calls failed in turn") && summary.contains("refused the start"), "{summary}");
    assert!(row.statuses.iter().any(|s| s.contains("IRP_MN_START_DEVICE: STATUS_INSUFFICIENT_RESOURCES")), "{:#?}", row.statuses);
    let kernel = row.checks.iter().find(|c| c.what.starts_with("the emulated kernel:")).expect("the kernel check");
    assert!(kernel.ok && kernel.what.contains(" machines"), "every machine's kernel judged: {kernel:?}");
    // _KsEdit failing in a format change cannot happen (the edits do not
    // allocate): the row says so instead of running.
    let row = run_row("ksedit-fails/images", &drivers, SEED).expect("the row");
    assert!(row.not_applicable.as_deref().is_some_and(|why| why.contains("allocates nothing")), "{:?}", row.not_applicable);
    // A close outlasting the bus's reset wait: the engine's reset stuck, then acknowledged.
    let row = run_row("close-while-reset-hangs/images", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    assert!(row.statuses.iter().any(|s| s.contains("card 0 channel 0: pin closed (IRP_MJ_CLOSE): STATUS_SUCCESS")), "{:#?}", row.statuses);
    // Plain headers: every frame identified by its time.
    let row = run_row("plain-headers/images", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    assert!(row.checks.iter().any(|c| c.ok && c.what.contains("identified by its PresentationTime (60 of 60)")), "{:#?}", row.checks);
    // Four pins open through a surprise removal.
    let row = run_row("surprise-removal-open-pins/images", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    assert_eq!(row.checks.iter().filter(|c| c.what.contains("the pin closed in the removal")).count(), 4);
}

/// The emulated ks.sys puts each stream header at the end of its page,
/// against the guard page after it: the byte past a plain
/// `KSSTREAM_HEADER` (where a `KS_FRAME_INFO` would be) cannot be touched,
/// and neither can the byte past a header with its `KS_FRAME_INFO`.
#[test]
fn stream_headers_sit_against_a_guard_page() {
    let Some(drivers) = images() else { return };
    for size in [56, 56 + 72] {
        let config = MachineConfig { width: 64, height: 16, frames: 2, app_buffers: 2, stream_header_size: Some(size), drivers: drivers.clone(), ..MachineConfig::default() };
        let mut m = Machine::new(config).expect("machine");
        m.start().expect("start");
        let headers = m.image_stream_headers();
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert!(headers.iter().all(|(s, guarded)| *s == size && *guarded), "{headers:?}");
        // A write one byte past each header fails: the page after it is not mapped.
        let past: Vec<bool> = m.in_driver_context(|_| {
            active::with(|vm, nt| {
                Ok(nt.ks.pins.values().flat_map(|p| p.buffers.iter().map(move |b| (p.header_size, b.header_va))).map(|(s, va)| vm.write(va + u64::from(s), &[0]).is_err()).collect())
            })
            .unwrap_or_default()
        });
        assert_eq!(past, [true, true], "header size {size}");
        m.run(&mut capdma_sim::machine::RunHooks::default());
        m.teardown();
        assert!(m.violations().is_empty(), "{:?}", m.violations().list());
    }
}

#[test]
fn the_pin_rows_reach_the_image_through_the_emulated_ks() {
    let Some(drivers) = images() else { return };
    // The minidriver's own guard refuses a wrong FromState: the image's
    // answer, through a SetDeviceState call of the emulated KS.
    let row = run_row("pin-out-of-order/sg", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    assert!(row.statuses.iter().any(|s| s.contains("SetDeviceState(Acquire, from Stop)") && s.contains("STATUS_INVALID_DEVICE_REQUEST")), "{:#?}", row.statuses);
    // The removal is vetoed while the application has the pin open (the
    // emulated PnP manager's handle check), then goes through.
    let row = run_row("remove-while-referenced", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    assert!(
        row.statuses.iter().any(|s| s.contains("vetoed for open handles (AVStream stack)") && s.contains("STATUS_DEVICE_BUSY")),
        "{:#?}",
        row.statuses
    );
    // The driver's drops come from the image's KSPROPERTY_DROPPEDFRAMES_CURRENT handler.
    let row = run_row("app-starved/cb", &drivers, SEED).expect("the row");
    assert!(row.holds, "{}", support::describe(&row));
    let counted = row.checks.iter().find(|c| c.what.starts_with("every lost frame was counted")).expect("the check");
    assert!(counted.ok && !counted.what.contains("+ 0 by the driver"), "{counted:?}");
}
