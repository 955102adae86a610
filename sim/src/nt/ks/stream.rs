//! The queue as the minidriver reaches it: stream pointers in guest memory
//! (`KSSTREAM_POINTER` with its `OffsetOut` over the frame's system
//! address or its `KSMAPPING` table), the DDIs that move them, and when
//! AVStream calls the pin's `Process` ("KSPIN_DISPATCH structure (ks.h)":
//! `Process`; "KsPinAttemptProcessing function (ks.h)";
//! "KSPIN_DESCRIPTOR_EX structure (ks.h)": the processing flags).
//!
//! The frames, their order, the leading edge and the clones are the
//! simulator's queue model ([`crate::ks::SimKsPin`]; without
//! `KSPIN_FLAG_ENFORCE_FIFO` a frame goes back to the application as soon as
//! nothing references it and the leading edge is past it, out of queue
//! order if need be); this file keeps the
//! guest's view of it in step after every DDI and decides the `Process`
//! calls:
//! * a frame arriving owes a call only when it lands with nothing at or
//!   ahead of the leading edge (every arrival with
//!   `KSPIN_FLAG_INITIATE_PROCESSING_ON_EVERY_ARRIVAL`; none with
//!   `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING`), and only in a state
//!   `Process` is called in;
//! * after `STATUS_SUCCESS` AVStream calls again while frames are at or
//!   ahead of the leading edge — not while the one at the leading edge
//!   waits for map registers (it is not available to `Process` until
//!   mapped); after `STATUS_PENDING` (or an error) only
//!   the minidriver's `KsPinAttemptProcessing` restarts it — nothing
//!   restarts it on its own when map registers come back;
//! * `KsPinAttemptProcessing(Pin, FALSE)` at `PASSIVE_LEVEL`, outside
//!   `Process` and with the processing mutex free, runs `Process` inside
//!   the call; otherwise the call is owed to the next worker pass
//!   ([`run_workers`], which the machine runs at `PASSIVE_LEVEL`);
//! * `Process` runs with the processing mutex held, at `PASSIVE_LEVEL`
//!   (`DISPATCH_LEVEL` with `KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING`);
//! * [`NO_PROGRESS_LIMIT`] `Process` calls in a row, each owing the next
//!   (`STATUS_SUCCESS` with frames at or ahead of the leading edge, or
//!   `KsPinAttemptProcessing` from inside `Process`), without the queue
//!   changing are the finding `KS_PROCESS_NO_PROGRESS` (the calls stop
//!   there); a call that owes none (nothing ahead, or `STATUS_PENDING`)
//!   is no livelock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capdma_avstream::ports::KsPinPort as _;
use capdma_winvm::{ExitCounts, Machine, Stop};

use super::super::layout::irp::status;
use super::super::layout::ks::{ksmapping, kspin_dispatch, ksstream_header, ksstream_pointer};
use super::super::{Nt, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::driver::low32;
use super::pin::{
    table_pages, KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING, KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY, KSSTATE_PAUSE, KSSTATE_RUN,
};
use crate::ks::StreamPointerHandle;

/// `Process` calls in a row, each owing the next and nothing changed,
/// before a `Process` is reported as making no progress.
pub const NO_PROGRESS_LIMIT: u32 = 1000;
/// Bytes of one `KSSTREAM_POINTER` slot (the pointer and up to 192 bytes of clone context).
const SLOT_BYTES: u64 = 256;
/// `KSSTREAM_POINTER_STATE_UNLOCKED` (ks.h).
const KSSTREAM_POINTER_STATE_UNLOCKED: u64 = 0;
/// The byte a deleted clone's `KSSTREAM_POINTER` is filled with.
const DELETED_FILL: u8 = 0xDD;

/// One `KSSTREAM_POINTER` the minidriver holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointerRecord {
    /// Its `KSPIN`.
    pub pin: u64,
    /// The queue's handle (the leading edge's once it was first locked).
    pub handle: Option<StreamPointerHandle>,
    /// A clone's `CancelCallback` (`PFNKSSTREAMPOINTER`; 0: none, and
    /// always 0 for the leading edge).
    pub cancel: u64,
}

/// Whether `Process` is called in `state` for a pin with `flags`.
#[must_use]
pub fn processes_in(flags: u32, state: u32) -> bool {
    state == KSSTATE_RUN || (state == KSSTATE_PAUSE && flags & KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY == 0)
}

/// A `KSSTREAM_POINTER` slot: a deleted clone's again, or a fresh one.
///
/// # Errors
/// [`Stop::Host`] when the machine's frames are exhausted.
pub fn new_pointer_slot(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    if let Some(va) = nt.ks.free_pointers.pop() {
        m.fill(va, SLOT_BYTES as usize, 0)?;
        return Ok(va);
    }
    let page = nt.alloc_kernel(m, 4096)?;
    for i in (1..4096 / SLOT_BYTES).rev() {
        nt.ks.free_pointers.push(page + i * SLOT_BYTES);
    }
    Ok(page)
}

/// Gives a slot back, filled with `DELETED_FILL` (a minidriver reading a
/// deleted clone sees garbage, as with KS's lookaside lists).
///
/// # Errors
/// A bugcheck when the slot is unmapped.
pub fn release_pointer_slot(nt: &mut Nt, m: &mut Machine, va: u64) -> Result<(), Stop> {
    m.fill(va, SLOT_BYTES as usize, DELETED_FILL)?;
    nt.ks.free_pointers.push(va);
    Ok(())
}

/// The live pointer at `va`, or the finding `KS_STREAM_POINTER_NOT_LIVE`
/// (a pointer never returned, or used after `KsStreamPointerDelete`).
fn live_pointer(nt: &mut Nt, m: &Machine, va: u64, ddi: &str) -> Option<(PointerRecord, StreamPointerHandle)> {
    nt.verifier.checks += 1;
    let found = nt.ks.pointers.get(&va).copied().and_then(|r| r.handle.map(|h| (r, h)));
    if found.is_none() {
        nt.violation(m, "KS_STREAM_POINTER_NOT_LIVE", 0xC4, None, format!("{ddi}({va:#x}): not a live stream pointer (deleted, or never returned by KS)"));
    }
    found
}

/// Writes the guest's `KSSTREAM_POINTER` at `va` from the queue: the pin,
/// the frame's stream header, `Offset` = `&OffsetOut`, and `OffsetOut`
/// (the data at the pointer's byte offset and the bytes left, or the
/// `KSMAPPING` at its mapping offset and the mappings left, the frame's
/// table written first when it is new). Nothing for a pointer that is not
/// locked on a frame.
///
/// # Errors
/// [`Stop::Host`] when a table cannot be allocated; a bugcheck.
pub fn sync_pointer(nt: &mut Nt, m: &mut Machine, va: u64) -> Result<(), Stop> {
    let Some(PointerRecord { pin, handle: Some(handle), .. }) = nt.ks.pointers.get(&va).copied() else { return Ok(()) };
    let Some(record) = nt.ks.pins.get(&pin) else { return Ok(()) };
    let at = record.queue.view(handle, |v| v.map(|v| (v.buffer_id, v.seq, v.offset, v.bytes, v.generate_mappings, v.mappings.len())));
    let Some((buffer_id, seq, offset, bytes, mapping_mode, count)) = at else { return Ok(()) };
    let b = usize::try_from(buffer_id).unwrap_or(usize::MAX);
    let stride = record.mapping_stride;
    let Some(buffer) = record.buffers.get(b).cloned() else { return Ok(()) };
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let mut table_va = buffer.table_va;
    if mapping_mode && buffer.table_seq != Some(seq) {
        if buffer.table_capacity < count {
            if table_va != 0 {
                m.free_own_pages(table_va, table_pages(buffer.table_capacity, stride))?;
            }
            table_va = nt.alloc_kernel(m, table_pages(count, stride) * 4096)?;
        }
        let mut bytes_out = vec![0u8; (u64::from(count) * u64::from(stride)) as usize];
        let record = &nt.ks.pins[&pin];
        record.queue.view(handle, |v| {
            if let Some(v) = v {
                for (i, e) in v.mappings.iter().enumerate() {
                    let at = i * stride as usize;
                    bytes_out[at + ksmapping::PHYSICAL_ADDRESS as usize..][..8].copy_from_slice(&e.logical_address.to_le_bytes());
                    bytes_out[at + ksmapping::BYTE_COUNT as usize..][..4].copy_from_slice(&e.byte_count.to_le_bytes());
                    bytes_out[at + ksmapping::ALIGNMENT as usize..][..4].copy_from_slice(&e.alignment.to_le_bytes());
                }
            }
        });
        m.write(table_va, &bytes_out)?;
        if let Some(record) = nt.ks.pins.get_mut(&pin) {
            if let Some(buffer) = record.buffers.get_mut(b) {
                buffer.table_capacity = buffer.table_capacity.max(count);
                buffer.table_va = table_va;
                buffer.table_seq = Some(seq);
            }
        }
    }
    let (data, total) = if mapping_mode {
        (table_va + u64::from(offset.min(count)) * u64::from(stride), count)
    } else {
        (buffer.guest_va + u64::from(offset.min(bytes)), bytes)
    };
    m.write_u64(va + ksstream_pointer::PIN, pin)?;
    m.write_u64(va + ksstream_pointer::STREAM_HEADER, buffer.header_va)?;
    m.write_u64(va + ksstream_pointer::OFFSET, va + ksstream_pointer::OFFSET_OUT)?;
    m.fill(va + ksstream_pointer::OFFSET_IN, 16, 0)?;
    let out = va + ksstream_pointer::OFFSET_OUT;
    m.write_u64(out + ksstream_pointer::OFFSET_DATA, data)?;
    m.write_u32(out + ksstream_pointer::OFFSET_COUNT, total)?;
    m.write_u32(out + ksstream_pointer::OFFSET_REMAINING, total - offset.min(total))
}

/// `PKSSTREAM_POINTER KsPinGetLeadingEdgeStreamPointer(PKSPIN Pin,
/// KSSTREAM_POINTER_STATE State)` ("KsPinGetLeadingEdgeStreamPointer
/// function (ks.h)"; up to `DISPATCH_LEVEL`): the leading edge on the first
/// frame not yet advanced over, locked (`KSSTREAM_POINTER_STATE_LOCKED`) or
/// not; NULL when no frame is there (or, in mapping mode, its mappings
/// cannot be generated now for want of map registers).
pub(crate) fn ks_pin_get_leading_edge_stream_pointer(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [pin, state] = m.args::<2>()?;
    let Some(record) = nt.ks.pins.get(&pin) else {
        nt.counted_violation(m, "KS_INVALID_PIN", 0xC4, None, format!("KsPinGetLeadingEdgeStreamPointer({pin:#x}): not a pin"));
        return Ok(0);
    };
    let (va, queue) = (record.leading_edge_va, record.queue.clone());
    let Some(handle) = queue.leading_edge() else { return Ok(0) };
    nt.ks.pointers.insert(va, PointerRecord { pin, handle: Some(handle), cancel: 0 });
    sync_pointer(nt, m, va)?;
    if state & 0xFFFF_FFFF == KSSTREAM_POINTER_STATE_UNLOCKED {
        queue.unlock(handle, false);
    }
    Ok(va)
}

/// `NTSTATUS KsStreamPointerClone(PKSSTREAM_POINTER StreamPointer,
/// PFNKSSTREAMPOINTER CancelCallback, ULONG ContextSize,
/// PKSSTREAM_POINTER* CloneStreamPointer)` ("KsStreamPointerClone function
/// (ks.h)"; up to `DISPATCH_LEVEL`): a locked clone on the same frame and
/// offset, holding the frame until `KsStreamPointerDelete`, with
/// `ContextSize` zeroed bytes at its `Context`. `STATUS_INVALID_PARAMETER`
/// for a pointer that is not live and locked. `CancelCallback` (optional)
/// is called when the frame the clone references is cancelled
/// ([`cancel_clones`]).
pub(crate) fn ks_stream_pointer_clone(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [sp, cancel, context_size, out] = m.args::<4>()?;
    let Some((record, handle)) = live_pointer(nt, m, sp, "KsStreamPointerClone") else {
        return Ok(u64::from(status::INVALID_PARAMETER));
    };
    let Some(queue) = nt.ks.pins.get(&record.pin).map(|p| p.queue.clone()) else { return Ok(u64::from(status::INVALID_PARAMETER)) };
    let clone = match queue.clone_pointer(handle) {
        Ok(clone) => clone,
        Err(st) => return Ok(u64::from(st.cast_unsigned())),
    };
    let context_size = context_size & 0xFFFF_FFFF;
    let slot = if context_size + ksstream_pointer::SIZE <= SLOT_BYTES {
        new_pointer_slot(nt, m)?
    } else {
        nt.alloc_kernel(m, ksstream_pointer::SIZE + context_size)?
    };
    m.write_u64(slot + ksstream_pointer::CONTEXT, if context_size == 0 { 0 } else { slot + ksstream_pointer::SIZE })?;
    nt.ks.pointers.insert(slot, PointerRecord { pin: record.pin, handle: Some(clone), cancel });
    sync_pointer(nt, m, slot)?;
    nt.ks.stats.clones += 1;
    m.write_u64(out, slot)?;
    Ok(u64::from(status::SUCCESS))
}

/// The frames of `pin`'s queue are cancelled (the queue is flushed at
/// `KSSTATE_STOP`, or the pin closes): AVStream calls the `CancelCallback`
/// of every clone that references one ("PFNKSSTREAMPOINTER callback
/// function (ks.h)", `AVStrMiniCancelCallback`: with the clone, with the
/// queue's spin lock held, so at `DISPATCH_LEVEL`), in the order the clones
/// were made. The callback must delete the clone (`KsStreamPointerDelete`);
/// a clone still alive afterwards keeps its frame, which the flush that
/// follows reports. Clones without a callback are left to that report.
///
/// # Errors
/// A bugcheck in a callback.
pub fn cancel_clones(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<(), Stop> {
    let clones: Vec<(u64, u64)> = nt.ks.pointers.iter().filter(|(_, p)| p.pin == pin && p.cancel != 0).map(|(va, p)| (*va, p.cancel)).collect();
    for (clone, callback) in clones {
        if !nt.ks.pointers.contains_key(&clone) {
            continue;
        }
        let old = nt.irql;
        nt.irql = DISPATCH_LEVEL;
        let result = m.call(nt, callback, &[clone]);
        nt.irql = old;
        result?;
    }
    Ok(())
}

/// `void KsStreamPointerDelete(PKSSTREAM_POINTER StreamPointer)`
/// ("KsStreamPointerDelete function (ks.h)"; up to `DISPATCH_LEVEL`): the
/// clone goes (its frame completes once nothing else holds it and the
/// leading edge is past it); its memory is KS's again. Deleting the
/// leading edge, or a pointer twice, is a finding.
pub(crate) fn ks_stream_pointer_delete(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [sp] = m.args::<1>()?;
    let Some((record, handle)) = live_pointer(nt, m, sp, "KsStreamPointerDelete") else { return Ok(0) };
    let leading = nt.ks.pins.get(&record.pin).map(|p| p.leading_edge_va);
    nt.verifier.checks += 1;
    if leading == Some(sp) {
        nt.violation(m, "KS_DELETE_LEADING_EDGE", 0xC4, None, format!("KsStreamPointerDelete({sp:#x}) on the leading edge"));
        return Ok(0);
    }
    nt.ks.pointers.remove(&sp);
    if let Some(p) = nt.ks.pins.get(&record.pin) {
        p.queue.delete(handle);
    }
    release_pointer_slot(nt, m, sp)?;
    Ok(0)
}

/// `void KsStreamPointerUnlock(PKSSTREAM_POINTER StreamPointer, BOOLEAN
/// Eject)` ("KsStreamPointerUnlock function (ks.h)"; up to
/// `DISPATCH_LEVEL`): unlocks; `Eject` moves the leading edge off its frame.
pub(crate) fn ks_stream_pointer_unlock(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [sp, eject] = m.args::<2>()?;
    let Some((record, handle)) = live_pointer(nt, m, sp, "KsStreamPointerUnlock") else { return Ok(0) };
    let before = view_of(nt, record.pin, handle);
    if let Some(p) = nt.ks.pins.get(&record.pin) {
        p.queue.unlock(handle, eject & 0xFF != 0);
    }
    left_frame(nt, m, record.pin, handle, before, 0)?;
    Ok(0)
}

/// (buffer, frame, offset, mapping bytes advanced over so far) of a pointer.
fn view_of(nt: &Nt, pin: u64, handle: StreamPointerHandle) -> Option<(u64, u64, u32, Vec<u32>)> {
    let p = nt.ks.pins.get(&pin)?;
    p.queue.view(handle, |v| v.map(|v| (v.buffer_id, v.seq, v.offset, v.mappings.iter().map(|e| e.byte_count).collect())))
}

/// After a pointer moved by `out_used` from `before`: when the leading edge
/// left its frame, KS writes the frame's `DataUsed` (the bytes advanced
/// over: the mappings' `ByteCount`s in mapping mode); then the guest's
/// view of the pointer is brought in step.
fn left_frame(
    nt: &mut Nt,
    m: &mut Machine,
    pin: u64,
    handle: StreamPointerHandle,
    before: Option<(u64, u64, u32, Vec<u32>)>,
    out_used: u32,
) -> Result<(), Stop> {
    let Some(record) = nt.ks.pins.get(&pin) else { return Ok(()) };
    let leading = record.leading_edge_va;
    let is_leading = nt.ks.pointers.get(&leading).and_then(|r| r.handle) == Some(handle);
    if let (true, Some((buffer_id, seq, offset, mapping_bytes))) = (is_leading, before) {
        // Where the leading edge stands now, locked or not: unlocking it
        // where it is (`KsStreamPointerUnlock(FALSE)`, the unlock of
        // `KsStreamPointerAdvanceOffsetsAndUnlock` within the frame) does
        // not leave the frame.
        let now = nt.ks.pins.get(&pin).map(|p| p.queue.progress_mark().0);
        if now != Some(seq) {
            let record = &nt.ks.pins[&pin];
            let advanced = offset.saturating_add(out_used);
            let used = if record.flags & super::pin::KSPIN_FLAG_GENERATE_MAPPINGS != 0 {
                mapping_bytes.iter().take(advanced as usize).sum()
            } else {
                record.buffers.get(usize::try_from(buffer_id).unwrap_or(usize::MAX)).map_or(0, |b| advanced.min(b.app.bytes))
            };
            if let Some(b) = record.buffers.get(usize::try_from(buffer_id).unwrap_or(usize::MAX)) {
                m.write_u32(b.header_va + ksstream_header::DATA_USED, used)?;
            }
        }
    }
    let pointers: Vec<u64> = nt.ks.pointers.iter().filter(|(_, r)| r.handle == Some(handle) && r.pin == pin).map(|(va, _)| *va).collect();
    for va in pointers {
        sync_pointer(nt, m, va)?;
    }
    Ok(())
}

/// The shared part of both advance DDIs; returns the status.
fn advance(nt: &mut Nt, m: &mut Machine, sp: u64, out_used: u32, eject: bool, unlock: bool, ddi: &str) -> Result<u32, Stop> {
    let Some((record, handle)) = live_pointer(nt, m, sp, ddi) else { return Ok(status::INVALID_PARAMETER) };
    let before = view_of(nt, record.pin, handle);
    let Some(queue) = nt.ks.pins.get(&record.pin).map(|p| p.queue.clone()) else { return Ok(status::INVALID_PARAMETER) };
    let result = queue.advance_offsets(handle, out_used, eject);
    if unlock && result.is_ok() {
        queue.unlock(handle, false);
    }
    left_frame(nt, m, record.pin, handle, before, out_used)?;
    Ok(match result {
        Ok(()) => status::SUCCESS,
        Err(st) => st.cast_unsigned(),
    })
}

/// `NTSTATUS KsStreamPointerAdvanceOffsets(PKSSTREAM_POINTER StreamPointer,
/// ULONG InUsed, ULONG OutUsed, BOOLEAN Eject)` ("KsStreamPointerAdvanceOffsets
/// function (ks.h)"; up to `DISPATCH_LEVEL`): moves `OffsetOut` on by
/// `OutUsed` bytes (mappings in mapping mode); at the frame's end or with
/// `Eject` the leading edge moves to the next frame.
/// `STATUS_DEVICE_NOT_READY` when no frame is there (the pointer is then
/// unlocked); advancing past the frame's end is a finding.
pub(crate) fn ks_stream_pointer_advance_offsets(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [sp, _in_used, out_used, eject] = m.args::<4>()?;
    advance(nt, m, sp, low32(out_used), eject & 0xFF != 0, false, "KsStreamPointerAdvanceOffsets").map(u64::from)
}

/// `void KsStreamPointerAdvanceOffsetsAndUnlock(PKSSTREAM_POINTER
/// StreamPointer, ULONG InUsed, ULONG OutUsed, BOOLEAN Eject)`
/// ("KsStreamPointerAdvanceOffsetsAndUnlock function (ks.h)"; up to
/// `DISPATCH_LEVEL`): as `KsStreamPointerAdvanceOffsets`, then unlocked.
pub(crate) fn ks_stream_pointer_advance_offsets_and_unlock(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [sp, _in_used, out_used, eject] = m.args::<4>()?;
    advance(nt, m, sp, low32(out_used), eject & 0xFF != 0, true, "KsStreamPointerAdvanceOffsetsAndUnlock")?;
    Ok(0)
}

/// `void KsPinAttemptProcessing(PKSPIN Pin, BOOLEAN Asynchronous)`
/// ("KsPinAttemptProcessing function (ks.h)"; up to `DISPATCH_LEVEL`):
/// asks for a `Process` call — made inside this call when `Asynchronous`
/// is FALSE, the caller is at `PASSIVE_LEVEL`, outside `Process`, with the
/// processing mutex free and the pin in a processing state; else owed to
/// the next worker pass.
pub(crate) fn ks_pin_attempt_processing(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [pin, asynchronous] = m.args::<2>()?;
    nt.ks.stats.attempts += 1;
    let Some(record) = nt.ks.pins.get_mut(&pin) else {
        nt.counted_violation(m, "KS_INVALID_PIN", 0xC4, None, format!("KsPinAttemptProcessing({pin:#x}): not a pin"));
        return Ok(0);
    };
    record.owed = true;
    let synchronous = asynchronous as u8 == 0;
    let now = synchronous
        && nt.irql == PASSIVE_LEVEL
        && !record.in_process
        && !record.processing_mutex
        && record.flags & KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING == 0
        && processes_in(record.flags, record.state);
    if now {
        nt.ks.stats.process_calls_synchronous += 1;
        run_owed(nt, m, pin)?;
    }
    Ok(0)
}

/// Makes the `Process` calls owed to `pin` while the rules allow them.
///
/// # Errors
/// A bugcheck in the minidriver.
pub fn run_owed(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<(), Stop> {
    loop {
        let Some(record) = nt.ks.pins.get(&pin) else { return Ok(()) };
        if !record.owed || record.in_process || record.processing_mutex || !processes_in(record.flags, record.state) || m.is_dead() {
            return Ok(());
        }
        call_process(nt, m, pin)?;
    }
}

/// The worker: every pin's owed `Process` calls, at `PASSIVE_LEVEL`.
///
/// # Errors
/// A bugcheck in a minidriver.
pub fn run_workers(nt: &mut Nt, m: &mut Machine) -> Result<(), Stop> {
    let owed: Vec<u64> = nt.ks.pins.iter().filter(|(_, p)| p.owed).map(|(va, _)| *va).collect();
    for pin in owed {
        nt.irql = PASSIVE_LEVEL;
        run_owed(nt, m, pin)?;
    }
    Ok(())
}

/// One `Process(Pin)` call with the processing mutex held, and what its
/// return owes.
fn call_process(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<(), Stop> {
    let Some(record) = nt.ks.pins.get_mut(&pin) else { return Ok(()) };
    record.owed = false;
    let (dispatch, flags, mark) = (record.dispatch, record.flags, record.queue.progress_mark());
    let process = if dispatch == 0 { 0 } else { m.read_u64(dispatch + kspin_dispatch::PROCESS)? };
    if process == 0 {
        return Ok(());
    }
    if let Some(record) = nt.ks.pins.get_mut(&pin) {
        record.in_process = true;
        record.processing_mutex = true;
    }
    let old = nt.irql;
    nt.irql = if flags & KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING != 0 { DISPATCH_LEVEL } else { PASSIVE_LEVEL };
    nt.ks.stats.process_calls += 1;
    let before = (m.counts(), nt.ddi_calls, nt.calls_by_ddi.clone(), mark.3);
    let started = Instant::now();
    let st = low32(m.call(nt, process, &[pin])?);
    account_process(nt, m, pin, started.elapsed(), before);
    nt.irql = old;
    let Some(record) = nt.ks.pins.get_mut(&pin) else { return Ok(()) };
    record.in_process = false;
    record.processing_mutex = false;
    if st == status::SUCCESS && record.queue.frames_at_or_ahead_of_leading_edge() > 0 && !record.queue.waiting_for_map_registers() {
        record.owed = true;
    }
    // Owed now (STATUS_SUCCESS with frames ahead, or KsPinAttemptProcessing
    // from inside Process), the next call comes at once: such calls in a
    // row with nothing changed are a livelock. A call that owes none (the
    // queue empty, or STATUS_PENDING) ends the run.
    let progressed = record.queue.progress_mark() != mark;
    record.no_progress = if progressed || !record.owed { 0 } else { record.no_progress + 1 };
    if record.no_progress >= NO_PROGRESS_LIMIT {
        record.owed = false;
        if !record.livelock_reported {
            record.livelock_reported = true;
            nt.verifier.checks += 1;
            nt.violation(
                m,
                "KS_PROCESS_NO_PROGRESS",
                0xC4,
                None,
                format!(
                    "Process of pin {pin:#x} was called {NO_PROGRESS_LIMIT} times in a row, each call owing the next (STATUS_SUCCESS with frames at or ahead of the leading edge, or KsPinAttemptProcessing from inside Process), without moving a stream pointer or completing a frame"
                ),
            );
        }
    }
    Ok(())
}

/// Adds one `Process` call to the counters ([`super::KsCounters`]'s
/// `process_*`, [`super::KsState::process_samples`] and
/// `process_calls_by_ddi`): `before` is the machine's exit counts, the DDI
/// calls (all, and by name) and the pin's completed frames when it started.
fn account_process(nt: &mut Nt, m: &Machine, pin: u64, elapsed: Duration, before: (ExitCounts, u64, BTreeMap<&'static str, u64>, u64)) {
    let (counts, ddi_calls, by_ddi, completed) = before;
    let after = m.counts();
    let frames_completed = nt.ks.pins.get(&pin).map_or(0, |p| p.queue.progress_mark().3.saturating_sub(completed));
    let sample = super::ProcessSample {
        wall_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        guest_ns: after.guest_ns.saturating_sub(counts.guest_ns),
        vm_exits: after.exits.saturating_sub(counts.exits),
        frames_completed,
    };
    let stats = &mut nt.ks.stats;
    stats.process_wall_ns += sample.wall_ns;
    stats.process_guest_ns += sample.guest_ns;
    stats.process_vm_exits += sample.vm_exits;
    stats.process_ddi_calls += nt.ddi_calls.saturating_sub(ddi_calls);
    // The call itself is one guest call; any more were nested in it.
    stats.process_nested_calls += after.guest_calls.saturating_sub(counts.guest_calls).saturating_sub(1);
    stats.process_frames_completed += frames_completed;
    if nt.ks.process_samples.len() < super::PROCESS_SAMPLES_KEPT {
        nt.ks.process_samples.push(sample);
    }
    for (name, calls) in &nt.calls_by_ddi {
        let made = calls.saturating_sub(by_ddi.get(name).copied().unwrap_or(0));
        if made > 0 {
            *nt.ks.process_calls_by_ddi.entry(name).or_default() += made;
        }
    }
}
