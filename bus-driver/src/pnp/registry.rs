//! The start parameters in the registry, as the glue reads them: which
//! values, their UTF-16 names, and how a `ZwQueryValueKey`
//! (`KeyValuePartialInformation`) answer becomes a [`RegistryValues`] field.
//!
//! The glue opens the device's hardware key (`IoOpenDeviceRegistryKey`,
//! `PLUGPLAY_REGKEY_DEVICE`, i.e. `…\Device Parameters`, where the INF's
//! `DDInstall.HW` `AddReg` writes `HKR,,DmaMode,…`), queries every
//! [`RegistryValue`], and hands the result to
//! [`crate::StartConfig::from_registry`]. A value that is absent, or not a
//! 4-byte `REG_DWORD`, counts as absent (the default applies).
use crate::config::{
    RegistryValues, REG_CQ_ENTRIES, REG_DESCRIPTOR_RING_ENTRIES, REG_DMA_MODE, REG_MAX_MAPPING_BYTE_COUNT,
    REG_SLOT_COUNT,
};

/// `REG_DWORD`.
pub const REG_DWORD: u32 = 4;

/// Offset of `Data` in `KEY_VALUE_PARTIAL_INFORMATION` (`TitleIndex`, `Type`, `DataLength`).
pub const PARTIAL_INFORMATION_HEADER_BYTES: usize = 12;
/// Bytes of a `KEY_VALUE_PARTIAL_INFORMATION` buffer that holds a `REG_DWORD`.
pub const PARTIAL_INFORMATION_DWORD_BYTES: usize = PARTIAL_INFORMATION_HEADER_BYTES + 4;

/// Longest value name, UTF-16 code units.
pub const MAX_VALUE_NAME_UNITS: usize = 32;

/// A start parameter in the device's `Device Parameters` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryValue {
    /// `DmaMode`.
    DmaMode,
    /// `SlotCount`.
    SlotCount,
    /// `DescriptorRingEntries`.
    DescriptorRingEntries,
    /// `CompletionQueueEntries`.
    CompletionQueueEntries,
    /// `MaxMappingByteCount`.
    MaxMappingByteCount,
}

/// Every start parameter, in the order the glue reads them.
pub const REGISTRY_VALUES: [RegistryValue; 5] = [
    RegistryValue::DmaMode,
    RegistryValue::SlotCount,
    RegistryValue::DescriptorRingEntries,
    RegistryValue::CompletionQueueEntries,
    RegistryValue::MaxMappingByteCount,
];

impl RegistryValue {
    /// The value name ([`crate::config`]'s `REG_*` constants).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::DmaMode => REG_DMA_MODE,
            Self::SlotCount => REG_SLOT_COUNT,
            Self::DescriptorRingEntries => REG_DESCRIPTOR_RING_ENTRIES,
            Self::CompletionQueueEntries => REG_CQ_ENTRIES,
            Self::MaxMappingByteCount => REG_MAX_MAPPING_BYTE_COUNT,
        }
    }

    /// The name as UTF-16 (no terminator: a `UNICODE_STRING` counts its
    /// length) into `out`; returns the units written, or `None` when `out`
    /// is too short.
    #[must_use]
    pub fn name_utf16(self, out: &mut [u16]) -> Option<usize> {
        let mut written = 0;
        for unit in self.name().encode_utf16() {
            *out.get_mut(written)? = unit;
            written += 1;
        }
        Some(written)
    }

    /// Stores `value` (as read, `None` when absent) into its field of `values`.
    pub const fn store(self, values: &mut RegistryValues, value: Option<u32>) {
        match self {
            Self::DmaMode => values.dma_mode = value,
            Self::SlotCount => values.slot_count = value,
            Self::DescriptorRingEntries => values.descriptor_ring_entries = value,
            Self::CompletionQueueEntries => values.cq_entries = value,
            Self::MaxMappingByteCount => values.max_mapping_byte_count = value,
        }
    }
}

/// The `REG_DWORD` in a `KEY_VALUE_PARTIAL_INFORMATION` answer of
/// `returned` bytes (`ResultLength`) in `buffer`; `None` unless the value
/// is a `REG_DWORD` of exactly four bytes that the buffer holds.
#[must_use]
pub fn partial_information_dword(buffer: &[u8], returned: usize) -> Option<u32> {
    let answer = buffer.get(..returned)?;
    let word = |offset: usize| -> Option<u32> {
        let bytes = answer.get(offset..offset.checked_add(4)?)?;
        Some(u32::from_le_bytes([*bytes.first()?, *bytes.get(1)?, *bytes.get(2)?, *bytes.get(3)?]))
    };
    let value_type = word(4)?;
    let data_length = word(8)?;
    if value_type != REG_DWORD || data_length != 4 {
        return None;
    }
    word(PARTIAL_INFORMATION_HEADER_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StartConfig;

    fn answer(value_type: u32, data: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes()); // TitleIndex
        bytes.extend_from_slice(&value_type.to_le_bytes());
        bytes.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn names_are_the_config_constants_and_the_inf_name() {
        assert_eq!(RegistryValue::DmaMode.name(), capdma_interface::identity::REG_DMA_MODE);
        let names: Vec<_> = REGISTRY_VALUES.iter().map(|v| v.name()).collect();
        assert_eq!(
            names,
            ["DmaMode", "SlotCount", "DescriptorRingEntries", "CompletionQueueEntries", "MaxMappingByteCount"]
        );
        for value in REGISTRY_VALUES {
            let mut out = [0u16; MAX_VALUE_NAME_UNITS];
            let n = value.name_utf16(&mut out).unwrap();
            assert_eq!(String::from_utf16(&out[..n]).unwrap(), value.name());
        }
        let mut short = [0u16; 3];
        assert_eq!(RegistryValue::DmaMode.name_utf16(&mut short), None);
    }

    #[test]
    fn dwords_are_decoded_and_everything_else_is_absent() {
        let ok = answer(REG_DWORD, &2u32.to_le_bytes());
        assert_eq!(ok.len(), PARTIAL_INFORMATION_DWORD_BYTES);
        assert_eq!(partial_information_dword(&ok, ok.len()), Some(2));
        // REG_SZ "2".
        let sz = answer(1, &[b'2', 0, 0, 0]);
        assert_eq!(partial_information_dword(&sz, sz.len()), None);
        // REG_QWORD.
        let qword = answer(11, &2u64.to_le_bytes());
        assert_eq!(partial_information_dword(&qword, qword.len()), None);
        // A REG_DWORD claiming two bytes, and a truncated answer.
        let short = answer(REG_DWORD, &[2, 0]);
        assert_eq!(partial_information_dword(&short, short.len()), None);
        assert_eq!(partial_information_dword(&ok, ok.len() - 1), None);
        assert_eq!(partial_information_dword(&ok, ok.len() + 10), None);
    }

    #[test]
    fn stored_values_reach_the_start_configuration() {
        let mut values = RegistryValues::default();
        RegistryValue::DmaMode.store(&mut values, Some(2));
        RegistryValue::SlotCount.store(&mut values, Some(6));
        RegistryValue::DescriptorRingEntries.store(&mut values, None);
        RegistryValue::CompletionQueueEntries.store(&mut values, Some(512));
        RegistryValue::MaxMappingByteCount.store(&mut values, Some(4096));
        let config = StartConfig::from_registry(&values).unwrap();
        assert_eq!(config.dma_mode, crate::config::DmaModeOverride::CommonBuffer);
        assert_eq!(config.slot_count, 6);
        assert_eq!(config.descriptor_ring_entries, StartConfig::DEFAULT.descriptor_ring_entries);
        assert_eq!(config.cq_entries, 512);
        assert_eq!(config.max_mapping_byte_count, Some(4096));
    }
}
