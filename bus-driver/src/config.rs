//! Start parameters: the registry values under the device's hardware key
//! (`IoOpenDeviceRegistryKey(PLUGPLAY_REGKEY_DEVICE)` → `Device Parameters`),
//! all `REG_DWORD`, read by the glue at `IRP_MN_START_DEVICE` and handed to
//! [`crate::BusDevice::start`] as a [`StartConfig`].
//!
//! | value name | meaning | default | accepted |
//! |---|---|---|---|
//! | `DmaMode` | DMA mode override | 0 (auto) | 0 auto, 1 scatter-gather, 2 common-buffer |
//! | `SlotCount` | common-buffer slots per channel | 4 | 2..=[`MAX_RING_SLOTS`] |
//! | `DescriptorRingEntries` | S/G descriptors per channel | 16384 | powers of two in [`MIN_DESCRIPTOR_ENTRIES`]..=[`MAX_DESCRIPTOR_ENTRIES`] |
//! | `CompletionQueueEntries` | completion records per channel | 256 | powers of two in [`MIN_CQ_ENTRIES`]..=[`MAX_CQ_ENTRIES`] |
//! | `MaxMappingByteCount` | cap on one S/G element, bytes | the board's `MAX_TRANSFER` | any; 0 means absent; capped to `MAX_TRANSFER` |
//!
//! Ring sizes must be powers of two because ring counters are free-running
//! `u32`s and the entry is `counter % entries`: only a power of two keeps
//! the entry sequence continuous when a counter wraps (a descriptor ring
//! wraps its counter within hours at 4K60).
use crate::channel::sg::MAX_INFLIGHT_FRAMES;
use crate::channel::slots::MAX_SLOTS;
use capdma_interface::status::{NtStatus, STATUS_INVALID_PARAMETER};
use capdma_interface::table::MAX_RING_SLOTS;

/// Registry value name of the DMA mode override.
pub const REG_DMA_MODE: &str = "DmaMode";
/// Registry value name of the slot count.
pub const REG_SLOT_COUNT: &str = "SlotCount";
/// Registry value name of the descriptor ring size.
pub const REG_DESCRIPTOR_RING_ENTRIES: &str = "DescriptorRingEntries";
/// Registry value name of the completion queue size.
pub const REG_CQ_ENTRIES: &str = "CompletionQueueEntries";
/// Registry value name of the `MaxMappingByteCount` override.
pub const REG_MAX_MAPPING_BYTE_COUNT: &str = "MaxMappingByteCount";

/// Default common-buffer slots per channel.
pub const DEFAULT_SLOT_COUNT: u32 = 4;
/// Fewest common-buffer slots a channel runs with (one filling, one being copied).
pub const MIN_SLOT_COUNT: u32 = 2;
/// Default S/G descriptors per channel (512 KiB of ring; about 3.7 frames of
/// 4096×2160 YUY2 at one descriptor per 4 KiB page).
pub const DEFAULT_DESCRIPTOR_ENTRIES: u32 = 16384;
/// Fewest S/G descriptors per channel.
pub const MIN_DESCRIPTOR_ENTRIES: u32 = 64;
/// Most S/G descriptors per channel (2 MiB of ring).
pub const MAX_DESCRIPTOR_ENTRIES: u32 = 65536;
/// Default completion records per channel.
pub const DEFAULT_CQ_ENTRIES: u32 = 256;
/// Fewest completion records per channel: at least the most frames or slots
/// that can be outstanding, so the board can never lap the queue.
#[allow(clippy::cast_possible_truncation, reason = "MAX_INFLIGHT_FRAMES and MAX_SLOTS are small constants")]
pub const MIN_CQ_ENTRIES: u32 = {
    let most = if MAX_INFLIGHT_FRAMES > MAX_SLOTS { MAX_INFLIGHT_FRAMES } else { MAX_SLOTS };
    let most = most as u32;
    if most > 64 {
        most.next_power_of_two()
    } else {
        64
    }
};
/// Most completion records per channel.
pub const MAX_CQ_ENTRIES: u32 = 4096;

/// The `DmaMode` registry override (`REG_DWORD`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DmaModeOverride {
    /// 0: the driver decides from the board's capabilities and the machine.
    #[default]
    Auto,
    /// 1: scatter-gather if the board can do it (even a 32-bit board on a
    /// machine with memory above 4 GiB, bouncing through map registers).
    ScatterGather,
    /// 2: common-buffer whatever the board can do.
    CommonBuffer,
}

impl DmaModeOverride {
    /// Parses the `DmaMode` `REG_DWORD`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidDmaMode`] for any value but 0, 1 and 2.
    pub const fn from_registry(value: u32) -> Result<Self, ConfigError> {
        match value {
            0 => Ok(Self::Auto),
            1 => Ok(Self::ScatterGather),
            2 => Ok(Self::CommonBuffer),
            other => Err(ConfigError::InvalidDmaMode(other)),
        }
    }

    /// The `REG_DWORD` value of this override.
    #[must_use]
    pub const fn to_registry(self) -> u32 {
        match self {
            Self::Auto => 0,
            Self::ScatterGather => 1,
            Self::CommonBuffer => 2,
        }
    }
}

/// A registry value the core refuses. The glue logs [`ConfigError::describe`]
/// and fails the start with [`ConfigError::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `DmaMode` is not 0, 1 or 2 (the value read).
    InvalidDmaMode(u32),
    /// `SlotCount` is outside `MIN_SLOT_COUNT..=MAX_RING_SLOTS` (the value read).
    SlotCountOutOfRange(u32),
    /// `DescriptorRingEntries` is not a power of two in range (the value read).
    DescriptorEntriesInvalid(u32),
    /// `CompletionQueueEntries` is not a power of two in range (the value read).
    CqEntriesInvalid(u32),
}

impl ConfigError {
    /// The NTSTATUS a start with this configuration fails with:
    /// `STATUS_INVALID_PARAMETER`.
    #[must_use]
    pub const fn status(self) -> NtStatus {
        STATUS_INVALID_PARAMETER
    }

    /// A one-line explanation naming the registry value.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::InvalidDmaMode(_) => {
                "DmaMode must be 0 (auto), 1 (scatter-gather) or 2 (common-buffer)"
            }
            Self::SlotCountOutOfRange(_) => "SlotCount must be between 2 and 32",
            Self::DescriptorEntriesInvalid(_) => {
                "DescriptorRingEntries must be a power of two between 64 and 65536"
            }
            Self::CqEntriesInvalid(_) => "CompletionQueueEntries must be a power of two between 64 and 4096",
        }
    }

    /// The offending value as read from the registry.
    #[must_use]
    pub const fn value(self) -> u32 {
        match self {
            Self::InvalidDmaMode(v)
            | Self::SlotCountOutOfRange(v)
            | Self::DescriptorEntriesInvalid(v)
            | Self::CqEntriesInvalid(v) => v,
        }
    }
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (read {})", self.describe(), self.value())
    }
}

/// The raw `REG_DWORD`s as the glue read them; `None` when a value is absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryValues {
    /// `DmaMode`.
    pub dma_mode: Option<u32>,
    /// `SlotCount`.
    pub slot_count: Option<u32>,
    /// `DescriptorRingEntries`.
    pub descriptor_ring_entries: Option<u32>,
    /// `CompletionQueueEntries`.
    pub cq_entries: Option<u32>,
    /// `MaxMappingByteCount`, bytes.
    pub max_mapping_byte_count: Option<u32>,
}

/// The validated start parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartConfig {
    /// The DMA mode override.
    pub dma_mode: DmaModeOverride,
    /// Common-buffer mode: slots to allocate per channel (the start retries
    /// with fewer, down to [`MIN_SLOT_COUNT`], when contiguous memory is short).
    pub slot_count: u32,
    /// S/G mode: descriptors per channel ring (a power of two).
    pub descriptor_ring_entries: u32,
    /// Completion records per channel queue (a power of two).
    pub cq_entries: u32,
    /// `MaxMappingByteCount` override in bytes (`None`: the board's
    /// `MAX_TRANSFER`); capped to `MAX_TRANSFER` at start.
    pub max_mapping_byte_count: Option<u32>,
}

impl Default for StartConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl StartConfig {
    /// The defaults: auto mode, 4 slots, 16384 descriptors, 256 CQ entries,
    /// `MaxMappingByteCount` = `MAX_TRANSFER`.
    pub const DEFAULT: Self = Self {
        dma_mode: DmaModeOverride::Auto,
        slot_count: DEFAULT_SLOT_COUNT,
        descriptor_ring_entries: DEFAULT_DESCRIPTOR_ENTRIES,
        cq_entries: DEFAULT_CQ_ENTRIES,
        max_mapping_byte_count: None,
    };

    /// Builds the configuration from the registry values, defaults for the absent ones.
    ///
    /// # Errors
    /// The first value out of range, as a [`ConfigError`].
    pub const fn from_registry(values: &RegistryValues) -> Result<Self, ConfigError> {
        let dma_mode = match values.dma_mode {
            Some(raw) => match DmaModeOverride::from_registry(raw) {
                Ok(mode) => mode,
                Err(e) => return Err(e),
            },
            None => DmaModeOverride::Auto,
        };
        let config = Self {
            dma_mode,
            slot_count: match values.slot_count {
                Some(v) => v,
                None => DEFAULT_SLOT_COUNT,
            },
            descriptor_ring_entries: match values.descriptor_ring_entries {
                Some(v) => v,
                None => DEFAULT_DESCRIPTOR_ENTRIES,
            },
            cq_entries: match values.cq_entries {
                Some(v) => v,
                None => DEFAULT_CQ_ENTRIES,
            },
            max_mapping_byte_count: match values.max_mapping_byte_count {
                Some(0) | None => None,
                Some(v) => Some(v),
            },
        };
        match config.validate() {
            Ok(()) => Ok(config),
            Err(e) => Err(e),
        }
    }

    /// Checks every field against its documented range.
    ///
    /// # Errors
    /// The first field out of range, as a [`ConfigError`].
    pub const fn validate(&self) -> Result<(), ConfigError> {
        if self.slot_count < MIN_SLOT_COUNT || self.slot_count > MAX_RING_SLOTS {
            return Err(ConfigError::SlotCountOutOfRange(self.slot_count));
        }
        let d = self.descriptor_ring_entries;
        if !d.is_power_of_two() || d < MIN_DESCRIPTOR_ENTRIES || d > MAX_DESCRIPTOR_ENTRIES {
            return Err(ConfigError::DescriptorEntriesInvalid(d));
        }
        let c = self.cq_entries;
        if !c.is_power_of_two() || c < MIN_CQ_ENTRIES || c > MAX_CQ_ENTRIES {
            return Err(ConfigError::CqEntriesInvalid(c));
        }
        Ok(())
    }

    /// The `MaxMappingByteCount` (bytes) to hand to the child: the override
    /// capped to the board's `max_transfer`, else `max_transfer`.
    #[must_use]
    pub const fn effective_max_mapping_byte_count(&self, max_transfer: u32) -> u32 {
        match self.max_mapping_byte_count {
            Some(v) if v != 0 && v < max_transfer => v,
            _ => max_transfer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dma_mode_parser_accepts_exactly_0_1_2() {
        assert_eq!(DmaModeOverride::from_registry(0), Ok(DmaModeOverride::Auto));
        assert_eq!(DmaModeOverride::from_registry(1), Ok(DmaModeOverride::ScatterGather));
        assert_eq!(DmaModeOverride::from_registry(2), Ok(DmaModeOverride::CommonBuffer));
        for bad in [3, 4, 0xFFFF_FFFF, 0x8000_0001] {
            let err = DmaModeOverride::from_registry(bad).unwrap_err();
            assert_eq!(err, ConfigError::InvalidDmaMode(bad));
            assert_eq!(err.status(), STATUS_INVALID_PARAMETER);
            assert_eq!(err.value(), bad);
        }
        for m in [DmaModeOverride::Auto, DmaModeOverride::ScatterGather, DmaModeOverride::CommonBuffer] {
            assert_eq!(DmaModeOverride::from_registry(m.to_registry()), Ok(m));
        }
    }

    #[test]
    fn absent_values_give_the_defaults() {
        let c = StartConfig::from_registry(&RegistryValues::default()).unwrap();
        assert_eq!(c, StartConfig::DEFAULT);
        assert_eq!(c.slot_count, 4);
        assert_eq!(c.descriptor_ring_entries, 16384);
        assert_eq!(c.cq_entries, 256);
        assert_eq!(c.max_mapping_byte_count, None);
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let bad_slots = RegistryValues { slot_count: Some(1), ..Default::default() };
        assert_eq!(StartConfig::from_registry(&bad_slots), Err(ConfigError::SlotCountOutOfRange(1)));
        let many_slots = RegistryValues { slot_count: Some(MAX_RING_SLOTS + 1), ..Default::default() };
        assert!(StartConfig::from_registry(&many_slots).is_err());
        let odd_ring = RegistryValues { descriptor_ring_entries: Some(1000), ..Default::default() };
        assert_eq!(StartConfig::from_registry(&odd_ring), Err(ConfigError::DescriptorEntriesInvalid(1000)));
        let tiny_cq = RegistryValues { cq_entries: Some(16), ..Default::default() };
        assert_eq!(StartConfig::from_registry(&tiny_cq), Err(ConfigError::CqEntriesInvalid(16)));
        let bad_mode = RegistryValues { dma_mode: Some(7), ..Default::default() };
        assert_eq!(StartConfig::from_registry(&bad_mode), Err(ConfigError::InvalidDmaMode(7)));
    }

    #[test]
    fn cq_minimum_covers_every_outstanding_record() {
        assert!(MIN_CQ_ENTRIES as usize >= MAX_INFLIGHT_FRAMES);
        assert!(MIN_CQ_ENTRIES as usize >= MAX_SLOTS);
        assert!(MIN_CQ_ENTRIES.is_power_of_two());
    }

    #[test]
    fn max_mapping_override_is_capped_to_max_transfer() {
        let values = RegistryValues { max_mapping_byte_count: Some(1 << 20), slot_count: Some(3), ..Default::default() };
        let c = StartConfig::from_registry(&values).unwrap();
        assert_eq!(c.slot_count, 3);
        assert_eq!(c.effective_max_mapping_byte_count(65536), 65536);
        let small = StartConfig { max_mapping_byte_count: Some(3000), ..StartConfig::DEFAULT };
        assert_eq!(small.effective_max_mapping_byte_count(65536), 3000);
        assert_eq!(StartConfig::DEFAULT.effective_max_mapping_byte_count(65536), 65536);
        let zero = RegistryValues { max_mapping_byte_count: Some(0), ..Default::default() };
        assert_eq!(StartConfig::from_registry(&zero).unwrap().max_mapping_byte_count, None);
    }
}
