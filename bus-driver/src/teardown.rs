//! The FDO's hardware teardown, in the one order the design allows, for
//! every caller: the WDM glue (`IRP_MN_STOP_DEVICE`,
//! `IRP_MN_SURPRISE_REMOVAL`, `IRP_MN_REMOVE_DEVICE`, a start that failed
//! after the interrupt was connected) and the simulated machine.
//!
//! [`BusDevice::release_hardware`] runs:
//!
//! 1. [`BusDevice::stop_engines`]: every channel reset (and the reset
//!    completed, see `capdma_interface::regs::RESET_POLL_READS`), posted
//!    frames completed, the board's interrupts disabled;
//! 2. [`TeardownPort::disconnect_interrupt`] (`IoDisconnectInterruptEx`):
//!    the ISR cannot run again;
//! 3. [`TeardownPort::cancel_timer_and_flush_dpcs`] (`KeCancelTimer` of the
//!    watchdog, then `KeFlushQueuedDpcs`): a DPC the ISR or the timer queued
//!    before has finished, and none can be queued any more;
//! 4. for [`Release::Everything`] only, [`BusDevice::stop`]: every common
//!    buffer freed (`FreeCommonBuffer`), then the adapter put
//!    (`PutDmaAdapter`) last (Driver Verifier 0xE6, parameter 0x07 otherwise);
//! 5. [`TeardownPort::unmap_registers`] (`MmUnmapIoSpace` of BAR0): nothing
//!    above touches a register after this.
//!
//! The core does 1 and 4; the glue-only steps are the port's. Every step is
//! idempotent, so `IRP_MN_SURPRISE_REMOVAL` ([`Release::Hardware`]) followed
//! by `IRP_MN_REMOVE_DEVICE` ([`Release::Everything`]) runs the whole
//! sequence twice safely.
//!
//! # A child that still holds the interface at `IRP_MN_REMOVE_DEVICE`
//!
//! Plug and Play removes the children before their parent, and each child
//! drops its interface reference in its own `IRP_MN_REMOVE_DEVICE`, so the
//! bus's removal normally finds no reference. One still held there is a bug
//! of the child. The bus does not wait for it (the removal cannot be
//! refused) and does not keep anything for it: it tears down as usual —
//! engines stopped, interrupt disconnected, common buffers freed, adapter
//! put — and returns the number of references leaked, which the glue logs
//! and the simulation reports as a violation of the child. The `BusDevice`
//! itself stays valid for such a late caller only as long as the glue keeps
//! the FDO's extension alive (each child PDO holds an object reference on
//! the FDO); every interface function then fails with
//! `STATUS_DEVICE_NOT_READY` and `InterfaceDereference` just counts down.
use crate::device::BusDevice;
use crate::pnp::state::Release;
use crate::ports::BusPlatform;

/// The teardown steps only the glue can do (see the module documentation).
/// Each is called at `PASSIVE_LEVEL`, once per [`BusDevice::release_hardware`],
/// and must be idempotent (nothing to do when already done).
pub trait TeardownPort {
    /// `IoDisconnectInterruptEx`: when it returns, the ISR is not running
    /// and will not be called again.
    fn disconnect_interrupt(&self);
    /// `KeCancelTimer` of the watchdog timer, then `KeFlushQueuedDpcs`: when
    /// it returns, every DPC queued before (the ISR's, the timer's) has run
    /// to completion, and neither can be queued again.
    fn cancel_timer_and_flush_dpcs(&self);
    /// `MmUnmapIoSpace` of BAR0: registers are not touched after this.
    fn unmap_registers(&self);
}

impl<P: BusPlatform> BusDevice<P> {
    /// Releases what `release` says in the design's order (see the module
    /// documentation): `Release::Hardware` (`IRP_MN_SURPRISE_REMOVAL`)
    /// stops the engines and gives up the interrupt, the watchdog and BAR0
    /// but keeps the common buffers and the adapter (a child may still read
    /// slot memory until its own removal); `Release::Everything`
    /// (`IRP_MN_STOP_DEVICE`, `IRP_MN_REMOVE_DEVICE`, a failed start) also
    /// frees every common buffer and puts the adapter, before BAR0 is
    /// unmapped; `Release::Nothing` does nothing. Idempotent.
    /// `PASSIVE_LEVEL`.
    ///
    /// # Returns
    /// With `Release::Everything`: the interface references children still
    /// held when the buffers and the adapter were released (0 unless a child
    /// failed to drop its reference in its own `IRP_MN_REMOVE_DEVICE`; the
    /// caller records the leak). Otherwise 0.
    pub fn release_hardware(&self, release: Release, port: &impl TeardownPort) -> u32 {
        if release == Release::Nothing {
            return 0;
        }
        self.stop_engines();
        port.disconnect_interrupt();
        port.cancel_timer_and_flush_dpcs();
        let leaked = if release == Release::Everything {
            let held = self.reference_count();
            self.stop();
            held
        } else {
            0
        };
        port.unmap_registers();
        leaked
    }
}
