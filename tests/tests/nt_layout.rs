//! The emulated kernel's structure layouts are those of the headers the
//! images are built against: each offset and size in `capdma_sim::nt::layout`
//! is compared with the layout assertion bindgen generated for wdk-sys in
//! the Windows build (`offset_of!(_DEVICE_OBJECT, Flags) - 48usize`), and
//! every constant of `capdma_sim::nt::layout::ks` with those bindgen
//! generated for the AVStream crate's own KS bindings (`ks_bindings.rs`).

mod support;

use std::collections::BTreeSet;

use capdma_sim::nt::layout::ks::{
    ks_frame_info, ksallocator_framing_ex, ksautomation_table, ksdataformat, ksdevice, ksdevice_descriptor, ksdevice_dispatch,
    ksfilter, ksfilter_descriptor, ksfilterfactory, ksmapping, ksp_pin, kspin, kspin_descriptor, kspin_descriptor_ex, kspin_dispatch,
    ksproperty_droppedframes_current_s, ksproperty_item, ksproperty_set, ksstream_header, ksstream_pointer,
};
use capdma_sim::nt::layout::{device_object, driver_extension, driver_object, unicode_string};

/// `(struct, field or "" for the size, our value)`.
const CHECKS: &[(&str, &str, u64)] = &[
    ("_DRIVER_OBJECT", "", driver_object::SIZE),
    ("_DRIVER_OBJECT", "Type", driver_object::TYPE),
    ("_DRIVER_OBJECT", "Size", driver_object::SIZE_FIELD),
    ("_DRIVER_OBJECT", "DeviceObject", driver_object::DEVICE_OBJECT),
    ("_DRIVER_OBJECT", "Flags", driver_object::FLAGS),
    ("_DRIVER_OBJECT", "DriverStart", driver_object::DRIVER_START),
    ("_DRIVER_OBJECT", "DriverSize", driver_object::DRIVER_SIZE),
    ("_DRIVER_OBJECT", "DriverExtension", driver_object::DRIVER_EXTENSION),
    ("_DRIVER_OBJECT", "DriverName", driver_object::DRIVER_NAME),
    ("_DRIVER_OBJECT", "DriverInit", driver_object::DRIVER_INIT),
    ("_DRIVER_OBJECT", "DriverUnload", driver_object::DRIVER_UNLOAD),
    ("_DRIVER_OBJECT", "MajorFunction", driver_object::MAJOR_FUNCTION),
    ("_DRIVER_EXTENSION", "", driver_extension::SIZE),
    ("_DRIVER_EXTENSION", "DriverObject", driver_extension::DRIVER_OBJECT),
    ("_DRIVER_EXTENSION", "AddDevice", driver_extension::ADD_DEVICE),
    ("_DEVICE_OBJECT", "", device_object::SIZE),
    ("_DEVICE_OBJECT", "Type", device_object::TYPE),
    ("_DEVICE_OBJECT", "Size", device_object::SIZE_FIELD),
    ("_DEVICE_OBJECT", "ReferenceCount", device_object::REFERENCE_COUNT),
    ("_DEVICE_OBJECT", "DriverObject", device_object::DRIVER_OBJECT),
    ("_DEVICE_OBJECT", "NextDevice", device_object::NEXT_DEVICE),
    ("_DEVICE_OBJECT", "AttachedDevice", device_object::ATTACHED_DEVICE),
    ("_DEVICE_OBJECT", "CurrentIrp", device_object::CURRENT_IRP),
    ("_DEVICE_OBJECT", "Flags", device_object::FLAGS),
    ("_DEVICE_OBJECT", "Characteristics", device_object::CHARACTERISTICS),
    ("_DEVICE_OBJECT", "DeviceExtension", device_object::DEVICE_EXTENSION),
    ("_DEVICE_OBJECT", "DeviceType", device_object::DEVICE_TYPE),
    ("_DEVICE_OBJECT", "StackSize", device_object::STACK_SIZE),
    ("_DEVICE_OBJECT", "AlignmentRequirement", device_object::ALIGNMENT_REQUIREMENT),
    ("_UNICODE_STRING", "", unicode_string::SIZE),
    ("_UNICODE_STRING", "Length", unicode_string::LENGTH),
    ("_UNICODE_STRING", "MaximumLength", unicode_string::MAXIMUM_LENGTH),
    ("_UNICODE_STRING", "Buffer", unicode_string::BUFFER),
];
#[test]
fn every_layout_constant_matches_the_headers() {
    let Some(types) = support::wdk_sys_types() else { return };
    let types: String = types.chars().filter(|c| !c.is_whitespace()).collect();
    let mut wrong = Vec::new();
    for (structure, field, ours) in CHECKS {
        match support::asserted(&types, structure, field) {
            Some(theirs) if theirs == *ours => {}
            other => wrong.push(format!("{structure}::{field}: ours {ours}, headers {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "layouts differ from the headers:\n{}", wrong.join("\n"));
}

#[test]
fn the_comparison_sees_a_wrong_offset() {
    let types = "[\"Offsetoffield:_X::F\",][::core::mem::offset_of!(_X,F)-48usize];";
    assert_eq!(support::asserted(types, "_X", "F"), Some(48));
    assert_eq!(support::asserted(types, "_X", "G"), None);
}

// ------------------------------------------------------------------ KS (ks.h, ksmedia.h)

/// One part of where a `layout::ks` constant lies in the KS bindings; the
/// constant is the sum of its parts.
#[derive(Clone, Copy, Debug)]
enum Term {
    /// `size_of::<S>()`.
    Size(&'static str),
    /// `offset_of!(S, F)`.
    Field(&'static str, &'static str),
    /// The offset in `outer` of the anonymous member `member` of type `ty`
    /// (an unnamed union or struct of the header): bindgen asserts no
    /// offset for it, only the layout inside `ty`. It is 0 when `outer` is
    /// a union or `member` its first field; otherwise `member` ends where
    /// the field declared after it starts (the member's size is a multiple
    /// of its alignment, checked to hold at the offset found).
    Anonymous { outer: &'static str, member: &'static str, ty: &'static str },
}

use Term::{Anonymous, Field, Size};

/// `(the constant as written, its value, where it lies)`.
type KsCheck = (&'static str, u64, &'static [Term]);

/// `check!(module::NAME => terms…)`.
macro_rules! check {
    ($module:ident :: $name:ident => $($term:expr),+ $(,)?) => {
        (concat!(stringify!($module), "::", stringify!($name)), $module::$name, &[$($term),+])
    };
}

/// `KSPROPERTY_ITEM`'s two anonymous unions (`GetPropertyHandler` / `GetSupported`, then the `Set` pair).
const PROPERTY_ITEM_GET: Term = Anonymous { outer: "KSPROPERTY_ITEM", member: "__bindgen_anon_1", ty: "KSPROPERTY_ITEM__bindgen_ty_1" };
const PROPERTY_ITEM_SET: Term = Anonymous { outer: "KSPROPERTY_ITEM", member: "__bindgen_anon_2", ty: "KSPROPERTY_ITEM__bindgen_ty_2" };
/// `KSSTREAM_POINTER_OFFSET`'s anonymous union (`Data` / `Mappings`).
const OFFSET_UNION: Term =
    Anonymous { outer: "_KSSTREAM_POINTER_OFFSET", member: "__bindgen_anon_1", ty: "_KSSTREAM_POINTER_OFFSET__bindgen_ty_1" };
/// `KSDATAFORMAT` is a union of its fields' struct and `LONGLONG Alignment`.
const DATAFORMAT_STRUCT: Term = Anonymous { outer: "KSDATAFORMAT", member: "__bindgen_anon_1", ty: "KSDATAFORMAT__bindgen_ty_1" };

const KS_CHECKS: &[KsCheck] = &[
    check!(ksdevice::SIZE => Size("_KSDEVICE")),
    check!(ksdevice::DESCRIPTOR => Field("_KSDEVICE", "Descriptor")),
    check!(ksdevice::BAG => Field("_KSDEVICE", "Bag")),
    check!(ksdevice::CONTEXT => Field("_KSDEVICE", "Context")),
    check!(ksdevice::FUNCTIONAL_DEVICE_OBJECT => Field("_KSDEVICE", "FunctionalDeviceObject")),
    check!(ksdevice::PHYSICAL_DEVICE_OBJECT => Field("_KSDEVICE", "PhysicalDeviceObject")),
    check!(ksdevice::NEXT_DEVICE_OBJECT => Field("_KSDEVICE", "NextDeviceObject")),
    check!(ksdevice::STARTED => Field("_KSDEVICE", "Started")),
    check!(ksdevice::SYSTEM_POWER_STATE => Field("_KSDEVICE", "SystemPowerState")),
    check!(ksdevice::DEVICE_POWER_STATE => Field("_KSDEVICE", "DevicePowerState")),
    check!(ksdevice_descriptor::DISPATCH => Field("_KSDEVICE_DESCRIPTOR", "Dispatch")),
    check!(ksdevice_descriptor::FILTER_DESCRIPTORS_COUNT => Field("_KSDEVICE_DESCRIPTOR", "FilterDescriptorsCount")),
    check!(ksdevice_descriptor::FILTER_DESCRIPTORS => Field("_KSDEVICE_DESCRIPTOR", "FilterDescriptors")),
    check!(ksdevice_descriptor::VERSION => Field("_KSDEVICE_DESCRIPTOR", "Version")),
    check!(ksdevice_dispatch::ADD => Field("_KSDEVICE_DISPATCH", "Add")),
    check!(ksdevice_dispatch::START => Field("_KSDEVICE_DISPATCH", "Start")),
    check!(ksdevice_dispatch::POST_START => Field("_KSDEVICE_DISPATCH", "PostStart")),
    check!(ksdevice_dispatch::QUERY_STOP => Field("_KSDEVICE_DISPATCH", "QueryStop")),
    check!(ksdevice_dispatch::CANCEL_STOP => Field("_KSDEVICE_DISPATCH", "CancelStop")),
    check!(ksdevice_dispatch::STOP => Field("_KSDEVICE_DISPATCH", "Stop")),
    check!(ksdevice_dispatch::QUERY_REMOVE => Field("_KSDEVICE_DISPATCH", "QueryRemove")),
    check!(ksdevice_dispatch::CANCEL_REMOVE => Field("_KSDEVICE_DISPATCH", "CancelRemove")),
    check!(ksdevice_dispatch::REMOVE => Field("_KSDEVICE_DISPATCH", "Remove")),
    check!(ksdevice_dispatch::QUERY_CAPABILITIES => Field("_KSDEVICE_DISPATCH", "QueryCapabilities")),
    check!(ksdevice_dispatch::SURPRISE_REMOVAL => Field("_KSDEVICE_DISPATCH", "SurpriseRemoval")),
    check!(ksfilterfactory::SIZE => Size("_KSFILTERFACTORY")),
    check!(ksfilterfactory::FILTER_DESCRIPTOR => Field("_KSFILTERFACTORY", "FilterDescriptor")),
    check!(ksfilterfactory::BAG => Field("_KSFILTERFACTORY", "Bag")),
    check!(ksfilterfactory::CONTEXT => Field("_KSFILTERFACTORY", "Context")),
    check!(ksfilter::SIZE => Size("_KSFILTER")),
    check!(ksfilter::DESCRIPTOR => Field("_KSFILTER", "Descriptor")),
    check!(ksfilter::BAG => Field("_KSFILTER", "Bag")),
    check!(ksfilter::CONTEXT => Field("_KSFILTER", "Context")),
    check!(ksfilter_descriptor::VERSION => Field("_KSFILTER_DESCRIPTOR", "Version")),
    check!(ksfilter_descriptor::PIN_DESCRIPTORS_COUNT => Field("_KSFILTER_DESCRIPTOR", "PinDescriptorsCount")),
    check!(ksfilter_descriptor::PIN_DESCRIPTOR_SIZE => Field("_KSFILTER_DESCRIPTOR", "PinDescriptorSize")),
    check!(ksfilter_descriptor::PIN_DESCRIPTORS => Field("_KSFILTER_DESCRIPTOR", "PinDescriptors")),
    check!(ksfilter_descriptor::CATEGORIES_COUNT => Field("_KSFILTER_DESCRIPTOR", "CategoriesCount")),
    check!(ksfilter_descriptor::CATEGORIES => Field("_KSFILTER_DESCRIPTOR", "Categories")),
    check!(kspin_descriptor_ex::SIZE => Size("_KSPIN_DESCRIPTOR_EX")),
    check!(kspin_descriptor_ex::DISPATCH => Field("_KSPIN_DESCRIPTOR_EX", "Dispatch")),
    check!(kspin_descriptor_ex::AUTOMATION_TABLE => Field("_KSPIN_DESCRIPTOR_EX", "AutomationTable")),
    check!(kspin_descriptor_ex::PIN_DESCRIPTOR => Field("_KSPIN_DESCRIPTOR_EX", "PinDescriptor")),
    check!(kspin_descriptor_ex::FLAGS => Field("_KSPIN_DESCRIPTOR_EX", "Flags")),
    check!(kspin_descriptor_ex::INSTANCES_POSSIBLE => Field("_KSPIN_DESCRIPTOR_EX", "InstancesPossible")),
    check!(kspin_descriptor_ex::INSTANCES_NECESSARY => Field("_KSPIN_DESCRIPTOR_EX", "InstancesNecessary")),
    check!(kspin_descriptor_ex::ALLOCATOR_FRAMING => Field("_KSPIN_DESCRIPTOR_EX", "AllocatorFraming")),
    check!(kspin_descriptor_ex::INTERSECT_HANDLER => Field("_KSPIN_DESCRIPTOR_EX", "IntersectHandler")),
    // Offsets in the KSPIN_DESCRIPTOR (at kspin_descriptor_ex::PIN_DESCRIPTOR).
    check!(kspin_descriptor::DATA_RANGES_COUNT => Field("KSPIN_DESCRIPTOR", "DataRangesCount")),
    check!(kspin_descriptor::DATA_RANGES => Field("KSPIN_DESCRIPTOR", "DataRanges")),
    check!(kspin_descriptor::DATA_FLOW => Field("KSPIN_DESCRIPTOR", "DataFlow")),
    check!(kspin_descriptor::COMMUNICATION => Field("KSPIN_DESCRIPTOR", "Communication")),
    check!(kspin_dispatch::CREATE => Field("_KSPIN_DISPATCH", "Create")),
    check!(kspin_dispatch::CLOSE => Field("_KSPIN_DISPATCH", "Close")),
    check!(kspin_dispatch::PROCESS => Field("_KSPIN_DISPATCH", "Process")),
    check!(kspin_dispatch::RESET => Field("_KSPIN_DISPATCH", "Reset")),
    check!(kspin_dispatch::SET_DATA_FORMAT => Field("_KSPIN_DISPATCH", "SetDataFormat")),
    check!(kspin_dispatch::SET_DEVICE_STATE => Field("_KSPIN_DISPATCH", "SetDeviceState")),
    check!(ksautomation_table::PROPERTY_SETS_COUNT => Field("KSAUTOMATION_TABLE_", "PropertySetsCount")),
    check!(ksautomation_table::PROPERTY_ITEM_SIZE => Field("KSAUTOMATION_TABLE_", "PropertyItemSize")),
    check!(ksautomation_table::PROPERTY_SETS => Field("KSAUTOMATION_TABLE_", "PropertySets")),
    check!(ksproperty_set::SIZE => Size("KSPROPERTY_SET")),
    check!(ksproperty_set::SET => Field("KSPROPERTY_SET", "Set")),
    check!(ksproperty_set::PROPERTIES_COUNT => Field("KSPROPERTY_SET", "PropertiesCount")),
    check!(ksproperty_set::PROPERTY_ITEM => Field("KSPROPERTY_SET", "PropertyItem")),
    check!(ksproperty_item::SIZE => Size("KSPROPERTY_ITEM")),
    check!(ksproperty_item::PROPERTY_ID => Field("KSPROPERTY_ITEM", "PropertyId")),
    check!(ksproperty_item::GET_PROPERTY_HANDLER => PROPERTY_ITEM_GET, Field("KSPROPERTY_ITEM__bindgen_ty_1", "GetPropertyHandler")),
    check!(ksproperty_item::MIN_PROPERTY => Field("KSPROPERTY_ITEM", "MinProperty")),
    check!(ksproperty_item::MIN_DATA => Field("KSPROPERTY_ITEM", "MinData")),
    check!(ksproperty_item::SET_PROPERTY_HANDLER => PROPERTY_ITEM_SET, Field("KSPROPERTY_ITEM__bindgen_ty_2", "SetPropertyHandler")),
    check!(ksallocator_framing_ex::COUNT_ITEMS => Field("KSALLOCATOR_FRAMING_EX", "CountItems")),
    check!(ksallocator_framing_ex::FRAMING_ITEM => Field("KSALLOCATOR_FRAMING_EX", "FramingItem")),
    // Offsets in a KS_FRAMING_ITEM (the first at ksallocator_framing_ex::FRAMING_ITEM).
    check!(ksallocator_framing_ex::ITEM_FRAMES => Field("KS_FRAMING_ITEM", "Frames")),
    check!(ksallocator_framing_ex::ITEM_FILE_ALIGNMENT => Field("KS_FRAMING_ITEM", "FileAlignment")),
    check!(ksallocator_framing_ex::ITEM_FRAMING_RANGE =>
        Field("KS_FRAMING_ITEM", "FramingRange"),
        Field("KS_FRAMING_RANGE_WEIGHTED", "Range"),
        Field("KS_FRAMING_RANGE", "MinFrameSize"),
    ),
    check!(kspin::SIZE => Size("_KSPIN")),
    check!(kspin::DESCRIPTOR => Field("_KSPIN", "Descriptor")),
    check!(kspin::BAG => Field("_KSPIN", "Bag")),
    check!(kspin::CONTEXT => Field("_KSPIN", "Context")),
    check!(kspin::ID => Field("_KSPIN", "Id")),
    check!(kspin::COMMUNICATION => Field("_KSPIN", "Communication")),
    check!(kspin::CONNECTION_IS_EXTERNAL => Field("_KSPIN", "ConnectionIsExternal")),
    check!(kspin::CONNECTION_FORMAT => Field("_KSPIN", "ConnectionFormat")),
    check!(kspin::ATTRIBUTE_LIST => Field("_KSPIN", "AttributeList")),
    check!(kspin::STREAM_HEADER_SIZE => Field("_KSPIN", "StreamHeaderSize")),
    check!(kspin::DATA_FLOW => Field("_KSPIN", "DataFlow")),
    check!(kspin::DEVICE_STATE => Field("_KSPIN", "DeviceState")),
    check!(kspin::RESET_STATE => Field("_KSPIN", "ResetState")),
    check!(kspin::CLIENT_STATE => Field("_KSPIN", "ClientState")),
    check!(ksstream_pointer::SIZE => Size("_KSSTREAM_POINTER")),
    check!(ksstream_pointer::CONTEXT => Field("_KSSTREAM_POINTER", "Context")),
    check!(ksstream_pointer::PIN => Field("_KSSTREAM_POINTER", "Pin")),
    check!(ksstream_pointer::STREAM_HEADER => Field("_KSSTREAM_POINTER", "StreamHeader")),
    check!(ksstream_pointer::OFFSET => Field("_KSSTREAM_POINTER", "Offset")),
    check!(ksstream_pointer::OFFSET_IN => Field("_KSSTREAM_POINTER", "OffsetIn")),
    check!(ksstream_pointer::OFFSET_OUT => Field("_KSSTREAM_POINTER", "OffsetOut")),
    // Offsets in a KSSTREAM_POINTER_OFFSET (OffsetIn, OffsetOut); Data and Mappings share the union.
    check!(ksstream_pointer::OFFSET_DATA => OFFSET_UNION, Field("_KSSTREAM_POINTER_OFFSET__bindgen_ty_1", "Data")),
    check!(ksstream_pointer::OFFSET_DATA => OFFSET_UNION, Field("_KSSTREAM_POINTER_OFFSET__bindgen_ty_1", "Mappings")),
    check!(ksstream_pointer::OFFSET_COUNT => Field("_KSSTREAM_POINTER_OFFSET", "Count")),
    check!(ksstream_pointer::OFFSET_REMAINING => Field("_KSSTREAM_POINTER_OFFSET", "Remaining")),
    check!(ksstream_header::SIZE => Size("KSSTREAM_HEADER")),
    check!(ksstream_header::SIZE_FIELD => Field("KSSTREAM_HEADER", "Size")),
    check!(ksstream_header::TYPE_SPECIFIC_FLAGS => Field("KSSTREAM_HEADER", "TypeSpecificFlags")),
    check!(ksstream_header::PRESENTATION_TIME => Field("KSSTREAM_HEADER", "PresentationTime")),
    check!(ksstream_header::PRESENTATION_NUMERATOR => Field("KSSTREAM_HEADER", "PresentationTime"), Field("KSTIME", "Numerator")),
    check!(ksstream_header::PRESENTATION_DENOMINATOR => Field("KSSTREAM_HEADER", "PresentationTime"), Field("KSTIME", "Denominator")),
    check!(ksstream_header::DURATION => Field("KSSTREAM_HEADER", "Duration")),
    check!(ksstream_header::FRAME_EXTENT => Field("KSSTREAM_HEADER", "FrameExtent")),
    check!(ksstream_header::DATA_USED => Field("KSSTREAM_HEADER", "DataUsed")),
    check!(ksstream_header::DATA => Field("KSSTREAM_HEADER", "Data")),
    check!(ksstream_header::OPTIONS_FLAGS => Field("KSSTREAM_HEADER", "OptionsFlags")),
    check!(ks_frame_info::SIZE => Size("tagKS_FRAME_INFO")),
    check!(ks_frame_info::EXTENDED_HEADER_SIZE => Field("tagKS_FRAME_INFO", "ExtendedHeaderSize")),
    check!(ks_frame_info::FRAME_FLAGS => Field("tagKS_FRAME_INFO", "dwFrameFlags")),
    check!(ks_frame_info::PICTURE_NUMBER => Field("tagKS_FRAME_INFO", "PictureNumber")),
    check!(ks_frame_info::DROP_COUNT => Field("tagKS_FRAME_INFO", "DropCount")),
    check!(ksmapping::SIZE => Size("_KSMAPPING")),
    check!(ksmapping::PHYSICAL_ADDRESS => Field("_KSMAPPING", "PhysicalAddress")),
    check!(ksmapping::BYTE_COUNT => Field("_KSMAPPING", "ByteCount")),
    check!(ksmapping::ALIGNMENT => Field("_KSMAPPING", "Alignment")),
    check!(ksp_pin::SIZE => Size("KSP_PIN")),
    check!(ksp_pin::PIN_ID => Field("KSP_PIN", "PinId")),
    check!(ksproperty_droppedframes_current_s::SIZE => Size("KSPROPERTY_DROPPEDFRAMES_CURRENT_S")),
    check!(ksproperty_droppedframes_current_s::PICTURE_NUMBER => Field("KSPROPERTY_DROPPEDFRAMES_CURRENT_S", "PictureNumber")),
    check!(ksproperty_droppedframes_current_s::DROP_COUNT => Field("KSPROPERTY_DROPPEDFRAMES_CURRENT_S", "DropCount")),
    check!(ksproperty_droppedframes_current_s::AVERAGE_FRAME_SIZE => Field("KSPROPERTY_DROPPEDFRAMES_CURRENT_S", "AverageFrameSize")),
    check!(ksdataformat::SIZE => Size("KSDATAFORMAT")),
    check!(ksdataformat::FORMAT_SIZE => DATAFORMAT_STRUCT, Field("KSDATAFORMAT__bindgen_ty_1", "FormatSize")),
];

/// `align_of::<ty>()` as bindgen asserted it in `types` (whitespace removed).
fn asserted_alignment(types: &str, ty: &str) -> Option<u64> {
    let needle = format!("align_of::<{ty}>()-");
    let at = types.find(&needle)? + needle.len();
    types[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// The value of `term` in `types` (whitespace removed), or why there is none.
fn resolve(types: &str, term: Term) -> Result<u64, String> {
    match term {
        Size(s) => support::asserted(types, s, "").ok_or_else(|| format!("no size_of::<{s}> assertion")),
        Field(s, f) => support::asserted(types, s, f).ok_or_else(|| format!("no offset_of!({s}, {f}) assertion")),
        Anonymous { outer, member, ty } => {
            let (union, fields) = support::declared(types, outer).ok_or_else(|| format!("{outer} is not declared"))?;
            let at = fields.iter().position(|(name, _)| name == member).ok_or_else(|| format!("{outer} has no {member}"))?;
            if fields[at].1 != ty {
                return Err(format!("{outer}::{member} is a {}, not a {ty}", fields[at].1));
            }
            if union || at == 0 {
                return Ok(0);
            }
            let (next, _) = fields.get(at + 1).ok_or_else(|| format!("{outer}::{member} is its last field"))?;
            let end = support::asserted(types, outer, next).ok_or_else(|| format!("no offset_of!({outer}, {next}) assertion"))?;
            let offset = end.checked_sub(resolve(types, Size(ty))?).ok_or_else(|| format!("{ty} is larger than {outer}::{next}'s offset"))?;
            let align = asserted_alignment(types, ty).ok_or_else(|| format!("no align_of::<{ty}> assertion"))?;
            if offset % align == 0 {
                Ok(offset)
            } else {
                Err(format!("{outer}::{member} would be at {offset}, not a multiple of its alignment {align}: padding before {next}"))
            }
        }
    }
}

/// The sum of `terms` in `types`.
fn locate(types: &str, terms: &[Term]) -> Result<u64, String> {
    terms.iter().map(|t| resolve(types, *t)).sum()
}

#[test]
fn every_ks_layout_constant_matches_the_avstream_crates_ks_bindings() {
    let Some(bindings) = support::ks_bindings() else { return };
    let types: String = bindings.chars().filter(|c| !c.is_whitespace()).collect();
    let mut wrong = Vec::new();
    for (name, ours, terms) in KS_CHECKS {
        match locate(&types, terms) {
            Ok(theirs) if theirs == *ours => {}
            other => wrong.push(format!("{name}: ours {ours:#x}, bindings {:?} ({terms:?})", other.map(|v| format!("{v:#x}")))),
        }
    }
    assert!(wrong.is_empty(), "layout::ks differs from the KS bindings:\n{}", wrong.join("\n"));
}

#[test]
fn every_constant_of_layout_ks_is_checked() {
    let path = support::workspace().join("sim/src/nt/layout/ks.rs");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut module = String::new();
    let mut declared = BTreeSet::new();
    for line in source.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pub mod ") {
            module = rest.trim_end_matches(" {").to_owned();
        } else if let Some((name, _)) = line.strip_prefix("pub const ").and_then(|rest| rest.split_once(':')) {
            declared.insert(format!("{module}::{name}"));
        }
    }
    assert!(declared.len() > 100, "the scan found the constants: {declared:?}");
    let checked: BTreeSet<String> = KS_CHECKS.iter().map(|(name, ..)| (*name).to_owned()).collect();
    let unchecked: Vec<&String> = declared.difference(&checked).collect();
    assert!(unchecked.is_empty(), "constants of layout::ks nobody compares with the bindings: {unchecked:?}");
}

#[test]
fn an_anonymous_member_is_placed_by_the_field_after_it() {
    let types = concat!(
        "pubstructS{pubA:ULONG,pub__bindgen_anon_1:S__bindgen_ty_1,pubB:ULONG,}",
        "pubunionS__bindgen_ty_1{pubP:PVOID,pubQ:BOOLEAN,}",
        "pubunionU{pub__bindgen_anon_1:U__bindgen_ty_1,pubZ:LONGLONG,}",
        "[::core::mem::size_of::<S__bindgen_ty_1>()-8usize];[::core::mem::align_of::<S__bindgen_ty_1>()-8usize];",
        "[::core::mem::offset_of!(S,B)-16usize];[::core::mem::offset_of!(S__bindgen_ty_1,Q)-0usize];",
    );
    let member = Anonymous { outer: "S", member: "__bindgen_anon_1", ty: "S__bindgen_ty_1" };
    assert_eq!(locate(types, &[member, Field("S__bindgen_ty_1", "Q")]), Ok(8));
    let in_union = Anonymous { outer: "U", member: "__bindgen_anon_1", ty: "U__bindgen_ty_1" };
    assert_eq!(resolve(types, in_union), Ok(0));
    let wrong_type = Anonymous { outer: "S", member: "__bindgen_anon_1", ty: "Other" };
    assert!(resolve(types, wrong_type).is_err());
    assert!(resolve(types, Anonymous { outer: "S", member: "__bindgen_anon_2", ty: "S__bindgen_ty_1" }).is_err());
}
