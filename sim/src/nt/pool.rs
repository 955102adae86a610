//! Pool: `ExAllocatePool2` and the frees, tracked as Driver Verifier's pool
//! tracking and special pool do.
//!
//! Every allocation gets pages of its own, with the block placed at the end
//! of the last page so that an overrun runs into the unmapped guard page
//! after it (special pool, "verify end"). A free unmaps the pages, so a use
//! after free faults, and the fault is bug check 0xD5
//! ([`freed_special_fault`]). Findings: a zero tag, a free of something never
//! allocated or already freed, a tag that does not match, and (at unload)
//! every allocation still live.

use std::collections::BTreeMap;

use capdma_winvm::{Machine, Protection, Stop};

use super::{Ddi, Module, Nt, APC_LEVEL, DISPATCH_LEVEL};

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ntoskrnl, name: "ExAllocatePool2", max_irql: DISPATCH_LEVEL, run: ex_allocate_pool2 },
    Ddi { module: Module::Ntoskrnl, name: "ExFreePool", max_irql: DISPATCH_LEVEL, run: ex_free_pool },
    Ddi { module: Module::Ntoskrnl, name: "ExFreePoolWithTag", max_irql: DISPATCH_LEVEL, run: ex_free_pool_with_tag },
];

/// `POOL_FLAG_UNINITIALIZED` (wdm.h): do not zero the block.
pub const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
/// `POOL_FLAG_NON_PAGED` (wdm.h).
pub const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_PAGED` (wdm.h).
pub const POOL_FLAG_PAGED: u64 = 0x100;

/// One live allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolBlock {
    /// Bytes asked for.
    pub bytes: u64,
    /// The tag (four characters, little-endian).
    pub tag: u32,
    /// `POOL_FLAG_*` given.
    pub flags: u64,
    /// First page of the block's pages.
    pub pages_va: u64,
    /// Pages.
    pub pages: u64,
    /// `symbol+offset` of the caller.
    pub caller: String,
}

/// The pool.
#[derive(Debug, Default)]
pub struct Pool {
    /// Live blocks by address.
    pub live: BTreeMap<u64, PoolBlock>,
    /// Addresses freed and not reused (for telling a double free from a bad pointer).
    pub freed: BTreeMap<u64, u32>,
    /// Allocations made.
    pub allocations: u64,
    /// Low resources simulation: fail the allocation with this 0-based
    /// index (and count it as made).
    pub fail_at: Option<u64>,
    /// Allocations failed on purpose.
    pub failed: u64,
    /// Who asked for each allocation failed on purpose (`symbol+offset`
    /// of the caller, or the host code that called the stub), in order.
    pub failed_callers: Vec<String>,
    /// Freed special pool: first page → pages, of every pool block freed
    /// and of every IRP freed after its completion (I/O verification
    /// allocates IRPs from special pool). Their addresses are never reused,
    /// so a touch there is a use after free ([`freed_special_fault`]).
    pub freed_special: BTreeMap<u64, u64>,
    /// Paged-pool blocks paged out while the IRQL is `DISPATCH_LEVEL` or
    /// above ([`sync_pageable`]): first page → their frames.
    pub trimmed: BTreeMap<u64, Vec<u64>>,
    /// Keep paged pool resident at every IRQL (no trimming): off by
    /// default, as under Driver Verifier's IRQL checking.
    pub pageable_always_resident: bool,
}

/// The tag as text (`'Cdma'`).
#[must_use]
pub fn tag_text(tag: u32) -> String {
    tag.to_le_bytes().iter().map(|b| if b.is_ascii_graphic() { *b as char } else { '.' }).collect()
}

/// `PVOID ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag)`
/// ("ExAllocatePool2 function"): zeroed unless `POOL_FLAG_UNINITIALIZED`;
/// callers at or below `DISPATCH_LEVEL` for non-paged and at or below
/// `APC_LEVEL` for paged pool (Verifier: 0xC4, parameter 0x01, "the driver
/// attempted to allocate paged memory with IRQL > APC_LEVEL"); the tag
/// must not be zero (Verifier: 0xC2, parameter 0x9B). NULL on failure.
fn ex_allocate_pool2(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [flags, bytes, tag] = m.args::<3>()?;
    let tag = (tag & 0xFFFF_FFFF) as u32;
    if flags & POOL_FLAG_PAGED != 0 {
        let irql = nt.irql;
        nt.verifier.checks += 1;
        if irql > APC_LEVEL {
            nt.violation(
                m,
                "IRQL_TOO_HIGH",
                0xC4,
                Some(0x01),
                format!("ExAllocatePool2(POOL_FLAG_PAGED, {bytes}) at IRQL {irql}; paged pool needs IRQL <= APC_LEVEL"),
            );
        }
    }
    if tag == 0 {
        nt.violation(m, "POOL_ZERO_TAG", 0xC2, Some(0x9B), "ExAllocatePool2 with a tag of zero".into());
    }
    if bytes == 0 {
        // Driver Verifier: "the driver requested a zero-byte pool allocation" (0xC4, 0x00).
        nt.violation(m, "POOL_ZERO_BYTES", 0xC4, Some(0x00), "ExAllocatePool2 of zero bytes".into());
    }
    let index = nt.pool.allocations;
    nt.pool.allocations += 1;
    if nt.pool.fail_at == Some(index) || bytes == 0 || bytes > (1 << 30) {
        if nt.pool.fail_at == Some(index) {
            nt.pool.failed += 1;
            let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
            nt.pool.failed_callers.push(caller);
        }
        return Ok(0);
    }
    let pages = bytes.div_ceil(4096);
    let pages_va = nt.alloc_kernel(m, pages * 4096)?;
    // At the end of the last page, 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT).
    let va = pages_va + pages * 4096 - bytes.div_ceil(16) * 16;
    if flags & POOL_FLAG_UNINITIALIZED != 0 {
        m.fill(pages_va, (pages * 4096) as usize, 0xAA)?;
    }
    let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    nt.pool.freed.remove(&va);
    nt.pool.live.insert(va, PoolBlock { bytes, tag, flags, pages_va, pages, caller });
    Ok(va)
}

fn free(nt: &mut Nt, m: &mut Machine, va: u64, tag: Option<u32>, ddi: &str) -> Result<u64, Stop> {
    if let Some(block) = nt.pool.live.get(&va) {
        // Paged pool is freed at or below APC_LEVEL (0xC4, parameter 0x11).
        if block.flags & POOL_FLAG_PAGED != 0 && nt.irql > APC_LEVEL {
            let irql = nt.irql;
            nt.counted_violation(m, "IRQL_TOO_HIGH", 0xC4, Some(0x11), format!("{ddi}({va:#x}) of paged pool at IRQL {irql}"));
        }
    }
    let Some(block) = nt.pool.live.get(&va).cloned() else {
        if nt.pool.freed.contains_key(&va) {
            nt.counted_violation(m, "POOL_DOUBLE_FREE", 0xC2, Some(0x7), format!("{ddi}({va:#x}): already freed"));
        } else {
            nt.counted_violation(m, "POOL_FREE_BAD_ADDRESS", 0xC2, Some(0x46), format!("{ddi}({va:#x}): not a pool allocation"));
        }
        return Ok(0);
    };
    if let Some(tag) = tag {
        let ok = tag == block.tag;
        nt.verifier.checks += 1;
        if !ok {
            nt.violation(
                m,
                "POOL_FREE_WRONG_TAG",
                0xC2,
                Some(0xA),
                format!("{ddi}({va:#x}, '{}') of a block tagged '{}'", tag_text(tag), tag_text(block.tag)),
            );
        }
    }
    super::ke::check_free(nt, m, va, block.bytes);
    nt.pool.live.remove(&va);
    nt.pool.freed.insert(va, block.tag);
    if let Some(frames) = nt.pool.trimmed.remove(&block.pages_va) {
        m.map_frames_at(block.pages_va, &frames, Protection::READ_WRITE)?;
    }
    m.free_own_pages(block.pages_va, block.pages)?;
    nt.pool.freed_special.insert(block.pages_va, block.pages);
    Ok(0)
}

/// Pageable memory as Driver Verifier's IRQL checking keeps it ("IRQL
/// checking": pageable memory is trimmed at every raise to
/// `DISPATCH_LEVEL` or above, so a driver that touches it there faults at
/// once instead of when the page happens to be out): at `DISPATCH_LEVEL`
/// or above every paged-pool block is unmapped (its frames kept), and a
/// guest touch faults — bug check 0xD1 `DRIVER_IRQL_NOT_LESS_OR_EQUAL`;
/// below, the blocks are mapped back where they were. Called whenever the
/// guest is about to run at a new IRQL (every exit back to it, a CR8
/// write, an ISR or DPC call).
///
/// # Errors
/// [`Stop::Host`] when the page tables cannot be written.
pub fn sync_pageable(nt: &mut Nt, m: &mut Machine) -> Result<(), Stop> {
    if nt.irql >= DISPATCH_LEVEL && !nt.pool.pageable_always_resident {
        let out: Vec<(u64, u64)> = nt
            .pool
            .live
            .values()
            .filter(|b| b.flags & POOL_FLAG_PAGED != 0 && !nt.pool.trimmed.contains_key(&b.pages_va))
            .map(|b| (b.pages_va, b.pages))
            .collect();
        for (va, pages) in out {
            let frames = m.unmap(va, pages)?;
            nt.pool.trimmed.insert(va, frames);
        }
    } else if nt.irql < DISPATCH_LEVEL && !nt.pool.trimmed.is_empty() {
        for (va, frames) in std::mem::take(&mut nt.pool.trimmed) {
            m.map_frames_at(va, &frames, Protection::READ_WRITE)?;
        }
    }
    Ok(())
}

/// The bug check for a guest fault on `va` (a write when `write`) at
/// `rip`, when `va` lies in freed special pool: 0xD5
/// `DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL` (parameters: the address
/// referenced, 0 read / 1 write, the address that referenced it, 0; "Bug
/// Check 0xD5" page). `None` for any other address.
#[must_use]
pub fn freed_special_fault(pool: &Pool, va: u64, write: bool, rip: u64) -> Option<(u32, &'static str, [u64; 4])> {
    let (start, pages) = pool.freed_special.range(..=va).next_back()?;
    (va < start.saturating_add(pages.saturating_mul(4096)))
        .then_some((0xD5, "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL", [va, u64::from(write), rip, 0]))
}

/// `VOID ExFreePool(PVOID P)` ("ExFreePool function").
fn ex_free_pool(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let va = m.arg(0)?;
    free(nt, m, va, None, "ExFreePool")
}

/// `VOID ExFreePoolWithTag(PVOID P, ULONG Tag)` ("ExFreePoolWithTag
/// function": the tag must match the allocation's).
fn ex_free_pool_with_tag(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [va, tag] = m.args::<2>()?;
    free(nt, m, va, Some((tag & 0xFFFF_FFFF) as u32), "ExFreePoolWithTag")
}
