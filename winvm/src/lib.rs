//! `capdma-winvm`: a KVM x86-64 machine that runs Windows x64 kernel-mode
//! driver images, so that the very `.sys` files a user installs execute in
//! tests.
//!
//! The machine knows the x64 architecture, the PE format and the Win64
//! calling convention, and nothing of the NT kernel: an emulated kernel (in
//! `capdma-sim`) implements [`Kernel`] and serves every import. Layout of
//! the guest: [`layout`]; the crossings between guest and host: [`machine`];
//! what a crash looks like: [`report`].
//!
//! Images run at CPL3 with IOPL 3 (see [`cpu`] for why), in 4 KiB pages at
//! kernel-like addresses with nothing mapped in the lower half.

// The machine is for 64-bit Linux hosts (KVM on x86-64): guest addresses
// and sizes (u64) fit a host usize.
#![allow(clippy::cast_possible_truncation)]
const _: () = assert!(usize::BITS == 64, "capdma-winvm needs a 64-bit host");

pub mod cpu;
pub mod layout;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod paging;
pub mod preempt;
pub mod report;

pub use loader::pe::{LoadedImage, MissingImport};
pub use machine::{kvm_available, ExitCounts, Kernel, Machine};
pub use memory::{GuestMemory, RamRange};
pub use paging::{AddressSpace, Protection};
pub use preempt::Preemption;
pub use report::{BugcheckReport, Stop};
