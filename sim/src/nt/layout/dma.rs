//! The x64 layouts of the DMA and I/O-space structures (wdm.h), with the
//! constants the HAL's DDIs read. Offsets and sizes in bytes, as the
//! bindgen layout assertions of wdk-sys (the headers the images are built
//! against) give them; `tests` below compares them with those assertions
//! when the Windows build has run.

/// `DMA_ADAPTER` (wdm.h).
pub mod dma_adapter {
    /// `sizeof(DMA_ADAPTER)`.
    pub const SIZE: u64 = 16;
    /// `USHORT Version` (`IoGetDmaAdapter` always returns 1).
    pub const VERSION: u64 = 0;
    /// `USHORT Size`.
    pub const SIZE_FIELD: u64 = 2;
    /// `PDMA_OPERATIONS DmaOperations`.
    pub const DMA_OPERATIONS: u64 = 8;
}

/// `DMA_OPERATIONS` (wdm.h) as the images' headers define it: `ULONG Size`
/// then fifteen routine pointers.
pub mod dma_operations {
    /// `sizeof(DMA_OPERATIONS)`.
    pub const SIZE: u64 = 128;
    /// `ULONG Size`.
    pub const SIZE_FIELD: u64 = 0;
    /// The routines, in table order, with their offsets.
    pub const ENTRIES: [(&str, u64); 15] = [
        ("PutDmaAdapter", PUT_DMA_ADAPTER),
        ("AllocateCommonBuffer", ALLOCATE_COMMON_BUFFER),
        ("FreeCommonBuffer", FREE_COMMON_BUFFER),
        ("AllocateAdapterChannel", 32),
        ("FlushAdapterBuffers", 40),
        ("FreeAdapterChannel", 48),
        ("FreeMapRegisters", 56),
        ("MapTransfer", 64),
        ("GetDmaAlignment", 72),
        ("ReadDmaCounter", 80),
        ("GetScatterGatherList", 88),
        ("PutScatterGatherList", 96),
        ("CalculateScatterGatherList", 104),
        ("BuildScatterGatherList", 112),
        ("BuildMdlFromScatterGatherList", 120),
    ];
    /// `PPUT_DMA_ADAPTER PutDmaAdapter`.
    pub const PUT_DMA_ADAPTER: u64 = 8;
    /// `PALLOCATE_COMMON_BUFFER AllocateCommonBuffer`.
    pub const ALLOCATE_COMMON_BUFFER: u64 = 16;
    /// `PFREE_COMMON_BUFFER FreeCommonBuffer`.
    pub const FREE_COMMON_BUFFER: u64 = 24;
}

/// `DEVICE_DESCRIPTION` (wdm.h).
pub mod device_description {
    /// `sizeof(DEVICE_DESCRIPTION)`.
    pub const SIZE: u64 = 40;
    /// `ULONG Version` (`DEVICE_DESCRIPTION_VERSION*`).
    pub const VERSION: u64 = 0;
    /// `BOOLEAN Master`: a bus-master device.
    pub const MASTER: u64 = 4;
    /// `BOOLEAN ScatterGather`.
    pub const SCATTER_GATHER: u64 = 5;
    /// `BOOLEAN Dma32BitAddresses`.
    pub const DMA32_BIT_ADDRESSES: u64 = 8;
    /// `BOOLEAN Dma64BitAddresses`.
    pub const DMA64_BIT_ADDRESSES: u64 = 11;
    /// `ULONG BusNumber`.
    pub const BUS_NUMBER: u64 = 12;
    /// `INTERFACE_TYPE InterfaceType`.
    pub const INTERFACE_TYPE: u64 = 20;
    /// `DMA_WIDTH DmaWidth`.
    pub const DMA_WIDTH: u64 = 24;
    /// `ULONG MaximumLength`: bytes of the largest transfer.
    pub const MAXIMUM_LENGTH: u64 = 32;
}

/// `PHYSICAL_MEMORY_RANGE` (ntddk.h).
pub mod physical_memory_range {
    /// `sizeof(PHYSICAL_MEMORY_RANGE)`.
    pub const SIZE: u64 = 16;
    /// `PHYSICAL_ADDRESS BaseAddress`.
    pub const BASE_ADDRESS: u64 = 0;
    /// `LARGE_INTEGER NumberOfBytes`.
    pub const NUMBER_OF_BYTES: u64 = 8;
}

/// `DEVICE_DESCRIPTION_VERSION` (wdm.h).
pub const DEVICE_DESCRIPTION_VERSION: u32 = 0;
/// `DEVICE_DESCRIPTION_VERSION1`.
pub const DEVICE_DESCRIPTION_VERSION1: u32 = 1;
/// `DEVICE_DESCRIPTION_VERSION2`.
pub const DEVICE_DESCRIPTION_VERSION2: u32 = 2;
/// `PCIBus` (`INTERFACE_TYPE`).
pub const PCI_BUS: u32 = 5;
/// `Width32Bits` (`DMA_WIDTH`).
pub const WIDTH_32_BITS: u32 = 2;

/// `PAGE_READONLY` (wdm.h page protections, as `MmMapIoSpaceEx` takes them).
pub const PAGE_READONLY: u32 = 0x2;
/// `PAGE_READWRITE`.
pub const PAGE_READWRITE: u32 = 0x4;
/// `PAGE_EXECUTE`.
pub const PAGE_EXECUTE: u32 = 0x10;
/// `PAGE_EXECUTE_READ`.
pub const PAGE_EXECUTE_READ: u32 = 0x20;
/// `PAGE_EXECUTE_READWRITE`.
pub const PAGE_EXECUTE_READWRITE: u32 = 0x40;
/// `PAGE_NOCACHE`.
pub const PAGE_NOCACHE: u32 = 0x200;
/// `PAGE_WRITECOMBINE`.
pub const PAGE_WRITECOMBINE: u32 = 0x400;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// wdk-sys's generated `types.rs` of the Windows build, if it has run.
    fn bindgen_types() -> Option<String> {
        let build = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/windows/cargo/x86_64-pc-windows-msvc/release/build");
        let dirs = std::fs::read_dir(build).ok()?;
        dirs.flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with("wdk-sys-"))
            .find_map(|d| std::fs::read_to_string(d.path().join("out/types.rs")).ok())
    }

    /// The number bindgen asserts after `marker` (`... - 48usize]`).
    fn asserted(text: &str, marker: &str) -> Option<u64> {
        let at = text.find(marker)? + marker.len();
        let rest = &text[at..];
        let end = rest.find("usize]")?;
        let start = rest[..end].rfind(|c: char| !c.is_ascii_digit())? + 1;
        rest[start..end].parse().ok()
    }

    #[test]
    fn layouts_match_the_bindgen_assertions() {
        let Some(text) = bindgen_types() else {
            eprintln!("skipped: no wdk-sys types.rs under target/windows (run `cargo xtask windows`)");
            return;
        };
        let text: String = text.split_whitespace().collect();
        // bindgen writes the label either as `["label"]` or, wrapped, as `["label",]`.
        let label = |label: String| asserted(&text, &format!("\"{label}\"]")).or_else(|| asserted(&text, &format!("\"{label}\",]")));
        let size = |ty: &str| label(format!("Sizeof{ty}"));
        let offset = |ty: &str, field: &str| label(format!("Offsetoffield:{ty}::{field}"));
        assert_eq!(size("_DMA_ADAPTER"), Some(dma_adapter::SIZE));
        assert_eq!(offset("_DMA_ADAPTER", "Version"), Some(dma_adapter::VERSION));
        assert_eq!(offset("_DMA_ADAPTER", "Size"), Some(dma_adapter::SIZE_FIELD));
        assert_eq!(offset("_DMA_ADAPTER", "DmaOperations"), Some(dma_adapter::DMA_OPERATIONS));
        assert_eq!(size("_DMA_OPERATIONS"), Some(dma_operations::SIZE));
        for (name, at) in dma_operations::ENTRIES {
            assert_eq!(offset("_DMA_OPERATIONS", name), Some(at), "{name}");
        }
        assert_eq!(size("_DEVICE_DESCRIPTION"), Some(device_description::SIZE));
        for (field, at) in [
            ("Version", device_description::VERSION),
            ("Master", device_description::MASTER),
            ("ScatterGather", device_description::SCATTER_GATHER),
            ("Dma32BitAddresses", device_description::DMA32_BIT_ADDRESSES),
            ("Dma64BitAddresses", device_description::DMA64_BIT_ADDRESSES),
            ("BusNumber", device_description::BUS_NUMBER),
            ("InterfaceType", device_description::INTERFACE_TYPE),
            ("DmaWidth", device_description::DMA_WIDTH),
            ("MaximumLength", device_description::MAXIMUM_LENGTH),
        ] {
            assert_eq!(offset("_DEVICE_DESCRIPTION", field), Some(at), "{field}");
        }
        assert_eq!(size("_PHYSICAL_MEMORY_RANGE"), Some(physical_memory_range::SIZE));
        assert_eq!(offset("_PHYSICAL_MEMORY_RANGE", "NumberOfBytes"), Some(physical_memory_range::NUMBER_OF_BYTES));
    }
}
