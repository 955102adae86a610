//! `inf/capdma_bus.inx` and `inf/capdma_avstream.inx` agree with the code:
//! hardware IDs, service names, the `.sys` names the Windows build
//! produces (`<[lib] name>.sys`, see `xtask/src/cross_build.rs`), the KS
//! interface categories, and the registry value names the bus reads.
//!
//! The INF files are read with the small INI reader of `inf/mod.rs`, shared
//! with `inf_rules.rs`, the checks `infverif /w` makes.
mod inf;

use capdma_interface::identity::{
    AVSTREAM_SERVICE_NAME, BUS_SERVICE_NAME, CHILD_HARDWARE_ID, FILTER_CATEGORIES, FRIENDLY_NAME, PCI_HARDWARE_ID,
    REG_DMA_MODE,
};
use inf::{number, workspace, Ini, Inf};
use std::collections::HashMap;

/// `CLSID_Proxy` (ksproxy.ax), which the filter's interfaces name so that
/// DirectShow loads the KS proxy for them.
const KS_PROXY_CLSID: &str = "{17CCA71B-ECD7-11D0-B908-00A0C9223196}";
/// The System setup class.
const SYSTEM_CLASS_GUID: &str = "{4d36e97d-e325-11ce-bfc1-08002be10318}";
/// The Camera setup class.
const CAMERA_CLASS_GUID: &str = "{ca3e7ab9-b4c3-4ae6-8251-579ef933890f}";
/// `FLG_ADDREG_TYPE_DWORD`: the type bits of an `AddReg` flags field for `REG_DWORD`.
const FLG_ADDREG_TYPE_DWORD: u32 = 0x0001_0001;
/// Mask of the type bits (`FLG_ADDREG_TYPE_MASK` and `FLG_ADDREG_BINVALUETYPE`).
const FLG_ADDREG_TYPE_MASK: u32 = 0xFFFF_0001;

/// `[lib] name` of a driver package: the Windows build produces `<name>.sys`.
fn lib_name(package_dir: &str) -> String {
    let manifest = Ini::read(&workspace().join(package_dir).join("Cargo.toml"));
    manifest.value("lib", "name")
}

/// The one install section of an INF and its hardware IDs.
fn only_model(inf: &Inf) -> (String, Vec<String>) {
    let models = inf.models();
    let install = &models[0].0;
    assert!(models.iter().all(|(i, _)| i == install), "one install section expected: {models:?}");
    (install.clone(), models.into_iter().flat_map(|(_, ids)| ids).collect())
}

/// Checks the service installation: name, kernel driver, demand start,
/// and a binary that is the image the Windows build produces.
fn check_service(inf: &Inf, install: &str, service: &str, package_dir: &str) -> String {
    let services = inf.services(install);
    assert_eq!(services.len(), 1, "{services:?}");
    let (name, section) = &services[0];
    assert_eq!(name, service, "service name");
    assert_eq!(number(&inf.value(section, "ServiceType")), 1, "SERVICE_KERNEL_DRIVER");
    assert_eq!(number(&inf.value(section, "StartType")), 3, "SERVICE_DEMAND_START");
    let image = format!("{}.sys", lib_name(package_dir));
    assert_eq!(image, format!("{service}.sys"), "the service name is the image name");
    let binary = inf.value(section, "ServiceBinary");
    assert!(binary.eq_ignore_ascii_case(&format!("%13%\\{image}")), "ServiceBinary `{binary}` is not %13%\\{image}");
    // The image is copied and has a source.
    let copied: Vec<String> = inf
        .list(&format!("{install}.NT"), "CopyFiles")
        .iter()
        .flat_map(|s| inf.ini.section(s))
        .flat_map(|l| l.values)
        .collect();
    assert!(copied.iter().any(|f| f.eq_ignore_ascii_case(&image)), "{image} not in CopyFiles: {copied:?}");
    assert!(
        inf.ini
            .section("SourceDisksFiles")
            .iter()
            .any(|l| l.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(&image))),
        "{image} not in [SourceDisksFiles]"
    );
    assert_eq!(number(&inf.value("DestinationDirs", "DefaultDestDir")), 13, "run from the driver store");
    section.clone()
}

/// A `REG_DWORD` `AddReg` line's flags field.
fn is_dword(flags: &str) -> bool {
    number(flags) & FLG_ADDREG_TYPE_MASK == FLG_ADDREG_TYPE_DWORD
}

#[test]
fn reader_tolerates_comments_quotes_and_case() {
    let ini = Ini::parse(
        "; leading comment\n[Sec.One] ; trailing\nKey = \"a;b\", c ; note\n  bare, \"x,y\"\n[sec.one]\nkey=d\n[Other]\n",
    );
    let values = ini.values("SEC.ONE", "KEY");
    assert_eq!(values, vec![vec!["a;b".to_owned(), "c".to_owned()], vec!["d".to_owned()]]);
    let bare: Vec<_> = ini.section("sec.one").into_iter().filter(|l| l.key.is_none()).collect();
    assert_eq!(bare[0].values, ["bare", "x,y"]);
    assert!(ini.has_section("other"));
    let inf = Inf { ini, strings: HashMap::from([("name".to_owned(), "v".to_owned())]), text: String::new() };
    assert_eq!(inf.expand("%NAME%\\x %13% 100%%"), "v\\x %13% 100%");
}

#[test]
fn bus_inf_installs_on_the_pci_hardware_id() {
    let inf = Inf::load("capdma_bus.inx");
    assert_eq!(inf.value("Version", "Class"), "System");
    assert!(inf.value("Version", "ClassGuid").eq_ignore_ascii_case(SYSTEM_CLASS_GUID));
    let (install, ids) = only_model(&inf);
    assert!(ids.iter().any(|id| id.eq_ignore_ascii_case(PCI_HARDWARE_ID)), "{PCI_HARDWARE_ID} not in {ids:?}");
    assert!(inf.ini.has_section(&format!("{install}.NT")));
}

#[test]
fn bus_inf_service_matches_identity_and_the_built_image() {
    let inf = Inf::load("capdma_bus.inx");
    let (install, _) = only_model(&inf);
    let service = check_service(&inf, &install, BUS_SERVICE_NAME, "bus-driver");
    // DMA remapping opt-in, the documented per-driver form: the service
    // installation's AddReg, `HKR,Parameters,DmaRemappingCompatible,0x00010001,1`.
    let remapping = inf.add_reg(&service);
    assert!(
        remapping.iter().any(|l| l.len() == 5
            && l[0].eq_ignore_ascii_case("HKR")
            && l[1].eq_ignore_ascii_case("Parameters")
            && l[2] == "DmaRemappingCompatible"
            && is_dword(&l[3])
            && number(&l[4]) == 1),
        "no DmaRemappingCompatible=1 in the service AddReg: {remapping:?}"
    );
}

#[test]
fn bus_inf_hardware_key_has_the_dma_mode_default_and_msi() {
    let inf = Inf::load("capdma_bus.inx");
    let (install, _) = only_model(&inf);
    assert_eq!(REG_DMA_MODE, capdma_bus::config::REG_DMA_MODE, "identity and config agree");
    let hw = inf.add_reg(&format!("{install}.NT.HW"));
    // HKR with no subkey in a .HW section is the `Device Parameters` key,
    // which the driver opens with PLUGPLAY_REGKEY_DEVICE.
    let dma_mode: Vec<_> =
        hw.iter().filter(|l| l.get(2).is_some_and(|n| n.eq_ignore_ascii_case(REG_DMA_MODE))).collect();
    assert_eq!(dma_mode.len(), 1, "one DmaMode value: {hw:?}");
    let line = dma_mode[0];
    assert_eq!(line[2], REG_DMA_MODE, "value names are compared case-insensitively by Windows, but keep the spelling");
    assert!(line[0].eq_ignore_ascii_case("HKR") && line[1].is_empty(), "DmaMode under Device Parameters: {line:?}");
    assert!(is_dword(&line[3]), "DmaMode is a REG_DWORD: {line:?}");
    assert_eq!(number(&line[4]), capdma_bus::config::DmaModeOverride::Auto.to_registry(), "default auto");
    assert!(
        hw.iter().any(|l| l.len() == 5
            && l[1].eq_ignore_ascii_case("Interrupt Management\\MessageSignaledInterruptProperties")
            && l[2] == "MSISupported"
            && is_dword(&l[3])
            && number(&l[4]) == 1),
        "MSI not enabled: {hw:?}"
    );
}

#[test]
fn avstream_inf_installs_on_the_child_hardware_id_with_ks() {
    let inf = Inf::load("capdma_avstream.inx");
    assert_eq!(inf.value("Version", "Class"), "Camera");
    assert!(inf.value("Version", "ClassGuid").eq_ignore_ascii_case(CAMERA_CLASS_GUID));
    let (install, ids) = only_model(&inf);
    assert!(ids.iter().any(|id| id.eq_ignore_ascii_case(CHILD_HARDWARE_ID)), "{CHILD_HARDWARE_ID} not in {ids:?}");
    let section = format!("{install}.NT");
    let includes = inf.list(&section, "Include");
    for needed in ["ks.inf", "kscaptur.inf"] {
        assert!(includes.iter().any(|i| i.eq_ignore_ascii_case(needed)), "Include lacks {needed}: {includes:?}");
    }
    let needs = inf.list(&section, "Needs");
    for needed in ["KS.Registration", "KSCAPTUR.Registration.NT"] {
        assert!(needs.iter().any(|n| n.eq_ignore_ascii_case(needed)), "Needs lacks {needed}: {needs:?}");
    }
}

#[test]
fn avstream_inf_service_matches_identity_and_the_built_image() {
    let inf = Inf::load("capdma_avstream.inx");
    let (install, _) = only_model(&inf);
    check_service(&inf, &install, AVSTREAM_SERVICE_NAME, "avstream-driver");
}

#[test]
fn avstream_inf_interfaces_are_the_filter_categories() {
    let inf = Inf::load("capdma_avstream.inx");
    let (install, _) = only_model(&inf);
    let interfaces = inf.ini.values(&format!("{install}.NT.Interfaces"), "AddInterface");
    let categories: Vec<String> = interfaces
        .iter()
        .map(|v| inf.expand(&v[0]).trim().trim_start_matches('{').trim_end_matches('}').to_ascii_uppercase())
        .collect();
    let expected: Vec<String> = FILTER_CATEGORIES.iter().map(|g| g.to_ascii_uppercase()).collect();
    assert_eq!(categories, expected, "AddInterface categories, in FILTER_CATEGORIES order");
    for fields in &interfaces {
        assert_eq!(inf.expand(&fields[1]), "GLOBAL", "reference string of the KSNAME_Filter factory");
        let section = inf.expand(&fields[2]);
        let reg = inf.add_reg(&section);
        let named = |name: &str| {
            reg.iter().find(|l| l.get(2).is_some_and(|n| n.eq_ignore_ascii_case(name))).map(|l| l[4].clone())
        };
        assert_eq!(named("FriendlyName").as_deref(), Some(FRIENDLY_NAME), "[{section}] FriendlyName");
        assert!(
            named("CLSID").is_some_and(|c| c.eq_ignore_ascii_case(KS_PROXY_CLSID)),
            "[{section}] CLSID is not the KS proxy: {reg:?}"
        );
    }
}
