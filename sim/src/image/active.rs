//! Which machine and kernel host code may enter the guest through.
//!
//! The AVStream core on the host calls the bus image's interface through
//! `extern "system"` function pointers (see [`super::interface`]); such a
//! call arrives with no `&mut` to the machine. The owner of the system
//! makes it *active* for the duration of its work ([`enter`]); a host
//! function the guest calls (a completion callback from the image's DPC)
//! re-activates the machine and kernel it was handed ([`enter`] again,
//! nested), so a host callback that calls back into the guest uses the
//! innermost borrow, never a second one. Thunks reach them with [`with`].
//!
//! A [`Stop`] raised inside a thunk (a bugcheck in the image) cannot cross
//! the `extern "system"` boundary: it is kept ([`take_stop`]) and the
//! thunk answers `STATUS_DEVICE_REMOVED`, as a dead machine would.

use std::cell::{Cell, RefCell};

use capdma_winvm::{Machine, Stop};

use crate::nt::Nt;

thread_local! {
    static ACTIVE: Cell<Option<(*mut Machine, *mut Nt)>> = const { Cell::new(None) };
    static STOPPED: RefCell<Option<Stop>> = const { RefCell::new(None) };
}

/// Runs `f` with `m` and `nt` active; restores what was active before.
pub fn enter<R>(m: &mut Machine, nt: &mut Nt, f: impl FnOnce() -> R) -> R {
    /// Puts back what was active, also when `f` unwinds.
    struct Restore(Option<(*mut Machine, *mut Nt)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ACTIVE.with(|a| a.replace(Some((std::ptr::from_mut(m), std::ptr::from_mut(nt))))));
    f()
}

/// Runs `f` on the active machine and kernel; `None` when none is active
/// (a thunk called outside a run: a programming error of the host side,
/// kept as a [`Stop`]).
pub fn with<R>(f: impl FnOnce(&mut Machine, &mut Nt) -> Result<R, Stop>) -> Option<R> {
    let Some((m, nt)) = ACTIVE.with(Cell::get) else {
        keep(Stop::Host("a bus interface thunk was called with no machine active".into()));
        return None;
    };
    // SAFETY: the pointers were made by `enter` from live `&mut` borrows
    // whose scope encloses this call; nothing else uses those borrows until
    // `f` returns (the caller of `enter` is suspended in host code that
    // called this thunk), and a nested `enter` replaces them for its scope.
    let m = unsafe { &mut *m };
    // SAFETY: as above.
    let nt = unsafe { &mut *nt };
    match f(m, nt) {
        Ok(value) => Some(value),
        Err(stop) => {
            keep(stop);
            None
        }
    }
}

/// Keeps the first stop raised in a thunk.
pub fn keep(stop: Stop) {
    STOPPED.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = Some(stop);
        }
    });
}

/// The stop a thunk kept, if any (taken).
#[must_use]
pub fn take_stop() -> Option<Stop> {
    STOPPED.with(|s| s.borrow_mut().take())
}
