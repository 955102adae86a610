//! x86-64 kernels of the frame copy: non-temporal line copies (SSE2, AVX2,
//! and `MOVNTI` through general-purpose registers) and the AVX2 detection.
//!
//! Every kernel copies `plan.lines` lines and ends with one `SFENCE`, so the
//! weakly ordered non-temporal stores are globally visible, in order with
//! later stores, when it returns. Each line is split into an ordinary-store
//! head (up to the first 64-byte boundary of the destination), a body of
//! whole 64-byte cache lines written with non-temporal stores, and an
//! ordinary-store tail: a destination cache line is written either wholly
//! by non-temporal stores or wholly by ordinary ones, so the write-combining
//! buffers always flush full lines and no line is both streamed and cached.
//! Loads are unaligned loads (the slot's line pitch is only 256-byte
//! aligned for the board, and a caller may hand any source).
use super::Plan;
use core::arch::x86_64::{
    __cpuid, __cpuid_count, __m128i, __m256i, _mm256_loadu_si256, _mm256_stream_si256, _mm_loadu_si128, _mm_prefetch,
    _mm_sfence, _mm_stream_si128, _mm_stream_si64, _xgetbv, _MM_HINT_NTA,
};
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

/// Bytes of one cache line, the unit of the non-temporal body.
const CACHE_LINE: usize = 64;

/// Detection state: not yet probed.
const UNKNOWN: u8 = 0;
/// Detection state: AVX2 cannot be used.
const ABSENT: u8 = 1;
/// Detection state: AVX2 can be used.
const PRESENT: u8 = 2;

/// The cached answer of [`detect_avx2`]: the CPU and the OS do not change
/// under a running driver, so probing once is enough. A race between two
/// first callers only probes twice and stores the same answer.
static AVX2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether the CPU has AVX2 and the OS has enabled YMM state (cached).
pub(super) fn avx2_usable() -> bool {
    match AVX2.load(Ordering::Relaxed) {
        PRESENT => true,
        ABSENT => false,
        _ => {
            let present = detect_avx2();
            AVX2.store(if present { PRESENT } else { ABSENT }, Ordering::Relaxed);
            present
        }
    }
}

/// Probes AVX2 with `CPUID` and `XGETBV`, without `std`: CPUID leaf 1 must
/// report XSAVE (bit 26), OSXSAVE (bit 27: the OS set CR4.OSXSAVE, so
/// `XGETBV` works at any privilege level) and AVX (bit 28); XCR0 must have
/// the SSE (bit 1) and AVX (bit 2) state components enabled; CPUID leaf 7
/// must report AVX2 (EBX bit 5).
fn detect_avx2() -> bool {
    if __cpuid(0).eax < 7 {
        return false;
    }
    let features = __cpuid(1).ecx;
    let needed = (1 << 26) | (1 << 27) | (1 << 28);
    if features & needed != needed {
        return false;
    }
    // SAFETY: CPUID reported XSAVE and OSXSAVE just above, so the `xsave`
    // target feature is present and XGETBV is enabled by the OS.
    let xcr0 = unsafe { read_xcr0() };
    if xcr0 & 0b110 != 0b110 {
        return false;
    }
    __cpuid_count(7, 0).ebx & (1 << 5) != 0
}

/// Reads XCR0.
///
/// # Safety
/// The CPU must support XSAVE and the OS must have set CR4.OSXSAVE.
#[target_feature(enable = "xsave")]
unsafe fn read_xcr0() -> u64 {
    // SAFETY: the caller guarantees XGETBV is available and enabled.
    unsafe { _xgetbv(0) }
}

/// Copies `n` bytes with ordinary moves (`memcpy`).
///
/// # Safety
/// `src..src + n` readable, `dst..dst + n` writable, not overlapping.
#[inline]
unsafe fn copy_plain(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { ptr::copy_nonoverlapping(src, dst, n) }
}

/// `SFENCE`: orders the non-temporal stores before every later store.
#[inline]
fn sfence() {
    // SAFETY: SSE (which has SFENCE) is part of the x86-64 baseline, so the
    // target feature the intrinsic asks for is always present.
    unsafe { _mm_sfence() }
}

/// Bytes from `dst` to its next 64-byte boundary (0 when aligned).
#[inline]
fn head_bytes(dst: *mut u8) -> usize {
    CACHE_LINE.wrapping_sub(dst.addr() & (CACHE_LINE - 1)) & (CACHE_LINE - 1)
}

/// Bytes of a page: the unit of address translation the lookahead warms.
const PAGE: usize = 4096;

/// Where the destination's address translation is warmed ahead of the
/// stores: `pages` pages after the page being written (0: never), never at
/// or past `end`, the end of the frame's destination extent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lookahead {
    /// Pages ahead of the store stream; 0 turns the lookahead off.
    pub pages: usize,
    /// One past the last destination byte of the frame.
    pub end: usize,
}

impl Lookahead {
    /// Issues one `PREFETCHNTA` to the first byte of the page `pages - 1`
    /// pages after `next_page` (the start of the page after the one being
    /// written), when that byte is inside the frame. A TLB miss of a
    /// software prefetch walks the page tables, so the walk for that page
    /// runs while the current page's stores drain, instead of stalling the
    /// first store into it. NTA: the one line fetched is not worth keeping;
    /// the stream overwrites it.
    #[inline]
    fn warm(self, next_page: *mut u8) {
        if let Some(offset) = self.target(next_page.addr()) {
            prefetch_nta(next_page.wrapping_add(offset));
        }
    }

    /// Bytes from `next_page` to the byte [`Lookahead::warm`] prefetches,
    /// `None` when the lookahead is off or that byte is not in the frame.
    #[inline]
    fn target(self, next_page: usize) -> Option<usize> {
        let offset = self.pages.checked_sub(1)?.checked_mul(PAGE)?;
        (next_page.checked_add(offset)? < self.end).then_some(offset)
    }
}

/// `PREFETCHNTA` of the line holding `p`.
#[inline]
fn prefetch_nta(p: *const u8) {
    // SAFETY: PREFETCHNTA (SSE, x86-64 baseline) is a hint: it never
    // faults, whatever `p` is, and changes no memory or architectural
    // state; processors ignore it for uncacheable memory.
    unsafe { _mm_prefetch::<_MM_HINT_NTA>(p.cast::<i8>()) }
}

/// Generates a line kernel and a frame kernel around a 64-byte
/// non-temporal chunk copy. `$($feature)?` is the target feature the
/// functions are compiled for (none: the x86-64 baseline).
macro_rules! nt_kernels {
    ($line:ident, $frame:ident, $chunk:ident $(, $feature:literal)?) => {
        /// Copies one line of `n` bytes: ordinary head, non-temporal body of
        /// whole cache lines, ordinary tail. No fence. The body is copied
        /// one destination page at a time, and each page starts by warming
        /// the translation of the page `ahead.pages` further on.
        ///
        /// # Safety
        /// `src..src + n` readable, `dst..dst + n` writable, not overlapping;
        /// the CPU has the target feature of this function.
        $(#[target_feature(enable = $feature)])?
        #[inline]
        unsafe fn $line(dst: *mut u8, src: *const u8, n: usize, ahead: Lookahead) {
            let head = head_bytes(dst);
            if n < head + CACHE_LINE {
                // SAFETY: forwarded from the caller (`n` bytes).
                unsafe { copy_plain(dst, src, n) };
                return;
            }
            if head > 0 {
                // SAFETY: `head < n`: inside both ranges.
                unsafe { copy_plain(dst, src, head) };
            }
            let end = head + ((n - head) & !(CACHE_LINE - 1));
            let mut off = head;
            while off < end {
                // The rest of this destination page (a multiple of 64 bytes:
                // `dst + off` is 64-byte aligned), or of the body.
                let to_page = PAGE - (dst.wrapping_add(off).addr() & (PAGE - 1));
                let stop = end.min(off + to_page);
                ahead.warm(dst.wrapping_add(off + to_page));
                // Two cache lines per iteration (measured ~1 % faster than one).
                while off + 2 * CACHE_LINE <= stop {
                    // SAFETY: `off + 128 <= stop <= end <= n`, so both
                    // 64-byte ranges are inside the caller's; `dst + off` is
                    // 64-byte aligned (`head` aligned it and `off - head` is
                    // a multiple of 64).
                    unsafe { $chunk(dst.wrapping_add(off), src.wrapping_add(off)) };
                    // SAFETY: as above, for the second cache line.
                    unsafe { $chunk(dst.wrapping_add(off + CACHE_LINE), src.wrapping_add(off + CACHE_LINE)) };
                    off += 2 * CACHE_LINE;
                }
                if off < stop {
                    // SAFETY: `off + 64 == stop <= n` (`stop - off` is a
                    // multiple of 64 below 128); aligned as above.
                    unsafe { $chunk(dst.wrapping_add(off), src.wrapping_add(off)) };
                    off += CACHE_LINE;
                }
            }
            if end < n {
                // SAFETY: `end < n`: the remaining `n - end` bytes are inside both ranges.
                unsafe { copy_plain(dst.wrapping_add(end), src.wrapping_add(end), n - end) };
            }
        }

        /// Copies every line of `plan` with the line kernel above, then
        /// `SFENCE`. First warms the translations of the frame's pages 1 to
        /// `pages - 1` (the line kernel warms each later page from `pages`
        /// pages before it).
        ///
        /// # Safety
        /// Line `i < plan.lines` occupies `src + i * src_pitch .. + line`
        /// (readable) and `dst + i * dst_pitch .. + line` (writable), the two
        /// buffers do not overlap; the CPU has the target feature.
        $(#[target_feature(enable = $feature)])?
        pub(super) unsafe fn $frame(dst: *mut u8, src: *const u8, plan: &Plan, pages: usize) {
            let extent = plan.lines.saturating_sub(1).saturating_mul(plan.dst_pitch).saturating_add(plan.line);
            let ahead = Lookahead { pages, end: dst.addr().saturating_add(extent) };
            let first_page = dst.wrapping_sub(dst.addr() & (PAGE - 1));
            for k in 1..pages {
                Lookahead { pages: k, ..ahead }.warm(first_page.wrapping_add(PAGE));
            }
            for i in 0..plan.lines {
                // SAFETY: the caller guarantees line `i` is inside both
                // buffers; `i * pitch` is below the buffer's extent, so it
                // does not overflow.
                unsafe { $line(dst.wrapping_add(i * plan.dst_pitch), src.wrapping_add(i * plan.src_pitch), plan.line, ahead) };
            }
            sfence();
        }
    };
}

/// Copies 64 bytes with SSE2: four unaligned loads, four `MOVNTDQ`.
///
/// # Safety
/// `src..src + 64` readable, `dst..dst + 64` writable and 16-byte aligned.
#[inline]
#[expect(clippy::cast_ptr_alignment, reason = "loads are unaligned loads; stores go to 64-byte aligned addresses")]
unsafe fn chunk_sse2(dst: *mut u8, src: *const u8) {
    let from = src.cast::<__m128i>();
    let to = dst.cast::<__m128i>();
    // SAFETY: (all four loads) each 16-byte load is inside the caller's 64 readable bytes.
    let v0 = unsafe { _mm_loadu_si128(from) };
    // SAFETY: as above.
    let v1 = unsafe { _mm_loadu_si128(from.wrapping_add(1)) };
    // SAFETY: as above.
    let v2 = unsafe { _mm_loadu_si128(from.wrapping_add(2)) };
    // SAFETY: as above.
    let v3 = unsafe { _mm_loadu_si128(from.wrapping_add(3)) };
    // SAFETY: (all four stores) each 16-byte store is inside the caller's
    // 64 writable bytes, at a 16-byte aligned address.
    unsafe { _mm_stream_si128(to, v0) };
    // SAFETY: as above.
    unsafe { _mm_stream_si128(to.wrapping_add(1), v1) };
    // SAFETY: as above.
    unsafe { _mm_stream_si128(to.wrapping_add(2), v2) };
    // SAFETY: as above.
    unsafe { _mm_stream_si128(to.wrapping_add(3), v3) };
}

/// Copies 64 bytes with AVX2: two unaligned loads, two `VMOVNTDQ`.
///
/// # Safety
/// `src..src + 64` readable, `dst..dst + 64` writable and 32-byte aligned;
/// the CPU has AVX2 and YMM state is enabled and saved.
#[target_feature(enable = "avx2")]
#[inline]
#[expect(clippy::cast_ptr_alignment, reason = "loads are unaligned loads; stores go to 64-byte aligned addresses")]
unsafe fn chunk_avx2(dst: *mut u8, src: *const u8) {
    let from = src.cast::<__m256i>();
    let to = dst.cast::<__m256i>();
    // SAFETY: (both loads) each 32-byte load is inside the caller's 64 readable bytes.
    let v0 = unsafe { _mm256_loadu_si256(from) };
    // SAFETY: as above.
    let v1 = unsafe { _mm256_loadu_si256(from.wrapping_add(1)) };
    // SAFETY: (both stores) each 32-byte store is inside the caller's 64
    // writable bytes, at a 32-byte aligned address.
    unsafe { _mm256_stream_si256(to, v0) };
    // SAFETY: as above.
    unsafe { _mm256_stream_si256(to.wrapping_add(1), v1) };
}

/// Copies 64 bytes through general-purpose registers: eight unaligned
/// 8-byte loads, eight `MOVNTI` (no vector register is touched).
///
/// # Safety
/// `src..src + 64` readable, `dst..dst + 64` writable and 8-byte aligned.
#[inline]
#[expect(clippy::cast_ptr_alignment, reason = "loads are unaligned reads; stores go to 64-byte aligned addresses")]
unsafe fn chunk_gpr(dst: *mut u8, src: *const u8) {
    let from = src.cast::<i64>();
    let to = dst.cast::<i64>();
    let mut v = [0i64; 8];
    for (k, word) in v.iter_mut().enumerate() {
        // SAFETY: `k < 8`: inside the caller's 64 readable bytes (unaligned read).
        *word = unsafe { from.wrapping_add(k).read_unaligned() };
    }
    for (k, word) in v.into_iter().enumerate() {
        // SAFETY: `k < 8`: inside the caller's 64 writable, 8-byte aligned bytes.
        unsafe { _mm_stream_si64(to.wrapping_add(k), word) };
    }
}

nt_kernels!(line_nt_sse2, frame_nt_sse2, chunk_sse2);
nt_kernels!(line_nt_avx2, frame_nt_avx2, chunk_avx2, "avx2");
nt_kernels!(line_nt_gpr, frame_nt_gpr, chunk_gpr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_detection_agrees_with_std() {
        assert_eq!(avx2_usable(), std::is_x86_feature_detected!("avx2"));
        assert_eq!(avx2_usable(), detect_avx2(), "cached answer stays the same");
    }

    #[test]
    fn lookahead_stays_inside_the_frame() {
        let end = 10 * PAGE + 100;
        let ahead = |pages| Lookahead { pages, end };
        assert_eq!(ahead(0).target(PAGE), None, "off");
        assert_eq!(ahead(1).target(PAGE), Some(0), "the next page itself");
        assert_eq!(ahead(2).target(PAGE), Some(PAGE));
        assert_eq!(ahead(2).target(9 * PAGE), Some(PAGE), "page 10 holds the frame's last 100 bytes");
        assert_eq!(ahead(2).target(10 * PAGE), None, "page 11 is past the frame");
        assert_eq!(ahead(1).target(end), None);
        assert_eq!(ahead(usize::MAX).target(PAGE), None, "no overflow");
    }

    #[test]
    fn head_bytes_reaches_the_next_cache_line() {
        let buf = [0u8; 256];
        let base = buf.as_ptr().cast_mut();
        for k in 0..128 {
            let p = base.wrapping_add(k);
            let h = head_bytes(p);
            assert!(h < 64);
            assert_eq!((p.addr() + h) % 64, 0);
        }
    }
}
