//! Hardware access, as `hal.dll` and the memory manager give it to a
//! driver: the DMA adapter ([`dma`]: `IoGetDmaAdapter` and its
//! `DMA_OPERATIONS`), I/O space ([`io_space`]: `MmMapIoSpaceEx` /
//! `MmUnmapIoSpace`, with the accesses routed to a device model as MMIO),
//! and the physical memory map ([`ranges`]: `MmGetPhysicalMemoryRanges`).
//!
//! # One memory
//!
//! Common buffers come from the simulated machine's [`PhysicalMemory`]
//! (attached with [`attach_memory`]): its frame allocator places them
//! (physically contiguous, below the device's address limit, with its
//! fault injection), its IOMMU checker sees them (by physical address), and
//! the HAL maps their frames into the guest and fills them with a pattern
//! through the guest's memory. Each adapter has its own DMA-remapping
//! domain ([`crate::dma::DmaDomain`]): the `LogicalAddress` it returns is an
//! address in that domain, never the physical address.
//!
//! The HAL touches the bytes only through the machine's guest memory, never
//! through `PhysicalMemory`'s own view of them. So it is correct both while
//! the guest RAM is separate host memory (then `PhysicalMemory` only places
//! the frames; [`memory_over`] builds one that describes the guest RAM) and
//! once the guest RAM *is* `PhysicalMemory`'s memfd (then the board's
//! `DmaDomain::dma_write` through `PhysicalMemory::dma_write` and the
//! guest's CPU see the same bytes).

pub mod dma;
pub mod io_space;
pub mod ranges;

use capdma_winvm::RamRange;

use super::{Ddi, Module, Nt, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::memory::{MemoryConfig, PhysicalMemory, PAGE_SIZE, PCI_HOLE_START, RAM_START};
use crate::violations::Violations;

pub use dma::{device_read, device_write, Adapter, CommonBufferRecord, DmaState, COMMON_BUFFER_FILL};
pub use io_space::{attach_bar, mmio_read, mmio_write, IoMapping, IoSpaceState, MmioDevice};

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ntoskrnl, name: "IoGetDmaAdapter", max_irql: PASSIVE_LEVEL, run: dma::io_get_dma_adapter },
    Ddi { module: Module::Ntoskrnl, name: "MmMapIoSpaceEx", max_irql: DISPATCH_LEVEL, run: io_space::mm_map_io_space_ex },
    Ddi { module: Module::Ntoskrnl, name: "MmUnmapIoSpace", max_irql: DISPATCH_LEVEL, run: io_space::mm_unmap_io_space },
    Ddi {
        module: Module::Ntoskrnl,
        name: "MmGetPhysicalMemoryRanges",
        max_irql: PASSIVE_LEVEL,
        run: ranges::mm_get_physical_memory_ranges,
    },
];

/// This area's state in the emulated kernel.
#[derive(Debug, Default)]
pub struct HalState {
    /// DMA adapters, their common buffers, and the memory they come from.
    pub dma: DmaState,
    /// Device BARs and the driver's mappings of them.
    pub io: IoSpaceState,
}

/// Makes `memory` the physical memory the HAL allocates common buffers
/// from (and whose IOMMU checker sees them). Its frames must be guest RAM
/// of the machine the kernel runs: either the machine is built over
/// `memory` itself, or `memory` describes the guest RAM ([`memory_over`]).
pub fn attach_memory(nt: &mut Nt, memory: PhysicalMemory) {
    nt.hal.dma.memory = Some(memory);
}

/// The physical memory attached with [`attach_memory`].
#[must_use]
pub fn memory(nt: &Nt) -> Option<&PhysicalMemory> {
    nt.hal.dma.memory.as_ref()
}

/// A [`PhysicalMemory`] whose RAM is the guest RAM `[1 MiB, ram_end)` of a
/// machine whose guest memory is separate host memory, with the frames
/// `reserved` (the machine's own frames: page tables, stacks, images, pool)
/// taken as one live allocation so they are never handed out. Only frame
/// placement is used from it; see the module docs. No RAM above 4 GiB.
///
/// # Errors
/// Why not: `ram_end` beyond the PCI hole, or `reserved` not a page-aligned
/// range inside the RAM.
pub fn memory_over(ram_end: u64, reserved: RamRange, violations: Violations) -> Result<PhysicalMemory, String> {
    if ram_end <= RAM_START || ram_end > PCI_HOLE_START {
        return Err(format!("RAM end {ram_end:#x} is not between 1 MiB and the PCI hole"));
    }
    let memory = PhysicalMemory::new(
        MemoryConfig { seed: 1, high_memory: false, ram_bytes: ram_end - RAM_START, contiguous_failure: None },
        violations,
    );
    let page = PAGE_SIZE as u64;
    let end = reserved.gpa + reserved.len;
    if reserved.gpa < RAM_START || end > ram_end || !reserved.gpa.is_multiple_of(page) || !reserved.len.is_multiple_of(page) || reserved.len == 0 {
        return Err(format!("reserved frames {:#x}+{:#x} are not page-aligned RAM", reserved.gpa, reserved.len));
    }
    // Contiguous placement is top-down below the limit, so this lands
    // exactly on `reserved`; checked below.
    let taken = memory
        .allocate_contiguous(reserved.len as usize, PAGE_SIZE, end, "winvm: the machine's own frames (reserved)")
        .ok_or("the reserved frames could not be taken")?;
    if taken.page_addresses.first() != Some(&reserved.gpa) {
        return Err(format!("the reserved frames landed at {:#x?}, not {:#x}", taken.page_addresses.first(), reserved.gpa));
    }
    Ok(memory)
}

/// What the HAL still holds for drivers, one line each: adapters not put,
/// common buffers not freed, I/O space still mapped (for the end-of-run
/// leak check; at driver unload each is a leak).
#[must_use]
pub fn leaks(nt: &Nt) -> Vec<String> {
    let mut out = dma::leaks(&nt.hal.dma);
    out.extend(io_space::leaks(&nt.hal.io));
    out
}
