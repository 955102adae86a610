//! The query interface: negotiation, references, argument checking.
use super::{caps, elements, yuy2, Harness, Recorder, MAX_FRAME};
use crate::config::{DmaModeOverride, StartConfig};
use crate::ports::DISPATCH_LEVEL;
use capdma_interface::format::FOURCC_NV12;
use capdma_interface::status::{
    STATUS_BUFFER_TOO_SMALL, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_DEVICE_REMOVED,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
};
use capdma_interface::table::{CapdmaBusInterface, ChannelFormat, DmaConfig, SgElement, CAPDMA_BUS_INTERFACE_SIZE_V1};
use capdma_interface::{DmaMode, ModeReason};
use std::mem::{size_of, MaybeUninit};

const V1: u16 = CAPDMA_BUS_INTERFACE_SIZE_V1;
const V2: u16 = capdma_interface::table::CAPDMA_BUS_INTERFACE_SIZE_V2;

#[test]
fn negotiation_through_query_interface() {
    let h = Harness::sg(1);
    let mut table = MaybeUninit::<CapdmaBusInterface>::zeroed();
    assert_eq!(h.dev.query_interface(V1, 1, table.as_mut_ptr()), STATUS_DEVICE_NOT_READY, "not started");
    h.dev.start(&StartConfig::DEFAULT).unwrap();
    assert_eq!(h.dev.query_interface(V1, 1, std::ptr::null_mut()), STATUS_INVALID_PARAMETER);
    assert_eq!(h.dev.query_interface(V1, 0, table.as_mut_ptr()), STATUS_REVISION_MISMATCH);
    assert_eq!(h.dev.query_interface(V1 - 8, 1, table.as_mut_ptr()), STATUS_BUFFER_TOO_SMALL);
    assert_eq!(h.dev.reference_count(), 0, "failures take no reference");

    // A newer child with a bigger table gets version 2 and only its bytes.
    let mut big = [0xAAu8; 512];
    #[allow(clippy::cast_ptr_alignment, reason = "deliberately unaligned: the bus copies bytes")]
    let out = big.as_mut_ptr().cast::<CapdmaBusInterface>();
    assert_eq!(h.dev.query_interface(512, 7, out), STATUS_SUCCESS);
    assert!(big[usize::from(V2)..].iter().all(|&b| b == 0xAA), "nothing written past the served table");
    // SAFETY: test: the first V2 bytes were filled with a valid table (read unaligned).
    let served = unsafe { out.read_unaligned() };
    assert_eq!((served.header.size, served.header.version), (V2, 2));
    assert_eq!(served.header.context, std::ptr::from_ref(&*h.dev).cast_mut().cast());
    assert!(served.program_frame.is_some() && served.program_frame_part.is_some());
    assert_eq!(h.dev.reference_count(), 1);
    assert_eq!(usize::from(V2), size_of::<CapdmaBusInterface>());

    // A version-1 child gets the version-1 table: ProgramFramePart is not in it.
    let mut old = [0xAAu8; 512];
    #[allow(clippy::cast_ptr_alignment, reason = "deliberately unaligned: the bus copies bytes")]
    let out = old.as_mut_ptr().cast::<CapdmaBusInterface>();
    assert_eq!(h.dev.query_interface(V2, 1, out), STATUS_SUCCESS);
    assert!(old[usize::from(V1)..].iter().all(|&b| b == 0xAA), "nothing written past the version-1 table");
    // SAFETY: test: the first V1 bytes were filled (read unaligned).
    let served = unsafe { out.read_unaligned() };
    assert_eq!((served.header.size, served.header.version), (V1, 1));
    assert!(served.register_completion.is_some());
    assert_eq!(usize::from(V1), core::mem::offset_of!(CapdmaBusInterface, program_frame_part), "version 1 ends before ProgramFramePart");
    assert_eq!(h.dev.query_interface(V1, 2, table.as_mut_ptr()), STATUS_BUFFER_TOO_SMALL, "version 2 needs its table");
    h.dev.dereference();

    h.dev.surprise_remove();
    assert_eq!(h.dev.query_interface(V1, 1, table.as_mut_ptr()), STATUS_DEVICE_REMOVED);
}

#[test]
/// Plug and Play asks the bus to go while its children still hold the
/// interface (they drop it in their own removal, which comes before the
/// bus's): the query-remove succeeds; a rebalance (query-stop) would free
/// the rings and put the adapter under a started child and stays refused.
fn query_remove_succeeds_while_referenced_and_query_stop_is_busy() {
    let h = Harness::sg(1);
    let iface = h.start();
    assert_eq!(h.dev.reference_count(), 1);
    assert_eq!(h.dev.query_remove(), STATUS_SUCCESS, "children are removed before their bus");
    assert_eq!(h.dev.query_stop(), STATUS_DEVICE_BUSY);
    iface.reference();
    assert_eq!(h.dev.reference_count(), 2);
    iface.dereference();
    assert_eq!(h.dev.query_stop(), STATUS_DEVICE_BUSY);
    iface.dereference();
    assert_eq!(h.dev.reference_count(), 0);
    assert_eq!(h.dev.query_stop(), STATUS_SUCCESS);
    assert_eq!(h.dev.query_remove(), STATUS_SUCCESS);
    iface.dereference();
    assert_eq!(h.dev.reference_count(), 0, "an extra dereference does not wrap");
}

#[test]
fn dma_config_and_adapter_in_sg_mode() {
    let h = Harness::sg(2);
    let config = StartConfig { max_mapping_byte_count: Some(3000), ..StartConfig::DEFAULT };
    h.dev.start(&config).unwrap();
    let iface = h.iface();
    let (s, c) = iface.config(1);
    assert_eq!(s, STATUS_SUCCESS);
    assert_eq!(
        c,
        DmaConfig {
            mode: DmaMode::ScatterGather as u32,
            reason: ModeReason::BoardScatterGather as u32,
            alignment: 4096,
            max_transfer: 65536,
            address_bits: 64,
            slot_count: 0,
            slot_bytes: 0,
            descriptor_count: 16384,
            channel_count: 2,
            max_frame_bytes: MAX_FRAME,
        }
    );
    let (s, adapter, max_mapping, map_registers) = iface.adapter(0);
    assert_eq!(s, STATUS_SUCCESS);
    assert_eq!(adapter as usize, 0xADA0_0001);
    assert_eq!((max_mapping, map_registers), (3000, 64));
    assert_eq!(iface.slot_ring(0).0, STATUS_INVALID_DEVICE_REQUEST);
    assert_eq!(iface.return_slot(0, 0), STATUS_INVALID_DEVICE_REQUEST);
}

#[test]
fn dma_config_and_slot_ring_in_cb_mode() {
    let h = Harness::sg(1);
    let config = StartConfig { dma_mode: DmaModeOverride::CommonBuffer, slot_count: 3, ..StartConfig::DEFAULT };
    h.dev.start(&config).unwrap();
    let iface = h.iface();
    let (_, c) = iface.config(0);
    assert_eq!((c.mode, c.reason), (DmaMode::CommonBuffer as u32, ModeReason::OverrideCommonBuffer as u32));
    assert_eq!((c.slot_count, c.slot_bytes, c.descriptor_count), (3, 4_149_248, 0));
    assert_eq!(iface.adapter(0).0, STATUS_INVALID_DEVICE_REQUEST);
    let (s, ring) = iface.slot_ring(0);
    assert_eq!(s, STATUS_SUCCESS);
    assert!(!ring.base.is_null());
    assert_eq!((ring.slot_count, ring.slot_stride, ring.slot_bytes, ring.line_pitch), (3, 4_149_248, 4_149_248, 0));
    assert_eq!(iface.program(0, 1, &elements(0x1000, 512)), STATUS_INVALID_DEVICE_REQUEST);
}

#[test]
fn bad_channel_context_and_pointers_are_refused() {
    let h = Harness::sg(2);
    let iface = h.start();
    assert_eq!(iface.config(2).0, STATUS_INVALID_PARAMETER);
    assert_eq!(iface.adapter(7).0, STATUS_INVALID_PARAMETER);
    assert_eq!(iface.start(2, &yuy2(64, 4, 128)), STATUS_INVALID_PARAMETER);
    assert_eq!(iface.stop(u32::MAX), STATUS_INVALID_PARAMETER);
    assert_eq!(iface.register(3, None), STATUS_INVALID_PARAMETER);
    assert_eq!(iface.return_slot(9, 0), STATUS_INVALID_PARAMETER);
    let t = &iface.0;
    // SAFETY: test: null pointers are exactly what is being checked.
    unsafe {
        assert_eq!((t.get_dma_config.unwrap())(iface.ctx(), 0, std::ptr::null_mut()), STATUS_INVALID_PARAMETER);
    }
    let mut config = DmaConfig::default();
    // SAFETY: as above.
    unsafe {
        assert_eq!((t.get_dma_config.unwrap())(std::ptr::null_mut(), 0, &raw mut config), STATUS_INVALID_PARAMETER);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!((t.start_channel.unwrap())(iface.ctx(), 0, std::ptr::null()), STATUS_INVALID_PARAMETER);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!((t.program_frame.unwrap())(iface.ctx(), 0, 1, std::ptr::null(), 3), STATUS_INVALID_PARAMETER);
    }
    let mut a = std::ptr::null_mut();
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            (t.get_dma_adapter.unwrap())(iface.ctx(), 0, &raw mut a, std::ptr::null_mut(), std::ptr::null_mut()),
            STATUS_INVALID_PARAMETER
        );
    }
    // SAFETY: as above.
    unsafe { (t.header.interface_reference.unwrap())(std::ptr::null_mut()) };
    assert_eq!(h.dev.reference_count(), 1);
}

#[test]
fn start_channel_validates_the_format() {
    let h = Harness::cb(1);
    let iface = h.start();
    let bad_fourcc = ChannelFormat { fourcc: u32::from_le_bytes(*b"MJPG"), ..yuy2(640, 480, 0) };
    assert_eq!(iface.start(0, &bad_fourcc), STATUS_INVALID_PARAMETER);
    assert_eq!(iface.start(0, &yuy2(641, 480, 0)), STATUS_INVALID_PARAMETER);
    assert_eq!(iface.start(0, &yuy2(4098, 480, 0)), STATUS_INVALID_PARAMETER);
    // 4096×2160 YUY2 does not fit a 1080p slot.
    assert_eq!(iface.start(0, &yuy2(4096, 2160, 0)), STATUS_INVALID_PARAMETER);
    // At DISPATCH_LEVEL: refused.
    h.m.irql.set(DISPATCH_LEVEL);
    assert_eq!(iface.start(0, &yuy2(640, 480, 0)), STATUS_INVALID_DEVICE_REQUEST);
    assert_eq!(iface.stop(0), STATUS_INVALID_DEVICE_REQUEST);
    h.m.irql.set(0);
    let nv12 = ChannelFormat { fourcc: FOURCC_NV12, ..yuy2(1920, 1080, 0) };
    assert_eq!(iface.start(0, &nv12), STATUS_SUCCESS);
    assert_eq!(iface.slot_ring(0).1.line_pitch, 2048);
    assert_eq!(iface.start(0, &nv12), STATUS_DEVICE_BUSY, "already running");
    let rec = Recorder::new(&h);
    assert_eq!(iface.register(0, Some(&rec)), STATUS_DEVICE_BUSY, "no registration while running");
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(iface.register(0, Some(&rec)), STATUS_SUCCESS);
}

#[test]
fn sg_stride_must_cover_the_line() {
    let h = Harness::sg(1);
    let iface = h.start();
    assert_eq!(iface.start(0, &yuy2(640, 480, 1279)), STATUS_INVALID_PARAMETER);
    assert_eq!(iface.start(0, &yuy2(640, 480, 1280)), STATUS_SUCCESS);
}

#[test]
fn program_frame_checks_its_elements_and_room() {
    let h = Harness::new(caps(true, false, 1), MAX_FRAME);
    h.m.highest_physical.set(0x7FFF_FFFF);
    let config = StartConfig { descriptor_ring_entries: 64, ..StartConfig::DEFAULT };
    h.dev.start(&config).unwrap();
    let iface = h.iface();
    let frame = |base: u64| elements(base, 512);
    assert_eq!(iface.program(0, 1, &frame(0x1000)), STATUS_DEVICE_NOT_READY, "not running");
    iface.start(0, &yuy2(64, 4, 128));
    let e = |address: u64, bytes: u32| SgElement { logical_address: address, byte_count: bytes, alignment: 0 };
    assert_eq!(iface.program(0, 1, &[]), STATUS_INVALID_PARAMETER, "no elements");
    assert_eq!(iface.program(0, 1, &[e(0x1000, 512), e(0x2000, 0)]), STATUS_INVALID_PARAMETER, "empty element");
    assert_eq!(iface.program(0, 1, &[e(0x1000, 65537)]), STATUS_INVALID_PARAMETER, "above MAX_TRANSFER");
    assert_eq!(iface.program(0, 1, &[e(0xFFFF_FF00, 512)]), STATUS_INVALID_PARAMETER, "past 4 GiB on a 32-bit board");
    assert_eq!(iface.program(0, 1, &[e(0x1000, 511)]), STATUS_INVALID_PARAMETER, "smaller than the frame");
    assert_eq!(iface.program(0, 1, &frame(0x1000)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 1, &frame(0x9000)), STATUS_INVALID_PARAMETER, "tag already in flight");
    // 512 bytes in 16-byte elements: 32 descriptors; two fill the 64-entry ring.
    let many: Vec<SgElement> = (0..32).map(|i| e(0x10_0000 + i * 16, 16)).collect();
    assert_eq!(iface.program(0, 2, &many), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 3, &many), STATUS_DEVICE_BUSY, "ring full");
    let too_many: Vec<SgElement> = (0..65).map(|i| e(0x10_0000 + i * 16, 16)).collect();
    assert_eq!(iface.program(0, 4, &too_many), STATUS_INVALID_PARAMETER, "can never fit the ring");
    assert_eq!(h.m.ch_reg(0, capdma_interface::regs::channel::RING_PRODUCER), 33);
}

#[test]
fn in_flight_table_capacity_is_device_busy() {
    let h = Harness::sg(1);
    let iface = h.start();
    iface.start(0, &yuy2(64, 4, 128));
    for tag in 0..32 {
        assert_eq!(iface.program(0, tag, &elements(0x10_0000, 512)), STATUS_SUCCESS);
    }
    assert_eq!(iface.program(0, 32, &elements(0x10_0000, 512)), STATUS_DEVICE_BUSY);
}
