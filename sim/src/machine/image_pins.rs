//! The application's side of a channel through the AVStream image
//! (`--drivers images`): on each channel's KS device (made by the emulated
//! `ks.sys` on the bus image's child PDO) it opens a filter, asks the pin's
//! intersect handler for a format (`KSPROPERTY_PIN_DATAINTERSECTION`),
//! creates the capture pin with the format it wants, queues its buffers
//! (stream headers with a `KS_FRAME_INFO`, as a video client sends them)
//! in `KSSTATE_PAUSE` and then runs the pin (`KSSTATE_RUN`); frames come back through the
//! emulated KS with what the image wrote in their stream headers; at the
//! end it closes the pin and the filter.
use capdma_avstream::format::{build_data_format, data_range};
use capdma_interface::mode::DmaMode;
use capdma_interface::status::{NtStatus, STATUS_DEVICE_NOT_READY, STATUS_DEVICE_REMOVED};
use zerocopy::IntoBytes;

use super::build::{ChannelRun, Machine};
use super::config::ConfigError;
use super::run::RunError;
use crate::image::active;
use crate::ks::CompletedFrame;
use crate::memory::Allocation;
use crate::nt::ks::pin::{self as ks_pin, KSPIN_FLAG_GENERATE_MAPPINGS, KSSTATE_RUN};
use crate::nt::ks::{self, AppBuffer, PinHandle};
use crate::nt::layout::ks::{ks_frame_info, ksstream_header};
use crate::nt::verifier::LowResources;
use crate::pnp::AvStreamDevice;
use crate::violations::ViolationKind;

/// `KSSTREAM_HEADER.Size` the application sends: the header and a
/// `KS_FRAME_INFO` (what a video capture client sends).
pub const VIDEO_HEADER_SIZE: u32 = (ksstream_header::SIZE + ks_frame_info::SIZE) as u32;

/// What opening a channel's pin in the emulated KS gave.
struct Opened {
    filter: u64,
    pin: PinHandle,
    queue: crate::ks::SimKsPin,
    flags: u32,
}

/// A step of opening a pin that failed, and its status.
struct Refused {
    step: &'static str,
    status: u32,
}

impl Machine {
    /// The machine runs the AVStream image too.
    pub(super) fn runs_avstream_image(&self) -> bool {
        self.config.drivers.avstream_image().is_some()
    }

    /// The application's pin on channel `ch` of card `card` through the
    /// AVStream image (with the image's kernel active).
    pub(super) fn start_image_child(&mut self, card: u32, ch: u32) -> Result<ChannelRun, RunError> {
        let what = |step: &str| format!("card {card} channel {ch}: {step}");
        let Some(pdo) = self.cards.get(card as usize).and_then(|c| c.image_children.get(ch as usize).copied()) else {
            return Err(self.driver_error(what("child enumeration"), STATUS_DEVICE_NOT_READY));
        };
        let format = self.requested_format();
        let mut allocations: Vec<Allocation> = Vec::new();
        for i in 0..self.config.app_buffers {
            let owner = format!("application buffer {i} of card {card} channel {ch}");
            match self.memory.allocate_scattered(format.image_bytes as usize, &owner) {
                Ok(alloc) => allocations.push(alloc),
                Err(e) => {
                    for a in allocations {
                        self.memory.free(a.id);
                    }
                    return Err(RunError::Config(ConfigError(format!("application buffers: {e}"))));
                }
            }
        }
        let buffers: Vec<AppBuffer> =
            allocations.iter().map(|a| AppBuffer { host_va: a.va, bytes: format.image_bytes, pages: a.page_addresses.clone() }).collect();
        let caller_range = data_range(self.config.format).as_bytes().to_vec();
        let wanted = build_data_format(&format).as_bytes().to_vec();
        let count = u32::try_from(buffers.len()).unwrap_or(0);
        let header_size = self.config.stream_header_size.unwrap_or(VIDEO_HEADER_SIZE);
        let opened = active::with(|m, nt| {
            open_channel_pin(nt, m, pdo, &caller_range, &wanted, buffers, count, header_size, self.config.reference_clock)
        });
        let opened = match opened {
            Some(Ok(opened)) => opened,
            refused => {
                for a in allocations {
                    self.memory.free(a.id);
                }
                let (step, status) = match refused {
                    Some(Err(r)) => (r.step, NtStatus::from_ne_bytes(r.status.to_ne_bytes())),
                    _ => ("the emulated kernel (stopped)", STATUS_DEVICE_REMOVED),
                };
                return Err(self.driver_error(what(step), status));
            }
        };
        let mode = if opened.flags & KSPIN_FLAG_GENERATE_MAPPINGS != 0 { DmaMode::ScatterGather } else { DmaMode::CommonBuffer };
        // The image states its decision in its DeviceStart event (card n's
        // children start after card n-1's).
        let reason = active::with(|_, nt| {
            use crate::nt::etw::Value;
            let start = nt
                .etw
                .records
                .iter()
                .filter(|r| r.provider == "Capdma.AVStream" && r.event == "DeviceStart")
                .filter(|r| matches!(r.field("Channel"), Some(Value::UInt(c)) if *c == u64::from(ch)))
                .nth(card as usize);
            Ok(match start.and_then(|r| r.field("Reason")) {
                Some(Value::Str(reason)) => reason.clone(),
                _ => "not stated (no DeviceStart event of the AVStream image)".to_string(),
            })
        })
        .unwrap_or_default();
        let n = allocations.len();
        let device = std::rc::Rc::new(AvStreamDevice::new(format!("card {card} channel {ch} AVStream (image)")));
        device.set_pin_open(true);
        let mut run = ChannelRun::new(&self.config, (card, ch), opened.queue, device, format, mode.name(), reason);
        run.image_pin = Some((opened.filter, opened.pin));
        run.buffers = allocations;
        run.with_app = vec![false; n];
        run.requeue_scheduled = vec![false; n];
        Ok(run)
    }

    /// The frames the emulated KS completed on channel `i`'s image pin.
    pub(super) fn image_completed(&self, i: usize) -> Vec<CompletedFrame> {
        let Some((_, pin)) = self.channels[i].image_pin else { return Vec::new() };
        let done = active::with(|m, nt| ks_pin::take_completed(nt, m, pin)).unwrap_or_default();
        if self.config.reference_clock {
            self.check_capture_times(i, pin, &done);
        }
        done
    }

    /// The application's own check of the times on its clock: a frame
    /// delivered with data is stamped no earlier than the clock's stream
    /// time at its capture (the emulated KS checks the upper bound and the
    /// order, `crate::nt::ks::clock`).
    fn check_capture_times(&self, i: usize, pin: PinHandle, done: &[CompletedFrame]) {
        let run = &self.channels[i];
        for completion in done.iter().filter_map(|d| d.completion).filter(|c| c.data_used > 0) {
            let Ok(number) = u32::try_from(completion.picture_number) else { continue };
            let captured = run.log.captures.iter().find_map(|(at, outcome)| match outcome {
                crate::board::CaptureOutcome::Completed { frame_number, .. }
                | crate::board::CaptureOutcome::PartCompleted { frame_number, .. }
                    if *frame_number == number =>
                {
                    Some(*at)
                }
                _ => None,
            });
            let Some(captured) = captured else { continue };
            let at_capture = active::with(|_, nt| Ok(ks::clock::stream_time_at(nt, pin, captured))).flatten();
            if let Some(at_capture) = at_capture.filter(|t| completion.presentation_time < *t) {
                self.violations.push(
                    ViolationKind::Ks,
                    format!(
                        "card {} channel {}: frame {number}'s PresentationTime {} is before the master clock's stream time at its capture ({at_capture})",
                        run.card, run.index, completion.presentation_time
                    ),
                );
            }
        }
    }

    /// The application queues buffer `buffer` of channel `i` again on its image pin.
    pub(super) fn image_submit(&self, i: usize, buffer: u32) {
        if let Some((_, pin)) = self.channels[i].image_pin {
            let _ = active::with(|m, nt| ks_pin::submit(nt, m, pin, buffer));
        }
    }

    /// The application has the pin of `channel` of `card` open in the
    /// emulated `ks.sys` (`--drivers images`).
    #[must_use]
    pub fn image_pin_open(&self, card: u32, channel: u32) -> bool {
        self.channel_position(card, channel).is_some_and(|i| self.channels[i].image_pin.is_some())
    }

    /// Channel `i`'s image pin is in `KSSTATE_STOP` (or gone): the
    /// application does not queue buffers on it.
    pub(super) fn image_pin_stopped(&self, i: usize) -> bool {
        let Some((_, pin)) = self.channels[i].image_pin else { return true };
        active::with(|_, nt| Ok(ks_pin::state(nt, pin))).flatten().is_none_or(|s| s == crate::nt::ks::pin::KSSTATE_STOP)
    }

    /// The emulated KS's worker: the `Process` calls it owes (at `PASSIVE_LEVEL`).
    pub(super) fn image_process(&self) {
        if self.runs_avstream_image() {
            let _ = active::with(|m, nt| if m.is_dead() { Ok(()) } else { ks::run_workers(nt, m) });
        }
    }

    /// Closes channel `i`'s image pin and filter; the frames KS completes
    /// on the way are delivered to the application. With `stop_first` the
    /// application stops the pin itself first (`KSSTATE_STOP`, whose status
    /// it sees) and the status is that stop's or else the close's; without,
    /// it just closes the handle (`IRP_MJ_CLOSE`: KS walks the pin to
    /// `KSSTATE_STOP` on its own, and what a step answered is recorded as
    /// `card N channel M: KSSTATE_STOP at IRP_MJ_CLOSE`, the application
    /// never sees it) and the status is the minidriver's `Close`'s.
    /// `STATUS_DEVICE_REMOVED` when the kernel stopped.
    pub(super) fn image_close_keeping_completions(
        &mut self,
        i: usize,
        now: u64,
        hooks: &mut super::RunHooks<'_>,
        stop_first: bool,
    ) -> u32 {
        let Some((filter, pin)) = self.channels[i].image_pin else { return 0 };
        // What the application reads before it stops: the frames the driver
        // dropped (KSPROPERTY_DROPPEDFRAMES_CURRENT, through the image's handler).
        if let Some(Ok((_, drops, _))) = active::with(|m, nt| ks_pin::dropped_frames(nt, m, pin)) {
            self.channels[i].report.driver_dropped = u64::try_from(drops).unwrap_or(0);
        }
        let stopped = if stop_first { active::with(|m, nt| ks_pin::set_state(nt, m, pin, crate::nt::ks::pin::KSSTATE_STOP)) } else { Some(0) };
        self.take_completed(i, now, hooks);
        self.channels[i].image_pin = None;
        let closed = active::with(|m, nt| {
            let closed = ks_pin::close_pin_collecting(nt, m, pin)?;
            ks_pin::close_filter(nt, m, filter)?;
            Ok(closed)
        });
        let Some(closed) = closed else { return STATUS_DEVICE_REMOVED.cast_unsigned() };
        for done in closed.completed {
            self.deliver(i, done, now, hooks);
        }
        let (card, ch) = (self.channels[i].card, self.channels[i].index);
        if !stop_first && closed.stop_status != 0 {
            let status = NtStatus::from_ne_bytes(closed.stop_status.to_ne_bytes());
            self.record_status(format!("card {card} channel {ch}: KSSTATE_STOP at IRP_MJ_CLOSE"), status);
        }
        match stopped {
            Some(0) if stop_first && closed.stop_status != 0 => closed.stop_status,
            Some(0) => closed.close_status,
            Some(status) => status,
            None => STATUS_DEVICE_REMOVED.cast_unsigned(),
        }
    }

    /// A pin action of the fault matrix through the emulated KS and the
    /// AVStream image: `PinState` as the application's state request (KS
    /// walks the states), `PinDeviceState` as one `SetDeviceState` call
    /// with exactly those states (what a class driver that does not walk
    /// would send: the minidriver's guard is the subject), `PinTransition`
    /// as one step (a jump refused before it reaches a driver, as the
    /// cores' `CapturePin::transition` does), `PinSetFormat` as `KSPROPERTY_CONNECTION_DATAFORMAT` with
    /// the current format, `PinChangeFormat` as the same with the new size
    /// (the application's view follows only when it is accepted). The
    /// status is recorded as for the cores.
    pub(super) fn image_pin_action(&mut self, action: &super::Action, now: u64, hooks: &mut super::RunHooks<'_>) {
        use super::Action;
        use capdma_avstream::state::KsState;
        let (Action::PinState { card, channel, .. }
        | Action::PinTransition { card, channel, .. }
        | Action::PinDeviceState { card, channel, .. }
        | Action::PinSetFormat { card, channel }
        | Action::PinChangeFormat { card, channel, .. }) = *action
        else {
            return;
        };
        let Some(i) = self.channel_position(card, channel) else { return };
        let Some((_, pin)) = self.channels[i].image_pin else {
            let status = STATUS_DEVICE_NOT_READY;
            self.record_status(format!("card {card} channel {channel}: {action:?} (pin closed)"), status);
            return;
        };
        let state_of = |raw: Option<u32>| raw.and_then(KsState::from_raw).unwrap_or(KsState::Stop);
        let before = state_of(active::with(|_, nt| Ok(ks_pin::state(nt, pin))).flatten());
        let format = build_data_format(&self.channels[i].format).as_bytes().to_vec();
        let (what, status) = match *action {
            Action::PinState { to, .. } => (format!("KS state to {to:?}"), active::with(|m, nt| ks_pin::set_state(nt, m, pin, to as u32))),
            // One step, as the cores' `CapturePin::transition`: a jump is not
            // a step (refused before any driver sees it), the same state is
            // nothing to do, an adjacent one is one SetDeviceState.
            Action::PinTransition { to, .. } => (format!("one KS step to {to:?}"), match (to as u32).abs_diff(before as u32) {
                0 => Some(0),
                1 => active::with(|m, nt| ks_pin::call_set_device_state(nt, m, pin, to as u32, before as u32)),
                _ => Some(capdma_interface::status::STATUS_INVALID_DEVICE_REQUEST.cast_unsigned()),
            }),
            Action::PinDeviceState { to, from, .. } => (
                format!("SetDeviceState({to:?}, from {from:?})"),
                active::with(|m, nt| ks_pin::call_set_device_state(nt, m, pin, to as u32, from as u32)),
            ),
            Action::PinChangeFormat { width, height, .. } => {
                let wanted = self.format_sized(width, height);
                let bytes = build_data_format(&wanted).as_bytes().to_vec();
                let status = active::with(|m, nt| ks_pin::set_data_format(nt, m, pin, &bytes));
                if status == Some(0) {
                    self.accept_format(i, wanted);
                }
                let held = self.image_pin_format(card, channel).map_or_else(|| "unknown".to_string(), |(w, h)| format!("{w}x{h}"));
                (format!("SetDataFormat to {width}x{height} in {before:?} (KS's connection format now {held})"), status)
            }
            _ => (format!("SetDataFormat in Some({before:?})"), active::with(|m, nt| ks_pin::set_data_format(nt, m, pin, &format))),
        };
        let status = status.map_or(STATUS_DEVICE_REMOVED, |s| NtStatus::from_ne_bytes(s.to_ne_bytes()));
        let after = state_of(active::with(|_, nt| Ok(ks_pin::state(nt, pin))).flatten());
        if matches!(action, Action::PinSetFormat { .. } | Action::PinChangeFormat { .. }) {
            self.record_status(format!("card {card} channel {channel}: {what}"), status);
        } else {
            self.record_status(format!("card {card} channel {channel}: {what} in {before:?}"), status);
        }
        self.settle_pin(i, before, after, now, hooks);
    }
}

/// What the application does on one channel's KS device (the device on
/// the bus image's child PDO `pdo`): a filter, the data intersection with
/// its range, the pin with the format it wants and its buffers (stream
/// headers of `header_size` bytes), its master clock when it assigns one,
/// to `KSSTATE_PAUSE`, the buffers queued, to `KSSTATE_RUN`. A refusal
/// closes what was opened.
#[allow(clippy::too_many_arguments, reason = "what the application brings to the pin, each its own value")]
fn open_channel_pin(
    nt: &mut crate::nt::Nt,
    m: &mut capdma_winvm::Machine,
    pdo: u64,
    caller_range: &[u8],
    wanted: &[u8],
    buffers: Vec<AppBuffer>,
    count: u32,
    header_size: u32,
    reference_clock: bool,
) -> Result<Result<Opened, Refused>, capdma_winvm::Stop> {
        let Some(device) = ks::device_on(nt, pdo) else {
            return Ok(Err(Refused { step: "AVStream device (AddDevice on the child PDO)", status: STATUS_DEVICE_NOT_READY.cast_unsigned() }));
        };
        let filter = match ks_pin::open_filter(nt, m, device)? {
            Ok(filter) => filter,
            Err(status) => return Ok(Err(Refused { step: "filter creation", status })),
        };
        if let Err(status) = ks_pin::data_intersection(nt, m, filter, 0, caller_range)? {
            ks_pin::close_filter(nt, m, filter)?;
            return Ok(Err(Refused { step: "KSPROPERTY_PIN_DATAINTERSECTION", status }));
        }
        let pin = match ks_pin::create_pin(nt, m, filter, 0, wanted, buffers, header_size)? {
            Ok(pin) => pin,
            Err(status) => {
                ks_pin::close_filter(nt, m, filter)?;
                return Ok(Err(Refused { step: "pin creation (SetDataFormat, Create)", status }));
            }
        };
        if reference_clock {
            // KSPROPERTY_STREAM_MASTERCLOCK, while the pin is still in KSSTATE_STOP.
            ks::clock::assign_master_clock(nt, pin);
        }
        // As a capture client does: to KSSTATE_PAUSE, the buffers queued, then KSSTATE_RUN.
        let mut status = ks_pin::set_state(nt, m, pin, crate::nt::ks::pin::KSSTATE_PAUSE)?;
        if status == 0 {
            for b in 0..count {
                ks_pin::submit(nt, m, pin, b)?;
            }
            status = ks_pin::set_state(nt, m, pin, KSSTATE_RUN)?;
        }
        if status != 0 {
            ks_pin::close_pin(nt, m, pin)?;
            ks_pin::close_filter(nt, m, filter)?;
            return Ok(Err(Refused { step: "KSSTATE_RUN", status }));
        }
        let flags = nt.ks.pins.get(&pin.0).map_or(0, |p| p.flags);
        let Some(queue) = ks_pin::queue(nt, pin) else {
            return Ok(Err(Refused { step: "pin creation", status: STATUS_DEVICE_NOT_READY.cast_unsigned() }));
        };
        Ok(Ok(Opened { filter, pin, queue, flags }))
}

impl Machine {
    /// Runs `f` on the machine's emulated kernel: directly when the machine
    /// holds it, through the active context inside [`Machine::in_image`]
    /// (where it is lent out); `None` for a machine running the cores.
    fn on_kernel<R>(&mut self, f: impl FnOnce(&mut capdma_winvm::Machine, &mut crate::nt::Nt) -> R) -> Option<R> {
        if !self.runs_image() {
            return None;
        }
        match self.image.as_mut() {
            Some(world) => Some(f(&mut world.sys.machine, &mut world.sys.nt)),
            None => active::with(|m, nt| Ok(f(m, nt))),
        }
    }

    /// Driver Verifier's low resources simulation in the machine's emulated
    /// kernel: the `nth` call of `kind` from now on (0: the next one) fails
    /// ([`LowResources::fail_at`]; replaces an earlier one of the kind).
    /// Returns the index failed (counted from boot); `None` for a machine
    /// running the cores.
    pub fn image_low_resources(&mut self, kind: LowResources, nth: u64) -> Option<u64> {
        self.on_kernel(|_, nt| {
            let index = kind.made(nt) + nth;
            kind.fail_at(nt, index);
            index
        })
    }

    /// Who asked for each pool allocation the low resources simulation
    /// failed (`symbol+offset` of the caller), in order; empty for a
    /// machine running the cores.
    pub fn image_pool_failures(&mut self) -> Vec<String> {
        self.on_kernel(|_, nt| nt.pool.failed_callers.clone()).unwrap_or_default()
    }

    /// Calls of `kind` the images (and the emulated `ks.sys` for them) made
    /// since boot; `None` for a machine running the cores.
    pub fn image_calls(&mut self, kind: LowResources) -> Option<u64> {
        self.on_kernel(|_, nt| kind.made(nt))
    }

    /// The kernel stream headers of the application's buffers on every open
    /// image pin (`--drivers images`): for each, its `Size` and whether it
    /// sits right against an unmapped guard page (its bytes mapped, the
    /// first byte past its 8-aligned end not: a minidriver reading or
    /// writing past `Size` faults). Empty for a machine without the
    /// AVStream image.
    pub fn image_stream_headers(&mut self) -> Vec<(u32, bool)> {
        self.on_kernel(|m, nt| {
            nt.ks
                .pins
                .values()
                .flat_map(|p| p.buffers.iter().map(move |b| (p.header_size, b.header_va)))
                .map(|(size, va)| {
                    let end = va + u64::from(size).div_ceil(8) * 8;
                    (size, m.is_mapped(va, u64::from(size)) && !m.is_mapped(end, 1))
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// The connection format (`KSPIN.ConnectionFormat`, as KS holds it) of
    /// the open image pin of `channel` of `card`: width and height of its
    /// `KS_VIDEOINFOHEADER`; `None` without such a pin.
    pub fn image_pin_format(&mut self, card: u32, channel: u32) -> Option<(u32, u32)> {
        let i = self.channel_position(card, channel)?;
        let (_, pin) = self.channels[i].image_pin?;
        self.on_kernel(|m, _| {
            let format = m.read_u64(pin.0 + crate::nt::layout::ks::kspin::CONNECTION_FORMAT).ok()?;
            let size = m.read_u32(format).ok()?;
            let mut bytes = vec![0u8; usize::try_from(size.min(4096)).ok()?];
            m.read(format, &mut bytes).ok()?;
            let video = capdma_avstream::format::validate_data_format(&bytes).ok()?;
            Some((video.width, video.height))
        })
        .flatten()
    }
}
