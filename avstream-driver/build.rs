//! Build script of a capdma driver package: nothing for host builds; the
//! WDM driver link setup for Windows targets. The logic is shared by both
//! driver packages, see `xtask/build-support/driver_build.rs` and
//! `docs/windows-build.md`.

#[path = "../xtask/build-support/driver_build.rs"]
#[allow(dead_code)] // parts are used only on one kind of host
mod driver_build;

fn main() {
    driver_build::main();
}
