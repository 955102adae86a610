//! The scatter/gather (packet-based DMA) engine of a pin: its device start,
//! format fit, Process, completion and stop (`SgEngine`, chosen once by
//! `engine::PinEngine::for_mode`).
//!
//! **Device start:** `GetDmaAdapter`; the glue registers the adapter with
//! `KsDeviceRegisterAdapterObject` and gives the pin
//! `KSPIN_FLAG_GENERATE_MAPPINGS` (`device_setup`). A format fits when its
//! image does not exceed `max_frame_bytes` (when the bus states one: `fits`).
//!
//! **Stop** (`RUN -> PAUSE`, after `StopChannel`): the open frame (below)
//! is forgotten (the stop terminates it on the bus: one `Frame` completion
//! completes its clone); clones the bus failed to cancel are completed
//! empty and deleted (counted as bad) — unless the bus holds the posted
//! frames until the engine's reset completes (`StopOutcome::FramesHeld`):
//! then their clones stay until those completions arrive, never handed
//! back early.
//!
//! The pin has `KSPIN_FLAG_GENERATE_MAPPINGS`: KS gives each frame's
//! `OffsetOut` as `KSMAPPING`s built with the registered adapter, split at
//! `MaxMappingByteCount`. KS generates a frame's mappings all at once when
//! the frame reaches the leading edge, so a clone of the leading edge at
//! the frame's start holds the whole frame's mappings (`Remaining` of them)
//! and one `ProgramFrame` posts the whole frame — when the channel's
//! descriptor ring (`DmaConfig.descriptor_count` entries, one per mapping)
//! can hold them. A frame with more mappings than that can never be posted
//! whole: with interface version 2 (`BusChannel::supports_frame_parts`) it
//! is posted in *parts* with `ProgramFramePart` as the ring has room (the
//! pattern of the avshws sample, whose hardware takes as many mappings as
//! its S/G table has room for and the leading edge advances by those);
//! with version 1 it is dropped (step 5, `STATUS_DEVICE_BUSY` with nothing
//! in flight). One frame at a time is *open* (its first part posted, its
//! last not yet): the clone table records it under the clone table's lock.
//!
//! **Process** (PASSIVE, serialised by KS), for each frame at the leading edge:
//!
//! 1. A leading edge in the middle of a frame (`0 < Remaining < Count`):
//!    with a frame open, its next part (step 7); with none (the open frame
//!    was terminated — cancelled or failed — by a `Frame` completion that
//!    already completed it through its clone, or forgotten at a stop), the
//!    rest is ejected (`KsStreamPointerAdvanceOffsets(LeadingEdge, 0, 0,
//!    TRUE)`) without completing the frame again. Otherwise, a frame
//!    without mappings or whose `FrameExtent` is below the image size is
//!    dropped: completed with `DataUsed = 0` and ejected.
//! 2. A free tag in the clone table, else unlock and `STATUS_PENDING` (a
//!    completion frees one and calls `KsPinAttemptProcessing`).
//! 3. `KsStreamPointerClone`; failure with frames in flight -> unlock,
//!    `STATUS_PENDING`; with none in flight (nothing would wake us) the frame
//!    is dropped and processing goes on. One clone (one tag) per frame,
//!    posted whole or in parts; it holds the frame until its `Frame`
//!    completion.
//! 4. The clone goes into the table *before* the bus is called (its
//!    completion may run on another processor before the call returns);
//!    a frame going in parts is made the open frame then too (its first
//!    `FramePart` completion may come as early).
//! 5. `Remaining <= descriptor_count`, or a version-1 bus:
//!    `ProgramFrame(tag, clone.OffsetOut.Mappings, Remaining)`:
//!    * success: `KsStreamPointerAdvanceOffsets(LeadingEdge, 0, Remaining,
//!      FALSE)` moves to the next frame; `STATUS_DEVICE_NOT_READY` from it
//!      means no more frames: `STATUS_SUCCESS`.
//!    * `STATUS_DEVICE_BUSY` (ring full): clone out of the table and
//!      deleted; with other frames in flight (counted when this one was
//!      put in the table, not after the refusal: completions on another
//!      processor may have drained them since) unlock and `STATUS_PENDING`;
//!      with none, the frame can never fit the ring (the bus retires a
//!      frame's descriptors before it delivers its completion): dropped.
//!    * `STATUS_DEVICE_NOT_READY` (channel stopping): clone deleted, unlock,
//!      `STATUS_PENDING`.
//!    * any other error (elements the bus refuses): clone deleted, frame dropped.
//! 6. More mappings than the ring has entries, version 2. While an earlier
//!    frame posted in parts is still in flight (open or closed, not yet
//!    completed): unlock and `STATUS_PENDING`, before steps 2–4 — its
//!    `Frame` completion restarts Process. One frame in parts in flight at
//!    a time: its posted parts hold ring entries until the board reaches
//!    them, and a second frame started meanwhile would get only what is
//!    left, both then going in a part per freed descriptor (with the rule,
//!    two parts a frame: `capdma-sim faults --only ring/frame-in-parts
//!    --json` prints the board's part records). Otherwise (after steps
//!    2–4) the first part, `ProgramFramePart(tag,
//!    LeadingEdge.OffsetOut.Mappings, Remaining, CAPDMA_PART_START |
//!    CAPDMA_PART_END, &accepted)`:
//!    * success (`1 <= accepted <= Remaining`):
//!      `KsStreamPointerAdvanceOffsets(LeadingEdge, 0, accepted, FALSE)`.
//!      All accepted: `END` was honoured, the frame is closed and the
//!      leading edge is on the next frame: go on. Fewer: the frame stays
//!      open, the leading edge on its first mapping not posted; unlock and
//!      `STATUS_PENDING` (the ring is full: the part's `FramePart`
//!      completion restarts processing).
//!    * an error (nothing posted): as step 5's (clone deleted, the frame
//!      closed; `BUSY` with nothing in flight drops it).
//!    * a success with an impossible `accepted` (0, or above `Remaining`):
//!      as step 7's other errors.
//! 7. A later part of the open frame: `ProgramFramePart(open tag,
//!    LeadingEdge.OffsetOut.Mappings, Remaining, CAPDMA_PART_END,
//!    &accepted)`, the same advance rule:
//!    * `STATUS_DEVICE_BUSY` (no room now) or `STATUS_DEVICE_NOT_READY`:
//!      unlock, `STATUS_PENDING`. The frame's clone is in flight, so a
//!      completion comes: a part of it (`FramePart`), or the frame itself
//!      when the bus terminates it.
//!    * `STATUS_INVALID_DEVICE_STATE`: the bus holds no open frame — a
//!      reset or stop terminated this one since it was read as open (its
//!      `Frame` completion is on its way): closed, the rest ejected, not an
//!      error.
//!    * any other error, or an impossible `accepted`: the bus answered
//!      against the contract (or terminated the frame since it was read as
//!      open). Counted (`frame_part_errors`, unless the frame was no longer
//!      open), the frame closed here, the rest of it ejected from the
//!      leading edge without completing it; the clone stays in the table
//!      for the bus's termination of the frame (exactly one `Frame`
//!      completion: the stop or reset that ends the open frame), which
//!      completes it once. Deleting the clone here instead could hand the
//!      buffer back while the board may still write its posted parts.
//!
//! **Completion** (`DISPATCH_LEVEL`):
//!
//! * `FramePart` (a part of a frame posted in parts was written): for a
//!   tag in flight that was posted in parts (the open frame, or one whose
//!   last part is posted but not yet complete), `STATUS_SUCCESS`: counted
//!   (`frame_part_completions`) and `KsPinAttemptProcessing(TRUE)`; the
//!   clone stays, nothing is handed back. Any other `FramePart` is counted
//!   as bad and ignored.
//! * `Frame`: the tag finds the clone (unknown tags are counted and
//!   ignored) and takes it out of the table, which also closes the frame
//!   if it was open (terminated). `STATUS_SUCCESS` with `0 < bytes_written <=
//!   FrameExtent` delivers the frame (`DataUsed = bytes_written`, for a
//!   frame posted in parts the whole frame's bytes;
//!   `PresentationTime = timestamp`, `Duration` = frame interval,
//!   `PictureNumber` = the board's frame number, `DropCount`); any other
//!   status, or an impossible byte count, completes it with `DataUsed = 0`
//!   (cancelled or dropped, never delivered as good). Then the clone is
//!   deleted and `KsPinAttemptProcessing(TRUE)` called.
//!
//! The completion takes the clone table's spin lock only (at
//! `DISPATCH_LEVEL`, never across a KS or bus call) and allocates nothing.
use crate::bus_client::{BusChannel, StopOutcome};
use crate::clones::CloneTable;
use crate::device::AdapterRegistration;
use crate::format::VideoFormat;
use crate::ks_format::{KSMAPPING_SIZE, KSPIN_FLAG_GENERATE_MAPPINGS};
use crate::pin::CapturePin;
use crate::ports::{KsPinPort, StreamOffset};
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_INVALID_DEVICE_STATE, STATUS_IO_DEVICE_ERROR, STATUS_PENDING,
    STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, CompletionKind, DmaConfig, CAPDMA_PART_END, CAPDMA_PART_START};

/// Device start of an S/G channel: checks `max_transfer` and
/// `descriptor_count` (nonzero), `GetDmaAdapter`, and answers what the glue
/// registers with `KsDeviceRegisterAdapterObject` and the pin's own flag
/// (`KSPIN_FLAG_GENERATE_MAPPINGS`). PASSIVE.
///
/// # Errors
/// `GetDmaAdapter`'s status; `STATUS_IO_DEVICE_ERROR` for a zero
/// `max_transfer` or `descriptor_count`, a null adapter or a zero
/// `MaxMappingByteCount`.
pub(crate) fn device_setup(bus: &BusChannel, config: &DmaConfig) -> Result<(Option<AdapterRegistration>, u32), NtStatus> {
    if config.max_transfer == 0 || config.descriptor_count == 0 {
        return Err(STATUS_IO_DEVICE_ERROR);
    }
    let info = bus.get_dma_adapter()?;
    let max_mapping_byte_count = info.max_mapping_byte_count.min(config.max_transfer);
    if info.adapter.is_null() || max_mapping_byte_count == 0 {
        return Err(STATUS_IO_DEVICE_ERROR);
    }
    let registration = AdapterRegistration {
        adapter: info.adapter,
        max_mapping_byte_count,
        mapping_table_stride: KSMAPPING_SIZE,
        map_registers: info.map_registers,
        dma64: config.address_bits == 64,
        maximum_length: config.max_frame_bytes,
    };
    Ok((Some(registration), KSPIN_FLAG_GENERATE_MAPPINGS))
}

/// Whether an S/G channel with `config` can stream `format`: the image must
/// not exceed `max_frame_bytes` (0: the bus states no limit).
pub(crate) fn fits(config: &DmaConfig, format: &VideoFormat) -> bool {
    config.max_frame_bytes == 0 || format.image_bytes <= config.max_frame_bytes
}

/// The S/G engine's state: the clones of the frames in flight, by tag.
pub(crate) struct SgEngine<P: Copy> {
    clones: spin::Mutex<CloneTable<P>>,
}

/// What to do after a frame at the leading edge was handled.
enum Next {
    /// The leading edge moved to the next frame: go on.
    Continue,
    /// Return this status from Process (the leading edge was unlocked or moved past the end).
    Return(NtStatus),
}

impl<P: Copy> SgEngine<P> {
    /// No frame in flight.
    pub(crate) fn new() -> Self {
        Self { clones: spin::Mutex::new(CloneTable::new()) }
    }

    /// Process (see the module documentation).
    pub(crate) fn process<K: KsPinPort<StreamPointer = P>>(&self, pin: &CapturePin<K>) -> NtStatus {
        let Some(format) = pin.format() else {
            return STATUS_PENDING;
        };
        let Some(leading) = pin.port.leading_edge() else {
            return STATUS_SUCCESS;
        };
        loop {
            let offset = pin.port.offset_out(leading);
            let next = if offset.remaining > 0 && offset.remaining < offset.count && !offset.mappings.is_null() {
                // In the middle of a frame posted in parts.
                match pin.locked(&self.clones, |t| t.open_frame()) {
                    Some(tag) => self.post_next_part(pin, leading, tag, offset),
                    None => Self::eject_rest(pin, leading),
                }
            } else if offset.mappings.is_null()
                || offset.remaining == 0
                || pin.port.frame_extent(leading) < format.image_bytes
            {
                Self::drop_leading(pin, leading)
            } else if offset.remaining <= pin.config.descriptor_count || !pin.bus.supports_frame_parts() {
                self.post_frame(pin, leading, offset.remaining)
            } else if pin.locked(&self.clones, |t| t.parts_in_flight()) {
                // One frame in parts in flight at a time: the earlier one's
                // posted parts hold ring entries until the board reaches
                // them, and a frame started now would get only what is left,
                // both then going in many small parts (each a completion and
                // an interrupt). The earlier frame's `Frame` completion
                // calls `KsPinAttemptProcessing`.
                pin.port.unlock(leading, false);
                Next::Return(STATUS_PENDING)
            } else {
                self.post_first_part(pin, leading, offset)
            };
            match next {
                Next::Continue => {}
                Next::Return(status) => return status,
            }
        }
    }

    /// Completes the leading edge's frame empty and ejects it.
    fn drop_leading<K: KsPinPort<StreamPointer = P>>(pin: &CapturePin<K>, leading: P) -> Next {
        pin.dropped_frame();
        pin.port.complete_frame(leading, &pin.empty_completion(0));
        Self::eject_rest(pin, leading)
    }

    /// Ejects the leading edge's frame without completing it (it is
    /// completed, or will be, through its clone).
    fn eject_rest<K: KsPinPort<StreamPointer = P>>(pin: &CapturePin<K>, leading: P) -> Next {
        match pin.port.advance_offsets(leading, 0, true) {
            Ok(()) => Next::Continue,
            Err(_) => Next::Return(STATUS_SUCCESS),
        }
    }

    /// Clones the leading edge and puts the clone in the table (steps 2-4
    /// of the module documentation), `open` when the frame goes in parts.
    /// Answers the clone, its tag and the frames that were in flight
    /// before it.
    fn track<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        leading: P,
        open: bool,
    ) -> Result<(P, u32, u32), Next> {
        let Some(index) = pin.locked(&self.clones, |t| t.free_index()) else {
            pin.port.unlock(leading, false);
            return Err(Next::Return(STATUS_PENDING));
        };
        let Ok(clone) = pin.port.clone_pointer(leading) else {
            if pin.locked(&self.clones, |t| t.in_flight()) > 0 {
                pin.port.unlock(leading, false);
                return Err(Next::Return(STATUS_PENDING));
            }
            return Err(Self::drop_leading(pin, leading));
        };
        // `others`: frames in flight when this one joined them. Each of them
        // completes later (only its completion takes it out of the table)
        // and calls `KsPinAttemptProcessing`. A frame posted in parts is
        // open before its first part is posted: its `FramePart` completion
        // may run on another processor before `ProgramFramePart` returns.
        let inserted = pin.locked(&self.clones, |t| {
            let tag = t.insert(index, clone)?;
            if open {
                t.open(tag);
            }
            Some((tag, t.in_flight().saturating_sub(1)))
        });
        let Some((tag, others)) = inserted else {
            // Only Process fills entries, and it found this one free.
            pin.port.delete(clone);
            pin.port.unlock(leading, false);
            return Err(Next::Return(STATUS_PENDING));
        };
        Ok((clone, tag, others))
    }

    /// Takes a clone that the bus refused (nothing posted) back out of the
    /// table and deletes it; then, for the refusal `status`, waits or drops
    /// the frame (step 5 of the module documentation).
    fn refused<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        leading: P,
        tag: u32,
        others: u32,
        status: NtStatus,
    ) -> Next {
        if let Some(clone) = pin.locked(&self.clones, |t| t.take(tag)) {
            pin.port.delete(clone);
        }
        match status {
            // Ring full: wait for the frames that were in flight. Not
            // the count now: they may all have completed on another
            // processor since the bus said BUSY, and a frame that fits
            // would be dropped as one that never does (their
            // completions asked for this Process to run again).
            STATUS_DEVICE_BUSY if others > 0 => {
                pin.port.unlock(leading, false);
                Next::Return(STATUS_PENDING)
            }
            STATUS_DEVICE_NOT_READY => {
                pin.port.unlock(leading, false);
                Next::Return(STATUS_PENDING)
            }
            _ => Self::drop_leading(pin, leading),
        }
    }

    fn post_frame<K: KsPinPort<StreamPointer = P>>(&self, pin: &CapturePin<K>, leading: P, mappings: u32) -> Next {
        let (clone, tag, others) = match self.track(pin, leading, false) {
            Ok(tracked) => tracked,
            Err(next) => return next,
        };
        let clone_offset = pin.port.offset_out(clone);
        let count = clone_offset.remaining.min(mappings);
        // SAFETY: `clone_offset.mappings` is the clone's `OffsetOut.Mappings`:
        // `Remaining` KSMAPPINGs (layout-identical to `SgElement`) that KS
        // keeps valid while the clone exists. The clone is in the table, so
        // only its completion deletes it, and there is no completion before
        // `ProgramFrame` has read the elements and posted the frame.
        let posted = unsafe { pin.bus.program_frame(tag, clone_offset.mappings, count) };
        match posted {
            Ok(()) => {
                pin.stats.programmed(count);
                match pin.port.advance_offsets(leading, mappings, false) {
                    Ok(()) => Next::Continue,
                    Err(_) => Next::Return(STATUS_SUCCESS),
                }
            }
            Err(status) => self.refused(pin, leading, tag, others, status),
        }
    }

    /// The first part of a frame with more mappings than the ring has
    /// entries (step 6 of the module documentation).
    fn post_first_part<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        leading: P,
        offset: StreamOffset,
    ) -> Next {
        let (_clone, tag, others) = match self.track(pin, leading, true) {
            Ok(tracked) => tracked,
            Err(next) => return next,
        };
        // SAFETY: `offset.mappings` is the locked leading edge's
        // `OffsetOut.Mappings` at the frame's start: `Remaining` KSMAPPINGs
        // (layout-identical to `SgElement`) that KS keeps valid while the
        // pointer is locked, for the duration of the call.
        let posted = unsafe {
            pin.bus.program_frame_part(tag, offset.mappings, offset.remaining, CAPDMA_PART_START | CAPDMA_PART_END)
        };
        match posted {
            Ok(accepted) if (1..=offset.remaining).contains(&accepted) => {
                pin.stats.part_posted(accepted, true);
                self.advance_part(pin, leading, tag, accepted, offset.remaining)
            }
            // A success that posted nothing or more than offered: the bus
            // holds the frame (the clone stays for its completion).
            Ok(_) => self.abandon_parts(pin, leading, tag),
            Err(status) => self.refused(pin, leading, tag, others, status),
        }
    }

    /// A later part of the open frame `tag`, from the leading edge (step 7
    /// of the module documentation).
    fn post_next_part<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        leading: P,
        tag: u32,
        offset: StreamOffset,
    ) -> Next {
        // SAFETY: `offset.mappings` is the locked leading edge's
        // `OffsetOut.Mappings`: the frame's `Remaining` KSMAPPINGs not yet
        // posted, valid while the pointer is locked, for the duration of
        // the call (the frame is held by its clone, in the table under `tag`).
        let posted = unsafe { pin.bus.program_frame_part(tag, offset.mappings, offset.remaining, CAPDMA_PART_END) };
        match posted {
            Ok(accepted) if (1..=offset.remaining).contains(&accepted) => {
                pin.stats.part_posted(accepted, false);
                self.advance_part(pin, leading, tag, accepted, offset.remaining)
            }
            // No room now, or the channel is stopping: the frame's clone is
            // in flight, so a completion comes (a part of it, or the frame
            // terminated) and calls `KsPinAttemptProcessing`.
            Err(STATUS_DEVICE_BUSY | STATUS_DEVICE_NOT_READY) => {
                pin.port.unlock(leading, false);
                Next::Return(STATUS_PENDING)
            }
            // The bus holds no open frame: a reset or stop terminated this
            // one since it was read as open (its `Frame` completion is on
            // its way). Not an error; the rest is ejected all the same.
            Err(STATUS_INVALID_DEVICE_STATE) => {
                pin.locked(&self.clones, |t| t.close(tag));
                Self::eject_rest(pin, leading)
            }
            Ok(_) | Err(_) => self.abandon_parts(pin, leading, tag),
        }
    }

    /// After `accepted` of the `remaining` mappings were posted as a part
    /// of `tag`: all of them closed the frame, and the leading edge moves
    /// to the next frame; fewer leave it open, the leading edge on its
    /// first mapping not posted, unlocked, until a completion.
    fn advance_part<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        leading: P,
        tag: u32,
        accepted: u32,
        remaining: u32,
    ) -> Next {
        if accepted == remaining {
            // `CAPDMA_PART_END` honoured: no more parts. (Its completion
            // may have taken the entry already: closing is idempotent.)
            pin.locked(&self.clones, |t| t.close(tag));
            return match pin.port.advance_offsets(leading, accepted, false) {
                Ok(()) => Next::Continue,
                Err(_) => Next::Return(STATUS_SUCCESS),
            };
        }
        match pin.port.advance_offsets(leading, accepted, false) {
            Ok(()) => {
                pin.port.unlock(leading, false);
                Next::Return(STATUS_PENDING)
            }
            // Not reached within a frame; the pointer is unlocked either way.
            Err(_) => Next::Return(STATUS_PENDING),
        }
    }

    /// The bus answered a part of the open frame `tag` in a way the
    /// contract does not allow (or the frame was terminated since it was
    /// read as open): the frame is closed here and the rest of it ejected
    /// from the leading edge, not completed — its clone stays in the table
    /// for the bus's termination of the frame (one `Frame` completion,
    /// cancelled or failed), which completes it once. Counted as a part
    /// error unless the frame was no longer open.
    fn abandon_parts<K: KsPinPort<StreamPointer = P>>(&self, pin: &CapturePin<K>, leading: P, tag: u32) -> Next {
        if pin.locked(&self.clones, |t| t.close(tag)) {
            pin.stats.part_refused();
        }
        Self::eject_rest(pin, leading)
    }

    /// The completion of a frame, or of a part of a frame posted in parts
    /// (see the module documentation).
    pub(crate) fn complete<K: KsPinPort<StreamPointer = P>>(&self, pin: &CapturePin<K>, completion: &Completion) {
        if completion.kind == CompletionKind::FramePart as u32 {
            let ours = pin.locked(&self.clones, |t| t.in_parts(completion.tag));
            if ours && completion.status == STATUS_SUCCESS {
                pin.stats.part_completed();
                pin.port.attempt_processing(true);
            } else {
                pin.stats.bad_completion();
            }
            return;
        }
        if completion.kind != CompletionKind::Frame as u32 {
            pin.stats.bad_completion();
            return;
        }
        // Taking the entry also closes the frame if it was open (the bus
        // terminated it: cancelled or failed).
        let Some(clone) = pin.locked(&self.clones, |t| t.take(completion.tag)) else {
            pin.stats.bad_completion();
            return;
        };
        let frame = match completion.status {
            STATUS_SUCCESS => {
                let bytes = completion.bytes_written;
                pin.board_frame_number(completion.frame_number);
                if bytes == 0 || bytes > pin.port.frame_extent(clone) {
                    pin.stats.bad_completion();
                    pin.dropped_frame();
                    pin.empty_completion(completion.frame_number)
                } else {
                    let format = pin.format();
                    pin.good_completion(bytes, completion.frame_number, completion.timestamp, format.as_ref())
                }
            }
            STATUS_CANCELLED => {
                pin.stats.cancelled();
                pin.empty_completion(completion.frame_number)
            }
            _ => {
                pin.stats.skip_frame_number();
                pin.dropped_frame();
                pin.empty_completion(completion.frame_number)
            }
        };
        pin.port.complete_frame(clone, &frame);
        pin.port.delete(clone);
        pin.port.attempt_processing(true);
    }

    /// `RUN -> PAUSE` after `StopChannel` answered `outcome`: unless the bus
    /// holds the posted frames (`FramesHeld`), completes empty and deletes
    /// the clones still in flight (the bus should have cancelled them:
    /// counted as bad).
    pub(crate) fn stopped<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        outcome: Result<StopOutcome, NtStatus>,
    ) {
        // The bus holds the posted frames until the engine's reset
        // completes (the board may still write them): their clones stay
        // until those completions arrive, never handed back early.
        // No more parts: a frame left open is terminated by the stop (its
        // `Frame` completion, now or when the bus hands it back, completes
        // its clone); the rest of it at the leading edge is ejected by the
        // next Process.
        pin.locked(&self.clones, CloneTable::forget_open);
        if outcome == Ok(StopOutcome::FramesHeld) {
            return;
        }
        while let Some(clone) = pin.locked(&self.clones, CloneTable::take_any) {
            pin.stats.bad_completion();
            pin.port.complete_frame(clone, &pin.empty_completion(0));
            pin.port.delete(clone);
        }
    }
}
