//! [`SimKsPin`]: the simulated `KSPIN`, implementing the AVStream core's
//! [`KsPinPort`].
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use capdma_avstream::ports::{FrameCompletion, Irql, KsPinPort, StreamOffset};
use capdma_interface::status::{NtStatus, STATUS_DEVICE_NOT_READY, STATUS_INVALID_PARAMETER};

use super::queue::{Frame, Position, Queue};
use super::mapping::MappingSource;
use crate::dma::adapter::{split_mappings, ScatterGatherList};
use crate::irql::IrqlTracker;
use crate::memory::PAGE_SIZE;
use crate::violations::{ViolationKind, Violations};

/// A stream pointer handle: `0` is the leading edge, others are clones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamPointerHandle(u32);

const LEADING_EDGE: StreamPointerHandle = StreamPointerHandle(0);

/// Mapping mode: the adapter registered with `KsDeviceRegisterAdapterObject`.
#[derive(Clone)]
pub struct SimMapping {
    /// The bus's adapter (found from the raw `PDMA_ADAPTER` the child
    /// registered: [`MappingSource::from_raw`]).
    pub adapter: MappingSource,
    /// `MaxMappingByteCount`, bytes.
    pub max_mapping_byte_count: u32,
}

/// The pin descriptor flags the model honours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinFlags {
    /// `KSPIN_FLAG_GENERATE_MAPPINGS` (needs a [`SimMapping`]).
    pub generate_mappings: bool,
    /// `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING`.
    pub do_not_initiate_processing: bool,
    /// Frames go back to the application as soon as nothing references
    /// them and the leading edge is past them, even before earlier frames
    /// still held: AVStream's behaviour without `KSPIN_FLAG_ENFORCE_FIFO`
    /// (the emulated `ks.sys` sets it so). `false`: strictly in queue order.
    pub complete_out_of_order: bool,
}

/// What a stream pointer stands on ([`SimKsPin::view`]).
#[derive(Clone, Copy, Debug)]
pub struct PointerView<'a> {
    /// The application's buffer identifier.
    pub buffer_id: u64,
    /// The frame's sequence number in the queue (arrival order).
    pub seq: u64,
    /// Bytes (byte mode) or mappings (mapping mode) advanced over.
    pub offset: u32,
    /// `FrameExtent`, bytes.
    pub bytes: u32,
    /// Mapping mode: the frame's `KSMAPPING`s (empty in byte mode).
    pub mappings: &'a [capdma_interface::table::SgElement],
    /// The pin generates mappings (`OffsetOut` counts mappings).
    pub generate_mappings: bool,
}

/// A frame handed back to the application (its read IRP completed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletedFrame {
    /// The application's buffer identifier given to [`SimKsPin::submit`].
    pub buffer_id: u64,
    /// What the minidriver wrote (`None`: completed untouched, `DataUsed` 0).
    pub completion: Option<FrameCompletion>,
    /// Mapping mode: the `KSMAPPING`s generated for the frame.
    pub mappings: u32,
    /// Cancelled by a transition to `KSSTATE_STOP` rather than filled.
    pub cancelled: bool,
}

/// Counters of the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KsStats {
    /// Frames submitted by the application.
    pub submitted: u64,
    /// Frames completed back to the application (filled or not).
    pub completed: u64,
    /// Clones made.
    pub clones: u64,
    /// Mappings generated.
    pub mappings: u64,
    /// Times a frame could not be mapped for want of map registers.
    pub map_waits: u64,
    /// Scatter/gather lists built (`GetScatterGatherList` calls that
    /// succeeded): one per frame, more when frames exceed the adapter's
    /// map-register grant.
    pub sg_lists: u64,
    /// `KsPinAttemptProcessing` calls.
    pub attempts: u64,
}

struct PinState {
    queue: Queue,
    flags: PinFlags,
    mapping: Option<SimMapping>,
    running: bool,
    process_requested: bool,
    waiting_for_map_registers: bool,
    completed: VecDeque<CompletedFrame>,
    stats: KsStats,
}

/// Completes `frame` to the application; its S/G list (mapping mode) goes
/// to `lists`, to be put once the pin's state is no longer borrowed.
fn hand_back(s: &mut PinState, mut frame: Frame, cancelled: bool, lists: &mut Vec<ScatterGatherList>) {
    lists.append(&mut frame.sg);
    s.completed.push_back(CompletedFrame {
        buffer_id: frame.buffer_id,
        completion: frame.completion,
        mappings: u32::try_from(frame.mappings.len()).unwrap_or(u32::MAX),
        cancelled,
    });
    s.stats.completed += 1;
}

/// The simulated capture pin. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct SimKsPin {
    state: Rc<RefCell<PinState>>,
    irql: IrqlTracker,
    violations: Violations,
}

impl SimKsPin {
    /// A pin created with `flags`; `mapping` is required for
    /// `generate_mappings` (a violation otherwise).
    #[must_use]
    pub fn new(flags: PinFlags, mapping: Option<SimMapping>, irql: IrqlTracker, violations: Violations) -> Self {
        if flags.generate_mappings && mapping.is_none() {
            violations.push(ViolationKind::Ks, "KSPIN_FLAG_GENERATE_MAPPINGS without KsDeviceRegisterAdapterObject");
        }
        Self {
            state: Rc::new(RefCell::new(PinState {
                queue: Queue::default(),
                flags,
                mapping,
                running: false,
                process_requested: false,
                waiting_for_map_registers: false,
                completed: VecDeque::new(),
                stats: KsStats::default(),
            })),
            irql,
            violations,
        }
    }

    /// The application queues a buffer of `bytes` bytes at system VA `va`
    /// (the model does not own the memory; it must stay valid until the
    /// frame comes back from [`SimKsPin::take_completed`]).
    pub fn submit(&self, buffer_id: u64, va: *mut u8, bytes: u32) {
        let mut s = self.state.borrow_mut();
        let leading = s.queue.leading.seq;
        let nothing_ahead = !s.queue.frames.iter().any(|f| f.seq >= leading);
        let seq = s.queue.next_seq;
        s.queue.next_seq += 1;
        s.queue.frames.push_back(Frame {
            seq,
            buffer_id,
            va,
            bytes,
            clones: 0,
            passed: false,
            sg: Vec::new(),
            mappings: Vec::new(),
            completion: None,
        });
        s.stats.submitted += 1;
        // AVStream's trigger: a frame landing with nothing at or ahead of
        // the leading edge (a queue that had run dry) starts processing.
        if s.running && !s.flags.do_not_initiate_processing && nothing_ahead {
            s.process_requested = true;
        }
    }

    /// What `Process` returned, as AVStream takes it: after `STATUS_SUCCESS`
    /// it calls again while a frame is at or ahead of the leading edge (and
    /// available: not waiting for map registers); after `STATUS_PENDING` or
    /// an error only the minidriver's `KsPinAttemptProcessing` restarts it.
    pub fn process_returned(&self, status: NtStatus) {
        let mut s = self.state.borrow_mut();
        let leading = s.queue.leading.seq;
        let ahead = s.queue.frames.iter().any(|f| f.seq >= leading);
        if status == capdma_interface::status::STATUS_SUCCESS && s.running && ahead && !s.waiting_for_map_registers {
            s.process_requested = true;
        }
    }

    /// KS's view of the pin state: `true` in `KSSTATE_RUN` (frames arriving
    /// then start processing unless `DO_NOT_INITIATE_PROCESSING`).
    pub fn set_running(&self, running: bool) {
        let mut s = self.state.borrow_mut();
        s.running = running;
        if running && !s.flags.do_not_initiate_processing {
            s.process_requested = true;
        }
    }

    /// The frame at the leading edge could not be mapped for want of map
    /// registers (mapping mode) and has not been mapped since: until it is,
    /// no frame is available to `Process`.
    #[must_use]
    pub fn waiting_for_map_registers(&self) -> bool {
        self.state.borrow().waiting_for_map_registers
    }

    /// Takes (and clears) a pending request for a `Process` call.
    #[must_use] 
    pub fn take_process_request(&self) -> bool {
        std::mem::take(&mut self.state.borrow_mut().process_requested)
    }

    /// The next frame completed back to the application, in queue order.
    #[must_use] 
    pub fn take_completed(&self) -> Option<CompletedFrame> {
        self.state.borrow_mut().completed.pop_front()
    }

    /// Transition to `KSSTATE_STOP`: KS completes every queued frame the
    /// minidriver no longer references, cancelled. A frame still referenced
    /// by a clone is a violation (the minidriver must release its clones
    /// when it leaves `KSSTATE_RUN`).
    pub fn flush_on_stop(&self) {
        let mut lists = Vec::new();
        {
            let mut s = self.state.borrow_mut();
            s.running = false;
            if !s.queue.clones.is_empty() {
                self.violations.push(ViolationKind::Ks, format!("{} stream pointer clone(s) alive at KSSTATE_STOP", s.queue.clones.len()));
            }
            s.queue.clones.clear();
            s.queue.leading_locked = false;
            while let Some(frame) = s.queue.frames.pop_front() {
                let cancelled = frame.completion.is_none();
                hand_back(&mut s, frame, cancelled, &mut lists);
            }
            s.queue.leading = Position { seq: s.queue.next_seq, offset: 0 };
        }
        self.put_lists(lists);
    }

    /// Clones not yet deleted (a leak at teardown).
    #[must_use]
    pub fn live_clones(&self) -> usize {
        self.state.borrow().queue.clones.len()
    }

    /// Frames queued (submitted, not completed).
    #[must_use]
    pub fn queued_frames(&self) -> usize {
        self.state.borrow().queue.frames.len()
    }

    /// The model's counters.
    #[must_use]
    pub fn stats(&self) -> KsStats {
        self.state.borrow().stats
    }

    /// What `pointer` stands on, for a kernel that mirrors it in guest
    /// memory (the emulated `ks.sys`): `f` gets `None` for a pointer that is
    /// not live and locked.
    pub fn view<R>(&self, pointer: StreamPointerHandle, f: impl FnOnce(Option<PointerView<'_>>) -> R) -> R {
        let Some(position) = self.position(pointer) else { return f(None) };
        let s = self.state.borrow();
        let Some(frame) = s.queue.frame(position.seq) else { return f(None) };
        f(Some(PointerView {
            buffer_id: frame.buffer_id,
            seq: frame.seq,
            offset: position.offset,
            bytes: frame.bytes,
            mappings: &frame.mappings,
            generate_mappings: s.flags.generate_mappings,
        }))
    }

    /// Frames queued at or ahead of the leading edge (what `Process` could
    /// still work on).
    #[must_use]
    pub fn frames_at_or_ahead_of_leading_edge(&self) -> usize {
        let s = self.state.borrow();
        let leading = s.queue.leading.seq;
        s.queue.frames.iter().filter(|f| f.seq >= leading).count()
    }

    /// The leading edge's position (frame sequence number, offset), the
    /// clones alive and the frames completed: changes to any of them are
    /// progress.
    #[must_use]
    pub fn progress_mark(&self) -> (u64, u32, usize, u64) {
        let s = self.state.borrow();
        (s.queue.leading.seq, s.queue.leading.offset, s.queue.clones.len(), s.stats.completed)
    }

    fn ddi(&self, name: &str) {
        self.irql.require_at_most_dispatch(name);
    }

    fn put_lists(&self, lists: Vec<ScatterGatherList>) {
        if lists.is_empty() {
            return;
        }
        let adapter = self.state.borrow().mapping.as_ref().map(|m| m.adapter.clone());
        if let Some(adapter) = adapter {
            for list in lists {
                adapter.put_scatter_gather_list(&list);
            }
        }
    }

    /// Maps the frame `seq` if mapping mode needs it (AVStream generates a
    /// frame's mappings when the minidriver first locks it: "Supporting DMA
    /// in 64-Bit AVStream Drivers"). `false` when it cannot be mapped now
    /// (map registers exhausted: the lock waits, and nothing but the
    /// minidriver's `KsPinAttemptProcessing` tries again).
    ///
    /// The whole frame is mapped before the minidriver sees it: its
    /// `KSMAPPING` table is complete, so `OffsetOut.Count` never changes
    /// while a pointer stays on the frame ("`KSSTREAM_POINTER_OFFSET`
    /// structure (ks.h)"). `GetScatterGatherList` refuses a transfer that
    /// needs more map registers than the adapter was granted ("`PGET_SCATTER_GATHER_LIST`
    /// callback function (wdm.h)"), so a frame larger than the grant is
    /// mapped as several transfers of at most the grant's pages each, their
    /// lists held together until the frame leaves the queue. If any of them
    /// cannot be had now, those already built are put back and the frame
    /// waits whole (a frame half-mapped would hold map registers another
    /// frame may need to finish).
    fn ensure_mapped(&self, seq: u64) -> bool {
        let (needs, mapping, va, bytes) = {
            let s = self.state.borrow();
            let Some(frame) = s.queue.frame(seq) else { return false };
            let needs = s.flags.generate_mappings && frame.sg.is_empty();
            (needs, s.mapping.clone(), frame.va, frame.bytes)
        };
        if !needs {
            return true;
        }
        let Some(mapping) = mapping else { return false };
        let mut lists = Vec::new();
        for (at, length) in transfers(va, bytes as usize, mapping.adapter.map_register_grant()) {
            if let Ok(list) = mapping.adapter.get_scatter_gather_list(va.wrapping_add(at), length) {
                lists.push(list);
            } else {
                for list in &lists {
                    mapping.adapter.put_scatter_gather_list(list);
                }
                let mut s = self.state.borrow_mut();
                s.stats.map_waits += 1;
                s.waiting_for_map_registers = true;
                return false;
            }
        }
        let mappings: Vec<_> =
            lists.iter().flat_map(|list| split_mappings(list, mapping.max_mapping_byte_count)).collect();
        let mut s = self.state.borrow_mut();
        s.stats.mappings += mappings.len() as u64;
        s.stats.sg_lists += lists.len() as u64;
        s.waiting_for_map_registers = false;
        if let Some(frame) = s.queue.frame_mut(seq) {
            frame.mappings = mappings;
            frame.sg = lists;
        }
        true
    }

    /// Completes every frame the leading edge has passed and no clone
    /// references: from the head of the queue, in order, or (with
    /// [`PinFlags::complete_out_of_order`]) wherever it is in the queue.
    fn complete_ready(&self) {
        let mut lists = Vec::new();
        {
            let mut s = self.state.borrow_mut();
            if s.flags.complete_out_of_order {
                while let Some(at) = s.queue.frames.iter().position(|f| f.passed && f.clones == 0) {
                    let Some(frame) = s.queue.frames.remove(at) else { break };
                    hand_back(&mut s, frame, false, &mut lists);
                }
            } else {
                while s.queue.frames.front().is_some_and(|f| f.passed && f.clones == 0) {
                    let Some(frame) = s.queue.frames.pop_front() else { break };
                    hand_back(&mut s, frame, false, &mut lists);
                }
            }
            // Map registers coming back with the lists restart nothing: the
            // minidriver's KsPinAttemptProcessing does (as with AVStream).
        }
        self.put_lists(lists);
    }

    fn position(&self, pointer: StreamPointerHandle) -> Option<Position> {
        let s = self.state.borrow();
        if pointer == LEADING_EDGE {
            s.queue.leading_locked.then_some(s.queue.leading)
        } else {
            s.queue.clones.get(&pointer.0).copied()
        }
    }

    fn bad_pointer(&self, ddi: &str, pointer: StreamPointerHandle) {
        self.violations.push(ViolationKind::Ks, format!("{ddi} on a stream pointer that is not live or not locked ({pointer:?})"));
    }

    /// Moves the leading edge to the next frame; `false` when it went past
    /// the last available frame (then it is unlocked).
    fn leading_to_next_frame(&self) -> bool {
        let next = {
            let mut s = self.state.borrow_mut();
            let seq = s.queue.leading.seq;
            if let Some(frame) = s.queue.frame_mut(seq) {
                frame.passed = true;
            }
            s.queue.leading = Position { seq: seq + 1, offset: 0 };
            seq + 1
        };
        let available = self.state.borrow().queue.frame(next).is_some() && self.ensure_mapped(next);
        if !available {
            self.state.borrow_mut().queue.leading_locked = false;
        }
        self.complete_ready();
        available
    }
}

/// The transfers KS maps a buffer of `bytes` bytes at `va` with: (offset,
/// length) pieces in order, each spanning at most `grant` pages (`None`:
/// one transfer of the whole buffer). Pages are counted as
/// `ADDRESS_AND_SIZE_TO_SPAN_PAGES` counts them, from the virtual address.
fn transfers(va: *mut u8, bytes: usize, grant: Option<u32>) -> Vec<(usize, usize)> {
    let Some(grant) = grant.filter(|&g| g > 0) else { return vec![(0, bytes)] };
    let span = grant as usize * PAGE_SIZE;
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < bytes {
        let in_page = va.wrapping_add(at).addr() % PAGE_SIZE;
        let length = (span - in_page).min(bytes - at);
        pieces.push((at, length));
        at += length;
    }
    pieces
}

impl KsPinPort for SimKsPin {
    type StreamPointer = StreamPointerHandle;

    fn leading_edge(&self) -> Option<StreamPointerHandle> {
        self.ddi("KsPinGetLeadingEdgeStreamPointer");
        let seq = self.state.borrow().queue.leading.seq;
        if self.state.borrow().queue.frame(seq).is_none() || !self.ensure_mapped(seq) {
            return None;
        }
        self.state.borrow_mut().queue.leading_locked = true;
        Some(LEADING_EDGE)
    }

    fn clone_pointer(&self, pointer: StreamPointerHandle) -> Result<StreamPointerHandle, NtStatus> {
        self.ddi("KsStreamPointerClone");
        let Some(position) = self.position(pointer) else {
            self.bad_pointer("KsStreamPointerClone", pointer);
            return Err(STATUS_INVALID_PARAMETER);
        };
        let mut s = self.state.borrow_mut();
        s.queue.next_handle = s.queue.next_handle.wrapping_add(1).max(1);
        let handle = s.queue.next_handle;
        s.queue.clones.insert(handle, position);
        if let Some(frame) = s.queue.frame_mut(position.seq) {
            frame.clones += 1;
        }
        s.stats.clones += 1;
        Ok(StreamPointerHandle(handle))
    }

    fn offset_out(&self, pointer: StreamPointerHandle) -> StreamOffset {
        let empty = StreamOffset { data: std::ptr::null_mut(), mappings: std::ptr::null(), count: 0, remaining: 0 };
        let Some(position) = self.position(pointer) else {
            self.bad_pointer("OffsetOut", pointer);
            return empty;
        };
        let s = self.state.borrow();
        let Some(frame) = s.queue.frame(position.seq) else { return empty };
        if s.flags.generate_mappings {
            let count = u32::try_from(frame.mappings.len()).unwrap_or(u32::MAX);
            let offset = position.offset.min(count);
            StreamOffset {
                data: std::ptr::null_mut(),
                mappings: frame.mappings.as_ptr().wrapping_add(offset as usize),
                count,
                remaining: count - offset,
            }
        } else {
            let offset = position.offset.min(frame.bytes);
            StreamOffset {
                data: frame.va.wrapping_add(offset as usize),
                mappings: std::ptr::null(),
                count: frame.bytes,
                remaining: frame.bytes - offset,
            }
        }
    }

    fn frame_extent(&self, pointer: StreamPointerHandle) -> u32 {
        let Some(position) = self.position(pointer) else {
            self.bad_pointer("FrameExtent", pointer);
            return 0;
        };
        self.state.borrow().queue.frame(position.seq).map_or(0, |f| f.bytes)
    }

    fn advance_offsets(&self, pointer: StreamPointerHandle, out_used: u32, eject: bool) -> Result<(), NtStatus> {
        self.ddi("KsStreamPointerAdvanceOffsets");
        let Some(position) = self.position(pointer) else {
            self.bad_pointer("KsStreamPointerAdvanceOffsets", pointer);
            return Err(STATUS_INVALID_PARAMETER);
        };
        let count = self.offset_out(pointer).count;
        let offset = position.offset.saturating_add(out_used);
        if offset > count {
            self.violations.push(ViolationKind::Ks, format!("KsStreamPointerAdvanceOffsets past the end of the frame ({offset} > {count})"));
        }
        if pointer != LEADING_EDGE {
            if offset >= count || eject {
                self.violations.push(ViolationKind::Ks, "a clone advanced off its frame (not used by capdma; unsupported by the model)");
            }
            if let Some(p) = self.state.borrow_mut().queue.clones.get_mut(&pointer.0) {
                p.offset = offset.min(count);
            }
            return Ok(());
        }
        if offset >= count || eject {
            if self.leading_to_next_frame() {
                Ok(())
            } else {
                Err(STATUS_DEVICE_NOT_READY)
            }
        } else {
            self.state.borrow_mut().queue.leading.offset = offset;
            Ok(())
        }
    }

    fn advance_offsets_and_unlock(&self, pointer: StreamPointerHandle, out_used: u32, eject: bool) {
        if self.advance_offsets(pointer, out_used, eject).is_ok() {
            self.unlock(pointer, false);
        }
    }

    fn unlock(&self, pointer: StreamPointerHandle, eject: bool) {
        self.ddi("KsStreamPointerUnlock");
        if self.position(pointer).is_none() {
            self.bad_pointer("KsStreamPointerUnlock", pointer);
            return;
        }
        if pointer == LEADING_EDGE {
            if eject {
                self.leading_to_next_frame();
            }
            self.state.borrow_mut().queue.leading_locked = false;
        }
    }

    fn complete_frame(&self, pointer: StreamPointerHandle, completion: &FrameCompletion) {
        let Some(position) = self.position(pointer) else {
            self.bad_pointer("StreamHeader", pointer);
            return;
        };
        let mut s = self.state.borrow_mut();
        if let Some(frame) = s.queue.frame_mut(position.seq) {
            if completion.data_used > frame.bytes {
                self.violations.push(ViolationKind::Ks, format!("DataUsed {} exceeds FrameExtent {}", completion.data_used, frame.bytes));
            }
            frame.completion = Some(*completion);
        }
    }

    fn delete(&self, pointer: StreamPointerHandle) {
        self.ddi("KsStreamPointerDelete");
        if pointer == LEADING_EDGE {
            self.violations.push(ViolationKind::Ks, "KsStreamPointerDelete on the leading edge");
            return;
        }
        let removed = self.state.borrow_mut().queue.clones.remove(&pointer.0);
        let Some(position) = removed else {
            self.bad_pointer("KsStreamPointerDelete", pointer);
            return;
        };
        if let Some(frame) = self.state.borrow_mut().queue.frame_mut(position.seq) {
            frame.clones = frame.clones.saturating_sub(1);
        }
        self.complete_ready();
    }

    fn attempt_processing(&self, _asynchronous: bool) {
        self.ddi("KsPinAttemptProcessing");
        let mut s = self.state.borrow_mut();
        s.stats.attempts += 1;
        if s.running {
            s.process_requested = true;
        }
    }

    fn raise_to_dispatch(&self) -> Irql {
        self.irql.raise(crate::irql::DISPATCH_LEVEL)
    }

    fn lower_irql(&self, old: Irql) {
        self.irql.lower(old);
    }
}
