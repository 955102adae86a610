//! What the tests that run the built `.sys` images need: the images, the
//! Windows build's generated bindings, and `/dev/kvm`. Outside CI a missing
//! prerequisite skips the test with the reason printed; in CI (`CI` set) it
//! fails the test, so the image tests can never be skipped there.
#![allow(dead_code, reason = "each test file uses the part it needs")]

use std::path::PathBuf;

use capdma_sim::nt::Nt;
use capdma_winvm::{GuestMemory, Machine, RamRange, Stop};

/// Guest RAM of [`machine`], bytes.
const RAM: usize = 64 << 20;

/// The workspace root.
#[must_use]
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Skips (outside CI) or fails (in CI) for `why`; returns `None` to the caller.
pub fn unavailable<T>(why: &str) -> Option<T> {
    assert!(std::env::var_os("CI").is_none(), "CI must run this test, but: {why}");
    eprintln!("SKIPPED (not in CI): {why}");
    None
}

/// The release image `name` (`capdma_bus`) built by `cargo xtask windows`.
#[must_use]
pub fn image(name: &str) -> Option<PathBuf> {
    let path = workspace().join("target/windows/release").join(format!("{name}.sys"));
    if path.is_file() {
        Some(path)
    } else {
        unavailable(&format!("{} is missing: run `cargo xtask windows` first", path.display()))
    }
}

/// `/dev/kvm` usable.
#[must_use]
pub fn kvm() -> Option<()> {
    match capdma_winvm::kvm_available() {
        Ok(()) => Some(()),
        Err(why) => unavailable(&why),
    }
}

/// The file `out/<file>` a build script of `package` wrote in the Windows
/// build (`target/windows/cargo/.../build/<package>-<hash>/out/`; the
/// newest when several builds left one), read; skips or fails as
/// [`unavailable`] when there is none.
fn windows_build_output(package: &str, file: &str) -> Option<String> {
    let build = workspace().join("target/windows/cargo/x86_64-pc-windows-msvc/release/build");
    let prefix = format!("{package}-");
    let found = std::fs::read_dir(&build).ok().and_then(|dirs| {
        dirs.filter_map(Result::ok)
            .filter(|d| d.file_name().to_string_lossy().strip_prefix(&prefix).is_some_and(|hash| !hash.contains('-')))
            .map(|d| d.path().join("out").join(file))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p)
    });
    match found {
        Some(path) => Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))),
        None => unavailable(&format!("no {package} {file} under {}: run `cargo xtask windows` first", build.display())),
    }
}

/// The layout assertions bindgen wrote for wdk-sys in the Windows build.
#[must_use]
pub fn wdk_sys_types() -> Option<String> {
    windows_build_output("wdk-sys", "types.rs")
}

/// The KS bindings (ks.h, ksmedia.h) bindgen wrote for the AVStream crate
/// in the Windows build (`capdma-avstream`'s `out/ks_bindings.rs`), with
/// their layout assertions.
#[must_use]
pub fn ks_bindings() -> Option<String> {
    windows_build_output("capdma-avstream", "ks_bindings.rs")
}

/// A bare machine (64 MiB of anonymous guest RAM, 48 MiB of it the
/// machine's own frames), or `None` without KVM (outside CI).
#[must_use]
pub fn machine() -> Option<Machine> {
    kvm()?;
    // SAFETY: a fresh anonymous mapping, owned by the machine for the test.
    let base = unsafe {
        libc::mmap(core::ptr::null_mut(), RAM, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(base, libc::MAP_FAILED);
    // SAFETY: the mapping above, never unmapped.
    let mem = unsafe { GuestMemory::new(base.cast(), vec![RamRange { gpa: 0, len: RAM as u64 }], RamRange { gpa: 1 << 20, len: 48 << 20 }) };
    Some(Machine::new(mem).expect("machine"))
}

/// The host side of an import the emulated kernel does not have yet: the
/// call stops the run, naming its caller.
///
/// # Errors
/// Always: [`Stop::Host`].
pub fn refuse(_: &mut Nt, m: &mut Machine, _: u64) -> Result<u64, Stop> {
    let caller = m.caller().map(|c| m.describe(c)).unwrap_or_default();
    Err(Stop::Host(format!("an import this test does not provide was called from {caller}")))
}

/// The value bindgen asserted for `(structure, field)` (`field` empty: the
/// size) in `types`, the layout assertions with whitespace removed.
#[must_use]
pub fn asserted(types: &str, structure: &str, field: &str) -> Option<u64> {
    let needle =
        if field.is_empty() { format!("size_of::<{structure}>()-") } else { format!("offset_of!({structure},{field})-") };
    let at = types.find(&needle)? + needle.len();
    let digits: String = types[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// How bindgen declared `name` in `types` (whitespace removed): whether it
/// is a `union`, and its fields `(name, type)` in declaration order. `None`
/// when it declares no such struct or union.
#[must_use]
pub fn declared(types: &str, name: &str) -> Option<(bool, Vec<(String, String)>)> {
    let (union, at) = [(false, "struct"), (true, "union")].into_iter().find_map(|(union, kind)| {
        let needle = format!("pub{kind}{name}{{");
        Some((union, types.find(&needle)? + needle.len()))
    })?;
    let body = &types[at..at + types[at..].find('}')?];
    let fields = body
        .split(',')
        .filter_map(|f| f.strip_prefix("pub")?.split_once(':'))
        .map(|(field, ty)| (field.to_owned(), ty.to_owned()))
        .collect();
    Some((union, fields))
}
