//! The frames of a pin's queue and the stream pointers that stand on them.
use std::collections::{HashMap, VecDeque};

use capdma_avstream::ports::FrameCompletion;
use capdma_interface::table::SgElement;

use crate::dma::adapter::ScatterGatherList;

/// One frame (one application buffer) in the queue.
pub(super) struct Frame {
    /// Sequence number: frames are numbered in arrival order.
    pub seq: u64,
    /// The application's identifier of the buffer.
    pub buffer_id: u64,
    /// System virtual address of the buffer.
    pub va: *mut u8,
    /// `FrameExtent`, bytes.
    pub bytes: u32,
    /// Clones referencing the frame.
    pub clones: u32,
    /// The leading edge has moved past the frame.
    pub passed: bool,
    /// Mapping mode: the frame's scatter/gather lists once built, in frame
    /// order: one, or several when one list would need more map registers
    /// than the adapter grants (see `SimKsPin::ensure_mapped`).
    pub sg: Vec<ScatterGatherList>,
    /// Mapping mode: the `KSMAPPING`s (stable heap storage while the frame lives).
    pub mappings: Vec<SgElement>,
    /// What the minidriver wrote into the stream header.
    pub completion: Option<FrameCompletion>,
}

/// Where a stream pointer stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Position {
    /// The frame's sequence number.
    pub seq: u64,
    /// Bytes (byte mode) or mappings (mapping mode) advanced over.
    pub offset: u32,
}

/// The queue: frames in order, the leading edge and the clones.
#[derive(Default)]
pub(super) struct Queue {
    pub frames: VecDeque<Frame>,
    pub next_seq: u64,
    /// The leading edge: the frame it stands on (may be `next_seq`: past the end).
    pub leading: Position,
    pub leading_locked: bool,
    pub clones: HashMap<u32, Position>,
    pub next_handle: u32,
}

impl Queue {
    /// The frame with sequence number `seq`, if still queued (frames are in
    /// sequence order; with out-of-order completion there may be gaps).
    pub fn frame(&self, seq: u64) -> Option<&Frame> {
        let index = self.frames.binary_search_by_key(&seq, |f| f.seq).ok()?;
        self.frames.get(index)
    }

    /// Mutable access to the frame with sequence number `seq`.
    pub fn frame_mut(&mut self, seq: u64) -> Option<&mut Frame> {
        let index = self.frames.binary_search_by_key(&seq, |f| f.seq).ok()?;
        self.frames.get_mut(index)
    }
}
