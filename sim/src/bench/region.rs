//! Host memory for the benchmark's rings.
//!
//! Every ring is a pool of 4 KiB pages in a `memfd`, faulted in in file
//! order (the kernel then tends to hand out physically ascending frames;
//! the report states how far it did, from `/proc/self/pagemap`).
//!
//! * [`Region::contiguous`]: the pool mapped as one linear range. The
//!   common-buffer slots (physically contiguous in the driver) and the
//!   destinations of the contiguous methods live here.
//! * [`Region::scattered`]: the model of a driver's frame buffer. In the
//!   driver the destination is an application buffer mapped into system
//!   space (`MmGetSystemAddressForMdlSafe`): virtually contiguous, made of
//!   4 KiB pages at scattered physical frames, and the copy runs over it in
//!   one call. Here the pool is cut into runs with the simulator's
//!   placement model (see [`super::placement`]) and the runs are mapped
//!   (`MAP_FIXED`) in a shuffled order into one reserved virtual range.
//!   `copy_frame` then copies into a virtually contiguous frame whose
//!   physical pages are out of sequence, with the same page size and TLB
//!   behaviour as the driver's copy. (Carving frames out of a pool and
//!   copying per page run would instead measure a different routine, and
//!   copying into an ordinary heap buffer would leave the physical layout
//!   to chance.)
//!
//! When a pool cannot be made (not Linux, `memfd_create` refused) the ring
//! falls back to a private anonymous mapping or a heap buffer and says so
//! in [`Region::model`].
use super::placement::{self, Rng, PAGE};

/// How a region is backed.
enum Backing {
    /// A heap buffer; the region starts `offset` bytes in (page-aligned).
    Heap { buffer: Vec<u8>, offset: usize },
    /// An mmap'd range (`ptr`, `len`), unmapped on drop.
    #[cfg(target_os = "linux")]
    Mapped { ptr: *mut u8, _pool: Option<std::os::fd::OwnedFd> },
}

/// A page-aligned, virtually contiguous byte range owned by the benchmark.
pub struct Region {
    backing: Backing,
    len: usize,
    model: String,
}

impl Region {
    /// `len` bytes (rounded up to pages): the pool mapped linearly; falls
    /// back to [`Region::anonymous`] (see [`Region::model`]).
    #[must_use]
    pub fn contiguous(len: usize) -> Self {
        let len = len.div_ceil(PAGE) * PAGE;
        #[cfg(target_os = "linux")]
        if let Ok(region) = pool_linux(len, None) {
            return region;
        }
        Self::anonymous(len)
    }

    /// `len` bytes (rounded up to pages) of private anonymous 4 KiB pages,
    /// pre-faulted; a heap buffer if the host refuses the mapping.
    #[must_use]
    pub fn anonymous(len: usize) -> Self {
        let len = len.div_ceil(PAGE) * PAGE;
        #[cfg(target_os = "linux")]
        if let Ok(ptr) = map(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, None, None) {
            // SAFETY: `ptr..ptr + len` is the mapping just made; the advice
            // only affects its page size. Failure is harmless (ignored).
            let _ = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_NOHUGEPAGE) };
            let mut region = Self { backing: Backing::Mapped { ptr, _pool: None }, len, model: "anonymous 4 KiB pages".into() };
            region.bytes_mut().fill(0);
            return region;
        }
        Self::heap(len)
    }

    /// `len` bytes (rounded up to pages) whose page runs come from the pool
    /// in shuffled order (see the module documentation), seeded by `seed`.
    ///
    /// # Errors
    /// The host refused a mapping, or the mapping count would pass
    /// `vm.max_map_count`; callers fall back to [`Region::contiguous`].
    pub fn scattered(len: usize, seed: u64) -> Result<Self, String> {
        let len = len.div_ceil(PAGE) * PAGE;
        #[cfg(target_os = "linux")]
        {
            pool_linux(len, Some(seed))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = seed;
            Err(format!("no scattered mapping on this OS ({len} bytes)"))
        }
    }

    /// `len` bytes of a page-aligned heap buffer (whatever page size the
    /// allocator's memory has).
    #[must_use]
    pub fn heap(len: usize) -> Self {
        let buffer = vec![0u8; len + PAGE];
        let offset = buffer.as_ptr().align_offset(PAGE).min(PAGE);
        Self { backing: Backing::Heap { buffer, offset }, len, model: "heap buffer".into() }
    }

    /// Bytes in the region.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// How the region is backed, for the report.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The region's bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Heap { buffer, offset } => &buffer[*offset..*offset + self.len],
            #[cfg(target_os = "linux")]
            // SAFETY: `ptr..ptr + len` is a live read/write mapping owned by
            // this region (unmapped only on drop); `&self` excludes writers.
            Backing::Mapped { ptr, .. } => unsafe { std::slice::from_raw_parts(*ptr, self.len) },
        }
    }

    /// The region's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.backing {
            Backing::Heap { buffer, offset } => &mut buffer[*offset..*offset + self.len],
            #[cfg(target_os = "linux")]
            // SAFETY: as in `bytes`; `&mut self` makes the borrow unique.
            Backing::Mapped { ptr, .. } => unsafe { std::slice::from_raw_parts_mut(*ptr, self.len) },
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Backing::Mapped { ptr, .. } = self.backing {
            // SAFETY: `ptr..ptr + len` was mapped by this region and no
            // borrow of it outlives `self`.
            let _ = unsafe { libc::munmap(ptr.cast(), self.len) };
        }
    }
}

/// `mmap` with an error message; `fixed` places the mapping at that address.
#[cfg(target_os = "linux")]
fn map(len: usize, prot: i32, flags: i32, fixed: Option<*mut u8>, file: Option<(i32, usize)>) -> Result<*mut u8, String> {
    let (fd, offset) = file.unwrap_or((-1, 0));
    let offset = libc::off_t::try_from(offset).map_err(|_| "mapping offset too large".to_owned())?;
    let (addr, flags) = match fixed {
        Some(p) => (p.cast::<libc::c_void>(), flags | libc::MAP_FIXED),
        None => (std::ptr::null_mut(), flags),
    };
    // SAFETY: a new mapping; with MAP_FIXED `addr` lies inside a range this
    // module reserved (PROT_NONE) and owns, so nothing else is replaced.
    let p = unsafe { libc::mmap(addr, len, prot, flags, fd, offset) };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap of {len} bytes failed: {}", std::io::Error::last_os_error()));
    }
    Ok(p.cast())
}

/// A pool of `len` bytes in a `memfd`, faulted in in file order, mapped
/// linearly (`shuffle_seed: None`) or as shuffled page runs.
#[cfg(target_os = "linux")]
fn pool_linux(len: usize, shuffle_seed: Option<u64>) -> Result<Region, String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // SAFETY: a C string literal and a flag; the call creates a new file.
    let raw = unsafe { libc::memfd_create(c"capdma-bench-pool".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(format!("memfd_create failed: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let pool = unsafe { OwnedFd::from_raw_fd(raw) };
    let size = libc::off_t::try_from(len).map_err(|_| "pool too large".to_owned())?;
    // SAFETY: plain syscall on our descriptor.
    if unsafe { libc::ftruncate(pool.as_raw_fd(), size) } != 0 {
        return Err(format!("ftruncate failed: {}", std::io::Error::last_os_error()));
    }
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let shared = libc::MAP_SHARED | libc::MAP_POPULATE;

    // Fault the pool in in file order (MAP_POPULATE walks it front to back).
    let linear = map(len, rw, shared, None, Some((pool.as_raw_fd(), 0)))?;
    let Some(seed) = shuffle_seed else {
        let mut region = Region {
            backing: Backing::Mapped { ptr: linear, _pool: Some(pool) },
            len,
            model: "4 KiB pages of a memfd pool, one linear mapping".into(),
        };
        region.bytes_mut().fill(0);
        return Ok(region);
    };
    // SAFETY: the mapping just made, dropped at once (the pages stay in the file).
    let _ = unsafe { libc::munmap(linear.cast(), len) };

    let pages = len / PAGE;
    let mut rng = Rng::new(seed ^ 0x5CA7_7E2E_D000_0001);
    let mut first = 0usize;
    let mut pool_runs: Vec<(usize, usize)> = placement::runs(pages, &mut rng)
        .into_iter()
        .map(|n| {
            let run = (first, n);
            first += n;
            run
        })
        .collect();
    placement::shuffle(&mut pool_runs, &mut rng);

    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse::<usize>().ok()).unwrap_or(65_530);
    if pool_runs.len() + 4096 > limit {
        return Err(format!("{} page runs would pass vm.max_map_count ({limit})", pool_runs.len()));
    }

    let base = map(len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, None, None)?;
    let mut region = Region {
        backing: Backing::Mapped { ptr: base, _pool: None },
        len,
        model: format!(
            "4 KiB pages of a memfd pool mapped in {} shuffled runs of 1-16 pages (mean {:.2}) into one virtual range",
            pool_runs.len(),
            crate::bench::ratio(pages as u64, pool_runs.len() as u64)
        ),
    };
    let mut virtual_page = 0usize;
    for &(pool_page, n) in &pool_runs {
        // On error, dropping `region` unmaps everything mapped so far.
        map(n * PAGE, rw, shared, Some(base.wrapping_add(virtual_page * PAGE)), Some((pool.as_raw_fd(), pool_page * PAGE)))?;
        virtual_page += n;
    }
    region.backing = Backing::Mapped { ptr: base, _pool: Some(pool) };
    region.bytes_mut().fill(0);
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_page_aligned_and_writable() {
        for mut r in [Region::contiguous(3 * PAGE + 5), Region::anonymous(3 * PAGE + 5), Region::heap(3 * PAGE)] {
            assert_eq!(r.bytes().as_ptr().addr() % PAGE, 0, "{}", r.model());
            assert!(r.len() >= 3 * PAGE);
            let n = r.len();
            r.bytes_mut()[n - 1] = 7;
            assert_eq!(r.bytes()[n - 1], 7);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn scattered_pages_are_distinct_pages() {
        let mut r = Region::scattered(256 * PAGE, 4).unwrap();
        assert_eq!(r.bytes().as_ptr().addr() % PAGE, 0);
        // Write each page's index, then read it back: distinct pages.
        for (i, page) in r.bytes_mut().chunks_mut(PAGE).enumerate() {
            page[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        for (i, page) in r.bytes().chunks(PAGE).enumerate() {
            assert_eq!(u64::from_le_bytes(page[..8].try_into().unwrap()), i as u64);
        }
        assert!(r.model().contains("shuffled runs"));
    }
}
