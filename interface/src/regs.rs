//! The board's BAR0 register map (all registers 32-bit, little-endian).
//!
//! ```text
//! 0x000  GlobalRegisters      (0x100 bytes)
//! 0x100  ChannelRegisters[0]  (0x080 bytes each, up to MAX_CHANNELS)
//! ```
//!
//! Ring indices (`*_PRODUCER`, `*_CONSUMER`) are free-running 32-bit counters;
//! the entry they name is `counter % entries`. The board is untrusted: every
//! value read back is range-checked by the bus core before use.
//!
//! The structures describe the layout; drivers access registers one 32-bit
//! word at a time through the offsets below (`READ_REGISTER_ULONG`).
use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Value of [`GlobalRegisters::id`]: "CA9D", version 1.
pub const BOARD_ID: u32 = 0xCA9D_0001;
/// Most channels a board can have (`CAPS.CHANNELS` is 4 bits, capped here).
pub const MAX_CHANNELS: usize = 8;
/// Common-buffer mode: the board writes each line of a slot at a
/// `LINE_PITCH` that is a multiple of this many bytes (a frame's line bytes
/// rounded up to it), and refuses any other pitch; S/G mode has no such
/// rule. The one definition: the bus core programs it, the AVStream core
/// sizes slots with it, the simulated board and the benchmark follow it.
pub const SLOT_LINE_ALIGNMENT: u32 = 256;

/// Bytes of BAR0 the driver maps.
#[allow(clippy::cast_possible_truncation, reason = "MAX_CHANNELS is 8")]
pub const BAR0_BYTES: u32 = 0x100 + 0x80 * MAX_CHANNELS as u32;

/// The global register block at BAR0 offset 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GlobalRegisters {
    /// 0x00 RO: [`BOARD_ID`]; all ones means the board is gone (surprise removal).
    pub id: u32,
    /// 0x04 RO: capabilities, see [`Caps`].
    pub caps: u32,
    /// 0x08 RO: largest byte count of one S/G descriptor.
    pub max_transfer: u32,
    /// 0x0C RO: largest frame the board produces, in bytes (sizes the slots).
    pub max_frame_bytes: u32,
    /// 0x10 RW1C: interrupt status: bit `ch` completion, bit `16 + ch` error.
    pub int_status: u32,
    /// 0x14 RW: interrupt enable, same bits as `int_status`.
    pub int_enable: u32,
    /// 0x18 RW: global control, see [`GLOBAL_CTRL_RESET`].
    pub global_ctrl: u32,
    /// 0x1C..0x100 reserved.
    pub reserved: [u32; 57],
}

/// One channel's register block at `0x100 + 0x80 * channel`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ChannelRegisters {
    /// +0x00 RW: control, see `CTRL_*`.
    pub ctrl: u32,
    /// +0x04 RO: status, see `STATUS_*`; error code in bits 8..16.
    pub status: u32,
    /// +0x08 RW: FOURCC of the frames ([`crate::format`]).
    pub fourcc: u32,
    /// +0x0C RW: width in pixels.
    pub width: u32,
    /// +0x10 RW: height in pixel rows.
    pub height: u32,
    /// +0x14 RW: line pitch in bytes the board writes lines at.
    pub line_pitch: u32,
    /// +0x18 RW: frame interval in 100-ns units.
    pub frame_interval: u32,
    /// +0x1C reserved.
    pub reserved0: u32,
    /// +0x20 RW: ring base, low 32 bits: the S/G descriptor ring (S/G mode)
    /// or the first slot (common-buffer mode). A logical (bus) address.
    pub ring_base_lo: u32,
    /// +0x24 RW: ring base, high 32 bits (must be 0 on a 32-bit board).
    pub ring_base_hi: u32,
    /// +0x28 RW: entries in the ring (descriptors or slots).
    pub ring_entries: u32,
    /// +0x2C RW: common-buffer mode: bytes from one slot to the next.
    pub slot_stride: u32,
    /// +0x30 RW: driver's producer: S/G mode, descriptors posted; common-buffer
    /// mode, slots handed to the board (free-running).
    pub ring_producer: u32,
    /// +0x34 RO: board's consumer: S/G mode, descriptors consumed; common-buffer
    /// mode, slots filled (free-running).
    pub ring_consumer: u32,
    /// +0x38 RW: completion queue base, low 32 bits (logical address).
    pub cq_base_lo: u32,
    /// +0x3C RW: completion queue base, high 32 bits.
    pub cq_base_hi: u32,
    /// +0x40 RW: entries in the completion queue.
    pub cq_entries: u32,
    /// +0x44 RO: completion records the board has written (free-running).
    pub cq_producer: u32,
    /// +0x48 RW: completion records the driver has consumed (free-running).
    pub cq_consumer: u32,
    /// +0x4C RO: frames the board dropped for want of a buffer (free-running).
    pub dropped_frames: u32,
    /// +0x50..0x80 reserved.
    pub reserved1: [u32; 12],
}

impl ChannelRegisters {
    /// `RING_BASE_HI:RING_BASE_LO`: the ring's logical address.
    #[must_use]
    pub const fn ring_base(&self) -> u64 {
        (self.ring_base_hi as u64) << 32 | self.ring_base_lo as u64
    }

    /// `CQ_BASE_HI:CQ_BASE_LO`: the completion queue's logical address.
    #[must_use]
    pub const fn cq_base(&self) -> u64 {
        (self.cq_base_hi as u64) << 32 | self.cq_base_lo as u64
    }

    /// The 32-bit register at byte `offset` of the block; `None` when
    /// `offset` is unaligned or outside the block.
    #[must_use]
    pub fn word(&self, offset: u32) -> Option<u32> {
        let at = word_range(offset)?;
        let bytes: [u8; 4] = self.as_bytes().get(at)?.try_into().ok()?;
        Some(u32::from_ne_bytes(bytes))
    }

    /// Stores `value` in the 32-bit register at byte `offset` of the block
    /// (plain storage, no side effects); `false` when `offset` is unaligned
    /// or outside the block.
    pub fn set_word(&mut self, offset: u32, value: u32) -> bool {
        let Some(at) = word_range(offset) else { return false };
        match self.as_mut_bytes().get_mut(at) {
            Some(bytes) => {
                bytes.copy_from_slice(&value.to_ne_bytes());
                true
            }
            None => false,
        }
    }
}

/// The byte range of the aligned 32-bit word at `offset`.
fn word_range(offset: u32) -> Option<core::ops::Range<usize>> {
    if !offset.is_multiple_of(4) {
        return None;
    }
    let start = usize::try_from(offset).ok()?;
    Some(start..start.checked_add(4)?)
}

const _: () = assert!(size_of::<GlobalRegisters>() == 0x100);
const _: () = assert!(size_of::<ChannelRegisters>() == 0x80);

/// Offsets of the global registers.
#[allow(clippy::cast_possible_truncation, reason = "offsets inside a 0x100-byte block (asserted)")]
pub mod global {
    use super::{offset_of, GlobalRegisters};
    /// `ID`.
    pub const ID: u32 = offset_of!(GlobalRegisters, id) as u32;
    /// `CAPS`.
    pub const CAPS: u32 = offset_of!(GlobalRegisters, caps) as u32;
    /// `MAX_TRANSFER`.
    pub const MAX_TRANSFER: u32 = offset_of!(GlobalRegisters, max_transfer) as u32;
    /// `MAX_FRAME_BYTES`.
    pub const MAX_FRAME_BYTES: u32 = offset_of!(GlobalRegisters, max_frame_bytes) as u32;
    /// `INT_STATUS` (write 1 to clear).
    pub const INT_STATUS: u32 = offset_of!(GlobalRegisters, int_status) as u32;
    /// `INT_ENABLE`.
    pub const INT_ENABLE: u32 = offset_of!(GlobalRegisters, int_enable) as u32;
    /// `GLOBAL_CTRL`.
    pub const GLOBAL_CTRL: u32 = offset_of!(GlobalRegisters, global_ctrl) as u32;
}

/// Offsets inside a channel block (add [`channel_base`]).
#[allow(clippy::cast_possible_truncation, reason = "offsets inside a 0x80-byte block (asserted)")]
pub mod channel {
    use super::{offset_of, ChannelRegisters};
    /// `CTRL`.
    pub const CTRL: u32 = offset_of!(ChannelRegisters, ctrl) as u32;
    /// `STATUS`.
    pub const STATUS: u32 = offset_of!(ChannelRegisters, status) as u32;
    /// `FOURCC`.
    pub const FOURCC: u32 = offset_of!(ChannelRegisters, fourcc) as u32;
    /// `WIDTH`.
    pub const WIDTH: u32 = offset_of!(ChannelRegisters, width) as u32;
    /// `HEIGHT`.
    pub const HEIGHT: u32 = offset_of!(ChannelRegisters, height) as u32;
    /// `LINE_PITCH`.
    pub const LINE_PITCH: u32 = offset_of!(ChannelRegisters, line_pitch) as u32;
    /// `FRAME_INTERVAL`.
    pub const FRAME_INTERVAL: u32 = offset_of!(ChannelRegisters, frame_interval) as u32;
    /// `RING_BASE_LO`.
    pub const RING_BASE_LO: u32 = offset_of!(ChannelRegisters, ring_base_lo) as u32;
    /// `RING_BASE_HI`.
    pub const RING_BASE_HI: u32 = offset_of!(ChannelRegisters, ring_base_hi) as u32;
    /// `RING_ENTRIES`.
    pub const RING_ENTRIES: u32 = offset_of!(ChannelRegisters, ring_entries) as u32;
    /// `SLOT_STRIDE`.
    pub const SLOT_STRIDE: u32 = offset_of!(ChannelRegisters, slot_stride) as u32;
    /// `RING_PRODUCER`.
    pub const RING_PRODUCER: u32 = offset_of!(ChannelRegisters, ring_producer) as u32;
    /// `RING_CONSUMER`.
    pub const RING_CONSUMER: u32 = offset_of!(ChannelRegisters, ring_consumer) as u32;
    /// `CQ_BASE_LO`.
    pub const CQ_BASE_LO: u32 = offset_of!(ChannelRegisters, cq_base_lo) as u32;
    /// `CQ_BASE_HI`.
    pub const CQ_BASE_HI: u32 = offset_of!(ChannelRegisters, cq_base_hi) as u32;
    /// `CQ_ENTRIES`.
    pub const CQ_ENTRIES: u32 = offset_of!(ChannelRegisters, cq_entries) as u32;
    /// `CQ_PRODUCER`.
    pub const CQ_PRODUCER: u32 = offset_of!(ChannelRegisters, cq_producer) as u32;
    /// `CQ_CONSUMER`.
    pub const CQ_CONSUMER: u32 = offset_of!(ChannelRegisters, cq_consumer) as u32;
    /// `DROPPED_FRAMES`.
    pub const DROPPED_FRAMES: u32 = offset_of!(ChannelRegisters, dropped_frames) as u32;
}

/// BAR0 offset of channel `index`'s register block.
#[must_use]
pub const fn channel_base(index: u32) -> u32 {
    0x100 + 0x80 * index
}

/// `CAPS` bit 0: the board can do scatter/gather (descriptor rings).
pub const CAPS_SCATTER_GATHER: u32 = 1 << 0;
/// `CAPS` bit 1: the board drives 64-bit addresses (else 32-bit only).
pub const CAPS_ADDRESS_64: u32 = 1 << 1;
/// `CAPS` bits 8..12: number of channels.
pub const CAPS_CHANNELS_SHIFT: u32 = 8;
/// `CAPS` bits 16..21: log2 of the buffer alignment the board needs, in bytes.
pub const CAPS_ALIGN_SHIFT: u32 = 16;

/// `CTRL` bit 0: run.
pub const CTRL_RUN: u32 = 1 << 0;
/// `CTRL` bit 1: reset the channel (self-clearing): stops, zeroes the
/// producer/consumer counters, clears errors. **Not instantaneous**: the
/// reset is complete only once `STATUS_RUNNING` reads 0, see
/// [`RESET_POLL_READS`].
pub const CTRL_RESET: u32 = 1 << 1;

/// When a channel reset is complete: the contract the driver relies on
/// before it hands back any memory the engine could write.
///
/// Writing `CTRL_RESET` stops the engine from fetching descriptors and
/// starting bursts, but a burst already in flight (frame data, a completion
/// record) is finished or aborted at the board's pace, and the write itself
/// is posted (it may still be on its way to the board). Until the reset is
/// complete the engine may still write the memory of the frame it was
/// capturing. The board keeps `STATUS_RUNNING` set until no DMA of the
/// channel is outstanding, and clears it within [`RESET_TIMEOUT_US`]
/// microseconds of receiving the `CTRL_RESET` write.
///
/// The driver writes `CTRL_RESET`, then reads `STATUS` (the read also
/// flushes the posted write: a PCI Express read cannot pass an earlier posted
/// write to the same device) until `STATUS_RUNNING` reads 0, at most
/// `RESET_POLL_READS` reads. Each read is a full round trip to the device
/// (at least 100 ns), so the bound covers [`RESET_TIMEOUT_US`] without a
/// timer. `STATUS` reading all ones means the board is gone: it can no
/// longer master the bus. A board that still reports `STATUS_RUNNING`
/// after the bound has broken the contract: the driver hands back nothing
/// that engine could write (see the bus core's `ChannelState::reset_pending`).
pub const RESET_POLL_READS: u32 = 1000;

/// The longest a board may take, in microseconds, from receiving
/// `CTRL_RESET` to `STATUS_RUNNING` reading 0 (see [`RESET_POLL_READS`]).
pub const RESET_TIMEOUT_US: u32 = 100;
/// `CTRL` bit 2: scatter/gather mode (descriptor ring); clear for slot ring.
pub const CTRL_SG_MODE: u32 = 1 << 2;

/// `STATUS` bit 0: the engine is running, or was reset and still has DMA
/// outstanding (see [`RESET_POLL_READS`]).
pub const STATUS_RUNNING: u32 = 1 << 0;
/// `STATUS` bit 1: the engine halted on an error; code in bits 8..16.
pub const STATUS_HALTED: u32 = 1 << 1;
/// `STATUS` bits 8..16: error code, see `ERROR_*`.
pub const STATUS_ERROR_SHIFT: u32 = 8;
/// Error code: a DMA write faulted (master abort / IOMMU fault).
pub const ERROR_DMA_FAULT: u32 = 1;
/// Error code: a descriptor was malformed.
pub const ERROR_BAD_DESCRIPTOR: u32 = 2;
/// Error code: a frame did not fit its buffer.
pub const ERROR_OVERRUN: u32 = 3;

/// `GLOBAL_CTRL` bit 0: reset the whole board (self-clearing).
pub const GLOBAL_CTRL_RESET: u32 = 1 << 0;

/// `INT_STATUS` bit for completions on channel `ch`.
#[must_use]
pub const fn int_done(ch: u32) -> u32 {
    1 << ch
}

/// `INT_STATUS` bit for an error on channel `ch`.
#[must_use]
pub const fn int_error(ch: u32) -> u32 {
    1 << (16 + ch)
}

/// The decoded `CAPS` register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The board can do scatter/gather.
    pub scatter_gather: bool,
    /// The board drives 64-bit addresses.
    pub address_64: bool,
    /// Channels on the board (0..=15 as reported; the bus rejects 0 and > [`MAX_CHANNELS`]).
    pub channels: u32,
    /// Buffer alignment the board needs, in bytes (a power of two).
    pub alignment: u32,
}

impl Caps {
    /// Decodes a raw `CAPS` value. The alignment exponent is capped at 20
    /// (1 MiB) so an untrusted value cannot overflow a shift.
    #[must_use]
    pub const fn decode(raw: u32) -> Self {
        let exp = (raw >> CAPS_ALIGN_SHIFT) & 0x1f;
        let exp = if exp > 20 { 20 } else { exp };
        Self {
            scatter_gather: raw & CAPS_SCATTER_GATHER != 0,
            address_64: raw & CAPS_ADDRESS_64 != 0,
            channels: (raw >> CAPS_CHANNELS_SHIFT) & 0xf,
            alignment: 1 << exp,
        }
    }

    /// Encodes (for board models). `alignment` must be a power of two.
    #[must_use]
    pub const fn encode(self) -> u32 {
        let mut raw = (self.channels & 0xf) << CAPS_CHANNELS_SHIFT;
        raw |= self.alignment.trailing_zeros() << CAPS_ALIGN_SHIFT;
        if self.scatter_gather {
            raw |= CAPS_SCATTER_GATHER;
        }
        if self.address_64 {
            raw |= CAPS_ADDRESS_64;
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_register_map() {
        assert_eq!(global::INT_STATUS, 0x10);
        assert_eq!(global::GLOBAL_CTRL, 0x18);
        assert_eq!(channel::RING_BASE_LO, 0x20);
        assert_eq!(channel::RING_PRODUCER, 0x30);
        assert_eq!(channel::CQ_BASE_LO, 0x38);
        assert_eq!(channel::CQ_CONSUMER, 0x48);
        assert_eq!(channel::DROPPED_FRAMES, 0x4C);
        assert_eq!(channel_base(3), 0x280);
        assert_eq!(BAR0_BYTES, 0x500);
    }

    #[test]
    fn channel_words_follow_the_offsets() {
        let mut r = ChannelRegisters::default();
        assert!(r.set_word(channel::RING_BASE_LO, 0x2000));
        assert!(r.set_word(channel::RING_BASE_HI, 1));
        assert!(r.set_word(channel::CQ_CONSUMER, 7));
        assert_eq!(r.ring_base(), 0x1_0000_2000);
        assert_eq!((r.cq_consumer, r.word(channel::CQ_CONSUMER)), (7, Some(7)));
        assert_eq!(r.word(0x7C), Some(0), "reserved, in range");
        assert_eq!(r.word(0x80), None, "outside the block");
        assert_eq!(r.word(0x31), None, "unaligned");
        assert!(!r.set_word(0x80, 1));
    }

    #[test]
    fn caps_round_trip() {
        let caps = Caps { scatter_gather: true, address_64: false, channels: 4, alignment: 4096 };
        assert_eq!(Caps::decode(caps.encode()), caps);
    }

    #[test]
    fn hostile_caps_alignment_is_capped() {
        assert_eq!(Caps::decode(0x1f << CAPS_ALIGN_SHIFT).alignment, 1 << 20);
    }
}
