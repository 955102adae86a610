//! Unit tests of the bus core against a small fake platform ([`fake`]).
//! Everything a child does goes through the real `extern "system"` table.
mod concurrency;
mod engine;
mod fake;
mod interface;
mod parts;
mod power;
mod start_stop;

use crate::config::StartConfig;
use crate::device::BusDevice;
use capdma_interface::format::FOURCC_YUY2;
use capdma_interface::regs::Caps;
use capdma_interface::status::{NtStatus, STATUS_SUCCESS};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, Completion, DmaConfig, SgElement, SlotRing, CAPDMA_BUS_INTERFACE_SIZE_V2,
    CAPDMA_BUS_INTERFACE_VERSION,
};
use core::ffi::c_void;
use fake::{FakePlatform, Machine};
use std::cell::RefCell;
use std::rc::Rc;

/// 1920×1080 YUY2.
const MAX_FRAME: u32 = 1920 * 1080 * 2;

fn caps(sg: bool, a64: bool, channels: u32) -> Caps {
    Caps { scatter_gather: sg, address_64: a64, channels, alignment: 4096 }
}

/// A boxed (address-stable) device over a fake board.
struct Harness {
    dev: Box<BusDevice<FakePlatform>>,
    m: Rc<Machine>,
}

impl Harness {
    fn new(caps: Caps, max_frame: u32) -> Self {
        let platform = FakePlatform::new(caps, max_frame);
        let m = platform.m.clone();
        Self { dev: Box::new(BusDevice::new(platform)), m }
    }

    fn sg(channels: u32) -> Self {
        Self::new(caps(true, true, channels), MAX_FRAME)
    }

    fn cb(channels: u32) -> Self {
        Self::new(caps(false, true, channels), MAX_FRAME)
    }

    fn start(&self) -> Iface {
        self.dev.start(&StartConfig::DEFAULT).expect("start");
        self.iface()
    }

    fn iface(&self) -> Iface {
        let mut table = std::mem::MaybeUninit::<CapdmaBusInterface>::zeroed();
        let status = self.dev.query_interface(CAPDMA_BUS_INTERFACE_SIZE_V2, CAPDMA_BUS_INTERFACE_VERSION, table.as_mut_ptr());
        assert_eq!(status, STATUS_SUCCESS);
        // SAFETY: test: query_interface filled the whole table on success.
        Iface(unsafe { table.assume_init() })
    }

    /// The interrupt path as the glue runs it: ISR, then the DPC if it claimed the interrupt.
    fn interrupt(&self, now: i64) -> bool {
        let claimed = self.dev.isr();
        if claimed {
            let old = self.m.irql.replace(crate::ports::DISPATCH_LEVEL);
            self.dev.dpc(now);
            self.m.irql.set(old);
        }
        claimed
    }
}

/// Records completions (and the IRQL each arrived at).
struct Recorder {
    m: Rc<Machine>,
    got: RefCell<Vec<Completion>>,
    irqls: RefCell<Vec<u8>>,
}

impl Recorder {
    #[allow(clippy::unnecessary_box_returns, reason = "the callback context needs a stable address")]
    fn new(h: &Harness) -> Box<Self> {
        Box::new(Self { m: h.m.clone(), got: RefCell::new(Vec::new()), irqls: RefCell::new(Vec::new()) })
    }

    fn take(&self) -> Vec<Completion> {
        std::mem::take(&mut *self.got.borrow_mut())
    }
}

/// The completion callback registered by the tests.
unsafe extern "system" fn record(context: *mut c_void, completion: *const Completion) {
    // SAFETY: test: `context` is the boxed Recorder the test keeps alive.
    let r = unsafe { &*context.cast::<Recorder>() };
    // SAFETY: valid for the call per the contract.
    let c = unsafe { completion.read() };
    r.irqls.borrow_mut().push(r.m.irql.get());
    r.got.borrow_mut().push(c);
}

/// A child's view: the interface table and typed calls through its pointers.
struct Iface(CapdmaBusInterface);

#[allow(clippy::missing_panics_doc, reason = "test helpers")]
impl Iface {
    fn ctx(&self) -> *mut c_void {
        self.0.header.context
    }

    fn config(&self, ch: u32) -> (NtStatus, DmaConfig) {
        let mut c = DmaConfig::default();
        // SAFETY: test: the table is from a live boxed device; `c` is writable.
        let s = unsafe { (self.0.get_dma_config.unwrap())(self.ctx(), ch, &raw mut c) };
        (s, c)
    }

    fn adapter(&self, ch: u32) -> (NtStatus, *mut c_void, u32, u32) {
        let (mut a, mut mm, mut mr) = (std::ptr::null_mut(), 0, 0);
        // SAFETY: test: live device; all out-pointers writable.
        let s = unsafe { (self.0.get_dma_adapter.unwrap())(self.ctx(), ch, &raw mut a, &raw mut mm, &raw mut mr) };
        (s, a, mm, mr)
    }

    fn program(&self, ch: u32, tag: u32, elements: &[SgElement]) -> NtStatus {
        let count = u32::try_from(elements.len()).unwrap();
        // SAFETY: test: live device; `elements` readable for `count` entries.
        unsafe { (self.0.program_frame.unwrap())(self.ctx(), ch, tag, elements.as_ptr(), count) }
    }

    /// `ProgramFramePart`: (status, elements accepted).
    fn program_part(&self, ch: u32, tag: u32, elements: &[SgElement], flags: u32) -> (NtStatus, u32) {
        let count = u32::try_from(elements.len()).unwrap();
        let mut accepted = u32::MAX;
        // SAFETY: test: live device; `elements` readable for `count` entries; `accepted` writable.
        let s = unsafe {
            (self.0.program_frame_part.unwrap())(self.ctx(), ch, tag, elements.as_ptr(), count, flags, &raw mut accepted)
        };
        (s, accepted)
    }

    fn slot_ring(&self, ch: u32) -> (NtStatus, SlotRing) {
        let mut r = SlotRing {
            base: std::ptr::null_mut(),
            base_logical: 0,
            slot_count: 0,
            slot_stride: 0,
            slot_bytes: 0,
            line_pitch: 0,
        };
        // SAFETY: test: live device; `r` writable.
        let s = unsafe { (self.0.get_slot_ring.unwrap())(self.ctx(), ch, &raw mut r) };
        (s, r)
    }

    fn return_slot(&self, ch: u32, slot: u32) -> NtStatus {
        // SAFETY: test: live device.
        unsafe { (self.0.return_slot.unwrap())(self.ctx(), ch, slot) }
    }

    fn start(&self, ch: u32, format: &ChannelFormat) -> NtStatus {
        // SAFETY: test: live device; `format` readable.
        unsafe { (self.0.start_channel.unwrap())(self.ctx(), ch, format) }
    }

    fn stop(&self, ch: u32) -> NtStatus {
        // SAFETY: test: live device.
        unsafe { (self.0.stop_channel.unwrap())(self.ctx(), ch) }
    }

    fn register(&self, ch: u32, recorder: Option<&Recorder>) -> NtStatus {
        let (cb, ctx) = match recorder {
            Some(r) => (Some(record as capdma_interface::table::PfnCompletion), std::ptr::from_ref(r).cast_mut().cast()),
            None => (None, std::ptr::null_mut()),
        };
        // SAFETY: test: live device; the recorder outlives the registration.
        unsafe { (self.0.register_completion.unwrap())(self.ctx(), ch, cb, ctx) }
    }

    fn dereference(&self) {
        // SAFETY: test: live device.
        unsafe { (self.0.header.interface_dereference.unwrap())(self.ctx()) };
    }

    fn reference(&self) {
        // SAFETY: test: live device.
        unsafe { (self.0.header.interface_reference.unwrap())(self.ctx()) };
    }
}

/// YUY2 `width`×`height` at `stride`, 30 fps.
fn yuy2(width: u32, height: u32, stride: u32) -> ChannelFormat {
    ChannelFormat { fourcc: FOURCC_YUY2, width, height, stride, frame_interval: 333_333, reserved: 0 }
}

/// Elements covering `bytes` bytes in pieces of at most 4096, from `base`.
fn elements(base: u64, bytes: u32) -> Vec<SgElement> {
    let mut v = Vec::new();
    let mut off = 0;
    while off < bytes {
        let n = (bytes - off).min(4096);
        v.push(SgElement { logical_address: base + u64::from(off) * 2, byte_count: n, alignment: 0 });
        off += n;
    }
    v
}

/// `BusDevice<P>` is `Sync` (shareable between the ISR, DPCs and callers on
/// several processors) whenever the platform is `Sync` and its adapter `Send`.
#[test]
fn bus_device_is_sync_for_a_sync_platform() {
    use crate::ports::{BusPlatform, CommonBuffer, DeviceDescription, DmaAdapterPort, Irql, RegisterPort};
    struct Regs;
    impl RegisterPort for Regs {
        fn read32(&self, _: u32) -> u32 {
            0
        }
        fn write32(&self, _: u32, _: u32) {}
    }
    struct Adapter;
    impl DmaAdapterPort for Adapter {
        fn allocate_common_buffer(&self, _: usize) -> Option<CommonBuffer> {
            None
        }
        fn free_common_buffer(&self, _: CommonBuffer) {}
        fn raw(&self) -> *mut c_void {
            std::ptr::null_mut()
        }
        fn map_registers(&self) -> u32 {
            0
        }
    }
    struct Platform(Regs);
    impl BusPlatform for Platform {
        type Registers = Regs;
        type Adapter = Adapter;
        fn registers(&self) -> &Regs {
            &self.0
        }
        fn get_dma_adapter(&self, _: &DeviceDescription) -> Option<Adapter> {
            None
        }
        fn put_dma_adapter(&self, _: Adapter) {}
        fn highest_physical_address(&self) -> u64 {
            0
        }
        fn raise_to_dispatch(&self) -> Irql {
            0
        }
        fn lower_irql(&self, _: Irql) {}
        fn current_irql(&self) -> Irql {
            0
        }
    }
    fn assert_sync<T: Sync>(_: &T) {}
    let dev = BusDevice::new(Platform(Regs));
    assert_sync(&dev);
    // No board: start fails cleanly.
    assert_eq!(dev.start(&StartConfig::DEFAULT), Err(capdma_interface::status::STATUS_IO_DEVICE_ERROR));
}

/// 64×4 YUY2 at stride 128: 512-byte frames, one descriptor each.
const FRAME: u32 = 512;

/// Frame `tag`'s elements: one 512-byte element at an address above 4 GiB.
fn frame(tag: u32) -> Vec<SgElement> {
    elements(0x2_0000_0000 + u64::from(tag) * 0x10000, FRAME)
}

/// (tag, status) of each completion.
fn statuses(got: &[Completion]) -> Vec<(u32, NtStatus)> {
    got.iter().map(|c| (c.tag, c.status)).collect()
}

/// An S/G device with two channels, channel 0 running 64×4 YUY2 with a recorder.
fn running_sg() -> (Harness, Iface, Box<Recorder>) {
    let h = Harness::sg(2);
    let iface = h.start();
    let rec = Recorder::new(&h);
    assert_eq!(iface.register(0, Some(&rec)), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(64, 4, 128)), STATUS_SUCCESS);
    (h, iface, rec)
}

/// A common-buffer device with channel 0 running 100×10 YUY2 (4 slots) with a recorder.
fn running_cb() -> (Harness, Iface, Box<Recorder>) {
    let h = Harness::cb(1);
    let iface = h.start();
    let rec = Recorder::new(&h);
    assert_eq!(iface.register(0, Some(&rec)), STATUS_SUCCESS);
    assert_eq!(iface.start(0, &yuy2(100, 10, 0)), STATUS_SUCCESS);
    (h, iface, rec)
}
