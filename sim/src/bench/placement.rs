//! Seeded page placement for the benchmark: where the pages of an
//! application's frame buffer fall in physical memory.
//!
//! The run model is the simulator's own ([`crate::memory::placement`]: runs
//! of physically adjacent pages, 1 page 55 %, 2 to 4 pages 30 %, 5 to 16
//! pages 15 %); only where each run lands is drawn here, over a RAM of a
//! given size, so the benchmark does not depend on a simulated machine's
//! allocator state. The generator is a seeded `ChaCha8Rng`, so the same
//! seed gives the same placement.
use rand::seq::SliceRandom;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use crate::memory::placement::runs;

/// Bytes of a page.
pub const PAGE: usize = crate::memory::PAGE_SIZE;

/// The benchmark's generator: `ChaCha8Rng` from `seed`.
#[must_use]
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Physical page addresses of a buffer of `pages` pages: runs of adjacent
/// pages at random page frames between 1 MiB and `ram_bytes` (skipping the
/// PCI hole `[3 GiB, 4 GiB)`), in virtual order.
pub fn page_addresses(pages: usize, ram_bytes: u64, rng: &mut ChaCha8Rng) -> Vec<u64> {
    const PAGE64: u64 = PAGE as u64;
    const LOW: u64 = 1 << 20;
    const HOLE: u64 = 3 << 30;
    const FOUR_GIB: u64 = 1 << 32;
    let frames = (ram_bytes.max(8 << 30) - LOW) / PAGE64;
    let hole_frames = (FOUR_GIB - HOLE) / PAGE64;
    let mut out = Vec::with_capacity(pages);
    for n in runs(pages, rng) {
        let mut frame = LOW / PAGE64 + rng.next_u64() % frames.saturating_sub(hole_frames + 16).max(1);
        if frame * PAGE64 >= HOLE {
            frame += hole_frames;
        }
        for k in 0..n as u64 {
            out.push((frame + k) * PAGE64);
        }
    }
    out
}

/// Shuffles `items` in place (rand's Fisher-Yates).
pub fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    items.shuffle(rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_avoid_low_memory_and_the_hole() {
        let a = page_addresses(5000, 16 << 30, &mut rng(1));
        assert_eq!(a.len(), 5000);
        assert!(a.iter().all(|&p| p >= 1 << 20 && !((3 << 30)..(1 << 32)).contains(&p) && p % 4096 == 0));
        assert_eq!(a, page_addresses(5000, 16 << 30, &mut rng(1)), "seeded");
        assert_ne!(a, page_addresses(5000, 16 << 30, &mut rng(2)), "another seed, another placement");
    }

    #[test]
    fn shuffle_permutes() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut v, &mut rng(3));
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
