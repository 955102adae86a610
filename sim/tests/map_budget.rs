//! The process's real mapping budget (`vm.max_map_count`): scattered
//! allocations take host mappings until the budget is spent, then fail
//! with a clear error instead of the host refusing `mmap` (or crashing).
//! Its own test binary: it spends the whole budget of its process.
use capdma_sim::memory::host::{mapping_budget, max_map_count, process_mappings, MAPPING_HEADROOM};
use capdma_sim::memory::{MemoryConfig, MemoryError, PhysicalMemory, PAGE_SIZE};
use capdma_sim::violations::Violations;

#[test]
fn scattered_views_stop_at_the_process_budget_with_a_clear_error() {
    let m = PhysicalMemory::new(MemoryConfig::default(), Violations::new());
    assert_eq!(mapping_budget(), max_map_count() - MAPPING_HEADROOM);
    let mut live = Vec::new();
    let err = loop {
        // 4 MiB buffers, about 390 runs (mappings) each; the pages are never touched.
        match m.allocate_scattered(4 << 20, "buffer") {
            Ok(a) => live.push(a),
            Err(e) => break e,
        }
        assert!(live.len() < 10_000, "the budget never hit");
    };
    let MemoryError::MappingLimit { needed, in_use, limit } = err else { panic!("not the budget: {err}") };
    assert_eq!(limit, mapping_budget());
    assert!(in_use + needed > limit && in_use <= limit);
    assert_eq!(m.stats().host_mappings, in_use);
    assert!(err.to_string().contains("vm.max_map_count"), "{err}");
    // The kernel's own limit was never reached: the process still has room.
    let held = process_mappings().unwrap();
    assert!(held < max_map_count(), "{held} mappings");
    assert!(held >= in_use, "{held} < {in_use}");
    // The memory still works: a read, a write, and after a free the same request.
    let last = live.last().unwrap();
    m.write_virtual(last.va, &[1, 2, 3]).unwrap();
    let mut three = [0u8; 3];
    m.read_physical(last.page_addresses[0], &mut three).unwrap();
    assert_eq!(three, [1, 2, 3]);
    let first = live.remove(0);
    assert!(m.free(first.id));
    live.push(m.allocate_scattered(4 << 20, "buffer").unwrap());
    println!(
        "{} buffers of {} pages held {} mappings (budget {limit}, process {held}, vm.max_map_count {})",
        live.len(),
        (4 << 20) / PAGE_SIZE,
        in_use,
        max_map_count()
    );
    for a in live {
        assert!(m.free(a.id));
    }
    assert_eq!(m.stats().host_mappings, 0);
}
