//! Device objects, their attachment chains, and `IoCallDriver` of the Plug
//! and Play IRPs the simulation needs.
use std::cell::RefCell;
use std::ffi::c_void;
use std::rc::Rc;

use capdma_bus::device::BusDevice;
use capdma_bus::pnp::route::{route_child_query_interface, ChildInterfaceRoute};
use capdma_bus::ports::DeviceDescription;
use capdma_interface::guid::{Guid, GUID_BUS_INTERFACE_STANDARD};
use capdma_interface::status::{nt_success, NtStatus, STATUS_NOT_SUPPORTED, STATUS_SUCCESS};
use capdma_interface::table::CapdmaBusInterface;

use super::avstream::AvStreamDevice;
use super::pci::{BusInterfaceStandard, PciFunction};
use crate::dma::adapter::SimDmaAdapter;
use crate::irql::IrqlTracker;
use crate::machine::platform::SimBusPlatform;
use crate::violations::{ViolationKind, Violations};

/// A device object of the tree (an index; never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// What a filter driver does with the IRPs it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FilterKind {
    /// Passes every IRP down untouched (`IoSkipCurrentIrpStackLocation` +
    /// `IoCallDriver`), as a well-behaved filter does.
    PassThrough,
    /// Passes down `IRP_MN_QUERY_INTERFACE` only for the interface types it
    /// knows (`GUID_BUS_INTERFACE_STANDARD`) and completes every other one
    /// with `STATUS_NOT_SUPPORTED` instead of passing it down (a filter bug
    /// seen in the field); other IRPs pass down.
    FailsUnknownQueryInterface,
}

impl FilterKind {
    /// Short name for reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PassThrough => "pass-through",
            Self::FailsUnknownQueryInterface => "fails-unknown-query-interface",
        }
    }
}

/// Which driver owns a device object.
#[derive(Clone)]
pub enum DeviceKind {
    /// The PDO pci.sys made for a card's PCI function.
    PciPdo(PciFunction),
    /// `capdma_bus.sys`'s FDO over a PCI PDO.
    BusFdo(Rc<BusDevice<SimBusPlatform>>),
    /// A child PDO `capdma_bus.sys` enumerated for `channel`; `parent_fdo` is the bus FDO.
    ChildPdo {
        /// The bus core that answers the capdma interface.
        bus: Rc<BusDevice<SimBusPlatform>>,
        /// The channel the child stands for.
        channel: u32,
        /// The bus FDO whose stack standard-interface queries are forwarded to.
        parent_fdo: DeviceId,
    },
    /// A child PDO the bus *image* enumerated, as the machine's tree sees
    /// it: `IRP_MN_QUERY_INTERFACE` for `GUID_CAPDMA_BUS_INTERFACE` is
    /// answered with `table`, the host table of thunks into the image's
    /// own interface (`crate::image::interface`), taking a reference
    /// through the image's `InterfaceReference`. Other interfaces are
    /// completed untouched (the image's child forwards them to its parent
    /// in the emulated kernel, not in this tree).
    ImageChildPdo {
        /// The host table of the image's interface for this child.
        table: CapdmaBusInterface,
        /// The channel the child stands for.
        channel: u32,
    },
    /// `capdma_avstream.sys`'s FDO (`AVStream` passes the Plug and Play IRPs
    /// it does not handle down, as `KsDefaultDispatchPnp` does); the removal
    /// IRPs are judged by its [`AvStreamDevice`].
    AvStreamFdo(Rc<AvStreamDevice>),
    /// A filter driver's device object.
    Filter(FilterKind),
    /// A PDO of a bus that forwards nothing (a root-enumerated software
    /// device): it completes every query untouched.
    SoftwarePdo,
}

impl DeviceKind {
    fn is_pdo(&self) -> bool {
        matches!(self, Self::PciPdo(_) | Self::ChildPdo { .. } | Self::ImageChildPdo { .. } | Self::SoftwarePdo)
    }

    fn label(&self) -> &'static str {
        match self {
            Self::PciPdo(_) => "PCI PDO",
            Self::BusFdo(_) => "bus FDO",
            Self::ChildPdo { .. } => "child PDO",
            Self::ImageChildPdo { .. } => "child PDO (bus image)",
            Self::AvStreamFdo(_) => "AVStream FDO",
            Self::Filter(FilterKind::PassThrough) => "filter (pass-through)",
            Self::Filter(FilterKind::FailsUnknownQueryInterface) => "filter (fails unknown query-interface)",
            Self::SoftwarePdo => "software PDO",
        }
    }
}

/// `IRP_MN_QUERY_INTERFACE` for `GUID_CAPDMA_BUS_INTERFACE` on a bus
/// image's child: negotiates `size`/`version` as the bus does
/// (`capdma_interface::negotiate`), copies the negotiated part of `table`
/// into `out` and takes one reference through the table's own
/// `InterfaceReference` (a call into the image). Returns the status the
/// negotiation gave (`STATUS_INVALID_PARAMETER` for a null `out`).
///
/// # Safety
/// `out` is null or points to `size` writable bytes; `table`'s context is
/// alive and the image's kernel active (`crate::image::active`).
unsafe fn answer_image_interface(table: &CapdmaBusInterface, size: u16, version: u16, out: *mut c_void) -> NtStatus {
    if out.is_null() {
        return capdma_interface::status::STATUS_INVALID_PARAMETER;
    }
    let negotiated = match capdma_interface::negotiate::negotiate(size, version, table.header.version) {
        Ok(n) => n,
        Err(status) => return status,
    };
    let mut answer = *table;
    answer.header.size = negotiated.size;
    answer.header.version = negotiated.version;
    let bytes = usize::from(negotiated.size).min(size_of::<CapdmaBusInterface>());
    // SAFETY: `out` holds `size >= negotiated.size >= bytes` bytes (the
    // caller's contract, checked by the negotiation); `answer` is a local.
    unsafe { std::ptr::copy_nonoverlapping((&raw const answer).cast::<u8>(), out.cast::<u8>(), bytes) };
    if let Some(reference) = answer.header.interface_reference {
        // SAFETY: the table's own context (the caller's contract).
        unsafe { reference(answer.header.context) };
    }
    STATUS_SUCCESS
}

struct DeviceObject {
    name: String,
    kind: DeviceKind,
    /// `AttachedTo` (the next lower device object).
    lower: Option<DeviceId>,
    /// `AttachedDevice` (the next higher one).
    upper: Option<DeviceId>,
}

/// `IO_STACK_LOCATION.Parameters.QueryInterface` plus the IRP's status.
#[derive(Clone, Copy, Debug)]
pub struct QueryInterface {
    /// `InterfaceType` (`None`: a null pointer).
    pub interface_type: Option<Guid>,
    /// `Size` of the `Interface` buffer, bytes.
    pub size: u16,
    /// `Version` asked for.
    pub version: u16,
    /// `Interface`: the buffer the answering driver fills.
    pub interface: *mut c_void,
}

/// The Plug and Play minor functions the simulation sends through stacks.
#[derive(Clone, Copy, Debug)]
pub enum PnpMinor {
    /// `IRP_MN_QUERY_INTERFACE`.
    QueryInterface(QueryInterface),
    /// `IRP_MN_QUERY_REMOVE_DEVICE`.
    QueryRemoveDevice,
    /// `IRP_MN_CANCEL_REMOVE_DEVICE` (must succeed).
    CancelRemoveDevice,
    /// `IRP_MN_REMOVE_DEVICE` of a child stack (the bus FDO's own removal
    /// is the machine's: it needs the interrupt and timer it models).
    RemoveDevice,
}

/// An IRP on its way through a stack.
#[derive(Clone, Debug)]
pub struct Irp {
    /// The request.
    pub minor: PnpMinor,
    /// `IoStatus.Status`: the sender sets `STATUS_NOT_SUPPORTED` first (as
    /// the DDK requires of every `IRP_MJ_PNP`); the driver that completes it
    /// writes its answer.
    pub status: NtStatus,
    /// The device objects the IRP visited, in order (the forwarded IRP of a
    /// child PDO included).
    pub path: Vec<DeviceId>,
}

impl Irp {
    /// A new `IRP_MJ_PNP` with `IoStatus.Status = STATUS_NOT_SUPPORTED`.
    #[must_use]
    pub fn new(minor: PnpMinor) -> Self {
        Self { minor, status: STATUS_NOT_SUPPORTED, path: Vec::new() }
    }
}

/// How deep a chain of `IoCallDriver` may go before the tree calls it a loop.
const MAX_DEPTH: usize = 64;

/// The Plug and Play device tree of the simulated machine (a cheap `Clone` handle).
#[derive(Clone)]
pub struct DeviceTree {
    devices: Rc<RefCell<Vec<DeviceObject>>>,
    irql: IrqlTracker,
    violations: Violations,
}

impl DeviceTree {
    /// An empty tree whose DDIs check `irql` and record into `violations`.
    #[must_use]
    pub fn new(irql: &IrqlTracker, violations: &Violations) -> Self {
        Self { devices: Rc::new(RefCell::new(Vec::new())), irql: irql.clone(), violations: violations.clone() }
    }

    /// Creates a PDO (the bottom of a new stack).
    pub fn create_pdo(&self, name: impl Into<String>, kind: DeviceKind) -> DeviceId {
        if !kind.is_pdo() {
            self.violations.push(ViolationKind::Pnp, format!("create_pdo with a {}", kind.label()));
        }
        self.push(name.into(), kind, None)
    }

    /// `IoCreateDevice` + `IoAttachDeviceToDeviceStack(new, target)`: the new
    /// device object is attached to the top of `target`'s stack. Returns it.
    pub fn attach(&self, name: impl Into<String>, kind: DeviceKind, target: DeviceId) -> DeviceId {
        let top = self.attached_top(target);
        let id = self.push(name.into(), kind, Some(top));
        if let Some(d) = self.devices.borrow_mut().get_mut(top.0 as usize) {
            d.upper = Some(id);
        }
        id
    }

    fn push(&self, name: String, kind: DeviceKind, lower: Option<DeviceId>) -> DeviceId {
        let mut devices = self.devices.borrow_mut();
        let id = DeviceId(u32::try_from(devices.len()).unwrap_or(u32::MAX));
        devices.push(DeviceObject { name, kind, lower, upper: None });
        id
    }

    /// `IoGetAttachedDeviceReference(device)`: the top of its stack.
    #[must_use]
    pub fn attached_top(&self, device: DeviceId) -> DeviceId {
        let devices = self.devices.borrow();
        let mut id = device;
        for _ in 0..MAX_DEPTH {
            match devices.get(id.0 as usize).and_then(|d| d.upper) {
                Some(up) => id = up,
                None => break,
            }
        }
        id
    }

    /// The stack `device` belongs to, bottom (the PDO) first.
    #[must_use]
    pub fn stack_of(&self, device: DeviceId) -> Vec<DeviceId> {
        let devices = self.devices.borrow();
        let mut bottom = device;
        for _ in 0..MAX_DEPTH {
            match devices.get(bottom.0 as usize).and_then(|d| d.lower) {
                Some(low) => bottom = low,
                None => break,
            }
        }
        let mut out = vec![bottom];
        let mut id = bottom;
        while let Some(up) = devices.get(id.0 as usize).and_then(|d| d.upper) {
            if out.len() >= MAX_DEPTH {
                break;
            }
            out.push(up);
            id = up;
        }
        out
    }

    /// The device object's name.
    #[must_use]
    pub fn name(&self, device: DeviceId) -> String {
        self.devices.borrow().get(device.0 as usize).map_or_else(|| format!("{device:?}"), |d| d.name.clone())
    }

    /// The names of `path`'s devices, joined with " -> " (for messages).
    #[must_use]
    pub fn describe_path(&self, path: &[DeviceId]) -> String {
        path.iter().map(|d| self.name(*d)).collect::<Vec<_>>().join(" -> ")
    }

    fn kind(&self, device: DeviceId) -> Option<(DeviceKind, Option<DeviceId>)> {
        self.devices.borrow().get(device.0 as usize).map(|d| (d.kind.clone(), d.lower))
    }

    /// `IoCallDriver(device, irp)` (synchronous here: every driver of the
    /// simulation completes Plug and Play IRPs before returning). Returns
    /// the IRP's final status.
    pub fn call_driver(&self, device: DeviceId, irp: &mut Irp) -> NtStatus {
        if irp.path.len() >= MAX_DEPTH {
            self.violations.push(ViolationKind::Pnp, "IRP passed down more than 64 device objects (a loop?)");
            return irp.status;
        }
        irp.path.push(device);
        let Some((kind, lower)) = self.kind(device) else {
            self.violations.push(ViolationKind::Pnp, format!("IoCallDriver to a device object that does not exist ({device:?})"));
            return irp.status;
        };
        let pass_down = |irp: &mut Irp| {
            if let Some(lower) = lower {
                self.call_driver(lower, irp)
            } else {
                self.violations.push(ViolationKind::Pnp, format!("{} passed an IRP down with no lower device", self.name(device)));
                irp.status
            }
        };
        match (kind, irp.minor) {
            (DeviceKind::Filter(FilterKind::FailsUnknownQueryInterface), PnpMinor::QueryInterface(q))
                if q.interface_type != Some(GUID_BUS_INTERFACE_STANDARD) =>
            {
                irp.status = STATUS_NOT_SUPPORTED;
                irp.status
            }
            (DeviceKind::AvStreamFdo(device), PnpMinor::QueryRemoveDevice) => match device.query_remove() {
                Ok(()) => {
                    irp.status = STATUS_SUCCESS;
                    pass_down(irp)
                }
                Err(status) => {
                    irp.status = status;
                    irp.status
                }
            },
            (DeviceKind::AvStreamFdo(device), PnpMinor::RemoveDevice) => {
                device.remove();
                irp.status = STATUS_SUCCESS;
                pass_down(irp)
            }
            (DeviceKind::Filter(_) | DeviceKind::AvStreamFdo(_), _)
            | (DeviceKind::BusFdo(_), PnpMinor::QueryInterface(_) | PnpMinor::CancelRemoveDevice | PnpMinor::RemoveDevice) => pass_down(irp),
            (DeviceKind::BusFdo(bus), PnpMinor::QueryRemoveDevice) => {
                irp.status = bus.query_remove();
                if nt_success(irp.status) {
                    pass_down(irp)
                } else {
                    irp.status
                }
            }
            (DeviceKind::ChildPdo { bus, parent_fdo, .. }, PnpMinor::QueryInterface(q)) => {
                self.child_pdo_query_interface(&bus, parent_fdo, q, irp)
            }
            (DeviceKind::ImageChildPdo { table, .. }, PnpMinor::QueryInterface(q)) => {
                if route_child_query_interface(q.interface_type.as_ref()) == ChildInterfaceRoute::CapdmaBus {
                    // SAFETY: the sender's `Interface` buffer holds `Size`
                    // writable bytes (the IRP_MN_QUERY_INTERFACE contract).
                    irp.status = unsafe { answer_image_interface(&table, q.size, q.version, q.interface) };
                }
                irp.status
            }
            (DeviceKind::PciPdo(pci), PnpMinor::QueryInterface(q)) => {
                if q.interface_type == Some(GUID_BUS_INTERFACE_STANDARD) {
                    // SAFETY: the sender's `Interface` buffer holds `Size` writable
                    // bytes (the IRP_MN_QUERY_INTERFACE contract, upheld by the
                    // machine's and the tests' senders).
                    irp.status = unsafe { pci.answer_bus_interface(q.size, q.version, q.interface) };
                }
                irp.status
            }
            (DeviceKind::SoftwarePdo, PnpMinor::QueryInterface(_)) => irp.status,
            (
                DeviceKind::ChildPdo { .. } | DeviceKind::ImageChildPdo { .. } | DeviceKind::PciPdo(_) | DeviceKind::SoftwarePdo,
                PnpMinor::QueryRemoveDevice | PnpMinor::CancelRemoveDevice | PnpMinor::RemoveDevice,
            ) => {
                // A child PDO that is still present survives its removal
                // (it is deleted when the bus stops reporting it).
                irp.status = STATUS_SUCCESS;
                irp.status
            }
        }
    }

    /// The child PDO's `IRP_MN_QUERY_INTERFACE`, routed by the bus core's
    /// portable decision ([`route_child_query_interface`]).
    fn child_pdo_query_interface(
        &self,
        bus: &BusDevice<SimBusPlatform>,
        parent_fdo: DeviceId,
        q: QueryInterface,
        irp: &mut Irp,
    ) -> NtStatus {
        match route_child_query_interface(q.interface_type.as_ref()) {
            ChildInterfaceRoute::CapdmaBus => {
                irp.status = bus.query_interface(q.size, q.version, q.interface.cast::<CapdmaBusInterface>());
            }
            ChildInterfaceRoute::ForwardToParent => {
                let mut forwarded = Irp::new(PnpMinor::QueryInterface(q));
                let top = self.attached_top(parent_fdo);
                let status = self.call_driver(top, &mut forwarded);
                irp.path.append(&mut forwarded.path);
                irp.status = status;
            }
            ChildInterfaceRoute::Untouched => {}
        }
        irp.status
    }

    /// Sends `IRP_MN_QUERY_INTERFACE` to the top of `device`'s stack and
    /// returns the IRP (its status and path).
    ///
    /// # Safety
    /// `interface` must point to `size` writable bytes (or be null).
    #[must_use]
    pub unsafe fn query_interface(&self, device: DeviceId, interface_type: Option<Guid>, size: u16, version: u16, interface: *mut c_void) -> Irp {
        let mut irp = Irp::new(PnpMinor::QueryInterface(QueryInterface { interface_type, size, version, interface }));
        let top = self.attached_top(device);
        self.call_driver(top, &mut irp);
        irp
    }

    /// Sends `IRP_MN_QUERY_REMOVE_DEVICE` to the top of `device`'s stack.
    #[must_use]
    pub fn query_remove(&self, device: DeviceId) -> Irp {
        self.send(device, PnpMinor::QueryRemoveDevice)
    }

    /// Sends `IRP_MN_CANCEL_REMOVE_DEVICE` to the top of `device`'s stack.
    #[must_use]
    pub fn cancel_remove(&self, device: DeviceId) -> Irp {
        self.send(device, PnpMinor::CancelRemoveDevice)
    }

    /// Sends `IRP_MN_REMOVE_DEVICE` to the top of `device`'s stack (a
    /// child stack: the AVStream device releases its interface).
    #[must_use]
    pub fn remove_device(&self, device: DeviceId) -> Irp {
        self.send(device, PnpMinor::RemoveDevice)
    }

    fn send(&self, device: DeviceId, minor: PnpMinor) -> Irp {
        let mut irp = Irp::new(minor);
        let top = self.attached_top(device);
        self.call_driver(top, &mut irp);
        irp
    }

    /// `IoGetDmaAdapter(pdo, description, &NumberOfMapRegisters)`
    /// (`PASSIVE_LEVEL`): on the PCI PDO the HAL makes the adapter; on any
    /// other PDO the I/O manager asks the PDO's stack for
    /// `GUID_BUS_INTERFACE_STANDARD` and calls its `GetDmaAdapter` (then
    /// dereferences the interface): without a bus that answers or forwards
    /// it, the answer is NULL (`None`). Passing a device object that is not
    /// a PDO is a violation (and NULL).
    #[must_use]
    pub fn io_get_dma_adapter(&self, pdo: DeviceId, description: &DeviceDescription) -> Option<(SimDmaAdapter, u32)> {
        self.irql.require_passive("IoGetDmaAdapter");
        let (kind, _) = self.kind(pdo)?;
        if !kind.is_pdo() {
            self.violations.push(ViolationKind::Api, format!("IoGetDmaAdapter on {}, which is not a PDO", self.name(pdo)));
            return None;
        }
        if let DeviceKind::PciPdo(pci) = kind {
            let adapter = pci.io_get_dma_adapter(description);
            let registers = capdma_bus::ports::DmaAdapterPort::map_registers(&adapter);
            return Some((adapter, registers));
        }
        let mut table = BusInterfaceStandard::query_buffer();
        // SAFETY: `table` is a live local of `SIZE` bytes.
        let irp = unsafe {
            self.query_interface(
                pdo,
                Some(GUID_BUS_INTERFACE_STANDARD),
                BusInterfaceStandard::SIZE,
                BusInterfaceStandard::VERSION,
                (&raw mut table).cast(),
            )
        };
        if !nt_success(irp.status) {
            return None;
        }
        let mut registers = 0u32;
        let raw = match table.get_dma_adapter {
            // SAFETY: the function and its context come from a successful
            // answer whose reference is held until the dereference below;
            // the description and the out-pointer are live locals.
            Some(get) => unsafe { get(table.header.context, description, &raw mut registers) },
            None => std::ptr::null_mut(),
        };
        if let Some(deref) = table.header.interface_dereference {
            // SAFETY: drops the reference the answer took, once.
            unsafe { deref(table.header.context) };
        }
        SimDmaAdapter::from_raw(raw).map(|a| (a, registers))
    }
}
