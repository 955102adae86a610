//! The rows of the fault matrix and what each expects.
mod images;

use std::collections::HashSet;
use std::time::Instant;

use capdma_avstream::state::KsState;
use capdma_bus::config::DmaModeOverride;
use capdma_bus::watchdog::WATCHDOG_FRAME_INTERVALS;
use capdma_bus::{ChannelStats, RecordFault};
use capdma_interface::mode::{DmaMode, ModeReason};
use capdma_interface::regs::int_done;
use capdma_interface::status::{
    status_name, NtStatus, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_DEVICE_REMOVED,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS,
};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Check, FaultRow, RowSpec};
use crate::board::{BoardFault, BoardKind, CaptureOutcome};
use crate::machine::{Action, ChannelLog, Drivers, Machine, MachineConfig, RunError, RunHooks};
use crate::nt::etw::Value;
use crate::memory::ContiguousFailure;
use crate::violations::ViolationKind;

const SG: BoardKind = BoardKind::ScatterGather;
const CB: BoardKind = BoardKind::Legacy;

/// Every row, in the order the table prints them.
pub static ROWS: &[RowSpec] = &[
    RowSpec { name: "dma-error/sg", board: SG, expectation: "DMA error bit at frame k: channel reset and restarted, frame k lost, stream resumes", run: dma_error },
    RowSpec { name: "dma-error/cb", board: CB, expectation: "DMA error bit at frame k: channel reset and restarted, frame k lost, stream resumes", run: dma_error },
    RowSpec { name: "hang/sg", board: SG, expectation: "engine stops completing at frame k: the watchdog resets the channel after 4 silent intervals, stream resumes", run: hang },
    RowSpec { name: "hang/cb", board: CB, expectation: "engine stops completing at frame k: the watchdog resets the channel after 4 silent intervals, stream resumes", run: hang },
    RowSpec { name: "spurious-interrupt/shared-line", board: CB, expectation: "2 cards on one line, 30-50 spurious assertions: every one unclaimed (ISRs return FALSE), no frame lost", run: spurious },
    RowSpec { name: "interrupt-storm/sg", board: SG, expectation: "10000 spurious assertions in a burst and 2000 completion bits with no record: all quenched, no reset, no frame lost", run: storm },
    RowSpec { name: "bad-slot-index/sg", board: SG, expectation: "completion index out of range at frame k: refused (IndexOutOfRange), channel reset, frame k not delivered, stream resumes", run: bad_slot_index },
    RowSpec { name: "bad-slot-index/cb", board: CB, expectation: "completion index out of range at frame k: refused (IndexOutOfRange), channel reset, frame k not delivered, stream resumes", run: bad_slot_index },
    RowSpec { name: "bad-descriptor-index/sg", board: SG, expectation: "completion names the wrong descriptor at frame k: refused (Unexpected), channel reset, frame k not delivered", run: bad_descriptor_index },
    RowSpec { name: "bad-descriptor-index/cb", board: CB, expectation: "completion names the wrong slot at frame k: refused (Unexpected), channel reset, frame k not delivered", run: bad_descriptor_index },
    RowSpec { name: "oversized-length/sg", board: SG, expectation: "completion claims 0xFFFF0000 bytes at frame k: refused (ByteCountTooLarge), channel reset, frame k not delivered", run: oversized_length },
    RowSpec { name: "oversized-length/cb", board: CB, expectation: "completion claims 0xFFFF0000 bytes at frame k: refused (ByteCountTooLarge), channel reset, frame k not delivered", run: oversized_length },
    RowSpec { name: "surprise-removal/sg", board: SG, expectation: "card 0 of 2 vanishes mid-stream, the app stops a pin first: every frame completed or cancelled, interface refused (STATUS_DEVICE_REMOVED), card 1 streams on", run: surprise_removal },
    RowSpec { name: "surprise-removal/cb", board: CB, expectation: "card 0 of 2 vanishes mid-stream, the app stops a pin first: every frame completed or cancelled, interface refused (STATUS_DEVICE_REMOVED), card 1 streams on", run: surprise_removal },
    RowSpec { name: "stop-start/sg", board: SG, expectation: "RUN->PAUSE->RUN->STOP->RUN while streaming: all succeed, nothing delivered while stopped, frame numbers only increase", run: stop_start },
    RowSpec { name: "stop-start/cb", board: CB, expectation: "RUN->PAUSE->RUN->STOP->RUN while streaming: all succeed, nothing delivered while stopped, frame numbers only increase", run: stop_start },
    RowSpec { name: "pin-out-of-order/sg", board: SG, expectation: "state changes out of order (wrong FromState, jumps, SetDataFormat in RUN): refused with STATUS_INVALID_DEVICE_REQUEST, stream goes on", run: out_of_order },
    RowSpec { name: "pin-out-of-order/cb", board: CB, expectation: "state changes out of order (wrong FromState, jumps, SetDataFormat in RUN): refused with STATUS_INVALID_DEVICE_REQUEST, stream goes on", run: out_of_order },
    RowSpec { name: "alloc-smaller-ring/cb", board: CB, expectation: "the 8-slot ring cannot be allocated at start: the bus settles for 7 slots (stated) and streams", run: alloc_smaller_ring },
    RowSpec { name: "alloc-fails/sg", board: SG, expectation: "no common buffer at start: the start fails with STATUS_INSUFFICIENT_RESOURCES, nothing leaked; the next start streams", run: alloc_fails },
    RowSpec { name: "alloc-fails/cb", board: CB, expectation: "no common buffer at start: the start fails with STATUS_INSUFFICIENT_RESOURCES, nothing leaked; the next start streams", run: alloc_fails },
    RowSpec { name: "app-starved/sg", board: SG, expectation: "the application holds every buffer for 20 frame intervals: frames dropped and counted, no reset, stream resumes", run: app_starved },
    RowSpec { name: "app-starved/cb", board: CB, expectation: "the application holds every buffer for 20 frame intervals: frames dropped and counted, no reset, stream resumes", run: app_starved },
    RowSpec { name: "map-registers/scarce", board: SG, expectation: "32-bit S/G board, buffers above 4 GiB, map registers for one frame: KS waits for map registers, S/G streams on", run: map_registers_scarce },
    RowSpec { name: "ring/frame-in-parts", board: SG, expectation: "a 64-entry descriptor ring, frames of 75 mappings (MaxMappingByteCount 512): each frame posted in parts as the ring has room (ProgramFramePart), the board completes it part by part, every frame delivered", run: ring_shorter_than_a_frame },
    RowSpec { name: "map-registers/below-a-frame", board: SG, expectation: "64-bit S/G board, the HAL grants map registers for less than one frame: KS maps each frame by several transfers into one whole mapping table, S/G streams on", run: map_registers_below_a_frame },
    RowSpec { name: "map-registers/too-few", board: SG, expectation: "map registers cannot cover one frame: common-buffer fallback (reason stated), streams", run: map_registers_too_few },
    RowSpec { name: "remove-while-referenced", board: CB, expectation: "removal requested while streaming: vetoed by the AVStream child (open pin, STATUS_DEVICE_BUSY), the bus not asked; after the pin closes: QUERY_REMOVE succeeds down the children then the bus, the children's REMOVE drops the interface, the bus's REMOVE frees everything", run: remove_while_referenced },
    RowSpec { name: "remove-leaked-reference", board: CB, expectation: "a buggy child keeps its interface reference past its own REMOVE: the bus's REMOVE tears down anyway (no crash), the leak is reported against the child, a late call is refused", run: remove_leaked_reference },
    RowSpec { name: "start-stop-10000", board: SG, expectation: "10000 device start/stream/stop cycles (half S/G, half common-buffer), tiny frames: zero leaks, every frame verified", run: start_stop_cycles },
    RowSpec { name: "low-resources/images", board: SG, expectation: "Driver Verifier's low resources simulation fails each call of both images in turn (pool, device objects, IRPs, DMA adapter, common buffers; one machine each, 64x16 frames): every failure ends cleanly, the start refused with an error status or the stream on; no finding, bugcheck or leak", run: images::low_resources },
    RowSpec { name: "ksedit-fails/images", board: SG, expectation: "_KsEdit fails (no pool) in a format change in KSSTATE_STOP, for the descriptor then for the framing: refused with STATUS_INSUFFICIENT_RESOURCES, KS and the pin keep the old format and stream in it; the same change unfailed is accepted", run: images::ksedit_fails },
    RowSpec { name: "close-while-reset-hangs/images", board: SG, expectation: "a pin's handle closed as its engine stops acknowledging resets within the bus's 1000-read wait (acknowledged at the bus's next look): the close returns with every frame back only after the acknowledgement, no clone left; the other channel streams on", run: images::close_while_reset_hangs },
    RowSpec { name: "plain-headers/images", board: SG, expectation: "the application sends plain KSSTREAM_HEADERs (no KS_FRAME_INFO), each against a guard page: nothing written past them, every frame identified by its PresentationTime and verified", run: images::plain_headers },
    RowSpec { name: "surprise-removal-open-pins/images", board: SG, expectation: "card 0 of 2 (4 channels each) vanishes mid-stream with all 4 pins open: every frame completed or cancelled, every pin closes, the card removed; card 1 streams on", run: images::surprise_removal_open_pins },
];

/// The rows that do not run with the drivers' cores (`--drivers cores`),
/// each with the reason.
pub static NOT_WITH_CORES: &[(&str, &str)] = &[
    ("low-resources", "its fault is the emulated kernel's low resources simulation (Driver Verifier's), which fails the images' calls into the kernel; the cores allocate from the simulator's memory model, whose failures are the alloc-fails and alloc-smaller-ring rows"),
    ("ksedit-fails", "_KsEdit is the emulated ks.sys's, called by the AVStream image's SetDataFormat; the AVStream core on the host edits no KS descriptor"),
    ("plain-headers", "the stream headers are the emulated ks.sys's and the AVStream image's (KSSTREAM_HEADER and KS_FRAME_INFO in guest memory); the host KS model hands the core its completions directly"),
    ("map-registers/below-a-frame", "the cores' adapter model refuses no transfer for its length (its map registers are bounce pages, taken only by a 32-bit transfer above 4 GiB: map-registers/scarce), so KS maps every frame in one transfer; the grant that limits a transfer is the emulated HAL's (--drivers images)"),
];

/// The rows that do not run with the bus image (`--drivers bus-image`),
/// each with the reason; every other row runs through the image.
pub static NOT_WITH_IMAGE: &[(&str, &str)] = &[
    ("stop-start", "its subject is the AVStream pin's KS state machine (the AVStream core, the same with either bus), not the bus driver"),
    ("pin-out-of-order", "its subject is the AVStream pin's KS state machine (the AVStream core, the same with either bus), not the bus driver"),
    ("app-starved", "its subject is the application and the AVStream core's queue (the board counts the drops), not the bus driver"),
    ("map-registers/scarce", "its subject is the KS model waiting for map registers on the AVStream side, not the bus driver"),
    ("map-registers/below-a-frame", "its subject is how KS maps a frame larger than the grant on the AVStream side (the emulated ks.sys with --drivers images), not the bus driver"),
    ("remove-leaked-reference", "needs a deliberately buggy AVStream child keeping the image's interface past its removal; not built for the image yet"),
    ("alloc-smaller-ring", "its fault is the machine's contiguous-allocation failure by count, and with the image the emulated kernel's own allocations come out of the same memory (the count would land elsewhere); the image's allocation failures are the emulated kernel's low-resources mode (sim/tests/nt_io.rs), not this row yet"),
    ("alloc-fails", "its fault is the machine's contiguous-allocation failure, which with the image also fails the emulated kernel's own allocations before DriverEntry; the image's allocation failures are the emulated kernel's low-resources mode (sim/tests/nt_io.rs), not this row yet"),
    ("start-stop-10000", "each machine loads the image once and unloads it at its teardown: 10000 start/stop cycles would need the image's stop/start (IRP_MN_STOP_DEVICE) driven by the machine, not yet"),
    ("low-resources", "it fails each call of both images in turn; with the bus image alone the AVStream side is the host core, which calls nothing in the emulated kernel (the bus image's own calls failing in turn are sim/tests/nt_pnp.rs's low-resources tests)"),
    ("ksedit-fails", "_KsEdit is the emulated ks.sys's, called by the AVStream image's SetDataFormat; with the bus image alone the AVStream side is the host core, which edits no KS descriptor"),
    ("plain-headers", "the stream headers are the emulated ks.sys's and the AVStream image's; with the bus image alone the host KS model hands the AVStream core its completions directly"),
];

/// Why row `name` does not run with the bus image, if it does not.
#[must_use]
pub fn not_with_image(name: &str) -> Option<&'static str> {
    NOT_WITH_IMAGE.iter().find(|(n, _)| name == *n || name.split('/').next() == Some(n)).map(|(_, why)| *why)
}

/// The rows that do not run with both images (`--drivers images`), each
/// with the reason.
pub static NOT_WITH_IMAGES: &[(&str, &str)] = &[
    ("ksedit-fails", "by _KsEdit's page an edit of an item already in the object bag that does not grow allocates nothing, so it cannot fail, and the AVStream image's format change edits only such items (its descriptor and framing copies made at pin creation); the failure the row injects never happens. Were one to fail, the image's SetDataFormat refuses the change with the core still on the old format (CapturePin::change_data_format commits only after the edits: unit test a_format_change_whose_edits_fail_keeps_the_old_format)"),
    ("map-registers/scarce", "the emulated HAL's adapters translate through a DMA-remapping domain, where transfers do not compete for a pool of map registers (only a transfer larger than the grant is refused), so KS never waits for them; the wait is the cores' adapter's (--drivers cores)"),
    ("remove-leaked-reference", "needs a deliberately buggy AVStream child keeping the bus image's interface past its removal; the real AVStream image releases it at IRP_MN_REMOVE_DEVICE (a buggy image is not built)"),
    ("alloc-smaller-ring", "its fault is the machine's contiguous-allocation failure by count, and with the images the emulated kernel's own allocations come out of the same memory (the count would land elsewhere); the images' allocation failures are the emulated kernel's low resources simulation, the low-resources/images row"),
    ("alloc-fails", "its fault is the machine's contiguous-allocation failure, which with the images also fails the emulated kernel's own allocations before DriverEntry; the images' allocation failures are the emulated kernel's low resources simulation, the low-resources/images row"),
    ("start-stop-10000", "each machine loads the images once and unloads them at its teardown: 10000 start/stop cycles would need IRP_MN_STOP_DEVICE driven through both images by the machine, not yet"),
];

/// Why row `name` does not run with `drivers`, if it does not.
#[must_use]
pub fn not_applicable(name: &str, drivers: &Drivers) -> Option<&'static str> {
    let find = |table: &[(&str, &'static str)]| {
        table.iter().find(|(n, _)| name == *n || name.split('/').next() == Some(n)).map(|(_, why)| *why)
    };
    match drivers {
        Drivers::Cores => find(NOT_WITH_CORES),
        Drivers::BusImage { .. } => find(NOT_WITH_IMAGE),
        Drivers::Images { .. } => find(NOT_WITH_IMAGES),
    }
}

/// A row being built.
struct Ctx {
    name: &'static str,
    drivers: Drivers,
    expectation: &'static str,
    board: BoardKind,
    seed: u64,
    rng: ChaCha8Rng,
    checks: Vec<Check>,
    recovered: Option<bool>,
    /// Substrings of violations the row provokes on purpose.
    expected: Vec<&'static str>,
    statuses: Vec<String>,
    started: Instant,
    /// Totals from machines already torn down (cycles).
    extra: Totals,
    /// Violations (not leaks) of machines already torn down, each naming its machine.
    extra_violations: Vec<String>,
    /// Leaks of machines already torn down, each naming its machine.
    extra_leaks: Vec<String>,
    /// The emulated kernels of machines already torn down: (machines,
    /// Driver Verifier findings, bugchecks), for a row of several machines.
    kernels: Option<(u32, u64, u64)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    captured: u64,
    delivered: u64,
    verified: u64,
    corrupt: u64,
}

impl Ctx {
    fn new(spec: &RowSpec, drivers: &Drivers, seed: u64) -> Self {
        // Rows differ by name too, so one seed varies every row differently.
        let salt = spec.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        Self {
            name: spec.name,
            drivers: drivers.clone(),
            expectation: spec.expectation,
            board: spec.board,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed ^ salt),
            checks: Vec::new(),
            recovered: None,
            expected: Vec::new(),
            statuses: Vec::new(),
            started: Instant::now(),
            extra: Totals::default(),
            extra_violations: Vec::new(),
            extra_leaks: Vec::new(),
            kernels: None,
        }
    }

    /// The stream every row starts from ([`base`]) with the row's drivers.
    fn base(&self) -> MachineConfig {
        MachineConfig { drivers: self.drivers.clone(), ..base(self.board, self.seed) }
    }

    /// Adds a torn-down machine's emulated kernel (if it ran one) to
    /// [`Ctx::kernels`].
    fn count_kernel(&mut self, m: &Machine) {
        if let Some(image) = m.image_report() {
            let (machines, findings, bugchecks) = self.kernels.unwrap_or_default();
            self.kernels = Some((machines + 1, findings + image.findings, bugchecks + image.bugchecks));
        }
    }

    /// A number in `lo..hi`.
    fn pick(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.rng.next_u32() % (hi - lo).max(1)
    }

    fn check(&mut self, what: impl Into<String>, ok: bool) {
        self.checks.push(Check { what: what.into(), ok });
    }

    fn recovered(&mut self, what: impl Into<String>, ok: bool) {
        self.recovered = Some(ok);
        self.check(format!("recovered: {}", what.into()), ok);
    }

    /// A failed row that could not even run.
    fn broken(mut self, why: String) -> FaultRow {
        self.check(why, false);
        self.finish(None)
    }

    /// The row: the machine's account (after its teardown) plus the
    /// standard checks every row makes.
    fn finish(mut self, machine: Option<&Machine>) -> FaultRow {
        let mut t = self.extra;
        let mut violations = std::mem::take(&mut self.extra_violations);
        let mut leaks = std::mem::take(&mut self.extra_leaks);
        let mut expected_violations = Vec::new();
        if let Some(m) = machine {
            let report = m.report();
            for c in &report.channels {
                t.captured += c.frames_captured;
                t.delivered += c.frames_delivered;
                t.verified += c.frames_verified;
                t.corrupt += c.frames_corrupt;
            }
            for v in m.violations().entries() {
                if self.expected.iter().any(|e| v.message.contains(e)) {
                    expected_violations.push(v.to_string());
                } else if v.kind == ViolationKind::Leak {
                    leaks.push(v.message);
                } else {
                    violations.push(v.to_string());
                }
            }
            for s in m.statuses() {
                self.statuses.push(s.to_string());
            }
        }
        for e in &self.expected {
            let seen = expected_violations.iter().any(|v| v.contains(e));
            self.checks.push(Check { what: format!("reported on purpose: \"{e}\" ({})", if seen { "seen" } else { "missing" }), ok: seen });
        }
        if let Some(image) = machine.and_then(Machine::image_report) {
            self.check(
                format!("the emulated kernel: no Driver Verifier finding ({}), no bugcheck ({})", image.findings, image.bugchecks),
                image.findings == 0 && image.bugchecks == 0,
            );
        } else if let Some((machines, findings, bugchecks)) = self.kernels {
            self.check(
                format!("the emulated kernel: no Driver Verifier finding ({findings}), no bugcheck ({bugchecks}) in {machines} machines"),
                findings == 0 && bugchecks == 0 && machines > 0,
            );
        } else if self.drivers.bus_image().is_some() {
            self.check("the row ran the bus image", false);
        }
        self.check(format!("no corrupt frame delivered as good ({} corrupt)", t.corrupt), t.corrupt == 0);
        self.check(format!("every delivered frame verified ({} of {})", t.verified, t.delivered), t.verified == t.delivered);
        self.check(format!("no violation ({})", violations.len()), violations.is_empty());
        self.check(format!("no leak ({})", leaks.len()), leaks.is_empty());
        if self.recovered.is_none() {
            self.check("the row states a recovery criterion", false);
        }
        let holds = self.checks.iter().all(|c| c.ok);
        FaultRow {
            name: self.name.to_string(),
            drivers: self.drivers.name().to_string(),
            not_applicable: None,
            seed: self.seed,
            expectation: self.expectation.to_string(),
            frames_captured: t.captured,
            frames_delivered: t.delivered,
            frames_verified: t.verified,
            frames_corrupt: t.corrupt,
            recovered: self.recovered.unwrap_or(false),
            violations,
            leaks,
            expected_violations,
            statuses: self.statuses,
            checks: self.checks,
            holds,
            wall_s: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// The stream every row starts from: 160x120 YUY2 at 60 fps, 60 frames,
/// four application buffers.
fn base(board: BoardKind, seed: u64) -> MachineConfig {
    MachineConfig { board, width: 160, height: 120, fps: 60, frames: 60, app_buffers: 4, seed, ..MachineConfig::default() }
}

fn interval(m: &Machine) -> u64 {
    m.config().frame_interval_100ns()
}

/// Builds and starts a machine.
fn started(config: MachineConfig) -> Result<Machine, String> {
    let mut m = Machine::new(config).map_err(|e| format!("machine: {e}"))?;
    match m.start() {
        Ok(()) => Ok(m),
        Err(e) => {
            m.teardown();
            Err(format!("start: {e}"))
        }
    }
}

fn log(m: &Machine, card: u32, channel: u32) -> ChannelLog {
    m.channel_log(card, channel).unwrap_or_default()
}

/// What the bus driver counted on a channel: the core's own counters, or
/// for the bus image what its trace says ([`image_stats`]).
fn bus_stats(m: &Machine, card: u32, channel: u32) -> ChannelStats {
    if m.config().drivers.bus_image().is_some() {
        return image_stats(m, channel);
    }
    m.bus_of(card).and_then(|b| b.channel_stats(channel)).unwrap_or_default()
}

/// The bus image's counters of `channel` as its ETW events tell them (the
/// image's `ChannelStats` live in the guest; its trace is how a driver
/// engineer sees them): `ValueRefused` (a refused record: `bad_records`,
/// `last_fault`), `EngineReset` (`resets`; cause `error-interrupt` also
/// `board_errors`), `WatchdogReset` (`resets` and `watchdog_resets`),
/// `DroppedByBoard` (`dropped_by_board`). The events do not name the card:
/// the rows that use this run one card, or judge all cards together.
fn image_stats(m: &Machine, channel: u32) -> ChannelStats {
    let mut stats = ChannelStats::default();
    for r in m.image_trace().iter().filter(|r| r.provider == "Capdma.Bus") {
        if r.field("Channel") != Some(&Value::UInt(u64::from(channel))) {
            continue;
        }
        match r.event.as_str() {
            "ValueRefused" => {
                stats.bad_records += 1;
                stats.last_fault = match r.field("Fault") {
                    Some(Value::Str(f)) => record_fault_named(f),
                    _ => None,
                };
            }
            "EngineReset" => {
                stats.resets += 1;
                if r.field("Cause") == Some(&Value::Str("error-interrupt".into())) {
                    stats.board_errors += 1;
                }
            }
            "WatchdogReset" => {
                stats.resets += 1;
                stats.watchdog_resets += 1;
            }
            "DroppedByBoard" => {
                if let Some(Value::UInt(n)) = r.field("Frames") {
                    stats.dropped_by_board += n;
                }
            }
            _ => {}
        }
    }
    stats
}

/// The [`RecordFault`] a `ValueRefused` event names (the image's trace names).
fn record_fault_named(name: &str) -> Option<RecordFault> {
    Some(match name {
        "cq-overrun" => RecordFault::CqOverrun,
        "index-out-of-range" => RecordFault::IndexOutOfRange,
        "unexpected-index" => RecordFault::Unexpected,
        "tag-mismatch" => RecordFault::TagMismatch,
        "byte-count-too-large" => RecordFault::ByteCountTooLarge,
        "bad-status" => RecordFault::BadStatus,
        _ => return None,
    })
}

fn delivered_after(log: &ChannelLog, t: u64) -> usize {
    log.delivered.iter().filter(|(at, _)| *at > t).count()
}

/// The outcome of the `k`-th capture (1-based).
fn capture(log: &ChannelLog, k: u32) -> Option<CaptureOutcome> {
    log.captures.get(k as usize - 1).map(|(_, o)| *o)
}

fn status_of(m: &Machine, needle: &str) -> Vec<NtStatus> {
    m.statuses().iter().filter(|s| s.what.contains(needle)).map(|s| s.status).collect()
}

fn names(statuses: &[NtStatus]) -> String {
    statuses.iter().map(|s| status_name(*s)).collect::<Vec<_>>().join(", ")
}

fn dma_error(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(10, 30);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    m.schedule(m.frame_time(k) - 1, Action::InjectFault { card: 0, fault: BoardFault::DmaError { channel: 0 } });
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    m.teardown();
    let stats = bus_stats(&m, 0, 0);
    let outcome = capture(&trace, k);
    ctx.check(format!("capture {k} halted the engine ({outcome:?})"), matches!(outcome, Some(CaptureOutcome::Halted { .. })));
    ctx.check(
        format!("the bus handled the error interrupt (board errors {}, resets {})", stats.board_errors, stats.resets),
        stats.board_errors >= 1 && stats.resets >= 1,
    );
    let after = delivered_after(&trace, m.frame_time(k));
    ctx.recovered(format!("{after} frames delivered after the fault"), after > 0);
    ctx.finish(Some(&m))
}

fn hang(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(5, 25);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    m.schedule(m.frame_time(k) - 1, Action::InjectFault { card: 0, fault: BoardFault::Hang { channel: 0 } });
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    m.teardown();
    let stats = bus_stats(&m, 0, 0);
    let hung: Vec<u64> = trace.captures.iter().filter(|(_, o)| *o == CaptureOutcome::Hung).map(|(t, _)| *t).collect();
    let limit = usize::try_from(WATCHDOG_FRAME_INTERVALS).unwrap_or(4);
    ctx.check(
        format!("the engine stayed silent {} frame intervals before the watchdog ({limit}..={})", hung.len(), limit + 2),
        (limit..=limit + 2).contains(&hung.len()),
    );
    ctx.check(format!("the watchdog reset the channel ({} watchdog resets)", stats.watchdog_resets), stats.watchdog_resets >= 1);
    let last_hung = hung.last().copied().unwrap_or(u64::MAX);
    let after = delivered_after(&trace, last_hung);
    ctx.recovered(format!("{after} frames delivered after the hang"), after > 0);
    ctx.finish(Some(&m))
}

fn spurious(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let n = ctx.pick(30, 51);
    let config = MachineConfig { cards: 2, ..ctx.base() };
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let half = interval(&m) / 2;
    for j in 0..n {
        let card = ctx.pick(0, 2);
        m.schedule(m.frame_time(5 + j) + half, Action::InjectFaultNow { card, fault: BoardFault::SpuriousInterrupt });
    }
    m.run(&mut RunHooks::default());
    m.teardown();
    let report = m.report();
    ctx.check(
        format!("every spurious assertion went unclaimed ({} of {n})", report.interrupts_unclaimed),
        report.interrupts_unclaimed == u64::from(n),
    );
    let resets: u64 = report.channels.iter().map(|c| c.channel_resets).sum();
    ctx.check(format!("no channel reset ({resets})"), resets == 0);
    let lost: u64 = report.channels.iter().map(|c| c.frames_captured - c.frames_delivered).sum();
    ctx.recovered(format!("both cards delivered every frame ({lost} lost)"), lost == 0 && report.channels.len() == 2);
    ctx.finish(Some(&m))
}

fn storm(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    const SPURIOUS: u32 = 10_000;
    const BITS: u32 = 2_000;
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(5, 20);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    // 100 µs after a capture: the 10 ms burst ends before the next frame.
    m.schedule(m.frame_time(k) + 1_000, Action::InjectFaultNow { card: 0, fault: BoardFault::InterruptStorm { count: SPURIOUS } });
    let storm_at = m.frame_time(k + 2) + 500;
    m.schedule(storm_at, Action::StatusStorm { card: 0, bits: int_done(0), count: BITS, period_100ns: 500 });
    m.run(&mut RunHooks::default());
    m.teardown();
    let report = m.report();
    ctx.check(
        format!("every spurious assertion unclaimed ({} of {SPURIOUS})", report.interrupts_unclaimed),
        report.interrupts_unclaimed == u64::from(SPURIOUS),
    );
    ctx.check(
        format!("every completion bit claimed ({} claimed, at least {BITS} expected)", report.interrupts_claimed),
        report.interrupts_claimed >= u64::from(BITS),
    );
    let stats = bus_stats(&m, 0, 0);
    ctx.check(format!("no channel reset ({})", stats.resets), stats.resets == 0);
    let c = report.channels.first().cloned().unwrap_or_default();
    ctx.recovered(
        format!("every frame delivered through the storm ({} of {})", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured,
    );
    ctx.finish(Some(&m))
}

/// A damaged completion record at frame k: refused with `expected`, the
/// channel reset, frame k never delivered, the stream resumes.
fn record_fault(spec: &RowSpec, drivers: &Drivers, seed: u64, fault: BoardFault, expected: RecordFault) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(10, 30);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    m.schedule(m.frame_time(k) - 1, Action::InjectFault { card: 0, fault });
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    m.teardown();
    let stats = bus_stats(&m, 0, 0);
    ctx.check(
        format!("the record was refused as {expected:?} ({} bad, last {:?})", stats.bad_records, stats.last_fault),
        stats.bad_records >= 1 && stats.last_fault == Some(expected),
    );
    ctx.check(format!("the channel was reset ({} resets)", stats.resets), stats.resets >= 1);
    match capture(&trace, k) {
        Some(CaptureOutcome::Completed { frame_number, .. }) => {
            let delivered: HashSet<u32> = trace.delivered.iter().map(|(_, f)| *f).collect();
            ctx.check(format!("frame {frame_number} (the damaged record's) not delivered"), !delivered.contains(&frame_number));
        }
        other => ctx.check(format!("capture {k} wrote the damaged record ({other:?})"), false),
    }
    let after = delivered_after(&trace, m.frame_time(k));
    ctx.recovered(format!("{after} frames delivered after the fault"), after > 0);
    ctx.finish(Some(&m))
}

fn bad_slot_index(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    record_fault(spec, drivers, seed, BoardFault::BadSlotIndex { channel: 0 }, RecordFault::IndexOutOfRange)
}

fn bad_descriptor_index(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    record_fault(spec, drivers, seed, BoardFault::BadDescriptorIndex { channel: 0 }, RecordFault::Unexpected)
}

fn oversized_length(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    record_fault(spec, drivers, seed, BoardFault::OversizedLength { channel: 0 }, RecordFault::ByteCountTooLarge)
}

fn surprise_removal(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(10, 30);
    let config = MachineConfig { cards: 2, channels: 2, ..ctx.base() };
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let gone = m.frame_time(k) + interval(&m) / 3;
    // 50 ms between the board vanishing and IRP_MN_SURPRISE_REMOVAL: the
    // ISR stays connected on the shared line all that time (an ISR that
    // claimed every all-ones read would starve card 1 and storm the line).
    let pnp = gone + 500_000;
    m.schedule(gone, Action::InjectFaultNow { card: 0, fault: BoardFault::SurpriseRemoval });
    // The application notices first and stops one pin before Plug and Play
    // sends IRP_MN_SURPRISE_REMOVAL (the bus has only observed all ones in its ISR).
    m.schedule(gone + 5_000, Action::PinState { card: 0, channel: 0, to: KsState::Stop });
    m.schedule(pnp, Action::SurpriseRemoval { card: 0 });
    m.run(&mut RunHooks::default());
    let logs: Vec<ChannelLog> = (0..2).flat_map(|card| (0..2).map(move |ch| (card, ch))).map(|(card, ch)| log(&m, card, ch)).collect();
    m.teardown();
    let stop = status_of(&m, "card 0 channel 0: KS state to Stop");
    ctx.check(format!("the pin stopped after the board vanished ({})", names(&stop)), stop == [STATUS_SUCCESS]);
    let qi = status_of(&m, "after surprise removal");
    let image = ctx.drivers.bus_image().is_some();
    if image {
        // The image's child PDO answers for itself (its PnP state no longer
        // serves interfaces): any error status refuses.
        let shown: Vec<String> = qi.iter().map(|s| format!("{} {:#010X}", status_name(*s), s.cast_unsigned())).collect();
        ctx.check(
            format!("the image's child PDO refuses the interface after removal ({})", shown.join(", ")),
            qi.len() == 1 && !capdma_interface::status::nt_success(qi[0]),
        );
    } else {
        ctx.check(format!("the interface is refused after removal ({})", names(&qi)), qi == [STATUS_DEVICE_REMOVED]);
    }
    for (i, trace) in logs.iter().take(2).enumerate() {
        let late = delivered_after(trace, gone);
        ctx.check(format!("card 0 channel {i}: nothing delivered after the board vanished ({late})"), late == 0);
        ctx.check(
            format!(
                "card 0 channel {i}: every queued frame completed or cancelled ({} of {} back, {} queued, {} clones)",
                trace.ks_completed, trace.ks_submitted, trace.ks_queued, trace.ks_live_clones
            ),
            trace.ks_completed == trace.ks_submitted && trace.ks_queued == 0 && trace.ks_live_clones == 0,
        );
    }
    if image {
        // The image's own account: it saw IRP_MN_SURPRISE_REMOVAL (its
        // trace), then the removal went through with every interface
        // reference back (a reference held would be a leak of the row).
        let surprised = status_of(&m, "card 0: IRP_MN_SURPRISE_REMOVAL (bus image)");
        let traced = m.image_trace().iter().filter(|r| r.provider == "Capdma.Bus" && r.event == "SurpriseRemoval").count();
        let removed = status_of(&m, "card 0: bus image IRP_MN_REMOVE_DEVICE (surprise-removed)");
        ctx.check(
            format!(
                "card 0's bus image surprise-removed ({}, {traced} SurpriseRemoval event(s)) then removed ({})",
                names(&surprised),
                names(&removed)
            ),
            surprised == [STATUS_SUCCESS] && traced == 1 && removed == [STATUS_SUCCESS],
        );
    } else {
        let card0 = m.bus_of(0).map(|b| (b.reference_count(), b.state()));
        ctx.check(format!("card 0's bus released and stopped ({card0:?})"), card0 == Some((0, capdma_bus::DeviceState::Stopped)));
    }
    let report = m.report();
    let card1: Vec<_> = report.channels.iter().filter(|c| c.card == 1).collect();
    let lost: u64 = card1.iter().map(|c| c.frames_captured - c.frames_delivered).sum();
    let after: usize = logs.iter().skip(2).map(|t| delivered_after(t, pnp)).sum();
    ctx.recovered(
        format!("card 1 streamed on: {after} frames after the removal, {lost} lost"),
        after > 0 && lost == 0 && card1.len() == 2,
    );
    ctx.finish(Some(&m))
}

fn stop_start(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(6, 14);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let half = interval(&m) / 2;
    let steps = [(k, KsState::Pause), (k + 5, KsState::Run), (k + 10, KsState::Stop), (k + 15, KsState::Run)];
    let times: Vec<u64> = steps.iter().map(|(f, _)| m.frame_time(*f) + half).collect();
    for ((_, to), at) in steps.iter().zip(&times) {
        m.schedule(*at, Action::PinState { card: 0, channel: 0, to: *to });
    }
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    m.teardown();
    let statuses = status_of(&m, "KS state to");
    ctx.check(format!("every state change succeeded ({})", names(&statuses)), statuses == [STATUS_SUCCESS; 4]);
    let stopped = trace.delivered.iter().filter(|(t, _)| (times[0] < *t && *t < times[1]) || (times[2] < *t && *t < times[3])).count();
    ctx.check(format!("nothing delivered while paused or stopped ({stopped})"), stopped == 0);
    let increasing = trace.delivered.windows(2).all(|w| w[0].1 < w[1].1);
    ctx.check("frame numbers only increase (no stale or repeated frame after a restart)", increasing);
    let between = trace.delivered.iter().filter(|(t, _)| times[1] < *t && *t < times[2]).count();
    let after = delivered_after(&trace, times[3]);
    ctx.recovered(format!("{between} frames after the first restart, {after} after the second"), between > 0 && after > 0);
    ctx.finish(Some(&m))
}

fn out_of_order(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(6, 20);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let at = m.frame_time(k) + interval(&m) / 2;
    let (card, channel) = (0, 0);
    let invalid = STATUS_INVALID_DEVICE_REQUEST;
    let plan = [
        (Action::PinDeviceState { card, channel, to: KsState::Acquire, from: KsState::Stop }, invalid),
        (Action::PinSetFormat { card, channel }, invalid),
        (Action::PinTransition { card, channel, to: KsState::Stop }, invalid),
        (Action::PinTransition { card, channel, to: KsState::Acquire }, invalid),
        (Action::PinTransition { card, channel, to: KsState::Run }, STATUS_SUCCESS),
        (Action::PinTransition { card, channel, to: KsState::Pause }, STATUS_SUCCESS),
        (Action::PinTransition { card, channel, to: KsState::Stop }, invalid),
        (Action::PinDeviceState { card, channel, to: KsState::Run, from: KsState::Stop }, invalid),
    ];
    let expected: Vec<NtStatus> = plan.iter().map(|(_, s)| *s).chain([STATUS_SUCCESS]).collect();
    for (action, _) in plan {
        m.schedule(at, action);
    }
    let resume = m.frame_time(k + 3) + interval(&m) / 2;
    m.schedule(resume, Action::PinDeviceState { card, channel, to: KsState::Run, from: KsState::Pause });
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    m.teardown();
    let observed: Vec<NtStatus> = m.statuses().iter().filter(|s| s.what.starts_with("card 0 channel 0")).map(|s| s.status).take(expected.len()).collect();
    ctx.check(format!("statuses {} (expected {})", names(&observed), names(&expected)), observed == expected);
    let before = trace.delivered.iter().filter(|(t, _)| *t < at).count();
    let after = delivered_after(&trace, resume);
    ctx.recovered(format!("{before} frames before, {after} after the out-of-order calls"), before > 0 && after > 0);
    ctx.finish(Some(&m))
}

fn alloc_smaller_ring(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    // The channel's first contiguous allocation is its completion queue,
    // the second its slot ring: that one fails once.
    let config = MachineConfig { slot_count: 8, contiguous_failure: Some(ContiguousFailure::Nth(2)), ..ctx.base() };
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let slots = m.bus().slot_count(0);
    ctx.statuses.push(format!("slot ring: {slots:?} slots of 8 configured"));
    ctx.check(format!("the bus settled for a smaller ring and says so ({slots:?} slots)"), slots == Some(7));
    m.run(&mut RunHooks::default());
    m.teardown();
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.recovered(
        format!("streamed on the smaller ring ({} of {} delivered)", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured,
    );
    ctx.finish(Some(&m))
}

fn alloc_fails(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let config = MachineConfig { contiguous_failure: Some(ContiguousFailure::Always), ..ctx.base() };
    let mut m = match Machine::new(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(format!("machine: {e}")),
    };
    match m.start() {
        Err(RunError::Driver { step, status, .. }) => {
            ctx.statuses.push(format!("{step}: {}", status_name(status)));
            ctx.check(
                format!("the bus start failed cleanly with STATUS_INSUFFICIENT_RESOURCES ({step}: {})", status_name(status)),
                status == STATUS_INSUFFICIENT_RESOURCES && step.contains("bus IRP_MN_START_DEVICE"),
            );
        }
        Err(e) => ctx.check(format!("the start failed with a driver status ({e})"), false),
        Ok(()) => ctx.check("the start failed without common buffers (it succeeded)", false),
    }
    m.teardown();
    let after_failure = m.violations().len();
    ctx.check(format!("nothing leaked by the failed start ({after_failure} violations)"), after_failure == 0);
    let adapters = m.pci(0).map(|p| p.adapters().len()).unwrap_or_default();
    ctx.check(format!("every adapter of the failed start was put ({adapters} left)"), adapters == 0);
    // Contiguous memory is back: the next start streams.
    m.memory().set_contiguous_failure(None);
    let restarted = m.start();
    ctx.check(format!("the next start succeeded ({:?})", restarted.as_ref().err().map(ToString::to_string)), restarted.is_ok());
    if restarted.is_ok() {
        m.run(&mut RunHooks::default());
    }
    m.teardown();
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.recovered(
        format!("the next start streamed ({} of {} delivered)", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured,
    );
    ctx.finish(Some(&m))
}

fn app_starved(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    const HELD: u32 = 20;
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(8, 16);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let half = interval(&m) / 2;
    let release = m.frame_time(k + HELD) + half;
    m.schedule(m.frame_time(k) + half, Action::AppHold { card: 0, channel: 0, hold: true });
    m.schedule(release, Action::AppHold { card: 0, channel: 0, hold: false });
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    m.teardown();
    let stats = bus_stats(&m, 0, 0);
    let c = m.report().channels.first().cloned().unwrap_or_default();
    let lost = c.frames_captured - c.frames_delivered;
    let floor = u64::from(HELD - m.config().app_buffers);
    ctx.check(format!("frames were lost while the buffers were held ({lost} >= {floor})"), lost >= floor);
    let counted = c.board_dropped + c.driver_dropped;
    ctx.check(
        format!("every lost frame was counted where it was lost ({} by the board + {} by the driver = {lost})", c.board_dropped, c.driver_dropped),
        counted == lost,
    );
    ctx.check(format!("starvation is not a hang: no reset ({} resets)", stats.resets), stats.resets == 0);
    let after = delivered_after(&trace, release);
    ctx.recovered(format!("{after} frames delivered after the buffers came back"), after > 0);
    ctx.finish(Some(&m))
}

/// The DMA mode card 0's bus chose at its start: the core's decision, or
/// what the bus image stated in its `DeviceStart` event.
fn started_mode(m: &Machine) -> Option<DmaMode> {
    if m.config().drivers.bus_image().is_none() {
        return m.bus().decision().map(|d| d.mode);
    }
    let start = m.image_trace().iter().find(|r| r.provider == "Capdma.Bus" && r.event == "DeviceStart").cloned();
    match start.as_ref().and_then(|r| r.field("Mode")) {
        Some(Value::Str(v)) if v == DmaMode::ScatterGather.name() => Some(DmaMode::ScatterGather),
        Some(Value::Str(v)) if v == DmaMode::CommonBuffer.name() => Some(DmaMode::CommonBuffer),
        _ => None,
    }
}

fn map_registers_config(ctx: &Ctx, map_registers: u32) -> MachineConfig {
    let drivers = ctx.drivers.with_map_register_limit(map_registers);
    MachineConfig { dma32: true, high_memory: true, mode: DmaModeOverride::ScatterGather, map_registers, drivers, ..ctx.base() }
}

fn map_registers_scarce(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    // 160x120 YUY2 is 38400 bytes: 10 pages; the board's largest frame is 15.
    let mut m = match started(map_registers_config(&ctx, 16)) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let mode = started_mode(&m);
    ctx.check(format!("the bus kept scatter/gather ({mode:?})"), mode == Some(DmaMode::ScatterGather));
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    let last_third = m.frame_time(40);
    m.teardown();
    ctx.check(format!("KS waited for map registers ({} waits)", trace.ks_map_waits), trace.ks_map_waits > 0);
    let after = delivered_after(&trace, last_third);
    ctx.recovered(format!("{after} frames delivered in the last third of the run"), after > 0);
    ctx.finish(Some(&m))
}

fn ring_shorter_than_a_frame(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    const ENTRIES: u32 = 64;
    const MAPPING: u32 = 512;
    let mut ctx = Ctx::new(spec, drivers, seed);
    let config = MachineConfig { descriptor_ring_entries: Some(ENTRIES), max_mapping_bytes: Some(MAPPING), ..ctx.base() };
    let mappings = (config.width * config.height * 2).div_ceil(MAPPING);
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    ctx.check(format!("a frame has more mappings ({mappings}) than the ring has entries ({ENTRIES})"), mappings > ENTRIES);
    m.run(&mut RunHooks::default());
    m.teardown();
    let board = m.board().channel_stats(0).unwrap_or_default();
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.check(
        format!("the board completed frames part by part ({} parts for {} frames)", board.parts_completed, board.frames_produced),
        board.frames_produced > 0 && board.parts_completed >= board.frames_produced,
    );
    // One frame in parts in flight at a time: each starts on a ring its
    // predecessor no longer holds (64 + 11 mappings: one part record).
    ctx.check(
        format!("each frame in few parts ({} part records for {} frames, at most 2 a frame)", board.parts_completed, board.frames_produced),
        board.parts_completed <= 2 * board.frames_produced,
    );
    if ctx.drivers.bus_image().is_none() {
        let bus = bus_stats(&m, 0, 0);
        ctx.check(format!("the bus delivered every part's completion ({} of {})", bus.parts_completed, board.parts_completed), bus.parts_completed == board.parts_completed);
    }
    ctx.recovered(
        format!("every frame delivered in S/G mode ({} of {})", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured,
    );
    ctx.finish(Some(&m))
}

fn map_registers_below_a_frame(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    // 160x120 YUY2 is 38400 bytes: 10 or 11 pages; the HAL grants 4.
    const GRANT: u32 = 4;
    let mut ctx = Ctx::new(spec, drivers, seed);
    let config = MachineConfig { drivers: ctx.drivers.with_map_register_limit(GRANT), ..ctx.base() };
    let pages = capdma_bus::mode::map_registers_per_frame(config.width * config.height * 2);
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    ctx.check(format!("the grant ({GRANT}) is below one frame ({pages} map registers)"), GRANT < pages);
    let mode = started_mode(&m);
    ctx.check(format!("the bus kept scatter/gather ({mode:?})"), mode == Some(DmaMode::ScatterGather));
    m.run(&mut RunHooks::default());
    let trace = log(&m, 0, 0);
    m.teardown();
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.check(
        format!("KS mapped each frame by several transfers ({} S/G lists, {} frames delivered)", trace.ks_sg_lists, c.frames_delivered),
        c.frames_delivered > 0 && trace.ks_sg_lists >= 2 * c.frames_delivered,
    );
    ctx.recovered(
        format!("every frame delivered in S/G mode ({} of {})", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured,
    );
    ctx.finish(Some(&m))
}

fn map_registers_too_few(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let mut m = match started(map_registers_config(&ctx, 4)) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    if ctx.drivers.bus_image().is_some() {
        // The image states its decision in its DeviceStart event.
        let start = m.image_trace().iter().find(|r| r.provider == "Capdma.Bus" && r.event == "DeviceStart").cloned();
        let text = |name: &str| match start.as_ref().and_then(|r| r.field(name)) {
            Some(Value::Str(v)) => v.clone(),
            _ => String::new(),
        };
        let (mode, reason) = (text("Mode"), text("Reason"));
        ctx.statuses.push(format!("DeviceStart Mode={mode:?} Reason={reason:?}"));
        ctx.check(
            format!("common-buffer fallback, reason stated in DeviceStart (Mode={mode:?}, Reason={reason:?})"),
            mode == DmaMode::CommonBuffer.name() && reason == ModeReason::AddressLimitNoMapRegisters.describe(),
        );
    } else {
        let decision = m.bus().decision();
        let stated = decision.map_or("none", |d| d.reason.describe());
        ctx.statuses.push(format!("mode {:?}: {stated}", decision.map(|d| d.mode)));
        ctx.check(
            format!("common-buffer fallback, reason stated ({decision:?})"),
            decision.is_some_and(|d| d.mode == DmaMode::CommonBuffer && d.reason == ModeReason::AddressLimitNoMapRegisters),
        );
    }
    m.run(&mut RunHooks::default());
    m.teardown();
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.recovered(
        format!("streamed in common-buffer mode ({} of {} delivered)", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured,
    );
    ctx.finish(Some(&m))
}

fn remove_while_referenced(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(5, 40);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let image = ctx.drivers.bus_image().is_some();
    // The image's count lives in the guest: the AVStream device holding
    // its interface is the reference that matters here.
    let refs = if matches!(ctx.drivers, Drivers::Images { .. }) {
        // The AVStream image holds its interface reference inside the guest;
        // what vetoes the removal is the application's open pin on it.
        u32::from(m.image_pin_open(0, 0))
    } else if image {
        u32::from(m.avstream_device(0, 0).is_some_and(|d| d.holds_interface()))
    } else {
        m.bus().reference_count()
    };
    let at = m.frame_time(k) + interval(&m) / 2;
    m.schedule(at, Action::RequestRemoval { card: 0 });
    m.run(&mut RunHooks::default());
    m.teardown();
    let during: Vec<_> = m.statuses().iter().filter(|s| s.what.contains("QUERY_REMOVE") && !s.what.contains("at teardown")).collect();
    ctx.check(
        format!(
            "while streaming ({refs} reference(s) held) the removal is vetoed by the AVStream child, the bus not asked ({})",
            during.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        ),
        refs > 0
            && during.len() == 1
            && during[0].status == STATUS_DEVICE_BUSY
            && during[0].what.contains("(AVStream stack)"),
    );
    // After the application closed the pin: the query succeeds down the
    // tree, children first, then the removals, children first.
    let order: Vec<(String, NtStatus)> = m
        .statuses()
        .iter()
        .filter(|s| s.at_100ns > at && (s.what.contains("QUERY_REMOVE") || s.what.contains("IRP_MN_REMOVE_DEVICE")))
        .map(|s| (s.what.clone(), s.status))
        .collect();
    // With the image, its PnP manager sends the bus stack's query and
    // removal (children first) in one step, recorded as one status.
    // With both images, the emulated PnP manager queries and removes the
    // AVStream stacks and the bus stack (children first) in one step.
    let expected: &[&str] = if matches!(ctx.drivers, Drivers::Images { .. }) {
        &["card 0: bus image IRP_MN_REMOVE_DEVICE"]
    } else if image {
        &[
            "card 0 channel 0: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack) at teardown",
            "card 0 channel 0: IRP_MN_REMOVE_DEVICE (AVStream stack)",
            "card 0: bus image IRP_MN_REMOVE_DEVICE",
        ]
    } else {
        &[
            "card 0 channel 0: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack) at teardown",
            "card 0: IRP_MN_QUERY_REMOVE_DEVICE (bus stack) at teardown",
            "card 0 channel 0: IRP_MN_REMOVE_DEVICE (AVStream stack)",
            "card 0: IRP_MN_REMOVE_DEVICE (bus FDO)",
        ]
    };
    let in_order = order.len() == expected.len()
        && order.iter().zip(expected).all(|((what, status), e)| what == e && *status == STATUS_SUCCESS);
    ctx.check(format!("after the pin closed: {order:?} (expected {expected:?}, all STATUS_SUCCESS)"), in_order);
    if image {
        // Its trace: one stop, by the removal; every interface reference
        // back is the row's leak check.
        let stops: Vec<String> = m
            .image_trace()
            .iter()
            .filter(|r| r.provider == "Capdma.Bus" && r.event == "DeviceStop")
            .map(|r| r.field("Why").map(ToString::to_string).unwrap_or_default())
            .collect();
        ctx.check(format!("the bus image stopped once, by the removal ({stops:?})"), stops == ["\"IRP_MN_REMOVE_DEVICE\""]);
    } else {
        let bus = m.bus();
        ctx.check(
            format!("the bus was removed with no reference left ({} references, {:?})", bus.reference_count(), bus.state()),
            bus.reference_count() == 0 && bus.state() == capdma_bus::DeviceState::Stopped,
        );
    }
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.recovered(
        format!("the vetoed removal left the stream alone ({} of {} delivered) and the removal went through", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured && in_order,
    );
    ctx.finish(Some(&m))
}

fn remove_leaked_reference(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let Some(child) = m.avstream_device(0, 0) else {
        return ctx.broken("no AVStream device on card 0 channel 0".into());
    };
    child.keep_interface_past_remove(true);
    m.run(&mut RunHooks::default());
    m.teardown();
    ctx.expected = vec![
        "still held at the bus's IRP_MN_REMOVE_DEVICE by card 0 channel 0 AVStream FDO",
        "capdma interface reference(s) never dropped",
    ];
    let removed = status_of(&m, "card 0: IRP_MN_REMOVE_DEVICE (bus FDO)");
    ctx.check(format!("the bus's IRP_MN_REMOVE_DEVICE went ahead ({})", names(&removed)), removed == [STATUS_SUCCESS]);
    let bus = m.bus();
    let leaks = m.pci(0).map(crate::pnp::PciFunction::leaks).unwrap_or_default();
    ctx.check(
        format!("everything but the reference released ({:?}, {} reference held, {} adapter/buffer leak(s))", bus.state(), bus.reference_count(), leaks.len()),
        bus.state() == capdma_bus::DeviceState::Stopped && bus.reference_count() == 1 && leaks.is_empty(),
    );
    let late = child.late_interface_call();
    ctx.statuses.push(format!("late GetDmaConfig through the leaked interface: {}", late.map_or("none", status_name)));
    ctx.check(format!("a late call through the leaked interface is refused ({late:?})"), late == Some(STATUS_DEVICE_NOT_READY));
    // The child lets go at last: the count goes down, nothing wraps.
    let released = child.release_interface();
    let refs = m.bus().reference_count();
    ctx.check(format!("the late dereference counts down ({refs} left)"), released && refs == 0);
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.recovered(
        format!("the stream was untouched ({} of {} delivered) and the removal completed", c.frames_delivered, c.frames_captured),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured && removed == [STATUS_SUCCESS],
    );
    ctx.finish(Some(&m))
}

fn start_stop_cycles(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    const CYCLES: u32 = 10_000;
    let mut ctx = Ctx::new(spec, drivers, seed);
    let mut done = 0u32;
    let mut failure = None;
    let mut totals = Totals::default();
    for (board, cycles) in [(BoardKind::ScatterGather, CYCLES / 2), (BoardKind::Legacy, CYCLES - CYCLES / 2)] {
        let config = MachineConfig {
            board,
            width: 64,
            height: 16,
            fps: 120,
            frames: 2,
            app_buffers: 2,
            slot_count: 2,
            descriptor_ring_entries: Some(64),
            cq_entries: Some(64),
            seed,
            ..MachineConfig::default()
        };
        let mut m = match Machine::new(config) {
            Ok(m) => m,
            Err(e) => return ctx.broken(format!("machine: {e}")),
        };
        for cycle in 0..cycles {
            if let Err(e) = m.start() {
                m.teardown();
                failure = Some(format!("{board:?} cycle {cycle}: {e}"));
                break;
            }
            m.run(&mut RunHooks::default());
            m.teardown();
            for c in m.report().channels {
                totals.captured += c.frames_captured;
                totals.delivered += c.frames_delivered;
                totals.verified += c.frames_verified;
                totals.corrupt += c.frames_corrupt;
            }
            let live = m.memory().stats().live_allocations;
            if !m.violations().is_empty() || live != 0 {
                failure = Some(format!("{board:?} cycle {cycle}: {live} live allocations, {:?}", m.violations().list()));
                break;
            }
            done += 1;
        }
        if let Some(why) = failure {
            ctx.extra = totals;
            ctx.check(format!("every cycle clean (first failure: {why})"), false);
            ctx.recovered(format!("the device started again after every stop ({done} starts)"), false);
            return ctx.finish(None);
        }
    }
    ctx.extra = totals;
    ctx.statuses.push(format!("{done} cycles"));
    ctx.check(format!("{done} of {CYCLES} cycles ran, each with zero leaks"), done == CYCLES);
    ctx.check(
        format!("every cycle delivered its frames ({} of {} delivered)", totals.delivered, totals.captured),
        totals.captured == u64::from(CYCLES) * 2 && totals.delivered == totals.captured,
    );
    ctx.recovered(format!("the device started again after every stop ({done} starts)"), done == CYCLES);
    ctx.finish(None)
}
