//! The bus core on real threads: what the single-threaded simulation cannot
//! exercise.
//!
//! On Windows the bus DPC runs at `DISPATCH_LEVEL` on any processor — the
//! same DPC on two processors at once when the ISR queues it again while it
//! runs — concurrently with the watchdog's timer DPC, with the ISR, and
//! with the child's `PASSIVE_LEVEL` calls (Process posting frames and
//! returning slots, KS state changes starting and stopping the channel and
//! registering its callback). Here each of those is a thread:
//!
//! * two "processors" ([`cpu`]), each running the ISR (serialised, as the
//!   interrupt object's spin lock does) when the board's line is asserted,
//!   the DPC when it is queued (a queued DPC runs on whichever processor
//!   takes it first, so two instances may overlap), and now and then the
//!   watchdog;
//! * the board ([`hardware`]): a register file of atomics with the board's
//!   semantics, whose engine completes S/G frames or fills slots in ring
//!   order, writes completion records, raises `INT_STATUS`, and sometimes
//!   halts with an error;
//! * one child per channel ([`child`]), at `PASSIVE_LEVEL`: register, start,
//!   post frames or return slots, stop, unregister, over and over; its
//!   callback (at `DISPATCH_LEVEL`) posts frames and returns slots too.
//!
//! Every thread perturbs the schedule with seeded random yields and spins.
//! Runs are bounded by iteration counts (never by time); a watchdog fails
//! the test when the threads do not finish (a deadlock or a livelock).
//!
//! What must hold (each a recorded violation, reported at the end):
//! * IRQL: callbacks at exactly `DISPATCH_LEVEL`; channel registers only
//!   touched at `DISPATCH_LEVEL` or above (under the channel's spin lock),
//!   except during device start; the ISR touches only `INT_STATUS` and
//!   `INT_ENABLE`; raise/lower balanced; adapter calls at `PASSIVE_LEVEL`;
//! * every frame posted is completed exactly once (success, error or
//!   cancelled), and before `StopChannel` returns; no callback after
//!   `StopChannel` returned or after `RegisterCompletion(NULL)` succeeded;
//!   one callback at a time per channel;
//! * a slot is never owned by the board and the child at once (the board
//!   never fills a slot the child holds, the child never gets a slot
//!   twice), and a slot's contents do not change while the child holds it;
//! * the documented refusals only: `StartChannel` and
//!   `RegisterCompletion` refuse with `STATUS_DEVICE_BUSY` only "while the
//!   channel runs", so once `StopChannel` returned they succeed;
//! * whenever every processor is idle (no interrupt asserted, no DPC queued
//!   or running) and no context is delivering, no running channel has a
//!   completion record or an error interrupt left unhandled (a lost wakeup
//!   would leave it there until the next interrupt, or for the watchdog to
//!   fail the frame);
//! * at the end: interface references back to zero, nothing undelivered,
//!   the bus's counters agree with what the children saw, every common
//!   buffer freed and the adapter put after device stop.
use super::yuy2;
use crate::config::StartConfig;
use crate::device::BusDevice;
use crate::ports::{
    BusPlatform, CommonBuffer, DeviceDescription, DmaAdapterPort, Irql, RegisterPort, DISPATCH_LEVEL, PASSIVE_LEVEL,
};
use crate::MAX_SLOTS;
use capdma_interface::descriptor::{
    CompletionRecord, SgDescriptor, CQ_STATUS_ERROR, CQ_STATUS_OK, DESC_END_OF_FRAME, DESC_START_OF_FRAME,
};
use capdma_interface::regs::{
    channel, channel_base, global, int_done, int_error, Caps, BAR0_BYTES, BOARD_ID, CTRL_RESET, CTRL_RUN, STATUS_HALTED,
};
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_IO_DEVICE_ERROR, STATUS_SUCCESS,
};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, Completion, CompletionKind, PfnCompletion, SgElement,
    CAPDMA_BUS_INTERFACE_SIZE_V1,
};
use capdma_test_kit::{irql, jitter, join_all, lock, set_irql, Log, Rng, Watchdog};
use core::ffi::c_void;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::thread;

/// Channels on the board (each with its own child thread).
const CHANNELS: u32 = 2;
/// "Processors" running the ISR, the DPC and the watchdog.
const CPUS: u32 = 2;
/// The IRQL the ISR runs at.
const DEVICE_IRQL: Irql = 6;
/// 64×4 YUY2 at stride 128: 512-byte S/G frames; 1 KiB in a slot (pitch 256).
const WIDTH: u32 = 64;
const HEIGHT: u32 = 4;
const STRIDE: u32 = 128;
const FRAME_BYTES: u32 = STRIDE * HEIGHT;
/// `MAX_FRAME_BYTES` of the board: slots of 8 KiB.
const MAX_FRAME: u32 = 8192;
/// Board time per engine step, 100-ns units (a frame interval is 333 333).
const TICK: i64 = 40_000;
/// Engine steps between two idle-point checks.
const CHECK_EVERY: u32 = 64;

/// Test-level slot ownership.
const SLOT_FREE: u8 = 0;
/// Filled by the board, record posted, not yet completed to the child.
const SLOT_FILLED: u8 = 1;
/// Completed to the child, not yet returned.
const SLOT_CHILD: u8 = 2;

/// The board: BAR0 as atomics, its engine, and the common buffers (their
/// logical address is their host address).
struct Board {
    regs: Vec<AtomicU32>,
    /// The board's own sequencing: a register write's side effects and one
    /// engine step never interleave (as in real hardware).
    engine: Mutex<()>,
    /// `BusDevice::start` is running: channel registers may be touched at PASSIVE.
    starting: AtomicBool,
    buffers: Mutex<BTreeMap<u64, (usize, Layout)>>,
    adapters: AtomicUsize,
    frame_counter: AtomicU32,
    slots: Vec<Vec<AtomicU8>>,
    log: Arc<Log>,
}

impl Board {
    fn new(caps: Caps, log: Arc<Log>) -> Self {
        let regs: Vec<AtomicU32> = (0..BAR0_BYTES / 4).map(|_| AtomicU32::new(0)).collect();
        let b = Self {
            regs,
            engine: Mutex::new(()),
            starting: AtomicBool::new(false),
            buffers: Mutex::new(BTreeMap::new()),
            adapters: AtomicUsize::new(0),
            frame_counter: AtomicU32::new(0),
            slots: (0..CHANNELS).map(|_| (0..MAX_SLOTS).map(|_| AtomicU8::new(SLOT_FREE)).collect()).collect(),
            log,
        };
        b.set(global::ID, BOARD_ID);
        b.set(global::CAPS, caps.encode());
        b.set(global::MAX_TRANSFER, 65536);
        b.set(global::MAX_FRAME_BYTES, MAX_FRAME);
        b
    }

    fn reg(&self, offset: u32) -> u32 {
        self.regs[(offset / 4) as usize].load(SeqCst)
    }

    fn set(&self, offset: u32, value: u32) {
        self.regs[(offset / 4) as usize].store(value, SeqCst);
    }

    fn ch(&self, ch: u32, offset: u32) -> u32 {
        self.reg(channel_base(ch) + offset)
    }

    fn set_ch(&self, ch: u32, offset: u32, value: u32) {
        self.set(channel_base(ch) + offset, value);
    }

    fn slot(&self, ch: u32, slot: u32) -> &AtomicU8 {
        &self.slots[ch as usize][slot as usize]
    }

    /// The interrupt line: a pending status bit that is enabled.
    fn line(&self) -> bool {
        self.reg(global::INT_STATUS) & self.reg(global::INT_ENABLE) != 0
    }

    /// The IRQL rules of register access.
    fn check_access(&self, offset: u32, write: bool) {
        let level = irql();
        if level >= DEVICE_IRQL {
            let allowed = offset == global::INT_STATUS || (write && offset == global::INT_ENABLE);
            self.log.check(allowed, || format!("ISR touched register {offset:#x} (write: {write})"));
        } else if offset >= channel_base(0) && !self.starting.load(SeqCst) {
            self.log.check(level >= DISPATCH_LEVEL, || {
                format!("channel register {offset:#x} touched at IRQL {level} (outside the channel's spin lock)")
            });
        }
    }

    /// Host address of `len` bytes at `logical`, inside a live common buffer.
    fn host(&self, logical: u64, len: usize) -> Option<*mut u8> {
        let buffers = lock(&self.buffers);
        let (&base, &(bytes, _)) = buffers.range(..=logical).next_back()?;
        let end = logical.checked_add(len as u64)?;
        if end > base + bytes as u64 {
            return None;
        }
        Some(usize::try_from(logical).ok()? as *mut u8)
    }

    fn dma_read<T: zerocopy::FromBytes>(&self, logical: u64) -> Option<T> {
        let p = self.host(logical, size_of::<T>())?;
        // SAFETY: test board: `host` checked the bytes lie in a live common
        // buffer (freed only at device stop, after the engines stopped); an
        // unaligned volatile read of plain integers, any bit pattern valid.
        Some(unsafe { p.cast::<T>().read_volatile() })
    }

    fn dma_write_record(&self, logical: u64, record: &CompletionRecord) -> bool {
        let Some(p) = self.host(logical, size_of::<CompletionRecord>()) else {
            return false;
        };
        let bytes = zerocopy::IntoBytes::as_bytes(record);
        // SAFETY: as in `dma_read`; the completion queue entry is the board's
        // until CQ_PRODUCER is advanced past it; a local source, no overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        true
    }

    /// The first and last word of a filled slot (written and read as atomics).
    fn slot_stamp(&self, ch: u32, slot: u32) -> Option<&AtomicU64> {
        let base =
            u64::from(self.ch(ch, channel::RING_BASE_LO)) | (u64::from(self.ch(ch, channel::RING_BASE_HI)) << 32);
        let logical = base + u64::from(slot) * u64::from(self.ch(ch, channel::SLOT_STRIDE));
        let p = self.host(logical, 8)?;
        if p.align_offset(8) != 0 {
            return None;
        }
        #[allow(clippy::cast_ptr_alignment, reason = "alignment checked just above")]
        let p = p.cast::<u64>();
        // SAFETY: 8 aligned bytes inside a live common buffer that outlives
        // every use (the test frees buffers only after all threads ended);
        // only ever accessed through this atomic view.
        Some(unsafe { AtomicU64::from_ptr(p) })
    }

    /// One step of channel `ch`'s engine: complete the next S/G frame or fill
    /// the next slot, write its record, raise `INT_STATUS`; now and then halt.
    fn step(&self, ch: u32, rng: &mut Rng, frames: &ChanTest) {
        let _engine = lock(&self.engine);
        let ctrl = self.ch(ch, channel::CTRL);
        if ctrl & CTRL_RUN == 0 || self.ch(ch, channel::STATUS) & STATUS_HALTED != 0 {
            return;
        }
        if rng.one_in(400) {
            self.set_ch(ch, channel::STATUS, STATUS_HALTED);
            self.regs[(global::INT_STATUS / 4) as usize].fetch_or(int_error(ch), SeqCst);
            return;
        }
        let cq_entries = self.ch(ch, channel::CQ_ENTRIES);
        let cq_producer = self.ch(ch, channel::CQ_PRODUCER);
        if cq_entries == 0 || cq_producer.wrapping_sub(self.ch(ch, channel::CQ_CONSUMER)) >= cq_entries {
            return;
        }
        let entries = self.ch(ch, channel::RING_ENTRIES);
        let mut consumer = self.ch(ch, channel::RING_CONSUMER);
        if entries == 0 || consumer == self.ch(ch, channel::RING_PRODUCER) {
            return;
        }
        let ring_base =
            u64::from(self.ch(ch, channel::RING_BASE_LO)) | (u64::from(self.ch(ch, channel::RING_BASE_HI)) << 32);
        let status = if rng.one_in(50) { CQ_STATUS_ERROR } else { CQ_STATUS_OK };
        let frame_number = self.frame_counter.fetch_add(1, SeqCst);
        let record = if ctrl & capdma_interface::regs::CTRL_SG_MODE != 0 {
            let first = consumer % entries;
            let mut bytes = 0u32;
            let mut tag = None;
            loop {
                let Some(d) = self.dma_read::<SgDescriptor>(ring_base + u64::from(consumer % entries) * 32) else {
                    self.log.fail(format!("ch{ch}: descriptor {} outside the live ring", consumer % entries));
                    return;
                };
                let start = tag.is_none();
                self.log.check((d.flags & DESC_START_OF_FRAME != 0) == start, || {
                    format!("ch{ch}: descriptor {} flags {:#x}: frame boundaries broken", consumer % entries, d.flags)
                });
                self.log.check(tag.is_none_or(|t| t == d.tag), || format!("ch{ch}: tag changes inside a frame"));
                tag = Some(d.tag);
                bytes += d.byte_count;
                consumer = consumer.wrapping_add(1);
                if d.flags & DESC_END_OF_FRAME != 0 {
                    break;
                }
                if consumer == self.ch(ch, channel::RING_PRODUCER) {
                    self.log.fail(format!("ch{ch}: posted descriptors end inside a frame"));
                    return;
                }
            }
            let tag = tag.unwrap_or(0);
            let state = lock(&frames.frames).get(&tag).copied();
            self.log.check(state == Some(false), || {
                format!("ch{ch}: the board read descriptors of frame {tag}, which is {state:?} (not posted)")
            });
            self.set_ch(ch, channel::RING_CONSUMER, consumer);
            CompletionRecord { index: first, byte_count: bytes, status, frame_number, timestamp: 1, tag, reserved: 0 }
        } else {
            let slot = consumer % entries;
            let prior = self.slot(ch, slot).swap(SLOT_FILLED, SeqCst);
            self.log
                .check(prior != SLOT_CHILD, || format!("ch{ch}: the board fills slot {slot}, which the child holds"));
            if let Some(stamp) = self.slot_stamp(ch, slot) {
                stamp.store(u64::from(frame_number), SeqCst);
            }
            self.set_ch(ch, channel::RING_CONSUMER, consumer.wrapping_add(1));
            let bytes = self.ch(ch, channel::LINE_PITCH) * self.ch(ch, channel::HEIGHT);
            CompletionRecord { index: slot, byte_count: bytes, status, frame_number, timestamp: 1, tag: 0, reserved: 0 }
        };
        let cq = u64::from(self.ch(ch, channel::CQ_BASE_LO)) | (u64::from(self.ch(ch, channel::CQ_BASE_HI)) << 32);
        if !self.dma_write_record(cq + u64::from(cq_producer % cq_entries) * 32, &record) {
            self.log.fail(format!("ch{ch}: completion queue outside a live buffer"));
            return;
        }
        self.set_ch(ch, channel::CQ_PRODUCER, cq_producer.wrapping_add(1));
        self.regs[(global::INT_STATUS / 4) as usize].fetch_or(int_done(ch), SeqCst);
    }
}

/// BAR0.
struct Regs(Arc<Board>);

impl RegisterPort for Regs {
    fn read32(&self, offset: u32) -> u32 {
        self.0.check_access(offset, false);
        self.0.reg(offset)
    }

    fn write32(&self, offset: u32, value: u32) {
        let b = &self.0;
        b.check_access(offset, true);
        let _engine = lock(&b.engine);
        if offset == global::INT_STATUS {
            b.regs[(offset / 4) as usize].fetch_and(!value, SeqCst);
            return;
        }
        let base = channel_base(0);
        if offset >= base && (offset - base) % 0x80 == channel::CTRL && value & CTRL_RESET != 0 {
            let ch = (offset - base) / 0x80;
            for r in [
                channel::RING_PRODUCER,
                channel::RING_CONSUMER,
                channel::CQ_PRODUCER,
                channel::CQ_CONSUMER,
                channel::STATUS,
            ] {
                b.set_ch(ch, r, 0);
            }
            b.set(offset, value & !CTRL_RESET);
            return;
        }
        b.set(offset, value);
    }
}

/// The DMA adapter: common buffers from the heap, logical = host address.
struct Adapter(Arc<Board>);

impl DmaAdapterPort for Adapter {
    fn allocate_common_buffer(&self, bytes: usize) -> Option<CommonBuffer> {
        self.0.log.check(irql() == PASSIVE_LEVEL, || format!("AllocateCommonBuffer at IRQL {}", irql()));
        let layout = Layout::from_size_align(bytes.max(1), 4096).ok()?;
        // SAFETY: a non-zero size.
        let va = unsafe { alloc_zeroed(layout) };
        if va.is_null() {
            return None;
        }
        let logical = va as u64;
        lock(&self.0.buffers).insert(logical, (bytes, layout));
        Some(CommonBuffer { va, logical, bytes })
    }

    fn free_common_buffer(&self, buffer: CommonBuffer) {
        self.0.log.check(irql() == PASSIVE_LEVEL, || format!("FreeCommonBuffer at IRQL {}", irql()));
        let Some((bytes, layout)) = lock(&self.0.buffers).remove(&buffer.logical) else {
            self.0.log.fail(format!("free of unknown common buffer {:#x}", buffer.logical));
            return;
        };
        self.0.log.check(bytes == buffer.bytes, || "common buffer freed with another size".into());
        // SAFETY: allocated above with this layout, removed from the map once.
        unsafe { dealloc(buffer.va, layout) };
    }

    fn raw(&self) -> *mut c_void {
        std::ptr::dangling_mut()
    }

    fn map_registers(&self) -> u32 {
        64
    }
}

/// The platform: per-thread IRQL, the board, adapters counted.
struct Platform {
    regs: Regs,
    board: Arc<Board>,
}

impl BusPlatform for Platform {
    type Registers = Regs;
    type Adapter = Adapter;

    fn registers(&self) -> &Regs {
        &self.regs
    }

    fn get_dma_adapter(&self, _description: &DeviceDescription) -> Option<Adapter> {
        self.board.log.check(irql() == PASSIVE_LEVEL, || "IoGetDmaAdapter above PASSIVE_LEVEL".into());
        self.board.adapters.fetch_add(1, SeqCst);
        Some(Adapter(self.board.clone()))
    }

    fn put_dma_adapter(&self, adapter: Adapter) {
        self.board.log.check(irql() == PASSIVE_LEVEL, || "PutDmaAdapter above PASSIVE_LEVEL".into());
        self.board
            .log
            .check(lock(&self.board.buffers).is_empty(), || "adapter put before its common buffers were freed".into());
        drop(adapter);
        self.board.adapters.fetch_sub(1, SeqCst);
    }

    fn highest_physical_address(&self) -> u64 {
        0x7_FFFF_FFFF
    }

    fn raise_to_dispatch(&self) -> Irql {
        let old = irql();
        self.board.log.check(old <= DISPATCH_LEVEL, || format!("KeRaiseIrql(DISPATCH_LEVEL) from IRQL {old}"));
        set_irql(DISPATCH_LEVEL);
        old
    }

    fn lower_irql(&self, old: Irql) {
        let now = irql();
        self.board.log.check(now == DISPATCH_LEVEL && old <= now, || format!("KeLowerIrql({old}) at IRQL {now}"));
        set_irql(old);
    }

    fn current_irql(&self) -> Irql {
        irql()
    }
}

/// The interface table, shared between a child's threads.
#[derive(Clone, Copy)]
struct Table(CapdmaBusInterface);

// SAFETY: the table's context is the address of a `BusDevice` that lives in
// the test's `World` until every thread has ended, and its functions are
// callable from any thread (the interface contract).
unsafe impl Send for Table {}
// SAFETY: as for `Send`; the table is read-only.
unsafe impl Sync for Table {}

impl Table {
    fn ctx(&self) -> *mut c_void {
        self.0.header.context
    }

    fn program(&self, ch: u32, tag: u32, elements: &[SgElement]) -> NtStatus {
        let count = u32::try_from(elements.len()).unwrap_or(u32::MAX);
        // SAFETY: live device; `elements` readable for `count` entries.
        unsafe { (self.0.program_frame.expect("ProgramFrame"))(self.ctx(), ch, tag, elements.as_ptr(), count) }
    }

    fn return_slot(&self, ch: u32, slot: u32) -> NtStatus {
        // SAFETY: live device.
        unsafe { (self.0.return_slot.expect("ReturnSlot"))(self.ctx(), ch, slot) }
    }

    fn start(&self, ch: u32, format: &ChannelFormat) -> NtStatus {
        // SAFETY: live device; `format` readable.
        unsafe { (self.0.start_channel.expect("StartChannel"))(self.ctx(), ch, format) }
    }

    fn stop(&self, ch: u32) -> NtStatus {
        // SAFETY: live device.
        unsafe { (self.0.stop_channel.expect("StopChannel"))(self.ctx(), ch) }
    }

    fn register(&self, ch: u32, sink: Option<&Sink>) -> NtStatus {
        let (cb, ctx) = match sink {
            Some(s) => (Some(sink_callback as PfnCompletion), std::ptr::from_ref(s).cast_mut().cast()),
            None => (None, std::ptr::null_mut()),
        };
        // SAFETY: live device; every sink is kept alive until all threads ended.
        unsafe { (self.0.register_completion.expect("RegisterCompletion"))(self.ctx(), ch, cb, ctx) }
    }

    fn dereference(&self) {
        // SAFETY: live device.
        unsafe { (self.0.header.interface_dereference.expect("InterfaceDereference"))(self.ctx()) };
    }
}

/// What a child knows about its channel, shared with its callbacks and the board.
#[derive(Default)]
struct ChanTest {
    /// Tag -> completed. Inserted (false) before `ProgramFrame`.
    frames: Mutex<HashMap<u32, bool>>,
    next_tag: AtomicU32,
    /// CB: slots completed to the child and not returned, oldest first, with
    /// the frame number the board stamped into them. The lock also keeps
    /// returns in order between the child thread and the callback.
    held: Mutex<VecDeque<(u32, u32)>>,
    posted: AtomicU64,
    ok: AtomicU64,
    damaged: AtomicU64,
    cancelled: AtomicU64,
    slots_returned: AtomicU64,
    unregister_retries: AtomicU64,
}

/// One registration's callback context.
struct Sink {
    world: Arc<World>,
    table: Table,
    ch: u32,
    /// `StopChannel` returned.
    stopped: AtomicBool,
    /// `RegisterCompletion(NULL)` succeeded.
    unregistered: AtomicBool,
    /// Callbacks in progress.
    active: AtomicU32,
    calls: AtomicU64,
}

/// Everything the threads share. Boxed behind an `Arc`: the device does not move.
struct World {
    dev: BusDevice<Platform>,
    board: Arc<Board>,
    log: Arc<Log>,
    sg: bool,
    chans: Vec<ChanTest>,
    /// Every sink ever registered, kept alive to the end (a late callback is
    /// then a recorded violation, not a use after free).
    sinks: Mutex<Vec<Arc<Sink>>>,
    dpc_queued: AtomicBool,
    /// The interrupt object's spin lock: ISRs of one interrupt do not overlap.
    isr_lock: Mutex<()>,
    clock: AtomicI64,
    pause: AtomicBool,
    parked: AtomicU32,
    children_done: AtomicU32,
    cpus_stop: AtomicBool,
    dpcs: AtomicU64,
    idle_checks: AtomicU64,
}

fn format() -> ChannelFormat {
    yuy2(WIDTH, HEIGHT, STRIDE)
}

/// Elements of one frame of [`FRAME_BYTES`] in 1..=8 pieces.
fn frame_elements(rng: &mut Rng, tag: u32) -> Vec<SgElement> {
    let pieces = 1 + rng.below(8);
    let base = 0x4_0000_0000 + u64::from(tag) * 0x1_0000;
    let each = FRAME_BYTES / pieces;
    (0..pieces)
        .map(|i| {
            let bytes = if i + 1 == pieces { FRAME_BYTES - each * i } else { each };
            SgElement { logical_address: base + u64::from(i) * 0x1000, byte_count: bytes, alignment: 0 }
        })
        .collect()
}

impl World {
    fn chan(&self, ch: u32) -> &ChanTest {
        &self.chans[ch as usize]
    }

    /// Posts one frame (child at PASSIVE, or the callback at DISPATCH).
    fn post(&self, table: &Table, ch: u32, rng: &mut Rng, from_callback: bool) -> NtStatus {
        let c = self.chan(ch);
        let tag = c.next_tag.fetch_add(1, SeqCst);
        lock(&c.frames).insert(tag, false);
        let status = table.program(ch, tag, &frame_elements(rng, tag));
        if status == STATUS_SUCCESS {
            c.posted.fetch_add(1, SeqCst);
        } else {
            // Not posted: no completion can come for it.
            lock(&c.frames).remove(&tag);
            let expected = status == STATUS_DEVICE_BUSY || (from_callback && status == STATUS_DEVICE_NOT_READY);
            self.log.check(expected, || format!("ch{ch}: ProgramFrame of a running channel: {status:#x}"));
        }
        status
    }

    /// CB: returns the oldest held slot, if any (in completion order).
    fn return_one(&self, table: &Table, ch: u32) -> bool {
        let c = self.chan(ch);
        let mut held = lock(&c.held);
        let Some(&(slot, stamp)) = held.front() else {
            return false;
        };
        let now = self.board.slot_stamp(ch, slot).map(|s| s.load(SeqCst));
        self.log.check(now == Some(u64::from(stamp)), || {
            format!("ch{ch}: slot {slot} changed while the child held it (stamp {stamp}, now {now:?})")
        });
        // Free before the return: once returned the board may fill it at once.
        self.board.slot(ch, slot).store(SLOT_FREE, SeqCst);
        let status = table.return_slot(ch, slot);
        if status == STATUS_SUCCESS {
            held.pop_front();
            c.slots_returned.fetch_add(1, SeqCst);
        } else {
            self.board.slot(ch, slot).store(SLOT_CHILD, SeqCst);
            self.log.fail(format!("ch{ch}: ReturnSlot({slot}) of the oldest held slot: {status:#x}"));
            held.pop_front();
        }
        true
    }

    /// Every processor idle (parked with nothing to do), then: no running
    /// channel that nobody is delivering for has records or an error left.
    fn idle_check(&self) {
        self.pause.store(true, SeqCst);
        let mut spins = 0u64;
        while self.parked.load(SeqCst) < CPUS {
            spins += 1;
            if self.log.failed() || spins > 50_000_000 {
                self.log.check(self.log.failed(), || "processors never went idle".into());
                self.pause.store(false, SeqCst);
                return;
            }
            thread::yield_now();
        }
        let old = irql();
        set_irql(DISPATCH_LEVEL);
        for ch in 0..CHANNELS {
            let st = self.dev.channels[ch as usize].state.lock();
            if !st.running() || st.delivering || self.board.line() || self.dev.pending.load(SeqCst) != 0 {
                continue;
            }
            let producer = self.board.ch(ch, channel::CQ_PRODUCER);
            let consumer = st.cq_consumer;
            self.log.check(producer == consumer, || {
                format!(
                    "ch{ch}: lost wakeup: {} completion record(s) in the queue (CQ_PRODUCER {producer}, consumed {consumer}), \
                     no interrupt pending, no DPC queued or running, nobody delivering",
                    producer.wrapping_sub(consumer)
                )
            });
            self.log.check(!st.error_pending, || {
                format!("ch{ch}: lost wakeup: an error interrupt is pending with no DPC queued or running, nobody delivering")
            });
        }
        set_irql(old);
        self.idle_checks.fetch_add(1, SeqCst);
        self.pause.store(false, SeqCst);
    }
}

/// The completion callback (`PFN_CAPDMA_COMPLETION`).
unsafe extern "system" fn sink_callback(context: *mut c_void, completion: *const Completion) {
    // SAFETY: `context` is a `Sink` kept alive in `World::sinks`.
    let sink = unsafe { &*context.cast::<Sink>() };
    // SAFETY: valid for the call (the contract).
    let c = unsafe { completion.read() };
    let w = &*sink.world;
    let ch = sink.ch;
    let level = irql();
    w.log.check(level == DISPATCH_LEVEL, || format!("ch{ch}: callback at IRQL {level}"));
    w.log.check(!sink.unregistered.load(SeqCst), || {
        format!("ch{ch}: callback after RegisterCompletion(NULL) succeeded")
    });
    w.log.check(!sink.stopped.load(SeqCst), || format!("ch{ch}: callback after StopChannel returned: {c:?}"));
    let overlapping = sink.active.fetch_add(1, SeqCst);
    w.log.check(overlapping == 0, || format!("ch{ch}: two callbacks at once"));
    sink.calls.fetch_add(1, SeqCst);
    w.log.check(c.channel == ch, || format!("ch{ch}: completion for channel {}", c.channel));
    let t = w.chan(ch);
    match c.status {
        STATUS_SUCCESS => t.ok.fetch_add(1, SeqCst),
        STATUS_IO_DEVICE_ERROR => t.damaged.fetch_add(1, SeqCst),
        STATUS_CANCELLED => t.cancelled.fetch_add(1, SeqCst),
        other => {
            w.log.fail(format!("ch{ch}: completion status {other:#x}"));
            0
        }
    };
    jitter();
    let mut rng = Rng::new(u64::from(c.tag) ^ u64::from(c.frame_number) << 20);
    if w.sg {
        w.log.check(c.kind == CompletionKind::Frame as u32, || format!("ch{ch}: kind {}", c.kind));
        let prior = lock(&t.frames).insert(c.tag, true);
        w.log.check(prior == Some(false), || format!("ch{ch}: frame {} completed, but it was {prior:?}", c.tag));
        w.log.check(c.status != STATUS_SUCCESS || c.bytes_written == FRAME_BYTES, || {
            format!("ch{ch}: frame {} completed with {} bytes", c.tag, c.bytes_written)
        });
        // The callback may post the next frame itself.
        if rng.one_in(3) {
            w.post(&sink.table, ch, &mut rng, true);
        }
    } else {
        w.log.check(c.kind == CompletionKind::Slot as u32, || format!("ch{ch}: kind {}", c.kind));
        let slot = c.tag;
        if slot < u32::try_from(MAX_SLOTS).unwrap_or(0) {
            let prior = w.board.slot(ch, slot).swap(SLOT_CHILD, SeqCst);
            w.log.check(prior == SLOT_FILLED, || {
                format!("ch{ch}: slot {slot} completed to the child but it was {prior}")
            });
            lock(&t.held).push_back((slot, c.frame_number));
        } else {
            w.log.fail(format!("ch{ch}: slot {slot} out of range"));
        }
        // The callback may return slots itself (at DISPATCH_LEVEL).
        if rng.one_in(2) {
            w.return_one(&sink.table, ch);
        }
    }
    jitter();
    sink.active.fetch_sub(1, SeqCst);
}

/// A processor: the ISR when the line is asserted, the DPC when queued,
/// the watchdog now and then; parks when asked and idle.
fn cpu(w: &World, seed: u64) {
    let mut rng = Rng::new(seed);
    while !w.cpus_stop.load(SeqCst) {
        if w.pause.load(SeqCst) && !w.board.line() && !w.dpc_queued.load(SeqCst) {
            w.parked.fetch_add(1, SeqCst);
            while w.pause.load(SeqCst) && !w.cpus_stop.load(SeqCst) {
                thread::yield_now();
            }
            w.parked.fetch_sub(1, SeqCst);
            continue;
        }
        let mut did = false;
        if w.board.line() {
            let claimed = {
                let _interrupt = lock(&w.isr_lock);
                set_irql(DEVICE_IRQL);
                let claimed = w.dev.isr();
                set_irql(PASSIVE_LEVEL);
                claimed
            };
            if claimed {
                // KeInsertQueueDpc: a queued DPC is queued once.
                w.dpc_queued.store(true, SeqCst);
            }
            did = true;
        }
        rng.jitter();
        if w.dpc_queued.swap(false, SeqCst) {
            set_irql(DISPATCH_LEVEL);
            w.dev.dpc(w.clock.load(SeqCst));
            set_irql(PASSIVE_LEVEL);
            w.dpcs.fetch_add(1, SeqCst);
            did = true;
        }
        if rng.one_in(64) {
            set_irql(DISPATCH_LEVEL);
            w.dev.watchdog(w.clock.load(SeqCst));
            set_irql(PASSIVE_LEVEL);
        }
        if !did {
            thread::yield_now();
        }
    }
}

/// The board's engine: steps random channels until the children are done,
/// checking the idle-point invariant every [`CHECK_EVERY`] steps.
fn hardware(w: &World, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut step = 0u32;
    while w.children_done.load(SeqCst) < CHANNELS && !w.log.failed() {
        let ch = rng.below(CHANNELS);
        w.board.step(ch, &mut rng, w.chan(ch));
        w.clock.fetch_add(TICK, SeqCst);
        rng.jitter();
        step = step.wrapping_add(1);
        if step.is_multiple_of(CHECK_EVERY) {
            w.idle_check();
        }
    }
}

/// Retries `f` while it answers `STATUS_DEVICE_BUSY` (bounded); returns the
/// last status and how many BUSY answers it got.
fn retry_busy(mut f: impl FnMut() -> NtStatus) -> (NtStatus, u32) {
    let mut busy = 0;
    loop {
        let status = f();
        if status != STATUS_DEVICE_BUSY || busy >= 1 << 22 {
            return (status, busy);
        }
        busy += 1;
        std::hint::spin_loop();
    }
}

/// A child at PASSIVE: `cycles` × (register, start, work, stop, unregister).
fn child(w: &Arc<World>, ch: u32, seed: u64, cycles: u32) {
    let mut rng = Rng::new(seed);
    let mut raw = std::mem::MaybeUninit::<CapdmaBusInterface>::zeroed();
    let status = w.dev.query_interface(CAPDMA_BUS_INTERFACE_SIZE_V1, 1, raw.as_mut_ptr());
    assert_eq!(status, STATUS_SUCCESS, "query interface");
    // SAFETY: filled on success.
    let table = Table(unsafe { raw.assume_init() });
    let c = w.chan(ch);
    for cycle in 0..cycles {
        if w.log.failed() {
            break;
        }
        let sink = Arc::new(Sink {
            world: w.clone(),
            table,
            ch,
            stopped: AtomicBool::new(false),
            unregistered: AtomicBool::new(false),
            active: AtomicU32::new(0),
            calls: AtomicU64::new(0),
        });
        lock(&w.sinks).push(sink.clone());
        // The previous cycle's StopChannel returned: the channel is stopped,
        // so by the contract neither call may answer BUSY.
        let (status, busy) = retry_busy(|| table.register(ch, Some(&sink)));
        w.log.check(status == STATUS_SUCCESS && busy == 0, || {
            format!("ch{ch} cycle {cycle}: RegisterCompletion of a stopped channel: {busy} BUSY answer(s), then {status:#x}")
        });
        let (status, busy) = retry_busy(|| table.start(ch, &format()));
        w.log.check(status == STATUS_SUCCESS && busy == 0, || {
            format!("ch{ch} cycle {cycle}: StartChannel of a stopped channel: {busy} BUSY answer(s), then {status:#x}")
        });
        for _ in 0..rng.below(48) {
            if w.sg {
                w.post(&table, ch, &mut rng, false);
            } else {
                w.return_one(&table, ch);
            }
            rng.jitter();
        }
        if rng.one_in(2) {
            // Let the board catch up for a while (bounded), then stop anyway:
            // S/G until every frame came back, CB returning slots as they come.
            for _ in 0..if w.sg { 2000 } else { 200 } {
                if w.sg && lock(&c.frames).values().all(|&done| done) {
                    break;
                }
                while !w.sg && w.return_one(&table, ch) {}
                thread::yield_now();
            }
        }
        let status = table.stop(ch);
        sink.stopped.store(true, SeqCst);
        w.log.check(status == STATUS_SUCCESS, || format!("ch{ch}: StopChannel: {status:#x}"));
        if w.sg {
            let left: Vec<u32> = lock(&c.frames).iter().filter(|(_, &done)| !done).map(|(&t, _)| t).collect();
            w.log
                .check(left.is_empty(), || format!("ch{ch}: StopChannel returned with frames not completed: {left:?}"));
        } else {
            // The child still owns its slots after the stop and returns them.
            while w.return_one(&table, ch) {}
        }
        let (status, busy) = retry_busy(|| table.register(ch, None));
        c.unregister_retries.fetch_add(u64::from(busy), SeqCst);
        w.log.check(status == STATUS_SUCCESS, || format!("ch{ch}: RegisterCompletion(NULL) after stop: {status:#x}"));
        sink.unregistered.store(true, SeqCst);
        w.log.check(sink.active.load(SeqCst) == 0, || format!("ch{ch}: a callback still running after unregistering"));
        rng.jitter();
    }
    table.dereference();
}

/// One seeded run of the whole machine; returns the world for extra checks.
fn run(sg: bool, seed: u64, cycles: u32) -> Arc<World> {
    let log = Arc::new(Log::default());
    let caps = Caps { scatter_gather: sg, address_64: true, channels: CHANNELS, alignment: 4096 };
    let board = Arc::new(Board::new(caps, log.clone()));
    let platform = Platform { regs: Regs(board.clone()), board: board.clone() };
    let w = Arc::new(World {
        dev: BusDevice::new(platform),
        board: board.clone(),
        log: log.clone(),
        sg,
        chans: (0..CHANNELS).map(|_| ChanTest::default()).collect(),
        sinks: Mutex::new(Vec::new()),
        dpc_queued: AtomicBool::new(false),
        isr_lock: Mutex::new(()),
        clock: AtomicI64::new(0),
        pause: AtomicBool::new(false),
        parked: AtomicU32::new(0),
        children_done: AtomicU32::new(0),
        cpus_stop: AtomicBool::new(false),
        dpcs: AtomicU64::new(0),
        idle_checks: AtomicU64::new(0),
    });
    // Small rings: the S/G ring fills (BUSY), the completion queue wraps.
    let config = StartConfig { descriptor_ring_entries: 64, cq_entries: 64, slot_count: 4, ..StartConfig::DEFAULT };
    board.starting.store(true, SeqCst);
    w.dev.start(&config).expect("start");
    board.starting.store(false, SeqCst);

    let dog = Watchdog::default();
    let mut handles = Vec::new();
    for i in 0..CPUS {
        let w = w.clone();
        handles.push(dog.spawn("cpu", move || cpu(&w, seed ^ (0x100 + u64::from(i)))));
    }
    {
        let w = w.clone();
        handles.push(dog.spawn("hardware", move || hardware(&w, seed ^ 0x200)));
    }
    for ch in 0..CHANNELS {
        let w = w.clone();
        handles.push(dog.spawn("child", move || {
            child(&w, ch, seed ^ (0x300 + u64::from(ch)), cycles);
            w.children_done.fetch_add(1, SeqCst);
        }));
    }
    // Children and the board first; then the processors drain and stop.
    dog.wait(CHANNELS as usize + 1, format_args!("seed {seed:#x}: children and board"), &w.log);
    w.idle_check();
    w.cpus_stop.store(true, SeqCst);
    dog.wait(CPUS as usize, format_args!("seed {seed:#x}: processors"), &w.log);
    join_all(handles);
    w
}

/// The end-of-run checks shared by both modes.
fn final_checks(w: &World, seed: u64) {
    let what = format!("seed {seed:#x}");
    w.log.assert_clean(&what);
    assert_eq!(w.dev.reference_count(), 0, "{what}: interface references left");
    for ch in 0..CHANNELS {
        let c = w.chan(ch);
        let stats = w.dev.channel_stats(ch).expect("stats");
        assert_eq!(stats.undelivered, 0, "{what}: ch{ch}: completions dropped for want of a callback: {stats:?}");
        let (ok, damaged, cancelled) = (c.ok.load(SeqCst), c.damaged.load(SeqCst), c.cancelled.load(SeqCst));
        if w.sg {
            assert_eq!(ok + damaged + cancelled, c.posted.load(SeqCst), "{what}: ch{ch}: completions vs posts");
            assert_eq!(stats.frames_completed, ok, "{what}: ch{ch}: {stats:?}");
            assert_eq!(stats.frames_damaged + stats.frames_aborted, damaged + cancelled, "{what}: ch{ch}: {stats:?}");
        } else {
            assert_eq!(cancelled, 0, "{what}: ch{ch}: slots are never cancelled");
            assert_eq!(stats.frames_completed + stats.frames_damaged, ok + damaged, "{what}: ch{ch}: {stats:?}");
            assert_eq!(c.slots_returned.load(SeqCst), ok + damaged, "{what}: ch{ch}: every slot came back");
        }
        assert!(ok > 0, "{what}: ch{ch}: no frame ever completed: the run exercised nothing");
    }
    // The run reached what it is about: DPCs raced, idle points were checked,
    // and (S/G) StopChannel cancelled frames in flight.
    assert!(w.dpcs.load(SeqCst) > 0 && w.idle_checks.load(SeqCst) > 0, "{what}: nothing raced");
    if w.sg {
        let cancelled: u64 = w.chans.iter().map(|c| c.cancelled.load(SeqCst)).sum();
        assert!(cancelled > 0, "{what}: no frame was ever in flight at StopChannel");
    }
    set_irql(PASSIVE_LEVEL);
    w.dev.stop();
    assert!(lock(&w.board.buffers).is_empty(), "{what}: common buffers left after stop");
    assert_eq!(w.board.adapters.load(SeqCst), 0, "{what}: adapter not put");
    w.log.assert_clean(&what);
    // The sinks hold the world: break the cycle.
    lock(&w.sinks).clear();
}

const SEEDS: [u64; 3] = [0x5EED_0001, 0x5EED_0002, 0x5EED_0003];

#[test]
fn scatter_gather_under_concurrent_dpcs_isr_and_passive_callers() {
    for seed in SEEDS {
        let w = run(true, seed, 60);
        final_checks(&w, seed);
    }
}

#[test]
fn common_buffer_under_concurrent_dpcs_isr_and_passive_callers() {
    for seed in SEEDS {
        let w = run(false, seed, 60);
        final_checks(&w, seed);
    }
}

/// A DPC passing through a stopped channel (it runs the consumer of every
/// channel, whichever interrupted) must not make `StartChannel` or
/// `RegisterCompletion` of that channel answer `STATUS_DEVICE_BUSY`: the
/// contract refuses them only while the channel runs, and the AVStream pin
/// fails `STOP -> ACQUIRE` and `PAUSE -> RUN` on that answer.
#[test]
fn dpcs_passing_through_a_stopped_channel_do_not_make_it_busy() {
    const CYCLES: u32 = 20_000;
    let log = Arc::new(Log::default());
    let caps = Caps { scatter_gather: true, address_64: true, channels: CHANNELS, alignment: 4096 };
    let board = Arc::new(Board::new(caps, log.clone()));
    let platform = Platform { regs: Regs(board.clone()), board: board.clone() };
    let dev = Arc::new(BusDevice::new(platform));
    board.starting.store(true, SeqCst);
    dev.start(&StartConfig::DEFAULT).expect("start");
    board.starting.store(false, SeqCst);
    let mut raw = std::mem::MaybeUninit::<CapdmaBusInterface>::zeroed();
    assert_eq!(dev.query_interface(CAPDMA_BUS_INTERFACE_SIZE_V1, 1, raw.as_mut_ptr()), STATUS_SUCCESS);
    // SAFETY: filled on success.
    let table = Table(unsafe { raw.assume_init() });
    let done = Arc::new(AtomicBool::new(false));
    let dpcs = Arc::new(AtomicU64::new(0));
    let dpc = {
        let (dev, done, dpcs) = (dev.clone(), done.clone(), dpcs.clone());
        thread::spawn(move || {
            while !done.load(SeqCst) {
                set_irql(DISPATCH_LEVEL);
                dev.dpc(0);
                set_irql(PASSIVE_LEVEL);
                dpcs.fetch_add(1, SeqCst);
            }
        })
    };
    // The DPCs run before the child starts, and until it ends.
    for _ in 0..1_000_000 {
        if dpcs.load(SeqCst) > 0 {
            break;
        }
        thread::yield_now();
    }
    let dog = Watchdog::default();
    let child = {
        let log = log.clone();
        dog.spawn("child", move || {
            // Not a real callback target: the channel never runs with frames posted.
            let sink_ctx = std::ptr::dangling_mut::<c_void>();
            let (mut busy_register, mut busy_start) = (0u32, 0u32);
            for _ in 0..CYCLES {
                // SAFETY: live device; no frame is ever posted, so the callback is never called.
                let register = || unsafe {
                    (table.0.register_completion.expect("RegisterCompletion"))(
                        table.ctx(),
                        0,
                        Some(never_called),
                        sink_ctx,
                    )
                };
                let (status, busy) = retry_busy(register);
                log.check(status == STATUS_SUCCESS, || format!("RegisterCompletion: {status:#x}"));
                busy_register += busy;
                let (status, busy) = retry_busy(|| table.start(0, &format()));
                log.check(status == STATUS_SUCCESS, || format!("StartChannel: {status:#x}"));
                busy_start += busy;
                log.check(table.stop(0) == STATUS_SUCCESS, || "StopChannel".into());
                let (status, _) = retry_busy(|| table.register(0, None));
                log.check(status == STATUS_SUCCESS, || format!("RegisterCompletion(NULL): {status:#x}"));
            }
            (busy_register, busy_start)
        })
    };
    dog.wait(1, "the child", &log);
    let (busy_register, busy_start) = child.join().expect("child");
    done.store(true, SeqCst);
    dpc.join().expect("dpc thread");
    let dpcs = dpcs.load(SeqCst);
    table.dereference();
    log.assert_clean("stopped channel");
    assert!(dpcs > 0);
    assert_eq!(
        (busy_register, busy_start),
        (0, 0),
        "BUSY answers for a stopped channel in {CYCLES} cycles ({dpcs} DPCs ran): (RegisterCompletion, StartChannel)"
    );
    set_irql(PASSIVE_LEVEL);
    dev.stop();
    assert!(lock(&board.buffers).is_empty());
}

/// A callback that must never run.
unsafe extern "system" fn never_called(_context: *mut c_void, completion: *const Completion) {
    // SAFETY: valid for the call.
    let c = unsafe { completion.read() };
    panic!("callback of a channel that never had a frame: {c:?}");
}
