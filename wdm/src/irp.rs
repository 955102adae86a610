//! The IRP stack-location functions of wdm.h (x64): field arithmetic on
//! `Irp->Tail.Overlay.CurrentStackLocation` and `Irp->CurrentLocation`,
//! no kernel calls.
use core::mem::offset_of;
use wdk_sys::{IO_STACK_LOCATION, PIO_STACK_LOCATION, PIRP, SL_PENDING_RETURNED, UCHAR};

/// `IoGetCurrentIrpStackLocation(Irp)`: `Irp->Tail.Overlay.CurrentStackLocation`.
///
/// # Safety
/// `irp` is a valid IRP owned by the caller's dispatch or completion routine.
#[inline]
pub unsafe fn current_stack(irp: PIRP) -> PIO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is valid (only its address is taken here).
    let field = unsafe { &raw const (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation };
    // SAFETY: a valid, aligned field; the union member is the one the I/O
    // manager maintains for an IRP being processed by a driver.
    unsafe { field.read() }
}

/// `IoGetNextIrpStackLocation(Irp)`: the stack location below the current
/// one (for a new IRP, its last stack location).
///
/// # Safety
/// As [`current_stack`]; the IRP has a next stack location (the caller's
/// device is not the bottom of the stack, or the IRP was built with one,
/// as an IRP from `IoBuildSynchronousFsdRequest` for the target's
/// `StackSize` is).
#[inline]
pub unsafe fn next_stack(irp: PIRP) -> PIO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is valid.
    let current = unsafe { current_stack(irp) };
    // The stack locations are an array; the next one is the previous element.
    current.wrapping_sub(1)
}

/// `IoSkipCurrentIrpStackLocation(Irp)`: the next driver gets this
/// driver's stack location.
///
/// # Safety
/// As [`current_stack`]; the IRP is passed to the next lower driver right after.
#[inline]
pub unsafe fn skip_current_stack(irp: PIRP) {
    // SAFETY: the caller guarantees `irp` is valid and owned (only the
    // field's address is taken here).
    let field = unsafe { &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation };
    // SAFETY: a valid, aligned field of an IRP we own; the active union member.
    let current = unsafe { field.read() };
    // SAFETY: as above.
    unsafe { field.write(current.wrapping_add(1)) };
    // SAFETY: the caller guarantees `irp` is valid and owned.
    let location = unsafe { &mut (*irp).CurrentLocation };
    *location = location.wrapping_add(1);
}

/// `IoCopyCurrentIrpStackLocationToNext(Irp)`: copies the current stack
/// location up to (not including) `CompletionRoutine` into the next one
/// and clears the next one's `Control`.
///
/// # Safety
/// As [`next_stack`].
#[inline]
pub unsafe fn copy_current_stack_to_next(irp: PIRP) {
    // SAFETY: the caller guarantees `irp` is valid.
    let current = unsafe { current_stack(irp) };
    // SAFETY: as above; the next location exists.
    let next = unsafe { next_stack(irp) };
    let bytes = offset_of!(IO_STACK_LOCATION, CompletionRoutine);
    // SAFETY: both locations are distinct elements of the IRP's stack
    // location array, each at least `bytes` long.
    unsafe { core::ptr::copy_nonoverlapping(current.cast::<u8>(), next.cast::<u8>(), bytes) };
    // SAFETY: `next` is a valid stack location of the IRP.
    unsafe { (*next).Control = 0 };
}

/// `IoMarkIrpPending(Irp)`: sets `SL_PENDING_RETURNED` in the current
/// stack location's `Control`. A dispatch routine calls it before it
/// returns `STATUS_PENDING`; a completion routine that lets the completion
/// go on calls it when `Irp->PendingReturned` is set.
///
/// # Safety
/// As [`current_stack`].
#[inline]
pub unsafe fn mark_irp_pending(irp: PIRP) {
    // SAFETY: the caller guarantees `irp` is valid and owned by the caller's routine.
    let location = unsafe { current_stack(irp) };
    // SAFETY: the current stack location of that IRP.
    let control = unsafe { &mut (*location).Control };
    *control |= UCHAR::try_from(SL_PENDING_RETURNED).unwrap_or(0);
}
