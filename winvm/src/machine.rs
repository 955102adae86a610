//! The machine: one KVM vCPU in long mode running Windows x64 images at
//! CPL3, and the crossings between guest and host.
//!
//! * **Guest → host**: a *stub* is 8 bytes, `mov eax, index; out 0xE2, eax;
//!   ret`. Every import of an image and every host function whose address
//!   the guest holds (a `DMA_OPERATIONS` entry, say) is a stub. At the `out`
//!   the host reads the Win64 arguments (RCX, RDX, R8, R9, then the stack
//!   above the 32-byte home area), runs [`Kernel::stub_called`] and puts its
//!   result in RAX; the stub's `ret` returns to the caller.
//! * **Host → guest**: [`Machine::call`] saves the registers, builds a Win64
//!   call frame below the current stack pointer whose return address is the
//!   return trap (`out 0xE1, eax`), runs the vCPU until the trap, and
//!   restores the registers. Calls nest: a stub may call the guest, which
//!   may call a stub, and so on.
//! * **Exceptions**: every IDT vector leaves with `out 0xE0, vector` on the
//!   ring-0 trap stack. A `mov` to or from CR8 raises #GP at CPL3; the host
//!   decodes it (iced-x86), emulates it against the kernel's IRQL, counts it
//!   and resumes after it. Anything else is a bugcheck: the call returns
//!   [`Stop::Bugcheck`] with the vector, error code, CR2, the registers and a
//!   stack walk from the images' unwind data. The machine is dead afterwards,
//!   as Windows would be.
//! * **MMIO**: guest-physical addresses outside RAM (the PCI hole with
//!   BAR0) have no memory slot; the vCPU exits and [`Kernel::mmio_read`] /
//!   [`Kernel::mmio_write`] serve the access.
//!
//! After every stub exit the kernel gets [`Kernel::at_exit`], where it
//! delivers what is pending (an ISR when the IRQL is below the device's,
//! DPCs when it is below `DISPATCH_LEVEL`) with nested calls.

use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::cpu::{self, RETURN_TRAP_VA, STUBS_VA, VECTORS_WITH_ERROR_CODE};
use crate::layout::{
    GUEST_RFLAGS, KUSER_INTERRUPT_TIME, KUSER_SHARED_DATA, KUSER_TICK_COUNT, PAGE_SIZE, PORT_EXCEPTION,
    PORT_RETURN, PORT_STUB,
};
use crate::loader::pe::{self, LoadedImage};
use crate::loader::unwind::{unwind_frame, FrameRegisters, UnwindSource};
use crate::memory::GuestMemory;
use crate::paging::{AddressSpace, Protection};
use crate::preempt::{KickTimer, Preemption};
use crate::report::{BugcheckReport, Stop};

/// The emulated kernel: what the host does when the guest leaves it.
pub trait Kernel {
    /// The stub registered under `index` was called; returns RAX.
    ///
    /// # Errors
    /// A [`Stop`] ends every guest call in progress.
    fn stub_called(&mut self, m: &mut Machine, index: u32) -> Result<u64, Stop>;

    /// A read of `data.len()` bytes at guest-physical `gpa`, outside RAM.
    ///
    /// # Errors
    /// As [`Kernel::stub_called`].
    fn mmio_read(&mut self, m: &mut Machine, gpa: u64, data: &mut [u8]) -> Result<(), Stop>;

    /// A write of `data` at guest-physical `gpa`, outside RAM.
    ///
    /// # Errors
    /// As [`Kernel::stub_called`].
    fn mmio_write(&mut self, m: &mut Machine, gpa: u64, data: &[u8]) -> Result<(), Stop>;

    /// The current IRQL (what a trapped `mov reg, cr8` reads).
    fn irql(&self) -> u8;

    /// A trapped `mov cr8, reg`: the guest sets the IRQL to `irql`.
    ///
    /// # Errors
    /// As [`Kernel::stub_called`].
    fn set_irql_by_cr8(&mut self, m: &mut Machine, irql: u8) -> Result<(), Stop>;

    /// Called after every stub exit, before the guest resumes: deliver
    /// pending interrupts and DPCs here.
    ///
    /// # Errors
    /// As [`Kernel::stub_called`].
    fn at_exit(&mut self, _m: &mut Machine) -> Result<(), Stop> {
        Ok(())
    }

    /// The guest faulted on `va` (a write when `write`) at `rip`, and the
    /// run stops: the kernel's memory manager may name the bug check, as
    /// Windows' does from what it knows of the address (freed special pool
    /// is 0xD5 `DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL`), as `(code, name,
    /// parameters)`. `None` (the default) leaves the machine's own: 0xD1
    /// `DRIVER_IRQL_NOT_LESS_OR_EQUAL` at `DISPATCH_LEVEL` or above, 0x50
    /// `PAGE_FAULT_IN_NONPAGED_AREA` below.
    fn page_fault(&self, _va: u64, _write: bool, _rip: u64) -> Option<(u32, &'static str, [u64; 4])> {
        None
    }

    /// Called when a preemption kick ([`Machine::set_preemption`]) stopped
    /// the guest at an arbitrary instruction of its own code (CPL3): the
    /// same delivery as [`Kernel::at_exit`] by default.
    ///
    /// # Errors
    /// As [`Kernel::stub_called`].
    fn at_preemption(&mut self, m: &mut Machine) -> Result<(), Stop> {
        self.at_exit(m)
    }
}

/// Counts of what crossed between guest and host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Stub calls (imports and host functions).
    pub stub_calls: u64,
    /// Host → guest calls.
    pub guest_calls: u64,
    /// MMIO reads and writes.
    pub mmio: u64,
    /// Trapped and emulated CR8 accesses.
    pub cr8_traps: u64,
    /// Every VM exit.
    pub exits: u64,
    /// Preemption kicks that landed in guest code and were offered to the kernel.
    pub preemptions: u64,
    /// Host wall-clock nanoseconds spent inside the `KVM_RUN` calls that
    /// ran the guest: its own code, natively, and the world switches into
    /// and out of it (not the host's handling of the exits, nor the
    /// `immediate_exit` runs that complete an I/O exit).
    pub guest_ns: u64,
}

/// Stack of the one thread the machine has, bytes (Windows' x64 kernel
/// stack is 24 KiB; this one is larger so a deep nesting of host calls
/// fits; the deepest use is reported by [`Machine::stack_high_water`]).
pub const STACK_BYTES: u64 = 64 * 1024;

/// The machine.
pub struct Machine {
    _kvm: Kvm,
    vm: VmFd,
    vcpu: VcpuFd,
    mem: GuestMemory,
    space: AddressSpace,
    images: Vec<LoadedImage>,
    stub_names: Vec<String>,
    stub_pages: u64,
    stack_top: u64,
    stack_bottom: u64,
    depth: u32,
    dead: bool,
    counts: ExitCounts,
    lowest_rsp: u64,
    kuser_frame: u64,
    /// Set by a stub handler that must not return to its caller (the
    /// machine stopped, e.g. `KeBugCheckEx`).
    pending_stop: Option<Stop>,
    kick: Option<KickTimer>,
    /// The kernel's IRQL when the stub call in progress began (what a
    /// fault inside that DDI is judged at).
    stub_irql: u8,
}

fn kvm_err(what: &str, e: impl std::fmt::Display) -> Stop {
    Stop::Host(format!("KVM {what}: {e}"))
}

/// Whether `/dev/kvm` can be opened (for tests that need it).
///
/// # Errors
/// Why not, as text.
pub fn kvm_available() -> Result<(), String> {
    Kvm::new().map(drop).map_err(|e| format!("/dev/kvm: {e}"))
}

impl Machine {
    /// A machine on `mem`: the VM, its memory slots (one per RAM range),
    /// the vCPU in long mode, the descriptor tables, `KUSER_SHARED_DATA`
    /// and a 64 KiB stack.
    ///
    /// # Errors
    /// [`Stop::Host`] when KVM refuses (no `/dev/kvm`, no permission).
    pub fn new(mut mem: GuestMemory) -> Result<Self, Stop> {
        let kvm = Kvm::new().map_err(|e| kvm_err("open /dev/kvm", e))?;
        let vm = kvm.create_vm().map_err(|e| kvm_err("CREATE_VM", e))?;
        for (slot, range) in mem.ram().iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: u32::try_from(slot).map_err(|e| kvm_err("slot", e))?,
                flags: 0,
                guest_phys_addr: range.gpa,
                memory_size: range.len,
                userspace_addr: mem.host_base() as u64 + range.gpa,
            };
            // SAFETY: `GuestMemory::new`'s contract: the host range is a
            // valid mapping for as long as the memory (owned by this
            // machine, which owns the VM) lives.
            unsafe { vm.set_user_memory_region(region) }.map_err(|e| kvm_err("SET_USER_MEMORY_REGION", e))?;
        }
        vm.set_tss_address(0x7FFB_D000).map_err(|e| kvm_err("SET_TSS_ADDR", e))?;
        let vcpu = vm.create_vcpu(0).map_err(|e| kvm_err("CREATE_VCPU", e))?;
        let mut space = AddressSpace::new(&mut mem)?;
        cpu::build_tables(&mut mem, &mut space)?;
        let kuser_frame = cpu::map_new(&mut mem, &mut space, KUSER_SHARED_DATA, Protection::READ)?;
        cpu::set_long_mode(&kvm, &vcpu, space.cr3())?;
        let pages = STACK_BYTES / PAGE_SIZE;
        // One unmapped guard page below the stack; `reserve` adds one above.
        let reserved = space.reserve(pages + 1);
        for page in 1..=pages {
            cpu::map_new(&mut mem, &mut space, reserved + page * PAGE_SIZE, Protection::READ_WRITE)?;
        }
        let stack_bottom = reserved + PAGE_SIZE;
        let stack_top = stack_bottom + STACK_BYTES;
        space.needs_flush = false;
        Ok(Self {
            _kvm: kvm,
            vm,
            vcpu,
            mem,
            space,
            images: Vec::new(),
            stub_names: Vec::new(),
            stub_pages: 0,
            stack_top,
            stack_bottom,
            depth: 0,
            dead: false,
            counts: ExitCounts::default(),
            lowest_rsp: stack_top,
            kuser_frame,
            pending_stop: None,
            kick: None,
            stub_irql: 0,
        })
    }

    /// Guest-physical memory.
    #[must_use]
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// The images loaded, in load order.
    #[must_use]
    pub fn images(&self) -> &[LoadedImage] {
        &self.images
    }

    /// The counters.
    #[must_use]
    pub fn counts(&self) -> ExitCounts {
        self.counts
    }

    /// Deepest stack use seen at an exit, bytes.
    #[must_use]
    pub fn stack_high_water(&self) -> u64 {
        self.stack_top - self.lowest_rsp
    }

    /// Preempts the guest at arbitrary instructions (see [`crate::preempt`]),
    /// or stops doing so (`None`). The kicks signal the calling thread: call
    /// this from the thread that runs the machine.
    ///
    /// # Errors
    /// [`Stop::Host`] when the host timer cannot be made.
    pub fn set_preemption(&mut self, preemption: Option<Preemption>) -> Result<(), Stop> {
        self.kick = preemption.map(KickTimer::new).transpose()?;
        Ok(())
    }

    /// Host → guest calls in progress.
    #[must_use]
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Registers a stub named `name` (for reports); returns its index and
    /// the guest address to call.
    ///
    /// # Errors
    /// [`Stop::Host`] when no frame is left for a stub page.
    pub fn add_stub(&mut self, name: &str) -> Result<(u32, u64), Stop> {
        let index = u32::try_from(self.stub_names.len()).map_err(|e| Stop::Host(e.to_string()))?;
        let per_page = PAGE_SIZE / 8;
        let va = STUBS_VA + u64::from(index) * 8;
        if u64::from(index) / per_page >= self.stub_pages {
            let page_va = STUBS_VA + self.stub_pages * PAGE_SIZE;
            cpu::map_new(&mut self.mem, &mut self.space, page_va, Protection::READ_EXECUTE)?;
            self.stub_pages += 1;
        }
        let mut code = [0u8; 8];
        code[0] = 0xB8;
        code[1..5].copy_from_slice(&index.to_le_bytes());
        code[5] = 0xE7;
        code[6] = u8::try_from(PORT_STUB).unwrap_or(0);
        code[7] = 0xC3;
        let gpa = self.space.translate(va).ok_or_else(|| Stop::Host("stub page unmapped".into()))?;
        self.mem.write(gpa, &code)?;
        self.stub_names.push(name.to_owned());
        Ok((index, va))
    }

    /// The name a stub was registered with.
    #[must_use]
    pub fn stub_name(&self, index: u32) -> &str {
        self.stub_names.get(index as usize).map_or("?", String::as_str)
    }

    /// Loads the PE image at `path`; `resolve(module, symbol)` gives each
    /// import's address (usually a stub from [`Machine::add_stub`]).
    ///
    /// # Errors
    /// [`Stop::MissingImports`] listing every import `resolve` refused (the
    /// image is not loaded); [`Stop::Host`] for a malformed image.
    pub fn load_image(
        &mut self,
        path: &Path,
        resolve: &mut dyn FnMut(&mut Self, &str, &str) -> Option<u64>,
    ) -> Result<&LoadedImage, Stop> {
        // The resolver may add stubs (which maps pages), so resolve every
        // import first, then load with the answers.
        let imports = pe_imports(path)?;
        let mut answers = std::collections::HashMap::new();
        for (module, symbol) in imports {
            if let Some(va) = resolve(self, &module, &symbol) {
                answers.insert((module.to_ascii_lowercase(), symbol), va);
            }
        }
        let image = pe::load(&mut self.mem, &mut self.space, path, &mut |module, symbol| {
            answers.get(&(module.to_ascii_lowercase(), symbol.to_owned())).copied()
        })?;
        self.images.push(image);
        self.images.last().ok_or_else(|| Stop::Host("image list".into()))
    }

    /// Maps `frames` (guest-physical page frames) at fresh virtual addresses,
    /// followed by a guard page; returns the first address.
    ///
    /// # Errors
    /// [`Stop::Host`] when a frame is not page-aligned or no frame is left
    /// for a page table.
    pub fn map_frames(&mut self, frames: &[u64], protection: Protection) -> Result<u64, Stop> {
        let va = self.space.reserve(frames.len() as u64);
        for (i, frame) in frames.iter().enumerate() {
            self.space.map(&mut self.mem, va + i as u64 * PAGE_SIZE, *frame, protection)?;
        }
        Ok(va)
    }

    /// Maps guest-physical `[gpa, gpa + len)` (page-aligned start) at fresh
    /// virtual addresses; for I/O space outside RAM too (accesses then exit
    /// as MMIO).
    ///
    /// # Errors
    /// As [`Machine::map_frames`].
    pub fn map_physical(&mut self, gpa: u64, len: u64, protection: Protection) -> Result<u64, Stop> {
        let frames: Vec<u64> = (0..len.div_ceil(PAGE_SIZE)).map(|i| gpa + i * PAGE_SIZE).collect();
        self.map_frames(&frames, protection)
    }

    /// Maps `frames` at `va` onward (page-aligned, each page unmapped):
    /// pages a kernel took out with [`Machine::unmap`] put back where they
    /// were (pageable memory paged in again).
    ///
    /// # Errors
    /// [`Stop::Host`] when `va` is not page-aligned or already mapped, or no
    /// frame is left for a page table.
    pub fn map_frames_at(&mut self, va: u64, frames: &[u64], protection: Protection) -> Result<(), Stop> {
        for (i, frame) in frames.iter().enumerate() {
            self.space.map(&mut self.mem, va + i as u64 * PAGE_SIZE, *frame, protection)?;
        }
        Ok(())
    }

    /// Unmaps `pages` pages at `va`; returns their frames.
    ///
    /// # Errors
    /// [`Stop::Host`] when the page tables cannot be written.
    pub fn unmap(&mut self, va: u64, pages: u64) -> Result<Vec<u64>, Stop> {
        let mut frames = Vec::new();
        for page in 0..pages {
            if let Some(mapping) = self.space.unmap(&mut self.mem, va + page * PAGE_SIZE)? {
                frames.push(mapping.frame);
            }
        }
        Ok(frames)
    }

    /// The address space (translations, for the kernel's checks).
    #[must_use]
    pub fn address_space(&self) -> &AddressSpace {
        &self.space
    }

    /// A page frame of the machine's own memory, mapped at a fresh address
    /// (for small kernel structures the host hands the guest).
    ///
    /// # Errors
    /// [`Stop::Host`] when the machine's frames are exhausted.
    pub fn alloc_own_pages(&mut self, pages: u64, protection: Protection) -> Result<u64, Stop> {
        let mut frames = Vec::new();
        for _ in 0..pages {
            frames.push(self.mem.alloc_frame()?);
        }
        self.map_frames(&frames, protection)
    }

    /// Unmaps `pages` pages at `va` from [`Machine::alloc_own_pages`] and
    /// gives their frames back; later accesses to `va` fault.
    ///
    /// # Errors
    /// [`Stop::Host`] when the page tables cannot be written.
    pub fn free_own_pages(&mut self, va: u64, pages: u64) -> Result<(), Stop> {
        for frame in self.unmap(va, pages)? {
            self.mem.free_frame(frame);
        }
        Ok(())
    }

    /// Sets `KUSER_SHARED_DATA.InterruptTime` (and `TickCount`) to `time`,
    /// 100-ns units since boot.
    ///
    /// # Errors
    /// [`Stop::Host`] when the page cannot be written.
    pub fn set_interrupt_time(&mut self, time: u64) -> Result<(), Stop> {
        // KSYSTEM_TIME: LowPart, High1Time, High2Time (readers compare the two highs).
        let low = time & 0xFFFF_FFFF;
        let high = time >> 32;
        let at = self.kuser_frame + KUSER_INTERRUPT_TIME;
        self.mem.write(at, &(low as u32).to_le_bytes())?;
        self.mem.write(at + 4, &(high as u32).to_le_bytes())?;
        self.mem.write(at + 8, &(high as u32).to_le_bytes())?;
        // TickCount in 15.625 ms ticks.
        let ticks = time / 156_250;
        let at = self.kuser_frame + KUSER_TICK_COUNT;
        self.mem.write(at, &(ticks as u32).to_le_bytes())?;
        self.mem.write(at + 4, &((ticks >> 32) as u32).to_le_bytes())?;
        self.mem.write(at + 8, &((ticks >> 32) as u32).to_le_bytes())
    }

    // ---------------------------------------------------------------- guest memory

    /// Copies guest virtual `[va, va + buf.len())` into `buf`.
    ///
    /// # Errors
    /// A bugcheck `0x50` (`PAGE_FAULT_IN_NONPAGED_AREA`) when a page is not
    /// mapped: the emulated kernel touched a bad pointer the guest gave it,
    /// which on Windows faults in the kernel.
    pub fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), Stop> {
        self.walk(va, buf.len(), false, |gpa, range| self.mem.read(gpa, &mut buf[range]))
    }

    /// Copies `data` to guest virtual `va` (ignoring page protections: the
    /// kernel writes where it may).
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), Stop> {
        self.walk(va, data.len(), true, |gpa, range| self.mem.write(gpa, &data[range]))
    }

    fn walk(
        &self,
        va: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        let mut done = 0usize;
        while done < len {
            let at = va.wrapping_add(done as u64);
            let Some(gpa) = self.space.translate(at) else {
                return Err(self.kernel_fault(at, write));
            };
            let n = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(len - done);
            if !self.mem.is_ram(gpa, n as u64) {
                return Err(Stop::Host(format!("the kernel touched I/O space at {at:#x} (gpa {gpa:#x})")));
            }
            f(gpa, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    /// Whether `[va, va + len)` is mapped.
    #[must_use]
    pub fn is_mapped(&self, va: u64, len: u64) -> bool {
        let first = va & !(PAGE_SIZE - 1);
        let Some(end) = va.checked_add(len) else { return false };
        (first..end).step_by(PAGE_SIZE as usize).all(|page| self.space.mapping(page).is_some())
    }

    /// Reads a `u64` at `va`. Errors as [`Machine::read`].
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn read_u64(&self, va: u64) -> Result<u64, Stop> {
        let mut b = [0; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a `u32` at `va`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn read_u32(&self, va: u64) -> Result<u32, Stop> {
        let mut b = [0; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a `u16` at `va`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn read_u16(&self, va: u64) -> Result<u16, Stop> {
        let mut b = [0; 2];
        self.read(va, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a `u8` at `va`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn read_u8(&self, va: u64) -> Result<u8, Stop> {
        let mut b = [0; 1];
        self.read(va, &mut b)?;
        Ok(b[0])
    }

    /// Writes a `u64` at `va`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn write_u64(&self, va: u64, value: u64) -> Result<(), Stop> {
        self.write(va, &value.to_le_bytes())
    }

    /// Writes a `u32` at `va`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn write_u32(&self, va: u64, value: u32) -> Result<(), Stop> {
        self.write(va, &value.to_le_bytes())
    }

    /// Writes a `u16` at `va`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn write_u16(&self, va: u64, value: u16) -> Result<(), Stop> {
        self.write(va, &value.to_le_bytes())
    }

    /// Writes a `u8` at `va`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn write_u8(&self, va: u64, value: u8) -> Result<(), Stop> {
        self.write(va, &[value])
    }

    /// Fills `[va, va + len)` with `byte`.
    ///
    /// # Errors
    /// As [`Machine::read`].
    pub fn fill(&self, va: u64, len: usize, byte: u8) -> Result<(), Stop> {
        self.walk(va, len, true, |gpa, range| self.mem.fill(gpa, range.len(), byte))
    }

    // ---------------------------------------------------------------- arguments

    /// Argument `n` (0-based) of the stub call in progress (Win64: RCX, RDX,
    /// R8, R9, then `[rsp + 0x28 + 8 * (n - 4)]`, RSP at the `out` pointing
    /// at the return address).
    ///
    /// # Errors
    /// [`Stop::Host`] when the registers cannot be read; a bugcheck when
    /// the stack slot is unmapped.
    pub fn arg(&self, n: usize) -> Result<u64, Stop> {
        let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
        Ok(match n {
            0 => regs.rcx,
            1 => regs.rdx,
            2 => regs.r8,
            3 => regs.r9,
            _ => self.read_u64(regs.rsp + 0x28 + 8 * (n as u64 - 4))?,
        })
    }

    /// Arguments `0..N` of the stub call in progress.
    ///
    /// # Errors
    /// As [`Machine::arg`].
    pub fn args<const N: usize>(&self) -> Result<[u64; N], Stop> {
        let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
        let mut out = [0u64; N];
        for (n, slot) in out.iter_mut().enumerate() {
            *slot = match n {
                0 => regs.rcx,
                1 => regs.rdx,
                2 => regs.r8,
                3 => regs.r9,
                _ => self.read_u64(regs.rsp + 0x28 + 8 * (n as u64 - 4))?,
            };
        }
        Ok(out)
    }

    /// The return address of the stub call in progress (the caller).
    ///
    /// # Errors
    /// As [`Machine::arg`].
    pub fn caller(&self) -> Result<u64, Stop> {
        let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
        self.read_u64(regs.rsp)
    }

    // ---------------------------------------------------------------- calls

    /// Calls the guest function at `function` with Win64 `args`; returns RAX.
    ///
    /// # Errors
    /// [`Stop::Bugcheck`] when the guest crashed (now or earlier: a dead
    /// machine refuses every call), or whatever the kernel's handlers
    /// returned.
    pub fn call<K: Kernel + ?Sized>(&mut self, kernel: &mut K, function: u64, args: &[u64]) -> Result<u64, Stop> {
        if self.dead {
            return Err(Stop::Host("the machine has bugchecked; no further calls".into()));
        }
        let saved = if self.depth > 0 {
            let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
            let fpu = self.vcpu.get_fpu().map_err(|e| kvm_err("GET_FPU", e))?;
            Some((regs, fpu))
        } else {
            None
        };
        let top = saved.as_ref().map_or(self.stack_top, |(r, _)| (r.rsp - 128) & !0xF);
        let stack_args = args.len().saturating_sub(4) as u64;
        let rsp = ((top - 32 - 8 * stack_args) & !0xF) - 8;
        if rsp < self.stack_bottom + 512 {
            return Err(self.bugcheck_now(kernel, 0x7F, "UNEXPECTED_KERNEL_MODE_TRAP (stack overflow)", [8, 0, 0, 0]));
        }
        self.write_u64(rsp, RETURN_TRAP_VA)?;
        for (i, arg) in args.iter().enumerate().skip(4) {
            self.write_u64(rsp + 0x28 + 8 * (i as u64 - 4), *arg)?;
        }
        let mut regs = saved.as_ref().map_or_else(kvm_regs::default, |(r, _)| *r);
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        regs.rcx = arg(0);
        regs.rdx = arg(1);
        regs.r8 = arg(2);
        regs.r9 = arg(3);
        regs.rsp = rsp;
        regs.rip = function;
        regs.rflags = GUEST_RFLAGS;
        regs.rax = 0;
        self.vcpu.set_regs(&regs).map_err(|e| kvm_err("SET_REGS", e))?;
        self.depth += 1;
        self.counts.guest_calls += 1;
        let result = self.run(kernel);
        self.depth -= 1;
        if result.is_err() {
            self.dead = true;
        }
        if let Some((regs, fpu)) = saved {
            if !self.dead {
                self.vcpu.set_regs(&regs).map_err(|e| kvm_err("SET_REGS", e))?;
                self.set_fpu(&fpu)?;
            }
        }
        result
    }

    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<(), Stop> {
        self.vcpu.set_fpu(fpu).map_err(|e| kvm_err("SET_FPU", e))
    }

    /// Whether the machine has stopped for good (a bugcheck).
    #[must_use]
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Makes the stub call in progress end the machine with `stop` (for
    /// `KeBugCheckEx`, or a fatal Verifier finding): the stub's return value
    /// is ignored and every guest call returns `stop`.
    pub fn stop_with(&mut self, stop: Stop) {
        self.pending_stop = Some(stop);
    }

    /// Completes an I/O exit so the registers can be read and changed
    /// (`KVM_RUN` with `immediate_exit`, as the KVM API documents).
    fn complete_io(&mut self) -> Result<(), Stop> {
        self.vcpu.set_kvm_immediate_exit(1);
        let result = self.vcpu.run();
        let ok = match result {
            Err(e) => e.errno() == libc::EINTR,
            Ok(VcpuExit::Intr) => true,
            Ok(_) => false,
        };
        self.vcpu.set_kvm_immediate_exit(0);
        if ok {
            Ok(())
        } else {
            Err(Stop::Host("KVM_RUN with immediate_exit did not return EINTR".into()))
        }
    }

    fn run<K: Kernel + ?Sized>(&mut self, kernel: &mut K) -> Result<u64, Stop> {
        enum Exit {
            Port(u16, u32),
            MmioRead(u64, usize),
            MmioWrite(u64, [u8; 8], usize),
            Other(String),
        }
        loop {
            if self.space.needs_flush {
                self.flush_tlb()?;
            }
            let entered = std::time::Instant::now();
            let ran = self.vcpu.run();
            self.counts.guest_ns += u64::try_from(entered.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let exit = match ran {
                Ok(VcpuExit::IoOut(port, data)) => {
                    let mut v = [0u8; 4];
                    let n = data.len().min(4);
                    v[..n].copy_from_slice(&data[..n]);
                    Exit::Port(port, u32::from_le_bytes(v))
                }
                Ok(VcpuExit::MmioRead(gpa, data)) => Exit::MmioRead(gpa, data.len()),
                Ok(VcpuExit::MmioWrite(gpa, data)) => {
                    let mut v = [0u8; 8];
                    let n = data.len().min(8);
                    v[..n].copy_from_slice(&data[..n]);
                    Exit::MmioWrite(gpa, v, n)
                }
                Ok(other) => Exit::Other(format!("{other:?}")),
                Err(e) if e.errno() == libc::EINTR => {
                    self.preempted(kernel)?;
                    continue;
                }
                Err(e) => return Err(kvm_err("RUN", e)),
            };
            self.counts.exits += 1;
            match exit {
                Exit::Port(PORT_STUB, index) => {
                    self.complete_io()?;
                    self.counts.stub_calls += 1;
                    self.note_stack()?;
                    self.stub_irql = kernel.irql();
                    let value = kernel.stub_called(self, index)?;
                    if let Some(stop) = self.pending_stop.take() {
                        return Err(stop);
                    }
                    let mut regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
                    regs.rax = value;
                    self.vcpu.set_regs(&regs).map_err(|e| kvm_err("SET_REGS", e))?;
                    kernel.at_exit(self)?;
                    if let Some(stop) = self.pending_stop.take() {
                        return Err(stop);
                    }
                }
                Exit::Port(PORT_RETURN, _) => {
                    self.complete_io()?;
                    let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
                    return Ok(regs.rax);
                }
                Exit::Port(PORT_EXCEPTION, vector) => {
                    self.complete_io()?;
                    let vector = u8::try_from(vector).unwrap_or(0xFF);
                    self.exception(kernel, vector)?;
                }
                Exit::Port(port, value) => {
                    return Err(Stop::Host(format!("unexpected `out {port:#x}, {value:#x}` from the guest")));
                }
                Exit::MmioRead(gpa, len) => {
                    self.counts.mmio += 1;
                    let mut data = [0u8; 8];
                    kernel.mmio_read(self, gpa, &mut data[..len])?;
                    // The exit's buffer is the vCPU's run structure; fill it
                    // by running into the same exit view again.
                    self.finish_mmio_read(&data[..len]);
                }
                Exit::MmioWrite(gpa, data, len) => {
                    self.counts.mmio += 1;
                    kernel.mmio_write(self, gpa, &data[..len])?;
                }
                Exit::Other(what) => {
                    let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
                    return Err(Stop::Host(format!(
                        "VM exit {what} at {}",
                        self.describe(regs.rip)
                    )));
                }
            }
        }
    }

    /// Puts the data of an MMIO read into the run structure so the next
    /// `KVM_RUN` completes the guest's load with it.
    fn finish_mmio_read(&mut self, data: &[u8]) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_MMIO (a read), so the `mmio`
        // member of the run structure's exit union is the active one.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let n = (mmio.len as usize).min(data.len()).min(mmio.data.len());
        mmio.data[..n].copy_from_slice(&data[..n]);
    }

    /// A kick stopped the guest: offer the point to the kernel when the
    /// guest was in its own code (CPL3), and arm the next kick.
    fn preempted<K: Kernel + ?Sized>(&mut self, kernel: &mut K) -> Result<(), Stop> {
        let Some(kick) = self.kick.as_mut() else { return Ok(()) };
        kick.rearm();
        let sregs = self.vcpu.get_sregs().map_err(|e| kvm_err("GET_SREGS", e))?;
        if sregs.cs.selector & 3 == 3 {
            self.counts.preemptions += 1;
            kernel.at_preemption(self)?;
            if let Some(stop) = self.pending_stop.take() {
                return Err(stop);
            }
        }
        Ok(())
    }

    /// Makes the guest see unmapped or weakened pages. Reloading CR3
    /// (`KVM_SET_SREGS`) is not enough: the host edits the guest's page
    /// tables behind KVM's back, and a shadow-paging backend (`kvm_pvm`
    /// here) keeps the shadow entries of pages the guest already touched,
    /// so a use after free would go unnoticed. Removing and re-adding the
    /// memory slot that holds the page tables makes KVM drop every shadow
    /// page built from them; the guest then faults in fresh translations.
    /// (A few milliseconds: it happens only when a mapping was removed or
    /// weakened, at most once per guest entry.)
    fn flush_tlb(&mut self) -> Result<(), Stop> {
        let sregs = self.vcpu.get_sregs().map_err(|e| kvm_err("GET_SREGS", e))?;
        self.vcpu.set_sregs(&sregs).map_err(|e| kvm_err("SET_SREGS", e))?;
        let tables = self.space.cr3();
        let host_base = self.mem.host_base() as u64;
        if let Some((slot, range)) = self.mem.ram().iter().enumerate().find(|(_, r)| r.contains(tables, PAGE_SIZE)) {
            let slot = u32::try_from(slot).map_err(|e| kvm_err("slot", e))?;
            for memory_size in [0, range.len] {
                let region = kvm_userspace_memory_region {
                    slot,
                    flags: 0,
                    guest_phys_addr: range.gpa,
                    memory_size,
                    userspace_addr: host_base + range.gpa,
                };
                // SAFETY: the region `Machine::new` registered for this
                // slot (removed, then the same again): the host range is
                // valid for as long as the memory, owned by this machine,
                // lives; the vCPU is not running.
                unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| kvm_err("SET_USER_MEMORY_REGION", e))?;
            }
        }
        self.space.needs_flush = false;
        Ok(())
    }

    fn note_stack(&mut self) -> Result<(), Stop> {
        let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
        if regs.rsp >= self.stack_bottom && regs.rsp < self.lowest_rsp {
            self.lowest_rsp = regs.rsp;
        }
        Ok(())
    }

    /// Handles the exception whose handler just left with `vector`.
    fn exception<K: Kernel + ?Sized>(&mut self, kernel: &mut K, vector: u8) -> Result<(), Stop> {
        let regs = self.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
        // Trap stack: [saved rax] [error code] rip cs rflags rsp ss.
        let saved_rax_at = regs.rsp;
        let mut frame = regs.rsp + 8;
        let error_code = if VECTORS_WITH_ERROR_CODE.contains(&vector) {
            let code = self.read_u64(frame)?;
            frame += 8;
            Some(code)
        } else {
            None
        };
        let rip = self.read_u64(frame)?;
        let user_rsp = self.read_u64(frame + 24)?;
        let saved_rax = self.read_u64(saved_rax_at)?;
        if vector == 13 {
            if let Some(length) = self.emulate_cr8(kernel, rip, &regs, saved_rax_at)? {
                self.counts.cr8_traps += 1;
                self.write_u64(frame, rip + length)?;
                return Ok(());
            }
        }
        let sregs = self.vcpu.get_sregs().map_err(|e| kvm_err("GET_SREGS", e))?;
        let cr2 = (vector == 14).then_some(sregs.cr2);
        let mut gpr = gprs(&regs);
        gpr[0] = saved_rax;
        gpr[4] = user_rsp;
        let irql = kernel.irql();
        let (code, name, parameters) = match vector {
            14 => {
                let write = error_code.unwrap_or(0) & 2 != 0;
                if let Some(named) = kernel.page_fault(sregs.cr2, write, rip) {
                    named
                } else {
                    // The access kind as each bug check page encodes it:
                    // 0xD1 parameter 3 is 0 read, 1 write, 8 execute; 0x50
                    // parameter 2 is 0 read, 2 write, 0x10 execute.
                    let execute = error_code.unwrap_or(0) & 0x10 != 0;
                    let (d1, p50) = match (execute, write) {
                        (true, _) => (8, 0x10),
                        (false, true) => (1, 2),
                        (false, false) => (0, 0),
                    };
                    if irql >= 2 {
                        (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL", [sregs.cr2, u64::from(irql), d1, rip])
                    } else {
                        (0x50, "PAGE_FAULT_IN_NONPAGED_AREA", [sregs.cr2, p50, rip, 0])
                    }
                }
            }
            0x29 => (0x139, "KERNEL_SECURITY_CHECK_FAILURE", [gpr[1], 0, 0, 0]),
            0 => (0x1E, "KMODE_EXCEPTION_NOT_HANDLED", [0xC000_0094, rip, 0, 0]),
            3 => (0x1E, "KMODE_EXCEPTION_NOT_HANDLED", [0x8000_0003, rip, 0, 0]),
            6 => (0x1E, "KMODE_EXCEPTION_NOT_HANDLED", [0xC000_001D, rip, 0, 0]),
            13 => (0x1E, "KMODE_EXCEPTION_NOT_HANDLED", [0xC000_0005, rip, 0, 0]),
            _ => (0x7F, "UNEXPECTED_KERNEL_MODE_TRAP", [u64::from(vector), 0, 0, 0]),
        };
        let mut frame_regs = FrameRegisters { gpr, rip };
        let stack = self.stack_walk(&mut frame_regs);
        Err(Stop::Bugcheck(Box::new(BugcheckReport {
            code,
            name: name.into(),
            parameters,
            vector: Some(vector),
            error_code,
            cr2,
            rip,
            irql,
            stack,
            registers: gpr,
        })))
    }

    /// If the instruction at `rip` is `mov cr8, r64` or `mov r64, cr8`,
    /// performs it and returns its length.
    fn emulate_cr8<K: Kernel + ?Sized>(
        &mut self,
        kernel: &mut K,
        rip: u64,
        regs: &kvm_regs,
        saved_rax_at: u64,
    ) -> Result<Option<u64>, Stop> {
        let mut code = [0u8; 15];
        if self.read(rip, &mut code).is_err() {
            return Ok(None);
        }
        let ins = Decoder::with_ip(64, &code, rip, DecoderOptions::NONE).decode();
        if ins.mnemonic() != Mnemonic::Mov || ins.op_count() != 2 {
            return Ok(None);
        }
        let length = ins.len() as u64;
        if ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::CR8 {
            let value = read_gpr(self, regs, ins.op1_register(), saved_rax_at)?;
            kernel.set_irql_by_cr8(self, u8::try_from(value & 0xF).unwrap_or(0xF))?;
            return Ok(Some(length));
        }
        if ins.op1_kind() == OpKind::Register && ins.op1_register() == Register::CR8 {
            let value = u64::from(kernel.irql());
            write_gpr(self, ins.op0_register(), value, saved_rax_at)?;
            return Ok(Some(length));
        }
        Ok(None)
    }

    /// A bugcheck raised by the kernel itself (`KeBugCheckEx`, a fatal
    /// Verifier finding) while a stub call is in progress: the stack walk
    /// starts at the stub's caller.
    pub fn bugcheck_now<K: Kernel + ?Sized>(&mut self, kernel: &K, code: u32, name: &str, parameters: [u64; 4]) -> Stop {
        let Ok(regs) = self.vcpu.get_regs() else {
            return Stop::Host(format!("bugcheck {code:#x} {name} (registers unreadable)"));
        };
        let gpr = gprs(&regs);
        let mut frame = FrameRegisters { gpr, rip: regs.rip };
        let stack = self.stack_walk(&mut frame);
        self.dead = true;
        Stop::Bugcheck(Box::new(BugcheckReport {
            code,
            name: name.into(),
            parameters,
            vector: None,
            error_code: None,
            cr2: None,
            rip: regs.rip,
            irql: kernel.irql(),
            stack,
            registers: gpr,
        }))
    }

    /// A bugcheck for a bad address the kernel was asked to touch.
    fn kernel_fault(&self, va: u64, write: bool) -> Stop {
        let regs = self.vcpu.get_regs().unwrap_or_default();
        let gpr = gprs(&regs);
        let mut frame = FrameRegisters { gpr, rip: regs.rip };
        let stack = self.stack_walk(&mut frame);
        let irql = self.stub_irql;
        // As a fault in the kernel on the driver's behalf: at or above
        // DISPATCH_LEVEL 0xA (parameter 3: 0 read, 1 write), else 0x50
        // (parameter 2: 0 read, 2 write).
        let (code, name, parameters) = if irql >= 2 {
            (0xA, "IRQL_NOT_LESS_OR_EQUAL (in a DDI, on an address the driver passed)", [va, u64::from(irql), u64::from(write), regs.rip])
        } else {
            (0x50, "PAGE_FAULT_IN_NONPAGED_AREA (in a DDI, on an address the driver passed)", [va, if write { 2 } else { 0 }, regs.rip, 0])
        };
        Stop::Bugcheck(Box::new(BugcheckReport {
            code,
            name: name.into(),
            parameters,
            vector: None,
            error_code: None,
            cr2: Some(va),
            rip: regs.rip,
            irql,
            stack,
            registers: gpr,
        }))
    }

    /// `symbol+offset` (or `image+offset`, a stub's name, or the raw
    /// address) for `va`.
    #[must_use]
    pub fn describe(&self, va: u64) -> String {
        if let Some(image) = self.images.iter().find(|i| i.contains(va)) {
            return image
                .symbols
                .describe(va)
                .unwrap_or_else(|| format!("{}+{:#x}", image.name, va - image.base));
        }
        if (STUBS_VA..STUBS_VA + self.stub_pages * PAGE_SIZE).contains(&va) {
            let index = u32::try_from((va - STUBS_VA) / 8).unwrap_or(u32::MAX);
            return format!("<stub {}>", self.stub_name(index));
        }
        if (RETURN_TRAP_VA..RETURN_TRAP_VA + 8).contains(&va) {
            return "<return to host>".into();
        }
        format!("{va:#018x}")
    }

    /// Walks the stack from `regs`, innermost first; stops at the host
    /// return trap, an address outside every image, or after 64 frames.
    fn stack_walk(&self, regs: &mut FrameRegisters) -> Vec<String> {
        let mut frames = vec![self.describe(regs.rip)];
        for _ in 0..64 {
            if (RETURN_TRAP_VA..RETURN_TRAP_VA + 8).contains(&regs.rip) {
                break;
            }
            if unwind_frame(self, regs).is_none() {
                frames.push("<unwind failed>".into());
                break;
            }
            frames.push(self.describe(regs.rip));
            let in_image = self.images.iter().any(|i| i.contains(regs.rip));
            if !in_image {
                break;
            }
        }
        frames
    }
}

impl UnwindSource for Machine {
    fn image_at(&self, va: u64) -> Option<(u64, (u32, u32))> {
        self.images.iter().find(|i| i.contains(va)).map(|i| (i.base, i.pdata))
    }

    fn read(&self, va: u64, buf: &mut [u8]) -> Option<()> {
        Machine::read(self, va, buf).ok()
    }
}

fn gprs(regs: &kvm_regs) -> [u64; 16] {
    [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8, regs.r9, regs.r10,
        regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ]
}

fn read_gpr(m: &Machine, regs: &kvm_regs, register: Register, saved_rax_at: u64) -> Result<u64, Stop> {
    let full = register.full_register();
    Ok(match full {
        Register::RAX => m.read_u64(saved_rax_at)?,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RBX => regs.rbx,
        Register::RBP => regs.rbp,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        other => return Err(Stop::Host(format!("CR8 access through {other:?}"))),
    })
}

fn write_gpr(m: &mut Machine, register: Register, value: u64, saved_rax_at: u64) -> Result<(), Stop> {
    if register.full_register() == Register::RAX {
        return m.write_u64(saved_rax_at, value);
    }
    let mut regs = m.vcpu.get_regs().map_err(|e| kvm_err("GET_REGS", e))?;
    let slot = match register.full_register() {
        Register::RCX => &mut regs.rcx,
        Register::RDX => &mut regs.rdx,
        Register::RBX => &mut regs.rbx,
        Register::RBP => &mut regs.rbp,
        Register::RSI => &mut regs.rsi,
        Register::RDI => &mut regs.rdi,
        Register::R8 => &mut regs.r8,
        Register::R9 => &mut regs.r9,
        Register::R10 => &mut regs.r10,
        Register::R11 => &mut regs.r11,
        Register::R12 => &mut regs.r12,
        Register::R13 => &mut regs.r13,
        Register::R14 => &mut regs.r14,
        Register::R15 => &mut regs.r15,
        other => return Err(Stop::Host(format!("CR8 access through {other:?}"))),
    };
    *slot = value;
    m.vcpu.set_regs(&regs).map_err(|e| kvm_err("SET_REGS", e))
}

/// The imports of the image at `path`, `(module, symbol)`, without loading it.
fn pe_imports(path: &Path) -> Result<Vec<(String, String)>, Stop> {
    use object::read::pe::PeFile64;
    let data = std::fs::read(path).map_err(|e| Stop::Host(format!("{}: {e}", path.display())))?;
    let file = PeFile64::parse(&*data).map_err(|e| Stop::Host(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let bad = |e: object::Error| Stop::Host(format!("{}: {e}", path.display()));
    if let Some(table) = file.data_directories().import_table(&*data, &file.section_table()).map_err(bad)? {
        let mut descriptors = table.descriptors().map_err(bad)?;
        while let Some(d) = descriptors.next().map_err(bad)? {
            let module = String::from_utf8_lossy(table.name(d.name.get(object::LittleEndian)).map_err(bad)?).into_owned();
            let lookup = match d.original_first_thunk.get(object::LittleEndian) {
                0 => d.first_thunk.get(object::LittleEndian),
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).map_err(bad)?;
            while let Some(thunk) = thunks.next::<object::pe::ImageNtHeaders64>().map_err(bad)? {
                if let object::read::pe::Import::Name(_, name) =
                    table.import::<object::pe::ImageNtHeaders64>(thunk).map_err(bad)?
                {
                    out.push((module.clone(), String::from_utf8_lossy(name).into_owned()));
                }
            }
        }
    }
    Ok(out)
}
