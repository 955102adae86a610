//! `IRP_MJ_POWER`, `IRP_MJ_SYSTEM_CONTROL` and every other major function.
//!
//! The bus driver is not the power policy owner of anything: the FDO
//! passes power IRPs on (`IoSkipCurrentIrpStackLocation`, `PoCallDriver`;
//! `PoStartNextPowerIrp` is not needed from Windows Vista on), and a child
//! PDO, the bottom of its stack, succeeds `IRP_MN_SET_POWER` and
//! `IRP_MN_QUERY_POWER` and completes the rest untouched.
use super::ddi::{complete_request, complete_untouched, current_stack, skip_current_stack};
use super::extension::{extension, Extension};
use super::fdo::FdoExtension;
use super::irp::{acquire_remove_lock, pass_down, release_remove_lock};
use capdma_interface::status::{STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS};
use wdk_sys::ntddk::PoCallDriver;
use wdk_sys::{IRP_MN_QUERY_POWER, IRP_MN_SET_POWER, NTSTATUS, PDEVICE_OBJECT, PIRP};

/// Runs `pass` with the FDO's remove lock held for `irp`, or completes
/// the IRP with the lock's refusal (`STATUS_DELETE_PENDING`).
///
/// # Safety
/// We own `irp`, sent to `ext`'s FDO; `pass` hands it on exactly once.
unsafe fn with_remove_lock(
    ext: &FdoExtension,
    irp: PIRP,
    pass: unsafe fn(&FdoExtension, PIRP) -> NTSTATUS,
) -> NTSTATUS {
    let lock = ext.remove_lock();
    // SAFETY: the lock was initialized in AddDevice.
    if let Err(status) = unsafe { acquire_remove_lock(lock, irp) } {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, status, 0) };
    }
    // SAFETY: the caller's guarantee.
    let status = unsafe { pass(ext, irp) };
    // SAFETY: acquired above with this tag.
    unsafe { release_remove_lock(lock, irp) };
    status
}

/// `IoSkipCurrentIrpStackLocation` + `PoCallDriver(lower, Irp)`.
///
/// # Safety
/// `irp` is a power IRP sent to the FDO; the caller owns it and gives it up.
unsafe fn pass_power_down(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    unsafe { skip_current_stack(irp) };
    // SAFETY: `lower` is below the FDO; the IRP is given away.
    unsafe { PoCallDriver(ext.lower, irp) }
}

/// `IRP_MJ_POWER`.
///
/// # Safety
/// Called by the I/O manager with a device of this driver and an IRP it owns.
pub unsafe extern "C" fn dispatch_power(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a device object of this driver.
    match unsafe { extension(device) } {
        // SAFETY: we own the IRP and hand it on once.
        Some(Extension::Fdo(ext)) => unsafe { with_remove_lock(ext, irp, pass_power_down) },
        Some(Extension::Pdo(_)) => {
            // SAFETY: a valid IRP.
            let stack = unsafe { current_stack(irp) };
            // SAFETY: its current (the last) location.
            let code = u32::from(unsafe { (*stack).MinorFunction });
            if code == IRP_MN_SET_POWER || code == IRP_MN_QUERY_POWER {
                // SAFETY: we own the IRP.
                unsafe { complete_request(irp, STATUS_SUCCESS, 0) }
            } else {
                // SAFETY: we own the IRP.
                unsafe { complete_untouched(irp) }
            }
        }
        // SAFETY: we own the IRP.
        None => unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) },
    }
}

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver(lower, Irp)`.
///
/// # Safety
/// `irp` was sent to the FDO; the caller owns it and gives it up.
unsafe fn pass_on(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee; `lower` is below the FDO.
    unsafe { pass_down(ext.lower, irp) }
}

/// `IRP_MJ_SYSTEM_CONTROL` (WMI): the FDO passes it down; a PDO completes
/// it untouched (it registers no WMI provider).
///
/// # Safety
/// As [`dispatch_power`].
pub unsafe extern "C" fn dispatch_system_control(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a device object of this driver.
    match unsafe { extension(device) } {
        // SAFETY: we own the IRP and pass it on once.
        Some(Extension::Fdo(ext)) => unsafe { with_remove_lock(ext, irp, pass_on) },
        // SAFETY: we own the IRP.
        Some(Extension::Pdo(_)) => unsafe { complete_untouched(irp) },
        // SAFETY: we own the IRP.
        None => unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) },
    }
}

/// Every other major function: the FDO passes it down (the PCI bus driver
/// answers); a PDO has no such service: `STATUS_INVALID_DEVICE_REQUEST`.
///
/// # Safety
/// As [`dispatch_power`].
pub unsafe extern "C" fn dispatch_other(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a device object of this driver.
    match unsafe { extension(device) } {
        // SAFETY: we own the IRP and pass it on once.
        Some(Extension::Fdo(ext)) => unsafe { with_remove_lock(ext, irp, pass_on) },
        // SAFETY: we own the IRP.
        Some(Extension::Pdo(_)) | None => unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) },
    }
}
