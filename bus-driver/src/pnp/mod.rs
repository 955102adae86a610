//! Plug and Play decisions of the bus driver, portable and host-tested.
//!
//! The WDM glue (`wdm/`, Windows only) translates IRPs into calls of these
//! pure functions and state machines and acts on their answers; it holds no
//! decision of its own. Nothing here allocates or calls the OS.
//!
//! | concern | module | IRP |
//! |---|---|---|
//! | child identity as UTF-16 (multi-)strings, written into a caller buffer | [`ids`] | `IRP_MN_QUERY_ID`, `IRP_MN_QUERY_DEVICE_TEXT` |
//! | where a child's `IRP_MN_QUERY_INTERFACE` goes | [`route`] | `IRP_MN_QUERY_INTERFACE` on a child PDO |
//! | BAR0 and the interrupt out of the translated resources | [`resources`] | `IRP_MN_START_DEVICE` |
//! | FDO and PDO Plug and Play state machines | [`state`] | every state-changing `IRP_MN_*` |
//! | the child set, `DEVICE_RELATIONS` sizing, which child PDO to delete when | [`children`] | `IRP_MN_QUERY_DEVICE_RELATIONS`, `IRP_MN_REMOVE_DEVICE` |
//! | a child's `DEVICE_CAPABILITIES` and bus information | [`capabilities`] | `IRP_MN_QUERY_CAPABILITIES`, `IRP_MN_QUERY_BUS_INFORMATION` |
//! | the start parameters' registry names and their decoding | [`registry`] | `IRP_MN_START_DEVICE` |
//! | publishing and withdrawing the BAR0 mapping under concurrent register access | [`window`] | start, stop, surprise removal, removal |
pub mod capabilities;
pub mod children;
pub mod ids;
pub mod registry;
pub mod resources;
pub mod route;
pub mod state;
pub mod window;

use capdma_interface::status::NtStatus;
use capdma_interface::Guid;

/// `STATUS_DEVICE_CONFIGURATION_ERROR` (ntstatus.h): the resources the
/// system assigned do not describe this board (no BAR0, no interrupt).
#[allow(clippy::cast_possible_wrap, reason = "an NTSTATUS is the bit pattern of a u32")]
pub const STATUS_DEVICE_CONFIGURATION_ERROR: NtStatus = 0xC000_0182_u32 as NtStatus;
/// `STATUS_NO_SUCH_DEVICE` (ntstatus.h): the device object was removed.
#[allow(clippy::cast_possible_wrap, reason = "an NTSTATUS is the bit pattern of a u32")]
pub const STATUS_NO_SUCH_DEVICE: NtStatus = 0xC000_000E_u32 as NtStatus;
/// `STATUS_DELETE_PENDING` (ntstatus.h): a removal is under way.
#[allow(clippy::cast_possible_wrap, reason = "an NTSTATUS is the bit pattern of a u32")]
pub const STATUS_DELETE_PENDING: NtStatus = 0xC000_0056_u32 as NtStatus;

/// `GUID_BUS_TYPE_CAPDMA` {3157560f-b468-40e5-b9c1-72f70831c4d5}: the bus
/// type the child PDOs report in `PNP_BUS_INFORMATION.BusTypeGuid`
/// (`IRP_MN_QUERY_BUS_INFORMATION`). Ours, like the toaster sample's
/// `GUID_BUS_TYPE_TOASTER`: the children sit on a capdma "bus", not on PCI.
pub const GUID_BUS_TYPE_CAPDMA: Guid =
    Guid::new(0x3157_560f, 0xb468, 0x40e5, [0xb9, 0xc1, 0x72, 0xf7, 0x08, 0x31, 0xc4, 0xd5]);

/// `PNP_BUS_INFORMATION.LegacyBusType` of the children: `PNPBus` (15,
/// `INTERFACE_TYPE` in wdm.h), as for any software-enumerated bus.
pub const CHILD_LEGACY_BUS_TYPE_PNPBUS: i32 = 15;

/// `PNP_BUS_INFORMATION.BusNumber` of the children: one capdma bus per
/// board, numbered 0 (the children's instance IDs tell boards apart).
pub const CHILD_BUS_NUMBER: u32 = 0;

/// Period of the engine watchdog timer (`KeSetTimerEx`), milliseconds.
/// [`crate::BusDevice::watchdog`] resets a channel after
/// [`crate::watchdog::WATCHDOG_FRAME_INTERVALS`] silent frame intervals; a
/// period well under one frame interval at 60 fps (16.7 ms) keeps the
/// detection delay within a frame or so while waking the processor at most
/// 100 times a second.
pub const WATCHDOG_PERIOD_MS: u32 = 10;

/// [`WATCHDOG_PERIOD_MS`] in the 100-ns units of `KeSetTimerEx`'s `DueTime`
/// (negative there: relative).
pub const WATCHDOG_PERIOD_100NS: i64 = WATCHDOG_PERIOD_MS as i64 * 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use capdma_interface::status::nt_success;

    #[test]
    fn statuses_are_errors_with_their_ntstatus_h_values() {
        for (status, bits) in [
            (STATUS_DEVICE_CONFIGURATION_ERROR, 0xC000_0182_u32),
            (STATUS_NO_SUCH_DEVICE, 0xC000_000E),
            (STATUS_DELETE_PENDING, 0xC000_0056),
        ] {
            assert!(!nt_success(status));
            assert_eq!(status.cast_unsigned(), bits);
        }
    }

    #[test]
    fn bus_type_guid_is_ours_and_not_the_interface_guids() {
        assert_ne!(GUID_BUS_TYPE_CAPDMA, capdma_interface::GUID_CAPDMA_BUS_INTERFACE);
        assert_ne!(GUID_BUS_TYPE_CAPDMA, capdma_interface::guid::GUID_BUS_INTERFACE_STANDARD);
        assert_eq!(GUID_BUS_TYPE_CAPDMA.data1, 0x3157_560f);
    }

    // The watchdog period stays below one frame at 60 fps (166 667 × 100 ns).
    const _: () = assert!(WATCHDOG_PERIOD_100NS < 166_667);

    #[test]
    fn watchdog_period_in_100ns_units() {
        assert_eq!(WATCHDOG_PERIOD_100NS, i64::from(WATCHDOG_PERIOD_MS) * 10_000);
    }
}
