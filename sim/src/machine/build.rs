//! The machine and its parts, and building it: [`Machine`] with its cards
//! (each a board, a bus driver and the Plug and Play stacks) and its
//! channels (each a child device, a pin and the application's buffers),
//! [`Machine::new`] putting the cards in with nothing started, and the
//! `Drop` that tears a still-running machine down.
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use capdma_avstream::format::VideoFormat;
use capdma_avstream::pin::CapturePin;
use capdma_avstream::stats::StatsSnapshot;
use capdma_bus::device::BusDevice;
use capdma_bus::mode::ModeDecision;

use super::actions::{Action, StatusRecord};
use super::config::{ConfigError, MachineConfig};
use super::image::ImageWorld;
use super::events::Timeline;
use super::platform::SimBusPlatform;
use super::report::ChannelReport;
use super::run::RunError;
use crate::board::{Board, BoardConfig, BoardKind, CaptureOutcome, FrameSource};
use crate::dma::adapter::AdapterConfig;
use crate::irql::IrqlTracker;
use crate::ks::SimKsPin;
use crate::memory::{Allocation, MemoryConfig, PhysicalMemory};
use crate::pattern::Pattern;
use crate::pnp::{AvStreamDevice, DeviceId, DeviceKind, DeviceTree, FilterKind, PciFunction, StackLayout};
use crate::violations::Violations;

/// What the machine recorded about one channel (for the fault matrix).
#[derive(Clone, Debug, Default)]
pub struct ChannelLog {
    /// Every frame delivered good: (virtual time, the board's frame number).
    pub delivered: Vec<(u64, u32)>,
    /// Every capture of the board: (virtual time, what it did). A frame
    /// posted in parts shows here as its first part
    /// ([`CaptureOutcome::PartCompleted`]); the rest of it in `continuations`.
    pub captures: Vec<(u64, CaptureOutcome)>,
    /// Every continuation of a frame posted in parts (`Board::continue_frame`,
    /// a DMA latency after the driver posted the next part): (virtual time,
    /// what it did).
    pub continuations: Vec<(u64, CaptureOutcome)>,
    /// The pin's counters (now, or when it was dropped).
    pub pin_stats: Option<StatsSnapshot>,
    /// Frames the application submitted to the KS queue.
    pub ks_submitted: u64,
    /// Frames the KS queue completed back to the application (filled or not).
    pub ks_completed: u64,
    /// Times KS could not map a frame for want of map registers.
    pub ks_map_waits: u64,
    /// Scatter/gather lists KS built for the frames (more than one per
    /// frame when frames exceed the adapter's map-register grant).
    pub ks_sg_lists: u64,
    /// Frames still in the KS queue.
    pub ks_queued: usize,
    /// Stream pointer clones alive.
    pub ks_live_clones: usize,
    /// Good frames that came back without a picture number (plain
    /// `KSSTREAM_HEADER`s: no `KS_FRAME_INFO`) and that the application
    /// identified by their `PresentationTime` (the capture made then).
    pub frames_by_time: u64,
}

/// One channel of the run: its child device, pin and application.
pub(super) struct ChannelRun {
    pub(super) card: u32,
    pub(super) index: u32,
    pub(super) ks: SimKsPin,
    pub(super) pin: Option<Pin<Box<CapturePin<SimKsPin>>>>,
    /// With the AVStream image (`--drivers images`): the filter and the pin
    /// the application opened in the emulated `ks.sys` (then `pin` is
    /// `None` and `ks` is the emulated KS's queue of the pin).
    pub(super) image_pin: Option<(u64, crate::nt::ks::PinHandle)>,
    /// The AVStream device on the channel's child PDO (holds the interface).
    pub(super) device: Rc<AvStreamDevice>,
    pub(super) format: VideoFormat,
    pub(super) pattern: Pattern,
    pub(super) buffers: Vec<Allocation>,
    /// The application holds buffer `i` (completed and not queued again).
    pub(super) with_app: Vec<bool>,
    /// A requeue of buffer `i` is scheduled.
    pub(super) requeue_scheduled: Vec<bool>,
    /// The application stopped queueing buffers ([`Action::AppHold`]).
    pub(super) app_hold: bool,
    pub(super) app_busy_until: u64,
    pub(super) captures: u32,
    pub(super) report: ChannelReport,
    pub(super) log: ChannelLog,
}

impl ChannelRun {
    /// Channel `index` of card `card` before its first frame: the
    /// application's KS queue `ks`, the child's AVStream `device`, the
    /// `format` asked for, the test pattern of the run's seed; no pin,
    /// buffers or captures yet; the report naming the DMA `mode` and the
    /// reason the driver chose it.
    pub(super) fn new(
        config: &MachineConfig,
        (card, index): (u32, u32),
        ks: SimKsPin,
        device: Rc<AvStreamDevice>,
        format: VideoFormat,
        mode: &str,
        mode_reason: String,
    ) -> Self {
        let c = config;
        Self {
            card,
            index,
            ks,
            pin: None,
            image_pin: None,
            device,
            format,
            pattern: Pattern { format: c.format, width: c.width, height: c.height, channel: index, seed: card_seed(c.seed, card) },
            buffers: Vec::new(),
            with_app: Vec::new(),
            requeue_scheduled: Vec::new(),
            app_hold: false,
            app_busy_until: 0,
            captures: 0,
            report: ChannelReport { card, channel: index, mode: mode.to_string(), mode_reason, ..ChannelReport::default() },
            log: ChannelLog::default(),
        }
    }
}

/// The two device objects of one child stack, and the AVStream device.
#[derive(Clone, Debug)]
pub(super) struct ChildStack {
    pub(super) pdo: DeviceId,
    pub(super) fdo: DeviceId,
    pub(super) device: Rc<AvStreamDevice>,
}

/// A card's bus driver.
pub(super) enum BusDriver {
    /// The portable core on the host.
    Core(Rc<BusDevice<SimBusPlatform>>),
    /// The real image in the machine's emulated kernel ([`super::image`]).
    Image,
}

impl BusDriver {
    /// The core, when the card runs it.
    pub(super) fn core(&self) -> Option<&Rc<BusDevice<SimBusPlatform>>> {
        match self {
            Self::Core(bus) => Some(bus),
            Self::Image => None,
        }
    }
}

/// One capture card: its board, bus driver and Plug and Play stacks.
#[allow(clippy::struct_excessive_bools, reason = "independent facts of the simulated glue: interrupt, timer, DPC, removal")]
pub(super) struct Card {
    pub(super) index: u32,
    pub(super) board: Board,
    pub(super) bus: BusDriver,
    pub(super) pci: PciFunction,
    pub(super) decision: Option<ModeDecision>,
    pub(super) interrupt_connected: bool,
    /// The bus's watchdog timer is armed (`KeSetTimerEx`).
    pub(super) timer_armed: bool,
    pub(super) dpc_queued: bool,
    pub(super) pci_pdo: DeviceId,
    /// The bus FDO in the machine's device tree (with the image: the PCI
    /// PDO; the image's own FDO lives in the emulated kernel).
    pub(super) bus_fdo: DeviceId,
    pub(super) children: Vec<ChildStack>,
    /// With the AVStream image: the guest addresses of the bus image's
    /// child PDOs, in channel order (their AVStream stacks live in the
    /// emulated kernel, not in the machine's device tree).
    pub(super) image_children: Vec<u64>,
    /// Plug and Play removed the card (surprise removal handled).
    pub(super) removed: bool,
    pub(super) isr_claimed: u64,
    pub(super) isr_unclaimed: u64,
}

/// The simulated machine with capdma cards in it.
///
/// Dropping a machine whose pins are still open tears it down first (the
/// pins' `Drop` calls into the bus through the interface, so the channels
/// go before the cards; they are also declared first).
pub struct Machine {
    pub(super) channels: Vec<ChannelRun>,
    pub(super) config: MachineConfig,
    pub(super) violations: Violations,
    pub(super) irql: IrqlTracker,
    pub(super) memory: PhysicalMemory,
    pub(super) tree: DeviceTree,
    pub(super) software_pdo: DeviceId,
    pub(super) cards: Vec<Card>,
    pub(super) timeline: Timeline,
    pub(super) actions: Vec<Action>,
    pub(super) statuses: Vec<StatusRecord>,
    pub(super) run_start: u64,
    pub(super) unclaimed_in_a_row: u32,
    pub(super) claimed_in_a_row: u32,
    pub(super) interrupts_unclaimed: u64,
    pub(super) started: Instant,
    /// Events one instant of virtual time may hold before the run is
    /// called a livelock (`run::INSTANT_EVENT_LIMIT`; lowered by tests).
    pub(super) instant_event_limit: u64,
    /// The emulated kernel with the bus image (`--drivers bus-image`).
    pub(super) image: Option<Box<ImageWorld>>,
}

/// The seed of card `card`'s board (card 0: the configured seed), so the
/// cards' patterns differ and a frame of one card cannot verify as another's.
pub(super) fn card_seed(seed: u64, card: u32) -> u64 {
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
    /// the configured filters) without starting anything. With
    /// [`super::Drivers::BusImage`] the bus stacks are the image's, in an emulated
    /// kernel booted over the machine's memory (`DriverEntry` and
    /// `AddDevice` run here).
    ///
    /// # Errors
    /// [`RunError::Config`] for a configuration the machine cannot build,
    /// or a bus image that is not built or cannot be loaded.
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
        let image_path = config.drivers.bus_image().cloned();
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
            let pci_pdo = tree.create_pdo(format!("card {card} PCI PDO"), DeviceKind::PciPdo(pci.clone()));
            let (bus, bus_fdo) = if image_path.is_some() {
                // The image's bus stack (and its filters) is built in the kernel.
                (BusDriver::Image, pci_pdo)
            } else {
                let platform = SimBusPlatform::with_pci(board.clone(), memory.clone(), irql.clone(), pci.clone());
                let bus = Rc::new(BusDevice::new(platform));
                attach_filters(&tree, &config.stack.below_bus, pci_pdo, &format!("card {card} bus lower filter"));
                let bus_fdo = tree.attach(format!("card {card} bus FDO"), DeviceKind::BusFdo(Rc::clone(&bus)), pci_pdo);
                attach_filters(&tree, &config.stack.above_bus, pci_pdo, &format!("card {card} bus upper filter"));
                (BusDriver::Core(bus), bus_fdo)
            };
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
                image_children: Vec::new(),
                removed: false,
                isr_claimed: 0,
                isr_unclaimed: 0,
            });
        }
        let image = match &image_path {
            Some(path) => {
                let boards: Vec<Board> = cards.iter().map(|c| c.board.clone()).collect();
                Some(Box::new(ImageWorld::boot(&config, path, &memory, &boards)?))
            }
            None => None,
        };
        Ok(Self {
            image,
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
            instant_event_limit: super::run::INSTANT_EVENT_LIMIT,
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.channels.iter().any(|r| r.pin.is_some() || r.image_pin.is_some() || r.device.holds_interface()) {
            self.teardown();
        }
    }
}

/// Attaches one filter device object per entry of `filters` to the top of
/// `target`'s stack, bottom-up.
pub(super) fn attach_filters(tree: &DeviceTree, filters: &[FilterKind], target: DeviceId, name: &str) {
    for (n, kind) in filters.iter().enumerate() {
        tree.attach(format!("{name} {n} ({})", kind.name()), DeviceKind::Filter(*kind), target);
    }
}

/// Channel `ch` of card `card`'s child stack, as Plug and Play builds it
/// after `BusRelations`: the child PDO (`pdo_name`, `kind`: the core's or
/// the bus image's), the configured lower filters, the AVStream FDO and
/// the configured upper filters.
pub(super) fn build_child_stack(
    tree: &DeviceTree,
    stack: &StackLayout,
    card: usize,
    ch: u32,
    pdo_name: String,
    kind: DeviceKind,
) -> ChildStack {
    let pdo = tree.create_pdo(pdo_name, kind);
    attach_filters(tree, &stack.below_avstream, pdo, &format!("card {card} channel {ch} lower filter"));
    let name = format!("card {card} channel {ch} AVStream FDO");
    let device = Rc::new(AvStreamDevice::new(name.clone()));
    let fdo = tree.attach(name, DeviceKind::AvStreamFdo(Rc::clone(&device)), pdo);
    attach_filters(tree, &stack.above_avstream, pdo, &format!("card {card} channel {ch} upper filter"));
    ChildStack { pdo, fdo, device }
}
