//! [`BusDevice`]: the FDO's state — Plug and Play start/stop/removal, the DMA adapter
//! and every common buffer, the channels.
//!
//! Plug and Play entry points run at `PASSIVE_LEVEL` and are serialized by the Plug and Play
//! manager (the glue calls them from `IRP_MN_*` handlers). The ISR
//! ([`BusDevice::isr`]), the DPC ([`BusDevice::dpc`]), the watchdog and the
//! interface functions may run concurrently with each other; all shared
//! state is atomics or per-channel spin locks taken at `DISPATCH_LEVEL`.
//!
//! Teardown order (Driver Verifier 0xE6/0x07): [`BusDevice::stop_engines`],
//! then the interrupt disconnected (`IoDisconnectInterruptEx`), the
//! watchdog cancelled and DPCs flushed, then [`BusDevice::stop`] frees every
//! common buffer and puts the DMA adapter last, then BAR0 is unmapped: one
//! sequence, [`BusDevice::release_hardware`] (`crate::teardown`), for the
//! glue and the simulation alike.
use crate::channel::engine::Engine;
use crate::channel::slots::slot_bytes_for;
use crate::channel::{Channel, ChannelBuffers, ChannelStats, CompletionQueue};
use crate::config::StartConfig;
use crate::dma_buffer::DmaBuffer;
use crate::hw::{reset_channel, ChannelRegs, ResetOutcome};
use crate::mode::{allocate_engine, decide_after_adapter, decide_mode, device_description, ModeDecision};
use crate::ports::{BusPlatform, DmaAdapterPort, RegisterPort, DISPATCH_LEVEL, PASSIVE_LEVEL};
use capdma_interface::regs::{self, global, int_done, int_error, Caps, BOARD_ID, RESET_POLL_READS};
use capdma_interface::status::{
    NtStatus, STATUS_CANCELLED, STATUS_DEVICE_BUSY, STATUS_DEVICE_REMOVED, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_IO_DEVICE_ERROR, STATUS_SUCCESS,
};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

/// Most channels a board may have (`regs::MAX_CHANNELS`).
pub const MAX_CHANNELS: usize = regs::MAX_CHANNELS;

/// The device's Plug and Play state.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, zerocopy::TryFromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
pub enum DeviceState {
    /// Not started (initial, after `stop`, after a failed start).
    Stopped = 0,
    /// `start` in progress.
    Starting = 1,
    /// Started: resources allocated, interface served.
    Started = 2,
    /// `stop` in progress.
    Stopping = 3,
}

impl DeviceState {
    /// The state stored as `v`; a value no state has (never stored) reads
    /// as [`Self::Stopped`].
    fn from_u8(v: u8) -> Self {
        zerocopy::try_transmute!(v).unwrap_or(Self::Stopped)
    }
}

/// What the start read from the board and decided; fixed until stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceInfo {
    pub decision: ModeDecision,
    pub caps: Caps,
    /// `MAX_TRANSFER`, bytes.
    pub max_transfer: u32,
    /// `MAX_FRAME_BYTES`, bytes.
    pub max_frame_bytes: u32,
    /// `MaxMappingByteCount` handed to the child, bytes.
    pub max_mapping_byte_count: u32,
    /// `NumberOfMapRegisters` of the adapter kept.
    pub map_registers: u32,
    /// Channels on the board.
    pub channel_count: u32,
}

/// The adapter and the start facts, behind one spin lock (held briefly, at DISPATCH).
pub(crate) struct Shared<A> {
    pub adapter: Option<A>,
    pub info: Option<DeviceInfo>,
}

/// The bus driver's device: one per board (the FDO's device extension on
/// Windows, a pinned box in the simulation).
///
/// The interface table handed to children carries this object's address as
/// `Context`: **a `BusDevice` must not move or be dropped while any interface
/// reference is held** ([`BusDevice::reference_count`] > 0) or while its
/// interrupt is connected.
pub struct BusDevice<P: BusPlatform> {
    pub(crate) platform: P,
    state: AtomicU8,
    /// `surprise_remove` was called.
    pub(crate) removed: AtomicBool,
    /// The ISR or a reset read the board as gone (all ones).
    pub(crate) board_gone: AtomicBool,
    pub(crate) references: AtomicU32,
    /// `INT_STATUS` bits acknowledged by the ISR, not yet seen by the DPC.
    pub(crate) pending: AtomicU32,
    pub(crate) channel_count: AtomicU32,
    pub(crate) shared: spin::Mutex<Shared<P::Adapter>>,
    /// Shadow of `INT_ENABLE` (a leaf lock: may be taken under a channel lock).
    pub(crate) int_enable: spin::Mutex<u32>,
    pub(crate) channels: [Channel; MAX_CHANNELS],
    /// In D0 or not (`crate::power`).
    pub(crate) power: crate::power::PowerState,
}

/// Board facts read at start.
#[derive(Clone, Copy, Debug)]
struct BoardFacts {
    caps: Caps,
    max_transfer: u32,
    max_frame_bytes: u32,
}

impl<P: BusPlatform> BusDevice<P> {
    /// A stopped device over `platform` (`AddDevice`). Allocates nothing.
    pub const fn new(platform: P) -> Self {
        Self {
            platform,
            state: AtomicU8::new(DeviceState::Stopped as u8),
            removed: AtomicBool::new(false),
            board_gone: AtomicBool::new(false),
            references: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            channel_count: AtomicU32::new(0),
            shared: spin::Mutex::new(Shared { adapter: None, info: None }),
            int_enable: spin::Mutex::new(0),
            channels: [const { Channel::new() }; MAX_CHANNELS],
            power: crate::power::PowerState::new(),
        }
    }

    /// The platform the device was created over.
    pub const fn platform(&self) -> &P {
        &self.platform
    }

    /// The Plug and Play state.
    pub fn state(&self) -> DeviceState {
        DeviceState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether `surprise_remove` was called or the board read as gone.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire) || self.board_gone.load(Ordering::Acquire)
    }

    /// Whether registers may be touched: not surprise-removed, not read as
    /// gone, and in D0 (`crate::power`: out of D0 the board reads all ones).
    pub(crate) fn hardware_present(&self) -> bool {
        !self.is_removed() && self.power.in_d0()
    }

    /// Channels on the board while started, else 0.
    pub fn channel_count(&self) -> u32 {
        self.channel_count.load(Ordering::Acquire)
    }

    /// Runs `f` at `DISPATCH_LEVEL`: raises (`KeRaiseIrql`) first when
    /// called below it, lowers afterwards. Spin locks are only taken inside.
    pub(crate) fn at_dispatch<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.platform.current_irql() < DISPATCH_LEVEL {
            let old = self.platform.raise_to_dispatch();
            let result = f();
            self.platform.lower_irql(old);
            result
        } else {
            f()
        }
    }

    pub(crate) fn info(&self) -> Option<DeviceInfo> {
        self.at_dispatch(|| self.shared.lock().info)
    }

    /// The mode chosen at start; `None` while stopped.
    pub fn decision(&self) -> Option<ModeDecision> {
        self.info().map(|i| i.decision)
    }

    /// Interface references held by children (taken by `query_interface`
    /// and `InterfaceReference`, dropped by `InterfaceDereference`).
    pub fn reference_count(&self) -> u32 {
        self.references.load(Ordering::Acquire)
    }

    pub(crate) fn reference(&self) {
        self.references.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn dereference(&self) {
        // Saturating: an unbalanced dereference must not wrap to "busy forever".
        let _ = self
            .references
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// `IRP_MN_QUERY_REMOVE_DEVICE`: `STATUS_SUCCESS`, referenced or not.
    ///
    /// Plug and Play sends the query to every child before the bus and then
    /// `IRP_MN_REMOVE_DEVICE` to every child before the bus; a child drops
    /// its interface reference in its own removal, so the bus is always
    /// asked while still referenced, and refusing here would make the card
    /// impossible to disable or update without a reboot. A child that
    /// cannot go (an open pin) vetoes its own query. That a child never
    /// outlives the bus it references follows from that order and from each
    /// child PDO's object reference on the FDO (the glue); a reference still
    /// held at the bus's removal is the child's bug, survived and reported
    /// by [`Self::release_hardware`] (`crate::teardown`).
    pub const fn query_remove(&self) -> NtStatus {
        STATUS_SUCCESS
    }

    /// `IRP_MN_QUERY_STOP_DEVICE` (resource rebalance): `STATUS_DEVICE_BUSY`
    /// while any child holds an interface reference, else `STATUS_SUCCESS`.
    /// A stop frees every ring and puts the adapter while the children stay
    /// started (they get no stop for their parent's rebalance): the
    /// AVStream child has the adapter registered with KS
    /// (`KsDeviceRegisterAdapterObject`) and may hold slot memory.
    pub fn query_stop(&self) -> NtStatus {
        if self.reference_count() > 0 {
            STATUS_DEVICE_BUSY
        } else {
            STATUS_SUCCESS
        }
    }

    /// Counters of `channel` (accumulated since the last start; reads
    /// `DROPPED_FRAMES` while the channel runs). `None` for a channel index
    /// at or above [`MAX_CHANNELS`]. `<= DISPATCH_LEVEL`.
    pub fn channel_stats(&self, channel: u32) -> Option<ChannelStats> {
        let chan = self.channels.get(usize::try_from(channel).ok()?)?;
        let regs = self.platform.registers();
        Some(self.at_dispatch(|| {
            let mut st = chan.state.lock();
            // Under the lock: `power_down` marks the device out of D0 before
            // it takes the channel locks.
            if st.hw(self.hardware_present()) {
                st.account_dropped(&ChannelRegs::new(regs, channel));
            }
            st.stats
        }))
    }

    /// Common-buffer mode: the slots `channel` got at start (the start may
    /// have settled for fewer than configured). `None` in S/G mode, while
    /// stopped, or for a channel the board does not have.
    pub fn slot_count(&self, channel: u32) -> Option<u32> {
        let chan = self.channels.get(usize::try_from(channel).ok()?)?;
        self.at_dispatch(|| match chan.state.lock().engine() {
            Some(Engine::CommonBuffer(slots)) => Some(slots.count()),
            _ => None,
        })
    }

    /// `IRP_MN_START_DEVICE` (`PASSIVE_LEVEL`, after BAR0 is mapped; the glue
    /// connects the interrupt after this returns).
    ///
    /// Reads `ID`, `CAPS`, `MAX_TRANSFER`, `MAX_FRAME_BYTES`; decides the
    /// mode ([`crate::mode`]); gets the DMA adapter (`MaximumLength` = the
    /// largest frame), re-getting it with a common-buffer description when
    /// the grant of map registers turns the decision; allocates per channel
    /// a completion queue and either a descriptor ring (S/G) or one
    /// contiguous slot ring (CB), all aligned to `Caps.alignment`. A slot
    /// ring that cannot be had is retried with fewer slots, down to 2
    /// ([`Self::slot_count`] reports what each channel got). Leaves every
    /// channel reset and all interrupts disabled.
    ///
    /// # Errors
    /// * `STATUS_INVALID_DEVICE_REQUEST`: not `PASSIVE_LEVEL`, or not stopped.
    /// * `STATUS_DEVICE_REMOVED`: surprise-removed.
    /// * `STATUS_INVALID_PARAMETER`: `config` out of range.
    /// * `STATUS_IO_DEVICE_ERROR`: `ID` is not `BOARD_ID` (all ones: gone),
    ///   `CAPS` reports 0 or more than [`MAX_CHANNELS`] channels,
    ///   `MAX_FRAME_BYTES` is 0 or its slot size overflows, or an S/G board
    ///   reports `MAX_TRANSFER` 0.
    /// * `STATUS_INSUFFICIENT_RESOURCES`: no DMA adapter, or a common buffer
    ///   could not be had (even with 2 slots). Everything allocated is freed
    ///   and the adapter put before returning.
    pub fn start(&self, config: &StartConfig) -> Result<ModeDecision, NtStatus> {
        if self.platform.current_irql() != PASSIVE_LEVEL {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        if self.removed.load(Ordering::Acquire) {
            return Err(STATUS_DEVICE_REMOVED);
        }
        config.validate().map_err(crate::config::ConfigError::status)?;
        if self
            .state
            .compare_exchange(
                DeviceState::Stopped as u8,
                DeviceState::Starting as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        self.board_gone.store(false, Ordering::Release);
        // A device is in D0 when it starts.
        self.power.assume_d0();
        let result = self.start_inner(config);
        let next = if result.is_ok() { DeviceState::Started } else { DeviceState::Stopped };
        self.state.store(next as u8, Ordering::Release);
        result
    }

    fn read_board(&self) -> Result<BoardFacts, NtStatus> {
        let regs = self.platform.registers();
        if regs.read32(global::ID) != BOARD_ID {
            return Err(STATUS_IO_DEVICE_ERROR);
        }
        let caps = Caps::decode(regs.read32(global::CAPS));
        let channels = usize::try_from(caps.channels).unwrap_or(usize::MAX);
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(STATUS_IO_DEVICE_ERROR);
        }
        let max_transfer = regs.read32(global::MAX_TRANSFER);
        let max_frame_bytes = regs.read32(global::MAX_FRAME_BYTES);
        if max_frame_bytes == 0 || (caps.scatter_gather && max_transfer == 0) {
            return Err(STATUS_IO_DEVICE_ERROR);
        }
        Ok(BoardFacts { caps, max_transfer, max_frame_bytes })
    }

    fn start_inner(&self, config: &StartConfig) -> Result<ModeDecision, NtStatus> {
        let board = self.read_board()?;
        let caps = board.caps;
        // The slot size (common-buffer mode) must be representable whichever
        // mode is chosen: a board whose largest frame overflows it is refused.
        let slot_bytes = slot_bytes_for(board.max_frame_bytes, caps.alignment).ok_or(STATUS_IO_DEVICE_ERROR)?;
        let highest = self.platform.highest_physical_address();
        let mut decision = decide_mode(caps, config.dma_mode, highest);
        let description = device_description(decision.mode, caps, board.max_frame_bytes);
        let mut adapter = self.platform.get_dma_adapter(&description).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let after = decide_after_adapter(decision, caps, highest, adapter.map_registers(), board.max_frame_bytes);
        if after != decision {
            self.platform.put_dma_adapter(adapter);
            let description = device_description(after.mode, caps, board.max_frame_bytes);
            adapter = self.platform.get_dma_adapter(&description).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
            decision = after;
        }

        let channel_count = caps.channels;
        let count = usize::try_from(channel_count).unwrap_or(0).min(MAX_CHANNELS);
        let mut allocated: [Option<ChannelBuffers>; MAX_CHANNELS] = [None; MAX_CHANNELS];
        for index in 0..count {
            match allocate_channel(&adapter, decision, config, &board, slot_bytes) {
                Ok(buffers) => {
                    if let Some(entry) = allocated.get_mut(index) {
                        *entry = Some(buffers);
                    }
                }
                Err(status) => {
                    for buffers in allocated.iter().flatten() {
                        buffers.free(&adapter);
                    }
                    self.platform.put_dma_adapter(adapter);
                    return Err(status);
                }
            }
        }

        // The board to a known state: engines reset (and the resets
        // complete), interrupts off and acknowledged. An engine that will not
        // stop fails the start before the board learns of any buffer.
        let regs = self.platform.registers();
        regs.write32(global::INT_ENABLE, 0);
        for ch in 0..channel_count {
            if reset_channel(&ChannelRegs::new(regs, ch)) == ResetOutcome::Stuck {
                for buffers in allocated.iter().flatten() {
                    buffers.free(&adapter);
                }
                self.platform.put_dma_adapter(adapter);
                return Err(STATUS_IO_DEVICE_ERROR);
            }
        }
        regs.write32(global::INT_STATUS, u32::MAX);
        self.pending.store(0, Ordering::Release);

        let info = DeviceInfo {
            decision,
            caps,
            max_transfer: board.max_transfer,
            max_frame_bytes: board.max_frame_bytes,
            max_mapping_byte_count: config.effective_max_mapping_byte_count(board.max_transfer),
            map_registers: adapter.map_registers(),
            channel_count,
        };
        self.at_dispatch(|| {
            *self.int_enable.lock() = 0;
            for (chan, buffers) in self.channels.iter().zip(allocated.iter()) {
                let mut st = chan.state.lock();
                match buffers {
                    Some(buffers) => st.install(*buffers),
                    None => *st = crate::channel::ChannelState::new(),
                }
            }
            let mut shared = self.shared.lock();
            shared.info = Some(info);
            shared.adapter = Some(adapter);
        });
        self.channel_count.store(channel_count, Ordering::Release);
        Ok(decision)
    }

    /// Stops every channel's engine (`CTRL_RESET`, unless the board is
    /// gone), completes every posted S/G frame with `STATUS_CANCELLED`
    /// through the child's callback (at `DISPATCH_LEVEL`), reclaims the
    /// board's slots and disables the board's interrupts. `PASSIVE_LEVEL`;
    /// idempotent; part of [`Self::stop`], exposed so the glue can
    /// disconnect the interrupt between the two.
    pub fn stop_engines(&self) {
        if self.state() != DeviceState::Started && self.state() != DeviceState::Stopping {
            return;
        }
        let hw = self.hardware_present();
        let regs = self.platform.registers();
        for (index, chan) in self.channels.iter().enumerate() {
            let Ok(ch) = u32::try_from(index) else {
                break;
            };
            self.at_dispatch(|| {
                let mut st = chan.state.lock();
                if st.running() {
                    st.stop_run(hw.then_some(regs), ch, STATUS_CANCELLED);
                }
            });
            self.deliver_and_wait(index);
        }
        self.at_dispatch(|| {
            let mut shadow = self.int_enable.lock();
            *shadow = 0;
            if hw {
                regs.write32(global::INT_ENABLE, 0);
            }
        });
    }

    /// `IRP_MN_STOP_DEVICE` / `IRP_MN_REMOVE_DEVICE` (`PASSIVE_LEVEL`):
    /// [`Self::stop_engines`], then every common buffer is freed, then the
    /// DMA adapter is put — last. A channel whose engine never completed its
    /// reset (`STATUS_RUNNING` still set, see
    /// `capdma_interface::regs::RESET_POLL_READS`) may still write its ring
    /// and completion queue: those are never freed and the adapter is never
    /// put (leaked on purpose rather than reused under the board's DMA). Idempotent; a no-op unless started. Part
    /// of [`Self::release_hardware`], which disconnects the interrupt and
    /// flushes DPCs before calling this; children have dropped their
    /// interface references by then (Plug and Play removes them first; see
    /// `crate::teardown` for one that did not).
    pub fn stop(&self) {
        if self.platform.current_irql() != PASSIVE_LEVEL {
            return;
        }
        if self
            .state
            .compare_exchange(
                DeviceState::Started as u8,
                DeviceState::Stopping as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        self.stop_engines();
        self.channel_count.store(0, Ordering::Release);
        let mut taken: [Option<[DmaBuffer; 2]>; MAX_CHANNELS] = [None; MAX_CHANNELS];
        let hw = self.hardware_present();
        let regs = self.platform.registers();
        let mut stuck = false;
        let adapter = self.at_dispatch(|| {
            for (ch, (chan, slot)) in (0u32..).zip(self.channels.iter().zip(taken.iter_mut())) {
                let mut st = chan.state.lock();
                if st.rings_unsafe || (st.reset_pending.is_some() && !(hw && st.finish_reset(regs, ch, RESET_POLL_READS))) {
                    // The engine never finished its reset and may still
                    // write its ring and queue: they are forgotten, never
                    // freed (see `ChannelState::reset_pending`).
                    st.dma = None;
                    stuck = true;
                } else {
                    *slot = st.dma.take().map(|dma| dma.buffers());
                }
                st.callback = None;
            }
            let mut shared = self.shared.lock();
            shared.info = None;
            shared.adapter.take()
        });
        if let Some(adapter) = adapter {
            for buffer in taken.iter().flatten().flatten() {
                buffer.free(&adapter);
            }
            if stuck {
                // Its common buffers are still allocated: putting the
                // adapter now would be Driver Verifier 0xE6/0x07. Leaked.
                core::mem::forget(adapter);
            } else {
                self.platform.put_dma_adapter(adapter);
            }
        }
        self.state.store(DeviceState::Stopped as u8, Ordering::Release);
    }

    /// `IRP_MN_SURPRISE_REMOVAL`: the board is gone. Touches no register:
    /// every channel stops, every posted S/G frame is completed with
    /// `STATUS_DEVICE_REMOVED` through the callback, and from now on the
    /// interface functions return `STATUS_DEVICE_REMOVED` (except
    /// `StopChannel` and `RegisterCompletion(None)`, which succeed). The
    /// buffers and the adapter are released by the later [`Self::stop`].
    /// `PASSIVE_LEVEL` (or `DISPATCH_LEVEL`).
    pub fn surprise_remove(&self) {
        self.removed.store(true, Ordering::Release);
        for (index, chan) in self.channels.iter().enumerate() {
            let Ok(ch) = u32::try_from(index) else {
                break;
            };
            self.at_dispatch(|| {
                let mut st = chan.state.lock();
                if st.dma.is_some() {
                    st.stop_run::<P::Registers>(None, ch, STATUS_DEVICE_REMOVED);
                    st.surrender_held_frames(STATUS_DEVICE_REMOVED);
                }
            });
            self.deliver_and_wait(index);
        }
        self.at_dispatch(|| *self.int_enable.lock() = 0);
    }

    /// Delivers what channel `index` has to deliver, then waits until no
    /// context is delivering for it and no terminated frame is left
    /// (another processor's DPC may be mid-callback). Below `DISPATCH_LEVEL`
    /// only, where waiting for a DPC cannot deadlock; at `DISPATCH_LEVEL`
    /// it delivers and returns.
    pub(crate) fn deliver_and_wait(&self, index: usize) {
        let Some(chan) = self.channels.get(index) else {
            return;
        };
        loop {
            self.deliver(index, None);
            if self.platform.current_irql() >= DISPATCH_LEVEL {
                return;
            }
            let drained = self.at_dispatch(|| {
                let st = chan.state.lock();
                !st.delivering && !st.engine().is_some_and(Engine::terminated_waiting)
            });
            if drained {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Enables or disables channel `ch`'s completion and error interrupts
    /// (`INT_ENABLE`, through its shadow). `DISPATCH_LEVEL`.
    pub(crate) fn set_channel_interrupts(&self, ch: u32, enable: bool) {
        let bits = int_done(ch) | int_error(ch);
        let mut shadow = self.int_enable.lock();
        if enable {
            *shadow |= bits;
        } else {
            *shadow &= !bits;
        }
        if self.hardware_present() {
            self.platform.registers().write32(global::INT_ENABLE, *shadow);
        }
    }
}

/// Allocates a channel's completion queue and its engine's ring (see
/// [`BusDevice::start`]): the queue first, then the ring of the decided
/// mode ([`allocate_engine`]); the queue is freed again when the ring
/// cannot be had.
fn allocate_channel<A: DmaAdapterPort>(
    adapter: &A,
    decision: ModeDecision,
    config: &StartConfig,
    board: &BoardFacts,
    slot_bytes: u32,
) -> Result<ChannelBuffers, NtStatus> {
    let cq = CompletionQueue::allocate(adapter, config.cq_entries, board.caps).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    let Some(engine) = allocate_engine(decision, adapter, config, board.caps, board.max_transfer, slot_bytes) else {
        cq.buffer.free(adapter);
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    };
    Ok(ChannelBuffers { cq, engine })
}
