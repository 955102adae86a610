//! Host memory primitives (Linux): a `memfd`, shared mappings of it, views
//! made of page runs mapped `MAP_FIXED` into one reserved range, hole
//! punching, and the process's budget of mappings (`vm.max_map_count`).
//!
//! Shared by the simulated machine's [`super::PhysicalMemory`] (the linear
//! map and the scattered allocations' views) and the benchmark's rings
//! (`bench/region.rs`).
//!
//! Sources: `memfd_create(2)`, `mmap(2)` (`MAP_SHARED`, `MAP_FIXED`,
//! `MAP_NORESERVE`), `mprotect(2)`, `fallocate(2)` (`FALLOC_FL_PUNCH_HOLE`),
//! and `vm.max_map_count` in the kernel's `Documentation/admin-guide/sysctl/vm.rst`.
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Bytes of a host page (4 KiB on x86-64 Linux, asserted at run time by
/// [`page_size_is_4k`]).
pub const HOST_PAGE: usize = 4096;

/// Mappings of the process left to everything else (the executable and its
/// libraries, heap arenas, thread stacks, large `malloc` blocks, a virtual
/// machine's own mappings) when the budget is taken from `vm.max_map_count`.
/// Measured: a `capdma-sim stream` run holds about 40 besides its views,
/// a test binary about 40 too.
pub const MAPPING_HEADROOM: usize = 4096;

/// `vm.max_map_count` when `/proc/sys/vm/max_map_count` cannot be read (the
/// kernel's default).
pub const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// `true` when the host's page size is [`HOST_PAGE`] (`sysconf(_SC_PAGESIZE)`).
#[must_use]
pub fn page_size_is_4k() -> bool {
    // SAFETY: sysconf only reads a system value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).is_ok_and(|s| s == HOST_PAGE)
}

/// A new `memfd` (close-on-exec) of `len` bytes: a sparse file whose pages
/// are only allocated when first touched.
///
/// # Errors
/// `memfd_create` or `ftruncate` refused (out of descriptors, `len` too large).
pub fn memfd(name: &CStr, len: u64) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string; the call creates a new descriptor.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let size = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a plain syscall on our own descriptor.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Gives `[offset, offset + len)` of `fd`'s file back to the system
/// (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`): the range then
/// reads as zeros through every mapping of the file and holds no memory.
///
/// # Errors
/// `fallocate` refused (a file system without hole punching).
pub fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let bad = || io::Error::from(io::ErrorKind::InvalidInput);
    let offset = libc::off_t::try_from(offset).map_err(|_| bad())?;
    let len = libc::off_t::try_from(len).map_err(|_| bad())?;
    // SAFETY: a plain syscall on a live descriptor; it changes only the file.
    let rc = unsafe { libc::fallocate(fd.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One host mapping this module made, `len` bytes at `ptr`, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, offset)`.
    fn new(len: usize, prot: i32, flags: i32, file: Option<(BorrowedFd<'_>, u64)>) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let (fd, offset) = file.map_or((-1, 0), |(fd, offset)| (fd.as_raw_fd(), offset));
        let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a new mapping at an address the kernel chooses (no
        // MAP_FIXED): nothing existing is replaced.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// `len` bytes of `fd`'s file from `offset`, shared and writable
    /// (`MAP_SHARED`; `populate` faults every page in now, in file order).
    ///
    /// # Errors
    /// `mmap` refused.
    pub fn shared(fd: BorrowedFd<'_>, offset: u64, len: usize, populate: bool) -> io::Result<Self> {
        let flags = libc::MAP_SHARED | libc::MAP_NORESERVE | if populate { libc::MAP_POPULATE } else { 0 };
        Self::new(len, libc::PROT_READ | libc::PROT_WRITE, flags, Some((fd, offset)))
    }

    /// `len` bytes of private anonymous memory, writable (zero-filled on first touch).
    ///
    /// # Errors
    /// `mmap` refused.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        Self::new(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, None)
    }

    /// `len` bytes of address space reserved and inaccessible (`PROT_NONE`,
    /// no memory behind it), to be filled with [`Mapping::map_shared_at`].
    ///
    /// # Errors
    /// `mmap` refused.
    pub fn reserve(len: usize) -> io::Result<Self> {
        Self::new(len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, None)
    }

    /// A virtually contiguous view of `runs` of `fd`'s file, in order: each
    /// `(file_offset, bytes)` (page multiples) is mapped `MAP_SHARED |
    /// MAP_FIXED` after the previous one into one reserved range. Costs one
    /// host mapping per run (runs that happen to be adjacent in the file are
    /// not merged here).
    ///
    /// # Errors
    /// A run that is not page-aligned, or `mmap` refused (`ENOMEM` when the
    /// process is out of mappings); nothing stays mapped.
    pub fn of_runs(fd: BorrowedFd<'_>, runs: &[(u64, usize)]) -> io::Result<Self> {
        let total = runs.iter().try_fold(0usize, |sum, &(_, bytes)| sum.checked_add(bytes));
        let total = total.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // On an error below, dropping `view` unmaps the reservation and every run mapped into it.
        let view = Self::reserve(total)?;
        let mut at = 0usize;
        for &(file_offset, bytes) in runs {
            view.map_shared_at(at, fd, file_offset, bytes)?;
            at += bytes;
        }
        Ok(view)
    }

    /// Maps `len` bytes of `fd`'s file from `file_offset` over
    /// `[offset, offset + len)` of this mapping (`MAP_SHARED | MAP_FIXED`,
    /// read/write). `offset` and `len` must be page multiples inside the mapping.
    ///
    /// # Errors
    /// Out of range or unaligned (`InvalidInput`), or `mmap` refused.
    pub fn map_shared_at(&self, offset: usize, fd: BorrowedFd<'_>, file_offset: u64, len: usize) -> io::Result<()> {
        self.check_range(offset, len)?;
        let file_offset = libc::off_t::try_from(file_offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let at = self.ptr.wrapping_add(offset);
        // SAFETY: `[at, at + len)` lies inside this mapping (checked above),
        // which this value owns, so MAP_FIXED replaces only our own pages;
        // no reference into that range is live across the call (the
        // callers build views before handing them out).
        let p = unsafe {
            libc::mmap(
                at.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                file_offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` of this mapping inaccessible
    /// (`mprotect(PROT_NONE)`): a touch there faults.
    ///
    /// # Errors
    /// Out of range or unaligned (`InvalidInput`), or `mprotect` refused.
    pub fn protect_none(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check_range(offset, len)?;
        // SAFETY: the range lies inside this mapping (checked), which this
        // value owns; callers never hand out pointers into it.
        if unsafe { libc::mprotect(self.ptr.wrapping_add(offset).cast(), len, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Asks for 4 KiB pages only in this mapping (`MADV_NOHUGEPAGE`); a
    /// refusal is ignored (the advice only affects the page size).
    pub fn no_huge_pages(&self) {
        // SAFETY: the range is this mapping; the advice does not change its contents.
        let _ = unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_NOHUGEPAGE) };
    }

    fn check_range(&self, offset: usize, len: usize) -> io::Result<()> {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !inside || len == 0 || !offset.is_multiple_of(HOST_PAGE) || !len.is_multiple_of(HOST_PAGE) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        Ok(())
    }

    /// First byte of the mapping (page-aligned).
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes mapped.
    #[must_use]
    pub fn size(&self) -> usize {
        self.len
    }

    /// `true` when `addr` lies inside the mapping.
    #[must_use]
    pub fn contains(&self, addr: usize) -> bool {
        addr.checked_sub(self.ptr.addr()).is_some_and(|off| off < self.len)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + len` was mapped by this value (with every
        // MAP_FIXED run inside it) and is unmapped only here.
        let _ = unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `vm.max_map_count`: the most mappings one process may hold (read once
/// from `/proc/sys/vm/max_map_count`; [`DEFAULT_MAX_MAP_COUNT`] if unreadable).
#[must_use]
pub fn max_map_count() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_MAP_COUNT)
    })
}

/// Mappings the views of this process may hold in all: `vm.max_map_count`
/// less [`MAPPING_HEADROOM`].
#[must_use]
pub fn mapping_budget() -> usize {
    max_map_count().saturating_sub(MAPPING_HEADROOM)
}

/// A count of host mappings held against a limit. [`PROCESS_BUDGET`] is
/// the one every view of this process draws from.
#[derive(Debug)]
pub struct MappingBudget {
    in_use: AtomicUsize,
}

impl Default for MappingBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl MappingBudget {
    /// A budget with nothing held.
    #[must_use]
    pub const fn new() -> Self {
        Self { in_use: AtomicUsize::new(0) }
    }

    /// Mappings held now by live tickets of this budget.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Takes `needed` mappings, if that keeps this budget at or under `limit`.
    ///
    /// # Errors
    /// [`OverBudget`] when they are not there; nothing is taken.
    pub fn take(&'static self, needed: usize, limit: usize) -> Result<MappingTicket, OverBudget> {
        let mut in_use = self.in_use();
        loop {
            let Some(total) = in_use.checked_add(needed).filter(|&t| t <= limit) else {
                return Err(OverBudget { needed, in_use, budget: limit });
            };
            match self.in_use.compare_exchange_weak(in_use, total, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(MappingTicket { budget: self, count: needed }),
                Err(now) => in_use = now,
            }
        }
    }
}

/// The budget every view of this process draws from (up to [`mapping_budget`]).
pub static PROCESS_BUDGET: MappingBudget = MappingBudget::new();

/// A view would take the process past its mapping budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// Mappings the view needs (one per run of pages).
    pub needed: usize,
    /// Mappings held when it asked.
    pub in_use: usize,
    /// The limit.
    pub budget: usize,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a view of {} page runs needs {} host mappings, {} are held and the limit is {} (vm.max_map_count is {}; {} of it are left to the rest of the process)",
            self.needed,
            self.needed,
            self.in_use,
            self.budget,
            max_map_count(),
            MAPPING_HEADROOM
        )
    }
}

/// Mappings counted against a [`MappingBudget`] until dropped.
#[derive(Debug)]
pub struct MappingTicket {
    budget: &'static MappingBudget,
    count: usize,
}

impl MappingTicket {
    /// Mappings this ticket holds.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }
}

impl Drop for MappingTicket {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.count, Ordering::Relaxed);
    }
}

/// Mappings the process holds now (lines of `/proc/self/maps`), for reports and tests.
#[must_use]
pub fn process_mappings() -> Option<usize> {
    std::fs::read_to_string("/proc/self/maps").ok().map(|s| s.lines().count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_view_of_runs_shows_the_file_pages_in_run_order() {
        assert!(page_size_is_4k());
        let fd = memfd(c"capdma-host-test", 8 * HOST_PAGE as u64).unwrap();
        let linear = Mapping::shared(fd.as_fd(), 0, 8 * HOST_PAGE, false).unwrap();
        for page in 0..8u8 {
            // SAFETY: page `page` of the 8-page linear mapping.
            unsafe { linear.as_ptr().wrapping_add(usize::from(page) * HOST_PAGE).write(page + 1) };
        }
        let page = HOST_PAGE as u64;
        let view = Mapping::of_runs(fd.as_fd(), &[(5 * page, HOST_PAGE), (page, 2 * HOST_PAGE)]).unwrap();
        assert_eq!(view.size(), 3 * HOST_PAGE);
        // SAFETY: the first byte of each of the view's three pages.
        let firsts: Vec<u8> = (0..3).map(|i| unsafe { view.as_ptr().wrapping_add(i * HOST_PAGE).read() }).collect();
        assert_eq!(firsts, [6, 2, 3]);
        // A write through the view is in the file, seen by the linear map.
        // SAFETY: byte 9 of the view's second page (file page 1).
        unsafe { view.as_ptr().wrapping_add(HOST_PAGE + 9).write(0xEE) };
        // SAFETY: byte 9 of file page 1 in the linear mapping.
        assert_eq!(unsafe { linear.as_ptr().wrapping_add(HOST_PAGE + 9).read() }, 0xEE);
        // A punched page reads as zero through both.
        punch_hole(fd.as_fd(), page, page).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { view.as_ptr().wrapping_add(HOST_PAGE + 9).read() }, 0);
        assert!(view.contains(view.as_ptr().addr() + 3 * HOST_PAGE - 1));
        assert!(!view.contains(view.as_ptr().addr() + 3 * HOST_PAGE));
        // Out of range or unaligned: refused, nothing replaced.
        assert!(view.map_shared_at(2 * HOST_PAGE, fd.as_fd(), 0, 2 * HOST_PAGE).is_err());
        assert!(view.map_shared_at(1, fd.as_fd(), 0, HOST_PAGE).is_err());
        assert!(Mapping::of_runs(fd.as_fd(), &[(7, HOST_PAGE)]).is_err());
    }

    #[test]
    fn tickets_count_against_their_budget_and_give_back_on_drop() {
        static BUDGET: MappingBudget = MappingBudget::new();
        let a = BUDGET.take(10, 12).unwrap();
        assert_eq!((a.count(), BUDGET.in_use()), (10, 10));
        let err = BUDGET.take(3, 12).unwrap_err();
        assert_eq!(err, OverBudget { needed: 3, in_use: 10, budget: 12 });
        assert!(err.to_string().contains("vm.max_map_count"), "{err}");
        assert_eq!(BUDGET.in_use(), 10, "a refused take holds nothing");
        let b = BUDGET.take(2, 12).unwrap();
        assert!(BUDGET.take(usize::MAX, usize::MAX).is_err(), "no overflow");
        drop(a);
        assert_eq!(BUDGET.in_use(), 2);
        drop(b);
        assert_eq!(BUDGET.in_use(), 0);
        assert_eq!(mapping_budget(), max_map_count() - MAPPING_HEADROOM);
    }
}
