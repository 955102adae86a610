//! A small fake machine for the core's unit tests: a register file with the
//! board's register semantics (W1C `INT_STATUS`, self-clearing `CTRL_RESET`),
//! a DMA adapter with heap-backed common buffers and an event log, an IRQL
//! that the fake checks, and helpers that play the board's part (consume
//! descriptors or slots, write completion records, raise interrupts).
//!
//! Not the simulated machine (that is `capdma-sim`); just enough to drive
//! the core deterministically and to observe what it does.
use crate::ports::{BusPlatform, CommonBuffer, CoreEvent, DeviceDescription, DmaAdapterPort, Irql, RegisterPort, DISPATCH_LEVEL};
use capdma_interface::descriptor::{CompletionRecord, SgDescriptor, CQ_STATUS_OK, DESC_END_OF_FRAME};
use capdma_interface::regs::{
    channel, channel_base, global, int_done, int_error, Caps, BAR0_BYTES, BOARD_ID, CTRL_RESET, CTRL_RUN, STATUS_RUNNING,
};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use zerocopy::{FromBytes, IntoBytes};

/// Something the platform was asked to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    GetAdapter(DeviceDescription),
    AdapterRefused,
    PutAdapter(u32),
    Alloc { adapter: u32, logical: u64, bytes: usize },
    AllocFailed { bytes: usize },
    Free { adapter: u32, logical: u64 },
}

/// A live common buffer of the fake.
struct Allocation {
    va: *mut u8,
    layout: Layout,
    logical: u64,
    bytes: usize,
}

/// The machine state shared by the platform, its registers and adapters.
pub struct Machine {
    pub irql: Cell<Irql>,
    pub regs: RefCell<Vec<u32>>,
    /// The board reads all ones and ignores writes.
    pub gone: Cell<bool>,
    /// Register reads and writes since the last reset of this counter.
    pub accesses: Cell<usize>,
    pub writes: RefCell<Vec<(u32, u32)>>,
    pub events: RefCell<Vec<Event>>,
    /// What the core reported through `RegisterPort::report`, in order.
    pub reports: RefCell<Vec<CoreEvent>>,
    allocations: RefCell<BTreeMap<u64, Allocation>>,
    next_logical: Cell<u64>,
    next_adapter: Cell<u32>,
    /// Allocations larger than this fail (contiguous memory is short).
    pub max_alloc: Cell<usize>,
    /// Allocations left before every further one fails.
    pub allocs_left: Cell<Option<usize>>,
    /// Map registers an S/G adapter grants (a CB adapter grants 0).
    pub map_registers: Cell<u32>,
    pub highest_physical: Cell<u64>,
    pub refuse_adapter: Cell<bool>,
    /// `STATUS` reads after a `CTRL_RESET` of a running channel (`CTRL_RUN`
    /// set) before `STATUS_RUNNING` clears; 0: at once (the contract's
    /// `RESET_POLL_READS`).
    pub reset_reads: Cell<u32>,
    /// A reset never completes (`STATUS_RUNNING` stays set) while this is set.
    pub reset_stuck: Cell<bool>,
    /// Per channel: `STATUS` reads left before the reset completes.
    pub draining: RefCell<Vec<u32>>,
    /// Per channel: the engine may still be writing memory (a reset of a
    /// running channel has not completed).
    pub dma_outstanding: RefCell<Vec<bool>>,
}

impl Machine {
    pub fn reg(&self, offset: u32) -> u32 {
        self.regs.borrow()[(offset / 4) as usize]
    }

    pub fn set_reg(&self, offset: u32, value: u32) {
        self.regs.borrow_mut()[(offset / 4) as usize] = value;
    }

    pub fn ch_reg(&self, ch: u32, offset: u32) -> u32 {
        self.reg(channel_base(ch) + offset)
    }

    pub fn set_ch_reg(&self, ch: u32, offset: u32, value: u32) {
        self.set_reg(channel_base(ch) + offset, value);
    }

    /// Whether channel `ch`'s engine may still write memory.
    pub fn dma_outstanding(&self, ch: u32) -> bool {
        self.dma_outstanding.borrow()[ch as usize]
    }

    /// Lets every stuck or draining reset complete (the board catches up).
    pub fn finish_resets(&self) {
        self.reset_stuck.set(false);
        for ch in 0..8u32 {
            if self.draining.borrow()[ch as usize] > 0 || self.dma_outstanding(ch) {
                self.draining.borrow_mut()[ch as usize] = 0;
                self.dma_outstanding.borrow_mut()[ch as usize] = false;
                self.set_ch_reg(ch, channel::STATUS, self.ch_reg(ch, channel::STATUS) & !STATUS_RUNNING);
            }
        }
    }

    pub fn live_allocations(&self) -> usize {
        self.allocations.borrow().len()
    }

    /// Host pointer of logical address `logical` inside a live buffer.
    pub fn host(&self, logical: u64) -> *mut u8 {
        let allocs = self.allocations.borrow();
        let (_, a) = allocs.range(..=logical).next_back().expect("address in no buffer");
        assert!(logical < a.logical + a.bytes as u64, "address past its buffer");
        a.va.wrapping_add(usize::try_from(logical - a.logical).unwrap())
    }

    fn ch_base64(&self, ch: u32, lo: u32, hi: u32) -> u64 {
        u64::from(self.ch_reg(ch, lo)) | (u64::from(self.ch_reg(ch, hi)) << 32)
    }

    pub fn descriptor(&self, ch: u32, index: u32) -> SgDescriptor {
        let base = self.ch_base64(ch, channel::RING_BASE_LO, channel::RING_BASE_HI);
        let p = self.host(base + u64::from(index) * 32);
        // SAFETY: test-only: 32 bytes inside a live fake common buffer.
        let bytes = unsafe { std::slice::from_raw_parts(p, 32) };
        SgDescriptor::read_from_bytes(bytes).unwrap()
    }

    /// Writes `record` at `CQ_PRODUCER % entries`, advances `CQ_PRODUCER`
    /// and sets the channel's completion interrupt bit.
    pub fn push_record(&self, ch: u32, record: CompletionRecord) {
        let base = self.ch_base64(ch, channel::CQ_BASE_LO, channel::CQ_BASE_HI);
        let entries = self.ch_reg(ch, channel::CQ_ENTRIES);
        let producer = self.ch_reg(ch, channel::CQ_PRODUCER);
        let p = self.host(base + u64::from(producer % entries) * 32);
        // SAFETY: test-only: 32 bytes inside a live fake common buffer.
        unsafe { std::ptr::copy_nonoverlapping(record.as_bytes().as_ptr(), p, 32) };
        self.set_ch_reg(ch, channel::CQ_PRODUCER, producer.wrapping_add(1));
        self.set_reg(global::INT_STATUS, self.reg(global::INT_STATUS) | int_done(ch));
    }

    /// The board finishes the next posted S/G frame: consumes its
    /// descriptors and writes an OK record with the frame's bytes and tag.
    /// Returns the record written.
    pub fn complete_sg_frame(&self, ch: u32) -> CompletionRecord {
        let entries = self.ch_reg(ch, channel::RING_ENTRIES);
        let mut consumer = self.ch_reg(ch, channel::RING_CONSUMER);
        let producer = self.ch_reg(ch, channel::RING_PRODUCER);
        assert_ne!(consumer, producer, "no descriptor posted");
        let first = consumer % entries;
        let mut bytes = 0;
        let mut tag;
        loop {
            let d = self.descriptor(ch, consumer % entries);
            consumer += 1;
            bytes += d.byte_count;
            tag = d.tag;
            if d.flags & DESC_END_OF_FRAME != 0 {
                break;
            }
        }
        self.set_ch_reg(ch, channel::RING_CONSUMER, consumer);
        let record = CompletionRecord { index: first, byte_count: bytes, status: CQ_STATUS_OK, frame_number: consumer, timestamp: 1000, tag, reserved: 0 };
        self.push_record(ch, record);
        record
    }

    /// The board fills its next slot (`byte_count` bytes) and completes it.
    pub fn complete_slot(&self, ch: u32, byte_count: u32) -> CompletionRecord {
        let entries = self.ch_reg(ch, channel::RING_ENTRIES);
        let consumer = self.ch_reg(ch, channel::RING_CONSUMER);
        assert_ne!(consumer, self.ch_reg(ch, channel::RING_PRODUCER), "board owns no slot");
        self.set_ch_reg(ch, channel::RING_CONSUMER, consumer + 1);
        let record = CompletionRecord { index: consumer % entries, byte_count, status: CQ_STATUS_OK, ..Default::default() };
        self.push_record(ch, record);
        record
    }

    /// The board faults on channel `ch`.
    pub fn halt(&self, ch: u32) {
        self.set_ch_reg(ch, channel::STATUS, capdma_interface::regs::STATUS_HALTED);
        self.set_reg(global::INT_STATUS, self.reg(global::INT_STATUS) | int_error(ch));
    }
}

/// BAR0 of the fake board.
pub struct FakeRegs(pub Rc<Machine>);

impl RegisterPort for FakeRegs {
    fn report(&self, event: CoreEvent) {
        self.0.reports.borrow_mut().push(event);
    }

    fn read32(&self, offset: u32) -> u32 {
        let m = &self.0;
        m.accesses.set(m.accesses.get() + 1);
        if m.gone.get() {
            return u32::MAX;
        }
        if offset >= channel_base(0) && (offset - channel_base(0)) % 0x80 == channel::STATUS {
            let ch = ((offset - channel_base(0)) / 0x80) as usize;
            let left = m.draining.borrow()[ch];
            if left > 0 && !m.reset_stuck.get() {
                m.draining.borrow_mut()[ch] = left - 1;
                if left == 1 {
                    m.set_reg(offset, m.reg(offset) & !STATUS_RUNNING);
                    m.dma_outstanding.borrow_mut()[ch] = false;
                }
            }
        }
        m.reg(offset)
    }

    fn write32(&self, offset: u32, value: u32) {
        let m = &self.0;
        m.accesses.set(m.accesses.get() + 1);
        if m.gone.get() {
            return;
        }
        m.writes.borrow_mut().push((offset, value));
        if offset == global::INT_STATUS {
            m.set_reg(offset, m.reg(offset) & !value);
            return;
        }
        if offset >= channel_base(0) && (offset - channel_base(0)) % 0x80 == channel::CTRL && value & CTRL_RESET != 0 {
            let ch = (offset - channel_base(0)) / 0x80;
            let was_running = m.reg(offset) & CTRL_RUN != 0 || m.dma_outstanding(ch);
            for r in [channel::RING_PRODUCER, channel::RING_CONSUMER, channel::CQ_PRODUCER, channel::CQ_CONSUMER, channel::STATUS] {
                m.set_ch_reg(ch, r, 0);
            }
            m.set_reg(offset, value & !CTRL_RESET);
            if was_running && (m.reset_reads.get() > 0 || m.reset_stuck.get()) {
                // The burst in flight is still being written: STATUS_RUNNING
                // stays set until it is done.
                m.set_ch_reg(ch, channel::STATUS, STATUS_RUNNING);
                m.draining.borrow_mut()[ch as usize] = m.reset_reads.get().max(1);
                m.dma_outstanding.borrow_mut()[ch as usize] = true;
            }
            return;
        }
        m.set_reg(offset, value);
    }
}

/// A DMA adapter of the fake.
pub struct FakeAdapter {
    m: Rc<Machine>,
    id: u32,
    dma64: bool,
    map_registers: u32,
}

impl DmaAdapterPort for FakeAdapter {
    fn allocate_common_buffer(&self, bytes: usize) -> Option<CommonBuffer> {
        let m = &self.m;
        assert_eq!(m.irql.get(), 0, "AllocateCommonBuffer above PASSIVE_LEVEL");
        if bytes > m.max_alloc.get() || m.allocs_left.get() == Some(0) {
            m.events.borrow_mut().push(Event::AllocFailed { bytes });
            return None;
        }
        if let Some(n) = m.allocs_left.get() {
            m.allocs_left.set(Some(n - 1));
        }
        let layout = Layout::from_size_align(bytes.max(1), 4096).unwrap();
        // SAFETY: test-only; the layout has a non-zero size.
        let va = unsafe { alloc_zeroed(layout) };
        assert!(!va.is_null());
        let logical = m.next_logical.get();
        let span = (bytes as u64).div_ceil(4096) * 4096 + 4096;
        m.next_logical.set(logical + span);
        let logical = if self.dma64 { logical } else { logical & 0xFFFF_FFFF };
        m.allocations.borrow_mut().insert(logical, Allocation { va, layout, logical, bytes });
        m.events.borrow_mut().push(Event::Alloc { adapter: self.id, logical, bytes });
        Some(CommonBuffer { va, logical, bytes })
    }

    fn free_common_buffer(&self, buffer: CommonBuffer) {
        let m = &self.m;
        assert_eq!(m.irql.get(), 0, "FreeCommonBuffer above PASSIVE_LEVEL");
        let a = m.allocations.borrow_mut().remove(&buffer.logical).expect("free of an unknown buffer");
        assert_eq!((a.va, a.bytes), (buffer.va, buffer.bytes), "buffer not freed as allocated");
        // SAFETY: test-only; allocated above with this layout.
        unsafe { dealloc(a.va, a.layout) };
        m.events.borrow_mut().push(Event::Free { adapter: self.id, logical: buffer.logical });
    }

    fn raw(&self) -> *mut core::ffi::c_void {
        (0xADA0_0000usize + self.id as usize) as *mut core::ffi::c_void
    }

    fn map_registers(&self) -> u32 {
        self.map_registers
    }
}

/// The fake platform.
pub struct FakePlatform {
    pub m: Rc<Machine>,
    regs: FakeRegs,
}

impl FakePlatform {
    /// A board with `caps`, `MAX_TRANSFER` 64 KiB and `MAX_FRAME_BYTES` `max_frame`.
    pub fn new(caps: Caps, max_frame: u32) -> Self {
        let m = Rc::new(Machine {
            irql: Cell::new(0),
            regs: RefCell::new(vec![0; (BAR0_BYTES / 4) as usize]),
            gone: Cell::new(false),
            accesses: Cell::new(0),
            writes: RefCell::new(Vec::new()),
            events: RefCell::new(Vec::new()),
            reports: RefCell::new(Vec::new()),
            allocations: RefCell::new(BTreeMap::new()),
            next_logical: Cell::new(0x1_8000_0000),
            next_adapter: Cell::new(1),
            max_alloc: Cell::new(usize::MAX),
            allocs_left: Cell::new(None),
            map_registers: Cell::new(64),
            highest_physical: Cell::new(0x7_FFFF_FFFF),
            refuse_adapter: Cell::new(false),
            reset_reads: Cell::new(0),
            reset_stuck: Cell::new(false),
            draining: RefCell::new(vec![0; 8]),
            dma_outstanding: RefCell::new(vec![false; 8]),
        });
        m.set_reg(global::ID, BOARD_ID);
        m.set_reg(global::CAPS, caps.encode());
        m.set_reg(global::MAX_TRANSFER, 65536);
        m.set_reg(global::MAX_FRAME_BYTES, max_frame);
        Self { regs: FakeRegs(m.clone()), m }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        for (_, a) in std::mem::take(&mut *self.allocations.borrow_mut()) {
            // SAFETY: test-only; allocated with this layout and not yet freed.
            unsafe { dealloc(a.va, a.layout) };
        }
    }
}

impl BusPlatform for FakePlatform {
    type Registers = FakeRegs;
    type Adapter = FakeAdapter;

    fn registers(&self) -> &FakeRegs {
        &self.regs
    }

    fn get_dma_adapter(&self, description: &DeviceDescription) -> Option<FakeAdapter> {
        assert_eq!(self.m.irql.get(), 0, "IoGetDmaAdapter above PASSIVE_LEVEL");
        if self.m.refuse_adapter.get() {
            self.m.events.borrow_mut().push(Event::AdapterRefused);
            return None;
        }
        self.m.events.borrow_mut().push(Event::GetAdapter(*description));
        let id = self.m.next_adapter.get();
        self.m.next_adapter.set(id + 1);
        let map_registers = if description.scatter_gather { self.m.map_registers.get() } else { 0 };
        Some(FakeAdapter { m: self.m.clone(), id, dma64: description.dma64, map_registers })
    }

    fn put_dma_adapter(&self, adapter: FakeAdapter) {
        assert_eq!(self.m.irql.get(), 0, "PutDmaAdapter above PASSIVE_LEVEL");
        self.m.events.borrow_mut().push(Event::PutAdapter(adapter.id));
    }

    fn highest_physical_address(&self) -> u64 {
        self.m.highest_physical.get()
    }

    fn raise_to_dispatch(&self) -> Irql {
        let old = self.m.irql.get();
        assert!(old <= DISPATCH_LEVEL, "raise to DISPATCH from above it");
        self.m.irql.set(DISPATCH_LEVEL);
        old
    }

    fn lower_irql(&self, old: Irql) {
        self.m.irql.set(old);
    }

    fn current_irql(&self) -> Irql {
        self.m.irql.get()
    }
}
