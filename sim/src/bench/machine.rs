//! What the benchmark needs to know about the host: the last-level cache
//! (sized from sysfs, with a fallback), the CPU model, transparent huge
//! pages, and (when readable) the physical frames behind a virtual range.
use serde::Serialize;
use std::fs;
use std::path::Path;

/// Last-level cache assumed when sysfs cannot be read: 32 MiB, the L3 of
/// one CCD of current server parts and more than most desktop parts have, so
/// rings sized from it are cold on smaller caches too.
pub const FALLBACK_LLC_BYTES: usize = 32 << 20;

/// The host, as the report states it.
#[derive(Clone, Debug, Serialize)]
pub struct MachineInfo {
    /// `model name` of the first CPU in `/proc/cpuinfo` (hypervisors may
    /// shorten it).
    pub cpu_model: String,
    /// `cpu family` and `model` from `/proc/cpuinfo`, when present.
    pub cpu_family_model: Option<(u32, u32)>,
    /// Logical CPUs available to this process.
    pub logical_cpus: usize,
    /// Bytes of the last-level cache (the highest-level data or unified cache).
    pub llc_bytes: usize,
    /// Level of that cache (3 on most machines).
    pub llc_level: u32,
    /// Where `llc_bytes` came from: `"sysfs"` or `"fallback"`.
    pub llc_source: String,
    /// Whether the copy routine can use AVX2 here (its own CPUID probe).
    pub avx2: bool,
    /// `/sys/kernel/mm/transparent_hugepage/enabled` (the selected mode).
    pub transparent_hugepages: Option<String>,
}

/// Reads the host description.
#[must_use]
pub fn machine_info() -> MachineInfo {
    let (llc_bytes, llc_level, llc_source) = match llc_from_sysfs(Path::new("/sys/devices/system/cpu/cpu0/cache")) {
        Some((bytes, level)) => (bytes, level, "sysfs"),
        None => (FALLBACK_LLC_BYTES, 3, "fallback"),
    };
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    let cpu_model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cpu_family_model = field("cpu family").zip(field("model")).and_then(|(f, m)| Some((f.parse().ok()?, m.parse().ok()?)));
    let transparent_hugepages = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| s.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(['[', ']']).to_owned()));
    MachineInfo {
        cpu_model,
        cpu_family_model,
        logical_cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        llc_bytes,
        llc_level,
        llc_source: llc_source.to_owned(),
        avx2: capdma_avstream::copy::avx2_supported(),
        transparent_hugepages,
    }
}

/// The highest-level data or unified cache under `dir`
/// (`index*/level`, `index*/type`, `index*/size`): `(bytes, level)`.
#[must_use]
pub fn llc_from_sysfs(dir: &Path) -> Option<(usize, u32)> {
    let mut best: Option<(usize, u32)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("index") {
            continue;
        }
        let read = |name: &str| fs::read_to_string(path.join(name)).ok().map(|s| s.trim().to_owned());
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        if kind == "Instruction" {
            continue;
        }
        let (Ok(level), Some(bytes)) = (level.parse::<u32>(), parse_size(&size)) else {
            continue;
        };
        if best.is_none_or(|(b, l)| level > l || (level == l && bytes > b)) {
            best = Some((bytes, level));
        }
    }
    best
}

/// Parses a sysfs cache size: `"32768K"`, `"32M"`, `"512"` (bytes).
#[must_use]
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let value: usize = digits.parse().ok()?;
    let shift = match unit.trim() {
        "" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        _ => return None,
    };
    value.checked_mul(1 << shift).filter(|&b| b > 0)
}

/// Physical frame numbers of the pages of `[start, start + len)` from
/// `/proc/self/pagemap`; `None` when the file is unreadable or hides the
/// frame numbers (they read as 0 without `CAP_SYS_ADMIN`).
#[must_use]
pub fn physical_frames(start: *const u8, len: usize) -> Option<Vec<u64>> {
    #[cfg(target_os = "linux")]
    {
        use std::io::{Read, Seek, SeekFrom};
        const PAGE: usize = 4096;
        let first = start.addr() / PAGE;
        let pages = len.div_ceil(PAGE);
        let mut file = fs::File::open("/proc/self/pagemap").ok()?;
        file.seek(SeekFrom::Start(u64::try_from(first).ok()?.checked_mul(8)?)).ok()?;
        let mut raw = vec![0u8; pages.checked_mul(8)?];
        file.read_exact(&mut raw).ok()?;
        let frames: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| {
                let entry = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                if entry >> 63 == 1 {
                    entry & ((1 << 55) - 1)
                } else {
                    0
                }
            })
            .collect();
        frames.iter().any(|&f| f != 0).then_some(frames)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (start, len);
        None
    }
}

/// Runs of physically adjacent pages in `frames` (virtual order): the
/// number of S/G elements a HAL that merges adjacent pages would produce.
#[must_use]
pub fn physical_runs(frames: &[u64]) -> usize {
    if frames.is_empty() {
        return 0;
    }
    1 + frames.windows(2).filter(|w| w[1] != w[0].wrapping_add(1)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("32M\n"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("12Q"), None);
    }

    #[test]
    fn llc_is_the_highest_data_cache() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("cache");
        for (i, level, kind, size) in [(0, 1, "Data", "32K"), (1, 1, "Instruction", "32K"), (2, 2, "Unified", "1024K"), (3, 3, "Unified", "16384K")] {
            let d = dir.join(format!("index{i}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("level"), format!("{level}\n")).unwrap();
            fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        assert_eq!(llc_from_sysfs(&dir), Some((16 << 20, 3)));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(llc_from_sysfs(&dir), None);
    }

    #[test]
    fn runs_count_breaks_in_adjacency() {
        assert_eq!(physical_runs(&[]), 0);
        assert_eq!(physical_runs(&[5, 6, 7, 20, 21, 3]), 3);
    }
}
