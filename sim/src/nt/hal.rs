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
//!
//! Building `System` over the memfd is then a small change of
//! `System::boot`: make the `PhysicalMemory`, give `GuestMemory::new` its
//! `backing()` (linear base and RAM ranges) with the machine's own frames
//! inside that RAM, take those frames with [`reserve_frames`], and
//! [`attach_memory`] the same `PhysicalMemory` instead of [`memory_over`]'s.
//! The device model reaches the common buffers with the adapter's domain
//! ([`adapter_domain`]) over that memory.

pub mod dma;
pub mod io_space;
pub mod ranges;

use capdma_winvm::RamRange;

use super::{Ddi, Module, Nt, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::dma::DmaDomain;
use crate::memory::{Allocation, MemoryConfig, PhysicalMemory, PAGE_SIZE, PCI_HOLE_START, RAM_START};
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
/// taken by [`reserve_frames`] so they are never handed out. Only frame
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
    reserve_frames(&memory, reserved)?;
    Ok(memory)
}

/// Takes the frames `reserved` of `memory` as one allocation that is never
/// freed (owner "winvm: the machine's own frames"), so the memory never
/// hands them out: what a machine built over `memory` must do for the
/// range it gives `GuestMemory` as its own frames. Returns the allocation
/// (it shows in `memory.leaks()`; skip it there).
///
/// # Errors
/// Why not: `reserved` empty, not page-aligned, or not free RAM of `memory`.
pub fn reserve_frames(memory: &PhysicalMemory, reserved: RamRange) -> Result<Allocation, String> {
    let page = PAGE_SIZE as u64;
    let end = reserved.gpa.checked_add(reserved.len).ok_or("reserved frames wrap around")?;
    if reserved.len == 0 || !reserved.gpa.is_multiple_of(page) || !reserved.len.is_multiple_of(page) {
        return Err(format!("reserved frames {:#x}+{:#x} are not page-aligned", reserved.gpa, reserved.len));
    }
    // Contiguous placement is top-down below the limit, so this lands
    // exactly on `reserved` when it is free RAM; checked below.
    let taken = memory
        .allocate_contiguous(usize::try_from(reserved.len).map_err(|e| e.to_string())?, PAGE_SIZE, end, RESERVED_OWNER)
        .ok_or_else(|| format!("the frames {:#x}+{:#x} could not be taken", reserved.gpa, reserved.len))?;
    if taken.page_addresses.first() != Some(&reserved.gpa) {
        let at = taken.page_addresses.first().copied();
        memory.free(taken.id);
        return Err(format!("the frames {:#x}+{:#x} are not free RAM (the run landed at {at:#x?})", reserved.gpa, reserved.len));
    }
    Ok(taken)
}

/// The owner label of [`reserve_frames`]'s allocation.
pub const RESERVED_OWNER: &str = "winvm: the machine's own frames (reserved)";

/// The DMA-remapping domain of the adapter whose `DMA_ADAPTER` is at
/// `adapter`: what the device behind it must translate its bus addresses
/// with (`DmaDomain::dma_write(&memory, logical, data)` for a device model
/// holding the memory, once the guest RAM is that memory).
#[must_use]
pub fn adapter_domain(nt: &Nt, adapter: u64) -> Option<DmaDomain> {
    nt.hal.dma.adapters.get(&adapter).map(|a| a.domain.clone())
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
