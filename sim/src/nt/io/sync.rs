//! Events, waits and remove locks.
//!
//! The machine has one processor and one thread. A wait on an event that
//! is not signalled first lets everything pending run ([`Nt::run_pending`]:
//! ISRs, DPCs, due timers — whatever could signal it on a real machine);
//! if the event is still not signalled, nothing else can ever signal it and
//! Windows would hang the thread: that is a finding and the run stops,
//! never a hang of the host.

use std::collections::BTreeMap;

use capdma_winvm::{Machine, Stop};

use super::super::layout::irp::{kevent, remove_lock, status};
use super::super::Nt;
use super::super::DISPATCH_LEVEL;
use super::{low32, low8, ret};

/// Writes an initialized event (`KeInitializeEvent`) at `va`.
///
/// # Errors
/// A bugcheck when `va` is unmapped.
pub fn init_event(m: &Machine, va: u64, kind: u8, signalled: bool) -> Result<(), Stop> {
    m.write_u8(va + kevent::TYPE, kind)?;
    m.write_u8(va + 1, 0)?;
    m.write_u8(va + kevent::SIZE_FIELD, (kevent::SIZE / 4) as u8)?;
    m.write_u8(va + 3, 0)?;
    m.write_u32(va + kevent::SIGNAL_STATE, u32::from(signalled))?;
    m.write_u64(va + kevent::WAIT_LIST_HEAD, va + kevent::WAIT_LIST_HEAD)?;
    m.write_u64(va + kevent::WAIT_LIST_HEAD + 8, va + kevent::WAIT_LIST_HEAD)
}

/// `VOID KeInitializeEvent(PRKEVENT Event, EVENT_TYPE Type, BOOLEAN State)`
/// ("KeInitializeEvent function (wdm.h)"): a notification or
/// synchronization event, signalled or not. Any IRQL.
pub(crate) fn ke_initialize_event(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [event, kind, state] = m.args::<3>()?;
    let kind = low8(kind);
    nt.verifier.checks += 1;
    if kind > kevent::SYNCHRONIZATION {
        nt.violation(m, "EVENT_BAD_TYPE", 0xC4, None, format!("KeInitializeEvent({event:#x}, type {kind})"));
    }
    init_event(m, event, kind, low8(state) != 0)?;
    Ok(0)
}

/// `LONG KeSetEvent(PRKEVENT Event, KPRIORITY Increment, BOOLEAN Wait)`
/// ("KeSetEvent function (wdm.h)"): signals the event; returns its previous
/// state. `<= DISPATCH_LEVEL`.
pub(crate) fn ke_set_event(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [event, _increment, wait] = m.args::<3>()?;
    // "Wait: TRUE ... the caller must be running at IRQL <= APC_LEVEL" (KeSetEvent page).
    if wait & 0xFF != 0 {
        nt.check_irql(m, "KeSetEvent(Wait = TRUE)", super::super::APC_LEVEL);
    }
    let previous = m.read_u32(event + kevent::SIGNAL_STATE)?;
    m.write_u32(event + kevent::SIGNAL_STATE, 1)?;
    Ok(u64::from(previous))
}

/// Takes a signalled event (resetting a synchronization event); false when
/// it is not signalled.
fn try_take(m: &Machine, event: u64) -> Result<bool, Stop> {
    if m.read_u32(event + kevent::SIGNAL_STATE)? == 0 {
        return Ok(false);
    }
    if m.read_u8(event + kevent::TYPE)? == kevent::SYNCHRONIZATION {
        m.write_u32(event + kevent::SIGNAL_STATE, 0)?;
    }
    Ok(true)
}

/// Waits for the event at `event` as `KeWaitForSingleObject` with no
/// timeout does: returns when it is signalled, after letting pending work
/// run; an event nothing can signal any more is the finding `rule`
/// (`WAIT_NEVER_SATISFIED`, …: the thread would hang) and stops the run.
///
/// # Errors
/// That stop; a bugcheck or host failure from the pending work.
pub fn wait_forever(nt: &mut Nt, m: &mut Machine, event: u64, what: &str, rule: &'static str) -> Result<(), Stop> {
    if try_take(m, event)? {
        return Ok(());
    }
    nt.run_pending(m)?;
    nt.verifier.checks += 1;
    if try_take(m, event)? {
        return Ok(());
    }
    nt.violation(
        m,
        rule,
        0xC4,
        None,
        format!("{what}: waits forever on event {event:#x}, which nothing pending can signal (the thread would hang)"),
    );
    Err(Stop::Host(format!("{what}: deadlock — a wait on {event:#x} that can never be satisfied")))
}

/// `NTSTATUS KeWaitForSingleObject(PVOID Object, KWAIT_REASON WaitReason,
/// KPROCESSOR_MODE WaitMode, BOOLEAN Alertable, PLARGE_INTEGER Timeout)`
/// ("KeWaitForSingleObject function (wdm.h)") on an event: `STATUS_SUCCESS`
/// when signalled (a synchronization event is reset); with a zero timeout,
/// `STATUS_TIMEOUT` at once; with another timeout, `STATUS_TIMEOUT` after
/// pending work ran and virtual time moved by the (relative, negative)
/// timeout; with none, see [`wait_forever`]. IRQL: `<= DISPATCH_LEVEL`
/// (0xC4 `IRQL_TOO_HIGH`), and `<= APC_LEVEL` unless the timeout is zero:
/// at `DISPATCH_LEVEL` a NULL timeout is `IRQL_TOO_HIGH` with 0xC4's
/// parameter 0x121 and a non-zero one the same with 0x122 (0xC4 page).
pub(crate) fn ke_wait_for_single_object(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [object, _reason, _mode, _alertable, timeout] = m.args::<5>()?;
    let timeout_va = timeout;
    let timeout = if timeout == 0 { None } else { Some(m.read_u64(timeout)?.cast_signed()) };
    let irql = nt.irql;
    nt.verifier.checks += 1;
    // Above DISPATCH_LEVEL the table's IRQL check (and Verifier's 0x120)
    // applies; at DISPATCH_LEVEL only a zero timeout is allowed.
    if irql == DISPATCH_LEVEL && timeout != Some(0) {
        let (p1, what) = if timeout.is_none() { (0x121, "no timeout (NULL)") } else { (0x122, "a non-zero timeout") };
        nt.violation(
            m,
            "IRQL_TOO_HIGH",
            0xC4,
            Some(p1),
            format!("KeWaitForSingleObject({object:#x}) at DISPATCH_LEVEL with {what} (timeout at {timeout_va:#x}); only a zero timeout is allowed above APC_LEVEL"),
        );
    }
    let kind = m.read_u8(object + kevent::TYPE)?;
    nt.verifier.checks += 1;
    if kind > kevent::SYNCHRONIZATION {
        nt.violation(m, "WAIT_NOT_AN_EVENT", 0xC4, None, format!("KeWaitForSingleObject({object:#x}): object type {kind} is not an event"));
    }
    match timeout {
        None => {
            wait_forever(nt, m, object, "KeWaitForSingleObject", "WAIT_NEVER_SATISFIED")?;
            Ok(ret(status::SUCCESS))
        }
        Some(0) => Ok(ret(if try_take(m, object)? { status::SUCCESS } else { status::TIMEOUT })),
        Some(t) => {
            if try_take(m, object)? {
                return Ok(ret(status::SUCCESS));
            }
            nt.run_pending(m)?;
            if try_take(m, object)? {
                return Ok(ret(status::SUCCESS));
            }
            // Relative (negative) timeouts move virtual time; an absolute
            // one is taken as already reached.
            if t < 0 {
                nt.time = nt.time.saturating_add(t.unsigned_abs());
            }
            Ok(ret(status::TIMEOUT))
        }
    }
}

/// What the host tracks of one remove lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveLockRecord {
    /// Acquisitions held, by tag.
    pub held: BTreeMap<u64, u64>,
    /// `IoReleaseRemoveLockAndWait` was called.
    pub removed: bool,
    /// `symbol+offset` of the `IoInitializeRemoveLockEx` caller.
    pub initialized_by: String,
}

/// Checks `RemlockSize` and that the lock was initialized; false (and a
/// finding) otherwise.
fn lock_ok(nt: &mut Nt, m: &Machine, lock: u64, size: u64, ddi: &str) -> bool {
    nt.verifier.checks += 1;
    if low32(size) != remove_lock::SIZE as u32 {
        nt.violation(m, "REMOVE_LOCK_BAD_SIZE", 0xC4, None, format!("{ddi}({lock:#x}): RemlockSize {size}, a free build's is 32"));
        return false;
    }
    if !nt.io.remove_locks.contains_key(&lock) {
        nt.violation(m, "REMOVE_LOCK_NOT_INITIALIZED", 0xC4, None, format!("{ddi}({lock:#x}): never initialized"));
        return false;
    }
    true
}

/// `VOID IoInitializeRemoveLockEx(PIO_REMOVE_LOCK Lock, ULONG AllocateTag,
/// ULONG MaxLockedMinutes, ULONG HighWatermark, ULONG RemlockSize)`
/// ("IoInitializeRemoveLock macro (wdm.h)"): `Removed` FALSE, `IoCount` 1
/// (the bias `IoReleaseRemoveLockAndWait` drops), the event not signalled.
/// `PASSIVE_LEVEL`.
pub(crate) fn io_initialize_remove_lock_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [lock, _tag, _minutes, _watermark, size] = m.args::<5>()?;
    nt.verifier.checks += 1;
    if low32(size) != remove_lock::SIZE as u32 {
        nt.violation(m, "REMOVE_LOCK_BAD_SIZE", 0xC4, None, format!("IoInitializeRemoveLockEx({lock:#x}): RemlockSize {size}"));
        return Ok(0);
    }
    m.write_u8(lock + remove_lock::REMOVED, 0)?;
    m.write_u32(lock + remove_lock::IO_COUNT, 1)?;
    init_event(m, lock + remove_lock::REMOVE_EVENT, kevent::SYNCHRONIZATION, false)?;
    let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    nt.io.remove_locks.insert(lock, RemoveLockRecord { initialized_by: caller, ..RemoveLockRecord::default() });
    Ok(0)
}

/// Drops one count of the lock at `lock`; signals its event at zero.
fn drop_count(m: &Machine, lock: u64) -> Result<i32, Stop> {
    let count = m.read_u32(lock + remove_lock::IO_COUNT)?.cast_signed().wrapping_sub(1);
    m.write_u32(lock + remove_lock::IO_COUNT, count.cast_unsigned())?;
    if count == 0 {
        m.write_u32(lock + remove_lock::REMOVE_EVENT + kevent::SIGNAL_STATE, 1)?;
    }
    Ok(count)
}

/// `NTSTATUS IoAcquireRemoveLockEx(PIO_REMOVE_LOCK RemoveLock, PVOID Tag,
/// PCSTR File, ULONG Line, ULONG RemlockSize)` ("IoAcquireRemoveLock macro
/// (wdm.h)"): one more count, `STATUS_SUCCESS`; once the lock is removed,
/// `STATUS_DELETE_PENDING` and nothing held. `<= DISPATCH_LEVEL`.
pub(crate) fn io_acquire_remove_lock_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [lock, tag, _file, _line, size] = m.args::<5>()?;
    if !lock_ok(nt, m, lock, size, "IoAcquireRemoveLockEx") {
        return Ok(ret(status::INVALID_PARAMETER));
    }
    let count = m.read_u32(lock + remove_lock::IO_COUNT)?;
    m.write_u32(lock + remove_lock::IO_COUNT, count.wrapping_add(1))?;
    if m.read_u8(lock + remove_lock::REMOVED)? != 0 {
        drop_count(m, lock)?;
        return Ok(ret(status::DELETE_PENDING));
    }
    if let Some(r) = nt.io.remove_locks.get_mut(&lock) {
        *r.held.entry(tag).or_insert(0) += 1;
    }
    Ok(ret(status::SUCCESS))
}

/// Releases one acquisition with `tag`; records a finding when none is held.
fn release(nt: &mut Nt, m: &Machine, lock: u64, tag: u64, ddi: &str) -> Result<(), Stop> {
    let held = nt.io.remove_locks.get_mut(&lock).and_then(|r| r.held.get_mut(&tag)).map(|n| {
        *n -= 1;
        *n
    });
    nt.verifier.checks += 1;
    match held {
        Some(0) => {
            if let Some(r) = nt.io.remove_locks.get_mut(&lock) {
                r.held.remove(&tag);
            }
        }
        Some(_) => {}
        None => {
            nt.violation(
                m,
                "REMOVE_LOCK_RELEASE_NOT_ACQUIRED",
                0xC4,
                // 0xD5: the IoReleaseRemoveLock tag matches no
                // IoAcquireRemoveLock tag; 0xD6: the same for
                // IoReleaseRemoveLockAndWait (0xC4 page).
                Some(if ddi.contains("AndWait") { 0xD6 } else { 0xD5 }),
                format!("{ddi}({lock:#x}, tag {tag:#x}): no acquisition with this tag is held"),
            );
            return Ok(());
        }
    }
    drop_count(m, lock)?;
    Ok(())
}

/// `VOID IoReleaseRemoveLockEx(PIO_REMOVE_LOCK RemoveLock, PVOID Tag, ULONG
/// RemlockSize)` ("IoReleaseRemoveLock macro (wdm.h)"): releases an
/// acquisition made with the same tag (releasing one never made is a
/// finding). `<= DISPATCH_LEVEL`.
pub(crate) fn io_release_remove_lock_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [lock, tag, size] = m.args::<3>()?;
    if lock_ok(nt, m, lock, size, "IoReleaseRemoveLockEx") {
        release(nt, m, lock, tag, "IoReleaseRemoveLockEx")?;
    }
    Ok(0)
}

/// `VOID IoReleaseRemoveLockAndWaitEx(PIO_REMOVE_LOCK RemoveLock, PVOID
/// Tag, ULONG RemlockSize)` ("IoReleaseRemoveLockAndWait macro (wdm.h)"):
/// marks the lock removed (later acquisitions fail), releases the caller's
/// acquisition and the initial count, and waits until every other
/// acquisition is released — see [`wait_forever`] for one that never is.
/// Called once, from `IRP_MN_REMOVE_DEVICE`. `PASSIVE_LEVEL`.
pub(crate) fn io_release_remove_lock_and_wait_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [lock, tag, size] = m.args::<3>()?;
    if !lock_ok(nt, m, lock, size, "IoReleaseRemoveLockAndWaitEx") {
        return Ok(0);
    }
    let already = nt.io.remove_locks.get(&lock).is_some_and(|r| r.removed);
    nt.verifier.checks += 1;
    if already {
        nt.violation(m, "REMOVE_LOCK_WAIT_TWICE", 0xC4, None, format!("IoReleaseRemoveLockAndWaitEx({lock:#x}) called twice"));
        return Ok(0);
    }
    m.write_u8(lock + remove_lock::REMOVED, 1)?;
    if let Some(r) = nt.io.remove_locks.get_mut(&lock) {
        r.removed = true;
    }
    release(nt, m, lock, tag, "IoReleaseRemoveLockAndWaitEx")?;
    // The bias IoInitializeRemoveLock set.
    if drop_count(m, lock)? > 0 {
        wait_forever(nt, m, lock + remove_lock::REMOVE_EVENT, "IoReleaseRemoveLockAndWaitEx", "REMOVE_LOCK_HELD_AT_REMOVE")?;
    }
    Ok(0)
}
