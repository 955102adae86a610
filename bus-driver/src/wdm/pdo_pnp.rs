//! `IRP_MJ_PNP` at a child PDO. A PDO is the bottom of its stack: it
//! completes every IRP. What it answers comes from `crate::pnp`.
//!
//! | minor | answer |
//! |---|---|
//! | `START_DEVICE`, `QUERY_STOP_DEVICE`, `QUERY_REMOVE_DEVICE` | the state machine (`pnp::state`): success or its refusal |
//! | `CANCEL_*`, `STOP_DEVICE`, `SURPRISE_REMOVAL` | success, state updated |
//! | `REMOVE_DEVICE` | success; the PDO survives while present, else it leaves the parent's table and is deleted (`pnp::children::child_remove_event`) |
//! | `QUERY_ID` | device ID, hardware IDs, compatible IDs, instance ID (`pnp::ids`) in `ExAllocatePool2(POOL_FLAG_PAGED)` buffers; other ID types untouched |
//! | `QUERY_DEVICE_TEXT` | description, location (`pnp::ids`) |
//! | `QUERY_CAPABILITIES` | `pnp::capabilities` |
//! | `QUERY_RESOURCES`, `QUERY_RESOURCE_REQUIREMENTS` | success, none (`Information = NULL`) |
//! | `QUERY_BUS_INFORMATION` | `GUID_BUS_TYPE_CAPDMA`, `PNPBus`, bus 0 |
//! | `QUERY_DEVICE_RELATIONS` / `TargetDeviceRelation` | the PDO itself (referenced); other types untouched |
//! | `QUERY_INTERFACE` | routed by `pnp::route`: the capdma interface from `BusDevice::query_interface`; `BUS_INTERFACE_STANDARD` forwarded to the top of the parent FDO's stack; others untouched |
//! | anything else | untouched (`IoStatus` as it came) |
use super::ddi::{
    complete_request, complete_untouched, current_stack, dereference_object, reference_object, set_irp_status,
    POOL_FLAG_PAGED,
};
use super::irp::send_pnp_and_wait;
use super::pdo::{delete_child, PdoExtension};
use crate::pnp::capabilities::child_capabilities;
use crate::pnp::children::{child_remove_event, device_relations_bytes};
use crate::pnp::ids::{child_id, child_text, utf16_bytes, ChildId, ChildText};
use crate::pnp::route::{route_child_query_interface, ChildInterfaceRoute};
use crate::pnp::state::PnpEvent;
use crate::pnp::{CHILD_BUS_NUMBER, CHILD_LEGACY_BUS_TYPE_PNPBUS, GUID_BUS_TYPE_CAPDMA, STATUS_NO_SUCH_DEVICE};
use capdma_interface::guid::Guid;
use capdma_interface::status::{STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS};
use capdma_interface::table::CapdmaBusInterface;
use core::ffi::c_void;
use core::sync::atomic::Ordering;
use wdk_sys::ntddk::{ExAllocatePool2, IoGetAttachedDeviceReference};
use wdk_sys::{
    _DEVICE_RELATION_TYPE, DEVICE_CAPABILITIES, DEVICE_RELATIONS, GUID, IO_STACK_LOCATION, IRP_MN_CANCEL_REMOVE_DEVICE,
    IRP_MN_CANCEL_STOP_DEVICE, IRP_MN_QUERY_BUS_INFORMATION, IRP_MN_QUERY_CAPABILITIES, IRP_MN_QUERY_DEVICE_RELATIONS,
    IRP_MN_QUERY_DEVICE_TEXT, IRP_MN_QUERY_ID, IRP_MN_QUERY_INTERFACE, IRP_MN_QUERY_REMOVE_DEVICE,
    IRP_MN_QUERY_RESOURCES, IRP_MN_QUERY_RESOURCE_REQUIREMENTS, IRP_MN_QUERY_STOP_DEVICE, IRP_MN_REMOVE_DEVICE,
    IRP_MN_START_DEVICE, IRP_MN_STOP_DEVICE, IRP_MN_SURPRISE_REMOVAL, NTSTATUS, PDEVICE_OBJECT, PIRP,
    PNP_BUS_INFORMATION,
};

/// Pool tag of the buffers handed to the Plug and Play manager (`CDid`).
const ANSWER_TAG: u32 = u32::from_le_bytes(*b"CDid");

/// A minor function code as the `u8` of `IO_STACK_LOCATION.MinorFunction`.
const fn minor(code: u32) -> u8 {
    code.to_le_bytes()[0]
}

/// `IRP_MJ_PNP` dispatch for a child PDO (see the module table). `PASSIVE_LEVEL`.
///
/// # Safety
/// `irp` is a Plug and Play IRP sent to `ext`'s PDO; this routine owns it.
pub unsafe fn dispatch(ext: &PdoExtension, irp: PIRP) -> NTSTATUS {
    // SAFETY: a valid IRP.
    let stack = unsafe { current_stack(irp) };
    // SAFETY: its current (the last) location, ours while we process the IRP.
    let stack = unsafe { &*stack };
    let code = stack.MinorFunction;
    let state_change = |event: PnpEvent| match ext.pnp.apply(event) {
        Ok(_) => STATUS_SUCCESS,
        Err(status) => status,
    };
    let must_succeed = |event: PnpEvent| {
        let _ = ext.pnp.apply(event);
        STATUS_SUCCESS
    };
    // State changes, and requests answered by a status alone.
    let simple = match code {
        c if c == minor(IRP_MN_START_DEVICE) => Some(state_change(PnpEvent::Start)),
        c if c == minor(IRP_MN_QUERY_STOP_DEVICE) => Some(state_change(PnpEvent::QueryStop)),
        c if c == minor(IRP_MN_QUERY_REMOVE_DEVICE) => Some(state_change(PnpEvent::QueryRemove)),
        c if c == minor(IRP_MN_CANCEL_STOP_DEVICE) => Some(must_succeed(PnpEvent::CancelStop)),
        c if c == minor(IRP_MN_CANCEL_REMOVE_DEVICE) => Some(must_succeed(PnpEvent::CancelRemove)),
        c if c == minor(IRP_MN_STOP_DEVICE) => Some(must_succeed(PnpEvent::Stop)),
        c if c == minor(IRP_MN_SURPRISE_REMOVAL) => Some(must_succeed(PnpEvent::SurpriseRemoval)),
        // No resources: success with a null list.
        c if c == minor(IRP_MN_QUERY_RESOURCES) || c == minor(IRP_MN_QUERY_RESOURCE_REQUIREMENTS) => {
            Some(STATUS_SUCCESS)
        }
        _ => None,
    };
    if let Some(status) = simple {
        if !capdma_interface::status::nt_success(status) {
            super::trace::failure(super::trace::Area::Pnp, "child PnP state change", status);
        }
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, status, 0) };
    }
    let target_relation_query = code == minor(IRP_MN_QUERY_DEVICE_RELATIONS) && {
        // SAFETY: the QueryDeviceRelations member of a QUERY_DEVICE_RELATIONS location.
        let relation = unsafe { stack.Parameters.QueryDeviceRelations.Type };
        relation == _DEVICE_RELATION_TYPE::TargetDeviceRelation
    };
    match code {
        // SAFETY: (this and every arm below) we own the IRP; the handler
        // completes it exactly once.
        c if c == minor(IRP_MN_REMOVE_DEVICE) => unsafe { remove(ext, irp) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_QUERY_ID) => unsafe { query_id(ext, irp, stack) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_QUERY_DEVICE_TEXT) => unsafe { query_text(ext, irp, stack) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_QUERY_CAPABILITIES) => unsafe { capabilities(ext, irp, stack) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_QUERY_BUS_INFORMATION) => unsafe { bus_information(irp) },
        // SAFETY: as above.
        c if c == minor(IRP_MN_QUERY_INTERFACE) => unsafe { query_interface(ext, irp, stack) },
        // SAFETY: as above.
        _ if target_relation_query => unsafe { target_relation(ext, irp) },
        // SAFETY: as above.
        _ => unsafe { complete_untouched(irp) },
    }
}

/// `ExAllocatePool2(POOL_FLAG_PAGED, bytes, 'CDid')`: zeroed paged pool
/// (at least 8-byte aligned), freed by the Plug and Play manager
/// (`ExFreePool`). `PASSIVE_LEVEL`.
fn allocate_answer(bytes: usize) -> *mut c_void {
    // SAFETY: PASSIVE_LEVEL (Plug and Play dispatch); any size is valid to ask for.
    unsafe { ExAllocatePool2(POOL_FLAG_PAGED, bytes as u64, ANSWER_TAG) }
}

/// Completes `irp` with a UTF-16 answer that `fill` writes (measured first
/// with an empty slice; see `pnp::ids`), or with `STATUS_INSUFFICIENT_RESOURCES`.
///
/// # Safety
/// We own `irp`.
unsafe fn complete_with_utf16(irp: PIRP, fill: impl Fn(&mut [u16]) -> usize) -> NTSTATUS {
    let needed = fill(&mut []);
    let buffer = utf16_bytes(needed).map_or(core::ptr::null_mut(), allocate_answer).cast::<u16>();
    if buffer.is_null() {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, STATUS_INSUFFICIENT_RESOURCES, 0) };
    }
    // SAFETY: a fresh, zeroed, 2-byte aligned allocation of `needed` units.
    let answer = unsafe { core::slice::from_raw_parts_mut(buffer, needed) };
    let _ = fill(answer);
    // SAFETY: we own the IRP; the buffer now belongs to the Plug and Play manager.
    unsafe { complete_request(irp, STATUS_SUCCESS, buffer as usize) }
}

/// `IRP_MN_QUERY_ID`.
///
/// # Safety
/// We own `irp`; `stack` is its current location.
unsafe fn query_id(ext: &PdoExtension, irp: PIRP, stack: &IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the QueryId member of a QUERY_ID location.
    let id_type = unsafe { stack.Parameters.QueryId.IdType };
    let Some(id) = u32::try_from(id_type).ok().and_then(ChildId::from_bus_query_id_type) else {
        // SAFETY: we own the IRP.
        return unsafe { complete_untouched(irp) };
    };
    let channel = ext.channel;
    // SAFETY: we own the IRP.
    unsafe { complete_with_utf16(irp, |out| child_id(id, channel, out)) }
}

/// `IRP_MN_QUERY_DEVICE_TEXT`.
///
/// # Safety
/// As [`query_id`].
unsafe fn query_text(ext: &PdoExtension, irp: PIRP, stack: &IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the QueryDeviceText member of a QUERY_DEVICE_TEXT location.
    let text_type = unsafe { stack.Parameters.QueryDeviceText.DeviceTextType };
    let Some(text) = u32::try_from(text_type).ok().and_then(ChildText::from_device_text_type) else {
        // SAFETY: we own the IRP.
        return unsafe { complete_untouched(irp) };
    };
    let channel = ext.channel;
    // SAFETY: we own the IRP.
    unsafe { complete_with_utf16(irp, |out| child_text(text, channel, out)) }
}

/// `IRP_MN_QUERY_CAPABILITIES`: `pnp::capabilities` into the caller's structure.
///
/// # Safety
/// As [`query_id`].
unsafe fn capabilities(ext: &PdoExtension, irp: PIRP, stack: &IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the DeviceCapabilities member of a QUERY_CAPABILITIES location.
    let caps_ptr = unsafe { stack.Parameters.DeviceCapabilities.Capabilities };
    // SAFETY: the Plug and Play manager passes a valid DEVICE_CAPABILITIES (or null).
    let Some(caps) = (unsafe { caps_ptr.as_mut() }) else {
        // SAFETY: we own the IRP.
        return unsafe { complete_untouched(irp) };
    };
    let answer = match child_capabilities(ext.channel, caps.Size, caps.Version) {
        Ok(answer) => answer,
        // SAFETY: we own the IRP.
        Err(status) => return unsafe { complete_request(irp, status, 0) },
    };
    fill_capabilities(caps, &answer);
    // SAFETY: we own the IRP.
    unsafe { complete_request(irp, STATUS_SUCCESS, 0) }
}

/// Copies the core's answer into `DEVICE_CAPABILITIES`.
fn fill_capabilities(caps: &mut DEVICE_CAPABILITIES, answer: &crate::pnp::capabilities::ChildCapabilities) {
    let bit = u32::from;
    caps.set_UniqueID(bit(answer.unique_id));
    caps.set_Removable(bit(answer.removable));
    caps.set_SurpriseRemovalOK(bit(answer.surprise_removal_ok));
    caps.set_EjectSupported(bit(answer.eject_supported));
    caps.set_RawDeviceOK(bit(answer.raw_device_ok));
    caps.set_SilentInstall(bit(answer.silent_install));
    caps.set_DeviceD1(bit(answer.device_d1));
    caps.set_DeviceD2(bit(answer.device_d2));
    caps.set_LockSupported(0);
    caps.set_DockDevice(0);
    caps.set_WakeFromD0(0);
    caps.set_WakeFromD1(0);
    caps.set_WakeFromD2(0);
    caps.set_WakeFromD3(0);
    caps.Address = answer.address;
    caps.UINumber = answer.ui_number;
    for (slot, &state) in caps.DeviceState.iter_mut().zip(answer.device_state.iter()) {
        *slot = i32::try_from(state).unwrap_or(0);
    }
    caps.SystemWake = i32::try_from(answer.system_wake).unwrap_or(0);
    caps.DeviceWake = i32::try_from(answer.device_wake).unwrap_or(0);
    caps.D1Latency = 0;
    caps.D2Latency = 0;
    caps.D3Latency = 0;
}

/// `IRP_MN_QUERY_BUS_INFORMATION`: a paged-pool `PNP_BUS_INFORMATION`.
///
/// # Safety
/// We own `irp`.
unsafe fn bus_information(irp: PIRP) -> NTSTATUS {
    let info = allocate_answer(size_of::<PNP_BUS_INFORMATION>()).cast::<PNP_BUS_INFORMATION>();
    if info.is_null() {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, STATUS_INSUFFICIENT_RESOURCES, 0) };
    }
    // SAFETY: a fresh allocation of the structure's size, pool-aligned.
    unsafe {
        info.write(PNP_BUS_INFORMATION {
            BusTypeGuid: to_wdk_guid(&GUID_BUS_TYPE_CAPDMA),
            LegacyBusType: CHILD_LEGACY_BUS_TYPE_PNPBUS,
            BusNumber: CHILD_BUS_NUMBER,
        });
    }
    // SAFETY: we own the IRP; the buffer now belongs to the Plug and Play manager.
    unsafe { complete_request(irp, STATUS_SUCCESS, info as usize) }
}

/// `IRP_MN_QUERY_DEVICE_RELATIONS` / `TargetDeviceRelation`: this PDO,
/// referenced (the Plug and Play manager dereferences it).
///
/// # Safety
/// We own `irp`.
unsafe fn target_relation(ext: &PdoExtension, irp: PIRP) -> NTSTATUS {
    let relations = device_relations_bytes(1).map_or(core::ptr::null_mut(), allocate_answer).cast::<DEVICE_RELATIONS>();
    if relations.is_null() {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, STATUS_INSUFFICIENT_RESOURCES, 0) };
    }
    // SAFETY: our own live PDO.
    unsafe { reference_object(ext.self_device) };
    // SAFETY: a fresh allocation with room for one object, ours alone.
    let answer = unsafe { &mut *relations };
    answer.Count = 1;
    answer.Objects[0] = ext.self_device;
    // SAFETY: we own the IRP; the relations now belong to the Plug and Play manager.
    unsafe { complete_request(irp, STATUS_SUCCESS, relations as usize) }
}

/// `IRP_MN_REMOVE_DEVICE`: a present child survives (back to not
/// started); one reported missing leaves the parent's table and is deleted.
///
/// # Safety
/// We own `irp`.
unsafe fn remove(ext: &PdoExtension, irp: PIRP) -> NTSTATUS {
    let event = child_remove_event(ext.reported_missing.load(Ordering::Acquire));
    let _ = ext.pnp.apply(event);
    if event != PnpEvent::Remove {
        // SAFETY: we own the IRP.
        return unsafe { complete_request(irp, STATUS_SUCCESS, 0) };
    }
    let me = ext.self_device;
    if let Some(parent) = ext.live_parent() {
        parent.with_children(|table| {
            for slot in table.iter_mut().filter(|slot| **slot == me) {
                *slot = core::ptr::null_mut();
            }
        });
    }
    // SAFETY: we own the IRP.
    let status = unsafe { complete_request(irp, STATUS_SUCCESS, 0) };
    // SAFETY: out of the parent's table, removed: no further IRP comes.
    unsafe { delete_child(me) };
    status
}

/// A wdm `GUID` as the contract's [`Guid`].
const fn from_wdk_guid(guid: &GUID) -> Guid {
    Guid::new(guid.Data1, guid.Data2, guid.Data3, guid.Data4)
}

/// The contract's [`Guid`] as a wdm `GUID`.
const fn to_wdk_guid(guid: &Guid) -> GUID {
    GUID { Data1: guid.data1, Data2: guid.data2, Data3: guid.data3, Data4: guid.data4 }
}

/// `IRP_MN_QUERY_INTERFACE`, routed by `pnp::route`.
///
/// # Safety
/// As [`query_id`].
unsafe fn query_interface(ext: &PdoExtension, irp: PIRP, stack: &IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the QueryInterface member of a QUERY_INTERFACE location.
    let params = unsafe { stack.Parameters.QueryInterface };
    // SAFETY: a non-null InterfaceType points to the caller's GUID.
    let guid = unsafe { params.InterfaceType.as_ref() }.map(from_wdk_guid);
    match route_child_query_interface(guid.as_ref()) {
        ChildInterfaceRoute::Untouched => {
            // SAFETY: we own the IRP.
            unsafe { complete_untouched(irp) }
        }
        _ if !ext.pnp.state().serves_interfaces() => {
            // SAFETY: we own the IRP.
            unsafe { complete_request(irp, STATUS_NO_SUCH_DEVICE, 0) }
        }
        ChildInterfaceRoute::CapdmaBus => {
            let status =
                ext.bus().query_interface(params.Size, params.Version, params.Interface.cast::<CapdmaBusInterface>());
            // SAFETY: we own the IRP.
            unsafe { complete_request(irp, status, 0) }
        }
        ChildInterfaceRoute::ForwardToParent => {
            let Some(parent) = ext.live_parent() else {
                // SAFETY: we own the IRP.
                return unsafe { complete_untouched(irp) };
            };
            // SAFETY: the parent FDO is referenced by this child; the call
            // returns the (referenced) top of its stack.
            let top: PDEVICE_OBJECT = unsafe { IoGetAttachedDeviceReference(parent.self_device) };
            let same_parameters = |location: &mut IO_STACK_LOCATION| location.Parameters.QueryInterface = params;
            // SAFETY: `top` is referenced until the dereference below.
            let answer = unsafe { send_pnp_and_wait(top, minor(IRP_MN_QUERY_INTERFACE), same_parameters) };
            // SAFETY: the reference IoGetAttachedDeviceReference took.
            unsafe { dereference_object(top) };
            let status = match answer {
                // SAFETY: `Status` is the member the I/O manager wrote.
                Ok(io_status) => unsafe { io_status.__bindgen_anon_1.Status },
                Err(status) => status,
            };
            // SAFETY: we own the IRP; `Information` stays as it came (the
            // interface itself was written into the caller's buffer).
            unsafe { set_irp_status(irp, status, None) };
            // SAFETY: as above.
            unsafe { complete_untouched(irp) }
        }
    }
}
