//! ETW `TraceLogging` of `capdma_avstream.sys`: the provider
//! `Capdma.AVStream`, its keywords and levels, and one function per event
//! (docs/tracing.md lists them all, with how to capture them).
//!
//! Written with the `tracelogging` crate (feature `kernel_mode`:
//! `EtwRegister`, `EtwSetInformation`, `EtwWriteTransfer`,
//! `EtwUnregister`). Each event first checks whether a session listens at
//! its level and keyword (`write_event!` does, before it touches its
//! arguments), so the per-frame events cost one load and compare when
//! nobody asked for them. Nothing here allocates (the data descriptors are
//! on the stack): every function may be called at any IRQL up to
//! `DISPATCH_LEVEL`, `EtwWriteTransfer`'s limit.
use crate::ports::PinEvent;
use capdma_interface::format::PixelFormat;
use tracelogging as tlg;
use wdk_sys::NTSTATUS;

// The provider: its GUID is derived from the name as every `TraceLogging`
// tool derives it (`tlg::Guid::from_name`, the EventSource hash):
// `Capdma.AVStream` = {64957db3-5f33-54d1-22b1-1473e7afc2b6}.
tlg::define_provider!(PROVIDER, "Capdma.AVStream");

/// The provider's keywords (event categories), one bit each, the same bits
/// as `Capdma.Bus`'s where both have the category.
pub mod keyword {
    /// Driver load and unload.
    pub const DRIVER: u64 = 0x1;
    /// Plug and Play: device start, stop, removal; pin creation.
    pub const PNP: u64 = 0x2;
    /// DMA: the mode the bus chose for the channel and why.
    pub const DMA: u64 = 0x8;
    /// Streaming: channel start (with the format) and stop.
    pub const STREAMING: u64 = 0x10;
    /// Per-frame events: every delivered frame, every dropped one.
    pub const FRAME: u64 = 0x20;
}

/// The area a failure belongs to (its event's keyword).
#[derive(Clone, Copy, Debug)]
pub enum Area {
    /// [`keyword::DRIVER`].
    Driver,
    /// [`keyword::PNP`].
    Pnp,
    /// [`keyword::STREAMING`].
    Streaming,
}

/// `EtwRegister`s the provider (`PASSIVE_LEVEL`, from `DriverEntry`).
/// Returns the `EtwRegister` status (0 = `STATUS_SUCCESS`); a failure is
/// not fatal to the driver, it only means no events.
pub fn register() -> u32 {
    // SAFETY: `PROVIDER` is a static (never moved) and `unregister` runs in
    // the driver's unload routine and when `DriverEntry` fails after this,
    // so the registration never outlives the image.
    unsafe { PROVIDER.register() }
}

/// `EtwUnregister`s the provider (`PASSIVE_LEVEL`); does nothing when it
/// is not registered.
pub fn unregister() {
    let _ = PROVIDER.unregister();
}

/// `DriverLoad` (Informational, [`keyword::DRIVER`]): the image's version.
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
/// channel's device started; the DMA mode the bus chose and why.
pub fn device_start(channel: u32, mode: &str, reason: &str) {
    tlg::write_event!(
        PROVIDER,
        "DeviceStart",
        level(Informational),
        keyword(keyword::PNP | keyword::DMA),
        u32("Channel", &channel),
        str8("Mode", mode),
        str8("Reason", reason),
    );
}

/// `DeviceStop` (Informational, [`keyword::PNP`]): no new pins; `why` names the callback.
pub fn device_stop(why: &str) {
    tlg::write_event!(PROVIDER, "DeviceStop", level(Informational), keyword(keyword::PNP), str8("Why", why));
}

/// `SurpriseRemoval` (Warning, [`keyword::PNP`]): the channel's device is gone.
pub fn surprise_removal() {
    tlg::write_event!(PROVIDER, "SurpriseRemoval", level(Warning), keyword(keyword::PNP));
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
        Area::Driver => failure_event!(keyword::DRIVER),
        Area::Pnp => failure_event!(keyword::PNP),
        Area::Streaming => failure_event!(keyword::STREAMING),
    };
}

/// The pin core's report ([`crate::ports::KsPinPort::report`]) for channel
/// `channel`, as an event: `ChannelStart` (Informational,
/// [`keyword::STREAMING`]; the format), `ChannelStop` (Informational,
/// [`keyword::STREAMING`]), a `Failure` (Error, [`keyword::STREAMING`]),
/// `FrameDelivered` (Verbose, [`keyword::FRAME`]), `DroppedByDriver` and
/// `DroppedByBoard` (Warning, [`keyword::FRAME`]). Any IRQL up to
/// `DISPATCH_LEVEL`.
pub fn pin_event(channel: u32, event: PinEvent) {
    match event {
        PinEvent::ChannelStarted { format } => {
            let pixel = PixelFormat::from_fourcc(format.fourcc).map_or("unknown", PixelFormat::name);
            tlg::write_event!(
                PROVIDER,
                "ChannelStart",
                level(Informational),
                keyword(keyword::STREAMING),
                u32("Channel", &channel),
                str8("Format", pixel),
                u32("Width", &format.width),
                u32("Height", &format.height),
                u32("Stride", &format.stride),
                u32("FrameInterval100ns", &format.frame_interval),
            );
        }
        PinEvent::ChannelStartFailed { status } => failure(Area::Streaming, "StartChannel", status),
        PinEvent::ChannelStopped => {
            tlg::write_event!(PROVIDER, "ChannelStop", level(Informational), keyword(keyword::STREAMING), u32("Channel", &channel));
        }
        PinEvent::FrameDelivered { picture_number, bytes } => {
            tlg::write_event!(
                PROVIDER,
                "FrameDelivered",
                level(Verbose),
                keyword(keyword::FRAME),
                u32("Channel", &channel),
                u32("PictureNumber", &picture_number),
                u32("Bytes", &bytes),
            );
        }
        PinEvent::DroppedByDriver { total } => {
            tlg::write_event!(
                PROVIDER,
                "DroppedByDriver",
                level(Warning),
                keyword(keyword::FRAME),
                u32("Channel", &channel),
                u64("Total", &total),
            );
        }
        PinEvent::DroppedByBoard { frames } => {
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
