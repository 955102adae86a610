//! The FDO: its device extension (which holds the [`BusDevice`]) and
//! `AddDevice`.
//!
//! The extension is the `DeviceExtension` of the device object
//! `IoCreateDevice` made, so it never moves: the `BusDevice` address handed
//! to children as the interface `Context`, the `KDPC`s and the `KTIMER`
//! stay valid until `IoDeleteDevice` (and, for the children, until they
//! drop the reference each holds on the FDO).
use super::ddi::{lower_irql, raise_to_dispatch};
use super::extension::{DeviceKind, ExtensionHeader};
use super::irp::init_remove_lock;
use super::isr_dpc::{self, InterruptConnection};
use super::platform::WdmPlatform;
use crate::device::{BusDevice, MAX_CHANNELS};
use crate::pnp::state::PnpStateCell;
use crate::pnp::STATUS_NO_SUCH_DEVICE;
use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::AtomicPtr;
use wdk_sys::ntddk::{IoAttachDeviceToDeviceStack, IoCreateDevice, IoDeleteDevice};
use wdk_sys::{
    DO_DEVICE_INITIALIZING, DO_POWER_PAGABLE, FILE_DEVICE_BUS_EXTENDER, FILE_DEVICE_SECURE_OPEN, IO_REMOVE_LOCK, IRP,
    KDPC, KTIMER, NTSTATUS, NT_SUCCESS, PDEVICE_OBJECT, PDRIVER_OBJECT, ULONG,
};

/// The child PDOs by channel (null: none).
pub type ChildTable = [PDEVICE_OBJECT; MAX_CHANNELS];

/// The FDO's device extension.
#[repr(C)]
pub struct FdoExtension {
    /// [`DeviceKind::Fdo`].
    pub header: ExtensionHeader,
    /// This FDO.
    pub self_device: PDEVICE_OBJECT,
    /// The PDO the PCI bus driver created (`AddDevice`'s argument): the
    /// device `IoGetDmaAdapter`, `IoConnectInterruptEx`,
    /// `IoOpenDeviceRegistryKey` and `IoInvalidateDeviceRelations` take.
    pub pci_pdo: PDEVICE_OBJECT,
    /// The next lower device (`IoAttachDeviceToDeviceStack`): where IRPs go.
    /// May be a filter, so never used in place of [`Self::pci_pdo`].
    pub lower: PDEVICE_OBJECT,
    /// `IO_REMOVE_LOCK`: no IRP is in this driver when the FDO is deleted.
    pub remove_lock: UnsafeCell<IO_REMOVE_LOCK>,
    /// The Plug and Play state.
    pub pnp: PnpStateCell,
    /// The bus core.
    pub bus: BusDevice<WdmPlatform>,
    /// The connected interrupt: written by the Plug and Play paths
    /// (connect at start, disconnect at teardown), read by the power path
    /// (the ISR barrier when leaving D0), which the Plug and Play manager
    /// does not serialize with them. A spin lock, so only ever taken at
    /// `DISPATCH_LEVEL`: see [`Self::with_interrupt`].
    pub interrupt: spin::Mutex<Option<InterruptConnection>>,
    /// The DPC the ISR queues (`KeInsertQueueDpc`).
    pub dpc: UnsafeCell<KDPC>,
    /// The periodic watchdog timer.
    pub timer: UnsafeCell<KTIMER>,
    /// The watchdog timer's DPC.
    pub timer_dpc: UnsafeCell<KDPC>,
    /// The child PDOs (taken at `DISPATCH_LEVEL`, see [`Self::with_children`]).
    pub children: spin::Mutex<ChildTable>,
    /// The system set-power IRP waiting for the device set-power IRP this
    /// FDO requested for it (`PoRequestPowerIrp`; the power manager sends
    /// one system power IRP per device at a time), null otherwise. Set in
    /// the system IRP's completion routine, taken by the device IRP's
    /// power-completion callback, which completes it (`super::power`).
    pub system_irp: AtomicPtr<IRP>,
}

/// The bus core as `AddDevice` creates it, as a constant so that it is
/// copied into the device extension in place (no 10 KiB temporary on the
/// kernel stack).
#[allow(clippy::declare_interior_mutable_const, reason = "a template, copied once per device")]
const BUS_TEMPLATE: BusDevice<WdmPlatform> = BusDevice::new(WdmPlatform::new());

impl FdoExtension {
    /// Initializes the (zeroed) extension of `fdo` in place.
    ///
    /// # Safety
    /// `ext` is `fdo`'s device extension, `size_of::<FdoExtension>()`
    /// writable bytes, not yet visible to any other thread.
    #[allow(clippy::borrow_interior_mutable_const, reason = "the template is copied by value into the extension")]
    unsafe fn init_in_place(ext: *mut Self, fdo: PDEVICE_OBJECT, pci_pdo: PDEVICE_OBJECT) {
        /// Writes `$value` into field `$field` of the extension.
        macro_rules! init {
            ($field:ident, $value:expr) => {{
                // SAFETY: `ext` is the valid extension being initialized,
                // exclusively ours (the caller's guarantee); only the
                // field's address is taken.
                let field = unsafe { &raw mut (*ext).$field };
                // SAFETY: a valid, aligned, writable field.
                unsafe { field.write($value) };
            }};
        }
        init!(header, ExtensionHeader::new(DeviceKind::Fdo));
        init!(self_device, fdo);
        init!(pci_pdo, pci_pdo);
        init!(lower, null_mut());
        init!(pnp, PnpStateCell::new());
        // Copied from the constant straight into the extension.
        init!(bus, BUS_TEMPLATE);
        init!(interrupt, spin::Mutex::new(None));
        init!(children, spin::Mutex::new([null_mut(); MAX_CHANNELS]));
        init!(system_irp, AtomicPtr::new(null_mut()));
        // SAFETY: as in `init!`.
        let remove_lock = unsafe { &raw mut (*ext).remove_lock };
        // SAFETY: valid storage inside the extension, initialized by the I/O manager.
        unsafe { init_remove_lock(remove_lock.cast()) };
        // SAFETY: as in `init!`; `bus` was written above.
        let bus = unsafe { &(*ext).bus };
        bus.platform().set_pci_pdo(pci_pdo);
        // SAFETY: the extension is valid; the kernel initializes the DPCs and the timer.
        unsafe { isr_dpc::init_dpcs(ext) };
    }

    /// Runs `f` on the child table, at `DISPATCH_LEVEL` (a spin lock must
    /// not be held preemptibly). `f` may only read and write the table and
    /// atomics: no call that needs `PASSIVE_LEVEL`.
    pub fn with_children<R>(&self, f: impl FnOnce(&mut ChildTable) -> R) -> R {
        let old = raise_to_dispatch();
        let result = f(&mut self.children.lock());
        lower_irql(old);
        result
    }

    /// Runs `f` on the interrupt connection with its lock held at
    /// `DISPATCH_LEVEL` (raised here when called below it, as every spin
    /// lock of this driver). `f` must not need `PASSIVE_LEVEL`: take the
    /// connection out and disconnect it after the lock is released.
    pub fn with_interrupt<R>(&self, f: impl FnOnce(&mut Option<InterruptConnection>) -> R) -> R {
        let old = raise_to_dispatch();
        let result = f(&mut self.interrupt.lock());
        lower_irql(old);
        result
    }

    /// The remove lock, for the `Io*RemoveLock*` routines.
    pub const fn remove_lock(&self) -> *mut IO_REMOVE_LOCK {
        self.remove_lock.get()
    }
}

/// `AddDevice`: `IoCreateDevice` (a nameless `FILE_DEVICE_BUS_EXTENDER`
/// FDO whose extension holds the [`BusDevice`]), `IoAttachDeviceToDeviceStack`
/// onto the PCI PDO, `DO_POWER_PAGABLE` as the lower device has it,
/// `DO_DEVICE_INITIALIZING` cleared. `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the Plug and Play manager with valid objects.
pub unsafe extern "C" fn add_device(driver: PDRIVER_OBJECT, pci_pdo: PDEVICE_OBJECT) -> NTSTATUS {
    let Ok(size) = ULONG::try_from(size_of::<FdoExtension>()) else {
        return capdma_interface::status::STATUS_INSUFFICIENT_RESOURCES;
    };
    let mut fdo: PDEVICE_OBJECT = null_mut();
    // SAFETY: a valid driver object; no name (a PnP FDO needs none); the
    // out-pointer is valid.
    let status = unsafe {
        IoCreateDevice(driver, size, null_mut(), FILE_DEVICE_BUS_EXTENDER, FILE_DEVICE_SECURE_OPEN, 0, &raw mut fdo)
    };
    if !NT_SUCCESS(status) {
        wdk::println!("capdma_bus: IoCreateDevice failed {status:#x}");
        super::trace::failure(super::trace::Area::Pnp, "AddDevice: IoCreateDevice", status);
        return status;
    }
    // SAFETY: IoCreateDevice succeeded: `fdo` is valid and its extension
    // is `size` bytes of zeroed non-paged memory.
    let ext = unsafe { (*fdo).DeviceExtension }.cast::<FdoExtension>();
    // SAFETY: the extension is ours alone until AddDevice returns.
    unsafe { FdoExtension::init_in_place(ext, fdo, pci_pdo) };
    // SAFETY: both device objects are valid.
    let lower = unsafe { IoAttachDeviceToDeviceStack(fdo, pci_pdo) };
    if lower.is_null() {
        // SAFETY: the FDO was created above and is attached to nothing.
        unsafe { IoDeleteDevice(fdo) };
        super::trace::failure(super::trace::Area::Pnp, "AddDevice: IoAttachDeviceToDeviceStack", STATUS_NO_SUCH_DEVICE);
        return STATUS_NO_SUCH_DEVICE;
    }
    // SAFETY: still exclusively ours; `lower` is valid while attached.
    unsafe {
        (*ext).lower = lower;
    }
    // SAFETY: `lower` is a valid device object.
    let lower_flags = unsafe { (*lower).Flags };
    // SAFETY: `fdo` is valid and ours until AddDevice returns.
    let flags = unsafe { &mut (*fdo).Flags };
    // DO_POWER_PAGABLE as the PCI PDO has it (a driver must not set it when
    // the lower one has it clear). A PCI function outside the paging path
    // has it, so power IRPs reach this FDO at PASSIVE_LEVEL, which leaving
    // D0 relies on (`super::power`). Set before clearing
    // DO_DEVICE_INITIALIZING (the documented order).
    *flags |= lower_flags & DO_POWER_PAGABLE;
    *flags &= !DO_DEVICE_INITIALIZING;
    wdk::println!("capdma_bus: FDO {fdo:p} attached over PCI PDO {pci_pdo:p}");
    status
}
