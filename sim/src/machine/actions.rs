//! Things that happen to a running machine at a chosen virtual time, from
//! outside the drivers: board faults, Plug and Play requests, the
//! application changing a pin's state or holding its buffers. The fault
//! matrix is built from these ([`crate::machine::Machine::schedule`]).
//!
//! Here: the actions ([`Action`]) and the statuses they saw
//! ([`StatusRecord`]), and the machine carrying them out when their time
//! comes.
use std::pin::Pin;

use capdma_avstream::format::{build_data_format, VideoFormat};
use capdma_avstream::pin::CapturePin;
use capdma_avstream::state::KsState;
use capdma_interface::status::{status_name, NtStatus, STATUS_DEVICE_NOT_READY, STATUS_SUCCESS};
use zerocopy::IntoBytes;

use super::build::Machine;
use super::events::Event;
use super::run::RunHooks;
use crate::board::BoardFault;
use crate::ks::SimKsPin;
use crate::nt::verifier::LowResources;

/// One scheduled action. Cards and channels are zero-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Queues `fault` on the card's board: it takes effect at the next
    /// capture (of its channel, for channel faults).
    InjectFault {
        /// The card.
        card: u32,
        /// The fault.
        fault: BoardFault,
    },
    /// Applies `fault` on the card's board now.
    InjectFaultNow {
        /// The card.
        card: u32,
        /// The fault.
        fault: BoardFault,
    },
    /// The board raises `bits` of `INT_STATUS` with nothing behind them,
    /// `count` times, `period_100ns` apart (an interrupt storm of the card's
    /// own bits).
    StatusStorm {
        /// The card.
        card: u32,
        /// `INT_STATUS` bits to raise.
        bits: u32,
        /// Assertions still to make.
        count: u32,
        /// Time between assertions, 100-ns units (at least 1).
        period_100ns: u64,
    },
    /// The application walks the pin to `to` (`KsState` steps, as KS does);
    /// the status is recorded.
    PinState {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
        /// The target state.
        to: KsState,
    },
    /// One `CapturePin::transition(to)` (a single KS step; a jump over a
    /// state is refused); the status is recorded.
    PinTransition {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
        /// The target state.
        to: KsState,
    },
    /// `AVStrMiniPinSetDeviceState(to, from)` exactly as given (a `from`
    /// that is not the pin's state is refused); the status is recorded.
    PinDeviceState {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
        /// `ToState`.
        to: KsState,
        /// `FromState`.
        from: KsState,
    },
    /// `SetDataFormat` with the pin's current format, in whatever state the
    /// pin is; the status is recorded.
    PinSetFormat {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
    },
    /// The application asks for the pin's pixel format at another size,
    /// `width`×`height` (its stride the line's bytes):
    /// `KSPROPERTY_CONNECTION_DATAFORMAT`, the minidriver's
    /// `SetDataFormat` (accepted only in `KSSTATE_STOP`); the status is
    /// recorded, and only an accepted format becomes what the application
    /// expects (its buffers stay: ask for a smaller size).
    PinChangeFormat {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
        /// Width in pixels.
        width: u32,
        /// Height in pixel rows.
        height: u32,
    },
    /// The application closes the pin's handle without stopping it first
    /// (`IRP_MJ_CLOSE`: KS walks it to `KSSTATE_STOP`, the minidriver's
    /// `Close`, every frame comes back) and frees its buffers; the status
    /// is recorded. The channel captures nothing more for the application.
    PinClose {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
    },
    /// Driver Verifier's low resources simulation in the emulated kernel
    /// (`--drivers bus-image`, `images`): the `nth` call of `kind` from
    /// now on (0: the next one) fails ([`Machine::image_low_resources`]).
    /// Nothing with the cores.
    ImageLowResources {
        /// The kind of call.
        kind: LowResources,
        /// Which one from now on (0: the next).
        nth: u64,
    },
    /// The application stops (`true`) or resumes (`false`) queueing its
    /// buffers again.
    AppHold {
        /// The card.
        card: u32,
        /// The channel.
        channel: u32,
        /// Hold (`true`) or release (`false`).
        hold: bool,
    },
    /// Plug and Play's orderly removal of the card (a user disabling it), in
    /// Windows' order: `IRP_MN_QUERY_REMOVE_DEVICE` down every child stack
    /// (the AVStream device vetoes it with `STATUS_DEVICE_BUSY` while a pin
    /// is open), then down the bus stack; a veto ends it with
    /// `IRP_MN_CANCEL_REMOVE_DEVICE` to every stack queried. Without a veto
    /// `IRP_MN_REMOVE_DEVICE` goes to the children (interface references
    /// dropped) and then to the bus (everything released). Every status is
    /// recorded.
    RequestRemoval {
        /// The card.
        card: u32,
    },
    /// Plug and Play's surprise-removal sequence for the card (after its
    /// board vanished): `IRP_MN_SURPRISE_REMOVAL` down the child stacks and
    /// the bus stack (the interrupt is disconnected), the application
    /// closes its pins, `IRP_MN_REMOVE_DEVICE` of the children (interface
    /// references dropped) and of the bus (buffers freed, adapter put).
    SurpriseRemoval {
        /// The card.
        card: u32,
    },
}

/// A status an action (or the teardown) saw, for the fault matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRecord {
    /// Virtual time, 100-ns units.
    pub at_100ns: u64,
    /// What was done (`card 0 channel 0: KSSTATE_RUN -> KSSTATE_PAUSE`).
    pub what: String,
    /// The NTSTATUS it returned.
    pub status: NtStatus,
}

impl std::fmt::Display for StatusRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, status_name(self.status))
    }
}

impl Machine {
    /// Schedules `action` at virtual time `at_100ns` (not before now).
    pub fn schedule(&mut self, at_100ns: u64, action: Action) {
        let index = u32::try_from(self.actions.len()).unwrap_or(u32::MAX);
        self.actions.push(action);
        self.timeline.schedule(at_100ns, Event::Action { index });
    }

    /// Runs scheduled action `index`.
    pub(super) fn act(&mut self, index: u32, now: u64, hooks: &mut RunHooks<'_>) {
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
            Action::PinState { .. }
            | Action::PinTransition { .. }
            | Action::PinDeviceState { .. }
            | Action::PinSetFormat { .. }
            | Action::PinChangeFormat { .. }
                if self.runs_avstream_image() =>
            {
                self.image_pin_action(&action, now, hooks);
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
            Action::PinChangeFormat { card, channel, width, height } => {
                let Some(i) = self.channel_position(card, channel) else { return };
                let wanted = self.format_sized(width, height);
                let bytes = build_data_format(&wanted);
                let run = &self.channels[i];
                let status = match run.pin.as_ref() {
                    Some(pin) => pin.set_data_format(bytes.as_bytes()).err().unwrap_or(STATUS_SUCCESS),
                    None => STATUS_DEVICE_NOT_READY,
                };
                let state = run.pin.as_ref().map(|p| p.state());
                if status == STATUS_SUCCESS {
                    self.accept_format(i, wanted);
                }
                self.record_status(format!("card {card} channel {channel}: SetDataFormat to {width}x{height} in {state:?}"), status);
            }
            Action::PinClose { card, channel } => {
                if let Some(i) = self.channel_position(card, channel) {
                    self.close_channel_as(i, now, hooks, false);
                }
            }
            Action::ImageLowResources { kind, nth } => {
                let _ = self.image_low_resources(kind, nth);
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

    /// The application's format at `width`×`height`: the configured pixel
    /// format and frame rate, the stride the line's bytes.
    pub(super) fn format_sized(&self, width: u32, height: u32) -> VideoFormat {
        let c = &self.config;
        let stride = c.format.line_bytes(width).unwrap_or(u32::MAX);
        let lines = c.format.lines(height).unwrap_or(u32::MAX);
        VideoFormat {
            pixel: c.format,
            width,
            height,
            stride,
            image_bytes: stride.saturating_mul(lines),
            frame_interval: u32::try_from(c.frame_interval_100ns()).unwrap_or(u32::MAX),
        }
    }

    /// The driver accepted `format` for channel `i`: the application now
    /// expects its frames in it (the same source at the new size).
    pub(super) fn accept_format(&mut self, i: usize, format: VideoFormat) {
        let run = &mut self.channels[i];
        run.format = format;
        run.pattern.width = format.width;
        run.pattern.height = format.height;
    }

    /// After a pin went from `before` to `after`: KS stops or starts
    /// processing, a stopped pin's queue is flushed back to the application,
    /// a restarted one gets the application's buffers again.
    pub(super) fn settle_pin(&mut self, i: usize, before: KsState, after: KsState, now: u64, hooks: &mut RunHooks<'_>) {
        let run = &self.channels[i];
        // With the AVStream image, the emulated KS keeps its own queue in step.
        let image = run.image_pin.is_some();
        if after != KsState::Run && !image {
            run.ks.set_running(false);
        }
        if after == KsState::Stop && before != KsState::Stop {
            if !image {
                run.ks.flush_on_stop();
            }
            self.take_completed(i, now, hooks);
        }
        if after == KsState::Run && before != KsState::Run {
            if !image {
                self.channels[i].ks.set_running(true);
            }
            self.requeue_all_held(i, now);
        }
        if let Some(pin) = self.channels[i].pin.as_ref() {
            self.channels[i].log.pin_stats = Some(pin.stats());
        }
    }
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
