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
    STATUS_INVALID_PARAMETER, STATUS_IO_DEVICE_ERROR, STATUS_SUCCESS,
};
use capdma_interface::table::{
    ChannelFormat, Completion, CompletionKind, DmaConfig, PfnCompletion, SgElement, SlotRing,
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
    format: VideoFormat,
    q: Mutex<KsQueue>,
    log: Arc<Log>,
    process_requested: AtomicBool,
    /// The processing mutex (`KsPinAcquireProcessingMutex`).
    mutex: Mutex<Option<ThreadId>>,
    mutex_held: AtomicBool,
}

impl Ks {
    fn new(sg: bool, format: VideoFormat, log: Arc<Log>) -> Self {
        Self {
            sg,
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
            let pieces = 1 + rng_pieces % 4;
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

#[derive(Default)]
struct BusState {
    running: bool,
    callback: Option<(PfnCompletion, usize)>,
    /// A completion is being delivered (one at a time).
    delivering: bool,
    /// S/G: posted frames (tag, frame id).
    posted: VecDeque<(u32, usize)>,
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
}

/// The bus side of one channel, behind a real interface table.
struct Bus {
    sg: bool,
    config: DmaConfig,
    ks: Arc<Ks>,
    st: Mutex<BusState>,
    log: Arc<Log>,
    slot_memory: Vec<u8>,
    adapter: u64,
}

impl Bus {
    fn new(sg: bool, ks: Arc<Ks>, log: Arc<Log>) -> Self {
        let config = DmaConfig {
            mode: if sg { 1 } else { 2 },
            reason: 1,
            alignment: 64,
            max_transfer: if sg { 64 * 1024 } else { 0 },
            address_bits: 64,
            slot_count: if sg { 0 } else { SLOTS },
            slot_bytes: if sg { 0 } else { SLOT_BYTES },
            descriptor_count: if sg { 256 } else { 0 },
            channel_count: 1,
            max_frame_bytes: if sg { 1 << 20 } else { SLOT_BYTES },
        };
        Self {
            sg,
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

    /// One DPC: complete the oldest posted frame (S/G; now and then with an
    /// error, or a stale tag again) or fill the next slot (CB).
    fn dpc(&self, rng: &mut Rng) -> bool {
        let (error, stale) = (rng.one_in(25), rng.one_in(30));
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
                    return Some(c);
                }
                let (tag, _) = st.posted.pop_front()?;
                st.completed.push_back(tag);
                if st.completed.len() > 8 {
                    st.completed.pop_front();
                }
                c.tag = tag;
                c.bytes_written = if error { 0 } else { self.ks.format.image_bytes };
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
        let frame = usize::try_from(first.logical_address >> 20).unwrap_or(usize::MAX);
        self.log.check(self.ks.has_clone(frame), || format!("ProgramFrame({tag}) of frame {frame}, which no live clone holds"));
        let status = {
            let mut st = lock(&self.st);
            if !st.running {
                STATUS_DEVICE_NOT_READY
            } else if st.posted.len() >= RING_FRAMES {
                STATUS_DEVICE_BUSY
            } else {
                self.log.check(st.posted.iter().all(|&(t, _)| t != tag), || format!("tag {tag} posted twice"));
                st.posted.push_back((tag, frame));
                st.programmed += 1;
                STATUS_SUCCESS
            }
        };
        jitter();
        status
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
        lock(&self.st).running = false;
        // Every posted frame completed (cancelled) through the callback, one at
        // a time, and no delivery left in progress, before returning.
        loop {
            let more = {
                let st = lock(&self.st);
                st.delivering || !st.posted.is_empty()
            };
            if !more {
                break;
            }
            self.deliver(|st| {
                let (tag, _) = st.posted.pop_front()?;
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
    fn new(sg: bool) -> Arc<Self> {
        let log = Arc::new(Log::default());
        let format = yuy2(WIDTH, HEIGHT);
        let ks = Arc::new(Ks::new(sg, format, log.clone()));
        let bus = Box::new(Bus::new(sg, ks.clone(), log.clone()));
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
fn state_thread(w: &World, seed: u64, cycles: u32) {
    let mut rng = Rng::new(seed);
    for cycle in 0..cycles {
        if w.log.failed() {
            break;
        }
        w.ks.begin_run(10 + rng.below(30));
        let status = w.pin.as_ref().set_state(KsState::Run);
        w.log.check(status == STATUS_SUCCESS, || format!("cycle {cycle}: STOP -> RUN: {status:#x}"));
        for _ in 0..2 {
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
        let status = w.pin.as_ref().set_state(KsState::Stop);
        w.log.check(status == STATUS_SUCCESS, || format!("cycle {cycle}: RUN -> STOP: {status:#x}"));
        // KSSTATE_STOP: nothing of the pin's left anywhere.
        let clones = w.ks.live_clones();
        w.log.check(clones == 0, || format!("cycle {cycle}: {clones} clone(s) alive at KSSTATE_STOP"));
        let st = lock(&w.bus.st);
        w.log.check(st.callback.is_none(), || format!("cycle {cycle}: still registered at KSSTATE_STOP"));
        w.log.check(st.posted.is_empty(), || format!("cycle {cycle}: frames posted at KSSTATE_STOP"));
        w.log.check(st.child.is_empty(), || format!("cycle {cycle}: slots {:?} kept at KSSTATE_STOP", st.child));
        w.log.check(!w.pin.has_queued_slots(), || format!("cycle {cycle}: filled slots queued at KSSTATE_STOP"));
    }
}

fn run(sg: bool, seed: u64, cycles: u32) {
    let w = World::new(sg);
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
    let what = format!("{} seed {seed:#x}", if sg { "S/G" } else { "CB" });
    w.log.assert_clean(&what);
    let stats = w.pin.stats();
    let st = lock(&w.bus.st);
    let q = lock(&w.ks.q);
    assert_eq!(q.clones.len(), 0, "{what}: clones left");
    assert!(q.good > 0, "{what}: no frame delivered: the run exercised nothing");
    assert!(w.processes.load(SeqCst) > 0);
    if sg {
        assert_eq!(stats.frames_programmed, st.programmed, "{what}: {stats:?}");
        // Every posted frame came back exactly once (clone deleted once);
        // each stale repeat was counted and ignored.
        assert_eq!(st.delivered - st.stale_sent, st.programmed, "{what}: completions vs posts");
        assert_eq!(stats.bad_completions, st.stale_sent, "{what}: {stats:?}");
        assert!(stats.frames_cancelled > 0, "{what}: no frame was in flight at a stop: {stats:?}");
    } else {
        assert_eq!(stats.bad_completions, 0, "{what}: {stats:?}");
        assert_eq!(stats.slot_return_failures, 0, "{what}: {stats:?}");
    }
    assert_eq!(stats.frames_completed, q.good, "{what}: {stats:?}");
}

const SEEDS: [u64; 3] = [0xA5_0001, 0xA5_0002, 0xA5_0003];

#[test]
fn scatter_gather_pin_under_concurrent_completions_process_and_state_changes() {
    for seed in SEEDS {
        run(true, seed, 40);
    }
}

#[test]
fn common_buffer_pin_under_concurrent_completions_process_and_state_changes() {
    for seed in SEEDS {
        run(false, seed, 40);
    }
}
