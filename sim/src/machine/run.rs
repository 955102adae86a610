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
/// Latency from the driver's `RING_PRODUCER` doorbell to the board's DMA
/// engine going on with the next part of a frame posted in parts (it
/// fetches the new descriptors), 100-ns units (10 µs).
pub(super) const DMA_LATENCY: u64 = 100;
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
/// Events one instant of virtual time may hold before the machine calls the
/// run a livelock: time does not advance (a driver handing every frame back
/// at once and the application requeueing it at once, for ever). A real
/// instant holds a few events per channel.
pub(super) const INSTANT_EVENT_LIMIT: u64 = 1_000_000;
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
            self.in_image(|m| m.after_event(now, hooks));
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
        // (instant, events at it so far)
        let mut instant = (u64::MAX, 0u64);
        while let Some(event) = self.timeline.pop_next() {
            let now = self.timeline.now();
            instant = if instant.0 == now { (now, instant.1 + 1) } else { (now, 1) };
            if instant.1 > self.instant_event_limit {
                self.violations.push(
                    ViolationKind::Ks,
                    format!(
                        "virtual time does not advance: more than {} events at {} ms (next: {event:?}); a frame handed back and requeued at once, for ever?",
                        self.instant_event_limit,
                        now / 10_000
                    ),
                );
                break;
            }
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
                Event::Continue { card, channel } => self.continue_frame(card, channel, now),
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
            self.after_event(now, hooks);
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

    /// The board of `card` goes on with the frame posted in parts on
    /// `channel` (a DMA latency after the doorbell), recorded in the
    /// channel's log; the interrupt follows as after a capture.
    fn continue_frame(&mut self, card: u32, channel: u32, now: u64) {
        let Some(c) = self.cards.get(card as usize) else { return };
        let outcome = c.board.continue_frame(channel);
        if let Some(i) = self.channel_position(card, channel) {
            self.channels[i].log.continuations.push((now, outcome));
        }
        self.after_device_activity(now);
    }

    /// What follows every event (and every action run outside the loop):
    /// the `PASSIVE_LEVEL` work, the continuations the doorbells rung
    /// meanwhile call for, and time passing for the boards. The one place
    /// doorbells are picked up: whoever wrote `RING_PRODUCER` during the
    /// event — the cores, or the images' code in the emulated kernel
    /// (`Process`, DPCs, completion callbacks) — wrote it before this.
    pub(super) fn after_event(&mut self, now: u64, hooks: &mut RunHooks<'_>) {
        self.passive_work(now, hooks);
        self.schedule_continuations(now);
        self.settle_boards();
    }

    /// Every board channel whose driver posted the next part of a frame
    /// in progress (`Board::take_continuations`) gets its continuation
    /// ([`Event::Continue`]) [`DMA_LATENCY`] from `now`.
    pub(super) fn schedule_continuations(&mut self, now: u64) {
        for card in 0..self.cards.len() {
            let index = self.cards[card].index;
            for channel in self.cards[card].board.take_continuations() {
                self.timeline.schedule(now + DMA_LATENCY, Event::Continue { card: index, channel });
            }
        }
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

    /// The doorbell of a frame posted in parts, rung between events (as
    /// driver code run by any event rings it), is picked up after the
    /// next event, whatever it is (here the watchdog's): the board goes on
    /// with the frame [`DMA_LATENCY`] later, in the loop, and the
    /// continuation is logged. Channel 0 of a machine not started,
    /// programmed by hand (the bus posting parts is not needed).
    #[test]
    fn a_doorbell_for_a_frame_in_parts_schedules_its_continuation() {
        use crate::board::{CaptureOutcome, DropReason};
        use crate::memory::PAGE_SIZE;
        use capdma_bus::ports::{DeviceDescription, DmaAdapterPort, RegisterPort};
        use capdma_interface::descriptor::{
            CompletionRecord, SgDescriptor, CQ_STATUS_OK, DESC_END_OF_FRAME, DESC_END_OF_PART, DESC_START_OF_FRAME,
        };
        use capdma_interface::format::FOURCC_YUY2;
        use capdma_interface::regs::{channel, channel_base, CTRL_RESET, CTRL_RUN, CTRL_SG_MODE};
        use zerocopy::{FromBytes, IntoBytes};

        let mut m = Machine::new(MachineConfig { board: crate::board::BoardKind::ScatterGather, ..small() }).expect("machine");
        let board = m.cards[0].board.clone();
        let memory = m.memory().clone();
        let reg = |r: u32, v: u32| board.write32(channel_base(0) + r, v);
        // 64x48 YUY2 at a 192-byte pitch: 9216 bytes, 3 pages.
        let frame_bytes = 192 * 48;
        let adapter = crate::dma::SimDmaAdapter::new(
            DeviceDescription { scatter_gather: true, dma64: true, maximum_length: 1 << 20 },
            crate::dma::AdapterConfig::default(),
            &memory,
            &m.irql,
        );
        let ring = adapter.allocate_common_buffer(PAGE_SIZE).expect("ring");
        let cq = adapter.allocate_common_buffer(PAGE_SIZE).expect("cq");
        let buf = memory.allocate_scattered(frame_bytes, "frame").expect("frame");
        let list = adapter.get_scatter_gather_list(buf.va, frame_bytes).expect("mapped");
        let pages = list.mappings(4096);
        let (ring_at, cq_at) = (ring.logical, cq.logical);
        reg(channel::CTRL, CTRL_RESET);
        for (r, v) in [
            (channel::FOURCC, FOURCC_YUY2),
            (channel::WIDTH, 64),
            (channel::HEIGHT, 48),
            (channel::LINE_PITCH, 192),
            (channel::FRAME_INTERVAL, 333_333),
            (channel::RING_BASE_LO, ring_at as u32),
            (channel::RING_BASE_HI, (ring_at >> 32) as u32),
            (channel::RING_ENTRIES, 8),
            (channel::CQ_BASE_LO, cq_at as u32),
            (channel::CQ_BASE_HI, (cq_at >> 32) as u32),
            (channel::CQ_ENTRIES, 8),
            (channel::CTRL, CTRL_RUN | CTRL_SG_MODE),
        ] {
            reg(r, v);
        }
        // Part 1: page 0; part 2: page 1; part 3: page 2 (the frame's last 1024 bytes).
        let descriptors = [
            (4096, DESC_START_OF_FRAME | DESC_END_OF_PART),
            (4096, DESC_END_OF_PART),
            (1024, DESC_END_OF_FRAME),
        ];
        for (i, (bytes, flags)) in descriptors.into_iter().enumerate() {
            let d = SgDescriptor { address: pages[i].logical_address, byte_count: bytes, flags, tag: 21, ..Default::default() };
            memory.write_physical(ring_at + i as u64 * 32, d.as_bytes()).expect("descriptor");
        }
        reg(channel::RING_PRODUCER, 1);
        let first = board.capture_frame(0, 500);
        assert!(matches!(first, CaptureOutcome::PartCompleted { index: 0, bytes: 4096, .. }), "{first:?} {:?}", m.violations.list());
        // Part 2's doorbell: its continuation is due DMA_LATENCY later, once.
        reg(channel::RING_PRODUCER, 2);
        m.schedule_continuations(600);
        m.schedule_continuations(600);
        assert_eq!(m.timeline.pop_next(), Some(Event::Continue { card: 0, channel: 0 }));
        assert_eq!(m.timeline.now(), 600 + DMA_LATENCY);
        assert!(m.timeline.is_empty(), "one continuation per doorbell");
        assert_eq!(board.continue_frame(0), CaptureOutcome::PartCompleted { index: 1, bytes: 8192, frame_number: 0, tag: 21 });
        // Part 3's doorbell rung between events: the loop picks it up after
        // the next event (the watchdog's) and the board finishes the frame.
        reg(channel::RING_PRODUCER, 3);
        m.timeline.schedule(1_000, Event::Watchdog);
        m.run(&mut RunHooks::default());
        assert_eq!(board.frame_in_progress(0), None);
        assert_eq!(board.channel_stats(0).map(|s| (s.parts_completed, s.frames_produced)), Some((2, 1)));
        assert_eq!(board.channel_registers(0).map(|r| r.cq_producer), Some(3));
        let mut raw = [0u8; 32];
        memory.read_physical(cq_at + 2 * 32, &mut raw).expect("record");
        let closing = CompletionRecord::read_from_bytes(&raw[..]).expect("record");
        assert_eq!((closing.status, closing.index, closing.byte_count, closing.timestamp), (CQ_STATUS_OK, 2, frame_bytes as u32, 500));
        let mut bytes = vec![0u8; frame_bytes];
        memory.read_virtual(buf.va, &mut bytes).expect("frame");
        board.pattern(0).expect("running").verify_frame(0, &bytes, 192).expect("the frame, whole");
        // No doorbell, no continuation: the next frame time finds nothing.
        assert!(board.take_continuations().is_empty());
        assert_eq!(board.capture_frame(0, 400_000), CaptureOutcome::Dropped(DropReason::NoBuffer));
        reg(channel::CTRL, CTRL_RESET);
        adapter.put_scatter_gather_list(&list);
        adapter.free_common_buffer(ring);
        adapter.free_common_buffer(cq);
        adapter.put();
        memory.free(buf.id);
    }

    #[test]
    fn a_run_whose_virtual_time_stops_is_a_violation_not_a_hang() {
        let mut m = Machine::new(small()).expect("machine");
        m.start().expect("start");
        m.instant_event_limit = 50;
        let at = m.now() + 1;
        for _ in 0..60 {
            m.timeline.schedule(at, Event::Watchdog);
        }
        m.run(&mut RunHooks::default());
        m.teardown();
        let report = m.report();
        assert!(report.violations.iter().any(|v| v.contains("virtual time does not advance")), "{:?}", report.violations);
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
