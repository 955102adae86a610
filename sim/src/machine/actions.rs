//! Things that happen to a running machine at a chosen virtual time, from
//! outside the drivers: board faults, Plug and Play requests, the
//! application changing a pin's state or holding its buffers. The fault
//! matrix is built from these ([`crate::machine::Machine::schedule`]).
use capdma_avstream::state::KsState;
use capdma_interface::status::{status_name, NtStatus};

use crate::board::BoardFault;

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
