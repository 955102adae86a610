//! The `KSDEVICE` side of `ks.sys`: the device mutex, the filter control
//! mutex, `KsGetDevice`, object bags, the adapter registration and the
//! filter factories.

use capdma_winvm::{Machine, Stop};

use super::super::layout::irp::status;
use super::super::layout::ks::{ksfilter_descriptor, ksfilterfactory};
use super::super::pool::POOL_FLAG_NON_PAGED;
use super::super::Nt;
use super::driver::low32;

/// `KSFILTER_DESCRIPTOR_VERSION` (ks.h: `((ULONG)-1)`).
pub const KSFILTER_DESCRIPTOR_VERSION: u32 = u32::MAX;

/// What `KsDeviceRegisterAdapterObject` registered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterRegistration {
    /// The `PDMA_ADAPTER`.
    pub adapter: u64,
    /// `MaxMappingByteCount`, bytes.
    pub max_mapping_byte_count: u32,
    /// `MappingTableStride`, bytes per `KSMAPPING` entry.
    pub mapping_table_stride: u32,
}

/// One `KSDEVICE` and what the host keeps of it.
#[derive(Clone, Debug, Default)]
pub struct KsDeviceRecord {
    /// Its FDO (`KSDEVICE.FunctionalDeviceObject`).
    pub fdo: u64,
    /// The PDO it was added on.
    pub pdo: u64,
    /// The device its FDO is attached to.
    pub lower: u64,
    /// Its object bag.
    pub bag: u64,
    /// The device mutex is held (`KsAcquireDevice` … `KsReleaseDevice`).
    pub mutex_held: bool,
    /// The adapter registered for mapping generation.
    pub adapter: Option<AdapterRegistration>,
    /// Its filter factories.
    pub factories: Vec<u64>,
    /// `IRP_MN_REMOVE_DEVICE` went through: the device is gone.
    pub deleted: bool,
    /// Its COM-style interfaces (`KsGetOuterUnknown`), once asked for.
    pub interfaces: Option<super::unknown::DeviceInterfaces>,
    /// The adapter came through `IKsDeviceFunctions::RegisterAdapterObjectEx`
    /// (not `KsDeviceRegisterAdapterObject`).
    pub registered_ex: bool,
}

/// One object bag: the items and how each is freed.
#[derive(Clone, Debug, Default)]
pub struct Bag {
    /// The object the bag belongs to.
    pub owner: u64,
    /// `(item, PFNKSFREE)` in the order added (0: `ExFreePool`).
    pub items: Vec<(u64, u64)>,
}

/// A fresh object bag for `owner`: an opaque handle (a kernel page the
/// minidriver never reads).
///
/// # Errors
/// [`Stop::Host`] when the machine's frames are exhausted.
pub fn new_bag(nt: &mut Nt, m: &mut Machine, owner: u64) -> Result<u64, Stop> {
    let bag = nt.alloc_kernel(m, 16)?;
    nt.ks.bags.insert(bag, Bag { owner, items: Vec::new() });
    Ok(bag)
}

/// Frees a bag ("KsFreeObjectBag function (ks.h)"): every item, last added
/// first, through its free routine (`ExFreePool` when it has none), unless
/// another bag still holds it (an item is freed with the last bag that
/// holds it; added twice to one bag, it is freed once), then the handle.
///
/// # Errors
/// A bugcheck from a free routine; [`Stop::Host`] when a page cannot be freed.
pub fn free_bag(nt: &mut Nt, m: &mut Machine, bag: u64) -> Result<(), Stop> {
    let Some(record) = nt.ks.bags.remove(&bag) else { return Ok(()) };
    for (i, &(item, free)) in record.items.iter().enumerate().rev() {
        if record.items[..i].iter().any(|(other, _)| *other == item) || in_a_bag(nt, item) {
            continue;
        }
        free_item(nt, m, item, free)?;
    }
    m.free_own_pages(bag, 1)
}

/// Whether a live bag holds `item`.
fn in_a_bag(nt: &Nt, item: u64) -> bool {
    nt.ks.bags.values().any(|b| b.items.iter().any(|(other, _)| *other == item))
}

/// Frees one bag item.
fn free_item(nt: &mut Nt, m: &mut Machine, item: u64, free: u64) -> Result<(), Stop> {
    if free != 0 {
        m.call(nt, free, &[item])?;
    } else {
        pool_call(nt, m, "ExFreePool", &[item])?;
    }
    Ok(())
}

/// Calls the emulated kernel's pool DDI `name` through its stub (so the
/// pool's accounting, special-pool checks and low-resources simulation
/// apply to what KS allocates for the minidriver).
fn pool_call(nt: &mut Nt, m: &mut Machine, name: &str, args: &[u64]) -> Result<u64, Stop> {
    let stub = nt.resolve(m, "ntoskrnl.exe", name).ok_or_else(|| Stop::Host(format!("{name} missing")))?;
    m.call(nt, stub, args)
}

/// Removes a device (`IRP_MN_REMOVE_DEVICE`): its filter factories and its
/// bag go (the minidriver's context with it), the `KSDEVICE` is freed (a
/// later touch faults).
///
/// # Errors
/// As [`free_bag`].
pub fn remove_device(nt: &mut Nt, m: &mut Machine, ks_device: u64) -> Result<(), Stop> {
    super::unknown::check_released(nt, m, ks_device);
    let Some(record) = nt.ks.devices.get_mut(&ks_device) else { return Ok(()) };
    record.deleted = true;
    if let Some(i) = record.interfaces {
        m.free_own_pages(i.page, 1)?;
    }
    let Some(record) = nt.ks.devices.get_mut(&ks_device) else { return Ok(()) };
    let (bag, factories) = (record.bag, std::mem::take(&mut record.factories));
    for factory in factories {
        nt.ks.factories.remove(&factory);
        let factory_bag = m.read_u64(factory + ksfilterfactory::BAG)?;
        free_bag(nt, m, factory_bag)?;
        m.free_own_pages(factory, 1)?;
    }
    free_bag(nt, m, bag)?;
    m.free_own_pages(ks_device, 1)
}

/// The live `KSDEVICE` at `device`, or a finding `rule` naming `ddi`.
fn live_device(nt: &mut Nt, m: &Machine, device: u64, ddi: &str) -> Option<u64> {
    nt.verifier.checks += 1;
    if nt.ks.devices.get(&device).is_some_and(|d| !d.deleted) {
        Some(device)
    } else {
        nt.violation(m, "KS_INVALID_DEVICE", 0xC4, None, format!("{ddi}({device:#x}): not a live KSDEVICE"));
        None
    }
}

/// `void KsAcquireDevice(PKSDEVICE Device)` ("KsAcquireDevice function
/// (ks.h)"; `PASSIVE_LEVEL`): takes the device mutex (`KsCreateFilterFactory`
/// and descriptor changes need it held). The mutex is not taken
/// recursively ("Device Mutex in AVStream"): taking it again while it is
/// held would wait forever — the finding `KS_DEVICE_MUTEX_DEADLOCK` (it
/// stays held, once).
pub(crate) fn ks_acquire_device(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device] = m.args::<1>()?;
    let Some(device) = live_device(nt, m, device, "KsAcquireDevice") else { return Ok(0) };
    let held = nt.ks.devices.get(&device).is_some_and(|d| d.mutex_held);
    nt.verifier.checks += 1;
    if held {
        nt.violation(
            m,
            "KS_DEVICE_MUTEX_DEADLOCK",
            0xC4,
            None,
            format!("KsAcquireDevice({device:#x}) while the device mutex is held: it is not recursive, the thread would wait forever"),
        );
    } else if let Some(record) = nt.ks.devices.get_mut(&device) {
        record.mutex_held = true;
    }
    Ok(0)
}

/// `void KsReleaseDevice(PKSDEVICE Device)` ("KsReleaseDevice function
/// (ks.h)"; `PASSIVE_LEVEL`): releases the device mutex; releasing a mutex
/// not held is the finding `KS_DEVICE_MUTEX_NOT_HELD` (a mutant released
/// by a thread that does not own it: bug check 0xC4).
pub(crate) fn ks_release_device(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device] = m.args::<1>()?;
    if let Some(device) = live_device(nt, m, device, "KsReleaseDevice") {
        let held = nt.ks.devices.get(&device).is_some_and(|d| d.mutex_held);
        nt.verifier.checks += 1;
        if held {
            if let Some(record) = nt.ks.devices.get_mut(&device) {
                record.mutex_held = false;
            }
        } else {
            nt.violation(m, "KS_DEVICE_MUTEX_NOT_HELD", 0xC4, None, format!("KsReleaseDevice({device:#x}) without KsAcquireDevice"));
        }
    }
    Ok(0)
}

/// Calls the minidriver's `routine` with `args` while AVStream holds the
/// mutex of `object` on its behalf: a `KSDEVICE`'s device mutex ("Device
/// Mutex in AVStream": `IRP_MN_START_DEVICE`, the `PostStart` dispatch,
/// `IRP_MN_QUERY_STOP_DEVICE`, `IRP_MN_QUERY_REMOVE_DEVICE`) or a
/// `KSFILTER`'s control mutex ("Filter Control Mutex in AVStream": the
/// pin's `Create`, `Close`, `SetDataFormat`, `SetDeviceState`).
///
/// # Errors
/// What the call stops with.
pub(crate) fn call_holding(nt: &mut Nt, m: &mut Machine, object: u64, routine: u64, args: &[u64]) -> Result<u64, Stop> {
    nt.ks.held_for_minidriver.push(object);
    let result = m.call(nt, routine, args);
    nt.ks.held_for_minidriver.pop();
    result
}

/// The mutex that guards a bag of `owner`, by "KsAddItemToObjectBag
/// function (ks.h)": the device mutex for a `KSDEVICE`'s or a
/// `KSFILTERFACTORY`'s bag, the filter control mutex for a `KSFILTER`'s,
/// the parent filter's control mutex for a `KSPIN`'s. Returns the object
/// whose mutex it is and its name; `None` for an owner KS does not know.
fn bag_mutex(nt: &Nt, owner: u64) -> Option<(u64, &'static str)> {
    let ks = &nt.ks;
    if ks.devices.contains_key(&owner) {
        Some((owner, "the device mutex"))
    } else if let Some(device) = ks.factories.get(&owner) {
        Some((*device, "the device mutex"))
    } else if ks.filters.contains_key(&owner) {
        Some((owner, "the filter control mutex"))
    } else {
        ks.pins.get(&owner).map(|p| (p.filter, "the parent filter's control mutex"))
    }
}

/// Whether the mutex of `object` (a `KSDEVICE`'s device mutex or a
/// `KSFILTER`'s control mutex) is held: taken by the minidriver or held by
/// AVStream for it around the routine running now.
fn mutex_held(nt: &Nt, object: u64) -> bool {
    nt.ks.held_for_minidriver.contains(&object)
        || nt.ks.devices.get(&object).is_some_and(|d| d.mutex_held)
        || nt.ks.control_held.contains(&object)
}

/// Checks that the mutex of `bag` is held for `ddi` ("the caller must hold
/// the mutex associated with the bag"); the finding
/// `KS_OBJECT_BAG_MUTEX_NOT_HELD` (bug check 0xC4) otherwise. The call
/// goes on either way (Windows does not check it; the bag's list races).
fn check_bag_mutex(nt: &mut Nt, m: &Machine, bag: u64, ddi: &str) {
    let Some((object, mutex)) = nt.ks.bags.get(&bag).and_then(|b| bag_mutex(nt, b.owner)) else { return };
    nt.verifier.checks += 1;
    if !mutex_held(nt, object) {
        nt.violation(
            m,
            "KS_OBJECT_BAG_MUTEX_NOT_HELD",
            0xC4,
            None,
            format!("{ddi}({bag:#x}, ...) without {mutex} ({object:#x}) that guards the bag"),
        );
    }
}

/// The filter whose control mutex `object` (a `KSFILTER` or a `KSPIN`)
/// uses ("a pin object uses its parent's filter control mutex").
fn control_filter(nt: &Nt, object: u64) -> Option<u64> {
    if nt.ks.filters.contains_key(&object) {
        Some(object)
    } else {
        nt.ks.pins.get(&object).map(|p| p.filter)
    }
}

/// `void KsAcquireControl(PVOID Object)` ("KsAcquireControl function
/// (ks.h)"; `PASSIVE_LEVEL`; `KsFilterAcquireControl` and
/// `KsPinAcquireControl` are inline calls of it): takes the control mutex
/// of the filter `Object` is (or is a pin of). Not recursive ("Filter
/// Control Mutex in AVStream": taking it inside a routine AVStream called
/// with it held, or twice, waits forever): the finding
/// `KS_CONTROL_MUTEX_DEADLOCK`. An object that is neither a filter nor a
/// pin is `KS_NOT_AN_AVSTREAM_OBJECT`.
pub(crate) fn ks_acquire_control(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [object] = m.args::<1>()?;
    nt.verifier.checks += 1;
    let Some(filter) = control_filter(nt, object) else {
        nt.violation(m, "KS_NOT_AN_AVSTREAM_OBJECT", 0xC4, None, format!("KsAcquireControl({object:#x}): not a filter or a pin"));
        return Ok(0);
    };
    nt.verifier.checks += 1;
    if nt.ks.held_for_minidriver.contains(&filter) || nt.ks.control_held.contains(&filter) {
        nt.violation(
            m,
            "KS_CONTROL_MUTEX_DEADLOCK",
            0xC4,
            None,
            format!("KsAcquireControl({object:#x}) while the control mutex of filter {filter:#x} is held: it is not recursive, the thread would wait forever"),
        );
    } else {
        nt.ks.control_held.insert(filter);
    }
    Ok(0)
}

/// `void KsReleaseControl(PVOID Object)` ("KsReleaseControl function
/// (ks.h)"; `PASSIVE_LEVEL`): releases the control mutex the minidriver
/// took with `KsAcquireControl`; one it does not hold is the finding
/// `KS_CONTROL_MUTEX_NOT_HELD` (a mutant released by a thread that does
/// not own it: bug check 0xC4).
pub(crate) fn ks_release_control(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [object] = m.args::<1>()?;
    let filter = control_filter(nt, object);
    nt.verifier.checks += 1;
    if !filter.is_some_and(|f| nt.ks.control_held.remove(&f)) {
        nt.violation(m, "KS_CONTROL_MUTEX_NOT_HELD", 0xC4, None, format!("KsReleaseControl({object:#x}) without KsAcquireControl"));
    }
    Ok(0)
}

/// `PKSDEVICE KsGetDevice(PVOID Object)` ("KsGetDevice function (ks.h)";
/// any IRQL up to `DISPATCH_LEVEL`): the device of a `KSDEVICE`,
/// `KSFILTERFACTORY`, `KSFILTER` or `KSPIN`. Another pointer is the
/// finding `KS_NOT_AN_AVSTREAM_OBJECT` and returns NULL.
pub(crate) fn ks_get_device(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [object] = m.args::<1>()?;
    let ks = &nt.ks;
    let device = if ks.devices.contains_key(&object) {
        Some(object)
    } else if let Some(device) = ks.factories.get(&object) {
        Some(*device)
    } else if let Some((_, device)) = ks.filters.get(&object) {
        Some(*device)
    } else {
        ks.pins.get(&object).map(|p| p.device)
    };
    nt.verifier.checks += 1;
    if let Some(device) = device {
        return Ok(device);
    }
    nt.violation(m, "KS_NOT_AN_AVSTREAM_OBJECT", 0xC4, None, format!("KsGetDevice({object:#x}): not an AVStream object"));
    Ok(0)
}

/// `NTSTATUS KsAddItemToObjectBag(KSOBJECT_BAG ObjectBag, PVOID Item,
/// PFNKSFREE Free)` ("KsAddItemToObjectBag function (ks.h)";
/// `PASSIVE_LEVEL`): the item is freed with the bag (with `Free`, or
/// `ExFreePool` when NULL), or with the last of the bags that hold it.
/// `STATUS_SUCCESS`; an unknown bag is the finding `KS_INVALID_OBJECT_BAG`
/// and `STATUS_INVALID_PARAMETER`. The page's remarks: the minidriver
/// holds the bag's mutex (the device mutex for a `KSDEVICE`'s or
/// `KSFILTERFACTORY`'s bag, the filter control mutex for a `KSFILTER`'s,
/// the parent filter's for a `KSPIN`'s; held by AVStream around the
/// routines [`call_holding`] names); without it, the finding
/// `KS_OBJECT_BAG_MUTEX_NOT_HELD` (the item is added all the same).
pub(crate) fn ks_add_item_to_object_bag(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [bag, item, free] = m.args::<3>()?;
    nt.verifier.checks += 1;
    let Some(record) = nt.ks.bags.get_mut(&bag) else {
        nt.violation(m, "KS_INVALID_OBJECT_BAG", 0xC4, None, format!("KsAddItemToObjectBag({bag:#x}, {item:#x}): not an object bag"));
        return Ok(u64::from(status::INVALID_PARAMETER));
    };
    record.items.push((item, free));
    check_bag_mutex(nt, m, bag, "KsAddItemToObjectBag");
    Ok(u64::from(status::SUCCESS))
}

/// `NTSTATUS _KsEdit(KSOBJECT_BAG ObjectBag, PVOID* PointerToPointerToItem,
/// ULONG NewSize, ULONG OldSize, ULONG Tag)` ("_KsEdit function (ks.h)";
/// `PASSIVE_LEVEL`): makes `*PointerToPointerToItem` an item of the bag.
/// One already in the bag that does not grow (`NewSize <= OldSize`, as
/// with the `KsEdit` macro) is left as it is. Otherwise a new item of
/// `NewSize` bytes (non-paged pool, `Tag`) in the bag, holding the old
/// item's first `min(OldSize, NewSize)` bytes (the rest zero); when the old
/// item was in the bag it leaves it, and is freed unless another bag still
/// holds it; `*PointerToPointerToItem`
/// then points at the new item. `STATUS_SUCCESS`;
/// `STATUS_INSUFFICIENT_RESOURCES` when the pool is out (the pointer and
/// the old item are left as they were). The low resources simulation
/// ([`super::KsState::fail_edit_at`]) fails the pool allocation of the call
/// it names, through the pool's own injection (counted in `Pool::failed`).
/// The page's remarks: the caller holds the mutex associated with the bag
/// (as for `KsAddItemToObjectBag`); without it, the finding
/// `KS_OBJECT_BAG_MUTEX_NOT_HELD` (the edit is made all the same).
pub(crate) fn ks_edit(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [bag, pointer, new_size, old_size, tag] = m.args::<5>()?;
    nt.verifier.checks += 1;
    if !nt.ks.bags.contains_key(&bag) {
        nt.violation(m, "KS_INVALID_OBJECT_BAG", 0xC4, None, format!("_KsEdit({bag:#x}, ...): not an object bag"));
        return Ok(u64::from(status::INVALID_PARAMETER));
    }
    check_bag_mutex(nt, m, bag, "_KsEdit");
    let old = m.read_u64(pointer)?;
    let (new_size, old_size) = (new_size & 0xFFFF_FFFF, old_size & 0xFFFF_FFFF);
    let in_bag = old != 0 && nt.ks.bags.get(&bag).is_some_and(|b| b.items.iter().any(|(item, _)| *item == old));
    if in_bag && new_size <= old_size {
        return Ok(u64::from(status::SUCCESS));
    }
    let index = nt.ks.edits;
    nt.ks.edits += 1;
    let fail = nt.ks.fail_edit_at == Some(index);
    // The pool's own injection fails exactly this allocation; an injection
    // armed for a later one stays armed.
    let armed = nt.pool.fail_at;
    if fail {
        nt.pool.fail_at = Some(nt.pool.allocations);
    }
    let new = pool_call(nt, m, "ExAllocatePool2", &[POOL_FLAG_NON_PAGED, new_size, tag & 0xFFFF_FFFF])?;
    if fail {
        nt.pool.fail_at = armed;
    }
    if new == 0 {
        return Ok(u64::from(status::INSUFFICIENT_RESOURCES));
    }
    let keep = old_size.min(new_size);
    if old != 0 && keep != 0 {
        let mut bytes = vec![0u8; usize::try_from(keep).unwrap_or(0)];
        m.read(old, &mut bytes)?;
        m.write(new, &bytes)?;
    }
    let Some(record) = nt.ks.bags.get_mut(&bag) else { return Ok(u64::from(status::INVALID_PARAMETER)) };
    record.items.push((new, 0));
    let old_in_bag = record.items.iter().position(|(item, _)| *item == old && old != 0);
    let removed = old_in_bag.map(|i| record.items.remove(i));
    m.write_u64(pointer, new)?;
    if let Some((item, free)) = removed.filter(|(item, _)| !in_a_bag(nt, *item)) {
        free_item(nt, m, item, free)?;
    }
    Ok(u64::from(status::SUCCESS))
}

/// The mapping parameters `ddi` registers (`MaxMappingByteCount`, and the
/// `MappingTableStride`: at least `sizeof(KSMAPPING)` = 16, a multiple of
/// 8); the finding `KS_INVALID_MAPPING_PARAMETERS` and `false` otherwise.
pub(super) fn mapping_parameters_valid(nt: &mut Nt, m: &Machine, ddi: &str, max_mapping: u32, stride: u32) -> bool {
    nt.verifier.checks += 1;
    let valid = max_mapping != 0 && stride >= 16 && stride.is_multiple_of(8);
    if !valid {
        nt.violation(
            m,
            "KS_INVALID_MAPPING_PARAMETERS",
            0xC4,
            None,
            format!("{ddi}: MaxMappingByteCount {max_mapping}, MappingTableStride {stride} (at least sizeof(KSMAPPING) = 16, a multiple of 8)"),
        );
    }
    valid
}

/// `void KsDeviceRegisterAdapterObject(PKSDEVICE Device, PADAPTER_OBJECT
/// AdapterObject, ULONG MaxMappingByteCount, ULONG MappingTableStride)`
/// ("KsDeviceRegisterAdapterObject function (ks.h)"; `PASSIVE_LEVEL`):
/// the adapter AVStream generates `KSMAPPING`s through for pins with
/// `KSPIN_FLAG_GENERATE_MAPPINGS`. The adapter must be a live one of the
/// HAL (`KS_INVALID_ADAPTER` otherwise), `MappingTableStride` at least
/// `sizeof(KSMAPPING)` and a multiple of 8, `MaxMappingByteCount` not zero
/// (`KS_INVALID_MAPPING_PARAMETERS`).
pub(crate) fn ks_device_register_adapter_object(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device, adapter, max_mapping, stride] = m.args::<4>()?;
    let Some(device) = live_device(nt, m, device, "KsDeviceRegisterAdapterObject") else { return Ok(0) };
    let live = nt.hal.dma.adapters.get(&adapter).is_some_and(|a| !a.put);
    nt.verifier.checks += 1;
    if !live {
        nt.violation(m, "KS_INVALID_ADAPTER", 0xC4, None, format!("KsDeviceRegisterAdapterObject: {adapter:#x} is not a live DMA adapter"));
        return Ok(0);
    }
    let (max_mapping, stride) = (low32(max_mapping), low32(stride));
    if !mapping_parameters_valid(nt, m, "KsDeviceRegisterAdapterObject", max_mapping, stride) {
        return Ok(0);
    }
    if let Some(record) = nt.ks.devices.get_mut(&device) {
        record.adapter = Some(AdapterRegistration { adapter, max_mapping_byte_count: max_mapping, mapping_table_stride: stride });
    }
    Ok(0)
}

/// `NTSTATUS KsCreateFilterFactory(PDEVICE_OBJECT DeviceObject, const
/// KSFILTER_DESCRIPTOR* Descriptor, PWSTR RefString, PSECURITY_DESCRIPTOR
/// SecurityDescriptor, ULONG CreateItemFlags, PFNKSFILTERFACTORYPOWER
/// SleepCallback, PFNKSFILTERFACTORYPOWER WakeCallback, PKSFILTERFACTORY*
/// FilterFactory)` ("KsCreateFilterFactory function (ks.h)";
/// `PASSIVE_LEVEL`, "the device mutex must be held"): a `KSFILTERFACTORY`
/// for `Descriptor` on the AVStream FDO `DeviceObject`. Findings: the
/// device mutex not held (`KS_FILTER_FACTORY_WITHOUT_DEVICE_MUTEX`), a
/// descriptor whose `Version` is not `KSFILTER_DESCRIPTOR_VERSION`
/// (`STATUS_INVALID_PARAMETER` then). `STATUS_INVALID_DEVICE_REQUEST` for
/// a device object that is not an AVStream FDO.
pub(crate) fn ks_create_filter_factory(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [fdo, descriptor, _ref_string, _security, _flags, _sleep, _wake, out] = m.args::<8>()?;
    let Some(device) = nt.ks.devices.iter().find(|(_, d)| d.fdo == fdo && !d.deleted).map(|(va, _)| *va) else {
        return Ok(u64::from(status::INVALID_DEVICE_REQUEST));
    };
    let held = nt.ks.devices.get(&device).is_some_and(|d| d.mutex_held);
    nt.verifier.checks += 1;
    if !held {
        nt.violation(
            m,
            "KS_FILTER_FACTORY_WITHOUT_DEVICE_MUTEX",
            0xC4,
            None,
            format!("KsCreateFilterFactory on {fdo:#x} without the device mutex (KsAcquireDevice)"),
        );
    }
    let version = m.read_u32(descriptor + ksfilter_descriptor::VERSION)?;
    nt.verifier.checks += 1;
    if version != KSFILTER_DESCRIPTOR_VERSION {
        nt.violation(m, "KS_FILTER_DESCRIPTOR_VERSION", 0xC4, None, format!("KSFILTER_DESCRIPTOR.Version {version:#x}"));
        return Ok(u64::from(status::INVALID_PARAMETER));
    }
    let factory = nt.alloc_kernel(m, ksfilterfactory::SIZE)?;
    let bag = new_bag(nt, m, factory)?;
    m.write_u64(factory + ksfilterfactory::FILTER_DESCRIPTOR, descriptor)?;
    m.write_u64(factory + ksfilterfactory::BAG, bag)?;
    nt.ks.factories.insert(factory, device);
    if let Some(record) = nt.ks.devices.get_mut(&device) {
        record.factories.push(factory);
    }
    if out != 0 {
        m.write_u64(out, factory)?;
    }
    Ok(u64::from(status::SUCCESS))
}
