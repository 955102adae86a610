//! The capture pin: format, `KSSTATE` transitions, and the entry points KS
//! and the bus call (Process, the completion callback).
//!
//! | KS event | pin |
//! |---|---|
//! | `AVStrMiniPinSetDataFormat` | [`CapturePin::change_data_format`] (`KSSTATE_STOP` only; committed after the glue's edits) |
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
use crate::bus_client::BusChannel;
use crate::copy::VectorUnit;
use crate::device::DeviceSetup;
use crate::engine::{self, PinEngine};
use crate::format::{validate_data_format, VideoFormat};
use crate::ports::{FrameCompletion, KsPinPort, PinEvent};
use crate::state::{KsState, StateCell};
use crate::stats::{DroppedFramesCurrent, PinStats, StatsSnapshot};
use capdma_interface::mode::DmaMode;
use capdma_interface::status::{
    NtStatus, STATUS_DEVICE_BUSY, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_PENDING,
    STATUS_SUCCESS,
};
use capdma_interface::table::{Completion, DmaConfig, PfnCompletion};
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

/// One capture pin of a capdma channel, generic over the KS port.
pub struct CapturePin<K: KsPinPort> {
    pub(crate) port: K,
    pub(crate) bus: BusChannel,
    pub(crate) config: DmaConfig,
    engine: PinEngine<K::StreamPointer>,
    state: StateCell,
    unit: AtomicU8,
    format: spin::Mutex<Option<VideoFormat>>,
    pub(crate) stats: PinStats,
    registered: AtomicBool,
    _pinned: PhantomPinned,
}

impl<K: KsPinPort> core::fmt::Debug for CapturePin<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CapturePin")
            .field("mode", &self.mode())
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
            config: setup.config,
            engine: PinEngine::for_mode(setup.mode),
            state: StateCell::new(),
            unit: AtomicU8::new(unit as u8),
            format: spin::Mutex::new(None),
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
        self.engine.mode()
    }

    /// The current `KSSTATE`.
    pub fn state(&self) -> KsState {
        self.state.get()
    }

    /// The format set with [`Self::set_data_format`], if any.
    pub fn format(&self) -> Option<VideoFormat> {
        self.locked(&self.format, |f| *f)
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
        // Only `set_vector_unit` and `new` store it: always a valid value.
        zerocopy::try_transmute!(self.unit.load(Ordering::Relaxed)).unwrap_or(VectorUnit::Scalar)
    }

    /// Sets the vector registers [`Self::process`] lets the copy use.
    pub fn set_vector_unit(&self, unit: VectorUnit) {
        self.unit.store(unit as u8, Ordering::Relaxed);
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

    /// Whether filled slots are queued (common buffer), not yet processed
    /// or given back.
    #[cfg(test)]
    pub(crate) fn has_queued_slots(&self) -> bool {
        self.engine.has_queued_slots()
    }

    /// Whether the pin can stream `format` on this channel: common-buffer,
    /// the frame at the slot line pitch (line rounded up to
    /// [`SLOT_LINE_ALIGNMENT`]) must fit `slot_bytes`; S/G, the image must not
    /// exceed `max_frame_bytes` (when the bus states one).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when it does not fit.
    pub fn check_format(&self, format: &VideoFormat) -> Result<(), NtStatus> {
        if engine::fits(self.mode(), &self.config, format) {
            Ok(())
        } else {
            Err(STATUS_INVALID_PARAMETER)
        }
    }

    /// Whether the pin copies frames with the CPU in [`Self::process`]
    /// (common-buffer mode): only then does the vector unit matter, so only
    /// then is extended processor state worth saving around Process.
    #[must_use]
    pub fn copies_frames(&self) -> bool {
        self.engine.copies_frames()
    }

    /// `AVStrMiniPinSetDataFormat` without descriptor edits: validates
    /// `bytes` (a `KS_DATAFORMAT_VIDEOINFOHEADER`, see [`crate::format`])
    /// and makes it the pin's format ([`Self::change_data_format`] with no
    /// edits). Only in `KSSTATE_STOP`. PASSIVE.
    ///
    /// # Errors
    /// As [`Self::change_data_format`]. The previous format stays on error.
    pub fn set_data_format(&self, bytes: &[u8]) -> Result<VideoFormat, NtStatus> {
        self.change_data_format(bytes, |_| Ok(()))
    }

    /// `AVStrMiniPinSetDataFormat` of a created pin: validates `bytes` (a
    /// `KS_DATAFORMAT_VIDEOINFOHEADER`, see [`crate::format`]) and checks it
    /// against the channel ([`Self::check_format`]), then runs `edits` with
    /// the new format (the glue's `_KsEdit`s of the pin's descriptor and
    /// framing, which follow the frame size), and only when they succeed
    /// makes it the pin's format. Only in `KSSTATE_STOP`: the allocator
    /// framing and buffers are committed at `STOP -> ACQUIRE`. PASSIVE, and
    /// serialised with the state changes (AVStream holds the filter control
    /// mutex for both).
    ///
    /// The order is the contract's: a refused format change leaves KS with
    /// the old connection format, so the pin must keep the old format too,
    /// or its next `KSSTATE_RUN` would start the channel in the refused one.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_REQUEST` in any other state; the errors of
    /// [`validate_data_format`]; `STATUS_INVALID_PARAMETER` from
    /// [`Self::check_format`]; the error `edits` returns (then nothing is
    /// changed in the pin). The previous format stays on error.
    pub fn change_data_format(
        &self,
        bytes: &[u8],
        edits: impl FnOnce(&VideoFormat) -> Result<(), NtStatus>,
    ) -> Result<VideoFormat, NtStatus> {
        if self.state() != KsState::Stop {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        let format = validate_data_format(bytes)?;
        self.check_format(&format)?;
        edits(&format)?;
        self.locked(&self.format, |f| *f = Some(format));
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
            match to {
                KsState::Acquire if this.state() == KsState::Stop => {
                    this.port.acquire_reference_clock();
                }
                KsState::Stop => this.port.release_reference_clock(),
                _ => {}
            }
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
        self.engine.drain(self);
        let started = self.bus.start_channel(&format.channel_format()).and_then(|()| self.engine.started(self, &format));
        if let Err(status) = started {
            self.port.report(PinEvent::ChannelStartFailed { status });
            return status;
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
        self.engine.stopped(self, outcome);
        self.port.release_processing_mutex();
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

    /// What a good frame gets: `DataUsed`, `PresentationTime` = the reference clock's stream time now when the
    /// pin has a clock ([`KsPinPort::stream_time`]), else `timestamp` (the
    /// board's capture time), `Duration` = the frame interval, `PictureNumber` = the board's frame
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
            // With the pin's reference clock, its stream time as the frame
            // arrives; without one, the board's capture time.
            presentation_time: self.port.stream_time().unwrap_or(timestamp),
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
        self.engine.process(self, unit)
    }

    /// The bus's completion (the callback's body), `DISPATCH_LEVEL`. A
    /// completion for another channel, of the wrong kind, or for nothing in
    /// flight is counted as bad and ignored.
    pub fn on_completion(&self, completion: &Completion) {
        if completion.channel != self.bus.channel() {
            self.stats.bad_completion();
            return;
        }
        self.engine.complete(self, completion);
    }
}

impl<K: KsPinPort> Drop for CapturePin<K> {
    /// Walks the pin down to `KSSTATE_STOP`: stops the channel, returns
    /// slots, deletes clones, unregisters the callback (retrying for as
    /// long as the bus is delivering) before the memory goes, and releases
    /// the reference clock.
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
        self.engine.drain(self);
        if self.state() != KsState::Stop {
            // Taken at STOP -> ACQUIRE.
            self.port.release_reference_clock();
        }
        self.state.set(KsState::Stop);
    }
}
