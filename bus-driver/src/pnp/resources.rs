//! BAR0 and the interrupt out of `IRP_MN_START_DEVICE`'s
//! `AllocatedResourcesTranslated` (`CM_RESOURCE_LIST`).
//!
//! Two steps, both portable:
//!
//! 1. [`CmResourceListReader`] walks the raw `CM_RESOURCE_LIST` (x64
//!    layout, `#pragma pack(4)`) through a byte-reading closure the glue
//!    supplies, and yields one [`ResourceDescriptor`] per
//!    `CM_PARTIAL_RESOURCE_DESCRIPTOR`, decoded by `Type` and `Flags`
//!    (large memory lengths scaled, message-signalled interrupts told from
//!    line-based ones, device-specific trailing data skipped).
//! 2. [`select_resources`] picks the board's resources:
//!
//! | what | rule | error |
//! |---|---|---|
//! | BAR0 | the first memory descriptor (`CmResourceTypeMemory` or `CmResourceTypeMemoryLarge`; the PCI bus driver lists a function's BARs in order and this board has no I/O BAR before BAR0) | none: `STATUS_DEVICE_CONFIGURATION_ERROR`; shorter than `BAR0_BYTES` or at address 0: `STATUS_INSUFFICIENT_RESOURCES` |
//! | interrupt | message-signalled if any `CmResourceTypeInterrupt` has `CM_RESOURCE_INTERRUPT_MESSAGE` (connected with `CONNECT_MESSAGE_BASED`), else the first line-based one (`CONNECT_FULLY_SPECIFIED_GROUP` with its vector, IRQL, processor group, affinity, latched/level mode and sharing) | none, or an IRQL above `HIGH_LEVEL`: `STATUS_DEVICE_CONFIGURATION_ERROR` |
//!
//! Interrupt descriptors carry a processor group (Windows 7 on): the first
//! word of `u.Interrupt` and of `u.MessageInterrupt.Translated` is
//! `USHORT Level; USHORT Group` (wdm.h with `NT_PROCESSOR_GROUPS`), so the
//! level is its low 16 bits and the group its high 16 bits, and `Affinity`
//! is a mask within that group.
use super::STATUS_DEVICE_CONFIGURATION_ERROR;
use capdma_interface::regs::BAR0_BYTES;
use capdma_interface::status::{NtStatus, STATUS_INSUFFICIENT_RESOURCES};

/// `CmResourceTypePort`.
pub const CM_RESOURCE_TYPE_PORT: u8 = 1;
/// `CmResourceTypeInterrupt`.
pub const CM_RESOURCE_TYPE_INTERRUPT: u8 = 2;
/// `CmResourceTypeMemory`.
pub const CM_RESOURCE_TYPE_MEMORY: u8 = 3;
/// `CmResourceTypeDeviceSpecific`: `DataSize` bytes follow the descriptor.
pub const CM_RESOURCE_TYPE_DEVICE_SPECIFIC: u8 = 5;
/// `CmResourceTypeMemoryLarge`.
pub const CM_RESOURCE_TYPE_MEMORY_LARGE: u8 = 7;
/// `CmResourceShareShared`.
pub const CM_RESOURCE_SHARE_SHARED: u8 = 3;
/// `CM_RESOURCE_INTERRUPT_LATCHED` (else level-sensitive).
pub const CM_RESOURCE_INTERRUPT_LATCHED: u16 = 0x1;
/// `CM_RESOURCE_INTERRUPT_MESSAGE`: a message-signalled interrupt (MSI/MSI-X).
pub const CM_RESOURCE_INTERRUPT_MESSAGE: u16 = 0x2;
/// `CM_RESOURCE_MEMORY_LARGE_40`: `Length40` is the length shifted right by 8.
pub const CM_RESOURCE_MEMORY_LARGE_40: u16 = 0x200;
/// `CM_RESOURCE_MEMORY_LARGE_48`: `Length48` is the length shifted right by 16.
pub const CM_RESOURCE_MEMORY_LARGE_48: u16 = 0x400;
/// `CM_RESOURCE_MEMORY_LARGE_64`: `Length64` is the length shifted right by 32.
pub const CM_RESOURCE_MEMORY_LARGE_64: u16 = 0x800;

/// `sizeof(CM_PARTIAL_RESOURCE_DESCRIPTOR)` on x64: `Type`, `ShareDisposition`,
/// `Flags`, then the 16-byte union `u`.
pub const CM_PARTIAL_DESCRIPTOR_BYTES: usize = 20;
/// Offset of `CM_RESOURCE_LIST.List` (after `Count`).
pub const CM_LIST_HEADER_BYTES: usize = 4;
/// Offset of `CM_FULL_RESOURCE_DESCRIPTOR.PartialResourceList.PartialDescriptors`
/// (`InterfaceType`, `BusNumber`, `Version`, `Revision`, `Count`).
pub const CM_FULL_DESCRIPTOR_HEADER_BYTES: usize = 16;
/// Offset of `PartialResourceList.Count` inside a full descriptor.
const CM_PARTIAL_COUNT_OFFSET: usize = 12;

/// Full descriptors read at most (a PCI function has one).
pub const MAX_FULL_DESCRIPTORS: u32 = 8;
/// Partial descriptors read at most per full descriptor (MSI-X can list
/// one interrupt descriptor per message; 2048 is the MSI-X table maximum).
pub const MAX_PARTIAL_DESCRIPTORS: u32 = 2048 + 16;

/// One partial resource descriptor, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceDescriptor {
    /// `CmResourceTypeMemory` / `CmResourceTypeMemoryLarge`: a memory window.
    Memory {
        /// Translated start (physical) address.
        start: u64,
        /// Length in bytes (large lengths already scaled).
        length: u64,
    },
    /// `CmResourceTypePort`.
    Port {
        /// Translated start address.
        start: u64,
        /// Length in bytes.
        length: u32,
    },
    /// `CmResourceTypeInterrupt` without `CM_RESOURCE_INTERRUPT_MESSAGE`.
    LineInterrupt {
        /// `u.Interrupt.Level`: the IRQL (translated), the low 16 bits of the first word.
        level: u16,
        /// `u.Interrupt.Group`: the processor group `affinity` is in, the high 16 bits.
        group: u16,
        /// `u.Interrupt.Vector` (translated).
        vector: u32,
        /// `u.Interrupt.Affinity` (processors of `group`).
        affinity: u64,
        /// `ShareDisposition == CmResourceShareShared`.
        shared: bool,
        /// `Flags & CM_RESOURCE_INTERRUPT_LATCHED`.
        latched: bool,
    },
    /// `CmResourceTypeInterrupt` with `CM_RESOURCE_INTERRUPT_MESSAGE`.
    MessageInterrupt {
        /// `u.MessageInterrupt.Translated.Level` (low 16 bits of the first word).
        level: u16,
        /// `u.MessageInterrupt.Translated.Group` (high 16 bits).
        group: u16,
        /// `u.MessageInterrupt.Translated.Vector`.
        vector: u32,
        /// `u.MessageInterrupt.Translated.Affinity`.
        affinity: u64,
    },
    /// Any other type (DMA, bus number, device private, device specific, …).
    Other {
        /// `Type`.
        kind: u8,
    },
}

/// A raw `CM_PARTIAL_RESOURCE_DESCRIPTOR` (x64): `Type`,
/// `ShareDisposition`, `Flags` and the union `u` as four little-endian words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawPartialDescriptor {
    /// `Type`.
    pub kind: u8,
    /// `ShareDisposition`.
    pub share: u8,
    /// `Flags`.
    pub flags: u16,
    /// `u`, 16 bytes.
    pub words: [u32; 4],
}

impl RawPartialDescriptor {
    /// Decodes the 20 bytes of a descriptor.
    #[must_use]
    pub fn from_bytes(bytes: &[u8; CM_PARTIAL_DESCRIPTOR_BYTES]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            if let Some(src) = bytes.get(4 + 4 * i..8 + 4 * i) {
                w.copy_from_slice(src);
            }
            u32::from_le_bytes(w)
        };
        Self {
            kind: bytes[0],
            share: bytes[1],
            flags: u16::from_le_bytes([bytes[2], bytes[3]]),
            words: [word(0), word(1), word(2), word(3)],
        }
    }

    /// The encoded 20 bytes (for tests and the simulation).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; CM_PARTIAL_DESCRIPTOR_BYTES] {
        let mut out = [0u8; CM_PARTIAL_DESCRIPTOR_BYTES];
        out[0] = self.kind;
        out[1] = self.share;
        out[2..4].copy_from_slice(&self.flags.to_le_bytes());
        for (chunk, word) in out[4..].chunks_exact_mut(4).zip(self.words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// The `PHYSICAL_ADDRESS` / `KAFFINITY` made of two words.
    const fn join(lo: u32, hi: u32) -> u64 {
        (lo as u64) | ((hi as u64) << 32)
    }

    /// The `USHORT Level; USHORT Group` pair of an interrupt descriptor's
    /// first word (little-endian: `Level` is the low half).
    #[allow(clippy::cast_possible_truncation, reason = "the halves are taken deliberately")]
    const fn level_and_group(word: u32) -> (u16, u16) {
        (word as u16, (word >> 16) as u16)
    }

    /// The decoded descriptor.
    #[must_use]
    pub const fn decode(&self) -> ResourceDescriptor {
        let [w0, w1, w2, w3] = self.words;
        match self.kind {
            CM_RESOURCE_TYPE_MEMORY => ResourceDescriptor::Memory { start: Self::join(w0, w1), length: w2 as u64 },
            CM_RESOURCE_TYPE_MEMORY_LARGE => {
                let raw = w2 as u64;
                let length = if self.flags & CM_RESOURCE_MEMORY_LARGE_64 != 0 {
                    raw << 32
                } else if self.flags & CM_RESOURCE_MEMORY_LARGE_48 != 0 {
                    raw << 16
                } else if self.flags & CM_RESOURCE_MEMORY_LARGE_40 != 0 {
                    raw << 8
                } else {
                    raw
                };
                ResourceDescriptor::Memory { start: Self::join(w0, w1), length }
            }
            CM_RESOURCE_TYPE_PORT => ResourceDescriptor::Port { start: Self::join(w0, w1), length: w2 },
            CM_RESOURCE_TYPE_INTERRUPT => {
                let ((level, group), vector, affinity) = (Self::level_and_group(w0), w1, Self::join(w2, w3));
                if self.flags & CM_RESOURCE_INTERRUPT_MESSAGE != 0 {
                    ResourceDescriptor::MessageInterrupt { level, group, vector, affinity }
                } else {
                    ResourceDescriptor::LineInterrupt {
                        level,
                        group,
                        vector,
                        affinity,
                        shared: self.share == CM_RESOURCE_SHARE_SHARED,
                        latched: self.flags & CM_RESOURCE_INTERRUPT_LATCHED != 0,
                    }
                }
            }
            kind => ResourceDescriptor::Other { kind },
        }
    }

    /// Bytes that follow this descriptor inside its list: `DataSize` for
    /// `CmResourceTypeDeviceSpecific`, else 0.
    #[must_use]
    pub const fn trailing_bytes(&self) -> usize {
        let [data_size, ..] = self.words;
        if self.kind == CM_RESOURCE_TYPE_DEVICE_SPECIFIC {
            data_size as usize
        } else {
            0
        }
    }
}

/// Walks a `CM_RESOURCE_LIST` through `read(offset, buffer) -> bool`
/// (copy `buffer.len()` bytes from `offset` of the list; `false` stops the
/// walk) and yields every partial descriptor, decoded.
///
/// The walk is bounded by [`MAX_FULL_DESCRIPTORS`] and
/// [`MAX_PARTIAL_DESCRIPTORS`] and stops at the first offset overflow or
/// failed read: it never loops forever on a corrupt list.
pub struct CmResourceListReader<F: FnMut(usize, &mut [u8]) -> bool> {
    read: F,
    full_left: u32,
    partial_left: u32,
    offset: usize,
    failed: bool,
}

impl<F: FnMut(usize, &mut [u8]) -> bool> CmResourceListReader<F> {
    /// A walk over the list `read` reads from; reads `Count` first.
    pub fn new(mut read: F) -> Self {
        let mut count = [0u8; 4];
        let ok = read(0, &mut count);
        Self {
            read,
            full_left: if ok { u32::from_le_bytes(count).min(MAX_FULL_DESCRIPTORS) } else { 0 },
            partial_left: 0,
            offset: CM_LIST_HEADER_BYTES,
            failed: !ok,
        }
    }

    /// Whether a read failed or an offset overflowed (the list was cut short).
    pub const fn failed(&self) -> bool {
        self.failed
    }

    fn read_u32(&mut self, offset: usize) -> Option<u32> {
        let mut bytes = [0u8; 4];
        if (self.read)(offset, &mut bytes) {
            Some(u32::from_le_bytes(bytes))
        } else {
            self.failed = true;
            None
        }
    }
}

impl<F: FnMut(usize, &mut [u8]) -> bool> Iterator for CmResourceListReader<F> {
    type Item = ResourceDescriptor;

    fn next(&mut self) -> Option<ResourceDescriptor> {
        if self.failed {
            return None;
        }
        while self.partial_left == 0 {
            if self.full_left == 0 {
                return None;
            }
            self.full_left -= 1;
            let count_at = self.offset.checked_add(CM_PARTIAL_COUNT_OFFSET);
            let Some(count) = count_at.and_then(|at| self.read_u32(at)) else {
                self.failed = true;
                return None;
            };
            self.partial_left = count.min(MAX_PARTIAL_DESCRIPTORS);
            let Some(first) = self.offset.checked_add(CM_FULL_DESCRIPTOR_HEADER_BYTES) else {
                self.failed = true;
                return None;
            };
            self.offset = first;
        }
        self.partial_left -= 1;
        let mut bytes = [0u8; CM_PARTIAL_DESCRIPTOR_BYTES];
        if !(self.read)(self.offset, &mut bytes) {
            self.failed = true;
            return None;
        }
        let raw = RawPartialDescriptor::from_bytes(&bytes);
        match self
            .offset
            .checked_add(CM_PARTIAL_DESCRIPTOR_BYTES)
            .and_then(|next| next.checked_add(raw.trailing_bytes()))
        {
            Some(next) => self.offset = next,
            None => self.failed = true,
        }
        Some(raw.decode())
    }
}

/// A memory window (BAR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryWindow {
    /// Translated start address, for `MmMapIoSpaceEx`.
    pub start: u64,
    /// Length the system assigned, bytes.
    pub length: u64,
}

/// The interrupt to connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptResource {
    /// Message-signalled: `IoConnectInterruptEx(CONNECT_MESSAGE_BASED)` on
    /// the PCI PDO, with a line-based fallback routine.
    Message {
        /// Message descriptors listed (MSI messages or MSI-X vectors).
        messages: u32,
    },
    /// Line-based: `IoConnectInterruptEx(CONNECT_FULLY_SPECIFIED_GROUP)`.
    Line {
        /// `Vector`.
        vector: u32,
        /// `Irql` and `SynchronizeIrql` (the translated `Level`).
        irql: u8,
        /// `Group`: the processor group of `affinity`.
        group: u16,
        /// `ProcessorEnableMask` (within `group`).
        affinity: u64,
        /// `ShareVector`.
        shared: bool,
        /// `InterruptMode`: `Latched` if set, else `LevelSensitive`.
        latched: bool,
    },
}

/// What the start uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectedResources {
    /// BAR0.
    pub bar0: MemoryWindow,
    /// Bytes of BAR0 to map: the register file, `BAR0_BYTES`.
    pub map_bytes: usize,
    /// The interrupt.
    pub interrupt: InterruptResource,
}

/// `HIGH_LEVEL` as the `u16` of a resource descriptor's `Level`: no
/// interrupt IRQL is above it.
const HIGH_LEVEL: u16 = capdma_interface::kernel::HIGH_LEVEL as u16;

/// Picks BAR0 and the interrupt (see the module table).
///
/// # Errors
/// `STATUS_DEVICE_CONFIGURATION_ERROR` when there is no memory window or no
/// usable interrupt; `STATUS_INSUFFICIENT_RESOURCES` when BAR0 is shorter
/// than the register file or starts at address 0.
pub fn select_resources(
    descriptors: impl IntoIterator<Item = ResourceDescriptor>,
) -> Result<SelectedResources, NtStatus> {
    let mut bar0 = None;
    let mut line = None;
    let mut messages: u32 = 0;
    for descriptor in descriptors {
        match descriptor {
            ResourceDescriptor::Memory { start, length } if bar0.is_none() => {
                bar0 = Some(MemoryWindow { start, length });
            }
            ResourceDescriptor::LineInterrupt { level, group, vector, affinity, shared, latched } if line.is_none() => {
                line = Some((level, group, vector, affinity, shared, latched));
            }
            ResourceDescriptor::MessageInterrupt { .. } => messages = messages.saturating_add(1),
            _ => {}
        }
    }
    let bar0 = bar0.ok_or(STATUS_DEVICE_CONFIGURATION_ERROR)?;
    if bar0.start == 0 || bar0.length < u64::from(BAR0_BYTES) {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    let interrupt = if messages > 0 {
        InterruptResource::Message { messages }
    } else {
        let (level, group, vector, affinity, shared, latched) = line.ok_or(STATUS_DEVICE_CONFIGURATION_ERROR)?;
        if level > HIGH_LEVEL {
            return Err(STATUS_DEVICE_CONFIGURATION_ERROR);
        }
        let irql = u8::try_from(level).map_err(|_| STATUS_DEVICE_CONFIGURATION_ERROR)?;
        InterruptResource::Line { vector, irql, group, affinity, shared, latched }
    };
    let map_bytes = usize::try_from(BAR0_BYTES).map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    Ok(SelectedResources { bar0, map_bytes, interrupt })
}

/// The highest byte address of RAM from `MmGetPhysicalMemoryRanges`'s
/// `(BaseAddress, NumberOfBytes)` entries (the terminating all-zero entry
/// excluded by the caller): the largest `base + length - 1`, saturating;
/// empty ranges are skipped. `u64::MAX` when no range is known, which makes
/// a 32-bit board choose the safe common-buffer mode.
#[must_use]
pub fn highest_ram_address(ranges: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    ranges
        .into_iter()
        .filter(|&(_, length)| length > 0)
        .map(|(base, length)| base.saturating_add(length - 1))
        .max()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(start: u64, length: u32) -> RawPartialDescriptor {
        #[allow(clippy::cast_possible_truncation)]
        RawPartialDescriptor {
            kind: CM_RESOURCE_TYPE_MEMORY,
            share: 1,
            flags: 0,
            words: [start as u32, (start >> 32) as u32, length, 0],
        }
    }

    fn line(level: u32, vector: u32, shared: bool, latched: bool) -> RawPartialDescriptor {
        line_in_group(level, 0, vector, shared, latched)
    }

    /// A line-based interrupt descriptor whose first word is `USHORT
    /// Level; USHORT Group`.
    fn line_in_group(level: u32, group: u32, vector: u32, shared: bool, latched: bool) -> RawPartialDescriptor {
        RawPartialDescriptor {
            kind: CM_RESOURCE_TYPE_INTERRUPT,
            share: if shared { CM_RESOURCE_SHARE_SHARED } else { 1 },
            flags: if latched { CM_RESOURCE_INTERRUPT_LATCHED } else { 0 },
            words: [level | (group << 16), vector, 0xF, 0],
        }
    }

    fn message(vector: u32) -> RawPartialDescriptor {
        RawPartialDescriptor {
            kind: CM_RESOURCE_TYPE_INTERRUPT,
            share: 1,
            flags: CM_RESOURCE_INTERRUPT_MESSAGE | CM_RESOURCE_INTERRUPT_LATCHED,
            words: [6, vector, 0x3, 0],
        }
    }

    /// A `CM_RESOURCE_LIST` with one full descriptor per inner list.
    fn list(fulls: &[&[(RawPartialDescriptor, &[u8])]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&u32::try_from(fulls.len()).unwrap().to_le_bytes());
        for partials in fulls {
            bytes.extend_from_slice(&5u32.to_le_bytes()); // InterfaceType = PCIBus
            bytes.extend_from_slice(&0u32.to_le_bytes()); // BusNumber
            bytes.extend_from_slice(&1u16.to_le_bytes()); // Version
            bytes.extend_from_slice(&1u16.to_le_bytes()); // Revision
            bytes.extend_from_slice(&u32::try_from(partials.len()).unwrap().to_le_bytes());
            for (raw, trailing) in *partials {
                bytes.extend_from_slice(&raw.to_bytes());
                bytes.extend_from_slice(trailing);
            }
        }
        bytes
    }

    fn walk(bytes: &[u8]) -> (Vec<ResourceDescriptor>, bool) {
        let mut reader = CmResourceListReader::new(|offset, buf: &mut [u8]| {
            match offset.checked_add(buf.len()).and_then(|end| bytes.get(offset..end)) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        });
        let items: Vec<_> = reader.by_ref().collect();
        (items, reader.failed())
    }

    #[test]
    fn highest_ram_address_of_the_physical_ranges() {
        // 3 GiB below the hole, 13 GiB above it.
        let ranges = [(0x1000, 0x9_F000), (0x10_0000, 0xBFF0_0000), (0x1_0000_0000, 0x3_4000_0000)];
        assert_eq!(highest_ram_address(ranges), 0x4_3FFF_FFFF);
        assert_eq!(highest_ram_address([(0x1000, 0x7FFF_F000)]), 0x7FFF_FFFF, "a 2 GiB machine");
        assert_eq!(highest_ram_address([(0x1000, 0), (0x2000, 0x1000)]), 0x2FFF, "empty ranges skipped");
        assert_eq!(highest_ram_address([(u64::MAX - 10, 100)]), u64::MAX, "saturates");
        assert_eq!(highest_ram_address([]), u64::MAX, "unknown: assume memory above 4 GiB");
    }

    #[test]
    fn raw_descriptor_round_trips() {
        let raw = line(9, 0x51, true, false);
        assert_eq!(RawPartialDescriptor::from_bytes(&raw.to_bytes()), raw);
    }

    #[test]
    fn walks_a_typical_pci_list() {
        let bytes = list(&[&[(memory(0xF7E0_0000, 0x1000), &[]), (line(9, 0x81, true, false), &[])]]);
        let (items, failed) = walk(&bytes);
        assert!(!failed);
        assert_eq!(
            items,
            vec![
                ResourceDescriptor::Memory { start: 0xF7E0_0000, length: 0x1000 },
                ResourceDescriptor::LineInterrupt {
                    level: 9,
                    group: 0,
                    vector: 0x81,
                    affinity: 0xF,
                    shared: true,
                    latched: false
                },
            ]
        );
        let chosen = select_resources(items).unwrap();
        assert_eq!(chosen.bar0, MemoryWindow { start: 0xF7E0_0000, length: 0x1000 });
        assert_eq!(chosen.map_bytes, BAR0_BYTES as usize);
        assert_eq!(
            chosen.interrupt,
            InterruptResource::Line { vector: 0x81, irql: 9, group: 0, affinity: 0xF, shared: true, latched: false }
        );
    }

    #[test]
    fn interrupt_level_and_processor_group_share_the_first_word() {
        // Level 9 in group 2: the first word is 0x0002_0009. Read as one
        // 32-bit level it would be an impossible IRQL (a start failure).
        let bytes = list(&[&[(memory(0xF7E0_0000, 0x1000), &[]), (line_in_group(9, 2, 0x91, false, true), &[])]]);
        let (items, failed) = walk(&bytes);
        assert!(!failed);
        assert_eq!(
            items[1],
            ResourceDescriptor::LineInterrupt {
                level: 9,
                group: 2,
                vector: 0x91,
                affinity: 0xF,
                shared: false,
                latched: true
            }
        );
        assert_eq!(
            select_resources(items).unwrap().interrupt,
            InterruptResource::Line { vector: 0x91, irql: 9, group: 2, affinity: 0xF, shared: false, latched: true }
        );
        // The highest group number, and a message descriptor's translated pair.
        let high = line_in_group(5, 0xFFFF, 0x30, false, false).decode();
        assert!(matches!(high, ResourceDescriptor::LineInterrupt { level: 5, group: 0xFFFF, .. }));
        let mut msi = message(0xA0);
        msi.words[0] = 6 | (3 << 16);
        assert!(matches!(msi.decode(), ResourceDescriptor::MessageInterrupt { level: 6, group: 3, vector: 0xA0, .. }));
        // A level above HIGH_LEVEL is still refused, whatever the group.
        let bad = line_in_group(16, 1, 0x30, false, false).decode();
        let bar = ResourceDescriptor::Memory { start: 0xA000_0000, length: 0x1000 };
        assert_eq!(select_resources([bar, bad]), Err(STATUS_DEVICE_CONFIGURATION_ERROR));
    }

    #[test]
    fn message_interrupts_win_over_a_line_and_are_counted() {
        let bytes = list(&[&[
            (line(5, 0x30, false, false), &[]),
            (memory(0x1_0000_0000, 0x4000), &[]),
            (message(0xA0), &[]),
            (message(0xA1), &[]),
        ]]);
        let (items, _) = walk(&bytes);
        assert!(matches!(items[2], ResourceDescriptor::MessageInterrupt { vector: 0xA0, .. }));
        let chosen = select_resources(items).unwrap();
        assert_eq!(chosen.interrupt, InterruptResource::Message { messages: 2 });
        assert_eq!(chosen.bar0.start, 0x1_0000_0000, "a 64-bit BAR above 4 GiB");
    }

    #[test]
    fn bar0_is_the_first_memory_window() {
        let items = [
            ResourceDescriptor::Port { start: 0xE000, length: 0x100 },
            ResourceDescriptor::Memory { start: 0xA000_0000, length: 0x1000 },
            ResourceDescriptor::Memory { start: 0xB000_0000, length: 0x10_0000 },
            ResourceDescriptor::MessageInterrupt { level: 6, group: 0, vector: 1, affinity: 1 },
        ];
        assert_eq!(select_resources(items).unwrap().bar0.start, 0xA000_0000);
    }

    #[test]
    fn large_memory_lengths_are_scaled() {
        let mut raw = memory(0x40_0000_0000, 0x10);
        raw.kind = CM_RESOURCE_TYPE_MEMORY_LARGE;
        for (flag, length) in [
            (CM_RESOURCE_MEMORY_LARGE_40, 0x10 << 8),
            (CM_RESOURCE_MEMORY_LARGE_48, 0x10 << 16),
            (CM_RESOURCE_MEMORY_LARGE_64, 0x10 << 32),
        ] {
            raw.flags = flag;
            assert_eq!(raw.decode(), ResourceDescriptor::Memory { start: 0x40_0000_0000, length });
        }
    }

    #[test]
    fn device_specific_data_is_skipped() {
        let specific =
            RawPartialDescriptor { kind: CM_RESOURCE_TYPE_DEVICE_SPECIFIC, words: [6, 0, 0, 0], ..Default::default() };
        // Device-specific data ends its own list; a second full descriptor follows.
        let bytes = list(&[&[(specific, &[0xEE; 6])], &[(memory(0xC000_0000, 0x2000), &[]), (message(0x60), &[])]]);
        let (items, failed) = walk(&bytes);
        assert!(!failed);
        assert_eq!(items.len(), 3);
        assert_eq!(items[0], ResourceDescriptor::Other { kind: CM_RESOURCE_TYPE_DEVICE_SPECIFIC });
        assert_eq!(items[1], ResourceDescriptor::Memory { start: 0xC000_0000, length: 0x2000 });
    }

    #[test]
    fn missing_bar0_is_a_configuration_error() {
        let items =
            [ResourceDescriptor::LineInterrupt { level: 5, group: 0, vector: 1, affinity: 1, shared: false, latched: false }];
        assert_eq!(select_resources(items), Err(STATUS_DEVICE_CONFIGURATION_ERROR));
        assert_eq!(select_resources([]), Err(STATUS_DEVICE_CONFIGURATION_ERROR));
    }

    #[test]
    fn short_or_null_bar0_is_insufficient() {
        let irq = ResourceDescriptor::MessageInterrupt { level: 6, group: 0, vector: 1, affinity: 1 };
        let short = ResourceDescriptor::Memory { start: 0xA000_0000, length: u64::from(BAR0_BYTES) - 4 };
        assert_eq!(select_resources([short, irq]), Err(STATUS_INSUFFICIENT_RESOURCES));
        let null = ResourceDescriptor::Memory { start: 0, length: 0x1000 };
        assert_eq!(select_resources([null, irq]), Err(STATUS_INSUFFICIENT_RESOURCES));
        let exact = ResourceDescriptor::Memory { start: 0xA000_0000, length: u64::from(BAR0_BYTES) };
        assert!(select_resources([exact, irq]).is_ok());
    }

    #[test]
    fn missing_or_impossible_interrupt_is_a_configuration_error() {
        let bar = ResourceDescriptor::Memory { start: 0xA000_0000, length: 0x1000 };
        assert_eq!(select_resources([bar]), Err(STATUS_DEVICE_CONFIGURATION_ERROR));
        let bad =
            ResourceDescriptor::LineInterrupt { level: 16, group: 0, vector: 1, affinity: 1, shared: false, latched: false };
        assert_eq!(select_resources([bar, bad]), Err(STATUS_DEVICE_CONFIGURATION_ERROR));
    }

    #[test]
    fn truncated_or_corrupt_lists_end_the_walk() {
        let bytes = list(&[&[(memory(0xA000_0000, 0x1000), &[]), (message(1), &[])]]);
        // Cut inside the second descriptor.
        let (items, failed) = walk(&bytes[..bytes.len() - 3]);
        assert_eq!(items.len(), 1);
        assert!(failed);
        // A count far beyond the data: the walk stops at the first failed read.
        let mut huge = bytes.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (items, failed) = walk(&huge);
        assert_eq!(items.len(), 2);
        assert!(failed);
        // A device-specific size that overflows the offset.
        let specific = RawPartialDescriptor {
            kind: CM_RESOURCE_TYPE_DEVICE_SPECIFIC,
            words: [u32::MAX, 0, 0, 0],
            ..Default::default()
        };
        let (items, failed) = walk(&list(&[&[(specific, &[]), (memory(0xA000_0000, 0x1000), &[])]]));
        assert_eq!(items.len(), 1);
        assert!(failed);
        // An empty read.
        let (items, failed) = walk(&[]);
        assert!(items.is_empty());
        assert!(failed);
    }
}
