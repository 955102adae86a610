//! Hardware faults the board model can be told to produce (the fault matrix).
//!
//! A fault given to [`crate::board::Board::inject`] waits for the next
//! [`crate::board::Board::capture_frame`] (of its channel, for the faults
//! that name one; of any channel otherwise) and takes effect there;
//! [`crate::board::Board::inject_now`] applies it at once. None of these is
//! the driver's fault, so none records a violation by itself; what the
//! driver does about them is what the tests judge.

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoardFault {
    /// The channel's next DMA faults (master abort): the engine halts with
    /// `STATUS_HALTED | ERROR_DMA_FAULT << 8` and raises `int_error`,
    /// writing nothing.
    DmaError {
        /// The channel.
        channel: u32,
    },
    /// The channel stops completing frames (no writes, no records, no
    /// interrupts, no drops counted) while `STATUS` still says running,
    /// until the channel is reset.
    Hang {
        /// The channel.
        channel: u32,
    },
    /// The interrupt line is asserted once while `INT_STATUS` reads 0 (a
    /// shared line's other device; the ISR must return `FALSE`). Reading
    /// `INT_STATUS` deasserts it.
    SpuriousInterrupt,
    /// As [`BoardFault::SpuriousInterrupt`], `count` times in a row (each
    /// read of `INT_STATUS` deasserts one).
    InterruptStorm {
        /// Spurious assertions.
        count: u32,
    },
    /// The channel's next completion record carries an index out of range
    /// (`entries + 3`): in S/G mode no descriptor, in common-buffer mode no slot.
    BadSlotIndex {
        /// The channel.
        channel: u32,
    },
    /// The channel's next completion record carries an index in range but
    /// wrong: not the frame's first descriptor (S/G) / not the slot the ring
    /// order expects (common buffer).
    BadDescriptorIndex {
        /// The channel.
        channel: u32,
    },
    /// The channel's next completion record claims `0xFFFF_0000` bytes,
    /// more than any buffer.
    OversizedLength {
        /// The channel.
        channel: u32,
    },
    /// The board vanishes: from then on every register reads `0xFFFF_FFFF`,
    /// writes are ignored and nothing is captured. The line is asserted once
    /// more (the ISR then reads all ones).
    SurpriseRemoval,
    /// The channel's engine does not acknowledge its next `CTRL_RESET`:
    /// after it, `STATUS` keeps `STATUS_RUNNING` for the next `reads` reads
    /// of `STATUS` (`u32::MAX`: never) while the engine writes nothing; a
    /// burst the reset caught in flight lands only at the read that
    /// acknowledges it. Time passing alone does not complete such a reset
    /// ([`crate::board::Board::settle`] leaves it), unlike the short drain
    /// of `capdma_interface::regs::RESET_POLL_READS`. More reads than
    /// `RESET_POLL_READS` make the bus see the reset as not completed
    /// (`StopChannel` answers `STATUS_PENDING`, the frames stay held).
    ResetStuck {
        /// The channel.
        channel: u32,
        /// `STATUS` reads before `STATUS_RUNNING` clears (`u32::MAX`: never).
        reads: u32,
    },
}

impl BoardFault {
    /// The channel the fault waits for, `None` for board-wide faults.
    #[must_use]
    pub const fn channel(&self) -> Option<u32> {
        match *self {
            Self::DmaError { channel }
            | Self::Hang { channel }
            | Self::BadSlotIndex { channel }
            | Self::BadDescriptorIndex { channel }
            | Self::OversizedLength { channel }
            | Self::ResetStuck { channel, .. } => Some(channel),
            Self::SpuriousInterrupt | Self::InterruptStorm { .. } | Self::SurpriseRemoval => None,
        }
    }

    /// Short name for reports and command lines.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::DmaError { .. } => "dma-error",
            Self::Hang { .. } => "hang",
            Self::SpuriousInterrupt => "spurious-interrupt",
            Self::InterruptStorm { .. } => "interrupt-storm",
            Self::BadSlotIndex { .. } => "bad-slot-index",
            Self::BadDescriptorIndex { .. } => "bad-descriptor-index",
            Self::OversizedLength { .. } => "oversized-length",
            Self::SurpriseRemoval => "surprise-removal",
            Self::ResetStuck { .. } => "reset-stuck",
        }
    }

    /// One fault of every kind (channel faults on `channel`, a storm of 16,
    /// a reset stuck for 64 reads), for fault matrices.
    #[must_use]
    pub const fn all(channel: u32) -> [Self; 9] {
        [
            Self::DmaError { channel },
            Self::Hang { channel },
            Self::SpuriousInterrupt,
            Self::InterruptStorm { count: 16 },
            Self::BadSlotIndex { channel },
            Self::BadDescriptorIndex { channel },
            Self::OversizedLength { channel },
            Self::SurpriseRemoval,
            Self::ResetStuck { channel, reads: 64 },
        ]
    }
}

/// How the next completion record of a channel is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Corruption {
    OutOfRangeIndex,
    WrongIndex,
    OversizedLength,
}

/// The byte count an [`BoardFault::OversizedLength`] record claims.
pub const OVERSIZED_BYTE_COUNT: u32 = 0xFFFF_0000;
