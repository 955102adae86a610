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
