//! The guest's virtual address map, and the I/O ports the guest uses to
//! leave to the host.
//!
//! Everything lives in the upper half, at kernel-like addresses; nothing is
//! mapped below `0xFFFF_8000_0000_0000`, so a NULL (or any user-mode)
//! dereference faults with #PF and is reported as a bugcheck.
//!
//! | range | what |
//! |---|---|
//! | [`KUSER_SHARED_DATA`] | one read-only page (wdm.h `KI_USER_SHARED_DATA`); the host keeps `InterruptTime` current |
//! | [`SYSTEM_BASE`] … | the machine's own structures: GDT, IDT, TSS, the trap handlers, the return trap, the stub pages, the ring-0 trap stack |
//! | [`DYNAMIC_BASE`] … | everything mapped at run time (images, stacks, pool, common buffers, I/O space), each range followed by an unmapped guard page |

/// Bytes in a page: the x86-64 MMU's 4 KiB page, which this machine's page
/// tables map. Defined here rather than taken from
/// `capdma_interface::kernel::PAGE_SIZE` on purpose: `capdma-winvm` emulates
/// the processor for any image and does not depend on the drivers' contract.
pub const PAGE_SIZE: u64 = 4096;

/// `KUSER_SHARED_DATA` on x64 (wdm.h `KI_USER_SHARED_DATA`), read-only.
pub const KUSER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;
/// Offset of `InterruptTime` (a `KSYSTEM_TIME`, 100-ns units) in
/// `KUSER_SHARED_DATA` (wdm.h `SharedInterruptTime`).
pub const KUSER_INTERRUPT_TIME: u64 = 0x8;
/// Offset of `SystemTime` in `KUSER_SHARED_DATA` (wdm.h `SharedSystemTime`).
pub const KUSER_SYSTEM_TIME: u64 = 0x14;
/// Offset of `TickCount` in `KUSER_SHARED_DATA` (wdm.h `SharedTickCount`, x64).
pub const KUSER_TICK_COUNT: u64 = 0x320;

/// First address of the machine's own structures.
pub const SYSTEM_BASE: u64 = 0xFFFF_F800_0000_0000;
/// First address handed out by [`crate::AddressSpace::reserve`].
pub const DYNAMIC_BASE: u64 = 0xFFFF_F801_0000_0000;

/// Selector of the ring-0 64-bit code segment (Windows' `KGDT64_R0_CODE`).
pub const KERNEL_CS: u16 = 0x10;
/// Selector of the ring-0 data segment (`KGDT64_R0_DATA`).
pub const KERNEL_SS: u16 = 0x18;
/// Selector of the ring-3 data segment (`KGDT64_R3_DATA | RPL 3`).
pub const USER_DS: u16 = 0x2B;
/// Selector of the ring-3 64-bit code segment (`KGDT64_R3_CODE | RPL 3`).
pub const USER_CS: u16 = 0x33;
/// Selector of the TSS (`KGDT64_SYS_TSS`).
pub const TSS_SELECTOR: u16 = 0x40;

/// Port an IDT handler writes the vector to (`out 0xE0, eax`).
pub const PORT_EXCEPTION: u16 = 0xE0;
/// Port of the return trap a host→guest call returns into (`out 0xE1, eax`).
pub const PORT_RETURN: u16 = 0xE1;
/// Port of a stub (`mov eax, index; out 0xE2, eax; ret`): the host runs
/// the function registered under `index`.
pub const PORT_STUB: u16 = 0xE2;

/// RFLAGS of guest code: IOPL 3 (so the stubs' `out` is allowed at CPL3),
/// interrupts off (the host delivers them), bit 1 set.
pub const GUEST_RFLAGS: u64 = 0x3002;
