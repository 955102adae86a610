//! The x64 layouts of the kernel-streaming structures (ks.h, ksmedia.h)
//! the emulated `ks.sys` and the AVStream image share. Offsets and sizes in
//! bytes, as the bindgen layout assertions of the AVStream crate's own KS
//! bindings give them (`tests/tests/nt_layout.rs` compares each one when the
//! Windows build has run).

/// `KSDEVICE` (ks.h): what AVStream hands the minidriver's device dispatch.
pub mod ksdevice {
    /// `sizeof(KSDEVICE)`.
    pub const SIZE: u64 = 64;
    /// `const KSDEVICE_DESCRIPTOR* Descriptor`.
    pub const DESCRIPTOR: u64 = 0x0;
    /// `KSOBJECT_BAG Bag`.
    pub const BAG: u64 = 0x8;
    /// `PVOID Context`: the minidriver's.
    pub const CONTEXT: u64 = 0x10;
    /// `PDEVICE_OBJECT FunctionalDeviceObject`.
    pub const FUNCTIONAL_DEVICE_OBJECT: u64 = 0x18;
    /// `PDEVICE_OBJECT PhysicalDeviceObject`.
    pub const PHYSICAL_DEVICE_OBJECT: u64 = 0x20;
    /// `PDEVICE_OBJECT NextDeviceObject`.
    pub const NEXT_DEVICE_OBJECT: u64 = 0x28;
    /// `BOOLEAN Started`.
    pub const STARTED: u64 = 0x30;
    /// `SYSTEM_POWER_STATE SystemPowerState`.
    pub const SYSTEM_POWER_STATE: u64 = 0x34;
    /// `DEVICE_POWER_STATE DevicePowerState`.
    pub const DEVICE_POWER_STATE: u64 = 0x38;
}

/// `KSDEVICE_DESCRIPTOR` (ks.h).
pub mod ksdevice_descriptor {
    /// `const KSDEVICE_DISPATCH* Dispatch`.
    pub const DISPATCH: u64 = 0x0;
    /// `ULONG FilterDescriptorsCount`.
    pub const FILTER_DESCRIPTORS_COUNT: u64 = 0x8;
    /// `const KSFILTER_DESCRIPTOR* const* FilterDescriptors`.
    pub const FILTER_DESCRIPTORS: u64 = 0x10;
    /// `ULONG Version` (`KSDEVICE_DESCRIPTOR_VERSION` and later).
    pub const VERSION: u64 = 0x18;
}

/// `KSDEVICE_DISPATCH` (ks.h): the minidriver's PnP callbacks.
pub mod ksdevice_dispatch {
    /// `PFNKSDEVICECREATE Add`.
    pub const ADD: u64 = 0x0;
    /// `PFNKSDEVICEPNPSTART Start`.
    pub const START: u64 = 0x8;
    /// `PFNKSDEVICE PostStart`.
    pub const POST_START: u64 = 0x10;
    /// `PFNKSDEVICEIRP QueryStop`.
    pub const QUERY_STOP: u64 = 0x18;
    /// `PFNKSDEVICEIRPVOID CancelStop`.
    pub const CANCEL_STOP: u64 = 0x20;
    /// `PFNKSDEVICEIRPVOID Stop`.
    pub const STOP: u64 = 0x28;
    /// `PFNKSDEVICEIRP QueryRemove`.
    pub const QUERY_REMOVE: u64 = 0x30;
    /// `PFNKSDEVICEIRPVOID CancelRemove`.
    pub const CANCEL_REMOVE: u64 = 0x38;
    /// `PFNKSDEVICEIRPVOID Remove`.
    pub const REMOVE: u64 = 0x40;
    /// `PFNKSDEVICEQUERYCAPABILITIES QueryCapabilities`.
    pub const QUERY_CAPABILITIES: u64 = 0x48;
    /// `PFNKSDEVICEIRPVOID SurpriseRemoval`.
    pub const SURPRISE_REMOVAL: u64 = 0x50;
}

/// `KSFILTERFACTORY` (ks.h).
pub mod ksfilterfactory {
    /// `sizeof(KSFILTERFACTORY)`.
    pub const SIZE: u64 = 24;
    /// `const KSFILTER_DESCRIPTOR* FilterDescriptor`.
    pub const FILTER_DESCRIPTOR: u64 = 0x0;
    /// `KSOBJECT_BAG Bag`.
    pub const BAG: u64 = 0x8;
    /// `PVOID Context`.
    pub const CONTEXT: u64 = 0x10;
}

/// `KSFILTER` (ks.h).
pub mod ksfilter {
    /// `sizeof(KSFILTER)`.
    pub const SIZE: u64 = 24;
    /// `const KSFILTER_DESCRIPTOR* Descriptor`.
    pub const DESCRIPTOR: u64 = 0x0;
    /// `KSOBJECT_BAG Bag`.
    pub const BAG: u64 = 0x8;
    /// `PVOID Context`.
    pub const CONTEXT: u64 = 0x10;
}

/// `KSFILTER_DESCRIPTOR` (ks.h).
pub mod ksfilter_descriptor {
    /// `ULONG Version` (`KSFILTER_DESCRIPTOR_VERSION`, `(ULONG)-1`).
    pub const VERSION: u64 = 0x10;
    /// `ULONG PinDescriptorsCount`.
    pub const PIN_DESCRIPTORS_COUNT: u64 = 0x20;
    /// `ULONG PinDescriptorSize`.
    pub const PIN_DESCRIPTOR_SIZE: u64 = 0x24;
    /// `const KSPIN_DESCRIPTOR_EX* PinDescriptors`.
    pub const PIN_DESCRIPTORS: u64 = 0x28;
    /// `ULONG CategoriesCount`.
    pub const CATEGORIES_COUNT: u64 = 0x30;
    /// `const GUID* Categories`.
    pub const CATEGORIES: u64 = 0x38;
}

/// `KSPIN_DESCRIPTOR_EX` (ks.h).
pub mod kspin_descriptor_ex {
    /// `sizeof(KSPIN_DESCRIPTOR_EX)`.
    pub const SIZE: u64 = 0x88;
    /// `const KSPIN_DISPATCH* Dispatch`.
    pub const DISPATCH: u64 = 0x0;
    /// `const KSAUTOMATION_TABLE* AutomationTable`.
    pub const AUTOMATION_TABLE: u64 = 0x8;
    /// `KSPIN_DESCRIPTOR PinDescriptor`.
    pub const PIN_DESCRIPTOR: u64 = 0x10;
    /// `ULONG Flags` (`KSPIN_FLAG_*`).
    pub const FLAGS: u64 = 0x68;
    /// `ULONG InstancesPossible`.
    pub const INSTANCES_POSSIBLE: u64 = 0x6C;
    /// `ULONG InstancesNecessary`.
    pub const INSTANCES_NECESSARY: u64 = 0x70;
    /// `const KSALLOCATOR_FRAMING_EX* AllocatorFraming`.
    pub const ALLOCATOR_FRAMING: u64 = 0x78;
    /// `PFNKSINTERSECTHANDLEREX IntersectHandler`.
    pub const INTERSECT_HANDLER: u64 = 0x80;
}

/// `KSPIN_DESCRIPTOR` (ks.h), inside `KSPIN_DESCRIPTOR_EX`.
pub mod kspin_descriptor {
    /// `ULONG DataRangesCount`.
    pub const DATA_RANGES_COUNT: u64 = 0x20;
    /// `const PKSDATARANGE* DataRanges`.
    pub const DATA_RANGES: u64 = 0x28;
    /// `KSPIN_DATAFLOW DataFlow`.
    pub const DATA_FLOW: u64 = 0x30;
    /// `KSPIN_COMMUNICATION Communication`.
    pub const COMMUNICATION: u64 = 0x34;
}

/// `KSPIN_DISPATCH` (ks.h).
pub mod kspin_dispatch {
    /// `PFNKSPINIRP Create`.
    pub const CREATE: u64 = 0x0;
    /// `PFNKSPINIRP Close`.
    pub const CLOSE: u64 = 0x8;
    /// `PFNKSPIN Process`.
    pub const PROCESS: u64 = 0x10;
    /// `PFNKSPINVOID Reset`.
    pub const RESET: u64 = 0x18;
    /// `PFNKSPINSETDATAFORMAT SetDataFormat`.
    pub const SET_DATA_FORMAT: u64 = 0x20;
    /// `PFNKSPINSETDEVICESTATE SetDeviceState`.
    pub const SET_DEVICE_STATE: u64 = 0x28;
}

/// `KSAUTOMATION_TABLE` (ks.h).
pub mod ksautomation_table {
    /// `ULONG PropertySetsCount`.
    pub const PROPERTY_SETS_COUNT: u64 = 0x0;
    /// `ULONG PropertyItemSize`.
    pub const PROPERTY_ITEM_SIZE: u64 = 0x4;
    /// `const KSPROPERTY_SET* PropertySets`.
    pub const PROPERTY_SETS: u64 = 0x8;
}

/// `KSPROPERTY_SET` (ks.h).
pub mod ksproperty_set {
    /// `sizeof(KSPROPERTY_SET)`.
    pub const SIZE: u64 = 40;
    /// `const GUID* Set`.
    pub const SET: u64 = 0x0;
    /// `ULONG PropertiesCount`.
    pub const PROPERTIES_COUNT: u64 = 0x8;
    /// `const KSPROPERTY_ITEM* PropertyItem`.
    pub const PROPERTY_ITEM: u64 = 0x10;
}

/// `KSPROPERTY_ITEM` (ks.h).
pub mod ksproperty_item {
    /// `sizeof(KSPROPERTY_ITEM)`.
    pub const SIZE: u64 = 72;
    /// `ULONG PropertyId`.
    pub const PROPERTY_ID: u64 = 0x0;
    /// `PFNKSHANDLER GetPropertyHandler` (first union member).
    pub const GET_PROPERTY_HANDLER: u64 = 0x8;
    /// `ULONG MinProperty`.
    pub const MIN_PROPERTY: u64 = 0x10;
    /// `ULONG MinData`.
    pub const MIN_DATA: u64 = 0x14;
    /// `PFNKSHANDLER SetPropertyHandler` (second union member).
    pub const SET_PROPERTY_HANDLER: u64 = 0x18;
}

/// `KSALLOCATOR_FRAMING_EX` (ks.h) with its first `KS_FRAMING_ITEM`.
pub mod ksallocator_framing_ex {
    /// `ULONG CountItems`.
    pub const COUNT_ITEMS: u64 = 0x0;
    /// `KS_FRAMING_ITEM FramingItem[1]`.
    pub const FRAMING_ITEM: u64 = 0x18;
    /// `ULONG Frames` of a `KS_FRAMING_ITEM`.
    pub const ITEM_FRAMES: u64 = 0x2C;
    /// `ULONG FileAlignment` of a `KS_FRAMING_ITEM`.
    pub const ITEM_FILE_ALIGNMENT: u64 = 0x30;
    /// `KS_FRAMING_RANGE_WEIGHTED FramingRange` of a `KS_FRAMING_ITEM`:
    /// `Range.MinFrameSize` (then `MaxFrameSize` at +4).
    pub const ITEM_FRAMING_RANGE: u64 = 0x44;
}

/// `KSPIN` (ks.h).
pub mod kspin {
    /// `sizeof(KSPIN)`.
    pub const SIZE: u64 = 136;
    /// `const KSPIN_DESCRIPTOR_EX* Descriptor`.
    pub const DESCRIPTOR: u64 = 0x0;
    /// `KSOBJECT_BAG Bag`.
    pub const BAG: u64 = 0x8;
    /// `PVOID Context`: the filter's context until the minidriver sets its own.
    pub const CONTEXT: u64 = 0x10;
    /// `ULONG Id`: the pin descriptor's index.
    pub const ID: u64 = 0x18;
    /// `KSPIN_COMMUNICATION Communication`.
    pub const COMMUNICATION: u64 = 0x1C;
    /// `BOOLEAN ConnectionIsExternal`.
    pub const CONNECTION_IS_EXTERNAL: u64 = 0x20;
    /// `PKSDATAFORMAT ConnectionFormat`.
    pub const CONNECTION_FORMAT: u64 = 0x60;
    /// `PKSMULTIPLE_ITEM AttributeList`.
    pub const ATTRIBUTE_LIST: u64 = 0x68;
    /// `ULONG StreamHeaderSize`: 0 = `sizeof(KSSTREAM_HEADER)`.
    pub const STREAM_HEADER_SIZE: u64 = 0x70;
    /// `KSPIN_DATAFLOW DataFlow`.
    pub const DATA_FLOW: u64 = 0x74;
    /// `KSSTATE DeviceState`.
    pub const DEVICE_STATE: u64 = 0x78;
    /// `KSRESET ResetState`.
    pub const RESET_STATE: u64 = 0x7C;
    /// `KSSTATE ClientState`.
    pub const CLIENT_STATE: u64 = 0x80;
}

/// `KSSTREAM_POINTER` (ks.h), with its two `KSSTREAM_POINTER_OFFSET`s.
pub mod ksstream_pointer {
    /// `sizeof(KSSTREAM_POINTER)`.
    pub const SIZE: u64 = 64;
    /// `PVOID Context`: the clone's context (`ContextSize` bytes), else NULL.
    pub const CONTEXT: u64 = 0x0;
    /// `PKSPIN Pin`.
    pub const PIN: u64 = 0x8;
    /// `PKSSTREAM_HEADER StreamHeader`.
    pub const STREAM_HEADER: u64 = 0x10;
    /// `PKSSTREAM_POINTER_OFFSET Offset`: `&OffsetIn` or `&OffsetOut`.
    pub const OFFSET: u64 = 0x18;
    /// `KSSTREAM_POINTER_OFFSET OffsetIn`.
    pub const OFFSET_IN: u64 = 0x20;
    /// `KSSTREAM_POINTER_OFFSET OffsetOut`.
    pub const OFFSET_OUT: u64 = 0x30;
    /// In a `KSSTREAM_POINTER_OFFSET`: `PUCHAR Data` / `PKSMAPPING Mappings`.
    pub const OFFSET_DATA: u64 = 0x0;
    /// In a `KSSTREAM_POINTER_OFFSET`: `ULONG Count` (bytes or mappings).
    pub const OFFSET_COUNT: u64 = 0x8;
    /// In a `KSSTREAM_POINTER_OFFSET`: `ULONG Remaining`.
    pub const OFFSET_REMAINING: u64 = 0xC;
}

/// `KSSTREAM_HEADER` (ks.h).
pub mod ksstream_header {
    /// `sizeof(KSSTREAM_HEADER)`.
    pub const SIZE: u64 = 56;
    /// `ULONG Size`: of the header and any extended header after it.
    pub const SIZE_FIELD: u64 = 0x0;
    /// `ULONG TypeSpecificFlags`.
    pub const TYPE_SPECIFIC_FLAGS: u64 = 0x4;
    /// `KSTIME PresentationTime`: `LONGLONG Time`, then `Numerator`, `Denominator`.
    pub const PRESENTATION_TIME: u64 = 0x8;
    /// `ULONG Numerator` of `PresentationTime`.
    pub const PRESENTATION_NUMERATOR: u64 = 0x10;
    /// `ULONG Denominator` of `PresentationTime`.
    pub const PRESENTATION_DENOMINATOR: u64 = 0x14;
    /// `LONGLONG Duration`, 100-ns units.
    pub const DURATION: u64 = 0x18;
    /// `ULONG FrameExtent`, bytes.
    pub const FRAME_EXTENT: u64 = 0x20;
    /// `ULONG DataUsed`, bytes.
    pub const DATA_USED: u64 = 0x24;
    /// `PVOID Data`.
    pub const DATA: u64 = 0x28;
    /// `ULONG OptionsFlags` (`KSSTREAM_HEADER_OPTIONSF_*`).
    pub const OPTIONS_FLAGS: u64 = 0x30;
}

/// `KS_FRAME_INFO` (ksmedia.h), the video extended header after a `KSSTREAM_HEADER`.
pub mod ks_frame_info {
    /// `sizeof(KS_FRAME_INFO)`.
    pub const SIZE: u64 = 72;
    /// `ULONG ExtendedHeaderSize`.
    pub const EXTENDED_HEADER_SIZE: u64 = 0x0;
    /// `DWORD dwFrameFlags`.
    pub const FRAME_FLAGS: u64 = 0x4;
    /// `LONGLONG PictureNumber`.
    pub const PICTURE_NUMBER: u64 = 0x8;
    /// `LONGLONG DropCount`.
    pub const DROP_COUNT: u64 = 0x10;
}

/// `KSMAPPING` (ks.h).
pub mod ksmapping {
    /// `sizeof(KSMAPPING)`.
    pub const SIZE: u64 = 16;
    /// `PHYSICAL_ADDRESS PhysicalAddress`: the logical address the device uses.
    pub const PHYSICAL_ADDRESS: u64 = 0x0;
    /// `ULONG ByteCount`.
    pub const BYTE_COUNT: u64 = 0x8;
    /// `ULONG Alignment`.
    pub const ALIGNMENT: u64 = 0xC;
}

/// `KSP_PIN` (ks.h): a pin property request.
pub mod ksp_pin {
    /// `sizeof(KSP_PIN)`.
    pub const SIZE: u64 = 32;
    /// `ULONG PinId`.
    pub const PIN_ID: u64 = 0x18;
}

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT_S` (ksmedia.h).
pub mod ksproperty_droppedframes_current_s {
    /// `sizeof(KSPROPERTY_DROPPEDFRAMES_CURRENT_S)`.
    pub const SIZE: u64 = 48;
    /// `LONGLONG PictureNumber`.
    pub const PICTURE_NUMBER: u64 = 0x18;
    /// `LONGLONG DropCount`.
    pub const DROP_COUNT: u64 = 0x20;
    /// `ULONG AverageFrameSize`.
    pub const AVERAGE_FRAME_SIZE: u64 = 0x28;
}

/// `KSDATAFORMAT` (ks.h), the first 64 bytes of every format and range.
pub mod ksdataformat {
    /// `sizeof(KSDATAFORMAT)`.
    pub const SIZE: u64 = 64;
    /// `ULONG FormatSize`.
    pub const FORMAT_SIZE: u64 = 0x0;
}
