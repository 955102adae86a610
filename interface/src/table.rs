//! The query-interface table and the structures its functions exchange.
//!
//! A child fills `Size`, `Version` and `InterfaceType =
//! GUID_CAPDMA_BUS_INTERFACE` in `IRP_MN_QUERY_INTERFACE`; the bus answers by
//! filling a [`CapdmaBusInterface`] and taking one reference
//! (`InterfaceReference`) on behalf of the caller, who calls
//! `InterfaceDereference` when done. The bus refuses removal while any
//! reference is held.
//!
//! Every function takes `Context` (the header's) first and a zero-based
//! channel index. Rules common to all of them:
//!
//! * `STATUS_INVALID_PARAMETER`: a null out-pointer, or `channel` not below
//!   the board's channel count.
//! * `STATUS_DEVICE_REMOVED`: the board is gone (surprise removal).
//! * IRQL: `PASSIVE_LEVEL` unless a function says `<= DISPATCH_LEVEL`.
use crate::status::NtStatus;
use core::ffi::c_void;
use core::mem::{offset_of, size_of};

/// The WDM `INTERFACE` header (wdm.h), 32 bytes on x64.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InterfaceHeader {
    /// `Size`: bytes of the whole interface structure.
    pub size: u16,
    /// `Version`: the interface version served.
    pub version: u16,
    /// `Context`: passed to every function.
    pub context: *mut c_void,
    /// `InterfaceReference`.
    pub interface_reference: Option<PfnInterfaceReference>,
    /// `InterfaceDereference`.
    pub interface_dereference: Option<PfnInterfaceReference>,
}

/// `PINTERFACE_REFERENCE` / `PINTERFACE_DEREFERENCE`.
pub type PfnInterfaceReference = unsafe extern "system" fn(context: *mut c_void);

/// Reads the channel's DMA configuration into `config`. `<= DISPATCH_LEVEL`.
pub type PfnGetDmaConfig =
    unsafe extern "system" fn(context: *mut c_void, channel: u32, config: *mut DmaConfig) -> NtStatus;

/// S/G mode: the bus's DMA adapter (`PDMA_ADAPTER`, valid while the
/// interface reference is held), the `MaxMappingByteCount` (bytes) to pass to
/// `KsDeviceRegisterAdapterObject`, and the number of map registers the
/// adapter was granted. `STATUS_INVALID_DEVICE_REQUEST` in common-buffer mode.
pub type PfnGetDmaAdapter = unsafe extern "system" fn(
    context: *mut c_void,
    channel: u32,
    adapter: *mut *mut c_void,
    max_mapping_byte_count: *mut u32,
    map_registers: *mut u32,
) -> NtStatus;

/// S/G mode: posts one frame: `element_count` elements (laid out as
/// `KSMAPPING`s, so a clone's `OffsetOut.Mappings` can be passed as is) to the
/// channel's descriptor ring under `tag`, which the completion echoes.
/// `<= DISPATCH_LEVEL`. Errors: `STATUS_DEVICE_BUSY` when the ring lacks room
/// (retry after a completion); `STATUS_INVALID_PARAMETER` for zero elements,
/// an element of zero bytes, more than `max_transfer` bytes, or an address
/// the board cannot reach; `STATUS_DEVICE_NOT_READY` when the channel is not
/// running; `STATUS_INVALID_DEVICE_REQUEST` in common-buffer mode.
pub type PfnProgramFrame = unsafe extern "system" fn(
    context: *mut c_void,
    channel: u32,
    tag: u32,
    elements: *const SgElement,
    element_count: u32,
) -> NtStatus;

/// Version 2, S/G mode: posts a part of a frame, for a frame whose mappings
/// do not all fit the descriptor ring (more than it has entries, or than it
/// has free now): up to `element_count` elements (`KSMAPPING`s) under
/// `tag`, as many as the ring has free entries for; on success `*accepted`
/// receives how many were posted, 1..=`element_count` (the caller advances
/// its stream pointer by them and posts the rest in a later part); on an
/// error it is not written. `flags`: [`CAPDMA_PART_START`] on the
/// frame's first part (the frame is then *open*: no other frame may be
/// posted on the channel until it is closed), [`CAPDMA_PART_END`] when the
/// elements reach the frame's end — honoured only when all of them are
/// accepted (that closes the frame; its elements must then add up to the
/// running format's frame). The board writes the frame part by part and
/// completes every part but the last with a [`CompletionKind::FramePart`]
/// completion (the ring has room again: post the next part); the frame's
/// last part completes it as a [`CompletionKind::Frame`], as
/// [`PfnProgramFrame`] does. A stop, reset or removal terminates an open
/// frame like a posted one (one `Frame` completion). `<= DISPATCH_LEVEL`.
///
/// Errors (nothing posted): `STATUS_DEVICE_BUSY` when the ring has no free
/// entry or the in-flight table is full now (retry after a completion);
/// `STATUS_INVALID_DEVICE_STATE` for `CAPDMA_PART_START` while a frame is
/// open, or a part without it while none is; `STATUS_INVALID_PARAMETER`
/// for a null `accepted` or `elements`, zero elements, a bad element (as
/// `ProgramFrame`), a `tag` in flight (START) or not the open frame's
/// (continuation), unknown `flags` bits, or an END whose elements leave the
/// frame short of the running format's frame bytes; `STATUS_DEVICE_NOT_READY`
/// when the channel is not running; `STATUS_INVALID_DEVICE_REQUEST` in
/// common-buffer mode. [`PfnProgramFrame`] while a frame is open:
/// `STATUS_INVALID_DEVICE_STATE`.
pub type PfnProgramFramePart = unsafe extern "system" fn(
    context: *mut c_void,
    channel: u32,
    tag: u32,
    elements: *const SgElement,
    element_count: u32,
    flags: u32,
    accepted: *mut u32,
) -> NtStatus;

/// [`PfnProgramFramePart`] flag: the frame's first part.
pub const CAPDMA_PART_START: u32 = 1 << 0;
/// [`PfnProgramFramePart`] flag: the elements reach the frame's end.
pub const CAPDMA_PART_END: u32 = 1 << 1;

/// Common-buffer mode: the slot ring (valid until the channel is stopped;
/// `line_pitch` valid once started). `<= DISPATCH_LEVEL`.
/// `STATUS_INVALID_DEVICE_REQUEST` in S/G mode.
pub type PfnGetSlotRing =
    unsafe extern "system" fn(context: *mut c_void, channel: u32, ring: *mut SlotRing) -> NtStatus;

/// Common-buffer mode: hands a slot the child has finished with back to the
/// board. `<= DISPATCH_LEVEL`. `STATUS_INVALID_PARAMETER` for a slot the
/// child does not own (out of range, or not completed to it).
pub type PfnReturnSlot = unsafe extern "system" fn(context: *mut c_void, channel: u32, slot: u32) -> NtStatus;

/// Programs the format and starts the channel's engine (`KSSTATE_RUN`).
/// Errors: `STATUS_INVALID_PARAMETER` for a format the board cannot produce
/// or a frame larger than a slot; `STATUS_DEVICE_BUSY` if already running,
/// or while the channel's last engine reset has not completed (the board
/// kept `STATUS_RUNNING` set past `regs::RESET_POLL_READS` reads);
/// `STATUS_DEVICE_NOT_READY` while the board is out of D0 (a channel
/// already running keeps running for the child across a power-down: the bus
/// stops its engine, completes its posted frames with `STATUS_CANCELLED`,
/// keeps what the child posts or returns meanwhile, and restarts it with the
/// same format when the board is back in D0).
pub type PfnStartChannel =
    unsafe extern "system" fn(context: *mut c_void, channel: u32, format: *const ChannelFormat) -> NtStatus;

/// Stops the channel's engine; every frame still posted is completed with
/// `STATUS_CANCELLED` (through the callback) before this returns, once the
/// engine's reset is complete (`regs::RESET_POLL_READS`: no DMA of the
/// channel outstanding). An engine that never completes its reset keeps its
/// frames: they are completed when it does (a later DPC or watchdog tick)
/// or, with `STATUS_DEVICE_REMOVED`, at surprise removal — never otherwise
/// while the board may still write them; the call then returns
/// `STATUS_PENDING` (a success code) instead of `STATUS_SUCCESS`, and the
/// child must keep those frames (and its callback) alive until they come
/// back. Idempotent.
pub type PfnStopChannel = unsafe extern "system" fn(context: *mut c_void, channel: u32) -> NtStatus;

/// Registers (or, with `None`, unregisters) the completion callback of a
/// channel. Fails with `STATUS_DEVICE_BUSY` while the channel runs, or while
/// frames are held for an engine reset that has not completed (see
/// [`PfnStopChannel`]).
pub type PfnRegisterCompletion = unsafe extern "system" fn(
    context: *mut c_void,
    channel: u32,
    callback: Option<PfnCompletion>,
    callback_context: *mut c_void,
) -> NtStatus;

/// The child's completion callback, called at `DISPATCH_LEVEL` from the bus's
/// DPC, once per completed (or cancelled) frame or filled slot. `completion`
/// is valid only during the call. It may call `ProgramFrame` and `ReturnSlot`.
pub type PfnCompletion = unsafe extern "system" fn(callback_context: *mut c_void, completion: *const Completion);

/// The interface table answered for [`crate::GUID_CAPDMA_BUS_INTERFACE`],
/// version [`CAPDMA_BUS_INTERFACE_VERSION`]. Later versions only append.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CapdmaBusInterface {
    /// The WDM `INTERFACE` header.
    pub header: InterfaceHeader,
    /// [`PfnGetDmaConfig`].
    pub get_dma_config: Option<PfnGetDmaConfig>,
    /// [`PfnGetDmaAdapter`].
    pub get_dma_adapter: Option<PfnGetDmaAdapter>,
    /// [`PfnProgramFrame`].
    pub program_frame: Option<PfnProgramFrame>,
    /// [`PfnGetSlotRing`].
    pub get_slot_ring: Option<PfnGetSlotRing>,
    /// [`PfnReturnSlot`].
    pub return_slot: Option<PfnReturnSlot>,
    /// [`PfnStartChannel`].
    pub start_channel: Option<PfnStartChannel>,
    /// [`PfnStopChannel`].
    pub stop_channel: Option<PfnStopChannel>,
    /// [`PfnRegisterCompletion`].
    pub register_completion: Option<PfnRegisterCompletion>,
    /// Version 2: [`PfnProgramFramePart`].
    pub program_frame_part: Option<PfnProgramFramePart>,
}

/// The interface version this crate defines.
pub const CAPDMA_BUS_INTERFACE_VERSION: u16 = 2;
/// `sizeof(CAPDMA_BUS_INTERFACE)` of version 1 (up to `RegisterCompletion`), in bytes.
#[allow(clippy::cast_possible_truncation, reason = "96 bytes, asserted below")]
pub const CAPDMA_BUS_INTERFACE_SIZE_V1: u16 = offset_of!(CapdmaBusInterface, program_frame_part) as u16;
/// `sizeof(CAPDMA_BUS_INTERFACE)` of version 2, in bytes.
#[allow(clippy::cast_possible_truncation, reason = "104 bytes, asserted below")]
pub const CAPDMA_BUS_INTERFACE_SIZE_V2: u16 = size_of::<CapdmaBusInterface>() as u16;

/// A channel's DMA configuration (filled by `GetDmaConfig`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaConfig {
    /// [`crate::DmaMode`] as `u32`.
    pub mode: u32,
    /// [`crate::ModeReason`] as `u32`.
    pub reason: u32,
    /// Buffer alignment the board needs, bytes (a power of two); use it for
    /// the allocator framing's `FileAlignment`.
    pub alignment: u32,
    /// Largest bytes per S/G element (`MAX_TRANSFER`); also the
    /// `MaxMappingByteCount` cap.
    pub max_transfer: u32,
    /// Address bits the board drives: 32 or 64.
    pub address_bits: u32,
    /// Common-buffer mode: slots in the ring; S/G mode: 0.
    pub slot_count: u32,
    /// Common-buffer mode: bytes per slot (the largest frame); S/G mode: 0.
    pub slot_bytes: u32,
    /// S/G mode: descriptors in the ring; common-buffer mode: 0.
    pub descriptor_count: u32,
    /// Channels on the board.
    pub channel_count: u32,
    /// Largest frame the board produces, bytes.
    pub max_frame_bytes: u32,
}

/// One S/G element, layout-identical to `KSMAPPING` (ks.h, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SgElement {
    /// `PhysicalAddress`: the logical (bus) address.
    pub logical_address: u64,
    /// `ByteCount`.
    pub byte_count: u32,
    /// `Alignment`.
    pub alignment: u32,
}

/// The most slots a common-buffer ring has ([`SlotRing::slot_count`],
/// [`DmaConfig::slot_count`]): the contract's one slot-count limit.
///
/// It bounds both sides. The bus never configures more (its `SlotCount`
/// registry value is accepted up to this, and its slot tables have this many
/// entries); the child sizes its filled-slot FIFO to hold a whole ring of
/// this many and refuses a configuration with more (`STATUS_NOT_SUPPORTED`
/// when it sets the pin up; a `GetSlotRing` answer with more is
/// `STATUS_IO_DEVICE_ERROR`).
pub const MAX_RING_SLOTS: u32 = 32;

/// The common-buffer slot ring of a channel (filled by `GetSlotRing`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlotRing {
    /// Kernel virtual address of slot 0; slot `i` is at `base + i * slot_stride`.
    pub base: *mut u8,
    /// Logical address of slot 0.
    pub base_logical: u64,
    /// Slots in the ring.
    pub slot_count: u32,
    /// Bytes from one slot to the next (>= `slot_bytes`, aligned).
    pub slot_stride: u32,
    /// Usable bytes per slot.
    pub slot_bytes: u32,
    /// Bytes from one line to the next inside a slot, for the running format
    /// (0 while stopped). May exceed the line's bytes: the board aligns lines.
    pub line_pitch: u32,
}

/// The format a channel is started with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelFormat {
    /// FOURCC ([`crate::format`]).
    pub fourcc: u32,
    /// Width in pixels (even, 2..=4096).
    pub width: u32,
    /// Height in pixel rows (even, 2..=2160).
    pub height: u32,
    /// S/G mode: the frame buffer's stride in bytes (the board writes lines
    /// at this pitch). Ignored in common-buffer mode, where the bus picks the
    /// slot line pitch.
    pub stride: u32,
    /// Frame interval in 100-ns units (`AvgTimePerFrame`).
    pub frame_interval: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// What a completion reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    /// S/G mode: the frame posted with `tag` is done.
    Frame = 1,
    /// Common-buffer mode: slot `tag` is filled and now owned by the child.
    Slot = 2,
    /// S/G mode, version 2: a part of the frame posted in parts with `tag`
    /// is written (`bytes_written`: the frame's bytes so far); the frame is
    /// not done. Nothing to hand back: post the next part.
    FramePart = 3,
}

/// One completion, passed to [`PfnCompletion`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The channel.
    pub channel: u32,
    /// [`CompletionKind`] as `u32`.
    pub kind: u32,
    /// S/G: the frame's tag; common-buffer: the slot index.
    pub tag: u32,
    /// Bytes written (checked by the bus against the buffer).
    pub bytes_written: u32,
    /// `STATUS_SUCCESS`; `STATUS_IO_DEVICE_ERROR` for a damaged frame;
    /// `STATUS_CANCELLED` when stopped before completion. A slot completed
    /// with an error status is still owned by the child and must be returned.
    pub status: NtStatus,
    /// The board's frame counter.
    pub frame_number: u32,
    /// Capture time in 100-ns units.
    pub timestamp: i64,
}

const _: () = assert!(size_of::<InterfaceHeader>() == 4 * size_of::<usize>());
const _: () = assert!(offset_of!(CapdmaBusInterface, get_dma_config) == size_of::<InterfaceHeader>());
const _: () = assert!(CAPDMA_BUS_INTERFACE_SIZE_V1 == 96);
const _: () = assert!(CAPDMA_BUS_INTERFACE_SIZE_V2 == 104);
const _: () = assert!(size_of::<SgElement>() == 16);
const _: () = assert!(size_of::<Completion>() == 32);
const _: () = assert!(size_of::<DmaConfig>() == 40);
const _: () = assert!(size_of::<ChannelFormat>() == 24);
