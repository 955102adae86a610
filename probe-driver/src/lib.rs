//! `capdma_probe.sys`: a **test-only** WDM driver image that commits one
//! Driver Verifier-class mistake per request.
//!
//! The emulated Windows kernel of this project checks what Driver Verifier
//! checks while it runs the product images; a run that reports nothing
//! proves something only if each check is shown to fire. This image is that
//! proof: after its `DriverEntry` and `AddDevice`, a host harness calls one
//! of its exported `Probe*` functions by name (`extern "system"`, the
//! objects it needs as arguments, an `NTSTATUS` back), the function breaks
//! one rule, and the test expects the kernel's report to name that rule.
//! [`catalog::PROBES`] lists every export: its arguments, the rule, the bug
//! check Windows answers the mistake with, and whether it shows during the
//! call, at the FDO's removal or at unload.
//!
//! **Never package, sign for release, or install this driver**: on a real
//! machine every probe is a bug check (or, for the remove-lock one, a hang).
//! It has no INF, `cargo xtask package` must not package it
//! (`TEST_ONLY_PACKAGES` in `xtask/src/cross_build.rs`), and it is built by
//! `cargo xtask windows` only so that the emulated kernel can load it.
//!
//! The crate is `no_std` without `alloc`; its Windows glue (`src/wdm/`,
//! Windows targets only) follows the product drivers' conventions: wdk-sys
//! bindings, wdk-panic as the panic handler (no reachable panic), the IRQL
//! routines imported from ntoskrnl, a `// SAFETY:` comment on every `unsafe`
//! block (the deliberate mistakes say so in theirs). On the host only the
//! catalog is compiled.
#![cfg_attr(not(test), no_std)]

pub mod catalog;
#[cfg(target_os = "windows")]
mod wdm;

pub use catalog::{Argument, BugCheck, Detected, Probe, Rule, PROBES};
