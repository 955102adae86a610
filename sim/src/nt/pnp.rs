//! The Plug and Play and power manager: drives a function driver and the
//! children it enumerates as Windows does, on top of an emulated PCI bus
//! driver whose PDO stands for the board.
//!
//! What Windows does, in order ("Plug and Play" and "Power management" in
//! the kernel-mode driver architecture guide, and each minor IRP's page):
//! * the bus driver's PDO exists; a lower filter's `AddDevice`, the
//!   function driver's `AddDevice(DriverObject, PDO)` at `PASSIVE_LEVEL`,
//!   an upper filter's; `DO_DEVICE_INITIALIZING` cleared by each (0xC9
//!   0x243);
//! * `IRP_MN_START_DEVICE` with the raw and translated `CM_RESOURCE_LIST`s,
//!   then `IRP_MN_QUERY_CAPABILITIES`, `IRP_MN_QUERY_PNP_DEVICE_STATE`,
//!   `IRP_MN_QUERY_DEVICE_RELATIONS` (`BusRelations`);
//! * every IRP goes to the top of the stack with `IoStatus.Status` =
//!   `STATUS_NOT_SUPPORTED`; a new child PDO gets `IRP_MN_DEVICE_ENUMERATED`,
//!   the IDs, capabilities, texts, bus information, resources and
//!   requirements, its stack built (lower filters, the child driver's
//!   `AddDevice`, upper filters), `IRP_MN_START_DEVICE` and the post-start
//!   queries;
//! * `IoInvalidateDeviceRelations` is served after the call that made it
//!   returns ([`Pnp::poll`]), as a worker would;
//! * removal: `IRP_MN_QUERY_REMOVE_DEVICE` to the children's stacks, then the
//!   parent's, `IRP_MN_CANCEL_REMOVE_DEVICE` back to all queried when one
//!   fails; `IRP_MN_REMOVE_DEVICE` children first, then the parent;
//!   surprise removal goes down every child stack, then the parent's;
//! * system power: `IRP_MN_QUERY_POWER` then `IRP_MN_SET_POWER` for a
//!   sleep state, children before the parent; the parent before the
//!   children on wake;
//! * `DriverUnload` once every device object is gone, then the end-of-run
//!   checks ([`Pnp::end_of_run`]).
//!
//! The emulated PCI PDO answers what a PCI PDO answers: start, stop,
//! removal and power succeed; capabilities; IDs and texts; bus
//! information; `GUID_BUS_INTERFACE_STANDARD` (referenced; `GetDmaAdapter`
//! is `IoGetDmaAdapter` on the PCI PDO when the kernel implements it);
//! `TargetDeviceRelation`; anything else completed untouched.

use capdma_interface::guid::{Guid, GUID_BUS_INTERFACE_STANDARD};
use capdma_winvm::{Machine, Stop};

use super::io::device::{attach, create_device, delete_device, dereference, detach, record_capabilities, reference, top_of_stack};
use super::io::irp::{call_driver, complete_request, location_va, make_irp, IrpOrigin, IrpResult};
use super::layout::irp::{
    bus_interface_standard, cm, device_capabilities, device_relations, interface, irp, mj, mn, pnp_bus_information, sl,
    stack, status,
};
use super::layout::{device_object, do_flags, driver_extension, driver_object};
use super::ke::{self, AssignedInterrupt, Trigger};
use super::system::{Driver, System};
use super::{Nt, DISPATCH_LEVEL, PASSIVE_LEVEL};

/// `FILE_DEVICE_BUS_EXTENDER`.
const FILE_DEVICE_BUS_EXTENDER: u32 = 0x2A;
/// `GUID_BUS_TYPE_PCI` {c8ebdfb0-b510-11d0-80e5-00a0c92542e3} (wdmguid.h).
pub const GUID_BUS_TYPE_PCI: Guid = Guid::new(0xc8eb_dfb0, 0xb510, 0x11d0, [0x80, 0xe5, 0x00, 0xa0, 0xc9, 0x25, 0x42, 0xe3]);
/// `PowerSystemWorking` (S0).
pub const S0: u32 = 1;
/// `PowerSystemSleeping3` (S3).
pub const S3: u32 = 4;
/// `PowerActionSleep`.
const POWER_ACTION_SLEEP: u32 = 2;
/// `BUS_QUERY_ID_TYPE`: `BusQueryDeviceID`, `BusQueryHardwareIDs`,
/// `BusQueryCompatibleIDs`, `BusQueryInstanceID`.
const QUERY_IDS: [u32; 4] = [0, 1, 2, 3];

/// The bytes of a GUID as wdm's `GUID` lays them out.
#[must_use]
pub fn guid_bytes(guid: &Guid) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&guid.data1.to_le_bytes());
    out[4..6].copy_from_slice(&guid.data2.to_le_bytes());
    out[6..8].copy_from_slice(&guid.data3.to_le_bytes());
    out[8..].copy_from_slice(&guid.data4);
    out
}

/// One `CM_PARTIAL_RESOURCE_DESCRIPTOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmDescriptor {
    /// `CmResourceType*`.
    pub kind: u8,
    /// `CmResourceShare*`.
    pub share: u8,
    /// `Flags`.
    pub flags: u16,
    /// The 16 bytes of the `u` union.
    pub u: [u8; 16],
}

impl CmDescriptor {
    fn with(kind: u8, share: u8, flags: u16, fields: &[(usize, &[u8])]) -> Self {
        let mut u = [0u8; 16];
        for (at, bytes) in fields {
            u[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        Self { kind, share, flags, u }
    }

    /// `CmResourceTypeMemory` at physical `start`, `length` bytes (raw and translated alike).
    #[must_use]
    pub fn memory(start: u64, length: u32) -> Self {
        Self::with(cm::TYPE_MEMORY, cm::SHARE_DEVICE_EXCLUSIVE, cm::MEMORY_READ_WRITE, &[(0, &start.to_le_bytes()), (8, &length.to_le_bytes())])
    }

    /// A line-based interrupt, raw: `Level` = `Vector` = the bus's IRQ line; level-sensitive, shared.
    #[must_use]
    pub fn line_raw(irq: u32) -> Self {
        Self::with(cm::TYPE_INTERRUPT, cm::SHARE_SHARED, cm::INTERRUPT_LEVEL_SENSITIVE, &[
            (0, &irq.to_le_bytes()),
            (4, &irq.to_le_bytes()),
            (8, &1u64.to_le_bytes()),
        ])
    }

    /// A line-based interrupt, translated: `Level` = the DIRQL, `Vector` = the IDT vector.
    #[must_use]
    pub fn line_translated(irql: u8, vector: u32) -> Self {
        Self::with(cm::TYPE_INTERRUPT, cm::SHARE_SHARED, cm::INTERRUPT_LEVEL_SENSITIVE, &[
            (0, &u32::from(irql).to_le_bytes()),
            (4, &vector.to_le_bytes()),
            (8, &1u64.to_le_bytes()),
        ])
    }

    /// A message-signaled interrupt, raw: `MessageCount` messages at `vector` (edge, exclusive).
    #[must_use]
    pub fn message_raw(count: u16, vector: u32) -> Self {
        Self::with(cm::TYPE_INTERRUPT, cm::SHARE_DEVICE_EXCLUSIVE, cm::INTERRUPT_MESSAGE | cm::INTERRUPT_LATCHED, &[
            (2, &count.to_le_bytes()),
            (4, &vector.to_le_bytes()),
            (8, &1u64.to_le_bytes()),
        ])
    }

    /// A message-signaled interrupt, translated: `Level` = the DIRQL, `Vector` = the IDT vector.
    #[must_use]
    pub fn message_translated(irql: u8, vector: u32) -> Self {
        Self::with(cm::TYPE_INTERRUPT, cm::SHARE_DEVICE_EXCLUSIVE, cm::INTERRUPT_MESSAGE | cm::INTERRUPT_LATCHED, &[
            (0, &u32::from(irql).to_le_bytes()),
            (4, &vector.to_le_bytes()),
            (8, &1u64.to_le_bytes()),
        ])
    }
}

/// The resources of an `IRP_MN_START_DEVICE`: the raw and the translated list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartResources {
    /// `AllocatedResources`.
    pub raw: Vec<CmDescriptor>,
    /// `AllocatedResourcesTranslated`.
    pub translated: Vec<CmDescriptor>,
}

impl StartResources {
    /// BAR0 (`bar0`, `length` bytes) and a line-based interrupt (`irq` on
    /// the bus; `irql` and `vector` translated).
    #[must_use]
    pub fn bar0_line(bar0: u64, length: u32, irq: u32, irql: u8, vector: u32) -> Self {
        Self {
            raw: vec![CmDescriptor::memory(bar0, length), CmDescriptor::line_raw(irq)],
            translated: vec![CmDescriptor::memory(bar0, length), CmDescriptor::line_translated(irql, vector)],
        }
    }

    /// BAR0 and one MSI message (`irql` and `vector` translated).
    #[must_use]
    pub fn bar0_msi(bar0: u64, length: u32, irql: u8, vector: u32) -> Self {
        Self {
            raw: vec![CmDescriptor::memory(bar0, length), CmDescriptor::message_raw(1, vector)],
            translated: vec![CmDescriptor::memory(bar0, length), CmDescriptor::message_translated(irql, vector)],
        }
    }
}

impl StartResources {
    /// The interrupts the translated list assigns, as the dispatcher
    /// connects them (`IoConnectInterruptEx` finds only these).
    #[must_use]
    pub fn interrupts(&self) -> Vec<AssignedInterrupt> {
        let u32_at = |d: &CmDescriptor, at: usize| u32::from_le_bytes([d.u[at], d.u[at + 1], d.u[at + 2], d.u[at + 3]]);
        self.translated
            .iter()
            .zip(&self.raw)
            .filter(|(d, _)| d.kind == cm::TYPE_INTERRUPT)
            .map(|(d, raw)| {
                let irql = u8::try_from(u32_at(d, 0)).unwrap_or(u8::MAX);
                let vector = u32_at(d, 4);
                if d.flags & cm::INTERRUPT_MESSAGE != 0 {
                    let count = u32::from(u16::from_le_bytes([raw.u[2], raw.u[3]])).max(1);
                    AssignedInterrupt::Messages { vector, irql, count }
                } else {
                    let trigger = if d.flags & cm::INTERRUPT_LATCHED != 0 { Trigger::Edge } else { Trigger::Level };
                    AssignedInterrupt::Line { vector, irql, trigger, shared: d.share == cm::SHARE_SHARED }
                }
            })
            .collect()
    }
}

/// Writes a one-list `CM_RESOURCE_LIST` (PCI bus 0) into fresh kernel memory; returns its address (0 for none).
fn write_resource_list(nt: &mut Nt, m: &mut Machine, descriptors: &[CmDescriptor]) -> Result<u64, Stop> {
    if descriptors.is_empty() {
        return Ok(0);
    }
    let bytes = cm::LIST_FIRST + cm::FULL_PARTIAL_LIST + cm::PARTIAL_DESCRIPTORS + cm::DESCRIPTOR_SIZE * descriptors.len() as u64;
    let va = nt.alloc_kernel(m, bytes)?;
    m.write_u32(va + cm::LIST_COUNT, 1)?;
    let full = va + cm::LIST_FIRST;
    m.write_u32(full + cm::FULL_INTERFACE_TYPE, cm::PCI_BUS)?;
    m.write_u32(full + cm::FULL_BUS_NUMBER, 0)?;
    let partial = full + cm::FULL_PARTIAL_LIST;
    m.write_u16(partial + cm::PARTIAL_VERSION, 1)?;
    m.write_u16(partial + cm::PARTIAL_REVISION, 1)?;
    m.write_u32(partial + cm::PARTIAL_COUNT, descriptors.len() as u32)?;
    for (i, d) in descriptors.iter().enumerate() {
        let at = partial + cm::PARTIAL_DESCRIPTORS + cm::DESCRIPTOR_SIZE * i as u64;
        m.write_u8(at + cm::DESCRIPTOR_TYPE, d.kind)?;
        m.write_u8(at + cm::DESCRIPTOR_SHARE, d.share)?;
        m.write_u16(at + cm::DESCRIPTOR_FLAGS, d.flags)?;
        m.write(at + cm::DESCRIPTOR_U, &d.u)?;
    }
    Ok(va)
}

/// The PCI identity of the board the emulated PCI PDO stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciIdentity {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem (vendor in the low 16 bits, device in the high).
    pub subsystem: u32,
    /// Revision.
    pub revision: u8,
    /// PCI device number on bus 0.
    pub slot: u32,
}

impl Default for PciIdentity {
    fn default() -> Self {
        Self { vendor: 0x1AF4, device: 0x10F0, subsystem: 0, revision: 1, slot: 3 }
    }
}

/// `DEVICE_CAPABILITIES` as read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The bit fields.
    pub flags: u32,
    /// `Address`.
    pub address: u32,
    /// `UINumber`.
    pub ui_number: u32,
    /// `DeviceState[PowerSystemUnspecified..PowerSystemShutdown]`.
    pub device_state: [u32; 7],
    /// `SystemWake`.
    pub system_wake: u32,
    /// `DeviceWake`.
    pub device_wake: u32,
}

/// A child PDO the function driver enumerated, and what it answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Child {
    /// The PDO.
    pub pdo: u64,
    /// `BusQueryDeviceID`.
    pub device_id: String,
    /// `BusQueryHardwareIDs`.
    pub hardware_ids: Vec<String>,
    /// `BusQueryCompatibleIDs`.
    pub compatible_ids: Vec<String>,
    /// `BusQueryInstanceID`.
    pub instance_id: String,
    /// `DeviceTextDescription`.
    pub description: String,
    /// `DeviceTextLocationInformation`.
    pub location: String,
    /// `IRP_MN_QUERY_CAPABILITIES`.
    pub capabilities: Capabilities,
    /// `PNP_BUS_INFORMATION.BusTypeGuid`, `LegacyBusType`, `BusNumber`.
    pub bus_information: Option<([u8; 16], u32, u32)>,
    /// The status `IRP_MN_START_DEVICE` returned.
    pub start_status: Option<u32>,
    /// Surprise-removed.
    pub surprise_removed: bool,
    /// `IRP_MN_REMOVE_DEVICE` was sent.
    pub removed: bool,
    /// The function driver's FDO on it (what [`Pnp::child_driver`]'s
    /// `AddDevice` attached), when there is one.
    pub fdo: Option<u64>,
    /// The pass-through filters the manager added to its stack
    /// ([`Pnp::child_lower_filters`] below the FDO, then
    /// [`Pnp::child_upper_filters`] above it), bottom first. Each deletes
    /// itself when `IRP_MN_REMOVE_DEVICE` passes through it.
    pub filters: Vec<u64>,
}

/// One IRP the manager sent, and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The device it was sent for (the stack's PDO or the top).
    pub target: u64,
    /// `IRP_MJ_*`.
    pub major: u8,
    /// `IRP_MN_*`.
    pub minor: u8,
    /// Final `IoStatus.Status`.
    pub status: u32,
}

/// The manager's state for one board: the emulated PCI PDO, the function
/// driver's stack on it, and the children.
#[derive(Debug, Default)]
pub struct Pnp {
    /// The emulated PCI bus driver's `DRIVER_OBJECT`.
    pub pci_driver: u64,
    /// The board's PCI PDO.
    pub pci_pdo: u64,
    /// The host's pass-through filter driver (for filters above and below
    /// the FDO, and in the children's stacks).
    pub filter_driver: u64,
    /// Filter device objects made in the board's stack, bottom first (a
    /// child's are in its [`Child::filters`]).
    pub filters: Vec<u64>,
    /// The function driver's FDO (what its `AddDevice` attached), once added.
    pub fdo: Option<u64>,
    /// The function driver.
    pub driver: Option<Driver>,
    /// The PCI identity.
    pub identity: PciIdentity,
    /// The FDO stack is started.
    pub started: bool,
    /// The FDO stack was surprise-removed.
    pub surprise_removed: bool,
    /// The FDO stack was removed.
    pub removed: bool,
    /// Children, in the order they were first reported.
    pub children: Vec<Child>,
    /// Every IRP sent, in order.
    pub sent: Vec<Sent>,
    /// The current system power state (`S0` after boot).
    pub system_power: u32,
    /// Handles open on a stack (by the PDO it was opened through): a
    /// removal is vetoed for them after the query went through every stack
    /// (as for the filters open in the emulated `ks.sys` on a child's stack).
    pub open_handles: Vec<u64>,
    /// The function driver of the children (the INF match of their
    /// hardware IDs: `capdma_avstream` for `CAPDMA\Channel`): its
    /// `AddDevice` is called on each new child PDO before the child is
    /// started. `None`: the children are started raw.
    pub child_driver: Option<Driver>,
    /// Lower filters of every child's stack: pass-through filters the
    /// manager adds on each new child PDO before [`Pnp::child_driver`]'s
    /// `AddDevice` (a lower filter's `AddDevice` runs first, as for an INF's
    /// `LowerFilters`). With no child driver they are added all the same.
    pub child_lower_filters: u32,
    /// Upper filters of every child's stack: pass-through filters added
    /// above the child driver's FDO after its `AddDevice` succeeded (an
    /// INF's `UpperFilters`); none when it failed or there is no child driver.
    pub child_upper_filters: u32,
}

/// `STATUS_DEVICE_BUSY` (ntstatus.h): the veto for open handles.
pub const STATUS_DEVICE_BUSY: u32 = 0x8000_0011;

/// The host function addresses of the PCI PDO's `BUS_INTERFACE_STANDARD`.
const BUS_INTERFACE_ROUTINES: usize = 6;

impl Pnp {
    /// The emulated PCI bus driver and the board's PDO on it.
    ///
    /// # Errors
    /// [`Stop::Host`] when the machine's frames are exhausted.
    pub fn new(sys: &mut System, identity: PciIdentity) -> Result<Self, Stop> {
        let System { machine: m, nt, .. } = sys;
        let pci_driver = host_driver(nt, m, "pci", pci_dispatch)?;
        let name = Some(format!("\\Device\\NTPNP_PCI{:04}", identity.slot));
        let pci_pdo = create_device(nt, m, pci_driver, 64, name, FILE_DEVICE_BUS_EXTENDER, 0, false, "pci.sys".into())?;
        let flags = m.read_u32(pci_pdo + device_object::FLAGS)?;
        m.write_u32(
            pci_pdo + device_object::FLAGS,
            (flags & !do_flags::DEVICE_INITIALIZING) | do_flags::BUS_ENUMERATED_DEVICE | do_flags::POWER_PAGABLE,
        )?;
        // The PDO's extension: the identity for its answers, and the bus interface's routines.
        let ext = m.read_u64(pci_pdo + device_object::DEVICE_EXTENSION)?;
        m.write_u16(ext, identity.vendor)?;
        m.write_u16(ext + 2, identity.device)?;
        m.write_u32(ext + 4, identity.subsystem)?;
        m.write_u8(ext + 8, identity.revision)?;
        m.write_u32(ext + 12, identity.slot)?;
        let routines: [(&str, super::HostFn, u8); BUS_INTERFACE_ROUTINES] = [
            ("PciInterfaceReference", interface_reference, DISPATCH_LEVEL),
            ("PciInterfaceDereference", interface_dereference, DISPATCH_LEVEL),
            ("PciTranslateBusAddress", translate_bus_address, DISPATCH_LEVEL),
            ("PciGetDmaAdapter", get_dma_adapter, PASSIVE_LEVEL),
            ("PciSetBusData", get_set_bus_data, DISPATCH_LEVEL),
            ("PciGetBusData", get_set_bus_data, DISPATCH_LEVEL),
        ];
        for (i, (name, run, irql)) in routines.into_iter().enumerate() {
            let va = nt.host_function(m, name, run, pci_pdo, irql)?;
            m.write_u64(ext + 16 + 8 * i as u64, va)?;
        }
        let filter_driver = host_driver(nt, m, "filter", filter_dispatch)?;
        Ok(Self { pci_driver, pci_pdo, filter_driver, identity, system_power: S0, ..Self::default() })
    }

    /// Adds a pass-through filter device object on top of the stack of
    /// `pdo` as it is now — the board's PCI PDO (before [`Pnp::add_device`]:
    /// a lower filter; after: an upper one) or a child PDO (before or after
    /// its driver's `AddDevice`) —, as a filter driver's `AddDevice` does:
    /// `IoCreateDevice` with the device type and characteristics of the
    /// device it attaches to, `IoAttachDeviceToDeviceStack`, the lower
    /// device's `DO_BUFFERED_IO`/`DO_DIRECT_IO`/`DO_POWER_PAGABLE` copied and
    /// `DO_DEVICE_INITIALIZING` cleared. The filter passes every IRP down
    /// and, on `IRP_MN_REMOVE_DEVICE`, detaches and deletes itself. It is
    /// recorded in [`Pnp::filters`] (the PCI PDO's stack) or in the child's
    /// [`Child::filters`]. Returns it.
    ///
    /// # Errors
    /// [`Stop::Host`] when the machine's frames are exhausted.
    pub fn add_filter(&mut self, sys: &mut System, pdo: u64) -> Result<u64, Stop> {
        let System { machine: m, nt, .. } = sys;
        let top = top_of_stack(m, pdo)?;
        let device_type = m.read_u32(top + device_object::DEVICE_TYPE)?;
        let characteristics = m.read_u32(top + device_object::CHARACTERISTICS)?;
        let filter = create_device(nt, m, self.filter_driver, 16, None, device_type, characteristics, false, "filter".into())?;
        let lower = attach(nt, m, filter, pdo)?;
        let ext = m.read_u64(filter + device_object::DEVICE_EXTENSION)?;
        m.write_u64(ext, lower)?;
        let inherited = do_flags::BUFFERED_IO | do_flags::DIRECT_IO | do_flags::POWER_PAGABLE;
        let lower_flags = m.read_u32(lower + device_object::FLAGS)?;
        let flags = m.read_u32(filter + device_object::FLAGS)?;
        m.write_u32(filter + device_object::FLAGS, (flags & !do_flags::DEVICE_INITIALIZING) | (lower_flags & inherited))?;
        if pdo == self.pci_pdo {
            self.filters.push(filter);
        } else if let Some(child) = self.child_mut(pdo) {
            child.filters.push(filter);
        }
        Ok(filter)
    }

    /// The function driver's `AddDevice(DriverObject, PCI PDO)` at
    /// `PASSIVE_LEVEL`; returns its status. The devices it attached must
    /// have `DO_DEVICE_INITIALIZING` cleared (0xC9 0x243).
    ///
    /// # Errors
    /// A bugcheck or host failure from the driver.
    pub fn add_device(&mut self, sys: &mut System, driver: &Driver) -> Result<u32, Stop> {
        let System { machine: m, nt, .. } = sys;
        let extension = m.read_u64(driver.driver_object + driver_object::DRIVER_EXTENSION)?;
        let add_device = m.read_u64(extension + driver_extension::ADD_DEVICE)?;
        let before = top_of_stack(m, self.pci_pdo)?;
        nt.irql = PASSIVE_LEVEL;
        let status = (m.call(nt, add_device, &[driver.driver_object, self.pci_pdo])? & 0xFFFF_FFFF) as u32;
        self.driver = Some(driver.clone());
        let top = top_of_stack(m, self.pci_pdo)?;
        if status::nt_success(status) && top != before {
            self.fdo = Some(top);
            let flags = m.read_u32(top + device_object::FLAGS)?;
            nt.io_check(m, flags & do_flags::DEVICE_INITIALIZING == 0, "DEVICE_INITIALIZING_NOT_CLEARED", 0x243, || {
                format!("AddDevice of {} left DO_DEVICE_INITIALIZING set on {top:#x}", driver.name)
            });
        }
        Ok(status)
    }

    /// `AddDevice(DriverObject, pdo)` of `driver` at `PASSIVE_LEVEL`, as for
    /// the board's PDO ([`Pnp::add_device`]) but for any PDO (a child).
    /// Returns its status and the device it attached, if any.
    ///
    /// # Errors
    /// A bugcheck or host failure from the driver.
    pub fn add_device_on(&mut self, sys: &mut System, driver: &Driver, pdo: u64) -> Result<(u32, Option<u64>), Stop> {
        add_device_on(sys, driver, pdo)
    }

    /// Sends a `major`/`minor` IRP to the top of the stack `target` is in,
    /// with `IoStatus` = (`initial`, `information`), its first location
    /// set up by `fill`, at `PASSIVE_LEVEL`; waits for it (pending work
    /// runs; an IRP never completed is the finding `IRP_NEVER_COMPLETED`
    /// and stops the run). Returns its final `IoStatus`.
    ///
    /// # Errors
    /// That stop; a bugcheck or host failure from the drivers.
    pub fn send(
        &mut self,
        sys: &mut System,
        target: u64,
        major: u8,
        minor: u8,
        information: u64,
        fill: impl FnOnce(&Machine, u64) -> Result<(), Stop>,
    ) -> Result<IrpResult, Stop> {
        let System { machine: m, nt, .. } = sys;
        let top = top_of_stack(m, target)?;
        let count = m.read_u8(top + device_object::STACK_SIZE)?;
        let irp_va = make_irp(nt, m, count, major, status::NOT_SUPPORTED, IrpOrigin::Host, "the PnP manager".into())?;
        m.write_u64(irp_va + irp::INFORMATION, information)?;
        let location = location_va(irp_va, count);
        m.write_u8(location + stack::MINOR_FUNCTION, minor)?;
        fill(m, location)?;
        nt.irql = PASSIVE_LEVEL;
        call_driver(nt, m, top, irp_va, "IoCallDriver (PnP manager)")?;
        if !nt.io.completed.contains_key(&irp_va) {
            nt.run_pending(m)?;
        }
        let Some(result) = nt.io.completed.get(&irp_va).cloned() else {
            nt.counted_violation(
                m,
                "IRP_NEVER_COMPLETED",
                if major == mj::POWER { 0x9F } else { 0xC4 },
                None,
                format!("IRP major {major:#x} minor {minor:#x} sent to {top:#x} was never completed (the system would hang)"),
            );
            return Err(Stop::Host(format!("IRP {major:#x}/{minor:#x} to {top:#x} never completed")));
        };
        self.sent.push(Sent { target, major, minor, status: result.status });
        Ok(result)
    }

    /// A PnP IRP with no parameters (`Information` 0).
    fn simple(&mut self, sys: &mut System, target: u64, minor: u8) -> Result<IrpResult, Stop> {
        self.send(sys, target, mj::PNP, minor, 0, |_, _| Ok(()))
    }

    /// `IRP_MN_START_DEVICE` with `resources` to the FDO stack, then the
    /// post-start queries (capabilities, PnP device state, bus relations)
    /// and the relations invalidated meanwhile ([`Pnp::poll`]). The
    /// resource lists are freed after the IRP (a driver must not keep
    /// pointers into them). Returns the start status.
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn start(&mut self, sys: &mut System, resources: &StartResources) -> Result<u32, Stop> {
        let (raw, translated) = {
            let System { machine: m, nt, .. } = sys;
            ke::assign_interrupts(nt, self.pci_pdo, resources.interrupts());
            (write_resource_list(nt, m, &resources.raw)?, write_resource_list(nt, m, &resources.translated)?)
        };
        let result = self.send(sys, self.pci_pdo, mj::PNP, mn::START_DEVICE, 0, |m, location| {
            m.write_u64(location + stack::ALLOCATED_RESOURCES, raw)?;
            m.write_u64(location + stack::ALLOCATED_RESOURCES_TRANSLATED, translated)
        })?;
        for list in [raw, translated].into_iter().filter(|va| *va != 0) {
            sys.machine.free_own_pages(list & !0xFFF, 1)?;
        }
        if !status::nt_success(result.status) {
            return Ok(result.status);
        }
        self.started = true;
        self.query_capabilities(sys, self.pci_pdo)?;
        self.simple(sys, self.pci_pdo, mn::QUERY_PNP_DEVICE_STATE)?;
        self.enumerate(sys)?;
        self.poll(sys)?;
        Ok(result.status)
    }

    /// Serves `IoInvalidateDeviceRelations` requests: a `BusRelations`
    /// invalidation on the PCI PDO is [`Pnp::enumerate`].
    ///
    /// # Errors
    /// As [`Pnp::enumerate`].
    pub fn poll(&mut self, sys: &mut System) -> Result<(), Stop> {
        while let Some((pdo, kind)) = (!sys.nt.io.invalidated.is_empty()).then(|| sys.nt.io.invalidated.remove(0)) {
            if pdo == self.pci_pdo && kind == device_relations::BUS_RELATIONS && self.started && !self.removed {
                self.enumerate(sys)?;
            }
        }
        Ok(())
    }

    /// `IRP_MN_QUERY_DEVICE_RELATIONS` (`BusRelations`) to the FDO stack;
    /// new children get the IRPs Windows sends a new PDO; children no
    /// longer reported get `IRP_MN_SURPRISE_REMOVAL` (when started) and
    /// `IRP_MN_REMOVE_DEVICE`. The manager keeps one reference on each
    /// child it knows (the one the bus driver took for it); the
    /// `DEVICE_RELATIONS` is freed (`ExFreePool`). Returns the PDOs reported.
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn enumerate(&mut self, sys: &mut System) -> Result<Vec<u64>, Stop> {
        let result = self.send(sys, self.pci_pdo, mj::PNP, mn::QUERY_DEVICE_RELATIONS, 0, |m, location| {
            m.write_u32(location + stack::QUERY_DEVICE_RELATIONS_TYPE, device_relations::BUS_RELATIONS)
        })?;
        if !status::nt_success(result.status) || result.information == 0 {
            return Ok(Vec::new());
        }
        let reported = read_relations(sys, result.information)?;
        let mut new = Vec::new();
        for &pdo in &reported {
            let is_pdo = sys.nt.io.devices.get(&pdo).is_some_and(|d| !d.deleted && d.lower.is_none());
            let m = &sys.machine;
            sys.nt.io_check(m, is_pdo, "RELATION_NOT_A_PDO", 0x248, || format!("BusRelations reported {pdo:#x}, not a PDO"));
            if self.children.iter().any(|c| c.pdo == pdo && !c.removed) {
                // Known: the manager already holds its reference.
                dereference(&mut sys.nt, &mut sys.machine, pdo)?;
            } else {
                new.push(pdo);
            }
        }
        for pdo in new {
            self.children.push(Child { pdo, ..Child::default() });
            self.init_child(sys, pdo)?;
        }
        let gone: Vec<u64> = self.children.iter().filter(|c| !c.removed && !reported.contains(&c.pdo)).map(|c| c.pdo).collect();
        for pdo in gone {
            if self.child(pdo).is_some_and(|c| c.start_status.is_some_and(status::nt_success)) {
                self.simple(sys, pdo, mn::SURPRISE_REMOVAL)?;
            }
            self.remove_child(sys, pdo)?;
        }
        Ok(reported)
    }

    /// The child record of `pdo`.
    #[must_use]
    pub fn child(&self, pdo: u64) -> Option<&Child> {
        self.children.iter().find(|c| c.pdo == pdo)
    }

    fn child_mut(&mut self, pdo: u64) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.pdo == pdo)
    }

    /// The IRPs Windows sends a new PDO, and its start.
    fn init_child(&mut self, sys: &mut System, pdo: u64) -> Result<(), Stop> {
        self.simple(sys, pdo, mn::DEVICE_ENUMERATED)?;
        let mut ids = Vec::new();
        for id_type in QUERY_IDS {
            let r = self.send(sys, pdo, mj::PNP, mn::QUERY_ID, 0, |m, l| m.write_u32(l + stack::QUERY_ID_TYPE, id_type))?;
            let text = if status::nt_success(r.status) && r.information != 0 { take_multi_sz(sys, r.information)? } else { Vec::new() };
            if id_type == 0 {
                // A PDO must handle BusQueryDeviceID: success with an ID. A
                // PDO that handled it and failed (no memory for the string,
                // under low resources) is not a violation: the PnP manager
                // gives the device up. Unhandled (STATUS_NOT_SUPPORTED, the
                // status left as sent) or success without an ID is.
                let handled_and_failed = !status::nt_success(r.status) && r.status != status::NOT_SUPPORTED;
                let m = &sys.machine;
                let ok = handled_and_failed || (status::nt_success(r.status) && !text.is_empty());
                sys.nt.io_check(m, ok, "PDO_NO_DEVICE_ID", 0x22A, || {
                    format!("child PDO {pdo:#x} did not answer IRP_MN_QUERY_ID(BusQueryDeviceID): {:#x}", r.status)
                });
                if handled_and_failed {
                    // Enumeration of this child fails: no further IRPs, no
                    // start; the device is removed with its parent.
                    if let Some(child) = self.child_mut(pdo) {
                        child.start_status = Some(r.status);
                    }
                    return Ok(());
                }
            }
            ids.push(text);
        }
        let caps = self.query_capabilities(sys, pdo)?;
        let mut texts = Vec::new();
        for text_type in [0u32, 1] {
            let r = self.send(sys, pdo, mj::PNP, mn::QUERY_DEVICE_TEXT, 0, |m, l| {
                m.write_u32(l + stack::DEVICE_TEXT_TYPE, text_type)?;
                m.write_u32(l + stack::DEVICE_TEXT_LOCALE, 0x409)
            })?;
            let text = if status::nt_success(r.status) && r.information != 0 { take_multi_sz(sys, r.information)? } else { Vec::new() };
            texts.push(text.into_iter().next().unwrap_or_default());
        }
        let r = self.simple(sys, pdo, mn::QUERY_BUS_INFORMATION)?;
        let bus_information = if status::nt_success(r.status) && r.information != 0 {
            let m = &sys.machine;
            let mut guid = [0u8; 16];
            m.read(r.information + pnp_bus_information::BUS_TYPE_GUID, &mut guid)?;
            let legacy = m.read_u32(r.information + pnp_bus_information::LEGACY_BUS_TYPE)?;
            let number = m.read_u32(r.information + pnp_bus_information::BUS_NUMBER)?;
            free_pool(sys, r.information)?;
            Some((guid, legacy, number))
        } else {
            None
        };
        for minor in [mn::QUERY_RESOURCES, mn::QUERY_RESOURCE_REQUIREMENTS] {
            let r = self.simple(sys, pdo, minor)?;
            if status::nt_success(r.status) && r.information != 0 {
                free_pool(sys, r.information)?;
            }
        }
        for _ in 0..self.child_lower_filters {
            self.add_filter(sys, pdo)?;
        }
        if let Some(driver) = self.child_driver.clone() {
            let (status, fdo) = add_device_on(sys, &driver, pdo)?;
            if let Some(child) = self.child_mut(pdo) {
                child.fdo = fdo;
            }
            if !status::nt_success(status) {
                // The device has no function driver: not started (Device Manager's code 31).
                if let Some(child) = self.child_mut(pdo) {
                    child.start_status = Some(status);
                }
                return Ok(());
            }
            for _ in 0..self.child_upper_filters {
                self.add_filter(sys, pdo)?;
            }
        }
        let start = self.simple(sys, pdo, mn::START_DEVICE)?;
        if let Some(child) = self.child_mut(pdo) {
            let mut ids = ids.into_iter();
            child.device_id = ids.next().and_then(|v| v.into_iter().next()).unwrap_or_default();
            child.hardware_ids = ids.next().unwrap_or_default();
            child.compatible_ids = ids.next().unwrap_or_default();
            child.instance_id = ids.next().and_then(|v| v.into_iter().next()).unwrap_or_default();
            child.capabilities = caps.unwrap_or_default();
            let mut texts = texts.into_iter();
            child.description = texts.next().unwrap_or_default();
            child.location = texts.next().unwrap_or_default();
            child.bus_information = bus_information;
            child.start_status = Some(start.status);
        }
        if status::nt_success(start.status) {
            self.query_capabilities(sys, pdo)?;
            self.simple(sys, pdo, mn::QUERY_PNP_DEVICE_STATE)?;
            let r = self.send(sys, pdo, mj::PNP, mn::QUERY_DEVICE_RELATIONS, 0, |m, l| {
                m.write_u32(l + stack::QUERY_DEVICE_RELATIONS_TYPE, device_relations::BUS_RELATIONS)
            })?;
            if status::nt_success(r.status) && r.information != 0 {
                for grandchild in read_relations(sys, r.information)? {
                    dereference(&mut sys.nt, &mut sys.machine, grandchild)?;
                }
            }
        }
        Ok(())
    }

    /// `IRP_MN_QUERY_CAPABILITIES` to `target`'s stack with a
    /// `DEVICE_CAPABILITIES` set up as Windows does (`Size`, `Version` 1,
    /// `Address` and `UINumber` −1); the answer, when it succeeded. A
    /// successful answer's `Address` is recorded for the PDO `target`
    /// (what `IoGetDeviceProperty(DevicePropertyAddress)` returns).
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn query_capabilities(&mut self, sys: &mut System, target: u64) -> Result<Option<Capabilities>, Stop> {
        let caps = sys.nt.alloc_kernel(&mut sys.machine, device_capabilities::SIZE)?;
        let m = &sys.machine;
        m.write_u16(caps + device_capabilities::SIZE_FIELD, device_capabilities::SIZE as u16)?;
        m.write_u16(caps + device_capabilities::VERSION, 1)?;
        m.write_u32(caps + device_capabilities::ADDRESS, u32::MAX)?;
        m.write_u32(caps + device_capabilities::UI_NUMBER, u32::MAX)?;
        let r = self.send(sys, target, mj::PNP, mn::QUERY_CAPABILITIES, 0, |m, l| m.write_u64(l + stack::CAPABILITIES, caps))?;
        let m = &sys.machine;
        let out = if status::nt_success(r.status) {
            let mut device_state = [0u32; 7];
            for (i, s) in device_state.iter_mut().enumerate() {
                *s = m.read_u32(caps + device_capabilities::DEVICE_STATE + 4 * i as u64)?;
            }
            Some(Capabilities {
                flags: m.read_u32(caps + device_capabilities::FLAGS)?,
                address: m.read_u32(caps + device_capabilities::ADDRESS)?,
                ui_number: m.read_u32(caps + device_capabilities::UI_NUMBER)?,
                device_state,
                system_wake: m.read_u32(caps + device_capabilities::SYSTEM_WAKE)?,
                device_wake: m.read_u32(caps + device_capabilities::DEVICE_WAKE)?,
            })
        } else {
            None
        };
        if let Some(caps) = &out {
            record_capabilities(&mut sys.nt, target, caps.address);
        }
        if self.children.iter().any(|c| c.pdo == target) {
            sys.nt.io_check(m, r.status != status::NOT_SUPPORTED, "PDO_NO_CAPABILITIES", 0x22A, || {
                format!("child PDO {target:#x} did not answer IRP_MN_QUERY_CAPABILITIES")
            });
        }
        sys.machine.free_own_pages(caps, 1)?;
        Ok(out)
    }

    /// `IRP_MN_QUERY_INTERFACE` for `guid` (`size` bytes, `version`) to the
    /// stack of `target`, into a fresh kernel buffer of `size` bytes;
    /// returns (status, the buffer's address). The caller dereferences the
    /// interface through its `InterfaceDereference` when done.
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn query_interface(&mut self, sys: &mut System, target: u64, guid: &Guid, size: u16, version: u16) -> Result<(u32, u64), Stop> {
        let buffer = sys.nt.alloc_kernel(&mut sys.machine, u64::from(size) + 16)?;
        let guid_va = buffer + u64::from(size).div_ceil(8) * 8;
        sys.machine.write(guid_va, &guid_bytes(guid))?;
        let r = self.send(sys, target, mj::PNP, mn::QUERY_INTERFACE, 0, |m, l| {
            m.write_u64(l + stack::QUERY_INTERFACE_TYPE, guid_va)?;
            m.write_u16(l + stack::QUERY_INTERFACE_SIZE, size)?;
            m.write_u16(l + stack::QUERY_INTERFACE_VERSION, version)?;
            m.write_u64(l + stack::QUERY_INTERFACE_INTERFACE, buffer)?;
            m.write_u64(l + stack::QUERY_INTERFACE_SPECIFIC_DATA, 0)
        })?;
        Ok((r.status, buffer))
    }

    /// Query-remove then remove, in Windows' order: `IRP_MN_QUERY_REMOVE_DEVICE`
    /// to each child stack, then the FDO stack; if one fails — or, once all
    /// succeeded, a stack has open handles ([`Pnp::open_handles`]: the
    /// veto comes after the query went down every stack, so lower drivers
    /// see both the query and the cancel) —
    /// `IRP_MN_CANCEL_REMOVE_DEVICE` to every stack queried (the failing one
    /// too), in reverse, and the failing status (`STATUS_DEVICE_BUSY` for
    /// handles) is returned; else
    /// `IRP_MN_REMOVE_DEVICE` to each child, then the FDO stack, and the
    /// manager's references on the children are dropped. After a surprise
    /// removal the queries are skipped. Returns `STATUS_SUCCESS` or the veto.
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn remove(&mut self, sys: &mut System) -> Result<u32, Stop> {
        let children: Vec<u64> = self.children.iter().filter(|c| !c.removed).map(|c| c.pdo).collect();
        if !self.surprise_removed {
            let mut queried = Vec::new();
            let mut veto = None;
            let pci_pdo = self.pci_pdo;
            for &target in children.iter().chain(std::iter::once(&pci_pdo)) {
                queried.push(target);
                let r = self.simple(sys, target, mn::QUERY_REMOVE_DEVICE)?;
                if !status::nt_success(r.status) {
                    veto = Some(r.status);
                    break;
                }
            }
            let handles = |q: &u64| self.open_handles.contains(q) || super::ks::handles_open_on(&sys.nt, *q) > 0;
            if veto.is_none() && queried.iter().any(handles) {
                veto = Some(STATUS_DEVICE_BUSY);
            }
            if let Some(veto) = veto {
                for &target in queried.iter().rev() {
                    self.simple(sys, target, mn::CANCEL_REMOVE_DEVICE)?;
                }
                return Ok(veto);
            }
        }
        for pdo in children {
            self.remove_child(sys, pdo)?;
        }
        self.simple(sys, self.pci_pdo, mn::REMOVE_DEVICE)?;
        self.removed = true;
        self.started = false;
        self.fdo = None;
        Ok(status::SUCCESS)
    }

    /// `IRP_MN_REMOVE_DEVICE` to a child and the manager's reference on it dropped.
    fn remove_child(&mut self, sys: &mut System, pdo: u64) -> Result<(), Stop> {
        self.simple(sys, pdo, mn::REMOVE_DEVICE)?;
        if let Some(c) = self.child_mut(pdo) {
            c.removed = true;
        }
        dereference(&mut sys.nt, &mut sys.machine, pdo)?;
        Ok(())
    }

    /// Surprise removal (the board is gone): `IRP_MN_SURPRISE_REMOVAL` down
    /// every child stack, then the FDO stack. [`Pnp::remove`] follows.
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn surprise_remove(&mut self, sys: &mut System) -> Result<(), Stop> {
        let children: Vec<u64> = self.children.iter().filter(|c| !c.removed).map(|c| c.pdo).collect();
        for pdo in children {
            self.simple(sys, pdo, mn::SURPRISE_REMOVAL)?;
            if let Some(c) = self.child_mut(pdo) {
                c.surprise_removed = true;
            }
        }
        self.simple(sys, self.pci_pdo, mn::SURPRISE_REMOVAL)?;
        self.surprise_removed = true;
        Ok(())
    }

    /// `IRP_MN_QUERY_STOP_DEVICE` then (when it succeeded)
    /// `IRP_MN_STOP_DEVICE`, or `IRP_MN_CANCEL_STOP_DEVICE` after a veto,
    /// to the FDO stack (a resource rebalance). Returns the query's status.
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn stop(&mut self, sys: &mut System) -> Result<u32, Stop> {
        let r = self.simple(sys, self.pci_pdo, mn::QUERY_STOP_DEVICE)?;
        if !status::nt_success(r.status) {
            self.simple(sys, self.pci_pdo, mn::CANCEL_STOP_DEVICE)?;
            return Ok(r.status);
        }
        self.simple(sys, self.pci_pdo, mn::STOP_DEVICE)?;
        self.started = false;
        Ok(r.status)
    }

    /// A system power transition to `state` (`S0`, `S3`, …): for sleep,
    /// `IRP_MN_QUERY_POWER` then `IRP_MN_SET_POWER` (`SystemPowerState`) to
    /// each child stack, then the FDO stack; on wake, `IRP_MN_SET_POWER` to
    /// the FDO stack first, then the children. The power policy owner turns
    /// them into device power IRPs (`PoRequestPowerIrp`). Returns the first
    /// failing query's status (then nothing is set), or success.
    ///
    /// # Errors
    /// A bugcheck or host failure from the drivers.
    pub fn set_system_power(&mut self, sys: &mut System, state: u32) -> Result<u32, Stop> {
        let children: Vec<u64> = self.children.iter().filter(|c| !c.removed).map(|c| c.pdo).collect();
        let sleeping = state != S0;
        let order: Vec<u64> =
            if sleeping { children.iter().copied().chain([self.pci_pdo]).collect() } else { std::iter::once(self.pci_pdo).chain(children).collect() };
        let action = if sleeping { POWER_ACTION_SLEEP } else { 0 };
        let power = |minor: u8| {
            move |m: &Machine, l: u64| {
                let _ = minor;
                m.write_u32(l + stack::POWER_TYPE, 0)?;
                m.write_u32(l + stack::POWER_STATE, state)?;
                m.write_u32(l + stack::POWER_SHUTDOWN_TYPE, action)
            }
        };
        if sleeping {
            for &target in &order {
                let r = self.send(sys, target, mj::POWER, mn::QUERY_POWER, 0, power(mn::QUERY_POWER))?;
                if !status::nt_success(r.status) {
                    return Ok(r.status);
                }
            }
        }
        for &target in &order {
            self.send(sys, target, mj::POWER, mn::SET_POWER, 0, power(mn::SET_POWER))?;
        }
        self.system_power = state;
        Ok(status::SUCCESS)
    }

    /// `DriverUnload` of the function driver at `PASSIVE_LEVEL`, which
    /// Windows calls only once all its device objects are deleted (a driver
    /// object with devices left is the finding `UNLOAD_WITH_DEVICES` and
    /// `DriverUnload` is not called); then the image is gone, and what
    /// still points into it is a finding ([`ke::check_unload`]: DPCs,
    /// timers, interrupts; [`super::etw::check_unload`]: ETW providers).
    ///
    /// # Errors
    /// A bugcheck or host failure from the driver.
    pub fn unload(&mut self, sys: &mut System) -> Result<(), Stop> {
        let Some(driver) = self.driver.clone() else { return Ok(()) };
        let System { machine: m, nt, .. } = sys;
        let devices = m.read_u64(driver.driver_object + driver_object::DEVICE_OBJECT)?;
        nt.verifier.checks += 1;
        if devices != 0 {
            nt.violation(m, "UNLOAD_WITH_DEVICES", 0xCE, None, format!("{} still has device object {devices:#x} at unload", driver.name));
            return Ok(());
        }
        let unload = m.read_u64(driver.driver_object + driver_object::DRIVER_UNLOAD)?;
        if unload != 0 {
            nt.irql = PASSIVE_LEVEL;
            m.call(nt, unload, &[driver.driver_object])?;
        }
        // The image's code and data go now: whatever still points into them
        // (a queued or unflushed DPC, a set timer, a connected ISR, an ETW
        // provider) is what Verifier stops for at unload.
        let start = m.read_u64(driver.driver_object + driver_object::DRIVER_START)?;
        let size = u64::from(m.read_u32(driver.driver_object + driver_object::DRIVER_SIZE)?);
        ke::check_unload(nt, m, start, size);
        super::etw::check_unload(nt, m, &driver.name);
        Ok(())
    }

    /// The end-of-run checks: everything [`super::io::IoState::leaks`]
    /// lists (device objects not deleted — the emulated PCI PDO and filters
    /// excepted, they are the host's —, references, remove locks, handles,
    /// IRPs, interface references) as `LEAKED_AT_UNLOAD` (bug check 0xCE),
    /// and every pool block still allocated as `POOL_LEAKED_AT_UNLOAD` (0xC4,
    /// parameter 0x62). Returns the list.
    pub fn end_of_run(&mut self, sys: &mut System) -> Vec<String> {
        let System { machine: m, nt, .. } = sys;
        let own: Vec<u64> = std::iter::once(self.pci_pdo).chain(self.filters.iter().copied()).collect();
        let mut leaks: Vec<String> = nt.io.leaks().into_iter().filter(|l| !own.iter().any(|d| l.starts_with(&format!("device object {d:#x} ")))).collect();
        leaks.extend(nt.pool.live.iter().map(|(va, b)| format!("pool block {va:#x} ({} bytes, '{}') from {}", b.bytes, super::pool::tag_text(b.tag), b.caller)));
        for leak in &leaks {
            let (rule, code, p1) = if leak.starts_with("pool") { ("POOL_LEAKED_AT_UNLOAD", 0xC4, Some(0x62)) } else { ("LEAKED_AT_UNLOAD", 0xCE, None) };
            nt.counted_violation(m, rule, code, p1, leak.clone());
        }
        leaks
    }

    /// Tears down what the host made (filters above the PCI PDO, the PCI PDO)
    /// after the function driver's stack is removed.
    ///
    /// # Errors
    /// [`Stop::Host`] when freeing pages fails.
    pub fn delete_own_devices(&mut self, sys: &mut System) -> Result<(), Stop> {
        let System { machine: m, nt, .. } = sys;
        for &d in self.filters.iter().chain(std::iter::once(&self.pci_pdo)) {
            if nt.io.devices.get(&d).is_some_and(|r| !r.deleted) {
                if let Some(lower) = nt.io.devices.get(&d).and_then(|r| r.lower) {
                    detach(nt, m, lower)?;
                }
                delete_device(nt, m, d)?;
            }
        }
        Ok(())
    }
}

/// `AddDevice(DriverObject, pdo)` of `driver` at `PASSIVE_LEVEL`; the device
/// it attached must have `DO_DEVICE_INITIALIZING` cleared (0xC9 0x243).
/// Returns the status and the new top of the stack, if it changed.
fn add_device_on(sys: &mut System, driver: &Driver, pdo: u64) -> Result<(u32, Option<u64>), Stop> {
    let System { machine: m, nt, .. } = sys;
    let extension = m.read_u64(driver.driver_object + driver_object::DRIVER_EXTENSION)?;
    let add_device = m.read_u64(extension + driver_extension::ADD_DEVICE)?;
    let before = top_of_stack(m, pdo)?;
    nt.irql = PASSIVE_LEVEL;
    let status = (m.call(nt, add_device, &[driver.driver_object, pdo])? & 0xFFFF_FFFF) as u32;
    let top = top_of_stack(m, pdo)?;
    if status::nt_success(status) && top != before {
        let flags = m.read_u32(top + device_object::FLAGS)?;
        nt.io_check(m, flags & do_flags::DEVICE_INITIALIZING == 0, "DEVICE_INITIALIZING_NOT_CLEARED", 0x243, || {
            format!("AddDevice of {} left DO_DEVICE_INITIALIZING set on {top:#x}", driver.name)
        });
        return Ok((status, Some(top)));
    }
    Ok((status, None))
}

/// Reads a `DEVICE_RELATIONS` and frees it.
fn read_relations(sys: &mut System, va: u64) -> Result<Vec<u64>, Stop> {
    let m = &sys.machine;
    let count = m.read_u32(va + device_relations::COUNT)?;
    let mut out = Vec::new();
    for i in 0..u64::from(count.min(256)) {
        out.push(m.read_u64(va + device_relations::OBJECTS + 8 * i)?);
    }
    free_pool(sys, va)?;
    Ok(out)
}

/// Reads a `REG_MULTI_SZ`-style (or single) UTF-16 string list and frees its pool buffer.
fn take_multi_sz(sys: &mut System, va: u64) -> Result<Vec<String>, Stop> {
    let m = &sys.machine;
    let mut out = Vec::new();
    let mut current = Vec::new();
    for i in 0..4096u64 {
        let unit = m.read_u16(va + 2 * i)?;
        if unit == 0 {
            if current.is_empty() {
                break;
            }
            out.push(String::from_utf16_lossy(&current));
            current.clear();
            // A single string ends at its NUL: stop unless another follows.
            if m.read_u16(va + 2 * i + 2).unwrap_or(0) == 0 {
                break;
            }
        } else {
            current.push(unit);
        }
    }
    free_pool(sys, va)?;
    Ok(out)
}

/// `ExFreePool(va)`, as the PnP manager frees what drivers hand it.
fn free_pool(sys: &mut System, va: u64) -> Result<(), Stop> {
    let System { machine: m, nt, .. } = sys;
    let stub = nt.resolve(m, "ntoskrnl.exe", "ExFreePool").ok_or_else(|| Stop::Host("ExFreePool missing".into()))?;
    m.call(nt, stub, &[va])?;
    Ok(())
}

/// A host `DRIVER_OBJECT` whose every major function is `dispatch`.
fn host_driver(nt: &mut Nt, m: &mut Machine, name: &str, dispatch: super::HostFn) -> Result<u64, Stop> {
    let d = nt.alloc_kernel(m, driver_object::SIZE + driver_extension::SIZE)?;
    m.write_u16(d + driver_object::TYPE, 4)?;
    m.write_u64(d + driver_object::DRIVER_EXTENSION, d + driver_object::SIZE)?;
    m.write_u64(d + driver_object::SIZE + driver_extension::DRIVER_OBJECT, d)?;
    let va = nt.host_function(m, &format!("{name}!Dispatch"), dispatch, 0, DISPATCH_LEVEL)?;
    for major in 0..=u64::from(mj::MAXIMUM_FUNCTION) {
        m.write_u64(d + driver_object::MAJOR_FUNCTION + 8 * major, va)?;
    }
    Ok(d)
}

/// Completes `irp_va` with `status_value` (and `information` when given).
fn complete(nt: &mut Nt, m: &mut Machine, irp_va: u64, status_value: u32, information: Option<u64>) -> Result<u64, Stop> {
    m.write_u32(irp_va + irp::STATUS, status_value)?;
    if let Some(information) = information {
        m.write_u64(irp_va + irp::INFORMATION, information)?;
    }
    complete_request(nt, m, irp_va)?;
    Ok(u64::from(status_value))
}

/// Pool memory for an answer the PnP manager frees (`ExAllocatePool2` through its stub).
fn answer_pool(nt: &mut Nt, m: &mut Machine, bytes: u64) -> Result<u64, Stop> {
    let stub = nt.resolve(m, "ntoskrnl.exe", "ExAllocatePool2").ok_or_else(|| Stop::Host("ExAllocatePool2 missing".into()))?;
    m.call(nt, stub, &[super::pool::POOL_FLAG_PAGED, bytes, u64::from(u32::from_le_bytes(*b"PciA"))])
}

/// UTF-16 strings, each NUL-terminated, plus a final NUL when `multi`, in pool.
fn answer_strings(nt: &mut Nt, m: &mut Machine, strings: &[String], multi: bool) -> Result<u64, Stop> {
    let mut units: Vec<u16> = Vec::new();
    for s in strings {
        units.extend(s.encode_utf16());
        units.push(0);
    }
    if multi {
        units.push(0);
    }
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    let va = answer_pool(nt, m, bytes.len() as u64)?;
    if va != 0 {
        m.write(va, &bytes)?;
    }
    Ok(va)
}

/// The emulated PCI bus driver's dispatch routine (its PDO is the only device it has).
#[allow(clippy::too_many_lines, reason = "one arm per IRP a PCI PDO answers")]
fn pci_dispatch(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [device, irp_va] = m.args::<2>()?;
    let location = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
    let major = m.read_u8(location + stack::MAJOR_FUNCTION)?;
    let minor = m.read_u8(location + stack::MINOR_FUNCTION)?;
    let ext = m.read_u64(device + device_object::DEVICE_EXTENSION)?;
    let untouched = m.read_u32(irp_va + irp::STATUS)?;
    if major == mj::POWER {
        return match minor {
            mn::SET_POWER | mn::QUERY_POWER => complete(nt, m, irp_va, status::SUCCESS, None),
            _ => complete(nt, m, irp_va, untouched, None),
        };
    }
    if major != mj::PNP {
        return complete(nt, m, irp_va, untouched, None);
    }
    let (vendor, dev_id, subsys, rev, slot) =
        (m.read_u16(ext)?, m.read_u16(ext + 2)?, m.read_u32(ext + 4)?, m.read_u8(ext + 8)?, m.read_u32(ext + 12)?);
    match minor {
        mn::START_DEVICE if nt.io.pend_pci_start => {
            // IoMarkIrpPending, STATUS_PENDING; completed with success when
            // pending work next runs (the driver's wait lets it).
            let control = m.read_u8(location + stack::CONTROL)?;
            m.write_u8(location + stack::CONTROL, control | sl::PENDING_RETURNED)?;
            nt.io.deferred.push((irp_va, status::SUCCESS));
            Ok(u64::from(status::PENDING))
        }
        mn::START_DEVICE
        | mn::QUERY_STOP_DEVICE
        | mn::CANCEL_STOP_DEVICE
        | mn::STOP_DEVICE
        | mn::QUERY_REMOVE_DEVICE
        | mn::CANCEL_REMOVE_DEVICE
        | mn::SURPRISE_REMOVAL
        | mn::REMOVE_DEVICE
        | mn::DEVICE_USAGE_NOTIFICATION => complete(nt, m, irp_va, status::SUCCESS, None),
        mn::QUERY_CAPABILITIES => {
            let caps = m.read_u64(location + stack::CAPABILITIES)?;
            m.write_u32(caps + device_capabilities::ADDRESS, slot << 16)?;
            m.write_u32(caps + device_capabilities::UI_NUMBER, slot)?;
            // S0 → D0; S1..S5 → D3; unspecified stays.
            for s in 1..7u64 {
                m.write_u32(caps + device_capabilities::DEVICE_STATE + 4 * s, if s == 1 { 1 } else { 4 })?;
            }
            complete(nt, m, irp_va, status::SUCCESS, None)
        }
        mn::QUERY_ID => {
            let id_type = m.read_u32(location + stack::QUERY_ID_TYPE)?;
            let base = format!("PCI\\VEN_{vendor:04X}&DEV_{dev_id:04X}");
            let (strings, multi) = match id_type {
                0 => (vec![format!("{base}&SUBSYS_{subsys:08X}&REV_{rev:02X}")], false),
                1 => (vec![format!("{base}&SUBSYS_{subsys:08X}&REV_{rev:02X}"), format!("{base}&SUBSYS_{subsys:08X}"), base.clone()], true),
                2 => (vec![format!("{base}&REV_{rev:02X}"), base.clone(), "PCI\\CC_040000".into()], true),
                3 => (vec![format!("{slot:X}&0&{:X}", slot << 3)], false),
                _ => return complete(nt, m, irp_va, untouched, None),
            };
            let va = answer_strings(nt, m, &strings, multi)?;
            if va == 0 {
                return complete(nt, m, irp_va, status::INSUFFICIENT_RESOURCES, Some(0));
            }
            complete(nt, m, irp_va, status::SUCCESS, Some(va))
        }
        mn::QUERY_DEVICE_TEXT => {
            let kind = m.read_u32(location + stack::DEVICE_TEXT_TYPE)?;
            let text = if kind == 0 { "PCI Multimedia Video Device".to_owned() } else { format!("PCI bus 0, device {slot}, function 0") };
            let va = answer_strings(nt, m, &[text], false)?;
            complete(nt, m, irp_va, status::SUCCESS, Some(va))
        }
        mn::QUERY_BUS_INFORMATION => {
            let va = answer_pool(nt, m, pnp_bus_information::SIZE)?;
            m.write(va + pnp_bus_information::BUS_TYPE_GUID, &guid_bytes(&GUID_BUS_TYPE_PCI))?;
            m.write_u32(va + pnp_bus_information::LEGACY_BUS_TYPE, cm::PCI_BUS)?;
            m.write_u32(va + pnp_bus_information::BUS_NUMBER, 0)?;
            complete(nt, m, irp_va, status::SUCCESS, Some(va))
        }
        mn::QUERY_DEVICE_RELATIONS if m.read_u32(location + stack::QUERY_DEVICE_RELATIONS_TYPE)? == device_relations::TARGET_DEVICE_RELATION => {
            let va = answer_pool(nt, m, 16)?;
            m.write_u32(va + device_relations::COUNT, 1)?;
            m.write_u64(va + device_relations::OBJECTS, device)?;
            reference(nt, device);
            complete(nt, m, irp_va, status::SUCCESS, Some(va))
        }
        mn::QUERY_INTERFACE => {
            let guid_va = m.read_u64(location + stack::QUERY_INTERFACE_TYPE)?;
            let mut guid = [0u8; 16];
            m.read(guid_va, &mut guid)?;
            let size = u64::from(m.read_u16(location + stack::QUERY_INTERFACE_SIZE)?);
            let version = m.read_u16(location + stack::QUERY_INTERFACE_VERSION)?;
            let out = m.read_u64(location + stack::QUERY_INTERFACE_INTERFACE)?;
            if guid != guid_bytes(&GUID_BUS_INTERFACE_STANDARD) {
                return complete(nt, m, irp_va, untouched, None);
            }
            if size < bus_interface_standard::SIZE || version < bus_interface_standard::VERSION {
                return complete(nt, m, irp_va, status::INVALID_PARAMETER, None);
            }
            m.write_u16(out + interface::SIZE_FIELD, bus_interface_standard::SIZE as u16)?;
            m.write_u16(out + interface::VERSION, bus_interface_standard::VERSION)?;
            m.write_u64(out + interface::CONTEXT, device)?;
            let fields = [
                interface::INTERFACE_REFERENCE,
                interface::INTERFACE_DEREFERENCE,
                bus_interface_standard::TRANSLATE_BUS_ADDRESS,
                bus_interface_standard::GET_DMA_ADAPTER,
                bus_interface_standard::SET_BUS_DATA,
                bus_interface_standard::GET_BUS_DATA,
            ];
            for (i, field) in fields.into_iter().enumerate() {
                m.write_u64(out + field, m.read_u64(ext + 16 + 8 * i as u64)?)?;
            }
            // Handed out referenced, as the interface contract requires.
            *nt.io.interface_references.entry(device).or_insert(0) += 1;
            complete(nt, m, irp_va, status::SUCCESS, None)
        }
        _ => complete(nt, m, irp_va, untouched, None),
    }
}

/// A pass-through filter: every IRP skipped down to the device below; on
/// `IRP_MN_REMOVE_DEVICE` it detaches and deletes itself after passing it down.
fn filter_dispatch(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [device, irp_va] = m.args::<2>()?;
    let location = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
    let major = m.read_u8(location + stack::MAJOR_FUNCTION)?;
    let minor = m.read_u8(location + stack::MINOR_FUNCTION)?;
    let lower = m.read_u64(m.read_u64(device + device_object::DEVICE_EXTENSION)?)?;
    let current = m.read_u8(irp_va + irp::CURRENT_LOCATION)?;
    m.write_u8(irp_va + irp::CURRENT_LOCATION, current + 1)?;
    m.write_u64(irp_va + irp::CURRENT_STACK_LOCATION, location + stack::SIZE)?;
    let result = call_driver(nt, m, lower, irp_va, "IofCallDriver (filter)")?;
    if major == mj::PNP && minor == mn::REMOVE_DEVICE {
        detach(nt, m, lower)?;
        delete_device(nt, m, device)?;
    }
    Ok(u64::from(result))
}

/// `INTERFACE.InterfaceReference(Context)`.
fn interface_reference(nt: &mut Nt, _m: &mut Machine, context: u64) -> Result<u64, Stop> {
    *nt.io.interface_references.entry(context).or_insert(0) += 1;
    Ok(0)
}

/// `INTERFACE.InterfaceDereference(Context)`: one reference fewer; more
/// dereferences than references is a finding.
fn interface_dereference(nt: &mut Nt, m: &mut Machine, context: u64) -> Result<u64, Stop> {
    let n = nt.io.interface_references.entry(context).or_insert(0);
    *n -= 1;
    let ok = *n >= 0;
    nt.verifier.checks += 1;
    if !ok {
        nt.violation(m, "INTERFACE_DEREFERENCED_TOO_OFTEN", 0xC4, None, format!("InterfaceDereference({context:#x}) without a reference"));
    }
    Ok(0)
}

/// `TranslateBusAddress(Context, BusAddress, Length, AddressSpace, TranslatedAddress)`:
/// memory space maps one to one on this machine; returns TRUE.
fn translate_bus_address(_nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [_ctx, bus_address, _length, address_space, translated] = m.args::<5>()?;
    if address_space != 0 {
        m.write_u32(address_space, 0)?;
    }
    m.write_u64(translated, bus_address)?;
    Ok(1)
}

/// `GetDmaAdapter(Context, DeviceDescription, NumberOfMapRegisters)`:
/// `IoGetDmaAdapter` on the PCI PDO when the kernel implements it, else NULL.
fn get_dma_adapter(nt: &mut Nt, m: &mut Machine, context: u64) -> Result<u64, Stop> {
    let [_ctx, description, map_registers] = m.args::<3>()?;
    match nt.resolve(m, "ntoskrnl.exe", "IoGetDmaAdapter") {
        Some(stub) => m.call(nt, stub, &[context, description, map_registers]),
        None => Ok(0),
    }
}

/// `GetBusData`/`SetBusData(Context, DataType, Buffer, Offset, Length)`:
/// no configuration space is modelled: 0 bytes transferred.
fn get_set_bus_data(_nt: &mut Nt, _m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    Ok(0)
}
