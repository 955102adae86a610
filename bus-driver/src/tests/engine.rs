//! ISR, DPC, the S/G and slot engines, resets, the watchdog, removal.
use super::{frame, running_cb, running_sg, statuses, yuy2, Harness, Iface, Recorder, FRAME};
use crate::channel::RecordFault;
use crate::ports::{CoreEvent, ResetCause, DISPATCH_LEVEL};
use capdma_interface::descriptor::{CompletionRecord, CQ_STATUS_ERROR, DESC_END_OF_FRAME, DESC_START_OF_FRAME};
use capdma_interface::regs::{channel, global, int_done, int_error, CTRL_RUN, CTRL_SG_MODE};
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_DEVICE_NOT_READY, STATUS_DEVICE_REMOVED, STATUS_INVALID_PARAMETER,
    STATUS_IO_DEVICE_ERROR, STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, CompletionKind, SgElement};
use core::ffi::c_void;
use core::sync::atomic::Ordering;
use std::cell::RefCell;

#[test]
fn isr_returns_false_on_a_zero_status_and_touches_nothing_else() {
    let (h, _iface, _rec) = running_sg();
    h.m.writes.borrow_mut().clear();
    assert!(!h.dev.isr());
    assert!(h.m.writes.borrow().is_empty());
    assert_eq!(h.dev.pending.load(Ordering::Acquire), 0);
}

#[test]
fn isr_acknowledges_what_it_read_and_pends_it_for_the_dpc() {
    let (h, _iface, _rec) = running_sg();
    h.m.writes.borrow_mut().clear();
    h.m.set_reg(global::INT_STATUS, int_done(1) | int_error(0));
    assert!(h.dev.isr());
    assert_eq!(*h.m.writes.borrow(), vec![(global::INT_STATUS, int_done(1) | int_error(0))]);
    assert_eq!(h.m.reg(global::INT_STATUS), 0, "write-1-to-clear");
    assert_eq!(h.dev.pending.load(Ordering::Acquire), int_done(1) | int_error(0));
}

#[test]
fn isr_reading_all_ones_marks_the_board_gone() {
    let (h, _iface, _rec) = running_sg();
    h.m.gone.set(true);
    assert!(h.dev.isr());
    assert!(h.dev.is_removed());
    assert_eq!(h.dev.pending.load(Ordering::Acquire), 0);
}

/// On a shared level-triggered line the kernel stops at the first ISR that
/// returns TRUE: after the board vanished (and before
/// `IRP_MN_SURPRISE_REMOVAL` disconnects the interrupt) this ISR claims the
/// all-ones read once, then leaves every later interrupt to the other
/// devices on the line without reading the board again (each read of a
/// removed PCI Express function may take a completion timeout at device IRQL).
#[test]
fn isr_claims_all_ones_only_once_so_a_shared_line_is_not_starved() {
    let (h, _iface, _rec) = running_sg();
    h.m.gone.set(true);
    assert!(h.dev.isr(), "the first all-ones read is claimed");
    let before = h.m.accesses.get();
    for _ in 0..3 {
        assert!(!h.dev.isr(), "later interrupts belong to another device on the line");
    }
    assert_eq!(h.m.accesses.get() - before, 0, "a board known gone is not read again");
    assert!(h.dev.is_removed());
    assert_eq!(h.dev.pending.load(Ordering::Acquire), 0);
}

#[test]
fn sg_frame_is_posted_as_descriptors_and_completed_through_the_callback() {
    let (h, iface, rec) = running_sg();
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
    assert_eq!(h.m.ch_reg(0, channel::LINE_PITCH), 128);
    assert_ne!(h.m.reg(global::INT_ENABLE) & int_done(0), 0);
    let els = [
        SgElement { logical_address: 0x3_0000_1000, byte_count: 300, alignment: 0 },
        SgElement { logical_address: 0x3_0000_8000, byte_count: 212, alignment: 0 },
    ];
    assert_eq!(iface.program(0, 7, &els), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 2);
    let d0 = h.m.descriptor(0, 0);
    let d1 = h.m.descriptor(0, 1);
    assert_eq!((d0.address, d0.byte_count, d0.flags, d0.tag), (0x3_0000_1000, 300, DESC_START_OF_FRAME, 7));
    assert_eq!((d1.address, d1.byte_count, d1.flags, d1.tag), (0x3_0000_8000, 212, DESC_END_OF_FRAME, 7));
    let record = h.m.complete_sg_frame(0);
    assert!(h.interrupt(10));
    let got = rec.take();
    assert_eq!(
        got,
        vec![Completion {
            channel: 0,
            kind: CompletionKind::Frame as u32,
            tag: 7,
            bytes_written: 512,
            status: STATUS_SUCCESS,
            frame_number: record.frame_number,
            timestamp: 1000,
        }]
    );
    assert_eq!(*rec.irqls.borrow(), vec![DISPATCH_LEVEL]);
    assert_eq!(h.m.ch_reg(0, channel::CQ_CONSUMER), 1);
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.frames_completed, stats.bad_records, stats.resets), (1, 0, 0));
}

#[test]
fn ring_wraps_and_many_frames_complete_in_order() {
    let h = Harness::sg(1);
    let config = crate::config::StartConfig { descriptor_ring_entries: 64, ..crate::config::StartConfig::DEFAULT };
    h.dev.start(&config).unwrap();
    let iface = h.iface();
    let rec = Recorder::new(&h);
    iface.register(0, Some(&rec));
    iface.start(0, &yuy2(64, 4, 128));
    // 512-byte frames in 100-byte elements: 6 descriptors each; 40 frames wrap a 64-entry ring.
    let els: Vec<SgElement> = (0..6)
        .map(|i| SgElement { logical_address: 0x5000_0000 + i * 0x1000, byte_count: if i < 5 { 100 } else { 12 }, alignment: 0 })
        .collect();
    for tag in 0..40 {
        assert_eq!(iface.program(0, tag, &els), STATUS_SUCCESS, "frame {tag}");
        h.m.complete_sg_frame(0);
        h.interrupt(i64::from(tag));
    }
    let got = rec.take();
    assert_eq!(got.len(), 40);
    assert!(got.iter().zip(0u32..).all(|(c, i)| c.tag == i && c.status == STATUS_SUCCESS && c.bytes_written == 512));
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 240);
}

/// Posts frames 1 and 2, then feeds `bad` (after `good_first` real completions).
fn bad_record_case(good_first: u32, bad: impl FnOnce(&Harness) -> CompletionRecord) -> (Harness, Iface, Box<Recorder>) {
    let (h, iface, rec) = running_sg();
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 2, &frame(2)), STATUS_SUCCESS);
    for _ in 0..good_first {
        h.m.complete_sg_frame(0);
    }
    let record = bad(&h);
    h.m.push_record(0, record);
    assert!(h.interrupt(100));
    (h, iface, rec)
}

fn assert_reset_and_restarted(h: &Harness, iface: &Iface, rec: &Recorder, fault: RecordFault) {
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.bad_records, stats.resets), (1, 1));
    assert_eq!(stats.last_fault, Some(fault));
    // The core reported the refused value, then the reset with its cause.
    assert_eq!(
        *h.m.reports.borrow(),
        [
            CoreEvent::ValueRefused { channel: 0, fault },
            CoreEvent::EngineReset { channel: 0, cause: ResetCause::RefusedValue(fault) }
        ]
    );
    // Restarted with the same format: reprogrammed and running, counters from 0.
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
    assert_eq!(h.m.ch_reg(0, channel::LINE_PITCH), 128);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 0);
    // And it works again.
    assert_eq!(iface.program(0, 9, &frame(9)), STATUS_SUCCESS);
    h.m.complete_sg_frame(0);
    h.interrupt(200);
    assert_eq!(statuses(&rec.take()), vec![(9, STATUS_SUCCESS)]);
}

#[test]
fn out_of_range_cq_index_resets_the_channel_and_nothing_is_delivered_as_good() {
    let (h, iface, rec) = bad_record_case(0, |_| CompletionRecord { index: 20_000, byte_count: 512, tag: 1, ..Default::default() });
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR), (2, STATUS_IO_DEVICE_ERROR)]);
    assert_reset_and_restarted(&h, &iface, &rec, RecordFault::IndexOutOfRange);
}

#[test]
fn unexpected_cq_index_resets_the_channel() {
    // Index 2 is inside the ring but no frame starts there.
    let (h, iface, rec) = bad_record_case(0, |_| CompletionRecord { index: 2, byte_count: 512, tag: 1, ..Default::default() });
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR), (2, STATUS_IO_DEVICE_ERROR)]);
    assert_reset_and_restarted(&h, &iface, &rec, RecordFault::Unexpected);
}

#[test]
fn oversized_byte_count_resets_the_channel() {
    let (h, iface, rec) = bad_record_case(0, |_| CompletionRecord { index: 0, byte_count: FRAME + 1, tag: 1, ..Default::default() });
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR), (2, STATUS_IO_DEVICE_ERROR)]);
    assert_reset_and_restarted(&h, &iface, &rec, RecordFault::ByteCountTooLarge);
}

#[test]
fn tag_mismatch_resets_the_channel() {
    let (h, iface, rec) = bad_record_case(0, |_| CompletionRecord { index: 0, byte_count: FRAME, tag: 2, ..Default::default() });
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR), (2, STATUS_IO_DEVICE_ERROR)]);
    assert_reset_and_restarted(&h, &iface, &rec, RecordFault::TagMismatch);
}

#[test]
fn unknown_record_status_resets_the_channel() {
    let (h, iface, rec) =
        bad_record_case(0, |_| CompletionRecord { index: 0, byte_count: FRAME, tag: 1, status: 7, ..Default::default() });
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR), (2, STATUS_IO_DEVICE_ERROR)]);
    assert_reset_and_restarted(&h, &iface, &rec, RecordFault::BadStatus);
}

#[test]
fn good_records_before_a_bad_one_are_delivered_as_good() {
    let (h, iface, rec) = bad_record_case(1, |_| CompletionRecord { index: 77, byte_count: 1, tag: 2, ..Default::default() });
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_SUCCESS), (2, STATUS_IO_DEVICE_ERROR)]);
    assert_reset_and_restarted(&h, &iface, &rec, RecordFault::Unexpected);
}

#[test]
fn cq_producer_running_past_the_queue_resets_the_channel() {
    let (h, iface, rec) = running_sg();
    iface.program(0, 1, &frame(1));
    h.m.set_ch_reg(0, channel::CQ_PRODUCER, 257);
    h.m.set_reg(global::INT_STATUS, int_done(0));
    h.interrupt(5);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR)]);
    assert_reset_and_restarted(&h, &iface, &rec, RecordFault::CqOverrun);
}

#[test]
fn damaged_frame_is_delivered_as_an_error_without_a_reset() {
    let (h, iface, rec) = running_sg();
    iface.program(0, 1, &frame(1));
    h.m.push_record(0, CompletionRecord { index: 0, byte_count: 100, tag: 1, status: CQ_STATUS_ERROR, ..Default::default() });
    h.interrupt(5);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR)]);
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.frames_damaged, stats.resets, stats.bad_records), (1, 0, 0));
}

#[test]
fn board_error_interrupt_resets_and_restarts_the_channel() {
    let (h, iface, rec) = running_sg();
    iface.program(0, 1, &frame(1));
    iface.program(0, 2, &frame(2));
    h.m.complete_sg_frame(0);
    h.m.halt(0);
    assert!(h.interrupt(5));
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_SUCCESS), (2, STATUS_IO_DEVICE_ERROR)]);
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.board_errors, stats.resets, stats.bad_records), (1, 1, 0));
    assert_eq!(*h.m.reports.borrow(), [CoreEvent::EngineReset { channel: 0, cause: ResetCause::ErrorInterrupt }]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
}

#[test]
fn dpc_picks_up_records_that_arrived_without_their_interrupt_bit() {
    let (h, iface, rec) = running_sg();
    iface.program(0, 1, &frame(1));
    h.m.complete_sg_frame(0);
    h.m.set_reg(global::INT_STATUS, 0);
    h.m.irql.set(DISPATCH_LEVEL);
    h.dev.dpc(5);
    h.m.irql.set(0);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_SUCCESS)]);
}

#[test]
fn stop_channel_cancels_posted_frames_through_the_callback_before_returning() {
    let (h, iface, rec) = running_sg();
    iface.program(0, 1, &frame(1));
    iface.program(0, 2, &frame(2));
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED), (2, STATUS_CANCELLED)]);
    assert_eq!(*rec.irqls.borrow(), vec![DISPATCH_LEVEL, DISPATCH_LEVEL]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL) & CTRL_RUN, 0);
    assert_eq!(h.m.reg(global::INT_ENABLE) & (int_done(0) | int_error(0)), 0);
    assert_eq!(iface.program(0, 3, &frame(3)), STATUS_DEVICE_NOT_READY);
    assert_eq!(iface.stop(0), STATUS_SUCCESS, "idempotent");
    assert!(rec.take().is_empty());
    // Restart after stop.
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 3, &frame(3)), STATUS_SUCCESS);
}

#[test]
fn device_stop_cancels_frames_then_frees() {
    let (h, iface, rec) = running_sg();
    iface.program(0, 1, &frame(1));
    h.dev.stop();
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED)]);
    assert_eq!(h.m.live_allocations(), 0);
}

/// A callback that posts the next frame from inside the callback (as the
/// `AVStream` core's `attempt_processing` path may).
struct Reposter {
    iface: *const Iface,
    statuses: RefCell<Vec<NtStatus>>,
}

unsafe extern "system" fn repost(context: *mut c_void, completion: *const Completion) {
    // SAFETY: test: the boxed Reposter and the Iface outlive the registration.
    let r = unsafe { &*context.cast::<Reposter>() };
    // SAFETY: as above.
    let iface = unsafe { &*r.iface };
    // SAFETY: valid during the call.
    let tag = unsafe { (*completion).tag };
    r.statuses.borrow_mut().push(iface.program(0, tag + 100, &frame(tag + 100)));
}

#[test]
fn callback_may_program_the_next_frame_no_lock_is_held() {
    let h = Harness::sg(1);
    let iface = h.start();
    let r = Box::new(Reposter { iface: &raw const iface, statuses: RefCell::new(Vec::new()) });
    // SAFETY: test: live device; `r` outlives the registration.
    let s = unsafe {
        (iface.0.register_completion.unwrap())(iface.ctx(), 0, Some(repost), std::ptr::from_ref(&*r).cast_mut().cast())
    };
    assert_eq!(s, STATUS_SUCCESS);
    iface.start(0, &yuy2(64, 4, 128));
    iface.program(0, 1, &frame(1));
    h.m.complete_sg_frame(0);
    h.interrupt(1);
    assert_eq!(*r.statuses.borrow(), vec![STATUS_SUCCESS]);
    assert_eq!(h.m.descriptor(0, 1).tag, 101);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 2);
}

#[test]
fn watchdog_resets_a_stalled_channel_after_four_frame_intervals() {
    let (h, iface, rec) = running_sg();
    let interval = 333_333;
    // Idle channels are never reset.
    assert_eq!(h.dev.watchdog(0), 0);
    assert_eq!(h.dev.watchdog(100 * interval), 0);
    iface.program(0, 1, &frame(1));
    let t0 = 100 * interval;
    assert_eq!(h.dev.watchdog(t0 + 1), 0);
    assert_eq!(h.dev.watchdog(t0 + 4 * interval), 0, "exactly four intervals is not yet late");
    assert_eq!(h.dev.watchdog(t0 + 4 * interval + 1), 1);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR)]);
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.watchdog_resets, stats.resets), (1, 1));
    assert_eq!(*h.m.reports.borrow(), [CoreEvent::EngineReset { channel: 0, cause: ResetCause::Watchdog }]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
    // A frame that completes keeps the watchdog quiet.
    iface.program(0, 2, &frame(2));
    assert_eq!(h.dev.watchdog(t0 + 5 * interval), 0);
    h.m.complete_sg_frame(0);
    h.interrupt(t0 + 8 * interval);
    assert_eq!(h.dev.watchdog(t0 + 9 * interval), 0);
}

#[test]
fn dropped_frames_are_accumulated_across_resets() {
    let (h, iface, _rec) = running_sg();
    h.m.set_ch_reg(0, channel::DROPPED_FRAMES, 5);
    assert_eq!(h.dev.channel_stats(0).unwrap().dropped_by_board, 5);
    iface.program(0, 1, &frame(1));
    h.m.set_ch_reg(0, channel::DROPPED_FRAMES, 7);
    h.m.halt(0);
    h.interrupt(1);
    assert_eq!(h.dev.channel_stats(0).unwrap().resets, 1);
    assert_eq!(h.dev.channel_stats(0).unwrap().dropped_by_board, 7);
    // Each look that found new drops reported them, once.
    let drops: Vec<_> = h.m.reports.borrow().iter().filter(|e| matches!(e, CoreEvent::DroppedByBoard { .. })).copied().collect();
    assert_eq!(drops, [CoreEvent::DroppedByBoard { channel: 0, frames: 5 }, CoreEvent::DroppedByBoard { channel: 0, frames: 2 }]);
    h.m.set_ch_reg(0, channel::DROPPED_FRAMES, 9);
    assert_eq!(h.dev.channel_stats(0).unwrap().dropped_by_board, 9);
}

#[test]
fn surprise_removal_completes_everything_without_touching_registers() {
    let (h, iface, rec) = running_sg();
    iface.program(0, 1, &frame(1));
    iface.program(0, 2, &frame(2));
    h.m.gone.set(true);
    h.m.accesses.set(0);
    h.dev.surprise_remove();
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_DEVICE_REMOVED), (2, STATUS_DEVICE_REMOVED)]);
    assert_eq!(iface.program(0, 3, &frame(3)), STATUS_DEVICE_REMOVED);
    assert_eq!(iface.config(0).0, STATUS_DEVICE_REMOVED);
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(iface.register(0, None), STATUS_SUCCESS);
    h.m.irql.set(DISPATCH_LEVEL);
    h.dev.dpc(1);
    h.m.irql.set(0);
    assert_eq!(h.dev.watchdog(1 << 40), 0);
    iface.dereference();
    h.dev.stop();
    assert_eq!(h.m.accesses.get(), 0, "no register access after surprise removal");
    assert_eq!(h.m.live_allocations(), 0);
}

#[test]
fn cb_slots_complete_to_the_child_and_return_in_fifo_order() {
    let (h, iface, rec) = running_cb();
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN);
    assert_eq!(h.m.ch_reg(0, channel::LINE_PITCH), 256, "200-byte lines at a 256-byte slot pitch");
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 4);
    assert_eq!(h.m.ch_reg(0, channel::SLOT_STRIDE), 4_149_248);
    let (_, ring) = iface.slot_ring(0);
    assert_eq!((ring.slot_count, ring.line_pitch), (4, 256));
    h.m.complete_slot(0, 2560);
    h.m.complete_slot(0, 2560);
    h.interrupt(1);
    let got = rec.take();
    assert_eq!(got.iter().map(|c| (c.kind, c.tag, c.bytes_written)).collect::<Vec<_>>(), vec![
        (CompletionKind::Slot as u32, 0, 2560),
        (CompletionKind::Slot as u32, 1, 2560)
    ]);
    assert_eq!(iface.return_slot(0, 1), STATUS_INVALID_PARAMETER, "out of order");
    assert_eq!(iface.return_slot(0, 3), STATUS_INVALID_PARAMETER, "the board's");
    assert_eq!(iface.return_slot(0, 4), STATUS_INVALID_PARAMETER, "out of range");
    assert_eq!(iface.return_slot(0, 0), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 5);
    assert_eq!(iface.return_slot(0, 1), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 6);
}

#[test]
fn cb_oversized_record_resets_and_the_child_keeps_its_slots() {
    let (h, iface, rec) = running_cb();
    h.m.complete_slot(0, 2560);
    h.interrupt(1);
    assert_eq!(rec.take().len(), 1, "slot 0 is the child's");
    h.m.push_record(0, CompletionRecord { index: 1, byte_count: 4_149_249, ..Default::default() });
    h.interrupt(2);
    assert!(rec.take().is_empty(), "the bad slot is not delivered");
    let stats = h.dev.channel_stats(0).unwrap();
    assert_eq!((stats.bad_records, stats.resets), (1, 1));
    assert_eq!(stats.last_fault, Some(RecordFault::ByteCountTooLarge));
    // Restarted; slot 0 still the child's, so the board (restarting at slot 0) waits for it.
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 0);
    assert_eq!(iface.return_slot(0, 0), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 4);
    h.m.complete_slot(0, 2560);
    h.interrupt(3);
    assert_eq!(rec.take().iter().map(|c| (c.tag, c.status)).collect::<Vec<_>>(), vec![(0, STATUS_SUCCESS)]);
}

#[test]
fn cb_record_for_the_wrong_slot_resets() {
    let (h, _iface, rec) = running_cb();
    h.m.push_record(0, CompletionRecord { index: 2, byte_count: 2560, ..Default::default() });
    h.interrupt(1);
    assert!(rec.take().is_empty());
    assert_eq!(h.dev.channel_stats(0).unwrap().last_fault, Some(RecordFault::Unexpected));
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 4, "no child slots: all back to the board");
}

#[test]
fn cb_watchdog_resets_when_the_board_holds_slots_and_completes_none() {
    let (h, _iface, _rec) = running_cb();
    assert_eq!(h.dev.watchdog(0), 0);
    assert_eq!(h.dev.watchdog(4 * 333_333 + 1), 1);
    assert_eq!(h.dev.channel_stats(0).unwrap().watchdog_resets, 1);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 4);
}

#[test]
fn cb_stop_reclaims_board_slots() {
    let (h, iface, rec) = running_cb();
    h.m.complete_slot(0, 2560);
    h.interrupt(1);
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert!(rec.take().len() == 1, "no completion for reclaimed slots");
    // The child may still hand back the slot it held.
    assert_eq!(iface.return_slot(0, 0), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(100, 10, 0)), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 4);
}

/// The board vanishes and the ISR reads all ones, and the child stops its
/// pin before Plug and Play's `IRP_MN_SURPRISE_REMOVAL` reaches the bus (a
/// race the application wins whenever it notices first): `StopChannel`
/// must still stop the channel and complete its posted frames, so that
/// `RegisterCompletion(NULL)` succeeds and the child can unload.
#[test]
fn stop_channel_after_the_isr_saw_the_board_gone_completes_posted_frames() {
    let (h, iface, rec) = running_sg();
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 2, &frame(2)), STATUS_SUCCESS);
    h.m.gone.set(true);
    assert!(h.dev.isr());
    h.m.accesses.set(0);
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_DEVICE_REMOVED), (2, STATUS_DEVICE_REMOVED)]);
    assert_eq!(iface.register(0, None), STATUS_SUCCESS, "the child can unregister");
    assert_eq!(iface.stop(0), STATUS_SUCCESS, "idempotent");
    assert_eq!(h.m.accesses.get(), 0, "no register access once the board read as gone");
    h.dev.surprise_remove();
    assert!(rec.take().is_empty(), "nothing completed twice");
    iface.dereference();
    h.dev.stop();
    assert_eq!(h.m.live_allocations(), 0);
}

/// Records each completion with whether the fake board's engine could
/// still write memory when it arrived (a reset not yet complete).
struct DmaWitness {
    m: std::rc::Rc<super::fake::Machine>,
    seen: RefCell<Vec<(u32, NtStatus, bool)>>,
}

impl DmaWitness {
    #[allow(clippy::unnecessary_box_returns, reason = "the callback context needs a stable address")]
    fn new(h: &Harness) -> Box<Self> {
        Box::new(Self { m: h.m.clone(), seen: RefCell::new(Vec::new()) })
    }

    fn take(&self) -> Vec<(u32, NtStatus, bool)> {
        std::mem::take(&mut *self.seen.borrow_mut())
    }
}

unsafe extern "system" fn witness(context: *mut c_void, completion: *const Completion) {
    // SAFETY: test: `context` is the boxed DmaWitness the test keeps alive.
    let w = unsafe { &*context.cast::<DmaWitness>() };
    // SAFETY: valid for the call per the contract.
    let c = unsafe { completion.read() };
    w.seen.borrow_mut().push((c.tag, c.status, w.m.dma_outstanding(c.channel)));
}

fn register_witness(iface: &Iface, ch: u32, w: &DmaWitness) -> NtStatus {
    let context = std::ptr::from_ref(w).cast_mut().cast();
    // SAFETY: test: live device; the witness outlives the registration.
    unsafe { (iface.0.register_completion.unwrap())(iface.ctx(), ch, Some(witness), context) }
}

/// An S/G device whose engine takes `reset_reads` `STATUS` reads to finish
/// a reset, channel 0 running with a witness and frames 1 and 2 posted.
fn sg_with_slow_reset(reset_reads: u32) -> (Harness, Iface, Box<DmaWitness>) {
    let h = Harness::sg(1);
    h.m.reset_reads.set(reset_reads);
    let iface = h.start();
    let w = DmaWitness::new(&h);
    assert_eq!(register_witness(&iface, 0, &w), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 2, &frame(2)), STATUS_SUCCESS);
    (h, iface, w)
}

/// PCI Express writes are posted and the engine may be mid-burst when `CTRL_RESET`
/// arrives: `StopChannel` reads `STATUS` back until `STATUS_RUNNING` clears
/// before it hands any frame back (else the board could write a buffer the
/// application already has: an IOMMU fault, or silent corruption).
#[test]
fn stop_channel_hands_frames_back_only_after_the_reset_completed() {
    let (h, iface, w) = sg_with_slow_reset(3);
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(w.take(), vec![(1, STATUS_CANCELLED, false), (2, STATUS_CANCELLED, false)], "(tag, status, DMA outstanding)");
    assert!(!h.m.dma_outstanding(0));
}

/// The same for the reset after a refused record: the frames are failed and
/// the channel restarted only once the engine has stopped writing.
#[test]
fn a_reset_after_a_bad_record_waits_for_the_engine_before_failing_frames() {
    let (h, _iface, w) = sg_with_slow_reset(3);
    h.m.push_record(0, CompletionRecord { index: u32::MAX, byte_count: 1, tag: 1, ..Default::default() });
    h.interrupt(1);
    assert_eq!(w.take(), vec![(1, STATUS_IO_DEVICE_ERROR, false), (2, STATUS_IO_DEVICE_ERROR, false)]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE, "restarted after the reset completed");
    assert_eq!(h.dev.channel_stats(0).unwrap().last_fault, Some(RecordFault::IndexOutOfRange));
}

/// An engine that never finishes its reset: nothing it could write is
/// handed back (frames held, unregistering and restarting refused) and the
/// `STATUS` poll is bounded; once it stops, the next look (the watchdog's)
/// completes the reset and hands the frames back.
#[test]
fn a_reset_that_never_completes_hands_nothing_back_until_the_engine_stops() {
    let (h, iface, w) = sg_with_slow_reset(1);
    h.m.reset_stuck.set(true);
    let before = h.m.accesses.get();
    assert_eq!(iface.stop(0), capdma_interface::status::STATUS_PENDING, "the frames are held: said so");
    let accesses = h.m.accesses.get() - before;
    let bound = usize::try_from(capdma_interface::regs::RESET_POLL_READS).unwrap();
    assert!(accesses > bound && accesses < bound + 16, "a bounded poll ({accesses} register accesses)");
    assert!(w.take().is_empty(), "frames held while the engine may write them");
    assert!(h.m.dma_outstanding(0));
    assert_eq!(iface.register(0, None), capdma_interface::status::STATUS_DEVICE_BUSY, "the frames must still come back");
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), capdma_interface::status::STATUS_DEVICE_BUSY);
    h.m.set_reg(global::INT_STATUS, int_done(0));
    h.interrupt(2);
    assert!(w.take().is_empty(), "still held: the engine still runs");
    assert_eq!(h.dev.watchdog(3), 0, "still stuck");
    h.m.finish_resets();
    assert_eq!(h.dev.watchdog(4), 1, "the reset completed at the watchdog's look");
    assert_eq!(w.take(), vec![(1, STATUS_CANCELLED, false), (2, STATUS_CANCELLED, false)]);
    assert_eq!(iface.register(0, None), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
}

/// A device stop with an engine that never stopped: that channel's ring and
/// completion queue are never freed and the adapter never put (leaked on
/// purpose, not reused under the board's DMA); the other channel's buffers
/// are freed.
#[test]
fn a_device_stop_frees_nothing_an_engine_that_never_stopped_could_write() {
    let h = Harness::cb(2);
    let iface = h.start();
    assert_eq!(iface.start(0, &yuy2(100, 10, 0)), STATUS_SUCCESS);
    h.m.reset_stuck.set(true);
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    iface.dereference();
    h.dev.stop();
    assert_eq!(h.dev.state(), crate::device::DeviceState::Stopped);
    assert_eq!(h.m.live_allocations(), 2, "channel 0's ring and queue kept, channel 1's freed");
    assert!(!h.m.events.borrow().iter().any(|e| matches!(e, super::fake::Event::PutAdapter(_))), "not put with buffers out");
}

/// A board left running (by an earlier driver instance) whose engine will
/// not stop fails the start before it is given any buffer.
#[test]
fn a_start_whose_engine_reset_never_completes_fails_cleanly() {
    let h = Harness::sg(1);
    h.m.set_ch_reg(0, channel::CTRL, CTRL_RUN | CTRL_SG_MODE);
    h.m.reset_stuck.set(true);
    assert_eq!(h.dev.start(&crate::config::StartConfig::DEFAULT), Err(STATUS_IO_DEVICE_ERROR));
    assert_eq!(h.m.live_allocations(), 0);
    assert!(h.m.events.borrow().iter().any(|e| matches!(e, super::fake::Event::PutAdapter(_))));
    h.m.finish_resets();
    assert!(h.dev.start(&crate::config::StartConfig::DEFAULT).is_ok(), "starts once the engine stops");
}

/// An error bit the ISR took for an earlier run of the channel (stopped and
/// started again before the DPC ran) does not reset the new run: the DPC
/// acts on an error only when the engine reports `STATUS_HALTED`.
#[test]
fn a_stale_error_bit_does_not_reset_a_restarted_channel() {
    let (h, iface, rec) = running_sg();
    h.m.set_reg(global::INT_STATUS, int_error(0));
    assert!(h.dev.isr(), "the error bit is taken into pending");
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    let resets = h.dev.channel_stats(0).unwrap().resets;
    h.dev.dpc(1);
    assert_eq!(h.dev.channel_stats(0).unwrap().resets, resets, "the new run is not reset");
    assert_eq!(h.dev.channel_stats(0).unwrap().board_errors, 0);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE, "still running");
    drop(rec);
}
