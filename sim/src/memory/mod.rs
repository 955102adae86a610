//! Simulated physical memory: RAM of 4 KiB page frames, backed by one
//! host file that a virtual machine can share.
//!
//! Models what the Windows memory manager gives a driver:
//!
//! * [`PhysicalMemory::allocate_scattered`]: a buffer that is virtually
//!   contiguous but whose pages sit at pseudo-random physical frames (an
//!   application's frame buffer probed and locked by `MmProbeAndLockPages`),
//!   with some runs of physically adjacent pages, above 4 GiB when the
//!   machine has memory there; zero-filled;
//! * [`PhysicalMemory::allocate_contiguous`]: physically contiguous memory
//!   below a highest acceptable address (`MmAllocateContiguousMemorySpecifyCache`,
//!   what `AllocateCommonBuffer` uses), which fault injection can make fail;
//!   **not** zeroed (Windows does not promise it): filled with
//!   [`CONTIGUOUS_FILL`];
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
//! # Host memory: one file
//!
//! The whole physical address space, `[0, highest_physical_address()]`
//! rounded up to a page, is one `memfd` (sparse: a page takes host memory
//! only once touched), and byte `pa` of physical memory is byte `pa` of the
//! file. Three kinds of host mapping show it:
//!
//! * the **linear map**: one `MAP_SHARED` mapping of the whole file, byte
//!   `pa` at `linear_base + pa` ([`Backing`]). CPU and DMA accesses by
//!   physical address ([`PhysicalMemory::host_ptr`], `read_physical`,
//!   `write_physical`, `dma_read`, `dma_write`) use it. Its first MiB and
//!   the PCI hole are `PROT_NONE` (not RAM: a touch faults);
//! * a **contiguous allocation's** virtual address is its slice of the
//!   linear map;
//! * a **scattered allocation's** virtual address is its own view: a
//!   reserved range into which each run of physically adjacent pages is
//!   mapped `MAP_SHARED | MAP_FIXED` from the file, in virtual order. Each
//!   run costs the process one host mapping out of `vm.max_map_count`
//!   ([`host::mapping_budget`]); past the budget the allocation fails with
//!   [`MemoryError::MappingLimit`].
//!
//! All of them, and a virtual machine that maps the file as guest RAM, see
//! the same bytes. Freeing unmaps a scattered allocation's view and punches
//! the frames out of the file (`fallocate(FALLOC_FL_PUNCH_HOLE)`): freed
//! memory holds no host memory and reads as zeros through the linear map, so
//! every frame outside a live allocation is a hole, and a scattered
//! allocation is zero-filled because its frames are.
//!
//! The simulator therefore needs Linux (`memfd_create`, `fallocate`, and
//! KVM for the machine that shares this memory); other hosts get a
//! compile error.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "capdma-sim needs Linux: its physical memory is a memfd (memfd_create, MAP_SHARED views, fallocate PUNCH_HOLE) that a KVM guest can share"
);

mod frames;
pub mod host;
pub mod placement;
#[cfg(test)]
mod tests;

use crate::dma::iommu::{DmaFault, IommuChecker};
use crate::violations::{ViolationKind, Violations};
use frames::Frames;
use host::{Mapping, MappingTicket};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

// Physical addresses are u64 and host sizes usize; the simulator converts
// between them with `as`, which is lossless only on 64-bit hosts.
const _: () = assert!(usize::BITS == 64, "capdma-sim needs a 64-bit host");

/// Bytes in a page: the contract's [`capdma_interface::kernel::PAGE_SIZE`]
/// as the `usize` the simulator indexes with.
pub const PAGE_SIZE: usize = capdma_interface::kernel::PAGE_SIZE as usize;
const PAGE: u64 = PAGE_SIZE as u64;
/// 4 GiB: the first address a 32-bit bus master cannot drive.
pub const FOUR_GIB: u64 = 1 << 32;
/// First physical address handed out (below is firmware and legacy areas).
pub const RAM_START: u64 = 1 << 20;
/// Start of the PCI hole; RAM resumes at [`FOUR_GIB`].
pub const PCI_HOLE_START: u64 = 3 << 30;
/// Largest single allocation, bytes (1 GiB): a sanity limit on requests.
pub const MAX_ALLOCATION: usize = 1 << 30;
/// What a new contiguous allocation holds: every aligned 32-bit word of its
/// pages (the tail of the last page too) is `0xBAAD_F00D`, little-endian
/// (bytes `0D F0 AD BA`), the "uninitialised" marker of the Windows debug
/// heap. Neither `MmAllocateContiguousMemorySpecifyCache` nor
/// `AllocateCommonBuffer` (`wdm.h`) promises zeroed memory, so whoever
/// needs zeros writes them; a read of the pattern shows who did not.
pub const CONTIGUOUS_FILL: u32 = 0xBAAD_F00D;

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
    /// contiguous over `bytes`: a scattered allocation's own view (zero-filled
    /// at allocation), a contiguous allocation's slice of the linear map
    /// (filled with [`CONTIGUOUS_FILL`]). Valid until freed.
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
    /// A scattered allocation needs `needed` host mappings (one per run of
    /// physically adjacent pages) but `in_use` of a `limit` are held: the
    /// process's budget from `vm.max_map_count` ([`host::mapping_budget`]),
    /// or the memory's own limit ([`PhysicalMemory::set_view_mapping_limit`]).
    MappingLimit {
        /// Mappings the allocation needs.
        needed: usize,
        /// Mappings held when it asked.
        in_use: usize,
        /// The limit it would pass.
        limit: usize,
    },
    /// The host refused to map a scattered allocation's view (`mmap`
    /// failed with `errno`; `ENOMEM` usually means out of mappings).
    HostMappingFailed {
        /// Bytes of the view.
        bytes: usize,
        /// The `errno` of the failed `mmap`.
        errno: i32,
    },
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
            Self::MappingLimit { needed, in_use, limit } => write!(
                f,
                "a scattered allocation needs {needed} host mappings (one per run of adjacent pages) but {in_use} of a limit of {limit} are held \
                 (the process may hold vm.max_map_count = {} mappings, {} of them left to the rest of the process): \
                 use fewer or smaller buffers, or raise vm.max_map_count",
                host::max_map_count(),
                host::MAPPING_HEADROOM
            ),
            Self::HostMappingFailed { bytes, errno } => {
                write!(f, "mapping a {bytes}-byte view failed: {}", std::io::Error::from_raw_os_error(*errno))
            }
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
    /// Host mappings the live scattered allocations' views hold (one per
    /// run of physically adjacent pages).
    pub host_mappings: usize,
    /// Most host mappings the views held at once.
    pub peak_host_mappings: usize,
}

/// What a virtual machine needs to make this memory its guest-physical RAM
/// (from [`PhysicalMemory::backing`]).
///
/// Guest-physical address `gpa` is byte `gpa` of the file `fd` and lives at
/// host address `linear_base + gpa`: registering each of `ram` with KVM
/// (`KVM_SET_USER_MEMORY_REGION`, `guest_phys_addr = gpa`,
/// `userspace_addr = linear_base + gpa`) makes the guest's RAM the very
/// bytes the board's DMA, the allocations' views and the host-side models
/// use. `linear_base` and `fd` stay valid as long as the [`PhysicalMemory`]
/// (any clone of it) lives; the descriptor is the memory's own: do not
/// close it (`dup` it to keep one). [`PhysicalMemory`] itself is
/// single-threaded, but the bytes are plain shared memory: vCPU threads may
/// read and write them through `linear_base`.
///
/// Only frames of live allocations may be written: the memory keeps every
/// other frame a hole in the file (which is why new scattered allocations
/// read as zeros). A VM allocates its own pages (page tables, stacks, pool)
/// with [`PhysicalMemory::allocate_platform`] or
/// [`PhysicalMemory::allocate_scattered`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backing {
    /// The `memfd` holding all physical memory (close-on-exec).
    pub fd: RawFd,
    /// The file's name, unique in the process: its mappings show in
    /// `/proc/<pid>/maps` as `/memfd:<name> (deleted)`.
    pub name: String,
    /// Host address of physical address 0 in the linear map (page-aligned).
    pub linear_base: *mut u8,
    /// Bytes of the file and of the linear map: the highest physical
    /// address plus one, rounded up to a page.
    pub bytes: u64,
    /// RAM as `(guest_physical_address, bytes)`, ascending, page multiples:
    /// `[1 MiB, min(RAM end, 3 GiB))`, then `[4 GiB, ...)` with high memory.
    /// The first MiB and the PCI hole `[3 GiB, 4 GiB)` (where BAR0 lives)
    /// are not RAM: they are in the file but `PROT_NONE` in the linear map.
    pub ram: Vec<(u64, u64)>,
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
    owner: String,
    /// A scattered allocation's view (unmapped on drop); `None` for a
    /// contiguous one, whose address is in the linear map.
    view: Option<View>,
}

/// A scattered allocation's host view and the mappings it holds.
#[derive(Debug)]
struct View {
    mapping: Mapping,
    ticket: MappingTicket,
}

/// The file holding all physical memory and its linear map.
#[derive(Debug)]
struct Host {
    /// The file's name, unique in the process (`/memfd:<name>` in `/proc/self/maps`).
    name: String,
    fd: OwnedFd,
    linear: Mapping,
}

#[derive(Debug)]
struct State {
    frames: Frames,
    allocations: BTreeMap<AllocationId, Record>,
    /// host va -> allocation id
    by_va: BTreeMap<usize, AllocationId>,
    next_id: u64,
    stats: MemoryStats,
    view_mapping_limit: Option<usize>,
    /// Declared last: dropped after every view.
    host: Host,
}

/// The machine's physical memory (a cheap `Clone` handle; the memory and
/// its host mappings live until the last handle is dropped).
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
    ///
    /// # Panics
    /// When the host refuses the memory's file or its linear map (see
    /// [`PhysicalMemory::try_new`]).
    #[must_use]
    pub fn new(config: MemoryConfig, violations: Violations) -> Self {
        Self::try_new(config, violations).unwrap_or_else(|e| panic!("capdma-sim: cannot make the simulated physical memory: {e}"))
    }

    /// As [`PhysicalMemory::new`], with the host's refusal as an error.
    ///
    /// # Errors
    /// A host page size other than 4 KiB, or `memfd_create`/`ftruncate`
    /// (out of descriptors), `mmap` of the linear map (out of address
    /// space) or `mprotect` failed.
    pub fn try_new(config: MemoryConfig, violations: Violations) -> std::io::Result<Self> {
        static MEMORIES: AtomicU64 = AtomicU64::new(0);
        if !host::page_size_is_4k() {
            return Err(std::io::Error::other("the host's page size is not 4 KiB (views map 4 KiB pages)"));
        }
        let ram = config.ram_bytes / PAGE * PAGE;
        let low_end = (RAM_START + ram).min(PCI_HOLE_START);
        let mut regions = vec![(RAM_START / PAGE, low_end.max(RAM_START) / PAGE)];
        let beyond = (RAM_START + ram).saturating_sub(PCI_HOLE_START);
        if config.high_memory && beyond > 0 {
            regions.push((FOUR_GIB / PAGE, (FOUR_GIB + beyond) / PAGE));
        }
        regions.retain(|(a, b)| b > a);
        // The file covers [0, end of RAM): the first MiB and the PCI hole
        // too (holes in the file; inaccessible in the linear map).
        let end = regions.iter().map(|r| r.1 * PAGE).max().unwrap_or(RAM_START);
        let name = format!("capdma-sim-memory-{}", MEMORIES.fetch_add(1, Ordering::Relaxed));
        let fd = host::memfd(&CString::new(name.clone())?, end)?;
        let linear = Mapping::shared(fd.as_fd(), 0, usize::try_from(end).map_err(std::io::Error::other)?, false)?;
        linear.protect_none(0, RAM_START as usize)?;
        if end > PCI_HOLE_START {
            linear.protect_none(PCI_HOLE_START as usize, (end.min(FOUR_GIB) - PCI_HOLE_START) as usize)?;
        }
        Ok(Self {
            state: Rc::new(RefCell::new(State {
                frames: Frames::new(config.seed, regions, config.contiguous_failure),
                allocations: BTreeMap::new(),
                by_va: BTreeMap::new(),
                next_id: 0,
                stats: MemoryStats::default(),
                view_mapping_limit: None,
                host: Host { name, fd, linear },
            })),
            iommu: IommuChecker::new(),
            violations,
        })
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

    /// The host file and linear map behind this memory, and its RAM ranges,
    /// for a virtual machine that makes them its guest RAM (see [`Backing`]:
    /// valid as long as this memory lives).
    #[must_use]
    pub fn backing(&self) -> Backing {
        let s = self.state.borrow();
        Backing {
            fd: s.host.fd.as_raw_fd(),
            name: s.host.name.clone(),
            linear_base: s.host.linear.as_ptr(),
            bytes: s.host.linear.size() as u64,
            ram: s.frames.regions().iter().map(|&(first, end)| (first * PAGE, (end - first) * PAGE)).collect(),
        }
    }

    /// Address of the last byte of RAM (the end of the last range
    /// `MmGetPhysicalMemoryRanges` reports, minus one).
    #[must_use]
    pub fn highest_physical_address(&self) -> u64 {
        self.state.borrow().frames.regions().iter().map(|r| r.1 * PAGE).max().unwrap_or(RAM_START) - 1
    }

    /// `true` when the machine has RAM at or above 4 GiB.
    #[must_use]
    pub fn has_memory_above_4gib(&self) -> bool {
        self.highest_physical_address() >= FOUR_GIB
    }

    /// Changes the contiguous-allocation fault injection (and restarts its count).
    pub fn set_contiguous_failure(&self, failure: Option<ContiguousFailure>) {
        self.state.borrow_mut().frames.set_contiguous_failure(failure);
    }

    /// Caps the host mappings this memory's scattered views may hold
    /// together (`None`: only the process's budget,
    /// [`host::mapping_budget`], applies). For tests of the limit, and for
    /// a process that wants to keep mappings for something else.
    pub fn set_view_mapping_limit(&self, limit: Option<usize>) {
        self.state.borrow_mut().view_mapping_limit = limit;
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
    /// buffer), zero-filled. Pages are placed at seeded pseudo-random frames
    /// anywhere in RAM (above 4 GiB too when the machine has high memory),
    /// in runs of 1 to 16 physically adjacent pages; the virtually
    /// contiguous view costs one host mapping per run.
    ///
    /// # Errors
    /// [`MemoryError`] for zero or oversized requests, no free frames
    /// (`OutOfMemory`), the mapping budget exhausted (`MappingLimit`), or a
    /// view the host refused to map (`HostMappingFailed`).
    pub fn allocate_scattered(&self, bytes: usize, owner: &str) -> Result<Allocation, MemoryError> {
        check_size(bytes)?;
        let frames = self.state.borrow_mut().frames.place_scattered(pages_for(bytes))?;
        self.commit(bytes, frames, AllocationKind::Scattered, owner)
    }

    /// Allocates `bytes` of physically contiguous memory whose first byte is
    /// aligned to `alignment` bytes (a power of two; at least a page) and
    /// whose last byte lies below `max_address` (exclusive; e.g. [`FOUR_GIB`]
    /// for a 32-bit device). Placement is top-down, as Windows does. The
    /// pages hold [`CONTIGUOUS_FILL`], not zeros.
    /// `None` when no such run is free or the configured
    /// [`ContiguousFailure`] says this attempt fails.
    #[must_use]
    pub fn allocate_contiguous(&self, bytes: usize, alignment: usize, max_address: u64, owner: &str) -> Option<Allocation> {
        self.allocate_contiguous_inner(bytes, alignment, max_address, owner, true).ok()
    }

    /// Memory the platform takes for itself (a virtual machine's page
    /// tables, stacks and pool; the HAL's map-register buffers): as
    /// [`PhysicalMemory::allocate_contiguous`], but never failed by, nor
    /// counted in, the contiguous-failure fault injection, and with the
    /// reason of a failure. Like every allocation it is in
    /// [`PhysicalMemory::leaks`] until freed.
    ///
    /// # Errors
    /// [`MemoryError`]: zero or oversized request, bad alignment, no such run free.
    pub fn allocate_platform(&self, bytes: usize, alignment: usize, max_address: u64, owner: &str) -> Result<Allocation, MemoryError> {
        self.allocate_contiguous_inner(bytes, alignment, max_address, owner, false)
    }

    /// As [`PhysicalMemory::allocate_contiguous`], with the reason of a
    /// failure, and optionally exempt from fault injection.
    fn allocate_contiguous_inner(
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
            match s.frames.place_contiguous(pages, align_frames, max_address / PAGE, injectable) {
                Ok(start) => start,
                Err(e) => {
                    s.stats.contiguous_failures += 1;
                    return Err(e);
                }
            }
        };
        self.commit(bytes, (start..start + pages).collect(), AllocationKind::Contiguous, owner)
    }

    /// Gives reserved `frames` their host address (a view of a scattered
    /// allocation; the linear map's slice, filled, for a contiguous one) and
    /// records the allocation. On an error the frames are released.
    fn commit(&self, bytes: usize, frames: Vec<u64>, kind: AllocationKind, owner: &str) -> Result<Allocation, MemoryError> {
        let mut guard = self.state.borrow_mut();
        let s = &mut *guard;
        let (va, view) = match kind {
            AllocationKind::Contiguous => {
                let va = s.host.linear.as_ptr().wrapping_add((frames[0] * PAGE) as usize);
                let words = frames.len() * PAGE_SIZE / 4;
                #[allow(clippy::cast_ptr_alignment, reason = "va is page-aligned: the linear map is, and so is the offset")]
                let first = va.cast::<u32>();
                for i in 0..words {
                    // SAFETY: the `frames.len()` adjacent frames from
                    // `frames[0]` are RAM (read/write in the linear map) and
                    // were just reserved for this allocation, so nothing
                    // else uses them; word `i < words` is inside them and
                    // 4-byte aligned.
                    unsafe { first.wrapping_add(i).write(CONTIGUOUS_FILL.to_le()) };
                }
                (va, None)
            }
            AllocationKind::Scattered => match s.make_view(&frames) {
                Ok(view) => (view.mapping.as_ptr(), Some(view)),
                Err(e) => {
                    s.frames.release(frames);
                    return Err(e);
                }
            },
        };
        s.next_id += 1;
        let id = AllocationId(s.next_id);
        let alloc = Allocation { id, va, bytes, page_addresses: frames.iter().map(|f| f * PAGE).collect(), kind };
        s.by_va.insert(va as usize, id);
        s.allocations.insert(id, Record { alloc: alloc.clone(), owner: owner.to_string(), view });
        match kind {
            AllocationKind::Contiguous => s.stats.contiguous_allocations += 1,
            AllocationKind::Scattered => s.stats.scattered_allocations += 1,
        }
        Ok(alloc)
    }

    /// Frees an allocation: unmaps its view (a scattered one's) and punches
    /// its frames out of the file, so they read as zeros and hold no host
    /// memory. Freeing an id that is not live (a double free) is a
    /// violation; freeing memory some live DMA range still covers is a
    /// violation too (it is freed anyway). Returns whether the id was live.
    #[allow(clippy::must_use_candidate, reason = "freeing is the effect; a bad free is recorded as a violation")]
    pub fn free(&self, id: AllocationId) -> bool {
        let rec = {
            let mut guard = self.state.borrow_mut();
            let s = &mut *guard;
            let Some(rec) = s.allocations.remove(&id) else {
                let known = id.0 <= s.next_id && id.0 != 0;
                drop(guard);
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
            let Record { alloc, owner, view } = rec;
            s.by_va.remove(&(alloc.va as usize));
            if let Some(view) = view {
                s.stats.host_mappings -= view.ticket.count();
                drop(view);
            }
            let frames: Vec<u64> = alloc.page_addresses.iter().map(|pa| pa / PAGE).collect();
            s.host.punch(&frames);
            s.frames.release(frames);
            s.stats.frees += 1;
            (alloc, owner)
        };
        let (alloc, owner) = rec;
        for pa in &alloc.page_addresses {
            if let Some(range) = self.iommu.any_mapped(*pa, PAGE) {
                self.violations.push(
                    ViolationKind::Dma,
                    format!(
                        "allocation {id} ({owner}) freed while page {pa:#x} is still mapped for DMA by {} {}",
                        range.kind.name(),
                        range.label
                    ),
                );
                break;
            }
        }
        true
    }

    /// The live allocation `id`.
    #[must_use]
    pub fn allocation(&self, id: AllocationId) -> Option<Allocation> {
        self.state.borrow().allocations.get(&id).map(|r| r.alloc.clone())
    }

    /// The live allocation whose virtual range (its `va`, `bytes` long)
    /// contains host address `va`, and `va`'s byte offset in it.
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
    /// address `va`, `None` when `va` is not inside a live allocation's
    /// virtual range (a linear-map address from [`PhysicalMemory::host_ptr`]
    /// is not one for scattered memory).
    #[must_use]
    pub fn physical_address(&self, va: *const u8) -> Option<u64> {
        let s = self.state.borrow();
        let addr = va as usize;
        let (&start, id) = s.by_va.range(..=addr).next_back()?;
        let rec = s.allocations.get(id)?;
        let offset = addr - start;
        (offset < rec.alloc.bytes).then(|| rec.alloc.page_addresses[offset / PAGE_SIZE] + (offset % PAGE_SIZE) as u64)
    }

    /// The host address of physical byte `pa` in the linear map
    /// (`linear_base + pa`), `None` when no live allocation holds its page.
    /// For a contiguous allocation that is inside its `va` range; for a
    /// scattered one it is another mapping of the same byte.
    #[must_use]
    pub fn host_ptr(&self, pa: u64) -> Option<*mut u8> {
        let s = self.state.borrow();
        s.frames.is_used(pa / PAGE).then(|| s.host.linear.as_ptr().wrapping_add(pa as usize))
    }

    /// The linear-map address of `[pa, pa + len)` when every page of it
    /// belongs to a live allocation (`len > 0`).
    ///
    /// # Errors
    /// [`MemoryError::NotAllocated`] with the first byte no allocation holds.
    fn linear_range(&self, pa: u64, len: usize) -> Result<*mut u8, MemoryError> {
        let s = self.state.borrow();
        let first = pa / PAGE;
        let last = pa.checked_add(len as u64 - 1).map(|end| end / PAGE);
        if last.is_some_and(|last| s.frames.all_used(first, last)) {
            return Ok(s.host.linear.as_ptr().wrapping_add(pa as usize));
        }
        // Frames are finite, so the search ends at the first free frame.
        let free = (first..=u64::MAX / PAGE).find(|f| !s.frames.is_used(*f)).unwrap_or(first);
        Err(MemoryError::NotAllocated((free * PAGE).max(pa)))
    }

    /// CPU write of `data` to physical address `pa` (no IOMMU check; the CPU
    /// may touch any allocated memory). Nothing is written unless every byte
    /// is allocated.
    ///
    /// # Errors
    /// [`MemoryError::NotAllocated`] for the first byte no allocation holds.
    pub fn write_physical(&self, pa: u64, data: &[u8]) -> Result<(), MemoryError> {
        if data.is_empty() {
            return Ok(());
        }
        let dst = self.linear_range(pa, data.len())?;
        // SAFETY: `dst` starts `data.len()` bytes of the linear map whose
        // pages all belong to live allocations (checked by `linear_range`),
        // hence RAM, mapped read/write; `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// CPU read from physical address `pa` into `buf` (no IOMMU check).
    ///
    /// # Errors
    /// [`MemoryError::NotAllocated`] for the first byte no allocation holds.
    pub fn read_physical(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        let src = self.linear_range(pa, buf.len())?;
        // SAFETY: `src` starts `buf.len()` readable bytes of the linear map
        // (every page allocated, checked by `linear_range`); `ptr::copy`
        // allows overlap.
        unsafe { std::ptr::copy(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
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
        // SAFETY: `src` starts `buf.len()` readable bytes inside one live
        // allocation's virtual range (checked by `virtual_range`), mapped
        // read/write until it is freed; `ptr::copy` allows overlap.
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
        // allocation's virtual range (checked by `virtual_range`); `ptr::copy`
        // allows overlap.
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
        if len > 0 {
            if let Err(err) = self.linear_range(pa, len) {
                return fail(self, err);
            }
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

impl State {
    /// Maps a view of `frames` (virtual order): one host mapping per run of
    /// physically adjacent frames, counted against this memory's limit and
    /// the process's budget.
    fn make_view(&mut self, frames: &[u64]) -> Result<View, MemoryError> {
        let runs = frames::runs(frames);
        let needed = runs.len();
        let in_use = self.stats.host_mappings;
        if let Some(limit) = self.view_mapping_limit {
            if in_use.saturating_add(needed) > limit {
                return Err(MemoryError::MappingLimit { needed, in_use, limit });
            }
        }
        let ticket = host::PROCESS_BUDGET
            .take(needed, host::mapping_budget())
            .map_err(|e| MemoryError::MappingLimit { needed: e.needed, in_use: e.in_use, limit: e.budget })?;
        let file_runs: Vec<(u64, usize)> = runs.iter().map(|&(first, n)| (first * PAGE, n as usize * PAGE_SIZE)).collect();
        let mapping = Mapping::of_runs(self.host.fd.as_fd(), &file_runs).map_err(|e| MemoryError::HostMappingFailed {
            bytes: frames.len() * PAGE_SIZE,
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        self.stats.host_mappings += needed;
        self.stats.peak_host_mappings = self.stats.peak_host_mappings.max(self.stats.host_mappings);
        Ok(View { mapping, ticket })
    }
}

impl Host {
    /// Gives `frames` back to the file: punched out (zeros, no host memory),
    /// or, where the host cannot punch, overwritten with zeros.
    fn punch(&self, frames: &[u64]) {
        for (first, n) in frames::sorted_runs(frames) {
            if host::punch_hole(self.fd.as_fd(), first * PAGE, n * PAGE).is_err() {
                // SAFETY: the frames are RAM (read/write in the linear map)
                // of the allocation being freed, which no one may use any more.
                unsafe { std::ptr::write_bytes(self.linear.as_ptr().wrapping_add((first * PAGE) as usize), 0, (n * PAGE) as usize) };
            }
        }
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
