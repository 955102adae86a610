//! The simulated machine put together: a capdma card in a PC running the
//! bus driver and one AVStream child per channel, with an application
//! capturing from each, in virtual time.
//!
//! One concern per file, in the order of a machine's life:
//! - `config.rs`: what to build and run ([`MachineConfig`]) and its checks.
//! - `platform.rs`: the bus driver's view of the machine (`SimBusPlatform`,
//!   the bus core's `BusPlatform` port).
//! - `build.rs`: [`Machine`] and its parts (cards, child stacks, channels,
//!   [`ChannelLog`]), [`Machine::new`], and the `Drop` that tears down a
//!   machine still running.
//! - `accessors.rs`: what the machine shows of itself (boards, bus drivers,
//!   device objects, memory, statuses, channel logs, virtual time).
//! - `start.rs`: [`Machine::start`]: the buses started and their children
//!   enumerated, each child's AVStream side started through its stack, the
//!   pins walked to `KSSTATE_RUN` (a child failing half-way abandoned).
//! - `events.rs`: the clock, events ordered in virtual time.
//! - `run.rs`: the event loop ([`Machine::run`]) and the device's events
//!   (captures, the shared interrupt line and its ISRs, DPCs, the watchdog),
//!   the `PASSIVE_LEVEL` work after each event; [`RunError`], [`RunHooks`]
//!   and [`run()`], the whole job.
//! - `app.rs`: the application: frames received, verified and queued again;
//!   its pins closed and buffers freed at the end.
//! - `actions.rs`: what can be scheduled at a virtual time ([`Action`],
//!   [`Machine::schedule`]) and the machine carrying it out; the statuses
//!   seen ([`StatusRecord`]).
//! - `removal.rs`: Plug and Play removal (surprise and orderly), the bus
//!   FDO's release, and [`Machine::teardown`] with the leak checks.
//! - `image.rs`: the bus driver as the real image in the emulated kernel
//!   (`--drivers bus-image`): booting it, its cards' bus stacks, their
//!   start, removal and unload, and its report.
//! - `teardown.rs`: the glue steps of a bus FDO's teardown, driven by the
//!   bus core and checked ([`TeardownStep`]).
//! - `report.rs`: the account of a run ([`RunReport`], [`Machine::report`]).
mod accessors;
pub mod actions;
mod app;
pub mod build;
pub mod config;
pub mod events;
pub mod image;
mod image_pins;
pub mod platform;
mod removal;
pub mod report;
pub mod run;
mod start;
pub mod teardown;

pub use actions::{surprise_removal_actions, Action, StatusRecord};
pub use build::{ChannelLog, Machine};
pub use config::{ConfigError, Drivers, MachineConfig};
pub use image::ImageReport;
pub use report::{ChannelReport, RunReport, TraceEvent, TraceField};
pub use run::{run, RunError, RunHooks};
pub use teardown::TeardownStep;
