//! The vCPU's static state: GDT with Windows' selectors, a 64-bit TSS whose
//! `RSP0` is the ring-0 trap stack, an IDT whose 256 handlers each leave to
//! the host with their vector, the return trap, and the control registers
//! of long mode with SSE enabled.
//!
//! Guest code runs at CPL3 with IOPL 3: on the `kvm_pvm` backend ring-0 code
//! is instruction-emulated (slow, and it fails on SSE) while CPL3 code runs
//! natively; on hardware KVM both work. A trap from CPL3 switches to the
//! ring-0 stack in the TSS and runs the handler, which executes
//! `push rax; mov eax, vector; out 0xE0, eax; pop rax; [add rsp, 8]; iretq`.

use kvm_bindings::{kvm_fpu, kvm_segment, kvm_sregs, kvm_xcr, kvm_xcrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

use crate::layout::{
    KERNEL_CS, KERNEL_SS, PAGE_SIZE, PORT_EXCEPTION, PORT_RETURN, SYSTEM_BASE, TSS_SELECTOR, USER_CS, USER_DS,
};
use crate::memory::GuestMemory;
use crate::paging::{AddressSpace, Protection};
use crate::Stop;

/// GDT (at +0) and TSS (at +0x800).
const GDT_VA: u64 = SYSTEM_BASE;
const TSS_VA: u64 = SYSTEM_BASE + 0x800;
const GDT_LIMIT: u16 = 0x4F;
/// The 64-bit TSS (0x68 bytes) plus an I/O permission bitmap allowing
/// ports 0..=0xFF (32 zero bytes) and its terminating 0xFF byte.
const TSS_LIMIT: u32 = 0x68 + 32;
const IDT_VA: u64 = SYSTEM_BASE + PAGE_SIZE;
const HANDLERS_VA: u64 = SYSTEM_BASE + 2 * PAGE_SIZE;
/// Bytes per IDT handler.
const HANDLER_SIZE: u64 = 16;
/// The return trap: `out 0xE1, eax; ud2`.
pub const RETURN_TRAP_VA: u64 = SYSTEM_BASE + 4 * PAGE_SIZE;
const TRAP_STACK_VA: u64 = SYSTEM_BASE + 6 * PAGE_SIZE;
const TRAP_STACK_PAGES: u64 = 4;
/// First page of the stubs (see [`crate::Machine::add_stub`]).
pub const STUBS_VA: u64 = SYSTEM_BASE + 0x10_0000;

/// Vectors that push an error code (Intel SDM vol. 3, table 6-1).
pub const VECTORS_WITH_ERROR_CODE: [u8; 9] = [8, 10, 11, 12, 13, 14, 17, 21, 29];

/// Vectors a CPL3 `int n` may raise (gate DPL 3): `int3` (#BP), `int 0x29`
/// (`__fastfail`), `int 0x2C` (`__assertfail`), `int 0x2D` (debug service).
const USER_GATES: [u8; 4] = [3, 0x29, 0x2C, 0x2D];

/// Builds the static structures in guest memory and maps them.
pub(crate) fn build_tables(mem: &mut GuestMemory, space: &mut AddressSpace) -> Result<(), Stop> {
    let ring0_data = Protection { write: true, execute: false, user: false };
    let ring0_code = Protection { write: false, execute: true, user: false };

    // GDT + TSS page.
    let gdt_frame = map_new(mem, space, GDT_VA, ring0_data)?;
    let mut gdt = [0u64; 10];
    gdt[usize::from(KERNEL_CS / 8)] = 0x0020_9A00_0000_0000;
    gdt[usize::from(KERNEL_SS / 8)] = 0x00CF_9200_0000_FFFF;
    gdt[usize::from(USER_DS / 8)] = 0x00CF_F200_0000_FFFF;
    gdt[usize::from(USER_CS / 8)] = 0x0020_FA00_0000_0000;
    let tss_low = u64::from(TSS_LIMIT & 0xFFFF)
        | ((TSS_VA & 0xFF_FFFF) << 16)
        | (0x89 << 40)
        | (((TSS_VA >> 24) & 0xFF) << 56);
    gdt[usize::from(TSS_SELECTOR / 8)] = tss_low;
    gdt[usize::from(TSS_SELECTOR / 8) + 1] = TSS_VA >> 32;
    let bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write(gdt_frame, &bytes)?;
    // TSS: RSP0 at +4; the I/O permission bitmap at +0x68 lets CPL3 use
    // the machine's ports (IOPL 3 alone is not honoured by every backend).
    let tss = gdt_frame + 0x800;
    mem.write_u64(tss + 4, TRAP_STACK_VA + TRAP_STACK_PAGES * PAGE_SIZE)?;
    mem.write(tss + 0x66, &0x68u16.to_le_bytes())?;
    mem.write(tss + 0x68 + 32, &[0xFF])?;

    // IDT and its handlers.
    let idt_frame = map_new(mem, space, IDT_VA, ring0_data)?;
    map_new(mem, space, HANDLERS_VA, ring0_code)?;
    map_new(mem, space, HANDLERS_VA + PAGE_SIZE, ring0_code)?;
    for vector in 0..=255u8 {
        let mut code = vec![0x50, 0xB8];
        code.extend_from_slice(&u32::from(vector).to_le_bytes());
        code.extend_from_slice(&[0xE7, port_byte(PORT_EXCEPTION), 0x58]);
        if VECTORS_WITH_ERROR_CODE.contains(&vector) {
            code.extend_from_slice(&[0x48, 0x83, 0xC4, 0x08]);
        }
        code.extend_from_slice(&[0x48, 0xCF]);
        let offset = u64::from(vector) * HANDLER_SIZE;
        // The handlers span two pages; frames of consecutive pages are
        // not adjacent, so write through the translation.
        let va = HANDLERS_VA + offset;
        let gpa = space.translate(va).ok_or_else(|| Stop::Host("IDT handler page unmapped".into()))?;
        mem.write(gpa, &code)?;
        let handler = va;
        let dpl: u64 = if USER_GATES.contains(&vector) { 3 } else { 0 };
        let low = (handler & 0xFFFF)
            | (u64::from(KERNEL_CS) << 16)
            | ((0x8E | (dpl << 5)) << 40)
            | (((handler >> 16) & 0xFFFF) << 48);
        let high = handler >> 32;
        let gate = idt_frame + u64::from(vector) * 16;
        mem.write_u64(gate, low)?;
        mem.write_u64(gate + 8, high)?;
    }

    // Return trap (executed at CPL3).
    let trap = map_new(mem, space, RETURN_TRAP_VA, Protection::READ_EXECUTE)?;
    mem.write(trap, &[0xE7, port_byte(PORT_RETURN), 0x0F, 0x0B])?;

    // Ring-0 trap stack.
    for page in 0..TRAP_STACK_PAGES {
        map_new(mem, space, TRAP_STACK_VA + page * PAGE_SIZE, ring0_data)?;
    }
    Ok(())
}

fn port_byte(port: u16) -> u8 {
    u8::try_from(port).unwrap_or(0)
}

/// Maps a fresh zeroed frame at `va`; returns the frame.
pub(crate) fn map_new(mem: &mut GuestMemory, space: &mut AddressSpace, va: u64, prot: Protection) -> Result<u64, Stop> {
    let frame = mem.alloc_frame()?;
    space.map(mem, va, frame, prot)?;
    Ok(frame)
}

fn segment(selector: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_: if code { 0xB } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU in 64-bit mode at CPL3 with the tables of [`build_tables`].
pub(crate) fn set_long_mode(kvm: &Kvm, vcpu: &VcpuFd, cr3: u64) -> Result<(), Stop> {
    let kvm_err = |what: &str, e: kvm_ioctls::Error| Stop::Host(format!("KVM {what}: {e}"));
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| kvm_err("GET_SUPPORTED_CPUID", e))?;
    vcpu.set_cpuid2(&cpuid).map_err(|e| kvm_err("SET_CPUID2", e))?;
    let xsave = cpuid.as_slice().iter().any(|e| e.function == 1 && e.ecx & (1 << 26) != 0);

    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(|e| kvm_err("GET_SREGS", e))?;
    sregs.cs = segment(USER_CS, true, 3);
    for seg in [&mut sregs.ds, &mut sregs.es, &mut sregs.fs, &mut sregs.gs, &mut sregs.ss] {
        *seg = segment(USER_DS, false, 3);
    }
    sregs.tr = kvm_segment {
        base: TSS_VA,
        limit: TSS_LIMIT,
        selector: TSS_SELECTOR,
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.ldt = kvm_segment { type_: 0x2, unusable: 1, ..Default::default() };
    sregs.gdt.base = GDT_VA;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = IDT_VA;
    sregs.idt.limit = 256 * 16 - 1;
    // PG | WP | NE | ET | MP | PE.
    sregs.cr0 = 0x8005_0033;
    // OSXMMEXCPT | OSFXSR | PAE, and OSXSAVE when the CPU has XSAVE.
    sregs.cr4 = 0x620 | if xsave { 1 << 18 } else { 0 };
    sregs.cr3 = cr3;
    // NXE | LMA | LME.
    sregs.efer = 0xD00;
    vcpu.set_sregs(&sregs).map_err(|e| kvm_err("SET_SREGS", e))?;
    if xsave {
        // x87 | SSE | AVX, as a Windows kernel enables them.
        let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        xcrs.xcrs[0] = kvm_xcr { xcr: 0, reserved: 0, value: 0x7 };
        // Without AVX state only SSE is available; the images do not need it.
        if vcpu.set_xcrs(&xcrs).is_err() {
            xcrs.xcrs[0].value = 0x3;
            vcpu.set_xcrs(&xcrs).map_err(|e| kvm_err("SET_XCRS", e))?;
        }
    }
    let fpu = kvm_fpu { fcw: 0x37F, mxcsr: 0x1F80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(|e| kvm_err("SET_FPU", e))?;
    Ok(())
}
