//! Where a child PDO's `IRP_MN_QUERY_INTERFACE` goes, decided from
//! `Parameters.QueryInterface.InterfaceType` alone.
//!
//! | `InterfaceType` | route | the glue then |
//! |---|---|---|
//! | `GUID_CAPDMA_BUS_INTERFACE` | [`ChildInterfaceRoute::CapdmaBus`] | calls `BusDevice::query_interface(Size, Version, Interface)` and completes the IRP with its status |
//! | `GUID_BUS_INTERFACE_STANDARD` | [`ChildInterfaceRoute::ForwardToParent`] | sends a new `IRP_MN_QUERY_INTERFACE` with the same parameters to the top of the parent FDO's stack (`IoGetAttachedDeviceReference`), waits, and completes with that status, so `IoGetDmaAdapter` on the child PDO reaches the PCI bus driver |
//! | anything else | [`ChildInterfaceRoute::Untouched`] | completes the IRP with `IoStatus.Status` unchanged (a PDO must not fail an interface it does not know) |
use capdma_interface::guid::{Guid, GUID_BUS_INTERFACE_STANDARD, GUID_CAPDMA_BUS_INTERFACE};

/// The answer of [`route_child_query_interface`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildInterfaceRoute {
    /// Answered by the bus core.
    CapdmaBus,
    /// Forwarded to the parent stack.
    ForwardToParent,
    /// Not ours: completed untouched.
    Untouched,
}

/// Routes a child PDO's `IRP_MN_QUERY_INTERFACE` by its interface type
/// (`None`: the IRP carried a null `InterfaceType`, which is not ours either).
#[must_use]
pub fn route_child_query_interface(interface_type: Option<&Guid>) -> ChildInterfaceRoute {
    match interface_type {
        Some(guid) if *guid == GUID_CAPDMA_BUS_INTERFACE => ChildInterfaceRoute::CapdmaBus,
        Some(guid) if *guid == GUID_BUS_INTERFACE_STANDARD => ChildInterfaceRoute::ForwardToParent,
        _ => ChildInterfaceRoute::Untouched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capdma_interface_is_answered_by_the_core() {
        assert_eq!(route_child_query_interface(Some(&GUID_CAPDMA_BUS_INTERFACE)), ChildInterfaceRoute::CapdmaBus);
    }

    #[test]
    fn standard_bus_interface_goes_to_the_parent() {
        assert_eq!(
            route_child_query_interface(Some(&GUID_BUS_INTERFACE_STANDARD)),
            ChildInterfaceRoute::ForwardToParent
        );
    }

    #[test]
    fn anything_else_is_left_untouched() {
        // GUID_PNP_LOCATION_INTERFACE {70211B0E-0AFB-47DB-AFC1-410BF842497A}.
        let location = Guid::new(0x7021_1b0e, 0x0afb, 0x47db, [0xaf, 0xc1, 0x41, 0x0b, 0xf8, 0x42, 0x49, 0x7a]);
        assert_eq!(route_child_query_interface(Some(&location)), ChildInterfaceRoute::Untouched);
        assert_eq!(route_child_query_interface(None), ChildInterfaceRoute::Untouched);
        // One byte off either known GUID is not a match.
        let mut near = GUID_CAPDMA_BUS_INTERFACE;
        near.data4[7] ^= 1;
        assert_eq!(route_child_query_interface(Some(&near)), ChildInterfaceRoute::Untouched);
        let mut near = GUID_BUS_INTERFACE_STANDARD;
        near.data1 ^= 0x8000_0000;
        assert_eq!(route_child_query_interface(Some(&near)), ChildInterfaceRoute::Untouched);
    }
}
