//! Kernel dispatcher: DPCs, timers in virtual time, the thread's delays
//! (`KeDelayExecutionThread`: virtual time passes), interrupts
//! (`IoConnectInterruptEx`, the ISR at its DIRQL, interrupt spin locks),
//! and the delivery of pending ISRs and DPCs when the IRQL allows, as a
//! uniprocessor Windows does it.
//!
//! # Delivery
//! [`deliver`] runs after every stub exit (`Kernel::at_exit`): while an
//! interrupt is pending whose DIRQL is above the current IRQL, its ISRs
//! run at their `SynchronizeIrql` holding their interrupt spin lock; then,
//! while the IRQL is below `DISPATCH_LEVEL`, the queued DPCs run at
//! `DISPATCH_LEVEL`, oldest first. Timers expire in virtual time
//! ([`Nt::advance_time`]); a timer's DPC is queued at its expiry.
//!
//! # Interrupt sources
//! The PnP manager says which interrupts a device's PDO was given
//! ([`assign_interrupts`], as the translated `CM_RESOURCE_LIST` does); the
//! board model drives them: [`set_line`] (a line's level), [`signal`] (an
//! MSI write, or an edge on a latched line) or [`attach_source`] (a level
//! polled at every delivery point, e.g. the board's `interrupt_pending`).
//! A level-sensitive line interrupts for as long as it is asserted
//! (re-delivered after the ISRs return while still asserted; shareable);
//! a latched line and each MSI message interrupt once per rising edge
//! (not re-delivered while the device's status stays set; MSI is never
//! shared).
//!
//! # Fidelity to multiprocessor Windows
//! "A timer's DPC may already be queued when `KeCancelTimer` returns"
//! (the timer can expire on another processor just before the cancel):
//! with [`KeState::cancel_race`] set (the default), cancelling a set timer
//! that has a DPC queues that DPC as if the timer had just expired on
//! another processor. Such a DPC is not run at this processor's next
//! exit, but by `KeFlushQueuedDpcs`, [`Nt::run_pending`] or
//! [`Nt::advance_time`] — so a driver that frees the DPC's context after
//! `KeCancelTimer` without `KeFlushQueuedDpcs` crashes in the DPC, as it
//! can on Windows.
//!
//! # Driver Verifier
//! Each check is a [`Finding`](super::verifier::Finding) named here: the
//! IRQL of every DDI (the table), DPC and timer objects in paged pool,
//! re-initialising a queued DPC or a set timer, an ISR or DPC routine that
//! returns at another IRQL than it was called at (bug check 0xC8
//! `IRQL_UNEXPECTED_VALUE`), interrupt spin lock misuse, and — through
//! [`check_free`] and [`check_unload`] — timers, DPCs and interrupts left
//! live in memory being freed or code being unloaded (0xC4/0x15, 0xC7
//! `TIMER_OR_DPC_INVALID`, 0xCE
//! `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use capdma_winvm::{Machine, Stop};

use super::layout::ke::{
    dispatcher_header, fully_specified, io_connect_interrupt_parameters as icp, io_disconnect_interrupt_parameters as idp,
    io_interrupt_message_info as imi, io_interrupt_message_info_entry as imie, kdpc, ktimer, line_based, message_based,
};
use super::pool::POOL_FLAG_PAGED;
use super::{Ddi, Module, Nt, APC_LEVEL, DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ntoskrnl, name: "KeInitializeDpc", max_irql: HIGH_LEVEL, run: ke_initialize_dpc },
    Ddi { module: Module::Ntoskrnl, name: "KeInsertQueueDpc", max_irql: HIGH_LEVEL, run: ke_insert_queue_dpc },
    Ddi { module: Module::Ntoskrnl, name: "KeFlushQueuedDpcs", max_irql: PASSIVE_LEVEL, run: ke_flush_queued_dpcs },
    Ddi { module: Module::Ntoskrnl, name: "KeInitializeTimerEx", max_irql: DISPATCH_LEVEL, run: ke_initialize_timer_ex },
    Ddi { module: Module::Ntoskrnl, name: "KeSetTimerEx", max_irql: DISPATCH_LEVEL, run: ke_set_timer_ex },
    Ddi { module: Module::Ntoskrnl, name: "KeCancelTimer", max_irql: DISPATCH_LEVEL, run: ke_cancel_timer },
    Ddi { module: Module::Ntoskrnl, name: "KeDelayExecutionThread", max_irql: APC_LEVEL, run: ke_delay_execution_thread },
    Ddi { module: Module::Ntoskrnl, name: "IoConnectInterruptEx", max_irql: PASSIVE_LEVEL, run: io_connect_interrupt_ex },
    Ddi { module: Module::Ntoskrnl, name: "IoDisconnectInterruptEx", max_irql: PASSIVE_LEVEL, run: io_disconnect_interrupt_ex },
    Ddi { module: Module::Ntoskrnl, name: "KeAcquireInterruptSpinLock", max_irql: HIGH_LEVEL, run: ke_acquire_interrupt_spin_lock },
    Ddi { module: Module::Ntoskrnl, name: "KeReleaseInterruptSpinLock", max_irql: HIGH_LEVEL, run: ke_release_interrupt_spin_lock },
];

/// `CONNECT_FULLY_SPECIFIED` (wdm.h).
pub const CONNECT_FULLY_SPECIFIED: u32 = 1;
/// `CONNECT_LINE_BASED` (wdm.h).
pub const CONNECT_LINE_BASED: u32 = 2;
/// `CONNECT_MESSAGE_BASED` (wdm.h).
pub const CONNECT_MESSAGE_BASED: u32 = 3;
/// `CONNECT_FULLY_SPECIFIED_GROUP` (wdm.h).
pub const CONNECT_FULLY_SPECIFIED_GROUP: u32 = 4;

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: u32 = 0;
/// `STATUS_INVALID_PARAMETER` (ntstatus.h).
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
/// `STATUS_INVALID_DEVICE_REQUEST` (ntstatus.h).
pub const STATUS_INVALID_DEVICE_REQUEST: u32 = 0xC000_0010;
/// `STATUS_INVALID_PARAMETER_1` (ntstatus.h).
pub const STATUS_INVALID_PARAMETER_1: u32 = 0xC000_00EF;
/// `STATUS_INVALID_PARAMETER_10` (ntstatus.h).
pub const STATUS_INVALID_PARAMETER_10: u32 = 0xC000_00F8;
/// `STATUS_NOT_FOUND` (ntstatus.h).
pub const STATUS_NOT_FOUND: u32 = 0xC000_0225;

/// `DpcObject` (`KOBJECTS`), what `KeInitializeDpc` writes in `KDPC.Type`.
const DPC_OBJECT: u8 = 19;
/// `MediumImportance` (`KDPC_IMPORTANCE`).
const MEDIUM_IMPORTANCE: u8 = 1;
/// `TimerNotificationObject` (`KOBJECTS`); `+ 1` for a synchronization timer.
const TIMER_NOTIFICATION_OBJECT: u8 = 8;
/// `InterruptObject` (`KOBJECTS`), the type byte of a `KINTERRUPT`.
const INTERRUPT_OBJECT: u16 = 22;
/// Bytes of the (opaque) `KINTERRUPT` the kernel allocates.
const KINTERRUPT_BYTES: u64 = 256;
/// The x86 MSI address window (`0xFEE00000`), what `MessageAddress` holds.
const MSI_ADDRESS: u64 = 0xFEE0_0000;
/// System time at boot, 100-ns units since 1601-01-01 (2026-01-01T00:00Z):
/// an absolute `DueTime` is measured against `SYSTEM_TIME_AT_BOOT + nt.time`.
pub const SYSTEM_TIME_AT_BOOT: u64 = 134_116_992_000_000_000;
/// ISR calls for one still-asserted line in one delivery before the run
/// stops as an interrupt storm (Windows would hang there).
pub const STORM_LIMIT: u32 = 10_000;

/// `KTIMER_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerType {
    /// `NotificationTimer`: stays signaled until re-set.
    Notification,
    /// `SynchronizationTimer`.
    Synchronization,
}

/// An initialized DPC object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dpc {
    /// `DeferredRoutine` given to `KeInitializeDpc`.
    pub routine: u64,
    /// `DeferredContext`.
    pub context: u64,
    /// Where it is queued, if it is.
    pub queued: Option<Queue>,
    /// Queued since the last `KeFlushQueuedDpcs`: on a multiprocessor
    /// machine it may still be queued on, or running on, another processor
    /// even after it ran here, until a flush (checked at unload).
    pub unflushed: bool,
    /// `symbol+offset` of the `KeInitializeDpc` caller.
    pub caller: String,
}

/// Where a queued DPC waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// This processor's DPC queue: runs as soon as the IRQL drops below `DISPATCH_LEVEL`.
    Local,
    /// Another processor's (a timer that expired there just before
    /// `KeCancelTimer`): runs at `KeFlushQueuedDpcs`, [`Nt::run_pending`]
    /// or [`Nt::advance_time`].
    Remote,
}

/// An initialized timer object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// Its type.
    pub kind: TimerType,
    /// Interrupt time of the next expiry (100-ns units) while set.
    pub due: Option<u64>,
    /// The period the driver asked for, milliseconds (0: one-shot).
    pub period_ms: u32,
    /// The `KDPC` queued at each expiry (0: none).
    pub dpc: u64,
    /// `symbol+offset` of the `KeInitializeTimerEx` caller.
    pub caller: String,
}

/// How an interrupt is triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `LevelSensitive`: interrupts while asserted.
    Level,
    /// `Latched`: one interrupt per rising edge (MSI messages are latched).
    Edge,
}

/// An interrupt the PnP manager assigned a device (its translated resource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignedInterrupt {
    /// A line-based interrupt (`CmResourceTypeInterrupt` without `CM_RESOURCE_INTERRUPT_MESSAGE`).
    Line {
        /// The translated vector.
        vector: u32,
        /// The translated level, the DIRQL.
        irql: u8,
        /// Level-sensitive or latched.
        trigger: Trigger,
        /// `CmResourceShareShared`.
        shared: bool,
    },
    /// `count` message-signalled interrupts, message `i` on vector `vector + i`.
    Messages {
        /// Vector of message 0.
        vector: u32,
        /// Their DIRQL.
        irql: u8,
        /// How many messages.
        count: u32,
    },
}

/// A connected interrupt object (`KINTERRUPT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// The PDO it was connected for.
    pub pdo: u64,
    /// Its vector.
    pub vector: u32,
    /// Its DIRQL.
    pub irql: u8,
    /// The IRQL its ISR runs at and its spin lock raises to.
    pub synchronize_irql: u8,
    /// How it is triggered.
    pub trigger: Trigger,
    /// Whether it was connected shareable.
    pub shared: bool,
    /// The ISR (`KSERVICE_ROUTINE`, or `KMESSAGE_SERVICE_ROUTINE` when `message` is set).
    pub routine: u64,
    /// Its `ServiceContext`.
    pub context: u64,
    /// The message ID passed to a message ISR.
    pub message: Option<u32>,
    /// The driver's spin lock, or 0 for the object's own.
    pub spin_lock: u64,
    /// The connection it belongs to (key of [`KeState::connections`]).
    pub connection: u64,
    /// `symbol+offset` of the `IoConnectInterruptEx` caller.
    pub caller: String,
}

/// What one `IoConnectInterruptEx` connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The `Version` it left in the parameters.
    pub version: u32,
    /// Its interrupt objects.
    pub objects: Vec<u64>,
    /// The `IO_INTERRUPT_MESSAGE_INFO` pages (message-based), to free at disconnect.
    pub info_pages: Option<(u64, u64)>,
}

/// A polled interrupt level (the board's `interrupt_pending`).
pub type LevelSource = Box<dyn FnMut() -> bool>;

#[derive(Default)]
struct Source {
    level: bool,
    edge: bool,
    poll: Option<LevelSource>,
}

/// Counts of what the dispatcher did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeStats {
    /// ISR calls.
    pub isr_calls: u64,
    /// Interrupts no ISR claimed (every ISR returned FALSE).
    pub unclaimed: u64,
    /// DPC routine calls.
    pub dpc_runs: u64,
    /// Timer expirations.
    pub timer_expirations: u64,
    /// DPCs queued on "another processor" by `KeCancelTimer` ([`KeState::cancel_race`]).
    pub cancel_races: u64,
}

/// This area's state in the emulated kernel.
pub struct KeState {
    /// Initialized DPC objects by `KDPC` address.
    pub dpcs: BTreeMap<u64, Dpc>,
    /// Queued DPCs, oldest first.
    pub dpc_queue: VecDeque<u64>,
    /// Initialized timers by `KTIMER` address.
    pub timers: BTreeMap<u64, Timer>,
    /// Connected interrupt objects by `KINTERRUPT` address.
    pub interrupts: BTreeMap<u64, Interrupt>,
    /// Connections by the context `IoConnectInterruptEx` returned.
    pub connections: BTreeMap<u64, Connection>,
    /// Interrupts the PnP manager assigned, by PDO.
    pub assigned: BTreeMap<u64, Vec<AssignedInterrupt>>,
    /// Interrupt spin locks held: lock key → the IRQL to return to.
    pub held_locks: BTreeMap<u64, u8>,
    /// Queue a set timer's DPC on "another processor" when it is
    /// cancelled (see the module docs). Default true.
    pub cancel_race: bool,
    /// What happened.
    pub stats: KeStats,
    sources: BTreeMap<u32, Source>,
    dpc_data: u64,
}

impl Default for KeState {
    fn default() -> Self {
        Self {
            dpcs: BTreeMap::new(),
            dpc_queue: VecDeque::new(),
            timers: BTreeMap::new(),
            interrupts: BTreeMap::new(),
            connections: BTreeMap::new(),
            assigned: BTreeMap::new(),
            held_locks: BTreeMap::new(),
            cancel_race: true,
            stats: KeStats::default(),
            sources: BTreeMap::new(),
            dpc_data: 0,
        }
    }
}

impl fmt::Debug for KeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeState")
            .field("dpcs", &self.dpcs)
            .field("dpc_queue", &self.dpc_queue)
            .field("timers", &self.timers)
            .field("interrupts", &self.interrupts)
            .field("connections", &self.connections)
            .field("assigned", &self.assigned)
            .field("held_locks", &self.held_locks)
            .field("cancel_race", &self.cancel_race)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// What is still live, for the lead's end-of-run and unload checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Queued DPCs: `(KDPC, DeferredRoutine)`.
    pub queued_dpcs: Vec<(u64, u64)>,
    /// Set timers: `(KTIMER, its DPC's routine or 0)`.
    pub set_timers: Vec<(u64, u64)>,
    /// Connected interrupts: `(KINTERRUPT, ISR)`.
    pub interrupts: Vec<(u64, u64)>,
}

impl Live {
    /// Nothing live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queued_dpcs.is_empty() && self.set_timers.is_empty() && self.interrupts.is_empty()
    }
}

// ------------------------------------------------------------------ host API

/// Records the interrupts the PnP manager gave `pdo` (replacing earlier
/// ones), as the translated resource list of `IRP_MN_START_DEVICE` says.
/// `IoConnectInterruptEx` connects only these.
pub fn assign_interrupts(nt: &mut Nt, pdo: u64, interrupts: Vec<AssignedInterrupt>) {
    nt.ke.assigned.insert(pdo, interrupts);
}

/// Sets the level of the line on `vector` (asserted or not). A rising
/// level is also an edge for a latched line.
pub fn set_line(nt: &mut Nt, vector: u32, asserted: bool) {
    let source = nt.ke.sources.entry(vector).or_default();
    if asserted && !source.level {
        source.edge = true;
    }
    source.level = asserted;
}

/// An edge on `vector`: an MSI write of that message, or a pulse on a
/// latched line. Edges while one is pending coalesce into one interrupt.
pub fn signal(nt: &mut Nt, vector: u32) {
    nt.ke.sources.entry(vector).or_default().edge = true;
}

/// Makes `poll` the level of `vector`, read at every delivery point
/// (replaces [`set_line`]'s level): a rising level is an edge.
pub fn attach_source(nt: &mut Nt, vector: u32, poll: LevelSource) {
    nt.ke.sources.entry(vector).or_default().poll = Some(poll);
}

/// Interrupt time of the next timer expiry, if any timer is set.
#[must_use]
pub fn next_due(nt: &Nt) -> Option<u64> {
    nt.ke.timers.values().filter_map(|t| t.due).min()
}

/// Queued DPCs, set timers and connected interrupts.
#[must_use]
pub fn live(nt: &Nt) -> Live {
    let ke = &nt.ke;
    Live {
        queued_dpcs: ke.dpc_queue.iter().map(|d| (*d, ke.dpcs.get(d).map_or(0, |x| x.routine))).collect(),
        set_timers: ke
            .timers
            .iter()
            .filter(|(_, t)| t.due.is_some())
            .map(|(va, t)| (*va, ke.dpcs.get(&t.dpc).map_or(0, |d| d.routine)))
            .collect(),
        interrupts: ke.interrupts.iter().map(|(va, i)| (*va, i.routine)).collect(),
    }
}

/// Memory `[va, va + len)` is being freed (pool, a device object and its
/// extension): a set timer in it is Verifier's 0xC4/0x15 ("the pool being
/// freed contains an active timer"), a queued DPC in it 0xC7/0x1
/// (`TIMER_OR_DPC_INVALID`: a DPC object in memory where none may be).
/// The objects found are forgotten (Windows would have stopped here).
/// Returns the findings recorded.
pub fn check_free(nt: &mut Nt, m: &Machine, va: u64, len: u64) -> usize {
    let inside = |x: u64| x >= va && x < va.saturating_add(len);
    let timers: Vec<u64> = nt.ke.timers.iter().filter(|(t, x)| inside(**t) && x.due.is_some()).map(|(t, _)| *t).collect();
    let dpcs: Vec<u64> = nt.ke.dpc_queue.iter().copied().filter(|d| inside(*d)).collect();
    for timer in &timers {
        nt.counted_violation(
            m,
            "FREE_ACTIVE_TIMER",
            0xC4,
            Some(0x15),
            format!("memory {va:#x}+{len:#x} freed with the timer {timer:#x} still set (KeCancelTimer first)"),
        );
        nt.ke.timers.remove(timer);
    }
    for dpc in &dpcs {
        nt.counted_violation(
            m,
            "FREE_QUEUED_DPC",
            0xC7,
            Some(0x1),
            format!("memory {va:#x}+{len:#x} freed with the DPC {dpc:#x} still queued (KeFlushQueuedDpcs first)"),
        );
        nt.ke.dpc_queue.retain(|d| d != dpc);
    }
    nt.ke.dpcs.retain(|d, _| !inside(*d));
    nt.ke.timers.retain(|t, _| !inside(*t));
    nt.verifier.checks += 1;
    timers.len() + dpcs.len()
}

/// The code at `[start, start + len)` is being unloaded: every queued DPC,
/// set timer and connected interrupt whose routine or object lies there is
/// a finding, and so is a DPC queued since the last `KeFlushQueuedDpcs`
/// even if it ran here ("KeFlushQueuedDpcs function": a driver calls it
/// before unloading, as the DPC may still be queued or running on another
/// processor) — `UNLOAD_DPC_QUEUED`, `UNLOAD_DPC_NOT_FLUSHED` / `UNLOAD_TIMER_SET` (0xC7
/// `TIMER_OR_DPC_INVALID`, parameter 1 = 0x0 timer object / 0x1 DPC object
/// / 0x2 DPC routine in the range) and `UNLOAD_INTERRUPT_CONNECTED` (0xCE
/// `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`, parameter 1 =
/// the ISR's address). Returns the findings recorded.
pub fn check_unload(nt: &mut Nt, m: &Machine, start: u64, len: u64) -> usize {
    let inside = |x: u64| x >= start && x < start.saturating_add(len);
    let live = live(nt);
    let mut found = 0;
    for (dpc, routine) in live.queued_dpcs {
        if inside(dpc) || inside(routine) {
            let p1 = if inside(dpc) { 0x1 } else { 0x2 };
            nt.counted_violation(
                m,
                "UNLOAD_DPC_QUEUED",
                0xC7,
                Some(p1),
                format!("unloading {start:#x}+{len:#x} with the DPC {dpc:#x} (routine {}) still queued", m.describe(routine)),
            );
            found += 1;
        }
    }
    let unflushed: Vec<(u64, u64)> =
        nt.ke.dpcs.iter().filter(|(_, d)| d.queued.is_none() && d.unflushed).map(|(dpc, d)| (*dpc, d.routine)).collect();
    for (dpc, routine) in unflushed {
        if inside(dpc) || inside(routine) {
            let p1 = if inside(dpc) { 0x1 } else { 0x2 };
            nt.counted_violation(
                m,
                "UNLOAD_DPC_NOT_FLUSHED",
                0xC7,
                Some(p1),
                format!(
                    "unloading {start:#x}+{len:#x}: the DPC {dpc:#x} (routine {}) was queued and never flushed (KeFlushQueuedDpcs): on another processor it may still be queued or running",
                    m.describe(routine)
                ),
            );
            found += 1;
        }
    }
    for (timer, routine) in live.set_timers {
        if inside(timer) || inside(routine) {
            let p1 = if inside(timer) { 0x0 } else { 0x2 };
            nt.counted_violation(
                m,
                "UNLOAD_TIMER_SET",
                0xC7,
                Some(p1),
                format!("unloading {start:#x}+{len:#x} with the timer {timer:#x} (DPC routine {}) still set", m.describe(routine)),
            );
            found += 1;
        }
    }
    for (object, routine) in live.interrupts {
        if inside(routine) {
            nt.counted_violation(
                m,
                "UNLOAD_INTERRUPT_CONNECTED",
                0xCE,
                Some(routine),
                format!("unloading {start:#x}+{len:#x} with the interrupt {object:#x} (ISR {}) still connected", m.describe(routine)),
            );
            found += 1;
        }
    }
    nt.verifier.checks += 1;
    found
}

impl Nt {
    /// Delivers everything deliverable now: due timers, pending interrupts
    /// above the IRQL, and every queued DPC — this processor's and those
    /// left on "another processor" by `KeCancelTimer` — when the IRQL is
    /// below `DISPATCH_LEVEL`. Nothing when the machine has stopped.
    ///
    /// # Errors
    /// A bugcheck or host error from an ISR or DPC.
    pub fn run_pending(&mut self, m: &mut Machine) -> Result<(), Stop> {
        super::io::complete_deferred(self, m)?;
        drain(self, m, true)
    }

    /// Advances virtual time to `until` (100-ns units since boot), expiring
    /// timers in order at their due times (with `KUSER_SHARED_DATA`'s
    /// interrupt time kept in step) and delivering what each makes
    /// pending, as [`Nt::run_pending`]. A `until` in the past only delivers.
    ///
    /// # Errors
    /// As [`Nt::run_pending`].
    pub fn advance_time(&mut self, m: &mut Machine, until: u64) -> Result<(), Stop> {
        while let Some(due) = next_due(self).filter(|d| *d <= until) {
            if m.is_dead() {
                return Ok(());
            }
            if due > self.time {
                self.time = due;
                m.set_interrupt_time(due)?;
            }
            self.run_pending(m)?;
        }
        if until > self.time {
            self.time = until;
            m.set_interrupt_time(until)?;
        }
        self.run_pending(m)
    }
}

/// `Kernel::at_exit`: runs what the current IRQL lets run on this
/// processor (expired timers, pending ISRs above the IRQL, this
/// processor's DPCs below `DISPATCH_LEVEL`).
///
/// # Errors
/// A bugcheck or host error from an ISR or DPC.
pub fn deliver(nt: &mut Nt, m: &mut Machine) -> Result<(), Stop> {
    drain(nt, m, false)
}

fn drain(nt: &mut Nt, m: &mut Machine, remote_too: bool) -> Result<(), Stop> {
    let mut storm: BTreeMap<u32, u32> = BTreeMap::new();
    loop {
        if m.is_dead() {
            return Ok(());
        }
        expire_timers(nt, m)?;
        poll_sources(nt);
        if let Some(vector) = pending_interrupt(nt) {
            let count = storm.entry(vector).or_insert(0);
            *count += 1;
            if *count > STORM_LIMIT {
                return Err(Stop::Host(format!(
                    "interrupt storm: vector {vector:#x} still pending after {STORM_LIMIT} ISR rounds (no ISR clears it)"
                )));
            }
            run_isrs(nt, m, vector)?;
            continue;
        }
        if nt.irql < DISPATCH_LEVEL {
            let next = nt.ke.dpc_queue.iter().copied().find(|d| {
                remote_too || nt.ke.dpcs.get(d).is_some_and(|x| x.queued == Some(Queue::Local))
            });
            if let Some(dpc) = next {
                run_dpc(nt, m, dpc)?;
                continue;
            }
        }
        return Ok(());
    }
}

fn expire_timers(nt: &mut Nt, m: &mut Machine) -> Result<(), Stop> {
    let now = nt.time;
    let due: Vec<u64> = nt.ke.timers.iter().filter(|(_, t)| t.due.is_some_and(|d| d <= now)).map(|(va, _)| *va).collect();
    for va in due {
        let Some(timer) = nt.ke.timers.get_mut(&va) else { continue };
        let Some(when) = timer.due else { continue };
        let period = u64::from(timer.period_ms) * 10_000;
        timer.due = if period == 0 {
            None
        } else {
            // The next expiry after now (a periodic timer does not fire
            // once per missed period).
            Some(when + period * ((now - when) / period + 1))
        };
        let dpc = timer.dpc;
        nt.ke.stats.timer_expirations += 1;
        m.write_u32(va + dispatcher_header::SIGNAL_STATE, 1)?;
        if let Some(next) = nt.ke.timers.get(&va).and_then(|t| t.due) {
            m.write_u64(va + ktimer::DUE_TIME, next)?;
        }
        if dpc != 0 {
            queue_dpc(nt, m, dpc, when & 0xFFFF_FFFF, when >> 32, Queue::Local)?;
        }
    }
    Ok(())
}

fn poll_sources(nt: &mut Nt) {
    for source in nt.ke.sources.values_mut() {
        if let Some(poll) = source.poll.as_mut() {
            let now = poll();
            if now && !source.level {
                source.edge = true;
            }
            source.level = now;
        }
    }
}

/// The pending vector with the highest DIRQL above the current IRQL.
fn pending_interrupt(nt: &mut Nt) -> Option<u32> {
    let mut best: Option<(u8, u32)> = None;
    let mut unconnected = Vec::new();
    for (vector, source) in &nt.ke.sources {
        let objects: Vec<&Interrupt> = nt.ke.interrupts.values().filter(|i| i.vector == *vector).collect();
        let Some(first) = objects.first() else {
            if source.edge {
                unconnected.push(*vector);
            }
            continue;
        };
        let pending = match first.trigger {
            Trigger::Level => source.level,
            Trigger::Edge => source.edge,
        };
        if pending && first.irql > nt.irql && best.is_none_or(|(irql, _)| first.irql > irql) {
            best = Some((first.irql, *vector));
        }
    }
    // An edge nobody is connected to is lost, as on hardware.
    for vector in unconnected {
        if let Some(source) = nt.ke.sources.get_mut(&vector) {
            source.edge = false;
        }
    }
    best.map(|(_, vector)| vector)
}

/// Runs the ISRs connected to `vector`: for a level-sensitive line until
/// one claims the interrupt; for a latched one (and MSI) every one.
fn run_isrs(nt: &mut Nt, m: &mut Machine, vector: u32) -> Result<(), Stop> {
    let objects: Vec<u64> = nt.ke.interrupts.iter().filter(|(_, i)| i.vector == vector).map(|(va, _)| *va).collect();
    let trigger = objects.first().and_then(|o| nt.ke.interrupts.get(o)).map_or(Trigger::Edge, |i| i.trigger);
    if trigger == Trigger::Edge {
        if let Some(source) = nt.ke.sources.get_mut(&vector) {
            source.edge = false;
        }
    }
    let mut claimed = false;
    for object in objects {
        let Some(interrupt) = nt.ke.interrupts.get(&object).cloned() else { continue };
        let key = lock_key(&interrupt, object);
        let old = nt.irql;
        nt.irql = interrupt.synchronize_irql;
        nt.ke.held_locks.insert(key, old);
        nt.ke.stats.isr_calls += 1;
        super::pool::sync_pageable(nt, m)?;
        let result = match interrupt.message {
            Some(id) => m.call(nt, interrupt.routine, &[object, interrupt.context, u64::from(id)])?,
            None => m.call(nt, interrupt.routine, &[object, interrupt.context])?,
        };
        let now = nt.irql;
        nt.verifier.checks += 1;
        if now != interrupt.synchronize_irql {
            nt.verifier.report(super::verifier::Finding {
                rule: "ISR_IRQL_CHANGED",
                bugcheck: 0xC8,
                parameter1: Some((u64::from(now) << 16) | (u64::from(interrupt.synchronize_irql) << 8) | 3),
                detail: format!(
                    "the ISR {} (interrupt {object:#x}) returned at IRQL {now}; it was called at {}",
                    m.describe(interrupt.routine),
                    interrupt.synchronize_irql
                ),
                caller: m.describe(interrupt.routine),
            });
        }
        nt.ke.held_locks.remove(&key);
        nt.irql = old;
        if result & 0xFF != 0 {
            claimed = true;
            if trigger == Trigger::Level {
                break;
            }
        }
    }
    if !claimed {
        nt.ke.stats.unclaimed += 1;
    }
    Ok(())
}

fn run_dpc(nt: &mut Nt, m: &mut Machine, dpc: u64) -> Result<(), Stop> {
    nt.ke.dpc_queue.retain(|d| *d != dpc);
    if let Some(d) = nt.ke.dpcs.get_mut(&dpc) {
        d.queued = None;
    }
    // The kernel reads the routine from the object and marks it dequeued,
    // as Windows does: a freed KDPC faults here.
    let routine = m.read_u64(dpc + kdpc::DEFERRED_ROUTINE)?;
    let context = m.read_u64(dpc + kdpc::DEFERRED_CONTEXT)?;
    let a1 = m.read_u64(dpc + kdpc::SYSTEM_ARGUMENT1)?;
    let a2 = m.read_u64(dpc + kdpc::SYSTEM_ARGUMENT2)?;
    m.write_u64(dpc + kdpc::DPC_DATA, 0)?;
    let old = nt.irql;
    nt.irql = DISPATCH_LEVEL;
    nt.ke.stats.dpc_runs += 1;
    super::pool::sync_pageable(nt, m)?;
    m.call(nt, routine, &[dpc, context, a1, a2])?;
    let now = nt.irql;
    nt.verifier.checks += 1;
    if now != DISPATCH_LEVEL {
        nt.verifier.report(super::verifier::Finding {
            rule: "DPC_IRQL_CHANGED",
            bugcheck: 0xC8,
            parameter1: None,
            detail: format!("the DPC routine {} (KDPC {dpc:#x}) returned at IRQL {now}; it was called at DISPATCH_LEVEL", m.describe(routine)),
            caller: m.describe(routine),
        });
    }
    nt.irql = old;
    Ok(())
}

/// Queues `dpc` with its system arguments unless it is already queued;
/// returns whether it was queued.
fn queue_dpc(nt: &mut Nt, m: &mut Machine, dpc: u64, a1: u64, a2: u64, queue: Queue) -> Result<bool, Stop> {
    let Some(d) = nt.ke.dpcs.get_mut(&dpc) else {
        return Ok(false);
    };
    if d.queued.is_some() {
        return Ok(false);
    }
    d.queued = Some(queue);
    d.unflushed = true;
    nt.ke.dpc_queue.push_back(dpc);
    if nt.ke.dpc_data == 0 {
        nt.ke.dpc_data = nt.alloc_kernel(m, 64)?;
    }
    m.write_u64(dpc + kdpc::SYSTEM_ARGUMENT1, a1)?;
    m.write_u64(dpc + kdpc::SYSTEM_ARGUMENT2, a2)?;
    m.write_u64(dpc + kdpc::DPC_DATA, nt.ke.dpc_data)?;
    Ok(true)
}

fn caller(m: &Machine) -> String {
    m.caller().map_or_else(|_| "?".into(), |c| m.describe(c))
}

/// Whether `[va, va + len)` lies in a paged-pool block.
fn in_paged_pool(nt: &Nt, va: u64, len: u64) -> bool {
    nt.pool.live.range(..=va).next_back().is_some_and(|(start, block)| {
        block.flags & POOL_FLAG_PAGED != 0 && va + len <= start + block.bytes
    })
}

// ------------------------------------------------------------------ DPCs

/// `VOID KeInitializeDpc(PRKDPC Dpc, PKDEFERRED_ROUTINE DeferredRoutine,
/// PVOID DeferredContext)` ("KeInitializeDpc function", wdm.h): any IRQL;
/// the object must be resident (Verifier: `DPC_IN_PAGED_POOL`, 0xC4); an
/// object still queued must not be re-initialized (it is linked in the
/// DPC queue: `DPC_REINITIALIZED_WHILE_QUEUED`, 0xC4).
fn ke_initialize_dpc(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [dpc, routine, context] = m.args::<3>()?;
    if nt.ke.dpcs.get(&dpc).is_some_and(|d| d.queued.is_some()) {
        nt.counted_violation(m, "DPC_REINITIALIZED_WHILE_QUEUED", 0xC4, None, format!("KeInitializeDpc({dpc:#x}) while it is queued"));
        return Ok(0);
    }
    nt.verifier.checks += 1;
    if in_paged_pool(nt, dpc, kdpc::SIZE) {
        nt.violation(m, "DPC_IN_PAGED_POOL", 0xC4, None, format!("KeInitializeDpc({dpc:#x}): the KDPC is in paged pool"));
    }
    m.write(dpc, &[0; kdpc::SIZE as usize])?;
    m.write_u8(dpc + kdpc::TYPE, DPC_OBJECT)?;
    m.write_u8(dpc + kdpc::IMPORTANCE, MEDIUM_IMPORTANCE)?;
    m.write_u64(dpc + kdpc::DEFERRED_ROUTINE, routine)?;
    m.write_u64(dpc + kdpc::DEFERRED_CONTEXT, context)?;
    nt.ke.dpcs.insert(dpc, Dpc { routine, context, queued: None, unflushed: false, caller: caller(m) });
    Ok(0)
}

/// `BOOLEAN KeInsertQueueDpc(PRKDPC Dpc, PVOID SystemArgument1, PVOID
/// SystemArgument2)` ("KeInsertQueueDpc function"): any IRQL; TRUE when
/// queued, FALSE (and nothing changed, the arguments included) when it
/// already was. The DPC runs once the IRQL drops below `DISPATCH_LEVEL`
/// (at once, on return, for a caller below it). An object never
/// initialized: `DPC_NOT_INITIALIZED` (0xC4).
fn ke_insert_queue_dpc(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [dpc, a1, a2] = m.args::<3>()?;
    nt.verifier.checks += 1;
    if !nt.ke.dpcs.contains_key(&dpc) {
        nt.violation(m, "DPC_NOT_INITIALIZED", 0xC4, None, format!("KeInsertQueueDpc({dpc:#x}) of a DPC never passed to KeInitializeDpc"));
        return Ok(0);
    }
    Ok(u64::from(queue_dpc(nt, m, dpc, a1, a2, Queue::Local)?))
}

/// `VOID KeFlushQueuedDpcs()` ("KeFlushQueuedDpcs function"):
/// `PASSIVE_LEVEL`; returns once every DPC queued on any processor has run
/// (here: this processor's and those a cancelled timer left on another).
fn ke_flush_queued_dpcs(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    drain(nt, m, true)?;
    for dpc in nt.ke.dpcs.values_mut().filter(|d| d.queued.is_none()) {
        dpc.unflushed = false;
    }
    Ok(0)
}

// ------------------------------------------------------------------ timers

/// `VOID KeInitializeTimerEx(PKTIMER Timer, TIMER_TYPE Type)`
/// ("KeInitializeTimerEx function"): `<= DISPATCH_LEVEL`; not signaled,
/// not set; resident storage (`TIMER_IN_PAGED_POOL`, 0xC4); a timer that
/// is set must be cancelled first (`TIMER_REINITIALIZED_WHILE_SET`, 0xC4).
fn ke_initialize_timer_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [timer, kind] = m.args::<2>()?;
    if nt.ke.timers.get(&timer).is_some_and(|t| t.due.is_some()) {
        nt.counted_violation(m, "TIMER_REINITIALIZED_WHILE_SET", 0xC4, None, format!("KeInitializeTimerEx({timer:#x}) while it is set"));
        return Ok(0);
    }
    nt.verifier.checks += 1;
    if in_paged_pool(nt, timer, ktimer::SIZE) {
        nt.violation(m, "TIMER_IN_PAGED_POOL", 0xC4, None, format!("KeInitializeTimerEx({timer:#x}): the KTIMER is in paged pool"));
    }
    let kind = if kind & 0xFFFF_FFFF == 1 { TimerType::Synchronization } else { TimerType::Notification };
    m.write(timer, &[0; ktimer::SIZE as usize])?;
    m.write_u8(timer + dispatcher_header::TYPE, TIMER_NOTIFICATION_OBJECT + u8::from(kind == TimerType::Synchronization))?;
    for list in [timer + dispatcher_header::WAIT_LIST_HEAD, timer + ktimer::TIMER_LIST_ENTRY] {
        m.write_u64(list, list)?;
        m.write_u64(list + 8, list)?;
    }
    nt.ke.timers.insert(timer, Timer { kind, due: None, period_ms: 0, dpc: 0, caller: caller(m) });
    Ok(0)
}

/// `BOOLEAN KeSetTimerEx(PKTIMER Timer, LARGE_INTEGER DueTime, LONG
/// Period, PKDPC Dpc)` ("KeSetTimerEx function"): `<= DISPATCH_LEVEL`;
/// cancels a pending expiry (returning TRUE when the timer was set),
/// resets the signal state; `DueTime` negative is relative (100-ns),
/// positive is absolute system time; then every `Period` milliseconds
/// (0: once). At each expiry `Dpc` (optional) is queued with the expiry
/// time's low and high parts as its system arguments. A timer or DPC never
/// initialized: `TIMER_NOT_INITIALIZED` / `DPC_NOT_INITIALIZED` (0xC4); a
/// negative period: `TIMER_NEGATIVE_PERIOD` (0xC4).
fn ke_set_timer_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [timer, due, period, dpc] = m.args::<4>()?;
    let due = i64::from_ne_bytes(due.to_ne_bytes());
    let period = i32::from_ne_bytes(((period & 0xFFFF_FFFF) as u32).to_ne_bytes());
    nt.verifier.checks += 1;
    if !nt.ke.timers.contains_key(&timer) {
        nt.violation(m, "TIMER_NOT_INITIALIZED", 0xC4, None, format!("KeSetTimerEx({timer:#x}) of a timer never passed to KeInitializeTimerEx"));
        return Ok(0);
    }
    if dpc != 0 && !nt.ke.dpcs.contains_key(&dpc) {
        nt.violation(m, "DPC_NOT_INITIALIZED", 0xC4, None, format!("KeSetTimerEx({timer:#x}) with the DPC {dpc:#x} never passed to KeInitializeDpc"));
        return Ok(0);
    }
    let period_ms = if period < 0 {
        nt.violation(m, "TIMER_NEGATIVE_PERIOD", 0xC4, None, format!("KeSetTimerEx({timer:#x}) with a period of {period} ms"));
        0
    } else {
        period.unsigned_abs()
    };
    let when = if due < 0 {
        nt.time.saturating_add(due.unsigned_abs())
    } else {
        due.unsigned_abs().saturating_sub(SYSTEM_TIME_AT_BOOT).max(nt.time)
    };
    let Some(t) = nt.ke.timers.get_mut(&timer) else { return Ok(0) };
    let was_set = t.due.is_some();
    t.due = Some(when);
    t.period_ms = period_ms;
    t.dpc = dpc;
    m.write_u32(timer + dispatcher_header::SIGNAL_STATE, 0)?;
    m.write_u64(timer + ktimer::DUE_TIME, when)?;
    m.write_u64(timer + ktimer::DPC, dpc)?;
    m.write_u32(timer + ktimer::PERIOD, period_ms)?;
    Ok(u64::from(was_set))
}

/// `BOOLEAN KeCancelTimer(PKTIMER Timer)` ("KeCancelTimer function"):
/// `<= DISPATCH_LEVEL`; TRUE when the timer was set. Its DPC may already
/// be queued, or about to run on another processor: with
/// [`KeState::cancel_race`] the timer is taken to have expired on another
/// processor just before, so its DPC is queued there (and a one-shot
/// timer, already expired, makes this return FALSE).
fn ke_cancel_timer(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let timer = m.arg(0)?;
    nt.verifier.checks += 1;
    let Some(t) = nt.ke.timers.get_mut(&timer) else {
        nt.violation(m, "TIMER_NOT_INITIALIZED", 0xC4, None, format!("KeCancelTimer({timer:#x}) of a timer never passed to KeInitializeTimerEx"));
        return Ok(0);
    };
    let Some(when) = t.due.take() else { return Ok(0) };
    let (dpc, periodic) = (t.dpc, t.period_ms != 0);
    if nt.ke.cancel_race && dpc != 0 {
        nt.ke.stats.cancel_races += 1;
        queue_dpc(nt, m, dpc, when & 0xFFFF_FFFF, when >> 32, Queue::Remote)?;
        if !periodic {
            m.write_u32(timer + dispatcher_header::SIGNAL_STATE, 1)?;
            return Ok(0);
        }
    }
    Ok(1)
}

// ------------------------------------------------------------------ delays

/// `NTSTATUS KeDelayExecutionThread(KPROCESSOR_MODE WaitMode, BOOLEAN
/// Alertable, PLARGE_INTEGER Interval)` ("KeDelayExecutionThread function
/// (wdm.h)"): `<= APC_LEVEL` (`IRQL_TOO_HIGH`, 0xC4, from the table); puts
/// the calling thread to sleep for `*Interval`, 100-ns units: negative is
/// relative to now, positive is an absolute system time (the sleep ends at
/// once when that is not in the future; [`SYSTEM_TIME_AT_BOOT`] is the
/// system time at virtual time 0). The one processor has nothing else to
/// run meanwhile, so virtual time advances to the end of the sleep with
/// [`Nt::advance_time`]: timers falling due expire at their due time and
/// their DPCs, pending interrupts and queued DPCs run. `STATUS_SUCCESS`
/// (the emulated kernel delivers no APCs, so an alertable sleep is never
/// cut short with `STATUS_ALERTED` or `STATUS_USER_APC`). `Interval` is
/// read through the machine: NULL or a bad pointer bugchecks as on Windows.
///
/// Called above `APC_LEVEL` (the finding is recorded by the IRQL check
/// before this runs) the thread cannot wait: Windows bug checks there
/// (0xC4 under Driver Verifier, else 0xA `IRQL_NOT_LESS_OR_EQUAL` from the
/// dispatcher), so no virtual time passes and nothing falls due: the call
/// returns `STATUS_SUCCESS` at once, and a driver that relies on the delay
/// is not helped by it.
fn ke_delay_execution_thread(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [_mode, _alertable, interval] = m.args::<3>()?;
    if nt.irql > APC_LEVEL {
        return Ok(u64::from(STATUS_SUCCESS));
    }
    let interval = m.read_u64(interval)?.cast_signed();
    let until = if interval < 0 {
        nt.time.saturating_add(interval.unsigned_abs())
    } else {
        interval.unsigned_abs().saturating_sub(SYSTEM_TIME_AT_BOOT).max(nt.time)
    };
    nt.advance_time(m, until)?;
    Ok(u64::from(STATUS_SUCCESS))
}

// ------------------------------------------------------------------ interrupts

fn lock_key(interrupt: &Interrupt, object: u64) -> u64 {
    if interrupt.spin_lock == 0 {
        object
    } else {
        interrupt.spin_lock
    }
}

/// One interrupt object to create.
struct NewObject {
    vector: u32,
    irql: u8,
    synchronize_irql: u8,
    trigger: Trigger,
    shared: bool,
    routine: u64,
    message: Option<u32>,
}

/// Whether `vector` can take another connection of this sharing.
fn may_share(nt: &Nt, vector: u32, shared: bool) -> bool {
    nt.ke.interrupts.values().filter(|i| i.vector == vector).all(|i| i.shared && shared)
}

/// Creates the objects of one connection; returns their addresses.
fn connect(nt: &mut Nt, m: &mut Machine, pdo: u64, context: u64, spin_lock: u64, new: &[NewObject]) -> Result<Vec<u64>, Stop> {
    let caller = caller(m);
    let mut objects = Vec::new();
    for o in new {
        let va = nt.alloc_kernel(m, KINTERRUPT_BYTES)?;
        m.write_u16(va, INTERRUPT_OBJECT)?;
        m.write_u16(va + 2, KINTERRUPT_BYTES as u16)?;
        objects.push(va);
        nt.ke.interrupts.insert(
            va,
            Interrupt {
                pdo,
                vector: o.vector,
                irql: o.irql,
                synchronize_irql: o.synchronize_irql,
                trigger: o.trigger,
                shared: o.shared,
                routine: o.routine,
                context,
                message: o.message,
                spin_lock,
                connection: 0,
                caller: caller.clone(),
            },
        );
    }
    Ok(objects)
}

fn register(nt: &mut Nt, key: u64, version: u32, objects: Vec<u64>, info_pages: Option<(u64, u64)>) {
    for object in &objects {
        if let Some(i) = nt.ke.interrupts.get_mut(object) {
            i.connection = key;
        }
    }
    nt.ke.connections.insert(key, Connection { version, objects, info_pages });
}

/// `NTSTATUS IoConnectInterruptEx(PIO_CONNECT_INTERRUPT_PARAMETERS
/// Parameters)` ("IoConnectInterruptEx function", "IO_CONNECT_INTERRUPT_
/// PARAMETERS structure", "Using the CONNECT_MESSAGE_BASED Version of
/// IoConnectInterruptEx"): `PASSIVE_LEVEL`.
/// * `CONNECT_FULLY_SPECIFIED(_GROUP)`: the given vector (it must be one
///   the PnP manager assigned the PDO, else `STATUS_NOT_FOUND`), IRQL,
///   mode and sharing; `*InterruptObject` receives the `KINTERRUPT`.
/// * `CONNECT_LINE_BASED`: the PDO's line interrupt
///   (`STATUS_INVALID_DEVICE_REQUEST` when it was given messages,
///   `STATUS_NOT_FOUND` when nothing).
/// * `CONNECT_MESSAGE_BASED`: one object per message, `*ConnectionContext`
///   receives an `IO_INTERRUPT_MESSAGE_INFO`; a PDO with only a line
///   interrupt gets `FallBackServiceRoutine` connected to it, `Version`
///   becomes `CONNECT_LINE_BASED` and the context is the `KINTERRUPT`.
///
/// `STATUS_INVALID_PARAMETER` for a NULL PDO, routine or output pointer,
/// a `SynchronizeIrql` below the DIRQL, a group other than 0 or a vector
/// whose sharing conflicts (MSI is never shared);
/// `STATUS_INVALID_PARAMETER_10` for an empty `ProcessorEnableMask`;
/// `STATUS_INVALID_PARAMETER_1` for another `Version`. The ISR may run as
/// soon as this returns (on return, if its interrupt is pending).
fn io_connect_interrupt_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let p = m.arg(0)?;
    let version = m.read_u32(p + icp::VERSION)?;
    let u = p + icp::UNION;
    let status = match version {
        CONNECT_FULLY_SPECIFIED | CONNECT_FULLY_SPECIFIED_GROUP => connect_fully_specified(nt, m, u, version)?,
        CONNECT_LINE_BASED => connect_line_based(nt, m, u)?,
        CONNECT_MESSAGE_BASED => connect_message_based(nt, m, p, u)?,
        _ => STATUS_INVALID_PARAMETER_1,
    };
    Ok(u64::from(status))
}

fn line_of(nt: &Nt, pdo: u64) -> Option<(u32, u8, Trigger, bool)> {
    nt.ke.assigned.get(&pdo)?.iter().find_map(|a| match *a {
        AssignedInterrupt::Line { vector, irql, trigger, shared } => Some((vector, irql, trigger, shared)),
        AssignedInterrupt::Messages { .. } => None,
    })
}

fn messages_of(nt: &Nt, pdo: u64) -> Option<(u32, u8, u32)> {
    nt.ke.assigned.get(&pdo)?.iter().find_map(|a| match *a {
        AssignedInterrupt::Messages { vector, irql, count } if count > 0 => Some((vector, irql, count)),
        _ => None,
    })
}

fn connect_fully_specified(nt: &mut Nt, m: &mut Machine, u: u64, version: u32) -> Result<u32, Stop> {
    let pdo = m.read_u64(u + fully_specified::PHYSICAL_DEVICE_OBJECT)?;
    let out = m.read_u64(u + fully_specified::INTERRUPT_OBJECT)?;
    let routine = m.read_u64(u + fully_specified::SERVICE_ROUTINE)?;
    let context = m.read_u64(u + fully_specified::SERVICE_CONTEXT)?;
    let spin_lock = m.read_u64(u + fully_specified::SPIN_LOCK)?;
    let synchronize_irql = m.read_u8(u + fully_specified::SYNCHRONIZE_IRQL)?;
    let shared = m.read_u8(u + fully_specified::SHARE_VECTOR)? != 0;
    let vector = m.read_u32(u + fully_specified::VECTOR)?;
    let irql = m.read_u8(u + fully_specified::IRQL)?;
    let mode = m.read_u32(u + fully_specified::INTERRUPT_MODE)?;
    let mask = m.read_u64(u + fully_specified::PROCESSOR_ENABLE_MASK)?;
    let group = if version == CONNECT_FULLY_SPECIFIED_GROUP { m.read_u16(u + fully_specified::GROUP)? } else { 0 };
    if pdo == 0 || out == 0 || routine == 0 || synchronize_irql < irql || group != 0 || irql > HIGH_LEVEL {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    if mask & 1 == 0 {
        // One processor (number 0 of group 0): the mask must include it.
        return Ok(STATUS_INVALID_PARAMETER_10);
    }
    let assigned = nt.ke.assigned.get(&pdo).is_some_and(|list| {
        list.iter().any(|a| match *a {
            AssignedInterrupt::Line { vector: v, .. } => v == vector,
            AssignedInterrupt::Messages { vector: v, count, .. } => vector >= v && vector - v < count,
        })
    });
    if !assigned {
        return Ok(STATUS_NOT_FOUND);
    }
    let message = messages_of(nt, pdo).is_some_and(|(v, _, count)| vector >= v && vector - v < count);
    if (message && shared) || !may_share(nt, vector, shared) {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    let trigger = if mode == 1 || message { Trigger::Edge } else { Trigger::Level };
    let new = [NewObject { vector, irql, synchronize_irql, trigger, shared, routine, message: None }];
    let objects = connect(nt, m, pdo, context, spin_lock, &new)?;
    let object = objects[0];
    register(nt, object, version, objects, None);
    m.write_u64(out, object)?;
    Ok(STATUS_SUCCESS)
}

/// A request to connect a PDO's line interrupt.
struct LineRequest {
    pdo: u64,
    /// Where the `KINTERRUPT` goes.
    out: u64,
    routine: u64,
    context: u64,
    spin_lock: u64,
    sync: u8,
}

/// Connects the PDO's line interrupt to `routine` (line-based, or the
/// fallback of a message-based request); writes the object to `out`.
fn connect_line(nt: &mut Nt, m: &mut Machine, r: &LineRequest) -> Result<u32, Stop> {
    let LineRequest { pdo, out, routine, context, spin_lock, sync } = *r;
    let Some((vector, irql, trigger, shared)) = line_of(nt, pdo) else {
        return Ok(STATUS_NOT_FOUND);
    };
    if !may_share(nt, vector, shared) {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    let synchronize_irql = if spin_lock != 0 { sync.max(irql) } else { irql };
    let new = [NewObject { vector, irql, synchronize_irql, trigger, shared, routine, message: None }];
    let objects = connect(nt, m, pdo, context, spin_lock, &new)?;
    let object = objects[0];
    register(nt, object, CONNECT_LINE_BASED, objects, None);
    m.write_u64(out, object)?;
    Ok(STATUS_SUCCESS)
}

fn connect_line_based(nt: &mut Nt, m: &mut Machine, u: u64) -> Result<u32, Stop> {
    let pdo = m.read_u64(u + line_based::PHYSICAL_DEVICE_OBJECT)?;
    let out = m.read_u64(u + line_based::INTERRUPT_OBJECT)?;
    let routine = m.read_u64(u + line_based::SERVICE_ROUTINE)?;
    let context = m.read_u64(u + line_based::SERVICE_CONTEXT)?;
    let spin_lock = m.read_u64(u + line_based::SPIN_LOCK)?;
    let sync = m.read_u8(u + line_based::SYNCHRONIZE_IRQL)?;
    if pdo == 0 || out == 0 || routine == 0 {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    if messages_of(nt, pdo).is_some() {
        return Ok(STATUS_INVALID_DEVICE_REQUEST);
    }
    connect_line(nt, m, &LineRequest { pdo, out, routine, context, spin_lock, sync })
}

fn connect_message_based(nt: &mut Nt, m: &mut Machine, p: u64, u: u64) -> Result<u32, Stop> {
    let pdo = m.read_u64(u + message_based::PHYSICAL_DEVICE_OBJECT)?;
    let out = m.read_u64(u + message_based::CONNECTION_CONTEXT)?;
    let routine = m.read_u64(u + message_based::MESSAGE_SERVICE_ROUTINE)?;
    let context = m.read_u64(u + message_based::SERVICE_CONTEXT)?;
    let spin_lock = m.read_u64(u + message_based::SPIN_LOCK)?;
    let sync = m.read_u8(u + message_based::SYNCHRONIZE_IRQL)?;
    let fallback = m.read_u64(u + message_based::FALL_BACK_SERVICE_ROUTINE)?;
    if pdo == 0 || out == 0 || routine == 0 {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    let Some((vector, irql, count)) = messages_of(nt, pdo) else {
        if fallback == 0 || line_of(nt, pdo).is_none() {
            return Ok(if line_of(nt, pdo).is_some() { STATUS_INVALID_DEVICE_REQUEST } else { STATUS_NOT_FOUND });
        }
        let status = connect_line(nt, m, &LineRequest { pdo, out, routine: fallback, context, spin_lock, sync })?;
        if status == STATUS_SUCCESS {
            m.write_u32(p + icp::VERSION, CONNECT_LINE_BASED)?;
        }
        return Ok(status);
    };
    if (0..count).any(|i| !may_share(nt, vector + i, false)) {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    let synchronize_irql = if spin_lock != 0 { sync.max(irql) } else { irql };
    let new: Vec<NewObject> = (0..count)
        .map(|i| NewObject { vector: vector + i, irql, synchronize_irql, trigger: Trigger::Edge, shared: false, routine, message: Some(i) })
        .collect();
    let objects = connect(nt, m, pdo, context, spin_lock, &new)?;
    let bytes = imi::MESSAGE_INFO + u64::from(count) * imie::SIZE;
    let info = nt.alloc_kernel(m, bytes)?;
    m.write_u8(info + imi::UNIFIED_IRQL, synchronize_irql)?;
    m.write_u32(info + imi::MESSAGE_COUNT, count)?;
    for (i, object) in objects.iter().enumerate() {
        let entry = info + imi::MESSAGE_INFO + i as u64 * imie::SIZE;
        let message_vector = vector + i as u32;
        m.write_u64(entry + imie::MESSAGE_ADDRESS, MSI_ADDRESS)?;
        m.write_u64(entry + imie::TARGET_PROCESSOR_SET, 1)?;
        m.write_u64(entry + imie::INTERRUPT_OBJECT, *object)?;
        m.write_u32(entry + imie::MESSAGE_DATA, message_vector)?;
        m.write_u32(entry + imie::VECTOR, message_vector)?;
        m.write_u8(entry + imie::IRQL, irql)?;
        m.write_u32(entry + imie::MODE, 1)?; // Latched
        m.write_u32(entry + imie::POLARITY, 1)?; // InterruptActiveHigh
    }
    register(nt, info, CONNECT_MESSAGE_BASED, objects, Some((info, bytes.div_ceil(4096))));
    m.write_u64(out, info)?;
    Ok(STATUS_SUCCESS)
}

/// `VOID IoDisconnectInterruptEx(PIO_DISCONNECT_INTERRUPT_PARAMETERS
/// Parameters)` ("IoDisconnectInterruptEx function"): `PASSIVE_LEVEL`;
/// `Version` must be the one `IoConnectInterruptEx` returned and the
/// context the object or message table it returned
/// (`INTERRUPT_DISCONNECT_INVALID`, 0xC4, otherwise, and nothing is
/// disconnected); no interrupt spin lock of it may be held
/// (`INTERRUPT_DISCONNECT_LOCK_HELD`, 0xC4). The objects and the message
/// table are freed: a later use faults.
fn io_disconnect_interrupt_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let p = m.arg(0)?;
    let version = m.read_u32(p + idp::VERSION)?;
    let context = m.read_u64(p + idp::CONNECTION_CONTEXT)?;
    nt.verifier.checks += 1;
    let Some(connection) = nt.ke.connections.get(&context).cloned() else {
        nt.violation(
            m,
            "INTERRUPT_DISCONNECT_INVALID",
            0xC4,
            None,
            format!("IoDisconnectInterruptEx(version {version}, {context:#x}): not a connected interrupt"),
        );
        return Ok(0);
    };
    let same = connection.version == version
        || (matches!(connection.version, CONNECT_FULLY_SPECIFIED | CONNECT_FULLY_SPECIFIED_GROUP | CONNECT_LINE_BASED)
            && matches!(version, CONNECT_FULLY_SPECIFIED | CONNECT_FULLY_SPECIFIED_GROUP | CONNECT_LINE_BASED));
    if !same {
        nt.violation(
            m,
            "INTERRUPT_DISCONNECT_INVALID",
            0xC4,
            None,
            format!("IoDisconnectInterruptEx(version {version}, {context:#x}) of a connection made as version {}", connection.version),
        );
        return Ok(0);
    }
    for object in &connection.objects {
        let key = nt.ke.interrupts.get(object).map_or(*object, |i| lock_key(i, *object));
        if nt.ke.held_locks.contains_key(&key) {
            nt.violation(
                m,
                "INTERRUPT_DISCONNECT_LOCK_HELD",
                0xC4,
                None,
                format!("IoDisconnectInterruptEx({context:#x}) while the interrupt spin lock of {object:#x} is held"),
            );
            // Left connected: freeing an object whose lock is held would
            // leave the held lock and its raised IRQL behind.
            return Ok(0);
        }
    }
    for object in &connection.objects {
        nt.ke.interrupts.remove(object);
        m.free_own_pages(*object, 1)?;
    }
    if let Some((va, pages)) = connection.info_pages {
        m.free_own_pages(va, pages)?;
    }
    nt.ke.connections.remove(&context);
    Ok(0)
}

/// `KIRQL KeAcquireInterruptSpinLock(PKINTERRUPT Interrupt)`
/// ("KeAcquireInterruptSpinLock function"): callers at or below the
/// interrupt's `SynchronizeIrql` (`IRQL_TOO_HIGH`, 0xC4); raises to it and
/// returns the previous IRQL. Not an interrupt object:
/// `INTERRUPT_OBJECT_INVALID` (0xC4); already held on this processor (a
/// deadlock on Windows): `SPIN_LOCK_RECURSIVE_ACQUIRE` (0xC4, Verifier's
/// deadlock detection, parameter 1 0x1000 self-deadlock).
fn ke_acquire_interrupt_spin_lock(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let object = m.arg(0)?;
    let old = nt.irql;
    nt.verifier.checks += 1;
    let Some(interrupt) = nt.ke.interrupts.get(&object).cloned() else {
        nt.violation(m, "INTERRUPT_OBJECT_INVALID", 0xC4, None, format!("KeAcquireInterruptSpinLock({object:#x}): not a connected interrupt object"));
        return Ok(u64::from(old));
    };
    nt.check_irql(m, "KeAcquireInterruptSpinLock", interrupt.synchronize_irql);
    let key = lock_key(&interrupt, object);
    if nt.ke.held_locks.contains_key(&key) {
        nt.violation(
            m,
            "SPIN_LOCK_RECURSIVE_ACQUIRE",
            0xC4,
            Some(0x1000),
            format!("KeAcquireInterruptSpinLock({object:#x}) while this processor already holds it"),
        );
        return Ok(u64::from(old));
    }
    nt.ke.held_locks.insert(key, old);
    nt.irql = old.max(interrupt.synchronize_irql);
    Ok(u64::from(old))
}

/// `VOID KeReleaseInterruptSpinLock(PKINTERRUPT Interrupt, KIRQL OldIrql)`
/// ("KeReleaseInterruptSpinLock function"): releases the lock and returns
/// to `OldIrql`. The caller must be at the interrupt's `SynchronizeIrql`,
/// where the acquire left it (`INTERRUPT_SPIN_LOCK_RELEASE_IRQL`, 0xC4),
/// hold the lock (`SPIN_LOCK_NOT_OWNED`, 0xC4) and give an `OldIrql` not
/// above it (`IRQL_LOWER_TO_HIGHER`, 0xC4/0x31).
fn ke_release_interrupt_spin_lock(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [object, old] = m.args::<2>()?;
    let old = (old & 0xFF) as u8;
    nt.verifier.checks += 1;
    let Some(interrupt) = nt.ke.interrupts.get(&object).cloned() else {
        nt.violation(m, "INTERRUPT_OBJECT_INVALID", 0xC4, None, format!("KeReleaseInterruptSpinLock({object:#x}): not a connected interrupt object"));
        return Ok(0);
    };
    let key = lock_key(&interrupt, object);
    if nt.ke.held_locks.remove(&key).is_none() {
        nt.violation(m, "SPIN_LOCK_NOT_OWNED", 0xC4, None, format!("KeReleaseInterruptSpinLock({object:#x}) of a lock not held"));
        return Ok(0);
    }
    nt.verifier.checks += 1;
    if nt.irql != interrupt.synchronize_irql {
        let irql = nt.irql;
        nt.violation(
            m,
            "INTERRUPT_SPIN_LOCK_RELEASE_IRQL",
            0xC4,
            None,
            format!("KeReleaseInterruptSpinLock({object:#x}) at IRQL {irql}; the lock is held at {}", interrupt.synchronize_irql),
        );
    }
    if old > nt.irql {
        let irql = nt.irql;
        nt.violation(m, "IRQL_LOWER_TO_HIGHER", 0xC4, Some(0x31), format!("KeReleaseInterruptSpinLock({object:#x}, {old}) at IRQL {irql}"));
        return Ok(0);
    }
    nt.irql = old;
    Ok(0)
}
