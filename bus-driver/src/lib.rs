//! `capdma_bus.sys`: the PCI function/bus driver of a capdma capture card.
//!
//! The portable core (everything but `wdm/`) never calls the OS: it works
//! through the port traits of [`ports`], implemented by the WDM glue on
//! Windows and by `capdma-sim` on the host. The core does not allocate at
//! all (no `alloc`), so nothing on its ISR or DPC paths can.
#![cfg_attr(not(test), no_std)]

pub mod ports;
