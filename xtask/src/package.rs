//! `cargo xtask package`: per driver, the folder `inf2cat` and `signtool`
//! take — the layout `cargo wdk build` (windows-drivers-rs's cargo-wdk)
//! writes on Windows:
//!
//! ```text
//! target/windows/<profile>/<lib>_package/
//!     <lib>.sys    the image (PE-checked)
//!     <lib>.pdb    its symbols
//!     <lib>.map    its linker map (the PE check reads it beside the image)
//!     <lib>.inf    inf/<lib>.inx stamped as `stampinf -a amd64 -d <date> -v <version> -c <lib>.cat` would
//! ```
//!
//! Stamping (the Windows driver docs' *Stampinf command options* and *INF
//! `DriverVer` directive*): every `$ARCH$` becomes `amd64`, `[Version]` gets
//! `DriverVer = MM/DD/YYYY,w.x.y.z` (the date in UTC, as `inf2cat` reads it:
//! a date after today's UTC date fails the catalog) and
//! `CatalogFile = <lib>.cat`; the text is written with CRLF line ends.
//! The folder is made anew each time, so no catalog or signature of an
//! earlier stamp survives. Only drivers with an INF are packaged (a
//! test-only image never is).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use time::{Date, Month, OffsetDateTime};

use crate::cross_build;
use crate::pe_check;
use crate::prereqs::Toolchain;
use crate::workspace;

/// The driver packages that ship, each with `inf/<lib>.inx`.
pub const PACKAGED_DRIVERS: &[&str] = &["capdma-bus", "capdma-avstream"];

/// What `$ARCH$` becomes for the x64 build (`stampinf -a amd64`; the INF
/// platform decoration is `NTamd64`).
pub const ARCH: &str = "amd64";

/// The `DriverVer` directive's value: `MM/DD/YYYY,w.x.y.z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverVer {
    /// The package's date (UTC).
    pub date: Date,
    /// The version, each part below 65535 and not all zero.
    pub version: [u16; 4],
}

impl fmt::Display for DriverVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [major, minor, build, revision] = self.version;
        write!(
            f,
            "{:02}/{:02}/{:04},{major}.{minor}.{build}.{revision}",
            u8::from(self.date.month()),
            self.date.day(),
            self.date.year()
        )
    }
}

/// Parses a `DriverVer` date, `MM/DD/YYYY` (or with `-`), as the
/// directive's page defines it.
///
/// # Errors
/// When the text is not two-digit month and day and a four-digit year, or
/// not a calendar date.
pub fn parse_date(text: &str) -> Result<Date, String> {
    let parts: Vec<&str> = text.trim().split(['/', '-']).collect();
    let [month, day, year] = parts.as_slice() else {
        return Err(format!("`{text}` is not MM/DD/YYYY"));
    };
    let digits =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
    if !(digits(month, 2) && digits(day, 2) && digits(year, 4)) {
        return Err(format!("`{text}` is not MM/DD/YYYY"));
    }
    let number = |part: &str| part.parse::<u16>().map_err(|e| format!("`{text}`: {e}"));
    let month = u8::try_from(number(month)?).map_err(|e| e.to_string())?;
    let day = u8::try_from(number(day)?).map_err(|e| e.to_string())?;
    let year = i32::from(number(year)?);
    let month = Month::try_from(month).map_err(|e| format!("`{text}`: {e}"))?;
    Date::from_calendar_date(year, month, day).map_err(|e| format!("`{text}`: {e}"))
}

/// Parses a `DriverVer` version, `w.x.y.z`: four decimal parts, each below
/// 65535, not all zero (the directive's page).
///
/// # Errors
/// When it is not that.
pub fn parse_version(text: &str) -> Result<[u16; 4], String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    let [w, x, y, z] = parts.as_slice() else {
        return Err(format!("`{text}` is not w.x.y.z"));
    };
    let mut version = [0u16; 4];
    for (slot, part) in version.iter_mut().zip([w, x, y, z]) {
        *slot = part
            .parse::<u16>()
            .ok()
            .filter(|&v| v < u16::MAX && part.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("`{text}`: each part is a number below 65535"))?;
    }
    if version == [0; 4] {
        return Err("0.0.0.0 is not a valid DriverVer version".to_owned());
    }
    Ok(version)
}

/// The `DriverVer` version of a package version: `major.minor.patch.0`
/// (pre-release and build metadata dropped).
///
/// # Errors
/// When a part is not below 65535 or all are zero.
pub fn version_of_package(version: &str) -> Result<[u16; 4], String> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    parse_version(&format!("{core}.0"))
}

/// Today's date in UTC, or that of `SOURCE_DATE_EPOCH` (for reproducible
/// packages) when it is set.
///
/// # Errors
/// When `SOURCE_DATE_EPOCH` is set but not a time.
pub fn today_utc() -> Result<Date> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(seconds) => date_of_epoch(&seconds),
        Err(_) => Ok(OffsetDateTime::now_utc().date()),
    }
}

/// The UTC date of `seconds` since 1970-01-01 00:00 UTC (decimal text, as
/// `SOURCE_DATE_EPOCH` holds it).
///
/// # Errors
/// When the text is not such a number or out of range.
pub fn date_of_epoch(seconds: &str) -> Result<Date> {
    let value: i64 = seconds
        .trim()
        .parse()
        .with_context(|| format!("SOURCE_DATE_EPOCH `{seconds}` is not a number"))?;
    Ok(OffsetDateTime::from_unix_timestamp(value)
        .with_context(|| format!("SOURCE_DATE_EPOCH `{seconds}` is out of range"))?
        .date())
}

/// The key of an INF line (`Key = value ; comment`), if it has one.
fn key_of(line: &str) -> Option<&str> {
    let code = line.split(';').next().unwrap_or_default();
    code.split_once('=').map(|(key, _)| key.trim())
}

/// Is `line` a section header, and of which section?
fn section_of(line: &str) -> Option<&str> {
    let code = line.split(';').next().unwrap_or_default().trim();
    code.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .map(str::trim)
}

/// `line` (`Key = old ; comment`) with its value replaced by `value`; the
/// key's own spelling and spacing stay.
fn with_value(line: &str, value: &str) -> String {
    let key = line.split_once('=').map_or(line, |(key, _)| key);
    format!("{key}= {value}")
}

/// The INF text of `inx`, stamped as `stampinf -a amd64 -d <date> -v
/// <version> -c <catalog>` does: `$ARCH$` replaced everywhere, `DriverVer`
/// and `CatalogFile` set in `[Version]` (replaced where present, added at
/// the end of the section where not), CRLF line ends.
///
/// # Errors
/// When there is no `[Version]` section, it names `DriverVer` or
/// `CatalogFile` twice, or a `$ARCH$` in another case is left over.
pub fn stamp(inx: &str, driver_ver: &DriverVer, catalog: &str) -> Result<String> {
    let directives = [
        ("DriverVer", driver_ver.to_string()),
        ("CatalogFile", catalog.to_owned()),
    ];
    let mut lines: Vec<String> = Vec::new();
    let mut version_end: Option<usize> = None;
    let mut in_version = false;
    let mut written = [0usize; 2];
    for line in inx.lines() {
        if let Some(name) = section_of(line) {
            in_version = name.eq_ignore_ascii_case("Version");
            if in_version {
                if version_end.is_some() {
                    bail!("[Version] appears twice");
                }
                version_end = Some(lines.len() + 1);
            }
        }
        let mut line = line.replace("$ARCH$", ARCH);
        if in_version {
            if let Some(i) = key_of(&line).and_then(|key| {
                directives
                    .iter()
                    .position(|(d, _)| key.eq_ignore_ascii_case(d))
            }) {
                written[i] += 1;
                if written[i] > 1 {
                    bail!("[Version] names {} twice", directives[i].0);
                }
                line = with_value(&line, &directives[i].1);
            }
            if !line.trim().is_empty() {
                version_end = Some(lines.len() + 1);
            }
        }
        lines.push(line);
    }
    let Some(mut at) = version_end else {
        bail!("no [Version] section");
    };
    for (i, (key, value)) in directives.iter().enumerate() {
        if written[i] == 0 {
            lines.insert(at, format!("{key} = {value}"));
            at += 1;
        }
    }
    if let Some(line) = lines
        .iter()
        .find(|l| l.to_ascii_uppercase().contains("$ARCH$"))
    {
        bail!("a $ARCH$ token stampinf would not resolve (it is case-sensitive) is left: `{line}`");
    }
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    Ok(text)
}

/// Make `<out>/<lib>_package/` for the built image `<out>/<lib>.sys` and
/// `inx` (see the module documentation). Returns the folder.
///
/// # Errors
/// When the image or its `.pdb` is missing, the INX cannot be stamped, or
/// the file system fails.
pub fn write_package(
    out: &Path,
    lib_name: &str,
    inx: &Path,
    driver_ver: &DriverVer,
) -> Result<PathBuf> {
    let image = out.join(format!("{lib_name}.sys"));
    let pdb = out.join(format!("{lib_name}.pdb"));
    let map = out.join(format!("{lib_name}.map"));
    for needed in [&image, &pdb] {
        if !needed.is_file() {
            bail!(
                "{} is missing (build it with `cargo xtask windows`)",
                needed.display()
            );
        }
    }
    let source =
        fs::read_to_string(inx).with_context(|| format!("cannot read {}", inx.display()))?;
    let inf = stamp(&source, driver_ver, &format!("{lib_name}.cat"))
        .with_context(|| format!("cannot stamp {}", inx.display()))?;

    let folder = out.join(format!("{lib_name}_package"));
    if folder.exists() {
        fs::remove_dir_all(&folder)
            .with_context(|| format!("cannot remove the old {}", folder.display()))?;
    }
    fs::create_dir_all(&folder).with_context(|| format!("cannot create {}", folder.display()))?;
    for file in [&image, &pdb]
        .into_iter()
        .chain(map.is_file().then_some(&map))
    {
        let name = file.file_name().context("a file name")?;
        fs::copy(file, folder.join(name))
            .with_context(|| format!("cannot copy {}", file.display()))?;
    }
    fs::write(folder.join(format!("{lib_name}.inf")), inf)
        .with_context(|| format!("cannot write {lib_name}.inf"))?;
    Ok(folder)
}

/// The packaged drivers to make: `selected` (each one of
/// [`PACKAGED_DRIVERS`]) in that list's order, or all when empty.
///
/// # Errors
/// When a name is not a packaged driver.
pub fn select(selected: &[String]) -> Result<Vec<&'static str>> {
    if let Some(unknown) = selected
        .iter()
        .find(|s| !PACKAGED_DRIVERS.contains(&s.as_str()))
    {
        bail!(
            "`{unknown}` is not a packaged driver (packaged drivers: {})",
            PACKAGED_DRIVERS.join(", ")
        );
    }
    Ok(PACKAGED_DRIVERS
        .iter()
        .copied()
        .filter(|p| selected.is_empty() || selected.iter().any(|s| s == p))
        .collect())
}

/// Options of `cargo xtask package`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Release (default) or dev profile.
    pub build: cross_build::Options,
    /// `DriverVer`'s date; `None`: [`today_utc`].
    pub date: Option<Date>,
    /// `DriverVer`'s version; `None`: each package's version, `x.y.z.0`.
    pub version: Option<[u16; 4]>,
}

/// Build and PE-check the `packages`, then write their package folders.
/// Returns the folders.
///
/// # Errors
/// When the build, the PE check or a package fails.
pub fn run(tc: &Toolchain, options: &Options, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let images = cross_build::run(tc, options.build, packages)?;
    pe_check::run(&images, pe_check::Options::default())?;
    let root = workspace::root();
    let out = cross_build::Layout::new(&root, options.build).out;
    let metadata = workspace::metadata(&tc.cargo, &root, None)?;
    let drivers = workspace::drivers_from_metadata(&metadata, packages)?;
    let date = match options.date {
        Some(date) => date,
        None => today_utc()?,
    };
    let mut folders = Vec::new();
    for driver in drivers {
        let version = match options.version {
            Some(version) => version,
            None => version_of_package(&driver.version)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("the version of `{}`", driver.package))?,
        };
        let driver_ver = DriverVer { date, version };
        let inx = root.join("inf").join(format!("{}.inx", driver.lib_name));
        let folder = write_package(&out, &driver.lib_name, &inx, &driver_ver)?;
        println!(
            "[package] {:<15} {} (DriverVer = {driver_ver})",
            driver.package,
            folder.display()
        );
        folders.push(folder);
    }
    Ok(folders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver_ver() -> DriverVer {
        DriverVer {
            date: Date::from_calendar_date(2025, Month::March, 7).unwrap(),
            version: [0, 1, 0, 0],
        }
    }

    fn repository_inx(name: &str) -> String {
        let path = workspace::root().join("inf").join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The value of `key` in `[Version]` of `inf`.
    fn version_value(inf: &str, key: &str) -> Vec<String> {
        let mut in_version = false;
        let mut found = Vec::new();
        for line in inf.lines() {
            if let Some(name) = section_of(line) {
                in_version = name.eq_ignore_ascii_case("Version");
            } else if in_version && key_of(line).is_some_and(|k| k.eq_ignore_ascii_case(key)) {
                let value = line.split_once('=').map(|(_, v)| v).unwrap_or_default();
                found.push(
                    value
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                );
            }
        }
        found
    }

    #[test]
    fn driver_ver_is_the_directive_format() {
        assert_eq!(driver_ver().to_string(), "03/07/2025,0.1.0.0");
        assert_eq!(parse_date("03/07/2025"), Ok(driver_ver().date));
        assert_eq!(parse_date("03-07-2025"), Ok(driver_ver().date));
        for bad in [
            "3/7/2025",
            "2025/03/07",
            "02/30/2025",
            "13/01/2025",
            "03/07/25",
            "0a/07/2025",
            "",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_version("1.2.3.65534"), Ok([1, 2, 3, 65534]));
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "0.0.0.0",
            "1.2.3.65535",
            "1.2.+3.4",
            "1.2.3.x",
        ] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
        assert_eq!(version_of_package("0.1.0"), Ok([0, 1, 0, 0]));
        assert_eq!(version_of_package("2.10.3-rc.1+abc"), Ok([2, 10, 3, 0]));
        assert!(version_of_package("0.0.0").is_err());
    }

    #[test]
    fn stamping_sets_arch_driver_ver_and_catalog_as_stampinf_does() {
        for name in ["capdma_bus", "capdma_avstream"] {
            let inx = repository_inx(&format!("{name}.inx"));
            assert!(inx.contains("$ARCH$"), "{name}.inx is a stampinf source");
            let inf = stamp(&inx, &driver_ver(), &format!("{name}.cat")).unwrap();
            assert!(!inf.contains("$ARCH$"), "{name}: $ARCH$ left");
            assert!(
                inf.contains("NTamd64.10.0...19041"),
                "{name}: decoration not stamped"
            );
            assert_eq!(
                version_value(&inf, "DriverVer"),
                ["03/07/2025,0.1.0.0"],
                "{name}"
            );
            assert_eq!(
                version_value(&inf, "CatalogFile"),
                [format!("{name}.cat")],
                "{name}"
            );
            assert!(
                inf.ends_with("\r\n") && !inf.replace("\r\n", "").contains('\n'),
                "{name}: CRLF"
            );
            // Nothing else changed.
            let back = inf.replace("\r\n", "\n").replace("amd64", "$ARCH$");
            let changed: Vec<_> = inx
                .lines()
                .zip(back.lines())
                .filter(|(a, b)| a != b)
                .collect();
            assert_eq!(
                changed.len(),
                1,
                "{name}: only the DriverVer line differs: {changed:?}"
            );
        }
    }

    #[test]
    fn stamping_adds_missing_directives_inside_version_and_refuses_bad_input() {
        let inx = "[Version]\nSignature = \"$WINDOWS NT$\"\n\n[Manufacturer]\nx = y, NT$ARCH$\n";
        let inf = stamp(inx, &driver_ver(), "x.cat").unwrap();
        assert_eq!(
            inf,
            "[Version]\r\nSignature = \"$WINDOWS NT$\"\r\nDriverVer = 03/07/2025,0.1.0.0\r\n\
             CatalogFile = x.cat\r\n\r\n[Manufacturer]\r\nx = y, NTamd64\r\n"
        );
        assert!(
            stamp("[Strings]\n", &driver_ver(), "x.cat").is_err(),
            "no [Version]"
        );
        let twice = "[Version]\nDriverVer = a\ndriverver = b\n";
        assert!(
            stamp(twice, &driver_ver(), "x.cat").is_err(),
            "DriverVer twice"
        );
        let lower = "[Version]\n[Manufacturer]\nx = y, NT$arch$\n";
        assert!(
            stamp(lower, &driver_ver(), "x.cat").is_err(),
            "$arch$ is not resolved"
        );
    }

    #[test]
    fn package_folder_has_the_cargo_wdk_layout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let inx = workspace::root().join("inf/capdma_bus.inx");
        for ext in ["sys", "pdb", "map"] {
            fs::write(out.join(format!("capdma_bus.{ext}")), ext).unwrap();
        }
        // A catalog of an earlier stamp must not survive.
        let folder = out.join("capdma_bus_package");
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join("capdma_bus.cat"), "stale").unwrap();

        let made = write_package(out, "capdma_bus", &inx, &driver_ver()).unwrap();
        assert_eq!(made, folder);
        let mut files: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "capdma_bus.inf",
                "capdma_bus.map",
                "capdma_bus.pdb",
                "capdma_bus.sys"
            ]
        );
        assert_eq!(
            fs::read_to_string(folder.join("capdma_bus.sys")).unwrap(),
            "sys"
        );
        let inf = fs::read_to_string(folder.join("capdma_bus.inf")).unwrap();
        assert_eq!(version_value(&inf, "DriverVer"), ["03/07/2025,0.1.0.0"]);

        // Without symbols there is no package.
        fs::remove_file(out.join("capdma_bus.pdb")).unwrap();
        let error = write_package(out, "capdma_bus", &inx, &driver_ver()).unwrap_err();
        assert!(error.to_string().contains("capdma_bus.pdb"), "{error}");
    }

    #[test]
    fn only_drivers_with_an_inf_are_packaged() {
        assert_eq!(select(&[]).unwrap(), PACKAGED_DRIVERS);
        assert_eq!(
            select(&["capdma-avstream".into()]).unwrap(),
            ["capdma-avstream"]
        );
        assert!(select(&["capdma-sim".into()]).is_err());
        for package in PACKAGED_DRIVERS {
            assert!(
                cross_build::DRIVER_PACKAGES.contains(package),
                "{package} is not built"
            );
        }
        for name in ["capdma_bus", "capdma_avstream"] {
            assert!(workspace::root()
                .join("inf")
                .join(format!("{name}.inx"))
                .is_file());
        }
    }

    #[test]
    fn source_date_epoch_gives_the_utc_date() {
        // 2025-03-07 00:00:00 and 23:59:59 UTC.
        assert_eq!(date_of_epoch("1741305600").unwrap(), driver_ver().date);
        assert_eq!(date_of_epoch(" 1741391999\n").unwrap(), driver_ver().date);
        assert_eq!(
            date_of_epoch("1741392000").unwrap(),
            driver_ver().date.next_day().unwrap()
        );
        assert!(date_of_epoch("yesterday").is_err());
        assert!(date_of_epoch("99999999999999999").is_err());
    }
}
