//! DMA mode selection: pure functions of the board's capabilities, the
//! registry override, the machine's memory and the adapter's grant.
//!
//! The decision is made in two steps at start (`PASSIVE_LEVEL`):
//!
//! 1. [`decide_mode`] from the decoded `CAPS`, the `DmaMode` override and
//!    the highest physical address of RAM, before `IoGetDmaAdapter`;
//! 2. [`decide_after_adapter`] with the map registers the adapter granted.
//!    When it turns a scatter-gather decision into common-buffer, the start
//!    puts the adapter and gets a new one with the common-buffer
//!    [`device_description`].
//!
//! | board | override | memory | map registers | mode | reason |
//! |---|---|---|---|---|---|
//! | no S/G | S/G | any | – | CB | `OverrideIgnoredNoScatterGather` |
//! | no S/G | auto, CB | any | – | CB | `BoardLacksScatterGather` |
//! | S/G | CB | any | – | CB | `OverrideCommonBuffer` |
//! | S/G 64-bit | auto | any | any | S/G | `BoardScatterGather` |
//! | S/G 64-bit | S/G | any | any | S/G | `OverrideScatterGather` |
//! | S/G 32-bit | auto | below 4 GiB | any | S/G | `BoardScatterGather` |
//! | S/G 32-bit | S/G | below 4 GiB | any | S/G | `OverrideScatterGather` |
//! | S/G 32-bit | auto | above 4 GiB | – | CB | `AddressLimitPreferCommonBuffer` |
//! | S/G 32-bit | S/G | above 4 GiB | > 0 | S/G (bouncing) | `OverrideScatterGather` |
//! | S/G 32-bit | S/G | above 4 GiB | 0 | CB | `AddressLimitNoMapRegisters` |
//!
//! The decision picks each channel's engine once, at start
//! (`allocate_engine`: the scatter/gather engine or the common-buffer slot
//! engine, `crate::channel::engine`); nothing else in the core asks for the
//! mode, only the reports (`GetDmaConfig`, the trace) name it.
use crate::channel::engine::EngineMemory;
use crate::channel::sg::DescriptorRing;
use crate::channel::slots::SlotMemory;
use crate::config::{DmaModeOverride, StartConfig};
use crate::ports::{DeviceDescription, DmaAdapterPort};
use capdma_interface::regs::Caps;
use capdma_interface::{DmaMode, ModeReason};

/// The DMA mode chosen at start and why; reported by `GetDmaConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModeDecision {
    /// The mode.
    pub mode: DmaMode,
    /// Why.
    pub reason: ModeReason,
}

impl ModeDecision {
    const fn new(mode: DmaMode, reason: ModeReason) -> Self {
        Self { mode, reason }
    }
}

/// First physical address a 32-bit board cannot reach (4 GiB).
pub const FOUR_GIB: u64 = 1 << 32;

/// Whether RAM reaches above what a 32-bit board can address.
/// `highest_physical_address` is the highest byte address of RAM (inclusive,
/// as `BusPlatform::highest_physical_address` reports it); an exclusive end
/// of exactly 4 GiB also counts as above, which errs towards the safe mode.
#[must_use]
pub const fn memory_above_4gib(highest_physical_address: u64) -> bool {
    highest_physical_address >= FOUR_GIB
}

/// Step 1: the mode before `IoGetDmaAdapter` (see the module table).
#[must_use]
pub const fn decide_mode(caps: Caps, dma_override: DmaModeOverride, highest_physical_address: u64) -> ModeDecision {
    let forced_sg = matches!(dma_override, DmaModeOverride::ScatterGather);
    if !caps.scatter_gather {
        let reason = if forced_sg {
            ModeReason::OverrideIgnoredNoScatterGather
        } else {
            ModeReason::BoardLacksScatterGather
        };
        return ModeDecision::new(DmaMode::CommonBuffer, reason);
    }
    if matches!(dma_override, DmaModeOverride::CommonBuffer) {
        return ModeDecision::new(DmaMode::CommonBuffer, ModeReason::OverrideCommonBuffer);
    }
    if !caps.address_64 && memory_above_4gib(highest_physical_address) && !forced_sg {
        return ModeDecision::new(DmaMode::CommonBuffer, ModeReason::AddressLimitPreferCommonBuffer);
    }
    let reason = if forced_sg { ModeReason::OverrideScatterGather } else { ModeReason::BoardScatterGather };
    ModeDecision::new(DmaMode::ScatterGather, reason)
}

/// Map registers (4 KiB pages) one frame of `frame_bytes` bytes can span:
/// `ceil(frame_bytes / 4096) + 1` (a frame need not start on a page).
#[must_use]
pub const fn map_registers_per_frame(frame_bytes: u32) -> u32 {
    frame_bytes.div_ceil(4096).saturating_add(1)
}

/// Step 2, after `IoGetDmaAdapter` granted `map_registers`
/// (`NumberOfMapRegisters`): a scatter-gather decision for a 32-bit board on
/// a machine with memory above 4 GiB bounces every page above 4 GiB through
/// a map register, so one frame of `max_frame_bytes` may need
/// [`map_registers_per_frame`] of them at once. With fewer, no frame could
/// ever be mapped: the decision becomes common-buffer
/// (`AddressLimitNoMapRegisters`). Every other decision is returned unchanged.
#[must_use]
pub const fn decide_after_adapter(
    decision: ModeDecision,
    caps: Caps,
    highest_physical_address: u64,
    map_registers: u32,
    max_frame_bytes: u32,
) -> ModeDecision {
    if matches!(decision.mode, DmaMode::ScatterGather)
        && !caps.address_64
        && memory_above_4gib(highest_physical_address)
        && map_registers < map_registers_per_frame(max_frame_bytes)
    {
        return ModeDecision::new(DmaMode::CommonBuffer, ModeReason::AddressLimitNoMapRegisters);
    }
    decision
}

/// The `DEVICE_DESCRIPTION` fields for `IoGetDmaAdapter` in `mode`:
/// `ScatterGather` only in S/G mode, `Dma64BitAddresses` when the board
/// drives 64-bit addresses (else `Dma32BitAddresses`, which also keeps the
/// common buffers below 4 GiB), `MaximumLength` = the largest frame, bytes.
#[must_use]
pub const fn device_description(mode: DmaMode, caps: Caps, max_frame_bytes: u32) -> DeviceDescription {
    DeviceDescription {
        scatter_gather: matches!(mode, DmaMode::ScatterGather),
        dma64: caps.address_64,
        maximum_length: max_frame_bytes,
    }
}

/// The strategy of `decision`'s mode, chosen once per channel at start:
/// allocates the ring of the channel's engine — S/G: a descriptor ring of
/// `config.descriptor_ring_entries` descriptors, elements up to
/// `max_transfer` bytes; CB: `config.slot_count` slots of `slot_bytes` bytes
/// (fewer when memory is short). `PASSIVE_LEVEL`. `None` when the adapter
/// has no such buffer.
pub(crate) fn allocate_engine<A: DmaAdapterPort>(
    decision: ModeDecision,
    adapter: &A,
    config: &StartConfig,
    caps: Caps,
    max_transfer: u32,
    slot_bytes: u32,
) -> Option<EngineMemory> {
    match decision.mode {
        DmaMode::ScatterGather => DescriptorRing::allocate(adapter, config.descriptor_ring_entries, caps, max_transfer)
            .map(EngineMemory::ScatterGather),
        DmaMode::CommonBuffer => {
            SlotMemory::allocate(adapter, config.slot_count, slot_bytes, caps).map(EngineMemory::CommonBuffer)
        }
    }
}

#[cfg(test)]
mod tests {
    /// A 16 KiB frame: 5 map registers at most.
    const FRAME: u32 = 16 * 1024;
    use super::*;
    use DmaMode::{CommonBuffer as Cb, ScatterGather as Sg};
    use DmaModeOverride as O;

    const LOW: u64 = 0x7FFF_FFFF; // 2 GiB machine
    const HIGH: u64 = 0x4_0000_0000 - 1; // 16 GiB machine

    fn caps(sg: bool, a64: bool) -> Caps {
        Caps { scatter_gather: sg, address_64: a64, channels: 2, alignment: 4096 }
    }

    #[test]
    fn mode_table() {
        use ModeReason as R;
        #[rustfmt::skip]
        let table = [
            // sg,    a64,   override,          memory, map regs, mode, reason
            (false, false, O::Auto,          LOW,  8, Cb, R::BoardLacksScatterGather),
            (false, true,  O::Auto,          HIGH, 8, Cb, R::BoardLacksScatterGather),
            (false, true,  O::CommonBuffer,  HIGH, 8, Cb, R::BoardLacksScatterGather),
            (false, false, O::ScatterGather, LOW,  8, Cb, R::OverrideIgnoredNoScatterGather),
            (false, true,  O::ScatterGather, HIGH, 8, Cb, R::OverrideIgnoredNoScatterGather),
            (true,  true,  O::CommonBuffer,  LOW,  8, Cb, R::OverrideCommonBuffer),
            (true,  false, O::CommonBuffer,  HIGH, 8, Cb, R::OverrideCommonBuffer),
            (true,  true,  O::Auto,          HIGH, 0, Sg, R::BoardScatterGather),
            (true,  true,  O::Auto,          LOW,  8, Sg, R::BoardScatterGather),
            (true,  true,  O::ScatterGather, HIGH, 0, Sg, R::OverrideScatterGather),
            (true,  false, O::Auto,          LOW,  0, Sg, R::BoardScatterGather),
            (true,  false, O::ScatterGather, LOW,  0, Sg, R::OverrideScatterGather),
            (true,  false, O::Auto,          HIGH, 8, Cb, R::AddressLimitPreferCommonBuffer),
            (true,  false, O::ScatterGather, HIGH, 8, Sg, R::OverrideScatterGather),
            (true,  false, O::ScatterGather, HIGH, 0, Cb, R::AddressLimitNoMapRegisters),
            (true,  false, O::ScatterGather, HIGH, 4, Cb, R::AddressLimitNoMapRegisters),
            (true,  false, O::ScatterGather, HIGH, 5, Sg, R::OverrideScatterGather),
        ];
        for (i, &(sg, a64, ov, mem, regs, mode, reason)) in table.iter().enumerate() {
            let c = caps(sg, a64);
            let first = decide_mode(c, ov, mem);
            let got = decide_after_adapter(first, c, mem, regs, FRAME);
            assert_eq!(got, ModeDecision { mode, reason }, "row {i}");
        }
    }

    #[test]
    fn map_registers_cover_a_misaligned_frame() {
        assert_eq!(map_registers_per_frame(4096), 2);
        assert_eq!(map_registers_per_frame(4097), 3);
        assert_eq!(map_registers_per_frame(1920 * 1080 * 2), 1014);
    }

    #[test]
    fn four_gib_boundary() {
        assert!(!memory_above_4gib(0xFFFF_FFFF));
        assert!(memory_above_4gib(0x1_0000_0000));
        let c = caps(true, false);
        assert_eq!(decide_mode(c, O::Auto, 0xFFFF_FFFF).mode, Sg);
        assert_eq!(decide_mode(c, O::Auto, 0x1_0000_0000).mode, Cb);
    }

    #[test]
    fn adapter_step_never_changes_common_buffer() {
        let c = caps(false, false);
        let d = decide_mode(c, O::Auto, HIGH);
        assert_eq!(decide_after_adapter(d, c, HIGH, 0, FRAME), d);
    }

    #[test]
    fn description_follows_mode_and_address_width() {
        let d = device_description(Sg, caps(true, true), 1 << 22);
        assert_eq!(d, DeviceDescription { scatter_gather: true, dma64: true, maximum_length: 1 << 22 });
        let d = device_description(Cb, caps(true, false), 1000);
        assert_eq!(d, DeviceDescription { scatter_gather: false, dma64: false, maximum_length: 1000 });
    }
}
