//! Starting the machine: every card's bus FDO (`IRP_MN_START_DEVICE`, the
//! interrupt connected, one child PDO per channel enumerated with its
//! AVStream stack), then every child's AVStream side through its own stack
//! (`IRP_MN_QUERY_INTERFACE`, device start, pin, data format, the
//! application's buffers queued, `KSSTATE_RUN`); a child that fails
//! half-way is abandoned.
use std::pin::Pin;
use std::rc::Rc;

use capdma_avstream::bus_client::BusClient;
use capdma_avstream::copy::VectorUnit;
use capdma_avstream::device::device_start;
use capdma_avstream::format::{build_data_format, VideoFormat};
use capdma_avstream::ks_format::{KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING, KSPIN_FLAG_GENERATE_MAPPINGS};
use capdma_avstream::pin::CapturePin;
use capdma_avstream::state::KsState;
use capdma_bus::config::StartConfig;
use capdma_interface::guid::GUID_CAPDMA_BUS_INTERFACE;
use capdma_interface::status::{nt_success, NtStatus, STATUS_DEVICE_NOT_READY, STATUS_SUCCESS};
use zerocopy::IntoBytes;

use super::build::{build_child_stack, ChannelRun, Machine};
use super::config::ConfigError;
use super::events::Event;
use super::run::{RunError, RunHooks, WATCHDOG_PERIOD};
use crate::ks::{MappingSource, PinFlags, SimKsPin, SimMapping};
use crate::pnp::DeviceKind;

impl Machine {
    /// `IRP_MN_START_DEVICE` of every card's bus FDO (the interrupt is
    /// connected after it), the bus enumerates one child PDO per channel
    /// (with the configured filters over it), then per child its AVStream
    /// device start (`IRP_MN_QUERY_INTERFACE` sent down the child's stack,
    /// DMA config, adapter registration), a capture pin with the configured
    /// format, the application's buffers queued, and the pin walked to
    /// `KSSTATE_RUN`. May be called again after [`Machine::teardown`] (a new
    /// start/stop cycle).
    ///
    /// # Errors
    /// [`RunError::Driver`] naming the step a driver refused.
    pub fn start(&mut self) -> Result<(), RunError> {
        self.timeline.clear();
        self.channels.clear();
        self.run_start = self.timeline.now();
        let start = StartConfig {
            dma_mode: self.config.mode,
            slot_count: self.config.slot_count,
            max_mapping_byte_count: self.config.max_mapping_bytes,
            descriptor_ring_entries: self.config.descriptor_ring_entries.unwrap_or(StartConfig::DEFAULT.descriptor_ring_entries),
            cq_entries: self.config.cq_entries.unwrap_or(StartConfig::DEFAULT.cq_entries),
        };
        if self.runs_image() {
            self.start_image_buses()?;
        } else {
            self.start_core_buses(&start)?;
        }
        self.in_image(Self::start_children)
    }

    /// The AVStream side of every child (with the image's kernel active
    /// when it runs: the AVStream core calls the image's interface), then
    /// the first `Process` calls and the first frame times.
    fn start_children(&mut self) -> Result<(), RunError> {
        for card in 0..self.config.cards {
            for ch in 0..self.config.channels {
                let run = if self.runs_avstream_image() { self.start_image_child(card, ch)? } else { self.start_child(card, ch)? };
                self.channels.push(run);
            }
        }
        // KS calls Process as the pins reach KSSTATE_RUN, before any frame is due.
        self.passive_work(self.run_start, &mut RunHooks::default());
        for run in &self.channels {
            self.timeline.schedule(self.run_start + self.config.frame_interval_100ns(), Event::Capture { card: run.card, channel: run.index });
        }
        self.timeline.schedule(self.run_start + WATCHDOG_PERIOD, Event::Watchdog);
        Ok(())
    }

    /// `IRP_MN_START_DEVICE` of every card's bus core, and its children.
    fn start_core_buses(&mut self, start: &StartConfig) -> Result<(), RunError> {
        for card in 0..self.cards.len() {
            let Some(bus) = self.cards[card].bus.core().cloned() else { continue };
            // MmMapIoSpaceEx, then the core's start; a failed start unmaps BAR0 again.
            self.cards[card].board.set_bar0_mapped(true);
            let result = bus.start(start);
            if result.is_err() {
                self.cards[card].board.set_bar0_mapped(false);
            }
            let decision = result.map_err(|s| self.driver_error(format!("card {card}: bus IRP_MN_START_DEVICE"), s))?;
            let c = &mut self.cards[card];
            c.decision = Some(decision);
            c.interrupt_connected = true;
            c.timer_armed = true;
            c.removed = false;
            self.enumerate_children(card);
        }
        Ok(())
    }

    /// `IRP_MN_QUERY_DEVICE_RELATIONS` (`BusRelations`) of a card: one child
    /// PDO per channel and the AVStream stack over it (once: the children
    /// stay present across start/stop cycles).
    fn enumerate_children(&mut self, card: usize) {
        let c = &self.cards[card];
        let Some(bus) = c.bus.core() else { return };
        if !c.children.is_empty() {
            return;
        }
        let mut children = Vec::new();
        for ch in 0..self.config.channels {
            children.push(build_child_stack(
                &self.tree,
                &self.config.stack,
                card,
                ch,
                format!("card {card} child PDO CAPDMA\\Channel {ch}"),
                DeviceKind::ChildPdo { bus: Rc::clone(bus), channel: ch, parent_fdo: c.bus_fdo },
            ));
        }
        self.cards[card].children = children;
    }

    /// The AVStream side of one child PDO.
    fn start_child(&mut self, card: u32, ch: u32) -> Result<ChannelRun, RunError> {
        let what = |step: &str| format!("card {card} channel {ch}: {step}");
        let Some(stack) = self.cards.get(card as usize).and_then(|c| c.children.get(ch as usize).cloned()) else {
            return Err(self.driver_error(what("child enumeration"), STATUS_DEVICE_NOT_READY));
        };
        // IRP_MN_QUERY_INTERFACE for GUID_CAPDMA_BUS_INTERFACE, sent to the top
        // of the AVStream device's own stack; it travels down to the child PDO.
        let mut answer = BusClient::query_buffer();
        // SAFETY: `answer` is a live local of `Size` bytes.
        let irp = unsafe {
            self.tree.query_interface(
                stack.fdo,
                Some(GUID_CAPDMA_BUS_INTERFACE),
                answer.header.size,
                answer.header.version,
                (&raw mut answer).cast(),
            )
        };
        if !nt_success(irp.status) {
            let path = self.tree.describe_path(&irp.path);
            return Err(self.driver_error(format!("{} (path {path})", what("IRP_MN_QUERY_INTERFACE")), irp.status));
        }
        // SAFETY: the bus filled `answer` for this query and took one reference
        // for us; the BusDevice lives in an Rc the machine keeps until it is dropped.
        let client = unsafe { BusClient::from_query(&answer, ch) }.map_err(|s| self.driver_error(what("interface check"), s))?;
        let setup = match device_start(&client) {
            Ok(setup) => setup,
            Err(s) => {
                // SAFETY: the reference from the query is dropped once, here.
                unsafe { client.release() };
                return Err(self.driver_error(what("AVStream device start"), s));
            }
        };
        // KsDeviceRegisterAdapterObject: KS finds the adapter from the raw PDMA_ADAPTER.
        let mapping = setup.adapter.and_then(|reg| {
            MappingSource::from_raw(reg.adapter)
                .map(|adapter| SimMapping { adapter, max_mapping_byte_count: reg.max_mapping_byte_count })
        });
        let flags = PinFlags {
            generate_mappings: setup.pin_flags & KSPIN_FLAG_GENERATE_MAPPINGS != 0,
            do_not_initiate_processing: setup.pin_flags & KSPIN_FLAG_DO_NOT_INITIATE_PROCESSING != 0,
            // The cores' KS model keeps queue order (the images' KS does not).
            complete_out_of_order: false,
        };
        let ks = SimKsPin::new(flags, mapping, self.irql.clone(), self.violations.clone());
        let pin = Box::pin(CapturePin::new(ks.clone(), client.channel(), &setup, VectorUnit::Avx2));
        // The AVStream device keeps the reference until its IRP_MN_REMOVE_DEVICE.
        stack.device.hold_interface(client);
        let reason = setup.reason.map_or("unknown", |r| r.describe()).to_string();
        let mut run = ChannelRun::new(
            &self.config,
            (card, ch),
            ks,
            Rc::clone(&stack.device),
            VideoFormat::default_for(self.config.format),
            setup.mode.name(),
            reason,
        );
        // The application states what it wants; the driver's SetDataFormat
        // judges it (odd sizes, bad strides and overflows are refused there).
        let format = self.requested_format();
        let bytes = build_data_format(&format);
        if let Err(s) = pin.set_data_format(bytes.as_bytes()) {
            self.abandon_child(&mut run, Some(pin));
            return Err(self.driver_error(what("SetDataFormat"), s));
        }
        run.format = format;
        for i in 0..self.config.app_buffers {
            let owner = format!("application buffer {i} of card {card} channel {ch}");
            match self.memory.allocate_scattered(format.image_bytes as usize, &owner) {
                Ok(alloc) => {
                    run.ks.submit(u64::from(i), alloc.va, format.image_bytes);
                    run.buffers.push(alloc);
                    run.with_app.push(false);
                    run.requeue_scheduled.push(false);
                }
                Err(e) => {
                    self.abandon_child(&mut run, Some(pin));
                    return Err(RunError::Config(ConfigError(format!("application buffers: {e}"))));
                }
            }
        }
        let status = pin.as_ref().set_state(KsState::Run);
        if status != STATUS_SUCCESS {
            self.abandon_child(&mut run, Some(pin));
            return Err(self.driver_error(what("KSSTATE_RUN"), status));
        }
        run.ks.set_running(true);
        run.pin = Some(pin);
        run.device.set_pin_open(true);
        Ok(run)
    }

    /// The format the application asks for, unchecked: the stride from
    /// `--stride` (or the line), the image at that stride (saturating, so
    /// an overflow reaches the driver as a size it must refuse).
    pub(super) fn requested_format(&self) -> VideoFormat {
        let c = &self.config;
        let stride = c.stride_bytes();
        let lines = c.format.lines(c.height).unwrap_or(u32::MAX);
        VideoFormat {
            pixel: c.format,
            width: c.width,
            height: c.height,
            stride,
            image_bytes: stride.saturating_mul(lines),
            frame_interval: u32::try_from(c.frame_interval_100ns()).unwrap_or(u32::MAX),
        }
    }

    /// Undoes a half-started child: pin to STOP and dropped, buffers freed,
    /// the interface reference released (the AVStream device's start failed).
    fn abandon_child(&self, run: &mut ChannelRun, pin: Option<Pin<Box<CapturePin<SimKsPin>>>>) {
        if let Some(pin) = pin {
            let _ = pin.as_ref().set_state(KsState::Stop);
            run.ks.flush_on_stop();
            drop(pin);
        }
        while run.ks.take_completed().is_some() {}
        for buffer in run.buffers.drain(..) {
            self.memory.free(buffer.id);
        }
        run.device.set_pin_open(false);
        let _ = run.device.release_interface();
    }

    pub(super) fn driver_error(&self, step: impl Into<String>, status: NtStatus) -> RunError {
        RunError::Driver { step: step.into(), status, report: Box::new(self.report()) }
    }
}
