//! x64 layouts (offsets and sizes in bytes) of the dispatcher objects and
//! interrupt-connection structures of wdm.h that the kernel and the images
//! share: `KDPC`, `KTIMER` (with its `DISPATCHER_HEADER`),
//! `IO_CONNECT_INTERRUPT_PARAMETERS` and its three variants,
//! `IO_INTERRUPT_MESSAGE_INFO(_ENTRY)`, `IO_DISCONNECT_INTERRUPT_PARAMETERS`.
//!
//! Every value is the one bindgen asserts for wdk-sys in the Windows build
//! (`types.rs`, "Offset of field: _KDPC::DeferredRoutine", ...); the unit
//! test below compares them with that file when the build has run.

/// `KDPC` (wdm.h).
pub mod kdpc {
    /// `sizeof(KDPC)`.
    pub const SIZE: u64 = 64;
    /// `UCHAR Type` (`DpcObject` = 19 after `KeInitializeDpc`).
    pub const TYPE: u64 = 0;
    /// `UCHAR Importance` (`MediumImportance` = 1 after `KeInitializeDpc`).
    pub const IMPORTANCE: u64 = 1;
    /// `USHORT Number`: the target processor (0 = the current one).
    pub const NUMBER: u64 = 2;
    /// `SINGLE_LIST_ENTRY DpcListEntry`.
    pub const DPC_LIST_ENTRY: u64 = 8;
    /// `PKDEFERRED_ROUTINE DeferredRoutine`.
    pub const DEFERRED_ROUTINE: u64 = 24;
    /// `PVOID DeferredContext`.
    pub const DEFERRED_CONTEXT: u64 = 32;
    /// `PVOID SystemArgument1`.
    pub const SYSTEM_ARGUMENT1: u64 = 40;
    /// `PVOID SystemArgument2`.
    pub const SYSTEM_ARGUMENT2: u64 = 48;
    /// `PVOID DpcData`: non-NULL while the DPC is queued.
    pub const DPC_DATA: u64 = 56;
}

/// `DISPATCHER_HEADER` (wdm.h), the start of every dispatcher object.
pub mod dispatcher_header {
    /// `sizeof(DISPATCHER_HEADER)`.
    pub const SIZE: u64 = 24;
    /// `UCHAR Type` (first byte of the header's union).
    pub const TYPE: u64 = 0;
    /// `LONG SignalState`.
    pub const SIGNAL_STATE: u64 = 4;
    /// `LIST_ENTRY WaitListHead`.
    pub const WAIT_LIST_HEAD: u64 = 8;
}

/// `KTIMER` (wdm.h).
pub mod ktimer {
    /// `sizeof(KTIMER)`.
    pub const SIZE: u64 = 64;
    /// `DISPATCHER_HEADER Header` (`Type`: `TimerNotificationObject` = 8,
    /// `TimerSynchronizationObject` = 9).
    pub const HEADER: u64 = 0;
    /// `ULARGE_INTEGER DueTime`: interrupt time of the next expiry, 100-ns units.
    pub const DUE_TIME: u64 = 24;
    /// `LIST_ENTRY TimerListEntry`.
    pub const TIMER_LIST_ENTRY: u64 = 32;
    /// `PKDPC Dpc`.
    pub const DPC: u64 = 48;
    /// `ULONG Processor`.
    pub const PROCESSOR: u64 = 56;
    /// `ULONG Period`: milliseconds, 0 for a one-shot timer.
    pub const PERIOD: u64 = 60;
}

/// `IO_CONNECT_INTERRUPT_PARAMETERS` (wdm.h).
pub mod io_connect_interrupt_parameters {
    /// `sizeof(IO_CONNECT_INTERRUPT_PARAMETERS)`.
    pub const SIZE: u64 = 80;
    /// `ULONG Version` (`CONNECT_*`; updated on return).
    pub const VERSION: u64 = 0;
    /// The union of the three variants below.
    pub const UNION: u64 = 8;
}

/// `IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS` (wdm.h), offsets within the union.
pub mod fully_specified {
    /// `sizeof`.
    pub const SIZE: u64 = 72;
    /// `PDEVICE_OBJECT PhysicalDeviceObject`.
    pub const PHYSICAL_DEVICE_OBJECT: u64 = 0;
    /// `PKINTERRUPT *InterruptObject`: receives the interrupt object.
    pub const INTERRUPT_OBJECT: u64 = 8;
    /// `PKSERVICE_ROUTINE ServiceRoutine`.
    pub const SERVICE_ROUTINE: u64 = 16;
    /// `PVOID ServiceContext`.
    pub const SERVICE_CONTEXT: u64 = 24;
    /// `PKSPIN_LOCK SpinLock` (optional).
    pub const SPIN_LOCK: u64 = 32;
    /// `KIRQL SynchronizeIrql`.
    pub const SYNCHRONIZE_IRQL: u64 = 40;
    /// `BOOLEAN FloatingSave`.
    pub const FLOATING_SAVE: u64 = 41;
    /// `BOOLEAN ShareVector`.
    pub const SHARE_VECTOR: u64 = 42;
    /// `ULONG Vector`.
    pub const VECTOR: u64 = 44;
    /// `KIRQL Irql`.
    pub const IRQL: u64 = 48;
    /// `KINTERRUPT_MODE InterruptMode` (`LevelSensitive` = 0, `Latched` = 1).
    pub const INTERRUPT_MODE: u64 = 52;
    /// `KAFFINITY ProcessorEnableMask`.
    pub const PROCESSOR_ENABLE_MASK: u64 = 56;
    /// `USHORT Group` (honoured with `CONNECT_FULLY_SPECIFIED_GROUP`).
    pub const GROUP: u64 = 64;
}

/// `IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS` (wdm.h), offsets within the union.
pub mod line_based {
    /// `sizeof`.
    pub const SIZE: u64 = 48;
    /// `PDEVICE_OBJECT PhysicalDeviceObject`.
    pub const PHYSICAL_DEVICE_OBJECT: u64 = 0;
    /// `PKINTERRUPT *InterruptObject`.
    pub const INTERRUPT_OBJECT: u64 = 8;
    /// `PKSERVICE_ROUTINE ServiceRoutine`.
    pub const SERVICE_ROUTINE: u64 = 16;
    /// `PVOID ServiceContext`.
    pub const SERVICE_CONTEXT: u64 = 24;
    /// `PKSPIN_LOCK SpinLock`.
    pub const SPIN_LOCK: u64 = 32;
    /// `KIRQL SynchronizeIrql`.
    pub const SYNCHRONIZE_IRQL: u64 = 40;
    /// `BOOLEAN FloatingSave`.
    pub const FLOATING_SAVE: u64 = 41;
}

/// `IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS` (wdm.h), offsets within the union.
pub mod message_based {
    /// `sizeof`.
    pub const SIZE: u64 = 56;
    /// `PDEVICE_OBJECT PhysicalDeviceObject`.
    pub const PHYSICAL_DEVICE_OBJECT: u64 = 0;
    /// `PVOID *ConnectionContext` (`Generic`): receives the
    /// `PIO_INTERRUPT_MESSAGE_INFO`, or the `PKINTERRUPT` after a fallback.
    pub const CONNECTION_CONTEXT: u64 = 8;
    /// `PKMESSAGE_SERVICE_ROUTINE MessageServiceRoutine`.
    pub const MESSAGE_SERVICE_ROUTINE: u64 = 16;
    /// `PVOID ServiceContext`.
    pub const SERVICE_CONTEXT: u64 = 24;
    /// `PKSPIN_LOCK SpinLock`.
    pub const SPIN_LOCK: u64 = 32;
    /// `KIRQL SynchronizeIrql`.
    pub const SYNCHRONIZE_IRQL: u64 = 40;
    /// `BOOLEAN FloatingSave`.
    pub const FLOATING_SAVE: u64 = 41;
    /// `PKSERVICE_ROUTINE FallBackServiceRoutine`.
    pub const FALL_BACK_SERVICE_ROUTINE: u64 = 48;
}

/// `IO_INTERRUPT_MESSAGE_INFO` (wdm.h).
pub mod io_interrupt_message_info {
    /// `sizeof` (with its one declared entry).
    pub const SIZE: u64 = 56;
    /// `KIRQL UnifiedIrql`.
    pub const UNIFIED_IRQL: u64 = 0;
    /// `ULONG MessageCount`.
    pub const MESSAGE_COUNT: u64 = 4;
    /// `IO_INTERRUPT_MESSAGE_INFO_ENTRY MessageInfo[1]` (variable length).
    pub const MESSAGE_INFO: u64 = 8;
}

/// `IO_INTERRUPT_MESSAGE_INFO_ENTRY` (wdm.h).
pub mod io_interrupt_message_info_entry {
    /// `sizeof`.
    pub const SIZE: u64 = 48;
    /// `PHYSICAL_ADDRESS MessageAddress`.
    pub const MESSAGE_ADDRESS: u64 = 0;
    /// `KAFFINITY TargetProcessorSet`.
    pub const TARGET_PROCESSOR_SET: u64 = 8;
    /// `PKINTERRUPT InterruptObject`.
    pub const INTERRUPT_OBJECT: u64 = 16;
    /// `ULONG MessageData`.
    pub const MESSAGE_DATA: u64 = 24;
    /// `ULONG Vector`.
    pub const VECTOR: u64 = 28;
    /// `KIRQL Irql`.
    pub const IRQL: u64 = 32;
    /// `KINTERRUPT_MODE Mode`.
    pub const MODE: u64 = 36;
    /// `KINTERRUPT_POLARITY Polarity`.
    pub const POLARITY: u64 = 40;
}

/// `IO_DISCONNECT_INTERRUPT_PARAMETERS` (wdm.h).
pub mod io_disconnect_interrupt_parameters {
    /// `sizeof`.
    pub const SIZE: u64 = 16;
    /// `ULONG Version`: what `IoConnectInterruptEx` left in its `Version`.
    pub const VERSION: u64 = 0;
    /// The `PKINTERRUPT` or `PIO_INTERRUPT_MESSAGE_INFO` the connection returned.
    pub const CONNECTION_CONTEXT: u64 = 8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The bindgen layout assertions of the Windows build, whitespace removed.
    fn bindgen_types() -> Option<String> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/windows/cargo/x86_64-pc-windows-msvc/release/build");
        let dir = std::fs::read_dir(&root).ok()?;
        for entry in dir.flatten() {
            let path = entry.path().join("out/types.rs");
            if entry.file_name().to_string_lossy().starts_with("wdk-sys-") && path.exists() {
                let text = std::fs::read_to_string(path).ok()?;
                return Some(text.split_whitespace().collect());
            }
        }
        None
    }

    fn offset(types: &str, ty: &str, field: &str) -> Option<u64> {
        let key = format!("\"Offsetoffield:{ty}::{field}\"");
        let at = types.find(&key)?;
        let rest = &types[at..];
        let minus = rest.find(")-")? + 2;
        let digits: String = rest[minus..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    fn size(types: &str, ty: &str) -> Option<u64> {
        let key = format!("\"Sizeof{ty}\"");
        let at = types.find(&key)?;
        let rest = &types[at..];
        let minus = rest.find(")-")? + 2;
        let digits: String = rest[minus..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    #[test]
    fn layouts_match_the_windows_build() {
        let Some(t) = bindgen_types() else {
            assert!(std::env::var_os("CI").is_none(), "CI builds the images: wdk-sys types.rs must exist");
            eprintln!("skipped: no Windows build (target/windows/cargo/.../wdk-sys-*/out/types.rs); run `cargo xtask windows`");
            return;
        };
        let t = t.as_str();
        let checks: &[(&str, &str, u64)] = &[
            ("_KDPC", "Type", kdpc::TYPE),
            ("_KDPC", "Importance", kdpc::IMPORTANCE),
            ("_KDPC", "Number", kdpc::NUMBER),
            ("_KDPC", "DpcListEntry", kdpc::DPC_LIST_ENTRY),
            ("_KDPC", "DeferredRoutine", kdpc::DEFERRED_ROUTINE),
            ("_KDPC", "DeferredContext", kdpc::DEFERRED_CONTEXT),
            ("_KDPC", "SystemArgument1", kdpc::SYSTEM_ARGUMENT1),
            ("_KDPC", "SystemArgument2", kdpc::SYSTEM_ARGUMENT2),
            ("_KDPC", "DpcData", kdpc::DPC_DATA),
            ("_DISPATCHER_HEADER", "SignalState", dispatcher_header::SIGNAL_STATE),
            ("_DISPATCHER_HEADER", "WaitListHead", dispatcher_header::WAIT_LIST_HEAD),
            ("_KTIMER", "Header", ktimer::HEADER),
            ("_KTIMER", "DueTime", ktimer::DUE_TIME),
            ("_KTIMER", "TimerListEntry", ktimer::TIMER_LIST_ENTRY),
            ("_KTIMER", "Dpc", ktimer::DPC),
            ("_KTIMER", "Processor", ktimer::PROCESSOR),
            ("_KTIMER", "Period", ktimer::PERIOD),
            ("_IO_CONNECT_INTERRUPT_PARAMETERS", "Version", io_connect_interrupt_parameters::VERSION),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "PhysicalDeviceObject", fully_specified::PHYSICAL_DEVICE_OBJECT),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "InterruptObject", fully_specified::INTERRUPT_OBJECT),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "ServiceRoutine", fully_specified::SERVICE_ROUTINE),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "ServiceContext", fully_specified::SERVICE_CONTEXT),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "SpinLock", fully_specified::SPIN_LOCK),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "SynchronizeIrql", fully_specified::SYNCHRONIZE_IRQL),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "FloatingSave", fully_specified::FLOATING_SAVE),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "ShareVector", fully_specified::SHARE_VECTOR),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "Vector", fully_specified::VECTOR),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "Irql", fully_specified::IRQL),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "InterruptMode", fully_specified::INTERRUPT_MODE),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "ProcessorEnableMask", fully_specified::PROCESSOR_ENABLE_MASK),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", "Group", fully_specified::GROUP),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", "PhysicalDeviceObject", line_based::PHYSICAL_DEVICE_OBJECT),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", "InterruptObject", line_based::INTERRUPT_OBJECT),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", "ServiceRoutine", line_based::SERVICE_ROUTINE),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", "ServiceContext", line_based::SERVICE_CONTEXT),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", "SpinLock", line_based::SPIN_LOCK),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", "SynchronizeIrql", line_based::SYNCHRONIZE_IRQL),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", "FloatingSave", line_based::FLOATING_SAVE),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "PhysicalDeviceObject", message_based::PHYSICAL_DEVICE_OBJECT),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "ConnectionContext", message_based::CONNECTION_CONTEXT),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "MessageServiceRoutine", message_based::MESSAGE_SERVICE_ROUTINE),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "ServiceContext", message_based::SERVICE_CONTEXT),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "SpinLock", message_based::SPIN_LOCK),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "SynchronizeIrql", message_based::SYNCHRONIZE_IRQL),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "FloatingSave", message_based::FLOATING_SAVE),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", "FallBackServiceRoutine", message_based::FALL_BACK_SERVICE_ROUTINE),
            ("_IO_INTERRUPT_MESSAGE_INFO", "UnifiedIrql", io_interrupt_message_info::UNIFIED_IRQL),
            ("_IO_INTERRUPT_MESSAGE_INFO", "MessageCount", io_interrupt_message_info::MESSAGE_COUNT),
            ("_IO_INTERRUPT_MESSAGE_INFO", "MessageInfo", io_interrupt_message_info::MESSAGE_INFO),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "MessageAddress", io_interrupt_message_info_entry::MESSAGE_ADDRESS),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "TargetProcessorSet", io_interrupt_message_info_entry::TARGET_PROCESSOR_SET),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "InterruptObject", io_interrupt_message_info_entry::INTERRUPT_OBJECT),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "MessageData", io_interrupt_message_info_entry::MESSAGE_DATA),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "Vector", io_interrupt_message_info_entry::VECTOR),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "Irql", io_interrupt_message_info_entry::IRQL),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "Mode", io_interrupt_message_info_entry::MODE),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", "Polarity", io_interrupt_message_info_entry::POLARITY),
            ("_IO_DISCONNECT_INTERRUPT_PARAMETERS", "Version", io_disconnect_interrupt_parameters::VERSION),
            ("_IO_DISCONNECT_INTERRUPT_PARAMETERS", "ConnectionContext", io_disconnect_interrupt_parameters::CONNECTION_CONTEXT),
        ];
        for (ty, field, ours) in checks {
            assert_eq!(offset(t, ty, field), Some(*ours), "{ty}::{field}");
        }
        let sizes: &[(&str, u64)] = &[
            ("_KDPC", kdpc::SIZE),
            ("_KTIMER", ktimer::SIZE),
            ("_DISPATCHER_HEADER", dispatcher_header::SIZE),
            ("_IO_CONNECT_INTERRUPT_PARAMETERS", io_connect_interrupt_parameters::SIZE),
            ("_IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS", fully_specified::SIZE),
            ("_IO_CONNECT_INTERRUPT_LINE_BASED_PARAMETERS", line_based::SIZE),
            ("_IO_CONNECT_INTERRUPT_MESSAGE_BASED_PARAMETERS", message_based::SIZE),
            ("_IO_INTERRUPT_MESSAGE_INFO", io_interrupt_message_info::SIZE),
            ("_IO_INTERRUPT_MESSAGE_INFO_ENTRY", io_interrupt_message_info_entry::SIZE),
            ("_IO_DISCONNECT_INTERRUPT_PARAMETERS", io_disconnect_interrupt_parameters::SIZE),
        ];
        for (ty, ours) in sizes {
            assert_eq!(size(t, ty), Some(*ours), "sizeof {ty}");
        }
    }
}
