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
mod rows;

use serde::Serialize;

use crate::board::BoardKind;
pub use rows::ROWS;

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
    /// Runs the row with a seed.
    pub run: fn(&RowSpec, u64) -> FaultRow,
}

impl RowSpec {
    /// Whether `--only filter` selects this row: the exact name, or the
    /// fault part before the `/` (`dma-error` runs both modes).
    #[must_use]
    pub fn matches(&self, filter: &str) -> bool {
        self.name == filter || self.name.split('/').next() == Some(filter)
    }
}

/// Runs the rows `only` selects (all with `None`) with `seed`, calling
/// `each` after every row. Returns the rows in matrix order.
pub fn run_matrix(only: Option<&str>, seed: u64, mut each: impl FnMut(&FaultRow)) -> Vec<FaultRow> {
    let mut out = Vec::new();
    for spec in ROWS.iter().filter(|s| only.is_none_or(|f| s.matches(f))) {
        let row = (spec.run)(spec, seed);
        each(&row);
        out.push(row);
    }
    out
}

/// Runs the row named `name` (exactly) with `seed`.
#[must_use]
pub fn run_row(name: &str, seed: u64) -> Option<FaultRow> {
    ROWS.iter().find(|s| s.name == name).map(|spec| (spec.run)(spec, seed))
}

/// The names of every row, in matrix order.
#[must_use]
pub fn row_names() -> Vec<&'static str> {
    ROWS.iter().map(|s| s.name).collect()
}
