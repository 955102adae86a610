//! The pin's DMA engine: the channel's mode as a strategy, chosen once.
//!
//! The bus says how the channel moves frames (`GetDmaConfig.mode`); device
//! start and the pin pick the matching engine here, once, and from then on
//! ask the engine, never the mode:
//!
//! | | scatter/gather ([`crate::process_sg`]) | common buffer ([`crate::process_cb`]) |
//! |---|---|---|
//! | device start | `GetDmaAdapter`, `KSPIN_FLAG_GENERATE_MAPPINGS` | ring shape, `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING` |
//! | format fits | image <= `max_frame_bytes` | frame at the slot pitch <= `slot_bytes` |
//! | state | clones of frames in flight | filled-slot FIFO, the checked ring |
//! | `PAUSE -> RUN` | nothing more | `GetSlotRing` and its checks |
//! | Process | posts frames (`ProgramFrame`; in parts with `ProgramFramePart` when larger than the ring) | copies slots into frames |
//! | completion | completes a frame's clone | queues a slot |
//! | `RUN -> PAUSE` | reclaims clones the bus did not cancel | returns queued slots |
//!
//! The engines hold no allocation: each is a fixed-size table in the pin
//! (the shape of a per-mode operations table picked at probe).
use crate::bus_client::{BusChannel, StopOutcome};
use crate::copy::VectorUnit;
use crate::device::AdapterRegistration;
use crate::format::VideoFormat;
use crate::pin::CapturePin;
use crate::ports::KsPinPort;
use crate::process_cb::{self, CbEngine};
use crate::process_sg::{self, SgEngine};
use capdma_interface::mode::DmaMode;
use capdma_interface::status::NtStatus;
use capdma_interface::table::{Completion, DmaConfig};

/// Device start's part that depends on the mode: [`process_sg::device_setup`]
/// or [`process_cb::device_setup`]. Answers the adapter to register (S/G)
/// and the pin flags of the mode. PASSIVE.
///
/// # Errors
/// Those of the mode's `device_setup`.
pub(crate) fn device_setup(
    mode: DmaMode,
    bus: &BusChannel,
    config: &DmaConfig,
) -> Result<(Option<AdapterRegistration>, u32), NtStatus> {
    match mode {
        DmaMode::ScatterGather => process_sg::device_setup(bus, config),
        DmaMode::CommonBuffer => process_cb::device_setup(config),
    }
}

/// Whether a channel in `mode` with `config` can stream `format`:
/// [`process_sg::fits`] or [`process_cb::fits`].
pub(crate) fn fits(mode: DmaMode, config: &DmaConfig, format: &VideoFormat) -> bool {
    match mode {
        DmaMode::ScatterGather => process_sg::fits(config, format),
        DmaMode::CommonBuffer => process_cb::fits(config, format),
    }
}

/// A pin's engine: the state and the steps of its channel's DMA mode.
/// `P` is the KS port's stream pointer.
#[allow(
    clippy::large_enum_variant,
    reason = "the engine lives inside the pin, which is allocated once (pool memory, KSPIN.Context); boxing the FIFO would allocate, and the enum is smaller than both engines side by side"
)]
pub(crate) enum PinEngine<P: Copy> {
    /// Packet-based DMA: KS's mappings posted as frames.
    ScatterGather(SgEngine<P>),
    /// The bus's slot ring, copied into frames.
    CommonBuffer(CbEngine),
}

impl<P: Copy> PinEngine<P> {
    /// The engine of a channel in `mode`, idle.
    pub(crate) fn for_mode(mode: DmaMode) -> Self {
        match mode {
            DmaMode::ScatterGather => Self::ScatterGather(SgEngine::new()),
            DmaMode::CommonBuffer => Self::CommonBuffer(CbEngine::new()),
        }
    }

    /// The mode this engine serves (for reporting).
    pub(crate) fn mode(&self) -> DmaMode {
        match self {
            Self::ScatterGather(_) => DmaMode::ScatterGather,
            Self::CommonBuffer(_) => DmaMode::CommonBuffer,
        }
    }

    /// Whether Process copies frames with the CPU (common buffer).
    pub(crate) fn copies_frames(&self) -> bool {
        matches!(self, Self::CommonBuffer(_))
    }

    /// Whether filled slots are queued (common buffer; never for S/G).
    #[cfg(test)]
    pub(crate) fn has_queued_slots(&self) -> bool {
        match self {
            Self::ScatterGather(_) => false,
            Self::CommonBuffer(e) => e.has_queued_slots(),
        }
    }

    /// `PAUSE -> RUN`, after `StartChannel(format)` succeeded.
    ///
    /// # Errors
    /// Common buffer: `GetSlotRing`'s status or `STATUS_IO_DEVICE_ERROR`
    /// for a ring that fails its checks (the channel is stopped again).
    pub(crate) fn started<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        format: &VideoFormat,
    ) -> Result<(), NtStatus> {
        match self {
            Self::ScatterGather(_) => Ok(()),
            Self::CommonBuffer(e) => e.started(pin, format),
        }
    }

    /// `RUN -> PAUSE`, after `StopChannel` answered `outcome`.
    pub(crate) fn stopped<K: KsPinPort<StreamPointer = P>>(
        &self,
        pin: &CapturePin<K>,
        outcome: Result<StopOutcome, NtStatus>,
    ) {
        match self {
            Self::ScatterGather(e) => e.stopped(pin, outcome),
            Self::CommonBuffer(e) => e.stopped(pin, outcome),
        }
    }

    /// Gives back what the engine holds from a previous run that needs no
    /// completion (common buffer: the queued slots; S/G: nothing).
    pub(crate) fn drain<K: KsPinPort<StreamPointer = P>>(&self, pin: &CapturePin<K>) {
        match self {
            Self::ScatterGather(_) => {}
            Self::CommonBuffer(e) => e.drain(pin),
        }
    }

    /// Process in `KSSTATE_RUN`, the copy (common buffer) limited to `unit`.
    pub(crate) fn process<K: KsPinPort<StreamPointer = P>>(&self, pin: &CapturePin<K>, unit: VectorUnit) -> NtStatus {
        match self {
            Self::ScatterGather(e) => e.process(pin),
            Self::CommonBuffer(e) => e.process(pin, unit),
        }
    }

    /// A completion for this pin's channel (`DISPATCH_LEVEL`).
    pub(crate) fn complete<K: KsPinPort<StreamPointer = P>>(&self, pin: &CapturePin<K>, completion: &Completion) {
        match self {
            Self::ScatterGather(e) => e.complete(pin, completion),
            Self::CommonBuffer(e) => e.complete(pin, completion),
        }
    }
}
