//! The one fake bus table: the `CapdmaBusInterface` of `extern "system"`
//! thunks a fake bus answers a query with, over any [`FakeChannel`] — the
//! single-threaded recording bus of the pin tests ([`super::fake::FakeBus`])
//! and the thread-safe contract-checking bus of the concurrency tests.
//! The thunks check the pointers (the contract's `STATUS_INVALID_PARAMETER`
//! for a null out-pointer, channel 0 only) and hand the fake plain values.
use capdma_interface::status::{NtStatus, STATUS_INVALID_PARAMETER, STATUS_NOT_IMPLEMENTED, STATUS_SUCCESS};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, Completion, DmaConfig, InterfaceHeader, PfnCompletion, SgElement, SlotRing,
    CAPDMA_BUS_INTERFACE_SIZE_V1, CAPDMA_BUS_INTERFACE_SIZE_V2,
};
use core::ffi::c_void;

/// What a fake bus does behind each function of the table (one channel, 0).
pub trait FakeChannel: Sized {
    /// `InterfaceDereference`.
    fn dereference(&self) {}
    /// `GetDmaConfig`.
    fn dma_config(&self) -> DmaConfig;
    /// `GetDmaAdapter`: (adapter, `MaxMappingByteCount`, map registers).
    fn dma_adapter(&self) -> Result<(*mut c_void, u32, u32), NtStatus>;
    /// `ProgramFrame(tag, elements)`; `elements` is empty when the caller
    /// passed none (a null pointer or a zero count).
    fn program_frame(&self, tag: u32, elements: &[SgElement]) -> NtStatus;
    /// `GetSlotRing`.
    fn slot_ring(&self) -> Result<SlotRing, NtStatus>;
    /// `ReturnSlot(slot)`.
    fn return_slot(&self, slot: u32) -> NtStatus;
    /// `StartChannel(format)`.
    fn start_channel(&self, format: ChannelFormat) -> NtStatus;
    /// `StopChannel`.
    fn stop_channel(&self) -> NtStatus;
    /// `RegisterCompletion(callback, context)`; `None` unregisters.
    fn register_completion(&self, callback: Option<(PfnCompletion, *mut c_void)>) -> NtStatus;
    /// The interface version the fake serves: 1 (the default) answers the
    /// version-1 table without `ProgramFramePart`, 2 the version-2 table.
    fn interface_version(&self) -> u16 {
        1
    }
    /// `ProgramFramePart(tag, elements, flags)` (version 2): the status and
    /// `*accepted`. `elements` is empty when the caller passed none. The
    /// default (a fake that never expects the call) refuses it.
    fn program_frame_part(&self, tag: u32, elements: &[SgElement], flags: u32) -> (NtStatus, u32) {
        let _ = (tag, elements, flags);
        (STATUS_NOT_IMPLEMENTED, 0)
    }

    /// The table the bus answers a query with (context = `self`, which
    /// must stay alive and in place while the table is used): version 2
    /// when [`Self::interface_version`] says so, else version 1.
    fn table(&self) -> CapdmaBusInterface {
        let v2 = self.interface_version() >= 2;
        CapdmaBusInterface {
            header: InterfaceHeader {
                size: if v2 { CAPDMA_BUS_INTERFACE_SIZE_V2 } else { CAPDMA_BUS_INTERFACE_SIZE_V1 },
                version: if v2 { 2 } else { 1 },
                context: core::ptr::from_ref(self).cast_mut().cast::<c_void>(),
                interface_reference: Some(reference),
                interface_dereference: Some(dereference::<Self>),
            },
            get_dma_config: Some(get_dma_config::<Self>),
            get_dma_adapter: Some(get_dma_adapter::<Self>),
            program_frame: Some(program_frame::<Self>),
            get_slot_ring: Some(get_slot_ring::<Self>),
            return_slot: Some(return_slot::<Self>),
            start_channel: Some(start_channel::<Self>),
            stop_channel: Some(stop_channel::<Self>),
            register_completion: Some(register_completion::<Self>),
            program_frame_part: if v2 { Some(program_frame_part::<Self>) } else { None },
        }
    }
}

fn fake<'a, B: FakeChannel>(context: *mut c_void) -> &'a B {
    // SAFETY: every table made by `FakeChannel::table` has the address of a
    // `B` the test keeps alive (and in place) while the table is used.
    unsafe { &*context.cast_const().cast::<B>() }
}

unsafe extern "system" fn reference(_context: *mut c_void) {}

unsafe extern "system" fn dereference<B: FakeChannel>(context: *mut c_void) {
    fake::<B>(context).dereference();
}

unsafe extern "system" fn get_dma_config<B: FakeChannel>(
    context: *mut c_void,
    channel: u32,
    config: *mut DmaConfig,
) -> NtStatus {
    if channel != 0 || config.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: a valid out-pointer (the contract), not null.
    unsafe { config.write(fake::<B>(context).dma_config()) };
    STATUS_SUCCESS
}

unsafe extern "system" fn get_dma_adapter<B: FakeChannel>(
    context: *mut c_void,
    _channel: u32,
    adapter: *mut *mut c_void,
    max_mapping_byte_count: *mut u32,
    map_registers: *mut u32,
) -> NtStatus {
    match fake::<B>(context).dma_adapter() {
        Ok((a, max, registers)) => {
            // SAFETY: valid out-pointers (the contract), here and below.
            unsafe { adapter.write(a) };
            // SAFETY: as above.
            unsafe { max_mapping_byte_count.write(max) };
            // SAFETY: as above.
            unsafe { map_registers.write(registers) };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

unsafe extern "system" fn program_frame<B: FakeChannel>(
    context: *mut c_void,
    _channel: u32,
    tag: u32,
    elements: *const SgElement,
    count: u32,
) -> NtStatus {
    let elements = if elements.is_null() || count == 0 {
        &[][..]
    } else {
        // SAFETY: `count` readable elements for the call (the contract).
        unsafe { core::slice::from_raw_parts(elements, count as usize) }
    };
    fake::<B>(context).program_frame(tag, elements)
}

unsafe extern "system" fn program_frame_part<B: FakeChannel>(
    context: *mut c_void,
    _channel: u32,
    tag: u32,
    elements: *const SgElement,
    count: u32,
    flags: u32,
    accepted: *mut u32,
) -> NtStatus {
    if accepted.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let elements = if elements.is_null() || count == 0 {
        &[][..]
    } else {
        // SAFETY: `count` readable elements for the call (the contract).
        unsafe { core::slice::from_raw_parts(elements, count as usize) }
    };
    let (status, n) = fake::<B>(context).program_frame_part(tag, elements, flags);
    // SAFETY: a valid out-pointer (the contract), not null.
    unsafe { accepted.write(n) };
    status
}

unsafe extern "system" fn get_slot_ring<B: FakeChannel>(context: *mut c_void, _channel: u32, ring: *mut SlotRing) -> NtStatus {
    match fake::<B>(context).slot_ring() {
        Ok(answer) => {
            // SAFETY: a valid out-pointer (the contract).
            unsafe { ring.write(answer) };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

unsafe extern "system" fn return_slot<B: FakeChannel>(context: *mut c_void, _channel: u32, slot: u32) -> NtStatus {
    fake::<B>(context).return_slot(slot)
}

unsafe extern "system" fn start_channel<B: FakeChannel>(
    context: *mut c_void,
    _channel: u32,
    format: *const ChannelFormat,
) -> NtStatus {
    if format.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: a readable format (the contract), not null.
    let format = unsafe { format.read() };
    fake::<B>(context).start_channel(format)
}

unsafe extern "system" fn stop_channel<B: FakeChannel>(context: *mut c_void, _channel: u32) -> NtStatus {
    fake::<B>(context).stop_channel()
}

unsafe extern "system" fn register_completion<B: FakeChannel>(
    context: *mut c_void,
    _channel: u32,
    callback: Option<PfnCompletion>,
    callback_context: *mut c_void,
) -> NtStatus {
    fake::<B>(context).register_completion(callback.map(|f| (f, callback_context)))
}

/// Calls `callback(context, completion)` (as the bus DPC does).
///
/// # Safety
/// `callback` and `context` must be what a pin registered, still registered.
pub unsafe fn call_back(callback: (PfnCompletion, *mut c_void), completion: &Completion) {
    // SAFETY: the caller's guarantee.
    unsafe { (callback.0)(callback.1, core::ptr::from_ref(completion)) };
}
