//! What must be gone before the image is unloaded, left behind on purpose:
//! a connected interrupt, a set timer, an unflushed DPC, a device object
//! the removal did not delete. `DriverUnload` (`driver.rs`) undoes none of
//! them.
//!
//! The timer and the DPCs live in the image itself (statics), so that the
//! kernel finds them in the memory it unloads, as Driver Verifier does.
use super::ddi::{BOOLEAN_FALSE, BOOLEAN_TRUE};
use super::driver::fdo;
use capdma_interface::status::{STATUS_DEVICE_BUSY, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, Ordering};
use wdk_sys::ntddk::{IoConnectInterruptEx, KeInitializeDpc, KeInitializeTimerEx, KeInsertQueueDpc, KeSetTimerEx};
use wdk_sys::{
    _KINTERRUPT_MODE, _TIMER_TYPE, BOOLEAN, CONNECT_FULLY_SPECIFIED, IO_CONNECT_INTERRUPT_PARAMETERS, KDPC, KIRQL,
    KTIMER, LARGE_INTEGER, NTSTATUS, PDEVICE_OBJECT, PKDPC, PKINTERRUPT, PVOID, ULONG,
};

/// A kernel object (`KTIMER`, `KDPC`) in the image's own memory, zeroed
/// until the kernel initializes it.
struct KernelObject<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: after its one-time initialization (guarded by an `AtomicBool`
// below) only the kernel touches the object, under its own synchronization.
unsafe impl<T> Sync for KernelObject<T> {}

impl<T> KernelObject<T> {
    const fn zeroed() -> Self {
        Self(UnsafeCell::new(MaybeUninit::zeroed()))
    }

    const fn get(&self) -> *mut T {
        self.0.get().cast()
    }
}

static TIMER: KernelObject<KTIMER> = KernelObject::zeroed();
static TIMER_DPC: KernelObject<KDPC> = KernelObject::zeroed();
static TIMER_ARMED: AtomicBool = AtomicBool::new(false);
static QUEUED_DPC: KernelObject<KDPC> = KernelObject::zeroed();
static QUEUED_DPC_READY: AtomicBool = AtomicBool::new(false);

/// `KDEFERRED_ROUTINE` of both DPCs: does nothing.
unsafe extern "C" fn nothing(_dpc: PKDPC, _context: PVOID, _argument1: PVOID, _argument2: PVOID) {}

/// `KSERVICE_ROUTINE`: never this device's interrupt (`FALSE`).
unsafe extern "C" fn not_ours(_interrupt: PKINTERRUPT, _context: PVOID) -> BOOLEAN {
    BOOLEAN_FALSE
}

/// **Breaks: interrupts disconnected before the code that owns them is
/// unloaded.** `IoConnectInterruptEx(CONNECT_FULLY_SPECIFIED)` on the
/// probe's PDO: `vector`, `irql` (also the synchronize IRQL), level
/// triggered, shared, processor 0; an ISR that claims nothing. Never
/// disconnected.
///
/// Windows: bug check 0xCE
/// (`DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`) when the next
/// interrupt on the line calls the unloaded ISR.
///
/// Returns `IoConnectInterruptEx`'s status, or `STATUS_INVALID_PARAMETER`
/// when `device` is not the probe's FDO.
///
/// # Safety
/// `device` is the probe's FDO; `vector` and `irql` are a translated
/// line-based interrupt of its PDO; `PASSIVE_LEVEL`.
#[unsafe(export_name = "ProbeLeaveInterruptConnected")]
pub unsafe extern "system" fn probe_leave_interrupt_connected(
    device: PDEVICE_OBJECT,
    vector: ULONG,
    irql: KIRQL,
) -> NTSTATUS {
    // SAFETY: the caller passes a valid device object.
    let Some(ext) = (unsafe { fdo(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let mut interrupt: PKINTERRUPT = null_mut();
    let mut params = IO_CONNECT_INTERRUPT_PARAMETERS { Version: CONNECT_FULLY_SPECIFIED, ..Default::default() };
    // SAFETY: writing the union member that `Version` selects.
    let line = unsafe { &mut params.__bindgen_anon_1.FullySpecified };
    line.PhysicalDeviceObject = ext.pdo;
    line.InterruptObject = &raw mut interrupt;
    line.ServiceRoutine = Some(not_ours);
    line.ServiceContext = null_mut();
    line.SpinLock = null_mut();
    line.SynchronizeIrql = irql;
    line.FloatingSave = BOOLEAN_FALSE;
    line.ShareVector = BOOLEAN_TRUE;
    line.Vector = vector;
    line.Irql = irql;
    line.InterruptMode = _KINTERRUPT_MODE::LevelSensitive;
    line.ProcessorEnableMask = 1;
    // SAFETY: complete parameters for their version; the ISR is in the
    // image and takes no context. Never disconnected: the mistake the
    // kernel must report at unload.
    unsafe { IoConnectInterruptEx(&raw mut params) }
}

/// **Breaks: timers cancelled before the code that owns them is
/// unloaded.** Initializes a notification timer and its DPC, both in the
/// image's memory, and sets it periodic (first expiry in 10 ms, then every
/// 10 ms; the DPC does nothing). Never cancelled.
///
/// Windows: bug check 0xC7 (`TIMER_OR_DPC_INVALID`), parameter 1 0x0: a timer
/// object in memory being freed (the unloaded image); 0xCE when it fires
/// into the unloaded image first.
///
/// Returns `STATUS_SUCCESS`, or `STATUS_DEVICE_BUSY` when the timer was
/// already set by an earlier call (initializing a set timer again would be
/// another mistake).
///
/// # Safety
/// `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeLeaveTimerSet")]
pub unsafe extern "system" fn probe_leave_timer_set() -> NTSTATUS {
    if TIMER_ARMED.swap(true, Ordering::AcqRel) {
        return STATUS_DEVICE_BUSY;
    }
    // SAFETY: image memory, initialized once (guarded above) by the kernel.
    unsafe { KeInitializeDpc(TIMER_DPC.get(), Some(nothing), null_mut()) };
    // SAFETY: as above.
    unsafe { KeInitializeTimerEx(TIMER.get(), _TIMER_TYPE::NotificationTimer) };
    let due = LARGE_INTEGER { QuadPart: -100_000 };
    // SAFETY: an initialized timer and DPC in the image. Never cancelled:
    // the mistake the kernel must report at unload.
    let _ = unsafe { KeSetTimerEx(TIMER.get(), due, 10, TIMER_DPC.get()) };
    STATUS_SUCCESS
}

/// **Breaks: DPCs flushed before the code that owns them is unloaded.**
/// Initializes a DPC in the image's memory (once) and queues it
/// (`KeInsertQueueDpc`); nothing calls `KeFlushQueuedDpcs` before unload.
/// (On one processor the DPC runs as soon as the IRQL drops; on several it
/// may still be queued, or running, when the image goes: the documented
/// rule is the flush, which is what the kernel checks.)
///
/// Windows: bug check 0xC7 (`TIMER_OR_DPC_INVALID`), parameter 1 0x1: a DPC
/// object in memory being freed (the unloaded image); 0xCE when it runs in
/// the unloaded image.
///
/// Returns `STATUS_SUCCESS`.
///
/// # Safety
/// `<= DISPATCH_LEVEL`.
#[unsafe(export_name = "ProbeDpcNotFlushedAtUnload")]
pub unsafe extern "system" fn probe_dpc_not_flushed_at_unload() -> NTSTATUS {
    if !QUEUED_DPC_READY.swap(true, Ordering::AcqRel) {
        // SAFETY: image memory, initialized once (guarded above) by the kernel.
        unsafe { KeInitializeDpc(QUEUED_DPC.get(), Some(nothing), null_mut()) };
    }
    // SAFETY: an initialized DPC in the image (inserting a queued DPC is a
    // no-op). Never flushed: the mistake the kernel must report at unload.
    let _ = unsafe { KeInsertQueueDpc(QUEUED_DPC.get(), null_mut(), null_mut()) };
    STATUS_SUCCESS
}

/// **Breaks: device objects deleted.** Tells the FDO to skip
/// `IoDeleteDevice` at its `IRP_MN_REMOVE_DEVICE`: the next removal passes
/// the IRP down and detaches, but leaves the FDO (and its extension) alive.
///
/// Driver Verifier (I/O verification): bug check 0xC9
/// (`DRIVER_VERIFIER_IOMANAGER_VIOLATION`), I/O error 0x21E: a dispatch
/// routine has not deleted its device object upon a remove IRP. Windows
/// also never calls `DriverUnload` while the driver has a device object.
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INVALID_PARAMETER` when `device` is
/// not the probe's FDO.
///
/// # Safety
/// `device` is the probe's FDO, not removed; any IRQL.
#[unsafe(export_name = "ProbeKeepDeviceAtRemove")]
pub unsafe extern "system" fn probe_keep_device_at_remove(device: PDEVICE_OBJECT) -> NTSTATUS {
    // SAFETY: the caller passes a valid device object.
    let Some(ext) = (unsafe { fdo(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    ext.keep_at_remove.store(true, Ordering::Release);
    STATUS_SUCCESS
}
