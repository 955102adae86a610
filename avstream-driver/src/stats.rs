//! Frame accounting of a pin: the counters tests and logs read, and
//! `KSPROPERTY_DROPPEDFRAMES_CURRENT` (ksmedia.h).
//!
//! * **Dropped by the pin** (`frames_dropped`): a completion with an error
//!   status (other than `STATUS_CANCELLED`), no frame to copy a slot into, a
//!   frame too small for the image, a frame the bus could not post, a slot
//!   whose copy failed. Such a frame, if there was one, goes back to the
//!   application with `DataUsed = 0`: it is never delivered as good.
//! * **Dropped by the board** (`board_dropped`): gaps in the board's frame
//!   counter between successive good completions (it had no buffer when a
//!   frame was due).
//! * **Cancelled** (`frames_cancelled`): completed with `STATUS_CANCELLED`
//!   because the pin stopped. Not a drop: nothing was lost while running.
//!
//! `DropCount` = pin drops + board drops; `PictureNumber` = frames
//! delivered + `DropCount` (every picture the stream should have had);
//! `AverageFrameSize` = bytes delivered / frames delivered.
use crate::ks_format::{KsProperty, KsPropertyDroppedFramesCurrentS};
use core::sync::atomic::{AtomicU64, Ordering};

/// The pin's counters. All are free-running `u64`s, updated with relaxed
/// atomics from Process and from the completion DPC.
#[derive(Debug, Default)]
pub struct PinStats {
    frames_completed: AtomicU64,
    frames_dropped: AtomicU64,
    frames_cancelled: AtomicU64,
    board_dropped: AtomicU64,
    bytes_delivered: AtomicU64,
    bytes_copied: AtomicU64,
    sg_elements_programmed: AtomicU64,
    frames_programmed: AtomicU64,
    frame_parts_posted: AtomicU64,
    frame_part_completions: AtomicU64,
    frame_part_errors: AtomicU64,
    bad_completions: AtomicU64,
    slot_return_failures: AtomicU64,
    /// Bit 32 set: the low 32 bits are the frame number expected next.
    expected_frame: AtomicU64,
    /// `DropCount` when the last good frame was delivered.
    reported_drops: AtomicU64,
}

/// A copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames delivered with data (`DataUsed > 0`).
    pub frames_completed: u64,
    /// Frames the pin dropped (see the module documentation).
    pub frames_dropped: u64,
    /// Frames completed with `STATUS_CANCELLED` (stop).
    pub frames_cancelled: u64,
    /// Frames the board dropped (gaps in its frame counter).
    pub board_dropped: u64,
    /// Sum of `DataUsed` of delivered frames, bytes.
    pub bytes_delivered: u64,
    /// Bytes copied slot -> frame (common-buffer mode).
    pub bytes_copied: u64,
    /// S/G elements (`KSMAPPING`s) posted with `ProgramFrame` and (the
    /// ones the bus accepted) with `ProgramFramePart`.
    pub sg_elements_programmed: u64,
    /// Frames posted: whole with `ProgramFrame`, or in parts (counted when
    /// the first part is posted).
    pub frames_programmed: u64,
    /// Parts posted with `ProgramFramePart` (interface version 2: frames
    /// with more mappings than the descriptor ring has entries).
    pub frame_parts_posted: u64,
    /// `FramePart` completions of frames posted in parts (a part written;
    /// Process posts the next).
    pub frame_part_completions: u64,
    /// Later parts the bus refused with an unexpected status or answered
    /// with an impossible count: the rest of the frame was ejected (the
    /// frame itself completes when the bus terminates it).
    pub frame_part_errors: u64,
    /// Completions that did not match anything in flight, or reported
    /// impossible values; also clones the bus failed to cancel at stop.
    pub bad_completions: u64,
    /// `ReturnSlot` calls the bus refused.
    pub slot_return_failures: u64,
}

/// The values of `KSPROPERTY_DROPPEDFRAMES_CURRENT_S`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedFramesCurrent {
    /// `PictureNumber`: frames delivered + `DropCount`.
    pub picture_number: i64,
    /// `DropCount`: frames dropped by the pin and the board.
    pub drop_count: i64,
    /// `AverageFrameSize`: mean `DataUsed` of delivered frames, bytes.
    pub average_frame_size: u32,
}

impl DroppedFramesCurrent {
    /// The property's answer structure, echoing the request's `KSPROPERTY`.
    #[must_use]
    pub fn to_property(&self, property: KsProperty) -> KsPropertyDroppedFramesCurrentS {
        KsPropertyDroppedFramesCurrentS {
            property,
            picture_number: self.picture_number,
            drop_count: self.drop_count,
            average_frame_size: self.average_frame_size,
            reserved_padding: 0,
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const EXPECTED_VALID: u64 = 1 << 32;

impl PinStats {
    /// Zeroed counters.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            frames_completed: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            frames_cancelled: AtomicU64::new(0),
            board_dropped: AtomicU64::new(0),
            bytes_delivered: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            sg_elements_programmed: AtomicU64::new(0),
            frames_programmed: AtomicU64::new(0),
            frame_parts_posted: AtomicU64::new(0),
            frame_part_completions: AtomicU64::new(0),
            frame_part_errors: AtomicU64::new(0),
            bad_completions: AtomicU64::new(0),
            slot_return_failures: AtomicU64::new(0),
            expected_frame: AtomicU64::new(0),
            reported_drops: AtomicU64::new(0),
        }
    }

    /// A copy of every counter.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            frames_completed: r(&self.frames_completed),
            frames_dropped: r(&self.frames_dropped),
            frames_cancelled: r(&self.frames_cancelled),
            board_dropped: r(&self.board_dropped),
            bytes_delivered: r(&self.bytes_delivered),
            bytes_copied: r(&self.bytes_copied),
            sg_elements_programmed: r(&self.sg_elements_programmed),
            frames_programmed: r(&self.frames_programmed),
            frame_parts_posted: r(&self.frame_parts_posted),
            frame_part_completions: r(&self.frame_part_completions),
            frame_part_errors: r(&self.frame_part_errors),
            bad_completions: r(&self.bad_completions),
            slot_return_failures: r(&self.slot_return_failures),
        }
    }

    /// `KSPROPERTY_DROPPEDFRAMES_CURRENT`.
    #[must_use]
    pub fn dropped_frames_current(&self) -> DroppedFramesCurrent {
        let s = self.snapshot();
        let drops = self.drop_count();
        let average = s.bytes_delivered.checked_div(s.frames_completed).unwrap_or(0);
        DroppedFramesCurrent {
            picture_number: saturating_i64(s.frames_completed.saturating_add(drops)),
            drop_count: saturating_i64(drops),
            average_frame_size: u32::try_from(average).unwrap_or(u32::MAX),
        }
    }

    /// `DropCount`: pin drops + board drops.
    #[must_use]
    pub fn drop_count(&self) -> u64 {
        self.frames_dropped.load(Ordering::Relaxed).saturating_add(self.board_dropped.load(Ordering::Relaxed))
    }

    /// Notes a good completion's board frame number and counts a gap from
    /// the expected one as board drops. Gaps of 2^31 or more (or a counter
    /// that went backwards, e.g. after a channel reset) resynchronise
    /// without counting. Called from the completion path only.
    /// Returns the frames counted as board drops by this one (0 when none).
    pub(crate) fn note_frame_number(&self, frame_number: u32) -> u32 {
        let expected = self.expected_frame.load(Ordering::Relaxed);
        let mut dropped = 0;
        if expected & EXPECTED_VALID != 0 {
            let want = u32::try_from(expected & u64::from(u32::MAX)).unwrap_or(0);
            let gap = frame_number.wrapping_sub(want);
            if gap != 0 && gap < 1 << 31 {
                add(&self.board_dropped, u64::from(gap));
                dropped = gap;
            }
        }
        self.expected_frame.store(EXPECTED_VALID | u64::from(frame_number.wrapping_add(1)), Ordering::Relaxed);
        dropped
    }

    /// A frame completed with an error: it takes the expected frame number
    /// (it is counted as a pin drop, not as a board gap) without trusting
    /// the number it reports.
    pub(crate) fn skip_frame_number(&self) {
        let expected = self.expected_frame.load(Ordering::Relaxed);
        if expected & EXPECTED_VALID != 0 {
            let want = u32::try_from(expected & u64::from(u32::MAX)).unwrap_or(0);
            self.expected_frame.store(EXPECTED_VALID | u64::from(want.wrapping_add(1)), Ordering::Relaxed);
        }
    }

    /// Forgets the expected frame number (the channel starts: the board's counter restarts).
    pub(crate) fn reset_frame_numbers(&self) {
        self.expected_frame.store(0, Ordering::Relaxed);
    }

    /// Whether frames were dropped since the last delivered one
    /// (`KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY`); marks them reported.
    pub(crate) fn take_discontinuity(&self) -> bool {
        let now = self.drop_count();
        self.reported_drops.swap(now, Ordering::Relaxed) != now
    }

    /// A frame delivered with `data_used` bytes.
    pub(crate) fn delivered(&self, data_used: u32) {
        add(&self.frames_completed, 1);
        add(&self.bytes_delivered, u64::from(data_used));
    }

    /// A frame dropped by the pin; returns the pin's drops so far.
    pub(crate) fn dropped(&self) -> u64 {
        add(&self.frames_dropped, 1);
        self.frames_dropped.load(Ordering::Relaxed)
    }

    /// A frame cancelled by a stop.
    pub(crate) fn cancelled(&self) {
        add(&self.frames_cancelled, 1);
    }

    /// A completion that matched nothing or reported impossible values.
    pub(crate) fn bad_completion(&self) {
        add(&self.bad_completions, 1);
    }

    /// Bytes copied slot -> frame.
    pub(crate) fn copied(&self, bytes: usize) {
        add(&self.bytes_copied, u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// A frame of `elements` S/G elements posted.
    pub(crate) fn programmed(&self, elements: u32) {
        add(&self.frames_programmed, 1);
        add(&self.sg_elements_programmed, u64::from(elements));
    }

    /// A part of `elements` S/G elements (the count accepted) posted with
    /// `ProgramFramePart`; `first`: the frame's first part (the frame is
    /// counted as programmed).
    pub(crate) fn part_posted(&self, elements: u32, first: bool) {
        if first {
            add(&self.frames_programmed, 1);
        }
        add(&self.frame_parts_posted, 1);
        add(&self.sg_elements_programmed, u64::from(elements));
    }

    /// A `FramePart` completion of a frame posted in parts.
    pub(crate) fn part_completed(&self) {
        add(&self.frame_part_completions, 1);
    }

    /// A later part the bus refused (the rest of its frame ejected).
    pub(crate) fn part_refused(&self) {
        add(&self.frame_part_errors, 1);
    }

    /// A `ReturnSlot` the bus refused.
    pub(crate) fn slot_return_failed(&self) {
        add(&self.slot_return_failures, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_gaps_count_as_drops_and_resync() {
        let s = PinStats::new();
        s.note_frame_number(10);
        s.note_frame_number(11);
        s.note_frame_number(14);
        assert_eq!(s.snapshot().board_dropped, 2);
        s.note_frame_number(3); // went backwards: resync only
        s.note_frame_number(4);
        assert_eq!(s.snapshot().board_dropped, 2);
        s.note_frame_number(u32::MAX);
        s.note_frame_number(1); // wrapped: 0 missing
        assert_eq!(s.snapshot().board_dropped, 3);
        s.skip_frame_number(); // 2 was damaged
        s.note_frame_number(4); // 3 missing
        assert_eq!(s.snapshot().board_dropped, 4);
        s.reset_frame_numbers();
        s.note_frame_number(0);
        assert_eq!(s.snapshot().board_dropped, 4);
    }

    #[test]
    fn dropped_frames_current_and_discontinuity() {
        let s = PinStats::new();
        assert_eq!(s.dropped_frames_current(), DroppedFramesCurrent::default());
        s.delivered(100);
        s.delivered(300);
        assert!(!s.take_discontinuity());
        s.dropped();
        s.note_frame_number(0);
        s.note_frame_number(2);
        s.cancelled();
        assert_eq!(
            s.dropped_frames_current(),
            DroppedFramesCurrent { picture_number: 4, drop_count: 2, average_frame_size: 200 }
        );
        assert!(s.take_discontinuity());
        assert!(!s.take_discontinuity());
        let p = s.dropped_frames_current().to_property(KsProperty { id: 0, ..KsProperty::default() });
        assert_eq!((p.picture_number, p.drop_count, p.average_frame_size), (4, 2, 200));
    }
}
