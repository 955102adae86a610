//! Moving IRPs down a stack: pass down and forget, forward and wait, send
//! a new Plug and Play IRP and wait; and the remove lock around them.
use super::ddi::{
    call_driver, copy_current_stack_to_next, irp_status, next_stack, set_completion_routine, skip_current_stack,
    BOOLEAN_FALSE, STATUS_MORE_PROCESSING_REQUIRED,
};
use capdma_interface::status::{STATUS_INSUFFICIENT_RESOURCES, STATUS_NOT_SUPPORTED, STATUS_PENDING};
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::null_mut;
use wdk_sys::ntddk::{
    IoAcquireRemoveLockEx, IoBuildSynchronousFsdRequest, IoInitializeRemoveLockEx, IoReleaseRemoveLockAndWaitEx,
    IoReleaseRemoveLockEx, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, IO_REMOVE_LOCK, IO_STACK_LOCATION, IO_STATUS_BLOCK, IRP_MJ_PNP, KEVENT,
    KPROCESSOR_MODE, NTSTATUS, PDEVICE_OBJECT, PIRP, PKEVENT, ULONG,
};

/// Pool tag of the remove lock (`CDrl`).
const REMOVE_LOCK_TAG: ULONG = u32::from_le_bytes(*b"CDrl");
/// `sizeof(IO_REMOVE_LOCK)` of a free build, passed to the `…Ex` routines
/// exactly as wdm.h's macros do.
const REMOVE_LOCK_SIZE: ULONG = {
    let size = size_of::<IO_REMOVE_LOCK>();
    assert!(size == 32);
    32
};

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver(lower, Irp)`: hands the
/// IRP to the next lower driver and returns its status.
///
/// # Safety
/// `lower` is the next lower device of the caller's device; the caller
/// owns `irp` and gives it up.
pub unsafe fn pass_down(lower: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller owns the IRP; its current location is valid to reuse.
    unsafe { skip_current_stack(irp) };
    // SAFETY: `lower` is valid and the IRP's next location is the one we skipped into.
    unsafe { call_driver(lower, irp) }
}

/// The completion routine of [`forward_and_wait`]: signals the event and
/// keeps the IRP (`STATUS_MORE_PROCESSING_REQUIRED`).
unsafe extern "C" fn signal_event(_device: PDEVICE_OBJECT, irp: PIRP, context: *mut c_void) -> NTSTATUS {
    // SAFETY: the I/O manager passes the IRP being completed.
    let pending = unsafe { (*irp).PendingReturned } != 0;
    if pending {
        // SAFETY: `context` is the KEVENT on the waiting dispatch routine's
        // stack, alive until that routine wakes up (it waits for this).
        unsafe { KeSetEvent(context.cast(), 0, BOOLEAN_FALSE) };
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// A notification event, initialized (`KeInitializeEvent`, not signalled).
fn new_event() -> KEVENT {
    let mut event = MaybeUninit::<KEVENT>::zeroed();
    // SAFETY: `KeInitializeEvent` initializes the whole (zeroed) event.
    unsafe { KeInitializeEvent(event.as_mut_ptr(), _EVENT_TYPE::NotificationEvent, BOOLEAN_FALSE) };
    // SAFETY: initialized just above (and all-zero was already a valid bit pattern).
    unsafe { event.assume_init() }
}

/// `KeWaitForSingleObject(event, Executive, KernelMode, FALSE, NULL)`.
///
/// # Safety
/// `event` is an initialized event.
unsafe fn wait(event: PKEVENT) {
    // SAFETY: the caller passes an initialized event; an infinite
    // kernel-mode wait at PASSIVE_LEVEL keeps the stack resident.
    let _ = unsafe {
        KeWaitForSingleObject(
            event.cast(),
            _KWAIT_REASON::Executive,
            KPROCESSOR_MODE::try_from(_MODE::KernelMode).unwrap_or(0),
            BOOLEAN_FALSE,
            null_mut(),
        )
    };
}

/// Forwards `irp` to `lower` and waits until the lower drivers completed
/// it (`IoCopyCurrentIrpStackLocationToNext`, `IoSetCompletionRoutine`
/// with a `KEVENT`, `IoCallDriver`, `KeWaitForSingleObject`); returns its
/// final `IoStatus.Status`. The caller owns the IRP again afterwards and
/// must complete it. `PASSIVE_LEVEL`.
///
/// # Safety
/// As [`pass_down`], except that the caller keeps ownership.
pub unsafe fn forward_and_wait(lower: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    let mut event = new_event();
    // SAFETY: the caller owns the IRP and `lower` sits below it.
    unsafe { copy_current_stack_to_next(irp) };
    // SAFETY: as above; the event outlives the wait below.
    unsafe { set_completion_routine(irp, Some(signal_event), (&raw mut event).cast(), true, true, true) };
    // SAFETY: the next location is set up for `lower`.
    let status = unsafe { call_driver(lower, irp) };
    if status == STATUS_PENDING {
        // SAFETY: the event is initialized; the completion routine sets it.
        unsafe { wait(&raw mut event) };
    }
    // SAFETY: the completion routine returned STATUS_MORE_PROCESSING_REQUIRED:
    // the IRP is ours again and valid.
    unsafe { irp_status(irp) }
}

/// Sends a new `IRP_MJ_PNP` IRP with minor function `minor` to `target`
/// and waits for it (`IoBuildSynchronousFsdRequest`, `IoStatus.Status =
/// STATUS_NOT_SUPPORTED` as every Plug and Play IRP starts, `IoCallDriver`,
/// `KeWaitForSingleObject`). `fill` sets up the new IRP's first stack
/// location (its `Parameters`). Returns the final `IO_STATUS_BLOCK`.
/// `PASSIVE_LEVEL`.
///
/// # Safety
/// `target` is a referenced, valid device object (the top of a stack).
pub unsafe fn send_pnp_and_wait(
    target: PDEVICE_OBJECT,
    minor: u8,
    fill: impl FnOnce(&mut IO_STACK_LOCATION),
) -> Result<IO_STATUS_BLOCK, NTSTATUS> {
    let mut event = new_event();
    let mut io_status = IO_STATUS_BLOCK::default();
    // SAFETY: `target` is valid; the event and the status block outlive the
    // IRP (we wait for its completion below); no buffer, no offset.
    let irp = unsafe {
        IoBuildSynchronousFsdRequest(IRP_MJ_PNP, target, null_mut(), 0, null_mut(), &raw mut event, &raw mut io_status)
    };
    if irp.is_null() {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    // SAFETY: a fresh IRP we own until `call_driver`.
    unsafe { super::ddi::set_irp_status(irp, STATUS_NOT_SUPPORTED, Some(0)) };
    // SAFETY: the new IRP's first location is the "next" one for `target`.
    let location = unsafe { next_stack(irp) };
    // SAFETY: a valid stack location of an IRP we own.
    let location = unsafe { &mut *location };
    location.MajorFunction = u8::try_from(IRP_MJ_PNP).unwrap_or(u8::MAX);
    location.MinorFunction = minor;
    fill(location);
    // SAFETY: the location is set up for `target`; the I/O manager frees
    // the IRP after completion and signals `event`.
    let status = unsafe { call_driver(target, irp) };
    if status == STATUS_PENDING {
        // SAFETY: the event is initialized; the I/O manager sets it.
        unsafe { wait(&raw mut event) };
    } else {
        io_status.__bindgen_anon_1.Status = status;
    }
    Ok(io_status)
}

/// `IoInitializeRemoveLock(Lock, Tag, 0, 0)` (`IoInitializeRemoveLockEx`).
///
/// # Safety
/// `lock` points to writable storage that lives as long as the device.
pub unsafe fn init_remove_lock(lock: *mut IO_REMOVE_LOCK) {
    // SAFETY: the caller guarantees valid storage.
    unsafe { IoInitializeRemoveLockEx(lock, REMOVE_LOCK_TAG, 0, 0, REMOVE_LOCK_SIZE) };
}

/// `IoAcquireRemoveLock(Lock, Irp)` (`IoAcquireRemoveLockEx`):
/// `Err(STATUS_DELETE_PENDING)` once the device is being removed.
///
/// # Safety
/// `lock` was initialized with [`init_remove_lock`].
pub unsafe fn acquire_remove_lock(lock: *mut IO_REMOVE_LOCK, irp: PIRP) -> Result<(), NTSTATUS> {
    // SAFETY: an initialized lock; the IRP is the tag; "" and line 1 are
    // what wdm.h's free-build macro passes.
    let status = unsafe { IoAcquireRemoveLockEx(lock, irp.cast(), c"".as_ptr().cast(), 1, REMOVE_LOCK_SIZE) };
    if wdk_sys::NT_SUCCESS(status) {
        Ok(())
    } else {
        Err(status)
    }
}

/// `IoReleaseRemoveLock(Lock, Irp)` (`IoReleaseRemoveLockEx`).
///
/// # Safety
/// The lock was acquired with the same tag.
pub unsafe fn release_remove_lock(lock: *mut IO_REMOVE_LOCK, irp: PIRP) {
    // SAFETY: the caller acquired the lock with this tag.
    unsafe { IoReleaseRemoveLockEx(lock, irp.cast(), REMOVE_LOCK_SIZE) };
}

/// `IoReleaseRemoveLockAndWait(Lock, Irp)` (`IoReleaseRemoveLockAndWaitEx`):
/// releases this IRP's acquisition and waits until every other one is
/// released; later acquisitions fail. `PASSIVE_LEVEL`, `IRP_MN_REMOVE_DEVICE` only.
///
/// # Safety
/// The lock was acquired with the same tag.
pub unsafe fn release_remove_lock_and_wait(lock: *mut IO_REMOVE_LOCK, irp: PIRP) {
    // SAFETY: the caller acquired the lock with this tag.
    unsafe { IoReleaseRemoveLockAndWaitEx(lock, irp.cast(), REMOVE_LOCK_SIZE) };
}
