//! [`KsPinPort`] over a `PKSPIN` and its `PKSSTREAM_POINTER`s: each method
//! is the DDI its name in the trait documentation says, with the pointer
//! checks the DDIs do not make.
use super::bindings::{
    KsPinAcquireProcessingMutex, KsPinAttemptProcessing, KsPinGetLeadingEdgeStreamPointer, KsPinReleaseProcessingMutex,
    KsStreamPointerAdvanceOffsets, KsStreamPointerAdvanceOffsetsAndUnlock, KsStreamPointerClone, KsStreamPointerDelete,
    KsStreamPointerUnlock, KSSTREAM_HEADER, KSSTREAM_POINTER_STATE, KSTIME, KS_FRAME_INFO, PKSPIN, PKSSTREAM_POINTER,
};
use super::ddi::{self, nt_success};
use super::descriptors::ulong_size_of;
use crate::ks_format::KS_VIDEO_FLAG_FRAME;
use crate::ports::{FrameCompletion, Irql, KsPinPort, PinEvent, StreamOffset};
use capdma_interface::status::{NtStatus, STATUS_INVALID_PARAMETER};
use capdma_interface::table::SgElement;
use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// One capture pin's queue.
#[derive(Debug)]
pub struct KsPort {
    pin: PKSPIN,
    /// The pin's `IKsReferenceClock` while it holds one (from `STOP ->
    /// ACQUIRE` to `-> STOP`), else null.
    clock: AtomicPtr<c_void>,
    /// The pin has `KSPIN_FLAG_GENERATE_MAPPINGS`: `OffsetOut` holds
    /// `KSMAPPING`s, else bytes.
    mappings: bool,
    /// The bus channel the pin streams from (named in its trace events).
    channel: u32,
}

impl KsPort {
    /// The port of `pin`, whose descriptor has `pin_flags`, streaming from `channel`.
    pub fn new(pin: PKSPIN, pin_flags: u32, channel: u32) -> Self {
        Self { pin, clock: AtomicPtr::new(ptr::null_mut()), mappings: pin_flags & crate::ks_format::KSPIN_FLAG_GENERATE_MAPPINGS != 0, channel }
    }
}

const fn boolean(value: bool) -> u8 {
    if value {
        1
    } else {
        0
    }
}

// SAFETY (for every `unsafe` block below): `self.pin` is the live pin this
// port was made for (the port lives in the pin's context, dropped at Close),
// and every `PKSSTREAM_POINTER` the core passes back is one this port
// returned (the leading edge or a clone) and has not deleted, which is the
// `KsPinPort` contract; the core calls each method at the IRQL the DDI
// allows (`<= DISPATCH_LEVEL`; the processing mutex at PASSIVE).
impl KsPinPort for KsPort {
    type StreamPointer = PKSSTREAM_POINTER;

    /// The core's report, written as an ETW event (`super::trace::pin_event`).
    fn report(&self, event: PinEvent) {
        super::trace::pin_event(self.channel, event);
    }

    fn acquire_reference_clock(&self) -> bool {
        // SAFETY: see the impl comment (PASSIVE, as the DDI requires).
        let clock = unsafe { super::clock::acquire(self.pin) };
        // A clock still held (an ACQUIRE without a STOP between) is given back.
        let old = self.clock.swap(clock, Ordering::AcqRel);
        // SAFETY: `old` came from `acquire` and is released once (swapped out).
        unsafe { super::clock::release(old) };
        !clock.is_null()
    }

    fn release_reference_clock(&self) {
        let clock = self.clock.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: `clock` came from `acquire` (or is null) and is released once (swapped out).
        unsafe { super::clock::release(clock) };
    }

    fn stream_time(&self) -> Option<i64> {
        let clock = self.clock.load(Ordering::Acquire);
        // SAFETY: a clock in the port is live until `release_reference_clock`,
        // which the core calls only once the bus no longer calls back (the
        // completion callback, the one caller at DISPATCH, is unregistered
        // at ACQUIRE -> STOP before the release).
        (!clock.is_null()).then(|| unsafe { super::clock::stream_time(clock) })
    }

    fn leading_edge(&self) -> Option<PKSSTREAM_POINTER> {
        // SAFETY: see the impl comment.
        let pointer = unsafe {
            KsPinGetLeadingEdgeStreamPointer(self.pin, KSSTREAM_POINTER_STATE::KSSTREAM_POINTER_STATE_LOCKED)
        };
        (!pointer.is_null()).then_some(pointer)
    }

    fn clone_pointer(&self, pointer: PKSSTREAM_POINTER) -> Result<PKSSTREAM_POINTER, NtStatus> {
        let mut clone: PKSSTREAM_POINTER = ptr::null_mut();
        // SAFETY: see the impl comment; no cancel callback, no context.
        let status = unsafe { KsStreamPointerClone(pointer, None, 0, &raw mut clone) };
        if !nt_success(status) {
            return Err(status);
        }
        if clone.is_null() {
            return Err(STATUS_INVALID_PARAMETER);
        }
        Ok(clone)
    }

    fn offset_out(&self, pointer: PKSSTREAM_POINTER) -> StreamOffset {
        // SAFETY: see the impl comment; `OffsetOut` is read by value.
        let offset = unsafe { (*pointer).OffsetOut };
        // Which union member is valid is the pin's mode: mappings with
        // KSPIN_FLAG_GENERATE_MAPPINGS, else bytes.
        let (data, mappings) = if self.mappings {
            // SAFETY: mapping mode: `Mappings` is the member KS wrote.
            let mappings = unsafe { offset.__bindgen_anon_1.Mappings };
            (ptr::null_mut(), mappings.cast_const().cast::<SgElement>())
        } else {
            // SAFETY: byte mode: `Data` is the member KS wrote.
            (unsafe { offset.__bindgen_anon_1.Data }, ptr::null())
        };
        StreamOffset { data, mappings, count: offset.Count, remaining: offset.Remaining }
    }

    fn frame_extent(&self, pointer: PKSSTREAM_POINTER) -> u32 {
        // SAFETY: see the impl comment.
        let header = unsafe { (*pointer).StreamHeader };
        if header.is_null() {
            return 0;
        }
        // SAFETY: a live pointer's stream header is valid.
        unsafe { (*header).FrameExtent }
    }

    fn advance_offsets(&self, pointer: PKSSTREAM_POINTER, out_used: u32, eject: bool) -> Result<(), NtStatus> {
        // SAFETY: see the impl comment.
        let status = unsafe { KsStreamPointerAdvanceOffsets(pointer, 0, out_used, boolean(eject)) };
        if nt_success(status) {
            Ok(())
        } else {
            Err(status)
        }
    }

    fn advance_offsets_and_unlock(&self, pointer: PKSSTREAM_POINTER, out_used: u32, eject: bool) {
        // SAFETY: see the impl comment.
        unsafe { KsStreamPointerAdvanceOffsetsAndUnlock(pointer, 0, out_used, boolean(eject)) };
    }

    fn unlock(&self, pointer: PKSSTREAM_POINTER, eject: bool) {
        // SAFETY: see the impl comment.
        unsafe { KsStreamPointerUnlock(pointer, boolean(eject)) };
    }

    /// Writes `DataUsed`, `PresentationTime` (100-ns units, numerator and
    /// denominator 1), `Duration`, the `OptionsFlags` bits of
    /// [`FrameCompletion::options_flags`] and, when the client's header has
    /// room for one (`Size >= sizeof(KSSTREAM_HEADER) + sizeof(KS_FRAME_INFO)`),
    /// the `KS_FRAME_INFO` extended header that follows it
    /// (`ExtendedHeaderSize`, `dwFrameFlags = KS_VIDEO_FLAG_FRAME`,
    /// `PictureNumber`, `DropCount`).
    fn complete_frame(&self, pointer: PKSSTREAM_POINTER, completion: &FrameCompletion) {
        // SAFETY: see the impl comment.
        let header = unsafe { (*pointer).StreamHeader };
        // SAFETY: the pointer (a locked leading edge or a clone) references
        // its frame's stream header, which KS keeps until the last pointer
        // to the frame goes; only this pin writes it meanwhile.
        let Some(header) = (unsafe { header.as_mut() }) else {
            return;
        };
        header.DataUsed = completion.data_used;
        header.PresentationTime = KSTIME { Time: completion.presentation_time, Numerator: 1, Denominator: 1 };
        header.Duration = completion.duration;
        header.OptionsFlags |= completion.options_flags();
        if header.Size as usize >= size_of::<KSSTREAM_HEADER>() + size_of::<KS_FRAME_INFO>() {
            let info = ptr::from_mut(header).wrapping_add(1).cast::<KS_FRAME_INFO>();
            // SAFETY: the extended header is inside the header's `Size`
            // bytes (checked), 8-aligned after the 0x38-byte header
            // (asserted in `bindings`), written by this pin alone.
            let info = unsafe { &mut *info };
            info.ExtendedHeaderSize = ulong_size_of::<KS_FRAME_INFO>();
            info.dwFrameFlags = KS_VIDEO_FLAG_FRAME;
            info.PictureNumber = completion.picture_number;
            info.DropCount = completion.drop_count;
        }
    }

    fn delete(&self, pointer: PKSSTREAM_POINTER) {
        // SAFETY: see the impl comment; the core deletes each pointer once.
        unsafe { KsStreamPointerDelete(pointer) };
    }

    fn attempt_processing(&self, asynchronous: bool) {
        // SAFETY: see the impl comment.
        unsafe { KsPinAttemptProcessing(self.pin, boolean(asynchronous)) };
    }

    fn raise_to_dispatch(&self) -> Irql {
        ddi::raise_to_dispatch()
    }

    fn lower_irql(&self, old: Irql) {
        ddi::lower_irql(old);
    }

    fn wait_briefly(&self) {
        ddi::delay_one_millisecond();
    }

    fn acquire_processing_mutex(&self) {
        // SAFETY: see the impl comment; called at PASSIVE from
        // SetDeviceState, never from Process (the mutex is not recursive).
        unsafe { KsPinAcquireProcessingMutex(self.pin) };
    }

    fn release_processing_mutex(&self) {
        // SAFETY: see the impl comment; paired with the acquire.
        unsafe { KsPinReleaseProcessingMutex(self.pin) };
    }
}
