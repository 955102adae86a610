//! The completion-queue consumer (DPC side) and the channel reset path.
//!
//! [`ChannelState::next_delivery`] is called under the channel lock, once
//! per completion, by the delivery loop (`BusDevice::deliver`), which
//! releases the lock before calling the child back. Each call returns the
//! next completion to deliver, in this order:
//!
//! 1. S/G frames already terminated (cancelled, failed by a reset, removed);
//! 2. records from the completion queue, up to the `CQ_PRODUCER` read once
//!    this pass: the advance must be `<= cq_entries`; each record must name
//!    the expected frame or slot (see `sg` and `slots`) with a valid status
//!    and a byte count that fits. A bad value resets the channel (and is
//!    not delivered); its in-flight frames come back as (1);
//! 3. when the queue is drained and an error interrupt is pending, the
//!    channel is reset (frames come back as (1)).
//!
//! While a reset has not completed ([`ChannelState::reset_pending`]) only
//! (1) is delivered, after one more look at `STATUS`; once it has, the
//! frames it held come back as (1).
//!
//! Every reset waits for the engine (`crate::hw::reset_channel`): after
//! `CTRL_RESET` the board may still be writing the frame it was capturing,
//! so `STATUS` is read back (which also flushes the posted write) until
//! `STATUS_RUNNING` clears, before any frame is failed, any slot reclaimed
//! or the channel reprogrammed.
//!
//! At the end of the pass `CQ_CONSUMER` is written.
use super::{Callback, ChannelState, Delivery, Pass, RecordFault};
use crate::hw::{poll_reset, reset_channel, ChannelRegs, ResetOutcome};
use crate::ports::{CoreEvent, RegisterPort, ResetCause};
use capdma_interface::descriptor::{CompletionRecord, CQ_STATUS_ERROR, CQ_STATUS_OK, CQ_STATUS_PART};
use capdma_interface::regs::{channel, global, STATUS_HALTED};
use capdma_interface::status::{NtStatus, STATUS_DEVICE_REMOVED, STATUS_IO_DEVICE_ERROR, STATUS_SUCCESS};
use capdma_interface::table::{Completion, CompletionKind};
use core::sync::atomic::{fence, Ordering};

impl ChannelState {
    /// Starts a consumer pass (a DPC, a watchdog reset, a stop).
    pub fn begin_pass(&mut self) {
        self.pass = Pass::default();
    }

    /// The next completion to deliver, or `None` at the end of the pass
    /// (then `CQ_CONSUMER` has been written). `hw`: the board is present
    /// (registers may be touched). `now`: the time for the watchdog's
    /// progress mark, 100-ns units.
    pub fn next_delivery<R: RegisterPort>(
        &mut self,
        regs: &R,
        ch: u32,
        now: Option<i64>,
        hw: bool,
    ) -> Option<Delivery> {
        // Bounded: every iteration pops a terminated frame, consumes a
        // record, resets the channel (which ends the pass's queue work) or
        // ends the pass.
        loop {
            if let Some(frame) = self.engine_mut().and_then(super::engine::Engine::pop_terminated) {
                self.stats.frames_aborted = self.stats.frames_aborted.saturating_add(1);
                let status = frame.fate.unwrap_or(STATUS_IO_DEVICE_ERROR);
                let completion = Completion {
                    channel: ch,
                    kind: CompletionKind::Frame as u32,
                    tag: frame.tag,
                    bytes_written: 0,
                    status,
                    frame_number: 0,
                    timestamp: 0,
                };
                if let Some(d) = self.with_callback(completion) {
                    return Some(d);
                }
                continue;
            }
            if self.reset_pending.is_some() {
                // One more look at a reset that had not completed: its
                // frames come back as (1) once it has.
                if hw && self.finish_reset(regs, ch, 1) {
                    continue;
                }
                break;
            }
            if !hw || self.pass.over {
                break;
            }
            let (Some(cq), true) = (self.dma.as_ref().map(|d| d.cq), self.running()) else {
                break;
            };
            let cr = ChannelRegs::new(regs, ch);
            let limit = if let Some(limit) = self.pass.cq_limit {
                limit
            } else {
                let producer = cr.read(channel::CQ_PRODUCER);
                // Records written before CQ_PRODUCER was advanced are seen.
                fence(Ordering::Acquire);
                if producer.wrapping_sub(self.cq_consumer) > cq.entries {
                    self.fault(regs, ch, RecordFault::CqOverrun);
                    continue;
                }
                self.pass.cq_limit = Some(producer);
                producer
            };
            if self.cq_consumer == limit {
                // Act on an error bit only when this run's engine really
                // halted: a bit the ISR took for an earlier run (the channel
                // was stopped and started again before this DPC), or one
                // latched before StartChannel enabled it, says nothing about
                // the engine now running.
                if core::mem::take(&mut self.error_pending) && cr.read(channel::STATUS) & STATUS_HALTED != 0 {
                    self.stats.board_errors = self.stats.board_errors.saturating_add(1);
                    regs.report(CoreEvent::EngineReset { channel: ch, cause: ResetCause::ErrorInterrupt });
                    self.reset_engine(regs, ch, STATUS_IO_DEVICE_ERROR);
                } else {
                    self.pass.over = true;
                }
                continue;
            }
            let Some(record) = cq.buffer.read_record(self.cq_consumer % cq.entries) else {
                self.fault(regs, ch, RecordFault::IndexOutOfRange);
                continue;
            };
            match self.accept_record(&cr, &record, ch) {
                Err(fault) => self.fault(regs, ch, fault),
                Ok(completion) => {
                    self.cq_consumer = self.cq_consumer.wrapping_add(1);
                    self.pass.consumer_dirty = true;
                    if now.is_some() {
                        self.last_progress = now;
                    }
                    if let Some(d) = completion.and_then(|c| self.with_callback(c)) {
                        return Some(d);
                    }
                }
            }
        }
        if hw && self.pass.consumer_dirty && self.running() {
            ChannelRegs::new(regs, ch).write(channel::CQ_CONSUMER, self.cq_consumer);
            self.pass.consumer_dirty = false;
        }
        None
    }

    /// Pairs a completion with the registered callback; without one it is
    /// counted as undelivered.
    fn with_callback(&mut self, completion: Completion) -> Option<Delivery> {
        if let Some(callback) = self.callback {
            Some(Delivery { completion, callback })
        } else {
            self.stats.undelivered = self.stats.undelivered.saturating_add(1);
            None
        }
    }

    /// Checks one record and, if it passes, commits it: the frame leaves the
    /// in-flight table (S/G) or the slot becomes the child's (CB). Returns
    /// the completion (`None`: nothing to deliver).
    fn accept_record<R: RegisterPort>(
        &mut self,
        cr: &ChannelRegs<'_, R>,
        record: &CompletionRecord,
        ch: u32,
    ) -> Result<Option<Completion>, RecordFault> {
        let status = match record.status {
            CQ_STATUS_OK | CQ_STATUS_PART => STATUS_SUCCESS,
            CQ_STATUS_ERROR => STATUS_IO_DEVICE_ERROR,
            _ => return Err(RecordFault::BadStatus),
        };
        let listening = self.callback.is_some();
        let Some(engine) = self.engine_mut() else {
            return Err(RecordFault::Unexpected);
        };
        if record.status == CQ_STATUS_PART && !matches!(engine, super::engine::Engine::ScatterGather(_)) {
            return Err(RecordFault::BadStatus);
        }
        let (kind, tag) = engine.accept(cr, record, listening)?;
        if kind == CompletionKind::FramePart {
            self.stats.parts_completed = self.stats.parts_completed.saturating_add(1);
        } else if status == STATUS_SUCCESS {
            self.stats.frames_completed = self.stats.frames_completed.saturating_add(1);
        } else {
            self.stats.frames_damaged = self.stats.frames_damaged.saturating_add(1);
        }
        Ok(Some(Completion {
            channel: ch,
            kind: kind as u32,
            tag,
            bytes_written: record.byte_count,
            status,
            frame_number: record.frame_number,
            timestamp: i64::try_from(record.timestamp).unwrap_or(i64::MAX),
        }))
    }

    /// A refused record: count it and reset the channel.
    fn fault<R: RegisterPort>(&mut self, regs: &R, ch: u32, fault: RecordFault) {
        self.stats.bad_records = self.stats.bad_records.saturating_add(1);
        self.stats.last_fault = Some(fault);
        regs.report(CoreEvent::ValueRefused { channel: ch, fault });
        regs.report(CoreEvent::EngineReset { channel: ch, cause: ResetCause::RefusedValue(fault) });
        self.reset_engine(regs, ch, STATUS_IO_DEVICE_ERROR);
    }

    /// The reset path (bad record, error interrupt, watchdog): `CTRL_RESET`
    /// and the wait for the reset to complete ([`reset_channel`]: `STATUS`
    /// read back until `STATUS_RUNNING` clears, so no DMA of the channel is
    /// outstanding); then every posted S/G frame is terminated with
    /// `status`; CB: the child keeps its slots, the board gets the rest; if
    /// the child has the channel running it is reprogrammed with the same
    /// format and restarted. If the board reads as gone (ID all ones) nothing
    /// is written: the frames are terminated with `STATUS_DEVICE_REMOVED`,
    /// the channel stops and [`ChannelState::board_gone_seen`] is set. A
    /// reset that does not complete within `RESET_POLL_READS` reads hands
    /// nothing back and restarts nothing ([`ChannelState::reset_pending`];
    /// [`ChannelState::finish_reset`] does it later). Ends the pass's queue
    /// work.
    pub fn reset_engine<R: RegisterPort>(&mut self, regs: &R, ch: u32, status: NtStatus) {
        self.pass.over = true;
        self.pass.cq_limit = None;
        self.pass.consumer_dirty = false;
        self.cq_consumer = 0;
        self.error_pending = false;
        if regs.read32(global::ID) == u32::MAX {
            self.board_gone();
            return;
        }
        let cr = ChannelRegs::new(regs, ch);
        self.account_dropped(&cr);
        self.stats.resets = self.stats.resets.saturating_add(1);
        match reset_channel(&cr) {
            ResetOutcome::Complete => self.after_reset(regs, ch, status),
            ResetOutcome::Gone => self.board_gone(),
            ResetOutcome::Stuck => self.reset_pending = Some(status),
        }
    }

    /// A reset that had not completed ([`ChannelState::reset_pending`]):
    /// reads `STATUS` up to `reads` times more. Once `STATUS_RUNNING` reads
    /// 0 the reset is complete and its work is done as
    /// [`ChannelState::reset_engine`] would have (frames terminated with the
    /// saved status, restart if the child has the channel running, else the
    /// board's slots reclaimed); a board read as gone ends it as gone.
    /// Returns whether no reset is pending any more. Any IRQL up to
    /// `DISPATCH_LEVEL`, under the channel lock; bounded.
    pub fn finish_reset<R: RegisterPort>(&mut self, regs: &R, ch: u32, reads: u32) -> bool {
        let Some(status) = self.reset_pending else {
            return true;
        };
        match poll_reset(&ChannelRegs::new(regs, ch), reads) {
            ResetOutcome::Stuck => return false,
            ResetOutcome::Gone => self.board_gone(),
            ResetOutcome::Complete => {
                self.reset_pending = None;
                self.pass.over = true;
                self.last_progress = None;
                self.after_reset(regs, ch, status);
            }
        }
        true
    }

    /// A completed reset: every posted S/G frame terminated with `status`;
    /// restarted with the same format if the child has the channel running
    /// (CB: the child keeps its slots, the board gets the rest), else the
    /// board's slots reclaimed.
    fn after_reset<R: RegisterPort>(&mut self, regs: &R, ch: u32, status: NtStatus) {
        let Some(dma) = self.dma.as_mut() else {
            return;
        };
        if let Some(run) = self.run {
            dma.engine.abort_posted(status);
            let cr = ChannelRegs::new(regs, ch);
            dma.engine.restart(&cr, &dma.cq, &run);
            self.dropped_baseline = cr.read(channel::DROPPED_FRAMES);
        } else {
            dma.engine.stop(status);
        }
    }

    /// The board read as gone during a reset: it cannot master the bus any
    /// more, so every posted frame is terminated with
    /// `STATUS_DEVICE_REMOVED` and the channel stops.
    pub(crate) fn board_gone(&mut self) {
        self.board_gone_seen = true;
        self.reset_pending = None;
        self.run = None;
        if let Some(engine) = self.engine_mut() {
            engine.stop(STATUS_DEVICE_REMOVED);
        }
    }
}

/// Calls the child back with one completion. Called at `DISPATCH_LEVEL`
/// with no bus lock held.
pub(crate) fn invoke(delivery: &Delivery) {
    let Callback { func, context } = delivery.callback;
    // SAFETY: `func` and `context` were registered by the child through
    // RegisterCompletion, whose contract is that the callback may be called
    // at DISPATCH_LEVEL with its context until it is unregistered (which is
    // refused while the channel runs or a delivery is in progress);
    // `&delivery.completion` is valid for the duration of the call.
    unsafe { func(context, &raw const delivery.completion) };
}
