//! The guest's page tables: 4-level x64 paging with 4 KiB pages only, built
//! and kept by the host, plus a host-side copy of every leaf entry so that
//! the host translates guest virtual addresses without walking the tables.
//!
//! Every leaf is user-accessible (the images run at CPL3) except the
//! machine's own ring-0 structures; protections follow the section or
//! allocation (read-only, writable, executable; NX otherwise). Unmapped
//! pages stay not-present, so the guest faults on them (#PF with CR2) and
//! the host refuses to touch them.

use std::collections::HashMap;

use crate::layout::{DYNAMIC_BASE, PAGE_SIZE};
use crate::memory::GuestMemory;
use crate::Stop;

const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_NX: u64 = 1 << 63;
const PTE_ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// What a page allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    /// Writes allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
    /// Reachable from CPL3 (the images' privilege level); `false` only for
    /// the machine's own ring-0 structures.
    pub user: bool,
}

impl Protection {
    /// Read-only data.
    pub const READ: Self = Self { write: false, execute: false, user: true };
    /// Read-write data.
    pub const READ_WRITE: Self = Self { write: true, execute: false, user: true };
    /// Code.
    pub const READ_EXECUTE: Self = Self { write: false, execute: true, user: true };

    fn bits(self) -> u64 {
        let mut bits = PTE_PRESENT;
        if self.write {
            bits |= PTE_WRITE;
        }
        if self.user {
            bits |= PTE_USER;
        }
        if !self.execute {
            bits |= PTE_NX;
        }
        bits
    }
}

/// One mapped page, as the host remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Guest-physical address of the page frame.
    pub frame: u64,
    /// Its protection.
    pub protection: Protection,
}

/// The guest's address space.
pub struct AddressSpace {
    pml4: u64,
    leaves: HashMap<u64, Mapping>,
    next_dynamic: u64,
    /// Set when a mapping was removed or weakened: the guest's TLB must be
    /// flushed (CR3 reloaded) before it runs again.
    pub(crate) needs_flush: bool,
}

impl AddressSpace {
    /// An empty address space whose PML4 is a fresh frame of `mem`.
    ///
    /// # Errors
    /// [`Stop::Host`] when the machine's frames are exhausted.
    pub fn new(mem: &mut GuestMemory) -> Result<Self, Stop> {
        Ok(Self { pml4: mem.alloc_frame()?, leaves: HashMap::new(), next_dynamic: DYNAMIC_BASE, needs_flush: false })
    }

    /// Guest-physical address of the PML4 (CR3).
    #[must_use]
    pub fn cr3(&self) -> u64 {
        self.pml4
    }

    /// Reserves `pages` pages of virtual address space (not mapped) followed
    /// by one guard page that is never mapped; returns the first address.
    pub fn reserve(&mut self, pages: u64) -> u64 {
        let va = self.next_dynamic;
        self.next_dynamic += (pages + 1) * PAGE_SIZE;
        va
    }

    /// Maps the page at `va` to the frame at `frame`.
    ///
    /// # Errors
    /// [`Stop::Host`] when `va` or `frame` is not page-aligned, `va` is
    /// already mapped, or no frame is left for a page table.
    pub fn map(&mut self, mem: &mut GuestMemory, va: u64, frame: u64, protection: Protection) -> Result<(), Stop> {
        if !va.is_multiple_of(PAGE_SIZE) || !frame.is_multiple_of(PAGE_SIZE) {
            return Err(Stop::Host(format!("map {va:#x} -> {frame:#x}: not page-aligned")));
        }
        if self.leaves.contains_key(&va) {
            return Err(Stop::Host(format!("map {va:#x}: already mapped")));
        }
        let pte = self.leaf_entry(mem, va, true)?.ok_or_else(|| Stop::Host("page walk failed".into()))?;
        mem.write_u64(pte, frame | protection.bits())?;
        self.leaves.insert(va, Mapping { frame, protection });
        Ok(())
    }

    /// Unmaps the page at `va`; returns what was mapped there.
    ///
    /// # Errors
    /// [`Stop::Host`] when the page tables cannot be written.
    pub fn unmap(&mut self, mem: &mut GuestMemory, va: u64) -> Result<Option<Mapping>, Stop> {
        let Some(old) = self.leaves.remove(&va) else { return Ok(None) };
        if let Some(pte) = self.leaf_entry(mem, va, false)? {
            mem.write_u64(pte, 0)?;
        }
        self.needs_flush = true;
        Ok(Some(old))
    }

    /// Changes the protection of the mapped page at `va`.
    ///
    /// # Errors
    /// [`Stop::Host`] when `va` is not mapped.
    pub fn protect(&mut self, mem: &mut GuestMemory, va: u64, protection: Protection) -> Result<(), Stop> {
        let mapping = self.leaves.get_mut(&va).ok_or_else(|| Stop::Host(format!("protect {va:#x}: not mapped")))?;
        mapping.protection = protection;
        let frame = mapping.frame;
        let pte = self.leaf_entry(mem, va, false)?.ok_or_else(|| Stop::Host("page walk failed".into()))?;
        mem.write_u64(pte, frame | protection.bits())?;
        self.needs_flush = true;
        Ok(())
    }

    /// The mapping of the page that holds `va`.
    #[must_use]
    pub fn mapping(&self, va: u64) -> Option<Mapping> {
        self.leaves.get(&(va & !(PAGE_SIZE - 1))).copied()
    }

    /// Guest-physical address of `va`, if mapped.
    #[must_use]
    pub fn translate(&self, va: u64) -> Option<u64> {
        self.mapping(va).map(|m| m.frame + (va & (PAGE_SIZE - 1)))
    }

    /// Pages currently mapped.
    #[must_use]
    pub fn mapped_pages(&self) -> usize {
        self.leaves.len()
    }

    /// The physical address of the leaf entry for `va`, creating the
    /// intermediate tables when `create`.
    fn leaf_entry(&self, mem: &mut GuestMemory, va: u64, create: bool) -> Result<Option<u64>, Stop> {
        let mut table = self.pml4;
        for shift in [39u32, 30, 21] {
            let entry = table + ((va >> shift) & 0x1FF) * 8;
            let value = mem.read_u64(entry)?;
            if value & PTE_PRESENT == 0 {
                if !create {
                    return Ok(None);
                }
                let next = mem.alloc_frame()?;
                mem.write_u64(entry, next | PTE_PRESENT | PTE_WRITE | PTE_USER)?;
                table = next;
            } else {
                table = value & PTE_ADDRESS;
            }
        }
        Ok(Some(table + ((va >> 12) & 0x1FF) * 8))
    }
}
