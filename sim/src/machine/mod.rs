//! The simulated machine put together: a capdma card in a PC running the
//! bus driver and one AVStream child per channel, with an application
//! capturing from each, in virtual time.
pub mod actions;
pub mod config;
pub mod events;
pub mod platform;
pub mod report;
pub mod run;
pub mod teardown;

pub use actions::{Action, StatusRecord};
pub use config::{ConfigError, MachineConfig};
pub use report::{ChannelReport, RunReport};
pub use teardown::TeardownStep;
pub use run::{run, surprise_removal_actions, ChannelLog, Machine, RunError, RunHooks};
