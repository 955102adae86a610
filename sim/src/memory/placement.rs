//! The page-run placement model: how the pages of a buffer that is
//! virtually contiguous fall in physical memory.
//!
//! A buffer is a sequence of runs of physically adjacent pages, of 1 page
//! (55 %), 2 to 4 pages (30 %) or 5 to 16 pages (15 %), each run at a
//! pseudo-random place. The one model: the simulated machine's scattered
//! allocator ([`super::PhysicalMemory::allocate_scattered`]) places its
//! runs with it, and the benchmark (`capdma-sim bench`) places its
//! application buffers and its mapped page pool with it. The generator is
//! the caller's seeded `rand_chacha` one, so the same seed gives the same
//! placement.
use rand_chacha::rand_core::Rng;

/// Longest run of physically adjacent pages, in pages.
pub const MAX_RUN_PAGES: usize = 16;

/// Length in pages of the next physically adjacent run: 1 (55 %), 2..=4
/// (30 %) or 5..=[`MAX_RUN_PAGES`] (15 %).
pub fn run_length<R: Rng + ?Sized>(rng: &mut R) -> usize {
    let roll = rng.next_u32() % 100;
    if roll < 55 {
        1
    } else if roll < 85 {
        2 + (rng.next_u32() % 3) as usize
    } else {
        5 + (rng.next_u32() % 12) as usize
    }
}

/// Splits `pages` pages into runs (lengths from [`run_length`], the last
/// cut to what is left), in virtual order.
pub fn runs<R: Rng + ?Sized>(pages: usize, rng: &mut R) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = pages;
    while left > 0 {
        let n = run_length(rng).min(left);
        out.push(n);
        left -= n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn runs_cover_the_pages_with_the_model_lengths() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let r = runs(10_000, &mut rng);
        assert_eq!(r.iter().sum::<usize>(), 10_000);
        assert!(r.iter().all(|&n| (1..=MAX_RUN_PAGES).contains(&n)));
        let singles = r.iter().filter(|&&n| n == 1).count();
        // 55 % of runs are single pages, 15 % longer than 4.
        assert!(singles * 100 > r.len() * 50 && singles * 100 < r.len() * 60, "{singles} of {}", r.len());
        let long = r.iter().filter(|&&n| n > 4).count();
        assert!(long * 100 > r.len() * 11 && long * 100 < r.len() * 19, "{long} of {}", r.len());
        assert_eq!(r, runs(10_000, &mut ChaCha8Rng::seed_from_u64(7)), "seeded");
    }
}
