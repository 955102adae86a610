//! The driver images in the simulated machine: what the host side needs to
//! use an image running in the emulated kernel (`crate::nt`) as the cores
//! are used today.
//!
//! * [`active`]: which machine and kernel host code enters the guest through.
//! * [`interface`]: the bus image's query interface as a host table of thunks.

pub mod active;
pub mod interface;
