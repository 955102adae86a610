//! Plug and Play device stacks of the simulated machine: device objects
//! with their attached-device chains, optional filter drivers, and the IRPs
//! that travel down them.
//!
//! One card is a tree like this (filters optional, any number of each):
//!
//! ```text
//! PCI PDO ─ [lower filters] ─ bus FDO ─ [upper filters]            (the bus stack)
//!   child PDO (per channel) ─ [lower filters] ─ AVStream FDO ─ [upper filters]
//! ```
//!
//! * `IRP_MN_QUERY_INTERFACE` is sent to the top of a stack
//!   (`IoGetAttachedDeviceReference`) and travels down. Function drivers
//!   and pass-through filters pass it on; a
//!   [`FilterKind::FailsUnknownQueryInterface`] filter completes every
//!   interface type it does not know with `STATUS_NOT_SUPPORTED`.
//! * The bus's **child PDO** decides with the bus core's portable
//!   [`capdma_bus::pnp::route::route_child_query_interface`]:
//!   `GUID_CAPDMA_BUS_INTERFACE` is answered by `BusDevice::query_interface`;
//!   `GUID_BUS_INTERFACE_STANDARD` is forwarded, as a new IRP with the same
//!   parameters, to the top of the parent (bus FDO) stack, so it travels down
//!   to the PCI PDO; anything else is completed untouched (the status stays
//!   `STATUS_NOT_SUPPORTED`).
//! * The **PCI PDO** answers `GUID_BUS_INTERFACE_STANDARD` ([`pci`]); its
//!   `GetDmaAdapter` is `IoGetDmaAdapter` on the PCI PDO.
//! * [`DeviceTree::io_get_dma_adapter`] is `IoGetDmaAdapter`: on the PCI PDO
//!   it makes an adapter; on any other PDO only through a
//!   `BUS_INTERFACE_STANDARD` the PDO's stack answers (the child PDO's
//!   forwarding), otherwise NULL.
//! * The removal IRPs travel down too, in Windows' order (the machine sends
//!   them): `IRP_MN_QUERY_REMOVE_DEVICE` to every child stack first — the
//!   AVStream device ([`AvStreamDevice`]) vetoes it with
//!   `STATUS_DEVICE_BUSY` while a pin is open, as KS does for an open
//!   handle — then to the bus stack, where the bus FDO answers with
//!   `BusDevice::query_remove` (which does not veto for the children's
//!   interface references: they are dropped in the children's own removal);
//!   a veto is followed by `IRP_MN_CANCEL_REMOVE_DEVICE` to every stack
//!   queried. Then `IRP_MN_REMOVE_DEVICE` to each child stack (the AVStream
//!   device drops its interface reference) before the bus's removal.
pub mod avstream;
pub mod pci;
pub mod tree;

pub use avstream::AvStreamDevice;
pub use pci::{BusInterfaceStandard, PciFunction};
pub use tree::{DeviceId, DeviceKind, DeviceTree, FilterKind, Irp, PnpMinor, QueryInterface};

/// Where filter drivers sit in every card's stacks (the machine's stack
/// layout). Each list is bottom-up: the first filter is attached first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackLayout {
    /// Lower filters of the bus stack (between the PCI PDO and the bus FDO).
    pub below_bus: Vec<FilterKind>,
    /// Upper filters of the bus stack (above the bus FDO).
    pub above_bus: Vec<FilterKind>,
    /// Lower filters of every child stack (between the child PDO and the AVStream FDO).
    pub below_avstream: Vec<FilterKind>,
    /// Upper filters of every child stack (above the AVStream FDO).
    pub above_avstream: Vec<FilterKind>,
}

impl StackLayout {
    /// No filters (the default).
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// `kind` in every one of the four places.
    #[must_use]
    pub fn everywhere(kind: FilterKind) -> Self {
        Self { below_bus: vec![kind], above_bus: vec![kind], below_avstream: vec![kind], above_avstream: vec![kind] }
    }

    /// Filters in all.
    #[must_use]
    pub fn filter_count(&self) -> usize {
        self.below_bus.len() + self.above_bus.len() + self.below_avstream.len() + self.above_avstream.len()
    }
}
