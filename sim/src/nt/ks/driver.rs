//! `KsInitializeDriver` and what it installs: AVStream's `AddDevice`
//! (`KsAddDevice`: the FDO, the `KSDEVICE`, the minidriver's `Add`) and its
//! dispatch of the PnP IRPs to the minidriver's `KSDEVICE_DISPATCH`
//! ("KsInitializeDriver function (ks.h)", "KSDEVICE_DISPATCH structure
//! (ks.h)", "AVStream Overview").
//!
//! The order follows the `KSDEVICE_DISPATCH` page: `Start` after the IRP
//! went down the stack and came back successful (the lower drivers are
//! started first), then `PostStart`; `Stop`, `SurpriseRemoval` and
//! `Remove` before the IRP is passed down; `QueryStop`/`QueryRemove` may
//! veto (the IRP is then completed with their status and not passed down).

use capdma_winvm::{Machine, Stop};

use super::super::io::device::{attach, create_device, delete_device, detach};
use super::super::io::irp::{call_driver, complete_request, location_va};
use super::super::layout::irp::{irp, mj, mn, sl, stack, status};
use super::super::layout::ks::{ksdevice, ksdevice_descriptor, ksdevice_dispatch};
use super::super::layout::{device_object, do_flags, driver_extension, driver_object};
use super::super::{HostFn, Nt, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::device::{self, KsDeviceRecord};

/// `FILE_DEVICE_KS` (devioctl.h): the type of AVStream's FDOs.
const FILE_DEVICE_KS: u32 = 0x2F;

/// The host function made once under `name`.
pub(super) fn host_function(nt: &mut Nt, m: &mut Machine, name: &'static str, run: HostFn, max_irql: u8) -> Result<u64, Stop> {
    if let Some(va) = nt.ks.host_functions.get(name) {
        return Ok(*va);
    }
    let va = nt.host_function(m, name, run, 0, max_irql)?;
    nt.ks.host_functions.insert(name, va);
    Ok(va)
}

/// `NTSTATUS KsInitializeDriver(PDRIVER_OBJECT DriverObject, PUNICODE_STRING
/// RegistryPathName, const KSDEVICE_DESCRIPTOR* Descriptor)`
/// ("KsInitializeDriver function (ks.h)"; `PASSIVE_LEVEL`, from `DriverEntry`).
///
/// Keeps the descriptor for the driver's devices and takes over the driver
/// object: `DriverExtension->AddDevice` is AVStream's, every
/// `MajorFunction` entry is AVStream's dispatch, `DriverUnload` is
/// AVStream's (which a minidriver may wrap). Returns `STATUS_SUCCESS`;
/// `STATUS_INVALID_PARAMETER` for a NULL driver object (a Verifier finding).
///
/// # Errors
/// A bugcheck for unmapped arguments; [`Stop::Host`] when no stub page can be made.
pub(crate) fn ks_initialize_driver(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [driver, _registry, descriptor] = m.args::<3>()?;
    nt.verifier.checks += 1;
    if driver == 0 {
        nt.violation(m, "KS_INITIALIZE_DRIVER_NULL", 0xC4, None, "KsInitializeDriver(NULL, ...)".into());
        return Ok(u64::from(status::INVALID_PARAMETER));
    }
    if descriptor != 0 {
        // The descriptor is read now, as AVStream does (a bad pointer faults here).
        m.read_u64(descriptor + ksdevice_descriptor::DISPATCH)?;
    }
    let add = host_function(nt, m, "ks!KsAddDevice", ks_add_device, PASSIVE_LEVEL)?;
    let dispatch = host_function(nt, m, "ks!KsDispatchIrp", ks_dispatch, DISPATCH_LEVEL)?;
    let unload = host_function(nt, m, "ks!KsNullDriverUnload", ks_null_driver_unload, PASSIVE_LEVEL)?;
    let extension = m.read_u64(driver + driver_object::DRIVER_EXTENSION)?;
    m.write_u64(extension + driver_extension::ADD_DEVICE, add)?;
    for major in 0..=u64::from(mj::MAXIMUM_FUNCTION) {
        m.write_u64(driver + driver_object::MAJOR_FUNCTION + 8 * major, dispatch)?;
    }
    m.write_u64(driver + driver_object::DRIVER_UNLOAD, unload)?;
    nt.ks.drivers.insert(driver, descriptor);
    Ok(u64::from(status::SUCCESS))
}

/// AVStream's `DriverUnload` (`KsNullDriverUnload`): nothing to undo; the
/// minidriver's devices are gone by then.
fn ks_null_driver_unload(_nt: &mut Nt, _m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    Ok(0)
}

/// AVStream's `AddDevice(DriverObject, PhysicalDeviceObject)` (`KsAddDevice`
/// → `KsCreateDevice`): an FDO of type `FILE_DEVICE_KS` attached over the
/// PDO, its `KSDEVICE` (descriptor, a fresh object bag, the three device
/// objects), the minidriver's `Add(Device)` when its dispatch has one; on
/// failure the FDO is detached and deleted and `Add`'s status returned.
fn ks_add_device(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [driver, pdo] = m.args::<2>()?;
    let Some(descriptor) = nt.ks.drivers.get(&driver).copied() else {
        return Ok(u64::from(status::INVALID_DEVICE_REQUEST));
    };
    let fdo = create_device(nt, m, driver, 16, None, FILE_DEVICE_KS, 0, false, "ks.sys (KsCreateDevice)".into())?;
    let lower = attach(nt, m, fdo, pdo)?;
    let ks_device = nt.alloc_kernel(m, ksdevice::SIZE)?;
    let bag = device::new_bag(nt, m, ks_device)?;
    m.write_u64(ks_device + ksdevice::DESCRIPTOR, descriptor)?;
    m.write_u64(ks_device + ksdevice::BAG, bag)?;
    m.write_u64(ks_device + ksdevice::FUNCTIONAL_DEVICE_OBJECT, fdo)?;
    m.write_u64(ks_device + ksdevice::PHYSICAL_DEVICE_OBJECT, pdo)?;
    m.write_u64(ks_device + ksdevice::NEXT_DEVICE_OBJECT, lower)?;
    m.write_u32(ks_device + ksdevice::SYSTEM_POWER_STATE, 1)?;
    m.write_u32(ks_device + ksdevice::DEVICE_POWER_STATE, 1)?;
    // The FDO's extension points at the KSDEVICE (AVStream keeps its header there).
    let extension = m.read_u64(fdo + device_object::DEVICE_EXTENSION)?;
    m.write_u64(extension, ks_device)?;
    nt.ks.devices.insert(ks_device, KsDeviceRecord { fdo, pdo, lower, bag, ..KsDeviceRecord::default() });
    let add = dispatch_routine(m, descriptor, ksdevice_dispatch::ADD)?;
    let st = if add == 0 { status::SUCCESS } else { low32(m.call(nt, add, &[ks_device])?) };
    if !status::nt_success(st) {
        device::free_bag(nt, m, bag)?;
        nt.ks.devices.remove(&ks_device);
        detach(nt, m, lower)?;
        delete_device(nt, m, fdo)?;
        m.free_own_pages(ks_device, 1)?;
        return Ok(u64::from(st));
    }
    let lower_flags = m.read_u32(lower + device_object::FLAGS)?;
    let flags = m.read_u32(fdo + device_object::FLAGS)?;
    m.write_u32(fdo + device_object::FLAGS, (flags & !do_flags::DEVICE_INITIALIZING) | (lower_flags & do_flags::POWER_PAGABLE))?;
    Ok(u64::from(status::SUCCESS))
}

/// The routine at `offset` of the `KSDEVICE_DISPATCH` of `descriptor` (0: none).
fn dispatch_routine(m: &Machine, descriptor: u64, offset: u64) -> Result<u64, Stop> {
    if descriptor == 0 {
        return Ok(0);
    }
    let dispatch = m.read_u64(descriptor + ksdevice_descriptor::DISPATCH)?;
    if dispatch == 0 {
        return Ok(0);
    }
    m.read_u64(dispatch + offset)
}

/// The low 32 bits of a returned register (an `NTSTATUS`).
pub(super) const fn low32(value: u64) -> u32 {
    (value & 0xFFFF_FFFF) as u32
}

/// The `KSDEVICE` of FDO `fdo`.
fn device_of_fdo(nt: &Nt, fdo: u64) -> Option<u64> {
    nt.ks.devices.iter().find(|(_, d)| d.fdo == fdo && !d.deleted).map(|(va, _)| *va)
}

/// AVStream's dispatch routine for every major function of its FDOs: PnP
/// IRPs as the module documentation says, power IRPs passed down, every
/// other IRP (the file-object requests an application makes go through
/// [`super::pin`]) completed with `STATUS_INVALID_DEVICE_REQUEST`.
fn ks_dispatch(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [fdo, irp_va] = m.args::<2>()?;
    let location = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
    let major = m.read_u8(location + stack::MAJOR_FUNCTION)?;
    let Some(ks_device) = device_of_fdo(nt, fdo) else {
        return complete(nt, m, irp_va, status::NO_SUCH_DEVICE);
    };
    match major {
        mj::PNP => pnp(nt, m, ks_device, irp_va, location),
        mj::POWER | mj::SYSTEM_CONTROL => {
            let lower = nt.ks.devices[&ks_device].lower;
            skip_down(nt, m, lower, irp_va)
        }
        _ => complete(nt, m, irp_va, status::INVALID_DEVICE_REQUEST),
    }
}

/// Completes `irp_va` with `st`; returns `st`.
fn complete(nt: &mut Nt, m: &mut Machine, irp_va: u64, st: u32) -> Result<u64, Stop> {
    m.write_u32(irp_va + irp::STATUS, st)?;
    complete_request(nt, m, irp_va)?;
    Ok(u64::from(st))
}

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver(lower)`; returns its status.
fn skip_down(nt: &mut Nt, m: &mut Machine, lower: u64, irp_va: u64) -> Result<u64, Stop> {
    let current = m.read_u8(irp_va + irp::CURRENT_LOCATION)?;
    let location = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
    m.write_u8(irp_va + irp::CURRENT_LOCATION, current + 1)?;
    m.write_u64(irp_va + irp::CURRENT_STACK_LOCATION, location + stack::SIZE)?;
    call_driver(nt, m, lower, irp_va, "IofCallDriver (ks.sys)").map(u64::from)
}

/// The completion routine of a synchronous forward: records the IRP and
/// stops its completion here (`STATUS_MORE_PROCESSING_REQUIRED`).
fn forwarded(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [_device, irp_va, _context] = m.args::<3>()?;
    nt.ks.forwarded_done.insert(irp_va);
    Ok(u64::from(status::MORE_PROCESSING_REQUIRED))
}

/// `IoCopyCurrentIrpStackLocationToNext`, a completion routine that stops
/// the completion at this location, `IoCallDriver(lower)`, and the wait
/// for the completion (pending work runs meanwhile). Returns the IRP's
/// status, with the IRP again at this location, not completed.
///
/// # Errors
/// [`Stop::Host`] when the lower driver never completes the IRP (Windows
/// would hang); a bugcheck from the lower drivers.
pub(super) fn forward_and_wait(nt: &mut Nt, m: &mut Machine, lower: u64, irp_va: u64) -> Result<u32, Stop> {
    let current = m.read_u8(irp_va + irp::CURRENT_LOCATION)?;
    let here = location_va(irp_va, current);
    let next = location_va(irp_va, current - 1);
    let mut bytes = vec![0u8; stack::COMPLETION_ROUTINE as usize];
    m.read(here, &mut bytes)?;
    m.write(next, &bytes)?;
    let routine = host_function(nt, m, "ks!ForwardCompletion", forwarded, DISPATCH_LEVEL)?;
    m.write_u8(next + stack::CONTROL, sl::INVOKE_ON_SUCCESS | sl::INVOKE_ON_ERROR | sl::INVOKE_ON_CANCEL)?;
    m.write_u64(next + stack::COMPLETION_ROUTINE, routine)?;
    m.write_u64(next + stack::CONTEXT, 0)?;
    call_driver(nt, m, lower, irp_va, "IofCallDriver (ks.sys)")?;
    if !nt.ks.forwarded_done.contains(&irp_va) {
        nt.run_pending(m)?;
    }
    if !nt.ks.forwarded_done.remove(&irp_va) {
        return Err(Stop::Host(format!("ks.sys: IRP {irp_va:#x} forwarded to {lower:#x} never completed")));
    }
    m.read_u32(irp_va + irp::STATUS)
}

/// The PnP IRPs of a KS device.
fn pnp(nt: &mut Nt, m: &mut Machine, ks_device: u64, irp_va: u64, location: u64) -> Result<u64, Stop> {
    let minor = m.read_u8(location + stack::MINOR_FUNCTION)?;
    let record = nt.ks.devices[&ks_device].clone();
    let descriptor = m.read_u64(ks_device + ksdevice::DESCRIPTOR)?;
    let routine = |m: &Machine, offset: u64| dispatch_routine(m, descriptor, offset);
    nt.irql = PASSIVE_LEVEL;
    match minor {
        mn::START_DEVICE => {
            let translated = m.read_u64(location + stack::ALLOCATED_RESOURCES_TRANSLATED)?;
            let raw = m.read_u64(location + stack::ALLOCATED_RESOURCES)?;
            let mut st = forward_and_wait(nt, m, record.lower, irp_va)?;
            if status::nt_success(st) {
                let start = routine(m, ksdevice_dispatch::START)?;
                if start != 0 {
                    st = low32(device::call_holding(nt, m, ks_device, start, &[ks_device, irp_va, translated, raw])?);
                }
            }
            if status::nt_success(st) {
                m.write_u8(ks_device + ksdevice::STARTED, 1)?;
                let post = routine(m, ksdevice_dispatch::POST_START)?;
                if post != 0 {
                    st = low32(device::call_holding(nt, m, ks_device, post, &[ks_device])?);
                }
            }
            complete(nt, m, irp_va, st)
        }
        mn::QUERY_STOP_DEVICE | mn::QUERY_REMOVE_DEVICE => {
            let offset = if minor == mn::QUERY_STOP_DEVICE { ksdevice_dispatch::QUERY_STOP } else { ksdevice_dispatch::QUERY_REMOVE };
            let query = routine(m, offset)?;
            let st = if query == 0 { status::SUCCESS } else { low32(device::call_holding(nt, m, ks_device, query, &[ks_device, irp_va])?) };
            if !status::nt_success(st) {
                return complete(nt, m, irp_va, st);
            }
            m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
            skip_down(nt, m, record.lower, irp_va)
        }
        mn::CANCEL_STOP_DEVICE | mn::CANCEL_REMOVE_DEVICE => {
            let offset = if minor == mn::CANCEL_STOP_DEVICE { ksdevice_dispatch::CANCEL_STOP } else { ksdevice_dispatch::CANCEL_REMOVE };
            let cancel = routine(m, offset)?;
            if cancel != 0 {
                m.call(nt, cancel, &[ks_device, irp_va])?;
            }
            m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
            skip_down(nt, m, record.lower, irp_va)
        }
        mn::STOP_DEVICE | mn::SURPRISE_REMOVAL => {
            let offset = if minor == mn::STOP_DEVICE { ksdevice_dispatch::STOP } else { ksdevice_dispatch::SURPRISE_REMOVAL };
            let callback = routine(m, offset)?;
            if callback != 0 {
                m.call(nt, callback, &[ks_device, irp_va])?;
            }
            if minor == mn::STOP_DEVICE {
                m.write_u8(ks_device + ksdevice::STARTED, 0)?;
            }
            m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
            skip_down(nt, m, record.lower, irp_va)
        }
        mn::REMOVE_DEVICE => {
            let remove = routine(m, ksdevice_dispatch::REMOVE)?;
            if remove != 0 {
                m.call(nt, remove, &[ks_device, irp_va])?;
            }
            m.write_u32(irp_va + irp::STATUS, status::SUCCESS)?;
            let st = skip_down(nt, m, record.lower, irp_va)?;
            // The device goes: its bag first (the minidriver's context is
            // freed through it), then the FDO.
            device::remove_device(nt, m, ks_device)?;
            detach(nt, m, record.lower)?;
            delete_device(nt, m, record.fdo)?;
            Ok(st)
        }
        _ => skip_down(nt, m, record.lower, irp_va),
    }
}

/// The `KSDEVICE` AVStream made on the stack of `pdo` (through
/// `AddDevice`), while it is not removed.
#[must_use]
pub fn device_on(nt: &Nt, pdo: u64) -> Option<u64> {
    nt.ks.devices.iter().find(|(_, d)| d.pdo == pdo && !d.deleted).map(|(va, _)| *va)
}
