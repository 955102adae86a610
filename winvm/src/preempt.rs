//! Preemption at arbitrary instructions: a host timer kicks the vCPU out of
//! `KVM_RUN` (a real-time signal to the vCPU's thread makes the ioctl return
//! `EINTR`), and the machine offers the kernel the interrupted point
//! ([`crate::Kernel::at_preemption`]) when the guest was running its own
//! code at CPL3. The kernel then delivers what a uniprocessor Windows
//! would at that instruction: a pending ISR if the IRQL is below its DIRQL,
//! queued DPCs if it is below `DISPATCH_LEVEL`.
//!
//! The intervals are drawn from a seeded generator, so a run's *schedule of
//! kicks* is reproducible; where each kick lands in the guest depends on
//! host timing and is not (the machine records every landing RIP in its
//! counts so a failing run can say where it was preempted).

use std::sync::Once;

use crate::Stop;

/// The signal used to kick the vCPU (`SIGRTMIN + 3`, as rust-vmm's vCPU
/// kick convention leaves the first ones to the C library).
fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int) {}

static INSTALL: Once = Once::new();

/// How often to preempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preemption {
    /// Mean interval between kicks, microseconds of host time.
    pub mean_interval_us: u64,
    /// Seed of the interval generator.
    pub seed: u64,
}

/// A POSIX timer that signals the thread that created it.
pub(crate) struct KickTimer {
    timer: libc::timer_t,
    rng: fastrand::Rng,
    mean_ns: u64,
}

impl KickTimer {
    /// Arms a one-shot timer for the calling thread (the vCPU's).
    pub(crate) fn new(preemption: Preemption) -> Result<Self, Stop> {
        INSTALL.call_once(|| {
            // SAFETY: all-zero is a valid `sigaction` (no handler, empty mask).
            let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
            action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
            // SA_RESTART so host syscalls other than KVM_RUN (which returns
            // EINTR regardless) are not disturbed by a kick.
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: a valid mask to clear.
            unsafe { libc::sigemptyset(&raw mut action.sa_mask) };
            // SAFETY: a handler that does nothing (async-signal-safe) for a
            // real-time signal nothing else in the process uses.
            unsafe { libc::sigaction(kick_signal(), &raw const action, core::ptr::null_mut()) };
        });
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        // SAFETY: a zeroed sigevent filled for SIGEV_THREAD_ID.
        let mut event: libc::sigevent = unsafe { core::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        event.sigev_notify_thread_id = tid;
        let mut timer: libc::timer_t = core::ptr::null_mut();
        // SAFETY: valid pointers to the event and the out-parameter.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &raw mut event, &raw mut timer) } != 0 {
            return Err(Stop::Host(format!("timer_create: {}", std::io::Error::last_os_error())));
        }
        let mut kick = Self { timer, rng: fastrand::Rng::with_seed(preemption.seed), mean_ns: preemption.mean_interval_us.max(1) * 1000 };
        kick.rearm();
        Ok(kick)
    }

    /// Arms the next kick after a seeded interval (uniform in 0.5..1.5 of
    /// the mean), then every mean interval until re-armed.
    pub(crate) fn rearm(&mut self) {
        // Seeded: the schedule only needs to be reproducible from the seed.
        let draw = self.rng.u64(..self.mean_ns.max(1));
        let ns = self.mean_ns / 2 + draw;
        // Periodic at the mean as well: a kick that lands while the host
        // runs (not in KVM_RUN) is lost, and the timer must keep going.
        let period = libc::timespec {
            tv_sec: i64::try_from(self.mean_ns / 1_000_000_000).unwrap_or(i64::MAX),
            tv_nsec: i64::try_from(self.mean_ns % 1_000_000_000).unwrap_or(0),
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: libc::timespec {
                tv_sec: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
                tv_nsec: i64::try_from(ns % 1_000_000_000).unwrap_or(0),
            },
        };
        // SAFETY: a timer this object created and has not deleted.
        unsafe { libc::timer_settime(self.timer, 0, &raw const spec, core::ptr::null_mut()) };
    }
}

impl Drop for KickTimer {
    fn drop(&mut self) {
        // SAFETY: the timer this object created; deleted once.
        unsafe { libc::timer_delete(self.timer) };
    }
}
