//! Unit tests of the memory model: placement, the allocator's checks and
//! the host backing (one file seen through the linear map and the views).
use super::*;
use crate::dma::iommu::RangeKind;
use std::collections::BTreeSet;

fn mem(config: MemoryConfig) -> (PhysicalMemory, Violations) {
    let v = Violations::new();
    (PhysicalMemory::new(config, v.clone()), v)
}

#[test]
fn scattered_pages_are_spread_high_and_have_some_adjacent_runs() {
    let (m, v) = mem(MemoryConfig::default());
    let a = m.allocate_scattered(400 * PAGE_SIZE, "frame").unwrap();
    assert_eq!(a.pages(), 400);
    assert!(a.page_addresses.iter().any(|&pa| pa >= FOUR_GIB));
    assert!(a.page_addresses.iter().all(|&pa| pa >= RAM_START && !(PCI_HOLE_START..FOUR_GIB).contains(&pa)));
    let adjacent = a.page_addresses.windows(2).filter(|w| w[1] == w[0] + PAGE).count();
    assert!(adjacent > 20 && adjacent < 399, "adjacent pairs: {adjacent}");
    let distinct: BTreeSet<_> = a.page_addresses.iter().collect();
    assert_eq!(distinct.len(), 400);
    // Same seed, same placement.
    let (m2, _) = mem(MemoryConfig::default());
    assert_eq!(m2.allocate_scattered(400 * PAGE_SIZE, "frame").unwrap().page_addresses, a.page_addresses);
    assert!(m.free(a.id));
    assert!(v.is_empty());
}

#[test]
fn without_high_memory_everything_is_below_the_hole() {
    let (m, _) = mem(MemoryConfig { high_memory: false, ..MemoryConfig::default() });
    assert!(!m.has_memory_above_4gib());
    let a = m.allocate_scattered(100 * PAGE_SIZE, "frame").unwrap();
    assert!(a.page_addresses.iter().all(|&pa| pa < PCI_HOLE_START));
    assert!(m.free(a.id));
}

#[test]
fn contiguous_respects_alignment_and_limit_and_va_maps_back() {
    let (m, _) = mem(MemoryConfig::default());
    let a = m.allocate_contiguous(3 * PAGE_SIZE + 5, 64 * 1024, FOUR_GIB, "ring").unwrap();
    assert_eq!(a.page_addresses[0] % (64 * 1024), 0);
    assert!(*a.page_addresses.last().unwrap() + PAGE <= FOUR_GIB);
    assert!(a.page_addresses.windows(2).all(|w| w[1] == w[0] + PAGE));
    let b = m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, u64::MAX, "high").unwrap();
    assert!(b.page_addresses[0] >= FOUR_GIB);
    assert_eq!(m.physical_address(a.va.wrapping_add(100)), Some(a.page_addresses[0] + 100));
    assert_eq!(m.physical_address(a.va.wrapping_add(3 * PAGE_SIZE + 5)), None);
    m.write_virtual(a.va.wrapping_add(4095), &[7, 8]).unwrap();
    let mut two = [0u8; 2];
    m.read_physical(a.page_addresses[0] + 4095, &mut two).unwrap();
    assert_eq!(two, [7, 8]);
    assert!(m.read_virtual(a.va.wrapping_add(3 * PAGE_SIZE + 4), &mut two).is_err());
    m.read_virtual(a.va.wrapping_add(3 * PAGE_SIZE + 3), &mut two).unwrap();
    assert_eq!(m.host_ptr(a.page_addresses[1] + 7), Some(a.va.wrapping_add(PAGE_SIZE + 7)));
    assert!(m.free(a.id));
    assert!(m.free(b.id));
}

#[test]
fn contiguous_failure_injection() {
    let (m, _) = mem(MemoryConfig { contiguous_failure: Some(ContiguousFailure::Nth(2)), ..MemoryConfig::default() });
    let a = m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "a").unwrap();
    assert!(m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "b").is_none());
    let c = m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "c").unwrap();
    m.set_contiguous_failure(Some(ContiguousFailure::Always));
    assert!(m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "d").is_none());
    assert_eq!(m.stats().contiguous_failures, 2);
    assert!(m.free(a.id) && m.free(c.id));
}

#[test]
fn platform_memory_is_exempt_from_fault_injection() {
    let (m, _) = mem(MemoryConfig { contiguous_failure: Some(ContiguousFailure::Nth(1)), ..MemoryConfig::default() });
    // Not counted: the first injectable attempt after it still fails.
    let p = m.allocate_platform(2 * PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "page tables").unwrap();
    assert_eq!(p.kind, AllocationKind::Contiguous);
    assert!(m.allocate_contiguous(PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "a").is_none());
    m.set_contiguous_failure(Some(ContiguousFailure::Always));
    let q = m.allocate_platform(PAGE_SIZE, 1 << 21, u64::MAX, "stack").unwrap();
    assert_eq!(q.page_addresses[0] % (1 << 21), 0);
    assert_eq!(m.stats().contiguous_failures, 1);
    // Real failures still say why.
    assert_eq!(m.allocate_platform(PAGE_SIZE, 3 * PAGE_SIZE, FOUR_GIB, "x").unwrap_err(), MemoryError::BadAlignment(3 * PAGE_SIZE));
    assert_eq!(m.allocate_platform(PAGE_SIZE, PAGE_SIZE, RAM_START, "x").unwrap_err(), MemoryError::OutOfMemory);
    assert!(m.free(p.id) && m.free(q.id));
}

#[test]
fn double_free_is_a_violation() {
    let (m, v) = mem(MemoryConfig::default());
    let a = m.allocate_scattered(10, "x").unwrap();
    assert!(m.free(a.id));
    assert!(!m.free(a.id));
    assert_eq!(v.count(ViolationKind::Memory), 1);
    assert!(v.list()[0].contains("freed twice"));
}

#[test]
fn leak_report_lists_live_allocations() {
    let (m, _) = mem(MemoryConfig::default());
    let a = m.allocate_scattered(5000, "frame buffer 3").unwrap();
    let b = m.allocate_contiguous(100, PAGE_SIZE, FOUR_GIB, "CQ ch0").unwrap();
    assert!(m.free(a.id));
    let leaks = m.leaks();
    assert_eq!(leaks.len(), 1);
    assert!(leaks[0].contains("CQ ch0"), "{leaks:?}");
    assert!(m.free(b.id));
    assert!(m.leaks().is_empty());
}

#[test]
fn dma_write_to_an_unmapped_page_is_flagged_and_not_written() {
    let (m, v) = mem(MemoryConfig::default());
    let a = m.allocate_scattered(2 * PAGE_SIZE, "frame").unwrap();
    let pa = a.page_addresses[1];
    assert!(m.dma_write(pa, &[1, 2, 3]).is_err());
    assert_eq!(v.count(ViolationKind::Dma), 1);
    let mut buf = [9u8; 3];
    m.read_physical(pa, &mut buf).unwrap();
    assert_eq!(buf, [0, 0, 0]);
    // Mapped: the write lands.
    let id = m.iommu().register(pa, 3, RangeKind::ScatterGather, "test");
    m.dma_write(pa, &[1, 2, 3]).unwrap();
    m.read_physical(pa, &mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3]);
    // One byte beyond the mapped range: refused whole.
    assert!(m.dma_write(pa, &[7, 7, 7, 7]).is_err());
    m.read_physical(pa, &mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3]);
    // Freed while mapped.
    assert!(m.free(a.id));
    assert_eq!(v.count(ViolationKind::Dma), 3, "{:?}", v.list());
    assert!(m.iommu().unregister(id));
}

#[test]
fn cpu_access_to_unallocated_memory_is_an_error() {
    let (m, _) = mem(MemoryConfig::default());
    let mut b = [0u8; 4];
    assert_eq!(m.read_physical(RAM_START, &mut b), Err(MemoryError::NotAllocated(RAM_START)));
    assert_eq!(m.allocate_scattered(0, "x").unwrap_err(), MemoryError::ZeroBytes);
}

// ---- The host backing: one file, the linear map, the views. ----

/// Lines of `/proc/self/maps` that map `m`'s file: `(start, end, perms)`.
fn file_mappings(m: &PhysicalMemory) -> Vec<(usize, usize, String)> {
    let name = format!("/memfd:{} ", m.backing().name);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| l.contains(&name))
        .map(|l| {
            let mut fields = l.split_whitespace();
            let (start, end) = fields.next().unwrap().split_once('-').unwrap();
            let perms = fields.next().unwrap().to_string();
            (usize::from_str_radix(start, 16).unwrap(), usize::from_str_radix(end, 16).unwrap(), perms)
        })
        .collect()
}

/// Blocks of 512 bytes the file holds (`st_blocks`).
fn file_blocks(m: &PhysicalMemory) -> i64 {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is the memory's live descriptor; `st` is a valid out-pointer.
    assert_eq!(unsafe { libc::fstat(m.backing().fd, st.as_mut_ptr()) }, 0);
    // SAFETY: fstat succeeded, so it filled `st`.
    unsafe { st.assume_init() }.st_blocks
}

/// Reads `len` bytes at physical address `pa` through the linear map.
fn linear_bytes(m: &PhysicalMemory, pa: u64, len: usize) -> Vec<u8> {
    let b = m.backing();
    assert!(pa + len as u64 <= b.bytes);
    let mut out = vec![0u8; len];
    // SAFETY: `[pa, pa + len)` is inside the linear map, which lives as long
    // as `m`; the callers only read RAM (never the PROT_NONE parts).
    unsafe { std::ptr::copy(b.linear_base.wrapping_add(pa as usize), out.as_mut_ptr(), len) };
    out
}

#[test]
fn backing_is_one_file_whose_ram_ranges_skip_low_memory_and_the_pci_hole() {
    let (m, _) = mem(MemoryConfig::default());
    let b = m.backing();
    let high = (16 << 30) + RAM_START - PCI_HOLE_START;
    assert_eq!(b.ram, [(RAM_START, PCI_HOLE_START - RAM_START), (FOUR_GIB, high)]);
    assert_eq!(b.bytes, m.highest_physical_address() + 1);
    assert_eq!(b.bytes, FOUR_GIB + high);
    assert_eq!(b.linear_base.addr() % PAGE_SIZE, 0);
    assert!(b.fd >= 0);
    // Sparse: the 17 GiB file holds nothing yet.
    assert_eq!(file_blocks(&m), 0);
    // The linear map: RAM read/write and shared; the first MiB and the hole inaccessible.
    let base = b.linear_base.addr();
    let maps = file_mappings(&m);
    let perms_at = |pa: u64| maps.iter().find(|(s, e, _)| (*s..*e).contains(&(base + pa as usize))).map(|(_, _, p)| p.as_str());
    assert_eq!(perms_at(0), Some("---s"));
    assert_eq!(perms_at(RAM_START), Some("rw-s"));
    assert_eq!(perms_at(PCI_HOLE_START - 1), Some("rw-s"));
    assert_eq!(perms_at(PCI_HOLE_START), Some("---s"));
    assert_eq!(perms_at(FOUR_GIB - 1), Some("---s"));
    assert_eq!(perms_at(FOUR_GIB), Some("rw-s"));
    assert_eq!(perms_at(b.bytes - 1), Some("rw-s"));
    assert_eq!(maps.len(), 4, "{maps:x?}");
    // Without high memory: one range, capped at the hole.
    let (low, _) = mem(MemoryConfig { high_memory: false, ..MemoryConfig::default() });
    assert_eq!(low.backing().ram, [(RAM_START, PCI_HOLE_START - RAM_START)]);
    assert_eq!(low.backing().bytes, PCI_HOLE_START);
    // A small machine: the file ends with its RAM.
    let (small, _) = mem(MemoryConfig { ram_bytes: 64 * PAGE, ..MemoryConfig::default() });
    assert_eq!(small.backing().ram, [(RAM_START, 64 * PAGE)]);
    assert_eq!(small.backing().bytes, RAM_START + 64 * PAGE);
}

#[test]
fn a_dma_write_is_seen_through_the_view_the_linear_map_and_another_mapping_of_the_file() {
    let (m, v) = mem(MemoryConfig::default());
    let a = m.allocate_scattered(64 * PAGE_SIZE, "frame").unwrap();
    // A page boundary between two physically distant pages.
    let i = a.page_addresses.windows(2).position(|w| w[1] != w[0] + PAGE).unwrap();
    let pa = a.page_addresses[i] + PAGE - 2;
    let next = a.page_addresses[i + 1];
    let id = m.iommu().register(pa, 2, RangeKind::ScatterGather, "test");
    let id2 = m.iommu().register(next, 2, RangeKind::ScatterGather, "test");
    m.dma_write(pa, &[1, 2]).unwrap();
    m.dma_write(next, &[3, 4]).unwrap();
    // The allocation's view: the four bytes are adjacent there.
    let offset = (i + 1) * PAGE_SIZE - 2;
    let mut four = [0u8; 4];
    m.read_virtual(a.va.wrapping_add(offset), &mut four).unwrap();
    assert_eq!(four, [1, 2, 3, 4]);
    // The linear map, by physical address.
    assert_eq!(linear_bytes(&m, pa, 2), [1, 2]);
    assert_eq!(linear_bytes(&m, next, 2), [3, 4]);
    assert_eq!(m.host_ptr(pa), Some(m.backing().linear_base.wrapping_add(pa as usize)));
    // What a virtual machine would do: map the file itself.
    // SAFETY: the descriptor is the memory's, live as long as `m`.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(m.backing().fd) };
    let page = (pa / PAGE) * PAGE;
    let guest = host::Mapping::shared(fd, page, PAGE_SIZE, false).unwrap();
    // SAFETY: byte `PAGE - 2` of the one-page mapping.
    assert_eq!(unsafe { guest.as_ptr().wrapping_add(PAGE_SIZE - 2).read() }, 1);
    // And the other way round: a write by the "guest" shows in the view.
    // SAFETY: as above, in bounds.
    unsafe { guest.as_ptr().wrapping_add(PAGE_SIZE - 1).write(9) };
    m.read_virtual(a.va.wrapping_add(offset), &mut four).unwrap();
    assert_eq!(four, [1, 9, 3, 4]);
    // A CPU write through the view shows by physical address.
    m.write_virtual(a.va.wrapping_add(offset + 2), &[7]).unwrap();
    let mut one = [0u8];
    m.read_physical(next, &mut one).unwrap();
    assert_eq!(one, [7]);
    assert!(m.iommu().unregister(id) && m.iommu().unregister(id2));
    assert!(m.free(a.id));
    assert!(v.is_empty(), "{:?}", v.list());
}

#[test]
fn a_scattered_view_maps_the_right_frames_in_the_right_order() {
    let (m, _) = mem(MemoryConfig::default());
    let a = m.allocate_scattered(300 * PAGE_SIZE - 100, "frame").unwrap();
    // Tag every frame by physical address, then read the tags through the view.
    for (i, &pa) in a.page_addresses.iter().enumerate() {
        m.write_physical(pa, &(i as u64 + 1).to_le_bytes()).unwrap();
    }
    for i in 0..a.pages() {
        let mut tag = [0u8; 8];
        m.read_virtual(a.va.wrapping_add(i * PAGE_SIZE), &mut tag).unwrap();
        assert_eq!(u64::from_le_bytes(tag), i as u64 + 1, "page {i}");
        assert_eq!(m.physical_address(a.va.wrapping_add(i * PAGE_SIZE + 5)), Some(a.page_addresses[i] + 5));
    }
    // One host mapping per run of physically adjacent pages, all inside the view.
    let runs = frames::runs(&a.page_addresses.iter().map(|pa| pa / PAGE).collect::<Vec<_>>()).len();
    assert!(runs > 10 && runs < a.pages(), "runs: {runs}");
    assert_eq!(m.stats().host_mappings, runs);
    let view = a.va.addr()..a.va.addr() + a.pages() * PAGE_SIZE;
    let in_view: Vec<_> = file_mappings(&m).into_iter().filter(|(s, _, _)| view.contains(s)).collect();
    assert_eq!(in_view.len(), runs);
    assert!(in_view.iter().all(|(_, e, p)| *e <= view.end && p == "rw-s"));
    assert_eq!(in_view.iter().map(|(s, e, _)| e - s).sum::<usize>(), view.len());
    assert!(m.free(a.id));
    assert_eq!((m.stats().host_mappings, m.stats().peak_host_mappings), (0, runs));
}

#[test]
fn a_freed_allocation_is_unmapped_punched_and_unreachable() {
    let (m, violations) = mem(MemoryConfig::default());
    let scattered = m.allocate_scattered(40 * PAGE_SIZE, "frame").unwrap();
    let contiguous = m.allocate_contiguous(8 * PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "ring").unwrap();
    m.write_virtual(scattered.va, &vec![0x5A; scattered.bytes]).unwrap();
    m.write_virtual(contiguous.va, &vec![0xC3; contiguous.bytes]).unwrap();
    assert!(file_blocks(&m) >= 48 * 8, "48 pages of 8 blocks");
    let views_before = file_mappings(&m).len();
    assert!(views_before > 4);
    assert!(m.free(scattered.id) && m.free(contiguous.id));
    // The frames are holes again: no memory, zeros through the linear map.
    assert_eq!(file_blocks(&m), 0);
    for pa in scattered.page_addresses.iter().chain(&contiguous.page_addresses) {
        assert_eq!(linear_bytes(&m, *pa, PAGE_SIZE), vec![0; PAGE_SIZE]);
    }
    // The scattered view is gone; only the linear map's four pieces are left.
    assert_eq!(file_mappings(&m).len(), 4);
    assert_eq!(m.stats().host_mappings, 0);
    // Neither address nor frame leads to the allocation any more.
    for (a, pa) in [(&scattered, scattered.page_addresses[3]), (&contiguous, contiguous.page_addresses[3])] {
        assert!(m.allocation_at(a.va).is_none());
        assert!(m.allocation(a.id).is_none());
        assert_eq!(m.physical_address(a.va.wrapping_add(10)), None);
        assert_eq!(m.host_ptr(pa), None);
        let mut byte = [0u8; 1];
        assert_eq!(m.read_virtual(a.va, &mut byte), Err(MemoryError::NotAllocated(0)));
        assert_eq!(m.read_physical(pa, &mut byte), Err(MemoryError::NotAllocated(pa)));
    }
    assert!(violations.is_empty(), "{:?}", violations.list());
}

#[test]
fn contiguous_memory_holds_the_fill_pattern_and_scattered_memory_zeros_even_reused() {
    // A small machine, so that allocations reuse the same frames.
    let config = MemoryConfig { high_memory: false, ram_bytes: 64 * PAGE, ..MemoryConfig::default() };
    let (m, _) = mem(config);
    let c = m.allocate_contiguous(3 * PAGE_SIZE + 5, PAGE_SIZE, FOUR_GIB, "ring").unwrap();
    // Every word of every page, the tail of the last page too.
    let mut pages = vec![0u8; 4 * PAGE_SIZE];
    m.read_physical(c.page_addresses[0], &mut pages).unwrap();
    assert!(pages.chunks_exact(4).all(|w| w == [0x0D, 0xF0, 0xAD, 0xBA]));
    assert_eq!(u32::from_le_bytes(pages[..4].try_into().unwrap()), CONTIGUOUS_FILL);
    // Scribbled on, freed, taken again (top-down: the same frames): the pattern again.
    m.write_virtual(c.va, &[0; 64]).unwrap();
    assert!(m.free(c.id));
    let c2 = m.allocate_contiguous(3 * PAGE_SIZE + 5, PAGE_SIZE, FOUR_GIB, "ring").unwrap();
    assert_eq!(c2.page_addresses, c.page_addresses);
    let mut head = [0u8; 64];
    m.read_virtual(c2.va, &mut head).unwrap();
    assert!(head.chunks_exact(4).all(|w| u32::from_le_bytes(w.try_into().unwrap()) == CONTIGUOUS_FILL));
    assert!(m.free(c2.id));
    // Every frame of RAM written, freed; then scattered memory: zeros.
    let all = m.allocate_contiguous(64 * PAGE_SIZE, PAGE_SIZE, FOUR_GIB, "all").unwrap();
    m.write_virtual(all.va, &vec![0xEE; all.bytes]).unwrap();
    assert!(m.free(all.id));
    let a = m.allocate_scattered(32 * PAGE_SIZE, "frame").unwrap();
    let mut bytes = vec![1u8; a.bytes];
    m.read_virtual(a.va, &mut bytes).unwrap();
    assert!(bytes.iter().all(|&b| b == 0));
    assert!(m.free(a.id));
}

#[test]
fn the_mapping_limit_is_a_clear_error_that_takes_nothing() {
    let (m, v) = mem(MemoryConfig::default());
    m.set_view_mapping_limit(Some(100));
    let mut live = Vec::new();
    let err = loop {
        match m.allocate_scattered(32 * PAGE_SIZE, "buffer") {
            Ok(a) => live.push(a),
            Err(e) => break e,
        }
        assert!(live.len() < 100, "the limit never hit");
    };
    let MemoryError::MappingLimit { needed, in_use, limit } = err else { panic!("{err:?}") };
    assert_eq!(limit, 100);
    assert_eq!(in_use, m.stats().host_mappings);
    assert!(in_use + needed > 100 && in_use <= 100);
    let text = err.to_string();
    assert!(text.contains("vm.max_map_count") && text.contains(&format!("needs {needed} host mappings")), "{text}");
    // Nothing taken: the frames are free, no view, no allocation.
    assert_eq!(m.stats().live_allocations, live.len());
    assert_eq!(file_mappings(&m).len(), 4 + m.stats().host_mappings);
    assert!(m.stats().host_mappings <= 100);
    // Room made: the same request succeeds.
    let first = live.remove(0);
    assert!(m.free(first.id));
    m.set_view_mapping_limit(None);
    let again = m.allocate_scattered(32 * PAGE_SIZE, "buffer").unwrap();
    for a in live.into_iter().chain([again]) {
        assert!(m.free(a.id));
    }
    assert!(v.is_empty());
    assert_eq!(m.stats().host_mappings, 0);
}
