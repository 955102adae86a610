//! The end-to-end run: board → bus core → query interface (through the
//! Plug and Play stacks) → AVStream core → KS queue → application, in
//! virtual time, every frame verified.
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use capdma_avstream::bus_client::BusClient;
use capdma_avstream::copy::VectorUnit;
use capdma_avstream::device::device_start;
use capdma_avstream::format::{build_data_format, VideoFormat};
use capdma_avstream::ks_format::{KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING, KSPIN_FLAG_GENERATE_MAPPINGS};
use capdma_avstream::pin::CapturePin;
use capdma_avstream::state::KsState;
use capdma_avstream::stats::StatsSnapshot;
use capdma_bus::config::StartConfig;
use capdma_bus::device::BusDevice;
use capdma_bus::mode::ModeDecision;
use capdma_bus::pnp::state::Release;
use capdma_interface::guid::GUID_CAPDMA_BUS_INTERFACE;
use capdma_interface::status::{nt_success, status_name, NtStatus, STATUS_DEVICE_NOT_READY, STATUS_SUCCESS};
use zerocopy::IntoBytes;

use super::actions::{Action, StatusRecord};
use super::config::{ConfigError, MachineConfig};
use super::events::{Event, Timeline};
use super::platform::SimBusPlatform;
use super::teardown::SimTeardown;
use super::report::{ChannelReport, RunReport};
use crate::board::{Board, BoardConfig, BoardFault, BoardKind, CaptureOutcome, FrameSource};
use crate::dma::adapter::{AdapterConfig, SimDmaAdapter};
use crate::irql::{IrqlTracker, DEVICE};
use crate::ks::{CompletedFrame, PinFlags, SimKsPin, SimMapping};
use crate::memory::{Allocation, MemoryConfig, PhysicalMemory};
use crate::pattern::Pattern;
use crate::pnp::{AvStreamDevice, DeviceId, DeviceKind, DeviceTree, FilterKind, PciFunction};
use crate::violations::{ViolationKind, Violations};

/// Latency from the board asserting its line to the ISR, 100-ns units (1 µs).
const INTERRUPT_LATENCY: u64 = 10;
/// Latency from `IoRequestDpc` to the DPC, 100-ns units (5 µs).
const DPC_LATENCY: u64 = 50;
/// The bus watchdog timer's period, 100-ns units (10 ms).
const WATCHDOG_PERIOD: u64 = 100_000;
/// Frame intervals the machine keeps running after the last capture, so
/// frames in flight land before the application stops the stream. Kept
/// below the bus watchdog's limit: the board goes quiet after the last
/// frame, and a longer wait would (rightly) trip the watchdog.
const DRAIN_INTERVALS: u64 = 2;
/// `Process` calls one request may chain before the machine calls it a livelock.
const PROCESS_LOOP_LIMIT: u32 = 10_000;
/// Interrupts in a row (the line re-asserting right after the ISRs ran)
/// that no ISR claims before the machine calls the line stuck.
const INTERRUPT_STORM_LIMIT: u32 = 100_000;
/// Interrupts in a row that an ISR claims while the line never goes quiet
/// (a driver that does not acknowledge) before the machine calls it a storm.
const CLAIMED_STORM_LIMIT: u32 = 1_000_000;

/// Why a run could not take place (as opposed to a run that failed its checks).
#[derive(Debug)]
pub enum RunError {
    /// The configuration is not one the machine can build.
    Config(ConfigError),
    /// A driver refused a step the run needs; the report so far is attached.
    Driver {
        /// What was being done.
        step: String,
        /// The NTSTATUS returned.
        status: NtStatus,
        /// The account up to the failure (violations, leaks).
        report: Box<RunReport>,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Driver { step, status, .. } => {
                write!(f, "{step} failed: {} (0x{:08X})", status_name(*status), status.cast_unsigned())
            }
        }
    }
}

impl std::error::Error for RunError {}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// A progress callback: (frames captured so far, frames in the run).
pub type ProgressHook<'a> = &'a mut dyn FnMut(u64, u64);
/// A frame callback: (the frame bytes, its stride in bytes).
pub type FrameSink<'a> = &'a mut dyn FnMut(&[u8], usize);

/// Callbacks a front end (the CLI) can hang on a run.
#[derive(Default)]
pub struct RunHooks<'a> {
    /// Called as frames are captured: (frames captured so far, frames in the run).
    pub progress: Option<ProgressHook<'a>>,
    /// Called with every frame delivered good on channel 0 of card 0, in
    /// order: (the frame bytes, its stride in bytes).
    pub frame_sink: Option<FrameSink<'a>>,
}

/// What the machine recorded about one channel (for the fault matrix).
#[derive(Clone, Debug, Default)]
pub struct ChannelLog {
    /// Every frame delivered good: (virtual time, the board's frame number).
    pub delivered: Vec<(u64, u32)>,
    /// Every capture of the board: (virtual time, what it did).
    pub captures: Vec<(u64, CaptureOutcome)>,
    /// The pin's counters (now, or when it was dropped).
    pub pin_stats: Option<StatsSnapshot>,
    /// Frames the application submitted to the KS queue.
    pub ks_submitted: u64,
    /// Frames the KS queue completed back to the application (filled or not).
    pub ks_completed: u64,
    /// Times KS could not map a frame for want of map registers.
    pub ks_map_waits: u64,
    /// Frames still in the KS queue.
    pub ks_queued: usize,
    /// Stream pointer clones alive.
    pub ks_live_clones: usize,
}

/// One channel of the run: its child device, pin and application.
struct ChannelRun {
    card: u32,
    index: u32,
    ks: SimKsPin,
    pin: Option<Pin<Box<CapturePin<SimKsPin>>>>,
    /// The AVStream device on the channel's child PDO (holds the interface).
    device: Rc<AvStreamDevice>,
    format: VideoFormat,
    pattern: Pattern,
    buffers: Vec<Allocation>,
    /// The application holds buffer `i` (completed and not queued again).
    with_app: Vec<bool>,
    /// A requeue of buffer `i` is scheduled.
    requeue_scheduled: Vec<bool>,
    /// The application stopped queueing buffers ([`Action::AppHold`]).
    app_hold: bool,
    app_busy_until: u64,
    captures: u32,
    report: ChannelReport,
    log: ChannelLog,
}

/// The two device objects of one child stack, and the AVStream device.
#[derive(Clone, Debug)]
struct ChildStack {
    pdo: DeviceId,
    fdo: DeviceId,
    device: Rc<AvStreamDevice>,
}

/// One capture card: its board, bus driver and Plug and Play stacks.
#[allow(clippy::struct_excessive_bools, reason = "independent facts of the simulated glue: interrupt, timer, DPC, removal")]
struct Card {
    index: u32,
    board: Board,
    bus: Rc<BusDevice<SimBusPlatform>>,
    pci: PciFunction,
    decision: Option<ModeDecision>,
    interrupt_connected: bool,
    /// The bus's watchdog timer is armed (`KeSetTimerEx`).
    timer_armed: bool,
    dpc_queued: bool,
    pci_pdo: DeviceId,
    bus_fdo: DeviceId,
    children: Vec<ChildStack>,
    /// Plug and Play removed the card (surprise removal handled).
    removed: bool,
    isr_claimed: u64,
    isr_unclaimed: u64,
}

/// The simulated machine with capdma cards in it.
///
/// Dropping a machine whose pins are still open tears it down first (the
/// pins' `Drop` calls into the bus through the interface, so the channels
/// go before the cards; they are also declared first).
pub struct Machine {
    channels: Vec<ChannelRun>,
    config: MachineConfig,
    violations: Violations,
    irql: IrqlTracker,
    memory: PhysicalMemory,
    tree: DeviceTree,
    software_pdo: DeviceId,
    cards: Vec<Card>,
    timeline: Timeline,
    actions: Vec<Action>,
    statuses: Vec<StatusRecord>,
    run_start: u64,
    unclaimed_in_a_row: u32,
    claimed_in_a_row: u32,
    interrupts_unclaimed: u64,
    started: Instant,
}

/// The seed of card `card`'s board (card 0: the configured seed), so the
/// cards' patterns differ and a frame of one card cannot verify as another's.
fn card_seed(seed: u64, card: u32) -> u64 {
    seed.wrapping_add(u64::from(card).wrapping_mul(0x9E37_79B9))
}

fn board_config(config: &MachineConfig, card: u32) -> BoardConfig {
    let base = match config.board {
        BoardKind::ScatterGather => BoardConfig::scatter_gather(),
        BoardKind::Legacy => BoardConfig::legacy(),
    };
    let lines = config.format.lines(config.height).unwrap_or(0);
    let slot_pitch = config.line_bytes().div_ceil(256).saturating_mul(256);
    let pitch = slot_pitch.max(config.stride_bytes());
    BoardConfig {
        channels: config.channels,
        address_64: !config.dma32,
        alignment: config.alignment.unwrap_or(base.alignment),
        max_frame_bytes: pitch.saturating_mul(lines).max(4096),
        seed: card_seed(config.seed, card),
        ..base
    }
}

impl Machine {
    /// Builds the machine (memory, boards, the PCI functions with the bus
    /// driver's `BusDevice` each, and their Plug and Play bus stacks with
    /// the configured filters) without starting anything.
    ///
    /// # Errors
    /// [`RunError::Config`] for a configuration the machine cannot build.
    pub fn new(config: MachineConfig) -> Result<Self, RunError> {
        config.validate()?;
        let violations = Violations::new();
        let irql = IrqlTracker::new(violations.clone());
        let memory = PhysicalMemory::new(
            MemoryConfig {
                seed: config.seed,
                high_memory: config.high_memory,
                contiguous_failure: config.contiguous_failure,
                ..MemoryConfig::default()
            },
            violations.clone(),
        );
        let tree = DeviceTree::new(&irql, &violations);
        let software_pdo = tree.create_pdo("ROOT\\SYSTEM\\0000 (software PDO)", DeviceKind::SoftwarePdo);
        let mut cards = Vec::new();
        for card in 0..config.cards {
            let board = Board::new(board_config(&config, card), &memory).map_err(|e| ConfigError(e.0))?;
            if let Some(video) = &config.source {
                for ch in 0..config.channels {
                    board.set_source(ch, FrameSource::Video(Rc::clone(video)));
                }
            }
            let adapter_config = AdapterConfig { map_registers: config.map_registers, merge_adjacent: true };
            let pci = PciFunction::new(format!("card {card} PCI function"), &memory, &irql, adapter_config);
            let platform = SimBusPlatform::with_pci(board.clone(), memory.clone(), irql.clone(), pci.clone());
            let bus = Rc::new(BusDevice::new(platform));
            let pci_pdo = tree.create_pdo(format!("card {card} PCI PDO"), DeviceKind::PciPdo(pci.clone()));
            attach_filters(&tree, &config.stack.below_bus, pci_pdo, &format!("card {card} bus lower filter"));
            let bus_fdo = tree.attach(format!("card {card} bus FDO"), DeviceKind::BusFdo(Rc::clone(&bus)), pci_pdo);
            attach_filters(&tree, &config.stack.above_bus, pci_pdo, &format!("card {card} bus upper filter"));
            cards.push(Card {
                index: card,
                board,
                bus,
                pci,
                decision: None,
                interrupt_connected: false,
                timer_armed: false,
                dpc_queued: false,
                pci_pdo,
                bus_fdo,
                children: Vec::new(),
                removed: false,
                isr_claimed: 0,
                isr_unclaimed: 0,
            });
        }
        Ok(Self {
            config,
            violations,
            irql,
            memory,
            tree,
            software_pdo,
            cards,
            channels: Vec::new(),
            timeline: Timeline::default(),
            actions: Vec::new(),
            statuses: Vec::new(),
            run_start: 0,
            unclaimed_in_a_row: 0,
            claimed_in_a_row: 0,
            interrupts_unclaimed: 0,
            started: Instant::now(),
        })
    }

    /// Card 0's board, for fault injection.
    #[must_use]
    pub fn board(&self) -> &Board {
        &self.cards[0].board
    }

    /// Card `card`'s board.
    #[must_use]
    pub fn board_of(&self, card: u32) -> Option<&Board> {
        self.cards.get(card as usize).map(|c| &c.board)
    }

    /// Card 0's bus driver device.
    #[must_use]
    pub fn bus(&self) -> &BusDevice<SimBusPlatform> {
        &self.cards[0].bus
    }

    /// Card `card`'s bus driver device.
    #[must_use]
    pub fn bus_of(&self, card: u32) -> Option<&BusDevice<SimBusPlatform>> {
        self.cards.get(card as usize).map(|c| &*c.bus)
    }

    /// The rules broken so far.
    #[must_use]
    pub fn violations(&self) -> &Violations {
        &self.violations
    }

    /// The machine's memory.
    #[must_use]
    pub fn memory(&self) -> &PhysicalMemory {
        &self.memory
    }

    /// The IRQL tracker (tests call DDIs at `PASSIVE_LEVEL` through it).
    #[must_use]
    pub fn irql(&self) -> &IrqlTracker {
        &self.irql
    }

    /// The Plug and Play device tree.
    #[must_use]
    pub fn tree(&self) -> &DeviceTree {
        &self.tree
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// Card `card`'s PCI PDO.
    #[must_use]
    pub fn pci_pdo(&self, card: u32) -> Option<DeviceId> {
        self.cards.get(card as usize).map(|c| c.pci_pdo)
    }

    /// Card `card`'s bus FDO.
    #[must_use]
    pub fn bus_fdo(&self, card: u32) -> Option<DeviceId> {
        self.cards.get(card as usize).map(|c| c.bus_fdo)
    }

    /// Card `card`'s PCI function (its adapters, its interface references).
    #[must_use]
    pub fn pci(&self, card: u32) -> Option<&PciFunction> {
        self.cards.get(card as usize).map(|c| &c.pci)
    }

    /// The child PDO the bus enumerated for `channel` of `card` (after `start`).
    #[must_use]
    pub fn child_pdo(&self, card: u32, channel: u32) -> Option<DeviceId> {
        self.cards.get(card as usize)?.children.get(channel as usize).map(|c| c.pdo)
    }

    /// The AVStream FDO over that child PDO (after `start`).
    #[must_use]
    pub fn avstream_fdo(&self, card: u32, channel: u32) -> Option<DeviceId> {
        self.cards.get(card as usize)?.children.get(channel as usize).map(|c| c.fdo)
    }

    /// The AVStream device on `channel` of `card` (after `start`).
    #[must_use]
    pub fn avstream_device(&self, card: u32, channel: u32) -> Option<Rc<AvStreamDevice>> {
        self.cards.get(card as usize)?.children.get(channel as usize).map(|c| Rc::clone(&c.device))
    }

    /// A root-enumerated software PDO whose bus forwards nothing.
    #[must_use]
    pub fn software_pdo(&self) -> DeviceId {
        self.software_pdo
    }

    /// The statuses actions and the teardown saw, in order.
    #[must_use]
    pub fn statuses(&self) -> &[StatusRecord] {
        &self.statuses
    }

    /// What the machine recorded about `channel` of `card`.
    #[must_use]
    pub fn channel_log(&self, card: u32, channel: u32) -> Option<ChannelLog> {
        let run = self.channels.iter().find(|r| r.card == card && r.index == channel)?;
        let mut log = run.log.clone();
        let ks = run.ks.stats();
        log.ks_submitted = ks.submitted;
        log.ks_completed = ks.completed;
        log.ks_map_waits = ks.map_waits;
        log.ks_queued = run.ks.queued_frames();
        log.ks_live_clones = run.ks.live_clones();
        if let Some(pin) = run.pin.as_ref() {
            log.pin_stats = Some(pin.stats());
        }
        Some(log)
    }

    /// The current virtual time, 100-ns units.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.timeline.now()
    }

    /// The time of the `k`-th capture (1-based) of the current run, 100-ns
    /// units: schedule an action at `frame_time(k) - 1` to have it happen
    /// just before that capture.
    #[must_use]
    pub fn frame_time(&self, k: u32) -> u64 {
        self.run_start + self.config.frame_interval_100ns() * u64::from(k)
    }

    /// Schedules `action` at virtual time `at_100ns` (not before now).
    pub fn schedule(&mut self, at_100ns: u64, action: Action) {
        let index = u32::try_from(self.actions.len()).unwrap_or(u32::MAX);
        self.actions.push(action);
        self.timeline.schedule(at_100ns, Event::Action { index });
    }

    fn record_status(&mut self, what: impl Into<String>, status: NtStatus) {
        self.statuses.push(StatusRecord { at_100ns: self.timeline.now(), what: what.into(), status });
    }

    fn driver_error(&self, step: impl Into<String>, status: NtStatus) -> RunError {
        RunError::Driver { step: step.into(), status, report: Box::new(self.report()) }
    }

    fn channel_position(&self, card: u32, channel: u32) -> Option<usize> {
        self.channels.iter().position(|r| r.card == card && r.index == channel)
    }

    /// `IRP_MN_START_DEVICE` of every card's bus FDO (the interrupt is
    /// connected after it), the bus enumerates one child PDO per channel
    /// (with the configured filters over it), then per child its AVStream
    /// device start (`IRP_MN_QUERY_INTERFACE` sent down the child's stack,
    /// DMA config, adapter registration), a capture pin with the configured
    /// format, the application's buffers queued, and the pin walked to
    /// `KSSTATE_RUN`. May be called again after [`Machine::teardown`] (a new
    /// start/stop cycle).
    ///
    /// # Errors
    /// [`RunError::Driver`] naming the step a driver refused.
    pub fn start(&mut self) -> Result<(), RunError> {
        self.timeline.clear();
        self.channels.clear();
        self.run_start = self.timeline.now();
        let start = StartConfig {
            dma_mode: self.config.mode,
            slot_count: self.config.slot_count,
            max_mapping_byte_count: self.config.max_mapping_bytes,
            descriptor_ring_entries: self.config.descriptor_ring_entries.unwrap_or(StartConfig::DEFAULT.descriptor_ring_entries),
            cq_entries: self.config.cq_entries.unwrap_or(StartConfig::DEFAULT.cq_entries),
        };
        for card in 0..self.cards.len() {
            // MmMapIoSpaceEx, then the core's start; a failed start unmaps BAR0 again.
            self.cards[card].board.set_bar0_mapped(true);
            let result = self.cards[card].bus.start(&start);
            if result.is_err() {
                self.cards[card].board.set_bar0_mapped(false);
            }
            let decision = result.map_err(|s| self.driver_error(format!("card {card}: bus IRP_MN_START_DEVICE"), s))?;
            let c = &mut self.cards[card];
            c.decision = Some(decision);
            c.interrupt_connected = true;
            c.timer_armed = true;
            c.removed = false;
            self.enumerate_children(card);
        }
        for card in 0..self.config.cards {
            for ch in 0..self.config.channels {
                let run = self.start_child(card, ch)?;
                self.channels.push(run);
            }
        }
        // KS calls Process as the pins reach KSSTATE_RUN, before any frame is due.
        self.passive_work(self.run_start, &mut RunHooks::default());
        for run in &self.channels {
            self.timeline.schedule(self.run_start + self.config.frame_interval_100ns(), Event::Capture { card: run.card, channel: run.index });
        }
        self.timeline.schedule(self.run_start + WATCHDOG_PERIOD, Event::Watchdog);
        Ok(())
    }

    /// `IRP_MN_QUERY_DEVICE_RELATIONS` (`BusRelations`) of a card: one child
    /// PDO per channel and the AVStream stack over it (once: the children
    /// stay present across start/stop cycles).
    fn enumerate_children(&mut self, card: usize) {
        let c = &self.cards[card];
        if !c.children.is_empty() {
            return;
        }
        let mut children = Vec::new();
        for ch in 0..self.config.channels {
            let pdo = self.tree.create_pdo(
                format!("card {card} child PDO CAPDMA\\Channel {ch}"),
                DeviceKind::ChildPdo { bus: Rc::clone(&c.bus), channel: ch, parent_fdo: c.bus_fdo },
            );
            attach_filters(&self.tree, &self.config.stack.below_avstream, pdo, &format!("card {card} channel {ch} lower filter"));
            let name = format!("card {card} channel {ch} AVStream FDO");
            let device = Rc::new(AvStreamDevice::new(name.clone()));
            let fdo = self.tree.attach(name, DeviceKind::AvStreamFdo(Rc::clone(&device)), pdo);
            attach_filters(&self.tree, &self.config.stack.above_avstream, pdo, &format!("card {card} channel {ch} upper filter"));
            children.push(ChildStack { pdo, fdo, device });
        }
        self.cards[card].children = children;
    }

    /// The AVStream side of one child PDO.
    fn start_child(&mut self, card: u32, ch: u32) -> Result<ChannelRun, RunError> {
        let what = |step: &str| format!("card {card} channel {ch}: {step}");
        let Some(stack) = self.cards.get(card as usize).and_then(|c| c.children.get(ch as usize).cloned()) else {
            return Err(self.driver_error(what("child enumeration"), STATUS_DEVICE_NOT_READY));
        };
        // IRP_MN_QUERY_INTERFACE for GUID_CAPDMA_BUS_INTERFACE, sent to the top
        // of the AVStream device's own stack; it travels down to the child PDO.
        let mut answer = BusClient::query_buffer();
        // SAFETY: `answer` is a live local of `Size` bytes.
        let irp = unsafe {
            self.tree.query_interface(
                stack.fdo,
                Some(GUID_CAPDMA_BUS_INTERFACE),
                answer.header.size,
                answer.header.version,
                (&raw mut answer).cast(),
            )
        };
        if !nt_success(irp.status) {
            let path = self.tree.describe_path(&irp.path);
            return Err(self.driver_error(format!("{} (path {path})", what("IRP_MN_QUERY_INTERFACE")), irp.status));
        }
        // SAFETY: the bus filled `answer` for this query and took one reference
        // for us; the BusDevice lives in an Rc the machine keeps until it is dropped.
        let client = unsafe { BusClient::from_query(&answer, ch) }.map_err(|s| self.driver_error(what("interface check"), s))?;
        let setup = match device_start(&client) {
            Ok(setup) => setup,
            Err(s) => {
                // SAFETY: the reference from the query is dropped once, here.
                unsafe { client.release() };
                return Err(self.driver_error(what("AVStream device start"), s));
            }
        };
        // KsDeviceRegisterAdapterObject: KS finds the adapter from the raw PDMA_ADAPTER.
        let mapping = setup.adapter.and_then(|reg| {
            SimDmaAdapter::from_raw(reg.adapter)
                .map(|adapter| SimMapping { adapter, max_mapping_byte_count: reg.max_mapping_byte_count })
        });
        let flags = PinFlags {
            generate_mappings: setup.pin_flags & KSPIN_FLAG_GENERATE_MAPPINGS != 0,
            do_not_initiate_processing: setup.pin_flags & KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING != 0,
        };
        let ks = SimKsPin::new(flags, mapping, self.irql.clone(), self.violations.clone());
        let pin = Box::pin(CapturePin::new(ks.clone(), client.channel(), &setup, VectorUnit::Avx2));
        // The AVStream device keeps the reference until its IRP_MN_REMOVE_DEVICE.
        stack.device.hold_interface(client);
        let c = &self.config;
        let mut run = ChannelRun {
            card,
            index: ch,
            ks,
            pin: None,
            device: Rc::clone(&stack.device),
            format: VideoFormat::default_for(c.format),
            pattern: Pattern { format: c.format, width: c.width, height: c.height, channel: ch, seed: card_seed(c.seed, card) },
            buffers: Vec::new(),
            with_app: Vec::new(),
            requeue_scheduled: Vec::new(),
            app_hold: false,
            app_busy_until: 0,
            captures: 0,
            report: ChannelReport {
                card,
                channel: ch,
                mode: setup.mode.name().to_string(),
                mode_reason: setup.reason.map_or("unknown", |r| r.describe()).to_string(),
                ..ChannelReport::default()
            },
            log: ChannelLog::default(),
        };
        // The application states what it wants; the driver's SetDataFormat
        // judges it (odd sizes, bad strides and overflows are refused there).
        let format = self.requested_format();
        let bytes = build_data_format(&format);
        if let Err(s) = pin.set_data_format(bytes.as_bytes()) {
            self.abandon_child(&mut run, Some(pin));
            return Err(self.driver_error(what("SetDataFormat"), s));
        }
        run.format = format;
        for i in 0..self.config.app_buffers {
            let owner = format!("application buffer {i} of card {card} channel {ch}");
            match self.memory.allocate_scattered(format.image_bytes as usize, &owner) {
                Ok(alloc) => {
                    run.ks.submit(u64::from(i), alloc.va, format.image_bytes);
                    run.buffers.push(alloc);
                    run.with_app.push(false);
                    run.requeue_scheduled.push(false);
                }
                Err(e) => {
                    self.abandon_child(&mut run, Some(pin));
                    return Err(RunError::Config(ConfigError(format!("application buffers: {e}"))));
                }
            }
        }
        let status = pin.as_ref().set_state(KsState::Run);
        if status != STATUS_SUCCESS {
            self.abandon_child(&mut run, Some(pin));
            return Err(self.driver_error(what("KSSTATE_RUN"), status));
        }
        run.ks.set_running(true);
        run.pin = Some(pin);
        run.device.set_pin_open(true);
        Ok(run)
    }

    /// The format the application asks for, unchecked: the stride from
    /// `--stride` (or the line), the image at that stride (saturating, so
    /// an overflow reaches the driver as a size it must refuse).
    fn requested_format(&self) -> VideoFormat {
        let c = &self.config;
        let stride = c.stride_bytes();
        let lines = c.format.lines(c.height).unwrap_or(u32::MAX);
        VideoFormat {
            pixel: c.format,
            width: c.width,
            height: c.height,
            stride,
            image_bytes: stride.saturating_mul(lines),
            frame_interval: u32::try_from(c.frame_interval_100ns()).unwrap_or(u32::MAX),
        }
    }

    /// Undoes a half-started child: pin to STOP and dropped, buffers freed,
    /// the interface reference released (the AVStream device's start failed).
    fn abandon_child(&self, run: &mut ChannelRun, pin: Option<Pin<Box<CapturePin<SimKsPin>>>>) {
        if let Some(pin) = pin {
            let _ = pin.as_ref().set_state(KsState::Stop);
            run.ks.flush_on_stop();
            drop(pin);
        }
        while run.ks.take_completed().is_some() {}
        for buffer in run.buffers.drain(..) {
            self.memory.free(buffer.id);
        }
        run.device.set_pin_open(false);
        let _ = run.device.release_interface();
    }

    /// Runs until every channel captured its frames and the pipeline drained.
    pub fn run(&mut self, hooks: &mut RunHooks<'_>) {
        let interval = self.config.frame_interval_100ns();
        let total = u64::from(self.config.frames) * self.channels.len() as u64;
        let end = self.run_start + interval * (u64::from(self.config.frames) + DRAIN_INTERVALS);
        let mut captured = 0u64;
        while let Some(event) = self.timeline.pop_next() {
            let now = self.timeline.now();
            match event {
                Event::Capture { card, channel } => {
                    if self.capture(card, channel, now) {
                        captured += 1;
                        if let Some(progress) = hooks.progress.as_mut() {
                            progress(captured, total);
                        }
                    }
                }
                Event::Interrupt => self.interrupt(now),
                Event::Dpc { card } => self.dpc(card, now),
                Event::Watchdog => {
                    for card in 0..self.cards.len() {
                        if self.cards[card].timer_armed {
                            let old = self.irql.enter_dpc();
                            self.cards[card].bus.watchdog(i64::try_from(now).unwrap_or(i64::MAX));
                            self.irql.leave_dpc(old);
                        }
                    }
                    self.after_device_activity(now);
                    if now < end {
                        self.timeline.schedule(now + WATCHDOG_PERIOD, Event::Watchdog);
                    }
                }
                Event::AppRequeue { card, channel, buffer } => self.requeue(card, channel, buffer),
                Event::Action { index } => self.act(index, now, hooks),
            }
            self.passive_work(now, hooks);
            self.settle_boards();
            if now >= end && self.timeline.is_empty() {
                break;
            }
        }
    }

    /// A board's frame time on `channel`. Returns whether a frame time was spent.
    fn capture(&mut self, card: u32, channel: u32, now: u64) -> bool {
        let frames = self.config.frames;
        let interval = self.config.frame_interval_100ns();
        let Some(i) = self.channel_position(card, channel) else { return false };
        let Some(c) = self.cards.get(card as usize) else { return false };
        if c.board.is_removed() {
            return false;
        }
        let run = &mut self.channels[i];
        if run.captures >= frames {
            return false;
        }
        run.captures += 1;
        run.report.frames_captured += 1;
        let outcome = c.board.capture_frame(channel, now);
        run.log.captures.push((now, outcome));
        if run.captures < frames {
            self.timeline.schedule(now + interval, Event::Capture { card, channel });
        }
        self.after_device_activity(now);
        true
    }

    /// Whether the shared interrupt line is asserted by a connected card.
    fn line_asserted(&self) -> bool {
        self.cards.iter().any(|c| c.interrupt_connected && c.board.interrupt_pending())
    }

    /// Schedules the ISRs if the line is asserted.
    fn after_device_activity(&mut self, now: u64) {
        if self.line_asserted() {
            self.timeline.schedule(now + INTERRUPT_LATENCY, Event::Interrupt);
        }
    }

    /// The shared line's interrupt: the connected cards' ISRs in chain order
    /// until one claims it (level-triggered: while the line stays asserted
    /// the interrupt comes again).
    fn interrupt(&mut self, now: u64) {
        if !self.line_asserted() {
            return;
        }
        let mut claimed = false;
        for card in 0..self.cards.len() {
            if !self.cards[card].interrupt_connected {
                continue;
            }
            let old = self.irql.enter_isr(DEVICE);
            let mine = self.cards[card].bus.isr();
            self.irql.leave_isr(old);
            let c = &mut self.cards[card];
            if mine {
                c.isr_claimed += 1;
                if !c.dpc_queued {
                    c.dpc_queued = true;
                    self.timeline.schedule(now + DPC_LATENCY, Event::Dpc { card: c.index });
                }
                claimed = true;
                break;
            }
            c.isr_unclaimed += 1;
        }
        if claimed {
            self.unclaimed_in_a_row = 0;
            self.claimed_in_a_row += 1;
        } else {
            // Not ours: another device on the shared line. A line the
            // boards keep asserted and no ISR ever claims is a storm.
            self.interrupts_unclaimed += 1;
            self.unclaimed_in_a_row += 1;
            self.claimed_in_a_row = 0;
        }
        if self.unclaimed_in_a_row >= INTERRUPT_STORM_LIMIT || self.claimed_in_a_row >= CLAIMED_STORM_LIMIT {
            self.violations.push(ViolationKind::Interrupt, "interrupt line stuck asserted: the ISRs never quiet it");
            for c in &mut self.cards {
                c.interrupt_connected = false;
            }
            return;
        }
        if self.line_asserted() {
            self.timeline.schedule(now + INTERRUPT_LATENCY, Event::Interrupt);
        } else {
            self.claimed_in_a_row = 0;
            self.unclaimed_in_a_row = 0;
        }
    }

    fn dpc(&mut self, card: u32, now: u64) {
        let Some(c) = self.cards.get_mut(card as usize) else { return };
        c.dpc_queued = false;
        let bus = Rc::clone(&c.bus);
        let old = self.irql.enter_dpc();
        bus.dpc(i64::try_from(now).unwrap_or(i64::MAX));
        self.irql.leave_dpc(old);
        self.after_device_activity(now);
    }

    /// What runs at `PASSIVE_LEVEL` after an event: the `Process` calls KS
    /// owes, then the application taking its completed frames.
    fn passive_work(&mut self, now: u64, hooks: &mut RunHooks<'_>) {
        for i in 0..self.channels.len() {
            let mut calls = 0;
            loop {
                let run = &self.channels[i];
                if !run.ks.take_process_request() {
                    break;
                }
                if let Some(pin) = run.pin.as_ref() {
                    let _ = pin.process();
                }
                calls += 1;
                if calls >= PROCESS_LOOP_LIMIT {
                    self.violations.push(ViolationKind::Ks, format!("channel {i}: Process requested {calls} times in a row"));
                    break;
                }
            }
            self.take_completed(i, now, hooks);
            self.after_device_activity(now);
        }
    }

    fn take_completed(&mut self, i: usize, now: u64, hooks: &mut RunHooks<'_>) {
        while let Some(done) = self.channels[i].ks.take_completed() {
            self.deliver(i, done, now, hooks);
        }
    }

    /// The application receives a completed frame: verify, then requeue it
    /// after the time it holds frames.
    fn deliver(&mut self, i: usize, done: CompletedFrame, now: u64, hooks: &mut RunHooks<'_>) {
        let source = self.config.source.clone();
        let hold = self.config.app_hold_100ns;
        let run = &mut self.channels[i];
        let Some(b) = usize::try_from(done.buffer_id).ok().filter(|&b| b < run.buffers.len()) else {
            self.violations.push(ViolationKind::Ks, format!("channel {i}: completed an unknown buffer {}", done.buffer_id));
            return;
        };
        if run.with_app[b] {
            self.violations.push(ViolationKind::Ks, format!("channel {i}: buffer {b} completed twice"));
        }
        run.with_app[b] = true;
        let buffer = &run.buffers[b];
        let good = !done.cancelled && done.completion.is_some_and(|c| c.data_used > 0);
        if good {
            let completion = done.completion.unwrap_or_default();
            run.report.frames_delivered += 1;
            // SAFETY: the buffer is a live allocation of `bytes` bytes; nothing
            // writes it while the application holds it (the frame left the queue).
            let bytes = unsafe { std::slice::from_raw_parts(buffer.va, buffer.bytes) };
            let frame_number = u32::try_from(completion.picture_number).unwrap_or(u32::MAX);
            run.log.delivered.push((now, frame_number));
            let ok = completion.data_used == run.format.image_bytes
                && verify_frame(&run.pattern, source.as_ref(), &run.format, frame_number, bytes);
            if ok {
                run.report.frames_verified += 1;
                if run.card == 0 && run.index == 0 {
                    if let Some(sink) = hooks.frame_sink.as_mut() {
                        sink(&bytes[..run.format.image_bytes as usize], run.format.stride as usize);
                    }
                }
            } else {
                run.report.frames_corrupt += 1;
            }
        }
        if done.cancelled || run.pin.is_none() || run.app_hold {
            return;
        }
        let at = now.max(run.app_busy_until) + hold;
        run.app_busy_until = at;
        run.requeue_scheduled[b] = true;
        self.timeline.schedule(at, Event::AppRequeue { card: run.card, channel: run.index, buffer: b as u32 });
    }

    fn requeue(&mut self, card: u32, channel: u32, buffer: u32) {
        let Some(i) = self.channel_position(card, channel) else { return };
        let run = &mut self.channels[i];
        let b = buffer as usize;
        if b >= run.buffers.len() {
            return;
        }
        run.requeue_scheduled[b] = false;
        let stopped = run.pin.as_ref().is_none_or(|p| p.state() == KsState::Stop);
        if !run.with_app[b] || run.app_hold || stopped {
            return;
        }
        run.with_app[b] = false;
        run.ks.submit(u64::from(buffer), run.buffers[b].va, run.format.image_bytes);
    }

    /// Schedules a requeue (now) of every buffer the application holds.
    fn requeue_all_held(&mut self, i: usize, now: u64) {
        let run = &mut self.channels[i];
        for b in 0..run.buffers.len() {
            if run.with_app[b] && !run.requeue_scheduled[b] {
                run.requeue_scheduled[b] = true;
                self.timeline.schedule(now, Event::AppRequeue { card: run.card, channel: run.index, buffer: b as u32 });
            }
        }
    }

    /// Runs scheduled action `index`.
    fn act(&mut self, index: u32, now: u64, hooks: &mut RunHooks<'_>) {
        let Some(action) = self.actions.get(index as usize).cloned() else { return };
        match action {
            Action::InjectFault { card, fault } => {
                if let Some(c) = self.cards.get(card as usize) {
                    c.board.inject(fault);
                }
            }
            Action::InjectFaultNow { card, fault } => {
                if let Some(c) = self.cards.get(card as usize) {
                    c.board.inject_now(fault);
                }
                self.after_device_activity(now);
            }
            Action::StatusStorm { card, bits, count, period_100ns } => {
                if count == 0 {
                    return;
                }
                if let Some(c) = self.cards.get(card as usize) {
                    c.board.raise_status(bits);
                }
                self.after_device_activity(now);
                if count > 1 {
                    let next = Action::StatusStorm { card, bits, count: count - 1, period_100ns };
                    self.schedule(now + period_100ns.max(1), next);
                }
            }
            Action::PinState { card, channel, to } => {
                self.pin_op(card, channel, now, hooks, &format!("KS state to {to:?}"), |pin| pin.set_state(to));
            }
            Action::PinTransition { card, channel, to } => {
                self.pin_op(card, channel, now, hooks, &format!("one KS step to {to:?}"), |pin| pin.transition(to));
            }
            Action::PinDeviceState { card, channel, to, from } => {
                let what = format!("SetDeviceState({to:?}, from {from:?})");
                self.pin_op(card, channel, now, hooks, &what, |pin| pin.set_device_state(to, from));
            }
            Action::PinSetFormat { card, channel } => {
                let Some(i) = self.channel_position(card, channel) else { return };
                let run = &self.channels[i];
                let bytes = build_data_format(&run.format);
                let status = match run.pin.as_ref() {
                    Some(pin) => pin.set_data_format(bytes.as_bytes()).err().unwrap_or(STATUS_SUCCESS),
                    None => STATUS_DEVICE_NOT_READY,
                };
                let state = run.pin.as_ref().map(|p| p.state());
                self.record_status(format!("card {card} channel {channel}: SetDataFormat in {state:?}"), status);
            }
            Action::AppHold { card, channel, hold } => {
                let Some(i) = self.channel_position(card, channel) else { return };
                self.channels[i].app_hold = hold;
                if !hold {
                    self.requeue_all_held(i, now);
                }
            }
            Action::RequestRemoval { card } => {
                let index = card as usize;
                if self.cards.get(index).is_some_and(|c| !c.removed) {
                    let _ = self.request_removal(index, now, "");
                }
            }
            Action::SurpriseRemoval { card } => self.surprise_removal(card, now, hooks),
        }
    }

    /// Runs `op` on a pin and keeps the KS model and the application in
    /// step with the state the pin ends in; records the status.
    fn pin_op(
        &mut self,
        card: u32,
        channel: u32,
        now: u64,
        hooks: &mut RunHooks<'_>,
        what: &str,
        op: impl FnOnce(Pin<&CapturePin<SimKsPin>>) -> NtStatus,
    ) {
        let Some(i) = self.channel_position(card, channel) else { return };
        let Some(pin) = self.channels[i].pin.as_ref() else {
            self.record_status(format!("card {card} channel {channel}: {what} (pin closed)"), STATUS_DEVICE_NOT_READY);
            return;
        };
        let before = pin.state();
        let status = op(pin.as_ref());
        let after = pin.state();
        self.record_status(format!("card {card} channel {channel}: {what} in {before:?}"), status);
        self.settle_pin(i, before, after, now, hooks);
    }

    /// After a pin went from `before` to `after`: KS stops or starts
    /// processing, a stopped pin's queue is flushed back to the application,
    /// a restarted one gets the application's buffers again.
    fn settle_pin(&mut self, i: usize, before: KsState, after: KsState, now: u64, hooks: &mut RunHooks<'_>) {
        let run = &self.channels[i];
        if after != KsState::Run {
            run.ks.set_running(false);
        }
        if after == KsState::Stop && before != KsState::Stop {
            run.ks.flush_on_stop();
            self.take_completed(i, now, hooks);
        }
        if after == KsState::Run && before != KsState::Run {
            self.channels[i].ks.set_running(true);
            self.requeue_all_held(i, now);
        }
        if let Some(pin) = self.channels[i].pin.as_ref() {
            self.channels[i].log.pin_stats = Some(pin.stats());
        }
    }

    /// Plug and Play's surprise removal of `card` (see [`Action::SurpriseRemoval`]).
    fn surprise_removal(&mut self, card: u32, now: u64, hooks: &mut RunHooks<'_>) {
        let Some(c) = self.cards.get(card as usize) else { return };
        if c.removed {
            return;
        }
        // IRP_MN_SURPRISE_REMOVAL: the children first (the AVStream core has
        // nothing to do: KS fails new requests), then the bus FDO: the core
        // stops the engines and the glue gives up the interrupt (a DPC
        // already queued still runs), the watchdog and BAR0; the common
        // buffers and the adapter wait for the removal.
        let bus = Rc::clone(&c.bus);
        bus.surprise_remove();
        let _ = self.release_card(card as usize, Release::Hardware, now);
        // The application sees its reads fail and closes the pins.
        for i in 0..self.channels.len() {
            if self.channels[i].card == card {
                self.close_channel(i, now, hooks);
            }
        }
        // A child asking for the interface now gets the removal status.
        if let Some(stack) = self.cards[card as usize].children.first().cloned() {
            let mut answer = BusClient::query_buffer();
            // SAFETY: `answer` is a live local of `Size` bytes.
            let irp = unsafe {
                self.tree.query_interface(stack.fdo, Some(GUID_CAPDMA_BUS_INTERFACE), answer.header.size, answer.header.version, (&raw mut answer).cast())
            };
            if nt_success(irp.status) {
                self.violations.push(ViolationKind::Pnp, format!("card {card}: the capdma interface was served after surprise removal"));
                if let Some(deref) = answer.header.interface_dereference {
                    // SAFETY: drops the reference the unexpected answer took.
                    unsafe { deref(answer.header.context) };
                }
            }
            self.record_status(format!("card {card}: IRP_MN_QUERY_INTERFACE after surprise removal"), irp.status);
        }
        // IRP_MN_REMOVE_DEVICE: each child stack (the AVStream device drops
        // its interface reference), then the bus (buffers, adapter).
        self.remove_children(card as usize);
        self.remove_card(card as usize, now);
        self.cards[card as usize].removed = true;
    }

    /// The application closes the pin of channel `i` (to `KSSTATE_STOP`,
    /// the queue flushed back to it), the pin goes and the application
    /// frees its buffers. The AVStream device keeps its interface reference
    /// until its own `IRP_MN_REMOVE_DEVICE`. Idempotent.
    fn close_channel(&mut self, i: usize, now: u64, hooks: &mut RunHooks<'_>) {
        let pin = self.channels[i].pin.take();
        let (card, ch) = (self.channels[i].card, self.channels[i].index);
        if let Some(pin) = pin.as_ref() {
            let status = pin.as_ref().set_state(KsState::Stop);
            if status != STATUS_SUCCESS {
                self.violations.push(ViolationKind::Ks, format!("card {card} channel {ch}: KSSTATE_STOP failed: {}", status_name(status)));
            }
            self.record_status(format!("card {card} channel {ch}: pin closed (KSSTATE_STOP)"), status);
        }
        self.channels[i].ks.set_running(false);
        self.channels[i].ks.flush_on_stop();
        self.take_completed(i, now, hooks);
        if let Some(pin) = pin.as_ref() {
            let stats = pin.stats();
            let run = &mut self.channels[i];
            run.log.pin_stats = Some(stats);
            run.report.bytes_copied = stats.bytes_copied;
            run.report.sg_elements = stats.sg_elements_programmed;
            run.report.driver_dropped = stats.frames_dropped;
        }
        drop(pin);
        let run = &mut self.channels[i];
        if run.ks.live_clones() != 0 {
            self.violations.push(
                ViolationKind::Leak,
                format!("card {card} channel {ch}: {} stream pointer clones never deleted", run.ks.live_clones()),
            );
        }
        let ks = run.ks.stats();
        if ks.submitted != ks.completed {
            self.violations.push(
                ViolationKind::Leak,
                format!("card {card} channel {ch}: {} application buffer(s) never completed", ks.submitted - ks.completed),
            );
        }
        run.device.set_pin_open(false);
        for buffer in run.buffers.drain(..) {
            self.memory.free(buffer.id);
        }
        run.with_app.clear();
        run.requeue_scheduled.clear();
    }

    /// The bus core's teardown sequence (`BusDevice::release_hardware`) on
    /// card `card` with the machine's glue steps ([`SimTeardown`]: interrupt,
    /// watchdog timer and DPCs, BAR0), each checked; returns the interface
    /// references leaked (see `capdma_bus::teardown`).
    fn release_card(&mut self, card: usize, release: Release, now: u64) -> u32 {
        let c = &self.cards[card];
        let port = SimTeardown::new(
            c.index,
            &c.bus,
            &c.board,
            &self.irql,
            &self.violations,
            now,
            c.interrupt_connected,
            c.timer_armed,
            c.dpc_queued,
        );
        let leaked = c.bus.release_hardware(release, &port);
        if release != Release::Nothing {
            port.check_order();
        }
        let (connected, armed, queued) = (port.interrupt_connected.get(), port.timer_armed.get(), port.dpc_queued.get());
        let c = &mut self.cards[card];
        c.interrupt_connected = connected;
        c.timer_armed = armed;
        c.dpc_queued = queued;
        leaked
    }

    /// Windows' orderly removal of `card` (a user disabling it, or the end
    /// of the run): `IRP_MN_QUERY_REMOVE_DEVICE` down every child stack,
    /// then down the bus stack; the first veto ends it and
    /// `IRP_MN_CANCEL_REMOVE_DEVICE` goes to every stack queried. Without a
    /// veto: `IRP_MN_REMOVE_DEVICE` to the children (each AVStream device
    /// drops its interface reference), then the bus's removal. Every status
    /// is recorded (`when` is appended to the descriptions). Returns whether
    /// the card was removed.
    fn request_removal(&mut self, card: usize, now: u64, when: &str) -> bool {
        let children = self.cards[card].children.clone();
        let mut queried = Vec::new();
        let mut vetoed = false;
        for (ch, child) in children.iter().enumerate() {
            let irp = self.tree.query_remove(child.fdo);
            queried.push(child.fdo);
            self.record_status(format!("card {card} channel {ch}: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack){when}"), irp.status);
            if !nt_success(irp.status) {
                vetoed = true;
                break;
            }
        }
        if !vetoed {
            let fdo = self.cards[card].bus_fdo;
            let irp = self.tree.query_remove(fdo);
            queried.push(fdo);
            self.record_status(format!("card {card}: IRP_MN_QUERY_REMOVE_DEVICE (bus stack){when}"), irp.status);
            vetoed = !nt_success(irp.status);
        }
        if vetoed {
            for device in queried {
                let irp = self.tree.cancel_remove(device);
                if !nt_success(irp.status) {
                    let name = self.tree.name(device);
                    self.violations.push(ViolationKind::Pnp, format!("{name}: IRP_MN_CANCEL_REMOVE_DEVICE failed: {}", status_name(irp.status)));
                }
            }
            return false;
        }
        self.remove_children(card);
        self.remove_card(card, now);
        self.cards[card].removed = true;
        true
    }

    /// `IRP_MN_REMOVE_DEVICE` down each of the card's child stacks (the
    /// AVStream device drops its interface reference; the bus's child PDO,
    /// still present, stays).
    fn remove_children(&mut self, card: usize) {
        for (ch, child) in self.cards[card].children.clone().iter().enumerate() {
            let irp = self.tree.remove_device(child.fdo);
            self.record_status(format!("card {card} channel {ch}: IRP_MN_REMOVE_DEVICE (AVStream stack)"), irp.status);
        }
    }

    /// `IRP_MN_REMOVE_DEVICE` of a card's bus FDO (its children were removed
    /// first): the core's teardown sequence with everything released
    /// (engines stopped, interrupt disconnected, watchdog cancelled, DPCs
    /// flushed, common buffers freed, adapter put, BAR0 unmapped); the
    /// channels' bus counters into the report. An interface reference still
    /// held here is a bug of the child that holds it: recorded against it.
    fn remove_card(&mut self, card: usize, now: u64) {
        let leaked = self.release_card(card, Release::Everything, now);
        self.record_status(format!("card {card}: IRP_MN_REMOVE_DEVICE (bus FDO)"), STATUS_SUCCESS);
        if leaked > 0 {
            let holders: Vec<String> =
                self.cards[card].children.iter().filter(|c| c.device.holds_interface()).map(|c| c.device.name().to_string()).collect();
            let who = if holders.is_empty() { "an unknown holder".to_string() } else { holders.join(", ") };
            self.violations.push(
                ViolationKind::Pnp,
                format!("card {card}: {leaked} capdma interface reference(s) still held at the bus's IRP_MN_REMOVE_DEVICE by {who} (a child must drop its reference in its own IRP_MN_REMOVE_DEVICE); the bus tore down anyway"),
            );
        }
        let bus = Rc::clone(&self.cards[card].bus);
        for run in self.channels.iter_mut().filter(|r| r.card as usize == card) {
            if let Some(stats) = bus.channel_stats(run.index) {
                run.report.channel_resets = stats.resets;
                run.report.board_dropped = stats.dropped_by_board;
            }
        }
    }

    /// Stops everything in the order Windows would and checks for leaks:
    /// the application closes its pins (every queued buffer back to it,
    /// buffers freed); then per card the orderly removal
    /// ([`Machine::request_removal`]): `IRP_MN_QUERY_REMOVE_DEVICE` down the
    /// child stacks and then the bus stack, `IRP_MN_REMOVE_DEVICE` to the
    /// children (interface references dropped) and then to the bus (engines
    /// stopped, interrupt disconnected, watchdog cancelled, DPCs flushed,
    /// common buffers freed, adapter put, BAR0 unmapped). A veto here is a
    /// violation (nothing is open any more); the card is removed anyway.
    pub fn teardown(&mut self) {
        let now = self.timeline.now();
        let mut hooks = RunHooks::default();
        for i in 0..self.channels.len() {
            self.close_channel(i, now, &mut hooks);
        }
        for card in 0..self.cards.len() {
            if self.cards[card].removed {
                continue;
            }
            if !self.request_removal(card, now, " at teardown") {
                self.violations.push(ViolationKind::Pnp, format!("card {card}: the removal was vetoed at teardown"));
                self.remove_children(card);
                self.remove_card(card, now);
            }
        }
        // DMA a reset caught in flight lands now at the latest: into freed
        // memory if a driver handed it back before the reset completed.
        self.settle_boards();
        self.timeline.clear();
        for leak in self.memory.leaks() {
            self.violations.push(ViolationKind::Leak, leak);
        }
        for card in &self.cards {
            for leak in card.pci.leaks() {
                self.violations.push(ViolationKind::Leak, leak);
            }
            card.pci.forget_put_adapters();
            if card.bus.reference_count() != 0 {
                self.violations.push(
                    ViolationKind::Leak,
                    format!("card {}: {} capdma interface reference(s) never dropped", card.index, card.bus.reference_count()),
                );
            }
        }
    }

    /// Time passes for every board: bursts a reset caught in flight land
    /// (`Board::settle`).
    fn settle_boards(&self) {
        for c in &self.cards {
            c.board.settle();
        }
    }

    /// The account of the run so far.
    #[must_use]
    pub fn report(&self) -> RunReport {
        let channels = self
            .channels
            .iter()
            .map(|run| {
                let mut r = run.report.clone();
                r.frames_dropped = r.frames_captured.saturating_sub(r.frames_delivered);
                r
            })
            .collect();
        RunReport {
            channels,
            violations: self.violations.list(),
            #[allow(clippy::cast_precision_loss, reason = "virtual time stays far below 2^52 × 100 ns")]
            sim_time_s: self.timeline.now() as f64 / 1e7,
            wall_s: self.started.elapsed().as_secs_f64(),
            interrupts_claimed: self.cards.iter().map(|c| c.isr_claimed).sum(),
            interrupts_unclaimed: self.interrupts_unclaimed,
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.channels.iter().any(|r| r.pin.is_some() || r.device.holds_interface()) {
            self.teardown();
        }
    }
}

/// Attaches one filter device object per entry of `filters` to the top of
/// `target`'s stack, bottom-up.
fn attach_filters(tree: &DeviceTree, filters: &[FilterKind], target: DeviceId, name: &str) {
    for (n, kind) in filters.iter().enumerate() {
        tree.attach(format!("{name} {n} ({})", kind.name()), DeviceKind::Filter(*kind), target);
    }
}

/// Whether `bytes` (a frame at `format.stride`) is frame `frame_number` of
/// the channel's source, byte for byte on every line (padding not compared).
fn verify_frame(pattern: &Pattern, source: Option<&Rc<crate::y4m::Y4mVideo>>, format: &VideoFormat, frame_number: u32, bytes: &[u8]) -> bool {
    let source = source.map_or(FrameSource::Pattern, |v| FrameSource::Video(Rc::clone(v)));
    let line_bytes = format.line_bytes() as usize;
    let stride = format.stride as usize;
    let mut expected = vec![0u8; line_bytes];
    for line in 0..format.lines() {
        let at = line as usize * stride;
        let Some(actual) = bytes.get(at..at + line_bytes) else { return false };
        source.fill_line(pattern, frame_number, line, &mut expected);
        if actual != expected.as_slice() {
            return false;
        }
    }
    true
}

/// Builds the machine, runs it and tears it down: the whole main job.
///
/// # Errors
/// [`RunError`] when the machine cannot be built or a driver refuses to start.
pub fn run(config: MachineConfig, hooks: &mut RunHooks<'_>) -> Result<RunReport, RunError> {
    let mut machine = Machine::new(config)?;
    if let Err(e) = machine.start() {
        machine.teardown();
        return Err(match e {
            RunError::Driver { step, status, .. } => RunError::Driver { step, status, report: Box::new(machine.report()) },
            RunError::Config(e) => RunError::Config(e),
        });
    }
    machine.run(hooks);
    machine.teardown();
    Ok(machine.report())
}

/// Faults that end a card's life ([`BoardFault::SurpriseRemoval`]) need the
/// Plug and Play side too: the surprise-removal sequence `delay_100ns` after
/// the board vanishes.
#[must_use]
pub fn surprise_removal_actions(card: u32, delay_100ns: u64) -> [(u64, Action); 2] {
    [
        (0, Action::InjectFaultNow { card, fault: BoardFault::SurpriseRemoval }),
        (delay_100ns, Action::SurpriseRemoval { card }),
    ]
}
