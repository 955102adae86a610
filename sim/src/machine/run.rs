//! The end-to-end run: board → bus core → query interface (through the
//! Plug and Play stacks) → AVStream core → KS queue → application, in
//! virtual time, every frame verified.
//!
//! Here: the event loop ([`Machine::run`]) and the device's events (the
//! boards' captures, the shared interrupt line and the ISRs on it, the bus
//! DPCs, the watchdog timer), the `PASSIVE_LEVEL` work after each event,
//! why a run cannot take place ([`RunError`]), the callbacks a front end
//! hangs on it ([`RunHooks`]), and [`run`], the whole job.
use capdma_interface::status::{status_name, NtStatus};

use super::build::Machine;
use super::config::{ConfigError, MachineConfig};
use super::events::Event;
use super::report::RunReport;
use crate::irql::DEVICE_LEVEL;
use crate::violations::ViolationKind;

/// Latency from the board asserting its line to the ISR, 100-ns units (1 µs).
const INTERRUPT_LATENCY: u64 = 10;
/// Latency from `IoRequestDpc` to the DPC, 100-ns units (5 µs).
const DPC_LATENCY: u64 = 50;
/// The bus watchdog timer's period, 100-ns units (10 ms).
pub(super) const WATCHDOG_PERIOD: u64 = 100_000;
/// Frame intervals the machine keeps running after the last capture, so
/// frames in flight land before the application stops the stream. Kept
/// below the bus watchdog's limit: the board goes quiet after the last
/// frame, and a longer wait would (rightly) trip the watchdog.
const DRAIN_INTERVALS: u64 = 2;
/// Virtual time the machine may run past [`Machine::run_end`] before it
/// calls the run endless (100-ns units, 10 s): something keeps scheduling
/// work after the application stopped (a frame cycling through the
/// drivers, a timer re-armed for ever).
const OVERRUN_LIMIT: u64 = 100_000_000;
/// `Process` calls one request may chain before the machine calls it a livelock.
const PROCESS_LOOP_LIMIT: u32 = 10_000;
/// Interrupts in a row (the line re-asserting right after the ISRs ran)
/// that no ISR claims before the machine calls the line stuck.
const INTERRUPT_STORM_LIMIT: u32 = 100_000;
/// Interrupts in a row that an ISR claims while the line never goes quiet
/// (a driver that does not acknowledge) before the machine calls it a storm.
const CLAIMED_STORM_LIMIT: u32 = 1_000_000;

/// Why a run could not take place (as opposed to a run that failed its checks).
#[derive(Debug)]
pub enum RunError {
    /// The configuration is not one the machine can build.
    Config(ConfigError),
    /// A driver refused a step the run needs; the report so far is attached.
    Driver {
        /// What was being done.
        step: String,
        /// The NTSTATUS returned.
        status: NtStatus,
        /// The account up to the failure (violations, leaks).
        report: Box<RunReport>,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Driver { step, status, .. } => {
                write!(f, "{step} failed: {} (0x{:08X})", status_name(*status), status.cast_unsigned())
            }
        }
    }
}

impl std::error::Error for RunError {}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// A progress callback: (frames captured so far, frames in the run).
pub type ProgressHook<'a> = &'a mut dyn FnMut(u64, u64);
/// A frame callback: (the frame bytes, its stride in bytes).
pub type FrameSink<'a> = &'a mut dyn FnMut(&[u8], usize);

/// Callbacks a front end (the CLI) can hang on a run.
#[derive(Default)]
pub struct RunHooks<'a> {
    /// Called as frames are captured: (frames captured so far, frames in the run).
    pub progress: Option<ProgressHook<'a>>,
    /// Called with every frame delivered good on channel 0 of card 0, in
    /// order: (the frame bytes, its stride in bytes).
    pub frame_sink: Option<FrameSink<'a>>,
}

impl Machine {
    /// Runs until every channel captured its frames and the pipeline drained.
    /// With the bus image, its kernel is active throughout and catches up
    /// with the machine's time at every event.
    pub fn run(&mut self, hooks: &mut RunHooks<'_>) {
        let before = self.image.as_ref().map(|w| w.sys.machine.counts().exits);
        let mut captured = 0u64;
        // An action that needs the image's kernel itself (its PnP manager:
        // a surprise removal) stops the loop, runs with the kernel in hand,
        // and the loop goes on where it stopped.
        while let Some((index, now)) = self.in_image(|m| m.run_events(hooks, &mut captured)) {
            self.act(index, now, hooks);
            self.in_image(|m| {
                m.passive_work(now, hooks);
                m.settle_boards();
            });
        }
        if let (Some(world), Some(before)) = (self.image.as_mut(), before) {
            world.streaming_exits += world.sys.machine.counts().exits.saturating_sub(before);
        }
    }

    /// The event loop; returns `(action, now)` when it stopped for an
    /// action that must run outside the image's kernel context
    /// ([`Self::needs_kernel`]), `None` when the run is over.
    fn run_events(&mut self, hooks: &mut RunHooks<'_>, captured: &mut u64) -> Option<(u32, u64)> {
        let total = u64::from(self.config.frames) * self.channels.len() as u64;
        let end = self.run_end();
        while let Some(event) = self.timeline.pop_next() {
            let now = self.timeline.now();
            self.image_deliver(now);
            match event {
                Event::Capture { card, channel } => {
                    if self.capture(card, channel, now) {
                        *captured += 1;
                        if let Some(progress) = hooks.progress.as_mut() {
                            progress(*captured, total);
                        }
                    }
                }
                Event::Interrupt => self.interrupt(now),
                Event::Dpc { card } => self.dpc(card, now),
                Event::Watchdog => {
                    // The cores' watchdog timers (the image's fires in its kernel).
                    for card in 0..self.cards.len() {
                        let Some(bus) = self.cards[card].bus.core().cloned() else { continue };
                        if self.cards[card].timer_armed {
                            let old = self.irql.enter_dpc();
                            bus.watchdog(i64::try_from(now).unwrap_or(i64::MAX));
                            self.irql.leave_dpc(old);
                        }
                    }
                    self.after_device_activity(now);
                    if now < end {
                        self.timeline.schedule(now + WATCHDOG_PERIOD, Event::Watchdog);
                    }
                }
                Event::AppRequeue { card, channel, buffer } => self.requeue(card, channel, buffer),
                Event::Action { index } if self.needs_kernel(index) => return Some((index, now)),
                Event::Action { index } => self.act(index, now, hooks),
            }
            self.passive_work(now, hooks);
            self.settle_boards();
            if now > end.saturating_add(OVERRUN_LIMIT) {
                let next = self.timeline.pop_next();
                self.violations.push(
                    ViolationKind::Ks,
                    format!(
                        "the run does not end: work {} ms of virtual time after the run's end (next due: {next:?})",
                        (now - end) / 10_000
                    ),
                );
                break;
            }
            if now >= end && self.timeline.is_empty() {
                break;
            }
        }
        None
    }

    /// When the run is over (100-ns units): the last capture's time plus
    /// [`DRAIN_INTERVALS`]. The application stops resubmitting frames then
    /// ([`Self::deliver`]): it has the frames it asked for, and a frame
    /// handed back later (by the bus's watchdog once the board has gone
    /// quiet) would otherwise cycle through the driver for ever.
    pub(super) fn run_end(&self) -> u64 {
        self.run_start + self.config.frame_interval_100ns() * (u64::from(self.config.frames) + DRAIN_INTERVALS)
    }

    /// Action `index` drives the image's PnP manager, which needs the
    /// kernel itself (not only its active context): a surprise or orderly
    /// removal of a machine running the bus image.
    fn needs_kernel(&self, index: u32) -> bool {
        self.runs_image()
            && matches!(
                self.actions.get(index as usize),
                Some(super::Action::SurpriseRemoval { .. } | super::Action::RequestRemoval { .. })
            )
    }

    /// A board's frame time on `channel`. Returns whether a frame time was spent.
    fn capture(&mut self, card: u32, channel: u32, now: u64) -> bool {
        let frames = self.config.frames;
        let interval = self.config.frame_interval_100ns();
        let Some(i) = self.channel_position(card, channel) else { return false };
        let Some(c) = self.cards.get(card as usize) else { return false };
        if c.board.is_removed() {
            return false;
        }
        let run = &mut self.channels[i];
        if run.captures >= frames {
            return false;
        }
        run.captures += 1;
        run.report.frames_captured += 1;
        let outcome = c.board.capture_frame(channel, now);
        run.log.captures.push((now, outcome));
        if run.captures < frames {
            self.timeline.schedule(now + interval, Event::Capture { card, channel });
        }
        self.after_device_activity(now);
        true
    }

    /// Whether the shared interrupt line is asserted by a connected card.
    fn line_asserted(&self) -> bool {
        self.cards.iter().any(|c| c.interrupt_connected && c.board.interrupt_pending())
    }

    /// Schedules the ISRs if the line is asserted. With the bus image the
    /// kernel's dispatcher samples the line and runs the image's ISR (and
    /// what it queues) now.
    pub(super) fn after_device_activity(&mut self, now: u64) {
        if self.runs_image() {
            self.image_deliver(now);
        } else if self.line_asserted() {
            self.timeline.schedule(now + INTERRUPT_LATENCY, Event::Interrupt);
        }
    }

    /// The shared line's interrupt: the connected cards' ISRs in chain order
    /// until one claims it (level-triggered: while the line stays asserted
    /// the interrupt comes again).
    fn interrupt(&mut self, now: u64) {
        if !self.line_asserted() {
            return;
        }
        let mut claimed = false;
        for card in 0..self.cards.len() {
            if !self.cards[card].interrupt_connected {
                continue;
            }
            let old = self.irql.enter_isr(DEVICE_LEVEL);
            let mine = self.cards[card].bus.core().is_some_and(|bus| bus.isr());
            self.irql.leave_isr(old);
            let c = &mut self.cards[card];
            if mine {
                c.isr_claimed += 1;
                if !c.dpc_queued {
                    c.dpc_queued = true;
                    self.timeline.schedule(now + DPC_LATENCY, Event::Dpc { card: c.index });
                }
                claimed = true;
                break;
            }
            c.isr_unclaimed += 1;
        }
        if claimed {
            self.unclaimed_in_a_row = 0;
            self.claimed_in_a_row += 1;
        } else {
            // Not ours: another device on the shared line. A line the
            // boards keep asserted and no ISR ever claims is a storm.
            self.interrupts_unclaimed += 1;
            self.unclaimed_in_a_row += 1;
            self.claimed_in_a_row = 0;
        }
        if self.unclaimed_in_a_row >= INTERRUPT_STORM_LIMIT || self.claimed_in_a_row >= CLAIMED_STORM_LIMIT {
            self.violations.push(ViolationKind::Interrupt, "interrupt line stuck asserted: the ISRs never quiet it");
            for c in &mut self.cards {
                c.interrupt_connected = false;
            }
            return;
        }
        if self.line_asserted() {
            self.timeline.schedule(now + INTERRUPT_LATENCY, Event::Interrupt);
        } else {
            self.claimed_in_a_row = 0;
            self.unclaimed_in_a_row = 0;
        }
    }

    fn dpc(&mut self, card: u32, now: u64) {
        let Some(c) = self.cards.get_mut(card as usize) else { return };
        c.dpc_queued = false;
        let Some(bus) = c.bus.core().cloned() else { return };
        let old = self.irql.enter_dpc();
        bus.dpc(i64::try_from(now).unwrap_or(i64::MAX));
        self.irql.leave_dpc(old);
        self.after_device_activity(now);
    }

    /// What runs at `PASSIVE_LEVEL` after an event: the `Process` calls KS
    /// owes, then the application taking its completed frames.
    pub(super) fn passive_work(&mut self, now: u64, hooks: &mut RunHooks<'_>) {
        // With the AVStream image, the emulated KS decides the Process calls.
        self.image_process();
        for i in 0..self.channels.len() {
            let mut calls = 0;
            loop {
                let run = &self.channels[i];
                if !run.ks.take_process_request() {
                    break;
                }
                if let Some(pin) = run.pin.as_ref() {
                    let status = pin.process();
                    run.ks.process_returned(status);
                }
                calls += 1;
                if calls >= PROCESS_LOOP_LIMIT {
                    self.violations.push(ViolationKind::Ks, format!("channel {i}: Process requested {calls} times in a row"));
                    break;
                }
            }
            self.take_completed(i, now, hooks);
            self.after_device_activity(now);
        }
    }

    /// Time passes for every board: bursts a reset caught in flight land
    /// (`Board::settle`).
    pub(super) fn settle_boards(&self) {
        for c in &self.cards {
            c.board.settle();
        }
    }
}

/// Builds the machine, runs it and tears it down: the whole main job.
///
/// # Errors
/// [`RunError`] when the machine cannot be built or a driver refuses to start.
pub fn run(config: MachineConfig, hooks: &mut RunHooks<'_>) -> Result<RunReport, RunError> {
    let mut machine = Machine::new(config)?;
    if let Err(e) = machine.start() {
        machine.teardown();
        return Err(match e {
            RunError::Driver { step, status, .. } => RunError::Driver { step, status, report: Box::new(machine.report()) },
            RunError::Config(e) => RunError::Config(e),
        });
    }
    machine.run(hooks);
    machine.teardown();
    Ok(machine.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run of the cores: 320x240, 6 frames.
    fn small() -> MachineConfig {
        MachineConfig { width: 320, height: 240, frames: 6, ..MachineConfig::default() }
    }

    #[test]
    fn a_run_still_busy_long_after_its_end_is_a_violation_not_a_hang() {
        let mut m = Machine::new(small()).expect("machine");
        m.start().expect("start");
        // Work due past the limit, as a frame cycling for ever would leave.
        let late = m.run_end() + OVERRUN_LIMIT + 1;
        m.timeline.schedule(late, Event::Watchdog);
        m.run(&mut RunHooks::default());
        m.teardown();
        let report = m.report();
        assert!(
            report.violations.iter().any(|v| v.contains("the run does not end")),
            "{:?}",
            report.violations
        );
    }

    #[test]
    fn a_run_ends_by_itself_without_the_violation() {
        let mut m = Machine::new(small()).expect("machine");
        m.start().expect("start");
        m.run(&mut RunHooks::default());
        m.teardown();
        let report = m.report();
        assert!(report.passed(), "{}", report.summary());
        assert!(m.now() <= m.run_end() + OVERRUN_LIMIT);
    }
}
