//! I/O space: device BARs in guest-physical space outside RAM, the
//! driver's mappings of them (`MmMapIoSpaceEx` / `MmUnmapIoSpace`), and
//! the accesses through those mappings, which leave the vCPU as MMIO exits
//! and are served by the device model attached at that address.
//!
//! Rules checked:
//!
//! | rule | bug check, parameter 1 | when |
//! |---|---|---|
//! | `MAP_IO_SPACE_OF_RAM` | 0x1A, 0x1233 | `MmMapIoSpaceEx` of RAM (pages the caller does not own and has not locked) |
//! | `MAP_IO_SPACE_BAD_ARGUMENTS` | 0xC4 | `NumberOfBytes` of zero, or a `Protect` the reference page does not allow |
//! | `UNMAP_IO_SPACE_NOT_MAPPED` | 0xC4 | `MmUnmapIoSpace` of an address `MmMapIoSpaceEx` did not return, or already unmapped |
//! | `UNMAP_IO_SPACE_WRONG_LENGTH` | 0xC4 | `MmUnmapIoSpace` with a length other than the mapping's |

use std::collections::BTreeMap;
use std::fmt;

use capdma_bus::ports::RegisterPort;
use capdma_winvm::{Machine, Protection, Stop};

use crate::board::Board;
use crate::nt::layout::dma::{
    PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_NOCACHE, PAGE_READONLY, PAGE_READWRITE, PAGE_WRITECOMBINE,
};
use crate::nt::Nt;

const PAGE: u64 = 4096;

/// A device's registers, as the CPU reaches them through a BAR.
///
/// `offset` is the byte offset in the BAR; `size` is 1, 2, 4 or 8 bytes.
pub trait MmioDevice {
    /// A read of `size` bytes at `offset`; the value in the low bytes.
    fn read(&mut self, offset: u64, size: u8) -> u64;
    /// A write of the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64);
    /// The driver mapped (`true`) or unmapped (`false`, no mapping left)
    /// the BAR. Nothing by default.
    fn set_mapped(&mut self, _mapped: bool) {}
}

/// The simulated board's BAR0: 32-bit registers (`READ_REGISTER_ULONG` /
/// `WRITE_REGISTER_ULONG`). An access of another size or alignment is not
/// a register access: it reads all ones and writes nothing, as a device
/// that claims only aligned dwords would.
impl MmioDevice for Board {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        match u32::try_from(offset) {
            Ok(offset) if size == 4 && offset % 4 == 0 => u64::from(self.read32(offset)),
            _ => u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8))),
        }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        if let Ok(offset) = u32::try_from(offset) {
            if size == 4 && offset % 4 == 0 {
                self.write32(offset, (value & 0xFFFF_FFFF) as u32);
            }
        }
    }

    fn set_mapped(&mut self, mapped: bool) {
        self.set_bar0_mapped(mapped);
    }
}

/// A device's BAR: `[gpa, gpa + len)` of guest-physical space.
struct Bar {
    gpa: u64,
    len: u64,
    device: Box<dyn MmioDevice>,
    accesses: u64,
}

/// One mapping `MmMapIoSpaceEx` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoMapping {
    /// The address returned to the driver.
    pub va: u64,
    /// The physical address mapped.
    pub physical: u64,
    /// `NumberOfBytes`.
    pub bytes: u64,
    /// `Protect`.
    pub protect: u32,
    /// `symbol+offset` of the caller.
    pub caller: String,
    /// First page of the mapping, and pages mapped.
    page_va: u64,
    pages: u64,
}

/// I/O space: the BARs and the driver's mappings.
#[derive(Default)]
pub struct IoSpaceState {
    bars: Vec<Bar>,
    /// Live mappings by the address returned.
    pub mappings: BTreeMap<u64, IoMapping>,
    /// MMIO accesses served.
    pub accesses: u64,
}

impl fmt::Debug for IoSpaceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bars: Vec<_> = self.bars.iter().map(|b| (b.gpa, b.len, b.accesses)).collect();
        f.debug_struct("IoSpaceState").field("bars", &bars).field("mappings", &self.mappings).field("accesses", &self.accesses).finish()
    }
}

/// Puts `device` at guest-physical `[gpa, gpa + len)` (a BAR: outside RAM,
/// page-aligned start). The driver reaches it by mapping that range with
/// `MmMapIoSpaceEx`; its accesses then reach `device`.
///
/// # Errors
/// Why not: a zero length, an unaligned start, or an overlap with a BAR
/// already attached.
pub fn attach_bar(nt: &mut Nt, gpa: u64, len: u64, device: Box<dyn MmioDevice>) -> Result<(), String> {
    let end = gpa.checked_add(len).ok_or("BAR wraps around")?;
    if len == 0 || !gpa.is_multiple_of(PAGE) {
        return Err(format!("BAR {gpa:#x}+{len:#x}: empty or not page-aligned"));
    }
    if let Some(b) = nt.hal.io.bars.iter().find(|b| gpa < b.gpa + b.len && b.gpa < end) {
        return Err(format!("BAR {gpa:#x}+{len:#x} overlaps the BAR at {:#x}+{:#x}", b.gpa, b.len));
    }
    nt.hal.io.bars.push(Bar { gpa, len, device, accesses: 0 });
    Ok(())
}

fn bar_at(nt: &mut Nt, gpa: u64, len: u64) -> Option<&mut Bar> {
    nt.hal.io.bars.iter_mut().find(|b| gpa >= b.gpa && gpa + len <= b.gpa + b.len)
}

/// The guest read `data.len()` bytes at guest-physical `gpa` outside RAM:
/// served by the device whose BAR holds the whole access (what
/// `Kernel::mmio_read` of the emulated kernel calls).
///
/// # Errors
/// [`Stop::Host`] when no BAR holds the access, or its size is not 1, 2, 4
/// or 8 bytes.
pub fn mmio_read(nt: &mut Nt, _m: &mut Machine, gpa: u64, data: &mut [u8]) -> Result<(), Stop> {
    let size = access_size(gpa, data.len())?;
    let Some(bar) = bar_at(nt, gpa, data.len() as u64) else {
        return Err(Stop::Host(format!("MMIO read of {} bytes at {gpa:#x}: no device there", data.len())));
    };
    bar.accesses += 1;
    let value = bar.device.read(gpa - bar.gpa, size);
    data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
    nt.hal.io.accesses += 1;
    Ok(())
}

/// The guest wrote `data` at guest-physical `gpa` outside RAM (what
/// `Kernel::mmio_write` of the emulated kernel calls).
///
/// # Errors
/// As [`mmio_read`].
pub fn mmio_write(nt: &mut Nt, _m: &mut Machine, gpa: u64, data: &[u8]) -> Result<(), Stop> {
    let size = access_size(gpa, data.len())?;
    let Some(bar) = bar_at(nt, gpa, data.len() as u64) else {
        return Err(Stop::Host(format!("MMIO write of {} bytes at {gpa:#x}: no device there", data.len())));
    };
    bar.accesses += 1;
    let mut value = [0u8; 8];
    value[..data.len()].copy_from_slice(data);
    bar.device.write(gpa - bar.gpa, size, u64::from_le_bytes(value));
    nt.hal.io.accesses += 1;
    Ok(())
}

fn access_size(gpa: u64, len: usize) -> Result<u8, Stop> {
    match len {
        1 | 2 | 4 | 8 => Ok(len as u8),
        _ => Err(Stop::Host(format!("MMIO access of {len} bytes at {gpa:#x}"))),
    }
}

/// Tells the devices whose BARs overlap `[gpa, gpa + bytes)` whether a
/// mapping of them remains.
fn notify_mapped(nt: &mut Nt, gpa: u64, bytes: u64) {
    let io = &mut nt.hal.io;
    for bar in &mut io.bars {
        if gpa < bar.gpa + bar.len && bar.gpa < gpa + bytes {
            let (lo, hi) = (bar.gpa, bar.gpa + bar.len);
            let mapped = io.mappings.values().any(|m| m.physical < hi && lo < m.physical + m.bytes);
            bar.device.set_mapped(mapped);
        }
    }
}

/// `PVOID MmMapIoSpaceEx(PHYSICAL_ADDRESS PhysicalAddress, SIZE_T
/// NumberOfBytes, ULONG Protect)` ("MmMapIoSpaceEx function", wdm.h; up to
/// `DISPATCH_LEVEL`): maps the physical range at fresh virtual addresses
/// (followed by an unmapped guard page) and returns the address of
/// `PhysicalAddress` in it. `Protect` must hold exactly one of
/// `PAGE_READONLY`, `PAGE_READWRITE`, `PAGE_EXECUTE*`, and at most one of
/// `PAGE_NOCACHE` / `PAGE_WRITECOMBINE`; `NumberOfBytes` must be above
/// zero. Only I/O space may be mapped: RAM is refused (bug check 0x1A,
/// 0x1233 on Windows). NULL for all of these.
///
/// # Errors
/// [`Stop::Host`] when the page tables cannot be written.
pub(super) fn mm_map_io_space_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [physical, bytes, protect] = m.args::<3>()?;
    let protect = (protect & 0xFFFF_FFFF) as u32;
    let base = protect & 0xFF;
    let cache = protect & !0xFF;
    let base_ok = [PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE].contains(&base);
    let cache_ok = cache == 0 || cache == PAGE_NOCACHE || cache == PAGE_WRITECOMBINE;
    nt.verifier.checks += 1;
    if bytes == 0 || !base_ok || !cache_ok {
        nt.violation(
            m,
            "MAP_IO_SPACE_BAD_ARGUMENTS",
            0xC4,
            None,
            format!("MmMapIoSpaceEx({physical:#x}, {bytes:#x}, {protect:#x}): NumberOfBytes must be above zero and Protect one base protection with at most one of PAGE_NOCACHE/PAGE_WRITECOMBINE"),
        );
        return Ok(0);
    }
    let page_gpa = physical & !(PAGE - 1);
    let Some(end) = physical.checked_add(bytes) else {
        return Ok(0);
    };
    let pages = (end - page_gpa).div_ceil(PAGE);
    nt.verifier.checks += 1;
    if let Some(ram) = (0..pages).map(|p| page_gpa + p * PAGE).find(|&p| m.memory().is_ram(p, PAGE)) {
        nt.violation(
            m,
            "MAP_IO_SPACE_OF_RAM",
            0x1A,
            Some(0x1233),
            format!("MmMapIoSpaceEx({physical:#x}, {bytes:#x}) maps RAM (page frame {:#x}) the caller has not locked", ram / PAGE),
        );
        return Ok(0);
    }
    let protection = match base {
        PAGE_READONLY => Protection::READ,
        PAGE_EXECUTE | PAGE_EXECUTE_READ => Protection::READ_EXECUTE,
        _ => Protection::READ_WRITE,
    };
    let page_va = m.map_physical(page_gpa, pages * PAGE, protection)?;
    let va = page_va + (physical - page_gpa);
    let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    nt.hal.io.mappings.insert(va, IoMapping { va, physical, bytes, protect, caller, page_va, pages });
    notify_mapped(nt, physical, bytes);
    Ok(va)
}

/// `VOID MmUnmapIoSpace(PVOID BaseAddress, SIZE_T NumberOfBytes)`
/// ("MmUnmapIoSpace function", wdm.h; up to `DISPATCH_LEVEL`): unmaps a
/// range `MmMapIoSpaceEx` mapped; `NumberOfBytes` must be the mapping's.
/// Afterwards an access through the old address faults.
///
/// # Errors
/// [`Stop::Host`] when the page tables cannot be written.
pub(super) fn mm_unmap_io_space(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [va, bytes] = m.args::<2>()?;
    let Some(mapping) = nt.hal.io.mappings.remove(&va) else {
        nt.violation(m, "UNMAP_IO_SPACE_NOT_MAPPED", 0xC4, None, format!("MmUnmapIoSpace({va:#x}, {bytes:#x}): no mapping starts there"));
        return Ok(0);
    };
    nt.verifier.checks += 1;
    if bytes != mapping.bytes {
        nt.violation(
            m,
            "UNMAP_IO_SPACE_WRONG_LENGTH",
            0xC4,
            None,
            format!("MmUnmapIoSpace({va:#x}, {bytes:#x}) of a mapping of {:#x} bytes; all of it is unmapped", mapping.bytes),
        );
    }
    m.unmap(mapping.page_va, mapping.pages)?;
    notify_mapped(nt, mapping.physical, mapping.bytes);
    Ok(0)
}

/// One line per mapping not unmapped.
#[must_use]
pub fn leaks(io: &IoSpaceState) -> Vec<String> {
    io.mappings
        .values()
        .map(|m| format!("I/O space {:#x}+{:#x} mapped at {:#x} (MmMapIoSpaceEx from {}) not unmapped", m.physical, m.bytes, m.va, m.caller))
        .collect()
}
