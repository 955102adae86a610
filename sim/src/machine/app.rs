//! The application capturing from each channel: it receives the frames KS
//! completes, verifies every byte against the source (channel 0 of card
//! 0's good frames go to the front end's frame sink), queues each buffer
//! again after the time it holds frames, and at the end closes its pin
//! (KS checked for buffers never completed and stream pointer clones never
//! deleted) and frees its buffers.
use std::rc::Rc;

use capdma_avstream::format::VideoFormat;
use capdma_avstream::state::KsState;
use capdma_interface::status::{status_name, NtStatus, STATUS_SUCCESS};

use super::build::Machine;
use super::events::Event;
use super::run::RunHooks;
use crate::board::FrameSource;
use crate::ks::CompletedFrame;
use crate::pattern::Pattern;
use crate::violations::ViolationKind;

impl Machine {
    pub(super) fn take_completed(&mut self, i: usize, now: u64, hooks: &mut RunHooks<'_>) {
        if self.channels[i].image_pin.is_some() {
            // The emulated KS hands them back with what the image wrote in their headers.
            for done in self.image_completed(i) {
                self.deliver(i, done, now, hooks);
            }
            return;
        }
        while let Some(done) = self.channels[i].ks.take_completed() {
            self.deliver(i, done, now, hooks);
        }
    }

    /// The application receives a completed frame: verify, then requeue it
    /// after the time it holds frames.
    pub(super) fn deliver(&mut self, i: usize, done: CompletedFrame, now: u64, hooks: &mut RunHooks<'_>) {
        let source = self.config.source.clone();
        let hold = self.config.app_hold_100ns;
        let end = self.run_end();
        let run = &mut self.channels[i];
        let Some(b) = usize::try_from(done.buffer_id).ok().filter(|&b| b < run.buffers.len()) else {
            self.violations.push(ViolationKind::Ks, format!("channel {i}: completed an unknown buffer {}", done.buffer_id));
            return;
        };
        if run.with_app[b] {
            self.violations.push(ViolationKind::Ks, format!("channel {i}: buffer {b} completed twice"));
        }
        run.with_app[b] = true;
        let buffer = &run.buffers[b];
        let good = !done.cancelled && done.completion.is_some_and(|c| c.data_used > 0);
        if good {
            let completion = done.completion.unwrap_or_default();
            run.report.frames_delivered += 1;
            // SAFETY: the buffer is a live allocation of `bytes` bytes; nothing
            // writes it while the application holds it (the frame left the queue).
            let bytes = unsafe { std::slice::from_raw_parts(buffer.va, buffer.bytes) };
            // Without a KS_FRAME_INFO (plain stream headers) there is no
            // picture number: the frame is the capture whose time the
            // driver wrote as its PresentationTime (none: it cannot verify).
            let by_time = (completion.picture_number < 0)
                .then(|| frame_captured_at(&run.log.captures, completion.presentation_time))
                .flatten();
            run.log.frames_by_time += u64::from(by_time.is_some());
            let frame_number = u32::try_from(completion.picture_number).ok().or(by_time).unwrap_or(u32::MAX);
            run.log.delivered.push((now, frame_number));
            let ok = completion.data_used == run.format.image_bytes
                && verify_frame(&run.pattern, source.as_ref(), &run.format, frame_number, bytes);
            if ok {
                run.report.frames_verified += 1;
                if run.card == 0 && run.index == 0 {
                    if let Some(sink) = hooks.frame_sink.as_mut() {
                        sink(&bytes[..run.format.image_bytes as usize], run.format.stride as usize);
                    }
                }
            } else {
                run.report.frames_corrupt += 1;
            }
        }
        if done.cancelled || (run.pin.is_none() && run.image_pin.is_none()) || run.app_hold {
            return;
        }
        let at = now.max(run.app_busy_until) + hold;
        if at >= end {
            // The application stops streaming at the end of the run.
            return;
        }
        run.app_busy_until = at;
        run.requeue_scheduled[b] = true;
        self.timeline.schedule(at, Event::AppRequeue { card: run.card, channel: run.index, buffer: b as u32 });
    }

    pub(super) fn requeue(&mut self, card: u32, channel: u32, buffer: u32) {
        let Some(i) = self.channel_position(card, channel) else { return };
        let b = buffer as usize;
        if b >= self.channels[i].buffers.len() {
            return;
        }
        let image_stopped = self.channels[i].image_pin.is_some() && self.image_pin_stopped(i);
        let run = &mut self.channels[i];
        run.requeue_scheduled[b] = false;
        let stopped = match (&run.pin, &run.image_pin) {
            (Some(p), _) => p.state() == KsState::Stop,
            (None, Some(_)) => image_stopped,
            (None, None) => true,
        };
        if !run.with_app[b] || run.app_hold || stopped {
            return;
        }
        run.with_app[b] = false;
        if run.image_pin.is_some() {
            self.image_submit(i, buffer);
            return;
        }
        run.ks.submit(u64::from(buffer), run.buffers[b].va, run.format.image_bytes);
    }

    /// Schedules a requeue (now) of every buffer the application holds.
    pub(super) fn requeue_all_held(&mut self, i: usize, now: u64) {
        let run = &mut self.channels[i];
        for b in 0..run.buffers.len() {
            if run.with_app[b] && !run.requeue_scheduled[b] {
                run.requeue_scheduled[b] = true;
                self.timeline.schedule(now, Event::AppRequeue { card: run.card, channel: run.index, buffer: b as u32 });
            }
        }
    }

    /// The application closes the pin of channel `i` (to `KSSTATE_STOP`,
    /// the queue flushed back to it), the pin goes and the application
    /// frees its buffers. The AVStream device keeps its interface reference
    /// until its own `IRP_MN_REMOVE_DEVICE`. Idempotent.
    pub(super) fn close_channel(&mut self, i: usize, now: u64, hooks: &mut RunHooks<'_>) {
        self.close_channel_as(i, now, hooks, true);
    }

    /// [`Self::close_channel`]; with `stop_first` false the application
    /// closes the image pin's handle without stopping it first
    /// ([`Self::image_close_keeping_completions`]).
    pub(super) fn close_channel_as(&mut self, i: usize, now: u64, hooks: &mut RunHooks<'_>, stop_first: bool) {
        let pin = self.channels[i].pin.take();
        let (card, ch) = (self.channels[i].card, self.channels[i].index);
        if let Some(pin) = pin.as_ref() {
            let status = pin.as_ref().set_state(KsState::Stop);
            if status != STATUS_SUCCESS {
                self.violations.push(ViolationKind::Ks, format!("card {card} channel {ch}: KSSTATE_STOP failed: {}", status_name(status)));
            }
            self.record_status(format!("card {card} channel {ch}: pin closed (KSSTATE_STOP)"), status);
        }
        let image_pin = self.channels[i].image_pin.is_some();
        if image_pin {
            // KS walks the pin to KSSTATE_STOP (its queue flushed back),
            // then the image's Close; the frames come back first.
            let status = self.image_close_keeping_completions(i, now, hooks, stop_first);
            let status = NtStatus::from_ne_bytes(status.to_ne_bytes());
            if status != STATUS_SUCCESS {
                self.violations.push(ViolationKind::Ks, format!("card {card} channel {ch}: closing the image's pin failed: {}", status_name(status)));
            }
            let what = if stop_first { "pin closed (KSSTATE_STOP, IRP_MJ_CLOSE)" } else { "pin closed (IRP_MJ_CLOSE)" };
            self.record_status(format!("card {card} channel {ch}: {what}"), status);
        } else {
            self.channels[i].ks.set_running(false);
            self.channels[i].ks.flush_on_stop();
        }
        self.take_completed(i, now, hooks);
        if let Some(pin) = pin.as_ref() {
            let stats = pin.stats();
            let run = &mut self.channels[i];
            run.log.pin_stats = Some(stats);
            run.report.bytes_copied = stats.bytes_copied;
            run.report.sg_elements = stats.sg_elements_programmed;
            run.report.driver_dropped = stats.frames_dropped;
        }
        drop(pin);
        let run = &mut self.channels[i];
        if image_pin {
            // The AVStream image's pin: what it programmed is the KS
            // mappings the emulated ks.sys generated for it.
            run.report.sg_elements = run.ks.stats().mappings;
        }
        if run.ks.live_clones() != 0 {
            self.violations.push(
                ViolationKind::Leak,
                format!("card {card} channel {ch}: {} stream pointer clones never deleted", run.ks.live_clones()),
            );
        }
        let ks = run.ks.stats();
        if ks.submitted != ks.completed {
            self.violations.push(
                ViolationKind::Leak,
                format!("card {card} channel {ch}: {} application buffer(s) never completed", ks.submitted - ks.completed),
            );
        }
        run.device.set_pin_open(false);
        for buffer in run.buffers.drain(..) {
            self.memory.free(buffer.id);
        }
        run.with_app.clear();
        run.requeue_scheduled.clear();
    }
}

/// The board's frame number of the capture made at `time` (100-ns units,
/// the clock the board stamps its records with), if one completed then (a
/// frame posted in parts: if its first part did).
fn frame_captured_at(captures: &[(u64, crate::board::CaptureOutcome)], time: i64) -> Option<u32> {
    let time = u64::try_from(time).ok()?;
    captures.iter().find_map(|(at, outcome)| match outcome {
        crate::board::CaptureOutcome::Completed { frame_number, .. }
        | crate::board::CaptureOutcome::PartCompleted { frame_number, .. }
            if *at == time =>
        {
            Some(*frame_number)
        }
        _ => None,
    })
}

/// Whether `bytes` (a frame at `format.stride`) is frame `frame_number` of
/// the channel's source, byte for byte on every line (padding not compared).
fn verify_frame(pattern: &Pattern, source: Option<&Rc<crate::y4m::Y4mVideo>>, format: &VideoFormat, frame_number: u32, bytes: &[u8]) -> bool {
    let source = source.map_or(FrameSource::Pattern, |v| FrameSource::Video(Rc::clone(v)));
    let line_bytes = format.line_bytes() as usize;
    let stride = format.stride as usize;
    let mut expected = vec![0u8; line_bytes];
    for line in 0..format.lines() {
        let at = line as usize * stride;
        let Some(actual) = bytes.get(at..at + line_bytes) else { return false };
        source.fill_line(pattern, frame_number, line, &mut expected);
        if actual != expected.as_slice() {
            return false;
        }
    }
    true
}
