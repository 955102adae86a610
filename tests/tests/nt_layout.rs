//! The emulated kernel's structure layouts are those of the headers the
//! images are built against: each offset and size in `capdma_sim::nt::layout`
//! is compared with the layout assertion bindgen generated for wdk-sys in
//! the Windows build (`offset_of!(_DEVICE_OBJECT, Flags) - 48usize`).

mod support;

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
