//! The common-buffer engine of a pin: its device start, format fit, start
//! (the slot ring), Process, completion and stop (`CbEngine`, chosen once
//! by `engine::PinEngine::for_mode`).
//!
//! **Device start:** the pin gets `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING`
//! (Process runs when the completion DPC calls `KsPinAttemptProcessing`);
//! the ring must have `1..=MAX_RING_SLOTS` slots (`device_setup`). A format
//! fits when its frame at the slot line pitch (the line rounded up to
//! [`SLOT_LINE_ALIGNMENT`]) fits `slot_bytes` (`fits`).
//!
//! **Start** (`PAUSE -> RUN`, after `StartChannel`): `GetSlotRing` and its
//! checks (`RingView`); on failure the channel is stopped again and the
//! queued slots returned. **Stop** (`RUN -> PAUSE`, after `StopChannel`):
//! every filled slot still queued is returned, and the ring forgotten.
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
use crate::bus_client::StopOutcome;
use crate::copy::{copy_frame, VectorUnit};
use crate::device::AdapterRegistration;
use crate::fifo::{FilledSlot, SlotFifo};
use capdma_interface::table::MAX_RING_SLOTS;
use crate::format::VideoFormat;
use crate::ks_format::KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING;
use crate::pin::CapturePin;
use crate::ports::KsPinPort;
use capdma_interface::regs::SLOT_LINE_ALIGNMENT;
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_IO_DEVICE_ERROR, STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, CompletionKind, DmaConfig, SlotRing};

/// Device start of a common-buffer channel: checks the ring's shape and
/// answers the pin's own flag (`KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING`); no
/// adapter is registered. PASSIVE.
///
/// # Errors
/// `STATUS_IO_DEVICE_ERROR` for zero slots or zero slot bytes;
/// `STATUS_NOT_SUPPORTED` for more than [`MAX_RING_SLOTS`] slots.
pub(crate) fn device_setup(config: &DmaConfig) -> Result<(Option<AdapterRegistration>, u32), NtStatus> {
    if config.slot_count == 0 || config.slot_bytes == 0 {
        return Err(STATUS_IO_DEVICE_ERROR);
    }
    if config.slot_count > MAX_RING_SLOTS {
        return Err(STATUS_NOT_SUPPORTED);
    }
    Ok((None, KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING))
}

/// Whether a common-buffer channel with `config` can stream `format`: the
/// frame at the slot line pitch (`line_bytes` rounded up to
/// [`SLOT_LINE_ALIGNMENT`], bytes) must fit `slot_bytes`.
pub(crate) fn fits(config: &DmaConfig, format: &VideoFormat) -> bool {
    format
        .line_bytes()
        .checked_next_multiple_of(SLOT_LINE_ALIGNMENT)
        .and_then(|pitch| format.pixel.frame_bytes(format.height, pitch))
        .is_some_and(|bytes| bytes <= config.slot_bytes)
}

/// The common-buffer slot ring as checked at `PAUSE -> RUN`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingView {
    base: *mut u8,
    slot_count: u32,
    slot_stride: usize,
    slot_bytes: usize,
    /// Bytes between lines in a slot, for the running format.
    pub(crate) line_pitch: u32,
}

impl RingView {
    /// Checks what `GetSlotRing` answered against the format and the
    /// configuration: non-null base, `1..=MAX_RING_SLOTS` slots (as configured),
    /// stride >= slot bytes, line pitch >= the line, the frame within a
    /// slot, the ring within the address space.
    fn check(ring: &SlotRing, format: &VideoFormat, config: &DmaConfig) -> Result<Self, NtStatus> {
        let geometry = format.copy_geometry(ring.line_pitch);
        let needed = geometry.src_extent().map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let slot_bytes = usize::try_from(ring.slot_bytes).map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let slot_stride = usize::try_from(ring.slot_stride).map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let count = usize::try_from(ring.slot_count).map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let total = slot_stride.checked_mul(count).ok_or(STATUS_IO_DEVICE_ERROR)?;
        let ok = !ring.base.is_null()
            && ring.slot_count != 0
            && ring.slot_count <= MAX_RING_SLOTS
            && ring.slot_count == config.slot_count
            && slot_stride >= slot_bytes
            && needed <= slot_bytes
            && (ring.base as usize).checked_add(total).is_some();
        if !ok {
            return Err(STATUS_IO_DEVICE_ERROR);
        }
        Ok(Self { base: ring.base, slot_count: ring.slot_count, slot_stride, slot_bytes, line_pitch: ring.line_pitch })
    }

    /// The bytes of slot `index` (`base + index * slot_stride`,
    /// `slot_bytes` long), `None` for an index out of the ring.
    ///
    /// Valid to read while the channel runs and the slot is owned by the
    /// child (completed to it and not yet returned): the caller's duty.
    pub(crate) fn slot(&self, index: u32) -> Option<&[u8]> {
        if index >= self.slot_count {
            return None;
        }
        let offset = usize::try_from(index).ok()?.checked_mul(self.slot_stride)?;
        let start = self.base.wrapping_add(offset);
        // SAFETY: `check` verified the ring `[base, base + slot_count *
        // slot_stride)` is within the address space and every slot's
        // `slot_bytes <= slot_stride`; `index < slot_count`, so the range is
        // inside the ring. The bus contract (`GetSlotRing`) keeps the ring
        // mapped until the channel is stopped, and the pin only reads slots
        // while running (Process is serialised with the stop by the
        // processing mutex) and only slots the child owns, which the board
        // does not write.
        Some(unsafe { core::slice::from_raw_parts(start, self.slot_bytes) })
    }
}

// SAFETY: the ring is a common buffer mapped in system space, readable from
// any processor; `RingView` only hands out reads of it under the rules of
// `slot`. (This makes `CapturePin<K>` `Send`/`Sync` when `K` and its
// `StreamPointer` are.)
unsafe impl Send for RingView {}

/// The common-buffer engine's state: the filled slots completed to the pin
/// and not yet processed (an SPSC FIFO: the completion DPC produces under
/// `producer`, Process consumes), and while running the ring with the
/// format it was checked against.
pub(crate) struct CbEngine {
    fifo: SlotFifo,
    producer: spin::Mutex<()>,
    running: spin::Mutex<Option<(VideoFormat, RingView)>>,
}

impl CbEngine {
    /// No slot queued, no ring.
    pub(crate) fn new() -> Self {
        Self { fifo: SlotFifo::new(), producer: spin::Mutex::new(()), running: spin::Mutex::new(None) }
    }

    /// Whether filled slots are queued (not yet processed or returned).
    #[cfg(test)]
    pub(crate) fn has_queued_slots(&self) -> bool {
        !self.fifo.is_empty()
    }

    /// `PAUSE -> RUN` after `StartChannel(format)` succeeded: `GetSlotRing`
    /// and [`RingView::check`]. On failure the channel is stopped again
    /// and the queued slots returned.
    ///
    /// # Errors
    /// `GetSlotRing`'s status; `STATUS_IO_DEVICE_ERROR` for a ring that
    /// fails its checks.
    pub(crate) fn started<K: KsPinPort>(&self, pin: &CapturePin<K>, format: &VideoFormat) -> Result<(), NtStatus> {
        let ring = pin.bus.get_slot_ring().and_then(|r| RingView::check(&r, format, &pin.config));
        match ring {
            Ok(ring) => {
                pin.locked(&self.running, |r| *r = Some((*format, ring)));
                Ok(())
            }
            Err(status) => {
                let _ = pin.bus.stop_channel();
                self.drain(pin);
                Err(status)
            }
        }
    }

    /// `RUN -> PAUSE` after `StopChannel`: every queued slot returned, the
    /// ring forgotten.
    pub(crate) fn stopped<K: KsPinPort>(&self, pin: &CapturePin<K>, _outcome: Result<StopOutcome, NtStatus>) {
        self.drain(pin);
        pin.locked(&self.running, |r| *r = None);
    }

    /// Returns every queued slot to the bus, in order, without delivering
    /// it (counted as cancelled: the pin is stopping or restarting).
    pub(crate) fn drain<K: KsPinPort>(&self, pin: &CapturePin<K>) {
        while let Some(item) = self.fifo.pop() {
            pin.stats.cancelled();
            give_back(pin, item.slot);
        }
    }

    /// The completion of a slot (see the module documentation).
    pub(crate) fn complete<K: KsPinPort>(&self, pin: &CapturePin<K>, completion: &Completion) {
        if completion.kind != CompletionKind::Slot as u32 || completion.tag >= pin.config.slot_count {
            pin.stats.bad_completion();
            return;
        }
        match completion.status {
            STATUS_SUCCESS => pin.board_frame_number(completion.frame_number),
            STATUS_CANCELLED => {}
            _ => pin.stats.skip_frame_number(),
        }
        let item = FilledSlot {
            slot: completion.tag,
            bytes: completion.bytes_written,
            status: completion.status,
            frame_number: completion.frame_number,
            timestamp: completion.timestamp,
        };
        if pin.locked(&self.producer, |()| self.fifo.push(item)).is_err() {
            // More slots completed than the ring has: the bus delivered one twice.
            pin.stats.bad_completion();
        }
        pin.port.attempt_processing(true);
    }

    /// Process (see the module documentation).
    pub(crate) fn process<K: KsPinPort>(&self, pin: &CapturePin<K>, unit: VectorUnit) -> NtStatus {
        let Some((format, ring)) = pin.locked(&self.running, |r| *r) else {
            return STATUS_PENDING;
        };
        while let Some(item) = self.fifo.pop() {
            deliver_slot(pin, &format, &ring, &item, unit);
            give_back(pin, item.slot);
        }
        STATUS_PENDING
    }
}

/// `ReturnSlot`, counting a refusal.
fn give_back<K: KsPinPort>(pin: &CapturePin<K>, slot: u32) {
    if pin.bus.return_slot(slot).is_err() {
        pin.stats.slot_return_failed();
    }
}

/// Counts a slot that is not delivered: `STATUS_CANCELLED` -> cancelled,
/// anything else -> dropped.
fn count_undelivered<K: KsPinPort>(pin: &CapturePin<K>, item: &FilledSlot) {
    if item.status == STATUS_CANCELLED {
        pin.stats.cancelled();
    } else {
        pin.dropped_frame();
    }
}

fn deliver_slot<K: KsPinPort>(
    pin: &CapturePin<K>,
    format: &VideoFormat,
    ring: &RingView,
    item: &FilledSlot,
    unit: VectorUnit,
) {
    if item.status != STATUS_SUCCESS {
        count_undelivered(pin, item);
        return;
    }
    let geometry = format.copy_geometry(ring.line_pitch);
    let needed = geometry.src_extent().unwrap_or(usize::MAX);
    let written = usize::try_from(item.bytes).unwrap_or(0);
    let image = format.image_bytes;
    let len = usize::try_from(image).unwrap_or(usize::MAX);
    let valid = |s: &&[u8]| written >= needed && s.len() >= needed && len != usize::MAX;
    let Some(src) = ring.slot(item.slot).filter(valid) else {
        pin.stats.bad_completion();
        pin.dropped_frame();
        return;
    };
    let Some(leading) = pin.port.leading_edge() else {
        pin.dropped_frame();
        return;
    };
    let offset = pin.port.offset_out(leading);
    if offset.data.is_null() || offset.remaining < image || pin.port.frame_extent(leading) < image {
        pin.dropped_frame();
        pin.port.complete_frame(leading, &pin.empty_completion(item.frame_number));
        pin.port.advance_offsets_and_unlock(leading, 0, true);
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
        pin.stats.copied(copied);
        let frame = pin.good_completion(image, item.frame_number, item.timestamp, Some(format));
        pin.port.complete_frame(leading, &frame);
        pin.port.advance_offsets_and_unlock(leading, image, true);
    } else {
        pin.stats.bad_completion();
        pin.dropped_frame();
        pin.port.complete_frame(leading, &pin.empty_completion(item.frame_number));
        pin.port.advance_offsets_and_unlock(leading, 0, true);
    }
}
