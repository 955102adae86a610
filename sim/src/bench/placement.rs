//! Seeded page placement: how the pages of an application's frame buffer
//! fall in physical memory.
//!
//! The model is the one the simulated machine's scattered allocator uses
//! (`PhysicalMemory::allocate_scattered`): the buffer is a sequence of runs
//! of physically adjacent pages, of 1 page (55 %), 2 to 4 pages (30 %) or
//! 5 to 16 pages (15 %), each run at a pseudo-random place in RAM. It is
//! restated here (not called) so the benchmark does not depend on the
//! simulator's allocator state; the generator is a `SplitMix64`, so the same
//! seed gives the same placement.

/// Bytes of a page.
pub const PAGE: usize = 4096;

/// `SplitMix64`: small, seedable, good enough for placement and patterns.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A value in `0..bound` (`bound > 0`; slightly biased, which does not matter here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The `SplitMix64` output function: a bijective mix of `z`.
#[must_use]
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Length in pages of the next physically adjacent run.
pub fn run_length(rng: &mut Rng) -> usize {
    let roll = rng.below(100);
    // The casts are of values below 16.
    if roll < 55 {
        1
    } else if roll < 85 {
        2 + usize::from(u8::try_from(rng.below(3)).unwrap_or(0))
    } else {
        5 + usize::from(u8::try_from(rng.below(12)).unwrap_or(0))
    }
}

/// Splits `pages` pages into runs (lengths from [`run_length`]), in order.
pub fn runs(pages: usize, rng: &mut Rng) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = pages;
    while left > 0 {
        let n = run_length(rng).min(left);
        out.push(n);
        left -= n;
    }
    out
}

/// Physical page addresses of a buffer of `pages` pages: runs of adjacent
/// pages at random page frames between 1 MiB and `ram_bytes` (skipping the
/// PCI hole `[3 GiB, 4 GiB)`), in virtual order.
pub fn page_addresses(pages: usize, ram_bytes: u64, rng: &mut Rng) -> Vec<u64> {
    const PAGE64: u64 = PAGE as u64;
    const LOW: u64 = 1 << 20;
    const HOLE: u64 = 3 << 30;
    const FOUR_GIB: u64 = 1 << 32;
    let frames = (ram_bytes.max(8 << 30) - LOW) / PAGE64;
    let hole_frames = (FOUR_GIB - HOLE) / PAGE64;
    let mut out = Vec::with_capacity(pages);
    for n in runs(pages, rng) {
        let mut frame = LOW / PAGE64 + rng.below(frames.saturating_sub(hole_frames + 16));
        if frame * PAGE64 >= HOLE {
            frame += hole_frames;
        }
        for k in 0..n as u64 {
            out.push((frame + k) * PAGE64);
        }
    }
    out
}

/// Shuffles `items` in place (Fisher-Yates).
pub fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_pages_with_the_model_lengths() {
        let mut rng = Rng::new(7);
        let r = runs(10_000, &mut rng);
        assert_eq!(r.iter().sum::<usize>(), 10_000);
        assert!(r.iter().all(|&n| (1..=16).contains(&n)));
        let singles = r.iter().filter(|&&n| n == 1).count();
        // 55 % of runs are single pages.
        assert!(singles * 100 > r.len() * 45 && singles * 100 < r.len() * 65, "{singles} of {}", r.len());
    }

    #[test]
    fn addresses_avoid_low_memory_and_the_hole() {
        let mut rng = Rng::new(1);
        let a = page_addresses(5000, 16 << 30, &mut rng);
        assert_eq!(a.len(), 5000);
        assert!(a.iter().all(|&p| p >= 1 << 20 && !((3 << 30)..(1 << 32)).contains(&p) && p % 4096 == 0));
        assert_eq!(a, page_addresses(5000, 16 << 30, &mut Rng::new(1)), "seeded");
    }

    #[test]
    fn shuffle_permutes() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut v, &mut Rng::new(3));
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
