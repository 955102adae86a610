//! A channel's DMA engine as a strategy chosen once, at device start (the
//! shape of Linux tw686x's `dma_ops`, one table per mode picked at probe),
//! without allocation: [`Engine`] is either the scatter/gather engine
//! ([`SgEngine`], `sg.rs`) or the common-buffer slot engine
//! ([`SlotEngine`], `slots.rs`). `crate::mode` picks the variant from the
//! `DmaMode` decision ([`crate::mode::allocate_engine`]); everything else
//! calls the engine's operations and never asks for the mode. Each
//! operation below forwards to the engine; an operation one mode has no use
//! for does nothing in the other.
use super::format::ChannelGeometry;
use super::sg::{DescriptorRing, InFlightFrame, SgEngine};
use super::slots::{SlotEngine, SlotMemory};
use super::{CompletionQueue, RecordFault, RunState};
use crate::dma_buffer::DmaBuffer;
use crate::hw::{program_and_run, ChannelRegs};
use crate::ports::RegisterPort;
use capdma_interface::descriptor::CompletionRecord;
use capdma_interface::status::NtStatus;
use capdma_interface::table::{ChannelFormat, CompletionKind, DmaConfig};

/// The ring memory of a channel's engine, as the start allocated it (small
/// and `Copy`: the start holds one per channel until it installs them).
#[derive(Clone, Copy, Debug)]
pub(crate) enum EngineMemory {
    /// The S/G engine's descriptor ring.
    ScatterGather(DescriptorRing),
    /// The slot engine's slot ring.
    CommonBuffer(SlotMemory),
}

impl EngineMemory {
    /// The ring's common buffer.
    pub const fn buffer(&self) -> DmaBuffer {
        match self {
            Self::ScatterGather(ring) => ring.buffer(),
            Self::CommonBuffer(ring) => ring.buffer(),
        }
    }
}

/// A channel's engine: the strategy of its DMA mode.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "the core allocates nothing: the engine lives in place in its channel's state, built once at start"
)]
pub(crate) enum Engine {
    /// Scatter/gather: the child posts frames (`ProgramFrame`).
    ScatterGather(SgEngine),
    /// Common buffer: the board fills slots the child returns (`ReturnSlot`).
    CommonBuffer(SlotEngine),
}

impl Engine {
    /// The engine over `memory`, idle (channel stopped).
    pub fn new(memory: EngineMemory) -> Self {
        match memory {
            EngineMemory::ScatterGather(ring) => Self::ScatterGather(SgEngine::new(ring)),
            EngineMemory::CommonBuffer(ring) => Self::CommonBuffer(SlotEngine::new(ring)),
        }
    }

    /// The ring's common buffer (freed by the device stop).
    pub const fn ring_buffer(&self) -> DmaBuffer {
        match self {
            Self::ScatterGather(e) => e.ring_buffer(),
            Self::CommonBuffer(e) => e.ring_buffer(),
        }
    }

    /// Checks `format` for this engine (`StartChannel`): see
    /// [`SgEngine::validate_format`] and [`SlotEngine::validate_format`].
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` or `STATUS_INTEGER_OVERFLOW`, as those.
    pub fn validate_format(&self, format: &ChannelFormat) -> Result<ChannelGeometry, NtStatus> {
        match self {
            Self::ScatterGather(_) => SgEngine::validate_format(format),
            Self::CommonBuffer(e) => e.validate_format(format),
        }
    }

    /// Whether the board owes a completion: posted S/G frames, or slots
    /// the board holds.
    pub fn board_has_work(&self) -> bool {
        match self {
            Self::ScatterGather(e) => e.frames().posted() > 0,
            Self::CommonBuffer(e) => e.board_owned() > 0,
        }
    }

    /// Frames in the S/G table, posted or terminated but not yet delivered
    /// (0 for the slot engine, whose slots are never held for delivery).
    pub fn frames_held(&self) -> usize {
        match self {
            Self::ScatterGather(e) => e.frames().len(),
            Self::CommonBuffer(_) => 0,
        }
    }

    /// Whether terminated S/G frames wait for delivery.
    pub fn terminated_waiting(&self) -> bool {
        match self {
            Self::ScatterGather(e) => e.frames().len() != e.frames().posted(),
            Self::CommonBuffer(_) => false,
        }
    }

    /// The oldest terminated S/G frame, out of the table.
    pub fn pop_terminated(&mut self) -> Option<InFlightFrame> {
        match self {
            Self::ScatterGather(e) => e.frames_mut().pop_terminated(),
            Self::CommonBuffer(_) => None,
        }
    }

    /// Checks a completion record and commits it: the S/G frame leaves the
    /// table, the slot becomes the child's (or, nobody `listening`, goes
    /// back to the board). Returns the completion's kind and tag (the
    /// frame's tag, the slot's index).
    ///
    /// # Errors
    /// The first check that fails; nothing changes then.
    pub fn accept<R: RegisterPort>(
        &mut self,
        cr: &ChannelRegs<'_, R>,
        record: &CompletionRecord,
        listening: bool,
    ) -> Result<(CompletionKind, u32), RecordFault> {
        match self {
            Self::ScatterGather(e) => e
                .complete(record)
                .map(|(tag, last)| (if last { CompletionKind::Frame } else { CompletionKind::FramePart }, tag)),
            Self::CommonBuffer(e) => e.accept(cr, record, listening).map(|slot| (CompletionKind::Slot, slot)),
        }
    }

    /// Terminates every posted S/G frame with `status` (the engine was
    /// reset: its counters are 0 again). Returns the frames terminated.
    pub fn abort_posted(&mut self, status: NtStatus) -> usize {
        match self {
            Self::ScatterGather(e) => e.abort_all(status),
            Self::CommonBuffer(_) => 0,
        }
    }

    /// The engine stopped for good (its reset complete, or never to be seen):
    /// posted S/G frames terminated with `status`, the board's slots
    /// reclaimed. Returns the frames terminated.
    pub fn stop(&mut self, status: NtStatus) -> usize {
        match self {
            Self::ScatterGather(e) => e.abort_all(status),
            Self::CommonBuffer(e) => {
                e.stop();
                0
            }
        }
    }

    /// A new run (`StartChannel`): fresh bookkeeping, then the board
    /// programmed and run ([`program_and_run`]).
    pub fn start<R: RegisterPort>(&mut self, cr: &ChannelRegs<'_, R>, cq: &CompletionQueue, run: &RunState) {
        match self {
            Self::ScatterGather(e) => e.start(),
            Self::CommonBuffer(e) => e.start(),
        }
        program_and_run(cr, cq, self, run);
    }

    /// The run goes on after a completed reset or a power-up: the board
    /// reprogrammed and run again; the child keeps its slots (the others go
    /// back in ring order), S/G frames still posted are handed over.
    pub fn restart<R: RegisterPort>(&mut self, cr: &ChannelRegs<'_, R>, cq: &CompletionQueue, run: &RunState) {
        if let Self::CommonBuffer(e) = self {
            e.prepare_restart();
        }
        program_and_run(cr, cq, self, run);
        if let Self::ScatterGather(e) = self {
            e.hand_over_posted(cr);
        }
    }

    /// The ring's registers (`RING_BASE_LO/HI`, `RING_ENTRIES`, `SLOT_STRIDE`).
    pub fn program_ring<R: RegisterPort>(&self, cr: &ChannelRegs<'_, R>) {
        match self {
            Self::ScatterGather(e) => e.program_ring(cr),
            Self::CommonBuffer(e) => e.program_ring(cr),
        }
    }

    /// The last step before `CTRL`: hands the board its slots; returns the
    /// `CTRL` value that runs the engine.
    pub fn arm<R: RegisterPort>(&self, cr: &ChannelRegs<'_, R>) -> u32 {
        match self {
            Self::ScatterGather(_) => SgEngine::RUN_CTRL,
            Self::CommonBuffer(e) => e.arm(cr),
        }
    }

    /// `GetDmaConfig`'s ring figures (slots or descriptors).
    pub fn report(&self, config: &mut DmaConfig) {
        match self {
            Self::ScatterGather(e) => e.report(config),
            Self::CommonBuffer(e) => e.report(config),
        }
    }
}
