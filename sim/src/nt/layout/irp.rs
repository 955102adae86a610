//! The x64 layouts (offsets and sizes, bytes) of the I/O manager's and the
//! Plug and Play manager's structures (wdm.h, ntddk.h), and the constants
//! that go with them: IRPs and their stack locations, events, remove
//! locks, the PnP query structures, resource lists, registry answers.
//!
//! Every offset is the one bindgen's layout assertions give for the
//! headers the images are built against (`wdk-sys` `types.rs`).

/// `IRP` (wdm.h). The stack locations follow it in the same allocation
/// (`IoSizeOfIrp(StackSize)` = [`irp::SIZE`] + `StackSize` × [`stack::SIZE`]).
pub mod irp {
    /// `sizeof(IRP)`.
    pub const SIZE: u64 = 208;
    /// `CSHORT Type` ([`IO_TYPE_IRP`]).
    pub const TYPE: u64 = 0;
    /// `USHORT Size`: of the IRP with its stack locations.
    pub const SIZE_FIELD: u64 = 2;
    /// `PMDL MdlAddress`.
    pub const MDL_ADDRESS: u64 = 8;
    /// `ULONG Flags`.
    pub const FLAGS: u64 = 16;
    /// `AssociatedIrp.SystemBuffer`.
    pub const SYSTEM_BUFFER: u64 = 24;
    /// `IO_STATUS_BLOCK IoStatus`: `Status` (NTSTATUS) here …
    pub const STATUS: u64 = 48;
    /// … and `ULONG_PTR Information` here.
    pub const INFORMATION: u64 = 56;
    /// `KPROCESSOR_MODE RequestorMode`.
    pub const REQUESTOR_MODE: u64 = 64;
    /// `BOOLEAN PendingReturned`.
    pub const PENDING_RETURNED: u64 = 65;
    /// `CHAR StackCount`.
    pub const STACK_COUNT: u64 = 66;
    /// `CHAR CurrentLocation`: 1-based index of the current stack
    /// location; `StackCount + 1` before the first `IoCallDriver`.
    pub const CURRENT_LOCATION: u64 = 67;
    /// `BOOLEAN Cancel`.
    pub const CANCEL: u64 = 68;
    /// `PIO_STATUS_BLOCK UserIosb`.
    pub const USER_IOSB: u64 = 72;
    /// `PKEVENT UserEvent`.
    pub const USER_EVENT: u64 = 80;
    /// `PDRIVER_CANCEL CancelRoutine`.
    pub const CANCEL_ROUTINE: u64 = 104;
    /// `PVOID UserBuffer`.
    pub const USER_BUFFER: u64 = 112;
    /// `Tail.Overlay.Thread`.
    pub const THREAD: u64 = 152;
    /// `Tail.Overlay.CurrentStackLocation`.
    pub const CURRENT_STACK_LOCATION: u64 = 184;
    /// `IO_TYPE_IRP`.
    pub const IO_TYPE_IRP: u16 = 6;
}

/// `IO_STACK_LOCATION` (wdm.h).
pub mod stack {
    /// `sizeof(IO_STACK_LOCATION)`.
    pub const SIZE: u64 = 72;
    /// `UCHAR MajorFunction`.
    pub const MAJOR_FUNCTION: u64 = 0;
    /// `UCHAR MinorFunction`.
    pub const MINOR_FUNCTION: u64 = 1;
    /// `UCHAR Flags`.
    pub const FLAGS: u64 = 2;
    /// `UCHAR Control` (`SL_*`).
    pub const CONTROL: u64 = 3;
    /// The `Parameters` union (32 bytes).
    pub const PARAMETERS: u64 = 8;
    /// `PDEVICE_OBJECT DeviceObject`.
    pub const DEVICE_OBJECT: u64 = 40;
    /// `PFILE_OBJECT FileObject`.
    pub const FILE_OBJECT: u64 = 48;
    /// `PIO_COMPLETION_ROUTINE CompletionRoutine`.
    pub const COMPLETION_ROUTINE: u64 = 56;
    /// `PVOID Context`.
    pub const CONTEXT: u64 = 64;

    /// `Parameters.QueryDeviceRelations.Type` (`DEVICE_RELATION_TYPE`).
    pub const QUERY_DEVICE_RELATIONS_TYPE: u64 = PARAMETERS;
    /// `Parameters.QueryInterface.InterfaceType` (`const GUID *`).
    pub const QUERY_INTERFACE_TYPE: u64 = PARAMETERS;
    /// `Parameters.QueryInterface.Size` (USHORT, bytes).
    pub const QUERY_INTERFACE_SIZE: u64 = PARAMETERS + 8;
    /// `Parameters.QueryInterface.Version` (USHORT).
    pub const QUERY_INTERFACE_VERSION: u64 = PARAMETERS + 10;
    /// `Parameters.QueryInterface.Interface` (`PINTERFACE`).
    pub const QUERY_INTERFACE_INTERFACE: u64 = PARAMETERS + 16;
    /// `Parameters.QueryInterface.InterfaceSpecificData`.
    pub const QUERY_INTERFACE_SPECIFIC_DATA: u64 = PARAMETERS + 24;
    /// `Parameters.DeviceCapabilities.Capabilities`.
    pub const CAPABILITIES: u64 = PARAMETERS;
    /// `Parameters.QueryId.IdType` (`BUS_QUERY_ID_TYPE`).
    pub const QUERY_ID_TYPE: u64 = PARAMETERS;
    /// `Parameters.QueryDeviceText.DeviceTextType`.
    pub const DEVICE_TEXT_TYPE: u64 = PARAMETERS;
    /// `Parameters.QueryDeviceText.LocaleId`.
    pub const DEVICE_TEXT_LOCALE: u64 = PARAMETERS + 8;
    /// `Parameters.StartDevice.AllocatedResources` (`PCM_RESOURCE_LIST`).
    pub const ALLOCATED_RESOURCES: u64 = PARAMETERS;
    /// `Parameters.StartDevice.AllocatedResourcesTranslated`.
    pub const ALLOCATED_RESOURCES_TRANSLATED: u64 = PARAMETERS + 8;
    /// `Parameters.Power.SystemContext` (ULONG).
    pub const POWER_SYSTEM_CONTEXT: u64 = PARAMETERS;
    /// `Parameters.Power.Type` (`POWER_STATE_TYPE`).
    pub const POWER_TYPE: u64 = PARAMETERS + 8;
    /// `Parameters.Power.State` (`POWER_STATE`, 4 bytes).
    pub const POWER_STATE: u64 = PARAMETERS + 16;
    /// `Parameters.Power.ShutdownType` (`POWER_ACTION`).
    pub const POWER_SHUTDOWN_TYPE: u64 = PARAMETERS + 24;
}

/// `SL_*` stack location `Control` bits (wdm.h).
pub mod sl {
    /// `SL_PENDING_RETURNED`: `IoMarkIrpPending` was called at this location.
    pub const PENDING_RETURNED: u8 = 0x01;
    /// `SL_ERROR_RETURNED`.
    pub const ERROR_RETURNED: u8 = 0x02;
    /// `SL_INVOKE_ON_CANCEL`.
    pub const INVOKE_ON_CANCEL: u8 = 0x20;
    /// `SL_INVOKE_ON_SUCCESS`.
    pub const INVOKE_ON_SUCCESS: u8 = 0x40;
    /// `SL_INVOKE_ON_ERROR`.
    pub const INVOKE_ON_ERROR: u8 = 0x80;
}

/// `IRP_MJ_*` major function codes (wdm.h).
pub mod mj {
    /// `IRP_MJ_CREATE`.
    pub const CREATE: u8 = 0x00;
    /// `IRP_MJ_CLOSE`.
    pub const CLOSE: u8 = 0x02;
    /// `IRP_MJ_READ`.
    pub const READ: u8 = 0x03;
    /// `IRP_MJ_WRITE`.
    pub const WRITE: u8 = 0x04;
    /// `IRP_MJ_FLUSH_BUFFERS`.
    pub const FLUSH_BUFFERS: u8 = 0x09;
    /// `IRP_MJ_DEVICE_CONTROL`.
    pub const DEVICE_CONTROL: u8 = 0x0E;
    /// `IRP_MJ_SHUTDOWN`.
    pub const SHUTDOWN: u8 = 0x10;
    /// `IRP_MJ_POWER`.
    pub const POWER: u8 = 0x16;
    /// `IRP_MJ_SYSTEM_CONTROL`.
    pub const SYSTEM_CONTROL: u8 = 0x17;
    /// `IRP_MJ_PNP`.
    pub const PNP: u8 = 0x1B;
    /// `IRP_MJ_MAXIMUM_FUNCTION`.
    pub const MAXIMUM_FUNCTION: u8 = 0x1B;
}

/// `IRP_MN_*` minor function codes of `IRP_MJ_PNP` (wdm.h).
pub mod mn {
    /// `IRP_MN_START_DEVICE`.
    pub const START_DEVICE: u8 = 0x00;
    /// `IRP_MN_QUERY_REMOVE_DEVICE`.
    pub const QUERY_REMOVE_DEVICE: u8 = 0x01;
    /// `IRP_MN_REMOVE_DEVICE`.
    pub const REMOVE_DEVICE: u8 = 0x02;
    /// `IRP_MN_CANCEL_REMOVE_DEVICE`.
    pub const CANCEL_REMOVE_DEVICE: u8 = 0x03;
    /// `IRP_MN_STOP_DEVICE`.
    pub const STOP_DEVICE: u8 = 0x04;
    /// `IRP_MN_QUERY_STOP_DEVICE`.
    pub const QUERY_STOP_DEVICE: u8 = 0x05;
    /// `IRP_MN_CANCEL_STOP_DEVICE`.
    pub const CANCEL_STOP_DEVICE: u8 = 0x06;
    /// `IRP_MN_QUERY_DEVICE_RELATIONS`.
    pub const QUERY_DEVICE_RELATIONS: u8 = 0x07;
    /// `IRP_MN_QUERY_INTERFACE`.
    pub const QUERY_INTERFACE: u8 = 0x08;
    /// `IRP_MN_QUERY_CAPABILITIES`.
    pub const QUERY_CAPABILITIES: u8 = 0x09;
    /// `IRP_MN_QUERY_RESOURCES`.
    pub const QUERY_RESOURCES: u8 = 0x0A;
    /// `IRP_MN_QUERY_RESOURCE_REQUIREMENTS`.
    pub const QUERY_RESOURCE_REQUIREMENTS: u8 = 0x0B;
    /// `IRP_MN_QUERY_DEVICE_TEXT`.
    pub const QUERY_DEVICE_TEXT: u8 = 0x0C;
    /// `IRP_MN_FILTER_RESOURCE_REQUIREMENTS`.
    pub const FILTER_RESOURCE_REQUIREMENTS: u8 = 0x0D;
    /// `IRP_MN_READ_CONFIG`.
    pub const READ_CONFIG: u8 = 0x0F;
    /// `IRP_MN_WRITE_CONFIG`.
    pub const WRITE_CONFIG: u8 = 0x10;
    /// `IRP_MN_EJECT`.
    pub const EJECT: u8 = 0x11;
    /// `IRP_MN_SET_LOCK`.
    pub const SET_LOCK: u8 = 0x12;
    /// `IRP_MN_QUERY_ID`.
    pub const QUERY_ID: u8 = 0x13;
    /// `IRP_MN_QUERY_PNP_DEVICE_STATE`.
    pub const QUERY_PNP_DEVICE_STATE: u8 = 0x14;
    /// `IRP_MN_QUERY_BUS_INFORMATION`.
    pub const QUERY_BUS_INFORMATION: u8 = 0x15;
    /// `IRP_MN_DEVICE_USAGE_NOTIFICATION`.
    pub const DEVICE_USAGE_NOTIFICATION: u8 = 0x16;
    /// `IRP_MN_SURPRISE_REMOVAL`.
    pub const SURPRISE_REMOVAL: u8 = 0x17;
    /// `IRP_MN_DEVICE_ENUMERATED`.
    pub const DEVICE_ENUMERATED: u8 = 0x19;
    /// The minor code Driver Verifier's I/O verification sends to see that
    /// every driver passes down (and the PDO completes untouched) what it
    /// does not understand (`IRP_MN_BOGUS`).
    pub const BOGUS: u8 = 0xFF;

    /// `IRP_MN_WAIT_WAKE` (`IRP_MJ_POWER`).
    pub const WAIT_WAKE: u8 = 0x00;
    /// `IRP_MN_POWER_SEQUENCE` (`IRP_MJ_POWER`).
    pub const POWER_SEQUENCE: u8 = 0x01;
    /// `IRP_MN_SET_POWER` (`IRP_MJ_POWER`).
    pub const SET_POWER: u8 = 0x02;
    /// `IRP_MN_QUERY_POWER` (`IRP_MJ_POWER`).
    pub const QUERY_POWER: u8 = 0x03;

    /// Whether `minor` is a Plug and Play minor code wdm.h defines (what
    /// Verifier calls an IRP a driver "understands").
    #[must_use]
    pub const fn is_known_pnp(minor: u8) -> bool {
        minor <= 0x19 && minor != 0x0E
    }
}

/// `IO_STATUS_BLOCK` (wdm.h).
pub mod io_status_block {
    /// `sizeof(IO_STATUS_BLOCK)`.
    pub const SIZE: u64 = 16;
    /// `NTSTATUS Status`.
    pub const STATUS: u64 = 0;
    /// `ULONG_PTR Information`.
    pub const INFORMATION: u64 = 8;
}

/// `KEVENT` / `DISPATCHER_HEADER` (wdm.h).
pub mod kevent {
    /// `sizeof(KEVENT)`.
    pub const SIZE: u64 = 24;
    /// `UCHAR Type` (`EVENT_TYPE`: [`NOTIFICATION`] or [`SYNCHRONIZATION`]).
    pub const TYPE: u64 = 0;
    /// `UCHAR Size`: of the object in 4-byte units.
    pub const SIZE_FIELD: u64 = 2;
    /// `LONG SignalState`.
    pub const SIGNAL_STATE: u64 = 4;
    /// `LIST_ENTRY WaitListHead`.
    pub const WAIT_LIST_HEAD: u64 = 8;
    /// `NotificationEvent`.
    pub const NOTIFICATION: u8 = 0;
    /// `SynchronizationEvent`.
    pub const SYNCHRONIZATION: u8 = 1;
}

/// `IO_REMOVE_LOCK` of a free build = `IO_REMOVE_LOCK_COMMON_BLOCK` (wdm.h).
pub mod remove_lock {
    /// `sizeof(IO_REMOVE_LOCK)` (free build), what the `…Ex` routines get as `RemlockSize`.
    pub const SIZE: u64 = 32;
    /// `BOOLEAN Removed`.
    pub const REMOVED: u64 = 0;
    /// `LONG IoCount`.
    pub const IO_COUNT: u64 = 4;
    /// `KEVENT RemoveEvent`.
    pub const REMOVE_EVENT: u64 = 8;
}

/// `DEVOBJ_EXTENSION` (wdm.h), allocated with each device object.
pub mod devobj_extension {
    /// `sizeof(DEVOBJ_EXTENSION)`.
    pub const SIZE: u64 = 16;
    /// `CSHORT Type` (`IO_TYPE_DEVICE_OBJECT_EXTENSION` = 13).
    pub const TYPE: u64 = 0;
    /// `USHORT Size`.
    pub const SIZE_FIELD: u64 = 2;
    /// `PDEVICE_OBJECT DeviceObject`.
    pub const DEVICE_OBJECT: u64 = 8;
}

/// `DEVICE_OBJECT` fields beyond those in [`super::device_object`].
pub mod device_object_more {
    /// `USHORT SectorSize`.
    pub const SECTOR_SIZE: u64 = 304;
    /// `struct _DEVOBJ_EXTENSION *DeviceObjectExtension`.
    pub const DEVICE_OBJECT_EXTENSION: u64 = 312;
}

/// `DEVICE_CAPABILITIES` (wdm.h).
pub mod device_capabilities {
    /// `sizeof(DEVICE_CAPABILITIES)`.
    pub const SIZE: u64 = 64;
    /// `USHORT Size`.
    pub const SIZE_FIELD: u64 = 0;
    /// `USHORT Version` (1).
    pub const VERSION: u64 = 2;
    /// The `ULONG` of bit fields (`DeviceD1` … `WakeFromInterrupt`).
    pub const FLAGS: u64 = 4;
    /// `ULONG Address` (−1 when unknown).
    pub const ADDRESS: u64 = 8;
    /// `ULONG UINumber` (−1 when unknown).
    pub const UI_NUMBER: u64 = 12;
    /// `DEVICE_POWER_STATE DeviceState[POWER_SYSTEM_MAXIMUM]` (7 entries).
    pub const DEVICE_STATE: u64 = 16;
    /// `SYSTEM_POWER_STATE SystemWake`.
    pub const SYSTEM_WAKE: u64 = 44;
    /// `DEVICE_POWER_STATE DeviceWake`.
    pub const DEVICE_WAKE: u64 = 48;
    /// Bit of `Removable` in [`FLAGS`].
    pub const FLAG_REMOVABLE: u32 = 1 << 4;
    /// Bit of `SurpriseRemovalOK` in [`FLAGS`].
    pub const FLAG_SURPRISE_REMOVAL_OK: u32 = 1 << 9;
    /// Bit of `RawDeviceOK` in [`FLAGS`].
    pub const FLAG_RAW_DEVICE_OK: u32 = 1 << 8;
}

/// `INTERFACE` (wdm.h), the header of every query-interface table.
pub mod interface {
    /// `sizeof(INTERFACE)`.
    pub const SIZE: u64 = 32;
    /// `USHORT Size`.
    pub const SIZE_FIELD: u64 = 0;
    /// `USHORT Version`.
    pub const VERSION: u64 = 2;
    /// `PVOID Context`.
    pub const CONTEXT: u64 = 8;
    /// `PINTERFACE_REFERENCE InterfaceReference`.
    pub const INTERFACE_REFERENCE: u64 = 16;
    /// `PINTERFACE_DEREFERENCE InterfaceDereference`.
    pub const INTERFACE_DEREFERENCE: u64 = 24;
}

/// `BUS_INTERFACE_STANDARD` (wdm.h).
pub mod bus_interface_standard {
    /// `sizeof(BUS_INTERFACE_STANDARD)`.
    pub const SIZE: u64 = 64;
    /// `PTRANSLATE_BUS_ADDRESS TranslateBusAddress`.
    pub const TRANSLATE_BUS_ADDRESS: u64 = 32;
    /// `PGET_DMA_ADAPTER GetDmaAdapter`.
    pub const GET_DMA_ADAPTER: u64 = 40;
    /// `PGET_SET_DEVICE_DATA SetBusData`.
    pub const SET_BUS_DATA: u64 = 48;
    /// `PGET_SET_DEVICE_DATA GetBusData`.
    pub const GET_BUS_DATA: u64 = 56;
    /// `BUS_INTERFACE_STANDARD_VERSION`.
    pub const VERSION: u16 = 1;
}

/// `DEVICE_RELATIONS` (wdm.h).
pub mod device_relations {
    /// `ULONG Count`.
    pub const COUNT: u64 = 0;
    /// `PDEVICE_OBJECT Objects[]`.
    pub const OBJECTS: u64 = 8;
    /// `BusRelations`.
    pub const BUS_RELATIONS: u32 = 0;
    /// `EjectionRelations`.
    pub const EJECTION_RELATIONS: u32 = 1;
    /// `PowerRelations`.
    pub const POWER_RELATIONS: u32 = 2;
    /// `RemovalRelations`.
    pub const REMOVAL_RELATIONS: u32 = 3;
    /// `TargetDeviceRelation`.
    pub const TARGET_DEVICE_RELATION: u32 = 4;
}

/// `PNP_BUS_INFORMATION` (wdm.h).
pub mod pnp_bus_information {
    /// `sizeof(PNP_BUS_INFORMATION)`.
    pub const SIZE: u64 = 24;
    /// `GUID BusTypeGuid`.
    pub const BUS_TYPE_GUID: u64 = 0;
    /// `INTERFACE_TYPE LegacyBusType`.
    pub const LEGACY_BUS_TYPE: u64 = 16;
    /// `ULONG BusNumber`.
    pub const BUS_NUMBER: u64 = 20;
}

/// `CM_RESOURCE_LIST`, `CM_FULL_RESOURCE_DESCRIPTOR`,
/// `CM_PARTIAL_RESOURCE_LIST`, `CM_PARTIAL_RESOURCE_DESCRIPTOR` (wdm.h;
/// `#pragma pack(4)`).
pub mod cm {
    /// `CM_RESOURCE_LIST.Count` (ULONG).
    pub const LIST_COUNT: u64 = 0;
    /// `CM_RESOURCE_LIST.List[0]`.
    pub const LIST_FIRST: u64 = 4;
    /// `CM_FULL_RESOURCE_DESCRIPTOR.InterfaceType`.
    pub const FULL_INTERFACE_TYPE: u64 = 0;
    /// `CM_FULL_RESOURCE_DESCRIPTOR.BusNumber`.
    pub const FULL_BUS_NUMBER: u64 = 4;
    /// `CM_FULL_RESOURCE_DESCRIPTOR.PartialResourceList`.
    pub const FULL_PARTIAL_LIST: u64 = 8;
    /// `CM_PARTIAL_RESOURCE_LIST.Version` (USHORT).
    pub const PARTIAL_VERSION: u64 = 0;
    /// `CM_PARTIAL_RESOURCE_LIST.Revision` (USHORT).
    pub const PARTIAL_REVISION: u64 = 2;
    /// `CM_PARTIAL_RESOURCE_LIST.Count` (ULONG).
    pub const PARTIAL_COUNT: u64 = 4;
    /// `CM_PARTIAL_RESOURCE_LIST.PartialDescriptors[0]`.
    pub const PARTIAL_DESCRIPTORS: u64 = 8;
    /// `sizeof(CM_PARTIAL_RESOURCE_DESCRIPTOR)`.
    pub const DESCRIPTOR_SIZE: u64 = 20;
    /// `UCHAR Type` (`CmResourceType*`).
    pub const DESCRIPTOR_TYPE: u64 = 0;
    /// `UCHAR ShareDisposition` (`CmResourceShare*`).
    pub const DESCRIPTOR_SHARE: u64 = 1;
    /// `USHORT Flags`.
    pub const DESCRIPTOR_FLAGS: u64 = 2;
    /// The `u` union (16 bytes).
    pub const DESCRIPTOR_U: u64 = 4;
    /// `CmResourceTypePort`.
    pub const TYPE_PORT: u8 = 1;
    /// `CmResourceTypeInterrupt`.
    pub const TYPE_INTERRUPT: u8 = 2;
    /// `CmResourceTypeMemory`.
    pub const TYPE_MEMORY: u8 = 3;
    /// `CmResourceShareDeviceExclusive`.
    pub const SHARE_DEVICE_EXCLUSIVE: u8 = 1;
    /// `CmResourceShareShared`.
    pub const SHARE_SHARED: u8 = 3;
    /// `CM_RESOURCE_INTERRUPT_LEVEL_SENSITIVE`.
    pub const INTERRUPT_LEVEL_SENSITIVE: u16 = 0x0;
    /// `CM_RESOURCE_INTERRUPT_LATCHED`.
    pub const INTERRUPT_LATCHED: u16 = 0x1;
    /// `CM_RESOURCE_INTERRUPT_MESSAGE`.
    pub const INTERRUPT_MESSAGE: u16 = 0x2;
    /// `CM_RESOURCE_MEMORY_READ_WRITE`.
    pub const MEMORY_READ_WRITE: u16 = 0x0;
    /// `PCIBus` (`INTERFACE_TYPE`).
    pub const PCI_BUS: u32 = 5;
}

/// `KEY_VALUE_PARTIAL_INFORMATION` (wdm.h) and the registry value types.
pub mod key_value {
    /// `ULONG TitleIndex`.
    pub const TITLE_INDEX: u64 = 0;
    /// `ULONG Type`.
    pub const TYPE: u64 = 4;
    /// `ULONG DataLength`.
    pub const DATA_LENGTH: u64 = 8;
    /// `UCHAR Data[]`.
    pub const DATA: u64 = 12;
    /// `KeyValuePartialInformation` (`KEY_VALUE_INFORMATION_CLASS`).
    pub const PARTIAL_INFORMATION: u32 = 2;
    /// `REG_SZ`.
    pub const REG_SZ: u32 = 1;
    /// `REG_BINARY`.
    pub const REG_BINARY: u32 = 3;
    /// `REG_DWORD`.
    pub const REG_DWORD: u32 = 4;
    /// `PLUGPLAY_REGKEY_DEVICE`: the device's hardware key (`Device Parameters`).
    pub const PLUGPLAY_REGKEY_DEVICE: u32 = 1;
    /// `PLUGPLAY_REGKEY_DRIVER`: the device's software key.
    pub const PLUGPLAY_REGKEY_DRIVER: u32 = 2;
}

/// `NTSTATUS` values the I/O manager returns or checks (ntstatus.h), as
/// the `u32` bit patterns.
pub mod status {
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: u32 = 0;
    /// `STATUS_TIMEOUT`.
    pub const TIMEOUT: u32 = 0x102;
    /// `STATUS_PENDING`.
    pub const PENDING: u32 = 0x103;
    /// `STATUS_BUFFER_OVERFLOW`.
    pub const BUFFER_OVERFLOW: u32 = 0x8000_0005;
    /// `STATUS_INVALID_HANDLE`.
    pub const INVALID_HANDLE: u32 = 0xC000_0008;
    /// `STATUS_DEVICE_NOT_READY`.
    pub const DEVICE_NOT_READY: u32 = 0xC000_00A3;
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: u32 = 0xC000_000D;
    /// `STATUS_INVALID_DEVICE_REQUEST`.
    pub const INVALID_DEVICE_REQUEST: u32 = 0xC000_0010;
    /// `STATUS_MORE_PROCESSING_REQUIRED`.
    pub const MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
    /// `STATUS_BUFFER_TOO_SMALL`.
    pub const BUFFER_TOO_SMALL: u32 = 0xC000_0023;
    /// `STATUS_OBJECT_NAME_NOT_FOUND`.
    pub const OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
    /// `STATUS_OBJECT_NAME_COLLISION`.
    pub const OBJECT_NAME_COLLISION: u32 = 0xC000_0035;
    /// `STATUS_DELETE_PENDING`.
    pub const DELETE_PENDING: u32 = 0xC000_0056;
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: u32 = 0xC000_009A;
    /// `STATUS_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: u32 = 0xC000_00BB;
    /// `STATUS_INVALID_PARAMETER_2`.
    pub const INVALID_PARAMETER_2: u32 = 0xC000_00F0;
    /// `STATUS_NO_SUCH_DEVICE`.
    pub const NO_SUCH_DEVICE: u32 = 0xC000_000E;

    /// `NT_SUCCESS(status)`.
    #[must_use]
    pub const fn nt_success(status: u32) -> bool {
        status & 0x8000_0000 == 0
    }
}
