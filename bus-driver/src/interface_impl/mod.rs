//! `GUID_CAPDMA_BUS_INTERFACE`: answering `IRP_MN_QUERY_INTERFACE` with a
//! [`CapdmaBusInterface`] whose function pointers are `extern "system"`
//! thunks generic over the platform ([`thunks`]), and here the safe methods
//! behind them.
//!
//! `Context` is the [`BusDevice`]'s address: the device must not move or be
//! dropped while a reference is held. Every thunk checks `Context` and its
//! pointers (null, alignment) before use; the methods return the NTSTATUS
//! documented in `capdma_interface::table`:
//!
//! * `STATUS_INVALID_PARAMETER`: null context or out-pointer, channel not
//!   below the board's channel count, bad arguments;
//! * `STATUS_DEVICE_REMOVED`: surprise-removed or the board read as gone;
//! * `STATUS_DEVICE_NOT_READY`: the device is not started (or, per
//!   function, the channel is not running; `StartChannel`: the device is
//!   out of D0, see `crate::power`);
//! * `STATUS_INVALID_DEVICE_REQUEST`: wrong DMA mode for the function, or
//!   called above its IRQL (`StartChannel`/`StopChannel` need
//!   `PASSIVE_LEVEL`, the others `<= DISPATCH_LEVEL`).
use crate::channel::engine::Engine;
use crate::channel::format::RunState;
use crate::channel::{Callback, Channel};
use crate::device::{BusDevice, DeviceState};
use crate::hw::ChannelRegs;
use crate::ports::{BusPlatform, DmaAdapterPort, DISPATCH_LEVEL, PASSIVE_LEVEL};
use capdma_interface::negotiate::negotiate;

/// The highest interface version the bus serves: 2 (`ProgramFramePart`).
pub const SERVED_VERSION: u16 = capdma_interface::table::CAPDMA_BUS_INTERFACE_VERSION;
use capdma_interface::regs::channel;
use capdma_interface::status::{
    NtStatus, STATUS_DEVICE_BUSY, STATUS_DEVICE_NOT_READY, STATUS_DEVICE_REMOVED, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS,
};
use capdma_interface::table::{
    CapdmaBusInterface, ChannelFormat, DmaConfig, PfnCompletion, SgElement, SlotRing,
};
use core::ffi::c_void;

mod thunks;

/// What `GetDmaAdapter` returns: the `PDMA_ADAPTER`, `MaxMappingByteCount`
/// (bytes) and the map registers granted.
type AdapterAnswer = (*mut c_void, u32, u32);

impl<P: BusPlatform> BusDevice<P> {
    /// `IRP_MN_QUERY_INTERFACE` for `GUID_CAPDMA_BUS_INTERFACE`: negotiates
    /// `size`/`version` (`Parameters.QueryInterface.Size`/`.Version`,
    /// `capdma_interface::negotiate`), fills `out` (the IRP's `Interface`
    /// buffer, at least `size` bytes) with the served version's table and
    /// takes one interface reference for the caller. `PASSIVE_LEVEL`.
    ///
    /// # Returns
    /// `STATUS_SUCCESS`; `STATUS_INVALID_PARAMETER` for a null `out`;
    /// `STATUS_DEVICE_REMOVED` after surprise removal; `STATUS_DEVICE_NOT_READY`
    /// unless started; `STATUS_REVISION_MISMATCH` / `STATUS_BUFFER_TOO_SMALL`
    /// from the negotiation. Nothing is written and no reference taken on failure.
    pub fn query_interface(&self, size: u16, version: u16, out: *mut CapdmaBusInterface) -> NtStatus {
        if out.is_null() {
            return STATUS_INVALID_PARAMETER;
        }
        if self.is_removed() {
            return STATUS_DEVICE_REMOVED;
        }
        if self.state() != DeviceState::Started {
            return STATUS_DEVICE_NOT_READY;
        }
        let negotiated = match negotiate(size, version, SERVED_VERSION) {
            Ok(n) => n,
            Err(status) => return status,
        };
        let table = thunks::interface_table(self, negotiated);
        let bytes = usize::from(negotiated.size).min(size_of::<CapdmaBusInterface>());
        // SAFETY: `out` is non-null and, per the IRP_MN_QUERY_INTERFACE
        // contract, points to `size` writable bytes; the negotiation checked
        // `size >= negotiated.size >= bytes`. The table is a local value, so
        // the ranges cannot overlap; a byte copy needs no alignment.
        unsafe { core::ptr::copy_nonoverlapping((&raw const table).cast::<u8>(), out.cast::<u8>(), bytes) };
        self.reference();
        STATUS_SUCCESS
    }

    /// The IRQL check (at most `max`) and the channel check of an interface
    /// call, then the channel's state.
    fn checked_channel(&self, channel: u32, max: u8) -> Result<&Channel, NtStatus> {
        self.check_irql(max)?;
        let index = self.check_channel(channel)?;
        self.channels.get(index).ok_or(STATUS_INVALID_PARAMETER)
    }

    /// Common checks: present (not removed, not read as gone; out of D0 is
    /// still present), started, `channel` below the channel count.
    fn check_channel(&self, channel: u32) -> Result<usize, NtStatus> {
        if self.is_removed() {
            return Err(STATUS_DEVICE_REMOVED);
        }
        if self.state() != DeviceState::Started {
            return Err(STATUS_DEVICE_NOT_READY);
        }
        if channel >= self.channel_count() {
            return Err(STATUS_INVALID_PARAMETER);
        }
        usize::try_from(channel).map_err(|_| STATUS_INVALID_PARAMETER)
    }

    fn check_irql(&self, max: u8) -> Result<(), NtStatus> {
        if self.platform.current_irql() > max {
            Err(STATUS_INVALID_DEVICE_REQUEST)
        } else {
            Ok(())
        }
    }

    /// `GetDmaConfig` (`<= DISPATCH_LEVEL`): channel `channel`'s DMA
    /// configuration.
    ///
    /// # Errors
    /// The common ones (see the module documentation).
    pub fn dma_config(&self, channel: u32) -> Result<DmaConfig, NtStatus> {
        self.check_irql(DISPATCH_LEVEL)?;
        let index = self.check_channel(channel)?;
        let chan = self.channels.get(index).ok_or(STATUS_INVALID_PARAMETER)?;
        let info = self.info().ok_or(STATUS_DEVICE_NOT_READY)?;
        let mut config = DmaConfig {
            mode: info.decision.mode as u32,
            reason: info.decision.reason as u32,
            alignment: info.caps.alignment,
            max_transfer: info.max_transfer,
            address_bits: if info.caps.address_64 { 64 } else { 32 },
            slot_count: 0,
            slot_bytes: 0,
            descriptor_count: 0,
            channel_count: info.channel_count,
            max_frame_bytes: info.max_frame_bytes,
        };
        let reported = self.at_dispatch(|| chan.state.lock().engine().map(|engine| engine.report(&mut config)));
        reported.ok_or(STATUS_DEVICE_NOT_READY)?;
        Ok(config)
    }

    /// `GetDmaAdapter` (`<= DISPATCH_LEVEL`).
    fn dma_adapter(&self, channel: u32) -> Result<AdapterAnswer, NtStatus> {
        self.check_irql(DISPATCH_LEVEL)?;
        let index = self.check_channel(channel)?;
        let chan = self.channels.get(index).ok_or(STATUS_INVALID_PARAMETER)?;
        let answer = self.at_dispatch(|| {
            let shared = self.shared.lock();
            match (&shared.adapter, shared.info) {
                (Some(adapter), Some(info)) => Some((adapter.raw(), info)),
                _ => None,
            }
        });
        let (raw, info) = answer.ok_or(STATUS_DEVICE_NOT_READY)?;
        // Only the S/G engine maps the child's buffers.
        let scatter_gather = self.at_dispatch(|| matches!(chan.state.lock().engine(), Some(Engine::ScatterGather(_))));
        if !scatter_gather {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        Ok((raw, info.max_mapping_byte_count, info.map_registers))
    }

    /// `ProgramFrame` (`<= DISPATCH_LEVEL`): the S/G engine posts the frame
    /// ([`crate::channel::sg::SgEngine::post_frame`]: one descriptor per
    /// element, the frame in flight, a release fence), then
    /// `RING_PRODUCER` is written.
    fn program_frame(&self, channel: u32, tag: u32, elements: &[SgElement]) -> NtStatus {
        match self.post_on_ring(channel, |engine, frame_bytes| engine.post_frame(tag, elements, frame_bytes)) {
            Ok(_) => STATUS_SUCCESS,
            Err(status) => status,
        }
    }

    /// `ProgramFramePart` (`<= DISPATCH_LEVEL`, interface version 2): the
    /// S/G engine posts as much of the part as the ring has room for
    /// ([`crate::channel::sg::SgEngine::post_part`]), then `RING_PRODUCER`
    /// is written. Returns the elements accepted.
    fn program_frame_part(&self, channel: u32, tag: u32, elements: &[SgElement], flags: u32) -> Result<u32, NtStatus> {
        self.post_on_ring(channel, |engine, frame_bytes| engine.post_part(tag, elements, flags, frame_bytes))
            .map(|(_, accepted)| accepted)
    }

    /// Posts on channel `channel`'s descriptor ring under its lock: `post`
    /// gets the S/G engine and the running format's frame bytes; on success
    /// `RING_PRODUCER` is written (unless the board is suspended: the
    /// power-up hands the ring over).
    ///
    /// # Errors
    /// The channel checks; `STATUS_DEVICE_NOT_READY` when the channel is not
    /// running; `STATUS_INVALID_DEVICE_REQUEST` in common-buffer mode;
    /// `post`'s error.
    fn post_on_ring<T>(
        &self,
        channel: u32,
        post: impl FnOnce(&mut crate::channel::sg::SgEngine, u32) -> Result<T, NtStatus>,
    ) -> Result<T, NtStatus> {
        let chan = self.checked_channel(channel, DISPATCH_LEVEL)?;
        let regs = self.platform.registers();
        self.at_dispatch(|| {
            let mut st = chan.state.lock();
            let running = st.run.map(|run| run.geometry.frame_bytes);
            let hw = st.hw(self.hardware_present());
            let engine = match st.engine_mut() {
                None => return Err(STATUS_DEVICE_NOT_READY),
                Some(Engine::ScatterGather(engine)) => engine,
                Some(Engine::CommonBuffer(_)) => return Err(STATUS_INVALID_DEVICE_REQUEST),
            };
            let Some(frame_bytes) = running else {
                return Err(STATUS_DEVICE_NOT_READY);
            };
            let posted = post(engine, frame_bytes)?;
            // Suspended (`crate::power`): `power_up`'s resume hands it over.
            if hw {
                ChannelRegs::new(regs, channel).write(channel::RING_PRODUCER, engine.producer());
            }
            Ok(posted)
        })
    }

    /// `GetSlotRing` (`<= DISPATCH_LEVEL`).
    fn slot_ring(&self, channel: u32) -> Result<SlotRing, NtStatus> {
        self.check_irql(DISPATCH_LEVEL)?;
        let index = self.check_channel(channel)?;
        let chan = self.channels.get(index).ok_or(STATUS_INVALID_PARAMETER)?;
        self.at_dispatch(|| {
            let st = chan.state.lock();
            let line_pitch = st.run.map_or(0, |r| r.geometry.line_pitch);
            match st.engine() {
                None => Err(STATUS_DEVICE_NOT_READY),
                Some(Engine::CommonBuffer(slots)) => Ok(slots.slot_ring(line_pitch)),
                Some(Engine::ScatterGather(_)) => Err(STATUS_INVALID_DEVICE_REQUEST),
            }
        })
    }

    /// `ReturnSlot` (`<= DISPATCH_LEVEL`).
    fn return_slot(&self, channel: u32, slot: u32) -> NtStatus {
        let chan = match self.checked_channel(channel, DISPATCH_LEVEL) {
            Ok(chan) => chan,
            Err(status) => return status,
        };
        let regs = self.platform.registers();
        self.at_dispatch(|| {
            let mut st = chan.state.lock();
            // Suspended (`crate::power`): `power_up`'s resume hands it over.
            let write = st.running() && st.hw(self.hardware_present());
            let slots = match st.engine_mut() {
                None => return STATUS_DEVICE_NOT_READY,
                Some(Engine::CommonBuffer(slots)) => slots,
                Some(Engine::ScatterGather(_)) => return STATUS_INVALID_DEVICE_REQUEST,
            };
            match slots.return_slot(slot) {
                Ok(moved) => {
                    if moved && write {
                        ChannelRegs::new(regs, channel).write(channel::RING_PRODUCER, slots.producer());
                    }
                    STATUS_SUCCESS
                }
                Err(status) => status,
            }
        })
    }

    /// `StartChannel` (`PASSIVE_LEVEL`): validates `format`, enables the
    /// channel's interrupts and programs and runs the engine.
    /// `STATUS_DEVICE_NOT_READY` out of D0 (the board cannot be programmed;
    /// channels already running are restarted by `power_up`).
    ///
    /// A delivery in progress on another processor (a DPC runs the consumer
    /// of every channel, so it passes through stopped ones too) is waited
    /// for, not answered with `STATUS_DEVICE_BUSY`: the contract refuses
    /// only a running channel, and the child fails `PAUSE -> RUN` on BUSY.
    /// Waiting is safe at `PASSIVE_LEVEL`: the deliverer runs at
    /// `DISPATCH_LEVEL` on another processor.
    fn start_channel(&self, channel: u32, format: &ChannelFormat) -> NtStatus {
        let chan = match self.checked_channel(channel, PASSIVE_LEVEL) {
            Ok(chan) => chan,
            Err(status) => return status,
        };
        let regs = self.platform.registers();
        loop {
            let status = self.at_dispatch(|| {
                let mut st = chan.state.lock();
                let Some(engine) = st.engine() else {
                    return Some(STATUS_DEVICE_NOT_READY);
                };
                if st.running() || engine.frames_held() > 0 {
                    return Some(STATUS_DEVICE_BUSY);
                }
                if st.reset_pending.is_some() {
                    // The last reset has not completed: the engine may still write.
                    return Some(STATUS_DEVICE_BUSY);
                }
                if st.delivering {
                    return None;
                }
                if !st.hw(self.hardware_present()) {
                    // Out of D0, or back but not yet resumed by `power_up`
                    // (`crate::power`): only the resume programs the board.
                    return Some(STATUS_DEVICE_NOT_READY);
                }
                let geometry = match engine.validate_format(format) {
                    Ok(g) => g,
                    Err(status) => return Some(status),
                };
                self.set_channel_interrupts(channel, true);
                st.start_run(regs, channel, RunState { format: *format, geometry });
                Some(STATUS_SUCCESS)
            });
            match status {
                Some(status) => return status,
                None => core::hint::spin_loop(),
            }
        }
    }

    /// `StopChannel` (`PASSIVE_LEVEL`): stops the engine, completes every
    /// posted S/G frame with `STATUS_CANCELLED` through the callback and
    /// waits for any delivery in progress, reclaims the board's slots.
    /// Idempotent; succeeds after surprise removal. When the board is gone
    /// but `IRP_MN_SURPRISE_REMOVAL` has not come yet (the ISR read all
    /// ones), the channel is stopped without touching a register and its
    /// posted frames are completed with `STATUS_DEVICE_REMOVED`, so the
    /// child can unregister its callback.
    fn stop_channel(&self, channel: u32) -> NtStatus {
        if let Err(status) = self.check_irql(PASSIVE_LEVEL) {
            return status;
        }
        let index = match self.check_channel(channel) {
            Ok(i) => i,
            Err(STATUS_DEVICE_REMOVED) if channel < self.channel_count() => match usize::try_from(channel) {
                Ok(i) => i,
                Err(_) => return STATUS_SUCCESS,
            },
            Err(STATUS_DEVICE_REMOVED) => return STATUS_SUCCESS,
            Err(status) => return status,
        };
        let Some(chan) = self.channels.get(index) else {
            return STATUS_INVALID_PARAMETER;
        };
        let fate = if self.is_removed() { STATUS_DEVICE_REMOVED } else { capdma_interface::status::STATUS_CANCELLED };
        let regs = self.platform.registers();
        self.at_dispatch(|| {
            let mut st = chan.state.lock();
            // Under the lock: `power_down` marks the device out of D0 before
            // it takes the channel locks.
            let hw = self.hardware_present();
            if st.running() {
                self.set_channel_interrupts(channel, false);
                st.stop_run(hw.then_some(regs), channel, fate);
            }
        });
        self.deliver_and_wait(index);
        // A reset that has not completed holds the posted frames (the engine
        // may still write them); they come back through the callback once it has.
        let held = self.at_dispatch(|| {
            let st = chan.state.lock();
            st.reset_pending.is_some() && st.frames_held() > 0
        });
        if held {
            STATUS_PENDING
        } else {
            STATUS_SUCCESS
        }
    }

    /// `RegisterCompletion` (`<= DISPATCH_LEVEL`).
    fn register_completion(&self, channel: u32, callback: Option<PfnCompletion>, context: *mut c_void) -> NtStatus {
        if let Err(status) = self.check_irql(DISPATCH_LEVEL) {
            return status;
        }
        let index = match self.check_channel(channel) {
            Ok(i) => i,
            // Unregistering is part of teardown: let it succeed after removal.
            Err(STATUS_DEVICE_REMOVED) if callback.is_none() && channel < self.channel_count() => {
                usize::try_from(channel).unwrap_or(usize::MAX)
            }
            Err(status) => return status,
        };
        let Some(chan) = self.channels.get(index) else {
            return STATUS_INVALID_PARAMETER;
        };
        self.at_dispatch(|| {
            let mut st = chan.state.lock();
            // A completion taken out for delivery carries the callback it was
            // taken with, and `callback` cannot change while one is (this
            // check), so with no callback registered there is none in flight:
            // a DPC merely passing through the stopped channel must not make
            // registering fail (the contract refuses only a running channel).
            if st.running() || (st.delivering && st.callback.is_some()) {
                return STATUS_DEVICE_BUSY;
            }
            if st.reset_pending.is_some() && st.frames_held() > 0 {
                // Frames the engine may still write are held until its reset
                // completes; they go back through this callback then.
                return STATUS_DEVICE_BUSY;
            }
            st.callback = callback.map(|func| Callback { func, context });
            STATUS_SUCCESS
        })
    }
}
