//! The pixel formats the board produces, and their plane geometry.
//!
//! Both the board model and the AVStream core lay frames out the same way:
//! `lines(height)` lines of `line_bytes(width)` bytes, one after another at a
//! line pitch (stride) of at least `line_bytes`. For NV12 the interleaved
//! chroma plane's `height / 2` lines follow the `height` luma lines at the
//! same pitch, as in a KS `NV12` buffer.

/// `MAKEFOURCC('Y','U','Y','2')`.
pub const FOURCC_YUY2: u32 = u32::from_le_bytes(*b"YUY2");
/// `MAKEFOURCC('N','V','1','2')`.
pub const FOURCC_NV12: u32 = u32::from_le_bytes(*b"NV12");

/// Largest supported width in pixels.
pub const MAX_WIDTH: u32 = 4096;
/// Largest supported height in lines.
pub const MAX_HEIGHT: u32 = 2160;

/// A supported pixel format.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, 16 bits per pixel, one plane.
    Yuy2 = FOURCC_YUY2,
    /// Planar 4:2:0, 12 bits per pixel: a Y plane, then an interleaved UV plane.
    Nv12 = FOURCC_NV12,
}

impl PixelFormat {
    /// The format with this FOURCC, if supported.
    #[must_use]
    pub const fn from_fourcc(fourcc: u32) -> Option<Self> {
        match fourcc {
            FOURCC_YUY2 => Some(Self::Yuy2),
            FOURCC_NV12 => Some(Self::Nv12),
            _ => None,
        }
    }

    /// The FOURCC (`biCompression`, and `Data1` of the KS subtype GUID).
    #[must_use]
    pub const fn fourcc(self) -> u32 {
        self as u32
    }

    /// `biBitCount`: 16 for YUY2, 12 for NV12.
    #[must_use]
    pub const fn bits_per_pixel(self) -> u32 {
        match self {
            Self::Yuy2 => 16,
            Self::Nv12 => 12,
        }
    }

    /// Bytes of one line of pixels (`width` pixels): `2 * width` for YUY2,
    /// `width` for NV12 (both planes). `None` on overflow.
    #[must_use]
    pub const fn line_bytes(self, width: u32) -> Option<u32> {
        match self {
            Self::Yuy2 => width.checked_mul(2),
            Self::Nv12 => Some(width),
        }
    }

    /// Lines in a frame of `height` pixel rows: `height` for YUY2,
    /// `height + height / 2` for NV12. `None` on overflow.
    #[must_use]
    pub const fn lines(self, height: u32) -> Option<u32> {
        match self {
            Self::Yuy2 => Some(height),
            Self::Nv12 => height.checked_add(height / 2),
        }
    }

    /// Bytes of a frame at line pitch `pitch` (bytes): `pitch * lines(height)`.
    /// `None` on overflow of `u32`.
    #[must_use]
    pub const fn frame_bytes(self, height: u32, pitch: u32) -> Option<u32> {
        match self.lines(height) {
            Some(lines) => pitch.checked_mul(lines),
            None => None,
        }
    }

    /// The lower-case name used on command lines and in JSON.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Yuy2 => "yuy2",
            Self::Nv12 => "nv12",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_of_1080p() {
        assert_eq!(PixelFormat::Yuy2.line_bytes(1920), Some(3840));
        assert_eq!(PixelFormat::Yuy2.frame_bytes(1080, 3840), Some(4_147_200));
        assert_eq!(PixelFormat::Nv12.lines(1080), Some(1620));
        assert_eq!(PixelFormat::Nv12.frame_bytes(1080, 1920), Some(3_110_400));
    }

    #[test]
    fn overflow_is_none() {
        assert_eq!(PixelFormat::Yuy2.line_bytes(u32::MAX), None);
        assert_eq!(PixelFormat::Yuy2.frame_bytes(1 << 20, 1 << 20), None);
    }

    #[test]
    fn fourcc_round_trip() {
        for f in [PixelFormat::Yuy2, PixelFormat::Nv12] {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
        }
        assert_eq!(PixelFormat::from_fourcc(u32::from_le_bytes(*b"RGB3")), None);
    }
}
