//! The `extern "system"` thunks of the [`CapdmaBusInterface`] table, generic
//! over the platform, and the table itself ([`interface_table`]).
//!
//! Each thunk opens the same way ([`thunk!`]): the [`BusDevice`] behind
//! `Context` (null or misaligned: `STATUS_INVALID_PARAMETER`), every
//! pointer argument non-null (else `STATUS_INVALID_PARAMETER`); a thunk with
//! one out-pointer then writes the method's answer there or returns its
//! error ([`answer`]). The methods (`super`) do the rest.
use crate::config::MAX_DESCRIPTOR_ENTRIES;
use crate::device::BusDevice;
use crate::ports::BusPlatform;
use capdma_interface::negotiate::Negotiated;
use capdma_interface::status::{NtStatus, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, DmaConfig, InterfaceHeader, PfnCompletion, SgElement, SlotRing, CAPDMA_PART_END,
};
use core::ffi::c_void;

/// The shared opening of a thunk.
///
/// * `thunk!(device P, context, ptr…)`: the `&BusDevice<P>` behind
///   `context`, after checking that each `ptr` is non-null; returns
///   `STATUS_INVALID_PARAMETER` from the thunk otherwise.
/// * `thunk!(answer P, context, out, |dev| result)`: as `device` with `out`,
///   then `result` (a `Result<T, NtStatus>`) written to `out` as
///   [`answer`] does.
///
/// Only for use inside an `unsafe extern "system" fn` whose contract says
/// `context` is as for [`device`] and each `ptr` is, when non-null, valid
/// as documented by that thunk (writable for an `out`).
macro_rules! thunk {
    (device $p:ident, $context:ident $(, $ptr:ident)*) => {{
        // SAFETY: the calling thunk's contract: `context` is null or the
        // `Context` of a live, unmoved `BusDevice<P>` (see `device`).
        let Some(dev) = (unsafe { device::<$p>($context) }) else {
            return STATUS_INVALID_PARAMETER;
        };
        $(
            if $ptr.is_null() {
                return STATUS_INVALID_PARAMETER;
            }
        )*
        dev
    }};
    (answer $p:ident, $context:ident, $out:ident, |$dev:ident| $result:expr) => {{
        let $dev = thunk!(device $p, $context, $out);
        // SAFETY: `out` is non-null (checked above) and, by the calling
        // thunk's contract, writable.
        unsafe { answer($out, $result) }
    }};
}

/// The table for `negotiated`, its `Context` the address of `dev`.
pub(super) fn interface_table<P: BusPlatform>(dev: &BusDevice<P>, negotiated: Negotiated) -> CapdmaBusInterface {
    CapdmaBusInterface {
        header: InterfaceHeader {
            size: negotiated.size,
            version: negotiated.version,
            context: core::ptr::from_ref(dev).cast_mut().cast::<c_void>(),
            interface_reference: Some(thunk_reference::<P>),
            interface_dereference: Some(thunk_dereference::<P>),
        },
        get_dma_config: Some(thunk_get_dma_config::<P>),
        get_dma_adapter: Some(thunk_get_dma_adapter::<P>),
        program_frame: Some(thunk_program_frame::<P>),
        get_slot_ring: Some(thunk_get_slot_ring::<P>),
        return_slot: Some(thunk_return_slot::<P>),
        start_channel: Some(thunk_start_channel::<P>),
        stop_channel: Some(thunk_stop_channel::<P>),
        register_completion: Some(thunk_register_completion::<P>),
        program_frame_part: Some(thunk_program_frame_part::<P>),
    }
}

/// The device behind a `Context`, if the pointer is non-null and aligned.
///
/// # Safety
/// A non-null `context` must be the `Context` of a table this crate filled
/// for a `BusDevice<P>` that is still alive and has not moved (the
/// interface-reference contract).
unsafe fn device<'a, P: BusPlatform>(context: *mut c_void) -> Option<&'a BusDevice<P>> {
    let ptr = context.cast_const().cast::<BusDevice<P>>();
    if ptr.is_null() || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned; by this function's contract it points to
    // a live `BusDevice<P>`, which is only ever accessed through `&`.
    Some(unsafe { &*ptr })
}

/// `InterfaceReference`.
///
/// # Safety
/// `context` as for [`device`].
unsafe extern "system" fn thunk_reference<P: BusPlatform>(context: *mut c_void) {
    // SAFETY: forwarded contract of this thunk.
    if let Some(dev) = unsafe { device::<P>(context) } {
        dev.reference();
    }
}

/// `InterfaceDereference`.
///
/// # Safety
/// `context` as for [`device`].
unsafe extern "system" fn thunk_dereference<P: BusPlatform>(context: *mut c_void) {
    // SAFETY: forwarded contract of this thunk.
    if let Some(dev) = unsafe { device::<P>(context) } {
        dev.dereference();
    }
}

/// Writes the value of `result` to `out` and returns `STATUS_SUCCESS`, or
/// returns the error and writes nothing.
///
/// # Safety
/// `out` is non-null and valid for an (unaligned) write of a `T`.
unsafe fn answer<T>(out: *mut T, result: Result<T, NtStatus>) -> NtStatus {
    match result {
        Ok(value) => {
            // SAFETY: the caller's contract; unaligned-safe.
            unsafe { out.write_unaligned(value) };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

/// `GetDmaConfig`.
///
/// # Safety
/// `context` as for [`device`]; a non-null `config` points to a writable `DmaConfig`.
unsafe extern "system" fn thunk_get_dma_config<P: BusPlatform>(
    context: *mut c_void,
    channel: u32,
    config: *mut DmaConfig,
) -> NtStatus {
    thunk!(answer P, context, config, |dev| dev.dma_config(channel))
}

/// `GetDmaAdapter`.
///
/// # Safety
/// `context` as for [`device`]; non-null out-pointers point to writable values.
unsafe extern "system" fn thunk_get_dma_adapter<P: BusPlatform>(
    context: *mut c_void,
    channel: u32,
    adapter: *mut *mut c_void,
    max_mapping_byte_count: *mut u32,
    map_registers: *mut u32,
) -> NtStatus {
    let dev = thunk!(device P, context, adapter, max_mapping_byte_count, map_registers);
    match dev.dma_adapter(channel) {
        Ok((raw, max_mapping, registers)) => {
            // SAFETY: non-null, writable per the caller's contract.
            unsafe { adapter.write_unaligned(raw) };
            // SAFETY: as above.
            unsafe { max_mapping_byte_count.write_unaligned(max_mapping) };
            // SAFETY: as above.
            unsafe { map_registers.write_unaligned(registers) };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

/// `ProgramFrame`.
///
/// # Safety
/// `context` as for [`device`]; a non-null `elements` points to
/// `element_count` readable `SgElement`s (`KSMAPPING`s).
unsafe extern "system" fn thunk_program_frame<P: BusPlatform>(
    context: *mut c_void,
    channel: u32,
    tag: u32,
    elements: *const SgElement,
    element_count: u32,
) -> NtStatus {
    let dev = thunk!(device P, context, elements);
    if !elements.is_aligned() || element_count == 0 || element_count > MAX_DESCRIPTOR_ENTRIES {
        return STATUS_INVALID_PARAMETER;
    }
    let Ok(len) = usize::try_from(element_count) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: non-null and aligned; the caller guarantees `element_count`
    // readable elements that stay unchanged during the call; `len` is at
    // most 65536 elements (1 MiB), so the slice size fits `isize`.
    let elements = unsafe { core::slice::from_raw_parts(elements, len) };
    dev.program_frame(channel, tag, elements)
}

/// `ProgramFramePart` (version 2).
///
/// # Safety
/// `context` as for [`device`]; a non-null `elements` points to
/// `element_count` readable `SgElement`s (`KSMAPPING`s); a non-null
/// `accepted` points to a writable `ULONG`.
unsafe extern "system" fn thunk_program_frame_part<P: BusPlatform>(
    context: *mut c_void,
    channel: u32,
    tag: u32,
    elements: *const SgElement,
    element_count: u32,
    flags: u32,
    accepted: *mut u32,
) -> NtStatus {
    let dev = thunk!(device P, context, elements, accepted);
    if !elements.is_aligned() || element_count == 0 {
        return STATUS_INVALID_PARAMETER;
    }
    // Elements beyond what any ring holds are never accepted: read no more.
    let Ok(len) = usize::try_from(element_count.min(MAX_DESCRIPTOR_ENTRIES)) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: non-null and aligned; the caller guarantees `element_count`
    // (>= `len`) readable elements unchanged during the call; `len` is at
    // most 65536 elements (1 MiB), so the slice size fits `isize`.
    let elements = unsafe { core::slice::from_raw_parts(elements, len) };
    // A frame's end is only reached with all of its elements.
    let flags = if len < element_count as usize { flags & !CAPDMA_PART_END } else { flags };
    // SAFETY: `accepted` is non-null and writable per the caller's contract.
    unsafe { answer(accepted, dev.program_frame_part(channel, tag, elements, flags)) }
}

/// `GetSlotRing`.
///
/// # Safety
/// `context` as for [`device`]; a non-null `ring` points to a writable `SlotRing`.
unsafe extern "system" fn thunk_get_slot_ring<P: BusPlatform>(
    context: *mut c_void,
    channel: u32,
    ring: *mut SlotRing,
) -> NtStatus {
    thunk!(answer P, context, ring, |dev| dev.slot_ring(channel))
}

/// `ReturnSlot`.
///
/// # Safety
/// `context` as for [`device`].
unsafe extern "system" fn thunk_return_slot<P: BusPlatform>(context: *mut c_void, channel: u32, slot: u32) -> NtStatus {
    thunk!(device P, context).return_slot(channel, slot)
}

/// `StartChannel`.
///
/// # Safety
/// `context` as for [`device`]; a non-null `format` points to a readable `ChannelFormat`.
unsafe extern "system" fn thunk_start_channel<P: BusPlatform>(
    context: *mut c_void,
    channel: u32,
    format: *const ChannelFormat,
) -> NtStatus {
    let dev = thunk!(device P, context, format);
    // SAFETY: non-null and readable per the caller's contract; a plain-integer
    // struct, read unaligned-safe into a local copy.
    let format = unsafe { format.read_unaligned() };
    dev.start_channel(channel, &format)
}

/// `StopChannel`.
///
/// # Safety
/// `context` as for [`device`].
unsafe extern "system" fn thunk_stop_channel<P: BusPlatform>(context: *mut c_void, channel: u32) -> NtStatus {
    thunk!(device P, context).stop_channel(channel)
}

/// `RegisterCompletion`.
///
/// # Safety
/// `context` as for [`device`]; `callback` must be callable with
/// `callback_context` at `DISPATCH_LEVEL` until unregistered.
unsafe extern "system" fn thunk_register_completion<P: BusPlatform>(
    context: *mut c_void,
    channel: u32,
    callback: Option<PfnCompletion>,
    callback_context: *mut c_void,
) -> NtStatus {
    thunk!(device P, context).register_completion(channel, callback, callback_context)
}
