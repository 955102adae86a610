//! The emulated kernel's ETW DDIs called through their stubs, as an image
//! calls them: registration with a session's enable callback, provider
//! traits, TraceLogging events decoded into records, the session's level
//! and keyword filter, every error status, and each check tripped (IRQL,
//! paged data at raised IRQL, a provider left registered at unload); and
//! the TraceLogging decoder on hand-built metadata (every field type, and
//! malformed blocks refused with the reason), which needs no VM.

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and their parameters")]
#![allow(clippy::cast_possible_truncation, reason = "test buffers are a few bytes long")]

mod support;

use capdma_sim::nt::etw::{self, decode_event, in_type, out_type, EtwSession, Guid, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER};
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

/// Provider metadata as TraceLogging lays it out: size, name, no traits.
fn provider_meta(name: &str) -> Vec<u8> {
    let mut v = vec![0, 0];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    let n = v.len() as u16;
    v[..2].copy_from_slice(&n.to_le_bytes());
    v
}

/// Event metadata: size, a one-byte tag of 0, the name, then each
/// field's name and type bytes.
fn event_meta(name: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut v = vec![0, 0, 0];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    for (field, types) in fields {
        v.extend_from_slice(field.as_bytes());
        v.push(0);
        v.extend_from_slice(types);
    }
    let n = v.len() as u16;
    v[..2].copy_from_slice(&n.to_le_bytes());
    v
}

/// Event metadata: one `u32` field "Channel" and one `str8` field "Cause".
fn channel_cause_meta(name: &str) -> Vec<u8> {
    event_meta(name, &[("Channel", &[in_type::U32]), ("Cause", &[in_type::STR8])])
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
    let (desc, table, count) = build_event(&mut s, mem, 3, 0x8, &channel_cause_meta("EngineReset"), None);
    s.nt.time = 12_345_678;
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    let [record] = &s.nt.etw.records[..] else { panic!("one record: {:?} {:?}", s.nt.etw.records, s.nt.etw.undecodable) };
    assert_eq!((record.provider.as_str(), record.event.as_str(), record.level, record.keyword), ("Capdma.Bus", "EngineReset", 3, 0x8));
    assert_eq!(record.provider_id.to_string(), GUID);
    assert_eq!(record.to_string(), "1.234567 Capdma.Bus/EngineReset [warning kw=0x8] Channel=3 Cause=\"watchdog\"");

    // Not asked for: verbose (above the session's level), another keyword.
    let (desc, table, count) = build_event(&mut s, mem, 5, 0x8, &channel_cause_meta("Verbose"), None);
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    let (desc, table, count) = build_event(&mut s, mem, 2, 0x20, &channel_cause_meta("OtherKeyword"), None);
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert_eq!(s.nt.etw.records.len(), 1, "dropped as ETW drops them");

    // Malformed metadata: refused by the decoder, kept with the reason.
    let mut broken = channel_cause_meta("Broken");
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
    let (desc, table, count) = build_event(&mut s, mem, 4, 0x8, &channel_cause_meta("Before"), None);
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
    let (desc, table, count) = build_event(&mut s, page2, 4, 1, &channel_cause_meta("E"), None);
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
    let (desc, table, count) = build_event(&mut s, mem, 4, 1, &channel_cause_meta("Resident"), None);
    s.nt.irql = DISPATCH_LEVEL;
    assert_eq!(call(&mut s, write, &[handle, desc, 0, 0, count, table]), 0);
    assert!(!s.nt.verifier.found("ETW_PAGED_DATA"));
    // The same event with its data in paged pool.
    let (desc, table, count) = build_event(&mut s, mem, 4, 1, &channel_cause_meta("Paged"), Some(paged));
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

#[test]
fn a_hand_built_event_decodes_with_every_field() {
    let prov = provider_meta("Capdma.Test");
    let meta = event_meta(
        "DeviceStart",
        &[
            ("Mode", &[in_type::STR8 | in_type::CHAIN, 35]), // str8, out-type UTF-8
            ("Channels", &[in_type::U32]),
            ("Status", &[in_type::HEX32 | in_type::CHAIN, out_type::NTSTATUS]),
            ("Delta", &[in_type::I16]),
            ("Good", &[in_type::U8 | in_type::CHAIN, out_type::BOOLEAN]),
            ("Lanes", &[in_type::U16 | in_type::VARIABLE_COUNT]),
            ("Id", &[in_type::GUID]),
            ("Name", &[in_type::CSTR8]),
        ],
    );
    let mut data = Vec::new();
    data.extend_from_slice(&13u16.to_le_bytes());
    data.extend_from_slice(b"common-buffer");
    data.extend_from_slice(&4u32.to_le_bytes());
    data.extend_from_slice(&0xC000_0010u32.to_le_bytes());
    data.extend_from_slice(&(-2i16).to_le_bytes());
    data.push(1);
    data.extend_from_slice(&2u16.to_le_bytes());
    data.extend_from_slice(&7u16.to_le_bytes());
    data.extend_from_slice(&9u16.to_le_bytes());
    let guid = Guid::parse("5f28a29c-c847-512c-0ce0-1679b3de36f7").unwrap();
    data.extend_from_slice(&guid.0);
    data.extend_from_slice(b"bus\0");
    let e = decode_event(&prov, &meta, &data).expect("decodes");
    assert_eq!((e.provider.as_str(), e.event.as_str()), ("Capdma.Test", "DeviceStart"));
    let text: Vec<String> = e.fields.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "Mode=\"common-buffer\"",
            "Channels=4",
            "Status=0xc0000010",
            "Delta=-2",
            "Good=true",
            "Lanes=[7, 9]",
            "Id={5f28a29c-c847-512c-0ce0-1679b3de36f7}",
            "Name=\"bus\"",
        ]
    );
    assert_eq!(guid.to_string(), "5f28a29c-c847-512c-0ce0-1679b3de36f7");
}

#[test]
fn structures_and_constant_counts_and_tags_decode() {
    let prov = provider_meta("P");
    // A struct of two fields, a constant-count array of 3 u8, and a
    // field with a two-byte field tag after its out-type.
    let meta = event_meta(
        "E",
        &[
            ("Pos", &[in_type::STRUCT | in_type::CHAIN, 2]),
            ("X", &[in_type::I32]),
            ("Y", &[in_type::I32]),
            ("Rgb", &[in_type::U8 | in_type::CONSTANT_COUNT, 3, 0]),
            ("Tagged", &[in_type::U32 | in_type::CHAIN, 0x80 | out_type::HEX, 0x81, 0x00]),
        ],
    );
    let mut data = Vec::new();
    data.extend_from_slice(&1i32.to_le_bytes());
    data.extend_from_slice(&(-1i32).to_le_bytes());
    data.extend_from_slice(&[10, 20, 30]);
    data.extend_from_slice(&255u32.to_le_bytes());
    let e = decode_event(&prov, &meta, &data).expect("decodes");
    let text: Vec<String> = e.fields.iter().map(ToString::to_string).collect();
    assert_eq!(text, ["Pos={X=1, Y=-1}", "Rgb=[10, 20, 30]", "Tagged=0xff"]);
}

#[test]
fn malformed_metadata_and_data_are_refused_with_the_reason() {
    let prov = provider_meta("P");
    let good = event_meta("E", &[("A", &[in_type::U32])]);
    let four = 7u32.to_le_bytes();
    assert!(decode_event(&prov, &good, &four).is_ok());
    let refused = |p: &[u8], m: &[u8], d: &[u8]| decode_event(p, m, d).expect_err("refused").0;
    // The size field disagrees with the block.
    let mut wrong_size = good.clone();
    wrong_size[0] += 1;
    assert!(refused(&prov, &wrong_size, &four).contains("size field"), "{}", refused(&prov, &wrong_size, &four));
    // The field name runs off the end (no NUL).
    let mut cut = good[..good.len() - 2].to_vec();
    let n = cut.len() as u16;
    cut[..2].copy_from_slice(&n.to_le_bytes());
    assert!(refused(&prov, &cut, &four).contains("NUL"));
    // Data too short, data left over.
    assert!(refused(&prov, &good, &four[..3]).contains("needed"));
    assert!(refused(&prov, &good, &[0; 5]).contains("left over"));
    // An in-type that is no TraceLogging type.
    let unknown = event_meta("E", &[("A", &[31])]);
    assert!(refused(&prov, &unknown, &four).contains("in-type 31"));
    // A tag of five continuation bytes.
    let mut long_tag = vec![0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, b'E', 0];
    let n = long_tag.len() as u16;
    long_tag[..2].copy_from_slice(&n.to_le_bytes());
    assert!(refused(&prov, &long_tag, &[]).contains("tag"));
    // A counted string longer than the data, a structure with no fields.
    let s = event_meta("E", &[("S", &[in_type::STR8])]);
    assert!(refused(&prov, &s, &[200, 0, b'x']).contains("needed"));
    let empty_struct = event_meta("E", &[("S", &[in_type::STRUCT | in_type::CHAIN, 0])]);
    assert!(refused(&prov, &empty_struct, &[]).contains("no fields"));
    // Provider metadata: empty, unterminated, a trait running past the end.
    assert!(refused(&[2, 0], &good, &four).contains("NUL"));
    assert!(refused(&provider_meta(""), &good, &four).contains("empty provider name"));
    let mut bad_trait = provider_meta("P");
    bad_trait.extend_from_slice(&[19, 0, 1]);
    let n = bad_trait.len() as u16;
    bad_trait[..2].copy_from_slice(&n.to_le_bytes());
    assert!(refused(&bad_trait, &good, &four).contains("needed"));
    // Garbage of every short length never panics.
    for len in 0..40 {
        let junk: Vec<u8> = (0u8..len).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let _ = decode_event(&junk, &junk, &junk);
        let _ = decode_event(&prov, &junk, &junk);
    }
}
