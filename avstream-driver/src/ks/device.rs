//! The KS device (`KSDEVICE_DISPATCH`): one per capdma channel (the bus's
//! child PDO `CAPDMA\Channel`).
//!
//! | dispatch | what it does |
//! |---|---|
//! | Add (`AVStrMiniDeviceAdd`) | allocates the [`DeviceContext`] (`ExAllocatePool2`), puts it in `KSDEVICE.Context` and in the device's object bag (`KsAddItemToObjectBag` under the device mutex, `KsAcquireDevice`/`KsReleaseDevice`: freed when the device object goes) |
//! | Start (`AVStrMiniDeviceStart`) | `IoGetDeviceProperty(DevicePropertyAddress)` = the channel; `IRP_MN_QUERY_INTERFACE` for `GUID_CAPDMA_BUS_INTERFACE` down the stack → `BusClient::from_query`; the core's `device_start`; S/G: `IKsDeviceFunctions::RegisterAdapterObjectEx` (`adapter.rs`); first start: the descriptors and `KsCreateFilterFactory` |
//! | Stop, `SurpriseRemoval` | no new pins; the bus reference stays until Remove |
//! | Remove | `InterfaceDereference` (`BusClient::release`): every pin is closed by then |
//!
//! The `PnP` manager serialises the `PnP` dispatches, so only pin creation
//! (`super::pin::create`) reads the context concurrently with them: what
//! it needs ([`PinResources`]) is published under a spin lock.
//!
//! `KsCreateFilterFactory` must be called with the device mutex held. AVStream
//! does not hold it while it calls the minidriver's Start (the mutex is not
//! recursive; Microsoft's `avshws` sample takes it itself in its Start), so
//! [`create_filter_factory`] brackets the call with `KsAcquireDevice` /
//! `KsReleaseDevice`.
use super::bindings::{
    KsAcquireDevice, KsAddItemToObjectBag, KsCreateFilterFactory, KsReleaseDevice,
    KSALLOCATOR_FRAMING_EX, KSFILTER_DESCRIPTOR, KSPIN_DESCRIPTOR_EX, PKSDEVICE, PKSFILTERFACTORY,
};
use super::ddi::{self, next_stack, nt_success};
use super::descriptors::{self, REFERENCE_STRING};
use crate::bus_client::{BusChannel, BusClient};
use crate::device::{device_start, DeviceSetup};
use capdma_interface::guid::GUID_CAPDMA_BUS_INTERFACE;
use capdma_interface::status::{NtStatus, STATUS_INSUFFICIENT_RESOURCES, STATUS_NOT_SUPPORTED, STATUS_SUCCESS};
use capdma_interface::table::CapdmaBusInterface;
use capdma_interface::ModeReason;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::{size_of, MaybeUninit};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use wdk_sys::ntddk::{
    IoBuildSynchronousFsdRequest, IoGetDeviceProperty, IofCallDriver, KeInitializeEvent, KeWaitForSingleObject,
};
use wdk_sys::{
    _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_26, _IO_STATUS_BLOCK__bindgen_ty_1, _EVENT_TYPE, _KWAIT_REASON, _MODE,
    DEVICE_REGISTRY_PROPERTY, GUID, INTERFACE, IO_STATUS_BLOCK, IRP_MJ_PNP, IRP_MN_QUERY_INTERFACE, KEVENT,
    KPROCESSOR_MODE, NTSTATUS, PCM_RESOURCE_LIST, PDEVICE_OBJECT, PIRP, STATUS_DEVICE_CONFIGURATION_ERROR,
    STATUS_PENDING, ULONG,
};

/// `IRP_MN_QUERY_INTERFACE` as the `UCHAR` of `MinorFunction` (0x08).
#[allow(clippy::cast_possible_truncation, reason = "minor function codes are below 0x20")]
const IRP_MN_QUERY_INTERFACE_MINOR: u8 = IRP_MN_QUERY_INTERFACE as u8;

/// `KernelMode` as a `KPROCESSOR_MODE` (0).
#[allow(clippy::cast_possible_truncation, reason = "processor modes are 0 and 1")]
const KERNEL_MODE: KPROCESSOR_MODE = _MODE::KernelMode as KPROCESSOR_MODE;

/// What pins need from the device, copied out under the context's lock.
#[derive(Clone, Copy)]
pub struct PinResources {
    /// The channel's bus functions.
    pub bus: BusChannel,
    /// What device start decided.
    pub setup: DeviceSetup,
}

/// What only the `PnP` dispatches (Add, Start, Stop, `SurpriseRemoval`,
/// Remove, serialised by the `PnP` manager) and the final free touch.
struct PnpState {
    /// The bus reference (`IRP_MN_QUERY_INTERFACE`), held from the first
    /// Start to Remove.
    bus: Option<BusClient>,
    /// The setup the filter factory's descriptors were built from.
    factory_setup: Option<DeviceSetup>,
    /// The descriptors handed to `KsCreateFilterFactory`: written once, at
    /// the first Start, before the factory exists; KS reads them until the
    /// device object goes (the context goes with it, through the object bag).
    framing: MaybeUninit<KSALLOCATOR_FRAMING_EX>,
    pin: MaybeUninit<KSPIN_DESCRIPTOR_EX>,
    filter: MaybeUninit<KSFILTER_DESCRIPTOR>,
    factory: PKSFILTERFACTORY,
}

/// `KSDEVICE.Context`: non-paged pool, allocated in Add, freed by the
/// device's object bag; it never moves.
pub struct DeviceContext {
    /// What pin creation reads: set by Start, cleared by Stop,
    /// `SurpriseRemoval` and Remove.
    pins: spin::Mutex<Option<PinResources>>,
    /// After `SurpriseRemoval` or Remove: Start does not publish [`Self::pins`] again.
    removed: AtomicBool,
    pnp: UnsafeCell<PnpState>,
}

impl DeviceContext {
    /// Runs `f` on the pin resources with the lock held at
    /// `DISPATCH_LEVEL` (as the core's spin locks: never held where the
    /// thread could be preempted).
    fn locked<R>(&self, f: impl FnOnce(&mut Option<PinResources>) -> R) -> R {
        let old = ddi::raise_to_dispatch();
        let result = f(&mut self.pins.lock());
        ddi::lower_irql(old);
        result
    }

    /// What a new pin needs, while the device is started and not removed.
    pub fn pin_resources(&self) -> Option<PinResources> {
        self.locked(|p| *p)
    }

    /// The `PnP`-only state.
    ///
    /// # Safety
    /// Only from a `PnP` dispatch of this device (the `PnP` manager runs one at
    /// a time) or the final free, and not while another reference from this
    /// function is alive.
    #[allow(clippy::mut_from_ref, reason = "exclusive by the PnP manager's serialisation (see Safety)")]
    unsafe fn pnp(&self) -> &mut PnpState {
        // SAFETY: exclusive access is the caller's guarantee.
        unsafe { &mut *self.pnp.get() }
    }
}

/// The context of `device`.
///
/// # Safety
/// `device` must be a live `PKSDEVICE` of this driver whose Add succeeded.
pub unsafe fn context<'a>(device: PKSDEVICE) -> Option<&'a DeviceContext> {
    // SAFETY: the caller guarantees a live device.
    let context = unsafe { (*device).Context }.cast::<DeviceContext>();
    // SAFETY: Add set `Context` to a DeviceContext that lives as long as the
    // device object.
    unsafe { context.as_ref() }
}

/// `PFNKSFREE` of the context (the device's object bag, when the device
/// object is deleted): releases a bus reference Remove did not (a device
/// that never got Remove), drops the context, frees the pool.
unsafe extern "C" fn free_context(data: *mut c_void) {
    let context = data.cast::<DeviceContext>();
    if context.is_null() {
        return;
    }
    // SAFETY: the bag was given the context allocated by `add`, and frees
    // it once.
    let context_ref = unsafe { &*context };
    // SAFETY: no pin or PnP dispatch runs any more (the device object is
    // being deleted), so this is the only access.
    let leftover = unsafe { context_ref.pnp() }.bus.take();
    if let Some(client) = leftover {
        // SAFETY: no pin exists (the device is being deleted), so no
        // BusChannel of this client is used again.
        unsafe { client.release() };
    }
    // SAFETY: as above; the context was initialised by `add` and is
    // dropped once (no reference to it is used afterwards).
    unsafe { ptr::drop_in_place(context) };
    // SAFETY: `data` is the allocation of `add`, freed once.
    unsafe { ddi::free(data) };
}

/// `AVStrMiniDeviceAdd`: allocates the device context. PASSIVE.
pub unsafe extern "C" fn add(device: PKSDEVICE) -> NTSTATUS {
    // SAFETY: the caller's guarantees, passed on.
    let status = unsafe { add_inner(device) };
    if !super::ddi::nt_success(status) {
        super::trace::failure(super::trace::Area::Pnp, "AVStrMiniDeviceAdd", status);
    }
    status
}

/// [`add`] before its failure is traced.
///
/// # Safety
/// As [`add`].
unsafe fn add_inner(device: PKSDEVICE) -> NTSTATUS {
    let memory = ddi::allocate(size_of::<DeviceContext>());
    if memory.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let context = memory.cast::<DeviceContext>();
    // SAFETY: `memory` is a fresh, suitably aligned (pool memory is 16-byte
    // aligned; asserted below) allocation of the context's size.
    unsafe {
        context.write(DeviceContext {
            pins: spin::Mutex::new(None),
            removed: AtomicBool::new(false),
            pnp: UnsafeCell::new(PnpState {
                bus: None,
                factory_setup: None,
                framing: MaybeUninit::uninit(),
                pin: MaybeUninit::uninit(),
                filter: MaybeUninit::uninit(),
                factory: ptr::null_mut(),
            }),
        });
    }
    // SAFETY: KS passes a live device.
    let bag = unsafe { (*device).Bag };
    // The device's bag is guarded by the device mutex, which AVStream does
    // not hold around Add ("KsAddItemToObjectBag function (ks.h)", "Device
    // Mutex in AVStream"): taken here around the addition.
    // SAFETY: KS passes a live device; Add runs at PASSIVE_LEVEL.
    unsafe { KsAcquireDevice(device) };
    // SAFETY: the device's bag frees the context (with `free_context`) when
    // the device object goes.
    let status = unsafe { KsAddItemToObjectBag(bag, memory, Some(free_context)) };
    // SAFETY: taken just above, on this thread.
    unsafe { KsReleaseDevice(device) };
    if !nt_success(status) {
        // SAFETY: the bag did not take the context: it is ours to drop and free.
        unsafe { free_context(memory) };
        return status;
    }
    // SAFETY: as above; KS reads `Context` only as the minidriver's.
    unsafe { (*device).Context = memory };
    STATUS_SUCCESS
}

const _: () = assert!(core::mem::align_of::<DeviceContext>() <= 16);

/// `IoGetDeviceProperty(Pdo, DevicePropertyAddress)`: the bus reports each
/// child's channel number as its address (`DEVICE_CAPABILITIES.Address`,
/// `bus-driver/src/pnp/capabilities.rs`).
///
/// # Safety
/// `pdo` must be the device's physical device object.
unsafe fn channel_of(pdo: PDEVICE_OBJECT) -> Result<u32, NtStatus> {
    let mut channel: ULONG = 0;
    let mut length: ULONG = 0;
    // SAFETY: the caller guarantees the PDO; the buffer is a live local of
    // the size passed.
    let status = unsafe {
        IoGetDeviceProperty(
            pdo,
            DEVICE_REGISTRY_PROPERTY::DevicePropertyAddress,
            descriptors::ulong_size_of::<ULONG>(),
            (&raw mut channel).cast(),
            &raw mut length,
        )
    };
    if nt_success(status) {
        Ok(channel)
    } else {
        Err(status)
    }
}

/// Sends `IRP_MN_QUERY_INTERFACE` for `GUID_CAPDMA_BUS_INTERFACE` to
/// `target` (the next lower device: the bus's child PDO, through any lower
/// filter) and waits for it: `IoBuildSynchronousFsdRequest(IRP_MJ_PNP)`,
/// `IoStatus.Status = STATUS_NOT_SUPPORTED` (`PnP` IRPs start so),
/// `IofCallDriver`, `KeWaitForSingleObject`. On success the bus has filled
/// `answer` and taken one reference for us. PASSIVE.
///
/// Sent to the next lower device rather than to the top of the stack
/// (`IoGetAttachedDeviceReference`): the interface is the bus driver's,
/// answered by its child PDO at the bottom of this stack, and a driver
/// may originate an IRP to the drivers below it. Upper filters above the
/// AVStream FDO have no part in the bus interface, so they are not asked.
/// The device mutex is not held while the query waits (Start takes it
/// only around `KsCreateFilterFactory`).
///
/// # Safety
/// `target` must be a live device object of this stack below ours.
unsafe fn query_bus_interface(target: PDEVICE_OBJECT) -> Result<CapdmaBusInterface, NtStatus> {
    let mut answer = BusClient::query_buffer();
    let interface_type: GUID = descriptors::guid(GUID_CAPDMA_BUS_INTERFACE.into());
    let mut event = MaybeUninit::<KEVENT>::zeroed();
    let mut iosb = MaybeUninit::<IO_STATUS_BLOCK>::zeroed();
    // SAFETY: `event` is a live local initialised here before use.
    unsafe { KeInitializeEvent(event.as_mut_ptr(), _EVENT_TYPE::NotificationEvent, 0) };
    // SAFETY: `target` is live (caller); no buffer; `event` and `iosb`
    // outlive the IRP, which completes before this function returns (the
    // wait below).
    let irp: PIRP = unsafe {
        IoBuildSynchronousFsdRequest(
            IRP_MJ_PNP,
            target,
            ptr::null_mut(),
            0,
            ptr::null_mut(),
            event.as_mut_ptr(),
            iosb.as_mut_ptr(),
        )
    };
    if irp.is_null() {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    // SAFETY: `irp` is the IRP just built; we own it until `IofCallDriver`.
    let io_status = unsafe { &mut (*irp).IoStatus };
    io_status.__bindgen_anon_1 = _IO_STATUS_BLOCK__bindgen_ty_1 { Status: STATUS_NOT_SUPPORTED };
    // SAFETY: built for `target`'s stack size: the next location exists.
    let stack = unsafe { next_stack(irp) };
    // SAFETY: the next stack location of an IRP we own, not yet sent.
    let stack = unsafe { &mut *stack };
    stack.MinorFunction = IRP_MN_QUERY_INTERFACE_MINOR;
    stack.Parameters.QueryInterface = _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_26 {
        InterfaceType: &raw const interface_type,
        Size: BusClient::REQUEST_SIZE,
        Version: BusClient::REQUEST_VERSION,
        Interface: (&raw mut answer).cast::<INTERFACE>(),
        InterfaceSpecificData: ptr::null_mut(),
    };
    // SAFETY: `target` is live (caller); `interface_type` and `answer`
    // outlive the IRP (it completes before this function returns).
    let status = unsafe { IofCallDriver(target, irp) };
    let status = if status == STATUS_PENDING {
        // SAFETY: `event` is the IRP's completion event, live until it is
        // set. Without a timeout the wait returns STATUS_SUCCESS once it is.
        let _ = unsafe {
            KeWaitForSingleObject(event.as_mut_ptr().cast(), _KWAIT_REASON::Executive, KERNEL_MODE, 0, ptr::null_mut())
        };
        // SAFETY: the I/O manager wrote the final status before setting the event.
        let iosb = unsafe { iosb.assume_init() };
        // SAFETY: `Status` is the member it wrote.
        unsafe { iosb.__bindgen_anon_1.Status }
    } else {
        status
    };
    if nt_success(status) {
        Ok(answer)
    } else {
        Err(status)
    }
}

/// Builds the descriptors from `setup` in the context and creates the filter
/// factory (`KsCreateFilterFactory` on the FDO, `RefString` =
/// [`REFERENCE_STRING`]) with the device mutex held (`KsAcquireDevice` /
/// `KsReleaseDevice` around the call, as `KsCreateFilterFactory` requires).
/// First Start only.
///
/// # Safety
/// `device` must be the live device of `pnp`'s context, in its Start
/// dispatch, with no filter factory created yet, and the caller must not
/// hold the device mutex (it is not recursive).
unsafe fn create_filter_factory(device: PKSDEVICE, pnp: &mut PnpState, setup: &DeviceSetup) -> NtStatus {
    let framing = pnp.framing.write(descriptors::framing(&setup.framing));
    let pin = pnp.pin.write(descriptors::pin_descriptor(setup.pin_flags, framing));
    let filter = pnp.filter.write(descriptors::filter_descriptor(pin));
    // SAFETY: the caller guarantees a live device.
    let fdo = unsafe { (*device).FunctionalDeviceObject };
    // SAFETY: a live device (caller); PASSIVE_LEVEL (Start); the caller
    // does not hold the mutex, which is released just below.
    unsafe { KsAcquireDevice(device) };
    // SAFETY: the descriptors live in the context, which never moves and
    // outlives the factory (both go with the device object); they are not
    // written again. The reference string is a static. The device mutex
    // is held (acquired above).
    let status = unsafe {
        KsCreateFilterFactory(
            fdo,
            filter,
            REFERENCE_STRING.as_ptr().cast_mut(),
            ptr::null_mut(),
            0,
            None,
            None,
            &raw mut pnp.factory,
        )
    };
    // SAFETY: acquired above by this thread, released once.
    unsafe { KsReleaseDevice(device) };
    if nt_success(status) {
        pnp.factory_setup = Some(*setup);
    }
    status
}

/// `AVStrMiniDeviceStart`. PASSIVE; the device mutex is not held on entry
/// (step 4 takes it around `KsCreateFilterFactory`).
///
/// 1. The channel (`IoGetDeviceProperty(DevicePropertyAddress)`) and the
///    bus reference (`IRP_MN_QUERY_INTERFACE` to the next lower device,
///    checked by `BusClient::from_query`), at the first start; kept across
///    restarts.
/// 2. `device_start` (the core): `GetDmaConfig`, S/G `GetDmaAdapter`.
/// 3. S/G: the adapter registered through
///    `IKsDeviceFunctions::RegisterAdapterObjectEx` (`super::adapter`), at
///    every start; its failure fails the start.
/// 4. First start: the filter factory (`KsCreateFilterFactory` under
///    `KsAcquireDevice`/`KsReleaseDevice`); a restart must keep the pin's shape
///    (`DeviceSetup::can_restart_as`), else `STATUS_DEVICE_CONFIGURATION_ERROR`.
/// 5. Pins may be created.
///
/// A failure leaves the bus reference held (Remove, which follows a failed
/// start, releases it).
pub unsafe extern "C" fn start(
    device: PKSDEVICE,
    irp: PIRP,
    translated: PCM_RESOURCE_LIST,
    untranslated: PCM_RESOURCE_LIST,
) -> NTSTATUS {
    // SAFETY: the caller's guarantees, passed on.
    let status = unsafe { start_inner(device, irp, translated, untranslated) };
    if !super::ddi::nt_success(status) {
        super::trace::failure(super::trace::Area::Pnp, "AVStrMiniDeviceStart", status);
    }
    status
}

/// [`start`] before its failure is traced.
///
/// # Safety
/// As [`start`].
unsafe fn start_inner(
    device: PKSDEVICE,
    _irp: PIRP,
    _translated: PCM_RESOURCE_LIST,
    _untranslated: PCM_RESOURCE_LIST,
) -> NTSTATUS {
    // SAFETY: KS passes the live device whose Add succeeded.
    let Some(context) = (unsafe { context(device) }) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: a PnP dispatch of this device; the only reference.
    let pnp = unsafe { context.pnp() };
    if pnp.bus.is_none() {
        // SAFETY: KS passes a live, starting device: its PDO and next lower
        // device are live while it is attached.
        let pdo = unsafe { (*device).PhysicalDeviceObject };
        // SAFETY: as above.
        let next = unsafe { (*device).NextDeviceObject };
        // SAFETY: as above.
        let channel = match unsafe { channel_of(pdo) } {
            Ok(channel) => channel,
            Err(status) => return status,
        };
        // SAFETY: as above.
        let answer = match unsafe { query_bus_interface(next) } {
            Ok(answer) => answer,
            Err(status) => return status,
        };
        // SAFETY: the bus filled `answer` for this query (its context and
        // functions stay valid while the reference it took is held) and
        // took one reference for us, which the client now owns (or drops,
        // for a bad answer).
        match unsafe { BusClient::from_query(&answer, channel) } {
            Ok(client) => pnp.bus = Some(client),
            Err(status) => return status,
        }
    }
    let Some(client) = pnp.bus.as_ref() else {
        return STATUS_NOT_SUPPORTED;
    };
    let setup = match device_start(client) {
        Ok(setup) => setup,
        Err(status) => return status,
    };
    let bus = client.channel();
    if let Some(adapter) = setup.adapter {
        // SAFETY: in this device's Start; the adapter is the bus's, valid
        // while the interface reference is held (until Remove, after every
        // pin is gone).
        let status = unsafe { super::adapter::register(device, &adapter) };
        if !nt_success(status) {
            return status;
        }
    }
    let status = match pnp.factory_setup {
        // SAFETY: in Start of this device, no factory yet.
        None => unsafe { create_filter_factory(device, pnp, &setup) },
        Some(built) if built.can_restart_as(&setup) => STATUS_SUCCESS,
        Some(_) => STATUS_DEVICE_CONFIGURATION_ERROR,
    };
    if nt_success(status) && !context.removed.load(Ordering::Acquire) {
        super::trace::device_start(bus.channel(), setup.mode.name(), setup.reason.map_or("unknown", ModeReason::describe));
        context.locked(|p| *p = Some(PinResources { bus, setup }));
    }
    status
}

/// `AVStrMiniDeviceStop` (`IRP_MN_STOP_DEVICE`): no new pins until the next
/// Start. The bus reference and the filter factory stay. PASSIVE.
pub unsafe extern "C" fn stop(device: PKSDEVICE, _irp: PIRP) {
    super::trace::device_stop("AVStrMiniDeviceStop");
    // SAFETY: KS passes the live device whose Add succeeded.
    if let Some(context) = unsafe { context(device) } {
        context.locked(|p| *p = None);
    }
}

/// `AVStrMiniDeviceSurpriseRemoval`: the channel is gone; no new pins. Open
/// pins see the bus's `STATUS_DEVICE_REMOVED` and stop; the bus reference is
/// released at Remove. PASSIVE.
pub unsafe extern "C" fn surprise_removal(device: PKSDEVICE, _irp: PIRP) {
    super::trace::surprise_removal();
    // SAFETY: KS passes the live device whose Add succeeded.
    if let Some(context) = unsafe { context(device) } {
        context.removed.store(true, Ordering::Release);
        context.locked(|p| *p = None);
    }
}

/// `AVStrMiniDeviceRemove` (`IRP_MN_REMOVE_DEVICE`): releases the bus
/// reference (`InterfaceDereference`, once). Every pin is closed by then
/// (the `PnP` manager removes a device only after its last handle is
/// closed), so no `BusChannel` is used afterwards. PASSIVE.
pub unsafe extern "C" fn remove(device: PKSDEVICE, _irp: PIRP) {
    super::trace::device_stop("AVStrMiniDeviceRemove");
    // SAFETY: KS passes the live device whose Add succeeded.
    let Some(context) = (unsafe { context(device) }) else {
        return;
    };
    context.removed.store(true, Ordering::Release);
    context.locked(|p| *p = None);
    // SAFETY: a PnP dispatch of this device; the only reference.
    let pnp = unsafe { context.pnp() };
    if let Some(client) = pnp.bus.take() {
        // SAFETY: no pin is open (see above) and none can be created any
        // more, so no BusChannel of this client is used again.
        unsafe { client.release() };
    }
}
