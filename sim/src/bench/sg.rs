//! The cost of programming a frame in S/G mode: turning a scatter/gather
//! list into hardware [`SgDescriptor`]s in the channel's descriptor ring,
//! and how many elements a frame has with and without merging of physically
//! adjacent pages.
//!
//! The bus core had no public routine that writes descriptors when this was
//! written, so [`program_frame`] is a local model of `ProgramFrame` as
//! `docs/architecture.md` specifies it: room check against the free-running
//! counters, validation of every element before anything is written
//! (nothing written on error), one descriptor per element written with
//! zerocopy into the ring memory (start/end-of-frame flags, the tag), a
//! release fence, and the producer "register" write (a volatile store).
use super::placement::{self, PAGE};
use super::stats::{summarize, Summary};
use capdma_interface::descriptor::{SgDescriptor, DESC_END_OF_FRAME, DESC_START_OF_FRAME};
use capdma_interface::status::{NtStatus, STATUS_DEVICE_BUSY, STATUS_INVALID_PARAMETER};
use capdma_interface::table::SgElement;
use serde::Serialize;
use std::sync::atomic::{fence, Ordering};
use std::time::Instant;
use zerocopy::FromBytes;

/// Descriptors in the modelled ring.
pub const RING_ENTRIES: u32 = 4096;
/// The modelled board's largest element (`MAX_TRANSFER`), bytes.
pub const MAX_TRANSFER: u32 = 1 << 20;
/// RAM of the modelled machine, for the page placement.
pub const RAM_BYTES: u64 = 16 << 30;

/// A descriptor ring in (host) common-buffer memory and its counters.
pub struct DescriptorRing {
    memory: Vec<u8>,
    producer: u32,
    retired: u32,
    /// Stands for the `RING_PRODUCER` register.
    doorbell: u32,
}

impl DescriptorRing {
    /// An empty ring of [`RING_ENTRIES`] descriptors.
    #[must_use]
    pub fn new() -> Self {
        Self { memory: vec![0; RING_ENTRIES as usize * size_of::<SgDescriptor>()], producer: 0, retired: 0, doorbell: 0 }
    }

    /// Frees every posted descriptor (as if all frames completed).
    pub fn retire_all(&mut self) {
        self.retired = self.producer;
    }

    /// The descriptor at ring entry `index`.
    #[cfg(test)]
    #[must_use]
    pub fn descriptor(&self, index: u32) -> Option<SgDescriptor> {
        let at = index as usize * size_of::<SgDescriptor>();
        SgDescriptor::read_from_bytes(self.memory.get(at..at + size_of::<SgDescriptor>())?).ok()
    }

    /// The last value written to the producer register.
    #[cfg(test)]
    #[must_use]
    pub fn doorbell(&self) -> u32 {
        self.doorbell
    }
}

impl Default for DescriptorRing {
    fn default() -> Self {
        Self::new()
    }
}

/// Posts one frame of `elements` under `tag`; returns the counter of its
/// first descriptor.
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` for no elements, an empty or oversized
/// element, or an element whose end overflows 64 bits;
/// `STATUS_DEVICE_BUSY` when the ring lacks room. Nothing is written then.
pub fn program_frame(ring: &mut DescriptorRing, tag: u32, elements: &[SgElement]) -> Result<u32, NtStatus> {
    let count = u32::try_from(elements.len()).map_err(|_| STATUS_INVALID_PARAMETER)?;
    if count == 0 {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let free = RING_ENTRIES - ring.producer.wrapping_sub(ring.retired);
    if count > free {
        return Err(STATUS_DEVICE_BUSY);
    }
    let bad = |e: &SgElement| {
        e.byte_count == 0 || e.byte_count > MAX_TRANSFER || e.logical_address.checked_add(u64::from(e.byte_count)).is_none()
    };
    if elements.iter().any(bad) {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let slots = <[SgDescriptor]>::mut_from_bytes(&mut ring.memory).map_err(|_| STATUS_INVALID_PARAMETER)?;
    let first = ring.producer;
    for (k, e) in (0u32..).zip(elements) {
        let mut flags = 0;
        if k == 0 {
            flags |= DESC_START_OF_FRAME;
        }
        if k + 1 == count {
            flags |= DESC_END_OF_FRAME;
        }
        let entry = (first.wrapping_add(k) % RING_ENTRIES) as usize;
        if let Some(slot) = slots.get_mut(entry) {
            *slot = SgDescriptor { address: e.logical_address, byte_count: e.byte_count, flags, tag, ..SgDescriptor::default() };
        }
    }
    fence(Ordering::Release);
    ring.producer = first.wrapping_add(count);
    // SAFETY: a valid, aligned, exclusively borrowed `u32`; volatile only so
    // the "register" write is not optimised away, as a real MMIO write is not.
    unsafe { std::ptr::write_volatile(&raw mut ring.doorbell, ring.producer) };
    Ok(first)
}

/// The S/G list of a buffer whose pages are at `pages` (virtual order),
/// `bytes` long from the first page's start: one element per page, or one
/// per run of physically adjacent pages when `merge` (capped at
/// [`MAX_TRANSFER`]).
#[must_use]
pub fn elements(pages: &[u64], bytes: usize, merge: bool) -> Vec<SgElement> {
    let mut out: Vec<SgElement> = Vec::new();
    let mut left = bytes;
    for &pa in pages {
        if left == 0 {
            break;
        }
        let n = u32::try_from(left.min(PAGE)).unwrap_or(0);
        left -= n as usize;
        if merge {
            if let Some(last) = out.last_mut() {
                let adjacent = last.logical_address + u64::from(last.byte_count) == pa;
                if adjacent && last.byte_count + n <= MAX_TRANSFER {
                    last.byte_count += n;
                    continue;
                }
            }
        }
        out.push(SgElement { logical_address: pa, byte_count: n, alignment: 0 });
    }
    out
}

/// Element counts and programming cost for one frame size.
#[derive(Clone, Debug, Serialize)]
pub struct SgFrameCost {
    /// `"1080p YUY2"`.
    pub frame: String,
    /// Bytes of the frame (`lines × stride`, stride = line bytes).
    pub frame_bytes: usize,
    /// Frames placed (each with fresh seeded placement).
    pub frames_modelled: usize,
    /// Elements per frame without merging (one per page): min, mean, max.
    pub elements_unmerged: Summary,
    /// Elements per frame merging physically adjacent pages, placement model.
    pub elements_merged: Summary,
    /// Elements per frame merging adjacent pages as this host's kernel
    /// placed an ordinary anonymous buffer of that size, 4 KiB pages
    /// (`/proc/self/pagemap`); `None` when the frame numbers are not readable.
    pub elements_merged_host: Option<usize>,
    /// Nanoseconds to program one element (median, min, max over samples).
    pub ns_per_element: Summary,
    /// Median cost of programming a frame, nanoseconds, unmerged list.
    pub ns_per_frame_unmerged: f64,
    /// Median cost of programming a frame, nanoseconds, merged list.
    pub ns_per_frame_merged: f64,
}

/// S/G programming figures of the report.
#[derive(Clone, Debug, Serialize)]
pub struct SgCost {
    /// How the cost was measured.
    pub routine: String,
    /// How pages were placed.
    pub placement: String,
    /// Per frame size.
    pub frames: Vec<SgFrameCost>,
}

/// Measures the S/G figures for frames of `sizes` (`(name, bytes)`).
///
/// # Errors
/// A programming call failed (a bug in the model).
pub fn measure(sizes: &[(String, usize)], frames: usize, samples: usize, seed: u64, host_runs: &dyn Fn(usize) -> Option<usize>) -> Result<SgCost, String> {
    let mut placement_rng = placement::rng(seed);
    let mut out = Vec::new();
    for (name, bytes) in sizes {
        let pages = bytes.div_ceil(PAGE);
        let placed: Vec<Vec<u64>> = (0..frames.max(1)).map(|_| placement::page_addresses(pages, RAM_BYTES, &mut placement_rng)).collect();
        let unmerged: Vec<Vec<SgElement>> = placed.iter().map(|p| elements(p, *bytes, false)).collect();
        let merged: Vec<Vec<SgElement>> = placed.iter().map(|p| elements(p, *bytes, true)).collect();
        let count = |lists: &[Vec<SgElement>]| summarize(&lists.iter().map(|l| l.len() as f64).collect::<Vec<_>>());

        let mut ring = DescriptorRing::new();
        let mut per_element = Vec::with_capacity(samples);
        let mut per_frame_unmerged = Vec::with_capacity(samples);
        let mut per_frame_merged = Vec::with_capacity(samples);
        // One untimed pass warms the ring and the lists.
        for round in 0..=samples {
            let mut ns_total = 0.0;
            let mut total = 0usize;
            for (lists, per_frame) in [(&unmerged, &mut per_frame_unmerged), (&merged, &mut per_frame_merged)] {
                let mut ns_lists = 0.0;
                for (tag, list) in (0u32..).zip(lists.iter()) {
                    ring.retire_all();
                    let t = Instant::now();
                    program_frame(&mut ring, tag, list).map_err(|s| format!("program_frame: status {s:#x}"))?;
                    ns_lists += t.elapsed().as_secs_f64() * 1e9;
                    total += list.len();
                }
                if round > 0 {
                    per_frame.push(ns_lists / lists.len() as f64);
                }
                ns_total += ns_lists;
            }
            if round > 0 {
                per_element.push(ns_total / total.max(1) as f64);
            }
        }
        out.push(SgFrameCost {
            frame: name.clone(),
            frame_bytes: *bytes,
            frames_modelled: placed.len(),
            elements_unmerged: count(&unmerged),
            elements_merged: count(&merged),
            elements_merged_host: host_runs(*bytes),
            ns_per_element: summarize(&per_element),
            ns_per_frame_unmerged: summarize(&per_frame_unmerged).median,
            ns_per_frame_merged: summarize(&per_frame_merged).median,
        });
    }
    Ok(SgCost {
        routine: "local model of the bus core's ProgramFrame: room check, validation of all elements, one SgDescriptor per \
                  element written with zerocopy into a 4096-entry ring (hot in cache), release fence, producer register write"
            .into(),
        placement: "frame buffer page-aligned; pages in runs of 1 (55 %), 2-4 (30 %) or 5-16 (15 %) physically adjacent pages at \
                    seeded random frames (the simulator's scattered-allocation model)"
            .into(),
        frames: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_carry_flags_tag_and_wrap() {
        let mut ring = DescriptorRing::new();
        ring.producer = RING_ENTRIES - 1;
        ring.retired = RING_ENTRIES - 1;
        let list = [
            SgElement { logical_address: 0x1_0000_0000, byte_count: 4096, alignment: 0 },
            SgElement { logical_address: 0x2000, byte_count: 100, alignment: 0 },
        ];
        assert_eq!(program_frame(&mut ring, 9, &list), Ok(RING_ENTRIES - 1));
        let a = ring.descriptor(RING_ENTRIES - 1).unwrap();
        let b = ring.descriptor(0).unwrap();
        assert_eq!((a.address, a.byte_count, a.flags, a.tag), (0x1_0000_0000, 4096, DESC_START_OF_FRAME, 9));
        assert_eq!((b.address, b.byte_count, b.flags, b.tag), (0x2000, 100, DESC_END_OF_FRAME, 9));
        assert_eq!(ring.doorbell(), RING_ENTRIES + 1);
    }

    #[test]
    fn bad_lists_write_nothing() {
        let mut ring = DescriptorRing::new();
        let bad = [SgElement { logical_address: 0x1000, byte_count: 16, alignment: 0 }, SgElement::default()];
        assert_eq!(program_frame(&mut ring, 1, &bad), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(program_frame(&mut ring, 1, &[]), Err(STATUS_INVALID_PARAMETER));
        let big = vec![SgElement { logical_address: 0x1000, byte_count: 16, alignment: 0 }; RING_ENTRIES as usize + 1];
        assert_eq!(program_frame(&mut ring, 1, &big), Err(STATUS_DEVICE_BUSY));
        assert_eq!(ring.descriptor(0), Some(SgDescriptor::default()));
        assert_eq!(ring.doorbell(), 0);
    }

    #[test]
    fn merging_joins_adjacent_pages_only() {
        let pages = [0x10_000, 0x11_000, 0x12_000, 0x40_000, 0x41_000];
        let bytes = 4 * PAGE + 10;
        let plain = elements(&pages, bytes, false);
        assert_eq!(plain.len(), 5);
        assert_eq!(plain[4].byte_count, 10);
        let merged = elements(&pages, bytes, true);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].logical_address, merged[0].byte_count), (0x10_000, 3 * 4096));
        assert_eq!((merged[1].logical_address, merged[1].byte_count), (0x40_000, 4096 + 10));
        assert_eq!(merged.iter().map(|e| e.byte_count as usize).sum::<usize>(), bytes);
    }
}
