//! The IOMMU-style DMA checker.
//!
//! Models what an IOMMU (DMA remapping, as Windows' DMA guard / Driver
//! Verifier's DMA verification enforce) allows a bus master to touch: only
//! byte ranges that are *currently* made visible to the device, i.e.
//!
//! * live common buffers (`AllocateCommonBuffer` .. `FreeCommonBuffer`),
//! * live scatter/gather lists (`GetScatterGatherList` /
//!   `BuildScatterGatherList` .. `PutScatterGatherList`),
//! * map-register bounce pages while the list that uses them is live.
//!
//! Every board access goes through [`IommuChecker::check`] (via
//! [`crate::memory::PhysicalMemory::dma_write`] / `dma_read`). Ranges are
//! tracked per 4 KiB page so a lookup costs O(pages touched); ranges may
//! overlap (the same page mapped by two lists) and coverage is their union.
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

const PAGE: u64 = 4096;

/// What made a range visible to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RangeKind {
    /// A common buffer (`AllocateCommonBuffer`).
    CommonBuffer,
    /// One element of a scatter/gather list (`GetScatterGatherList`).
    ScatterGather,
    /// A map-register bounce page in use by a scatter/gather list.
    BouncePage,
}

impl RangeKind {
    /// Name for messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::CommonBuffer => "common buffer",
            Self::ScatterGather => "S/G list element",
            Self::BouncePage => "map-register bounce page",
        }
    }
}

/// Identifies one registered range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeId(pub u64);

/// A range the device may currently access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveRange {
    /// The registration's id.
    pub id: RangeId,
    /// First logical (= physical) address, bytes.
    pub start: u64,
    /// Length in bytes.
    pub bytes: u64,
    /// What registered it.
    pub kind: RangeKind,
    /// Who registered it (adapter, list, buffer), for messages.
    pub label: String,
}

/// A device access to bytes that were not mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaFault {
    /// The first byte of the access that no live range covers.
    pub address: u64,
    /// Who last had that page mapped, if anyone (a hint for stale-address bugs).
    pub last_mapped_by: Option<String>,
}

impl fmt::Display for DmaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {:#x} is not mapped for DMA", self.address)?;
        if let Some(last) = &self.last_mapped_by {
            write!(f, " (its page was last mapped by {last})")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct Span {
    lo: u32,
    hi: u32,
    id: RangeId,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    ranges: HashMap<RangeId, LiveRange>,
    pages: HashMap<u64, Vec<Span>>,
    last_owner: HashMap<u64, String>,
    faults: u64,
}

/// The checker (a cheap `Clone` handle; one per machine).
#[derive(Clone, Debug, Default)]
pub struct IommuChecker {
    state: Rc<RefCell<State>>,
}

/// Calls `f(page, lo, hi)` for every page the range `[start, start + bytes)`
/// touches, with the byte interval `[lo, hi)` inside that page.
fn for_each_page(start: u64, bytes: u64, mut f: impl FnMut(u64, u32, u32)) {
    let Some(end) = start.checked_add(bytes) else {
        return;
    };
    let mut at = start;
    while at < end {
        let page = at / PAGE;
        let lo = at % PAGE;
        let hi = (end - page * PAGE).min(PAGE);
        f(page, lo as u32, hi as u32);
        at = page * PAGE + hi;
    }
}

impl IommuChecker {
    /// An empty checker: nothing is visible to devices.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `[start, start + bytes)` visible to the device. Zero bytes
    /// registers nothing visible but still returns an id.
    pub fn register(&self, start: u64, bytes: u64, kind: RangeKind, label: impl Into<String>) -> RangeId {
        let mut s = self.state.borrow_mut();
        s.next_id += 1;
        let id = RangeId(s.next_id);
        let bytes = bytes.min(u64::MAX - start);
        for_each_page(start, bytes, |page, lo, hi| {
            s.pages.entry(page).or_default().push(Span { lo, hi, id });
        });
        s.ranges.insert(id, LiveRange { id, start, bytes, kind, label: label.into() });
        id
    }

    /// Withdraws a registration. Returns `false` when `id` is not live.
    #[allow(clippy::must_use_candidate, reason = "unregistering is the effect; the result only reports a stale id")]
    pub fn unregister(&self, id: RangeId) -> bool {
        let mut s = self.state.borrow_mut();
        let Some(range) = s.ranges.remove(&id) else {
            return false;
        };
        let label = format!("{} {}", range.kind.name(), range.label);
        let mut touched = Vec::new();
        for_each_page(range.start, range.bytes, |page, _, _| touched.push(page));
        for page in touched {
            if let Some(spans) = s.pages.get_mut(&page) {
                spans.retain(|sp| sp.id != id);
                if spans.is_empty() {
                    s.pages.remove(&page);
                }
            }
            s.last_owner.insert(page, label.clone());
        }
        true
    }

    /// Checks that every byte of `[start, start + bytes)` is covered by a
    /// live range. Counts a fault when not. Zero bytes always pass.
    ///
    /// # Errors
    /// The first uncovered byte, as a [`DmaFault`].
    pub fn check(&self, start: u64, bytes: u64) -> Result<(), DmaFault> {
        if bytes == 0 {
            return Ok(());
        }
        let fault = {
            let s = self.state.borrow();
            if start.checked_add(bytes).is_none() {
                Some(DmaFault { address: u64::MAX, last_mapped_by: None })
            } else {
                let mut fault = None;
                for_each_page(start, bytes, |page, lo, hi| {
                    if fault.is_some() {
                        return;
                    }
                    if let Some(at) = first_uncovered(s.pages.get(&page).map_or(&[][..], Vec::as_slice), lo, hi) {
                        fault = Some(DmaFault {
                            address: page * PAGE + u64::from(at),
                            last_mapped_by: s.last_owner.get(&page).cloned(),
                        });
                    }
                });
                fault
            }
        };
        match fault {
            Some(f) => {
                self.state.borrow_mut().faults += 1;
                Err(f)
            }
            None => Ok(()),
        }
    }

    /// `true` when every byte of the range is visible (no fault counted).
    #[must_use]
    pub fn covers(&self, start: u64, bytes: u64) -> bool {
        let s = self.state.borrow();
        let mut ok = start.checked_add(bytes).is_some();
        for_each_page(start, bytes, |page, lo, hi| {
            ok &= first_uncovered(s.pages.get(&page).map_or(&[][..], Vec::as_slice), lo, hi).is_none();
        });
        ok
    }

    /// `true` when any byte of the page-aligned range `[start, start + bytes)`
    /// is still visible (used to catch memory freed while mapped).
    #[must_use]
    pub fn any_mapped(&self, start: u64, bytes: u64) -> Option<LiveRange> {
        let s = self.state.borrow();
        let mut found = None;
        for_each_page(start, bytes, |page, lo, hi| {
            if found.is_none() {
                if let Some(sp) = s.pages.get(&page).and_then(|v| v.iter().find(|sp| sp.lo < hi && sp.hi > lo)) {
                    found = s.ranges.get(&sp.id).cloned();
                }
            }
        });
        found
    }

    /// The live range with this id.
    #[must_use]
    pub fn range(&self, id: RangeId) -> Option<LiveRange> {
        self.state.borrow().ranges.get(&id).cloned()
    }

    /// Every live range, by id.
    #[must_use]
    pub fn live_ranges(&self) -> Vec<LiveRange> {
        let mut v: Vec<_> = self.state.borrow().ranges.values().cloned().collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Faults detected so far.
    #[must_use]
    pub fn faults(&self) -> u64 {
        self.state.borrow().faults
    }
}

/// The first offset in `[lo, hi)` no span covers.
fn first_uncovered(spans: &[Span], lo: u32, hi: u32) -> Option<u32> {
    let mut at = lo;
    loop {
        if at >= hi {
            return None;
        }
        // Extend `at` by any span that covers it; repeat until no span does.
        let next = spans.iter().filter(|sp| sp.lo <= at && sp.hi > at).map(|sp| sp.hi).max();
        match next {
            Some(n) => at = n,
            None => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_is_the_union_of_ranges() {
        let c = IommuChecker::new();
        let a = c.register(0x1000, 0x800, RangeKind::ScatterGather, "list 1");
        let b = c.register(0x1800, 0x1000, RangeKind::ScatterGather, "list 1");
        assert!(c.check(0x1000, 0x1800).is_ok());
        assert!(c.check(0x1400, 0x1000).is_ok());
        let f = c.check(0x0FFF, 2).unwrap_err();
        assert_eq!(f.address, 0x0FFF);
        let f = c.check(0x2000, 0x900).unwrap_err();
        assert_eq!(f.address, 0x2800);
        assert!(c.unregister(a));
        assert!(!c.unregister(a));
        let f = c.check(0x1000, 1).unwrap_err();
        assert!(f.last_mapped_by.unwrap().contains("list 1"));
        assert!(c.check(0x1800, 0x1000).is_ok());
        assert!(c.unregister(b));
        assert!(c.live_ranges().is_empty());
        assert_eq!(c.faults(), 3);
    }

    #[test]
    fn overlapping_registrations_keep_coverage_until_both_go() {
        let c = IommuChecker::new();
        let a = c.register(0x10_0000, 0x2000, RangeKind::CommonBuffer, "cq");
        let b = c.register(0x10_1000, 0x10, RangeKind::ScatterGather, "x");
        assert!(c.unregister(b));
        assert!(c.covers(0x10_1000, 0x10));
        assert!(c.any_mapped(0x10_1000, 0x1000).is_some());
        assert!(c.unregister(a));
        assert!(!c.covers(0x10_1000, 0x10));
        assert!(c.any_mapped(0x10_0000, 0x2000).is_none());
    }
}
