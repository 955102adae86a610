//! Which physical page frames are free, and where new allocations go: the
//! seeded scattered placement, the top-down contiguous search, and the
//! contiguous-failure fault injection. Knows nothing of host memory.
use super::{placement, ContiguousFailure, MemoryError};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

/// The frame allocator's state.
#[derive(Debug)]
pub(super) struct Frames {
    rng: ChaCha8Rng,
    /// RAM regions as `[first_frame, end_frame)`, ascending.
    regions: Vec<(u64, u64)>,
    /// Frames of live allocations.
    used: BTreeSet<u64>,
    contiguous_attempts: u32,
    contiguous_failure: Option<ContiguousFailure>,
}

impl Frames {
    /// RAM `regions` (`[first_frame, end_frame)`, ascending, non-empty
    /// ones), placement seeded by `seed`.
    pub(super) fn new(seed: u64, regions: Vec<(u64, u64)>, contiguous_failure: Option<ContiguousFailure>) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed), regions, used: BTreeSet::new(), contiguous_attempts: 0, contiguous_failure }
    }

    /// The RAM regions, `[first_frame, end_frame)`, ascending.
    pub(super) fn regions(&self) -> &[(u64, u64)] {
        &self.regions
    }

    /// Changes the fault injection and restarts its count.
    pub(super) fn set_contiguous_failure(&mut self, failure: Option<ContiguousFailure>) {
        self.contiguous_failure = failure;
        self.contiguous_attempts = 0;
    }

    /// `true` when every frame of `first..=last` belongs to a live allocation.
    pub(super) fn all_used(&self, first: u64, last: u64) -> bool {
        last >= first && self.used.range(first..=last).count() as u64 == last - first + 1
    }

    /// `true` when `frame` belongs to a live allocation.
    pub(super) fn is_used(&self, frame: u64) -> bool {
        self.used.contains(&frame)
    }

    /// Marks `frames` free again.
    pub(super) fn release(&mut self, frames: impl IntoIterator<Item = u64>) {
        for f in frames {
            self.used.remove(&f);
        }
    }

    /// Takes `pages` frames at seeded pseudo-random places, in runs of 1 to
    /// 16 physically adjacent frames (see [`placement::run_length`]), in virtual order.
    ///
    /// # Errors
    /// [`MemoryError::OutOfMemory`] when no free run is left; nothing is taken.
    pub(super) fn place_scattered(&mut self, pages: usize) -> Result<Vec<u64>, MemoryError> {
        let mut frames = Vec::with_capacity(pages);
        while frames.len() < pages {
            let want = placement::run_length(&mut self.rng).min(pages - frames.len());
            let Some(start) = self.place_run(want) else {
                self.release(frames);
                return Err(MemoryError::OutOfMemory);
            };
            for f in start..start + want as u64 {
                self.used.insert(f);
                frames.push(f);
            }
        }
        Ok(frames)
    }

    /// Takes `pages` adjacent frames, the first a multiple of `align_frames`,
    /// all below frame `limit`, as high as they fit (top-down, as Windows
    /// places contiguous memory). `injectable` attempts count for (and may
    /// fail by) the configured [`ContiguousFailure`]. Returns the first frame.
    ///
    /// # Errors
    /// [`MemoryError::OutOfMemory`] for an injected failure or no such run.
    pub(super) fn place_contiguous(&mut self, pages: u64, align_frames: u64, limit: u64, injectable: bool) -> Result<u64, MemoryError> {
        if injectable {
            self.contiguous_attempts += 1;
            let n = self.contiguous_attempts;
            let fail = match self.contiguous_failure {
                None => false,
                Some(ContiguousFailure::Always) => true,
                Some(ContiguousFailure::AfterSuccesses(k)) => n > k,
                Some(ContiguousFailure::Nth(k)) => n == k,
            };
            if fail {
                return Err(MemoryError::OutOfMemory);
            }
        }
        let mut found = None;
        for &(first, end) in self.regions.iter().rev() {
            let mut hi = end.min(limit);
            while found.is_none() && hi >= first + pages {
                let start = (hi - pages) / align_frames * align_frames;
                if start < first {
                    break;
                }
                match self.used.range(start..start + pages).next_back() {
                    Some(&busy) => hi = busy,
                    None => found = Some(start),
                }
            }
            if found.is_some() {
                break;
            }
        }
        let start = found.ok_or(MemoryError::OutOfMemory)?;
        self.used.extend(start..start + pages);
        Ok(start)
    }

    /// Finds `run` free adjacent frames at a random place; falls back to a
    /// scan. Does not mark them used.
    fn place_run(&mut self, run: usize) -> Option<u64> {
        let run = run as u64;
        let total: u64 = self.regions.iter().map(|(a, b)| b - a).sum();
        if total == 0 {
            return None;
        }
        for _ in 0..64 {
            let mut pick = self.rng.next_u64() % total;
            for &(first, end) in &self.regions {
                let size = end - first;
                if pick < size {
                    let start = first + pick;
                    if start + run <= end && self.used.range(start..start + run).next().is_none() {
                        return Some(start);
                    }
                    break;
                }
                pick -= size;
            }
        }
        // Crowded: first fit from the bottom.
        for &(first, end) in &self.regions {
            let mut start = first;
            while start + run <= end {
                match self.used.range(start..start + run).next_back() {
                    Some(&busy) => start = busy + 1,
                    None => return Some(start),
                }
            }
        }
        None
    }
}

/// `frames` (in virtual order) as runs of physically adjacent frames:
/// `(first_frame, count)` each, in the same order.
pub(super) fn runs(frames: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &f in frames {
        match out.last_mut() {
            Some((first, n)) if *first + *n == f => *n += 1,
            _ => out.push((f, 1)),
        }
    }
    out
}

/// `frames` in ascending order, as runs of adjacent frames `(first_frame, count)`.
pub(super) fn sorted_runs(frames: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = frames.to_vec();
    sorted.sort_unstable();
    runs(&sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_adjacent_frames_in_order_only() {
        assert_eq!(runs(&[5, 6, 7, 2, 3, 9, 8]), [(5, 3), (2, 2), (9, 1), (8, 1)]);
        assert_eq!(sorted_runs(&[5, 6, 7, 2, 3, 9, 8]), [(2, 2), (5, 5)]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn contiguous_is_top_down_aligned_and_below_the_limit() {
        let mut f = Frames::new(1, vec![(256, 1000), (2000, 3000)], None);
        assert_eq!(f.place_contiguous(4, 1, u64::MAX, true), Ok(2996));
        assert_eq!(f.place_contiguous(4, 16, 1000, true), Ok(992));
        assert!(f.all_used(992, 995) && !f.all_used(991, 995) && !f.is_used(996));
        f.release(992..996);
        assert!(!f.is_used(992));
        assert_eq!(f.place_contiguous(800, 1, 1000, true), Err(MemoryError::OutOfMemory));
    }
}
