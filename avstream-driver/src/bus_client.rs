//! The AVStream side of `GUID_CAPDMA_BUS_INTERFACE`: a checked copy of the
//! table the bus answered, and safe methods over its `extern "system"`
//! function pointers.
//!
//! Lifecycle (`docs/architecture.md` §2):
//!
//! 1. The glue sends `IRP_MN_QUERY_INTERFACE` with `InterfaceType =
//!    GUID_CAPDMA_BUS_INTERFACE`, `Size = `[`BusClient::REQUEST_SIZE`],
//!    `Version = `[`BusClient::REQUEST_VERSION`] and `Interface` pointing at
//!    [`BusClient::query_buffer`]'s table.
//! 2. On success, [`BusClient::from_query`] checks the answer and keeps it
//!    (on a bad answer it drops the reference the bus took, and fails).
//! 3. [`BusChannel`] (a `Copy` view for one channel) is what pins hold.
//! 4. At device removal [`BusClient::release`] calls `InterfaceDereference`
//!    exactly once (it consumes the client).
use capdma_interface::negotiate::table_size;
use capdma_interface::status::{
    nt_success, NtStatus, STATUS_INVALID_BUFFER_SIZE, STATUS_NOT_SUPPORTED, STATUS_PENDING,
    STATUS_REVISION_MISMATCH,
};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, DmaConfig, InterfaceHeader, PfnCompletion, PfnGetDmaAdapter, PfnGetDmaConfig,
    PfnGetSlotRing, PfnInterfaceReference, PfnProgramFrame, PfnProgramFramePart, PfnRegisterCompletion, PfnReturnSlot,
    PfnStartChannel, PfnStopChannel, SgElement, SlotRing, CAPDMA_BUS_INTERFACE_SIZE_V2, CAPDMA_BUS_INTERFACE_VERSION,
};
use core::ffi::c_void;
use core::ptr;

fn to_result(status: NtStatus) -> Result<(), NtStatus> {
    if nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}

/// What `StopChannel` did with the frames that were posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Every posted frame came back through the callback before the call returned.
    Stopped,
    /// The engine's reset has not completed: the bus holds the posted frames
    /// (the board may still write them) and completes them later through
    /// the callback; their clones must stay alive until then.
    FramesHeld,
}

/// What `GetDmaAdapter` answered (S/G mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaAdapterInfo {
    /// The bus's `PDMA_ADAPTER`, valid while the interface reference is held.
    pub adapter: *mut c_void,
    /// `MaxMappingByteCount` the bus asks for, bytes.
    pub max_mapping_byte_count: u32,
    /// Map registers the adapter was granted.
    pub map_registers: u32,
}

/// The bus's functions for one channel. `Copy`; valid while the
/// [`BusClient`] it came from has not been released (see
/// [`BusClient::release`]).
#[derive(Clone, Copy, Debug)]
pub struct BusChannel {
    context: *mut c_void,
    channel: u32,
    get_dma_config: PfnGetDmaConfig,
    get_dma_adapter: PfnGetDmaAdapter,
    program_frame: PfnProgramFrame,
    get_slot_ring: PfnGetSlotRing,
    return_slot: PfnReturnSlot,
    start_channel: PfnStartChannel,
    stop_channel: PfnStopChannel,
    register_completion: PfnRegisterCompletion,
    /// Version 2 only: `None` on a version-1 bus.
    program_frame_part: Option<PfnProgramFramePart>,
}

// SAFETY: the interface contract makes every function callable from any
// processor (at PASSIVE or `<= DISPATCH_LEVEL` as each says), and `context`
// is only ever passed back to the bus, so the handle may move to and be
// shared with other threads.
unsafe impl Send for BusChannel {}
// SAFETY: as for `Send`: `BusChannel` has no interior state, and the bus
// serialises concurrent calls itself.
unsafe impl Sync for BusChannel {}

// SAFETY (for every `unsafe` call through a function pointer below): the
// pointers and `context` come from a table that `BusClient::from_query`
// checked and whose caller guaranteed they stay valid while the interface
// reference is held; `BusClient::release` (unsafe) requires that no
// `BusChannel` is used after it. Out-pointers point at locals of the caller.
impl BusChannel {
    /// The zero-based channel index passed to every function.
    #[must_use]
    pub fn channel(&self) -> u32 {
        self.channel
    }

    /// `GetDmaConfig`. `<= DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// The bus's status (`STATUS_INVALID_PARAMETER`, `STATUS_DEVICE_REMOVED`).
    pub fn get_dma_config(&self) -> Result<DmaConfig, NtStatus> {
        let mut config = DmaConfig::default();
        // SAFETY: see the impl comment; `config` is a live local.
        let status = unsafe { (self.get_dma_config)(self.context, self.channel, &raw mut config) };
        to_result(status).map(|()| config)
    }

    /// `GetDmaAdapter` (S/G mode). PASSIVE.
    ///
    /// # Errors
    /// The bus's status; `STATUS_INVALID_DEVICE_REQUEST` in common-buffer mode.
    pub fn get_dma_adapter(&self) -> Result<DmaAdapterInfo, NtStatus> {
        let mut adapter = ptr::null_mut();
        let mut max_mapping_byte_count = 0;
        let mut map_registers = 0;
        // SAFETY: see the impl comment; the three out-pointers are live locals.
        let status = unsafe {
            (self.get_dma_adapter)(
                self.context,
                self.channel,
                &raw mut adapter,
                &raw mut max_mapping_byte_count,
                &raw mut map_registers,
            )
        };
        to_result(status).map(|()| DmaAdapterInfo { adapter, max_mapping_byte_count, map_registers })
    }

    /// `ProgramFrame`: posts `count` elements (`KSMAPPING`s) under `tag`.
    /// `<= DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// The bus's status: `STATUS_DEVICE_BUSY` (ring full), `STATUS_INVALID_PARAMETER`,
    /// `STATUS_DEVICE_NOT_READY` (not running), `STATUS_INVALID_DEVICE_REQUEST`.
    ///
    /// # Safety
    /// `elements` must point to `count` readable, initialised [`SgElement`]s
    /// (a clone's `OffsetOut.Mappings`) for the duration of the call.
    pub unsafe fn program_frame(&self, tag: u32, elements: *const SgElement, count: u32) -> Result<(), NtStatus> {
        // SAFETY: see the impl comment; the caller guarantees `elements`.
        to_result(unsafe { (self.program_frame)(self.context, self.channel, tag, elements, count) })
    }

    /// Whether the bus serves `ProgramFramePart` (interface version 2): a
    /// frame with more mappings than the descriptor ring has entries can
    /// then be posted in parts ([`Self::program_frame_part`]).
    #[must_use]
    pub fn supports_frame_parts(&self) -> bool {
        self.program_frame_part.is_some()
    }

    /// `ProgramFramePart` (interface version 2): posts up to `count`
    /// elements (`KSMAPPING`s) of the frame posted in parts under `tag`,
    /// as many as the descriptor ring has free entries for. `flags`:
    /// `CAPDMA_PART_START` on the frame's first part, `CAPDMA_PART_END`
    /// when the elements reach the frame's end (honoured only when all are
    /// accepted: that closes the frame). Answers how many elements were
    /// posted (`1..=count` on success; the caller advances its stream
    /// pointer by them). `<= DISPATCH_LEVEL`. Follows
    /// `capdma_interface::table::PfnProgramFramePart`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` on a version-1 bus (nothing called); else
    /// the bus's status, nothing posted: `STATUS_DEVICE_BUSY` (no free
    /// ring entry now), `STATUS_INVALID_DEVICE_STATE` (`START` while a
    /// frame is open, or a continuation while none is),
    /// `STATUS_INVALID_PARAMETER`, `STATUS_DEVICE_NOT_READY` (not
    /// running), `STATUS_INVALID_DEVICE_REQUEST`.
    ///
    /// # Safety
    /// `elements` must point to `count` readable, initialised
    /// [`SgElement`]s (the `OffsetOut.Mappings` of a stream pointer on the
    /// frame, from the first not yet posted) for the duration of the call.
    pub unsafe fn program_frame_part(
        &self,
        tag: u32,
        elements: *const SgElement,
        count: u32,
        flags: u32,
    ) -> Result<u32, NtStatus> {
        let Some(program_frame_part) = self.program_frame_part else {
            return Err(STATUS_NOT_SUPPORTED);
        };
        let mut accepted = 0;
        // SAFETY: see the impl comment; the caller guarantees `elements`,
        // `accepted` is a live local.
        let status =
            unsafe { program_frame_part(self.context, self.channel, tag, elements, count, flags, &raw mut accepted) };
        to_result(status).map(|()| accepted)
    }

    /// `GetSlotRing` (common-buffer mode). `<= DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// The bus's status; `STATUS_INVALID_DEVICE_REQUEST` in S/G mode.
    pub fn get_slot_ring(&self) -> Result<SlotRing, NtStatus> {
        let mut ring = SlotRing {
            base: ptr::null_mut(),
            base_logical: 0,
            slot_count: 0,
            slot_stride: 0,
            slot_bytes: 0,
            line_pitch: 0,
        };
        // SAFETY: see the impl comment; `ring` is a live local.
        let status = unsafe { (self.get_slot_ring)(self.context, self.channel, &raw mut ring) };
        to_result(status).map(|()| ring)
    }

    /// `ReturnSlot` (common-buffer mode). `<= DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` for a slot not owned or out of order.
    pub fn return_slot(&self, slot: u32) -> Result<(), NtStatus> {
        // SAFETY: see the impl comment; no pointers passed.
        to_result(unsafe { (self.return_slot)(self.context, self.channel, slot) })
    }

    /// `StartChannel`. PASSIVE.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` (format), `STATUS_DEVICE_BUSY` (running).
    pub fn start_channel(&self, format: &ChannelFormat) -> Result<(), NtStatus> {
        // SAFETY: see the impl comment; `format` is a live reference.
        to_result(unsafe { (self.start_channel)(self.context, self.channel, format) })
    }

    /// `StopChannel`: every posted frame is completed (`STATUS_CANCELLED`)
    /// through the callback before it returns [`StopOutcome::Stopped`];
    /// [`StopOutcome::FramesHeld`] (`STATUS_PENDING`) when the engine's reset
    /// has not completed and the bus holds the posted frames until it has.
    /// Idempotent. PASSIVE.
    ///
    /// # Errors
    /// The bus's status (`STATUS_DEVICE_REMOVED`).
    pub fn stop_channel(&self) -> Result<StopOutcome, NtStatus> {
        // SAFETY: see the impl comment; no pointers passed.
        let status = unsafe { (self.stop_channel)(self.context, self.channel) };
        match status {
            STATUS_PENDING => Ok(StopOutcome::FramesHeld),
            s if nt_success(s) => Ok(StopOutcome::Stopped),
            s => Err(s),
        }
    }

    /// `RegisterCompletion(callback, context)`.
    ///
    /// # Errors
    /// `STATUS_DEVICE_BUSY` while the channel runs or a delivery is in progress.
    ///
    /// # Safety
    /// Until it is unregistered, the bus may call `callback(context, ..)`
    /// at `DISPATCH_LEVEL` on any processor: `context` must stay valid for
    /// what `callback` does with it.
    pub unsafe fn register_completion(
        &self,
        callback: Option<PfnCompletion>,
        context: *mut c_void,
    ) -> Result<(), NtStatus> {
        // SAFETY: see the impl comment; the caller guarantees `context`.
        to_result(unsafe { (self.register_completion)(self.context, self.channel, callback, context) })
    }

    /// `RegisterCompletion(NULL, NULL)`: no callback any more once this succeeds.
    ///
    /// # Errors
    /// `STATUS_DEVICE_BUSY` while the channel runs or a delivery is in progress.
    pub fn unregister_completion(&self) -> Result<(), NtStatus> {
        // SAFETY: no callback, so nothing can be called with the null context.
        unsafe { self.register_completion(None, ptr::null_mut()) }
    }
}

/// A held reference on the bus interface of one channel.
#[derive(Debug)]
pub struct BusClient {
    channel: BusChannel,
    interface_dereference: PfnInterfaceReference,
    version: u16,
    size: u16,
}

impl BusClient {
    /// `Parameters.QueryInterface.Size` to send, bytes: the version-2
    /// table (a version-1 bus fills its prefix and says so).
    pub const REQUEST_SIZE: u16 = CAPDMA_BUS_INTERFACE_SIZE_V2;
    /// `Parameters.QueryInterface.Version` to send: 2
    /// (`CAPDMA_BUS_INTERFACE_VERSION`); a bus serving 1 answers 1.
    pub const REQUEST_VERSION: u16 = CAPDMA_BUS_INTERFACE_VERSION;

    /// An empty table to point `Parameters.QueryInterface.Interface` at:
    /// header `Size`/`Version` set to the request, everything else null.
    #[must_use]
    pub const fn query_buffer() -> CapdmaBusInterface {
        CapdmaBusInterface {
            header: InterfaceHeader {
                size: Self::REQUEST_SIZE,
                version: Self::REQUEST_VERSION,
                context: ptr::null_mut(),
                interface_reference: None,
                interface_dereference: None,
            },
            get_dma_config: None,
            get_dma_adapter: None,
            program_frame: None,
            get_slot_ring: None,
            return_slot: None,
            start_channel: None,
            stop_channel: None,
            register_completion: None,
            program_frame_part: None,
        }
    }

    /// Checks the table a successful `IRP_MN_QUERY_INTERFACE` answered and
    /// takes over the reference the bus took for the caller. `channel` is
    /// the zero-based channel of this child.
    ///
    /// Checks: `InterfaceDereference` present; `Version` between 1 and
    /// [`Self::REQUEST_VERSION`]; `Size` at least that version's table and
    /// at most [`Self::REQUEST_SIZE`]; every function of the version present
    /// (version 2: `ProgramFramePart` too; a version-1 answer's is ignored).
    /// When a check fails after `InterfaceDereference` was found, it is
    /// called once (the reference is dropped) before the error is returned.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` (no `InterfaceDereference`, or a null
    /// function), `STATUS_REVISION_MISMATCH` (version), `STATUS_INVALID_BUFFER_SIZE` (size).
    ///
    /// # Safety
    /// `answer` must be what the bus filled for this query: its context and
    /// non-null function pointers valid (callable as the contract says)
    /// until `InterfaceDereference` is called, and one reference held for
    /// the caller.
    pub unsafe fn from_query(answer: &CapdmaBusInterface, channel: u32) -> Result<Self, NtStatus> {
        let header = &answer.header;
        let Some(interface_dereference) = header.interface_dereference else {
            return Err(STATUS_NOT_SUPPORTED);
        };
        let checked = Self::check(answer, channel);
        if checked.is_err() {
            // SAFETY: the caller guarantees the pointer and context are valid
            // and that a reference is held; it is dropped here, once.
            unsafe { interface_dereference(header.context) };
        }
        let channel = checked?;
        Ok(Self { channel, interface_dereference, version: header.version, size: header.size })
    }

    fn check(answer: &CapdmaBusInterface, channel: u32) -> Result<BusChannel, NtStatus> {
        let header = &answer.header;
        if header.version == 0 || header.version > Self::REQUEST_VERSION {
            return Err(STATUS_REVISION_MISMATCH);
        }
        let needed = table_size(header.version).ok_or(STATUS_REVISION_MISMATCH)?;
        if header.size < needed || header.size > Self::REQUEST_SIZE {
            return Err(STATUS_INVALID_BUFFER_SIZE);
        }
        let (
            Some(get_dma_config),
            Some(get_dma_adapter),
            Some(program_frame),
            Some(get_slot_ring),
            Some(return_slot),
            Some(start_channel),
            Some(stop_channel),
            Some(register_completion),
        ) = (
            answer.get_dma_config,
            answer.get_dma_adapter,
            answer.program_frame,
            answer.get_slot_ring,
            answer.return_slot,
            answer.start_channel,
            answer.stop_channel,
            answer.register_completion,
        )
        else {
            return Err(STATUS_NOT_SUPPORTED);
        };
        // Version 1 ends before `ProgramFramePart`: the bus filled nothing
        // there, whatever the buffer holds.
        let program_frame_part = if header.version >= 2 {
            Some(answer.program_frame_part.ok_or(STATUS_NOT_SUPPORTED)?)
        } else {
            None
        };
        Ok(BusChannel {
            context: header.context,
            channel,
            get_dma_config,
            get_dma_adapter,
            program_frame,
            get_slot_ring,
            return_slot,
            start_channel,
            stop_channel,
            register_completion,
            program_frame_part,
        })
    }

    /// The channel's functions (what pins hold).
    #[must_use]
    pub fn channel(&self) -> BusChannel {
        self.channel
    }

    /// The interface version the bus served.
    #[must_use]
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The table size the bus filled, bytes.
    #[must_use]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Calls `InterfaceDereference` (once: the client is consumed). PASSIVE.
    ///
    /// # Safety
    /// No [`BusChannel`] obtained from this client may be used afterwards,
    /// and no completion callback registered through one may remain
    /// registered (every pin is stopped and closed).
    pub unsafe fn release(self) {
        // SAFETY: the reference taken by the query is still held (only
        // `release`, which consumes `self`, drops it); the caller guarantees
        // nothing uses the table afterwards.
        unsafe { (self.interface_dereference)(self.channel.context) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fake::FakeBus;
    use capdma_interface::status::{STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_INVALID_DEVICE_REQUEST};
    use capdma_interface::table::{CAPDMA_BUS_INTERFACE_SIZE_V1, CAPDMA_PART_END, CAPDMA_PART_START};

    #[test]
    fn a_good_answer_is_kept_and_released_once() {
        let bus = FakeBus::scatter_gather();
        let answer = bus.table();
        // SAFETY: the fake's table is valid while `bus` lives.
        let client = unsafe { BusClient::from_query(&answer, 0) }.unwrap();
        assert_eq!((client.version(), client.size()), (1, CAPDMA_BUS_INTERFACE_SIZE_V1));
        let ch = client.channel();
        assert_eq!(ch.get_dma_config().unwrap().mode, 1);
        let info = ch.get_dma_adapter().unwrap();
        assert!(!info.adapter.is_null());
        assert_eq!(ch.get_slot_ring().err(), Some(STATUS_INVALID_DEVICE_REQUEST));
        assert_eq!(bus.derefs.get(), 0);
        // SAFETY: `ch` is not used after this.
        unsafe { client.release() };
        assert_eq!(bus.derefs.get(), 1);
    }

    #[test]
    fn bad_answers_are_refused_and_the_reference_dropped() {
        type Case = (fn(&mut CapdmaBusInterface), NtStatus);
        let bus = FakeBus::scatter_gather();
        let cases: [Case; 9] = [
            (|t| t.header.version = 0, STATUS_REVISION_MISMATCH),
            (|t| t.header.version = 3, STATUS_REVISION_MISMATCH),
            (|t| t.header.size -= 8, STATUS_INVALID_BUFFER_SIZE),
            (|t| t.header.size = CAPDMA_BUS_INTERFACE_SIZE_V2 + 8, STATUS_INVALID_BUFFER_SIZE),
            // Version 2 claimed in the version-1 table's size.
            (|t| t.header.version = 2, STATUS_INVALID_BUFFER_SIZE),
            (|t| t.program_frame = None, STATUS_NOT_SUPPORTED),
            (|t| t.register_completion = None, STATUS_NOT_SUPPORTED),
            // Version 2 without its function.
            (
                |t| {
                    t.header.version = 2;
                    t.header.size = CAPDMA_BUS_INTERFACE_SIZE_V2;
                },
                STATUS_NOT_SUPPORTED,
            ),
            (
                |t| {
                    t.header.version = 2;
                    t.header.size = CAPDMA_BUS_INTERFACE_SIZE_V2;
                    t.get_dma_adapter = None;
                },
                STATUS_NOT_SUPPORTED,
            ),
        ];
        for (i, (mutate, expected)) in cases.iter().enumerate() {
            let mut answer = bus.table();
            mutate(&mut answer);
            // SAFETY: the fake's table is valid while `bus` lives.
            let got = unsafe { BusClient::from_query(&answer, 0) };
            assert_eq!(got.err(), Some(*expected), "case {i}");
            assert_eq!(bus.derefs.get(), u32::try_from(i).unwrap() + 1, "reference dropped in case {i}");
        }
        let mut answer = bus.table();
        answer.header.interface_dereference = None;
        // SAFETY: as above.
        assert_eq!(unsafe { BusClient::from_query(&answer, 0) }.err(), Some(STATUS_NOT_SUPPORTED));
    }

    /// A version-1 answer (what a bus serving 1 fills for a version-2
    /// request) is kept, in the version-1 size or the requested one, and
    /// has no parts: `ProgramFramePart` is never called, even when the
    /// buffer holds a pointer there.
    #[test]
    fn a_version_1_answer_has_no_frame_parts() {
        let bus = FakeBus::scatter_gather();
        let v2 = FakeBus::scatter_gather_v2(64);
        for size in [CAPDMA_BUS_INTERFACE_SIZE_V1, CAPDMA_BUS_INTERFACE_SIZE_V2] {
            let mut answer = bus.table();
            answer.header.size = size;
            answer.program_frame_part = v2.table().program_frame_part;
            // SAFETY: the fake's table is valid while `bus` lives.
            let client = unsafe { BusClient::from_query(&answer, 0) }.unwrap();
            assert_eq!((client.version(), client.size()), (1, size));
            let ch = client.channel();
            assert!(!ch.supports_frame_parts());
            let element = SgElement { logical_address: 0x1000, byte_count: 512, alignment: 0 };
            // SAFETY: one live element.
            let part = unsafe { ch.program_frame_part(1, &raw const element, 1, CAPDMA_PART_START) };
            assert_eq!(part, Err(STATUS_NOT_SUPPORTED));
            assert!(v2.part_calls.borrow().is_empty(), "nothing called");
            // SAFETY: `ch` is not used after this.
            unsafe { client.release() };
        }
        assert_eq!(bus.derefs.get(), 2);
    }

    /// A version-2 answer keeps `ProgramFramePart`: the wrapper passes the
    /// elements and flags and answers the count the bus accepted.
    #[test]
    fn a_version_2_answer_posts_frame_parts() {
        let bus = FakeBus::scatter_gather_v2(2);
        let answer = bus.table();
        // SAFETY: the fake's table is valid while `bus` lives.
        let client = unsafe { BusClient::from_query(&answer, 0) }.unwrap();
        assert_eq!((client.version(), client.size()), (2, CAPDMA_BUS_INTERFACE_SIZE_V2));
        let ch = client.channel();
        assert!(ch.supports_frame_parts());
        let elements: Vec<SgElement> = (0..3)
            .map(|i| SgElement { logical_address: 0x1000 * (i + 1), byte_count: 512, alignment: 0 })
            .collect();
        // SAFETY: three live elements.
        let not_running = unsafe { ch.program_frame_part(7, elements.as_ptr(), 3, CAPDMA_PART_START | CAPDMA_PART_END) };
        assert_eq!(not_running, Err(STATUS_DEVICE_NOT_READY));
        bus.running.set(true);
        // SAFETY: as above.
        let first = unsafe { ch.program_frame_part(7, elements.as_ptr(), 3, CAPDMA_PART_START | CAPDMA_PART_END) };
        assert_eq!(first, Ok(2), "two free ring entries");
        // SAFETY: as above.
        let busy = unsafe { ch.program_frame_part(7, elements[2..].as_ptr(), 1, CAPDMA_PART_END) };
        assert_eq!(busy, Err(STATUS_DEVICE_BUSY));
        let calls = bus.part_calls.borrow();
        assert_eq!(calls.len(), 3);
        assert_eq!((calls[1].tag, calls[1].flags, calls[1].accepted), (7, CAPDMA_PART_START | CAPDMA_PART_END, 2));
        assert_eq!(calls[1].elements, elements);
        assert_eq!(calls[2].elements, elements[2..]);
        drop(calls);
        // SAFETY: `ch` is not used after this.
        unsafe { client.release() };
        assert_eq!(bus.derefs.get(), 1);
    }

    #[test]
    fn query_buffer_asks_for_version_2() {
        let q = BusClient::query_buffer();
        assert_eq!((q.header.size, q.header.version), (CAPDMA_BUS_INTERFACE_SIZE_V2, 2));
        assert!(q.program_frame.is_none());
        assert!(q.program_frame_part.is_none());
    }
}
