//! The crate's own bindings of the kernel-streaming parts of `ks.h` and
//! `ksmedia.h` (`wdk-sys` binds neither).
//!
//! Generated at build time by `build.rs` (bindgen over the WDK headers:
//! with `cargo xtask windows`, mingw-w64's, from the synthesised root under
//! `target/`), limited to the types, `Ks*` functions and constants the glue
//! uses. Types of the other headers (`wdm.h`, `ntdef.h`, ...) are not
//! generated: the bindings name them and they resolve to `wdk-sys`'s,
//! so a `PIRP` here is `wdk_sys::PIRP`.
//!
//! Two kinds of compile-time checks guard the layouts:
//!
//! * bindgen's own layout tests (size, alignment and every field offset as
//!   clang computed them from the headers for `x86_64-pc-windows-msvc`),
//!   emitted as `const` items in the generated file;
//! * the asserts below: the x64 sizes and offsets docs/design.md records from
//!   the headers, and the identity of the structures the portable core
//!   declares for itself (`KSMAPPING` = `SgElement`, `KSDATARANGE` =
//!   `KsDataFormat`, ...) and of the flag values it uses.
//!
//! The `Ks*` functions link against `ks.lib` (`build.rs`); `ks.sys` exports them.
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    clippy::missing_safety_doc
)]

use wdk_sys::*;

include!(concat!(env!("OUT_DIR"), "/ks_bindings.rs"));

unsafe extern "C" {
    /// `PUNKNOWN KsGetOuterUnknown(PVOID Object)` (ks.h): declared there only
    /// when `IUnknown` is (`_UNKNOWN_H_`), which the kernel headers bindgen
    /// reads do not define, so it is declared here with the generated
    /// functions' linkage (`ks.lib`). The answer is the object's outer
    /// `IUnknown` (a COM-style object: its first pointer is its vtable).
    pub fn KsGetOuterUnknown(Object: PVOID) -> PVOID;
    /// `NTSTATUS KsPinGetReferenceClockInterface(PKSPIN Pin,
    /// PIKSREFERENCECLOCK *Interface)` (ks.h): declared there only with
    /// `IUnknown`, as [`KsGetOuterUnknown`]. `Interface` receives an
    /// `IKsReferenceClock` (a COM-style object, `super::clock`).
    pub fn KsPinGetReferenceClockInterface(Pin: PKSPIN, Interface: *mut PVOID) -> NTSTATUS;
}

/// `DWORD` (minwindef.h), used by `KS_FRAME_INFO`; `windef.h` is not bound.
pub type DWORD = ULONG;

/// `RECT` (windef.h), used by `KS_FRAME_INFO`; checked by the generated
/// layout test of `KS_FRAME_INFO` (the offsets of the fields after it).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RECT {
    pub left: LONG,
    pub top: LONG,
    pub right: LONG,
    pub bottom: LONG,
}

/// `KSFILTER_DESCRIPTOR_VERSION` (ks.h: `((ULONG)-1)`, a cast bindgen does not evaluate).
pub const KSFILTER_DESCRIPTOR_VERSION: ULONG = ULONG::MAX;

/// `KSMEMORY_TYPE_KERNEL_NONPAGED` {4A6D5FC4-7895-11D1-B069-00A0C9062802}
/// (ks.h, a `DEFINE_GUIDSTRUCT`, which bindgen cannot bind).
pub const KSMEMORY_TYPE_KERNEL_NONPAGED: GUID =
    GUID { Data1: 0x4a6d_5fc4, Data2: 0x7895, Data3: 0x11d1, Data4: [0xb0, 0x69, 0x00, 0xa0, 0xc9, 0x06, 0x28, 0x02] };

// ---- checked layouts (x64), docs/design.md "Layouts checked against the headers" ----
use core::mem::{align_of, offset_of, size_of};

const _: () = assert!(size_of::<KSSTREAM_HEADER>() == 0x38);
const _: () = assert!(offset_of!(KSSTREAM_HEADER, Data) == 0x28);
const _: () = assert!(offset_of!(KSSTREAM_HEADER, FrameExtent) == 0x20);
const _: () = assert!(offset_of!(KSSTREAM_HEADER, DataUsed) == 0x24);
const _: () = assert!(size_of::<KSMAPPING>() == 16);
const _: () = assert!(size_of::<KSSTREAM_POINTER_OFFSET>() == 16);
const _: () = assert!(size_of::<KSSTREAM_POINTER>() == 64);
const _: () = assert!(offset_of!(KSSTREAM_POINTER, OffsetOut) == 48);
const _: () = assert!(size_of::<KSPIN_DESCRIPTOR_EX>() == 136);
const _: () = assert!(size_of::<KS_FRAME_INFO>() == 72);
// The extended header follows the stream header, 8-aligned.
const _: () = assert!(size_of::<KSSTREAM_HEADER>() % align_of::<KS_FRAME_INFO>() == 0);

// ---- the core's own declarations of the same structures ----
use crate::ks_format as core_ks;
use capdma_interface::table::SgElement;

// KSMAPPING is handed to the bus as SgElement (ProgramFrame).
const _: () = assert!(size_of::<KSMAPPING>() == size_of::<SgElement>());
const _: () = assert!(align_of::<KSMAPPING>() == align_of::<SgElement>());
const _: () = assert!(offset_of!(KSMAPPING, PhysicalAddress) == offset_of!(SgElement, logical_address));
const _: () = assert!(offset_of!(KSMAPPING, ByteCount) == offset_of!(SgElement, byte_count));
const _: () = assert!(offset_of!(KSMAPPING, Alignment) == offset_of!(SgElement, alignment));
const _: () = assert!(size_of::<KSMAPPING>() == core_ks::KSMAPPING_SIZE as usize);
// The data ranges are the core's KS_DATARANGE_VIDEO, seen by KS as KSDATARANGE.
const _: () = assert!(size_of::<KSDATARANGE>() == size_of::<core_ks::KsDataFormat>());
const _: () = assert!(align_of::<KSDATARANGE>() == align_of::<core_ks::KsDataFormat>());
// The property request is read as the core's KsProperty, the answer written as its S structure.
const _: () = assert!(size_of::<KSPROPERTY>() == size_of::<core_ks::KsProperty>());
const _: () =
    assert!(size_of::<KSPROPERTY_DROPPEDFRAMES_CURRENT_S>() == size_of::<core_ks::KsPropertyDroppedFramesCurrentS>());
const _: () = assert!(
    offset_of!(KSPROPERTY_DROPPEDFRAMES_CURRENT_S, PictureNumber)
        == offset_of!(core_ks::KsPropertyDroppedFramesCurrentS, picture_number)
);
const _: () = assert!(
    offset_of!(KSPROPERTY_DROPPEDFRAMES_CURRENT_S, DropCount)
        == offset_of!(core_ks::KsPropertyDroppedFramesCurrentS, drop_count)
);
const _: () = assert!(
    offset_of!(KSPROPERTY_DROPPEDFRAMES_CURRENT_S, AverageFrameSize)
        == offset_of!(core_ks::KsPropertyDroppedFramesCurrentS, average_frame_size)
);
// GUIDs are converted from the core's KsGuid.
const _: () = assert!(size_of::<GUID>() == size_of::<core_ks::KsGuid>());

// Flag and state values the core uses, as the headers define them.
const _: () = assert!(core_ks::KSPIN_FLAG_GENERATE_MAPPINGS == KSPIN_FLAG_GENERATE_MAPPINGS);
const _: () = assert!(core_ks::KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING == KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING);
const _: () = assert!(core_ks::KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY == KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY);
const _: () =
    assert!(core_ks::KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY == KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY);
const _: () = assert!(core_ks::KSSTREAM_HEADER_OPTIONSF_TIMEVALID == KSSTREAM_HEADER_OPTIONSF_TIMEVALID);
const _: () = assert!(core_ks::KSSTREAM_HEADER_OPTIONSF_DURATIONVALID == KSSTREAM_HEADER_OPTIONSF_DURATIONVALID);
const _: () = assert!(crate::state::KSSTATE_STOP as i32 == KSSTATE::KSSTATE_STOP);
const _: () = assert!(crate::state::KSSTATE_ACQUIRE as i32 == KSSTATE::KSSTATE_ACQUIRE);
const _: () = assert!(crate::state::KSSTATE_PAUSE as i32 == KSSTATE::KSSTATE_PAUSE);
const _: () = assert!(crate::state::KSSTATE_RUN as i32 == KSSTATE::KSSTATE_RUN);
