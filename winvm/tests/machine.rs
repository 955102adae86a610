//! The machine on hand-assembled guest code: calls both ways, nesting, CR8
//! emulation, MMIO, and bugcheck reports. Needs `/dev/kvm`; says so and
//! passes vacuously only outside CI (in CI a missing KVM fails the test).

use capdma_winvm::{kvm_available, GuestMemory, Kernel, Machine, Protection, RamRange, Stop};
use iced_x86::code_asm::*;

const RAM: u64 = 64 << 20;

/// Host memory for the guest (leaked: the machine lives for the test).
fn memory() -> GuestMemory {
    // SAFETY: a fresh anonymous mapping, used only by the machine.
    let base = unsafe {
        libc::mmap(core::ptr::null_mut(), usize::try_from(RAM).unwrap(), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(base, libc::MAP_FAILED);
    // SAFETY: `base..base + RAM` is the mapping above, never unmapped.
    unsafe { GuestMemory::new(base.cast(), vec![RamRange { gpa: 0, len: RAM }], RamRange { gpa: 1 << 20, len: 32 << 20 }) }
}

fn machine() -> Option<Machine> {
    if let Err(why) = kvm_available() {
        assert!(std::env::var_os("CI").is_none(), "CI must have KVM: {why}");
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Machine::new(memory()).expect("machine"))
}

/// Assembles `build`'s code at a fresh executable page; returns its address.
fn code(m: &mut Machine, build: impl FnOnce(&mut CodeAssembler)) -> u64 {
    let va = m.alloc_own_pages(1, Protection::READ_EXECUTE).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    build(&mut a);
    let bytes = a.assemble(va).unwrap();
    // The host writes through the page protections, as a loader does.
    m.write(va, &bytes).unwrap();
    va
}

#[derive(Default)]
struct TestKernel {
    irql: u8,
    mmio_reads: Vec<u64>,
    mmio_writes: Vec<(u64, Vec<u8>)>,
    callback: Option<u64>,
    calls: Vec<(u32, [u64; 6])>,
}

impl Kernel for TestKernel {
    fn stub_called(&mut self, m: &mut Machine, index: u32) -> Result<u64, Stop> {
        let args = m.args::<6>()?;
        self.calls.push((index, args));
        match m.stub_name(index) {
            "multiply" => Ok(args[0] * args[1]),
            "sum6" => Ok(args.iter().sum()),
            "callback" => {
                let f = self.callback.unwrap();
                let inner = m.call(self, f, &[args[0], 100, 3])?;
                Ok(inner + 1)
            }
            other => Err(Stop::Host(format!("unknown stub {other}"))),
        }
    }
    fn mmio_read(&mut self, _m: &mut Machine, gpa: u64, data: &mut [u8]) -> Result<(), Stop> {
        self.mmio_reads.push(gpa);
        data.copy_from_slice(&0x1234_5678_u32.to_le_bytes()[..data.len()]);
        Ok(())
    }
    fn mmio_write(&mut self, _m: &mut Machine, gpa: u64, data: &[u8]) -> Result<(), Stop> {
        self.mmio_writes.push((gpa, data.to_vec()));
        Ok(())
    }
    fn irql(&self) -> u8 {
        self.irql
    }
    fn set_irql_by_cr8(&mut self, _m: &mut Machine, irql: u8) -> Result<(), Stop> {
        self.irql = irql;
        Ok(())
    }
}

#[test]
fn a_host_call_returns_rax() {
    let Some(mut m) = machine() else { return };
    let f = code(&mut m, |a| {
        a.lea(rax, qword_ptr(rcx + rdx)).unwrap();
        a.ret().unwrap();
    });
    let mut k = TestKernel::default();
    assert_eq!(m.call(&mut k, f, &[40, 2]).unwrap(), 42);
    let (before, started) = (m.counts(), std::time::Instant::now());
    assert_eq!(m.call(&mut k, f, &[1, 2]).unwrap(), 3);
    let (wall, after) = (started.elapsed(), m.counts());
    // The call ran the guest (one KVM_RUN, ended by the return's exit);
    // the time inside KVM_RUN is part of the call's.
    assert_eq!(after.exits - before.exits, 1);
    assert!(after.guest_ns > before.guest_ns);
    assert!(u128::from(after.guest_ns - before.guest_ns) <= wall.as_nanos());
}

#[test]
fn stubs_get_win64_arguments_and_calls_nest() {
    let Some(mut m) = machine() else { return };
    let (_, multiply) = m.add_stub("multiply").unwrap();
    let (_, sum6) = m.add_stub("sum6").unwrap();
    let (_, callback) = m.add_stub("callback").unwrap();
    // f(stub, a, b): return stub(a, b)
    let f = code(&mut m, |a| {
        a.sub(rsp, 0x28).unwrap();
        a.mov(rax, rcx).unwrap();
        a.mov(rcx, rdx).unwrap();
        a.mov(rdx, r8).unwrap();
        a.call(rax).unwrap();
        a.add(rsp, 0x28).unwrap();
        a.ret().unwrap();
    });
    // g(stub): return stub(1, 2, 3, 4, 5, 6)
    let g = code(&mut m, |a| {
        a.sub(rsp, 0x38).unwrap();
        a.mov(rax, rcx).unwrap();
        a.mov(qword_ptr(rsp + 0x20), 5).unwrap();
        a.mov(qword_ptr(rsp + 0x28), 6).unwrap();
        a.mov(ecx, 1).unwrap();
        a.mov(edx, 2).unwrap();
        a.mov(r8d, 3).unwrap();
        a.mov(r9d, 4).unwrap();
        a.call(rax).unwrap();
        a.add(rsp, 0x38).unwrap();
        a.ret().unwrap();
    });
    let mut k = TestKernel::default();
    assert_eq!(m.call(&mut k, f, &[multiply, 6, 7]).unwrap(), 42);
    assert_eq!(m.call(&mut k, g, &[sum6]).unwrap(), 21);
    // Nesting: f calls the `callback` stub with the multiply stub; its
    // host handler calls f(multiply, 100, 3), which calls multiply(100, 3)
    // = 300 from inside the outer stub call; callback adds 1.
    k.callback = Some(f);
    assert_eq!(m.call(&mut k, f, &[callback, multiply, 0]).unwrap(), 301);
    assert_eq!(m.depth(), 0);
}

#[test]
fn cr8_accesses_are_emulated_and_counted() {
    let Some(mut m) = machine() else { return };
    let f = code(&mut m, |a| {
        a.mov(rax, rcx).unwrap();
        a.mov(cr8, rax).unwrap();
        a.mov(r10, cr8).unwrap();
        a.mov(rax, r10).unwrap();
        a.ret().unwrap();
    });
    let mut k = TestKernel::default();
    assert_eq!(m.call(&mut k, f, &[2]).unwrap(), 2);
    assert_eq!(k.irql, 2);
    assert_eq!(m.counts().cr8_traps, 2);
}

#[test]
fn mmio_reaches_the_kernel() {
    let Some(mut m) = machine() else { return };
    let bar = m.map_physical(0xC000_0000, 0x1000, Protection::READ_WRITE).unwrap();
    let f = code(&mut m, |a| {
        a.mov(dword_ptr(rcx + 0x10), edx).unwrap();
        a.mov(eax, dword_ptr(rcx + 0x20)).unwrap();
        a.ret().unwrap();
    });
    let mut k = TestKernel::default();
    assert_eq!(m.call(&mut k, f, &[bar, 0xABCD]).unwrap(), 0x1234_5678);
    assert_eq!(k.mmio_writes, vec![(0xC000_0010, 0xABCDu32.to_le_bytes().to_vec())]);
    assert_eq!(k.mmio_reads, vec![0xC000_0020]);
}

#[test]
fn a_null_dereference_is_a_bugcheck_report() {
    let Some(mut m) = machine() else { return };
    let f = code(&mut m, |a| {
        a.mov(rax, qword_ptr(rcx + 8)).unwrap();
        a.ret().unwrap();
    });
    let mut k = TestKernel::default();
    let Err(Stop::Bugcheck(report)) = m.call(&mut k, f, &[0]) else { panic!("no bugcheck") };
    assert_eq!(report.code, 0x50, "{report}");
    assert_eq!(report.vector, Some(14));
    assert_eq!(report.cr2, Some(8));
    assert_eq!(report.rip, f);
    // The machine is dead afterwards.
    assert!(m.is_dead());
    assert!(m.call(&mut k, f, &[0]).is_err());
}

/// A page the guest has touched, then unmapped by the host (a free),
/// faults at the next touch: the host's page-table edit reaches the
/// guest's translations (a shadow-paging KVM keeps stale ones unless told).
#[test]
fn a_page_touched_then_freed_faults_at_the_next_touch() {
    let Some(mut m) = machine() else { return };
    let page = m.alloc_own_pages(1, Protection::READ_WRITE).unwrap();
    // f(va): *va = 7; return *va
    let f = code(&mut m, |a| {
        a.mov(qword_ptr(rcx), 7).unwrap();
        a.mov(rax, qword_ptr(rcx)).unwrap();
        a.ret().unwrap();
    });
    let mut k = TestKernel::default();
    for _ in 0..3 {
        assert_eq!(m.call(&mut k, f, &[page]).unwrap(), 7, "the live page, touched (and cached) by the guest");
    }
    m.free_own_pages(page, 1).unwrap();
    let Err(Stop::Bugcheck(report)) = m.call(&mut k, f, &[page]) else { panic!("a freed page was still reachable") };
    assert_eq!((report.code, report.cr2), (0x50, Some(page)), "{report}");
}

/// Counts preemptions and, at each, calls a guest routine that clobbers
/// every volatile register (as an ISR may).
#[derive(Default)]
struct Preempting {
    clobber: u64,
    offered: u64,
}

impl Kernel for Preempting {
    fn stub_called(&mut self, _m: &mut Machine, index: u32) -> Result<u64, Stop> {
        Err(Stop::Host(format!("no stubs here ({index})")))
    }
    fn mmio_read(&mut self, _: &mut Machine, _: u64, _: &mut [u8]) -> Result<(), Stop> {
        Err(Stop::Host("no MMIO".into()))
    }
    fn mmio_write(&mut self, _: &mut Machine, _: u64, _: &[u8]) -> Result<(), Stop> {
        Err(Stop::Host("no MMIO".into()))
    }
    fn irql(&self) -> u8 {
        0
    }
    fn set_irql_by_cr8(&mut self, _: &mut Machine, _: u8) -> Result<(), Stop> {
        Ok(())
    }
    fn at_preemption(&mut self, m: &mut Machine) -> Result<(), Stop> {
        self.offered += 1;
        let clobber = self.clobber;
        m.call(self, clobber, &[])?;
        Ok(())
    }
}

#[test]
fn preemption_at_arbitrary_instructions_preserves_the_interrupted_code() {
    let Some(mut m) = machine() else { return };
    // sum = Σ i for i in 1..=rcx, kept in volatile registers and xmm0.
    let f = code(&mut m, |a| {
        let mut top = a.create_label();
        a.xor(eax, eax).unwrap();
        a.pxor(xmm0, xmm0).unwrap();
        a.set_label(&mut top).unwrap();
        a.add(rax, rcx).unwrap();
        a.movq(xmm1, rcx).unwrap();
        a.paddq(xmm0, xmm1).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(top).unwrap();
        a.movq(rdx, xmm0).unwrap();
        a.cmp(rax, rdx).unwrap();
        let mut same = a.create_label();
        a.je(same).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut same).unwrap();
        a.ret().unwrap();
    });
    let clobber = code(&mut m, |a| {
        for r in [rax, rcx, rdx, r8, r9, r10, r11] {
            a.mov(r, 0x5A5A_5A5A_u64).unwrap();
        }
        a.pcmpeqb(xmm0, xmm0).unwrap();
        a.pcmpeqb(xmm1, xmm1).unwrap();
        a.ret().unwrap();
    });
    let mut k = Preempting { clobber, offered: 0 };
    m.set_preemption(Some(capdma_winvm::Preemption { mean_interval_us: 200, seed: 7 })).unwrap();
    let n: u64 = 400_000_000;
    let sum = m.call(&mut k, f, &[n]).unwrap();
    m.set_preemption(None).unwrap();
    assert_eq!(sum, n * (n + 1) / 2, "the loop's registers survived {} preemptions", k.offered);
    assert!(k.offered > 0, "no kick landed in the guest loop");
    assert_eq!(m.counts().preemptions, k.offered);
}

#[test]
fn page_fault_parameters_say_read_write_or_execute() {
    for (kind, expected) in [("read", 0u64), ("write", 2), ("execute", 0x10)] {
        let Some(mut m) = machine() else { return };
        let f = code(&mut m, |a| {
            match kind {
                "read" => a.mov(rax, qword_ptr(rcx)).unwrap(),
                "write" => a.mov(qword_ptr(rcx), rax).unwrap(),
                _ => a.call(rcx).unwrap(),
            }
            a.ret().unwrap();
        });
        let mut k = TestKernel::default();
        let Err(Stop::Bugcheck(report)) = m.call(&mut k, f, &[0x40]) else { panic!("no bugcheck") };
        assert_eq!(report.code, 0x50, "{report}");
        assert_eq!(report.parameters[1], expected, "{kind}: {report}");
    }
}
