//! The simulated processor's IRQL (one processor).
//!
//! Models `KeGetCurrentIrql`, `KeRaiseIrql`, `KeLowerIrql`, the interrupt
//! dispatcher raising to the device IRQL around an ISR, and the DPC
//! dispatcher running DPCs at `DISPATCH_LEVEL`. Every misuse that Windows
//! would bugcheck on is recorded in [`Violations`] instead, and the IRQL is
//! left as it was, so the run can continue.
use crate::violations::{ViolationKind, Violations};
use std::cell::RefCell;
use std::rc::Rc;

pub use capdma_interface::kernel::{Irql, APC_LEVEL, DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};

/// The device IRQL (DIRQL) the simulated board's interrupt is delivered at.
pub const DEVICE_LEVEL: Irql = 5;

/// The name of an IRQL value for messages.
#[must_use]
pub fn irql_name(irql: Irql) -> String {
    match irql {
        PASSIVE_LEVEL => "PASSIVE_LEVEL".to_string(),
        APC_LEVEL => "APC_LEVEL".to_string(),
        DISPATCH_LEVEL => "DISPATCH_LEVEL".to_string(),
        HIGH_LEVEL => "HIGH_LEVEL".to_string(),
        n => format!("DIRQL {n}"),
    }
}

/// What the processor is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// A thread (Plug and Play, KS state changes, `Process` at `PASSIVE_LEVEL`).
    Thread,
    /// A DPC (`KDEFERRED_ROUTINE`).
    Dpc,
    /// An ISR (`KSERVICE_ROUTINE`).
    Isr,
}

#[derive(Debug)]
struct State {
    current: Irql,
    /// Saved (interrupted IRQL, interrupted context, entry IRQL) of each nested ISR/DPC.
    frames: Vec<(Irql, Context, Irql)>,
    context: Context,
    highest: Irql,
}

/// Tracks the IRQL of the simulated processor. A cheap `Clone` handle.
#[derive(Clone, Debug)]
pub struct IrqlTracker {
    state: Rc<RefCell<State>>,
    violations: Violations,
}

impl IrqlTracker {
    /// A processor at `PASSIVE_LEVEL` running a thread.
    #[must_use]
    pub fn new(violations: Violations) -> Self {
        Self {
            state: Rc::new(RefCell::new(State { current: PASSIVE_LEVEL, frames: Vec::new(), context: Context::Thread, highest: PASSIVE_LEVEL })),
            violations,
        }
    }

    /// The violation list this tracker records into.
    #[must_use]
    pub fn violations(&self) -> &Violations {
        &self.violations
    }

    /// `KeGetCurrentIrql()`.
    #[must_use]
    pub fn current(&self) -> Irql {
        self.state.borrow().current
    }

    /// What the processor is running (thread, DPC or ISR).
    #[must_use]
    pub fn context(&self) -> Context {
        self.state.borrow().context
    }

    /// The highest IRQL seen so far.
    #[must_use]
    pub fn highest(&self) -> Irql {
        self.state.borrow().highest
    }

    /// `KeRaiseIrql(new, &old)`: returns the old IRQL. Raising to a level
    /// below the current one is a violation (bugcheck
    /// `IRQL_NOT_GREATER_OR_EQUAL` on Windows); the IRQL is then left unchanged
    /// and the current level returned.
    #[must_use = "the old IRQL is needed for KeLowerIrql"]
    pub fn raise(&self, new: Irql) -> Irql {
        let mut s = self.state.borrow_mut();
        let old = s.current;
        if new < old {
            drop(s);
            self.violations.push(
                ViolationKind::Irql,
                format!("KeRaiseIrql to {} while at {} (raise to a lower IRQL)", irql_name(new), irql_name(old)),
            );
            return old;
        }
        s.current = new;
        s.highest = s.highest.max(new);
        old
    }

    /// `KeLowerIrql(old)`. Lowering to a level above the current one is a
    /// violation (the IRQL is left unchanged); so is lowering below the level
    /// an ISR or DPC was entered at.
    pub fn lower(&self, old: Irql) {
        let mut s = self.state.borrow_mut();
        let current = s.current;
        let floor = s.frames.last().map_or(PASSIVE_LEVEL, |f| f.2);
        if old > current {
            drop(s);
            self.violations.push(
                ViolationKind::Irql,
                format!("KeLowerIrql to {} while at {} (lower to a higher IRQL)", irql_name(old), irql_name(current)),
            );
            return;
        }
        if old < floor {
            let context = s.context;
            drop(s);
            self.violations.push(
                ViolationKind::Irql,
                format!("KeLowerIrql to {} inside a {context:?} entered at {}", irql_name(old), irql_name(floor)),
            );
            return;
        }
        s.current = old;
    }

    /// The interrupt dispatcher enters an ISR at device IRQL `level`: returns
    /// the interrupted IRQL for [`IrqlTracker::leave_isr`]. An interrupt
    /// delivered while the processor is already at or above `level` is a
    /// violation (it would have been masked).
    #[must_use = "the interrupted IRQL is needed for leave_isr"]
    pub fn enter_isr(&self, level: Irql) -> Irql {
        self.enter(level, Context::Isr, "interrupt")
    }

    /// The interrupt dispatcher leaves the ISR entered by
    /// [`IrqlTracker::enter_isr`]. An ISR that returns at another IRQL than
    /// it was entered at is a violation.
    pub fn leave_isr(&self, interrupted: Irql) {
        self.leave(interrupted, Context::Isr);
    }

    /// The DPC dispatcher enters a DPC at `DISPATCH_LEVEL`: returns the
    /// interrupted IRQL for [`IrqlTracker::leave_dpc`]. DPCs only run when
    /// the processor drops below `DISPATCH_LEVEL`; entering one at or above it
    /// is a violation of the machine loop.
    #[must_use = "the interrupted IRQL is needed for leave_dpc"]
    pub fn enter_dpc(&self) -> Irql {
        self.enter(DISPATCH_LEVEL, Context::Dpc, "DPC")
    }

    /// Leaves the DPC entered by [`IrqlTracker::enter_dpc`]. A DPC that
    /// returns at another IRQL than `DISPATCH_LEVEL` is a violation.
    pub fn leave_dpc(&self, interrupted: Irql) {
        self.leave(interrupted, Context::Dpc);
    }

    fn enter(&self, level: Irql, context: Context, what: &str) -> Irql {
        let mut s = self.state.borrow_mut();
        let old = s.current;
        let old_context = s.context;
        if old >= level {
            drop(s);
            self.violations.push(
                ViolationKind::Irql,
                format!("{what} at {} delivered while the processor is at {}", irql_name(level), irql_name(old)),
            );
            s = self.state.borrow_mut();
        }
        s.frames.push((old, old_context, level));
        s.context = context;
        s.current = level.max(old);
        s.highest = s.highest.max(s.current);
        old
    }

    fn leave(&self, interrupted: Irql, context: Context) {
        let mut s = self.state.borrow_mut();
        let Some(&(saved, saved_context, entry)) = s.frames.last() else {
            drop(s);
            self.violations.push(ViolationKind::Irql, format!("leaving a {context:?} that was never entered"));
            return;
        };
        let mut problems = Vec::new();
        if s.context != context {
            problems.push(format!("leaving a {context:?} while in a {:?}", s.context));
        }
        if s.current != entry.max(saved) {
            problems.push(format!(
                "{context:?} returned at {} but was entered at {}",
                irql_name(s.current),
                irql_name(entry.max(saved))
            ));
        }
        if saved != interrupted {
            problems.push(format!(
                "{context:?} left with interrupted IRQL {} but it interrupted {}",
                irql_name(interrupted),
                irql_name(saved)
            ));
        }
        s.frames.pop();
        s.current = saved;
        s.context = saved_context;
        drop(s);
        for p in problems {
            self.violations.push(ViolationKind::Irql, p);
        }
    }

    /// Records a violation unless the processor is at `PASSIVE_LEVEL`
    /// (`op` names the DDI or routine, e.g. `"AllocateCommonBuffer"`).
    /// Returns whether the rule held.
    #[allow(clippy::must_use_candidate, reason = "the check records the violation; the result is for callers that care")]
    pub fn require_passive(&self, op: &str) -> bool {
        self.require_at_most(PASSIVE_LEVEL, op)
    }

    /// Records a violation unless the processor is at or below `DISPATCH_LEVEL`.
    /// Returns whether the rule held.
    #[allow(clippy::must_use_candidate, reason = "the check records the violation; the result is for callers that care")]
    pub fn require_at_most_dispatch(&self, op: &str) -> bool {
        self.require_at_most(DISPATCH_LEVEL, op)
    }

    /// Records a violation unless the processor is at or below `max`.
    /// Returns whether the rule held.
    #[allow(clippy::must_use_candidate, reason = "the check records the violation; the result is for callers that care")]
    pub fn require_at_most(&self, max: Irql, op: &str) -> bool {
        let current = self.current();
        if current > max {
            self.violations.push(
                ViolationKind::Irql,
                format!("{op} called at {} (must be at or below {})", irql_name(current), irql_name(max)),
            );
            return false;
        }
        true
    }

    /// Records a violation unless the processor is exactly at `level`.
    /// Returns whether the rule held.
    #[allow(clippy::must_use_candidate, reason = "the check records the violation; the result is for callers that care")]
    pub fn require_exactly(&self, level: Irql, op: &str) -> bool {
        let current = self.current();
        if current != level {
            self.violations.push(
                ViolationKind::Irql,
                format!("{op} called at {} (must be at {})", irql_name(current), irql_name(level)),
            );
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (IrqlTracker, Violations) {
        let v = Violations::new();
        (IrqlTracker::new(v.clone()), v)
    }

    #[test]
    fn raise_and_lower_round_trip() {
        let (t, v) = tracker();
        let old = t.raise(DISPATCH_LEVEL);
        assert_eq!(old, PASSIVE_LEVEL);
        assert_eq!(t.current(), DISPATCH_LEVEL);
        assert!(t.require_at_most_dispatch("KeAcquireSpinLockAtDpcLevel"));
        assert!(!t.require_passive("AllocateCommonBuffer"));
        t.lower(old);
        assert_eq!(t.current(), PASSIVE_LEVEL);
        assert_eq!(v.count(ViolationKind::Irql), 1);
    }

    #[test]
    fn raise_to_lower_and_lower_to_higher_are_violations() {
        let (t, v) = tracker();
        let old = t.raise(DISPATCH_LEVEL);
        assert_eq!(t.raise(PASSIVE_LEVEL), DISPATCH_LEVEL);
        assert_eq!(t.current(), DISPATCH_LEVEL);
        t.lower(DEVICE_LEVEL);
        assert_eq!(t.current(), DISPATCH_LEVEL);
        t.lower(old);
        assert_eq!(v.len(), 2, "{:?}", v.list());
    }

    #[test]
    fn isr_and_dpc_frames() {
        let (t, v) = tracker();
        let interrupted = t.enter_isr(DEVICE_LEVEL);
        assert_eq!(t.context(), Context::Isr);
        assert!(!t.require_at_most_dispatch("IoGetDmaAdapter"));
        t.leave_isr(interrupted);
        assert_eq!(t.context(), Context::Thread);
        let d = t.enter_dpc();
        assert_eq!(t.current(), DISPATCH_LEVEL);
        // An ISR can preempt the DPC.
        let i = t.enter_isr(DEVICE_LEVEL);
        t.leave_isr(i);
        assert_eq!(t.current(), DISPATCH_LEVEL);
        t.leave_dpc(d);
        assert_eq!(t.current(), PASSIVE_LEVEL);
        assert_eq!(v.len(), 1, "{:?}", v.list());
    }

    #[test]
    fn dpc_that_leaves_irql_raised_or_lowers_below_entry_is_caught() {
        let (t, v) = tracker();
        let d = t.enter_dpc();
        t.lower(PASSIVE_LEVEL);
        assert_eq!(t.current(), DISPATCH_LEVEL);
        let _ = t.raise(DEVICE_LEVEL);
        t.leave_dpc(d);
        assert_eq!(t.current(), PASSIVE_LEVEL);
        assert_eq!(v.len(), 2, "{:?}", v.list());
    }

    #[test]
    fn masked_interrupt_delivery_is_caught() {
        let (t, v) = tracker();
        let old = t.raise(HIGH_LEVEL);
        let i = t.enter_isr(DEVICE_LEVEL);
        t.leave_isr(i);
        t.lower(old);
        assert_eq!(v.len(), 1);
        assert_eq!(t.highest(), HIGH_LEVEL);
    }
}
