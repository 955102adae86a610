//! What a run of the simulated machine reports, and the machine putting
//! its account together ([`Machine::report`]).
use serde::Serialize;

use super::build::Machine;
use super::image::ImageReport;
use crate::nt::etw::{level_name, EtwRecord};

/// One field of a [`TraceEvent`]: its name and its value as a trace
/// consumer shows it (`tracefmt`-like: numbers in decimal, hex values and
/// NTSTATUS in hexadecimal, text quoted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceField {
    /// The field name (`Mode`, `Channel`, ...).
    pub name: String,
    /// The value, formatted.
    pub value: String,
}

/// One ETW event the bus image wrote, decoded from its `TraceLogging`
/// self-description ([`crate::nt::etw::decode_event`]), with its virtual
/// time. docs/tracing.md lists the events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceEvent {
    /// Virtual time of the write, 100-ns units since the machine started.
    pub time_100ns: u64,
    /// The provider's name (`Capdma.Bus`).
    pub provider: String,
    /// The event's name (`DeviceStart`, `EngineReset`, ...).
    pub event: String,
    /// The level's name (`critical`, `error`, `warning`, `info`, `verbose`).
    pub level: String,
    /// The event's keyword bits.
    pub keyword: u64,
    /// The fields in order.
    pub fields: Vec<TraceField>,
    /// The whole event on one line, as `--trace` prints it:
    /// `seconds.micros provider/event [level kw=0x..] Name=value ...`.
    pub line: String,
}

impl From<&EtwRecord> for TraceEvent {
    fn from(r: &EtwRecord) -> Self {
        Self {
            time_100ns: r.time,
            provider: r.provider.clone(),
            event: r.event.clone(),
            level: level_name(r.level).to_string(),
            keyword: r.keyword,
            fields: r.fields.iter().map(|f| TraceField { name: f.name.clone(), value: f.value.to_string() }).collect(),
            line: r.to_string(),
        }
    }
}

impl TraceEvent {
    /// The value of field `name`, formatted, if the event has one.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.name == name).map(|f| f.value.as_str())
    }
}

/// One channel's account of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChannelReport {
    /// The card (0 unless the machine has several).
    pub card: u32,
    /// The channel index on its card.
    pub channel: u32,
    /// `scatter-gather` or `common-buffer`.
    pub mode: String,
    /// Why the bus chose the mode.
    pub mode_reason: String,
    /// Frames the board captured.
    pub frames_captured: u64,
    /// Frames delivered to the application as good (`DataUsed` > 0, success).
    pub frames_delivered: u64,
    /// Delivered frames whose every byte matched the source.
    pub frames_verified: u64,
    /// Frames lost: dropped by the board (no buffer posted) or by the
    /// driver (no application buffer, damaged frame), or cancelled at stop.
    pub frames_dropped: u64,
    /// Delivered frames with a wrong byte (must be 0).
    pub frames_corrupt: u64,
    /// Bytes the CPU copied from common buffer to frames.
    pub bytes_copied: u64,
    /// S/G elements (KS mappings) programmed into the board (with the
    /// AVStream image: the mappings the emulated `ks.sys` generated for
    /// its pin, which it programs).
    pub sg_elements: u64,
    /// The board's own count of frames it had no buffer for.
    pub board_dropped: u64,
    /// Frames the AVStream core dropped (no frame buffer, damaged). Empty
    /// buffers handed back at stop are not frames and not counted.
    pub driver_dropped: u64,
    /// Channel resets (bad values from the board, errors, watchdog).
    pub channel_resets: u64,
}

/// The account of a whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// Per channel, in channel order.
    pub channels: Vec<ChannelReport>,
    /// Every rule broken during the run (IRQL, DMA, teardown, KS misuse), and leaks.
    pub violations: Vec<String>,
    /// Virtual time the run covered, seconds.
    pub sim_time_s: f64,
    /// Wall-clock time the run took, seconds.
    pub wall_s: f64,
    /// Interrupts a capdma ISR claimed.
    pub interrupts_claimed: u64,
    /// Interrupts of the (shared) line no capdma ISR claimed (another
    /// device's, or spurious): each ISR returned `FALSE`.
    pub interrupts_unclaimed: u64,
    /// Which bus driver ran: `cores` or `bus-image`.
    pub drivers: String,
    /// With `bus-image`: the image and what the emulated kernel did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageReport>,
    /// With `bus-image`: the image's ETW events in order (the machine's
    /// trace session runs from before `DriverEntry`); `None` with the cores,
    /// or when the front end does not ask for them (`capdma-sim stream`
    /// without `--trace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<TraceEvent>>,
    /// With an image: its debug output (`DbgPrint`) in order, each line
    /// stamped with virtual time (seconds), the IRQL and the image; `None`
    /// with the cores, or when the front end does not ask for it
    /// (`capdma-sim stream` without `--verbose`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_output: Option<Vec<String>>,
}

impl RunReport {
    /// The run passed: no violation, every channel delivered frames, every
    /// delivered frame verified, nothing corrupt.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && !self.channels.is_empty()
            && self.channels.iter().all(|c| {
                c.frames_delivered > 0 && c.frames_corrupt == 0 && c.frames_verified == c.frames_delivered
            })
    }

    /// A short human summary.
    #[must_use]
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for c in &self.channels {
            if c.card == 0 {
                let _ = writeln!(out, "channel {}: mode {} ({})", c.channel, c.mode, c.mode_reason);
            } else {
                let _ = writeln!(out, "card {} channel {}: mode {} ({})", c.card, c.channel, c.mode, c.mode_reason);
            }
            let _ = writeln!(
                out,
                "  frames: {} captured, {} delivered, {} verified, {} dropped ({} by board, {} by driver), {} corrupt",
                c.frames_captured, c.frames_delivered, c.frames_verified, c.frames_dropped, c.board_dropped, c.driver_dropped, c.frames_corrupt
            );
            if self.drivers == "images" {
                // The pin's counters live inside the AVStream image.
                let _ = writeln!(out, "  bytes copied, S/G elements, channel resets: counted inside the AVStream image (see --trace)");
            } else {
                let _ = writeln!(
                    out,
                    "  bytes copied: {}, S/G elements: {}, channel resets: {}",
                    c.bytes_copied, c.sg_elements, c.channel_resets
                );
            }
        }
        if self.violations.is_empty() {
            let _ = writeln!(out, "violations: none");
        } else {
            let _ = writeln!(out, "violations: {}", self.violations.len());
            for v in &self.violations {
                let _ = writeln!(out, "  - {v}");
            }
        }
        if let Some(i) = &self.image {
            let _ = writeln!(out, "drivers: {} ({}, sha256 {})", self.drivers, i.path, i.sha256);
            if let (Some(path), Some(sha256)) = (&i.avstream_path, &i.avstream_sha256) {
                let _ = writeln!(out, "  and {path}, sha256 {sha256}");
            }
            if let Some(ks) = &i.ks {
                let _ = writeln!(
                    out,
                    "  emulated ks.sys: {} frames submitted, {} Process calls ({} inside KsPinAttemptProcessing), {} attempts, {} clones",
                    ks.frames_submitted, ks.process_calls, ks.process_calls_synchronous, ks.attempts, ks.clones
                );
                if ks.clock_interfaces > 0 {
                    let _ = writeln!(
                        out,
                        "  reference clock: {} interface(s) handed out, {} clock reads",
                        ks.clock_interfaces, ks.clock_reads
                    );
                }
            }
            let _ = writeln!(
                out,
                "  emulated kernel: {} DDI calls, {} Verifier checks, {} findings, {} bugchecks, {} CR8 traps{}",
                i.ddi_calls,
                i.verifier_checks,
                i.findings,
                i.bugchecks,
                i.cr8_traps,
                if i.preemptions > 0 { format!(", {} preemptions", i.preemptions) } else { String::new() }
            );
            let _ = writeln!(
                out,
                "  VM exits: {} ({:.1} per frame streaming, {:.1} with start and teardown; {} MMIO), ISR calls {}, DPC runs {}",
                i.vm_exits, i.vm_exits_per_frame_streaming, i.vm_exits_per_frame, i.mmio, i.isr_calls, i.dpc_runs
            );
        } else {
            let _ = writeln!(out, "drivers: {}", self.drivers);
        }
        let _ = writeln!(out, "time: {:.3} s simulated in {:.3} s wall", self.sim_time_s, self.wall_s);
        let _ = write!(out, "result: {}", if self.passed() { "PASS" } else { "FAIL" });
        out
    }
}

impl Machine {
    /// The account of the run so far.
    #[must_use]
    pub fn report(&self) -> RunReport {
        let channels = self
            .channels
            .iter()
            .map(|run| {
                let mut r = run.report.clone();
                r.frames_dropped = r.frames_captured.saturating_sub(r.frames_delivered);
                r
            })
            .collect::<Vec<ChannelReport>>();
        let image = self.image_report();
        RunReport {
            channels,
            violations: self.violations.list(),
            #[allow(clippy::cast_precision_loss, reason = "virtual time stays far below 2^52 × 100 ns")]
            sim_time_s: self.timeline.now() as f64 / 1e7,
            wall_s: self.started.elapsed().as_secs_f64(),
            interrupts_claimed: image.as_ref().map_or_else(
                || self.cards.iter().map(|c| c.isr_claimed).sum(),
                |i| self.image.as_ref().map_or(0, |w| i.isr_calls.saturating_sub(w.sys.nt.ke.stats.unclaimed)),
            ),
            interrupts_unclaimed: self.image.as_ref().map_or(self.interrupts_unclaimed, |w| w.sys.nt.ke.stats.unclaimed),
            drivers: self.config.drivers.name().to_string(),
            trace: image.as_ref().map(|_| self.image_trace().iter().map(TraceEvent::from).collect()),
            debug_output: self.image.as_ref().map(|w| {
                w.sys
                    .nt
                    .trace
                    .iter()
                    .map(|l| {
                        #[allow(clippy::cast_precision_loss, reason = "virtual time stays far below 2^52 × 100 ns")]
                        let seconds = l.time as f64 / 1e7;
                        format!("{seconds:.7} IRQL {} {}: {}", l.irql, l.image, l.text)
                    })
                    .collect()
            }),
            image,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_frame_fails_the_run() {
        let mut report = RunReport {
            channels: vec![ChannelReport { frames_delivered: 3, frames_verified: 3, ..Default::default() }],
            ..Default::default()
        };
        assert!(report.passed());
        report.channels[0].frames_corrupt = 1;
        report.channels[0].frames_verified = 2;
        assert!(!report.passed());
    }

    #[test]
    fn a_channel_that_delivered_nothing_fails_the_run() {
        let report = RunReport {
            channels: vec![ChannelReport { frames_captured: 10, frames_dropped: 10, ..Default::default() }],
            ..Default::default()
        };
        assert!(!report.passed());
    }

    #[test]
    fn a_violation_fails_the_run() {
        let report = RunReport {
            channels: vec![ChannelReport { frames_delivered: 3, frames_verified: 3, ..Default::default() }],
            violations: vec!["dma: write to unmapped page".into()],
            ..Default::default()
        };
        assert!(!report.passed());
        assert!(report.summary().contains("FAIL"));
    }
}
