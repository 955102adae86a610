//! The kernel-streaming port the AVStream core is written against.
//!
//! One [`KsPinPort`] is one capture pin (`PKSPIN`). The Windows glue
//! implements it with the `Ks*` stream-pointer DDIs; `capdma-sim` implements
//! it with its model of the KS queue. Method names follow the DDIs they
//! stand for.
use crate::ks_format::{
    KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY, KSSTREAM_HEADER_OPTIONSF_DURATIONVALID, KSSTREAM_HEADER_OPTIONSF_TIMEVALID,
};
use capdma_interface::status::NtStatus;
use capdma_interface::table::{ChannelFormat, SgElement};

pub use capdma_interface::kernel::Irql;

/// Where a stream pointer's `OffsetOut` stands (`KSSTREAM_POINTER_OFFSET`).
#[derive(Clone, Copy, Debug)]
pub struct StreamOffset {
    /// Byte mode (common-buffer pins): `OffsetOut.Data`, the system virtual
    /// address of the next unwritten byte of the frame; null in mapping mode.
    pub data: *mut u8,
    /// Mapping mode (`KSPIN_FLAG_GENERATE_MAPPINGS`): `OffsetOut.Mappings`,
    /// the next unused mapping; null in byte mode.
    pub mappings: *const SgElement,
    /// `OffsetOut.Count`: bytes (byte mode) or mappings (mapping mode) in the frame.
    pub count: u32,
    /// `OffsetOut.Remaining`: bytes or mappings not yet advanced over.
    pub remaining: u32,
}

/// What to write into a completed frame's `KSSTREAM_HEADER` (and its
/// `KS_FRAME_INFO` extension) before it leaves the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCompletion {
    /// `DataUsed`, bytes.
    pub data_used: u32,
    /// `PresentationTime.Time`, 100-ns units.
    pub presentation_time: i64,
    /// `Duration`, 100-ns units.
    pub duration: i64,
    /// `KS_FRAME_INFO.PictureNumber`.
    pub picture_number: i64,
    /// `KS_FRAME_INFO.DropCount`.
    pub drop_count: i64,
    /// Set `KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY` (frames were lost before this one).
    pub discontinuity: bool,
}

impl FrameCompletion {
    /// The `KSSTREAM_HEADER.OptionsFlags` bits the frame gets (OR-ed into
    /// the header's): a delivered frame (`data_used > 0`) has a valid
    /// `PresentationTime` and `Duration` (`TIMEVALID`, `DURATIONVALID`); an
    /// empty one has neither; `DATADISCONTINUITY` when frames were lost
    /// before this one.
    #[must_use]
    pub fn options_flags(&self) -> u32 {
        let times = if self.data_used > 0 {
            KSSTREAM_HEADER_OPTIONSF_TIMEVALID | KSSTREAM_HEADER_OPTIONSF_DURATIONVALID
        } else {
            0
        };
        let discontinuity = if self.discontinuity { KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY } else { 0 };
        times | discontinuity
    }
}

/// Something the pin's core observed that a driver engineer wants in a
/// trace (the glue writes each as an ETW event, docs/tracing.md),
/// reported through [`KsPinPort::report`] as it happens, from `Process`,
/// the completion callback (`DISPATCH_LEVEL`) or a state change: a report
/// must not block, allocate or call back into the pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinEvent {
    /// The pin went to `KSSTATE_RUN`: the bus started the channel with `format`.
    ChannelStarted {
        /// The format the channel runs with.
        format: ChannelFormat,
    },
    /// `StartChannel` (or the common-buffer ring check after it) failed
    /// with `status`; the pin stays paused.
    ChannelStartFailed {
        /// The error.
        status: NtStatus,
    },
    /// The pin left `KSSTATE_RUN`: the channel was stopped.
    ChannelStopped,
    /// A frame was delivered: `picture_number` (the board's frame number),
    /// `bytes` of it (`DataUsed`). Per frame: the report must be cheap.
    FrameDelivered {
        /// `KS_FRAME_INFO.PictureNumber`.
        picture_number: u32,
        /// `DataUsed`, bytes.
        bytes: u32,
    },
    /// The pin dropped a frame (no buffer, a damaged completion, a copy that
    /// failed): `total` frames dropped by the driver so far.
    DroppedByDriver {
        /// Frames the pin dropped since the pin was created.
        total: u64,
    },
    /// The board's frame numbers jumped: `frames` frames the board never
    /// delivered (dropped by the board).
    DroppedByBoard {
        /// Frames missing in this gap.
        frames: u32,
    },
}

/// A capture pin's queue, seen through its stream pointers.
///
/// All methods are callable at `<= DISPATCH_LEVEL` unless noted; KS
/// serializes `Process` calls of one pin.
pub trait KsPinPort {
    /// A `PKSSTREAM_POINTER` (a clone or the leading edge).
    type StreamPointer: Copy + PartialEq;

    /// `KsPinGetLeadingEdgeStreamPointer(Pin, KSSTREAM_POINTER_STATE_LOCKED)`:
    /// the locked leading edge, or `None` when no frame is available.
    fn leading_edge(&self) -> Option<Self::StreamPointer>;
    /// `KsStreamPointerClone(Pointer, NULL, 0, &Clone)`. The clone keeps its
    /// frame in the queue until deleted.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the clone cannot be made.
    fn clone_pointer(&self, pointer: Self::StreamPointer) -> Result<Self::StreamPointer, NtStatus>;
    /// `pointer->OffsetOut`.
    fn offset_out(&self, pointer: Self::StreamPointer) -> StreamOffset;
    /// `pointer->StreamHeader->FrameExtent`, bytes.
    fn frame_extent(&self, pointer: Self::StreamPointer) -> u32;
    /// `KsStreamPointerAdvanceOffsets(Pointer, 0, OutUsed, Eject)`: moves the
    /// pointer `out_used` bytes or mappings on; past the end of the frame (or
    /// with `eject`) it moves to the next frame.
    ///
    /// # Errors
    /// `STATUS_DEVICE_NOT_READY` when the pointer moved past the last
    /// available frame (it is then unlocked and must not be used).
    fn advance_offsets(&self, pointer: Self::StreamPointer, out_used: u32, eject: bool) -> Result<(), NtStatus>;
    /// `KsStreamPointerAdvanceOffsetsAndUnlock(Pointer, 0, OutUsed, Eject)`.
    fn advance_offsets_and_unlock(&self, pointer: Self::StreamPointer, out_used: u32, eject: bool);
    /// `KsStreamPointerUnlock(Pointer, Eject)`.
    fn unlock(&self, pointer: Self::StreamPointer, eject: bool);
    /// Writes `DataUsed`, the times and the frame info of the pointer's frame.
    fn complete_frame(&self, pointer: Self::StreamPointer, completion: &FrameCompletion);
    /// `KsStreamPointerDelete(Pointer)`: releases a clone (or the leading
    /// edge's lock); when no pointer references a frame any more, the frame
    /// goes back to the application.
    fn delete(&self, pointer: Self::StreamPointer);
    /// `KsPinAttemptProcessing(Pin, Asynchronous)`.
    fn attempt_processing(&self, asynchronous: bool);
    /// Waits a little (about a millisecond) at `PASSIVE_LEVEL` before a
    /// retry: `KeDelayExecutionThread` in the glue. The default spins once.
    fn wait_briefly(&self) {
        core::hint::spin_loop();
    }
    /// `KeRaiseIrql(DISPATCH_LEVEL, &Old)`: the old IRQL.
    fn raise_to_dispatch(&self) -> Irql;
    /// `KeLowerIrql(old)`.
    fn lower_irql(&self, old: Irql);
    /// `KsPinAcquireProcessingMutex(Pin)` (PASSIVE): the pin holds it while it
    /// stops the channel, so Process does not run meanwhile (AVStream calls
    /// `SetDeviceState` with the control mutex held, not the processing
    /// mutex; the mutex is not recursive, so the pin never takes it from
    /// Process). The default does nothing, for ports whose Process never runs
    /// concurrently with a state change.
    fn acquire_processing_mutex(&self) {}
    /// `KsPinReleaseProcessingMutex(Pin)`.
    fn release_processing_mutex(&self) {}
    /// `KsPinGetReferenceClockInterface(Pin, &Clock)` (PASSIVE), called by
    /// the core as the pin reaches `KSSTATE_ACQUIRE` ("the most common time
    /// to call" it, by its page): the port takes and keeps the pin's
    /// `IKsReferenceClock` when the application assigned a master clock
    /// (`KSPROPERTY_STREAM_MASTERCLOCK`); KS answers
    /// `STATUS_DEVICE_NOT_READY` when it did not, and the pin then streams
    /// without one. Returns whether the port now holds a clock. The
    /// default has none.
    fn acquire_reference_clock(&self) -> bool {
        false
    }
    /// `IKsReferenceClock::Release` of the clock [`Self::acquire_reference_clock`]
    /// took (the interface is reference counted: "minidrivers must release
    /// the interface when finished with it"), called as the pin returns to
    /// `KSSTATE_STOP`. Nothing without a clock. PASSIVE.
    fn release_reference_clock(&self) {}
    /// The clock's stream time now, 100-ns units, by
    /// `IKsReferenceClock::GetCorrelatedTime` (by its page, the method for a
    /// time stamp in `KSSTREAM_HEADER.PresentationTime`); `None` without a clock. `<= DISPATCH_LEVEL` (the
    /// completion callback stamps frames with it).
    fn stream_time(&self) -> Option<i64> {
        None
    }
    /// The core's reporting hook: `event` just happened (see [`PinEvent`]
    /// for where it may come from and what a report may not do). The glue
    /// traces it (ETW); the default ignores it.
    fn report(&self, event: PinEvent) {
        let _ = event;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_flags_follow_the_completion() {
        let good = FrameCompletion { data_used: 4096, presentation_time: 10, duration: 333_333, ..Default::default() };
        assert_eq!(good.options_flags(), KSSTREAM_HEADER_OPTIONSF_TIMEVALID | KSSTREAM_HEADER_OPTIONSF_DURATIONVALID);
        let after_drop = FrameCompletion { discontinuity: true, ..good };
        assert_eq!(after_drop.options_flags() & KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY, KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY);
        let empty = FrameCompletion::default();
        assert_eq!(empty.options_flags(), 0);
        assert_eq!(FrameCompletion { discontinuity: true, ..empty }.options_flags(), KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY);
    }
}
