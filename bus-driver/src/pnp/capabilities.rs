//! A child PDO's `DEVICE_CAPABILITIES` (`IRP_MN_QUERY_CAPABILITIES`).
//!
//! | field | value | why |
//! |---|---|---|
//! | `Version`/`Size` | must be 1 / at least 64 bytes | the caller's structure; else `STATUS_UNSUCCESSFUL`, nothing written |
//! | `UniqueID` | FALSE | the instance ID (the channel number) is unique only below its parent |
//! | `Removable` | FALSE | a channel is part of the card, not separately removable |
//! | `SurpriseRemovalOK` | TRUE | the children go away only with the card; no "unsafe removal" warning for them |
//! | `EjectSupported`, `LockSupported`, `DockDevice`, `RawDeviceOK`, `SilentInstall` | FALSE | — |
//! | `Address`, `UINumber` | the channel | shown as the location; the same numbering as the instance ID |
//! | `DeviceState[S]` | S0 → D0, S1…S5 → D3, unspecified → unspecified | the channel is only powered while the system works |
//! | `SystemWake`, `DeviceWake` | unspecified | no wake support |
//! | `DeviceD1`, `DeviceD2`, wake-from bits | FALSE | — |
//! | latencies | 0 | — |
use capdma_interface::status::{NtStatus, STATUS_UNSUCCESSFUL};

/// `DEVICE_CAPABILITIES.Version` this driver fills.
pub const DEVICE_CAPABILITIES_VERSION: u16 = 1;
/// `sizeof(DEVICE_CAPABILITIES)` (wdm.h), bytes.
pub const DEVICE_CAPABILITIES_BYTES: u16 = 64;

/// `PowerDeviceUnspecified`.
pub const POWER_DEVICE_UNSPECIFIED: u32 = 0;
/// `PowerDeviceD0`.
pub const POWER_DEVICE_D0: u32 = 1;
/// `PowerDeviceD3`.
pub const POWER_DEVICE_D3: u32 = 4;
/// `PowerSystemUnspecified`.
pub const POWER_SYSTEM_UNSPECIFIED: u32 = 0;
/// `PowerSystemMaximum`: entries of `DEVICE_CAPABILITIES.DeviceState`.
pub const POWER_SYSTEM_MAXIMUM: usize = 7;

/// What the child PDO writes into the caller's `DEVICE_CAPABILITIES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools, reason = "mirrors the DEVICE_CAPABILITIES bit fields")]
pub struct ChildCapabilities {
    /// `UniqueID`.
    pub unique_id: bool,
    /// `Removable`.
    pub removable: bool,
    /// `SurpriseRemovalOK`.
    pub surprise_removal_ok: bool,
    /// `EjectSupported`.
    pub eject_supported: bool,
    /// `RawDeviceOK`.
    pub raw_device_ok: bool,
    /// `SilentInstall`.
    pub silent_install: bool,
    /// `DeviceD1`.
    pub device_d1: bool,
    /// `DeviceD2`.
    pub device_d2: bool,
    /// `Address`.
    pub address: u32,
    /// `UINumber`.
    pub ui_number: u32,
    /// `DeviceState`, indexed by `SYSTEM_POWER_STATE`.
    pub device_state: [u32; POWER_SYSTEM_MAXIMUM],
    /// `SystemWake`.
    pub system_wake: u32,
    /// `DeviceWake`.
    pub device_wake: u32,
}

/// Channel `channel`'s capabilities, for a caller structure of `size`
/// bytes and `version`.
///
/// # Errors
/// `STATUS_UNSUCCESSFUL` when `version` is not 1 or `size` is below
/// [`DEVICE_CAPABILITIES_BYTES`].
pub const fn child_capabilities(channel: u32, size: u16, version: u16) -> Result<ChildCapabilities, NtStatus> {
    if version != DEVICE_CAPABILITIES_VERSION || size < DEVICE_CAPABILITIES_BYTES {
        return Err(STATUS_UNSUCCESSFUL);
    }
    Ok(ChildCapabilities {
        unique_id: false,
        removable: false,
        surprise_removal_ok: true,
        eject_supported: false,
        raw_device_ok: false,
        silent_install: false,
        device_d1: false,
        device_d2: false,
        address: channel,
        ui_number: channel,
        // Unspecified, Working, Sleeping1..3, Hibernate, Shutdown.
        device_state: [
            POWER_DEVICE_UNSPECIFIED,
            POWER_DEVICE_D0,
            POWER_DEVICE_D3,
            POWER_DEVICE_D3,
            POWER_DEVICE_D3,
            POWER_DEVICE_D3,
            POWER_DEVICE_D3,
        ],
        system_wake: POWER_SYSTEM_UNSPECIFIED,
        device_wake: POWER_DEVICE_UNSPECIFIED,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_size_are_checked() {
        assert_eq!(child_capabilities(0, 64, 0), Err(STATUS_UNSUCCESSFUL));
        assert_eq!(child_capabilities(0, 64, 2), Err(STATUS_UNSUCCESSFUL));
        assert_eq!(child_capabilities(0, 63, 1), Err(STATUS_UNSUCCESSFUL));
        assert!(child_capabilities(0, 64, 1).is_ok());
        assert!(child_capabilities(0, 128, 1).is_ok(), "a larger structure is fine");
    }

    #[test]
    fn a_channel_is_a_fixed_non_unique_surprise_removable_part() {
        let caps = child_capabilities(5, 64, 1).unwrap();
        assert!(!caps.unique_id);
        assert!(!caps.removable);
        assert!(caps.surprise_removal_ok);
        assert!(!caps.eject_supported && !caps.raw_device_ok && !caps.silent_install);
        assert_eq!((caps.address, caps.ui_number), (5, 5));
    }

    #[test]
    fn only_the_working_state_powers_the_channel() {
        let caps = child_capabilities(0, 64, 1).unwrap();
        assert_eq!(caps.device_state[1], POWER_DEVICE_D0, "PowerSystemWorking");
        assert!(caps.device_state[2..].iter().all(|&d| d == POWER_DEVICE_D3), "S1..S5");
        assert_eq!(caps.device_state[0], POWER_DEVICE_UNSPECIFIED);
        assert!(!caps.device_d1 && !caps.device_d2);
        assert_eq!((caps.system_wake, caps.device_wake), (POWER_SYSTEM_UNSPECIFIED, POWER_DEVICE_UNSPECIFIED));
    }
}
