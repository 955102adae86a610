//! The kernel-streaming side of the simulated machine: a model of one
//! AVStream capture pin's queue (`KSPIN` with its stream pointers), as the
//! AVStream core sees it through [`capdma_avstream::ports::KsPinPort`].
//!
//! What it models (ks.h semantics, as documented for AVStream minidrivers):
//!
//! * Frames enter the queue when the application submits a buffer (a read
//!   IRP in KS terms) and leave it **in order** once no stream pointer
//!   references them and the leading edge has moved past them.
//! * The **leading edge** (`KsPinGetLeadingEdgeStreamPointer`) stands on the
//!   first frame not yet advanced over; locking it returns `None` when no
//!   frame is there.
//! * **Clones** (`KsStreamPointerClone`) hold a reference on their frame
//!   until `KsStreamPointerDelete`.
//! * **Mapping mode** (`KSPIN_FLAG_GENERATE_MAPPINGS`, after
//!   `KsDeviceRegisterAdapterObject`): when a frame reaches the leading edge,
//!   KS builds its scatter/gather list through the registered adapter and
//!   splits it into `KSMAPPING`s of at most `MaxMappingByteCount` bytes. All
//!   of a frame's mappings are generated at once; when the adapter lacks map
//!   registers the frame is not yet available at the leading edge. The list is
//!   put (`PutScatterGatherList`, which copies bounce buffers back) before the
//!   frame is completed to the application.
//! * **Byte mode**: `OffsetOut.Data` is the frame's system virtual address.
//! * `KsPinAttemptProcessing` asks for a `Process` call; the machine makes
//!   it at `PASSIVE_LEVEL`. As AVStream, the model also asks for one when a
//!   frame lands with nothing at or ahead of the leading edge (unless the
//!   pin was created with `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING`), and
//!   again after a `Process` that returned `STATUS_SUCCESS` while frames
//!   wait ([`SimKsPin::process_returned`]); after `STATUS_PENDING` only
//!   `KsPinAttemptProcessing` restarts it — map registers coming back do not.
//!
//! * The registered adapter ([`MappingSource`]) is the simulator's
//!   [`crate::dma::SimDmaAdapter`] (physical addresses) or, with the bus
//!   image, the emulated kernel's adapter through its DMA-remapping domain
//!   ([`DomainMapper`]: logical addresses, map registers as granted).
//!
//! Misuse (a deleted pointer used again, a clone never deleted, a DDI at the
//! wrong IRQL, advancing past a frame's end) is recorded as a violation.
mod mapping;
mod pin;
mod queue;

pub use mapping::{DomainMapper, MappingSource};
pub use pin::{CompletedFrame, KsStats, PinFlags, PointerView, SimKsPin, SimMapping, StreamPointerHandle};

#[cfg(test)]
mod tests;
