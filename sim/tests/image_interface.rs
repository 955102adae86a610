//! The host thunks over a bus interface table that lives in the guest: a
//! table of hand-assembled guest routines stands in for the image's, and
//! the host calls it function pointer by function pointer as the AVStream
//! core does. Needs `/dev/kvm` (skips outside CI without it).

mod support;

use std::cell::RefCell;

use capdma_interface::status::NtStatus;
use capdma_interface::table::{CapdmaBusInterface, Completion, DmaConfig, SgElement};
use capdma_sim::image::{active, interface::ImageInterface};
use capdma_sim::nt::system::System;
use capdma_winvm::{Machine, Protection};
use iced_x86::code_asm::*;

fn system() -> Option<System> {
    support::system()
}

fn code(m: &mut Machine, build: impl FnOnce(&mut CodeAssembler)) -> u64 {
    let va = m.alloc_own_pages(1, Protection::READ_EXECUTE).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    build(&mut a);
    m.write(va, &a.assemble(va).unwrap()).unwrap();
    va
}

thread_local! {
    static COMPLETIONS: RefCell<Vec<(usize, Completion)>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "system" fn on_completion(context: *mut core::ffi::c_void, completion: *const Completion) {
    // SAFETY: the interface passes a valid Completion for the call.
    let completion = unsafe { *completion };
    COMPLETIONS.with(|c| c.borrow_mut().push((context as usize, completion)));
}

/// A guest table: `get_dma_config` writes {mode 7, reason = channel};
/// `program_frame` returns the sum of the elements' byte counts;
/// `register_completion` keeps the callback; `return_slot` calls it with a
/// `Completion` whose tag is the slot. The other routines return 0.
fn guest_table(m: &mut Machine) -> u64 {
    let data = m.alloc_own_pages(1, Protection::READ_WRITE).unwrap();
    let (cb, cb_ctx, completion) = (data, data + 8, data + 64);
    let ret0 = code(m, |a| {
        a.xor(eax, eax).unwrap();
        a.ret().unwrap();
    });
    let get_dma_config = code(m, |a| {
        a.mov(dword_ptr(r8), 7).unwrap();
        a.mov(dword_ptr(r8 + 4), edx).unwrap();
        a.xor(eax, eax).unwrap();
        a.ret().unwrap();
    });
    let program_frame = code(m, |a| {
        let mut top = a.create_label();
        let mut done = a.create_label();
        a.mov(r10d, dword_ptr(rsp + 0x28)).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut top).unwrap();
        a.test(r10d, r10d).unwrap();
        a.jz(done).unwrap();
        a.add(eax, dword_ptr(r9 + 8)).unwrap();
        a.add(r9, 16).unwrap();
        a.dec(r10d).unwrap();
        a.jmp(top).unwrap();
        a.set_label(&mut done).unwrap();
        a.ret().unwrap();
    });
    let register_completion = code(m, |a| {
        a.mov(rax, cb).unwrap();
        a.mov(qword_ptr(rax), r8).unwrap();
        a.mov(rax, cb_ctx).unwrap();
        a.mov(qword_ptr(rax), r9).unwrap();
        a.xor(eax, eax).unwrap();
        a.ret().unwrap();
    });
    let return_slot = code(m, |a| {
        a.sub(rsp, 0x28).unwrap();
        a.mov(rax, completion).unwrap();
        a.mov(dword_ptr(rax), edx).unwrap();
        a.mov(dword_ptr(rax + 8), r8d).unwrap();
        a.mov(rdx, rax).unwrap();
        a.mov(rax, cb_ctx).unwrap();
        a.mov(rcx, qword_ptr(rax)).unwrap();
        a.mov(rax, cb).unwrap();
        a.call(qword_ptr(rax)).unwrap();
        a.add(rsp, 0x28).unwrap();
        a.xor(eax, eax).unwrap();
        a.ret().unwrap();
    });
    let table = m.alloc_own_pages(1, Protection::READ_WRITE).unwrap();
    m.write_u16(table, 96).unwrap();
    m.write_u16(table + 2, 1).unwrap();
    m.write_u64(table + 8, 0x1234_5678).unwrap();
    let routines = [ret0, ret0, get_dma_config, ret0, program_frame, ret0, return_slot, ret0, ret0, register_completion];
    for (i, r) in routines.iter().enumerate() {
        m.write_u64(table + 16 + 8 * i as u64, *r).unwrap();
    }
    table
}

fn no_adapter(_: &capdma_sim::nt::Nt, _: u64) -> Option<*mut core::ffi::c_void> {
    None
}

#[test]
fn the_host_calls_a_guest_interface_table_through_thunks() {
    let Some(mut s) = system() else { return };
    let table_va = guest_table(&mut s.machine);
    let iface = ImageInterface::new(&s.machine, table_va, no_adapter).unwrap();
    assert_eq!(iface.guest().context, 0x1234_5678);
    let table: CapdmaBusInterface = iface.host_table();
    let ctx = table.header.context;
    let (m, nt) = (&mut s.machine, &mut s.nt);
    active::enter(m, nt, || {
        let mut config = DmaConfig::default();
        // SAFETY: the table's routines with its context and valid out-pointers.
        let status: NtStatus = unsafe { (table.get_dma_config.unwrap())(ctx, 3, &raw mut config) };
        assert_eq!(status, 0);
        assert_eq!((config.mode, config.reason), (7, 3));

        let elements = [
            SgElement { logical_address: 0x1000, byte_count: 100, alignment: 0 },
            SgElement { logical_address: 0x9000, byte_count: 23, alignment: 0 },
        ];
        // SAFETY: as above; two elements at `elements`.
        let sum = unsafe { (table.program_frame.unwrap())(ctx, 0, 5, elements.as_ptr(), 2) };
        assert_eq!(sum, 123, "the guest read the elements the host passed");

        // SAFETY: as above; the callback lives for the test.
        let status = unsafe { (table.register_completion.unwrap())(ctx, 2, Some(on_completion), 0xC0DE as *mut _) };
        assert_eq!(status, 0);
        // The guest calls the registered callback from inside return_slot.
        // SAFETY: as above.
        let status = unsafe { (table.return_slot.unwrap())(ctx, 2, 9) };
        assert_eq!(status, 0);
    });
    let seen = COMPLETIONS.with(|c| c.borrow().clone());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, 0xC0DE, "the host callback gets its own context back");
    assert_eq!((seen[0].1.channel, seen[0].1.tag), (2, 9));
    assert!(active::take_stop().is_none());
}

#[test]
fn a_thunk_called_with_no_machine_active_keeps_a_stop() {
    let Some(mut s) = system() else { return };
    let table_va = guest_table(&mut s.machine);
    let iface = ImageInterface::new(&s.machine, table_va, no_adapter).unwrap();
    let table = iface.host_table();
    // SAFETY: valid context; the thunk refuses (no machine active).
    let status = unsafe { (table.return_slot.unwrap())(table.header.context, 0, 0) };
    assert_eq!(status, capdma_interface::status::STATUS_DEVICE_REMOVED);
    assert!(active::take_stop().is_some());
}
