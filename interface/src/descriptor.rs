//! In-memory formats the board reads and writes, in common-buffer memory.
use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One hardware scatter/gather descriptor (32 bytes), written by the bus into
/// the channel's descriptor ring; the board reads it and DMAs up to
/// `byte_count` bytes of the frame to `address`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SgDescriptor {
    /// Logical (bus) address of the element.
    pub address: u64,
    /// Bytes in the element (1..=`MAX_TRANSFER`).
    pub byte_count: u32,
    /// `DESC_*` flags.
    pub flags: u32,
    /// The frame's tag, echoed in the completion record.
    pub tag: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Reserved, zero.
    pub reserved1: u64,
}

/// Descriptor flag: first element of a frame.
pub const DESC_START_OF_FRAME: u32 = 1 << 0;
/// Descriptor flag: last element of a frame; the board writes a completion
/// record and interrupts when this element is done.
pub const DESC_END_OF_FRAME: u32 = 1 << 1;
/// Descriptor flag: last element of a part of a frame posted in parts
/// (`ProgramFramePart`), on every part but the frame's last (which carries
/// [`DESC_END_OF_FRAME`]). When the board has written through it, it writes
/// a completion record with [`CQ_STATUS_PART`] (`index`: the part's first
/// descriptor) and interrupts; it keeps the rest of the frame and goes on
/// writing it through the next part's descriptors once they are posted
/// (the part after it has no [`DESC_START_OF_FRAME`] and the same tag).
/// Frames due meanwhile are dropped (`DROPPED_FRAMES`): its engine is busy.
/// A reset or a stop of the channel discards the frame.
pub const DESC_END_OF_PART: u32 = 1 << 2;

/// One completion record (32 bytes), written by the board into the channel's
/// completion queue when a frame is done, before it raises the interrupt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CompletionRecord {
    /// S/G mode: ring index of the first descriptor of the frame (of the
    /// part, for a frame posted in parts); common-buffer mode: the slot
    /// index. Untrusted: range-checked.
    pub index: u32,
    /// Bytes of the frame written so far (a part's record: up to the end of
    /// that part). Untrusted: checked against the buffer.
    pub byte_count: u32,
    /// `CQ_STATUS_*`.
    pub status: u32,
    /// The board's frame counter (gaps mean the board dropped frames).
    pub frame_number: u32,
    /// Capture time of the frame's first line, in 100-ns units of board time.
    pub timestamp: u64,
    /// S/G mode: the tag of the frame's descriptors; common-buffer mode: 0.
    pub tag: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Completion status: the frame is complete.
pub const CQ_STATUS_OK: u32 = 0;
/// Completion status: the frame is incomplete or damaged (error bit set).
pub const CQ_STATUS_ERROR: u32 = 1;
/// Completion status: a part of a frame posted in parts is written (its
/// last descriptor carried [`DESC_END_OF_PART`]); the frame is not done.
pub const CQ_STATUS_PART: u32 = 2;

const _: () = assert!(size_of::<SgDescriptor>() == 32);
const _: () = assert!(offset_of!(SgDescriptor, byte_count) == 8);
const _: () = assert!(offset_of!(SgDescriptor, flags) == 12);
const _: () = assert!(offset_of!(SgDescriptor, tag) == 16);
const _: () = assert!(size_of::<CompletionRecord>() == 32);
const _: () = assert!(offset_of!(CompletionRecord, byte_count) == 4);
const _: () = assert!(offset_of!(CompletionRecord, frame_number) == 12);
const _: () = assert!(offset_of!(CompletionRecord, timestamp) == 16);
const _: () = assert!(offset_of!(CompletionRecord, tag) == 24);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn descriptor_bytes_are_little_endian_fields() {
        let d = SgDescriptor { address: 0x1_2345_6000, byte_count: 4096, flags: DESC_END_OF_FRAME, tag: 7, ..Default::default() };
        let bytes = d.as_bytes();
        assert_eq!(&bytes[0..8], &0x1_2345_6000u64.to_le_bytes());
        assert_eq!(&bytes[8..12], &4096u32.to_le_bytes());
        assert_eq!(SgDescriptor::read_from_bytes(bytes).unwrap(), d);
    }

    #[test]
    fn completion_record_parses_from_bytes() {
        let mut raw = [0u8; 32];
        raw[0..4].copy_from_slice(&3u32.to_le_bytes());
        raw[4..8].copy_from_slice(&100u32.to_le_bytes());
        raw[16..24].copy_from_slice(&555u64.to_le_bytes());
        let r = CompletionRecord::read_from_bytes(&raw[..]).unwrap();
        assert_eq!((r.index, r.byte_count, r.timestamp), (3, 100, 555));
        assert!(CompletionRecord::read_from_bytes(&raw[..31]).is_err());
    }
}
