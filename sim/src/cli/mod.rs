//! The subcommands of `capdma-sim`.
pub mod bench;
pub mod faults;
pub mod stream;
