//! The COM-style interfaces AVStream implements on its objects, as far as
//! a minidriver reaches them: `KsGetOuterUnknown` (behind the inline
//! `KsDeviceGetOuterUnknown`) gives a device's outer `IUnknown`, whose
//! `QueryInterface` hands out `IKsDeviceFunctions`, whose
//! `RegisterAdapterObjectEx` is how "all drivers compiled for Win64
//! platforms" register their DMA adapter ("KsGetOuterUnknown function
//! (ks.h)", "KsDeviceGetOuterUnknown function (ks.h)", "IKsDeviceFunctions
//! interface (ks.h)", "IKsDeviceFunctions::RegisterAdapterObjectEx method
//! (ks.h)").
//!
//! Each interface is an object in guest memory whose first pointer is its
//! vtable of host functions (`QueryInterface`, `AddRef`, `Release`, then the
//! methods), with the device as their context. References taken by
//! `QueryInterface` must be released before the device goes (a leak
//! otherwise: `KS_INTERFACE_NOT_RELEASED`).

use capdma_winvm::{Machine, Stop};

use super::super::layout::dma::device_description;
use super::super::layout::irp::status;
use super::super::{Nt, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::device::AdapterRegistration;
use super::driver::low32;

/// `IID_IUnknown` {00000000-0000-0000-C000-000000000046}.
pub const IID_IUNKNOWN: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46];
/// `IID_IKsDeviceFunctions` {E234F2E2-BD69-4F8C-B3F2-7CD79ED466BD} (ks.h).
pub const IID_IKS_DEVICE_FUNCTIONS: [u8; 16] =
    [0xE2, 0xF2, 0x34, 0xE2, 0x69, 0xBD, 0x8C, 0x4F, 0xB3, 0xF2, 0x7C, 0xD7, 0x9E, 0xD4, 0x66, 0xBD];
/// `STATUS_NOINTERFACE` (ntstatus.h): `QueryInterface` for an interface the object lacks.
pub const STATUS_NOINTERFACE: u32 = 0xC000_02B9;

/// Offsets in a device's interface page.
const OUTER: u64 = 0x0;
const FUNCTIONS: u64 = 0x40;
const OUTER_VTABLE: u64 = 0x100;
const FUNCTIONS_VTABLE: u64 = 0x140;
/// The highest `DEVICE_DESCRIPTION.Version` (`DEVICE_DESCRIPTION_VERSION3`).
const DEVICE_DESCRIPTION_VERSION3: u32 = 3;

/// The interfaces of one device: where they live and the references out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceInterfaces {
    /// The page holding the two objects and their vtables.
    pub page: u64,
    /// References `QueryInterface`/`AddRef` gave out and `Release` did not take back.
    pub references: i64,
}

/// `PUNKNOWN KsGetOuterUnknown(PVOID Object)` ("KsGetOuterUnknown function
/// (ks.h)"; `PASSIVE_LEVEL`): the outer `IUnknown` of an AVStream object.
/// For a `KSDEVICE` it is the device's (made on first use); other objects
/// (filters, pins) have no aggregated interfaces here: NULL, and the
/// finding `KS_NOT_AN_AVSTREAM_OBJECT` for a pointer that is no AVStream
/// object at all.
///
/// # Errors
/// [`Stop::Host`] when the machine's frames are exhausted.
pub(crate) fn ks_get_outer_unknown(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [object] = m.args::<1>()?;
    nt.verifier.checks += 1;
    if nt.ks.devices.get(&object).is_none_or(|d| d.deleted) {
        let known = nt.ks.factories.contains_key(&object) || nt.ks.filters.contains_key(&object) || nt.ks.pins.contains_key(&object);
        if !known {
            nt.violation(m, "KS_NOT_AN_AVSTREAM_OBJECT", 0xC4, None, format!("KsGetOuterUnknown({object:#x}): not an AVStream object"));
        }
        return Ok(0);
    }
    let page = interfaces_of(nt, m, object)?;
    Ok(page + OUTER)
}

/// The device's interface page, made on first use.
fn interfaces_of(nt: &mut Nt, m: &mut Machine, device: u64) -> Result<u64, Stop> {
    if let Some(i) = nt.ks.devices.get(&device).and_then(|d| d.interfaces) {
        return Ok(i.page);
    }
    let page = nt.alloc_kernel(m, 4096)?;
    let routines: [(&str, super::super::HostFn, u8); 4] = [
        ("ks!IUnknown::QueryInterface", query_interface, DISPATCH_LEVEL),
        ("ks!IUnknown::AddRef", add_ref, DISPATCH_LEVEL),
        ("ks!IUnknown::Release", release, DISPATCH_LEVEL),
        ("ks!IKsDeviceFunctions::RegisterAdapterObjectEx", register_adapter_object_ex, PASSIVE_LEVEL),
    ];
    let mut addresses = [0u64; 4];
    for (slot, (name, run, irql)) in addresses.iter_mut().zip(routines) {
        *slot = nt.host_function(m, name, run, device, irql)?;
    }
    m.write_u64(page + OUTER, page + OUTER_VTABLE)?;
    m.write_u64(page + FUNCTIONS, page + FUNCTIONS_VTABLE)?;
    for (i, va) in addresses.iter().take(3).enumerate() {
        m.write_u64(page + OUTER_VTABLE + 8 * i as u64, *va)?;
    }
    for (i, va) in addresses.iter().enumerate() {
        m.write_u64(page + FUNCTIONS_VTABLE + 8 * i as u64, *va)?;
    }
    if let Some(d) = nt.ks.devices.get_mut(&device) {
        d.interfaces = Some(DeviceInterfaces { page, references: 0 });
    }
    Ok(page)
}

/// `HRESULT/NTSTATUS QueryInterface(this, REFIID, PVOID*)`: the outer
/// unknown for `IID_IUnknown`, `IKsDeviceFunctions` for its IID (each with
/// a reference taken); `STATUS_NOINTERFACE` and NULL otherwise.
fn query_interface(nt: &mut Nt, m: &mut Machine, device: u64) -> Result<u64, Stop> {
    let [this, iid, out] = m.args::<3>()?;
    let page = interfaces_of(nt, m, device)?;
    nt.verifier.checks += 1;
    if this != page + OUTER && this != page + FUNCTIONS {
        nt.violation(m, "KS_INTERFACE_BAD_THIS", 0xC4, None, format!("QueryInterface on {this:#x}, not an interface of KSDEVICE {device:#x}"));
    }
    let mut wanted = [0u8; 16];
    m.read(iid, &mut wanted)?;
    let answer = if wanted == IID_IKS_DEVICE_FUNCTIONS {
        Some(page + FUNCTIONS)
    } else if wanted == IID_IUNKNOWN {
        Some(page + OUTER)
    } else {
        None
    };
    m.write_u64(out, answer.unwrap_or(0))?;
    let Some(_) = answer else { return Ok(u64::from(STATUS_NOINTERFACE)) };
    reference(nt, device, 1);
    Ok(u64::from(status::SUCCESS))
}

fn reference(nt: &mut Nt, device: u64, delta: i64) -> i64 {
    nt.ks.devices.get_mut(&device).and_then(|d| d.interfaces.as_mut()).map_or(0, |i| {
        i.references += delta;
        i.references
    })
}

/// `ULONG AddRef(this)`: one reference more; the count.
fn add_ref(nt: &mut Nt, _m: &mut Machine, device: u64) -> Result<u64, Stop> {
    Ok(u64::try_from(reference(nt, device, 1)).unwrap_or(0))
}

/// `ULONG Release(this)`: one reference fewer; the count. More releases
/// than references is the finding `KS_INTERFACE_RELEASED_TOO_OFTEN`.
fn release(nt: &mut Nt, m: &mut Machine, device: u64) -> Result<u64, Stop> {
    let left = reference(nt, device, -1);
    nt.verifier.checks += 1;
    if left < 0 {
        nt.violation(m, "KS_INTERFACE_RELEASED_TOO_OFTEN", 0xC4, None, format!("Release on KSDEVICE {device:#x}'s interface without a reference"));
        reference(nt, device, 1);
        return Ok(0);
    }
    Ok(u64::try_from(left).unwrap_or(0))
}

/// `NTSTATUS RegisterAdapterObjectEx(this, PADAPTER_OBJECT AdapterObject,
/// PDEVICE_DESCRIPTION DeviceDescription, ULONG NumberOfMapRegisters, ULONG
/// MaxMappingsByteCount, ULONG MappingTableStride)`
/// ("IKsDeviceFunctions::RegisterAdapterObjectEx method (ks.h)";
/// `PASSIVE_LEVEL`): as `KsDeviceRegisterAdapterObject`, with the
/// description of the device and the map registers `IoGetDmaAdapter`
/// granted. Checked: a live adapter (`KS_INVALID_ADAPTER`), the mapping
/// parameters (`KS_INVALID_MAPPING_PARAMETERS`), a description of a bus
/// master with scatter/gather, `Version` up to 3, `Dma64BitAddresses` as
/// the adapter was made with, `NumberOfMapRegisters` from 1 up to the
/// adapter's grant (`KS_INVALID_DEVICE_DESCRIPTION`). Returns
/// `STATUS_SUCCESS`, or `STATUS_INVALID_PARAMETER` for what was refused.
fn register_adapter_object_ex(nt: &mut Nt, m: &mut Machine, device: u64) -> Result<u64, Stop> {
    let [_this, adapter, description, map_registers, max_mapping, stride] = m.args::<6>()?;
    let (map_registers, max_mapping, stride) = (low32(map_registers), low32(max_mapping), low32(stride));
    let Some(record) = nt.hal.dma.adapters.get(&adapter).filter(|a| !a.put).map(|a| (a.dma64, a.map_registers)) else {
        nt.verifier.checks += 1;
        nt.violation(m, "KS_INVALID_ADAPTER", 0xC4, None, format!("RegisterAdapterObjectEx: {adapter:#x} is not a live DMA adapter"));
        return Ok(u64::from(status::INVALID_PARAMETER));
    };
    if !super::device::mapping_parameters_valid(nt, m, "RegisterAdapterObjectEx", max_mapping, stride) {
        return Ok(u64::from(status::INVALID_PARAMETER));
    }
    let version = m.read_u32(description + device_description::VERSION)?;
    let master = m.read_u8(description + device_description::MASTER)? != 0;
    let scatter_gather = m.read_u8(description + device_description::SCATTER_GATHER)? != 0;
    let dma64 = m.read_u8(description + device_description::DMA64_BIT_ADDRESSES)? != 0;
    let (adapter_dma64, granted) = record;
    let problems: Vec<String> = [
        (version > DEVICE_DESCRIPTION_VERSION3, format!("Version {version} (at most DEVICE_DESCRIPTION_VERSION3)")),
        (!master || !scatter_gather, format!("Master {master}, ScatterGather {scatter_gather} (a bus-master scatter/gather device)")),
        (dma64 != adapter_dma64, format!("Dma64BitAddresses {dma64}, the adapter was made with {adapter_dma64}")),
        (map_registers == 0 || map_registers > granted, format!("NumberOfMapRegisters {map_registers}, IoGetDmaAdapter granted {granted}")),
    ]
    .into_iter()
    .filter(|(bad, _)| *bad)
    .map(|(_, what)| what)
    .collect();
    nt.verifier.checks += 1;
    if !problems.is_empty() {
        nt.violation(m, "KS_INVALID_DEVICE_DESCRIPTION", 0xC4, None, format!("RegisterAdapterObjectEx: {}", problems.join("; ")));
        return Ok(u64::from(status::INVALID_PARAMETER));
    }
    if let Some(d) = nt.ks.devices.get_mut(&device) {
        d.adapter = Some(AdapterRegistration { adapter, max_mapping_byte_count: max_mapping, mapping_table_stride: stride });
        d.registered_ex = true;
    }
    Ok(u64::from(status::SUCCESS))
}

/// At a device's removal: references its interfaces still have out are a
/// finding (`KS_INTERFACE_NOT_RELEASED`, the minidriver leaked them).
pub fn check_released(nt: &mut Nt, m: &Machine, device: u64) {
    let Some(i) = nt.ks.devices.get(&device).and_then(|d| d.interfaces) else { return };
    nt.verifier.checks += 1;
    if i.references != 0 {
        nt.violation(
            m,
            "KS_INTERFACE_NOT_RELEASED",
            0xC4,
            None,
            format!("KSDEVICE {device:#x} removed with {} interface reference(s) from QueryInterface not released", i.references),
        );
    }
}
