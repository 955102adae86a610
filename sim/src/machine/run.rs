//! The end-to-end run: board → bus core → query interface → AVStream core
//! → KS queue → application, in virtual time, every frame verified.
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use capdma_avstream::bus_client::BusClient;
use capdma_avstream::copy::VectorUnit;
use capdma_avstream::device::device_start;
use capdma_avstream::format::{build_data_format, VideoFormat};
use capdma_avstream::ks_format::{KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING, KSPIN_FLAG_GENERATE_MAPPINGS};
use capdma_avstream::pin::CapturePin;
use capdma_avstream::state::KsState;
use capdma_bus::config::StartConfig;
use capdma_bus::device::BusDevice;
use capdma_bus::mode::ModeDecision;
use capdma_interface::status::{nt_success, status_name, NtStatus, STATUS_SUCCESS};
use zerocopy::IntoBytes;

use super::config::{ConfigError, MachineConfig};
use super::events::{Event, Timeline};
use super::platform::SimBusPlatform;
use super::report::{ChannelReport, RunReport};
use crate::board::{Board, BoardConfig, BoardKind, FrameSource};
use crate::dma::adapter::{AdapterConfig, SimDmaAdapter};
use crate::irql::{IrqlTracker, DEVICE};
use crate::ks::{CompletedFrame, PinFlags, SimKsPin, SimMapping};
use crate::memory::{Allocation, MemoryConfig, PhysicalMemory};
use crate::pattern::Pattern;
use crate::violations::{ViolationKind, Violations};

/// Latency from the board asserting its line to the ISR, 100-ns units (1 µs).
const INTERRUPT_LATENCY: u64 = 10;
/// Latency from `IoRequestDpc` to the DPC, 100-ns units (5 µs).
const DPC_LATENCY: u64 = 50;
/// The bus watchdog timer's period, 100-ns units (10 ms).
const WATCHDOG_PERIOD: u64 = 100_000;
/// Frame intervals the machine keeps running after the last capture, so
/// frames in flight land before the application stops the stream. Kept
/// below the bus watchdog's limit: the board goes quiet after the last
/// frame, and a longer wait would (rightly) trip the watchdog.
const DRAIN_INTERVALS: u64 = 2;
/// `Process` calls one request may chain before the machine calls it a livelock.
const PROCESS_LOOP_LIMIT: u32 = 10_000;
/// Interrupts one DPC may follow without the line going quiet before the
/// machine calls it a storm the driver does not quench.
const INTERRUPT_STORM_LIMIT: u32 = 100_000;

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

/// Callbacks a front end (the CLI) can hang on a run.
#[derive(Default)]
pub struct RunHooks<'a> {
    /// Called as frames are captured: (frames captured so far, frames in the run).
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Called with every frame delivered good on channel 0, in order:
    /// (the frame bytes, its stride in bytes).
    pub frame_sink: Option<&'a mut dyn FnMut(&[u8], usize)>,
}

/// One channel of the run: its child device, pin and application.
struct ChannelRun {
    index: u32,
    ks: SimKsPin,
    pin: Option<Pin<Box<CapturePin<SimKsPin>>>>,
    client: Option<BusClient>,
    format: VideoFormat,
    pattern: Pattern,
    buffers: Vec<Allocation>,
    app_busy_until: u64,
    captures: u32,
    report: ChannelReport,
}

/// The simulated machine with a capdma card in it.
pub struct Machine {
    config: MachineConfig,
    violations: Violations,
    irql: IrqlTracker,
    memory: PhysicalMemory,
    board: Board,
    bus: Pin<Box<BusDevice<SimBusPlatform>>>,
    decision: Option<ModeDecision>,
    channels: Vec<ChannelRun>,
    timeline: Timeline,
    interrupt_connected: bool,
    dpc_queued: bool,
    interrupts_in_a_row: u32,
    started: Instant,
}

fn board_config(config: &MachineConfig) -> BoardConfig {
    let base = match config.board {
        BoardKind::ScatterGather => BoardConfig::scatter_gather(),
        BoardKind::Legacy => BoardConfig::legacy(),
    };
    let lines = config.format.lines(config.height).unwrap_or(0);
    let slot_pitch = config.line_bytes().div_ceil(256).saturating_mul(256);
    let pitch = slot_pitch.max(config.stride_bytes());
    BoardConfig {
        channels: config.channels,
        address_64: !config.dma32,
        alignment: config.alignment.unwrap_or(base.alignment),
        max_frame_bytes: pitch.saturating_mul(lines).max(4096),
        seed: config.seed,
        ..base
    }
}

impl Machine {
    /// Builds the machine (memory, board, PCI function with the bus
    /// driver's `BusDevice`) without starting anything.
    ///
    /// # Errors
    /// [`RunError::Config`] for a configuration the machine cannot build.
    pub fn new(config: MachineConfig) -> Result<Self, RunError> {
        config.validate()?;
        let violations = Violations::new();
        let irql = IrqlTracker::new(violations.clone());
        let memory = PhysicalMemory::new(
            MemoryConfig { seed: config.seed, high_memory: config.high_memory, ..MemoryConfig::default() },
            violations.clone(),
        );
        let board = Board::new(board_config(&config), &memory).map_err(|e| ConfigError(e.0))?;
        if let Some(video) = &config.source {
            for ch in 0..config.channels {
                board.set_source(ch, FrameSource::Video(Rc::clone(video)));
            }
        }
        let adapter_config = AdapterConfig { map_registers: config.map_registers, merge_adjacent: true };
        let platform = SimBusPlatform::new(board.clone(), memory.clone(), irql.clone(), adapter_config);
        Ok(Self {
            config,
            violations,
            irql,
            memory,
            board,
            bus: Box::pin(BusDevice::new(platform)),
            decision: None,
            channels: Vec::new(),
            timeline: Timeline::default(),
            interrupt_connected: false,
            dpc_queued: false,
            interrupts_in_a_row: 0,
            started: Instant::now(),
        })
    }

    /// The board, for fault injection.
    #[must_use]
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// The bus driver's device.
    #[must_use]
    pub fn bus(&self) -> &BusDevice<SimBusPlatform> {
        &self.bus
    }

    /// The rules broken so far.
    #[must_use]
    pub fn violations(&self) -> &Violations {
        &self.violations
    }

    fn driver_error(&self, step: impl Into<String>, status: NtStatus) -> RunError {
        RunError::Driver { step: step.into(), status, report: Box::new(self.report()) }
    }

    /// `IRP_MN_START_DEVICE` of the bus FDO, then one child per channel:
    /// its AVStream device start (query interface, DMA config, adapter
    /// registration), a capture pin with the configured format, the
    /// application's buffers queued, and the pin walked to `KSSTATE_RUN`.
    ///
    /// # Errors
    /// [`RunError::Driver`] naming the step a driver refused.
    pub fn start(&mut self) -> Result<(), RunError> {
        let start = StartConfig {
            dma_mode: self.config.mode,
            slot_count: self.config.slot_count,
            max_mapping_byte_count: self.config.max_mapping_bytes,
            ..StartConfig::DEFAULT
        };
        let decision = self.bus.start(&start).map_err(|s| self.driver_error("bus IRP_MN_START_DEVICE", s))?;
        self.decision = Some(decision);
        self.interrupt_connected = true;
        for ch in 0..self.config.channels {
            let run = self.start_child(ch)?;
            self.channels.push(run);
        }
        for ch in 0..self.config.channels {
            self.timeline.schedule(self.config.frame_interval_100ns(), Event::Capture { channel: ch });
        }
        self.timeline.schedule(WATCHDOG_PERIOD, Event::Watchdog);
        Ok(())
    }

    /// The AVStream side of one child PDO.
    fn start_child(&mut self, ch: u32) -> Result<ChannelRun, RunError> {
        // IRP_MN_QUERY_INTERFACE for GUID_CAPDMA_BUS_INTERFACE, answered by the bus's child PDO.
        let mut answer = BusClient::query_buffer();
        let status = self.bus.query_interface(answer.header.size, answer.header.version, &raw mut answer);
        if !nt_success(status) {
            return Err(self.driver_error(format!("channel {ch}: IRP_MN_QUERY_INTERFACE"), status));
        }
        // SAFETY: the bus filled `answer` for this query and took one reference for us;
        // the BusDevice is pinned in a Box that outlives every child.
        let client = unsafe { BusClient::from_query(&answer, ch) }
            .map_err(|s| self.driver_error(format!("channel {ch}: interface check"), s))?;
        let setup = match device_start(&client) {
            Ok(setup) => setup,
            Err(s) => {
                // SAFETY: the reference from the query is dropped once, here.
                unsafe { client.release() };
                return Err(self.driver_error(format!("channel {ch}: AVStream device start"), s));
            }
        };
        // KsDeviceRegisterAdapterObject: KS finds the adapter from the raw PDMA_ADAPTER.
        let mapping = setup.adapter.and_then(|reg| {
            SimDmaAdapter::from_raw(reg.adapter)
                .map(|adapter| SimMapping { adapter, max_mapping_byte_count: reg.max_mapping_byte_count })
        });
        let flags = PinFlags {
            generate_mappings: setup.pin_flags & KSPIN_FLAG_GENERATE_MAPPINGS != 0,
            do_not_initiate_processing: setup.pin_flags & KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING != 0,
        };
        let ks = SimKsPin::new(flags, mapping, self.irql.clone(), self.violations.clone());
        let pin = Box::pin(CapturePin::new(ks.clone(), client.channel(), &setup, VectorUnit::Avx2));
        let mut run = ChannelRun {
            index: ch,
            ks,
            pin: None,
            client: Some(client),
            format: VideoFormat::default_for(self.config.format),
            pattern: Pattern { format: self.config.format, width: self.config.width, height: self.config.height, channel: ch, seed: self.config.seed },
            buffers: Vec::new(),
            app_busy_until: 0,
            captures: 0,
            report: ChannelReport {
                channel: ch,
                mode: setup.mode.name().to_string(),
                mode_reason: setup.reason.map_or("unknown", |r| r.describe()).to_string(),
                ..ChannelReport::default()
            },
        };
        // The application states what it wants; the driver's SetDataFormat
        // judges it (odd sizes, bad strides and overflows are refused there).
        let format = self.requested_format();
        let bytes = build_data_format(&format);
        if let Err(s) = pin.set_data_format(bytes.as_bytes()) {
            self.abandon_child(&mut run, Some(pin));
            return Err(self.driver_error(format!("channel {ch}: SetDataFormat"), s));
        }
        run.format = format;
        for i in 0..self.config.app_buffers {
            match self.memory.allocate_scattered(format.image_bytes as usize, &format!("application buffer {i} of channel {ch}")) {
                Ok(alloc) => {
                    run.ks.submit(u64::from(i), alloc.va, format.image_bytes);
                    run.buffers.push(alloc);
                }
                Err(e) => {
                    self.abandon_child(&mut run, Some(pin));
                    return Err(RunError::Config(ConfigError(format!("application buffers: {e}"))));
                }
            }
        }
        let status = pin.as_ref().set_state(KsState::Run);
        if status != STATUS_SUCCESS {
            self.abandon_child(&mut run, Some(pin));
            return Err(self.driver_error(format!("channel {ch}: KSSTATE_RUN"), status));
        }
        run.ks.set_running(true);
        run.pin = Some(pin);
        Ok(run)
    }

    /// The format the application asks for, unchecked: the stride from
    /// `--stride` (or the line), the image at that stride (saturating, so
    /// an overflow reaches the driver as a size it must refuse).
    fn requested_format(&self) -> VideoFormat {
        let c = &self.config;
        let stride = c.stride_bytes();
        let lines = c.format.lines(c.height).unwrap_or(u32::MAX);
        VideoFormat {
            pixel: c.format,
            width: c.width,
            height: c.height,
            stride,
            image_bytes: stride.saturating_mul(lines),
            frame_interval: u32::try_from(c.frame_interval_100ns()).unwrap_or(u32::MAX),
        }
    }

    /// Undoes a half-started child: pin to STOP and dropped, buffers freed,
    /// the interface reference released.
    fn abandon_child(&self, run: &mut ChannelRun, pin: Option<Pin<Box<CapturePin<SimKsPin>>>>) {
        if let Some(pin) = pin {
            let _ = pin.as_ref().set_state(KsState::Stop);
            run.ks.flush_on_stop();
            drop(pin);
        }
        while run.ks.take_completed().is_some() {}
        for buffer in run.buffers.drain(..) {
            self.memory.free(buffer.id);
        }
        if let Some(client) = run.client.take() {
            // SAFETY: the reference taken by the query is dropped once, here, after the pin is gone.
            unsafe { client.release() };
        }
    }

    /// Runs until every channel captured its frames and the pipeline drained.
    pub fn run(&mut self, hooks: &mut RunHooks<'_>) {
        let interval = self.config.frame_interval_100ns();
        let total = u64::from(self.config.frames) * u64::from(self.config.channels);
        let end = interval * (u64::from(self.config.frames) + DRAIN_INTERVALS);
        let mut captured = 0u64;
        while let Some(event) = self.timeline.next() {
            let now = self.timeline.now();
            match event {
                Event::Capture { channel } => {
                    if self.capture(channel, now) {
                        captured += 1;
                        if let Some(progress) = hooks.progress.as_mut() {
                            progress(captured, total);
                        }
                    }
                }
                Event::Interrupt => self.interrupt(now),
                Event::Dpc => self.dpc(now),
                Event::Watchdog => {
                    let old = self.irql.enter_dpc();
                    self.bus.watchdog(i64::try_from(now).unwrap_or(i64::MAX));
                    self.irql.leave_dpc(old);
                    self.after_device_activity(now);
                    if now < end {
                        self.timeline.schedule(now + WATCHDOG_PERIOD, Event::Watchdog);
                    }
                }
                Event::AppRequeue { channel, buffer } => self.requeue(channel, buffer),
            }
            self.passive_work(now, hooks);
            if now >= end && self.timeline.is_empty() {
                break;
            }
        }
    }

    /// The board's frame time on `channel`. Returns whether a frame time was spent.
    fn capture(&mut self, channel: u32, now: u64) -> bool {
        let Some(run) = self.channels.get_mut(channel as usize) else { return false };
        if run.captures >= self.config.frames {
            return false;
        }
        run.captures += 1;
        run.report.frames_captured += 1;
        let _ = self.board.capture_frame(channel, now);
        if run.captures < self.config.frames {
            self.timeline.schedule(now + self.config.frame_interval_100ns(), Event::Capture { channel });
        }
        self.after_device_activity(now);
        true
    }

    /// Schedules the ISR if the board's line is asserted and connected.
    fn after_device_activity(&mut self, now: u64) {
        if self.interrupt_connected && self.board.interrupt_pending() {
            self.timeline.schedule(now + INTERRUPT_LATENCY, Event::Interrupt);
        }
    }

    fn interrupt(&mut self, now: u64) {
        if !self.interrupt_connected || !self.board.interrupt_pending() {
            return;
        }
        let old = self.irql.enter_isr(DEVICE);
        let claimed = self.bus.isr();
        self.irql.leave_isr(old);
        if claimed {
            self.interrupts_in_a_row = 0;
            if !self.dpc_queued {
                self.dpc_queued = true;
                self.timeline.schedule(now + DPC_LATENCY, Event::Dpc);
            }
        } else {
            // Not ours: on a shared line another device's ISR would run. A
            // line the board keeps asserted and the driver never claims is a storm.
            self.interrupts_in_a_row += 1;
            if self.interrupts_in_a_row >= INTERRUPT_STORM_LIMIT {
                self.violations.push(ViolationKind::Interrupt, "interrupt line stuck asserted: the ISR never claims it");
                self.interrupt_connected = false;
            }
        }
        if self.board.interrupt_pending() && claimed {
            self.timeline.schedule(now + INTERRUPT_LATENCY, Event::Interrupt);
        }
    }

    fn dpc(&mut self, now: u64) {
        self.dpc_queued = false;
        let old = self.irql.enter_dpc();
        self.bus.dpc(i64::try_from(now).unwrap_or(i64::MAX));
        self.irql.leave_dpc(old);
        self.after_device_activity(now);
    }

    /// What runs at `PASSIVE_LEVEL` after an event: the `Process` calls KS
    /// owes, then the application taking its completed frames.
    fn passive_work(&mut self, now: u64, hooks: &mut RunHooks<'_>) {
        for i in 0..self.channels.len() {
            let mut calls = 0;
            loop {
                let run = &self.channels[i];
                if !run.ks.take_process_request() {
                    break;
                }
                if let Some(pin) = run.pin.as_ref() {
                    let _ = pin.process();
                }
                calls += 1;
                if calls >= PROCESS_LOOP_LIMIT {
                    self.violations.push(ViolationKind::Ks, format!("channel {i}: Process requested {calls} times in a row"));
                    break;
                }
            }
            while let Some(done) = self.channels[i].ks.take_completed() {
                self.deliver(i, done, now, hooks);
            }
            self.after_device_activity(now);
        }
    }

    /// The application receives a completed frame: verify, then requeue it
    /// after the time it holds frames.
    fn deliver(&mut self, i: usize, done: CompletedFrame, now: u64, hooks: &mut RunHooks<'_>) {
        let source = self.config.source.clone();
        let hold = self.config.app_hold_100ns;
        let run = &mut self.channels[i];
        let Some(buffer) = usize::try_from(done.buffer_id).ok().and_then(|b| run.buffers.get(b)) else {
            self.violations.push(ViolationKind::Ks, format!("channel {i}: completed an unknown buffer {}", done.buffer_id));
            return;
        };
        let good = !done.cancelled && done.completion.is_some_and(|c| c.data_used > 0);
        if good {
            let completion = done.completion.unwrap_or_default();
            run.report.frames_delivered += 1;
            // SAFETY: the buffer is a live allocation of `bytes` bytes; nothing
            // writes it while the application holds it (the frame left the queue).
            let bytes = unsafe { std::slice::from_raw_parts(buffer.va, buffer.bytes) };
            let frame_number = u32::try_from(completion.picture_number).unwrap_or(u32::MAX);
            let ok = completion.data_used == run.format.image_bytes
                && verify_frame(&run.pattern, source.as_ref(), &run.format, frame_number, bytes);
            if ok {
                run.report.frames_verified += 1;
                if run.index == 0 {
                    if let Some(sink) = hooks.frame_sink.as_mut() {
                        sink(&bytes[..run.format.image_bytes as usize], run.format.stride as usize);
                    }
                }
            } else {
                run.report.frames_corrupt += 1;
            }
        }
        if done.cancelled || run.pin.is_none() {
            return;
        }
        let at = now.max(run.app_busy_until) + hold;
        run.app_busy_until = at;
        let buffer = u32::try_from(done.buffer_id).unwrap_or(u32::MAX);
        self.timeline.schedule(at, Event::AppRequeue { channel: run.index, buffer });
    }

    fn requeue(&mut self, channel: u32, buffer: u32) {
        let Some(run) = self.channels.get(channel as usize) else { return };
        if run.pin.is_none() {
            return;
        }
        if let Some(alloc) = run.buffers.get(buffer as usize) {
            run.ks.submit(u64::from(buffer), alloc.va, run.format.image_bytes);
        }
    }

    /// Stops everything in the order Windows would and checks for leaks:
    /// pins to `KSSTATE_STOP`, interface references released, buffers
    /// freed, the bus's removal (refused while referenced), engines
    /// stopped, interrupt disconnected, DPCs flushed, common buffers freed,
    /// adapter put.
    pub fn teardown(&mut self) {
        let now = self.timeline.now();
        let mut hooks = RunHooks::default();
        for i in 0..self.channels.len() {
            let pin = self.channels[i].pin.take();
            if let Some(pin) = pin.as_ref() {
                let status = pin.as_ref().set_state(KsState::Stop);
                if status != STATUS_SUCCESS {
                    self.violations.push(ViolationKind::Ks, format!("channel {i}: KSSTATE_STOP failed: {}", status_name(status)));
                }
            }
            self.channels[i].ks.flush_on_stop();
            while let Some(done) = self.channels[i].ks.take_completed() {
                self.deliver(i, done, now, &mut hooks);
            }
            if let Some(pin) = pin.as_ref() {
                let stats = pin.stats();
                let run = &mut self.channels[i];
                run.report.bytes_copied = stats.bytes_copied;
                run.report.sg_elements = stats.sg_elements_programmed;
                run.report.driver_dropped = stats.frames_dropped;
            }
            drop(pin);
            let run = &mut self.channels[i];
            if run.ks.live_clones() != 0 {
                self.violations.push(ViolationKind::Leak, format!("channel {i}: {} stream pointer clones never deleted", run.ks.live_clones()));
            }
            if let Some(client) = run.client.take() {
                // SAFETY: the pin is gone; the query's reference is dropped once, here.
                unsafe { client.release() };
            }
            for buffer in run.buffers.drain(..) {
                self.memory.free(buffer.id);
            }
        }
        let status = self.bus.query_remove();
        if status != STATUS_SUCCESS {
            self.violations.push(ViolationKind::Pnp, format!("IRP_MN_QUERY_REMOVE_DEVICE refused: {}", status_name(status)));
        }
        self.bus.stop_engines();
        self.interrupt_connected = false;
        if self.dpc_queued {
            // KeFlushQueuedDpcs: a DPC already queued still runs.
            self.dpc(now);
        }
        self.bus.stop();
        for ch in 0..self.channels.len() {
            if let Some(stats) = self.bus.channel_stats(u32::try_from(ch).unwrap_or(u32::MAX)) {
                self.channels[ch].report.channel_resets = stats.resets;
                self.channels[ch].report.board_dropped = stats.dropped_by_board;
            }
        }
        for leak in self.memory.leaks() {
            self.violations.push(ViolationKind::Leak, leak);
        }
        for adapter in self.bus.platform().adapters() {
            for leak in adapter.leaks() {
                self.violations.push(ViolationKind::Leak, leak);
            }
            if !adapter.is_put() {
                self.violations.push(ViolationKind::Leak, "a DMA adapter was never put (PutDmaAdapter)");
            }
        }
    }

    /// The account of the run so far.
    #[must_use]
    pub fn report(&self) -> RunReport {
        let channels = self
            .channels
            .iter()
            .map(|run| {
                let mut r = run.report.clone();
                r.frames_dropped = r.frames_captured.saturating_sub(r.frames_delivered);
                r
            })
            .collect();
        RunReport {
            channels,
            violations: self.violations.list(),
            sim_time_s: self.timeline.now() as f64 / 1e7,
            wall_s: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// Whether `bytes` (a frame at `format.stride`) is frame `frame_number` of
/// the channel's source, byte for byte on every line (padding not compared).
fn verify_frame(pattern: &Pattern, source: Option<&Rc<crate::y4m::Y4mVideo>>, format: &VideoFormat, frame_number: u32, bytes: &[u8]) -> bool {
    let source = source.map_or(FrameSource::Pattern, |v| FrameSource::Video(Rc::clone(v)));
    let line_bytes = format.line_bytes() as usize;
    let stride = format.stride as usize;
    let mut expected = vec![0u8; line_bytes];
    for line in 0..format.lines() {
        let at = line as usize * stride;
        let Some(actual) = bytes.get(at..at + line_bytes) else { return false };
        source.fill_line(pattern, frame_number, line, &mut expected);
        if actual != expected.as_slice() {
            return false;
        }
    }
    true
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
            other => other,
        });
    }
    machine.run(hooks);
    machine.teardown();
    Ok(machine.report())
}
