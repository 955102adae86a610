//! The contract between `capdma_bus.sys` and `capdma_avstream.sys`.
//!
//! * [`guid`]: `GUID_CAPDMA_BUS_INTERFACE`, the interface type a child asks
//!   for with `IRP_MN_QUERY_INTERFACE`.
//! * [`table`]: the `#[repr(C)]` interface table (a WDM `INTERFACE` header
//!   followed by `extern "system"` function pointers) and the structures its
//!   functions exchange.
//! * [`negotiate`]: Size/Version negotiation of a query.
//! * [`status`]: the NTSTATUS values the contract returns.
//! * [`mode`]: the DMA mode chosen at start and why.
//! * [`regs`] and [`descriptor`]: the board's BAR0 register map and the
//!   in-memory formats the board reads and writes (S/G descriptors,
//!   completion records), as zerocopy types with asserted offsets.
//! * [`format`]: pixel formats the board produces (YUY2, NV12).
//! * [`kernel`]: the Windows constants the contract relies on: `PAGE_SIZE`,
//!   `KIRQL` and its levels.
//!
//! `include/capdma_interface.h` is the same contract for C consumers; a
//! layout test keeps the two in step.
#![no_std]

pub mod descriptor;
pub mod format;
pub mod guid;
pub mod identity;
pub mod kernel;
pub mod mode;
pub mod negotiate;
pub mod regs;
pub mod status;
pub mod table;

pub use guid::{Guid, GUID_CAPDMA_BUS_INTERFACE};
pub use mode::{DmaMode, ModeReason};
pub use status::NtStatus;
