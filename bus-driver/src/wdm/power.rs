//! `IRP_MJ_POWER`, `IRP_MJ_SYSTEM_CONTROL` and every other major function.
//!
//! # Power at the FDO
//!
//! The bus is the PCI function driver of the board, so its FDO is the
//! device power policy owner. Every decision and everything done to the
//! board is the core's (`crate::power`); this module moves the IRPs:
//!
//! | IRP | handling |
//! |---|---|
//! | `IRP_MN_SET_POWER`, `SystemPowerState` | remove lock; `IoMarkIrpPending`, `IoCopyCurrentIrpStackLocationToNext`, completion routine, `PoCallDriver`, `STATUS_PENDING`. The completion routine (lower drivers done; any IRQL <= `DISPATCH_LEVEL`) requests the device state `crate::power::device_state_for` names with `PoRequestPowerIrp(PciPdo, IRP_MN_SET_POWER, …, callback, FDO extension)` — always, even when the device is already there — and returns `STATUS_MORE_PROCESSING_REQUIRED`; the callback completes the system IRP with the lower drivers' status (a system set-power IRP is not failed) and releases the remove lock |
//! | `IRP_MN_SET_POWER`, `DevicePowerState` D1..D3 | `PoSetPowerState` (before leaving D0), `BusDevice::power_down`, the ISR barrier (`isr_dpc::interrupt_barrier`) and `KeFlushQueuedDpcs`, then passed down (`PoCallDriver`), where the PCI bus driver turns the power off |
//! | `IRP_MN_SET_POWER`, `DevicePowerState` D0 | passed down with a completion routine; when the lower drivers succeeded it, `BusDevice::power_up` and `PoSetPowerState(D0)` (both allowed at `DISPATCH_LEVEL`) |
//! | (`IRP_MN_START_DEVICE`) | [`started_in_d0`]: `PoSetPowerState(D0)`; the core assumes D0 at every start |
//! | anything else (`QUERY_POWER`, `WAIT_WAKE`, `POWER_SEQUENCE`) | passed down |
//!
//! Power IRPs reach the FDO at `PASSIVE_LEVEL`: it has `DO_POWER_PAGABLE`
//! as the PCI PDO of a function outside the paging path does
//! (`super::fdo::add_device`). Leaving D0 needs that (`PoSetPowerState`
//! to D1..D3 at <= `APC_LEVEL`, `KeFlushQueuedDpcs` at `PASSIVE_LEVEL`); on
//! a non-pageable stack the two calls are skipped (logged) and the rest,
//! which the core allows at `DISPATCH_LEVEL`, still runs.
//! `PoStartNextPowerIrp` is not needed from Windows Vista on.
//!
//! # Power at a child PDO
//!
//! A child PDO is the bottom of its stack and has no hardware of its own:
//! `IRP_MN_SET_POWER` for a device state is recorded with `PoSetPowerState`
//! and succeeded, for a system state succeeded; `IRP_MN_QUERY_POWER`
//! succeeded; anything else completed with the status it carries.
use super::ddi::{
    complete_request, complete_untouched, copy_current_stack_to_next, current_irql, current_stack, irp_status,
    mark_irp_pending, pending_returned, set_completion_routine, skip_current_stack, STATUS_CONTINUE_COMPLETION,
    STATUS_MORE_PROCESSING_REQUIRED,
};
use super::extension::{extension, Extension};
use super::fdo::FdoExtension;
use super::irp::{acquire_remove_lock, pass_down, release_remove_lock};
use super::isr_dpc;
use crate::power::{device_power_action, device_state_for, DevicePowerAction, DevicePowerState, SystemPowerState};
use capdma_interface::status::{nt_success, STATUS_INVALID_DEVICE_REQUEST, STATUS_PENDING, STATUS_SUCCESS};
use core::ffi::c_void;
use core::ptr::null_mut;
use core::sync::atomic::Ordering;
use wdk_sys::ntddk::{IofCompleteRequest, PoCallDriver, PoRequestPowerIrp, PoSetPowerState};
use wdk_sys::{
    _POWER_STATE_TYPE, CCHAR, IO_NO_INCREMENT, IO_STATUS_BLOCK, IRP_MN_QUERY_POWER, IRP_MN_SET_POWER,
    NTSTATUS, PDEVICE_OBJECT, PIRP, POWER_STATE, UCHAR,
};

// `KeFlushQueuedDpcs` needs `PASSIVE_LEVEL`; `PoSetPowerState` to D1..D3
// needs `APC_LEVEL` or below.
use capdma_interface::kernel::{APC_LEVEL, PASSIVE_LEVEL};

/// A minor function code as the `u8` of `IO_STACK_LOCATION.MinorFunction`.
const fn minor(code: u32) -> u8 {
    code.to_le_bytes()[0]
}

/// What a power IRP asks, from its current stack location.
#[derive(Clone, Copy)]
enum PowerRequest {
    /// `IRP_MN_SET_POWER` for a system power state (the raw value).
    SetSystem(i32),
    /// `IRP_MN_SET_POWER` for a device power state (the raw value).
    SetDevice(i32),
    /// `IRP_MN_QUERY_POWER`, either type.
    Query,
    /// Anything else.
    Other,
}

/// Reads the request of `irp`'s current stack location.
///
/// # Safety
/// `irp` is a valid power IRP owned by the caller's dispatch or completion routine.
unsafe fn power_request(irp: PIRP) -> PowerRequest {
    // SAFETY: the caller's guarantee.
    let stack = unsafe { current_stack(irp) };
    // SAFETY: the IRP's current location.
    let stack = unsafe { &*stack };
    let code = stack.MinorFunction;
    if code == minor(IRP_MN_QUERY_POWER) {
        return PowerRequest::Query;
    }
    if code != minor(IRP_MN_SET_POWER) {
        return PowerRequest::Other;
    }
    // SAFETY: the Power member of an IRP_MN_SET_POWER location.
    let power = unsafe { stack.Parameters.Power };
    if power.Type == _POWER_STATE_TYPE::SystemPowerState {
        // SAFETY: `Type` says `State` holds a system power state.
        PowerRequest::SetSystem(unsafe { power.State.SystemState })
    } else {
        // SAFETY: `Type` says `State` holds a device power state.
        PowerRequest::SetDevice(unsafe { power.State.DeviceState })
    }
}

/// `PoSetPowerState(device, DevicePowerState, state)`.
///
/// # Safety
/// `device` is a live device object of this driver; `<= APC_LEVEL`, or
/// `<= DISPATCH_LEVEL` for D0.
unsafe fn set_device_power_state(device: PDEVICE_OBJECT, state: DevicePowerState) {
    let power = POWER_STATE { DeviceState: state.raw() };
    // SAFETY: the caller's guarantees are PoSetPowerState's; the previous
    // state it returns is not needed.
    let _ = unsafe { PoSetPowerState(device, _POWER_STATE_TYPE::DevicePowerState, power) };
}

/// `IRP_MN_START_DEVICE` succeeded: the device is in D0
/// (`PoSetPowerState(Fdo, DevicePowerState, D0)`, as a driver tells the
/// power manager at start). `PASSIVE_LEVEL`.
pub fn started_in_d0(ext: &FdoExtension) {
    // SAFETY: this FDO, at PASSIVE_LEVEL (the start).
    unsafe { set_device_power_state(ext.self_device, DevicePowerState::D0) };
}

/// `IoSkipCurrentIrpStackLocation` + `PoCallDriver(lower, Irp)`.
///
/// # Safety
/// `irp` is a power IRP sent to the FDO; the caller owns it and gives it up.
unsafe fn pass_power_down(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee.
    unsafe { skip_current_stack(irp) };
    // SAFETY: `lower` is below the FDO; the IRP is given away.
    unsafe { PoCallDriver(ext.lower, irp) }
}

/// `IRP_MJ_POWER`.
///
/// # Safety
/// Called by the I/O manager with a device of this driver and an IRP it owns.
pub unsafe extern "C" fn dispatch_power(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the IRP is ours until the handler gives it away; its current
    // location is read before that.
    let stack = unsafe { current_stack(irp) };
    // SAFETY: the IRP's current location, valid while we own the IRP.
    let minor = unsafe { (*stack).MinorFunction };
    // SAFETY: a device object of this driver.
    let (kind, status) = match unsafe { extension(device) } {
        // SAFETY: we own the IRP and hand it on or complete it once.
        Some(Extension::Fdo(ext)) => ("FDO", unsafe { fdo_power(ext, irp) }),
        // SAFETY: as above; `device` is the PDO.
        Some(Extension::Pdo(_)) => ("PDO", unsafe { pdo_power(device, irp) }),
        // SAFETY: we own the IRP.
        None => ("?", unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) }),
    };
    super::trace::irp_failed(true, minor, kind, status);
    status
}

/// The FDO's `IRP_MJ_POWER` (see the module table). The remove lock is
/// held for the IRP until it leaves this driver (its completion routine or
/// callback, when it has one).
///
/// # Safety
/// We own `irp`, sent to `ext`'s FDO.
unsafe fn fdo_power(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    let lock = ext.remove_lock();
    // SAFETY: the lock was initialized in AddDevice; the IRP is the tag.
    if let Err(status) = unsafe { acquire_remove_lock(lock, irp) } {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, status, 0) };
    }
    // SAFETY: a power IRP we own.
    let request = unsafe { power_request(irp) };
    match request {
        // SAFETY: we own the IRP; the lock is released by its completion.
        PowerRequest::SetSystem(raw) => {
            super::trace::power_transition("system", raw, 0);
            // SAFETY: as above.
            unsafe { system_set_power(ext, irp) }
        }
        PowerRequest::SetDevice(raw) => match DevicePowerState::from_raw(raw) {
            Some(target) if device_power_action(target) == DevicePowerAction::PassDownThenRestore => {
                // SAFETY: we own the IRP; the lock is released by its completion.
                unsafe { device_power_up(ext, irp) }
            }
            Some(target) => {
                device_power_down(ext, target);
                // SAFETY: we own the IRP and give it away once.
                let status = unsafe { pass_power_down(ext, irp) };
                // SAFETY: acquired above with this tag (a tag only, after the IRP left).
                unsafe { release_remove_lock(lock, irp) };
                status
            }
            None => {
                // SAFETY: as above.
                let status = unsafe { pass_power_down(ext, irp) };
                // SAFETY: as above.
                unsafe { release_remove_lock(lock, irp) };
                status
            }
        },
        PowerRequest::Query | PowerRequest::Other => {
            // SAFETY: we own the IRP and give it away once.
            let status = unsafe { pass_power_down(ext, irp) };
            // SAFETY: acquired above with this tag.
            unsafe { release_remove_lock(lock, irp) };
            status
        }
    }
}

/// Leaving D0, before the D-IRP goes down: `PoSetPowerState(target)`
/// first (the device still serves requests until it returns), then
/// `BusDevice::power_down`, the ISR barrier, and `KeFlushQueuedDpcs` (no
/// DPC of the board left running).
fn device_power_down(ext: &FdoExtension, target: DevicePowerState) {
    let irql = current_irql();
    if irql <= APC_LEVEL {
        // SAFETY: this FDO, at <= APC_LEVEL.
        unsafe { set_device_power_state(ext.self_device, target) };
    } else {
        // Practically unreachable: the FDO has DO_POWER_PAGABLE (as the PCI
        // PDO of a function outside the paging path), so D-IRPs come at
        // PASSIVE_LEVEL. Only if a filter made the stack non-pageable would
        // this run at DISPATCH_LEVEL, where PoSetPowerState(D1..D3) is not
        // allowed: the power manager then keeps believing the device is in
        // D0 until the next PoSetPowerState. Said loudly, not hidden.
        wdk::println!(
            "capdma_bus: ERROR: device set-power IRP to {target:?} at IRQL {irql} (non-pageable stack): PoSetPowerState skipped"
        );
    }
    let stopped = ext.bus.power_down();
    isr_dpc::interrupt_barrier(ext);
    if irql == PASSIVE_LEVEL {
        isr_dpc::flush_dpcs();
    }
    wdk::println!("capdma_bus: leaving D0 ({target:?}): {stopped} channel(s) stopped");
    super::trace::power_transition("device", target.raw(), stopped);
}

/// To D0: `IoCopyCurrentIrpStackLocationToNext`, [`device_power_up_done`]
/// as the completion routine, `PoCallDriver`.
///
/// # Safety
/// We own `irp`, a device set-power IRP to D0 sent to `ext`'s FDO, with its
/// remove lock acquired (released by the completion routine).
unsafe fn device_power_up(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: we own the IRP; the FDO is not the bottom of the stack.
    unsafe { copy_current_stack_to_next(irp) };
    let context = core::ptr::from_ref(ext).cast_mut().cast::<c_void>();
    // SAFETY: as above; the extension outlives the IRP (remove lock held).
    unsafe { set_completion_routine(irp, Some(device_power_up_done), context, true, true, true) };
    // SAFETY: the next location is set up for `lower`; the IRP is given away.
    unsafe { PoCallDriver(ext.lower, irp) }
}

/// The completion routine of a D0 IRP (lower drivers done: the board is
/// powered if they succeeded). `<= DISPATCH_LEVEL`. Restores the board
/// (`BusDevice::power_up`), tells the power manager (`PoSetPowerState(D0)`,
/// allowed at `DISPATCH_LEVEL` for D0), releases the remove lock and lets
/// the completion go on.
unsafe extern "C" fn device_power_up_done(_device: PDEVICE_OBJECT, irp: PIRP, context: *mut c_void) -> NTSTATUS {
    // SAFETY: the I/O manager passes the IRP being completed.
    if unsafe { pending_returned(irp) } {
        // SAFETY: our stack location of the IRP being completed.
        unsafe { mark_irp_pending(irp) };
    }
    // SAFETY: `context` is the FDO extension, kept alive by the remove lock
    // this IRP holds.
    let ext = unsafe { &*context.cast::<FdoExtension>() };
    // SAFETY: a valid IRP.
    if nt_success(unsafe { irp_status(irp) }) {
        let restarted = ext.bus.power_up();
        // SAFETY: this FDO; D0 is allowed at DISPATCH_LEVEL.
        unsafe { set_device_power_state(ext.self_device, DevicePowerState::D0) };
        wdk::println!("capdma_bus: back in D0: {restarted} channel(s) restarted");
        super::trace::power_transition("device", DevicePowerState::D0.raw(), restarted);
    } else {
        // The board was not powered: without this the core would stay out
        // of D0 for ever (StartChannel answering STATUS_DEVICE_NOT_READY).
        // Marked gone, the children get STATUS_DEVICE_REMOVED.
        // TODO: IoInvalidateDeviceState(PciPdo) and PNP_DEVICE_FAILED in
        // IRP_MN_QUERY_PNP_DEVICE_STATE, so PnP tears the stack down.
        ext.bus.power_up_failed();
        // SAFETY: a valid IRP.
        let status = unsafe { irp_status(irp) };
        wdk::println!("capdma_bus: ERROR: D0 IRP failed {status:#x}: board marked gone");
        super::trace::failure(super::trace::Area::Power, "D0 IRP (lower drivers)", status);
    }
    // SAFETY: acquired by `fdo_power` with this IRP as the tag; `ext` is not
    // used afterwards.
    unsafe { release_remove_lock(ext.remove_lock(), irp) };
    STATUS_CONTINUE_COMPLETION
}

/// A system set-power IRP: marked pending and passed down with
/// [`system_set_power_done`] as the completion routine.
///
/// # Safety
/// We own `irp`, a system set-power IRP sent to `ext`'s FDO, with its
/// remove lock acquired (released once the IRP leaves this driver).
unsafe fn system_set_power(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: we own the IRP; it is returned pending below.
    unsafe { mark_irp_pending(irp) };
    // SAFETY: we own the IRP; the FDO is not the bottom of the stack.
    unsafe { copy_current_stack_to_next(irp) };
    let context = core::ptr::from_ref(ext).cast_mut().cast::<c_void>();
    // SAFETY: as above; the extension outlives the IRP (remove lock held).
    unsafe { set_completion_routine(irp, Some(system_set_power_done), context, true, true, true) };
    // SAFETY: the next location is set up for `lower`; the IRP is given
    // away (its status reaches the caller through completion).
    let _ = unsafe { PoCallDriver(ext.lower, irp) };
    STATUS_PENDING
}

/// The completion routine of a system set-power IRP (lower drivers done).
/// `<= DISPATCH_LEVEL`. Requests the device set-power IRP for the system
/// state (`PoRequestPowerIrp` on the PCI PDO: sent to the top of this
/// stack) and keeps the system IRP until that one completes
/// ([`device_irp_requested_done`]); when the lower drivers failed it, the
/// state is unknown, or the request fails, lets the completion go on.
unsafe extern "C" fn system_set_power_done(_device: PDEVICE_OBJECT, irp: PIRP, context: *mut c_void) -> NTSTATUS {
    // SAFETY: `context` is the FDO extension, kept alive by the remove lock
    // this IRP holds.
    let ext = unsafe { &*context.cast::<FdoExtension>() };
    // The dispatch routine marked the IRP pending: nothing to propagate.
    // SAFETY: a valid IRP.
    let lower = unsafe { irp_status(irp) };
    // SAFETY: our stack location of a system set-power IRP.
    let request = unsafe { power_request(irp) };
    let target = match request {
        PowerRequest::SetSystem(raw) => SystemPowerState::from_raw(raw).map(device_state_for),
        _ => None,
    };
    if let (true, Some(target)) = (nt_success(lower), target) {
        ext.system_irp.store(irp, Ordering::Release);
        let power = POWER_STATE { DeviceState: target.raw() };
        // SAFETY: the PCI PDO of this stack (the D-IRP goes to the top of
        // its stack, through this FDO); the callback gets the extension,
        // kept alive by the system IRP's remove lock until it completes it.
        let requested = unsafe {
            PoRequestPowerIrp(
                ext.pci_pdo,
                minor(IRP_MN_SET_POWER),
                power,
                Some(device_irp_requested_done),
                context,
                null_mut(),
            )
        };
        if nt_success(requested) {
            // The callback completes the system IRP (maybe already has).
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
        ext.system_irp.store(null_mut(), Ordering::Release);
        wdk::println!("capdma_bus: PoRequestPowerIrp({target:?}) failed {requested:#x}");
        super::trace::failure(super::trace::Area::Power, "PoRequestPowerIrp", requested);
    }
    // SAFETY: acquired by `fdo_power` with this IRP as the tag; `ext` is not
    // used afterwards.
    unsafe { release_remove_lock(ext.remove_lock(), irp) };
    STATUS_CONTINUE_COMPLETION
}

/// `REQUEST_POWER_COMPLETE` of the device set-power IRP requested for a
/// system set-power IRP: completes that system IRP with the status its
/// lower drivers gave it (a system set-power IRP must not be failed; a
/// failed device IRP is logged) and releases its remove lock.
/// `<= DISPATCH_LEVEL`.
unsafe extern "C" fn device_irp_requested_done(
    _device: PDEVICE_OBJECT,
    _minor: UCHAR,
    state: POWER_STATE,
    context: *mut c_void,
    io_status: *mut IO_STATUS_BLOCK,
) {
    // SAFETY: `context` is the FDO extension, kept alive by the remove lock
    // the pending system IRP holds.
    let ext = unsafe { &*context.cast::<FdoExtension>() };
    let system_irp = ext.system_irp.swap(null_mut(), Ordering::AcqRel);
    if !io_status.is_null() {
        // SAFETY: the power manager passes the D-IRP's status block.
        let io_status = unsafe { &*io_status };
        // SAFETY: `Status` is the member the I/O manager wrote.
        let status = unsafe { io_status.__bindgen_anon_1.Status };
        if !nt_success(status) {
            // SAFETY: the state requested (a device state).
            let raw = unsafe { state.DeviceState };
            wdk::println!("capdma_bus: device set-power IRP to {raw} failed {status:#x}");
            super::trace::failure(super::trace::Area::Power, "device set-power IRP", status);
        }
    }
    if system_irp.is_null() {
        return;
    }
    let lock = ext.remove_lock();
    // SAFETY: the system IRP this driver kept (STATUS_MORE_PROCESSING_REQUIRED)
    // and completes exactly once, with the status it carries.
    unsafe { IofCompleteRequest(system_irp, CCHAR::try_from(IO_NO_INCREMENT).unwrap_or(0)) };
    // SAFETY: acquired by `fdo_power` with the system IRP as the tag (a tag
    // only now); `ext` is not used afterwards.
    unsafe { release_remove_lock(lock, system_irp) };
}

/// A child PDO's `IRP_MJ_POWER` (the bottom of its stack).
///
/// # Safety
/// We own `irp`, sent to the child PDO `device`.
unsafe fn pdo_power(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a power IRP we own.
    match unsafe { power_request(irp) } {
        PowerRequest::SetDevice(raw) => {
            if let Some(state) = DevicePowerState::from_raw(raw) {
                // SAFETY: the child PDO; its stack is pageable (the PDO has
                // DO_POWER_PAGABLE, so every device object above it has
                // too), so the IRP arrives at PASSIVE_LEVEL.
                unsafe { set_device_power_state(device, state) };
            }
            // SAFETY: we own the IRP.
            unsafe { complete_request(irp, STATUS_SUCCESS, 0) }
        }
        // SAFETY: we own the IRP.
        PowerRequest::SetSystem(_) | PowerRequest::Query => unsafe { complete_request(irp, STATUS_SUCCESS, 0) },
        // SAFETY: we own the IRP.
        PowerRequest::Other => unsafe { complete_untouched(irp) },
    }
}

/// Runs `pass` with the FDO's remove lock held for `irp`, or completes
/// the IRP with the lock's refusal (`STATUS_DELETE_PENDING`).
///
/// # Safety
/// We own `irp`, sent to `ext`'s FDO; `pass` hands it on exactly once.
unsafe fn with_remove_lock(
    ext: &FdoExtension,
    irp: PIRP,
    pass: unsafe fn(&FdoExtension, PIRP) -> NTSTATUS,
) -> NTSTATUS {
    let lock = ext.remove_lock();
    // SAFETY: the lock was initialized in AddDevice.
    if let Err(status) = unsafe { acquire_remove_lock(lock, irp) } {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, status, 0) };
    }
    // SAFETY: the caller's guarantee.
    let status = unsafe { pass(ext, irp) };
    // SAFETY: acquired above with this tag.
    unsafe { release_remove_lock(lock, irp) };
    status
}

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver(lower, Irp)`.
///
/// # Safety
/// `irp` was sent to the FDO; the caller owns it and gives it up.
unsafe fn pass_on(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantee; `lower` is below the FDO.
    unsafe { pass_down(ext.lower, irp) }
}

/// `IRP_MJ_SYSTEM_CONTROL` (WMI): the FDO passes it down; a PDO completes
/// it untouched (it registers no WMI provider).
///
/// # Safety
/// As [`dispatch_power`].
pub unsafe extern "C" fn dispatch_system_control(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a device object of this driver.
    match unsafe { extension(device) } {
        // SAFETY: we own the IRP and pass it on once.
        Some(Extension::Fdo(ext)) => unsafe { with_remove_lock(ext, irp, pass_on) },
        // SAFETY: we own the IRP.
        Some(Extension::Pdo(_)) => unsafe { complete_untouched(irp) },
        // SAFETY: we own the IRP.
        None => unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) },
    }
}

/// Every other major function: the FDO passes it down (the PCI bus driver
/// answers); a PDO has no such service: `STATUS_INVALID_DEVICE_REQUEST`.
///
/// # Safety
/// As [`dispatch_power`].
pub unsafe extern "C" fn dispatch_other(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a device object of this driver.
    match unsafe { extension(device) } {
        // SAFETY: we own the IRP and pass it on once.
        Some(Extension::Fdo(ext)) => unsafe { with_remove_lock(ext, irp, pass_on) },
        // SAFETY: we own the IRP.
        Some(Extension::Pdo(_)) | None => unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) },
    }
}
