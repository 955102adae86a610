//! The Plug and Play manager driving the real `capdma_bus.sys`: DriverEntry,
//! AddDevice on the emulated PCI PDO (with filters above and below),
//! the IRPs Windows sends before a start, start with BAR0 and a line-based
//! or message interrupt, the children, removal and unload — as far as the
//! emulated kernel's DDIs reach (a DDI another part of it has not
//! implemented yet stops the run, and the test says where).
//!
//! Needs `/dev/kvm` and the image (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and constants, as in sim/src/nt")]

use std::path::PathBuf;

use capdma_interface::guid::GUID_BUS_INTERFACE_STANDARD;
use capdma_sim::nt::layout::irp::{bus_interface_standard, device_relations, interface, mj, mn, stack, status};
use capdma_sim::nt::layout::{device_object, do_flags};
use capdma_sim::nt::pnp::{Pnp, PciIdentity, StartResources};
use capdma_sim::nt::system::System;
use capdma_sim::nt::Nt;
use capdma_winvm::{kvm_available, Machine, Stop};

/// The bus image, or `None` (reason printed) outside CI.
fn image() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/windows/release/capdma_bus.sys");
    let why = if let Err(why) = kvm_available() {
        why
    } else if !path.exists() {
        format!("{} not built (cargo xtask windows)", path.display())
    } else {
        return Some(path);
    };
    assert!(std::env::var_os("CI").is_none(), "CI must run the image tests: {why}");
    eprintln!("skipped: {why}");
    None
}

/// Stand-ins for the dispatcher DDIs `AddDevice` and an unstarted
/// device's removal call, until the dispatcher part of the emulated kernel
/// implements them: initializing a DPC or a timer that is never queued or
/// set, cancelling a timer never set (FALSE) and flushing when no DPC was
/// ever queued are no-ops with these results on Windows too.
fn unstarted_stand_ins(sys: &mut System) {
    #[allow(clippy::unnecessary_wraps, reason = "the HostFn signature")]
    fn nothing(_nt: &mut Nt, _m: &mut Machine, _context: u64) -> Result<u64, Stop> {
        Ok(0)
    }
    for name in ["KeInitializeDpc", "KeInitializeTimerEx", "KeCancelTimer", "KeFlushQueuedDpcs"] {
        sys.nt.io.stand_ins.insert(name.into(), nothing);
    }
}

/// A system with the bus driver loaded (imports another part of the
/// emulated kernel lacks stop the run when called) and the PnP manager
/// with `lower` filters below the FDO.
fn loaded(lower: usize) -> Option<(System, Pnp)> {
    let path = image()?;
    let mut sys = System::boot().expect("boot");
    unstarted_stand_ins(&mut sys);
    let driver = sys.load_driver_allowing_missing(&path).expect("load");
    assert_eq!(driver.status, 0, "DriverEntry");
    let mut pnp = Pnp::new(&mut sys, PciIdentity::default()).expect("pnp");
    for _ in 0..lower {
        pnp.add_filter(&mut sys).expect("filter");
    }
    assert_eq!(pnp.add_device(&mut sys, &driver).expect("AddDevice"), status::SUCCESS);
    Some((sys, pnp))
}

/// `Ok(v)`, or `None` when the run reached a DDI not implemented yet (printed).
fn reached<T>(what: &str, result: Result<T, Stop>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(Stop::Host(message)) if message.contains("not implemented in the emulated kernel yet") => {
            eprintln!("{what}: stopped at {message}");
            None
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

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
    let upper = pnp.add_filter(&mut sys).unwrap();
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
    let System { machine, nt } = &mut sys;
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
    pnp.add_filter(&mut sys).unwrap();
    let fdo = pnp.fdo.unwrap();
    let Some(st) = reached("remove", pnp.remove(&mut sys)) else { return };
    assert_eq!(st, status::SUCCESS);
    let order: Vec<u8> = pnp.sent.iter().map(|s| s.minor).collect();
    assert_eq!(order, [mn::QUERY_REMOVE_DEVICE, mn::REMOVE_DEVICE]);
    assert!(sys.nt.io.devices[&fdo].deleted, "the FDO deleted itself");
    assert!(!sys.machine.is_mapped(fdo, 8));
    let printed = sys.nt.trace.len();
    pnp.unload(&mut sys).unwrap();
    assert!(sys.nt.trace.len() > printed, "DriverUnload ran (and printed)");
    pnp.delete_own_devices(&mut sys).unwrap();
    let leaks = pnp.end_of_run(&mut sys);
    assert!(leaks.is_empty(), "{leaks:#?}");
    assert_clean(&sys);
}

#[test]
fn start_with_a_line_interrupt_enumerates_children_as_far_as_the_kernel_goes() {
    let Some((mut sys, mut pnp)) = loaded(0) else { return };
    let resources = StartResources::bar0_line(0xE000_0000, 0x1_0000, 11, 5, 0x51);
    let Some(st) = reached("start", pnp.start(&mut sys, &resources)) else { return };
    assert_eq!(st, status::SUCCESS);
    assert!(!pnp.children.is_empty(), "one child per channel");
    for child in &pnp.children {
        assert!(!child.device_id.is_empty());
        assert_eq!(child.start_status, Some(status::SUCCESS));
    }
    assert_clean(&sys);
}

#[test]
fn start_with_msi_as_far_as_the_kernel_goes() {
    let Some((mut sys, mut pnp)) = loaded(0) else { return };
    let resources = StartResources::bar0_msi(0xE000_0000, 0x1_0000, 6, 0x61);
    let Some(st) = reached("start", pnp.start(&mut sys, &resources)) else { return };
    assert_eq!(st, status::SUCCESS);
    assert_clean(&sys);
}
