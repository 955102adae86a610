//! wdm.h macros and inline functions the glue needs, written in Rust (they
//! have no binding: `static inline` or macros in the headers), and the pool
//! helpers.
//!
//! The IRQL routines are **calls into ntoskrnl.exe**, as the current WDK
//! compiles them on x64 unless `NT_INLINE_IRQL` is defined (Driver
//! Verifier's IRQL checking sees only raises and lowers that go through the
//! kernel). mingw-w64's wdm.h defines them inline (`__writecr8`), so bindgen
//! gives no binding: they are declared here from their documented
//! prototypes and resolve against `ntoskrnl.lib` (mingw-w64's
//! `libntoskrnl.a`, from which the synthesised one is made, exports them; so
//! does a real WDK's). No inline `mov cr8` is left in the image
//! (`cargo xtask pe-check` fails one that has).
//!
//! | DDI | here |
//! |---|---|
//! | `NT_SUCCESS` | [`nt_success`] |
//! | `IoGetNextIrpStackLocation` | [`next_stack`] |
//! | `KeRaiseIrqlToDpcLevel` (`KeRaiseIrql(DISPATCH_LEVEL, &Old)`) / `KeLowerIrql` | [`raise_to_dispatch`], [`lower_irql`]: the ntoskrnl exports |
//! | `ExAllocatePool2(POOL_FLAG_NON_PAGED)` / `ExFreePoolWithTag` | [`allocate`], [`free`] |
use core::ffi::c_void;
use wdk_sys::ntddk::{ExAllocatePool2, ExFreePoolWithTag, KeDelayExecutionThread};
use wdk_sys::{KIRQL, NTSTATUS};

/// `IoGetNextIrpStackLocation`, shared by the images' glue.
pub use capdma_wdm::irp::next_stack;

/// The pool tag of every allocation of this driver, `"CdAv"` in a pool dump.
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"CdAv");

/// `POOL_FLAG_NON_PAGED` (wdm.h; `wdk-sys` exports two definitions of it,
/// its own and the shim's, which makes the name ambiguous there).
const POOL_FLAG_NON_PAGED: u64 = 0x40;

/// `NT_SUCCESS(Status)`: success and informational codes.
#[must_use]
pub const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}

// The IRQL routines of wdm.h as ntoskrnl exports (x64 without NT_INLINE_IRQL).
#[link(name = "ntoskrnl")]
unsafe extern "system" {
    /// `KIRQL KeRaiseIrqlToDpcLevel(VOID)` (wdm.h): raises to
    /// `DISPATCH_LEVEL`, returns the IRQL of the call. Callers run at
    /// `<= DISPATCH_LEVEL` (above it: a bug check) and lower back with
    /// `KeLowerIrql(returned)`.
    fn KeRaiseIrqlToDpcLevel() -> KIRQL;
    /// `VOID KeLowerIrql(KIRQL NewIrql)` (wdm.h): back to `NewIrql`, which is
    /// not above the current IRQL (Driver Verifier: bug check 0xC4, 0x31).
    fn KeLowerIrql(new_irql: KIRQL);
}

/// `KeRaiseIrql(DISPATCH_LEVEL, &Old)` (`KeRaiseIrqlToDpcLevel()`): the
/// IRQL of the call, for [`lower_irql`]. Legal at `DISPATCH_LEVEL` too
/// (nothing changes then); this driver has no ISR, so it never runs above
/// `DISPATCH_LEVEL` (KS callbacks and the bus's completion DPC run at or
/// below it).
#[must_use]
pub fn raise_to_dispatch() -> KIRQL {
    // SAFETY: every caller runs at <= DISPATCH_LEVEL (see above) and hands
    // the result back to `lower_irql`.
    unsafe { KeRaiseIrqlToDpcLevel() }
}

/// `KeLowerIrql(old)`: back to what [`raise_to_dispatch`] returned (a no-op
/// change when that was `DISPATCH_LEVEL` already).
pub fn lower_irql(old: KIRQL) {
    // SAFETY: `old` is the IRQL `raise_to_dispatch` raised from, so it is
    // not above the current IRQL (DISPATCH_LEVEL), as KeLowerIrql requires.
    unsafe { KeLowerIrql(old) };
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
