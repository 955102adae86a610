//! YUV4MPEG2 (`.y4m`) input and output for the simulated board.
//!
//! * Reading: 8-bit 4:2:2 (`C422`) becomes YUY2 frames; 8-bit 4:2:0
//!   (`C420`, `C420jpeg`, `C420paldv`, `C420mpeg2`, or no `C` tag) becomes
//!   NV12 frames. Frames are packed (line pitch = line bytes).
//! * Writing: YUY2 frames as `C422`, NV12 frames as `C420`, with a complete
//!   header (`W H F num:den Ip A1:1 C…`) that ffmpeg and mpv play.
//!
//! Reading then writing (or writing then reading) is bit-exact for frame
//! data. The 4:2:0 chroma-siting variants all read as NV12 and are written
//! back as `C420` (NV12 carries no siting).
//!
//! A small parser of our own rather than the `y4m` crate: that crate's
//! encoder cannot write the interlace and aspect tags, and its decoder
//! reports a truncated last frame as a clean end of file.
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Longest header or frame-header line accepted, bytes.
const MAX_HEADER: usize = 4096;

/// Why a Y4M file could not be read or written.
#[derive(Debug)]
pub enum Y4mError {
    /// An I/O error.
    Io(io::Error),
    /// The stream does not start with `YUV4MPEG2 `.
    NotY4m,
    /// A malformed header (the text says what).
    BadHeader(String),
    /// A colour space other than 8-bit 4:2:2 or 4:2:0.
    UnsupportedColorspace(String),
    /// A size the board cannot produce (zero, odd where the format needs
    /// even, larger than `MAX_WIDTH` × `MAX_HEIGHT`).
    BadSize {
        /// Width in pixels.
        width: u32,
        /// Height in rows.
        height: u32,
    },
    /// A frame header that is not `FRAME[ params]\n`.
    BadFrameHeader {
        /// 0-based frame index.
        frame: usize,
    },
    /// The file ends inside a frame.
    Truncated {
        /// 0-based frame index.
        frame: usize,
        /// Bytes the frame needs.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// A frame given to the writer is too short for its geometry.
    ShortFrame {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
}

impl fmt::Display for Y4mError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::NotY4m => write!(f, "not a YUV4MPEG2 stream (missing 'YUV4MPEG2 ' signature)"),
            Self::BadHeader(s) => write!(f, "bad YUV4MPEG2 header: {s}"),
            Self::UnsupportedColorspace(c) => {
                write!(f, "unsupported colour space 'C{c}' (only 8-bit 4:2:2 and 4:2:0 are supported)")
            }
            Self::BadSize { width, height } => write!(
                f,
                "unsupported frame size {width}x{height} (even sizes, at most {MAX_WIDTH}x{MAX_HEIGHT})"
            ),
            Self::BadFrameHeader { frame } => write!(f, "frame {frame}: bad frame header (expected 'FRAME')"),
            Self::Truncated { frame, expected, got } => {
                write!(f, "frame {frame}: truncated ({got} of {expected} bytes)")
            }
            Self::ShortFrame { needed, got } => write!(f, "frame buffer too short: {got} bytes, {needed} needed"),
        }
    }
}

impl std::error::Error for Y4mError {}

impl From<io::Error> for Y4mError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// The stream parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Y4mHeader {
    /// Frame format the frames are converted to.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
    /// Frame rate numerator (frames per `frame_rate_den` seconds).
    pub frame_rate_num: u32,
    /// Frame rate denominator.
    pub frame_rate_den: u32,
    /// The `C` tag as found (`"420jpeg"`, …), empty when absent.
    pub colorspace: String,
}

impl Y4mHeader {
    /// Bytes of one packed frame in the frame format.
    #[must_use]
    pub fn frame_bytes(&self) -> usize {
        frame_bytes(self.format, self.width, self.height)
    }

    /// The frame interval in 100-ns units (`AvgTimePerFrame`), rounded; 0
    /// when the rate is 0.
    #[must_use]
    pub fn frame_interval_100ns(&self) -> u64 {
        if self.frame_rate_num == 0 {
            return 0;
        }
        (u64::from(self.frame_rate_den) * 10_000_000 + u64::from(self.frame_rate_num) / 2) / u64::from(self.frame_rate_num)
    }
}

fn frame_bytes(format: PixelFormat, width: u32, height: u32) -> usize {
    let line = format.line_bytes(width).unwrap_or(0) as usize;
    line * format.lines(height).unwrap_or(0) as usize
}

fn check_size(format: PixelFormat, width: u32, height: u32) -> Result<(), Y4mError> {
    let odd = !width.is_multiple_of(2) || (format == PixelFormat::Nv12 && !height.is_multiple_of(2));
    if width == 0 || height == 0 || odd || width > MAX_WIDTH || height > MAX_HEIGHT {
        return Err(Y4mError::BadSize { width, height });
    }
    Ok(())
}

/// A whole video in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Y4mVideo {
    /// Stream parameters.
    pub header: Y4mHeader,
    /// Packed frames in `header.format` (each `header.frame_bytes()` long).
    pub frames: Vec<Vec<u8>>,
}

/// Reads a Y4M stream frame by frame.
pub struct Y4mReader<R: Read> {
    reader: R,
    header: Y4mHeader,
    planar: Vec<u8>,
    frames_read: usize,
}

/// Reads one `\n`-terminated line (without the `\n`); `None` at a clean end
/// of stream before any byte.
fn read_line<R: Read>(reader: &mut R) -> Result<Option<Vec<u8>>, Y4mError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => {
                return if line.is_empty() {
                    Ok(None)
                } else {
                    Err(Y4mError::BadHeader("header line not terminated by a newline".into()))
                };
            }
            Ok(_) => {
                if byte[0] == b'\n' {
                    return Ok(Some(line));
                }
                if line.len() >= MAX_HEADER {
                    return Err(Y4mError::BadHeader(format!("header line longer than {MAX_HEADER} bytes")));
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn parse_u32(tag: char, value: &str) -> Result<u32, Y4mError> {
    value.parse().map_err(|_| Y4mError::BadHeader(format!("bad value '{value}' for {tag}")))
}

fn parse_ratio(tag: char, value: &str) -> Result<(u32, u32), Y4mError> {
    let (n, d) = value
        .split_once(':')
        .ok_or_else(|| Y4mError::BadHeader(format!("{tag} needs num:den, got '{value}'")))?;
    Ok((parse_u32(tag, n)?, parse_u32(tag, d)?))
}

fn parse_header(line: &[u8]) -> Result<Y4mHeader, Y4mError> {
    let rest = line.strip_prefix(b"YUV4MPEG2").ok_or(Y4mError::NotY4m)?;
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(Y4mError::NotY4m);
    }
    let text = std::str::from_utf8(rest).map_err(|_| Y4mError::BadHeader("header is not ASCII".into()))?;
    let (mut width, mut height, mut rate, mut colorspace) = (None, None, None, String::new());
    for token in text.split(' ').filter(|t| !t.is_empty()) {
        let mut chars = token.chars();
        let tag = chars.next().unwrap_or(' ');
        let value = chars.as_str();
        match tag {
            'W' => width = Some(parse_u32('W', value)?),
            'H' => height = Some(parse_u32('H', value)?),
            'F' => rate = Some(parse_ratio('F', value)?),
            'A' => {
                parse_ratio('A', value)?;
            }
            'I' => {
                if !matches!(value, "p" | "t" | "b" | "m" | "?") {
                    return Err(Y4mError::BadHeader(format!("bad interlace tag 'I{value}'")));
                }
            }
            'C' => colorspace = value.to_string(),
            'X' => {}
            other => return Err(Y4mError::BadHeader(format!("unknown tag '{other}' in '{token}'"))),
        }
    }
    let width = width.ok_or_else(|| Y4mError::BadHeader("missing W (width)".into()))?;
    let height = height.ok_or_else(|| Y4mError::BadHeader("missing H (height)".into()))?;
    let (frame_rate_num, frame_rate_den) = rate.ok_or_else(|| Y4mError::BadHeader("missing F (frame rate)".into()))?;
    if frame_rate_num == 0 || frame_rate_den == 0 {
        return Err(Y4mError::BadHeader(format!("frame rate {frame_rate_num}:{frame_rate_den}")));
    }
    let format = match colorspace.as_str() {
        "422" => PixelFormat::Yuy2,
        "" | "420" | "420jpeg" | "420paldv" | "420mpeg2" => PixelFormat::Nv12,
        other => return Err(Y4mError::UnsupportedColorspace(other.to_string())),
    };
    check_size(format, width, height)?;
    Ok(Y4mHeader { format, width, height, frame_rate_num, frame_rate_den, colorspace })
}

impl<R: Read> Y4mReader<R> {
    /// Reads and checks the stream header.
    ///
    /// # Errors
    /// [`Y4mError`] for a stream that is not 8-bit 4:2:2/4:2:0 YUV4MPEG2 of
    /// a size the board can produce.
    pub fn new(mut reader: R) -> Result<Self, Y4mError> {
        // The signature first, so a file of another kind says so.
        let mut signature = [0u8; 9];
        let mut got = 0;
        while got < signature.len() {
            match reader.read(&mut signature[got..]) {
                Ok(0) => return Err(Y4mError::NotY4m),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if &signature != b"YUV4MPEG2" {
            return Err(Y4mError::NotY4m);
        }
        let mut line = signature.to_vec();
        line.extend(read_line(&mut reader)?.ok_or_else(|| Y4mError::BadHeader("header line not terminated by a newline".into()))?);
        let header = parse_header(&line)?;
        let planar = vec![0; header.frame_bytes()];
        Ok(Self { reader, header, planar, frames_read: 0 })
    }

    /// The stream parameters.
    #[must_use]
    pub fn header(&self) -> &Y4mHeader {
        &self.header
    }

    /// The next frame, packed in the header's format; `None` at the end.
    ///
    /// # Errors
    /// [`Y4mError::BadFrameHeader`], [`Y4mError::Truncated`] or I/O errors.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, Y4mError> {
        let frame = self.frames_read;
        let Some(line) = read_line(&mut self.reader).map_err(|e| match e {
            Y4mError::BadHeader(_) => Y4mError::BadFrameHeader { frame },
            other => other,
        })?
        else {
            return Ok(None);
        };
        let ok = line.strip_prefix(b"FRAME").is_some_and(|rest| rest.is_empty() || rest[0] == b' ');
        if !ok {
            return Err(Y4mError::BadFrameHeader { frame });
        }
        let mut got = 0;
        while got < self.planar.len() {
            match self.reader.read(&mut self.planar[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if got < self.planar.len() {
            return Err(Y4mError::Truncated { frame, expected: self.planar.len(), got });
        }
        self.frames_read += 1;
        Ok(Some(planar_to_packed(&self.header, &self.planar)))
    }
}

/// Planar Y, U, V (4:2:2 or 4:2:0) to packed YUY2 or NV12.
fn planar_to_packed(header: &Y4mHeader, planar: &[u8]) -> Vec<u8> {
    let (cols, rows) = (header.width as usize, header.height as usize);
    let chroma_cols = cols / 2;
    let (luma, chroma) = planar.split_at(cols * rows);
    let (cb, cr) = chroma.split_at(chroma.len() / 2);
    let mut out = Vec::with_capacity(planar.len());
    match header.format {
        PixelFormat::Yuy2 => {
            for row in 0..rows {
                for pair in 0..chroma_cols {
                    let at = row * cols + 2 * pair;
                    let c = row * chroma_cols + pair;
                    out.extend_from_slice(&[luma[at], cb[c], luma[at + 1], cr[c]]);
                }
            }
        }
        PixelFormat::Nv12 => {
            out.extend_from_slice(luma);
            for (&blue, &red) in cb.iter().zip(cr) {
                out.extend_from_slice(&[blue, red]);
            }
        }
    }
    out
}

/// Packed YUY2 or NV12 (`stride` bytes per line) to planar Y, U, V.
fn packed_to_planar(format: PixelFormat, width: u32, height: u32, stride: usize, frame: &[u8]) -> Vec<u8> {
    let (cols, rows) = (width as usize, height as usize);
    let mut luma = Vec::with_capacity(cols * rows * 2);
    let mut cb = Vec::new();
    let mut cr = Vec::new();
    match format {
        PixelFormat::Yuy2 => {
            for row in 0..rows {
                let line = &frame[row * stride..row * stride + 2 * cols];
                for px in line.chunks_exact(4) {
                    luma.extend_from_slice(&[px[0], px[2]]);
                    cb.push(px[1]);
                    cr.push(px[3]);
                }
            }
        }
        PixelFormat::Nv12 => {
            for row in 0..rows {
                luma.extend_from_slice(&frame[row * stride..row * stride + cols]);
            }
            for row in 0..rows / 2 {
                let line = &frame[(rows + row) * stride..(rows + row) * stride + cols];
                for pair in line.chunks_exact(2) {
                    cb.push(pair[0]);
                    cr.push(pair[1]);
                }
            }
        }
    }
    luma.extend_from_slice(&cb);
    luma.extend_from_slice(&cr);
    luma
}

/// Reads a whole Y4M stream.
///
/// # Errors
/// As [`Y4mReader::new`] and [`Y4mReader::next_frame`].
pub fn read_y4m<R: Read>(reader: R) -> Result<Y4mVideo, Y4mError> {
    let mut r = Y4mReader::new(reader)?;
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame()? {
        frames.push(f);
    }
    Ok(Y4mVideo { header: r.header, frames })
}

/// Reads a whole Y4M file.
///
/// # Errors
/// As [`read_y4m`], plus opening the file.
pub fn read_y4m_file(path: &Path) -> Result<Y4mVideo, Y4mError> {
    read_y4m(BufReader::new(File::open(path)?))
}

/// Writes YUY2 or NV12 frames as a Y4M stream.
pub struct Y4mWriter<W: Write> {
    writer: W,
    format: PixelFormat,
    width: u32,
    height: u32,
    frames: usize,
}

impl<W: Write> Y4mWriter<W> {
    /// Writes the stream header: `YUV4MPEG2 W<w> H<h> F<num>:<den> Ip A1:1
    /// C422` for YUY2, `C420` for NV12.
    ///
    /// # Errors
    /// [`Y4mError::BadSize`], a zero frame rate ([`Y4mError::BadHeader`]) or I/O errors.
    pub fn new(mut writer: W, format: PixelFormat, width: u32, height: u32, frame_rate: (u32, u32)) -> Result<Self, Y4mError> {
        check_size(format, width, height)?;
        if frame_rate.0 == 0 || frame_rate.1 == 0 {
            return Err(Y4mError::BadHeader(format!("frame rate {}:{}", frame_rate.0, frame_rate.1)));
        }
        let c = match format {
            PixelFormat::Yuy2 => "422",
            PixelFormat::Nv12 => "420",
        };
        writeln!(writer, "YUV4MPEG2 W{width} H{height} F{}:{} Ip A1:1 C{c}", frame_rate.0, frame_rate.1)?;
        Ok(Self { writer, format, width, height, frames: 0 })
    }

    /// Writes one frame laid out at `stride` bytes per line (`>=` the line
    /// bytes; padding is skipped).
    ///
    /// # Errors
    /// [`Y4mError::ShortFrame`] when `frame` is too short, or I/O errors.
    pub fn write_frame(&mut self, frame: &[u8], stride: usize) -> Result<(), Y4mError> {
        let line = self.format.line_bytes(self.width).unwrap_or(0) as usize;
        let lines = self.format.lines(self.height).unwrap_or(0) as usize;
        let needed = if stride < line { usize::MAX } else { (lines - 1) * stride + line };
        if frame.len() < needed {
            return Err(Y4mError::ShortFrame { needed, got: frame.len() });
        }
        let planar = packed_to_planar(self.format, self.width, self.height, stride, frame);
        self.writer.write_all(b"FRAME\n")?;
        self.writer.write_all(&planar)?;
        self.frames += 1;
        Ok(())
    }

    /// Frames written.
    #[must_use]
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Flushes and returns the underlying writer.
    ///
    /// # Errors
    /// I/O errors of the flush.
    pub fn finish(mut self) -> Result<W, Y4mError> {
        self.writer.flush()?;
        Ok(self.writer)
    }
}

/// Writes a whole video (packed frames).
///
/// # Errors
/// As [`Y4mWriter`].
pub fn write_y4m<W: Write>(writer: W, video: &Y4mVideo) -> Result<W, Y4mError> {
    let h = &video.header;
    let mut w = Y4mWriter::new(writer, h.format, h.width, h.height, (h.frame_rate_num, h.frame_rate_den))?;
    let stride = h.format.line_bytes(h.width).unwrap_or(0) as usize;
    for f in &video.frames {
        w.write_frame(f, stride)?;
    }
    w.finish()
}

/// Writes a whole video to a file.
///
/// # Errors
/// As [`write_y4m`], plus creating the file.
pub fn write_y4m_file(path: &Path, video: &Y4mVideo) -> Result<(), Y4mError> {
    write_y4m(BufWriter::new(File::create(path)?), video).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;

    fn video(format: PixelFormat, width: u32, height: u32, n: u32) -> Y4mVideo {
        let p = Pattern { format, width, height, channel: 0, seed: 3 };
        let frames = (0..n)
            .map(|i| (0..p.lines()).flat_map(|l| p.expected_line(i, l)).collect::<Vec<u8>>())
            .collect();
        Y4mVideo {
            header: Y4mHeader { format, width, height, frame_rate_num: 30000, frame_rate_den: 1001, colorspace: String::new() },
            frames,
        }
    }

    #[test]
    fn round_trip_is_bit_exact_for_both_formats() {
        for (format, tag) in [(PixelFormat::Yuy2, "C422"), (PixelFormat::Nv12, "C420")] {
            let v = video(format, 48, 16, 3);
            let bytes = write_y4m(Vec::new(), &v).unwrap();
            let header_line = bytes.split(|&b| b == b'\n').next().unwrap();
            assert_eq!(std::str::from_utf8(header_line).unwrap(), format!("YUV4MPEG2 W48 H16 F30000:1001 Ip A1:1 {tag}"));
            // Planar payload size: 4:2:2 is 2 bytes/pixel, 4:2:0 is 1.5.
            let payload = bytes.len() - header_line.len() - 1 - 3 * 6;
            assert_eq!(payload, 3 * v.header.frame_bytes());
            let back = read_y4m(&bytes[..]).unwrap();
            assert_eq!(back.frames, v.frames);
            assert_eq!(back.header.format, format);
            assert_eq!(back.header.frame_interval_100ns(), 333_667);
            // And the file itself round-trips byte for byte.
            assert_eq!(write_y4m(Vec::new(), &back).unwrap(), bytes);
        }
    }

    #[test]
    fn planar_layout_is_correct() {
        // 4x2 4:2:0: Y plane then U then V.
        let mut data = b"YUV4MPEG2 W4 H2 F25:1 C420jpeg\nFRAME\n".to_vec();
        data.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 20, 21]);
        let v = read_y4m(&data[..]).unwrap();
        assert_eq!(v.frames[0], vec![1, 2, 3, 4, 5, 6, 7, 8, 10, 20, 11, 21]);
        assert_eq!(v.header.colorspace, "420jpeg");
        // 4x1 4:2:2 -> Y0 U Y1 V.
        let mut data = b"YUV4MPEG2 W4 H1 F25:1 C422\nFRAME xyz\n".to_vec();
        data.extend_from_slice(&[1, 2, 3, 4, 10, 11, 20, 21]);
        let v = read_y4m(&data[..]).unwrap();
        assert_eq!(v.frames[0], vec![1, 10, 2, 20, 3, 11, 4, 21]);
    }

    #[test]
    fn writer_skips_stride_padding() {
        let v = video(PixelFormat::Nv12, 8, 4, 1);
        let stride = 16;
        let mut padded = vec![0xEE; stride * 6];
        for (l, chunk) in v.frames[0].chunks(8).enumerate() {
            padded[l * stride..l * stride + 8].copy_from_slice(chunk);
        }
        let mut w = Y4mWriter::new(Vec::new(), PixelFormat::Nv12, 8, 4, (25, 1)).unwrap();
        w.write_frame(&padded, stride).unwrap();
        assert!(matches!(w.write_frame(&padded[..40], stride), Err(Y4mError::ShortFrame { .. })));
        let bytes = w.finish().unwrap();
        assert_eq!(read_y4m(&bytes[..]).unwrap().frames, v.frames);
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"", "not a YUV4MPEG2"),
            (b"RIFF....", "not a YUV4MPEG2"),
            (b"YUV4MPEG2 W4 H2 F25:1 C444\n", "unsupported colour space"),
            (b"YUV4MPEG2 W4 H2 F25:1 C420p10\n", "unsupported colour space"),
            (b"YUV4MPEG2 W5 H2 F25:1\n", "unsupported frame size 5x2"),
            (b"YUV4MPEG2 W4 H3 F25:1 C420\n", "unsupported frame size 4x3"),
            (b"YUV4MPEG2 W8192 H2 F25:1\n", "unsupported frame size"),
            (b"YUV4MPEG2 W4 H2\n", "missing F"),
            (b"YUV4MPEG2 Wx H2 F25:1\n", "bad value 'x' for W"),
            (b"YUV4MPEG2 W4 H2 F25\n", "F needs num:den"),
            (b"YUV4MPEG2 W4 H2 F25:0\n", "frame rate"),
            (b"YUV4MPEG2 W4 H2 F25:1 Iq\n", "interlace"),
            (b"YUV4MPEG2 W4 H2 F25:1", "not terminated"),
            (b"YUV4MPEG2 W4 H2 F25:1\nFRAME\n\x01\x02", "frame 0: truncated (2 of 12 bytes)"),
            (b"YUV4MPEG2 W4 H2 F25:1\nFRAMX\n", "frame 0: bad frame header"),
            (b"YUV4MPEG2 W4 H2 F25:1\nFRAME\n123456789012FRAME", "frame 1: bad frame header"),
        ];
        for (data, want) in cases {
            let err = read_y4m(data).unwrap_err().to_string();
            assert!(err.contains(want), "{:?}: got '{err}', want '{want}'", String::from_utf8_lossy(data));
        }
        let mut huge = b"YUV4MPEG2 ".to_vec();
        huge.extend(vec![b'X'; 5000]);
        assert!(read_y4m(&huge[..]).unwrap_err().to_string().contains("longer than"));
        assert!(matches!(read_y4m_file(Path::new("/nonexistent/x.y4m")), Err(Y4mError::Io(_))));
    }

    #[test]
    fn empty_stream_has_no_frames() {
        let v = read_y4m(&b"YUV4MPEG2 W2 H2 F1:1 C420mpeg2\n"[..]).unwrap();
        assert!(v.frames.is_empty());
    }
}
