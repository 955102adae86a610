//! Simulated physical memory: RAM of 4 KiB page frames, backed by host memory.
//!
//! Models what the Windows memory manager gives a driver:
//!
//! * [`PhysicalMemory::allocate_scattered`]: a buffer that is virtually
//!   contiguous but whose pages sit at pseudo-random physical frames (an
//!   application's frame buffer probed and locked by `MmProbeAndLockPages`),
//!   with some runs of physically adjacent pages, above 4 GiB when the
//!   machine has memory there;
//! * [`PhysicalMemory::allocate_contiguous`]: physically contiguous memory
//!   below a highest acceptable address (`MmAllocateContiguousMemorySpecifyCache`,
//!   what `AllocateCommonBuffer` uses), which fault injection can make fail;
//! * `MmGetPhysicalAddress` ([`PhysicalMemory::physical_address`]) and the
//!   reverse lookup;
//! * the board's bus-master accesses ([`PhysicalMemory::dma_write`],
//!   [`PhysicalMemory::dma_read`]), which go through the [`IommuChecker`].
//!
//! The physical address map is that of a PC: nothing below 1 MiB is handed
//! out (so address 0 is never valid), RAM runs from 1 MiB up to 3 GiB, the
//! range `[3 GiB, 4 GiB)` is the PCI hole, and RAM beyond 3 GiB continues at
//! 4 GiB when the machine has high memory.
//!
//! Host memory: every allocation is one page-aligned, zeroed host block
//! (`std::alloc::alloc_zeroed`); its address is the allocation's virtual
//! address and stays valid until [`PhysicalMemory::free`] or until the last
//! handle to the memory is dropped. [`host`] holds the Linux host-memory
//! primitives (memfd, views of page runs, hole punching, the mapping
//! budget), which the simulator needs: other hosts get a compile error.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "capdma-sim needs Linux: its physical memory is a memfd (memfd_create, MAP_SHARED views, fallocate PUNCH_HOLE) that a KVM guest can share"
);

pub mod host;

use crate::dma::iommu::{DmaFault, IommuChecker};
use crate::violations::{ViolationKind, Violations};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

// Physical addresses are u64 and host sizes usize; the simulator converts
// between them with `as`, which is lossless only on 64-bit hosts.
const _: () = assert!(usize::BITS == 64, "capdma-sim needs a 64-bit host");

/// Bytes in a page (`PAGE_SIZE` on x64).
pub const PAGE_SIZE: usize = 4096;
const PAGE: u64 = PAGE_SIZE as u64;
/// 4 GiB: the first address a 32-bit bus master cannot drive.
pub const FOUR_GIB: u64 = 1 << 32;
/// First physical address handed out (below is firmware and legacy areas).
pub const RAM_START: u64 = 1 << 20;
/// Start of the PCI hole; RAM resumes at [`FOUR_GIB`].
pub const PCI_HOLE_START: u64 = 3 << 30;
/// Largest single allocation, bytes (1 GiB): a sanity limit on requests.
pub const MAX_ALLOCATION: usize = 1 << 30;

/// How `allocate_contiguous` fails on purpose (fault injection: "contiguous
/// memory is fragmented").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContiguousFailure {
    /// Every contiguous allocation fails.
    Always,
    /// The first `n` succeed, every later one fails.
    AfterSuccesses(u32),
    /// Only the `n`-th (1-based) fails.
    Nth(u32),
}

/// The machine's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Seed of the page placement (same seed, same physical addresses).
    pub seed: u64,
    /// The machine has RAM above 4 GiB (scattered pages and 64-bit common
    /// buffers land there). Without it RAM is capped at the PCI hole (3 GiB).
    pub high_memory: bool,
    /// Bytes of RAM (rounded down to pages). With `high_memory`, what lies
    /// beyond 3 GiB is placed from 4 GiB on.
    pub ram_bytes: u64,
    /// Fault injection for [`PhysicalMemory::allocate_contiguous`].
    pub contiguous_failure: Option<ContiguousFailure>,
}

impl Default for MemoryConfig {
    /// 16 GiB of RAM with high memory, seed 1, no injected failures.
    fn default() -> Self {
        Self { seed: 1, high_memory: true, ram_bytes: 16 << 30, contiguous_failure: None }
    }
}

/// Identifies one allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

impl fmt::Display for AllocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How an allocation's pages are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationKind {
    /// Pages at scattered physical frames.
    Scattered,
    /// One physically contiguous run.
    Contiguous,
}

/// A live allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Its id (for [`PhysicalMemory::free`]).
    pub id: AllocationId,
    /// Host (= simulated kernel virtual) address, page-aligned, virtually
    /// contiguous over `bytes`, zero-filled at allocation. Valid until freed.
    pub va: *mut u8,
    /// Bytes requested.
    pub bytes: usize,
    /// Physical address of each 4 KiB page, in virtual order.
    pub page_addresses: Vec<u64>,
    /// Placement.
    pub kind: AllocationKind,
}

impl Allocation {
    /// Physical address of byte `offset` (`MmGetPhysicalAddress(va + offset)`),
    /// `None` past the end.
    #[must_use]
    pub fn physical_address(&self, offset: usize) -> Option<u64> {
        if offset >= self.bytes {
            return None;
        }
        self.page_addresses.get(offset / PAGE_SIZE).map(|pa| pa + (offset % PAGE_SIZE) as u64)
    }

    /// Number of 4 KiB pages.
    #[must_use]
    pub fn pages(&self) -> usize {
        self.page_addresses.len()
    }
}

/// Why an allocation or CPU access failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// Zero bytes requested.
    ZeroBytes,
    /// More than [`MAX_ALLOCATION`] bytes requested.
    TooLarge(usize),
    /// An alignment that is not a power of two.
    BadAlignment(usize),
    /// No free physical frames (for the placement asked for).
    OutOfMemory,
    /// The host refused the backing allocation.
    HostAllocationFailed(usize),
    /// A physical address that is not inside any live allocation.
    NotAllocated(u64),
    /// The access was refused by the IOMMU checker.
    Dma(DmaFault),
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroBytes => write!(f, "zero-byte allocation"),
            Self::TooLarge(n) => write!(f, "allocation of {n} bytes exceeds the {MAX_ALLOCATION}-byte limit"),
            Self::BadAlignment(a) => write!(f, "alignment {a} is not a power of two"),
            Self::OutOfMemory => write!(f, "no free physical memory for the request"),
            Self::HostAllocationFailed(n) => write!(f, "host allocation of {n} bytes failed"),
            Self::NotAllocated(pa) => write!(f, "physical address {pa:#x} is not allocated"),
            Self::Dma(fault) => write!(f, "DMA fault: {fault}"),
        }
    }
}

impl std::error::Error for MemoryError {}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Live allocations.
    pub live_allocations: usize,
    /// Bytes of live allocations (as requested).
    pub live_bytes: usize,
    /// Scattered allocations made.
    pub scattered_allocations: u64,
    /// Contiguous allocations made.
    pub contiguous_allocations: u64,
    /// Contiguous allocations that failed (injected or no room).
    pub contiguous_failures: u64,
    /// Frees.
    pub frees: u64,
    /// Bytes written by bus-master DMA.
    pub dma_bytes_written: u64,
    /// Bytes read by bus-master DMA.
    pub dma_bytes_read: u64,
    /// DMA accesses refused by the checker.
    pub dma_faults: u64,
}

/// A live allocation with who made it.
#[derive(Clone, Debug)]
pub struct AllocationInfo {
    /// The allocation.
    pub allocation: Allocation,
    /// Owner label given at allocation.
    pub owner: String,
}

#[derive(Debug)]
struct Record {
    alloc: Allocation,
    layout: Layout,
    owner: String,
}

#[derive(Debug)]
struct State {
    rng: ChaCha8Rng,
    /// RAM regions as `[first_frame, end_frame)`.
    regions: Vec<(u64, u64)>,
    used: BTreeSet<u64>,
    /// frame -> (allocation id, page index)
    frames: HashMap<u64, (AllocationId, usize)>,
    allocations: BTreeMap<AllocationId, Record>,
    /// host va -> allocation id
    by_va: BTreeMap<usize, AllocationId>,
    next_id: u64,
    contiguous_attempts: u32,
    contiguous_failure: Option<ContiguousFailure>,
    stats: MemoryStats,
}

impl Drop for State {
    fn drop(&mut self) {
        for rec in self.allocations.values() {
            // SAFETY: `va` was returned by `alloc_zeroed(rec.layout)` and has
            // not been deallocated (freeing removes the record first).
            unsafe { dealloc(rec.alloc.va, rec.layout) };
        }
    }
}

/// The machine's physical memory (a cheap `Clone` handle).
#[derive(Clone, Debug)]
pub struct PhysicalMemory {
    state: Rc<RefCell<State>>,
    iommu: IommuChecker,
    violations: Violations,
}

fn pages_for(bytes: usize) -> usize {
    bytes.div_ceil(PAGE_SIZE)
}

impl PhysicalMemory {
    /// A machine's RAM as `config` says, recording into `violations`.
    #[must_use]
    pub fn new(config: MemoryConfig, violations: Violations) -> Self {
        let ram = config.ram_bytes / PAGE * PAGE;
        let low_end = (RAM_START + ram).min(PCI_HOLE_START);
        let mut regions = vec![(RAM_START / PAGE, low_end.max(RAM_START) / PAGE)];
        let beyond = (RAM_START + ram).saturating_sub(PCI_HOLE_START);
        if config.high_memory && beyond > 0 {
            regions.push((FOUR_GIB / PAGE, (FOUR_GIB + beyond) / PAGE));
        }
        regions.retain(|(a, b)| b > a);
        Self {
            state: Rc::new(RefCell::new(State {
                rng: ChaCha8Rng::seed_from_u64(config.seed),
                regions,
                used: BTreeSet::new(),
                frames: HashMap::new(),
                allocations: BTreeMap::new(),
                by_va: BTreeMap::new(),
                next_id: 0,
                contiguous_attempts: 0,
                contiguous_failure: config.contiguous_failure,
                stats: MemoryStats::default(),
            })),
            iommu: IommuChecker::new(),
            violations,
        }
    }

    /// The IOMMU checker every DMA access goes through.
    #[must_use]
    pub fn iommu(&self) -> &IommuChecker {
        &self.iommu
    }

    /// The violation list.
    #[must_use]
    pub fn violations(&self) -> &Violations {
        &self.violations
    }

    /// Address of the last byte of RAM (the end of the last range
    /// `MmGetPhysicalMemoryRanges` reports, minus one).
    #[must_use]
    pub fn highest_physical_address(&self) -> u64 {
        self.state.borrow().regions.iter().map(|r| r.1 * PAGE).max().unwrap_or(RAM_START) - 1
    }

    /// `true` when the machine has RAM at or above 4 GiB.
    #[must_use]
    pub fn has_memory_above_4gib(&self) -> bool {
        self.highest_physical_address() >= FOUR_GIB
    }

    /// Changes the contiguous-allocation fault injection (and restarts its count).
    pub fn set_contiguous_failure(&self, failure: Option<ContiguousFailure>) {
        let mut s = self.state.borrow_mut();
        s.contiguous_failure = failure;
        s.contiguous_attempts = 0;
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> MemoryStats {
        let s = self.state.borrow();
        let mut stats = s.stats;
        stats.live_allocations = s.allocations.len();
        stats.live_bytes = s.allocations.values().map(|r| r.alloc.bytes).sum();
        stats
    }

    /// Allocates `bytes` at scattered physical pages (an application frame
    /// buffer). Pages are placed at seeded pseudo-random frames anywhere in
    /// RAM (above 4 GiB too when the machine has high memory), in runs of
    /// 1 to 16 physically adjacent pages.
    ///
    /// # Errors
    /// [`MemoryError`] for zero or oversized requests, no free frames, or a
    /// failed host allocation.
    pub fn allocate_scattered(&self, bytes: usize, owner: &str) -> Result<Allocation, MemoryError> {
        check_size(bytes)?;
        let pages = pages_for(bytes);
        let mut frames = Vec::with_capacity(pages);
        {
            let mut s = self.state.borrow_mut();
            while frames.len() < pages {
                let want = pick_run_length(&mut s.rng).min(pages - frames.len());
                let Some(start) = place_run(&mut s, want) else {
                    for f in &frames {
                        s.used.remove(f);
                    }
                    return Err(MemoryError::OutOfMemory);
                };
                for f in start..start + want as u64 {
                    s.used.insert(f);
                    frames.push(f);
                }
            }
        }
        let result = self.commit(bytes, &frames, AllocationKind::Scattered, owner);
        if result.is_ok() {
            self.state.borrow_mut().stats.scattered_allocations += 1;
        }
        result
    }

    /// Allocates `bytes` of physically contiguous memory whose first byte is
    /// aligned to `alignment` bytes (a power of two; at least a page) and
    /// whose last byte lies below `max_address` (exclusive; e.g. [`FOUR_GIB`]
    /// for a 32-bit device). Placement is top-down, as Windows does.
    /// `None` when no such run is free or the configured
    /// [`ContiguousFailure`] says this attempt fails.
    #[must_use]
    pub fn allocate_contiguous(&self, bytes: usize, alignment: usize, max_address: u64, owner: &str) -> Option<Allocation> {
        self.allocate_contiguous_inner(bytes, alignment, max_address, owner, true).ok()
    }

    /// As [`PhysicalMemory::allocate_contiguous`], with the reason of a
    /// failure, and optionally exempt from fault injection (memory the
    /// simulated HAL reserves for itself, such as map-register bounce pages).
    ///
    /// # Errors
    /// [`MemoryError`] saying why.
    pub(crate) fn allocate_contiguous_inner(
        &self,
        bytes: usize,
        alignment: usize,
        max_address: u64,
        owner: &str,
        injectable: bool,
    ) -> Result<Allocation, MemoryError> {
        check_size(bytes)?;
        if !alignment.is_power_of_two() {
            return Err(MemoryError::BadAlignment(alignment));
        }
        let pages = pages_for(bytes) as u64;
        let align_frames = (alignment.max(PAGE_SIZE) / PAGE_SIZE) as u64;
        let start = {
            let mut s = self.state.borrow_mut();
            if injectable {
                s.contiguous_attempts += 1;
                let n = s.contiguous_attempts;
                let fail = match s.contiguous_failure {
                    None => false,
                    Some(ContiguousFailure::Always) => true,
                    Some(ContiguousFailure::AfterSuccesses(k)) => n > k,
                    Some(ContiguousFailure::Nth(k)) => n == k,
                };
                if fail {
                    s.stats.contiguous_failures += 1;
                    return Err(MemoryError::OutOfMemory);
                }
            }
            let limit = max_address / PAGE;
            let mut found = None;
            let mut regions = s.regions.clone();
            regions.sort_by(|a, b| b.cmp(a));
            for (first, end) in regions {
                let mut hi = end.min(limit);
                while found.is_none() && hi >= first + pages {
                    let start = (hi - pages) / align_frames * align_frames;
                    if start < first {
                        break;
                    }
                    match s.used.range(start..start + pages).next_back() {
                        Some(&busy) => hi = busy,
                        None => found = Some(start),
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            let Some(start) = found else {
                s.stats.contiguous_failures += 1;
                return Err(MemoryError::OutOfMemory);
            };
            for f in start..start + pages {
                s.used.insert(f);
            }
            start
        };
        let frames: Vec<u64> = (start..start + pages).collect();
        let result = self.commit(bytes, &frames, AllocationKind::Contiguous, owner);
        if result.is_ok() {
            self.state.borrow_mut().stats.contiguous_allocations += 1;
        }
        result
    }

    /// Backs reserved `frames` with host memory and records the allocation.
    fn commit(&self, bytes: usize, frames: &[u64], kind: AllocationKind, owner: &str) -> Result<Allocation, MemoryError> {
        let mut s = self.state.borrow_mut();
        let host_bytes = frames.len() * PAGE_SIZE;
        let Ok(layout) = Layout::from_size_align(host_bytes, PAGE_SIZE) else {
            for f in frames {
                s.used.remove(f);
            }
            return Err(MemoryError::TooLarge(bytes));
        };
        // SAFETY: `layout` has a non-zero size (bytes > 0 was checked) and a
        // power-of-two alignment.
        let va = unsafe { alloc_zeroed(layout) };
        if va.is_null() {
            for f in frames {
                s.used.remove(f);
            }
            return Err(MemoryError::HostAllocationFailed(host_bytes));
        }
        s.next_id += 1;
        let id = AllocationId(s.next_id);
        for (i, f) in frames.iter().enumerate() {
            s.frames.insert(*f, (id, i));
        }
        let alloc = Allocation { id, va, bytes, page_addresses: frames.iter().map(|f| f * PAGE).collect(), kind };
        s.by_va.insert(va as usize, id);
        s.allocations.insert(id, Record { alloc: alloc.clone(), layout, owner: owner.to_string() });
        Ok(alloc)
    }

    /// Frees an allocation (its host memory too). Freeing an id that is not
    /// live (a double free) is a violation; freeing memory some live DMA
    /// range still covers is a violation too (it is freed anyway).
    /// Returns whether the id was live.
    #[allow(clippy::must_use_candidate, reason = "freeing is the effect; a bad free is recorded as a violation")]
    pub fn free(&self, id: AllocationId) -> bool {
        let rec = {
            let mut s = self.state.borrow_mut();
            let Some(rec) = s.allocations.remove(&id) else {
                let known = id.0 <= s.next_id && id.0 != 0;
                drop(s);
                self.violations.push(
                    ViolationKind::Memory,
                    if known {
                        format!("allocation {id} freed twice")
                    } else {
                        format!("free of unknown allocation {id}")
                    },
                );
                return false;
            };
            for pa in &rec.alloc.page_addresses {
                s.frames.remove(&(pa / PAGE));
                s.used.remove(&(pa / PAGE));
            }
            s.by_va.remove(&(rec.alloc.va as usize));
            s.stats.frees += 1;
            rec
        };
        for pa in &rec.alloc.page_addresses {
            if let Some(range) = self.iommu.any_mapped(*pa, PAGE) {
                self.violations.push(
                    ViolationKind::Dma,
                    format!(
                        "allocation {id} ({}) freed while page {pa:#x} is still mapped for DMA by {} {}",
                        rec.owner,
                        range.kind.name(),
                        range.label
                    ),
                );
                break;
            }
        }
        // SAFETY: `va` came from `alloc_zeroed(layout)`; the record was removed
        // above, so it is deallocated exactly once.
        unsafe { dealloc(rec.alloc.va, rec.layout) };
        true
    }

    /// The live allocation `id`.
    #[must_use]
    pub fn allocation(&self, id: AllocationId) -> Option<Allocation> {
        self.state.borrow().allocations.get(&id).map(|r| r.alloc.clone())
    }

    /// The live allocation containing host address `va`, and `va`'s byte offset in it.
    #[must_use]
    pub fn allocation_at(&self, va: *const u8) -> Option<(Allocation, usize)> {
        let s = self.state.borrow();
        let addr = va as usize;
        let (&start, id) = s.by_va.range(..=addr).next_back()?;
        let rec = s.allocations.get(id)?;
        let offset = addr - start;
        (offset < rec.alloc.bytes).then(|| (rec.alloc.clone(), offset))
    }

    /// `MmGetPhysicalAddress(va)`: the physical address of the byte at host
    /// address `va`, `None` when `va` is not inside a live allocation.
    #[must_use]
    pub fn physical_address(&self, va: *const u8) -> Option<u64> {
        let s = self.state.borrow();
        let addr = va as usize;
        let (&start, id) = s.by_va.range(..=addr).next_back()?;
        let rec = s.allocations.get(id)?;
        let offset = addr - start;
        (offset < rec.alloc.bytes).then(|| rec.alloc.page_addresses[offset / PAGE_SIZE] + (offset % PAGE_SIZE) as u64)
    }

    /// The host address of physical byte `pa`, `None` when no live
    /// allocation holds its page.
    #[must_use]
    pub fn host_ptr(&self, pa: u64) -> Option<*mut u8> {
        let s = self.state.borrow();
        let &(id, index) = s.frames.get(&(pa / PAGE))?;
        let rec = s.allocations.get(&id)?;
        // The page is inside the host block: index < pages, offset < PAGE_SIZE.
        Some(rec.alloc.va.wrapping_add(index * PAGE_SIZE + (pa % PAGE) as usize))
    }

    /// Copies between host memory and the physical range starting at `pa`,
    /// page by page, after checking every page is allocated.
    fn copy_physical(&self, pa: u64, len: usize, mut f: impl FnMut(*mut u8, usize, usize)) -> Result<(), MemoryError> {
        let mut done = 0usize;
        let mut ptrs = Vec::new();
        while done < len {
            let at = pa + done as u64;
            let chunk = (PAGE_SIZE - (at % PAGE) as usize).min(len - done);
            let Some(ptr) = self.host_ptr(at) else {
                return Err(MemoryError::NotAllocated(at));
            };
            ptrs.push((ptr, done, chunk));
            done += chunk;
        }
        for (ptr, offset, chunk) in ptrs {
            f(ptr, offset, chunk);
        }
        Ok(())
    }

    /// CPU write of `data` to physical address `pa` (no IOMMU check; the CPU
    /// may touch any allocated memory). Nothing is written unless every byte
    /// is allocated.
    ///
    /// # Errors
    /// [`MemoryError::NotAllocated`] for the first byte no allocation holds.
    pub fn write_physical(&self, pa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.copy_physical(pa, data.len(), |ptr, offset, chunk| {
            let src = &data[offset..offset + chunk];
            // SAFETY: `ptr` points at `chunk` writable bytes inside one live
            // host page (checked by `copy_physical`); `src` is `chunk` bytes
            // long; `ptr::copy` allows the two to overlap.
            unsafe { std::ptr::copy(src.as_ptr(), ptr, chunk) };
        })
    }

    /// CPU read from physical address `pa` into `buf` (no IOMMU check).
    ///
    /// # Errors
    /// [`MemoryError::NotAllocated`] for the first byte no allocation holds.
    pub fn read_physical(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.copy_physical(pa, buf.len(), |ptr, offset, chunk| {
            let dst = &mut buf[offset..offset + chunk];
            // SAFETY: `ptr` points at `chunk` readable bytes of one live host
            // page (checked by `copy_physical`); `dst` is `chunk` bytes long;
            // `ptr::copy` allows the two to overlap.
            unsafe { std::ptr::copy(ptr, dst.as_mut_ptr(), chunk) };
        })
    }

    /// CPU read of `buf.len()` bytes at virtual address `va` (which must lie,
    /// with the whole range, inside one live allocation): a safe way for
    /// tests and verifiers to look at a frame buffer.
    ///
    /// # Errors
    /// [`MemoryError::NotAllocated`] (with the physical address of `va`, or
    /// 0 when `va` is not allocated at all) when the range is not inside one
    /// live allocation.
    pub fn read_virtual(&self, va: *const u8, buf: &mut [u8]) -> Result<(), MemoryError> {
        let src = self.virtual_range(va, buf.len())?;
        // SAFETY: `src` starts `buf.len()` readable bytes inside one live host
        // allocation (checked by `virtual_range`); `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// CPU write of `data` at virtual address `va` (the whole range inside
    /// one live allocation).
    ///
    /// # Errors
    /// As [`PhysicalMemory::read_virtual`].
    pub fn write_virtual(&self, va: *mut u8, data: &[u8]) -> Result<(), MemoryError> {
        let dst = self.virtual_range(va, data.len())?;
        // SAFETY: `dst` starts `data.len()` writable bytes inside one live
        // host allocation (checked by `virtual_range`); `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// The host pointer for `[va, va + len)` if it lies inside one live allocation.
    fn virtual_range(&self, va: *const u8, len: usize) -> Result<*mut u8, MemoryError> {
        let Some((alloc, offset)) = self.allocation_at(va) else {
            return Err(MemoryError::NotAllocated(0));
        };
        if offset + len > alloc.bytes {
            return Err(MemoryError::NotAllocated(alloc.physical_address(alloc.bytes - 1).unwrap_or(0) + 1));
        }
        Ok(alloc.va.wrapping_add(offset))
    }

    /// The board writes `data` at bus address `pa` (bus-master DMA). Every
    /// byte must be visible through the [`IommuChecker`] (a live S/G list,
    /// bounce page or common buffer) and backed by RAM; otherwise a
    /// violation is recorded and nothing is written.
    ///
    /// # Errors
    /// The refused access (the board then reports a DMA fault).
    pub fn dma_write(&self, pa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.dma_access(pa, data.len(), "write")?;
        self.write_physical(pa, data)?;
        self.state.borrow_mut().stats.dma_bytes_written += data.len() as u64;
        Ok(())
    }

    /// The board reads `buf.len()` bytes at bus address `pa` (descriptor
    /// fetch). Same checks as [`PhysicalMemory::dma_write`]; on a refusal
    /// `buf` is left unchanged.
    ///
    /// # Errors
    /// The refused access.
    pub fn dma_read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.dma_access(pa, buf.len(), "read")?;
        self.read_physical(pa, buf)?;
        self.state.borrow_mut().stats.dma_bytes_read += buf.len() as u64;
        Ok(())
    }

    fn dma_access(&self, pa: u64, len: usize, what: &str) -> Result<(), MemoryError> {
        let fail = |this: &Self, err: MemoryError| {
            this.state.borrow_mut().stats.dma_faults += 1;
            this.violations.push(ViolationKind::Dma, format!("board DMA {what} of {len} bytes at {pa:#x}: {err}"));
            Err(err)
        };
        if let Err(fault) = self.iommu.check(pa, len as u64) {
            return fail(self, MemoryError::Dma(fault));
        }
        // Mapped but not backed: a range registered over memory that was freed.
        let mut at = pa;
        let end = pa + len as u64;
        while at < end {
            if self.host_ptr(at).is_none() {
                return fail(self, MemoryError::NotAllocated(at));
            }
            at = (at / PAGE + 1) * PAGE;
        }
        Ok(())
    }

    /// Every live allocation, oldest first.
    #[must_use]
    pub fn live_allocations(&self) -> Vec<AllocationInfo> {
        self.state
            .borrow()
            .allocations
            .values()
            .map(|r| AllocationInfo { allocation: r.alloc.clone(), owner: r.owner.clone() })
            .collect()
    }

    /// One line per allocation still live (for the end-of-run leak check).
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        self.state
            .borrow()
            .allocations
            .values()
            .map(|r| {
                format!(
                    "memory: allocation {} ({:?}, {} bytes at physical {:#x}) of {} not freed",
                    r.alloc.id,
                    r.alloc.kind,
                    r.alloc.bytes,
                    r.alloc.page_addresses.first().copied().unwrap_or(0),
                    r.owner
                )
            })
            .collect()
    }
}

fn check_size(bytes: usize) -> Result<(), MemoryError> {
    if bytes == 0 {
        return Err(MemoryError::ZeroBytes);
    }
    if bytes > MAX_ALLOCATION {
        return Err(MemoryError::TooLarge(bytes));
    }
    Ok(())
}

/// Run lengths of physically adjacent pages: mostly single pages, some
/// short and some long runs.
fn pick_run_length(rng: &mut ChaCha8Rng) -> usize {
    let roll = rng.next_u32() % 100;
    if roll < 55 {
        1
    } else if roll < 85 {
        2 + (rng.next_u32() % 3) as usize
    } else {
        5 + (rng.next_u32() % 12) as usize
    }
}

/// Finds `run` free adjacent frames at a random place; falls back to a
/// scan. Does not mark them used.
fn place_run(s: &mut State, run: usize) -> Option<u64> {
    let run = run as u64;
    let total: u64 = s.regions.iter().map(|(a, b)| b - a).sum();
    if total == 0 {
        return None;
    }
    for _ in 0..64 {
        let mut pick = s.rng.next_u64() % total;
        for &(first, end) in &s.regions {
            let size = end - first;
            if pick < size {
                let start = first + pick;
                if start + run <= end && s.used.range(start..start + run).next().is_none() {
                    return Some(start);
                }
                break;
            }
            pick -= size;
        }
    }
    // Crowded: first fit from the bottom.
    for &(first, end) in &s.regions {
        let mut start = first;
        while start + run <= end {
            match s.used.range(start..start + run).next_back() {
                Some(&busy) => start = busy + 1,
                None => return Some(start),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::iommu::RangeKind;

    fn mem(config: MemoryConfig) -> (PhysicalMemory, Violations) {
        let v = Violations::new();
        (PhysicalMemory::new(config, v.clone()), v)
    }

    #[test]
    fn scattered_pages_are_spread_high_and_have_some_adjacent_runs() {
        let (m, v) = mem(MemoryConfig::default());
        let a = m.allocate_scattered(400 * PAGE_SIZE, "frame").unwrap();
        assert_eq!(a.pages(), 400);
        assert!(a.page_addresses.iter().any(|&pa| pa >= FOUR_GIB));
        assert!(a.page_addresses.iter().all(|&pa| pa >= RAM_START && !(PCI_HOLE_START..FOUR_GIB).contains(&pa)));
        let adjacent = a.page_addresses.windows(2).filter(|w| w[1] == w[0] + PAGE).count();
        assert!(adjacent > 20 && adjacent < 399, "adjacent pairs: {adjacent}");
        let distinct: BTreeSet<_> = a.page_addresses.iter().collect();
        assert_eq!(distinct.len(), 400);
        // Same seed, same placement.
        let (m2, _) = mem(MemoryConfig::default());
        assert_eq!(m2.allocate_scattered(400 * PAGE_SIZE, "frame").unwrap().page_addresses, a.page_addresses);
        assert!(m.free(a.id));
        assert!(v.is_empty());
    }

    #[test]
    fn without_high_memory_everything_is_below_the_hole() {
        let (m, _) = mem(MemoryConfig { high_memory: false, ..MemoryConfig::default() });
        assert!(!m.has_memory_above_4gib());
        let a = m.allocate_scattered(100 * PAGE_SIZE, "frame").unwrap();
        assert!(a.page_addresses.iter().all(|&pa| pa < PCI_HOLE_START));
        assert!(m.free(a.id));
    }

    #[test]
    fn contiguous_respects_alignment_and_limit_and_va_maps_back() {
        let (m, _) = mem(MemoryConfig::default());
        let a = m.allocate_contiguous(3 * PAGE_SIZE + 5, 64 * 1024, FOUR_GIB, "ring").unwrap();
        assert_eq!(a.page_addresses[0] % (64 * 1024), 0);
        assert!(*a.page_addresses.last().unwrap() + PAGE <= FOUR_GIB);
        assert!(a.page_addresses.windows(2).all(|w| w[1] == w[0] + PAGE));
        let b = m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, u64::MAX, "high").unwrap();
        assert!(b.page_addresses[0] >= FOUR_GIB);
        assert_eq!(m.physical_address(a.va.wrapping_add(100)), Some(a.page_addresses[0] + 100));
        assert_eq!(m.physical_address(a.va.wrapping_add(3 * PAGE_SIZE + 5)), None);
        m.write_virtual(a.va.wrapping_add(4095), &[7, 8]).unwrap();
        let mut two = [0u8; 2];
        m.read_physical(a.page_addresses[0] + 4095, &mut two).unwrap();
        assert_eq!(two, [7, 8]);
        assert!(m.read_virtual(a.va.wrapping_add(3 * PAGE_SIZE + 4), &mut two).is_err());
        m.read_virtual(a.va.wrapping_add(3 * PAGE_SIZE + 3), &mut two).unwrap();
        assert_eq!(m.host_ptr(a.page_addresses[1] + 7), Some(a.va.wrapping_add(PAGE_SIZE + 7)));
        assert!(m.free(a.id));
        assert!(m.free(b.id));
    }

    #[test]
    fn contiguous_failure_injection() {
        let (m, _) = mem(MemoryConfig { contiguous_failure: Some(ContiguousFailure::Nth(2)), ..MemoryConfig::default() });
        let a = m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "a").unwrap();
        assert!(m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "b").is_none());
        let c = m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "c").unwrap();
        m.set_contiguous_failure(Some(ContiguousFailure::Always));
        assert!(m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "d").is_none());
        assert_eq!(m.stats().contiguous_failures, 2);
        assert!(m.free(a.id) && m.free(c.id));
    }

    #[test]
    fn double_free_is_a_violation() {
        let (m, v) = mem(MemoryConfig::default());
        let a = m.allocate_scattered(10, "x").unwrap();
        assert!(m.free(a.id));
        assert!(!m.free(a.id));
        assert_eq!(v.count(ViolationKind::Memory), 1);
        assert!(v.list()[0].contains("freed twice"));
    }

    #[test]
    fn leak_report_lists_live_allocations() {
        let (m, _) = mem(MemoryConfig::default());
        let a = m.allocate_scattered(5000, "frame buffer 3").unwrap();
        let b = m.allocate_contiguous(100, PAGE_SIZE, FOUR_GIB, "CQ ch0").unwrap();
        assert!(m.free(a.id));
        let leaks = m.leaks();
        assert_eq!(leaks.len(), 1);
        assert!(leaks[0].contains("CQ ch0"), "{leaks:?}");
        assert!(m.free(b.id));
        assert!(m.leaks().is_empty());
    }

    #[test]
    fn dma_write_to_an_unmapped_page_is_flagged_and_not_written() {
        let (m, v) = mem(MemoryConfig::default());
        let a = m.allocate_scattered(2 * PAGE_SIZE, "frame").unwrap();
        let pa = a.page_addresses[1];
        assert!(m.dma_write(pa, &[1, 2, 3]).is_err());
        assert_eq!(v.count(ViolationKind::Dma), 1);
        let mut buf = [9u8; 3];
        m.read_physical(pa, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0]);
        // Mapped: the write lands.
        let id = m.iommu().register(pa, 3, RangeKind::ScatterGather, "test");
        m.dma_write(pa, &[1, 2, 3]).unwrap();
        m.read_physical(pa, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3]);
        // One byte beyond the mapped range: refused whole.
        assert!(m.dma_write(pa, &[7, 7, 7, 7]).is_err());
        m.read_physical(pa, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3]);
        // Freed while mapped.
        assert!(m.free(a.id));
        assert_eq!(v.count(ViolationKind::Dma), 3, "{:?}", v.list());
        assert!(m.iommu().unregister(id));
    }

    #[test]
    fn cpu_access_to_unallocated_memory_is_an_error() {
        let (m, _) = mem(MemoryConfig::default());
        let mut b = [0u8; 4];
        assert_eq!(m.read_physical(RAM_START, &mut b), Err(MemoryError::NotAllocated(RAM_START)));
        assert_eq!(m.allocate_scattered(0, "x").unwrap_err(), MemoryError::ZeroBytes);
    }
}
