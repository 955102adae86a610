//! Test doubles: a fake bus behind the real `CapdmaBusInterface` table of
//! [`super::table`], and a fake KS queue implementing `KsPinPort`.
//!
//! Single-threaded (`Cell`/`RefCell`); the fake bus calls the registered
//! completion callback synchronously from `deliver`, as the bus DPC would.
#![allow(clippy::missing_panics_doc, clippy::cast_possible_truncation, clippy::missing_errors_doc)]

use crate::ports::{FrameCompletion, Irql, KsPinPort, StreamOffset};
use super::table::{call_back, FakeChannel};
use capdma_interface::format::FOURCC_NV12;
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, Completion, CompletionKind, DmaConfig, PfnCompletion, SgElement, SlotRing,
    CAPDMA_PART_END, CAPDMA_PART_START,
};
use core::cell::{Cell, RefCell};
use core::ffi::c_void;
use std::collections::VecDeque;

/// One frame posted to the fake bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub tag: u32,
    pub elements: Vec<SgElement>,
}


/// One `ProgramFramePart` call the fake bus answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartCall {
    pub tag: u32,
    /// The elements offered (`elements[..count]`).
    pub elements: Vec<SgElement>,
    pub flags: u32,
    pub status: NtStatus,
    /// `*accepted` as answered.
    pub accepted: u32,
}

/// A part of a frame posted in parts, in the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostedPart {
    pub tag: u32,
    /// Descriptors it takes.
    pub descriptors: u32,
    /// The frame's bytes up to the end of this part.
    pub cumulative: u32,
    /// It closed the frame (`CAPDMA_PART_END` with every element accepted).
    pub last: bool,
}

/// The fake bus of one channel (channel 0).
#[derive(Debug)]
pub struct FakeBus {
    pub config: Cell<DmaConfig>,
    pub adapter_answer: Cell<(*mut c_void, u32)>,
    pub derefs: Cell<u32>,
    /// Frames `ProgramFrame` accepts before `STATUS_DEVICE_BUSY`.
    pub ring_capacity: Cell<usize>,
    pub posted: RefCell<VecDeque<Posted>>,
    pub program_error: Cell<Option<NtStatus>>,
    pub running: Cell<bool>,
    pub started: RefCell<Vec<ChannelFormat>>,
    pub start_status: Cell<NtStatus>,
    pub stops: Cell<u32>,
    /// `StopChannel` answers `STATUS_PENDING` and keeps the posted frames
    /// (an engine whose reset has not completed).
    pub hold_on_stop: Cell<bool>,
    pub callback: Cell<Option<(PfnCompletion, *mut c_void)>>,
    pub register_calls: RefCell<Vec<bool>>,
    pub returned: RefCell<Vec<u32>>,
    pub slot_memory: RefCell<Vec<u8>>,
    pub ring: Cell<SlotRing>,
    /// The interface version answered (1 or 2).
    pub version: Cell<u16>,
    /// S/G descriptors in use (frames and parts in flight); posting needs
    /// free ones out of `config.descriptor_count`.
    pub descriptors_used: Cell<u32>,
    /// Every `ProgramFramePart` call, in order.
    pub part_calls: RefCell<Vec<PartCall>>,
    /// Parts in the ring, oldest first.
    pub parts: RefCell<VecDeque<PostedPart>>,
    /// The open frame (posted in parts, not yet closed): its tag and bytes so far.
    pub open: Cell<Option<(u32, u32)>>,
    /// `ProgramFramePart` answers this (nothing posted) when set.
    pub part_error: Cell<Option<NtStatus>>,
    adapter_object: u64,
}

fn is_cb(b: &FakeBus) -> bool {
    b.config.get().mode == 2
}

impl FakeChannel for FakeBus {
    fn dereference(&self) {
        self.derefs.set(self.derefs.get() + 1);
    }

    fn dma_config(&self) -> DmaConfig {
        self.config.get()
    }

    fn dma_adapter(&self) -> Result<(*mut c_void, u32, u32), NtStatus> {
        if is_cb(self) {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        let (a, max) = self.adapter_answer.get();
        Ok((a, max, 16))
    }

    fn program_frame(&self, tag: u32, elements: &[SgElement]) -> NtStatus {
        if is_cb(self) {
            return STATUS_INVALID_DEVICE_REQUEST;
        }
        if !self.running.get() {
            return STATUS_DEVICE_NOT_READY;
        }
        if elements.is_empty() {
            return STATUS_INVALID_PARAMETER;
        }
        if let Some(e) = self.program_error.get() {
            return e;
        }
        if self.open.get().is_some() {
            return STATUS_INVALID_DEVICE_STATE;
        }
        let count = elements.len() as u32;
        if self.posted.borrow().len() >= self.ring_capacity.get() || count > self.free_descriptors() {
            return STATUS_DEVICE_BUSY;
        }
        self.descriptors_used.set(self.descriptors_used.get() + count);
        self.posted.borrow_mut().push_back(Posted { tag, elements: elements.to_vec() });
        STATUS_SUCCESS
    }

    fn interface_version(&self) -> u16 {
        self.version.get()
    }

    fn program_frame_part(&self, tag: u32, elements: &[SgElement], flags: u32) -> (NtStatus, u32) {
        let (status, accepted) = self.post_part(tag, elements, flags);
        self.part_calls.borrow_mut().push(PartCall { tag, elements: elements.to_vec(), flags, status, accepted });
        (status, accepted)
    }

    fn slot_ring(&self) -> Result<SlotRing, NtStatus> {
        if is_cb(self) {
            Ok(self.ring.get())
        } else {
            Err(STATUS_INVALID_DEVICE_REQUEST)
        }
    }

    fn return_slot(&self, slot: u32) -> NtStatus {
        if slot >= self.config.get().slot_count {
            return STATUS_INVALID_PARAMETER;
        }
        self.returned.borrow_mut().push(slot);
        STATUS_SUCCESS
    }

    fn start_channel(&self, format: ChannelFormat) -> NtStatus {
        if self.start_status.get() != STATUS_SUCCESS {
            return self.start_status.get();
        }
        if self.running.get() {
            return STATUS_DEVICE_BUSY;
        }
        self.running.set(true);
        self.started.borrow_mut().push(format);
        let line = if format.fourcc == FOURCC_NV12 { format.width } else { format.width * 2 };
        let mut ring = self.ring.get();
        ring.line_pitch = line.next_multiple_of(256);
        self.ring.set(ring);
        STATUS_SUCCESS
    }

    fn stop_channel(&self) -> NtStatus {
        self.running.set(false);
        self.stops.set(self.stops.get() + 1);
        if self.hold_on_stop.get() {
            return capdma_interface::status::STATUS_PENDING;
        }
        loop {
            let next = self.posted.borrow_mut().pop_front();
            let Some(p) = next else { break };
            self.deliver(Completion {
                channel: 0,
                kind: CompletionKind::Frame as u32,
                tag: p.tag,
                bytes_written: 0,
                status: STATUS_CANCELLED,
                frame_number: 0,
                timestamp: 0,
            });
        }
        // Frames posted in parts: one Frame completion each, none for parts.
        while self.terminate_parts(STATUS_CANCELLED).is_some() {}
        self.descriptors_used.set(0);
        let mut ring = self.ring.get();
        ring.line_pitch = 0;
        self.ring.set(ring);
        STATUS_SUCCESS
    }

    fn register_completion(&self, callback: Option<(PfnCompletion, *mut c_void)>) -> NtStatus {
        if self.running.get() {
            return STATUS_DEVICE_BUSY;
        }
        self.register_calls.borrow_mut().push(callback.is_some());
        self.callback.set(callback);
        STATUS_SUCCESS
    }
}

impl FakeBus {
    fn new(config: DmaConfig) -> Self {
        let slot_memory = vec![0u8; (config.slot_count * config.slot_bytes) as usize];
        let mut b = Self {
            config: Cell::new(config),
            adapter_answer: Cell::new((core::ptr::null_mut(), 1 << 20)),
            derefs: Cell::new(0),
            ring_capacity: Cell::new(32),
            posted: RefCell::new(VecDeque::new()),
            program_error: Cell::new(None),
            running: Cell::new(false),
            started: RefCell::new(Vec::new()),
            start_status: Cell::new(STATUS_SUCCESS),
            stops: Cell::new(0),
            hold_on_stop: Cell::new(false),
            callback: Cell::new(None),
            register_calls: RefCell::new(Vec::new()),
            returned: RefCell::new(Vec::new()),
            slot_memory: RefCell::new(slot_memory),
            ring: Cell::new(SlotRing {
                base: core::ptr::null_mut(),
                base_logical: 0x8000_0000,
                slot_count: config.slot_count,
                slot_stride: config.slot_bytes,
                slot_bytes: config.slot_bytes,
                line_pitch: 0,
            }),
            version: Cell::new(1),
            descriptors_used: Cell::new(0),
            part_calls: RefCell::new(Vec::new()),
            parts: RefCell::new(VecDeque::new()),
            open: Cell::new(None),
            part_error: Cell::new(None),
            adapter_object: 0xADA0,
        };
        let base = b.slot_memory.get_mut().as_mut_ptr();
        let mut ring = b.ring.get();
        ring.base = base;
        b.ring.set(ring);
        b
    }

    /// An S/G channel: 64 KiB `max_transfer`, 256 descriptors, 64-byte alignment.
    pub fn scatter_gather() -> Self {
        let b = Self::new(DmaConfig {
            mode: 1,
            reason: 1,
            alignment: 64,
            max_transfer: 64 * 1024,
            address_bits: 64,
            slot_count: 0,
            slot_bytes: 0,
            descriptor_count: 256,
            channel_count: 1,
            max_frame_bytes: 4096 * 2 * 2160,
        });
        let adapter = core::ptr::from_ref(&b.adapter_object).cast_mut().cast::<c_void>();
        b.adapter_answer.set((adapter, 1 << 20));
        b
    }

    /// A common-buffer channel of `slots` slots of `slot_bytes`.
    pub fn common_buffer(slots: u32, slot_bytes: u32) -> Self {
        Self::new(DmaConfig {
            mode: 2,
            reason: 2,
            alignment: 4096,
            max_transfer: 0,
            address_bits: 32,
            slot_count: slots,
            slot_bytes,
            descriptor_count: 0,
            channel_count: 1,
            max_frame_bytes: slot_bytes,
        })
    }

    /// The table the bus answers a query with (context = `self`).
    pub fn table(&self) -> CapdmaBusInterface {
        FakeChannel::table(self)
    }

    /// Calls the registered callback with `completion` (as the bus DPC does).
    pub fn deliver(&self, completion: Completion) {
        if let Some(callback) = self.callback.get() {
            // SAFETY: the pin registered this callback and context and keeps
            // them valid while registered.
            unsafe { call_back(callback, &completion) };
        }
    }

    /// An S/G channel answering interface version 2 whose descriptor ring
    /// has `descriptors` entries.
    pub fn scatter_gather_v2(descriptors: u32) -> Self {
        let b = Self::scatter_gather();
        b.version.set(2);
        b.set_descriptor_count(descriptors);
        b
    }

    /// Sets `DmaConfig.descriptor_count` (what the pin reads at device start).
    pub fn set_descriptor_count(&self, descriptors: u32) {
        let mut config = self.config.get();
        config.descriptor_count = descriptors;
        self.config.set(config);
    }

    /// Descriptors free in the ring.
    pub fn free_descriptors(&self) -> u32 {
        self.config.get().descriptor_count.saturating_sub(self.descriptors_used.get())
    }

    /// `ProgramFramePart` as the contract says: as many elements as the
    /// ring has free entries for.
    fn post_part(&self, tag: u32, elements: &[SgElement], flags: u32) -> (NtStatus, u32) {
        if !self.running.get() {
            return (STATUS_DEVICE_NOT_READY, 0);
        }
        if elements.is_empty() || flags & !(CAPDMA_PART_START | CAPDMA_PART_END) != 0 {
            return (STATUS_INVALID_PARAMETER, 0);
        }
        if let Some(e) = self.part_error.get() {
            return (e, 0);
        }
        let bytes_before = if flags & CAPDMA_PART_START != 0 {
            if self.open.get().is_some() {
                return (STATUS_INVALID_DEVICE_STATE, 0);
            }
            let in_flight = self.posted.borrow().iter().any(|p| p.tag == tag) || self.parts.borrow().iter().any(|p| p.tag == tag);
            if in_flight {
                return (STATUS_INVALID_PARAMETER, 0);
            }
            0
        } else {
            match self.open.get() {
                None => return (STATUS_INVALID_DEVICE_STATE, 0),
                Some((open, _)) if open != tag => return (STATUS_INVALID_PARAMETER, 0),
                Some((_, bytes)) => bytes,
            }
        };
        let free = self.free_descriptors();
        if free == 0 {
            return (STATUS_DEVICE_BUSY, 0);
        }
        let accepted = free.min(elements.len() as u32);
        let cumulative = bytes_before + elements[..accepted as usize].iter().map(|e| e.byte_count).sum::<u32>();
        let last = flags & CAPDMA_PART_END != 0 && accepted as usize == elements.len();
        self.descriptors_used.set(self.descriptors_used.get() + accepted);
        self.parts.borrow_mut().push_back(PostedPart { tag, descriptors: accepted, cumulative, last });
        self.open.set(if last { None } else { Some((tag, cumulative)) });
        (STATUS_SUCCESS, accepted)
    }

    /// The board completes the oldest part in the ring: a `FramePart`
    /// completion (bytes so far), or the frame's `Frame` completion for its
    /// last part. Returns the part.
    pub fn complete_part(&self, frame_number: u32) -> Option<PostedPart> {
        let part = self.parts.borrow_mut().pop_front()?;
        self.descriptors_used.set(self.descriptors_used.get().saturating_sub(part.descriptors));
        let kind = if part.last { CompletionKind::Frame } else { CompletionKind::FramePart };
        self.deliver(Completion {
            channel: 0,
            kind: kind as u32,
            tag: part.tag,
            bytes_written: part.cumulative,
            status: STATUS_SUCCESS,
            frame_number,
            timestamp: i64::from(frame_number) * 1000,
        });
        Some(part)
    }

    /// The bus terminates the oldest frame posted in parts (open, or with
    /// parts in the ring) with `status`: its parts leave the ring, one
    /// `Frame` completion, none for the parts. Returns its tag.
    pub fn terminate_parts(&self, status: NtStatus) -> Option<u32> {
        let tag = self.parts.borrow().front().map(|p| p.tag).or(self.open.get().map(|(t, _)| t))?;
        let freed: u32 = self.parts.borrow().iter().filter(|p| p.tag == tag).map(|p| p.descriptors).sum();
        self.parts.borrow_mut().retain(|p| p.tag != tag);
        self.descriptors_used.set(self.descriptors_used.get().saturating_sub(freed));
        if self.open.get().is_some_and(|(t, _)| t == tag) {
            self.open.set(None);
        }
        self.deliver(Completion {
            channel: 0,
            kind: CompletionKind::Frame as u32,
            tag,
            bytes_written: 0,
            status,
            frame_number: 0,
            timestamp: 0,
        });
        Some(tag)
    }

    /// Completes the oldest posted frame; returns its tag.
    pub fn complete_oldest(&self, bytes: u32, status: NtStatus, frame_number: u32) -> Option<u32> {
        let posted = self.posted.borrow_mut().pop_front()?;
        self.descriptors_used.set(self.descriptors_used.get().saturating_sub(posted.elements.len() as u32));
        self.deliver(Completion {
            channel: 0,
            kind: CompletionKind::Frame as u32,
            tag: posted.tag,
            bytes_written: bytes,
            status,
            frame_number,
            timestamp: i64::from(frame_number) * 1000,
        });
        Some(posted.tag)
    }

    /// Writes a frame into `slot` (line `l`, byte `i` = `seed + l * 7 + i`,
    /// at the running line pitch, padding 0x55) and completes it.
    pub fn fill_slot(&self, slot: u32, lines: u32, line_bytes: u32, seed: u8, status: NtStatus, frame_number: u32) {
        let ring = self.ring.get();
        {
            let mut mem = self.slot_memory.borrow_mut();
            let base = (slot * ring.slot_stride) as usize;
            let pitch = ring.line_pitch as usize;
            for l in 0..lines as usize {
                for i in 0..pitch {
                    mem[base + l * pitch + i] =
                        if i < line_bytes as usize { slot_byte(seed, l, i) } else { 0x55 };
                }
            }
        }
        self.deliver(Completion {
            channel: 0,
            kind: CompletionKind::Slot as u32,
            tag: slot,
            bytes_written: lines * ring.line_pitch,
            status,
            frame_number,
            timestamp: i64::from(frame_number) * 1000,
        });
    }
}

/// The byte `fill_slot` writes at line `l`, column `i`.
pub fn slot_byte(seed: u8, l: usize, i: usize) -> u8 {
    seed.wrapping_add((l * 7 + i) as u8)
}

/// One frame of the fake KS queue.
#[derive(Debug)]
pub struct FakeFrame {
    pub data: Vec<u8>,
    pub mappings: Vec<SgElement>,
    pub extent: u32,
    pub completion: Option<FrameCompletion>,
    /// Times the frame was completed (`complete_frame` through any pointer).
    pub completions: u32,
    pub released: bool,
    clones: u32,
    passed: bool,
}

/// A stream pointer of the fake queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ptr {
    Leading,
    Clone(usize),
}

/// The fake KS queue of one pin.
#[derive(Debug, Default)]
pub struct FakePort {
    pub frames: RefCell<Vec<FakeFrame>>,
    leading: Cell<usize>,
    leading_offset: Cell<u32>,
    pub locked: Cell<bool>,
    clones: RefCell<Vec<Option<usize>>>,
    pub deleted: Cell<u32>,
    pub attempts: Cell<u32>,
    pub irql: Cell<Irql>,
    pub fail_clone: Cell<bool>,
    pub mutex_held: Cell<bool>,
    pub mutex_acquired: Cell<u32>,
    /// Byte mode (`OffsetOut.Data`, common-buffer pins) instead of mappings.
    pub byte_mode: Cell<bool>,
    /// What the pin reported through `KsPinPort::report`, in order.
    pub reports: RefCell<Vec<crate::ports::PinEvent>>,
    /// The master clock the application assigned (its stream time now,
    /// 100-ns units), or none.
    pub clock: Cell<Option<i64>>,
    /// References the pin holds on the clock (`KsPinGetReferenceClockInterface`
    /// less `Release`).
    pub clock_references: Cell<i32>,
}

impl FakePort {
    /// Appends a frame of `bytes` bytes (filled 0xEE) whose mappings are
    /// `page`-byte pieces at made-up addresses.
    pub fn push_frame(&self, bytes: u32, page: u32) {
        let index = self.frames.borrow().len() as u64;
        let mut mappings = Vec::new();
        let mut done = 0;
        while done < bytes {
            let n = page.min(bytes - done);
            mappings.push(SgElement {
                logical_address: 0x1_0000_0000 + index * 0x100_0000 + u64::from(done),
                byte_count: n,
                alignment: 0,
            });
            done += n;
        }
        self.frames.borrow_mut().push(FakeFrame {
            data: vec![0xEE; bytes as usize],
            mappings,
            extent: bytes,
            completion: None,
            completions: 0,
            released: false,
            clones: 0,
            passed: false,
        });
    }

    /// Index of the frame at the leading edge.
    pub fn leading_index(&self) -> usize {
        self.leading.get()
    }

    /// `OffsetOut` of the leading edge into its frame (mappings advanced over).
    pub fn leading_offset(&self) -> u32 {
        self.leading_offset.get()
    }

    /// Clones alive.
    pub fn live_clones(&self) -> usize {
        self.clones.borrow().iter().flatten().count()
    }

    fn frame_of(&self, p: Ptr) -> Option<usize> {
        match p {
            Ptr::Leading => Some(self.leading.get()),
            Ptr::Clone(id) => self.clones.borrow().get(id).copied().flatten(),
        }
    }

    fn offset_of(&self, p: Ptr) -> u32 {
        match p {
            Ptr::Leading => self.leading_offset.get(),
            Ptr::Clone(_) => 0,
        }
    }

    fn maybe_release(&self, frame: usize) {
        if let Some(f) = self.frames.borrow_mut().get_mut(frame) {
            if f.passed && f.clones == 0 {
                f.released = true;
            }
        }
    }

    fn pass_leading(&self) -> Result<(), NtStatus> {
        let i = self.leading.get();
        if let Some(f) = self.frames.borrow_mut().get_mut(i) {
            f.passed = true;
        }
        self.maybe_release(i);
        self.leading.set(i + 1);
        self.leading_offset.set(0);
        if i + 1 >= self.frames.borrow().len() {
            self.locked.set(false);
            return Err(STATUS_DEVICE_NOT_READY);
        }
        Ok(())
    }
}

impl KsPinPort for &FakePort {
    type StreamPointer = Ptr;

    fn report(&self, event: crate::ports::PinEvent) {
        self.reports.borrow_mut().push(event);
    }

    fn acquire_reference_clock(&self) -> bool {
        assert_eq!(self.irql.get(), 0, "KsPinGetReferenceClockInterface is PASSIVE_LEVEL");
        let has = self.clock.get().is_some();
        if has {
            self.clock_references.set(self.clock_references.get() + 1);
        }
        has
    }

    fn release_reference_clock(&self) {
        if self.clock.get().is_some() && self.clock_references.get() > 0 {
            self.clock_references.set(self.clock_references.get() - 1);
        }
    }

    fn stream_time(&self) -> Option<i64> {
        self.clock.get().filter(|_| self.clock_references.get() > 0)
    }

    fn leading_edge(&self) -> Option<Ptr> {
        if self.leading.get() < self.frames.borrow().len() {
            self.locked.set(true);
            Some(Ptr::Leading)
        } else {
            None
        }
    }

    fn clone_pointer(&self, pointer: Ptr) -> Result<Ptr, NtStatus> {
        if self.fail_clone.get() {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        let frame = self.frame_of(pointer).ok_or(STATUS_INVALID_PARAMETER)?;
        self.frames.borrow_mut()[frame].clones += 1;
        let mut clones = self.clones.borrow_mut();
        clones.push(Some(frame));
        Ok(Ptr::Clone(clones.len() - 1))
    }

    fn offset_out(&self, pointer: Ptr) -> StreamOffset {
        let empty = StreamOffset { data: core::ptr::null_mut(), mappings: core::ptr::null(), count: 0, remaining: 0 };
        let Some(frame) = self.frame_of(pointer) else { return empty };
        let offset = self.offset_of(pointer);
        let mut frames = self.frames.borrow_mut();
        let Some(f) = frames.get_mut(frame) else { return empty };
        if self.byte_mode.get() {
            return StreamOffset {
                data: f.data.as_mut_ptr().wrapping_add(offset as usize),
                mappings: core::ptr::null(),
                count: f.extent,
                remaining: f.extent.saturating_sub(offset),
            };
        }
        if f.mappings.is_empty() {
            return empty;
        }
        StreamOffset {
            data: core::ptr::null_mut(),
            mappings: f.mappings.as_ptr().wrapping_add(offset as usize),
            count: f.mappings.len() as u32,
            remaining: f.mappings.len() as u32 - offset,
        }
    }

    fn frame_extent(&self, pointer: Ptr) -> u32 {
        self.frame_of(pointer).and_then(|i| self.frames.borrow().get(i).map(|f| f.extent)).unwrap_or(0)
    }

    fn advance_offsets(&self, pointer: Ptr, out_used: u32, eject: bool) -> Result<(), NtStatus> {
        assert_eq!(pointer, Ptr::Leading, "the pin advances only the leading edge");
        assert!(self.locked.get(), "advance of an unlocked leading edge");
        let count = self.offset_out(pointer).count;
        let offset = self.leading_offset.get() + out_used;
        self.leading_offset.set(offset);
        if eject || offset >= count {
            return self.pass_leading();
        }
        Ok(())
    }

    fn advance_offsets_and_unlock(&self, pointer: Ptr, out_used: u32, eject: bool) {
        let _ = self.advance_offsets(pointer, out_used, eject);
        self.locked.set(false);
    }

    fn unlock(&self, pointer: Ptr, eject: bool) {
        assert_eq!(pointer, Ptr::Leading);
        if eject {
            let _ = self.pass_leading();
        }
        self.locked.set(false);
    }

    fn complete_frame(&self, pointer: Ptr, completion: &FrameCompletion) {
        let frame = self.frame_of(pointer).expect("complete_frame of a dead pointer");
        let mut frames = self.frames.borrow_mut();
        frames[frame].completion = Some(*completion);
        frames[frame].completions += 1;
    }

    fn delete(&self, pointer: Ptr) {
        match pointer {
            Ptr::Leading => self.locked.set(false),
            Ptr::Clone(id) => {
                let frame = self.clones.borrow_mut()[id].take().expect("clone deleted twice");
                self.frames.borrow_mut()[frame].clones -= 1;
                self.deleted.set(self.deleted.get() + 1);
                self.maybe_release(frame);
            }
        }
    }

    fn attempt_processing(&self, _asynchronous: bool) {
        self.attempts.set(self.attempts.get() + 1);
    }

    fn raise_to_dispatch(&self) -> Irql {
        let old = self.irql.get();
        assert!(old <= 2, "raise from above DISPATCH_LEVEL");
        self.irql.set(2);
        old
    }

    fn lower_irql(&self, old: Irql) {
        self.irql.set(old);
    }

    fn acquire_processing_mutex(&self) {
        assert!(!self.mutex_held.get(), "processing mutex is not recursive");
        self.mutex_held.set(true);
        self.mutex_acquired.set(self.mutex_acquired.get() + 1);
    }

    fn release_processing_mutex(&self) {
        assert!(self.mutex_held.get());
        self.mutex_held.set(false);
    }
}
