//! Pool probes: a free with the wrong tag, a double free, a write to freed
//! pool, a leak left at unload.
use super::ddi::{allocate, free, POOL_FLAG_NON_PAGED};
use capdma_interface::status::{STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS};
use wdk_sys::ntddk::ExFreePoolWithTag;
use wdk_sys::NTSTATUS;

/// A tag the probe never allocates with, `"CdXx"`.
const WRONG_TAG: u32 = u32::from_le_bytes(*b"CdXx");

/// **Breaks: pool tags.** Allocates 64 bytes of non-paged pool with the
/// probe's tag (`"CdPr"`) and frees them with `ExFreePoolWithTag(…, "CdXx")`.
/// The allocation is not touched again, whatever the kernel did with it.
///
/// Windows: bug check 0xC2 (`BAD_POOL_CALLER`), parameter 1 0x0A: pool freed
/// with the wrong tag (parameter 2 the address, 3 the allocator's tag, 4
/// the tag of the free).
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INSUFFICIENT_RESOURCES` when the
/// allocation fails (then nothing happened).
///
/// # Safety
/// `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeFreePoolWrongTag")]
pub unsafe extern "system" fn probe_free_pool_wrong_tag() -> NTSTATUS {
    let memory = allocate(POOL_FLAG_NON_PAGED, 64);
    if memory.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: NOT SAFE, on purpose: our allocation, freed with a tag that is
    // not its own (the mistake the kernel must report).
    unsafe { ExFreePoolWithTag(memory, WRONG_TAG) };
    STATUS_SUCCESS
}

/// **Breaks: no double free.** Allocates 64 bytes of non-paged pool and
/// frees them twice with the right tag.
///
/// Windows: bug check 0xC2 (`BAD_POOL_CALLER`), parameter 1 0x07: pool freed
/// that was already freed (Driver Verifier's pool tracking: 0xC4, 0x13/0x14).
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INSUFFICIENT_RESOURCES` when the
/// allocation fails (then nothing happened).
///
/// # Safety
/// `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeDoubleFreePool")]
pub unsafe extern "system" fn probe_double_free_pool() -> NTSTATUS {
    let memory = allocate(POOL_FLAG_NON_PAGED, 64);
    if memory.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: our allocation, freed once here.
    unsafe { free(memory) };
    // SAFETY: NOT SAFE, on purpose: the second free of the same allocation
    // (the mistake the kernel must report).
    unsafe { free(memory) };
    STATUS_SUCCESS
}

/// **Breaks: no use after free.** Allocates 64 bytes of non-paged pool,
/// frees them, then writes a `ULONG` at their start.
///
/// Driver Verifier (special pool): bug check 0xD5
/// (`DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL`): freed special pool is
/// unmapped, so the write faults.
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INSUFFICIENT_RESOURCES` when the
/// allocation fails (then nothing happened).
///
/// # Safety
/// `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeWriteFreedPool")]
pub unsafe extern "system" fn probe_write_freed_pool() -> NTSTATUS {
    let memory = allocate(POOL_FLAG_NON_PAGED, 64);
    if memory.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: our allocation, freed once.
    unsafe { free(memory) };
    // SAFETY: NOT SAFE, on purpose: a write to freed pool (the mistake the
    // kernel must report); volatile so that it is not optimised away.
    unsafe { memory.cast::<u32>().write_volatile(0xDEAD_F4EE) };
    STATUS_SUCCESS
}

/// **Breaks: no pool left at unload.** Allocates 64 bytes of non-paged pool
/// with the probe's tag and forgets them; `DriverUnload` frees nothing.
///
/// Driver Verifier (pool tracking): bug check 0xC4
/// (`DRIVER_VERIFIER_DETECTED_VIOLATION`), parameter 1 0x62: the driver is
/// unloading without first freeing its pool allocations (parameter 4 their
/// number).
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INSUFFICIENT_RESOURCES` when the
/// allocation fails (then nothing leaks).
///
/// # Safety
/// `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeLeakPool")]
pub unsafe extern "system" fn probe_leak_pool() -> NTSTATUS {
    if allocate(POOL_FLAG_NON_PAGED, 64).is_null() {
        STATUS_INSUFFICIENT_RESOURCES
    } else {
        STATUS_SUCCESS
    }
}
