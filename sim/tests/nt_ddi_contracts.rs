//! DDI contracts checked and tripped one by one: a zero-byte pool
//! allocation, paged pool freed above
//! `APC_LEVEL`, `KeSetEvent(Wait = TRUE)` above `APC_LEVEL`, and a `memcpy`
//! with a wild count (a bugcheck on the first unmapped page, not a host
//! allocation of that size). Needs `/dev/kvm`.

mod support;

use capdma_sim::nt::pool::POOL_FLAG_PAGED;
use capdma_sim::nt::system::System;
use capdma_winvm::Stop;

fn system() -> Option<System> {
    support::system()
}

/// Calls the DDI `name` through its stub with `args`.
fn ddi(s: &mut System, name: &str, args: &[u64]) -> Result<u64, Stop> {
    let System { machine, nt, .. } = s;
    let stub = nt.resolve(machine, "ntoskrnl.exe", name).expect("implemented");
    machine.call(nt, stub, args)
}

#[test]
fn paged_pool_freed_at_dispatch_level_is_a_finding() {
    let Some(mut s) = system() else { return };
    let tag = u64::from(u32::from_le_bytes(*b"Test"));
    let block = ddi(&mut s, "ExAllocatePool2", &[POOL_FLAG_PAGED, 64, tag]).unwrap();
    assert_ne!(block, 0);
    s.nt.irql = 1;
    ddi(&mut s, "ExFreePoolWithTag", &[block, tag]).unwrap();
    assert!(s.nt.verifier.findings.is_empty(), "APC_LEVEL is allowed: {:?}", s.nt.verifier.findings);
    let block = ddi(&mut s, "ExAllocatePool2", &[POOL_FLAG_PAGED, 64, tag]).unwrap();
    s.nt.irql = 2;
    ddi(&mut s, "ExFreePoolWithTag", &[block, tag]).unwrap();
    let f = s.nt.verifier.findings.iter().find(|f| f.parameter1 == Some(0x11)).expect("0xC4/0x11");
    assert_eq!(f.bugcheck, 0xC4);
}

#[test]
fn set_event_with_wait_above_apc_level_is_a_finding() {
    let Some(mut s) = system() else { return };
    let event = s.nt.alloc_kernel(&mut s.machine, 4096).unwrap();
    ddi(&mut s, "KeInitializeEvent", &[event, 0, 0]).unwrap();
    s.nt.irql = 2;
    ddi(&mut s, "KeSetEvent", &[event, 0, 0]).unwrap();
    assert!(s.nt.verifier.findings.is_empty(), "Wait = FALSE is allowed at DISPATCH_LEVEL");
    ddi(&mut s, "KeSetEvent", &[event, 0, 1]).unwrap();
    assert!(s.nt.verifier.found("IRQL_TOO_HIGH"), "{:?}", s.nt.verifier.findings);
}

#[test]
fn memcpy_with_a_wild_count_bugchecks_in_the_guest_not_the_host() {
    let Some(mut s) = system() else { return };
    let buffer = s.nt.alloc_kernel(&mut s.machine, 8192).unwrap();
    let result = ddi(&mut s, "memcpy", &[buffer, buffer + 4096, u64::MAX / 2]);
    let Err(Stop::Bugcheck(report)) = result else { panic!("no bugcheck: {result:?}") };
    assert_eq!(report.code, 0x50, "{report}");
}

#[test]
fn memmove_copies_overlapping_ranges_correctly() {
    let Some(mut s) = system() else { return };
    let buffer = s.nt.alloc_kernel(&mut s.machine, 3 * 4096).unwrap();
    let data: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    s.machine.write(buffer, &data).unwrap();
    // Destination above the source, overlapping by more than a chunk.
    ddi(&mut s, "memmove", &[buffer + 100, buffer, 9000]).unwrap();
    let mut out = vec![0u8; 9000];
    s.machine.read(buffer + 100, &mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn a_zero_byte_pool_allocation_is_a_finding() {
    let Some(mut s) = system() else { return };
    let tag = u64::from(u32::from_le_bytes(*b"Test"));
    assert_eq!(ddi(&mut s, "ExAllocatePool2", &[0x40, 0, tag]).unwrap(), 0, "NULL");
    let f = s.nt.verifier.findings.iter().find(|f| f.rule == "POOL_ZERO_BYTES").expect("finding");
    assert_eq!((f.bugcheck, f.parameter1), (0xC4, Some(0)));
}

#[test]
fn a_bad_pointer_handed_to_a_ddi_at_dispatch_level_is_0xa() {
    let Some(mut s) = system() else { return };
    let result = ddi(&mut s, "memset", &[0x1000, 0, 16]);
    let Err(Stop::Bugcheck(report)) = result else { panic!("no bugcheck: {result:?}") };
    assert_eq!((report.code, report.irql), (0x50, 0), "{report}");
    let Some(mut s) = system() else { return };
    s.nt.irql = 2;
    let result = ddi(&mut s, "memset", &[0x1000, 0, 16]);
    let Err(Stop::Bugcheck(report)) = result else { panic!("no bugcheck: {result:?}") };
    assert_eq!((report.code, report.irql, report.parameters[2]), (0xA, 2, 1), "{report}");
}
