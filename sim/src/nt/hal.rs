//! Hardware access: the DMA adapter (IoGetDmaAdapter and its DMA_OPERATIONS), I/O space (MmMapIoSpaceEx) routed to the board model as MMIO, and the physical memory map.

use super::Ddi;

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[];

/// This area's state in the emulated kernel.
#[derive(Debug, Default)]
pub struct HalState {}
