//! DMA probes, through the adapter's `DMA_OPERATIONS` (version 2, as the
//! mingw-w64 headers define it): a put with a common buffer outstanding, a
//! second put, a free through an adapter already put.
use super::ddi::{BOOLEAN_FALSE, PAGE_SIZE};
use capdma_interface::status::{STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use core::ffi::c_void;
use wdk_sys::{DMA_OPERATIONS, NTSTATUS, PDMA_ADAPTER, PHYSICAL_ADDRESS};

/// The adapter's operations table, `None` for a null adapter or table.
///
/// # Safety
/// `adapter` is null or an adapter from `IoGetDmaAdapter` (put or not: the
/// table is read before any put here).
pub unsafe fn operations<'a>(adapter: PDMA_ADAPTER) -> Option<&'a DMA_OPERATIONS> {
    if adapter.is_null() {
        return None;
    }
    // SAFETY: a live adapter (caller's guarantee).
    let table = unsafe { (*adapter).DmaOperations };
    // SAFETY: the system's table lives as long as the adapter.
    unsafe { table.as_ref() }
}

/// A common buffer: what `FreeCommonBuffer` needs back.
#[derive(Clone, Copy)]
pub struct CommonBuffer {
    /// Its virtual address.
    pub va: *mut c_void,
    /// Its logical address (what the device would be programmed with).
    pub logical: PHYSICAL_ADDRESS,
}

/// `AllocateCommonBuffer(Adapter, PAGE_SIZE, &Logical, CacheEnabled = FALSE)`:
/// one page, or `None`.
///
/// # Safety
/// `adapter` is a live adapter and `operations` its table; `PASSIVE_LEVEL`.
pub unsafe fn allocate_page(adapter: PDMA_ADAPTER, operations: &DMA_OPERATIONS) -> Option<CommonBuffer> {
    let allocate = operations.AllocateCommonBuffer?;
    let mut logical = PHYSICAL_ADDRESS { QuadPart: 0 };
    // SAFETY: a live adapter and its own operation; a valid out-pointer.
    let va = unsafe { allocate(adapter, PAGE_SIZE, &raw mut logical, BOOLEAN_FALSE) };
    (!va.is_null()).then_some(CommonBuffer { va, logical })
}

/// `FreeCommonBuffer(Adapter, PAGE_SIZE, Logical, Va, CacheEnabled = FALSE)`.
///
/// # Safety
/// `buffer` came from [`allocate_page`] on `adapter`, which is live (the
/// probe that breaks this says so); `PASSIVE_LEVEL`.
pub unsafe fn free_page(adapter: PDMA_ADAPTER, operations: &DMA_OPERATIONS, buffer: CommonBuffer) {
    if let Some(free) = operations.FreeCommonBuffer {
        // SAFETY: the caller's guarantee; the same length and cache setting
        // as the allocation.
        unsafe { free(adapter, PAGE_SIZE, buffer.logical, buffer.va, BOOLEAN_FALSE) };
    }
}

/// `PutDmaAdapter(Adapter)`.
///
/// # Safety
/// `adapter` is live and put once (the probes that break this say so);
/// `<= DISPATCH_LEVEL`.
pub unsafe fn put(adapter: PDMA_ADAPTER, operations: &DMA_OPERATIONS) {
    if let Some(put) = operations.PutDmaAdapter {
        // SAFETY: the caller's guarantee.
        unsafe { put(adapter) };
    }
}

/// **Breaks: common buffers freed before `PutDmaAdapter`.** Allocates a
/// one-page common buffer on `adapter`, then puts the adapter; the buffer
/// is never freed.
///
/// Driver Verifier (DMA verification): bug check 0xE6
/// (`DRIVER_VERIFIER_DMA_VIOLATION`), parameter 1 0x07: the adapter released
/// without first freeing all its common buffers (parameter 3 their number).
///
/// Returns `STATUS_SUCCESS`, `STATUS_INSUFFICIENT_RESOURCES` when the
/// allocation fails (the adapter is then put correctly), or
/// `STATUS_INVALID_PARAMETER` for a null adapter or operations table.
///
/// # Safety
/// `adapter` came from `IoGetDmaAdapter` and is not put; the probe puts it.
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbePutAdapterWithCommonBuffer")]
pub unsafe extern "system" fn probe_put_adapter_with_common_buffer(adapter: PDMA_ADAPTER) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    let Some(operations) = (unsafe { operations(adapter) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: a live adapter, PASSIVE_LEVEL.
    let Some(_buffer) = (unsafe { allocate_page(adapter, operations) }) else {
        // SAFETY: the live adapter, put once.
        unsafe { put(adapter, operations) };
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: NOT SAFE, on purpose: the adapter is put while its common
    // buffer is allocated (the mistake the kernel must report).
    unsafe { put(adapter, operations) };
    STATUS_SUCCESS
}

/// **Breaks: the adapter is put once.** `PutDmaAdapter` twice on `adapter`.
///
/// Driver Verifier (DMA verification): bug check 0xE6
/// (`DRIVER_VERIFIER_DMA_VIOLATION`), parameter 1 0x18: a DMA operation on an
/// adapter already released.
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INVALID_PARAMETER` for a null
/// adapter or operations table.
///
/// # Safety
/// `adapter` came from `IoGetDmaAdapter` and is not put; the probe puts it
/// (twice). `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbePutAdapterTwice")]
pub unsafe extern "system" fn probe_put_adapter_twice(adapter: PDMA_ADAPTER) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    let Some(operations) = (unsafe { operations(adapter) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // The table is read once, before the first put: the second call goes
    // through the same operation the first one did.
    // SAFETY: the live adapter, put once here.
    unsafe { put(adapter, operations) };
    // SAFETY: NOT SAFE, on purpose: the second put (the mistake the kernel
    // must report).
    unsafe { put(adapter, operations) };
    STATUS_SUCCESS
}

/// **Breaks: common buffers freed before `PutDmaAdapter` (freed after it).**
/// Allocates a one-page common buffer, puts the adapter (itself a
/// violation: 0xE6, 0x07), then frees the buffer through the adapter
/// already put.
///
/// Driver Verifier (DMA verification): bug check 0xE6
/// (`DRIVER_VERIFIER_DMA_VIOLATION`), parameter 1 0x18 for the free: a DMA
/// operation on an adapter already released (after 0x07 for the put).
///
/// Returns `STATUS_SUCCESS`, `STATUS_INSUFFICIENT_RESOURCES` when the
/// allocation fails (the adapter is then put correctly), or
/// `STATUS_INVALID_PARAMETER` for a null adapter or operations table.
///
/// # Safety
/// `adapter` came from `IoGetDmaAdapter` and is not put; the probe puts it.
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeFreeCommonBufferAfterPut")]
pub unsafe extern "system" fn probe_free_common_buffer_after_put(adapter: PDMA_ADAPTER) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    let Some(operations) = (unsafe { operations(adapter) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: a live adapter, PASSIVE_LEVEL.
    let Some(buffer) = (unsafe { allocate_page(adapter, operations) }) else {
        // SAFETY: the live adapter, put once.
        unsafe { put(adapter, operations) };
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: NOT SAFE, on purpose: put with the buffer outstanding.
    unsafe { put(adapter, operations) };
    // SAFETY: NOT SAFE, on purpose: the buffer freed through the adapter
    // already put (the mistake the kernel must report).
    unsafe { free_page(adapter, operations, buffer) };
    STATUS_SUCCESS
}
