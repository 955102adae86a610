//! The fault matrix: every fault a capture card and a layered driver stack
//! meet, injected into the simulated machine, each with an expectation
//! that can fail. A row runs a short stream (small frames, virtual time),
//! injects its fault at a frame or time chosen from the seed, tears the
//! machine down and judges:
//!
//! * **delivered / verified**: frames the application got as good, and
//!   those whose every byte matched the source (a corrupt frame delivered
//!   as good fails every row);
//! * **recovered**: the row's own criterion, always "the stream goes on
//!   after the fault" in some measurable form (frames delivered after it,
//!   the other card streaming on, a second start succeeding);
//! * **violations** (IRQL, DMA, KS, Plug and Play rules) and **leaks**
//!   (memory, common buffers, adapters, interface references, clones,
//!   application buffers never completed): must be none, except the ones a
//!   row provokes on purpose with a deliberately buggy driver, which must
//!   be reported (`FaultRow::expected_violations`);
//! * the NTSTATUS values the row expects to see (refused requests).
//!
//! Every row is replayable by name and seed:
//! `capdma-sim faults --only NAME --seed N`.
//!
//! With `--drivers bus-image` ([`Drivers::BusImage`]) the rows whose subject
//! is the bus driver run through the real `capdma_bus.sys` in the emulated
//! kernel, judged the same way plus zero Driver Verifier findings and zero
//! bugchecks (both are violations of the run); what the image counted
//! (resets, refused records) is read from its ETW trace. The other rows are
//! listed as not applicable with the reason ([`not_with_image`]).
//!
//! With `--drivers images` both real images run, `capdma_avstream.sys` over
//! `capdma_bus.sys`, with the emulated `ks.sys`; the rows named `…/images`
//! are about that layer (the emulated kernel's low resources simulation,
//! `_KsEdit`, stream headers, closes and removals through the emulated KS
//! and PnP manager). Each driver's rows that cannot apply say why
//! ([`not_applicable`]).
mod rows;

use serde::Serialize;

use crate::board::BoardKind;
use crate::machine::Drivers;
pub use rows::{not_applicable, not_with_image, NOT_WITH_CORES, NOT_WITH_IMAGE, NOT_WITH_IMAGES, ROWS};

/// One named expectation of a row and whether it held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is expected, with the values seen.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
}

/// The outcome of one row.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRow {
    /// The row's name (`fault/mode`), what `--only` takes.
    pub name: String,
    /// The drivers it ran with (`cores`, `bus-image`).
    pub drivers: String,
    /// Why the row does not apply to these drivers (it did not run, and
    /// counts neither as holding nor as failing); `None`: it ran.
    pub not_applicable: Option<String>,
    /// The seed it ran with.
    pub seed: u64,
    /// What the row injects and expects, in one line.
    pub expectation: String,
    /// Frames the boards captured.
    pub frames_captured: u64,
    /// Frames delivered to the application as good.
    pub frames_delivered: u64,
    /// Delivered frames whose every byte matched the source.
    pub frames_verified: u64,
    /// Delivered frames with a wrong byte.
    pub frames_corrupt: u64,
    /// The row's recovery criterion held.
    pub recovered: bool,
    /// Rules broken (not counting leaks).
    pub violations: Vec<String>,
    /// Resources left at the end.
    pub leaks: Vec<String>,
    /// Violations and leaks the row provokes on purpose (a deliberately
    /// buggy child driver) and requires to be reported; not counted in
    /// `violations` or `leaks`.
    pub expected_violations: Vec<String>,
    /// NTSTATUS values the row's requests saw, in order.
    pub statuses: Vec<String>,
    /// Every expectation, in order.
    pub checks: Vec<Check>,
    /// Every check held.
    pub holds: bool,
    /// Wall-clock seconds the row took.
    pub wall_s: f64,
}

impl FaultRow {
    /// The checks that failed, one per line.
    #[must_use]
    pub fn failures(&self) -> Vec<String> {
        self.checks.iter().filter(|c| !c.ok).map(|c| c.what.clone()).collect()
    }
}

/// A row of the matrix: its name, what it expects, how to run it.
pub struct RowSpec {
    /// `fault/mode` (`mode` is `sg`, `cb` or what the row is about).
    pub name: &'static str,
    /// The board the row runs on.
    pub board: BoardKind,
    /// One line: the fault and what must happen.
    pub expectation: &'static str,
    /// Runs the row with the drivers and a seed.
    pub run: fn(&RowSpec, &Drivers, u64) -> FaultRow,
}

impl RowSpec {
    /// Whether `--only filter` selects this row: the exact name, or the
    /// fault part before the `/` (`dma-error` runs both modes).
    #[must_use]
    pub fn matches(&self, filter: &str) -> bool {
        self.name == filter || self.name.split('/').next() == Some(filter)
    }
}

/// Runs the rows `only` selects (all with `None`) with `drivers` and
/// `seed`, calling `each` after every row. Returns the rows in matrix order;
/// a row that does not apply to the drivers is returned unrun, with the
/// reason ([`FaultRow::not_applicable`]).
pub fn run_matrix(only: Option<&str>, drivers: &Drivers, seed: u64, mut each: impl FnMut(&FaultRow)) -> Vec<FaultRow> {
    let mut out = Vec::new();
    for spec in ROWS.iter().filter(|s| only.is_none_or(|f| s.matches(f))) {
        let row = run_spec(spec, drivers, seed);
        each(&row);
        out.push(row);
    }
    out
}

/// Runs one row, or returns it unrun when it does not apply to `drivers`.
fn run_spec(spec: &RowSpec, drivers: &Drivers, seed: u64) -> FaultRow {
    if let Some(why) = not_applicable(spec.name, drivers) {
        return FaultRow {
            name: spec.name.to_string(),
            drivers: drivers.name().to_string(),
            not_applicable: Some(why.to_string()),
            seed,
            expectation: spec.expectation.to_string(),
            frames_captured: 0,
            frames_delivered: 0,
            frames_verified: 0,
            frames_corrupt: 0,
            recovered: false,
            violations: Vec::new(),
            leaks: Vec::new(),
            expected_violations: Vec::new(),
            statuses: Vec::new(),
            checks: Vec::new(),
            holds: true,
            wall_s: 0.0,
        };
    }
    (spec.run)(spec, drivers, seed)
}

/// Runs the row named `name` (exactly) with `drivers` and `seed`.
#[must_use]
pub fn run_row(name: &str, drivers: &Drivers, seed: u64) -> Option<FaultRow> {
    ROWS.iter().find(|s| s.name == name).map(|spec| run_spec(spec, drivers, seed))
}

/// The names of every row, in matrix order.
#[must_use]
pub fn row_names() -> Vec<&'static str> {
    ROWS.iter().map(|s| s.name).collect()
}
