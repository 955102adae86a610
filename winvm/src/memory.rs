//! Guest-physical memory, as the host sees it: one host mapping in which the
//! byte at guest-physical address `gpa` lives at `host_base + gpa`, of which
//! some ranges are RAM; and the page frames the machine takes for its own
//! structures (page tables, descriptor tables, stubs, stacks, images).
//!
//! The owner of the memory (the simulated machine) gives the machine both:
//! the RAM ranges become KVM memory slots, and guest-physical addresses
//! outside them (the PCI hole, where BAR0 lives) exit to the host as MMIO.

use crate::layout::PAGE_SIZE;
use crate::Stop;

/// A range of guest-physical RAM, bytes. Page-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

impl RamRange {
    /// Whether `[gpa, gpa + len)` lies inside this range.
    #[must_use]
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.gpa && gpa.checked_add(len).is_some_and(|end| end <= self.gpa + self.len)
    }
}

/// Guest-physical memory and the frames the machine may use for itself.
pub struct GuestMemory {
    host_base: *mut u8,
    ram: Vec<RamRange>,
    /// Frames handed to the machine for its own structures, as a bump
    /// allocator with a free list (guest-physical addresses).
    frames_next: u64,
    frames_end: u64,
    frames_free: Vec<u64>,
}

impl GuestMemory {
    /// Guest-physical memory at `host_base`, with `ram` as RAM and
    /// `own_frames` (a page-aligned range inside `ram`) reserved for the
    /// machine's own structures.
    ///
    /// # Safety
    /// For every range in `ram`, `host_base + gpa .. host_base + gpa + len`
    /// is a readable and writable host mapping that stays valid, and is not
    /// used for anything else that Rust references alias, for as long as
    /// the returned value (and the machine built on it) lives.
    ///
    /// # Panics
    /// If `own_frames` is not page-aligned or not inside `ram`: a
    /// programming error of the caller.
    #[must_use]
    pub unsafe fn new(host_base: *mut u8, ram: Vec<RamRange>, own_frames: RamRange) -> Self {
        assert!(own_frames.gpa.is_multiple_of(PAGE_SIZE) && own_frames.len.is_multiple_of(PAGE_SIZE), "own frames not page-aligned");
        assert!(ram.iter().any(|r| r.contains(own_frames.gpa, own_frames.len)), "own frames outside RAM");
        Self { host_base, ram, frames_next: own_frames.gpa, frames_end: own_frames.gpa + own_frames.len, frames_free: Vec::new() }
    }

    /// The RAM ranges.
    #[must_use]
    pub fn ram(&self) -> &[RamRange] {
        &self.ram
    }

    /// The host address of guest-physical `gpa`.
    #[must_use]
    pub fn host_base(&self) -> *mut u8 {
        self.host_base
    }

    /// Whether `[gpa, gpa + len)` is RAM.
    #[must_use]
    pub fn is_ram(&self, gpa: u64, len: u64) -> bool {
        self.ram.iter().any(|r| r.contains(gpa, len))
    }

    /// Copies `buf.len()` bytes at guest-physical `gpa` into `buf`.
    ///
    /// # Errors
    /// [`Stop::Host`] when the range is not RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Stop> {
        let ptr = self.checked(gpa, buf.len())?;
        // SAFETY: `checked` proved the range is RAM, which `new`'s contract
        // makes a valid host mapping; `buf` is a distinct host buffer.
        unsafe { core::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` to guest-physical `gpa`.
    ///
    /// # Errors
    /// [`Stop::Host`] when the range is not RAM.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Stop> {
        let ptr = self.checked(gpa, data.len())?;
        // SAFETY: as in `read`; the mapping is writable.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), ptr, data.len()) };
        Ok(())
    }

    /// Fills `[gpa, gpa + len)` with `byte`.
    ///
    /// # Errors
    /// [`Stop::Host`] when the range is not RAM.
    pub fn fill(&self, gpa: u64, len: usize, byte: u8) -> Result<(), Stop> {
        let ptr = self.checked(gpa, len)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(ptr, byte, len) };
        Ok(())
    }

    /// Reads a little-endian `u64` at guest-physical `gpa`.
    ///
    /// # Errors
    /// As [`GuestMemory::read`].
    pub fn read_u64(&self, gpa: u64) -> Result<u64, Stop> {
        let mut b = [0; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64` at guest-physical `gpa`.
    ///
    /// # Errors
    /// As [`GuestMemory::write`].
    pub fn write_u64(&self, gpa: u64, value: u64) -> Result<(), Stop> {
        self.write(gpa, &value.to_le_bytes())
    }

    fn checked(&self, gpa: u64, len: usize) -> Result<*mut u8, Stop> {
        if !self.is_ram(gpa, len as u64) {
            return Err(Stop::Host(format!("guest-physical {gpa:#x}+{len:#x} is not RAM")));
        }
        Ok(self.host_base.wrapping_add(usize::try_from(gpa).unwrap_or(usize::MAX)))
    }

    /// One zeroed page frame of the machine's own (guest-physical address).
    ///
    /// # Errors
    /// [`Stop::Host`] when the machine's frames are exhausted.
    pub fn alloc_frame(&mut self) -> Result<u64, Stop> {
        let frame = if let Some(frame) = self.frames_free.pop() {
            frame
        } else if self.frames_next < self.frames_end {
            let frame = self.frames_next;
            self.frames_next += PAGE_SIZE;
            frame
        } else {
            return Err(Stop::Host("the machine's own page frames are exhausted".into()));
        };
        self.fill(frame, PAGE_SIZE as usize, 0)?;
        Ok(frame)
    }

    /// Gives a frame from [`GuestMemory::alloc_frame`] back.
    pub fn free_frame(&mut self, frame: u64) {
        self.frames_free.push(frame);
    }

    /// Frames of the machine's own still free (never handed out or given back).
    #[must_use]
    pub fn frames_available(&self) -> u64 {
        (self.frames_end - self.frames_next) / PAGE_SIZE + self.frames_free.len() as u64
    }
}
