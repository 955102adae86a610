//! Device power: the bus FDO is the power policy owner of the board (the
//! PCI function driver), so it decides the device power state for each
//! system power state, and it saves and restores what the board loses
//! outside D0.
//!
//! The WDM glue (`wdm/power.rs`) handles the IRPs; everything it decides or
//! does to the board is here, portable and host-tested
//! (`tests/power.rs`):
//!
//! | IRP at the FDO | decision here | what the core does |
//! |---|---|---|
//! | `IRP_MN_SET_POWER`, `SystemPowerState` S (after the lower drivers succeeded it) | [`device_state_for`]: S0 → D0, S1..S5 → D3 | — (the glue requests that D-IRP with `PoRequestPowerIrp`, completes the S-IRP in the D-IRP's callback) |
//! | `IRP_MN_SET_POWER`, `DevicePowerState` D1..D3 | [`DevicePowerAction::QuiesceThenPassDown`] | [`BusDevice::power_down`] before the IRP goes down |
//! | `IRP_MN_SET_POWER`, `DevicePowerState` D0 | [`DevicePowerAction::PassDownThenRestore`] | [`BusDevice::power_up`] once the lower drivers completed it with success |
//!
//! # Leaving D0 ([`BusDevice::power_down`])
//!
//! The device is marked out of D0 first: from then on nothing touches a
//! register except this sequence and the ISR (the DPC and the watchdog do
//! nothing, the interface functions keep their bookkeeping but write no
//! register — they check under the channel lock, and this sequence takes
//! every channel lock after the mark). The ISR keeps reading and
//! acknowledging `INT_STATUS` (a channel not yet stopped may interrupt, and
//! its level-triggered interrupt must be claimed; the DPC drops the bits)
//! until the end of this sequence. Then, with
//! the board still in D0, each running channel's engine is stopped
//! (`CTRL_RESET`, its `DROPPED_FRAMES` accounted) and its posted S/G frames
//! are completed to the child with `STATUS_CANCELLED`; the channel keeps its
//! format (it is still running for the child), its callback and, in
//! common-buffer mode, the child's slots. Last, `INT_ENABLE = 0` (the shadow
//! keeps the enabled channels) and every pending `INT_STATUS` bit is
//! acknowledged; from then on the ISR returns `false` at once.
//!
//! While out of D0 the child may keep calling: `ProgramFrame` posts
//! descriptors into the ring (the board is told at power-up), `ReturnSlot`
//! and `StopChannel` work on the bookkeeping, `StartChannel` answers
//! `STATUS_DEVICE_NOT_READY` (it would have to program the board).
//!
//! # Back in D0 ([`BusDevice::power_up`])
//!
//! The board lost its registers (D3hot resets a function's state; D3cold
//! removes its power). `ID` must read `BOARD_ID` again, else the board is
//! treated as gone. Then interrupts are disabled and acknowledged, the
//! device is marked in D0, and every channel is resumed (until its resume a
//! channel stays suspended: nothing else touches its registers and
//! `StartChannel` answers `STATUS_DEVICE_NOT_READY`); every channel the
//! child still has running is reprogrammed and restarted with its format —
//! as a reset does: the child keeps its slots, the others go back to the
//! board in ring order; S/G frames posted meanwhile are handed to the board
//! (`RING_PRODUCER`), except on a channel whose power-down reset was still
//! pending: the resume finishes that reset, which cancels every posted
//! frame as every reset does. Last, `INT_ENABLE` is rewritten from its
//! shadow.
//!
//! The same rewrite follows a watchdog reset ([`BusDevice::watchdog`]): a
//! board that stopped completing may have lost its registers (a function
//! level reset, a power glitch, a sleep the driver was not told about), and
//! a channel restarted without its interrupt enable would complete frames
//! nobody hears of.
use crate::channel::{ChannelState, Pass};
use crate::device::{BusDevice, DeviceState};
use crate::hw::{reset_channel, ChannelRegs, ResetOutcome};
use crate::ports::{BusPlatform, RegisterPort, DISPATCH_LEVEL};
use capdma_interface::regs::{channel, global, BOARD_ID, RESET_POLL_READS};
use capdma_interface::status::STATUS_CANCELLED;
use core::sync::atomic::{AtomicBool, Ordering};
use zerocopy::{Immutable, IntoBytes, TryFromBytes};

/// A system power state (`SYSTEM_POWER_STATE`, wdm.h values).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, TryFromBytes, IntoBytes, Immutable)]
pub enum SystemPowerState {
    /// `PowerSystemWorking` (S0).
    Working = 1,
    /// `PowerSystemSleeping1` (S1).
    Sleeping1 = 2,
    /// `PowerSystemSleeping2` (S2).
    Sleeping2 = 3,
    /// `PowerSystemSleeping3` (S3).
    Sleeping3 = 4,
    /// `PowerSystemHibernate` (S4).
    Hibernate = 5,
    /// `PowerSystemShutdown` (S5).
    Shutdown = 6,
}

impl SystemPowerState {
    /// The state of a raw `SYSTEM_POWER_STATE`; `None` for
    /// `PowerSystemUnspecified`, `PowerSystemMaximum` and anything else.
    #[must_use]
    pub fn from_raw(raw: i32) -> Option<Self> {
        zerocopy::try_transmute!(raw).ok()
    }
}

/// A device power state (`DEVICE_POWER_STATE`, wdm.h values).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, TryFromBytes, IntoBytes, Immutable)]
pub enum DevicePowerState {
    /// `PowerDeviceD0`: working.
    D0 = 1,
    /// `PowerDeviceD1`.
    D1 = 2,
    /// `PowerDeviceD2`.
    D2 = 3,
    /// `PowerDeviceD3`: off (D3hot or D3cold).
    D3 = 4,
}

impl DevicePowerState {
    /// The state of a raw `DEVICE_POWER_STATE`; `None` for
    /// `PowerDeviceUnspecified`, `PowerDeviceMaximum` and anything else.
    #[must_use]
    pub fn from_raw(raw: i32) -> Option<Self> {
        zerocopy::try_transmute!(raw).ok()
    }

    /// The raw `DEVICE_POWER_STATE`.
    #[must_use]
    pub const fn raw(self) -> i32 {
        self as i32
    }
}

/// The device power state the bus, as power policy owner, requests for
/// `system` (`PoRequestPowerIrp` after the system set-power IRP came back
/// from the lower drivers): D0 in S0; D3 in every sleep state, hibernation
/// and shutdown. D3 is always allowed (`DEVICE_CAPABILITIES.DeviceState[S]`
/// only bounds how much power a device may keep, and the board does not
/// wake the system), and the board keeps no state worth the power: the
/// driver restores it ([`BusDevice::power_up`]).
#[must_use]
pub const fn device_state_for(system: SystemPowerState) -> DevicePowerState {
    match system {
        SystemPowerState::Working => DevicePowerState::D0,
        SystemPowerState::Sleeping1
        | SystemPowerState::Sleeping2
        | SystemPowerState::Sleeping3
        | SystemPowerState::Hibernate
        | SystemPowerState::Shutdown => DevicePowerState::D3,
    }
}

/// What the FDO does with a device set-power IRP (`IRP_MN_SET_POWER`,
/// `DevicePowerState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevicePowerAction {
    /// Leaving D0 (D1..D3): `PoSetPowerState` (while the device still
    /// works), [`BusDevice::power_down`], then the IRP goes down to the PCI
    /// bus driver, which changes the power.
    QuiesceThenPassDown,
    /// To D0: the IRP goes down first (the PCI bus driver powers the
    /// function up); once it completed with success,
    /// [`BusDevice::power_up`] and `PoSetPowerState(D0)`.
    PassDownThenRestore,
}

/// The action for a device set-power IRP to `target`.
#[must_use]
pub const fn device_power_action(target: DevicePowerState) -> DevicePowerAction {
    match target {
        DevicePowerState::D0 => DevicePowerAction::PassDownThenRestore,
        DevicePowerState::D1 | DevicePowerState::D2 | DevicePowerState::D3 => DevicePowerAction::QuiesceThenPassDown,
    }
}

/// The core's view of the device power state: in D0 or not.
#[derive(Debug)]
pub(crate) struct PowerState {
    /// Set by [`BusDevice::power_down`] first, cleared by
    /// [`BusDevice::power_up`] and by a start (a started device is in D0):
    /// the DPC, the watchdog and the interface functions touch no register
    /// while it is set.
    low: AtomicBool,
    /// Set by [`BusDevice::power_down`] last, once `INT_ENABLE = 0` and the
    /// acknowledge are written (under the `INT_ENABLE` lock), cleared with
    /// [`Self::low`]: the board can no longer assert its (level-triggered)
    /// interrupt, so the ISR stops reading `INT_STATUS`. Until then the ISR
    /// still reads and acknowledges — an unclaimed level interrupt on a
    /// shared line would storm — and the DPC drops the bits.
    regs_off: AtomicBool,
}

impl PowerState {
    /// In D0 (a device is in D0 when it is added and when it starts).
    pub const fn new() -> Self {
        Self { low: AtomicBool::new(false), regs_off: AtomicBool::new(false) }
    }

    /// Whether the device is in D0 (registers may be touched, as far as
    /// power goes).
    pub fn in_d0(&self) -> bool {
        !self.low.load(Ordering::Acquire)
    }

    /// Whether the board's interrupts are off for a power-down (the ISR
    /// must not read `INT_STATUS`: the board may be leaving D0).
    pub fn interrupts_off(&self) -> bool {
        self.regs_off.load(Ordering::Acquire)
    }

    /// `IRP_MN_START_DEVICE`, or back in D0: the device is in D0 and the
    /// ISR reads `INT_STATUS` again.
    pub fn assume_d0(&self) {
        self.regs_off.store(false, Ordering::Release);
        self.low.store(false, Ordering::Release);
    }
}

impl ChannelState {
    /// Leaving D0 with the board still powered: if the child has the channel
    /// running, stops the engine (`CTRL_RESET` read back until no DMA is
    /// outstanding, as every reset: see `capdma_interface::regs::CTRL_RESET`;
    /// unless the board is gone), then terminates every posted S/G frame with
    /// `STATUS_CANCELLED` and forgets the board's counters. A reset that does
    /// not complete hands nothing back ([`ChannelState::reset_pending`]): the
    /// frames stay posted until [`Self::resume`] (or a later look) finishes
    /// it. The format, the callback and the slot bookkeeping stay for
    /// [`Self::resume`]. Returns whether the channel was running.
    fn suspend<R: RegisterPort>(&mut self, regs: Option<&R>, ch: u32) -> bool {
        // Whether it runs or not: nothing but `resume` programs it again.
        self.suspended = true;
        if !self.running() {
            return false;
        }
        self.error_pending = false;
        self.pass = Pass { over: true, ..Pass::default() };
        self.cq_consumer = 0;
        self.last_progress = None;
        if let Some(regs) = regs {
            let cr = ChannelRegs::new(regs, ch);
            self.account_dropped(&cr);
            match reset_channel(&cr) {
                ResetOutcome::Complete => {}
                ResetOutcome::Gone => {
                    self.board_gone();
                    return true;
                }
                ResetOutcome::Stuck => {
                    self.reset_pending = Some(STATUS_CANCELLED);
                    return true;
                }
            }
        }
        if let Some(engine) = self.engine_mut() {
            engine.abort_posted(STATUS_CANCELLED);
        }
        true
    }

    /// Back in D0: if the child still has the channel running, reprograms
    /// the board and runs it with the channel's format, as after a reset
    /// (CB: the child keeps its slots, the others go to the board in ring
    /// order; S/G: descriptors posted while out of D0 are handed over with
    /// `RING_PRODUCER`). The caller enables the channel's interrupts
    /// afterwards. Returns whether the channel was restarted.
    fn resume<R: RegisterPort>(&mut self, regs: &R, ch: u32) -> bool {
        self.suspended = false;
        if self.reset_pending.is_some() {
            // The power-down's reset had not completed (the engine may have
            // been writing until the function left D0): finishing it hands
            // the held frames back and restarts a running channel.
            self.pass = Pass::default();
            return self.finish_reset(regs, ch, RESET_POLL_READS) && self.reset_pending.is_none() && self.run.is_some();
        }
        let (Some(dma), Some(run)) = (self.dma.as_mut(), self.run) else {
            return false;
        };
        self.error_pending = false;
        self.pass = Pass::default();
        self.cq_consumer = 0;
        self.last_progress = None;
        let cr = ChannelRegs::new(regs, ch);
        // CB: the child keeps its slots; S/G: the descriptors ProgramFrame
        // wrote (and fenced) meanwhile are handed over.
        dma.engine.restart(&cr, &dma.cq, &run);
        self.dropped_baseline = cr.read(channel::DROPPED_FRAMES);
        true
    }
}

impl<P: BusPlatform> BusDevice<P> {
    /// Whether the device is in D0 as far as the core knows (between
    /// [`Self::power_down`] and [`Self::power_up`] it is not).
    pub fn in_d0(&self) -> bool {
        self.power.in_d0()
    }

    /// `IRP_MN_SET_POWER` to D1, D2 or D3, before the IRP is passed down
    /// (the board is still in D0). `<= DISPATCH_LEVEL`. Idempotent.
    ///
    /// Marks the device out of D0, stops the engine of every running
    /// channel and completes its posted S/G frames with `STATUS_CANCELLED`
    /// (see the module documentation; the channels stay running for their
    /// children and are restarted by [`Self::power_up`]), disables and
    /// acknowledges the board's interrupts. Registers are not touched when
    /// the board is gone or surprise-removed. Below `DISPATCH_LEVEL` it also
    /// waits until no other processor is delivering a completion of a
    /// channel. Returns the channels stopped.
    ///
    /// After it returns the core touches no register until
    /// [`Self::power_up`]; the glue must still make sure no ISR that started
    /// before is running (an interrupt spin-lock barrier) before the board
    /// leaves D0.
    pub fn power_down(&self) -> u32 {
        if self.power.low.swap(true, Ordering::AcqRel) {
            return 0;
        }
        if self.state() != DeviceState::Started {
            // Nothing programmed, no interrupt connected.
            self.power.regs_off.store(true, Ordering::Release);
            return 0;
        }
        let present = !self.is_removed();
        let regs = self.platform.registers();
        let count = self.channel_count();
        let mut stopped = 0;
        for (index, chan) in self.channels.iter().enumerate() {
            let Ok(ch) = u32::try_from(index) else {
                break;
            };
            if ch >= count {
                break;
            }
            let was_running = self.at_dispatch(|| chan.state.lock().suspend(present.then_some(regs), ch));
            if was_running {
                stopped += 1;
                if self.platform.current_irql() < DISPATCH_LEVEL {
                    self.deliver_and_wait(index);
                } else {
                    self.deliver(index, None);
                }
            }
        }
        self.at_dispatch(|| {
            // The shadow keeps the channels' bits for `power_up`; the lock
            // orders this write with `set_channel_interrupts`.
            let _shadow = self.int_enable.lock();
            if present {
                regs.write32(global::INT_ENABLE, 0);
                regs.write32(global::INT_STATUS, u32::MAX);
            }
            // Only now: until the board's interrupts were off the ISR had to
            // keep claiming its level-triggered interrupt.
            self.power.regs_off.store(true, Ordering::Release);
        });
        self.pending.store(0, Ordering::Release);
        stopped
    }

    /// `IRP_MN_SET_POWER` to D0, after the lower drivers completed it with
    /// success (the board is powered). `<= DISPATCH_LEVEL` (it may run in
    /// the IRP's completion routine). Idempotent.
    ///
    /// Checks that `ID` reads `BOARD_ID` (else the board is marked gone, as
    /// the ISR would), disables and acknowledges interrupts, marks the
    /// device in D0, restarts every channel its child still has running with
    /// its format, and rewrites `INT_ENABLE` from its shadow. Returns the
    /// channels restarted.
    pub fn power_up(&self) -> u32 {
        if self.power.in_d0() {
            return 0;
        }
        if self.state() != DeviceState::Started || self.is_removed() {
            self.power.assume_d0();
            return 0;
        }
        let regs = self.platform.registers();
        if regs.read32(global::ID) != BOARD_ID {
            self.board_gone.store(true, Ordering::Release);
            self.power.assume_d0();
            return 0;
        }
        regs.write32(global::INT_ENABLE, 0);
        regs.write32(global::INT_STATUS, u32::MAX);
        self.pending.store(0, Ordering::Release);
        self.power.assume_d0();
        let count = self.channel_count();
        let mut restarted = 0;
        for (index, chan) in self.channels.iter().enumerate() {
            let Ok(ch) = u32::try_from(index) else {
                break;
            };
            if ch >= count {
                break;
            }
            if self.at_dispatch(|| chan.state.lock().resume(regs, ch)) {
                restarted += 1;
            }
            // Frames a finished power-down reset terminated go back now.
            if self.platform.current_irql() < DISPATCH_LEVEL {
                self.deliver_and_wait(index);
            } else {
                self.deliver(index, None);
            }
        }
        self.restore_interrupt_enable();
        restarted
    }

    /// The D0 IRP failed in the lower drivers (`IRP_MN_SET_POWER` to D0
    /// completed with an error status): the board was not powered, and
    /// nothing will bring it back short of a new start. Marks it gone (the
    /// interface answers `STATUS_DEVICE_REMOVED`, nothing touches a
    /// register; a child's `StopChannel` still succeeds) and in D0 as far
    /// as the core goes, so the paths that wait on D0 do not wait for ever.
    /// Any IRQL `<= DISPATCH_LEVEL`.
    pub fn power_up_failed(&self) {
        self.board_gone.store(true, Ordering::Release);
        self.power.assume_d0();
    }

    /// Writes the `INT_ENABLE` shadow to the board (when registers may be
    /// touched): after a power-up and after a watchdog reset.
    /// `<= DISPATCH_LEVEL`.
    pub(crate) fn restore_interrupt_enable(&self) {
        self.at_dispatch(|| {
            let shadow = self.int_enable.lock();
            if self.hardware_present() {
                self.platform.registers().write32(global::INT_ENABLE, *shadow);
            }
        });
    }
}
