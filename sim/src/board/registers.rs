//! BAR0 register decoding: `READ_REGISTER_ULONG` / `WRITE_REGISTER_ULONG`
//! semantics of every register in `capdma_interface::regs`.
use super::engine::{Channel, RESET_DRAIN_READS};
use super::{BoardConfig, BoardState};
use capdma_interface::regs::{
    channel, channel_base, global, BAR0_BYTES, BOARD_ID, CTRL_RESET, CTRL_RUN, CTRL_SG_MODE, GLOBAL_CTRL_RESET,
    STATUS_HALTED, STATUS_RUNNING,
};

/// The register values of one channel (what a driver reads back): the
/// contract's register block, so the map has one definition.
pub type ChannelRegs = capdma_interface::regs::ChannelRegisters;

fn global_name(offset: u32) -> &'static str {
    match offset {
        global::ID => "ID",
        global::CAPS => "CAPS",
        global::MAX_TRANSFER => "MAX_TRANSFER",
        global::MAX_FRAME_BYTES => "MAX_FRAME_BYTES",
        _ => "reserved",
    }
}

fn channel_name(offset: u32) -> &'static str {
    match offset {
        channel::STATUS => "STATUS",
        channel::RING_CONSUMER => "RING_CONSUMER",
        channel::CQ_PRODUCER => "CQ_PRODUCER",
        channel::DROPPED_FRAMES => "DROPPED_FRAMES",
        _ => "reserved",
    }
}

impl BoardState {
    /// One register read: the value and a violation message if the access itself was wrong.
    pub(crate) fn read(&mut self, offset: u32) -> (u32, Option<String>) {
        self.stats.register_reads += 1;
        if !offset.is_multiple_of(4) || offset >= BAR0_BYTES {
            return (u32::MAX, Some(format!("register read at BAR0+{offset:#x}: unaligned or outside BAR0")));
        }
        if offset == global::INT_STATUS && self.spurious > 0 {
            self.spurious -= 1;
        }
        if self.removed {
            return (u32::MAX, None);
        }
        if offset < channel_base(0) {
            let v = match offset {
                global::ID => BOARD_ID,
                global::CAPS => self.config.caps().encode(),
                global::MAX_TRANSFER => self.config.max_transfer,
                global::MAX_FRAME_BYTES => self.config.max_frame_bytes,
                global::INT_STATUS => self.int_status,
                global::INT_ENABLE => self.int_enable,
                _ => 0, // GLOBAL_CTRL (self-clearing) and reserved
            };
            return (v, None);
        }
        let index = ((offset - channel_base(0)) / 0x80) as usize;
        let reg = (offset - channel_base(0)) % 0x80;
        let Some(c) = self.channels.get(index) else {
            return (0, None); // a channel this board does not have
        };
        // Reserved words read as 0: they are never written (a write is refused below).
        let v = c.regs.word(reg).unwrap_or(0);
        (v, None)
    }

    /// One register write: the violation messages it caused.
    pub(crate) fn write(&mut self, offset: u32, value: u32) -> Vec<String> {
        self.stats.register_writes += 1;
        if !offset.is_multiple_of(4) || offset >= BAR0_BYTES {
            return vec![format!("register write of {value:#x} at BAR0+{offset:#x}: unaligned or outside BAR0")];
        }
        if self.removed {
            return Vec::new();
        }
        if offset < channel_base(0) {
            match offset {
                global::INT_STATUS => self.int_status &= !value,
                global::INT_ENABLE => self.int_enable = value,
                global::GLOBAL_CTRL => {
                    if value & GLOBAL_CTRL_RESET != 0 {
                        for c in &mut self.channels {
                            c.reset();
                            c.frame_number = 0;
                        }
                        self.int_status = 0;
                        self.int_enable = 0;
                    }
                }
                _ => {
                    return vec![format!(
                        "write of {value:#x} to read-only or reserved global register {} (BAR0+{offset:#x})",
                        global_name(offset)
                    )];
                }
            }
            return Vec::new();
        }
        let index = ((offset - channel_base(0)) / 0x80) as usize;
        let reg = (offset - channel_base(0)) % 0x80;
        let channels = self.channels.len();
        let config = self.config;
        let Some(c) = self.channels.get_mut(index) else {
            return vec![format!(
                "write of {value:#x} to channel {index} register +{reg:#x}: the board has {channels} channel(s)"
            )];
        };
        let mut problems = Vec::new();
        let running = c.regs.status & STATUS_RUNNING != 0;
        let ring_config = matches!(
            reg,
            channel::FOURCC
                | channel::WIDTH
                | channel::HEIGHT
                | channel::LINE_PITCH
                | channel::FRAME_INTERVAL
                | channel::RING_BASE_LO
                | channel::RING_BASE_HI
                | channel::RING_ENTRIES
                | channel::SLOT_STRIDE
                | channel::CQ_BASE_LO
                | channel::CQ_BASE_HI
                | channel::CQ_ENTRIES
        );
        if ring_config && running {
            problems.push(format!(
                "channel {index}: register +{reg:#x} reprogrammed ({value:#x}) while the engine runs (ignored until the next start)"
            ));
        }
        let r = &mut c.regs;
        match reg {
            channel::CTRL => {
                let int_error = c.write_ctrl(value, &config, index, &mut problems);
                if int_error {
                    self.int_status |= capdma_interface::regs::int_error(index as u32);
                }
            }
            channel::FOURCC
            | channel::WIDTH
            | channel::HEIGHT
            | channel::LINE_PITCH
            | channel::FRAME_INTERVAL
            | channel::RING_BASE_LO
            | channel::RING_BASE_HI
            | channel::RING_ENTRIES
            | channel::SLOT_STRIDE
            | channel::RING_PRODUCER
            | channel::CQ_BASE_LO
            | channel::CQ_BASE_HI
            | channel::CQ_ENTRIES => {
                r.set_word(reg, value);
            }
            channel::CQ_CONSUMER => {
                if value.wrapping_sub(r.cq_consumer) > r.cq_producer.wrapping_sub(r.cq_consumer) {
                    problems.push(format!(
                        "channel {index}: CQ_CONSUMER set to {value} beyond CQ_PRODUCER {} (consumer was {})",
                        r.cq_producer, r.cq_consumer
                    ));
                }
                r.cq_consumer = value;
            }
            _ => problems.push(format!(
                "channel {index}: write of {value:#x} to read-only or reserved register {} (+{reg:#x})",
                channel_name(reg)
            )),
        }
        // A doorbell (the next part posted, room for its record): a frame in progress goes on.
        if matches!(reg, channel::RING_PRODUCER | channel::CQ_CONSUMER) { c.note_doorbell(); }
        problems
    }
}

impl Channel {
    /// A `CTRL` write. Returns whether the channel halted (raise `int_error`).
    fn write_ctrl(&mut self, value: u32, config: &BoardConfig, index: usize, problems: &mut Vec<String>) -> bool {
        if value & CTRL_RESET != 0 {
            // RESET wins: the engine stops, counters and errors clear, CTRL
            // reads 0. A burst in flight still lands, and until it has,
            // STATUS_RUNNING stays set (`capdma_interface::regs::RESET_POLL_READS`).
            let burst = self.burst.take().or_else(|| self.burst_in_flight());
            // A stuck engine (armed now, or still stuck from the last reset)
            // does not acknowledge this one either.
            let stuck = self.reset_stuck.take().or_else(|| self.stuck.then_some(self.drain_reads));
            self.reset();
            if let Some(reads) = stuck {
                if !self.stuck {
                    self.stats.resets_stuck += 1;
                }
                self.burst = burst;
                self.stuck = true;
                self.drain_reads = reads.max(1);
                self.regs.status = STATUS_RUNNING;
            } else if burst.is_some() {
                self.burst = burst;
                self.drain_reads = RESET_DRAIN_READS;
                self.regs.status = STATUS_RUNNING;
            }
            return false;
        }
        let was_run = self.regs.ctrl & CTRL_RUN != 0;
        self.regs.ctrl = value & (CTRL_RUN | CTRL_SG_MODE);
        let run = value & CTRL_RUN != 0;
        if run && !was_run {
            if self.drain_reads > 0 {
                problems.push(format!(
                    "channel {index}: CTRL_RUN before the reset completed (STATUS_RUNNING still set: the last frame's DMA is outstanding)"
                ));
                self.drain_reads = 0;
                self.stuck = false;
            }
            if self.regs.status & STATUS_HALTED != 0 {
                problems.push(format!("channel {index}: CTRL_RUN set while halted (reset the channel first)"));
                return false;
            }
            return self.start(config, index, problems);
        }
        if !run {
            self.regs.status &= !STATUS_RUNNING;
            self.discard_frame_in_progress();
        }
        false
    }
}
