//! The ETW structures the images pass to `EtwWriteTransfer` (wdm.h /
//! evntprov.h), x64 offsets and sizes in bytes.

/// `EVENT_DESCRIPTOR`.
pub mod event_descriptor {
    /// `sizeof(EVENT_DESCRIPTOR)`.
    pub const SIZE: u64 = 16;
    /// `USHORT Id`.
    pub const ID: u64 = 0;
    /// `UCHAR Version`.
    pub const VERSION: u64 = 2;
    /// `UCHAR Channel` (11: TraceLogging).
    pub const CHANNEL: u64 = 3;
    /// `UCHAR Level` (1 critical .. 5 verbose).
    pub const LEVEL: u64 = 4;
    /// `UCHAR Opcode`.
    pub const OPCODE: u64 = 5;
    /// `USHORT Task`.
    pub const TASK: u64 = 6;
    /// `ULONGLONG Keyword`.
    pub const KEYWORD: u64 = 8;
}

/// `EVENT_DATA_DESCRIPTOR`.
pub mod event_data_descriptor {
    /// `sizeof(EVENT_DATA_DESCRIPTOR)`.
    pub const SIZE: u64 = 16;
    /// `ULONGLONG Ptr`: the block's address.
    pub const PTR: u64 = 0;
    /// `ULONG Size`: the block's bytes.
    pub const SIZE_FIELD: u64 = 8;
    /// `ULONG Reserved`, whose low byte is `UCHAR Type` in current headers
    /// (0 data, 1 event metadata, 2 provider metadata;
    /// `EVENT_DATA_DESCRIPTOR_TYPE_*`), honoured once the provider set its
    /// traits (`EventProviderSetTraits`).
    pub const RESERVED: u64 = 12;
}
