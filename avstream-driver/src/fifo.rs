//! The filled-slot FIFO of a common-buffer pin: a fixed-capacity
//! single-producer single-consumer ring of atomics.
//!
//! The producer is the completion callback (the bus DPC, `DISPATCH_LEVEL`),
//! the consumer is Process (or the stop path, which holds the processing
//! mutex). Entries are stored in atomics, so a misuse (two producers) can
//! corrupt entries but never memory. Order is preserved: slots come out in
//! the order the board filled them, which is the order `ReturnSlot` needs.
use capdma_interface::status::NtStatus;
use capdma_interface::table::MAX_RING_SLOTS;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Entries in the FIFO: a whole ring of the contract's most slots
/// ([`MAX_RING_SLOTS`]), so every slot the bus can complete fits.
pub const FIFO_CAPACITY: usize = MAX_RING_SLOTS as usize;
const _: () = assert!(FIFO_CAPACITY.is_power_of_two());

/// One filled slot, as the completion reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilledSlot {
    /// The slot index (checked against the ring before it is pushed).
    pub slot: u32,
    /// Bytes the board wrote into the slot.
    pub bytes: u32,
    /// The completion status.
    pub status: NtStatus,
    /// The board's frame counter.
    pub frame_number: u32,
    /// Capture time, 100-ns units.
    pub timestamp: i64,
}

/// The FIFO. Counters are free-running `u32`s; entry = `counter % FIFO_CAPACITY`.
#[derive(Debug)]
pub struct SlotFifo {
    head: AtomicU32,
    tail: AtomicU32,
    slot_bytes: [AtomicU64; FIFO_CAPACITY],
    status_frame: [AtomicU64; FIFO_CAPACITY],
    timestamp: [AtomicI64; FIFO_CAPACITY],
}

fn index(counter: u32) -> usize {
    // FIFO_CAPACITY is a power of two <= 2^32: the mask keeps the value in range.
    usize::try_from(counter).unwrap_or(0) & (FIFO_CAPACITY - 1)
}

fn pack(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

fn unpack(v: u64) -> (u32, u32) {
    (u32::try_from(v & u64::from(u32::MAX)).unwrap_or(0), u32::try_from(v >> 32).unwrap_or(0))
}

impl SlotFifo {
    /// An empty FIFO.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            head: AtomicU32::new(0),
            tail: AtomicU32::new(0),
            slot_bytes: [const { AtomicU64::new(0) }; FIFO_CAPACITY],
            status_frame: [const { AtomicU64::new(0) }; FIFO_CAPACITY],
            timestamp: [const { AtomicI64::new(0) }; FIFO_CAPACITY],
        }
    }

    /// Appends `item` (producer side; one producer at a time).
    ///
    /// # Errors
    /// Gives `item` back when the FIFO is full.
    pub fn push(&self, item: FilledSlot) -> Result<(), FilledSlot> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= MAX_RING_SLOTS {
            return Err(item);
        }
        let i = index(tail);
        let (Some(a), Some(b), Some(c)) = (self.slot_bytes.get(i), self.status_frame.get(i), self.timestamp.get(i))
        else {
            return Err(item);
        };
        a.store(pack(item.slot, item.bytes), Ordering::Relaxed);
        b.store(pack(u32::from_ne_bytes(item.status.to_ne_bytes()), item.frame_number), Ordering::Relaxed);
        c.store(item.timestamp, Ordering::Relaxed);
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Takes the oldest item (consumer side; one consumer at a time).
    pub fn pop(&self) -> Option<FilledSlot> {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let i = index(head);
        let (a, b, c) = (self.slot_bytes.get(i)?, self.status_frame.get(i)?, self.timestamp.get(i)?);
        let (slot, bytes) = unpack(a.load(Ordering::Relaxed));
        let (status, frame_number) = unpack(b.load(Ordering::Relaxed));
        let timestamp = c.load(Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Some(FilledSlot { slot, bytes, status: i32::from_ne_bytes(status.to_ne_bytes()), frame_number, timestamp })
    }

    /// Items queued (a snapshot).
    #[must_use]
    pub fn len(&self) -> u32 {
        self.tail.load(Ordering::Acquire).wrapping_sub(self.head.load(Ordering::Acquire))
    }

    /// Whether nothing is queued (a snapshot).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for SlotFifo {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capdma_interface::status::{STATUS_CANCELLED, STATUS_SUCCESS};

    fn item(slot: u32) -> FilledSlot {
        FilledSlot {
            slot,
            bytes: slot * 10,
            status: if slot.is_multiple_of(2) { STATUS_SUCCESS } else { STATUS_CANCELLED },
            frame_number: slot + 100,
            timestamp: -i64::from(slot),
        }
    }

    #[test]
    fn fifo_order_capacity_and_wrap() {
        let f = SlotFifo::new();
        assert_eq!(f.pop(), None);
        for round in 0..5u32 {
            for s in 0..MAX_RING_SLOTS {
                assert_eq!(f.push(item(s + round)), Ok(()));
            }
            assert_eq!(f.push(item(999)), Err(item(999)), "full");
            assert_eq!(f.len(), MAX_RING_SLOTS);
            for s in 0..MAX_RING_SLOTS {
                assert_eq!(f.pop(), Some(item(s + round)));
            }
            assert!(f.is_empty());
        }
    }

    #[test]
    fn spsc_across_threads_keeps_order() {
        let f = std::sync::Arc::new(SlotFifo::new());
        let producer = {
            let f = f.clone();
            std::thread::spawn(move || {
                for s in 0..100_000u32 {
                    while f.push(item(s)).is_err() {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut expected = 0u32;
        while expected < 100_000 {
            if let Some(got) = f.pop() {
                assert_eq!(got, item(expected));
                expected += 1;
            }
        }
        producer.join().unwrap();
    }
}
