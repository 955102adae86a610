//! Video format validation and negotiation for the capture pin.
//!
//! The pin offers two data ranges (`KS_DATARANGE_VIDEO`, specifier
//! `KSDATAFORMAT_SPECIFIER_VIDEOINFO`): YUY2 and NV12, any even size from
//! 2x2 to 4096x2160. A data format set on the pin
//! (`AVStrMiniPinSetDataFormat`, `KSPROPERTY_CONNECTION_DATAFORMAT`) comes
//! from user mode and is checked by [`validate_data_format`], which never
//! panics on any input.
//!
//! # The rules, in the order they are checked (the first failure wins)
//!
//! | check | error |
//! |---|---|
//! | fewer bytes than `KS_DATAFORMAT_VIDEOINFOHEADER` (152), or `FormatSize` larger than the buffer | `STATUS_BUFFER_TOO_SMALL` |
//! | `FormatSize` < 152 | `STATUS_INVALID_BUFFER_SIZE` |
//! | `MajorFormat` not `KSDATAFORMAT_TYPE_VIDEO`, `Specifier` not `KSDATAFORMAT_SPECIFIER_VIDEOINFO`, `SubFormat` neither YUY2 nor NV12, or `biCompression` not the subtype's FOURCC | `STATUS_NO_MATCH` |
//! | `biSize` < 40, or `bmiHeader` + `biSize` beyond `FormatSize` | `STATUS_INVALID_BUFFER_SIZE` |
//! | `biPlanes` != 1, `biBitCount` not 16 (YUY2) / 12 (NV12) | `STATUS_INVALID_PARAMETER` |
//! | `biWidth` <= 0 or odd, `biHeight` == 0 | `STATUS_INVALID_PARAMETER` |
//! | non-empty `rcTarget` not at (0,0), wider than `biWidth` or not exactly `abs(biHeight)` tall | `STATUS_INVALID_PARAMETER` |
//! | image width/height odd, below 2 or above 4096x2160 | `STATUS_INVALID_PARAMETER` |
//! | stride or image size overflows 32 bits | `STATUS_INTEGER_OVERFLOW` |
//! | stride above [`MAX_STRIDE_BYTES`] | `STATUS_INVALID_PARAMETER` |
//! | `biSizeImage` != 0 and < image bytes; `SampleSize` != 0 and < image bytes | `STATUS_INVALID_BUFFER_SIZE` |
//! | `AvgTimePerFrame` outside [`MIN_FRAME_INTERVAL`]..=[`MAX_FRAME_INTERVAL`] (0 means [`DEFAULT_FRAME_INTERVAL`]) | `STATUS_INVALID_PARAMETER` |
//!
//! # Decisions
//!
//! * **Geometry.** The image is `rcTarget`'s size when `rcTarget` is not
//!   empty (`IsRectEmpty`), else `biWidth` x `abs(biHeight)`. `biWidth` is
//!   the buffer's line length in pixels, so the stride in bytes is
//!   `line_bytes(biWidth)` (YUY2 `2 * biWidth`, NV12 `biWidth`, the luma line);
//!   `biWidth` wider than `rcTarget` means a stride larger than a line.
//!   `rcTarget` must start at (0,0) and span all lines: the board writes
//!   frames from the buffer's first byte, and NV12's chroma plane follows
//!   `abs(biHeight)` luma lines, so a shorter target cannot be expressed.
//!   `rcSource` is not used.
//! * **Negative `biHeight`** is accepted as `abs(biHeight)`: YUV bitmaps are
//!   top-down whatever the sign (`BITMAPINFOHEADER` documentation), and
//!   capture applications send both.
//! * **Image bytes** = `stride * lines`, where NV12 has `1.5 * height` lines
//!   (the chroma plane at the same stride). `biSizeImage` and `SampleSize`
//!   may be 0 (uncompressed: "computed") or at least that; smaller values
//!   mean a buffer too small for the frame and are refused. Larger values
//!   are allowed (applications round buffer sizes up).
//! * **`AvgTimePerFrame` 0** means "any": the pin uses 30 fps.
//! * **`FormatSize`** may exceed 152 (trailing data is ignored) but not the
//!   bytes actually passed.
use crate::copy::CopyGeometry;
use crate::ks_format::{
    fourcc_subtype, KsBitmapInfoHeader, KsDataFormat, KsDataFormatVideoInfoHeader, KsDataRangeVideo, KsGuid,
    KsSize, KsVideoInfoHeader, KsVideoStreamConfigCaps, Rect, KSDATAFORMAT_SIZE, KSDATAFORMAT_SPECIFIER_VIDEOINFO,
    KSDATAFORMAT_TYPE_VIDEO, KS_BITMAPINFOHEADER_SIZE, KS_DATAFORMAT_VIDEOINFOHEADER_BMI_OFFSET,
    KS_DATAFORMAT_VIDEOINFOHEADER_SIZE, KS_DATARANGE_VIDEO_SIZE, KS_VIDEOSTREAM_CAPTURE,
};
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};
use capdma_interface::status::{
    NtStatus, STATUS_BUFFER_TOO_SMALL, STATUS_INTEGER_OVERFLOW, STATUS_INVALID_BUFFER_SIZE, STATUS_INVALID_PARAMETER,
    STATUS_NO_MATCH, STATUS_SUCCESS,
};
use capdma_interface::table::ChannelFormat;
use zerocopy::{FromBytes, IntoBytes};

/// `STATUS_BUFFER_OVERFLOW` (0x80000005): the answer to a size query
/// (`BufferSize == 0`) of a KS intersect handler.
pub const STATUS_BUFFER_OVERFLOW: NtStatus = i32::from_ne_bytes(0x8000_0005_u32.to_ne_bytes());

/// Smallest image width and height, pixels.
pub const MIN_DIMENSION: u32 = 2;
/// Largest stride, bytes: twice a YUY2 line of [`MAX_WIDTH`] pixels.
pub const MAX_STRIDE_BYTES: u32 = 4 * MAX_WIDTH;
/// Shortest frame interval, 100-ns units (120 frames per second).
pub const MIN_FRAME_INTERVAL: u32 = 83_333;
/// Longest frame interval, 100-ns units (1 frame per second).
pub const MAX_FRAME_INTERVAL: u32 = 10_000_000;
/// The interval used for `AvgTimePerFrame == 0`, 100-ns units (30 fps).
pub const DEFAULT_FRAME_INTERVAL: u32 = 333_333;
/// Width of the ranges' default format, pixels.
pub const DEFAULT_WIDTH: u32 = 1920;
/// Height of the ranges' default format, pixels.
pub const DEFAULT_HEIGHT: u32 = 1080;
/// The pixel formats the pin offers, in data-range order.
pub const SUPPORTED_PIXEL_FORMATS: [PixelFormat; 2] = [PixelFormat::Yuy2, PixelFormat::Nv12];

/// A validated video format: what the pin streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoFormat {
    /// The pixel format.
    pub pixel: PixelFormat,
    /// Image width, pixels (even, 2..=4096).
    pub width: u32,
    /// Image height, pixel rows (even, 2..=2160).
    pub height: u32,
    /// Bytes from one line of the frame buffer to the next (>= the line's bytes).
    pub stride: u32,
    /// Bytes of one frame: `stride * lines` (NV12: `1.5 * height` lines).
    pub image_bytes: u32,
    /// Frame interval, 100-ns units.
    pub frame_interval: u32,
}

impl VideoFormat {
    /// A format with a tight stride (`stride = line_bytes(width)`).
    ///
    /// # Errors
    /// As [`VideoFormat::with_stride`].
    pub fn new(pixel: PixelFormat, width: u32, height: u32, frame_interval: u32) -> Result<Self, NtStatus> {
        let stride = pixel.line_bytes(width).ok_or(STATUS_INTEGER_OVERFLOW)?;
        Self::with_stride(pixel, width, height, stride, frame_interval)
    }

    /// A format whose frame buffer lines are `stride` bytes apart. `stride`
    /// must be a whole number of luma pixels (a multiple of 2 for YUY2) and
    /// an even number of them, so it can be expressed as `biWidth`.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` for a size, stride or interval out of the
    /// rules of the module documentation; `STATUS_INTEGER_OVERFLOW` if the
    /// image size overflows.
    pub fn with_stride(
        pixel: PixelFormat,
        width: u32,
        height: u32,
        stride: u32,
        frame_interval: u32,
    ) -> Result<Self, NtStatus> {
        check_dimensions(width, height)?;
        check_interval(frame_interval)?;
        let luma = luma_bytes_per_pixel(pixel);
        if !stride.is_multiple_of(luma) {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let buffer_width = stride / luma;
        if buffer_width < width {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let (stride, image_bytes) = buffer_geometry(pixel, buffer_width, height)?;
        Ok(Self { pixel, width, height, stride, image_bytes, frame_interval })
    }

    /// Bytes of one line of pixels (without padding): `line_bytes(width)`.
    #[must_use]
    pub fn line_bytes(&self) -> u32 {
        self.pixel.line_bytes(self.width).unwrap_or(0)
    }

    /// Lines of a frame, all planes: `height` (YUY2) or `1.5 * height` (NV12).
    #[must_use]
    pub fn lines(&self) -> u32 {
        self.pixel.lines(self.height).unwrap_or(0)
    }

    /// The format to start the channel with (`StartChannel`): the stride is
    /// the frame buffer's (used in S/G mode).
    #[must_use]
    pub fn channel_format(&self) -> ChannelFormat {
        ChannelFormat {
            fourcc: self.pixel.fourcc(),
            width: self.width,
            height: self.height,
            stride: self.stride,
            frame_interval: self.frame_interval,
            reserved: 0,
        }
    }

    /// The slot -> frame copy of a common-buffer frame whose slot lines are
    /// `src_pitch` bytes apart.
    #[must_use]
    pub fn copy_geometry(&self, src_pitch: u32) -> CopyGeometry {
        CopyGeometry { lines: self.lines(), line_bytes: self.line_bytes(), src_pitch, dst_pitch: self.stride }
    }

    /// The range's default format: 1920x1080 at 30 fps, tight stride.
    #[must_use]
    pub const fn default_for(pixel: PixelFormat) -> Self {
        let stride = DEFAULT_WIDTH * luma_bytes_per_pixel(pixel);
        let lines = match pixel {
            PixelFormat::Yuy2 => DEFAULT_HEIGHT,
            PixelFormat::Nv12 => DEFAULT_HEIGHT + DEFAULT_HEIGHT / 2,
        };
        Self {
            pixel,
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            stride,
            image_bytes: stride * lines,
            frame_interval: DEFAULT_FRAME_INTERVAL,
        }
    }
}

/// Bytes per pixel of the luma line: 2 (YUY2) or 1 (NV12).
const fn luma_bytes_per_pixel(pixel: PixelFormat) -> u32 {
    match pixel {
        PixelFormat::Yuy2 => 2,
        PixelFormat::Nv12 => 1,
    }
}

fn check_dimensions(width: u32, height: u32) -> Result<(), NtStatus> {
    let ok_w = (MIN_DIMENSION..=MAX_WIDTH).contains(&width) && width.is_multiple_of(2);
    let ok_h = (MIN_DIMENSION..=MAX_HEIGHT).contains(&height) && height.is_multiple_of(2);
    if ok_w && ok_h {
        Ok(())
    } else {
        Err(STATUS_INVALID_PARAMETER)
    }
}

fn check_interval(interval: u32) -> Result<(), NtStatus> {
    if (MIN_FRAME_INTERVAL..=MAX_FRAME_INTERVAL).contains(&interval) {
        Ok(())
    } else {
        Err(STATUS_INVALID_PARAMETER)
    }
}

/// `(stride, image_bytes)` of a buffer `buffer_width` pixels wide holding
/// `height` rows. Checks the buffer width is even and the stride bounded.
fn buffer_geometry(pixel: PixelFormat, buffer_width: u32, height: u32) -> Result<(u32, u32), NtStatus> {
    if !buffer_width.is_multiple_of(2) {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let stride = pixel.line_bytes(buffer_width).ok_or(STATUS_INTEGER_OVERFLOW)?;
    let image_bytes = pixel.frame_bytes(height, stride).ok_or(STATUS_INTEGER_OVERFLOW)?;
    if stride > MAX_STRIDE_BYTES {
        return Err(STATUS_INVALID_PARAMETER);
    }
    Ok((stride, image_bytes))
}

/// The pixel format of a media subtype GUID, if offered.
#[must_use]
pub fn pixel_of_subtype(subtype: &KsGuid) -> Option<PixelFormat> {
    SUPPORTED_PIXEL_FORMATS.into_iter().find(|p| fourcc_subtype(p.fourcc()) == *subtype)
}

/// Validates a `KS_DATAFORMAT_VIDEOINFOHEADER` (the bytes of the
/// `KSDATAFORMAT` a client sets on the pin; any alignment) and returns the
/// format it describes. Never panics.
///
/// # Errors
/// See the table of the module documentation: `STATUS_BUFFER_TOO_SMALL`,
/// `STATUS_INVALID_BUFFER_SIZE`, `STATUS_NO_MATCH`, `STATUS_INVALID_PARAMETER`,
/// `STATUS_INTEGER_OVERFLOW`.
pub fn validate_data_format(bytes: &[u8]) -> Result<VideoFormat, NtStatus> {
    let Ok((format, _)) = KsDataFormatVideoInfoHeader::read_from_prefix(bytes) else {
        return Err(STATUS_BUFFER_TOO_SMALL);
    };
    let header = &format.data_format;
    let format_size = u64::from(header.format_size);
    if format_size > u64::try_from(bytes.len()).unwrap_or(u64::MAX) {
        return Err(STATUS_BUFFER_TOO_SMALL);
    }
    if format_size < u64::from(KS_DATAFORMAT_VIDEOINFOHEADER_SIZE) {
        return Err(STATUS_INVALID_BUFFER_SIZE);
    }
    if header.major_format != KSDATAFORMAT_TYPE_VIDEO || header.specifier != KSDATAFORMAT_SPECIFIER_VIDEOINFO {
        return Err(STATUS_NO_MATCH);
    }
    let pixel = pixel_of_subtype(&header.sub_format).ok_or(STATUS_NO_MATCH)?;
    let vih = &format.video_info_header;
    let bmi = &vih.bmi_header;
    if bmi.bi_compression != pixel.fourcc() {
        return Err(STATUS_NO_MATCH);
    }
    let bmi_end = u64::from(KS_DATAFORMAT_VIDEOINFOHEADER_BMI_OFFSET) + u64::from(bmi.bi_size);
    if bmi.bi_size < KS_BITMAPINFOHEADER_SIZE || bmi_end > format_size {
        return Err(STATUS_INVALID_BUFFER_SIZE);
    }
    if bmi.bi_planes != 1 || u32::from(bmi.bi_bit_count) != pixel.bits_per_pixel() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let buffer_width = u32::try_from(bmi.bi_width).map_err(|_| STATUS_INVALID_PARAMETER)?;
    let buffer_height = bmi.bi_height.unsigned_abs();
    if buffer_width == 0 || buffer_height == 0 {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let (width, height) = image_size(&vih.rc_target, buffer_width, buffer_height)?;
    check_dimensions(width, height)?;
    let (stride, image_bytes) = buffer_geometry(pixel, buffer_width, height)?;
    if (bmi.bi_size_image != 0 && bmi.bi_size_image < image_bytes)
        || (header.sample_size != 0 && header.sample_size < image_bytes)
    {
        return Err(STATUS_INVALID_BUFFER_SIZE);
    }
    let frame_interval = match vih.avg_time_per_frame {
        0 => DEFAULT_FRAME_INTERVAL,
        t => u32::try_from(t).map_err(|_| STATUS_INVALID_PARAMETER)?,
    };
    check_interval(frame_interval)?;
    Ok(VideoFormat { pixel, width, height, stride, image_bytes, frame_interval })
}

/// The image size: `rcTarget`'s when it is not empty, else the buffer's.
fn image_size(target: &Rect, buffer_width: u32, buffer_height: u32) -> Result<(u32, u32), NtStatus> {
    if target.is_empty() {
        return Ok((buffer_width, buffer_height));
    }
    if target.left != 0 || target.top != 0 {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // Not empty and anchored at 0: right and bottom are positive.
    let width = u32::try_from(target.right).map_err(|_| STATUS_INVALID_PARAMETER)?;
    let height = u32::try_from(target.bottom).map_err(|_| STATUS_INVALID_PARAMETER)?;
    if width > buffer_width || height != buffer_height {
        return Err(STATUS_INVALID_PARAMETER);
    }
    Ok((width, height))
}

/// `u32` -> `LONG`, saturating (every valid format fits).
const fn saturating_i32(value: u32) -> i32 {
    if value > i32::MAX.unsigned_abs() {
        i32::MAX
    } else {
        #[allow(clippy::cast_possible_wrap)] // checked just above
        let v = value as i32;
        v
    }
}

/// Bits per second of `image_bytes` every `frame_interval` 100-ns units, saturating.
const fn bit_rate(image_bytes: u32, frame_interval: u32) -> u32 {
    if frame_interval == 0 {
        return 0;
    }
    let bits = image_bytes as u64 * 8 * 10_000_000 / frame_interval as u64;
    if bits > u32::MAX as u64 {
        u32::MAX
    } else {
        #[allow(clippy::cast_possible_truncation)] // checked just above
        let b = bits as u32;
        b
    }
}

/// The `KS_VIDEOINFOHEADER` describing `format`: `rcSource = rcTarget =
/// (0, 0, width, height)`, `biWidth = stride / luma bytes per pixel`,
/// positive `biHeight`, `biSizeImage = image_bytes`.
#[must_use]
pub const fn build_video_info_header(format: &VideoFormat) -> KsVideoInfoHeader {
    let rect = Rect { left: 0, top: 0, right: saturating_i32(format.width), bottom: saturating_i32(format.height) };
    let bits = format.pixel.bits_per_pixel();
    KsVideoInfoHeader {
        rc_source: rect,
        rc_target: rect,
        dw_bit_rate: bit_rate(format.image_bytes, format.frame_interval),
        dw_bit_error_rate: 0,
        avg_time_per_frame: format.frame_interval as i64,
        bmi_header: KsBitmapInfoHeader {
            bi_size: KS_BITMAPINFOHEADER_SIZE,
            bi_width: saturating_i32(format.stride / luma_bytes_per_pixel(format.pixel)),
            bi_height: saturating_i32(format.height),
            bi_planes: 1,
            #[allow(clippy::cast_possible_truncation)] // 12 or 16
            bi_bit_count: bits as u16,
            bi_compression: format.pixel.fourcc(),
            bi_size_image: format.image_bytes,
            bi_x_pels_per_meter: 0,
            bi_y_pels_per_meter: 0,
            bi_clr_used: 0,
            bi_clr_important: 0,
        },
    }
}

/// The `KS_DATAFORMAT_VIDEOINFOHEADER` of `format` (152 bytes; take
/// `.as_bytes()`): what the intersect handler returns and what a client sets.
/// `FormatSize = 152`, `SampleSize = image_bytes`. For a valid `format`,
/// `validate_data_format(build_data_format(f).as_bytes()) == Ok(f)`.
#[must_use]
pub const fn build_data_format(format: &VideoFormat) -> KsDataFormatVideoInfoHeader {
    KsDataFormatVideoInfoHeader {
        data_format: KsDataFormat {
            format_size: KS_DATAFORMAT_VIDEOINFOHEADER_SIZE,
            flags: 0,
            sample_size: format.image_bytes,
            reserved: 0,
            major_format: KSDATAFORMAT_TYPE_VIDEO,
            sub_format: fourcc_subtype(format.pixel.fourcc()),
            specifier: KSDATAFORMAT_SPECIFIER_VIDEOINFO,
        },
        video_info_header: build_video_info_header(format),
    }
}

/// One data range of the pin, in plain terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRangeDesc {
    /// The pixel format.
    pub pixel: PixelFormat,
    /// Smallest width and height, pixels.
    pub min_size: (u32, u32),
    /// Largest width and height, pixels.
    pub max_size: (u32, u32),
    /// Width and height step, pixels.
    pub granularity: u32,
    /// Shortest and longest frame interval, 100-ns units.
    pub frame_interval: (u32, u32),
    /// Largest image, bytes (tight stride at `max_size`).
    pub max_image_bytes: u32,
    /// The default format (`KS_DATARANGE_VIDEO.VideoInfoHeader`).
    pub default: VideoFormat,
}

/// The data range of `pixel`.
#[must_use]
pub const fn data_range_desc(pixel: PixelFormat) -> DataRangeDesc {
    let lines = match pixel {
        PixelFormat::Yuy2 => MAX_HEIGHT,
        PixelFormat::Nv12 => MAX_HEIGHT + MAX_HEIGHT / 2,
    };
    DataRangeDesc {
        pixel,
        min_size: (MIN_DIMENSION, MIN_DIMENSION),
        max_size: (MAX_WIDTH, MAX_HEIGHT),
        granularity: 2,
        frame_interval: (MIN_FRAME_INTERVAL, MAX_FRAME_INTERVAL),
        max_image_bytes: MAX_WIDTH * luma_bytes_per_pixel(pixel) * lines,
        default: VideoFormat::default_for(pixel),
    }
}

/// The `KS_DATARANGE_VIDEO` of `pixel` (296 bytes) for the pin descriptor's
/// `DataRanges`: `FormatSize = 296`, `SampleSize` = the largest image,
/// fixed-size samples, no temporal compression, `KS_VIDEOSTREAM_CAPTURE`,
/// config caps from [`data_range_desc`], the default format's header.
#[must_use]
pub const fn data_range(pixel: PixelFormat) -> KsDataRangeVideo {
    let d = data_range_desc(pixel);
    let min = KsSize { cx: saturating_i32(d.min_size.0), cy: saturating_i32(d.min_size.1) };
    let max = KsSize { cx: saturating_i32(d.max_size.0), cy: saturating_i32(d.max_size.1) };
    let step = saturating_i32(d.granularity);
    KsDataRangeVideo {
        data_range: KsDataFormat {
            format_size: KS_DATARANGE_VIDEO_SIZE,
            flags: 0,
            sample_size: d.max_image_bytes,
            reserved: 0,
            major_format: KSDATAFORMAT_TYPE_VIDEO,
            sub_format: fourcc_subtype(pixel.fourcc()),
            specifier: KSDATAFORMAT_SPECIFIER_VIDEOINFO,
        },
        b_fixed_size_samples: 1,
        b_temporal_compression: 0,
        stream_description_flags: KS_VIDEOSTREAM_CAPTURE,
        memory_allocation_flags: 0,
        config_caps: KsVideoStreamConfigCaps {
            guid: KSDATAFORMAT_SPECIFIER_VIDEOINFO,
            video_standard: 0,
            input_size: max,
            min_cropping_size: min,
            max_cropping_size: max,
            crop_granularity_x: step,
            crop_granularity_y: step,
            crop_align_x: step,
            crop_align_y: step,
            min_output_size: min,
            max_output_size: max,
            output_granularity_x: step,
            output_granularity_y: step,
            stretch_taps_x: 0,
            stretch_taps_y: 0,
            shrink_taps_x: 0,
            shrink_taps_y: 0,
            reserved_padding: 0,
            min_frame_interval: d.frame_interval.0 as i64,
            max_frame_interval: d.frame_interval.1 as i64,
            min_bits_per_second: saturating_i32(bit_rate(4 * 3, MAX_FRAME_INTERVAL)),
            max_bits_per_second: saturating_i32(bit_rate(d.max_image_bytes, MIN_FRAME_INTERVAL)),
        },
        video_info_header: build_video_info_header(&d.default),
    }
}

/// Data intersection (`AVStrMiniIntersectHandlerEx` of the pin's range for
/// `pixel`): picks the format to offer for the caller's data range.
///
/// * The caller's `KSDATARANGE` must name video (or wildcard), `pixel`'s
///   subtype (or wildcard) and the VIDEOINFO specifier (or wildcard).
/// * A full `KS_DATARANGE_VIDEO` (specifier VIDEOINFO, `FormatSize >= 296`)
///   asks for the size in its `VideoInfoHeader.bmiHeader` (`biWidth` x
///   `abs(biHeight)`, 0 x 0 = no preference) and its `AvgTimePerFrame` (0 =
///   no preference); a request outside the range is `STATUS_NO_MATCH`.
/// * What the caller leaves open comes from `preferred` (the pin's current
///   format, or [`VideoFormat::default_for`]), converted to `pixel`.
///
/// # Errors
/// `STATUS_BUFFER_TOO_SMALL` for fewer than 64 bytes or a `FormatSize`
/// beyond them; `STATUS_INVALID_BUFFER_SIZE` for a `FormatSize` below 64;
/// `STATUS_NO_MATCH` when the range does not intersect.
pub fn intersect(caller_range: &[u8], pixel: PixelFormat, preferred: &VideoFormat) -> Result<VideoFormat, NtStatus> {
    let Ok((header, _)) = KsDataFormat::read_from_prefix(caller_range) else {
        return Err(STATUS_BUFFER_TOO_SMALL);
    };
    let format_size = u64::from(header.format_size);
    if format_size > u64::try_from(caller_range.len()).unwrap_or(u64::MAX) {
        return Err(STATUS_BUFFER_TOO_SMALL);
    }
    if format_size < u64::from(KSDATAFORMAT_SIZE) {
        return Err(STATUS_INVALID_BUFFER_SIZE);
    }
    let major_ok = header.major_format.is_null() || header.major_format == KSDATAFORMAT_TYPE_VIDEO;
    let sub_ok = header.sub_format.is_null() || header.sub_format == fourcc_subtype(pixel.fourcc());
    let spec_ok = header.specifier.is_null() || header.specifier == KSDATAFORMAT_SPECIFIER_VIDEOINFO;
    if !(major_ok && sub_ok && spec_ok) {
        return Err(STATUS_NO_MATCH);
    }
    let base = VideoFormat::new(pixel, preferred.width, preferred.height, preferred.frame_interval)
        .unwrap_or(VideoFormat::default_for(pixel));
    if header.specifier != KSDATAFORMAT_SPECIFIER_VIDEOINFO || format_size < u64::from(KS_DATARANGE_VIDEO_SIZE) {
        return Ok(base);
    }
    let Ok((range, _)) = KsDataRangeVideo::read_from_prefix(caller_range) else {
        return Err(STATUS_BUFFER_TOO_SMALL);
    };
    let vih = &range.video_info_header;
    let (width, height) = match (vih.bmi_header.bi_width, vih.bmi_header.bi_height) {
        (0, 0) => (base.width, base.height),
        (w, h) => (u32::try_from(w).map_err(|_| STATUS_NO_MATCH)?, h.unsigned_abs()),
    };
    let interval = match vih.avg_time_per_frame {
        0 => base.frame_interval,
        t => u32::try_from(t).map_err(|_| STATUS_NO_MATCH)?,
    };
    VideoFormat::new(pixel, width, height, interval).map_err(|_| STATUS_NO_MATCH)
}

/// The outcome of [`intersect_into`]: the status and the `*DataSize` to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntersectOutcome {
    /// `STATUS_SUCCESS`, `STATUS_BUFFER_OVERFLOW` (size query),
    /// `STATUS_BUFFER_TOO_SMALL`, or the error of [`intersect`].
    pub status: NtStatus,
    /// Bytes of the format (152) for success and the size answers; 0 on error.
    pub data_size: u32,
}

/// An intersect handler's whole answer: [`intersect`], then the KS buffer
/// protocol. `out` is the handler's `Data` buffer (`BufferSize` bytes):
/// empty -> `STATUS_BUFFER_OVERFLOW` with `data_size = 152` (size query);
/// shorter than 152 -> `STATUS_BUFFER_TOO_SMALL`; else the
/// `KS_DATAFORMAT_VIDEOINFOHEADER` is written to `out[..152]`.
pub fn intersect_into(
    caller_range: &[u8],
    pixel: PixelFormat,
    preferred: &VideoFormat,
    out: &mut [u8],
) -> IntersectOutcome {
    let format = match intersect(caller_range, pixel, preferred) {
        Ok(f) => f,
        Err(status) => return IntersectOutcome { status, data_size: 0 },
    };
    let size = KS_DATAFORMAT_VIDEOINFOHEADER_SIZE;
    if out.is_empty() {
        return IntersectOutcome { status: STATUS_BUFFER_OVERFLOW, data_size: size };
    }
    let built = build_data_format(&format);
    match out.get_mut(..built.as_bytes().len()) {
        Some(dst) => {
            dst.copy_from_slice(built.as_bytes());
            IntersectOutcome { status: STATUS_SUCCESS, data_size: size }
        }
        None => IntersectOutcome { status: STATUS_BUFFER_TOO_SMALL, data_size: size },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ks_format::{KSDATAFORMAT_SUBTYPE_NV12, KSDATAFORMAT_SUBTYPE_YUY2};

    fn valid(pixel: PixelFormat) -> KsDataFormatVideoInfoHeader {
        build_data_format(&VideoFormat::new(pixel, 1920, 1080, 333_333).unwrap())
    }

    fn check(f: &KsDataFormatVideoInfoHeader) -> Result<VideoFormat, NtStatus> {
        validate_data_format(f.as_bytes())
    }

    #[test]
    fn round_trips_for_many_sizes() {
        for pixel in SUPPORTED_PIXEL_FORMATS {
            for (w, h) in [(2, 2), (640, 480), (1920, 1080), (1278, 722), (4096, 2160), (4094, 2)] {
                for interval in [MIN_FRAME_INTERVAL, 166_666, DEFAULT_FRAME_INTERVAL, MAX_FRAME_INTERVAL] {
                    let f = VideoFormat::new(pixel, w, h, interval).unwrap();
                    assert_eq!(check(&build_data_format(&f)), Ok(f), "{pixel:?} {w}x{h}");
                }
                let luma = luma_bytes_per_pixel(pixel);
                let padded = VideoFormat::with_stride(pixel, w, h, (w + 64) * luma, 333_333).unwrap();
                assert_eq!(padded.stride, (w + 64) * luma);
                assert_eq!(check(&build_data_format(&padded)), Ok(padded));
            }
        }
    }

    #[test]
    fn geometry_of_1080p() {
        let y = check(&valid(PixelFormat::Yuy2)).unwrap();
        assert_eq!((y.width, y.height, y.stride, y.image_bytes), (1920, 1080, 3840, 3840 * 1080));
        let n = check(&valid(PixelFormat::Nv12)).unwrap();
        assert_eq!((n.stride, n.image_bytes, n.lines()), (1920, 1920 * 1620, 1620));
        assert_eq!(n.channel_format().fourcc, PixelFormat::Nv12.fourcc());
    }

    #[test]
    fn truncated_is_buffer_too_small() {
        let f = valid(PixelFormat::Yuy2);
        let bytes = f.as_bytes();
        for len in [0, 1, 63, 64, 151] {
            assert_eq!(validate_data_format(&bytes[..len]), Err(STATUS_BUFFER_TOO_SMALL), "len {len}");
        }
        let mut g = f;
        g.data_format.format_size = 153;
        assert_eq!(check(&g), Err(STATUS_BUFFER_TOO_SMALL));
    }

    #[test]
    fn format_size_below_structure_is_invalid_buffer_size() {
        let mut f = valid(PixelFormat::Yuy2);
        f.data_format.format_size = 151;
        assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE));
        f.data_format.format_size = 0;
        assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE));
    }

    #[test]
    fn trailing_bytes_and_larger_format_size_are_accepted() {
        let f = valid(PixelFormat::Nv12);
        let mut bytes = [0u8; 200];
        bytes[..152].copy_from_slice(f.as_bytes());
        assert!(validate_data_format(&bytes).is_ok());
        let mut g = f;
        g.data_format.format_size = 200;
        bytes[..152].copy_from_slice(g.as_bytes());
        assert!(validate_data_format(&bytes).is_ok());
        assert_eq!(validate_data_format(&bytes[0..152]), Err(STATUS_BUFFER_TOO_SMALL), "FormatSize beyond the slice");
        // Unaligned input.
        let mut shifted = [0u8; 153];
        shifted[1..].copy_from_slice(f.as_bytes());
        assert!(validate_data_format(&shifted[1..]).is_ok());
    }

    #[test]
    fn wrong_identity_is_no_match() {
        let base = valid(PixelFormat::Yuy2);
        let mut f = base;
        f.data_format.major_format = KsGuid::NULL;
        assert_eq!(check(&f), Err(STATUS_NO_MATCH));
        let mut f = base;
        f.data_format.specifier = KsGuid::NULL;
        assert_eq!(check(&f), Err(STATUS_NO_MATCH));
        let mut f = base;
        f.data_format.sub_format = fourcc_subtype(u32::from_le_bytes(*b"RGB3"));
        assert_eq!(check(&f), Err(STATUS_NO_MATCH));
        let mut f = base;
        f.data_format.sub_format = KSDATAFORMAT_SUBTYPE_NV12;
        assert_eq!(check(&f), Err(STATUS_NO_MATCH), "subtype NV12, biCompression YUY2");
        let mut f = valid(PixelFormat::Nv12);
        f.video_info_header.bmi_header.bi_compression = PixelFormat::Yuy2.fourcc();
        assert_eq!(check(&f), Err(STATUS_NO_MATCH));
        assert_eq!(f.data_format.sub_format, KSDATAFORMAT_SUBTYPE_NV12);
        assert_ne!(KSDATAFORMAT_SUBTYPE_NV12, KSDATAFORMAT_SUBTYPE_YUY2);
    }

    #[test]
    fn bad_bi_size_is_invalid_buffer_size() {
        let mut f = valid(PixelFormat::Yuy2);
        f.video_info_header.bmi_header.bi_size = 39;
        assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE));
        f.video_info_header.bmi_header.bi_size = 41;
        assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE), "beyond FormatSize");
        f.video_info_header.bmi_header.bi_size = u32::MAX;
        assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE));
    }

    #[test]
    fn bad_planes_bits_and_sizes_are_invalid_parameter() {
        let base = valid(PixelFormat::Yuy2);
        let cases: [fn(&mut KsBitmapInfoHeader); 9] = [
            |b| b.bi_planes = 2,
            |b| b.bi_bit_count = 12,
            |b| b.bi_width = 0,
            |b| b.bi_width = -1920,
            |b| b.bi_width = 1921,
            |b| b.bi_height = 0,
            |b| b.bi_height = 1081,
            |b| b.bi_height = 2162,
            |b| b.bi_width = 4098,
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut f = base;
            f.video_info_header.rc_target = Rect::default();
            case(&mut f.video_info_header.bmi_header);
            f.video_info_header.bmi_header.bi_size_image = 0;
            f.data_format.sample_size = 0;
            assert_eq!(check(&f), Err(STATUS_INVALID_PARAMETER), "case {i}");
        }
        let mut f = valid(PixelFormat::Nv12);
        f.video_info_header.bmi_header.bi_bit_count = 16;
        assert_eq!(check(&f), Err(STATUS_INVALID_PARAMETER));
    }

    #[test]
    fn target_rectangle_rules() {
        let mut f = valid(PixelFormat::Yuy2);
        // Buffer 2048 pixels wide, image 1920: stride larger than the line.
        f.video_info_header.bmi_header.bi_width = 2048;
        f.video_info_header.bmi_header.bi_size_image = 0;
        f.data_format.sample_size = 0;
        let v = check(&f).unwrap();
        assert_eq!((v.width, v.stride, v.image_bytes), (1920, 4096, 4096 * 1080));
        let mut g = f;
        g.video_info_header.rc_target.right = 2050;
        assert_eq!(check(&g), Err(STATUS_INVALID_PARAMETER), "wider than biWidth");
        let mut g = f;
        g.video_info_header.rc_target.left = 2;
        assert_eq!(check(&g), Err(STATUS_INVALID_PARAMETER), "offset");
        let mut g = f;
        g.video_info_header.rc_target.bottom = 1000;
        assert_eq!(check(&g), Err(STATUS_INVALID_PARAMETER), "shorter than the buffer");
        let mut g = f;
        g.video_info_header.rc_target.right = 1919;
        assert_eq!(check(&g), Err(STATUS_INVALID_PARAMETER), "odd width");
        let mut g = f;
        g.video_info_header.rc_target = Rect { left: 0, top: 0, right: -5, bottom: 1080 };
        assert_eq!(check(&g).map(|v| v.width), Ok(2048), "empty target = whole buffer");
    }

    #[test]
    fn negative_height_is_top_down_and_accepted() {
        let mut f = valid(PixelFormat::Nv12);
        f.video_info_header.bmi_header.bi_height = -1080;
        f.video_info_header.rc_target = Rect::default();
        assert_eq!(check(&f).map(|v| v.height), Ok(1080));
        f.video_info_header.bmi_header.bi_height = i32::MIN;
        assert_eq!(check(&f), Err(STATUS_INVALID_PARAMETER));
    }

    #[test]
    fn overflow_is_integer_overflow() {
        for pixel in SUPPORTED_PIXEL_FORMATS {
            let mut f = valid(pixel);
            f.video_info_header.bmi_header.bi_width = 0x7FFF_FFFE;
            f.video_info_header.bmi_header.bi_size_image = 0;
            f.data_format.sample_size = 0;
            assert_eq!(check(&f), Err(STATUS_INTEGER_OVERFLOW), "{pixel:?}");
        }
        let mut f = valid(PixelFormat::Yuy2);
        f.video_info_header.bmi_header.bi_width = 0x0010_0000;
        f.video_info_header.bmi_header.bi_size_image = 0;
        f.data_format.sample_size = 0;
        assert_eq!(check(&f), Err(STATUS_INVALID_PARAMETER), "no overflow but stride too large");
    }

    #[test]
    fn stated_sizes_below_image_are_invalid_buffer_size() {
        let base = valid(PixelFormat::Yuy2);
        let image = base.video_info_header.bmi_header.bi_size_image;
        let mut f = base;
        f.video_info_header.bmi_header.bi_size_image = image - 1;
        assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE));
        f.video_info_header.bmi_header.bi_size_image = 0;
        assert!(check(&f).is_ok());
        f.video_info_header.bmi_header.bi_size_image = image + 4096;
        assert!(check(&f).is_ok());
        let mut f = base;
        f.data_format.sample_size = 1;
        assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE));
        f.data_format.sample_size = 0;
        assert!(check(&f).is_ok());
    }

    #[test]
    fn frame_interval_rules() {
        let mut f = valid(PixelFormat::Yuy2);
        f.video_info_header.avg_time_per_frame = 0;
        assert_eq!(check(&f).map(|v| v.frame_interval), Ok(DEFAULT_FRAME_INTERVAL));
        for bad in [-1, 1, i64::from(MIN_FRAME_INTERVAL) - 1, i64::from(MAX_FRAME_INTERVAL) + 1, i64::MAX, i64::MIN] {
            f.video_info_header.avg_time_per_frame = bad;
            assert_eq!(check(&f), Err(STATUS_INVALID_PARAMETER), "{bad}");
        }
    }

    #[test]
    fn constructor_rejects_what_the_validator_rejects() {
        assert_eq!(VideoFormat::new(PixelFormat::Yuy2, 3, 2, 333_333), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(VideoFormat::new(PixelFormat::Yuy2, 4096, 2162, 333_333), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(VideoFormat::new(PixelFormat::Yuy2, 64, 64, 0), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(VideoFormat::with_stride(PixelFormat::Yuy2, 64, 64, 127, 333_333), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(VideoFormat::with_stride(PixelFormat::Nv12, 64, 64, 62, 333_333), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(VideoFormat::with_stride(PixelFormat::Nv12, 64, 64, 66, 333_333).map(|f| f.stride), Ok(66));
        assert_eq!(VideoFormat::default_for(PixelFormat::Nv12), VideoFormat::new(PixelFormat::Nv12, 1920, 1080, 333_333).unwrap());
    }

    /// A small deterministic fuzzer: random mutations of valid formats and
    /// random bytes must never panic, and whatever validates is consistent.
    #[test]
    fn never_panics_on_mutated_input() {
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.u64(..);
        for round in 0..200_000u32 {
            let pixel = SUPPORTED_PIXEL_FORMATS[(round % 2) as usize];
            let mut bytes = [0u8; 200];
            bytes[..152].copy_from_slice(valid(pixel).as_bytes());
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let at = (next() % 200) as usize;
                let r = next();
                bytes[at] = match r % 4 {
                    0 => 0,
                    1 => 0xFF,
                    2 => bytes[at] ^ (1 << (r % 8)),
                    _ => r.to_le_bytes()[1],
                };
            }
            let len = if next() % 8 == 0 { (next() % 200) as usize } else { 152 + (next() % 49) as usize };
            if let Ok(v) = validate_data_format(&bytes[..len]) {
                assert!(v.stride >= v.line_bytes());
                assert_eq!(Some(v.image_bytes), v.stride.checked_mul(v.lines()));
                assert!(v.width % 2 == 0 && v.height % 2 == 0);
            }
            let _ = intersect(&bytes[..len], pixel, &VideoFormat::default_for(pixel));
        }
    }

    #[test]
    fn data_ranges_describe_the_pin() {
        for pixel in SUPPORTED_PIXEL_FORMATS {
            let r = data_range(pixel);
            assert_eq!(r.data_range.format_size as usize, r.as_bytes().len());
            assert_eq!(pixel_of_subtype(&r.data_range.sub_format), Some(pixel));
            assert_eq!(r.config_caps.max_output_size, KsSize { cx: 4096, cy: 2160 });
            assert_eq!(r.config_caps.min_frame_interval, i64::from(MIN_FRAME_INTERVAL));
            let default = VideoFormat::default_for(pixel);
            assert_eq!(r.video_info_header, build_video_info_header(&default));
            assert!(r.data_range.sample_size >= default.image_bytes);
            // The range intersected with itself gives its default format.
            assert_eq!(intersect(r.as_bytes(), pixel, &default), Ok(default));
        }
    }

    #[test]
    fn intersection_picks_the_requested_or_preferred_format() {
        let preferred = VideoFormat::new(PixelFormat::Yuy2, 1280, 720, 166_666).unwrap();
        // A bare wildcard KSDATARANGE: the preferred format, converted.
        let wildcard = KsDataFormat { format_size: 64, ..KsDataFormat::default() };
        assert_eq!(intersect(wildcard.as_bytes(), PixelFormat::Yuy2, &preferred), Ok(preferred));
        let nv12 = intersect(wildcard.as_bytes(), PixelFormat::Nv12, &preferred).unwrap();
        assert_eq!((nv12.pixel, nv12.width, nv12.height, nv12.stride), (PixelFormat::Nv12, 1280, 720, 1280));
        // A full KS_DATARANGE_VIDEO asking for 640x480 @ 60 fps.
        let mut r = data_range(PixelFormat::Nv12);
        r.video_info_header.bmi_header.bi_width = 640;
        r.video_info_header.bmi_header.bi_height = -480;
        r.video_info_header.avg_time_per_frame = 166_666;
        let got = intersect(r.as_bytes(), PixelFormat::Nv12, &preferred).unwrap();
        assert_eq!((got.width, got.height, got.frame_interval), (640, 480, 166_666));
        // Outside the range, wrong subtype, wrong major.
        r.video_info_header.bmi_header.bi_width = 5000;
        assert_eq!(intersect(r.as_bytes(), PixelFormat::Nv12, &preferred), Err(STATUS_NO_MATCH));
        assert_eq!(intersect(data_range(PixelFormat::Nv12).as_bytes(), PixelFormat::Yuy2, &preferred), Err(STATUS_NO_MATCH));
        let mut audio = wildcard;
        audio.major_format = fourcc_subtype(u32::from_le_bytes(*b"auds"));
        assert_eq!(intersect(audio.as_bytes(), PixelFormat::Yuy2, &preferred), Err(STATUS_NO_MATCH));
        assert_eq!(intersect(&wildcard.as_bytes()[..63], PixelFormat::Yuy2, &preferred), Err(STATUS_BUFFER_TOO_SMALL));
        let short = KsDataFormat { format_size: 8, ..KsDataFormat::default() };
        assert_eq!(intersect(short.as_bytes(), PixelFormat::Yuy2, &preferred), Err(STATUS_INVALID_BUFFER_SIZE));
    }

    #[test]
    fn intersect_into_follows_the_ks_buffer_protocol() {
        let range = data_range(PixelFormat::Yuy2);
        let preferred = VideoFormat::default_for(PixelFormat::Yuy2);
        let query = intersect_into(range.as_bytes(), PixelFormat::Yuy2, &preferred, &mut []);
        assert_eq!(query, IntersectOutcome { status: STATUS_BUFFER_OVERFLOW, data_size: 152 });
        let mut small = [0u8; 100];
        let o = intersect_into(range.as_bytes(), PixelFormat::Yuy2, &preferred, &mut small);
        assert_eq!(o.status, STATUS_BUFFER_TOO_SMALL);
        let mut out = [0u8; 160];
        let o = intersect_into(range.as_bytes(), PixelFormat::Yuy2, &preferred, &mut out);
        assert_eq!(o, IntersectOutcome { status: STATUS_SUCCESS, data_size: 152 });
        assert_eq!(validate_data_format(&out), Ok(preferred));
        let o = intersect_into(range.as_bytes(), PixelFormat::Nv12, &preferred, &mut out);
        assert_eq!(o, IntersectOutcome { status: STATUS_NO_MATCH, data_size: 0 });
    }
}
