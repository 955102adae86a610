//! Tests of the capture pin against the fake bus table and fake KS queue.
#![allow(clippy::too_many_lines)]

use crate::bus_client::BusClient;
use crate::copy::VectorUnit;
use crate::device::device_start;
use crate::format::{build_data_format, VideoFormat};
use crate::pin::{completion_thunk, CapturePin};
use crate::state::KsState;
use super::fake::{slot_byte, FakeBus, FakePort, Ptr};
use super::yuy2;
use capdma_interface::format::PixelFormat;
use capdma_interface::status::{
    STATUS_CANCELLED, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_IO_DEVICE_ERROR, STATUS_PENDING,
    STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, CompletionKind};
use core::pin::Pin;
use zerocopy::IntoBytes;

pub(super) type TestPin<'a> = Pin<Box<CapturePin<&'a FakePort>>>;

pub(super) fn make<'a>(bus: &'a FakeBus, port: &'a FakePort) -> TestPin<'a> {
    // SAFETY: the fake's table is valid while `bus` lives, and every test
    // drops the pin before the bus.
    let client = unsafe { BusClient::from_query(&bus.table(), 0) }.unwrap();
    let setup = device_start(&client).unwrap();
    Box::pin(CapturePin::new(port, client.channel(), &setup, VectorUnit::Scalar))
}

pub(super) fn set_format(pin: &TestPin<'_>, format: &VideoFormat) {
    assert_eq!(pin.set_data_format(build_data_format(format).as_bytes()), Ok(*format));
}

pub(super) fn completion_of(port: &FakePort, frame: usize) -> Option<crate::ports::FrameCompletion> {
    port.frames.borrow()[frame].completion
}

fn frame_completion(tag: u32, status: i32) -> Completion {
    Completion {
        channel: 0,
        kind: CompletionKind::Frame as u32,
        tag,
        bytes_written: 16,
        status,
        frame_number: 0,
        timestamp: 0,
    }
}

// ---- state machine -------------------------------------------------------

#[test]
fn acquire_needs_a_format() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = make(&bus, &port);
    assert_eq!(pin.as_ref().set_state(KsState::Acquire), STATUS_INVALID_DEVICE_REQUEST);
    assert_eq!(pin.state(), KsState::Stop);
    assert!(bus.register_calls.borrow().is_empty());
}

#[test]
fn states_walk_one_step_at_a_time_and_reject_jumps() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = make(&bus, &port);
    let format = yuy2(64, 16);
    set_format(&pin, &format);
    assert_eq!(pin.as_ref().transition(KsState::Pause), STATUS_INVALID_DEVICE_REQUEST, "jump over ACQUIRE");
    assert_eq!(pin.as_ref().transition(KsState::Acquire), STATUS_SUCCESS);
    assert_eq!(*bus.register_calls.borrow(), [true]);
    assert_eq!(
        pin.as_ref().set_device_state(KsState::Pause, KsState::Stop),
        STATUS_INVALID_DEVICE_REQUEST,
        "FromState is not the pin's"
    );
    assert_eq!(pin.as_ref().set_device_state(KsState::Pause, KsState::Acquire), STATUS_SUCCESS);
    assert_eq!(
        pin.set_data_format(build_data_format(&format).as_bytes()),
        Err(STATUS_INVALID_DEVICE_REQUEST),
        "format only in STOP"
    );
    assert_eq!(pin.process(), STATUS_PENDING, "no Process before RUN");
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    assert_eq!(*bus.started.borrow(), [format.channel_format()]);
    assert_eq!(bus.started.borrow()[0].stride, 128);
    assert!(port.attempts.get() >= 1, "RUN attempts processing for frames already queued");
    // RUN -> STOP walks RUN -> PAUSE -> ACQUIRE -> STOP.
    assert_eq!(pin.as_ref().set_state(KsState::Stop), STATUS_SUCCESS);
    assert_eq!(pin.state(), KsState::Stop);
    assert_eq!(bus.stops.get(), 1);
    assert_eq!(*bus.register_calls.borrow(), [true, false]);
    assert!(bus.callback.get().is_none());
    assert_eq!(port.mutex_acquired.get(), 1);
    assert!(!port.mutex_held.get());
    assert!(pin.set_data_format(build_data_format(&yuy2(32, 8)).as_bytes()).is_ok());
    // STOP -> RUN in one request walks up.
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    assert_eq!(bus.started.borrow().len(), 2);
}

/// `AVStrMiniPinSetDataFormat` of a created pin edits the pin's descriptor
/// and framing (`_KsEdit`): when an edit fails, KS keeps the old
/// connection format, so the pin must too, and the next `KSSTATE_RUN`
/// starts the channel in the old format. (Committing the format before the
/// edits, as the glue once did, fails here.)
#[test]
fn a_format_change_whose_edits_fail_keeps_the_old_format() {
    for bus in [FakeBus::scatter_gather(), FakeBus::common_buffer(4, 1 << 20)] {
        let port = FakePort::default();
        let pin = make(&bus, &port);
        let (old, new) = (yuy2(64, 16), yuy2(32, 8));
        set_format(&pin, &old);
        let mut edited = None;
        let refused = pin.change_data_format(build_data_format(&new).as_bytes(), |f| {
            edited = Some(*f);
            Err(STATUS_INSUFFICIENT_RESOURCES)
        });
        assert_eq!(refused, Err(STATUS_INSUFFICIENT_RESOURCES), "the edit's status");
        assert_eq!(edited, Some(new), "the edits are made for the new format");
        assert_eq!(pin.format(), Some(old), "a refused change commits nothing");
        assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
        assert_eq!(bus.started.borrow().last(), Some(&old.channel_format()), "the channel runs in the old format");
        assert_eq!(pin.as_ref().set_state(KsState::Stop), STATUS_SUCCESS);
        // Refused before any edit: a format the channel cannot take, or a
        // change outside KSSTATE_STOP; the edits never run.
        let huge = VideoFormat::new(PixelFormat::Yuy2, 4096, 2160, 333_333).unwrap();
        let mut calls = 0;
        let mut count = |_: &VideoFormat| {
            calls += 1;
            Ok(())
        };
        if pin.mode() == capdma_interface::mode::DmaMode::CommonBuffer {
            assert_eq!(pin.change_data_format(build_data_format(&huge).as_bytes(), &mut count), Err(STATUS_INVALID_PARAMETER));
        }
        assert_eq!(pin.as_ref().set_state(KsState::Pause), STATUS_SUCCESS);
        assert_eq!(pin.change_data_format(build_data_format(&new).as_bytes(), &mut count), Err(STATUS_INVALID_DEVICE_REQUEST));
        assert_eq!(pin.as_ref().set_state(KsState::Stop), STATUS_SUCCESS);
        assert_eq!(calls, 0);
        // Edits that succeed: the new format is the pin's, and the channel's.
        assert_eq!(pin.change_data_format(build_data_format(&new).as_bytes(), |_| Ok(())), Ok(new));
        assert_eq!(pin.format(), Some(new));
        assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
        assert_eq!(bus.started.borrow().last(), Some(&new.channel_format()));
        drop(pin);
    }
}

#[test]
fn a_failing_start_leaves_the_pin_paused() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = make(&bus, &port);
    set_format(&pin, &yuy2(64, 16));
    bus.start_status.set(STATUS_INVALID_PARAMETER);
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_INVALID_PARAMETER);
    assert_eq!(pin.state(), KsState::Pause);
    bus.start_status.set(STATUS_SUCCESS);
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
}

#[test]
fn dropping_a_running_pin_stops_and_unregisters() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    port.push_frame(2048, 700);
    {
        let pin = make(&bus, &port);
        set_format(&pin, &yuy2(64, 16));
        assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
        assert_eq!(pin.process(), STATUS_SUCCESS);
        assert_eq!(port.live_clones(), 1);
    }
    assert_eq!(bus.stops.get(), 1);
    assert!(bus.callback.get().is_none());
    assert_eq!(port.live_clones(), 0, "the cancelled frame's clone is deleted");
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(0));
}

#[test]
fn the_thunk_ignores_null_pointers_and_delivers_through_a_live_context() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = sg_running(&bus, &port, 1);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(port.live_clones(), 1);
    let context = core::ptr::from_ref::<CapturePin<&FakePort>>(&pin).cast_mut().cast::<core::ffi::c_void>();
    let tag = bus.posted.borrow().front().map(|p| p.tag).unwrap();
    let good = Completion { bytes_written: 2048, ..frame_completion(tag, STATUS_SUCCESS) };
    let before = pin.stats();
    // SAFETY: null pointers are documented to be ignored.
    unsafe { completion_thunk::<&FakePort>(core::ptr::null_mut(), &raw const good) };
    // SAFETY: as above; the context is the live, pinned pin.
    unsafe { completion_thunk::<&FakePort>(context, core::ptr::null()) };
    assert_eq!(pin.stats(), before, "a null pointer changes nothing");
    assert_eq!(port.live_clones(), 1);
    // SAFETY: the context is the live, pinned pin; the completion is valid for the call.
    unsafe { completion_thunk::<&FakePort>(context, &raw const good) };
    assert_eq!(port.live_clones(), 0, "the frame completed through the thunk");
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(2048));
}

// ---- scatter/gather -------------------------------------------------------

/// `StopChannel` answering `STATUS_PENDING` (the engine's reset has not
/// completed, the board may still write the posted frames): the pin keeps
/// their clones until the bus hands them back, never completes them early.
#[test]
fn frames_the_bus_holds_at_stop_keep_their_clones_until_they_come_back() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = sg_running(&bus, &port, 2);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(port.live_clones(), 2);
    bus.hold_on_stop.set(true);
    assert_eq!(pin.as_ref().set_state(KsState::Pause), STATUS_SUCCESS);
    assert_eq!(port.live_clones(), 2, "held by the bus: not handed back");
    assert_eq!(completion_of(&port, 0), None);
    // The reset completes: the bus hands them back, cancelled.
    while bus.complete_oldest(0, STATUS_CANCELLED, 0).is_some() {}
    assert_eq!(port.live_clones(), 0);
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(0));
}

fn sg_running<'a>(bus: &'a FakeBus, port: &'a FakePort, frames: usize) -> TestPin<'a> {
    for _ in 0..frames {
        port.push_frame(2048, 700);
    }
    let pin = make(bus, port);
    set_format(&pin, &yuy2(64, 16)); // 2048 bytes
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    pin
}

#[test]
fn sg_process_programs_one_frame_per_clone_and_completion_deletes_it() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = sg_running(&bus, &port, 3);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    {
        let posted = bus.posted.borrow();
        assert_eq!(posted.len(), 3);
        for (i, p) in posted.iter().enumerate() {
            assert_eq!(p.elements, port.frames.borrow()[i].mappings, "frame {i}: the clone's mappings");
            assert_eq!(p.elements.len(), 3);
        }
        assert!(posted[0].tag != posted[1].tag && posted[1].tag != posted[2].tag);
    }
    let s = pin.stats();
    assert_eq!((s.frames_programmed, s.sg_elements_programmed), (3, 9));
    assert_eq!((port.live_clones(), port.leading_index()), (3, 3));
    assert!(!port.locked.get());
    assert!(!port.frames.borrow()[0].released, "the clone holds the frame");

    let attempts = port.attempts.get();
    bus.complete_oldest(2048, STATUS_SUCCESS, 5).unwrap();
    let c = completion_of(&port, 0).unwrap();
    assert_eq!((c.data_used, c.presentation_time, c.duration, c.picture_number), (2048, 5000, 333_333, 5));
    assert_eq!((c.drop_count, c.discontinuity), (0, false));
    assert_eq!((port.live_clones(), port.deleted.get()), (2, 1));
    assert!(port.frames.borrow()[0].released);
    assert_eq!(port.attempts.get(), attempts + 1);

    // An error completion is not delivered as good.
    bus.complete_oldest(2048, STATUS_IO_DEVICE_ERROR, 6).unwrap();
    assert_eq!(completion_of(&port, 1).map(|c| c.data_used), Some(0));
    assert!(port.frames.borrow()[1].released);
    assert_eq!((pin.stats().frames_completed, pin.stats().frames_dropped), (1, 1));

    // Board frames 7 and 8 were lost: counted, and the next frame says so.
    bus.complete_oldest(2048, STATUS_SUCCESS, 9).unwrap();
    let c = completion_of(&port, 2).unwrap();
    assert_eq!((c.data_used, c.drop_count, c.discontinuity), (2048, 3, true));
    let d = pin.dropped_frames_current();
    assert_eq!((d.picture_number, d.drop_count, d.average_frame_size), (5, 3, 2048));
    assert_eq!(pin.stats().board_dropped, 2);
}

#[test]
fn with_a_reference_clock_frames_carry_its_stream_time_and_the_clock_is_released_at_stop() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    port.clock.set(Some(7_000_000));
    let pin = sg_running(&bus, &port, 2);
    assert_eq!(port.clock_references.get(), 1, "taken once, at STOP -> ACQUIRE");
    assert_eq!(pin.process(), STATUS_SUCCESS);
    bus.complete_oldest(2048, STATUS_SUCCESS, 5).unwrap();
    let c = completion_of(&port, 0).unwrap();
    assert_eq!((c.data_used, c.presentation_time), (2048, 7_000_000), "the clock's time, not the board's (5000)");
    port.clock.set(Some(7_333_333));
    bus.complete_oldest(2048, STATUS_SUCCESS, 6).unwrap();
    assert_eq!(completion_of(&port, 1).map(|c| c.presentation_time), Some(7_333_333));
    // PAUSE and back keeps it; STOP releases it.
    assert_eq!(pin.as_ref().set_state(KsState::Pause), STATUS_SUCCESS);
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    assert_eq!(port.clock_references.get(), 1);
    assert_eq!(pin.as_ref().set_state(KsState::Stop), STATUS_SUCCESS);
    assert_eq!(port.clock_references.get(), 0, "released as the pin stopped");
    drop(pin);
    assert_eq!(port.clock_references.get(), 0);

    // Without a clock: the board's capture time.
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = sg_running(&bus, &port, 1);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    bus.complete_oldest(2048, STATUS_SUCCESS, 5).unwrap();
    assert_eq!(completion_of(&port, 0).map(|c| c.presentation_time), Some(5000));
    assert_eq!(port.clock_references.get(), 0);
}

#[test]
fn a_pin_dropped_while_running_releases_its_clock() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    port.clock.set(Some(1));
    let pin = sg_running(&bus, &port, 0);
    assert_eq!(port.clock_references.get(), 1);
    drop(pin);
    assert_eq!(port.clock_references.get(), 0, "Drop walks the pin to STOP");
}

#[test]
fn sg_unknown_tags_and_kinds_are_counted_and_ignored() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = sg_running(&bus, &port, 1);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    let tag = bus.posted.borrow()[0].tag;
    bus.deliver(frame_completion(tag ^ 0x100, STATUS_SUCCESS));
    bus.deliver(frame_completion(31, STATUS_SUCCESS));
    bus.deliver(Completion { kind: CompletionKind::Slot as u32, ..frame_completion(tag, STATUS_SUCCESS) });
    bus.deliver(Completion { channel: 1, ..frame_completion(tag, STATUS_SUCCESS) });
    assert_eq!(pin.stats().bad_completions, 4);
    assert_eq!(port.live_clones(), 1);
    // Beyond the frame: not good.
    bus.complete_oldest(4096, STATUS_SUCCESS, 1).unwrap();
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(0));
    assert_eq!((pin.stats().bad_completions, pin.stats().frames_dropped), (5, 1));
    // Completing the same tag again is unknown now.
    bus.deliver(frame_completion(tag, STATUS_SUCCESS));
    assert_eq!(pin.stats().bad_completions, 6);
}

#[test]
fn sg_full_ring_pends_and_completion_resumes() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    bus.ring_capacity.set(2);
    let pin = sg_running(&bus, &port, 3);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(bus.posted.borrow().len(), 2);
    assert_eq!((port.live_clones(), port.deleted.get()), (2, 1), "the refused frame's clone is deleted");
    assert_eq!(port.leading_index(), 2);
    assert!(!port.locked.get(), "leading edge unlocked");
    let attempts = port.attempts.get();
    bus.complete_oldest(2048, STATUS_SUCCESS, 0).unwrap();
    assert_eq!(port.attempts.get(), attempts + 1);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(bus.posted.borrow().len(), 2);
    assert_eq!(port.leading_index(), 3);
    assert_eq!(pin.stats().frames_programmed, 3);
}

#[test]
fn sg_a_frame_the_ring_can_never_hold_is_dropped() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    bus.ring_capacity.set(0);
    let pin = sg_running(&bus, &port, 2);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    for i in 0..2 {
        assert_eq!(completion_of(&port, i).map(|c| c.data_used), Some(0));
        assert!(port.frames.borrow()[i].released);
    }
    assert_eq!((pin.stats().frames_dropped, port.live_clones()), (2, 0));
}

#[test]
fn sg_refused_elements_drop_the_frame() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    bus.program_error.set(Some(STATUS_INVALID_PARAMETER));
    let pin = sg_running(&bus, &port, 2);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!((pin.stats().frames_dropped, port.live_clones(), port.deleted.get()), (2, 0, 2));
}

#[test]
fn sg_not_running_channel_keeps_the_frame_queued() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = sg_running(&bus, &port, 1);
    bus.running.set(false);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!((port.leading_index(), port.live_clones()), (0, 0));
    assert!(!port.locked.get());
    assert_eq!(completion_of(&port, 0), None);
}

#[test]
fn sg_clone_table_bounds_frames_in_flight() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    bus.ring_capacity.set(64);
    for _ in 0..33 {
        port.push_frame(256, 256);
    }
    let pin = make(&bus, &port);
    set_format(&pin, &yuy2(8, 16)); // 256 bytes
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(bus.posted.borrow().len(), crate::clones::MAX_CLONES);
    assert_eq!(port.leading_index(), 32);
    bus.complete_oldest(256, STATUS_SUCCESS, 0).unwrap();
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(port.leading_index(), 33);
}

#[test]
fn sg_small_frames_and_failed_clones() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    port.push_frame(1024, 700); // smaller than the 2048-byte image
    let pin = sg_running(&bus, &port, 2);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(0));
    assert_eq!(bus.posted.borrow().len(), 2);
    assert_eq!(pin.stats().frames_dropped, 1);
    // A clone failure with frames in flight waits for a completion ...
    port.push_frame(2048, 700);
    port.fail_clone.set(true);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(port.leading_index(), 3);
    // ... and with none in flight drops the frame rather than stall.
    bus.complete_oldest(2048, STATUS_SUCCESS, 0).unwrap();
    bus.complete_oldest(2048, STATUS_SUCCESS, 1).unwrap();
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(completion_of(&port, 3).map(|c| c.data_used), Some(0));
    assert_eq!(pin.stats().frames_dropped, 2);
}

#[test]
fn sg_stop_cancels_frames_in_flight() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    let pin = sg_running(&bus, &port, 2);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(pin.as_ref().set_state(KsState::Pause), STATUS_SUCCESS);
    assert_eq!(port.live_clones(), 0);
    for i in 0..2 {
        assert_eq!(completion_of(&port, i).map(|c| c.data_used), Some(0));
        assert!(port.frames.borrow()[i].released);
    }
    let s = pin.stats();
    assert_eq!((s.frames_cancelled, s.frames_dropped, s.frames_completed), (2, 0, 0));
    assert_eq!(pin.dropped_frames_current().drop_count, 0, "a stop is not a drop");
}

// ---- common buffer --------------------------------------------------------

/// YUY2 100x4 at a 232-byte stride: lines of 200 bytes, slot pitch 256.
fn cb_format() -> VideoFormat {
    VideoFormat::with_stride(PixelFormat::Yuy2, 100, 4, 232, 333_333).unwrap()
}

fn cb_running<'a>(bus: &'a FakeBus, port: &'a FakePort, frames: usize) -> TestPin<'a> {
    port.byte_mode.set(true);
    for _ in 0..frames {
        port.push_frame(928, 4096);
    }
    let pin = make(bus, port);
    set_format(&pin, &cb_format());
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    assert_eq!(bus.ring.get().line_pitch, 256);
    pin
}

fn assert_copied(port: &FakePort, frame: usize, seed: u8) {
    let frames = port.frames.borrow();
    let data = &frames[frame].data;
    for l in 0..4 {
        for i in 0..232 {
            let want = if i < 200 { slot_byte(seed, l, i) } else { 0xEE };
            assert_eq!(data[l * 232 + i], want, "frame {frame} line {l} byte {i}");
        }
    }
}

#[test]
fn cb_process_copies_with_stride_drops_without_frame_and_returns_in_order() {
    let (bus, port) = (FakeBus::common_buffer(4, 64 * 1024), FakePort::default());
    let pin = cb_running(&bus, &port, 2);
    let attempts = port.attempts.get();
    bus.fill_slot(0, 4, 200, 1, STATUS_SUCCESS, 0);
    bus.fill_slot(1, 4, 200, 2, STATUS_SUCCESS, 1);
    bus.fill_slot(2, 4, 200, 3, STATUS_SUCCESS, 2);
    assert_eq!(port.attempts.get(), attempts + 3, "each completion attempts processing");
    assert!(bus.returned.borrow().is_empty(), "slots are returned by Process, not the DPC");
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_copied(&port, 0, 1);
    assert_copied(&port, 1, 2);
    for (i, n) in [(0, 0), (1, 1)] {
        let c = completion_of(&port, i).unwrap();
        assert_eq!((c.data_used, c.picture_number, c.presentation_time), (928, n, n * 1000));
        assert!(port.frames.borrow()[i].released);
    }
    assert_eq!(*bus.returned.borrow(), [0, 1, 2]);
    let s = pin.stats();
    assert_eq!((s.frames_completed, s.frames_dropped, s.bytes_copied), (2, 1, 1600));
    assert!(!port.locked.get());
}

#[test]
fn the_pin_reports_start_frames_drops_by_board_and_driver_and_stop() {
    use crate::ports::PinEvent;
    let (bus, port) = (FakeBus::common_buffer(4, 64 * 1024), FakePort::default());
    let pin = cb_running(&bus, &port, 2);
    assert_eq!(*port.reports.borrow(), [PinEvent::ChannelStarted { format: cb_format().channel_format() }]);
    port.reports.borrow_mut().clear();
    // Frame numbers 0, 1, 3: the board never delivered 2; the application
    // has two buffers, so the third slot is dropped by the driver.
    bus.fill_slot(0, 4, 200, 1, STATUS_SUCCESS, 0);
    bus.fill_slot(1, 4, 200, 2, STATUS_SUCCESS, 1);
    bus.fill_slot(2, 4, 200, 3, STATUS_SUCCESS, 3);
    assert_eq!(*port.reports.borrow(), [PinEvent::DroppedByBoard { frames: 1 }], "the gap is seen on completion");
    port.reports.borrow_mut().clear();
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(
        *port.reports.borrow(),
        [
            PinEvent::FrameDelivered { picture_number: 0, bytes: 928 },
            PinEvent::FrameDelivered { picture_number: 1, bytes: 928 },
            PinEvent::DroppedByDriver { total: 1 },
        ]
    );
    port.reports.borrow_mut().clear();
    assert_eq!(pin.as_ref().set_state(KsState::Pause), STATUS_SUCCESS);
    assert_eq!(*port.reports.borrow(), [PinEvent::ChannelStopped]);
}

#[test]
fn cb_error_slots_are_returned_and_not_delivered() {
    let (bus, port) = (FakeBus::common_buffer(4, 64 * 1024), FakePort::default());
    let pin = cb_running(&bus, &port, 1);
    bus.fill_slot(0, 4, 200, 9, STATUS_IO_DEVICE_ERROR, 0);
    bus.fill_slot(1, 4, 200, 5, STATUS_SUCCESS, 1);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_copied(&port, 0, 5);
    assert_eq!(*bus.returned.borrow(), [0, 1]);
    let s = pin.stats();
    assert_eq!((s.frames_completed, s.frames_dropped), (1, 1));
}

#[test]
fn cb_small_frames_are_ejected_empty() {
    let (bus, port) = (FakeBus::common_buffer(4, 64 * 1024), FakePort::default());
    port.byte_mode.set(true);
    port.push_frame(500, 4096);
    let pin = cb_running(&bus, &port, 1);
    bus.fill_slot(0, 4, 200, 1, STATUS_SUCCESS, 0);
    bus.fill_slot(1, 4, 200, 2, STATUS_SUCCESS, 1);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(0));
    assert_copied(&port, 1, 2);
    let c = completion_of(&port, 1).unwrap();
    assert!(c.discontinuity, "a frame was dropped before this one");
    assert_eq!(*bus.returned.borrow(), [0, 1]);
}

#[test]
fn cb_short_or_foreign_slots_are_bad() {
    let (bus, port) = (FakeBus::common_buffer(4, 64 * 1024), FakePort::default());
    let pin = cb_running(&bus, &port, 1);
    bus.deliver(Completion { kind: CompletionKind::Slot as u32, ..frame_completion(9, STATUS_SUCCESS) });
    bus.deliver(frame_completion(0, STATUS_SUCCESS));
    assert_eq!(pin.stats().bad_completions, 2);
    // Claims fewer bytes than the copy reads.
    bus.deliver(Completion { kind: CompletionKind::Slot as u32, ..frame_completion(0, STATUS_SUCCESS) });
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(*bus.returned.borrow(), [0]);
    assert_eq!(completion_of(&port, 0), None, "no frame consumed");
    assert_eq!(pin.stats().bad_completions, 3);
}

#[test]
fn cb_stop_returns_every_queued_slot() {
    let (bus, port) = (FakeBus::common_buffer(4, 64 * 1024), FakePort::default());
    let pin = cb_running(&bus, &port, 1);
    bus.fill_slot(0, 4, 200, 1, STATUS_SUCCESS, 0);
    bus.fill_slot(1, 4, 200, 2, STATUS_CANCELLED, 0);
    assert_eq!(pin.as_ref().set_state(KsState::Pause), STATUS_SUCCESS);
    assert_eq!(*bus.returned.borrow(), [0, 1]);
    assert_eq!(pin.stats().frames_cancelled, 2);
    assert_eq!(completion_of(&port, 0), None);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(port.mutex_acquired.get(), 1);
}

#[test]
fn cb_format_must_fit_a_slot_and_the_ring_is_checked() {
    let (bus, port) = (FakeBus::common_buffer(4, 4096), FakePort::default());
    let pin = make(&bus, &port);
    // 64 pixels: 128-byte lines at a 256-byte slot pitch; 16 lines fill 4096.
    assert!(pin.set_data_format(build_data_format(&yuy2(64, 16)).as_bytes()).is_ok());
    assert_eq!(
        pin.set_data_format(build_data_format(&yuy2(64, 18)).as_bytes()),
        Err(STATUS_INVALID_PARAMETER)
    );
    let mut ring = bus.ring.get();
    ring.slot_count = 5;
    bus.ring.set(ring);
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_IO_DEVICE_ERROR);
    assert_eq!((pin.state(), bus.stops.get(), bus.running.get()), (KsState::Pause, 1, false));
    ring.slot_count = 4;
    bus.ring.set(ring);
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
}

#[test]
fn cb_vector_unit_is_a_pin_parameter() {
    let (bus, port) = (FakeBus::common_buffer(4, 64 * 1024), FakePort::default());
    let pin = cb_running(&bus, &port, 1);
    assert_eq!(pin.vector_unit(), VectorUnit::Scalar);
    // Each unit comes back as stored (the pin keeps it as its `u8`).
    for unit in [VectorUnit::Sse2, VectorUnit::Avx2, VectorUnit::Scalar, VectorUnit::Avx2] {
        pin.set_vector_unit(unit);
        assert_eq!(pin.vector_unit(), unit);
    }
    bus.fill_slot(0, 4, 200, 4, STATUS_SUCCESS, 0);
    assert_eq!(pin.process_with_unit(VectorUnit::Sse2), STATUS_PENDING);
    assert_copied(&port, 0, 4);
    assert_eq!(Ptr::Leading, Ptr::Leading);
}

#[test]
fn the_pin_is_sync_when_its_port_is() {
    fn assert_sync<T: Sync + Send>() {}
    #[derive(Clone, Copy)]
    struct SyncPort;
    impl crate::ports::KsPinPort for SyncPort {
        type StreamPointer = usize;
        fn leading_edge(&self) -> Option<usize> {
            None
        }
        fn clone_pointer(&self, p: usize) -> Result<usize, i32> {
            Ok(p)
        }
        fn offset_out(&self, _: usize) -> crate::ports::StreamOffset {
            crate::ports::StreamOffset { data: core::ptr::null_mut(), mappings: core::ptr::null(), count: 0, remaining: 0 }
        }
        fn frame_extent(&self, _: usize) -> u32 {
            0
        }
        fn advance_offsets(&self, _: usize, _: u32, _: bool) -> Result<(), i32> {
            Ok(())
        }
        fn advance_offsets_and_unlock(&self, _: usize, _: u32, _: bool) {}
        fn unlock(&self, _: usize, _: bool) {}
        fn complete_frame(&self, _: usize, _: &crate::ports::FrameCompletion) {}
        fn delete(&self, _: usize) {}
        fn attempt_processing(&self, _: bool) {}
        fn raise_to_dispatch(&self) -> u8 {
            0
        }
        fn lower_irql(&self, _: u8) {}
    }
    assert_sync::<CapturePin<SyncPort>>();
    assert_sync::<crate::bus_client::BusChannel>();
}

#[test]
fn only_common_buffer_pins_copy_frames() {
    let port = FakePort::default();
    let sg = FakeBus::scatter_gather();
    assert!(!make(&sg, &port).copies_frames());
    let cb = FakeBus::common_buffer(4, 1 << 20);
    let port = FakePort::default();
    assert!(make(&cb, &port).copies_frames());
}
