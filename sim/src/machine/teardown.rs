//! The simulated machine's side of the bus FDO's teardown: the
//! [`TeardownPort`] the bus core's `BusDevice::release_hardware` drives
//! (the same sequence the WDM glue runs), with every step checked against
//! what the machine knows and the order recorded.
use std::cell::{Cell, RefCell};

use capdma_bus::device::BusDevice;
use capdma_bus::teardown::TeardownPort;

use super::platform::SimBusPlatform;
use crate::board::Board;
use crate::irql::IrqlTracker;
use crate::violations::{ViolationKind, Violations};

/// One glue step of the teardown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeardownStep {
    /// `IoDisconnectInterruptEx`.
    DisconnectInterrupt,
    /// `KeCancelTimer` (watchdog) + `KeFlushQueuedDpcs`.
    CancelTimerAndFlushDpcs,
    /// `MmUnmapIoSpace` of BAR0.
    UnmapRegisters,
}

/// The glue steps of one `release_hardware` call on one card.
pub(crate) struct SimTeardown<'a> {
    card: u32,
    bus: &'a BusDevice<SimBusPlatform>,
    board: &'a Board,
    irql: &'a IrqlTracker,
    violations: &'a Violations,
    now: u64,
    /// The card's interrupt is connected (in: the machine's state; out: the new one).
    pub(crate) interrupt_connected: Cell<bool>,
    /// The watchdog timer is armed.
    pub(crate) timer_armed: Cell<bool>,
    /// The bus's DPC is queued.
    pub(crate) dpc_queued: Cell<bool>,
    steps: RefCell<Vec<TeardownStep>>,
}

impl<'a> SimTeardown<'a> {
    #[allow(clippy::too_many_arguments, reason = "the machine's pieces one card's teardown touches")]
    pub(crate) fn new(
        card: u32,
        bus: &'a BusDevice<SimBusPlatform>,
        board: &'a Board,
        irql: &'a IrqlTracker,
        violations: &'a Violations,
        now: u64,
        interrupt_connected: bool,
        timer_armed: bool,
        dpc_queued: bool,
    ) -> Self {
        Self {
            card,
            bus,
            board,
            irql,
            violations,
            now,
            interrupt_connected: Cell::new(interrupt_connected),
            timer_armed: Cell::new(timer_armed),
            dpc_queued: Cell::new(dpc_queued),
            steps: RefCell::new(Vec::new()),
        }
    }

    fn violation(&self, message: &str) {
        self.violations.push(ViolationKind::Pnp, format!("card {}: teardown: {message}", self.card));
    }

    fn step(&self, step: TeardownStep) {
        self.irql.require_passive(match step {
            TeardownStep::DisconnectInterrupt => "IoDisconnectInterruptEx",
            TeardownStep::CancelTimerAndFlushDpcs => "KeFlushQueuedDpcs",
            TeardownStep::UnmapRegisters => "MmUnmapIoSpace",
        });
        self.steps.borrow_mut().push(step);
    }

    /// Checks the recorded order: the glue steps exactly once each, in the
    /// design's order (the core decides it; this proves it).
    pub(crate) fn check_order(&self) {
        let steps = self.steps.borrow();
        let expected =
            [TeardownStep::DisconnectInterrupt, TeardownStep::CancelTimerAndFlushDpcs, TeardownStep::UnmapRegisters];
        if steps.as_slice() != expected {
            self.violation(&format!("glue steps ran as {steps:?}, expected {expected:?}"));
        }
    }
}

impl TeardownPort for SimTeardown<'_> {
    fn disconnect_interrupt(&self) {
        self.step(TeardownStep::DisconnectInterrupt);
        if !self.board.is_removed() && self.board.bar0_mapped() {
            let running: Vec<u32> = (0..self.board.config().channels).filter(|&ch| self.board.is_running(ch)).collect();
            if !running.is_empty() {
                self.violation(&format!("IoDisconnectInterruptEx while the engines of channel(s) {running:?} still run"));
            }
        }
        self.interrupt_connected.set(false);
    }

    fn cancel_timer_and_flush_dpcs(&self) {
        self.step(TeardownStep::CancelTimerAndFlushDpcs);
        if self.interrupt_connected.get() {
            self.violation("KeFlushQueuedDpcs with the interrupt still connected: the ISR can queue another DPC");
        }
        self.timer_armed.set(false);
        if self.dpc_queued.replace(false) {
            // KeFlushQueuedDpcs: a DPC queued before still runs to completion.
            let old = self.irql.enter_dpc();
            self.bus.dpc(i64::try_from(self.now).unwrap_or(i64::MAX));
            self.irql.leave_dpc(old);
        }
    }

    fn unmap_registers(&self) {
        self.step(TeardownStep::UnmapRegisters);
        if self.interrupt_connected.get() || self.timer_armed.get() || self.dpc_queued.get() {
            self.violation("MmUnmapIoSpace while the ISR, the watchdog or a DPC can still touch the registers");
        }
        self.board.set_bar0_mapped(false);
    }
}
