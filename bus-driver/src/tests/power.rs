//! Device power (`crate::power`): the policy decisions, and what leaving
//! and re-entering D0 does to the board and to the children.
//!
//! The fake board plays D3 with `Machine::gone` (reads all ones, writes
//! dropped, as a PCI function whose memory decoding is off) and the return
//! to D0 with [`lose_context`] (every register the driver programs back to
//! its reset value).
use super::fake::Machine;
use super::{frame, running_cb, running_sg, statuses, yuy2, Harness, Iface, Recorder};
use crate::power::{device_power_action, device_state_for, DevicePowerAction, DevicePowerState, SystemPowerState};
use crate::ports::DISPATCH_LEVEL;
use capdma_interface::regs::{channel, global, int_done, int_error, BAR0_BYTES, CTRL_RUN, CTRL_SG_MODE};
use capdma_interface::status::{
    STATUS_CANCELLED, STATUS_DEVICE_NOT_READY, STATUS_IO_DEVICE_ERROR, STATUS_SUCCESS,
};
use capdma_interface::table::Completion;

/// The board comes back to D0 without its context: every register but the
/// read-only identity ones reads 0 (D3hot resets the function).
fn lose_context(m: &Machine) {
    let keep = [global::ID, global::CAPS, global::MAX_TRANSFER, global::MAX_FRAME_BYTES];
    for offset in (0..BAR0_BYTES).step_by(4) {
        if !keep.contains(&offset) {
            m.set_reg(offset, 0);
        }
    }
}

/// The board leaves D0 (after `power_down`) and register accesses are counted from 0.
fn enter_d3(h: &Harness) {
    h.m.gone.set(true);
    h.m.accesses.set(0);
}

/// The board is powered again, its registers at their reset values.
fn leave_d3(h: &Harness) {
    h.m.gone.set(false);
    lose_context(&h.m);
}

#[test]
fn the_policy_owner_asks_d0_in_s0_and_d3_in_every_sleep_state() {
    assert_eq!(device_state_for(SystemPowerState::Working), DevicePowerState::D0);
    for s in [
        SystemPowerState::Sleeping1,
        SystemPowerState::Sleeping2,
        SystemPowerState::Sleeping3,
        SystemPowerState::Hibernate,
        SystemPowerState::Shutdown,
    ] {
        assert_eq!(device_state_for(s), DevicePowerState::D3, "{s:?}");
    }
    // wdm.h values: PowerSystemUnspecified 0 .. PowerSystemMaximum 7.
    assert_eq!(SystemPowerState::from_raw(1), Some(SystemPowerState::Working));
    assert_eq!(SystemPowerState::from_raw(4), Some(SystemPowerState::Sleeping3));
    assert_eq!(SystemPowerState::from_raw(6), Some(SystemPowerState::Shutdown));
    for raw in [0, 7, -1, i32::MAX] {
        assert_eq!(SystemPowerState::from_raw(raw), None, "{raw}");
    }
    // PowerDeviceUnspecified 0, D0 1 .. D3 4, PowerDeviceMaximum 5.
    for d in [DevicePowerState::D0, DevicePowerState::D1, DevicePowerState::D2, DevicePowerState::D3] {
        assert_eq!(DevicePowerState::from_raw(d.raw()), Some(d));
    }
    assert_eq!(DevicePowerState::D0.raw(), 1);
    assert_eq!(DevicePowerState::D3.raw(), 4);
    for raw in [0, 5, -1] {
        assert_eq!(DevicePowerState::from_raw(raw), None, "{raw}");
    }
}

#[test]
fn leaving_d0_quiesces_before_the_irp_goes_down_and_d0_restores_after_it() {
    assert_eq!(device_power_action(DevicePowerState::D0), DevicePowerAction::PassDownThenRestore);
    for d in [DevicePowerState::D1, DevicePowerState::D2, DevicePowerState::D3] {
        assert_eq!(device_power_action(d), DevicePowerAction::QuiesceThenPassDown, "{d:?}");
    }
}

#[test]
fn power_down_stops_running_engines_cancels_posted_frames_and_masks_interrupts() {
    let (h, iface, rec) = running_sg();
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 2, &frame(2)), STATUS_SUCCESS);
    h.m.set_reg(global::INT_STATUS, int_done(0));
    assert!(h.dev.in_d0());
    assert_eq!(h.dev.power_down(), 1, "channel 0 ran, channel 1 did not");
    assert!(!h.dev.in_d0());
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED), (2, STATUS_CANCELLED)]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), 0, "engine reset, not running");
    assert_eq!(h.m.reg(global::INT_ENABLE), 0);
    assert_eq!(h.m.reg(global::INT_STATUS), 0, "pending bits acknowledged");
    assert!(!h.dev.is_removed(), "out of D0 is not removed");
    assert_eq!(h.dev.power_down(), 0, "idempotent");
}

#[test]
fn nothing_touches_a_register_out_of_d0_and_the_board_is_not_taken_for_gone() {
    let (h, iface, rec) = running_sg();
    h.dev.power_down();
    enter_d3(&h);
    // A neighbour on a shared line interrupts: the ISR must not read the
    // all-ones INT_STATUS of a board in D3 (it would mark it gone).
    assert!(!h.dev.isr());
    h.m.irql.set(DISPATCH_LEVEL);
    h.dev.dpc(1);
    h.m.irql.set(0);
    assert_eq!(h.dev.watchdog(1 << 40), 0);
    // The child keeps streaming into the bookkeeping.
    assert_eq!(iface.program(0, 3, &frame(3)), STATUS_SUCCESS);
    assert_eq!(iface.config(0).0, STATUS_SUCCESS);
    let _ = h.dev.channel_stats(0);
    // Starting a channel would program the board: not now.
    assert_eq!(iface.start(1, &yuy2(64, 4, 128)), STATUS_DEVICE_NOT_READY);
    assert_eq!(h.m.accesses.get(), 0, "no register access out of D0");
    assert!(!h.dev.is_removed());
    assert!(rec.take().is_empty());
}

#[test]
fn power_up_restarts_a_running_sg_channel_and_hands_over_frames_posted_meanwhile() {
    let (h, iface, rec) = running_sg();
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    h.dev.power_down();
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED)]);
    enter_d3(&h);
    assert_eq!(iface.program(0, 2, &frame(2)), STATUS_SUCCESS);
    leave_d3(&h);
    // As in the D0 IRP's completion routine.
    h.m.irql.set(DISPATCH_LEVEL);
    assert_eq!(h.dev.power_up(), 1);
    h.m.irql.set(0);
    assert!(h.dev.in_d0());
    // The format, the rings and the interrupt enable are back.
    assert_eq!(h.m.ch_reg(0, channel::WIDTH), 64);
    assert_eq!(h.m.ch_reg(0, channel::HEIGHT), 4);
    assert_eq!(h.m.ch_reg(0, channel::LINE_PITCH), 128);
    assert_ne!(h.m.ch_reg(0, channel::RING_BASE_LO) | h.m.ch_reg(0, channel::RING_BASE_HI), 0);
    assert_ne!(h.m.ch_reg(0, channel::CQ_BASE_LO) | h.m.ch_reg(0, channel::CQ_BASE_HI), 0);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 1, "the frame posted out of D0, one descriptor");
    assert_eq!(h.m.reg(global::INT_ENABLE), int_done(0) | int_error(0));
    assert_eq!(h.m.ch_reg(1, channel::CTRL), 0, "channel 1 was not running");
    // It completes as usual.
    assert_eq!(h.m.complete_sg_frame(0).tag, 2);
    assert!(h.interrupt(10));
    assert_eq!(statuses(&rec.take()), vec![(2, STATUS_SUCCESS)]);
    assert_eq!(iface.program(0, 3, &frame(3)), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 2);
    assert_eq!(h.dev.power_up(), 0, "idempotent");
}

#[test]
fn a_cb_channel_keeps_the_childs_slots_across_a_power_cycle() {
    let (h, iface, rec) = running_cb();
    // The board filled slot 0; the child holds it while the system sleeps.
    h.m.complete_slot(0, 2560);
    h.interrupt(1);
    assert_eq!(rec.take().len(), 1);
    assert_eq!(h.dev.power_down(), 1);
    enter_d3(&h);
    assert_eq!(iface.slot_ring(0).0, STATUS_SUCCESS);
    leave_d3(&h);
    assert_eq!(h.dev.power_up(), 1);
    // Restarted at slot 0, which is still the child's: the board waits for it.
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN);
    assert_eq!(h.m.ch_reg(0, channel::LINE_PITCH), 256);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 0);
    assert_eq!(h.m.reg(global::INT_ENABLE), int_done(0) | int_error(0));
    assert_eq!(iface.return_slot(0, 0), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 4, "every slot back to the board");
    h.m.complete_slot(0, 2560);
    h.interrupt(2);
    assert_eq!(statuses(&rec.take()), vec![(0, STATUS_SUCCESS)]);
}

#[test]
fn a_slot_returned_out_of_d0_goes_back_to_the_board_at_power_up() {
    let (h, iface, rec) = running_cb();
    h.m.complete_slot(0, 2560);
    h.interrupt(1);
    assert_eq!(rec.take().len(), 1);
    h.dev.power_down();
    enter_d3(&h);
    assert_eq!(iface.return_slot(0, 0), STATUS_SUCCESS);
    assert_eq!(h.m.accesses.get(), 0);
    leave_d3(&h);
    assert_eq!(h.dev.power_up(), 1);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 4);
}

#[test]
fn a_channel_stopped_out_of_d0_stays_stopped() {
    let (h, iface, rec) = running_sg();
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    h.dev.power_down();
    enter_d3(&h);
    assert_eq!(iface.program(0, 2, &frame(2)), STATUS_SUCCESS);
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED), (2, STATUS_CANCELLED)]);
    assert_eq!(iface.register(0, None), STATUS_SUCCESS);
    assert_eq!(h.m.accesses.get(), 0);
    leave_d3(&h);
    assert_eq!(h.dev.power_up(), 0);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), 0);
    assert_eq!(h.m.reg(global::INT_ENABLE), 0, "its interrupts left the shadow");
    // And it starts again as usual.
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
}

#[test]
fn a_board_that_does_not_come_back_is_taken_for_gone() {
    let (h, iface, _rec) = running_sg();
    h.dev.power_down();
    enter_d3(&h);
    assert_eq!(h.dev.power_up(), 0);
    assert!(h.dev.in_d0());
    assert!(h.dev.is_removed(), "ID read all ones after the D0 IRP");
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
}

#[test]
fn power_irps_around_a_stopped_device_change_nothing_and_a_start_is_in_d0() {
    let h = Harness::sg(1);
    assert_eq!(h.dev.power_down(), 0);
    assert_eq!(h.dev.power_up(), 0);
    assert!(h.dev.in_d0());
    // Stopped while out of D0 (the device was removed from a sleeping
    // system, say): the next start finds it in D0.
    h.dev.power_down();
    assert!(!h.dev.in_d0());
    let iface = h.start();
    assert!(h.dev.in_d0());
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
}

#[test]
fn a_watchdog_reset_rewrites_the_interrupt_enable() {
    let (h, iface, rec) = running_sg();
    let interval = 333_333;
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(h.dev.watchdog(1), 0);
    // The board lost its registers behind the driver's back: it stops
    // completing, and its INT_ENABLE is 0.
    lose_context(&h.m);
    assert_eq!(h.dev.watchdog(1 + 4 * interval + 1), 1);
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_IO_DEVICE_ERROR)]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
    assert_eq!(h.m.reg(global::INT_ENABLE), int_done(0) | int_error(0), "restored from the shadow");
    assert_eq!(iface.program(0, 2, &frame(2)), STATUS_SUCCESS);
    h.m.complete_sg_frame(0);
    assert!(h.interrupt(2 * interval), "the channel interrupts again");
    assert_eq!(statuses(&rec.take()), vec![(2, STATUS_SUCCESS)]);
}

/// Leaving D0 resets each running engine like every other reset: `STATUS`
/// is read back until no DMA is outstanding before any frame is handed back
/// (else the board could still write a buffer the application has).
#[test]
fn power_down_hands_frames_back_only_after_the_engine_stopped_writing() {
    let (h, iface, rec) = running_sg();
    h.m.reset_reads.set(3);
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(h.dev.power_down(), 1);
    assert!(!h.m.dma_outstanding(0), "the reset was read back to completion");
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED)]);
}

/// An engine whose reset never completes before the function leaves D0:
/// nothing is handed back then; the power-up finishes the reset, hands the
/// frames back and restarts the channel.
#[test]
fn a_reset_stuck_at_power_down_is_finished_at_power_up() {
    let (h, iface, rec) = running_sg();
    h.m.reset_reads.set(1);
    h.m.reset_stuck.set(true);
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(h.dev.power_down(), 1);
    assert!(rec.take().is_empty(), "held while the engine may still write");
    enter_d3(&h);
    leave_d3(&h);
    h.m.finish_resets();
    assert_eq!(h.dev.power_up(), 1, "restarted");
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED)]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
}

/// A child callback that, while `power_down` delivers channel 0's cancelled
/// frames, has channel 1 (not yet stopped) assert its level-triggered
/// interrupt and runs the ISR, as the kernel would on the shared line.
struct IsrDuringPowerDown {
    dev: *const crate::device::BusDevice<super::fake::FakePlatform>,
    m: std::rc::Rc<Machine>,
    /// (claimed, `INT_STATUS` after the ISR) per callback.
    seen: std::cell::RefCell<Vec<(bool, u32)>>,
}

unsafe extern "system" fn isr_during_power_down(context: *mut core::ffi::c_void, _: *const Completion) {
    // SAFETY: test: `context` is the boxed IsrDuringPowerDown the test keeps alive.
    let t = unsafe { &*context.cast::<IsrDuringPowerDown>() };
    t.m.set_reg(global::INT_STATUS, int_done(1));
    // SAFETY: test: the boxed device outlives the registration.
    let claimed = unsafe { &*t.dev }.isr();
    t.seen.borrow_mut().push((claimed, t.m.reg(global::INT_STATUS)));
}

/// Until `power_down` has written `INT_ENABLE = 0`, a channel it has not
/// stopped yet may interrupt: the ISR must claim and acknowledge that
/// level-triggered interrupt (else an unclaimed level interrupt storms on
/// the shared line). After `power_down` it touches nothing.
#[test]
fn the_isr_claims_the_boards_interrupt_until_power_down_disabled_it() {
    let h = Harness::sg(2);
    let iface = h.start();
    let t = Box::new(IsrDuringPowerDown {
        dev: &raw const *h.dev,
        m: h.m.clone(),
        seen: std::cell::RefCell::new(Vec::new()),
    });
    let ctx = std::ptr::from_ref(&*t).cast_mut().cast();
    // SAFETY: test: live device; the context outlives the registration.
    let status = unsafe { (iface.0.register_completion.unwrap())(iface.ctx(), 0, Some(isr_during_power_down), ctx) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    assert_eq!(iface.start(1, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(h.dev.power_down(), 2);
    assert_eq!(*t.seen.borrow(), vec![(true, 0)], "claimed and acknowledged during power_down");
    assert_eq!(h.m.reg(global::INT_ENABLE), 0);
    h.m.set_reg(global::INT_STATUS, int_done(1));
    h.m.accesses.set(0);
    assert!(!h.dev.isr(), "interrupts are off: another device's interrupt");
    assert_eq!(h.m.accesses.get(), 0);
    h.m.irql.set(DISPATCH_LEVEL);
    h.dev.dpc(1);
    h.m.irql.set(0);
    assert_eq!(h.m.accesses.get(), 0, "the DPC dropped the bits");
}

/// Runs a hook from inside a child callback (as another processor would
/// between two steps of the bus), recording the completions.
struct Hooked {
    hook: Box<dyn Fn()>,
    got: std::cell::RefCell<Vec<Completion>>,
}

unsafe extern "system" fn hooked(context: *mut core::ffi::c_void, completion: *const Completion) {
    // SAFETY: test: `context` is the boxed Hooked the test keeps alive.
    let t = unsafe { &*context.cast::<Hooked>() };
    // SAFETY: valid for the call per the contract.
    t.got.borrow_mut().push(unsafe { completion.read() });
    (t.hook)();
}

fn register_hooked(iface: &Iface, ch: u32, t: &Hooked) {
    let ctx = std::ptr::from_ref(t).cast_mut().cast();
    // SAFETY: test: live device; the context outlives the registration.
    let status = unsafe { (iface.0.register_completion.unwrap())(iface.ctx(), ch, Some(hooked), ctx) };
    assert_eq!(status, STATUS_SUCCESS);
}

/// `power_up` marks the device in D0 before it resumes each channel: a
/// DPC (or the watchdog) running in between must not finish a channel's
/// pending power-down reset and program it, or the resume programs the
/// running engine a second time (`CTRL_RESET` to a running engine).
#[test]
fn a_channel_is_programmed_once_at_power_up_even_if_a_dpc_runs_before_its_resume() {
    let h = Harness::sg(2);
    let iface = h.start();
    let dev: *const crate::device::BusDevice<super::fake::FakePlatform> = &raw const *h.dev;
    let t = Box::new(Hooked {
        hook: Box::new(move || {
            // SAFETY: test: the boxed device outlives the registrations.
            let dev = unsafe { &*dev };
            dev.dpc(1);
            let _ = dev.watchdog(1 << 40);
        }),
        got: std::cell::RefCell::new(Vec::new()),
    });
    for ch in 0..2 {
        register_hooked(&iface, ch, &t);
        assert_eq!(iface.start(ch, &yuy2(64, 4, 128)), STATUS_SUCCESS);
        assert_eq!(iface.program(ch, 10 + ch, &frame(10 + ch)), STATUS_SUCCESS);
    }
    h.m.reset_reads.set(1);
    h.m.reset_stuck.set(true);
    assert_eq!(h.dev.power_down(), 2);
    assert!(t.got.borrow().is_empty(), "both resets pending: frames held");
    enter_d3(&h);
    leave_d3(&h);
    h.m.finish_resets();
    h.m.writes.borrow_mut().clear();
    // Channel 0's resume delivers its held frame; the hook's DPC then looks
    // at channel 1 before power_up has resumed it.
    assert_eq!(h.dev.power_up(), 2);
    let ctrl1 = capdma_interface::regs::channel_base(1) + channel::CTRL;
    let runs = h.m.writes.borrow().iter().filter(|&&(o, v)| o == ctrl1 && v & CTRL_RUN != 0).count();
    assert_eq!(runs, 1, "channel 1 programmed once, by its resume");
    let got: Vec<_> = t.got.borrow().iter().map(|c| (c.channel, c.tag, c.status)).collect();
    assert_eq!(got, vec![(0, 10, STATUS_CANCELLED), (1, 11, STATUS_CANCELLED)]);
    assert_eq!(h.m.ch_reg(1, channel::CTRL), CTRL_RUN | CTRL_SG_MODE);
}

/// Between `power_up` marking the device in D0 and resuming a channel,
/// `StartChannel` answers `STATUS_DEVICE_NOT_READY` (only the resume
/// programs a suspended channel) and `ProgramFrame` keeps its bookkeeping
/// (the resume hands the descriptors over).
#[test]
fn a_suspended_channel_is_not_programmed_before_its_resume() {
    let h = Harness::sg(2);
    let iface = h.start();
    let rec = Recorder::new(&h);
    assert_eq!(iface.register(0, Some(&rec)), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    h.dev.power_down();
    enter_d3(&h);
    leave_d3(&h);
    // The window, reproduced: the device is in D0, the channels not resumed.
    h.dev.power.assume_d0();
    h.m.accesses.set(0);
    assert_eq!(iface.start(1, &yuy2(64, 4, 128)), STATUS_DEVICE_NOT_READY);
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    let _ = h.dev.channel_stats(0);
    h.m.irql.set(DISPATCH_LEVEL);
    h.dev.dpc(1);
    h.m.irql.set(0);
    assert_eq!(h.dev.watchdog(1 << 40), 0);
    assert_eq!(h.m.ch_reg(0, channel::RING_PRODUCER), 0, "not handed over yet");
    assert_eq!(h.m.ch_reg(1, channel::CTRL), 0);
    assert_eq!(h.m.accesses.get(), 0, "no register of a suspended channel touched");
    assert!(rec.take().is_empty());
}

/// `StopChannel` out of D0 on a channel whose power-down reset had not
/// completed (between `power_down` and the D-IRP the engine may still
/// write): the frames stay held, and `power_up` finishes the reset, hands
/// them back and leaves the channel stopped.
#[test]
fn a_stop_out_of_d0_keeps_a_pending_reset_for_power_up_to_finish() {
    let (h, iface, rec) = running_sg();
    h.m.reset_reads.set(1);
    h.m.reset_stuck.set(true);
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(h.dev.power_down(), 1);
    let _ = iface.stop(0);
    assert!(rec.take().is_empty(), "held: nothing read the reset complete");
    enter_d3(&h);
    leave_d3(&h);
    h.m.finish_resets();
    assert_eq!(h.dev.power_up(), 0, "stopped by the child: not restarted");
    assert_eq!(statuses(&rec.take()), vec![(1, STATUS_CANCELLED)]);
    assert_eq!(h.m.ch_reg(0, channel::CTRL), 0);
    assert_eq!(iface.register(0, None), STATUS_SUCCESS);
}

/// Surprise removal (not always physically gone: `PNP_DEVICE_FAILED`, DPC
/// containment) of a channel whose reset had not completed: the frames
/// stay held and the later stop leaks the rings and the adapter rather
/// than free them under an engine that may still write.
#[test]
fn a_surprise_removal_hands_held_frames_back_and_stop_still_leaks_the_rings() {
    let (h, iface, rec) = running_sg();
    h.m.reset_reads.set(1);
    h.m.reset_stuck.set(true);
    assert_eq!(iface.program(0, 1, &frame(1)), STATUS_SUCCESS);
    assert_eq!(h.dev.power_down(), 1);
    h.dev.surprise_remove();
    // Surprise removal completes all pending I/O: the held frame comes back
    // (holding it would hang the close and the removal) ...
    assert_eq!(statuses(&rec.take()), vec![(1, capdma_interface::status::STATUS_DEVICE_REMOVED)]);
    h.dev.stop();
    // ... but the reset was never seen to complete: the rings are leaked, not freed.
    assert!(h.m.live_allocations() > 0, "the stuck channel's rings are leaked, not freed");
}

/// A D0 IRP the lower drivers failed: the board was not powered. The core
/// must not stay out of D0 for ever: the board is marked gone.
#[test]
fn a_failed_d0_irp_marks_the_board_gone() {
    let (h, iface, _rec) = running_sg();
    h.dev.power_down();
    enter_d3(&h);
    h.dev.power_up_failed();
    assert!(h.dev.in_d0());
    assert!(h.dev.is_removed());
    assert_eq!(iface.start(1, &yuy2(64, 4, 128)), capdma_interface::status::STATUS_DEVICE_REMOVED);
    assert_eq!(iface.stop(0), STATUS_SUCCESS);
    assert_eq!(h.m.accesses.get(), 0);
}
