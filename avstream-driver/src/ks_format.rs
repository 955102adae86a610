//! Kernel-streaming format structures (ks.h, ksmedia.h) as zerocopy types.
//!
//! Every structure is `#[repr(C)]` with the x64 layout of the headers; sizes
//! and field offsets are asserted at compile time (and were checked against
//! the mingw-w64 `ks.h`/`ksmedia.h` with a C compiler). Where the C layout has
//! implicit padding it is an explicit `reserved_padding` field here, so the
//! types are `IntoBytes` and can be read from, and written to, untrusted byte
//! buffers without `unsafe`.
//!
//! `KSDATAFORMAT` is a union with a `LONGLONG Alignment` member, so it is
//! 8-aligned (`#[repr(C, align(8))]`); it is 64 bytes, so
//! `KS_DATAFORMAT_VIDEOINFOHEADER`'s `VideoInfoHeader` starts at offset 64.
//!
//! Parse untrusted bytes with `read_from_prefix` (copies; no alignment needed).
use capdma_interface::guid::Guid;
use core::mem::{align_of, offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A `GUID` (16 bytes, 4-aligned) as it sits inside KS structures.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsGuid {
    /// `Data1`.
    pub data1: u32,
    /// `Data2`.
    pub data2: u16,
    /// `Data3`.
    pub data3: u16,
    /// `Data4`.
    pub data4: [u8; 8],
}

impl KsGuid {
    /// Builds a GUID from its canonical parts.
    #[must_use]
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self { data1, data2, data3, data4 }
    }

    /// `GUID_NULL`, the KS wildcard (`KSDATAFORMAT_*_WILDCARD`).
    pub const NULL: Self = Self::new(0, 0, 0, [0; 8]);

    /// Whether this is `GUID_NULL` (a wildcard in a data range).
    #[must_use]
    pub const fn is_null(&self) -> bool {
        self.data1 == 0 && self.data2 == 0 && self.data3 == 0 && u64::from_ne_bytes(self.data4) == 0
    }
}

impl From<Guid> for KsGuid {
    fn from(g: Guid) -> Self {
        Self::new(g.data1, g.data2, g.data3, g.data4)
    }
}

impl From<KsGuid> for Guid {
    fn from(g: KsGuid) -> Self {
        Guid::new(g.data1, g.data2, g.data3, g.data4)
    }
}

/// The media subtype GUID of a FOURCC: `{XXXXXXXX-0000-0010-8000-00AA00389B71}`
/// with `Data1 = fourcc` (`DEFINE_GUIDSTRUCT` of ksmedia.h's FOURCC subtypes).
#[must_use]
pub const fn fourcc_subtype(fourcc: u32) -> KsGuid {
    KsGuid::new(fourcc, 0x0000, 0x0010, [0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71])
}

/// `KSDATAFORMAT_TYPE_VIDEO` {73646976-0000-0010-8000-00aa00389b71} ('vids').
pub const KSDATAFORMAT_TYPE_VIDEO: KsGuid = fourcc_subtype(u32::from_le_bytes(*b"vids"));
/// `KSDATAFORMAT_SPECIFIER_VIDEOINFO` {05589f80-c356-11ce-bf01-00aa0055595a}:
/// the format block is a `KS_VIDEOINFOHEADER`.
pub const KSDATAFORMAT_SPECIFIER_VIDEOINFO: KsGuid =
    KsGuid::new(0x0558_9f80, 0xc356, 0x11ce, [0xbf, 0x01, 0x00, 0xaa, 0x00, 0x55, 0x59, 0x5a]);
/// `MEDIASUBTYPE_YUY2` {32595559-0000-0010-8000-00aa00389b71}.
pub const KSDATAFORMAT_SUBTYPE_YUY2: KsGuid = fourcc_subtype(capdma_interface::format::FOURCC_YUY2);
/// `MEDIASUBTYPE_NV12` {3231564e-0000-0010-8000-00aa00389b71}.
pub const KSDATAFORMAT_SUBTYPE_NV12: KsGuid = fourcc_subtype(capdma_interface::format::FOURCC_NV12);
/// `KSDATAFORMAT_TYPE_WILDCARD` (`GUID_NULL`).
pub const KSDATAFORMAT_TYPE_WILDCARD: KsGuid = KsGuid::NULL;
/// `KSDATAFORMAT_SUBTYPE_WILDCARD` (`GUID_NULL`).
pub const KSDATAFORMAT_SUBTYPE_WILDCARD: KsGuid = KsGuid::NULL;
/// `KSDATAFORMAT_SPECIFIER_WILDCARD` (`GUID_NULL`).
pub const KSDATAFORMAT_SPECIFIER_WILDCARD: KsGuid = KsGuid::NULL;
/// `PROPSETID_VIDCAP_DROPPEDFRAMES` {C6E13344-30AC-11d0-A18C-00A0C9118956}
/// (ksmedia.h): the property set of [`KSPROPERTY_DROPPEDFRAMES_CURRENT`].
pub const PROPSETID_VIDCAP_DROPPEDFRAMES: KsGuid =
    KsGuid::new(0xc6e1_3344, 0x30ac, 0x11d0, [0xa1, 0x8c, 0x00, 0xa0, 0xc9, 0x11, 0x89, 0x56]);
/// `KSPROPERTY_DROPPEDFRAMES_CURRENT`: the property id (0) in
/// [`PROPSETID_VIDCAP_DROPPEDFRAMES`].
pub const KSPROPERTY_DROPPEDFRAMES_CURRENT: u32 = 0;

/// `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING` (ks.h): KS calls Process only on
/// `KsPinAttemptProcessing` (common-buffer pins: the completion DPC drives it).
pub const KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING: u32 = 0x0000_0010;
/// `KSPIN_FLAG_GENERATE_MAPPINGS` (ks.h): KS builds `KSMAPPING`s of each frame
/// with the registered DMA adapter (S/G pins).
pub const KSPIN_FLAG_GENERATE_MAPPINGS: u32 = 0x0000_0100;
/// `KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY` (ks.h): no Process in `KSSTATE_PAUSE`.
pub const KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY: u32 = 0x0001_0000;

/// `KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY` (ks.h).
pub const KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY: u32 = 0x0000_0004;
/// `KSSTREAM_HEADER_OPTIONSF_TIMEVALID` (ks.h): `PresentationTime` is valid.
pub const KSSTREAM_HEADER_OPTIONSF_TIMEVALID: u32 = 0x0000_0010;
/// `KSSTREAM_HEADER_OPTIONSF_DURATIONVALID` (ks.h): `Duration` is valid.
pub const KSSTREAM_HEADER_OPTIONSF_DURATIONVALID: u32 = 0x0000_0100;
/// `KS_VIDEO_FLAG_FRAME` (ksmedia.h), `KS_FRAME_INFO.dwFrameFlags` of a
/// progressive frame.
pub const KS_VIDEO_FLAG_FRAME: u32 = 0;

/// `KSCATEGORY_CAPTURE` {65E8773D-8F56-11D0-A3B9-00A0C9223196} (ks.h); the
/// string form is `capdma_interface::identity::KSCATEGORY_CAPTURE`.
pub const KSCATEGORY_CAPTURE: KsGuid =
    KsGuid::new(0x65e8_773d, 0x8f56, 0x11d0, [0xa3, 0xb9, 0x00, 0xa0, 0xc9, 0x22, 0x31, 0x96]);
/// `KSCATEGORY_VIDEO` {6994AD05-93EF-11D0-A3CC-00A0C9223196} (ksmedia.h).
pub const KSCATEGORY_VIDEO: KsGuid =
    KsGuid::new(0x6994_ad05, 0x93ef, 0x11d0, [0xa3, 0xcc, 0x00, 0xa0, 0xc9, 0x22, 0x31, 0x96]);
/// `KSCATEGORY_VIDEO_CAMERA` {E5323777-F976-4F5B-9B55-B94699C46E44} (ksmedia.h).
pub const KSCATEGORY_VIDEO_CAMERA: KsGuid =
    KsGuid::new(0xe532_3777, 0xf976, 0x4f5b, [0x9b, 0x55, 0xb9, 0x46, 0x99, 0xc4, 0x6e, 0x44]);
/// The capture filter's categories, in the order of
/// `capdma_interface::identity::FILTER_CATEGORIES`.
pub const FILTER_CATEGORIES: [KsGuid; 3] = [KSCATEGORY_CAPTURE, KSCATEGORY_VIDEO, KSCATEGORY_VIDEO_CAMERA];
/// `PINNAME_VIDEO_CAPTURE` {FB6C4281-0353-11D1-905F-0000C0CC16BA}
/// (ksmedia.h): the capture pin's category and name.
pub const PINNAME_VIDEO_CAPTURE: KsGuid =
    KsGuid::new(0xfb6c_4281, 0x0353, 0x11d1, [0x90, 0x5f, 0x00, 0x00, 0xc0, 0xcc, 0x16, 0xba]);
/// `KSNAME_Filter` {9B365890-165F-11D0-A195-0020AFD156E4} (ks.h): the
/// filter descriptor's `ReferenceGuid`.
pub const KSNAME_FILTER: KsGuid =
    KsGuid::new(0x9b36_5890, 0x165f, 0x11d0, [0xa1, 0x95, 0x00, 0x20, 0xaf, 0xd1, 0x56, 0xe4]);
/// The reference string the filter factory registers its device interfaces
/// with (`KsCreateFilterFactory(.., RefString, ..)`); the INF's
/// `AddInterface` lines must use the same one.
pub const FILTER_REFERENCE_STRING: &str = "GLOBAL";

/// `KS_VIDEOSTREAM_CAPTURE` (ksmedia.h), for `StreamDescriptionFlags`.
pub const KS_VIDEOSTREAM_CAPTURE: u32 = 0x0002;

/// `RECT` (windef.h): four `LONG`s, 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Rect {
    /// `left`.
    pub left: i32,
    /// `top`.
    pub top: i32,
    /// `right` (exclusive).
    pub right: i32,
    /// `bottom` (exclusive).
    pub bottom: i32,
}

impl Rect {
    /// `IsRectEmpty` (winuser.h): no area, i.e. `right <= left` or `bottom <= top`.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.right <= self.left || self.bottom <= self.top
    }
}

/// `SIZE` (windef.h): two `LONG`s, 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsSize {
    /// `cx`.
    pub cx: i32,
    /// `cy`.
    pub cy: i32,
}

/// `KSDATAFORMAT` / `KSDATARANGE` (ks.h), 64 bytes, 8-aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsDataFormat {
    /// `FormatSize`: bytes of the whole format (this header and what follows).
    pub format_size: u32,
    /// `Flags` (`KSDATAFORMAT_*`).
    pub flags: u32,
    /// `SampleSize`: bytes per sample, 0 for variable.
    pub sample_size: u32,
    /// `Reserved`.
    pub reserved: u32,
    /// `MajorFormat`.
    pub major_format: KsGuid,
    /// `SubFormat`.
    pub sub_format: KsGuid,
    /// `Specifier`: what follows the header.
    pub specifier: KsGuid,
}

/// `KS_BITMAPINFOHEADER` (ksmedia.h), 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsBitmapInfoHeader {
    /// `biSize`: bytes of this header (40, or more with trailing data).
    pub bi_size: u32,
    /// `biWidth`: pixels per line of the buffer (its stride, in pixels).
    pub bi_width: i32,
    /// `biHeight`: lines; negative means top-down (YUV is top-down either way).
    pub bi_height: i32,
    /// `biPlanes`: must be 1.
    pub bi_planes: u16,
    /// `biBitCount`: bits per pixel.
    pub bi_bit_count: u16,
    /// `biCompression`: the FOURCC.
    pub bi_compression: u32,
    /// `biSizeImage`: bytes of the image, 0 allowed for uncompressed formats.
    pub bi_size_image: u32,
    /// `biXPelsPerMeter`.
    pub bi_x_pels_per_meter: i32,
    /// `biYPelsPerMeter`.
    pub bi_y_pels_per_meter: i32,
    /// `biClrUsed`.
    pub bi_clr_used: u32,
    /// `biClrImportant`.
    pub bi_clr_important: u32,
}

/// `KS_VIDEOINFOHEADER` (ksmedia.h), 88 bytes, 8-aligned (`AvgTimePerFrame`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsVideoInfoHeader {
    /// `rcSource`: the part of the source used (ignored by this driver).
    pub rc_source: Rect,
    /// `rcTarget`: where the image goes in the buffer; empty = the whole buffer.
    pub rc_target: Rect,
    /// `dwBitRate`: bits per second.
    pub dw_bit_rate: u32,
    /// `dwBitErrorRate`.
    pub dw_bit_error_rate: u32,
    /// `AvgTimePerFrame`: 100-ns units.
    pub avg_time_per_frame: i64,
    /// `bmiHeader`.
    pub bmi_header: KsBitmapInfoHeader,
}

/// `KS_DATAFORMAT_VIDEOINFOHEADER` (ksmedia.h): `KSDATAFORMAT` +
/// `KS_VIDEOINFOHEADER`, 152 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsDataFormatVideoInfoHeader {
    /// `DataFormat`.
    pub data_format: KsDataFormat,
    /// `VideoInfoHeader`.
    pub video_info_header: KsVideoInfoHeader,
}

/// `KS_VIDEO_STREAM_CONFIG_CAPS` (ksmedia.h), 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsVideoStreamConfigCaps {
    /// `guid`: the format specifier this describes.
    pub guid: KsGuid,
    /// `VideoStandard` (`KS_AnalogVideo_None` = 0 for digital sources).
    pub video_standard: u32,
    /// `InputSize`.
    pub input_size: KsSize,
    /// `MinCroppingSize`.
    pub min_cropping_size: KsSize,
    /// `MaxCroppingSize`.
    pub max_cropping_size: KsSize,
    /// `CropGranularityX`.
    pub crop_granularity_x: i32,
    /// `CropGranularityY`.
    pub crop_granularity_y: i32,
    /// `CropAlignX`.
    pub crop_align_x: i32,
    /// `CropAlignY`.
    pub crop_align_y: i32,
    /// `MinOutputSize`.
    pub min_output_size: KsSize,
    /// `MaxOutputSize`.
    pub max_output_size: KsSize,
    /// `OutputGranularityX`.
    pub output_granularity_x: i32,
    /// `OutputGranularityY`.
    pub output_granularity_y: i32,
    /// `StretchTapsX`.
    pub stretch_taps_x: i32,
    /// `StretchTapsY`.
    pub stretch_taps_y: i32,
    /// `ShrinkTapsX`.
    pub shrink_taps_x: i32,
    /// `ShrinkTapsY`.
    pub shrink_taps_y: i32,
    /// The compiler's padding before the 8-aligned `MinFrameInterval`.
    pub reserved_padding: u32,
    /// `MinFrameInterval`: 100-ns units.
    pub min_frame_interval: i64,
    /// `MaxFrameInterval`: 100-ns units.
    pub max_frame_interval: i64,
    /// `MinBitsPerSecond`.
    pub min_bits_per_second: i32,
    /// `MaxBitsPerSecond`.
    pub max_bits_per_second: i32,
}

/// `KS_DATARANGE_VIDEO` (ksmedia.h), 296 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsDataRangeVideo {
    /// `DataRange`.
    pub data_range: KsDataFormat,
    /// `bFixedSizeSamples` (`BOOL`).
    pub b_fixed_size_samples: i32,
    /// `bTemporalCompression` (`BOOL`).
    pub b_temporal_compression: i32,
    /// `StreamDescriptionFlags` (`KS_VIDEOSTREAM_*`).
    pub stream_description_flags: u32,
    /// `MemoryAllocationFlags` (`KS_VIDEO_ALLOC_*`).
    pub memory_allocation_flags: u32,
    /// `ConfigCaps`.
    pub config_caps: KsVideoStreamConfigCaps,
    /// `VideoInfoHeader`: the range's default format.
    pub video_info_header: KsVideoInfoHeader,
}

/// `KSPROPERTY` / `KSIDENTIFIER` (ks.h), 24 bytes, 8-aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsProperty {
    /// `Set`.
    pub set: KsGuid,
    /// `Id`.
    pub id: u32,
    /// `Flags` (`KSPROPERTY_TYPE_*`).
    pub flags: u32,
}

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT_S` (ksmedia.h), 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KsPropertyDroppedFramesCurrentS {
    /// `Property`.
    pub property: KsProperty,
    /// `PictureNumber`.
    pub picture_number: i64,
    /// `DropCount`.
    pub drop_count: i64,
    /// `AverageFrameSize`, bytes.
    pub average_frame_size: u32,
    /// The compiler's tail padding to the 8-byte alignment.
    pub reserved_padding: u32,
}

/// `sizeof(KSMAPPING)` (ks.h), the `MappingTableStride` passed to
/// `KsDeviceRegisterAdapterObject`.
pub const KSMAPPING_SIZE: u32 = 16;

const _: () = assert!(size_of::<capdma_interface::table::SgElement>() == KSMAPPING_SIZE as usize);
const _: () = assert!(size_of::<KsGuid>() == 16);
const _: () = assert!(size_of::<Rect>() == 16);
const _: () = assert!(size_of::<KsDataFormat>() == 64 && align_of::<KsDataFormat>() == 8);
const _: () = assert!(offset_of!(KsDataFormat, major_format) == 16);
const _: () = assert!(offset_of!(KsDataFormat, sub_format) == 32);
const _: () = assert!(offset_of!(KsDataFormat, specifier) == 48);
const _: () = assert!(size_of::<KsBitmapInfoHeader>() == 40);
const _: () = assert!(offset_of!(KsBitmapInfoHeader, bi_planes) == 12);
const _: () = assert!(offset_of!(KsBitmapInfoHeader, bi_compression) == 16);
const _: () = assert!(offset_of!(KsBitmapInfoHeader, bi_clr_important) == 36);
const _: () = assert!(size_of::<KsVideoInfoHeader>() == 88);
const _: () = assert!(offset_of!(KsVideoInfoHeader, rc_target) == 16);
const _: () = assert!(offset_of!(KsVideoInfoHeader, avg_time_per_frame) == 40);
const _: () = assert!(offset_of!(KsVideoInfoHeader, bmi_header) == 48);
const _: () = assert!(size_of::<KsDataFormatVideoInfoHeader>() == 152);
const _: () = assert!(offset_of!(KsDataFormatVideoInfoHeader, video_info_header) == 64);
const _: () = assert!(size_of::<KsVideoStreamConfigCaps>() == 128);
const _: () = assert!(offset_of!(KsVideoStreamConfigCaps, shrink_taps_y) == 96);
const _: () = assert!(offset_of!(KsVideoStreamConfigCaps, min_frame_interval) == 104);
const _: () = assert!(offset_of!(KsVideoStreamConfigCaps, max_bits_per_second) == 124);
const _: () = assert!(size_of::<KsDataRangeVideo>() == 296);
const _: () = assert!(offset_of!(KsDataRangeVideo, config_caps) == 80);
const _: () = assert!(offset_of!(KsDataRangeVideo, video_info_header) == 208);
const _: () = assert!(size_of::<KsProperty>() == 24);
const _: () = assert!(size_of::<KsPropertyDroppedFramesCurrentS>() == 48);
const _: () = assert!(offset_of!(KsPropertyDroppedFramesCurrentS, picture_number) == 24);
const _: () = assert!(offset_of!(KsPropertyDroppedFramesCurrentS, average_frame_size) == 40);

/// `sizeof(KSDATAFORMAT)`, bytes.
pub const KSDATAFORMAT_SIZE: u32 = 64;
/// `sizeof(KS_DATAFORMAT_VIDEOINFOHEADER)`, bytes.
pub const KS_DATAFORMAT_VIDEOINFOHEADER_SIZE: u32 = 152;
/// `sizeof(KS_DATARANGE_VIDEO)`, bytes.
pub const KS_DATARANGE_VIDEO_SIZE: u32 = 296;
/// `sizeof(KS_BITMAPINFOHEADER)`, bytes.
pub const KS_BITMAPINFOHEADER_SIZE: u32 = 40;
/// Offset of `bmiHeader` inside `KS_DATAFORMAT_VIDEOINFOHEADER`, bytes.
pub const KS_DATAFORMAT_VIDEOINFOHEADER_BMI_OFFSET: u32 = 64 + 48;

const _: () = assert!(size_of::<KsDataFormat>() == KSDATAFORMAT_SIZE as usize);
const _: () = assert!(size_of::<KsDataFormatVideoInfoHeader>() == KS_DATAFORMAT_VIDEOINFOHEADER_SIZE as usize);
const _: () = assert!(size_of::<KsDataRangeVideo>() == KS_DATARANGE_VIDEO_SIZE as usize);
const _: () = assert!(size_of::<KsBitmapInfoHeader>() == KS_BITMAPINFOHEADER_SIZE as usize);
const _: () = assert!(
    offset_of!(KsDataFormatVideoInfoHeader, video_info_header) + offset_of!(KsVideoInfoHeader, bmi_header)
        == KS_DATAFORMAT_VIDEOINFOHEADER_BMI_OFFSET as usize
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtype_guids_match_ksmedia() {
        // {32595559-0000-0010-8000-00AA00389B71}
        assert_eq!(KSDATAFORMAT_SUBTYPE_YUY2.data1, 0x3259_5559);
        // {3231564E-0000-0010-8000-00AA00389B71}
        assert_eq!(KSDATAFORMAT_SUBTYPE_NV12.data1, 0x3231_564e);
        // {73646976-0000-0010-8000-00aa00389b71}
        assert_eq!(KSDATAFORMAT_TYPE_VIDEO.data1, 0x7364_6976);
        assert_eq!(KSDATAFORMAT_TYPE_VIDEO.data4, [0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71]);
        assert!(KSDATAFORMAT_SPECIFIER_WILDCARD.is_null());
        assert!(!KSDATAFORMAT_SPECIFIER_VIDEOINFO.is_null());
    }

    #[test]
    fn guid_bytes_are_windows_layout() {
        let bytes = KSDATAFORMAT_SPECIFIER_VIDEOINFO.as_bytes();
        assert_eq!(&bytes[0..4], &[0x80, 0x9f, 0x58, 0x05]);
        assert_eq!(&bytes[4..6], &[0x56, 0xc3]);
        assert_eq!(&bytes[8..16], &[0xbf, 0x01, 0x00, 0xaa, 0x00, 0x55, 0x59, 0x5a]);
        let back: Guid = KSDATAFORMAT_SPECIFIER_VIDEOINFO.into();
        assert_eq!(KsGuid::from(back), KSDATAFORMAT_SPECIFIER_VIDEOINFO);
    }

    fn canonical(g: &KsGuid) -> String {
        let d = g.data4;
        format!(
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            g.data1, g.data2, g.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }

    #[test]
    fn filter_categories_match_the_identity_strings() {
        use capdma_interface::identity;
        let strings: Vec<String> = FILTER_CATEGORIES.iter().map(canonical).collect();
        assert_eq!(strings, identity::FILTER_CATEGORIES);
        assert_eq!(canonical(&KSCATEGORY_CAPTURE), identity::KSCATEGORY_CAPTURE);
        assert_eq!(canonical(&KSCATEGORY_VIDEO), identity::KSCATEGORY_VIDEO);
        assert_eq!(canonical(&KSCATEGORY_VIDEO_CAMERA), identity::KSCATEGORY_VIDEO_CAMERA);
    }

    #[test]
    fn pin_and_filter_names_match_the_headers() {
        // ksmedia.h: DEFINE_GUIDSTRUCT("FB6C4281-0353-11d1-905F-0000C0CC16BA", PINNAME_VIDEO_CAPTURE)
        assert_eq!(canonical(&PINNAME_VIDEO_CAPTURE), "FB6C4281-0353-11D1-905F-0000C0CC16BA");
        // ks.h: DEFINE_GUIDSTRUCT("9b365890-165f-11d0-a195-0020afd156e4", KSNAME_Filter)
        assert_eq!(canonical(&KSNAME_FILTER), "9B365890-165F-11D0-A195-0020AFD156E4");
        // ksmedia.h: {C6E13344-30AC-11d0-A18C-00A0C9118956}
        assert_eq!(canonical(&PROPSETID_VIDCAP_DROPPEDFRAMES), "C6E13344-30AC-11D0-A18C-00A0C9118956");
        assert!(FILTER_REFERENCE_STRING.is_ascii() && !FILTER_REFERENCE_STRING.is_empty());
    }

    #[test]
    fn rect_emptiness_follows_is_rect_empty() {
        assert!(Rect::default().is_empty());
        assert!(Rect { left: 5, top: 0, right: 5, bottom: 10 }.is_empty());
        assert!(!Rect { left: 0, top: 0, right: 2, bottom: 2 }.is_empty());
    }
}
