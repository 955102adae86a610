//! The FDO's remove lock (`IoInitializeRemoveLockEx` and the `…Ex`
//! routines behind wdm.h's `IoAcquireRemoveLock` macros), and the two
//! remove-lock probes.
use super::driver::fdo;
use capdma_interface::status::{STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use core::ffi::c_void;
use wdk_sys::ntddk::{
    IoAcquireRemoveLockEx, IoInitializeRemoveLockEx, IoReleaseRemoveLockAndWaitEx, IoReleaseRemoveLockEx,
};
use wdk_sys::{IO_REMOVE_LOCK, NTSTATUS, NT_SUCCESS, PDEVICE_OBJECT, ULONG};

/// The remove lock's pool tag, `"CdPl"`.
const REMOVE_LOCK_TAG: ULONG = u32::from_le_bytes(*b"CdPl");
/// `sizeof(IO_REMOVE_LOCK)` of a free build, passed to the `…Ex` routines
/// as wdm.h's macros do.
const REMOVE_LOCK_SIZE: ULONG = {
    assert!(size_of::<IO_REMOVE_LOCK>() == 32);
    32
};

/// Tags that are no IRP: distinct addresses in the image (distinct
/// values too, so that no linker folds them into one).
static FORGOTTEN_TAG: u8 = 1;
static REMOVE_TAG: u8 = 2;
static NEVER_ACQUIRED_TAG: u8 = 3;

fn tag(of: &'static u8) -> *mut c_void {
    core::ptr::from_ref(of).cast_mut().cast()
}

/// `IoInitializeRemoveLock(Lock, Tag, 0, 0)`.
///
/// # Safety
/// `lock` is writable storage that lives as long as the device.
pub unsafe fn init(lock: *mut IO_REMOVE_LOCK) {
    // SAFETY: the caller's guarantee.
    unsafe { IoInitializeRemoveLockEx(lock, REMOVE_LOCK_TAG, 0, 0, REMOVE_LOCK_SIZE) };
}

/// `IoAcquireRemoveLock(Lock, Tag)`: `Err(STATUS_DELETE_PENDING)` once the
/// device is being removed.
///
/// # Safety
/// `lock` was initialized with [`init`].
pub unsafe fn acquire(lock: *mut IO_REMOVE_LOCK, tag: *mut c_void) -> Result<(), NTSTATUS> {
    // SAFETY: an initialized lock; "" and line 1 are what the free-build macro passes.
    let status = unsafe { IoAcquireRemoveLockEx(lock, tag, c"".as_ptr().cast(), 1, REMOVE_LOCK_SIZE) };
    if NT_SUCCESS(status) {
        Ok(())
    } else {
        Err(status)
    }
}

/// `IoReleaseRemoveLock(Lock, Tag)`.
///
/// # Safety
/// The lock was acquired with `tag` (the probe below that breaks this says so).
pub unsafe fn release(lock: *mut IO_REMOVE_LOCK, tag: *mut c_void) {
    // SAFETY: the caller's guarantee.
    unsafe { IoReleaseRemoveLockEx(lock, tag, REMOVE_LOCK_SIZE) };
}

/// `IoReleaseRemoveLockAndWait(Lock, Tag)`: releases `tag`'s acquisition
/// and waits until every other one is released. `PASSIVE_LEVEL`.
///
/// # Safety
/// The lock was acquired with `tag`.
pub unsafe fn release_and_wait(lock: *mut IO_REMOVE_LOCK, tag: *mut c_void) {
    // SAFETY: the caller's guarantee.
    unsafe { IoReleaseRemoveLockAndWaitEx(lock, tag, REMOVE_LOCK_SIZE) };
}

/// **Breaks: remove locks balanced (an acquisition never released before
/// the remove-and-wait).** Acquires the FDO's remove lock with one tag and
/// never releases it, then does what an `IRP_MN_REMOVE_DEVICE` handler does:
/// acquires with a second tag and calls `IoReleaseRemoveLockAndWait` with it.
///
/// No bug check: on Windows `IoReleaseRemoveLockAndWait` waits for ever for
/// the forgotten acquisition (the removal hangs; `IoReleaseRemoveLock` page:
/// every acquisition must be released). The emulated kernel reports the
/// held acquisition instead of waiting. Afterwards the lock is ended: the
/// FDO's later removal skips the wait (`driver.rs`).
///
/// Returns `STATUS_SUCCESS` once the wait returns, an acquisition's failure
/// status, or `STATUS_INVALID_PARAMETER` when `device` is not the probe's FDO.
///
/// # Safety
/// `device` is the probe's FDO, not removed; `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeRemoveLockHeldAtRemove")]
pub unsafe extern "system" fn probe_remove_lock_held_at_remove(device: PDEVICE_OBJECT) -> NTSTATUS {
    // SAFETY: the caller passes a valid device object.
    let Some(ext) = (unsafe { fdo(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the FDO's lock, initialized by AddDevice. Never released: the mistake.
    if let Err(status) = unsafe { acquire(ext.remove_lock(), tag(&FORGOTTEN_TAG)) } {
        return status;
    }
    // SAFETY: as above.
    if let Err(status) = unsafe { acquire(ext.remove_lock(), tag(&REMOVE_TAG)) } {
        return status;
    }
    // SAFETY: acquired just above with this tag; PASSIVE_LEVEL.
    unsafe { release_and_wait(ext.remove_lock(), tag(&REMOVE_TAG)) };
    STATUS_SUCCESS
}

/// **Breaks: remove locks balanced (a release without an acquisition).**
/// `IoReleaseRemoveLock` on the FDO's lock with a tag never acquired: the
/// lock's count drops below what its holders account for.
///
/// Driver Verifier (I/O verification): bug check 0xC4
/// (`DRIVER_VERIFIER_DETECTED_VIOLATION`), parameter 1 0xD5: the
/// `IoReleaseRemoveLock` tag does not match a previous `IoAcquireRemoveLock` tag.
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INVALID_PARAMETER` when `device` is
/// not the probe's FDO.
///
/// # Safety
/// `device` is the probe's FDO, not removed; `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeReleaseRemoveLockNotAcquired")]
pub unsafe extern "system" fn probe_release_remove_lock_not_acquired(device: PDEVICE_OBJECT) -> NTSTATUS {
    // SAFETY: the caller passes a valid device object.
    let Some(ext) = (unsafe { fdo(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: NOT SAFE, on purpose: the tag was never acquired (the mistake
    // the kernel must report); the lock itself is valid.
    unsafe { release(ext.remove_lock(), tag(&NEVER_ACQUIRED_TAG)) };
    STATUS_SUCCESS
}
