//! The subcommands of `capdma-sim`, and what they share: the exit statuses,
//! the `--json` envelope, progress on a terminal, printing.
//!
//! Each subcommand's arguments are one `clap::Args` struct in its file
//! (`stream::StreamArgs`, ...): a new flag is one more field there.
use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub mod bench;
pub mod drivers;
pub mod faults;
pub mod stream;

/// Exit status of a run that failed (a check, a verification, a driver
/// refusal, a file that could not be read or written).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a usage error (clap's own for a bad argument).
pub const EXIT_USAGE: u8 = 2;

/// The exit statuses, as `--help` states them.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  the run passed: stream: every channel delivered frames, every delivered frame
     verified, no rule broken; faults: every row holds; bench: every byte check passed
  1  the run failed, or could not be made (a driver refused, a file could not be
     read or written)
  2  usage error: an unknown, missing, malformed or out-of-range argument";

/// The `schema_version` of every `--json` object. Raise it when a field
/// changes meaning or goes away (adding one does not).
pub const SCHEMA_VERSION: u32 = 1;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and passed.
    Pass,
    /// It ran and failed; the report said so.
    Fail,
    /// It could not run, or stopped: the reason, one line.
    Error(String),
    /// The arguments make no sense together (what clap cannot see alone).
    Usage(String),
}

impl Outcome {
    /// `Pass` or `Fail`.
    #[must_use]
    pub fn from_passed(passed: bool) -> Self {
        if passed {
            Self::Pass
        } else {
            Self::Fail
        }
    }

    /// Prints the reason, if any, on stderr and gives the exit status.
    #[must_use]
    pub fn exit(self) -> ExitCode {
        match self {
            Self::Pass => ExitCode::SUCCESS,
            Self::Fail => ExitCode::from(EXIT_FAILED),
            Self::Error(reason) => {
                eprintln!("capdma-sim: {reason}");
                ExitCode::from(EXIT_FAILED)
            }
            Self::Usage(reason) => {
                eprintln!("capdma-sim: {reason} (see --help)");
                ExitCode::from(EXIT_USAGE)
            }
        }
    }
}

/// Every `--json` object: the command's own fields with a common head.
#[derive(Serialize)]
pub struct JsonReport<'a, T: Serialize> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `stream`, `faults` or `bench`.
    pub command: &'static str,
    /// `pass` or `fail`, as the exit status says.
    pub result: &'static str,
    /// Why the run stopped early, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// The command's report.
    #[serde(flatten)]
    pub body: &'a T,
}

/// Prints `body` as one pretty JSON object with the common head.
///
/// # Errors
/// When `body` does not serialise as an object.
pub fn print_json<T: Serialize>(command: &'static str, passed: bool, error: Option<&str>, body: &T) -> Result<(), String> {
    let report = JsonReport {
        schema_version: SCHEMA_VERSION,
        command,
        result: if passed { "pass" } else { "fail" },
        error,
        body,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| format!("cannot write the JSON report: {e}"))?;
    print_line(&text);
    Ok(())
}

/// Prints `text` and a newline; a closed pipe (`| head`) is not an error.
pub fn print_line(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// A progress bar of `len` steps on stderr when stderr is a terminal, a
/// hidden one (that draws nothing) when it is not: progress never lands in
/// a log or a pipe. `template` is indicatif's.
#[must_use]
pub fn progress(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}
