//! What a run of the simulated machine is made of.
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;

use capdma_bus::config::DmaModeOverride;
use capdma_interface::format::{PixelFormat, MAX_HEIGHT, MAX_WIDTH};

use crate::board::BoardKind;
use crate::memory::ContiguousFailure;
use crate::pnp::StackLayout;
use crate::y4m::Y4mVideo;

/// A run's configuration. [`MachineConfig::default`] is the main job's:
/// legacy board, 1920x1080 YUY2 at 60 fps, 300 frames, one channel.
#[derive(Clone, Debug)]
#[allow(clippy::struct_excessive_bools, reason = "independent switches of the machine, each a flag of `stream`")]
pub struct MachineConfig {
    /// The board model.
    pub board: BoardKind,
    /// The `DmaMode` registry override the bus starts with.
    pub mode: DmaModeOverride,
    /// Capture channels (1..=8); one child PDO and pin each.
    pub channels: u32,
    /// Pixel format of every channel.
    pub format: PixelFormat,
    /// Width in pixels (even, 2..=4096).
    pub width: u32,
    /// Height in pixel rows (even, 2..=2160).
    pub height: u32,
    /// The application's frame stride in bytes (`biWidth`-derived); `None`: the line's bytes.
    pub stride: Option<u32>,
    /// Frames per second the board captures.
    pub fps: u32,
    /// Frames the board captures per channel.
    pub frames: u32,
    /// Frame buffers the application keeps queued per channel.
    pub app_buffers: u32,
    /// Time the application holds each delivered frame before requeueing
    /// it, in 100-ns units (0: it hands it straight back).
    pub app_hold_100ns: u64,
    /// The `MaxMappingByteCount` registry override (bytes).
    pub max_mapping_bytes: Option<u32>,
    /// The board drives only 32-bit addresses.
    pub dma32: bool,
    /// RAM extends above 4 GiB and application buffers are placed there.
    pub high_memory: bool,
    /// Buffer alignment the board needs (bytes, power of two); `None`: the board model's default.
    pub alignment: Option<u32>,
    /// Map registers `IoGetDmaAdapter` grants.
    pub map_registers: u32,
    /// Slots of the common-buffer ring (the `SlotCount` registry value).
    pub slot_count: u32,
    /// Seed of the page placement and the test pattern.
    pub seed: u64,
    /// A clip to capture instead of the test pattern.
    pub source: Option<Rc<Y4mVideo>>,
    /// Keep channel 0's delivered frames for `--output` / `--snapshot`.
    pub keep_frames: bool,
    /// Capture cards in the machine (1..=4), each with `channels` channels,
    /// its own bus driver and child stacks; their interrupts share one line.
    pub cards: u32,
    /// Filter drivers in every card's bus and child stacks (default: none).
    pub stack: StackLayout,
    /// Fault injection for contiguous (common-buffer) allocations: applies
    /// from machine creation on.
    pub contiguous_failure: Option<ContiguousFailure>,
    /// The `DescriptorRingEntries` registry value; `None`: the driver's default.
    pub descriptor_ring_entries: Option<u32>,
    /// The `CompletionQueueEntries` registry value; `None`: the driver's default.
    pub cq_entries: Option<u32>,
    /// Which bus driver runs: the portable core on the host, or the real
    /// image in the emulated kernel.
    pub drivers: Drivers,
    /// With the AVStream image (`--drivers images`): `KSSTREAM_HEADER.Size`
    /// of the stream headers the application sends, bytes (at least
    /// `sizeof(KSSTREAM_HEADER)`, 56, at most a page); `None`: the header
    /// and a `KS_FRAME_INFO`, as a video capture client sends them
    /// (`image_pins::VIDEO_HEADER_SIZE`). Without a
    /// `KS_FRAME_INFO` the application has no picture number and tells the
    /// frames apart by their `PresentationTime`.
    pub stream_header_size: Option<u32>,
    /// With `--drivers images`: the application assigns its graph's master
    /// clock to each pin (`KSPROPERTY_STREAM_MASTERCLOCK`) before the pin
    /// leaves `KSSTATE_STOP`; the AVStream image takes it
    /// (`KsPinGetReferenceClockInterface`) and stamps the frames it delivers
    /// with its stream time, which the emulated KS and the application check
    /// (`crate::nt::ks::clock`). Needs the `KS_FRAME_INFO` headers (with
    /// plain headers the application identifies frames by their capture
    /// time as `PresentationTime`).
    pub reference_clock: bool,
    /// With the bus image: preempt the guest at arbitrary instructions, a
    /// host timer kick on average every this many microseconds (seeded by
    /// `seed`), so the image's ISR and DPCs also land in the middle of its
    /// other code; `None`: delivery at VM exits only.
    pub preemption_us: Option<u64>,
}

/// Which bus driver a machine runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Drivers {
    /// The bus driver's portable core (`capdma_bus::device::BusDevice`) on
    /// the host, with the simulator's DMA adapter.
    #[default]
    Cores,
    /// The real `capdma_bus.sys` at `path`, run in the emulated Windows
    /// kernel (`crate::nt`) on KVM, with the AVStream core on the host
    /// calling its query interface.
    BusImage {
        /// The image (`cargo xtask windows` builds it).
        path: PathBuf,
        /// The most map registers the HAL grants one adapter
        /// (`IoGetDmaAdapter` grants what `MaximumLength` needs, up to
        /// this); `None`: the HAL's own limit.
        map_register_limit: Option<u32>,
    },
    /// Both real images: `capdma_bus.sys` at `bus` and
    /// `capdma_avstream.sys` at `avstream` over it, in the emulated
    /// Windows kernel with its emulated `ks.sys` (`crate::nt::ks`); the
    /// application opens a filter and a pin on each channel's KS device.
    Images {
        /// The bus image.
        bus: PathBuf,
        /// The AVStream image.
        avstream: PathBuf,
        /// As for [`Drivers::BusImage`].
        map_register_limit: Option<u32>,
    },
}

impl Drivers {
    /// `cores`, `bus-image` or `images`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Cores => "cores",
            Self::BusImage { .. } => "bus-image",
            Self::Images { .. } => "images",
        }
    }

    /// The bus image that runs, when one does.
    #[must_use]
    pub fn bus_image(&self) -> Option<&PathBuf> {
        match self {
            Self::Cores => None,
            Self::BusImage { path, .. } => Some(path),
            Self::Images { bus, .. } => Some(bus),
        }
    }

    /// The AVStream image that runs, when one does.
    #[must_use]
    pub fn avstream_image(&self) -> Option<&PathBuf> {
        match self {
            Self::Images { avstream, .. } => Some(avstream),
            _ => None,
        }
    }

    /// The map-register limit of the emulated HAL, when set.
    #[must_use]
    pub fn map_register_limit(&self) -> Option<u32> {
        match self {
            Self::Cores => None,
            Self::BusImage { map_register_limit, .. } | Self::Images { map_register_limit, .. } => *map_register_limit,
        }
    }

    /// The same drivers with the HAL granting at most `limit` map registers.
    #[must_use]
    pub fn with_map_register_limit(&self, limit: u32) -> Self {
        match self {
            Self::Cores => Self::Cores,
            Self::BusImage { path, .. } => Self::BusImage { path: path.clone(), map_register_limit: Some(limit) },
            Self::Images { bus, avstream, .. } => {
                Self::Images { bus: bus.clone(), avstream: avstream.clone(), map_register_limit: Some(limit) }
            }
        }
    }
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            board: BoardKind::Legacy,
            mode: DmaModeOverride::Auto,
            channels: 1,
            format: PixelFormat::Yuy2,
            width: 1920,
            height: 1080,
            stride: None,
            fps: 60,
            frames: 300,
            app_buffers: 4,
            app_hold_100ns: 0,
            max_mapping_bytes: None,
            dma32: false,
            high_memory: false,
            alignment: None,
            map_registers: 64,
            slot_count: 4,
            seed: 1,
            source: None,
            keep_frames: false,
            cards: 1,
            stack: StackLayout::default(),
            contiguous_failure: None,
            descriptor_ring_entries: None,
            cq_entries: None,
            drivers: Drivers::Cores,
            stream_header_size: None,
            reference_clock: false,
            preemption_us: None,
        }
    }
}

/// A configuration the machine cannot run, with the reason in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl MachineConfig {
    /// Bytes of one line of pixels.
    #[must_use]
    pub fn line_bytes(&self) -> u32 {
        self.format.line_bytes(self.width).unwrap_or(u32::MAX)
    }

    /// The application's stride in bytes.
    #[must_use]
    pub fn stride_bytes(&self) -> u32 {
        self.stride.unwrap_or_else(|| self.line_bytes())
    }

    /// The HAL's map-register limit of a bus-image run (see [`Drivers::BusImage`]).
    #[must_use]
    pub fn image_map_registers(&self) -> Option<u32> {
        self.drivers.map_register_limit()
    }

    /// The frame interval in 100-ns units.
    #[must_use]
    pub fn frame_interval_100ns(&self) -> u64 {
        10_000_000 / u64::from(self.fps.max(1))
    }

    /// Checks what the simulated machine itself needs. (Formats the
    /// *driver* must reject are not refused here: they reach the driver.)
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !(1..=4).contains(&self.cards) {
            return err(format!("--cards must be 1..=4, got {}", self.cards));
        }
        if !(1..=8).contains(&self.channels) {
            return err(format!("--channels must be 1..=8, got {}", self.channels));
        }
        if self.width == 0 || self.height == 0 || self.width > MAX_WIDTH || self.height > MAX_HEIGHT {
            return err(format!("--size must be within 2x2..={MAX_WIDTH}x{MAX_HEIGHT}, got {}x{}", self.width, self.height));
        }
        if !(1..=1000).contains(&self.fps) {
            return err(format!("--fps must be 1..=1000, got {}", self.fps));
        }
        if self.frames == 0 || self.frames > 1_000_000 {
            return err(format!("--frames must be 1..=1000000, got {}", self.frames));
        }
        if !(1..=64).contains(&self.app_buffers) {
            return err(format!("--app-buffers must be 1..=64, got {}", self.app_buffers));
        }
        if let Some(a) = self.alignment {
            if !a.is_power_of_two() || a > 1 << 20 {
                return err(format!("--alignment must be a power of two up to 1 MiB, got {a}"));
            }
        }
        if self.max_mapping_bytes == Some(0) {
            return err("--max-mapping-bytes must be at least 1".into());
        }
        if self.reference_clock && !matches!(self.drivers, Drivers::Images { .. }) {
            return err("--reference-clock needs --drivers images (the emulated ks.sys assigns the clock; the cores' KS model has none)".into());
        }
        if self.reference_clock && self.stream_header_size.is_some() {
            return err("--reference-clock needs the KS_FRAME_INFO headers: with plain stream headers the application identifies frames by their capture time as PresentationTime".into());
        }
        if let Some(size) = self.stream_header_size {
            if !(56..=4096).contains(&size) {
                return err(format!("the stream header size must be 56 (sizeof(KSSTREAM_HEADER))..=4096 bytes, got {size}"));
            }
        }
        Ok(())
    }
}
