//! Device start (`AVStrMiniDeviceStart`): ask the bus how the channel moves
//! frames and say what the KS glue must set up for it.
//!
//! * S/G mode: `GetDmaAdapter`; the glue calls
//!   `KsDeviceRegisterAdapterObject(Device, adapter, MaxMappingByteCount,
//!   sizeof(KSMAPPING))` and gives the pin `KSPIN_FLAG_GENERATE_MAPPINGS`.
//! * Common-buffer mode: the pin gets `KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING`
//!   (Process runs when the completion DPC calls `KsPinAttemptProcessing`).
//!
//! Both modes add `KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY`: the channel runs
//! only in `KSSTATE_RUN`, so there is nothing to do in `KSSTATE_PAUSE`.
//!
//! The mode's own part (the adapter, the flag, the format fit) is its
//! engine's (`engine.rs`, and each mode's `device_setup` in
//! [`crate::process_sg`] and [`crate::process_cb`]); this module does not ask which mode
//! it is in.
use crate::bus_client::BusClient;
use crate::engine;
use crate::format::{validate_data_format, VideoFormat};
use crate::ks_format::KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY;
use capdma_interface::format::{MAX_HEIGHT, MAX_WIDTH};
use capdma_interface::mode::{DmaMode, ModeReason};
use capdma_interface::status::{NtStatus, STATUS_INVALID_PARAMETER, STATUS_IO_DEVICE_ERROR, STATUS_NOT_SUPPORTED};
use capdma_interface::table::DmaConfig;
use core::ffi::c_void;

/// Frames in the pin's allocator framing (`Frames` of
/// `DECLARE_SIMPLE_FRAMING_EX`): enough to keep a frame at the board, one
/// being completed and two with the application.
pub const ALLOCATOR_FRAMES: u32 = 4;

/// Frame size used when the bus reports no `max_frame_bytes`: a 4096x2160 YUY2 frame, bytes.
pub const FALLBACK_MAX_FRAME_BYTES: u32 = MAX_WIDTH * 2 * MAX_HEIGHT;

/// The arguments of `KsDeviceRegisterAdapterObject` (S/G mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterRegistration {
    /// `AdapterObject`: the bus's `PDMA_ADAPTER`.
    pub adapter: *mut c_void,
    /// `MaxMappingByteCount`: bytes, the smaller of the bus's answer and
    /// `DmaConfig::max_transfer`. AVStream splits larger mappings (not
    /// necessarily at page boundaries).
    pub max_mapping_byte_count: u32,
    /// `MappingTableStride`: `sizeof(KSMAPPING)` = 16 bytes.
    pub mapping_table_stride: u32,
    /// `NumberOfMapRegisters` `IoGetDmaAdapter` granted the bus (what
    /// `IKsDeviceFunctions::RegisterAdapterObjectEx` is told).
    pub map_registers: u32,
    /// The `DEVICE_DESCRIPTION` the bus got the adapter with, as the
    /// child reconstructs it from `GetDmaConfig` for
    /// `RegisterAdapterObjectEx` (the bus's `mode::device_description` in
    /// S/G mode): `Dma64BitAddresses` when the board drives 64-bit
    /// addresses.
    pub dma64: bool,
    /// Its `MaximumLength`: the largest frame, bytes.
    pub maximum_length: u32,
}

/// The pin's allocator framing (`KSALLOCATOR_FRAMING_EX` via
/// `DECLARE_SIMPLE_FRAMING_EX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocatorFraming {
    /// `Frames`.
    pub frames: u32,
    /// `MinFrameSize` = `MaxFrameSize`, bytes.
    pub frame_size: u32,
    /// `FileAlignment`: the alignment mask, `alignment - 1` (`FILE_*_ALIGNMENT` style).
    pub file_alignment: u32,
}

/// What device start decided; the glue applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSetup {
    /// The channel's DMA mode.
    pub mode: DmaMode,
    /// Why the bus chose it, when the bus said.
    pub reason: Option<ModeReason>,
    /// The channel's configuration as `GetDmaConfig` answered it.
    pub config: DmaConfig,
    /// S/G mode: what to register with `KsDeviceRegisterAdapterObject`.
    pub adapter: Option<AdapterRegistration>,
    /// `KSPIN_DESCRIPTOR_EX.Flags` of the capture pin.
    pub pin_flags: u32,
    /// The capture pin's allocator framing (frame size: the largest frame).
    pub framing: AllocatorFraming,
}

impl DeviceSetup {
    /// The framing for a pin streaming `format`: frames of `image_bytes`.
    #[must_use]
    pub fn framing_for(&self, format: &VideoFormat) -> AllocatorFraming {
        AllocatorFraming { frame_size: format.image_bytes, ..self.framing }
    }

    /// Whether a pin of this channel can stream `format`: the rule of
    /// [`crate::pin::CapturePin::check_format`], usable before the pin
    /// exists (`AVStrMiniPinSetDataFormat` at pin creation, which AVStream
    /// calls before the pin's Create dispatch).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the frame does not fit the channel.
    pub fn check_format(&self, format: &VideoFormat) -> Result<(), NtStatus> {
        if engine::fits(self.mode, &self.config, format) {
            Ok(())
        } else {
            Err(STATUS_INVALID_PARAMETER)
        }
    }

    /// [`validate_data_format`] of `bytes`, then [`Self::check_format`]:
    /// what a new pin's format must pass.
    ///
    /// # Errors
    /// The errors of both.
    pub fn validate_format(&self, bytes: &[u8]) -> Result<VideoFormat, NtStatus> {
        let format = validate_data_format(bytes)?;
        self.check_format(&format)?;
        Ok(format)
    }

    /// Whether a device that was started with `self` (and built its filter
    /// factory's pin descriptor from it) can run as `next` after a restart
    /// (`IRP_MN_STOP_DEVICE` then `IRP_MN_START_DEVICE`, e.g. a resource
    /// rebalance): the pin descriptor is built once, so the mode, the pin
    /// flags and the allocator framing must not change. The adapter may
    /// (it is registered again at every start).
    #[must_use]
    pub fn can_restart_as(&self, next: &DeviceSetup) -> bool {
        self.mode == next.mode && self.pin_flags == next.pin_flags && self.framing == next.framing
    }
}

/// Device start: `GetDmaConfig` of the client's channel; in S/G mode
/// `GetDmaAdapter`. PASSIVE.
///
/// # Errors
/// The bus's status when a call fails; `STATUS_NOT_SUPPORTED` for a mode
/// this driver does not know or a ring of more than [`capdma_interface::table::MAX_RING_SLOTS`] slots;
/// `STATUS_IO_DEVICE_ERROR` for an answer out of range (alignment not a
/// power of two, channel beyond `channel_count`, zero slots, slot bytes,
/// descriptors or `max_transfer`, a null adapter or a zero
/// `MaxMappingByteCount`).
pub fn device_start(client: &BusClient) -> Result<DeviceSetup, NtStatus> {
    let bus = client.channel();
    let config = bus.get_dma_config()?;
    let mode = DmaMode::from_u32(config.mode).ok_or(STATUS_NOT_SUPPORTED)?;
    if !config.alignment.is_power_of_two() || bus.channel() >= config.channel_count {
        return Err(STATUS_IO_DEVICE_ERROR);
    }
    let framing = AllocatorFraming {
        frames: ALLOCATOR_FRAMES,
        frame_size: if config.max_frame_bytes == 0 { FALLBACK_MAX_FRAME_BYTES } else { config.max_frame_bytes },
        file_alignment: config.alignment - 1,
    };
    let (adapter, engine_flags) = engine::device_setup(mode, &bus, &config)?;
    let pin_flags = engine_flags | KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY;
    Ok(DeviceSetup { mode, reason: ModeReason::from_u32(config.reason), config, adapter, pin_flags, framing })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ks_format::{KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING, KSPIN_FLAG_GENERATE_MAPPINGS};
    use crate::tests::fake::FakeBus;
    use capdma_interface::format::PixelFormat;

    fn client(bus: &FakeBus) -> BusClient {
        // SAFETY: the fake's table is valid while `bus` lives (every test keeps it alive).
        unsafe { BusClient::from_query(&bus.table(), 0) }.unwrap()
    }

    #[test]
    fn scatter_gather_registers_the_adapter() {
        let bus = FakeBus::scatter_gather();
        let setup = device_start(&client(&bus)).unwrap();
        assert_eq!(setup.mode, DmaMode::ScatterGather);
        let a = setup.adapter.unwrap();
        assert_eq!(a.mapping_table_stride, 16);
        assert_eq!(a.max_mapping_byte_count, 64 * 1024, "capped at max_transfer");
        // The description RegisterAdapterObjectEx gets: the bus's (a 64-bit
        // board, the largest frame) and the map registers it was granted.
        assert!(a.dma64, "the fake board drives 64-bit addresses");
        assert_eq!(a.maximum_length, 4096 * 2 * 2160);
        assert_eq!(a.map_registers, 16);
        assert_eq!(setup.pin_flags & KSPIN_FLAG_GENERATE_MAPPINGS, KSPIN_FLAG_GENERATE_MAPPINGS);
        assert_eq!(setup.pin_flags & KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING, 0);
        assert_eq!(setup.framing.file_alignment, 63);
        let f = VideoFormat::new(PixelFormat::Nv12, 640, 480, 333_333).unwrap();
        assert_eq!(setup.framing_for(&f).frame_size, 640 * 720);
    }

    #[test]
    fn common_buffer_sets_do_not_initiate_processing() {
        let bus = FakeBus::common_buffer(4, 1 << 20);
        let setup = device_start(&client(&bus)).unwrap();
        assert_eq!(setup.mode, DmaMode::CommonBuffer);
        assert!(setup.adapter.is_none());
        assert_eq!(
            setup.pin_flags,
            KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING | KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY
        );
    }

    #[test]
    fn formats_are_checked_against_the_channel_before_a_pin_exists() {
        use crate::format::build_data_format;
        use zerocopy::IntoBytes;
        // Slots of 1 MiB: 640x480 YUY2 at a 1280-byte pitch fits, 1920x1080 does not.
        let bus = FakeBus::common_buffer(4, 1 << 20);
        let setup = device_start(&client(&bus)).unwrap();
        let small = VideoFormat::new(PixelFormat::Yuy2, 640, 480, 333_333).unwrap();
        let big = VideoFormat::new(PixelFormat::Yuy2, 1920, 1080, 333_333).unwrap();
        assert_eq!(setup.validate_format(build_data_format(&small).as_bytes()), Ok(small));
        assert_eq!(setup.check_format(&big), Err(capdma_interface::status::STATUS_INVALID_PARAMETER));
        assert_eq!(
            setup.validate_format(build_data_format(&big).as_bytes()),
            Err(capdma_interface::status::STATUS_INVALID_PARAMETER)
        );
        assert_eq!(
            setup.validate_format(&[0u8; 8]),
            Err(capdma_interface::status::STATUS_BUFFER_TOO_SMALL)
        );
        // S/G: bounded by max_frame_bytes only.
        let bus = FakeBus::scatter_gather();
        let setup = device_start(&client(&bus)).unwrap();
        assert_eq!(setup.validate_format(build_data_format(&big).as_bytes()), Ok(big));
    }

    #[test]
    fn a_restart_keeps_the_pin_shape() {
        let sg = FakeBus::scatter_gather();
        let first = device_start(&client(&sg)).unwrap();
        let mut again = device_start(&client(&sg)).unwrap();
        assert!(first.can_restart_as(&again));
        again.adapter = None;
        assert!(first.can_restart_as(&again), "the adapter is registered again, it may change");
        let cb = FakeBus::common_buffer(4, 1 << 20);
        let other_mode = device_start(&client(&cb)).unwrap();
        assert!(!first.can_restart_as(&other_mode));
        let mut other_alignment = first;
        other_alignment.framing.file_alignment = 4095;
        assert!(!first.can_restart_as(&other_alignment));
    }

    #[test]
    fn bad_configurations_are_refused() {
        type Case = (fn(&mut DmaConfig), NtStatus);
        let cases: [Case; 5] = [
            (|c| c.mode = 9, STATUS_NOT_SUPPORTED),
            (|c| c.alignment = 48, STATUS_IO_DEVICE_ERROR),
            (|c| c.channel_count = 0, STATUS_IO_DEVICE_ERROR),
            (|c| c.slot_count = 65, STATUS_NOT_SUPPORTED),
            (|c| c.slot_bytes = 0, STATUS_IO_DEVICE_ERROR),
        ];
        for (i, (mutate, expected)) in cases.iter().enumerate() {
            let bus = FakeBus::common_buffer(4, 1 << 20);
            let mut c = bus.config.get();
            mutate(&mut c);
            bus.config.set(c);
            assert_eq!(device_start(&client(&bus)), Err(*expected), "case {i}");
        }
        let bus = FakeBus::scatter_gather();
        bus.adapter_answer.set((core::ptr::null_mut(), 4096));
        assert_eq!(device_start(&client(&bus)), Err(STATUS_IO_DEVICE_ERROR));
    }
}
