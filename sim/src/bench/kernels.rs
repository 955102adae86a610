//! The copies the driver's path is compared with, and the byte checks.
//!
//! The reference copies are written here, independently of the driver's
//! routine: one contiguous run, 128 bytes per iteration, unaligned loads and
//! non-temporal stores — 32-byte AVX2 stores where the CPU has AVX2 (the
//! `ref_avx2` methods), 16-byte SSE2 stores (`ref_sse2`) — and one `SFENCE`;
//! optionally with a page lookahead of their own (`ref_sse2_lookahead`: at
//! each destination page boundary, one `PREFETCHNTA` of the page
//! [`REFERENCE_LOOKAHEAD`] pages further on, inside the run), so the limits
//! do not depend on the driver's routine for that trick either.
use capdma_avstream::copy::CopyGeometry;

/// Which instruction set [`limit_copy`] uses on this host (`wide`: AVX2 if present).
#[must_use]
pub fn limit_unit(wide: bool) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if wide && std::is_x86_feature_detected!("avx2") {
            "avx2"
        } else {
            "sse2"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = wide;
        "memcpy"
    }
}

/// Pages ahead of the stores that `ref_sse2_lookahead` warms.
pub const REFERENCE_LOOKAHEAD: usize = 2;

/// Copies `src` to `dst` (same length) with non-temporal stores, 32 bytes
/// wide when `wide` and the CPU has AVX2, else 16 bytes wide; with
/// `lookahead` pages of translation warming (0: none; SSE2 only). Falls
/// back to `copy_from_slice` off x86-64.
pub fn limit_copy(dst: &mut [u8], src: &[u8], wide: bool, lookahead: usize) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        let head = dst.as_ptr().align_offset(32).min(n);
        dst[..head].copy_from_slice(&src[..head]);
        let body = (n - head) / 128 * 128;
        if wide && std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected; the body range is inside both
            // slices and its destination is 32-byte aligned (`head`).
            unsafe { x86::stream_avx2(dst[head..].as_mut_ptr(), src[head..].as_ptr(), body) };
        } else {
            // SAFETY: as above, without AVX2 (SSE2 is baseline).
            unsafe { x86::stream_sse2(dst[head..].as_mut_ptr(), src[head..].as_ptr(), body, lookahead) };
        }
        dst[head + body..].copy_from_slice(&src[head + body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (wide, lookahead);
        dst.copy_from_slice(src);
    }
}

/// The naive stride-aware copy: `copy_from_slice` line by line.
pub fn slice_copy(dst: &mut [u8], src: &[u8], g: &CopyGeometry) {
    let line = g.line_bytes as usize;
    for i in 0..g.lines as usize {
        let s = i * g.src_pitch as usize;
        let d = i * g.dst_pitch as usize;
        dst[d..d + line].copy_from_slice(&src[s..s + line]);
    }
}

/// `true` when `dst` holds the lines of `src` per `g`, the bytes between
/// lines are `poison`, and so is everything from the extent to the end of
/// `dst` (the frame's guard).
#[must_use]
pub fn check_lines(dst: &[u8], src: &[u8], g: &CopyGeometry, poison: u8) -> bool {
    let line = g.line_bytes as usize;
    let mut at = 0usize;
    for i in 0..g.lines as usize {
        let s = i * g.src_pitch as usize;
        let d = i * g.dst_pitch as usize;
        if !dst[at..d].iter().all(|&b| b == poison) || dst[d..d + line] != src[s..s + line] {
            return false;
        }
        at = d + line;
    }
    dst[at..].iter().all(|&b| b == poison)
}

/// `true` when `dst` starts with `src` and the rest of it is `poison`.
#[must_use]
pub fn check_run(dst: &[u8], src: &[u8], poison: u8) -> bool {
    dst.len() >= src.len() && dst[..src.len()] == *src && dst[src.len()..].iter().all(|&b| b == poison)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_stream_si256, _mm_loadu_si128, _mm_prefetch, _mm_sfence, _mm_stream_si128, _MM_HINT_NTA,
    };

    /// Streams `n` bytes (a multiple of 128) from `src` to `dst`, then `SFENCE`.
    ///
    /// # Safety
    /// AVX2 present; `src..src + n` readable, `dst..dst + n` writable and
    /// 32-byte aligned, not overlapping.
    #[target_feature(enable = "avx2")]
    #[expect(clippy::cast_ptr_alignment, reason = "unaligned loads; aligned destination")]
    pub unsafe fn stream_avx2(dst: *mut u8, src: *const u8, n: usize) {
        let mut off = 0;
        while off + 128 <= n {
            let s = src.wrapping_add(off).cast::<__m256i>();
            let d = dst.wrapping_add(off).cast::<__m256i>();
            for k in 0..4 {
                // SAFETY: `k < 4`, `off + 128 <= n`: inside the readable range.
                let lane = unsafe { _mm256_loadu_si256(s.wrapping_add(k)) };
                // SAFETY: inside the writable range, 32-byte aligned.
                unsafe { _mm256_stream_si256(d.wrapping_add(k), lane) };
            }
            off += 128;
        }
        _mm_sfence();
    }

    /// As [`stream_avx2`] with SSE2; with `lookahead > 0`, each 128 bytes
    /// that start a destination page first prefetch (`PREFETCHNTA`) the
    /// start of the page `lookahead` pages on, when it is inside the run.
    ///
    /// # Safety
    /// `src..src + n` readable, `dst..dst + n` writable and 16-byte aligned,
    /// not overlapping.
    #[expect(clippy::cast_ptr_alignment, reason = "unaligned loads; aligned destination")]
    pub unsafe fn stream_sse2(dst: *mut u8, src: *const u8, n: usize, lookahead: usize) {
        const PAGE: usize = 4096;
        let ahead = lookahead.saturating_mul(PAGE);
        let mut off = 0;
        while off + 128 <= n {
            let at = dst.addr() + off;
            if lookahead > 0 && at % PAGE < 128 && (at - at % PAGE).saturating_add(ahead) < dst.addr() + n {
                let target = dst.wrapping_add(off).wrapping_sub(at % PAGE).wrapping_add(ahead);
                // SAFETY: a prefetch is a hint; it never faults.
                unsafe { _mm_prefetch::<_MM_HINT_NTA>(target.cast::<i8>()) };
            }
            let s = src.wrapping_add(off).cast::<__m128i>();
            let d = dst.wrapping_add(off).cast::<__m128i>();
            for k in 0..8 {
                // SAFETY: `k < 8`, `off + 128 <= n`: inside the readable range.
                let lane = unsafe { _mm_loadu_si128(s.wrapping_add(k)) };
                // SAFETY: inside the writable range, 16-byte aligned.
                unsafe { _mm_stream_si128(d.wrapping_add(k), lane) };
            }
            off += 128;
        }
        // SAFETY: SSE is baseline on x86-64.
        unsafe { _mm_sfence() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_copy_copies_any_length_and_alignment() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (off, n) in [(0, 0), (1, 5), (3, 127), (5, 128), (17, 1000), (31, 4960)] {
            for (wide, lookahead) in [(false, 0), (true, 0), (false, 1), (false, 2)] {
                let mut dst = vec![0u8; 5000];
                limit_copy(&mut dst[off..off + n], &src[..n], wide, lookahead);
                assert_eq!(&dst[off..off + n], &src[..n]);
                assert!(dst[..off].iter().chain(&dst[off + n..]).all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn checks_see_padding_and_guard() {
        let g = CopyGeometry { lines: 2, line_bytes: 3, src_pitch: 4, dst_pitch: 5 };
        let src = [1, 2, 3, 0, 4, 5, 6, 0];
        let mut dst = [9u8; 10];
        slice_copy(&mut dst, &src, &g);
        assert!(check_lines(&dst, &src, &g, 9));
        dst[3] = 0;
        assert!(!check_lines(&dst, &src, &g, 9));
        dst[3] = 9;
        dst[9] = 1;
        assert!(!check_lines(&dst, &src, &g, 9));
        assert!(check_run(&[1, 2, 9], &[1, 2], 9));
        assert!(!check_run(&[1, 3, 9], &[1, 2], 9));
    }
}
