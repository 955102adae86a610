//! The DPC (`DISPATCH_LEVEL`): the completion-queue consumer of every
//! channel, and the delivery loop that calls the children back.
use crate::channel::completion::invoke;
use crate::device::{BusDevice, DeviceState};
use crate::ports::BusPlatform;
use capdma_interface::regs::int_error;
use core::sync::atomic::Ordering;

impl<P: BusPlatform> BusDevice<P> {
    /// The `KDEFERRED_ROUTINE` body queued by the ISR, at `DISPATCH_LEVEL`;
    /// `now_100ns` is the current time in 100-ns units (`KeQueryInterruptTime`)
    /// for the watchdog's progress marks.
    ///
    /// Takes the pending `INT_STATUS` bits (`swap(0)`); marks an error on
    /// channels whose error bit is set; then runs the consumer of **every**
    /// channel (records may land between the ISR and the DPC, and a record
    /// whose interrupt was coalesced must not wait for the next frame):
    /// records are range-checked, good ones are delivered to the child's
    /// callback (no bus lock held during the call), a bad one or an error
    /// resets the channel. Does nothing when the device is not started or
    /// the board is gone.
    pub fn dpc(&self, now_100ns: i64) {
        let pending = self.pending.swap(0, Ordering::AcqRel);
        if self.state() != DeviceState::Started || !self.hardware_present() {
            return;
        }
        let count = self.channel_count();
        for (index, chan) in self.channels.iter().enumerate() {
            let Ok(ch) = u32::try_from(index) else {
                break;
            };
            if ch >= count {
                break;
            }
            if pending & int_error(ch) != 0 {
                self.at_dispatch(|| {
                    let mut st = chan.state.lock();
                    if st.running() {
                        st.error_pending = true;
                    }
                });
            }
            self.deliver(index, Some(now_100ns));
        }
    }

    /// The delivery loop of channel `index`: unless another context is
    /// already delivering for it (which will then pick up this work: it
    /// starts another consumer pass before it stops, see
    /// `ChannelState::rescan`), takes one completion at a time out of the
    /// channel state under its lock, releases the lock and calls the child
    /// back, at `DISPATCH_LEVEL`, until there is nothing left. Completions
    /// thus reach the child one at a time and in order.
    ///
    /// The second pass matters because the same DPC runs on two processors
    /// at once (the ISR queues it again while it runs) and the watchdog's
    /// DPC delivers too: without it, records that land after the
    /// deliverer read `CQ_PRODUCER`, whose DPC found the deliverer busy,
    /// would wait for the next interrupt (for ever on a halted board, or
    /// until the watchdog fails the frames).
    pub(crate) fn deliver(&self, index: usize, now: Option<i64>) {
        let Some(chan) = self.channels.get(index) else {
            return;
        };
        let Ok(ch) = u32::try_from(index) else {
            return;
        };
        let regs = self.platform.registers();
        self.at_dispatch(|| {
            {
                let mut st = chan.state.lock();
                if st.delivering {
                    st.rescan = true;
                    return;
                }
                st.delivering = true;
                st.rescan = false;
                st.begin_pass();
            }
            loop {
                let (next, gone) = {
                    let mut st = chan.state.lock();
                    // Read under the lock: `power_down` marks the device out
                    // of D0 before it takes the channel locks, so no
                    // register is touched once it has passed this channel.
                    let hw = st.hw(self.hardware_present());
                    let mut next = st.next_delivery(regs, ch, now, hw);
                    // Bounded: `rescan` is set at most once per context that
                    // found this one delivering.
                    while next.is_none() && core::mem::take(&mut st.rescan) {
                        st.begin_pass();
                        next = st.next_delivery(regs, ch, now, hw);
                    }
                    if next.is_none() {
                        st.delivering = false;
                    }
                    (next, core::mem::take(&mut st.board_gone_seen))
                };
                if gone {
                    self.board_gone.store(true, Ordering::Release);
                }
                match next {
                    Some(delivery) => invoke(&delivery),
                    None => break,
                }
            }
        });
    }
}
