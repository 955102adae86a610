//! The per-channel DMA engine: start-time checks, frame capture in both
//! modes, frames posted in parts (S/G), completion records, drops, halts,
//! and fault application.
use super::faults::{BoardFault, Corruption, OVERSIZED_BYTE_COUNT};
use super::registers::ChannelRegs;
use super::source::FrameSource;
use super::{Board, BoardConfig, BoardKind, BoardState, ChannelStats};
use super::DmaPort;
use crate::memory::FOUR_GIB;
use crate::pattern::{Pattern, PAD_BYTE};
use capdma_interface::descriptor::{
    CompletionRecord, SgDescriptor, CQ_STATUS_OK, CQ_STATUS_PART, DESC_END_OF_FRAME, DESC_END_OF_PART, DESC_START_OF_FRAME,
};
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};
use capdma_interface::regs::{
    int_done, int_error, CTRL_SG_MODE, ERROR_BAD_DESCRIPTOR, ERROR_DMA_FAULT, ERROR_OVERRUN, STATUS_ERROR_SHIFT,
    STATUS_HALTED, STATUS_RUNNING,
};
use zerocopy::{FromBytes, IntoBytes};

/// Bytes of one descriptor / completion record.
const ENTRY_BYTES: u64 = 32;
use capdma_interface::regs::SLOT_LINE_ALIGNMENT;
/// `STATUS` reads after a `CTRL_RESET` that caught a burst in flight before
/// `STATUS_RUNNING` reads 0 (the first read lands the burst).
pub const RESET_DRAIN_READS: u32 = 2;
/// Bytes of a burst the reset caught in flight (at most).
pub const BURST_BYTES: u32 = 256;
/// What a burst caught by a reset writes (not a pattern byte: a frame it
/// lands in and that is delivered as good fails verification).
pub const BURST_BYTE: u8 = 0xEE;

/// A DMA burst of the frame being captured when `CTRL_RESET` arrived: the
/// engine finishes it at its own pace. It lands at the first `STATUS` read
/// after the reset (which also flushes the posted reset) or, if the driver
/// never reads `STATUS`, when the board settles ([`Board::settle`]) — then
/// into whatever the driver made of that memory meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Burst {
    /// S/G: into the buffer of descriptor `entry` (the engine had fetched
    /// it; [`Board::write32`] resolves it to an address at the reset).
    Descriptor { ring_base: u64, entry: u32 },
    /// `bytes` bytes at bus address `address` (a CB slot, a resolved descriptor).
    At { address: u64, bytes: u32 },
}

/// Why a due frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// No descriptor posted (S/G) / no slot owned (common buffer).
    NoBuffer,
    /// The completion queue is full (`CQ_PRODUCER − CQ_CONSUMER == CQ_ENTRIES`).
    CompletionQueueFull,
    /// The engine is busy with a frame posted in parts (`DESC_END_OF_PART`):
    /// it writes that frame's later parts, not a new frame, until the
    /// frame's last part is done.
    FrameInProgress,
}

/// What one [`Board::capture_frame`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureOutcome {
    /// The board has no such channel.
    NoSuchChannel,
    /// The channel is not running (stopped or halted).
    NotRunning,
    /// The board is gone.
    Removed,
    /// The channel hangs (fault injection): nothing happened.
    Hung,
    /// The frame was dropped (`DROPPED_FRAMES` incremented).
    Dropped(DropReason),
    /// The frame was written and its completion record posted.
    Completed {
        /// The record's `index` (as written, corruptions included).
        index: u32,
        /// The record's `byte_count` (as written).
        bytes: u32,
        /// The frame's number.
        frame_number: u32,
        /// The record's `tag`.
        tag: u32,
    },
    /// A part of a frame posted in parts was written (its last descriptor
    /// carried `DESC_END_OF_PART`) and its `CQ_STATUS_PART` record posted;
    /// the frame stays in progress ([`Board::continue_frame`] goes on with it).
    PartCompleted {
        /// The record's `index` (the part's first descriptor, corruptions included).
        index: u32,
        /// The record's `byte_count`: bytes of the frame written so far (cumulative).
        bytes: u32,
        /// The frame's number.
        frame_number: u32,
        /// The record's `tag`.
        tag: u32,
    },
    /// [`Board::continue_frame`] found a frame in progress and nothing to
    /// go on with yet: the next part's descriptors are not posted, or the
    /// completion queue is full. Nothing happened.
    Waiting,
    /// [`Board::continue_frame`] on a channel with no frame in progress
    /// (none was posted in parts, or a reset, stop or halt discarded it).
    NoFrameInProgress,
    /// The engine halted with error `code` (`ERROR_*`).
    Halted {
        /// `ERROR_DMA_FAULT`, `ERROR_BAD_DESCRIPTOR` or `ERROR_OVERRUN`.
        code: u32,
    },
}

/// What the engine latched at `CTRL_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunConfig {
    pub(crate) sg: bool,
    pub(crate) format: PixelFormat,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) line_pitch: u32,
    pub(crate) line_bytes: u32,
    pub(crate) lines: u32,
    pub(crate) frame_bytes: u32,
    pub(crate) ring_base: u64,
    pub(crate) ring_entries: u32,
    pub(crate) slot_stride: u32,
    pub(crate) cq_base: u64,
    pub(crate) cq_entries: u32,
    pub(crate) frame_interval: u32,
}

/// A frame posted in parts that the engine has begun and not finished:
/// what it needs to go on writing it through the next part's descriptors.
/// The line data is regenerated from the frame's number (the source is
/// deterministic per frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameInProgress {
    /// The frame's number (the board's counter when the frame was due).
    pub(crate) frame_number: u32,
    /// Its capture time (100-ns units): every record of the frame carries it.
    pub(crate) timestamp: u64,
    /// The tag of its descriptors.
    pub(crate) tag: u32,
    /// Bytes of the frame image written so far (at most the frame's bytes).
    pub(crate) written: u32,
    /// Bytes of buffer its descriptors described so far (all parts done).
    pub(crate) capacity: u64,
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) regs: ChannelRegs,
    pub(crate) run: Option<RunConfig>,
    pub(crate) frame_number: u32,
    pub(crate) hung: bool,
    pub(crate) corrupt: Vec<Corruption>,
    pub(crate) source: FrameSource,
    pub(crate) stats: ChannelStats,
    line_buf: Vec<u8>,
    /// A burst a reset caught in flight, not landed yet.
    pub(crate) burst: Option<Burst>,
    /// `STATUS` reads left before `STATUS_RUNNING` clears after such a reset
    /// (or after a stuck one: `u32::MAX` never counts down).
    pub(crate) drain_reads: u32,
    /// [`BoardFault::ResetStuck`] armed: the next `CTRL_RESET` is not
    /// acknowledged for this many `STATUS` reads.
    pub(crate) reset_stuck: Option<u32>,
    /// The last reset is stuck ([`BoardFault::ResetStuck`]): only
    /// `STATUS` reads complete it, [`Board::settle`] does not.
    pub(crate) stuck: bool,
    /// The S/G frame posted in parts being written, if any.
    pub(crate) in_progress: Option<FrameInProgress>,
    /// A continuation of the frame in progress is due (its next part was
    /// posted): [`Board::take_continuations`] hands it to the machine.
    pub(crate) continuation_due: bool,
}

impl Channel {
    pub(crate) fn new() -> Self {
        Self {
            regs: ChannelRegs::default(),
            run: None,
            frame_number: 0,
            hung: false,
            corrupt: Vec::new(),
            source: FrameSource::Pattern,
            stats: ChannelStats::default(),
            line_buf: Vec::new(),
            burst: None,
            drain_reads: 0,
            reset_stuck: None,
            stuck: false,
            in_progress: None,
            continuation_due: false,
        }
    }

    /// Discards the frame in progress (a reset, a stop, a halt).
    pub(crate) fn discard_frame_in_progress(&mut self) {
        self.in_progress = None;
        self.continuation_due = false;
    }

    /// A doorbell (`RING_PRODUCER`, or `CQ_CONSUMER` making room for the
    /// next record): with a frame in progress and descriptors posted, a
    /// continuation is due.
    pub(crate) fn note_doorbell(&mut self) {
        if self.in_progress.is_some() && self.regs.ring_producer != self.regs.ring_consumer {
            self.continuation_due = true;
        }
    }

    pub(crate) fn running(&self) -> bool {
        self.regs.status & STATUS_RUNNING != 0
    }

    /// `CTRL_RESET`: stop, zero the ring counters and `DROPPED_FRAMES`, clear
    /// errors and a hang. The format and ring registers keep their values;
    /// the frame counter keeps running (it counts the video input's frames).
    /// Injected completion corruptions stay armed.
    pub(crate) fn reset(&mut self) {
        let r = &mut self.regs;
        r.ctrl = 0;
        r.status = 0;
        r.ring_producer = 0;
        r.ring_consumer = 0;
        r.cq_producer = 0;
        r.cq_consumer = 0;
        r.dropped_frames = 0;
        self.run = None;
        self.hung = false;
        self.discard_frame_in_progress();
        self.stats.resets += 1;
    }

    /// The burst the engine is in the middle of, if a reset came now: the
    /// engine runs (not hung, not halted) and owns a buffer (a posted
    /// descriptor, a slot).
    pub(crate) fn burst_in_flight(&self) -> Option<Burst> {
        let run = self.run.filter(|_| self.running() && !self.hung)?;
        let r = &self.regs;
        if r.ring_producer == r.ring_consumer || run.ring_entries == 0 {
            return None;
        }
        let entry = r.ring_consumer % run.ring_entries;
        Some(if run.sg {
            Burst::Descriptor { ring_base: run.ring_base, entry }
        } else {
            Burst::At { address: run.ring_base + u64::from(entry) * u64::from(run.slot_stride), bytes: BURST_BYTES }
        })
    }

    fn halt(&mut self, code: u32) {
        self.regs.status = STATUS_HALTED | code << STATUS_ERROR_SHIFT;
        self.discard_frame_in_progress();
        self.stats.halts += 1;
    }

    /// `CTRL_RUN` 0 → 1: checks and latches the programmed configuration.
    /// Returns `true` when the engine halted instead of starting.
    pub(crate) fn start(&mut self, config: &BoardConfig, index: usize, problems: &mut Vec<String>) -> bool {
        match validate(&self.regs, config) {
            Ok(run) => {
                self.run = Some(run);
                self.discard_frame_in_progress();
                self.regs.status = STATUS_RUNNING;
                false
            }
            Err((code, message)) => {
                problems.push(format!("channel {index}: start refused by the board: {message}"));
                self.halt(code);
                true
            }
        }
    }
}

/// The start-time checks of a channel's programming.
fn validate(r: &ChannelRegs, config: &BoardConfig) -> Result<RunConfig, (u32, String)> {
    let bad = |m: String| Err((ERROR_BAD_DESCRIPTOR, m));
    let sg = r.ctrl & CTRL_SG_MODE != 0;
    if sg && config.kind == BoardKind::Legacy {
        return bad("CTRL_SG_MODE set on a board without scatter/gather".into());
    }
    let Some(format) = PixelFormat::from_fourcc(r.fourcc) else {
        return bad(format!("unsupported FOURCC {:#010x}", r.fourcc));
    };
    let (width, height) = (r.width, r.height);
    let odd = width % 2 != 0 || (format == PixelFormat::Nv12 && height % 2 != 0);
    if width == 0 || height == 0 || width > MAX_WIDTH || height > MAX_HEIGHT || odd {
        return bad(format!("unsupported size {width}x{height} for {}", format.name()));
    }
    let (Some(line_bytes), Some(lines)) = (format.line_bytes(width), format.lines(height)) else {
        return bad("size overflows".into());
    };
    if r.line_pitch < line_bytes {
        return bad(format!("LINE_PITCH {} below the line's {line_bytes} bytes", r.line_pitch));
    }
    if !sg && !r.line_pitch.is_multiple_of(SLOT_LINE_ALIGNMENT) {
        return bad(format!("slot LINE_PITCH {} is not a multiple of {SLOT_LINE_ALIGNMENT}", r.line_pitch));
    }
    let Some(frame_bytes) = format.frame_bytes(height, r.line_pitch) else {
        return bad(format!("frame of {lines} lines at pitch {} overflows 32 bits", r.line_pitch));
    };
    if r.frame_interval == 0 {
        return bad("FRAME_INTERVAL is 0".into());
    }
    if r.ring_entries == 0 || r.cq_entries == 0 {
        return bad(format!("RING_ENTRIES {} / CQ_ENTRIES {} must not be 0", r.ring_entries, r.cq_entries));
    }
    let (ring_base, cq_base) = (r.ring_base(), r.cq_base());
    let ring_end = if sg {
        ring_base.checked_add(u64::from(r.ring_entries) * ENTRY_BYTES)
    } else {
        ring_base.checked_add(u64::from(r.ring_entries - 1) * u64::from(r.slot_stride) + u64::from(frame_bytes))
    };
    let cq_end = cq_base.checked_add(u64::from(r.cq_entries) * ENTRY_BYTES);
    let fault = |m: String| Err((ERROR_DMA_FAULT, m));
    let (Some(ring_end), Some(cq_end)) = (ring_end, cq_end) else {
        return fault("ring or completion queue wraps the address space".into());
    };
    if !config.address_64 && (ring_end > FOUR_GIB || cq_end > FOUR_GIB) {
        return fault(format!(
            "32-bit board given a ring [{ring_base:#x}, {ring_end:#x}) / completion queue [{cq_base:#x}, {cq_end:#x}) reaching above 4 GiB"
        ));
    }
    if cq_base % ENTRY_BYTES != 0 {
        return fault(format!("completion queue base {cq_base:#x} not aligned to {ENTRY_BYTES} bytes"));
    }
    if sg {
        if ring_base % ENTRY_BYTES != 0 {
            return fault(format!("descriptor ring base {ring_base:#x} not aligned to {ENTRY_BYTES} bytes"));
        }
    } else {
        let align = u64::from(config.alignment);
        if ring_base % align != 0 || u64::from(r.slot_stride) % align != 0 {
            return fault(format!(
                "slot ring base {ring_base:#x} / SLOT_STRIDE {} not aligned to the board's {align} bytes",
                r.slot_stride
            ));
        }
        if r.slot_stride < frame_bytes {
            return Err((
                ERROR_OVERRUN,
                format!("SLOT_STRIDE {} smaller than the {frame_bytes}-byte frame", r.slot_stride),
            ));
        }
    }
    Ok(RunConfig {
        sg,
        format,
        width,
        height,
        line_pitch: r.line_pitch,
        line_bytes,
        lines,
        frame_bytes,
        ring_base,
        ring_entries: r.ring_entries,
        slot_stride: r.slot_stride,
        cq_base,
        cq_entries: r.cq_entries,
        frame_interval: r.frame_interval,
    })
}

/// A halt decided during a capture: error code and, for driver bugs, a violation.
type Halt = (u32, Option<String>);

impl BoardState {
    /// Applies one fault now. Returns the channel it halted, if any.
    pub(crate) fn apply_fault(&mut self, fault: BoardFault) -> Option<u32> {
        self.stats.faults_applied += 1;
        let channel = fault.channel();
        let c = channel.and_then(|ch| self.channels.get_mut(ch as usize));
        match (fault, c) {
            (BoardFault::DmaError { channel }, Some(c)) if c.running() => {
                c.halt(ERROR_DMA_FAULT);
                self.int_status |= int_error(channel);
                return Some(channel);
            }
            (BoardFault::Hang { .. }, Some(c)) => c.hung = true,
            (BoardFault::ResetStuck { reads, .. }, Some(c)) => c.reset_stuck = Some(reads),
            (BoardFault::BadSlotIndex { .. }, Some(c)) => c.corrupt.push(Corruption::OutOfRangeIndex),
            (BoardFault::BadDescriptorIndex { .. }, Some(c)) => c.corrupt.push(Corruption::WrongIndex),
            (BoardFault::OversizedLength { .. }, Some(c)) => c.corrupt.push(Corruption::OversizedLength),
            (BoardFault::SpuriousInterrupt, _) => {
                self.spurious += 1;
                self.stats.spurious_interrupts += 1;
            }
            (BoardFault::InterruptStorm { count }, _) => {
                self.spurious = self.spurious.saturating_add(count);
                self.stats.spurious_interrupts += u64::from(count);
            }
            (BoardFault::SurpriseRemoval, _) => {
                self.removed = true;
                self.spurious += 1;
                // Off the bus: nothing lands any more.
                for c in &mut self.channels {
                    c.burst = None;
                    c.drain_reads = 0;
                    c.stuck = false;
                }
            }
            // A channel fault for a channel that does not exist or is not running.
            _ => {}
        }
        None
    }

    fn capture(&mut self, memory: &DmaPort, ch: u32, now_100ns: u64) -> (CaptureOutcome, Option<String>) {
        let (apply, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|f| f.channel().is_none_or(|c| c == ch));
        self.pending = keep;
        let mut halted_now = None;
        for f in apply {
            if self.apply_fault(f) == Some(ch) {
                halted_now = Some(ERROR_DMA_FAULT);
            }
        }
        if self.removed {
            return (CaptureOutcome::Removed, None);
        }
        if let Some(code) = halted_now {
            return (CaptureOutcome::Halted { code }, None);
        }
        let Some(c) = self.channels.get_mut(ch as usize) else {
            return (CaptureOutcome::NoSuchChannel, None);
        };
        let Some(run) = c.run.filter(|_| c.running()) else {
            return (CaptureOutcome::NotRunning, None);
        };
        if c.hung {
            return (CaptureOutcome::Hung, None);
        }
        if c.in_progress.is_some() {
            return (drop_frame(c, DropReason::FrameInProgress), None);
        }
        let r = &c.regs;
        if r.cq_producer.wrapping_sub(r.cq_consumer) >= run.cq_entries {
            return (drop_frame(c, DropReason::CompletionQueueFull), None);
        }
        let available = match posted(ch, r, &run) {
            Ok(available) => available,
            Err(halt) => return self.halt(ch, halt),
        };
        if available == 0 {
            return (drop_frame(c, DropReason::NoBuffer), None);
        }
        let frame_number = c.frame_number;
        if run.sg {
            let frame = FrameInProgress { frame_number, timestamp: now_100ns, tag: 0, written: 0, capacity: 0 };
            return self.sg_part(memory, ch, &run, frame, true);
        }
        // Common-buffer mode: the frame into slot `RING_CONSUMER % entries`.
        let pattern = self.pattern(ch, &run);
        let c = &mut self.channels[ch as usize];
        let regs = c.regs;
        if let Err(halt) = c.write_lines(&pattern, &run, frame_number, |buf, fill| capture_cb(memory, &regs, &run, buf, fill)) {
            return self.halt(ch, halt);
        }
        let record = CompletionRecord {
            index: regs.ring_consumer % run.ring_entries,
            byte_count: run.frame_bytes,
            status: CQ_STATUS_OK,
            frame_number,
            timestamp: now_100ns,
            tag: 0,
            reserved: 0,
        };
        let record = match self.post_record(memory, ch, &run, record) {
            Ok(record) => record,
            Err(halt) => return self.halt(ch, halt),
        };
        let c = &mut self.channels[ch as usize];
        c.regs.ring_consumer = c.regs.ring_consumer.wrapping_add(1);
        c.frame_number = c.frame_number.wrapping_add(1);
        c.stats.frames_produced += 1;
        c.stats.bytes_written += u64::from(run.frame_bytes);
        c.stats.descriptors_consumed += 1;
        (
            CaptureOutcome::Completed { index: record.index, bytes: record.byte_count, frame_number, tag: record.tag },
            None,
        )
    }

    /// Goes on with channel `ch`'s frame in progress (see [`Board::continue_frame`]).
    fn continue_frame(&mut self, memory: &DmaPort, ch: u32) -> (CaptureOutcome, Option<String>) {
        if self.removed {
            return (CaptureOutcome::Removed, None);
        }
        let Some(c) = self.channels.get_mut(ch as usize) else {
            return (CaptureOutcome::NoSuchChannel, None);
        };
        c.continuation_due = false;
        let Some(run) = c.run.filter(|_| c.running()) else {
            return (CaptureOutcome::NotRunning, None);
        };
        if c.hung {
            return (CaptureOutcome::Hung, None);
        }
        let Some(frame) = c.in_progress else {
            return (CaptureOutcome::NoFrameInProgress, None);
        };
        let r = &c.regs;
        if r.cq_producer.wrapping_sub(r.cq_consumer) >= run.cq_entries {
            return (CaptureOutcome::Waiting, None);
        }
        match posted(ch, r, &run) {
            Ok(0) => (CaptureOutcome::Waiting, None),
            Ok(_) => self.sg_part(memory, ch, &run, frame, false),
            Err(halt) => self.halt(ch, halt),
        }
    }

    /// The test pattern channel `ch` produces in its running format.
    fn pattern(&self, ch: u32, run: &RunConfig) -> Pattern {
        Pattern { format: run.format, width: run.width, height: run.height, channel: ch, seed: self.config.seed }
    }

    /// S/G mode: writes the next part of channel `ch`'s `frame` (a new one
    /// when `start`: its frame time, descriptors posted) through the
    /// descriptors from `RING_CONSUMER` on up to the part's end
    /// (`DESC_END_OF_PART`, or `DESC_END_OF_FRAME` for its last part; a
    /// frame posted whole is one part), posts the part's record
    /// (`CQ_STATUS_PART`, or `CQ_STATUS_OK` for the frame's last part) and
    /// advances `RING_CONSUMER` past the part. After a part that is not
    /// the last the frame stays in progress.
    fn sg_part(
        &mut self,
        memory: &DmaPort,
        ch: u32,
        run: &RunConfig,
        mut frame: FrameInProgress,
        start: bool,
    ) -> (CaptureOutcome, Option<String>) {
        let limits = SgLimits {
            max_transfer: self.config.max_transfer,
            alignment: self.config.alignment,
            address_64: self.config.address_64,
        };
        let pattern = self.pattern(ch, run);
        let c = &mut self.channels[ch as usize];
        let regs = c.regs;
        let first_index = regs.ring_consumer % run.ring_entries;
        let continuing = (!start).then_some(frame);
        let part = match fetch_part(memory, ch, &regs, run, &limits, continuing.as_ref()) {
            Ok(part) => part,
            Err(halt) => return self.halt(ch, halt),
        };
        if start {
            frame.tag = part.descriptors.first().map_or(0, |d| d.tag);
        }
        let from = frame.written;
        let written =
            c.write_lines(&pattern, run, frame.frame_number, |buf, fill| write_part(memory, run, &part.descriptors, from, buf, fill));
        frame.written = match written {
            Ok(written) => written,
            Err(halt) => return self.halt(ch, halt),
        };
        frame.capacity += part.capacity;
        if part.end_of_frame && frame.written < run.frame_bytes {
            let m = format!(
                "channel {ch}: frame of {} bytes posted with only {} bytes of descriptors",
                run.frame_bytes, frame.capacity
            );
            return self.halt(ch, (ERROR_OVERRUN, Some(m)));
        }
        let record = CompletionRecord {
            index: first_index,
            byte_count: frame.written,
            status: if part.end_of_frame { CQ_STATUS_OK } else { CQ_STATUS_PART },
            frame_number: frame.frame_number,
            timestamp: frame.timestamp,
            tag: frame.tag,
            reserved: 0,
        };
        let record = match self.post_record(memory, ch, run, record) {
            Ok(record) => record,
            Err(halt) => return self.halt(ch, halt),
        };
        let c = &mut self.channels[ch as usize];
        let consumed = part.descriptors.len() as u32;
        c.regs.ring_consumer = c.regs.ring_consumer.wrapping_add(consumed);
        c.stats.descriptors_consumed += u64::from(consumed);
        if start {
            c.frame_number = c.frame_number.wrapping_add(1);
        }
        let (index, bytes, frame_number, tag) = (record.index, record.byte_count, frame.frame_number, record.tag);
        if part.end_of_frame {
            c.in_progress = None;
            c.stats.frames_produced += 1;
            c.stats.bytes_written += u64::from(run.frame_bytes);
            (CaptureOutcome::Completed { index, bytes, frame_number, tag }, None)
        } else {
            c.in_progress = Some(frame);
            c.stats.parts_completed += 1;
            // The next part may be posted already: the engine goes on with it.
            c.note_doorbell();
            (CaptureOutcome::PartCompleted { index, bytes, frame_number, tag }, None)
        }
    }

    /// Posts `record` at channel `ch`'s `CQ_PRODUCER` (an armed corruption
    /// applied first), advances `CQ_PRODUCER` and raises `int_done`.
    /// Returns the record as written.
    fn post_record(&mut self, memory: &DmaPort, ch: u32, run: &RunConfig, mut record: CompletionRecord) -> Result<CompletionRecord, Halt> {
        let c = &mut self.channels[ch as usize];
        if !c.corrupt.is_empty() {
            corrupt(&mut record, c.corrupt.remove(0), run.ring_entries);
        }
        let at = run.cq_base + u64::from(c.regs.cq_producer % run.cq_entries) * ENTRY_BYTES;
        if memory.dma_write(at, record.as_bytes()).is_err() {
            return Err((ERROR_DMA_FAULT, None));
        }
        c.regs.cq_producer = c.regs.cq_producer.wrapping_add(1);
        c.stats.completions_written += 1;
        self.int_status |= int_done(ch);
        Ok(record)
    }

    fn halt(&mut self, ch: u32, (code, problem): Halt) -> (CaptureOutcome, Option<String>) {
        if let Some(c) = self.channels.get_mut(ch as usize) {
            c.halt(code);
        }
        self.int_status |= int_error(ch);
        (CaptureOutcome::Halted { code }, problem)
    }
}

impl Channel {
    /// Runs `write` with the channel's line buffer (`LINE_PITCH` bytes)
    /// and the fill of frame `frame_number`'s lines from the channel's
    /// source: `fill(line, buf)` writes the line's bytes and pads the rest
    /// of `buf` with [`PAD_BYTE`]. Deterministic per frame number, so a
    /// frame posted in parts regenerates the lines it goes on with.
    fn write_lines<R>(
        &mut self,
        pattern: &Pattern,
        run: &RunConfig,
        frame_number: u32,
        write: impl FnOnce(&mut Vec<u8>, &mut dyn FnMut(u32, &mut Vec<u8>)) -> R,
    ) -> R {
        let mut line_buf = std::mem::take(&mut self.line_buf);
        line_buf.resize(run.line_pitch as usize, PAD_BYTE);
        let frame_lines = matches!(self.source, FrameSource::Pattern).then(|| pattern.frame(frame_number));
        let source = &self.source;
        let mut fill = |line: u32, buf: &mut Vec<u8>| {
            let (bytes, pad) = buf.split_at_mut(run.line_bytes as usize);
            match &frame_lines {
                Some(lines) => lines.fill_line(line, bytes),
                None => source.fill_line(pattern, frame_number, line, bytes),
            }
            pad.fill(PAD_BYTE);
        };
        let result = write(&mut line_buf, &mut fill);
        self.line_buf = line_buf;
        result
    }
}

/// Descriptors posted on a channel (`RING_PRODUCER − RING_CONSUMER`); a
/// producer more than the ring ahead of the consumer is a driver bug.
fn posted(ch: u32, r: &ChannelRegs, run: &RunConfig) -> Result<u32, Halt> {
    let available = r.ring_producer.wrapping_sub(r.ring_consumer);
    if available > run.ring_entries {
        let m = format!(
            "channel {ch}: RING_PRODUCER {} is {available} ahead of RING_CONSUMER {}, more than the {} entries",
            r.ring_producer, r.ring_consumer, run.ring_entries
        );
        return Err((ERROR_BAD_DESCRIPTOR, Some(m)));
    }
    Ok(available)
}

/// Damages a completion record as an injected fault says.
fn corrupt(record: &mut CompletionRecord, how: Corruption, entries: u32) {
    match how {
        Corruption::OutOfRangeIndex => record.index = entries.saturating_add(3),
        Corruption::WrongIndex => {
            record.index = if entries > 1 { (record.index + 1) % entries } else { entries };
        }
        Corruption::OversizedLength => record.byte_count = OVERSIZED_BYTE_COUNT,
    }
}

fn drop_frame(c: &mut Channel, reason: DropReason) -> CaptureOutcome {
    c.regs.dropped_frames = c.regs.dropped_frames.wrapping_add(1);
    c.frame_number = c.frame_number.wrapping_add(1);
    c.stats.frames_dropped += 1;
    CaptureOutcome::Dropped(reason)
}

struct SgLimits {
    max_transfer: u32,
    alignment: u32,
    address_64: bool,
}

/// The descriptors of one part of an S/G frame (a frame posted whole is
/// one part), as fetched.
struct Part {
    descriptors: Vec<SgDescriptor>,
    /// Bytes of buffer they describe.
    capacity: u64,
    /// The part is the frame's last (`DESC_END_OF_FRAME`), not one ended
    /// by `DESC_END_OF_PART`.
    end_of_frame: bool,
}

/// S/G mode: fetches one part's descriptors from `RING_CONSUMER` on,
/// through the first that carries `DESC_END_OF_PART` or
/// `DESC_END_OF_FRAME`, and checks them: a new frame's first descriptor
/// has `DESC_START_OF_FRAME` and an aligned address (`continuing`:
/// `None`), a later part's has not and carries the frame's tag; no
/// `DESC_START_OF_FRAME` inside, one tag, byte counts within
/// `MAX_TRANSFER`, addresses the board can drive, all of the part posted.
fn fetch_part(
    memory: &DmaPort,
    ch: u32,
    r: &ChannelRegs,
    run: &RunConfig,
    limits: &SgLimits,
    continuing: Option<&FrameInProgress>,
) -> Result<Part, Halt> {
    let available = r.ring_producer.wrapping_sub(r.ring_consumer);
    let bad = |m: String| (ERROR_BAD_DESCRIPTOR, Some(format!("channel {ch}: {m}")));
    let mut descriptors: Vec<SgDescriptor> = Vec::new();
    let mut capacity = 0u64;
    for i in 0..available {
        let index = r.ring_consumer.wrapping_add(i) % run.ring_entries;
        let mut raw = [0u8; ENTRY_BYTES as usize];
        if memory.dma_read(run.ring_base + u64::from(index) * ENTRY_BYTES, &mut raw).is_err() {
            return Err((ERROR_DMA_FAULT, None));
        }
        let Ok(d) = SgDescriptor::read_from_bytes(&raw[..]) else {
            return Err(bad(format!("descriptor {index} unreadable")));
        };
        let sof = d.flags & DESC_START_OF_FRAME != 0;
        match continuing {
            None if i == 0 && !sof => {
                return Err(bad(format!("descriptor {index} starts a frame without DESC_START_OF_FRAME")));
            }
            Some(f) if i == 0 && sof => {
                return Err(bad(format!(
                    "descriptor {index}: DESC_START_OF_FRAME where the next part of frame {} (tag {}) was expected",
                    f.frame_number, f.tag
                )));
            }
            _ if i > 0 && sof => return Err(bad(format!("descriptor {index}: DESC_START_OF_FRAME inside a frame"))),
            _ => {}
        }
        if d.byte_count == 0 || d.byte_count > limits.max_transfer {
            return Err(bad(format!(
                "descriptor {index}: byte count {} outside 1..={}",
                d.byte_count, limits.max_transfer
            )));
        }
        if let Some(tag) = continuing.map(|f| f.tag).or_else(|| descriptors.first().map(|first| first.tag)) {
            if d.tag != tag {
                return Err(bad(format!("descriptor {index}: tag {} differs from the frame's tag {tag}", d.tag)));
            }
        }
        if continuing.is_none() && i == 0 && d.address % u64::from(limits.alignment) != 0 {
            return Err(bad(format!(
                "descriptor {index}: frame start {:#x} not aligned to the board's {} bytes",
                d.address, limits.alignment
            )));
        }
        let end = d.address.checked_add(u64::from(d.byte_count));
        if end.is_none() || (!limits.address_64 && end > Some(FOUR_GIB)) {
            return Err((
                ERROR_DMA_FAULT,
                Some(format!(
                    "channel {ch}: descriptor {index}: address {:#x} (+{}) beyond what the board can drive",
                    d.address, d.byte_count
                )),
            ));
        }
        let (end_of_frame, end_of_part) = (d.flags & DESC_END_OF_FRAME != 0, d.flags & DESC_END_OF_PART != 0);
        if end_of_frame && end_of_part {
            return Err(bad(format!("descriptor {index}: both DESC_END_OF_PART and DESC_END_OF_FRAME")));
        }
        descriptors.push(d);
        capacity += u64::from(d.byte_count);
        if end_of_frame || end_of_part {
            return Ok(Part { descriptors, capacity, end_of_frame });
        }
    }
    Err(bad(match continuing {
        None => format!(
            "frame not fully posted: no DESC_END_OF_FRAME (or DESC_END_OF_PART) in the {available} posted descriptor(s)"
        ),
        Some(f) => format!(
            "part of frame {} (tag {}) not fully posted: no DESC_END_OF_PART or DESC_END_OF_FRAME in the {available} posted descriptor(s)",
            f.frame_number, f.tag
        ),
    }))
}

/// Writes the frame image (`lines × LINE_PITCH` bytes, line by line, each
/// line regenerated by `fill`) from byte `from` on through `descriptors`,
/// until they or the image run out. Returns the bytes of the image written
/// after it (cumulative). A buffer larger than the image: the rest of the
/// descriptors is left untouched.
fn write_part(
    memory: &DmaPort,
    run: &RunConfig,
    descriptors: &[SgDescriptor],
    from: u32,
    line_buf: &mut Vec<u8>,
    fill: &mut dyn FnMut(u32, &mut Vec<u8>),
) -> Result<u32, Halt> {
    let pitch = run.line_pitch as usize;
    let image = run.lines as usize * pitch;
    let mut at = from as usize;
    let mut filled = None;
    for d in descriptors {
        let len = d.byte_count as usize;
        let mut off = 0usize;
        while off < len && at < image {
            let (line, pos) = (at / pitch, at % pitch);
            if filled != Some(line) {
                fill(line as u32, line_buf);
                filled = Some(line);
            }
            let n = (pitch - pos).min(len - off);
            if memory.dma_write(d.address + off as u64, &line_buf[pos..pos + n]).is_err() {
                return Err((ERROR_DMA_FAULT, None));
            }
            at += n;
            off += n;
        }
        if at >= image {
            break;
        }
    }
    Ok(at as u32)
}

/// Common-buffer mode: writes the frame into slot `RING_CONSUMER % entries`.
fn capture_cb(
    memory: &DmaPort,
    r: &ChannelRegs,
    run: &RunConfig,
    line_buf: &mut Vec<u8>,
    fill: &mut dyn FnMut(u32, &mut Vec<u8>),
) -> Result<(), Halt> {
    let slot = r.ring_consumer % run.ring_entries;
    let base = run.ring_base + u64::from(slot) * u64::from(run.slot_stride);
    for line in 0..run.lines {
        fill(line, line_buf);
        if memory.dma_write(base + u64::from(line) * u64::from(run.line_pitch), line_buf).is_err() {
            return Err((ERROR_DMA_FAULT, None));
        }
    }
    Ok(())
}

impl Board {
    /// Lands channel `ch`'s pending burst (see [`Burst`]) through the IOMMU
    /// checker: S/G into the buffer of the descriptor the engine was on,
    /// CB into the slot. Nothing when none is pending.
    pub(crate) fn land_burst(&self, ch: usize) {
        self.resolve_burst(ch);
        let burst = self.state.borrow_mut().channels.get_mut(ch).and_then(|c| c.burst.take());
        if let Some(Burst::At { address, bytes }) = burst {
            // A refused write is recorded by the checker (a DMA violation).
            let _ = self.dma_port().dma_write(address, &vec![BURST_BYTE; bytes as usize]);
        }
    }

    /// Turns channel `ch`'s pending S/G burst into the address the engine
    /// was writing (the descriptor it had fetched, read back now).
    pub(crate) fn resolve_burst(&self, ch: usize) {
        let pending = self.state.borrow().channels.get(ch).and_then(|c| c.burst);
        let Some(Burst::Descriptor { ring_base, entry }) = pending else { return };
        let mut raw = [0u8; ENTRY_BYTES as usize];
        let resolved = self
            .dma_port()
            .dma_read(ring_base + u64::from(entry) * ENTRY_BYTES, &mut raw)
            .ok()
            .and_then(|()| SgDescriptor::read_from_bytes(&raw[..]).ok())
            .map(|d| Burst::At { address: d.address, bytes: d.byte_count.min(BURST_BYTES) });
        if let Some(c) = self.state.borrow_mut().channels.get_mut(ch) {
            c.burst = resolved;
        }
    }

    /// A `STATUS` read of channel `ch` after a reset that caught a burst in
    /// flight: the read flushes the posted reset, the burst lands, and after
    /// [`RESET_DRAIN_READS`] reads `STATUS_RUNNING` clears. After a stuck
    /// reset ([`BoardFault::ResetStuck`]) the read only counts down; the
    /// read that acknowledges the reset lands the burst.
    pub(crate) fn status_read(&self, ch: usize) {
        let (draining, stuck) =
            self.state.borrow().channels.get(ch).map_or((false, false), |c| (c.drain_reads > 0 || c.burst.is_some(), c.stuck));
        if !draining {
            return;
        }
        if !stuck {
            self.land_burst(ch);
        }
        let acknowledged = {
            let mut s = self.state.borrow_mut();
            let Some(c) = s.channels.get_mut(ch) else { return };
            if !(c.stuck && c.drain_reads == u32::MAX) {
                c.drain_reads = c.drain_reads.saturating_sub(1);
            }
            let done = c.drain_reads == 0 && c.run.is_none();
            if done {
                c.regs.status &= !STATUS_RUNNING;
                if c.stuck {
                    c.stats.resets_stuck_acknowledged += 1;
                }
                c.stuck = false;
            }
            done && stuck
        };
        if acknowledged {
            self.land_burst(ch);
        }
    }

    /// Time passes for the board: every burst a reset caught lands and every
    /// such reset completes, whether or not the driver waited for it. The
    /// machine calls this after each event and at the end of its teardown,
    /// so a driver that handed memory back before the reset completed is
    /// caught by the IOMMU checker (or by a corrupt frame). A stuck reset
    /// ([`BoardFault::ResetStuck`]) is left as it is: time does not unwedge
    /// an engine.
    pub fn settle(&self) {
        let channels = self.state.borrow().channels.len();
        for ch in 0..channels {
            if self.state.borrow().channels.get(ch).is_some_and(|c| c.stuck) {
                continue;
            }
            self.land_burst(ch);
            let mut s = self.state.borrow_mut();
            if let Some(c) = s.channels.get_mut(ch) {
                if c.drain_reads > 0 {
                    c.drain_reads = 0;
                    if c.run.is_none() {
                        c.regs.status &= !STATUS_RUNNING;
                    }
                }
            }
        }
    }

    /// One frame time of channel `channel` at board time `now_100ns`
    /// (100-ns units): applies due faults, then, if the channel runs, writes
    /// the frame into the next posted buffer (descriptors from
    /// `RING_CONSUMER` in S/G mode, slot `RING_CONSUMER % entries` in
    /// common-buffer mode) line by line at `LINE_PITCH` (padding written
    /// with [`PAD_BYTE`]), posts a [`CompletionRecord`] at `CQ_PRODUCER`,
    /// advances the counters and raises `int_done`; with no buffer (or a
    /// full completion queue) it drops the frame and counts it in
    /// `DROPPED_FRAMES`. A DMA the IOMMU checker refuses, a malformed
    /// descriptor or a too-small buffer halts the channel and raises
    /// `int_error`.
    #[allow(clippy::must_use_candidate, reason = "capturing is the effect; the outcome is informational")]
    pub fn capture_frame(&self, channel: u32, now_100ns: u64) -> CaptureOutcome {
        let port = self.dma_port();
        let (outcome, problem) = self.state.borrow_mut().capture(&port, channel, now_100ns);
        if let Some(p) = problem {
            self.violation(p);
        }
        outcome
    }

    /// Goes on with channel `channel`'s frame posted in parts (S/G): when
    /// the next part's descriptors are posted (its first without
    /// `DESC_START_OF_FRAME`, all with the frame's tag, the last with
    /// `DESC_END_OF_PART` or `DESC_END_OF_FRAME`), writes the frame on
    /// through them (the lines regenerated from the frame's number; once
    /// the image is complete a later part is consumed with nothing
    /// written), posts the part's record — `CQ_STATUS_PART` with the
    /// cumulative `byte_count`, or for the frame's last part the final
    /// `CQ_STATUS_OK` record with the frame's bytes, `index` the part's
    /// first descriptor, the frame's number, tag and capture time —,
    /// advances `RING_CONSUMER` past the part and raises `int_done`.
    /// [`CaptureOutcome::Waiting`] when the part is not posted yet or the
    /// completion queue is full (nothing happens);
    /// [`CaptureOutcome::NoFrameInProgress`] without a frame in progress.
    /// A malformed or not fully posted part halts the channel with
    /// `ERROR_BAD_DESCRIPTOR` (a frame's last part short of its image:
    /// `ERROR_OVERRUN`) and records a [`ViolationKind::Board`] violation,
    /// as [`Board::capture_frame`] does. Injected faults wait for the next
    /// frame time. The machine calls this a DMA latency after a doorbell
    /// [`Board::take_continuations`] reports.
    ///
    /// [`ViolationKind::Board`]: crate::violations::ViolationKind::Board
    #[allow(clippy::must_use_candidate, reason = "writing the part is the effect; the outcome is informational")]
    pub fn continue_frame(&self, channel: u32) -> CaptureOutcome {
        let port = self.dma_port();
        let (outcome, problem) = self.state.borrow_mut().continue_frame(&port, channel);
        if let Some(p) = problem {
            self.violation(p);
        }
        outcome
    }

    /// The channels on which a continuation of the frame in progress is
    /// due ([`Board::continue_frame`]), in channel order, each reported
    /// once: the driver rang a doorbell (`RING_PRODUCER`, or `CQ_CONSUMER`
    /// after a continuation found the completion queue full) with
    /// descriptors posted, or a part completed with the next one already
    /// posted. Clears the notes.
    #[must_use]
    pub fn take_continuations(&self) -> Vec<u32> {
        let mut s = self.state.borrow_mut();
        let mut due = Vec::new();
        for (ch, c) in s.channels.iter_mut().enumerate() {
            if std::mem::take(&mut c.continuation_due) {
                due.push(ch as u32);
            }
        }
        due
    }

    /// The number of the frame posted in parts that channel `channel` is
    /// in the middle of, if any.
    #[must_use]
    pub fn frame_in_progress(&self, channel: u32) -> Option<u32> {
        self.state.borrow().channels.get(channel as usize).and_then(|c| c.in_progress.map(|f| f.frame_number))
    }
}

#[cfg(test)]
#[allow(clippy::many_single_char_names, reason = "short names for the rig's parts keep the register sequences readable")]
mod tests {
    use super::*;
    use crate::board::{BoardConfig, BoardFault};
    use crate::dma::{AdapterConfig, SimDmaAdapter};
    use crate::irql::IrqlTracker;
    use crate::memory::{MemoryConfig, PhysicalMemory, PAGE_SIZE};
    use crate::pattern::read_header;
    use crate::violations::{ViolationKind, Violations};
    use capdma_bus::ports::{CommonBuffer, DeviceDescription, DmaAdapterPort, RegisterPort};
    use capdma_interface::format::FOURCC_YUY2;
    use capdma_interface::table::SgElement;
    use capdma_interface::regs::{
        channel, channel_base, global, Caps, BOARD_ID, CTRL_RESET, CTRL_RUN, GLOBAL_CTRL_RESET, STATUS_RUNNING,
    };

    struct Rig {
        memory: PhysicalMemory,
        violations: Violations,
        adapter: SimDmaAdapter,
        board: Board,
    }

    fn rig(config: BoardConfig) -> Rig {
        let violations = Violations::new();
        let memory = PhysicalMemory::new(MemoryConfig::default(), violations.clone());
        let irql = IrqlTracker::new(violations.clone());
        let adapter = SimDmaAdapter::new(
            DeviceDescription { scatter_gather: config.kind == BoardKind::ScatterGather, dma64: config.address_64, maximum_length: 1 << 22 },
            AdapterConfig::default(),
            &memory,
            &irql,
        );
        let board = Board::new(config, &memory).unwrap();
        Rig { memory, violations, adapter, board }
    }

    fn ch(reg: u32) -> u32 {
        channel_base(0) + reg
    }

    /// A descriptor ring of `entries` entries and an 8-entry completion
    /// queue, common buffers of `adapter`.
    fn rings(adapter: &SimDmaAdapter, entries: usize) -> (CommonBuffer, CommonBuffer) {
        (adapter.allocate_common_buffer(entries * 32).unwrap(), adapter.allocate_common_buffer(8 * 32).unwrap())
    }

    /// What the test programs into channel 0.
    #[derive(Clone, Copy)]
    struct Program {
        sg: bool,
        width: u32,
        height: u32,
        pitch: u32,
        entries: u32,
        stride: u32,
    }

    /// The documented start sequence (steps 1–5) for channel 0.
    fn start(b: &Board, prog: &Program, ring: &CommonBuffer, cq: &CommonBuffer) {
        let Program { sg, width, height, pitch, entries, stride } = *prog;
        b.write32(ch(channel::CTRL), CTRL_RESET);
        b.write32(ch(channel::FOURCC), FOURCC_YUY2);
        b.write32(ch(channel::WIDTH), width);
        b.write32(ch(channel::HEIGHT), height);
        b.write32(ch(channel::LINE_PITCH), pitch);
        b.write32(ch(channel::FRAME_INTERVAL), 333_333);
        b.write32(ch(channel::RING_BASE_LO), ring.logical as u32);
        b.write32(ch(channel::RING_BASE_HI), (ring.logical >> 32) as u32);
        b.write32(ch(channel::RING_ENTRIES), entries);
        b.write32(ch(channel::SLOT_STRIDE), stride);
        b.write32(ch(channel::CQ_BASE_LO), cq.logical as u32);
        b.write32(ch(channel::CQ_BASE_HI), (cq.logical >> 32) as u32);
        b.write32(ch(channel::CQ_ENTRIES), 8);
        b.write32(ch(channel::CQ_CONSUMER), 0);
        if !sg {
            b.write32(ch(channel::RING_PRODUCER), entries);
        }
        b.write32(global::INT_ENABLE, int_done(0) | int_error(0));
        b.write32(ch(channel::CTRL), CTRL_RUN | if sg { CTRL_SG_MODE } else { 0 });
    }

    fn record(m: &PhysicalMemory, cq: &CommonBuffer, i: u32) -> CompletionRecord {
        let mut raw = [0u8; 32];
        m.read_physical(cq.logical + u64::from(i) * 32, &mut raw).unwrap();
        CompletionRecord::read_from_bytes(&raw[..]).unwrap()
    }

    /// Descriptors of one frame over `maps` in parts: part `k` ends after
    /// mapping `ends[k]` (exclusive; the last end is `maps.len()`). The
    /// frame's first carries `DESC_START_OF_FRAME`, every part but the
    /// last ends with `DESC_END_OF_PART`, the last with `DESC_END_OF_FRAME`.
    fn parts(maps: &[SgElement], ends: &[usize], tag: u32) -> Vec<Vec<SgDescriptor>> {
        let mut out = Vec::new();
        let mut from = 0;
        for (k, &end) in ends.iter().enumerate() {
            let part = (from..end)
                .map(|i| {
                    let mut flags = 0;
                    if i == 0 {
                        flags |= DESC_START_OF_FRAME;
                    }
                    if i + 1 == end {
                        flags |= if k + 1 == ends.len() { DESC_END_OF_FRAME } else { DESC_END_OF_PART };
                    }
                    SgDescriptor { address: maps[i].logical_address, byte_count: maps[i].byte_count, flags, tag, ..Default::default() }
                })
                .collect();
            out.push(part);
            from = end;
        }
        out
    }

    /// Writes `descs` into the ring from ring counter `at` on (wrapping
    /// at `entries`) and rings the doorbell: `RING_PRODUCER = at + len`.
    /// Returns the new producer.
    fn post(b: &Board, m: &PhysicalMemory, ring: &CommonBuffer, entries: u32, at: u32, descs: &[SgDescriptor]) -> u32 {
        for (i, d) in descs.iter().enumerate() {
            let index = (at + i as u32) % entries;
            m.write_physical(ring.logical + u64::from(index) * 32, d.as_bytes()).unwrap();
        }
        let producer = at + descs.len() as u32;
        b.write32(ch(channel::RING_PRODUCER), producer);
        producer
    }

    /// 64x48 YUY2 at a 192-byte pitch: a 9216-byte frame, 128-byte lines.
    const PARTS_PROGRAM: Program = Program { sg: true, width: 64, height: 48, pitch: 192, entries: 16, stride: 0 };
    const PARTS_FRAME_BYTES: usize = 192 * 48;

    /// Frame 0 of the S/G board posted whole into a fresh scattered
    /// buffer of a fresh rig, split at `split` bytes: its bytes.
    fn frame_posted_whole(split: u32) -> Vec<u8> {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 16);
        start(b, &PARTS_PROGRAM, &ring, &cq);
        let buf = m.allocate_scattered(PARTS_FRAME_BYTES, "whole").unwrap();
        let list = a.get_scatter_gather_list(buf.va, PARTS_FRAME_BYTES).unwrap();
        let maps = list.mappings(split);
        let whole = parts(&maps, &[maps.len()], 5);
        post(b, m, &ring, 16, 0, &whole[0]);
        let out = b.capture_frame(0, 1);
        assert_eq!(out, CaptureOutcome::Completed { index: 0, bytes: PARTS_FRAME_BYTES as u32, frame_number: 0, tag: 5 });
        let mut bytes = vec![0u8; PARTS_FRAME_BYTES];
        m.read_virtual(buf.va, &mut bytes).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        bytes
    }

    /// A frame posted in 3 parts (part boundaries in the middle of lines):
    /// one record per part (`CQ_STATUS_PART`, index of the part's first
    /// descriptor, cumulative bytes, the frame's tag, number and capture
    /// time), the final one `CQ_STATUS_OK` with the last part's first
    /// index; frame times meanwhile dropped as `FrameInProgress`; each
    /// doorbell reported once; the bytes exactly those of the frame posted
    /// whole.
    #[test]
    fn a_frame_posted_in_three_parts_lands_as_a_whole_one() {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 16);
        start(b, &PARTS_PROGRAM, &ring, &cq);
        let buf = m.allocate_scattered(PARTS_FRAME_BYTES, "parts").unwrap();
        let list = a.get_scatter_gather_list(buf.va, PARTS_FRAME_BYTES).unwrap();
        let maps = list.mappings(1000);
        assert!(maps.len() >= 9, "{} mappings", maps.len());
        let ends = [3, 6, maps.len()];
        let frame = parts(&maps, &ends, 77);
        let cumulative = |end: usize| maps[..end].iter().map(|e| e.byte_count).sum::<u32>();
        assert_ne!(cumulative(3) % 192, 0, "the first part ends inside a line");

        // Part 1 at the frame time.
        let mut producer = post(b, m, &ring, 16, 0, &frame[0]);
        assert!(b.take_continuations().is_empty(), "no frame in progress yet");
        let out = b.capture_frame(0, 5000);
        assert_eq!(out, CaptureOutcome::PartCompleted { index: 0, bytes: cumulative(3), frame_number: 0, tag: 77 });
        assert_eq!(b.frame_in_progress(0), Some(0));
        assert!(b.take_continuations().is_empty(), "the next part is not posted");
        assert_eq!(b.read32(global::INT_STATUS), int_done(0));
        b.write32(global::INT_STATUS, int_done(0));
        assert_eq!((b.read32(ch(channel::RING_CONSUMER)), b.read32(ch(channel::CQ_PRODUCER))), (3, 1));
        let rec = record(m, &cq, 0);
        assert_eq!(
            (rec.status, rec.index, rec.byte_count, rec.tag, rec.frame_number, rec.timestamp),
            (CQ_STATUS_PART, 0, cumulative(3), 77, 0, 5000)
        );

        // Frame times while the frame is in progress are dropped.
        assert_eq!(b.capture_frame(0, 6000), CaptureOutcome::Dropped(DropReason::FrameInProgress));
        assert_eq!(b.read32(ch(channel::DROPPED_FRAMES)), 1);
        assert_eq!(b.frame_number(0), Some(2), "the dropped frame counted");
        assert_eq!(b.continue_frame(0), CaptureOutcome::Waiting, "nothing posted yet");
        assert!(!b.interrupt_pending());

        // Part 2: the doorbell is reported once.
        producer = post(b, m, &ring, 16, producer, &frame[1]);
        assert_eq!(b.take_continuations(), vec![0]);
        assert!(b.take_continuations().is_empty());
        let out = b.continue_frame(0);
        assert_eq!(out, CaptureOutcome::PartCompleted { index: 3, bytes: cumulative(6), frame_number: 0, tag: 77 });
        let rec = record(m, &cq, 1);
        assert_eq!(
            (rec.status, rec.index, rec.byte_count, rec.tag, rec.frame_number, rec.timestamp),
            (CQ_STATUS_PART, 3, cumulative(6), 77, 0, 5000)
        );
        assert!(b.interrupt_pending());
        b.write32(global::INT_STATUS, int_done(0));

        // Part 3 closes the frame.
        post(b, m, &ring, 16, producer, &frame[2]);
        assert_eq!(b.take_continuations(), vec![0]);
        let out = b.continue_frame(0);
        let bytes = PARTS_FRAME_BYTES as u32;
        assert_eq!(out, CaptureOutcome::Completed { index: 6, bytes, frame_number: 0, tag: 77 });
        let rec = record(m, &cq, 2);
        assert_eq!(
            (rec.status, rec.index, rec.byte_count, rec.tag, rec.frame_number, rec.timestamp),
            (CQ_STATUS_OK, 6, bytes, 77, 0, 5000)
        );
        assert!(b.interrupt_pending());
        assert_eq!(b.frame_in_progress(0), None);
        assert_eq!(b.continue_frame(0), CaptureOutcome::NoFrameInProgress);
        assert_eq!(b.read32(ch(channel::RING_CONSUMER)), maps.len() as u32);
        assert_eq!(b.read32(ch(channel::CQ_PRODUCER)), 3);
        let s = b.channel_stats(0).unwrap();
        assert_eq!(
            (s.frames_produced, s.parts_completed, s.frames_dropped, s.completions_written, s.descriptors_consumed),
            (1, 2, 1, 3, maps.len() as u64)
        );
        assert_eq!(s.bytes_written, u64::from(bytes));

        // Byte for byte the frame posted whole (another split, another board).
        let mut got = vec![0u8; PARTS_FRAME_BYTES];
        m.read_virtual(buf.va, &mut got).unwrap();
        b.pattern(0).unwrap().verify_frame(0, &got, 192).unwrap();
        assert!(got == frame_posted_whole(4096), "the frame in parts differs from the frame posted whole");
        // The next frame time captures again (nothing posted: no buffer).
        assert_eq!(b.capture_frame(0, 9000), CaptureOutcome::Dropped(DropReason::NoBuffer));
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        a.put_scatter_gather_list(&list);
        m.free(buf.id);
        a.free_common_buffer(ring);
        a.free_common_buffer(cq);
    }

    /// Parts posted before the frame time: the engine writes the first at
    /// the frame time and reports the next as due at once.
    #[test]
    fn a_part_already_posted_is_due_when_the_one_before_completes() {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 16);
        start(b, &PARTS_PROGRAM, &ring, &cq);
        let buf = m.allocate_scattered(PARTS_FRAME_BYTES, "parts").unwrap();
        let list = a.get_scatter_gather_list(buf.va, PARTS_FRAME_BYTES).unwrap();
        let maps = list.mappings(2000);
        let frame = parts(&maps, &[2, maps.len()], 9);
        let producer = post(b, m, &ring, 16, 0, &frame[0]);
        post(b, m, &ring, 16, producer, &frame[1]);
        assert!(matches!(b.capture_frame(0, 10), CaptureOutcome::PartCompleted { index: 0, .. }));
        assert_eq!(b.take_continuations(), vec![0]);
        assert!(matches!(b.continue_frame(0), CaptureOutcome::Completed { index: 2, frame_number: 0, tag: 9, .. }));
        assert!(b.take_continuations().is_empty());
        let mut got = vec![0u8; PARTS_FRAME_BYTES];
        m.read_virtual(buf.va, &mut got).unwrap();
        b.pattern(0).unwrap().verify_frame(0, &got, 192).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        a.put_scatter_gather_list(&list);
        m.free(buf.id);
    }

    /// A part whose posted descriptors run out before its end, a next part
    /// that starts a frame or carries another tag, a descriptor ending
    /// both a part and the frame, a last part short of the image: each
    /// halts the channel (`ERROR_BAD_DESCRIPTOR`; short: `ERROR_OVERRUN`),
    /// raises `int_error`, discards the frame and is a board violation.
    #[test]
    fn malformed_parts_halt_the_channel() {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 16);
        let buf = m.allocate_scattered(PARTS_FRAME_BYTES, "parts").unwrap();
        let list = a.get_scatter_gather_list(buf.va, PARTS_FRAME_BYTES).unwrap();
        let maps = list.mappings(1000);
        let frame = parts(&maps, &[3, 6, maps.len()], 40);
        let ends_nothing = |d: &SgDescriptor| SgDescriptor { flags: d.flags & DESC_START_OF_FRAME, ..*d };
        // (what part 2 becomes, the halt it causes)
        let mut no_end = frame[1].clone();
        let tail = no_end.len() - 1;
        no_end[tail] = ends_nothing(&no_end[tail]);
        let mut starts = frame[1].clone();
        starts[0].flags |= DESC_START_OF_FRAME;
        let other_tag: Vec<_> = frame[1].iter().map(|d| SgDescriptor { tag: 41, ..*d }).collect();
        let mut both = frame[1].clone();
        both[tail].flags |= DESC_END_OF_FRAME;
        let mut short = frame[1].clone();
        short[tail].flags = DESC_END_OF_FRAME;
        let cases = [
            (no_end, ERROR_BAD_DESCRIPTOR),
            (starts, ERROR_BAD_DESCRIPTOR),
            (other_tag, ERROR_BAD_DESCRIPTOR),
            (both, ERROR_BAD_DESCRIPTOR),
            (short, ERROR_OVERRUN),
        ];
        let n = cases.len();
        for (k, (part2, code)) in cases.into_iter().enumerate() {
            start(b, &PARTS_PROGRAM, &ring, &cq);
            let producer = post(b, m, &ring, 16, 0, &frame[0]);
            assert!(matches!(b.capture_frame(0, 1), CaptureOutcome::PartCompleted { .. }), "case {k}");
            b.write32(global::INT_STATUS, u32::MAX);
            post(b, m, &ring, 16, producer, &part2);
            assert_eq!(b.take_continuations(), vec![0], "case {k}");
            assert_eq!(b.continue_frame(0), CaptureOutcome::Halted { code }, "case {k}");
            assert_eq!(b.read32(ch(channel::STATUS)), STATUS_HALTED | code << STATUS_ERROR_SHIFT, "case {k}");
            assert_eq!(b.read32(global::INT_STATUS), int_error(0), "case {k}: no record, the error raised");
            assert_eq!(b.read32(ch(channel::CQ_PRODUCER)), 1, "case {k}");
            assert_eq!(b.frame_in_progress(0), None, "case {k}: discarded");
            assert_eq!(r.violations.count(ViolationKind::Board), k + 1, "case {k}: {:?}", r.violations.list());
        }
        // The first part itself not fully posted (no end of any kind).
        start(b, &PARTS_PROGRAM, &ring, &cq);
        let mut part1 = frame[0].clone();
        part1[2] = ends_nothing(&part1[2]);
        post(b, m, &ring, 16, 0, &part1);
        assert_eq!(b.capture_frame(0, 1), CaptureOutcome::Halted { code: ERROR_BAD_DESCRIPTOR });
        assert_eq!(r.violations.count(ViolationKind::Board), n + 1, "{:?}", r.violations.list());
        a.put_scatter_gather_list(&list);
        m.free(buf.id);
    }

    /// A reset or a stop discards the frame in progress (and a doorbell
    /// noted for it): what is posted next must start a frame.
    #[test]
    fn reset_and_stop_discard_the_frame_in_progress() {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 16);
        let buf = m.allocate_scattered(PARTS_FRAME_BYTES, "parts").unwrap();
        let list = a.get_scatter_gather_list(buf.va, PARTS_FRAME_BYTES).unwrap();
        let maps = list.mappings(1000);
        let frame = parts(&maps, &[3, 6, maps.len()], 12);
        for stop in [CTRL_RESET, CTRL_SG_MODE] {
            start(b, &PARTS_PROGRAM, &ring, &cq);
            let producer = post(b, m, &ring, 16, 0, &frame[0]);
            assert!(matches!(b.capture_frame(0, 1), CaptureOutcome::PartCompleted { .. }));
            post(b, m, &ring, 16, producer, &frame[1]);
            assert_eq!(b.frame_in_progress(0), Some(b.frame_number(0).unwrap() - 1));
            b.write32(ch(channel::CTRL), stop);
            // A reset's burst in flight lands at the STATUS reads.
            let reads = (0..=RESET_DRAIN_READS).take_while(|_| b.read32(ch(channel::STATUS)) & STATUS_RUNNING != 0).count();
            assert!(reads <= RESET_DRAIN_READS as usize, "CTRL {stop:#x}: the engine stopped");
            assert_eq!(b.frame_in_progress(0), None, "CTRL {stop:#x}");
            assert!(b.take_continuations().is_empty(), "CTRL {stop:#x}: the noted doorbell went with the frame");
            assert_eq!(b.continue_frame(0), CaptureOutcome::NotRunning);
        }
        // Restarted: a part that continues a frame no longer in progress
        // starts none.
        start(b, &PARTS_PROGRAM, &ring, &cq);
        assert_eq!(b.continue_frame(0), CaptureOutcome::NoFrameInProgress);
        post(b, m, &ring, 16, 0, &frame[1]);
        assert_eq!(b.capture_frame(0, 2), CaptureOutcome::Halted { code: ERROR_BAD_DESCRIPTOR });
        assert_eq!(r.violations.count(ViolationKind::Board), 1, "{:?}", r.violations.list());
        a.put_scatter_gather_list(&list);
        m.free(buf.id);
    }

    /// A buffer larger than the image: the image completes in part 2, the
    /// rest of part 2 and all of part 3 stay untouched, part 3 is still
    /// consumed and completed; the records after the image carry the
    /// frame's bytes.
    #[test]
    fn parts_after_the_image_is_complete_are_consumed_and_completed() {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 16);
        start(b, &PARTS_PROGRAM, &ring, &cq);
        let big = 4 * PAGE_SIZE;
        let buf = m.allocate_scattered(big, "big").unwrap();
        m.write_virtual(buf.va, &vec![0x5A; big]).unwrap();
        let list = a.get_scatter_gather_list(buf.va, big).unwrap();
        let maps = list.mappings(4096);
        assert_eq!(maps.len(), 4, "a page per mapping");
        // Part 1: page 0 (4096); part 2: pages 1-2 (the image ends at 9216
        // in page 2); part 3: page 3.
        let frame = parts(&maps, &[1, 3, 4], 3);
        let image = PARTS_FRAME_BYTES as u32;
        let mut producer = post(b, m, &ring, 16, 0, &frame[0]);
        assert_eq!(b.capture_frame(0, 7), CaptureOutcome::PartCompleted { index: 0, bytes: 4096, frame_number: 0, tag: 3 });
        producer = post(b, m, &ring, 16, producer, &frame[1]);
        assert_eq!(b.continue_frame(0), CaptureOutcome::PartCompleted { index: 1, bytes: image, frame_number: 0, tag: 3 });
        assert_eq!(b.frame_in_progress(0), Some(0), "complete image, parts still to come");
        post(b, m, &ring, 16, producer, &frame[2]);
        assert_eq!(b.continue_frame(0), CaptureOutcome::Completed { index: 3, bytes: image, frame_number: 0, tag: 3 });
        let recs: Vec<_> = (0..3).map(|i| record(m, &cq, i)).map(|r| (r.status, r.index, r.byte_count)).collect();
        assert_eq!(recs, vec![(CQ_STATUS_PART, 0, 4096), (CQ_STATUS_PART, 1, image), (CQ_STATUS_OK, 3, image)]);
        assert_eq!(b.read32(ch(channel::RING_CONSUMER)), 4);
        let mut got = vec![0u8; big];
        m.read_virtual(buf.va, &mut got).unwrap();
        b.pattern(0).unwrap().verify_frame(0, &got[..PARTS_FRAME_BYTES], 192).unwrap();
        assert!(got[PARTS_FRAME_BYTES..].iter().all(|&x| x == 0x5A), "nothing written after the image");
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        a.put_scatter_gather_list(&list);
        m.free(buf.id);
    }

    #[test]
    fn global_registers_and_w1c() {
        let r = rig(BoardConfig::scatter_gather());
        let b = &r.board;
        assert_eq!(b.read32(global::ID), BOARD_ID);
        let caps = Caps::decode(b.read32(global::CAPS));
        assert_eq!(caps, BoardConfig::scatter_gather().caps());
        assert!(caps.scatter_gather && caps.address_64);
        assert_eq!(b.read32(global::MAX_TRANSFER), 64 * 1024);
        b.state.borrow_mut().int_status = int_done(0) | int_done(1) | int_error(1);
        assert!(!b.interrupt_pending(), "nothing enabled");
        b.write32(global::INT_ENABLE, int_done(1));
        assert!(b.interrupt_pending());
        b.write32(global::INT_STATUS, int_done(1));
        assert_eq!(b.read32(global::INT_STATUS), int_done(0) | int_error(1));
        assert!(!b.interrupt_pending());
        b.write32(global::INT_STATUS, 0);
        assert_eq!(b.read32(global::INT_STATUS), int_done(0) | int_error(1));
        b.write32(global::INT_STATUS, u32::MAX);
        assert_eq!(b.read32(global::INT_STATUS), 0);
        // Read-only and out-of-range accesses are driver bugs.
        b.write32(global::ID, 1);
        b.write32(ch(channel::CQ_PRODUCER), 1);
        let _ = b.read32(0x1002);
        b.write32(channel_base(5) + channel::CTRL, CTRL_RUN);
        assert_eq!(b.read32(global::ID), BOARD_ID);
        assert_eq!(r.violations.count(ViolationKind::Board), 4, "{:?}", r.violations.list());
        b.write32(global::GLOBAL_CTRL, GLOBAL_CTRL_RESET);
        assert_eq!(b.read32(global::INT_ENABLE), 0);
        assert_eq!(b.read32(global::GLOBAL_CTRL), 0);
    }

    #[test]
    fn sg_board_hand_driven_frame_drop_and_record() {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 16);
        let (w, h) = (64u32, 48u32);
        let pitch = 192u32; // stride larger than the 128-byte line
        start(b, &Program { sg: true, width: w, height: h, pitch, entries: 16, stride: 0 }, &ring, &cq);
        assert_eq!(b.read32(ch(channel::STATUS)), STATUS_RUNNING);
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());

        // Nothing posted: dropped.
        assert_eq!(b.capture_frame(0, 100), CaptureOutcome::Dropped(DropReason::NoBuffer));
        assert_eq!(b.read32(ch(channel::DROPPED_FRAMES)), 1);
        assert!(!b.interrupt_pending());

        // Post one frame: a scattered buffer split at 1000 bytes.
        let frame_bytes = (pitch * h) as usize;
        let buf = m.allocate_scattered(frame_bytes, "frame").unwrap();
        let list = a.get_scatter_gather_list(buf.va, frame_bytes).unwrap();
        let maps = list.mappings(1000);
        for (i, e) in maps.iter().enumerate() {
            let mut flags = 0;
            if i == 0 {
                flags |= DESC_START_OF_FRAME;
            }
            if i + 1 == maps.len() {
                flags |= DESC_END_OF_FRAME;
            }
            let d = SgDescriptor { address: e.logical_address, byte_count: e.byte_count, flags, tag: 77, ..Default::default() };
            m.write_physical(ring.logical + i as u64 * 32, d.as_bytes()).unwrap();
        }
        b.write32(ch(channel::RING_PRODUCER), maps.len() as u32);
        let out = b.capture_frame(0, 5000);
        assert_eq!(out, CaptureOutcome::Completed { index: 0, bytes: frame_bytes as u32, frame_number: 1, tag: 77 });
        assert!(b.interrupt_pending());
        assert_eq!(b.read32(global::INT_STATUS), int_done(0));
        b.write32(global::INT_STATUS, int_done(0));
        assert!(!b.interrupt_pending());
        assert_eq!(b.read32(ch(channel::RING_CONSUMER)), maps.len() as u32);
        assert_eq!(b.read32(ch(channel::CQ_PRODUCER)), 1);
        let rec = record(m, &cq, 0);
        assert_eq!((rec.index, rec.byte_count, rec.frame_number, rec.timestamp, rec.tag), (0, frame_bytes as u32, 1, 5000, 77));
        a.put_scatter_gather_list(&list);
        // The frame landed, byte for byte, padding included.
        let mut bytes = vec![0u8; frame_bytes];
        m.read_virtual(buf.va, &mut bytes).unwrap();
        let p = b.pattern(0).unwrap();
        p.verify_frame(1, &bytes, pitch as usize).unwrap();
        assert_eq!(read_header(&bytes), Some((0, 1)));
        assert!(bytes[128..192].iter().all(|&x| x == PAD_BYTE));
        let s = b.channel_stats(0).unwrap();
        assert_eq!((s.frames_produced, s.frames_dropped, s.descriptors_consumed), (1, 1, maps.len() as u64));

        // The list is put: a stale repost is an IOMMU fault and halts the channel.
        b.write32(ch(channel::CQ_CONSUMER), 1);
        let n = maps.len() as u32;
        for i in 0..n {
            let mut d = [0u8; 32];
            m.read_physical(ring.logical + u64::from(i) * 32, &mut d).unwrap();
            m.write_physical(ring.logical + u64::from((n + i) % 16) * 32, &d).unwrap();
        }
        b.write32(ch(channel::RING_PRODUCER), 2 * n);
        assert_eq!(b.capture_frame(0, 9000), CaptureOutcome::Halted { code: ERROR_DMA_FAULT });
        assert_eq!(b.read32(ch(channel::STATUS)), STATUS_HALTED | ERROR_DMA_FAULT << STATUS_ERROR_SHIFT);
        assert_eq!(b.read32(global::INT_STATUS) & int_error(0), int_error(0));
        assert_eq!(r.violations.count(ViolationKind::Dma), 1, "{:?}", r.violations.list());
        assert_eq!(b.capture_frame(0, 10_000), CaptureOutcome::NotRunning);

        b.write32(ch(channel::CTRL), CTRL_RESET);
        assert_eq!(b.read32(ch(channel::STATUS)), 0);
        assert_eq!(b.read32(ch(channel::RING_PRODUCER)), 0);
        assert!(m.free(buf.id));
        a.free_common_buffer(ring);
        a.free_common_buffer(cq);
        a.put();
        assert!(m.leaks().is_empty(), "{:?}", m.leaks());
    }

    #[test]
    fn legacy_board_slots_drop_and_completion() {
        let r = rig(BoardConfig::legacy());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        assert!(!Caps::decode(b.read32(global::CAPS)).scatter_gather);
        let (w, h) = (40u32, 10u32);
        let pitch = 256u32; // 80-byte lines rounded up to 256
        let stride = (pitch * h).next_multiple_of(4096);
        let slots = 3u32;
        let ring = a.allocate_common_buffer((stride * slots) as usize).unwrap();
        let cq = a.allocate_common_buffer(8 * 32).unwrap();
        assert!(ring.logical < FOUR_GIB);
        start(b, &Program { sg: false, width: w, height: h, pitch, entries: slots, stride }, &ring, &cq);
        assert!(b.is_running(0), "{:?}", r.violations.list());
        assert_eq!(b.frame_interval(0), Some(333_333));
        for f in 0..3u32 {
            let out = b.capture_frame(0, u64::from(f) * 333_333);
            assert_eq!(out, CaptureOutcome::Completed { index: f, bytes: pitch * h, frame_number: f, tag: 0 });
        }
        // All slots filled and none returned: drop.
        assert_eq!(b.capture_frame(0, 1), CaptureOutcome::Dropped(DropReason::NoBuffer));
        assert_eq!(b.read32(ch(channel::DROPPED_FRAMES)), 1);
        assert_eq!(b.read32(ch(channel::RING_CONSUMER)), 3);
        assert_eq!(b.read32(ch(channel::CQ_PRODUCER)), 3);
        for f in 0..3u32 {
            let rec = record(m, &cq, f);
            assert_eq!((rec.index, rec.frame_number, rec.byte_count), (f, f, pitch * h));
            let mut slot = vec![0u8; (pitch * h) as usize];
            m.read_physical(ring.logical + u64::from(f * stride), &mut slot).unwrap();
            b.pattern(0).unwrap().verify_frame(f, &slot, pitch as usize).unwrap();
        }
        // Return slot 0 and consume the records: the next frame (number 4) goes to slot 0.
        b.write32(ch(channel::CQ_CONSUMER), 3);
        b.write32(ch(channel::RING_PRODUCER), slots + 1);
        let out = b.capture_frame(0, 2);
        assert_eq!(out, CaptureOutcome::Completed { index: 0, bytes: pitch * h, frame_number: 4, tag: 0 });
        // Keep returning slots but never consume records: the 8-entry CQ fills, then drops.
        let mut producer = slots + 1;
        let outcome = loop {
            producer += 1;
            b.write32(ch(channel::RING_PRODUCER), producer);
            match b.capture_frame(0, 3) {
                CaptureOutcome::Completed { .. } => {}
                other => break other,
            }
        };
        assert_eq!(outcome, CaptureOutcome::Dropped(DropReason::CompletionQueueFull));
        assert_eq!(b.read32(ch(channel::CQ_PRODUCER)) - 3, 8);
        assert_eq!(b.read32(ch(channel::DROPPED_FRAMES)), 2);
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        a.free_common_buffer(ring);
        a.free_common_buffer(cq);
        a.put();
    }

    /// `CTRL_RESET` of an engine that owns a buffer catches a burst in
    /// flight: `STATUS_RUNNING` stays set and the burst lands at the first
    /// `STATUS` read (flushing the posted reset), `STATUS_RUNNING` clears
    /// after `RESET_DRAIN_READS` reads. A driver that frees the memory
    /// before reading `STATUS` back gets an IOMMU fault when the board
    /// settles.
    #[test]
    fn a_reset_with_a_burst_in_flight_completes_only_when_status_is_read() {
        let r = rig(BoardConfig::legacy());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (w, h, pitch) = (16u32, 4u32, 256u32);
        let stride = 4096u32;
        let ring = a.allocate_common_buffer(2 * stride as usize).unwrap();
        let cq = a.allocate_common_buffer(8 * 32).unwrap();
        start(b, &Program { sg: false, width: w, height: h, pitch, entries: 2, stride }, &ring, &cq);
        assert!(b.is_running(0));
        // Reset with a slot owned by the board: the burst is in flight.
        b.write32(ch(channel::CTRL), CTRL_RESET);
        assert!(b.is_running(0), "STATUS_RUNNING until the burst is done");
        assert_eq!(b.capture_frame(0, 1), CaptureOutcome::NotRunning, "no new frame after a reset");
        let mut slot = vec![0u8; 4];
        m.read_physical(ring.logical, &mut slot).unwrap();
        assert_eq!(slot, [0; 4], "not landed yet");
        assert_eq!(b.read32(ch(channel::STATUS)), STATUS_RUNNING, "the first read lands the burst");
        m.read_physical(ring.logical, &mut slot).unwrap();
        assert_eq!(slot, [BURST_BYTE; 4]);
        assert_eq!(b.read32(ch(channel::STATUS)), 0, "reset complete");
        assert!(!b.is_running(0));
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        // The same without the read-back: the memory freed first, the burst
        // lands when the board settles: an IOMMU fault.
        start(b, &Program { sg: false, width: w, height: h, pitch, entries: 2, stride }, &ring, &cq);
        b.write32(ch(channel::CTRL), CTRL_RESET);
        a.free_common_buffer(ring);
        b.settle();
        assert_eq!(r.violations.count(ViolationKind::Dma), 1, "{:?}", r.violations.list());
        assert!(!b.is_running(0), "settled");
        // A reset of an idle (or halted, or hung) engine is immediate.
        b.write32(ch(channel::CTRL), CTRL_RESET);
        assert_eq!(b.read32(ch(channel::STATUS)), 0);
        a.free_common_buffer(cq);
    }

    /// [`BoardFault::ResetStuck`]: the next `CTRL_RESET` keeps
    /// `STATUS_RUNNING` for exactly `reads` `STATUS` reads, time passing
    /// ([`Board::settle`]) does not complete it, a second reset meanwhile
    /// does not either, and the burst it caught lands only at the read
    /// that acknowledges it; `reads: u32::MAX` never clears.
    #[test]
    fn a_stuck_reset_clears_only_after_its_reads() {
        let r = rig(BoardConfig::legacy());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (w, h, pitch, stride) = (16u32, 4u32, 256u32, 4096u32);
        let ring = a.allocate_common_buffer(2 * stride as usize).unwrap();
        let cq = a.allocate_common_buffer(8 * 32).unwrap();
        start(b, &Program { sg: false, width: w, height: h, pitch, entries: 2, stride }, &ring, &cq);
        b.inject_now(BoardFault::ResetStuck { channel: 0, reads: 5 });
        assert!(b.is_running(0), "armed only: the engine runs on");
        b.write32(ch(channel::CTRL), CTRL_RESET);
        b.settle();
        assert!(b.is_running(0), "time alone does not acknowledge a stuck reset");
        assert_eq!(b.capture_frame(0, 1), CaptureOutcome::NotRunning, "the wedged engine captures nothing");
        let mut slot = vec![0u8; 4];
        for read in 1..5 {
            assert_eq!(b.read32(ch(channel::STATUS)), STATUS_RUNNING, "read {read} of 5");
            m.read_physical(ring.logical, &mut slot).unwrap();
            assert_eq!(slot, [0; 4], "the burst waits for the acknowledgement (read {read})");
        }
        // Another reset while stuck changes nothing.
        b.write32(ch(channel::CTRL), CTRL_RESET);
        assert!(b.is_running(0));
        assert_eq!(b.read32(ch(channel::STATUS)), 0, "the fifth read acknowledges the reset");
        let stats = b.channel_stats(0).unwrap();
        assert_eq!((stats.resets_stuck, stats.resets_stuck_acknowledged), (1, 1));
        m.read_physical(ring.logical, &mut slot).unwrap();
        assert_eq!(slot, [BURST_BYTE; 4], "and lands the burst");
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        // Never: no number of reads clears it.
        start(b, &Program { sg: false, width: w, height: h, pitch, entries: 2, stride }, &ring, &cq);
        b.inject_now(BoardFault::ResetStuck { channel: 0, reads: u32::MAX });
        b.write32(ch(channel::CTRL), CTRL_RESET);
        for _ in 0..1000 {
            assert_eq!(b.read32(ch(channel::STATUS)), STATUS_RUNNING);
        }
        b.settle();
        assert!(b.is_running(0), "never acknowledged");
        a.free_common_buffer(ring);
        a.free_common_buffer(cq);
    }

    #[test]
    fn thirty_two_bit_board_faults_on_high_ring_and_misaligned_slots() {
        let r = rig(BoardConfig::legacy());
        let (b, m) = (&r.board, &r.memory);
        let high = m.allocate_contiguous(2 * PAGE_SIZE, PAGE_SIZE, u64::MAX, "high").unwrap();
        assert!(high.page_addresses[0] >= FOUR_GIB);
        let hb = CommonBuffer { va: high.va, logical: high.page_addresses[0], bytes: 2 * PAGE_SIZE };
        let cq = r.adapter.allocate_common_buffer(PAGE_SIZE).unwrap();
        start(b, &Program { sg: false, width: 16, height: 2, pitch: 256, entries: 1, stride: 4096 }, &hb, &cq);
        assert_eq!(b.read32(ch(channel::STATUS)), STATUS_HALTED | ERROR_DMA_FAULT << STATUS_ERROR_SHIFT);
        assert!(b.interrupt_pending(), "int_error raised");
        assert_eq!(r.violations.count(ViolationKind::Board), 1, "{:?}", r.violations.list());
        // Misaligned slot base (64 KiB board).
        let mut cfg = BoardConfig::legacy();
        cfg.alignment = 64 * 1024;
        let r2 = rig(cfg);
        let ring = r2.adapter.allocate_common_buffer(64 * 1024 + 4096).unwrap();
        let cq2 = r2.adapter.allocate_common_buffer(PAGE_SIZE).unwrap();
        let mis = CommonBuffer { logical: (ring.logical | 0xFFFF) + 1 + 4096, ..ring };
        start(&r2.board, &Program { sg: false, width: 16, height: 2, pitch: 256, entries: 1, stride: 64 * 1024 }, &mis, &cq2);
        assert_eq!(r2.board.read32(ch(channel::STATUS)) >> STATUS_ERROR_SHIFT, ERROR_DMA_FAULT);
        // S/G mode on the legacy board.
        start(&r2.board, &Program { sg: true, width: 16, height: 2, pitch: 256, entries: 1, stride: 0 }, &ring, &cq2);
        assert_eq!(r2.board.read32(ch(channel::STATUS)) >> STATUS_ERROR_SHIFT, ERROR_BAD_DESCRIPTOR);
        assert_eq!(r2.violations.count(ViolationKind::Board), 2, "{:?}", r2.violations.list());
        m.free(high.id);
    }

    #[test]
    fn bad_descriptors_halt_and_are_reported() {
        let r = rig(BoardConfig::scatter_gather());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let (ring, cq) = rings(a, 4);
        let buf = m.allocate_scattered(PAGE_SIZE, "f").unwrap();
        let list = a.get_scatter_gather_list(buf.va, PAGE_SIZE).unwrap();
        let e = list.elements[0];
        let post = |d: SgDescriptor| {
            m.write_physical(ring.logical, d.as_bytes()).unwrap();
            b.write32(ch(channel::RING_PRODUCER), 1);
        };
        let cases = [
            (SgDescriptor { address: e.logical_address, byte_count: 4096, flags: DESC_END_OF_FRAME, ..Default::default() }, ERROR_BAD_DESCRIPTOR),
            (SgDescriptor { address: e.logical_address, byte_count: 1 << 20, flags: 3, ..Default::default() }, ERROR_BAD_DESCRIPTOR),
            (SgDescriptor { address: e.logical_address, byte_count: 4096, flags: DESC_START_OF_FRAME, ..Default::default() }, ERROR_BAD_DESCRIPTOR),
            (SgDescriptor { address: e.logical_address, byte_count: 100, flags: 3, ..Default::default() }, ERROR_OVERRUN),
        ];
        for (d, code) in cases {
            start(b, &Program { sg: true, width: 32, height: 4, pitch: 64, entries: 4, stride: 0 }, &ring, &cq);
            post(d);
            assert_eq!(b.capture_frame(0, 0), CaptureOutcome::Halted { code });
        }
        assert_eq!(r.violations.count(ViolationKind::Board), 4, "{:?}", r.violations.list());
        a.put_scatter_gather_list(&list);
        m.free(buf.id);
    }

    #[test]
    fn faults_apply_at_next_capture() {
        let r = rig(BoardConfig::legacy());
        let (b, m, a) = (&r.board, &r.memory, &r.adapter);
        let ring = a.allocate_common_buffer(4 * 4096).unwrap();
        let cq = a.allocate_common_buffer(8 * 32).unwrap();
        start(b, &Program { sg: false, width: 16, height: 4, pitch: 256, entries: 4, stride: 4096 }, &ring, &cq);
        b.inject(BoardFault::BadSlotIndex { channel: 0 });
        b.inject(BoardFault::DmaError { channel: 1 });
        assert_eq!(b.pending_faults().len(), 2);
        let CaptureOutcome::Completed { index, .. } = b.capture_frame(0, 0) else { panic!("completed") };
        assert_eq!(index, 7);
        assert_eq!(b.pending_faults(), vec![BoardFault::DmaError { channel: 1 }]);
        b.inject(BoardFault::BadDescriptorIndex { channel: 0 });
        let CaptureOutcome::Completed { index, .. } = b.capture_frame(0, 0) else { panic!("completed") };
        assert_eq!(index, 2, "in range but not slot 1");
        b.inject(BoardFault::OversizedLength { channel: 0 });
        let CaptureOutcome::Completed { bytes, .. } = b.capture_frame(0, 0) else { panic!("completed") };
        assert_eq!(bytes, OVERSIZED_BYTE_COUNT);
        assert_eq!(record(m, &cq, 2).byte_count, OVERSIZED_BYTE_COUNT);
        // Spurious interrupt: line up, INT_STATUS 0 after the W1C, deasserted by the read.
        b.write32(global::INT_STATUS, u32::MAX);
        b.inject(BoardFault::InterruptStorm { count: 2 });
        b.write32(ch(channel::RING_PRODUCER), 4 + 3);
        b.write32(ch(channel::CQ_CONSUMER), 3);
        assert!(matches!(b.capture_frame(0, 0), CaptureOutcome::Completed { .. }));
        b.write32(global::INT_STATUS, u32::MAX);
        assert!(b.interrupt_pending());
        assert_eq!(b.read32(global::INT_STATUS), 0);
        assert!(b.interrupt_pending());
        assert_eq!(b.read32(global::INT_STATUS), 0);
        assert!(!b.interrupt_pending());
        // Hang: nothing happens until reset.
        b.inject(BoardFault::Hang { channel: 0 });
        assert_eq!(b.capture_frame(0, 0), CaptureOutcome::Hung);
        assert_eq!(b.capture_frame(0, 0), CaptureOutcome::Hung);
        assert!(b.is_running(0));
        // DMA error on the next capture.
        start(b, &Program { sg: false, width: 16, height: 4, pitch: 256, entries: 4, stride: 4096 }, &ring, &cq);
        b.inject(BoardFault::DmaError { channel: 0 });
        assert_eq!(b.capture_frame(0, 0), CaptureOutcome::Halted { code: ERROR_DMA_FAULT });
        assert!(b.read32(global::INT_STATUS) & int_error(0) != 0);
        // Surprise removal: all ones, one last assertion, nothing captured.
        b.inject(BoardFault::SurpriseRemoval);
        assert_eq!(b.capture_frame(0, 0), CaptureOutcome::Removed);
        assert!(b.interrupt_pending());
        assert_eq!(b.read32(global::INT_STATUS), u32::MAX);
        assert_eq!(b.read32(global::ID), u32::MAX);
        assert_eq!(b.read32(ch(channel::STATUS)), u32::MAX);
        assert!(!b.interrupt_pending());
        b.write32(ch(channel::CTRL), CTRL_RESET);
        assert!(!b.is_running(0));
        assert!(r.violations.is_empty(), "{:?}", r.violations.list());
        a.free_common_buffer(ring);
        a.free_common_buffer(cq);
    }
}
