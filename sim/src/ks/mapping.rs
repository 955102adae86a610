//! Where KS gets a frame's mappings (`KSPIN_FLAG_GENERATE_MAPPINGS`): the
//! adapter the minidriver registered with `KsDeviceRegisterAdapterObject`.
//!
//! Two kinds ([`MappingSource`]):
//! * the simulator's own [`SimDmaAdapter`] (the bus core's adapter, from
//!   `crate::pnp::PciFunction`), whose scatter/gather lists carry physical
//!   addresses (bounced below 4 GiB for a 32-bit adapter);
//! * a [`DomainMapper`]: the DMA adapter the bus *image* got from the
//!   emulated kernel's `IoGetDmaAdapter`, with its DMA-remapping domain.
//!   As `GetScatterGatherList` does on a machine with DMA remapping, the
//!   frame's pages are mapped at a fresh logical range of the adapter's
//!   domain (so the list is one element of contiguous logical addresses,
//!   split at `MaxMappingByteCount` by KS), one map register per page; a
//!   transfer needing more map registers than the `NumberOfMapRegisters`
//!   `IoGetDmaAdapter` granted is refused with `STATUS_INSUFFICIENT_RESOURCES`,
//!   as the `GetScatterGatherList` page says. The translation lives in the
//!   IOMMU's page table, so transfers do not compete for a pool of map
//!   registers (no bounce buffers). `PutScatterGatherList` unmaps them.
//!   ("`PGET_SCATTER_GATHER_LIST` callback function (wdm.h)",
//!   "`IoGetDmaAdapter` function (wdm.h)".)

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::rc::Rc;

use capdma_interface::status::{
    NtStatus, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER,
};
use capdma_interface::table::SgElement;

use crate::dma::adapter::{ScatterGatherList, SgListId, SimDmaAdapter};
use crate::dma::{DmaDomain, RangeId, RangeKind};
use crate::memory::{PhysicalMemory, PAGE_SIZE};
use crate::violations::{ViolationKind, Violations};

const PAGE: u64 = PAGE_SIZE as u64;

/// The adapter KS builds a pin's mappings with.
#[derive(Clone, Debug)]
pub enum MappingSource {
    /// The simulator's adapter (physical addresses).
    Adapter(SimDmaAdapter),
    /// An emulated kernel adapter's DMA-remapping domain (logical addresses).
    Domain(DomainMapper),
}

impl MappingSource {
    /// The source behind the raw `PDMA_ADAPTER` a minidriver registered
    /// (`KsDeviceRegisterAdapterObject`): a live [`SimDmaAdapter`] or a
    /// [`DomainMapper`] made by [`DomainMapper::register`]. `None` for any
    /// other pointer.
    #[must_use]
    pub fn from_raw(raw: *mut c_void) -> Option<Self> {
        SimDmaAdapter::from_raw(raw)
            .map(Self::Adapter)
            .or_else(|| DomainMapper::from_raw(raw).map(Self::Domain))
    }

    /// `GetScatterGatherList` for a device-to-memory transfer into the
    /// `bytes` bytes at host address `va` (a live allocation).
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the map registers it needs are
    /// not free now (KS waits and retries); `STATUS_INVALID_PARAMETER` for
    /// memory that is not one live allocation; `STATUS_INVALID_DEVICE_REQUEST`
    /// on an adapter already put.
    pub fn get_scatter_gather_list(
        &self,
        va: *mut u8,
        bytes: usize,
    ) -> Result<ScatterGatherList, NtStatus> {
        match self {
            Self::Adapter(a) => a.get_scatter_gather_list(va, bytes),
            Self::Domain(d) => d.get_scatter_gather_list(va, bytes),
        }
    }

    /// The most map registers (pages) one transfer may need: the
    /// `NumberOfMapRegisters` `IoGetDmaAdapter` granted, for a source that
    /// refuses a longer transfer (a [`DomainMapper`]). `None` for the
    /// simulator's adapter, whose map registers are bounce pages only a
    /// 32-bit transfer above 4 GiB takes (shared by all its transfers).
    #[must_use]
    pub fn map_register_grant(&self) -> Option<u32> {
        match self {
            Self::Adapter(_) => None,
            Self::Domain(d) => Some(d.inner.map_registers),
        }
    }

    /// `PutScatterGatherList` of a list this source built.
    pub fn put_scatter_gather_list(&self, list: &ScatterGatherList) {
        match self {
            Self::Adapter(a) => a.put_scatter_gather_list(list),
            Self::Domain(d) => d.put_scatter_gather_list(list),
        }
    }
}

/// One list built and not yet put.
#[derive(Debug)]
struct LiveList {
    /// Logical address the pages are mapped at (page-aligned).
    logical: u64,
    /// Map registers held (pages).
    pages: u32,
    /// The pieces registered with the machine-wide (physical) checker.
    ranges: Vec<RangeId>,
}

#[derive(Debug)]
struct Inner {
    /// The guest `DMA_ADAPTER` address (for messages and the registry).
    adapter: u64,
    domain: DmaDomain,
    memory: PhysicalMemory,
    violations: Violations,
    /// `NumberOfMapRegisters` granted.
    map_registers: u32,
    in_use: Cell<u32>,
    put: Cell<bool>,
    /// A transfer larger than the grant was refused (reported once).
    refused: Cell<bool>,
    next_list: Cell<u64>,
    lists: RefCell<BTreeMap<u64, LiveList>>,
}

/// Scatter/gather lists of an emulated kernel adapter, through its
/// DMA-remapping domain (a cheap `Clone` handle).
#[derive(Clone, Debug)]
pub struct DomainMapper {
    inner: Rc<Inner>,
}

thread_local! {
    /// Mappers by the address of their `Inner` (what `from_raw` is given).
    static MAPPERS: RefCell<HashMap<usize, DomainMapper>> = RefCell::new(HashMap::new());
}

impl DomainMapper {
    /// A mapper for the adapter at guest address `adapter` whose domain is
    /// `domain`, granted `map_registers`, over `memory` (the guest RAM),
    /// registered for [`MappingSource::from_raw`] until [`DomainMapper::retire`].
    /// Returns the raw pointer that stands for it.
    #[must_use]
    pub fn register(
        adapter: u64,
        domain: DmaDomain,
        map_registers: u32,
        memory: &PhysicalMemory,
    ) -> *mut c_void {
        let mapper = Self {
            inner: Rc::new(Inner {
                adapter,
                domain,
                memory: memory.clone(),
                violations: memory.violations().clone(),
                map_registers,
                in_use: Cell::new(0),
                put: Cell::new(false),
                refused: Cell::new(false),
                next_list: Cell::new(0),
                lists: RefCell::new(BTreeMap::new()),
            }),
        };
        let raw = Rc::as_ptr(&mapper.inner).cast_mut().cast::<c_void>();
        MAPPERS.with(|m| m.borrow_mut().insert(raw as usize, mapper));
        raw
    }

    /// The mapper registered under `raw`, if it is still registered.
    #[must_use]
    pub fn from_raw(raw: *mut c_void) -> Option<Self> {
        MAPPERS.with(|m| m.borrow().get(&(raw as usize)).cloned())
    }

    /// The registered mapper of guest adapter `adapter`, if any.
    #[must_use]
    pub fn find(adapter: u64) -> Option<(*mut c_void, Self)> {
        MAPPERS.with(|m| {
            m.borrow()
                .iter()
                .find(|(_, d)| d.inner.adapter == adapter && !d.inner.put.get())
                .map(|(raw, d)| (*raw as *mut c_void, d.clone()))
        })
    }

    /// The adapter was put (`PutDmaAdapter`): the mapper is unregistered and
    /// refuses further lists. Returns one line per list still live (each a
    /// leak: KS must put every list before the adapter goes).
    #[must_use = "the lists still live are leaks"]
    pub fn retire(&self) -> Vec<String> {
        self.inner.put.set(true);
        let raw = Rc::as_ptr(&self.inner) as usize;
        MAPPERS.with(|m| m.borrow_mut().remove(&raw));
        self.leaks()
    }

    /// One line per list built and not put.
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        self.inner
            .lists
            .borrow()
            .iter()
            .map(|(id, l)| {
                format!(
                    "DMA adapter {:#x}: S/G list #{id} at logical {:#x} ({} map registers) not put",
                    self.inner.adapter, l.logical, l.pages
                )
            })
            .collect()
    }

    /// Map registers held by live lists (pages mapped).
    #[must_use]
    pub fn map_registers_in_use(&self) -> u32 {
        self.inner.in_use.get()
    }

    fn get_scatter_gather_list(
        &self,
        va: *mut u8,
        bytes: usize,
    ) -> Result<ScatterGatherList, NtStatus> {
        let inner = &*self.inner;
        if inner.put.get() {
            inner.violations.push(
                ViolationKind::Dma,
                format!(
                    "GetScatterGatherList on DMA adapter {:#x} after PutDmaAdapter",
                    inner.adapter
                ),
            );
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        let Some((alloc, offset)) = inner
            .memory
            .allocation_at(va)
            .filter(|(a, o)| bytes > 0 && o + bytes <= a.bytes)
        else {
            inner.violations.push(
                ViolationKind::Dma,
                format!("GetScatterGatherList on {va:p} ({bytes} bytes): not one live allocation"),
            );
            return Err(STATUS_INVALID_PARAMETER);
        };
        let first = offset / PAGE_SIZE;
        let last = (offset + bytes - 1) / PAGE_SIZE;
        let pages = &alloc.page_addresses[first..=last];
        let need = u32::try_from(pages.len()).unwrap_or(u32::MAX);
        if need > inner.map_registers {
            if !inner.refused.replace(true) {
                inner.violations.push(
                ViolationKind::Dma,
                format!(
                    "GetScatterGatherList of {bytes} bytes on DMA adapter {:#x} needs {need} map registers, more than the {} IoGetDmaAdapter granted",
                        inner.adapter, inner.map_registers
                    ),
                );
            }
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        let id = inner.next_list.get() + 1;
        inner.next_list.set(id);
        let label = format!("S/G list #{id} of DMA adapter {:#x}", inner.adapter);
        let in_page = (offset % PAGE_SIZE) as u64;
        let Some(logical) = inner.domain.map(
            pages,
            in_page + bytes as u64,
            RangeKind::ScatterGather,
            &label,
        ) else {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        };
        // The machine-wide checker is keyed by physical address: the same
        // pieces, so the translated writes pass it too.
        let mut ranges = Vec::with_capacity(pages.len());
        let mut left = bytes as u64;
        let mut start = in_page;
        for &page in pages {
            let n = (PAGE - start).min(left);
            ranges.push(inner.memory.iommu().register(
                page + start,
                n,
                RangeKind::ScatterGather,
                &label,
            ));
            left -= n;
            start = 0;
        }
        inner.in_use.set(inner.in_use.get() + need);
        inner.lists.borrow_mut().insert(
            id,
            LiveList {
                logical,
                pages: need,
                ranges,
            },
        );
        Ok(ScatterGatherList {
            id: SgListId(id),
            adapter: inner.adapter,
            va,
            bytes,
            elements: vec![SgElement {
                logical_address: logical + in_page,
                byte_count: u32::try_from(bytes).unwrap_or(u32::MAX),
                alignment: 0,
            }],
            bounced: Vec::new(),
        })
    }

    fn put_scatter_gather_list(&self, list: &ScatterGatherList) {
        let inner = &*self.inner;
        let live = if list.adapter == inner.adapter {
            inner.lists.borrow_mut().remove(&list.id.0)
        } else {
            None
        };
        let Some(live) = live else {
            inner.violations.push(
                ViolationKind::Dma,
                format!("PutScatterGatherList of S/G list #{} on DMA adapter {:#x}: not a live list of it", list.id.0, inner.adapter),
            );
            return;
        };
        if inner.domain.unmap(live.logical).is_none() {
            inner.violations.push(
                ViolationKind::Dma,
                format!(
                    "S/G list #{}: logical {:#x} was not mapped",
                    list.id.0, live.logical
                ),
            );
        }
        for r in live.ranges {
            inner.memory.iommu().unregister(r);
        }
        inner
            .in_use
            .set(inner.in_use.get().saturating_sub(live.pages));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryConfig;

    fn rig(map_registers: u32) -> (PhysicalMemory, DmaDomain, *mut c_void) {
        let memory = PhysicalMemory::new(MemoryConfig::default(), Violations::new());
        let domain = DmaDomain::new("test domain", 64 << 30, 4 << 30);
        let raw = DomainMapper::register(
            0xFFFF_F800_0000_1000,
            domain.clone(),
            map_registers,
            &memory,
        );
        (memory, domain, raw)
    }

    #[test]
    fn a_list_is_one_logical_run_the_device_reaches_until_put() {
        let (memory, domain, raw) = rig(64);
        let source = MappingSource::from_raw(raw).expect("registered");
        let alloc = memory.allocate_scattered(5 * PAGE_SIZE, "frame").unwrap();
        let va = alloc.va.wrapping_add(100);
        let list = source.get_scatter_gather_list(va, 3 * PAGE_SIZE).unwrap();
        assert_eq!(list.elements.len(), 1);
        let e = list.elements[0];
        assert!(
            e.logical_address >= 64 << 30,
            "a logical address of the domain"
        );
        assert_eq!(e.logical_address % PAGE, 100);
        // The device writes across page boundaries; the bytes land in the
        // scattered pages behind the host view.
        let data: Vec<u8> = (0..3 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        domain.dma_write(&memory, e.logical_address, &data).unwrap();
        // SAFETY: `va` + 3 pages lies inside the live 5-page allocation.
        let seen = unsafe { std::slice::from_raw_parts(va, data.len()) };
        assert_eq!(seen, &data[..]);
        let Some(MappingSource::Domain(d)) = MappingSource::from_raw(raw) else {
            panic!("domain mapper")
        };
        assert_eq!(
            d.map_registers_in_use(),
            4,
            "100 bytes in, 3 pages long: 4 pages"
        );
        source.put_scatter_gather_list(&list);
        assert_eq!(d.map_registers_in_use(), 0);
        assert!(
            domain.dma_write(&memory, e.logical_address, &[1]).is_err(),
            "unmapped after the put"
        );
        assert!(d.retire().is_empty());
        assert!(MappingSource::from_raw(raw).is_none(), "retired");
        memory.free(alloc.id);
        assert!(
            memory.violations().is_empty(),
            "{:?}",
            memory.violations().list()
        );
    }

    #[test]
    fn a_transfer_larger_than_the_grant_is_refused_and_transfers_do_not_compete() {
        let (memory, _domain, raw) = rig(4);
        let source = MappingSource::from_raw(raw).unwrap();
        let alloc = memory.allocate_scattered(8 * PAGE_SIZE, "frames").unwrap();
        let a = source
            .get_scatter_gather_list(alloc.va, 3 * PAGE_SIZE)
            .unwrap();
        // 3 + 2 pages live at once: each transfer is within the grant.
        let b = source
            .get_scatter_gather_list(alloc.va.wrapping_add(4 * PAGE_SIZE), 2 * PAGE_SIZE)
            .unwrap();
        assert!(memory.violations().is_empty());
        let big = source.get_scatter_gather_list(alloc.va, 5 * PAGE_SIZE);
        assert_eq!(
            big.unwrap_err(),
            STATUS_INSUFFICIENT_RESOURCES,
            "5 pages > 4 map registers"
        );
        assert_eq!(
            memory.violations().count(ViolationKind::Dma),
            1,
            "and said why"
        );
        source.put_scatter_gather_list(&a);
        let MappingSource::Domain(d) = &source else {
            panic!()
        };
        assert_eq!(d.map_registers_in_use(), 2);
        assert_eq!(d.retire().len(), 1, "the list not put is reported");
        source.put_scatter_gather_list(&b);
        memory.free(alloc.id);
    }
}
