//! `capdma_bus.sys`: the PCI function/bus driver of a capdma capture card.
//!
//! The portable core (everything but `wdm/`) never calls the OS: it works
//! through the port traits of [`ports`], implemented by the WDM glue on
//! Windows and by `capdma-sim` on the host. The core does not allocate at
//! all (no `alloc`), so nothing on its ISR or DPC paths can: every table is
//! a fixed-size array ([`MAX_CHANNELS`] channels, [`MAX_INFLIGHT_FRAMES`]
//! frames in flight and [`MAX_SLOTS`] slots per channel).
//!
//! | concern | module |
//! |---|---|
//! | registry parameters | [`config`] |
//! | DMA mode selection, and the engine it picks per channel | [`mode`] |
//! | Plug and Play start/stop/removal, the adapter, the channels | [`device`] |
//! | common buffers: the allocation policy (alignment, reachability), entry access | `dma_buffer` |
//! | per-channel engine, the strategy of the mode (`channel::engine::Engine`): S/G engine and its descriptor writer ([`SgEngine`]), slot engine; completion queue, formats | `channel` |
//! | ISR | `isr` ([`BusDevice::isr`]) |
//! | DPC and delivery to children | `dpc` ([`BusDevice::dpc`]) |
//! | engine watchdog | [`watchdog`] |
//! | device power: the policy (S-state → D-state), leaving and re-entering D0 | [`power`] ([`BusDevice::power_down`], [`BusDevice::power_up`]) |
//! | the FDO's teardown order (engines, interrupt, timer and DPCs, buffers, adapter, BAR0) | [`teardown`] ([`BusDevice::release_hardware`]) |
//! | the query interface's methods | `interface_impl` ([`BusDevice::query_interface`]) |
//! | its `extern "system"` thunks and table | `interface_impl::thunks` |
//! | Plug and Play decisions of the glue (child IDs, interface routing, resources, Plug and Play states) | [`pnp`] |
//! | the WDM glue (`capdma_bus.sys`, Windows targets only) | `wdm` |
//!
//! Entry points by IRQL:
//!
//! * `PASSIVE_LEVEL`: [`BusDevice::start`], [`BusDevice::stop_engines`],
//!   [`BusDevice::stop`], [`BusDevice::surprise_remove`],
//!   [`BusDevice::release_hardware`],
//!   [`BusDevice::query_interface`], `StartChannel`, `StopChannel`;
//! * `DISPATCH_LEVEL`: [`BusDevice::dpc`], [`BusDevice::watchdog`],
//!   [`BusDevice::power_down`], [`BusDevice::power_up`], the other
//!   interface functions (also callable at `PASSIVE_LEVEL`);
//! * device IRQL: [`BusDevice::isr`] only.
//!
//! The core's spin locks (one per channel, plus two short leaf locks) are
//! only ever held at `DISPATCH_LEVEL`, raised through
//! [`ports::BusPlatform::raise_to_dispatch`] when entered below it, and are
//! never held while a child is called back.
#![cfg_attr(not(test), no_std)]

mod channel;
pub mod config;
pub mod device;
mod dma_buffer;
mod dpc;
mod hw;
mod interface_impl;
mod isr;
pub mod mode;
pub mod pnp;
pub mod ports;
pub mod power;
pub mod teardown;
pub mod watchdog;
#[cfg(target_os = "windows")]
mod wdm;

#[cfg(test)]
mod tests;

pub use channel::format::{slot_line_pitch, ChannelGeometry, SLOT_LINE_ALIGNMENT};
pub use channel::sg::{SgEngine, MAX_INFLIGHT_FRAMES};
pub use channel::slots::MAX_SLOTS;
pub use channel::{ChannelStats, RecordFault};
pub use config::{ConfigError, DmaModeOverride, RegistryValues, StartConfig};
pub use device::{BusDevice, DeviceState, MAX_CHANNELS};
pub use interface_impl::SERVED_VERSION;
pub use mode::ModeDecision;
pub use teardown::TeardownPort;
