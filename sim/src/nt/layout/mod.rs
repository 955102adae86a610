//! The x64 layouts (offsets and sizes, bytes) of the structures the
//! emulated kernel and the images share, as wdm.h/ntddk.h define them.
//!
//! The values are those of the headers the images are built against; the
//! test `tests/tests/nt_layout.rs` compares each with the layout assertions
//! bindgen generated for wdk-sys when the Windows build has run.

pub mod dma;
#[allow(clippy::module_inception, reason = "layout::irp::irp is the IRP itself among the I/O structures")]
pub mod irp;
pub mod etw;

/// `DRIVER_OBJECT` (wdm.h).
pub mod driver_object {
    /// `sizeof(DRIVER_OBJECT)`.
    pub const SIZE: u64 = 336;
    /// `CSHORT Type` (`IO_TYPE_DRIVER` = 4).
    pub const TYPE: u64 = 0;
    /// `CSHORT Size`.
    pub const SIZE_FIELD: u64 = 2;
    /// `PDEVICE_OBJECT DeviceObject`: the driver's device objects, a list through `NextDevice`.
    pub const DEVICE_OBJECT: u64 = 8;
    /// `ULONG Flags`.
    pub const FLAGS: u64 = 16;
    /// `PVOID DriverStart`.
    pub const DRIVER_START: u64 = 24;
    /// `ULONG DriverSize`.
    pub const DRIVER_SIZE: u64 = 32;
    /// `PDRIVER_EXTENSION DriverExtension`.
    pub const DRIVER_EXTENSION: u64 = 48;
    /// `UNICODE_STRING DriverName`.
    pub const DRIVER_NAME: u64 = 56;
    /// `PDRIVER_INIT DriverInit`.
    pub const DRIVER_INIT: u64 = 88;
    /// `PDRIVER_UNLOAD DriverUnload`.
    pub const DRIVER_UNLOAD: u64 = 104;
    /// `PDRIVER_DISPATCH MajorFunction[IRP_MJ_MAXIMUM_FUNCTION + 1]`.
    pub const MAJOR_FUNCTION: u64 = 112;
}

/// `DRIVER_EXTENSION` (wdm.h).
pub mod driver_extension {
    /// `sizeof(DRIVER_EXTENSION)`.
    pub const SIZE: u64 = 40;
    /// `PDRIVER_OBJECT DriverObject`.
    pub const DRIVER_OBJECT: u64 = 0;
    /// `PDRIVER_ADD_DEVICE AddDevice`.
    pub const ADD_DEVICE: u64 = 8;
}

/// `DEVICE_OBJECT` (wdm.h).
pub mod device_object {
    /// `sizeof(DEVICE_OBJECT)`.
    pub const SIZE: u64 = 328;
    /// `CSHORT Type` (`IO_TYPE_DEVICE` = 3).
    pub const TYPE: u64 = 0;
    /// `USHORT Size`: of the object plus its extension.
    pub const SIZE_FIELD: u64 = 2;
    /// `LONG ReferenceCount`.
    pub const REFERENCE_COUNT: u64 = 4;
    /// `PDRIVER_OBJECT DriverObject`.
    pub const DRIVER_OBJECT: u64 = 8;
    /// `PDEVICE_OBJECT NextDevice`.
    pub const NEXT_DEVICE: u64 = 16;
    /// `PDEVICE_OBJECT AttachedDevice`: the device attached above.
    pub const ATTACHED_DEVICE: u64 = 24;
    /// `PIRP CurrentIrp`.
    pub const CURRENT_IRP: u64 = 32;
    /// `ULONG Flags` (`DO_*`).
    pub const FLAGS: u64 = 48;
    /// `ULONG Characteristics`.
    pub const CHARACTERISTICS: u64 = 52;
    /// `PVOID DeviceExtension`.
    pub const DEVICE_EXTENSION: u64 = 64;
    /// `DEVICE_TYPE DeviceType`.
    pub const DEVICE_TYPE: u64 = 72;
    /// `CCHAR StackSize`.
    pub const STACK_SIZE: u64 = 76;
    /// `ULONG AlignmentRequirement`.
    pub const ALIGNMENT_REQUIREMENT: u64 = 152;
}

/// `UNICODE_STRING` (ntdef.h).
pub mod unicode_string {
    /// `sizeof(UNICODE_STRING)`.
    pub const SIZE: u64 = 16;
    /// `USHORT Length`, bytes, without a terminator.
    pub const LENGTH: u64 = 0;
    /// `USHORT MaximumLength`, bytes.
    pub const MAXIMUM_LENGTH: u64 = 2;
    /// `PWCH Buffer`.
    pub const BUFFER: u64 = 8;
}

/// `DO_*` device object flags (wdm.h).
pub mod do_flags {
    /// `DO_BUFFERED_IO`.
    pub const BUFFERED_IO: u32 = 0x4;
    /// `DO_DIRECT_IO`.
    pub const DIRECT_IO: u32 = 0x10;
    /// `DO_DEVICE_INITIALIZING`: set by `IoCreateDevice`, cleared by the
    /// driver at the end of `AddDevice`.
    pub const DEVICE_INITIALIZING: u32 = 0x80;
    /// `DO_POWER_PAGABLE`.
    pub const POWER_PAGABLE: u32 = 0x2000;
    /// `DO_BUS_ENUMERATED_DEVICE`: set on PDOs.
    pub const BUS_ENUMERATED_DEVICE: u32 = 0x1000;
}

pub mod ke;
pub mod ks;
