//! The capture pin: format, `KSSTATE` transitions, and the entry points KS
//! and the bus call (Process, the completion callback).
//!
//! | KS event | pin |
//! |---|---|
//! | `AVStrMiniPinSetDataFormat` | [`CapturePin::set_data_format`] (`KSSTATE_STOP` only) |
//! | `AVStrMiniPinSetDeviceState` | [`CapturePin::set_device_state`] (walks one step at a time) |
//! | `AVStrMiniPinProcess` | [`CapturePin::process`] ([`crate::process_sg`], [`crate::process_cb`]) |
//! | bus completion (DPC) | [`completion_thunk`] -> [`CapturePin::on_completion`] |
//! | `KSPROPERTY_DROPPEDFRAMES_CURRENT` | [`CapturePin::dropped_frames_current`] |
//!
//! Transitions:
//!
//! * `STOP -> ACQUIRE`: needs a format; `RegisterCompletion(completion_thunk::<K>, &pin)`.
//! * `ACQUIRE <-> PAUSE`: nothing.
//! * `PAUSE -> RUN`: `StartChannel(format)`; common-buffer: `GetSlotRing` and
//!   its checks (on failure the channel is stopped again); then
//!   `KsPinAttemptProcessing(TRUE)` for frames already queued.
//! * `RUN -> PAUSE`: under the processing mutex, `StopChannel` (the bus
//!   cancels frames in flight through the callback, which deletes their
//!   clones); common-buffer: every filled slot still queued is returned;
//!   S/G: clones the bus failed to cancel are completed empty and deleted.
//!   Never fails (bus errors are ignored: the device may be gone).
//! * `ACQUIRE -> STOP`: `RegisterCompletion(NULL)`, retried while the bus
//!   is delivering a completion.
//!
//! **Pinning.** The completion context is the pin's address, so the pin
//! must not move while registered: the transitions take `Pin<&Self>`, the
//! type is `!Unpin`, and `Drop` walks the pin back to `KSSTATE_STOP`
//! (unregistering) before its memory can go. The Windows glue keeps the pin
//! in `KSPIN.Context` memory that never moves; the simulation boxes it with
//! `Box::pin`.
//!
//! **Concurrency.** Process calls are serialised by KS; completions arrive
//! on the bus DPC concurrently with Process. State shared between them is
//! atomics, the SPSC slot FIFO, and two small spin locks (the clone table,
//! the format/ring) taken at `DISPATCH_LEVEL` via the port and never held
//! across a KS or bus call.
use crate::bus_client::{BusChannel, StopOutcome};
use crate::clones::CloneTable;
use crate::copy::VectorUnit;
use crate::device::DeviceSetup;
use crate::fifo::{FilledSlot, SlotFifo};
use capdma_interface::table::MAX_RING_SLOTS;
use crate::format::{validate_data_format, VideoFormat};
use crate::ports::{FrameCompletion, KsPinPort, PinEvent};
use crate::state::{KsState, StateCell};
use crate::stats::{DroppedFramesCurrent, PinStats, StatsSnapshot};
use capdma_interface::mode::DmaMode;
use capdma_interface::status::{
    NtStatus, STATUS_DEVICE_BUSY, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_IO_DEVICE_ERROR,
    STATUS_PENDING, STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, DmaConfig, PfnCompletion, SlotRing};
use core::ffi::c_void;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The board's line alignment in common-buffer slots, bytes (the
/// contract's, `capdma_interface::regs`): the slot line pitch is
/// `line_bytes` rounded up to this (`docs/architecture.md` §1).
pub use capdma_interface::regs::SLOT_LINE_ALIGNMENT;

/// How often `RegisterCompletion(NULL)` is retried while the bus answers
/// `STATUS_DEVICE_BUSY` (a delivery in progress) at `ACQUIRE -> STOP`.
pub const UNREGISTER_RETRIES: u32 = 1 << 20;

/// The common-buffer slot ring as checked at `PAUSE -> RUN`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingView {
    base: *mut u8,
    slot_count: u32,
    slot_stride: usize,
    slot_bytes: usize,
    /// Bytes between lines in a slot, for the running format.
    pub(crate) line_pitch: u32,
}

impl RingView {
    /// Checks what `GetSlotRing` answered against the format and the
    /// configuration: non-null base, `1..=MAX_RING_SLOTS` slots (as configured),
    /// stride >= slot bytes, line pitch >= the line, the frame within a
    /// slot, the ring within the address space.
    fn check(ring: &SlotRing, format: &VideoFormat, config: &DmaConfig) -> Result<Self, NtStatus> {
        let geometry = format.copy_geometry(ring.line_pitch);
        let needed = geometry.src_extent().map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let slot_bytes = usize::try_from(ring.slot_bytes).map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let slot_stride = usize::try_from(ring.slot_stride).map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let count = usize::try_from(ring.slot_count).map_err(|_| STATUS_IO_DEVICE_ERROR)?;
        let total = slot_stride.checked_mul(count).ok_or(STATUS_IO_DEVICE_ERROR)?;
        let ok = !ring.base.is_null()
            && ring.slot_count != 0
            && ring.slot_count <= MAX_RING_SLOTS
            && ring.slot_count == config.slot_count
            && slot_stride >= slot_bytes
            && needed <= slot_bytes
            && (ring.base as usize).checked_add(total).is_some();
        if !ok {
            return Err(STATUS_IO_DEVICE_ERROR);
        }
        Ok(Self { base: ring.base, slot_count: ring.slot_count, slot_stride, slot_bytes, line_pitch: ring.line_pitch })
    }

    /// The bytes of slot `index` (`base + index * slot_stride`,
    /// `slot_bytes` long), `None` for an index out of the ring.
    ///
    /// Valid to read while the channel runs and the slot is owned by the
    /// child (completed to it and not yet returned): the caller's duty.
    pub(crate) fn slot(&self, index: u32) -> Option<&[u8]> {
        if index >= self.slot_count {
            return None;
        }
        let offset = usize::try_from(index).ok()?.checked_mul(self.slot_stride)?;
        let start = self.base.wrapping_add(offset);
        // SAFETY: `check` verified the ring `[base, base + slot_count *
        // slot_stride)` is within the address space and every slot's
        // `slot_bytes <= slot_stride`; `index < slot_count`, so the range is
        // inside the ring. The bus contract (`GetSlotRing`) keeps the ring
        // mapped until the channel is stopped, and the pin only reads slots
        // while running (Process is serialised with the stop by the
        // processing mutex) and only slots the child owns, which the board
        // does not write.
        Some(unsafe { core::slice::from_raw_parts(start, self.slot_bytes) })
    }
}

// SAFETY: the ring is a common buffer mapped in system space, readable from
// any processor; `RingView` only hands out reads of it under the rules of
// `slot`. (This makes `CapturePin<K>` `Send`/`Sync` when `K` and its
// `StreamPointer` are.)
unsafe impl Send for RingView {}

#[derive(Clone, Copy, Debug, Default)]
struct Shared {
    format: Option<VideoFormat>,
    ring: Option<RingView>,
}

fn unit_to_u8(unit: VectorUnit) -> u8 {
    match unit {
        VectorUnit::Scalar => 0,
        VectorUnit::Sse2 => 1,
        VectorUnit::Avx2 => 2,
    }
}

fn unit_from_u8(v: u8) -> VectorUnit {
    match v {
        1 => VectorUnit::Sse2,
        2 => VectorUnit::Avx2,
        _ => VectorUnit::Scalar,
    }
}

/// [`CapturePin::check_format`] of a pin on a channel in `mode` with `config`
/// (also used before the pin exists: [`DeviceSetup::check_format`]).
pub(crate) fn check_format_for(mode: DmaMode, config: &DmaConfig, format: &VideoFormat) -> Result<(), NtStatus> {
    let fits = match mode {
        DmaMode::CommonBuffer => format
            .line_bytes()
            .checked_next_multiple_of(SLOT_LINE_ALIGNMENT)
            .and_then(|pitch| format.pixel.frame_bytes(format.height, pitch))
            .is_some_and(|bytes| bytes <= config.slot_bytes),
        DmaMode::ScatterGather => config.max_frame_bytes == 0 || format.image_bytes <= config.max_frame_bytes,
    };
    if fits {
        Ok(())
    } else {
        Err(STATUS_INVALID_PARAMETER)
    }
}

/// One capture pin of a capdma channel, generic over the KS port.
pub struct CapturePin<K: KsPinPort> {
    pub(crate) port: K,
    pub(crate) bus: BusChannel,
    mode: DmaMode,
    pub(crate) config: DmaConfig,
    state: StateCell,
    unit: AtomicU8,
    shared: spin::Mutex<Shared>,
    pub(crate) clones: spin::Mutex<CloneTable<K::StreamPointer>>,
    pub(crate) fifo: SlotFifo,
    pub(crate) producer: spin::Mutex<()>,
    pub(crate) stats: PinStats,
    registered: AtomicBool,
    _pinned: PhantomPinned,
}

impl<K: KsPinPort> core::fmt::Debug for CapturePin<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CapturePin")
            .field("mode", &self.mode)
            .field("state", &self.state.get())
            .field("format", &self.format())
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

/// The completion callback registered with the bus (`PFN_CAPDMA_COMPLETION`):
/// `callback_context` is the address of a pinned `CapturePin<K>`.
///
/// # Safety
/// `callback_context` must be null or the address of a live `CapturePin<K>`
/// (guaranteed by registration: see the module documentation), and
/// `completion` null or valid for the call.
pub unsafe extern "system" fn completion_thunk<K: KsPinPort>(
    callback_context: *mut c_void,
    completion: *const Completion,
) {
    if callback_context.is_null() || completion.is_null() {
        return;
    }
    // SAFETY: registered in `STOP -> ACQUIRE` with the address of a pinned
    // `CapturePin<K>` (it does not move) that unregisters before it is
    // dropped; the bus calls back only while registered.
    let pin = unsafe { &*callback_context.cast_const().cast::<CapturePin<K>>() };
    // SAFETY: the bus passes a completion valid for the duration of the call.
    let completion = unsafe { &*completion };
    pin.on_completion(completion);
}

impl<K: KsPinPort> CapturePin<K> {
    /// A pin in `KSSTATE_STOP` without a format. `bus` is the channel's
    /// functions, `setup` what [`crate::device::device_start`] answered,
    /// `unit` the vector registers the common-buffer copy may use (see
    /// [`VectorUnit`]). Pin it (`Box::pin`, or memory that never moves)
    /// before changing its state.
    #[must_use]
    pub fn new(port: K, bus: BusChannel, setup: &DeviceSetup, unit: VectorUnit) -> Self {
        Self {
            port,
            bus,
            mode: setup.mode,
            config: setup.config,
            state: StateCell::new(),
            unit: AtomicU8::new(unit_to_u8(unit)),
            shared: spin::Mutex::new(Shared::default()),
            clones: spin::Mutex::new(CloneTable::new()),
            fifo: SlotFifo::new(),
            producer: spin::Mutex::new(()),
            stats: PinStats::new(),
            registered: AtomicBool::new(false),
            _pinned: PhantomPinned,
        }
    }

    /// The KS port.
    pub fn port(&self) -> &K {
        &self.port
    }

    /// The channel's DMA mode.
    pub fn mode(&self) -> DmaMode {
        self.mode
    }

    /// The current `KSSTATE`.
    pub fn state(&self) -> KsState {
        self.state.get()
    }

    /// The format set with [`Self::set_data_format`], if any.
    pub fn format(&self) -> Option<VideoFormat> {
        self.locked(&self.shared, |s| s.format)
    }

    /// The frame counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// `KSPROPERTY_DROPPEDFRAMES_CURRENT`.
    pub fn dropped_frames_current(&self) -> DroppedFramesCurrent {
        self.stats.dropped_frames_current()
    }

    /// The vector registers [`Self::process`] lets the copy use.
    pub fn vector_unit(&self) -> VectorUnit {
        unit_from_u8(self.unit.load(Ordering::Relaxed))
    }

    /// Sets the vector registers [`Self::process`] lets the copy use.
    pub fn set_vector_unit(&self, unit: VectorUnit) {
        self.unit.store(unit_to_u8(unit), Ordering::Relaxed);
    }

    /// The callback function registered with the bus.
    #[must_use]
    pub fn completion_callback() -> PfnCompletion {
        completion_thunk::<K>
    }

    /// Runs `f` on the data of `lock`, held at `DISPATCH_LEVEL`.
    pub(crate) fn locked<T, R>(&self, lock: &spin::Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
        let old = self.port.raise_to_dispatch();
        let result = f(&mut lock.lock());
        self.port.lower_irql(old);
        result
    }

    /// The running format and (common-buffer) ring, read together.
    pub(crate) fn running_view(&self) -> (Option<VideoFormat>, Option<RingView>) {
        self.locked(&self.shared, |s| (s.format, s.ring))
    }

    /// Whether the pin can stream `format` on this channel: common-buffer,
    /// the frame at the slot line pitch (line rounded up to
    /// [`SLOT_LINE_ALIGNMENT`]) must fit `slot_bytes`; S/G, the image must not
    /// exceed `max_frame_bytes` (when the bus states one).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when it does not fit.
    pub fn check_format(&self, format: &VideoFormat) -> Result<(), NtStatus> {
        check_format_for(self.mode, &self.config, format)
    }

    /// Whether the pin copies frames with the CPU in [`Self::process`]
    /// (common-buffer mode): only then does the vector unit matter, so only
    /// then is extended processor state worth saving around Process.
    #[must_use]
    pub fn copies_frames(&self) -> bool {
        self.mode == DmaMode::CommonBuffer
    }

    /// `AVStrMiniPinSetDataFormat`: validates `bytes` (a
    /// `KS_DATAFORMAT_VIDEOINFOHEADER`, see [`crate::format`]) and makes it
    /// the pin's format. Only in `KSSTATE_STOP`: the allocator framing and
    /// buffers are committed at `STOP -> ACQUIRE`. PASSIVE.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_REQUEST` in any other state; the errors of
    /// [`validate_data_format`]; `STATUS_INVALID_PARAMETER` from
    /// [`Self::check_format`]. The previous format stays on error.
    pub fn set_data_format(&self, bytes: &[u8]) -> Result<VideoFormat, NtStatus> {
        if self.state() != KsState::Stop {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        let format = validate_data_format(bytes)?;
        self.check_format(&format)?;
        self.locked(&self.shared, |s| s.format = Some(format));
        Ok(format)
    }

    /// `AVStrMiniPinSetDeviceState(Pin, to, from)`: `from` must be the pin's
    /// state; then as [`Self::set_state`]. PASSIVE.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_REQUEST` when `from` is not the current state;
    /// else as [`Self::set_state`].
    #[must_use]
    pub fn set_device_state(self: Pin<&Self>, to: KsState, from: KsState) -> NtStatus {
        if from != self.state() {
            return STATUS_INVALID_DEVICE_REQUEST;
        }
        self.set_state(to)
    }

    /// One KS step: `to` must be adjacent to the current state (or equal:
    /// nothing to do). PASSIVE.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_REQUEST` for a jump over a state; else as the step.
    #[must_use]
    pub fn transition(self: Pin<&Self>, to: KsState) -> NtStatus {
        let from = self.state();
        if from != to && !from.is_one_step(to) {
            return STATUS_INVALID_DEVICE_REQUEST;
        }
        self.set_state(to)
    }

    /// Moves the pin to `to`, one KS step at a time through the states
    /// between (as KS does). Returns `STATUS_SUCCESS` when `to` is reached.
    /// A failing step stops the walk at the last state reached. PASSIVE.
    ///
    /// # Errors
    /// `STOP -> ACQUIRE`: `STATUS_INVALID_DEVICE_REQUEST` without a format,
    /// or `RegisterCompletion`'s status. `PAUSE -> RUN`: `StartChannel`'s or
    /// `GetSlotRing`'s status, `STATUS_IO_DEVICE_ERROR` for a slot ring that
    /// fails its checks. `ACQUIRE -> STOP`: `STATUS_DEVICE_BUSY` if the bus
    /// kept refusing to unregister. Downward steps otherwise succeed.
    #[must_use]
    pub fn set_state(self: Pin<&Self>, to: KsState) -> NtStatus {
        while let Some(next) = self.state().step_toward(to) {
            let status = self.step(next);
            if status != STATUS_SUCCESS {
                return status;
            }
        }
        STATUS_SUCCESS
    }

    fn step(self: Pin<&Self>, to: KsState) -> NtStatus {
        let this = self.get_ref();
        let status = match (this.state(), to) {
            (KsState::Stop, KsState::Acquire) => self.acquire(),
            (KsState::Acquire, KsState::Pause) | (KsState::Pause, KsState::Acquire) => STATUS_SUCCESS,
            (KsState::Pause, KsState::Run) => this.run(),
            (KsState::Run, KsState::Pause) => {
                this.stop_running();
                STATUS_SUCCESS
            }
            (KsState::Acquire, KsState::Stop) => this.unregister(UNREGISTER_RETRIES),
            _ => STATUS_INVALID_DEVICE_REQUEST,
        };
        if status == STATUS_SUCCESS {
            this.state.set(to);
        }
        status
    }

    fn acquire(self: Pin<&Self>) -> NtStatus {
        let this = self.get_ref();
        if this.format().is_none() {
            return STATUS_INVALID_DEVICE_REQUEST;
        }
        let context = core::ptr::from_ref(this).cast_mut().cast::<c_void>();
        // SAFETY: `self` is pinned, so the pin stays at `context` until it is
        // dropped, and `Drop` unregisters first; `completion_thunk::<K>` only
        // turns `context` back into `&CapturePin<K>`.
        let registered = unsafe { this.bus.register_completion(Some(completion_thunk::<K>), context) };
        match registered {
            Ok(()) => {
                this.registered.store(true, Ordering::Release);
                STATUS_SUCCESS
            }
            Err(status) => status,
        }
    }

    fn unregister(&self, retries: u32) -> NtStatus {
        if !self.registered.load(Ordering::Acquire) {
            return STATUS_SUCCESS;
        }
        let mut tries = 0u32;
        loop {
            match self.bus.unregister_completion() {
                Err(STATUS_DEVICE_BUSY) if tries < retries => {
                    tries += 1;
                    core::hint::spin_loop();
                }
                Err(STATUS_DEVICE_BUSY) => return STATUS_DEVICE_BUSY,
                // Done, or the bus is gone (it calls no one any more).
                _ => {
                    self.registered.store(false, Ordering::Release);
                    return STATUS_SUCCESS;
                }
            }
        }
    }

    fn run(&self) -> NtStatus {
        let Some(format) = self.format() else {
            return STATUS_INVALID_DEVICE_REQUEST;
        };
        self.stats.reset_frame_numbers();
        // Slots completed after the last stop (a bus that delivered late) are
        // from the previous run: give them back before the ring restarts.
        self.drain_slots();
        if let Err(status) = self.bus.start_channel(&format.channel_format()) {
            self.port.report(PinEvent::ChannelStartFailed { status });
            return status;
        }
        if self.mode == DmaMode::CommonBuffer {
            let ring = self.bus.get_slot_ring().and_then(|r| RingView::check(&r, &format, &self.config));
            match ring {
                Ok(ring) => self.locked(&self.shared, |s| s.ring = Some(ring)),
                Err(status) => {
                    let _ = self.bus.stop_channel();
                    self.drain_slots();
                    self.port.report(PinEvent::ChannelStartFailed { status });
                    return status;
                }
            }
        }
        self.port.report(PinEvent::ChannelStarted { format: format.channel_format() });
        self.state.set(KsState::Run);
        self.port.attempt_processing(true);
        STATUS_SUCCESS
    }

    /// `RUN -> PAUSE`, under the processing mutex.
    fn stop_running(&self) {
        self.port.acquire_processing_mutex();
        self.state.set(KsState::Pause);
        // Errors ignored: stopping must not fail, and a removed device has stopped.
        let outcome = self.bus.stop_channel();
        self.port.report(PinEvent::ChannelStopped);
        match self.mode {
            DmaMode::CommonBuffer => {
                self.drain_slots();
                self.locked(&self.shared, |s| s.ring = None);
            }
            // The bus holds the posted frames until the engine's reset
            // completes (the board may still write them): their clones stay
            // until those completions arrive, never handed back early.
            DmaMode::ScatterGather if outcome == Ok(StopOutcome::FramesHeld) => {}
            DmaMode::ScatterGather => self.reclaim_clones(),
        }
        self.port.release_processing_mutex();
    }

    /// Common-buffer: returns every queued slot to the bus, in order,
    /// without delivering it (counted as cancelled: the pin is stopping).
    fn drain_slots(&self) {
        while let Some(item) = self.fifo.pop() {
            self.stats.cancelled();
            self.give_back(item.slot);
        }
    }

    /// S/G: completes empty and deletes clones still in flight after
    /// `StopChannel` (the bus should have cancelled them: counted as bad).
    fn reclaim_clones(&self) {
        while let Some(clone) = self.locked(&self.clones, CloneTable::take_any) {
            self.stats.bad_completion();
            self.port.complete_frame(clone, &self.empty_completion(0));
            self.port.delete(clone);
        }
    }

    /// Counts a slot or frame that is not delivered: `STATUS_CANCELLED` ->
    /// cancelled, anything else -> dropped.
    pub(crate) fn count_undelivered(&self, item: &FilledSlot) {
        if item.status == capdma_interface::status::STATUS_CANCELLED {
            self.stats.cancelled();
        } else {
            self.dropped_frame();
        }
    }

    /// `ReturnSlot`, counting a refusal.
    pub(crate) fn give_back(&self, slot: u32) {
        if self.bus.return_slot(slot).is_err() {
            self.stats.slot_return_failed();
        }
    }

    /// What an undelivered frame gets: `DataUsed = 0`.
    pub(crate) fn empty_completion(&self, frame_number: u32) -> FrameCompletion {
        FrameCompletion {
            data_used: 0,
            presentation_time: 0,
            duration: 0,
            picture_number: i64::from(frame_number),
            drop_count: i64::try_from(self.stats.drop_count()).unwrap_or(i64::MAX),
            discontinuity: false,
        }
    }

    /// What a good frame gets: `DataUsed`, `PresentationTime = timestamp`,
    /// `Duration` = the frame interval, `PictureNumber` = the board's frame
    /// number, the running `DropCount`, and the discontinuity flag when
    /// frames were dropped since the last good one. Counts the delivery.
    pub(crate) fn good_completion(
        &self,
        data_used: u32,
        frame_number: u32,
        timestamp: i64,
        format: Option<&VideoFormat>,
    ) -> FrameCompletion {
        self.stats.delivered(data_used);
        self.port.report(PinEvent::FrameDelivered { picture_number: frame_number, bytes: data_used });
        FrameCompletion {
            data_used,
            presentation_time: timestamp,
            duration: format.map_or(0, |f| i64::from(f.frame_interval)),
            picture_number: i64::from(frame_number),
            drop_count: i64::try_from(self.stats.drop_count()).unwrap_or(i64::MAX),
            discontinuity: self.stats.take_discontinuity(),
        }
    }

    /// A frame the pin drops: counted and reported.
    pub(crate) fn dropped_frame(&self) {
        let total = self.stats.dropped();
        self.port.report(PinEvent::DroppedByDriver { total });
    }

    /// The frame number of a good completion: a gap since the last one is
    /// counted and reported as frames dropped by the board.
    pub(crate) fn board_frame_number(&self, frame_number: u32) {
        let frames = self.stats.note_frame_number(frame_number);
        if frames != 0 {
            self.port.report(PinEvent::DroppedByBoard { frames });
        }
    }

    /// `AVStrMiniPinProcess` with the pin's [`VectorUnit`].
    pub fn process(&self) -> NtStatus {
        self.process_with_unit(self.vector_unit())
    }

    /// `AVStrMiniPinProcess`, the copy limited to `unit` (the glue passes
    /// `VectorUnit::Sse2`, which needs no saved extended state; see
    /// [`VectorUnit`] for what each unit requires of the caller).
    ///
    /// Returns `STATUS_PENDING` when processing must wait for a completion
    /// (no frame tag free, ring full; always in common-buffer mode, whose
    /// Process only ever runs from the completion's
    /// `KsPinAttemptProcessing`; and when not in `KSSTATE_RUN`), and
    /// `STATUS_SUCCESS` when every queued frame was handed to the board (S/G),
    /// so KS calls again when a new frame arrives. See
    /// [`crate::process_sg`] and [`crate::process_cb`].
    pub fn process_with_unit(&self, unit: VectorUnit) -> NtStatus {
        if self.state() != KsState::Run {
            return STATUS_PENDING;
        }
        match self.mode {
            DmaMode::ScatterGather => self.process_sg(),
            DmaMode::CommonBuffer => self.process_cb(unit),
        }
    }

    /// The bus's completion (the callback's body), `DISPATCH_LEVEL`. A
    /// completion for another channel, of the wrong kind, or for nothing in
    /// flight is counted as bad and ignored.
    pub fn on_completion(&self, completion: &Completion) {
        if completion.channel != self.bus.channel() {
            self.stats.bad_completion();
            return;
        }
        match self.mode {
            DmaMode::ScatterGather => self.complete_sg(completion),
            DmaMode::CommonBuffer => self.complete_cb(completion),
        }
    }
}

impl<K: KsPinPort> Drop for CapturePin<K> {
    /// Walks the pin down to `KSSTATE_STOP`: stops the channel, returns
    /// slots, deletes clones, and unregisters the callback (retrying for as
    /// long as the bus is delivering) before the memory goes.
    fn drop(&mut self) {
        if self.state() == KsState::Run {
            self.stop_running();
        }
        // The memory must not go while the bus may still call back, so this
        // waits rather than gives up. The bus refuses RegisterCompletion(NULL)
        // while its DPC is inside a callback for this channel (bounded), and
        // while it holds frames for an engine whose reset has not completed
        // (unbounded on a wedged board: closing the pin then blocks until the
        // engine stops or the device is surprise-removed, rather than let the
        // board write memory handed back). A removed board answers success.
        while self.unregister(UNREGISTER_RETRIES) != STATUS_SUCCESS {
            self.port.wait_briefly();
        }
        self.drain_slots();
        self.state.set(KsState::Stop);
    }
}
