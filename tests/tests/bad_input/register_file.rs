//! The board's register file and completion records as untrusted input:
//! a hostile board whose `INT_STATUS`, `CQ_PRODUCER` and completion records
//! (index, byte count, status, tag) are whatever proptest chooses, driven
//! through the bus core's ISR, DPC and watchdog.
//!
//! * **No out-of-bounds access**: every common buffer the bus allocates
//!   sits between two `PROT_NONE` guard pages (an access outside it kills
//!   the test process), and every record it reads is inside the queue.
//! * **No panic**: proptest fails the case on one.
//! * **Nothing delivered as good that was not**: a `STATUS_SUCCESS`
//!   completion must match a record the board wrote with `CQ_STATUS_OK`
//!   that the contract accepts (S/G: the oldest frame in flight, its first
//!   descriptor's index, its tag, at most its bytes; common buffer: a slot
//!   the child does not hold, at most the slot's bytes), and is delivered
//!   at most once.
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::rc::Rc;

use capdma_bus::config::{DmaModeOverride, StartConfig};
use capdma_bus::device::BusDevice;
use capdma_bus::ports::{BusPlatform, CommonBuffer, DeviceDescription, DmaAdapterPort, Irql, RegisterPort, DISPATCH_LEVEL, PASSIVE_LEVEL};
use capdma_interface::descriptor::{CompletionRecord, CQ_STATUS_ERROR, CQ_STATUS_OK};
use capdma_interface::format::FOURCC_YUY2;
use capdma_interface::regs::{channel, channel_base, global, int_done, int_error, Caps, BAR0_BYTES, BOARD_ID};
use capdma_interface::status::{STATUS_DEVICE_REMOVED, STATUS_SUCCESS};
use capdma_interface::table::{CapdmaBusInterface, ChannelFormat, Completion, CompletionKind, SgElement, CAPDMA_BUS_INTERFACE_SIZE_V1};
use proptest::prelude::*;
use zerocopy::IntoBytes;

const PAGE: usize = 4096;
/// Entries of the descriptor ring and the completion queue (the minimum).
const ENTRIES: u32 = 64;
/// The channel's frames: 64x4 YUY2 at stride 128 (512 bytes).
const FRAME_BYTES: u32 = 512;

/// One guarded common buffer: `bytes` usable bytes between two inaccessible pages.
struct Guarded {
    base: *mut c_void,
    total: usize,
    va: *mut u8,
    bytes: usize,
    logical: u64,
}

struct Shared {
    regs: RefCell<Vec<u32>>,
    irql: Cell<Irql>,
    live: RefCell<Vec<Guarded>>,
    next_logical: Cell<u64>,
}

impl Shared {
    fn reg(&self, offset: u32) -> u32 {
        self.regs.borrow()[(offset / 4) as usize]
    }

    fn set(&self, offset: u32, value: u32) {
        self.regs.borrow_mut()[(offset / 4) as usize] = value;
    }

    fn ch(&self, offset: u32) -> u32 {
        self.reg(channel_base(0) + offset)
    }

    fn set_ch(&self, offset: u32, value: u32) {
        self.set(channel_base(0) + offset, value);
    }

    /// Host address of `logical` inside a live buffer.
    fn host(&self, logical: u64, len: usize) -> Option<*mut u8> {
        let live = self.live.borrow();
        let g = live.iter().find(|g| g.logical <= logical && logical + len as u64 <= g.logical + g.bytes as u64)?;
        Some(g.va.wrapping_add(usize::try_from(logical - g.logical).ok()?))
    }
}

struct Regs(Rc<Shared>);

impl RegisterPort for Regs {
    fn read32(&self, offset: u32) -> u32 {
        assert!(offset < BAR0_BYTES && offset.is_multiple_of(4), "register read outside BAR0: {offset:#x}");
        self.0.reg(offset)
    }

    fn write32(&self, offset: u32, value: u32) {
        assert!(offset < BAR0_BYTES && offset.is_multiple_of(4), "register write outside BAR0: {offset:#x}");
        if offset == global::INT_STATUS {
            let v = self.0.reg(offset) & !value;
            self.0.set(offset, v);
        } else {
            self.0.set(offset, value);
        }
    }
}

struct Adapter(Rc<Shared>);

impl DmaAdapterPort for Adapter {
    fn allocate_common_buffer(&self, bytes: usize) -> Option<CommonBuffer> {
        let rounded = bytes.div_ceil(PAGE) * PAGE;
        let total = rounded + 2 * PAGE;
        // SAFETY: an anonymous private mapping; no existing memory is touched.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), total, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(base, libc::MAP_FAILED);
        let va = base.cast::<u8>().wrapping_add(PAGE);
        // SAFETY: `[va, va + rounded)` lies inside the mapping just made; the
        // guard pages on both sides stay PROT_NONE.
        let rc = unsafe { libc::mprotect(va.cast(), rounded, libc::PROT_READ | libc::PROT_WRITE) };
        assert_eq!(rc, 0);
        let logical = self.0.next_logical.get();
        self.0.next_logical.set(logical + total as u64 + PAGE as u64);
        self.0.live.borrow_mut().push(Guarded { base, total, va, bytes: rounded, logical });
        Some(CommonBuffer { va, logical, bytes })
    }

    fn free_common_buffer(&self, buffer: CommonBuffer) {
        let mut live = self.0.live.borrow_mut();
        let i = live.iter().position(|g| g.va == buffer.va).expect("freeing a buffer that is not live");
        let g = live.remove(i);
        // SAFETY: unmaps exactly the mapping made for this buffer.
        unsafe { libc::munmap(g.base, g.total) };
    }

    fn raw(&self) -> *mut c_void {
        std::ptr::from_ref(self).cast_mut().cast()
    }

    fn map_registers(&self) -> u32 {
        64
    }
}

struct Platform {
    shared: Rc<Shared>,
    regs: Regs,
}

impl BusPlatform for Platform {
    type Registers = Regs;
    type Adapter = Adapter;

    fn registers(&self) -> &Regs {
        &self.regs
    }

    fn get_dma_adapter(&self, _: &DeviceDescription) -> Option<Adapter> {
        Some(Adapter(Rc::clone(&self.shared)))
    }

    fn put_dma_adapter(&self, _: Adapter) {}

    fn highest_physical_address(&self) -> u64 {
        1 << 36
    }

    fn raise_to_dispatch(&self) -> Irql {
        self.shared.irql.replace(DISPATCH_LEVEL)
    }

    fn lower_irql(&self, old: Irql) {
        self.shared.irql.set(old);
    }

    fn current_irql(&self) -> Irql {
        self.shared.irql.get()
    }
}

/// Completions the bus delivered.
#[derive(Default)]
struct Recorder {
    got: RefCell<Vec<Completion>>,
}

unsafe extern "system" fn record(context: *mut c_void, completion: *const Completion) {
    // SAFETY: the context is the test's live Recorder.
    let r = unsafe { &*context.cast::<Recorder>() };
    // SAFETY: the completion is valid for the call.
    let c = unsafe { completion.read() };
    r.got.borrow_mut().push(c);
}

/// What the hostile board does next.
#[derive(Clone, Debug)]
enum Op {
    /// A record of random values at `CQ_PRODUCER`, the producer advanced.
    Record { index: u32, byte_count: u32, status: u32, tag: u32 },
    /// A record the contract accepts (the next frame or slot, honest values).
    Honest { status_error: bool },
    /// The next frame's or slot's index and tag, with a hostile byte count and status.
    Skewed { byte_count: u32, status: u32 },
    /// `CQ_PRODUCER` set to anything.
    CqProducer(u32),
    /// `INT_STATUS` set to anything.
    IntStatus(u32),
    /// The child posts a frame (S/G) or returns its oldest slot (common buffer).
    Child,
    /// The interrupt fires: ISR, and the DPC if claimed.
    Interrupt,
    /// The watchdog looks, `advance` 100-ns units later.
    Watchdog { advance: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..80u32, prop_oneof![0..1024u32, any::<u32>()], prop_oneof![Just(CQ_STATUS_OK), Just(CQ_STATUS_ERROR), any::<u32>()], prop_oneof![0..300u32, any::<u32>()])
            .prop_map(|(index, byte_count, status, tag)| Op::Record { index, byte_count, status, tag }),
        3 => any::<bool>().prop_map(|e| Op::Honest { status_error: e }),
        2 => (prop_oneof![0..8192u32, any::<u32>()], prop_oneof![Just(CQ_STATUS_OK), any::<u32>()])
            .prop_map(|(byte_count, status)| Op::Skewed { byte_count, status }),
        1 => any::<u32>().prop_map(Op::CqProducer),
        1 => prop_oneof![any::<u32>(), Just(u32::MAX), Just(0), Just(int_done(0) | int_error(0))].prop_map(Op::IntStatus),
        3 => Just(Op::Child),
        4 => Just(Op::Interrupt),
        1 => (0..20_000_000u32).prop_map(|advance| Op::Watchdog { advance }),
    ]
}

/// A frame the child posted (S/G).
#[derive(Clone, Copy, Debug)]
struct Posted {
    first: u32,
    tag: u32,
    bytes: u32,
}

struct Rig {
    shared: Rc<Shared>,
    dev: Box<BusDevice<Platform>>,
    iface: CapdmaBusInterface,
    rec: Box<Recorder>,
    sg: bool,
    /// Records the board wrote: (record, CQ position).
    written: Vec<CompletionRecord>,
    posted: VecDeque<Posted>,
    next_tag: u32,
    /// Slots the child holds, oldest first (common buffer).
    held: VecDeque<u32>,
    now: i64,
    /// Slot the honest board fills next (common buffer).
    next_slot: u32,
}

impl Rig {
    fn new(sg: bool) -> Self {
        let shared = Rc::new(Shared {
            regs: RefCell::new(vec![0; (BAR0_BYTES / 4) as usize]),
            irql: Cell::new(PASSIVE_LEVEL),
            live: RefCell::new(Vec::new()),
            next_logical: Cell::new(0x10_0000_0000),
        });
        shared.set(global::ID, BOARD_ID);
        shared.set(global::CAPS, Caps { scatter_gather: sg, address_64: true, channels: 1, alignment: 4096 }.encode());
        shared.set(global::MAX_TRANSFER, 4096);
        shared.set(global::MAX_FRAME_BYTES, 4096);
        let platform = Platform { regs: Regs(Rc::clone(&shared)), shared: Rc::clone(&shared) };
        let dev = Box::new(BusDevice::new(platform));
        let config = StartConfig {
            dma_mode: DmaModeOverride::Auto,
            slot_count: 4,
            descriptor_ring_entries: ENTRIES,
            cq_entries: ENTRIES,
            max_mapping_byte_count: None,
        };
        dev.start(&config).expect("start");
        let mut iface = std::mem::MaybeUninit::<CapdmaBusInterface>::zeroed();
        assert_eq!(dev.query_interface(CAPDMA_BUS_INTERFACE_SIZE_V1, 1, iface.as_mut_ptr()), STATUS_SUCCESS);
        // SAFETY: filled on success.
        let iface = unsafe { iface.assume_init() };
        let rec = Box::new(Recorder::default());
        let ctx = iface.header.context;
        // SAFETY: the recorder outlives the registration (unregistered in `finish`).
        let s = unsafe { iface.register_completion.unwrap()(ctx, 0, Some(record), std::ptr::from_ref(&*rec).cast_mut().cast()) };
        assert_eq!(s, STATUS_SUCCESS);
        let format = ChannelFormat { fourcc: FOURCC_YUY2, width: 64, height: 4, stride: 128, frame_interval: 166_666, reserved: 0 };
        // SAFETY: live device, readable format.
        assert_eq!(unsafe { iface.start_channel.unwrap()(ctx, 0, &raw const format) }, STATUS_SUCCESS);
        Self { shared, dev, iface, rec, sg, written: Vec::new(), posted: VecDeque::new(), next_tag: 1, held: VecDeque::new(), now: 0, next_slot: 0 }
    }

    fn write_record(&mut self, record: CompletionRecord) {
        let base = u64::from(self.shared.ch(channel::CQ_BASE_LO)) | (u64::from(self.shared.ch(channel::CQ_BASE_HI)) << 32);
        let entries = self.shared.ch(channel::CQ_ENTRIES).max(1);
        let producer = self.shared.ch(channel::CQ_PRODUCER);
        if let Some(p) = self.shared.host(base + u64::from(producer % entries) * 32, 32) {
            // SAFETY: 32 bytes inside a live guarded buffer (checked by `host`).
            unsafe { std::ptr::copy_nonoverlapping(record.as_bytes().as_ptr(), p, 32) };
            self.written.push(record);
        }
        self.shared.set_ch(channel::CQ_PRODUCER, producer.wrapping_add(1));
        let status = self.shared.reg(global::INT_STATUS);
        self.shared.set(global::INT_STATUS, status | int_done(0));
    }

    /// The record an honest board would write next, with `byte_count` and `status`.
    fn next_record(&mut self, byte_count: u32, status: u32) -> Option<CompletionRecord> {
        let (index, tag) = if self.sg {
            let front = self.posted.front().copied()?;
            (front.first % ENTRIES, front.tag)
        } else {
            let slot = self.next_slot;
            self.next_slot = (self.next_slot + 1) % 4;
            (slot, 0)
        };
        Some(CompletionRecord { index, byte_count, status, frame_number: 9, timestamp: 2, tag, reserved: 0 })
    }

    fn apply(&mut self, op: &Op) {
        let ctx = self.iface.header.context;
        match *op {
            Op::Record { index, byte_count, status, tag } => {
                self.write_record(CompletionRecord { index, byte_count, status, frame_number: 7, timestamp: 1, tag, reserved: 0 });
            }
            Op::Honest { status_error } => {
                let status = if status_error { CQ_STATUS_ERROR } else { CQ_STATUS_OK };
                let bytes = if self.sg { FRAME_BYTES } else { 1024 };
                if let Some(record) = self.next_record(bytes, status) {
                    self.write_record(record);
                }
            }
            Op::Skewed { byte_count, status } => {
                if let Some(record) = self.next_record(byte_count, status) {
                    self.write_record(record);
                }
            }
            Op::CqProducer(v) => self.shared.set_ch(channel::CQ_PRODUCER, v),
            Op::IntStatus(v) => self.shared.set(global::INT_STATUS, v),
            Op::Child if self.sg => {
                let tag = self.next_tag;
                self.next_tag += 1;
                let base = 0x20_0000_0000 + u64::from(tag) * 0x1000;
                let elements = [SgElement { logical_address: base, byte_count: FRAME_BYTES, alignment: 0 }];
                // SAFETY: live device; one readable element.
                let s = unsafe { self.iface.program_frame.unwrap()(ctx, 0, tag, elements.as_ptr(), 1) };
                if s == STATUS_SUCCESS {
                    let first = self.shared.ch(channel::RING_PRODUCER).wrapping_sub(1);
                    self.posted.push_back(Posted { first, tag, bytes: FRAME_BYTES });
                }
            }
            Op::Child => {
                if let Some(slot) = self.held.pop_front() {
                    // SAFETY: live device.
                    let s = unsafe { self.iface.return_slot.unwrap()(ctx, 0, slot) };
                    let removed = self.dev.is_removed() && s == STATUS_DEVICE_REMOVED;
                    assert!(s == STATUS_SUCCESS || removed, "returning the oldest held slot {slot}: {s:#x}");
                }
            }
            Op::Interrupt => {
                if self.dev.isr() {
                    let old = self.shared.irql.replace(DISPATCH_LEVEL);
                    self.dev.dpc(self.now);
                    self.shared.irql.set(old);
                }
            }
            Op::Watchdog { advance } => {
                self.now += i64::from(advance);
                let old = self.shared.irql.replace(DISPATCH_LEVEL);
                self.dev.watchdog(self.now);
                self.shared.irql.set(old);
            }
        }
    }

    /// Checks every completion delivered since the last call.
    fn judge(&mut self) -> Result<(), TestCaseError> {
        let got = std::mem::take(&mut *self.rec.got.borrow_mut());
        for c in got {
            prop_assert_eq!(c.channel, 0);
            if self.sg {
                prop_assert_eq!(c.kind, CompletionKind::Frame as u32);
                // Completions come in posting order: good or terminated, it is the oldest frame.
                let Some(front) = self.posted.pop_front() else {
                    return Err(TestCaseError::fail(format!("completion of tag {} with nothing posted", c.tag)));
                };
                prop_assert_eq!(c.tag, front.tag, "completions in posting order");
                if c.status == STATUS_SUCCESS {
                    let matching = self.written.iter().any(|r| {
                        r.status == CQ_STATUS_OK
                            && r.index == front.first % ENTRIES
                            && r.tag == front.tag
                            && r.byte_count == c.bytes_written
                            && r.byte_count <= front.bytes
                            && r.frame_number == c.frame_number
                    });
                    prop_assert!(matching, "frame {} delivered as good without a valid record: {:?}", c.tag, c);
                }
            } else {
                prop_assert_eq!(c.kind, CompletionKind::Slot as u32);
                prop_assert!(c.tag < 4, "slot {} outside the ring", c.tag);
                prop_assert!(!self.held.contains(&c.tag), "slot {} delivered while the child holds it", c.tag);
                if c.status == STATUS_SUCCESS {
                    let slot_bytes = 4096;
                    let matching = self.written.iter().any(|r| {
                        r.status == CQ_STATUS_OK && r.index == c.tag && r.byte_count == c.bytes_written && r.byte_count <= slot_bytes
                    });
                    prop_assert!(matching, "slot {} delivered as good without a valid record: {:?}", c.tag, c);
                }
                self.held.push_back(c.tag);
            }
        }
        Ok(())
    }

    /// Stops the channel, drops the reference, stops the device: every
    /// buffer freed, every frame completed.
    fn finish(mut self) -> Result<(), TestCaseError> {
        let ctx = self.iface.header.context;
        // SAFETY: live device.
        prop_assert_eq!(unsafe { self.iface.stop_channel.unwrap()(ctx, 0) }, STATUS_SUCCESS);
        self.judge()?;
        prop_assert!(self.posted.is_empty(), "frames never completed: {:?}", self.posted);
        for slot in std::mem::take(&mut self.held) {
            // SAFETY: live device.
            let s = unsafe { self.iface.return_slot.unwrap()(ctx, 0, slot) };
            let removed = self.dev.is_removed() && s == STATUS_DEVICE_REMOVED;
            prop_assert!(s == STATUS_SUCCESS || removed, "slot {} returned after stop: {:#x}", slot, s);
        }
        // SAFETY: live device; unregisters before the recorder goes.
        prop_assert_eq!(unsafe { self.iface.register_completion.unwrap()(ctx, 0, None, std::ptr::null_mut()) }, STATUS_SUCCESS);
        // SAFETY: drops the query's reference, once.
        unsafe { self.iface.header.interface_dereference.unwrap()(ctx) };
        self.dev.stop_engines();
        self.dev.stop();
        prop_assert_eq!(self.shared.live.borrow().len(), 0, "common buffers left");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_register_values_and_records_are_survived(sg in any::<bool>(), ops in proptest::collection::vec(op(), 1..120)) {
        let mut rig = Rig::new(sg);
        for op in &ops {
            rig.apply(op);
            rig.judge()?;
        }
        rig.finish()?;
    }
}
