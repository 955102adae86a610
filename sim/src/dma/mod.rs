//! DMA: the simulated DMA adapter (`DMA_ADAPTER` / `DMA_OPERATIONS`) and the
//! IOMMU-style checker every board access goes through.
pub mod adapter;
pub mod iommu;

pub use adapter::{split_mappings, AdapterConfig, AdapterStats, BouncedPage, ScatterGatherList, SgListId, SimDmaAdapter};
pub use iommu::{DmaFault, IommuChecker, LiveRange, RangeId, RangeKind};
