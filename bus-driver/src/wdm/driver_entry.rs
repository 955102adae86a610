//! `DriverEntry`, `DriverUnload`, and the dispatch table.
use super::ddi::{complete_request, current_stack};
use super::extension::{extension, Extension};
use super::fdo::add_device;
use super::power::{dispatch_other, dispatch_power, dispatch_system_control};
use super::{fdo_pnp, pdo_pnp, trace};
use capdma_interface::status::{STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS};
use wdk_sys::{
    DRIVER_OBJECT, IRP_MJ_PNP, IRP_MJ_POWER, IRP_MJ_SYSTEM_CONTROL, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT,
    PDRIVER_OBJECT, PIRP,
};

/// `DriverEntry`: registers the ETW provider (`trace`, `Capdma.Bus`) and
/// writes `DriverLoad`, fills the dispatch table (`IRP_MJ_PNP`,
/// `IRP_MJ_POWER`, `IRP_MJ_SYSTEM_CONTROL`, everything else passed down by
/// the FDO), `DriverUnload` and `DriverExtension->AddDevice`. Apart from
/// the provider's registration the driver keeps no global state:
/// everything lives in device extensions.
///
/// # Safety
/// Called once by the I/O manager with a valid driver object.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(driver: PDRIVER_OBJECT, _registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid, exclusively ours driver object.
    let Some(driver) = (unsafe { driver.as_mut() }) else {
        return STATUS_INVALID_DEVICE_REQUEST;
    };
    // A failed registration only means no events; the driver works on.
    let _ = trace::register();
    fill_dispatch_table(driver);
    driver.DriverUnload = Some(driver_unload);
    // SAFETY: the I/O manager allocates the driver extension with the object.
    if let Some(extension) = unsafe { driver.DriverExtension.as_mut() } {
        extension.AddDevice = Some(add_device);
    }
    wdk::println!("capdma_bus: DriverEntry");
    trace::driver_load();
    STATUS_SUCCESS
}

fn fill_dispatch_table(driver: &mut DRIVER_OBJECT) {
    for (major, slot) in driver.MajorFunction.iter_mut().enumerate() {
        let handler = match u32::try_from(major) {
            Ok(IRP_MJ_PNP) => dispatch_pnp,
            Ok(IRP_MJ_POWER) => dispatch_power,
            Ok(IRP_MJ_SYSTEM_CONTROL) => dispatch_system_control,
            _ => dispatch_other,
        };
        *slot = Some(handler);
    }
}

/// `DriverUnload`: writes `DriverUnload` and unregisters the ETW provider;
/// nothing else to free (every device object is gone by now).
unsafe extern "C" fn driver_unload(_driver: PDRIVER_OBJECT) {
    wdk::println!("capdma_bus: unload");
    trace::driver_unload();
    trace::unregister();
}

/// `IRP_MJ_PNP`: the FDO's or a child PDO's handler by device kind.
/// An error it returns is traced (`trace::irp_failed`).
unsafe extern "C" fn dispatch_pnp(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the IRP is ours until the handler gives it away; its current
    // location is read before that.
    let stack = unsafe { current_stack(irp) };
    // SAFETY: the IRP's current location, valid while we own the IRP.
    let minor = unsafe { (*stack).MinorFunction };
    // SAFETY: the I/O manager passes one of this driver's device objects.
    let (kind, status) = match unsafe { extension(device) } {
        // SAFETY: (this and the arms below) an IRP we own; the handler
        // completes or passes it exactly once.
        Some(Extension::Fdo(ext)) => ("FDO", unsafe { fdo_pnp::dispatch(ext, irp) }),
        // SAFETY: as above.
        Some(Extension::Pdo(ext)) => ("PDO", unsafe { pdo_pnp::dispatch(ext, irp) }),
        // SAFETY: as above.
        None => ("?", unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) }),
    };
    trace::irp_failed(false, minor, kind, status);
    status
}
