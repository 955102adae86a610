//! ETW `TraceLogging` of `capdma_bus.sys`: the provider `Capdma.Bus`, its
//! keywords and levels, and one function per event (docs/tracing.md lists
//! them all, with how to capture them).
//!
//! Written with the `tracelogging` crate (feature `kernel_mode`: the
//! provider registers with `EtwRegister`, sets its traits with
//! `EtwSetInformation` and writes with `EtwWriteTransfer`). Each event
//! first checks whether a session listens at its level and keyword
//! (`write_event!` does, before it touches its arguments), so an event
//! nobody asked for costs one load and compare. Nothing here allocates
//! (the data descriptors are on the stack): every function may be called
//! at any IRQL up to `DISPATCH_LEVEL`, `EtwWriteTransfer`'s limit.
use crate::ports::{CoreEvent, ResetCause};
use tracelogging as tlg;
use wdk_sys::NTSTATUS;

// The provider: its GUID is derived from the name as every `TraceLogging`
// tool derives it (`tlg::Guid::from_name`, the EventSource hash), so
// `wpr`/`tracelog` can name it either way:
// `Capdma.Bus` = {5f28a29c-c847-512c-0ce0-1679b3de36f7}.
tlg::define_provider!(PROVIDER, "Capdma.Bus");

/// The provider's keywords (event categories), one bit each; a session
/// asks for any combination (`tracelog -flag`, `wpr` profile `Keywords`).
pub mod keyword {
    /// Driver load and unload.
    pub const DRIVER: u64 = 0x1;
    /// Plug and Play: device start and stop, children, removal.
    pub const PNP: u64 = 0x2;
    /// Power transitions.
    pub const POWER: u64 = 0x4;
    /// DMA: the mode decision, engine resets, refused board values, the watchdog.
    pub const DMA: u64 = 0x8;
    // 0x10 is `Capdma.AVStream`'s STREAMING; the bus has no streaming event.
    /// Per-frame events: frames dropped.
    pub const FRAME: u64 = 0x20;
}

/// The area a failure belongs to (its event's keyword).
#[derive(Clone, Copy, Debug)]
pub enum Area {
    /// [`keyword::PNP`].
    Pnp,
    /// [`keyword::POWER`].
    Power,
    /// [`keyword::DMA`].
    Dma,
}

/// `EtwRegister`s the provider (`PASSIVE_LEVEL`, from `DriverEntry`).
/// Returns the `EtwRegister` status (0 = `STATUS_SUCCESS`); a failure is
/// not fatal to the driver, it only means no events.
pub fn register() -> u32 {
    // SAFETY: `PROVIDER` is a static (never moved) and `unregister` runs in
    // `DriverUnload` and on every failure of `DriverEntry` after this, so
    // the registration never outlives the image.
    unsafe { PROVIDER.register() }
}

/// `EtwUnregister`s the provider (`PASSIVE_LEVEL`); does nothing when it
/// is not registered.
pub fn unregister() {
    let _ = PROVIDER.unregister();
}

/// `DriverLoad` (Informational, [`keyword::DRIVER`]): `DriverEntry` ran; the image's version.
pub fn driver_load() {
    tlg::write_event!(
        PROVIDER,
        "DriverLoad",
        level(Informational),
        keyword(keyword::DRIVER),
        str8("Version", env!("CARGO_PKG_VERSION")),
    );
}

/// `DriverUnload` (Informational, [`keyword::DRIVER`]).
pub fn driver_unload() {
    tlg::write_event!(PROVIDER, "DriverUnload", level(Informational), keyword(keyword::DRIVER));
}

/// `DeviceStart` (Informational, [`keyword::PNP`] | [`keyword::DMA`]): the
/// device started; its DMA mode and why, its channels and the map
/// registers the adapter granted.
pub fn device_start(mode: &str, reason: &str, channels: u32, map_registers: u32) {
    tlg::write_event!(
        PROVIDER,
        "DeviceStart",
        level(Informational),
        keyword(keyword::PNP | keyword::DMA),
        str8("Mode", mode),
        str8("Reason", reason),
        u32("Channels", &channels),
        u32("MapRegisters", &map_registers),
    );
}

/// `DeviceStop` (Informational, [`keyword::PNP`]): the hardware was
/// released (stop, removal or a failed start); `why` names the minor.
pub fn device_stop(why: &str) {
    tlg::write_event!(PROVIDER, "DeviceStop", level(Informational), keyword(keyword::PNP), str8("Why", why));
}

/// `ChildrenEnumerated` (Informational, [`keyword::PNP`]): the child PDOs
/// after a start: `present` of the board's `channels`, `created` now,
/// `missing` reported gone.
pub fn children_enumerated(channels: u32, created: u32, missing: u32) {
    tlg::write_event!(
        PROVIDER,
        "ChildrenEnumerated",
        level(Informational),
        keyword(keyword::PNP),
        u32("Channels", &channels),
        u32("Created", &created),
        u32("Missing", &missing),
    );
}

/// `SurpriseRemoval` (Warning, [`keyword::PNP`]): the board is gone.
pub fn surprise_removal() {
    tlg::write_event!(PROVIDER, "SurpriseRemoval", level(Warning), keyword(keyword::PNP));
}

/// `PowerTransition` (Informational, [`keyword::POWER`]): `kind` is
/// `"system"` (a set-power IRP to `SYSTEM_POWER_STATE` `to`: `S0`..`S5` are
/// 1..6) or `"device"` (the device reached or is leaving to
/// `DEVICE_POWER_STATE` `to`: `D0`..`D3` are 1..4); `channels` running
/// channels were quiesced (leaving D0) or restarted (back in D0).
pub fn power_transition(kind: &str, to: i32, channels: u32) {
    tlg::write_event!(
        PROVIDER,
        "PowerTransition",
        level(Informational),
        keyword(keyword::POWER),
        str8("Kind", kind),
        i32("To", &to),
        u32("Channels", &channels),
    );
}

/// `WatchdogFired` (Warning, [`keyword::DMA`]): the watchdog DPC reset `channels` channels.
pub fn watchdog_fired(channels: u32) {
    tlg::write_event!(PROVIDER, "WatchdogFired", level(Warning), keyword(keyword::DMA), u32("Channels", &channels));
}

/// `Failure` (Error, the area's keyword): `operation` failed with
/// `status`, and the driver returns that error NTSTATUS.
pub fn failure(area: Area, operation: &str, status: NTSTATUS) {
    macro_rules! failure_event {
        ($keyword:expr) => {
            tlg::write_event!(
                PROVIDER,
                "Failure",
                level(Error),
                keyword($keyword),
                str8("Operation", operation),
                win_ntstatus("Status", &status),
            )
        };
    }
    match area {
        Area::Pnp => failure_event!(keyword::PNP),
        Area::Power => failure_event!(keyword::POWER),
        Area::Dma => failure_event!(keyword::DMA),
    };
}

/// `STATUS_NOT_SUPPORTED`: the answer to a PnP minor a driver does not handle.
const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32.cast_signed();

/// `IrpFailed` (Error, [`keyword::PNP`] or [`keyword::POWER`]): the
/// `IRP_MJ_PNP` (`power` false) or `IRP_MJ_POWER` dispatch of `device`
/// (`"FDO"`, `"PDO"`) for minor function `minor` returned the error
/// `status` (its own, or the lower drivers'). `STATUS_NOT_SUPPORTED`, the
/// answer to a minor nobody handles, is not an error here.
pub fn irp_failed(power: bool, minor: u8, device: &str, status: NTSTATUS) {
    if status >= 0 || status == STATUS_NOT_SUPPORTED {
        return;
    }
    if power {
        let irp = match minor {
            0 => "IRP_MN_WAIT_WAKE",
            1 => "IRP_MN_POWER_SEQUENCE",
            2 => "IRP_MN_SET_POWER",
            3 => "IRP_MN_QUERY_POWER",
            _ => "IRP_MJ_POWER",
        };
        tlg::write_event!(
            PROVIDER,
            "IrpFailed",
            level(Error),
            keyword(keyword::POWER),
            str8("Irp", irp),
            str8("Device", device),
            win_ntstatus("Status", &status),
        );
    } else {
        let irp = pnp_minor_name(minor);
        tlg::write_event!(
            PROVIDER,
            "IrpFailed",
            level(Error),
            keyword(keyword::PNP),
            str8("Irp", irp),
            str8("Device", device),
            win_ntstatus("Status", &status),
        );
    }
}

/// The name of an `IRP_MJ_PNP` minor function (wdm.h).
const fn pnp_minor_name(minor: u8) -> &'static str {
    match minor {
        0x00 => "IRP_MN_START_DEVICE",
        0x01 => "IRP_MN_QUERY_REMOVE_DEVICE",
        0x02 => "IRP_MN_REMOVE_DEVICE",
        0x03 => "IRP_MN_CANCEL_REMOVE_DEVICE",
        0x04 => "IRP_MN_STOP_DEVICE",
        0x05 => "IRP_MN_QUERY_STOP_DEVICE",
        0x06 => "IRP_MN_CANCEL_STOP_DEVICE",
        0x07 => "IRP_MN_QUERY_DEVICE_RELATIONS",
        0x08 => "IRP_MN_QUERY_INTERFACE",
        0x09 => "IRP_MN_QUERY_CAPABILITIES",
        0x0A => "IRP_MN_QUERY_RESOURCES",
        0x0B => "IRP_MN_QUERY_RESOURCE_REQUIREMENTS",
        0x0C => "IRP_MN_QUERY_DEVICE_TEXT",
        0x0D => "IRP_MN_FILTER_RESOURCE_REQUIREMENTS",
        0x0F => "IRP_MN_READ_CONFIG",
        0x10 => "IRP_MN_WRITE_CONFIG",
        0x11 => "IRP_MN_EJECT",
        0x12 => "IRP_MN_SET_LOCK",
        0x13 => "IRP_MN_QUERY_ID",
        0x14 => "IRP_MN_QUERY_PNP_DEVICE_STATE",
        0x15 => "IRP_MN_QUERY_BUS_INFORMATION",
        0x16 => "IRP_MN_DEVICE_USAGE_NOTIFICATION",
        0x17 => "IRP_MN_SURPRISE_REMOVAL",
        0x19 => "IRP_MN_DEVICE_ENUMERATED",
        _ => "IRP_MJ_PNP",
    }
}

/// What the core reported ([`crate::ports::RegisterPort::report`]), as an
/// event: `ValueRefused` (Error, [`keyword::DMA`]), `EngineReset` and
/// `WatchdogReset` (Warning, [`keyword::DMA`]), `DroppedByBoard` (Warning,
/// [`keyword::FRAME`]). Any IRQL up to `DISPATCH_LEVEL`.
pub fn core_event(event: CoreEvent) {
    match event {
        CoreEvent::ValueRefused { channel, fault } => {
            let what = fault_name(fault);
            tlg::write_event!(
                PROVIDER,
                "ValueRefused",
                level(Error),
                keyword(keyword::DMA),
                u32("Channel", &channel),
                str8("Fault", what),
            );
        }
        CoreEvent::EngineReset { channel, cause: ResetCause::Watchdog } => {
            tlg::write_event!(PROVIDER, "WatchdogReset", level(Warning), keyword(keyword::DMA), u32("Channel", &channel));
        }
        CoreEvent::EngineReset { channel, cause } => {
            let cause = cause.name();
            tlg::write_event!(
                PROVIDER,
                "EngineReset",
                level(Warning),
                keyword(keyword::DMA),
                u32("Channel", &channel),
                str8("Cause", cause),
            );
        }
        CoreEvent::DroppedByBoard { channel, frames } => {
            tlg::write_event!(
                PROVIDER,
                "DroppedByBoard",
                level(Warning),
                keyword(keyword::FRAME),
                u32("Channel", &channel),
                u32("Frames", &frames),
            );
        }
    }
}

/// The trace name of a refused record's fault.
const fn fault_name(fault: crate::channel::RecordFault) -> &'static str {
    use crate::channel::RecordFault;
    match fault {
        RecordFault::CqOverrun => "cq-overrun",
        RecordFault::IndexOutOfRange => "index-out-of-range",
        RecordFault::Unexpected => "unexpected-index",
        RecordFault::TagMismatch => "tag-mismatch",
        RecordFault::ByteCountTooLarge => "byte-count-too-large",
        RecordFault::BadStatus => "bad-status",
    }
}
