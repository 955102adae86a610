//! The IRQL routines as ntoskrnl imports, the wdm.h inline functions the
//! probes need written in Rust (bindgen gives nothing for them), and pool
//! and completion helpers.
//!
//! | DDI | here |
//! |---|---|
//! | `KeGetCurrentIrql`, `KfRaiseIrql`, `KeRaiseIrqlToDpcLevel`, `KeLowerIrql` | ntoskrnl imports, declared from their wdm.h prototypes (x64 without `NT_INLINE_IRQL`; mingw-w64's `libntoskrnl.a`, hence the synthesised `ntoskrnl.lib`, exports them) |
//! | `IoGetNextIrpStackLocation` | [`next_stack`] |
//! | `IoSkipCurrentIrpStackLocation` | [`skip_current_stack`] |
//! | `IoMarkIrpPending` | [`mark_irp_pending`] |
//! | `IoCompleteRequest` (`IofCompleteRequest`) | [`complete`] |
//! | `ExAllocatePool2` / `ExFreePoolWithTag` with the probe's tag | [`allocate`], [`free`] |
use core::ffi::c_void;
use wdk_sys::ntddk::{ExAllocatePool2, ExFreePoolWithTag, IofCompleteRequest};
use wdk_sys::{BOOLEAN, CCHAR, IO_NO_INCREMENT, KIRQL, NTSTATUS, PIRP};

/// The IRP stack-location functions, shared by the images' glue.
pub use capdma_wdm::irp::{mark_irp_pending, next_stack, skip_current_stack};

pub use capdma_interface::kernel::{DISPATCH_LEVEL, PASSIVE_LEVEL};

/// `FALSE` as a `BOOLEAN`.
pub const BOOLEAN_FALSE: BOOLEAN = 0;
/// `TRUE` as a `BOOLEAN`.
pub const BOOLEAN_TRUE: BOOLEAN = 1;

/// The tag of the probe's pool allocations, `"CdPr"` in a pool dump.
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"CdPr");

/// `POOL_FLAG_NON_PAGED` (wdm.h; defined here because wdk-sys's own and the
/// shim's definitions make the binding ambiguous).
pub const POOL_FLAG_NON_PAGED: u64 = 0x0000_0000_0000_0040;
/// `POOL_FLAG_PAGED` (wdm.h).
pub const POOL_FLAG_PAGED: u64 = 0x0000_0000_0000_0100;

pub use capdma_interface::kernel::PAGE_SIZE;

// The IRQL routines of wdm.h as ntoskrnl exports (x64 without NT_INLINE_IRQL).
#[link(name = "ntoskrnl")]
unsafe extern "system" {
    /// `KIRQL KeGetCurrentIrql(VOID)` (wdm.h): the current IRQL. Any IRQL.
    pub safe fn KeGetCurrentIrql() -> KIRQL;
    /// `KIRQL KfRaiseIrql(KIRQL NewIrql)` (wdm.h, the function behind
    /// `KeRaiseIrql`): raises to `NewIrql`, returns the old IRQL. `NewIrql`
    /// below the current IRQL is a bug check (0x9; Driver Verifier 0xC4, 0x30).
    pub fn KfRaiseIrql(new_irql: KIRQL) -> KIRQL;
    /// `KIRQL KeRaiseIrqlToDpcLevel(VOID)` (wdm.h): raises to
    /// `DISPATCH_LEVEL` from `<= DISPATCH_LEVEL`, returns the old IRQL.
    pub fn KeRaiseIrqlToDpcLevel() -> KIRQL;
    /// `VOID KeLowerIrql(KIRQL NewIrql)` (wdm.h): lowers to `NewIrql`, which
    /// must not be above the current IRQL (Driver Verifier 0xC4, 0x31).
    pub fn KeLowerIrql(new_irql: KIRQL);
}

/// `KeRaiseIrqlToDpcLevel()` from `PASSIVE_LEVEL` (every probe export runs
/// there); returns the old IRQL for [`lower_irql`].
pub fn raise_to_dispatch() -> KIRQL {
    // SAFETY: the probes call this at PASSIVE_LEVEL (<= DISPATCH_LEVEL) and
    // lower back with `lower_irql`.
    unsafe { KeRaiseIrqlToDpcLevel() }
}

/// `KeLowerIrql(old)` after [`raise_to_dispatch`].
pub fn lower_irql(old: KIRQL) {
    // SAFETY: `old` came from `raise_to_dispatch`: not above the current IRQL.
    unsafe { KeLowerIrql(old) };
}

/// Sets `IoStatus` (`status`, `Information = 0`) and completes `irp`
/// (`IoCompleteRequest(Irp, IO_NO_INCREMENT)`); returns `status`.
///
/// # Safety
/// `irp` is a valid IRP the caller owns and gives up.
pub unsafe fn complete(irp: PIRP, status: NTSTATUS) -> NTSTATUS {
    // SAFETY: the caller owns the valid IRP.
    let io_status = unsafe { &mut (*irp).IoStatus };
    io_status.__bindgen_anon_1.Status = status;
    io_status.Information = 0;
    // SAFETY: the caller owns the IRP and gives it up here.
    unsafe { IofCompleteRequest(irp, CCHAR::try_from(IO_NO_INCREMENT).unwrap_or(0)) };
    status
}

/// `ExAllocatePool2(flags, bytes, POOL_TAG)`: null on failure (no
/// `POOL_FLAG_RAISE_ON_FAILURE`). Non-paged: `<= DISPATCH_LEVEL`; paged:
/// `<= APC_LEVEL`.
pub fn allocate(flags: u64, bytes: usize) -> *mut c_void {
    // SAFETY: any size and flags may be asked for; failure is a null return.
    unsafe { ExAllocatePool2(flags, bytes as u64, POOL_TAG) }
}

/// `ExFreePoolWithTag(memory, POOL_TAG)`.
///
/// # Safety
/// `memory` came from [`allocate`] and is not used afterwards (the probes
/// that break this say so).
pub unsafe fn free(memory: *mut c_void) {
    // SAFETY: the caller's guarantee.
    unsafe { ExFreePoolWithTag(memory, POOL_TAG) };
}
