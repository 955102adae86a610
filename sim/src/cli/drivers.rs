//! `--drivers`, `--bus-image`, `--avstream-image`: which drivers a run uses,
//! flattened into `stream` and `faults`.
use std::path::PathBuf;

use capdma_sim::machine::{self, Drivers};
use clap::{Args, ValueEnum};

use super::Outcome;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DriversArg {
    /// The drivers' portable cores on the host (the bus core and the AVStream
    /// core); `faults`: every row.
    Cores,
    /// The real `capdma_bus.sys` in the emulated Windows kernel on KVM (built
    /// by `cargo xtask windows`), the AVStream core on the host calling it;
    /// `faults`: the rows whose subject is the bus driver, the others listed
    /// as not applicable with the reason.
    BusImage,
    /// Both real images, `capdma_avstream.sys` over `capdma_bus.sys`, in the
    /// emulated Windows kernel with its emulated `ks.sys`, on KVM; `faults`:
    /// the rows that apply, the others listed as not applicable with the
    /// reason.
    Images,
}

/// Which drivers run, and the images' paths.
#[derive(Args)]
pub struct DriversArgs {
    /// Which bus driver runs.
    #[arg(long, value_enum, default_value = "cores")]
    drivers: DriversArg,
    /// The bus image for `--drivers bus-image` or `images` (default: `target/windows/release/capdma_bus.sys` of this workspace).
    #[arg(long, value_name = "FILE.sys")]
    bus_image: Option<PathBuf>,
    /// The AVStream image for `--drivers images` (default: `target/windows/release/capdma_avstream.sys` of this workspace).
    #[arg(long, value_name = "FILE.sys")]
    avstream_image: Option<PathBuf>,
}

impl DriversArgs {
    /// The drivers chosen, the images (if any) with `map_register_limit` (the
    /// HAL's grant, `None`: what the adapter asks).
    ///
    /// # Errors
    ///
    /// [`Outcome::Usage`], checked in this order: `--bus-image` with
    /// `--drivers cores`; the first of `cores_only` (a flag given, the
    /// message) that is given with `--drivers cores`; `--avstream-image`
    /// without `--drivers images`.
    pub fn drivers(&self, map_register_limit: Option<u32>, cores_only: &[(bool, &str)]) -> Result<Drivers, Outcome> {
        if self.drivers == DriversArg::Cores {
            if self.bus_image.is_some() {
                return Err(Outcome::Usage("--bus-image needs --drivers bus-image or images".into()));
            }
            if let Some((_, message)) = cores_only.iter().find(|(given, _)| *given) {
                return Err(Outcome::Usage((*message).to_string()));
            }
        }
        if self.avstream_image.is_some() && self.drivers != DriversArg::Images {
            return Err(Outcome::Usage("--avstream-image needs --drivers images".into()));
        }
        let bus = || self.bus_image.clone().unwrap_or_else(machine::image::default_image_path);
        Ok(match self.drivers {
            DriversArg::Cores => Drivers::Cores,
            DriversArg::BusImage => Drivers::BusImage { path: bus(), map_register_limit },
            DriversArg::Images => Drivers::Images {
                bus: bus(),
                avstream: self.avstream_image.clone().unwrap_or_else(machine::image::default_avstream_image_path),
                map_register_limit,
            },
        })
    }
}
