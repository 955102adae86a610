//! Reading symbol addresses out of a linker map (`/MAP`), the fallback the
//! PE check uses to identify the entry point when the image does not export
//! its entry symbol.
//!
//! Both `link.exe` and `lld-link` write "Publics by Value" lines as
//! `SSSS:OOOOOOOO  <name>  <Rva+Base as 16 hex digits>  [f] <object>`.

/// Every `(symbol, virtual address)` in the "Publics by Value" lines of a
/// linker map. Lines of any other shape are ignored.
pub fn publics(map_text: &str) -> Vec<(String, u64)> {
    map_text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let section_offset = fields.next()?;
            let name = fields.next()?;
            let address = fields.next()?;
            let (section, offset) = section_offset.split_once(':')?;
            let hex =
                |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
            if !(hex(section, 4) && hex(offset, 8) && hex(address, 16)) {
                return None;
            }
            let address = u64::from_str_radix(address, 16).ok()?;
            Some((name.to_owned(), address))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLD_MAP: &str = " capdma_bus

 Timestamp is 6b0152b7 (Sat Nov 21 08:13:43 2026)

 Preferred load address is 0000000180000000

 Start         Length     Name                   Class
 0001:00000000 00000e50H .text                   CODE

  Address         Publics by Value              Rva+Base               Lib:Object

 0001:00000000       DriverEntry                0000000180001000     capdma_bus.cgu.0.rcgu.o
 0001:00000160       helper                     0000000180001160     capdma_bus.cgu.1.rcgu.o

 entry point at        0001:00000000
";

    #[test]
    fn reads_publics_and_skips_everything_else() {
        assert_eq!(
            publics(LLD_MAP),
            vec![
                ("DriverEntry".to_owned(), 0x1_8000_1000),
                ("helper".to_owned(), 0x1_8000_1160),
            ]
        );
    }

    #[test]
    fn garbage_yields_nothing() {
        assert!(publics("").is_empty());
        assert!(publics("0001:zz DriverEntry 0000000180001000\n:::: x y\n").is_empty());
        assert!(publics(" 0001:00000000 DriverEntry 180001000 obj").is_empty());
    }
}
