//! `capdma-sim` as a user runs it: exit statuses, JSON, help, progress on a
//! terminal, Y4M and PNG files.
mod support;

use std::fs::File;
use std::io::Read as _;
use std::os::fd::{FromRawFd as _, OwnedFd};

use std::process::{Command, Stdio};

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

#[test]
fn y4m_source_to_output_round_trip_is_bit_exact_in_both_modes() {
    support::y4m_round_trip(&[], |_, _| {});
}

#[test]
fn json_reports_every_field_per_channel_and_the_run() {
    let out = support::sim(&["stream", "--board", "sg", "--size", "320x240", "--frames", "10", "--channels", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    let channels = v["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 2);
    for c in channels {
        for key in ["mode", "frames_delivered", "frames_verified", "frames_dropped", "frames_corrupt", "bytes_copied", "sg_elements"] {
            assert!(c.get(key).is_some(), "missing {key}");
        }
        assert_eq!(c["mode"], "scatter-gather");
        assert_eq!(c["frames_verified"], 10);
    }
    assert!(v["violations"].as_array().unwrap().is_empty());
    assert!(v["sim_time_s"].as_f64().unwrap() > 0.0);
    assert!(v["wall_s"].as_f64().is_some());
}

#[test]
fn a_usage_error_is_one_line_and_exit_status_2() {
    for args in [
        &["stream", "--size", "12x"][..],
        &["stream", "--size", "4097x100"],
        &["stream", "--format", "rgb"],
        &["stream", "--frames", "-3"],
        &["stream", "--frames", "0"],
        &["stream", "--channels", "9"],
        &["stream", "--channels", "0"],
        &["stream", "--fps", "1001"],
        &["stream", "--app-buffers", "65"],
        &["stream", "--app-hold-ms", "10000.5"],
        &["stream", "--app-hold-ms", "NaN"],
        &["stream", "--alignment", "3000"],
        &["stream", "--max-mapping-bytes", "0"],
        &["stream", "--frames"],
        &["faults", "--only", "no-such-row"],
        &["faults", "--seed", "x"],
        &["bench", "--samples", "0"],
        &["nonsense"],
        &[],
    ] {
        let out = support::sim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.starts_with("capdma-sim: ") && !err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}

#[test]
fn a_run_that_fails_exits_1() {
    // The driver refuses the format (odd width): the run fails with its status.
    let out = support::sim(&["stream", "--size", "321x240", "--frames", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STATUS_INVALID_PARAMETER"));
    // A clip that cannot be read.
    let out = support::sim(&["stream", "--source", "/nonexistent/clip.y4m"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1);
}

#[test]
fn values_in_range_are_accepted() {
    let out = support::sim(&["stream", "--size", "64x32", "--frames", "2", "--channels", "8", "--fps", "120", "--alignment", "4096"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // The machine takes up to 1000 fps; the driver refuses more than 120:
    // a failed run, not a usage error.
    let out = support::sim(&["stream", "--size", "64x32", "--frames", "2", "--fps", "1000"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The JSON object `args` prints, checked for the common head.
fn json_of(args: &[&str], status: i32, result: &str) -> serde_json::Value {
    let out = support::sim(args);
    assert_eq!(out.status.code(), Some(status), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(v["schema_version"], 1, "{args:?}");
    assert_eq!(v["result"], result, "{args:?}");
    assert_eq!(v["command"], args[0], "{args:?}");
    v
}

#[test]
fn every_json_object_has_result_and_schema_version() {
    let stream = json_of(&["stream", "--size", "160x120", "--frames", "3", "--json"], 0, "pass");
    assert!(stream["channels"].is_array() && stream.get("error").is_none());
    let refused = json_of(&["stream", "--size", "321x240", "--frames", "3", "--json"], 1, "fail");
    assert!(refused["error"].as_str().unwrap().contains("STATUS_INVALID_PARAMETER"));
    let faults = json_of(&["faults", "--only", "dma-error", "--seed", "3", "--json"], 0, "pass");
    assert_eq!(faults["seed"], 3);
    assert_eq!(faults["rows_total"], 2);
    assert_eq!(faults["rows_failed"], 0);
    assert_eq!(faults["rows"].as_array().unwrap().len(), 2);
    let bench = json_of(&["bench", "--quick", "--samples", "1", "--json"], 0, "pass");
    assert_eq!(bench["checks_passed"], true);
}

#[test]
fn help_shows_the_description_and_the_exit_statuses() {
    for args in [&["--help"][..], &["stream", "--help"], &["faults", "--help"], &["bench", "--help"]] {
        let out = support::sim(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Exit status:"), "{args:?}: {text}");
        for status in ["  0  ", "  1  ", "  2  usage error"] {
            assert!(text.contains(status), "{args:?}: no `{status}` in {text}");
        }
    }
    let top = String::from_utf8_lossy(&support::sim(&["--help"]).stdout).into_owned();
    assert!(top.contains("simulated machine") && top.contains("capture card"), "{top}");
}

/// Runs `capdma-sim args` with stderr on a pseudo-terminal (stdout a
/// pipe); returns the exit status and what reached the terminal.
fn on_a_terminal(args: &[&str]) -> (Option<i32>, String) {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize { ws_row: 40, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: out-pointers to two live c_ints; no name buffer; default
    // termios; a valid winsize.
    let made = unsafe { libc::openpty(&raw mut master, &raw mut slave, std::ptr::null_mut(), std::ptr::null(), &raw const size) };
    assert_eq!(made, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned a new descriptor that nothing else owns.
    let mut master = unsafe { File::from_raw_fd(master) };
    // SAFETY: likewise.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_capdma-sim"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("capdma-sim runs");
    // The parent's copy of the slave went with the Command's Stdio; reading
    // the master ends (EIO) once the child has closed the terminal.
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = master.read(&mut buffer) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buffer[..n]);
    }
    let status = child.wait().expect("capdma-sim ends");
    (status.code(), String::from_utf8_lossy(&seen).into_owned())
}

#[test]
fn faults_and_stream_show_progress_only_on_a_terminal() {
    let (status, terminal) = on_a_terminal(&["faults", "--only", "dma-error"]);
    assert_eq!(status, Some(0));
    assert!(terminal.contains("rows"), "no progress on the terminal: {terminal:?}");
    let (status, terminal) = on_a_terminal(&["stream", "--size", "160x120", "--frames", "30"]);
    assert_eq!(status, Some(0));
    assert!(terminal.contains("frames"), "no progress on the terminal: {terminal:?}");
    // Not a terminal: nothing on stderr.
    for args in [&["faults", "--only", "dma-error"][..], &["stream", "--size", "160x120", "--frames", "30"]] {
        let out = support::sim(args);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bench_shows_progress_only_on_a_terminal() {
    let (status, terminal) = on_a_terminal(&["bench", "--quick", "--samples", "1"]);
    assert_eq!(status, Some(0));
    assert!(terminal.contains("timing the copy methods"), "no progress on the terminal: {terminal:?}");
    let out = support::sim(&["bench", "--quick", "--samples", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn snapshot_writes_a_png_of_the_last_frame() {
    let dir = temp_dir();
    let path = dir.path().join("shot.png");
    let out = support::sim(&["stream", "--size", "160x120", "--frames", "3", "--snapshot", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
