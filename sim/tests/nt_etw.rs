//! The emulated kernel's ETW DDIs called through their stubs, as an image
//! calls them: registration with a session's enable callback, provider
//! traits, TraceLogging events decoded into records, the session's level
//! and keyword filter, every error status, and each check tripped (IRQL,
//! paged data at raised IRQL, a provider left registered at unload).

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and their parameters")]
#![allow(clippy::cast_possible_truncation, reason = "test buffers are a few bytes long")]

mod support;

use capdma_sim::nt::etw::{self, EtwSession, Guid, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER};
use capdma_sim::nt::pool::POOL_FLAG_PAGED;
use capdma_sim::nt::system::System;
use capdma_sim::nt::{Nt, DISPATCH_LEVEL};
use capdma_winvm::{Machine, Stop};

/// A booted system, or `None` (skipped outside CI) without `/dev/kvm`.
fn system() -> Option<System> {
    support::system()
}

fn stub(s: &mut System, name: &str) -> u64 {
    s.nt.resolve(&mut s.machine, "ntoskrnl.exe", name).expect("implemented")
}

fn call(s: &mut System, va: u64, args: &[u64]) -> u32 {
    (s.machine.call(&mut s.nt, va, args).expect("returns") & 0xFFFF_FFFF) as u32
}

/// A page of kernel memory.
fn page(s: &mut System) -> u64 {
    s.nt.alloc_kernel(&mut s.machine, 4096).unwrap()
}

/// The enable callback: writes ControlCode, Level, MatchAnyKeyword and
/// MatchAllKeyword to the 32 bytes at CallbackContext.
fn record_enable(_: &mut Nt, m: &mut Machine, _: u64) -> Result<u64, Stop> {
    let a = m.args::<7>()?;
    for (i, v) in [a[1], a[2], a[3], a[4]].into_iter().enumerate() {
        m.write_u64(a[6] + 8 * i as u64, v)?;
    }
    Ok(0)
}

const GUID: &str = "5f28a29c-c847-512c-0ce0-1679b3de36f7";

/// Registers a provider with the recording callback; returns the handle
/// and the callback's context buffer.
fn register(s: &mut System) -> (u64, u64) {
    let reg = stub(s, "EtwRegister");
    let callback = s.nt.host_function(&mut s.machine, "EnableCallback", record_enable, 0, 15).unwrap();
    let mem = page(s);
    s.machine.write(mem, &Guid::parse(GUID).unwrap().0).unwrap();
    let context = mem + 0x100;
    assert_eq!(call(s, reg, &[mem, callback, context, mem + 0x80]), 0);
    (s.machine.read_u64(mem + 0x80).unwrap(), context)
}

fn provider_meta(name: &str) -> Vec<u8> {
    let mut v = vec![0, 0];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    let n = v.len() as u16;
    v[..2].copy_from_slice(&n.to_le_bytes());
    v
}

/// Event metadata: one `u32` field "Channel" (in-type 8) and one `str8`
/// field "Cause" (in-type 23).
fn event_meta(name: &str) -> Vec<u8> {
    let mut v = vec![0, 0, 0];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.extend_from_slice(b"Channel\0");
    v.push(8);
    v.extend_from_slice(b"Cause\0");
    v.push(23);
    let n = v.len() as u16;
    v[..2].copy_from_slice(&n.to_le_bytes());
    v
}

/// Writes an event (level, keyword) with TraceLogging's descriptors
/// (provider metadata, event metadata, then channel, the cause's length and
/// bytes) into the page at `mem`; returns `(descriptor, data descriptors, count)`.
fn build_event(s: &mut System, mem: u64, level: u8, keyword: u64, event: &[u8], data_at: Option<u64>) -> (u64, u64, u64) {
    let m = &mut s.machine;
    let desc = mem;
    m.write(desc, &[0; 16]).unwrap();
    m.write_u8(desc + 3, 11).unwrap();
    m.write_u8(desc + 4, level).unwrap();
    m.write_u64(desc + 8, keyword).unwrap();
    let prov = provider_meta("Capdma.Bus");
    let cause = b"watchdog";
    let blocks: Vec<(Vec<u8>, u32)> = vec![
        (prov, 2),
        (event.to_vec(), 1),
        (3u32.to_le_bytes().to_vec(), 0),
        ((cause.len() as u16).to_le_bytes().to_vec(), 0),
        (cause.to_vec(), 0),
    ];
    let table = mem + 0x100;
    let mut at = data_at.unwrap_or(mem + 0x400);
    for (i, (bytes, kind)) in blocks.iter().enumerate() {
        m.write(at, bytes).unwrap();
        let d = table + 16 * i as u64;
        m.write_u64(d, at).unwrap();
        m.write_u32(d + 8, bytes.len() as u32).unwrap();
        m.write_u32(d + 12, *kind).unwrap();
        at += 64;
    }
    (desc, table, blocks.len() as u64)
}

fn set_traits(s: &mut System, handle: u64) -> u32 {
    let set = stub(s, "EtwSetInformation");
    let mem = page(s);
    let traits = provider_meta("Capdma.Bus");
    s.machine.write(mem, &traits).unwrap();
    call(s, set, &[handle, 2, mem, traits.len() as u64])
}

#[test]
fn register_calls_the_enable_callback_of_a_session_and_events_are_decoded() {
    let Some(mut s) = system() else { return };
    s.nt.etw.session = Some(EtwSession { providers: vec![Guid::parse(GUID).unwrap()], level: 4, match_any: 0x8, match_all: 0 });
    let (handle, context) = register(&mut s);
    assert_ne!(handle, 0);
    let enabled: Vec<u64> = (0..4).map(|i| s.machine.read_u64(context + 8 * i).unwrap()).collect();
    assert_eq!(enabled, [1, 4, 0x8, 0], "ENABLE_PROVIDER with the session's level and keywords");
    assert_eq!(set_traits(&mut s, handle), 0);
    assert_eq!(s.nt.etw.registrations[&handle].name.as_deref(), Some("Capdma.Bus"));

    let write = stub(&mut s, "EtwWriteTransfer");
    let mem = page(&mut s);
    let (desc, table, count) = build_event(&mut s, mem, 3, 0x8, &event_meta("EngineReset"), None);
    s.nt.time = 12_345_678;
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    let [record] = &s.nt.etw.records[..] else { panic!("one record: {:?} {:?}", s.nt.etw.records, s.nt.etw.undecodable) };
    assert_eq!((record.provider.as_str(), record.event.as_str(), record.level, record.keyword), ("Capdma.Bus", "EngineReset", 3, 0x8));
    assert_eq!(record.provider_id.to_string(), GUID);
    assert_eq!(record.to_string(), "1.234567 Capdma.Bus/EngineReset [warning kw=0x8] Channel=3 Cause=\"watchdog\"");

    // Not asked for: verbose (above the session's level), another keyword.
    let (desc, table, count) = build_event(&mut s, mem, 5, 0x8, &event_meta("Verbose"), None);
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    let (desc, table, count) = build_event(&mut s, mem, 2, 0x20, &event_meta("OtherKeyword"), None);
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert_eq!(s.nt.etw.records.len(), 1, "dropped as ETW drops them");

    // Malformed metadata: refused by the decoder, kept with the reason.
    let mut broken = event_meta("Broken");
    broken[0] += 3;
    let (desc, table, count) = build_event(&mut s, mem, 3, 0x8, &broken, None);
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert_eq!(s.nt.etw.records.len(), 1);
    assert!(s.nt.etw.undecodable.last().is_some_and(|(p, why)| p == "Capdma.Bus" && why.contains("size field")), "{:?}", s.nt.etw.undecodable);
    assert!(s.nt.verifier.findings.is_empty(), "{:?}", s.nt.verifier.findings);
}

#[test]
fn a_session_started_later_enables_registered_providers() {
    let Some(mut s) = system() else { return };
    let (handle, context) = register(&mut s);
    assert_eq!(s.machine.read_u64(context).unwrap(), 0, "no session: no callback");
    let write = stub(&mut s, "EtwWriteTransfer");
    let mem = page(&mut s);
    assert_eq!(set_traits(&mut s, handle), 0);
    let (desc, table, count) = build_event(&mut s, mem, 4, 0x8, &event_meta("Before"), None);
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert!(s.nt.etw.records.is_empty(), "no session: nothing recorded");
    etw::start_session(&mut s.nt, &mut s.machine, &EtwSession::everything()).unwrap();
    assert_eq!(s.machine.read_u64(context + 8).unwrap(), 5, "enabled at the session's level");
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert_eq!(s.nt.etw.records.len(), 1);
}

#[test]
fn bad_handles_classes_and_parameters_get_their_statuses() {
    let Some(mut s) = system() else { return };
    s.nt.etw.session = Some(EtwSession::everything());
    let (reg, set, write, unreg) =
        (stub(&mut s, "EtwRegister"), stub(&mut s, "EtwSetInformation"), stub(&mut s, "EtwWriteTransfer"), stub(&mut s, "EtwUnregister"));
    let mem = page(&mut s);
    assert_eq!(call(&mut s, reg, &[0, 0, 0, mem]), STATUS_INVALID_PARAMETER, "no ProviderId");
    assert_eq!(call(&mut s, reg, &[mem, 0, 0, 0]), STATUS_INVALID_PARAMETER, "no RegHandle");
    let (handle, _) = register(&mut s);
    assert_eq!(call(&mut s, set, &[handle ^ 0x10, 2, mem, 4]), STATUS_INVALID_HANDLE);
    assert_eq!(call(&mut s, set, &[handle, 9, mem, 4]), STATUS_INVALID_DEVICE_REQUEST);
    assert_eq!(call(&mut s, set, &[handle, 2, 0, 4]), STATUS_INVALID_PARAMETER, "NULL buffer with a length");
    s.machine.write(mem, &[9, 0, b'X', 0]).unwrap();
    assert_eq!(call(&mut s, set, &[handle, 2, mem, 4]), STATUS_INVALID_PARAMETER, "traits whose size field lies");
    let page2 = page(&mut s);
    let (desc, table, count) = build_event(&mut s, page2, 4, 1, &event_meta("E"), None);
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, 129, table]), STATUS_INVALID_PARAMETER, "more than 128 descriptors");
    assert_eq!(call(&mut s, write, &[handle, 0, 0, 0, count, table]), STATUS_INVALID_PARAMETER, "no EVENT_DESCRIPTOR");
    assert_eq!(call(&mut s, unreg, &[handle]), 0);
    assert_eq!(call(&mut s, unreg, &[handle]), STATUS_INVALID_HANDLE, "unregistered twice");
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), STATUS_INVALID_HANDLE, "written after unregistering");
    assert!(s.nt.etw.records.is_empty());
}

#[test]
fn register_at_dispatch_level_is_irql_too_high() {
    let Some(mut s) = system() else { return };
    s.nt.irql = DISPATCH_LEVEL;
    let _ = register(&mut s);
    assert!(s.nt.verifier.found("IRQL_TOO_HIGH"), "{:?}", s.nt.verifier.findings);
}

#[test]
fn event_data_in_paged_pool_at_dispatch_level_is_a_finding() {
    let Some(mut s) = system() else { return };
    // The test (the host) writes the event into paged pool at
    // DISPATCH_LEVEL: keep it resident (no IRQL-checking trim), so that
    // what is checked is EtwWriteTransfer's own finding.
    s.nt.pool.pageable_always_resident = true;
    s.nt.etw.session = Some(EtwSession::everything());
    let (handle, _) = register(&mut s);
    assert_eq!(set_traits(&mut s, handle), 0);
    let alloc = stub(&mut s, "ExAllocatePool2");
    let paged = s.machine.call(&mut s.nt, alloc, &[POOL_FLAG_PAGED, 1024, u64::from(u32::from_le_bytes(*b"Test"))]).unwrap();
    assert_ne!(paged, 0);
    let write = stub(&mut s, "EtwWriteTransfer");
    let mem = page(&mut s);
    // Resident (kernel) memory at DISPATCH_LEVEL: fine.
    let (desc, table, count) = build_event(&mut s, mem, 4, 1, &event_meta("Resident"), None);
    s.nt.irql = DISPATCH_LEVEL;
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert!(!s.nt.verifier.found("ETW_PAGED_DATA"));
    // The same event with its data in paged pool.
    let (desc, table, count) = build_event(&mut s, mem, 4, 1, &event_meta("Paged"), Some(paged));
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert!(s.nt.verifier.found("ETW_PAGED_DATA"), "{:?}", s.nt.verifier.findings);
    assert_eq!(s.nt.verifier.findings[0].bugcheck, 0xD1);
    assert_eq!(s.nt.etw.records.len(), 2);
}

#[test]
fn a_provider_still_registered_at_unload_is_a_finding() {
    let Some(mut s) = system() else { return };
    let (handle, _) = register(&mut s);
    // Registered from the host here: the image is "?".
    assert_eq!(etw::check_unload(&mut s.nt, &s.machine, "?"), 1);
    assert!(s.nt.verifier.found("ETW_PROVIDER_NOT_UNREGISTERED"));
    assert_eq!(s.nt.verifier.findings[0].bugcheck, 0xCE);
    let unreg = stub(&mut s, "EtwUnregister");
    assert_eq!(call(&mut s, unreg, &[handle]), 0);
    s.nt.verifier.findings.clear();
    assert_eq!(etw::check_unload(&mut s.nt, &s.machine, "?"), 0);
    assert!(s.nt.verifier.findings.is_empty());
}
