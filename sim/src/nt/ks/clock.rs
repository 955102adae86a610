//! The master clock an application assigns to a pin and the
//! `IKsReferenceClock` AVStream gives the minidriver for it
//! ("KSPROPERTY_STREAM_MASTERCLOCK", "KsPinGetReferenceClockInterface
//! function (ks.h)", "IKsReferenceClock interface (ks.h)" and its methods'
//! pages, "AVStream Clocks").
//!
//! The clock is the graph's: its stream time (100-ns units) starts at 0
//! and runs while the pin is in `KSSTATE_RUN`, stopping in the states below
//! (a paused graph's clock stands still). The system time its correlated
//! methods pair it with is the kernel's interrupt time.
//!
//! Checked, as the frames leave the queue with a clock assigned
//! ([`check_presentation`]): a frame delivered with data has
//! `KSSTREAM_HEADER_OPTIONSF_TIMEVALID` (`KS_PRESENTATION_TIME_NOT_VALID`),
//! a `PresentationTime` the clock has reached (`KS_PRESENTATION_TIME_AHEAD_OF_CLOCK`:
//! a time on another time base, such as the board's) and not earlier than
//! the frame before it (`KS_PRESENTATION_TIME_BACKWARDS`). These are stream
//! contracts an application sees broken, not bug checks: they are findings
//! with bug check 0. The interface's references: a `Release` without one
//! (`KS_INTERFACE_RELEASED_TOO_OFTEN`), references still held when the pin
//! closes (`KS_CLOCK_NOT_RELEASED`).

use capdma_winvm::{Machine, Stop};

use super::super::layout::irp::status;
use super::super::{Nt, DISPATCH_LEVEL};
use super::pin::{PinHandle, KSSTATE_RUN};
use super::unknown::{IID_IUNKNOWN, STATUS_NOINTERFACE};

/// `KSSTREAM_HEADER_OPTIONSF_TIMEVALID` (ks.h).
const TIMEVALID: u32 = capdma_avstream::ks_format::KSSTREAM_HEADER_OPTIONSF_TIMEVALID;

/// Offsets in a clock's interface page: the object (its vtable pointer),
/// then the vtable.
const OBJECT: u64 = 0;
const VTABLE: u64 = 0x40;

/// A pin's master clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasterClock {
    /// Stream time accumulated in earlier runs, 100-ns units.
    pub elapsed: u64,
    /// Interrupt time the current run started at, while the pin is in `KSSTATE_RUN`.
    pub running_since: Option<u64>,
    /// The page of the clock's `IKsReferenceClock` (made on first use), or 0.
    pub page: u64,
    /// References `KsPinGetReferenceClockInterface`/`QueryInterface`/`AddRef`
    /// gave out and `Release` did not take back.
    pub references: i64,
    /// The last `PresentationTime` checked, 100-ns units.
    pub last_presentation: Option<i64>,
}

impl MasterClock {
    /// Stream time at interrupt time `now`, 100-ns units.
    #[must_use]
    pub fn stream_time(&self, now: u64) -> i64 {
        let running = self.running_since.map_or(0, |since| now.saturating_sub(since));
        i64::try_from(self.elapsed + running).unwrap_or(i64::MAX)
    }

    /// The pin moved to `state` at interrupt time `now`: the clock runs in
    /// `KSSTATE_RUN` only.
    pub fn follow_state(&mut self, state: u32, now: u64) {
        match (state == KSSTATE_RUN, self.running_since) {
            (true, None) => self.running_since = Some(now),
            (false, Some(since)) => {
                self.elapsed += now.saturating_sub(since);
                self.running_since = None;
            }
            _ => {}
        }
    }
}

/// The application sets `KSPROPERTY_STREAM_MASTERCLOCK` on `pin` (the
/// graph's clock, at stream time 0 until the pin first runs). Returns
/// `STATUS_SUCCESS`, or `STATUS_INVALID_HANDLE` for a pin that is not open.
pub fn assign_master_clock(nt: &mut Nt, pin: PinHandle) -> u32 {
    let now = nt.time;
    let Some(record) = nt.ks.pins.get_mut(&pin.0) else {
        return status::INVALID_HANDLE;
    };
    let mut clock = MasterClock::default();
    clock.follow_state(record.state, now);
    record.clock = Some(clock);
    status::SUCCESS
}

/// The stream time of `pin`'s master clock at interrupt time `at`, or
/// `None` without one.
#[must_use]
pub fn stream_time_at(nt: &Nt, pin: PinHandle, at: u64) -> Option<i64> {
    nt.ks.pins.get(&pin.0).and_then(|r| r.clock).map(|c| c.stream_time(at))
}

/// `NTSTATUS KsPinGetReferenceClockInterface(PKSPIN Pin, PIKSREFERENCECLOCK
/// *Interface)` (`PASSIVE_LEVEL`): with a master clock assigned, its
/// `IKsReferenceClock` with a reference taken and `STATUS_SUCCESS`;
/// without, NULL and `STATUS_DEVICE_NOT_READY` ("if the pin has not yet
/// received notification of the master clock").
///
/// # Errors
/// [`Stop::Host`] when the machine's frames or stubs are exhausted.
pub(crate) fn ks_pin_get_reference_clock_interface(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [pin, out] = m.args::<2>()?;
    nt.verifier.checks += 1;
    let Some(clock) = nt.ks.pins.get(&pin).map(|r| r.clock) else {
        nt.violation(m, "KS_NOT_AN_AVSTREAM_OBJECT", 0xC4, None, format!("KsPinGetReferenceClockInterface({pin:#x}): not a pin"));
        return Ok(u64::from(status::INVALID_PARAMETER));
    };
    let Some(clock) = clock else {
        m.write_u64(out, 0)?;
        return Ok(u64::from(status::DEVICE_NOT_READY));
    };
    let page = if clock.page == 0 { interface_page(nt, m, pin)? } else { clock.page };
    reference(nt, pin, 1);
    nt.ks.stats.clock_interfaces += 1;
    m.write_u64(out, page + OBJECT)?;
    Ok(u64::from(status::SUCCESS))
}

/// The clock's interface object and vtable for `pin`, made once.
fn interface_page(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<u64, Stop> {
    let page = nt.alloc_kernel(m, 4096)?;
    let routines: [(&str, super::super::HostFn); 9] = [
        ("ks!IKsReferenceClock::QueryInterface", query_interface),
        ("ks!IKsReferenceClock::AddRef", add_ref),
        ("ks!IKsReferenceClock::Release", release),
        ("ks!IKsReferenceClock::GetTime", get_time),
        ("ks!IKsReferenceClock::GetPhysicalTime", get_time),
        ("ks!IKsReferenceClock::GetCorrelatedTime", get_correlated_time),
        ("ks!IKsReferenceClock::GetCorrelatedPhysicalTime", get_correlated_time),
        ("ks!IKsReferenceClock::GetResolution", get_resolution),
        ("ks!IKsReferenceClock::GetState", get_state),
    ];
    m.write_u64(page + OBJECT, page + VTABLE)?;
    for (i, (name, run)) in routines.into_iter().enumerate() {
        let va = nt.host_function(m, name, run, pin, DISPATCH_LEVEL)?;
        m.write_u64(page + VTABLE + 8 * i as u64, va)?;
    }
    if let Some(c) = nt.ks.pins.get_mut(&pin).and_then(|r| r.clock.as_mut()) {
        c.page = page;
    }
    Ok(page)
}

fn clock_of(nt: &Nt, pin: u64) -> MasterClock {
    nt.ks.pins.get(&pin).and_then(|r| r.clock).unwrap_or_default()
}

fn reference(nt: &mut Nt, pin: u64, delta: i64) -> i64 {
    nt.ks.pins.get_mut(&pin).and_then(|r| r.clock.as_mut()).map_or(0, |c| {
        c.references += delta;
        c.references
    })
}

/// `QueryInterface(this, REFIID, PVOID*)`: the clock itself for
/// `IID_IUnknown` (a reference taken); `STATUS_NOINTERFACE` and NULL for
/// anything else (a minidriver gets the clock from
/// `KsPinGetReferenceClockInterface`, not by asking).
fn query_interface(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<u64, Stop> {
    let [this, iid, out] = m.args::<3>()?;
    let mut wanted = [0u8; 16];
    m.read(iid, &mut wanted)?;
    if wanted != IID_IUNKNOWN {
        m.write_u64(out, 0)?;
        return Ok(u64::from(STATUS_NOINTERFACE));
    }
    reference(nt, pin, 1);
    m.write_u64(out, this)?;
    Ok(u64::from(status::SUCCESS))
}

/// `ULONG AddRef(this)`.
fn add_ref(nt: &mut Nt, _m: &mut Machine, pin: u64) -> Result<u64, Stop> {
    Ok(u64::try_from(reference(nt, pin, 1)).unwrap_or(0))
}

/// `ULONG Release(this)`; without a reference, `KS_INTERFACE_RELEASED_TOO_OFTEN`.
fn release(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<u64, Stop> {
    let left = reference(nt, pin, -1);
    nt.verifier.checks += 1;
    if left < 0 {
        reference(nt, pin, 1);
        nt.violation(
            m,
            "KS_INTERFACE_RELEASED_TOO_OFTEN",
            0xC4,
            None,
            format!("Release on pin {pin:#x}'s IKsReferenceClock without a reference"),
        );
        return Ok(0);
    }
    Ok(u64::try_from(left).unwrap_or(0))
}

/// `LONGLONG GetTime(this)` (and `GetPhysicalTime`: this clock is never
/// adjusted, so its physical time is its time): the stream time now.
fn get_time(nt: &mut Nt, _m: &mut Machine, pin: u64) -> Result<u64, Stop> {
    nt.ks.stats.clock_reads += 1;
    Ok(clock_of(nt, pin).stream_time(nt.time).cast_unsigned())
}

/// `LONGLONG GetCorrelatedTime(this, PLONGLONG SystemTime)` (and
/// `GetCorrelatedPhysicalTime`): the stream time now, with the system
/// (interrupt) time of the same moment in `*SystemTime`.
fn get_correlated_time(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<u64, Stop> {
    let [_this, system_time] = m.args::<2>()?;
    nt.ks.stats.clock_reads += 1;
    if system_time != 0 {
        m.write_u64(system_time, nt.time)?;
    }
    Ok(clock_of(nt, pin).stream_time(nt.time).cast_unsigned())
}

/// `NTSTATUS GetResolution(this, PKSRESOLUTION)`: `Granularity` 1 (100 ns), `Error` 0.
fn get_resolution(_nt: &mut Nt, m: &mut Machine, _pin: u64) -> Result<u64, Stop> {
    let [_this, resolution] = m.args::<2>()?;
    m.write_u64(resolution, 1)?;
    m.write_u64(resolution + 8, 0)?;
    Ok(u64::from(status::SUCCESS))
}

/// `NTSTATUS GetState(this, PKSSTATE)`: the pin's (the graph's) state.
fn get_state(nt: &mut Nt, m: &mut Machine, pin: u64) -> Result<u64, Stop> {
    let [_this, state] = m.args::<2>()?;
    let now = nt.ks.pins.get(&pin).map_or(0, |r| r.state);
    m.write_u32(state, now)?;
    Ok(u64::from(status::SUCCESS))
}

/// A frame of `pin` leaves the queue with `data_used` bytes, `options`
/// (`KSSTREAM_HEADER.OptionsFlags`) and `presentation` (100-ns units):
/// with a master clock assigned, the checks of this module's
/// documentation. Nothing without a clock or for a frame without data.
pub fn check_presentation(nt: &mut Nt, m: &Machine, pin: u64, data_used: u32, options: u32, presentation: i64) {
    let now = nt.time;
    let Some(clock) = nt.ks.pins.get(&pin).and_then(|r| r.clock) else {
        return;
    };
    if data_used == 0 {
        return;
    }
    let stream_time = clock.stream_time(now);
    nt.verifier.checks += 3;
    let mut on_clock = false;
    if options & TIMEVALID == 0 {
        nt.violation(
            m,
            "KS_PRESENTATION_TIME_NOT_VALID",
            0,
            None,
            format!("pin {pin:#x}: a frame of {data_used} bytes without KSSTREAM_HEADER_OPTIONSF_TIMEVALID on a pin with a master clock"),
        );
    } else if presentation > stream_time {
        nt.violation(
            m,
            "KS_PRESENTATION_TIME_AHEAD_OF_CLOCK",
            0,
            None,
            format!("pin {pin:#x}: PresentationTime {presentation} is ahead of the master clock's stream time {stream_time} (not a time of the clock)"),
        );
    } else if clock.last_presentation.is_some_and(|last| presentation < last) {
        nt.violation(
            m,
            "KS_PRESENTATION_TIME_BACKWARDS",
            0,
            None,
            format!(
                "pin {pin:#x}: PresentationTime {presentation} is before the previous frame's {}",
                clock.last_presentation.unwrap_or_default()
            ),
        );
    } else {
        on_clock = true;
    }
    // The order is checked against the last time that was on the clock.
    if let Some(c) = nt.ks.pins.get_mut(&pin).and_then(|r| r.clock.as_mut()).filter(|_| on_clock) {
        c.last_presentation = Some(presentation);
    }
}

/// The pin closes: references to its clock the minidriver still holds
/// are `KS_CLOCK_NOT_RELEASED`; the interface page goes.
///
/// # Errors
/// A host error freeing the page.
pub fn check_released(nt: &mut Nt, m: &mut Machine, pin: u64, clock: Option<MasterClock>) -> Result<(), Stop> {
    let Some(clock) = clock else {
        return Ok(());
    };
    nt.verifier.checks += 1;
    if clock.references != 0 {
        nt.violation(
            m,
            "KS_CLOCK_NOT_RELEASED",
            0xC4,
            None,
            format!("pin {pin:#x} closed with {} reference(s) to its IKsReferenceClock not released", clock.references),
        );
    }
    if clock.page != 0 {
        m.free_own_pages(clock.page, 1)?;
    }
    Ok(())
}
