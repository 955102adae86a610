//! The physical memory map: `MmGetPhysicalMemoryRanges`.

use capdma_winvm::{Machine, Stop};

use crate::nt::layout::dma::physical_memory_range;
use crate::nt::pool::{PoolBlock, POOL_FLAG_NON_PAGED};
use crate::nt::Nt;

/// The pool tag of the block `MmGetPhysicalMemoryRanges` returns.
pub const RANGES_TAG: u32 = u32::from_le_bytes(*b"MmPr");

/// `PPHYSICAL_MEMORY_RANGE MmGetPhysicalMemoryRanges(void)` (ntddk.h; the
/// documented successor "MmGetPhysicalMemoryRangesEx2 function" describes
/// the same block; `PASSIVE_LEVEL`): a non-paged pool block holding one
/// `PHYSICAL_MEMORY_RANGE` (`BaseAddress`, `NumberOfBytes`) per RAM range
/// of the machine, ascending, followed by an entry that is zero in both.
/// The caller frees it with `ExFreePool`; until then it is a live pool
/// allocation of the caller (a leak at unload otherwise).
///
/// # Errors
/// [`Stop::Host`] when the machine's own frames are exhausted.
pub(super) fn mm_get_physical_memory_ranges(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let mut ranges: Vec<(u64, u64)> = m.memory().ram().iter().map(|r| (r.gpa, r.len)).collect();
    ranges.sort_unstable();
    let bytes = (ranges.len() as u64 + 1) * physical_memory_range::SIZE;
    // As ExAllocatePool2 places a block: own pages, at the end of the last
    // page (16-byte aligned), so an overrun faults.
    let pages = bytes.div_ceil(4096);
    let pages_va = nt.alloc_kernel(m, pages * 4096)?;
    let va = pages_va + pages * 4096 - bytes.div_ceil(16) * 16;
    for (i, (base, len)) in ranges.iter().enumerate() {
        let at = va + i as u64 * physical_memory_range::SIZE;
        m.write_u64(at + physical_memory_range::BASE_ADDRESS, *base)?;
        m.write_u64(at + physical_memory_range::NUMBER_OF_BYTES, *len)?;
    }
    // The terminator: alloc_kernel's pages are zeroed, written anyway.
    let end = va + ranges.len() as u64 * physical_memory_range::SIZE;
    m.write(end, &[0u8; 16])?;
    let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    nt.pool.freed.remove(&va);
    nt.pool.live.insert(va, PoolBlock { bytes, tag: RANGES_TAG, flags: POOL_FLAG_NON_PAGED, pages_va, pages, caller });
    Ok(va)
}
