//! A DMA-remapping domain: the logical (bus) address space one device sees
//! through the IOMMU.
//!
//! With DMA remapping (Windows' Kernel DMA Protection / DMA guard, which
//! Driver Verifier's DMA verification also enforces), the `LogicalAddress`
//! `AllocateCommonBuffer` returns and the addresses of a scatter/gather
//! list are not physical addresses: they are addresses in the device's own
//! domain, which the IOMMU translates page by page. A device can reach
//! exactly what its domain maps, so one card cannot touch another card's
//! buffers, and an address that was never handed out (or was unmapped)
//! faults instead of landing somewhere in RAM.
//!
//! A domain hands out logical ranges from its own window (page-aligned,
//! each followed by an unmapped guard page), keeps the logical → physical
//! page table, and checks every device access with an [`IommuChecker`]
//! keyed by logical address. [`DmaDomain::dma_write`] / [`DmaDomain::dma_read`]
//! translate and then go through [`PhysicalMemory::dma_write`] /
//! [`PhysicalMemory::dma_read`], so the machine-wide checker (keyed by
//! physical address) and the memory's counters see the access too.
use crate::dma::iommu::{DmaFault, IommuChecker, LiveRange, RangeId, RangeKind};
use crate::memory::{MemoryError, PhysicalMemory};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

const PAGE: u64 = 4096;

/// One mapping of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapping {
    /// Physical address of each page, in logical order.
    pages: Vec<u64>,
    /// Bytes mapped from the first page's start.
    bytes: u64,
    range: RangeId,
}

#[derive(Debug)]
struct State {
    label: String,
    window_start: u64,
    window_end: u64,
    /// Where the search for a free range starts (then wraps to the window's start).
    first: u64,
    /// Live mappings by first logical address (page-aligned).
    maps: BTreeMap<u64, Mapping>,
    checker: IommuChecker,
    faults: u64,
}

impl State {
    /// The first free range of `need` bytes at or above `from` (first fit
    /// between the live mappings, each keeping its guard page).
    fn free_range(&self, from: u64, need: u64) -> Option<u64> {
        let mut at = from;
        for (&start, m) in &self.maps {
            let end = start + m.pages.len() as u64 * PAGE + PAGE;
            if end <= at {
                continue;
            }
            if start >= at + need {
                break;
            }
            at = end;
        }
        at.checked_add(need).is_some_and(|end| end <= self.window_end).then_some(at)
    }
}

/// A device's DMA-remapping domain (a cheap `Clone` handle).
#[derive(Clone, Debug)]
pub struct DmaDomain {
    state: Rc<RefCell<State>>,
}

impl DmaDomain {
    /// An empty domain named `label` whose logical addresses come from
    /// `[window_start, window_start + window_bytes)` (page-aligned; a
    /// 32-bit device's window lies below 4 GiB).
    #[must_use]
    pub fn new(label: impl Into<String>, window_start: u64, window_bytes: u64) -> Self {
        let start = window_start.next_multiple_of(PAGE);
        let end = window_start.saturating_add(window_bytes) / PAGE * PAGE;
        Self {
            state: Rc::new(RefCell::new(State {
                label: label.into(),
                window_start: start,
                window_end: end.max(start),
                first: start,
                maps: BTreeMap::new(),
                checker: IommuChecker::new(),
                faults: 0,
            })),
        }
    }

    /// The domain's name.
    #[must_use]
    pub fn label(&self) -> String {
        self.state.borrow().label.clone()
    }

    /// Maps the physical pages `pages` (page-aligned addresses, in order)
    /// at a fresh logical range and makes the first `bytes` bytes visible to
    /// the device. Returns the logical address of the first byte
    /// (page-aligned). The range is followed by an unmapped guard page.
    /// `None` when `pages` cannot hold `bytes`, `bytes` is zero, or the
    /// window has no free range that large.
    #[must_use = "the logical address is what the device must be given"]
    pub fn map(&self, pages: &[u64], bytes: u64, kind: RangeKind, label: &str) -> Option<u64> {
        if bytes == 0 || bytes > pages.len() as u64 * PAGE || pages.iter().any(|p| p % PAGE != 0) {
            return None;
        }
        let mut s = self.state.borrow_mut();
        let need = pages.len() as u64 * PAGE + PAGE;
        let at = s.free_range(s.first, need).or_else(|| s.free_range(s.window_start, need))?;
        let range = s.checker.register(at, bytes, kind, label);
        s.maps.insert(at, Mapping { pages: pages.to_vec(), bytes, range });
        Some(at)
    }

    /// Makes the search for free logical ranges start at `first` (inside
    /// the window; it wraps to the window's start when nothing fits above):
    /// domains that share a window then hand out different addresses while
    /// they have room, which makes a device using another's address fault
    /// instead of hitting its own buffer.
    #[must_use]
    pub fn starting_at(self, first: u64) -> Self {
        {
            let mut s = self.state.borrow_mut();
            s.first = first.next_multiple_of(PAGE).clamp(s.window_start, s.window_end);
        }
        self
    }

    /// Unmaps the mapping that starts at `logical`; returns its physical
    /// pages, or `None` when no mapping starts there.
    #[allow(clippy::must_use_candidate, reason = "unmapping is the effect")]
    pub fn unmap(&self, logical: u64) -> Option<Vec<u64>> {
        let mut s = self.state.borrow_mut();
        let m = s.maps.remove(&logical)?;
        s.checker.unregister(m.range);
        Some(m.pages)
    }

    /// The physical pieces `(physical address, bytes)` of the device access
    /// `[logical, logical + bytes)`, in order, when every byte is mapped.
    ///
    /// # Errors
    /// The first byte the domain does not map, as a [`DmaFault`] (counted).
    pub fn translate(&self, logical: u64, bytes: u64) -> Result<Vec<(u64, u64)>, DmaFault> {
        let mut s = self.state.borrow_mut();
        if let Err(fault) = s.checker.check(logical, bytes) {
            s.faults += 1;
            return Err(fault);
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = logical;
        let end = logical + bytes;
        while at < end {
            // Covered by the checker, so some mapping holds `at`.
            let Some((&start, m)) = s.maps.range(..=at).next_back() else {
                s.faults += 1;
                return Err(DmaFault { address: at, last_mapped_by: None });
            };
            let index = ((at - start) / PAGE) as usize;
            let Some(&page) = m.pages.get(index) else {
                s.faults += 1;
                return Err(DmaFault { address: at, last_mapped_by: None });
            };
            let n = (PAGE - at % PAGE).min(end - at);
            let pa = page + at % PAGE;
            match out.last_mut() {
                Some(last) if last.0 + last.1 == pa => last.1 += n,
                _ => out.push((pa, n)),
            }
            at += n;
        }
        Ok(out)
    }

    /// The device writes `data` at logical address `logical`: translated by
    /// this domain, then written with [`PhysicalMemory::dma_write`] piece by
    /// piece. Nothing is written when the domain does not map every byte.
    ///
    /// # Errors
    /// [`MemoryError::Dma`] for a byte the domain does not map; what
    /// `dma_write` refuses (the machine-wide checker, unbacked memory).
    pub fn dma_write(&self, memory: &PhysicalMemory, logical: u64, data: &[u8]) -> Result<(), MemoryError> {
        let pieces = self.translate(logical, data.len() as u64).map_err(MemoryError::Dma)?;
        let mut done = 0usize;
        for (pa, n) in pieces {
            memory.dma_write(pa, &data[done..done + n as usize])?;
            done += n as usize;
        }
        Ok(())
    }

    /// The device reads `buf.len()` bytes at logical address `logical`
    /// (translated as in [`DmaDomain::dma_write`]).
    ///
    /// # Errors
    /// As [`DmaDomain::dma_write`].
    pub fn dma_read(&self, memory: &PhysicalMemory, logical: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let pieces = self.translate(logical, buf.len() as u64).map_err(MemoryError::Dma)?;
        let mut done = 0usize;
        for (pa, n) in pieces {
            memory.dma_read(pa, &mut buf[done..done + n as usize])?;
            done += n as usize;
        }
        Ok(())
    }

    /// The live mappings, as ranges of logical addresses.
    #[must_use]
    pub fn live_ranges(&self) -> Vec<LiveRange> {
        self.state.borrow().checker.live_ranges()
    }

    /// Device accesses refused so far.
    #[must_use]
    pub fn faults(&self) -> u64 {
        self.state.borrow().faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryConfig, FOUR_GIB, PAGE_SIZE};
    use crate::violations::Violations;

    #[test]
    fn logical_addresses_translate_page_by_page_and_fault_outside() {
        let d = DmaDomain::new("card 0", 0x8000_0000, 0x10_0000);
        let pages = [0x20_0000, 0x7_0000, 0x7_1000];
        let logical = d.map(&pages, 3 * PAGE - 100, RangeKind::ScatterGather, "list").unwrap();
        assert_eq!(logical, 0x8000_0000);
        let pieces = d.translate(logical + 4000, 200).unwrap();
        assert_eq!(pieces, vec![(0x20_0000 + 4000, 96), (0x7_0000, 104)]);
        // Adjacent physical pages merge into one piece.
        assert_eq!(d.translate(logical + PAGE, 2 * PAGE - 100).unwrap(), vec![(0x7_0000, 2 * PAGE - 100)]);
        // The last 100 bytes of the last page are not mapped; nor is the guard page.
        assert_eq!(d.translate(logical + 3 * PAGE - 101, 2).unwrap_err().address, logical + 3 * PAGE - 100);
        assert!(d.translate(logical + 3 * PAGE, 1).is_err());
        // A second mapping skips the guard page; an unmapped one faults with a hint.
        let second = d.map(&[0x30_0000], 16, RangeKind::CommonBuffer, "ring").unwrap();
        assert_eq!(second, logical + 4 * PAGE);
        assert_eq!(d.unmap(logical), Some(pages.to_vec()));
        let fault = d.translate(logical, 1).unwrap_err();
        assert!(fault.last_mapped_by.unwrap().contains("list"));
        assert_eq!(d.faults(), 3);
        assert_eq!(d.live_ranges().len(), 1);
        // The freed range is reused first fit.
        assert_eq!(d.map(&[0x40_0000], PAGE, RangeKind::CommonBuffer, "again"), Some(logical));
    }

    #[test]
    fn refuses_bad_requests_and_a_full_window() {
        let d = DmaDomain::new("small", 0x1000, 4 * PAGE);
        assert_eq!(d.map(&[0x1000], 0, RangeKind::CommonBuffer, "x"), None);
        assert_eq!(d.map(&[0x1000], PAGE + 1, RangeKind::CommonBuffer, "x"), None);
        assert_eq!(d.map(&[0x1001], 1, RangeKind::CommonBuffer, "x"), None);
        let a = d.map(&[0x1000], 1, RangeKind::CommonBuffer, "a").unwrap();
        assert!(d.map(&[0x2000, 0x3000], 1, RangeKind::CommonBuffer, "b").is_none(), "no room for 2 pages + guard");
        assert!(d.map(&[0x2000], 1, RangeKind::CommonBuffer, "c").is_some());
        assert!(d.unmap(a).is_some());
        assert!(d.unmap(a).is_none());
    }

    #[test]
    fn the_search_starts_at_the_hint_and_wraps() {
        let d = DmaDomain::new("hinted", 0x10_0000, 8 * PAGE).starting_at(0x10_0000 + 5 * PAGE);
        assert_eq!(d.map(&[0x1000], 1, RangeKind::CommonBuffer, "a"), Some(0x10_0000 + 5 * PAGE));
        // No room for 2 pages + guard above the first: wraps to the window's start.
        assert_eq!(d.map(&[0x1000, 0x2000], 1, RangeKind::CommonBuffer, "b"), Some(0x10_0000));
        assert_eq!(d.map(&[0x1000], 1, RangeKind::CommonBuffer, "c"), Some(0x10_0000 + 3 * PAGE));
        assert_eq!(d.map(&[0x1000], 1, RangeKind::CommonBuffer, "d"), None);
    }

    #[test]
    fn device_accesses_land_in_physical_memory_and_domains_are_separate() {
        let violations = Violations::new();
        let memory = PhysicalMemory::new(MemoryConfig::default(), violations.clone());
        let buffer = memory.allocate_contiguous(2 * PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "ring").unwrap();
        let pa = buffer.page_addresses[0];
        let global = memory.iommu().register(pa, 2 * PAGE, RangeKind::CommonBuffer, "ring");
        let a = DmaDomain::new("card a", 0x8000_0000, 1 << 26);
        let b = DmaDomain::new("card b", 0x8400_0000, 1 << 26);
        let logical = a.map(&buffer.page_addresses, 2 * PAGE, RangeKind::CommonBuffer, "ring").unwrap();
        assert_ne!(logical, pa, "the logical address is not the physical one");
        a.dma_write(&memory, logical + PAGE - 2, &[1, 2, 3, 4]).unwrap();
        let mut back = [0u8; 4];
        memory.read_physical(pa + PAGE - 2, &mut back).unwrap();
        assert_eq!(back, [1, 2, 3, 4]);
        let mut read = [0u8; 4];
        a.dma_read(&memory, logical + PAGE - 2, &mut read).unwrap();
        assert_eq!(read, [1, 2, 3, 4]);
        // Card b has nothing at card a's logical address, nor at the physical one.
        assert!(matches!(b.dma_write(&memory, logical, &[9]), Err(MemoryError::Dma(_))));
        assert!(matches!(b.dma_write(&memory, pa, &[9]), Err(MemoryError::Dma(_))));
        assert_eq!(b.faults(), 2);
        memory.read_physical(pa, &mut back[..1]).unwrap();
        assert_ne!(back[0], 9);
        assert!(a.unmap(logical).is_some());
        assert!(memory.iommu().unregister(global));
        assert!(memory.free(buffer.id));
        assert!(violations.is_empty(), "{:?}", violations.list());
    }
}
