//! The common-buffer engine: the channel's slot ring (one contiguous common
//! buffer, allocated at start), its register programming, the format check
//! of a slot, and the slots' ownership bookkeeping.
//!
//! The board owns the slots of counters `[consumer, producer)` (entry
//! `counter % count`), fills them in ring order and completes each with a
//! record naming the slot. A completed slot belongs to the child until it
//! returns it with `ReturnSlot`, which must happen in completion order (the
//! ring is FIFO): the child's slots are kept in a FIFO and only its front
//! may be returned.
//!
//! A third state, *parked*, covers resets. After `CTRL_RESET` the board's
//! counters restart at 0, so it will fill slot 0, 1, … next, while the
//! child may still hold any slots. The child keeps its slots (and its
//! return order); every other slot is parked, and parked slots are handed
//! to the board in ring order (`RING_PRODUCER += 1` each) as long as the
//! next slot in ring order is parked. A slot the child returns out of ring
//! order is parked until the ones before it come back. Without a reset the
//! child's FIFO front is always the next slot in ring order, so a return
//! goes straight to the board: exactly `slot == RING_PRODUCER % entries`.
use super::format::{slot_line_pitch, validate_picture, ChannelGeometry};
use super::RecordFault;
use crate::config::MIN_SLOT_COUNT;
use crate::dma_buffer::{round_up, DmaBuffer, PAGE_SIZE};
use crate::hw::{split_u64, ChannelRegs};
use crate::ports::{DmaAdapterPort, RegisterPort};
use capdma_interface::descriptor::CompletionRecord;
use capdma_interface::regs::{channel, Caps, CTRL_RUN};
use capdma_interface::status::{NtStatus, STATUS_INTEGER_OVERFLOW, STATUS_INVALID_PARAMETER};
use capdma_interface::table::{ChannelFormat, DmaConfig, SlotRing, MAX_RING_SLOTS};

/// Most slots per channel: the contract's [`MAX_RING_SLOTS`] as the length
/// of the slot tables.
pub const MAX_SLOTS: usize = MAX_RING_SLOTS as usize;

/// Bytes of one slot for a board whose largest frame is `max_frame_bytes`
/// and whose buffers must be aligned to `alignment` bytes: the frame rounded
/// up to the alignment and to a page (`PAGE_SIZE`), so every slot starts
/// aligned. `None` when that does not fit 32 bits.
pub(crate) fn slot_bytes_for(max_frame_bytes: u32, alignment: u32) -> Option<u32> {
    round_up(u64::from(max_frame_bytes), u64::from(alignment.max(PAGE_SIZE))).and_then(|v| u32::try_from(v).ok())
}

/// A channel's slot ring: `count` slots of `slot_bytes` bytes, back to back
/// in one contiguous common buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotMemory {
    buffer: DmaBuffer,
    count: u32,
    slot_bytes: u32,
}

impl SlotMemory {
    /// Device start: `count` slots (`SlotCount`, at most [`MAX_SLOTS`]) of
    /// `slot_bytes` bytes in one buffer by the allocation policy of
    /// [`DmaBuffer::allocate_reachable`]; when no such buffer can be had,
    /// one slot fewer is tried, down to `MIN_SLOT_COUNT`.
    /// `PASSIVE_LEVEL`. `None` when not even that can be had.
    pub fn allocate<A: DmaAdapterPort>(adapter: &A, count: u32, slot_bytes: u32, caps: Caps) -> Option<Self> {
        let mut slots = count.min(u32::try_from(MAX_SLOTS).unwrap_or(u32::MAX));
        loop {
            let bytes = usize::try_from(slot_bytes)
                .ok()
                .and_then(|b| b.checked_mul(usize::try_from(slots).ok()?));
            if let Some(buffer) = bytes.and_then(|bytes| DmaBuffer::allocate_reachable(adapter, bytes, caps)) {
                return Some(Self { buffer, count: slots, slot_bytes });
            }
            if slots <= MIN_SLOT_COUNT {
                return None;
            }
            slots -= 1;
        }
    }

    /// The ring's common buffer (freed by the device stop).
    pub const fn buffer(&self) -> DmaBuffer {
        self.buffer
    }
}

/// The common-buffer engine of one channel: its slot ring and who holds
/// each slot.
#[derive(Debug)]
pub(crate) struct SlotEngine {
    ring: SlotMemory,
    owners: SlotOwners,
}

impl SlotEngine {
    /// An engine over `ring` with every slot parked (channel stopped).
    pub fn new(ring: SlotMemory) -> Self {
        let mut owners = SlotOwners::new();
        owners.configure(ring.count);
        Self { ring, owners }
    }

    /// The ring's common buffer.
    pub const fn ring_buffer(&self) -> DmaBuffer {
        self.ring.buffer
    }

    /// Slots in the ring.
    pub const fn count(&self) -> u32 {
        self.ring.count
    }

    /// Slots the board holds (it owes a completion for each).
    pub const fn board_owned(&self) -> u32 {
        self.owners.board_owned()
    }

    /// The value for `RING_PRODUCER`.
    pub const fn producer(&self) -> u32 {
        self.owners.producer()
    }

    /// A new run of the channel (`StartChannel`): every slot to the board.
    pub fn start(&mut self) {
        self.owners.start();
    }

    /// Before the engine is run again after a reset or a power-up: the
    /// board's counters restart at 0; the child keeps its slots, the others
    /// go to the board in ring order (see the module documentation).
    pub fn prepare_restart(&mut self) {
        self.owners.reset_keep_child();
    }

    /// The engine stopped (or its reset completed with the channel stopped):
    /// the board's slots are reclaimed; the child keeps its own.
    pub fn stop(&mut self) {
        self.owners.stop();
    }

    /// The ring's registers: `RING_BASE_LO/HI`, `RING_ENTRIES` = slots,
    /// `SLOT_STRIDE` = bytes per slot (`docs/architecture.md` §1, step 3).
    pub fn program_ring<R: RegisterPort>(&self, cr: &ChannelRegs<'_, R>) {
        let (lo, hi) = split_u64(self.ring.buffer.logical);
        cr.write(channel::RING_BASE_LO, lo);
        cr.write(channel::RING_BASE_HI, hi);
        cr.write(channel::RING_ENTRIES, self.ring.count);
        cr.write(channel::SLOT_STRIDE, self.ring.slot_bytes);
    }

    /// Hands the board its slots (`RING_PRODUCER`) and returns the `CTRL`
    /// value that runs the engine: `CTRL_RUN`.
    pub fn arm<R: RegisterPort>(&self, cr: &ChannelRegs<'_, R>) -> u32 {
        cr.write(channel::RING_PRODUCER, self.owners.producer());
        CTRL_RUN
    }

    /// Checks a completion record (untrusted) against the slot the board
    /// fills next ([`SlotOwners::accept`], `byte_count` at most a slot); on
    /// success the slot becomes the child's and is returned. With nobody
    /// listening (`listening` false: no callback) the slot goes straight
    /// back to the board (`RING_PRODUCER` rewritten).
    ///
    /// # Errors
    /// The first check that fails; nothing changes then.
    pub fn accept<R: RegisterPort>(
        &mut self,
        cr: &ChannelRegs<'_, R>,
        record: &CompletionRecord,
        listening: bool,
    ) -> Result<u32, RecordFault> {
        let slot = self.owners.accept(record, self.ring.slot_bytes)?;
        if !listening {
            if let Ok(true) = self.owners.return_slot(slot) {
                cr.write(channel::RING_PRODUCER, self.owners.producer());
            }
        }
        Ok(slot)
    }

    /// The child returns `slot` (`ReturnSlot`). Returns whether
    /// `RING_PRODUCER` must be rewritten (with [`Self::producer`]).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when `slot` is out of range or is not the
    /// oldest slot the child holds.
    pub fn return_slot(&mut self, slot: u32) -> Result<bool, NtStatus> {
        self.owners.return_slot(slot)
    }

    /// The format check of a channel in common-buffer mode (`StartChannel`):
    /// the common checks ([`validate_picture`]); lines at the slot line
    /// pitch ([`slot_line_pitch`]); the frame must fit a slot.
    ///
    /// # Errors
    /// Those of [`validate_picture`]; `STATUS_INTEGER_OVERFLOW` when the
    /// pitch or the frame does not fit 32 bits; `STATUS_INVALID_PARAMETER`
    /// when the frame is larger than a slot.
    pub fn validate_format(&self, format: &ChannelFormat) -> Result<ChannelGeometry, NtStatus> {
        validate_slot_format(format, self.ring.slot_bytes)
    }

    /// `GetSlotRing`'s answer; `line_pitch` that of the running format (0
    /// while stopped).
    pub const fn slot_ring(&self, line_pitch: u32) -> SlotRing {
        SlotRing {
            base: self.ring.buffer.va,
            base_logical: self.ring.buffer.logical,
            slot_count: self.ring.count,
            slot_stride: self.ring.slot_bytes,
            slot_bytes: self.ring.slot_bytes,
            line_pitch,
        }
    }

    /// `GetDmaConfig`'s ring figures: `slot_count`, `slot_bytes`; no descriptors.
    pub const fn report(&self, config: &mut DmaConfig) {
        config.slot_count = self.ring.count;
        config.slot_bytes = self.ring.slot_bytes;
        config.descriptor_count = 0;
    }
}

/// [`SlotEngine::validate_format`] for slots of `slot_bytes` bytes.
fn validate_slot_format(format: &ChannelFormat, slot_bytes: u32) -> Result<ChannelGeometry, NtStatus> {
    let picture = validate_picture(format)?;
    let pitch = slot_line_pitch(picture.line_bytes).ok_or(STATUS_INTEGER_OVERFLOW)?;
    let geometry = picture.with_pitch(pitch)?;
    if geometry.frame_bytes > slot_bytes {
        return Err(STATUS_INVALID_PARAMETER);
    }
    Ok(geometry)
}

/// Who holds a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotOwner {
    /// Handed to the board (between `RING_CONSUMER` and `RING_PRODUCER`).
    Board,
    /// Filled and completed to the child, not yet returned.
    Child,
    /// Held by the bus (engine stopped, or waiting for its turn in ring order).
    Parked,
}

/// Slot ownership of one channel.
#[derive(Debug)]
pub(crate) struct SlotOwners {
    owner: [SlotOwner; MAX_SLOTS],
    fifo: [u8; MAX_SLOTS],
    fifo_head: usize,
    fifo_len: usize,
    count: u32,
    producer: u32,
    consumer: u32,
    active: bool,
}

impl SlotOwners {
    /// Bookkeeping without slots.
    pub const fn new() -> Self {
        Self {
            owner: [SlotOwner::Parked; MAX_SLOTS],
            fifo: [0; MAX_SLOTS],
            fifo_head: 0,
            fifo_len: 0,
            count: 0,
            producer: 0,
            consumer: 0,
            active: false,
        }
    }

    /// Sets the ring size at device start (`count <= MAX_SLOTS`, else 0) with every slot parked.
    pub fn configure(&mut self, count: u32) {
        *self = Self::new();
        if usize::try_from(count).is_ok_and(|c| c <= MAX_SLOTS) {
            self.count = count;
        }
    }

    /// The value for `RING_PRODUCER`.
    pub const fn producer(&self) -> u32 {
        self.producer
    }

    /// Slots the board holds.
    pub const fn board_owned(&self) -> u32 {
        if self.active {
            self.producer.wrapping_sub(self.consumer)
        } else {
            0
        }
    }

    /// Slots the child holds.
    #[cfg(test)]
    pub const fn child_owned(&self) -> usize {
        self.fifo_len
    }

    fn owner_mut(&mut self, slot: u32) -> Option<&mut SlotOwner> {
        self.owner.get_mut(usize::try_from(slot).ok()?)
    }

    fn owner_of(&self, slot: u32) -> Option<SlotOwner> {
        self.owner.get(usize::try_from(slot).ok()?).copied()
    }

    /// Channel start: every slot to the board (`RING_PRODUCER = count`).
    pub fn start(&mut self) {
        let count = self.count;
        self.configure(count);
        for slot in 0..count {
            if let Some(o) = self.owner_mut(slot) {
                *o = SlotOwner::Board;
            }
        }
        self.producer = count;
        self.active = true;
    }

    /// Channel stop: the board's slots are reclaimed (parked). The child's
    /// stay in its FIFO, so returning them afterwards still succeeds.
    pub fn stop(&mut self) {
        self.park_board_slots();
        self.producer = 0;
        self.consumer = 0;
        self.active = false;
    }

    /// After `CTRL_RESET` of a running channel: counters restart at 0, the
    /// child keeps its slots, the rest go back to the board in ring order
    /// from slot 0 (as far as the child's slots allow).
    pub fn reset_keep_child(&mut self) {
        self.park_board_slots();
        self.producer = 0;
        self.consumer = 0;
        self.active = true;
        self.hand_off();
    }

    fn park_board_slots(&mut self) {
        for o in &mut self.owner {
            if *o == SlotOwner::Board {
                *o = SlotOwner::Parked;
            }
        }
    }

    /// Hands parked slots to the board while the next slot in ring order is
    /// parked. Returns whether the producer moved.
    fn hand_off(&mut self) -> bool {
        let mut moved = false;
        if !self.active || self.count == 0 {
            return false;
        }
        for _ in 0..self.count {
            if self.producer.wrapping_sub(self.consumer) >= self.count {
                break;
            }
            let slot = self.producer % self.count;
            match self.owner_mut(slot) {
                Some(o) if *o == SlotOwner::Parked => *o = SlotOwner::Board,
                _ => break,
            }
            self.producer = self.producer.wrapping_add(1);
            moved = true;
        }
        moved
    }

    /// Checks a completion record (untrusted): it must name the slot the
    /// board fills next, owned by the board, with `byte_count <= slot_bytes`.
    /// On success the slot becomes the child's and is returned.
    ///
    /// # Errors
    /// The first check that fails; nothing changes then.
    pub fn accept(&mut self, record: &CompletionRecord, slot_bytes: u32) -> Result<u32, RecordFault> {
        if self.count == 0 || record.index >= self.count {
            return Err(RecordFault::IndexOutOfRange);
        }
        if self.board_owned() == 0 || record.index != self.consumer % self.count {
            return Err(RecordFault::Unexpected);
        }
        if self.owner_of(record.index) != Some(SlotOwner::Board) {
            return Err(RecordFault::Unexpected);
        }
        if record.byte_count > slot_bytes {
            return Err(RecordFault::ByteCountTooLarge);
        }
        let tail = (self.fifo_head + self.fifo_len) % MAX_SLOTS;
        let (Some(entry), Ok(slot_u8)) = (self.fifo.get_mut(tail), u8::try_from(record.index)) else {
            return Err(RecordFault::IndexOutOfRange);
        };
        *entry = slot_u8;
        self.fifo_len += 1;
        if let Some(o) = self.owner_mut(record.index) {
            *o = SlotOwner::Child;
        }
        self.consumer = self.consumer.wrapping_add(1);
        Ok(record.index)
    }

    /// The child returns `slot`. Returns whether `RING_PRODUCER` must be rewritten.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when `slot` is out of range or is not the
    /// oldest slot the child holds (not owned, or returned out of order).
    pub fn return_slot(&mut self, slot: u32) -> Result<bool, NtStatus> {
        if slot >= self.count || self.fifo_len == 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let front = self.fifo.get(self.fifo_head).copied().ok_or(STATUS_INVALID_PARAMETER)?;
        if u32::from(front) != slot || self.owner_of(slot) != Some(SlotOwner::Child) {
            return Err(STATUS_INVALID_PARAMETER);
        }
        self.fifo_head = (self.fifo_head + 1) % MAX_SLOTS;
        self.fifo_len -= 1;
        if let Some(o) = self.owner_mut(slot) {
            *o = SlotOwner::Parked;
        }
        Ok(self.hand_off())
    }

    /// The owner of `slot` (tests and diagnostics).
    #[cfg(test)]
    pub fn owner(&self, slot: u32) -> Option<SlotOwner> {
        self.owner_of(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u32, bytes: u32) -> CompletionRecord {
        CompletionRecord { index, byte_count: bytes, ..Default::default() }
    }

    fn started(count: u32) -> SlotOwners {
        let mut e = SlotOwners::new();
        e.configure(count);
        e.start();
        e
    }

    #[test]
    fn fifo_order_is_enforced() {
        let mut e = started(4);
        assert_eq!(e.producer(), 4);
        assert_eq!(e.accept(&rec(0, 100), 4096), Ok(0));
        assert_eq!(e.accept(&rec(1, 100), 4096), Ok(1));
        assert_eq!(e.return_slot(1), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(e.return_slot(2), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(e.return_slot(9), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(e.return_slot(0), Ok(true));
        assert_eq!(e.producer(), 5);
        assert_eq!(e.return_slot(1), Ok(true));
        assert_eq!(e.return_slot(1), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(e.board_owned(), 4);
    }

    #[test]
    fn records_must_follow_ring_order_and_fit() {
        let mut e = started(3);
        assert_eq!(e.accept(&rec(1, 10), 4096), Err(RecordFault::Unexpected));
        assert_eq!(e.accept(&rec(3, 10), 4096), Err(RecordFault::IndexOutOfRange));
        assert_eq!(e.accept(&rec(0, 4097), 4096), Err(RecordFault::ByteCountTooLarge));
        for s in 0..3 {
            assert_eq!(e.accept(&rec(s, 4096), 4096), Ok(s));
        }
        // The board owns nothing now: any record is unexpected.
        assert_eq!(e.accept(&rec(0, 1), 4096), Err(RecordFault::Unexpected));
    }

    #[test]
    fn reset_keeps_the_childs_slots_and_parks_around_them() {
        let mut e = started(4);
        // Child holds slots 0 and 1 (completed in that order); board holds 2, 3.
        e.accept(&rec(0, 1), 10).unwrap();
        e.accept(&rec(1, 1), 10).unwrap();
        e.reset_keep_child();
        // Slot 0 is the child's: the board restarting at slot 0 gets nothing yet.
        assert_eq!(e.producer(), 0);
        assert_eq!(e.owner(2), Some(SlotOwner::Parked));
        assert_eq!(e.return_slot(0), Ok(true));
        // Slot 0 handed over; slot 1 still the child's.
        assert_eq!(e.producer(), 1);
        assert_eq!(e.return_slot(1), Ok(true));
        assert_eq!(e.producer(), 4);
        assert_eq!(e.board_owned(), 4);
        assert_eq!(e.accept(&rec(0, 1), 10), Ok(0));
    }

    #[test]
    fn reset_with_wrapped_child_slots() {
        let mut e = started(4);
        for s in 0..4 {
            e.accept(&rec(s, 1), 10).unwrap();
        }
        e.return_slot(0).unwrap();
        e.return_slot(1).unwrap();
        e.return_slot(2).unwrap();
        e.accept(&rec(0, 1), 10).unwrap();
        // Child holds 3 then 0 (wrapped); board holds 1, 2.
        e.reset_keep_child();
        assert_eq!(e.producer(), 0, "slot 0 is the child's");
        assert_eq!(e.return_slot(0), Err(STATUS_INVALID_PARAMETER), "3 is older");
        assert_eq!(e.return_slot(3), Ok(false), "3 parks until 0 comes back");
        assert_eq!(e.return_slot(0), Ok(true));
        assert_eq!(e.producer(), 4);
        assert_eq!(e.child_owned(), 0);
    }

    #[test]
    fn slot_formats_use_the_aligned_pitch_and_must_fit() {
        use capdma_interface::format::{FOURCC_NV12, FOURCC_YUY2};
        let fmt = |fourcc, width, height| ChannelFormat { fourcc, width, height, stride: 0, frame_interval: 333_333, reserved: 0 };
        let g = validate_slot_format(&fmt(FOURCC_YUY2, 1000, 100), 1 << 20).unwrap();
        assert_eq!((g.line_bytes, g.line_pitch, g.frame_bytes), (2000, 2048, 204_800));
        let g = validate_slot_format(&fmt(FOURCC_NV12, 1920, 1080), 1 << 23).unwrap();
        assert_eq!((g.line_pitch, g.lines, g.frame_bytes), (2048, 1620, 2048 * 1620));
        assert_eq!(validate_slot_format(&fmt(FOURCC_YUY2, 1000, 100), 204_799), Err(STATUS_INVALID_PARAMETER));
        assert!(validate_slot_format(&fmt(FOURCC_YUY2, 1000, 100), 204_800).is_ok());
        assert_eq!(validate_slot_format(&fmt(FOURCC_YUY2, 641, 480), 1 << 23), Err(STATUS_INVALID_PARAMETER));
    }

    #[test]
    fn slot_size_covers_the_frame_aligned() {
        assert_eq!(slot_bytes_for(1, 256), Some(4096));
        assert_eq!(slot_bytes_for(4097, 4096), Some(8192));
        assert_eq!(slot_bytes_for(4097, 65536), Some(65536));
        assert_eq!(slot_bytes_for(u32::MAX, 4096), None);
    }

    #[test]
    fn stop_reclaims_board_slots_and_child_may_still_return() {
        let mut e = started(2);
        e.accept(&rec(0, 1), 10).unwrap();
        e.stop();
        assert_eq!(e.board_owned(), 0);
        assert_eq!(e.accept(&rec(1, 1), 10), Err(RecordFault::Unexpected));
        assert_eq!(e.return_slot(0), Ok(false));
        e.start();
        assert_eq!(e.producer(), 2);
        assert_eq!(e.child_owned(), 0);
    }
}
