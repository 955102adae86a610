//! One test per Driver Verifier rule: the test-only image
//! `capdma_probe.sys` breaks the rule on request (one `Probe*` export per
//! rule, `capdma_probe::PROBES` says which and what Windows answers), and
//! the emulated kernel must report it — a finding with the bug check code
//! (and parameter 1) Windows stops with, or, for a mistake Windows answers
//! with a bug check at once, the call stopped with that bug check. A clean
//! run of the same image, and the one correct probe (`ProbeAllocate`, also
//! with each of its allocations failed in turn), must report nothing:
//! without both sides a clean run of the product proves nothing.
//!
//! Each test: boot a system, load the probe image (every import
//! implemented), `AddDevice` on the emulated PCI PDO through the PnP
//! manager (started with BAR0 and a line-based interrupt when the probe
//! needs an interrupt or a DMA adapter), build the arguments the catalog
//! lists, call the export by name, then remove and unload as the catalog's
//! `Detected` says — the mistake must not show earlier than that.
//!
//! Needs `/dev/kvm` and the image (`cargo xtask windows`); says which is
//! missing and passes vacuously only outside CI.

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and constants, as in sim/src/nt")]

mod support;

use std::path::{Path, PathBuf};

use capdma_probe::{Argument, Detected, Probe, Rule, PROBES};
use capdma_sim::nt::io::irp::{make_irp, IrpOrigin};
use capdma_sim::nt::layout::device_object;
use capdma_sim::nt::layout::dma::{device_description, DEVICE_DESCRIPTION_VERSION2, PCI_BUS, WIDTH_32_BITS};
use capdma_sim::nt::layout::irp::status;
use capdma_sim::nt::pnp::{Pnp, PciIdentity, StartResources};
use capdma_sim::nt::system::{Driver, System};
use capdma_sim::nt::verifier::Finding;
use capdma_sim::nt::{hal, ke};
use capdma_winvm::Stop;

/// Where the board's BAR0 is, and its length.
const BAR0: u64 = 0xE000_0000;
const BAR0_LEN: u32 = 0x1_0000;
/// The line-based interrupt the PnP manager assigns at start: raw IRQ,
/// translated IRQL (the DIRQL) and vector.
const LINE_IRQ: u32 = 11;
const LINE_IRQL: u8 = 5;
const LINE_VECTOR: u32 = 0x51;
/// `DEVICE_DESCRIPTION.MaximumLength` of the harness's adapter: 64 KiB.
const ADAPTER_MAXIMUM_LENGTH: u32 = 64 * 1024;

/// The probe image, or `None` (reason printed) outside CI.
fn image() -> Option<PathBuf> {
    support::image("capdma_probe")
}

/// A booted system with the probe image loaded and the PnP manager's PCI
/// PDO, before `AddDevice`.
struct Rig {
    sys: System,
    pnp: Pnp,
    driver: Driver,
}

impl Rig {
    /// Boots, loads the image (the loader refuses it, listing them, when an
    /// import has no implementation) and runs its `DriverEntry`.
    fn load(path: &Path) -> Self {
        let mut sys = System::boot().expect("boot");
        let driver = sys.load_driver(path).unwrap_or_else(|stop| panic!("load_driver:\n{stop}"));
        assert_eq!(driver.status, 0, "DriverEntry");
        let pnp = Pnp::new(&mut sys, PciIdentity::default()).expect("the PnP manager");
        Self { sys, pnp, driver }
    }

    /// [`Rig::load`], then `AddDevice` on the PCI PDO, which must succeed.
    fn added(path: &Path) -> Self {
        let mut rig = Self::load(path);
        assert_eq!(rig.add_device(), status::SUCCESS, "AddDevice");
        assert!(rig.pnp.fdo.is_some(), "AddDevice attached an FDO");
        rig
    }

    fn add_device(&mut self) -> u32 {
        let driver = self.driver.clone();
        self.pnp.add_device(&mut self.sys, &driver).unwrap_or_else(|stop| panic!("AddDevice:\n{stop}"))
    }

    fn fdo(&self) -> u64 {
        self.pnp.fdo.expect("the FDO")
    }

    /// `IRP_MN_START_DEVICE` with BAR0 and a line-based interrupt.
    fn start(&mut self) {
        let resources = StartResources::bar0_line(BAR0, BAR0_LEN, LINE_IRQ, LINE_IRQL, LINE_VECTOR);
        let st = self.pnp.start(&mut self.sys, &resources).unwrap_or_else(|stop| panic!("start:\n{stop}"));
        assert_eq!(st, status::SUCCESS, "IRP_MN_START_DEVICE");
    }

    /// The address of the image's export `name`.
    fn export(&self, name: &str) -> u64 {
        let image = self.sys.machine.images().iter().find(|i| i.name == "capdma_probe").expect("the probe image is loaded");
        *image.exports.get(name).unwrap_or_else(|| panic!("capdma_probe.sys does not export {name}"))
    }

    /// A new IRP with `locations` stack locations, as
    /// `IoAllocateIrp(locations, FALSE)` makes it: never sent, every field
    /// zero but the stack bookkeeping.
    fn irp(&mut self, locations: u8) -> u64 {
        let System { machine, nt, .. } = &mut self.sys;
        make_irp(nt, machine, locations, 0, status::SUCCESS, IrpOrigin::Host, "the probe harness".into()).expect("an IRP")
    }

    /// `IoGetDmaAdapter` on the PCI PDO, as a function driver calls it
    /// (version-2 description: a 64-bit scatter/gather bus master on PCI).
    fn dma_adapter(&mut self) -> u64 {
        let pdo = self.pnp.pci_pdo;
        let System { machine: m, nt, .. } = &mut self.sys;
        let stub = nt.resolve(m, "ntoskrnl.exe", "IoGetDmaAdapter").expect("IoGetDmaAdapter is implemented");
        let description = nt.alloc_kernel(m, 4096).expect("kernel memory");
        m.write_u32(description + device_description::VERSION, DEVICE_DESCRIPTION_VERSION2).unwrap();
        m.write_u8(description + device_description::MASTER, 1).unwrap();
        m.write_u8(description + device_description::SCATTER_GATHER, 1).unwrap();
        m.write_u8(description + device_description::DMA64_BIT_ADDRESSES, 1).unwrap();
        m.write_u32(description + device_description::INTERFACE_TYPE, PCI_BUS).unwrap();
        m.write_u32(description + device_description::DMA_WIDTH, WIDTH_32_BITS).unwrap();
        m.write_u32(description + device_description::MAXIMUM_LENGTH, ADAPTER_MAXIMUM_LENGTH).unwrap();
        let map_registers = description + 2048;
        let adapter = m.call(nt, stub, &[pdo, description, map_registers]).unwrap_or_else(|stop| panic!("IoGetDmaAdapter:\n{stop}"));
        assert_ne!(adapter, 0, "IoGetDmaAdapter gave an adapter");
        adapter
    }

    /// The arguments the catalog lists for `probe`, in order.
    fn arguments(&mut self, probe: &Probe) -> Vec<u64> {
        let fdo = self.fdo();
        let stack_size = self.sys.machine.read_u8(fdo + device_object::STACK_SIZE).unwrap();
        probe
            .arguments
            .iter()
            .map(|argument| match argument {
                Argument::Fdo => fdo,
                Argument::Irp => self.irp(stack_size),
                Argument::IrpWithOneLocation => self.irp(1),
                Argument::DmaAdapter => self.dma_adapter(),
                Argument::InterruptVector => u64::from(LINE_VECTOR),
                Argument::InterruptIrql => u64::from(LINE_IRQL),
            })
            .collect()
    }

    /// Calls the export at `PASSIVE_LEVEL` (every probe runs there).
    fn call(&mut self, export: &str, args: &[u64]) -> Result<u64, Stop> {
        let va = self.export(export);
        let System { machine, nt, .. } = &mut self.sys;
        assert_eq!(nt.irql, 0, "the harness calls probes at PASSIVE_LEVEL");
        machine.call(nt, va, args)
    }

    /// Query-remove and remove of the FDO stack.
    fn remove(&mut self) -> Result<u32, Stop> {
        self.pnp.remove(&mut self.sys)
    }

    /// `DriverUnload`, the manager's own devices deleted, and the
    /// end-of-run checks (leaks are findings). Returns the leaks.
    fn unload(&mut self) -> Result<Vec<String>, Stop> {
        self.pnp.unload(&mut self.sys)?;
        self.pnp.delete_own_devices(&mut self.sys)?;
        Ok(self.pnp.end_of_run(&mut self.sys))
    }

    fn findings(&self) -> &[Finding] {
        &self.sys.nt.verifier.findings
    }
}

fn listed(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "    (none)".into();
    }
    findings.iter().map(|f| format!("    {f}")).collect::<Vec<_>>().join("\n")
}

fn assert_clean(rig: &Rig, when: &str) {
    assert!(rig.findings().is_empty(), "{when}: findings already:\n{}", listed(rig.findings()));
}

/// Whether `outcome` (what the call that shows the mistake returned) and the
/// findings show the catalog's bug check for `probe`.
fn caught(probe: &Probe, rig: &Rig, outcome: &Result<u64, Stop>) {
    let export = probe.export;
    match probe.bug_check {
        Some(bug) => {
            let parameter_ok = |p1: Option<u64>| bug.parameter1.is_none_or(|want| p1 == Some(want));
            let stopped = matches!(outcome, Err(Stop::Bugcheck(report))
                if report.code == bug.code && parameter_ok(Some(report.parameters[0])));
            let found = rig.findings().iter().any(|f| f.bugcheck == bug.code && parameter_ok(f.parameter1));
            let outcome_text = match outcome {
                Ok(rax) => format!("returned {rax:#x}"),
                Err(stop) => format!("stopped:\n{stop}"),
            };
            let p1 = bug.parameter1.map_or_else(String::new, |p| format!(", parameter 1 = {p:#x}"));
            let how = match (stopped, found) {
                (true, _) => "the call stopped with it",
                (false, true) => "a finding",
                (false, false) => "nothing",
            };
            eprintln!("{export}: bug check {:#X}{p1}: {how}\n  findings:\n{}", bug.code, listed(rig.findings()));
            assert!(
                stopped || found,
                "{export} ({}): the emulated kernel did not report bug check {:#X} {}{p1}.\n  the call {outcome_text}\n  findings:\n{}",
                probe.mistake,
                bug.code,
                bug.name,
                listed(rig.findings()),
            );
        }
        None => {
            // Windows hangs (no bug check): the emulated kernel reports the
            // wait that can never end and stops the run instead of hanging.
            assert!(
                matches!(outcome, Err(Stop::Host(_))) && !rig.findings().is_empty(),
                "{export} ({}): expected the run stopped as a hang, with the finding that names it; got {outcome:?}\n  findings:\n{}",
                probe.mistake,
                listed(rig.findings()),
            );
        }
    }
}

/// Whether the probe needs its device started (an interrupt or a DMA
/// adapter from the PCI PDO).
fn needs_start(probe: &Probe) -> bool {
    probe.arguments.iter().any(|a| matches!(a, Argument::DmaAdapter | Argument::InterruptVector | Argument::InterruptIrql))
}

/// The test of one catalog entry that breaks a rule.
fn breaks(export: &str) {
    let probe = capdma_probe::catalog::probe(export).unwrap_or_else(|| panic!("{export} is not in the catalog"));
    assert_ne!(probe.detected, Detected::Never, "{export} breaks no rule");
    let Some(path) = image() else { return };
    let mut rig = Rig::added(&path);
    if needs_start(probe) {
        rig.start();
    }
    let args = rig.arguments(probe);
    assert_clean(&rig, "before the probe");
    let outcome = rig.call(export, &args);
    match probe.detected {
        Detected::InCall => caught(probe, &rig, &outcome),
        Detected::AtRemove => {
            outcome.unwrap_or_else(|stop| panic!("{export} itself:\n{stop}"));
            assert_clean(&rig, &format!("{export}: after the call, before the removal"));
            let removal = rig.remove().map(u64::from);
            caught(probe, &rig, &removal);
        }
        Detected::AtUnload => {
            outcome.unwrap_or_else(|stop| panic!("{export} itself:\n{stop}"));
            let removal = rig.remove().unwrap_or_else(|stop| panic!("{export}: removal:\n{stop}"));
            assert_eq!(removal, status::SUCCESS, "removal");
            assert_clean(&rig, &format!("{export}: after the call and the removal, before unload"));
            let unload = rig.unload().map(|_| 0);
            caught(probe, &rig, &unload);
        }
        Detected::Never => unreachable!(),
    }
}

/// Removal, unload and the end-of-run checks after a correct run: nothing
/// found, nothing leaked (device objects, pool, IRPs, remove locks, DPCs,
/// timers, interrupts, DMA adapters and common buffers).
fn teardown_clean(rig: &mut Rig, when: &str) {
    if rig.pnp.fdo.is_some() {
        let st = rig.remove().unwrap_or_else(|stop| panic!("{when}: removal:\n{stop}"));
        assert_eq!(st, status::SUCCESS, "{when}: removal");
    }
    let leaks = rig.unload().unwrap_or_else(|stop| panic!("{when}: unload:\n{stop}"));
    assert!(leaks.is_empty(), "{when}: leaks {leaks:#?}");
    assert!(ke::live(&rig.sys.nt).is_empty(), "{when}: {:?}", ke::live(&rig.sys.nt));
    let hal_leaks = hal::leaks(&rig.sys.nt);
    assert!(hal_leaks.is_empty(), "{when}: {hal_leaks:#?}");
    assert_clean(rig, when);
}

/// Which allocation the low-resources mode fails.
#[derive(Clone, Copy, Debug)]
enum Allocation {
    /// `ExAllocatePool2`.
    Pool,
    /// `IoGetDmaAdapter`.
    Adapter,
    /// `AllocateCommonBuffer`.
    CommonBuffer,
}

impl Allocation {
    /// Calls made so far.
    fn made(self, sys: &System) -> u64 {
        match self {
            Self::Pool => sys.nt.pool.allocations,
            Self::Adapter => sys.nt.hal.dma.adapters_requested,
            Self::CommonBuffer => sys.nt.hal.dma.common_buffers_requested,
        }
    }

    /// Fails the call with this 0-based index.
    fn fail_at(self, sys: &mut System, index: u64) {
        match self {
            Self::Pool => sys.nt.pool.fail_at = Some(index),
            Self::Adapter => sys.nt.hal.dma.fail_adapter_at = Some(index),
            Self::CommonBuffer => sys.nt.hal.dma.fail_common_buffer_at = Some(index),
        }
    }

    /// Calls failed on purpose so far.
    fn failed(self, sys: &System) -> u64 {
        match self {
            Self::Pool => sys.nt.pool.failed,
            Self::Adapter | Self::CommonBuffer => sys.nt.hal.dma.failed,
        }
    }
}

/// `ProbeAllocate`, the one correct export: nothing reported, with every
/// allocation it makes succeeding, and again with each one failed in turn
/// (each failure handled: `STATUS_INSUFFICIENT_RESOURCES`, nothing held).
fn never(export: &str) {
    let probe = capdma_probe::catalog::probe(export).unwrap_or_else(|| panic!("{export} is not in the catalog"));
    assert_eq!((probe.detected, probe.rule, probe.bug_check), (Detected::Never, Rule::LowResources, None));
    let Some(path) = image() else { return };
    // Everything succeeds: count the allocations of each kind it makes.
    let mut rig = Rig::added(&path);
    rig.start();
    let args = rig.arguments(probe);
    let kinds = [Allocation::Pool, Allocation::Adapter, Allocation::CommonBuffer];
    let before: Vec<u64> = kinds.iter().map(|k| k.made(&rig.sys)).collect();
    let st = rig.call(export, &args).unwrap_or_else(|stop| panic!("{export}:\n{stop}"));
    assert_eq!(st & 0xFFFF_FFFF, u64::from(status::SUCCESS), "{export} with every allocation granted");
    let made: Vec<u64> = kinds.iter().zip(&before).map(|(k, b)| k.made(&rig.sys) - b).collect();
    assert!(made.iter().all(|n| *n >= 1), "{export} makes each kind of allocation: {made:?} of {kinds:?}");
    assert_clean(&rig, export);
    teardown_clean(&mut rig, export);
    // Each allocation failed in turn.
    for (kind, count) in kinds.into_iter().zip(made) {
        for nth in 0..count {
            let when = format!("{export} with its {kind:?} allocation #{nth} failed");
            let mut rig = Rig::added(&path);
            rig.start();
            let args = rig.arguments(probe);
            let index = kind.made(&rig.sys) + nth;
            kind.fail_at(&mut rig.sys, index);
            let failed_before = kind.failed(&rig.sys);
            let st = rig.call(export, &args).unwrap_or_else(|stop| panic!("{when}:\n{stop}"));
            assert_eq!(kind.failed(&rig.sys), failed_before + 1, "{when}: the failure was injected");
            assert_eq!(st & 0xFFFF_FFFF, u64::from(status::INSUFFICIENT_RESOURCES), "{when}: the status");
            assert_clean(&rig, &when);
            teardown_clean(&mut rig, &when);
        }
    }
    // The FDO's own IoCreateDevice failed: AddDevice fails, nothing is left.
    let mut rig = Rig::load(&path);
    rig.sys.nt.io.fail_create_device_at = Some(rig.sys.nt.io.devices_made);
    let st = rig.add_device();
    assert_eq!(st, status::INSUFFICIENT_RESOURCES, "AddDevice with IoCreateDevice failed");
    assert!(rig.pnp.fdo.is_none(), "no FDO attached");
    teardown_clean(&mut rig, "AddDevice with IoCreateDevice failed");
}

/// One `#[test]` per catalog entry, named as its export; `BREAKS` and
/// `NEVER` list them for the test that the lists are the whole catalog.
macro_rules! probe_tests {
    (breaks: $($breaks:ident),* $(,)?; never: $($never:ident),* $(,)?) => {
        $(
            #[test]
            #[allow(non_snake_case, reason = "the test is named as the probe's export")]
            fn $breaks() {
                breaks(stringify!($breaks));
            }
        )*
        $(
            #[test]
            #[allow(non_snake_case, reason = "the test is named as the probe's export")]
            fn $never() {
                never(stringify!($never));
            }
        )*
        const BREAKS: &[&str] = &[$(stringify!($breaks),)*];
        const NEVER: &[&str] = &[$(stringify!($never),)*];
    };
}

probe_tests! {
    breaks:
        ProbePagedPoolAtDispatch,
        ProbeTouchPagedPoolAtDispatch,
        ProbeWaitAtDispatch,
        ProbeRaiseIrqlToLower,
        ProbeLowerIrqlToHigher,
        ProbeFreePoolWrongTag,
        ProbeDoubleFreePool,
        ProbeWriteFreedPool,
        ProbeLeakPool,
        ProbeCompleteIrpTwice,
        ProbeTouchIrpAfterCompletion,
        ProbePendingWithoutMark,
        ProbeMarkPendingWithoutPending,
        ProbeCallDriverNoStackLocation,
        ProbePdoChangesUnhandledIrp,
        ProbeRemoveLockHeldAtRemove,
        ProbeReleaseRemoveLockNotAcquired,
        ProbePutAdapterWithCommonBuffer,
        ProbePutAdapterTwice,
        ProbeFreeCommonBufferAfterPut,
        ProbeLeaveInterruptConnected,
        ProbeLeaveTimerSet,
        ProbeDpcNotFlushedAtUnload,
        ProbeKeepDeviceAtRemove,
        ProbeDereferenceTooOften;
    never:
        ProbeAllocate,
}

#[test]
fn every_catalog_entry_has_its_test() {
    let mut tested: Vec<&str> = BREAKS.iter().chain(NEVER).copied().collect();
    let mut catalog: Vec<&str> = PROBES.iter().map(|p| p.export).collect();
    tested.sort_unstable();
    catalog.sort_unstable();
    assert_eq!(tested, catalog);
    for probe in PROBES {
        assert_eq!(NEVER.contains(&probe.export), probe.detected == Detected::Never, "{}", probe.export);
    }
}

/// The image's clean life: DriverEntry, AddDevice, removal, unload, no
/// probe called — nothing reported, nothing leaked.
#[test]
fn a_clean_run_of_the_probe_image_records_nothing() {
    let Some(path) = image() else { return };
    let mut rig = Rig::added(&path);
    let fdo = rig.fdo();
    assert_eq!(rig.sys.nt.io.remove_locks.len(), 1, "AddDevice initialized the FDO's remove lock");
    assert_clean(&rig, "after AddDevice");
    teardown_clean(&mut rig, "the clean run");
    assert!(rig.sys.nt.io.devices[&fdo].deleted, "the FDO deleted itself at IRP_MN_REMOVE_DEVICE");
    assert!(rig.sys.nt.trace.iter().any(|line| line.text.contains("unload")), "DriverUnload ran");
}

/// The same, started (BAR0 and a line interrupt) before the removal.
#[test]
fn a_clean_started_run_of_the_probe_image_records_nothing() {
    let Some(path) = image() else { return };
    let mut rig = Rig::added(&path);
    rig.start();
    assert_clean(&rig, "after IRP_MN_START_DEVICE");
    teardown_clean(&mut rig, "the clean started run");
}

