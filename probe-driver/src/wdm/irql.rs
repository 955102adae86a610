//! IRQL probes: a DDI called above the IRQL it allows, a raise to a lower
//! level, a lower to a higher level. Each returns at the IRQL it was called
//! at (`PASSIVE_LEVEL`), whatever the kernel made of the mistake.
use super::ddi::{
    allocate, free, lower_irql, raise_to_dispatch, KeGetCurrentIrql, KeLowerIrql, KfRaiseIrql, BOOLEAN_FALSE,
    DISPATCH_LEVEL, PASSIVE_LEVEL, POOL_FLAG_PAGED,
};
use capdma_interface::status::{STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS};
use core::mem::MaybeUninit;
use wdk_sys::ntddk::{KeInitializeEvent, KeWaitForSingleObject};
use wdk_sys::{_EVENT_TYPE, _KWAIT_REASON, _MODE, KEVENT, KPROCESSOR_MODE, LARGE_INTEGER, NTSTATUS};

/// **Breaks: the IRQL a DDI allows.** `ExAllocatePool2(POOL_FLAG_PAGED, 64)`
/// at `DISPATCH_LEVEL` (paged pool: `IRQL <= APC_LEVEL`, `ExAllocatePool2`
/// page), then back to `PASSIVE_LEVEL` and the allocation (if any) freed.
///
/// Driver Verifier: bug check 0xC4 (`DRIVER_VERIFIER_DETECTED_VIOLATION`),
/// parameter 1 0x01: paged memory allocated at IRQL > `APC_LEVEL`
/// (parameter 2 the IRQL, 3 the pool type, 4 the size).
///
/// Returns `STATUS_SUCCESS`.
///
/// # Safety
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbePagedPoolAtDispatch")]
pub unsafe extern "system" fn probe_paged_pool_at_dispatch() -> NTSTATUS {
    let old = raise_to_dispatch();
    // The mistake: paged pool at DISPATCH_LEVEL.
    let memory = allocate(POOL_FLAG_PAGED, 64);
    lower_irql(old);
    if !memory.is_null() {
        // SAFETY: allocated above, freed once, at PASSIVE_LEVEL.
        unsafe { free(memory) };
    }
    STATUS_SUCCESS
}

/// **Breaks: the IRQL a DDI allows (touching pageable memory).** Allocates
/// 64 bytes of paged pool at `PASSIVE_LEVEL` (correct), writes a `ULONG` of
/// it at `DISPATCH_LEVEL`, lowers and frees it. Paged memory may be paged
/// out, and a page fault at `DISPATCH_LEVEL` cannot be served.
///
/// Windows: bug check 0xD1 (`DRIVER_IRQL_NOT_LESS_OR_EQUAL`) when the page is
/// out, which Driver Verifier's IRQL checking forces by trimming pageable
/// memory at every raise.
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INSUFFICIENT_RESOURCES` when the
/// allocation fails (then nothing happened).
///
/// # Safety
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeTouchPagedPoolAtDispatch")]
pub unsafe extern "system" fn probe_touch_paged_pool_at_dispatch() -> NTSTATUS {
    let memory = allocate(POOL_FLAG_PAGED, 64);
    if memory.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let old = raise_to_dispatch();
    // SAFETY: NOT SAFE, on purpose: the memory is ours and 64 bytes long,
    // but pageable, touched at DISPATCH_LEVEL (the mistake the kernel must
    // report).
    unsafe { memory.cast::<u32>().write_volatile(0x5052_4F42) };
    lower_irql(old);
    // SAFETY: allocated above, freed once, at PASSIVE_LEVEL.
    unsafe { free(memory) };
    STATUS_SUCCESS
}

/// **Breaks: the IRQL a DDI allows.** `KeWaitForSingleObject` on a
/// notification event nobody sets, with a relative timeout of 1 ms
/// (10,000 × 100 ns), at `DISPATCH_LEVEL`: a non-zero timeout needs
/// `IRQL <= APC_LEVEL` (`KeWaitForSingleObject` page).
///
/// Driver Verifier: bug check 0xC4 (`DRIVER_VERIFIER_DETECTED_VIOLATION`),
/// parameter 1 0x122: a wait at `DISPATCH_LEVEL` with a non-zero timeout.
///
/// Returns what the wait returned (`STATUS_TIMEOUT` when the kernel lets it
/// time out).
///
/// # Safety
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeWaitAtDispatch")]
pub unsafe extern "system" fn probe_wait_at_dispatch() -> NTSTATUS {
    let mut event = MaybeUninit::<KEVENT>::zeroed();
    // SAFETY: KeInitializeEvent initializes the whole event; not signalled.
    unsafe { KeInitializeEvent(event.as_mut_ptr(), _EVENT_TYPE::NotificationEvent, BOOLEAN_FALSE) };
    let mut timeout = LARGE_INTEGER { QuadPart: -10_000 };
    let old = raise_to_dispatch();
    // SAFETY: NOT SAFE, on purpose: a valid event and timeout, but a wait
    // with a timeout at DISPATCH_LEVEL (the mistake the kernel must report).
    let status = unsafe {
        KeWaitForSingleObject(
            event.as_mut_ptr().cast(),
            _KWAIT_REASON::Executive,
            KPROCESSOR_MODE::try_from(_MODE::KernelMode).unwrap_or(0),
            BOOLEAN_FALSE,
            &raw mut timeout,
        )
    };
    lower_irql(old);
    status
}

/// **Breaks: raises and lowers in the right direction (a raise to a lower
/// level).** Raises to `DISPATCH_LEVEL`, then `KfRaiseIrql(PASSIVE_LEVEL)`
/// (`KeRaiseIrql`'s `NewIrql` must not be below the current IRQL), then
/// `KeLowerIrql` back to `PASSIVE_LEVEL`.
///
/// Windows: bug check 0x9 (`IRQL_NOT_GREATER_OR_EQUAL`); Driver Verifier: bug
/// check 0xC4 (`DRIVER_VERIFIER_DETECTED_VIOLATION`), parameter 1 0x30: an
/// invalid `KeRaiseIrql` parameter (parameter 2 the current IRQL, 3 the
/// requested one).
///
/// Returns `STATUS_SUCCESS`.
///
/// # Safety
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeRaiseIrqlToLower")]
pub unsafe extern "system" fn probe_raise_irql_to_lower() -> NTSTATUS {
    let old = raise_to_dispatch();
    // SAFETY: NOT SAFE, on purpose: a "raise" from DISPATCH_LEVEL to
    // PASSIVE_LEVEL (the mistake the kernel must report).
    let _ = unsafe { KfRaiseIrql(PASSIVE_LEVEL) };
    // Back to where the export started, which is legal whether the kernel
    // applied the bad raise (PASSIVE_LEVEL now) or refused it.
    lower_irql(old);
    STATUS_SUCCESS
}

/// **Breaks: raises and lowers in the right direction (a lower to a higher
/// level).** `KeLowerIrql(DISPATCH_LEVEL)` at `PASSIVE_LEVEL` (`NewIrql`
/// must not be above the current IRQL), then back to the IRQL of the call
/// if the kernel applied it.
///
/// Driver Verifier: bug check 0xC4 (`DRIVER_VERIFIER_DETECTED_VIOLATION`),
/// parameter 1 0x31: an invalid `KeLowerIrql` parameter (parameter 2 the
/// current IRQL, 3 the requested one).
///
/// Returns `STATUS_SUCCESS`.
///
/// # Safety
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeLowerIrqlToHigher")]
pub unsafe extern "system" fn probe_lower_irql_to_higher() -> NTSTATUS {
    let before = KeGetCurrentIrql();
    // SAFETY: NOT SAFE, on purpose: a "lower" to above the current IRQL
    // (the mistake the kernel must report).
    unsafe { KeLowerIrql(DISPATCH_LEVEL) };
    if KeGetCurrentIrql() > before {
        // SAFETY: `before` is below the current IRQL: a legal lower.
        unsafe { KeLowerIrql(before) };
    }
    STATUS_SUCCESS
}
