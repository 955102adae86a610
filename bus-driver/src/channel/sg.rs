//! The scatter/gather engine: the channel's descriptor ring (allocated at
//! start), the descriptor writer behind `ProgramFrame`, the ring's register
//! programming, and the in-flight table (a FIFO of posted frames, in ring
//! order) its completions are checked against.
//!
//! Counters are free-running `u32`s; descriptor `k` lives at ring entry
//! `k % entries` (`entries` a power of two). `producer` counts descriptors
//! posted (the value written to `RING_PRODUCER`), `retired` those of frames
//! whose completion was accepted; free entries are
//! `entries - (producer - retired)`.
//!
//! A frame ends in one of two ways: the board's completion record matches
//! the oldest posted frame (the board consumes the ring in order), or the
//! channel is reset/stopped/removed and every posted frame is *terminated*
//! with a status. Terminated frames stay in the table, at its front, until
//! the delivery loop hands them to the child, so the table bounds both.
//!
//! A frame posted in parts (`ProgramFramePart`, interface version 2) has
//! one table entry per part, in ring order; only its last part's entry
//! ends the frame ([`InFlightFrame::last`]). Between its first part and the
//! part that closes it the frame is *open* and no other frame may start. The
//! board completes each earlier part with a `CQ_STATUS_PART` record
//! (delivered as `CompletionKind::FramePart`); a termination delivers one
//! completion per frame, from its last entry (an open frame's last posted
//! part becomes its end when it is terminated).
use super::format::{validate_picture, ChannelGeometry};
use super::RecordFault;
use crate::dma_buffer::{entries_bytes, DmaBuffer};
use crate::hw::{split_u64, ChannelRegs};
use crate::mode::FOUR_GIB;
use crate::ports::{CommonBuffer, DmaAdapterPort, RegisterPort};
use capdma_interface::descriptor::{
    CompletionRecord, SgDescriptor, CQ_STATUS_PART, DESC_END_OF_FRAME, DESC_END_OF_PART, DESC_START_OF_FRAME,
};
use capdma_interface::regs::{channel, Caps, CTRL_RUN, CTRL_SG_MODE};
use capdma_interface::status::{NtStatus, STATUS_DEVICE_BUSY, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER};
use capdma_interface::table::{ChannelFormat, DmaConfig, SgElement, CAPDMA_PART_END, CAPDMA_PART_START};
use core::sync::atomic::{fence, Ordering};

/// A channel's descriptor ring: `entries` 32-byte `SgDescriptor`s in one
/// common buffer, and the board's limits on an element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DescriptorRing {
    buffer: DmaBuffer,
    /// Descriptors (a power of two).
    entries: u32,
    /// The board's `MAX_TRANSFER`, bytes per element.
    max_transfer: u32,
    /// The board drives 64-bit addresses.
    address_64: bool,
}

impl DescriptorRing {
    /// Device start: a ring of `entries` descriptors (`DescriptorRingEntries`)
    /// by the allocation policy of [`DmaBuffer::allocate_reachable`].
    /// `PASSIVE_LEVEL`. `None` when the adapter has no such buffer.
    pub fn allocate<A: DmaAdapterPort>(adapter: &A, entries: u32, caps: Caps, max_transfer: u32) -> Option<Self> {
        let buffer = DmaBuffer::allocate_entries(adapter, entries, caps)?;
        Some(Self { buffer, entries, max_transfer, address_64: caps.address_64 })
    }

    /// The ring's common buffer (freed by the device stop).
    pub const fn buffer(&self) -> DmaBuffer {
        self.buffer
    }
}

/// The scatter/gather engine of one channel: its descriptor ring and the
/// frames posted on it.
///
/// The driver's engine lives under its channel's spin lock; the benchmark
/// (`capdma-sim bench`) builds one over its own memory
/// ([`SgEngine::over_memory`]) and times [`SgEngine::post_frame`], the
/// routine `ProgramFrame` runs.
#[derive(Debug)]
pub struct SgEngine {
    ring: DescriptorRing,
    frames: InFlight,
    /// The frame posted in parts and not closed yet: (tag, its bytes so far).
    open: Option<(u32, u32)>,
}

impl SgEngine {
    /// An engine with nothing posted on `ring`.
    pub(crate) const fn new(ring: DescriptorRing) -> Self {
        Self { ring, frames: InFlight::new(), open: None }
    }

    /// An engine over caller-owned memory instead of a common buffer of the
    /// adapter's: `memory.va` holds `entries` descriptors (`entries` a power
    /// of two, `memory.bytes >= 32 * entries`, `va` 8-byte aligned),
    /// `memory.logical` is what the board would be programmed with. Elements
    /// may be at most `max_transfer` bytes and, unless `address_64`, end at
    /// or below 4 GiB. `None` when `entries` is not a power of two, the
    /// memory is too small or `va` is null or misaligned.
    ///
    /// # Safety
    /// `memory.va` must be valid for writes of `memory.bytes` bytes for as
    /// long as the engine lives, and not be accessed otherwise meanwhile
    /// (the engine writes descriptors there with volatile stores).
    #[must_use]
    pub unsafe fn over_memory(memory: CommonBuffer, entries: u32, max_transfer: u32, address_64: bool) -> Option<Self> {
        let needed = entries_bytes(entries)?;
        if !entries.is_power_of_two() || memory.bytes < needed || !memory.va.addr().is_multiple_of(8) {
            return None;
        }
        let buffer = DmaBuffer::whole(CommonBuffer { bytes: needed, ..memory })?;
        Some(Self::new(DescriptorRing { buffer, entries, max_transfer, address_64 }))
    }

    /// The ring's common buffer.
    pub(crate) const fn ring_buffer(&self) -> DmaBuffer {
        self.ring.buffer
    }

    /// Descriptors posted since the channel started or was last reset: the
    /// value for `RING_PRODUCER`.
    #[must_use]
    pub const fn producer(&self) -> u32 {
        self.frames.producer()
    }

    /// `ProgramFrame`'s work under the channel lock: checks `elements` (see
    /// `element_bytes`: none empty or above `MAX_TRANSFER`, none wrapping or,
    /// on a 32-bit board, ending above 4 GiB; at least `min_bytes` bytes in
    /// all — the running format's `frame_bytes`) and `tag` (not already in
    /// flight), records the frame in flight, writes one `SgDescriptor` per
    /// element into the ring (start-of-frame on the first, end-of-frame on
    /// the last, `tag` on all; volatile stores), then a release fence. The
    /// caller then writes [`Self::producer`] to `RING_PRODUCER`. Returns the
    /// counter of the frame's first descriptor (entry `first % entries`).
    /// Any IRQL; allocates nothing.
    ///
    /// # Errors
    /// * `STATUS_INVALID_PARAMETER`: a bad element list as above, a `tag`
    ///   already in flight, or more elements than the ring has entries;
    /// * `STATUS_INVALID_DEVICE_STATE`: a frame posted in parts is open;
    /// * `STATUS_DEVICE_BUSY`: the ring or the in-flight table
    ///   ([`MAX_INFLIGHT_FRAMES`]) is full now.
    ///
    /// Nothing is written or recorded on error.
    pub fn post_frame(&mut self, tag: u32, elements: &[SgElement], min_bytes: u32) -> Result<u32, NtStatus> {
        if self.open.is_some() {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        let ring = self.ring;
        let total = element_bytes(elements, ring.max_transfer, ring.address_64).ok_or(STATUS_INVALID_PARAMETER)?;
        if total < min_bytes || self.frames.has_tag(tag) {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let count = u32::try_from(elements.len()).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let first = self.frames.push(InFlightFrame { count, bytes: total, tag, last: true, ..InFlightFrame::default() }, ring.entries)?;
        self.write_descriptors(first, elements, tag, DESC_START_OF_FRAME, DESC_END_OF_FRAME);
        Ok(first)
    }

    /// `ProgramFramePart`'s work under the channel lock: posts as many of
    /// `elements` as the ring has free entries for, as one part of the frame
    /// `tag` (`flags`: `CAPDMA_PART_START` on the frame's first part,
    /// `CAPDMA_PART_END` when the elements reach the frame's end, honoured
    /// only when all are accepted). The part's descriptors carry
    /// `DESC_START_OF_FRAME` on the frame's first and, on its last,
    /// `DESC_END_OF_FRAME` when the part closes the frame, else
    /// `DESC_END_OF_PART`; one in-flight entry records the part (the frame's
    /// bytes so far). `min_bytes` (the running format's `frame_bytes`) is
    /// checked when the frame closes. Returns (the counter of the part's first
    /// descriptor, elements accepted); the caller writes [`Self::producer`]
    /// to `RING_PRODUCER`. Any IRQL; allocates nothing.
    ///
    /// # Errors
    /// Nothing is written or recorded on error.
    /// * `STATUS_INVALID_DEVICE_STATE`: `CAPDMA_PART_START` while a frame is
    ///   open, or a continuation while none is;
    /// * `STATUS_INVALID_PARAMETER`: unknown `flags`, a bad element list (as
    ///   [`Self::post_frame`]), a START `tag` already in flight or a
    ///   continuation's `tag` not the open frame's, or a closing part that
    ///   leaves the frame below `min_bytes`;
    /// * `STATUS_DEVICE_BUSY`: no free ring entry, or the in-flight table is
    ///   full, now.
    pub fn post_part(&mut self, tag: u32, elements: &[SgElement], flags: u32, min_bytes: u32) -> Result<(u32, u32), NtStatus> {
        if flags & !(CAPDMA_PART_START | CAPDMA_PART_END) != 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let start = flags & CAPDMA_PART_START != 0;
        let before = match (start, self.open) {
            (true, Some(_)) | (false, None) => return Err(STATUS_INVALID_DEVICE_STATE),
            (false, Some((open, _))) if open != tag => return Err(STATUS_INVALID_PARAMETER),
            (false, Some((_, bytes))) => bytes,
            (true, None) if self.frames.has_tag(tag) => return Err(STATUS_INVALID_PARAMETER),
            (true, None) => 0,
        };
        let ring = self.ring;
        element_bytes(elements, ring.max_transfer, ring.address_64).ok_or(STATUS_INVALID_PARAMETER)?;
        let free = self.frames.free_entries(ring.entries)?;
        let accepted = elements.get(..elements.len().min(free as usize)).unwrap_or_default();
        let count = u32::try_from(accepted.len()).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let closes = flags & CAPDMA_PART_END != 0 && accepted.len() == elements.len();
        let part_bytes = element_bytes(accepted, ring.max_transfer, ring.address_64).ok_or(STATUS_DEVICE_BUSY)?;
        let bytes = before.checked_add(part_bytes).ok_or(STATUS_INVALID_PARAMETER)?;
        if closes && bytes < min_bytes {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let first = self.frames.push(InFlightFrame { count, bytes, tag, last: closes, ..InFlightFrame::default() }, ring.entries)?;
        let end = if closes { DESC_END_OF_FRAME } else { DESC_END_OF_PART };
        self.write_descriptors(first, accepted, tag, if start { DESC_START_OF_FRAME } else { 0 }, end);
        self.open = (!closes).then_some((tag, bytes));
        Ok((first, count))
    }

    /// Writes one descriptor per element from counter `first` on (`head`
    /// flags on the first, `tail` on the last, `tag` on all; volatile
    /// stores), then a release fence.
    fn write_descriptors(&self, first: u32, elements: &[SgElement], tag: u32, head: u32, tail: u32) {
        let ring = self.ring;
        let last = elements.len().saturating_sub(1);
        for (i, (element, offset)) in elements.iter().zip(0u32..).enumerate() {
            let mut flags = 0;
            if i == 0 {
                flags |= head;
            }
            if i == last {
                flags |= tail;
            }
            let descriptor = SgDescriptor {
                address: element.logical_address,
                byte_count: element.byte_count,
                flags,
                tag,
                ..SgDescriptor::default()
            };
            // The index is below `entries` and the ring holds `entries`
            // descriptors: the write cannot miss.
            let _ = ring.buffer.write_descriptor(first.wrapping_add(offset) % ring.entries, &descriptor);
        }
        // The descriptors are visible to the board before it may read them.
        fence(Ordering::Release);
    }

    /// Checks a completion record (untrusted) against the oldest posted
    /// frame or part (`index` its first descriptor's entry, `tag` its tag,
    /// `byte_count` at most the frame's bytes up to its end, a
    /// `CQ_STATUS_PART` record for a part that does not end its frame and
    /// only for one); on success the entry leaves the table, its descriptors
    /// are free again, and its tag is returned with whether it ended the
    /// frame (`false`: a part, delivered as `CompletionKind::FramePart`).
    ///
    /// # Errors
    /// The first check that fails; nothing changes then.
    pub fn complete(&mut self, record: &CompletionRecord) -> Result<(u32, bool), RecordFault> {
        self.frames.complete(record, self.ring.entries).map(|frame| (frame.tag, frame.last))
    }

    /// Terminates every posted frame with `status` (see
    /// [`InFlight::abort_all`]); an open frame is closed: its last posted
    /// part ends it. Returns the frames terminated.
    pub(crate) fn abort_all(&mut self, status: NtStatus) -> usize {
        let open = self.open.take();
        if let Some((tag, _)) = open {
            self.frames.close(tag);
        }
        let mut n = self.frames.abort_all(status);
        if let Some((tag, _)) = open.filter(|(tag, _)| !self.frames.has_tag(*tag)) {
            // Every part posted so far was completed: the frame still comes
            // back, through an entry of no descriptors.
            if self.frames.push_terminated(tag, status) {
                n += 1;
            }
        }
        n
    }

    /// A new run of the channel (`StartChannel`): nothing posted, counters 0.
    pub(crate) fn start(&mut self) {
        self.frames.clear();
        self.open = None;
    }

    /// The ring's registers: `RING_BASE_LO/HI`, `RING_ENTRIES` and
    /// `SLOT_STRIDE` = 0 (`docs/architecture.md` §1, step 3).
    pub(crate) fn program_ring<R: RegisterPort>(&self, cr: &ChannelRegs<'_, R>) {
        let (lo, hi) = split_u64(self.ring.buffer.logical);
        cr.write(channel::RING_BASE_LO, lo);
        cr.write(channel::RING_BASE_HI, hi);
        cr.write(channel::RING_ENTRIES, self.ring.entries);
        cr.write(channel::SLOT_STRIDE, 0);
    }

    /// The `CTRL` value that runs the engine: `CTRL_RUN | CTRL_SG_MODE`
    /// (frames are handed over by `ProgramFrame`, not at start).
    pub(crate) const RUN_CTRL: u32 = CTRL_RUN | CTRL_SG_MODE;

    /// After the channel was reprogrammed and run again (power-up): frames
    /// posted meanwhile are handed to the board with `RING_PRODUCER` (their
    /// descriptors were written and fenced by [`Self::post_frame`]).
    pub(crate) fn hand_over_posted<R: RegisterPort>(&self, cr: &ChannelRegs<'_, R>) {
        if self.producer() != 0 {
            cr.write(channel::RING_PRODUCER, self.producer());
        }
    }

    /// The format check of a channel in S/G mode (`StartChannel`): the
    /// common checks ([`validate_picture`]); the line pitch is the child's
    /// stride.
    ///
    /// # Errors
    /// Those of [`validate_picture`]; `STATUS_INVALID_PARAMETER` for a
    /// stride below the line's bytes; `STATUS_INTEGER_OVERFLOW` when the
    /// frame does not fit 32 bits.
    pub(crate) fn validate_format(format: &ChannelFormat) -> Result<ChannelGeometry, NtStatus> {
        let picture = validate_picture(format)?;
        if format.stride < picture.line_bytes {
            return Err(STATUS_INVALID_PARAMETER);
        }
        picture.with_pitch(format.stride)
    }

    /// `GetDmaConfig`'s ring figures: `descriptor_count`; no slots.
    pub(crate) const fn report(&self, config: &mut DmaConfig) {
        config.descriptor_count = self.ring.entries;
        config.slot_count = 0;
        config.slot_bytes = 0;
    }

    /// The in-flight table.
    pub(crate) const fn frames(&self) -> &InFlight {
        &self.frames
    }

    /// The in-flight table, to terminate or deliver frames.
    pub(crate) fn frames_mut(&mut self) -> &mut InFlight {
        &mut self.frames
    }
}

/// Total bytes of a frame's elements, or `None` when there are none, any
/// element is empty, longer than `max_transfer`, wraps the address space,
/// or (32-bit board) ends above 4 GiB, or when the total overflows `u32`.
fn element_bytes(elements: &[SgElement], max_transfer: u32, address_64: bool) -> Option<u32> {
    if elements.is_empty() {
        return None;
    }
    let mut total: u32 = 0;
    for e in elements {
        if e.byte_count == 0 || e.byte_count > max_transfer {
            return None;
        }
        let end = e.logical_address.checked_add(u64::from(e.byte_count))?;
        if !address_64 && end > FOUR_GIB {
            return None;
        }
        total = total.checked_add(e.byte_count)?;
    }
    Some(total)
}

/// Most frames posted (or terminated but not yet delivered) per channel.
pub const MAX_INFLIGHT_FRAMES: usize = 32;

/// One posted frame, or one part of a frame posted in parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InFlightFrame {
    /// Counter of the entry's first descriptor (entry `first % entries`).
    pub first: u32,
    /// Descriptors of the entry.
    pub count: u32,
    /// Bytes of the frame's elements up to the end of this entry.
    pub bytes: u32,
    /// The child's tag.
    pub tag: u32,
    /// The entry ends its frame (a frame posted whole, or its last part):
    /// its completion is the frame's.
    pub last: bool,
    /// `None` while posted; the status to complete it with once terminated.
    pub fate: Option<NtStatus>,
}

/// Descriptor ring counters and the in-flight FIFO of one channel.
#[derive(Debug)]
pub(crate) struct InFlight {
    frames: [InFlightFrame; MAX_INFLIGHT_FRAMES],
    head: usize,
    len: usize,
    producer: u32,
    retired: u32,
}

impl InFlight {
    /// An empty table.
    pub const fn new() -> Self {
        const EMPTY: InFlightFrame = InFlightFrame { first: 0, count: 0, bytes: 0, tag: 0, last: false, fate: None };
        Self { frames: [EMPTY; MAX_INFLIGHT_FRAMES], head: 0, len: 0, producer: 0, retired: 0 }
    }

    /// Forgets every frame and zeroes the counters (start of a channel).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.producer = 0;
        self.retired = 0;
    }

    /// Descriptors posted so far (the `RING_PRODUCER` value).
    pub const fn producer(&self) -> u32 {
        self.producer
    }

    /// Frames posted and not yet completed or terminated.
    pub fn posted(&self) -> usize {
        self.iter().filter(|f| f.fate.is_none()).count()
    }

    /// Frames in the table (posted or awaiting delivery of their termination).
    pub const fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, i: usize) -> Option<&InFlightFrame> {
        if i >= self.len {
            return None;
        }
        self.frames.get((self.head + i) % MAX_INFLIGHT_FRAMES)
    }

    fn iter(&self) -> impl Iterator<Item = &InFlightFrame> + '_ {
        (0..self.len).filter_map(move |i| self.slot(i))
    }

    /// Whether a frame with `tag` is in the table.
    pub fn has_tag(&self, tag: u32) -> bool {
        self.iter().any(|f| f.tag == tag)
    }

    /// Checks that a frame of `count` descriptors can be posted on a ring of `entries`.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the frame could never fit the ring;
    /// `STATUS_DEVICE_BUSY` when the table or the ring is full right now.
    pub fn check_room(&self, count: u32, entries: u32) -> Result<(), NtStatus> {
        if count == 0 || count > entries {
            return Err(STATUS_INVALID_PARAMETER);
        }
        if self.len >= MAX_INFLIGHT_FRAMES {
            return Err(STATUS_DEVICE_BUSY);
        }
        let used = self.producer.wrapping_sub(self.retired);
        let free = entries.saturating_sub(used);
        if count > free {
            return Err(STATUS_DEVICE_BUSY);
        }
        Ok(())
    }

    /// Free ring entries now, when the table has room for one more entry.
    ///
    /// # Errors
    /// `STATUS_DEVICE_BUSY` when the table is full or no entry is free.
    pub fn free_entries(&self, entries: u32) -> Result<u32, NtStatus> {
        let free = entries.saturating_sub(self.producer.wrapping_sub(self.retired));
        if self.len >= MAX_INFLIGHT_FRAMES || free == 0 {
            return Err(STATUS_DEVICE_BUSY);
        }
        Ok(free)
    }

    /// Records `entry` (its `count` descriptors, `bytes`, `tag`, `last`; its
    /// `first` and `fate` are set here), advancing the producer. Returns the
    /// counter of its first descriptor (the caller writes descriptors
    /// `first..first + count`).
    ///
    /// # Errors
    /// As [`Self::check_room`].
    pub fn push(&mut self, entry: InFlightFrame, entries: u32) -> Result<u32, NtStatus> {
        self.check_room(entry.count, entries)?;
        let first = self.producer;
        let index = (self.head + self.len) % MAX_INFLIGHT_FRAMES;
        let slot = self.frames.get_mut(index).ok_or(STATUS_DEVICE_BUSY)?;
        *slot = InFlightFrame { first, fate: None, ..entry };
        self.len += 1;
        self.producer = first.wrapping_add(entry.count);
        Ok(first)
    }

    /// Appends frame `tag` terminated with `status`, holding no descriptors
    /// (an open frame whose posted parts were all completed). `false` when
    /// the table is full (it cannot be: the frame's first part had an entry,
    /// and only the open frame adds entries while it is open).
    fn push_terminated(&mut self, tag: u32, status: NtStatus) -> bool {
        if self.len >= MAX_INFLIGHT_FRAMES {
            return false;
        }
        let index = (self.head + self.len) % MAX_INFLIGHT_FRAMES;
        let Some(slot) = self.frames.get_mut(index) else { return false };
        *slot = InFlightFrame { first: self.producer, count: 0, bytes: 0, tag, last: true, fate: Some(status) };
        self.len += 1;
        true
    }

    /// The newest entry of frame `tag` becomes its end (an open frame about
    /// to be terminated).
    fn close(&mut self, tag: u32) {
        for i in (0..self.len).rev() {
            if let Some(f) = self.frames.get_mut((self.head + i) % MAX_INFLIGHT_FRAMES) {
                if f.tag == tag {
                    f.last = true;
                    return;
                }
            }
        }
    }

    /// Terminates every posted frame (every entry: parts too) with `status`
    /// and forgets the ring (the board was reset: its counters are zero
    /// again). Returns how many frames were terminated (entries that end
    /// their frame).
    pub fn abort_all(&mut self, status: NtStatus) -> usize {
        let mut n = 0;
        for i in 0..self.len {
            if let Some(f) = self.frames.get_mut((self.head + i) % MAX_INFLIGHT_FRAMES) {
                if f.fate.is_none() {
                    f.fate = Some(status);
                    n += usize::from(f.last);
                }
            }
        }
        self.producer = 0;
        self.retired = 0;
        n
    }

    /// Removes and returns the front frame if it is terminated. Terminated
    /// parts that do not end their frame leave the table on the way (their
    /// frame's completion is its last entry's).
    pub fn pop_terminated(&mut self) -> Option<InFlightFrame> {
        loop {
            let front = *self.slot(0)?;
            front.fate?;
            self.pop_front();
            if front.last {
                return Some(front);
            }
        }
    }

    fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % MAX_INFLIGHT_FRAMES;
            self.len -= 1;
        }
    }

    /// Checks a completion record (untrusted) against the oldest posted
    /// frame; on success removes that frame, retires its descriptors and
    /// returns it.
    ///
    /// # Errors
    /// The first check that fails; nothing changes then.
    pub fn complete(&mut self, record: &CompletionRecord, entries: u32) -> Result<InFlightFrame, RecordFault> {
        if record.index >= entries {
            return Err(RecordFault::IndexOutOfRange);
        }
        let front = match self.slot(0) {
            Some(f) if f.fate.is_none() => *f,
            _ => return Err(RecordFault::Unexpected),
        };
        if front.first % entries != record.index {
            return Err(RecordFault::Unexpected);
        }
        if front.tag != record.tag {
            return Err(RecordFault::TagMismatch);
        }
        if (record.status == CQ_STATUS_PART) == front.last {
            // A part's record for a frame's end, or a frame's for a part.
            return Err(RecordFault::Unexpected);
        }
        if record.byte_count > front.bytes {
            return Err(RecordFault::ByteCountTooLarge);
        }
        self.pop_front();
        self.retired = self.retired.wrapping_add(front.count);
        Ok(front)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capdma_interface::status::STATUS_CANCELLED;

    /// A frame posted whole: `count` descriptors, `bytes`, `tag`.
    fn push(e: &mut InFlight, count: u32, bytes: u32, tag: u32, entries: u32) -> Result<u32, NtStatus> {
        e.push(InFlightFrame { count, bytes, tag, last: true, ..InFlightFrame::default() }, entries)
    }

    fn rec(index: u32, bytes: u32, tag: u32) -> CompletionRecord {
        CompletionRecord { index, byte_count: bytes, tag, ..Default::default() }
    }

    #[test]
    fn ring_space_is_accounted_by_descriptors() {
        let mut e = InFlight::new();
        assert_eq!(push(&mut e, 40, 4000, 1, 64), Ok(0));
        assert_eq!(e.check_room(25, 64), Err(STATUS_DEVICE_BUSY));
        assert_eq!(push(&mut e, 24, 2400, 2, 64), Ok(40));
        assert_eq!(e.check_room(1, 64), Err(STATUS_DEVICE_BUSY));
        assert_eq!(e.check_room(65, 64), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(e.complete(&rec(0, 4000, 1), 64).map(|f| f.tag), Ok(1));
        // 40 descriptors retired: a frame of 40 fits again and wraps the ring.
        assert_eq!(push(&mut e, 40, 4000, 3, 64), Ok(64));
        assert_eq!(e.complete(&rec(40, 2400, 2), 64).map(|f| f.tag), Ok(2));
        assert_eq!(e.complete(&rec(0, 1, 3), 64).map(|f| f.first), Ok(64));
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn table_capacity_is_enforced() {
        let mut e = InFlight::new();
        for t in 0..u32::try_from(MAX_INFLIGHT_FRAMES).unwrap() {
            push(&mut e, 1, 10, t, 1024).unwrap();
        }
        assert_eq!(push(&mut e, 1, 10, 99, 1024), Err(STATUS_DEVICE_BUSY));
    }

    #[test]
    fn bad_records_change_nothing() {
        let mut e = InFlight::new();
        push(&mut e, 4, 100, 7, 64).unwrap();
        assert_eq!(e.complete(&rec(64, 100, 7), 64), Err(RecordFault::IndexOutOfRange));
        assert_eq!(e.complete(&rec(1, 100, 7), 64), Err(RecordFault::Unexpected));
        assert_eq!(e.complete(&rec(0, 100, 8), 64), Err(RecordFault::TagMismatch));
        assert_eq!(e.complete(&rec(0, 101, 7), 64), Err(RecordFault::ByteCountTooLarge));
        assert_eq!(e.posted(), 1);
        assert_eq!(e.complete(&rec(0, 100, 7), 64).map(|f| f.count), Ok(4));
        assert_eq!(e.complete(&rec(4, 1, 7), 64), Err(RecordFault::Unexpected));
    }

    /// An engine over `backing` (`entries` descriptors), 64-bit, 1 MiB elements.
    fn engine(backing: &mut [u64], entries: u32, address_64: bool) -> SgEngine {
        let memory = CommonBuffer { va: backing.as_mut_ptr().cast(), logical: 0x1_0000, bytes: backing.len() * 8 };
        // SAFETY: `backing` outlives the engine in every test and is not
        // touched while the engine writes (the tests read it afterwards).
        unsafe { SgEngine::over_memory(memory, entries, 1 << 20, address_64) }.unwrap()
    }

    fn el(logical_address: u64, byte_count: u32) -> SgElement {
        SgElement { logical_address, byte_count, alignment: 0 }
    }

    #[test]
    fn descriptors_carry_flags_tag_and_wrap() {
        let mut backing = vec![0u64; 4 * 8];
        let mut e = engine(&mut backing, 8, true);
        e.post_frame(1, &[el(0x1000, 100); 7], 0).unwrap();
        e.complete(&rec(0, 1, 1)).unwrap();
        assert_eq!(e.post_frame(9, &[el(0x1_0000_0000, 4096), el(0x2000, 100)], 4196), Ok(7));
        assert_eq!(e.producer(), 9);
        let word = |entry: usize, i: usize| backing[entry * 4 + i];
        // Entry 7: the first element, start-of-frame; entry 0 (wrapped): the last.
        assert_eq!(word(7, 0), 0x1_0000_0000);
        let a: SgDescriptor = zerocopy::transmute!([word(7, 0), word(7, 1), word(7, 2), word(7, 3)]);
        let b: SgDescriptor = zerocopy::transmute!([word(0, 0), word(0, 1), word(0, 2), word(0, 3)]);
        assert_eq!((a.address, a.byte_count, a.flags, a.tag), (0x1_0000_0000, 4096, DESC_START_OF_FRAME, 9));
        assert_eq!((b.address, b.byte_count, b.flags, b.tag), (0x2000, 100, DESC_END_OF_FRAME, 9));
    }

    #[test]
    fn bad_lists_write_nothing() {
        let mut backing = vec![0u64; 4 * 8];
        let mut e = engine(&mut backing, 8, false);
        let cases: [&[SgElement]; 5] = [
            &[],
            &[el(0x1000, 16), el(0x2000, 0)],
            &[el(0x1000, (1 << 20) + 1)],
            &[el(0xFFFF_F000, 0x2000)],
            &[el(u64::MAX - 8, 16)],
        ];
        for (i, list) in cases.iter().enumerate() {
            assert_eq!(e.post_frame(1, list, 0), Err(STATUS_INVALID_PARAMETER), "case {i}");
        }
        assert_eq!(e.post_frame(1, &[el(0x1000, 16)], 17), Err(STATUS_INVALID_PARAMETER), "short of the frame");
        assert_eq!(e.post_frame(1, &[el(0x1000, 16); 9], 0), Err(STATUS_INVALID_PARAMETER), "more than the ring");
        e.post_frame(1, &[el(0x1000, 16); 5], 0).unwrap();
        assert_eq!(e.post_frame(1, &[el(0x1000, 16)], 0), Err(STATUS_INVALID_PARAMETER), "tag in flight");
        assert_eq!(e.post_frame(2, &[el(0x1000, 16); 4], 0), Err(STATUS_DEVICE_BUSY), "ring full");
        assert_eq!(e.producer(), 5);
        assert!(backing[5 * 4..].iter().all(|&w| w == 0), "nothing written past the posted frame");
    }

    #[test]
    fn the_line_pitch_is_the_childs_stride() {
        use capdma_interface::format::FOURCC_YUY2;
        let fmt = |stride| ChannelFormat { fourcc: FOURCC_YUY2, width: 640, height: 480, stride, frame_interval: 1, reserved: 0 };
        let g = SgEngine::validate_format(&fmt(1536)).unwrap();
        assert_eq!((g.line_bytes, g.line_pitch, g.frame_bytes), (1280, 1536, 1536 * 480));
        assert_eq!(SgEngine::validate_format(&fmt(1279)), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(SgEngine::validate_format(&fmt(0x0100_0000)), Err(capdma_interface::status::STATUS_INTEGER_OVERFLOW));
    }

    #[test]
    fn over_memory_checks_its_memory() {
        let mut backing = vec![0u64; 4 * 8];
        let memory = CommonBuffer { va: backing.as_mut_ptr().cast(), logical: 0, bytes: 8 * 32 };
        // SAFETY: refused before anything is written.
        assert!(unsafe { SgEngine::over_memory(memory, 16, 4096, true) }.is_none(), "too small");
        // SAFETY: as above.
        assert!(unsafe { SgEngine::over_memory(memory, 6, 4096, true) }.is_none(), "not a power of two");
        let odd = CommonBuffer { va: memory.va.wrapping_add(4), bytes: 7 * 32, ..memory };
        // SAFETY: as above.
        assert!(unsafe { SgEngine::over_memory(odd, 4, 4096, true) }.is_none(), "misaligned");
    }

    #[test]
    fn abort_terminates_in_order_and_frees_the_ring() {
        let mut e = InFlight::new();
        push(&mut e, 30, 100, 1, 64).unwrap();
        push(&mut e, 30, 100, 2, 64).unwrap();
        assert_eq!(e.abort_all(STATUS_CANCELLED), 2);
        assert_eq!(e.posted(), 0);
        // New frames may be posted before the terminated ones are delivered.
        assert_eq!(push(&mut e, 60, 100, 3, 64), Ok(0));
        assert!(e.has_tag(1) && e.has_tag(3));
        assert_eq!(e.pop_terminated().map(|f| (f.tag, f.fate)), Some((1, Some(STATUS_CANCELLED))));
        assert_eq!(e.pop_terminated().map(|f| f.tag), Some(2));
        assert_eq!(e.pop_terminated(), None);
        assert_eq!(e.complete(&rec(0, 100, 3), 64).map(|f| f.tag), Ok(3));
    }

    #[test]
    fn a_terminated_frame_in_parts_comes_back_once_from_its_last_posted_part() {
        let mut backing = vec![0u64; 4 * 8];
        let mut e = engine(&mut backing, 8, true);
        let part = [el(0x1000, 100); 3];
        assert_eq!(e.post_part(5, &part, CAPDMA_PART_START, 0), Ok((0, 3)));
        assert_eq!(e.post_part(5, &part, 0, 0), Ok((3, 3)));
        assert_eq!(e.post_part(5, &part, CAPDMA_PART_END, 0), Ok((6, 2)), "two entries left: the frame stays open");
        assert_eq!(e.frames().len(), 3);
        assert_eq!(e.abort_all(STATUS_CANCELLED), 1, "one frame, in three entries");
        let back = e.frames_mut().pop_terminated().expect("the frame");
        assert_eq!((back.tag, back.last, back.fate, back.first), (5, true, Some(STATUS_CANCELLED), 6));
        assert_eq!(e.frames_mut().pop_terminated(), None, "its earlier parts are not completions of their own");
        assert_eq!(e.post_frame(6, &part, 0), Ok(0), "nothing open after the termination");
    }
}
