//! The machine's clock: events ordered in virtual time (100-ns units).
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Something that happens at a point of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A board's frame time on a channel: it captures a frame.
    Capture {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
    },
    /// A board's DMA engine goes on with a frame posted in parts on a
    /// channel, a DMA latency after the driver posted its next part
    /// (`Board::continue_frame`).
    Continue {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
    },
    /// The (shared) interrupt line is sampled: the ISRs run if asserted.
    Interrupt,
    /// A card's bus DPC runs.
    Dpc {
        /// The card.
        card: u32,
    },
    /// The bus watchdog timer DPCs run.
    Watchdog,
    /// The application is done with a delivered buffer and queues it again.
    AppRequeue {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
        /// Index of the buffer in the channel's buffers.
        buffer: u32,
    },
    /// A scheduled [`crate::machine::Action`] (its index in the machine's list).
    Action {
        /// Index of the action.
        index: u32,
    },
}

/// Events in time order; equal times keep their scheduling order.
#[derive(Default)]
pub struct Timeline {
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    now: u64,
}

impl Timeline {
    /// The current virtual time, 100-ns units.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `event` at `at` (not before now).
    pub fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at.max(self.now), self.seq, event)));
    }

    /// The next event, advancing the clock to it.
    pub fn pop_next(&mut self) -> Option<Event> {
        let Reverse((at, _, event)) = self.heap.pop()?;
        self.now = at;
        Some(event)
    }

    /// Drops everything scheduled (the clock stays).
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Whether anything is still scheduled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_in_time_then_schedule_order() {
        let mut t = Timeline::default();
        t.schedule(20, Event::Dpc { card: 0 });
        t.schedule(10, Event::Interrupt);
        t.schedule(10, Event::Watchdog);
        assert_eq!(t.pop_next(), Some(Event::Interrupt));
        assert_eq!(t.now(), 10);
        assert_eq!(t.pop_next(), Some(Event::Watchdog));
        assert_eq!(t.pop_next(), Some(Event::Dpc { card: 0 }));
        assert_eq!(t.now(), 20);
        assert_eq!(t.pop_next(), None);
    }
}
