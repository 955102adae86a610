//! The Plug and Play manager's order and checks on a small bus driver
//! whose routines are host functions calling the DDIs through their stubs
//! (as guest code does): start, enumeration and the IRPs a new child gets,
//! query-remove with and without a veto, removal children first, surprise
//! removal, system sleep and wake, unload and the end-of-run leak checks;
//! `IoGetDeviceProperty(DevicePropertyAddress)` answering what each PDO
//! reported to `IRP_MN_QUERY_CAPABILITIES`.
//! Needs `/dev/kvm`; says so and passes vacuously only outside CI.

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and constants, as in sim/src/nt")]
#![allow(clippy::unnecessary_wraps, reason = "host routines have the HostFn signature")]

mod support;

use capdma_sim::nt::io::device::DEVICE_PROPERTY_ADDRESS;
use capdma_sim::nt::layout::irp::{device_capabilities, device_relations, irp, mj, mn, pnp_bus_information, stack, status};
use capdma_sim::nt::layout::{device_object, do_flags, driver_extension, driver_object};
use capdma_sim::nt::pnp::{Pnp, PciIdentity, StartResources, S0, S3};
use capdma_sim::nt::pool::POOL_FLAG_PAGED;
use capdma_sim::nt::system::{Driver, System};
use capdma_sim::nt::{HostFn, Nt, DISPATCH_LEVEL};
use capdma_winvm::{Machine, Stop};

fn system() -> Option<System> {
    support::system()
}

/// Calls a DDI through its stub.
fn ddi(nt: &mut Nt, m: &mut Machine, name: &str, args: &[u64]) -> Result<u64, Stop> {
    let stub = nt.resolve(m, "ntoskrnl.exe", name).expect(name);
    m.call(nt, stub, args)
}

// The toy bus driver. FDO extension: +0 lower, +8 child count, +16.. children,
// +48 the child driver object, +56 the PCI PDO, +64 behaviour flags.
const CHILDREN: u64 = 2;
/// Behaviour: veto IRP_MN_QUERY_REMOVE_DEVICE.
const VETO_REMOVE: u64 = 1;
/// Behaviour: leave DO_DEVICE_INITIALIZING set in AddDevice.
const KEEP_INITIALIZING: u64 = 2;
/// Behaviour: forget to delete the children on removal.
const LEAK_CHILDREN: u64 = 4;
/// Behaviour: report only the first child at the next enumeration.
const DROP_SECOND_CHILD: u64 = 8;
/// Behaviour: keep IRP_MN_QUERY_PNP_DEVICE_STATE pending forever.
const PEND_DEVICE_STATE: u64 = 16;
/// Behaviour: report the FDO itself in BusRelations.
const REPORT_FDO: u64 = 32;
/// Behaviour: the children answer neither IRP_MN_QUERY_ID nor IRP_MN_QUERY_CAPABILITIES.
const MUTE_CHILDREN: u64 = 64;
/// Behaviour: allocate pool at start and never free it.
const LEAK_POOL: u64 = 128;
/// Behaviour: the children answer IRP_MN_QUERY_CAPABILITIES without an Address (left at 0xFFFFFFFF).
const NO_ADDRESS: u64 = 256;
/// At +8 of a child PDO's extension (where an FDO keeps its child count).
const CHILD_MARK: u64 = 0xC41D_C41D;

fn location(m: &Machine, irp_va: u64) -> Result<(u64, u8, u8), Stop> {
    let l = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
    Ok((l, m.read_u8(l + stack::MAJOR_FUNCTION)?, m.read_u8(l + stack::MINOR_FUNCTION)?))
}

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver` / `PoCallDriver`.
fn pass_down(nt: &mut Nt, m: &mut Machine, lower: u64, irp_va: u64, power: bool) -> Result<u64, Stop> {
    let current = m.read_u8(irp_va + irp::CURRENT_LOCATION)?;
    m.write_u8(irp_va + irp::CURRENT_LOCATION, current + 1)?;
    let l = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
    m.write_u64(irp_va + irp::CURRENT_STACK_LOCATION, l + stack::SIZE)?;
    ddi(nt, m, if power { "PoCallDriver" } else { "IofCallDriver" }, &[lower, irp_va])
}

fn complete(nt: &mut Nt, m: &mut Machine, irp_va: u64, st: u32, information: Option<u64>) -> Result<u64, Stop> {
    m.write_u32(irp_va + irp::STATUS, st)?;
    if let Some(i) = information {
        m.write_u64(irp_va + irp::INFORMATION, i)?;
    }
    ddi(nt, m, "IofCompleteRequest", &[irp_va, 0])?;
    Ok(u64::from(st))
}

fn pool_strings(nt: &mut Nt, m: &mut Machine, strings: &[&str], multi: bool) -> Result<u64, Stop> {
    let mut units: Vec<u16> = strings.iter().flat_map(|s| s.encode_utf16().chain([0])).collect();
    if multi {
        units.push(0);
    }
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    let va = ddi(nt, m, "ExAllocatePool2", &[POOL_FLAG_PAGED, bytes.len() as u64, 0x7944_6f54])?;
    m.write(va, &bytes)?;
    Ok(va)
}

fn toy_add_device(nt: &mut Nt, m: &mut Machine, behaviour: u64) -> Result<u64, Stop> {
    let [driver, pdo] = m.args::<2>()?;
    let out = nt.alloc_kernel(m, 8)?;
    ddi(nt, m, "IoCreateDevice", &[driver, 128, 0, 0x2A, 0, 0, out])?;
    let fdo = m.read_u64(out)?;
    let lower = ddi(nt, m, "IoAttachDeviceToDeviceStack", &[fdo, pdo])?;
    let ext = m.read_u64(fdo + device_object::DEVICE_EXTENSION)?;
    m.write_u64(ext, lower)?;
    m.write_u64(ext + 56, pdo)?;
    m.write_u64(ext + 64, behaviour)?;
    // Children are device objects of the same driver, as a bus driver's are.
    m.write_u64(ext + 48, driver)?;
    if behaviour & KEEP_INITIALIZING == 0 {
        let flags = m.read_u32(fdo + device_object::FLAGS)?;
        m.write_u32(fdo + device_object::FLAGS, flags & !do_flags::DEVICE_INITIALIZING)?;
    }
    Ok(0)
}

#[allow(clippy::too_many_lines, reason = "one arm per IRP")]
fn toy_fdo(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [fdo, irp_va] = m.args::<2>()?;
    let (l, major, minor) = location(m, irp_va)?;
    let ext = m.read_u64(fdo + device_object::DEVICE_EXTENSION)?;
    if m.read_u64(ext + 8)? == CHILD_MARK {
        return toy_child(nt, m, 0);
    }
    let lower = m.read_u64(ext)?;
    let behaviour = m.read_u64(ext + 64)?;
    if major == mj::POWER {
        m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
        return pass_down(nt, m, lower, irp_va, true);
    }
    match minor {
        mn::QUERY_PNP_DEVICE_STATE if behaviour & PEND_DEVICE_STATE != 0 => {
            let l = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
            let control = m.read_u8(l + stack::CONTROL)?;
            m.write_u8(l + stack::CONTROL, control | 1)?;
            Ok(u64::from(status::PENDING))
        }
        mn::START_DEVICE => {
            if behaviour & LEAK_POOL != 0 {
                ddi(nt, m, "ExAllocatePool2", &[0x40, 100, 0x6b61_654c])?;
            }
            let st = pass_down(nt, m, lower, irp_va, false)?;
            let child_driver = m.read_u64(ext + 48)?;
            let out = nt.alloc_kernel(m, 8)?;
            for i in 0..CHILDREN {
                ddi(nt, m, "IoCreateDevice", &[child_driver, 24, 0, 0x2A, 0x80, 0, out])?;
                let child = m.read_u64(out)?;
                let flags = m.read_u32(child + device_object::FLAGS)?;
                m.write_u32(child + device_object::FLAGS, flags & !do_flags::DEVICE_INITIALIZING)?;
                let child_ext = m.read_u64(child + device_object::DEVICE_EXTENSION)?;
                m.write_u64(child_ext, i)?;
                m.write_u64(child_ext + 8, CHILD_MARK)?;
                m.write_u64(child_ext + 16, behaviour)?;
                m.write_u64(ext + 16 + 8 * i, child)?;
            }
            m.write_u64(ext + 8, CHILDREN)?;
            let pci_pdo = m.read_u64(ext + 56)?;
            ddi(nt, m, "IoInvalidateDeviceRelations", &[pci_pdo, u64::from(device_relations::BUS_RELATIONS)])?;
            Ok(st)
        }
        mn::QUERY_DEVICE_RELATIONS if m.read_u32(l + stack::QUERY_DEVICE_RELATIONS_TYPE)? == device_relations::BUS_RELATIONS => {
            let mut count = m.read_u64(ext + 8)?;
            if behaviour & DROP_SECOND_CHILD != 0 {
                count = count.min(1);
            }
            let rel = ddi(nt, m, "ExAllocatePool2", &[POOL_FLAG_PAGED, 8 + 8 * count.max(1), 0x6c65_5254])?;
            m.write_u32(rel + device_relations::COUNT, u32::try_from(count).unwrap_or(0))?;
            for i in 0..count {
                let child = if behaviour & REPORT_FDO != 0 && i == 0 { fdo } else { m.read_u64(ext + 16 + 8 * i)? };
                ddi(nt, m, "ObfReferenceObject", &[child])?;
                m.write_u64(rel + device_relations::OBJECTS + 8 * i, child)?;
            }
            m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
            m.write_u64(irp_va + irp::INFORMATION, rel)?;
            pass_down(nt, m, lower, irp_va, false)
        }
        mn::QUERY_REMOVE_DEVICE if behaviour & VETO_REMOVE != 0 => complete(nt, m, irp_va, 0x8000_0011, None),
        mn::REMOVE_DEVICE => {
            m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
            let st = pass_down(nt, m, lower, irp_va, false)?;
            if behaviour & LEAK_CHILDREN == 0 {
                for i in 0..m.read_u64(ext + 8)? {
                    let child = m.read_u64(ext + 16 + 8 * i)?;
                    ddi(nt, m, "IoDeleteDevice", &[child])?;
                }
            }
            ddi(nt, m, "IoDetachDevice", &[lower])?;
            ddi(nt, m, "IoDeleteDevice", &[fdo])?;
            Ok(st)
        }
        mn::QUERY_REMOVE_DEVICE | mn::CANCEL_REMOVE_DEVICE | mn::SURPRISE_REMOVAL | mn::QUERY_STOP_DEVICE | mn::STOP_DEVICE => {
            m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
            pass_down(nt, m, lower, irp_va, false)
        }
        _ => pass_down(nt, m, lower, irp_va, false),
    }
}

fn toy_child(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pdo, irp_va] = m.args::<2>()?;
    let (l, major, minor) = location(m, irp_va)?;
    let child_ext = m.read_u64(pdo + device_object::DEVICE_EXTENSION)?;
    let index = m.read_u64(child_ext)?;
    let mute = m.read_u64(child_ext + 16)? & MUTE_CHILDREN != 0;
    let untouched = m.read_u32(irp_va + irp::STATUS)?;
    if mute && (minor == mn::QUERY_ID || minor == mn::QUERY_CAPABILITIES) {
        return complete(nt, m, irp_va, untouched, None);
    }
    if major == mj::POWER {
        return complete(nt, m, irp_va, if minor == mn::SET_POWER || minor == mn::QUERY_POWER { 0 } else { untouched }, None);
    }
    match minor {
        mn::QUERY_ID => {
            let answer = match m.read_u32(l + stack::QUERY_ID_TYPE)? {
                0 => Some(pool_strings(nt, m, &["TOY\\Channel"], false)?),
                1 => Some(pool_strings(nt, m, &["TOY\\Channel", "TOY\\Any"], true)?),
                3 => Some(pool_strings(nt, m, &[if index == 0 { "0" } else { "1" }], false)?),
                _ => None,
            };
            match answer {
                Some(va) => complete(nt, m, irp_va, 0, Some(va)),
                None => complete(nt, m, irp_va, untouched, None),
            }
        }
        mn::QUERY_DEVICE_TEXT => {
            let va = pool_strings(nt, m, &["Toy channel"], false)?;
            complete(nt, m, irp_va, 0, Some(va))
        }
        mn::QUERY_CAPABILITIES => {
            let caps = m.read_u64(l + stack::CAPABILITIES)?;
            if m.read_u64(child_ext + 16)? & NO_ADDRESS == 0 {
                // The child's address on the toy bus: 0x10 + its index.
                m.write_u32(caps + device_capabilities::ADDRESS, u32::try_from(0x10 + index).unwrap_or(u32::MAX))?;
            }
            complete(nt, m, irp_va, 0, None)
        }
        mn::QUERY_BUS_INFORMATION => {
            let va = ddi(nt, m, "ExAllocatePool2", &[POOL_FLAG_PAGED, pnp_bus_information::SIZE, 0x7944_6f54])?;
            m.write_u32(va + pnp_bus_information::BUS_NUMBER, 7)?;
            complete(nt, m, irp_va, 0, Some(va))
        }
        mn::START_DEVICE
        | mn::QUERY_REMOVE_DEVICE
        | mn::CANCEL_REMOVE_DEVICE
        | mn::REMOVE_DEVICE
        | mn::SURPRISE_REMOVAL
        | mn::QUERY_STOP_DEVICE
        | mn::STOP_DEVICE
        | mn::CANCEL_STOP_DEVICE => complete(nt, m, irp_va, 0, None),
        _ => complete(nt, m, irp_va, untouched, None),
    }
}

fn nothing(_nt: &mut Nt, _m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    Ok(0)
}

/// A driver object whose every major function is `dispatch`.
fn host_driver(sys: &mut System, name: &str, dispatch: HostFn) -> u64 {
    let System { machine: m, nt, .. } = sys;
    let d = nt.alloc_kernel(m, driver_object::SIZE + driver_extension::SIZE).unwrap();
    m.write_u16(d + driver_object::TYPE, 4).unwrap();
    m.write_u64(d + driver_object::DRIVER_EXTENSION, d + driver_object::SIZE).unwrap();
    let va = nt.host_function(m, name, dispatch, 0, DISPATCH_LEVEL).unwrap();
    for major in 0..=u64::from(mj::MAXIMUM_FUNCTION) {
        m.write_u64(d + driver_object::MAJOR_FUNCTION + 8 * major, va).unwrap();
    }
    d
}

/// The toy bus driver added on the PCI PDO with `behaviour`.
fn toy(behaviour: u64) -> Option<(System, Pnp)> {
    let mut sys = system()?;
    let mut pnp = Pnp::new(&mut sys, PciIdentity::default()).unwrap();
    let fdo_driver = host_driver(&mut sys, "toy!Dispatch", toy_fdo);
    let System { machine: m, nt, .. } = &mut sys;
    let add = nt.host_function(m, "toy!AddDevice", toy_add_device, behaviour, 0).unwrap();
    m.write_u64(fdo_driver + driver_object::SIZE + driver_extension::ADD_DEVICE, add).unwrap();
    let unload = nt.host_function(m, "toy!Unload", nothing, 0, 0).unwrap();
    m.write_u64(fdo_driver + driver_object::DRIVER_UNLOAD, unload).unwrap();
    let driver = Driver { name: "toy".into(), driver_object: fdo_driver, status: 0 };
    assert_eq!(pnp.add_device(&mut sys, &driver).unwrap(), 0);
    Some((sys, pnp))
}

fn start(sys: &mut System, pnp: &mut Pnp) {
    let st = pnp.start(sys, &StartResources::bar0_line(0xE000_0000, 0x1000, 11, 5, 0x51)).unwrap();
    assert_eq!(st, status::SUCCESS);
}

fn assert_clean(sys: &System) {
    let findings: Vec<String> = sys.nt.verifier.findings.iter().map(ToString::to_string).collect();
    assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
}

/// The minor codes sent to `target`, in order.
fn sent_to(pnp: &Pnp, target: u64) -> Vec<(u8, u8)> {
    pnp.sent.iter().filter(|s| s.target == target).map(|s| (s.major, s.minor)).collect()
}

#[test]
fn start_enumerates_children_and_sends_them_what_windows_sends() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    assert_eq!(pnp.children.len(), 2);
    let first = pnp.children[0].clone();
    assert_eq!(first.device_id, "TOY\\Channel");
    assert_eq!(first.hardware_ids, ["TOY\\Channel", "TOY\\Any"]);
    assert!(first.compatible_ids.is_empty());
    assert_eq!(first.instance_id, "0");
    assert_eq!(pnp.children[1].instance_id, "1");
    assert_eq!(first.description, "Toy channel");
    assert_eq!(first.bus_information.map(|b| b.2), Some(7));
    assert_eq!(first.start_status, Some(status::SUCCESS));
    let p = |minor| (mj::PNP, minor);
    assert_eq!(
        sent_to(&pnp, first.pdo),
        [
            p(mn::DEVICE_ENUMERATED),
            p(mn::QUERY_ID),
            p(mn::QUERY_ID),
            p(mn::QUERY_ID),
            p(mn::QUERY_ID),
            p(mn::QUERY_CAPABILITIES),
            p(mn::QUERY_DEVICE_TEXT),
            p(mn::QUERY_DEVICE_TEXT),
            p(mn::QUERY_BUS_INFORMATION),
            p(mn::QUERY_RESOURCES),
            p(mn::QUERY_RESOURCE_REQUIREMENTS),
            p(mn::START_DEVICE),
            p(mn::QUERY_CAPABILITIES),
            p(mn::QUERY_PNP_DEVICE_STATE),
            p(mn::QUERY_DEVICE_RELATIONS),
        ]
    );
    // The FDO stack: start, the post-start queries, and BusRelations (twice: after
    // the start, and for the invalidation the driver made).
    let fdo_stack: Vec<u8> = sent_to(&pnp, pnp.pci_pdo).into_iter().map(|(_, minor)| minor).collect();
    assert_eq!(fdo_stack[..3], [mn::START_DEVICE, mn::QUERY_CAPABILITIES, mn::QUERY_PNP_DEVICE_STATE]);
    assert!(fdo_stack[3..].iter().all(|&minor| minor == mn::QUERY_DEVICE_RELATIONS));
    // One reference per child kept by the manager; the answers' pool was freed.
    for c in &pnp.children {
        assert_eq!(sys.nt.io.devices[&c.pdo].references, 1);
    }
    assert!(sys.nt.pool.live.is_empty(), "{:?}", sys.nt.pool.live);
    assert_clean(&sys);
}

#[test]
fn removal_goes_children_first_and_ends_without_leaks() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let first_removal = pnp.sent.len();
    assert_eq!(pnp.remove(&mut sys).unwrap(), status::SUCCESS);
    let (a, b) = (pnp.children[0].pdo, pnp.children[1].pdo);
    let order: Vec<(u64, u8)> = pnp.sent[first_removal..].iter().map(|s| (s.target, s.minor)).collect();
    assert_eq!(
        order,
        [
            (a, mn::QUERY_REMOVE_DEVICE),
            (b, mn::QUERY_REMOVE_DEVICE),
            (pnp.pci_pdo, mn::QUERY_REMOVE_DEVICE),
            (a, mn::REMOVE_DEVICE),
            (b, mn::REMOVE_DEVICE),
            (pnp.pci_pdo, mn::REMOVE_DEVICE),
        ]
    );
    pnp.unload(&mut sys).unwrap();
    pnp.delete_own_devices(&mut sys).unwrap();
    let leaks = pnp.end_of_run(&mut sys);
    assert!(leaks.is_empty(), "{leaks:#?}");
    for c in &pnp.children {
        assert!(!sys.machine.is_mapped(c.pdo, 8), "child PDO freed");
    }
    assert_clean(&sys);
}

#[test]
fn a_veto_cancels_the_removal_everywhere_it_was_queried() {
    let Some((mut sys, mut pnp)) = toy(VETO_REMOVE) else { return };
    start(&mut sys, &mut pnp);
    let first = pnp.sent.len();
    assert_eq!(pnp.remove(&mut sys).unwrap(), 0x8000_0011);
    let (a, b) = (pnp.children[0].pdo, pnp.children[1].pdo);
    let order: Vec<(u64, u8)> = pnp.sent[first..].iter().map(|s| (s.target, s.minor)).collect();
    assert_eq!(
        order,
        [
            (a, mn::QUERY_REMOVE_DEVICE),
            (b, mn::QUERY_REMOVE_DEVICE),
            (pnp.pci_pdo, mn::QUERY_REMOVE_DEVICE),
            (pnp.pci_pdo, mn::CANCEL_REMOVE_DEVICE),
            (b, mn::CANCEL_REMOVE_DEVICE),
            (a, mn::CANCEL_REMOVE_DEVICE),
        ]
    );
    assert!(!pnp.removed);
    assert_clean(&sys);
}

#[test]
fn surprise_removal_goes_down_every_child_stack_then_the_parent() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let first = pnp.sent.len();
    pnp.surprise_remove(&mut sys).unwrap();
    pnp.remove(&mut sys).unwrap();
    let (a, b) = (pnp.children[0].pdo, pnp.children[1].pdo);
    let order: Vec<(u64, u8)> = pnp.sent[first..].iter().map(|s| (s.target, s.minor)).collect();
    assert_eq!(
        order,
        [
            (a, mn::SURPRISE_REMOVAL),
            (b, mn::SURPRISE_REMOVAL),
            (pnp.pci_pdo, mn::SURPRISE_REMOVAL),
            (a, mn::REMOVE_DEVICE),
            (b, mn::REMOVE_DEVICE),
            (pnp.pci_pdo, mn::REMOVE_DEVICE),
        ]
    );
    assert_clean(&sys);
}

#[test]
fn a_child_no_longer_reported_is_surprise_removed_and_removed() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let b = pnp.children[1].pdo;
    let fdo = pnp.fdo.unwrap();
    let ext = sys.machine.read_u64(fdo + device_object::DEVICE_EXTENSION).unwrap();
    sys.machine.write_u64(ext + 64, DROP_SECOND_CHILD).unwrap();
    let reported = pnp.enumerate(&mut sys).unwrap();
    assert_eq!(reported, [pnp.children[0].pdo]);
    let last: Vec<u8> = sent_to(&pnp, b).into_iter().rev().take(2).map(|(_, m)| m).collect();
    assert_eq!(last, [mn::REMOVE_DEVICE, mn::SURPRISE_REMOVAL]);
    assert!(pnp.child(b).unwrap().removed);
    assert_eq!(sys.nt.io.devices[&b].references, 0, "the manager dropped its reference");
    assert_eq!(sys.nt.io.devices[&pnp.children[0].pdo].references, 1, "a child reported again keeps one");
    assert_clean(&sys);
}

#[test]
fn sleep_goes_children_first_and_wake_parent_first() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let first = pnp.sent.len();
    assert_eq!(pnp.set_system_power(&mut sys, S3).unwrap(), status::SUCCESS);
    assert_eq!(pnp.set_system_power(&mut sys, S0).unwrap(), status::SUCCESS);
    let (a, b, parent) = (pnp.children[0].pdo, pnp.children[1].pdo, pnp.pci_pdo);
    let order: Vec<(u64, u8, u8)> = pnp.sent[first..].iter().map(|sent| (sent.target, sent.major, sent.minor)).collect();
    let query = |target| (target, mj::POWER, mn::QUERY_POWER);
    let set = |target| (target, mj::POWER, mn::SET_POWER);
    assert_eq!(order, [query(a), query(b), query(parent), set(a), set(b), set(parent), set(parent), set(a), set(b)]);
    assert!(pnp.sent[first..].iter().all(|s| s.status == status::SUCCESS));
    assert_clean(&sys);
}

#[test]
fn add_device_must_clear_device_initializing() {
    let Some((sys, _pnp)) = toy(KEEP_INITIALIZING) else { return };
    assert!(sys.nt.verifier.found("DEVICE_INITIALIZING_NOT_CLEARED"));
    assert_eq!(sys.nt.verifier.findings[0].parameter1, Some(0x243));
}

#[test]
fn children_left_behind_are_leaks_at_the_end() {
    let Some((mut sys, mut pnp)) = toy(LEAK_CHILDREN) else { return };
    start(&mut sys, &mut pnp);
    pnp.remove(&mut sys).unwrap();
    // The driver object still has the children: Windows would not unload it.
    pnp.unload(&mut sys).unwrap();
    assert!(sys.nt.verifier.found("UNLOAD_WITH_DEVICES"));
    pnp.delete_own_devices(&mut sys).unwrap();
    let leaks = pnp.end_of_run(&mut sys);
    assert_eq!(leaks.len(), 2, "{leaks:#?}");
    assert!(sys.nt.verifier.found("LEAKED_AT_UNLOAD"));
    assert_eq!(sys.nt.verifier.findings.iter().find(|f| f.rule == "LEAKED_AT_UNLOAD").unwrap().bugcheck, 0xCE);
}

#[test]
fn an_irp_never_completed_is_a_finding_not_a_hang() {
    let Some((mut sys, mut pnp)) = toy(PEND_DEVICE_STATE) else { return };
    let result = pnp.start(&mut sys, &StartResources::bar0_line(0xE000_0000, 0x1000, 11, 5, 0x51));
    assert!(matches!(result, Err(Stop::Host(_))), "{result:?}");
    assert!(sys.nt.verifier.found("IRP_NEVER_COMPLETED"));
}

#[test]
fn a_relation_that_is_not_a_pdo_is_found() {
    let Some((mut sys, mut pnp)) = toy(REPORT_FDO) else { return };
    let _ = pnp.start(&mut sys, &StartResources::bar0_line(0xE000_0000, 0x1000, 11, 5, 0x51));
    assert!(sys.nt.verifier.found("RELATION_NOT_A_PDO"));
}

#[test]
fn children_that_do_not_answer_required_irps_are_found() {
    let Some((mut sys, mut pnp)) = toy(MUTE_CHILDREN) else { return };
    start(&mut sys, &mut pnp);
    assert!(sys.nt.verifier.found("PDO_NO_DEVICE_ID"));
    assert!(sys.nt.verifier.found("PDO_NO_CAPABILITIES"));
    assert_eq!(sys.nt.verifier.findings[0].parameter1, Some(0x22A));
}

#[test]
fn pool_left_at_unload_is_found() {
    let Some((mut sys, mut pnp)) = toy(LEAK_POOL) else { return };
    start(&mut sys, &mut pnp);
    pnp.remove(&mut sys).unwrap();
    pnp.unload(&mut sys).unwrap();
    pnp.delete_own_devices(&mut sys).unwrap();
    let leaks = pnp.end_of_run(&mut sys);
    assert_eq!(leaks.len(), 1, "{leaks:#?}");
    let f = sys.nt.verifier.findings.iter().find(|f| f.rule == "POOL_LEAKED_AT_UNLOAD").expect("finding");
    assert_eq!((f.bugcheck, f.parameter1), (0xC4, Some(0x62)));
}

#[test]
fn the_pci_pdo_hands_out_a_referenced_bus_interface() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    let guid = capdma_interface::guid::GUID_BUS_INTERFACE_STANDARD;
    let (st, iface) = pnp.query_interface(&mut sys, pnp.pci_pdo, &guid, 64, 1).unwrap();
    assert_eq!(st, status::SUCCESS);
    assert_eq!(sys.nt.io.interface_references[&pnp.pci_pdo], 1);
    let m = &sys.machine;
    let (reference, dereference) = (m.read_u64(iface + 16).unwrap(), m.read_u64(iface + 24).unwrap());
    let translate = m.read_u64(iface + 32).unwrap();
    let out = iface + 64;
    let System { machine, nt, .. } = &mut sys;
    assert_eq!(machine.call(nt, translate, &[pnp.pci_pdo, 0xE000_0000, 0x1000, 0, out]).unwrap(), 1);
    assert_eq!(machine.read_u64(out).unwrap(), 0xE000_0000);
    machine.call(nt, reference, &[pnp.pci_pdo]).unwrap();
    machine.call(nt, dereference, &[pnp.pci_pdo]).unwrap();
    machine.call(nt, dereference, &[pnp.pci_pdo]).unwrap();
    assert_eq!(sys.nt.io.interface_references[&pnp.pci_pdo], 0);
    assert_clean(&sys);
    // An interface not handed back is a leak; one dereference too many a finding.
    let System { machine, nt, .. } = &mut sys;
    machine.call(nt, dereference, &[pnp.pci_pdo]).unwrap();
    assert!(sys.nt.verifier.found("INTERFACE_DEREFERENCED_TOO_OFTEN"));
    // Another GUID: the PCI PDO completes it untouched.
    let other = capdma_interface::guid::GUID_CAPDMA_BUS_INTERFACE;
    let (st, _) = pnp.query_interface(&mut sys, pnp.pci_pdo, &other, 64, 1).unwrap();
    assert_eq!(st, status::NOT_SUPPORTED);
}

#[test]
fn an_open_handle_vetoes_removal_after_the_query_went_everywhere() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let (a, b) = (pnp.children[0].pdo, pnp.children[1].pdo);
    pnp.open_handles.push(a);
    let first = pnp.sent.len();
    assert_eq!(pnp.remove(&mut sys).unwrap(), capdma_sim::nt::pnp::STATUS_DEVICE_BUSY);
    let order: Vec<(u64, u8)> = pnp.sent[first..].iter().map(|s| (s.target, s.minor)).collect();
    let p = pnp.pci_pdo;
    assert_eq!(
        order,
        [
            (a, mn::QUERY_REMOVE_DEVICE),
            (b, mn::QUERY_REMOVE_DEVICE),
            (p, mn::QUERY_REMOVE_DEVICE),
            (p, mn::CANCEL_REMOVE_DEVICE),
            (b, mn::CANCEL_REMOVE_DEVICE),
            (a, mn::CANCEL_REMOVE_DEVICE),
        ]
    );
    assert_clean(&sys);
}

#[test]
fn a_stop_is_queried_then_done_and_the_device_restarts() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let first = pnp.sent.len();
    assert_eq!(pnp.stop(&mut sys).unwrap(), status::SUCCESS);
    assert!(!pnp.started);
    start(&mut sys, &mut pnp);
    let minors: Vec<u8> = pnp.sent[first..].iter().filter(|s| s.target == pnp.pci_pdo).map(|s| s.minor).collect();
    assert_eq!(minors[..3], [mn::QUERY_STOP_DEVICE, mn::STOP_DEVICE, mn::START_DEVICE]);
    assert_clean(&sys);
}

// ------------------------------------------------------------------ IoGetDeviceProperty

/// What [`device_property`] presets its outputs to.
const SENTINEL: u32 = 0x5A5A_5A5A;
/// `DevicePropertyDeviceDescription` and `DevicePropertyUINumber`: not emulated.
const NOT_EMULATED: [u32; 2] = [0, 17];

/// `IoGetDeviceProperty(device, property, length, buffer, result)` with
/// `buffer` and `result` in fresh kernel memory preset to [`SENTINEL`];
/// returns (status, `*buffer`, `*result`).
fn device_property(sys: &mut System, device: u64, property: u32, length: u32) -> (u32, u32, u32) {
    let System { machine: m, nt, .. } = sys;
    let out = nt.alloc_kernel(m, 16).unwrap();
    m.write_u32(out, SENTINEL).unwrap();
    m.write_u32(out + 8, SENTINEL).unwrap();
    let st = ddi(nt, m, "IoGetDeviceProperty", &[device, property.into(), length.into(), out, out + 8]).unwrap();
    (u32::try_from(st).unwrap(), m.read_u32(out).unwrap(), m.read_u32(out + 8).unwrap())
}

#[test]
fn io_get_device_property_answers_the_address_each_pdo_reported() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    for (i, child) in pnp.children.clone().iter().enumerate() {
        let expected = 0x10 + u32::try_from(i).unwrap();
        assert_eq!(child.capabilities.address, expected);
        assert_eq!(device_property(&mut sys, child.pdo, DEVICE_PROPERTY_ADDRESS, 4), (status::SUCCESS, expected, 4));
        assert_eq!(device_property(&mut sys, child.pdo, DEVICE_PROPERTY_ADDRESS, 64), (status::SUCCESS, expected, 4), "a larger buffer");
    }
    // The emulated PCI bus driver reports (device << 16) | function.
    let slot = PciIdentity::default().slot;
    assert_eq!(device_property(&mut sys, pnp.pci_pdo, DEVICE_PROPERTY_ADDRESS, 4), (status::SUCCESS, slot << 16, 4));
    assert_clean(&sys);
}

#[test]
fn io_get_device_property_with_a_buffer_too_small_gives_the_size_needed() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let child = pnp.children[0].pdo;
    for length in [0, 3] {
        assert_eq!(device_property(&mut sys, child, DEVICE_PROPERTY_ADDRESS, length), (status::BUFFER_TOO_SMALL, SENTINEL, 4), "{length} bytes");
    }
    assert_clean(&sys);
}

#[test]
fn io_get_device_property_without_an_address_reported_is_not_found() {
    // Answered without an Address (0xFFFFFFFF as sent), or never answered.
    for behaviour in [NO_ADDRESS, MUTE_CHILDREN] {
        let Some((mut sys, mut pnp)) = toy(behaviour) else { return };
        start(&mut sys, &mut pnp);
        let child = pnp.children[0].pdo;
        assert_eq!(
            device_property(&mut sys, child, DEVICE_PROPERTY_ADDRESS, 4),
            (status::OBJECT_NAME_NOT_FOUND, SENTINEL, SENTINEL),
            "behaviour {behaviour}"
        );
        assert!(!sys.nt.verifier.found("DEVICE_PROPERTY_NOT_PDO"));
    }
}

#[test]
fn io_get_device_property_of_a_property_not_emulated_is_invalid_parameter_2() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let child = pnp.children[0].pdo;
    for property in NOT_EMULATED {
        assert_eq!(device_property(&mut sys, child, property, 64), (status::INVALID_PARAMETER_2, SENTINEL, SENTINEL), "{property}");
    }
    assert_clean(&sys);
}

#[test]
fn io_get_device_property_of_a_device_that_is_not_a_pdo_is_found() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let fdo = pnp.fdo.expect("the toy's FDO");
    assert_eq!(device_property(&mut sys, fdo, DEVICE_PROPERTY_ADDRESS, 4), (status::INVALID_DEVICE_REQUEST, SENTINEL, SENTINEL));
    let f = sys.nt.verifier.findings.iter().find(|f| f.rule == "DEVICE_PROPERTY_NOT_PDO").expect("finding");
    assert_eq!((f.bugcheck, f.parameter1), (0xCA, Some(0x2)));
    let findings = sys.nt.verifier.findings.len();
    let not_a_device = sys.nt.alloc_kernel(&mut sys.machine, 4096).unwrap();
    assert_eq!(device_property(&mut sys, not_a_device, DEVICE_PROPERTY_ADDRESS, 4).0, status::INVALID_DEVICE_REQUEST);
    assert_eq!(sys.nt.verifier.findings.len(), findings + 1, "random memory is not a PDO either");
}

#[test]
fn io_get_device_property_above_passive_level_is_found() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let child = pnp.children[0].pdo;
    sys.nt.irql = 1;
    device_property(&mut sys, child, DEVICE_PROPERTY_ADDRESS, 4);
    let f = sys.nt.verifier.findings.iter().find(|f| f.rule == "IRQL_TOO_HIGH").expect("IRQL_TOO_HIGH");
    assert!(f.detail.contains("IoGetDeviceProperty"), "{f}");
}

#[test]
fn io_get_device_property_writes_through_the_callers_pointers() {
    let Some((mut sys, mut pnp)) = toy(0) else { return };
    start(&mut sys, &mut pnp);
    let child = pnp.children[0].pdo;
    let System { machine: m, nt, .. } = &mut sys;
    let out = nt.alloc_kernel(m, 16).unwrap();
    let result = ddi(nt, m, "IoGetDeviceProperty", &[child, DEVICE_PROPERTY_ADDRESS.into(), 4, out, 0]);
    let Err(Stop::Bugcheck(report)) = result else { panic!("a NULL ResultLength must fault: {result:?}") };
    assert_eq!(report.code, 0x50, "{report}");
}
