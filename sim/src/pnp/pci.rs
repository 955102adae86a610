//! The PCI function of a card as the PCI bus driver (pci.sys) and the HAL
//! serve it: `IoGetDmaAdapter` on the PCI PDO, and the
//! `BUS_INTERFACE_STANDARD` the PCI PDO answers to
//! `IRP_MN_QUERY_INTERFACE` (whose `GetDmaAdapter` is `IoGetDmaAdapter` on
//! that PDO).
//!
//! Every adapter handed out, by either path, is kept in one list so the
//! machine's teardown can check each was put; every interface reference
//! taken must be dropped (`InterfaceDereference`) by the end of the run.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::{Rc, Weak};

use capdma_bus::ports::{DeviceDescription, DmaAdapterPort};
use capdma_interface::status::{NtStatus, STATUS_BUFFER_TOO_SMALL, STATUS_REVISION_MISMATCH, STATUS_SUCCESS};
use capdma_interface::table::InterfaceHeader;

use crate::dma::adapter::{AdapterConfig, SimDmaAdapter};
use crate::irql::IrqlTracker;
use crate::memory::PhysicalMemory;

/// `PGET_DMA_ADAPTER` of `BUS_INTERFACE_STANDARD`: `IoGetDmaAdapter` on the
/// PDO that answered the interface. The simulation passes the three
/// `DEVICE_DESCRIPTION` fields the bus core decides ([`DeviceDescription`]).
/// Returns the `PDMA_ADAPTER` (null when refused).
pub type PfnGetDmaAdapter = unsafe extern "system" fn(
    context: *mut c_void,
    description: *const DeviceDescription,
    number_of_map_registers: *mut u32,
) -> *mut c_void;

/// `PTRANSLATE_BUS_ADDRESS` (simplified: the simulation's bus addresses are
/// the physical addresses, so it copies the address and says memory space).
pub type PfnTranslateBusAddress =
    unsafe extern "system" fn(context: *mut c_void, bus_address: u64, length: u32, address_space: *mut u32, translated: *mut u64) -> u8;

/// `PGET_SET_DEVICE_DATA` (`GetBusData` / `SetBusData`): PCI configuration
/// space access. The simulated function has no configuration space the
/// drivers use: it transfers 0 bytes.
pub type PfnGetSetBusData =
    unsafe extern "system" fn(context: *mut c_void, data_type: u32, buffer: *mut c_void, offset: u32, length: u32) -> u32;

/// `BUS_INTERFACE_STANDARD` (wdm.h), version 1: the `INTERFACE` header then
/// four functions.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BusInterfaceStandard {
    /// The `INTERFACE` header.
    pub header: InterfaceHeader,
    /// `TranslateBusAddress`.
    pub translate_bus_address: Option<PfnTranslateBusAddress>,
    /// `GetDmaAdapter`.
    pub get_dma_adapter: Option<PfnGetDmaAdapter>,
    /// `SetBusData`.
    pub set_bus_data: Option<PfnGetSetBusData>,
    /// `GetBusData`.
    pub get_bus_data: Option<PfnGetSetBusData>,
}

impl BusInterfaceStandard {
    /// `sizeof(BUS_INTERFACE_STANDARD)`.
    #[allow(clippy::cast_possible_truncation, reason = "a 64-byte structure")]
    pub const SIZE: u16 = size_of::<Self>() as u16;
    /// The version the PCI PDO serves.
    pub const VERSION: u16 = 1;

    /// A zeroed buffer for a query (`Size`/`Version` set).
    #[must_use]
    pub fn query_buffer() -> Self {
        Self {
            header: InterfaceHeader {
                size: Self::SIZE,
                version: Self::VERSION,
                context: std::ptr::null_mut(),
                interface_reference: None,
                interface_dereference: None,
            },
            translate_bus_address: None,
            get_dma_adapter: None,
            set_bus_data: None,
            get_bus_data: None,
        }
    }
}

struct PciInner {
    name: String,
    memory: PhysicalMemory,
    irql: IrqlTracker,
    config: AdapterConfig,
    adapters: RefCell<Vec<SimDmaAdapter>>,
    references: Cell<u32>,
    references_taken: Cell<u64>,
}

impl Drop for PciInner {
    fn drop(&mut self) {
        let key = std::ptr::from_ref::<Self>(self) as usize;
        let _ = REGISTRY.try_with(|r| r.borrow_mut().remove(&key));
    }
}

thread_local! {
    static REGISTRY: RefCell<HashMap<usize, Weak<PciInner>>> = RefCell::new(HashMap::new());
}

/// One card's PCI function (a cheap `Clone` handle).
#[derive(Clone)]
pub struct PciFunction {
    inner: Rc<PciInner>,
}

impl std::fmt::Debug for PciFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciFunction")
            .field("name", &self.inner.name)
            .field("adapters", &self.inner.adapters.borrow().len())
            .field("references", &self.inner.references.get())
            .finish()
    }
}

impl PciFunction {
    /// A PCI function whose adapters grant `config` (map registers) over `memory`.
    #[must_use]
    pub fn new(name: impl Into<String>, memory: &PhysicalMemory, irql: &IrqlTracker, config: AdapterConfig) -> Self {
        let inner = Rc::new(PciInner {
            name: name.into(),
            memory: memory.clone(),
            irql: irql.clone(),
            config,
            adapters: RefCell::new(Vec::new()),
            references: Cell::new(0),
            references_taken: Cell::new(0),
        });
        let key = Rc::as_ptr(&inner) as usize;
        REGISTRY.with(|r| r.borrow_mut().insert(key, Rc::downgrade(&inner)));
        Self { inner }
    }

    fn from_context(context: *mut c_void) -> Option<Self> {
        let inner = REGISTRY.with(|r| r.borrow().get(&(context as usize)).and_then(Weak::upgrade))?;
        Some(Self { inner })
    }

    fn context(&self) -> *mut c_void {
        Rc::as_ptr(&self.inner).cast_mut().cast()
    }

    /// The function's name (`PCI\VEN_…` in reports).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `IoGetDmaAdapter(PciPdo, description, &NumberOfMapRegisters)`:
    /// `PASSIVE_LEVEL`; a new adapter every call.
    #[must_use]
    pub fn io_get_dma_adapter(&self, description: &DeviceDescription) -> SimDmaAdapter {
        let adapter = SimDmaAdapter::new(*description, self.inner.config, &self.inner.memory, &self.inner.irql);
        self.inner.adapters.borrow_mut().push(adapter.clone());
        adapter
    }

    /// Every adapter handed out (put or not), oldest first.
    #[must_use]
    pub fn adapters(&self) -> Vec<SimDmaAdapter> {
        self.inner.adapters.borrow().clone()
    }

    /// Forgets the adapters that were put and hold nothing (after a leak
    /// check), so a long run of start/stop cycles checks each adapter once.
    pub fn forget_put_adapters(&self) {
        self.inner.adapters.borrow_mut().retain(|a| !a.is_put() || !a.leaks().is_empty());
    }

    /// `BUS_INTERFACE_STANDARD` references held now.
    #[must_use]
    pub fn interface_references(&self) -> u32 {
        self.inner.references.get()
    }

    /// `BUS_INTERFACE_STANDARD` references ever taken.
    #[must_use]
    pub fn interface_references_taken(&self) -> u64 {
        self.inner.references_taken.get()
    }

    /// One line per adapter never put and per interface reference never dropped.
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for adapter in self.adapters() {
            for leak in adapter.leaks() {
                out.push(leak);
            }
            if !adapter.is_put() {
                out.push(format!("{}: DMA adapter #{} was never put (PutDmaAdapter)", self.name(), adapter.id()));
            }
        }
        let refs = self.interface_references();
        if refs != 0 {
            out.push(format!("{}: {refs} BUS_INTERFACE_STANDARD reference(s) never dropped", self.name()));
        }
        out
    }

    /// The PCI PDO's answer to `IRP_MN_QUERY_INTERFACE` for
    /// `GUID_BUS_INTERFACE_STANDARD`: fills `out` (`size` bytes) and takes a
    /// reference. `STATUS_BUFFER_TOO_SMALL` for a short buffer,
    /// `STATUS_REVISION_MISMATCH` for version 0.
    ///
    /// # Safety
    /// `out` must be null or point to `size` writable bytes.
    pub(crate) unsafe fn answer_bus_interface(&self, size: u16, version: u16, out: *mut c_void) -> NtStatus {
        if version == 0 {
            return STATUS_REVISION_MISMATCH;
        }
        if size < BusInterfaceStandard::SIZE || out.is_null() {
            return STATUS_BUFFER_TOO_SMALL;
        }
        let table = BusInterfaceStandard {
            header: InterfaceHeader {
                size: BusInterfaceStandard::SIZE,
                version: BusInterfaceStandard::VERSION,
                context: self.context(),
                interface_reference: Some(thunk_reference),
                interface_dereference: Some(thunk_dereference),
            },
            translate_bus_address: Some(thunk_translate),
            get_dma_adapter: Some(thunk_get_dma_adapter),
            set_bus_data: Some(thunk_bus_data),
            get_bus_data: Some(thunk_bus_data),
        };
        // SAFETY: `out` is non-null and (the caller's contract) points to
        // `size >= SIZE` writable bytes; an unaligned write of a local copy.
        unsafe { out.cast::<BusInterfaceStandard>().write_unaligned(table) };
        self.reference();
        STATUS_SUCCESS
    }

    fn reference(&self) {
        self.inner.references.set(self.inner.references.get() + 1);
        self.inner.references_taken.set(self.inner.references_taken.get() + 1);
    }

    fn dereference(&self) {
        self.inner.references.set(self.inner.references.get().saturating_sub(1));
    }
}

unsafe extern "system" fn thunk_reference(context: *mut c_void) {
    if let Some(pci) = PciFunction::from_context(context) {
        pci.reference();
    }
}

unsafe extern "system" fn thunk_dereference(context: *mut c_void) {
    if let Some(pci) = PciFunction::from_context(context) {
        pci.dereference();
    }
}

unsafe extern "system" fn thunk_translate(
    context: *mut c_void,
    bus_address: u64,
    _length: u32,
    address_space: *mut u32,
    translated: *mut u64,
) -> u8 {
    if PciFunction::from_context(context).is_none() || address_space.is_null() || translated.is_null() {
        return 0;
    }
    // SAFETY: both out-pointers are non-null and, per the DDI, writable.
    unsafe { address_space.write_unaligned(0) };
    // SAFETY: as above.
    unsafe { translated.write_unaligned(bus_address) };
    1
}

unsafe extern "system" fn thunk_bus_data(_context: *mut c_void, _type: u32, _buffer: *mut c_void, _offset: u32, _length: u32) -> u32 {
    0
}

/// `GetDmaAdapter` of the PCI PDO's `BUS_INTERFACE_STANDARD`.
///
/// # Safety
/// `description` null or readable; `number_of_map_registers` null or writable.
unsafe extern "system" fn thunk_get_dma_adapter(
    context: *mut c_void,
    description: *const DeviceDescription,
    number_of_map_registers: *mut u32,
) -> *mut c_void {
    let Some(pci) = PciFunction::from_context(context) else {
        return std::ptr::null_mut();
    };
    if description.is_null() || number_of_map_registers.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: non-null and readable per the caller's contract.
    let description = unsafe { description.read_unaligned() };
    let adapter = pci.io_get_dma_adapter(&description);
    // SAFETY: non-null and writable per the caller's contract.
    unsafe { number_of_map_registers.write_unaligned(adapter.map_registers()) };
    adapter.raw()
}
