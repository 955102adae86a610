//! capdma simulated machine: the faithful stand-in for Windows, the PCI bus
//! and the capture boards that capdma's portable driver cores run against
//! on the host.
#![allow(
    clippy::cast_possible_truncation,
    reason = "the simulator runs on 64-bit hosts (asserted in memory.rs); u64/usize casts are lossless and narrower casts are of values already range-checked"
)]

pub mod bench;
pub mod board;
pub mod dma;
pub mod faults;
pub mod image;
pub mod irql;
pub mod ks;
pub mod machine;
pub mod memory;
pub mod nt;
pub mod pattern;
pub mod pnp;
pub mod violations;
pub mod y4m;
