//! `capdma_avstream.sys`: the AVStream capture minidriver of a capdma channel.
//!
//! The portable core (everything but `ks/`) works through the port traits
//! of [`ports`] and reaches the bus only through the query-interface table of
//! `capdma-interface`. It does not allocate (no `alloc`).
#![cfg_attr(not(test), no_std)]

pub mod bus_client;
pub mod clones;
pub mod copy;
pub mod device;
pub mod fifo;
pub mod format;
pub mod ks_format;
pub mod ports;
pub mod state;
pub mod stats;

#[cfg(test)]
mod test_support;
