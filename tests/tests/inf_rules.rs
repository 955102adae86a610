//! The rules `infverif /w` (the Windows Driver rule set: declarative INF,
//! driver package isolation) applies that can be checked without Windows,
//! run on both INFs as `cargo xtask package` stamps them. Each rule carries
//! its `InfVerif` code; the list, with the Windows driver docs page each
//! comes from, is `docs/inf-rules.md`. Every rule has a test that feeds it a
//! deliberately broken copy of one of our INFs and sees it fire.
//!
//! This is not `InfVerif`: it knows only the directives our INFs use and
//! reports a rule per broken directive, where `InfVerif` may report several.
mod inf;

use std::collections::{BTreeSet, HashSet};

use inf::{parse_number, workspace, Inf, Line};

/// `SPSVCINST_ASSOCSERVICE`: the `AddService` flag naming the function driver.
const SPSVCINST_ASSOCSERVICE: u32 = 0x2;
/// `FLG_ADDREG_APPEND`: append to a `REG_MULTI_SZ` value.
const FLG_ADDREG_APPEND: u32 = 0x8;
/// `DIRID` of the driver store (run from the driver store).
const DIRID_DRIVER_STORE: u32 = 13;
/// The first build a `TargetOSVersion` decoration may name (Windows 10, 1607).
const FIRST_TARGETABLE_BUILD: u32 = 14310;
/// The platform decoration architectures.
const ARCHITECTURES: &[&str] = &["x86", "amd64", "arm", "arm64", "ia64"];
/// `DDInstall` section suffixes the setup API reads.
const INSTALL_SUFFIXES: &[&str] = &[
    "HW",
    "Services",
    "Interfaces",
    "CoInstallers",
    "LogConfigOverride",
    "WMI",
    "FactDef",
    "Events",
    "Components",
    "Software",
    "Filters",
];
/// System-defined device setup classes our INFs could use, `(Class, ClassGuid)`
/// (*System-defined device setup classes available to vendors*).
const WELL_KNOWN_CLASSES: &[(&str, &str)] = &[
    ("System", "{4d36e97d-e325-11ce-bfc1-08002be10318}"),
    ("Camera", "{ca3e7ab9-b4c3-4ae6-8251-579ef933890f}"),
    ("Media", "{4d36e96c-e325-11ce-bfc1-08002be10318}"),
    ("Image", "{6bdd1fc6-810f-11d0-bec7-08002be2092f}"),
];
/// Directives a Windows Driver INF may not use: legacy operations (1300,
/// 1301) and operations that are not additive (1308, 1309).
const LEGACY_DIRECTIVES: &[(&str, u16)] = &[
    ("LogConfig", 1300),
    ("RegisterDlls", 1301),
    ("UnregisterDlls", 1301),
    ("ProfileItems", 1301),
    ("UpdateInis", 1301),
    ("UpdateIniFields", 1301),
    ("Ini2Reg", 1301),
    ("DelReg", 1308),
    ("DelFiles", 1308),
    ("RenFiles", 1308),
    ("BitReg", 1308),
    ("DelService", 1309),
];
/// Registry values that install a co-installer or class installer (1303).
const INSTALLER_VALUES: &[&str] = &["CoInstallers32", "Installer32", "EnumPropPages32"];

/// The `InfVerif` codes this file checks, with what each means here; the
/// same list is `docs/inf-rules.md`.
const RULES: &[(u16, &str)] = &[
    (1001, "[Version] exists with Signature \"$Windows NT$\""),
    (1003, "the file is ANSI (here: ASCII) or UTF-16 LE"),
    (1010, "ClassGuid is {XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}"),
    (1011, "every [Manufacturer] entry names a models section"),
    (1100, "a file copied to DIRID 13 keeps its name and its place in the package"),
    (1203, "every section a directive names exists"),
    (1204, "Provider is not Microsoft"),
    (1209, "no section is defined twice"),
    (1211, "at most one AddService carries SPSVCINST_ASSOCSERVICE"),
    (1212, "not both [DefaultInstall] and [Manufacturer]"),
    (1213, "no catalog under [SourceDisksFiles]"),
    (1214, "CatalogFile is a bare file name ending in .cat"),
    (1217, "DriverVer's version is w.x.y.z, each below 65535, not 0.0.0.0"),
    (1218, "DriverVer's date is MM/DD/YYYY"),
    (1230, "every copied file is listed in [SourceDisksFiles]"),
    (1231, "no compressed file names (x.sy_)"),
    (1233, "[Version] has CatalogFile (needed for a signature)"),
    (1234, "[Version] has DriverVer"),
    (1235, "every %token% is defined in [Strings]"),
    (1261, "every model's install section exists"),
    (1271, "every model names an install section"),
    (1273, "every source file's disk is listed in [SourceDisksNames]"),
    (1274, "no unresolved $ARCH$ token"),
    (1275, "every CopyFiles section has a destination in [DestinationDirs]"),
    (1280, "Class is the name of a well-known ClassGuid"),
    (1281, "ClassGuid is the GUID of a well-known Class"),
    (1285, "no [ClassInstall32] for a system-defined class"),
    (1286, "Class is at most 31 characters"),
    (1287, "every TargetOSVersion decoration is well formed"),
    (1288, "a decoration's build number is 14310 or later"),
    (1289, "a service install section has ServiceType, StartType, ErrorControl, ServiceBinary"),
    (1294, "no file or hardware ID listed twice in one section"),
    (1296, "every install section has an associated service (.Services, AddService with 0x2)"),
    (1297, "the INF installs on at least one hardware ID"),
    (1300, "no legacy sections or directives (LogConfig, DDInstall.CoInstallers, DDInstall.LogConfigOverride)"),
    (1301, "no legacy operations (RegisterDlls, UnregisterDlls, ProfileItems, UpdateInis, UpdateIniFields, Ini2Reg)"),
    (1303, "no co-installer or class installer registered (CoInstallers32, Installer32, EnumPropPages32)"),
    (1305, "no value appended to a REG_MULTI_SZ (FLG_ADDREG_APPEND)"),
    (1308, "only additive operations (no DelReg, DelFiles, RenFiles, BitReg)"),
    (1309, "no DelService"),
    (1319, "a section that uses Needs on another INF's section also has Include"),
    (1320, "every registry key is written under HKR"),
    (1322, "every file is copied to DIRID 13 (run from the driver store)"),
    (1323, "a service's HKR values are under its Parameters subkey"),
    (1324, "[Version] has PnpLockdown=1"),
    (2006, "every AddService names an existing service install section"),
    (2083, "every section is used (warning)"),
    (2084, "ServiceBinary is a file the INF copies"),
    (2085, "ServiceBinary is a path under a DIRID"),
];

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    code: u16,
    message: String,
}

/// The rules run over one INF.
struct Check<'a> {
    inf: &'a Inf,
    findings: Vec<Finding>,
    /// Sections some directive or structure uses (lower case).
    used: HashSet<String>,
    /// Where the INF copies files: `(dirid, path under it)`, lower case.
    copied: Vec<(u32, String)>,
    /// Sections whose directives were checked (lower case).
    visited: HashSet<String>,
}

fn lower(text: &str) -> String {
    text.to_ascii_lowercase()
}

fn is_guid(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return false;
    };
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Does `name` end in `.cat` (any case)?
fn is_catalog(name: &str) -> bool {
    std::path::Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case("cat"))
}

/// A `%N%\path` value: the DIRID and the rest.
fn dirid_path(text: &str) -> Option<(u32, String)> {
    let rest = text.trim().strip_prefix('%')?;
    let (dirid, path) = rest.split_once('%')?;
    let path = path.strip_prefix('\\').unwrap_or(path);
    Some((dirid.parse().ok()?, path.to_owned()))
}

/// `value` expanded; an unknown token is reported (1235) once, by the
/// token scan, and the text is used as written.
fn expand(inf: &Inf, value: &str) -> String {
    inf.try_expand(value).unwrap_or_else(|_| value.to_owned()).trim().to_owned()
}

/// The values of `key` in `section`, each comma-separated value expanded,
/// empty ones dropped.
fn list(inf: &Inf, section: &str, key: &str) -> Vec<String> {
    inf.ini.values(section, key).into_iter().flatten().map(|v| expand(inf, &v)).filter(|v| !v.is_empty()).collect()
}

impl<'a> Check<'a> {
    fn new(inf: &'a Inf) -> Self {
        Self { inf, findings: Vec::new(), used: HashSet::new(), copied: Vec::new(), visited: HashSet::new() }
    }

    fn report(&mut self, code: u16, message: impl Into<String>) {
        self.findings.push(Finding { code, message: message.into() });
    }

    fn exists(&self, section: &str) -> bool {
        self.inf.ini.has_section(section)
    }

    fn lines(&self, section: &str) -> Vec<Line> {
        self.inf.ini.section(section)
    }

    fn expand(&self, value: &str) -> String {
        expand(self.inf, value)
    }

    fn list(&self, section: &str, key: &str) -> Vec<String> {
        list(self.inf, section, key)
    }

    /// Marks `section` used; reports it (1203) when it does not exist.
    fn use_section(&mut self, section: &str, by: &str) -> bool {
        self.used.insert(lower(section));
        let found = self.exists(section);
        if !found {
            self.report(1203, format!("[{section}], named by {by}, not found"));
        }
        found
    }

    fn encoding(&mut self) {
        let bytes = self.inf.text.as_bytes();
        if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) || !bytes.is_ascii() {
            self.report(
                1003,
                "not ASCII: an INF is ANSI or UTF-16 LE, and non-ASCII UTF-8 reads differently per code page",
            );
        }
    }

    fn version(&mut self) {
        self.used.insert("version".into());
        if !self.exists("Version") {
            self.report(1001, "no [Version] section");
            return;
        }
        let inf = self.inf;
        let one = |key: &str| list(inf, "Version", key).join(",");
        if !one("Signature").eq_ignore_ascii_case("$Windows NT$") {
            self.report(1001, format!("Signature is `{}`", one("Signature")));
        }
        let (class, guid) = (one("Class"), one("ClassGuid"));
        if !is_guid(&guid) {
            self.report(1010, format!("ClassGuid `{guid}`"));
        }
        if class.len() > 31 {
            self.report(1286, format!("Class `{class}` is {} characters", class.len()));
        }
        if let Some((name, _)) = WELL_KNOWN_CLASSES.iter().find(|(_, g)| g.eq_ignore_ascii_case(&guid)) {
            if !name.eq_ignore_ascii_case(&class) {
                self.report(1280, format!("ClassGuid {guid} is class {name}, not {class}"));
            }
        }
        if let Some((_, known)) = WELL_KNOWN_CLASSES.iter().find(|(n, _)| n.eq_ignore_ascii_case(&class)) {
            if !known.eq_ignore_ascii_case(&guid) {
                self.report(1281, format!("Class {class} is {known}, not {guid}"));
            }
        }
        if lower(&one("Provider")).starts_with("microsoft") {
            self.report(1204, format!("Provider `{}`", one("Provider")));
        }
        let catalog = one("CatalogFile");
        if catalog.is_empty() {
            self.report(1233, "no CatalogFile");
        } else if catalog.contains(['\\', '/', ':']) || !is_catalog(&catalog) || catalog.len() <= 4 {
            self.report(1214, format!("CatalogFile `{catalog}`"));
        }
        if one("PnpLockdown") != "1" {
            self.report(1324, format!("PnpLockdown is `{}`", one("PnpLockdown")));
        }
        self.driver_ver(&self.list("Version", "DriverVer"));
    }

    fn driver_ver(&mut self, values: &[String]) {
        let [date, version] = values else {
            self.report(1234, format!("DriverVer is `{}`, not date,version", values.join(",")));
            return;
        };
        let parts: Vec<&str> = date.split(['/', '-']).collect();
        let date_ok = matches!(parts.as_slice(), [m, d, y]
            if m.len() == 2 && d.len() == 2 && y.len() == 4
            && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
            && (1..=12).contains(&m.parse::<u32>().unwrap_or(0))
            && (1..=31).contains(&d.parse::<u32>().unwrap_or(0)));
        if !date_ok {
            self.report(1218, format!("DriverVer date `{date}`"));
        }
        let numbers: Vec<Option<u32>> =
            version.split('.').map(|p| p.parse().ok().filter(|_| p.bytes().all(|b| b.is_ascii_digit()))).collect();
        let version_ok = numbers.len() == 4
            && numbers.iter().all(|n| n.is_some_and(|n| n < 65535))
            && numbers.iter().any(|n| *n != Some(0));
        if !version_ok {
            self.report(1217, format!("DriverVer version `{version}`"));
        }
    }

    fn structure(&mut self) {
        let mut seen = HashSet::new();
        for (name, _) in &self.inf.ini.sections {
            if !seen.insert(lower(name)) {
                self.findings.push(Finding { code: 1209, message: format!("[{name}] is defined more than once") });
            }
        }
        let names: Vec<String> = self.inf.ini.sections.iter().map(|(n, _)| lower(n)).collect();
        if names.iter().any(|n| n.starts_with("defaultinstall")) && names.iter().any(|n| n == "manufacturer") {
            self.report(1212, "both [DefaultInstall] and [Manufacturer]");
        }
        for (index, raw) in self.inf.text.lines().enumerate() {
            if raw.contains("$ARCH$") && !inf::strip_comment(raw).trim().is_empty() {
                self.report(1274, format!("line {}: $ARCH$ is not stamped", index + 1));
            }
        }
        // String tokens, outside [Strings] (whose values are literal).
        let mut in_strings = false;
        for raw in self.inf.text.lines() {
            let code = inf::strip_comment(raw).trim();
            if let Some(name) = code.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
                in_strings = lower(name.trim()).starts_with("strings");
                continue;
            }
            if !in_strings {
                if let Err(error) = self.inf.try_expand(code) {
                    self.report(1235, error);
                }
            }
        }
        for fixed in ["manufacturer", "sourcedisksnames", "sourcedisksfiles", "destinationdirs"] {
            self.used.insert(fixed.into());
        }
        for (name, _) in &self.inf.ini.sections {
            let name = lower(name);
            if name.starts_with("strings") || name.starts_with("sourcedisks") {
                self.used.insert(name);
            }
        }
    }

    /// `(install section, hardware IDs)` of every model, decorations checked.
    fn models(&mut self) -> Vec<(String, Vec<String>)> {
        let mut models = Vec::new();
        for line in self.lines("Manufacturer") {
            let base = line.values.first().map(|v| self.expand(v)).unwrap_or_default();
            if base.is_empty() {
                self.report(1011, "a [Manufacturer] entry without a models section");
                continue;
            }
            let mut sections = vec![base.clone()];
            let decorations: Vec<String> = line.values.iter().skip(1).map(|d| self.expand(d)).collect();
            for decoration in decorations {
                self.decoration(&decoration);
                sections.push(format!("{base}.{decoration}"));
            }
            for section in sections.iter().skip(usize::from(sections.len() > 1)) {
                if !self.use_section(section, "[Manufacturer]") {
                    continue;
                }
                let mut seen = HashSet::new();
                for model in self.lines(section) {
                    let install = model.values.first().map(|v| self.expand(v)).unwrap_or_default();
                    let ids: Vec<String> =
                        model.values.iter().skip(1).map(|v| self.expand(v)).filter(|v| !v.is_empty()).collect();
                    if install.is_empty() {
                        self.report(1271, format!("[{section}]: a model without an install section"));
                        continue;
                    }
                    for id in &ids {
                        if !seen.insert((lower(&install), lower(id))) {
                            self.report(1294, format!("[{section}]: {id} listed twice for {install}"));
                        }
                    }
                    models.push((install, ids));
                }
            }
        }
        if models.iter().all(|(_, ids)| ids.is_empty()) {
            self.report(1297, "no model names a hardware ID");
        }
        models
    }

    /// `NT[arch][.major[.minor[.product[.suite[.build]]]]]`.
    fn decoration(&mut self, decoration: &str) {
        let mut parts = decoration.split('.');
        let platform = parts.next().unwrap_or_default();
        let fields: Vec<&str> = parts.collect();
        let arch_ok =
            lower(platform).strip_prefix("nt").is_some_and(|arch| arch.is_empty() || ARCHITECTURES.contains(&arch));
        let number = |text: &str| text.is_empty() || parse_number(text).is_some();
        if !arch_ok || fields.len() > 5 || !fields.iter().all(|f| number(f)) {
            self.report(1287, format!("decoration `{decoration}`"));
            return;
        }
        if let Some(build) = fields.get(4).filter(|b| !b.is_empty()).and_then(|b| b.parse::<u32>().ok()) {
            if build < FIRST_TARGETABLE_BUILD {
                self.report(
                    1288,
                    format!("decoration `{decoration}`: build {build} is before {FIRST_TARGETABLE_BUILD}"),
                );
            }
        }
    }

    /// The `DDInstall` section Windows uses on amd64 for `install`.
    fn ddinstall(&self, install: &str) -> Option<String> {
        [format!("{install}.NTamd64"), format!("{install}.NT"), install.to_owned()].into_iter().find(|s| self.exists(s))
    }

    fn install(&mut self, install: &str) {
        let Some(dd) = self.ddinstall(install) else {
            self.report(1261, format!("install section [{install}] (or .NT, .NTamd64) not found"));
            return;
        };
        self.used.insert(lower(&dd));
        let mut sections = vec![dd.clone()];
        for suffix in INSTALL_SUFFIXES {
            let name = format!("{dd}.{suffix}");
            if self.exists(&name) {
                self.used.insert(lower(&name));
                sections.push(name);
            }
        }
        for section in &sections {
            self.directives(section);
        }
        self.services(&dd);
    }

    /// The directives of an install-like section: the sections they name,
    /// their files, their registry writes.
    fn directives(&mut self, section: &str) {
        if !self.visited.insert(lower(section)) {
            return;
        }
        let includes = self.list(section, "Include");
        for needed in self.list(section, "Needs") {
            if self.exists(&needed) {
                self.used.insert(lower(&needed));
            } else if includes.is_empty() {
                self.report(1319, format!("[{section}] needs [{needed}] but includes no INF"));
            }
        }
        for copy in self.list(section, "CopyFiles") {
            match copy.strip_prefix('@') {
                Some(file) => self.copy_file(file, file, None),
                None => {
                    if self.use_section(&copy, &format!("CopyFiles in [{section}]")) {
                        self.copy_section(&copy);
                    }
                }
            }
        }
        for add_reg in self.list(section, "AddReg") {
            if self.use_section(&add_reg, &format!("AddReg in [{section}]")) {
                self.add_reg(&add_reg, None);
            }
        }
        for interface in self.inf.ini.values(section, "AddInterface") {
            if let Some(install) = interface.get(2).map(|v| self.expand(v)).filter(|v| !v.is_empty()) {
                if self.use_section(&install, &format!("AddInterface in [{section}]")) {
                    self.directives(&install);
                }
            }
        }
    }

    /// `DestinationDirs` entry for a file list: `(dirid, subdirectory)`.
    fn destination(&mut self, list: Option<&str>) -> Option<(u32, String)> {
        let entry = list
            .map(|l| self.list("DestinationDirs", l))
            .filter(|v| !v.is_empty())
            .or_else(|| Some(self.list("DestinationDirs", "DefaultDestDir")).filter(|v| !v.is_empty()));
        let Some(entry) = entry else {
            self.report(
                1275,
                format!("[{}] has no [DestinationDirs] entry and there is no DefaultDestDir", list.unwrap_or("@file")),
            );
            return None;
        };
        let dirid = parse_number(&entry[0]).unwrap_or(0);
        Some((dirid, entry.get(1).cloned().unwrap_or_default()))
    }

    fn copy_section(&mut self, list: &str) {
        let mut seen = HashSet::new();
        for line in self.lines(list) {
            let values: Vec<String> = line.values.iter().map(|v| self.expand(v)).collect();
            let destination = values.first().cloned().unwrap_or_default();
            let source = values.get(1).filter(|s| !s.is_empty()).cloned().unwrap_or_else(|| destination.clone());
            if !seen.insert(lower(&destination)) {
                self.report(1294, format!("[{list}]: {destination} listed twice"));
            }
            self.copy_file(&destination, &source, Some(list));
        }
    }

    /// One file copy: its source in the package, its destination.
    fn copy_file(&mut self, destination: &str, source: &str, list: Option<&str>) {
        let Some((dirid, subdirectory)) = self.destination(list) else {
            return;
        };
        if dirid != DIRID_DRIVER_STORE {
            self.report(1322, format!("{destination} is copied to DIRID {dirid}, not 13"));
        }
        let Some(source_path) = self.source_path(source) else {
            return;
        };
        let trim = |p: &str| lower(p.trim_matches('\\'));
        if dirid == DIRID_DRIVER_STORE
            && (trim(&subdirectory) != trim(&source_path) || !destination.eq_ignore_ascii_case(source))
        {
            let copy =
                if subdirectory.is_empty() { destination.to_owned() } else { format!("{subdirectory}\\{destination}") };
            self.report(1100, format!("{source} (package folder `{source_path}`) is copied as `{copy}`"));
        }
        let path =
            if subdirectory.is_empty() { destination.to_owned() } else { format!("{subdirectory}\\{destination}") };
        self.copied.push((dirid, lower(&path)));
    }

    /// The folder of `file` in the package, from `[SourceDisksFiles]` and
    /// `[SourceDisksNames]` (or their `.amd64` forms).
    fn source_path(&mut self, file: &str) -> Option<String> {
        let entry = ["SourceDisksFiles.amd64", "SourceDisksFiles"].iter().find_map(|section| {
            self.lines(section).into_iter().find(|l| l.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(file)))
        });
        let Some(entry) = entry else {
            self.report(1230, format!("{file} is copied but not listed in [SourceDisksFiles]"));
            return None;
        };
        let disk = entry.values.first().map(|d| self.expand(d)).unwrap_or_default();
        let names = ["SourceDisksNames.amd64", "SourceDisksNames"].iter().find_map(|section| {
            self.lines(section).into_iter().find(|l| l.key.as_deref().is_some_and(|k| k.trim() == disk))
        });
        let Some(names) = names else {
            self.report(1273, format!("{file} is on disk `{disk}`, which [SourceDisksNames] does not list"));
            return None;
        };
        let disk_path = names.values.get(3).map(|p| self.expand(p)).unwrap_or_default();
        let subdirectory = entry.values.get(1).map(|p| self.expand(p)).unwrap_or_default();
        Some(
            [disk_path, subdirectory]
                .iter()
                .map(|p| p.trim_matches('\\'))
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("\\"),
        )
    }

    /// The lines of an add-registry section; `service` when it belongs to
    /// a service install section (HKR is then the service key).
    fn add_reg(&mut self, section: &str, service: Option<&str>) {
        for line in self.lines(section) {
            let fields: Vec<String> = line.values.iter().map(|v| self.expand(v)).collect();
            let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
            let (root, subkey, name) = (field(0), field(1), field(2));
            if !root.eq_ignore_ascii_case("HKR") {
                self.report(1320, format!("[{section}]: {root}\\{subkey} is not under HKR"));
            }
            if let Some(service) = service {
                let parameters = lower(&subkey);
                if parameters != "parameters" && !parameters.starts_with("parameters\\") {
                    self.report(
                        1323,
                        format!("[{section}]: service {service} writes {name} in HKR `{subkey}`, not under Parameters"),
                    );
                }
            }
            let flags = parse_number(&field(3)).unwrap_or(0);
            if flags & FLG_ADDREG_APPEND != 0 {
                self.report(1305, format!("[{section}]: {name} is appended to (FLG_ADDREG_APPEND)"));
            }
            if INSTALLER_VALUES.iter().any(|v| v.eq_ignore_ascii_case(&name)) {
                self.report(1303, format!("[{section}]: {name} registers an installer"));
            }
        }
    }

    fn services(&mut self, dd: &str) {
        let section = format!("{dd}.Services");
        let services = self.inf.ini.values(&section, "AddService");
        let mut associated = Vec::new();
        for fields in &services {
            let fields: Vec<String> = fields.iter().map(|v| self.expand(v)).collect();
            let name = fields.first().cloned().unwrap_or_default();
            let flags = fields.get(1).and_then(|f| parse_number(f)).unwrap_or(0);
            if flags & SPSVCINST_ASSOCSERVICE != 0 {
                associated.push(name.clone());
            }
            let Some(install) = fields.get(2).filter(|s| !s.is_empty()) else {
                continue;
            };
            self.used.insert(lower(install));
            if !self.exists(install) {
                self.report(2006, format!("service {name}: install section [{install}] not found"));
                continue;
            }
            self.service_install(&name, install);
            if let Some(event_log) = fields.get(3).filter(|s| !s.is_empty()) {
                self.use_section(event_log, &format!("AddService {name}"));
            }
        }
        match associated.len() {
            0 => self.report(1296, format!("[{dd}] has no service with SPSVCINST_ASSOCSERVICE in [{section}]")),
            1 => {}
            _ => self.report(1211, format!("[{section}]: {} are all associated services", associated.join(", "))),
        }
    }

    fn service_install(&mut self, service: &str, install: &str) {
        for key in ["ServiceType", "StartType", "ErrorControl", "ServiceBinary"] {
            if self.list(install, key).is_empty() {
                self.report(1289, format!("[{install}] has no {key}"));
            }
        }
        for add_reg in self.list(install, "AddReg") {
            if self.use_section(&add_reg, &format!("AddReg in [{install}]")) {
                self.add_reg(&add_reg, Some(service));
            }
        }
        let Some(binary) = self.list(install, "ServiceBinary").into_iter().next() else {
            return;
        };
        match dirid_path(&binary) {
            None => self.report(2085, format!("[{install}] ServiceBinary `{binary}` is not under a DIRID")),
            Some((dirid, path)) => {
                if !self.copied.contains(&(dirid, lower(&path))) {
                    self.report(2084, format!("[{install}] ServiceBinary `{binary}` is not a file the INF copies"));
                }
            }
        }
    }

    /// Is `[Version]`'s class one of the system-defined setup classes?
    fn system_class(&self) -> bool {
        let guid = self.list("Version", "ClassGuid").join(",");
        WELL_KNOWN_CLASSES.iter().any(|(_, g)| g.eq_ignore_ascii_case(&guid))
    }

    /// Legacy and non-additive directives and sections, anywhere.
    fn legacy(&mut self) {
        for (section, lines) in &self.inf.ini.sections {
            let name = lower(section);
            if name.ends_with(".coinstallers") || name.ends_with(".logconfigoverride") {
                self.findings.push(Finding { code: 1300, message: format!("[{section}] is a legacy section") });
            }
            if (name == "classinstall32" || name.starts_with("classinstall32.")) && self.system_class() {
                self.findings.push(Finding { code: 1285, message: format!("[{section}] for a system-defined class") });
            }
            for line in lines {
                let Some(key) = &line.key else { continue };
                if let Some((directive, code)) = LEGACY_DIRECTIVES.iter().find(|(d, _)| d.eq_ignore_ascii_case(key)) {
                    self.findings.push(Finding { code: *code, message: format!("[{section}] uses {directive}") });
                }
            }
        }
    }

    /// Files listed in `[SourceDisksFiles]`: no catalogs, no compressed names.
    fn source_files(&mut self) {
        for section in ["SourceDisksFiles", "SourceDisksFiles.amd64"] {
            for line in self.lines(section) {
                let file = line.key.unwrap_or_default();
                if is_catalog(&file) {
                    self.report(1213, format!("[{section}] lists the catalog {file}"));
                }
                if file.ends_with('_') {
                    self.report(1231, format!("[{section}] lists the compressed name {file}"));
                }
            }
        }
    }

    fn unused(&mut self) {
        for (section, _) in &self.inf.ini.sections {
            if !self.used.contains(&lower(section)) {
                self.findings.push(Finding { code: 2083, message: format!("[{section}] is not used") });
            }
        }
    }
}

/// Every rule `inf` breaks.
fn findings(inf: &Inf) -> Vec<Finding> {
    let mut check = Check::new(inf);
    check.encoding();
    check.version();
    check.structure();
    check.source_files();
    check.legacy();
    let models = check.models();
    let installs: BTreeSet<String> = models.iter().map(|(install, _)| install.clone()).collect();
    for install in &installs {
        check.install(install);
    }
    check.unused();
    check.findings
}

/// The codes of [`findings`].
fn codes(text: &str) -> BTreeSet<u16> {
    findings(&Inf::from_text(text)).into_iter().map(|f| f.code).collect()
}

/// `inf/<name>.inx` stamped as `cargo xtask package` stamps it (`$ARCH$`
/// and `DriverVer`; the tests of `xtask/src/package.rs` check that stamp).
fn stamped(name: &str) -> String {
    let path = workspace().join("inf").join(format!("{name}.inx"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.replace("$ARCH$", "amd64")
        .lines()
        .map(|line| if line.trim_start().starts_with("DriverVer") { "DriverVer = 03/07/2025,0.1.0.0" } else { line })
        .collect::<Vec<_>>()
        .join("\r\n")
}

const INFS: [&str; 2] = ["capdma_bus", "capdma_avstream"];

#[test]
fn both_infs_pass_every_rule() {
    for name in INFS {
        let found = findings(&Inf::from_text(&stamped(name)));
        assert!(found.is_empty(), "{name}.inf: {found:#?}");
    }
}

#[test]
fn an_unstamped_inx_is_refused() {
    for name in INFS {
        let inx = std::fs::read_to_string(workspace().join("inf").join(format!("{name}.inx"))).unwrap();
        let found = codes(&inx);
        assert!(found.contains(&1274) && found.contains(&1234), "{name}.inx: {found:?}");
    }
}

/// A broken copy of an INF: `(which INF, text to find, its replacement)`;
/// every occurrence is replaced.
type Breakage = (&'static str, &'static str, &'static str);

/// For each rule, INF texts that break it.
const BROKEN: &[(u16, &[Breakage])] = &[
    (1001, &[("capdma_bus", "Signature   = \"$WINDOWS NT$\"", "Signature = \"$Chicago$\"")]),
    (1003, &[("capdma_bus", "capdma PCI Video Capture Card", "capdma PCI Vidéo Capture Card")]),
    (1010, &[("capdma_bus", "{4d36e97d-e325-11ce-bfc1-08002be10318}", "4d36e97d-e325-11ce-bfc1-08002be10318")]),
    (1011, &[("capdma_bus", "%ManufacturerName% = Standard,", "%ManufacturerName% = ,")]),
    (1100, &[
        ("capdma_bus", "DefaultDestDir = 13", "DefaultDestDir = 13,sub"),
        ("capdma_bus", "[capdma_bus_CopyFiles]\ncapdma_bus.sys", "[capdma_bus_CopyFiles]\nrenamed.sys, capdma_bus.sys"),
    ]),
    (1203, &[
        ("capdma_bus", "CopyFiles = capdma_bus_CopyFiles", "CopyFiles = capdma_bus_Files"),
        ("capdma_avstream", "AddReg = capdma_avstream_Filter_Interface_AddReg", "AddReg = Missing_AddReg"),
    ]),
    (1204, &[("capdma_bus", "ProviderName          = \"capdma\"", "ProviderName = \"Microsoft Corporation\"")]),
    (1209, &[("capdma_bus", "[capdma_bus_CopyFiles]", "[capdma_bus_CopyFiles]\n[Capdma_Bus_CopyFiles]")]),
    (1211, &[("capdma_bus", "AddService = capdma_bus, 0x00000002, capdma_bus_Service_Install", "AddService = capdma_bus, 0x00000002, capdma_bus_Service_Install\nAddService = other, 0x00000002, capdma_bus_Service_Install")]),
    (1212, &[("capdma_bus", "[DestinationDirs]", "[DefaultInstall.NTamd64]\n[DestinationDirs]")]),
    (1213, &[("capdma_bus", "capdma_bus.sys = 1,,", "capdma_bus.sys = 1,,\ncapdma_bus.cat = 1,,")]),
    (1214, &[("capdma_bus", "CatalogFile = capdma_bus.cat", "CatalogFile = sub\\capdma_bus.cat")]),
    (1217, &[("capdma_bus", "0.1.0.0", "0.1.0"), ("capdma_bus", "0.1.0.0", "0.0.0.0"), ("capdma_bus", "0.1.0.0", "1.2.3.65535")]),
    (1218, &[("capdma_bus", "03/07/2025", "2025-03-07"), ("capdma_bus", "03/07/2025", "3/7/2025")]),
    (1230, &[("capdma_bus", "capdma_bus.sys = 1,,", "other.sys = 1,,")]),
    (1231, &[("capdma_bus", "capdma_bus.sys = 1,,", "capdma_bus.sys = 1,,\ncapdma_bus.sy_ = 1,,")]),
    (1233, &[("capdma_avstream", "CatalogFile = capdma_avstream.cat", "")]),
    (1234, &[("capdma_bus", "DriverVer = 03/07/2025,0.1.0.0", "")]),
    (1235, &[("capdma_bus", "DisplayName   = %capdma_bus.ServiceDesc%", "DisplayName   = %capdma_bus.Service%")]),
    (1261, &[("capdma_bus", "[capdma_bus_Device.NT]", "[capdma_bus_Device.NT5]")]),
    (1271, &[("capdma_bus", "= capdma_bus_Device, PCI", "= , PCI")]),
    (1273, &[("capdma_bus", "capdma_bus.sys = 1,,", "capdma_bus.sys = 2,,")]),
    (1274, &[("capdma_avstream", "Standard, NTamd64", "Standard, NT$ARCH$")]),
    (1275, &[("capdma_bus", "DefaultDestDir = 13", "")]),
    (1280, &[("capdma_avstream", "Class       = Camera", "Class       = System")]),
    (1281, &[("capdma_bus", "{4d36e97d-e325-11ce-bfc1-08002be10318}", "{ca3e7ab9-b4c3-4ae6-8251-579ef933890f}")]),
    (1285, &[("capdma_bus", "[Strings]", "[ClassInstall32]\nAddReg = capdma_bus_MSI_AddReg\n[Strings]")]),
    (1286, &[("capdma_bus", "Class       = System", "Class       = CapdmaVideoCaptureBusDeviceClass")]),
    (1287, &[("capdma_bus", "Standard, NTamd64.10.0...19041", "Standard, NTamd64.10.x...19041"), ("capdma_bus", "Standard, NTamd64.10.0...19041", "Standard, NTamd64.10.0...19041, NTsparc")]),
    (1288, &[("capdma_avstream", "NTamd64.10.0...19041", "NTamd64.10.0...10240")]),
    (1289, &[("capdma_bus", "ServiceType   = 1               ; SERVICE_KERNEL_DRIVER", "")]),
    (1294, &[
        ("capdma_bus", "[capdma_bus_CopyFiles]\ncapdma_bus.sys", "[capdma_bus_CopyFiles]\ncapdma_bus.sys\ncapdma_bus.sys"),
        ("capdma_bus", "capdma_bus_Device, PCI\\VEN_CAFE&DEV_CA9D", "capdma_bus_Device, PCI\\VEN_CAFE&DEV_CA9D, PCI\\VEN_CAFE&DEV_CA9D"),
    ]),
    (1296, &[("capdma_bus", "AddService = capdma_bus, 0x00000002,", "AddService = capdma_bus, 0x00000000,")]),
    (1297, &[("capdma_avstream", "capdma_avstream_Device, CAPDMA\\Channel", "capdma_avstream_Device")]),
    (1300, &[
        ("capdma_bus", "[capdma_bus_CopyFiles]", "[capdma_bus_Device.NT.CoInstallers]\nAddReg = capdma_bus_MSI_AddReg\n[capdma_bus_CopyFiles]"),
        ("capdma_bus", "CopyFiles = capdma_bus_CopyFiles", "CopyFiles = capdma_bus_CopyFiles\nLogConfig = capdma_bus_LogConfig"),
        ("capdma_bus", "[Strings]", "[capdma_bus_Device.NT.LogConfigOverride]\n[Strings]"),
    ]),
    (1301, &[("capdma_avstream", "CopyFiles = capdma_avstream_CopyFiles", "CopyFiles = capdma_avstream_CopyFiles\nRegisterDlls = capdma_avstream_Dlls")]),
    (1303, &[("capdma_avstream", "HKR, , CLSID, , %Proxy.CLSID%", "HKR, , CLSID, , %Proxy.CLSID%\nHKR, , CoInstallers32, 0x00010000, \"x.dll\"")]),
    (1305, &[("capdma_bus", "HKR, , DmaMode, 0x00010003, 0", "HKR, , DmaMode, 0x00010003, 0\nHKR, , UpperFilters, 0x00010008, filter")]),
    (1308, &[("capdma_bus", "AddReg = capdma_bus_MSI_AddReg,", "DelReg = capdma_bus_MSI_AddReg\nAddReg = capdma_bus_MSI_AddReg,")]),
    (1309, &[("capdma_bus", "[capdma_bus_Device.NT.Services]", "[capdma_bus_Device.NT.Services]\nDelService = oldservice")]),
    (1319, &[("capdma_avstream", "Include   = ks.inf, kscaptur.inf\n", "")]),
    (1320, &[("capdma_bus", "HKR, , DmaMode, 0x00010003, 0", "HKLM, System\\CurrentControlSet\\Services\\capdma_bus, DmaMode, 0x00010003, 0")]),
    (1322, &[("capdma_bus", "DefaultDestDir = 13", "DefaultDestDir = 12")]),
    (1323, &[("capdma_bus", "HKR, Parameters, DmaRemappingCompatible", "HKR, , DmaRemappingCompatible")]),
    (1324, &[("capdma_bus", "PnpLockdown = 1", "PnpLockdown = 0"), ("capdma_avstream", "PnpLockdown = 1", "")]),
    (2006, &[("capdma_avstream", "0x00000002, capdma_avstream_Service_Install", "0x00000002, capdma_avstream_Service")]),
    (2083, &[("capdma_bus", "[Strings]", "[Leftover_AddReg]\nHKR, , X, 0x00010001, 1\n[Strings]")]),
    (2084, &[("capdma_bus", "ServiceBinary = %13%\\capdma_bus.sys", "ServiceBinary = %13%\\capdma_bus2.sys"), ("capdma_bus", "ServiceBinary = %13%\\capdma_bus.sys", "ServiceBinary = %12%\\capdma_bus.sys")]),
    (2085, &[("capdma_bus", "ServiceBinary = %13%\\capdma_bus.sys", "ServiceBinary = C:\\drivers\\capdma_bus.sys")]),
];

#[test]
fn every_rule_fails_on_its_broken_inf() {
    let mut missed = Vec::new();
    for (code, breakages) in BROKEN {
        for (name, find, replace) in *breakages {
            let good = stamped(name).replace("\r\n", "\n");
            assert!(good.contains(find), "rule {code}: `{find}` is not in {name}.inf");
            let found = codes(&good.replace(find, replace));
            if !found.contains(code) {
                missed.push(format!("rule {code} on {name}.inf with `{find}` -> `{replace}` found only {found:?}"));
            }
        }
    }
    assert!(missed.is_empty(), "{missed:#?}");
}

#[test]
fn every_rule_has_a_broken_inf_and_a_line_in_the_docs() {
    let tested: BTreeSet<u16> = BROKEN.iter().map(|(code, _)| *code).collect();
    let listed: BTreeSet<u16> = RULES.iter().map(|(code, _)| *code).collect();
    assert_eq!(tested, listed, "RULES and BROKEN list different codes");
    let docs = std::fs::read_to_string(workspace().join("docs/inf-rules.md")).expect("docs/inf-rules.md");
    for (code, _) in RULES {
        assert!(docs.contains(&format!("| {code} |")), "docs/inf-rules.md has no row for {code}");
    }
}

#[test]
fn reader_joins_continued_lines() {
    let inf = Inf::from_text("[A]\nKey = one, \\\n   two ; comment\n");
    assert_eq!(inf.ini.values("A", "Key"), vec![vec!["one".to_owned(), "two".to_owned()]]);
}
