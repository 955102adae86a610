//! The pin's `KSSTATE` and the one-step transitions KS makes.
//!
//! KS moves a pin one state at a time (`KSSTATE_STOP` <-> `KSSTATE_ACQUIRE`
//! <-> `KSSTATE_PAUSE` <-> `KSSTATE_RUN`), calling
//! `AVStrMiniPinSetDeviceState(Pin, ToState, FromState)` for each step. The
//! pin does the same: a request two or more states away is walked through
//! the states between, one step at a time, as KS itself would.
use core::sync::atomic::{AtomicU32, Ordering};
use zerocopy::{Immutable, IntoBytes, TryFromBytes};

/// `KSSTATE_STOP` (ks.h).
pub const KSSTATE_STOP: u32 = 0;
/// `KSSTATE_ACQUIRE` (ks.h).
pub const KSSTATE_ACQUIRE: u32 = 1;
/// `KSSTATE_PAUSE` (ks.h).
pub const KSSTATE_PAUSE: u32 = 2;
/// `KSSTATE_RUN` (ks.h).
pub const KSSTATE_RUN: u32 = 3;

/// A `KSSTATE`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, TryFromBytes, IntoBytes, Immutable)]
pub enum KsState {
    /// `KSSTATE_STOP`: no resources held.
    Stop = KSSTATE_STOP,
    /// `KSSTATE_ACQUIRE`: the completion callback is registered, allocators exist.
    Acquire = KSSTATE_ACQUIRE,
    /// `KSSTATE_PAUSE`: ready; the channel is not running.
    Pause = KSSTATE_PAUSE,
    /// `KSSTATE_RUN`: the channel runs and frames flow.
    Run = KSSTATE_RUN,
}

impl KsState {
    /// The state of a raw `KSSTATE` value, `None` for values ks.h does not define.
    #[must_use]
    pub fn from_raw(value: u32) -> Option<Self> {
        zerocopy::try_transmute!(value).ok()
    }

    /// The raw `KSSTATE` value.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The next state on the way from `self` to `target`, one step, or
    /// `None` when already there.
    #[must_use]
    pub fn step_toward(self, target: Self) -> Option<Self> {
        let from = self as u32;
        let to = target as u32;
        let next = match to.cmp(&from) {
            core::cmp::Ordering::Greater => from + 1,
            core::cmp::Ordering::Less => from - 1,
            core::cmp::Ordering::Equal => return None,
        };
        Self::from_raw(next)
    }

    /// Whether `self -> to` is a single KS step (adjacent states).
    #[must_use]
    pub const fn is_one_step(self, to: Self) -> bool {
        let (a, b) = (self as u32, to as u32);
        a.abs_diff(b) == 1
    }

    /// The name ks.h gives the state.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Stop => "KSSTATE_STOP",
            Self::Acquire => "KSSTATE_ACQUIRE",
            Self::Pause => "KSSTATE_PAUSE",
            Self::Run => "KSSTATE_RUN",
        }
    }
}

/// A `KsState` readable from any context (Process, the completion DPC).
#[derive(Debug)]
pub struct StateCell(AtomicU32);

impl StateCell {
    /// A cell holding `KSSTATE_STOP`.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU32::new(KSSTATE_STOP))
    }

    /// The current state.
    #[must_use]
    pub fn get(&self) -> KsState {
        KsState::from_raw(self.0.load(Ordering::Acquire)).unwrap_or(KsState::Stop)
    }

    /// Records a new state.
    pub fn set(&self, state: KsState) {
        self.0.store(state.raw(), Ordering::Release);
    }
}

impl Default for StateCell {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_walk_one_state_at_a_time() {
        assert_eq!(KsState::Stop.step_toward(KsState::Run), Some(KsState::Acquire));
        assert_eq!(KsState::Acquire.step_toward(KsState::Run), Some(KsState::Pause));
        assert_eq!(KsState::Run.step_toward(KsState::Stop), Some(KsState::Pause));
        assert_eq!(KsState::Pause.step_toward(KsState::Pause), None);
        assert!(KsState::Pause.is_one_step(KsState::Run));
        assert!(!KsState::Stop.is_one_step(KsState::Pause));
        assert!(!KsState::Run.is_one_step(KsState::Run));
    }

    #[test]
    fn raw_values_are_ks_h() {
        for raw in 0..4 {
            assert_eq!(KsState::from_raw(raw).map(KsState::raw), Some(raw));
        }
        assert_eq!(KsState::from_raw(4), None);
        assert_eq!(KsState::from_raw(u32::MAX), None);
        let cell = StateCell::new();
        assert_eq!(cell.get(), KsState::Stop);
        cell.set(KsState::Run);
        assert_eq!(cell.get(), KsState::Run);
    }
}
