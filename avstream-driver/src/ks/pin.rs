//! The capture pin's KS entry points: `KSPIN_DISPATCH` (Create, Close,
//! Process, `SetDataFormat`, `SetDeviceState`), the descriptor's intersect
//! handler and the `KSPROPERTY_DROPPEDFRAMES_CURRENT` handler. Each one
//! hands the KS structures to the core's [`CapturePin`] (or, before the pin
//! exists, to the core's `DeviceSetup`/`format` functions) and returns its
//! answer.
//!
//! The pin lives in non-paged pool (`ExAllocatePool2`) from Create to Close,
//! its address in `KSPIN.Context`: it never moves, which the core needs
//! (the bus calls back with its address).
use super::bindings::{
    _KsEdit, KsGetDevice, KsGetPinFromIrp, KSALLOCATOR_FRAMING_EX, KSATTRIBUTE_LIST, KSDATAFORMAT, KSDATARANGE,
    KSPIN_DESCRIPTOR_EX, KSSTATE, PKSDATAFORMAT, PKSDATARANGE, PKSIDENTIFIER, PKSMULTIPLE_ITEM, PKSPIN, PKSP_PIN,
};
use super::ddi::{self, nt_success, POOL_TAG};
use super::descriptors::{self, ulong_size_of};
use super::device;
use super::port::KsPort;
use crate::copy::VectorUnit;
use crate::format::{intersect_into, pixel_of_subtype, VideoFormat};
use crate::ks_format::{KsDataFormat, KsProperty, KsPropertyDroppedFramesCurrentS};
use crate::pin::CapturePin;
use crate::state::KsState;
use capdma_interface::status::{
    STATUS_BUFFER_TOO_SMALL, STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER, STATUS_NO_MATCH, STATUS_PENDING, STATUS_SUCCESS,
};
use core::ffi::c_void;
use core::mem::size_of;
use core::pin::Pin;
use core::ptr;
use wdk_sys::{NTSTATUS, PIRP, PULONG, PVOID, ULONG};

/// The core's pin over the KS port.
type KsCapturePin = CapturePin<KsPort>;

const _: () = assert!(core::mem::align_of::<KsCapturePin>() <= 16, "pool memory is 16-byte aligned");

/// The pin object in `pin`'s context (set by [`create`], cleared by [`close`]).
///
/// # Safety
/// `pin` must be a live `PKSPIN` of this driver's capture pin whose Create
/// succeeded and whose Close has not run.
unsafe fn capture_pin<'a>(pin: PKSPIN) -> Option<&'a KsCapturePin> {
    if pin.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees the pin.
    let object = unsafe { (*pin).Context }.cast::<KsCapturePin>();
    // SAFETY: the context is the pool allocation `create` initialised (or null).
    unsafe { object.as_ref() }
}

/// The `FormatSize` bytes of a `KSDATAFORMAT`/`KSDATARANGE` KS handed us.
///
/// # Safety
/// `format` must be null or point at a format whose `FormatSize` bytes are
/// readable for `'a`: KS checks a format's and a range's `FormatSize`
/// against the buffer it came in before it calls a minidriver with it.
unsafe fn format_bytes<'a>(format: *const KSDATAFORMAT) -> Option<&'a [u8]> {
    if format.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees the format; `FormatSize` is its first
    // field (read as the first `ULONG` of either union member).
    let size = unsafe { format.cast::<ULONG>().read_unaligned() } as usize;
    if size < size_of::<KSDATAFORMAT>() {
        return None;
    }
    // SAFETY: `size` readable bytes (the caller's guarantee).
    Some(unsafe { core::slice::from_raw_parts(format.cast::<u8>(), size) })
}

/// The resources of `pin`'s device (started, not removed), from its context.
///
/// # Safety
/// `pin` must be a live pin of this driver.
unsafe fn resources_of(pin: PKSPIN) -> Option<device::PinResources> {
    // SAFETY: the caller guarantees the pin; its device is live while it is.
    let device = unsafe { KsGetDevice(pin.cast()) };
    // SAFETY: the device of our pin is ours, its Add succeeded.
    let context = unsafe { device::context(device) }?;
    context.pin_resources()
}

/// The pin's connection format (`KSPIN.ConnectionFormat`), as bytes.
///
/// # Safety
/// `pin` must be a live pin of this driver.
unsafe fn connection_format<'a>(pin: PKSPIN) -> Option<&'a [u8]> {
    // SAFETY: the caller guarantees the pin.
    let format = unsafe { (*pin).ConnectionFormat };
    // SAFETY: KS validated the connection format against the create (or
    // set-format) request buffer; it lives as long as the pin's format.
    unsafe { format_bytes(format.cast_const()) }
}

/// Gives the pin its own copy of its descriptor and of the descriptor's
/// allocator framing (`_KsEdit`, memory in the pin's object bag) and sets
/// the framing's frame size to the format's image size, so the allocator
/// makes frames of the negotiated size rather than of the largest one.
///
/// # Safety
/// `pin` must be live, in its Create dispatch (AVStream holds the filter
/// control mutex, which descriptor edits need).
unsafe fn edit_framing(pin: PKSPIN, frame_size: ULONG) -> NTSTATUS {
    // SAFETY: the caller guarantees the pin.
    let bag = unsafe { (*pin).Bag };
    // SAFETY: as above.
    let descriptor_slot = unsafe { &raw mut (*pin).Descriptor };
    // SAFETY: `_KsEdit` replaces `Descriptor` with a copy in the pin's bag
    // (same size, so all of it).
    let status = unsafe {
        _KsEdit(
            bag,
            descriptor_slot.cast::<PVOID>(),
            ulong_size_of::<KSPIN_DESCRIPTOR_EX>(),
            ulong_size_of::<KSPIN_DESCRIPTOR_EX>(),
            POOL_TAG,
        )
    };
    if !nt_success(status) {
        return status;
    }
    // SAFETY: as above.
    let descriptor = unsafe { *descriptor_slot }.cast_mut();
    // SAFETY: `Descriptor` is now the pin's own writable copy.
    let descriptor = unsafe { &mut *descriptor };
    if descriptor.AllocatorFraming.is_null() {
        return STATUS_SUCCESS;
    }
    // SAFETY: `AllocatorFraming` is replaced the same way.
    let status = unsafe {
        _KsEdit(
            bag,
            (&raw mut descriptor.AllocatorFraming).cast::<PVOID>(),
            ulong_size_of::<KSALLOCATOR_FRAMING_EX>(),
            ulong_size_of::<KSALLOCATOR_FRAMING_EX>(),
            POOL_TAG,
        )
    };
    if nt_success(status) {
        // SAFETY: the framing is now the pin's own copy; nothing reads it
        // while Create runs (the allocator is made at STOP -> ACQUIRE).
        let framing = unsafe { &mut *descriptor.AllocatorFraming.cast_mut() };
        descriptors::set_frame_size(framing, frame_size);
    }
    status
}

/// `AVStrMiniPinCreate`: allocates the core's pin for the connection
/// format (which `set_data_format` already accepted), in this device's
/// mode, edits the pin's framing for the format, and stores the pin in
/// `KSPIN.Context`. PASSIVE, filter control mutex held.
pub unsafe extern "C" fn create(pin: PKSPIN, irp: PIRP) -> NTSTATUS {
    // SAFETY: the caller's guarantees, passed on.
    let status = unsafe { create_inner(pin, irp) };
    if !super::ddi::nt_success(status) {
        super::trace::failure(super::trace::Area::Streaming, "AVStrMiniPinCreate", status);
    }
    status
}

/// [`create`] before its failure is traced.
///
/// # Safety
/// As [`create`].
unsafe fn create_inner(pin: PKSPIN, _irp: PIRP) -> NTSTATUS {
    // SAFETY: KS passes the live pin being created.
    let Some(resources) = (unsafe { resources_of(pin) }) else {
        return STATUS_DEVICE_NOT_READY;
    };
    // SAFETY: as above.
    let Some(bytes) = (unsafe { connection_format(pin) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let format = match resources.setup.validate_format(bytes) {
        Ok(format) => format,
        Err(status) => return status,
    };
    // SAFETY: in the pin's Create dispatch.
    let status = unsafe { edit_framing(pin, resources.setup.framing_for(&format).frame_size) };
    if !nt_success(status) {
        return status;
    }
    // SAFETY: KS passes the live pin being created.
    let descriptor = unsafe { (*pin).Descriptor };
    // SAFETY: the pin's descriptor is live (the pin's own copy now).
    let flags = unsafe { (*descriptor).Flags };
    let memory = ddi::allocate(size_of::<KsCapturePin>());
    if memory.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let object = memory.cast::<KsCapturePin>();
    // SAFETY: fresh pool memory of the pin's size and alignment (asserted).
    unsafe {
        object.write(CapturePin::new(KsPort::new(pin, flags, resources.bus.channel()), resources.bus, &resources.setup, VectorUnit::Sse2));
    }
    // SAFETY: initialised just above; not yet shared.
    let status = match unsafe { &*object }.set_data_format(bytes) {
        Ok(_) => STATUS_SUCCESS,
        Err(status) => status,
    };
    if status != STATUS_SUCCESS {
        // SAFETY: the pin object was never published: drop it once.
        unsafe { ptr::drop_in_place(object) };
        // SAFETY: and free its memory once.
        unsafe { ddi::free(memory) };
        return status;
    }
    // SAFETY: KS hands `Context` to the minidriver (preset to the filter's
    // context, which this driver does not use).
    unsafe { (*pin).Context = memory };
    STATUS_SUCCESS
}

/// `AVStrMiniPinClose`: drops the core's pin (which walks it to
/// `KSSTATE_STOP` and unregisters its completion callback first) and frees
/// it. PASSIVE.
pub unsafe extern "C" fn close(pin: PKSPIN, _irp: PIRP) -> NTSTATUS {
    // SAFETY: KS passes the live pin, after a successful Create.
    let memory = unsafe { (*pin).Context };
    if memory.is_null() {
        return STATUS_SUCCESS;
    }
    // SAFETY: as above; cleared first, so nothing finds the object again.
    unsafe { (*pin).Context = ptr::null_mut() };
    // SAFETY: no dispatch of the pin runs any more; dropped once.
    unsafe { ptr::drop_in_place(memory.cast::<KsCapturePin>()) };
    // SAFETY: the allocation of `create`, freed once.
    unsafe { ddi::free(memory) };
    STATUS_SUCCESS
}

/// `AVStrMiniPinSetDataFormat`: at pin creation (`OldFormat == NULL`,
/// called before Create, `KSPIN.Context` not yet ours) the format is
/// checked against the device (`DeviceSetup::validate_format`); later,
/// `CapturePin::change_data_format` (`KSSTATE_STOP` only): the pin's
/// framing is edited for the new size, and the core takes the format only
/// when those edits succeeded. PASSIVE.
pub unsafe extern "C" fn set_data_format(
    pin: PKSPIN,
    old_format: PKSDATAFORMAT,
    old_attribute_list: PKSMULTIPLE_ITEM,
    data_range: *const KSDATARANGE,
    attribute_range: *const KSATTRIBUTE_LIST,
) -> NTSTATUS {
    // SAFETY: the caller's guarantees, passed on.
    let status = unsafe { set_data_format_inner(pin, old_format, old_attribute_list, data_range, attribute_range) };
    if !super::ddi::nt_success(status) {
        super::trace::failure(super::trace::Area::Streaming, "AVStrMiniPinSetDataFormat", status);
    }
    status
}

/// [`set_data_format`] before its failure is traced.
///
/// # Safety
/// As [`set_data_format`].
unsafe fn set_data_format_inner(
    pin: PKSPIN,
    old_format: PKSDATAFORMAT,
    _old_attribute_list: PKSMULTIPLE_ITEM,
    _data_range: *const KSDATARANGE,
    _attribute_range: *const KSATTRIBUTE_LIST,
) -> NTSTATUS {
    // SAFETY: KS passes the live pin.
    let Some(bytes) = (unsafe { connection_format(pin) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let result = if old_format.is_null() {
        // SAFETY: KS passes the live pin.
        let Some(resources) = (unsafe { resources_of(pin) }) else {
            return STATUS_DEVICE_NOT_READY;
        };
        resources.setup.validate_format(bytes)
    } else {
        // SAFETY: a format change of a created pin.
        let Some(object) = (unsafe { capture_pin(pin) }) else {
            return STATUS_INVALID_DEVICE_REQUEST;
        };
        // SAFETY: KS passes the live pin.
        let Some(resources) = (unsafe { resources_of(pin) }) else {
            return STATUS_DEVICE_NOT_READY;
        };
        // The allocator is made at STOP -> ACQUIRE: its framing follows the
        // new size. The core commits the format only once the edits
        // succeeded: a refused change leaves KS on the old connection
        // format, and the pin must stay on it too.
        object.change_data_format(bytes, |format| {
            // SAFETY: the pin's own descriptor copy (`_KsEdit` keeps an item
            // already in the bag), edited under the filter control mutex
            // AVStream holds for SetDataFormat.
            match unsafe { edit_framing(pin, resources.setup.framing_for(format).frame_size) } {
                status if nt_success(status) => Ok(()),
                status => Err(status),
            }
        })
    };
    match result {
        Ok(_) => STATUS_SUCCESS,
        Err(status) => status,
    }
}

/// `AVStrMiniPinSetDeviceState(Pin, ToState, FromState)`:
/// `CapturePin::set_device_state`. PASSIVE, filter control mutex held.
pub unsafe extern "C" fn set_device_state(pin: PKSPIN, to: KSSTATE::Type, from: KSSTATE::Type) -> NTSTATUS {
    // SAFETY: the caller's guarantees, passed on.
    let status = unsafe { set_device_state_inner(pin, to, from) };
    if !super::ddi::nt_success(status) {
        super::trace::failure(super::trace::Area::Streaming, "AVStrMiniPinSetDeviceState", status);
    }
    status
}

/// [`set_device_state`] before its failure is traced.
///
/// # Safety
/// As [`set_device_state`].
unsafe fn set_device_state_inner(pin: PKSPIN, to: KSSTATE::Type, from: KSSTATE::Type) -> NTSTATUS {
    let state = |raw: KSSTATE::Type| u32::try_from(raw).ok().and_then(KsState::from_raw);
    let (Some(to), Some(from)) = (state(to), state(from)) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: KS passes the live, created pin.
    let Some(object) = (unsafe { capture_pin(pin) }) else {
        return STATUS_INVALID_DEVICE_REQUEST;
    };
    // SAFETY: the object is in pool memory that does not move until Close
    // frees it, after the core's Drop.
    let pinned = unsafe { Pin::new_unchecked(object) };
    pinned.set_device_state(to, from)
}

/// `AVStrMiniPinProcess`: `CapturePin::process_with_unit(VectorUnit::Sse2)`.
/// PASSIVE (no `KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING`).
///
/// The common-buffer copy (`crate::copy::copy_frame`, default
/// `CopyTuning`) streams with 16-byte `MOVNTDQ` stores whether it is given
/// `Sse2` or `Avx2` (32-byte stores only with `CopyTuning::avx2_wide_stores`,
/// which the driver does not set: the benchmark found them no faster,
/// `docs/benchmark.md`), so `Avx2` would buy nothing. `Sse2` uses only XMM
/// registers, which x64 kernel code may use without
/// `KeSaveExtendedProcessorState`; so no extended state is saved here. A
/// change to wide stores must pass `VectorUnit::Avx2` only between a
/// successful `KeSaveExtendedProcessorState(XSTATE_MASK_AVX)` and
/// `KeRestoreExtendedProcessorState` (the `VectorUnit::Avx2` contract).
pub unsafe extern "C" fn process(pin: PKSPIN) -> NTSTATUS {
    // SAFETY: KS passes the live, created pin.
    let Some(object) = (unsafe { capture_pin(pin) }) else {
        return STATUS_PENDING;
    };
    object.process_with_unit(VectorUnit::Sse2)
}

/// The pin's intersect handler (`PFNKSINTERSECTHANDLEREX`): for one of our
/// ranges (`matching_data_range`, its pixel format by subtype) and the
/// caller's `data_range`, `format::intersect_into` with the range's default
/// format as the preference; the answer, its size and status follow the KS
/// protocol (size query: `STATUS_BUFFER_OVERFLOW`). PASSIVE.
pub unsafe extern "C" fn intersect(
    _context: PVOID,
    _irp: PIRP,
    _pin: PKSP_PIN,
    data_range: PKSDATARANGE,
    matching_data_range: PKSDATARANGE,
    data_buffer_size: ULONG,
    data: PVOID,
    data_size: PULONG,
) -> NTSTATUS {
    if matching_data_range.is_null() {
        return STATUS_NO_MATCH;
    }
    // SAFETY: the matching range is one of our static `KS_DATARANGE_VIDEO`s
    // (at least a `KSDATARANGE`); read by value, any alignment.
    let ours = unsafe { ptr::read_unaligned(matching_data_range.cast_const().cast::<KsDataFormat>()) };
    let Some(pixel) = pixel_of_subtype(&ours.sub_format) else {
        return STATUS_NO_MATCH;
    };
    // SAFETY: KS checked the caller's range against its request buffer.
    let Some(caller) = (unsafe { format_bytes(data_range.cast_const()) }) else {
        return STATUS_BUFFER_TOO_SMALL;
    };
    let out: &mut [u8] = if data.is_null() || data_buffer_size == 0 {
        &mut []
    } else {
        // SAFETY: KS passes the request's output buffer of `data_buffer_size` bytes.
        unsafe { core::slice::from_raw_parts_mut(data.cast::<u8>(), data_buffer_size as usize) }
    };
    let outcome = intersect_into(caller, pixel, &VideoFormat::default_for(pixel), out);
    if !data_size.is_null() {
        // SAFETY: KS passes a valid `DataSize` out-pointer.
        unsafe { *data_size = outcome.data_size };
    }
    outcome.status
}

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT` get handler (`PFNKSHANDLER`): the
/// core's `dropped_frames_current().to_property(request)`. KS has checked
/// the request and the buffer against the item's `MinProperty`/`MinData`
/// (both `sizeof(KSPROPERTY_DROPPEDFRAMES_CURRENT_S)`). PASSIVE.
pub unsafe extern "C" fn dropped_frames_current(irp: PIRP, request: PKSIDENTIFIER, data: *mut c_void) -> NTSTATUS {
    if request.is_null() || data.is_null() {
        super::trace::failure(super::trace::Area::Streaming, "KSPROPERTY_DROPPEDFRAMES_CURRENT", STATUS_INVALID_PARAMETER);
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: KS passes the property IRP of one of our pins.
    let pin = unsafe { KsGetPinFromIrp(irp) };
    // SAFETY: the IRP's pin is live for the IRP.
    let Some(object) = (unsafe { capture_pin(pin) }) else {
        super::trace::failure(super::trace::Area::Streaming, "KSPROPERTY_DROPPEDFRAMES_CURRENT", STATUS_INVALID_DEVICE_REQUEST);
        return STATUS_INVALID_DEVICE_REQUEST;
    };
    // SAFETY: the request is at least a KSPROPERTY (MinProperty), read by value.
    let property = unsafe { ptr::read_unaligned(request.cast_const().cast::<KsProperty>()) };
    let answer = object.dropped_frames_current().to_property(property);
    // SAFETY: `data` has MinData = sizeof(KSPROPERTY_DROPPEDFRAMES_CURRENT_S)
    // writable bytes.
    unsafe { ptr::write_unaligned(data.cast::<KsPropertyDroppedFramesCurrentS>(), answer) };
    // SAFETY: the IRP is ours to fill until the handler returns.
    unsafe { (*irp).IoStatus.Information = size_of::<KsPropertyDroppedFramesCurrentS>() as u64 };
    STATUS_SUCCESS
}
