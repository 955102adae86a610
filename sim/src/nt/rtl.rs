//! Run-time library exports the images import: debug output, the C
//! memory routines, and the bug check.

use capdma_winvm::{Machine, Stop};

use super::{Ddi, Module, Nt, TraceLine, HIGH_LEVEL};

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ntoskrnl, name: "DbgPrint", max_irql: HIGH_LEVEL, run: dbg_print },
    Ddi { module: Module::Ntoskrnl, name: "memcpy", max_irql: HIGH_LEVEL, run: memcpy },
    Ddi { module: Module::Ntoskrnl, name: "memmove", max_irql: HIGH_LEVEL, run: memcpy },
    Ddi { module: Module::Ntoskrnl, name: "memset", max_irql: HIGH_LEVEL, run: memset },
    Ddi { module: Module::Ntoskrnl, name: "KeBugCheckEx", max_irql: HIGH_LEVEL, run: ke_bug_check_ex },
];

/// Largest string `DbgPrint` reads, bytes (its documented limit is 512).
const DBGPRINT_MAX: usize = 512;

/// Reads a NUL-terminated byte string at `va`, at most `max` bytes.
///
/// # Errors
/// A bugcheck when the string runs into an unmapped page.
pub fn read_cstr(m: &Machine, va: u64, max: usize) -> Result<String, Stop> {
    let mut out = Vec::new();
    for i in 0..max as u64 {
        let b = m.read_u8(va + i)?;
        if b == 0 {
            break;
        }
        out.push(b);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `ULONG DbgPrint(PCSTR Format, ...)` ("DbgPrint function"). The images
/// print fixed strings and `%s`/`%d`/`%x`-free formats; a `%` directive is
/// kept as written.
fn dbg_print(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let format = m.arg(0)?;
    let text = read_cstr(m, format, DBGPRINT_MAX)?;
    let image = m
        .caller()
        .ok()
        .and_then(|c| m.images().iter().find(|i| i.contains(c)).map(|i| i.name.clone()))
        .unwrap_or_default();
    nt.trace.push(TraceLine { time: nt.time, irql: nt.irql, image, text: text.trim_end_matches('\n').to_owned() });
    Ok(0)
}

/// `void *memcpy(void *dest, const void *src, size_t count)` (also
/// `memmove`: the copy goes through a host buffer, so overlap is safe).
fn memcpy(_nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [dest, src, count] = m.args::<3>()?;
    let mut buf = vec![0u8; usize::try_from(count).map_err(|e| Stop::Host(e.to_string()))?];
    m.read(src, &mut buf)?;
    m.write(dest, &buf)?;
    Ok(dest)
}

/// `void *memset(void *dest, int c, size_t count)`.
fn memset(_nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [dest, c, count] = m.args::<3>()?;
    m.fill(dest, usize::try_from(count).map_err(|e| Stop::Host(e.to_string()))?, (c & 0xFF) as u8)?;
    Ok(dest)
}

/// `VOID KeBugCheckEx(ULONG BugCheckCode, ULONG_PTR P1..P4)` ("KeBugCheckEx
/// function"): the machine stops with a bugcheck report.
fn ke_bug_check_ex(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [code, p1, p2, p3, p4] = m.args::<5>()?;
    let stop = m.bugcheck_now(nt, (code & 0xFFFF_FFFF) as u32, "KeBugCheckEx called by the driver", [p1, p2, p3, p4]);
    m.stop_with(stop);
    Ok(0)
}
