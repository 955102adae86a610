//! The emulated kernel's dispatcher (`sim/src/nt/ke.rs`) driven from guest
//! code: DPCs, timers in virtual time, delays (`KeDelayExecutionThread`),
//! line and message interrupts, the interrupt spin lock, delivery as a
//! uniprocessor Windows does it, and a test that trips each Driver
//! Verifier check. Needs `/dev/kvm`: says so and passes vacuously only
//! outside CI.

mod support;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;

use capdma_sim::nt::ke::{self, AssignedInterrupt, Trigger};
use capdma_sim::nt::layout::ke::{
    fully_specified, io_connect_interrupt_parameters as icp, io_disconnect_interrupt_parameters as idp,
    io_interrupt_message_info as imi, io_interrupt_message_info_entry as imie, line_based, message_based,
};
use capdma_sim::nt::system::System;
use capdma_sim::nt::{Nt, DISPATCH_LEVEL, PASSIVE_LEVEL};
use capdma_winvm::{Machine, Protection, Stop};
use iced_x86::code_asm::*;

/// Offsets in a recorder's log page.
const LOG_RCX: i32 = 0;
const LOG_RDX: i32 = 8;
const LOG_R8: i32 = 16;
const LOG_R9: i32 = 24;
const LOG_IRQL: i32 = 32;
const LOG_COUNT: i32 = 40;
const LOG_SEQ: i32 = 48;

const TAG: u64 = u32::from_le_bytes(*b"KeTs") as u64;
const POOL_FLAG_NON_PAGED: u64 = 0x40;
const POOL_FLAG_PAGED: u64 = 0x100;

/// `log + offset`.
fn at(log: u64, offset: i32) -> u64 {
    log + u64::try_from(offset).unwrap()
}

/// A booted system, or `None` (with the reason printed) without KVM outside CI.
fn system() -> Option<System> {
    support::system()
}

/// What a recorder routine does besides recording.
#[derive(Clone, Copy, Default)]
struct Rec {
    /// Reads `[rdx]` (its context) first: faults when the context is freed.
    deref_rdx: bool,
    /// A shared sequence counter to stamp the call with (address).
    seq: u64,
    /// Ends with `return f(rcx)`; otherwise returns `ret`.
    tail: Option<(u64, u64)>,
    ret: u64,
}

struct T {
    sys: System,
    stubs: HashMap<&'static str, u64>,
}

impl T {
    fn new() -> Option<Self> {
        Some(Self { sys: system()?, stubs: HashMap::new() })
    }

    fn nt(&mut self) -> &mut Nt {
        &mut self.sys.nt
    }

    fn m(&mut self) -> &mut Machine {
        &mut self.sys.machine
    }

    fn stub(&mut self, name: &'static str) -> u64 {
        let (nt, m) = (&mut self.sys.nt, &mut self.sys.machine);
        *self.stubs.entry(name).or_insert_with(|| nt.resolve(m, "ntoskrnl.exe", name).expect(name))
    }

    fn try_call(&mut self, name: &'static str, args: &[u64]) -> Result<u64, Stop> {
        let va = self.stub(name);
        self.sys.machine.call(&mut self.sys.nt, va, args)
    }

    fn call(&mut self, name: &'static str, args: &[u64]) -> u64 {
        self.try_call(name, args).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn page(&mut self) -> u64 {
        self.m().alloc_own_pages(1, Protection::READ_WRITE).unwrap()
    }

    fn u64_at(&mut self, va: u64) -> u64 {
        self.m().read_u64(va).unwrap()
    }

    fn count(&mut self, log: u64) -> u64 {
        self.u64_at(at(log, LOG_COUNT))
    }

    /// Assembles `build` at a fresh executable page.
    fn code(&mut self, build: impl FnOnce(&mut CodeAssembler)) -> u64 {
        let va = self.m().alloc_own_pages(1, Protection::READ_EXECUTE).unwrap();
        let mut a = CodeAssembler::new(64).unwrap();
        build(&mut a);
        let bytes = a.assemble(va).unwrap();
        self.m().write(va, &bytes).unwrap();
        va
    }

    /// A routine (DPC, ISR) that records its four arguments, the IRQL it
    /// runs at (from `KeGetCurrentIrql`) and a call count in `log`.
    fn recorder(&mut self, log: u64, rec: Rec) -> u64 {
        let irql = self.stub("KeGetCurrentIrql");
        self.code(|a| {
            a.push(rbx).unwrap();
            a.sub(rsp, 0x20).unwrap();
            a.mov(rbx, log).unwrap();
            if rec.deref_rdx {
                a.mov(rax, qword_ptr(rdx)).unwrap();
            }
            a.mov(qword_ptr(rbx + LOG_RCX), rcx).unwrap();
            a.mov(qword_ptr(rbx + LOG_RDX), rdx).unwrap();
            a.mov(qword_ptr(rbx + LOG_R8), r8).unwrap();
            a.mov(qword_ptr(rbx + LOG_R9), r9).unwrap();
            a.mov(rax, irql).unwrap();
            a.call(rax).unwrap();
            a.mov(byte_ptr(rbx + LOG_IRQL), al).unwrap();
            a.inc(qword_ptr(rbx + LOG_COUNT)).unwrap();
            if rec.seq != 0 {
                a.mov(rax, rec.seq).unwrap();
                a.mov(rcx, qword_ptr(rax)).unwrap();
                a.inc(rcx).unwrap();
                a.mov(qword_ptr(rax), rcx).unwrap();
                a.mov(qword_ptr(rbx + LOG_SEQ), rcx).unwrap();
            }
            if let Some((f, arg)) = rec.tail {
                a.mov(rcx, arg).unwrap();
                a.mov(rax, f).unwrap();
                a.call(rax).unwrap();
            } else {
                a.mov(rax, rec.ret).unwrap();
            }
            a.add(rsp, 0x20).unwrap();
            a.pop(rbx).unwrap();
            a.ret().unwrap();
        })
    }

    /// A DPC object at a fresh page with a recorder routine; returns (KDPC, log, routine).
    fn dpc(&mut self, rec: Rec, context: u64) -> (u64, u64, u64) {
        let (dpc, log) = (self.page(), self.page());
        let routine = self.recorder(log, rec);
        self.call("KeInitializeDpc", &[dpc, routine, context]);
        (dpc, log, routine)
    }

    fn alloc(&mut self, flags: u64, bytes: u64) -> u64 {
        let va = self.call("ExAllocatePool2", &[flags, bytes, TAG]);
        assert_ne!(va, 0);
        va
    }

    fn advance(&mut self, until: u64) {
        let (nt, m) = (&mut self.sys.nt, &mut self.sys.machine);
        nt.advance_time(m, until).unwrap();
    }

    fn run_pending(&mut self) -> Result<(), Stop> {
        let (nt, m) = (&mut self.sys.nt, &mut self.sys.machine);
        nt.run_pending(m)
    }

    fn found(&self, rule: &str) -> Option<&capdma_sim::nt::verifier::Finding> {
        self.sys.nt.verifier.findings.iter().find(|f| f.rule == rule)
    }

    fn assert_clean(&self) {
        assert!(self.sys.nt.verifier.findings.is_empty(), "findings: {:#?}", self.sys.nt.verifier.findings);
    }

    /// `IoConnectInterruptEx(CONNECT_FULLY_SPECIFIED_GROUP)` for `pdo`'s
    /// line; returns (status, KINTERRUPT).
    fn connect_line(&mut self, pdo: u64, isr: u64, context: u64, line: (u32, u8, bool, bool), mask: u64) -> (u32, u64) {
        let (vector, irql, latched, shared) = line;
        let p = self.page();
        let out = p + 0x800;
        let u = p + icp::UNION;
        let m = self.m();
        m.write_u32(p + icp::VERSION, ke::CONNECT_FULLY_SPECIFIED_GROUP).unwrap();
        m.write_u64(u + fully_specified::PHYSICAL_DEVICE_OBJECT, pdo).unwrap();
        m.write_u64(u + fully_specified::INTERRUPT_OBJECT, out).unwrap();
        m.write_u64(u + fully_specified::SERVICE_ROUTINE, isr).unwrap();
        m.write_u64(u + fully_specified::SERVICE_CONTEXT, context).unwrap();
        m.write_u8(u + fully_specified::SYNCHRONIZE_IRQL, irql).unwrap();
        m.write_u8(u + fully_specified::SHARE_VECTOR, u8::from(shared)).unwrap();
        m.write_u32(u + fully_specified::VECTOR, vector).unwrap();
        m.write_u8(u + fully_specified::IRQL, irql).unwrap();
        m.write_u32(u + fully_specified::INTERRUPT_MODE, u32::from(latched)).unwrap();
        m.write_u64(u + fully_specified::PROCESSOR_ENABLE_MASK, mask).unwrap();
        let status = u32::try_from(self.call("IoConnectInterruptEx", &[p])).unwrap();
        (status, self.u64_at(out))
    }

    /// `IoConnectInterruptEx(CONNECT_MESSAGE_BASED)`; returns (status,
    /// the Version left in the parameters, the connection context).
    fn connect_messages(&mut self, pdo: u64, isr: u64, fallback: u64, context: u64) -> (u32, u32, u64) {
        let p = self.page();
        let out = p + 0x800;
        let u = p + icp::UNION;
        let m = self.m();
        m.write_u32(p + icp::VERSION, ke::CONNECT_MESSAGE_BASED).unwrap();
        m.write_u64(u + message_based::PHYSICAL_DEVICE_OBJECT, pdo).unwrap();
        m.write_u64(u + message_based::CONNECTION_CONTEXT, out).unwrap();
        m.write_u64(u + message_based::MESSAGE_SERVICE_ROUTINE, isr).unwrap();
        m.write_u64(u + message_based::SERVICE_CONTEXT, context).unwrap();
        m.write_u64(u + message_based::FALL_BACK_SERVICE_ROUTINE, fallback).unwrap();
        let status = u32::try_from(self.call("IoConnectInterruptEx", &[p])).unwrap();
        let version = self.m().read_u32(p + icp::VERSION).unwrap();
        (status, version, self.u64_at(out))
    }

    fn disconnect(&mut self, version: u32, context: u64) {
        let p = self.page();
        self.m().write_u32(p + idp::VERSION, version).unwrap();
        self.m().write_u64(p + idp::CONNECTION_CONTEXT, context).unwrap();
        self.call("IoDisconnectInterruptEx", &[p]);
    }

    /// A host function an ISR calls to clear its line: deasserts `vector`, returns TRUE.
    fn ack(&mut self, vector: u32) -> u64 {
        let (nt, m) = (&mut self.sys.nt, &mut self.sys.machine);
        nt.host_function(m, "test_ack", ack, u64::from(vector), 15).unwrap()
    }
}

#[allow(clippy::unnecessary_wraps, reason = "a HostFn returns a Result")]
fn ack(nt: &mut Nt, _m: &mut Machine, vector: u64) -> Result<u64, Stop> {
    ke::set_line(nt, u32::try_from(vector).unwrap(), false);
    Ok(1)
}

fn level(vector: u32, irql: u8, shared: bool) -> AssignedInterrupt {
    AssignedInterrupt::Line { vector, irql, trigger: Trigger::Level, shared }
}

// ------------------------------------------------------------------ DPCs

#[test]
fn a_dpc_queued_at_dispatch_runs_when_the_irql_drops_and_requeueing_it_is_a_no_op() {
    let Some(mut t) = T::new() else { return };
    let (dpc, log, routine) = t.dpc(Rec::default(), 0x00C0_FFEE);
    assert_eq!(t.m().read_u8(dpc).unwrap(), 19, "KDPC.Type = DpcObject");
    assert_eq!(t.call("KfRaiseIrql", &[u64::from(DISPATCH_LEVEL)]), 0);
    assert_eq!(t.call("KeInsertQueueDpc", &[dpc, 11, 22]), 1, "queued");
    assert_eq!(t.call("KeInsertQueueDpc", &[dpc, 33, 44]), 0, "already queued: FALSE");
    assert_eq!(t.count(log), 0, "not below DISPATCH_LEVEL yet");
    assert_eq!(ke::live(t.nt()).queued_dpcs, vec![(dpc, routine)]);
    assert_ne!(t.u64_at(dpc + 56), 0, "DpcData marks it queued");
    t.call("KeLowerIrql", &[u64::from(PASSIVE_LEVEL)]);
    assert_eq!(t.count(log), 1, "ran once, as soon as the IRQL dropped");
    assert_eq!(t.u64_at(at(log, LOG_RCX)), dpc);
    assert_eq!(t.u64_at(at(log, LOG_RDX)), 0x00C0_FFEE);
    assert_eq!((t.u64_at(at(log, LOG_R8)), t.u64_at(at(log, LOG_R9))), (11, 22), "the first insert's arguments");
    assert_eq!(t.m().read_u8(at(log, LOG_IRQL)).unwrap(), DISPATCH_LEVEL);
    assert_eq!(t.nt().irql, PASSIVE_LEVEL);
    assert!(ke::live(t.nt()).is_empty());
    assert_eq!(t.u64_at(dpc + 56), 0);
    t.assert_clean();
}

#[test]
fn a_dpc_queued_at_passive_level_runs_before_the_insert_returns_to_its_caller() {
    let Some(mut t) = T::new() else { return };
    let (dpc, log, _) = t.dpc(Rec::default(), 1);
    assert_eq!(t.call("KeInsertQueueDpc", &[dpc, 0, 0]), 1);
    assert_eq!(t.count(log), 1);
    assert_eq!(t.call("KeInsertQueueDpc", &[dpc, 0, 0]), 1, "not queued any more: queued again");
    assert_eq!(t.count(log), 2);
    assert_eq!(t.nt().ke.stats.dpc_runs, 2);
    t.assert_clean();
}

#[test]
fn a_dpc_returning_at_another_irql_is_caught() {
    let Some(mut t) = T::new() else { return };
    let lower = t.stub("KeLowerIrql");
    let (dpc, log, _) = t.dpc(Rec { tail: Some((lower, 0)), ..Rec::default() }, 0);
    t.call("KeInsertQueueDpc", &[dpc, 0, 0]);
    assert_eq!(t.count(log), 1);
    let f = t.found("DPC_IRQL_CHANGED").expect("DPC_IRQL_CHANGED");
    assert_eq!(f.bugcheck, 0xC8);
    assert_eq!(t.nt().irql, PASSIVE_LEVEL, "the kernel restores the IRQL it ran the DPC from");
}

#[test]
fn inserting_a_dpc_never_initialized_is_caught() {
    let Some(mut t) = T::new() else { return };
    let dpc = t.page();
    assert_eq!(t.call("KeInsertQueueDpc", &[dpc, 0, 0]), 0);
    assert_eq!(t.found("DPC_NOT_INITIALIZED").map(|f| f.bugcheck), Some(0xC4));
}

#[test]
fn reinitializing_a_queued_dpc_is_caught() {
    let Some(mut t) = T::new() else { return };
    let (dpc, log, routine) = t.dpc(Rec::default(), 0);
    t.call("KfRaiseIrql", &[2]);
    t.call("KeInsertQueueDpc", &[dpc, 0, 0]);
    t.call("KeInitializeDpc", &[dpc, routine, 0]);
    assert!(t.found("DPC_REINITIALIZED_WHILE_QUEUED").is_some());
    t.call("KeLowerIrql", &[0]);
    assert_eq!(t.count(log), 1, "still queued once, and run");
}

#[test]
fn a_dpc_object_in_paged_pool_is_caught() {
    let Some(mut t) = T::new() else { return };
    let log = t.page();
    let routine = t.recorder(log, Rec::default());
    let dpc = t.alloc(POOL_FLAG_PAGED, 64);
    t.call("KeInitializeDpc", &[dpc, routine, 0]);
    assert!(t.found("DPC_IN_PAGED_POOL").is_some());
    let ok = t.alloc(POOL_FLAG_NON_PAGED, 64);
    let findings = t.nt().verifier.findings.len();
    t.call("KeInitializeDpc", &[ok, routine, 0]);
    assert_eq!(t.nt().verifier.findings.len(), findings, "non-paged pool is fine");
}

// ------------------------------------------------------------------ timers

#[test]
fn a_periodic_timer_expires_in_virtual_time_at_the_period_asked_for() {
    let Some(mut t) = T::new() else { return };
    t.nt().ke.cancel_race = false;
    let (dpc, log, _) = t.dpc(Rec::default(), 7);
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 0]);
    assert_eq!(t.m().read_u8(timer).unwrap(), 8, "TimerNotificationObject");
    let ten_ms = (-100_000_i64).cast_unsigned();
    assert_eq!(t.call("KeSetTimerEx", &[timer, ten_ms, 5, dpc]), 0, "was not set");
    assert_eq!(ke::next_due(t.nt()), Some(100_000));
    t.advance(99_999);
    assert_eq!(t.count(log), 0);
    t.advance(100_000);
    assert_eq!(t.count(log), 1);
    assert_eq!(t.u64_at(at(log, LOG_R8)), 100_000, "SystemArgument1: the expiry time's low part");
    assert_eq!(t.m().read_u32(timer + 4).unwrap(), 1, "signaled");
    t.advance(250_000);
    assert_eq!(t.count(log), 4, "at 10, 15, 20 and 25 ms");
    assert_eq!(t.u64_at(at(log, LOG_R8)), 250_000);
    assert_eq!(t.call("KeSetTimerEx", &[timer, ten_ms, 5, dpc]), 1, "was set");
    assert_eq!(t.call("KeCancelTimer", &[timer]), 1);
    assert_eq!(ke::next_due(t.nt()), None);
    t.advance(1_000_000);
    assert_eq!(t.count(log), 4, "cancelled");
    assert_eq!(t.nt().time, 1_000_000);
    t.assert_clean();
}

#[test]
fn an_absolute_due_time_is_system_time_and_a_one_shot_timer_fires_once() {
    let Some(mut t) = T::new() else { return };
    let (dpc, log, _) = t.dpc(Rec::default(), 0);
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 0]);
    t.call("KeSetTimerEx", &[timer, ke::SYSTEM_TIME_AT_BOOT + 50_000, 0, dpc]);
    t.advance(49_999);
    assert_eq!(t.count(log), 0);
    t.advance(60_000);
    assert_eq!((t.count(log), t.u64_at(at(log, LOG_R8))), (1, 50_000));
    t.advance(10_000_000);
    assert_eq!(t.count(log), 1);
    assert_eq!(t.call("KeCancelTimer", &[timer]), 0, "no longer set");
    t.assert_clean();
}

#[test]
fn a_cancelled_timers_dpc_may_still_run_until_kefluschqueueddpcs() {
    let Some(mut t) = T::new() else { return };
    let (dpc, log, _) = t.dpc(Rec::default(), 0);
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 0]);
    t.call("KeSetTimerEx", &[timer, (-1_000_000_i64).cast_unsigned(), 100, dpc]);
    assert_eq!(t.call("KeCancelTimer", &[timer]), 1, "a periodic timer stays queued until cancelled");
    assert_eq!(t.count(log), 0, "queued on another processor: not run on this one's exits");
    assert_eq!(ke::live(t.nt()).queued_dpcs.len(), 1);
    t.call("KeFlushQueuedDpcs", &[]);
    assert_eq!(t.count(log), 1, "KeFlushQueuedDpcs waits for it");
    // A one-shot timer that expired elsewhere: FALSE, and its DPC pending.
    t.call("KeSetTimerEx", &[timer, (-1_000_000_i64).cast_unsigned(), 0, dpc]);
    assert_eq!(t.call("KeCancelTimer", &[timer]), 0);
    t.run_pending().unwrap();
    assert_eq!(t.count(log), 2);
    assert_eq!(t.nt().ke.stats.cancel_races, 2);
    t.assert_clean();
}

#[test]
fn freeing_a_timer_dpcs_context_after_cancel_without_a_flush_crashes_in_the_dpc() {
    for flush in [false, true] {
        let Some(mut t) = T::new() else { return };
        let context = t.alloc(POOL_FLAG_NON_PAGED, 64);
        let (dpc, log, _) = t.dpc(Rec { deref_rdx: true, ..Rec::default() }, context);
        let timer = t.page();
        t.call("KeInitializeTimerEx", &[timer, 0]);
        t.call("KeSetTimerEx", &[timer, (-10_000_000_i64).cast_unsigned(), 0, dpc]);
        t.call("KeCancelTimer", &[timer]);
        if flush {
            t.call("KeFlushQueuedDpcs", &[]);
        }
        t.call("ExFreePool", &[context]);
        let result = t.run_pending();
        if flush {
            result.unwrap();
            assert_eq!(t.count(log), 1);
            t.assert_clean();
        } else {
            match result {
                Err(Stop::Bugcheck(report)) => {
                    // The context is freed special pool: 0xD5 (at any IRQL).
                    assert_eq!(report.code, 0xD5, "{report}");
                    assert_eq!(report.cr2, Some(context), "{report}");
                }
                other => panic!("expected a bugcheck in the DPC, got {other:?}"),
            }
        }
    }
}

#[test]
fn freeing_pool_that_holds_a_set_timer_or_a_queued_dpc_is_caught() {
    let Some(mut t) = T::new() else { return };
    let block = t.alloc(POOL_FLAG_NON_PAGED, 256);
    let timer = block;
    let dpc = block + 64;
    let log = t.page();
    let routine = t.recorder(log, Rec::default());
    t.call("KeInitializeTimerEx", &[timer, 0]);
    t.call("KeInitializeDpc", &[dpc, routine, 0]);
    t.call("KeSetTimerEx", &[timer, (-1_000_000_i64).cast_unsigned(), 0, 0]);
    t.call("KfRaiseIrql", &[2]);
    t.call("KeInsertQueueDpc", &[dpc, 0, 0]);
    t.call("ExFreePool", &[block]);
    let f = t.found("FREE_ACTIVE_TIMER").expect("FREE_ACTIVE_TIMER").clone();
    assert_eq!((f.bugcheck, f.parameter1), (0xC4, Some(0x15)));
    let f = t.found("FREE_QUEUED_DPC").expect("FREE_QUEUED_DPC").clone();
    assert_eq!((f.bugcheck, f.parameter1), (0xC7, Some(0x1)));
    t.call("KeLowerIrql", &[0]);
    assert_eq!(t.count(log), 0, "forgotten with the memory");
    assert!(ke::live(t.nt()).is_empty());
}

#[test]
fn initializing_a_timer_above_dispatch_level_is_caught() {
    let Some(mut t) = T::new() else { return };
    let timer = t.page();
    t.call("KfRaiseIrql", &[5]);
    t.call("KeInitializeTimerEx", &[timer, 0]);
    let f = t.found("IRQL_TOO_HIGH").expect("IRQL_TOO_HIGH");
    assert!(f.detail.contains("KeInitializeTimerEx"), "{f}");
}

#[test]
fn reinitializing_a_set_timer_is_caught() {
    let Some(mut t) = T::new() else { return };
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 1]);
    assert_eq!(t.m().read_u8(timer).unwrap(), 9, "TimerSynchronizationObject");
    t.call("KeSetTimerEx", &[timer, (-1_000_i64).cast_unsigned(), 0, 0]);
    t.call("KeInitializeTimerEx", &[timer, 1]);
    assert!(t.found("TIMER_REINITIALIZED_WHILE_SET").is_some());
}

#[test]
fn a_timer_in_paged_pool_or_never_initialized_is_caught() {
    let Some(mut t) = T::new() else { return };
    let timer = t.alloc(POOL_FLAG_PAGED, 64);
    t.call("KeInitializeTimerEx", &[timer, 0]);
    assert!(t.found("TIMER_IN_PAGED_POOL").is_some());
    let other = t.page();
    assert_eq!(t.call("KeSetTimerEx", &[other, (-1_000_i64).cast_unsigned(), 0, 0]), 0);
    assert!(t.found("TIMER_NOT_INITIALIZED").is_some());
    t.call("KeSetTimerEx", &[timer, (-1_000_i64).cast_unsigned(), (-5_i64).cast_unsigned(), 0]);
    assert!(t.found("TIMER_NEGATIVE_PERIOD").is_some());
}

// ------------------------------------------------------------------ interrupts

#[test]
fn a_shared_level_triggered_line_runs_every_isr_until_one_claims_it_at_its_dirql() {
    let Some(mut t) = T::new() else { return };
    let (pdo_a, pdo_b) = (t.page(), t.page());
    ke::assign_interrupts(t.nt(), pdo_a, vec![level(0x51, 5, true)]);
    ke::assign_interrupts(t.nt(), pdo_b, vec![level(0x51, 5, true)]);
    let seq = t.page();
    let (log_a, log_b) = (t.page(), t.page());
    let isr_a = t.recorder(log_a, Rec { seq, ret: 0, ..Rec::default() });
    let ack = t.ack(0x51);
    let isr_b = t.recorder(log_b, Rec { seq, tail: Some((ack, 0)), ..Rec::default() });
    let (status, object_a) = t.connect_line(pdo_a, isr_a, 0xAAAA, (0x51, 5, false, true), 1);
    assert_eq!(status, ke::STATUS_SUCCESS);
    let (status, object_b) = t.connect_line(pdo_b, isr_b, 0xBBBB, (0x51, 5, false, true), 1);
    assert_eq!(status, ke::STATUS_SUCCESS);
    assert_ne!(object_a, object_b);
    ke::set_line(t.nt(), 0x51, true);
    t.run_pending().unwrap();
    assert_eq!((t.count(log_a), t.count(log_b)), (1, 1));
    assert_eq!((t.u64_at(at(log_a, LOG_SEQ)), t.u64_at(at(log_b, LOG_SEQ))), (1, 2), "in connection order");
    assert_eq!((t.u64_at(at(log_a, LOG_RCX)), t.u64_at(at(log_a, LOG_RDX))), (object_a, 0xAAAA));
    assert_eq!((t.u64_at(at(log_b, LOG_RCX)), t.u64_at(at(log_b, LOG_RDX))), (object_b, 0xBBBB));
    assert_eq!(t.m().read_u8(at(log_a, LOG_IRQL)).unwrap(), 5, "at the DIRQL");
    assert_eq!(t.nt().irql, PASSIVE_LEVEL);
    // Asserted again: A declines, B claims; no re-delivery once cleared.
    ke::set_line(t.nt(), 0x51, true);
    t.run_pending().unwrap();
    t.run_pending().unwrap();
    assert_eq!((t.count(log_a), t.count(log_b)), (2, 2));
    t.assert_clean();
}

#[test]
fn a_level_triggered_line_that_no_isr_clears_is_an_interrupt_storm() {
    let Some(mut t) = T::new() else { return };
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![level(0x52, 5, false)]);
    let log = t.page();
    let isr = t.recorder(log, Rec { ret: 1, ..Rec::default() });
    t.connect_line(pdo, isr, 0, (0x52, 5, false, false), 1);
    ke::set_line(t.nt(), 0x52, true);
    match t.run_pending() {
        Err(Stop::Host(why)) => assert!(why.contains("interrupt storm"), "{why}"),
        other => panic!("expected an interrupt storm, got {other:?}"),
    }
    assert!(t.count(log) > u64::from(ke::STORM_LIMIT) - 1);
}

#[test]
fn the_isr_may_run_as_soon_as_io_connect_interrupt_ex_returns() {
    let Some(mut t) = T::new() else { return };
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![level(0x53, 6, false)]);
    ke::set_line(t.nt(), 0x53, true);
    let log = t.page();
    let ack = t.ack(0x53);
    let isr = t.recorder(log, Rec { tail: Some((ack, 0)), ..Rec::default() });
    let (status, _) = t.connect_line(pdo, isr, 0, (0x53, 6, false, false), 1);
    assert_eq!(status, 0);
    assert_eq!(t.count(log), 1, "ran on the connect's return");
    t.assert_clean();
}

thread_local! {
    static MSI_STATUS: Cell<bool> = const { Cell::new(false) };
}

#[test]
fn msi_is_edge_triggered_per_message_and_not_redelivered_while_the_status_stays_set() {
    let Some(mut t) = T::new() else { return };
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![AssignedInterrupt::Messages { vector: 0x60, irql: 7, count: 2 }]);
    let log = t.page();
    let isr = t.recorder(log, Rec { ret: 1, ..Rec::default() });
    let (status, version, info) = t.connect_messages(pdo, isr, 0, 0xC7C7);
    assert_eq!((status, version), (ke::STATUS_SUCCESS, ke::CONNECT_MESSAGE_BASED));
    assert_eq!(t.m().read_u32(info + imi::MESSAGE_COUNT).unwrap(), 2);
    assert_eq!(t.m().read_u8(info + imi::UNIFIED_IRQL).unwrap(), 7);
    let entry1 = info + imi::MESSAGE_INFO + imie::SIZE;
    assert_eq!(t.m().read_u32(entry1 + imie::MESSAGE_DATA).unwrap(), 0x61);
    let object1 = t.u64_at(entry1 + imie::INTERRUPT_OBJECT);
    assert_ne!(object1, 0);
    ke::attach_source(t.nt(), 0x61, Box::new(|| MSI_STATUS.with(Cell::get)));
    MSI_STATUS.with(|s| s.set(true));
    t.run_pending().unwrap();
    assert_eq!(t.count(log), 1);
    assert_eq!((t.u64_at(at(log, LOG_RCX)), t.u64_at(at(log, LOG_RDX)), t.u64_at(at(log, LOG_R8))), (object1, 0xC7C7, 1));
    t.run_pending().unwrap();
    t.call("KeGetCurrentIrql", &[]);
    assert_eq!(t.count(log), 1, "the status bit stays set: no new message");
    MSI_STATUS.with(|s| s.set(false));
    t.run_pending().unwrap();
    MSI_STATUS.with(|s| s.set(true));
    t.run_pending().unwrap();
    assert_eq!(t.count(log), 2, "a new edge, a new message");
    ke::signal(t.nt(), 0x60);
    ke::signal(t.nt(), 0x60);
    t.run_pending().unwrap();
    assert_eq!((t.count(log), t.u64_at(at(log, LOG_R8))), (3, 0), "two writes before delivery: one interrupt, message 0");
    // MSI is never shared.
    let (status, _, _) = t.connect_messages(pdo, isr, 0, 0);
    assert_eq!(status, ke::STATUS_INVALID_PARAMETER);
    t.disconnect(ke::CONNECT_MESSAGE_BASED, info);
    assert!(ke::live(t.nt()).interrupts.is_empty());
    t.assert_clean();
}

#[test]
fn a_message_based_request_on_a_line_only_device_falls_back_to_the_line() {
    let Some(mut t) = T::new() else { return };
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![level(0x54, 5, true)]);
    let (log, fallback_log) = (t.page(), t.page());
    let isr = t.recorder(log, Rec { ret: 1, ..Rec::default() });
    let ack = t.ack(0x54);
    let fallback = t.recorder(fallback_log, Rec { tail: Some((ack, 0)), ..Rec::default() });
    let (status, version, object) = t.connect_messages(pdo, isr, fallback, 0x1234);
    assert_eq!((status, version), (ke::STATUS_SUCCESS, ke::CONNECT_LINE_BASED));
    assert!(t.nt().ke.interrupts.contains_key(&object), "the context is the KINTERRUPT");
    ke::set_line(t.nt(), 0x54, true);
    t.run_pending().unwrap();
    assert_eq!((t.count(log), t.count(fallback_log)), (0, 1));
    assert_eq!((t.u64_at(at(fallback_log, LOG_RCX)), t.u64_at(at(fallback_log, LOG_RDX))), (object, 0x1234));
    t.disconnect(ke::CONNECT_LINE_BASED, object);
    t.assert_clean();
}

#[test]
fn io_connect_interrupt_ex_refuses_what_its_page_refuses() {
    let Some(mut t) = T::new() else { return };
    let log = t.page();
    let isr = t.recorder(log, Rec::default());
    let (line_pdo, msi_pdo, bare_pdo) = (t.page(), t.page(), t.page());
    ke::assign_interrupts(t.nt(), line_pdo, vec![level(0x55, 5, false)]);
    ke::assign_interrupts(t.nt(), msi_pdo, vec![AssignedInterrupt::Messages { vector: 0x70, irql: 7, count: 1 }]);
    // Another version.
    let p = t.page();
    t.m().write_u32(p, 9).unwrap();
    assert_eq!(u32::try_from(t.call("IoConnectInterruptEx", &[p])).unwrap(), ke::STATUS_INVALID_PARAMETER_1);
    // No processor in the mask.
    assert_eq!(t.connect_line(line_pdo, isr, 0, (0x55, 5, false, false), 0).0, ke::STATUS_INVALID_PARAMETER_10);
    // A vector the device was not given; a device given nothing.
    assert_eq!(t.connect_line(line_pdo, isr, 0, (0x56, 5, false, false), 1).0, ke::STATUS_NOT_FOUND);
    assert_eq!(t.connect_messages(bare_pdo, isr, isr, 0).0, ke::STATUS_NOT_FOUND);
    // Line-based on a device with messages.
    let p = t.page();
    let u = p + icp::UNION;
    t.m().write_u32(p, ke::CONNECT_LINE_BASED).unwrap();
    t.m().write_u64(u + line_based::PHYSICAL_DEVICE_OBJECT, msi_pdo).unwrap();
    t.m().write_u64(u + line_based::INTERRUPT_OBJECT, p + 0x800).unwrap();
    t.m().write_u64(u + line_based::SERVICE_ROUTINE, isr).unwrap();
    assert_eq!(u32::try_from(t.call("IoConnectInterruptEx", &[p])).unwrap(), ke::STATUS_INVALID_DEVICE_REQUEST);
    // An unshared line taken twice.
    assert_eq!(t.connect_line(line_pdo, isr, 0, (0x55, 5, false, false), 1).0, ke::STATUS_SUCCESS);
    assert_eq!(t.connect_line(line_pdo, isr, 0, (0x55, 5, false, false), 1).0, ke::STATUS_INVALID_PARAMETER);
    assert_eq!(ke::live(t.nt()).interrupts.len(), 1);
    t.assert_clean();
}

#[test]
fn the_interrupt_spin_lock_raises_to_the_dirql_and_holds_off_the_isr_until_released() {
    let Some(mut t) = T::new() else { return };
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![level(0x57, 5, false)]);
    let log = t.page();
    let ack = t.ack(0x57);
    let isr = t.recorder(log, Rec { tail: Some((ack, 0)), ..Rec::default() });
    let (_, object) = t.connect_line(pdo, isr, 0, (0x57, 5, false, false), 1);
    assert_eq!(t.call("KeAcquireInterruptSpinLock", &[object]), 0);
    assert_eq!(t.nt().irql, 5);
    ke::set_line(t.nt(), 0x57, true);
    assert_eq!(t.call("KeGetCurrentIrql", &[]), 5);
    assert_eq!(t.count(log), 0, "masked while the lock is held");
    t.call("KeReleaseInterruptSpinLock", &[object, 0]);
    assert_eq!(t.count(log), 1, "delivered on release");
    assert_eq!(t.nt().irql, PASSIVE_LEVEL);
    t.assert_clean();
}

/// A connected line interrupt on vector 0x58, DIRQL 5, and its object.
fn connected(t: &mut T) -> u64 {
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![AssignedInterrupt::Line { vector: 0x58, irql: 5, trigger: Trigger::Edge, shared: false }]);
    let log = t.page();
    let isr = t.recorder(log, Rec { ret: 1, ..Rec::default() });
    let (status, object) = t.connect_line(pdo, isr, 0, (0x58, 5, true, false), 1);
    assert_eq!(status, 0);
    object
}

#[test]
fn releasing_the_interrupt_spin_lock_at_another_irql_is_caught() {
    let Some(mut t) = T::new() else { return };
    let object = connected(&mut t);
    t.call("KeAcquireInterruptSpinLock", &[object]);
    t.call("KfRaiseIrql", &[7]);
    t.call("KeReleaseInterruptSpinLock", &[object, 0]);
    assert_eq!(t.found("INTERRUPT_SPIN_LOCK_RELEASE_IRQL").map(|f| f.bugcheck), Some(0xC4));
}

#[test]
fn acquiring_the_interrupt_spin_lock_twice_or_above_its_irql_or_releasing_it_unheld_is_caught() {
    let Some(mut t) = T::new() else { return };
    let object = connected(&mut t);
    t.call("KeReleaseInterruptSpinLock", &[object, 0]);
    assert!(t.found("SPIN_LOCK_NOT_OWNED").is_some());
    t.call("KeAcquireInterruptSpinLock", &[object]);
    t.call("KeAcquireInterruptSpinLock", &[object]);
    assert_eq!(t.found("SPIN_LOCK_RECURSIVE_ACQUIRE").and_then(|f| f.parameter1), Some(0x1000));
    t.call("KeReleaseInterruptSpinLock", &[object, 0]);
    t.call("KfRaiseIrql", &[7]);
    t.call("KeAcquireInterruptSpinLock", &[object]);
    assert!(t.found("IRQL_TOO_HIGH").is_some_and(|f| f.detail.contains("KeAcquireInterruptSpinLock")));
    let bogus = t.page();
    t.call("KeAcquireInterruptSpinLock", &[bogus]);
    assert!(t.found("INTERRUPT_OBJECT_INVALID").is_some());
}

#[test]
fn an_isr_returning_at_another_irql_is_caught() {
    let Some(mut t) = T::new() else { return };
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![AssignedInterrupt::Line { vector: 0x59, irql: 5, trigger: Trigger::Edge, shared: false }]);
    let raise = t.stub("KfRaiseIrql");
    let log = t.page();
    let isr = t.recorder(log, Rec { tail: Some((raise, 12)), ..Rec::default() });
    let (_, object) = t.connect_line(pdo, isr, 0, (0x59, 5, true, false), 1);
    ke::signal(t.nt(), 0x59);
    t.run_pending().unwrap();
    assert_eq!(t.count(log), 1);
    let f = t.found("ISR_IRQL_CHANGED").expect("ISR_IRQL_CHANGED");
    assert_eq!((f.bugcheck, f.parameter1), (0xC8, Some((12 << 16) | (5 << 8) | 3)));
    assert_eq!(t.nt().irql, PASSIVE_LEVEL);
    assert!(t.nt().ke.interrupts.contains_key(&object));
}

#[test]
fn a_disconnected_interrupt_is_not_delivered_and_a_bad_disconnect_is_caught() {
    let Some(mut t) = T::new() else { return };
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![AssignedInterrupt::Line { vector: 0x5A, irql: 5, trigger: Trigger::Edge, shared: false }]);
    let log = t.page();
    let isr = t.recorder(log, Rec { ret: 1, ..Rec::default() });
    let (_, object) = t.connect_line(pdo, isr, 0, (0x5A, 5, true, false), 1);
    t.disconnect(ke::CONNECT_MESSAGE_BASED, object);
    assert!(t.found("INTERRUPT_DISCONNECT_INVALID").is_some(), "wrong version");
    assert_eq!(ke::live(t.nt()).interrupts.len(), 1, "so nothing was disconnected");
    t.disconnect(ke::CONNECT_FULLY_SPECIFIED_GROUP, object);
    assert!(ke::live(t.nt()).interrupts.is_empty());
    ke::signal(t.nt(), 0x5A);
    t.run_pending().unwrap();
    assert_eq!(t.count(log), 0);
    let before = t.nt().verifier.findings.len();
    t.disconnect(ke::CONNECT_FULLY_SPECIFIED_GROUP, object);
    assert_eq!(t.nt().verifier.findings.len(), before + 1, "twice");
    assert!(!t.m().is_mapped(object, 1), "the KINTERRUPT is freed");
}

// ------------------------------------------------------------------ unload

#[test]
fn unloading_code_with_a_dpc_queued_a_timer_set_or_an_interrupt_connected_is_caught() {
    let Some(mut t) = T::new() else { return };
    // A queued DPC (left by a cancelled timer), a set timer, a connected interrupt.
    let (dpc, _, dpc_routine) = t.dpc(Rec::default(), 0);
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 0]);
    t.call("KeSetTimerEx", &[timer, (-1_000_000_i64).cast_unsigned(), 0, dpc]);
    t.call("KeCancelTimer", &[timer]);
    let (timer_dpc, _, timer_routine) = t.dpc(Rec::default(), 0);
    let timer2 = t.page();
    t.call("KeInitializeTimerEx", &[timer2, 0]);
    t.call("KeSetTimerEx", &[timer2, (-1_000_000_i64).cast_unsigned(), 0, timer_dpc]);
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![level(0x5B, 5, false)]);
    let log = t.page();
    let isr = t.recorder(log, Rec::default());
    let (_, object) = t.connect_line(pdo, isr, 0, (0x5B, 5, false, false), 1);
    let live = ke::live(t.nt());
    assert_eq!(live.queued_dpcs, vec![(dpc, dpc_routine)]);
    assert_eq!(live.set_timers, vec![(timer2, timer_routine)]);
    assert_eq!(live.interrupts, vec![(object, isr)]);
    let (nt, m) = (&mut t.sys.nt, &t.sys.machine);
    let found: usize = [dpc_routine, timer_routine, isr].iter().map(|code| ke::check_unload(nt, m, *code, 4096)).sum();
    assert_eq!(found, 3);
    let rules: Vec<(&str, u32, Option<u64>)> = nt.verifier.findings.iter().map(|f| (f.rule, f.bugcheck, f.parameter1)).collect();
    assert_eq!(
        rules,
        vec![
            ("UNLOAD_DPC_QUEUED", 0xC7, Some(0x2)),
            ("UNLOAD_TIMER_SET", 0xC7, Some(0x2)),
            ("UNLOAD_INTERRUPT_CONNECTED", 0xCE, Some(isr)),
        ]
    );
}

#[test]
fn unloading_after_cancel_flush_and_disconnect_is_clean() {
    let Some(mut t) = T::new() else { return };
    let (dpc, log, routine) = t.dpc(Rec::default(), 0);
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 0]);
    t.call("KeSetTimerEx", &[timer, (-1_000_000_i64).cast_unsigned(), 10, dpc]);
    let pdo = t.page();
    ke::assign_interrupts(t.nt(), pdo, vec![level(0x5C, 5, false)]);
    let isr_log = t.page();
    let isr = t.recorder(isr_log, Rec::default());
    let (_, object) = t.connect_line(pdo, isr, 0, (0x5C, 5, false, false), 1);
    t.advance(2_000_000);
    t.disconnect(ke::CONNECT_FULLY_SPECIFIED_GROUP, object);
    t.call("KeCancelTimer", &[timer]);
    t.call("KeFlushQueuedDpcs", &[]);
    assert!(t.count(log) >= 2);
    assert!(ke::live(t.nt()).is_empty());
    let (nt, m) = (&mut t.sys.nt, &t.sys.machine);
    assert_eq!(ke::check_unload(nt, m, routine, 4096) + ke::check_unload(nt, m, isr, 4096), 0);
    t.assert_clean();
}

// ------------------------------------------------------------------ delays

/// `KeDelayExecutionThread(KernelMode, FALSE, &interval)`; its status.
fn delay(t: &mut T, interval: i64) -> u64 {
    let p = t.page();
    t.m().write_u64(p, interval.cast_unsigned()).unwrap();
    t.call("KeDelayExecutionThread", &[0, 0, p])
}

#[test]
fn a_delay_lets_its_relative_interval_pass_in_virtual_time() {
    let Some(mut t) = T::new() else { return };
    t.advance(12_345);
    assert_eq!(delay(&mut t, -10_000), 0, "STATUS_SUCCESS");
    assert_eq!(t.nt().time, 22_345, "1 ms later");
    assert_eq!(delay(&mut t, -1), 0);
    assert_eq!(t.nt().time, 22_346, "100 ns later");
    assert_eq!(delay(&mut t, 0), 0);
    assert_eq!(t.nt().time, 22_346, "a zero interval only yields");
    t.assert_clean();
}

#[test]
fn a_delay_runs_what_falls_due_during_it_at_its_due_time() {
    let Some(mut t) = T::new() else { return };
    t.nt().ke.cancel_race = false;
    let (dpc, log, _) = t.dpc(Rec::default(), 0);
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 0]);
    t.call("KeSetTimerEx", &[timer, (-50_000_i64).cast_unsigned(), 0, dpc]);
    delay(&mut t, -20_000);
    assert_eq!(t.count(log), 0, "due at 5 ms; 2 ms passed");
    delay(&mut t, -100_000);
    assert_eq!(t.count(log), 1, "expired during the delay and its DPC ran");
    assert_eq!(t.u64_at(at(log, LOG_R8)), 50_000, "at its due time, not at the end of the delay");
    assert_eq!(t.m().read_u32(timer + 4).unwrap(), 1, "signaled");
    assert_eq!(t.nt().time, 120_000);
    // A periodic 1 ms timer: every period that ends during a 10 ms delay.
    let (dpc, log, _) = t.dpc(Rec::default(), 0);
    t.call("KeSetTimerEx", &[timer, (-10_000_i64).cast_unsigned(), 1, dpc]);
    delay(&mut t, -100_000);
    assert_eq!(t.count(log), 10, "at 13, 14, ..., 22 ms");
    assert_eq!(t.u64_at(at(log, LOG_R8)), 220_000, "the last at the end of the delay");
    t.call("KeCancelTimer", &[timer]);
    t.assert_clean();
}

#[test]
fn an_absolute_delay_is_system_time_and_one_already_past_returns_at_once() {
    let Some(mut t) = T::new() else { return };
    t.advance(100_000);
    let at_30_ms = i64::try_from(ke::SYSTEM_TIME_AT_BOOT + 300_000).unwrap();
    assert_eq!(delay(&mut t, at_30_ms), 0);
    assert_eq!(t.nt().time, 300_000);
    assert_eq!(delay(&mut t, at_30_ms - 100_000), 0);
    assert_eq!(t.nt().time, 300_000, "20 ms is past: no time passes");
    t.assert_clean();
}

#[test]
fn a_delay_above_apc_level_is_caught() {
    let Some(mut t) = T::new() else { return };
    t.call("KfRaiseIrql", &[1]);
    delay(&mut t, -10_000);
    t.assert_clean();
    let before = t.nt().time;
    assert_eq!(before, 10_000, "at APC_LEVEL the 1 ms passed");
    // A timer due during the delay must not expire for a driver that waits
    // at DISPATCH_LEVEL: Windows bug checks there, the emulation lets no time pass.
    t.nt().ke.cancel_race = false;
    let (dpc, log, _) = t.dpc(Rec::default(), 0);
    let timer = t.page();
    t.call("KeInitializeTimerEx", &[timer, 0]);
    t.call("KeSetTimerEx", &[timer, (-5_000_i64).cast_unsigned(), 0, dpc]);
    t.call("KfRaiseIrql", &[u64::from(DISPATCH_LEVEL)]);
    delay(&mut t, -10_000);
    let f = t.found("IRQL_TOO_HIGH").expect("IRQL_TOO_HIGH");
    assert_eq!(f.bugcheck, 0xC4);
    assert!(f.detail.contains("KeDelayExecutionThread"), "{f}");
    assert_eq!(t.nt().time, before, "no virtual time passed for the wrong delay");
    assert_eq!(t.count(log), 0, "the timer did not fall due");
}

#[test]
fn a_delay_with_a_null_interval_faults() {
    let Some(mut t) = T::new() else { return };
    let result = t.try_call("KeDelayExecutionThread", &[0, 0, 0]);
    let Err(Stop::Bugcheck(report)) = result else { panic!("no bugcheck: {result:?}") };
    assert_eq!((report.code, report.irql), (0x50, PASSIVE_LEVEL), "{report}");
}

// ------------------------------------------------------------------ the image

#[test]
fn the_bus_image_finds_every_dispatcher_and_interrupt_ddi() {
    let image = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/windows/release/capdma_bus.sys");
    if !image.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI builds the images: {} missing", image.display());
        eprintln!("skipped: {} not built (cargo xtask windows)", image.display());
        return;
    }
    let bytes = std::fs::read(&image).unwrap();
    for name in ["KeInitializeDpc", "KeSetTimerEx", "IoConnectInterruptEx", "KeAcquireInterruptSpinLock"] {
        let needle = [name.as_bytes(), &[0]].concat();
        assert!(bytes.windows(needle.len()).any(|w| w == needle), "the image imports {name}");
    }
    let Some(mut sys) = system() else { return };
    let missing = match sys.load_driver(&image) {
        Err(Stop::MissingImports { missing, .. }) => missing,
        Ok(_) => Vec::new(),
        Err(other) => panic!("{other}"),
    };
    let ours: Vec<&str> = ke::DDIS.iter().map(|d| d.name).collect();
    let still: Vec<&str> = missing.iter().map(|m| m.symbol.as_str()).filter(|s| ours.contains(s)).collect();
    assert!(still.is_empty(), "unresolved: {still:?}");
}
