//! The common-buffer copy: one slot → one frame, line by line, stride-aware.
//!
//! One routine serves the driver and the simulated machine alike.
//!
//! Vector registers in the kernel (x64): SSE2 (XMM) state is saved by the
//! kernel around interrupts and DPCs and may be used freely; AVX (YMM) state
//! is not, and may only be touched between `KeSaveExtendedProcessorState` and
//! `KeRestoreExtendedProcessorState`. The caller states which it has arranged
//! with [`VectorUnit`]; the routine never uses more than it is given.
//!
//! # How the copy is done
//!
//! * Validation first: both extents are computed with overflow checks and
//!   compared with the buffers before a single byte is written.
//! * When both pitches equal the line's bytes the frame is one run of bytes
//!   and is copied as one line.
//! * Frames of fewer than [`CopyTuning::non_temporal_threshold`] bytes
//!   ([`NON_TEMPORAL_THRESHOLD`] for [`copy_frame`]) are copied with ordinary
//!   moves (`ptr::copy_nonoverlapping`, i.e. `memcpy`), line by line.
//! * Larger frames (x86-64 only) use non-temporal stores: each destination
//!   line is split into an ordinary-store head up to its first 64-byte
//!   boundary, a body of whole cache lines written with 16-byte `MOVNTDQ`
//!   ([`VectorUnit::Sse2`], and [`VectorUnit::Avx2`] by default, see below),
//!   32-byte `VMOVNTDQ` ([`VectorUnit::Avx2`] with
//!   [`CopyTuning::avx2_wide_stores`]) or 8-byte `MOVNTI`
//!   ([`VectorUnit::Scalar`]: general-purpose registers only), and an
//!   ordinary-store tail; one `SFENCE` ends the frame, so the frame is
//!   globally visible, ordered before the stores that complete it, when the
//!   routine returns.
//! * The body is written in destination order, one destination page at a
//!   time, and each page starts with one `PREFETCHNTA` of the page
//!   [`PAGE_LOOKAHEAD`] pages further on (inside the frame), so that page's
//!   address translation is done before the stores reach it (see Page
//!   lookahead).
//! * Other architectures take the ordinary path whatever the unit.
//!
//! # The threshold
//!
//! The usual rule for `memcpy` is "stream only what is much larger than the
//! last-level cache", because a general copy's destination is often read
//! again soon. A capture copy is different: its source was just written by
//! the board's DMA (not in the CPU's caches: the DMA write invalidated
//! them), its destination is an application buffer last touched a frame
//! period or more ago, and the frame is read next by another component,
//! often on another core. With a cold destination an ordinary store costs a
//! read-for-ownership of every destination line, a third memory stream that
//! non-temporal stores avoid; on the development machine (AMD EPYC, Zen 4,
//! 32 MiB L3) a cold 1080p YUY2 frame is copied about 1.6 times as fast with
//! non-temporal stores as with ordinary ones (`docs/benchmark.md`), and in
//! a cold-ring experiment the streamed copy was ahead from 64 KiB upwards.
//! So the threshold is low:
//! 256 KiB, about the smallest private L2 of current x86 cores. A frame below
//! it (160×120 to about 360×360 YUY2) may still be in the copying core's L2
//! when the consumer reads it on the same core, and streaming it would throw
//! that away. Tests and benchmarks pass their own threshold to
//! [`copy_frame_tuned`].
//!
//! # Page lookahead
//!
//! In the driver the destination is an application frame buffer mapped
//! into system space: 4 KiB pages, physically scattered. A streaming copy
//! writes a new page every 4 KiB (about every 250 ns at 16 GB/s), and every
//! first store into a page misses the TLB. Our reading of the figures
//! below: a missed load is overlapped with the loads after it, but the
//! non-temporal store stream waits for the page walk, and under a
//! hypervisor the walk is two-dimensional (guest page tables, each level
//! translated through the host's), so its cost depends on where the pages
//! lie and on what else the machine is doing. That is where the old gap to a
//! contiguous destination came from: the same routine reached 0.87-0.92 of
//! itself writing to the benchmark's linearly mapped ring.
//!
//! A software prefetch that misses the TLB walks the page tables, and it
//! retires without waiting. So at the start of each destination page the
//! copy prefetches the first line of the page [`PAGE_LOOKAHEAD`] pages on;
//! when the stores get there the translation is in the TLB. The price is
//! one extra line read per 4 KiB page (1.6 % of the stream), which the
//! stores then overwrite: `PREFETCHNTA`, so the line pollutes the caches as
//! little as the core allows. Measured
//! on the development machine (AMD EPYC family 25 model 17, Zen 4, under
//! KVM; 200-round interleaved runs at load averages of 2-9; all GB/s ratios
//! below are medians of the benchmark's interleaved rounds, see
//! `docs/benchmark.md` for the recorded runs):
//!
//! * into the scattered pages, no lookahead ran at 0.81-0.86 of a lookahead
//!   of 2 (1080p YUY2, 1080p NV12, 2160p YUY2; 0.64-0.73 in a run at load
//!   7-14: the busier the machine, the dearer a walk), and with the
//!   lookahead the scattered destination is as fast as the contiguous one
//!   (0.98-1.02);
//! * the distance does not matter much once it is at least one page:
//!   lookaheads of 1, 2, 3, 4 and 8 pages were within 4 % of each other, in
//!   no consistent order. 2 leaves one page of slack for a faster core or a
//!   slower walk;
//! * `PREFETCHNTA`, `PREFETCHT0` and `PREFETCHW` did equally well (within
//!   2 %); `PREFETCHT2` gained a fraction of what they gained (8-9 %
//!   against 20-50 % in the same runs), and a plain load of the next page
//!   somewhat less than the prefetches. `PREFETCHW` is not in the x86-64
//!   baseline; `PREFETCHNTA` is;
//! * prefetching the *source* gained nothing beyond the noise (512 and 1024
//!   bytes ahead in the stream: within ±4 %), and warming the source's pages
//!   ahead like the destination's lost up to 12 % on NV12: the hardware
//!   prefetchers already follow the source, which in the driver is one
//!   physically contiguous common buffer;
//! * copying in destination order is what the routine did already (a
//!   frame's destination lines are in ascending order, and the slot is read
//!   in the same order).
//!
//! # Store width
//!
//! Measured the same way, with the page lookahead on, 32-byte `VMOVNTDQ`
//! stores ran at 0.86-1.00 of 16-byte `MOVNTDQ` ones (about 0.93
//! typical), and 64-byte AVX-512 stores were no better than 32-byte ones
//! (tried without the lookahead, where the two tied). Without the lookahead
//! the 32-byte streams tied at low load and were ahead by 6-15 % on a busy
//! machine (the reporter saw 5-11 %): fewer, wider stores wait less
//! often on a page walk; once the walks are out of the way the narrower
//! stream is as fast or faster on this core. So [`VectorUnit::Avx2`] streams with 16-byte stores unless
//! [`CopyTuning::avx2_wide_stores`] asks for 32-byte ones (kept so the
//! benchmark can show the difference on every machine it runs on). The
//! consequence for the driver: `Sse2` is the fastest unit, and it needs no
//! `KeSaveExtendedProcessorState`, so the AVStream image passes
//! [`VectorUnit::Sse2`] and saves no extended state. `Scalar` (`MOVNTI`)
//! with the lookahead came within 0-3 % of it.
//!
//! # AVX2 detection without `std`
//!
//! The crate is `no_std` (no `is_x86_feature_detected!`), so
//! [`VectorUnit::Avx2`] is checked with `CPUID` and `XGETBV` (AVX2 in CPUID
//! leaf 7, OSXSAVE and AVX in leaf 1, the SSE and AVX state components
//! enabled in XCR0), probed once and cached in an atomic. Without AVX2 the
//! routine falls back to SSE2. The caller must still have saved the extended
//! state (see [`VectorUnit::Avx2`]): detection tells what the CPU can do,
//! not what the caller arranged.
use capdma_interface::status::{NtStatus, STATUS_BUFFER_TOO_SMALL, STATUS_INTEGER_OVERFLOW, STATUS_INVALID_PARAMETER};
use zerocopy::{Immutable, IntoBytes, TryFromBytes};

#[cfg(target_arch = "x86_64")]
mod x86;

/// The vector registers the caller allows the copy to use. Stored in a
/// pin's `AtomicU8` as its `u8` value, decoded with zerocopy.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, TryFromBytes, IntoBytes, Immutable)]
pub enum VectorUnit {
    /// General-purpose registers only (portable; any IRQL, any context).
    /// No vector intrinsics are used; large frames are streamed with
    /// `MOVNTI`, a general-purpose-register store. The ordinary path calls
    /// `memcpy`, which may use XMM registers where the platform's `memcpy`
    /// does (always allowed in x64 kernel code).
    Scalar = 0,
    /// SSE2 (XMM) registers: always allowed in x64 kernel code.
    Sse2 = 1,
    /// AVX2 (YMM) registers: only after `KeSaveExtendedProcessorState(XSTATE_MASK_AVX)`
    /// succeeded, until `KeRestoreExtendedProcessorState`. The routine checks
    /// the CPU supports AVX2 and falls back to SSE2 otherwise.
    Avx2 = 2,
}

/// The shape of one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyGeometry {
    /// Lines to copy (all planes: `PixelFormat::lines(height)`).
    pub lines: u32,
    /// Bytes of each line to copy (`PixelFormat::line_bytes(width)`).
    pub line_bytes: u32,
    /// Bytes from one source line to the next (the slot's line pitch), `>= line_bytes`.
    pub src_pitch: u32,
    /// Bytes from one destination line to the next (the frame's stride), `>= line_bytes`.
    pub dst_pitch: u32,
}

impl CopyGeometry {
    /// Bytes the source must hold: `(lines - 1) * src_pitch + line_bytes` (0 for no lines).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when a pitch is below `line_bytes`;
    /// `STATUS_INTEGER_OVERFLOW` when the size does not fit `usize`.
    pub fn src_extent(&self) -> Result<usize, NtStatus> {
        extent(self.lines, self.line_bytes, self.src_pitch)
    }

    /// Bytes the destination must hold: `(lines - 1) * dst_pitch + line_bytes` (0 for no lines).
    ///
    /// # Errors
    /// As [`CopyGeometry::src_extent`].
    pub fn dst_extent(&self) -> Result<usize, NtStatus> {
        extent(self.lines, self.line_bytes, self.dst_pitch)
    }
}

fn extent(lines: u32, line_bytes: u32, pitch: u32) -> Result<usize, NtStatus> {
    if pitch < line_bytes {
        return Err(STATUS_INVALID_PARAMETER);
    }
    if lines == 0 {
        return Ok(0);
    }
    let before_last = u64::from(lines - 1) * u64::from(pitch);
    let total = before_last + u64::from(line_bytes);
    usize::try_from(total).map_err(|_| STATUS_INTEGER_OVERFLOW)
}

/// Frames of at least this many bytes (`lines * line_bytes`) are copied with
/// non-temporal stores by [`copy_frame`]; smaller ones with ordinary moves.
/// Why 256 KiB: see the module documentation.
pub const NON_TEMPORAL_THRESHOLD: usize = 256 * 1024;

/// Destination pages (4 KiB) between the page [`copy_frame`]'s stores are
/// writing and the page whose address translation it warms ahead of them.
/// Why 2: see the module documentation (Page lookahead).
pub const PAGE_LOOKAHEAD: usize = 2;

/// Knobs of [`copy_frame_tuned`]. None changes the bytes written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyTuning {
    /// Frames of at least this many bytes (`lines * line_bytes`) use
    /// non-temporal stores; `0` streams every frame, `usize::MAX` none.
    pub non_temporal_threshold: usize,
    /// With [`VectorUnit::Avx2`] (on a CPU with AVX2), stream with 32-byte
    /// `VMOVNTDQ` instead of 16-byte `MOVNTDQ`. Off by default: see the
    /// module documentation (Store width).
    pub avx2_wide_stores: bool,
    /// Pages ahead of the non-temporal store stream whose address
    /// translation is warmed with one `PREFETCHNTA` each; `0`: none. See
    /// the module documentation (Page lookahead). [`PAGE_LOOKAHEAD`] by
    /// default.
    pub page_lookahead: usize,
}

impl CopyTuning {
    /// The tuning [`copy_frame`] uses.
    pub const DEFAULT: Self = Self { non_temporal_threshold: NON_TEMPORAL_THRESHOLD, avx2_wide_stores: false, page_lookahead: PAGE_LOOKAHEAD };
}

impl Default for CopyTuning {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Whether this CPU (and OS) can run AVX2 code; probed once with
/// `CPUID`/`XGETBV` and cached. Always `false` off x86-64.
#[must_use]
pub fn avx2_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::avx2_usable()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The unit [`copy_frame`] actually uses when given `unit`: `Avx2` becomes
/// `Sse2` on a CPU without AVX2, and everything is `Scalar` off x86-64.
#[must_use]
pub fn effective_unit(unit: VectorUnit) -> VectorUnit {
    if cfg!(not(target_arch = "x86_64")) {
        return VectorUnit::Scalar;
    }
    match unit {
        VectorUnit::Avx2 if !avx2_supported() => VectorUnit::Sse2,
        other => other,
    }
}

/// Copies `geometry.lines` lines of `geometry.line_bytes` bytes from `src`
/// (lines `src_pitch` apart) to `dst` (lines `dst_pitch` apart). Bytes of
/// `dst` between lines are left untouched. Returns the bytes copied
/// (`lines * line_bytes`). Uses [`CopyTuning::DEFAULT`].
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` for a pitch below `line_bytes`;
/// `STATUS_BUFFER_TOO_SMALL` when `src` or `dst` is shorter than the
/// geometry needs; `STATUS_INTEGER_OVERFLOW` when sizes overflow. Nothing is
/// written on error.
pub fn copy_frame(dst: &mut [u8], src: &[u8], geometry: &CopyGeometry, unit: VectorUnit) -> Result<usize, NtStatus> {
    copy_frame_tuned(dst, src, geometry, unit, &CopyTuning::DEFAULT)
}

/// [`copy_frame`] with an explicit [`CopyTuning`]. Same bytes written, same
/// errors; only the speed differs.
///
/// # Errors
/// As [`copy_frame`].
pub fn copy_frame_tuned(
    dst: &mut [u8],
    src: &[u8],
    geometry: &CopyGeometry,
    unit: VectorUnit,
    tuning: &CopyTuning,
) -> Result<usize, NtStatus> {
    let src_need = geometry.src_extent()?;
    let dst_need = geometry.dst_extent()?;
    if src.len() < src_need || dst.len() < dst_need {
        return Err(STATUS_BUFFER_TOO_SMALL);
    }
    let plan = Plan::new(geometry);
    // `lines * line <= extent`, which fits `usize`: the check cannot fail.
    let bytes = plan.lines.checked_mul(plan.line).ok_or(STATUS_INTEGER_OVERFLOW)?;
    if bytes == 0 {
        return Ok(0);
    }
    let streamed = bytes >= tuning.non_temporal_threshold;
    // SAFETY: `plan` describes `geometry` (or the same bytes as one run);
    // line `i < lines` spans `i * pitch .. i * pitch + line_bytes`, inside
    // the extent, which the checks above proved both slices hold. `dst` is
    // a unique borrow, so the buffers do not overlap.
    unsafe { copy_planned(dst.as_mut_ptr(), src.as_ptr(), &plan, effective_unit(unit), streamed, tuning) };
    Ok(bytes)
}

/// A validated copy: `lines` lines of `line` bytes, pitches in bytes.
#[derive(Clone, Copy, Debug)]
struct Plan {
    lines: usize,
    line: usize,
    src_pitch: usize,
    dst_pitch: usize,
}

impl Plan {
    /// The plan of `geometry`; a frame whose pitches both equal its line
    /// bytes becomes one line of `lines * line_bytes` bytes (same bytes).
    fn new(geometry: &CopyGeometry) -> Self {
        let lines = geometry.lines as usize;
        let line = geometry.line_bytes as usize;
        let src_pitch = geometry.src_pitch as usize;
        let dst_pitch = geometry.dst_pitch as usize;
        if src_pitch == line && dst_pitch == line && lines > 1 {
            if let Some(run) = lines.checked_mul(line) {
                return Self { lines: 1, line: run, src_pitch: run, dst_pitch: run };
            }
        }
        Self { lines, line, src_pitch, dst_pitch }
    }
}

/// Runs `plan` with `unit` (already resolved by [`effective_unit`]);
/// `streamed`: non-temporal stores, with `tuning`'s store width and page
/// lookahead.
///
/// # Safety
/// Line `i < plan.lines` spans `src + i * src_pitch .. + line` (readable)
/// and `dst + i * dst_pitch .. + line` (writable); the buffers do not
/// overlap; `unit` is `Avx2` only when the CPU has AVX2.
unsafe fn copy_planned(dst: *mut u8, src: *const u8, plan: &Plan, unit: VectorUnit, streamed: bool, tuning: &CopyTuning) {
    #[cfg(target_arch = "x86_64")]
    if streamed {
        let (wide, ahead) = (tuning.avx2_wide_stores, tuning.page_lookahead);
        match unit {
            // SAFETY: forwarded from the caller; `effective_unit` chose
            // `Avx2` only when `avx2_usable()`, and the caller of
            // `copy_frame` saved the YMM state (the `VectorUnit` contract).
            VectorUnit::Avx2 if wide => unsafe { x86::frame_nt_avx2(dst, src, plan, ahead) },
            // SAFETY: forwarded from the caller; SSE2 is x86-64 baseline.
            VectorUnit::Avx2 | VectorUnit::Sse2 => unsafe { x86::frame_nt_sse2(dst, src, plan, ahead) },
            // SAFETY: forwarded from the caller; MOVNTI is x86-64 baseline.
            VectorUnit::Scalar => unsafe { x86::frame_nt_gpr(dst, src, plan, ahead) },
        }
        return;
    }
    let _ = (unit, streamed, tuning);
    for i in 0..plan.lines {
        // SAFETY: line `i` is inside both buffers (caller); `i * pitch` is
        // below the extent, so neither product overflows.
        unsafe { core::ptr::copy_nonoverlapping(src.wrapping_add(i * plan.src_pitch), dst.wrapping_add(i * plan.dst_pitch), plan.line) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(lines: u32, line_bytes: u32, src_pitch: u32, dst_pitch: u32) -> CopyGeometry {
        CopyGeometry { lines, line_bytes, src_pitch, dst_pitch }
    }

    #[test]
    fn copies_lines_and_leaves_padding() {
        let src: Vec<u8> = (0..64u8).collect();
        let mut dst = vec![0xEE; 3 * 20];
        let g = geometry(3, 10, 16, 20);
        assert_eq!(copy_frame(&mut dst, &src, &g, VectorUnit::Scalar), Ok(30));
        for line in 0..3 {
            assert_eq!(&dst[line * 20..line * 20 + 10], &src[line * 16..line * 16 + 10]);
            assert!(dst[line * 20 + 10..line * 20 + 20].iter().all(|&b| b == 0xEE));
        }
    }

    #[test]
    fn short_buffers_are_refused_without_writing() {
        let src = vec![1u8; 100];
        let mut dst = vec![0u8; 100];
        let g = geometry(10, 10, 10, 11);
        assert_eq!(copy_frame(&mut dst, &src, &g, VectorUnit::Sse2), Err(STATUS_BUFFER_TOO_SMALL));
        assert!(dst.iter().all(|&b| b == 0));
    }

    #[test]
    fn pitch_below_line_is_invalid() {
        let g = geometry(2, 10, 8, 10);
        assert_eq!(copy_frame(&mut [0; 64], &[0; 64], &g, VectorUnit::Scalar), Err(STATUS_INVALID_PARAMETER));
    }

    #[test]
    fn overflowing_geometry_is_refused() {
        let g = geometry(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        let r = copy_frame(&mut [0; 16], &[0; 16], &g, VectorUnit::Avx2);
        // 64-bit hosts: the extent fits `usize` but no buffer is that long.
        assert!(r == Err(STATUS_BUFFER_TOO_SMALL) || r == Err(STATUS_INTEGER_OVERFLOW));
    }

    #[test]
    fn empty_frames_copy_nothing() {
        let mut dst = [7u8; 8];
        for g in [geometry(0, 10, 10, 10), geometry(4, 0, 0, 2)] {
            for unit in [VectorUnit::Scalar, VectorUnit::Sse2, VectorUnit::Avx2] {
                let t = CopyTuning { non_temporal_threshold: 0, avx2_wide_stores: true, page_lookahead: PAGE_LOOKAHEAD };
                assert_eq!(copy_frame_tuned(&mut dst, &[], &g, unit, &t), Ok(0));
            }
        }
        assert_eq!(dst, [7; 8]);
    }

    #[test]
    fn contiguous_frames_are_one_run() {
        let p = Plan::new(&geometry(4, 100, 100, 100));
        assert_eq!((p.lines, p.line), (1, 400));
        let p = Plan::new(&geometry(4, 100, 128, 100));
        assert_eq!((p.lines, p.line, p.src_pitch, p.dst_pitch), (4, 100, 128, 100));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn effective_unit_follows_the_cpu() {
        assert_eq!(effective_unit(VectorUnit::Scalar), VectorUnit::Scalar);
        assert_eq!(effective_unit(VectorUnit::Sse2), VectorUnit::Sse2);
        let avx2 = std::is_x86_feature_detected!("avx2");
        assert_eq!(effective_unit(VectorUnit::Avx2), if avx2 { VectorUnit::Avx2 } else { VectorUnit::Sse2 });
        assert_eq!(avx2_supported(), avx2);
    }
}

#[cfg(test)]
mod proptests {
    //! Every unit and every threshold writes exactly the bytes of a naive
    //! reference, at any alignment, and nothing else.
    use super::*;
    use proptest::prelude::*;

    const UNITS: [VectorUnit; 3] = [VectorUnit::Scalar, VectorUnit::Sse2, VectorUnit::Avx2];
    /// Always stream (both store widths; page lookahead off, default,
    /// long), the default (`None`: through `copy_frame`), never stream.
    const TUNINGS: [Option<CopyTuning>; 6] = [
        Some(CopyTuning { non_temporal_threshold: 0, avx2_wide_stores: false, page_lookahead: PAGE_LOOKAHEAD }),
        Some(CopyTuning { non_temporal_threshold: 0, avx2_wide_stores: true, page_lookahead: PAGE_LOOKAHEAD }),
        Some(CopyTuning { non_temporal_threshold: 0, avx2_wide_stores: false, page_lookahead: 0 }),
        Some(CopyTuning { non_temporal_threshold: 0, avx2_wide_stores: true, page_lookahead: 7 }),
        None,
        Some(CopyTuning { non_temporal_threshold: usize::MAX, avx2_wide_stores: false, page_lookahead: PAGE_LOOKAHEAD }),
    ];

    /// The obvious byte loop.
    fn reference(dst: &mut [u8], src: &[u8], g: &CopyGeometry) {
        for line in 0..g.lines as usize {
            for b in 0..g.line_bytes as usize {
                dst[line * g.dst_pitch as usize + b] = src[line * g.src_pitch as usize + b];
            }
        }
    }

    /// Deterministic filler (seeded `fastrand`), so buffers differ from each other.
    fn fill(buf: &mut [u8], seed: u64) {
        fastrand::Rng::with_seed(seed).fill(buf);
    }

    /// Index where `buf[start..]` is at `residue` modulo 64.
    fn start_at(buf: &[u8], residue: usize) -> usize {
        (residue + 64 - buf.as_ptr().addr() % 64) % 64
    }

    fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
        a.iter().zip(b).position(|(x, y)| x != y)
    }

    /// Copies with every unit and threshold and compares with the reference;
    /// the destination slice ends `dst_slack` bytes after the extent, and
    /// the buffer around it is checked too.
    fn check(g: CopyGeometry, src_residue: usize, dst_residue: usize, dst_slack: usize, seed: u64) -> Result<(), TestCaseError> {
        let src_need = g.src_extent().unwrap();
        let dst_need = g.dst_extent().unwrap();
        let mut src_buf = vec![0u8; src_need + 64 + 64];
        fill(&mut src_buf, seed);
        let s0 = start_at(&src_buf, src_residue);
        let src = &src_buf[s0..s0 + src_need];

        let mut initial = vec![0u8; dst_need + dst_slack + 128];
        fill(&mut initial, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1));
        let mut work = initial.clone();
        let d0 = start_at(&work, dst_residue);
        let mut expected = initial.clone();
        reference(&mut expected[d0..], src, &g);
        let want = g.lines as usize * g.line_bytes as usize;

        for unit in UNITS {
            for tuning in TUNINGS {
                work.copy_from_slice(&initial);
                let dst = &mut work[d0..d0 + dst_need + dst_slack];
                let got = match &tuning {
                    None => copy_frame(dst, src, &g, unit),
                    Some(t) => copy_frame_tuned(dst, src, &g, unit, t),
                };
                prop_assert_eq!(got, Ok(want));
                let diff = first_difference(&work, &expected);
                prop_assert!(diff.is_none(), "{:?} {:?}: first wrong byte at {:?} (dst starts at {})", unit, tuning, diff, d0);
            }
        }
        Ok(())
    }

    fn pad() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), 1..64u32, 64..400u32]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn small_frames_match_reference(
            lines in 0..24u32, line_bytes in 0..700u32, src_pad in pad(), dst_pad in pad(),
            src_residue in 0..64usize, dst_residue in 0..64usize, slack in 0..80usize, seed in any::<u64>(),
        ) {
            let g = CopyGeometry { lines, line_bytes, src_pitch: line_bytes + src_pad, dst_pitch: line_bytes + dst_pad };
            check(g, src_residue, dst_residue, slack, seed)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn medium_frames_match_reference(
            lines in 1..160u32, line_bytes in 1..5000u32, src_pad in pad(), dst_pad in pad(),
            src_residue in 0..64usize, dst_residue in 0..64usize, seed in any::<u64>(),
        ) {
            let g = CopyGeometry { lines, line_bytes, src_pitch: line_bytes + src_pad, dst_pitch: line_bytes + dst_pad };
            check(g, src_residue, dst_residue, 0, seed)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

        /// Multi-MiB frames (up to about 9 MiB), streamed by default.
        #[test]
        fn large_frames_match_reference(
            lines in 300..1100u32, line_bytes in 1500..8200u32, src_pad in pad(), dst_pad in pad(),
            src_residue in 0..64usize, dst_residue in 0..64usize, seed in any::<u64>(),
        ) {
            let g = CopyGeometry { lines, line_bytes, src_pitch: line_bytes + src_pad, dst_pitch: line_bytes + dst_pad };
            check(g, src_residue, dst_residue, 0, seed)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A buffer one byte (or more) short is refused, and nothing is written.
        #[test]
        fn short_buffers_write_nothing(
            lines in 1..40u32, line_bytes in 1..600u32, src_pad in pad(), dst_pad in pad(),
            src_short in 0..2000usize, dst_short in 0..2000usize, which in 0..3u8, unit in 0..3usize,
        ) {
            let g = CopyGeometry { lines, line_bytes, src_pitch: line_bytes + src_pad, dst_pitch: line_bytes + dst_pad };
            let src_need = g.src_extent().unwrap();
            let dst_need = g.dst_extent().unwrap();
            let src_len = if which == 1 { src_need } else { src_need.saturating_sub(src_short + 1) };
            let dst_len = if which == 0 { dst_need } else { dst_need.saturating_sub(dst_short + 1) };
            let src = vec![0x5Au8; src_len];
            let mut dst = vec![0xC3u8; dst_len];
            let t = CopyTuning { non_temporal_threshold: 0, avx2_wide_stores: true, page_lookahead: PAGE_LOOKAHEAD };
            prop_assert_eq!(copy_frame_tuned(&mut dst, &src, &g, UNITS[unit], &t), Err(STATUS_BUFFER_TOO_SMALL));
            prop_assert!(dst.iter().all(|&b| b == 0xC3));
        }

        /// A pitch below the line is refused, and nothing is written.
        #[test]
        fn bad_pitches_write_nothing(lines in 1..40u32, line_bytes in 2..600u32, cut in 1..600u32, on_src in any::<bool>()) {
            let short = line_bytes.saturating_sub(cut);
            let (src_pitch, dst_pitch) = if on_src { (short, line_bytes) } else { (line_bytes, short) };
            let g = CopyGeometry { lines, line_bytes, src_pitch, dst_pitch };
            let src = vec![1u8; 64 * 1024];
            let mut dst = vec![2u8; 64 * 1024];
            for unit in UNITS {
                prop_assert_eq!(copy_frame(&mut dst, &src, &g, unit), Err(STATUS_INVALID_PARAMETER));
            }
            prop_assert!(dst.iter().all(|&b| b == 2));
        }
    }
}
