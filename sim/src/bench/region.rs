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
//! When a pool cannot be made (`memfd_create` refused) the ring falls back
//! to a private anonymous mapping or a heap buffer and says so in
//! [`Region::model`]. The host mappings come from [`crate::memory::host`],
//! shared with the simulated machine's memory (and its mapping budget).
use super::placement::{self, PAGE};
use crate::memory::host::{self, Mapping, MappingTicket};
use std::os::fd::{AsFd, OwnedFd};

/// How a region is backed.
enum Backing {
    /// A heap buffer; the region starts `offset` bytes in (page-aligned).
    Heap { buffer: Vec<u8>, offset: usize },
    /// A host mapping (with the pool file behind it and the mappings it
    /// holds against the process's budget, if any).
    Mapped { map: Mapping, _pool: Option<OwnedFd>, _ticket: Option<MappingTicket> },
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
        pool(len, None).unwrap_or_else(|_| Self::anonymous(len))
    }

    /// `len` bytes (rounded up to pages) of private anonymous 4 KiB pages,
    /// pre-faulted; a heap buffer if the host refuses the mapping.
    #[must_use]
    pub fn anonymous(len: usize) -> Self {
        let len = len.div_ceil(PAGE) * PAGE;
        let Ok(map) = Mapping::anonymous(len) else {
            return Self::heap(len);
        };
        map.no_huge_pages();
        let mut region = Self { backing: Backing::Mapped { map, _pool: None, _ticket: None }, len, model: "anonymous 4 KiB pages".into() };
        region.bytes_mut().fill(0);
        region
    }

    /// `len` bytes (rounded up to pages) whose page runs come from the pool
    /// in shuffled order (see the module documentation), seeded by `seed`.
    ///
    /// # Errors
    /// The host refused a mapping, or the runs would pass the process's
    /// mapping budget (`vm.max_map_count`); callers fall back to
    /// [`Region::contiguous`].
    pub fn scattered(len: usize, seed: u64) -> Result<Self, String> {
        pool(len.div_ceil(PAGE) * PAGE, Some(seed))
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
            // SAFETY: `map` is a live read/write mapping of at least `len`
            // bytes owned by this region (unmapped only on drop); `&self`
            // excludes writers.
            Backing::Mapped { map, .. } => unsafe { std::slice::from_raw_parts(map.as_ptr(), self.len) },
        }
    }

    /// The region's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.backing {
            Backing::Heap { buffer, offset } => &mut buffer[*offset..*offset + self.len],
            // SAFETY: as in `bytes`; `&mut self` makes the borrow unique.
            Backing::Mapped { map, .. } => unsafe { std::slice::from_raw_parts_mut(map.as_ptr(), self.len) },
        }
    }
}

/// A pool of `len` bytes in a `memfd`, faulted in in file order, mapped
/// linearly (`shuffle_seed: None`) or as shuffled page runs.
fn pool(len: usize, shuffle_seed: Option<u64>) -> Result<Region, String> {
    let pool = host::memfd(c"capdma-bench-pool", len as u64).map_err(|e| format!("memfd of {len} bytes: {e}"))?;
    // Fault the pool in in file order (MAP_POPULATE walks it front to back).
    let linear = Mapping::shared(pool.as_fd(), 0, len, true).map_err(|e| format!("mmap of {len} bytes: {e}"))?;
    let Some(seed) = shuffle_seed else {
        let mut region = Region {
            backing: Backing::Mapped { map: linear, _pool: Some(pool), _ticket: None },
            len,
            model: "4 KiB pages of a memfd pool, one linear mapping".into(),
        };
        region.bytes_mut().fill(0);
        return Ok(region);
    };
    // The pages stay in the file.
    drop(linear);

    let pages = len / PAGE;
    let mut rng = placement::rng(seed ^ 0x5CA7_7E2E_D000_0001);
    let mut first = 0usize;
    let mut pool_runs: Vec<(u64, usize)> = placement::runs(pages, &mut rng)
        .into_iter()
        .map(|n| {
            let run = ((first * PAGE) as u64, n * PAGE);
            first += n;
            run
        })
        .collect();
    placement::shuffle(&mut pool_runs, &mut rng);

    let ticket = host::PROCESS_BUDGET.take(pool_runs.len(), host::mapping_budget()).map_err(|e| e.to_string())?;
    let map = Mapping::of_runs(pool.as_fd(), &pool_runs).map_err(|e| format!("mapping {} page runs: {e}", pool_runs.len()))?;
    let mut region = Region {
        backing: Backing::Mapped { map, _pool: Some(pool), _ticket: Some(ticket) },
        len,
        model: format!(
            "4 KiB pages of a memfd pool mapped in {} shuffled runs of 1-16 pages (mean {:.2}) into one virtual range",
            pool_runs.len(),
            crate::bench::ratio(pages as u64, pool_runs.len() as u64)
        ),
    };
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
