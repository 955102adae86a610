//! A common buffer with its aligned view, bounds-checked volatile access to
//! its 32-byte entries (S/G descriptors and completion records), and the
//! allocation policy every channel buffer follows: aligned to the board's
//! `CAPS.alignment` and reachable by the board (below 4 GiB for a 32-bit
//! board). The engines size their rings (`channel::sg::DescriptorRing`,
//! `channel::slots::SlotMemory`); the completion queue is
//! `channel::CompletionQueue`.
use crate::mode::FOUR_GIB;
use crate::ports::{CommonBuffer, DmaAdapterPort};
use capdma_interface::descriptor::{CompletionRecord, SgDescriptor};
use capdma_interface::regs::Caps;

/// Page size the adapter aligns common buffers to, bytes.
pub use capdma_interface::kernel::PAGE_SIZE;
/// Bytes of one ring or queue entry (`SgDescriptor`, `CompletionRecord`).
pub const ENTRY_BYTES: u32 = 32;

/// One `AllocateCommonBuffer` allocation and the part of it the board uses:
/// `va`/`logical` aligned to the board's alignment, `bytes` usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DmaBuffer {
    /// Exactly as allocated (what `FreeCommonBuffer` takes back).
    pub allocation: CommonBuffer,
    /// Kernel virtual address of the aligned start.
    pub va: *mut u8,
    /// Logical address of the aligned start.
    pub logical: u64,
    /// Usable bytes from the aligned start.
    pub bytes: usize,
}

// SAFETY: a `DmaBuffer` is a handle to device-owned common-buffer memory
// that lives from device start to device stop; the core only touches that
// memory under the owning channel's lock, so moving the handle between
// threads (processors) is sound.
unsafe impl Send for DmaBuffer {}

/// Rounds `value` up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) const fn round_up(value: u64, align: u64) -> Option<u64> {
    let mask = align.wrapping_sub(1);
    match value.checked_add(mask) {
        Some(v) => Some(v & !mask),
        None => None,
    }
}

/// Bytes of `entries` 32-byte ring or queue entries; `None` on overflow.
pub(crate) fn entries_bytes(entries: u32) -> Option<usize> {
    usize::try_from(entries).ok()?.checked_mul(ENTRY_BYTES as usize)
}

impl DmaBuffer {
    /// The allocation policy of every channel buffer: `bytes` usable bytes
    /// aligned to `caps.alignment` ([`Self::allocate`]) that the board can
    /// reach — below 4 GiB for a 32-bit board (the adapter's
    /// `Dma32BitAddresses` guarantees it, this checks; a buffer that ends
    /// above is freed again). `PASSIVE_LEVEL`. `None` when the adapter has
    /// no such buffer.
    pub fn allocate_reachable<A: DmaAdapterPort>(adapter: &A, bytes: usize, caps: Caps) -> Option<Self> {
        let buffer = Self::allocate(adapter, bytes, caps.alignment)?;
        let end = u64::try_from(buffer.bytes).ok().and_then(|b| buffer.logical.checked_add(b));
        if caps.address_64 || end.is_some_and(|end| end <= FOUR_GIB) {
            Some(buffer)
        } else {
            buffer.free(adapter);
            None
        }
    }

    /// A ring or queue of `entries` 32-byte entries, allocated by
    /// [`Self::allocate_reachable`]. `PASSIVE_LEVEL`.
    pub fn allocate_entries<A: DmaAdapterPort>(adapter: &A, entries: u32, caps: Caps) -> Option<Self> {
        Self::allocate_reachable(adapter, entries_bytes(entries)?, caps)
    }

    /// A view of all of `memory` (already aligned as the board needs), for
    /// memory the caller owns rather than an allocation of the adapter's
    /// (the benchmark's descriptor ring). `None` for a null `va`.
    pub fn whole(memory: CommonBuffer) -> Option<Self> {
        Self::aligned_view(memory, memory.bytes, 1)
    }

    /// Allocates `bytes` usable bytes whose logical address is aligned to
    /// `alignment` (a power of two): `alignment <= 4096` relies on the
    /// adapter's page alignment; a larger one over-allocates by
    /// `alignment - 4096` and aligns inside. `PASSIVE_LEVEL`.
    /// `None` when the adapter has no such buffer (or on overflow).
    pub fn allocate<A: DmaAdapterPort>(adapter: &A, bytes: usize, alignment: u32) -> Option<Self> {
        let align = u64::from(alignment.max(PAGE_SIZE));
        let extra = usize::try_from(align.checked_sub(u64::from(PAGE_SIZE))?).ok()?;
        let total = bytes.checked_add(extra)?;
        let allocation = adapter.allocate_common_buffer(total)?;
        let view = Self::aligned_view(allocation, bytes, align);
        if view.is_none() {
            adapter.free_common_buffer(allocation);
        }
        view
    }

    fn aligned_view(allocation: CommonBuffer, bytes: usize, align: u64) -> Option<Self> {
        let logical = round_up(allocation.logical, align)?;
        let offset = usize::try_from(logical.checked_sub(allocation.logical)?).ok()?;
        if offset.checked_add(bytes)? > allocation.bytes || allocation.va.is_null() {
            return None;
        }
        Some(Self { allocation, va: allocation.va.wrapping_add(offset), logical, bytes })
    }

    /// `FreeCommonBuffer` of the whole allocation. `PASSIVE_LEVEL`.
    pub fn free<A: DmaAdapterPort>(self, adapter: &A) {
        adapter.free_common_buffer(self.allocation);
    }

    /// Address of 32-byte entry `index`, if it lies inside the buffer and is 8-byte aligned.
    fn entry_ptr(&self, index: u32) -> Option<*mut u64> {
        let start = usize::try_from(index).ok()?.checked_mul(ENTRY_BYTES as usize)?;
        if start.checked_add(ENTRY_BYTES as usize)? > self.bytes {
            return None;
        }
        #[allow(clippy::cast_ptr_alignment, reason = "alignment is checked on the next line")]
        let ptr = self.va.wrapping_add(start).cast::<u64>();
        ptr.is_aligned().then_some(ptr)
    }

    /// Writes descriptor `index` with four volatile 64-bit stores.
    /// Returns `false` (nothing written) when `index` is outside the buffer.
    pub fn write_descriptor(&self, index: u32, descriptor: &SgDescriptor) -> bool {
        let Some(ptr) = self.entry_ptr(index) else {
            return false;
        };
        let words: [u64; 4] = zerocopy::transmute!(*descriptor);
        for (i, word) in words.into_iter().enumerate() {
            // SAFETY: `entry_ptr` checked that the 32 bytes at `ptr` lie
            // inside this live common buffer and that `ptr` is 8-byte
            // aligned; `i < 4`, so the word is one of those 32 bytes. The
            // board only reads descriptors it was handed via RING_PRODUCER,
            // which is written after these stores.
            unsafe { ptr.wrapping_add(i).write_volatile(word) };
        }
        true
    }

    /// Reads completion record `index` with four volatile 64-bit loads.
    /// `None` when `index` is outside the buffer.
    pub fn read_record(&self, index: u32) -> Option<CompletionRecord> {
        let ptr = self.entry_ptr(index)?;
        let mut words = [0u64; 4];
        for (i, word) in words.iter_mut().enumerate() {
            // SAFETY: as in `write_descriptor`: 32 in-bounds, aligned bytes
            // of a live common buffer; the board may write them concurrently,
            // hence volatile loads of plain integers (any bit pattern is valid).
            *word = unsafe { ptr.wrapping_add(i).read_volatile() };
        }
        Some(zerocopy::transmute!(words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_up_works_and_detects_overflow() {
        assert_eq!(round_up(0, 4096), Some(0));
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(8192, 4096), Some(8192));
        assert_eq!(round_up(u64::MAX, 4096), None);
    }

    #[test]
    fn aligned_view_aligns_inside_the_allocation() {
        let mut backing = vec![0u64; 4096];
        let allocation = CommonBuffer { va: backing.as_mut_ptr().cast(), logical: 0x1_0000_3000, bytes: 0x4000 + 0xF000 };
        let v = DmaBuffer::aligned_view(allocation, 0x4000, 0x10000).unwrap();
        assert_eq!(v.logical, 0x1_0001_0000);
        assert_eq!(v.va as usize - allocation.va as usize, 0xD000);
        // Not enough room after aligning: refused.
        let short = CommonBuffer { bytes: 0x4000, ..allocation };
        assert!(DmaBuffer::aligned_view(short, 0x4000, 0x10000).is_none());
    }

    #[test]
    fn entries_round_trip_and_are_bounds_checked() {
        let mut backing = vec![0u64; 16];
        let allocation = CommonBuffer { va: backing.as_mut_ptr().cast(), logical: 0x1000, bytes: 128 };
        let buf = DmaBuffer::aligned_view(allocation, 128, 4096).unwrap();
        let d = SgDescriptor { address: 0xABCD_0000, byte_count: 4096, flags: 3, tag: 9, ..Default::default() };
        assert!(buf.write_descriptor(3, &d));
        assert!(!buf.write_descriptor(4, &d));
        let r = buf.read_record(3).unwrap();
        assert_eq!((r.index, r.byte_count), (0xABCD_0000, 0));
        assert_eq!((r.status, r.frame_number, r.timestamp), (4096, 3, 9));
        assert!(buf.read_record(4).is_none());
        assert_eq!(backing[12], 0xABCD_0000);
    }
}
