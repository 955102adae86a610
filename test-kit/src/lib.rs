//! The helpers the drivers' concurrency tests share (dev-only: a
//! dev-dependency of `capdma-bus` and `capdma-avstream`, never built into a
//! driver).
//!
//! Those tests run a driver core on real threads — the bus DPC on two
//! "processors", the ISR, the child's `PASSIVE_LEVEL` calls, KS's Process
//! and state changes — and need, on every thread:
//!
//! * the thread's IRQL as the core's platform port sees it ([`irql`],
//!   [`set_irql`]; a thread starts at `PASSIVE_LEVEL`, 0);
//! * seeded schedule perturbation ([`Rng`], fastrand's generator; [`jitter`]
//!   from a per-thread generator for calls made inside fakes), which widens
//!   the windows between a core's steps without making a run depend on time;
//! * one [`Log`] of the violations any thread saw, the test failing with
//!   them at the end;
//! * a [`Watchdog`] that fails the test when threads do not finish (a
//!   deadlock or a livelock) instead of hanging it. Runs are bounded by
//!   iteration counts; the watchdog only detects failures, a passing run
//!   never waits for it.
use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long threads may take before a test calls it a hang.
pub const HANG: Duration = Duration::from_mins(1);

/// The seed of every thread's own [`jitter`] generator.
const JITTER_SEED: u64 = 0x2545_F491_4F6C_DD1D;

thread_local! {
    /// This thread's IRQL, as the platform sees it.
    static IRQL: Cell<u8> = const { Cell::new(0) };
    /// Perturbations inside the fakes' calls (per thread).
    static JITTER: RefCell<Rng> = RefCell::new(Rng::new(JITTER_SEED));
}

/// The calling thread's IRQL (0 = `PASSIVE_LEVEL` until [`set_irql`]).
#[must_use]
pub fn irql() -> u8 {
    IRQL.with(Cell::get)
}

/// Sets the calling thread's IRQL.
pub fn set_irql(level: u8) {
    IRQL.with(|c| c.set(level));
}

/// A perturbation from the calling thread's own generator ([`Rng::jitter`]):
/// the fakes' calls take a while now and then (an interrupt, a preemption).
pub fn jitter() {
    JITTER.with(|rng| rng.borrow_mut().jitter());
}

/// Locks `m`, taking the data of a mutex poisoned by a panicking thread
/// (that panic fails the test on its own).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seeded schedule perturbation (fastrand's generator).
#[derive(Debug)]
pub struct Rng(fastrand::Rng);

impl Rng {
    /// A generator seeded with `seed` (the same seed, the same sequence).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    /// A number in `0..n` (`0` for `n == 0`).
    pub fn below(&mut self, n: u32) -> u32 {
        self.0.u32(..n.max(1))
    }

    /// True once in `n` times on average.
    pub fn one_in(&mut self, n: u32) -> bool {
        self.below(n) == 0
    }

    /// Mostly nothing; sometimes a yield; now and then a short spin.
    pub fn jitter(&mut self) {
        match self.below(16) {
            0..=2 => thread::yield_now(),
            3 => {
                for _ in 0..self.below(300) {
                    std::hint::spin_loop();
                }
            }
            _ => {}
        }
    }
}

/// The violations any thread saw (the first 24 kept); the test fails with
/// them at the end.
#[derive(Debug, Default)]
pub struct Log {
    failed: AtomicBool,
    messages: Mutex<Vec<String>>,
}

impl Log {
    /// Records a violation.
    pub fn fail(&self, message: String) {
        self.failed.store(true, SeqCst);
        let mut m = lock(&self.messages);
        if m.len() < 24 {
            m.push(message);
        }
    }

    /// Records `message()` unless `ok`.
    pub fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(message());
        }
    }

    /// Whether any violation was recorded.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.failed.load(SeqCst)
    }

    /// The recorded violations, one a line.
    #[must_use]
    pub fn messages(&self) -> String {
        lock(&self.messages).join("\n  ")
    }

    /// Fails the test with every recorded violation, naming `what`.
    ///
    /// # Panics
    /// When a violation was recorded.
    pub fn assert_clean(&self, what: &str) {
        let m = lock(&self.messages);
        assert!(m.is_empty(), "{what}: {} violation(s):\n  {}", m.len(), m.join("\n  "));
    }
}

/// Tells the [`Watchdog`] that its thread ended when dropped, so a thread's
/// end is reported even when it panics.
#[derive(Debug)]
pub struct Done(mpsc::Sender<&'static str>, &'static str);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Waits for threads to end, failing the test on a hang.
#[derive(Debug)]
pub struct Watchdog {
    tx: mpsc::Sender<&'static str>,
    rx: mpsc::Receiver<&'static str>,
}

impl Default for Watchdog {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Self { tx, rx }
    }
}

impl Watchdog {
    /// A guard for a thread called `what`: it reports the end when dropped.
    #[must_use]
    pub fn guard(&self, what: &'static str) -> Done {
        Done(self.tx.clone(), what)
    }

    /// Spawns `f` on a thread called `what` whose end (or panic) is reported.
    pub fn spawn<R: Send + 'static>(&self, what: &'static str, f: impl FnOnce() -> R + Send + 'static) -> JoinHandle<R> {
        let done = self.guard(what);
        thread::spawn(move || {
            let _done = done;
            f()
        })
    }

    /// Waits for `n` threads to end, each within [`HANG`] of the last.
    ///
    /// # Panics
    /// When they do not (a deadlock or a livelock): the message names
    /// `what` and carries the violations of `log` so far.
    pub fn wait(&self, n: usize, what: impl Display, log: &Log) {
        for _ in 0..n {
            let ended = self.rx.recv_timeout(HANG).is_ok();
            assert!(ended, "{what} did not finish within {HANG:?}: deadlock or livelock\n  {}", log.messages());
        }
    }
}

/// Joins every thread, passing a thread's panic on to the test.
pub fn join_all<R>(handles: impl IntoIterator<Item = JoinHandle<R>>) -> Vec<R> {
    handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u32> = (0..64).map(|_| a.below(10)).collect();
        let ys: Vec<u32> = (0..64).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 10));
        assert!(xs.iter().any(|&x| x != xs[0]), "not constant: {xs:?}");
        assert_eq!(Rng::new(1).below(0), 0);
    }

    #[test]
    fn irql_is_per_thread() {
        set_irql(2);
        let other = thread::spawn(irql).join().unwrap();
        assert_eq!((irql(), other), (2, 0));
        set_irql(0);
    }

    #[test]
    fn the_log_keeps_violations_from_every_thread() {
        let log = Arc::new(Log::default());
        log.check(true, || unreachable!());
        assert!(!log.failed());
        log.assert_clean("nothing yet");
        let l = log.clone();
        thread::spawn(move || l.check(false, || "seen elsewhere".into())).join().unwrap();
        assert!(log.failed());
        assert!(log.messages().contains("seen elsewhere"));
        for i in 0..40 {
            log.fail(format!("{i}"));
        }
        assert_eq!(log.messages().lines().count(), 24);
        assert!(std::panic::catch_unwind(|| log.assert_clean("now")).is_err());
    }

    #[test]
    fn the_watchdog_hears_of_ends_and_panics() {
        let dog = Watchdog::default();
        let ok = dog.spawn("ok", || 5);
        let bad = dog.spawn("bad", || panic!("a thread's panic"));
        dog.wait(2, "two threads", &Log::default());
        assert_eq!(ok.join().unwrap(), 5);
        assert!(bad.join().is_err());
    }
}
