//! What the board's video input shows: the test pattern or a Y4M clip.
use crate::pattern::Pattern;
use crate::y4m::Y4mVideo;
use capdma_interface::format::PixelFormat;
use std::rc::Rc;

/// Black in BT.601 limited range.
const BLACK_Y: u8 = 16;
const BLACK_C: u8 = 128;

/// A channel's video input.
#[derive(Clone, Debug, Default)]
pub enum FrameSource {
    /// The deterministic test pattern ([`crate::pattern`]), seeded with the
    /// board's seed: verifiable byte for byte.
    #[default]
    Pattern,
    /// Frames of a clip, looped (`frame_number % frames`). The clip is
    /// converted to the programmed format (YUY2 ↔ NV12 by chroma
    /// duplication/decimation) and cropped or padded with black to the
    /// programmed size. An empty clip shows the pattern.
    Video(Rc<Y4mVideo>),
}

impl FrameSource {
    /// Fills `out` (the line's bytes) with line `line` of frame `frame_number`
    /// of the stream `pattern` describes.
    pub(crate) fn fill_line(&self, pattern: &Pattern, frame_number: u32, line: u32, out: &mut [u8]) {
        match self {
            Self::Video(video) if !video.frames.is_empty() => {
                let frame = &video.frames[frame_number as usize % video.frames.len()];
                video_line(video, frame, pattern, line, out);
            }
            _ => pattern.fill_line(frame_number, line, out),
        }
    }
}

/// Luma and chroma sample access to a packed source frame.
struct Src<'a> {
    format: PixelFormat,
    width: usize,
    height: usize,
    frame: &'a [u8],
}

impl Src<'_> {
    fn byte(&self, at: usize, default: u8) -> u8 {
        self.frame.get(at).copied().unwrap_or(default)
    }

    fn luma(&self, x: usize, y: usize) -> u8 {
        if x >= self.width || y >= self.height {
            return BLACK_Y;
        }
        match self.format {
            PixelFormat::Yuy2 => self.byte(y * self.width * 2 + x * 2, BLACK_Y),
            PixelFormat::Nv12 => self.byte(y * self.width + x, BLACK_Y),
        }
    }

    /// (U, V) of pixel pair `pair` at full-resolution row `y`.
    fn chroma(&self, pair: usize, y: usize) -> (u8, u8) {
        if pair * 2 >= self.width || y >= self.height {
            return (BLACK_C, BLACK_C);
        }
        let at = match self.format {
            PixelFormat::Yuy2 => y * self.width * 2 + pair * 4 + 1,
            PixelFormat::Nv12 => (self.height + y / 2) * self.width + pair * 2,
        };
        let step = if self.format == PixelFormat::Yuy2 { 2 } else { 1 };
        (self.byte(at, BLACK_C), self.byte(at + step, BLACK_C))
    }
}

fn video_line(video: &Y4mVideo, frame: &[u8], target: &Pattern, line: u32, out: &mut [u8]) {
    let header = &video.header;
    let src = Src { format: header.format, width: header.width as usize, height: header.height as usize, frame };
    if frame.len() < header.frame_bytes() {
        out.fill(BLACK_C);
        return;
    }
    let len = out.len().min(target.line_bytes());
    let out = &mut out[..len];
    let row = line as usize;
    let height = target.height as usize;
    match target.format {
        PixelFormat::Yuy2 => {
            for (pair, px) in out.chunks_mut(4).enumerate() {
                let (cb, cr) = src.chroma(pair, row);
                let bytes = [src.luma(pair * 2, row), cb, src.luma(pair * 2 + 1, row), cr];
                px.copy_from_slice(&bytes[..px.len()]);
            }
        }
        PixelFormat::Nv12 if row < height => {
            for (col, b) in out.iter_mut().enumerate() {
                *b = src.luma(col, row);
            }
        }
        PixelFormat::Nv12 => {
            let full_res_row = (row - height) * 2;
            for (pair, uv) in out.chunks_mut(2).enumerate() {
                let (cb, cr) = src.chroma(pair, full_res_row);
                let bytes = [cb, cr];
                uv.copy_from_slice(&bytes[..uv.len()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::y4m::Y4mHeader;

    fn clip(format: PixelFormat, width: u32, height: u32) -> Y4mVideo {
        let p = Pattern { format, width, height, channel: 0, seed: 1 };
        let frame: Vec<u8> = (0..p.lines()).flat_map(|l| p.expected_line(0, l)).collect();
        Y4mVideo {
            header: Y4mHeader { format, width, height, frame_rate_num: 25, frame_rate_den: 1, colorspace: String::new() },
            frames: vec![frame],
        }
    }

    #[test]
    fn same_format_and_size_is_copied() {
        for format in [PixelFormat::Yuy2, PixelFormat::Nv12] {
            let v = Rc::new(clip(format, 32, 8));
            let p = Pattern { format, width: 32, height: 8, channel: 0, seed: 1 };
            let s = FrameSource::Video(v.clone());
            for line in 0..p.lines() {
                let mut out = vec![0; p.line_bytes()];
                s.fill_line(&p, 5, line, &mut out);
                assert_eq!(out, p.expected_line(0, line), "{format:?} line {line}");
            }
        }
    }

    #[test]
    fn conversion_crop_and_pad() {
        let v = Rc::new(clip(PixelFormat::Yuy2, 8, 4));
        let s = FrameSource::Video(v.clone());
        // NV12 target, larger: luma copied then padded black.
        let p = Pattern { format: PixelFormat::Nv12, width: 12, height: 6, channel: 0, seed: 1 };
        let mut out = vec![0; 12];
        s.fill_line(&p, 0, 1, &mut out);
        let src = &v.frames[0][16..32];
        let luma: Vec<u8> = src.iter().step_by(2).copied().collect();
        assert_eq!(&out[..8], &luma[..]);
        assert_eq!(&out[8..], &[BLACK_Y; 4]);
        // Chroma line 1 of NV12 comes from source row 2.
        s.fill_line(&p, 0, 6 + 1, &mut out);
        let row2 = &v.frames[0][32..48];
        assert_eq!(out[0], row2[1]);
        assert_eq!(out[1], row2[3]);
        assert_eq!(&out[8..], &[BLACK_C; 4]);
        // Rows past the source are black.
        s.fill_line(&p, 0, 5, &mut out);
        assert!(out.iter().all(|&b| b == BLACK_Y));
    }
}
