//! The pin's reference clock: `KsPinGetReferenceClockInterface` hands out
//! the `IKsReferenceClock` of the master clock the application assigned
//! (`KSPROPERTY_STREAM_MASTERCLOCK`), reference counted
//! ("`KsPinGetReferenceClockInterface` function (ks.h)", "`IKsReferenceClock`
//! interface (ks.h)"). The pin takes it at `STOP -> ACQUIRE`, stamps
//! delivered frames with `GetCorrelatedTime` (the method its page names for
//! `KSSTREAM_HEADER.PresentationTime`; `GetTime`'s page says not to use
//! `GetTime` for it) and releases it at `-> STOP`.
use super::adapter::{vtable, UnknownVtbl};
use super::bindings::{KsPinGetReferenceClockInterface, PKSPIN};
use super::ddi::nt_success;
use core::ffi::c_void;
use core::ptr;
use wdk_sys::{LONGLONG, NTSTATUS, PLONGLONG};

/// `IKsReferenceClock`'s vtable (ks.h): `IUnknown`, then the six methods
/// in their declaration order.
#[repr(C)]
struct ReferenceClockVtbl {
    unknown: UnknownVtbl,
    get_time: unsafe extern "system" fn(this: *mut c_void) -> LONGLONG,
    get_physical_time: unsafe extern "system" fn(this: *mut c_void) -> LONGLONG,
    get_correlated_time: unsafe extern "system" fn(this: *mut c_void, system_time: PLONGLONG) -> LONGLONG,
    get_correlated_physical_time: unsafe extern "system" fn(this: *mut c_void, system_time: PLONGLONG) -> LONGLONG,
    get_resolution: unsafe extern "system" fn(this: *mut c_void, resolution: *mut c_void) -> NTSTATUS,
    get_state: unsafe extern "system" fn(this: *mut c_void, state: *mut c_void) -> NTSTATUS,
}

/// The pin's `IKsReferenceClock` (with one reference the caller must give
/// back through [`release`]), or null when the pin has no master clock
/// (`STATUS_DEVICE_NOT_READY`) or the call failed. PASSIVE.
///
/// # Safety
/// `pin` must be a live `PKSPIN`.
pub unsafe fn acquire(pin: PKSPIN) -> *mut c_void {
    let mut clock: *mut c_void = ptr::null_mut();
    // SAFETY: the caller guarantees the pin; `clock` is a valid out-pointer.
    let status = unsafe { KsPinGetReferenceClockInterface(pin, &raw mut clock) };
    if nt_success(status) {
        clock
    } else {
        ptr::null_mut()
    }
}

/// `Release` of a clock from [`acquire`].
///
/// # Safety
/// `clock` must be an interface [`acquire`] returned, released once.
pub unsafe fn release(clock: *mut c_void) {
    if clock.is_null() {
        return;
    }
    // SAFETY: a COM-style object's first pointer is its vtable; the clock
    // is live while the reference this call gives back is held.
    let vtbl = unsafe { vtable::<ReferenceClockVtbl>(clock) };
    // SAFETY: as above; the count it returns is not needed.
    let _ = unsafe { (vtbl.unknown.release)(clock) };
}

/// `GetCorrelatedTime`: the clock's stream time now, 100-ns units (the
/// correlated system time it also answers is not used). `<= DISPATCH_LEVEL`.
///
/// # Safety
/// `clock` must be a live interface from [`acquire`] not yet released.
pub unsafe fn stream_time(clock: *mut c_void) -> i64 {
    let mut system_time: LONGLONG = 0;
    // SAFETY: as in `release`; `system_time` is a valid out-pointer.
    let vtbl = unsafe { vtable::<ReferenceClockVtbl>(clock) };
    // SAFETY: as above.
    unsafe { (vtbl.get_correlated_time)(clock, &raw mut system_time) }
}
