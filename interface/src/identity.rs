//! Device identity: the one documented place for the IDs, names and
//! categories that the code, the INF files and the tests must agree on
//! (a test in `tests/` reads `inf/*.inx` and compares).

/// The PCI hardware ID `capdma_bus.sys` installs on.
///
/// **Placeholder vendor/device:** `VEN_1D0F`-style IDs belong to their
/// vendors; replace `VEN_CAFE&DEV_CA9D` with your board's IDs here and in
/// `inf/capdma_bus.inx` (the consistency test fails until both agree).
pub const PCI_HARDWARE_ID: &str = r"PCI\VEN_CAFE&DEV_CA9D";

/// The hardware ID the bus reports for each channel's child PDO
/// (`BusQueryHardwareIDs`), matched by `inf/capdma_avstream.inx`.
pub const CHILD_HARDWARE_ID: &str = r"CAPDMA\Channel";
/// The child's device ID (`BusQueryDeviceID`).
pub const CHILD_DEVICE_ID: &str = r"CAPDMA\Channel";
/// The child's compatible ID (`BusQueryCompatibleIDs`).
pub const CHILD_COMPATIBLE_ID: &str = r"CAPDMA\CaptureChannel";
/// The child's device text (`DeviceTextDescription`); the instance ID is the channel number.
pub const CHILD_DEVICE_TEXT: &str = "capdma capture channel";

/// Service (and image) name of the bus driver: `capdma_bus.sys`.
pub const BUS_SERVICE_NAME: &str = "capdma_bus";
/// Service (and image) name of the AVStream minidriver: `capdma_avstream.sys`.
pub const AVSTREAM_SERVICE_NAME: &str = "capdma_avstream";

/// The friendly name of the capture filter's device interfaces.
pub const FRIENDLY_NAME: &str = "capdma Video Capture";

/// `KSCATEGORY_CAPTURE` {65E8773D-8F56-11D0-A3B9-00A0C9223196} (ks.h).
pub const KSCATEGORY_CAPTURE: &str = "65E8773D-8F56-11D0-A3B9-00A0C9223196";
/// `KSCATEGORY_VIDEO` {6994AD05-93EF-11D0-A3CC-00A0C9223196} (ksmedia.h).
pub const KSCATEGORY_VIDEO: &str = "6994AD05-93EF-11D0-A3CC-00A0C9223196";
/// `KSCATEGORY_VIDEO_CAMERA` {E5323777-F976-4F5B-9B55-B94699C46E44} (ksmedia.h).
pub const KSCATEGORY_VIDEO_CAMERA: &str = "E5323777-F976-4F5B-9B55-B94699C46E44";

/// The three categories the capture filter registers under, in order.
pub const FILTER_CATEGORIES: [&str; 3] = [KSCATEGORY_CAPTURE, KSCATEGORY_VIDEO, KSCATEGORY_VIDEO_CAMERA];

/// The registry value (`REG_DWORD`, under the device's `Device Parameters`
/// key) that overrides the DMA mode: 0 auto, 1 scatter-gather, 2 common-buffer.
pub const REG_DMA_MODE: &str = "DmaMode";
