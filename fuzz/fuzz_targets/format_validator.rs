//! Fuzzes the KS data-format validator (`AVStrMiniPinSetDataFormat`'s
//! input, straight from user mode): it must never panic, and whatever it
//! accepts must be a sane format that round-trips.
#![no_main]

use capdma_avstream::format::{build_data_format, validate_data_format, MAX_STRIDE_BYTES};
use libfuzzer_sys::fuzz_target;
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = validate_data_format(data) {
        assert!(f.width >= 2 && f.height >= 2 && f.width % 2 == 0 && f.height % 2 == 0, "{f:?}");
        assert!(f.stride >= f.line_bytes() && f.stride <= MAX_STRIDE_BYTES, "{f:?}");
        assert_eq!(u64::from(f.image_bytes), u64::from(f.stride) * u64::from(f.lines()), "{f:?}");
        assert_eq!(validate_data_format(build_data_format(&f).as_bytes()), Ok(f));
    }
});
