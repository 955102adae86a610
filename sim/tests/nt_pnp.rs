//! The Plug and Play manager driving the real `capdma_bus.sys`: DriverEntry,
//! AddDevice on the emulated PCI PDO (with filters above and below),
//! the IRPs Windows sends before a start, start with BAR0 (the simulated
//! board's registers, reached as MMIO) and a line-based or message
//! interrupt, the children and their IRPs, the query interface, stop,
//! removal (children first) and unload — each ending with no Driver
//! Verifier finding and nothing leaked.
//!
//! Needs `/dev/kvm` and the image (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and constants, as in sim/src/nt")]

mod support;

use std::path::PathBuf;

use capdma_interface::guid::{GUID_BUS_INTERFACE_STANDARD, GUID_CAPDMA_BUS_INTERFACE};
use capdma_interface::table::{CAPDMA_BUS_INTERFACE_SIZE_V2, CAPDMA_BUS_INTERFACE_VERSION};
use capdma_sim::board::{Board, BoardConfig};
use capdma_sim::nt::{etw, hal, ke};
use capdma_sim::nt::layout::irp::{bus_interface_standard, device_relations, interface, mj, mn, stack, status};
use capdma_sim::nt::layout::{device_object, do_flags};
use capdma_sim::nt::pnp::{Pnp, PciIdentity, StartResources, S0, S3};
use capdma_sim::nt::system::System;

/// The bus image, or `None` (reason printed) outside CI.
fn image() -> Option<PathBuf> {
    support::image("capdma_bus")
}

/// A system with the bus driver loaded (every import implemented: the
/// loader refuses it otherwise), a legacy board behind BAR0 whose interrupt
/// line the dispatcher samples, and the PnP manager with `lower` filters
/// below the FDO.
fn loaded(lower: usize) -> Option<(System, Pnp)> {
    loaded_with_board(lower).map(|(sys, pnp, _)| (sys, pnp))
}

/// As [`loaded`], with the board.
fn loaded_with_board(lower: usize) -> Option<(System, Pnp, Board)> {
    let path = image()?;
    let mut sys = System::boot().expect("boot");
    let board = Board::new(BoardConfig::legacy(), &sys.memory).expect("board");
    hal::attach_bar(&mut sys.nt, BAR0, BAR0_BYTES, Box::new(board.clone())).expect("BAR0");
    for vector in [LINE_VECTOR, MSI_VECTOR] {
        let b = board.clone();
        ke::attach_source(&mut sys.nt, vector, Box::new(move || b.interrupt_pending()));
    }
    let driver = sys.load_driver(&path).expect("load");
    assert_eq!(driver.status, 0, "DriverEntry");
    let mut pnp = Pnp::new(&mut sys, PciIdentity::default()).expect("pnp");
    for _ in 0..lower {
        pnp.add_filter(&mut sys, pnp.pci_pdo).expect("filter");
    }
    assert_eq!(pnp.add_device(&mut sys, &driver).expect("AddDevice"), status::SUCCESS);
    Some((sys, pnp, board))
}

/// Where the board's BAR0 is, and its length.
const BAR0: u64 = 0xE000_0000;
const BAR0_BYTES: u64 = 0x1_0000;
const BAR0_LEN: u32 = 0x1_0000;
/// The translated vectors of the line and MSI interrupts.
const LINE_VECTOR: u32 = 0x51;
const MSI_VECTOR: u32 = 0x61;

fn assert_clean(sys: &System) {
    let findings: Vec<String> = sys.nt.verifier.findings.iter().map(ToString::to_string).collect();
    assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
}

#[test]
fn add_device_builds_the_stack_on_the_pci_pdo() {
    let Some((sys, pnp)) = loaded(0) else { return };
    let fdo = pnp.fdo.expect("the FDO");
    let m = &sys.machine;
    assert_eq!(m.read_u64(pnp.pci_pdo + device_object::ATTACHED_DEVICE).unwrap(), fdo);
    assert_eq!(m.read_u8(fdo + device_object::STACK_SIZE).unwrap(), 2);
    let flags = m.read_u32(fdo + device_object::FLAGS).unwrap();
    assert_eq!(flags & do_flags::DEVICE_INITIALIZING, 0);
    assert_eq!(flags & do_flags::POWER_PAGABLE, do_flags::POWER_PAGABLE, "inherited from the PCI PDO");
    // The driver's remove lock was initialized in AddDevice.
    assert_eq!(sys.nt.io.remove_locks.len(), 1);
    assert!(!sys.nt.trace.is_empty(), "DriverEntry printed");
    assert_clean(&sys);
}

#[test]
fn irps_before_start_reach_the_pci_pdo_through_filters() {
    let Some((mut sys, mut pnp)) = loaded(1) else { return };
    let upper = pnp.add_filter(&mut sys, pnp.pci_pdo).unwrap();
    let fdo = pnp.fdo.unwrap();
    assert_eq!(sys.machine.read_u64(fdo + device_object::ATTACHED_DEVICE).unwrap(), upper);
    assert_eq!(sys.machine.read_u8(upper + device_object::STACK_SIZE).unwrap(), 4);
    let caps = pnp.query_capabilities(&mut sys, pnp.pci_pdo).unwrap().expect("capabilities");
    assert_eq!(caps.address, 3 << 16, "the PCI PDO's answer came back up");
    assert_eq!(caps.device_state[1], 1, "S0 -> D0");
    // Verifier's bogus IRP: every driver passes it down, the PDO completes it untouched.
    let r = pnp.send(&mut sys, pnp.pci_pdo, mj::PNP, mn::BOGUS, 0, |_, _| Ok(())).unwrap();
    assert_eq!(r.status, status::NOT_SUPPORTED);
    // BUS_INTERFACE_STANDARD from the PCI PDO, through the FDO and both filters.
    let (st, iface) = pnp.query_interface(&mut sys, pnp.pci_pdo, &GUID_BUS_INTERFACE_STANDARD, 64, 1).unwrap();
    assert_eq!(st, status::SUCCESS);
    let m = &sys.machine;
    assert_eq!(u64::from(m.read_u16(iface + interface::SIZE_FIELD).unwrap()), bus_interface_standard::SIZE);
    assert_eq!(m.read_u64(iface + interface::CONTEXT).unwrap(), pnp.pci_pdo);
    assert_ne!(m.read_u64(iface + bus_interface_standard::GET_DMA_ADAPTER).unwrap(), 0);
    assert_eq!(sys.nt.io.interface_references[&pnp.pci_pdo], 1);
    let deref = m.read_u64(iface + interface::INTERFACE_DEREFERENCE).unwrap();
    let System { machine, nt, .. } = &mut sys;
    machine.call(nt, deref, &[pnp.pci_pdo]).unwrap();
    assert_eq!(sys.nt.io.interface_references[&pnp.pci_pdo], 0);
    // TargetDeviceRelation: the PCI PDO, referenced for the manager.
    let r = pnp
        .send(&mut sys, pnp.pci_pdo, mj::PNP, mn::QUERY_DEVICE_RELATIONS, 0, |m, l| {
            m.write_u32(l + stack::QUERY_DEVICE_RELATIONS_TYPE, device_relations::TARGET_DEVICE_RELATION)
        })
        .unwrap();
    assert_eq!(r.status, status::SUCCESS);
    assert_eq!(sys.machine.read_u64(r.information + device_relations::OBJECTS).unwrap(), pnp.pci_pdo);
    assert_clean(&sys);
}

#[test]
fn a_device_that_never_started_is_removed_and_the_driver_unloads_clean() {
    let Some((mut sys, mut pnp)) = loaded(1) else { return };
    pnp.add_filter(&mut sys, pnp.pci_pdo).unwrap();
    let fdo = pnp.fdo.unwrap();
    let st = pnp.remove(&mut sys).expect("remove");
    assert_eq!(st, status::SUCCESS);
    let order: Vec<u8> = pnp.sent.iter().map(|s| s.minor).collect();
    assert_eq!(order, [mn::QUERY_REMOVE_DEVICE, mn::REMOVE_DEVICE]);
    assert!(sys.nt.io.devices[&fdo].deleted, "the FDO deleted itself");
    assert!(!sys.machine.is_mapped(fdo, 8));
    unload_clean(&mut sys, &mut pnp);
}

/// DriverUnload, then the end-of-run checks: no leak, no finding, nothing
/// of the dispatcher's left (DPCs, timers, interrupts), nothing of the HAL's.
fn unload_clean(sys: &mut System, pnp: &mut Pnp) {
    let printed = sys.nt.trace.len();
    pnp.unload(sys).expect("DriverUnload");
    assert!(sys.nt.trace.len() > printed, "DriverUnload ran (and printed)");
    pnp.delete_own_devices(sys).expect("the manager's own devices");
    let leaks = pnp.end_of_run(sys);
    assert!(leaks.is_empty(), "{leaks:#?}");
    assert!(ke::live(&sys.nt).is_empty(), "{:?}", ke::live(&sys.nt));
    let hal_leaks = hal::leaks(&sys.nt);
    assert!(hal_leaks.is_empty(), "{hal_leaks:#?}");
    assert_clean(sys);
}

/// Start with `resources`, then the children, a query of the capdma
/// interface on each, removal (children first) and unload, all clean.
fn whole_life(resources: &StartResources, filters: usize, pend_start: bool) {
    let Some((mut sys, mut pnp)) = loaded(filters) else { return };
    sys.nt.io.pend_pci_start = pend_start;
    let st = pnp.start(&mut sys, resources).expect("start");
    assert_eq!(st, status::SUCCESS, "IRP_MN_START_DEVICE");
    let channels = BoardConfig::legacy().channels as usize;
    assert_eq!(pnp.children.len(), channels, "one child per channel");
    for child in &pnp.children {
        assert!(!child.device_id.is_empty());
        assert_eq!(child.start_status, Some(status::SUCCESS));
    }
    assert!(sys.nt.hal.dma.adapters.len() == 1, "the bus took the DMA adapter at start");
    // Each child answers GUID_CAPDMA_BUS_INTERFACE with a table of the
    // image's routines, and takes a reference for the caller.
    let pdos: Vec<u64> = pnp.children.iter().map(|c| c.pdo).collect();
    for pdo in &pdos {
        let (st, table) = pnp
            .query_interface(&mut sys, *pdo, &GUID_CAPDMA_BUS_INTERFACE, CAPDMA_BUS_INTERFACE_SIZE_V2, CAPDMA_BUS_INTERFACE_VERSION)
            .expect("query interface");
        assert_eq!(st, status::SUCCESS);
        let m = &sys.machine;
        let image = &m.images()[0];
        for routine in 0..10 {
            let va = m.read_u64(table + 16 + 8 * routine).unwrap();
            assert!(image.contains(va), "routine {routine} at {va:#x} is the image's");
        }
        // The caller's reference, given back.
        let context = m.read_u64(table + 8).unwrap();
        let dereference = m.read_u64(table + 24).unwrap();
        let System { machine, nt, .. } = &mut sys;
        machine.call(nt, dereference, &[context]).unwrap();
    }
    let st = pnp.remove(&mut sys).expect("remove");
    assert_eq!(st, status::SUCCESS);
    let removes: Vec<u64> = pnp.sent.iter().filter(|s| s.minor == mn::REMOVE_DEVICE).map(|s| s.target).collect();
    assert_eq!(removes.len(), channels + 1, "each child, then the bus");
    assert_eq!(*removes.last().unwrap(), pnp.pci_pdo, "children first: the bus stack last");
    unload_clean(&mut sys, &mut pnp);
}

#[test]
fn the_whole_life_with_a_line_interrupt() {
    whole_life(&StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR), 0, false);
}

#[test]
fn the_whole_life_with_msi() {
    whole_life(&StartResources::bar0_msi(BAR0, BAR0_LEN, 6, MSI_VECTOR), 0, false);
}

#[test]
fn the_whole_life_with_filters_above_and_below() {
    whole_life(&StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR), 1, false);
}

#[test]
fn the_whole_life_when_the_pci_pdo_completes_start_asynchronously() {
    whole_life(&StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR), 0, true);
}

/// Starts the image on a line interrupt, with its children.
fn started() -> Option<(System, Pnp)> {
    let (mut sys, mut pnp) = loaded(0)?;
    let st = pnp.start(&mut sys, &StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR)).expect("start");
    assert_eq!(st, status::SUCCESS);
    Some((sys, pnp))
}

#[test]
fn sleep_and_wake_turn_each_s_irp_into_a_d_irp() {
    let Some((mut sys, mut pnp)) = started() else { return };
    let fdo = pnp.fdo.expect("the FDO");
    // DEVICE_POWER_STATE: PowerDeviceD0 = 1, PowerDeviceD3 = 4.
    assert_eq!(pnp.set_system_power(&mut sys, S3).expect("S3"), status::SUCCESS);
    assert_eq!(sys.nt.io.device_power.get(&fdo), Some(&4), "the power policy owner went to D3 (PoSetPowerState)");
    assert_eq!(pnp.set_system_power(&mut sys, S0).expect("S0"), status::SUCCESS);
    assert_eq!(sys.nt.io.device_power.get(&fdo), Some(&1), "and back to D0");
    assert_eq!(pnp.remove(&mut sys).expect("remove"), status::SUCCESS);
    unload_clean(&mut sys, &mut pnp);
}

#[test]
fn surprise_removal_then_removal_and_unload_are_clean() {
    let Some((mut sys, mut pnp)) = started() else { return };
    pnp.surprise_remove(&mut sys).expect("surprise removal");
    let surprise: Vec<u64> = pnp.sent.iter().filter(|s| s.minor == mn::SURPRISE_REMOVAL).map(|s| s.target).collect();
    assert_eq!(surprise.len(), pnp.children.len() + 1, "down every child stack, then the bus");
    assert_eq!(pnp.remove(&mut sys).expect("remove"), status::SUCCESS);
    unload_clean(&mut sys, &mut pnp);
}

#[test]
fn a_rebalance_stops_and_restarts_the_device() {
    let Some((mut sys, mut pnp)) = started() else { return };
    assert_eq!(pnp.stop(&mut sys).expect("query-stop/stop"), status::SUCCESS);
    let minors: Vec<u8> = pnp.sent.iter().rev().take(2).map(|s| s.minor).collect();
    assert_eq!(minors, [mn::STOP_DEVICE, mn::QUERY_STOP_DEVICE]);
    let st = pnp.start(&mut sys, &StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR)).expect("restart");
    assert_eq!(st, status::SUCCESS);
    assert_eq!(pnp.remove(&mut sys).expect("remove"), status::SUCCESS);
    unload_clean(&mut sys, &mut pnp);
}

/// Imports of the bus image a clean life does not call, and why.
const NOT_CALLED_ON_A_CLEAN_RUN: &[(&str, &str)] = &[
    ("KeBugCheckEx", "the image bugchecks only on an internal error"),
    ("KeInsertQueueDpc", "queued by the ISR when it claims a completion: the streaming runs call it"),
];

#[test]
fn a_full_life_executes_every_import_of_the_bus_image() {
    let Some((mut sys, mut pnp, board)) = loaded_with_board(0) else { return };
    // The harder paths: START pended by the PCI PDO (forward and wait), an
    // ETW session listening to every event.
    sys.nt.io.pend_pci_start = true;
    let System { machine, nt, .. } = &mut sys;
    etw::start_session(nt, machine, &etw::EtwSession::everything()).expect("ETW session");
    let st = pnp.start(&mut sys, &StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR)).expect("start");
    assert_eq!(st, status::SUCCESS);
    let start = sys.nt.etw.records.iter().find(|r| r.provider == "Capdma.Bus" && r.event == "DeviceStart");
    let start = start.unwrap_or_else(|| panic!("no DeviceStart: {:?}", sys.nt.etw.records.iter().map(ToString::to_string).collect::<Vec<_>>()));
    // The legacy board has no scatter/gather: the mode event says so.
    assert_eq!(start.field("Mode"), Some(&etw::Value::Str("common-buffer".into())), "{start}");
    assert!(matches!(start.field("Reason"), Some(etw::Value::Str(r)) if !r.is_empty()), "{start}");
    // A spurious assertion of the shared line: the image's ISR runs at its
    // DIRQL, finds nothing of its board's, and returns FALSE.
    board.inject_now(capdma_sim::board::BoardFault::SpuriousInterrupt);
    let System { machine, nt, .. } = &mut sys;
    nt.run_pending(machine).expect("the ISR");
    assert!(nt.ke.stats.isr_calls > 0, "the ISR ran");
    let child = pnp.children[0].pdo;
    // A child forwards BUS_INTERFACE_STANDARD to the parent stack
    // (IoGetAttachedDeviceReference, IoBuildSynchronousFsdRequest).
    let (st, iface) = pnp.query_interface(&mut sys, child, &GUID_BUS_INTERFACE_STANDARD, 64, 1).expect("query");
    assert_eq!(st, status::SUCCESS);
    let context = sys.machine.read_u64(iface + interface::CONTEXT).unwrap();
    let dereference = sys.machine.read_u64(iface + interface::INTERFACE_DEREFERENCE).unwrap();
    let System { machine, nt, .. } = &mut sys;
    machine.call(nt, dereference, &[context]).unwrap();
    assert_eq!(pnp.set_system_power(&mut sys, S3).expect("S3"), status::SUCCESS);
    assert_eq!(pnp.set_system_power(&mut sys, S0).expect("S0"), status::SUCCESS);
    // Virtual time passes: the watchdog timer fires.
    let later = sys.nt.time + 20_000_000;
    let System { machine, nt, .. } = &mut sys;
    nt.advance_time(machine, later).expect("time");
    assert_eq!(pnp.stop(&mut sys).expect("stop"), status::SUCCESS);
    assert_eq!(pnp.start(&mut sys, &StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR)).expect("restart"), status::SUCCESS);
    pnp.surprise_remove(&mut sys).expect("surprise removal");
    assert_eq!(pnp.remove(&mut sys).expect("remove"), status::SUCCESS);
    let imports: Vec<String> = sys.machine.images()[0].imports.iter().map(|(_, s)| s.clone()).collect();
    let calls = sys.nt.calls_by_ddi.clone();
    unload_clean(&mut sys, &mut pnp);
    let calls_after = &sys.nt.calls_by_ddi;
    let uncalled: Vec<&String> = imports
        .iter()
        .filter(|s| !calls.contains_key(s.as_str()) && !calls_after.contains_key(s.as_str()))
        .filter(|s| !NOT_CALLED_ON_A_CLEAN_RUN.iter().any(|(n, _)| n == s))
        .collect();
    assert!(uncalled.is_empty(), "imports the life never called: {uncalled:?}");
    // docs/ddi.md says, per import, where it is emulated and what runs it.
    let ddi = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ddi.md")).expect("docs/ddi.md");
    let undocumented: Vec<&String> = imports.iter().filter(|s| !ddi.contains(&format!("| `{s}` |"))).collect();
    assert!(undocumented.is_empty(), "imports missing from docs/ddi.md's executed table: {undocumented:?}");
}

/// Driver Verifier's low resources simulation on the bus image: each of its
/// allocations (pool, device objects, the DMA adapter, common buffers)
/// fails in turn; the image must fail what it cannot do with an error
/// status, never crash, and leave nothing behind once removed and unloaded.
fn low_resources(what: &str, fail: fn(&mut System, u64), injected: fn(&System) -> u64, limit: u64) {
    let mut failed_somewhere = false;
    for index in 0..limit {
        let Some(path) = image() else { return };
        let mut sys = System::boot().expect("boot");
        let board = Board::new(BoardConfig::legacy(), &sys.memory).expect("board");
        hal::attach_bar(&mut sys.nt, BAR0, BAR0_BYTES, Box::new(board.clone())).expect("BAR0");
        ke::attach_source(&mut sys.nt, LINE_VECTOR, Box::new(move || board.interrupt_pending()));
        fail(&mut sys, index);
        let driver = sys.load_driver(&path).expect("load");
        assert_eq!(driver.status, 0, "DriverEntry allocates nothing that can fail here");
        let mut pnp = Pnp::new(&mut sys, PciIdentity::default()).expect("pnp");
        let added = pnp.add_device(&mut sys, &driver).expect("AddDevice ran");
        if added == status::SUCCESS {
            let started = pnp.start(&mut sys, &StartResources::bar0_line(BAR0, BAR0_LEN, 11, 5, LINE_VECTOR)).expect("start ran");
            failed_somewhere |= started != status::SUCCESS || pnp.children.iter().any(|c| c.start_status != Some(status::SUCCESS));
            assert_eq!(pnp.remove(&mut sys).expect("remove ran"), status::SUCCESS, "{what} #{index}");
        } else {
            failed_somewhere = true;
        }
        assert!(injected(&sys) <= 1, "one injected failure per run");
        failed_somewhere |= injected(&sys) == 1 && added != status::SUCCESS;
        unload_clean(&mut sys, &mut pnp);
    }
    assert!(failed_somewhere, "no {what} failure made any step fail: the injection never hit");
}

#[test]
fn low_resources_each_pool_allocation_fails_in_turn() {
    low_resources("pool allocation", |sys, i| sys.nt.pool.fail_at = Some(i), |sys| sys.nt.pool.failed, 12);
}

#[test]
fn low_resources_the_device_objects_fail() {
    low_resources("IoCreateDevice", |sys, i| sys.nt.io.fail_create_device_at = Some(i), |_| 0, 3);
}

#[test]
fn low_resources_the_dma_adapter_fails() {
    low_resources("IoGetDmaAdapter", |sys, i| sys.nt.hal.dma.fail_adapter_at = Some(i), |sys| sys.nt.hal.dma.failed, 1);
}

#[test]
fn low_resources_each_common_buffer_fails_in_turn() {
    low_resources("AllocateCommonBuffer", |sys, i| sys.nt.hal.dma.fail_common_buffer_at = Some(i), |sys| sys.nt.hal.dma.failed, 6);
}
