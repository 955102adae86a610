//! The DDIs that wdm.h defines as macros or `FORCEINLINE` functions (so
//! bindgen produces nothing for them), written in Rust with the semantics
//! of the x64 definitions, plus the NTSTATUS values the glue needs that
//! `capdma_interface::status` does not define. The IRP stack-location
//! functions are `capdma_wdm::irp`'s (one copy for the three images),
//! re-exported here.
//!
//! The IRQL routines are **calls into ntoskrnl.exe**, as the current WDK
//! compiles them on x64 unless `NT_INLINE_IRQL` is defined: Driver
//! Verifier's IRQL checking sees only the raises and lowers that go through
//! the kernel. mingw-w64's wdm.h defines them inline (`__readcr8`,
//! `__writecr8`), so bindgen gives no binding; they are declared below from
//! their documented prototypes and resolve against `ntoskrnl.lib` (the
//! synthesised one lists them: mingw-w64's `libntoskrnl.a` exports all four;
//! a real WDK's does too). This image has no inline `mov cr8` left
//! (`cargo xtask pe-check` fails one that has).
//!
//! | DDI | here |
//! |---|---|
//! | `IoGetCurrentIrpStackLocation` | [`current_stack`] |
//! | `IoGetNextIrpStackLocation` | [`next_stack`] |
//! | `IoSkipCurrentIrpStackLocation` | [`skip_current_stack`] |
//! | `IoCopyCurrentIrpStackLocationToNext` | [`copy_current_stack_to_next`] |
//! | `IoSetCompletionRoutine` | [`set_completion_routine`] |
//! | `IoMarkIrpPending` | [`mark_irp_pending`]: the power IRPs the FDO forwards with a completion routine |
//! | `IoCallDriver` / `IoCompleteRequest` | [`call_driver`] (`IofCallDriver`) / [`complete_request`] (`IofCompleteRequest`) |
//! | `ObReferenceObject` / `ObDereferenceObject` | [`reference_object`] (`ObfReferenceObject`) / [`dereference_object`] (`ObfDereferenceObject`) |
//! | `KeGetCurrentIrql` | [`current_irql`]: the ntoskrnl export |
//! | `KeRaiseIrqlToDpcLevel` (`KeRaiseIrql(DISPATCH_LEVEL, &Old)`) | [`raise_to_dispatch`]: the ntoskrnl export, when below `DISPATCH_LEVEL` |
//! | `KeLowerIrql` | [`lower_irql`]: the ntoskrnl export, when [`raise_to_dispatch`] raised |
//! | `KeQueryInterruptTime` | [`interrupt_time`]: the volatile 64-bit read of `KUSER_SHARED_DATA.InterruptTime` at `0xFFFFF78000000008` (wdm.h, AMD64 `SharedInterruptTime`) |
use core::ffi::c_void;
use wdk_sys::ntddk::{IofCallDriver, IofCompleteRequest, ObfDereferenceObject, ObfReferenceObject};
use wdk_sys::{
    BOOLEAN, CCHAR, IO_NO_INCREMENT, KIRQL, NTSTATUS, PDEVICE_OBJECT, PIO_COMPLETION_ROUTINE, PIRP,
    SL_INVOKE_ON_CANCEL, SL_INVOKE_ON_ERROR, SL_INVOKE_ON_SUCCESS, UCHAR,
};

/// The IRP stack-location functions, shared by the images' glue.
pub use capdma_wdm::irp::{copy_current_stack_to_next, current_stack, mark_irp_pending, next_stack, skip_current_stack};

/// An NTSTATUS from the bit pattern ntstatus.h gives.
const fn nt(value: u32) -> NTSTATUS {
    NTSTATUS::from_ne_bytes(value.to_ne_bytes())
}

/// `STATUS_MORE_PROCESSING_REQUIRED`: a completion routine keeps the IRP.
pub const STATUS_MORE_PROCESSING_REQUIRED: NTSTATUS = nt(0xC000_0016);

/// `STATUS_CONTINUE_COMPLETION` (= `STATUS_SUCCESS`): a completion routine
/// lets the completion go on up the stack.
pub const STATUS_CONTINUE_COMPLETION: NTSTATUS = 0;

/// `FALSE` as a `BOOLEAN`.
pub const BOOLEAN_FALSE: BOOLEAN = 0;
/// `TRUE` as a `BOOLEAN`.
pub const BOOLEAN_TRUE: BOOLEAN = 1;

/// `POOL_FLAG_PAGED` (wdm.h): paged pool for `ExAllocatePool2`. Defined
/// here because the synthesised headers' shim and wdk-sys's own constants
/// make the binding ambiguous.
pub const POOL_FLAG_PAGED: u64 = 0x0000_0000_0000_0100;

pub use capdma_interface::kernel::DISPATCH_LEVEL;

/// `KUSER_SHARED_DATA` + `0x8`: `InterruptTime` (wdm.h `SharedInterruptTime`, AMD64).
const SHARED_INTERRUPT_TIME: usize = 0xFFFF_F780_0000_0008;

/// `Irp->PendingReturned`: a lower driver returned `STATUS_PENDING`.
///
/// # Safety
/// `irp` is a valid IRP (read in a completion routine).
pub unsafe fn pending_returned(irp: PIRP) -> bool {
    // SAFETY: the caller guarantees the IRP is valid (only the field's address is taken).
    let field = unsafe { &raw const (*irp).PendingReturned };
    // SAFETY: a valid, aligned BOOLEAN field.
    let value = unsafe { field.read() };
    value != 0
}

/// `IoSetCompletionRoutine(Irp, Routine, Context, Success, Error, Cancel)`
/// on the next stack location.
///
/// # Safety
/// As [`next_stack`]; `context` stays valid until the routine has run.
pub unsafe fn set_completion_routine(
    irp: PIRP,
    routine: PIO_COMPLETION_ROUTINE,
    context: *mut c_void,
    on_success: bool,
    on_error: bool,
    on_cancel: bool,
) {
    // SAFETY: the caller guarantees `irp` is valid with a next location.
    let next = unsafe { next_stack(irp) };
    // SAFETY: the next location is a valid stack location of an IRP we own.
    let next = unsafe { &mut *next };
    next.CompletionRoutine = routine;
    next.Context = context;
    let mut control: u32 = 0;
    if on_success {
        control |= SL_INVOKE_ON_SUCCESS;
    }
    if on_error {
        control |= SL_INVOKE_ON_ERROR;
    }
    if on_cancel {
        control |= SL_INVOKE_ON_CANCEL;
    }
    next.Control = UCHAR::try_from(control).unwrap_or(UCHAR::MAX);
}

/// `IoCallDriver(DeviceObject, Irp)` (`IofCallDriver`).
///
/// # Safety
/// `device` is a valid device object and `irp` an IRP whose next stack
/// location is set up for it; the IRP is not touched afterwards.
pub unsafe fn call_driver(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantees are IofCallDriver's.
    unsafe { IofCallDriver(device, irp) }
}

/// Sets `IoStatus` and completes `irp` (`IoCompleteRequest(Irp,
/// IO_NO_INCREMENT)`, i.e. `IofCompleteRequest`); returns `status`.
///
/// # Safety
/// `irp` is a valid IRP this driver owns; it is not touched afterwards.
pub unsafe fn complete_request(irp: PIRP, status: NTSTATUS, information: usize) -> NTSTATUS {
    // SAFETY: the caller owns the valid IRP.
    let io_status = unsafe { &mut (*irp).IoStatus };
    io_status.__bindgen_anon_1.Status = status;
    io_status.Information = information as u64;
    // SAFETY: the caller owns the IRP and gives it up here.
    unsafe { IofCompleteRequest(irp, CCHAR::try_from(IO_NO_INCREMENT).unwrap_or(0)) };
    status
}

/// Completes `irp` with the status and information it already carries
/// (a bus driver's answer to a request it does not handle).
///
/// # Safety
/// As [`complete_request`].
pub unsafe fn complete_untouched(irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller owns the valid IRP.
    let status = unsafe { irp_status(irp) };
    // SAFETY: as above.
    unsafe { IofCompleteRequest(irp, CCHAR::try_from(IO_NO_INCREMENT).unwrap_or(0)) };
    status
}

/// `Irp->IoStatus.Status`.
///
/// # Safety
/// `irp` is a valid IRP.
pub unsafe fn irp_status(irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller guarantees the IRP is valid (only the field's address is taken).
    let field = unsafe { &raw const (*irp).IoStatus.__bindgen_anon_1.Status };
    // SAFETY: a valid, aligned field; `Status` is the member drivers use.
    unsafe { field.read() }
}

/// Sets `Irp->IoStatus.Status` (and `Information` when given) without
/// completing the IRP (before passing it down).
///
/// # Safety
/// `irp` is a valid IRP this driver is processing.
pub unsafe fn set_irp_status(irp: PIRP, status: NTSTATUS, information: Option<usize>) {
    // SAFETY: the caller guarantees the IRP is valid and owned now.
    let io_status = unsafe { &mut (*irp).IoStatus };
    io_status.__bindgen_anon_1.Status = status;
    if let Some(information) = information {
        io_status.Information = information as u64;
    }
}

/// `ObReferenceObject(Object)` (`ObfReferenceObject`).
///
/// # Safety
/// `object` is a valid object (here: a device object).
pub unsafe fn reference_object(object: PDEVICE_OBJECT) {
    // SAFETY: the caller guarantees a valid object.
    unsafe { ObfReferenceObject(object.cast()) };
}

/// `ObDereferenceObject(Object)` (`ObfDereferenceObject`).
///
/// # Safety
/// `object` is a valid object the caller holds a reference on.
pub unsafe fn dereference_object(object: PDEVICE_OBJECT) {
    // SAFETY: the caller holds a reference it gives up here.
    unsafe { ObfDereferenceObject(object.cast()) };
}

// The IRQL routines of wdm.h as ntoskrnl exports (x64 without NT_INLINE_IRQL).
#[link(name = "ntoskrnl")]
unsafe extern "system" {
    /// `KIRQL KeGetCurrentIrql(VOID)` (wdm.h): the current IRQL. Any IRQL.
    safe fn KeGetCurrentIrql() -> KIRQL;
    /// `KIRQL KeRaiseIrqlToDpcLevel(VOID)` (wdm.h): raises to
    /// `DISPATCH_LEVEL`, returns the IRQL of the call. Callers run at
    /// `<= DISPATCH_LEVEL` (above it: a bug check) and lower back with
    /// `KeLowerIrql(returned)`.
    fn KeRaiseIrqlToDpcLevel() -> KIRQL;
    /// `VOID KeLowerIrql(KIRQL NewIrql)` (wdm.h): back to `NewIrql`, which is
    /// not above the current IRQL (Driver Verifier: bug check 0xC4, 0x31).
    fn KeLowerIrql(new_irql: KIRQL);
}

/// `KeGetCurrentIrql()` (the ntoskrnl export).
pub fn current_irql() -> KIRQL {
    KeGetCurrentIrql()
}

/// `KeRaiseIrql(DISPATCH_LEVEL, &Old)` as `KeRaiseIrqlToDpcLevel()` when
/// the current IRQL is below `DISPATCH_LEVEL`; at or above it (the ISR at
/// device IRQL reads registers through the same path) nothing changes.
/// Returns the IRQL of the call, for [`lower_irql`]. One kernel call at or
/// above `DISPATCH_LEVEL`, two below it.
#[must_use]
pub fn raise_to_dispatch() -> KIRQL {
    let old = current_irql();
    if old < DISPATCH_LEVEL {
        // SAFETY: below DISPATCH_LEVEL, as KeRaiseIrqlToDpcLevel requires;
        // every caller hands the result back to `lower_irql`.
        unsafe { KeRaiseIrqlToDpcLevel() }
    } else {
        old
    }
}

/// `KeLowerIrql(old)` after [`raise_to_dispatch`] returned `old`: only
/// when that call raised (`old < DISPATCH_LEVEL`); otherwise the IRQL was
/// left as it was and nothing is lowered. The pairs are balanced, so the
/// current IRQL is `DISPATCH_LEVEL` when this lowers.
pub fn lower_irql(old: KIRQL) {
    if old < DISPATCH_LEVEL {
        // SAFETY: `raise_to_dispatch` raised from `old` to DISPATCH_LEVEL,
        // so `old` is below the current IRQL, as KeLowerIrql requires.
        unsafe { KeLowerIrql(old) };
    }
}

/// `KeQueryInterruptTime()`: the time since boot in 100-ns units, read from
/// `KUSER_SHARED_DATA` as wdm.h does on AMD64 (a single volatile 64-bit load).
pub fn interrupt_time() -> u64 {
    // SAFETY: KUSER_SHARED_DATA is mapped read-only at this fixed address
    // in every kernel address space; the 8-byte field is naturally aligned.
    unsafe { core::ptr::read_volatile(SHARED_INTERRUPT_TIME as *const u64) }
}

/// [`interrupt_time`] as the `i64` the bus core's DPC and watchdog take.
pub fn now_100ns() -> i64 {
    i64::try_from(interrupt_time()).unwrap_or(i64::MAX)
}
