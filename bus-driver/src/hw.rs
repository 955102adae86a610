//! Register-level helpers: one channel's register block, and the channel
//! programming sequence of `docs/architecture.md` §1 ("Start of a channel").
use crate::channel::engine::Engine;
use crate::channel::{CompletionQueue, RunState};
use crate::ports::RegisterPort;
use capdma_interface::regs::{channel, channel_base, CTRL_RESET, RESET_POLL_READS, STATUS_RUNNING};
use core::sync::atomic::{fence, Ordering};

/// Register access to channel `ch`'s block (`0x100 + 0x80 * ch`).
pub(crate) struct ChannelRegs<'a, R: RegisterPort> {
    regs: &'a R,
    base: u32,
    ch: u32,
}

impl<'a, R: RegisterPort> ChannelRegs<'a, R> {
    /// The block of channel `ch` (`ch < MAX_CHANNELS`, checked by the callers).
    pub fn new(regs: &'a R, ch: u32) -> Self {
        Self { regs, base: channel_base(ch), ch }
    }

    /// The channel number.
    pub const fn channel(&self) -> u32 {
        self.ch
    }

    /// [`RegisterPort::report`] on the board's port.
    pub fn report(&self, event: crate::ports::CoreEvent) {
        self.regs.report(event);
    }

    /// `READ_REGISTER_ULONG(base + offset)`.
    pub fn read(&self, offset: u32) -> u32 {
        self.regs.read32(self.base.wrapping_add(offset))
    }

    /// `WRITE_REGISTER_ULONG(base + offset, value)`.
    pub fn write(&self, offset: u32, value: u32) {
        self.regs.write32(self.base.wrapping_add(offset), value);
    }
}

/// How a channel reset ended (the contract of
/// `capdma_interface::regs::RESET_POLL_READS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResetOutcome {
    /// `STATUS_RUNNING` read 0: no DMA of the channel is outstanding.
    Complete,
    /// `STATUS` read all ones: the board is gone and cannot master the bus.
    Gone,
    /// `STATUS_RUNNING` still set after the reads allowed: the engine may
    /// still write the memory of its frame.
    Stuck,
}

/// Reads `STATUS` until `STATUS_RUNNING` reads 0, at most `reads` times
/// (at least once). Any IRQL (register reads only; bounded).
pub(crate) fn poll_reset<R: RegisterPort>(cr: &ChannelRegs<'_, R>, reads: u32) -> ResetOutcome {
    for _ in 0..reads.max(1) {
        let status = cr.read(channel::STATUS);
        if status == u32::MAX {
            return ResetOutcome::Gone;
        }
        if status & STATUS_RUNNING == 0 {
            return ResetOutcome::Complete;
        }
        core::hint::spin_loop();
    }
    ResetOutcome::Stuck
}

/// Resets the channel's engine and waits for the reset to complete:
/// writes `CTRL_RESET`, then reads `STATUS` back (flushing the posted
/// write) until `STATUS_RUNNING` clears, at most `RESET_POLL_READS` reads.
/// Only after [`ResetOutcome::Complete`] (or [`ResetOutcome::Gone`]) may
/// the memory of the channel's in-flight frames be handed back.
pub(crate) fn reset_channel<R: RegisterPort>(cr: &ChannelRegs<'_, R>) -> ResetOutcome {
    cr.write(channel::CTRL, CTRL_RESET);
    poll_reset(cr, RESET_POLL_READS)
}

/// Low and high 32 bits of a logical address.
#[allow(clippy::cast_possible_truncation, reason = "the halves are taken deliberately")]
pub(crate) const fn split_u64(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

/// Steps 1–4 and the final `CTRL` write of step 5 (the caller has set the
/// channel's `INT_ENABLE` bits): reset, program the format, the engine's
/// ring ([`Engine::program_ring`]) and the completion queue, let the engine
/// arm itself ([`Engine::arm`]: the slot engine hands the board its slots),
/// run with the engine's `CTRL` bits. Also used to restart a channel after
/// a reset. Only ever called on an engine that is stopped with its reset
/// complete ([`reset_channel`]), so the `CTRL_RESET` here has no DMA to
/// wait for.
pub(crate) fn program_and_run<R: RegisterPort>(cr: &ChannelRegs<'_, R>, cq: &CompletionQueue, engine: &Engine, run: &RunState) {
    cr.write(channel::CTRL, CTRL_RESET);
    cr.write(channel::FOURCC, run.format.fourcc);
    cr.write(channel::WIDTH, run.format.width);
    cr.write(channel::HEIGHT, run.format.height);
    cr.write(channel::LINE_PITCH, run.geometry.line_pitch);
    cr.write(channel::FRAME_INTERVAL, run.format.frame_interval);
    engine.program_ring(cr);
    cq.program(cr);
    let ctrl = engine.arm(cr);
    // Everything above is visible to the board before it runs.
    fence(Ordering::Release);
    cr.write(channel::CTRL, ctrl);
}
