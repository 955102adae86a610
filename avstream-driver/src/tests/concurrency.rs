//! The capture pin on real threads: the bus DPC's completions
//! ([`CapturePin::on_completion`], `DISPATCH_LEVEL`) against Process
//! ([`CapturePin::process`], PASSIVE, serialised by the processing mutex)
//! and KS state changes (PASSIVE), which the single-threaded simulation
//! never overlaps.
//!
//! * a thread-safe KS queue ([`Ks`]) behind [`Port`]: stream pointers
//!   checked (a clone deleted twice, a pointer used after delete, the
//!   leading edge touched outside Process), frames handed back to the
//!   application exactly once and checked (`DataUsed`, and in common-buffer
//!   mode every byte against the slot the frame was copied from), then
//!   requeued while the run lasts;
//! * a thread-safe bus ([`Bus`]) behind the real `extern "system"` table of
//!   [`super::table`] (the same as the pin tests' fake bus) that
//!   keeps the interface contract: one completion at a time, `StopChannel`
//!   completes every posted frame (`STATUS_CANCELLED`) through the callback
//!   before it returns, nothing after it or after `RegisterCompletion(NULL)`,
//!   slots returned in order; its DPC thread completes frames (sometimes
//!   with an error, sometimes repeating a stale tag) or fills slots;
//! * the same bus serving interface version 2 with a descriptor ring of
//!   [`RING_DESCRIPTORS`] entries, so that most frames go in parts
//!   (`ProgramFramePart`): it checks that each part continues the frame
//!   where the last one ended and that the frame had a live clone, and
//!   answers each frame's bytes from what was posted; its "board" thread
//!   completes parts (`FramePart`, `DISPATCH_LEVEL`) and frames, now and
//!   then fails a frame in the middle (terminated: one `Frame`
//!   completion), and now and then completes a part before
//!   `ProgramFramePart` has returned (the call waits for it); `StopChannel`
//!   terminates the open frame and every frame with parts in the ring with
//!   one cancelled `Frame` completion each while the board completes parts;
//! * a Process thread (KS: Process under the processing mutex, when asked
//!   by `KsPinAttemptProcessing` or, S/G, when a frame arrives, in
//!   `KSSTATE_RUN` only) and a state thread walking STOP <-> RUN.
//!
//! Bounded by iteration counts; a watchdog fails the test on a hang.
use crate::bus_client::BusClient;
use crate::copy::VectorUnit;
use crate::device::device_start;
use crate::format::{build_data_format, VideoFormat};
use crate::pin::CapturePin;
use crate::ports::{FrameCompletion, Irql, KsPinPort, StreamOffset};
use crate::state::KsState;
use super::table::{call_back, FakeChannel};
use super::yuy2;
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_IO_DEVICE_ERROR, STATUS_SUCCESS,
};
use capdma_interface::table::{
    ChannelFormat, Completion, CompletionKind, DmaConfig, PfnCompletion, SgElement, SlotRing, CAPDMA_PART_END,
    CAPDMA_PART_START,
};
use core::ffi::c_void;
use capdma_test_kit::{irql, jitter, join_all, lock, set_irql, Log, Rng, Watchdog};
use core::pin::Pin;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use zerocopy::IntoBytes;

const PASSIVE: Irql = 0;
const DISPATCH: Irql = 2;
/// 64×16 YUY2: 2 KiB frames (stride 128); 4 KiB in a slot (pitch 256).
const WIDTH: u32 = 64;
const HEIGHT: u32 = 16;
const SLOTS: u32 = 4;
const SLOT_BYTES: u32 = 4096;
/// Frames the S/G bus takes before `STATUS_DEVICE_BUSY`: small, so the ring
/// is full often while completions run.
const RING_FRAMES: usize = 2;
/// Application buffers queued at once.
const APP_FRAMES: usize = 6;
/// Version 2: the descriptor ring's entries. Frames have 3 to 12
/// mappings: most go in parts.
const RING_DESCRIPTORS: u32 = 5;

/// The byte a slot filled with frame `number` holds (never 0, so an
/// untouched frame buffer does not pass).
fn stamp(number: u32) -> u8 {
    u8::try_from(number % 251).unwrap_or(0) + 1
}

// ---- the KS queue -----------------------------------------------------------

/// A stream pointer: the leading edge, or a clone (ids never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    Leading,
    Clone(u64),
}

/// One application buffer.
struct KsFrame {
    extent: u32,
    /// S/G: the frame's mappings (logical addresses encode the frame).
    mappings: Vec<SgElement>,
    /// CB: the frame's bytes.
    data: Vec<u8>,
    clones: u32,
    passed: bool,
    completion: Option<FrameCompletion>,
    released: bool,
}

#[derive(Default)]
struct KsQueue {
    /// Every frame ever queued (its mappings and data are heap blocks that
    /// stay put while the table grows).
    frames: Vec<KsFrame>,
    /// Frames not yet passed by the leading edge; the front is the leading edge's.
    queue: VecDeque<usize>,
    leading_offset: u32,
    locked: bool,
    clones: HashMap<u64, usize>,
    next_clone: u64,
    /// Frames still to queue in this run.
    budget: u32,
    good: u64,
    empty: u64,
}

/// The KS side of one pin.
struct Ks {
    sg: bool,
    /// S/G frames of 3 to 12 mappings (for the version-2 bus), not 1 to 4.
    parts: bool,
    format: VideoFormat,
    q: Mutex<KsQueue>,
    log: Arc<Log>,
    process_requested: AtomicBool,
    /// The processing mutex (`KsPinAcquireProcessingMutex`).
    mutex: Mutex<Option<ThreadId>>,
    mutex_held: AtomicBool,
}

impl Ks {
    fn new(sg: bool, parts: bool, format: VideoFormat, log: Arc<Log>) -> Self {
        Self {
            sg,
            parts,
            format,
            q: Mutex::new(KsQueue::default()),
            log,
            process_requested: AtomicBool::new(false),
            mutex: Mutex::new(None),
            mutex_held: AtomicBool::new(false),
        }
    }

    fn queue_frame(&self, q: &mut KsQueue, rng_pieces: u32) {
        let id = q.frames.len();
        let extent = self.format.image_bytes;
        let mappings = if self.sg {
            let pieces = if self.parts { 3 + rng_pieces % 10 } else { 1 + rng_pieces % 4 };
            let each = extent / pieces;
            (0..pieces)
                .map(|i| SgElement {
                    logical_address: ((id as u64) << 20) | (u64::from(i) * 0x1000),
                    byte_count: if i + 1 == pieces { extent - each * i } else { each },
                    alignment: 0,
                })
                .collect()
        } else {
            Vec::new()
        };
        let data = if self.sg { Vec::new() } else { vec![0u8; extent as usize] };
        q.frames.push(KsFrame { extent, mappings, data, clones: 0, passed: false, completion: None, released: false });
        q.queue.push_back(id);
        if self.sg {
            // A frame arriving at a mapping pin makes KS call Process.
            self.process_requested.store(true, SeqCst);
        }
    }

    /// Queues the application's buffers for a run of `budget` frames.
    fn begin_run(&self, budget: u32) {
        let mut q = lock(&self.q);
        q.budget = budget;
        while q.queue.len() < APP_FRAMES && q.budget > 0 {
            q.budget -= 1;
            let n = u32::try_from(q.frames.len()).unwrap_or(0);
            self.queue_frame(&mut q, n);
        }
    }

    fn frame_of(&self, q: &KsQueue, p: Ptr, what: &str) -> Option<usize> {
        let frame = match p {
            Ptr::Leading => q.queue.front().copied(),
            Ptr::Clone(id) => q.clones.get(&id).copied(),
        };
        self.log.check(frame.is_some(), || format!("{what} of a dead stream pointer {p:?}"));
        frame
    }

    /// The leading edge belongs to Process (which holds the processing mutex).
    fn check_leading(&self, what: &str) {
        let owner = *lock(&self.mutex);
        let me = thread::current().id();
        self.log.check(owner == Some(me), || format!("{what}: the leading edge used outside Process"));
        self.log.check(irql() == PASSIVE, || format!("{what} at IRQL {}", irql()));
    }

    /// Hands the frame back when the leading edge passed it and no clone holds it.
    fn maybe_release(&self, q: &mut KsQueue, frame: usize) {
        let Some(f) = q.frames.get_mut(frame) else {
            return;
        };
        if !f.passed || f.clones > 0 || f.released {
            return;
        }
        f.released = true;
        let Some(c) = f.completion else {
            self.log.fail(format!("frame {frame} went back to the application without a completion"));
            return;
        };
        if c.data_used == 0 {
            q.empty += 1;
        } else {
            self.log.check(c.data_used == self.format.image_bytes, || {
                format!("frame {frame} delivered with DataUsed {} (image {})", c.data_used, self.format.image_bytes)
            });
            if !self.sg {
                let want = u32::try_from(c.picture_number).map_or(0, stamp);
                let bad = f.data.iter().position(|&b| b != want);
                self.log.check(bad.is_none(), || {
                    format!("frame {frame} (picture {}): byte {bad:?} is not the slot's {want}", c.picture_number)
                });
            }
            q.good += 1;
        }
        if q.budget > 0 {
            q.budget -= 1;
            let n = u32::try_from(frame).unwrap_or(0);
            self.queue_frame(q, n.wrapping_mul(7));
        }
    }

    fn pass_leading(&self, q: &mut KsQueue) -> Result<(), NtStatus> {
        let Some(frame) = q.queue.pop_front() else {
            q.locked = false;
            return Err(STATUS_DEVICE_NOT_READY);
        };
        if let Some(f) = q.frames.get_mut(frame) {
            f.passed = true;
        }
        q.leading_offset = 0;
        self.maybe_release(q, frame);
        if q.queue.is_empty() {
            q.locked = false;
            return Err(STATUS_DEVICE_NOT_READY);
        }
        Ok(())
    }

    fn live_clones(&self) -> usize {
        lock(&self.q).clones.len()
    }

    /// The mappings of frame `frame` (0 for none).
    fn mappings_of(&self, frame: usize) -> u32 {
        lock(&self.q).frames.get(frame).map_or(0, |f| u32::try_from(f.mappings.len()).unwrap_or(0))
    }

    /// The run's budget spent and every frame ever queued handed back.
    fn drained(&self) -> bool {
        let q = lock(&self.q);
        q.budget == 0 && q.queue.is_empty() && q.frames.iter().all(|f| f.released)
    }

    /// Whether frame `frame` has a live clone (what `ProgramFrame` must be given).
    fn has_clone(&self, frame: usize) -> bool {
        lock(&self.q).frames.get(frame).is_some_and(|f| f.clones > 0 && !f.released)
    }
}

/// The pin's port.
#[derive(Clone)]
struct Port(Arc<Ks>);

impl KsPinPort for Port {
    type StreamPointer = Ptr;

    fn leading_edge(&self) -> Option<Ptr> {
        let ks = &self.0;
        ks.check_leading("KsPinGetLeadingEdgeStreamPointer");
        let mut q = lock(&ks.q);
        ks.log.check(!q.locked, || "leading edge locked twice".into());
        if q.queue.is_empty() {
            return None;
        }
        q.locked = true;
        Some(Ptr::Leading)
    }

    fn clone_pointer(&self, pointer: Ptr) -> Result<Ptr, NtStatus> {
        let ks = &self.0;
        ks.log.check(pointer == Ptr::Leading, || "clone of a clone".into());
        let mut q = lock(&ks.q);
        let frame = ks.frame_of(&q, pointer, "KsStreamPointerClone").ok_or(STATUS_INVALID_PARAMETER)?;
        q.frames[frame].clones += 1;
        let id = q.next_clone;
        q.next_clone += 1;
        q.clones.insert(id, frame);
        drop(q);
        jitter();
        Ok(Ptr::Clone(id))
    }

    fn offset_out(&self, pointer: Ptr) -> StreamOffset {
        let ks = &self.0;
        let empty = StreamOffset { data: core::ptr::null_mut(), mappings: core::ptr::null(), count: 0, remaining: 0 };
        let mut q = lock(&ks.q);
        let Some(frame) = ks.frame_of(&q, pointer, "OffsetOut") else {
            return empty;
        };
        let offset = if pointer == Ptr::Leading { q.leading_offset } else { 0 };
        let f = &mut q.frames[frame];
        let answer = if ks.sg {
            let count = u32::try_from(f.mappings.len()).unwrap_or(0);
            StreamOffset {
                data: core::ptr::null_mut(),
                mappings: f.mappings.as_ptr().wrapping_add(offset as usize),
                count,
                remaining: count.saturating_sub(offset),
            }
        } else {
            StreamOffset {
                data: f.data.as_mut_ptr().wrapping_add(offset as usize),
                mappings: core::ptr::null(),
                count: f.extent,
                remaining: f.extent.saturating_sub(offset),
            }
        };
        drop(q);
        jitter();
        answer
    }

    fn frame_extent(&self, pointer: Ptr) -> u32 {
        let ks = &self.0;
        let q = lock(&ks.q);
        ks.frame_of(&q, pointer, "FrameExtent").map_or(0, |f| q.frames[f].extent)
    }

    fn advance_offsets(&self, pointer: Ptr, out_used: u32, eject: bool) -> Result<(), NtStatus> {
        let ks = &self.0;
        ks.check_leading("KsStreamPointerAdvanceOffsets");
        ks.log.check(pointer == Ptr::Leading, || "advance of a clone".into());
        let mut q = lock(&ks.q);
        ks.log.check(q.locked, || "advance of an unlocked leading edge".into());
        let Some(&frame) = q.queue.front() else {
            return Err(STATUS_DEVICE_NOT_READY);
        };
        let f = &q.frames[frame];
        let count = if ks.sg { u32::try_from(f.mappings.len()).unwrap_or(0) } else { f.extent };
        q.leading_offset += out_used;
        if eject || q.leading_offset >= count {
            return ks.pass_leading(&mut q);
        }
        Ok(())
    }

    fn advance_offsets_and_unlock(&self, pointer: Ptr, out_used: u32, eject: bool) {
        let _ = self.advance_offsets(pointer, out_used, eject);
        lock(&self.0.q).locked = false;
    }

    fn unlock(&self, pointer: Ptr, eject: bool) {
        let ks = &self.0;
        ks.check_leading("KsStreamPointerUnlock");
        ks.log.check(pointer == Ptr::Leading, || "unlock of a clone".into());
        let mut q = lock(&ks.q);
        if eject {
            let _ = ks.pass_leading(&mut q);
        }
        q.locked = false;
    }

    fn complete_frame(&self, pointer: Ptr, completion: &FrameCompletion) {
        let ks = &self.0;
        let mut q = lock(&ks.q);
        let Some(frame) = ks.frame_of(&q, pointer, "complete_frame") else {
            return;
        };
        // Every frame of this test fits the ring and the copy: Process never
        // has a reason to give one back empty.
        ks.log.check(!(pointer == Ptr::Leading && completion.data_used == 0), || {
            format!("Process dropped frame {frame}, which fits (completed empty at the leading edge)")
        });
        let f = &mut q.frames[frame];
        ks.log.check(f.completion.is_none(), || format!("frame {frame} completed twice"));
        ks.log.check(completion.data_used <= f.extent, || format!("frame {frame}: DataUsed beyond FrameExtent"));
        f.completion = Some(*completion);
    }

    fn delete(&self, pointer: Ptr) {
        let ks = &self.0;
        let mut q = lock(&ks.q);
        match pointer {
            Ptr::Leading => q.locked = false,
            Ptr::Clone(id) => {
                let Some(frame) = q.clones.remove(&id) else {
                    ks.log.fail(format!("clone {id} deleted twice (or never made)"));
                    return;
                };
                q.frames[frame].clones -= 1;
                ks.maybe_release(&mut q, frame);
            }
        }
    }

    fn attempt_processing(&self, _asynchronous: bool) {
        self.0.process_requested.store(true, SeqCst);
    }

    fn raise_to_dispatch(&self) -> Irql {
        let old = irql();
        self.0.log.check(old <= DISPATCH, || format!("KeRaiseIrql from {old}"));
        set_irql(DISPATCH);
        old
    }

    fn lower_irql(&self, old: Irql) {
        let now = irql();
        self.0.log.check(now == DISPATCH && old <= now, || format!("KeLowerIrql({old}) at {now}"));
        set_irql(old);
    }

    fn acquire_processing_mutex(&self) {
        let ks = &self.0;
        ks.log.check(irql() == PASSIVE, || "processing mutex above PASSIVE_LEVEL".into());
        while ks.mutex_held.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
            thread::yield_now();
        }
        *lock(&ks.mutex) = Some(thread::current().id());
    }

    fn release_processing_mutex(&self) {
        let ks = &self.0;
        let mut owner = lock(&ks.mutex);
        ks.log.check(*owner == Some(thread::current().id()), || "processing mutex released by another thread".into());
        *owner = None;
        ks.mutex_held.store(false, SeqCst);
    }
}

// ---- the bus ------------------------------------------------------------------

/// S/G: a frame posted whole, or a part of a frame posted in parts, in the ring.
struct Posted {
    tag: u32,
    descriptors: u32,
    /// The frame's bytes posted up to the end of this entry.
    bytes: u32,
    /// It ends its frame (a frame posted whole, or its last part).
    last: bool,
    /// Part of a frame posted in parts.
    parts: bool,
    /// Its `ProgramFramePart` waits until the board completed it.
    racing: bool,
    id: u64,
}

/// The frame posted in parts whose rest is still to come.
#[derive(Clone, Copy)]
struct Open {
    tag: u32,
    frame: usize,
    bytes: u32,
    /// The frame's mapping the next part must start with.
    next: u32,
}

/// The mapping a KS frame's element is (its logical address: frame id
/// `<< 20`, mapping index `<< 12`).
fn element_of(e: &SgElement) -> (usize, u32) {
    (usize::try_from(e.logical_address >> 20).unwrap_or(usize::MAX), ((e.logical_address >> 12) & 0xFF) as u32)
}

#[derive(Default)]
struct BusState {
    running: bool,
    callback: Option<(PfnCompletion, usize)>,
    /// A completion is being delivered (one at a time).
    delivering: bool,
    /// S/G: frames and parts in the ring, oldest first.
    posted: VecDeque<Posted>,
    /// Version 2: the open frame.
    open: Option<Open>,
    /// Frames terminated by `StopChannel`, their `Frame` completions to deliver.
    cancel: VecDeque<u32>,
    next_id: u64,
    /// Version 2: the bus's own perturbations (which parts race their post).
    rng: Option<Rng>,
    /// S/G: tags completed lately (for stale repeats).
    completed: VecDeque<u32>,
    /// CB: slots the board owns (fill order) and the child owns (completion order).
    board: VecDeque<u32>,
    child: VecDeque<u32>,
    line_pitch: u32,
    frame_number: u32,
    stale_sent: u64,
    programmed: u64,
    delivered: u64,
    /// Version 2: `FramePart` completions delivered; of them, delivered
    /// while the part's `ProgramFramePart` had not returned.
    parts_delivered: u64,
    raced: u64,
    /// Version 2: frames in parts the board failed in the middle, and
    /// frames in parts (open or with parts in the ring) a stop terminated.
    board_terminated: u64,
    stop_terminated: u64,
}

impl BusState {
    fn descriptors_used(&self) -> u32 {
        self.posted.iter().map(|p| p.descriptors).sum()
    }
}

/// The bus side of one channel, behind a real interface table.
struct Bus {
    sg: bool,
    /// Interface version 2 with a ring of [`RING_DESCRIPTORS`] entries.
    parts: bool,
    config: DmaConfig,
    ks: Arc<Ks>,
    st: Mutex<BusState>,
    log: Arc<Log>,
    slot_memory: Vec<u8>,
    adapter: u64,
}

impl Bus {
    fn new(sg: bool, parts: bool, ks: Arc<Ks>, log: Arc<Log>) -> Self {
        let config = DmaConfig {
            mode: if sg { 1 } else { 2 },
            reason: 1,
            alignment: 64,
            max_transfer: if sg { 64 * 1024 } else { 0 },
            address_bits: 64,
            slot_count: if sg { 0 } else { SLOTS },
            slot_bytes: if sg { 0 } else { SLOT_BYTES },
            descriptor_count: match (sg, parts) {
                (true, true) => RING_DESCRIPTORS,
                (true, false) => 256,
                _ => 0,
            },
            channel_count: 1,
            max_frame_bytes: if sg { 1 << 20 } else { SLOT_BYTES },
        };
        Self {
            sg,
            parts,
            config,
            ks,
            st: Mutex::new(BusState::default()),
            log,
            slot_memory: vec![0; (SLOTS * SLOT_BYTES) as usize],
            adapter: 0xADA0,
        }
    }

    fn slot_ptr(&self, slot: u32) -> *mut u8 {
        self.slot_memory.as_ptr().cast_mut().wrapping_add((slot * SLOT_BYTES) as usize)
    }

    /// Takes the delivery token (waiting for a delivery in progress) and
    /// makes a completion under the lock; calls the callback without it.
    fn deliver(&self, make: impl FnOnce(&mut BusState) -> Option<Completion>) -> bool {
        let (callback, completion) = {
            let mut st = lock(&self.st);
            if st.delivering {
                return false;
            }
            let Some(callback) = st.callback else {
                return false;
            };
            let Some(completion) = make(&mut st) else {
                return false;
            };
            st.delivering = true;
            st.delivered += 1;
            (callback, completion)
        };
        let old = irql();
        set_irql(DISPATCH);
        // SAFETY: registered by the pin with its (pinned) address, which
        // stays valid until it unregisters; unregistering is refused while
        // `delivering` is set.
        unsafe { call_back((callback.0, callback.1 as *mut c_void), &completion) };
        jitter();
        set_irql(old);
        lock(&self.st).delivering = false;
        true
    }

    /// One DPC: complete the oldest posted frame or part (S/G; now and then
    /// with an error — a part's error terminates its frame —, or a stale
    /// tag again) or fill the next slot (CB).
    fn dpc(&self, rng: &mut Rng) -> bool {
        let (error, stale, stale_part) = (rng.one_in(25), rng.one_in(30), rng.one_in(2));
        self.deliver(|st| {
            if !st.running {
                return None;
            }
            let mut c = Completion {
                channel: 0,
                kind: CompletionKind::Frame as u32,
                tag: 0,
                bytes_written: 0,
                status: if error { STATUS_IO_DEVICE_ERROR } else { STATUS_SUCCESS },
                frame_number: st.frame_number,
                timestamp: 1000,
            };
            st.frame_number = st.frame_number.wrapping_add(1);
            if self.sg {
                if stale && !st.completed.is_empty() && !st.posted.is_empty() {
                    st.stale_sent += 1;
                    c.tag = st.completed[0];
                    c.bytes_written = self.ks.format.image_bytes;
                    c.status = STATUS_SUCCESS;
                    if self.parts && stale_part {
                        c.kind = CompletionKind::FramePart as u32;
                    }
                    return Some(c);
                }
                // The bus retires an entry before it delivers its completion.
                let p = st.posted.pop_front()?;
                c.tag = p.tag;
                if p.racing {
                    st.raced += 1;
                }
                if !p.last {
                    if !error {
                        // A part written: the frame's bytes so far.
                        st.parts_delivered += 1;
                        c.kind = CompletionKind::FramePart as u32;
                        c.bytes_written = p.bytes;
                        return Some(c);
                    }
                    // The board failed the frame in the middle: the bus
                    // terminates it (its other parts leave the ring, the
                    // open frame closes), one failed `Frame` completion.
                    st.posted.retain(|q| q.tag != p.tag);
                    if st.open.is_some_and(|o| o.tag == p.tag) {
                        st.open = None;
                    }
                    st.board_terminated += 1;
                }
                st.completed.push_back(p.tag);
                if st.completed.len() > 8 {
                    st.completed.pop_front();
                }
                c.bytes_written = if error { 0 } else { p.bytes };
            } else {
                let slot = st.board.pop_front()?;
                // The board writes the slot: every byte of the frame's lines.
                let bytes = st.line_pitch * HEIGHT;
                // SAFETY: the slot lies in `slot_memory` (`slot < SLOTS`,
                // `bytes <= SLOT_BYTES`); the board owns it (nobody reads it).
                unsafe { core::ptr::write_bytes(self.slot_ptr(slot), stamp(c.frame_number), bytes as usize) };
                st.child.push_back(slot);
                c.kind = CompletionKind::Slot as u32;
                c.tag = slot;
                c.bytes_written = bytes;
            }
            Some(c)
        })
    }
}

impl FakeChannel for Bus {
    fn dma_config(&self) -> DmaConfig {
        self.config
    }

    fn dma_adapter(&self) -> Result<(*mut c_void, u32, u32), NtStatus> {
        if !self.sg {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        Ok((core::ptr::from_ref(&self.adapter).cast_mut().cast(), 64 * 1024, 16))
    }

    fn program_frame(&self, tag: u32, elements: &[SgElement]) -> NtStatus {
        self.log.check(irql() <= DISPATCH, || "ProgramFrame above DISPATCH_LEVEL".into());
        let Some(first) = elements.first() else {
            return STATUS_INVALID_PARAMETER;
        };
        let (frame, _) = element_of(first);
        self.log.check(self.ks.has_clone(frame), || format!("ProgramFrame({tag}) of frame {frame}, which no live clone holds"));
        let count = u32::try_from(elements.len()).unwrap_or(u32::MAX);
        let whole = elements.iter().map(element_of).eq((0..count).map(|i| (frame, i)));
        self.log.check(whole, || format!("ProgramFrame({tag}) of frame {frame}: not its mappings from the first"));
        let status = {
            let mut st = lock(&self.st);
            if !st.running {
                STATUS_DEVICE_NOT_READY
            } else if let Some(open) = st.open {
                self.log.fail(format!("ProgramFrame({tag}) while frame {} (tag {}) is open", open.frame, open.tag));
                STATUS_INVALID_DEVICE_STATE
            } else if (!self.parts && st.posted.len() >= RING_FRAMES)
                || st.descriptors_used() + count > self.config.descriptor_count
            {
                STATUS_DEVICE_BUSY
            } else {
                self.log.check(st.posted.iter().all(|p| p.tag != tag), || format!("tag {tag} posted twice"));
                let id = st.next_id;
                st.next_id += 1;
                let bytes = elements.iter().map(|e| e.byte_count).sum();
                st.posted.push_back(Posted { tag, descriptors: count, bytes, last: true, parts: false, racing: false, id });
                st.programmed += 1;
                STATUS_SUCCESS
            }
        };
        jitter();
        status
    }

    fn interface_version(&self) -> u16 {
        if self.parts { 2 } else { 1 }
    }

    /// As the contract says: as many elements as the ring has free entries
    /// for; a `START` part only with no frame open, a later part only of
    /// the open frame (else `STATUS_INVALID_DEVICE_STATE`: the frame may
    /// have been terminated since the child read it as open). A racing part
    /// is completed by the board before this returns.
    fn program_frame_part(&self, tag: u32, elements: &[SgElement], flags: u32) -> (NtStatus, u32) {
        self.log.check(irql() <= DISPATCH, || "ProgramFramePart above DISPATCH_LEVEL".into());
        let Some((frame, first)) = elements.first().map(element_of) else {
            self.log.fail(format!("ProgramFramePart({tag}) without elements"));
            return (STATUS_INVALID_PARAMETER, 0);
        };
        let start = flags & CAPDMA_PART_START != 0;
        self.log.check(flags & CAPDMA_PART_END != 0 && flags & !(CAPDMA_PART_START | CAPDMA_PART_END) == 0, || {
            format!("ProgramFramePart({tag}) flags {flags:#x}: every part offers the frame's end")
        });
        let count = u32::try_from(elements.len()).unwrap_or(u32::MAX);
        let contiguous = elements.iter().map(element_of).eq((first..first + count).map(|i| (frame, i)));
        let all = self.ks.mappings_of(frame);
        self.log.check(contiguous && first + count == all, || {
            format!("ProgramFramePart({tag}): mappings {first}.. ({count}) of frame {frame}, which has {all}")
        });
        let held = self.ks.has_clone(frame);
        let (status, accepted, id) = {
            let mut st = lock(&self.st);
            let before = if !st.running {
                Err(STATUS_DEVICE_NOT_READY)
            } else if start {
                if let Some(open) = st.open {
                    self.log.fail(format!("ProgramFramePart({tag}, START) while frame {} (tag {}) is open", open.frame, open.tag));
                    Err(STATUS_INVALID_DEVICE_STATE)
                } else {
                    self.log.check(first == 0, || format!("ProgramFramePart({tag}, START) from mapping {first}"));
                    self.log.check(st.posted.iter().all(|p| p.tag != tag), || format!("tag {tag} posted twice"));
                    Ok(0)
                }
            } else {
                match st.open {
                    None => Err(STATUS_INVALID_DEVICE_STATE),
                    Some(open) if open.tag != tag => {
                        self.log.fail(format!("ProgramFramePart({tag}) while tag {} is open", open.tag));
                        Err(STATUS_INVALID_PARAMETER)
                    }
                    Some(open) => {
                        self.log.check(open.frame == frame && open.next == first, || {
                            format!("ProgramFramePart({tag}): frame {frame} from mapping {first}, the open frame is {} at {}", open.frame, open.next)
                        });
                        Ok(open.bytes)
                    }
                }
            };
            let free = self.config.descriptor_count.saturating_sub(st.descriptors_used());
            match before {
                Err(status) => (status, 0, None),
                Ok(_) if free == 0 => (STATUS_DEVICE_BUSY, 0, None),
                Ok(before) => {
                    self.log.check(held, || format!("ProgramFramePart({tag}) of frame {frame}, which no live clone holds"));
                    let accepted = free.min(count);
                    let bytes = before + elements.iter().take(accepted as usize).map(|e| e.byte_count).sum::<u32>();
                    let last = accepted == count;
                    let racing = st.rng.as_mut().is_some_and(|r| r.one_in(3));
                    let id = st.next_id;
                    st.next_id += 1;
                    st.posted.push_back(Posted { tag, descriptors: accepted, bytes, last, parts: true, racing, id });
                    st.open = (!last).then_some(Open { tag, frame, bytes, next: first + accepted });
                    if start {
                        st.programmed += 1;
                    }
                    (STATUS_SUCCESS, accepted, racing.then_some(id))
                }
            }
        };
        // The board (another processor) writes the part and its completion
        // runs before this call returns.
        if let Some(id) = id {
            loop {
                let st = lock(&self.st);
                if !st.running || st.posted.iter().all(|p| p.id != id) {
                    break;
                }
                drop(st);
                thread::yield_now();
            }
        }
        jitter();
        (status, accepted)
    }

    fn slot_ring(&self) -> Result<SlotRing, NtStatus> {
        if self.sg {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        let line_pitch = lock(&self.st).line_pitch;
        Ok(SlotRing {
            base: self.slot_ptr(0),
            base_logical: 0x8000_0000,
            slot_count: SLOTS,
            slot_stride: SLOT_BYTES,
            slot_bytes: SLOT_BYTES,
            line_pitch,
        })
    }

    fn return_slot(&self, slot: u32) -> NtStatus {
        let mut st = lock(&self.st);
        if st.child.front() != Some(&slot) {
            self.log.fail(format!("ReturnSlot({slot}): the child's oldest slot is {:?}", st.child.front()));
            return STATUS_INVALID_PARAMETER;
        }
        st.child.pop_front();
        if st.running {
            st.board.push_back(slot);
        }
        drop(st);
        jitter();
        STATUS_SUCCESS
    }

    fn start_channel(&self, format: ChannelFormat) -> NtStatus {
        self.log.check(irql() == PASSIVE, || "StartChannel above PASSIVE_LEVEL".into());
        let mut st = lock(&self.st);
        if st.running {
            return STATUS_DEVICE_BUSY;
        }
        self.log.check(st.child.is_empty(), || format!("StartChannel while the child holds slots {:?}", st.child));
        st.child.clear();
        st.board = (0..if self.sg { 0 } else { SLOTS }).collect();
        st.line_pitch = (format.width * 2).next_multiple_of(256);
        st.running = true;
        STATUS_SUCCESS
    }

    fn stop_channel(&self) -> NtStatus {
        self.log.check(irql() == PASSIVE, || "StopChannel above PASSIVE_LEVEL".into());
        {
            // The ring stops: every frame in it, and the open frame, is
            // terminated: one `Frame` completion each, none for parts.
            let mut st = lock(&self.st);
            st.running = false;
            let mut tags: Vec<(u32, bool)> = Vec::new();
            for p in &st.posted {
                if tags.iter().all(|&(t, _)| t != p.tag) {
                    tags.push((p.tag, p.parts));
                }
            }
            if let Some(open) = st.open.take() {
                if tags.iter().all(|&(t, _)| t != open.tag) {
                    tags.push((open.tag, true));
                }
            }
            st.posted.clear();
            st.stop_terminated += tags.iter().filter(|&&(_, parts)| parts).count() as u64;
            st.cancel.extend(tags.iter().map(|&(t, _)| t));
        }
        // Every terminated frame completed (cancelled) through the callback,
        // one at a time, and no delivery left in progress, before returning.
        loop {
            let more = {
                let st = lock(&self.st);
                st.delivering || !st.cancel.is_empty()
            };
            if !more {
                break;
            }
            self.deliver(|st| {
                let tag = st.cancel.pop_front()?;
                Some(Completion {
                    channel: 0,
                    kind: CompletionKind::Frame as u32,
                    tag,
                    bytes_written: 0,
                    status: STATUS_CANCELLED,
                    frame_number: 0,
                    timestamp: 0,
                })
            });
            thread::yield_now();
        }
        lock(&self.st).board.clear();
        STATUS_SUCCESS
    }

    fn register_completion(&self, callback: Option<(PfnCompletion, *mut c_void)>) -> NtStatus {
        let mut st = lock(&self.st);
        if st.running || (st.delivering && st.callback.is_some()) {
            return STATUS_DEVICE_BUSY;
        }
        st.callback = callback.map(|(f, context)| (f, context as usize));
        STATUS_SUCCESS
    }
}

// ---- the machine --------------------------------------------------------------

struct World {
    ks: Arc<Ks>,
    /// Boxed: the interface table's context is its address.
    bus: Box<Bus>,
    pin: Pin<Box<CapturePin<Port>>>,
    log: Arc<Log>,
    done: AtomicBool,
    processes: AtomicU64,
}

impl World {
    /// `parts`: S/G on the version-2 bus with its small descriptor ring.
    fn new(sg: bool, parts: bool, seed: u64) -> Arc<Self> {
        let log = Arc::new(Log::default());
        let format = yuy2(WIDTH, HEIGHT);
        let ks = Arc::new(Ks::new(sg, parts, format, log.clone()));
        let bus = Box::new(Bus::new(sg, parts, ks.clone(), log.clone()));
        lock(&bus.st).rng = Some(Rng::new(seed ^ 0x800));
        // SAFETY: the table's context is the boxed bus, which the world keeps
        // (and does not move) while the pin and every thread use it.
        let client = unsafe { BusClient::from_query(&bus.table(), 0) }.expect("bus answer");
        let setup = device_start(&client).expect("device start");
        let pin = Box::pin(CapturePin::new(Port(ks.clone()), client.channel(), &setup, VectorUnit::Scalar));
        assert_eq!(pin.set_data_format(build_data_format(&format).as_bytes()), Ok(format));
        Arc::new(Self { ks, bus, pin, log, done: AtomicBool::new(false), processes: AtomicU64::new(0) })
    }
}

/// KS calling Process: when asked (or, S/G, when a frame arrived), in
/// `KSSTATE_RUN` only, under the processing mutex.
fn process_thread(w: &World, seed: u64) {
    let mut rng = Rng::new(seed);
    while !w.done.load(SeqCst) {
        if !w.ks.process_requested.swap(false, SeqCst) || w.pin.state() != KsState::Run {
            thread::yield_now();
            continue;
        }
        let port = w.pin.port();
        port.acquire_processing_mutex();
        if w.pin.state() == KsState::Run {
            let _ = w.pin.process();
            w.processes.fetch_add(1, SeqCst);
        }
        rng.jitter();
        port.release_processing_mutex();
        rng.jitter();
    }
}

/// The bus DPC: completions, one at a time.
fn dpc_thread(w: &World, seed: u64) {
    let mut rng = Rng::new(seed);
    while !w.done.load(SeqCst) {
        // The board takes its time: frames stay in flight for a while.
        if !rng.one_in(4) || !w.bus.dpc(&mut rng) {
            thread::yield_now();
        }
        rng.jitter();
    }
}

/// KS state changes: `cycles` × STOP -> RUN (-> PAUSE -> RUN) -> STOP.
/// S/G: every fourth cycle stops as soon as frames are in the ring.
/// With the version-2 bus, every third cycle and the last one first wait
/// until every frame queued was handed back (a lost wake-up of Process
/// hangs there, and the watchdog fails the test).
fn state_thread(w: &World, seed: u64, cycles: u32) {
    let mut rng = Rng::new(seed);
    for cycle in 0..cycles {
        if w.log.failed() {
            break;
        }
        w.ks.begin_run(10 + rng.below(30));
        let status = w.pin.as_ref().set_state(KsState::Run);
        w.log.check(status == STATUS_SUCCESS, || format!("cycle {cycle}: STOP -> RUN: {status:#x}"));
        // S/G, every fourth cycle: stop as soon as frames are in the ring
        // (a fast board may finish a run's frames before a later stop).
        let early = w.bus.sg && cycle % 4 == 1;
        while early && lock(&w.bus.st).posted.is_empty() && !w.ks.drained() && !w.log.failed() {
            thread::yield_now();
        }
        for _ in 0..if early { 0 } else { 2 } {
            for _ in 0..rng.below(600) {
                rng.jitter();
                thread::yield_now();
            }
            if rng.one_in(2) {
                break;
            }
            // RUN -> PAUSE -> RUN with frames in flight.
            let status = w.pin.as_ref().set_state(KsState::Pause);
            w.log.check(status == STATUS_SUCCESS, || format!("cycle {cycle}: RUN -> PAUSE: {status:#x}"));
            let status = w.pin.as_ref().set_state(KsState::Run);
            w.log.check(status == STATUS_SUCCESS, || format!("cycle {cycle}: PAUSE -> RUN: {status:#x}"));
        }
        if w.bus.parts && !early && (cycle % 3 == 0 || cycle + 1 == cycles) {
            while !w.ks.drained() && !w.log.failed() {
                check_bad_completions(w, cycle);
                thread::yield_now();
            }
        }
        let status = w.pin.as_ref().set_state(KsState::Stop);
        w.log.check(status == STATUS_SUCCESS, || format!("cycle {cycle}: RUN -> STOP: {status:#x}"));
        // KSSTATE_STOP: nothing of the pin's left anywhere.
        let clones = w.ks.live_clones();
        w.log.check(clones == 0, || format!("cycle {cycle}: {clones} clone(s) alive at KSSTATE_STOP"));
        check_bad_completions(w, cycle);
        let st = lock(&w.bus.st);
        w.log.check(st.callback.is_none(), || format!("cycle {cycle}: still registered at KSSTATE_STOP"));
        w.log.check(st.posted.is_empty() && st.open.is_none(), || format!("cycle {cycle}: frames posted at KSSTATE_STOP"));
        w.log.check(st.child.is_empty(), || format!("cycle {cycle}: slots {:?} kept at KSSTATE_STOP", st.child));
        w.log.check(!w.pin.has_queued_slots(), || format!("cycle {cycle}: filled slots queued at KSSTATE_STOP"));
    }
}

/// Only the bus's stale repeats are bad completions: at any moment no more
/// than it sent (it counts one before delivering it).
fn check_bad_completions(w: &World, cycle: u32) {
    let bad = w.pin.stats().bad_completions;
    let stale = lock(&w.bus.st).stale_sent;
    w.log.check(if w.bus.sg { bad <= stale } else { bad == 0 }, || {
        format!("cycle {cycle}: {bad} bad completion(s), {stale} stale repeat(s) sent")
    });
}

fn run(sg: bool, parts: bool, seed: u64, cycles: u32) {
    let w = World::new(sg, parts, seed);
    let dog = Watchdog::default();
    let mut handles = Vec::new();
    {
        let w = w.clone();
        handles.push(dog.spawn("process", move || process_thread(&w, seed ^ 0x100)));
    }
    {
        let w = w.clone();
        handles.push(dog.spawn("dpc", move || dpc_thread(&w, seed ^ 0x200)));
    }
    {
        let w = w.clone();
        handles.push(dog.spawn("state", move || {
            state_thread(&w, seed ^ 0x400, cycles);
            w.done.store(true, SeqCst);
        }));
    }
    dog.wait(handles.len(), format_args!("seed {seed:#x}: threads"), &w.log);
    join_all(handles);
    let what = format!("{} seed {seed:#x}", if parts { "S/G in parts" } else if sg { "S/G" } else { "CB" });
    w.log.assert_clean(&what);
    let stats = w.pin.stats();
    let st = lock(&w.bus.st);
    let q = lock(&w.ks.q);
    assert_eq!(q.clones.len(), 0, "{what}: clones left");
    assert!(q.good > 0, "{what}: no frame delivered: the run exercised nothing");
    assert!(w.processes.load(SeqCst) > 0);
    if sg {
        assert_eq!(stats.frames_programmed, st.programmed, "{what}: {stats:?}");
        // Every posted frame came back exactly once (one `Frame` completion,
        // clone deleted once; parts apart); each stale repeat was counted
        // and ignored, and nothing else was bad.
        assert_eq!(st.delivered - st.stale_sent - st.parts_delivered, st.programmed, "{what}: completions vs posts");
        assert_eq!(stats.bad_completions, st.stale_sent, "{what}: {stats:?}");
        assert!(stats.frames_cancelled > 0, "{what}: no frame was in flight at a stop: {stats:?}");
    } else {
        assert_eq!(stats.bad_completions, 0, "{what}: {stats:?}");
        assert_eq!(stats.slot_return_failures, 0, "{what}: {stats:?}");
    }
    assert_eq!(stats.frames_completed, q.good, "{what}: {stats:?}");
    if parts {
        // The last cycle drained: every frame the application queued came
        // back (released once, with one completion: checked as it went).
        assert!(q.queue.is_empty() && q.frames.iter().all(|f| f.released), "{what}: frames not handed back");
        assert_eq!(stats.frame_part_completions, st.parts_delivered, "{what}: {stats:?}");
        // A later part refused because the board terminated its frame just
        // before (the Frame completion not yet seen) counts as a part error.
        assert!(stats.frame_part_errors <= st.board_terminated, "{what}: {stats:?}");
        // What the run was for happened.
        assert!(stats.frame_parts_posted > stats.frames_programmed, "{what}: frames not posted in parts: {stats:?}");
        assert!(st.raced > 0, "{what}: no completion raced its ProgramFramePart");
        assert!(st.stop_terminated > 0, "{what}: no stop terminated a frame in parts");
        assert!(st.board_terminated > 0, "{what}: the board never failed a frame in parts");
    }
}

const SEEDS: [u64; 3] = [0xA5_0001, 0xA5_0002, 0xA5_0003];

#[test]
fn scatter_gather_pin_under_concurrent_completions_process_and_state_changes() {
    for seed in SEEDS {
        run(true, false, seed, 40);
    }
}

#[test]
fn scatter_gather_pin_posting_frames_in_parts_under_concurrent_completions_process_and_stops() {
    for seed in SEEDS {
        run(true, true, seed, 40);
    }
}

#[test]
fn common_buffer_pin_under_concurrent_completions_process_and_state_changes() {
    for seed in SEEDS {
        run(false, false, seed, 40);
    }
}
