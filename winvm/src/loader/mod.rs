//! Windows x64 images in the guest: the PE loader, their symbols, and the
//! stack walk from their unwind data.

pub mod pe;
pub mod symbols;
pub mod unwind;
