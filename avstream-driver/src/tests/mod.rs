//! Unit tests of the AVStream core that need more than one module: the
//! capture pin against a fake bus table and a fake KS queue ([`fake`],
//! [`pin`]), and the pin on real threads ([`concurrency`]). Everything the
//! pin asks of the bus goes through a real `extern "system"` table.
mod concurrency;
pub(crate) mod fake;
mod parts;
mod pin;
pub(crate) mod table;

use capdma_interface::format::PixelFormat;

/// A YUY2 format helper.
pub fn yuy2(width: u32, height: u32) -> crate::format::VideoFormat {
    crate::format::VideoFormat::new(PixelFormat::Yuy2, width, height, 333_333).expect("valid test format")
}
