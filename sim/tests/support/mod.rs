//! What the tests that run the emulated kernel or the built images need:
//! `/dev/kvm` and the images. Outside CI a missing prerequisite skips the
//! test with the reason printed; in CI (`CI` set) it fails the test, so
//! these tests can never be skipped there. Also the helpers more than one
//! test file shares (a Y4M clip to capture, a fault row's failure message).
#![allow(dead_code, reason = "each test file uses the part it needs")]

use std::path::PathBuf;

use capdma_sim::faults::FaultRow;
use capdma_sim::machine;
use capdma_sim::nt::system::System;

/// Skips (outside CI) or fails (in CI) for `why`.
pub fn unavailable<T>(why: &str) -> Option<T> {
    assert!(std::env::var_os("CI").is_none(), "CI must run this test, but: {why}");
    eprintln!("skipped: {why}");
    None
}

/// `/dev/kvm` usable.
pub fn kvm() -> Option<()> {
    match capdma_winvm::kvm_available() {
        Ok(()) => Some(()),
        Err(why) => unavailable(&why),
    }
}

/// A booted system (the VM over a fresh simulated memory, a kernel at boot).
pub fn system() -> Option<System> {
    kvm()?;
    Some(System::boot().expect("boot"))
}

/// The release image `name` (`capdma_bus`, `capdma_probe`) that `cargo
/// xtask windows` builds, next to the bus image's default path, with KVM.
pub fn image(name: &str) -> Option<PathBuf> {
    kvm()?;
    let path = machine::image::default_image_path().with_file_name(format!("{name}.sys"));
    if path.exists() {
        Some(path)
    } else {
        unavailable(&format!("{} not built (cargo xtask windows)", path.display()))
    }
}

/// Writes a Y4M clip of `frames` frames at `path` whose bytes are a
/// function of (frame, offset), so a frame swapped, repeated or shifted no
/// longer matches.
pub fn write_clip(path: &std::path::Path, format: capdma_interface::format::PixelFormat, width: u32, height: u32, frames: u32) {
    let line = format.line_bytes(width).unwrap() as usize;
    let bytes = line * format.lines(height).unwrap() as usize;
    let file = std::fs::File::create(path).unwrap();
    let mut w = capdma_sim::y4m::Y4mWriter::new(std::io::BufWriter::new(file), format, width, height, (30, 1)).unwrap();
    for f in 0..frames {
        let frame: Vec<u8> = (0..bytes).map(|i| (i.wrapping_mul(31) ^ (f as usize * 97)).to_le_bytes()[0]).collect();
        w.write_frame(&frame, line).unwrap();
    }
    w.finish().unwrap();
}

/// A failed fault row for an assertion message: what failed, the
/// violations, leaks and statuses, and the command line that replays it
/// with the same drivers and seed.
pub fn describe(row: &FaultRow) -> String {
    format!(
        "{}: failed {:#?}\nviolations: {:#?}\nleaks: {:#?}\nstatuses: {:#?}\nreplay: capdma-sim faults --drivers {} --only {} --seed {}",
        row.name,
        row.failures(),
        row.violations,
        row.leaks,
        row.statuses,
        row.drivers,
        row.name,
        row.seed
    )
}

/// Asserts that a fault row which ran through images held in full: its
/// checks held, the driver recovered, no violations or leaks, no corrupt
/// frame, every delivered frame verified (and at least one delivered), and
/// the emulated kernel's Verifier/bugcheck check was made and held.
pub fn assert_row_held(row: &FaultRow) {
    assert!(row.holds, "{}", describe(row));
    assert!(row.recovered, "{}", describe(row));
    assert!(row.violations.is_empty() && row.leaks.is_empty(), "{}", describe(row));
    assert_eq!(row.frames_corrupt, 0, "{}", row.name);
    assert!(row.frames_delivered > 0 && row.frames_verified == row.frames_delivered, "{}", describe(row));
    let kernel = row.checks.iter().find(|c| c.what.starts_with("the emulated kernel:")).map(|c| c.ok);
    assert_eq!(kernel, Some(true), "{}: the Verifier/bugcheck check was made and held", row.name);
}

/// Runs the `capdma-sim` binary with `args`; its exit status and output.
pub fn sim(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_capdma-sim")).args(args).output().expect("capdma-sim runs")
}

/// The Y4M round trip: a 12-frame 160x120 clip in YUY2 and in NV12 (from
/// [`write_clip`]) is streamed by `capdma-sim stream --source … --output …`
/// on the legacy and the S/G board, with `extra` arguments added; `check`
/// sees each run's output first (with `"board/format"` for its messages),
/// then the output file must be the input bit for bit and hold 12 frames.
pub fn y4m_round_trip(extra: &[&str], check: impl Fn(&std::process::Output, &str)) {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path();
    for (format, tag) in [(capdma_interface::format::PixelFormat::Yuy2, "yuy2"), (capdma_interface::format::PixelFormat::Nv12, "nv12")] {
        let input = dir.join(format!("in-{tag}.y4m"));
        write_clip(&input, format, 160, 120, 12);
        for board in ["legacy", "sg"] {
            let output = dir.join(format!("out-{tag}-{board}.y4m"));
            let args = [&["stream", "--board", board, "--source", input.to_str().unwrap(), "--frames", "12", "--output", output.to_str().unwrap()], extra].concat();
            let out = sim(&args);
            let what = format!("{board}/{tag}");
            assert!(out.status.success(), "{what}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            check(&out, &what);
            let a = std::fs::read(&input).unwrap();
            let b = std::fs::read(&output).unwrap();
            assert_eq!(a.len(), b.len(), "{what}: sizes differ");
            assert!(a == b, "{what}: the output is not the input bit for bit");
            assert_eq!(capdma_sim::y4m::read_y4m_file(&output).unwrap().frames.len(), 12, "{what}");
        }
    }
}
