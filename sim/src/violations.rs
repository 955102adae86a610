//! The record of every kernel rule the simulated machine saw broken.
//!
//! On Windows most of these would be a bugcheck (or a Driver Verifier stop);
//! the simulator records them instead and carries on, so a test can run to
//! the end and report every problem at once. Nothing in the simulator panics
//! on a broken rule: it pushes a [`Violation`] here.
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// Which family of rule was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// An IRQL rule (`KeRaiseIrql`/`KeLowerIrql` misuse, a DDI called above its IRQL).
    Irql,
    /// A DMA rule: the board touched memory that was not mapped or a live
    /// common buffer (an IOMMU fault / Driver Verifier DMA check), a
    /// scatter/gather list put twice, an adapter misused.
    Dma,
    /// A memory-manager rule: double free, access to memory that is not allocated.
    Memory,
    /// A register-protocol rule the board model detected (driver wrote a
    /// read-only register, programmed a ring the board cannot reach, …).
    Board,
    /// An interrupt rule (ISR did the wrong thing, interrupt storm left unhandled).
    Interrupt,
    /// A kernel-streaming rule (the KS queue model).
    Ks,
    /// A Plug and Play or teardown-order rule (adapter put with buffers outstanding, …).
    Pnp,
    /// A resource still held at the end of the run.
    Leak,
    /// Anything else (misuse of a simulated DDI).
    Api,
}

impl ViolationKind {
    /// Short lower-case name used in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Irql => "irql",
            Self::Dma => "dma",
            Self::Memory => "memory",
            Self::Board => "board",
            Self::Interrupt => "interrupt",
            Self::Ks => "ks",
            Self::Pnp => "pnp",
            Self::Leak => "leak",
            Self::Api => "api",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The family of the rule.
    pub kind: ViolationKind,
    /// What happened, with addresses and names.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.kind, self.message)
    }
}

/// Shared, append-only list of violations (a cheap `Clone` handle; every
/// component of one machine holds a clone of the same list).
#[derive(Clone, Debug, Default)]
pub struct Violations {
    inner: Rc<RefCell<Vec<Violation>>>,
}

impl Violations {
    /// An empty list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a broken rule.
    pub fn push(&self, kind: ViolationKind, message: impl Into<String>) {
        self.inner.borrow_mut().push(Violation { kind, message: message.into() });
    }

    /// Every violation so far, formatted `"[kind] message"`, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<String> {
        self.inner.borrow().iter().map(ToString::to_string).collect()
    }

    /// Every violation so far, structured, oldest first.
    #[must_use]
    pub fn entries(&self) -> Vec<Violation> {
        self.inner.borrow().clone()
    }

    /// Number of violations of `kind`.
    #[must_use]
    pub fn count(&self, kind: ViolationKind) -> usize {
        self.inner.borrow().iter().filter(|v| v.kind == kind).count()
    }

    /// Total number of violations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.borrow().len()
    }

    /// `true` when no rule was broken.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.borrow().is_empty()
    }

    /// Removes and returns every violation (for tests that expect some and
    /// then check that nothing else went wrong).
    #[must_use = "the removed violations are returned for inspection"]
    pub fn take(&self) -> Vec<Violation> {
        std::mem::take(&mut *self.inner.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_list() {
        let v = Violations::new();
        let w = v.clone();
        assert!(v.is_empty());
        w.push(ViolationKind::Dma, "write to 0x1000");
        assert_eq!(v.len(), 1);
        assert_eq!(v.list(), vec!["[dma] write to 0x1000".to_string()]);
        assert_eq!(v.count(ViolationKind::Dma), 1);
        assert_eq!(v.count(ViolationKind::Irql), 0);
        assert_eq!(v.take().len(), 1);
        assert!(w.is_empty());
    }
}
