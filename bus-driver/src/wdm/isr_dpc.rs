//! The interrupt (connect, disconnect, the ISRs), the DPC the ISR queues,
//! and the periodic watchdog timer. The routines only forward to the bus
//! core: [`BusDevice::isr`](crate::BusDevice::isr),
//! [`BusDevice::dpc`](crate::BusDevice::dpc) and
//! [`BusDevice::watchdog`](crate::BusDevice::watchdog).
use super::ddi::{now_100ns, BOOLEAN_FALSE, BOOLEAN_TRUE};
use super::fdo::FdoExtension;
use crate::pnp::resources::InterruptResource;
use crate::pnp::WATCHDOG_PERIOD_100NS;
use crate::pnp::WATCHDOG_PERIOD_MS;
use core::ffi::c_void;
use core::ptr::null_mut;
use wdk_sys::ntddk::{
    IoConnectInterruptEx, IoDisconnectInterruptEx, KeAcquireInterruptSpinLock, KeCancelTimer, KeFlushQueuedDpcs,
    KeInitializeDpc, KeInitializeTimerEx, KeInsertQueueDpc, KeReleaseInterruptSpinLock, KeSetTimerEx,
};
use wdk_sys::{
    _KINTERRUPT_MODE, _TIMER_TYPE, BOOLEAN, CONNECT_FULLY_SPECIFIED_GROUP, CONNECT_MESSAGE_BASED,
    IO_CONNECT_INTERRUPT_PARAMETERS, IO_DISCONNECT_INTERRUPT_PARAMETERS, IO_INTERRUPT_MESSAGE_INFO,
    IO_INTERRUPT_MESSAGE_INFO_ENTRY, LARGE_INTEGER, LONG, NTSTATUS, NT_SUCCESS, PKDPC, PKINTERRUPT, PVOID, ULONG,
};

/// What `IoConnectInterruptEx` returned, for `IoDisconnectInterruptEx`:
/// the connection's version (`CONNECT_FULLY_SPECIFIED_GROUP`,
/// `CONNECT_MESSAGE_BASED`, or `CONNECT_LINE_BASED` when a message-based
/// request fell back) and its context (the `PKINTERRUPT` or the
/// `PIO_INTERRUPT_MESSAGE_INFO`).
pub struct InterruptConnection {
    version: ULONG,
    context: *mut c_void,
}

// SAFETY: the connection context is a system object handle, valid on any
// thread; it is only used by the (serialized) Plug and Play paths.
unsafe impl Send for InterruptConnection {}

/// Initializes the ISR's DPC and the watchdog's timer and DPC
/// (`KeInitializeDpc`, `KeInitializeTimerEx(NotificationTimer)`), with the
/// extension as their context.
///
/// # Safety
/// `ext` is the FDO extension being initialized (valid, not yet shared).
pub unsafe fn init_dpcs(ext: *mut FdoExtension) {
    // SAFETY: a field of the valid extension; only its address is taken.
    let dpc = unsafe { &raw mut (*ext).dpc };
    // SAFETY: as above.
    let timer_dpc = unsafe { &raw mut (*ext).timer_dpc };
    // SAFETY: as above.
    let timer = unsafe { &raw mut (*ext).timer };
    // SAFETY: the kernel initializes the DPC; the extension outlives every
    // queued DPC (the teardown cancels the timer and flushes DPCs before deletion).
    unsafe { KeInitializeDpc(dpc.cast(), Some(interrupt_dpc), ext.cast()) };
    // SAFETY: as above.
    unsafe { KeInitializeDpc(timer_dpc.cast(), Some(watchdog_dpc), ext.cast()) };
    // SAFETY: as above.
    unsafe { KeInitializeTimerEx(timer.cast(), _TIMER_TYPE::NotificationTimer) };
}

/// The extension from an ISR/DPC context.
///
/// # Safety
/// `context` is the FDO extension the routine was registered with.
unsafe fn fdo<'a>(context: PVOID) -> &'a FdoExtension {
    // SAFETY: the caller's guarantee; the extension lives until the
    // interrupt is disconnected and the DPCs flushed.
    unsafe { &*context.cast::<FdoExtension>() }
}

/// The ISR body: `BusDevice::isr`, and `KeInsertQueueDpc` when the board interrupted.
///
/// # Safety
/// As [`fdo`].
unsafe fn service(context: PVOID) -> BOOLEAN {
    // SAFETY: the caller's guarantee.
    let ext = unsafe { fdo(context) };
    if ext.bus.isr() {
        // SAFETY: the DPC was initialized with this extension; inserting an
        // already queued DPC is a no-op, which is what coalescing wants.
        unsafe { KeInsertQueueDpc(ext.dpc.get(), null_mut(), null_mut()) };
        BOOLEAN_TRUE
    } else {
        BOOLEAN_FALSE
    }
}

/// `KSERVICE_ROUTINE` for a line-based interrupt (and the fallback of a
/// message-based connection). Device IRQL.
unsafe extern "C" fn line_isr(_interrupt: PKINTERRUPT, context: PVOID) -> BOOLEAN {
    // SAFETY: registered with the FDO extension as context.
    unsafe { service(context) }
}

/// `KMESSAGE_SERVICE_ROUTINE`: every message means "look at `INT_STATUS`". Device IRQL.
unsafe extern "C" fn message_isr(_interrupt: PKINTERRUPT, context: PVOID, _message_id: ULONG) -> BOOLEAN {
    // SAFETY: registered with the FDO extension as context.
    unsafe { service(context) }
}

/// `KDEFERRED_ROUTINE` queued by the ISR: `BusDevice::dpc(KeQueryInterruptTime())`.
unsafe extern "C" fn interrupt_dpc(_dpc: PKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    // SAFETY: initialized with the FDO extension as context.
    let ext = unsafe { fdo(context) };
    ext.bus.dpc(now_100ns());
}

/// `KDEFERRED_ROUTINE` of the watchdog timer: `BusDevice::watchdog(KeQueryInterruptTime())`.
unsafe extern "C" fn watchdog_dpc(_dpc: PKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    // SAFETY: initialized with the FDO extension as context.
    let ext = unsafe { fdo(context) };
    let reset = ext.bus.watchdog(now_100ns());
    if reset > 0 {
        wdk::println!("capdma_bus: watchdog reset {reset} channel(s)");
        super::trace::watchdog_fired(reset);
    }
}

/// `IoConnectInterruptEx`: `CONNECT_MESSAGE_BASED` on the PCI PDO (with
/// the line-based ISR as fallback) for a message-signalled interrupt,
/// `CONNECT_FULLY_SPECIFIED_GROUP` with the translated vector, IRQL, mode,
/// sharing, processor group and affinity (a mask within that group) for a
/// line-based one. `PASSIVE_LEVEL`, after `BusDevice::start`.
///
/// # Errors
/// `IoConnectInterruptEx`'s status.
pub fn connect(ext: &FdoExtension, resource: InterruptResource) -> Result<(), NTSTATUS> {
    let mut context: *mut c_void = null_mut();
    let service_context: PVOID = core::ptr::from_ref(ext).cast_mut().cast();
    let mut params = IO_CONNECT_INTERRUPT_PARAMETERS::default();
    match resource {
        InterruptResource::Message { .. } => {
            params.Version = CONNECT_MESSAGE_BASED;
            // SAFETY: writing the union member that `Version` selects.
            let message = unsafe { &mut params.__bindgen_anon_1.MessageBased };
            message.PhysicalDeviceObject = ext.pci_pdo;
            message.ConnectionContext.Generic = &raw mut context;
            message.MessageServiceRoutine = Some(message_isr);
            message.ServiceContext = service_context;
            message.SpinLock = null_mut();
            message.SynchronizeIrql = 0;
            message.FloatingSave = BOOLEAN_FALSE;
            message.FallBackServiceRoutine = Some(line_isr);
        }
        InterruptResource::Line { vector, irql, group, affinity, shared, latched } => {
            // `Group` is honoured only with this version (plain
            // CONNECT_FULLY_SPECIFIED means group 0).
            params.Version = CONNECT_FULLY_SPECIFIED_GROUP;
            // SAFETY: writing the union member that `Version` selects.
            let line = unsafe { &mut params.__bindgen_anon_1.FullySpecified };
            line.PhysicalDeviceObject = ext.pci_pdo;
            line.InterruptObject = (&raw mut context).cast();
            line.ServiceRoutine = Some(line_isr);
            line.ServiceContext = service_context;
            line.SpinLock = null_mut();
            line.SynchronizeIrql = irql;
            line.FloatingSave = BOOLEAN_FALSE;
            line.ShareVector = if shared { BOOLEAN_TRUE } else { BOOLEAN_FALSE };
            line.Vector = vector;
            line.Irql = irql;
            line.InterruptMode = if latched { _KINTERRUPT_MODE::Latched } else { _KINTERRUPT_MODE::LevelSensitive };
            line.ProcessorEnableMask = affinity;
            line.Group = group;
        }
    }
    // SAFETY: the parameters are complete for their version; `context`
    // receives the connection; the ISR context (the extension) outlives the
    // connection (disconnected before the FDO is deleted).
    let status = unsafe { IoConnectInterruptEx(&raw mut params) };
    if !NT_SUCCESS(status) {
        return Err(status);
    }
    // `Version` now says what was connected (a message-based request may
    // have fallen back to CONNECT_LINE_BASED).
    let connection = InterruptConnection { version: params.Version, context };
    ext.with_interrupt(|slot| *slot = Some(connection));
    Ok(())
}

/// `IoDisconnectInterruptEx` with the version and context the connection
/// returned. Idempotent. `PASSIVE_LEVEL` (the connection is taken out
/// under its lock at `DISPATCH_LEVEL`, then disconnected with the lock
/// released).
pub fn disconnect(ext: &FdoExtension) {
    let Some(connection) = ext.with_interrupt(Option::take) else {
        return;
    };
    let mut params = IO_DISCONNECT_INTERRUPT_PARAMETERS {
        Version: connection.version,
        ConnectionContext: wdk_sys::_IO_DISCONNECT_INTERRUPT_PARAMETERS__bindgen_ty_1 { Generic: connection.context },
    };
    // SAFETY: exactly what IoConnectInterruptEx returned; disconnected once.
    unsafe { IoDisconnectInterruptEx(&raw mut params) };
}

/// Waits until no ISR of this device that started before the call is still
/// running: acquires and releases the interrupt spin lock of each of the
/// connection's interrupt objects (`KeAcquireInterruptSpinLock` /
/// `KeReleaseInterruptSpinLock`; every message's object for a
/// message-based connection). Used when leaving D0: an ISR that read the
/// core's power state as D0 just before `BusDevice::power_down` may still
/// be about to read `INT_STATUS`, and must be done before the board loses
/// power (it would read all ones and take the board for gone). Nothing to
/// do without a connection. `<= DISPATCH_LEVEL`.
pub fn interrupt_barrier(ext: &FdoExtension) {
    ext.with_interrupt(|connection| {
        let Some(connection) = connection.as_ref() else {
            return;
        };
        if connection.version == CONNECT_MESSAGE_BASED {
            let info = connection.context.cast::<IO_INTERRUPT_MESSAGE_INFO>();
            if info.is_null() {
                return;
            }
            // SAFETY: the message info IoConnectInterruptEx returned, valid
            // until IoDisconnectInterruptEx, which cannot run while the
            // connection's lock is held.
            let count = unsafe { (*info).MessageCount };
            // SAFETY: as above (only the array's address is taken).
            let first = unsafe { &raw const (*info).MessageInfo }.cast::<IO_INTERRUPT_MESSAGE_INFO_ENTRY>();
            for index in 0..usize::try_from(count).unwrap_or(0) {
                // SAFETY: `MessageInfo` holds `MessageCount` entries (a
                // variable-length array declared with one).
                let object = unsafe { (*first.wrapping_add(index)).InterruptObject };
                // SAFETY: an interrupt object of the live connection.
                unsafe { synchronize_with_isr(object) };
            }
        } else {
            // CONNECT_FULLY_SPECIFIED_GROUP, or CONNECT_LINE_BASED after a
            // message-based fallback: the context is the PKINTERRUPT.
            // SAFETY: the interrupt object of the live connection.
            unsafe { synchronize_with_isr(connection.context.cast()) };
        }
    });
}

/// `KeAcquireInterruptSpinLock` + `KeReleaseInterruptSpinLock`: the ISR of
/// `object` (which runs holding that lock) is not running on return.
///
/// # Safety
/// `object` is null or a connected interrupt object; `<= DISPATCH_LEVEL`.
unsafe fn synchronize_with_isr(object: PKINTERRUPT) {
    if object.is_null() {
        return;
    }
    // SAFETY: the caller's guarantee; raises to the interrupt's SynchronizeIrql.
    let old = unsafe { KeAcquireInterruptSpinLock(object) };
    // SAFETY: acquired just above on this processor, released once.
    unsafe { KeReleaseInterruptSpinLock(object, old) };
}

/// Arms the periodic watchdog timer (`KeSetTimerEx`, first expiry and
/// period [`WATCHDOG_PERIOD_MS`]).
pub fn start_watchdog(ext: &FdoExtension) {
    let due = LARGE_INTEGER { QuadPart: -WATCHDOG_PERIOD_100NS };
    let period = LONG::try_from(WATCHDOG_PERIOD_MS).unwrap_or(LONG::MAX);
    // SAFETY: the timer and its DPC were initialized with this extension,
    // which outlives them (cancelled and flushed before deletion).
    unsafe { KeSetTimerEx(ext.timer.get(), due, period, ext.timer_dpc.get()) };
}

/// `KeCancelTimer` on the watchdog timer. Idempotent. A watchdog DPC
/// already queued still runs: follow with [`flush_dpcs`].
pub fn stop_watchdog(ext: &FdoExtension) {
    // SAFETY: an initialized timer.
    unsafe { KeCancelTimer(ext.timer.get()) };
}

/// `KeFlushQueuedDpcs()`: returns once every queued DPC (the ISR's and the
/// watchdog's) has run. `PASSIVE_LEVEL`.
pub fn flush_dpcs() {
    // SAFETY: no arguments; called at PASSIVE_LEVEL from Plug and Play paths.
    unsafe { KeFlushQueuedDpcs() };
}
