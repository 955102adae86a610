//! Start, stop and allocation behaviour.
use super::fake::Event;
use super::{caps, Harness, MAX_FRAME};
use crate::config::{DmaModeOverride, StartConfig};
use crate::device::DeviceState;
use crate::ports::DeviceDescription;
use capdma_interface::regs::{channel, channel_base, global, Caps, CTRL_RESET};
use capdma_interface::status::{
    STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER,
    STATUS_IO_DEVICE_ERROR,
};
use capdma_interface::table::CAPDMA_BUS_INTERFACE_SIZE_V1;
use capdma_interface::{DmaMode, ModeReason};

/// `MAX_FRAME` rounded up to 4 KiB.
const SLOT_BYTES: usize = 4_149_248;

fn allocs(h: &Harness) -> Vec<(u64, usize)> {
    h.m.events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            Event::Alloc { logical, bytes, .. } => Some((*logical, *bytes)),
            _ => None,
        })
        .collect()
}

#[test]
fn sg_start_allocates_a_queue_and_a_ring_per_channel_and_quiesces_the_board() {
    let h = Harness::sg(2);
    let d = h.dev.start(&StartConfig::DEFAULT).unwrap();
    assert_eq!((d.mode, d.reason), (DmaMode::ScatterGather, ModeReason::BoardScatterGather));
    assert_eq!(h.dev.decision(), Some(d));
    assert_eq!(h.dev.state(), DeviceState::Started);
    assert_eq!(h.dev.channel_count(), 2);
    assert_eq!(
        h.m.events.borrow()[0],
        Event::GetAdapter(DeviceDescription { scatter_gather: true, dma64: true, maximum_length: MAX_FRAME })
    );
    let sizes: Vec<usize> = allocs(&h).iter().map(|a| a.1).collect();
    assert_eq!(sizes, vec![256 * 32, 16384 * 32, 256 * 32, 16384 * 32]);
    let writes = h.m.writes.borrow();
    assert!(writes.contains(&(global::INT_ENABLE, 0)));
    assert!(writes.contains(&(channel_base(0) + channel::CTRL, CTRL_RESET)));
    assert!(writes.contains(&(channel_base(1) + channel::CTRL, CTRL_RESET)));
    assert_eq!(h.dev.slot_count(0), None);
}

#[test]
fn stop_frees_every_buffer_and_puts_the_adapter_last() {
    let h = Harness::cb(3);
    h.dev.start(&StartConfig::DEFAULT).unwrap();
    let allocated = allocs(&h);
    assert_eq!(allocated.len(), 6);
    h.dev.stop();
    assert_eq!(h.dev.state(), DeviceState::Stopped);
    assert_eq!(h.m.live_allocations(), 0);
    let events = h.m.events.borrow().clone();
    let put = events.iter().position(|e| matches!(e, Event::PutAdapter(_))).expect("adapter put");
    assert_eq!(put, events.len() - 1, "PutDmaAdapter must be the last call: {events:?}");
    let frees = events.iter().filter(|e| matches!(e, Event::Free { .. })).count();
    assert_eq!(frees, 6);
    assert!(events[..put].iter().filter(|e| matches!(e, Event::Free { .. })).count() == 6);
    // Idempotent, and the device starts again.
    h.dev.stop();
    assert_eq!(h.m.events.borrow().len(), events.len());
    assert!(h.dev.start(&StartConfig::DEFAULT).is_ok());
    h.dev.stop();
    assert_eq!(h.m.live_allocations(), 0);
}

#[test]
fn short_contiguous_memory_gets_fewer_slots() {
    let h = Harness::cb(2);
    h.m.max_alloc.set(3 * SLOT_BYTES);
    let d = h.dev.start(&StartConfig::DEFAULT).unwrap();
    assert_eq!(d.mode, DmaMode::CommonBuffer);
    assert_eq!(h.dev.slot_count(0), Some(3));
    assert_eq!(h.dev.slot_count(1), Some(3));
    let failed = h.m.events.borrow().iter().filter(|e| matches!(e, Event::AllocFailed { .. })).count();
    assert_eq!(failed, 2, "one failed 4-slot attempt per channel");
    let iface = h.iface();
    assert_eq!(iface.config(1).1.slot_count, 3);
    assert_eq!(iface.config(1).1.slot_bytes as usize, SLOT_BYTES);
    iface.dereference();
    h.dev.stop();
    assert_eq!(h.m.live_allocations(), 0);
}

#[test]
fn no_memory_even_for_two_slots_fails_cleanly() {
    let h = Harness::cb(2);
    h.m.max_alloc.set(2 * SLOT_BYTES - 1);
    assert_eq!(h.dev.start(&StartConfig::DEFAULT), Err(STATUS_INSUFFICIENT_RESOURCES));
    assert_eq!(h.m.live_allocations(), 0, "the completion queue must be freed");
    let events = h.m.events.borrow().clone();
    assert!(matches!(events.last(), Some(Event::PutAdapter(_))), "{events:?}");
    let tried: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::AllocFailed { bytes } => Some(*bytes),
            _ => None,
        })
        .collect();
    assert_eq!(tried, vec![4 * SLOT_BYTES, 3 * SLOT_BYTES, 2 * SLOT_BYTES]);
    assert_eq!(h.dev.state(), DeviceState::Stopped);
    let mut table = std::mem::MaybeUninit::zeroed();
    assert_eq!(h.dev.query_interface(CAPDMA_BUS_INTERFACE_SIZE_V1, 1, table.as_mut_ptr()), STATUS_DEVICE_NOT_READY);
}

#[test]
fn failure_on_a_later_channel_frees_the_earlier_ones() {
    let h = Harness::sg(2);
    // Channel 0's queue and ring, channel 1's queue; its ring fails.
    h.m.allocs_left.set(Some(3));
    assert_eq!(h.dev.start(&StartConfig::DEFAULT), Err(STATUS_INSUFFICIENT_RESOURCES));
    assert_eq!(h.m.live_allocations(), 0);
    assert!(matches!(h.m.events.borrow().last(), Some(Event::PutAdapter(_))));
    // Memory is back: the start succeeds.
    h.m.allocs_left.set(None);
    assert!(h.dev.start(&StartConfig::DEFAULT).is_ok());
}

#[test]
fn a_bad_board_fails_start_with_io_device_error_before_any_adapter() {
    type Spoil = fn(&Harness);
    let cases: [(&str, Spoil); 6] = [
        ("wrong id", |h| h.m.set_reg(global::ID, 0x1234_5678)),
        ("gone", |h| h.m.gone.set(true)),
        ("no channels", |h| h.m.set_reg(global::CAPS, caps(true, true, 0).encode())),
        ("nine channels", |h| h.m.set_reg(global::CAPS, caps(true, true, 9).encode())),
        ("no frame size", |h| h.m.set_reg(global::MAX_FRAME_BYTES, 0)),
        ("S/G without transfer size", |h| h.m.set_reg(global::MAX_TRANSFER, 0)),
    ];
    for (name, spoil) in cases {
        let h = Harness::sg(2);
        spoil(&h);
        assert_eq!(h.dev.start(&StartConfig::DEFAULT), Err(STATUS_IO_DEVICE_ERROR), "{name}");
        assert!(h.m.events.borrow().is_empty(), "{name}: no adapter may be taken");
        assert_eq!(h.dev.state(), DeviceState::Stopped, "{name}");
    }
}

#[test]
fn thirty_two_bit_board_forced_to_sg_without_map_registers_regets_a_cb_adapter() {
    let h = Harness::new(caps(true, false, 1), MAX_FRAME);
    h.m.highest_physical.set(0x3_FFFF_FFFF);
    h.m.map_registers.set(0);
    let config = StartConfig { dma_mode: DmaModeOverride::ScatterGather, ..StartConfig::DEFAULT };
    let d = h.dev.start(&config).unwrap();
    assert_eq!((d.mode, d.reason), (DmaMode::CommonBuffer, ModeReason::AddressLimitNoMapRegisters));
    let events = h.m.events.borrow().clone();
    assert_eq!(
        events[..3],
        [
            Event::GetAdapter(DeviceDescription { scatter_gather: true, dma64: false, maximum_length: MAX_FRAME }),
            Event::PutAdapter(1),
            Event::GetAdapter(DeviceDescription { scatter_gather: false, dma64: false, maximum_length: MAX_FRAME }),
        ]
    );
    // Everything was allocated from the second adapter, below 4 GiB.
    for e in &events[3..] {
        assert!(matches!(e, Event::Alloc { adapter: 2, logical, bytes } if logical + *bytes as u64 <= 1 << 32), "{e:?}");
    }
}

#[test]
fn thirty_two_bit_board_with_map_registers_keeps_forced_sg_and_auto_prefers_cb() {
    let h = Harness::new(caps(true, false, 1), MAX_FRAME);
    h.m.highest_physical.set(0x3_FFFF_FFFF);
    // Enough map registers to bounce one whole frame.
    h.m.map_registers.set(crate::mode::map_registers_per_frame(MAX_FRAME));
    let forced = StartConfig { dma_mode: DmaModeOverride::ScatterGather, ..StartConfig::DEFAULT };
    let d = h.dev.start(&forced).unwrap();
    assert_eq!((d.mode, d.reason), (DmaMode::ScatterGather, ModeReason::OverrideScatterGather));
    h.dev.stop();
    h.m.events.borrow_mut().clear();
    let d = h.dev.start(&StartConfig::DEFAULT).unwrap();
    assert_eq!((d.mode, d.reason), (DmaMode::CommonBuffer, ModeReason::AddressLimitPreferCommonBuffer));
    let gets = h.m.events.borrow().iter().filter(|e| matches!(e, Event::GetAdapter(_))).count();
    assert_eq!(gets, 1);
}

#[test]
fn large_board_alignment_is_honoured_inside_an_over_allocation() {
    let h = Harness::new(Caps { scatter_gather: false, address_64: true, channels: 1, alignment: 65536 }, 100_000);
    h.dev.start(&StartConfig::DEFAULT).unwrap();
    let iface = h.iface();
    let (_, ring) = iface.slot_ring(0);
    assert_eq!(ring.base_logical % 65536, 0);
    assert_eq!(ring.slot_bytes, 131_072, "100000 rounded up to the 64 KiB alignment");
    let sizes: Vec<usize> = allocs(&h).iter().map(|a| a.1).collect();
    assert_eq!(sizes, vec![256 * 32 + 61_440, 4 * 131_072 + 61_440]);
    iface.dereference();
    h.dev.stop();
    assert_eq!(h.m.live_allocations(), 0);
}

#[test]
fn start_refuses_bad_config_wrong_irql_and_double_start() {
    let h = Harness::sg(1);
    let bad = StartConfig { slot_count: 1, ..StartConfig::DEFAULT };
    assert_eq!(h.dev.start(&bad), Err(STATUS_INVALID_PARAMETER));
    h.m.irql.set(2);
    assert_eq!(h.dev.start(&StartConfig::DEFAULT), Err(STATUS_INVALID_DEVICE_REQUEST));
    h.m.irql.set(0);
    assert!(h.m.events.borrow().is_empty());
    h.dev.start(&StartConfig::DEFAULT).unwrap();
    assert_eq!(h.dev.start(&StartConfig::DEFAULT), Err(STATUS_INVALID_DEVICE_REQUEST));
}

#[test]
fn refused_adapter_fails_start() {
    let h = Harness::sg(1);
    h.m.refuse_adapter.set(true);
    assert_eq!(h.dev.start(&StartConfig::DEFAULT), Err(STATUS_INSUFFICIENT_RESOURCES));
    assert_eq!(h.dev.state(), DeviceState::Stopped);
}

#[test]
fn thirty_two_bit_board_with_too_few_map_registers_for_a_frame_falls_back_to_cb() {
    let h = Harness::new(caps(true, false, 1), MAX_FRAME);
    h.m.highest_physical.set(0x3_FFFF_FFFF);
    h.m.map_registers.set(crate::mode::map_registers_per_frame(MAX_FRAME) - 1);
    let forced = StartConfig { dma_mode: DmaModeOverride::ScatterGather, ..StartConfig::DEFAULT };
    let d = h.dev.start(&forced).unwrap();
    assert_eq!((d.mode, d.reason), (DmaMode::CommonBuffer, ModeReason::AddressLimitNoMapRegisters));
}

/// What the teardown port saw at each glue step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    step: &'static str,
    /// Common buffers still allocated.
    live: usize,
    /// The adapter was put already.
    put: bool,
    /// Some channel's `CTRL` still has `CTRL_RUN`.
    running: bool,
}

/// A teardown port that records each step with the fake machine's state.
struct RecordingPort<'a> {
    h: &'a Harness,
    seen: std::cell::RefCell<Vec<Seen>>,
}

impl RecordingPort<'_> {
    fn note(&self, step: &'static str) {
        let m = &self.h.m;
        let put = m.events.borrow().iter().any(|e| matches!(e, Event::PutAdapter(_)));
        let running = (0..2).any(|ch| m.ch_reg(ch, channel::CTRL) & capdma_interface::regs::CTRL_RUN != 0);
        self.seen.borrow_mut().push(Seen { step, live: m.live_allocations(), put, running });
    }
}

impl crate::teardown::TeardownPort for RecordingPort<'_> {
    fn disconnect_interrupt(&self) {
        self.note("disconnect");
    }
    fn cancel_timer_and_flush_dpcs(&self) {
        self.note("flush");
    }
    fn unmap_registers(&self) {
        self.note("unmap");
    }
}

#[test]
fn release_hardware_runs_the_teardown_in_the_design_order() {
    use crate::pnp::state::Release;
    let h = Harness::cb(2);
    let iface = h.start();
    assert_eq!(iface.start(0, &super::yuy2(64, 16, 128)), capdma_interface::status::STATUS_SUCCESS);
    assert_ne!(h.m.ch_reg(0, channel::CTRL) & capdma_interface::regs::CTRL_RUN, 0, "channel 0 runs");
    iface.dereference();

    // Surprise removal: hardware only; the buffers and the adapter stay.
    h.dev.surprise_remove();
    let port = RecordingPort { h: &h, seen: std::cell::RefCell::new(Vec::new()) };
    assert_eq!(h.dev.release_hardware(Release::Hardware, &port), 0);
    let seen = port.seen.take();
    assert_eq!(seen.iter().map(|s| s.step).collect::<Vec<_>>(), ["disconnect", "flush", "unmap"]);
    assert!(seen.iter().all(|s| s.live == 4 && !s.put), "nothing freed by a surprise removal: {seen:?}");

    // The removal: engines stopped before the interrupt goes, buffers freed
    // and the adapter put after the DPCs are flushed, BAR0 unmapped last.
    let h = Harness::cb(2);
    let iface = h.start();
    assert_eq!(iface.start(0, &super::yuy2(64, 16, 128)), capdma_interface::status::STATUS_SUCCESS);
    iface.dereference();
    let port = RecordingPort { h: &h, seen: std::cell::RefCell::new(Vec::new()) };
    assert_eq!(h.dev.release_hardware(Release::Everything, &port), 0, "no reference leaked");
    let seen = port.seen.take();
    assert_eq!(
        seen,
        [
            Seen { step: "disconnect", live: 4, put: false, running: false },
            Seen { step: "flush", live: 4, put: false, running: false },
            Seen { step: "unmap", live: 0, put: true, running: false },
        ]
    );
    assert_eq!(h.dev.state(), DeviceState::Stopped);
    // Idempotent: a second pass releases nothing more and still calls the glue steps.
    let port = RecordingPort { h: &h, seen: std::cell::RefCell::new(Vec::new()) };
    assert_eq!(h.dev.release_hardware(Release::Everything, &port), 0);
    assert_eq!(port.seen.take().len(), 3);
    let port = RecordingPort { h: &h, seen: std::cell::RefCell::new(Vec::new()) };
    assert_eq!(h.dev.release_hardware(Release::Nothing, &port), 0);
    assert!(port.seen.take().is_empty());
}

/// A child that keeps its interface reference past its own removal (its
/// bug): the bus's removal goes ahead, frees everything, reports the leak,
/// and the late caller gets an error, not a crash.
#[test]
fn removal_with_a_leaked_child_reference_tears_down_and_reports_it() {
    use crate::pnp::state::Release;
    let h = Harness::sg(1);
    let iface = h.start();
    let port = RecordingPort { h: &h, seen: std::cell::RefCell::new(Vec::new()) };
    assert_eq!(h.dev.release_hardware(Release::Everything, &port), 1, "one reference leaked");
    assert_eq!(h.m.live_allocations(), 0);
    assert!(h.m.events.borrow().iter().any(|e| matches!(e, Event::PutAdapter(_))));
    assert_eq!(iface.config(0).0, STATUS_DEVICE_NOT_READY, "the late caller is refused");
    assert_eq!(iface.stop(0), STATUS_DEVICE_NOT_READY);
    iface.dereference();
    assert_eq!(h.dev.reference_count(), 0);
}
