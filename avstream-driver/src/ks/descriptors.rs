//! The KS descriptors of `capdma_avstream.sys`.
//!
//! * Static, built at compile time: the device descriptor and its dispatch
//!   table (`KsInitializeDriver`), the pin dispatch table, the two data
//!   ranges (the core's [`data_range`] for YUY2 and NV12), the pin's
//!   automation table (the dropped-frames property), and the GUIDs.
//! * Per device, built at Start into the device context
//!   ([`super::device::DeviceContext`]) because the DMA mode and the bus's
//!   alignment are only known then: the allocator framing
//!   ([`framing`]), the pin descriptor ([`pin_descriptor`], flags
//!   `DeviceSetup::pin_flags`) and the filter descriptor
//!   ([`filter_descriptor`]) handed to `KsCreateFilterFactory`.
use super::bindings::{
    KSPIN_DESCRIPTOR__bindgen_ty_1, KSPROPERTY_ITEM__bindgen_ty_1, KSPROPERTY_ITEM__bindgen_ty_2,
    KSALLOCATOR_FRAMING_EX, KSALLOCATOR_REQUIREMENTF_PREFERENCES_ONLY, KSALLOCATOR_REQUIREMENTF_SYSTEM_MEMORY,
    KSAUTOMATION_TABLE, KSDATAFORMAT, KSDEVICE_DESCRIPTOR, KSDEVICE_DESCRIPTOR_VERSION, KSDEVICE_DISPATCH,
    KSEVENT_ITEM, KSFILTER_DESCRIPTOR, KSFILTER_DESCRIPTOR_VERSION, KSMEMORY_TYPE_KERNEL_NONPAGED, KSMETHOD_ITEM,
    KSPIN_COMMUNICATION, KSPIN_DATAFLOW, KSPIN_DESCRIPTOR, KSPIN_DESCRIPTOR_EX, KSPIN_DISPATCH,
    KSPROPERTY_DROPPEDFRAMES_CURRENT_S, KSPROPERTY_ITEM, KSPROPERTY_SET, KS_COMPRESSION, KS_FRAMING_ITEM,
    KS_FRAMING_RANGE, KS_FRAMING_RANGE_WEIGHTED, PKSDATARANGE,
};
use super::{device, pin};
use crate::device::AllocatorFraming;
use crate::format::data_range;
use crate::ks_format::{self, KsDataRangeVideo, KsGuid};
use capdma_interface::format::PixelFormat;
use core::mem::size_of;
use core::ptr;
use wdk_sys::{GUID, ULONG};

/// Read-only data KS reads through raw pointers: a static holding raw
/// pointers is not `Sync` by itself.
#[repr(transparent)]
pub struct Shared<T>(pub T);

// SAFETY: every `Shared` is a static that is never written after its
// compile-time initialisation; KS and the glue only read it (KS copies a
// descriptor with `_KsEdit` before it changes anything), so sharing it
// between processors is sound.
unsafe impl<T> Sync for Shared<T> {}

/// `size_of::<T>()` as a `ULONG` (every KS structure is far below 4 GiB).
#[allow(clippy::cast_possible_truncation, reason = "KS structure sizes are a few hundred bytes")]
pub const fn ulong_size_of<T>() -> ULONG {
    size_of::<T>() as ULONG
}

/// A `GUID` of the core's [`KsGuid`] (same layout, asserted in `bindings`).
pub const fn guid(g: KsGuid) -> GUID {
    GUID { Data1: g.data1, Data2: g.data2, Data3: g.data3, Data4: g.data4 }
}

// ---- the device ----------------------------------------------------------

/// `KSDEVICE_DISPATCH`: Add, Start, Stop, Remove, `SurpriseRemoval`
/// ([`super::device`]); the others are AVStream's defaults.
static DEVICE_DISPATCH: Shared<KSDEVICE_DISPATCH> = Shared(KSDEVICE_DISPATCH {
    Add: Some(device::add),
    Start: Some(device::start),
    PostStart: None,
    QueryStop: None,
    CancelStop: None,
    Stop: Some(device::stop),
    QueryRemove: None,
    CancelRemove: None,
    Remove: Some(device::remove),
    QueryCapabilities: None,
    SurpriseRemoval: Some(device::surprise_removal),
    QueryPower: None,
    SetPower: None,
    QueryInterface: None,
});

/// The `KSDEVICE_DESCRIPTOR` given to `KsInitializeDriver`: no static
/// filter descriptors (the filter factory is created at Start, once the
/// DMA mode is known), version `KSDEVICE_DESCRIPTOR_VERSION`.
pub static DEVICE_DESCRIPTOR: Shared<KSDEVICE_DESCRIPTOR> = Shared(KSDEVICE_DESCRIPTOR {
    Dispatch: &raw const DEVICE_DISPATCH.0,
    FilterDescriptorsCount: 0,
    FilterDescriptors: ptr::null(),
    Version: KSDEVICE_DESCRIPTOR_VERSION,
});

// ---- the filter ----------------------------------------------------------

/// The filter's categories (`KSCATEGORY_CAPTURE`, `_VIDEO`, `_VIDEO_CAMERA`),
/// from the core's constants (tested against `capdma_interface::identity`).
static CATEGORIES: [GUID; 3] = [
    guid(ks_format::FILTER_CATEGORIES[0]),
    guid(ks_format::FILTER_CATEGORIES[1]),
    guid(ks_format::FILTER_CATEGORIES[2]),
];

/// `KSNAME_Filter`, the filter descriptor's `ReferenceGuid`.
static REFERENCE_GUID: GUID = guid(ks_format::KSNAME_FILTER);

/// Length of [`REFERENCE_STRING`] with its terminator.
const REFERENCE_STRING_LEN: usize = ks_format::FILTER_REFERENCE_STRING.len() + 1;

/// [`ks_format::FILTER_REFERENCE_STRING`] as a NUL-terminated UTF-16 string
/// (the `RefString` of `KsCreateFilterFactory`; the string is ASCII).
pub static REFERENCE_STRING: [u16; REFERENCE_STRING_LEN] = {
    let bytes = ks_format::FILTER_REFERENCE_STRING.as_bytes();
    let mut out = [0u16; REFERENCE_STRING_LEN];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
};

/// The filter descriptor of the per-device filter factory: one capture pin
/// (`pin`, in the same device context), the three categories, no nodes, no
/// connections (the default topology of a one-pin filter), no filter
/// dispatch (the filter has nothing to do: the pin is the work).
pub fn filter_descriptor(pin: *const KSPIN_DESCRIPTOR_EX) -> KSFILTER_DESCRIPTOR {
    KSFILTER_DESCRIPTOR {
        Dispatch: ptr::null(),
        AutomationTable: ptr::null(),
        Version: KSFILTER_DESCRIPTOR_VERSION,
        Flags: 0,
        ReferenceGuid: &raw const REFERENCE_GUID,
        PinDescriptorsCount: 1,
        PinDescriptorSize: ulong_size_of::<KSPIN_DESCRIPTOR_EX>(),
        PinDescriptors: pin,
        CategoriesCount: ulong_size_of::<[GUID; 3]>() / ulong_size_of::<GUID>(),
        Categories: CATEGORIES.as_ptr(),
        NodeDescriptorsCount: 0,
        NodeDescriptorSize: 0,
        NodeDescriptors: ptr::null(),
        ConnectionsCount: 0,
        Connections: ptr::null(),
        ComponentId: ptr::null(),
    }
}

// ---- the capture pin -----------------------------------------------------

/// `KSPIN_DISPATCH` of the capture pin ([`super::pin`]).
static PIN_DISPATCH: Shared<KSPIN_DISPATCH> = Shared(KSPIN_DISPATCH {
    Create: Some(pin::create),
    Close: Some(pin::close),
    Process: Some(pin::process),
    Reset: None,
    SetDataFormat: Some(pin::set_data_format),
    SetDeviceState: Some(pin::set_device_state),
    Connect: None,
    Disconnect: None,
    Clock: ptr::null(),
    Allocator: ptr::null(),
});

/// The YUY2 range (`KS_DATARANGE_VIDEO`, the core's [`data_range`]).
static RANGE_YUY2: KsDataRangeVideo = data_range(PixelFormat::Yuy2);
/// The NV12 range.
static RANGE_NV12: KsDataRangeVideo = data_range(PixelFormat::Nv12);

/// The pin's `DataRanges`: each `KS_DATARANGE_VIDEO` starts with its
/// `KSDATARANGE` (asserted in `bindings`).
static DATA_RANGES: Shared<[PKSDATARANGE; 2]> = Shared([
    (&raw const RANGE_YUY2).cast::<KSDATAFORMAT>().cast_mut(),
    (&raw const RANGE_NV12).cast::<KSDATAFORMAT>().cast_mut(),
]);

/// `PINNAME_VIDEO_CAPTURE`: the pin's category and name.
static PIN_NAME: GUID = guid(ks_format::PINNAME_VIDEO_CAPTURE);

/// `PROPSETID_VIDCAP_DROPPEDFRAMES`.
static DROPPED_FRAMES_SET: GUID = guid(ks_format::PROPSETID_VIDCAP_DROPPEDFRAMES);

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT`, get only; KS checks the request and
/// the buffer against `MinProperty`/`MinData` before calling the handler.
static DROPPED_FRAMES_ITEMS: Shared<[KSPROPERTY_ITEM; 1]> = Shared([KSPROPERTY_ITEM {
    PropertyId: ks_format::KSPROPERTY_DROPPEDFRAMES_CURRENT,
    __bindgen_anon_1: KSPROPERTY_ITEM__bindgen_ty_1 { GetPropertyHandler: Some(pin::dropped_frames_current) },
    MinProperty: ulong_size_of::<KSPROPERTY_DROPPEDFRAMES_CURRENT_S>(),
    MinData: ulong_size_of::<KSPROPERTY_DROPPEDFRAMES_CURRENT_S>(),
    __bindgen_anon_2: KSPROPERTY_ITEM__bindgen_ty_2 { SetPropertyHandler: None },
    Values: ptr::null(),
    RelationsCount: 0,
    Relations: ptr::null(),
    SupportHandler: None,
    SerializedSize: 0,
}]);

/// The pin's property sets: `PROPSETID_VIDCAP_DROPPEDFRAMES`.
static PROPERTY_SETS: Shared<[KSPROPERTY_SET; 1]> = Shared([KSPROPERTY_SET {
    Set: &raw const DROPPED_FRAMES_SET,
    PropertiesCount: 1,
    PropertyItem: DROPPED_FRAMES_ITEMS.0.as_ptr(),
    FastIoCount: 0,
    FastIoTable: ptr::null(),
}]);

/// The pin's automation table (merged by AVStream with its own).
static PIN_AUTOMATION: Shared<KSAUTOMATION_TABLE> = Shared(KSAUTOMATION_TABLE {
    PropertySetsCount: 1,
    PropertyItemSize: ulong_size_of::<KSPROPERTY_ITEM>(),
    PropertySets: PROPERTY_SETS.0.as_ptr(),
    MethodSetsCount: 0,
    MethodItemSize: ulong_size_of::<KSMETHOD_ITEM>(),
    MethodSets: ptr::null(),
    EventSetsCount: 0,
    EventItemSize: ulong_size_of::<KSEVENT_ITEM>(),
    EventSets: ptr::null(),
});

/// `Frames`/`Flags`/`FileAlignment` of the pin's only framing item:
/// `DECLARE_SIMPLE_FRAMING_EX(.., STATIC_KSMEMORY_TYPE_KERNEL_NONPAGED,
/// KSALLOCATOR_REQUIREMENTF_SYSTEM_MEMORY |
/// KSALLOCATOR_REQUIREMENTF_PREFERENCES_ONLY, Frames, Alignment, Size,
/// Size)` with the core's [`AllocatorFraming`].
pub fn framing(f: &AllocatorFraming) -> KSALLOCATOR_FRAMING_EX {
    KSALLOCATOR_FRAMING_EX {
        CountItems: 1,
        PinFlags: 0,
        OutputCompression: KS_COMPRESSION { RatioNumerator: 1, RatioDenominator: 1, RatioConstantMargin: 0 },
        PinWeight: 0,
        FramingItem: [KS_FRAMING_ITEM {
            MemoryType: KSMEMORY_TYPE_KERNEL_NONPAGED,
            BusType: GUID { Data1: 0, Data2: 0, Data3: 0, Data4: [0; 8] },
            MemoryFlags: 0,
            BusFlags: 0,
            Flags: KSALLOCATOR_REQUIREMENTF_SYSTEM_MEMORY | KSALLOCATOR_REQUIREMENTF_PREFERENCES_ONLY,
            Frames: f.frames,
            FileAlignment: f.file_alignment,
            MemoryTypeWeight: 0,
            PhysicalRange: KS_FRAMING_RANGE { MinFrameSize: 0, MaxFrameSize: ULONG::MAX, Stepping: 1 },
            FramingRange: KS_FRAMING_RANGE_WEIGHTED {
                Range: KS_FRAMING_RANGE { MinFrameSize: f.frame_size, MaxFrameSize: f.frame_size, Stepping: 1 },
                InPlaceWeight: 0,
                NotInPlaceWeight: 0,
            },
        }],
    }
}

/// Sets the frame size of a framing built by [`framing`] (a pin's copy,
/// edited at pin creation for its format).
pub fn set_frame_size(framing: &mut KSALLOCATOR_FRAMING_EX, frame_size: ULONG) {
    let range = &mut framing.FramingItem[0].FramingRange.Range;
    range.MinFrameSize = frame_size;
    range.MaxFrameSize = frame_size;
}

/// The capture pin's descriptor: output, `KSPIN_COMMUNICATION_BOTH`, the
/// YUY2 and NV12 ranges, one instance possible and necessary, `flags`
/// (`DeviceSetup::pin_flags`), the framing at `framing` (same device
/// context), the intersect handler and the automation table.
pub fn pin_descriptor(flags: ULONG, framing: *const KSALLOCATOR_FRAMING_EX) -> KSPIN_DESCRIPTOR_EX {
    KSPIN_DESCRIPTOR_EX {
        Dispatch: &raw const PIN_DISPATCH.0,
        AutomationTable: &raw const PIN_AUTOMATION.0,
        PinDescriptor: KSPIN_DESCRIPTOR {
            InterfacesCount: 0,
            Interfaces: ptr::null(),
            MediumsCount: 0,
            Mediums: ptr::null(),
            DataRangesCount: ulong_size_of::<[PKSDATARANGE; 2]>() / ulong_size_of::<PKSDATARANGE>(),
            DataRanges: DATA_RANGES.0.as_ptr(),
            DataFlow: KSPIN_DATAFLOW::KSPIN_DATAFLOW_OUT,
            Communication: KSPIN_COMMUNICATION::KSPIN_COMMUNICATION_BOTH,
            Category: &raw const PIN_NAME,
            Name: &raw const PIN_NAME,
            __bindgen_anon_1: KSPIN_DESCRIPTOR__bindgen_ty_1 { Reserved: 0 },
        },
        Flags: flags,
        InstancesPossible: 1,
        InstancesNecessary: 1,
        AllocatorFraming: framing,
        IntersectHandler: Some(pin::intersect),
    }
}
