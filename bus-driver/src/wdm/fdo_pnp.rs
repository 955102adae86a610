//! `IRP_MJ_PNP` at the FDO.
//!
//! | minor | handling |
//! |---|---|
//! | `START_DEVICE` | forward down and wait; then [`start_hardware`]: BAR0 and interrupt from `AllocatedResourcesTranslated` (`pnp::resources`), `MmMapIoSpaceEx`, registry values, `BusDevice::start` (`IoGetDmaAdapter` on the PCI PDO, common buffers), `IoConnectInterruptEx`, the watchdog timer, one child PDO per channel and `IoInvalidateDeviceRelations(BusRelations)` |
//! | `QUERY_DEVICE_RELATIONS` / `BusRelations` | the present children (each `ObReferenceObject`ed) appended to what upper drivers reported, in an `ExAllocatePool2(POOL_FLAG_PAGED)` `DEVICE_RELATIONS`; passed down |
//! | `QUERY_STOP_DEVICE` / `QUERY_REMOVE_DEVICE` | `BusDevice::query_stop` (`STATUS_DEVICE_BUSY` while a child holds an interface reference: a rebalance would free the rings under a started child) / `query_remove` (never vetoes for references: the children are queried and removed first and drop theirs in their own removal) and the state machine; passed down on success |
//! | `CANCEL_STOP_DEVICE` / `CANCEL_REMOVE_DEVICE` | forwarded down first and waited for, then the state goes back |
//! | `STOP_DEVICE` | [`release_hardware`] fully; passed down |
//! | `SURPRISE_REMOVAL` | `BusDevice::surprise_remove`, then the hardware (interrupt, timer, DPCs, BAR0) released; the common buffers and the adapter stay until the removal (a child may still hold the interface); passed down |
//! | `REMOVE_DEVICE` | `IoReleaseRemoveLockAndWait`, [`release_hardware`] fully, children deleted (or left to delete themselves), passed down, `IoDetachDevice`, `IoDeleteDevice` |
//! | anything else | passed down |
//!
//! Teardown order ([`release_hardware`], decided by the core's
//! `BusDevice::release_hardware`, `crate::teardown`; the glue supplies the
//! steps only it can do): `BusDevice::stop_engines`,
//! `IoDisconnectInterruptEx`, `KeCancelTimer` (watchdog), `KeFlushQueuedDpcs`
//! (one flush covers the ISR's DPC and a watchdog DPC queued before the
//! cancel), `BusDevice::stop` (frees every common buffer, puts the adapter
//! last), `MmUnmapIoSpace`.
use super::ddi::{
    complete_request, complete_untouched, current_stack, reference_object, set_irp_status, POOL_FLAG_PAGED,
};
use super::fdo::FdoExtension;
use super::irp::{acquire_remove_lock, forward_and_wait, pass_down, release_remove_lock, release_remove_lock_and_wait};
use super::isr_dpc;
use super::pdo::{create_child, delete_child, PdoExtension};
use super::power;
use super::registry::read_start_values;
use super::trace::{self, Area};
use crate::config::StartConfig;
use crate::pnp::children::{self, device_relations_bytes, merged_relations_count, on_parent_removal, ParentRemoval};
use crate::pnp::resources::{select_resources, CmResourceListReader, SelectedResources};
use crate::pnp::state::{fdo_release, PnpEvent, Release};
use crate::pnp::STATUS_DEVICE_CONFIGURATION_ERROR;
use crate::teardown::TeardownPort;
use capdma_interface::status::{nt_success, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS};
use core::sync::atomic::Ordering;
use wdk_sys::ntddk::{ExAllocatePool2, ExFreePool, IoDeleteDevice, IoDetachDevice, IoInvalidateDeviceRelations};
use wdk_sys::{
    _DEVICE_RELATION_TYPE, DEVICE_RELATIONS, IRP_MN_CANCEL_REMOVE_DEVICE, IRP_MN_CANCEL_STOP_DEVICE,
    IRP_MN_QUERY_DEVICE_RELATIONS, IRP_MN_QUERY_REMOVE_DEVICE, IRP_MN_QUERY_STOP_DEVICE, IRP_MN_REMOVE_DEVICE,
    IRP_MN_START_DEVICE, IRP_MN_STOP_DEVICE, IRP_MN_SURPRISE_REMOVAL, NTSTATUS, PCM_RESOURCE_LIST, PDEVICE_OBJECT,
    PIRP,
};

/// Pool tag of the `DEVICE_RELATIONS` this driver allocates (`CDbr`).
pub const RELATIONS_TAG: u32 = u32::from_le_bytes(*b"CDbr");

/// A minor function code as the `u8` of `IO_STACK_LOCATION.MinorFunction`.
const fn minor(code: u32) -> u8 {
    code.to_le_bytes()[0]
}

/// `IRP_MJ_PNP` dispatch for the FDO (see the module table). `PASSIVE_LEVEL`.
///
/// # Safety
/// `irp` is a Plug and Play IRP sent to `ext`'s FDO; this routine owns it.
pub unsafe fn dispatch(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    let lock = ext.remove_lock();
    // SAFETY: the lock was initialized in AddDevice; the IRP is the tag.
    if let Err(status) = unsafe { acquire_remove_lock(lock, irp) } {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, status, 0) };
    }
    // SAFETY: a valid IRP.
    let stack = unsafe { current_stack(irp) };
    // SAFETY: its current location, ours while we process the IRP.
    let stack = unsafe { &*stack };
    let code = stack.MinorFunction;
    if code == minor(IRP_MN_REMOVE_DEVICE) {
        // SAFETY: as above; `remove` releases the lock itself.
        return unsafe { remove(ext, irp) };
    }
    let bus_relations_query = code == minor(IRP_MN_QUERY_DEVICE_RELATIONS) && {
        // SAFETY: the QueryDeviceRelations member of a QUERY_DEVICE_RELATIONS location.
        let relation = unsafe { stack.Parameters.QueryDeviceRelations.Type };
        relation == _DEVICE_RELATION_TYPE::BusRelations
    };
    let status = match code {
        // SAFETY: (this and every arm below) we own the IRP; the handler
        // hands it on or completes it exactly once.
        c if c == minor(IRP_MN_START_DEVICE) => unsafe { start(ext, irp) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_QUERY_STOP_DEVICE) => unsafe { query(ext, irp, PnpEvent::QueryStop) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_QUERY_REMOVE_DEVICE) => unsafe { query(ext, irp, PnpEvent::QueryRemove) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_CANCEL_STOP_DEVICE) => unsafe { cancel(ext, irp, PnpEvent::CancelStop) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_CANCEL_REMOVE_DEVICE) => unsafe { cancel(ext, irp, PnpEvent::CancelRemove) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_STOP_DEVICE) => unsafe { stop(ext, irp) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_SURPRISE_REMOVAL) => unsafe { surprise_removal(ext, irp) },
        // SAFETY: as above.
        _ if bus_relations_query => unsafe { bus_relations(ext, irp) },
        // SAFETY: as above.
        _ => unsafe { pass_down(ext.lower, irp) },
    };
    // SAFETY: acquired above with the same tag (the IRP pointer is only a tag here).
    unsafe { release_remove_lock(lock, irp) };
    status
}

/// `IRP_MN_START_DEVICE`: the lower drivers (PCI) start first.
///
/// # Safety
/// As [`dispatch`].
unsafe fn start(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: we own the IRP; `lower` is below us.
    let status = unsafe { forward_and_wait(ext.lower, irp) };
    if !nt_success(status) {
        trace::failure(Area::Pnp, "IRP_MN_START_DEVICE: lower drivers", status);
        // SAFETY: the IRP is ours again; it carries the lower status.
        return unsafe { complete_untouched(irp) };
    }
    // SAFETY: the IRP is ours again.
    let stack = unsafe { current_stack(irp) };
    // SAFETY: a valid stack location of an IRP we own.
    let stack = unsafe { &*stack };
    // SAFETY: the StartDevice member of a START_DEVICE location.
    let translated = unsafe { stack.Parameters.StartDevice.AllocatedResourcesTranslated };
    // SAFETY: the resource list of this START_DEVICE (or null).
    let status = match unsafe { start_hardware(ext, translated) } {
        Ok(()) => STATUS_SUCCESS,
        Err(status) => {
            wdk::println!("capdma_bus: start failed {status:#x}");
            trace::failure(Area::Pnp, "IRP_MN_START_DEVICE", status);
            status
        }
    };
    // SAFETY: we own the IRP.
    unsafe { complete_request(irp, status, 0) }
}

/// Picks BAR0 and the interrupt out of `translated` (walked through
/// `pnp::resources::CmResourceListReader`).
///
/// # Safety
/// `translated` is null or the `CM_RESOURCE_LIST` of an `IRP_MN_START_DEVICE`.
unsafe fn resources(translated: PCM_RESOURCE_LIST) -> Result<SelectedResources, NTSTATUS> {
    if translated.is_null() {
        return Err(STATUS_DEVICE_CONFIGURATION_ERROR);
    }
    let base = translated.cast::<u8>().cast_const();
    let reader = CmResourceListReader::new(|offset, buffer: &mut [u8]| {
        // SAFETY: the list is a well-formed CM_RESOURCE_LIST built by the
        // Plug and Play manager; the reader only asks for offsets inside it
        // (headers and descriptors it has counted), copying unaligned bytes.
        unsafe { core::ptr::copy_nonoverlapping(base.wrapping_add(offset), buffer.as_mut_ptr(), buffer.len()) };
        true
    });
    select_resources(reader)
}

/// The hardware part of the start (after PCI started). On failure
/// everything acquired is released again.
///
/// # Safety
/// As [`resources`]; `PASSIVE_LEVEL`.
unsafe fn start_hardware(ext: &FdoExtension, translated: PCM_RESOURCE_LIST) -> Result<(), NTSTATUS> {
    ext.pnp.check(PnpEvent::Start)?;
    // SAFETY: the caller's guarantee.
    let selected = unsafe { resources(translated) }?;
    let bar0 = ext.bus.platform().bar0();
    bar0.map(selected.bar0.start, selected.map_bytes)?;
    // SAFETY: the PCI PDO of this stack, at PASSIVE_LEVEL.
    let values = unsafe { read_start_values(ext.pci_pdo) };
    let config = match StartConfig::from_registry(&values) {
        Ok(config) => config,
        Err(error) => {
            wdk::println!("capdma_bus: registry: {error}");
            trace::failure(Area::Pnp, "start: registry values", error.status());
            bar0.unmap();
            return Err(error.status());
        }
    };
    let decision = match ext.bus.start(&config) {
        Ok(decision) => decision,
        Err(status) => {
            trace::failure(Area::Dma, "start: BusDevice::start", status);
            bar0.unmap();
            return Err(status);
        }
    };
    if let Err(status) = isr_dpc::connect(ext, selected.interrupt) {
        trace::failure(Area::Pnp, "start: IoConnectInterruptEx", status);
        let _ = release_hardware(ext, Release::Everything);
        return Err(status);
    }
    if let Err(status) = ext.pnp.apply(PnpEvent::Start) {
        trace::failure(Area::Pnp, "start: PnP state", status);
        let _ = release_hardware(ext, Release::Everything);
        return Err(status);
    }
    isr_dpc::start_watchdog(ext);
    power::started_in_d0(ext);
    wdk::println!(
        "capdma_bus: started: {} channel(s), {} ({:?})",
        ext.bus.channel_count(),
        decision.mode.name(),
        decision.reason
    );
    trace::device_start(decision.mode.name(), decision.reason.describe(), ext.bus.channel_count(), ext.bus.info().map_or(0, |i| i.map_registers));
    // SAFETY: a live FDO extension at PASSIVE_LEVEL.
    unsafe { enumerate_children(ext) };
    Ok(())
}

/// Creates the child PDOs the board's channels need and marks the ones it
/// no longer has missing (`pnp::children::plan_children`); tells the Plug
/// and Play manager when the set changed (`IoInvalidateDeviceRelations`).
///
/// # Safety
/// `PASSIVE_LEVEL`; `ext` is a live FDO extension.
unsafe fn enumerate_children(ext: &FdoExtension) {
    let present = ext.with_children(|table| {
        let mut set: children::ChildSet = 0;
        for (bit, &pdo) in table.iter().enumerate() {
            // SAFETY: a non-null entry is a live child PDO of this FDO.
            if !pdo.is_null() && unsafe { child(pdo) }.present.load(Ordering::Acquire) {
                set |= 1 << bit;
            }
        }
        set
    });
    let plan = children::plan_children(present, ext.bus.channel_count());
    for channel in children::iter(plan.create) {
        // SAFETY: a live FDO extension, PASSIVE_LEVEL.
        match unsafe { create_child(ext, channel) } {
            Ok(pdo) => {
                let leftover = ext.with_children(|table| {
                    let slot = usize::try_from(channel).ok().and_then(|i| table.get_mut(i));
                    match slot {
                        Some(slot) if slot.is_null() => {
                            *slot = pdo;
                            None
                        }
                        _ => Some(pdo),
                    }
                });
                if let Some(pdo) = leftover {
                    // SAFETY: a PDO just created and reported to nobody.
                    unsafe { delete_child(pdo) };
                }
            }
            Err(status) => {
                wdk::println!("capdma_bus: channel {channel}: child PDO not created ({status:#x})");
                trace::failure(Area::Pnp, "child PDO: IoCreateDevice", status);
            }
        }
    }
    ext.with_children(|table| {
        for channel in children::iter(plan.report_missing) {
            if let Some(&pdo) = usize::try_from(channel).ok().and_then(|i| table.get(i)) {
                if !pdo.is_null() {
                    // SAFETY: a live child PDO of this FDO.
                    unsafe { child(pdo) }.present.store(false, Ordering::Release);
                }
            }
        }
    });
    trace::children_enumerated(
        ext.bus.channel_count(),
        children::iter(plan.create).count().try_into().unwrap_or(u32::MAX),
        children::iter(plan.report_missing).count().try_into().unwrap_or(u32::MAX),
    );
    if plan.changes() {
        // SAFETY: the PCI PDO of this stack.
        unsafe { IoInvalidateDeviceRelations(ext.pci_pdo, _DEVICE_RELATION_TYPE::BusRelations) };
    }
}

/// The extension of a child PDO.
///
/// # Safety
/// `pdo` is a live child PDO of this driver.
unsafe fn child<'a>(pdo: PDEVICE_OBJECT) -> &'a PdoExtension {
    // SAFETY: the caller's guarantee.
    let ext = unsafe { (*pdo).DeviceExtension }.cast::<PdoExtension>();
    // SAFETY: child extensions are initialized at creation.
    unsafe { &*ext }
}

/// The glue's steps of the core's teardown sequence
/// (`BusDevice::release_hardware`, `crate::teardown`).
struct GlueTeardown<'a>(&'a FdoExtension);

impl TeardownPort for GlueTeardown<'_> {
    fn disconnect_interrupt(&self) {
        isr_dpc::disconnect(self.0);
    }

    fn cancel_timer_and_flush_dpcs(&self) {
        isr_dpc::stop_watchdog(self.0);
        isr_dpc::flush_dpcs();
    }

    fn unmap_registers(&self) {
        self.0.bus.platform().bar0().unmap();
    }
}

/// Releases what `release` says (`pnp::state::fdo_release`) in the
/// design's order, which the core owns (`BusDevice::release_hardware`):
/// `Release::Everything` includes `BusDevice::stop` (common buffers and the
/// adapter), which a surprise removal defers to the removal. Idempotent.
/// `PASSIVE_LEVEL`. Returns the interface references children still held
/// when everything was released (a child bug, logged by the removal).
pub fn release_hardware(ext: &FdoExtension, release: Release) -> u32 {
    ext.bus.release_hardware(release, &GlueTeardown(ext))
}

/// `IRP_MN_QUERY_STOP_DEVICE` / `IRP_MN_QUERY_REMOVE_DEVICE`.
///
/// # Safety
/// As [`dispatch`].
unsafe fn query(ext: &FdoExtension, irp: PIRP, event: PnpEvent) -> NTSTATUS {
    let busy = if event == PnpEvent::QueryStop { ext.bus.query_stop() } else { ext.bus.query_remove() };
    let status = if nt_success(busy) { ext.pnp.apply(event).map_or_else(|s| s, |_| STATUS_SUCCESS) } else { busy };
    if !nt_success(status) {
        // SAFETY: we own the IRP; a failed query is completed here.
        return unsafe { complete_request(irp, status, 0) };
    }
    // SAFETY: we own the IRP; a succeeded query goes down with success.
    unsafe { set_irp_status(irp, STATUS_SUCCESS, None) };
    // SAFETY: as above.
    unsafe { pass_down(ext.lower, irp) }
}

/// `IRP_MN_CANCEL_STOP_DEVICE` / `IRP_MN_CANCEL_REMOVE_DEVICE`: the lower
/// drivers first, then this one (the IRP must succeed).
///
/// # Safety
/// As [`dispatch`].
unsafe fn cancel(ext: &FdoExtension, irp: PIRP, event: PnpEvent) -> NTSTATUS {
    // SAFETY: we own the IRP.
    let lower = unsafe { forward_and_wait(ext.lower, irp) };
    let _ = ext.pnp.apply(event);
    let status = if nt_success(lower) { STATUS_SUCCESS } else { lower };
    // SAFETY: the IRP is ours again.
    unsafe { complete_request(irp, status, 0) }
}

/// `IRP_MN_STOP_DEVICE` (resource rebalance).
///
/// # Safety
/// As [`dispatch`].
unsafe fn stop(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    trace::device_stop("IRP_MN_STOP_DEVICE");
    let _ = ext.pnp.apply(PnpEvent::Stop);
    let _ = release_hardware(ext, fdo_release(PnpEvent::Stop));
    // SAFETY: we own the IRP.
    unsafe { set_irp_status(irp, STATUS_SUCCESS, None) };
    // SAFETY: as above.
    unsafe { pass_down(ext.lower, irp) }
}

/// `IRP_MN_SURPRISE_REMOVAL`: the board is gone.
///
/// # Safety
/// As [`dispatch`].
unsafe fn surprise_removal(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    trace::surprise_removal();
    let _ = ext.pnp.apply(PnpEvent::SurpriseRemoval);
    ext.bus.surprise_remove();
    let _ = release_hardware(ext, fdo_release(PnpEvent::SurpriseRemoval));
    // SAFETY: we own the IRP.
    unsafe { set_irp_status(irp, STATUS_SUCCESS, None) };
    // SAFETY: as above.
    unsafe { pass_down(ext.lower, irp) }
}

/// `IRP_MN_REMOVE_DEVICE`: waits for every other IRP in this driver,
/// releases everything, deletes the children it owns, passes the IRP
/// down, detaches and deletes the FDO.
///
/// # Safety
/// As [`dispatch`]; the remove lock is held for this IRP.
unsafe fn remove(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    trace::device_stop("IRP_MN_REMOVE_DEVICE");
    let _ = ext.pnp.apply(PnpEvent::Remove);
    // SAFETY: acquired by `dispatch` with this tag.
    unsafe { release_remove_lock_and_wait(ext.remove_lock(), irp) };
    // A child still holding the interface here is the child's bug: the
    // teardown goes ahead (`crate::teardown`) and the leak is logged.
    let leaked = release_hardware(ext, fdo_release(PnpEvent::Remove));
    if leaked > 0 {
        wdk::println!("capdma_bus: removed with {leaked} interface reference(s) still held by a child");
    }
    // SAFETY: PASSIVE_LEVEL; the children are ours.
    unsafe { remove_children(ext) };
    // SAFETY: we own the IRP.
    unsafe { set_irp_status(irp, STATUS_SUCCESS, None) };
    let lower = ext.lower;
    let fdo = ext.self_device;
    // SAFETY: as above; the IRP is given away.
    let status = unsafe { pass_down(lower, irp) };
    // SAFETY: attached in AddDevice; the extension is not used after the delete.
    unsafe { IoDetachDevice(lower) };
    // SAFETY: as above; the children hold their own references on the FDO.
    unsafe { IoDeleteDevice(fdo) };
    status
}

/// The parent's removal: each child is deleted now or, if surprise-removed
/// and still awaiting its own removal, detached and left to delete itself
/// (`pnp::children::on_parent_removal`).
///
/// # Safety
/// `PASSIVE_LEVEL`; `ext` is being removed.
unsafe fn remove_children(ext: &FdoExtension) {
    let table = ext.with_children(|table| core::mem::replace(table, [core::ptr::null_mut(); crate::MAX_CHANNELS]));
    for pdo in table.into_iter().filter(|pdo| !pdo.is_null()) {
        // SAFETY: a live child PDO taken out of the table.
        let child_ext = unsafe { child(pdo) };
        child_ext.present.store(false, Ordering::Release);
        child_ext.reported_missing.store(true, Ordering::Release);
        child_ext.parent_alive.store(false, Ordering::Release);
        match on_parent_removal(child_ext.pnp.state()) {
            ParentRemoval::DeleteNow => {
                let _ = child_ext.pnp.apply(PnpEvent::Remove);
                // SAFETY: out of the table; the Plug and Play manager
                // removed it (or never started it) before the parent.
                unsafe { delete_child(pdo) };
            }
            ParentRemoval::LeaveToChild | ParentRemoval::Gone => {}
        }
    }
}

/// `IRP_MN_QUERY_DEVICE_RELATIONS` / `BusRelations`: what upper drivers
/// reported plus the present children; children no longer present are
/// left out and marked reported-missing. Passed down with success.
///
/// # Safety
/// As [`dispatch`].
unsafe fn bus_relations(ext: &FdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: we own the IRP; `Information` holds null or a DEVICE_RELATIONS.
    let old = unsafe { (*irp).IoStatus.Information } as *mut DEVICE_RELATIONS;
    // SAFETY: a non-null previous answer is a valid DEVICE_RELATIONS.
    let old_count = if old.is_null() { 0 } else { unsafe { (*old).Count } };
    let mut ours = [core::ptr::null_mut(); crate::MAX_CHANNELS];
    let count = ext.with_children(|table| {
        let mut count = 0usize;
        for &pdo in table.iter().filter(|pdo| !pdo.is_null()) {
            // SAFETY: a live child PDO of this FDO.
            let child_ext = unsafe { child(pdo) };
            if child_ext.present.load(Ordering::Acquire) {
                if let Some(slot) = ours.get_mut(count) {
                    *slot = pdo;
                    count += 1;
                }
            } else {
                child_ext.reported_missing.store(true, Ordering::Release);
            }
        }
        count
    });
    let total = u32::try_from(count).ok().and_then(|ours| merged_relations_count(old_count, ours));
    let bytes = total.and_then(|t| usize::try_from(t).ok()).and_then(device_relations_bytes);
    let Some((total, bytes)) = total.zip(bytes) else {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, STATUS_INSUFFICIENT_RESOURCES, 0) };
    };
    // SAFETY: PASSIVE_LEVEL; paged pool as the Plug and Play manager expects.
    let relations = unsafe { ExAllocatePool2(POOL_FLAG_PAGED, bytes as u64, RELATIONS_TAG) }.cast::<DEVICE_RELATIONS>();
    if relations.is_null() {
        // SAFETY: we own the IRP; the old answer stays where it was.
        unsafe { set_irp_status(irp, STATUS_INSUFFICIENT_RESOURCES, None) };
        // SAFETY: as above.
        return unsafe { complete_untouched(irp) };
    }
    // SAFETY: `relations` has room for `total` objects (and is zeroed).
    let objects = unsafe { &raw mut (*relations).Objects }.cast::<PDEVICE_OBJECT>();
    if !old.is_null() {
        let old_objects = usize::try_from(old_count).unwrap_or(0);
        // SAFETY: a valid DEVICE_RELATIONS (only the field's address is taken).
        let old_list = unsafe { &raw const (*old).Objects }.cast::<PDEVICE_OBJECT>();
        // SAFETY: the old list holds `old_count` objects; the new one has
        // room for them first; the two allocations are distinct.
        unsafe { core::ptr::copy_nonoverlapping(old_list, objects, old_objects) };
        // SAFETY: the old list was pool memory handed to us; its references moved over.
        unsafe { ExFreePool(old.cast()) };
    }
    let first = usize::try_from(old_count).unwrap_or(0);
    for (index, &pdo) in ours.iter().take(count).enumerate() {
        // SAFETY: a live child PDO; the Plug and Play manager dereferences
        // every object it receives.
        unsafe { reference_object(pdo) };
        // `first + index < total`: inside the allocation.
        let slot = objects.wrapping_add(first + index);
        // SAFETY: a slot of the fresh allocation.
        unsafe { slot.write(pdo) };
    }
    // SAFETY: a valid, owned allocation.
    unsafe { (*relations).Count = total };
    // SAFETY: we own the IRP.
    unsafe { set_irp_status(irp, STATUS_SUCCESS, Some(relations as usize)) };
    // SAFETY: as above.
    unsafe { pass_down(ext.lower, irp) }
}
