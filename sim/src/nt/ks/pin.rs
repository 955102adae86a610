//! What an application does with an AVStream filter, emulated as KS does
//! it for the requests it sends (`IRP_MJ_CREATE` on the filter and the
//! pin, `KSPROPERTY_PIN_DATAINTERSECTION`, `KSPROPERTY_CONNECTION_STATE`,
//! property requests, `IRP_MJ_CLOSE`), and the processing mutex DDIs
//! ("AVStream Overview", "KSPIN_DISPATCH structure (ks.h)",
//! "KSPIN_DESCRIPTOR_EX structure (ks.h)").
//!
//! The host calls these with the kernel in hand; each returns the status
//! the application's request would end with.

use capdma_winvm::{Machine, Protection, Stop};

use super::super::io::irp::{finish, make_irp, IrpOrigin};
use super::super::layout::irp::{irp, mj, status};
use super::super::layout::ks::{
    ks_frame_info, ksautomation_table, ksdataformat, ksfilter, ksfilter_descriptor, ksfilterfactory, ksp_pin, kspin,
    kspin_descriptor, kspin_descriptor_ex, kspin_dispatch, ksproperty_droppedframes_current_s, ksproperty_item,
    ksproperty_set, ksstream_header,
};
use super::super::{Nt, PASSIVE_LEVEL};
use super::device::free_bag;
use super::driver::low32;
use crate::ks::{CompletedFrame, MappingSource, PinFlags, SimKsPin, SimMapping};
use capdma_avstream::ports::FrameCompletion;

/// `KSSTATE_STOP` … `KSSTATE_RUN` (ks.h).
pub const KSSTATE_STOP: u32 = 0;
/// `KSSTATE_ACQUIRE`.
pub const KSSTATE_ACQUIRE: u32 = 1;
/// `KSSTATE_PAUSE`.
pub const KSSTATE_PAUSE: u32 = 2;
/// `KSSTATE_RUN`.
pub const KSSTATE_RUN: u32 = 3;

/// `KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING` (ks.h): `Process` at `DISPATCH_LEVEL`.
pub const KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING: u32 = 0x1;
/// `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING` (ks.h): a frame arriving does not call `Process`.
pub const KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING: u32 = 0x10;
/// `KSPIN_FLAG_INITIATE_PROCESSING_ON_EVERY_ARRIVAL` (ks.h).
pub const KSPIN_FLAG_INITIATE_PROCESSING_ON_EVERY_ARRIVAL: u32 = 0x20;
/// `KSPIN_FLAG_ENFORCE_FIFO` (ks.h): frames go back to the client in queue order.
pub const KSPIN_FLAG_ENFORCE_FIFO: u32 = 0x80;
/// `KSPIN_FLAG_GENERATE_MAPPINGS` (ks.h).
pub const KSPIN_FLAG_GENERATE_MAPPINGS: u32 = 0x100;
/// `KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY` (ks.h).
pub const KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY: u32 = 0x1_0000;

/// `STATUS_NO_MATCH` (ntstatus.h): no data range of the pin matches.
const STATUS_NO_MATCH: u32 = 0xC000_0272;
/// `STATUS_DEVICE_NOT_READY`.
const STATUS_DEVICE_NOT_READY: u32 = 0xC000_00A3;
/// `STATUS_NOT_FOUND`: no such property.
const STATUS_NOT_FOUND: u32 = 0xC000_0225;

/// A pin the application opened: its `KSPIN` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinHandle(pub u64);

/// One application buffer: what the machine allocated for the frames.
#[derive(Clone, Debug)]
pub struct AppBuffer {
    /// Host address of the bytes (the simulated memory's view).
    pub host_va: *mut u8,
    /// Bytes.
    pub bytes: u32,
    /// Guest-physical address of each 4 KiB page, in order.
    pub pages: Vec<u64>,
}

/// One application buffer as KS holds it.
#[derive(Clone, Debug)]
pub struct BufferRecord {
    /// The application's view of it.
    pub app: AppBuffer,
    /// The system address KS mapped it at (`MmGetSystemAddressForMdlSafe`).
    pub guest_va: u64,
    /// Its kernel stream header (`KSSTREAM_HEADER` + extended header, the
    /// pin's `header_size` bytes), placed at the end of its own page so the
    /// unmapped guard page after it faults a read or write past `Size`
    /// ([`header_place`]).
    pub header_va: u64,
    /// Its `KSMAPPING` table, entries of the registered stride (mapping mode).
    pub table_va: u64,
    /// Entries the table holds.
    pub table_capacity: u32,
    /// The frame whose mappings the table holds.
    pub table_seq: Option<u64>,
}

/// One `KSPIN` and what the host keeps of it.
#[allow(clippy::struct_excessive_bools, reason = "independent facts of AVStream's processing: mutex, in Process, owed, reported")]
pub struct KsPinRecord {
    /// Its `KSDEVICE`.
    pub device: u64,
    /// Its `KSFILTER`.
    pub filter: u64,
    /// Its object bag.
    pub bag: u64,
    /// `KSPIN_DESCRIPTOR_EX.Flags` at creation.
    pub flags: u32,
    /// The pin's `KSPIN_DISPATCH`.
    pub dispatch: u64,
    /// The queue.
    pub queue: SimKsPin,
    /// `KSSTATE` now.
    pub state: u32,
    /// The leading edge's `KSSTREAM_POINTER`.
    pub leading_edge_va: u64,
    /// `KSSTREAM_HEADER.Size` the application sends (with `KS_FRAME_INFO` or without).
    pub header_size: u32,
    /// The application's buffers, by identifier.
    pub buffers: Vec<BufferRecord>,
    /// The registered adapter's `MappingTableStride`, bytes (mapping mode).
    pub mapping_stride: u32,
    /// The processing mutex is held (by `Process` or the minidriver).
    pub processing_mutex: bool,
    /// `Process` is running.
    pub in_process: bool,
    /// A `Process` call is owed (made by the next worker pass).
    pub owed: bool,
    /// `Process` calls in a row, each owing the next, with nothing changed.
    pub no_progress: u32,
    /// The no-progress finding was recorded.
    pub livelock_reported: bool,
    /// The master clock the application assigned (`KSPROPERTY_STREAM_MASTERCLOCK`).
    pub clock: Option<super::clock::MasterClock>,
}

fn kernel_irp(nt: &mut Nt, m: &mut Machine, major: u8, pin: u64) -> Result<u64, Stop> {
    let irp_va = make_irp(nt, m, 1, major, status::SUCCESS, IrpOrigin::Host, "ks.sys".into())?;
    if pin != 0 {
        nt.ks.irp_pins.insert(irp_va, pin);
    }
    Ok(irp_va)
}

fn end_irp(nt: &mut Nt, m: &mut Machine, irp_va: u64, st: u32) -> Result<(), Stop> {
    nt.ks.irp_pins.remove(&irp_va);
    m.write_u32(irp_va + irp::STATUS, st)?;
    finish(nt, m, irp_va)
}

/// Opens a filter on the `KSDEVICE` `device` (`IRP_MJ_CREATE` on its
/// filter factory's reference string): a `KSFILTER` whose `Context` is the
/// device's. `STATUS_DEVICE_NOT_READY` when the device is not started or
/// has no filter factory.
///
/// # Errors
/// [`Stop::Host`] when the machine's frames are exhausted; a bugcheck.
pub fn open_filter(nt: &mut Nt, m: &mut Machine, device: u64) -> Result<Result<u64, u32>, Stop> {
    let Some(record) = nt.ks.devices.get(&device).filter(|d| !d.deleted).cloned() else {
        return Ok(Err(STATUS_DEVICE_NOT_READY));
    };
    let started = m.read_u8(device + super::super::layout::ks::ksdevice::STARTED)? != 0;
    let Some(factory) = record.factories.first().copied().filter(|_| started) else {
        return Ok(Err(STATUS_DEVICE_NOT_READY));
    };
    let filter = nt.alloc_kernel(m, ksfilter::SIZE)?;
    let bag = super::device::new_bag(nt, m, filter)?;
    let descriptor = m.read_u64(factory + ksfilterfactory::FILTER_DESCRIPTOR)?;
    let context = m.read_u64(device + super::super::layout::ks::ksdevice::CONTEXT)?;
    m.write_u64(filter + ksfilter::DESCRIPTOR, descriptor)?;
    m.write_u64(filter + ksfilter::BAG, bag)?;
    m.write_u64(filter + ksfilter::CONTEXT, context)?;
    nt.ks.filters.insert(filter, (factory, device));
    Ok(Ok(filter))
}

/// Closes a filter (its pins must be closed first).
///
/// # Errors
/// As [`free_bag`].
pub fn close_filter(nt: &mut Nt, m: &mut Machine, filter: u64) -> Result<(), Stop> {
    if nt.ks.filters.remove(&filter).is_none() {
        return Ok(());
    }
    let bag = m.read_u64(filter + ksfilter::BAG)?;
    free_bag(nt, m, bag)?;
    m.free_own_pages(filter, 1)
}

/// The `KSPIN_DESCRIPTOR_EX` of pin `id` of `filter`.
fn pin_descriptor(m: &Machine, filter: u64, id: u32) -> Result<Option<u64>, Stop> {
    let descriptor = m.read_u64(filter + ksfilter::DESCRIPTOR)?;
    let count = m.read_u32(descriptor + ksfilter_descriptor::PIN_DESCRIPTORS_COUNT)?;
    if id >= count {
        return Ok(None);
    }
    let size = u64::from(m.read_u32(descriptor + ksfilter_descriptor::PIN_DESCRIPTOR_SIZE)?);
    let first = m.read_u64(descriptor + ksfilter_descriptor::PIN_DESCRIPTORS)?;
    Ok(Some(first + size * u64::from(id)))
}

/// The pin descriptor's data ranges: (address, bytes).
fn data_ranges(m: &Machine, pin_descriptor: u64) -> Result<Vec<(u64, Vec<u8>)>, Stop> {
    let base = pin_descriptor + kspin_descriptor_ex::PIN_DESCRIPTOR;
    let count = m.read_u32(base + kspin_descriptor::DATA_RANGES_COUNT)?;
    let array = m.read_u64(base + kspin_descriptor::DATA_RANGES)?;
    let mut out = Vec::new();
    for i in 0..u64::from(count.min(64)) {
        let range = m.read_u64(array + 8 * i)?;
        let size = m.read_u32(range + ksdataformat::FORMAT_SIZE)?.min(4096);
        let mut bytes = vec![0u8; size as usize];
        m.read(range, &mut bytes)?;
        out.push((range, bytes));
    }
    Ok(out)
}

/// Whether a format (or range) `a` and a range `b` agree on `MajorFormat`,
/// `SubFormat` and `Specifier` (the GUIDs at 16, 32 and 48; the wildcards
/// `KSDATAFORMAT_TYPE_WILDCARD` etc. are not used by video clients).
fn guids_match(a: &[u8], b: &[u8]) -> bool {
    a.len() >= 64 && b.len() >= 64 && a[16..64] == b[16..64]
}

/// `KSPROPERTY_PIN_DATAINTERSECTION` for pin `id` of `filter` with the
/// application's `caller_range`: for each of the pin's data ranges whose
/// GUIDs match, the pin's intersect handler is asked first for the size
/// (`DataBufferSize` 0: `STATUS_BUFFER_OVERFLOW` and `*DataSize`), then
/// for the format; the first success is the answer (the format's bytes).
/// `STATUS_NO_MATCH` when no range gives one.
///
/// # Errors
/// A bugcheck in the handler; [`Stop::Host`] when frames are exhausted.
pub fn data_intersection(nt: &mut Nt, m: &mut Machine, filter: u64, id: u32, caller_range: &[u8]) -> Result<Result<Vec<u8>, u32>, Stop> {
    let Some(descriptor) = pin_descriptor(m, filter, id)? else { return Ok(Err(status::INVALID_PARAMETER)) };
    let handler = m.read_u64(descriptor + kspin_descriptor_ex::INTERSECT_HANDLER)?;
    if handler == 0 {
        return Ok(Err(STATUS_NO_MATCH));
    }
    let page = nt.alloc_kernel(m, 8192)?;
    let (request, range_va, size_va, data_va) = (page, page + 64, page + 1024, page + 4096);
    m.write_u32(request + ksp_pin::PIN_ID, id)?;
    m.write(range_va, &caller_range[..caller_range.len().min(900)])?;
    let context = m.read_u64(filter + ksfilter::CONTEXT)?;
    let mut answer = Err(STATUS_NO_MATCH);
    for (ours, bytes) in data_ranges(m, descriptor)? {
        if !guids_match(caller_range, &bytes) {
            continue;
        }
        let irp_va = kernel_irp(nt, m, mj::DEVICE_CONTROL, 0)?;
        nt.irql = PASSIVE_LEVEL;
        m.write_u32(size_va, 0)?;
        let st = low32(m.call(nt, handler, &[context, irp_va, request, range_va, ours, 0, 0, size_va])?);
        let size = m.read_u32(size_va)?;
        if st != status::BUFFER_OVERFLOW || size == 0 || size > 4096 {
            end_irp(nt, m, irp_va, st)?;
            continue;
        }
        let st = low32(m.call(nt, handler, &[context, irp_va, request, range_va, ours, u64::from(size), data_va, size_va])?);
        end_irp(nt, m, irp_va, st)?;
        if status::nt_success(st) {
            let written = m.read_u32(size_va)?.min(size);
            let mut format = vec![0u8; written as usize];
            m.read(data_va, &mut format)?;
            answer = Ok(format);
            break;
        }
    }
    m.free_own_pages(page, 2)?;
    Ok(answer)
}

/// Creates pin `id` of `filter` with `format` (`IRP_MJ_CREATE` with a
/// `KSPIN_CONNECT` and the format), as AVStream does: the format checked
/// against the pin's data ranges (`STATUS_NO_MATCH`), the `KSPIN` made
/// (`ConnectionFormat` a copy of `format`, `DeviceState` `KSSTATE_STOP`,
/// `Context` the filter's), the minidriver's `SetDataFormat(Pin, NULL,
/// NULL, DataRange, NULL)` and then `Create(Pin, Irp)`; a failure of either
/// is the answer (the pin is then gone). The application's `buffers` are
/// mapped at system addresses and each gets a kernel stream header of
/// `header_size` bytes (`sizeof(KSSTREAM_HEADER)`, or with a
/// `KS_FRAME_INFO` after it), against a guard page ([`header_place`]); a
/// size below `sizeof(KSSTREAM_HEADER)` or above a page is
/// `STATUS_INVALID_PARAMETER`. Mapping generation uses the adapter the
/// device registered (`KsDeviceRegisterAdapterObject`).
///
/// # Errors
/// A bugcheck in the minidriver; [`Stop::Host`] when frames are exhausted.
#[allow(clippy::too_many_lines, reason = "pin creation's steps, in AVStream's order")]
pub fn create_pin(
    nt: &mut Nt,
    m: &mut Machine,
    filter: u64,
    id: u32,
    format: &[u8],
    buffers: Vec<AppBuffer>,
    header_size: u32,
) -> Result<Result<PinHandle, u32>, Stop> {
    let Some((_, device)) = nt.ks.filters.get(&filter).copied() else { return Ok(Err(status::INVALID_HANDLE)) };
    let Some(descriptor) = pin_descriptor(m, filter, id)? else { return Ok(Err(status::INVALID_PARAMETER)) };
    let ranges = data_ranges(m, descriptor)?;
    let Some((range, _)) = ranges.iter().find(|(_, r)| guids_match(format, r)).cloned() else {
        return Ok(Err(STATUS_NO_MATCH));
    };
    if format.len() < ksdataformat::SIZE as usize || format.len() > 2048 {
        return Ok(Err(status::INVALID_PARAMETER));
    }
    if u64::from(header_size) < ksstream_header::SIZE || header_size > 4096 {
        return Ok(Err(status::INVALID_PARAMETER));
    }
    // The KSPIN, then the connection format in the same pages.
    let pin = nt.alloc_kernel(m, 4096)?;
    let format_va = pin + 0x400;
    m.write(format_va, format)?;
    let bag = super::device::new_bag(nt, m, pin)?;
    let dispatch = m.read_u64(descriptor + kspin_descriptor_ex::DISPATCH)?;
    let base = descriptor + kspin_descriptor_ex::PIN_DESCRIPTOR;
    m.write_u64(pin + kspin::DESCRIPTOR, descriptor)?;
    m.write_u64(pin + kspin::BAG, bag)?;
    m.write_u64(pin + kspin::CONTEXT, m.read_u64(filter + ksfilter::CONTEXT)?)?;
    m.write_u32(pin + kspin::ID, id)?;
    m.write_u32(pin + kspin::COMMUNICATION, m.read_u32(base + kspin_descriptor::COMMUNICATION)?)?;
    m.write_u32(pin + kspin::DATA_FLOW, m.read_u32(base + kspin_descriptor::DATA_FLOW)?)?;
    m.write_u64(pin + kspin::CONNECTION_FORMAT, format_va)?;
    m.write_u32(pin + kspin::DEVICE_STATE, KSSTATE_STOP)?;
    m.write_u32(pin + kspin::CLIENT_STATE, KSSTATE_STOP)?;
    let flags = m.read_u32(descriptor + kspin_descriptor_ex::FLAGS)?;
    let registration = nt.ks.devices.get(&device).and_then(|d| d.adapter);
    let mapping = if flags & KSPIN_FLAG_GENERATE_MAPPINGS == 0 {
        None
    } else {
        registration.and_then(|r| mapper_for(nt, r.adapter).map(|adapter| SimMapping { adapter, max_mapping_byte_count: r.max_mapping_byte_count }))
    };
    let violations = super::super::hal::memory(nt).map(|mem| mem.violations().clone()).unwrap_or_default();
    let queue = SimKsPin::new(
        PinFlags {
            generate_mappings: flags & KSPIN_FLAG_GENERATE_MAPPINGS != 0,
            do_not_initiate_processing: flags & KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING != 0,
            complete_out_of_order: flags & KSPIN_FLAG_ENFORCE_FIFO == 0,
        },
        mapping,
        crate::irql::IrqlTracker::new(violations.clone()),
        violations,
    );
    let leading_edge_va = super::stream::new_pointer_slot(nt, m)?;
    nt.ks.pins.insert(
        pin,
        KsPinRecord {
            device,
            filter,
            bag,
            flags,
            dispatch,
            queue,
            state: KSSTATE_STOP,
            leading_edge_va,
            header_size,
            buffers: Vec::new(),
            mapping_stride: registration.map_or(16, |r| r.mapping_table_stride),
            processing_mutex: false,
            in_process: false,
            owed: false,
            no_progress: 0,
            livelock_reported: false,
            clock: None,
        },
    );
    nt.ks.pointers.insert(leading_edge_va, super::stream::PointerRecord { pin, handle: None, cancel: 0 });
    nt.irql = PASSIVE_LEVEL;
    let set_format = if dispatch == 0 { 0 } else { m.read_u64(dispatch + kspin_dispatch::SET_DATA_FORMAT)? };
    let mut st = status::SUCCESS;
    if set_format != 0 {
        st = low32(super::device::call_holding(nt, m, filter, set_format, &[pin, 0, 0, range, 0])?);
    }
    if status::nt_success(st) {
        let create = if dispatch == 0 { 0 } else { m.read_u64(dispatch + kspin_dispatch::CREATE)? };
        if create != 0 {
            let irp_va = kernel_irp(nt, m, mj::CREATE, pin)?;
            st = low32(super::device::call_holding(nt, m, filter, create, &[pin, irp_va])?);
            end_irp(nt, m, irp_va, st)?;
        }
    }
    if !status::nt_success(st) {
        discard_pin(nt, m, pin)?;
        return Ok(Err(st));
    }
    for app in buffers {
        add_buffer(nt, m, pin, app)?;
    }
    Ok(Ok(PinHandle(pin)))
}

/// The mapping source of the HAL adapter at `adapter`: its registered
/// [`crate::ks::DomainMapper`], registered now when the machine has not.
fn mapper_for(nt: &Nt, adapter: u64) -> Option<MappingSource> {
    if let Some((_, mapper)) = crate::ks::DomainMapper::find(adapter) {
        return Some(MappingSource::Domain(mapper));
    }
    let record = nt.hal.dma.adapters.get(&adapter)?;
    let memory = super::super::hal::memory(nt)?;
    let raw = crate::ks::DomainMapper::register(adapter, record.domain.clone(), record.map_registers, memory);
    MappingSource::from_raw(raw)
}

/// Where a stream header of `header_size` bytes sits in its page at
/// `page`: as far toward the page's end as its 8-byte alignment allows
/// (`KSSTREAM_HEADER` holds `LONGLONG`s), so the guard page every kernel
/// range is followed by ([`capdma_winvm::layout`]) starts right after it,
/// as special pool places a block ("verify end"): a minidriver that reads
/// or writes past the header's `Size` — a `KS_FRAME_INFO` the client did
/// not send — faults (bug check 0x50) instead of scribbling on KS's memory.
#[must_use]
pub fn header_place(page: u64, header_size: u32) -> u64 {
    page + 4096 - u64::from(header_size.clamp(1, 4096)).div_ceil(8) * 8
}

/// Maps an application buffer at a system address and gives it a kernel
/// stream header ([`header_place`]).
fn add_buffer(nt: &mut Nt, m: &mut Machine, pin: u64, app: AppBuffer) -> Result<(), Stop> {
    let guest_va = m.map_frames(&app.pages, Protection::READ_WRITE)?;
    let header_size = nt.ks.pins.get(&pin).map_or(4096, |p| p.header_size);
    let header_va = header_place(nt.alloc_kernel(m, 4096)?, header_size);
    if let Some(record) = nt.ks.pins.get_mut(&pin) {
        record.buffers.push(BufferRecord { app, guest_va, header_va, table_va: 0, table_capacity: 0, table_seq: None });
    }
    Ok(())
}

/// Frees what KS made for a pin that goes (failed creation or close): its
/// bag, the pointers, headers, tables and the system mappings of the
/// application's buffers.
fn discard_pin(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<(), Stop> {
    let Some(record) = nt.ks.pins.remove(&pin) else { return Ok(()) };
    super::clock::check_released(nt, m, pin, record.clock)?;
    free_bag(nt, m, record.bag)?;
    let pointers: Vec<u64> = nt.ks.pointers.iter().filter(|(_, p)| p.pin == pin).map(|(va, _)| *va).collect();
    for va in pointers {
        nt.ks.pointers.remove(&va);
        super::stream::release_pointer_slot(nt, m, va)?;
    }
    for buffer in record.buffers {
        m.unmap(buffer.guest_va, u64::from(buffer.app.bytes).div_ceil(4096))?;
        m.free_own_pages(buffer.header_va & !0xFFF, 1)?;
        if buffer.table_va != 0 {
            m.free_own_pages(buffer.table_va, table_pages(buffer.table_capacity, record.mapping_stride))?;
        }
    }
    m.free_own_pages(pin, 1)
}

/// Pages of a `KSMAPPING` table of `entries` entries of `stride` bytes.
pub(super) fn table_pages(entries: u32, stride: u32) -> u64 {
    (u64::from(entries) * u64::from(stride)).div_ceil(4096).max(1)
}

/// `KSPROPERTY_CONNECTION_STATE` (set) to `to`: AVStream walks the pin
/// through every state between, one `SetDeviceState(Pin, To, From)` per
/// step, `KSPIN.DeviceState` following each success; a failure ends the
/// walk there with its status. Entering `KSSTATE_STOP`, KS completes every
/// frame left in the queue (cancelled). Entering a state `Process` is
/// called in (`KSSTATE_PAUSE` and `KSSTATE_RUN`, only `KSSTATE_RUN` with
/// `KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY`) with frames queued, processing
/// is attempted.
///
/// # Errors
/// A bugcheck in the minidriver.
pub fn set_state(nt: &mut Nt, m: &mut Machine, pin: PinHandle, to: u32) -> Result<u32, Stop> {
    let Some(record) = nt.ks.pins.get(&pin.0) else { return Ok(status::INVALID_HANDLE) };
    let (dispatch, mut from, filter) = (record.dispatch, record.state, record.filter);
    let callback = if dispatch == 0 { 0 } else { m.read_u64(dispatch + kspin_dispatch::SET_DEVICE_STATE)? };
    while from != to {
        let next = if to > from { from + 1 } else { from - 1 };
        nt.irql = PASSIVE_LEVEL;
        if callback != 0 {
            let st = low32(super::device::call_holding(nt, m, filter, callback, &[pin.0, u64::from(next), u64::from(from)])?);
            if !status::nt_success(st) {
                return Ok(st);
            }
        }
        m.write_u32(pin.0 + kspin::DEVICE_STATE, next)?;
        m.write_u32(pin.0 + kspin::CLIENT_STATE, next)?;
        if next == KSSTATE_STOP {
            super::stream::cancel_clones(nt, m, pin.0)?;
        }
        let now = nt.time;
        let Some(record) = nt.ks.pins.get_mut(&pin.0) else { return Ok(status::INVALID_HANDLE) };
        record.state = next;
        if let Some(clock) = record.clock.as_mut() {
            clock.follow_state(next, now);
        }
        record.queue.set_running(next == KSSTATE_RUN);
        if next == KSSTATE_STOP {
            record.queue.flush_on_stop();
            record.owed = false;
        }
        if super::stream::processes_in(record.flags, next) && record.queue.frames_at_or_ahead_of_leading_edge() > 0 {
            record.owed = true;
        }
        from = next;
    }
    super::stream::run_owed(nt, m, pin.0)?;
    Ok(status::SUCCESS)
}

/// The application queues buffer `buffer` again (`IOCTL_KS_READ_STREAM`
/// with one `KSSTREAM_HEADER` of the pin's header size): KS resets the
/// kernel header (`FrameExtent` the buffer's bytes, `DataUsed` 0, `Data`
/// its system address, the `KS_FRAME_INFO`'s `ExtendedHeaderSize` set when
/// there is one) and puts the frame in the queue; when it lands with
/// nothing at or ahead of the leading edge, or the pin asked for every
/// arrival, and the pin is in a processing state, `Process` is owed (made
/// by the next [`super::stream::run_workers`]). Returns `STATUS_PENDING`
/// (the read is pending) or `STATUS_INVALID_PARAMETER` for an unknown
/// buffer. A frame queued in `KSSTATE_STOP` waits for a processing state
/// (a capture client queues in `KSSTATE_PAUSE`); closing the pin hands it
/// back cancelled.
///
/// # Errors
/// A bugcheck writing the header.
pub fn submit(nt: &mut Nt, m: &mut Machine, pin: PinHandle, buffer: u32) -> Result<u32, Stop> {
    let Some(record) = nt.ks.pins.get(&pin.0) else { return Ok(status::INVALID_HANDLE) };
    let Some(b) = record.buffers.get(buffer as usize).cloned() else { return Ok(status::INVALID_PARAMETER) };
    let (header_size, flags, state) = (record.header_size, record.flags, record.state);
    let h = b.header_va;
    m.fill(h, header_size as usize, 0)?;
    m.write_u32(h + ksstream_header::SIZE_FIELD, header_size)?;
    m.write_u32(h + ksstream_header::PRESENTATION_NUMERATOR, 1)?;
    m.write_u32(h + ksstream_header::PRESENTATION_DENOMINATOR, 1)?;
    m.write_u32(h + ksstream_header::FRAME_EXTENT, b.app.bytes)?;
    m.write_u64(h + ksstream_header::DATA, b.guest_va)?;
    if u64::from(header_size) >= ksstream_header::SIZE + ks_frame_info::SIZE {
        m.write_u32(h + ksstream_header::SIZE + ks_frame_info::EXTENDED_HEADER_SIZE, ks_frame_info::SIZE as u32)?;
    }
    let Some(record) = nt.ks.pins.get_mut(&pin.0) else { return Ok(status::INVALID_HANDLE) };
    let empty_ahead = record.queue.frames_at_or_ahead_of_leading_edge() == 0;
    record.queue.submit(u64::from(buffer), b.app.host_va, b.app.bytes);
    nt.ks.stats.frames_submitted += 1;
    let initiates = flags & KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING == 0
        && (empty_ahead || flags & KSPIN_FLAG_INITIATE_PROCESSING_ON_EVERY_ARRIVAL != 0);
    if initiates && super::stream::processes_in(flags, state) {
        if let Some(record) = nt.ks.pins.get_mut(&pin.0) {
            record.owed = true;
        }
    }
    Ok(status::PENDING)
}

/// The frames KS completed back to the application since the last call,
/// in completion order, each with what the minidriver left in its stream
/// header (`DataUsed`, `PresentationTime`, `Duration`, `OptionsFlags` and
/// the `KS_FRAME_INFO`'s `PictureNumber`/`DropCount` when the header has one).
///
/// # Errors
/// A bugcheck reading a header.
pub fn take_completed(nt: &mut Nt, m: &mut Machine, pin: PinHandle) -> Result<Vec<CompletedFrame>, Stop> {
    let Some(record) = nt.ks.pins.get(&pin.0) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut stamped = Vec::new();
    while let Some(mut done) = record.queue.take_completed() {
        if let Some(b) = record.buffers.get(usize::try_from(done.buffer_id).unwrap_or(usize::MAX)) {
            let h = b.header_va;
            let data_used = m.read_u32(h + ksstream_header::DATA_USED)?;
            let options = m.read_u32(h + ksstream_header::OPTIONS_FLAGS)?;
            let with_info = u64::from(record.header_size) >= ksstream_header::SIZE + ks_frame_info::SIZE;
            let (picture_number, drop_count) = if with_info {
                let info = h + ksstream_header::SIZE;
                (m.read_u64(info + ks_frame_info::PICTURE_NUMBER)?.cast_signed(), m.read_u64(info + ks_frame_info::DROP_COUNT)?.cast_signed())
            } else {
                (-1, 0)
            };
            let presentation_time = m.read_u64(h + ksstream_header::PRESENTATION_TIME)?.cast_signed();
            stamped.push((data_used, options, presentation_time));
            done.completion = Some(FrameCompletion {
                data_used,
                presentation_time,
                duration: m.read_u64(h + ksstream_header::DURATION)?.cast_signed(),
                picture_number,
                drop_count,
                discontinuity: options & capdma_avstream::ks_format::KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY != 0,
            });
            done.cancelled = done.cancelled && data_used == 0;
        }
        out.push(done);
    }
    for (data_used, options, presentation_time) in stamped {
        super::clock::check_presentation(nt, m, pin.0, data_used, options, presentation_time);
    }
    Ok(out)
}

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT` (get) on the pin, through its
/// automation table as AVStream dispatches a property request: the item
/// of `PROPSETID_VIDCAP_DROPPEDFRAMES`, the request and the buffer at
/// least `MinProperty`/`MinData` bytes, the handler called with an IRP
/// `KsGetPinFromIrp` resolves to the pin. Returns (`PictureNumber`,
/// `DropCount`, `AverageFrameSize`) or the status (`STATUS_NOT_FOUND` when
/// the pin has no such property).
///
/// # Errors
/// A bugcheck in the handler.
pub fn dropped_frames(nt: &mut Nt, m: &mut Machine, pin: PinHandle) -> Result<Result<(i64, i64, u32), u32>, Stop> {
    let descriptor = m.read_u64(pin.0 + kspin::DESCRIPTOR)?;
    let table = m.read_u64(descriptor + kspin_descriptor_ex::AUTOMATION_TABLE)?;
    if table == 0 {
        return Ok(Err(STATUS_NOT_FOUND));
    }
    let sets = m.read_u32(table + ksautomation_table::PROPERTY_SETS_COUNT)?;
    let item_size = u64::from(m.read_u32(table + ksautomation_table::PROPERTY_ITEM_SIZE)?).max(ksproperty_item::SIZE);
    let sets_va = m.read_u64(table + ksautomation_table::PROPERTY_SETS)?;
    let wanted = crate::nt::pnp::guid_bytes(&capdma_interface::guid::Guid::new(
        capdma_avstream::ks_format::PROPSETID_VIDCAP_DROPPEDFRAMES.data1,
        capdma_avstream::ks_format::PROPSETID_VIDCAP_DROPPEDFRAMES.data2,
        capdma_avstream::ks_format::PROPSETID_VIDCAP_DROPPEDFRAMES.data3,
        capdma_avstream::ks_format::PROPSETID_VIDCAP_DROPPEDFRAMES.data4,
    ));
    for s in 0..u64::from(sets.min(64)) {
        let set = sets_va + s * ksproperty_set::SIZE;
        let mut guid = [0u8; 16];
        m.read(m.read_u64(set + ksproperty_set::SET)?, &mut guid)?;
        if guid != wanted {
            continue;
        }
        let items = m.read_u32(set + ksproperty_set::PROPERTIES_COUNT)?;
        let items_va = m.read_u64(set + ksproperty_set::PROPERTY_ITEM)?;
        for i in 0..u64::from(items.min(256)) {
            let item = items_va + i * item_size;
            if m.read_u32(item + ksproperty_item::PROPERTY_ID)? != capdma_avstream::ks_format::KSPROPERTY_DROPPEDFRAMES_CURRENT {
                continue;
            }
            let handler = m.read_u64(item + ksproperty_item::GET_PROPERTY_HANDLER)?;
            if handler == 0 {
                return Ok(Err(STATUS_NOT_FOUND));
            }
            let min_property = u64::from(m.read_u32(item + ksproperty_item::MIN_PROPERTY)?).max(24);
            let min_data = u64::from(m.read_u32(item + ksproperty_item::MIN_DATA)?).max(ksproperty_droppedframes_current_s::SIZE);
            let page = nt.alloc_kernel(m, 4096)?;
            let (request, data) = (page, page + min_property.div_ceil(16) * 16);
            m.write(request, &wanted)?;
            m.write_u32(request + 16, capdma_avstream::ks_format::KSPROPERTY_DROPPEDFRAMES_CURRENT)?;
            m.write_u32(request + 20, 1)?; // KSPROPERTY_TYPE_GET
            m.write(data, &wanted)?;
            m.write_u32(data + 16, capdma_avstream::ks_format::KSPROPERTY_DROPPEDFRAMES_CURRENT)?;
            m.write_u32(data + 20, 1)?;
            let _ = min_data;
            let irp_va = kernel_irp(nt, m, mj::DEVICE_CONTROL, pin.0)?;
            nt.irql = PASSIVE_LEVEL;
            let st = low32(m.call(nt, handler, &[irp_va, request, data])?);
            end_irp(nt, m, irp_va, st)?;
            let answer = if status::nt_success(st) {
                Ok((
                    m.read_u64(data + ksproperty_droppedframes_current_s::PICTURE_NUMBER)?.cast_signed(),
                    m.read_u64(data + ksproperty_droppedframes_current_s::DROP_COUNT)?.cast_signed(),
                    m.read_u32(data + ksproperty_droppedframes_current_s::AVERAGE_FRAME_SIZE)?,
                ))
            } else {
                Err(st)
            };
            m.free_own_pages(page, 1)?;
            return Ok(answer);
        }
    }
    Ok(Err(STATUS_NOT_FOUND))
}

/// The application closes the pin (`IRP_MJ_CLOSE`): AVStream takes it to
/// `KSSTATE_STOP` (step by step), calls the minidriver's `Close(Pin,
/// Irp)`, frees the pin's bag and what KS made for it. Returns `Close`'s
/// status (or the failing state change's). The frames completed on the
/// way are dropped: [`close_pin_collecting`] keeps them.
///
/// # Errors
/// A bugcheck in the minidriver.
pub fn close_pin(nt: &mut Nt, m: &mut Machine, pin: PinHandle) -> Result<u32, Stop> {
    let closed = close_pin_collecting(nt, m, pin)?;
    Ok(if status::nt_success(closed.stop_status) { closed.close_status } else { closed.stop_status })
}

/// What closing a pin did ([`close_pin_collecting`]).
#[derive(Clone, Debug, Default)]
pub struct PinClosed {
    /// The walk to `KSSTATE_STOP`'s status (a minidriver's failing
    /// `SetDeviceState` ends the walk; the close goes on, as it must).
    pub stop_status: u32,
    /// `Close(Pin, Irp)`'s status: the `IRP_MJ_CLOSE`'s (`STATUS_SUCCESS`
    /// for a pin without a `Close`).
    pub close_status: u32,
    /// The frames completed back to the application during the close, in
    /// completion order, with their stream headers as
    /// [`take_completed`] reads them.
    pub completed: Vec<CompletedFrame>,
}

/// [`close_pin`], keeping what it did: the application closes the pin
/// (`IRP_MJ_CLOSE`, which cannot fail: "all outstanding I/O requests have
/// been completed or canceled" by then): AVStream walks it to
/// `KSSTATE_STOP`, whatever each step answers; the minidriver's
/// `Close(Pin, Irp)` runs (it may wait for its hardware, virtual time
/// passing); every frame still in the queue is then completed, cancelled
/// (a clone still alive is the `KSSTATE_STOP` violation of
/// [`SimKsPin::flush_on_stop`]); the frames completed meanwhile are read
/// and returned; then the pin's bag and what KS made for it are freed.
///
/// # Errors
/// A bugcheck in the minidriver.
pub fn close_pin_collecting(nt: &mut Nt, m: &mut Machine, pin: PinHandle) -> Result<PinClosed, Stop> {
    let Some(record) = nt.ks.pins.get(&pin.0) else {
        return Ok(PinClosed { stop_status: status::INVALID_HANDLE, close_status: status::INVALID_HANDLE, completed: Vec::new() });
    };
    let (dispatch, filter) = (record.dispatch, record.filter);
    let stop_status = set_state(nt, m, pin, KSSTATE_STOP)?;
    let close = if dispatch == 0 { 0 } else { m.read_u64(dispatch + kspin_dispatch::CLOSE)? };
    let mut close_status = status::SUCCESS;
    if close != 0 {
        let irp_va = kernel_irp(nt, m, mj::CLOSE, pin.0)?;
        nt.irql = PASSIVE_LEVEL;
        close_status = low32(super::device::call_holding(nt, m, filter, close, &[pin.0, irp_va])?);
        end_irp(nt, m, irp_va, close_status)?;
    }
    super::stream::cancel_clones(nt, m, pin.0)?;
    if let Some(record) = nt.ks.pins.get_mut(&pin.0) {
        record.queue.flush_on_stop();
        record.owed = false;
    }
    let completed = take_completed(nt, m, pin)?;
    discard_pin(nt, m, pin.0)?;
    Ok(PinClosed { stop_status, close_status, completed })
}

/// The pin's queue (for the machine's counts).
#[must_use]
pub fn queue(nt: &Nt, pin: PinHandle) -> Option<SimKsPin> {
    nt.ks.pins.get(&pin.0).map(|p| p.queue.clone())
}

/// `PKSPIN KsGetPinFromIrp(PIRP Irp)` ("KsGetPinFromIrp function (ks.h)";
/// up to `DISPATCH_LEVEL`): the pin an IRP KS handed a pin's handler was
/// sent to; NULL for any other IRP.
pub(crate) fn ks_get_pin_from_irp(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [irp_va] = m.args::<1>()?;
    Ok(nt.ks.irp_pins.get(&irp_va).copied().unwrap_or(0))
}

/// `void KsPinAcquireProcessingMutex(PKSPIN Pin)` ("KsPinAcquireProcessingMutex
/// function (ks.h)"; `PASSIVE_LEVEL`): the mutex `Process` runs under.
/// Taking it while it is held — from `Process`, or twice — would wait
/// forever: the finding `KS_PROCESSING_MUTEX_DEADLOCK` (and it stays held).
pub(crate) fn ks_pin_acquire_processing_mutex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    let held = nt.ks.pins.get(&pin).map(|p| p.processing_mutex);
    nt.verifier.checks += 1;
    match held {
        None => nt.violation(m, "KS_INVALID_PIN", 0xC4, None, format!("KsPinAcquireProcessingMutex({pin:#x}): not a pin")),
        Some(true) => nt.violation(
            m,
            "KS_PROCESSING_MUTEX_DEADLOCK",
            0xC4,
            None,
            format!("KsPinAcquireProcessingMutex({pin:#x}) while the processing mutex is held (from Process, or taken twice): the thread would wait forever"),
        ),
        Some(false) => {
            if let Some(p) = nt.ks.pins.get_mut(&pin) {
                p.processing_mutex = true;
            }
        }
    }
    Ok(0)
}

/// `void KsPinReleaseProcessingMutex(PKSPIN Pin)` ("KsPinReleaseProcessingMutex
/// function (ks.h)"; `PASSIVE_LEVEL`); releasing a mutex not held is the
/// finding `KS_PROCESSING_MUTEX_NOT_HELD`. A `Process` call owed meanwhile
/// is made by the next worker pass.
pub(crate) fn ks_pin_release_processing_mutex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [pin] = m.args::<1>()?;
    let held = nt.ks.pins.get(&pin).map(|p| p.processing_mutex && !p.in_process);
    nt.verifier.checks += 1;
    match held {
        Some(true) => {
            if let Some(p) = nt.ks.pins.get_mut(&pin) {
                p.processing_mutex = false;
            }
        }
        _ => nt.violation(m, "KS_PROCESSING_MUTEX_NOT_HELD", 0xC4, None, format!("KsPinReleaseProcessingMutex({pin:#x}) without the mutex")),
    }
    Ok(0)
}

/// `SetDeviceState(Pin, To, From)` of the minidriver called once with
/// exactly these states — what a class driver that does not walk the
/// states one step at a time would send (AVStream itself never does: for
/// the fault matrix's checks of the minidriver's own guard). On success KS
/// records `To` as the pin's state (a stop flushes the queue, as in
/// [`set_state`]). Returns the minidriver's status.
///
/// # Errors
/// A bugcheck in the minidriver.
pub fn call_set_device_state(nt: &mut Nt, m: &mut Machine, pin: PinHandle, to: u32, from: u32) -> Result<u32, Stop> {
    let Some(record) = nt.ks.pins.get(&pin.0) else { return Ok(status::INVALID_HANDLE) };
    let (dispatch, filter) = (record.dispatch, record.filter);
    let callback = if dispatch == 0 { 0 } else { m.read_u64(dispatch + kspin_dispatch::SET_DEVICE_STATE)? };
    if callback == 0 {
        return Ok(status::SUCCESS);
    }
    nt.irql = PASSIVE_LEVEL;
    let st = low32(super::device::call_holding(nt, m, filter, callback, &[pin.0, u64::from(to), u64::from(from)])?);
    if status::nt_success(st) {
        m.write_u32(pin.0 + kspin::DEVICE_STATE, to)?;
        if to == KSSTATE_STOP {
            super::stream::cancel_clones(nt, m, pin.0)?;
        }
        if let Some(record) = nt.ks.pins.get_mut(&pin.0) {
            record.state = to;
            record.queue.set_running(to == KSSTATE_RUN);
            if to == KSSTATE_STOP {
                record.queue.flush_on_stop();
                record.owed = false;
            }
            if super::stream::processes_in(record.flags, to) && record.queue.frames_at_or_ahead_of_leading_edge() > 0 {
                record.owed = true;
            }
        }
        super::stream::run_owed(nt, m, pin.0)?;
    }
    Ok(st)
}

/// `KSPROPERTY_CONNECTION_DATAFORMAT` (set) with `format`: checked against
/// the pin's data ranges (`STATUS_NO_MATCH`), made the pin's
/// `ConnectionFormat`, then the minidriver's `SetDataFormat(Pin, OldFormat,
/// NULL, DataRange, NULL)`; on its failure the old format is the
/// connection format again. Returns the status.
///
/// # Errors
/// A bugcheck in the minidriver.
pub fn set_data_format(nt: &mut Nt, m: &mut Machine, pin: PinHandle, format: &[u8]) -> Result<u32, Stop> {
    let Some(record) = nt.ks.pins.get(&pin.0) else { return Ok(status::INVALID_HANDLE) };
    let (dispatch, filter) = (record.dispatch, record.filter);
    let descriptor = m.read_u64(pin.0 + kspin::DESCRIPTOR)?;
    let ranges = data_ranges(m, descriptor)?;
    let Some((range, _)) = ranges.iter().find(|(_, r)| guids_match(format, r)).cloned() else { return Ok(STATUS_NO_MATCH) };
    if format.len() < ksdataformat::SIZE as usize || format.len() > 1024 {
        return Ok(status::INVALID_PARAMETER);
    }
    // The old format stays readable at its place while the new one is
    // written next to it (both in the pin's pages).
    let old = m.read_u64(pin.0 + kspin::CONNECTION_FORMAT)?;
    let new = if old == pin.0 + 0x400 { pin.0 + 0x800 } else { pin.0 + 0x400 };
    m.write(new, format)?;
    m.write_u64(pin.0 + kspin::CONNECTION_FORMAT, new)?;
    let callback = if dispatch == 0 { 0 } else { m.read_u64(dispatch + kspin_dispatch::SET_DATA_FORMAT)? };
    let mut st = status::SUCCESS;
    if callback != 0 {
        nt.irql = PASSIVE_LEVEL;
        st = low32(super::device::call_holding(nt, m, filter, callback, &[pin.0, old, 0, range, 0])?);
    }
    if !status::nt_success(st) {
        m.write_u64(pin.0 + kspin::CONNECTION_FORMAT, old)?;
    }
    Ok(st)
}

/// The pin's `KSSTATE` as KS knows it.
#[must_use]
pub fn state(nt: &Nt, pin: PinHandle) -> Option<u32> {
    nt.ks.pins.get(&pin.0).map(|p| p.state)
}
