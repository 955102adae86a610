//! Frames posted in parts (`ProgramFramePart`, interface version 2): a
//! frame with more elements than the descriptor ring has free entries.
use super::{statuses, yuy2, Harness, Iface, Recorder};
use crate::channel::RecordFault;
use crate::config::StartConfig;
use capdma_interface::descriptor::{
    CompletionRecord, CQ_STATUS_OK, CQ_STATUS_PART, DESC_END_OF_FRAME, DESC_END_OF_PART, DESC_START_OF_FRAME,
};
use capdma_interface::regs::{channel, global, int_done};
use capdma_interface::status::{
    STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_IO_DEVICE_ERROR,
    STATUS_SUCCESS,
};
use capdma_interface::table::{CompletionKind, SgElement, CAPDMA_PART_END, CAPDMA_PART_START};

const WHOLE: u32 = CAPDMA_PART_START | CAPDMA_PART_END;

/// An S/G device whose channel 0 runs 64×4 YUY2 (512-byte frames) on a
/// 64-entry descriptor ring, with a recorder.
fn small_ring() -> (Harness, Iface, Box<Recorder>) {
    let h = Harness::sg(1);
    h.dev.start(&StartConfig { descriptor_ring_entries: 64, ..StartConfig::DEFAULT }).expect("start");
    let iface = h.iface();
    let rec = Recorder::new(&h);
    assert_eq!(iface.register(0, Some(&rec)), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    (h, iface, rec)
}

/// `n` 8-byte elements: 100 of them (800 bytes) are a frame too long for the ring.
fn pieces(n: usize) -> Vec<SgElement> {
    (0u64..n as u64).map(|i| SgElement { logical_address: 0x2_0000_0000 + i * 64, byte_count: 8, alignment: 0 }).collect()
}

/// The board's record for the part that starts at ring `index`.
fn record(index: u32, bytes: u32, tag: u32, status: u32) -> CompletionRecord {
    CompletionRecord { index, byte_count: bytes, tag, status, ..CompletionRecord::default() }
}

#[test]
fn a_frame_longer_than_the_ring_is_posted_part_by_part_and_completed_once() {
    let (h, iface, rec) = small_ring();
    let frame = pieces(100);
    assert_eq!(iface.program(0, 9, &frame), STATUS_INVALID_PARAMETER, "whole, it can never fit");
    assert_eq!(iface.program_part(0, 7, &frame, WHOLE), (STATUS_SUCCESS, 64), "as many as the ring has room for");
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 64, "the part is handed to the board");
    let d = |i| h.m.descriptor(0, i);
    assert_eq!((d(0).flags, d(1).flags, d(63).flags), (DESC_START_OF_FRAME, 0, DESC_END_OF_PART));
    assert!((0..64).all(|i| d(i).tag == 7));
    // While the frame is open nothing else may start, and the ring is full.
    assert_eq!(iface.program(0, 8, &pieces(1)), STATUS_INVALID_DEVICE_STATE);
    assert_eq!(iface.program_part(0, 8, &pieces(1), WHOLE).0, STATUS_INVALID_DEVICE_STATE);
    assert_eq!(iface.program_part(0, 7, &frame[64..], CAPDMA_PART_END).0, STATUS_DEVICE_BUSY);
    // The board writes the first part: a FramePart completion, nothing handed back.
    h.m.push_record(0, record(0, 512, 7, CQ_STATUS_PART));
    h.interrupt(5);
    let got = rec.take();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].kind, got[0].tag, got[0].bytes_written, got[0].status), (CompletionKind::FramePart as u32, 7, 512, STATUS_SUCCESS));
    // The rest: the continuation carries no START, another tag is refused.
    assert_eq!(iface.program_part(0, 8, &frame[64..], CAPDMA_PART_END).0, STATUS_INVALID_PARAMETER);
    assert_eq!(iface.program_part(0, 7, &frame[64..], CAPDMA_PART_END), (STATUS_SUCCESS, 36));
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 100);
    assert_eq!((d(0).flags, d(35).flags), (0, DESC_END_OF_FRAME), "entries 64..100 wrap to 0..36");
    h.m.push_record(0, record(0, 512, 7, CQ_STATUS_OK));
    h.interrupt(6);
    let got = rec.take();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].kind, got[0].tag, got[0].bytes_written, got[0].status), (CompletionKind::Frame as u32, 7, 512, STATUS_SUCCESS));
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.parts_completed, stats.frames_completed, stats.resets), (1, 1, 0));
    // Closed: a frame posted whole is accepted again.
    assert_eq!(iface.program(0, 8, &pieces(64)), STATUS_SUCCESS);
}

#[test]
fn a_part_is_checked_as_a_frame_is_and_an_end_short_of_the_frame_is_refused() {
    let (h, iface, _rec) = small_ring();
    assert_eq!(iface.program_part(0, 1, &pieces(3), CAPDMA_PART_END).0, STATUS_INVALID_DEVICE_STATE, "no frame open");
    assert_eq!(iface.program_part(0, 1, &pieces(3), WHOLE | 0x8).0, STATUS_INVALID_PARAMETER, "unknown flag");
    assert_eq!(iface.program_part(0, 1, &pieces(3), WHOLE).0, STATUS_INVALID_PARAMETER, "24 bytes: short of the frame");
    let mut bad = pieces(3);
    bad[1].byte_count = 0;
    assert_eq!(iface.program_part(0, 1, &bad, CAPDMA_PART_START).0, STATUS_INVALID_PARAMETER);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 0, "nothing posted");
    assert_eq!(iface.program_part(0, 1, &pieces(3), CAPDMA_PART_START), (STATUS_SUCCESS, 3));
    assert_eq!(iface.program_part(0, 1, &pieces(3), CAPDMA_PART_END).0, STATUS_INVALID_PARAMETER, "48 of 512 bytes");
    assert_eq!(iface.program_part(0, 1, &pieces(61), CAPDMA_PART_END), (STATUS_SUCCESS, 61), "64 × 8 = 512 bytes");
    assert_eq!(h.m.descriptor(0, 63).flags, DESC_END_OF_FRAME);
}

#[test]
fn a_stop_terminates_an_open_frame_with_one_completion() {
    let (h, iface, rec) = small_ring();
    assert_eq!(iface.program_part(0, 4, &pieces(100), WHOLE), (STATUS_SUCCESS, 64));
    h.m.push_record(0, record(0, 512, 4, CQ_STATUS_PART));
    h.interrupt(5);
    assert_eq!(rec.take().len(), 1, "the part");
    assert_eq!(iface.program_part(0, 4, &pieces(20), 0), (STATUS_SUCCESS, 20), "a middle part");
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    let got = rec.take();
    assert_eq!(statuses(&got), vec![(4, STATUS_CANCELLED)], "one completion for the frame, none for its parts");
    assert_eq!(got[0].kind, CompletionKind::Frame as u32);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 5, &pieces(64)), STATUS_SUCCESS, "no frame open after the stop");
    let _ = h;
}

#[test]
fn a_records_kind_must_match_what_was_posted() {
    let (h, iface, rec) = small_ring();
    assert_eq!(iface.program(0, 1, &pieces(64)), STATUS_SUCCESS);
    // A part's record for a frame posted whole: refused, the channel reset.
    h.m.push_record(0, record(0, 512, 1, CQ_STATUS_PART));
    h.m.set_reg(global::INT_STATUS, int_done(0));
    h.interrupt(5);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR)]);
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.bad_records, stats.last_fault), (1, Some(RecordFault::Unexpected)));
    // And an end's record for a part.
    assert_eq!(iface.program_part(0, 2, &pieces(100), WHOLE), (STATUS_SUCCESS, 64));
    h.m.push_record(0, record(0, 512, 2, CQ_STATUS_OK));
    h.interrupt(6);
    assert_eq!(statuses(&rec.take()), vec![(2, STATUS_IO_DEVICE_ERROR)]);
    assert_eq!(h.dev.channel_stats(0).unwrap().bad_records, 2);
}

#[test]
fn an_open_frame_whose_parts_all_completed_still_comes_back_at_a_stop() {
    let (h, iface, rec) = small_ring();
    assert_eq!(iface.program_part(0, 6, &pieces(100), WHOLE), (STATUS_SUCCESS, 64));
    h.m.push_record(0, record(0, 512, 6, CQ_STATUS_PART));
    h.interrupt(5);
    assert_eq!(rec.take().len(), 1, "the part; nothing of the frame is on the ring now");
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(statuses(&rec.take()), vec![(6, STATUS_CANCELLED)], "the frame is not lost");
}
