//! The cost of programming a frame in S/G mode — the bus core's own
//! routine, [`capdma_bus::SgEngine::post_frame`] (what `ProgramFrame` runs
//! under the channel lock: validation of every element, room check, one
//! `SgDescriptor` per element written into the descriptor ring, release
//! fence), followed by the `RING_PRODUCER` write — and how many elements a
//! frame has with and without merging of physically adjacent pages.
use super::placement::{self, PAGE};
use super::stats::{summarize, Summary};
use capdma_bus::ports::CommonBuffer;
use capdma_bus::SgEngine;
use capdma_interface::descriptor::{CompletionRecord, SgDescriptor, CQ_STATUS_OK};
use capdma_interface::table::SgElement;
use serde::Serialize;
use std::time::Instant;

/// Descriptors in the benchmark's ring.
pub const RING_ENTRIES: u32 = 4096;
/// The modelled board's largest element (`MAX_TRANSFER`), bytes.
pub const MAX_TRANSFER: u32 = 1 << 20;
/// RAM of the modelled machine, for the page placement.
pub const RAM_BYTES: u64 = 16 << 30;
/// The logical address the ring would have on the board (any value: the
/// engine only writes descriptors into its memory).
const RING_LOGICAL: u64 = 0x1_0000_0000;

/// A descriptor ring in host memory with the bus core's S/G engine over it.
struct Ring {
    /// The engine; declared before `memory`, so it is dropped first.
    engine: SgEngine,
    /// The ring's memory (`RING_ENTRIES` descriptors of four `u64`s): held
    /// for the engine, which writes it through its own pointer.
    #[cfg_attr(not(test), allow(dead_code, reason = "kept alive for the engine; read by the tests"))]
    memory: Vec<u64>,
    /// Stands for the `RING_PRODUCER` register.
    doorbell: u32,
}

impl Ring {
    /// An empty ring of [`RING_ENTRIES`] descriptors, 64-bit board.
    fn new() -> Result<Self, String> {
        let words = RING_ENTRIES as usize * size_of::<SgDescriptor>() / size_of::<u64>();
        let mut memory = vec![0u64; words];
        let common = CommonBuffer { va: memory.as_mut_ptr().cast(), logical: RING_LOGICAL, bytes: words * size_of::<u64>() };
        // SAFETY: `memory` is a heap buffer of `common.bytes` bytes, 8-byte
        // aligned, whose heap block does not move when `Ring` does; it is
        // dropped after the engine and only the engine writes it.
        let engine = unsafe { SgEngine::over_memory(common, RING_ENTRIES, MAX_TRANSFER, true) }
            .ok_or("SgEngine::over_memory refused the benchmark's ring")?;
        Ok(Self { engine, memory, doorbell: 0 })
    }

    /// `ProgramFrame`'s work for one frame: the engine posts it, then the
    /// producer "register" is written (a volatile store, as an MMIO write
    /// is not optimised away). Returns the counter of its first descriptor.
    fn program(&mut self, tag: u32, elements: &[SgElement]) -> Result<u32, String> {
        let first = self.engine.post_frame(tag, elements, 0).map_err(|s| format!("post_frame: status {s:#x}"))?;
        // SAFETY: a valid, aligned, exclusively borrowed `u32`.
        unsafe { std::ptr::write_volatile(&raw mut self.doorbell, self.engine.producer()) };
        Ok(first)
    }

    /// The board's completion of the frame posted at `first` under `tag`
    /// (untimed): the engine checks the record and frees the descriptors.
    fn complete(&mut self, first: u32, tag: u32) -> Result<(), String> {
        let record = CompletionRecord { index: first % RING_ENTRIES, tag, status: CQ_STATUS_OK, ..CompletionRecord::default() };
        self.engine.complete(&record).map(|_| ()).map_err(|f| format!("complete: {f:?}"))
    }
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
/// A programming call or its completion failed (a bug).
pub fn measure(sizes: &[(String, usize)], frames: usize, samples: usize, seed: u64, host_runs: &dyn Fn(usize) -> Option<usize>) -> Result<SgCost, String> {
    let mut placement_rng = placement::rng(seed);
    let mut out = Vec::new();
    for (name, bytes) in sizes {
        let pages = bytes.div_ceil(PAGE);
        let placed: Vec<Vec<u64>> = (0..frames.max(1)).map(|_| placement::page_addresses(pages, RAM_BYTES, &mut placement_rng)).collect();
        let unmerged: Vec<Vec<SgElement>> = placed.iter().map(|p| elements(p, *bytes, false)).collect();
        let merged: Vec<Vec<SgElement>> = placed.iter().map(|p| elements(p, *bytes, true)).collect();
        let count = |lists: &[Vec<SgElement>]| summarize(&lists.iter().map(|l| l.len() as f64).collect::<Vec<_>>());

        let mut ring = Ring::new()?;
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
                    let t = Instant::now();
                    let first = ring.program(tag, list)?;
                    ns_lists += t.elapsed().as_secs_f64() * 1e9;
                    ring.complete(first, tag)?;
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
        routine: "the bus core's SgEngine::post_frame (ProgramFrame's work: validation of all elements, room check, one \
                  SgDescriptor per element written with volatile stores into a 4096-entry ring, hot in cache; release fence), \
                  then the producer register write"
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
    fn the_ring_posts_and_completes_frames_through_the_bus_engine() {
        let mut ring = Ring::new().unwrap();
        let list = elements(&[0x10_000, 0x11_000, 0x40_000], 3 * PAGE, true);
        for tag in 0..3u32 {
            let first = ring.program(tag, &list).unwrap();
            assert_eq!(first, tag * 2);
            assert_eq!(ring.doorbell, (tag + 1) * 2);
            ring.complete(first, tag).unwrap();
        }
        assert!(ring.program(9, &[]).is_err(), "the engine's validation refuses an empty list");
        assert!(ring.complete(6, 9).is_err(), "nothing posted under that tag");
        // The engine wrote the descriptors: entry 4 is the third frame's first.
        assert_eq!(ring.memory[4 * 4], 0x10_000);
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
