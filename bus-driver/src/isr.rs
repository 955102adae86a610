//! The interrupt service routine (device IRQL).
use crate::device::BusDevice;
use crate::ports::{BusPlatform, RegisterPort};
use capdma_interface::regs::global;
use core::sync::atomic::Ordering;

impl<P: BusPlatform> BusDevice<P> {
    /// `KSERVICE_ROUTINE` body, at device IRQL: reads `INT_STATUS`.
    ///
    /// * Interrupts off for a power-down (from the end of `power_down`,
    ///   after `INT_ENABLE = 0`, until `power_up`): returns `false` without
    ///   touching a register. Earlier in `power_down` it still reads and
    ///   acknowledges: a channel not yet stopped may assert its
    ///   level-triggered interrupt.
    /// * `0`: not this board's interrupt (the line is shared): returns `false`.
    /// * `0xFFFF_FFFF`: the board is gone (surprise removal: the read was
    ///   not completed by the device). Writes `INT_ENABLE = 0` (in case it
    ///   is still there), marks it gone (the DPC, the watchdog and the
    ///   interface stop touching registers) and returns `true` **only the
    ///   first time**, `false` afterwards. Until `IRP_MN_SURPRISE_REMOVAL`
    ///   disconnects the interrupt (`IoDisconnectInterruptEx`) this ISR stays
    ///   on the line, and on a shared level-triggered line the kernel stops
    ///   at the first ISR that returns `TRUE`: claiming every later
    ///   interrupt would starve the other devices on the line and leave it
    ///   asserted (an interrupt storm). Once the board is marked gone (by
    ///   the ISR, a reset or `power_up`) the ISR returns `false` without
    ///   reading anything.
    /// * otherwise: writes the value back (write-1-to-clear), ORs it into
    ///   the pending bits for the DPC and returns `true`.
    ///
    /// Takes no lock and touches nothing else. When it returns `true` the
    /// glue queues the DPC (`IoRequestDpc` / `KeInsertQueueDpc`).
    pub fn isr(&self) -> bool {
        // Its interrupts are off and it is leaving or out of D0
        // (`crate::power`): the board cannot interrupt and its registers may
        // read all ones. The interrupt is another device's on a shared line.
        if self.power.interrupts_off() {
            return false;
        }
        // Already read as gone: another read of a removed PCIe function may
        // take a completion timeout, at device IRQL, on every interrupt of
        // the line until `IRP_MN_SURPRISE_REMOVAL` disconnects this ISR.
        if self.board_gone.load(Ordering::Acquire) {
            return false;
        }
        let regs = self.platform.registers();
        let status = regs.read32(global::INT_STATUS);
        if status == 0 {
            return false;
        }
        if status == u32::MAX {
            regs.write32(global::INT_ENABLE, 0);
            // Claimed once (the board's last assertion, if it was its own);
            // after that the interrupt belongs to another device on the line.
            return !self.board_gone.swap(true, Ordering::AcqRel);
        }
        regs.write32(global::INT_STATUS, status);
        self.pending.fetch_or(status, Ordering::AcqRel);
        true
    }
}
