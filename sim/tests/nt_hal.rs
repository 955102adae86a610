//! The emulated HAL through its stubs, called from the guest as an image
//! calls them: `IoGetDmaAdapter` and its `DMA_OPERATIONS`, the DMA
//! remapping domains, `MmMapIoSpaceEx`/`MmUnmapIoSpace` with MMIO to a
//! device model, `MmGetPhysicalMemoryRanges`; and, for every Driver
//! Verifier check, a test that trips it. Needs `/dev/kvm`: without it each
//! test says so and passes vacuously, except in CI (`CI` set), where a
//! missing KVM fails.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use capdma_interface::regs::{global, BOARD_ID};
use capdma_sim::board::{Board, BoardConfig};
use capdma_sim::memory::{MemoryConfig, PhysicalMemory, FOUR_GIB};
use capdma_sim::nt::hal::{self, MmioDevice, COMMON_BUFFER_FILL};
use capdma_sim::nt::layout::dma::{
    device_description, dma_adapter, dma_operations, physical_memory_range, DEVICE_DESCRIPTION_VERSION2, PAGE_NOCACHE,
    PAGE_READWRITE, PAGE_WRITECOMBINE, PCI_BUS, WIDTH_32_BITS,
};
use capdma_sim::nt::system::System;
use capdma_sim::nt::DISPATCH_LEVEL;
use capdma_sim::violations::Violations;
use capdma_winvm::{Protection, Stop};

const PAGE: u64 = 4096;
/// Where the tests put a BAR: in the PCI hole, outside the 256 MiB of RAM.
const BAR_GPA: u64 = 0xE000_0000;

fn system() -> Option<System> {
    support::system()
}

fn stub(s: &mut System, name: &str) -> u64 {
    s.nt.resolve(&mut s.machine, "ntoskrnl.exe", name).unwrap_or_else(|| panic!("{name} not implemented"))
}

fn call(s: &mut System, function: u64, args: &[u64]) -> u64 {
    s.machine.call(&mut s.nt, function, args).expect("guest call")
}

fn rules(s: &System) -> Vec<&'static str> {
    s.nt.verifier.findings.iter().map(|f| f.rule).collect()
}

/// A version-2 `DEVICE_DESCRIPTION` for a PCI bus master, as the bus glue
/// fills it; returns (description, `&NumberOfMapRegisters`).
fn description(s: &mut System, scatter_gather: bool, dma64: bool, maximum_length: u32) -> (u64, u64) {
    let m = &mut s.machine;
    let dd = s.nt.alloc_kernel(m, PAGE).unwrap();
    m.write_u32(dd + device_description::VERSION, DEVICE_DESCRIPTION_VERSION2).unwrap();
    m.write_u8(dd + device_description::MASTER, 1).unwrap();
    m.write_u8(dd + device_description::SCATTER_GATHER, u8::from(scatter_gather)).unwrap();
    m.write_u8(dd + device_description::DMA32_BIT_ADDRESSES, u8::from(!dma64)).unwrap();
    m.write_u8(dd + device_description::DMA64_BIT_ADDRESSES, u8::from(dma64)).unwrap();
    m.write_u32(dd + device_description::INTERFACE_TYPE, PCI_BUS).unwrap();
    m.write_u32(dd + device_description::DMA_WIDTH, WIDTH_32_BITS).unwrap();
    m.write_u32(dd + device_description::MAXIMUM_LENGTH, maximum_length).unwrap();
    (dd, dd + 512)
}

/// `IoGetDmaAdapter(pdo, description, &map_registers)` → (adapter, map registers).
fn get_adapter(s: &mut System, dma64: bool, maximum_length: u32) -> (u64, u32) {
    let (dd, nmr) = description(s, true, dma64, maximum_length);
    let f = stub(s, "IoGetDmaAdapter");
    let adapter = call(s, f, &[0xFFFF_F801_DEAD_0000, dd, nmr]);
    (adapter, s.machine.read_u32(nmr).unwrap())
}

/// The `DMA_OPERATIONS` entry `name` of `adapter`.
fn operation(s: &System, adapter: u64, name: &str) -> u64 {
    let ops = s.machine.read_u64(adapter + dma_adapter::DMA_OPERATIONS).unwrap();
    let offset = dma_operations::ENTRIES.iter().find(|e| e.0 == name).unwrap().1;
    s.machine.read_u64(ops + offset).unwrap()
}

/// `AllocateCommonBuffer(adapter, bytes, &logical, TRUE)` → (va, logical).
fn allocate(s: &mut System, adapter: u64, bytes: u64) -> (u64, u64) {
    let out = s.nt.alloc_kernel(&mut s.machine, PAGE).unwrap();
    let f = operation(s, adapter, "AllocateCommonBuffer");
    let va = call(s, f, &[adapter, bytes, out, 1]);
    (va, s.machine.read_u64(out).unwrap())
}

/// `FreeCommonBuffer(adapter, bytes, logical, va, cache_enabled)`.
fn free(s: &mut System, adapter: u64, bytes: u64, logical: u64, va: u64, cache_enabled: u64) {
    let f = operation(s, adapter, "FreeCommonBuffer");
    call(s, f, &[adapter, bytes, logical, va, cache_enabled]);
}

fn put(s: &mut System, adapter: u64) {
    let f = operation(s, adapter, "PutDmaAdapter");
    call(s, f, &[adapter]);
}

#[test]
fn io_get_dma_adapter_returns_a_real_table_and_grants_map_registers_from_maximum_length() {
    let Some(mut s) = system() else { return };
    let (adapter, map_registers) = get_adapter(&mut s, false, 4 << 20);
    assert_ne!(adapter, 0);
    let m = &s.machine;
    assert_eq!(m.read_u16(adapter + dma_adapter::VERSION).unwrap(), 1);
    assert_eq!(u64::from(m.read_u16(adapter + dma_adapter::SIZE_FIELD).unwrap()), dma_adapter::SIZE);
    let ops = m.read_u64(adapter + dma_adapter::DMA_OPERATIONS).unwrap();
    assert_eq!(u64::from(m.read_u32(ops + dma_operations::SIZE_FIELD).unwrap()), dma_operations::SIZE);
    let entries: Vec<u64> = dma_operations::ENTRIES.iter().map(|e| m.read_u64(ops + e.1).unwrap()).collect();
    assert!(entries.iter().all(|&e| e != 0));
    let mut distinct = entries.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), entries.len(), "every entry is its own host function");
    // BYTES_TO_PAGES(4 MiB) + 1: a 4 MiB transfer starting anywhere in a page.
    assert_eq!(map_registers, 1025);
    assert_eq!(get_adapter(&mut s, true, 1000).1, 2, "64-bit adapters are granted from MaximumLength too");
    assert_eq!(get_adapter(&mut s, true, 8192).1, 3);
    s.nt.hal.dma.map_register_limit = 64;
    assert_eq!(get_adapter(&mut s, false, 4 << 20).1, 64, "the HAL's limit caps the grant");
    // A second adapter shares the host functions but has its own table.
    let (other, _) = get_adapter(&mut s, false, 4096);
    assert_ne!(other, adapter);
    assert_eq!(operation(&s, other, "AllocateCommonBuffer"), operation(&s, adapter, "AllocateCommonBuffer"));
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
}

#[test]
fn io_get_dma_adapter_refuses_what_it_does_not_provide() {
    let Some(mut s) = system() else { return };
    let f = stub(&mut s, "IoGetDmaAdapter");
    let (dd, nmr) = description(&mut s, true, true, 4096);
    s.machine.write_u32(dd + device_description::VERSION, 3).unwrap();
    assert_eq!(call(&mut s, f, &[0, dd, nmr]), 0, "DEVICE_DESCRIPTION_VERSION3 is not supported");
    s.machine.write_u32(dd + device_description::VERSION, DEVICE_DESCRIPTION_VERSION2).unwrap();
    s.machine.write_u8(dd + device_description::MASTER, 0).unwrap();
    assert_eq!(call(&mut s, f, &[0, dd, nmr]), 0, "system DMA is not emulated");
    s.machine.write_u8(dd + device_description::MASTER, 1).unwrap();
    assert_ne!(call(&mut s, f, &[0, dd, nmr]), 0);
    // IRQL: PASSIVE_LEVEL only.
    s.nt.irql = DISPATCH_LEVEL;
    call(&mut s, f, &[0, dd, nmr]);
    s.nt.irql = 0;
    assert_eq!(rules(&s), ["IRQL_TOO_HIGH"]);
    assert!(s.nt.verifier.findings[0].detail.contains("IoGetDmaAdapter"));
}

#[test]
fn common_buffers_are_contiguous_patterned_guarded_and_remapped() {
    let Some(mut s) = system() else { return };
    let (adapter, _) = get_adapter(&mut s, false, 1 << 20);
    let bytes = 3 * PAGE + 5;
    let (va, logical) = allocate(&mut s, adapter, bytes);
    assert_ne!(va, 0);
    assert_eq!(va % PAGE, 0);
    assert_eq!(logical % PAGE, 0);
    // Physically contiguous, below 4 GiB for this 32-bit adapter.
    let space = s.machine.address_space();
    let frames: Vec<u64> = (0..4).map(|i| space.translate(va + i * PAGE).unwrap()).collect();
    assert!(frames.windows(2).all(|w| w[1] == w[0] + PAGE), "{frames:x?}");
    assert!(frames[3] + PAGE <= FOUR_GIB);
    // The logical address is in the adapter's domain, not the physical one.
    assert_ne!(logical, frames[0]);
    assert!(logical + bytes <= FOUR_GIB);
    // Not zeroed: the fill pattern, over the whole pages.
    let mut content = vec![0u8; 4 * 4096];
    s.machine.read(va, &mut content).unwrap();
    assert!(content.iter().all(|&b| b == COMMON_BUFFER_FILL));
    // A guard page follows.
    assert!(!s.machine.is_mapped(va + 4 * PAGE, 1));
    // The memory's IOMMU checker sees it by physical address.
    assert!(hal::memory(&s.nt).unwrap().iommu().covers(frames[0], bytes));

    // The device writes at the logical address; the CPU reads it at va.
    assert!(hal::device_write(&mut s.nt, &s.machine, adapter, logical + PAGE - 2, &[1, 2, 3, 4]).unwrap());
    let mut four = [0u8; 4];
    s.machine.read(va + PAGE - 2, &mut four).unwrap();
    assert_eq!(four, [1, 2, 3, 4]);
    s.machine.write(va + 100, &[9, 8]).unwrap();
    let mut two = [0u8; 2];
    assert!(hal::device_read(&mut s.nt, &s.machine, adapter, logical + 100, &mut two).unwrap());
    assert_eq!(two, [9, 8]);
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);

    // The physical address means nothing to the device; past Length faults too.
    assert!(!hal::device_write(&mut s.nt, &s.machine, adapter, frames[0], &[7]).unwrap());
    assert!(!hal::device_write(&mut s.nt, &s.machine, adapter, logical + bytes - 1, &[7, 7]).unwrap());
    assert_eq!(rules(&s), ["DMA_REMAPPING_FAULT", "DMA_REMAPPING_FAULT"]);
    s.machine.read(va + bytes - 1, &mut two[..1]).unwrap();
    assert_eq!(two[0], COMMON_BUFFER_FILL, "a refused access writes nothing");
    s.nt.verifier.findings.clear();

    // Freed exactly as allocated: no finding; va, logical range and frames are gone.
    free(&mut s, adapter, bytes, logical, va, 1);
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
    assert!(!s.machine.is_mapped(va, 1));
    assert!(!hal::memory(&s.nt).unwrap().iommu().covers(frames[0], 1));
    assert!(!hal::device_write(&mut s.nt, &s.machine, adapter, logical, &[1]).unwrap(), "no transfer into freed memory");
    assert_eq!(rules(&s), ["DMA_REMAPPING_FAULT"]);
    assert!(matches!(s.machine.read(va, &mut two), Err(Stop::Bugcheck(_))), "a use after free faults");
}

#[test]
fn each_adapter_has_its_own_domain_and_64_bit_ones_get_64_bit_logical_addresses() {
    let Some(mut s) = system() else { return };
    let (a, _) = get_adapter(&mut s, false, 1 << 20);
    let (b, _) = get_adapter(&mut s, true, 1 << 20);
    let (va_a, logical_a) = allocate(&mut s, a, PAGE);
    let (va_b, logical_b) = allocate(&mut s, b, PAGE);
    assert!(logical_a < FOUR_GIB);
    assert!(logical_b >= FOUR_GIB, "{logical_b:#x}");
    assert!(hal::device_write(&mut s.nt, &s.machine, b, logical_b + 8, &[5]).unwrap());
    // One card cannot reach the other's buffer.
    assert!(!hal::device_write(&mut s.nt, &s.machine, b, logical_a, &[6]).unwrap());
    assert!(!hal::device_write(&mut s.nt, &s.machine, a, logical_b, &[6]).unwrap());
    assert_eq!(rules(&s), ["DMA_REMAPPING_FAULT", "DMA_REMAPPING_FAULT"]);
    assert_eq!(s.machine.read_u8(va_a).unwrap(), COMMON_BUFFER_FILL);
    assert_eq!(s.machine.read_u8(va_b + 8).unwrap(), 5);
    free(&mut s, a, PAGE, logical_a, va_a, 1);
    free(&mut s, b, PAGE, logical_b, va_b, 1);
    put(&mut s, a);
    put(&mut s, b);
    assert_eq!(s.nt.verifier.findings.len(), 2);
    assert!(hal::leaks(&s.nt).is_empty(), "{:?}", hal::leaks(&s.nt));
}

#[test]
fn put_dma_adapter_with_common_buffers_outstanding_is_0xe6_0x07() {
    let Some(mut s) = system() else { return };
    let (adapter, _) = get_adapter(&mut s, false, 1 << 20);
    let (va, logical) = allocate(&mut s, adapter, 100);
    put(&mut s, adapter);
    let f = &s.nt.verifier.findings;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].rule, f[0].bugcheck, f[0].parameter1), ("DMA_ADAPTER_PUT_WITH_COMMON_BUFFERS", 0xE6, Some(0x07)));
    let leaks = hal::leaks(&s.nt);
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert!(leaks[0].contains("100 bytes") && leaks[0].contains(&format!("{logical:#x}")), "{leaks:?}");
    assert_ne!(va, 0);
}

#[test]
fn put_dma_adapter_twice_and_use_after_put_are_findings() {
    let Some(mut s) = system() else { return };
    let (adapter, _) = get_adapter(&mut s, false, 1 << 20);
    // PutDmaAdapter is allowed up to DISPATCH_LEVEL.
    s.nt.irql = DISPATCH_LEVEL;
    put(&mut s, adapter);
    s.nt.irql = 0;
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
    put(&mut s, adapter);
    assert_eq!(rules(&s), ["DMA_ADAPTER_PUT_TWICE"]);
    let (va, _) = allocate(&mut s, adapter, PAGE);
    assert_eq!(va, 0, "no buffer from a put adapter");
    assert_eq!(rules(&s), ["DMA_ADAPTER_PUT_TWICE", "DMA_ADAPTER_USED_AFTER_PUT"]);
    free(&mut s, adapter, PAGE, 0x8000_0000, 0xFFFF_F801_0000_0000, 1);
    assert_eq!(rules(&s)[2], "DMA_ADAPTER_USED_AFTER_PUT");
    assert!(s.nt.verifier.findings.iter().all(|f| f.bugcheck == 0xE6));
    assert!(hal::leaks(&s.nt).is_empty());
}

#[test]
fn free_common_buffer_twice_or_of_no_buffer_is_0xe6_0x03() {
    let Some(mut s) = system() else { return };
    let (adapter, _) = get_adapter(&mut s, false, 1 << 20);
    let (va, logical) = allocate(&mut s, adapter, PAGE);
    free(&mut s, adapter, PAGE, logical, va, 1);
    free(&mut s, adapter, PAGE, logical, va, 1);
    free(&mut s, adapter, PAGE, logical, 0xFFFF_F801_1234_0000, 1);
    let f = &s.nt.verifier.findings;
    assert_eq!(rules(&s), ["DMA_COMMON_BUFFER_FREED_TWICE", "DMA_COMMON_BUFFER_NOT_ALLOCATED"]);
    assert!(f.iter().all(|f| f.bugcheck == 0xE6 && f.parameter1 == Some(0x03)));
    // Another adapter's buffer is not this adapter's to free.
    let (other, _) = get_adapter(&mut s, false, 1 << 20);
    let (va2, logical2) = allocate(&mut s, other, PAGE);
    free(&mut s, adapter, PAGE, logical2, va2, 1);
    assert_eq!(rules(&s)[2], "DMA_COMMON_BUFFER_NOT_ALLOCATED");
    assert!(s.machine.is_mapped(va2, PAGE), "not freed by the wrong adapter");
}

#[test]
fn free_common_buffer_with_other_arguments_than_the_allocation_is_a_finding() {
    let Some(mut s) = system() else { return };
    let (adapter, _) = get_adapter(&mut s, false, 1 << 20);
    let (va, logical) = allocate(&mut s, adapter, 2 * PAGE);
    free(&mut s, adapter, PAGE, logical + PAGE, va, 0);
    let f = &s.nt.verifier.findings;
    assert_eq!(rules(&s), ["DMA_COMMON_BUFFER_FREE_MISMATCH"]);
    assert!(f[0].detail.contains("Length") && f[0].detail.contains("LogicalAddress") && f[0].detail.contains("CacheEnabled"), "{}", f[0].detail);
    assert!(!s.machine.is_mapped(va, 2 * PAGE), "the whole buffer is freed");
    put(&mut s, adapter);
    assert_eq!(s.nt.verifier.findings.len(), 1, "nothing left at put");
}

#[test]
fn operations_on_a_pointer_that_is_no_adapter_and_routines_not_emulated_are_findings() {
    let Some(mut s) = system() else { return };
    let (adapter, _) = get_adapter(&mut s, true, 1 << 20);
    let bogus = s.nt.alloc_kernel(&mut s.machine, PAGE).unwrap();
    let f = operation(&s, adapter, "PutDmaAdapter");
    call(&mut s, f, &[bogus]);
    let f = operation(&s, adapter, "AllocateCommonBuffer");
    assert_eq!(call(&mut s, f, &[bogus, PAGE, bogus + 8, 1]), 0);
    assert_eq!(rules(&s), ["DMA_INVALID_ADAPTER", "DMA_INVALID_ADAPTER"]);
    let f = operation(&s, adapter, "GetScatterGatherList");
    assert_eq!(call(&mut s, f, &[adapter, 0, 0, 0]), 0xC000_00BB, "STATUS_NOT_SUPPORTED");
    let last = s.nt.verifier.findings.last().unwrap();
    assert_eq!(last.rule, "DMA_OPERATION_NOT_EMULATED");
    assert!(last.detail.contains("GetScatterGatherList"), "{}", last.detail);
}

#[test]
fn allocate_common_buffer_above_passive_level_is_irql_too_high() {
    let Some(mut s) = system() else { return };
    let (adapter, _) = get_adapter(&mut s, false, 1 << 20);
    s.nt.irql = DISPATCH_LEVEL;
    let (va, logical) = allocate(&mut s, adapter, PAGE);
    free(&mut s, adapter, PAGE, logical, va, 1);
    s.nt.irql = 0;
    assert_eq!(rules(&s), ["IRQL_TOO_HIGH", "IRQL_TOO_HIGH"]);
    assert!(s.nt.verifier.findings[0].detail.contains("DMA_OPERATIONS.AllocateCommonBuffer"));
    assert!(s.nt.verifier.findings[1].detail.contains("DMA_OPERATIONS.FreeCommonBuffer"));
}

#[test]
fn low_resources_simulation_fails_the_chosen_adapter_and_common_buffer() {
    let Some(mut s) = system() else { return };
    s.nt.hal.dma.fail_adapter_at = Some(0);
    s.nt.hal.dma.fail_common_buffer_at = Some(1);
    assert_eq!(get_adapter(&mut s, false, 1 << 20).0, 0);
    let (adapter, _) = get_adapter(&mut s, false, 1 << 20);
    assert_ne!(adapter, 0);
    let (one, logical) = allocate(&mut s, adapter, PAGE);
    assert_ne!(one, 0);
    assert_eq!(allocate(&mut s, adapter, PAGE).0, 0);
    let (three, logical3) = allocate(&mut s, adapter, PAGE);
    assert_ne!(three, 0);
    assert_eq!(s.nt.hal.dma.failed, 2);
    // The memory's own fault injection fails AllocateCommonBuffer too.
    hal::memory(&s.nt).unwrap().set_contiguous_failure(Some(capdma_sim::memory::ContiguousFailure::Always));
    assert_eq!(allocate(&mut s, adapter, PAGE).0, 0);
    free(&mut s, adapter, PAGE, logical, one, 1);
    free(&mut s, adapter, PAGE, logical3, three, 1);
    put(&mut s, adapter);
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
}

/// One access a device saw: read or write, offset, size, value written.
type Access = (char, u64, u8, u64);

/// A device that records its accesses.
#[derive(Clone, Default)]
struct Recorder {
    accesses: Rc<RefCell<Vec<Access>>>,
    mapped: Rc<Cell<bool>>,
}

impl MmioDevice for Recorder {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.accesses.borrow_mut().push(('r', offset, size, 0));
        0x1234_5600 | offset
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.accesses.borrow_mut().push(('w', offset, size, value));
    }
    fn set_mapped(&mut self, mapped: bool) {
        self.mapped.set(mapped);
    }
}

/// Guest code: `mov eax, [rcx]; ret` and `mov [rcx], edx; ret`.
fn register_accessors(s: &mut System) -> (u64, u64) {
    let code = s.machine.alloc_own_pages(1, Protection::READ_EXECUTE).unwrap();
    s.machine.write(code, &[0x8B, 0x01, 0xC3]).unwrap();
    s.machine.write(code + 16, &[0x89, 0x11, 0xC3]).unwrap();
    (code, code + 16)
}

#[test]
fn mm_map_io_space_ex_maps_a_bar_whose_accesses_reach_the_device_as_mmio() {
    let Some(mut s) = system() else { return };
    let device = Recorder::default();
    hal::attach_bar(&mut s.nt, BAR_GPA, 0x1000, Box::new(device.clone())).unwrap();
    assert!(hal::attach_bar(&mut s.nt, BAR_GPA + 0x800, 0x1000, Box::new(Recorder::default())).is_err(), "overlap");
    let map = stub(&mut s, "MmMapIoSpaceEx");
    let unmap = stub(&mut s, "MmUnmapIoSpace");
    let (read, write) = register_accessors(&mut s);
    // Not page-aligned: the address of the byte asked for is returned.
    let va = call(&mut s, map, &[BAR_GPA + 0x100, 0x500, u64::from(PAGE_READWRITE | PAGE_NOCACHE)]);
    assert_eq!(va % PAGE, 0x100);
    assert!(device.mapped.get());
    let mmio_before = s.machine.counts().mmio;
    assert_eq!(call(&mut s, read, &[va + 0x10]), 0x1234_5600 | 0x110, "BAR offset 0x110");
    call(&mut s, write, &[va + 0x20, 0xABCD_0123]);
    assert_eq!(*device.accesses.borrow(), [('r', 0x110, 4, 0), ('w', 0x120, 4, 0xABCD_0123)]);
    assert_eq!(s.machine.counts().mmio - mmio_before, 2);
    assert_eq!(hal::leaks(&s.nt).len(), 1);
    call(&mut s, unmap, &[va, 0x500]);
    assert!(!device.mapped.get());
    assert!(hal::leaks(&s.nt).is_empty());
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
    // After MmUnmapIoSpace the old address faults.
    assert!(matches!(s.machine.call(&mut s.nt, read, &[va + 0x10]), Err(Stop::Bugcheck(_))));
    assert_eq!(device.accesses.borrow().len(), 2);
}

#[test]
fn the_board_model_serves_bar0_through_the_image_s_mapping() {
    let Some(mut s) = system() else { return };
    let memory = PhysicalMemory::new(MemoryConfig::default(), Violations::new());
    let board = Board::new(BoardConfig::legacy(), &memory).unwrap();
    hal::attach_bar(&mut s.nt, BAR_GPA, PAGE, Box::new(board.clone())).unwrap();
    let map = stub(&mut s, "MmMapIoSpaceEx");
    let unmap = stub(&mut s, "MmUnmapIoSpace");
    let (read, _) = register_accessors(&mut s);
    let va = call(&mut s, map, &[BAR_GPA, 0x500, u64::from(PAGE_READWRITE | PAGE_NOCACHE)]);
    assert!(board.bar0_mapped());
    assert_eq!(call(&mut s, read, &[va + u64::from(global::ID)]), u64::from(BOARD_ID));
    call(&mut s, unmap, &[va, 0x500]);
    assert!(!board.bar0_mapped(), "MmUnmapIoSpace tells the board");
    assert!(memory.violations().is_empty(), "{:?}", memory.violations().list());
}

#[test]
fn mm_map_io_space_ex_refuses_ram_and_bad_arguments() {
    let Some(mut s) = system() else { return };
    let map = stub(&mut s, "MmMapIoSpaceEx");
    let rw = u64::from(PAGE_READWRITE);
    assert_eq!(call(&mut s, map, &[0x20_0000, PAGE, rw]), 0);
    let f = &s.nt.verifier.findings;
    assert_eq!((f[0].rule, f[0].bugcheck, f[0].parameter1), ("MAP_IO_SPACE_OF_RAM", 0x1A, Some(0x1233)));
    assert_eq!(call(&mut s, map, &[BAR_GPA, 0, rw]), 0);
    assert_eq!(call(&mut s, map, &[BAR_GPA, PAGE, rw | u64::from(PAGE_NOCACHE | PAGE_WRITECOMBINE)]), 0);
    assert_eq!(call(&mut s, map, &[BAR_GPA, PAGE, u64::from(PAGE_NOCACHE)]), 0);
    assert_eq!(rules(&s), ["MAP_IO_SPACE_OF_RAM", "MAP_IO_SPACE_BAD_ARGUMENTS", "MAP_IO_SPACE_BAD_ARGUMENTS", "MAP_IO_SPACE_BAD_ARGUMENTS"]);
    assert!(hal::leaks(&s.nt).is_empty());
}

#[test]
fn mm_unmap_io_space_of_no_mapping_or_with_the_wrong_length_is_a_finding() {
    let Some(mut s) = system() else { return };
    hal::attach_bar(&mut s.nt, BAR_GPA, PAGE, Box::new(Recorder::default())).unwrap();
    let map = stub(&mut s, "MmMapIoSpaceEx");
    let unmap = stub(&mut s, "MmUnmapIoSpace");
    let va = call(&mut s, map, &[BAR_GPA, 0x500, u64::from(PAGE_READWRITE | PAGE_NOCACHE)]);
    call(&mut s, unmap, &[va, 0x400]);
    call(&mut s, unmap, &[va, 0x500]);
    assert_eq!(rules(&s), ["UNMAP_IO_SPACE_WRONG_LENGTH", "UNMAP_IO_SPACE_NOT_MAPPED"]);
    assert!(!s.machine.is_mapped(va, 1), "the whole mapping is gone after the first unmap");
}

#[test]
fn mmio_outside_every_bar_stops_the_run() {
    let Some(mut s) = system() else { return };
    let map = stub(&mut s, "MmMapIoSpaceEx");
    let (read, _) = register_accessors(&mut s);
    let va = call(&mut s, map, &[BAR_GPA, PAGE, u64::from(PAGE_READWRITE)]);
    let err = s.machine.call(&mut s.nt, read, &[va]).unwrap_err();
    assert!(matches!(&err, Stop::Host(why) if why.contains("no device")), "{err:?}");
}

#[test]
fn mm_get_physical_memory_ranges_lists_ram_in_a_pool_block_freed_with_ex_free_pool() {
    let Some(mut s) = system() else { return };
    let get = stub(&mut s, "MmGetPhysicalMemoryRanges");
    let ex_free_pool = stub(&mut s, "ExFreePool");
    let block = call(&mut s, get, &[]);
    assert_ne!(block, 0);
    let m = &s.machine;
    let ram = m.memory().ram().to_vec();
    for (i, r) in ram.iter().enumerate() {
        let at = block + i as u64 * physical_memory_range::SIZE;
        assert_eq!(m.read_u64(at + physical_memory_range::BASE_ADDRESS).unwrap(), r.gpa);
        assert_eq!(m.read_u64(at + physical_memory_range::NUMBER_OF_BYTES).unwrap(), r.len);
    }
    let end = block + ram.len() as u64 * physical_memory_range::SIZE;
    assert_eq!((m.read_u64(end).unwrap(), m.read_u64(end + 8).unwrap()), (0, 0));
    assert!(!m.is_mapped(end + 16, 1), "the block ends at its page's end");
    assert!(s.nt.pool.live.contains_key(&block), "a live pool block of the caller until freed");
    call(&mut s, ex_free_pool, &[block]);
    assert!(s.nt.pool.live.is_empty());
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
}

#[test]
fn memory_over_reserves_the_machine_s_own_frames() {
    let own = capdma_winvm::RamRange { gpa: 1 << 20, len: 8 << 20 };
    let memory = hal::memory_over(32 << 20, own, Violations::new()).unwrap();
    // Everything handed out lies in [9 MiB, 32 MiB).
    let a = memory.allocate_contiguous(16 << 20, 4096, u64::MAX, "big").unwrap();
    assert!(a.page_addresses[0] >= 9 << 20 && *a.page_addresses.last().unwrap() < 32 << 20);
    assert!(memory.allocate_contiguous(8 << 20, 4096, u64::MAX, "too big").is_none());
    assert!(hal::memory_over(4 << 30, own, Violations::new()).is_err());
    assert!(hal::memory_over(32 << 20, capdma_winvm::RamRange { gpa: 1 << 20, len: 100 }, Violations::new()).is_err());
}

#[test]
fn the_bus_image_s_hal_imports_all_resolve() {
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/windows/release/capdma_bus.sys");
    if !image.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this test: {} not built", image.display());
        eprintln!("skipped: {} not built (cargo xtask windows)", image.display());
        return;
    }
    let Some(mut s) = system() else { return };
    let hal_ddis = ["IoGetDmaAdapter", "MmMapIoSpaceEx", "MmUnmapIoSpace", "MmGetPhysicalMemoryRanges"];
    match s.load_driver(&image) {
        Err(Stop::MissingImports { missing, .. }) => {
            let missing: Vec<&str> = missing.iter().map(|m| m.symbol.as_str()).collect();
            assert!(hal_ddis.iter().all(|d| !missing.contains(d)), "{missing:?}");
            eprintln!("still missing (other areas): {missing:?}");
        }
        other => assert!(other.is_ok(), "{other:?}"),
    }
}

#[test]
fn two_32_bit_adapters_get_separate_domains_with_different_logical_addresses() {
    let Some(mut s) = system() else { return };
    let (a, _) = get_adapter(&mut s, false, 1 << 20);
    let (b, _) = get_adapter(&mut s, false, 1 << 20);
    let (va_a, logical_a) = allocate(&mut s, a, 2 * PAGE);
    let (va_b, logical_b) = allocate(&mut s, b, 2 * PAGE);
    assert_ne!(logical_a, logical_b);
    assert!(logical_a < FOUR_GIB && logical_b < FOUR_GIB);
    // The domain the device model would use translates to the buffer's frames.
    let domain = hal::adapter_domain(&s.nt, a).unwrap();
    let frame = s.machine.address_space().translate(va_a + PAGE).unwrap();
    assert_eq!(domain.translate(logical_a + PAGE + 8, 4).unwrap(), vec![(frame + 8, 4)]);
    assert!(hal::adapter_domain(&s.nt, 0x1234).is_none());
    // Neither card reaches the other's buffer.
    assert!(!hal::device_write(&mut s.nt, &s.machine, a, logical_b, &[1]).unwrap());
    assert!(!hal::device_write(&mut s.nt, &s.machine, b, logical_a + PAGE, &[1]).unwrap());
    assert_eq!(rules(&s), ["DMA_REMAPPING_FAULT", "DMA_REMAPPING_FAULT"]);
    assert_eq!(s.machine.read_u8(va_b).unwrap(), COMMON_BUFFER_FILL);
    assert_eq!(s.machine.read_u8(va_a + PAGE).unwrap(), COMMON_BUFFER_FILL);
}

#[test]
fn the_memory_manager_ddis_check_their_irql() {
    let Some(mut s) = system() else { return };
    hal::attach_bar(&mut s.nt, BAR_GPA, PAGE, Box::new(Recorder::default())).unwrap();
    let map = stub(&mut s, "MmMapIoSpaceEx");
    let unmap = stub(&mut s, "MmUnmapIoSpace");
    let get = stub(&mut s, "MmGetPhysicalMemoryRanges");
    // Up to DISPATCH_LEVEL: fine.
    s.nt.irql = DISPATCH_LEVEL;
    let va = call(&mut s, map, &[BAR_GPA, PAGE, u64::from(PAGE_READWRITE | PAGE_NOCACHE)]);
    call(&mut s, unmap, &[va, PAGE]);
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
    // MmGetPhysicalMemoryRanges is PASSIVE_LEVEL only; the others stop at DISPATCH_LEVEL.
    call(&mut s, get, &[]);
    s.nt.irql = DISPATCH_LEVEL + 1;
    call(&mut s, map, &[BAR_GPA, PAGE, u64::from(PAGE_READWRITE | PAGE_NOCACHE)]);
    s.nt.irql = 0;
    assert_eq!(rules(&s), ["IRQL_TOO_HIGH", "IRQL_TOO_HIGH"]);
    assert!(s.nt.verifier.findings[0].detail.contains("MmGetPhysicalMemoryRanges"));
    assert!(s.nt.verifier.findings[1].detail.contains("MmMapIoSpaceEx"));
}

#[test]
fn reserve_frames_takes_exactly_the_range_or_refuses() {
    let memory = PhysicalMemory::new(MemoryConfig { high_memory: false, ram_bytes: 64 << 20, ..MemoryConfig::default() }, Violations::new());
    let own = capdma_winvm::RamRange { gpa: 2 << 20, len: 4 << 20 };
    let taken = hal::reserve_frames(&memory, own).unwrap();
    assert_eq!(taken.page_addresses.first(), Some(&(2 << 20)));
    assert_eq!(taken.page_addresses.len(), 1024);
    // Overlapping frames already taken, or not page-aligned: refused, nothing held.
    let live = memory.live_allocations().len();
    assert!(hal::reserve_frames(&memory, capdma_winvm::RamRange { gpa: 5 << 20, len: 2 << 20 }).is_err());
    assert!(hal::reserve_frames(&memory, capdma_winvm::RamRange { gpa: 5 << 20, len: 100 }).is_err());
    assert_eq!(memory.live_allocations().len(), live);
}
