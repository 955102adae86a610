//! `capdma_avstream.sys`: the AVStream capture minidriver of a capdma channel.
//!
//! The portable core (everything but `ks/`) works through the port traits
//! of [`ports`] and reaches the bus only through the query-interface table of
//! `capdma-interface`. It does not allocate (no `alloc`).
//!
//! * [`ks_format`]: KS format structures (zerocopy, asserted layouts), GUIDs, flags.
//! * [`format`]: data-format validation, data ranges, intersection.
//! * [`bus_client`]: the checked bus interface table and safe calls through it.
//! * [`device`]: device start (mode, adapter registration, pin flags, framing).
//! * [`state`]: `KSSTATE` and one-step transitions.
//! * [`pin`]: the capture pin (format, states, Process, completion), the
//!   same in both DMA modes.
//! * `engine`: the pin's DMA engine, chosen once from the channel's mode;
//!   [`process_sg`], [`process_cb`]: each mode's device start, format fit,
//!   start/stop, Process and completion.
//! * [`clones`], [`fifo`]: the fixed-size frame/slot bookkeeping.
//! * [`stats`]: frame counters and `KSPROPERTY_DROPPEDFRAMES_CURRENT`.
//! * [`copy`]: the slot -> frame copy.
//! * `ks` (Windows targets only): the KS glue of `capdma_avstream.sys` —
//!   its own `ks.h` bindings, `DriverEntry`, the device, filter and pin
//!   dispatch, and the [`ports::KsPinPort`] over `PKSSTREAM_POINTER`.
#![cfg_attr(not(test), no_std)]

pub mod bus_client;
pub mod clones;
pub mod copy;
pub mod device;
mod engine;
pub mod fifo;
pub mod format;
pub mod ks_format;
pub mod pin;
pub mod ports;
pub mod process_cb;
pub mod process_sg;
pub mod state;
pub mod stats;

#[cfg(target_os = "windows")]
mod ks;
#[cfg(test)]
mod tests;

pub use bus_client::{BusChannel, BusClient};
pub use device::{device_start, DeviceSetup};
pub use format::{build_data_format, validate_data_format, VideoFormat};
pub use pin::CapturePin;
pub use state::KsState;
