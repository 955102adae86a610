//! The emulated I/O manager on hand-assembled drivers: device stacks,
//! IRPs down and up them with completion routines, events, remove locks,
//! the registry, power IRPs — and, for every check, a driver that breaks
//! it. Needs `/dev/kvm`; says so and passes vacuously only outside CI (in
//! CI a missing KVM fails the test).

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and constants by the dozen, as in sim/src/nt")]
#![allow(clippy::cast_possible_truncation, reason = "layout offsets and sizes are small constants, used as displacements")]

mod support;

use capdma_sim::nt::io::irp::location_va;
use capdma_sim::nt::io::registry::RegValue;
use capdma_sim::nt::layout::irp::{io_status_block, irp, kevent, mj, mn, remove_lock, sl, stack, status};
use capdma_sim::nt::layout::{device_object, do_flags, driver_object};
use capdma_sim::nt::system::{write_unicode_string, System};
use capdma_sim::nt::DISPATCH_LEVEL;
use capdma_winvm::{Protection, Stop};
use iced_x86::code_asm::*;

/// A booted system, or `None` (with the reason printed) without KVM outside CI.
fn system() -> Option<System> {
    support::system()
}

/// The test's view of a system: DDIs by name, code, drivers, devices.
struct T {
    sys: System,
}

impl T {
    fn new() -> Option<Self> {
        system().map(|sys| Self { sys })
    }

    /// The stub address of an ntoskrnl DDI.
    fn stub(&mut self, name: &str) -> u64 {
        let System { machine, nt, .. } = &mut self.sys;
        nt.resolve(machine, "ntoskrnl.exe", name).unwrap_or_else(|| panic!("{name} is not implemented"))
    }

    /// Calls a DDI through its stub, as a driver would.
    fn ddi(&mut self, name: &str, args: &[u64]) -> Result<u64, Stop> {
        let stub = self.stub(name);
        let System { machine, nt, .. } = &mut self.sys;
        machine.call(nt, stub, args)
    }

    /// `ddi` that must succeed; the low 32 bits.
    fn ok(&mut self, name: &str, args: &[u64]) -> u32 {
        (self.ddi(name, args).unwrap_or_else(|e| panic!("{name}: {e}")) & 0xFFFF_FFFF) as u32
    }

    /// Assembles code at a fresh executable page.
    fn code(&mut self, build: impl FnOnce(&mut CodeAssembler)) -> u64 {
        let m = &mut self.sys.machine;
        let va = m.alloc_own_pages(1, Protection::READ_EXECUTE).unwrap();
        let mut a = CodeAssembler::new(64).unwrap();
        build(&mut a);
        let bytes = a.assemble(va).unwrap();
        m.write(va, &bytes).unwrap();
        va
    }

    /// Kernel memory, zeroed.
    fn memory(&mut self, bytes: u64) -> u64 {
        let System { machine, nt, .. } = &mut self.sys;
        nt.alloc_kernel(machine, bytes).unwrap()
    }

    /// A `DRIVER_OBJECT` whose every major function is `dispatch`.
    fn driver(&mut self, dispatch: u64) -> u64 {
        let d = self.memory(driver_object::SIZE + 64);
        let m = &self.sys.machine;
        m.write_u16(d + driver_object::TYPE, 4).unwrap();
        for major in 0..=u64::from(mj::MAXIMUM_FUNCTION) {
            m.write_u64(d + driver_object::MAJOR_FUNCTION + 8 * major, dispatch).unwrap();
        }
        d
    }

    /// A device object of `driver` (IoCreateDevice, initialized), with a 64-byte extension.
    fn device(&mut self, driver: u64) -> u64 {
        let out = self.memory(8);
        assert_eq!(self.ok("IoCreateDevice", &[driver, 64, 0, 0x22, 0, 0, out]), status::SUCCESS);
        let m = &self.sys.machine;
        let device = m.read_u64(out).unwrap();
        let flags = m.read_u32(device + device_object::FLAGS).unwrap();
        m.write_u32(device + device_object::FLAGS, flags & !do_flags::DEVICE_INITIALIZING).unwrap();
        device
    }

    /// `DeviceExtension` of `device`.
    fn ext(&self, device: u64) -> u64 {
        self.sys.machine.read_u64(device + device_object::DEVICE_EXTENSION).unwrap()
    }

    /// A stack: a PDO of a driver with `pdo_dispatch` and an FDO attached
    /// to it whose driver has `fdo_dispatch`; the FDO's extension holds the
    /// lower device at +0. Returns (fdo, pdo).
    fn stack(&mut self, fdo_dispatch: u64, pdo_dispatch: u64) -> (u64, u64) {
        let pdo_driver = self.driver(pdo_dispatch);
        let pdo = self.device(pdo_driver);
        let fdo_driver = self.driver(fdo_dispatch);
        let fdo = self.device(fdo_driver);
        let lower = self.ddi("IoAttachDeviceToDeviceStack", &[fdo, pdo]).unwrap();
        assert_eq!(lower, pdo);
        let ext = self.ext(fdo);
        self.sys.machine.write_u64(ext, lower).unwrap();
        (fdo, pdo)
    }

    /// A PnP IRP for the top of `top`'s stack, built as a driver builds one
    /// (IoBuildSynchronousFsdRequest, Status = STATUS_NOT_SUPPORTED);
    /// returns (irp, event, iosb).
    fn pnp_irp(&mut self, top: u64, minor: u8) -> (u64, u64, u64) {
        let block = self.memory(64);
        let (event, iosb) = (block, block + 32);
        self.ok("KeInitializeEvent", &[event, u64::from(kevent::NOTIFICATION), 0]);
        let irp_va = self.ddi("IoBuildSynchronousFsdRequest", &[u64::from(mj::PNP), top, 0, 0, 0, event, iosb]).unwrap();
        assert_ne!(irp_va, 0);
        let m = &self.sys.machine;
        m.write_u32(irp_va + irp::STATUS, status::NOT_SUPPORTED).unwrap();
        let count = m.read_u8(irp_va + irp::STACK_COUNT).unwrap();
        m.write_u8(location_va(irp_va, count) + stack::MINOR_FUNCTION, minor).unwrap();
        (irp_va, event, iosb)
    }

    fn found(&self, rule: &str) -> bool {
        self.sys.nt.verifier.found(rule)
    }

    fn findings(&self) -> String {
        self.sys.nt.verifier.findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    }

    fn assert_clean(&self) {
        assert!(self.sys.nt.verifier.findings.is_empty(), "findings:\n{}", self.findings());
    }
}

// ------------------------------------------------------------------ drivers

/// `mov [rdx+Status], status; mov [rdx+Information], info; IofCompleteRequest(irp, 0); return status`.
fn complete_with(t: &mut T, status_value: u32, information: u64) -> u64 {
    let complete = t.stub("IofCompleteRequest");
    t.code(|a| {
        a.push(rbx).unwrap();
        a.sub(rsp, 0x20).unwrap();
        a.mov(dword_ptr(rdx + irp::STATUS), status_value).unwrap();
        a.mov(rax, information).unwrap();
        a.mov(qword_ptr(rdx + irp::INFORMATION), rax).unwrap();
        a.mov(rcx, rdx).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rax, complete).unwrap();
        a.call(rax).unwrap();
        a.mov(eax, status_value).unwrap();
        a.add(rsp, 0x20).unwrap();
        a.pop(rbx).unwrap();
        a.ret().unwrap();
    })
}

/// Completes the IRP with the status it carries (a PDO's answer to an IRP it does not handle).
fn complete_untouched(t: &mut T) -> u64 {
    let complete = t.stub("IofCompleteRequest");
    t.code(|a| {
        a.push(rbx).unwrap();
        a.sub(rsp, 0x20).unwrap();
        a.mov(ebx, dword_ptr(rdx + irp::STATUS)).unwrap();
        a.mov(rcx, rdx).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rax, complete).unwrap();
        a.call(rax).unwrap();
        a.mov(eax, ebx).unwrap();
        a.add(rsp, 0x20).unwrap();
        a.pop(rbx).unwrap();
        a.ret().unwrap();
    })
}

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver(ext->lower, irp)`.
fn pass_down(t: &mut T) -> u64 {
    let call = t.stub("IofCallDriver");
    t.code(|a| {
        a.sub(rsp, 0x28).unwrap();
        a.add(qword_ptr(rdx + irp::CURRENT_STACK_LOCATION), stack::SIZE as i32).unwrap();
        a.inc(byte_ptr(rdx + irp::CURRENT_LOCATION)).unwrap();
        a.mov(rax, qword_ptr(rcx + device_object::DEVICE_EXTENSION)).unwrap();
        a.mov(rcx, qword_ptr(rax)).unwrap();
        a.mov(rax, call).unwrap();
        a.call(rax).unwrap();
        a.add(rsp, 0x28).unwrap();
        a.ret().unwrap();
    })
}

/// Keeps the IRP in `ext + 8`, marks it pending when `mark`, returns `returned`.
fn keep(t: &mut T, mark: bool, returned: u32) -> u64 {
    t.code(|a| {
        a.mov(rax, qword_ptr(rcx + device_object::DEVICE_EXTENSION)).unwrap();
        a.mov(qword_ptr(rax + 8), rdx).unwrap();
        if mark {
            a.mov(rax, qword_ptr(rdx + irp::CURRENT_STACK_LOCATION)).unwrap();
            a.or(byte_ptr(rax + stack::CONTROL), i32::from(sl::PENDING_RETURNED)).unwrap();
        }
        a.mov(eax, returned).unwrap();
        a.ret().unwrap();
    })
}

/// `IoCopyCurrentIrpStackLocationToNext`, `IoSetCompletionRoutine(routine,
/// context = ext + 16, all three)`, `return IoCallDriver(ext->lower, irp)`.
fn forward_with_routine(t: &mut T, routine: u64) -> u64 {
    let call = t.stub("IofCallDriver");
    t.code(|a| {
        a.push(rsi).unwrap();
        a.push(rdi).unwrap();
        a.sub(rsp, 0x28).unwrap();
        // rsi = current, rdi = next
        a.mov(rsi, qword_ptr(rdx + irp::CURRENT_STACK_LOCATION)).unwrap();
        a.lea(rdi, qword_ptr(rsi - stack::SIZE as i32)).unwrap();
        a.mov(rax, rcx).unwrap();
        a.mov(ecx, (stack::COMPLETION_ROUTINE / 8) as u32).unwrap();
        a.rep().movsq().unwrap();
        a.mov(rcx, rax).unwrap();
        a.mov(rdi, qword_ptr(rdx + irp::CURRENT_STACK_LOCATION)).unwrap();
        a.sub(rdi, stack::SIZE as i32).unwrap();
        a.mov(rax, routine).unwrap();
        a.mov(qword_ptr(rdi + stack::COMPLETION_ROUTINE), rax).unwrap();
        a.mov(rax, qword_ptr(rcx + device_object::DEVICE_EXTENSION)).unwrap();
        a.lea(rsi, qword_ptr(rax + 16)).unwrap();
        a.mov(qword_ptr(rdi + stack::CONTEXT), rsi).unwrap();
        a.mov(byte_ptr(rdi + stack::CONTROL), i32::from(sl::INVOKE_ON_SUCCESS | sl::INVOKE_ON_ERROR | sl::INVOKE_ON_CANCEL)).unwrap();
        a.mov(rcx, qword_ptr(rax)).unwrap();
        a.mov(rax, call).unwrap();
        a.call(rax).unwrap();
        a.add(rsp, 0x28).unwrap();
        a.pop(rdi).unwrap();
        a.pop(rsi).unwrap();
        a.ret().unwrap();
    })
}

/// A completion routine: `[context] += 1`, `[context + 8] = device`,
/// `[context + 16] = PendingReturned`; with `mark`, marks the IRP pending
/// when `PendingReturned`; returns `returned`.
fn completion_routine(t: &mut T, mark: bool, returned: u32) -> u64 {
    t.code(|a| {
        let mut skip = a.create_label();
        a.inc(qword_ptr(r8)).unwrap();
        a.mov(qword_ptr(r8 + 8), rcx).unwrap();
        a.movzx(eax, byte_ptr(rdx + irp::PENDING_RETURNED)).unwrap();
        a.mov(qword_ptr(r8 + 16), rax).unwrap();
        if mark {
            a.test(eax, eax).unwrap();
            a.jz(skip).unwrap();
            a.mov(rax, qword_ptr(rdx + irp::CURRENT_STACK_LOCATION)).unwrap();
            a.or(byte_ptr(rax + stack::CONTROL), i32::from(sl::PENDING_RETURNED)).unwrap();
        }
        a.set_label(&mut skip).unwrap();
        a.mov(eax, returned).unwrap();
        a.ret().unwrap();
    })
}

/// Completes the IRP twice.
fn complete_twice(t: &mut T) -> u64 {
    let complete = t.stub("IofCompleteRequest");
    t.code(|a| {
        a.push(rbx).unwrap();
        a.sub(rsp, 0x20).unwrap();
        a.mov(rbx, rdx).unwrap();
        a.mov(dword_ptr(rdx + irp::STATUS), 0).unwrap();
        a.mov(rcx, rbx).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rax, complete).unwrap();
        a.call(rax).unwrap();
        a.mov(rcx, rbx).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rax, complete).unwrap();
        a.call(rax).unwrap();
        a.xor(eax, eax).unwrap();
        a.add(rsp, 0x20).unwrap();
        a.pop(rbx).unwrap();
        a.ret().unwrap();
    })
}

/// Raises the IRQL to DISPATCH_LEVEL (KfRaiseIrql) and returns without lowering it, completing the IRP.
fn complete_and_stay_raised(t: &mut T) -> u64 {
    let raise = t.stub("KfRaiseIrql");
    let complete = t.stub("IofCompleteRequest");
    t.code(|a| {
        a.push(rbx).unwrap();
        a.sub(rsp, 0x20).unwrap();
        a.mov(rbx, rdx).unwrap();
        a.mov(ecx, 2).unwrap();
        a.mov(rax, raise).unwrap();
        a.call(rax).unwrap();
        a.mov(dword_ptr(rbx + irp::STATUS), 0).unwrap();
        a.mov(rcx, rbx).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rax, complete).unwrap();
        a.call(rax).unwrap();
        a.xor(eax, eax).unwrap();
        a.add(rsp, 0x20).unwrap();
        a.pop(rbx).unwrap();
        a.ret().unwrap();
    })
}

// ------------------------------------------------------------------ devices

#[test]
fn a_stack_is_built_referenced_and_torn_down_without_leaks() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let (fdo, pdo) = t.stack(nop, nop);
    let m = &t.sys.machine;
    assert_eq!(m.read_u64(pdo + device_object::ATTACHED_DEVICE).unwrap(), fdo);
    assert_eq!(m.read_u8(pdo + device_object::STACK_SIZE).unwrap(), 1);
    assert_eq!(m.read_u8(fdo + device_object::STACK_SIZE).unwrap(), 2);
    assert_eq!(m.read_u16(fdo + device_object::TYPE).unwrap(), 3);
    let flags = m.read_u32(fdo + device_object::FLAGS).unwrap();
    assert_eq!(flags & do_flags::DEVICE_INITIALIZING, 0);
    // The extension is zeroed and follows the object.
    assert_eq!(t.ext(fdo), fdo + device_object::SIZE);
    // The top of the PDO's stack, referenced.
    assert_eq!(t.ddi("IoGetAttachedDeviceReference", &[pdo]).unwrap(), fdo);
    assert_eq!(t.sys.nt.io.devices[&fdo].references, 1);
    assert!(!t.sys.nt.io.leaks().is_empty());
    t.ok("ObfDereferenceObject", &[fdo]);
    // Teardown as a remove does it: detach, delete; the PDO's bus driver deletes the PDO.
    t.ok("IoDetachDevice", &[pdo]);
    assert_eq!(t.sys.machine.read_u64(pdo + device_object::ATTACHED_DEVICE).unwrap(), 0);
    t.ok("IoDeleteDevice", &[fdo]);
    t.ok("IoDeleteDevice", &[pdo]);
    assert!(!t.sys.machine.is_mapped(fdo, 8), "a deleted, unreferenced device object is freed");
    assert!(t.sys.nt.io.leaks().is_empty(), "{:?}", t.sys.nt.io.leaks());
    t.assert_clean();
}

#[test]
fn a_referenced_device_object_outlives_its_deletion_until_dereferenced() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let d = t.driver(nop);
    let dev = t.device(d);
    t.ok("ObfReferenceObject", &[dev]);
    t.ok("IoDeleteDevice", &[dev]);
    assert!(t.sys.machine.is_mapped(dev, 8));
    assert_eq!(t.sys.nt.io.leaks().len(), 1, "a reference still held is a leak");
    t.ok("ObfDereferenceObject", &[dev]);
    assert!(!t.sys.machine.is_mapped(dev, 8));
    assert!(t.sys.nt.io.leaks().is_empty());
    // The driver's device list is empty again.
    assert_eq!(t.sys.machine.read_u64(d + driver_object::DEVICE_OBJECT).unwrap(), 0);
    t.assert_clean();
}

#[test]
fn device_object_mistakes_are_found() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let (fdo, pdo) = t.stack(nop, nop);
    // Deleting while still attached (no IoDetachDevice): 0xC9 0x201.
    t.ok("IoDeleteDevice", &[fdo]);
    assert!(t.found("DELETE_WHILE_ATTACHED"), "{}", t.findings());
    // Deleting twice: 0xC9 0x240.
    t.ok("IoDeleteDevice", &[fdo]);
    assert!(t.found("DEVICE_DELETED_TWICE"));
    // Detaching twice: 0xC9 0x202.
    t.ok("IoDetachDevice", &[pdo]);
    t.ok("IoDetachDevice", &[pdo]);
    assert!(t.found("DETACH_NOT_ATTACHED"));
    // Dropping a reference nobody took: 0x18.
    t.ok("ObfDereferenceObject", &[pdo]);
    assert!(t.found("DEREFERENCE_NOT_REFERENCED"));
    // The PDO was never deleted: a leak.
    assert!(t.sys.nt.io.leaks().iter().any(|l| l.contains(&format!("{pdo:#x}"))));
    let f = &t.sys.nt.verifier.findings;
    assert_eq!(f.iter().find(|f| f.rule == "DELETE_WHILE_ATTACHED").unwrap().parameter1, Some(0x201));
    assert_eq!(f.iter().find(|f| f.rule == "DEREFERENCE_NOT_REFERENCED").unwrap().bugcheck, 0x18);
}

#[test]
fn io_create_device_checks_its_irql_and_names() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let d = t.driver(nop);
    let out = t.memory(64);
    let name = out + 16;
    write_unicode_string(&t.sys.machine, name, name + 16, "\\Device\\Capdma0").unwrap();
    assert_eq!(t.ok("IoCreateDevice", &[d, 0, name, 0x22, 0, 0, out]), status::SUCCESS);
    assert_eq!(t.ok("IoCreateDevice", &[d, 0, name, 0x22, 0, 0, out]), status::OBJECT_NAME_COLLISION);
    t.sys.nt.irql = DISPATCH_LEVEL;
    t.ok("IoCreateDevice", &[d, 0, 0, 0x22, 0, 0, out]);
    assert!(t.found("IRQL_TOO_HIGH"));
}

// ------------------------------------------------------------------ IRPs

#[test]
fn an_irp_goes_down_the_stack_and_its_completion_comes_back() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let done = complete_with(&mut t, status::SUCCESS, 0x1234);
    let (fdo, _pdo) = t.stack(down, done);
    let (irp_va, event, iosb) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    assert_eq!(t.sys.machine.read_u8(irp_va + irp::STACK_COUNT).unwrap(), 2);
    assert_eq!(t.ok("IofCallDriver", &[fdo, irp_va]), status::SUCCESS);
    let m = &t.sys.machine;
    assert_eq!(m.read_u32(iosb + io_status_block::STATUS).unwrap(), status::SUCCESS);
    assert_eq!(m.read_u64(iosb + io_status_block::INFORMATION).unwrap(), 0x1234);
    assert_eq!(m.read_u32(event + kevent::SIGNAL_STATE).unwrap(), 1);
    assert!(!m.is_mapped(irp_va, 8), "a completed IRP is freed");
    assert_eq!(t.sys.nt.io.completed[&irp_va].information, 0x1234);
    assert!(t.sys.nt.io.irps.is_empty());
    t.assert_clean();
}

#[test]
fn completion_routines_run_with_the_device_above_and_can_keep_the_irp() {
    let Some(mut t) = T::new() else { return };
    let routine = completion_routine(&mut t, true, status::MORE_PROCESSING_REQUIRED);
    let forward = forward_with_routine(&mut t, routine);
    let done = complete_with(&mut t, status::SUCCESS, 7);
    let (fdo, _pdo) = t.stack(forward, done);
    let (irp_va, _event, iosb) = t.pnp_irp(fdo, mn::START_DEVICE);
    // The lower driver completed it; the routine kept it (MORE_PROCESSING_REQUIRED).
    assert_eq!(t.ok("IofCallDriver", &[fdo, irp_va]), status::SUCCESS);
    let ctx = t.ext(fdo) + 16;
    let m = &t.sys.machine;
    assert_eq!(m.read_u64(ctx).unwrap(), 1, "the routine ran once");
    assert_eq!(m.read_u64(ctx + 8).unwrap(), fdo, "with the device of the location above");
    assert!(m.is_mapped(irp_va, 8), "a kept IRP is still the driver's");
    assert_eq!(m.read_u8(irp_va + irp::CURRENT_LOCATION).unwrap(), 2, "back at the FDO's location");
    assert_eq!(m.read_u32(iosb).unwrap(), 0, "not finished yet");
    // Without a completion, the FDO's dispatch (forward_with_routine) returned
    // without completing: Verifier's 0x226 — the FDO must finish it. Here the
    // test plays the FDO: it completes the IRP again, legally.
    t.sys.nt.verifier.findings.retain(|f| f.rule != "IRP_NOT_COMPLETED_OR_PASSED");
    t.ok("IofCompleteRequest", &[irp_va, 0]);
    assert_eq!(t.sys.machine.read_u32(iosb + io_status_block::STATUS).unwrap(), status::SUCCESS);
    assert_eq!(t.sys.machine.read_u64(iosb + io_status_block::INFORMATION).unwrap(), 7);
    assert!(!t.sys.machine.is_mapped(irp_va, 8));
    t.assert_clean();
}

#[test]
fn a_pending_irp_is_completed_later_and_pending_propagates() {
    let Some(mut t) = T::new() else { return };
    let routine = completion_routine(&mut t, true, status::SUCCESS);
    let forward = forward_with_routine(&mut t, routine);
    let pend = keep(&mut t, true, status::PENDING);
    let (fdo, pdo) = t.stack(forward, pend);
    let (irp_va, event, iosb) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    assert_eq!(t.ok("IofCallDriver", &[fdo, irp_va]), status::PENDING);
    assert_eq!(t.sys.machine.read_u32(event + kevent::SIGNAL_STATE).unwrap(), 0);
    // Later (a DPC, say) the PDO's driver completes it at DISPATCH_LEVEL.
    let kept = t.sys.machine.read_u64(t.ext(pdo) + 8).unwrap();
    assert_eq!(kept, irp_va);
    t.sys.machine.write_u32(irp_va + irp::STATUS, status::SUCCESS).unwrap();
    t.sys.nt.irql = DISPATCH_LEVEL;
    t.ok("IofCompleteRequest", &[irp_va, 0]);
    t.sys.nt.irql = 0;
    let ctx = t.ext(fdo) + 16;
    assert_eq!(t.sys.machine.read_u64(ctx + 16).unwrap(), 1, "PendingReturned seen by the routine");
    assert_eq!(t.sys.machine.read_u32(event + kevent::SIGNAL_STATE).unwrap(), 1);
    assert_eq!(t.sys.machine.read_u32(iosb).unwrap(), status::SUCCESS);
    t.assert_clean();
    // Waiting for a signalled event returns at once.
    assert_eq!(t.ok("KeWaitForSingleObject", &[event, 0, 0, 0, 0]), status::SUCCESS);
}

#[test]
fn returning_pending_without_marking_is_found() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let pend = keep(&mut t, false, status::PENDING);
    let (fdo, _) = t.stack(down, pend);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("PENDING_NOT_MARKED"), "{}", t.findings());
    assert_eq!(t.sys.nt.verifier.findings[0].parameter1, Some(0x23D));
}

#[test]
fn marking_pending_and_returning_success_is_found() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let pend = keep(&mut t, true, status::SUCCESS);
    let (fdo, _) = t.stack(down, pend);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("MARKED_PENDING_NOT_RETURNED"), "{}", t.findings());
}

#[test]
fn returning_without_completing_or_passing_down_is_found() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let forget = keep(&mut t, false, status::SUCCESS);
    let (fdo, _) = t.stack(down, forget);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("IRP_NOT_COMPLETED_OR_PASSED"), "{}", t.findings());
    // And at the end the IRP is still in flight: a leak.
    assert!(t.sys.nt.io.leaks().iter().any(|l| l.contains("never completed")));
}

#[test]
fn completing_twice_is_bug_check_0x44() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let twice = complete_twice(&mut t);
    let (fdo, _) = t.stack(down, twice);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    let Err(Stop::Bugcheck(report)) = t.ddi("IofCallDriver", &[fdo, irp_va]) else { panic!("no bugcheck") };
    assert_eq!(report.code, 0x44, "{report}");
    assert_eq!(report.parameters[0], irp_va);
    assert!(t.found("IRP_COMPLETED_TWICE"));
}

#[test]
fn a_completion_routine_that_drops_pending_is_found() {
    let Some(mut t) = T::new() else { return };
    let routine = completion_routine(&mut t, false, status::SUCCESS);
    let forward = forward_with_routine(&mut t, routine);
    let pend = keep(&mut t, true, status::PENDING);
    let (fdo, pdo) = t.stack(forward, pend);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    let kept = t.sys.machine.read_u64(t.ext(pdo) + 8).unwrap();
    t.sys.machine.write_u32(kept + irp::STATUS, 0).unwrap();
    t.ok("IofCompleteRequest", &[kept, 0]);
    assert!(t.found("COMPLETION_ROUTINE_PENDING_NOT_PROPAGATED"), "{}", t.findings());
    // And the FDO's dispatch returned STATUS_PENDING for a location nobody marked.
    assert!(t.found("PENDING_NOT_MARKED"), "{}", t.findings());
}

#[test]
fn a_dispatch_routine_that_changes_the_irql_is_found() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let raised = complete_and_stay_raised(&mut t);
    let (fdo, _) = t.stack(down, raised);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("DISPATCH_CHANGED_IRQL"), "{}", t.findings());
}

#[test]
fn an_irp_the_pdo_does_not_understand_must_come_back_untouched() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let untouched = complete_untouched(&mut t);
    let (fdo, _) = t.stack(down, untouched);
    let (irp_va, _, iosb) = t.pnp_irp(fdo, mn::BOGUS);
    assert_eq!(t.ok("IofCallDriver", &[fdo, irp_va]), status::NOT_SUPPORTED);
    assert_eq!(t.sys.machine.read_u32(iosb).unwrap(), status::NOT_SUPPORTED);
    t.assert_clean();
    // A PDO that answers it anyway: 0x213 and 0x214.
    let answers = complete_with(&mut t, status::SUCCESS, 1);
    let (fdo, _) = t.stack(down, answers);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::BOGUS);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("PDO_CHANGED_STATUS_OF_UNKNOWN_IRP"), "{}", t.findings());
    assert!(t.found("PDO_CHANGED_INFORMATION_OF_UNKNOWN_IRP"));
    // An FDO that completes it instead of passing it down: 0x22D.
    let fails = complete_with(&mut t, status::NOT_SUPPORTED, 0);
    let (fdo, _) = t.stack(fails, untouched);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::BOGUS);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("COMPLETED_UNKNOWN_PNP_IRP"), "{}", t.findings());
}

#[test]
fn a_new_pnp_irp_must_start_as_not_supported() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let untouched = complete_untouched(&mut t);
    let (fdo, _) = t.stack(down, untouched);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.sys.machine.write_u32(irp_va + irp::STATUS, 0).unwrap();
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("PNP_IRP_BAD_INITIAL_STATUS"), "{}", t.findings());
}

#[test]
fn sending_past_the_last_stack_location_is_bug_check_0x35() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let untouched = complete_untouched(&mut t);
    let (fdo, pdo) = t.stack(down, untouched);
    // An IRP built for the PDO alone (one location), sent to the FDO, which passes it on.
    let (irp_va, _, _) = t.pnp_irp(pdo, mn::QUERY_CAPABILITIES);
    let skip_down_twice = {
        let call = t.stub("IofCallDriver");
        t.code(|a| {
            a.sub(rsp, 0x28).unwrap();
            a.mov(rax, qword_ptr(rcx + device_object::DEVICE_EXTENSION)).unwrap();
            a.mov(rcx, qword_ptr(rax)).unwrap();
            a.mov(rax, call).unwrap();
            a.call(rax).unwrap();
            a.add(rsp, 0x28).unwrap();
            a.ret().unwrap();
        })
    };
    let d = t.sys.machine.read_u64(fdo + device_object::DRIVER_OBJECT).unwrap();
    t.sys.machine.write_u64(d + driver_object::MAJOR_FUNCTION + 8 * u64::from(mj::PNP), skip_down_twice).unwrap();
    let Err(Stop::Bugcheck(report)) = t.ddi("IofCallDriver", &[fdo, irp_va]) else { panic!("no bugcheck") };
    assert_eq!(report.code, 0x35, "{report}");
    assert!(t.found("NO_MORE_IRP_STACK_LOCATIONS"));
}

#[test]
fn completing_with_status_pending_is_a_bugcheck() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let bad = complete_with(&mut t, status::PENDING, 0);
    let (fdo, _) = t.stack(down, bad);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    let Err(Stop::Bugcheck(report)) = t.ddi("IofCallDriver", &[fdo, irp_va]) else { panic!("no bugcheck") };
    assert_eq!((report.code, report.parameters[0]), (0xC9, 0x6), "{report}");
}

#[test]
fn a_remove_that_leaves_the_fdo_attached_is_found() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let done = complete_with(&mut t, status::SUCCESS, 0);
    let (fdo, _) = t.stack(down, done);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::REMOVE_DEVICE);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("REMOVE_NOT_DETACHED"), "{}", t.findings());
    assert!(t.found("REMOVE_NOT_DELETED"));
}

// ------------------------------------------------------------------ events and remove locks

#[test]
fn events_signal_reset_and_a_hopeless_wait_is_a_finding() {
    let Some(mut t) = T::new() else { return };
    let e = t.memory(kevent::SIZE);
    let zero = e + 64;
    t.ok("KeInitializeEvent", &[e, u64::from(kevent::SYNCHRONIZATION), 0]);
    assert_eq!(t.sys.machine.read_u8(e + kevent::SIZE_FIELD).unwrap(), 6);
    assert_eq!(t.ok("KeWaitForSingleObject", &[e, 0, 0, 0, zero]), status::TIMEOUT);
    assert_eq!(t.ok("KeSetEvent", &[e, 0, 0]), 0);
    assert_eq!(t.ok("KeSetEvent", &[e, 0, 0]), 1);
    assert_eq!(t.ok("KeWaitForSingleObject", &[e, 0, 0, 0, 0]), status::SUCCESS);
    assert_eq!(t.sys.machine.read_u32(e + kevent::SIGNAL_STATE).unwrap(), 0, "a synchronization event resets");
    t.assert_clean();
    // Nothing can ever signal it now.
    assert!(t.ddi("KeWaitForSingleObject", &[e, 0, 0, 0, 0]).is_err());
    assert!(t.found("WAIT_NEVER_SATISFIED"));
}

#[test]
fn a_wait_with_a_timeout_above_apc_level_is_found() {
    let Some(mut t) = T::new() else { return };
    let e = t.memory(kevent::SIZE + 16);
    let timeout = e + kevent::SIZE;
    t.sys.machine.write_u64(timeout, (-10_000i64).cast_unsigned()).unwrap();
    t.ok("KeInitializeEvent", &[e, 0, 0]);
    let before = t.sys.nt.time;
    assert_eq!(t.ok("KeWaitForSingleObject", &[e, 0, 0, 0, timeout]), status::TIMEOUT);
    assert_eq!(t.sys.nt.time, before + 10_000);
    t.assert_clean();
    t.sys.nt.irql = DISPATCH_LEVEL;
    t.ok("KeWaitForSingleObject", &[e, 0, 0, 0, timeout]);
    assert!(t.found("IRQL_TOO_HIGH"));
}

#[test]
fn remove_locks_count_acquisitions_and_refuse_after_removal() {
    let Some(mut t) = T::new() else { return };
    let lock = t.memory(remove_lock::SIZE);
    let size = remove_lock::SIZE;
    t.ok("IoInitializeRemoveLockEx", &[lock, 0x6C72_4443, 0, 0, size]);
    assert_eq!(t.sys.machine.read_u32(lock + remove_lock::IO_COUNT).unwrap(), 1);
    assert_eq!(t.ok("IoAcquireRemoveLockEx", &[lock, 0x100, 0, 1, size]), status::SUCCESS);
    assert_eq!(t.ok("IoAcquireRemoveLockEx", &[lock, 0x200, 0, 1, size]), status::SUCCESS);
    assert_eq!(t.sys.machine.read_u32(lock + remove_lock::IO_COUNT).unwrap(), 3);
    t.ok("IoReleaseRemoveLockEx", &[lock, 0x100, size]);
    assert!(!t.sys.nt.io.leaks().is_empty(), "a lock never released-and-waited is a leak");
    t.ok("IoReleaseRemoveLockAndWaitEx", &[lock, 0x200, size]);
    assert_eq!(t.sys.machine.read_u32(lock + remove_lock::IO_COUNT).unwrap(), 0);
    assert_eq!(t.sys.machine.read_u8(lock + remove_lock::REMOVED).unwrap(), 1);
    assert_eq!(t.ok("IoAcquireRemoveLockEx", &[lock, 0x300, 0, 1, size]), status::DELETE_PENDING);
    assert!(t.sys.nt.io.leaks().is_empty(), "{:?}", t.sys.nt.io.leaks());
    t.assert_clean();
}

#[test]
fn remove_lock_mistakes_are_found() {
    let Some(mut t) = T::new() else { return };
    let lock = t.memory(remove_lock::SIZE);
    let size = remove_lock::SIZE;
    t.ok("IoInitializeRemoveLockEx", &[lock, 1, 0, 0, size]);
    t.ok("IoReleaseRemoveLockEx", &[lock, 0x999, size]);
    assert!(t.found("REMOVE_LOCK_RELEASE_NOT_ACQUIRED"));
    t.ok("IoAcquireRemoveLockEx", &[lock, 0x100, 0, 1, size]);
    t.ok("IoAcquireRemoveLockEx", &[lock, 0x200, 0, 1, size]);
    // Removing while another acquisition (0x200) is held: nothing will release it.
    assert!(t.ddi("IoReleaseRemoveLockAndWaitEx", &[lock, 0x100, size]).is_err());
    assert!(t.found("REMOVE_LOCK_HELD_AT_REMOVE"), "{}", t.findings());
}

// ------------------------------------------------------------------ registry

#[test]
fn the_registry_answers_device_parameters() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let d = t.driver(nop);
    let pdo = t.device(d);
    t.sys.nt.io.set_device_value(pdo, "DmaMode", RegValue::Dword(2));
    let block = t.memory(256);
    let (handle_out, name, answer, returned) = (block, block + 16, block + 128, block + 8);
    assert_eq!(t.ok("IoOpenDeviceRegistryKey", &[pdo, 1, 0x2_0019, handle_out]), status::SUCCESS);
    let handle = t.sys.machine.read_u64(handle_out).unwrap();
    write_unicode_string(&t.sys.machine, name, name + 16, "DMAMODE").unwrap();
    assert_eq!(t.ok("ZwQueryValueKey", &[handle, name, 2, answer, 8, returned]), status::BUFFER_TOO_SMALL);
    assert_eq!(t.sys.machine.read_u32(returned).unwrap(), 16);
    assert_eq!(t.ok("ZwQueryValueKey", &[handle, name, 2, answer, 14, returned]), status::BUFFER_OVERFLOW);
    assert_eq!(t.ok("ZwQueryValueKey", &[handle, name, 2, answer, 32, returned]), status::SUCCESS);
    let m = &t.sys.machine;
    assert_eq!(m.read_u32(answer + 4).unwrap(), 4, "REG_DWORD");
    assert_eq!(m.read_u32(answer + 8).unwrap(), 4);
    assert_eq!(m.read_u32(answer + 12).unwrap(), 2);
    write_unicode_string(m, name, name + 16, "Missing").unwrap();
    assert_eq!(t.ok("ZwQueryValueKey", &[handle, name, 2, answer, 32, returned]), status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(t.sys.nt.io.leaks().len(), 2, "the open handle and the PDO");
    assert_eq!(t.ok("ZwClose", &[handle]), status::SUCCESS);
    t.assert_clean();
    let Err(Stop::Bugcheck(report)) = t.ddi("ZwClose", &[handle]) else { panic!("no bugcheck") };
    assert_eq!(report.code, 0x93);
}

#[test]
fn the_registry_key_of_an_fdo_is_refused() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let (fdo, _) = t.stack(nop, nop);
    let out = t.memory(8);
    assert_eq!(t.ok("IoOpenDeviceRegistryKey", &[fdo, 1, 0x2_0019, out]), status::INVALID_DEVICE_REQUEST);
    assert!(t.found("REGISTRY_KEY_NOT_PDO"));
}

// ------------------------------------------------------------------ power

#[test]
fn a_requested_power_irp_goes_to_the_top_and_calls_back() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let done = complete_with(&mut t, status::SUCCESS, 0);
    let (fdo, pdo) = t.stack(down, done);
    // The callback stores its five arguments at `context`.
    let callback = t.code(|a| {
        a.mov(rax, qword_ptr(rsp + 0x28)).unwrap();
        a.mov(qword_ptr(r9), rcx).unwrap();
        a.mov(qword_ptr(r9 + 8), rdx).unwrap();
        a.mov(qword_ptr(r9 + 16), r8).unwrap();
        a.mov(qword_ptr(r9 + 24), rax).unwrap();
        a.mov(eax, dword_ptr(rax)).unwrap();
        a.mov(qword_ptr(r9 + 32), rax).unwrap();
        a.ret().unwrap();
    });
    let ctx = t.memory(64);
    let irp_out = ctx + 48;
    assert_eq!(t.ok("PoRequestPowerIrp", &[pdo, u64::from(mn::SET_POWER), 4, callback, ctx, irp_out]), status::PENDING);
    let m = &t.sys.machine;
    let irp_va = m.read_u64(irp_out).unwrap();
    assert_eq!(m.read_u64(ctx).unwrap(), pdo);
    assert_eq!(m.read_u64(ctx + 8).unwrap(), u64::from(mn::SET_POWER));
    assert_eq!(m.read_u64(ctx + 16).unwrap(), 4, "PowerDeviceD3");
    assert_eq!(m.read_u64(ctx + 24).unwrap(), irp_va + irp::STATUS);
    assert_eq!(m.read_u64(ctx + 32).unwrap(), u64::from(status::SUCCESS));
    assert!(!m.is_mapped(irp_va, 8));
    let _ = fdo;
    assert_eq!(t.ok("PoSetPowerState", &[pdo, 1, 4]), 1, "D0 before");
    assert_eq!(t.ok("PoSetPowerState", &[pdo, 1, 1]), 4);
    t.assert_clean();
}

// ------------------------------------------------------------------ every other check, tripped

#[test]
fn object_and_device_misuse_is_found() {
    let Some(mut t) = T::new() else { return };
    let Err(Stop::Bugcheck(report)) = t.ddi("ObfReferenceObject", &[0]) else { panic!("no bugcheck") };
    assert_eq!(report.code, 0x18);
    assert!(t.found("REFERENCE_NULL_OBJECT"));
    let Some(mut t) = T::new() else { return };
    let junk = t.memory(512);
    let Err(Stop::Bugcheck(report)) = t.ddi("IoDeleteDevice", &[junk]) else { panic!("no bugcheck") };
    assert_eq!((report.code, report.parameters[0]), (0xC9, 0x4));
    assert!(t.found("DELETE_UNKNOWN_DEVICE"));
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let (fdo, pdo) = t.stack(nop, nop);
    t.ok("IoInvalidateDeviceRelations", &[fdo, 0]);
    assert!(t.found("INVALIDATE_RELATIONS_NOT_PDO"));
    assert!(t.sys.nt.io.invalidated.is_empty());
    t.sys.nt.verifier.findings.clear();
    t.ok("IoInvalidateDeviceRelations", &[pdo, 0]);
    assert_eq!(t.sys.nt.io.invalidated, [(pdo, 0)]);
    t.assert_clean();
}

#[test]
fn io_call_driver_refuses_what_is_not_a_device_or_an_irp() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let (fdo, _) = t.stack(nop, nop);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    let Err(Stop::Bugcheck(r)) = t.ddi("IofCallDriver", &[0, irp_va]) else { panic!("no bugcheck") };
    assert_eq!((r.code, r.parameters[0]), (0xC9, 0x204));
    assert!(t.found("IO_CALL_DRIVER_NULL_DEVICE"));

    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let (fdo, _) = t.stack(nop, nop);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    let junk = t.memory(512);
    let Err(Stop::Bugcheck(r)) = t.ddi("IofCallDriver", &[junk, irp_va]) else { panic!("no bugcheck") };
    assert_eq!((r.code, r.parameters[0]), (0xC9, 0x4));
    assert!(t.found("IO_CALL_DRIVER_BAD_DEVICE"));

    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let (fdo, _) = t.stack(nop, nop);
    let junk = t.memory(512);
    let Err(Stop::Bugcheck(r)) = t.ddi("IofCallDriver", &[fdo, junk]) else { panic!("no bugcheck") };
    assert_eq!((r.code, r.parameters[0]), (0xC9, 0x3));
    assert!(t.found("IO_CALL_DRIVER_NOT_AN_IRP"));

    let Some(mut t) = T::new() else { return };
    let junk = t.memory(512);
    let Err(Stop::Bugcheck(r)) = t.ddi("IofCompleteRequest", &[junk, 0]) else { panic!("no bugcheck") };
    assert_eq!(r.code, 0x44);
    assert!(t.found("COMPLETE_NOT_AN_IRP"));
}

#[test]
fn a_trashed_or_overrun_irp_stack_is_found() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let untouched = complete_untouched(&mut t);
    let (fdo, _) = t.stack(down, untouched);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    let m = &t.sys.machine;
    let pointer = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION).unwrap();
    m.write_u64(irp_va + irp::CURRENT_STACK_LOCATION, pointer + 8).unwrap();
    // The IRP goes on with the location CurrentLocation names.
    assert_eq!(t.ok("IofCallDriver", &[fdo, irp_va]), status::NOT_SUPPORTED);
    assert!(t.found("IRP_STACK_TRASHED"), "{}", t.findings());

    let Some(mut t) = T::new() else { return };
    let untouched = complete_untouched(&mut t);
    let (fdo, _) = t.stack(untouched, untouched);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    // Skipped past its own location before the first send.
    let m = &t.sys.machine;
    m.write_u8(irp_va + irp::CURRENT_LOCATION, 4).unwrap();
    m.write_u64(irp_va + irp::CURRENT_STACK_LOCATION, location_va(irp_va, 4)).unwrap();
    assert!(t.ddi("IofCallDriver", &[fdo, irp_va]).is_err());
    assert!(t.found("IRP_STACK_LOCATION_OUT_OF_RANGE"), "{}", t.findings());
}

#[test]
fn dispatch_table_and_major_function_mistakes_are_found() {
    let Some(mut t) = T::new() else { return };
    let untouched = complete_untouched(&mut t);
    let (fdo, _) = t.stack(untouched, untouched);
    let d = t.sys.machine.read_u64(fdo + device_object::DRIVER_OBJECT).unwrap();
    t.sys.machine.write_u64(d + driver_object::MAJOR_FUNCTION + 8 * u64::from(mj::PNP), 0).unwrap();
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    assert_eq!(t.ok("IofCallDriver", &[fdo, irp_va]), status::INVALID_DEVICE_REQUEST);
    assert!(t.found("NO_DISPATCH_ROUTINE"));

    let Some(mut t) = T::new() else { return };
    let untouched = complete_untouched(&mut t);
    let (fdo, _) = t.stack(untouched, untouched);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.sys.machine.write_u8(location_va(irp_va, 2) + stack::MAJOR_FUNCTION, 0x30).unwrap();
    assert_eq!(t.ok("IofCallDriver", &[fdo, irp_va]), status::INVALID_DEVICE_REQUEST);
    assert!(t.found("IRP_BAD_MAJOR_FUNCTION"));
}

#[test]
fn power_irp_mistakes_are_found() {
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let done = complete_with(&mut t, status::SUCCESS, 0);
    let (fdo, _) = t.stack(down, done);
    let block = t.memory(64);
    t.ok("KeInitializeEvent", &[block, 0, 0]);
    let irp_va = t.ddi("IoBuildSynchronousFsdRequest", &[u64::from(mj::POWER), fdo, 0, 0, 0, block, block + 32]).unwrap();
    t.sys.machine.write_u8(location_va(irp_va, 2) + stack::MINOR_FUNCTION, mn::QUERY_POWER).unwrap();
    // Status left at 0: a new power IRP must start as STATUS_NOT_SUPPORTED.
    t.ok("PoCallDriver", &[fdo, irp_va]);
    assert!(t.found("POWER_IRP_BAD_INITIAL_STATUS"), "{}", t.findings());
    // PoCallDriver with a PnP IRP.
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("PoCallDriver", &[fdo, irp_va]);
    assert!(t.found("PO_CALL_DRIVER_NOT_POWER"));
}

#[test]
fn irql_mistakes_around_irps_are_found() {
    // IoCallDriver above DISPATCH_LEVEL (0xC9 0x10).
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let untouched = complete_untouched(&mut t);
    let (fdo, _) = t.stack(down, untouched);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::BOGUS);
    t.sys.nt.irql = 3;
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("IO_CALL_DRIVER_IRQL"), "{}", t.findings());
    // IoCompleteRequest above DISPATCH_LEVEL (0x0E) and with a cancel routine set (0x07).
    let Some(mut t) = T::new() else { return };
    let down = pass_down(&mut t);
    let pend = keep(&mut t, true, status::PENDING);
    let (fdo, pdo) = t.stack(down, pend);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    let kept = t.sys.machine.read_u64(t.ext(pdo) + 8).unwrap();
    t.sys.machine.write_u32(kept + irp::STATUS, 0).unwrap();
    t.sys.machine.write_u64(kept + irp::CANCEL_ROUTINE, pend).unwrap();
    t.sys.nt.irql = 3;
    t.ok("IofCompleteRequest", &[kept, 0]);
    assert!(t.found("COMPLETE_IRQL"), "{}", t.findings());
    assert!(t.found("COMPLETE_WITH_CANCEL_ROUTINE"));
    // A completion routine that returns at another IRQL.
    let Some(mut t) = T::new() else { return };
    let raise = t.stub("KfRaiseIrql");
    let routine = t.code(|a| {
        a.sub(rsp, 0x28).unwrap();
        a.mov(ecx, 2).unwrap();
        a.mov(rax, raise).unwrap();
        a.call(rax).unwrap();
        a.xor(eax, eax).unwrap();
        a.add(rsp, 0x28).unwrap();
        a.ret().unwrap();
    });
    let forward = forward_with_routine(&mut t, routine);
    let done = complete_with(&mut t, status::SUCCESS, 0);
    let (fdo, _) = t.stack(forward, done);
    let (irp_va, _, _) = t.pnp_irp(fdo, mn::QUERY_CAPABILITIES);
    t.ok("IofCallDriver", &[fdo, irp_va]);
    assert!(t.found("COMPLETION_ROUTINE_CHANGED_IRQL"), "{}", t.findings());
}

#[test]
fn event_and_remove_lock_misuse_is_found() {
    let Some(mut t) = T::new() else { return };
    let e = t.memory(64);
    t.ok("KeInitializeEvent", &[e, 5, 0]);
    assert!(t.found("EVENT_BAD_TYPE"));
    let zero = e + 32;
    t.sys.machine.write_u8(e, 7).unwrap();
    t.ok("KeWaitForSingleObject", &[e, 0, 0, 0, zero]);
    assert!(t.found("WAIT_NOT_AN_EVENT"));
    let lock = t.memory(64);
    t.ok("IoInitializeRemoveLockEx", &[lock, 1, 0, 0, 64]);
    assert!(t.found("REMOVE_LOCK_BAD_SIZE"));
    assert_eq!(t.ok("IoAcquireRemoveLockEx", &[lock, 1, 0, 1, 32]), status::INVALID_PARAMETER);
    assert!(t.found("REMOVE_LOCK_NOT_INITIALIZED"));
    t.ok("IoInitializeRemoveLockEx", &[lock, 1, 0, 0, 32]);
    t.ok("IoAcquireRemoveLockEx", &[lock, 9, 0, 1, 32]);
    t.ok("IoReleaseRemoveLockAndWaitEx", &[lock, 9, 32]);
    assert!(!t.found("REMOVE_LOCK_WAIT_TWICE"));
    t.ok("IoReleaseRemoveLockAndWaitEx", &[lock, 9, 32]);
    assert!(t.found("REMOVE_LOCK_WAIT_TWICE"));
}

#[test]
fn the_low_resources_simulation_fails_chosen_allocations() {
    let Some(mut t) = T::new() else { return };
    let nop = complete_untouched(&mut t);
    let d = t.driver(nop);
    let out = t.memory(8);
    t.sys.nt.io.fail_create_device_at = Some(1);
    assert_eq!(t.ok("IoCreateDevice", &[d, 0, 0, 0x22, 0, 0, out]), status::SUCCESS);
    assert_eq!(t.ok("IoCreateDevice", &[d, 0, 0, 0x22, 0, 0, out]), status::INSUFFICIENT_RESOURCES);
    assert_eq!(t.sys.machine.read_u64(out).unwrap(), 0);
    let dev = t.device(d);
    t.sys.nt.io.fail_irp_at = Some(0);
    assert_eq!(t.ddi("IoBuildSynchronousFsdRequest", &[u64::from(mj::PNP), dev, 0, 0, 0, out, out]).unwrap(), 0);
    assert_eq!(t.ok("PoRequestPowerIrp", &[dev, u64::from(mn::SET_POWER), 1, 0, 0, 0]), status::PENDING);
    t.sys.nt.io.fail_irp_at = Some(2);
    assert_eq!(t.ok("PoRequestPowerIrp", &[dev, u64::from(mn::SET_POWER), 1, 0, 0, 0]), status::INSUFFICIENT_RESOURCES);
    assert_eq!(t.ok("PoRequestPowerIrp", &[dev, 0x7, 1, 0, 0, 0]), status::INVALID_PARAMETER_2);
}
