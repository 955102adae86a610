//! Publishing and withdrawing the mapped BAR0 register window while other
//! processors may be accessing registers.
//!
//! The glue maps BAR0 at `IRP_MN_START_DEVICE` (`MmMapIoSpaceEx`) and must
//! unmap it (`MmUnmapIoSpace`) at stop, surprise removal or removal, while
//! a child's interface call, the DPC or the watchdog on another processor
//! may be in the middle of a `READ_REGISTER_ULONG`. [`RegisterWindow`]
//! makes that safe without a lock on the register path:
//!
//! 1. an access announces itself (`in_flight += 1`), then reads the base;
//! 2. [`RegisterWindow::withdraw`] hides the base, then waits until no
//!    access is in flight, and only then hands the mapping back to unmap.
//!
//! With sequentially consistent operations on both sides, either the access
//! sees the hidden (zero) base and does nothing, or the withdrawal sees it
//! in flight and waits for it. An access outside the window, misaligned, or
//! while nothing is published does nothing (the glue then reads all ones,
//! like a vanished PCI device). The glue keeps every access at
//! `DISPATCH_LEVEL` or above, so the wait is bounded by one register access.
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Why [`RegisterWindow::publish`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// A window is already published (withdraw it first).
    AlreadyPublished,
    /// The base is 0 or the window is shorter than one register.
    Invalid,
}

/// A register window (base address and length) shared by every processor.
#[derive(Debug, Default)]
pub struct RegisterWindow {
    base: AtomicUsize,
    bytes: AtomicUsize,
    in_flight: AtomicU32,
}

impl RegisterWindow {
    /// Nothing published.
    #[must_use]
    pub const fn new() -> Self {
        Self { base: AtomicUsize::new(0), bytes: AtomicUsize::new(0), in_flight: AtomicU32::new(0) }
    }

    /// Publishes the window at `base` (a mapped virtual address) of `bytes`.
    ///
    /// # Errors
    /// [`PublishError`] when one is already published or the window is unusable.
    pub fn publish(&self, base: usize, bytes: usize) -> Result<(), PublishError> {
        if base == 0 || bytes < 4 {
            return Err(PublishError::Invalid);
        }
        if self.base.load(Ordering::SeqCst) != 0 {
            return Err(PublishError::AlreadyPublished);
        }
        self.bytes.store(bytes, Ordering::SeqCst);
        self.base.store(base, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a window is published.
    pub fn is_published(&self) -> bool {
        self.base.load(Ordering::SeqCst) != 0
    }

    /// Runs `access` with the address of the 32-bit register at byte
    /// `offset`, if a window is published and the register lies aligned
    /// inside it; the window cannot be withdrawn while `access` runs.
    pub fn access<R>(&self, offset: u32, access: impl FnOnce(usize) -> R) -> Option<R> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let base = self.base.load(Ordering::SeqCst);
        let bytes = self.bytes.load(Ordering::SeqCst);
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let inside = offset % 4 == 0 && offset.checked_add(4).is_some_and(|end| end <= bytes);
        let result = if base != 0 && inside { base.checked_add(offset).map(access) } else { None };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Hides the window, waits until no access is in flight, and returns
    /// `(base, bytes)` to unmap; `None` when nothing was published. Never
    /// call it from inside [`Self::access`] (it would wait for itself).
    pub fn withdraw(&self) -> Option<(usize, usize)> {
        let base = self.base.swap(0, Ordering::SeqCst);
        if base == 0 {
            return None;
        }
        while self.in_flight.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
        Some((base, self.bytes.swap(0, Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn publish_access_withdraw() {
        let window = RegisterWindow::new();
        assert_eq!(window.access(0, |a| a), None, "nothing published");
        assert_eq!(window.publish(0, 0x500), Err(PublishError::Invalid));
        assert_eq!(window.publish(0x1000, 2), Err(PublishError::Invalid));
        window.publish(0x1000, 0x500).unwrap();
        assert!(window.is_published());
        assert_eq!(window.publish(0x2000, 0x500), Err(PublishError::AlreadyPublished));
        assert_eq!(window.access(0x10, |a| a), Some(0x1010));
        assert_eq!(window.access(0x4FC, |a| a), Some(0x14FC), "last register");
        assert_eq!(window.access(0x500, |a| a), None, "past the end");
        assert_eq!(window.access(0x11, |a| a), None, "misaligned");
        assert_eq!(window.access(u32::MAX, |a| a), None);
        assert_eq!(window.withdraw(), Some((0x1000, 0x500)));
        assert_eq!(window.withdraw(), None, "idempotent");
        assert_eq!(window.access(0x10, |a| a), None);
        window.publish(0x3000, 0x500).unwrap();
        assert_eq!(window.access(0, |a| a), Some(0x3000), "published again after a restart");
    }

    /// Accesses race a withdrawal on other threads: no access may run
    /// after `withdraw` returned (the mapping would be gone).
    #[test]
    fn no_access_survives_a_withdrawal() {
        for _ in 0..20 {
            let window = Arc::new(RegisterWindow::new());
            let mapped = Arc::new(AtomicBool::new(true));
            window.publish(0x10_0000, 0x500).unwrap();
            let workers: Vec<_> = (0..3)
                .map(|t| {
                    let (window, mapped) = (Arc::clone(&window), Arc::clone(&mapped));
                    std::thread::spawn(move || {
                        let mut done = 0u32;
                        for i in 0u32..20_000 {
                            let offset = (i.wrapping_mul(4) + t * 4) % 0x500;
                            if window
                                .access(offset, |_| {
                                    assert!(mapped.load(Ordering::SeqCst), "access after the unmap");
                                    std::hint::spin_loop();
                                })
                                .is_some()
                            {
                                done += 1;
                            }
                        }
                        done
                    })
                })
                .collect();
            std::thread::yield_now();
            let returned = window.withdraw();
            // "MmUnmapIoSpace": from here on an access would fault.
            mapped.store(false, Ordering::SeqCst);
            assert_eq!(returned, Some((0x10_0000, 0x500)));
            for worker in workers {
                worker.join().expect("no access ran after the withdrawal");
            }
        }
    }
}
