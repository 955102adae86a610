//! `capdma-sim` as a user runs it: exit codes, JSON, Y4M and PNG files.
use std::path::Path;
use std::process::{Command, Output};

use capdma_interface::format::PixelFormat;
use capdma_sim::y4m::{read_y4m_file, Y4mWriter};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capdma-sim")).args(args).output().expect("capdma-sim runs")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// A clip of `frames` frames whose bytes are a function of (frame, offset).
fn write_clip(path: &Path, format: PixelFormat, width: u32, height: u32, frames: u32) {
    let line = format.line_bytes(width).unwrap() as usize;
    let bytes = line * format.lines(height).unwrap() as usize;
    let file = std::fs::File::create(path).unwrap();
    let mut w = Y4mWriter::new(std::io::BufWriter::new(file), format, width, height, (30, 1)).unwrap();
    for f in 0..frames {
        let frame: Vec<u8> = (0..bytes).map(|i| (i.wrapping_mul(31) ^ (f as usize * 97)).to_le_bytes()[0]).collect();
        w.write_frame(&frame, line).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn y4m_source_to_output_round_trip_is_bit_exact_in_both_modes() {
    let temp = temp_dir();
    let dir = temp.path();
    for (format, tag) in [(PixelFormat::Yuy2, "yuy2"), (PixelFormat::Nv12, "nv12")] {
        let input = dir.join(format!("in-{tag}.y4m"));
        write_clip(&input, format, 160, 120, 12);
        for board in ["legacy", "sg"] {
            let output = dir.join(format!("out-{tag}-{board}.y4m"));
            let out = sim(&[
                "stream", "--board", board, "--source", input.to_str().unwrap(), "--frames", "12", "--output",
                output.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{board}/{tag}: {}", String::from_utf8_lossy(&out.stderr));
            let a = std::fs::read(&input).unwrap();
            let b = std::fs::read(&output).unwrap();
            assert_eq!(a.len(), b.len(), "{board}/{tag}: sizes differ");
            assert!(a == b, "{board}/{tag}: the output is not the input bit for bit");
            let video = read_y4m_file(&output).unwrap();
            assert_eq!(video.frames.len(), 12);
        }
    }
}

#[test]
fn json_reports_every_field_per_channel_and_the_run() {
    let out = sim(&["stream", "--board", "sg", "--size", "320x240", "--frames", "10", "--channels", "2", "--json"]);
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
fn a_bad_argument_is_one_line_and_a_nonzero_exit() {
    for args in [
        &["stream", "--size", "12x"][..],
        &["stream", "--format", "rgb"],
        &["stream", "--frames", "-3"],
        &["stream", "--channels", "9"],
        &["stream", "--source", "/nonexistent/clip.y4m"],
        &["stream", "--alignment", "3000"],
        &["nonsense"],
    ] {
        let out = sim(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_format_the_driver_refuses_fails_with_its_status() {
    let out = sim(&["stream", "--size", "321x240", "--frames", "3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("STATUS_INVALID_PARAMETER"));
}

#[test]
fn snapshot_writes_a_png_of_the_last_frame() {
    let dir = temp_dir();
    let path = dir.path().join("shot.png");
    let out = sim(&["stream", "--size", "160x120", "--frames", "3", "--snapshot", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
