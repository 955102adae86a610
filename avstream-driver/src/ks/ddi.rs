//! wdm.h macros and inline functions the glue needs, written in Rust (they
//! have no binding: `static inline` or macros in the headers), and the pool
//! helpers.
//!
//! | DDI | here |
//! |---|---|
//! | `NT_SUCCESS` | [`nt_success`] |
//! | `IoGetNextIrpStackLocation` | [`next_stack`] |
//! | `KeGetCurrentIrql`/`KeRaiseIrql`/`KeLowerIrql` | [`raise_to_dispatch`], [`lower_irql`]: CR8 (wdm.h, AMD64) |
//! | `ExAllocatePool2(POOL_FLAG_NON_PAGED)` / `ExFreePoolWithTag` | [`allocate`], [`free`] |
use core::arch::asm;
use core::ffi::c_void;
use wdk_sys::ntddk::{ExAllocatePool2, ExFreePoolWithTag, KeDelayExecutionThread};
use wdk_sys::{KIRQL, NTSTATUS, PIO_STACK_LOCATION, PIRP};

/// The pool tag of every allocation of this driver, `"CdAv"` in a pool dump.
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"CdAv");

/// `POOL_FLAG_NON_PAGED` (wdm.h; `wdk-sys` exports two definitions of it,
/// its own and the shim's, which makes the name ambiguous there).
const POOL_FLAG_NON_PAGED: u64 = 0x40;

/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: KIRQL = 2;

/// `NT_SUCCESS(Status)`: success and informational codes.
#[must_use]
pub const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}

/// `IoGetNextIrpStackLocation(Irp)`: the stack location below the current
/// one (`Tail.Overlay.CurrentStackLocation - 1`), which a driver sending the
/// IRP fills.
///
/// # Safety
/// `irp` must be a valid IRP with at least one stack location below the
/// current one (an IRP from `IoBuildSynchronousFsdRequest` for the target's
/// `StackSize` has them all).
pub unsafe fn next_stack(irp: PIRP) -> PIO_STACK_LOCATION {
    // SAFETY: the caller guarantees a valid IRP.
    let tail = unsafe { &raw const (*irp).Tail };
    // SAFETY: `Tail.Overlay` is the active member while a driver owns the IRP.
    let overlay = unsafe { &raw const (*tail).Overlay };
    // SAFETY: as above (a copy of the union holding the stack location).
    let location = unsafe { (*overlay).__bindgen_anon_2.__bindgen_anon_1 };
    // SAFETY: `CurrentStackLocation` is its active member.
    let current = unsafe { location.CurrentStackLocation };
    // The location below the current one is inside the IRP's stack array.
    current.wrapping_sub(1)
}

/// `KeGetCurrentIrql()`: on AMD64 the IRQL is CR8 (wdm.h `__readcr8()`).
fn current_irql() -> KIRQL {
    let cr8: u64;
    // SAFETY: reading CR8 has no side effects; kernel code runs at CPL 0.
    unsafe { asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags)) };
    KIRQL::try_from(cr8 & 0xF).unwrap_or(KIRQL::MAX)
}

/// Writes CR8 (wdm.h `__writecr8`). Not `nomem`: memory accesses must not
/// move across an IRQL change.
fn write_cr8(irql: KIRQL) {
    // SAFETY: kernel code runs at CPL 0; callers only raise to
    // DISPATCH_LEVEL or restore the IRQL they found.
    unsafe { asm!("mov cr8, {}", in(reg) u64::from(irql), options(nostack, preserves_flags)) };
}

/// `KeRaiseIrql(DISPATCH_LEVEL, &Old)` (wdm.h, AMD64: `__writecr8`); at or
/// above `DISPATCH_LEVEL` already, nothing changes. Returns the old IRQL.
#[must_use]
pub fn raise_to_dispatch() -> KIRQL {
    let old = current_irql();
    if old < DISPATCH_LEVEL {
        write_cr8(DISPATCH_LEVEL);
    }
    old
}

/// `KeLowerIrql(old)` (wdm.h, AMD64): back to what [`raise_to_dispatch`]
/// returned (nothing when it did not raise).
pub fn lower_irql(old: KIRQL) {
    if old < current_irql() {
        write_cr8(old);
    }
}

/// `KeDelayExecutionThread(KernelMode, FALSE, -1 ms)`: sleeps about a
/// millisecond. `PASSIVE_LEVEL` (`APC_LEVEL` at most).
pub fn delay_one_millisecond() {
    // A negative interval is relative, in 100-ns units.
    let mut interval = wdk_sys::LARGE_INTEGER { QuadPart: -10_000 };
    // SAFETY: `interval` is a valid LARGE_INTEGER for the call; KernelMode
    // (0) and non-alertable are valid arguments at PASSIVE_LEVEL.
    let _ = unsafe { KeDelayExecutionThread(0, 0, &raw mut interval) };
}

/// `ExAllocatePool2(POOL_FLAG_NON_PAGED, bytes, POOL_TAG)`: zeroed
/// non-paged memory (16-byte aligned on x64), or null. `<= DISPATCH_LEVEL`.
#[must_use]
pub fn allocate(bytes: usize) -> *mut c_void {
    // SAFETY: any size may be asked for; failure is a null return
    // (POOL_FLAG_RAISE_ON_FAILURE is not set).
    unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, bytes as u64, POOL_TAG) }
}

/// `ExFreePoolWithTag(memory, POOL_TAG)`.
///
/// # Safety
/// `memory` must come from [`allocate`] and not be used afterwards.
pub unsafe fn free(memory: *mut c_void) {
    // SAFETY: the caller guarantees an allocation of ours, freed once.
    unsafe { ExFreePoolWithTag(memory, POOL_TAG) }
}
