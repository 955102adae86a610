//! The I/O layouts of `sim/src/nt/layout/irp.rs` against the layout
//! assertions bindgen generated for wdk-sys in the Windows build (its
//! `types.rs`). Skipped, saying so, when the Windows build has not run
//! (outside CI).

use std::path::PathBuf;

use capdma_sim::nt::layout::irp::{
    bus_interface_standard, cm, device_capabilities, device_relations, devobj_extension, interface, io_status_block,
    irp, kevent, key_value, pnp_bus_information, remove_lock, stack,
};

/// The whitespace-free text of wdk-sys's `types.rs`, when the Windows build has run.
fn types() -> Option<String> {
    let build = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/windows/cargo/x86_64-pc-windows-msvc/release/build");
    let found = std::fs::read_dir(&build).ok().and_then(|dirs| {
        dirs.filter_map(Result::ok)
            .map(|d| d.path().join("out/types.rs"))
            .find(|p| p.file_name().is_some() && p.exists() && p.to_string_lossy().contains("wdk-sys-"))
    });
    let Some(path) = found else {
        assert!(std::env::var_os("CI").is_none(), "CI must have the Windows build's types.rs under {}", build.display());
        eprintln!("skipped: no wdk-sys types.rs under {} (cargo xtask windows)", build.display());
        return None;
    };
    let text = std::fs::read_to_string(path).expect("types.rs");
    Some(text.chars().filter(|c| !c.is_whitespace()).collect())
}

/// The number after `marker` up to `usize]`.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let rest = &text[at..];
    let minus = rest.find(")-")? + 2;
    let end = rest[minus..].find("usize")?;
    rest[minus..minus + end].parse().ok()
}

/// `number_after` for `["name"][` or (when rustfmt split it) `["name",][`.
fn assertion(text: &str, name: &str) -> Option<u64> {
    number_after(text, &format!("\"{name}\"][")).or_else(|| number_after(text, &format!("\"{name}\",][")))
}

fn size(text: &str, ty: &str) -> u64 {
    assertion(text, &format!("Sizeof{ty}")).unwrap_or_else(|| panic!("no size of {ty}"))
}

/// The offset of `field` in `ty`, or in the first of `ty`'s anonymous
/// members (`ty__bindgen_ty_…`) that has it.
fn offset(text: &str, ty: &str, field: &str) -> u64 {
    if let Some(n) = assertion(text, &format!("Offsetoffield:{ty}::{field}")) {
        return n;
    }
    for tail in [format!("::{field}\"]["), format!("::{field}\",][")] {
        let mut from = 0;
        while let Some(i) = text[from..].find(&tail) {
            let at = from + i;
            let start = text[..at].rfind("\"Offsetoffield:").map_or(at, |s| s + "\"Offsetoffield:".len());
            if text[start..at].starts_with(&format!("{ty}__bindgen_ty_")) {
                return number_after(&text[at..], &tail).unwrap_or_else(|| panic!("{ty}…::{field}"));
            }
            from = at + tail.len();
        }
    }
    panic!("no offset of {ty}::{field}")
}

#[test]
fn irp_and_stack_location_match_the_headers() {
    let Some(t) = types() else { return };
    assert_eq!(irp::SIZE, size(&t, "_IRP"));
    for (ours, field) in [
        (irp::TYPE, "Type"),
        (irp::SIZE_FIELD, "Size"),
        (irp::MDL_ADDRESS, "MdlAddress"),
        (irp::FLAGS, "Flags"),
        (irp::SYSTEM_BUFFER, "AssociatedIrp"),
        (irp::STATUS, "IoStatus"),
        (irp::REQUESTOR_MODE, "RequestorMode"),
        (irp::PENDING_RETURNED, "PendingReturned"),
        (irp::STACK_COUNT, "StackCount"),
        (irp::CURRENT_LOCATION, "CurrentLocation"),
        (irp::CANCEL, "Cancel"),
        (irp::USER_IOSB, "UserIosb"),
        (irp::USER_EVENT, "UserEvent"),
        (irp::CANCEL_ROUTINE, "CancelRoutine"),
        (irp::USER_BUFFER, "UserBuffer"),
    ] {
        assert_eq!(ours, offset(&t, "_IRP", field), "_IRP::{field}");
    }
    assert_eq!(irp::INFORMATION, irp::STATUS + offset(&t, "_IO_STATUS_BLOCK", "Information"));
    let tail = offset(&t, "_IRP", "Tail");
    assert_eq!(irp::THREAD, tail + offset(&t, "_IRP__bindgen_ty_3__bindgen_ty_1", "Thread"));
    // The ListEntry/CurrentStackLocation struct sits right before OriginalFileObject.
    let original = offset(&t, "_IRP__bindgen_ty_3__bindgen_ty_1", "OriginalFileObject");
    assert_eq!(irp::CURRENT_STACK_LOCATION, tail + original - 8);
    assert_eq!(stack::SIZE, size(&t, "_IO_STACK_LOCATION"));
    for (ours, field) in [
        (stack::MAJOR_FUNCTION, "MajorFunction"),
        (stack::MINOR_FUNCTION, "MinorFunction"),
        (stack::FLAGS, "Flags"),
        (stack::CONTROL, "Control"),
        (stack::PARAMETERS, "Parameters"),
        (stack::DEVICE_OBJECT, "DeviceObject"),
        (stack::FILE_OBJECT, "FileObject"),
        (stack::COMPLETION_ROUTINE, "CompletionRoutine"),
        (stack::CONTEXT, "Context"),
    ] {
        assert_eq!(ours, offset(&t, "_IO_STACK_LOCATION", field), "_IO_STACK_LOCATION::{field}");
    }
    // QueryInterface.Size is the USHORT right before Version.
    assert_eq!(stack::QUERY_INTERFACE_SIZE + 2, stack::QUERY_INTERFACE_VERSION);
    let p = stack::PARAMETERS;
    let params = "_IO_STACK_LOCATION__bindgen_ty_1";
    for (ours, field) in [
        (stack::QUERY_INTERFACE_TYPE, "InterfaceType"),
        (stack::QUERY_INTERFACE_VERSION, "Version"),
        (stack::QUERY_INTERFACE_INTERFACE, "Interface"),
        (stack::QUERY_INTERFACE_SPECIFIC_DATA, "InterfaceSpecificData"),
        (stack::CAPABILITIES, "Capabilities"),
        (stack::QUERY_ID_TYPE, "IdType"),
        (stack::DEVICE_TEXT_TYPE, "DeviceTextType"),
        (stack::DEVICE_TEXT_LOCALE, "LocaleId"),
        (stack::ALLOCATED_RESOURCES, "AllocatedResources"),
        (stack::ALLOCATED_RESOURCES_TRANSLATED, "AllocatedResourcesTranslated"),
        (stack::POWER_TYPE, "Type"),
        (stack::POWER_STATE, "State"),
        (stack::POWER_SHUTDOWN_TYPE, "ShutdownType"),
    ] {
        let theirs = if matches!(field, "Type" | "State" | "ShutdownType") {
            // The Power member: the one with ShutdownType.
            let shutdown = offset(&t, params, "ShutdownType");
            shutdown - 24 + [("Type", 8), ("State", 16), ("ShutdownType", 24)].iter().find(|(f, _)| *f == field).map_or(0, |(_, o)| *o)
        } else {
            offset(&t, params, field)
        };
        assert_eq!(ours, p + theirs, "Parameters…::{field}");
    }
}

#[test]
fn the_pnp_and_synchronization_structures_match_the_headers() {
    let Some(t) = types() else { return };
    assert_eq!(io_status_block::SIZE, size(&t, "_IO_STATUS_BLOCK"));
    assert_eq!(kevent::SIZE, size(&t, "_KEVENT"));
    assert_eq!(kevent::SIGNAL_STATE, offset(&t, "_DISPATCHER_HEADER", "SignalState"));
    assert_eq!(kevent::WAIT_LIST_HEAD, offset(&t, "_DISPATCHER_HEADER", "WaitListHead"));
    assert_eq!(remove_lock::SIZE, size(&t, "_IO_REMOVE_LOCK"));
    assert_eq!(remove_lock::IO_COUNT, offset(&t, "_IO_REMOVE_LOCK_COMMON_BLOCK", "IoCount"));
    assert_eq!(remove_lock::REMOVE_EVENT, offset(&t, "_IO_REMOVE_LOCK_COMMON_BLOCK", "RemoveEvent"));
    assert_eq!(devobj_extension::SIZE, size(&t, "_DEVOBJ_EXTENSION"));
    assert_eq!(devobj_extension::DEVICE_OBJECT, offset(&t, "_DEVOBJ_EXTENSION", "DeviceObject"));
    assert_eq!(device_capabilities::SIZE, size(&t, "_DEVICE_CAPABILITIES"));
    for (ours, field) in [
        (device_capabilities::VERSION, "Version"),
        (device_capabilities::ADDRESS, "Address"),
        (device_capabilities::UI_NUMBER, "UINumber"),
        (device_capabilities::DEVICE_STATE, "DeviceState"),
        (device_capabilities::SYSTEM_WAKE, "SystemWake"),
        (device_capabilities::DEVICE_WAKE, "DeviceWake"),
    ] {
        assert_eq!(ours, offset(&t, "_DEVICE_CAPABILITIES", field), "_DEVICE_CAPABILITIES::{field}");
    }
    assert_eq!(interface::SIZE, size(&t, "_INTERFACE"));
    assert_eq!(interface::INTERFACE_DEREFERENCE, offset(&t, "_INTERFACE", "InterfaceDereference"));
    assert_eq!(bus_interface_standard::SIZE, size(&t, "_BUS_INTERFACE_STANDARD"));
    assert_eq!(bus_interface_standard::GET_DMA_ADAPTER, offset(&t, "_BUS_INTERFACE_STANDARD", "GetDmaAdapter"));
    assert_eq!(bus_interface_standard::GET_BUS_DATA, offset(&t, "_BUS_INTERFACE_STANDARD", "GetBusData"));
    assert_eq!(device_relations::OBJECTS, offset(&t, "_DEVICE_RELATIONS", "Objects"));
    assert_eq!(pnp_bus_information::SIZE, size(&t, "_PNP_BUS_INFORMATION"));
    assert_eq!(pnp_bus_information::BUS_NUMBER, offset(&t, "_PNP_BUS_INFORMATION", "BusNumber"));
    assert_eq!(cm::LIST_FIRST, offset(&t, "_CM_RESOURCE_LIST", "List"));
    assert_eq!(cm::FULL_PARTIAL_LIST, offset(&t, "_CM_FULL_RESOURCE_DESCRIPTOR", "PartialResourceList"));
    assert_eq!(cm::PARTIAL_DESCRIPTORS, offset(&t, "_CM_PARTIAL_RESOURCE_LIST", "PartialDescriptors"));
    assert_eq!(cm::DESCRIPTOR_SIZE, size(&t, "_CM_PARTIAL_RESOURCE_DESCRIPTOR"));
    assert_eq!(cm::DESCRIPTOR_U, offset(&t, "_CM_PARTIAL_RESOURCE_DESCRIPTOR", "u"));
    assert_eq!(key_value::DATA, offset(&t, "_KEY_VALUE_PARTIAL_INFORMATION", "Data"));
    assert_eq!(key_value::DATA_LENGTH, offset(&t, "_KEY_VALUE_PARTIAL_INFORMATION", "DataLength"));
}
