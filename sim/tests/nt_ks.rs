//! The emulated `ks.sys` (`sim/src/nt/ks/`) driven as a minidriver and an
//! application drive it: a minidriver whose `KSDEVICE_DISPATCH` and
//! `KSPIN_DISPATCH` routines are host functions calling the DDIs through
//! their stubs (as guest code does), its descriptors built in guest memory
//! with the layouts of `nt::layout::ks`, the device added and started by
//! the PnP manager over the emulated PCI PDO, and the application's side
//! (filter, pin, frames, state changes) through `nt::ks::pin`.
//!
//! First what correct use gives (with no Driver Verifier finding): the
//! device's life, the object bags and `_KsEdit`, the pin's creation and
//! state walk, the queue and its stream pointers, mapping generation, and
//! when AVStream calls `Process` (the rules `nt/ks/stream.rs` states). Then,
//! for every check the emulated `ks.sys` makes, a wrong minidriver that
//! trips it. Last, `docs/ddi.md` against the AVStream image's imports.
//!
//! Needs `/dev/kvm` (and the AVStream image for the last test); says so
//! and passes vacuously only outside CI.

#![allow(clippy::doc_markdown, reason = "the docs name Windows DDIs and constants, as in sim/src/nt")]
#![allow(clippy::unnecessary_wraps, reason = "host routines have the HostFn signature")]
#![allow(clippy::cast_possible_truncation, reason = "layout offsets and sizes are small constants")]

mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use capdma_avstream::ks_format::{KSPROPERTY_DROPPEDFRAMES_CURRENT, PROPSETID_VIDCAP_DROPPEDFRAMES};
use capdma_sim::ks::CompletedFrame;
use capdma_sim::memory::Allocation;
use capdma_sim::nt::ks::device::KSFILTER_DESCRIPTOR_VERSION;
use capdma_sim::nt::ks::pin::{
    self as ks_pin, KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING, KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING, KSPIN_FLAG_GENERATE_MAPPINGS,
    KSPIN_FLAG_INITIATE_PROCESSING_ON_EVERY_ARRIVAL, KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY, KSSTATE_ACQUIRE, KSSTATE_PAUSE, KSSTATE_RUN,
    KSSTATE_STOP,
};
use capdma_sim::nt::ks::stream::NO_PROGRESS_LIMIT;
use capdma_sim::nt::ks::{self, AppBuffer, PinHandle};
use capdma_sim::nt::layout::dma::{device_description, dma_adapter, dma_operations, DEVICE_DESCRIPTION_VERSION2, PCI_BUS, WIDTH_32_BITS};
use capdma_sim::nt::layout::irp::{irp, mj, status};
use capdma_sim::nt::layout::ks::{
    ks_frame_info, ksautomation_table, ksdataformat, ksdevice, ksdevice_descriptor, ksdevice_dispatch, ksfilter, ksfilter_descriptor, ksfilterfactory,
    ksmapping, kspin, kspin_descriptor, kspin_descriptor_ex, kspin_dispatch, ksproperty_droppedframes_current_s, ksproperty_item, ksproperty_set, ksstream_header, ksstream_pointer,
};
use capdma_sim::nt::layout::{device_object, do_flags, driver_extension, driver_object};
use capdma_sim::nt::pnp::{PciIdentity, Pnp, StartResources};
use capdma_sim::nt::pool::POOL_FLAG_NON_PAGED;
use capdma_sim::nt::system::{Driver, System};
use capdma_sim::nt::verifier::Finding;
use capdma_sim::nt::{HostFn, Nt, DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};
use capdma_winvm::{Machine, Stop};

// ------------------------------------------------------------------ the minidriver

/// Pool tag of the minidriver's allocations.
const TAG: u64 = u32::from_le_bytes(*b"KsTs") as u64;
/// `KSDEVICE_DESCRIPTOR_VERSION` (ks.h).
const KSDEVICE_DESCRIPTOR_VERSION: u32 = 0x100;
/// `KSSTREAM_POINTER_STATE_LOCKED` (ks.h).
const LOCKED: u64 = 1;
/// `KSPIN_DATAFLOW_OUT`, `KSPIN_COMMUNICATION_BOTH` (ks.h): a capture pin.
const KSPIN_DATAFLOW_OUT: u32 = 2;
const KSPIN_COMMUNICATION_BOTH: u32 = 3;
/// `STATUS_DEVICE_BUSY`, `STATUS_DEVICE_NOT_READY` (ntstatus.h).
const STATUS_DEVICE_BUSY: u32 = 0x8000_0011;
const STATUS_DEVICE_NOT_READY: u32 = 0xC000_00A3;
/// Bytes of each application frame (two pages, scattered).
const FRAME_BYTES: u32 = 8192;
/// `KSSTREAM_HEADER.Size` the application sends: the header and a `KS_FRAME_INFO`.
const HEADER_SIZE: u32 = (ksstream_header::SIZE + ks_frame_info::SIZE) as u32;
/// What the minidriver's `Process` writes into a frame.
const FILL: u8 = 0xC7;

/// What the minidriver's callbacks saw, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// `Add(Device)`.
    Add(u64),
    /// `Start(Device, Irp, ...)`: the device, `KSDEVICE.Started` then, and
    /// the IRP's `IoStatus.Status` then (what the lower drivers left).
    Start(u64, u8, u32),
    /// The filter factory `Start` created (`*FilterFactory`), and `KsCreateFilterFactory`'s status.
    Factory(u64, u32),
    /// `PostStart(Device)`.
    PostStart(u64),
    /// `QueryRemove(Device, Irp)`.
    QueryRemove(u64),
    /// `Remove(Device, Irp)`.
    Remove(u64),
    /// The bag's free routine (`PFNKSFREE`) with the item.
    Freed(u64),
    /// `SetDataFormat(Pin, NULL, NULL, DataRange, NULL)`: the pin and the range.
    SetDataFormat(u64, u64),
    /// `Create(Pin, Irp)`: the pin, `KsGetPinFromIrp(Irp)`, `KsGetDevice(Pin)`.
    Create(u64, u64, u64),
    /// `_KsEdit` of `KSPIN.Descriptor` in `Create`: its status.
    EditedDescriptor(u32),
    /// `Close(Pin, Irp)`: the pin and `KsGetPinFromIrp(Irp)`.
    Close(u64, u64),
    /// `SetDeviceState(Pin, To, From)` and `KSPIN.DeviceState` then.
    SetDeviceState(u64, u32, u32, u32),
    /// `Process(Pin)` and the IRQL it runs at.
    Process(u64, u8),
    /// A clone `Process` made.
    Clone(u64),
    /// A clone's `CancelCallback` (`AVStrMiniCancelCallback`): the clone and the IRQL.
    Cancelled(u64, u8),
    /// `KsStreamPointerAdvanceOffsets`'s status in `Process`.
    Advanced(u32),
    /// The intersect handler's call: the buffer size it was given.
    Intersect(u32),
    /// The dropped-frames property handler: `KsGetPinFromIrp(Irp)`.
    DroppedFrames(u64),
}

thread_local! {
    /// Stub addresses by DDI name, for the current system.
    static STUBS: RefCell<HashMap<&'static str, u64>> = RefCell::new(HashMap::new());
    /// What the callbacks saw.
    static LOG: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
}

fn log(event: Event) {
    LOG.with(|l| l.borrow_mut().push(event));
}

fn events() -> Vec<Event> {
    LOG.with(|l| l.borrow().clone())
}

/// The low 32 bits (an `NTSTATUS`, a `ULONG`).
fn low(value: u64) -> u32 {
    u32::try_from(value & 0xFFFF_FFFF).unwrap_or(u32::MAX)
}

/// The stub of DDI `name` (`ks.sys` for the `Ks`/`_Ks` names, else `ntoskrnl.exe`).
fn stub(nt: &mut Nt, m: &mut Machine, name: &'static str) -> u64 {
    if let Some(va) = STUBS.with(|s| s.borrow().get(name).copied()) {
        return va;
    }
    let module = if name.starts_with("Ks") || name.starts_with("_Ks") { "ks.sys" } else { "ntoskrnl.exe" };
    let va = nt.resolve(m, module, name).unwrap_or_else(|| panic!("{module}!{name} is not emulated"));
    STUBS.with(|s| s.borrow_mut().insert(name, va));
    va
}

/// Calls a DDI through its stub, as the minidriver's code does.
fn ddi(nt: &mut Nt, m: &mut Machine, name: &'static str, args: &[u64]) -> Result<u64, Stop> {
    let va = stub(nt, m, name);
    m.call(nt, va, args)
}

/// `Add`: a context from the pool in `KSDEVICE.Context` and in the
/// device's bag (under the device mutex), freed by `free` (0: `ExFreePool`).
fn mini_add(nt: &mut Nt, m: &mut Machine, free: u64) -> Result<u64, Stop> {
    let [device] = m.args::<1>()?;
    log(Event::Add(device));
    let context = ddi(nt, m, "ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 64, TAG])?;
    if context == 0 {
        return Ok(u64::from(status::INSUFFICIENT_RESOURCES));
    }
    m.write_u64(device + ksdevice::CONTEXT, context)?;
    let bag = m.read_u64(device + ksdevice::BAG)?;
    // AVStream holds no mutex around Add ("Device Mutex in AVStream"): the
    // bag's, the device mutex, is the minidriver's to take.
    ddi(nt, m, "KsAcquireDevice", &[device])?;
    let st = ddi(nt, m, "KsAddItemToObjectBag", &[bag, context, free])?;
    ddi(nt, m, "KsReleaseDevice", &[device])?;
    Ok(st)
}

/// `Add` that puts its context in the device's bag without the device
/// mutex (AVStream holds none around `Add`).
fn mini_add_unguarded(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [device] = m.args::<1>()?;
    log(Event::Add(device));
    let context = ddi(nt, m, "ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 64, TAG])?;
    m.write_u64(device + ksdevice::CONTEXT, context)?;
    let bag = m.read_u64(device + ksdevice::BAG)?;
    ddi(nt, m, "KsAddItemToObjectBag", &[bag, context, 0])
}

/// `Add` that fails.
fn mini_add_fails(_nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [device] = m.args::<1>()?;
    log(Event::Add(device));
    Ok(u64::from(status::INSUFFICIENT_RESOURCES))
}

/// A bag item's free routine (`PFNKSFREE`): logs, then `ExFreePool`.
fn mini_free(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [item] = m.args::<1>()?;
    log(Event::Freed(item));
    ddi(nt, m, "ExFreePool", &[item])?;
    Ok(0)
}

/// `Start`: with a filter descriptor (the context), its filter factory,
/// the device mutex held around `KsCreateFilterFactory` as its page requires.
fn mini_start(nt: &mut Nt, m: &mut Machine, filter_descriptor: u64) -> Result<u64, Stop> {
    let [device, irp_va, _translated, _raw] = m.args::<4>()?;
    let started = m.read_u8(device + ksdevice::STARTED)?;
    log(Event::Start(device, started, m.read_u32(irp_va + irp::STATUS)?));
    if filter_descriptor == 0 {
        return Ok(0);
    }
    let fdo = m.read_u64(device + ksdevice::FUNCTIONAL_DEVICE_OBJECT)?;
    let out = nt.alloc_kernel(m, 8)?;
    ddi(nt, m, "KsAcquireDevice", &[device])?;
    let st = low(ddi(nt, m, "KsCreateFilterFactory", &[fdo, filter_descriptor, 0, 0, 0, 0, 0, out])?);
    ddi(nt, m, "KsReleaseDevice", &[device])?;
    log(Event::Factory(m.read_u64(out)?, st));
    m.free_own_pages(out, 1)?;
    Ok(u64::from(st))
}

fn mini_post_start(_nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [device] = m.args::<1>()?;
    log(Event::PostStart(device));
    Ok(0)
}

/// `QueryRemove`: answers the status in its context.
fn mini_query_remove(_nt: &mut Nt, m: &mut Machine, answer: u64) -> Result<u64, Stop> {
    let [device, _irp] = m.args::<2>()?;
    log(Event::QueryRemove(device));
    Ok(answer)
}

fn mini_remove(_nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [device, _irp] = m.args::<2>()?;
    log(Event::Remove(device));
    Ok(0)
}

fn mini_set_data_format(_nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pin, _old_format, _old_attributes] = m.args::<3>()?;
    let range = m.arg(3)?;
    log(Event::SetDataFormat(pin, range));
    Ok(0)
}

/// `Create`: who the IRP belongs to and the pin's device; with a nonzero
/// context, the pin's own copy of its descriptor (`_KsEdit` in the pin's
/// bag, as the AVStream image does).
fn mini_create(nt: &mut Nt, m: &mut Machine, edit_descriptor: u64) -> Result<u64, Stop> {
    let [pin, irp_va] = m.args::<2>()?;
    let from_irp = ddi(nt, m, "KsGetPinFromIrp", &[irp_va])?;
    let device = ddi(nt, m, "KsGetDevice", &[pin])?;
    log(Event::Create(pin, from_irp, device));
    if edit_descriptor == 2 {
        // The filter control mutex AVStream already holds around Create.
        ddi(nt, m, "KsAcquireControl", &[pin])?;
    }
    if edit_descriptor != 0 {
        let bag = m.read_u64(pin + kspin::BAG)?;
        let size = kspin_descriptor_ex::SIZE;
        let st = low(ddi(nt, m, "_KsEdit", &[bag, pin + kspin::DESCRIPTOR, size, size, TAG])?);
        log(Event::EditedDescriptor(st));
        return Ok(u64::from(st));
    }
    Ok(0)
}

fn mini_close(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pin, irp_va] = m.args::<2>()?;
    let from_irp = ddi(nt, m, "KsGetPinFromIrp", &[irp_va])?;
    log(Event::Close(pin, from_irp));
    Ok(0)
}

/// `SetDeviceState`: succeeds, except entering the state `context - 1`
/// (context 0: never fails).
fn mini_set_device_state(_nt: &mut Nt, m: &mut Machine, fail_entering: u64) -> Result<u64, Stop> {
    let [pin, to, from] = m.args::<3>()?;
    let (to, from) = (low(to), low(from));
    log(Event::SetDeviceState(pin, to, from, m.read_u32(pin + kspin::DEVICE_STATE)?));
    if fail_entering != 0 && u64::from(to) == fail_entering - 1 {
        return Ok(u64::from(status::INSUFFICIENT_RESOURCES));
    }
    Ok(0)
}

/// `Process` that does nothing and says it did (`STATUS_SUCCESS`).
fn process_nothing(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    log(Event::Process(pin, nt.irql));
    Ok(u64::from(status::SUCCESS))
}

/// `Process` that waits for the hardware (`STATUS_PENDING`).
fn process_pending(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    log(Event::Process(pin, nt.irql));
    Ok(u64::from(status::PENDING))
}

/// `Process` of a capture pin: fills the frame at the leading edge from its
/// `OffsetOut` (`used` bytes of it; 0: all that remain), advances over
/// them and unlocks (ejecting a frame it filled only partly);
/// `STATUS_PENDING` when no frame is there.
fn process_fill(nt: &mut Nt, m: &mut Machine, used: u64) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    log(Event::Process(pin, nt.irql));
    let sp = ddi(nt, m, "KsPinGetLeadingEdgeStreamPointer", &[pin, LOCKED])?;
    if sp == 0 {
        return Ok(u64::from(status::PENDING));
    }
    let out = sp + ksstream_pointer::OFFSET_OUT;
    let data = m.read_u64(out + ksstream_pointer::OFFSET_DATA)?;
    let remaining = m.read_u32(out + ksstream_pointer::OFFSET_REMAINING)?;
    let n = if used == 0 { remaining } else { low(used).min(remaining) };
    m.fill(data, n as usize, FILL)?;
    let eject = u64::from(n < remaining);
    ddi(nt, m, "KsStreamPointerAdvanceOffsetsAndUnlock", &[sp, 0, u64::from(n), eject])?;
    Ok(u64::from(status::SUCCESS))
}

/// `Process` of a DMA minidriver: a clone of the leading edge holds the
/// frame for the hardware, the leading edge is ejected to the next one.
fn process_clone(nt: &mut Nt, m: &mut Machine, cancel: u64) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    log(Event::Process(pin, nt.irql));
    let sp = ddi(nt, m, "KsPinGetLeadingEdgeStreamPointer", &[pin, LOCKED])?;
    if sp == 0 {
        return Ok(u64::from(status::PENDING));
    }
    let out = nt.alloc_kernel(m, 8)?;
    // Context 1: a CancelCallback that deletes the clone; 2: one that keeps it.
    let cancel = if cancel == 0 { 0 } else { nt.host_function(m, "mini!Cancel", mini_cancel, cancel, DISPATCH_LEVEL)? };
    let st = low(ddi(nt, m, "KsStreamPointerClone", &[sp, cancel, 16, out])?);
    assert_eq!(st, status::SUCCESS, "KsStreamPointerClone");
    log(Event::Clone(m.read_u64(out)?));
    m.free_own_pages(out, 1)?;
    ddi(nt, m, "KsStreamPointerUnlock", &[sp, 1])?;
    Ok(u64::from(status::SUCCESS))
}

/// `Process` that asks for another call (`KsPinAttemptProcessing`) and
/// returns `STATUS_PENDING`, having done nothing.
fn process_asks_again(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    log(Event::Process(pin, nt.irql));
    ddi(nt, m, "KsPinAttemptProcessing", &[pin, 1])?;
    Ok(u64::from(status::PENDING))
}

/// `Process` that takes the processing mutex AVStream already holds for it.
fn process_takes_the_mutex(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    log(Event::Process(pin, nt.irql));
    ddi(nt, m, "KsPinAcquireProcessingMutex", &[pin])?;
    Ok(u64::from(status::PENDING))
}

/// `Process` that advances its locked leading edge past the frame's end.
fn process_overruns(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    log(Event::Process(pin, nt.irql));
    let sp = ddi(nt, m, "KsPinGetLeadingEdgeStreamPointer", &[pin, LOCKED])?;
    if sp != 0 {
        let remaining = m.read_u32(sp + ksstream_pointer::OFFSET_OUT + ksstream_pointer::OFFSET_REMAINING)?;
        let st = ddi(nt, m, "KsStreamPointerAdvanceOffsets", &[sp, 0, u64::from(remaining) + 4096, 0])?;
        log(Event::Advanced(low(st)));
    }
    Ok(u64::from(status::PENDING))
}

/// The pin's intersect handler (`PFNKSINTERSECTHANDLEREX`): the size
/// first (`STATUS_BUFFER_OVERFLOW`), then its own data range as the format.
fn mini_intersect(_nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [_context, _irp, _pin, _caller_range] = m.args::<4>()?;
    let (ours, size, data, data_size) = (m.arg(4)?, low(m.arg(5)?), m.arg(6)?, m.arg(7)?);
    log(Event::Intersect(size));
    m.write_u32(data_size, ksdataformat::SIZE as u32)?;
    if size == 0 {
        return Ok(u64::from(status::BUFFER_OVERFLOW));
    }
    let mut bytes = [0u8; ksdataformat::SIZE as usize];
    m.read(ours, &mut bytes)?;
    m.write(data, &bytes)?;
    Ok(u64::from(status::SUCCESS))
}

/// What the dropped-frames handler answers: `PictureNumber`, `DropCount`.
const PICTURES: u64 = 1234;
const DROPPED: u64 = 5;

/// The pin's `KSPROPERTY_DROPPEDFRAMES_CURRENT` get handler
/// (`PFNKSHANDLER(Irp, Request, Data)`).
fn mini_dropped_frames(nt: &mut Nt, m: &mut Machine, _context: u64) -> Result<u64, Stop> {
    let [irp_va, _request, data] = m.args::<3>()?;
    log(Event::DroppedFrames(ddi(nt, m, "KsGetPinFromIrp", &[irp_va])?));
    m.write_u64(data + ksproperty_droppedframes_current_s::PICTURE_NUMBER, PICTURES)?;
    m.write_u64(data + ksproperty_droppedframes_current_s::DROP_COUNT, DROPPED)?;
    m.write_u32(data + ksproperty_droppedframes_current_s::AVERAGE_FRAME_SIZE, FRAME_BYTES)?;
    Ok(u64::from(status::SUCCESS))
}

/// `PROPSETID_VIDCAP_DROPPEDFRAMES` as a `GUID`'s bytes.
fn droppedframes_set() -> [u8; 16] {
    let g = PROPSETID_VIDCAP_DROPPEDFRAMES;
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&g.data1.to_le_bytes());
    out[4..6].copy_from_slice(&g.data2.to_le_bytes());
    out[6..8].copy_from_slice(&g.data3.to_le_bytes());
    out[8..].copy_from_slice(&g.data4);
    out
}

/// The pin's format (and its one data range): a 64-byte `KSDATAFORMAT`
/// whose GUIDs are the test's own.
fn format() -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..4].copy_from_slice(&64u32.to_le_bytes());
    f[8..12].copy_from_slice(&FRAME_BYTES.to_le_bytes());
    f[16..32].copy_from_slice(b"nt_ks MajorFmt!!");
    f[32..48].copy_from_slice(b"nt_ks SubFormat!");
    f[48..64].copy_from_slice(b"nt_ks Specifier!");
    f
}

/// What the minidriver's `Add` does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Add {
    /// A context from the pool in the device's bag (freed by `ExFreePool`).
    Context,
    /// The same, freed through the free routine [`mini_free`].
    ContextFreedByRoutine,
    /// A context in the device's bag without the device mutex.
    ContextWithoutTheMutex,
    /// Fails.
    Fails,
}

/// What the minidriver is.
#[derive(Clone, Copy)]
struct Mini {
    /// Its `Add`.
    add: Add,
    /// `Start` creates the filter factory.
    factory_in_start: bool,
    /// Its `QueryRemove`'s answer (`None`: no `QueryRemove`).
    query_remove: Option<u32>,
    /// The context of `Create` (nonzero: `_KsEdit` of the pin's descriptor;
    /// 2: after `KsAcquireControl` of the pin, a deadlock).
    create: u64,
    /// `KSPIN_DESCRIPTOR_EX.Flags`.
    pin_flags: u32,
    /// The pin's `Process` (with its context).
    process: (HostFn, u64),
    /// The context of `SetDeviceState` (fails entering `context - 1`).
    set_device_state: u64,
    /// The filter descriptor's `Version`.
    filter_version: u32,
    /// The pin has an automation table with the dropped-frames property.
    dropped_frames: bool,
}

impl Default for Mini {
    fn default() -> Self {
        Self {
            add: Add::Context,
            factory_in_start: true,
            query_remove: None,
            create: 0,
            pin_flags: 0,
            process: (process_pending, 0),
            set_device_state: 0,
            filter_version: KSFILTER_DESCRIPTOR_VERSION,
            dropped_frames: false,
        }
    }
}

impl Mini {
    fn process(process: HostFn, context: u64) -> Self {
        Self { process: (process, context), ..Self::default() }
    }

    fn flags(mut self, flags: u32) -> Self {
        self.pin_flags = flags;
        self
    }
}

/// A guest-callable address for `run(context)`.
fn host(sys: &mut System, name: &str, run: HostFn, context: u64, max_irql: u8) -> u64 {
    let System { machine: m, nt, .. } = sys;
    nt.host_function(m, name, run, context, max_irql).unwrap()
}

/// The `KSFILTER_DESCRIPTOR` of one capture pin (`KSPIN_DESCRIPTOR_EX`
/// with its `KSPIN_DISPATCH`, one data range, an intersect handler), in one
/// kernel page: (filter descriptor, pin descriptor, data range).
fn filter_descriptor(sys: &mut System, mini: &Mini) -> (u64, u64, u64) {
    let dispatch: [(u64, u64); 5] = [
        (kspin_dispatch::CREATE, host(sys, "mini!PinCreate", mini_create, mini.create, PASSIVE_LEVEL)),
        (kspin_dispatch::CLOSE, host(sys, "mini!PinClose", mini_close, 0, PASSIVE_LEVEL)),
        (kspin_dispatch::PROCESS, host(sys, "mini!Process", mini.process.0, mini.process.1, DISPATCH_LEVEL)),
        (kspin_dispatch::SET_DATA_FORMAT, host(sys, "mini!SetDataFormat", mini_set_data_format, 0, PASSIVE_LEVEL)),
        (kspin_dispatch::SET_DEVICE_STATE, host(sys, "mini!SetDeviceState", mini_set_device_state, mini.set_device_state, PASSIVE_LEVEL)),
    ];
    let intersect = host(sys, "mini!Intersect", mini_intersect, 0, PASSIVE_LEVEL);
    let dropped = host(sys, "mini!DroppedFrames", mini_dropped_frames, 0, PASSIVE_LEVEL);
    let System { machine: m, nt, .. } = sys;
    let page = nt.alloc_kernel(m, 4096).unwrap();
    let (filter, pin, pin_dispatch, ranges, range) = (page, page + 0x100, page + 0x200, page + 0x300, page + 0x400);
    m.write_u32(filter + ksfilter_descriptor::VERSION, mini.filter_version).unwrap();
    m.write_u32(filter + ksfilter_descriptor::PIN_DESCRIPTORS_COUNT, 1).unwrap();
    m.write_u32(filter + ksfilter_descriptor::PIN_DESCRIPTOR_SIZE, kspin_descriptor_ex::SIZE as u32).unwrap();
    m.write_u64(filter + ksfilter_descriptor::PIN_DESCRIPTORS, pin).unwrap();
    m.write_u64(pin + kspin_descriptor_ex::DISPATCH, pin_dispatch).unwrap();
    m.write_u32(pin + kspin_descriptor_ex::FLAGS, mini.pin_flags).unwrap();
    m.write_u32(pin + kspin_descriptor_ex::INSTANCES_POSSIBLE, 1).unwrap();
    m.write_u64(pin + kspin_descriptor_ex::INTERSECT_HANDLER, intersect).unwrap();
    let base = pin + kspin_descriptor_ex::PIN_DESCRIPTOR;
    m.write_u32(base + kspin_descriptor::DATA_RANGES_COUNT, 1).unwrap();
    m.write_u64(base + kspin_descriptor::DATA_RANGES, ranges).unwrap();
    m.write_u32(base + kspin_descriptor::DATA_FLOW, KSPIN_DATAFLOW_OUT).unwrap();
    m.write_u32(base + kspin_descriptor::COMMUNICATION, KSPIN_COMMUNICATION_BOTH).unwrap();
    for (offset, va) in dispatch {
        m.write_u64(pin_dispatch + offset, va).unwrap();
    }
    m.write_u64(ranges, range).unwrap();
    m.write(range, &format()).unwrap();
    if mini.dropped_frames {
        // KSAUTOMATION_TABLE → one KSPROPERTY_SET → one KSPROPERTY_ITEM.
        let (table, set, guid, item) = (page + 0x500, page + 0x540, page + 0x580, page + 0x600);
        m.write_u64(pin + kspin_descriptor_ex::AUTOMATION_TABLE, table).unwrap();
        m.write_u32(table + ksautomation_table::PROPERTY_SETS_COUNT, 1).unwrap();
        m.write_u32(table + ksautomation_table::PROPERTY_ITEM_SIZE, ksproperty_item::SIZE as u32).unwrap();
        m.write_u64(table + ksautomation_table::PROPERTY_SETS, set).unwrap();
        m.write_u64(set + ksproperty_set::SET, guid).unwrap();
        m.write_u32(set + ksproperty_set::PROPERTIES_COUNT, 1).unwrap();
        m.write_u64(set + ksproperty_set::PROPERTY_ITEM, item).unwrap();
        m.write(guid, &droppedframes_set()).unwrap();
        m.write_u32(item + ksproperty_item::PROPERTY_ID, KSPROPERTY_DROPPEDFRAMES_CURRENT).unwrap();
        m.write_u64(item + ksproperty_item::GET_PROPERTY_HANDLER, dropped).unwrap();
        m.write_u32(item + ksproperty_item::MIN_PROPERTY, 24).unwrap();
        m.write_u32(item + ksproperty_item::MIN_DATA, ksproperty_droppedframes_current_s::SIZE as u32).unwrap();
    }
    (filter, pin, range)
}

/// The minidriver's `KSDEVICE_DESCRIPTOR` (and its `KSDEVICE_DISPATCH`).
fn device_descriptor(sys: &mut System, mini: &Mini, filter: u64, free_routine: u64) -> u64 {
    let add = match mini.add {
        Add::Context => host(sys, "mini!Add", mini_add, 0, PASSIVE_LEVEL),
        Add::ContextFreedByRoutine => host(sys, "mini!Add", mini_add, free_routine, PASSIVE_LEVEL),
        Add::ContextWithoutTheMutex => host(sys, "mini!Add", mini_add_unguarded, 0, PASSIVE_LEVEL),
        Add::Fails => host(sys, "mini!Add", mini_add_fails, 0, PASSIVE_LEVEL),
    };
    let mut routines = vec![
        (ksdevice_dispatch::ADD, add),
        (ksdevice_dispatch::START, host(sys, "mini!Start", mini_start, if mini.factory_in_start { filter } else { 0 }, PASSIVE_LEVEL)),
        (ksdevice_dispatch::POST_START, host(sys, "mini!PostStart", mini_post_start, 0, PASSIVE_LEVEL)),
        (ksdevice_dispatch::REMOVE, host(sys, "mini!Remove", mini_remove, 0, PASSIVE_LEVEL)),
    ];
    if let Some(answer) = mini.query_remove {
        routines.push((ksdevice_dispatch::QUERY_REMOVE, host(sys, "mini!QueryRemove", mini_query_remove, u64::from(answer), PASSIVE_LEVEL)));
    }
    let System { machine: m, nt, .. } = sys;
    let page = nt.alloc_kernel(m, 4096).unwrap();
    let (dispatch, descriptor) = (page, page + 0x100);
    for (offset, va) in routines {
        m.write_u64(dispatch + offset, va).unwrap();
    }
    m.write_u64(descriptor + ksdevice_descriptor::DISPATCH, dispatch).unwrap();
    m.write_u32(descriptor + ksdevice_descriptor::VERSION, KSDEVICE_DESCRIPTOR_VERSION).unwrap();
    descriptor
}

/// A `DRIVER_OBJECT` with its extension, as the I/O manager makes one for `DriverEntry`.
fn driver_object_in(sys: &mut System) -> u64 {
    let System { machine: m, nt, .. } = sys;
    let d = nt.alloc_kernel(m, driver_object::SIZE + driver_extension::SIZE).unwrap();
    let extension = d + driver_object::SIZE;
    m.write_u16(d + driver_object::TYPE, 4).unwrap();
    m.write_u16(d + driver_object::SIZE_FIELD, driver_object::SIZE as u16).unwrap();
    m.write_u64(d + driver_object::DRIVER_EXTENSION, extension).unwrap();
    m.write_u64(extension + driver_extension::DRIVER_OBJECT, d).unwrap();
    d
}

// ------------------------------------------------------------------ the test's view

/// A system with the minidriver initialized (`KsInitializeDriver` from its
/// `DriverEntry`) and the PnP manager over the emulated PCI PDO.
struct Ks {
    sys: System,
    pnp: Pnp,
    driver: Driver,
    /// The `KSFILTER_DESCRIPTOR`, its pin's `KSPIN_DESCRIPTOR_EX` and data range.
    filter_descriptor: u64,
    pin_descriptor: u64,
    data_range: u64,
    /// The `KSDEVICE_DESCRIPTOR` given to `KsInitializeDriver`.
    device_descriptor: u64,
    /// What `Add` puts in the bag when asked to free through a routine.
    free_routine: u64,
    /// The application's buffers.
    buffers: Vec<Allocation>,
}

impl Ks {
    /// `DriverEntry` done: `KsInitializeDriver(DriverObject, RegistryPath, Descriptor)`.
    fn boot(mini: Mini) -> Option<Self> {
        let mut sys = support::system()?;
        STUBS.with(|s| s.borrow_mut().clear());
        LOG.with(|l| l.borrow_mut().clear());
        let free_routine = host(&mut sys, "mini!Free", mini_free, 0, PASSIVE_LEVEL);
        let (filter_descriptor, pin_descriptor, data_range) = filter_descriptor(&mut sys, &mini);
        let device_descriptor = device_descriptor(&mut sys, &mini, filter_descriptor, free_routine);
        let driver_object = driver_object_in(&mut sys);
        let System { machine: m, nt, .. } = &mut sys;
        let st = ddi(nt, m, "KsInitializeDriver", &[driver_object, 0, device_descriptor]).unwrap();
        assert_eq!(low(st), status::SUCCESS, "KsInitializeDriver");
        let pnp = Pnp::new(&mut sys, PciIdentity::default()).unwrap();
        let driver = Driver { name: "mini".into(), driver_object, status: 0 };
        Some(Self { sys, pnp, driver, filter_descriptor, pin_descriptor, data_range, device_descriptor, free_routine, buffers: Vec::new() })
    }

    /// As [`Ks::boot`], and AVStream's `AddDevice` on the PCI PDO succeeded.
    fn added(mini: Mini) -> Option<Self> {
        let mut ks = Self::boot(mini)?;
        assert_eq!(ks.pnp.add_device(&mut ks.sys, &ks.driver).unwrap(), status::SUCCESS, "AddDevice");
        Some(ks)
    }

    /// As [`Ks::added`], and `IRP_MN_START_DEVICE` succeeded.
    fn started(mini: Mini) -> Option<Self> {
        let mut ks = Self::added(mini)?;
        let st = ks.pnp.start(&mut ks.sys, &StartResources::bar0_line(0xE000_0000, 0x1000, 11, 5, 0x51)).unwrap();
        assert_eq!(st, status::SUCCESS, "start");
        Some(ks)
    }

    fn nt_m(&mut self) -> (&mut Nt, &mut Machine) {
        (&mut self.sys.nt, &mut self.sys.machine)
    }

    fn m(&self) -> &Machine {
        &self.sys.machine
    }

    /// Calls a DDI through its stub; the whole RAX.
    fn ddi(&mut self, name: &'static str, args: &[u64]) -> u64 {
        let (nt, m) = self.nt_m();
        ddi(nt, m, name, args).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Calls a bag DDI (`KsAddItemToObjectBag`, `_KsEdit`: the bag first)
    /// with the bag's mutex held as their pages require: the device mutex
    /// for the device's bag (`KsAcquireDevice`), the filter control mutex
    /// for a filter's or a pin's (`KsAcquireControl`, as
    /// `KsFilterAcquireControl`/`KsPinAcquireControl` call it).
    fn bag_ddi(&mut self, name: &'static str, args: &[u64]) -> u64 {
        let owner = self.sys.nt.ks.bags[&args[0]].owner;
        let (take, give) = if self.sys.nt.ks.devices.contains_key(&owner) { ("KsAcquireDevice", "KsReleaseDevice") } else { ("KsAcquireControl", "KsReleaseControl") };
        self.ddi(take, &[owner]);
        let r = self.ddi(name, args);
        self.ddi(give, &[owner]);
        r
    }

    /// Calls a DDI at `irql`, back at `PASSIVE_LEVEL` after.
    fn ddi_at(&mut self, irql: u8, name: &'static str, args: &[u64]) -> u64 {
        self.sys.nt.irql = irql;
        let r = self.ddi(name, args);
        self.sys.nt.irql = PASSIVE_LEVEL;
        r
    }

    /// Zeroed kernel memory.
    fn memory(&mut self, bytes: u64) -> u64 {
        let (nt, m) = self.nt_m();
        nt.alloc_kernel(m, bytes).unwrap()
    }

    /// The `KSDEVICE` AVStream made on the PCI PDO.
    fn device(&self) -> u64 {
        ks::device_on(&self.sys.nt, self.pnp.pci_pdo).expect("a KSDEVICE on the PCI PDO")
    }

    fn fdo(&self) -> u64 {
        self.pnp.fdo.expect("the FDO")
    }

    /// A filter and its pin (the test's format, `frames` scattered buffers
    /// of [`FRAME_BYTES`] queued to nothing yet).
    fn open(&mut self, frames: usize) -> (u64, PinHandle) {
        let device = self.device();
        let mut buffers = Vec::new();
        for i in 0..frames {
            let a = self.sys.memory.allocate_scattered(FRAME_BYTES as usize, &format!("nt_ks frame {i}")).unwrap();
            buffers.push(AppBuffer { host_va: a.va, bytes: FRAME_BYTES, pages: a.page_addresses.clone() });
            self.buffers.push(a);
        }
        let (nt, m) = self.nt_m();
        let filter = ks_pin::open_filter(nt, m, device).unwrap().expect("open_filter");
        let pin = ks_pin::create_pin(nt, m, filter, 0, &format(), buffers, HEADER_SIZE).unwrap().expect("create_pin");
        (filter, pin)
    }

    fn submit(&mut self, pin: PinHandle, buffer: u32) {
        let (nt, m) = self.nt_m();
        assert_eq!(ks_pin::submit(nt, m, pin, buffer).unwrap(), status::PENDING, "the read is pending");
    }

    fn set_state(&mut self, pin: PinHandle, to: u32) -> u32 {
        let (nt, m) = self.nt_m();
        ks_pin::set_state(nt, m, pin, to).unwrap()
    }

    /// The worker pass the machine makes: every `Process` call owed.
    fn workers(&mut self) {
        let (nt, m) = self.nt_m();
        ks::run_workers(nt, m).unwrap();
    }

    fn completed(&mut self, pin: PinHandle) -> Vec<CompletedFrame> {
        let (nt, m) = self.nt_m();
        ks_pin::take_completed(nt, m, pin).unwrap()
    }

    fn close(&mut self, filter: u64, pin: PinHandle) {
        let (nt, m) = self.nt_m();
        assert_eq!(ks_pin::close_pin(nt, m, pin).unwrap(), status::SUCCESS, "close_pin");
        ks_pin::close_filter(nt, m, filter).unwrap();
    }

    /// `Process` calls made so far.
    fn process_calls(&self) -> u64 {
        self.sys.nt.ks.stats.process_calls
    }

    /// Buffer `b`'s kernel stream header.
    fn header(&self, pin: PinHandle, b: usize) -> u64 {
        self.sys.nt.ks.pins[&pin.0].buffers[b].header_va
    }

    fn data_used(&self, pin: PinHandle, b: usize) -> u32 {
        self.m().read_u32(self.header(pin, b) + ksstream_header::DATA_USED).unwrap()
    }

    /// The leading edge, locked (from outside `Process`, as a DPC gets it).
    fn leading_edge(&mut self, pin: PinHandle) -> u64 {
        self.ddi("KsPinGetLeadingEdgeStreamPointer", &[pin.0, LOCKED])
    }

    /// (`OffsetOut.Data`, `Count`, `Remaining`) of a stream pointer.
    fn offset_out(&self, sp: u64) -> (u64, u32, u32) {
        let out = sp + ksstream_pointer::OFFSET_OUT;
        let m = self.m();
        (
            m.read_u64(out + ksstream_pointer::OFFSET_DATA).unwrap(),
            m.read_u32(out + ksstream_pointer::OFFSET_COUNT).unwrap(),
            m.read_u32(out + ksstream_pointer::OFFSET_REMAINING).unwrap(),
        )
    }

    fn rules(&self) -> Vec<&'static str> {
        self.sys.nt.verifier.findings.iter().map(|f| f.rule).collect()
    }

    fn found(&self, rule: &str) -> &Finding {
        self.sys.nt.verifier.findings.iter().find(|f| f.rule == rule).unwrap_or_else(|| panic!("no {rule} among {:?}", self.rules()))
    }

    fn assert_clean(&self) {
        let findings: Vec<String> = self.sys.nt.verifier.findings.iter().map(ToString::to_string).collect();
        assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
        let violations = self.sys.memory.violations().list();
        assert!(violations.is_empty(), "the queue model's violations: {violations:#?}");
    }

    /// Removal, unload and the end-of-run checks: nothing leaked, no finding.
    fn end_clean(mut self) {
        assert_eq!(self.pnp.remove(&mut self.sys).unwrap(), status::SUCCESS, "remove");
        self.pnp.unload(&mut self.sys).unwrap();
        self.pnp.delete_own_devices(&mut self.sys).unwrap();
        let leaks = self.pnp.end_of_run(&mut self.sys);
        assert!(leaks.is_empty(), "{leaks:#?}");
        self.assert_clean();
        for a in std::mem::take(&mut self.buffers) {
            self.sys.memory.free(a.id);
        }
    }
}

/// The filter factory `Start` created.
fn factory() -> u64 {
    events().iter().find_map(|e| if let Event::Factory(f, _) = e { Some(*f) } else { None }).expect("a factory")
}

/// The `Process` calls logged: (pin, IRQL).
fn process_events() -> Vec<(u64, u8)> {
    events().iter().filter_map(|e| if let Event::Process(p, i) = e { Some((*p, *i)) } else { None }).collect()
}

/// The clones `Process` made.
fn clones() -> Vec<u64> {
    events().iter().filter_map(|e| if let Event::Clone(c) = e { Some(*c) } else { None }).collect()
}

// ------------------------------------------------------------------ correct use: the device

#[test]
fn ks_initialize_driver_takes_over_the_driver_object() {
    let Some(ks) = Ks::boot(Mini::default()) else { return };
    let m = ks.m();
    let d = ks.driver.driver_object;
    let add = m.read_u64(d + driver_object::SIZE + driver_extension::ADD_DEVICE).unwrap();
    assert_ne!(add, 0, "AddDevice is AVStream's");
    let dispatch = m.read_u64(d + driver_object::MAJOR_FUNCTION).unwrap();
    assert_ne!(dispatch, 0);
    for major in 0..=u64::from(mj::MAXIMUM_FUNCTION) {
        assert_eq!(m.read_u64(d + driver_object::MAJOR_FUNCTION + 8 * major).unwrap(), dispatch, "major {major:#x}");
    }
    assert_ne!(m.read_u64(d + driver_object::DRIVER_UNLOAD).unwrap(), 0, "DriverUnload is AVStream's");
    assert_eq!(ks.sys.nt.ks.drivers.get(&d), Some(&ks.device_descriptor));
    ks.assert_clean();
}

#[test]
fn add_device_makes_the_ksdevice_over_the_pdo_and_calls_add() {
    let Some(ks) = Ks::added(Mini::default()) else { return };
    let (device, fdo, pdo) = (ks.device(), ks.fdo(), ks.pnp.pci_pdo);
    assert_eq!(events(), [Event::Add(device)]);
    let m = ks.m();
    assert_eq!(m.read_u64(device + ksdevice::DESCRIPTOR).unwrap(), ks.device_descriptor);
    assert_eq!(m.read_u64(device + ksdevice::FUNCTIONAL_DEVICE_OBJECT).unwrap(), fdo);
    assert_eq!(m.read_u64(device + ksdevice::PHYSICAL_DEVICE_OBJECT).unwrap(), pdo);
    assert_eq!(m.read_u64(device + ksdevice::NEXT_DEVICE_OBJECT).unwrap(), pdo, "attached right over the PDO");
    assert_eq!(m.read_u64(pdo + device_object::ATTACHED_DEVICE).unwrap(), fdo);
    assert_eq!(m.read_u8(device + ksdevice::STARTED).unwrap(), 0, "not started yet");
    let flags = m.read_u32(fdo + device_object::FLAGS).unwrap();
    assert_eq!(flags & do_flags::DEVICE_INITIALIZING, 0);
    // Add's context is in the device's bag.
    let context = m.read_u64(device + ksdevice::CONTEXT).unwrap();
    let bag = m.read_u64(device + ksdevice::BAG).unwrap();
    assert!(ks.sys.nt.pool.live.contains_key(&context));
    assert_eq!(ks.sys.nt.ks.bags[&bag].items, [(context, 0)]);
    ks.assert_clean();
}

#[test]
fn a_failing_add_leaves_nothing_on_the_stack() {
    let Some(mut ks) = Ks::boot(Mini { add: Add::Fails, ..Mini::default() }) else { return };
    let st = ks.pnp.add_device(&mut ks.sys, &ks.driver).unwrap();
    assert_eq!(st, status::INSUFFICIENT_RESOURCES, "Add's status is AddDevice's");
    assert!(matches!(events()[..], [Event::Add(_)]), "{:?}", events());
    assert_eq!(ks::device_on(&ks.sys.nt, ks.pnp.pci_pdo), None);
    assert_eq!(ks.m().read_u64(ks.pnp.pci_pdo + device_object::ATTACHED_DEVICE).unwrap(), 0, "the FDO was detached");
    assert_eq!(ks.m().read_u64(ks.driver.driver_object + driver_object::DEVICE_OBJECT).unwrap(), 0, "and deleted");
    assert!(ks.sys.nt.ks.bags.is_empty(), "its bag went with it");
    ks.assert_clean();
}

#[test]
fn start_goes_down_the_stack_first_then_start_creates_the_factory_then_post_start() {
    let Some(ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    let factory = factory();
    assert_eq!(
        events(),
        [
            Event::Add(device),
            Event::Start(device, 0, status::SUCCESS),
            Event::Factory(factory, status::SUCCESS),
            Event::PostStart(device)
        ],
        "Start sees the IRP the lower drivers completed, before KSDEVICE.Started is set"
    );
    assert_eq!(ks.m().read_u8(device + ksdevice::STARTED).unwrap(), 1);
    assert_eq!(ks.m().read_u64(factory + ksfilterfactory::FILTER_DESCRIPTOR).unwrap(), ks.filter_descriptor);
    assert_eq!(ks.sys.nt.ks.devices[&device].factories, [factory]);
    assert!(!ks.sys.nt.ks.devices[&device].mutex_held, "released");
    ks.assert_clean();
}

#[test]
fn a_filter_factory_made_under_the_device_mutex_is_clean() {
    let Some(mut ks) = Ks::started(Mini { factory_in_start: false, ..Mini::default() }) else { return };
    let (device, fdo, fd) = (ks.device(), ks.fdo(), ks.filter_descriptor);
    let out = ks.memory(8);
    ks.ddi("KsAcquireDevice", &[device]);
    assert!(ks.sys.nt.ks.devices[&device].mutex_held);
    assert_eq!(low(ks.ddi("KsCreateFilterFactory", &[fdo, fd, 0, 0, 0, 0, 0, out])), status::SUCCESS);
    ks.ddi("KsReleaseDevice", &[device]);
    assert!(!ks.sys.nt.ks.devices[&device].mutex_held);
    let factory = ks.m().read_u64(out).unwrap();
    assert_eq!(ks.sys.nt.ks.factories.get(&factory), Some(&device));
    // Not an AVStream FDO: refused, no factory.
    let pdo = ks.pnp.pci_pdo;
    assert_eq!(low(ks.ddi("KsCreateFilterFactory", &[pdo, fd, 0, 0, 0, 0, 0, out])), status::INVALID_DEVICE_REQUEST);
    assert_eq!(ks.sys.nt.ks.factories.len(), 1);
    ks.assert_clean();
}

#[test]
fn ks_get_device_answers_for_the_device_its_factory_filter_and_pin() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (device, factory) = (ks.device(), factory());
    let (filter, pin) = ks.open(1);
    for object in [device, factory, filter, pin.0] {
        assert_eq!(ks.ddi_at(DISPATCH_LEVEL, "KsGetDevice", &[object]), device, "{object:#x}");
    }
    ks.close(filter, pin);
    ks.assert_clean();
}

#[test]
fn a_query_remove_veto_keeps_the_device_and_the_irp_goes_no_further() {
    let Some(mut ks) = Ks::started(Mini { query_remove: Some(STATUS_DEVICE_BUSY), ..Mini::default() }) else { return };
    let device = ks.device();
    assert_eq!(ks.pnp.remove(&mut ks.sys).unwrap(), STATUS_DEVICE_BUSY);
    assert!(events().contains(&Event::QueryRemove(device)));
    assert!(!events().contains(&Event::Remove(device)));
    assert_eq!(ks::device_on(&ks.sys.nt, ks.pnp.pci_pdo), Some(device), "still there");
    assert!(!ks.pnp.removed);
    ks.assert_clean();
}

#[test]
fn a_full_life_streams_frames_and_ends_without_leaks() {
    let Some(mut ks) = Ks::started(Mini::process(process_fill, 0)) else { return };
    let device = ks.device();
    let (filter, pin) = ks.open(3);
    let p = pin.0;
    // The pin as created: SetDataFormat with the range the format matched, then Create.
    let m = ks.m();
    assert_eq!(m.read_u64(p + kspin::DESCRIPTOR).unwrap(), ks.pin_descriptor);
    assert_eq!(m.read_u32(p + kspin::DEVICE_STATE).unwrap(), KSSTATE_STOP);
    assert_eq!(m.read_u32(p + kspin::DATA_FLOW).unwrap(), KSPIN_DATAFLOW_OUT);
    let mut connection = [0u8; 64];
    m.read(m.read_u64(p + kspin::CONNECTION_FORMAT).unwrap(), &mut connection).unwrap();
    assert_eq!(connection, format());
    assert_eq!(m.read_u64(p + kspin::CONTEXT).unwrap(), m.read_u64(device + ksdevice::CONTEXT).unwrap(), "the device's context, through the filter");
    assert_eq!(m.read_u64(filter + ksfilter::DESCRIPTOR).unwrap(), ks.filter_descriptor);
    let pin_events: Vec<Event> = events().into_iter().skip(4).collect();
    assert_eq!(pin_events, [Event::SetDataFormat(p, ks.data_range), Event::Create(p, p, device)]);
    for b in 0..3 {
        ks.submit(pin, b);
    }
    assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::SUCCESS);
    let walk: Vec<Event> = events().into_iter().filter(|e| matches!(e, Event::SetDeviceState(..))).collect();
    assert_eq!(
        walk,
        [
            Event::SetDeviceState(p, KSSTATE_ACQUIRE, KSSTATE_STOP, KSSTATE_STOP),
            Event::SetDeviceState(p, KSSTATE_PAUSE, KSSTATE_ACQUIRE, KSSTATE_ACQUIRE),
            Event::SetDeviceState(p, KSSTATE_RUN, KSSTATE_PAUSE, KSSTATE_PAUSE)
        ],
        "one step at a time, KSPIN.DeviceState following"
    );
    // Walking to RUN with frames queued: one Process call per frame, each
    // filling one, the last leaving nothing ahead of the leading edge.
    ks.workers();
    assert_eq!(process_events(), [(p, PASSIVE_LEVEL); 3]);
    let done = ks.completed(pin);
    assert_eq!(done.iter().map(|f| f.buffer_id).collect::<Vec<_>>(), [0, 1, 2]);
    for f in &done {
        assert!(!f.cancelled);
        assert_eq!(f.completion.map(|c| c.data_used), Some(FRAME_BYTES));
    }
    // The bytes Process wrote through the system mapping are in the application's pages.
    for a in &ks.buffers {
        // SAFETY: the allocation is live (freed at the end of the test) and FRAME_BYTES long.
        let bytes = unsafe { std::slice::from_raw_parts(a.va, FRAME_BYTES as usize) };
        assert!(bytes.iter().all(|&b| b == FILL));
    }
    // The application queues one again: it lands in an empty queue and is filled.
    ks.submit(pin, 1);
    ks.workers();
    assert_eq!(ks.completed(pin).iter().map(|f| f.buffer_id).collect::<Vec<_>>(), [1]);
    ks.close(filter, pin);
    let tail: Vec<Event> = events().into_iter().filter(|e| matches!(e, Event::SetDeviceState(..) | Event::Close(..))).skip(3).collect();
    assert_eq!(
        tail,
        [
            Event::SetDeviceState(p, KSSTATE_PAUSE, KSSTATE_RUN, KSSTATE_RUN),
            Event::SetDeviceState(p, KSSTATE_ACQUIRE, KSSTATE_PAUSE, KSSTATE_PAUSE),
            Event::SetDeviceState(p, KSSTATE_STOP, KSSTATE_ACQUIRE, KSSTATE_ACQUIRE),
            Event::Close(p, p)
        ]
    );
    assert!(ks.sys.nt.ks.pins.is_empty() && ks.sys.nt.ks.filters.is_empty());
    assert!(!ks.m().is_mapped(p, 8), "the KSPIN is freed");
    ks.end_clean();
    assert!(events().contains(&Event::Remove(device)));
}

#[test]
fn bag_items_are_freed_with_the_device_last_added_first_through_their_routines() {
    let Some(mut ks) = Ks::started(Mini { add: Add::ContextFreedByRoutine, ..Mini::default() }) else { return };
    let device = ks.device();
    let context = ks.m().read_u64(device + ksdevice::CONTEXT).unwrap();
    let bag = ks.m().read_u64(device + ksdevice::BAG).unwrap();
    assert_eq!(ks.sys.nt.ks.bags[&bag].items, [(context, ks.free_routine)]);
    // A second item, freed by ExFreePool, then a third through the routine.
    let second = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    let third = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    assert_eq!(low(ks.bag_ddi("KsAddItemToObjectBag", &[bag, second, 0])), status::SUCCESS);
    let free = ks.free_routine;
    assert_eq!(low(ks.bag_ddi("KsAddItemToObjectBag", &[bag, third, free])), status::SUCCESS);
    assert!(!events().iter().any(|e| matches!(e, Event::Freed(_))));
    assert_eq!(ks.pnp.remove(&mut ks.sys).unwrap(), status::SUCCESS);
    let freed: Vec<Event> = events().into_iter().filter(|e| matches!(e, Event::Freed(_))).collect();
    assert_eq!(freed, [Event::Freed(third), Event::Freed(context)], "last added first; ExFreePool for the one without a routine");
    for item in [context, second, third] {
        assert!(!ks.sys.nt.pool.live.contains_key(&item), "{item:#x} freed");
    }
    assert!(!ks.sys.nt.ks.bags.contains_key(&bag));
    assert!(!ks.m().is_mapped(device, 8), "the KSDEVICE is gone");
    ks.assert_clean();
}

// ------------------------------------------------------------------ correct use: _KsEdit

/// A pool item of `bytes` bytes holding 1, 2, 3, ... in the device's bag;
/// returns (bag, the slot holding the pointer to it, the item).
fn bag_item(ks: &mut Ks, bytes: u8) -> (u64, u64, u64) {
    let device = ks.device();
    let bag = ks.m().read_u64(device + ksdevice::BAG).unwrap();
    let item = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, u64::from(bytes), TAG]);
    ks.m().write(item, &(1..=bytes).collect::<Vec<u8>>()).unwrap();
    assert_eq!(low(ks.bag_ddi("KsAddItemToObjectBag", &[bag, item, 0])), status::SUCCESS);
    let slot = ks.memory(8);
    ks.m().write_u64(slot, item).unwrap();
    (bag, slot, item)
}

#[test]
fn ks_edit_copies_the_old_bytes_replaces_the_pointer_and_frees_the_old_item() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (bag, slot, old) = bag_item(&mut ks, 32);
    assert_eq!(low(ks.bag_ddi("_KsEdit", &[bag, slot, 64, 32, TAG])), status::SUCCESS);
    let new = ks.m().read_u64(slot).unwrap();
    assert_ne!(new, old);
    let mut bytes = [0u8; 64];
    ks.m().read(new, &mut bytes).unwrap();
    assert_eq!(bytes[..32], (1..=32).collect::<Vec<u8>>()[..], "the old bytes");
    assert!(bytes[32..].iter().all(|&b| b == 0), "the rest zeroed");
    let block = &ks.sys.nt.pool.live[&new];
    assert_eq!((block.bytes, u64::from(block.tag), block.flags & POOL_FLAG_NON_PAGED), (64, TAG, POOL_FLAG_NON_PAGED));
    assert!(!ks.sys.nt.pool.live.contains_key(&old) && ks.sys.nt.pool.freed.contains_key(&old), "the old item was freed");
    let items: Vec<u64> = ks.sys.nt.ks.bags[&bag].items.iter().map(|i| i.0).collect();
    assert!(items.contains(&new) && !items.contains(&old), "{items:x?}");
    // Larger again: the new item is copied and freed in turn.
    assert_eq!(low(ks.bag_ddi("_KsEdit", &[bag, slot, 128, 64, TAG])), status::SUCCESS);
    let newer = ks.m().read_u64(slot).unwrap();
    let mut bytes = [0u8; 128];
    ks.m().read(newer, &mut bytes).unwrap();
    assert_eq!(bytes[..32], (1..=32).collect::<Vec<u8>>()[..]);
    assert!(bytes[32..].iter().all(|&b| b == 0));
    assert!(!ks.sys.nt.pool.live.contains_key(&new));
    ks.end_clean();
}

#[test]
fn ks_edit_of_an_item_of_the_bag_that_does_not_grow_changes_nothing() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (bag, slot, item) = bag_item(&mut ks, 32);
    let allocations = ks.sys.nt.pool.allocations;
    // KsEdit (the same size) and a smaller size: the item is already the bag's own.
    for new_size in [32, 16] {
        assert_eq!(low(ks.bag_ddi("_KsEdit", &[bag, slot, new_size, 32, TAG])), status::SUCCESS);
        assert_eq!(ks.m().read_u64(slot).unwrap(), item, "NewSize {new_size}: the pointer is left as it was");
    }
    assert_eq!(ks.sys.nt.pool.allocations, allocations, "nothing allocated");
    assert!(ks.sys.nt.pool.live.contains_key(&item), "nothing freed");
    assert_eq!(ks.sys.nt.ks.bags[&bag].items.iter().filter(|i| i.0 == item).count(), 1);
    ks.end_clean();
}

#[test]
fn an_item_in_two_bags_is_freed_once_with_the_last_of_them() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(1);
    let pin_bag = ks.m().read_u64(pin.0 + kspin::BAG).unwrap();
    let device_bag = ks.m().read_u64(ks.device() + ksdevice::BAG).unwrap();
    let free = ks.free_routine;
    // One item in the pin's bag and the device's; another twice in the device's.
    let shared = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    let twice = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    for (bag, item) in [(pin_bag, shared), (device_bag, shared), (device_bag, twice), (device_bag, twice)] {
        assert_eq!(low(ks.bag_ddi("KsAddItemToObjectBag", &[bag, item, free])), status::SUCCESS);
    }
    // An item of the pin's bag that the device's holds too, edited larger in the pin's.
    let edited = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    let slot = ks.memory(8);
    ks.m().write_u64(slot, edited).unwrap();
    for bag in [pin_bag, device_bag] {
        assert_eq!(low(ks.bag_ddi("KsAddItemToObjectBag", &[bag, edited, free])), status::SUCCESS);
    }
    assert_eq!(low(ks.bag_ddi("_KsEdit", &[pin_bag, slot, 64, 32, TAG])), status::SUCCESS);
    assert_ne!(ks.m().read_u64(slot).unwrap(), edited);
    assert!(ks.sys.nt.pool.live.contains_key(&edited), "the device's bag still holds the old item");
    // The pin goes: its bag lets go of both; the device's still holds them.
    ks.close(filter, pin);
    for item in [shared, edited] {
        assert!(ks.sys.nt.pool.live.contains_key(&item), "{item:#x} is still in the device's bag");
    }
    assert!(!events().iter().any(|e| matches!(e, Event::Freed(_))), "{:?}", events());
    let freed_before = events().len();
    ks.end_clean();
    let mut freed: Vec<u64> = events()[freed_before..].iter().filter_map(|e| if let Event::Freed(i) = e { Some(*i) } else { None }).collect();
    freed.sort_unstable();
    let mut expected = vec![shared, twice, edited];
    expected.sort_unstable();
    assert_eq!(freed, expected, "each freed once, by the device's bag");
}

#[test]
fn ks_edit_of_an_item_outside_the_bag_leaves_the_old_one_alone() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (bag, _, _) = bag_item(&mut ks, 8);
    // A static descriptor (not pool, not in the bag), as a pin's is before its first edit.
    let (descriptor, slot) = (ks.pin_descriptor, ks.memory(8));
    ks.m().write_u64(slot, descriptor).unwrap();
    let size = kspin_descriptor_ex::SIZE;
    assert_eq!(low(ks.bag_ddi("_KsEdit", &[bag, slot, size, size, TAG])), status::SUCCESS);
    let copy = ks.m().read_u64(slot).unwrap();
    let (mut a, mut b) = ([0u8; kspin_descriptor_ex::SIZE as usize], [0u8; kspin_descriptor_ex::SIZE as usize]);
    ks.m().read(descriptor, &mut a).unwrap();
    ks.m().read(copy, &mut b).unwrap();
    assert_eq!(a, b);
    assert!(ks.sys.nt.ks.bags[&bag].items.iter().any(|i| i.0 == copy), "the copy is in the bag");
    ks.assert_clean();
    ks.end_clean();
}

#[test]
fn ks_edit_under_low_resources_fails_cleanly() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (bag, slot, old) = bag_item(&mut ks, 32);
    let items = ks.sys.nt.ks.bags[&bag].items.clone();
    // Driver Verifier's low resources simulation, aimed at _KsEdit's own allocation.
    ks.sys.nt.pool.fail_at = Some(ks.sys.nt.pool.allocations);
    assert_eq!(low(ks.bag_ddi("_KsEdit", &[bag, slot, 64, 32, TAG])), status::INSUFFICIENT_RESOURCES);
    assert_eq!(ks.sys.nt.pool.failed, 1, "the simulation hit _KsEdit's allocation");
    assert_eq!(ks.m().read_u64(slot).unwrap(), old, "the pointer is left as it was");
    assert!(ks.sys.nt.pool.live.contains_key(&old), "the old item is not freed");
    assert_eq!(ks.sys.nt.ks.bags[&bag].items, items, "the bag is unchanged");
    let mut bytes = [0u8; 32];
    ks.m().read(old, &mut bytes).unwrap();
    assert_eq!(bytes[..], (1..=32).collect::<Vec<u8>>()[..]);
    // The next try (the simulation spent) succeeds.
    assert_eq!(low(ks.bag_ddi("_KsEdit", &[bag, slot, 64, 32, TAG])), status::SUCCESS);
    ks.end_clean();
}

#[test]
fn create_edits_its_own_descriptor_into_the_pins_bag_and_close_frees_it() {
    let Some(mut ks) = Ks::started(Mini { create: 1, ..Mini::default() }) else { return };
    let (filter, pin) = ks.open(1);
    assert!(events().contains(&Event::EditedDescriptor(status::SUCCESS)));
    let copy = ks.m().read_u64(pin.0 + kspin::DESCRIPTOR).unwrap();
    assert_ne!(copy, ks.pin_descriptor, "KSPIN.Descriptor is the pin's own copy");
    assert!(ks.sys.nt.pool.live.contains_key(&copy));
    let bag = ks.m().read_u64(pin.0 + kspin::BAG).unwrap();
    assert_eq!(ks.sys.nt.ks.bags[&bag].items, [(copy, 0)]);
    ks.close(filter, pin);
    assert!(!ks.sys.nt.pool.live.contains_key(&copy), "freed with the pin's bag");
    ks.end_clean();
}

#[test]
fn create_failing_under_low_resources_leaves_no_pin() {
    let Some(mut ks) = Ks::started(Mini { create: 1, ..Mini::default() }) else { return };
    let device = ks.device();
    let (nt, m) = ks.nt_m();
    let filter = ks_pin::open_filter(nt, m, device).unwrap().unwrap();
    nt.pool.fail_at = Some(nt.pool.allocations);
    let refused = ks_pin::create_pin(nt, m, filter, 0, &format(), Vec::new(), HEADER_SIZE).unwrap();
    assert_eq!(refused, Err(status::INSUFFICIENT_RESOURCES), "Create's status");
    assert!(ks.sys.nt.ks.pins.is_empty());
    let (nt, m) = ks.nt_m();
    ks_pin::close_filter(nt, m, filter).unwrap();
    ks.end_clean();
}

// ------------------------------------------------------------------ correct use: the pin

#[test]
fn data_intersection_asks_the_size_then_the_format() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    let (nt, m) = ks.nt_m();
    let filter = ks_pin::open_filter(nt, m, device).unwrap().unwrap();
    let answer = ks_pin::data_intersection(nt, m, filter, 0, &format()).unwrap();
    assert_eq!(answer, Ok(format().to_vec()));
    let sizes: Vec<Event> = events().into_iter().filter(|e| matches!(e, Event::Intersect(_))).collect();
    assert_eq!(sizes, [Event::Intersect(0), Event::Intersect(ksdataformat::SIZE as u32)]);
    // Another major format: no range matches, the handler is not asked.
    let mut other = format();
    other[16] ^= 0xFF;
    let (nt, m) = ks.nt_m();
    assert_eq!(ks_pin::data_intersection(nt, m, filter, 0, &other).unwrap(), Err(0xC000_0272), "STATUS_NO_MATCH");
    assert_eq!(ks_pin::create_pin(nt, m, filter, 0, &other, Vec::new(), HEADER_SIZE).unwrap(), Err(0xC000_0272));
    assert_eq!(events().iter().filter(|e| matches!(e, Event::Intersect(_))).count(), 2);
    ks_pin::close_filter(nt, m, filter).unwrap();
    ks.end_clean();
}

#[test]
fn the_dropped_frames_property_reaches_the_pins_handler_with_an_irp_of_the_pin() {
    let Some(mut ks) = Ks::started(Mini { dropped_frames: true, ..Mini::default() }) else { return };
    let (filter, pin) = ks.open(1);
    let (nt, m) = ks.nt_m();
    assert_eq!(ks_pin::dropped_frames(nt, m, pin).unwrap(), Ok((PICTURES.cast_signed(), DROPPED.cast_signed(), FRAME_BYTES)));
    assert!(events().contains(&Event::DroppedFrames(pin.0)), "KsGetPinFromIrp resolved the property IRP: {:?}", events());
    ks.close(filter, pin);
    ks.end_clean();
    // A pin without the property.
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(1);
    let (nt, m) = ks.nt_m();
    assert_eq!(ks_pin::dropped_frames(nt, m, pin).unwrap(), Err(0xC000_0225), "STATUS_NOT_FOUND");
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn a_failing_set_device_state_ends_the_walk_there() {
    let Some(mut ks) = Ks::started(Mini { set_device_state: u64::from(KSSTATE_PAUSE) + 1, ..Mini::default() }) else { return };
    let (filter, pin) = ks.open(1);
    assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::INSUFFICIENT_RESOURCES);
    assert_eq!(ks.m().read_u32(pin.0 + kspin::DEVICE_STATE).unwrap(), KSSTATE_ACQUIRE, "the last step that succeeded");
    let steps = events().iter().filter(|e| matches!(e, Event::SetDeviceState(..))).count();
    assert_eq!(steps, 2, "STOP->ACQUIRE, then the failing ACQUIRE->PAUSE; no PAUSE->RUN");
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn stop_completes_the_frames_left_cancelled() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(2);
    ks.submit(pin, 0);
    ks.submit(pin, 1);
    assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::SUCCESS);
    assert!(ks.completed(pin).is_empty());
    assert_eq!(ks.set_state(pin, KSSTATE_STOP), status::SUCCESS);
    let done = ks.completed(pin);
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|f| f.cancelled && f.completion.map(|c| c.data_used) == Some(0)), "{done:?}");
    ks.close(filter, pin);
    ks.end_clean();
}

// ------------------------------------------------------------------ correct use: the queue

#[test]
fn data_used_is_written_when_the_leading_edge_leaves_a_frame() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(3);
    for b in 0..3 {
        ks.submit(pin, b);
    }
    ks.set_state(pin, KSSTATE_RUN);
    // 100 bytes, then the leading edge unlocked where it is: still on frame 0.
    let sp = ks.leading_edge(pin);
    let (data, count, remaining) = ks.offset_out(sp);
    assert_eq!((count, remaining), (FRAME_BYTES, FRAME_BYTES));
    assert_eq!(ks.m().read_u64(sp + ksstream_pointer::PIN).unwrap(), pin.0);
    assert_eq!(ks.m().read_u64(sp + ksstream_pointer::STREAM_HEADER).unwrap(), ks.header(pin, 0));
    assert_eq!(ks.m().read_u64(ks.header(pin, 0) + ksstream_header::DATA).unwrap(), data, "OffsetOut.Data is the frame's system address");
    assert_eq!(low(ks.ddi("KsStreamPointerAdvanceOffsets", &[sp, 0, 100, 0])), status::SUCCESS);
    assert_eq!(ks.offset_out(sp), (data + 100, FRAME_BYTES, FRAME_BYTES - 100));
    ks.ddi("KsStreamPointerUnlock", &[sp, 0]);
    assert_eq!(ks.data_used(pin, 0), 0, "not before the leading edge leaves the frame");
    // Locked again on the same frame at the same offset; the rest of it ends the frame.
    let sp = ks.leading_edge(pin);
    assert_eq!(ks.offset_out(sp), (data + 100, FRAME_BYTES, FRAME_BYTES - 100));
    ks.ddi("KsStreamPointerAdvanceOffsetsAndUnlock", &[sp, 0, u64::from(FRAME_BYTES - 100), 0]);
    assert_eq!(ks.data_used(pin, 0), FRAME_BYTES);
    // Frame 1: 300 bytes and ejected (KsStreamPointerUnlock(TRUE)).
    let sp = ks.leading_edge(pin);
    assert_eq!(ks.m().read_u64(sp + ksstream_pointer::STREAM_HEADER).unwrap(), ks.header(pin, 1));
    ks.ddi("KsStreamPointerAdvanceOffsets", &[sp, 0, 300, 0]);
    assert_eq!(ks.data_used(pin, 1), 0);
    ks.ddi("KsStreamPointerUnlock", &[sp, 1]);
    assert_eq!(ks.data_used(pin, 1), 300);
    // Frame 2: 50 bytes with Eject in the advance itself.
    let sp = ks.leading_edge(pin);
    ks.ddi("KsStreamPointerAdvanceOffsetsAndUnlock", &[sp, 0, 50, 1]);
    assert_eq!(ks.data_used(pin, 2), 50);
    let used: Vec<(u64, Option<u32>)> = ks.completed(pin).iter().map(|f| (f.buffer_id, f.completion.map(|c| c.data_used))).collect();
    assert_eq!(used, [(0, Some(FRAME_BYTES)), (1, Some(300)), (2, Some(50))]);
    assert_eq!(ks.leading_edge(pin), 0, "no frame left");
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn advancing_off_the_last_frame_is_device_not_ready() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.set_state(pin, KSSTATE_RUN);
    let sp = ks.leading_edge(pin);
    assert_eq!(low(ks.ddi("KsStreamPointerAdvanceOffsets", &[sp, 0, u64::from(FRAME_BYTES), 0])), STATUS_DEVICE_NOT_READY);
    assert_eq!(ks.data_used(pin, 0), FRAME_BYTES);
    assert_eq!(ks.completed(pin).len(), 1);
    ks.close(filter, pin);
    ks.end_clean();
}

/// A clone's `CancelCallback`: logs, then (context 1) deletes the clone as
/// its page requires.
fn mini_cancel(nt: &mut Nt, m: &mut Machine, delete: u64) -> Result<u64, Stop> {
    let [clone] = m.args::<1>()?;
    log(Event::Cancelled(clone, nt.irql));
    if delete == 1 {
        ddi(nt, m, "KsStreamPointerDelete", &[clone])?;
    }
    Ok(0)
}

#[test]
fn a_stop_calls_each_clones_cancel_callback_at_dispatch_level_and_its_frame_goes_back() {
    let Some(mut ks) = Ks::started(Mini::process(process_clone, 1)) else { return };
    let (filter, pin) = ks.open(2);
    ks.submit(pin, 0);
    ks.submit(pin, 1);
    ks.set_state(pin, KSSTATE_RUN);
    let made = clones();
    assert_eq!(made.len(), 2, "{:?}", events());
    assert!(ks.completed(pin).is_empty(), "the clones hold both frames");
    assert!(!events().iter().any(|e| matches!(e, Event::Cancelled(..))), "nothing cancelled while running");
    // KSSTATE_STOP flushes the queue: each clone's callback, with the clone, at DISPATCH_LEVEL.
    ks.set_state(pin, KSSTATE_STOP);
    let cancelled: Vec<Event> = events().into_iter().filter(|e| matches!(e, Event::Cancelled(..))).collect();
    assert_eq!(cancelled, [Event::Cancelled(made[0], DISPATCH_LEVEL), Event::Cancelled(made[1], DISPATCH_LEVEL)]);
    // Deleted in their callbacks, the clones let go of both frames: back to the application.
    let back: Vec<u64> = ks.completed(pin).iter().map(|f| f.buffer_id).collect();
    assert_eq!(back, [0, 1], "both frames back");
    assert_eq!(ks.sys.nt.ks.pins[&pin.0].queue.live_clones(), 0);
    ks.assert_clean();
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn a_cancel_callback_that_keeps_its_clone_leaves_the_stop_violation() {
    let Some(mut ks) = Ks::started(Mini::process(process_clone, 2)) else { return };
    let (filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.set_state(pin, KSSTATE_RUN);
    let made = clones();
    ks.set_state(pin, KSSTATE_STOP);
    assert!(events().contains(&Event::Cancelled(made[0], DISPATCH_LEVEL)));
    let violations = ks.sys.memory.violations().list();
    assert!(violations.iter().any(|v| v.contains("clone(s) alive at KSSTATE_STOP")), "{violations:#?}");
    ks.close(filter, pin);
}

#[test]
fn a_clone_holds_its_frame_until_it_is_deleted() {
    let Some(mut ks) = Ks::started(Mini::process(process_clone, 0)) else { return };
    let (filter, pin) = ks.open(2);
    ks.submit(pin, 0);
    ks.submit(pin, 1);
    ks.set_state(pin, KSSTATE_RUN);
    // Process: a clone per frame, the leading edge ejected each time.
    let made = clones();
    assert_eq!(made.len(), 2, "{:?}", events());
    assert_eq!(ks.sys.nt.ks.stats.clones, 2);
    assert!(ks.completed(pin).is_empty(), "the clones hold both frames");
    assert_eq!(ks.data_used(pin, 0), 0, "ejected with nothing advanced over");
    // A clone's view: its frame, from the start, and its context.
    let (data, count, remaining) = ks.offset_out(made[0]);
    assert_eq!((count, remaining), (FRAME_BYTES, FRAME_BYTES));
    assert_eq!(ks.m().read_u64(ks.header(pin, 0) + ksstream_header::DATA).unwrap(), data);
    assert_eq!(ks.m().read_u64(made[0] + ksstream_pointer::CONTEXT).unwrap(), made[0] + ksstream_pointer::SIZE, "ContextSize bytes after it");
    // The hardware filled frame 1 first: without KSPIN_FLAG_ENFORCE_FIFO it
    // goes back as soon as nothing holds it, ahead of frame 0.
    ks.m().write_u32(ks.header(pin, 1) + ksstream_header::DATA_USED, 1000).unwrap();
    ks.ddi_at(DISPATCH_LEVEL, "KsStreamPointerDelete", &[made[1]]);
    let first: Vec<(u64, Option<u32>)> = ks.completed(pin).iter().map(|f| (f.buffer_id, f.completion.map(|c| c.data_used))).collect();
    assert_eq!(first, [(1, Some(1000))], "out of queue order");
    ks.m().write_u32(ks.header(pin, 0) + ksstream_header::DATA_USED, 2000).unwrap();
    ks.ddi_at(DISPATCH_LEVEL, "KsStreamPointerDelete", &[made[0]]);
    let used: Vec<(u64, Option<u32>)> = ks.completed(pin).iter().map(|f| (f.buffer_id, f.completion.map(|c| c.data_used))).collect();
    assert_eq!(used, [(0, Some(2000))], "DataUsed as the minidriver wrote it through the clones");
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn mapping_mode_hands_out_ksmapping_tables_and_data_used_sums_their_bytes() {
    let Some(mut ks) = Ks::started(Mini::default().flags(KSPIN_FLAG_GENERATE_MAPPINGS)) else { return };
    let device = ks.device();
    let adapter = dma_adapter_on(&mut ks);
    ks.ddi("KsDeviceRegisterAdapterObject", &[device, adapter, 4096, 16]);
    let registered = ks.sys.nt.ks.devices[&device].adapter.expect("registered");
    assert_eq!((registered.adapter, registered.max_mapping_byte_count, registered.mapping_table_stride), (adapter, 4096, 16));
    let (filter, pin) = ks.open(2);
    ks.submit(pin, 0);
    ks.submit(pin, 1);
    ks.set_state(pin, KSSTATE_RUN);
    let sp = ks.leading_edge(pin);
    let (table, count, remaining) = ks.offset_out(sp);
    assert!(count >= FRAME_BYTES / 4096, "at most MaxMappingByteCount per KSMAPPING: {count}");
    assert_eq!(remaining, count);
    let entries: Vec<(u64, u32)> = (0..u64::from(count))
        .map(|i| {
            let e = table + i * ksmapping::SIZE;
            (ks.m().read_u64(e + ksmapping::PHYSICAL_ADDRESS).unwrap(), ks.m().read_u32(e + ksmapping::BYTE_COUNT).unwrap())
        })
        .collect();
    assert!(entries.iter().all(|&(pa, bytes)| pa != 0 && bytes > 0 && bytes <= 4096), "{entries:x?}");
    assert_eq!(entries.iter().map(|e| e.1).sum::<u32>(), FRAME_BYTES);
    // Offsets count mappings: one, then the rest ends the frame.
    assert_eq!(low(ks.ddi("KsStreamPointerAdvanceOffsets", &[sp, 0, 1, 0])), status::SUCCESS);
    assert_eq!(ks.offset_out(sp), (table + ksmapping::SIZE, count, count - 1));
    ks.ddi("KsStreamPointerAdvanceOffsetsAndUnlock", &[sp, 0, u64::from(count - 1), 0]);
    assert_eq!(ks.data_used(pin, 0), FRAME_BYTES, "the mappings' ByteCounts");
    // Frame 1: one mapping, then ejected.
    let sp = ks.leading_edge(pin);
    let (table, _, _) = ks.offset_out(sp);
    let first = ks.m().read_u32(table + ksmapping::BYTE_COUNT).unwrap();
    ks.ddi("KsStreamPointerAdvanceOffsetsAndUnlock", &[sp, 0, 1, 1]);
    assert_eq!(ks.data_used(pin, 1), first);
    let done = ks.completed(pin);
    assert_eq!(done.iter().map(|f| (f.buffer_id, f.mappings)).collect::<Vec<_>>()[..1], [(0, count)]);
    assert_eq!(done.len(), 2);
    ks.close(filter, pin);
    put_adapter(&mut ks, adapter);
    ks.end_clean();
}

#[test]
fn mapping_mode_without_a_registered_adapter_is_a_violation() {
    let Some(mut ks) = Ks::started(Mini::default().flags(KSPIN_FLAG_GENERATE_MAPPINGS)) else { return };
    let (filter, pin) = ks.open(1);
    let violations = ks.sys.memory.violations().list();
    assert!(violations.iter().any(|v| v.contains("without KsDeviceRegisterAdapterObject")), "{violations:?}");
    ks.submit(pin, 0);
    ks.set_state(pin, KSSTATE_RUN);
    assert_eq!(ks.leading_edge(pin), 0, "no mappings, no leading edge");
    ks.close(filter, pin);
}

/// A version-2 `DEVICE_DESCRIPTION` of a 32-bit scatter/gather bus master
/// and `IoGetDmaAdapter` on the PCI PDO.
fn dma_adapter_on(ks: &mut Ks) -> u64 {
    let dd = ks.memory(4096);
    let m = ks.m();
    m.write_u32(dd + device_description::VERSION, DEVICE_DESCRIPTION_VERSION2).unwrap();
    m.write_u8(dd + device_description::MASTER, 1).unwrap();
    m.write_u8(dd + device_description::SCATTER_GATHER, 1).unwrap();
    m.write_u8(dd + device_description::DMA32_BIT_ADDRESSES, 1).unwrap();
    m.write_u32(dd + device_description::INTERFACE_TYPE, PCI_BUS).unwrap();
    m.write_u32(dd + device_description::DMA_WIDTH, WIDTH_32_BITS).unwrap();
    m.write_u32(dd + device_description::MAXIMUM_LENGTH, 1 << 20).unwrap();
    let pdo = ks.pnp.pci_pdo;
    let adapter = ks.ddi("IoGetDmaAdapter", &[pdo, dd, dd + 512]);
    assert_ne!(adapter, 0);
    adapter
}

/// `PutDmaAdapter` through the adapter's `DMA_OPERATIONS`.
fn put_adapter(ks: &mut Ks, adapter: u64) {
    let ops = ks.m().read_u64(adapter + dma_adapter::DMA_OPERATIONS).unwrap();
    let offset = dma_operations::ENTRIES.iter().find(|e| e.0 == "PutDmaAdapter").unwrap().1;
    let put = ks.m().read_u64(ops + offset).unwrap();
    let (nt, m) = ks.nt_m();
    m.call(nt, put, &[adapter]).unwrap();
}

// ------------------------------------------------------------------ correct use: when Process is called

#[test]
fn a_frame_into_an_empty_queue_owes_one_process_call_a_second_arrival_does_not() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(3);
    assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::SUCCESS);
    assert_eq!(ks.process_calls(), 0, "nothing queued, nothing to process");
    ks.submit(pin, 0);
    assert_eq!(ks.process_calls(), 0, "owed to the worker, not made in the submit");
    ks.workers();
    assert_eq!(ks.process_calls(), 1, "a frame into an empty queue");
    ks.submit(pin, 1);
    ks.workers();
    assert_eq!(ks.process_calls(), 1, "frame 0 is still at the leading edge: no call for frame 1");
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn every_arrival_and_do_not_initiate_change_what_an_arrival_owes() {
    let Some(mut ks) = Ks::started(Mini::default().flags(KSPIN_FLAG_INITIATE_PROCESSING_ON_EVERY_ARRIVAL)) else { return };
    let (filter, pin) = ks.open(2);
    ks.set_state(pin, KSSTATE_RUN);
    ks.submit(pin, 0);
    ks.workers();
    ks.submit(pin, 1);
    ks.workers();
    assert_eq!(ks.process_calls(), 2, "KSPIN_FLAG_INITIATE_PROCESSING_ON_EVERY_ARRIVAL");
    ks.close(filter, pin);
    ks.end_clean();
    let Some(mut ks) = Ks::started(Mini::default().flags(KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING)) else { return };
    let (filter, pin) = ks.open(1);
    ks.set_state(pin, KSSTATE_RUN);
    ks.submit(pin, 0);
    ks.workers();
    assert_eq!(ks.process_calls(), 0, "KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING");
    ks.ddi("KsPinAttemptProcessing", &[pin.0, 1]);
    ks.workers();
    assert_eq!(ks.process_calls(), 1, "KsPinAttemptProcessing still does");
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn after_status_pending_only_ks_pin_attempt_processing_calls_process_again() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(2);
    ks.submit(pin, 0);
    ks.submit(pin, 1);
    ks.set_state(pin, KSSTATE_RUN);
    assert_eq!(ks.process_calls(), 1, "entering RUN with frames queued");
    for _ in 0..3 {
        ks.workers();
    }
    assert_eq!(ks.process_calls(), 1, "STATUS_PENDING: no call of its own, frames queued or not");
    // From a DPC (at DISPATCH_LEVEL), asynchronous: owed to the worker.
    ks.ddi_at(DISPATCH_LEVEL, "KsPinAttemptProcessing", &[pin.0, 1]);
    assert_eq!(ks.process_calls(), 1);
    ks.workers();
    assert_eq!(ks.process_calls(), 2);
    assert_eq!(ks.sys.nt.ks.stats.attempts, 1);
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn after_status_success_process_is_called_while_frames_are_ahead() {
    let Some(mut ks) = Ks::started(Mini::process(process_fill, 1000)) else { return };
    let (filter, pin) = ks.open(2);
    ks.submit(pin, 0);
    ks.submit(pin, 1);
    ks.set_state(pin, KSSTATE_RUN);
    // Each call fills 1000 bytes of one frame and ejects it; the third finds none.
    assert_eq!(ks.process_calls(), 2);
    let used: Vec<Option<u32>> = ks.completed(pin).iter().map(|f| f.completion.map(|c| c.data_used)).collect();
    assert_eq!(used, [Some(1000), Some(1000)]);
    ks.workers();
    assert_eq!(ks.process_calls(), 2, "nothing ahead: nothing owed");
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn attempt_processing_false_at_passive_level_runs_process_inside_the_call() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.set_state(pin, KSSTATE_RUN);
    let (calls, synchronous) = (ks.process_calls(), ks.sys.nt.ks.stats.process_calls_synchronous);
    ks.ddi("KsPinAttemptProcessing", &[pin.0, 0]);
    assert_eq!(ks.process_calls(), calls + 1, "Process ran inside KsPinAttemptProcessing(FALSE)");
    assert_eq!(ks.sys.nt.ks.stats.process_calls_synchronous, synchronous + 1);
    // At DISPATCH_LEVEL the same call is owed to the worker.
    ks.ddi_at(DISPATCH_LEVEL, "KsPinAttemptProcessing", &[pin.0, 0]);
    assert_eq!(ks.process_calls(), calls + 1);
    assert_eq!(ks.sys.nt.ks.stats.process_calls_synchronous, synchronous + 1);
    ks.workers();
    assert_eq!(ks.process_calls(), calls + 2);
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn process_in_run_state_only_means_no_call_in_pause() {
    // Process calls after: entering PAUSE with a frame queued, KsPinAttemptProcessing(FALSE), entering RUN.
    for (flags, calls) in [(KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY, [0, 0, 1]), (0, [1, 2, 3])] {
        let Some(mut ks) = Ks::started(Mini::default().flags(flags)) else { return };
        let (filter, pin) = ks.open(1);
        ks.submit(pin, 0);
        assert_eq!(ks.set_state(pin, KSSTATE_PAUSE), status::SUCCESS);
        ks.workers();
        assert_eq!(ks.process_calls(), calls[0], "flags {flags:#x}: entering PAUSE");
        ks.ddi("KsPinAttemptProcessing", &[pin.0, 0]);
        ks.workers();
        assert_eq!(ks.process_calls(), calls[1], "flags {flags:#x}: KsPinAttemptProcessing in PAUSE");
        assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::SUCCESS);
        assert_eq!(ks.process_calls(), calls[2], "flags {flags:#x}: entering RUN");
        ks.close(filter, pin);
        ks.end_clean();
    }
}

#[test]
fn process_runs_at_passive_level_or_at_dispatch_level_with_the_flag() {
    for (flags, irql) in [(0, PASSIVE_LEVEL), (KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING, DISPATCH_LEVEL)] {
        let Some(mut ks) = Ks::started(Mini::process(process_fill, 0).flags(flags)) else { return };
        let (filter, pin) = ks.open(1);
        ks.submit(pin, 0);
        ks.set_state(pin, KSSTATE_RUN);
        assert_eq!(process_events(), [(pin.0, irql)], "flags {flags:#x}");
        assert_eq!(ks.sys.nt.irql, PASSIVE_LEVEL, "back at PASSIVE_LEVEL after");
        ks.close(filter, pin);
        ks.end_clean();
    }
}

#[test]
fn a_processing_mutex_held_defers_process_until_it_is_released() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(1);
    ks.set_state(pin, KSSTATE_RUN);
    ks.ddi("KsPinAcquireProcessingMutex", &[pin.0]);
    ks.submit(pin, 0);
    ks.ddi("KsPinAttemptProcessing", &[pin.0, 0]);
    ks.workers();
    assert_eq!(ks.process_calls(), 0, "not while the minidriver holds the mutex");
    ks.ddi("KsPinReleaseProcessingMutex", &[pin.0]);
    ks.workers();
    assert_eq!(ks.process_calls(), 1, "the call owed meanwhile");
    ks.close(filter, pin);
    ks.end_clean();
}

// ------------------------------------------------------------------ each finding, tripped

#[test]
fn ks_initialize_driver_of_no_driver_object_is_found() {
    let Some(mut ks) = Ks::boot(Mini::default()) else { return };
    let descriptor = ks.device_descriptor;
    assert_eq!(low(ks.ddi("KsInitializeDriver", &[0, 0, descriptor])), status::INVALID_PARAMETER);
    assert_eq!(ks.rules(), ["KS_INITIALIZE_DRIVER_NULL"]);
}

#[test]
fn releasing_the_device_mutex_not_held_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    ks.assert_clean();
    ks.ddi("KsAcquireDevice", &[device]);
    ks.ddi("KsReleaseDevice", &[device]);
    ks.assert_clean();
    ks.ddi("KsReleaseDevice", &[device]);
    assert_eq!(ks.rules(), ["KS_DEVICE_MUTEX_NOT_HELD"]);
    assert_eq!(ks.found("KS_DEVICE_MUTEX_NOT_HELD").bugcheck, 0xC4);
    assert!(!ks.sys.nt.ks.devices[&device].mutex_held);
}

#[test]
fn taking_the_device_mutex_twice_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    ks.ddi("KsAcquireDevice", &[device]);
    ks.assert_clean();
    ks.ddi("KsAcquireDevice", &[device]);
    assert_eq!(ks.rules(), ["KS_DEVICE_MUTEX_DEADLOCK"], "the device mutex is not recursive");
    // Held once: one release frees it, a second is the other finding.
    ks.ddi("KsReleaseDevice", &[device]);
    assert_eq!(ks.rules().len(), 1);
    ks.ddi("KsReleaseDevice", &[device]);
    assert_eq!(ks.rules(), ["KS_DEVICE_MUTEX_DEADLOCK", "KS_DEVICE_MUTEX_NOT_HELD"]);
}

#[test]
fn a_failing_check_counts_once_as_a_passing_one_does() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    let checks = |ks: &Ks| ks.sys.nt.verifier.checks;
    // The same calls, passing then failing: each makes as many checks.
    let before = checks(&ks);
    ks.ddi("KsAcquireDevice", &[device]);
    let passing = checks(&ks) - before;
    ks.assert_clean();
    let before = checks(&ks);
    ks.ddi("KsAcquireDevice", &[device]);
    assert_eq!(ks.rules(), ["KS_DEVICE_MUTEX_DEADLOCK"]);
    assert_eq!(checks(&ks) - before, passing, "the failing check counted once");
    ks.ddi("KsReleaseDevice", &[device]);
    let before = checks(&ks);
    ks.ddi("KsReleaseDevice", &[device]);
    assert_eq!(ks.rules(), ["KS_DEVICE_MUTEX_DEADLOCK", "KS_DEVICE_MUTEX_NOT_HELD"]);
    assert_eq!(checks(&ks) - before, passing, "KsReleaseDevice makes the same checks");
    // A finding that is its own check (a stream pointer that is none) adds one check.
    let before = checks(&ks);
    ks.ddi("KsPinGetLeadingEdgeStreamPointer", &[device, 0]);
    assert_eq!(ks.rules().last(), Some(&"KS_INVALID_PIN"));
    assert_eq!(checks(&ks) - before, 2, "the IRQL and the pin");
}

#[test]
fn a_filter_factory_made_without_the_device_mutex_is_found() {
    let Some(mut ks) = Ks::started(Mini { factory_in_start: false, ..Mini::default() }) else { return };
    let (fdo, fd) = (ks.fdo(), ks.filter_descriptor);
    let out = ks.memory(8);
    ks.assert_clean();
    assert_eq!(low(ks.ddi("KsCreateFilterFactory", &[fdo, fd, 0, 0, 0, 0, 0, out])), status::SUCCESS);
    assert_eq!(ks.rules(), ["KS_FILTER_FACTORY_WITHOUT_DEVICE_MUTEX"]);
}

#[test]
fn a_filter_descriptor_of_another_version_is_found_and_refused() {
    let Some(mut ks) = Ks::added(Mini { filter_version: 0, ..Mini::default() }) else { return };
    // Start creates the factory (under the mutex) from the wrong descriptor: the start fails.
    let st = ks.pnp.start(&mut ks.sys, &StartResources::bar0_line(0xE000_0000, 0x1000, 11, 5, 0x51)).unwrap();
    assert_eq!(st, status::INVALID_PARAMETER);
    assert!(events().iter().any(|e| matches!(e, Event::Factory(0, status::INVALID_PARAMETER))), "{:?}", events());
    assert_eq!(ks.rules(), ["KS_FILTER_DESCRIPTOR_VERSION"]);
    assert!(ks.sys.nt.ks.factories.is_empty());
}

#[test]
fn an_object_bag_that_is_not_one_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(1);
    let bag = ks.m().read_u64(pin.0 + kspin::BAG).unwrap();
    let item = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    let slot = ks.memory(8);
    ks.m().write_u64(slot, item).unwrap();
    // The pin's bag is gone with the pin: a minidriver that kept it.
    ks.close(filter, pin);
    ks.assert_clean();
    assert_eq!(low(ks.ddi("KsAddItemToObjectBag", &[bag, item, 0])), status::INVALID_PARAMETER);
    assert_eq!(ks.rules(), ["KS_INVALID_OBJECT_BAG"]);
    assert_eq!(low(ks.ddi("_KsEdit", &[bag, slot, 64, 32, TAG])), status::INVALID_PARAMETER);
    assert_eq!(ks.rules(), ["KS_INVALID_OBJECT_BAG"; 2]);
    assert_eq!(ks.m().read_u64(slot).unwrap(), item, "the pointer untouched");
    // Any pointer that is not a bag: the device's context.
    let context = ks.m().read_u64(ks.device() + ksdevice::CONTEXT).unwrap();
    ks.ddi("KsAddItemToObjectBag", &[context, item, 0]);
    assert_eq!(ks.rules(), ["KS_INVALID_OBJECT_BAG"; 3]);
}

#[test]
fn a_bag_changed_without_its_mutex_is_found_and_with_it_is_clean() {
    // Add putting its context in the device's bag without the device mutex.
    let Some(mut ks) = Ks::started(Mini { add: Add::ContextWithoutTheMutex, ..Mini::default() }) else { return };
    assert_eq!(ks.rules(), ["KS_OBJECT_BAG_MUTEX_NOT_HELD"]);
    assert!(ks.found("KS_OBJECT_BAG_MUTEX_NOT_HELD").detail.contains("the device mutex"));
    let context = ks.m().read_u64(ks.device() + ksdevice::CONTEXT).unwrap();
    let device_bag = ks.m().read_u64(ks.device() + ksdevice::BAG).unwrap();
    assert!(ks.sys.nt.ks.bags[&device_bag].items.contains(&(context, 0)), "added all the same");
    // A pin's bag edited outside the routines AVStream calls with the filter control mutex.
    let (filter, pin) = ks.open(1);
    let pin_bag = ks.m().read_u64(pin.0 + kspin::BAG).unwrap();
    let (descriptor, slot) = (ks.pin_descriptor, ks.memory(8));
    ks.m().write_u64(slot, descriptor).unwrap();
    let size = kspin_descriptor_ex::SIZE;
    assert_eq!(low(ks.ddi("_KsEdit", &[pin_bag, slot, size, size, TAG])), status::SUCCESS);
    assert_eq!(ks.rules(), ["KS_OBJECT_BAG_MUTEX_NOT_HELD"; 2]);
    assert!(ks.sys.nt.verifier.findings[1].detail.contains("control mutex"));
    // The device mutex does not guard a pin's bag; the filter's control mutex does.
    let item = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    ks.ddi("KsAcquireDevice", &[ks.device()]);
    ks.ddi("KsAddItemToObjectBag", &[pin_bag, item, 0]);
    ks.ddi("KsReleaseDevice", &[ks.device()]);
    assert_eq!(ks.rules(), ["KS_OBJECT_BAG_MUTEX_NOT_HELD"; 3]);
    let other = ks.ddi("ExAllocatePool2", &[POOL_FLAG_NON_PAGED, 32, TAG]);
    assert_eq!(low(ks.bag_ddi("KsAddItemToObjectBag", &[pin_bag, other, 0])), status::SUCCESS);
    ks.ddi("KsAcquireControl", &[filter]);
    ks.ddi("_KsEdit", &[pin_bag, slot, size + 8, size, TAG]);
    ks.ddi("KsReleaseControl", &[pin.0]);
    assert_eq!(ks.rules(), ["KS_OBJECT_BAG_MUTEX_NOT_HELD"; 3], "with the mutex: nothing more");
    ks.close(filter, pin);
}

#[test]
fn taking_the_filter_control_mutex_inside_create_or_twice_or_releasing_it_unheld_is_found() {
    // Create runs with the filter control mutex held by AVStream: taking it again waits forever.
    let Some(mut ks) = Ks::started(Mini { create: 2, ..Mini::default() }) else { return };
    let (filter, pin) = ks.open(1);
    assert_eq!(ks.rules(), ["KS_CONTROL_MUTEX_DEADLOCK"]);
    assert!(events().contains(&Event::EditedDescriptor(status::SUCCESS)), "the edit under AVStream's hold is clean");
    ks.ddi("KsAcquireControl", &[pin.0]);
    ks.ddi("KsAcquireControl", &[filter]);
    assert_eq!(ks.rules(), ["KS_CONTROL_MUTEX_DEADLOCK"; 2], "the pin's mutex is its filter's");
    ks.ddi("KsReleaseControl", &[filter]);
    ks.ddi("KsReleaseControl", &[filter]);
    assert_eq!(ks.rules(), ["KS_CONTROL_MUTEX_DEADLOCK", "KS_CONTROL_MUTEX_DEADLOCK", "KS_CONTROL_MUTEX_NOT_HELD"]);
    ks.ddi("KsAcquireControl", &[ks.device()]);
    assert_eq!(ks.rules().last(), Some(&"KS_NOT_AN_AVSTREAM_OBJECT"));
    ks.close(filter, pin);
}

#[test]
fn an_adapter_that_is_not_a_live_dma_adapter_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    let adapter = dma_adapter_on(&mut ks);
    put_adapter(&mut ks, adapter);
    ks.assert_clean();
    ks.ddi("KsDeviceRegisterAdapterObject", &[device, adapter, 4096, 16]);
    assert_eq!(ks.rules(), ["KS_INVALID_ADAPTER"], "an adapter already put");
    ks.ddi("KsDeviceRegisterAdapterObject", &[device, device, 4096, 16]);
    assert_eq!(ks.rules(), ["KS_INVALID_ADAPTER"; 2], "not an adapter at all");
    assert_eq!(ks.sys.nt.ks.devices[&device].adapter, None, "nothing registered");
}

#[test]
fn mapping_parameters_out_of_range_are_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    let adapter = dma_adapter_on(&mut ks);
    for (max, stride) in [(0, 16), (4096, 8), (4096, 20)] {
        let before = ks.sys.nt.verifier.findings.len();
        ks.ddi("KsDeviceRegisterAdapterObject", &[device, adapter, max, stride]);
        assert_eq!(ks.rules()[before..], ["KS_INVALID_MAPPING_PARAMETERS"], "MaxMappingByteCount {max}, MappingTableStride {stride}");
    }
    assert_eq!(ks.sys.nt.ks.devices[&device].adapter, None);
    // A larger stride that is a multiple of 8 is fine.
    let before = ks.sys.nt.verifier.findings.len();
    ks.ddi("KsDeviceRegisterAdapterObject", &[device, adapter, 4096, 24]);
    assert_eq!(ks.sys.nt.verifier.findings.len(), before);
    put_adapter(&mut ks, adapter);
}

#[test]
fn ks_get_device_of_something_else_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (fdo, context) = (ks.fdo(), ks.m().read_u64(ks.device() + ksdevice::CONTEXT).unwrap());
    ks.assert_clean();
    assert_eq!(ks.ddi("KsGetDevice", &[fdo]), 0, "the FDO is not the KSDEVICE");
    assert_eq!(ks.rules(), ["KS_NOT_AN_AVSTREAM_OBJECT"]);
    assert_eq!(ks.ddi("KsGetDevice", &[context]), 0);
    assert_eq!(ks.rules(), ["KS_NOT_AN_AVSTREAM_OBJECT"; 2]);
}

#[test]
fn a_device_used_after_its_removal_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    let adapter = dma_adapter_on(&mut ks);
    assert_eq!(ks.pnp.remove(&mut ks.sys).unwrap(), status::SUCCESS);
    ks.assert_clean();
    ks.ddi("KsAcquireDevice", &[device]);
    assert_eq!(ks.rules(), ["KS_INVALID_DEVICE"]);
    ks.ddi("KsReleaseDevice", &[device]);
    ks.ddi("KsDeviceRegisterAdapterObject", &[device, adapter, 4096, 16]);
    assert_eq!(ks.rules(), ["KS_INVALID_DEVICE"; 3]);
    put_adapter(&mut ks, adapter);
}

#[test]
fn a_stream_pointer_used_after_its_deletion_is_found() {
    let Some(mut ks) = Ks::started(Mini::process(process_clone, 0)) else { return };
    let (_filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.set_state(pin, KSSTATE_RUN);
    let clone = clones()[0];
    ks.ddi("KsStreamPointerDelete", &[clone]);
    ks.assert_clean();
    assert_eq!(ks.completed(pin).len(), 1);
    ks.ddi("KsStreamPointerDelete", &[clone]);
    assert_eq!(ks.rules(), ["KS_STREAM_POINTER_NOT_LIVE"], "deleted twice");
    ks.ddi("KsStreamPointerUnlock", &[clone, 0]);
    let out = ks.memory(8);
    assert_eq!(low(ks.ddi("KsStreamPointerClone", &[clone, 0, 0, out])), status::INVALID_PARAMETER);
    assert_eq!(low(ks.ddi("KsStreamPointerAdvanceOffsets", &[clone, 0, 1, 0])), status::INVALID_PARAMETER);
    ks.ddi("KsStreamPointerAdvanceOffsetsAndUnlock", &[clone, 0, 1, 0]);
    assert_eq!(ks.rules(), ["KS_STREAM_POINTER_NOT_LIVE"; 5]);
    // A pointer KS never returned.
    let never = ks.memory(64);
    ks.ddi("KsStreamPointerUnlock", &[never, 0]);
    assert_eq!(ks.rules().len(), 6);
}

#[test]
fn deleting_the_leading_edge_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (_filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.set_state(pin, KSSTATE_RUN);
    let sp = ks.leading_edge(pin);
    ks.assert_clean();
    ks.ddi("KsStreamPointerDelete", &[sp]);
    assert_eq!(ks.rules(), ["KS_DELETE_LEADING_EDGE"]);
    // Still the leading edge, still usable.
    assert_eq!(ks.offset_out(sp).1, FRAME_BYTES);
    ks.ddi("KsStreamPointerUnlock", &[sp, 0]);
    assert_eq!(ks.rules().len(), 1);
}

#[test]
fn taking_the_processing_mutex_in_process_or_twice_is_found() {
    let Some(mut ks) = Ks::started(Mini::process(process_takes_the_mutex, 0)) else { return };
    let (_filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.assert_clean();
    ks.set_state(pin, KSSTATE_RUN);
    assert_eq!(ks.process_calls(), 1);
    assert_eq!(ks.rules(), ["KS_PROCESSING_MUTEX_DEADLOCK"], "AVStream holds it around Process");
    // Outside Process: once is fine, twice would wait forever.
    ks.ddi("KsPinAcquireProcessingMutex", &[pin.0]);
    assert_eq!(ks.rules().len(), 1);
    ks.ddi("KsPinAcquireProcessingMutex", &[pin.0]);
    assert_eq!(ks.rules(), ["KS_PROCESSING_MUTEX_DEADLOCK"; 2]);
}

#[test]
fn releasing_the_processing_mutex_not_held_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (_filter, pin) = ks.open(1);
    ks.ddi("KsPinAcquireProcessingMutex", &[pin.0]);
    ks.ddi("KsPinReleaseProcessingMutex", &[pin.0]);
    ks.assert_clean();
    ks.ddi("KsPinReleaseProcessingMutex", &[pin.0]);
    assert_eq!(ks.rules(), ["KS_PROCESSING_MUTEX_NOT_HELD"]);
}

#[test]
fn a_pin_that_is_not_one_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let (filter, pin) = ks.open(1);
    ks.close(filter, pin);
    ks.assert_clean();
    // A minidriver's DPC that outlived the pin.
    for (i, (ddi, args)) in [
        ("KsPinAttemptProcessing", vec![pin.0, 1]),
        ("KsPinGetLeadingEdgeStreamPointer", vec![pin.0, LOCKED]),
        ("KsPinAcquireProcessingMutex", vec![pin.0]),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(ks.ddi(ddi, &args), 0, "{ddi}");
        assert_eq!(ks.rules(), vec!["KS_INVALID_PIN"; i + 1], "{ddi}");
    }
}

#[test]
fn a_process_that_makes_no_progress_is_found() {
    let Some(mut ks) = Ks::started(Mini::process(process_nothing, 0)) else { return };
    let (_filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.assert_clean();
    ks.set_state(pin, KSSTATE_RUN);
    assert_eq!(ks.rules(), ["KS_PROCESS_NO_PROGRESS"]);
    assert_eq!(ks.process_calls(), u64::from(NO_PROGRESS_LIMIT), "AVStream kept calling while it said STATUS_SUCCESS");
    // Reported once; the calls stop.
    ks.workers();
    ks.ddi("KsPinAttemptProcessing", &[pin.0, 1]);
    ks.workers();
    assert_eq!(ks.rules().len(), 1);
}

#[test]
fn a_process_that_finds_nothing_to_do_is_no_livelock() {
    let Some(mut ks) = Ks::started(Mini::process(process_nothing, 0)) else { return };
    let (filter, pin) = ks.open(1);
    ks.set_state(pin, KSSTATE_RUN);
    // A DPC asks for processing on every interrupt; the queue is empty and
    // Process says STATUS_SUCCESS: nothing is owed after it, no livelock.
    for _ in 0..=NO_PROGRESS_LIMIT {
        ks.ddi("KsPinAttemptProcessing", &[pin.0, 0]);
    }
    assert_eq!(ks.process_calls(), u64::from(NO_PROGRESS_LIMIT) + 1);
    ks.close(filter, pin);
    ks.end_clean();
}

#[test]
fn a_process_that_asks_for_itself_again_without_progress_is_found() {
    let Some(mut ks) = Ks::started(Mini::process(process_asks_again, 0)) else { return };
    let (_filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    ks.set_state(pin, KSSTATE_RUN);
    assert_eq!(ks.rules(), ["KS_PROCESS_NO_PROGRESS"]);
    assert_eq!(ks.process_calls(), u64::from(NO_PROGRESS_LIMIT));
}

#[test]
fn every_ks_ddi_above_its_irql_is_found() {
    let Some(mut ks) = Ks::boot(Mini::default()) else { return };
    for d in ks::DDIS {
        // All-zero arguments: each DDI refuses them without touching memory.
        ks.sys.nt.verifier.findings.clear();
        ks.ddi_at(d.max_irql, d.name, &[0; 8]);
        assert!(!ks.rules().contains(&"IRQL_TOO_HIGH"), "{} at its own maximum {}: {:?}", d.name, d.max_irql, ks.rules());
        for irql in [d.max_irql + 1, HIGH_LEVEL] {
            ks.sys.nt.verifier.findings.clear();
            ks.ddi_at(irql, d.name, &[0; 8]);
            let f = ks.found("IRQL_TOO_HIGH");
            assert!(f.detail.contains(d.name), "{f}");
            assert_eq!(f.bugcheck, 0xC4);
        }
    }
}

#[test]
fn ks_acquire_device_from_a_dpc_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    ks.ddi_at(DISPATCH_LEVEL, "KsAcquireDevice", &[device]);
    assert_eq!(ks.rules(), ["IRQL_TOO_HIGH"]);
    assert!(ks.found("IRQL_TOO_HIGH").detail.contains("KsAcquireDevice"));
}

// ------------------------------------------------------------------ docs/ddi.md

/// The AVStream image, or `None` (reason printed) outside CI.
fn avstream_image() -> Option<PathBuf> {
    support::image("capdma_avstream")
}

#[test]
fn docs_ddi_md_lists_every_import_of_the_avstream_image_and_a_test_here_for_each_ks_one() {
    let Some(path) = avstream_image() else { return };
    let mut sys = System::boot().expect("boot");
    sys.load_driver(&path).expect("the AVStream image loads: every import is emulated");
    let image = sys.machine.images().iter().find(|i| i.name.contains("avstream")).expect("the image");
    let ks_imports: Vec<String> = image.imports.iter().filter(|(module, _)| module.eq_ignore_ascii_case("ks.sys")).map(|(_, s)| s.clone()).collect();
    assert!(!ks_imports.is_empty());
    let docs = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ddi.md")).expect("docs/ddi.md");
    let undocumented: Vec<&String> = image.imports.iter().map(|(_, s)| s).filter(|s| !docs.contains(&format!("| `{s}` |"))).collect();
    assert!(undocumented.is_empty(), "imports of the AVStream image missing from docs/ddi.md's executed table: {undocumented:?}");
    let here = include_str!("nt_ks.rs");
    for name in &ks_imports {
        assert!(ks::DDIS.iter().any(|d| d.name == name), "{name} is not in nt::ks::DDIS");
        let row = docs.lines().find(|l| l.starts_with(&format!("| `{name}` |"))).unwrap_or_else(|| panic!("no docs/ddi.md row for {name}"));
        let (_, tests) = row.split_once("`sim/tests/nt_ks.rs`").unwrap_or_else(|| panic!("the row of {name} names no test of sim/tests/nt_ks.rs: {row}"));
        let named: Vec<&str> = tests.split('`').skip(1).step_by(2).collect();
        assert!(!named.is_empty(), "{row}");
        for test in named {
            assert!(here.contains(&format!("#[test]\nfn {test}()")), "the row of {name} names `{test}`, not a test here");
        }
    }
}

#[test]
fn advancing_past_the_end_of_a_frame_is_a_violation_of_the_queue() {
    let Some(mut ks) = Ks::started(Mini::process(process_overruns, 0)) else { return };
    let (_filter, pin) = ks.open(2);
    ks.submit(pin, 0);
    ks.submit(pin, 1);
    ks.set_state(pin, KSSTATE_RUN);
    assert!(events().contains(&Event::Advanced(status::SUCCESS)), "{:?}", events());
    let violations = ks.sys.memory.violations().list();
    assert!(violations.iter().any(|v| v.contains("past the end of the frame")), "{violations:?}");
    assert_eq!(ks.data_used(pin, 0), FRAME_BYTES, "DataUsed is at most the frame");
}

// ------------------------------------------------- IKsDeviceFunctions (x64 adapter registration)

/// `IID_IKsDeviceFunctions` in guest memory.
fn iid_in(ks: &mut Ks, iid: [u8; 16]) -> u64 {
    let va = ks.memory(4096);
    ks.m().write(va, &iid).unwrap();
    va
}

/// Calls vtable entry `index` of the COM-style object `this` with `args` (after `this`).
fn com(ks: &mut Ks, this: u64, index: u64, args: &[u64]) -> u64 {
    let vtbl = ks.m().read_u64(this).unwrap();
    let method = ks.m().read_u64(vtbl + 8 * index).unwrap();
    let all: Vec<u64> = std::iter::once(this).chain(args.iter().copied()).collect();
    let (nt, m) = ks.nt_m();
    m.call(nt, method, &all).unwrap()
}

/// The device's `IKsDeviceFunctions` through `KsGetOuterUnknown` and `QueryInterface`.
fn device_functions(ks: &mut Ks) -> u64 {
    let device = ks.device();
    let unknown = ks.ddi("KsGetOuterUnknown", &[device]);
    assert_ne!(unknown, 0, "a KSDEVICE has an outer IUnknown");
    let iid = iid_in(ks, capdma_sim::nt::ks::unknown::IID_IKS_DEVICE_FUNCTIONS);
    let out = ks.memory(4096);
    assert_eq!(low(com(ks, unknown, 0, &[iid, out])), status::SUCCESS, "QueryInterface(IID_IKsDeviceFunctions)");
    ks.m().read_u64(out).unwrap()
}

/// A `DEVICE_DESCRIPTION` of an S/G bus master with 32-bit addresses (as `dma_adapter_on`'s).
fn sg_description(ks: &mut Ks) -> u64 {
    let dd = ks.memory(4096);
    let m = ks.m();
    m.write_u32(dd + device_description::VERSION, DEVICE_DESCRIPTION_VERSION2).unwrap();
    m.write_u8(dd + device_description::MASTER, 1).unwrap();
    m.write_u8(dd + device_description::SCATTER_GATHER, 1).unwrap();
    m.write_u8(dd + device_description::DMA32_BIT_ADDRESSES, 1).unwrap();
    m.write_u32(dd + device_description::MAXIMUM_LENGTH, 1 << 20).unwrap();
    dd
}

#[test]
fn register_adapter_object_ex_through_the_outer_unknown_registers_the_adapter() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let adapter = dma_adapter_on(&mut ks);
    let functions = device_functions(&mut ks);
    let dd = sg_description(&mut ks);
    let granted = u64::from(ks.sys.nt.hal.dma.adapters[&adapter].map_registers);
    assert_eq!(low(com(&mut ks, functions, 3, &[adapter, dd, granted, 4096, 16])), status::SUCCESS);
    assert_eq!(com(&mut ks, functions, 2, &[]), 0, "Release: the QueryInterface reference back");
    let device = ks.device();
    let record = &ks.sys.nt.ks.devices[&device];
    assert!(record.registered_ex);
    assert_eq!(record.adapter.map(|a| (a.adapter, a.max_mapping_byte_count, a.mapping_table_stride)), Some((adapter, 4096, 16)));
    // A filter or pin has no aggregated interfaces here; other pointers are not AVStream's.
    assert_eq!(ks.ddi("KsGetOuterUnknown", &[factory()]), 0);
    ks.assert_clean();
    assert_eq!(ks.ddi("KsGetOuterUnknown", &[adapter]), 0);
    ks.found("KS_NOT_AN_AVSTREAM_OBJECT");
    put_adapter(&mut ks, adapter);
}

#[test]
fn query_interface_for_an_unknown_interface_answers_nointerface_and_null() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let device = ks.device();
    let unknown = ks.ddi("KsGetOuterUnknown", &[device]);
    let iid = iid_in(&mut ks, [0x11; 16]);
    let out = ks.memory(4096);
    ks.m().write_u64(out, 0xDEAD).unwrap();
    assert_eq!(low(com(&mut ks, unknown, 0, &[iid, out])), capdma_sim::nt::ks::unknown::STATUS_NOINTERFACE);
    assert_eq!(ks.m().read_u64(out).unwrap(), 0);
    ks.assert_clean();
}

#[test]
fn a_description_that_does_not_match_the_adapter_is_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let adapter = dma_adapter_on(&mut ks);
    let functions = device_functions(&mut ks);
    let dd = sg_description(&mut ks);
    let granted = u64::from(ks.sys.nt.hal.dma.adapters[&adapter].map_registers);
    // More map registers than IoGetDmaAdapter granted, and 64-bit addresses the adapter was not made for.
    ks.m().write_u8(dd + device_description::DMA64_BIT_ADDRESSES, 1).unwrap();
    assert_eq!(low(com(&mut ks, functions, 3, &[adapter, dd, granted + 1, 4096, 16])), status::INVALID_PARAMETER);
    let detail = ks.found("KS_INVALID_DEVICE_DESCRIPTION").detail.clone();
    assert!(detail.contains("NumberOfMapRegisters") && detail.contains("Dma64BitAddresses"), "{detail}");
    let device = ks.device();
    assert!(!ks.sys.nt.ks.devices[&device].registered_ex, "nothing registered");
    let _ = com(&mut ks, functions, 2, &[]);
    put_adapter(&mut ks, adapter);
}

#[test]
fn interface_references_released_too_often_or_never_are_found() {
    let Some(mut ks) = Ks::started(Mini::default()) else { return };
    let functions = device_functions(&mut ks);
    assert_eq!(com(&mut ks, functions, 2, &[]), 0);
    ks.assert_clean();
    let _ = com(&mut ks, functions, 2, &[]);
    ks.found("KS_INTERFACE_RELEASED_TOO_OFTEN");
    // A reference taken and never released: found when the device goes.
    let _ = device_functions(&mut ks);
    assert_eq!(ks.pnp.remove(&mut ks.sys).unwrap(), status::SUCCESS);
    assert!(ks.found("KS_INTERFACE_NOT_RELEASED").detail.contains("1 interface reference"));
}

// ------------------------------------------------------------------ the reference clock

impl Ks {
    /// `KsPinGetReferenceClockInterface(Pin, &Clock)`: (status, the interface).
    fn reference_clock(&mut self, pin: PinHandle) -> (u32, u64) {
        let out = self.memory(8);
        let st = low(self.ddi("KsPinGetReferenceClockInterface", &[pin.0, out]));
        (st, self.m().read_u64(out).unwrap())
    }

    /// Calls method `index` of a COM-style interface's vtable (0-2 are
    /// `IUnknown`'s) with `args` after `this`; the whole RAX.
    fn method(&mut self, this: u64, index: u64, args: &[u64]) -> u64 {
        let vtable = self.m().read_u64(this).unwrap();
        let routine = self.m().read_u64(vtable + 8 * index).unwrap();
        let mut all = vec![this];
        all.extend_from_slice(args);
        let (nt, m) = self.nt_m();
        m.call(nt, routine, &all).unwrap()
    }

    /// Virtual time moves on by `by` (100-ns units).
    fn advance(&mut self, by: u64) {
        let until = self.sys.nt.time + by;
        let (nt, m) = self.nt_m();
        nt.advance_time(m, until).unwrap();
    }

    /// A pin with a master clock and `frames` frames queued, run for
    /// 3 000 000 (stream time then) and filled by `Process`, not yet taken back.
    fn filled_on_a_clock(&mut self, frames: u32) -> (u64, PinHandle) {
        let (filter, pin) = self.open(frames as usize);
        ks::clock::assign_master_clock(&mut self.sys.nt, pin);
        for b in 0..frames {
            self.submit(pin, b);
        }
        assert_eq!(self.set_state(pin, KSSTATE_RUN), status::SUCCESS);
        self.advance(3_000_000);
        self.workers();
        (filter, pin)
    }

    /// Writes what a minidriver stamps into buffer `b`'s header:
    /// `TIMEVALID` and `PresentationTime` = `time`.
    fn stamp(&mut self, pin: PinHandle, b: usize, time: u64) {
        let h = self.header(pin, b);
        let m = &mut self.sys.machine;
        m.write_u32(h + ksstream_header::OPTIONS_FLAGS, capdma_avstream::ks_format::KSSTREAM_HEADER_OPTIONSF_TIMEVALID).unwrap();
        m.write_u64(h + ksstream_header::PRESENTATION_TIME, time).unwrap();
    }
}

/// `IKsReferenceClock`'s methods after `IUnknown`'s (ks.h's order).
const RELEASE: u64 = 2;
const GET_TIME: u64 = 3;
const GET_CORRELATED_TIME: u64 = 5;
const GET_STATE: u64 = 8;

#[test]
fn the_master_clock_is_handed_out_counted_and_runs_only_in_run() {
    let Some(mut ks) = Ks::started(Mini::process(process_nothing, 0)) else {
        return;
    };
    let (filter, pin) = ks.open(1);
    // No clock assigned yet: STATUS_DEVICE_NOT_READY and NULL.
    assert_eq!(ks.reference_clock(pin), (STATUS_DEVICE_NOT_READY, 0));
    assert_eq!(ks::clock::assign_master_clock(&mut ks.sys.nt, pin), status::SUCCESS);
    let (st, clock) = ks.reference_clock(pin);
    assert_eq!(st, status::SUCCESS);
    assert_ne!(clock, 0);
    assert_eq!(ks.method(clock, GET_TIME, &[]), 0, "stream time 0 until the pin runs");
    ks.advance(50_000);
    assert_eq!(ks.method(clock, GET_TIME, &[]), 0, "a stopped graph's clock stands still");
    assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::SUCCESS);
    ks.advance(1_000_000);
    let system = ks.memory(8);
    assert_eq!(ks.method(clock, GET_CORRELATED_TIME, &[system]), 1_000_000);
    assert_eq!(ks.m().read_u64(system).unwrap(), ks.sys.nt.time, "the system time of the same moment");
    let state = ks.memory(4);
    assert_eq!(low(ks.method(clock, GET_STATE, &[state])), status::SUCCESS);
    assert_eq!(ks.m().read_u32(state).unwrap(), KSSTATE_RUN);
    assert_eq!(ks.set_state(pin, KSSTATE_PAUSE), status::SUCCESS);
    ks.advance(2_000_000);
    assert_eq!(ks.method(clock, GET_TIME, &[]), 1_000_000, "paused: the clock stands at 1 000 000");
    assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::SUCCESS);
    ks.advance(500_000);
    assert_eq!(ks.method(clock, GET_TIME, &[]), 1_500_000, "and runs on from there");
    assert_eq!(ks.method(clock, RELEASE, &[]), 0, "the one reference given back");
    ks.close(filter, pin);
    ks.assert_clean();
    ks.end_clean();
}

#[test]
fn a_clock_reference_held_past_close_or_released_twice_is_a_finding() {
    let Some(mut ks) = Ks::started(Mini::process(process_nothing, 0)) else {
        return;
    };
    let (filter, pin) = ks.open(1);
    ks::clock::assign_master_clock(&mut ks.sys.nt, pin);
    let (_, clock) = ks.reference_clock(pin);
    assert_eq!(ks.method(clock, RELEASE, &[]), 0);
    ks.method(clock, RELEASE, &[]);
    assert!(ks.found("KS_INTERFACE_RELEASED_TOO_OFTEN").detail.contains("IKsReferenceClock"));
    // A reference kept when the pin closes.
    ks.reference_clock(pin);
    ks.close(filter, pin);
    let f = ks.found("KS_CLOCK_NOT_RELEASED");
    assert_eq!(f.bugcheck, 0xC4);
    assert!(f.detail.contains("1 reference"), "{}", f.detail);
}

#[test]
fn frames_stamped_off_the_master_clock_are_findings() {
    // `process_fill` completes each frame with data and writes no time:
    // with a clock assigned, the frame lacks TIMEVALID.
    let Some(mut ks) = Ks::started(Mini::process(process_fill, 0)) else {
        return;
    };
    let (filter, pin) = ks.filled_on_a_clock(4);
    // The application reads the headers as KS hands the frames back; set
    // what a wrong minidriver would have written first. Buffer 0: no
    // TIMEVALID (as filled). 1: a time on another time base, ahead of the
    // clock (3 000 000 now). 2: 2 000 000, then 3: earlier than that.
    for (b, time) in [(1, 9_000_000), (2, 2_000_000), (3, 1_000_000)] {
        ks.stamp(pin, b, time);
    }
    let done = ks.completed(pin);
    assert_eq!(done.len(), 4);
    for rule in ["KS_PRESENTATION_TIME_NOT_VALID", "KS_PRESENTATION_TIME_AHEAD_OF_CLOCK", "KS_PRESENTATION_TIME_BACKWARDS"] {
        let f = ks.found(rule);
        assert_eq!(f.bugcheck, 0, "{rule}: a stream contract, not a crash");
    }
    assert!(ks.found("KS_PRESENTATION_TIME_AHEAD_OF_CLOCK").detail.contains("9000000"));
    assert!(ks.found("KS_PRESENTATION_TIME_BACKWARDS").detail.contains("previous frame's 2000000"));
    assert_eq!(ks.rules().len(), 3, "{:?}", ks.rules());
    ks.close(filter, pin);
}

#[test]
fn frames_on_the_master_clock_pass_and_a_pin_without_one_is_not_checked() {
    let Some(mut ks) = Ks::started(Mini::process(process_fill, 0)) else {
        return;
    };
    let (filter, pin) = ks.filled_on_a_clock(2);
    for (b, time) in [(0, 2_000_000), (1, 3_000_000)] {
        ks.stamp(pin, b, time);
    }
    assert_eq!(ks.completed(pin).len(), 2);
    ks.close(filter, pin);
    ks.assert_clean();
    // The same frames without a clock: no time is checked.
    let (filter, pin) = ks.open(1);
    ks.submit(pin, 0);
    assert_eq!(ks.set_state(pin, KSSTATE_RUN), status::SUCCESS);
    ks.workers();
    assert_eq!(ks.completed(pin).len(), 1);
    ks.close(filter, pin);
    ks.assert_clean();
}
