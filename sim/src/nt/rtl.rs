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

/// Formats `format` as the kernel's `printf` family does for the
/// directives drivers use (`%s %c %d %i %u %x %X %p %%`, with the `l`,
/// `ll`, `I64`, `z` and `h` size prefixes and a width), taking the variadic
/// arguments from argument `first_arg` on. An unknown directive is kept.
///
/// # Errors
/// A bugcheck when a `%s` argument points at unmapped memory.
pub fn format_printf(m: &Machine, format: &str, first_arg: usize) -> Result<String, Stop> {
    let mut out = String::new();
    let mut next = first_arg;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::from("%");
        let mut width = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '-' || d == '0' {
                width.push(d);
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let mut wide = false;
        while let Some(&p) = chars.peek() {
            match p {
                'l' | 'h' | 'z' | 'I' | '6' | '4' => {
                    wide |= p == 'l' || p == 'z' || p == '6';
                    spec.push(p);
                    chars.next();
                }
                _ => break,
            }
        }
        let Some(conversion) = chars.next() else {
            out.push_str(&spec);
            break;
        };
        let pad = |text: String| -> String {
            let n: usize = width.trim_start_matches(['-', '0']).parse().unwrap_or(0);
            if text.len() >= n {
                text
            } else if width.starts_with('0') {
                format!("{}{text}", "0".repeat(n - text.len()))
            } else {
                format!("{}{text}", " ".repeat(n - text.len()))
            }
        };
        let mut arg = || -> Result<u64, Stop> {
            let value = m.arg(next)?;
            next += 1;
            Ok(value)
        };
        match conversion {
            '%' => out.push('%'),
            's' => {
                let ptr = arg()?;
                out.push_str(&if ptr == 0 { "(null)".into() } else { read_cstr(m, ptr, DBGPRINT_MAX)? });
            }
            'c' => out.push(char::from((arg()? & 0xFF) as u8)),
            'd' | 'i' => {
                let v = arg()?;
                let v = if wide { v.cast_signed() } else { i64::from(((v & 0xFFFF_FFFF) as u32).cast_signed()) };
                out.push_str(&pad(v.to_string()));
            }
            'u' => {
                let v = arg()?;
                out.push_str(&pad(if wide { v } else { v & 0xFFFF_FFFF }.to_string()));
            }
            'x' | 'X' | 'p' => {
                let v = arg()?;
                let v = if wide || conversion == 'p' { v } else { v & 0xFFFF_FFFF };
                let text = if conversion == 'X' { format!("{v:X}") } else { format!("{v:x}") };
                out.push_str(&pad(if conversion == 'p' { format!("{v:016X}") } else { text }));
            }
            other => {
                out.push_str(&spec);
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// `ULONG DbgPrint(PCSTR Format, ...)` ("DbgPrint function": a `printf`
/// format and its arguments; the output is at most 512 bytes).
fn dbg_print(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let format = m.arg(0)?;
    let format = read_cstr(m, format, DBGPRINT_MAX)?;
    let mut text = format_printf(m, &format, 1)?;
    text.truncate(DBGPRINT_MAX);
    let image = m
        .caller()
        .ok()
        .and_then(|c| m.images().iter().find(|i| i.contains(c)).map(|i| i.name.clone()))
        .unwrap_or_default();
    nt.trace.push(TraceLine { time: nt.time, irql: nt.irql, image, text: text.trim_end_matches('\n').to_owned() });
    Ok(0)
}

/// Bytes `memcpy` moves per step.
const CHUNK: u64 = 4096;

/// `void *memcpy(void *dest, const void *src, size_t count)` (also
/// `memmove`: the copy goes through a host buffer, so overlap is safe).
fn memcpy(_nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [dest, src, count] = m.args::<3>()?;
    // In page-sized chunks, so a wild count faults on the first unmapped
    // page (a bugcheck) instead of asking the host for that much memory;
    // backwards when the destination overlaps above the source (memmove).
    let mut buf = [0u8; CHUNK as usize];
    let chunks = count.div_ceil(CHUNK);
    for i in 0..chunks {
        let k = if dest > src && dest < src.wrapping_add(count) { chunks - 1 - i } else { i };
        let at = k * CHUNK;
        let n = (count - at).min(CHUNK) as usize;
        m.read(src.wrapping_add(at), &mut buf[..n])?;
        m.write(dest.wrapping_add(at), &buf[..n])?;
    }
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
