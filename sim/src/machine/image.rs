//! The bus driver as the real `capdma_bus.sys` (`--drivers bus-image`):
//! one emulated Windows kernel per machine ([`crate::nt::system::System`],
//! whose guest RAM *is* the machine's [`PhysicalMemory`]) with the image
//! loaded once, and per card an emulated PCI bus stack ([`Pnp`]) the
//! image's `AddDevice` builds its FDO on, its BAR0 routed to the card's
//! board as MMIO and the boards' interrupt lines on one shared, line-based
//! vector that the kernel's dispatcher samples.
//!
//! What the machine does with it, in Windows' order:
//! * start: `IRP_MN_START_DEVICE` with BAR0 and the line interrupt (the
//!   registry values under the PCI PDO's `Device Parameters`); the image
//!   enumerates one child PDO per channel, each child is asked for
//!   `GUID_CAPDMA_BUS_INTERFACE` and its table becomes a host table of
//!   thunks ([`ImageInterface`]) that the machine's child PDO in the
//!   [`crate::pnp::DeviceTree`] hands to the AVStream core; the board is put
//!   behind the DMA-remapping domain of the adapter the image got, and the
//!   KS model maps frames through that domain ([`DomainMapper`]);
//! * run: the image's ISR and DPCs run when the dispatcher delivers them
//!   (after every event, with the kernel's time kept at the machine's
//!   virtual time: its watchdog timer fires in virtual time too);
//! * trace: an ETW session (every provider, level and keyword) runs from
//!   before `DriverEntry`, so the image's `TraceLogging` events are recorded,
//!   decoded, with their virtual time ([`super::Machine::image_trace`]);
//! * teardown: the pins closed, the AVStream stacks removed (their
//!   references dropped), the image's children and bus removed
//!   (`IRP_MN_QUERY_REMOVE_DEVICE`/`IRP_MN_REMOVE_DEVICE`, children first),
//!   `DriverUnload`, then the kernel's end-of-run checks.
//!
//! A bugcheck in the image (or a host failure of the VM) stops the kernel:
//! it is recorded as a violation with its report, and the machine carries
//! on without the image (every thunk answers `STATUS_DEVICE_REMOVED`).
use std::path::{Path, PathBuf};

use capdma_bus::config::{
    DmaModeOverride, REG_CQ_ENTRIES, REG_DESCRIPTOR_RING_ENTRIES, REG_DMA_MODE, REG_MAX_MAPPING_BYTE_COUNT, REG_SLOT_COUNT,
};
use capdma_interface::guid::GUID_CAPDMA_BUS_INTERFACE;
use capdma_interface::status::STATUS_SUCCESS;
use capdma_interface::table::{CapdmaBusInterface, CAPDMA_BUS_INTERFACE_SIZE_V2, CAPDMA_BUS_INTERFACE_VERSION};
use capdma_winvm::{kvm_available, Stop};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::{ConfigError, MachineConfig};
use crate::board::Board;
use crate::image::active;
use crate::image::interface::ImageInterface;
use crate::ks::DomainMapper;
use crate::memory::PhysicalMemory;
use crate::nt::etw::{self, EtwSession};
use crate::nt::io::registry::RegValue;
use crate::nt::pnp::{PciIdentity, Pnp, StartResources};
use crate::nt::system::System;
use crate::nt::{hal, ke, Nt};
use crate::violations::{ViolationKind, Violations};

/// Guest-physical address of card 0's BAR0; card `n`'s is [`BAR0_STRIDE`] × `n` above.
pub const BAR0_BASE: u64 = 0xE000_0000;
/// Distance between the cards' BAR0s, bytes.
pub const BAR0_STRIDE: u64 = 0x10_0000;
/// Bytes of BAR0 (`capdma_interface::regs::BAR0_BYTES`).
const BAR0_LEN: u32 = capdma_interface::regs::BAR0_BYTES;
/// The shared interrupt line: its IRQ, DIRQL and translated vector.
const LINE_IRQ: u32 = 11;
const LINE_IRQL: u8 = 5;
const LINE_VECTOR: u32 = 0x51;

/// Where the bus image is built by `cargo xtask windows`, relative to the
/// workspace root.
pub const DEFAULT_IMAGE: &str = "target/windows/release/capdma_bus.sys";

/// The default bus image: [`DEFAULT_IMAGE`] under the workspace this
/// simulator was built in.
#[must_use]
pub fn default_image_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DEFAULT_IMAGE)
}

/// Where the AVStream image is built by `cargo xtask windows`, relative to
/// the workspace root.
pub const DEFAULT_AVSTREAM_IMAGE: &str = "target/windows/release/capdma_avstream.sys";

/// The default AVStream image: [`DEFAULT_AVSTREAM_IMAGE`] under the
/// workspace this simulator was built in.
#[must_use]
pub fn default_avstream_image_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DEFAULT_AVSTREAM_IMAGE)
}

/// What the emulated kernel did during a `--drivers bus-image` run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ImageReport {
    /// The bus image run.
    pub path: String,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// DDI calls the image made (imports and host routines).
    pub ddi_calls: u64,
    /// Driver Verifier checks the emulated kernel made.
    pub verifier_checks: u64,
    /// Driver Verifier findings (each also a violation of the run).
    pub findings: u64,
    /// Bugchecks (0 or 1: the kernel stops at the first).
    pub bugchecks: u64,
    /// CR8 accesses the image made that trapped and were emulated.
    pub cr8_traps: u64,
    /// Preemption kicks that landed in the image's code (`--preempt-us`).
    pub preemptions: u64,
    /// VM exits (stub calls, MMIO, traps, returns to the host).
    pub vm_exits: u64,
    /// VM exits per frame delivered (all channels), the whole life
    /// (boot, start, teardown and unload included).
    pub vm_exits_per_frame: f64,
    /// VM exits while streaming ([`super::Machine::run`]: captures,
    /// interrupts, DPCs, completions, `Process` calls, the watchdog) per
    /// frame delivered.
    pub vm_exits_per_frame_streaming: f64,
    /// MMIO accesses to the boards' registers.
    pub mmio: u64,
    /// The image's ISR calls.
    pub isr_calls: u64,
    /// The image's DPC runs.
    pub dpc_runs: u64,
    /// The AVStream image run (`--drivers images`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avstream_path: Option<String>,
    /// Its SHA-256, lower-case hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avstream_sha256: Option<String>,
    /// What the emulated `ks.sys` did (`--drivers images`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ks: Option<crate::nt::ks::KsCounters>,
}

/// One card's bus stack in the emulated kernel.
pub(super) struct ImageCard {
    pub(super) pnp: Pnp,
    /// One per child PDO, in channel order; each holds the reference the
    /// query that made it took, until the card is removed. Boxed: each
    /// one's address is its host table's `Context`.
    #[allow(clippy::vec_box, reason = "the host tables hold each interface's address")]
    pub(super) interfaces: Vec<Box<ImageInterface>>,
    /// The KS mapping source of the adapter the image got at start.
    pub(super) mapper: Option<DomainMapper>,
    /// The image's bus stack was removed.
    pub(super) removed: bool,
}

/// The emulated kernel of a machine and the bus image in it.
pub(super) struct ImageWorld {
    pub(super) sys: System,
    pub(super) path: PathBuf,
    pub(super) sha256: String,
    pub(super) cards: Vec<ImageCard>,
    /// The kernel stopped (a bugcheck or host failure, recorded).
    pub(super) stopped: bool,
    pub(super) bugchecks: u64,
    /// Findings already copied into the machine's violations.
    pub(super) findings_seen: usize,
    pub(super) unloaded: bool,
    /// VM exits during [`super::Machine::run`] so far.
    pub(super) streaming_exits: u64,
    /// The AVStream image (`--drivers images`): its path, SHA-256 and driver object.
    pub(super) avstream: Option<(PathBuf, String, crate::nt::system::Driver)>,
}

fn image_error(message: String) -> ConfigError {
    ConfigError(message)
}

impl ImageWorld {
    /// Boots the kernel over `memory`, routes each board's BAR0 and the
    /// shared line, loads the image at `path` (`DriverEntry`), and builds
    /// each card's bus stack (`AddDevice` on an emulated PCI PDO, with the
    /// configured filters below and above the FDO and the registry values).
    ///
    /// # Errors
    /// A [`ConfigError`] when the image is not built (naming `cargo xtask
    /// windows`), KVM is not usable, or the kernel stops while loading.
    pub(super) fn boot(config: &MachineConfig, path: &Path, memory: &PhysicalMemory, boards: &[Board]) -> Result<Self, ConfigError> {
        let sha256 = image_digest(path, "bus")?;
        let avstream_digest = match config.drivers.avstream_image() {
            Some(avstream) => Some((avstream.clone(), image_digest(avstream, "AVStream")?)),
            None => None,
        };
        kvm_available().map_err(|e| image_error(format!("--drivers {} needs KVM: {e}", config.drivers.name())))?;
        let stop = |what: &str, e: Stop| image_error(format!("bus image: {what}: {e}"));
        let mut sys = System::boot_on(memory.clone()).map_err(|e| stop("boot", e))?;
        for (n, board) in boards.iter().enumerate() {
            // MmMapIoSpaceEx maps it; until then the board sees no access.
            board.set_bar0_mapped(false);
            hal::attach_bar(&mut sys.nt, bar0(n), u64::from(BAR0_LEN), Box::new(board.clone())).map_err(image_error)?;
        }
        let line: Vec<Board> = boards.to_vec();
        ke::attach_source(&mut sys.nt, LINE_VECTOR, Box::new(move || line.iter().any(Board::interrupt_pending)));
        if let Some(mean_interval_us) = config.preemption_us {
            let preemption = capdma_winvm::Preemption { mean_interval_us, seed: config.seed };
            sys.machine.set_preemption(Some(preemption)).map_err(|e| stop("preemption timer", e))?;
        }
        if let Some(limit) = config.image_map_registers() {
            sys.nt.hal.dma.map_register_limit = limit;
        }
        // A trace session for every provider, level and keyword, started
        // before DriverEntry so the image's provider is enabled as it
        // registers: its events are the bus's own account of the run
        // (resets, refused values, removal) that `--trace` prints and the
        // fault matrix judges by.
        etw::start_session(&mut sys.nt, &mut sys.machine, &EtwSession::everything()).map_err(|e| stop("ETW session", e))?;
        let driver = sys.load_driver(path).map_err(|e| stop("load", e))?;
        if driver.status != 0 {
            return Err(image_error(format!("bus image: DriverEntry returned {:#010X}", driver.status)));
        }
        let avstream = match avstream_digest {
            Some((avstream_path, digest)) => {
                let loaded = sys.load_driver(&avstream_path).map_err(|e| stop("AVStream image load", e))?;
                if loaded.status != 0 {
                    return Err(image_error(format!("AVStream image: DriverEntry returned {:#010X}", loaded.status)));
                }
                let canonical = std::fs::canonicalize(&avstream_path).unwrap_or(avstream_path);
                Some((canonical, digest, loaded))
            }
            None => None,
        };
        let mut cards = Vec::new();
        for n in 0..boards.len() {
            let identity = PciIdentity { slot: u32::try_from(n).unwrap_or(0), ..PciIdentity::default() };
            let mut pnp = Pnp::new(&mut sys, identity).map_err(|e| stop("PCI PDO", e))?;
            // CAPDMA\Channel matches capdma_avstream.inf: its AddDevice runs
            // on each child, between the configured lower and upper filters.
            // (Without the AVStream image the children's stacks are the
            // machine's: its tree has their filters.)
            if let Some((_, _, child_driver)) = &avstream {
                pnp.child_driver = Some(child_driver.clone());
                pnp.child_lower_filters = filter_count(&config.stack.below_avstream);
                pnp.child_upper_filters = filter_count(&config.stack.above_avstream);
            }
            let pci_pdo = pnp.pci_pdo;
            for _ in &config.stack.below_bus {
                pnp.add_filter(&mut sys, pci_pdo).map_err(|e| stop("lower filter", e))?;
            }
            set_registry(&mut sys.nt, pnp.pci_pdo, config);
            let st = pnp.add_device(&mut sys, &driver).map_err(|e| stop("AddDevice", e))?;
            if st != 0 {
                return Err(image_error(format!("bus image: AddDevice returned {st:#010X}")));
            }
            for _ in &config.stack.above_bus {
                pnp.add_filter(&mut sys, pci_pdo).map_err(|e| stop("upper filter", e))?;
            }
            cards.push(ImageCard { pnp, interfaces: Vec::new(), mapper: None, removed: false });
        }
        Ok(Self {
            sys,
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            sha256,
            cards,
            stopped: false,
            bugchecks: 0,
            findings_seen: 0,
            unloaded: false,
            streaming_exits: 0,
            avstream,
        })
    }

    /// Records a stop of the kernel (once) as a violation.
    pub(super) fn stopped_by(&mut self, violations: &Violations, what: &str, stop: &Stop) {
        if matches!(stop, Stop::Bugcheck(_)) {
            self.bugchecks += 1;
        }
        if !self.stopped {
            violations.push(ViolationKind::Api, format!("bus image stopped during {what}: {stop}"));
        }
        self.stopped = true;
    }

    /// Copies the Driver Verifier findings not yet seen into `violations`.
    pub(super) fn collect_findings(&mut self, violations: &Violations) {
        for f in self.sys.nt.verifier.findings.iter().skip(self.findings_seen) {
            violations.push(ViolationKind::Api, format!("Driver Verifier: {f}"));
        }
        self.findings_seen = self.sys.nt.verifier.findings.len();
    }

    /// `IRP_MN_START_DEVICE` of card `card` with BAR0 and the shared line;
    /// then its children's `GUID_CAPDMA_BUS_INTERFACE` tables, and the
    /// board behind the adapter's domain. Returns the start status and the
    /// host tables, one per child in channel order.
    pub(super) fn start_card(&mut self, card: usize, board: &Board) -> Result<(u32, Vec<CapdmaBusInterface>), Stop> {
        let resources = StartResources::bar0_line(bar0(card), BAR0_LEN, LINE_IRQ, LINE_IRQL, LINE_VECTOR);
        let c = &mut self.cards[card];
        let st = c.pnp.start(&mut self.sys, &resources)?;
        if st != 0 {
            return Ok((st, Vec::new()));
        }
        // The adapter the image took at start: its domain is what the board sees.
        let pdo = c.pnp.pci_pdo;
        let adapter = self.sys.nt.hal.dma.adapters.values().find(|a| a.pdo == pdo && !a.put).map(|a| (a.va, a.domain.clone(), a.map_registers));
        if let Some((va, domain, map_registers)) = adapter {
            board.set_dma_domain(Some(domain.clone()));
            let memory = self.sys.memory.clone();
            let _raw = DomainMapper::register(va, domain, map_registers, &memory);
            c.mapper = DomainMapper::find(va).map(|(_, m)| m);
        }
        let pdos: Vec<u64> = c.pnp.children.iter().map(|child| child.pdo).collect();
        let mut tables = Vec::new();
        c.interfaces.clear();
        if self.avstream.is_some() {
            // The AVStream image asked for the interface itself, at its Start.
            return Ok((0, Vec::new()));
        }
        for pdo in pdos {
            let (st, table) = c.pnp.query_interface(
                &mut self.sys,
                pdo,
                &GUID_CAPDMA_BUS_INTERFACE,
                CAPDMA_BUS_INTERFACE_SIZE_V2,
                CAPDMA_BUS_INTERFACE_VERSION,
            )?;
            if st != 0 {
                return Ok((st, Vec::new()));
            }
            // Stored first, then the table (whose Context points at it) is
            // taken from the stored box: the pointer outlives no move.
            c.interfaces.push(ImageInterface::new(&self.sys.machine, table, translate_adapter)?);
            let stored = c.interfaces.last().ok_or_else(|| Stop::Host("interface list".into()))?;
            tables.push(stored.host_table());
        }
        Ok((0, tables))
    }

    /// Drops the references the machine's queries took (the interface
    /// tables' own), with the kernel active.
    pub(super) fn drop_references(&mut self, card: usize) {
        let tables: Vec<CapdmaBusInterface> = self.cards[card].interfaces.iter().map(|i| i.host_table()).collect();
        let System { machine, nt, .. } = &mut self.sys;
        active::enter(machine, nt, || {
            for t in &tables {
                if let Some(deref) = t.header.interface_dereference {
                    // SAFETY: the table's own context; the ImageInterface
                    // behind it lives in `self.cards[card].interfaces`.
                    unsafe { deref(t.header.context) };
                }
            }
        });
    }

    /// Orderly removal of card `card`'s bus stack in the kernel (children
    /// first), the adapter's KS mapper retired, the board back on physical
    /// addresses. Returns the removal's status (a veto is not a removal).
    pub(super) fn remove_card(&mut self, card: usize, board: &Board, violations: &Violations) -> Result<u32, Stop> {
        let c = &mut self.cards[card];
        if c.removed {
            return Ok(0);
        }
        let st = c.pnp.remove(&mut self.sys)?;
        if st != 0 {
            return Ok(st);
        }
        c.removed = true;
        if let Some(mapper) = c.mapper.take() {
            for leak in mapper.retire() {
                violations.push(ViolationKind::Leak, leak);
            }
        }
        board.set_dma_domain(None);
        Ok(st)
    }

    /// `DriverUnload`, the manager's own devices deleted, then the kernel's
    /// end-of-run checks: I/O manager and pool leaks (as findings), the
    /// dispatcher's live objects, the HAL's leaks; each into `violations`.
    pub(super) fn unload(&mut self, violations: &Violations) -> Result<(), Stop> {
        if self.unloaded {
            return Ok(());
        }
        self.unloaded = true;
        if let Some((_, _, avstream)) = self.avstream.clone() {
            // The AVStream image goes first: its devices went with the children.
            let mut pnp = Pnp { driver: Some(avstream), ..Pnp::default() };
            pnp.unload(&mut self.sys)?;
        }
        if let Some(first) = self.cards.first_mut() {
            first.pnp.unload(&mut self.sys)?;
        }
        for c in &mut self.cards {
            c.pnp.delete_own_devices(&mut self.sys)?;
        }
        // end_of_run records each leak as a finding (collected below).
        if let Some(first) = self.cards.first_mut() {
            let _ = first.pnp.end_of_run(&mut self.sys);
        }
        let live = ke::live(&self.sys.nt);
        if !live.is_empty() {
            violations.push(ViolationKind::Leak, format!("bus image: the dispatcher still holds {live:?} after unload"));
        }
        for leak in hal::leaks(&self.sys.nt) {
            violations.push(ViolationKind::Leak, format!("bus image: HAL: {leak}"));
        }
        Ok(())
    }

    /// The account of the kernel's side.
    pub(super) fn report(&self, frames_delivered: u64) -> ImageReport {
        let counts = self.sys.machine.counts();
        let nt = &self.sys.nt;
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let per = |exits: u64| if frames_delivered == 0 { 0.0 } else { exits as f64 / frames_delivered as f64 };
        ImageReport {
            path: self.path.display().to_string(),
            sha256: self.sha256.clone(),
            ddi_calls: nt.ddi_calls,
            verifier_checks: nt.verifier.checks,
            findings: nt.verifier.findings.len() as u64,
            bugchecks: self.bugchecks,
            cr8_traps: counts.cr8_traps,
            preemptions: counts.preemptions,
            vm_exits: counts.exits,
            vm_exits_per_frame: per(counts.exits),
            vm_exits_per_frame_streaming: per(self.streaming_exits),
            mmio: counts.mmio,
            isr_calls: nt.ke.stats.isr_calls,
            dpc_runs: nt.ke.stats.dpc_runs,
            avstream_path: self.avstream.as_ref().map(|(p, _, _)| p.display().to_string()),
            avstream_sha256: self.avstream.as_ref().map(|(_, d, _)| d.clone()),
            ks: self.avstream.as_ref().map(|_| nt.ks.stats),
        }
    }
}

/// The SHA-256 (lower-case hex) of the image at `path`.
///
/// # Errors
/// A [`ConfigError`] naming `cargo xtask windows` when it cannot be read.
fn image_digest(path: &Path, what: &str) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        image_error(format!("the {what} image {} cannot be read ({e}): build it with `cargo xtask windows`", path.display()))
    })?;
    Ok(Sha256::digest(&bytes).iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// The number of `filters` (the emulated kernel's filters all pass through).
fn filter_count(filters: &[crate::pnp::FilterKind]) -> u32 {
    u32::try_from(filters.len()).unwrap_or(u32::MAX)
}

/// Guest-physical address of card `card`'s BAR0.
fn bar0(card: usize) -> u64 {
    BAR0_BASE + BAR0_STRIDE * card as u64
}

/// The registry values the bus reads at start, under the PCI PDO's
/// `Device Parameters` key, from the machine's configuration.
fn set_registry(nt: &mut Nt, pdo: u64, config: &MachineConfig) {
    let mode = match config.mode {
        DmaModeOverride::Auto => 0,
        DmaModeOverride::ScatterGather => 1,
        DmaModeOverride::CommonBuffer => 2,
    };
    nt.io.set_device_value(pdo, REG_DMA_MODE, RegValue::Dword(mode));
    nt.io.set_device_value(pdo, REG_SLOT_COUNT, RegValue::Dword(config.slot_count));
    if let Some(v) = config.max_mapping_bytes {
        nt.io.set_device_value(pdo, REG_MAX_MAPPING_BYTE_COUNT, RegValue::Dword(v));
    }
    if let Some(v) = config.descriptor_ring_entries {
        nt.io.set_device_value(pdo, REG_DESCRIPTOR_RING_ENTRIES, RegValue::Dword(v));
    }
    if let Some(v) = config.cq_entries {
        nt.io.set_device_value(pdo, REG_CQ_ENTRIES, RegValue::Dword(v));
    }
}

/// [`ImageInterface`]'s adapter translation: the guest `DMA_ADAPTER` the
/// image hands out → the raw pointer of its [`DomainMapper`] (what KS's
/// `KsDeviceRegisterAdapterObject` is given).
fn translate_adapter(_nt: &Nt, guest: u64) -> Option<*mut std::ffi::c_void> {
    DomainMapper::find(guest).map(|(raw, _)| raw)
}

impl super::Machine {
    /// The machine runs the bus image.
    pub(super) fn runs_image(&self) -> bool {
        self.config.drivers.bus_image().is_some()
    }

    /// Runs `f` with the image's kernel active (host code in `f` may call
    /// the interface thunks; [`super::Machine::image_deliver`] reaches the
    /// kernel). A stop of the kernel inside is recorded. Without the image,
    /// just `f`.
    pub(super) fn in_image<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let Some(mut world) = self.image.take() else { return f(self) };
        let result = {
            let System { machine, nt, .. } = &mut world.sys;
            active::enter(machine, nt, || f(self))
        };
        if let Some(stop) = active::take_stop() {
            world.stopped_by(&self.violations, "the run", &stop);
        }
        world.collect_findings(&self.violations);
        self.image = Some(world);
        result
    }

    /// Runs `f` in the drivers' context: with the bus image, its kernel is
    /// active, so host code in `f` may call the image's interface (a query
    /// sent down a child's stack in [`super::Machine::tree`], a table's
    /// routines); a stop of the kernel inside is recorded. With the cores,
    /// just `f`.
    pub fn in_driver_context<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.in_image(f)
    }

    /// The kernel catches up with the machine's time `now` (100-ns units):
    /// timers due by then expire (the bus's watchdog), and whatever is
    /// pending is delivered — the image's ISR for a board asserting the
    /// line, its DPCs, the completion callbacks into the AVStream core.
    /// Inside [`super::Machine::in_image`] only; nothing otherwise.
    pub(super) fn image_deliver(&self, now: u64) {
        if self.runs_image() {
            let _ = active::with(|m, nt| if m.is_dead() { Ok(()) } else { nt.advance_time(m, now) });
        }
    }

    /// Starts every card's bus stack in the kernel and puts each child in
    /// the machine's tree with the AVStream stack over it.
    pub(super) fn start_image_buses(&mut self) -> Result<(), super::RunError> {
        use capdma_interface::status::STATUS_DEVICE_REMOVED;
        for card in 0..self.cards.len() {
            let board = self.cards[card].board.clone();
            let Some(world) = self.image.as_mut().filter(|w| !w.unloaded && !w.stopped) else {
                // The image was unloaded (or its kernel stopped): a new machine is needed.
                return Err(self.driver_error(format!("card {card}: bus image (unloaded or stopped)"), STATUS_DEVICE_REMOVED));
            };
            let started = world.start_card(card, &board);
            world.collect_findings(&self.violations);
            let tables = match started {
                Ok((0, tables)) => tables,
                Ok((st, _)) => {
                    let status = NtStatusBits(st).into();
                    return Err(self.driver_error(format!("card {card}: bus image IRP_MN_START_DEVICE"), status));
                }
                Err(stop) => {
                    world.stopped_by(&self.violations, "IRP_MN_START_DEVICE", &stop);
                    return Err(self.driver_error(format!("card {card}: bus image IRP_MN_START_DEVICE"), STATUS_DEVICE_REMOVED));
                }
            };
            self.cards[card].removed = false;
            if world.avstream.is_some() {
                let pdos: Vec<u64> = world.cards[card].pnp.children.iter().filter(|c| !c.removed).map(|c| c.pdo).collect();
                self.cards[card].image_children = pdos;
            } else {
                self.enumerate_image_children(card, &tables);
            }
        }
        Ok(())
    }

    /// The image's children in the machine's tree, with the AVStream stack
    /// and the configured filters over each (once per card).
    fn enumerate_image_children(&mut self, card: usize, tables: &[CapdmaBusInterface]) {
        use super::build::build_child_stack;
        use crate::pnp::DeviceKind;
        if !self.cards[card].children.is_empty() {
            return;
        }
        let mut children = Vec::new();
        for (ch, table) in (0u32..).zip(tables.iter().take(self.config.channels as usize)) {
            children.push(build_child_stack(
                &self.tree,
                &self.config.stack,
                card,
                ch,
                format!("card {card} child PDO CAPDMA\\Channel {ch} (bus image)"),
                DeviceKind::ImageChildPdo { table: *table, channel: ch },
            ));
        }
        self.cards[card].children = children;
    }

    /// The image's side of removing card `card` once its AVStream stacks
    /// are removed: the machine's own query references dropped (every
    /// reference taken through a table must then be back: a leak
    /// otherwise), then the kernel's removal of the bus stack
    /// (`IRP_MN_QUERY_REMOVE_DEVICE`/`IRP_MN_REMOVE_DEVICE`, children first;
    /// after a surprise removal the queries are skipped, as Windows skips
    /// them). The status is recorded as `card N: bus image
    /// IRP_MN_REMOVE_DEVICE{when}`; a veto is a violation.
    fn remove_image_card(&mut self, world: &mut ImageWorld, card: usize, when: &str) {
        if !world.stopped {
            world.drop_references(card);
        }
        for (ch, iface) in world.cards[card].interfaces.iter().enumerate() {
            let (taken, dropped) = iface.references();
            let held = (1 + taken).saturating_sub(dropped);
            if held != 0 {
                self.violations.push(
                    ViolationKind::Leak,
                    format!("card {card} channel {ch}: {held} capdma interface reference(s) of the bus image never dropped"),
                );
            }
        }
        if let Some(stop) = active::take_stop() {
            world.stopped_by(&self.violations, "the interface dereference", &stop);
        }
        let board = self.cards[card].board.clone();
        if !world.stopped {
            match world.remove_card(card, &board, &self.violations) {
                Ok(st) => {
                    self.record_status(format!("card {card}: bus image IRP_MN_REMOVE_DEVICE{when}"), NtStatusBits(st).into());
                    if st != 0 {
                        self.violations.push(ViolationKind::Pnp, format!("card {card}: the bus image vetoed its removal ({st:#010X})"));
                    }
                }
                Err(stop) => world.stopped_by(&self.violations, "IRP_MN_REMOVE_DEVICE", &stop),
            }
        }
        world.collect_findings(&self.violations);
        self.cards[card].removed = true;
    }

    /// Windows' orderly removal of card `card` through the image (a user
    /// disabling it), with the kernel in hand (not inside
    /// [`Self::in_image`]): `IRP_MN_QUERY_REMOVE_DEVICE` down each AVStream
    /// stack (vetoed with `STATUS_DEVICE_BUSY` while a pin is open); a veto
    /// ends it with `IRP_MN_CANCEL_REMOVE_DEVICE` to every stack queried and
    /// the image is never asked. Without one, `IRP_MN_REMOVE_DEVICE` to the
    /// AVStream stacks (each drops its interface reference into the image),
    /// then the kernel's removal of the image's children and bus
    /// ([`Self::remove_image_card`]: its own query-remove first). Statuses
    /// are recorded (`when` appended). Returns whether the card was removed.
    pub(super) fn image_request_removal(&mut self, card: usize, when: &str) -> bool {
        if self.runs_avstream_image() {
            return self.images_request_removal(card, when);
        }
        let vetoed = self.in_image(|m| {
            let children = m.cards[card].children.clone();
            let mut queried = Vec::new();
            let mut vetoed = false;
            for (ch, child) in children.iter().enumerate() {
                let irp = m.tree.query_remove(child.fdo);
                queried.push(child.fdo);
                m.record_status(format!("card {card} channel {ch}: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack){when}"), irp.status);
                if !capdma_interface::status::nt_success(irp.status) {
                    vetoed = true;
                    break;
                }
            }
            if vetoed {
                for device in queried {
                    let irp = m.tree.cancel_remove(device);
                    if !capdma_interface::status::nt_success(irp.status) {
                        let name = m.tree.name(device);
                        m.violations.push(ViolationKind::Pnp, format!("{name}: IRP_MN_CANCEL_REMOVE_DEVICE failed: {:#010X}", irp.status.cast_unsigned()));
                    }
                }
                return true;
            }
            for (ch, child) in children.iter().enumerate() {
                let irp = m.tree.remove_device(child.fdo);
                m.record_status(format!("card {card} channel {ch}: IRP_MN_REMOVE_DEVICE (AVStream stack)"), irp.status);
            }
            false
        });
        if vetoed {
            return false;
        }
        let Some(mut world) = self.image.take() else { return false };
        self.remove_image_card(&mut world, card, when);
        self.image = Some(world);
        true
    }

    /// Windows' orderly removal of card `card` with both images: the
    /// emulated PnP manager queries every AVStream stack and the bus stack
    /// (children first) and vetoes with `STATUS_DEVICE_BUSY` while the
    /// application has a filter open on a child (recorded as `card N:
    /// IRP_MN_QUERY_REMOVE_DEVICE vetoed for open handles (AVStream stack)`,
    /// the stacks get `IRP_MN_CANCEL_REMOVE_DEVICE`); otherwise it removes
    /// them ([`Self::remove_image_card`]). Returns whether the card was removed.
    fn images_request_removal(&mut self, card: usize, when: &str) -> bool {
        let Some(mut world) = self.image.take() else { return false };
        if world.stopped {
            self.image = Some(world);
            return false;
        }
        let board = self.cards[card].board.clone();
        let removed = match world.remove_card(card, &board, &self.violations) {
            Ok(0) => {
                self.record_status(format!("card {card}: bus image IRP_MN_REMOVE_DEVICE{when}"), STATUS_SUCCESS);
                self.cards[card].removed = true;
                true
            }
            Ok(st) => {
                let status = NtStatusBits(st).into();
                self.record_status(format!("card {card}: IRP_MN_QUERY_REMOVE_DEVICE vetoed for open handles (AVStream stack){when}"), status);
                false
            }
            Err(stop) => {
                world.stopped_by(&self.violations, "IRP_MN_REMOVE_DEVICE", &stop);
                false
            }
        };
        world.collect_findings(&self.violations);
        self.image = Some(world);
        removed
    }

    /// Plug and Play's surprise removal of card `card` through the image,
    /// in Windows' order (its board already vanished):
    /// `IRP_MN_SURPRISE_REMOVAL` down each of the image's child PDOs and
    /// then the bus stack (the image releases its hardware: interrupt,
    /// watchdog, DPCs, BAR0); the application sees its reads fail and closes
    /// its pins on the card (the AVStream core stops its channels through
    /// the image's interface); a child asking the image's PDO for the
    /// interface now must be refused (the status is recorded as `card N:
    /// IRP_MN_QUERY_INTERFACE after surprise removal`); then
    /// `IRP_MN_REMOVE_DEVICE` of the AVStream stacks (each drops its
    /// interface reference into the image) and, with the handles closed,
    /// of the image's children and bus ([`Self::remove_image_card`]).
    pub(super) fn image_surprise_removal(&mut self, card: usize, now: u64, hooks: &mut super::RunHooks<'_>) {
        use capdma_interface::status::STATUS_DEVICE_REMOVED;
        let Some(mut world) = self.image.take() else { return };
        if !world.stopped {
            let c = &mut world.cards[card];
            let surprised = c.pnp.surprise_remove(&mut world.sys);
            world.collect_findings(&self.violations);
            match surprised {
                Ok(()) => self.record_status(format!("card {card}: IRP_MN_SURPRISE_REMOVAL (bus image)"), STATUS_SUCCESS),
                Err(stop) => world.stopped_by(&self.violations, "IRP_MN_SURPRISE_REMOVAL", &stop),
            }
        }
        self.image = Some(world);
        self.in_image(|m| {
            for i in 0..m.channels.len() {
                if m.channels[i].card as usize == card {
                    m.close_channel(i, now, hooks);
                }
            }
            m.image_deliver(now);
        });
        let Some(mut world) = self.image.take() else { return };
        if world.stopped {
            self.record_status(format!("card {card}: IRP_MN_QUERY_INTERFACE after surprise removal"), STATUS_DEVICE_REMOVED);
        } else {
            let c = &mut world.cards[card];
            if let Some(pdo) = c.pnp.children.first().map(|child| child.pdo) {
                let asked = c.pnp.query_interface(
                    &mut world.sys,
                    pdo,
                    &GUID_CAPDMA_BUS_INTERFACE,
                    CAPDMA_BUS_INTERFACE_SIZE_V2,
                    CAPDMA_BUS_INTERFACE_VERSION,
                );
                world.collect_findings(&self.violations);
                match asked {
                    Ok((st, _)) => {
                        let status: capdma_interface::status::NtStatus = NtStatusBits(st).into();
                        if capdma_interface::status::nt_success(status) {
                            self.violations.push(
                                ViolationKind::Pnp,
                                format!("card {card}: the bus image served the capdma interface after surprise removal"),
                            );
                        }
                        self.record_status(format!("card {card}: IRP_MN_QUERY_INTERFACE after surprise removal"), status);
                    }
                    Err(stop) => world.stopped_by(&self.violations, "IRP_MN_QUERY_INTERFACE", &stop),
                }
            }
        }
        self.image = Some(world);
        self.in_image(|m| {
            for (ch, child) in m.cards[card].children.clone().iter().enumerate() {
                let irp = m.tree.remove_device(child.fdo);
                m.record_status(format!("card {card} channel {ch}: IRP_MN_REMOVE_DEVICE (AVStream stack)"), irp.status);
            }
        });
        let Some(mut world) = self.image.take() else { return };
        self.remove_image_card(&mut world, card, " (surprise-removed)");
        self.image = Some(world);
    }

    /// The end of a bus-image machine, in Windows' order: the application
    /// closes its pins; per card the AVStream stacks are queried and
    /// removed (each drops its interface reference into the image), the
    /// machine's own query references are dropped, and the image's bus
    /// stack is removed (children first); then `DriverUnload` and the
    /// leak checks of both worlds.
    pub(super) fn teardown_image(&mut self) {
        let now = self.timeline.now();
        self.in_image(|m| {
            let mut hooks = super::RunHooks::default();
            for i in 0..m.channels.len() {
                m.close_channel(i, now, &mut hooks);
            }
            m.image_deliver(now);
            for card in 0..m.cards.len() {
                if m.cards[card].removed {
                    continue;
                }
                for (ch, child) in m.cards[card].children.clone().iter().enumerate() {
                    let irp = m.tree.query_remove(child.fdo);
                    m.record_status(format!("card {card} channel {ch}: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack) at teardown"), irp.status);
                    let irp = m.tree.remove_device(child.fdo);
                    m.record_status(format!("card {card} channel {ch}: IRP_MN_REMOVE_DEVICE (AVStream stack)"), irp.status);
                }
            }
        });
        let Some(mut world) = self.image.take() else { return };
        for card in 0..self.cards.len() {
            if !self.cards[card].removed {
                self.remove_image_card(&mut world, card, "");
            }
        }
        if !world.stopped {
            if let Err(stop) = world.unload(&self.violations) {
                world.stopped_by(&self.violations, "DriverUnload", &stop);
            }
        }
        world.collect_findings(&self.violations);
        self.image = Some(world);
        self.settle_boards();
        self.timeline.clear();
        for leak in self.memory.leaks() {
            if !leak.contains(OWN_FRAMES) {
                self.violations.push(ViolationKind::Leak, leak);
            }
        }
    }
}

/// The owner label of the kernel's own frames in the machine's memory
/// (taken for the machine's lifetime: not a leak of the run).
const OWN_FRAMES: &str = "winvm: the machine's own frames";

/// An `NTSTATUS` the kernel returned as its 32 bits.
struct NtStatusBits(u32);

impl From<NtStatusBits> for capdma_interface::status::NtStatus {
    fn from(bits: NtStatusBits) -> Self {
        Self::from_ne_bytes(bits.0.to_ne_bytes())
    }
}
