//! Process and completion of a scatter/gather (packet-based DMA) pin.
//!
//! The pin has `KSPIN_FLAG_GENERATE_MAPPINGS`: KS gives each frame's
//! `OffsetOut` as `KSMAPPING`s built with the registered adapter, split at
//! `MaxMappingByteCount`. KS generates a frame's mappings all at once when
//! the frame reaches the leading edge, so a clone of the leading edge at
//! the frame's start holds the whole frame's mappings (`Remaining` of them)
//! and one `ProgramFrame` posts the whole frame.
//!
//! **Process** (PASSIVE, serialised by KS), for each frame at the leading edge:
//!
//! 1. A frame without mappings or whose `FrameExtent` is below the image
//!    size is dropped: completed with `DataUsed = 0` and ejected.
//! 2. A free tag in the clone table, else unlock and `STATUS_PENDING` (a
//!    completion frees one and calls `KsPinAttemptProcessing`).
//! 3. `KsStreamPointerClone`; failure with frames in flight -> unlock,
//!    `STATUS_PENDING`; with none in flight (nothing would wake us) the frame
//!    is dropped and processing goes on.
//! 4. The clone goes into the table *before* `ProgramFrame` (its completion
//!    may run on another processor before `ProgramFrame` returns).
//! 5. `ProgramFrame(tag, clone.OffsetOut.Mappings, Remaining)`:
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
//!
//! **Completion** (`DISPATCH_LEVEL`): the tag finds the clone (unknown tags
//! are counted and ignored). `STATUS_SUCCESS` with `0 < bytes_written <=
//! FrameExtent` delivers the frame (`DataUsed = bytes_written`,
//! `PresentationTime = timestamp`, `Duration` = frame interval,
//! `PictureNumber` = the board's frame number, `DropCount`); any other
//! status, or an impossible byte count, completes it with `DataUsed = 0`
//! (cancelled or dropped, never delivered as good). Then the clone is
//! deleted and `KsPinAttemptProcessing(TRUE)` called.
use crate::clones::CloneTable;
use crate::pin::CapturePin;
use crate::ports::KsPinPort;
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_PENDING, STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, CompletionKind};

/// What to do after a frame at the leading edge was handled.
enum Next {
    /// The leading edge moved to the next frame: go on.
    Continue,
    /// Return this status from Process (the leading edge was unlocked or moved past the end).
    Return(NtStatus),
}

impl<K: KsPinPort> CapturePin<K> {
    pub(crate) fn process_sg(&self) -> NtStatus {
        let Some(format) = self.format() else {
            return STATUS_PENDING;
        };
        let Some(leading) = self.port.leading_edge() else {
            return STATUS_SUCCESS;
        };
        loop {
            let offset = self.port.offset_out(leading);
            let extent = self.port.frame_extent(leading);
            let next = if offset.mappings.is_null() || offset.remaining == 0 || extent < format.image_bytes {
                self.drop_leading(leading)
            } else {
                self.post_frame(leading, offset.remaining)
            };
            match next {
                Next::Continue => {}
                Next::Return(status) => return status,
            }
        }
    }

    /// Completes the leading edge's frame empty and ejects it.
    fn drop_leading(&self, leading: K::StreamPointer) -> Next {
        self.dropped_frame();
        self.port.complete_frame(leading, &self.empty_completion(0));
        match self.port.advance_offsets(leading, 0, true) {
            Ok(()) => Next::Continue,
            Err(_) => Next::Return(STATUS_SUCCESS),
        }
    }

    fn post_frame(&self, leading: K::StreamPointer, mappings: u32) -> Next {
        let Some(index) = self.locked(&self.clones, |t| t.free_index()) else {
            self.port.unlock(leading, false);
            return Next::Return(STATUS_PENDING);
        };
        let Ok(clone) = self.port.clone_pointer(leading) else {
            if self.locked(&self.clones, |t| t.in_flight()) > 0 {
                self.port.unlock(leading, false);
                return Next::Return(STATUS_PENDING);
            }
            return self.drop_leading(leading);
        };
        // `others`: frames in flight when this one joined them. Each of them
        // completes later (only its completion takes it out of the table)
        // and calls `KsPinAttemptProcessing`.
        let inserted =
            self.locked(&self.clones, |t| t.insert(index, clone).map(|tag| (tag, t.in_flight().saturating_sub(1))));
        let Some((tag, others)) = inserted else {
            // Only Process fills entries, and it found this one free.
            self.port.delete(clone);
            self.port.unlock(leading, false);
            return Next::Return(STATUS_PENDING);
        };
        let clone_offset = self.port.offset_out(clone);
        let count = clone_offset.remaining.min(mappings);
        // SAFETY: `clone_offset.mappings` is the clone's `OffsetOut.Mappings`:
        // `Remaining` KSMAPPINGs (layout-identical to `SgElement`) that KS
        // keeps valid while the clone exists. The clone is in the table, so
        // only its completion deletes it, and there is no completion before
        // `ProgramFrame` has read the elements and posted the frame.
        let posted = unsafe { self.bus.program_frame(tag, clone_offset.mappings, count) };
        match posted {
            Ok(()) => {
                self.stats.programmed(count);
                match self.port.advance_offsets(leading, mappings, false) {
                    Ok(()) => Next::Continue,
                    Err(_) => Next::Return(STATUS_SUCCESS),
                }
            }
            Err(status) => {
                if let Some(clone) = self.locked(&self.clones, |t| t.take(tag)) {
                    self.port.delete(clone);
                }
                match status {
                    // Ring full: wait for the frames that were in flight. Not
                    // the count now: they may all have completed on another
                    // processor since the bus said BUSY, and a frame that fits
                    // would be dropped as one that never does (their
                    // completions asked for this Process to run again).
                    STATUS_DEVICE_BUSY if others > 0 => {
                        self.port.unlock(leading, false);
                        Next::Return(STATUS_PENDING)
                    }
                    STATUS_DEVICE_NOT_READY => {
                        self.port.unlock(leading, false);
                        Next::Return(STATUS_PENDING)
                    }
                    _ => self.drop_leading(leading),
                }
            }
        }
    }

    pub(crate) fn complete_sg(&self, completion: &Completion) {
        if completion.kind != CompletionKind::Frame as u32 {
            self.stats.bad_completion();
            return;
        }
        let Some(clone) = self.locked(&self.clones, |t: &mut CloneTable<K::StreamPointer>| t.take(completion.tag))
        else {
            self.stats.bad_completion();
            return;
        };
        let frame = match completion.status {
            STATUS_SUCCESS => {
                let bytes = completion.bytes_written;
                self.board_frame_number(completion.frame_number);
                if bytes == 0 || bytes > self.port.frame_extent(clone) {
                    self.stats.bad_completion();
                    self.dropped_frame();
                    self.empty_completion(completion.frame_number)
                } else {
                    let format = self.format();
                    self.good_completion(bytes, completion.frame_number, completion.timestamp, format.as_ref())
                }
            }
            STATUS_CANCELLED => {
                self.stats.cancelled();
                self.empty_completion(completion.frame_number)
            }
            _ => {
                self.stats.skip_frame_number();
                self.dropped_frame();
                self.empty_completion(completion.frame_number)
            }
        };
        self.port.complete_frame(clone, &frame);
        self.port.delete(clone);
        self.port.attempt_processing(true);
    }
}
