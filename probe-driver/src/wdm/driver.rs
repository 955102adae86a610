//! The correct part of the probe: `DriverEntry`, `DriverUnload`,
//! `AddDevice`, the device extension and the dispatch routines.
//!
//! The FDO passes every Plug and Play, power and WMI IRP down under its
//! remove lock and, at `IRP_MN_REMOVE_DEVICE`, waits for the lock, passes
//! the IRP down, detaches and deletes itself (unless
//! `ProbeKeepDeviceAtRemove` asked it not to). `IRP_MJ_INTERNAL_DEVICE_CONTROL`
//! carries the IRP probes' requests to `irp.rs`. A child PDO exists only
//! inside `ProbePdoChangesUnhandledIrp`. Everything else is completed with
//! `STATUS_INVALID_DEVICE_REQUEST`.
use super::ddi::{complete, skip_current_stack};
use super::irp;
use super::remove_lock::{acquire, init, release, release_and_wait};
use capdma_interface::status::{STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS};
use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use wdk_sys::ntddk::{
    IoAttachDeviceToDeviceStack, IoCreateDevice, IoDeleteDevice, IoDetachDevice, IofCallDriver, PoCallDriver,
};
use wdk_sys::{
    DO_DEVICE_INITIALIZING, DO_POWER_PAGABLE, DRIVER_OBJECT, FILE_DEVICE_SECURE_OPEN, FILE_DEVICE_UNKNOWN,
    IO_REMOVE_LOCK, IRP, IRP_MJ_INTERNAL_DEVICE_CONTROL, IRP_MJ_PNP, IRP_MJ_POWER, IRP_MJ_SYSTEM_CONTROL,
    IRP_MN_REMOVE_DEVICE, NTSTATUS, NT_SUCCESS, PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, ULONG,
};

/// `'PrFd'`: the extension of the probe's FDO.
const KIND_FDO: u32 = u32::from_le_bytes(*b"PrFd");
/// `'PrPd'`: the extension of the child PDO of `ProbePdoChangesUnhandledIrp`.
const KIND_PDO: u32 = u32::from_le_bytes(*b"PrPd");

/// The device extension of every device object of the probe.
#[repr(C)]
pub struct ProbeExtension {
    /// [`KIND_FDO`] or [`KIND_PDO`].
    kind: u32,
    /// This device object.
    pub self_device: PDEVICE_OBJECT,
    /// FDO: the PDO `AddDevice` got (what `IoGetDmaAdapter` and
    /// `IoConnectInterruptEx` take). PDO: null.
    pub pdo: PDEVICE_OBJECT,
    /// FDO: the next lower device (`IoAttachDeviceToDeviceStack`). PDO: null.
    pub lower: PDEVICE_OBJECT,
    /// FDO: its remove lock.
    pub remove_lock: UnsafeCell<IO_REMOVE_LOCK>,
    /// The IRP `ProbePendingWithoutMark`'s dispatch routine kept.
    pub held_irp: AtomicPtr<IRP>,
    /// `ProbeKeepDeviceAtRemove`: the removal does not delete the FDO.
    pub keep_at_remove: AtomicBool,
}

impl ProbeExtension {
    /// The remove lock, for the `Io*RemoveLock*` routines.
    pub const fn remove_lock(&self) -> *mut IO_REMOVE_LOCK {
        self.remove_lock.get()
    }
}

/// The extension of `device` if it is one of the probe's device objects of
/// kind `kind`.
///
/// # Safety
/// `device` is null or a valid device object.
unsafe fn extension_of<'a>(device: PDEVICE_OBJECT, kind: u32) -> Option<&'a ProbeExtension> {
    if device.is_null() {
        return None;
    }
    // SAFETY: a valid device object (caller's guarantee).
    let raw = unsafe { (*device).DeviceExtension }.cast::<ProbeExtension>();
    if raw.is_null() {
        return None;
    }
    // SAFETY: the probe's extensions start with the kind tag; another
    // driver's device passed by mistake has at least a readable extension
    // start, and its tag does not match.
    let found = unsafe { (*raw).kind };
    // SAFETY: the tag says the extension is an initialized ProbeExtension.
    (found == kind).then(|| unsafe { &*raw })
}

/// The FDO extension of `device`, or `None` when `device` is not the
/// probe's FDO (the exports then answer `STATUS_INVALID_PARAMETER`).
///
/// # Safety
/// `device` is null or a valid device object.
pub unsafe fn fdo<'a>(device: PDEVICE_OBJECT) -> Option<&'a ProbeExtension> {
    // SAFETY: the caller's guarantee.
    unsafe { extension_of(device, KIND_FDO) }
}

/// `IoCreateDevice` with a [`ProbeExtension`] of `kind` (written in place),
/// no name, `FILE_DEVICE_UNKNOWN`.
///
/// # Safety
/// `driver` is the probe's driver object.
unsafe fn create_device(driver: PDRIVER_OBJECT, kind: u32, pdo: PDEVICE_OBJECT) -> Result<PDEVICE_OBJECT, NTSTATUS> {
    let size = ULONG::try_from(size_of::<ProbeExtension>()).map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    let mut device: PDEVICE_OBJECT = null_mut();
    // SAFETY: a valid driver object; no name; a valid out-pointer.
    let status = unsafe {
        IoCreateDevice(driver, size, null_mut(), FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, 0, &raw mut device)
    };
    if !NT_SUCCESS(status) {
        return Err(status);
    }
    // SAFETY: IoCreateDevice succeeded: the extension is `size` zeroed,
    // non-paged, suitably aligned bytes, ours alone until we publish it.
    let ext = unsafe { (*device).DeviceExtension }.cast::<ProbeExtension>();
    // SAFETY: as above.
    unsafe {
        ext.write(ProbeExtension {
            kind,
            self_device: device,
            pdo,
            lower: null_mut(),
            remove_lock: UnsafeCell::new(IO_REMOVE_LOCK::default()),
            held_irp: AtomicPtr::new(null_mut()),
            keep_at_remove: AtomicBool::new(false),
        });
    }
    Ok(device)
}

/// Creates the child PDO of `ProbePdoChangesUnhandledIrp`: a device object
/// of the probe that is attached to nothing (the bottom of its own stack).
///
/// # Errors
/// `IoCreateDevice`'s status.
///
/// # Safety
/// `fdo` is the probe's FDO.
pub unsafe fn create_child(fdo: &ProbeExtension) -> Result<PDEVICE_OBJECT, NTSTATUS> {
    // SAFETY: the FDO is valid, so is its driver object.
    let driver = unsafe { (*fdo.self_device).DriverObject };
    // SAFETY: the probe's own driver object.
    let child = unsafe { create_device(driver, KIND_PDO, null_mut())? };
    // SAFETY: just created and ours.
    unsafe { (*child).Flags &= !DO_DEVICE_INITIALIZING };
    Ok(child)
}

/// `DriverEntry`: the dispatch table, `DriverUnload` and `AddDevice`. No
/// global state.
///
/// # Safety
/// Called once by the I/O manager with a valid driver object.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(driver: PDRIVER_OBJECT, _registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid driver object, ours alone now.
    let Some(driver) = (unsafe { driver.as_mut() }) else {
        return STATUS_INVALID_DEVICE_REQUEST;
    };
    fill_dispatch_table(driver);
    driver.DriverUnload = Some(driver_unload);
    // SAFETY: the I/O manager allocates the driver extension with the object.
    if let Some(extension) = unsafe { driver.DriverExtension.as_mut() } {
        extension.AddDevice = Some(add_device);
    }
    wdk::println!("capdma_probe: DriverEntry (test-only image)");
    STATUS_SUCCESS
}

fn fill_dispatch_table(driver: &mut DRIVER_OBJECT) {
    for (major, slot) in driver.MajorFunction.iter_mut().enumerate() {
        let handler = match u32::try_from(major) {
            Ok(IRP_MJ_PNP) => dispatch_pnp,
            Ok(IRP_MJ_POWER) => dispatch_power,
            Ok(IRP_MJ_SYSTEM_CONTROL) => dispatch_system_control,
            Ok(IRP_MJ_INTERNAL_DEVICE_CONTROL) => dispatch_internal_device_control,
            _ => dispatch_other,
        };
        *slot = Some(handler);
    }
}

/// `DriverUnload`: frees nothing. What a probe left behind (pool, an
/// interrupt, a timer, a DPC, a device object) is left for the kernel to
/// report: that is the point.
unsafe extern "C" fn driver_unload(_driver: PDRIVER_OBJECT) {
    wdk::println!("capdma_probe: unload");
}

/// `AddDevice`: an unnamed `FILE_DEVICE_UNKNOWN` FDO with a
/// [`ProbeExtension`], its remove lock initialized, attached over `pdo`,
/// `DO_POWER_PAGABLE` as the lower device has it, `DO_DEVICE_INITIALIZING`
/// cleared. `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the Plug and Play manager with valid objects.
unsafe extern "C" fn add_device(driver: PDRIVER_OBJECT, pdo: PDEVICE_OBJECT) -> NTSTATUS {
    // SAFETY: the probe's driver object.
    let fdo = match unsafe { create_device(driver, KIND_FDO, pdo) } {
        Ok(fdo) => fdo,
        Err(status) => return status,
    };
    // SAFETY: created above; the extension is initialized and ours alone.
    let ext = unsafe { (*fdo).DeviceExtension }.cast::<ProbeExtension>();
    // SAFETY: the extension was initialized by `create_device`.
    let lock = unsafe { (*ext).remove_lock() };
    // SAFETY: valid storage inside the extension, which lives as long as the FDO.
    unsafe { init(lock) };
    // SAFETY: both device objects are valid.
    let lower = unsafe { IoAttachDeviceToDeviceStack(fdo, pdo) };
    if lower.is_null() {
        // SAFETY: created above, attached to nothing.
        unsafe { IoDeleteDevice(fdo) };
        return capdma_interface::status::STATUS_UNSUCCESSFUL;
    }
    // SAFETY: still exclusively ours.
    unsafe { (*ext).lower = lower };
    // SAFETY: `lower` is valid while attached.
    let lower_flags = unsafe { (*lower).Flags };
    // SAFETY: `fdo` is valid and ours until AddDevice returns.
    let flags = unsafe { &mut (*fdo).Flags };
    *flags |= lower_flags & DO_POWER_PAGABLE;
    *flags &= !DO_DEVICE_INITIALIZING;
    STATUS_SUCCESS
}

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver(lower, Irp)`.
///
/// # Safety
/// `lower` is the caller's next lower device; the caller owns `irp` and
/// gives it up.
unsafe fn pass_down(lower: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller owns the IRP.
    unsafe { skip_current_stack(irp) };
    // SAFETY: `lower` is valid; its stack location is the skipped one.
    unsafe { IofCallDriver(lower, irp) }
}

/// The minor function of `irp`'s current stack location.
///
/// # Safety
/// `irp` is a valid IRP in a dispatch routine.
unsafe fn minor_function(irp: PIRP) -> u8 {
    // SAFETY: the caller's guarantee (only the field's address is taken).
    let field = unsafe { &raw const (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation };
    // SAFETY: a valid, aligned field.
    let location = unsafe { field.read() };
    // SAFETY: the current location of the IRP.
    unsafe { (*location).MinorFunction }
}

/// `IRP_MJ_PNP`. FDO: every IRP passed down under the remove lock;
/// `IRP_MN_REMOVE_DEVICE` waits for the lock (`IoReleaseRemoveLockAndWait`,
/// skipped when a probe already ended the lock), passes the IRP down,
/// detaches and deletes the FDO (unless `ProbeKeepDeviceAtRemove`). Child
/// PDO: `ProbePdoChangesUnhandledIrp`'s mistake (see `irp.rs`).
unsafe extern "C" fn dispatch_pnp(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes one of the probe's device objects.
    if let Some(child) = unsafe { extension_of(device, KIND_PDO) } {
        // SAFETY: an IRP we own at the child PDO.
        return unsafe { irp::child_pnp(child, irp) };
    }
    // SAFETY: as above.
    let Some(ext) = (unsafe { fdo(device) }) else {
        // SAFETY: an IRP we own.
        return unsafe { complete(irp, STATUS_INVALID_DEVICE_REQUEST) };
    };
    // SAFETY: an IRP we own.
    let minor = unsafe { minor_function(irp) };
    // SAFETY: the lock was initialized by AddDevice.
    let acquired = unsafe { acquire(ext.remove_lock(), irp.cast()) };
    if u32::from(minor) == IRP_MN_REMOVE_DEVICE {
        if acquired.is_ok() {
            // SAFETY: acquired just above with this tag.
            unsafe { release_and_wait(ext.remove_lock(), irp.cast()) };
        }
        // SAFETY: an IRP we own; `lower` is attached below this FDO.
        let status = unsafe { pass_down(ext.lower, irp) };
        // SAFETY: attached in AddDevice, detached once.
        unsafe { IoDetachDevice(ext.lower) };
        if !ext.keep_at_remove.load(Ordering::Acquire) {
            // SAFETY: detached, no IRP left inside (the lock was waited for);
            // the extension is not touched afterwards.
            unsafe { IoDeleteDevice(device) };
        }
        return status;
    }
    if let Err(status) = acquired {
        // SAFETY: an IRP we own.
        return unsafe { complete(irp, status) };
    }
    // SAFETY: an IRP we own; `lower` is below this FDO.
    let status = unsafe { pass_down(ext.lower, irp) };
    // SAFETY: acquired above with this tag.
    unsafe { release(ext.remove_lock(), irp.cast()) };
    status
}

/// `IRP_MJ_POWER`: FDO: passed down (`PoCallDriver`) under the remove
/// lock. Child PDO: completed with its status untouched.
unsafe extern "C" fn dispatch_power(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: one of the probe's device objects.
    let Some(ext) = (unsafe { fdo(device) }) else {
        // SAFETY: an IRP we own (only the field's address is taken).
        let field = unsafe { &raw const (*irp).IoStatus.__bindgen_anon_1.Status };
        // SAFETY: a valid, aligned field; completed with the status it came with.
        let status = unsafe { field.read() };
        // SAFETY: as above.
        return unsafe { complete(irp, status) };
    };
    // SAFETY: the lock was initialized by AddDevice.
    if let Err(status) = unsafe { acquire(ext.remove_lock(), irp.cast()) } {
        // SAFETY: an IRP we own.
        return unsafe { complete(irp, status) };
    }
    // SAFETY: an IRP we own.
    unsafe { skip_current_stack(irp) };
    // SAFETY: `lower` is below this FDO; its stack location is the skipped one.
    let status = unsafe { PoCallDriver(ext.lower, irp) };
    // SAFETY: acquired above with this tag.
    unsafe { release(ext.remove_lock(), irp.cast()) };
    status
}

/// `IRP_MJ_SYSTEM_CONTROL`: passed down by the FDO (the probe is no WMI
/// provider).
unsafe extern "C" fn dispatch_system_control(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: one of the probe's device objects.
    match unsafe { fdo(device) } {
        // SAFETY: an IRP we own; `lower` is below this FDO.
        Some(ext) => unsafe { pass_down(ext.lower, irp) },
        // SAFETY: an IRP we own.
        None => unsafe { complete(irp, STATUS_INVALID_DEVICE_REQUEST) },
    }
}

/// `IRP_MJ_INTERNAL_DEVICE_CONTROL` at the FDO: the IRP probes' requests
/// (`irp::dispatch`).
unsafe extern "C" fn dispatch_internal_device_control(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: one of the probe's device objects.
    match unsafe { fdo(device) } {
        // SAFETY: an IRP we own at the FDO.
        Some(ext) => unsafe { irp::dispatch(ext, irp) },
        // SAFETY: an IRP we own.
        None => unsafe { complete(irp, STATUS_INVALID_DEVICE_REQUEST) },
    }
}

/// Every other major function: `STATUS_INVALID_DEVICE_REQUEST`.
unsafe extern "C" fn dispatch_other(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: an IRP we own.
    unsafe { complete(irp, STATUS_INVALID_DEVICE_REQUEST) }
}
