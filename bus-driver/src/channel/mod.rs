//! One capture channel: its completion queue and its DMA engine (the
//! strategy of the device's mode, [`engine::Engine`]), the running format,
//! the child's callback and statistics, all behind one spin lock
//! ([`Channel::state`]) that is only ever taken at `DISPATCH_LEVEL` (see
//! `BusDevice::at_dispatch`).
//!
//! * [`engine`]: the engine of either mode and the operations the rest of
//!   the core calls on it.
//! * [`sg`]: the scatter/gather engine — descriptor ring, the descriptor
//!   writer of `ProgramFrame`, the in-flight frame table.
//! * [`slots`]: the common-buffer engine — slot ring, slot ownership (FIFO
//!   returns, resets).
//! * [`completion`]: the completion-queue consumer, record validation and
//!   the reset path.
//! * [`format`]: the format checks every mode shares, and board geometry.
pub mod completion;
pub mod engine;
pub mod format;
pub mod sg;
pub mod slots;

use crate::dma_buffer::DmaBuffer;
use crate::hw::{reset_channel, split_u64, ChannelRegs, ResetOutcome};
use crate::ports::{CoreEvent, DmaAdapterPort, RegisterPort};
use capdma_interface::regs::{channel, Caps};
use capdma_interface::status::NtStatus;
use capdma_interface::table::{Completion, PfnCompletion};
use core::ffi::c_void;
use engine::{Engine, EngineMemory};
pub(crate) use format::RunState;

/// Why a completion record (or the queue's producer) was refused. Every
/// refusal resets the channel; nothing refused is delivered as good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordFault {
    /// `CQ_PRODUCER` advanced by more than the queue's entries.
    CqOverrun,
    /// `index` not below the ring's entries (descriptors or slots).
    IndexOutOfRange,
    /// `index` is not where the next frame (S/G) or slot (CB) was expected,
    /// or nothing was outstanding.
    Unexpected,
    /// S/G: the record's tag differs from the frame's.
    TagMismatch,
    // (A `CQ_STATUS_PART` record for a frame's end, or an end's record for
    // a part, is `Unexpected`.)
    /// `byte_count` exceeds the frame's bytes (S/G) or the slot's (CB).
    ByteCountTooLarge,
    /// `status` is neither `CQ_STATUS_OK` nor `CQ_STATUS_ERROR` (nor, S/G,
    /// `CQ_STATUS_PART`).
    BadStatus,
}

/// Counters of one channel since device start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Frames (S/G) or slots (CB) completed with `CQ_STATUS_OK` and passed
    /// every check.
    pub frames_completed: u64,
    /// Records with `CQ_STATUS_ERROR` (delivered with `STATUS_IO_DEVICE_ERROR`).
    pub frames_damaged: u64,
    /// S/G: parts of frames posted in parts completed (`CQ_STATUS_PART`
    /// records, delivered as `CompletionKind::FramePart`).
    pub parts_completed: u64,
    /// S/G frames completed without a record: cancelled by `StopChannel`
    /// or device stop, failed by a reset, or removed.
    pub frames_aborted: u64,
    /// Records (or `CQ_PRODUCER` values) refused by the range checks.
    pub bad_records: u64,
    /// Error interrupts (`STATUS_HALTED`) handled.
    pub board_errors: u64,
    /// Channel resets for any reason (bad record, board error, watchdog).
    pub resets: u64,
    /// Resets by the watchdog (also counted in `resets`).
    pub watchdog_resets: u64,
    /// Frames the board dropped for want of a buffer (`DROPPED_FRAMES`,
    /// accumulated across resets).
    pub dropped_by_board: u64,
    /// Completions dropped because no callback was registered.
    pub undelivered: u64,
    /// The last refused record's fault.
    pub last_fault: Option<RecordFault>,
}

/// A channel's completion queue: `entries` 32-byte `CompletionRecord`s in
/// one common buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CompletionQueue {
    /// The queue's common buffer.
    pub buffer: DmaBuffer,
    /// Entries (a power of two).
    pub entries: u32,
}

impl CompletionQueue {
    /// Device start: a queue of `entries` records (`CompletionQueueEntries`)
    /// by the allocation policy of [`DmaBuffer::allocate_reachable`].
    /// `PASSIVE_LEVEL`. `None` when the adapter has no such buffer.
    pub fn allocate<A: DmaAdapterPort>(adapter: &A, entries: u32, caps: Caps) -> Option<Self> {
        DmaBuffer::allocate_entries(adapter, entries, caps).map(|buffer| Self { buffer, entries })
    }

    /// The queue's registers: `CQ_BASE_LO/HI`, `CQ_ENTRIES`, `CQ_CONSUMER` = 0.
    pub fn program<R: RegisterPort>(&self, cr: &ChannelRegs<'_, R>) {
        let (lo, hi) = split_u64(self.buffer.logical);
        cr.write(channel::CQ_BASE_LO, lo);
        cr.write(channel::CQ_BASE_HI, hi);
        cr.write(channel::CQ_ENTRIES, self.entries);
        cr.write(channel::CQ_CONSUMER, 0);
    }
}

/// What the device start allocated for a channel: the completion queue and
/// the engine's ring (small and `Copy`; the engine is built at install).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelBuffers {
    /// The completion queue.
    pub cq: CompletionQueue,
    /// The engine's ring.
    pub engine: EngineMemory,
}

impl ChannelBuffers {
    /// Frees both buffers (`FreeCommonBuffer`). `PASSIVE_LEVEL`.
    pub fn free<A: DmaAdapterPort>(&self, adapter: &A) {
        self.engine.buffer().free(adapter);
        self.cq.buffer.free(adapter);
    }
}

/// A started channel's DMA: the completion queue and the engine.
#[derive(Debug)]
pub(crate) struct ChannelDma {
    /// The completion queue.
    pub cq: CompletionQueue,
    /// The engine of the device's mode.
    pub engine: Engine,
}

impl ChannelDma {
    /// The two common buffers (what the device stop frees).
    pub fn buffers(&self) -> [DmaBuffer; 2] {
        [self.engine.ring_buffer(), self.cq.buffer]
    }
}

/// The child's completion callback and its context.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Callback {
    pub func: PfnCompletion,
    pub context: *mut c_void,
}

// SAFETY: the context is an opaque value owned by the child, never
// dereferenced by the bus, only passed back to the child's callback; the
// RegisterCompletion contract lets the callback run on any processor.
unsafe impl Send for Callback {}

/// One completion to hand to the child, taken out of the state under the
/// lock and delivered after the lock is released.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivery {
    pub completion: Completion,
    pub callback: Callback,
}

/// Per-DPC-pass state of the completion-queue consumer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pass {
    /// `CQ_PRODUCER` as read once this pass.
    pub cq_limit: Option<u32>,
    /// No more records this pass (queue drained, or the channel was reset).
    pub over: bool,
    /// `CQ_CONSUMER` must be written at the end of the pass.
    pub consumer_dirty: bool,
}

/// Everything the channel lock protects.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools, reason = "independent flags, each with its own meaning")]
pub(crate) struct ChannelState {
    /// Completion queue and engine; `None` while the device is stopped.
    pub dma: Option<ChannelDma>,
    /// The running format; `None` while the child has the channel stopped.
    pub run: Option<RunState>,
    /// The child's callback.
    pub callback: Option<Callback>,
    /// A context is between taking a completion out and finishing its
    /// callback; others leave their work in the state for it.
    pub delivering: bool,
    /// Another context found [`Self::delivering`] set and left its work to
    /// the deliverer, which must start a new consumer pass (read
    /// `CQ_PRODUCER` again, look at [`Self::error_pending`]) before it
    /// clears `delivering`: the records that context came for may have
    /// landed after the deliverer's read.
    pub rescan: bool,
    /// An error interrupt is waiting to be handled by the consumer.
    pub error_pending: bool,
    /// The consumer's pass state.
    pub pass: Pass,
    /// Completion records consumed (free-running).
    pub cq_consumer: u32,
    /// Counters.
    pub stats: ChannelStats,
    /// Time (100-ns units) of the last completion or idle watchdog look.
    pub last_progress: Option<i64>,
    /// `DROPPED_FRAMES` when last accounted.
    pub dropped_baseline: u32,
    /// The consumer read the board as gone (ID all ones) during a reset.
    pub board_gone_seen: bool,
    /// A `CTRL_RESET` was written but `STATUS_RUNNING` had not cleared
    /// within `RESET_POLL_READS` reads: the engine may still write the
    /// memory of its frame, so nothing it could write is handed back yet —
    /// posted S/G frames stay posted, the board keeps its slots. Holds the
    /// status the frames get once the reset completes
    /// ([`ChannelState::finish_reset`], tried again by every later consumer
    /// pass and watchdog tick). `RegisterCompletion(NULL)` and
    /// `StartChannel` are refused with `STATUS_DEVICE_BUSY` meanwhile.
    pub reset_pending: Option<NtStatus>,
    /// A reset was never seen to complete before its frames had to be
    /// handed back anyway (surprise removal): the ring and queue may still
    /// be written, so the device stop forgets them rather than frees them.
    pub rings_unsafe: bool,
    /// Set by `power_down` (`ChannelState::suspend`), cleared when
    /// `power_up` resumes this channel (`ChannelState::resume`): the device
    /// may be back in D0 while the channel is not yet reprogrammed, and only
    /// the resume may program it (else a DPC, the watchdog or
    /// `StartChannel` programs it first and the resume reprograms a running
    /// engine). While set, the register paths under the channel lock treat
    /// the board as absent ([`Self::hw`]); the bookkeeping goes on
    /// (`ProgramFrame`'s descriptors and `ReturnSlot`'s slots are handed
    /// over by the resume).
    pub suspended: bool,
}

impl ChannelState {
    /// An idle channel without buffers.
    pub const fn new() -> Self {
        Self {
            dma: None,
            run: None,
            callback: None,
            delivering: false,
            rescan: false,
            error_pending: false,
            pass: Pass { cq_limit: None, over: false, consumer_dirty: false },
            cq_consumer: 0,
            stats: ChannelStats {
                frames_completed: 0,
                frames_damaged: 0,
                parts_completed: 0,
                frames_aborted: 0,
                bad_records: 0,
                board_errors: 0,
                resets: 0,
                watchdog_resets: 0,
                dropped_by_board: 0,
                undelivered: 0,
                last_fault: None,
            },
            last_progress: None,
            dropped_baseline: 0,
            board_gone_seen: false,
            reset_pending: None,
            rings_unsafe: false,
            suspended: false,
        }
    }

    /// Whether this channel's registers may be touched, given whether the
    /// board's may (`BusDevice::hardware_present`, read under this lock):
    /// not while the channel is suspended for a power transition.
    pub const fn hw(&self, present: bool) -> bool {
        present && !self.suspended
    }

    /// Device start: takes the channel's buffers and builds its engine;
    /// everything else fresh.
    pub fn install(&mut self, buffers: ChannelBuffers) {
        *self = Self::new();
        self.dma = Some(ChannelDma { cq: buffers.cq, engine: Engine::new(buffers.engine) });
    }

    /// The engine; `None` while the device is stopped.
    pub fn engine(&self) -> Option<&Engine> {
        self.dma.as_ref().map(|d| &d.engine)
    }

    /// The engine, mutably; `None` while the device is stopped.
    pub fn engine_mut(&mut self) -> Option<&mut Engine> {
        self.dma.as_mut().map(|d| &mut d.engine)
    }

    /// Frames of the S/G table held for the child (posted, or terminated
    /// and not yet delivered); 0 in common-buffer mode and while stopped.
    pub fn frames_held(&self) -> usize {
        self.engine().map_or(0, Engine::frames_held)
    }

    /// Whether the child has the channel running.
    pub const fn running(&self) -> bool {
        self.run.is_some()
    }

    /// Whether the engine has work the board owes a completion for:
    /// posted S/G frames, or slots the board holds.
    pub fn board_has_work(&self) -> bool {
        self.engine().is_some_and(Engine::board_has_work)
    }

    /// Adds `DROPPED_FRAMES` since the last look to the statistics.
    pub fn account_dropped<R: RegisterPort>(&mut self, cr: &ChannelRegs<'_, R>) {
        if self.run.is_none() {
            return;
        }
        let now = cr.read(channel::DROPPED_FRAMES);
        let frames = now.wrapping_sub(self.dropped_baseline);
        self.stats.dropped_by_board = self.stats.dropped_by_board.saturating_add(u64::from(frames));
        self.dropped_baseline = now;
        if frames != 0 {
            cr.report(CoreEvent::DroppedByBoard { channel: cr.channel(), frames });
        }
    }

    /// `StartChannel` after validation: resets the bookkeeping, programs the
    /// board and runs it (the caller has enabled the channel's interrupts).
    pub fn start_run<R: RegisterPort>(&mut self, regs: &R, ch: u32, run: RunState) {
        let Some(dma) = self.dma.as_mut() else {
            return;
        };
        self.cq_consumer = 0;
        self.error_pending = false;
        self.pass = Pass::default();
        self.last_progress = None;
        self.run = Some(run);
        let cr = ChannelRegs::new(regs, ch);
        dma.engine.start(&cr, &dma.cq, &run);
        self.dropped_baseline = cr.read(channel::DROPPED_FRAMES);
    }

    /// Surprise removal: the device is going away and every pending frame
    /// must be completed (holding them would hang the application's close
    /// and with it the removal), so frames held for a reset that never
    /// completed are terminated with `status` too; the rings are marked
    /// [`Self::rings_unsafe`] so the device stop leaks them instead of
    /// freeing memory the engine may still write. Returns the frames terminated.
    pub fn surrender_held_frames(&mut self, status: NtStatus) -> usize {
        if self.reset_pending.take().is_none() {
            return 0;
        }
        self.rings_unsafe = true;
        self.engine_mut().map_or(0, |e| e.stop(status))
    }

    /// Stops the engine: when `regs` is given (the board is present),
    /// `CTRL_RESET` and the wait for the reset to complete
    /// ([`reset_channel`]: `STATUS` read back until `STATUS_RUNNING`
    /// clears); then every posted S/G frame is terminated with `status` and
    /// the board's slots are reclaimed. Without `regs` (surprise removal,
    /// out of D0) nothing waits. A reset that does not complete — or, without
    /// `regs` (or while [`Self::suspended`]), one already pending — leaves
    /// the frames posted and the slots with the board
    /// ([`Self::reset_pending`], which then holds `status`). Returns the
    /// frames terminated.
    pub fn stop_run<R: RegisterPort>(&mut self, regs: Option<&R>, ch: u32, status: NtStatus) -> usize {
        // Suspended for a power transition: only the resume touches the
        // channel's registers (it then finds the channel stopped).
        let regs = regs.filter(|_| !self.suspended);
        let outcome = regs.map(|regs| {
            let cr = ChannelRegs::new(regs, ch);
            self.account_dropped(&cr);
            reset_channel(&cr)
        });
        self.run = None;
        self.error_pending = false;
        self.pass = Pass { over: true, ..Pass::default() };
        // Stuck now, or an earlier reset still pending and the registers
        // cannot be read to see whether it completed (out of D0 — between
        // `power_down` and the D-IRP the engine may still be writing —,
        // suspended, or surprise-removed, which is not always physically
        // gone: `PNP_DEVICE_FAILED`, DPC containment): the frames stay
        // held. `power_up` finishes the reset; `stop` leaks the rings of a
        // reset never seen to complete.
        if outcome == Some(ResetOutcome::Stuck) || (outcome.is_none() && self.reset_pending.is_some()) {
            self.reset_pending = Some(status);
            return 0;
        }
        self.reset_pending = None;
        self.engine_mut().map_or(0, |e| e.stop(status))
    }
}

/// A channel: its state behind a spin lock held only at `DISPATCH_LEVEL`.
#[derive(Debug)]
pub(crate) struct Channel {
    pub state: spin::Mutex<ChannelState>,
}

impl Channel {
    /// An idle channel.
    pub const fn new() -> Self {
        Self { state: spin::Mutex::new(ChannelState::new()) }
    }
}
