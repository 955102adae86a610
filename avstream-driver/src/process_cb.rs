//! Process and completion of a common-buffer pin.
//!
//! The board fills slots of a contiguous ring; each filled slot is
//! completed to the child, which copies it into an AVStream frame and
//! returns it with `ReturnSlot`, in the order the slots were filled.
//!
//! **Completion** (`DISPATCH_LEVEL`): a `Slot` completion whose index is in
//! the ring is pushed (slot, bytes, status, frame number, timestamp) onto
//! the pin's SPSC FIFO, then `KsPinAttemptProcessing(TRUE)`. Anything else
//! is counted as bad and ignored (an index outside the ring cannot be
//! returned).
//!
//! **Process** (PASSIVE, only ever started by that call: the pin has
//! `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING`) pops every queued slot, in order:
//!
//! * status not `STATUS_SUCCESS`: not delivered (cancelled or dropped);
//! * a slot holding fewer bytes than the copy reads: dropped, counted bad;
//! * no leading edge (no frame queued by the application): dropped;
//! * a frame whose `FrameExtent` or `OffsetOut.Remaining` is below the
//!   image size (or without `OffsetOut.Data`): completed with
//!   `DataUsed = 0`, ejected, dropped;
//! * else the slot is copied into the frame line by line
//!   ([`crate::copy::copy_frame`]: source pitch = the slot's `line_pitch`,
//!   destination pitch = the format's stride), the frame completed with
//!   `DataUsed = image_bytes` and `KsStreamPointerAdvanceOffsetsAndUnlock(
//!   LeadingEdge, 0, image_bytes, TRUE)`;
//!
//! and in every case the slot goes back with `ReturnSlot` before the next
//! one is popped (FIFO order is the ring's order). Process returns
//! `STATUS_PENDING`: the next completion starts it again.
use crate::copy::{copy_frame, VectorUnit};
use crate::fifo::FilledSlot;
use crate::format::VideoFormat;
use crate::pin::{CapturePin, RingView};
use crate::ports::KsPinPort;
use capdma_interface::status::{NtStatus, STATUS_CANCELLED, STATUS_PENDING, STATUS_SUCCESS};
use capdma_interface::table::{Completion, CompletionKind};

impl<K: KsPinPort> CapturePin<K> {
    pub(crate) fn complete_cb(&self, completion: &Completion) {
        if completion.kind != CompletionKind::Slot as u32 || completion.tag >= self.config.slot_count {
            self.stats.bad_completion();
            return;
        }
        match completion.status {
            STATUS_SUCCESS => self.board_frame_number(completion.frame_number),
            STATUS_CANCELLED => {}
            _ => self.stats.skip_frame_number(),
        }
        let item = FilledSlot {
            slot: completion.tag,
            bytes: completion.bytes_written,
            status: completion.status,
            frame_number: completion.frame_number,
            timestamp: completion.timestamp,
        };
        if self.locked(&self.producer, |()| self.fifo.push(item)).is_err() {
            // More slots completed than the ring has: the bus delivered one twice.
            self.stats.bad_completion();
        }
        self.port.attempt_processing(true);
    }

    pub(crate) fn process_cb(&self, unit: VectorUnit) -> NtStatus {
        let (Some(format), Some(ring)) = self.running_view() else {
            return STATUS_PENDING;
        };
        while let Some(item) = self.fifo.pop() {
            self.deliver_slot(&format, &ring, &item, unit);
            self.give_back(item.slot);
        }
        STATUS_PENDING
    }

    fn deliver_slot(&self, format: &VideoFormat, ring: &RingView, item: &FilledSlot, unit: VectorUnit) {
        if item.status != STATUS_SUCCESS {
            self.count_undelivered(item);
            return;
        }
        let geometry = format.copy_geometry(ring.line_pitch);
        let needed = geometry.src_extent().unwrap_or(usize::MAX);
        let written = usize::try_from(item.bytes).unwrap_or(0);
        let image = format.image_bytes;
        let len = usize::try_from(image).unwrap_or(usize::MAX);
        let valid = |s: &&[u8]| written >= needed && s.len() >= needed && len != usize::MAX;
        let Some(src) = ring.slot(item.slot).filter(valid) else {
            self.stats.bad_completion();
            self.dropped_frame();
            return;
        };
        let Some(leading) = self.port.leading_edge() else {
            self.dropped_frame();
            return;
        };
        let offset = self.port.offset_out(leading);
        if offset.data.is_null() || offset.remaining < image || self.port.frame_extent(leading) < image {
            self.dropped_frame();
            self.port.complete_frame(leading, &self.empty_completion(item.frame_number));
            self.port.advance_offsets_and_unlock(leading, 0, true);
            return;
        }
        // SAFETY: byte-mode `OffsetOut.Data` of the locked leading edge
        // points at `Remaining >= image_bytes` writable bytes of the frame
        // buffer (KS maps it into system space for the pin). Only this pin's
        // Process writes it, and KS serialises Process calls, so the slice
        // is not aliased while it lives; it does not overlap the slot (a
        // common buffer owned by the bus).
        let dst = unsafe { core::slice::from_raw_parts_mut(offset.data, len) };
        if let Ok(copied) = copy_frame(dst, src, &geometry, unit) {
            self.stats.copied(copied);
            let frame = self.good_completion(image, item.frame_number, item.timestamp, Some(format));
            self.port.complete_frame(leading, &frame);
            self.port.advance_offsets_and_unlock(leading, image, true);
        } else {
            self.stats.bad_completion();
            self.dropped_frame();
            self.port.complete_frame(leading, &self.empty_completion(item.frame_number));
            self.port.advance_offsets_and_unlock(leading, 0, true);
        }
    }
}
