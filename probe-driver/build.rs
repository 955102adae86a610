//! Build script of the probe driver: nothing for host builds; the WDM
//! driver link setup for Windows targets, shared with the product drivers
//! (`xtask/build-support/driver_build.rs`, `docs/windows-build.md`).

#[path = "../xtask/build-support/driver_build.rs"]
#[allow(dead_code)] // parts are used only on one kind of host
mod driver_build;

fn main() {
    driver_build::main();
}
