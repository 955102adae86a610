//! Keeps `include/capdma_interface.h` in step with the Rust contract: every
//! size/offset the header asserts must equal the Rust layout, every Rust
//! layout fact below must be asserted by the header, and the header must
//! compile (so its own `_Static_assert`s hold for C).
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use capdma_interface::descriptor::{CompletionRecord, SgDescriptor};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, Completion, DmaConfig, SgElement, SlotRing, MAX_RING_SLOTS,
};

const HEADER: &str = include_str!("../include/capdma_interface.h");

/// (C type, C field or "" for the size) -> the Rust value.
fn rust_layout() -> BTreeMap<(&'static str, &'static str), usize> {
    BTreeMap::from([
        (("CAPDMA_BUS_INTERFACE", ""), size_of::<CapdmaBusInterface>()),
        (("CAPDMA_BUS_INTERFACE", "GetDmaConfig"), offset_of!(CapdmaBusInterface, get_dma_config)),
        (("CAPDMA_BUS_INTERFACE", "ProgramFrame"), offset_of!(CapdmaBusInterface, program_frame)),
        (("CAPDMA_BUS_INTERFACE", "RegisterCompletion"), offset_of!(CapdmaBusInterface, register_completion)),
        (("CAPDMA_BUS_INTERFACE", "ProgramFramePart"), offset_of!(CapdmaBusInterface, program_frame_part)),
        (("CAPDMA_DMA_CONFIG", ""), size_of::<DmaConfig>()),
        (("CAPDMA_DMA_CONFIG", "SlotCount"), offset_of!(DmaConfig, slot_count)),
        (("CAPDMA_DMA_CONFIG", "MaxFrameBytes"), offset_of!(DmaConfig, max_frame_bytes)),
        (("CAPDMA_SG_ELEMENT", ""), size_of::<SgElement>()),
        (("CAPDMA_SG_ELEMENT", "ByteCount"), offset_of!(SgElement, byte_count)),
        (("CAPDMA_SLOT_RING", ""), size_of::<SlotRing>()),
        (("CAPDMA_SLOT_RING", "SlotCount"), offset_of!(SlotRing, slot_count)),
        (("CAPDMA_SLOT_RING", "LinePitch"), offset_of!(SlotRing, line_pitch)),
        (("CAPDMA_CHANNEL_FORMAT", ""), size_of::<ChannelFormat>()),
        (("CAPDMA_CHANNEL_FORMAT", "FrameInterval"), offset_of!(ChannelFormat, frame_interval)),
        (("CAPDMA_COMPLETION", ""), size_of::<Completion>()),
        (("CAPDMA_COMPLETION", "Status"), offset_of!(Completion, status)),
        (("CAPDMA_COMPLETION", "Timestamp"), offset_of!(Completion, timestamp)),
        (("CAPDMA_SG_DESCRIPTOR", ""), size_of::<SgDescriptor>()),
        (("CAPDMA_SG_DESCRIPTOR", "Tag"), offset_of!(SgDescriptor, tag)),
        (("CAPDMA_COMPLETION_RECORD", ""), size_of::<CompletionRecord>()),
        (("CAPDMA_COMPLETION_RECORD", "Timestamp"), offset_of!(CompletionRecord, timestamp)),
        (("CAPDMA_COMPLETION_RECORD", "Tag"), offset_of!(CompletionRecord, tag)),
    ])
}

/// The `CAPDMA_CHECK_*` lines of the header.
fn header_checks() -> BTreeMap<(String, String), usize> {
    let mut checks = BTreeMap::new();
    for line in HEADER.lines().map(str::trim) {
        let (args, field_expected) = if let Some(rest) = line.strip_prefix("CAPDMA_CHECK_SIZE(") {
            (rest, false)
        } else if let Some(rest) = line.strip_prefix("CAPDMA_CHECK_OFFSET(") {
            (rest, true)
        } else {
            continue;
        };
        let args: Vec<&str> = args.trim_end_matches(");").split(',').map(str::trim).collect();
        let (ty, field, value) = match (field_expected, args.as_slice()) {
            (false, [ty, n]) => (*ty, "", *n),
            (true, [ty, f, n]) => (*ty, *f, *n),
            _ => panic!("malformed check line: {line}"),
        };
        let value: usize = value.parse().unwrap_or_else(|_| panic!("bad number in: {line}"));
        assert!(checks.insert((ty.to_string(), field.to_string()), value).is_none(), "duplicate: {line}");
    }
    checks
}

#[test]
#[cfg(target_pointer_width = "64")]
fn header_checks_equal_the_rust_layout() {
    let rust = rust_layout();
    let header = header_checks();
    for ((ty, field), value) in &header {
        let Some(r) = rust.get(&(ty.as_str(), field.as_str())) else {
            panic!("the header checks {ty}.{field} but the Rust side does not: add it to rust_layout()");
        };
        assert_eq!(value, r, "{ty}.{field}: header says {value}, Rust says {r}");
    }
    for (ty, field) in rust.keys() {
        assert!(header.contains_key(&((*ty).to_string(), (*field).to_string())), "the header does not check {ty}.{field}");
    }
}

/// The value of `#define name value` in the header (decimal or `0x` hex).
fn header_define(name: &str) -> u32 {
    let value = HEADER
        .lines()
        .find_map(|line| line.trim().strip_prefix("#define ")?.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("the header defines {name}"));
    let value = value.split("/*").next().unwrap_or_default().trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name} is {value:?}"))
}

#[test]
fn header_constants_are_the_rust_ones() {
    use capdma_interface::descriptor::{
        CQ_STATUS_ERROR, CQ_STATUS_OK, CQ_STATUS_PART, DESC_END_OF_FRAME, DESC_END_OF_PART, DESC_START_OF_FRAME,
    };
    use capdma_interface::table::{CompletionKind, CAPDMA_BUS_INTERFACE_VERSION, CAPDMA_PART_END, CAPDMA_PART_START};
    for (name, rust) in [
        ("CAPDMA_MAX_RING_SLOTS", MAX_RING_SLOTS),
        ("CAPDMA_BUS_INTERFACE_VERSION", u32::from(CAPDMA_BUS_INTERFACE_VERSION)),
        ("CAPDMA_COMPLETION_FRAME", CompletionKind::Frame as u32),
        ("CAPDMA_COMPLETION_SLOT", CompletionKind::Slot as u32),
        ("CAPDMA_COMPLETION_FRAME_PART", CompletionKind::FramePart as u32),
        ("CAPDMA_PART_START", CAPDMA_PART_START),
        ("CAPDMA_PART_END", CAPDMA_PART_END),
        ("CAPDMA_DESC_START_OF_FRAME", DESC_START_OF_FRAME),
        ("CAPDMA_DESC_END_OF_FRAME", DESC_END_OF_FRAME),
        ("CAPDMA_DESC_END_OF_PART", DESC_END_OF_PART),
        ("CAPDMA_CQ_STATUS_OK", CQ_STATUS_OK),
        ("CAPDMA_CQ_STATUS_ERROR", CQ_STATUS_ERROR),
        ("CAPDMA_CQ_STATUS_PART", CQ_STATUS_PART),
    ] {
        assert_eq!(header_define(name), rust, "{name}");
    }
}

#[test]
fn header_compiles_and_its_static_asserts_hold() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("check.c");
    // The few WDM types the header uses, as wdm.h defines them for x64.
    let prelude = "typedef unsigned int ULONG; typedef ULONG *PULONG; typedef unsigned long long ULONGLONG;\n\
        typedef long long LONGLONG; typedef int NTSTATUS; typedef void VOID; typedef void *PVOID;\n\
        typedef unsigned char *PUCHAR;\n\
        typedef struct _INTERFACE { unsigned short Size; unsigned short Version; PVOID Context;\n\
          void (*InterfaceReference)(PVOID); void (*InterfaceDereference)(PVOID); } INTERFACE;\n\
        #define __stdcall\n";
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/capdma_interface.h");
    std::fs::write(&source, format!("{prelude}#include \"{}\"\nint main(void) {{ return 0; }}\n", header.display())).unwrap();
    let out = Command::new("cc").args(["-std=c11", "-fsyntax-only"]).arg(&source).output().expect("a C compiler (cc) is needed to check the header");
    assert!(out.status.success(), "the header does not compile:\n{}", String::from_utf8_lossy(&out.stderr));
}
