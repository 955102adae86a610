//! A booted system: the machine, the emulated kernel, and the drivers
//! loaded into it, with `DriverEntry` called as the I/O manager calls it.

use std::path::Path;

use capdma_winvm::{GuestMemory, Machine, RamRange, Stop};

use super::layout::{driver_extension, driver_object, unicode_string};
use super::{hal, Nt};
use crate::memory::{Allocation, MemoryConfig, PhysicalMemory, PAGE_SIZE, PCI_HOLE_START};
use crate::violations::Violations;

/// Bytes of guest RAM the machine takes for its own structures, the
/// images, kernel objects and pool (page tables, descriptor tables, stubs,
/// stacks): one contiguous run the simulated memory never hands out.
const OWN_BYTES: usize = 64 << 20;

/// A driver loaded and initialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Driver {
    /// The image's name (`capdma_bus`).
    pub name: String,
    /// Its `DRIVER_OBJECT`.
    pub driver_object: u64,
    /// What `DriverEntry` returned.
    pub status: i32,
}

/// The machine and its kernel.
pub struct System {
    /// The vCPU, memory and loaded images.
    pub machine: Machine,
    /// The emulated kernel.
    pub nt: Nt,
    /// The simulated machine's physical memory: the guest's RAM (one memfd,
    /// mapped into the VM), where the board's DMA lands.
    pub memory: PhysicalMemory,
    _own_frames: Allocation,
}

impl System {
    /// A machine over a fresh simulated memory (3 GiB of RAM below the PCI
    /// hole, the simulator's default) and a kernel at boot.
    ///
    /// # Errors
    /// [`Stop::Host`] when KVM is not usable or memory cannot be mapped.
    pub fn boot() -> Result<Self, Stop> {
        let memory = PhysicalMemory::try_new(MemoryConfig::default(), Violations::new())
            .map_err(|e| Stop::Host(format!("simulated memory: {e}")))?;
        Self::boot_on(memory)
    }

    /// A machine whose guest-physical RAM *is* `memory` (its memfd, mapped
    /// into the VM as one slot per RAM range), and a kernel at boot whose
    /// HAL places common buffers in that memory. The board's DMA through
    /// `memory` and the guest's loads and stores see the same bytes.
    ///
    /// # Errors
    /// [`Stop::Host`] when KVM is not usable or the machine's own frames
    /// cannot be taken from `memory`.
    pub fn boot_on(memory: PhysicalMemory) -> Result<Self, Stop> {
        let backing = memory.backing();
        let own = memory
            .allocate_platform(OWN_BYTES, PAGE_SIZE, PCI_HOLE_START, "winvm: the machine's own frames")
            .map_err(|e| Stop::Host(format!("the machine's own frames: {e}")))?;
        let first = *own.page_addresses.first().ok_or_else(|| Stop::Host("empty allocation".into()))?;
        let ram = backing.ram.iter().map(|&(gpa, len)| RamRange { gpa, len }).collect();
        // SAFETY: `backing.linear_base + gpa` is the memfd's linear map for
        // every RAM range; it stays mapped while a handle to `memory` lives,
        // and the System keeps one (and the kernel's HAL another) for as
        // long as the machine exists.
        let mem = unsafe { GuestMemory::new(backing.linear_base, ram, RamRange { gpa: first, len: OWN_BYTES as u64 }) };
        let mut nt = Nt::new();
        hal::attach_memory(&mut nt, memory.clone());
        Ok(Self { machine: Machine::new(mem)?, nt, memory, _own_frames: own })
    }

    /// Loads the driver image at `path` and calls its `DriverEntry` with a
    /// fresh `DRIVER_OBJECT` and the service key path, at `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// [`Stop::MissingImports`] listing every import the emulated kernel
    /// lacks; a bugcheck or host error from the call.
    pub fn load_driver(&mut self, path: &Path) -> Result<Driver, Stop> {
        self.load(path, false)
    }

    /// As [`System::load_driver`], but binds each import the emulated
    /// kernel lacks to a stub that stops the run naming it
    /// ([`super::io::unimplemented_stub`]): for running an image as far as
    /// the implemented DDIs take it.
    ///
    /// # Errors
    /// As [`System::load_driver`], without the missing imports.
    pub fn load_driver_allowing_missing(&mut self, path: &Path) -> Result<Driver, Stop> {
        self.load(path, true)
    }

    fn load(&mut self, path: &Path, allow_missing: bool) -> Result<Driver, Stop> {
        let nt = &mut self.nt;
        let image = self.machine.load_image(path, &mut |m, module, symbol| {
            nt.resolve(m, module, symbol)
                .or_else(|| if allow_missing { super::io::unimplemented_stub(nt, m, module, symbol) } else { None })
        })?;
        let (name, base, size, entry) = (image.name.clone(), image.base, image.size, image.entry);
        let m = &mut self.machine;
        let driver_object = self.nt.alloc_kernel(m, driver_object::SIZE + driver_extension::SIZE + 512)?;
        let extension = driver_object + driver_object::SIZE;
        let registry_path = extension + driver_extension::SIZE;
        m.write_u16(driver_object + driver_object::TYPE, 4)?;
        m.write_u16(driver_object + driver_object::SIZE_FIELD, driver_object::SIZE as u16)?;
        m.write_u64(driver_object + driver_object::DRIVER_START, base)?;
        m.write_u32(driver_object + driver_object::DRIVER_SIZE, size as u32)?;
        m.write_u64(driver_object + driver_object::DRIVER_EXTENSION, extension)?;
        m.write_u64(driver_object + driver_object::DRIVER_INIT, entry)?;
        m.write_u64(extension + driver_extension::DRIVER_OBJECT, driver_object)?;
        let service = format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{name}");
        write_unicode_string(m, registry_path, registry_path + unicode_string::SIZE, &service)?;
        let driver_name = format!("\\Driver\\{name}");
        let name_buffer = registry_path + 256;
        write_unicode_string(m, driver_object + driver_object::DRIVER_NAME, name_buffer, &driver_name)?;
        let status = self.machine.call(&mut self.nt, entry, &[driver_object, registry_path])?;
        Ok(Driver { name, driver_object, status: i32::from_ne_bytes((status as u32).to_ne_bytes()) })
    }
}

/// Writes a `UNICODE_STRING` at `at` whose buffer (UTF-16, NUL-terminated)
/// is at `buffer`.
///
/// # Errors
/// A bugcheck when either address is unmapped.
pub fn write_unicode_string(m: &Machine, at: u64, buffer: u64, text: &str) -> Result<(), Stop> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let bytes: Vec<u8> = units.iter().chain(std::iter::once(&0)).flat_map(|u| u.to_le_bytes()).collect();
    m.write(buffer, &bytes)?;
    m.write_u16(at + unicode_string::LENGTH, (units.len() * 2) as u16)?;
    m.write_u16(at + unicode_string::MAXIMUM_LENGTH, (units.len() * 2 + 2) as u16)?;
    m.write_u64(at + unicode_string::BUFFER, buffer)
}
