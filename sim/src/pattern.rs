//! The deterministic test pattern the simulated board produces, its
//! byte-exact verifier, and a PNG snapshot helper.
//!
//! A frame looks like moving colour bars (so a snapshot is easy to judge by
//! eye) with fine noise on every byte; the noise is a hash of
//! `(seed, channel, frame_number, line, byte offset)`, so a line that is
//! swapped, stale (from an older frame), from another channel, shifted or
//! corrupt in a single byte no longer matches [`Pattern::expected_line`].
//!
//! The first [`HEADER_BYTES`] bytes of line 0 carry a [`read_header`]-able
//! header (magic, channel, frame number, check word), so a verifier can tell
//! which frame it is looking at before comparing bytes. Lines shorter than
//! the header carry none.
//!
//! Layout (as `capdma_interface::format` defines it): YUY2 lines are
//! `Y0 U Y1 V` per pixel pair; NV12 has `height` luma lines followed by
//! `height / 2` interleaved `U V` lines.
use capdma_interface::format::PixelFormat;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// Magic at the start of line 0: `"CPDM"`.
pub const HEADER_MAGIC: [u8; 4] = *b"CPDM";
/// Bytes of the frame header: magic, channel (u32 LE), frame number (u32 LE), check (u32 LE).
pub const HEADER_BYTES: usize = 16;
/// The byte the board writes into line padding (between the line's bytes and the pitch).
pub const PAD_BYTE: u8 = 0x5A;

/// Colour bars (white, yellow, cyan, green, magenta, red, blue, black),
/// BT.601 limited range: (Y, U, V). No value exceeds 240 (see the noise).
const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (16, 128, 128),
];

// The noise is added without carries (see `FrameLines::fill_line`): no base
// value may exceed 240.
const _: () = {
    let mut i = 0;
    while i < BARS.len() {
        assert!(BARS[i].0 <= 240 && BARS[i].1 <= 240 && BARS[i].2 <= 240);
        i += 1;
    }
};

/// The `splitmix64` finaliser: a cheap, well-mixed 64-bit hash step.
const fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_word(channel: u32, frame_number: u32) -> u32 {
    (mix64(u64::from(channel) << 32 | u64::from(frame_number)) >> 16) as u32
}

/// Reads the header at the start of a frame's line 0: `(channel, frame_number)`,
/// or `None` when `bytes` does not start with a valid header.
#[must_use]
pub fn read_header(bytes: &[u8]) -> Option<(u32, u32)> {
    let h = bytes.get(..HEADER_BYTES)?;
    if h[..4] != HEADER_MAGIC {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let (channel, frame) = (word(4), word(8));
    (word(12) == check_word(channel, frame)).then_some((channel, frame))
}

/// The pattern of one channel at one format (the stream's constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixel rows.
    pub height: u32,
    /// Channel index (part of every byte).
    pub channel: u32,
    /// Seed (part of every byte).
    pub seed: u64,
}

/// Where a frame first differs from the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternMismatch {
    /// Line (0-based, counting NV12 chroma lines after the luma lines).
    pub line: u32,
    /// Byte offset in the line.
    pub offset: usize,
    /// Expected byte.
    pub expected: u8,
    /// Byte found.
    pub actual: u8,
    /// The header found in the frame, if any: `(channel, frame_number)`.
    pub header: Option<(u32, u32)>,
}

impl fmt::Display for PatternMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} byte {}: expected {:#04x}, found {:#04x}",
            self.line, self.offset, self.expected, self.actual
        )?;
        match self.header {
            Some((c, n)) => write!(f, " (frame header says channel {c}, frame {n})"),
            None => write!(f, " (no valid frame header)"),
        }
    }
}

impl Pattern {
    /// Bytes of one line (`PixelFormat::line_bytes`), 0 on overflow.
    #[must_use]
    pub fn line_bytes(&self) -> usize {
        self.format.line_bytes(self.width).unwrap_or(0) as usize
    }

    /// Lines in a frame (`PixelFormat::lines`), 0 on overflow.
    #[must_use]
    pub fn lines(&self) -> u32 {
        self.format.lines(self.height).unwrap_or(0)
    }

    fn frame_key(&self, frame_number: u32) -> u64 {
        mix64(self.seed ^ mix64(u64::from(self.channel) << 32 | u64::from(frame_number)))
    }

    /// The base picture's line of one kind (luma/YUY2 or NV12 chroma) for a frame.
    fn base_line(&self, frame_number: u32, chroma: bool) -> Vec<u8> {
        let len = self.line_bytes();
        let width = self.width.max(1) as usize;
        // Bars move 4 pixels a frame; channels start an eighth apart.
        let mut pos = (frame_number as usize * 4 + self.channel as usize * width / 8) % width;
        let mut next = |by: usize| {
            let bar = BARS[pos * 8 / width];
            pos = (pos + by) % width;
            bar
        };
        let mut out = Vec::with_capacity(len + 4);
        match (self.format, chroma) {
            (PixelFormat::Yuy2, _) => {
                while out.len() < len {
                    let (y0, u, v) = next(1);
                    let (y1, _, _) = next(1);
                    out.extend_from_slice(&[y0, u, y1, v]);
                }
            }
            (PixelFormat::Nv12, false) => {
                while out.len() < len {
                    out.push(next(1).0);
                }
            }
            (PixelFormat::Nv12, true) => {
                while out.len() < len {
                    let (_, u, v) = next(2);
                    out.extend_from_slice(&[u, v]);
                }
            }
        }
        out.truncate(len);
        out
    }

    /// The generator of frame `frame_number`'s lines (computes the parts
    /// shared by all lines once; use it to produce a whole frame).
    #[must_use]
    pub fn frame(&self, frame_number: u32) -> FrameLines {
        FrameLines {
            pattern: *self,
            frame_number,
            key: self.frame_key(frame_number),
            luma: self.base_line(frame_number, false),
            chroma: if self.format == PixelFormat::Nv12 { self.base_line(frame_number, true) } else { Vec::new() },
        }
    }

    /// Fills `out` with line `line` of frame `frame_number`: the first
    /// `min(out.len(), line_bytes)` bytes; anything beyond is left alone.
    /// (For a whole frame, [`Pattern::frame`] is faster.)
    pub fn fill_line(&self, frame_number: u32, line: u32, out: &mut [u8]) {
        self.frame(frame_number).fill_line(line, out);
    }

    /// Line `line` of frame `frame_number`, `line_bytes` long.
    #[must_use]
    pub fn expected_line(&self, frame_number: u32, line: u32) -> Vec<u8> {
        let mut v = vec![0; self.line_bytes()];
        self.fill_line(frame_number, line, &mut v);
        v
    }

    /// Compares one line byte for byte (`actual` must hold at least `line_bytes`).
    ///
    /// # Errors
    /// The first differing byte (a short `actual` differs at its end).
    pub fn verify_line(&self, frame_number: u32, line: u32, actual: &[u8]) -> Result<(), PatternMismatch> {
        let mut expected = vec![0; self.line_bytes()];
        self.frame(frame_number).fill_line(line, &mut expected);
        compare_line(line, &expected, actual)
    }

    /// Verifies a whole frame laid out at `stride` bytes per line (the line
    /// bytes of each line are compared; padding is not).
    ///
    /// # Errors
    /// The first differing byte, with the header the frame carries.
    pub fn verify_frame(&self, frame_number: u32, frame: &[u8], stride: usize) -> Result<(), PatternMismatch> {
        let header = read_header(frame);
        let lines = self.frame(frame_number);
        let mut expected = vec![0; self.line_bytes()];
        for line in 0..self.lines() {
            let start = line as usize * stride;
            let actual = frame.get(start..).unwrap_or(&[]);
            let actual = &actual[..actual.len().min(expected.len())];
            lines.fill_line(line, &mut expected);
            compare_line(line, &expected, actual).map_err(|mut m| {
                m.header = header;
                m
            })?;
        }
        Ok(())
    }
}

/// Compares `actual` with `expected` (a short `actual` differs at its end).
fn compare_line(line: u32, expected: &[u8], actual: &[u8]) -> Result<(), PatternMismatch> {
    if actual.len() >= expected.len() && actual[..expected.len()] == *expected {
        return Ok(());
    }
    let offset = expected.iter().zip(actual).position(|(e, a)| e != a).unwrap_or(actual.len().min(expected.len()));
    Err(PatternMismatch {
        line,
        offset,
        expected: expected.get(offset).copied().unwrap_or(0),
        actual: actual.get(offset).copied().unwrap_or(0),
        header: read_header(actual).filter(|_| line == 0),
    })
}

/// The lines of one frame of a [`Pattern`] (from [`Pattern::frame`]).
#[derive(Clone, Debug)]
pub struct FrameLines {
    pattern: Pattern,
    frame_number: u32,
    key: u64,
    luma: Vec<u8>,
    chroma: Vec<u8>,
}

impl FrameLines {
    /// Fills `out` with line `line`: the first `min(out.len(), line_bytes)`
    /// bytes; anything beyond is left alone. Lines past the end of the frame
    /// repeat the last kind of line with their own noise.
    pub fn fill_line(&self, line: u32, out: &mut [u8]) {
        let p = &self.pattern;
        let chroma = p.format == PixelFormat::Nv12 && line >= p.height;
        let base = if chroma { &self.chroma } else { &self.luma };
        let n = out.len().min(base.len());
        let out = &mut out[..n];
        out.copy_from_slice(&base[..n]);
        // 4 bits of noise per byte (fine grain on screen, decisive for
        // verification) from a xorshift64 stream seeded per line. Every base
        // byte is at most 240, so adding a nibble never carries into the next
        // byte and eight bytes can be done as one u64 addition.
        let mut state = mix64(self.key ^ u64::from(line).wrapping_mul(0xA24B_AED4_963E_E407)) | 1;
        let mut words = out.chunks_exact_mut(8);
        for word in &mut words {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let noisy = u64::from_le_bytes(bytes) + (state & 0x0F0F_0F0F_0F0F_0F0F);
            word.copy_from_slice(&noisy.to_le_bytes());
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        for (b, noise) in words.into_remainder().iter_mut().zip(state.to_le_bytes()) {
            *b += noise & 0x0F;
        }
        if line == 0 && n >= HEADER_BYTES {
            out[..4].copy_from_slice(&HEADER_MAGIC);
            out[4..8].copy_from_slice(&p.channel.to_le_bytes());
            out[8..12].copy_from_slice(&self.frame_number.to_le_bytes());
            out[12..16].copy_from_slice(&check_word(p.channel, self.frame_number).to_le_bytes());
        }
    }
}

/// Why a snapshot could not be written.
#[derive(Debug)]
pub enum SnapshotError {
    /// Width/height zero or odd where the format needs even, or a stride below the line.
    BadGeometry(String),
    /// `bytes` is shorter than the frame.
    TooShort {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// Creating or writing the file failed.
    Io(std::io::Error),
    /// The PNG encoder failed.
    Png(png::EncodingError),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadGeometry(s) => write!(f, "bad frame geometry: {s}"),
            Self::TooShort { needed, got } => write!(f, "frame needs {needed} bytes, got {got}"),
            Self::Io(e) => write!(f, "cannot write snapshot: {e}"),
            Self::Png(e) => write!(f, "PNG encoding failed: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// BT.601 limited-range YUV to RGB, integer arithmetic.
fn yuv_to_rgb(luma: u8, cb: u8, cr: u8) -> [u8; 3] {
    let scaled = (i32::from(luma) - 16).max(0) * 298;
    let blue_diff = i32::from(cb) - 128;
    let red_diff = i32::from(cr) - 128;
    let clamp = |x: i32| u8::try_from(((x + 128) >> 8).clamp(0, 255)).unwrap_or(u8::MAX);
    [
        clamp(scaled + 409 * red_diff),
        clamp(scaled - 100 * blue_diff - 208 * red_diff),
        clamp(scaled + 516 * blue_diff),
    ]
}

/// Converts a YUY2 or NV12 frame (`stride` bytes per line) to packed RGB8.
///
/// # Errors
/// [`SnapshotError::BadGeometry`] or [`SnapshotError::TooShort`].
pub fn to_rgb(format: PixelFormat, width: u32, height: u32, stride: usize, bytes: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || (format == PixelFormat::Nv12 && !height.is_multiple_of(2)) {
        return Err(SnapshotError::BadGeometry(format!("{width}x{height} {}", format.name())));
    }
    let line_bytes = format.line_bytes(width).unwrap_or(u32::MAX) as usize;
    if stride < line_bytes {
        return Err(SnapshotError::BadGeometry(format!("stride {stride} below line bytes {line_bytes}")));
    }
    let lines = format.lines(height).unwrap_or(u32::MAX) as usize;
    let needed = (lines - 1) * stride + line_bytes;
    if bytes.len() < needed {
        return Err(SnapshotError::TooShort { needed, got: bytes.len() });
    }
    let (cols, rows) = (width as usize, height as usize);
    let mut rgb = Vec::with_capacity(cols * rows * 3);
    for row in 0..rows {
        let line = &bytes[row * stride..];
        for col in 0..cols {
            let (luma, cb, cr) = match format {
                PixelFormat::Yuy2 => {
                    let pair = &line[(col / 2) * 4..(col / 2) * 4 + 4];
                    (pair[(col % 2) * 2], pair[1], pair[3])
                }
                PixelFormat::Nv12 => {
                    let chroma = &bytes[(rows + row / 2) * stride + (col & !1)..];
                    (line[col], chroma[0], chroma[1])
                }
            };
            rgb.extend_from_slice(&yuv_to_rgb(luma, cb, cr));
        }
    }
    Ok(rgb)
}

/// Writes a YUY2 or NV12 frame (`stride` bytes per line) as an RGB PNG at `path`.
///
/// # Errors
/// [`SnapshotError`] for bad geometry, a short buffer or a failed write.
pub fn snapshot_png(path: &Path, format: PixelFormat, width: u32, height: u32, stride: usize, bytes: &[u8]) -> Result<(), SnapshotError> {
    let rgb = to_rgb(format, width, height, stride, bytes)?;
    let file = File::create(path).map_err(SnapshotError::Io)?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(SnapshotError::Png)?;
    writer.write_image_data(&rgb).map_err(SnapshotError::Png)?;
    writer.finish().map_err(SnapshotError::Png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(p: &Pattern, n: u32, stride: usize) -> Vec<u8> {
        let mut f = vec![PAD_BYTE; stride * p.lines() as usize];
        for line in 0..p.lines() {
            let s = line as usize * stride;
            p.fill_line(n, line, &mut f[s..s + stride]);
        }
        f
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let p = Pattern { format: PixelFormat::Yuy2, width: 64, height: 8, channel: 3, seed: 9 };
        let l = p.expected_line(77, 0);
        assert_eq!(read_header(&l), Some((3, 77)));
        let mut bad = l.clone();
        bad[9] ^= 1;
        assert_eq!(read_header(&bad), None);
        assert_eq!(read_header(&l[..15]), None);
        assert_eq!(read_header(&p.expected_line(77, 1)), None);
    }

    #[test]
    fn verify_detects_a_single_flipped_byte() {
        for format in [PixelFormat::Yuy2, PixelFormat::Nv12] {
            let p = Pattern { format, width: 96, height: 20, channel: 1, seed: 42 };
            let stride = p.line_bytes() + 32;
            let mut f = frame(&p, 5, stride);
            p.verify_frame(5, &f, stride).unwrap();
            let at = 13 * stride + 57;
            f[at] ^= 0x10;
            let m = p.verify_frame(5, &f, stride).unwrap_err();
            assert_eq!((m.line, m.offset), (13, 57));
            assert_eq!(m.header, Some((1, 5)));
            // Padding is not compared.
            f[at] ^= 0x10;
            f[13 * stride + p.line_bytes() + 3] ^= 0xFF;
            p.verify_frame(5, &f, stride).unwrap();
        }
    }

    #[test]
    fn every_parameter_changes_every_line() {
        let p = Pattern { format: PixelFormat::Nv12, width: 64, height: 16, channel: 2, seed: 5 };
        let variants = [
            Pattern { channel: 3, ..p },
            Pattern { seed: 6, ..p },
            Pattern { format: PixelFormat::Nv12, width: 64, height: 16, channel: 2, seed: 5 },
        ];
        for line in 0..p.lines() {
            let base = p.expected_line(10, line);
            assert_ne!(base, p.expected_line(11, line), "stale frame, line {line}");
            assert_ne!(base, variants[0].expected_line(10, line), "other channel, line {line}");
            assert_ne!(base, variants[1].expected_line(10, line), "other seed, line {line}");
            assert_eq!(base, variants[2].expected_line(10, line));
            if line > 0 {
                assert_ne!(base, p.expected_line(10, line - 1), "swapped lines {line}");
            }
        }
    }

    #[test]
    fn swapped_lines_fail_verification() {
        let p = Pattern { format: PixelFormat::Yuy2, width: 32, height: 10, channel: 0, seed: 1 };
        let stride = p.line_bytes();
        let mut f = frame(&p, 0, stride);
        let (a, b) = f.split_at_mut(4 * stride);
        a[3 * stride..].swap_with_slice(&mut b[..stride]);
        assert_eq!(p.verify_frame(0, &f, stride).unwrap_err().line, 3);
    }

    #[test]
    fn rgb_conversion_of_bars_and_png_snapshot() {
        // Pure white/black in limited range convert to 255/0.
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        let p = Pattern { format: PixelFormat::Nv12, width: 64, height: 32, channel: 0, seed: 1 };
        let stride = 128;
        let f = frame(&p, 0, stride);
        let rgb = to_rgb(p.format, 64, 32, stride, &f).unwrap();
        assert_eq!(rgb.len(), 64 * 32 * 3);
        assert!(matches!(to_rgb(p.format, 64, 32, stride, &f[..100]), Err(SnapshotError::TooShort { .. })));
        assert!(matches!(to_rgb(p.format, 63, 32, stride, &f), Err(SnapshotError::BadGeometry(_))));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nv12.png");
        snapshot_png(&path, p.format, 64, 32, stride, &f).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[1..4], b"PNG");
        let yuy2 = Pattern { format: PixelFormat::Yuy2, ..p };
        let f2 = frame(&yuy2, 0, 128);
        snapshot_png(&dir.path().join("yuy2.png"), yuy2.format, 64, 32, 128, &f2).unwrap();
    }
}
