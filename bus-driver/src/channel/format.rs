//! Validation of the format a child starts a channel with (`StartChannel`),
//! and the geometry the board is programmed with.
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};
use capdma_interface::status::{NtStatus, STATUS_INTEGER_OVERFLOW, STATUS_INVALID_PARAMETER};
use capdma_interface::table::ChannelFormat;
use capdma_interface::DmaMode;

/// The board's line alignment in common-buffer slots, bytes (the
/// contract's, `capdma_interface::regs`): the slot line pitch is the
/// line's bytes rounded up to this.
pub use capdma_interface::regs::SLOT_LINE_ALIGNMENT;

/// The geometry of a validated format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelGeometry {
    /// The pixel format.
    pub pixel: PixelFormat,
    /// Bytes of one line of pixels.
    pub line_bytes: u32,
    /// Lines in a frame (NV12: luma and chroma lines).
    pub lines: u32,
    /// `LINE_PITCH` programmed into the board, bytes: the frame stride in
    /// S/G mode, `line_bytes` rounded up to [`SLOT_LINE_ALIGNMENT`] in
    /// common-buffer mode.
    pub line_pitch: u32,
    /// Bytes the board writes per frame: `lines * line_pitch`.
    pub frame_bytes: u32,
}

/// The slot line pitch for lines of `line_bytes` bytes: rounded up to
/// [`SLOT_LINE_ALIGNMENT`]; `None` on overflow.
#[must_use]
pub const fn slot_line_pitch(line_bytes: u32) -> Option<u32> {
    match line_bytes.checked_add(SLOT_LINE_ALIGNMENT - 1) {
        Some(v) => Some(v & !(SLOT_LINE_ALIGNMENT - 1)),
        None => None,
    }
}

/// Validates `format` for a channel in `mode` whose slots hold `slot_bytes`
/// bytes (common-buffer mode; ignored in S/G mode).
///
/// # Errors
/// * `STATUS_INVALID_PARAMETER`: FOURCC not YUY2 or NV12; width or height
///   zero, odd, or above `MAX_WIDTH` × `MAX_HEIGHT`; frame interval 0; S/G:
///   stride below the line's bytes; common-buffer: the frame (at the slot
///   line pitch) larger than a slot.
/// * `STATUS_INTEGER_OVERFLOW`: the frame's size does not fit 32 bits.
pub fn validate_channel_format(
    format: &ChannelFormat,
    mode: DmaMode,
    slot_bytes: u32,
) -> Result<ChannelGeometry, NtStatus> {
    let pixel = PixelFormat::from_fourcc(format.fourcc).ok_or(STATUS_INVALID_PARAMETER)?;
    let dimension_ok = |v: u32, max: u32| v != 0 && v.is_multiple_of(2) && v <= max;
    if !dimension_ok(format.width, MAX_WIDTH) || !dimension_ok(format.height, MAX_HEIGHT) {
        return Err(STATUS_INVALID_PARAMETER);
    }
    if format.frame_interval == 0 {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let line_bytes = pixel.line_bytes(format.width).ok_or(STATUS_INTEGER_OVERFLOW)?;
    let lines = pixel.lines(format.height).ok_or(STATUS_INTEGER_OVERFLOW)?;
    let line_pitch = match mode {
        DmaMode::ScatterGather => {
            if format.stride < line_bytes {
                return Err(STATUS_INVALID_PARAMETER);
            }
            format.stride
        }
        DmaMode::CommonBuffer => slot_line_pitch(line_bytes).ok_or(STATUS_INTEGER_OVERFLOW)?,
    };
    let frame_bytes = pixel.frame_bytes(format.height, line_pitch).ok_or(STATUS_INTEGER_OVERFLOW)?;
    if mode == DmaMode::CommonBuffer && frame_bytes > slot_bytes {
        return Err(STATUS_INVALID_PARAMETER);
    }
    Ok(ChannelGeometry { pixel, line_bytes, lines, line_pitch, frame_bytes })
}

/// A validated format a channel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunState {
    /// As the child passed it.
    pub format: ChannelFormat,
    /// Derived geometry.
    pub geometry: ChannelGeometry,
}

#[cfg(test)]
mod tests {
    use super::*;
    use capdma_interface::format::{FOURCC_NV12, FOURCC_YUY2};

    fn fmt(fourcc: u32, width: u32, height: u32, stride: u32) -> ChannelFormat {
        ChannelFormat { fourcc, width, height, stride, frame_interval: 333_333, reserved: 0 }
    }

    #[test]
    fn common_buffer_pitch_is_rounded_to_256() {
        let g = validate_channel_format(&fmt(FOURCC_YUY2, 1000, 100, 0), DmaMode::CommonBuffer, 1 << 20).unwrap();
        assert_eq!((g.line_bytes, g.line_pitch, g.frame_bytes), (2000, 2048, 204_800));
        let g = validate_channel_format(&fmt(FOURCC_NV12, 1920, 1080, 0), DmaMode::CommonBuffer, 1 << 23).unwrap();
        assert_eq!((g.line_pitch, g.lines, g.frame_bytes), (2048, 1620, 2048 * 1620));
    }

    #[test]
    fn frame_must_fit_a_slot() {
        let f = fmt(FOURCC_YUY2, 1000, 100, 0);
        assert_eq!(validate_channel_format(&f, DmaMode::CommonBuffer, 204_799), Err(STATUS_INVALID_PARAMETER));
        assert!(validate_channel_format(&f, DmaMode::CommonBuffer, 204_800).is_ok());
        // S/G ignores the slot size.
        assert!(validate_channel_format(&fmt(FOURCC_YUY2, 1000, 100, 2000), DmaMode::ScatterGather, 0).is_ok());
    }

    #[test]
    fn bad_formats_are_refused() {
        let sg = DmaMode::ScatterGather;
        let cases = [
            fmt(u32::from_le_bytes(*b"RGB3"), 640, 480, 1280),
            fmt(FOURCC_YUY2, 641, 480, 1282),
            fmt(FOURCC_YUY2, 640, 481, 1280),
            fmt(FOURCC_YUY2, 0, 480, 1280),
            fmt(FOURCC_YUY2, MAX_WIDTH + 2, 480, 1 << 20),
            fmt(FOURCC_YUY2, 640, MAX_HEIGHT + 2, 1280),
            fmt(FOURCC_YUY2, 640, 480, 1279),
            ChannelFormat { frame_interval: 0, ..fmt(FOURCC_YUY2, 640, 480, 1280) },
        ];
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(validate_channel_format(c, sg, 0), Err(STATUS_INVALID_PARAMETER), "case {i}");
        }
        // A stride so large the frame overflows 32 bits.
        assert_eq!(
            validate_channel_format(&fmt(FOURCC_YUY2, 640, 2160, 0x0100_0000), sg, 0),
            Err(STATUS_INTEGER_OVERFLOW)
        );
    }
}
