//! The bus image's query interface, as a host client sees it: the
//! `CapdmaBusInterface` the image filled in guest memory (its routines are
//! guest code) turned into a host table of `extern "system"` thunks, so the
//! AVStream core on the host calls the image function pointer by function
//! pointer, exactly as `capdma_avstream.sys` would.
//!
//! Each thunk copies its in-structures into kernel-owned guest memory, calls
//! the guest routine with the guest's `Context`, and copies the
//! out-structures back. Pointers that cross are translated: the common
//! buffer's guest address becomes a host pointer to the same bytes (guest
//! RAM is host memory); the completion callback becomes a host function the
//! image's DPC calls, which hands the `Completion` to the host callback.

use core::ffi::c_void;
use core::mem::{size_of, size_of_val};
use std::cell::{Cell, RefCell};

use capdma_interface::status::{NtStatus, STATUS_DEVICE_REMOVED, STATUS_INVALID_PARAMETER};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, Completion, DmaConfig, InterfaceHeader, PfnCompletion, PfnProgramFramePart, SgElement,
    SlotRing,
};
use capdma_winvm::{Machine, Stop};

use super::active;
use crate::nt::{Nt, DISPATCH_LEVEL};

/// The guest table's routines and context (guest addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestTable {
    /// `Size`.
    pub size: u16,
    /// `Version`.
    pub version: u16,
    /// `Context`.
    pub context: u64,
    /// `InterfaceReference`, `InterfaceDereference`, then the routines in
    /// table order (the eight of version 1, `ProgramFramePart` of version 2:
    /// 0 in a version-1 table).
    pub routines: [u64; 11],
}

impl GuestTable {
    /// Reads the table the image filled at `va`.
    ///
    /// # Errors
    /// A bugcheck when `va` is not mapped.
    pub fn read(m: &Machine, va: u64) -> Result<Self, Stop> {
        let size = m.read_u16(va)?;
        let mut routines = [0u64; 11];
        for (i, r) in routines.iter_mut().enumerate() {
            // Only what the answer's `Size` says it filled.
            let offset = 16 + 8 * i as u64;
            if offset + 8 <= u64::from(size) {
                *r = m.read_u64(va + offset)?;
            }
        }
        Ok(Self { size, version: m.read_u16(va + 2)?, context: m.read_u64(va + 8)?, routines })
    }
}

const REFERENCE: usize = 0;
const DEREFERENCE: usize = 1;
const GET_DMA_CONFIG: usize = 2;
const GET_DMA_ADAPTER: usize = 3;
const PROGRAM_FRAME: usize = 4;
const GET_SLOT_RING: usize = 5;
const RETURN_SLOT: usize = 6;
const START_CHANNEL: usize = 7;
const STOP_CHANNEL: usize = 8;
const REGISTER_COMPLETION: usize = 9;
const PROGRAM_FRAME_PART: usize = 10;

/// A host completion callback registered through the interface.
struct Callback {
    callback: PfnCompletion,
    context: *mut c_void,
}

/// Maps the guest `DMA_ADAPTER` the image hands out to the host adapter
/// object the host side's KS model registers (see `nt::hal`).
pub type AdapterTranslation = fn(&Nt, u64) -> Option<*mut c_void>;

/// One child's view of the image's interface. Lives in a `Box` (its
/// address is the host table's `Context`) as long as the table is used.
pub struct ImageInterface {
    guest: GuestTable,
    translate_adapter: AdapterTranslation,
    /// Boxed so each keeps its address (the guest holds it) as the list grows.
    #[allow(clippy::vec_box, reason = "the guest holds each callback's address")]
    callbacks: RefCell<Vec<Box<Callback>>>,
    /// `InterfaceReference` / `InterfaceDereference` calls made through the host table.
    references: Cell<(u64, u64)>,
    /// Kernel-owned guest pages for the in/out structures of a call, one
    /// area per nesting depth (a thunk may be entered again from a host
    /// callback the guest calls): kept for the interface's life, since
    /// unmapping flushes the guest's translations, which is slow.
    scratch: RefCell<Vec<(u64, u64)>>,
    /// Thunk calls in progress on this interface.
    depth: Cell<usize>,
}

impl ImageInterface {
    /// The interface the image filled at guest `table_va`.
    ///
    /// # Errors
    /// A bugcheck when the table is not mapped.
    pub fn new(m: &Machine, table_va: u64, translate_adapter: AdapterTranslation) -> Result<Box<Self>, Stop> {
        Ok(Box::new(Self {
            guest: GuestTable::read(m, table_va)?,
            translate_adapter,
            callbacks: RefCell::new(Vec::new()),
            references: Cell::new((0, 0)),
            scratch: RefCell::new(Vec::new()),
            depth: Cell::new(0),
        }))
    }

    /// `(InterfaceReference calls, InterfaceDereference calls)` made
    /// through the host table so far: with the reference the query that
    /// filled the table took, the host side holds `1 + taken - dropped`.
    #[must_use]
    pub fn references(&self) -> (u64, u64) {
        self.references.get()
    }

    /// The guest table as read.
    #[must_use]
    pub fn guest(&self) -> &GuestTable {
        &self.guest
    }

    /// The host table: every routine a thunk into the guest, `Context`
    /// this object. Valid while `self` lives.
    #[must_use]
    pub fn host_table(&self) -> CapdmaBusInterface {
        CapdmaBusInterface {
            header: InterfaceHeader {
                size: self.guest.size,
                version: self.guest.version,
                context: std::ptr::from_ref(self).cast_mut().cast(),
                interface_reference: Some(reference),
                interface_dereference: Some(dereference),
            },
            get_dma_config: Some(get_dma_config),
            get_dma_adapter: Some(get_dma_adapter),
            program_frame: Some(program_frame),
            get_slot_ring: Some(get_slot_ring),
            return_slot: Some(return_slot),
            start_channel: Some(start_channel),
            stop_channel: Some(stop_channel),
            register_completion: Some(register_completion),
            program_frame_part: (self.guest.routines[PROGRAM_FRAME_PART] != 0).then_some(program_frame_part as PfnProgramFramePart),
        }
    }
}

/// The interface behind a thunk's `context`.
///
/// # Safety
/// `context` is the `Context` of a table from [`ImageInterface::host_table`]
/// whose `ImageInterface` is alive.
unsafe fn interface<'a>(context: *mut c_void) -> &'a ImageInterface {
    // SAFETY: guaranteed by the caller.
    unsafe { &*context.cast::<ImageInterface>() }
}

/// Smallest scratch area, bytes: enough for the element list of a 4K frame
/// in 4 KiB pages (2025 `SgElement`s), so areas are rarely regrown.
const SCRATCH_MIN_BYTES: u64 = 64 * 1024;

/// Guest memory for one call's in/out structures: the interface's area
/// for the current nesting depth, grown when too small; given back to the
/// depth (not unmapped) when dropped, also when the call fails.
struct Scratch<'a> {
    iface: &'a ImageInterface,
    va: u64,
}

impl<'a> Scratch<'a> {
    fn new(iface: &'a ImageInterface, nt: &mut Nt, m: &mut Machine, bytes: u64) -> Result<Self, Stop> {
        let depth = iface.depth.get();
        let mut areas = iface.scratch.borrow_mut();
        let fits = areas.get(depth).is_some_and(|(_, pages)| pages * 4096 >= bytes);
        if !fits {
            let pages = bytes.max(SCRATCH_MIN_BYTES).div_ceil(4096);
            let va = nt.alloc_kernel(m, pages * 4096)?;
            if let Some(old) = areas.get_mut(depth) {
                let (old_va, old_pages) = std::mem::replace(old, (va, pages));
                m.free_own_pages(old_va, old_pages)?;
            } else {
                areas.push((va, pages));
            }
        }
        let va = areas[depth].0;
        iface.depth.set(depth + 1);
        Ok(Self { iface, va })
    }
}

/// The caller's element list: `element_count` elements at `elements`
/// (`None` for a null list of elements).
///
/// # Safety
/// A non-null `elements` points to `element_count` readable elements that
/// stay unchanged for `'a`.
unsafe fn element_list<'a>(elements: *const SgElement, element_count: u32) -> Option<&'a [SgElement]> {
    if element_count == 0 {
        return Some(&[]);
    }
    if elements.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(elements, element_count as usize) })
}

/// A scratch area holding `list` and `extra` bytes after it (at
/// `va + size_of_val(list)`).
fn scratch_with_elements<'a>(
    iface: &'a ImageInterface,
    nt: &mut Nt,
    m: &mut Machine,
    list: &[SgElement],
    extra: u64,
) -> Result<Scratch<'a>, Stop> {
    let scratch = Scratch::new(iface, nt, m, size_of_val(list) as u64 + extra)?;
    for (i, e) in list.iter().enumerate() {
        // SAFETY: SgElement is a u64 and two u32s, no padding.
        unsafe { put(m, scratch.va + (i * size_of::<SgElement>()) as u64, e) }?;
    }
    Ok(scratch)
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        self.iface.depth.set(self.iface.depth.get().saturating_sub(1));
    }
}

fn status(value: u64) -> NtStatus {
    NtStatus::from_ne_bytes(((value & 0xFFFF_FFFF) as u32).to_ne_bytes())
}

/// Calls routine `index` with `args` after the guest `Context`.
fn call(m: &mut Machine, nt: &mut Nt, iface: &ImageInterface, index: usize, args: &[u64]) -> Result<u64, Stop> {
    let mut all = vec![iface.guest.context];
    all.extend_from_slice(args);
    m.call(nt, iface.guest.routines[index], &all)
}

unsafe extern "system" fn reference(context: *mut c_void) {
    // SAFETY: the table's contract: `context` is its own Context.
    let iface = unsafe { interface(context) };
    let (taken, dropped) = iface.references.get();
    iface.references.set((taken + 1, dropped));
    active::with(|m, nt| call(m, nt, iface, REFERENCE, &[]));
}

unsafe extern "system" fn dereference(context: *mut c_void) {
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    let (taken, dropped) = iface.references.get();
    iface.references.set((taken, dropped + 1));
    active::with(|m, nt| call(m, nt, iface, DEREFERENCE, &[]));
}

/// Copies a `T` (plain data) into guest memory.
///
/// # Safety
/// `T` is a `repr(C)` structure of integers with no padding (the interface's
/// `SgElement`, `ChannelFormat`): all its bytes are initialised.
unsafe fn put<T: Copy>(m: &Machine, va: u64, value: &T) -> Result<(), Stop> {
    // SAFETY: the caller guarantees `T` has no padding, so every byte of
    // `value` is initialised; the slice covers exactly `value`.
    let bytes = unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) };
    m.write(va, bytes)
}

/// Reads a `T` (plain data whose every bit pattern is valid) from guest memory.
///
/// # Safety
/// `T` is a `repr(C)` structure of integers (the interface's `DmaConfig`):
/// every bit pattern is a valid value.
unsafe fn get<T: Copy + Default>(m: &Machine, va: u64) -> Result<T, Stop> {
    let mut value = T::default();
    // SAFETY: `T` is a `repr(C)` interface structure of integers, for which
    // any bytes are a valid value; the slice covers exactly `value`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(std::ptr::from_mut(&mut value).cast::<u8>(), size_of::<T>()) };
    m.read(va, bytes)?;
    Ok(value)
}

unsafe extern "system" fn get_dma_config(context: *mut c_void, channel: u32, config: *mut DmaConfig) -> NtStatus {
    if config.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    let answer = active::with(|m, nt| {
        let scratch = Scratch::new(iface, nt, m, size_of::<DmaConfig>() as u64)?;
        let st = status(call(m, nt, iface, GET_DMA_CONFIG, &[u64::from(channel), scratch.va])?);
        // SAFETY: DmaConfig is ten u32s.
        let value: DmaConfig = unsafe { get(m, scratch.va) }?;
        Ok((st, value))
    });
    let Some((st, value)) = answer else { return STATUS_DEVICE_REMOVED };
    // SAFETY: checked non-null; the caller's out-structure.
    unsafe { config.write(value) };
    st
}

unsafe extern "system" fn get_dma_adapter(
    context: *mut c_void,
    channel: u32,
    adapter: *mut *mut c_void,
    max_mapping_byte_count: *mut u32,
    map_registers: *mut u32,
) -> NtStatus {
    if adapter.is_null() || max_mapping_byte_count.is_null() || map_registers.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    let answer = active::with(|m, nt| {
        let scratch = Scratch::new(iface, nt, m, 16)?;
        let st = status(call(m, nt, iface, GET_DMA_ADAPTER, &[u64::from(channel), scratch.va, scratch.va + 8, scratch.va + 12])?);
        let guest_adapter = m.read_u64(scratch.va)?;
        let max = m.read_u32(scratch.va + 8)?;
        let registers = m.read_u32(scratch.va + 12)?;
        let host = if guest_adapter == 0 { Some(std::ptr::null_mut()) } else { (iface.translate_adapter)(nt, guest_adapter) };
        Ok((st, host, max, registers))
    });
    let Some((st, host, max, registers)) = answer else { return STATUS_DEVICE_REMOVED };
    let Some(host) = host else { return STATUS_INVALID_PARAMETER };
    // SAFETY: checked non-null; the caller's out-parameter.
    unsafe { adapter.write(host) };
    // SAFETY: as above.
    unsafe { max_mapping_byte_count.write(max) };
    // SAFETY: as above.
    unsafe { map_registers.write(registers) };
    st
}

/// `ProgramFramePart` (version 2): the elements and the `accepted` out
/// value through kernel-owned guest memory.
unsafe extern "system" fn program_frame_part(
    context: *mut c_void,
    channel: u32,
    tag: u32,
    elements: *const SgElement,
    element_count: u32,
    flags: u32,
    accepted: *mut u32,
) -> NtStatus {
    // SAFETY: the caller passes `element_count` elements at `elements`.
    let Some(list) = (unsafe { element_list(elements, element_count) }).filter(|_| !accepted.is_null()) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    let answer = active::with(|m, nt| {
        let scratch = scratch_with_elements(iface, nt, m, list, 8)?;
        let out = scratch.va + size_of_val(list) as u64;
        m.write_u32(out, u32::MAX)?;
        let args = [u64::from(channel), u64::from(tag), scratch.va, u64::from(element_count), u64::from(flags), out];
        let st = status(call(m, nt, iface, PROGRAM_FRAME_PART, &args)?);
        Ok((st, m.read_u32(out)?))
    });
    let Some((st, value)) = answer else { return STATUS_DEVICE_REMOVED };
    if st == capdma_interface::status::STATUS_SUCCESS {
        // SAFETY: checked non-null; the caller's out-value.
        unsafe { accepted.write(value) };
    }
    st
}

unsafe extern "system" fn program_frame(
    context: *mut c_void,
    channel: u32,
    tag: u32,
    elements: *const SgElement,
    element_count: u32,
) -> NtStatus {
    // SAFETY: the caller passes `element_count` elements at `elements`.
    let Some(list) = (unsafe { element_list(elements, element_count) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    active::with(|m, nt| {
        let scratch = scratch_with_elements(iface, nt, m, list, 0)?;
        let st = status(call(m, nt, iface, PROGRAM_FRAME, &[u64::from(channel), u64::from(tag), scratch.va, u64::from(element_count)])?);
        Ok(st)
    })
    .unwrap_or(STATUS_DEVICE_REMOVED)
}

/// The host address of guest `va`, when `[va, va + len)` is one run of
/// physically contiguous RAM (a common buffer is).
fn host_view(m: &Machine, va: u64, len: u64) -> Option<*mut u8> {
    let first = m.address_space().translate(va)?;
    let (start_va, start_gpa) = (va & !0xFFF, first & !0xFFF);
    let mut k = 0;
    while start_va + k * 4096 < va + len {
        let gpa = m.address_space().translate(start_va + k * 4096)?;
        if gpa != start_gpa + k * 4096 || !m.memory().is_ram(gpa, 4096) {
            return None;
        }
        k += 1;
    }
    Some(m.memory().host_base().wrapping_add(first as usize))
}

unsafe extern "system" fn get_slot_ring(context: *mut c_void, channel: u32, ring: *mut SlotRing) -> NtStatus {
    if ring.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    let answer = active::with(|m, nt| {
        let scratch = Scratch::new(iface, nt, m, size_of::<SlotRing>() as u64)?;
        let st = status(call(m, nt, iface, GET_SLOT_RING, &[u64::from(channel), scratch.va])?);
        let base = m.read_u64(scratch.va)?;
        let base_logical = m.read_u64(scratch.va + 8)?;
        let slot_count = m.read_u32(scratch.va + 16)?;
        let slot_stride = m.read_u32(scratch.va + 20)?;
        let slot_bytes = m.read_u32(scratch.va + 24)?;
        let line_pitch = m.read_u32(scratch.va + 28)?;
        let len = u64::from(slot_count) * u64::from(slot_stride);
        let host = if base == 0 { Some(std::ptr::null_mut()) } else { host_view(m, base, len) };
        Ok((st, host, SlotRing { base: std::ptr::null_mut(), base_logical, slot_count, slot_stride, slot_bytes, line_pitch }))
    });
    let Some((st, host, mut value)) = answer else { return STATUS_DEVICE_REMOVED };
    let Some(host) = host else {
        active::keep(Stop::Host("the slot ring the image returned is not one contiguous run of RAM".into()));
        return STATUS_DEVICE_REMOVED;
    };
    value.base = host;
    // SAFETY: checked non-null; the caller's out-structure.
    unsafe { ring.write(value) };
    st
}

unsafe extern "system" fn return_slot(context: *mut c_void, channel: u32, slot: u32) -> NtStatus {
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    active::with(|m, nt| Ok(status(call(m, nt, iface, RETURN_SLOT, &[u64::from(channel), u64::from(slot)])?)))
        .unwrap_or(STATUS_DEVICE_REMOVED)
}

unsafe extern "system" fn start_channel(context: *mut c_void, channel: u32, format: *const ChannelFormat) -> NtStatus {
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    let format = if format.is_null() {
        None
    } else {
        // SAFETY: non-null: the caller's in-structure.
        Some(unsafe { format.read() })
    };
    active::with(|m, nt| {
        let scratch = Scratch::new(iface, nt, m, size_of::<ChannelFormat>() as u64)?;
        let pointer = match format {
            Some(f) => {
                // SAFETY: ChannelFormat is six u32s.
                unsafe { put(m, scratch.va, &f) }?;
                scratch.va
            }
            None => 0,
        };
        let st = status(call(m, nt, iface, START_CHANNEL, &[u64::from(channel), pointer])?);
        Ok(st)
    })
    .unwrap_or(STATUS_DEVICE_REMOVED)
}

unsafe extern "system" fn stop_channel(context: *mut c_void, channel: u32) -> NtStatus {
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    active::with(|m, nt| Ok(status(call(m, nt, iface, STOP_CHANNEL, &[u64::from(channel)])?)))
        .unwrap_or(STATUS_DEVICE_REMOVED)
}

/// The host function the image's DPC calls as the completion callback:
/// `context` is the `Callback` registered; the `Completion` is copied to
/// the host and handed to the host callback, with the machine active.
fn completion_host(nt: &mut Nt, m: &mut Machine, context: u64) -> Result<u64, Stop> {
    let guest_completion = m.arg(1)?;
    let completion: Completion = get_completion(m, guest_completion)?;
    // SAFETY: `context` is the address of a `Callback` boxed in the
    // `ImageInterface`, which outlives the channel's registration.
    let callback = unsafe { &*(context as *const Callback) };
    active::enter(m, nt, || {
        // SAFETY: the host callback's contract: its context and a valid
        // `Completion` for the duration of the call.
        unsafe { (callback.callback)(callback.context, &raw const completion) };
    });
    Ok(0)
}

fn get_completion(m: &Machine, va: u64) -> Result<Completion, Stop> {
    Ok(Completion {
        channel: m.read_u32(va)?,
        kind: m.read_u32(va + 4)?,
        tag: m.read_u32(va + 8)?,
        bytes_written: m.read_u32(va + 12)?,
        status: status(u64::from(m.read_u32(va + 16)?)),
        frame_number: m.read_u32(va + 20)?,
        timestamp: i64::from_ne_bytes(m.read_u64(va + 24)?.to_ne_bytes()),
    })
}

unsafe extern "system" fn register_completion(
    context: *mut c_void,
    channel: u32,
    callback: Option<PfnCompletion>,
    callback_context: *mut c_void,
) -> NtStatus {
    // SAFETY: as in `reference`.
    let iface = unsafe { interface(context) };
    let host = callback.map(|callback| {
        // Stored first; the address the guest keeps is taken from the
        // stored box, which never moves again.
        let mut callbacks = iface.callbacks.borrow_mut();
        callbacks.push(Box::new(Callback { callback, context: callback_context }));
        callbacks.last().map_or(0, |stored| std::ptr::from_ref::<Callback>(stored) as u64)
    });
    active::with(|m, nt| {
        let (routine, guest_context) = match host {
            Some(address) => (nt.host_function(m, "capdma completion (host AVStream core)", completion_host, address, DISPATCH_LEVEL)?, address),
            None => (0, 0),
        };
        Ok(status(call(m, nt, iface, REGISTER_COMPLETION, &[u64::from(channel), routine, guest_context])?))
    })
    .unwrap_or(STATUS_DEVICE_REMOVED)
}
