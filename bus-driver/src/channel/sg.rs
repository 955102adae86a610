//! The scatter/gather engine's bookkeeping: the descriptor ring counters and
//! the in-flight table (a FIFO of posted frames, in ring order).
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
use super::RecordFault;
use capdma_interface::descriptor::CompletionRecord;
use capdma_interface::status::{NtStatus, STATUS_DEVICE_BUSY, STATUS_INVALID_PARAMETER};

/// Most frames posted (or terminated but not yet delivered) per channel.
pub const MAX_INFLIGHT_FRAMES: usize = 32;

/// One posted frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InFlightFrame {
    /// Counter of the frame's first descriptor (entry `first % entries`).
    pub first: u32,
    /// Descriptors of the frame.
    pub count: u32,
    /// Bytes of all its elements.
    pub bytes: u32,
    /// The child's tag.
    pub tag: u32,
    /// `None` while posted; the status to complete it with once terminated.
    pub fate: Option<NtStatus>,
}

/// Descriptor ring counters and the in-flight FIFO of one channel.
#[derive(Debug)]
pub(crate) struct SgEngine {
    frames: [InFlightFrame; MAX_INFLIGHT_FRAMES],
    head: usize,
    len: usize,
    producer: u32,
    retired: u32,
}

impl SgEngine {
    /// An empty engine.
    pub const fn new() -> Self {
        const EMPTY: InFlightFrame = InFlightFrame { first: 0, count: 0, bytes: 0, tag: 0, fate: None };
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

    /// Records a frame of `count` descriptors and `bytes` bytes under `tag`,
    /// advancing the producer. Returns the counter of its first descriptor
    /// (the caller writes descriptors `first..first + count`).
    ///
    /// # Errors
    /// As [`Self::check_room`].
    pub fn push(&mut self, count: u32, bytes: u32, tag: u32, entries: u32) -> Result<u32, NtStatus> {
        self.check_room(count, entries)?;
        let first = self.producer;
        let index = (self.head + self.len) % MAX_INFLIGHT_FRAMES;
        let entry = self.frames.get_mut(index).ok_or(STATUS_DEVICE_BUSY)?;
        *entry = InFlightFrame { first, count, bytes, tag, fate: None };
        self.len += 1;
        self.producer = first.wrapping_add(count);
        Ok(first)
    }

    /// Terminates every posted frame with `status` and forgets the ring
    /// (the board was reset: its counters are zero again).
    /// Returns how many frames were terminated.
    pub fn abort_all(&mut self, status: NtStatus) -> usize {
        let mut n = 0;
        for i in 0..self.len {
            if let Some(f) = self.frames.get_mut((self.head + i) % MAX_INFLIGHT_FRAMES) {
                if f.fate.is_none() {
                    f.fate = Some(status);
                    n += 1;
                }
            }
        }
        self.producer = 0;
        self.retired = 0;
        n
    }

    /// Removes and returns the front frame if it is terminated.
    pub fn pop_terminated(&mut self) -> Option<InFlightFrame> {
        let front = *self.slot(0)?;
        front.fate?;
        self.pop_front();
        Some(front)
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

    fn rec(index: u32, bytes: u32, tag: u32) -> CompletionRecord {
        CompletionRecord { index, byte_count: bytes, tag, ..Default::default() }
    }

    #[test]
    fn ring_space_is_accounted_by_descriptors() {
        let mut e = SgEngine::new();
        assert_eq!(e.push(40, 4000, 1, 64), Ok(0));
        assert_eq!(e.check_room(25, 64), Err(STATUS_DEVICE_BUSY));
        assert_eq!(e.push(24, 2400, 2, 64), Ok(40));
        assert_eq!(e.check_room(1, 64), Err(STATUS_DEVICE_BUSY));
        assert_eq!(e.check_room(65, 64), Err(STATUS_INVALID_PARAMETER));
        assert_eq!(e.complete(&rec(0, 4000, 1), 64).map(|f| f.tag), Ok(1));
        // 40 descriptors retired: a frame of 40 fits again and wraps the ring.
        assert_eq!(e.push(40, 4000, 3, 64), Ok(64));
        assert_eq!(e.complete(&rec(40, 2400, 2), 64).map(|f| f.tag), Ok(2));
        assert_eq!(e.complete(&rec(0, 1, 3), 64).map(|f| f.first), Ok(64));
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn table_capacity_is_enforced() {
        let mut e = SgEngine::new();
        for t in 0..u32::try_from(MAX_INFLIGHT_FRAMES).unwrap() {
            e.push(1, 10, t, 1024).unwrap();
        }
        assert_eq!(e.push(1, 10, 99, 1024), Err(STATUS_DEVICE_BUSY));
    }

    #[test]
    fn bad_records_change_nothing() {
        let mut e = SgEngine::new();
        e.push(4, 100, 7, 64).unwrap();
        assert_eq!(e.complete(&rec(64, 100, 7), 64), Err(RecordFault::IndexOutOfRange));
        assert_eq!(e.complete(&rec(1, 100, 7), 64), Err(RecordFault::Unexpected));
        assert_eq!(e.complete(&rec(0, 100, 8), 64), Err(RecordFault::TagMismatch));
        assert_eq!(e.complete(&rec(0, 101, 7), 64), Err(RecordFault::ByteCountTooLarge));
        assert_eq!(e.posted(), 1);
        assert_eq!(e.complete(&rec(0, 100, 7), 64).map(|f| f.count), Ok(4));
        assert_eq!(e.complete(&rec(4, 1, 7), 64), Err(RecordFault::Unexpected));
    }

    #[test]
    fn abort_terminates_in_order_and_frees_the_ring() {
        let mut e = SgEngine::new();
        e.push(30, 100, 1, 64).unwrap();
        e.push(30, 100, 2, 64).unwrap();
        assert_eq!(e.abort_all(STATUS_CANCELLED), 2);
        assert_eq!(e.posted(), 0);
        // New frames may be posted before the terminated ones are delivered.
        assert_eq!(e.push(60, 100, 3, 64), Ok(0));
        assert!(e.has_tag(1) && e.has_tag(3));
        assert_eq!(e.pop_terminated().map(|f| (f.tag, f.fate)), Some((1, Some(STATUS_CANCELLED))));
        assert_eq!(e.pop_terminated().map(|f| f.tag), Some(2));
        assert_eq!(e.pop_terminated(), None);
        assert_eq!(e.complete(&rec(0, 100, 3), 64).map(|f| f.tag), Ok(3));
    }
}
