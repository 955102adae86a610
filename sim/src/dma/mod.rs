//! DMA: the simulated DMA adapter (`DMA_ADAPTER` / `DMA_OPERATIONS`), the
//! IOMMU-style checker every board access goes through, and the per-device
//! DMA-remapping domains that make logical addresses differ from physical ones.
pub mod adapter;
pub mod domain;
pub mod iommu;

pub use adapter::{split_mappings, AdapterConfig, AdapterStats, BouncedPage, ScatterGatherList, SgListId, SimDmaAdapter};
pub use domain::DmaDomain;
pub use iommu::{DmaFault, IommuChecker, LiveRange, RangeId, RangeKind};
