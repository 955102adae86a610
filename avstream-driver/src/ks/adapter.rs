//! Registering the bus's DMA adapter with AVStream, the way the docs
//! prescribe for 64-bit drivers: the device's outer `IUnknown`
//! (`KsDeviceGetOuterUnknown`, an inline over `KsGetOuterUnknown`),
//! `QueryInterface(IID_IKsDeviceFunctions)`, then
//! `IKsDeviceFunctions::RegisterAdapterObjectEx` with the `DEVICE_DESCRIPTION`
//! the bus got the adapter with and its map-register grant, and `Release`
//! ("`IKsDeviceFunctions::RegisterAdapterObjectEx` method (ks.h)": "All
//! drivers compiled for Win64 platforms should use this method instead of
//! `KsDeviceRegisterAdapterObject`"). An AVStream without the interface
//! (`QueryInterface` fails) gets `KsDeviceRegisterAdapterObject`.
use super::bindings::{KsDeviceRegisterAdapterObject, KsGetOuterUnknown, PKSDEVICE};
use super::ddi::nt_success;
use crate::device::AdapterRegistration;
use core::ffi::c_void;
use core::ptr;
use wdk_sys::{
    _DMA_WIDTH, _INTERFACE_TYPE, BOOLEAN, DEVICE_DESCRIPTION, DEVICE_DESCRIPTION_VERSION2, GUID, NTSTATUS, STATUS_SUCCESS,
    ULONG,
};

/// `IID_IKsDeviceFunctions` {E234F2E2-BD69-4F8C-B3F2-7CD79ED466BD} (ks.h).
static IID_IKS_DEVICE_FUNCTIONS: GUID =
    GUID { Data1: 0xE234_F2E2, Data2: 0xBD69, Data3: 0x4F8C, Data4: [0xB3, 0xF2, 0x7C, 0xD7, 0x9E, 0xD4, 0x66, 0xBD] };

/// The three `IUnknown` entries every kernel COM-style vtable starts with
/// (ks.h's `DEFINE_ABSTRACT_UNKNOWN`: `QueryInterface` returns an `NTSTATUS`).
#[repr(C)]
pub(super) struct UnknownVtbl {
    pub(super) query_interface:
        unsafe extern "system" fn(this: *mut c_void, iid: *const GUID, out: *mut *mut c_void) -> NTSTATUS,
    pub(super) add_ref: unsafe extern "system" fn(this: *mut c_void) -> ULONG,
    pub(super) release: unsafe extern "system" fn(this: *mut c_void) -> ULONG,
}

/// The vtable of a COM-style object: its first pointer.
///
/// # Safety
/// `object` must be a live COM-style object whose vtable has the layout of
/// `V` and stays valid for `'a` (while a reference to the object is held).
pub(super) unsafe fn vtable<'a, V>(object: *mut c_void) -> &'a V {
    // SAFETY: the caller's guarantee: the object's first field is its vtable pointer.
    let vtbl = unsafe { *object.cast::<*const V>() };
    // SAFETY: that vtable has `V`'s layout and outlives `'a` (the caller's guarantee).
    unsafe { &*vtbl }
}

/// `IKsDeviceFunctions`'s vtable (ks.h): `IUnknown`, then `RegisterAdapterObjectEx`.
#[repr(C)]
struct DeviceFunctionsVtbl {
    unknown: UnknownVtbl,
    register_adapter_object_ex: unsafe extern "system" fn(
        this: *mut c_void,
        adapter: *mut wdk_sys::_DMA_ADAPTER,
        description: *mut DEVICE_DESCRIPTION,
        map_registers: ULONG,
        max_mapping_byte_count: ULONG,
        mapping_table_stride: ULONG,
    ) -> NTSTATUS,
}

/// `TRUE`/`FALSE` as a `BOOLEAN`.
const fn flag(on: bool) -> BOOLEAN {
    if on {
        1
    } else {
        0
    }
}

/// The `DEVICE_DESCRIPTION` the bus passed `IoGetDmaAdapter` in S/G mode
/// (version 2, a PCI bus master with scatter/gather, 32- or 64-bit
/// addresses, `MaximumLength` the largest frame).
fn description(registration: &AdapterRegistration) -> DEVICE_DESCRIPTION {
    DEVICE_DESCRIPTION {
        Version: DEVICE_DESCRIPTION_VERSION2,
        Master: flag(true),
        ScatterGather: flag(true),
        Dma32BitAddresses: flag(!registration.dma64),
        Dma64BitAddresses: flag(registration.dma64),
        InterfaceType: _INTERFACE_TYPE::PCIBus,
        DmaWidth: _DMA_WIDTH::Width32Bits,
        MaximumLength: registration.maximum_length,
        ..DEVICE_DESCRIPTION::default()
    }
}

/// Registers `registration`'s adapter for `device`'s pins: through
/// `IKsDeviceFunctions::RegisterAdapterObjectEx` (its status returned), or
/// `KsDeviceRegisterAdapterObject` when AVStream has no such interface
/// (`STATUS_SUCCESS`). PASSIVE.
///
/// # Safety
/// `device` must be a live `PKSDEVICE` in its Start dispatch; the adapter
/// must stay valid while the device's pins may generate mappings (the bus
/// keeps it until the interface reference is released at Remove).
pub unsafe fn register(device: PKSDEVICE, registration: &AdapterRegistration) -> NTSTATUS {
    let adapter = registration.adapter.cast::<wdk_sys::_DMA_ADAPTER>();
    // SAFETY: a live device (caller); KsDeviceGetOuterUnknown is this call.
    let unknown = unsafe { KsGetOuterUnknown(device.cast()) }.cast::<c_void>();
    let mut functions: *mut c_void = ptr::null_mut();
    let status = if unknown.is_null() {
        wdk_sys::STATUS_NOINTERFACE
    } else {
        // SAFETY: a COM-style object starts with its vtable pointer, and an
        // outer IUnknown's vtable starts with the IUnknown entries.
        let vtbl = unsafe { vtable::<UnknownVtbl>(unknown) };
        // SAFETY: the object, the IID and the out-pointer are valid.
        unsafe { (vtbl.query_interface)(unknown, &raw const IID_IKS_DEVICE_FUNCTIONS, &raw mut functions) }
    };
    if !nt_success(status) || functions.is_null() {
        // SAFETY: as for the Ex method; the older entry point takes no description.
        unsafe {
            KsDeviceRegisterAdapterObject(device, adapter, registration.max_mapping_byte_count, registration.mapping_table_stride);
        }
        return STATUS_SUCCESS;
    }
    // SAFETY: QueryInterface answered an IKsDeviceFunctions, whose vtable
    // has this shape (ks.h).
    let vtbl = unsafe { vtable::<DeviceFunctionsVtbl>(functions) };
    let mut dd = description(registration);
    // SAFETY: the interface is live (we hold its reference); `dd` is valid
    // for the call.
    let status = unsafe {
        (vtbl.register_adapter_object_ex)(
            functions,
            adapter,
            &raw mut dd,
            registration.map_registers,
            registration.max_mapping_byte_count,
            registration.mapping_table_stride,
        )
    };
    // SAFETY: the reference QueryInterface took, released once.
    let _ = unsafe { (vtbl.unknown.release)(functions) };
    status
}
