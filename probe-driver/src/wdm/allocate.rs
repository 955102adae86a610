//! `ProbeAllocate`: the allocations a low-resources mode fails, each
//! failure handled. The one probe that must never be reported.
use super::ddi::{allocate, free, BOOLEAN_TRUE, PAGE_SIZE, POOL_FLAG_NON_PAGED};
use super::dma::{allocate_page, free_page, operations, put};
use super::driver::fdo;
use capdma_interface::status::{STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use wdk_sys::ntddk::IoGetDmaAdapter;
use wdk_sys::{
    _DMA_WIDTH, _INTERFACE_TYPE, DEVICE_DESCRIPTION, DEVICE_DESCRIPTION_VERSION2, NTSTATUS, PDEVICE_OBJECT, ULONG,
};

/// Bytes of pool `ProbeAllocate` asks for.
const POOL_BYTES: usize = 4096;
/// `DEVICE_DESCRIPTION.MaximumLength` of its adapter: 64 KiB.
const MAXIMUM_TRANSFER: ULONG = 64 * 1024;

/// **Breaks nothing** (the low-resources probe). Makes, in order, the three
/// allocations a low-resources mode fails — `ExAllocatePool2` (4 KiB
/// non-paged), `IoGetDmaAdapter` on the probe's PDO (version-2 description:
/// a 64-bit scatter/gather bus master on PCI, 64 KiB transfers) and
/// `AllocateCommonBuffer` (one page) — touches what it got, and releases
/// everything in reverse order (`FreeCommonBuffer`, `PutDmaAdapter`,
/// `ExFreePoolWithTag`). When one allocation fails, what the earlier ones
/// got is released and the probe returns `STATUS_INSUFFICIENT_RESOURCES`.
///
/// No bug check, whatever fails: the kernel must report nothing (no leak,
/// no order violation).
///
/// Returns `STATUS_SUCCESS` when all three succeeded,
/// `STATUS_INSUFFICIENT_RESOURCES` when one failed, or
/// `STATUS_INVALID_PARAMETER` when `device` is not the probe's FDO.
///
/// # Safety
/// `device` is the probe's FDO, over a PDO that can have a DMA adapter;
/// `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeAllocate")]
pub unsafe extern "system" fn probe_allocate(device: PDEVICE_OBJECT) -> NTSTATUS {
    // SAFETY: the caller passes a valid device object.
    let Some(ext) = (unsafe { fdo(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let pool = allocate(POOL_FLAG_NON_PAGED, POOL_BYTES);
    if pool.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: our allocation, POOL_BYTES long.
    unsafe { core::ptr::write_bytes(pool.cast::<u8>(), 0xA5, POOL_BYTES) };
    let mut description = DEVICE_DESCRIPTION {
        Version: DEVICE_DESCRIPTION_VERSION2,
        Master: BOOLEAN_TRUE,
        ScatterGather: BOOLEAN_TRUE,
        Dma64BitAddresses: BOOLEAN_TRUE,
        InterfaceType: _INTERFACE_TYPE::PCIBus,
        DmaWidth: _DMA_WIDTH::Width32Bits,
        MaximumLength: MAXIMUM_TRANSFER,
        ..DEVICE_DESCRIPTION::default()
    };
    let mut map_registers: ULONG = 0;
    // SAFETY: the PDO AddDevice got, referenced by the stack while the FDO
    // is attached; valid description and out-pointer; PASSIVE_LEVEL.
    let adapter = unsafe { IoGetDmaAdapter(ext.pdo, &raw mut description, &raw mut map_registers) };
    // SAFETY: null or the adapter just returned.
    let Some(table) = (unsafe { operations(adapter) }) else {
        // SAFETY: our allocation, freed once.
        unsafe { free(pool) };
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: the live adapter and its table; PASSIVE_LEVEL.
    let status = match unsafe { allocate_page(adapter, table) } {
        Some(buffer) => {
            // SAFETY: the common buffer is one page, ours.
            unsafe { core::ptr::write_bytes(buffer.va.cast::<u8>(), 0x5A, PAGE_SIZE as usize) };
            // SAFETY: allocated above on this live adapter, freed once, before the put.
            unsafe { free_page(adapter, table, buffer) };
            STATUS_SUCCESS
        }
        None => STATUS_INSUFFICIENT_RESOURCES,
    };
    // SAFETY: the live adapter, no common buffer left, put once.
    unsafe { put(adapter, table) };
    // SAFETY: our allocation, freed once.
    unsafe { free(pool) };
    status
}
