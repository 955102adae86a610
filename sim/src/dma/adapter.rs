//! The simulated DMA adapter: what `IoGetDmaAdapter` returns to the bus.
//!
//! Models the `DMA_OPERATIONS` a packet-DMA / common-buffer driver (and
//! `AVStream` on its behalf) uses:
//!
//! * `AllocateCommonBuffer` / `FreeCommonBuffer` ([`DmaAdapterPort`]):
//!   `PASSIVE_LEVEL`, physically contiguous, below 4 GiB for a 32-bit
//!   device description, registered with the IOMMU checker while live;
//!   zeroed as the port promises (the memory itself comes filled with
//!   [`crate::memory::CONTIGUOUS_FILL`]: Windows does not zero it, the WDM
//!   glue does);
//! * `GetScatterGatherList` / `BuildScatterGatherList`
//!   ([`SimDmaAdapter::get_scatter_gather_list`]) and `PutScatterGatherList`
//!   ([`SimDmaAdapter::put_scatter_gather_list`]) for a device-to-memory
//!   transfer (`WriteToDevice = FALSE`), with map-register bouncing for pages
//!   a 32-bit device cannot reach;
//! * how `AVStream` cuts the list into `KSMAPPING`s no larger than
//!   `MaxMappingByteCount` ([`split_mappings`]);
//! * `PutDmaAdapter` ([`SimDmaAdapter::put`]) and the leak check behind it.
//!
//! The adapter has a stable raw address ([`DmaAdapterPort::raw`], the
//! `PDMA_ADAPTER`) that [`SimDmaAdapter::from_raw`] maps back, so the KS
//! model can take the pointer the child got through the bus interface and
//! passed to `KsDeviceRegisterAdapterObject`.
use crate::dma::iommu::{RangeId, RangeKind};
use crate::irql::IrqlTracker;
use crate::memory::{Allocation, AllocationId, PhysicalMemory, FOUR_GIB, PAGE_SIZE};
use crate::violations::{ViolationKind, Violations};
use capdma_bus::ports::{CommonBuffer, DeviceDescription, DmaAdapterPort};
use capdma_interface::status::{NtStatus, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER};
use capdma_interface::table::SgElement;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::ffi::c_void;
use std::rc::{Rc, Weak};

const PAGE: u64 = PAGE_SIZE as u64;

/// What the machine grants when it creates an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterConfig {
    /// `NumberOfMapRegisters` granted by `IoGetDmaAdapter`: bounce pages
    /// available at once for a 32-bit adapter on a machine with memory above
    /// 4 GiB (each bounced page holds one until its list is put).
    pub map_registers: u32,
    /// Merge physically adjacent pages into one element (as the HAL does);
    /// clear to get one element per page (benchmarks, worst case).
    pub merge_adjacent: bool,
}

impl Default for AdapterConfig {
    /// 64 map registers, merging on.
    fn default() -> Self {
        Self { map_registers: 64, merge_adjacent: true }
    }
}

/// Identifies one scatter/gather list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SgListId(pub u64);

/// A page of a list that was bounced through a map register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BouncedPage {
    /// Index of the page in the buffer (0 = the page holding the first byte).
    pub page_index: usize,
    /// Physical address of the first mapped byte in the real page.
    pub original: u64,
    /// Logical address the device sees instead (in a bounce page below 4 GiB,
    /// at the same offset in its page).
    pub bounce: u64,
    /// Bytes mapped in this page.
    pub bytes: u32,
}

/// A `SCATTER_GATHER_LIST` for a device-to-memory transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScatterGatherList {
    /// Its id (double puts are detected by id).
    pub id: SgListId,
    /// Id of the adapter that built it.
    pub adapter: u64,
    /// Virtual address of the first mapped byte.
    pub va: *mut u8,
    /// Bytes mapped.
    pub bytes: usize,
    /// The elements (`SCATTER_GATHER_ELEMENT`: `logical_address` =
    /// `Address`, `byte_count` = `Length`; `alignment` is 0).
    pub elements: Vec<SgElement>,
    /// Pages that were bounced through map registers.
    pub bounced: Vec<BouncedPage>,
}

impl ScatterGatherList {
    /// `AVStream`'s `KSMAPPING`s for this list: see [`split_mappings`].
    #[must_use]
    pub fn mappings(&self, max_mapping_byte_count: u32) -> Vec<SgElement> {
        split_mappings(self, max_mapping_byte_count)
    }
}

/// How `AVStream` turns a scatter/gather list into `KSMAPPING`s when the
/// adapter was registered with `KsDeviceRegisterAdapterObject(…,
/// MaxMappingByteCount, …)`: every element longer than
/// `max_mapping_byte_count` bytes is cut into consecutive chunks of that
/// many bytes from the element's start (the last chunk holds the rest), so
/// chunk boundaries fall at arbitrary byte offsets, not page boundaries.
/// `alignment` of each mapping is 0 (not modelled). A
/// `max_mapping_byte_count` of 0 means "no limit".
#[must_use]
pub fn split_mappings(list: &ScatterGatherList, max_mapping_byte_count: u32) -> Vec<SgElement> {
    let max = if max_mapping_byte_count == 0 { u32::MAX } else { max_mapping_byte_count };
    let mut out = Vec::with_capacity(list.elements.len());
    for e in &list.elements {
        let mut at = e.logical_address;
        let mut left = e.byte_count;
        while left > 0 {
            let n = left.min(max);
            out.push(SgElement { logical_address: at, byte_count: n, alignment: 0 });
            at += u64::from(n);
            left -= n;
        }
    }
    out
}

/// The page pieces of `[offset, offset + bytes)` of `alloc`: (page index
/// from the first touched page, physical address of the first byte, bytes).
fn page_pieces(alloc: &Allocation, offset: usize, bytes: usize) -> Vec<(usize, u64, u32)> {
    let first_page = offset / PAGE_SIZE;
    let last_page = (offset + bytes - 1) / PAGE_SIZE;
    (first_page..=last_page)
        .map(|p| {
            let lo = if p == first_page { offset % PAGE_SIZE } else { 0 };
            let hi = if p == last_page { (offset + bytes - 1) % PAGE_SIZE + 1 } else { PAGE_SIZE };
            (p - first_page, alloc.page_addresses[p] + lo as u64, (hi - lo) as u32)
        })
        .collect()
}

/// Counters of one adapter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterStats {
    /// Scatter/gather lists built.
    pub sg_lists_built: u64,
    /// Scatter/gather lists put.
    pub sg_lists_put: u64,
    /// `GetScatterGatherList` calls that failed.
    pub sg_list_failures: u64,
    /// Elements in all lists built.
    pub elements_built: u64,
    /// Pages mapped in all lists built.
    pub pages_mapped: u64,
    /// Pages bounced through map registers.
    pub bounced_pages: u64,
    /// Bytes copied from bounce pages back to the real pages at put.
    pub bounce_bytes_copied: u64,
    /// Map registers held now.
    pub map_registers_in_use: u32,
    /// Most map registers held at once.
    pub map_registers_peak: u32,
    /// Common buffers allocated.
    pub common_buffers_allocated: u64,
    /// Common buffers freed.
    pub common_buffers_freed: u64,
    /// `AllocateCommonBuffer` calls that failed.
    pub common_buffer_failures: u64,
}

#[derive(Debug)]
struct LiveCommon {
    buffer: CommonBuffer,
    allocation: AllocationId,
    range: RangeId,
}

#[derive(Debug)]
struct LiveList {
    bytes: usize,
    ranges: Vec<RangeId>,
    slots: Vec<u32>,
}

#[derive(Debug, Default)]
struct State {
    put: bool,
    next_list: u64,
    common: HashMap<usize, LiveCommon>,
    lists: HashMap<SgListId, LiveList>,
    free_slots: BTreeSet<u32>,
    stats: AdapterStats,
}

#[derive(Debug)]
struct Inner {
    id: u64,
    description: DeviceDescription,
    map_registers: u32,
    merge_adjacent: Cell<bool>,
    bounce_pool: Option<Allocation>,
    memory: PhysicalMemory,
    irql: IrqlTracker,
    violations: Violations,
    state: RefCell<State>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let key = std::ptr::from_ref::<Self>(self) as usize;
        // The registry may already be gone at thread exit; nothing to do then.
        let _ = REGISTRY.try_with(|r| r.borrow_mut().remove(&key));
    }
}

thread_local! {
    static REGISTRY: RefCell<HashMap<usize, Weak<Inner>>> = RefCell::new(HashMap::new());
    static NEXT_ADAPTER: Cell<u64> = const { Cell::new(0) };
}

/// A simulated DMA adapter (a cheap `Clone` handle; clones are the same adapter).
#[derive(Clone, Debug)]
pub struct SimDmaAdapter {
    inner: Rc<Inner>,
}

impl SimDmaAdapter {
    /// `IoGetDmaAdapter(PciPdo, description, &NumberOfMapRegisters)` at
    /// `PASSIVE_LEVEL`, granting `config.map_registers`. A 32-bit adapter on
    /// a machine with memory above 4 GiB reserves one bounce page below
    /// 4 GiB per map register now (the HAL's map-register buffers); if that
    /// memory cannot be had the adapter gets no map registers.
    #[must_use]
    pub fn new(description: DeviceDescription, config: AdapterConfig, memory: &PhysicalMemory, irql: &IrqlTracker) -> Self {
        irql.require_passive("IoGetDmaAdapter");
        let id = NEXT_ADAPTER.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        let needs_bounce = !description.dma64 && memory.has_memory_above_4gib();
        let bounce_pool = if needs_bounce && config.map_registers > 0 {
            memory
                .allocate_platform(config.map_registers as usize * PAGE_SIZE, PAGE_SIZE, FOUR_GIB, &format!("map registers of DMA adapter #{id}"))
                .ok()
        } else {
            None
        };
        let map_registers = if needs_bounce && bounce_pool.is_none() { 0 } else { config.map_registers };
        let state = State { free_slots: (0..if bounce_pool.is_some() { map_registers } else { 0 }).collect(), ..State::default() };
        let inner = Rc::new(Inner {
            id,
            description,
            map_registers,
            merge_adjacent: Cell::new(config.merge_adjacent),
            bounce_pool,
            memory: memory.clone(),
            irql: irql.clone(),
            violations: memory.violations().clone(),
            state: RefCell::new(state),
        });
        let key = Rc::as_ptr(&inner) as usize;
        REGISTRY.with(|r| r.borrow_mut().insert(key, Rc::downgrade(&inner)));
        Self { inner }
    }

    /// The adapter whose `PDMA_ADAPTER` is `raw`, while it has not been put
    /// (on this thread). `None` for any other pointer.
    #[must_use]
    pub fn from_raw(raw: *mut c_void) -> Option<Self> {
        let inner = REGISTRY.with(|r| r.borrow().get(&(raw as usize)).and_then(Weak::upgrade))?;
        Some(Self { inner })
    }

    /// The adapter's id (unique per thread).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The `DEVICE_DESCRIPTION` it was created for.
    #[must_use]
    pub fn description(&self) -> DeviceDescription {
        self.inner.description
    }

    /// Turns merging of physically adjacent pages on or off.
    pub fn set_merge_adjacent(&self, merge: bool) {
        self.inner.merge_adjacent.set(merge);
    }

    /// `true` once `PutDmaAdapter` was called.
    #[must_use]
    pub fn is_put(&self) -> bool {
        self.inner.state.borrow().put
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> AdapterStats {
        self.inner.state.borrow().stats
    }

    /// Scatter/gather lists built and not yet put.
    #[must_use]
    pub fn live_lists(&self) -> usize {
        self.inner.state.borrow().lists.len()
    }

    /// Common buffers allocated and not yet freed.
    #[must_use]
    pub fn live_common_buffers(&self) -> usize {
        self.inner.state.borrow().common.len()
    }

    fn label(&self) -> String {
        format!("DMA adapter #{}", self.inner.id)
    }

    fn check_not_put(&self, op: &str) -> bool {
        if self.is_put() {
            self.inner.violations.push(ViolationKind::Dma, format!("{op} on {} after PutDmaAdapter", self.label()));
            return false;
        }
        true
    }

    /// `GetScatterGatherList` / `BuildScatterGatherList` for a transfer from
    /// the device into the `bytes` bytes at `va` (`WriteToDevice = FALSE`),
    /// at `<= DISPATCH_LEVEL`. One element per page piece, physically
    /// adjacent pieces merged (unless merging is off). On a 32-bit adapter
    /// every page at or above 4 GiB is bounced: it takes a map register, and
    /// its element points at the register's bounce page below 4 GiB (same
    /// offset in the page). The elements (and bounce pages) are visible to
    /// the device until [`SimDmaAdapter::put_scatter_gather_list`].
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when more map registers are needed
    /// than are free now (nothing is held then);
    /// `STATUS_INVALID_PARAMETER` for zero bytes or a range that is not one
    /// live allocation (a violation too); `STATUS_INVALID_DEVICE_REQUEST`
    /// after `PutDmaAdapter`.
    pub fn get_scatter_gather_list(&self, va: *mut u8, bytes: usize) -> Result<ScatterGatherList, NtStatus> {
        let inner = &*self.inner;
        inner.irql.require_at_most_dispatch("GetScatterGatherList");
        if !self.check_not_put("GetScatterGatherList") {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        if !inner.description.scatter_gather {
            inner.violations.push(
                ViolationKind::Dma,
                format!("GetScatterGatherList on {}, created with ScatterGather = FALSE", self.label()),
            );
        }
        let (alloc, offset) = self.locate(va, bytes)?;
        let pieces = page_pieces(&alloc, offset, bytes);
        let needs_bounce = |pa: u64| !inner.description.dma64 && pa >= FOUR_GIB;
        let bounce_needed = pieces.iter().filter(|p| needs_bounce(p.1)).count();

        let mut s = inner.state.borrow_mut();
        if bounce_needed > s.free_slots.len() {
            s.stats.sg_list_failures += 1;
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        s.next_list += 1;
        let id = SgListId(s.next_list);
        let pool = inner.bounce_pool.as_ref().map_or(0, |p| p.page_addresses[0]);
        let mut slots = Vec::with_capacity(bounce_needed);
        let mut bounced = Vec::with_capacity(bounce_needed);
        // (address, bytes, bounced?)
        let mut elements: Vec<(u64, u32, bool)> = Vec::with_capacity(pieces.len());
        for &(index, pa, n) in &pieces {
            let (address, is_bounce) = if needs_bounce(pa) {
                let Some(slot) = s.free_slots.pop_first() else {
                    // Counted above; cannot happen.
                    return Err(STATUS_INSUFFICIENT_RESOURCES);
                };
                slots.push(slot);
                let bounce = pool + u64::from(slot) * PAGE + pa % PAGE;
                bounced.push(BouncedPage { page_index: index, original: pa, bounce, bytes: n });
                (bounce, true)
            } else {
                (pa, false)
            };
            match elements.last_mut() {
                Some(last)
                    if inner.merge_adjacent.get()
                        && last.2 == is_bounce
                        && last.0 + u64::from(last.1) == address
                        && last.1.checked_add(n).is_some() =>
                {
                    last.1 += n;
                }
                _ => elements.push((address, n, is_bounce)),
            }
        }
        let label = format!("S/G list #{} of {}", id.0, self.label());
        let ranges = elements
            .iter()
            .map(|&(a, n, b)| {
                inner.memory.iommu().register(a, u64::from(n), if b { RangeKind::BouncePage } else { RangeKind::ScatterGather }, &label)
            })
            .collect();
        let in_use = inner.map_registers.saturating_sub(s.free_slots.len() as u32);
        let stats = &mut s.stats;
        stats.sg_lists_built += 1;
        stats.elements_built += elements.len() as u64;
        stats.pages_mapped += pieces.len() as u64;
        stats.bounced_pages += bounced.len() as u64;
        stats.map_registers_in_use = if inner.bounce_pool.is_some() { in_use } else { 0 };
        stats.map_registers_peak = stats.map_registers_peak.max(stats.map_registers_in_use);
        s.lists.insert(id, LiveList { bytes, ranges, slots });
        Ok(ScatterGatherList {
            id,
            adapter: inner.id,
            va,
            bytes,
            elements: elements
                .into_iter()
                .map(|(a, n, _)| SgElement { logical_address: a, byte_count: n, alignment: 0 })
                .collect(),
            bounced,
        })
    }

    /// The live allocation holding `[va, va + bytes)` and `va`'s offset in it.
    fn locate(&self, va: *mut u8, bytes: usize) -> Result<(Allocation, usize), NtStatus> {
        let inner = &*self.inner;
        let fail = |message: Option<String>| {
            if let Some(m) = message {
                inner.violations.push(ViolationKind::Dma, m);
            }
            inner.state.borrow_mut().stats.sg_list_failures += 1;
            Err(STATUS_INVALID_PARAMETER)
        };
        if bytes == 0 {
            return fail(None);
        }
        let Some((alloc, offset)) = inner.memory.allocation_at(va) else {
            return fail(Some(format!("GetScatterGatherList on {va:p} ({bytes} bytes): not allocated memory")));
        };
        if offset.checked_add(bytes).is_none_or(|end| end > alloc.bytes) {
            return fail(Some(format!(
                "GetScatterGatherList on {va:p} ({bytes} bytes) runs past the end of allocation {} ({} bytes)",
                alloc.id, alloc.bytes
            )));
        }
        Ok((alloc, offset))
    }

    /// `PutScatterGatherList(Adapter, List, WriteToDevice = FALSE)` at
    /// `<= DISPATCH_LEVEL`: copies every bounced page from its bounce page
    /// back into the real page, releases the map registers and makes the
    /// list's memory invisible to the device again. Putting a list twice (or
    /// a list of another adapter) is a violation and does nothing.
    pub fn put_scatter_gather_list(&self, list: &ScatterGatherList) {
        let inner = &*self.inner;
        inner.irql.require_at_most_dispatch("PutScatterGatherList");
        if list.adapter != inner.id {
            inner.violations.push(
                ViolationKind::Dma,
                format!("PutScatterGatherList of S/G list #{} (of adapter #{}) on {}", list.id.0, list.adapter, self.label()),
            );
            return;
        }
        let Some(live) = inner.state.borrow_mut().lists.remove(&list.id) else {
            inner.violations.push(
                ViolationKind::Dma,
                format!("PutScatterGatherList of S/G list #{} on {}: already put", list.id.0, self.label()),
            );
            return;
        };
        let mut copied = 0u64;
        let mut page = vec![0u8; PAGE_SIZE];
        for b in &list.bounced {
            let buf = &mut page[..b.bytes as usize];
            let result = inner.memory.read_physical(b.bounce, buf).and_then(|()| inner.memory.write_physical(b.original, buf));
            match result {
                Ok(()) => copied += u64::from(b.bytes),
                Err(e) => inner.violations.push(
                    ViolationKind::Dma,
                    format!(
                        "PutScatterGatherList of S/G list #{}: bounce copy-back to {:#x} failed: {e} (buffer freed before the list was put?)",
                        list.id.0, b.original
                    ),
                ),
            }
        }
        for r in &live.ranges {
            inner.memory.iommu().unregister(*r);
        }
        let mut s = inner.state.borrow_mut();
        s.free_slots.extend(live.slots.iter().copied());
        let in_use = inner.map_registers.saturating_sub(s.free_slots.len() as u32);
        s.stats.map_registers_in_use = if inner.bounce_pool.is_some() { in_use } else { 0 };
        s.stats.sg_lists_put += 1;
        s.stats.bounce_bytes_copied += copied;
    }

    /// `PutDmaAdapter` at `PASSIVE_LEVEL`. Every common buffer must have been
    /// freed and every scatter/gather list put first (Driver Verifier stops
    /// with 0xE6 otherwise): each one left is a violation. Putting twice is a
    /// violation. Releases the map-register bounce pages; afterwards
    /// [`SimDmaAdapter::from_raw`] no longer finds the adapter.
    pub fn put(&self) {
        let inner = &*self.inner;
        inner.irql.require_passive("PutDmaAdapter");
        if !self.check_not_put("PutDmaAdapter") {
            return;
        }
        for leak in self.leaks() {
            inner.violations.push(ViolationKind::Pnp, format!("PutDmaAdapter with resources outstanding: {leak}"));
        }
        inner.state.borrow_mut().put = true;
        if let Some(pool) = &inner.bounce_pool {
            inner.memory.free(pool.id);
        }
        let key = Rc::as_ptr(&self.inner) as usize;
        REGISTRY.with(|r| r.borrow_mut().remove(&key));
    }

    /// One line per common buffer not freed and per list not put.
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        let s = self.inner.state.borrow();
        let mut out: Vec<String> = s
            .common
            .values()
            .map(|c| {
                format!(
                    "{}: common buffer of {} bytes at logical {:#x} not freed",
                    self.label(),
                    c.buffer.bytes,
                    c.buffer.logical
                )
            })
            .collect();
        let mut lists: Vec<_> = s.lists.iter().collect();
        lists.sort_by_key(|(id, _)| **id);
        out.extend(
            lists
                .into_iter()
                .map(|(id, l)| format!("{}: S/G list #{} ({} bytes) not put", self.label(), id.0, l.bytes)),
        );
        out.sort();
        out
    }
}

impl DmaAdapterPort for SimDmaAdapter {
    /// `AllocateCommonBuffer`: `PASSIVE_LEVEL`; physically contiguous,
    /// page-aligned, below 4 GiB unless the description is 64-bit; fails
    /// (`None`) when the memory's contiguous-failure injection says so or
    /// no run is free. The memory comes filled with
    /// [`crate::memory::CONTIGUOUS_FILL`] (Windows does not promise zeroed
    /// common buffers); the port promises zeroed ones, so its `bytes` are
    /// then zeroed here, as the WDM glue does after `AllocateCommonBuffer`
    /// (`bus-driver/src/wdm/platform.rs`).
    fn allocate_common_buffer(&self, bytes: usize) -> Option<CommonBuffer> {
        let inner = &*self.inner;
        inner.irql.require_passive("AllocateCommonBuffer");
        if !self.check_not_put("AllocateCommonBuffer") || bytes == 0 {
            inner.state.borrow_mut().stats.common_buffer_failures += 1;
            return None;
        }
        let max = if inner.description.dma64 { u64::MAX } else { FOUR_GIB };
        let label = format!("common buffer of {}", self.label());
        let Some(alloc) = inner.memory.allocate_contiguous(bytes, PAGE_SIZE, max, &label) else {
            inner.state.borrow_mut().stats.common_buffer_failures += 1;
            return None;
        };
        // SAFETY: `alloc.va` starts `alloc.bytes == bytes` writable bytes of
        // the allocation just made, which nothing else uses yet.
        unsafe { std::ptr::write_bytes(alloc.va, 0, bytes) };
        let logical = alloc.page_addresses[0];
        let range = inner.memory.iommu().register(logical, bytes as u64, RangeKind::CommonBuffer, &label);
        let buffer = CommonBuffer { va: alloc.va, logical, bytes };
        let mut s = inner.state.borrow_mut();
        s.common.insert(alloc.va as usize, LiveCommon { buffer, allocation: alloc.id, range });
        s.stats.common_buffers_allocated += 1;
        Some(buffer)
    }

    /// `FreeCommonBuffer`: `PASSIVE_LEVEL`; `buffer` must be exactly as
    /// allocated by this adapter. A buffer this adapter does not hold (freed
    /// twice, another adapter's) is a violation and is not freed; a mismatch
    /// of the logical address or length is a violation, and the buffer is
    /// freed anyway.
    fn free_common_buffer(&self, buffer: CommonBuffer) {
        let inner = &*self.inner;
        inner.irql.require_passive("FreeCommonBuffer");
        // After PutDmaAdapter this is a violation; the memory is freed anyway.
        self.check_not_put("FreeCommonBuffer");
        let Some(live) = inner.state.borrow_mut().common.remove(&(buffer.va as usize)) else {
            inner.violations.push(
                ViolationKind::Dma,
                format!(
                    "FreeCommonBuffer on {} of {:p} (logical {:#x}): not a live common buffer of this adapter",
                    self.label(),
                    buffer.va,
                    buffer.logical
                ),
            );
            return;
        };
        if live.buffer != buffer {
            inner.violations.push(
                ViolationKind::Dma,
                format!(
                    "FreeCommonBuffer on {}: arguments ({} bytes, logical {:#x}) differ from the allocation ({} bytes, logical {:#x})",
                    self.label(),
                    buffer.bytes,
                    buffer.logical,
                    live.buffer.bytes,
                    live.buffer.logical
                ),
            );
        }
        inner.memory.iommu().unregister(live.range);
        inner.memory.free(live.allocation);
        inner.state.borrow_mut().stats.common_buffers_freed += 1;
    }

    fn raw(&self) -> *mut c_void {
        Rc::as_ptr(&self.inner).cast::<c_void>().cast_mut()
    }

    fn map_registers(&self) -> u32 {
        self.inner.map_registers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irql::{DEVICE_LEVEL, DISPATCH_LEVEL};
    use crate::memory::{ContiguousFailure, MemoryConfig};

    struct Machine {
        memory: PhysicalMemory,
        irql: IrqlTracker,
        violations: Violations,
    }

    fn machine(config: MemoryConfig) -> Machine {
        let violations = Violations::new();
        Machine {
            memory: PhysicalMemory::new(config, violations.clone()),
            irql: IrqlTracker::new(violations.clone()),
            violations,
        }
    }

    fn adapter(m: &Machine, dma64: bool, map_registers: u32) -> SimDmaAdapter {
        SimDmaAdapter::new(
            DeviceDescription { scatter_gather: true, dma64, maximum_length: 1 << 24 },
            AdapterConfig { map_registers, merge_adjacent: true },
            &m.memory,
            &m.irql,
        )
    }

    #[test]
    fn adjacent_pages_merge_and_merging_can_be_turned_off() {
        let m = machine(MemoryConfig::default());
        let a = adapter(&m, true, 0);
        let buf = m.memory.allocate_scattered(64 * PAGE_SIZE, "frame").unwrap();
        let runs = 1 + buf.page_addresses.windows(2).filter(|w| w[1] != w[0] + PAGE).count();
        assert!(runs < 64, "the placement must produce some adjacent pages");
        let list = a.get_scatter_gather_list(buf.va, buf.bytes).unwrap();
        assert_eq!(list.elements.len(), runs);
        assert_eq!(list.elements.iter().map(|e| e.byte_count as usize).sum::<usize>(), buf.bytes);
        assert_eq!(list.elements[0].logical_address, buf.page_addresses[0]);
        assert!(list.bounced.is_empty());
        a.put_scatter_gather_list(&list);

        a.set_merge_adjacent(false);
        let list = a.get_scatter_gather_list(buf.va, buf.bytes).unwrap();
        assert_eq!(list.elements.len(), 64);
        a.put_scatter_gather_list(&list);
        assert!(m.memory.free(buf.id));
        a.put();
        assert!(m.violations.is_empty(), "{:?}", m.violations.list());
        assert_eq!(a.stats().sg_lists_built, 2);
    }

    #[test]
    fn unaligned_start_and_partial_last_page() {
        let m = machine(MemoryConfig::default());
        let a = adapter(&m, true, 0);
        let buf = m.memory.allocate_scattered(3 * PAGE_SIZE, "frame").unwrap();
        a.set_merge_adjacent(false);
        let va = buf.va.wrapping_add(100);
        let list = a.get_scatter_gather_list(va, 2 * PAGE_SIZE).unwrap();
        let lens: Vec<u32> = list.elements.iter().map(|e| e.byte_count).collect();
        assert_eq!(lens, vec![3996, 4096, 100]);
        assert_eq!(list.elements[0].logical_address, buf.page_addresses[0] + 100);
        a.put_scatter_gather_list(&list);
        // Past the end: refused and recorded.
        assert_eq!(a.get_scatter_gather_list(va, 3 * PAGE_SIZE), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(m.violations.count(ViolationKind::Dma), 1);
        assert!(m.memory.free(buf.id));
        a.put();
    }

    #[test]
    fn splitting_falls_at_non_page_offsets() {
        let list = ScatterGatherList {
            id: SgListId(1),
            adapter: 0,
            va: std::ptr::null_mut(),
            bytes: 2500 + 8192,
            elements: vec![
                SgElement { logical_address: 0x10_0000, byte_count: 2500, alignment: 0 },
                SgElement { logical_address: 0x20_0000, byte_count: 8192, alignment: 0 },
            ],
            bounced: vec![],
        };
        let m = split_mappings(&list, 1000);
        let lens: Vec<u32> = m.iter().map(|e| e.byte_count).collect();
        assert_eq!(lens, vec![1000, 1000, 500, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 192]);
        assert_eq!(m[1].logical_address, 0x10_0000 + 1000);
        assert_eq!(m[2].logical_address, 0x10_0000 + 2000);
        assert_eq!(m[3].logical_address, 0x20_0000);
        assert_eq!(m[7].logical_address, 0x20_0000 + 4000);
        assert!(m.iter().all(|e| e.byte_count <= 1000));
        assert_eq!(m.iter().map(|e| u64::from(e.byte_count)).sum::<u64>(), 2500 + 8192);
        assert!(m[1..].iter().any(|e| e.logical_address % 4096 != 0 && e.logical_address % 512 != 0));
        assert_eq!(split_mappings(&list, 0).len(), 2);
    }

    #[test]
    fn thirty_two_bit_adapter_bounces_high_pages_and_copies_back_on_put() {
        let m = machine(MemoryConfig::default());
        let a = adapter(&m, false, 16);
        let buf = m.memory.allocate_scattered(8 * PAGE_SIZE, "frame").unwrap();
        let high: Vec<usize> = (0..8).filter(|&i| buf.page_addresses[i] >= FOUR_GIB).collect();
        assert!(!high.is_empty() && high.len() < 8, "seed 1 places some pages high and some low: {:x?}", buf.page_addresses);
        let old = m.irql.raise(DISPATCH_LEVEL);
        let list = a.get_scatter_gather_list(buf.va, buf.bytes).unwrap();
        m.irql.lower(old);
        assert!(list.elements.iter().all(|e| e.logical_address + u64::from(e.byte_count) <= FOUR_GIB));
        assert_eq!(list.bounced.len(), high.len());
        assert_eq!(a.stats().map_registers_in_use, high.len() as u32);
        // The board writes through the list; the high pages get it only at put.
        let mut offset = 0usize;
        for e in &list.elements {
            let data: Vec<u8> = (0..e.byte_count as usize).map(|i| ((offset + i) % 251) as u8).collect();
            m.memory.dma_write(e.logical_address, &data).unwrap();
            offset += e.byte_count as usize;
        }
        let mut before = [0u8; 1];
        m.memory.read_virtual(buf.va.wrapping_add(high[0] * PAGE_SIZE + 1), &mut before).unwrap();
        assert_eq!(before[0], 0, "bounced page not written before put");
        a.put_scatter_gather_list(&list);
        let mut bytes = vec![0u8; buf.bytes];
        m.memory.read_virtual(buf.va, &mut bytes).unwrap();
        assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(a.stats().map_registers_in_use, 0);
        assert_eq!(a.stats().bounce_bytes_copied, (high.len() * PAGE_SIZE) as u64);
        // The bounce pages are not visible any more.
        assert!(m.memory.dma_write(list.bounced[0].bounce, &[1]).is_err());
        assert_eq!(m.violations.take().len(), 1);
        assert!(m.memory.free(buf.id));
        a.put();
        assert!(m.memory.leaks().is_empty(), "{:?}", m.memory.leaks());
        assert!(m.violations.is_empty(), "{:?}", m.violations.list());
    }

    #[test]
    fn map_register_exhaustion_fails_with_nothing_held() {
        let m = machine(MemoryConfig::default());
        let a = adapter(&m, false, 4);
        assert_eq!(a.map_registers(), 4);
        let buf = m.memory.allocate_scattered(64 * PAGE_SIZE, "frame").unwrap();
        assert!(buf.page_addresses.iter().filter(|&&pa| pa >= FOUR_GIB).count() > 4);
        assert_eq!(a.get_scatter_gather_list(buf.va, buf.bytes), Err(STATUS_INSUFFICIENT_RESOURCES));
        assert_eq!(a.stats().map_registers_in_use, 0);
        assert_eq!(a.live_lists(), 0);
        assert!(m.memory.iommu().live_ranges().is_empty());
        // A small piece that needs at most 4 still works.
        let i = buf.page_addresses.iter().position(|&pa| pa >= FOUR_GIB).unwrap();
        let list = a.get_scatter_gather_list(buf.va.wrapping_add(i * PAGE_SIZE), PAGE_SIZE).unwrap();
        assert_eq!(a.stats().map_registers_in_use, 1);
        a.put_scatter_gather_list(&list);
        assert!(m.memory.free(buf.id));
        a.put();
        assert!(m.violations.is_empty(), "{:?}", m.violations.list());
    }

    #[test]
    fn double_put_and_leaks_are_violations() {
        let m = machine(MemoryConfig::default());
        let a = adapter(&m, true, 0);
        let buf = m.memory.allocate_scattered(PAGE_SIZE, "frame").unwrap();
        let list = a.get_scatter_gather_list(buf.va, 10).unwrap();
        let cb = a.allocate_common_buffer(5000).unwrap();
        let leaks = a.leaks();
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert!(leaks.iter().any(|l| l.contains("common buffer of 5000 bytes")));
        assert!(leaks.iter().any(|l| l.contains("S/G list")));
        a.put_scatter_gather_list(&list);
        a.put_scatter_gather_list(&list);
        assert_eq!(m.violations.count(ViolationKind::Dma), 1);
        a.put();
        assert_eq!(m.violations.count(ViolationKind::Pnp), 1, "{:?}", m.violations.list());
        a.put();
        assert_eq!(m.violations.count(ViolationKind::Dma), 2);
        assert!(SimDmaAdapter::from_raw(a.raw()).is_none());
        a.free_common_buffer(cb);
        assert_eq!(m.violations.count(ViolationKind::Dma), 3);
        assert!(m.memory.free(buf.id));
        assert!(m.memory.leaks().is_empty());
    }

    #[test]
    fn common_buffer_below_4gib_for_32_bit_and_zeroed_and_visible() {
        let m = machine(MemoryConfig::default());
        let a32 = adapter(&m, false, 0);
        let a64 = adapter(&m, true, 0);
        let low = a32.allocate_common_buffer(3 * PAGE_SIZE).unwrap();
        let high = a64.allocate_common_buffer(PAGE_SIZE).unwrap();
        assert!(low.logical + low.bytes as u64 <= FOUR_GIB);
        assert!(high.logical >= FOUR_GIB, "64-bit common buffers come from the top of RAM");
        assert_eq!(low.logical % PAGE, 0);
        let mut bytes = vec![1u8; low.bytes];
        m.memory.read_virtual(low.va, &mut bytes).unwrap();
        assert!(bytes.iter().all(|&b| b == 0), "the port's buffer is zeroed");
        // Over the memory model's fill (AllocateCommonBuffer's memory is not zeroed).
        let raw = m.memory.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "raw").unwrap();
        let mut word = [0u8; 4];
        m.memory.read_virtual(raw.va, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), crate::memory::CONTIGUOUS_FILL);
        assert!(m.memory.free(raw.id));
        assert!(m.memory.iommu().covers(low.logical, low.bytes as u64));
        m.memory.dma_write(low.logical + 8, &[1, 2]).unwrap();
        m.memory.read_virtual(low.va, &mut bytes[..10]).unwrap();
        assert_eq!(bytes[9], 2);
        a32.free_common_buffer(low);
        assert!(!m.memory.iommu().covers(low.logical, 1));
        a64.free_common_buffer(high);
        a32.free_common_buffer(high);
        assert_eq!(m.violations.take().len(), 1);
        a32.put();
        a64.put();
        assert!(m.memory.leaks().is_empty());
    }

    #[test]
    fn common_buffer_rules_irql_and_fault_injection() {
        let m = machine(MemoryConfig { contiguous_failure: Some(ContiguousFailure::Nth(2)), ..MemoryConfig::default() });
        let a = adapter(&m, false, 8);
        let one = a.allocate_common_buffer(PAGE_SIZE).unwrap();
        assert!(a.allocate_common_buffer(PAGE_SIZE).is_none());
        assert_eq!(a.stats().common_buffer_failures, 1);
        let old = m.irql.raise(DISPATCH_LEVEL);
        let two = a.allocate_common_buffer(PAGE_SIZE);
        m.irql.lower(old);
        assert_eq!(m.violations.count(ViolationKind::Irql), 1);
        a.free_common_buffer(one);
        if let Some(two) = two {
            a.free_common_buffer(two);
        }
        a.put();
        assert!(m.memory.leaks().is_empty());
    }

    #[test]
    fn from_raw_finds_the_adapter_and_irql_is_checked() {
        let m = machine(MemoryConfig::default());
        let a = adapter(&m, true, 0);
        let b = SimDmaAdapter::from_raw(a.raw()).unwrap();
        assert_eq!(b.id(), a.id());
        assert!(SimDmaAdapter::from_raw(std::ptr::null_mut()).is_none());
        let buf = m.memory.allocate_scattered(PAGE_SIZE, "frame").unwrap();
        let old = m.irql.raise(DEVICE_LEVEL);
        let list = a.get_scatter_gather_list(buf.va, 16).unwrap();
        m.irql.lower(old);
        assert_eq!(m.violations.count(ViolationKind::Irql), 1);
        b.put_scatter_gather_list(&list);
        assert!(m.memory.free(buf.id));
        a.put();
        assert!(SimDmaAdapter::from_raw(b.raw()).is_none());
    }

    #[test]
    fn thirty_two_bit_adapter_without_high_memory_needs_no_bounce() {
        let m = machine(MemoryConfig { high_memory: false, ..MemoryConfig::default() });
        let a = adapter(&m, false, 4);
        let buf = m.memory.allocate_scattered(32 * PAGE_SIZE, "frame").unwrap();
        let list = a.get_scatter_gather_list(buf.va, buf.bytes).unwrap();
        assert!(list.bounced.is_empty());
        a.put_scatter_gather_list(&list);
        assert!(m.memory.free(buf.id));
        a.put();
        assert!(m.memory.leaks().is_empty());
        assert!(m.violations.is_empty());
    }
}
