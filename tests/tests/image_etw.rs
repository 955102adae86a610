//! The real images' ETW tracing, run in the emulated kernel: `DriverEntry`
//! registers the TraceLogging provider (its name-derived GUID, its traits)
//! and writes `DriverLoad`, decoded with its fields; `DriverUnload` writes
//! `DriverUnload` and unregisters; a failing `DriverEntry` writes its
//! `Failure` and unregisters; a session asking for errors only gets none
//! of the informational events.

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and ETW terms")]

mod support;

use capdma_sim::nt::etw::{self, EtwSession, Guid, Value};
use capdma_sim::nt::layout::etw::{event_data_descriptor, event_descriptor};
use capdma_sim::nt::Nt;
use capdma_winvm::{Machine, Protection, Stop};

/// `Capdma.Bus`'s GUID, derived from its name (docs/tracing.md).
const BUS_GUID: &str = "5f28a29c-c847-512c-0ce0-1679b3de36f7";
/// `Capdma.AVStream`'s GUID, derived from its name (docs/tracing.md).
const AVSTREAM_GUID: &str = "64957db3-5f33-54d1-22b1-1473e7afc2b6";
/// `STATUS_INSUFFICIENT_RESOURCES`.
const STATUS_INSUFFICIENT_RESOURCES: u32 = 0xC000_009A;
/// A stand-in for `KsInitializeDriver` (ks.sys is not emulated): returns
/// the status in its context, touching nothing.
#[allow(clippy::unnecessary_wraps, reason = "the HostFn signature")]
fn ks_initialize_driver(_: &mut Nt, _: &mut Machine, status: u64) -> Result<u64, Stop> {
    Ok(status)
}

/// Loads image `name` with a trace `session` running (imports the emulated
/// kernel lacks fail the call; `KsInitializeDriver` returns `ks_status`)
/// and runs its `DriverEntry`. Returns the machine, the kernel, the driver
/// object and `DriverEntry`'s status.
fn load(name: &str, session: EtwSession, ks_status: u32) -> Option<(Machine, Nt, u64, u32)> {
    let path = support::image(name)?;
    let mut m = support::machine()?;
    let mut k = Nt::new();
    k.etw.session = Some(session);
    let entry = m
        .load_image(&path, &mut |m, module, symbol| {
            if symbol == "KsInitializeDriver" {
                return k.host_function(m, symbol, ks_initialize_driver, u64::from(ks_status), 0).ok();
            }
            k.resolve(m, module, symbol).or_else(|| k.host_function(m, symbol, support::refuse, 0, 15).ok())
        })
        .expect("loaded")
        .entry;
    let driver_object = m.alloc_own_pages(1, Protection::READ_WRITE).unwrap();
    let registry_path = driver_object + 0x800;
    let status = m.call(&mut k, entry, &[driver_object, registry_path]).expect("DriverEntry ran");
    Some((m, k, driver_object, (status & 0xFFFF_FFFF) as u32))
}

/// The package version in `<dir>/Cargo.toml` (what `DriverLoad` reports).
fn version_of(dir: &str) -> String {
    let manifest = std::fs::read_to_string(support::workspace().join(dir).join("Cargo.toml")).unwrap();
    let line = manifest.lines().find(|l| l.starts_with("version = ")).expect("a version");
    line.trim_start_matches("version = ").trim_matches('"').to_owned()
}

/// `DRIVER_OBJECT.DriverUnload`.
const DRIVER_UNLOAD: u64 = 0x68;

#[test]
fn bus_driver_entry_registers_its_provider_and_writes_the_load_event() {
    let Some((mut m, mut k, driver_object, status)) = load("capdma_bus", EtwSession::everything(), 0) else { return };
    assert_eq!(status, 0, "STATUS_SUCCESS");
    // The provider: registered by the image, with the documented GUID and its traits' name.
    let registrations: Vec<_> = k.etw.registrations.values().collect();
    let [registration] = &registrations[..] else { panic!("one provider: {registrations:?}") };
    assert_eq!(registration.id, Guid::parse(BUS_GUID).unwrap());
    assert_eq!((registration.image.as_str(), registration.name.as_deref()), ("capdma_bus", Some("Capdma.Bus")));
    assert!(registration.live && registration.descriptor_types);
    // The load event, decoded from the image's TraceLogging metadata.
    assert!(k.etw.undecodable.is_empty(), "{:?}", k.etw.undecodable);
    let loads: Vec<_> = k.etw.of("Capdma.Bus").filter(|r| r.event == "DriverLoad").collect();
    let [load] = &loads[..] else { panic!("one DriverLoad: {:?}", k.etw.records) };
    println!("{load}");
    assert_eq!((load.level, load.keyword, load.provider_id.to_string()), (4, 0x1, BUS_GUID.to_owned()));
    assert_eq!(load.field("Version"), Some(&Value::Str(version_of("bus-driver"))));
    assert_eq!(load.fields.len(), 1);

    // DriverUnload writes its event and unregisters: nothing left at unload.
    let unload = m.read_u64(driver_object + DRIVER_UNLOAD).unwrap();
    m.call(&mut k, unload, &[driver_object]).expect("DriverUnload ran");
    assert_eq!(k.etw.records.last().map(|r| r.event.as_str()), Some("DriverUnload"));
    assert!(k.etw.live_of("capdma_bus").next().is_none());
    assert_eq!(etw::check_unload(&mut k, &m, "capdma_bus"), 0);
    assert!(k.verifier.findings.is_empty(), "{:?}", k.verifier.findings);
}

#[test]
fn a_session_for_errors_only_gets_no_informational_event() {
    let session = EtwSession { level: 2, ..EtwSession::everything() };
    let Some((_m, k, _, status)) = load("capdma_bus", session, 0) else { return };
    assert_eq!(status, 0);
    assert_eq!(k.etw.registrations.len(), 1, "registered all the same");
    assert!(k.etw.records.is_empty(), "{:?}", k.etw.records);
}

#[test]
fn avstream_driver_entry_traces_its_load_and_its_failure() {
    let Some((mut m, mut k, driver_object, status)) = load("capdma_avstream", EtwSession::everything(), 0) else { return };
    assert_eq!(status, 0);
    let events: Vec<_> = k.etw.of("Capdma.AVStream").collect();
    let [loaded] = &events[..] else { panic!("one event: {:?} {:?}", k.etw.records, k.etw.undecodable) };
    assert_eq!((loaded.event.as_str(), loaded.provider_id.to_string()), ("DriverLoad", AVSTREAM_GUID.to_owned()));
    assert_eq!(loaded.field("Version"), Some(&Value::Str(version_of("avstream-driver"))));
    // The driver's unload routine is in front of KS's (which the stand-in
    // left NULL): it unregisters.
    let unload = m.read_u64(driver_object + DRIVER_UNLOAD).unwrap();
    assert!(m.images()[0].contains(unload));
    m.call(&mut k, unload, &[driver_object]).expect("unload ran");
    assert!(k.etw.live_of("capdma_avstream").next().is_none());

    // KsInitializeDriver fails: the failure is traced with its status and
    // the provider unregistered before DriverEntry returns it.
    let Some((_m, k, _, status)) = load("capdma_avstream", EtwSession::everything(), STATUS_INSUFFICIENT_RESOURCES) else { return };
    assert_eq!(status, STATUS_INSUFFICIENT_RESOURCES);
    let events: Vec<_> = k.etw.records.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, ["Failure"]);
    let failure = &k.etw.records[0];
    assert_eq!(failure.level, 2);
    assert_eq!(failure.field("Operation"), Some(&Value::Str("KsInitializeDriver".into())));
    assert_eq!(failure.field("Status"), Some(&Value::NtStatus(STATUS_INSUFFICIENT_RESOURCES)));
    assert!(k.etw.live_of("capdma_avstream").next().is_none(), "unregistered on failure");
}
#[test]
fn the_etw_layouts_match_the_headers() {
    let Some(types) = support::wdk_sys_types() else { return };
    let types: String = types.chars().filter(|c| !c.is_whitespace()).collect();
    let checks = [
        ("_EVENT_DESCRIPTOR", "", event_descriptor::SIZE),
        ("_EVENT_DESCRIPTOR", "Version", event_descriptor::VERSION),
        ("_EVENT_DESCRIPTOR", "Channel", event_descriptor::CHANNEL),
        ("_EVENT_DESCRIPTOR", "Level", event_descriptor::LEVEL),
        ("_EVENT_DESCRIPTOR", "Opcode", event_descriptor::OPCODE),
        ("_EVENT_DESCRIPTOR", "Task", event_descriptor::TASK),
        ("_EVENT_DESCRIPTOR", "Keyword", event_descriptor::KEYWORD),
        ("_EVENT_DESCRIPTOR", "Id", event_descriptor::ID),
        ("_EVENT_DATA_DESCRIPTOR", "", event_data_descriptor::SIZE),
        ("_EVENT_DATA_DESCRIPTOR", "Ptr", event_data_descriptor::PTR),
        ("_EVENT_DATA_DESCRIPTOR", "Size", event_data_descriptor::SIZE_FIELD),
        ("_EVENT_DATA_DESCRIPTOR", "Reserved", event_data_descriptor::RESERVED),
    ];
    for (structure, field, ours) in checks {
        assert_eq!(support::asserted(&types, structure, field), Some(ours), "{structure}::{field}");
    }
}
