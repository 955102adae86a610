//! The engine watchdog: a running channel that owes completions (posted S/G
//! frames, or slots the board holds) and has produced none for more than
//! [`WATCHDOG_FRAME_INTERVALS`] frame intervals is reset and restarted.
//!
//! It also looks again at a reset that had not completed (the engine kept
//! `STATUS_RUNNING` past `RESET_POLL_READS` reads): once it has, the held
//! frames are delivered (`ChannelState::finish_reset`).
//!
//! The glue calls [`BusDevice::watchdog`] from a periodic `KTIMER` DPC (a
//! period of about one frame interval or less); the simulation calls it on
//! virtual time.
use crate::channel::ChannelState;
use crate::device::{BusDevice, DeviceState};
use crate::ports::{BusPlatform, CoreEvent, RegisterPort, ResetCause};
use capdma_interface::status::STATUS_IO_DEVICE_ERROR;

/// Frame intervals without a completion, while the board owes one, after
/// which the watchdog resets a channel.
pub const WATCHDOG_FRAME_INTERVALS: i64 = 4;

impl ChannelState {
    /// One watchdog look at `now` (100-ns units). Returns whether the
    /// channel was reset, or a reset that had not completed
    /// ([`ChannelState::reset_pending`]) now has (its frames are then
    /// waiting to be delivered).
    pub(crate) fn watchdog_check<R: RegisterPort>(&mut self, regs: &R, ch: u32, now: i64) -> bool {
        if self.reset_pending.is_some() {
            return self.finish_reset(regs, ch, 1);
        }
        let Some(run) = self.run else {
            return false;
        };
        if !self.board_has_work() {
            // Idle: the clock starts when work is posted, i.e. from here.
            self.last_progress = Some(now);
            return false;
        }
        let Some(last) = self.last_progress else {
            self.last_progress = Some(now);
            return false;
        };
        let limit = i64::from(run.format.frame_interval).saturating_mul(WATCHDOG_FRAME_INTERVALS);
        if now.saturating_sub(last) <= limit {
            return false;
        }
        self.stats.watchdog_resets = self.stats.watchdog_resets.saturating_add(1);
        regs.report(CoreEvent::EngineReset { channel: ch, cause: ResetCause::Watchdog });
        self.reset_engine(regs, ch, STATUS_IO_DEVICE_ERROR);
        self.last_progress = Some(now);
        true
    }
}

impl<P: BusPlatform> BusDevice<P> {
    /// The watchdog tick at `now_100ns` (100-ns units, the same clock as
    /// [`BusDevice::dpc`]), `<= DISPATCH_LEVEL`. Resets and restarts each
    /// running channel that owes a completion and has had none for more than
    /// [`WATCHDOG_FRAME_INTERVALS`] × its frame interval; its in-flight S/G
    /// frames are completed with `STATUS_IO_DEVICE_ERROR` (counted in
    /// `ChannelStats::watchdog_resets`). The restart reprograms everything
    /// the channel needs, `INT_ENABLE` included (rewritten from its shadow).
    /// Does nothing out of D0. Returns the channels reset.
    pub fn watchdog(&self, now_100ns: i64) -> u32 {
        if self.state() != DeviceState::Started || !self.hardware_present() {
            return 0;
        }
        let regs = self.platform.registers();
        let count = self.channel_count();
        let mut fired = 0;
        for (index, chan) in self.channels.iter().enumerate() {
            let Ok(ch) = u32::try_from(index) else {
                break;
            };
            if ch >= count {
                break;
            }
            let reset = self.at_dispatch(|| {
                let mut st = chan.state.lock();
                // Under the lock, as the DPC: not once `power_down` has passed,
                // nor before `power_up` has resumed the channel.
                st.hw(self.hardware_present()) && st.watchdog_check(regs, ch, now_100ns)
            });
            if reset {
                fired += 1;
                // A board that stopped completing may have lost its
                // registers (a reset or power loss the driver was not told
                // of): the channel was reprogrammed, and its interrupts
                // must be enabled again too.
                self.restore_interrupt_enable();
                self.deliver(index, Some(now_100ns));
            }
        }
        fired
    }
}
