//! Frames posted in parts (interface version 2): a frame with more
//! mappings than the descriptor ring has entries goes to the bus with
//! `ProgramFramePart` as the ring has room, against the fake bus's small
//! ring (it accepts at most its free entries and checks the contract's
//! order of parts).
#![allow(clippy::too_many_lines)]

use super::fake::{FakeBus, FakePort, PartCall};
use capdma_interface::status::STATUS_INVALID_DEVICE_STATE;
use super::pin::{completion_of, make, set_format, TestPin};
use super::yuy2;
use crate::state::KsState;
use capdma_interface::status::{
    STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_INVALID_PARAMETER, STATUS_IO_DEVICE_ERROR, STATUS_PENDING,
    STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, CompletionKind, SgElement, CAPDMA_PART_END, CAPDMA_PART_START};

const START_END: u32 = CAPDMA_PART_START | CAPDMA_PART_END;

/// A running pin streaming YUY2 64x16 (2048 bytes) with `frames` queued
/// frames of 2048 bytes in `page`-byte mappings.
fn running<'a>(bus: &'a FakeBus, port: &'a FakePort, frames: usize, page: u32) -> TestPin<'a> {
    for _ in 0..frames {
        port.push_frame(2048, page);
    }
    let pin = make(bus, port);
    set_format(&pin, &yuy2(64, 16));
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    pin
}

fn mappings(port: &FakePort, frame: usize) -> Vec<SgElement> {
    port.frames.borrow()[frame].mappings.clone()
}

fn completions(port: &FakePort, frame: usize) -> u32 {
    port.frames.borrow()[frame].completions
}

/// Checks the `ProgramFramePart` call `i`: its tag, the elements offered
/// (from the first not yet posted to the frame's end), the flags, and
/// what the bus answered.
fn assert_call(bus: &FakeBus, i: usize, tag: u32, elements: &[SgElement], flags: u32, status: i32, accepted: u32) {
    let calls = bus.part_calls.borrow();
    let call = calls.get(i).unwrap_or_else(|| panic!("call {i} of {}", calls.len()));
    assert_eq!(
        call,
        &PartCall { tag, elements: elements.to_vec(), flags, status, accepted },
        "ProgramFramePart call {i}"
    );
}

/// 8 mappings on a 3-entry ring: parts of 3, 3 and 2 mappings; `START`
/// on the first call only, `END` on every call (each offers the frame's
/// end), the leading edge advanced by what the bus accepted; a `BUSY`
/// part waits for a completion; each `FramePart` completion restarts
/// Process; the frame is delivered once, by its last part's `Frame`
/// completion. The next frame, too long for the ring as well, starts only
/// once the first one is completed (one frame in parts in flight at a
/// time), on the whole ring.
#[test]
fn a_frame_larger_than_the_ring_is_posted_in_parts() {
    let (bus, port) = (FakeBus::scatter_gather_v2(3), FakePort::default());
    let pin = running(&bus, &port, 2, 256);
    let (m0, m1) = (mappings(&port, 0), mappings(&port, 1));
    assert_eq!(m0.len(), 8);

    assert_eq!(pin.process(), STATUS_PENDING, "the ring is full: wait for the part's completion");
    let tag = bus.part_calls.borrow()[0].tag;
    assert_call(&bus, 0, tag, &m0, START_END, STATUS_SUCCESS, 3);
    assert!(bus.posted.borrow().is_empty(), "no ProgramFrame");
    assert_eq!((port.leading_index(), port.leading_offset()), (0, 3));
    assert!(!port.locked.get(), "leading edge unlocked");
    assert_eq!(port.live_clones(), 1, "the clone holds the frame");

    // Process again before any completion: the ring has no room.
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_call(&bus, 1, tag, &m0[3..], CAPDMA_PART_END, STATUS_DEVICE_BUSY, 0);
    assert_eq!((port.leading_offset(), port.live_clones()), (3, 1), "nothing advanced, the clone kept");
    assert!(!port.locked.get());

    let attempts = port.attempts.get();
    let written = bus.complete_part(0).unwrap();
    assert_eq!((written.tag, written.cumulative, written.last), (tag, 768, false));
    assert_eq!(port.attempts.get(), attempts + 1, "a part completion restarts Process");
    assert_eq!(completion_of(&port, 0), None, "not completed by a part");

    assert_eq!(pin.process(), STATUS_PENDING);
    assert_call(&bus, 2, tag, &m0[3..], CAPDMA_PART_END, STATUS_SUCCESS, 3);
    assert_eq!(port.leading_offset(), 6);
    bus.complete_part(0).unwrap();

    // The last 2 mappings close the frame. The next frame, too long for
    // the ring as well, waits: a frame in parts is still in flight.
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_call(&bus, 3, tag, &m0[6..], CAPDMA_PART_END, STATUS_SUCCESS, 2);
    assert_eq!(bus.part_calls.borrow().len(), 4, "no second frame in parts started");
    assert_eq!((port.leading_index(), port.leading_offset()), (1, 0));
    assert!(!port.locked.get());

    // The first frame's last part: its Frame completion delivers it, once,
    // and restarts Process.
    let attempts = port.attempts.get();
    let written = bus.complete_part(7).unwrap();
    assert!(written.last);
    assert_eq!(port.attempts.get(), attempts + 1);
    let c = completion_of(&port, 0).unwrap();
    assert_eq!((c.data_used, c.picture_number, c.presentation_time), (2048, 7, 7000));
    assert_eq!(completions(&port, 0), 1);
    assert!(port.frames.borrow()[0].released);
    assert_eq!(port.live_clones(), 0);

    // The second frame on the whole ring: parts of 3, 3 and 2.
    assert_eq!(pin.process(), STATUS_PENDING);
    let tag1 = bus.part_calls.borrow()[4].tag;
    assert_ne!(tag1, tag);
    assert_call(&bus, 4, tag1, &m1, START_END, STATUS_SUCCESS, 3);
    bus.complete_part(0).unwrap();
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_call(&bus, 5, tag1, &m1[3..], CAPDMA_PART_END, STATUS_SUCCESS, 3);
    bus.complete_part(0).unwrap();
    assert_eq!(pin.process(), STATUS_SUCCESS, "every frame posted");
    assert_call(&bus, 6, tag1, &m1[6..], CAPDMA_PART_END, STATUS_SUCCESS, 2);
    assert_eq!(bus.part_calls.borrow().len(), 7);
    assert_eq!(port.leading_index(), 2);
    bus.complete_part(8).unwrap();
    assert_eq!(completion_of(&port, 1).map(|c| (c.data_used, c.picture_number)), Some((2048, 8)));
    assert_eq!((completions(&port, 1), port.live_clones()), (1, 0));
    assert!(bus.parts.borrow().is_empty());

    let s = pin.stats();
    assert_eq!((s.frames_programmed, s.frame_parts_posted, s.sg_elements_programmed), (2, 6, 16));
    assert_eq!((s.frame_part_completions, s.frames_completed, s.bytes_delivered), (4, 2, 4096));
    assert_eq!((s.bad_completions, s.frames_dropped, s.frame_part_errors), (0, 0, 0));
}

/// A frame that fits the ring goes whole with `ProgramFrame`, even on a
/// version-2 bus (Remaining equal to the ring's entries fits).
#[test]
fn a_frame_that_fits_the_ring_is_posted_whole_on_a_version_2_bus() {
    let (bus, port) = (FakeBus::scatter_gather_v2(8), FakePort::default());
    let pin = running(&bus, &port, 1, 256);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert!(bus.part_calls.borrow().is_empty(), "no ProgramFramePart");
    assert_eq!(bus.posted.borrow().len(), 1);
    assert_eq!(bus.posted.borrow()[0].elements, mappings(&port, 0));
    bus.complete_oldest(2048, STATUS_SUCCESS, 1).unwrap();
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(2048));
    assert_eq!(pin.stats().frame_parts_posted, 0);
}

/// A version-1 bus has no parts: a frame larger than the ring can never
/// be posted (`STATUS_DEVICE_BUSY` with nothing in flight) and is dropped
/// as before.
#[test]
fn on_a_version_1_bus_a_frame_larger_than_the_ring_is_dropped() {
    let (bus, port) = (FakeBus::scatter_gather(), FakePort::default());
    bus.set_descriptor_count(4);
    let pin = running(&bus, &port, 2, 256);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    for i in 0..2 {
        assert_eq!(completion_of(&port, i).map(|c| c.data_used), Some(0));
        assert!(port.frames.borrow()[i].released);
    }
    assert!(bus.posted.borrow().is_empty() && bus.part_calls.borrow().is_empty());
    assert_eq!((pin.stats().frames_dropped, port.live_clones()), (2, 0));
}

/// The bus terminates the open frame (a reset: one `Frame` completion,
/// cancelled): the frame is completed once, through its clone; the next
/// Process ejects the rest of it from the leading edge without completing
/// it again and goes on with the next frame. A stop terminates the next
/// one the same way, and Process after the restart ejects its rest.
#[test]
fn a_frame_terminated_while_open_is_completed_once_and_its_rest_ejected() {
    let (bus, port) = (FakeBus::scatter_gather_v2(3), FakePort::default());
    let pin = running(&bus, &port, 2, 256);
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(port.leading_offset(), 3);
    let attempts = port.attempts.get();
    let tag = bus.terminate_parts(STATUS_CANCELLED).unwrap();
    assert_eq!(tag, bus.part_calls.borrow()[0].tag);
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(0));
    assert_eq!((completions(&port, 0), port.live_clones(), port.attempts.get()), (1, 0, attempts + 1));
    assert!(!port.frames.borrow()[0].released, "the leading edge is still on it");

    assert_eq!(pin.process(), STATUS_PENDING);
    assert_eq!(completions(&port, 0), 1, "ejected, not completed again");
    assert!(port.frames.borrow()[0].released);
    assert_eq!(bus.part_calls.borrow().len(), 2, "no part of the terminated frame");
    assert_call(&bus, 1, bus.part_calls.borrow()[1].tag, &mappings(&port, 1), START_END, STATUS_SUCCESS, 3);
    assert_eq!((port.leading_index(), port.leading_offset(), port.live_clones()), (1, 3, 1));

    // A stop terminates the open frame; the pin forgets it.
    assert_eq!(pin.as_ref().set_state(KsState::Pause), STATUS_SUCCESS);
    assert_eq!((completions(&port, 1), port.live_clones()), (1, 0));
    assert_eq!(completion_of(&port, 1).map(|c| c.data_used), Some(0));
    assert_eq!(pin.as_ref().set_state(KsState::Run), STATUS_SUCCESS);
    assert_eq!(pin.process(), STATUS_SUCCESS, "the rest ejected: no frame left");
    assert_eq!(bus.part_calls.borrow().len(), 2, "no continuation after the restart");
    assert_eq!(completions(&port, 1), 1);
    assert!(port.frames.borrow()[1].released);
    let s = pin.stats();
    assert_eq!((s.frames_cancelled, s.frames_dropped, s.bad_completions, s.frame_part_errors), (2, 0, 0, 0));
}

/// A part completion of a frame whose last part is already posted (it is
/// closed, still in flight) is a part completion, not a bad one; a
/// `FramePart` for a frame posted whole, an unknown tag or with an error
/// status is bad.
#[test]
fn part_completions_of_frames_posted_in_parts_only() {
    let (bus, port) = (FakeBus::scatter_gather_v2(6), FakePort::default());
    port.push_frame(2048, 512); // 4 mappings: fits, posted whole
    let pin = running(&bus, &port, 1, 256); // 8 mappings: in parts
    assert_eq!(pin.process(), STATUS_PENDING);
    let whole = bus.posted.borrow()[0].tag;
    let tag = bus.part_calls.borrow()[0].tag;
    assert_call(&bus, 0, tag, &mappings(&port, 1), START_END, STATUS_SUCCESS, 2);
    let part_of = |tag: u32, status: i32| Completion {
        channel: 0,
        kind: CompletionKind::FramePart as u32,
        tag,
        bytes_written: 512,
        status,
        frame_number: 0,
        timestamp: 0,
    };
    bus.deliver(part_of(whole, STATUS_SUCCESS));
    bus.deliver(part_of(tag ^ 0x100, STATUS_SUCCESS));
    bus.deliver(part_of(tag, STATUS_IO_DEVICE_ERROR));
    assert_eq!((pin.stats().bad_completions, pin.stats().frame_part_completions), (3, 0));

    // The whole frame completes: room for a second part; the first one's
    // completion makes room for the last, which closes the frame while the
    // second part is still in the ring.
    bus.complete_oldest(2048, STATUS_SUCCESS, 0).unwrap();
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_call(&bus, 1, tag, &mappings(&port, 1)[2..], CAPDMA_PART_END, STATUS_SUCCESS, 4);
    assert!(!bus.complete_part(1).unwrap().last);
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_call(&bus, 2, tag, &mappings(&port, 1)[6..], CAPDMA_PART_END, STATUS_SUCCESS, 2);
    let attempts = port.attempts.get();
    assert!(!bus.complete_part(1).unwrap().last, "the second part, of a closed frame");
    assert_eq!((pin.stats().frame_part_completions, pin.stats().bad_completions), (2, 3));
    assert_eq!(port.attempts.get(), attempts + 1);
    assert!(bus.complete_part(1).unwrap().last);
    assert_eq!(completion_of(&port, 1).map(|c| c.data_used), Some(2048));
    assert_eq!((completions(&port, 1), port.live_clones()), (1, 0));
    // Parts of a frame no longer in flight are bad.
    bus.deliver(part_of(tag, STATUS_SUCCESS));
    assert_eq!(pin.stats().bad_completions, 4);
}

/// A later part refused with a status the contract gives no reason for
/// (a bus bug): counted, the rest of the frame ejected, its clone left for
/// the bus's termination, which completes the frame once; later frames go
/// on. A first part refused that way drops its frame, as `ProgramFrame` does.
#[test]
fn a_refused_later_part_ejects_the_rest_and_the_termination_completes_the_frame() {
    let (bus, port) = (FakeBus::scatter_gather_v2(3), FakePort::default());
    let pin = running(&bus, &port, 3, 256);
    assert_eq!(pin.process(), STATUS_PENDING);
    let tag = bus.part_calls.borrow()[0].tag;
    bus.complete_part(0).unwrap();
    bus.part_error.set(Some(STATUS_INVALID_PARAMETER));
    // The continuation is refused: the rest of frame 0 is ejected; frames
    // 1 and 2 wait while frame 0 (posted in parts) is in flight.
    assert_eq!(pin.process(), STATUS_PENDING);
    assert_call(&bus, 1, tag, &mappings(&port, 0)[3..], CAPDMA_PART_END, STATUS_INVALID_PARAMETER, 0);
    assert_eq!(bus.part_calls.borrow().len(), 2);
    assert_eq!(completions(&port, 0), 0, "left for the bus's termination");
    assert_eq!(port.live_clones(), 1, "frame 0's clone only");
    let s = pin.stats();
    assert_eq!((s.frame_part_errors, s.frames_dropped, s.bad_completions), (1, 0, 0));

    // The bus terminates the frame it held open: completed once.
    bus.terminate_parts(STATUS_IO_DEVICE_ERROR).unwrap();
    assert_eq!((completions(&port, 0), port.live_clones()), (1, 0));
    assert_eq!(completion_of(&port, 0).map(|c| c.data_used), Some(0));
    assert!(port.frames.borrow()[0].released);

    // Then frames 1 and 2: their first parts refused the same way, dropped.
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(bus.part_calls.borrow().len(), 4);
    for i in 1..3 {
        assert_eq!(completion_of(&port, i).map(|c| c.data_used), Some(0), "frame {i} dropped");
    }
    let s = pin.stats();
    assert_eq!((s.frame_part_errors, s.frames_dropped, s.bad_completions), (1, 3, 0), "frame 0 failed, 1 and 2 refused");
}

/// A first part the bus refuses with `STATUS_DEVICE_BUSY` while nothing is
/// in flight can never be posted: dropped, its clone deleted. A part out
/// of turn (`STATUS_INVALID_DEVICE_STATE`) is not retried forever either.
#[test]
fn a_first_part_busy_with_nothing_in_flight_is_dropped() {
    let (bus, port) = (FakeBus::scatter_gather_v2(3), FakePort::default());
    let pin = running(&bus, &port, 2, 256);
    bus.part_error.set(Some(STATUS_DEVICE_BUSY));
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(bus.part_calls.borrow().len(), 2);
    assert_eq!((pin.stats().frames_dropped, port.live_clones()), (2, 0));
    assert_eq!(pin.stats().frames_programmed, 0);

    let (bus, port) = (FakeBus::scatter_gather_v2(3), FakePort::default());
    let pin = running(&bus, &port, 1, 256);
    bus.part_error.set(Some(STATUS_INVALID_DEVICE_STATE));
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!((pin.stats().frames_dropped, port.live_clones(), completions(&port, 0)), (1, 0, 1));
}

/// A continuation refused with `STATUS_INVALID_DEVICE_STATE`: the bus no
/// longer holds the frame open (a reset or stop terminated it, its `Frame`
/// completion on the way) — the rest ejected, not counted as a part error,
/// and the termination completes the frame once.
#[test]
fn a_continuation_of_a_frame_the_bus_already_ended_is_not_a_part_error() {
    let (bus, port) = (FakeBus::scatter_gather_v2(3), FakePort::default());
    let pin = running(&bus, &port, 1, 256);
    assert_eq!(pin.process(), STATUS_PENDING);
    bus.complete_part(0).unwrap();
    bus.part_error.set(Some(STATUS_INVALID_DEVICE_STATE));
    assert_eq!(pin.process(), STATUS_SUCCESS);
    assert_eq!(bus.part_calls.borrow().len(), 2, "the continuation, refused");
    assert_eq!((pin.stats().frame_part_errors, completions(&port, 0)), (0, 0));
    bus.part_error.set(None);
    bus.terminate_parts(STATUS_CANCELLED).unwrap();
    assert_eq!((completions(&port, 0), port.live_clones()), (1, 0));
    assert_eq!(pin.stats().bad_completions, 0);
}
