//! The rows the images make possible (`--drivers images`): Driver
//! Verifier's low resources simulation over both images, `_KsEdit` failing
//! in a format change and plain stream headers (these three through both
//! images only); and two that run with every driver: a pin's handle closed
//! as its engine's reset outlasts the bus's wait, and a surprise removal
//! with pins open on four channels.
use std::collections::BTreeMap;

use capdma_avstream::state::KsState;
use capdma_interface::regs::RESET_POLL_READS;
use capdma_interface::status::{
    nt_success, status_name, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS,
};

use super::{delivered_after, interval, log, names, started, status_of, Ctx};
use crate::board::{BoardFault, BoardKind};
use crate::faults::{FaultRow, RowSpec};
use crate::machine::{Action, ChannelLog, Drivers, Machine, MachineConfig, RunError, RunHooks};
use crate::nt::layout::ks::ksstream_header;
use crate::nt::verifier::LowResources;
use crate::violations::ViolationKind;

/// The row runs through both images only: a row asked to run with other
/// drivers (a caller that skipped [`crate::faults::not_applicable`]) fails
/// at once rather than run what cannot apply.
fn images_only(ctx: &Ctx) -> bool {
    matches!(ctx.drivers, Drivers::Images { .. })
}

/// What the low-resources row fails: every kind of call of the emulated
/// kernel's low resources simulation but `_KsEdit`, whose failure is the
/// failure of its pool allocation (a [`LowResources::Pool`] index already).
const LOW_RESOURCES_KINDS: [LowResources; 5] =
    [LowResources::Pool, LowResources::DeviceObject, LowResources::Irp, LowResources::DmaAdapter, LowResources::CommonBuffer];

/// How one machine with one call failed ended.
enum Ending {
    /// The start was refused: the step and its status.
    Refused(String, capdma_interface::status::NtStatus),
    /// The start succeeded (the failed call, if it came in the start, was
    /// tolerated: `true`) and the stream ran.
    Streamed(bool),
    /// Anything else (the machine could not be built, the start failed
    /// for a reason that is not a driver's status).
    Broken(String),
}

/// What the low-resources row saw on one board.
#[derive(Default)]
struct LowResourcesTally {
    /// Calls failed (machines run).
    exercised: u32,
    /// Starts refused, by `step: status`.
    refused: BTreeMap<String, u32>,
    /// Machines that streamed with the failed call inside their start: which.
    tolerated: Vec<String>,
    /// Machines whose failed call came after the start (stream, teardown).
    after_start: u32,
    /// What did not end cleanly.
    unclean: Vec<String>,
    /// Failures whose call was never made.
    missed: Vec<String>,
}

/// The low-resources row on one board: a clean start, short stream and
/// teardown counts each kind's calls (the counts, for the statuses); then
/// one machine per call with that call failed, each judged into `tally`
/// (its frames, violations and leaks into `ctx`). `Err` when the clean
/// run cannot even be made.
fn low_resources_on(ctx: &mut Ctx, board: BoardKind, tally: &mut LowResourcesTally) -> Result<String, String> {
    let config = MachineConfig { board, width: 64, height: 16, fps: 120, frames: 4, app_buffers: 2, ..ctx.base() };
    let mut clean = Machine::new(config.clone()).map_err(|e| format!("{board:?}: machine: {e}"))?;
    let before: Vec<u64> = LOW_RESOURCES_KINDS.iter().map(|k| clean.image_calls(*k).unwrap_or(0)).collect();
    if let Err(e) = clean.start() {
        clean.teardown();
        return Err(format!("{board:?}: the clean start: {e}"));
    }
    clean.run(&mut RunHooks::default());
    clean.teardown();
    ctx.count_kernel(&clean);
    for v in clean.violations().entries() {
        if v.kind == ViolationKind::Leak {
            ctx.extra_leaks.push(format!("{board:?}: the clean run: {}", v.message));
        } else {
            ctx.extra_violations.push(format!("{board:?}: the clean run: {v}"));
        }
    }
    let made: Vec<u64> =
        LOW_RESOURCES_KINDS.iter().zip(&before).map(|(k, b)| clean.image_calls(*k).unwrap_or(0).saturating_sub(*b)).collect();
    let counted: Vec<String> = LOW_RESOURCES_KINDS.iter().zip(&made).map(|(k, n)| format!("{} {n}", k.ddi())).collect();
    let c = clean.report().channels.first().cloned().unwrap_or_default();
    for ch in clean.report().channels {
        ctx.extra.captured += ch.frames_captured;
        ctx.extra.delivered += ch.frames_delivered;
        ctx.extra.verified += ch.frames_verified;
        ctx.extra.corrupt += ch.frames_corrupt;
    }
    ctx.check(
        format!("{board:?}: the clean run streamed ({} of {} delivered) making {}", c.frames_delivered, c.frames_captured, counted.join(", ")),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured && made[0] > 0,
    );
    for (kind, count) in LOW_RESOURCES_KINDS.iter().zip(&made) {
        for nth in 0..*count {
            let what = format!("{board:?}: {} #{nth} failed", kind.ddi());
            tally.exercised += 1;
            let mut m = match Machine::new(config.clone()) {
                Ok(m) => m,
                Err(e) => {
                    tally.unclean.push(format!("{what}: machine: {e}"));
                    continue;
                }
            };
            let index = m.image_low_resources(*kind, nth).unwrap_or(u64::MAX);
            let ending = match m.start() {
                Ok(()) => {
                    let in_start = m.image_calls(*kind).unwrap_or(0) > index;
                    m.run(&mut RunHooks::default());
                    Ending::Streamed(in_start)
                }
                Err(RunError::Driver { step, status, .. }) => Ending::Refused(step, status),
                Err(e) => Ending::Broken(e.to_string()),
            };
            m.teardown();
            ctx.count_kernel(&m);
            if m.image_calls(*kind).unwrap_or(0) <= index {
                tally.missed.push(what.clone());
            }
            let report = m.report();
            let delivered: u64 = report.channels.iter().map(|c| c.frames_delivered).sum();
            for c in &report.channels {
                ctx.extra.captured += c.frames_captured;
                ctx.extra.delivered += c.frames_delivered;
                ctx.extra.verified += c.frames_verified;
                ctx.extra.corrupt += c.frames_corrupt;
            }
            for v in m.violations().entries() {
                if v.kind == ViolationKind::Leak {
                    ctx.extra_leaks.push(format!("{what}: {}", v.message));
                } else {
                    ctx.extra_violations.push(format!("{what}: {v}"));
                }
            }
            match ending {
                Ending::Refused(step, status) if !nt_success(status) => {
                    *tally.refused.entry(format!("{step}: {}", status_name(status))).or_default() += 1;
                }
                Ending::Refused(step, status) => {
                    tally.unclean.push(format!("{what}: {step} refused with a success status {}", status_name(status)));
                }
                Ending::Streamed(_) if delivered == 0 => tally.unclean.push(format!("{what}: started, but nothing was delivered")),
                Ending::Streamed(true) => {
                    let by = m.image_pool_failures().first().map_or(String::new(), |c| format!(" (asked by {c})"));
                    tally.tolerated.push(format!("{what}{by}"));
                }
                Ending::Streamed(false) => tally.after_start += 1,
                Ending::Broken(why) => tally.unclean.push(format!("{what}: {why}")),
            }
        }
    }
    Ok(format!("{board:?} ({})", counted.join(", ")))
}

/// `low-resources/images`: on the S/G board and on the common-buffer one,
/// a clean start, short stream and teardown counts each kind's calls;
/// then one machine per call, with that call failed (Driver Verifier's low
/// resources simulation), started, streamed and torn down. Every ending
/// must be clean: the start refused with an error status, or the stream
/// on; no finding, bugcheck, violation or leak in any machine.
pub(super) fn low_resources(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    if !images_only(&ctx) {
        return ctx.broken("runs through both images only (--drivers images)".into());
    }
    let mut tally = LowResourcesTally::default();
    let mut counted = Vec::new();
    for board in [BoardKind::ScatterGather, BoardKind::Legacy] {
        match low_resources_on(&mut ctx, board, &mut tally) {
            Ok(counts) => counted.push(counts),
            Err(why) => return ctx.broken(why),
        }
    }
    let refusals: u32 = tally.refused.values().sum();
    let tolerated = u32::try_from(tally.tolerated.len()).unwrap_or(u32::MAX);
    let streamed = tolerated + tally.after_start;
    ctx.statuses.push(format!(
        "{} calls failed in turn, one machine each ({}): {refusals} refused the start, {streamed} streamed on ({} with the failure inside the start, {} with it in the stream or the teardown)",
        tally.exercised,
        counted.join("; "),
        tolerated,
        tally.after_start
    ));
    if !tally.tolerated.is_empty() {
        ctx.statuses.push(format!("streamed on with the failure inside the start: {}", tally.tolerated.join(", ")));
    }
    for (step, n) in &tally.refused {
        ctx.statuses.push(format!("{n} x {step}"));
    }
    ctx.check(format!("every failure hit its call ({} missed: {:?})", tally.missed.len(), tally.missed), tally.missed.is_empty());
    ctx.check(
        format!(
            "every failure ended cleanly, the start refused with an error status or the stream on ({refusals} + {streamed} of {}; otherwise: {:?})",
            tally.exercised, tally.unclean
        ),
        tally.unclean.is_empty() && refusals + streamed == tally.exercised && tally.exercised > 0,
    );
    ctx.check(format!("the failures reached the start: {refusals} refused it"), refusals > 0);
    ctx.recovered(format!("{streamed} of the machines with a call failed streamed on"), streamed > 0);
    ctx.finish(None)
}

/// The status of each `SetDataFormat to WxH` the row asked for, with what
/// it recorded (KS's connection format after the call).
fn format_changes(m: &Machine) -> Vec<(String, capdma_interface::status::NtStatus)> {
    m.statuses().iter().filter(|s| s.what.contains("SetDataFormat to")).map(|s| (s.what.clone(), s.status)).collect()
}

/// `ksedit-fails/images`: in `KSSTATE_STOP` the application asks for half
/// the size, with the image's first `_KsEdit` (its descriptor) failing,
/// then with its second (the framing) failing; the pin runs again in the
/// old format; later the same change unfailed is accepted and the pin runs
/// in the new one.
pub(super) fn ksedit_fails(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    if !images_only(&ctx) {
        return ctx.broken("runs through both images only (--drivers images)".into());
    }
    let k = ctx.pick(6, 14);
    let mut m = match started(ctx.base()) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let (width, height) = (m.config().width, m.config().height);
    let (half_w, half_h) = (width / 2, height / 2);
    let half = interval(&m) / 2;
    let (card, channel) = (0, 0);
    let refused_at = m.frame_time(k) + half;
    let resume = m.frame_time(k + 2) + half;
    let changed_at = m.frame_time(k + 20) + half;
    let resume_new = m.frame_time(k + 22) + half;
    m.schedule(refused_at, Action::PinState { card, channel, to: KsState::Stop });
    for nth in [0, 1] {
        m.schedule(refused_at, Action::ImageLowResources { kind: LowResources::KsEdit, nth });
        m.schedule(refused_at, Action::PinChangeFormat { card, channel, width: half_w, height: half_h });
    }
    m.schedule(resume, Action::PinState { card, channel, to: KsState::Run });
    m.schedule(changed_at, Action::PinState { card, channel, to: KsState::Stop });
    m.schedule(changed_at, Action::PinChangeFormat { card, channel, width: half_w, height: half_h });
    m.schedule(resume_new, Action::PinState { card, channel, to: KsState::Run });
    m.run(&mut RunHooks::default());
    let trace = log(&m, card, channel);
    let edits = m.image_calls(LowResources::KsEdit).unwrap_or(0);
    m.teardown();
    let changes = format_changes(&m);
    let shown: Vec<String> = changes.iter().map(|(what, st)| format!("{what}: {}", status_name(*st))).collect();
    let old = format!("KS's connection format now {width}x{height}");
    let new = format!("KS's connection format now {half_w}x{half_h}");
    let refusals = changes.iter().take(2).filter(|(what, st)| *st == STATUS_INSUFFICIENT_RESOURCES && what.contains(&old)).count();
    ctx.check(
        format!("both changes with a _KsEdit failing (descriptor, framing) refused with STATUS_INSUFFICIENT_RESOURCES, KS keeping {width}x{height} ({shown:?})"),
        changes.len() == 3 && refusals == 2,
    );
    ctx.check(
        format!("the same change unfailed accepted, KS then holding {half_w}x{half_h} ({:?})", shown.get(2)),
        changes.get(2).is_some_and(|(what, st)| *st == STATUS_SUCCESS && what.contains(&new)),
    );
    ctx.check(format!("the image edited its descriptor and framing through _KsEdit ({edits} calls)"), edits >= 4);
    let states = status_of(&m, "KS state to");
    ctx.check(format!("every state change succeeded ({})", names(&states)), states == [STATUS_SUCCESS; 4]);
    // The frames between the resume and the next stop are the old format:
    // each one verified byte for byte at its size (the row's common check;
    // a frame of the refused size is a corrupt delivery).
    let old_format = trace.delivered.iter().filter(|(t, _)| resume < *t && *t < changed_at).count();
    let new_format = delivered_after(&trace, resume_new);
    ctx.recovered(
        format!("{old_format} frames after the refused changes (in {width}x{height}), {new_format} after the accepted one (in {half_w}x{half_h})"),
        old_format > 0 && new_format > 0,
    );
    ctx.finish(Some(&m))
}

/// `close-while-reset-hangs/images`: channel 0's engine will not
/// acknowledge its next reset within the bus's own wait
/// ([`RESET_POLL_READS`] reads of `STATUS`), only at the read after it;
/// the application closes the pin's handle at once (KS stops it: the bus
/// resets the engine, gives up waiting, marks the reset pending and holds
/// the frames; its delivery pass in the same `StopChannel` looks again and
/// finds the reset done, and only then hands the frames back — the burst
/// the reset caught lands at that acknowledgement, into memory still
/// mapped). The close must return with every frame back; channel 1
/// streams on. (An engine that acknowledges later still leaves the frames
/// held through `StopChannel`: the pin then waits in `Close`, one
/// `KeDelayExecutionThread` of 1 ms per 2^20 `RegisterCompletion(NULL)`
/// refusals — minutes of emulation per close, so not a row; one that
/// never does blocks the close by design until the device is removed.)
/// Runs with every driver.
pub(super) fn close_while_reset_hangs(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(10, 30);
    let config = MachineConfig { channels: 2, ..ctx.base() };
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let at = m.frame_time(k) + interval(&m) / 2;
    let reads = RESET_POLL_READS + 1;
    m.schedule(at, Action::InjectFaultNow { card: 0, fault: BoardFault::ResetStuck { channel: 0, reads } });
    m.schedule(at, Action::PinClose { card: 0, channel: 0 });
    m.run(&mut RunHooks::default());
    let closed = log(&m, 0, 0);
    let other = log(&m, 0, 1);
    m.teardown();
    let close = status_of(&m, "card 0 channel 0: pin closed");
    let walk = status_of(&m, "card 0 channel 0: KSSTATE_STOP at IRP_MJ_CLOSE");
    ctx.check(format!("the close returned ({}), every step to KSSTATE_STOP succeeded ({} failed)", names(&close), walk.len()), close == [STATUS_SUCCESS] && walk.is_empty());
    let board = m.board().channel_stats(0).unwrap_or_default();
    ctx.check(
        format!(
            "the engine's reset outlasted the bus's {RESET_POLL_READS}-read wait and was acknowledged at its next look ({} stuck, {} acknowledged)",
            board.resets_stuck, board.resets_stuck_acknowledged
        ),
        board.resets_stuck == 1 && board.resets_stuck_acknowledged == 1,
    );
    ctx.check(
        format!(
            "channel 0: every frame back to the application ({} of {} completed, {} queued, {} clones)",
            closed.ks_completed, closed.ks_submitted, closed.ks_queued, closed.ks_live_clones
        ),
        closed.ks_submitted > 0 && closed.ks_completed == closed.ks_submitted && closed.ks_queued == 0 && closed.ks_live_clones == 0,
    );
    let late = delivered_after(&closed, at);
    ctx.check(format!("channel 0: nothing delivered after the close ({late})"), late == 0);
    let before = closed.delivered.len();
    let after = delivered_after(&other, at);
    let c1 = m.report().channels.iter().find(|c| c.channel == 1).cloned().unwrap_or_default();
    ctx.recovered(
        format!(
            "channel 0 streamed until the close ({before} frames), channel 1 on after it ({after} frames, {} of {} delivered)",
            c1.frames_delivered, c1.frames_captured
        ),
        before > 0 && after > 0 && c1.frames_delivered == c1.frames_captured,
    );
    ctx.finish(Some(&m))
}

/// `plain-headers/images`: the application's stream headers are
/// `sizeof(KSSTREAM_HEADER)` bytes, no `KS_FRAME_INFO`, each at the end of
/// its page against a guard page (a minidriver touching the extended
/// header it was not given faults); without a picture number the
/// application identifies each frame by its `PresentationTime` (the
/// capture made then) and verifies it.
pub(super) fn plain_headers(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    let mut ctx = Ctx::new(spec, drivers, seed);
    if !images_only(&ctx) {
        return ctx.broken("runs through both images only (--drivers images)".into());
    }
    let plain = u32::try_from(ksstream_header::SIZE).unwrap_or(56);
    let config = MachineConfig { stream_header_size: Some(plain), ..ctx.base() };
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let headers = m.image_stream_headers();
    let guarded = headers.iter().filter(|(size, guard)| *size == plain && *guard).count();
    ctx.check(
        format!("the application's {} stream headers are {plain} bytes, each against a guard page ({guarded} guarded)", headers.len()),
        !headers.is_empty() && guarded == headers.len(),
    );
    m.run(&mut RunHooks::default());
    let trace: ChannelLog = log(&m, 0, 0);
    m.teardown();
    let c = m.report().channels.first().cloned().unwrap_or_default();
    ctx.check(
        format!("every good frame came without a picture number and was identified by its PresentationTime ({} of {})", trace.frames_by_time, c.frames_delivered),
        c.frames_delivered > 0 && trace.frames_by_time == c.frames_delivered,
    );
    let increasing = trace.delivered.windows(2).all(|w| w[0].1 < w[1].1);
    ctx.check("the frames came in capture order (the frame numbers their times name only increase)", increasing);
    ctx.recovered(
        format!("every frame delivered and verified by its time ({} of {} delivered, {} verified)", c.frames_delivered, c.frames_captured, c.frames_verified),
        c.frames_captured > 0 && c.frames_delivered == c.frames_captured && c.frames_verified == c.frames_delivered,
    );
    ctx.finish(Some(&m))
}

/// `surprise-removal-open-pins/images`: two cards of four channels; card
/// 0's board vanishes mid-stream with all four pins open and running, Plug
/// and Play's surprise removal follows 1 ms later (the application closes
/// its pins in it). Runs with every driver.
pub(super) fn surprise_removal_open_pins(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    const CHANNELS: u32 = 4;
    let mut ctx = Ctx::new(spec, drivers, seed);
    let k = ctx.pick(10, 30);
    let config = MachineConfig { cards: 2, channels: CHANNELS, ..ctx.base() };
    let mut m = match started(config) {
        Ok(m) => m,
        Err(e) => return ctx.broken(e),
    };
    let gone = m.frame_time(k) + interval(&m) / 3;
    let pnp = gone + 10_000;
    m.schedule(gone, Action::InjectFaultNow { card: 0, fault: BoardFault::SurpriseRemoval });
    m.schedule(pnp, Action::SurpriseRemoval { card: 0 });
    m.run(&mut RunHooks::default());
    let logs: Vec<(u32, u32, ChannelLog)> =
        (0..2).flat_map(|card| (0..CHANNELS).map(move |ch| (card, ch))).map(|(card, ch)| (card, ch, log(&m, card, ch))).collect();
    m.teardown();
    for (_, ch, trace) in logs.iter().filter(|(card, _, _)| *card == 0) {
        let before = trace.delivered.iter().filter(|(t, _)| *t < gone).count();
        let late = delivered_after(trace, gone);
        ctx.check(format!("card 0 channel {ch}: streaming when the board vanished ({before} frames), nothing after ({late})"), before > 0 && late == 0);
        let closed = status_of(&m, &format!("card 0 channel {ch}: pin closed"));
        ctx.check(format!("card 0 channel {ch}: the pin closed in the removal ({})", names(&closed)), closed == [STATUS_SUCCESS]);
        ctx.check(
            format!(
                "card 0 channel {ch}: every queued frame completed or cancelled ({} of {} back, {} queued, {} clones)",
                trace.ks_completed, trace.ks_submitted, trace.ks_queued, trace.ks_live_clones
            ),
            trace.ks_completed == trace.ks_submitted && trace.ks_queued == 0 && trace.ks_live_clones == 0,
        );
    }
    let qi = status_of(&m, "card 0: IRP_MN_QUERY_INTERFACE after surprise removal");
    let shown: Vec<String> = qi.iter().map(|s| format!("{} {:#010X}", status_name(*s), s.cast_unsigned())).collect();
    ctx.check(format!("the interface is refused after the removal ({})", shown.join(", ")), qi.len() == 1 && !nt_success(qi[0]));
    let removed: Vec<_> = m.statuses().iter().filter(|s| s.what.starts_with("card 0") && s.what.contains("IRP_MN_REMOVE_DEVICE")).collect();
    let bus_removed = removed.iter().filter(|s| !s.what.contains("AVStream stack")).count();
    ctx.check(
        format!(
            "card 0's stacks removed ({})",
            removed.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        ),
        bus_removed == 1 && removed.iter().all(|s| s.status == STATUS_SUCCESS),
    );
    let report = m.report();
    let card1: Vec<_> = report.channels.iter().filter(|c| c.card == 1).collect();
    let lost: u64 = card1.iter().map(|c| c.frames_captured - c.frames_delivered).sum();
    let after: Vec<usize> = logs.iter().filter(|(card, _, _)| *card == 1).map(|(_, _, t)| delivered_after(t, pnp)).collect();
    ctx.recovered(
        format!("card 1 streamed on, on all {CHANNELS} channels: {after:?} frames after the removal, {lost} lost"),
        card1.len() == CHANNELS as usize && after.iter().all(|n| *n > 0) && lost == 0,
    );
    ctx.finish(Some(&m))
}
