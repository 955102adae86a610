//! IRP probes. Each export sends the harness's IRP to the probe's own FDO
//! (`IoCallDriver`, `IRP_MJ_INTERNAL_DEVICE_CONTROL` with one of the
//! private control codes below) so that the mistake happens in a dispatch
//! routine, where the kernel sees what it returns, and returns what
//! `IoCallDriver` returned. The PDO probe sends an `IRP_MJ_PNP` IRP to a
//! child PDO it creates for the purpose.
use super::ddi::{complete, mark_irp_pending, next_stack};
use super::driver::{create_child, fdo, ProbeExtension};
use capdma_interface::status::{
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
};
use core::ptr::null_mut;
use core::sync::atomic::Ordering;
use wdk_sys::ntddk::{IoDeleteDevice, IofCallDriver, IofCompleteRequest};
use wdk_sys::{
    FILE_ANY_ACCESS, FILE_DEVICE_UNKNOWN, IO_STACK_LOCATION, IRP_MJ_INTERNAL_DEVICE_CONTROL, IRP_MJ_PNP,
    CCHAR, IO_NO_INCREMENT, METHOD_NEITHER, NTSTATUS, PDEVICE_OBJECT, PIRP, ULONG,
};

/// `CTL_CODE(FILE_DEVICE_UNKNOWN, function, METHOD_NEITHER, FILE_ANY_ACCESS)`.
const fn control_code(function: ULONG) -> ULONG {
    (FILE_DEVICE_UNKNOWN << 16) | (FILE_ANY_ACCESS << 14) | (function << 2) | METHOD_NEITHER
}

/// A Plug and Play minor function wdm.h does not define (`0xFF`, Driver
/// Verifier's `IRP_MN_BOGUS`): an IRP no driver understands.
const MN_BOGUS: ULONG = 0xFF;

/// The dispatch routine completes the IRP twice.
const COMPLETE_TWICE: ULONG = control_code(0x800);
/// The dispatch routine completes the IRP, then writes to it.
const TOUCH_AFTER_COMPLETION: ULONG = control_code(0x801);
/// The dispatch routine keeps the IRP and returns `STATUS_PENDING` unmarked.
const PENDING_WITHOUT_MARK: ULONG = control_code(0x802);
/// The dispatch routine marks the IRP pending, completes it, returns success.
const MARK_WITHOUT_PENDING: ULONG = control_code(0x803);
/// The dispatch routine calls the lower driver with no stack location left.
const CALL_WITHOUT_LOCATION: ULONG = control_code(0x804);

/// Sets up `irp`'s next stack location (all fields zero but the ones
/// given) and sends it to `device` (`IoCallDriver`).
///
/// # Safety
/// `device` is valid; `irp` is a new IRP the caller owns, with a free
/// stack location (the caller gives it up).
unsafe fn send(device: PDEVICE_OBJECT, irp: PIRP, major: ULONG, minor: ULONG, code: ULONG) -> NTSTATUS {
    // SAFETY: the caller's guarantee: the next location exists.
    let location = unsafe { next_stack(irp) };
    let mut setup = IO_STACK_LOCATION {
        MajorFunction: u8::try_from(major).unwrap_or(u8::MAX),
        MinorFunction: u8::try_from(minor).unwrap_or(u8::MAX),
        ..IO_STACK_LOCATION::default()
    };
    setup.Parameters.DeviceIoControl.IoControlCode = code;
    // SAFETY: a valid stack location of an IRP we own.
    unsafe { location.write(setup) };
    // SAFETY: the location is set up for `device`; the IRP is given up.
    unsafe { IofCallDriver(device, irp) }
}

/// The control code of `irp`'s current stack location.
///
/// # Safety
/// `irp` is a valid `IRP_MJ_INTERNAL_DEVICE_CONTROL` IRP in a dispatch routine.
unsafe fn control_code_of(irp: PIRP) -> ULONG {
    // SAFETY: the caller's guarantee (only the field's address is taken).
    let field = unsafe { &raw const (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation };
    // SAFETY: a valid, aligned field.
    let location = unsafe { field.read() };
    // SAFETY: the current location of the IRP (only the field's address is
    // taken); `DeviceIoControl` is the member its major function uses.
    let code = unsafe { &raw const (*location).Parameters.DeviceIoControl.IoControlCode };
    // SAFETY: a valid, aligned field.
    unsafe { code.read() }
}

/// `IRP_MJ_INTERNAL_DEVICE_CONTROL` at the FDO: commits the mistake the
/// control code names (an unknown code: `STATUS_INVALID_DEVICE_REQUEST`).
///
/// # Safety
/// `irp` is an IRP the FDO `ext` owns in its dispatch routine.
pub unsafe fn dispatch(ext: &ProbeExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    match unsafe { control_code_of(irp) } {
        COMPLETE_TWICE => {
            // SAFETY: our IRP, completed once here.
            unsafe { complete(irp, STATUS_SUCCESS) };
            // SAFETY: NOT SAFE, on purpose: the second completion of the
            // same IRP (the mistake the kernel must report). `IoStatus` is
            // not written first: that would be a touch after completion, a
            // mistake of its own (ProbeTouchIrpAfterCompletion) that the
            // kernel would stop at before this one.
            unsafe { IofCompleteRequest(irp, CCHAR::try_from(IO_NO_INCREMENT).unwrap_or(0)) };
            STATUS_SUCCESS
        }
        TOUCH_AFTER_COMPLETION => {
            // SAFETY: our IRP, completed once.
            unsafe { complete(irp, STATUS_SUCCESS) };
            // SAFETY: only the field's address is taken.
            let information = unsafe { &raw mut (*irp).IoStatus.Information };
            // SAFETY: NOT SAFE, on purpose: the IRP belongs to the I/O
            // manager again (the mistake the kernel must report); volatile
            // so that the write is not optimised away.
            unsafe { information.write_volatile(1) };
            STATUS_SUCCESS
        }
        PENDING_WITHOUT_MARK => {
            // The mistake: the IRP is kept and STATUS_PENDING returned
            // without IoMarkIrpPending. The export completes it afterwards.
            ext.held_irp.store(irp, Ordering::Release);
            STATUS_PENDING
        }
        MARK_WITHOUT_PENDING => {
            // SAFETY: our IRP in its dispatch routine.
            unsafe { mark_irp_pending(irp) };
            // The mistake: marked pending, yet completed and success returned.
            // SAFETY: our IRP, completed once.
            unsafe { complete(irp, STATUS_SUCCESS) }
        }
        CALL_WITHOUT_LOCATION => {
            // SAFETY: NOT SAFE, on purpose: `lower` is the device below the
            // FDO, but the IRP has no stack location left for it and none is
            // set up (the mistake the kernel must report; it stops in
            // IoCallDriver before any location is touched).
            unsafe { IofCallDriver(ext.lower, irp) }
        }
        // SAFETY: our IRP.
        _ => unsafe { complete(irp, STATUS_INVALID_DEVICE_REQUEST) },
    }
}

/// `IRP_MJ_PNP` at the child PDO: **the mistake of
/// `ProbePdoChangesUnhandledIrp`**: whatever the minor function, the PDO
/// (which handles none) completes the IRP with `IoStatus.Status` changed to
/// `STATUS_UNSUCCESSFUL` instead of leaving it as it came.
///
/// # Safety
/// `irp` is an IRP the child PDO owns in its dispatch routine.
pub unsafe fn child_pnp(_child: &ProbeExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: our IRP, completed once.
    unsafe { complete(irp, STATUS_UNSUCCESSFUL) }
}

/// Checks that `device` is the probe's FDO and `irp` is not null, then
/// sends `irp` to the FDO with `code`.
///
/// # Safety
/// `device` is a valid device object; `irp` is null or a new IRP the
/// caller gives up, with a free stack location.
unsafe fn send_to_fdo(device: PDEVICE_OBJECT, irp: PIRP, code: ULONG) -> Result<NTSTATUS, NTSTATUS> {
    // SAFETY: the caller passes a valid device object.
    if unsafe { fdo(device) }.is_none() || irp.is_null() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: the caller's guarantee; the FDO handles IRP_MJ_INTERNAL_DEVICE_CONTROL.
    Ok(unsafe { send(device, irp, IRP_MJ_INTERNAL_DEVICE_CONTROL, 0, code) })
}

/// **Breaks: an IRP is completed exactly once.** The FDO's dispatch routine
/// calls `IoCompleteRequest` twice on `irp`.
///
/// Windows: bug check 0x44 (`MULTIPLE_IRP_COMPLETE_REQUESTS`), parameter 1
/// the IRP.
///
/// Returns what `IoCallDriver` returned, or `STATUS_INVALID_PARAMETER` when
/// `device` is not the probe's FDO or `irp` is null.
///
/// # Safety
/// `device` is the probe's FDO; `irp` a new IRP with a free stack location
/// for it (`IoAllocateIrp(device->StackSize)`), given up; `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeCompleteIrpTwice")]
pub unsafe extern "system" fn probe_complete_irp_twice(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    unsafe { send_to_fdo(device, irp, COMPLETE_TWICE) }.unwrap_or_else(|status| status)
}

/// **Breaks: an IRP is not touched after its completion.** The FDO's
/// dispatch routine completes `irp`, then writes `Irp->IoStatus.Information`.
///
/// Driver Verifier (I/O verification allocates IRPs from special pool, and
/// a completed IRP is freed): bug check 0xD5
/// (`DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL`).
///
/// Returns what `IoCallDriver` returned, or `STATUS_INVALID_PARAMETER` when
/// `device` is not the probe's FDO or `irp` is null.
///
/// # Safety
/// As `ProbeCompleteIrpTwice`.
#[unsafe(export_name = "ProbeTouchIrpAfterCompletion")]
pub unsafe extern "system" fn probe_touch_irp_after_completion(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    unsafe { send_to_fdo(device, irp, TOUCH_AFTER_COMPLETION) }.unwrap_or_else(|status| status)
}

/// **Breaks: `STATUS_PENDING` is returned exactly when `IoMarkIrpPending`
/// was called (returned without the mark).** The FDO's dispatch routine
/// keeps `irp` and returns `STATUS_PENDING` without `IoMarkIrpPending`;
/// once `IoCallDriver` has returned, the export completes the IRP with
/// `STATUS_SUCCESS` (so that it does not stay pending for ever).
///
/// Driver Verifier (I/O verification): bug check 0xC9
/// (`DRIVER_VERIFIER_IOMANAGER_VIOLATION`), I/O error 0x23D: `STATUS_PENDING`
/// returned without `IoMarkIrpPending`.
///
/// Returns what `IoCallDriver` returned (`STATUS_PENDING`), or
/// `STATUS_INVALID_PARAMETER` when `device` is not the probe's FDO or `irp`
/// is null.
///
/// # Safety
/// As `ProbeCompleteIrpTwice`.
#[unsafe(export_name = "ProbePendingWithoutMark")]
pub unsafe extern "system" fn probe_pending_without_mark(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    let status = match unsafe { send_to_fdo(device, irp, PENDING_WITHOUT_MARK) } {
        Ok(status) => status,
        Err(status) => return status,
    };
    // SAFETY: `send_to_fdo` checked that `device` is the FDO.
    if let Some(ext) = unsafe { fdo(device) } {
        let held = ext.held_irp.swap(null_mut(), Ordering::AcqRel);
        if !held.is_null() {
            // SAFETY: the IRP the dispatch routine kept, still ours, completed once.
            unsafe { complete(held, STATUS_SUCCESS) };
        }
    }
    status
}

/// **Breaks: `STATUS_PENDING` is returned exactly when `IoMarkIrpPending`
/// was called (the mark without it).** The FDO's dispatch routine calls
/// `IoMarkIrpPending`, completes `irp` and returns `STATUS_SUCCESS`.
///
/// Driver Verifier (I/O verification): bug check 0xC9
/// (`DRIVER_VERIFIER_IOMANAGER_VIOLATION`), I/O error 0x23E: an IRP marked
/// pending without `STATUS_PENDING` returned.
///
/// Returns what `IoCallDriver` returned, or `STATUS_INVALID_PARAMETER` when
/// `device` is not the probe's FDO or `irp` is null.
///
/// # Safety
/// As `ProbeCompleteIrpTwice`.
#[unsafe(export_name = "ProbeMarkPendingWithoutPending")]
pub unsafe extern "system" fn probe_mark_pending_without_pending(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    unsafe { send_to_fdo(device, irp, MARK_WITHOUT_PENDING) }.unwrap_or_else(|status| status)
}

/// **Breaks: IRP stack locations in range.** `irp` has exactly one stack
/// location: the export uses it to send the IRP to the FDO, whose dispatch
/// routine calls `IoCallDriver(lower device, Irp)` with none left (and
/// without setting one up).
///
/// Windows: bug check 0x35 (`NO_MORE_IRP_STACK_LOCATIONS`), parameter 1 the
/// IRP; `IoCallDriver` stops before touching a stack location.
///
/// Returns what `IoCallDriver` returned, or `STATUS_INVALID_PARAMETER` when
/// `device` is not the probe's FDO or `irp` is null. The IRP is not touched
/// after the failed call.
///
/// # Safety
/// `device` is the probe's FDO; `irp` a new IRP with exactly one stack
/// location (`IoAllocateIrp(1)`), given up; `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeCallDriverNoStackLocation")]
pub unsafe extern "system" fn probe_call_driver_no_stack_location(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    unsafe { send_to_fdo(device, irp, CALL_WITHOUT_LOCATION) }.unwrap_or_else(|status| status)
}

/// **Breaks: a PDO completes an IRP it does not handle with `IoStatus`
/// untouched.** Creates a child PDO (a device object of the probe attached
/// to nothing), sends it `irp` as `IRP_MJ_PNP` with a minor function no
/// driver understands ([`MN_BOGUS`], what Driver Verifier itself sends to
/// check this) and `IoStatus.Status` set to `STATUS_NOT_SUPPORTED` (as every
/// Plug and Play IRP starts), whose dispatch routine completes it with
/// `STATUS_UNSUCCESSFUL`, then deletes the child. (A defined minor function
/// would prove nothing: a bus driver may fail one it handles.)
///
/// Driver Verifier (I/O verification): bug check 0xC9
/// (`DRIVER_VERIFIER_IOMANAGER_VIOLATION`), I/O error 0x213: the status of an
/// IRP the driver does not understand changed.
///
/// Returns what `IoCallDriver` returned, `IoCreateDevice`'s failure, or
/// `STATUS_INVALID_PARAMETER` when `device` is not the probe's FDO or `irp`
/// is null.
///
/// # Safety
/// `device` is the probe's FDO; `irp` a new IRP with a free stack location,
/// given up; `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbePdoChangesUnhandledIrp")]
pub unsafe extern "system" fn probe_pdo_changes_unhandled_irp(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller passes a valid device object.
    let Some(ext) = (unsafe { fdo(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if irp.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the probe's FDO.
    let child = match unsafe { create_child(ext) } {
        Ok(child) => child,
        Err(status) => return status,
    };
    // SAFETY: a new IRP the caller gave up, ours until it is sent.
    let io_status = unsafe { &mut (*irp).IoStatus };
    io_status.__bindgen_anon_1.Status = STATUS_NOT_SUPPORTED;
    // SAFETY: the child is valid; the IRP has a free stack location.
    let status = unsafe { send(child, irp, IRP_MJ_PNP, MN_BOGUS, 0) };
    // SAFETY: created above, attached to nothing, no IRP left in it (its
    // dispatch routine completed the only one).
    unsafe { IoDeleteDevice(child) };
    status
}
