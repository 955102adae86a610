//! Bad input, fuzzed with proptest: KS data formats from user mode, the
//! query interface from a child, and the board's register file and
//! completion records (untrusted hardware) through the bus ISR and DPC.
use capdma_avstream::bus_client::BusClient;
use capdma_avstream::format::{build_data_format, validate_data_format, VideoFormat, MAX_FRAME_INTERVAL, MAX_STRIDE_BYTES, MIN_FRAME_INTERVAL};
use capdma_avstream::ks_format::{fourcc_subtype, KsDataFormatVideoInfoHeader, KsGuid, Rect};
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};
use capdma_interface::negotiate::{negotiate, table_size};
use capdma_interface::status::{
    NtStatus, STATUS_BUFFER_TOO_SMALL, STATUS_INTEGER_OVERFLOW, STATUS_INVALID_BUFFER_SIZE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_NO_MATCH, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
};
use capdma_interface::table::{CapdmaBusInterface, DmaConfig};
use capdma_sim::board::BoardKind;
use capdma_sim::machine::{Machine, MachineConfig};
use proptest::prelude::*;
use zerocopy::{FromBytes, IntoBytes};

#[path = "bad_input/register_file.rs"]
mod register_file;

fn pixel() -> impl Strategy<Value = PixelFormat> {
    prop_oneof![Just(PixelFormat::Yuy2), Just(PixelFormat::Nv12)]
}

/// A valid format: any supported pixel format, even size, interval in range.
fn valid_format() -> impl Strategy<Value = VideoFormat> {
    (pixel(), 1..=MAX_WIDTH / 2, 1..=MAX_HEIGHT / 2, MIN_FRAME_INTERVAL..=MAX_FRAME_INTERVAL)
        .prop_map(|(p, w, h, i)| VideoFormat::new(p, w * 2, h * 2, i).expect("valid by construction"))
}

fn check(f: &KsDataFormatVideoInfoHeader) -> Result<VideoFormat, NtStatus> {
    validate_data_format(f.as_bytes())
}

/// An 8-aligned buffer for an interface answer, as a driver's
/// `CAPDMA_BUS_INTERFACE` would be.
#[repr(C, align(8))]
struct Buffer([u8; 512]);

/// What every accepted format must satisfy, whatever the input was.
fn assert_sane(f: &VideoFormat, input: &KsDataFormatVideoInfoHeader) -> Result<(), TestCaseError> {
    prop_assert!((2..=MAX_WIDTH).contains(&f.width) && f.width.is_multiple_of(2), "{f:?}");
    prop_assert!((2..=MAX_HEIGHT).contains(&f.height) && f.height.is_multiple_of(2), "{f:?}");
    prop_assert!(f.stride >= f.line_bytes() && f.stride <= MAX_STRIDE_BYTES, "{f:?}");
    let image = u64::from(f.stride) * u64::from(f.lines());
    prop_assert_eq!(u64::from(f.image_bytes), image, "image = stride x lines: {:?}", f);
    prop_assert!((MIN_FRAME_INTERVAL..=MAX_FRAME_INTERVAL).contains(&f.frame_interval));
    let bmi = &input.video_info_header.bmi_header;
    prop_assert!(bmi.bi_size_image == 0 || bmi.bi_size_image >= f.image_bytes, "biSizeImage below the image");
    prop_assert!(input.data_format.sample_size == 0 || input.data_format.sample_size >= f.image_bytes);
    prop_assert_eq!(check(&build_data_format(f)), Ok(*f), "what is accepted round-trips");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes at all: never a panic; truncated input is BUFFER_TOO_SMALL.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let result = validate_data_format(&bytes);
        if bytes.len() < 152 {
            prop_assert_eq!(result, Err(STATUS_BUFFER_TOO_SMALL));
        }
        if let Ok(f) = result {
            let (parsed, _) = KsDataFormatVideoInfoHeader::read_from_prefix(&bytes).unwrap();
            assert_sane(&f, &parsed)?;
        }
    }

    /// A valid format with any of its fields overwritten by any value:
    /// never a panic, and whatever is accepted is sane.
    #[test]
    fn mutated_fields_are_judged_sanely(
        base in valid_format(),
        field in 0..14u8,
        value in any::<u64>(),
    ) {
        let mut f = build_data_format(&base);
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, reason = "any bit pattern is the point")]
        match field {
            0 => f.data_format.format_size = value as u32,
            1 => f.data_format.sample_size = value as u32,
            2 => f.data_format.sub_format = KsGuid::new(value as u32, (value >> 32) as u16, (value >> 48) as u16, value.to_le_bytes()),
            3 => f.video_info_header.bmi_header.bi_size = value as u32,
            4 => f.video_info_header.bmi_header.bi_width = value as i32,
            5 => f.video_info_header.bmi_header.bi_height = value as i32,
            6 => f.video_info_header.bmi_header.bi_planes = value as u16,
            7 => f.video_info_header.bmi_header.bi_bit_count = value as u16,
            8 => f.video_info_header.bmi_header.bi_compression = value as u32,
            9 => f.video_info_header.bmi_header.bi_size_image = value as u32,
            10 => f.video_info_header.avg_time_per_frame = value as i64,
            11 => f.video_info_header.rc_target = Rect { left: 0, top: 0, right: value as i32, bottom: (value >> 32) as i32 },
            12 => f.video_info_header.rc_target = Rect { left: value as i32, top: (value >> 32) as i32, right: 64, bottom: 64 },
            _ => f.data_format.major_format = KsGuid::new(value as u32, 0, 0, [0; 8]),
        }
        if let Ok(accepted) = check(&f) {
            assert_sane(&accepted, &f)?;
        }
    }

    /// width x height x bytes per pixel that cannot be (too large, or
    /// overflowing 32 bits) is refused, never accepted.
    #[test]
    fn oversized_and_overflowing_sizes_are_refused(p in pixel(), w in (MAX_WIDTH.cast_signed() + 1)..=i32::MAX, h in prop_oneof![1..=i32::MAX, i32::MIN..=-1]) {
        let mut f = build_data_format(&VideoFormat::new(p, 640, 480, 333_333).unwrap());
        f.video_info_header.rc_target = Rect::default();
        f.video_info_header.bmi_header.bi_width = w & !1;
        f.video_info_header.bmi_header.bi_height = h;
        f.video_info_header.bmi_header.bi_size_image = 0;
        f.data_format.sample_size = 0;
        let result = check(&f);
        prop_assert!(matches!(result, Err(STATUS_INVALID_PARAMETER | STATUS_INTEGER_OVERFLOW)), "{w}x{h}: {result:?}");
    }

    /// Zero width or height: STATUS_INVALID_PARAMETER.
    #[test]
    fn zero_sizes_are_invalid_parameter(base in valid_format(), zero_width in any::<bool>(), other in any::<i32>()) {
        let mut f = build_data_format(&base);
        f.video_info_header.rc_target = Rect::default();
        let bmi = &mut f.video_info_header.bmi_header;
        if zero_width { bmi.bi_width = 0; bmi.bi_height = other; } else { bmi.bi_height = 0; bmi.bi_width = other; }
        prop_assert_eq!(check(&f), Err(STATUS_INVALID_PARAMETER));
    }

    /// A stride (biWidth) smaller than the image row (rcTarget wider):
    /// STATUS_INVALID_PARAMETER.
    #[test]
    fn stride_smaller_than_a_row_is_refused(base in valid_format(), extra in 1..4096i32) {
        let mut f = build_data_format(&base);
        let buffer_width = f.video_info_header.bmi_header.bi_width;
        let height = f.video_info_header.bmi_header.bi_height;
        f.video_info_header.rc_target = Rect { left: 0, top: 0, right: buffer_width.saturating_add(extra), bottom: height };
        prop_assert_eq!(check(&f), Err(STATUS_INVALID_PARAMETER));
    }

    /// biSizeImage or SampleSize that disagrees (smaller than the image):
    /// STATUS_INVALID_BUFFER_SIZE; larger is accepted.
    #[test]
    fn image_size_that_disagrees_is_refused(base in valid_format(), short in 1..u32::MAX, in_sample in any::<bool>(), larger in 0..1u32 << 20) {
        let short = short % base.image_bytes.max(1);
        prop_assume!(short != 0);
        let mut f = build_data_format(&base);
        if in_sample { f.data_format.sample_size = short; } else { f.video_info_header.bmi_header.bi_size_image = short; }
        prop_assert_eq!(check(&f), Err(STATUS_INVALID_BUFFER_SIZE));
        let mut g = build_data_format(&base);
        g.video_info_header.bmi_header.bi_size_image = base.image_bytes.saturating_add(larger);
        prop_assert_eq!(check(&g), Ok(base));
    }

    /// A subtype that is neither YUY2 nor NV12: STATUS_NO_MATCH.
    #[test]
    fn unknown_subtypes_are_no_match(base in valid_format(), fourcc in any::<u32>(), random_guid in any::<[u8; 16]>(), use_fourcc in any::<bool>()) {
        let subtype = if use_fourcc { fourcc_subtype(fourcc) } else { KsGuid::read_from_bytes(&random_guid[..]).unwrap() };
        prop_assume!(subtype != fourcc_subtype(PixelFormat::Yuy2.fourcc()) && subtype != fourcc_subtype(PixelFormat::Nv12.fourcc()));
        let mut f = build_data_format(&base);
        f.data_format.sub_format = subtype;
        prop_assert_eq!(check(&f), Err(STATUS_NO_MATCH));
    }

    /// Truncated structures (fewer bytes than the structure, or than
    /// FormatSize claims): STATUS_BUFFER_TOO_SMALL.
    #[test]
    fn truncated_structures_are_buffer_too_small(base in valid_format(), len in 0usize..152, claim in 153u32..4096) {
        let f = build_data_format(&base);
        prop_assert_eq!(validate_data_format(&f.as_bytes()[..len]), Err(STATUS_BUFFER_TOO_SMALL));
        let mut g = f;
        g.data_format.format_size = claim;
        prop_assert_eq!(check(&g), Err(STATUS_BUFFER_TOO_SMALL));
    }
}

/// A started machine (one S/G card, one channel streaming nothing yet) for
/// the interface properties.
fn machine() -> Machine {
    let config = MachineConfig { board: BoardKind::ScatterGather, width: 64, height: 16, frames: 1, ..MachineConfig::default() };
    let mut m = Machine::new(config).unwrap();
    m.start().unwrap();
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Random Size/Version/null through BusDevice::query_interface: the
    /// negotiation's answer, a reference only on success, nothing written
    /// beyond the negotiated size (nothing at all on failure).
    #[test]
    fn query_interface_with_random_size_version_and_null(size in any::<u16>(), version in any::<u16>(), null in prop::bool::weighted(0.1)) {
        thread_local!(static M: Machine = machine());
        M.with(|m| -> Result<(), TestCaseError> {
            let bus = m.bus();
            let before = bus.reference_count();
            let mut buffer = Buffer([0xA5; 512]);
            let out = if null { std::ptr::null_mut() } else { (&raw mut buffer).cast::<CapdmaBusInterface>() };
            let status = bus.query_interface(size, version, out);
            let expected = if null { Err(STATUS_INVALID_PARAMETER) } else { negotiate(size, version, capdma_bus::SERVED_VERSION) };
            match expected {
                Ok(n) => {
                    prop_assert_eq!(status, STATUS_SUCCESS);
                    prop_assert_eq!(bus.reference_count(), before + 1);
                    let written = usize::from(n.size);
                    prop_assert!(buffer.0[written..].iter().all(|b| *b == 0xA5), "wrote past the negotiated {written} bytes");
                    let table = CapdmaBusInterface::read_from_buffer(&buffer.0);
                    prop_assert_eq!((table.header.size, table.header.version), (n.size, n.version));
                    // SAFETY: drops the reference the query took, once.
                    unsafe { table.header.interface_dereference.unwrap()(table.header.context) };
                }
                Err(e) => {
                    prop_assert_eq!(status, e);
                    prop_assert!(buffer.0.iter().all(|b| *b == 0xA5), "nothing written on failure");
                }
            }
            prop_assert_eq!(bus.reference_count(), before);
            Ok(())
        })?;
    }

    /// A hostile answer through BusClient::from_query: refused with the
    /// documented status and the reference dropped exactly once, or kept
    /// and dropped once at release.
    #[test]
    fn from_query_with_random_headers(size in any::<u16>(), version in any::<u16>(), missing in 0..10u8, channel in 0..4u32) {
        thread_local!(static M: Machine = machine());
        M.with(|m| -> Result<(), TestCaseError> {
            let bus = m.bus();
            let before = bus.reference_count();
            let mut answer = BusClient::query_buffer();
            prop_assert_eq!(bus.query_interface(answer.header.size, answer.header.version, &raw mut answer), STATUS_SUCCESS);
            let deref = answer.header.interface_dereference.unwrap();
            let context = answer.header.context;
            answer.header.size = size;
            answer.header.version = version;
            match missing {
                0 => answer.header.interface_dereference = None,
                1 => answer.get_dma_config = None,
                2 => answer.program_frame = None,
                3 => answer.stop_channel = None,
                4 => answer.register_completion = None,
                _ => {}
            }
            let expected = if missing == 0 {
                Err(STATUS_NOT_SUPPORTED)
            } else if version == 0 || version > BusClient::REQUEST_VERSION {
                Err(STATUS_REVISION_MISMATCH)
            } else if size < table_size(version).unwrap_or(u16::MAX) || size > BusClient::REQUEST_SIZE {
                Err(STATUS_INVALID_BUFFER_SIZE)
            } else if missing <= 4 || (version >= 2 && answer.program_frame_part.is_none()) {
                // Version 2 needs ProgramFramePart (a bus serving 1 left it null).
                Err(STATUS_NOT_SUPPORTED)
            } else {
                Ok(())
            };
            // SAFETY: the answer's context and pointers are the live bus's.
            let result = unsafe { BusClient::from_query(&answer, channel) };
            prop_assert_eq!(result.as_ref().err().copied(), expected.err(), "size {} version {} missing {}", size, version, missing);
            match result {
                Ok(client) => {
                    prop_assert_eq!(bus.reference_count(), before + 1, "kept");
                    let config: Result<DmaConfig, NtStatus> = client.channel().get_dma_config();
                    if channel >= 1 {
                        prop_assert_eq!(config.err(), Some(STATUS_INVALID_PARAMETER), "channel {} of 1", channel);
                    } else {
                        prop_assert!(config.is_ok());
                    }
                    // SAFETY: nothing from this client is used afterwards.
                    unsafe { client.release() };
                }
                Err(_) if missing == 0 => {
                    prop_assert_eq!(bus.reference_count(), before + 1, "no dereference to call");
                    // SAFETY: drops the query's reference, once.
                    unsafe { deref(context) };
                }
                Err(_) => {}
            }
            prop_assert_eq!(bus.reference_count(), before, "the reference dropped exactly once");
            Ok(())
        })?;
    }
}

trait ReadFromBuffer {
    fn read_from_buffer(buffer: &[u8]) -> Self;
}

impl ReadFromBuffer for CapdmaBusInterface {
    fn read_from_buffer(buffer: &[u8]) -> Self {
        assert!(buffer.len() >= size_of::<Self>());
        // SAFETY: the buffer holds at least `size_of::<Self>()` bytes the bus
        // filled with a valid table (function pointers or null); an
        // unaligned read of plain data.
        unsafe { buffer.as_ptr().cast::<Self>().read_unaligned() }
    }
}
