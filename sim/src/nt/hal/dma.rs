//! The DMA adapter: `IoGetDmaAdapter` and the `DMA_OPERATIONS` routines the
//! images use (`AllocateCommonBuffer`, `FreeCommonBuffer`, `PutDmaAdapter`),
//! with Driver Verifier's DMA verification checks (bug check 0xE6).
//!
//! The `DMA_ADAPTER` and its `DMA_OPERATIONS` table are real guest memory;
//! every entry of the table is a host function ([`Nt::host_function`]).
//! The entries no image uses record `DMA_OPERATION_NOT_EMULATED` naming
//! themselves when called, and fail.
//!
//! Rules checked (each a [`crate::nt::verifier::Finding`]):
//!
//! | rule | bug check, parameter 1 | when |
//! |---|---|---|
//! | `DMA_ADAPTER_PUT_WITH_COMMON_BUFFERS` | 0xE6, 0x07 | `PutDmaAdapter` while common buffers are allocated |
//! | `DMA_ADAPTER_PUT_TWICE` | 0xE6, 0x18 | `PutDmaAdapter` of an adapter already put |
//! | `DMA_ADAPTER_USED_AFTER_PUT` | 0xE6, 0x18 | any operation on an adapter already put |
//! | `DMA_INVALID_ADAPTER` | 0xE6 | an operation given a pointer `IoGetDmaAdapter` never returned |
//! | `DMA_COMMON_BUFFER_FREED_TWICE` | 0xE6, 0x03 | `FreeCommonBuffer` of a buffer already freed |
//! | `DMA_COMMON_BUFFER_NOT_ALLOCATED` | 0xE6, 0x03 | `FreeCommonBuffer` of an address that is no common buffer of the adapter |
//! | `DMA_COMMON_BUFFER_FREE_MISMATCH` | 0xE6 | `FreeCommonBuffer` whose length, logical address or cache setting differ from the allocation's |
//! | `DMA_REMAPPING_FAULT` | 0xE6 | the device touched a logical address its domain does not map ([`device_write`], [`device_read`]) |
//! | `DMA_OPERATION_NOT_EMULATED` | none (0) | a `DMA_OPERATIONS` routine this HAL does not implement was called |
//!
//! Parameter 1 is given where the 0xE6 page ("Bug Check 0xE6:
//! DRIVER_VERIFIER_DMA_VIOLATION") lists a value for the case; `None`
//! otherwise.

use std::collections::{BTreeMap, BTreeSet};

use capdma_winvm::{Machine, Protection, Stop};

use crate::dma::{DmaDomain, RangeId, RangeKind};
use crate::memory::{AllocationId, PhysicalMemory, FOUR_GIB, PAGE_SIZE};
use crate::nt::layout::dma::{device_description, dma_adapter, dma_operations, DEVICE_DESCRIPTION_VERSION2};
use crate::nt::verifier::Finding;
use crate::nt::{Nt, DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};

const PAGE: u64 = PAGE_SIZE as u64;

/// The byte a fresh common buffer is filled with: `AllocateCommonBuffer`
/// does not promise zeroed memory, so a driver that relies on zeroes reads
/// `0xCB` instead.
pub const COMMON_BUFFER_FILL: u8 = 0xCB;

/// `STATUS_NOT_SUPPORTED`, what the routines this HAL does not emulate
/// return where they return an `NTSTATUS`.
const STATUS_NOT_SUPPORTED: u64 = 0xC000_00BB;

/// Where the `DMA_OPERATIONS` table sits in the page of its `DMA_ADAPTER`.
const OPERATIONS_OFFSET: u64 = 64;

/// The logical window of every 32-bit adapter's domain: `[2 GiB, 4 GiB)`,
/// below 4 GiB and above the physical RAM of the machines the HAL runs on
/// in tests, so a logical address is not mistaken for a physical one. The
/// domains are separate (each has its own page table), and each starts its
/// search at its own offset ([`DOMAIN32_STRIDE`]) so two adapters' buffers
/// get different logical addresses while there is room.
const DOMAIN32_BASE: u64 = 0x8000_0000;
/// Bytes of the 32-bit window.
const DOMAIN32_BYTES: u64 = 0x8000_0000;
/// Distance between the first addresses of successive 32-bit domains (256 MiB; 8 offsets).
const DOMAIN32_STRIDE: u64 = 256 << 20;
/// First logical address of the domains of 64-bit adapters (64 GiB): above
/// 4 GiB, so a 64-bit device must take all 64 bits of its addresses.
const DOMAIN64_BASE: u64 = 64 << 30;
/// Bytes of a 64-bit adapter's logical window (4 GiB).
const DOMAIN64_BYTES: u64 = 4 << 30;

/// One common buffer allocated and not yet freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonBufferRecord {
    /// Virtual address returned to the driver (page-aligned, followed by an unmapped guard page).
    pub va: u64,
    /// `Length` asked for, bytes.
    pub bytes: u32,
    /// The logical address returned (in the adapter's domain).
    pub logical: u64,
    /// Physical address of the first byte (contiguous for all pages).
    pub physical: u64,
    /// Pages mapped.
    pub pages: u64,
    /// `CacheEnabled` given.
    pub cache_enabled: bool,
    /// `symbol+offset` of the caller.
    pub caller: String,
    allocation: AllocationId,
    global_range: RangeId,
}

/// One adapter `IoGetDmaAdapter` returned.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// Address of its `DMA_ADAPTER` (what the driver holds).
    pub va: u64,
    /// The `PhysicalDeviceObject` it was asked for.
    pub pdo: u64,
    /// `DEVICE_DESCRIPTION.Version`.
    pub version: u32,
    /// `ScatterGather`.
    pub scatter_gather: bool,
    /// `Dma64BitAddresses`: the device drives 64-bit addresses.
    pub dma64: bool,
    /// `MaximumLength`, bytes.
    pub maximum_length: u32,
    /// `NumberOfMapRegisters` granted.
    pub map_registers: u32,
    /// Its DMA-remapping domain (logical addresses).
    pub domain: DmaDomain,
    /// `PutDmaAdapter` was called.
    pub put: bool,
    /// Live common buffers by virtual address.
    pub common_buffers: BTreeMap<u64, CommonBufferRecord>,
    /// Virtual addresses of common buffers freed (addresses are never reused).
    pub freed: BTreeSet<u64>,
    /// `symbol+offset` of the `IoGetDmaAdapter` caller.
    pub caller: String,
}

/// The DMA state of the emulated HAL.
#[derive(Debug)]
pub struct DmaState {
    pub(super) memory: Option<PhysicalMemory>,
    /// Every adapter handed out (put ones too), by `DMA_ADAPTER` address.
    pub adapters: BTreeMap<u64, Adapter>,
    /// The host functions of the `DMA_OPERATIONS` entries (made once).
    operations: Option<[u64; 15]>,
    /// Most map registers one adapter is granted (the HAL's limit;
    /// `IoGetDmaAdapter` grants fewer when `MaximumLength` needs fewer).
    pub map_register_limit: u32,
    /// Low resources simulation: fail the `IoGetDmaAdapter` call with this
    /// 0-based index (counted in [`DmaState::adapters_requested`]).
    pub fail_adapter_at: Option<u64>,
    /// `IoGetDmaAdapter` calls made.
    pub adapters_requested: u64,
    /// Low resources simulation: fail the `AllocateCommonBuffer` call with
    /// this 0-based index (over all adapters).
    pub fail_common_buffer_at: Option<u64>,
    /// `AllocateCommonBuffer` calls made.
    pub common_buffers_requested: u64,
    /// Calls failed on purpose (low resources simulation).
    pub failed: u64,
}

impl Default for DmaState {
    /// No memory attached; at most 4096 map registers an adapter (16 MiB
    /// of transfer); no failures injected.
    fn default() -> Self {
        Self {
            memory: None,
            adapters: BTreeMap::new(),
            operations: None,
            map_register_limit: 4096,
            fail_adapter_at: None,
            adapters_requested: 0,
            fail_common_buffer_at: None,
            common_buffers_requested: 0,
            failed: 0,
        }
    }
}

/// `BYTES_TO_PAGES(bytes)`.
fn bytes_to_pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE)
}

fn caller(m: &Machine) -> String {
    m.caller().map_or_else(|_| "?".into(), |c| m.describe(c))
}

/// The host functions of the `DMA_OPERATIONS` entries, made on first use.
fn operations(nt: &mut Nt, m: &mut Machine) -> Result<[u64; 15], Stop> {
    if let Some(ops) = nt.hal.dma.operations {
        return Ok(ops);
    }
    let mut ops = [0u64; 15];
    for (index, (name, _)) in dma_operations::ENTRIES.iter().enumerate() {
        // The IRQL each routine's reference page allows (PutDmaAdapter up
        // to DISPATCH_LEVEL); the ones not emulated are not IRQL-checked.
        let max_irql = match *name {
            "PutDmaAdapter" => DISPATCH_LEVEL,
            "AllocateCommonBuffer" | "FreeCommonBuffer" => PASSIVE_LEVEL,
            _ => HIGH_LEVEL,
        };
        ops[index] = nt.host_function(m, &format!("DMA_OPERATIONS.{name}"), dma_operation, index as u64, max_irql)?;
    }
    nt.hal.dma.operations = Some(ops);
    Ok(ops)
}

/// A `DMA_OPERATIONS` entry was called; `index` is its place in the table.
fn dma_operation(nt: &mut Nt, m: &mut Machine, index: u64) -> Result<u64, Stop> {
    match index {
        0 => put_dma_adapter(nt, m),
        1 => allocate_common_buffer(nt, m),
        2 => free_common_buffer(nt, m),
        _ => {
            let name = dma_operations::ENTRIES.get(index as usize).map_or("?", |e| e.0);
            nt.counted_violation(
                m,
                "DMA_OPERATION_NOT_EMULATED",
                0,
                None,
                format!("DMA_OPERATIONS.{name} called: the emulated HAL implements only PutDmaAdapter, AllocateCommonBuffer and FreeCommonBuffer"),
            );
            Ok(match name {
                "AllocateAdapterChannel"
                | "GetScatterGatherList"
                | "CalculateScatterGatherList"
                | "BuildScatterGatherList"
                | "BuildMdlFromScatterGatherList" => STATUS_NOT_SUPPORTED,
                _ => 0,
            })
        }
    }
}

/// `PDMA_ADAPTER IoGetDmaAdapter(PDEVICE_OBJECT PhysicalDeviceObject,
/// PDEVICE_DESCRIPTION DeviceDescription, PULONG NumberOfMapRegisters)`
/// ("IoGetDmaAdapter function", wdm.h; `PASSIVE_LEVEL`).
///
/// Reads the `DEVICE_DESCRIPTION` fields a PCI bus master sets (`Version`
/// up to `DEVICE_DESCRIPTION_VERSION2`, `Master`, `ScatterGather`,
/// `Dma64BitAddresses`, `MaximumLength`). Returns a `DMA_ADAPTER` with
/// `Version` 1 (as the page says it always is) whose `DmaOperations` is a
/// table in guest memory, and writes the map registers granted:
/// `BYTES_TO_PAGES(MaximumLength) + 1` (a transfer of `MaximumLength`
/// bytes starting anywhere in a page), at most
/// [`DmaState::map_register_limit`], for 64-bit adapters too. Each adapter
/// gets its own DMA-remapping domain.
///
/// NULL (as the page allows when no adapter can be had) for a `Version`
/// above 2, a device that is not a bus master (system DMA is not
/// emulated), and on the low resources simulation's chosen call.
///
/// # Errors
/// [`Stop::Host`] when no physical memory was attached
/// ([`super::attach_memory`]); a bugcheck for a bad `DeviceDescription`
/// or `NumberOfMapRegisters` pointer, as in Windows.
pub(super) fn io_get_dma_adapter(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [pdo, description, number_of_map_registers] = m.args::<3>()?;
    let index = nt.hal.dma.adapters_requested;
    nt.hal.dma.adapters_requested += 1;
    if nt.hal.dma.fail_adapter_at == Some(index) {
        nt.hal.dma.failed += 1;
        return Ok(0);
    }
    let version = m.read_u32(description + device_description::VERSION)?;
    let master = m.read_u8(description + device_description::MASTER)? != 0;
    let scatter_gather = m.read_u8(description + device_description::SCATTER_GATHER)? != 0;
    let dma64 = m.read_u8(description + device_description::DMA64_BIT_ADDRESSES)? != 0;
    let maximum_length = m.read_u32(description + device_description::MAXIMUM_LENGTH)?;
    if version > DEVICE_DESCRIPTION_VERSION2 || !master {
        return Ok(0);
    }
    if nt.hal.dma.memory.is_none() {
        return Err(Stop::Host("IoGetDmaAdapter: no physical memory attached to the HAL (hal::attach_memory)".into()));
    }
    let granted = (bytes_to_pages(u64::from(maximum_length)) + 1).min(u64::from(nt.hal.dma.map_register_limit));
    let map_registers = u32::try_from(granted).unwrap_or(u32::MAX);
    let ops = operations(nt, m)?;
    let va = nt.alloc_kernel(m, PAGE)?;
    m.write_u16(va + dma_adapter::VERSION, 1)?;
    m.write_u16(va + dma_adapter::SIZE_FIELD, dma_adapter::SIZE as u16)?;
    m.write_u64(va + dma_adapter::DMA_OPERATIONS, va + OPERATIONS_OFFSET)?;
    m.write_u32(va + OPERATIONS_OFFSET + dma_operations::SIZE_FIELD, dma_operations::SIZE as u32)?;
    for (entry, (_, offset)) in ops.iter().zip(dma_operations::ENTRIES) {
        m.write_u64(va + OPERATIONS_OFFSET + offset, *entry)?;
    }
    m.write_u32(number_of_map_registers, map_registers)?;
    let n = nt.hal.dma.adapters.len() as u64;
    let domain = if dma64 {
        DmaDomain::new(format!("domain of DMA adapter {va:#x}"), DOMAIN64_BASE + n * DOMAIN64_BYTES, DOMAIN64_BYTES)
    } else {
        DmaDomain::new(format!("domain of DMA adapter {va:#x}"), DOMAIN32_BASE, DOMAIN32_BYTES)
            .starting_at(DOMAIN32_BASE + n % (DOMAIN32_BYTES / DOMAIN32_STRIDE) * DOMAIN32_STRIDE)
    };
    let adapter = Adapter {
        va,
        pdo,
        version,
        scatter_gather,
        dma64,
        maximum_length,
        map_registers,
        domain,
        put: false,
        common_buffers: BTreeMap::new(),
        freed: BTreeSet::new(),
        caller: caller(m),
    };
    nt.hal.dma.adapters.insert(va, adapter);
    Ok(va)
}

/// The adapter at `va` for operation `op`, when it is live; records
/// `DMA_INVALID_ADAPTER` or `DMA_ADAPTER_USED_AFTER_PUT` otherwise.
fn live_adapter(nt: &mut Nt, m: &Machine, va: u64, op: &str) -> bool {
    match nt.hal.dma.adapters.get(&va).map(|a| a.put) {
        None => {
            nt.counted_violation(m, "DMA_INVALID_ADAPTER", 0xE6, None, format!("{op}({va:#x}): not an adapter IoGetDmaAdapter returned"));
            false
        }
        Some(true) => {
            nt.counted_violation(m, "DMA_ADAPTER_USED_AFTER_PUT", 0xE6, Some(0x18), format!("{op} on DMA adapter {va:#x} after PutDmaAdapter"));
            false
        }
        Some(false) => {
            nt.verifier.checks += 1;
            true
        }
    }
}

/// `PVOID AllocateCommonBuffer(PDMA_ADAPTER DmaAdapter, ULONG Length,
/// PPHYSICAL_ADDRESS LogicalAddress, BOOLEAN CacheEnabled)`
/// ("PALLOCATE_COMMON_BUFFER callback function", wdm.h; `PASSIVE_LEVEL`).
///
/// Physically contiguous pages from the attached memory, below 4 GiB for
/// an adapter without `Dma64BitAddresses`; mapped at a fresh virtual
/// address (page-aligned, followed by an unmapped guard page); NOT zeroed:
/// filled with [`COMMON_BUFFER_FILL`]. `*LogicalAddress` receives the
/// address of the buffer in the adapter's domain (not the physical
/// address), which the device may then use for `Length` bytes. NULL for a
/// `Length` of zero, when no contiguous run is free (or the memory's fault
/// injection says so), on the low resources simulation's chosen call, and
/// for an adapter that is not live (a finding).
fn allocate_common_buffer(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [adapter_va, length, logical_out, cache_enabled] = m.args::<4>()?;
    if !live_adapter(nt, m, adapter_va, "AllocateCommonBuffer") {
        return Ok(0);
    }
    let index = nt.hal.dma.common_buffers_requested;
    nt.hal.dma.common_buffers_requested += 1;
    if nt.hal.dma.fail_common_buffer_at == Some(index) {
        nt.hal.dma.failed += 1;
        return Ok(0);
    }
    let bytes = length & 0xFFFF_FFFF;
    let (Some(memory), Some(adapter)) = (nt.hal.dma.memory.clone(), nt.hal.dma.adapters.get(&adapter_va)) else {
        return Ok(0);
    };
    if bytes == 0 {
        return Ok(0);
    }
    let (dma64, domain) = (adapter.dma64, adapter.domain.clone());
    let limit = if dma64 { u64::MAX } else { FOUR_GIB };
    let label = format!("common buffer of DMA adapter {adapter_va:#x}");
    let Some(allocation) = memory.allocate_contiguous(bytes as usize, PAGE_SIZE, limit, &label) else {
        return Ok(0);
    };
    let Some(logical) = domain.map(&allocation.page_addresses, bytes, RangeKind::CommonBuffer, &label) else {
        memory.free(allocation.id);
        return Ok(0);
    };
    let physical = allocation.page_addresses[0];
    let pages = allocation.page_addresses.len() as u64;
    let global_range = memory.iommu().register(physical, bytes, RangeKind::CommonBuffer, &label);
    let va = m.map_frames(&allocation.page_addresses, Protection::READ_WRITE)?;
    m.fill(va, (pages * PAGE) as usize, COMMON_BUFFER_FILL)?;
    m.write_u64(logical_out, logical)?;
    let record = CommonBufferRecord {
        va,
        bytes: bytes as u32,
        logical,
        physical,
        pages,
        cache_enabled: cache_enabled & 0xFF != 0,
        caller: caller(m),
        allocation: allocation.id,
        global_range,
    };
    if let Some(adapter) = nt.hal.dma.adapters.get_mut(&adapter_va) {
        adapter.common_buffers.insert(va, record);
    }
    Ok(va)
}

/// `VOID FreeCommonBuffer(PDMA_ADAPTER DmaAdapter, ULONG Length,
/// PHYSICAL_ADDRESS LogicalAddress, PVOID VirtualAddress, BOOLEAN
/// CacheEnabled)` ("PFREE_COMMON_BUFFER callback function", wdm.h;
/// `PASSIVE_LEVEL`): the arguments must be exactly those of the
/// allocation, and the whole buffer is freed. Afterwards its virtual
/// address is unmapped (a use after free faults), its logical range is
/// unmapped from the domain (a device access faults) and its frames go
/// back to the memory.
fn free_common_buffer(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [adapter_va, length, logical, va, cache_enabled] = m.args::<5>()?;
    if !live_adapter(nt, m, adapter_va, "FreeCommonBuffer") {
        return Ok(0);
    }
    let Some(adapter) = nt.hal.dma.adapters.get_mut(&adapter_va) else {
        return Ok(0);
    };
    let Some(record) = adapter.common_buffers.remove(&va) else {
        let (rule, what) = if adapter.freed.contains(&va) {
            ("DMA_COMMON_BUFFER_FREED_TWICE", "already freed")
        } else {
            ("DMA_COMMON_BUFFER_NOT_ALLOCATED", "not a common buffer of this adapter")
        };
        nt.counted_violation(m, rule, 0xE6, Some(0x03), format!("FreeCommonBuffer({adapter_va:#x}, VirtualAddress {va:#x}): {what}"));
        return Ok(0);
    };
    adapter.freed.insert(va);
    let domain = adapter.domain.clone();
    let length = (length & 0xFFFF_FFFF) as u32;
    let cache_enabled = cache_enabled & 0xFF != 0;
    let mut differ = Vec::new();
    if length != record.bytes {
        differ.push(format!("Length {length} (allocated {})", record.bytes));
    }
    if logical != record.logical {
        differ.push(format!("LogicalAddress {logical:#x} (returned {:#x})", record.logical));
    }
    if cache_enabled != record.cache_enabled {
        differ.push(format!("CacheEnabled {cache_enabled} (allocated with {})", record.cache_enabled));
    }
    nt.verifier.checks += 1;
    if !differ.is_empty() {
        nt.violation(
            m,
            "DMA_COMMON_BUFFER_FREE_MISMATCH",
            0xE6,
            None,
            format!("FreeCommonBuffer of {va:#x}: {}; the whole buffer is freed", differ.join(", ")),
        );
    }
    domain.unmap(record.logical);
    m.unmap(record.va, record.pages)?;
    if let Some(memory) = &nt.hal.dma.memory {
        memory.iommu().unregister(record.global_range);
        memory.free(record.allocation);
    }
    Ok(0)
}

/// `VOID PutDmaAdapter(PDMA_ADAPTER DmaAdapter)` ("PPUT_DMA_ADAPTER
/// callback function", wdm.h; up to `DISPATCH_LEVEL`): releases the
/// adapter. Its common buffers must all be freed first; an adapter is put
/// once. The `DMA_ADAPTER` stays mapped so later misuse is reported as a
/// finding rather than a fault.
fn put_dma_adapter(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let adapter_va = m.arg(0)?;
    let Some(adapter) = nt.hal.dma.adapters.get(&adapter_va) else {
        nt.counted_violation(m, "DMA_INVALID_ADAPTER", 0xE6, None, format!("PutDmaAdapter({adapter_va:#x}): not an adapter IoGetDmaAdapter returned"));
        return Ok(0);
    };
    if adapter.put {
        nt.counted_violation(m, "DMA_ADAPTER_PUT_TWICE", 0xE6, Some(0x18), format!("PutDmaAdapter({adapter_va:#x}): already put"));
        return Ok(0);
    }
    let outstanding = adapter.common_buffers.len();
    nt.verifier.checks += 1;
    if outstanding > 0 {
        nt.violation(
            m,
            "DMA_ADAPTER_PUT_WITH_COMMON_BUFFERS",
            0xE6,
            Some(0x07),
            format!("PutDmaAdapter({adapter_va:#x}) with {outstanding} common buffer(s) not freed"),
        );
    }
    if let Some(adapter) = nt.hal.dma.adapters.get_mut(&adapter_va) {
        adapter.put = true;
    }
    Ok(0)
}

/// The device behind `adapter` writes `data` at logical address `logical`
/// (bus-master DMA): translated by the adapter's domain, checked by the
/// memory's IOMMU checker (physical addresses), written into guest memory.
/// Returns whether it was written; a refused access writes nothing and is
/// a `DMA_REMAPPING_FAULT` finding.
///
/// # Errors
/// [`Stop::Host`] when the translated range is not guest RAM (the attached
/// memory does not describe this machine's RAM).
pub fn device_write(nt: &mut Nt, m: &Machine, adapter: u64, logical: u64, data: &[u8]) -> Result<bool, Stop> {
    let Some(pieces) = device_pieces(nt, adapter, logical, data.len() as u64, "write") else {
        return Ok(false);
    };
    let mut done = 0usize;
    for (pa, n) in pieces {
        m.memory().write(pa, &data[done..done + n as usize])?;
        done += n as usize;
    }
    Ok(true)
}

/// The device behind `adapter` reads `buf.len()` bytes at logical address
/// `logical`, as [`device_write`] writes. On a refusal `buf` is unchanged.
///
/// # Errors
/// As [`device_write`].
pub fn device_read(nt: &mut Nt, m: &Machine, adapter: u64, logical: u64, buf: &mut [u8]) -> Result<bool, Stop> {
    let Some(pieces) = device_pieces(nt, adapter, logical, buf.len() as u64, "read") else {
        return Ok(false);
    };
    let mut done = 0usize;
    for (pa, n) in pieces {
        m.memory().read(pa, &mut buf[done..done + n as usize])?;
        done += n as usize;
    }
    Ok(true)
}

/// The physical pieces of a device access, after both checks; `None` (and
/// a finding) when either refuses.
fn device_pieces(nt: &mut Nt, adapter: u64, logical: u64, bytes: u64, what: &str) -> Option<Vec<(u64, u64)>> {
    let domain = nt.hal.dma.adapters.get(&adapter).map(|a| a.domain.clone());
    let result = match (&domain, &nt.hal.dma.memory) {
        (Some(domain), Some(memory)) => domain.translate(logical, bytes).map_err(|f| f.to_string()).and_then(|pieces| {
            for &(pa, n) in &pieces {
                memory.iommu().check(pa, n).map_err(|f| format!("physical {f}"))?;
            }
            Ok(pieces)
        }),
        _ => Err(format!("no live DMA adapter {adapter:#x}")),
    };
    let ok = result.is_ok();
    nt.verifier.check(ok, || Finding {
        rule: "DMA_REMAPPING_FAULT",
        bugcheck: 0xE6,
        parameter1: None,
        detail: format!(
            "the device of DMA adapter {adapter:#x} {what} {bytes} bytes at logical {logical:#x}: {}",
            result.as_ref().err().map_or("", String::as_str)
        ),
        caller: "the device (bus-master DMA)".into(),
    });
    result.ok()
}

/// One line per adapter not put and per common buffer not freed.
#[must_use]
pub fn leaks(dma: &DmaState) -> Vec<String> {
    let mut out = Vec::new();
    for a in dma.adapters.values() {
        if !a.put {
            out.push(format!("DMA adapter {:#x} (IoGetDmaAdapter from {}) not put", a.va, a.caller));
        }
        for b in a.common_buffers.values() {
            out.push(format!(
                "common buffer {:#x} ({} bytes, logical {:#x}) of DMA adapter {:#x} (allocated from {}) not freed",
                b.va, b.bytes, b.logical, a.va, b.caller
            ));
        }
    }
    out
}
