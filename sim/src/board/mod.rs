//! The simulated capture board: BAR0 registers, the per-channel DMA engines
//! and the interrupt line, exactly as `docs/architecture.md` section 1 and
//! `capdma_interface::regs` / `capdma_interface::descriptor` define them.
//!
//! Two kinds ([`BoardKind`]): a scatter/gather board (descriptor rings) and a
//! legacy board (slot rings in one contiguous common buffer, no S/G
//! capability). The board is a bus master: every descriptor fetch, frame
//! write and completion record goes through
//! [`PhysicalMemory::dma_read`]/[`PhysicalMemory::dma_write`], so touching
//! memory that is not mapped is caught by the IOMMU checker. Behind a
//! DMA-remapping domain ([`Board::set_dma_domain`]) the addresses the
//! driver programs are logical addresses of that domain, translated page
//! by page before they reach memory ([`DmaDomain::dma_write`]).
//!
//! The machine drives it: it calls [`Board::capture_frame`] at every frame
//! time of a running channel (every `FRAME_INTERVAL` × 100 ns), calls
//! [`Board::continue_frame`] a DMA latency after the driver posted the next
//! part of a frame posted in parts ([`Board::take_continuations`]), and
//! polls [`Board::interrupt_pending`] to deliver the (level-triggered)
//! interrupt.
//!
//! Protocol breaches only a driver bug can cause (writing a read-only
//! register, programming a ring a 32-bit board cannot reach, malformed
//! descriptors, a producer ahead of the ring) halt the channel as the
//! hardware would *and* record a [`ViolationKind::Board`] violation.
pub mod engine;
pub mod faults;
pub mod registers;
pub mod source;

pub use engine::{CaptureOutcome, DropReason};
pub use faults::{BoardFault, OVERSIZED_BYTE_COUNT};
pub use source::FrameSource;

use crate::dma::DmaDomain;
use crate::memory::{MemoryError, PhysicalMemory};
use crate::pattern::Pattern;
use crate::violations::{ViolationKind, Violations};
use capdma_bus::ports::RegisterPort;
use capdma_interface::regs::{channel, channel_base, Caps, BAR0_BYTES, MAX_CHANNELS};
use registers::ChannelRegs;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// Which board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoardKind {
    /// Advertises `CAPS_SCATTER_GATHER`: descriptor rings, writes straight
    /// into frame buffers.
    ScatterGather,
    /// No S/G capability: slot rings in a contiguous common buffer only.
    Legacy,
}

/// A board's fixed properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardConfig {
    /// Which board.
    pub kind: BoardKind,
    /// Channels, 1..=8.
    pub channels: u32,
    /// The board drives 64-bit addresses; `false`: only addresses below
    /// 4 GiB (a ring, slot or descriptor address at or above 4 GiB is a
    /// board fault: `STATUS_HALTED | ERROR_DMA_FAULT`).
    pub address_64: bool,
    /// Buffer alignment the board needs, bytes (power of two, at most
    /// 1 MiB): slot bases and stride (legacy), frame starts (S/G).
    pub alignment: u32,
    /// Largest byte count of one S/G descriptor (`MAX_TRANSFER`).
    pub max_transfer: u32,
    /// Largest frame the board produces, bytes (`MAX_FRAME_BYTES`, sizes the slots).
    pub max_frame_bytes: u32,
    /// Seed of the test pattern.
    pub seed: u64,
}

impl BoardConfig {
    /// A 2-channel 64-bit S/G board: 64-byte alignment, 64 KiB per
    /// descriptor, frames up to 1920×1080 YUY2.
    #[must_use]
    pub const fn scatter_gather() -> Self {
        Self {
            kind: BoardKind::ScatterGather,
            channels: 2,
            address_64: true,
            alignment: 64,
            max_transfer: 64 * 1024,
            max_frame_bytes: 1920 * 1080 * 2,
            seed: 1,
        }
    }

    /// A 2-channel 32-bit legacy board: 4 KiB slot alignment, frames up to
    /// 1920×1080 YUY2.
    #[must_use]
    pub const fn legacy() -> Self {
        Self {
            kind: BoardKind::Legacy,
            channels: 2,
            address_64: false,
            alignment: 4096,
            max_transfer: 64 * 1024,
            max_frame_bytes: 1920 * 1080 * 2,
            seed: 1,
        }
    }

    /// The `CAPS` register this board reports.
    #[must_use]
    pub const fn caps(&self) -> Caps {
        Caps {
            scatter_gather: matches!(self.kind, BoardKind::ScatterGather),
            address_64: self.address_64,
            channels: self.channels,
            alignment: self.alignment,
        }
    }

    fn validate(&self) -> Result<(), BoardConfigError> {
        if self.channels == 0 || self.channels as usize > MAX_CHANNELS {
            return Err(BoardConfigError(format!("channels must be 1..={MAX_CHANNELS}, got {}", self.channels)));
        }
        if !self.alignment.is_power_of_two() || self.alignment > 1 << 20 {
            return Err(BoardConfigError(format!(
                "alignment must be a power of two up to 1 MiB, got {}",
                self.alignment
            )));
        }
        if self.max_transfer == 0 {
            return Err(BoardConfigError("max_transfer must not be 0".into()));
        }
        if self.max_frame_bytes == 0 {
            return Err(BoardConfigError("max_frame_bytes must not be 0".into()));
        }
        Ok(())
    }
}

/// A [`BoardConfig`] the board cannot be built with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardConfigError(pub String);

impl fmt::Display for BoardConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad board configuration: {}", self.0)
    }
}

impl std::error::Error for BoardConfigError {}

/// Counters of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Frames written and completed.
    pub frames_produced: u64,
    /// Parts of frames posted in parts completed (`CQ_STATUS_PART`
    /// records; a frame's last part completes the frame and counts in
    /// `frames_produced`).
    pub parts_completed: u64,
    /// Frames dropped (no buffer, or no room in the completion queue).
    pub frames_dropped: u64,
    /// Frame bytes written (lines × line pitch per frame).
    pub bytes_written: u64,
    /// Descriptors (S/G) or slots (common buffer) consumed.
    pub descriptors_consumed: u64,
    /// Completion records written.
    pub completions_written: u64,
    /// Times the engine halted on an error.
    pub halts: u64,
    /// Channel resets (`CTRL_RESET`, `GLOBAL_CTRL_RESET`).
    pub resets: u64,
    /// Resets the engine did not acknowledge at once ([`BoardFault::ResetStuck`]).
    pub resets_stuck: u64,
    /// Of those, the ones it acknowledged later (`STATUS_RUNNING` cleared).
    pub resets_stuck_acknowledged: u64,
}

/// Board-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardStats {
    /// Register reads.
    pub register_reads: u64,
    /// Register writes.
    pub register_writes: u64,
    /// Spurious assertions of the line raised (fault injection).
    pub spurious_interrupts: u64,
    /// Faults applied.
    pub faults_applied: u64,
}

#[derive(Debug)]
pub(crate) struct BoardState {
    pub(crate) config: BoardConfig,
    pub(crate) int_status: u32,
    pub(crate) int_enable: u32,
    pub(crate) removed: bool,
    /// BAR0 is mapped (`MmMapIoSpaceEx`); an access while it is not is a driver bug.
    pub(crate) bar0_mapped: bool,
    pub(crate) spurious: u32,
    pub(crate) pending: Vec<BoardFault>,
    /// The DMA-remapping domain the board's bus addresses go through
    /// (`None`: bus addresses are physical addresses).
    pub(crate) dma_domain: Option<DmaDomain>,
    pub(crate) channels: Vec<engine::Channel>,
    pub(crate) stats: BoardStats,
}

/// The board's path to memory as a bus master: physical addresses, or
/// logical addresses of a DMA-remapping domain.
#[derive(Clone, Debug)]
pub(crate) struct DmaPort {
    memory: PhysicalMemory,
    domain: Option<DmaDomain>,
}

impl DmaPort {
    /// The board writes `data` at bus address `address`.
    pub(crate) fn dma_write(&self, address: u64, data: &[u8]) -> Result<(), MemoryError> {
        match &self.domain {
            Some(domain) => domain.dma_write(&self.memory, address, data),
            None => self.memory.dma_write(address, data),
        }
    }

    /// The board reads `buf.len()` bytes at bus address `address`.
    pub(crate) fn dma_read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        match &self.domain {
            Some(domain) => domain.dma_read(&self.memory, address, buf),
            None => self.memory.dma_read(address, buf),
        }
    }
}

/// The simulated board (a cheap `Clone` handle).
#[derive(Clone, Debug)]
pub struct Board {
    pub(crate) state: Rc<RefCell<BoardState>>,
    pub(crate) memory: PhysicalMemory,
    pub(crate) violations: Violations,
}

impl Board {
    /// A board after power-on: all channels stopped, interrupts disabled.
    ///
    /// # Errors
    /// [`BoardConfigError`] for a configuration no board has.
    pub fn new(config: BoardConfig, memory: &PhysicalMemory) -> Result<Self, BoardConfigError> {
        config.validate()?;
        let channels = (0..config.channels).map(|_| engine::Channel::new()).collect();
        Ok(Self {
            state: Rc::new(RefCell::new(BoardState {
                config,
                int_status: 0,
                int_enable: 0,
                removed: false,
                bar0_mapped: true,
                spurious: 0,
                pending: Vec::new(),
                dma_domain: None,
                channels,
                stats: BoardStats::default(),
            })),
            memory: memory.clone(),
            violations: memory.violations().clone(),
        })
    }

    /// Puts the board behind the DMA-remapping domain `domain` (the domain
    /// of the DMA adapter its driver got from `IoGetDmaAdapter`; see
    /// `nt::hal::adapter_domain`): from now on every descriptor fetch,
    /// frame write and completion record addresses a *logical* address,
    /// translated by the domain ([`DmaDomain::dma_write`]); an address the
    /// domain does not map is a DMA fault, as on a machine with DMA
    /// remapping. `None` goes back to physical bus addresses.
    pub fn set_dma_domain(&self, domain: Option<DmaDomain>) {
        self.state.borrow_mut().dma_domain = domain;
    }

    /// The DMA-remapping domain the board is behind, if any.
    #[must_use]
    pub fn dma_domain(&self) -> Option<DmaDomain> {
        self.state.borrow().dma_domain.clone()
    }

    /// The board's path to memory as it is now.
    pub(crate) fn dma_port(&self) -> DmaPort {
        DmaPort { memory: self.memory.clone(), domain: self.state.borrow().dma_domain.clone() }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> BoardConfig {
        self.state.borrow().config
    }

    /// The interrupt line: `(INT_STATUS & INT_ENABLE) != 0`, or a spurious
    /// assertion pending. Level-triggered: it stays asserted until the ISR
    /// clears the status bits (W1C) or reads away a spurious assertion.
    #[must_use]
    pub fn interrupt_pending(&self) -> bool {
        let s = self.state.borrow();
        s.spurious > 0 || (!s.removed && s.int_status & s.int_enable != 0)
    }

    /// Queues `fault` for the next capture (of its channel, if it names one).
    pub fn inject(&self, fault: BoardFault) {
        self.state.borrow_mut().pending.push(fault);
    }

    /// Applies `fault` now (a completion corruption still waits for the
    /// channel's next record).
    pub fn inject_now(&self, fault: BoardFault) {
        self.state.borrow_mut().apply_fault(fault);
    }

    /// Sets `INT_STATUS` bits as the board's interrupt logic would, with
    /// nothing behind them: no record, no halt (fault injection: an
    /// interrupt storm of the board's own bits). Nothing on a removed board.
    pub fn raise_status(&self, bits: u32) {
        let mut s = self.state.borrow_mut();
        if !s.removed {
            s.int_status |= bits;
            s.stats.faults_applied += 1;
        }
    }

    /// Faults queued and not yet applied.
    #[must_use]
    pub fn pending_faults(&self) -> Vec<BoardFault> {
        self.state.borrow().pending.clone()
    }

    /// Sets what channel `channel`'s input shows. `false` for a channel the
    /// board does not have.
    #[allow(clippy::must_use_candidate, reason = "setting the source is the effect")]
    pub fn set_source(&self, channel: u32, source: FrameSource) -> bool {
        let mut s = self.state.borrow_mut();
        match s.channels.get_mut(channel as usize) {
            Some(c) => {
                c.source = source;
                true
            }
            None => false,
        }
    }

    /// `STATUS_RUNNING` of the channel (a hung channel still says running).
    #[must_use]
    pub fn is_running(&self, channel: u32) -> bool {
        let s = self.state.borrow();
        !s.removed && s.channels.get(channel as usize).is_some_and(engine::Channel::running)
    }

    /// The frame interval (100-ns units) the channel was started with, while it runs.
    #[must_use]
    pub fn frame_interval(&self, channel: u32) -> Option<u32> {
        let s = self.state.borrow();
        let c = s.channels.get(channel as usize)?;
        if !c.running() {
            return None;
        }
        c.run.as_ref().map(|r| r.frame_interval)
    }

    /// The pattern the channel produces in its running format (for verifiers).
    #[must_use]
    pub fn pattern(&self, channel: u32) -> Option<Pattern> {
        let s = self.state.borrow();
        let c = s.channels.get(channel as usize)?;
        let r = c.run.as_ref()?;
        Some(Pattern { format: r.format, width: r.width, height: r.height, channel, seed: s.config.seed })
    }

    /// The channel's frame counter (next frame's number; counts drops too).
    #[must_use]
    pub fn frame_number(&self, channel: u32) -> Option<u32> {
        self.state.borrow().channels.get(channel as usize).map(|c| c.frame_number)
    }

    /// The channel's register values (a snapshot, for tests and traces).
    #[must_use]
    pub fn channel_registers(&self, channel: u32) -> Option<ChannelRegs> {
        self.state.borrow().channels.get(channel as usize).map(|c| c.regs)
    }

    /// Counters of one channel.
    #[must_use]
    pub fn channel_stats(&self, channel: u32) -> Option<ChannelStats> {
        self.state.borrow().channels.get(channel as usize).map(|c| c.stats)
    }

    /// Board-wide counters.
    #[must_use]
    pub fn stats(&self) -> BoardStats {
        self.state.borrow().stats
    }

    /// `true` after a surprise removal.
    #[must_use]
    pub fn is_removed(&self) -> bool {
        self.state.borrow().removed
    }

    /// The driver mapped (`MmMapIoSpaceEx`, `true`) or unmapped
    /// (`MmUnmapIoSpace`, `false`) BAR0. A register access while unmapped
    /// is a [`ViolationKind::Pnp`] violation (on Windows: a page fault in
    /// the kernel). A new board counts as mapped.
    pub fn set_bar0_mapped(&self, mapped: bool) {
        self.state.borrow_mut().bar0_mapped = mapped;
    }

    /// Whether BAR0 is mapped.
    #[must_use]
    pub fn bar0_mapped(&self) -> bool {
        self.state.borrow().bar0_mapped
    }

    /// A register access through a BAR0 mapping the driver already released.
    fn unmapped_access(&self, what: &str, offset: u32) -> bool {
        if self.state.borrow().bar0_mapped {
            return false;
        }
        self.violations.push(ViolationKind::Pnp, format!("register {what} at BAR0+{offset:#x} after MmUnmapIoSpace"));
        true
    }

    pub(crate) fn violation(&self, message: String) {
        self.violations.push(ViolationKind::Board, message);
    }
}

impl RegisterPort for Board {
    /// `READ_REGISTER_ULONG(BAR0 + offset)`. A removed board reads all ones.
    fn read32(&self, offset: u32) -> u32 {
        if self.unmapped_access("read", offset) {
            return u32::MAX;
        }
        if offset >= channel_base(0) && offset < BAR0_BYTES && (offset - channel_base(0)) % 0x80 == channel::STATUS {
            self.status_read(((offset - channel_base(0)) / 0x80) as usize);
        }
        let (value, problem) = self.state.borrow_mut().read(offset);
        if let Some(p) = problem {
            self.violation(p);
        }
        value
    }

    /// `WRITE_REGISTER_ULONG(BAR0 + offset, value)`.
    fn write32(&self, offset: u32, value: u32) {
        if self.unmapped_access("write", offset) {
            return;
        }
        let problems = self.state.borrow_mut().write(offset, value);
        for p in problems {
            self.violation(p);
        }
        if offset >= channel_base(0) && offset < BAR0_BYTES && (offset - channel_base(0)) % 0x80 == channel::CTRL {
            // A reset that caught an S/G burst: the engine had its descriptor.
            self.resolve_burst(((offset - channel_base(0)) / 0x80) as usize);
        }
    }
}
