//! Validation of the format a child starts a channel with (`StartChannel`),
//! and the geometry the board is programmed with.
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};
use capdma_interface::status::{NtStatus, STATUS_INTEGER_OVERFLOW, STATUS_INVALID_PARAMETER};
use capdma_interface::table::ChannelFormat;

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

/// What every mode checks and derives of a format before it lays the
/// lines out (its line pitch): the pixel format and the line geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Picture {
    pixel: PixelFormat,
    height: u32,
    /// Bytes of one line of pixels.
    pub line_bytes: u32,
    lines: u32,
}

/// The checks common to every mode (`StartChannel`): the FOURCC, the
/// dimensions and the frame interval. Each engine then chooses the line
/// pitch ([`Picture::with_pitch`]): the S/G engine the child's stride
/// (`channel::sg::validate_format`), the slot engine the line rounded up
/// to [`SLOT_LINE_ALIGNMENT`] (`channel::slots::validate_format`).
///
/// # Errors
/// * `STATUS_INVALID_PARAMETER`: FOURCC not YUY2 or NV12; width or height
///   zero, odd, or above `MAX_WIDTH` × `MAX_HEIGHT`; frame interval 0.
/// * `STATUS_INTEGER_OVERFLOW`: a line's bytes or the lines do not fit 32 bits.
pub(crate) fn validate_picture(format: &ChannelFormat) -> Result<Picture, NtStatus> {
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
    Ok(Picture { pixel, height: format.height, line_bytes, lines })
}

impl Picture {
    /// The geometry with lines `line_pitch` bytes apart.
    ///
    /// # Errors
    /// `STATUS_INTEGER_OVERFLOW`: the frame's size does not fit 32 bits.
    pub(crate) fn with_pitch(self, line_pitch: u32) -> Result<ChannelGeometry, NtStatus> {
        let frame_bytes = self.pixel.frame_bytes(self.height, line_pitch).ok_or(STATUS_INTEGER_OVERFLOW)?;
        Ok(ChannelGeometry { pixel: self.pixel, line_bytes: self.line_bytes, lines: self.lines, line_pitch, frame_bytes })
    }
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
    use capdma_interface::format::FOURCC_YUY2;

    fn fmt(fourcc: u32, width: u32, height: u32, stride: u32) -> ChannelFormat {
        ChannelFormat { fourcc, width, height, stride, frame_interval: 333_333, reserved: 0 }
    }

    #[test]
    fn bad_pictures_are_refused() {
        let cases = [
            fmt(u32::from_le_bytes(*b"RGB3"), 640, 480, 1280),
            fmt(FOURCC_YUY2, 641, 480, 1282),
            fmt(FOURCC_YUY2, 640, 481, 1280),
            fmt(FOURCC_YUY2, 0, 480, 1280),
            fmt(FOURCC_YUY2, MAX_WIDTH + 2, 480, 1 << 20),
            fmt(FOURCC_YUY2, 640, MAX_HEIGHT + 2, 1280),
            ChannelFormat { frame_interval: 0, ..fmt(FOURCC_YUY2, 640, 480, 1280) },
        ];
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(validate_picture(c), Err(STATUS_INVALID_PARAMETER), "case {i}");
        }
        let p = validate_picture(&fmt(FOURCC_YUY2, 640, 2160, 0)).unwrap();
        assert_eq!(p.line_bytes, 1280);
        assert_eq!(p.with_pitch(0x0100_0000), Err(STATUS_INTEGER_OVERFLOW));
        assert_eq!(p.with_pitch(1280).map(|g| g.frame_bytes), Ok(1280 * 2160));
    }

    #[test]
    fn slot_pitch_rounds_to_the_line_alignment() {
        assert_eq!(slot_line_pitch(2000), Some(2048));
        assert_eq!(slot_line_pitch(2048), Some(2048));
        assert_eq!(slot_line_pitch(u32::MAX), None);
    }
}
