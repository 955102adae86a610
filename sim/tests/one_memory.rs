//! One memory: the VM's guest-physical RAM is the simulated machine's
//! physical memory, so bytes written through `PhysicalMemory` (where the
//! board's DMA goes) are what the guest CPU loads, and the guest's stores
//! are what the memory model reads. Needs `/dev/kvm`.

use capdma_sim::nt::system::System;
use capdma_winvm::{kvm_available, Protection};
use iced_x86::code_asm::*;

#[test]
fn guest_loads_and_stores_and_the_memory_model_share_bytes() {
    if let Err(why) = kvm_available() {
        assert!(std::env::var_os("CI").is_none(), "CI must have KVM: {why}");
        eprintln!("SKIPPED (not in CI): {why}");
        return;
    }
    let mut s = System::boot().unwrap();
    let buffer = s.memory.allocate_contiguous(8192, 4096, u64::MAX, "test buffer").expect("contiguous memory");
    let frames = buffer.page_addresses.clone();
    let va = s.machine.map_frames(&frames, Protection::READ_WRITE).unwrap();
    // The model writes at a physical address in the second page.
    s.memory.write_physical(frames[1] + 8, &0x1122_3344_5566_7788_u64.to_le_bytes()).unwrap();
    // f(p): old = p[0x1008]; p[0x10] = 0xABCD; return old
    let code_va = s.machine.alloc_own_pages(1, Protection::READ_EXECUTE).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(rax, qword_ptr(rcx + 0x1008)).unwrap();
    a.mov(qword_ptr(rcx + 0x10), 0xABCD).unwrap();
    a.ret().unwrap();
    s.machine.write(code_va, &a.assemble(code_va).unwrap()).unwrap();
    let loaded = s.machine.call(&mut s.nt, code_va, &[va]).unwrap();
    assert_eq!(loaded, 0x1122_3344_5566_7788, "the guest loaded what the memory model wrote");
    let mut stored = [0u8; 8];
    s.memory.read_physical(frames[0] + 0x10, &mut stored).unwrap();
    assert_eq!(u64::from_le_bytes(stored), 0xABCD, "the memory model reads what the guest stored");
    assert!(s.memory.free(buffer.id));
}
