//! The Plug and Play state of the FDO and of each child PDO, and which
//! state-changing IRP is legal when.
//!
//! ```text
//!            Start                QueryStop               Stop
//! NotStarted ─────► Started ◄──────────────► StopPending ─────► Stopped
//!      ▲  │          │  ▲       CancelStop                       │  │
//!      │  │ QueryRemove │ CancelRemove (back to the state before)  │  │ Start → Started
//!      │  └────────► RemovePending ◄──────────────────────────────┘  │
//!      │ RemoveKeep (PDO still present)   SurpriseRemoval (from any) → SurpriseRemoved
//!      └───────────────────────────── Remove (from any) → Deleted
//! ```
//!
//! | event | legal from | to | otherwise |
//! |---|---|---|---|
//! | `Start` | `NotStarted`, `Stopped` | `Started` | `STATUS_INVALID_DEVICE_REQUEST`; `STATUS_DELETE_PENDING` while remove-pending; `STATUS_NO_SUCH_DEVICE` once surprise-removed |
//! | `QueryStop` | `Started` | `StopPending` | as `Start` |
//! | `CancelStop` | any | `Started` from `StopPending`, else unchanged | never fails (the IRP must succeed) |
//! | `Stop` | any | `Stopped` from `Started`/`StopPending`, else unchanged | never fails |
//! | `QueryRemove` | `NotStarted`, `Started`, `Stopped` | `RemovePending` (the state before is kept) | as `Start` |
//! | `CancelRemove` | any | the state before from `RemovePending`, else unchanged | never fails |
//! | `SurpriseRemoval` | any | `SurpriseRemoved` | never fails |
//! | `Remove` | any | `Deleted` | never fails |
//! | `RemoveKeep` | any | `NotStarted` (a child PDO that is still present survives its removal) | never fails |
//!
//! Every event on a `Deleted` device fails with `STATUS_NO_SUCH_DEVICE`.
//! [`PnpStateCell`] holds the state in one atomic, so the ISR-free
//! readers (the child's query-interface path) never take a lock.
use super::{STATUS_DELETE_PENDING, STATUS_NO_SUCH_DEVICE};
use capdma_interface::status::{NtStatus, STATUS_INVALID_DEVICE_REQUEST};
use core::sync::atomic::{AtomicU16, Ordering};
use zerocopy::{Immutable, IntoBytes, TryFromBytes};

/// A device object's Plug and Play state.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, Immutable)]
pub enum PnpState {
    /// Created (`AddDevice` / enumeration), or a child after a removal that kept it.
    NotStarted = 0,
    /// `IRP_MN_START_DEVICE` succeeded.
    Started = 1,
    /// `IRP_MN_QUERY_STOP_DEVICE` succeeded.
    StopPending = 2,
    /// `IRP_MN_STOP_DEVICE` (resources released for a rebalance).
    Stopped = 3,
    /// `IRP_MN_QUERY_REMOVE_DEVICE` succeeded.
    RemovePending = 4,
    /// `IRP_MN_SURPRISE_REMOVAL`.
    SurpriseRemoved = 5,
    /// `IRP_MN_REMOVE_DEVICE`: the device object is (being) deleted.
    Deleted = 6,
}

impl PnpState {
    /// The state stored as `value`; a value no state has (never stored)
    /// reads as [`Self::Deleted`], the state that serves nothing.
    fn from_u8(value: u8) -> Self {
        zerocopy::try_transmute!(value).unwrap_or(Self::Deleted)
    }

    /// Whether a child PDO in this state hands out interfaces
    /// (`IRP_MN_QUERY_INTERFACE`): not once surprise-removed or deleted.
    #[must_use]
    pub const fn serves_interfaces(self) -> bool {
        !matches!(self, Self::SurpriseRemoved | Self::Deleted)
    }
}

/// A state-changing Plug and Play IRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PnpEvent {
    /// `IRP_MN_START_DEVICE` (applied after the start succeeded).
    Start,
    /// `IRP_MN_QUERY_STOP_DEVICE`.
    QueryStop,
    /// `IRP_MN_CANCEL_STOP_DEVICE`.
    CancelStop,
    /// `IRP_MN_STOP_DEVICE`.
    Stop,
    /// `IRP_MN_QUERY_REMOVE_DEVICE`.
    QueryRemove,
    /// `IRP_MN_CANCEL_REMOVE_DEVICE`.
    CancelRemove,
    /// `IRP_MN_SURPRISE_REMOVAL`.
    SurpriseRemoval,
    /// `IRP_MN_REMOVE_DEVICE` that deletes the device object.
    Remove,
    /// `IRP_MN_REMOVE_DEVICE` of a child PDO that is still present: it stays.
    RemoveKeep,
}

/// What the FDO releases for a state-changing IRP.
///
/// | IRP | release | why |
/// |---|---|---|
/// | `IRP_MN_STOP_DEVICE` | [`Release::Everything`] | the resources are being rebalanced; no child holds the interface (the query-stop refused otherwise) |
/// | `IRP_MN_SURPRISE_REMOVAL` | [`Release::Hardware`]: interrupt, watchdog, DPCs, BAR0 | the hardware resources must be given up now, but a child may still hold the interface and read slot memory until its own removal: common buffers and the adapter wait for `IRP_MN_REMOVE_DEVICE` |
/// | `IRP_MN_REMOVE_DEVICE` | [`Release::Everything`] | last chance; the children are gone |
/// | anything else | [`Release::Nothing`] | — |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Keep everything.
    Nothing,
    /// `BusDevice::stop_engines`, disconnect the interrupt, cancel the
    /// watchdog, flush DPCs, unmap BAR0.
    Hardware,
    /// [`Release::Hardware`] plus `BusDevice::stop` (common buffers freed,
    /// the DMA adapter put last) before BAR0 is unmapped.
    Everything,
}

/// The FDO's [`Release`] for `event`.
#[must_use]
pub const fn fdo_release(event: PnpEvent) -> Release {
    match event {
        PnpEvent::Stop | PnpEvent::Remove | PnpEvent::RemoveKeep => Release::Everything,
        PnpEvent::SurpriseRemoval => Release::Hardware,
        _ => Release::Nothing,
    }
}

/// A state change: the state before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before the event.
    pub from: PnpState,
    /// The state after it.
    pub to: PnpState,
}

/// The state and the state before a pending query-remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PnpMachine {
    state: PnpState,
    /// The state `CancelRemove` returns to.
    before_remove: PnpState,
}

impl Default for PnpMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl PnpMachine {
    /// A device that was just created.
    #[must_use]
    pub const fn new() -> Self {
        Self { state: PnpState::NotStarted, before_remove: PnpState::NotStarted }
    }

    /// The current state.
    #[must_use]
    pub const fn state(self) -> PnpState {
        self.state
    }

    const fn with(self, state: PnpState) -> Self {
        Self { state, before_remove: self.before_remove }
    }

    /// The status a refused query or start gets in the current state.
    const fn refusal(self) -> NtStatus {
        match self.state {
            PnpState::RemovePending => STATUS_DELETE_PENDING,
            PnpState::SurpriseRemoved | PnpState::Deleted => STATUS_NO_SUCH_DEVICE,
            _ => STATUS_INVALID_DEVICE_REQUEST,
        }
    }

    /// The machine after `event` (see the module table).
    ///
    /// # Errors
    /// The NTSTATUS to fail the IRP with when `event` is not legal now.
    pub const fn next(self, event: PnpEvent) -> Result<Self, NtStatus> {
        use PnpState as S;
        if matches!(self.state, S::Deleted) {
            return Err(STATUS_NO_SUCH_DEVICE);
        }
        let next = match (event, self.state) {
            (PnpEvent::Start, S::NotStarted | S::Stopped) | (PnpEvent::CancelStop, S::StopPending) => {
                self.with(S::Started)
            }
            (PnpEvent::QueryStop, S::Started) => self.with(S::StopPending),
            (PnpEvent::Stop, S::Started | S::StopPending) => self.with(S::Stopped),
            (PnpEvent::QueryRemove, S::NotStarted | S::Started | S::Stopped) => {
                Self { state: S::RemovePending, before_remove: self.state }
            }
            (PnpEvent::Start | PnpEvent::QueryStop | PnpEvent::QueryRemove, _) => return Err(self.refusal()),
            (PnpEvent::CancelRemove, S::RemovePending) => self.with(self.before_remove),
            (PnpEvent::CancelStop | PnpEvent::Stop | PnpEvent::CancelRemove, _) => self,
            (PnpEvent::SurpriseRemoval, _) => self.with(S::SurpriseRemoved),
            (PnpEvent::Remove, _) => self.with(S::Deleted),
            (PnpEvent::RemoveKeep, _) => Self::new(),
        };
        Ok(next)
    }

    const fn pack(self) -> u16 {
        (self.state as u16) | ((self.before_remove as u16) << 8)
    }

    fn unpack(value: u16) -> Self {
        let [state, before] = value.to_le_bytes();
        Self { state: PnpState::from_u8(state), before_remove: PnpState::from_u8(before) }
    }
}

/// A [`PnpMachine`] in one atomic word, shared between the Plug and Play
/// dispatch (which the Plug and Play manager serializes per device) and
/// readers on other threads.
#[derive(Debug)]
pub struct PnpStateCell(AtomicU16);

impl Default for PnpStateCell {
    fn default() -> Self {
        Self::new()
    }
}

impl PnpStateCell {
    /// A device that was just created.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU16::new(PnpMachine::new().pack()))
    }

    /// The current state.
    pub fn state(&self) -> PnpState {
        PnpMachine::unpack(self.0.load(Ordering::Acquire)).state()
    }

    /// What [`Self::apply`] would do now, without doing it (to refuse an
    /// IRP before any work).
    ///
    /// # Errors
    /// As [`PnpMachine::next`].
    pub fn check(&self, event: PnpEvent) -> Result<Transition, NtStatus> {
        let machine = PnpMachine::unpack(self.0.load(Ordering::Acquire));
        let next = machine.next(event)?;
        Ok(Transition { from: machine.state(), to: next.state() })
    }

    /// Applies `event` atomically.
    ///
    /// # Errors
    /// As [`PnpMachine::next`]; the state is unchanged then.
    pub fn apply(&self, event: PnpEvent) -> Result<Transition, NtStatus> {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let machine = PnpMachine::unpack(current);
            let next = machine.next(event)?;
            match self.0.compare_exchange_weak(current, next.pack(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Transition { from: machine.state(), to: next.state() }),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PnpEvent as E;
    use PnpState as S;

    const ALL_STATES: [S; 7] =
        [S::NotStarted, S::Started, S::StopPending, S::Stopped, S::RemovePending, S::SurpriseRemoved, S::Deleted];
    const ALL_EVENTS: [E; 9] = [
        E::Start,
        E::QueryStop,
        E::CancelStop,
        E::Stop,
        E::QueryRemove,
        E::CancelRemove,
        E::SurpriseRemoval,
        E::Remove,
        E::RemoveKeep,
    ];

    fn run(events: &[E]) -> Result<S, NtStatus> {
        let cell = PnpStateCell::new();
        for &e in events {
            cell.apply(e)?;
        }
        Ok(cell.state())
    }

    fn at(state: S) -> PnpMachine {
        PnpMachine { state, before_remove: S::NotStarted }
    }

    #[test]
    fn normal_life_of_an_fdo() {
        assert_eq!(run(&[E::Start]), Ok(S::Started));
        assert_eq!(run(&[E::Start, E::QueryStop, E::Stop, E::Start]), Ok(S::Started), "rebalance");
        assert_eq!(run(&[E::Start, E::QueryStop, E::CancelStop]), Ok(S::Started));
        assert_eq!(run(&[E::Start, E::QueryRemove, E::CancelRemove]), Ok(S::Started));
        assert_eq!(run(&[E::Start, E::QueryRemove, E::Remove]), Ok(S::Deleted));
        assert_eq!(run(&[E::Start, E::SurpriseRemoval, E::Remove]), Ok(S::Deleted));
    }

    #[test]
    fn cancel_remove_returns_to_the_state_before() {
        assert_eq!(run(&[E::Start, E::QueryStop, E::Stop, E::QueryRemove, E::CancelRemove]), Ok(S::Stopped));
        assert_eq!(run(&[E::QueryRemove, E::CancelRemove]), Ok(S::NotStarted));
    }

    #[test]
    fn a_present_child_survives_its_removal() {
        assert_eq!(run(&[E::Start, E::QueryRemove, E::RemoveKeep]), Ok(S::NotStarted));
        assert_eq!(run(&[E::Start, E::QueryRemove, E::RemoveKeep, E::Start]), Ok(S::Started), "restarted");
    }

    #[test]
    fn illegal_queries_and_starts_are_refused_with_the_right_status() {
        assert_eq!(run(&[E::Start, E::Start]), Err(STATUS_INVALID_DEVICE_REQUEST));
        assert_eq!(run(&[E::QueryStop]), Err(STATUS_INVALID_DEVICE_REQUEST), "not started");
        assert_eq!(run(&[E::Start, E::QueryStop, E::QueryRemove]), Err(STATUS_INVALID_DEVICE_REQUEST));
        assert_eq!(run(&[E::Start, E::QueryRemove, E::Start]), Err(STATUS_DELETE_PENDING));
        assert_eq!(run(&[E::Start, E::QueryRemove, E::QueryRemove]), Err(STATUS_DELETE_PENDING));
        assert_eq!(run(&[E::Start, E::SurpriseRemoval, E::Start]), Err(STATUS_NO_SUCH_DEVICE));
        assert_eq!(run(&[E::Start, E::SurpriseRemoval, E::QueryStop]), Err(STATUS_NO_SUCH_DEVICE));
    }

    #[test]
    fn nothing_is_legal_once_deleted() {
        for e in ALL_EVENTS {
            assert_eq!(at(S::Deleted).next(e), Err(STATUS_NO_SUCH_DEVICE), "{e:?}");
        }
    }

    #[test]
    fn must_succeed_irps_never_fail_before_deletion() {
        for s in ALL_STATES.into_iter().filter(|&s| s != S::Deleted) {
            for e in [E::CancelStop, E::Stop, E::CancelRemove, E::SurpriseRemoval, E::Remove, E::RemoveKeep] {
                assert!(at(s).next(e).is_ok(), "{e:?} from {s:?}");
            }
        }
    }

    #[test]
    fn every_state_and_event_has_an_answer_and_round_trips() {
        for s in ALL_STATES {
            for before in ALL_STATES {
                let m = PnpMachine { state: s, before_remove: before };
                assert_eq!(PnpMachine::unpack(m.pack()), m);
                for e in ALL_EVENTS {
                    if let Ok(next) = m.next(e) {
                        assert_eq!(PnpMachine::unpack(next.pack()), next);
                    }
                }
            }
        }
    }

    #[test]
    fn refused_events_leave_the_cell_unchanged() {
        let cell = PnpStateCell::new();
        cell.apply(E::Start).unwrap();
        assert_eq!(cell.apply(E::Start), Err(STATUS_INVALID_DEVICE_REQUEST));
        assert_eq!(cell.state(), S::Started);
        assert_eq!(cell.check(E::QueryStop), Ok(Transition { from: S::Started, to: S::StopPending }));
        assert_eq!(cell.state(), S::Started, "check changes nothing");
        assert_eq!(cell.apply(E::QueryStop), Ok(Transition { from: S::Started, to: S::StopPending }));
    }

    #[test]
    fn surprise_removal_keeps_the_dma_resources_until_the_removal() {
        assert_eq!(fdo_release(E::SurpriseRemoval), Release::Hardware);
        assert_eq!(fdo_release(E::Remove), Release::Everything);
        assert_eq!(fdo_release(E::Stop), Release::Everything);
        for e in [E::Start, E::QueryStop, E::CancelStop, E::QueryRemove, E::CancelRemove] {
            assert_eq!(fdo_release(e), Release::Nothing, "{e:?}");
        }
    }

    #[test]
    fn interfaces_are_served_until_surprise_removal() {
        for s in ALL_STATES {
            assert_eq!(s.serves_interfaces(), !matches!(s, S::SurpriseRemoved | S::Deleted));
        }
    }
}
