//! The S/G pin's table of frames in flight: one `KsStreamPointerClone` per
//! frame posted with `ProgramFrame` (or in parts with `ProgramFramePart`),
//! found again by the completion's tag.
//!
//! It also records which frames were posted in parts (their `FramePart`
//! completions are expected) and the *open* frame: the one frame posted in
//! parts whose rest is still to be posted (at most one per channel, by the
//! contract). The open frame is always an entry of the table: taking its
//! entry closes it.
//!
//! Fixed size ([`MAX_CLONES`], the bus's in-flight limit too), no
//! allocation. A tag is `generation << 8 | index`: the index finds the
//! entry, the generation makes a stale or repeated tag miss instead of
//! completing the wrong frame.

/// Most frames in flight per pin.
pub const MAX_CLONES: usize = 32;
const INDEX_BITS: u32 = 8;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const _: () = assert!(MAX_CLONES <= 1 << INDEX_BITS);

#[derive(Clone, Copy, Debug)]
struct Entry<P> {
    pointer: P,
    tag: u32,
    /// Posted in parts (`ProgramFramePart`).
    parts: bool,
}

/// The table; `P` is the port's `StreamPointer`.
#[derive(Debug)]
pub struct CloneTable<P: Copy> {
    entries: [Option<Entry<P>>; MAX_CLONES],
    generation: u32,
    in_flight: u32,
    open: Option<u32>,
}

impl<P: Copy> CloneTable<P> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self { entries: [None; MAX_CLONES], generation: 0, in_flight: 0, open: None }
    }

    /// A free entry's index, if any.
    #[must_use]
    pub fn free_index(&self) -> Option<usize> {
        self.entries.iter().position(Option::is_none)
    }

    /// Stores `pointer` at free entry `index` and returns its new tag;
    /// `None` (nothing stored) when `index` is out of range or taken.
    pub fn insert(&mut self, index: usize, pointer: P) -> Option<u32> {
        let slot = self.entries.get_mut(index)?;
        if slot.is_some() {
            return None;
        }
        self.generation = self.generation.wrapping_add(1) & (u32::MAX >> INDEX_BITS);
        let tag = (self.generation << INDEX_BITS) | u32::try_from(index).ok()?;
        *slot = Some(Entry { pointer, tag, parts: false });
        self.in_flight = self.in_flight.saturating_add(1);
        Some(tag)
    }

    fn entry_mut(&mut self, tag: u32) -> Option<&mut Entry<P>> {
        let index = usize::try_from(tag & INDEX_MASK).ok()?;
        self.entries.get_mut(index)?.as_mut().filter(|e| e.tag == tag)
    }

    /// Removes and returns the pointer stored under `tag` (any `u32`;
    /// `None` for a tag that is not in flight). Closes the open frame if
    /// it is this one.
    pub fn take(&mut self, tag: u32) -> Option<P> {
        let index = usize::try_from(tag & INDEX_MASK).ok()?;
        let slot = self.entries.get_mut(index)?;
        match *slot {
            Some(e) if e.tag == tag => {
                *slot = None;
                self.in_flight = self.in_flight.saturating_sub(1);
                self.close(tag);
                Some(e.pointer)
            }
            _ => None,
        }
    }

    /// Removes and returns any pointer still in flight (teardown); closes
    /// the open frame if it is that one.
    pub fn take_any(&mut self) -> Option<P> {
        let slot = self.entries.iter_mut().find(|e| e.is_some())?;
        let e = slot.take()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.close(e.tag);
        Some(e.pointer)
    }

    /// Marks the frame under `tag` as posted in parts and makes it the open
    /// frame (replacing any other). `false` (nothing changed) for a tag not
    /// in flight.
    pub fn open(&mut self, tag: u32) -> bool {
        let Some(entry) = self.entry_mut(tag) else {
            return false;
        };
        entry.parts = true;
        self.open = Some(tag);
        true
    }

    /// The open frame's tag, if a frame is open.
    #[must_use]
    pub fn open_frame(&self) -> Option<u32> {
        self.open
    }

    /// Closes the open frame if its tag is `tag` (its entry stays); answers
    /// whether it was open.
    pub fn close(&mut self, tag: u32) -> bool {
        let was = self.open == Some(tag);
        if was {
            self.open = None;
        }
        was
    }

    /// Forgets the open frame, whichever it is (its entry stays).
    pub fn forget_open(&mut self) {
        self.open = None;
    }

    /// Whether `tag` is in flight and was posted in parts (open or not).
    #[must_use]
    pub fn in_parts(&self, tag: u32) -> bool {
        let Ok(index) = usize::try_from(tag & INDEX_MASK) else {
            return false;
        };
        self.entries.get(index).copied().flatten().is_some_and(|e| e.tag == tag && e.parts)
    }

    /// Whether a frame posted in parts is in flight (open or not).
    #[must_use]
    pub fn parts_in_flight(&self) -> bool {
        self.entries.iter().flatten().any(|e| e.parts)
    }

    /// Frames in flight.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
}

impl<P: Copy> Default for CloneTable<P> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_find_their_entries_once() {
        let mut t = CloneTable::<u32>::new();
        let mut tags = Vec::new();
        for p in 0..MAX_CLONES {
            let i = t.free_index().unwrap();
            tags.push(t.insert(i, u32::try_from(p).unwrap()).unwrap());
        }
        assert_eq!(t.free_index(), None);
        assert_eq!(t.in_flight(), 32);
        assert_eq!(t.take(tags[5]), Some(5));
        assert_eq!(t.take(tags[5]), None, "twice");
        let i = t.free_index().unwrap();
        let fresh = t.insert(i, 77).unwrap();
        assert_eq!(t.take(tags[5]), None, "stale tag of a reused entry");
        assert_eq!(t.take(fresh), Some(77));
        assert_eq!(t.take(u32::MAX), None);
        assert_eq!(t.take(0xFF), None);
        assert!(t.insert(0, 1).is_none(), "taken");
        assert!(t.insert(MAX_CLONES, 1).is_none(), "out of range");
        let mut n = 0;
        while t.take_any().is_some() {
            n += 1;
        }
        assert_eq!((n, t.in_flight()), (31, 0));
    }

    #[test]
    fn the_open_frame_is_an_entry_and_closes_with_it() {
        let mut t = CloneTable::<u32>::new();
        let whole = t.insert(0, 10).unwrap();
        let parted = t.insert(1, 11).unwrap();
        assert!(!t.open(parted ^ 0x100), "a stale tag opens nothing");
        assert_eq!(t.open_frame(), None);
        assert!(t.open(parted));
        assert_eq!(t.open_frame(), Some(parted));
        assert!(t.in_parts(parted) && !t.in_parts(whole) && !t.in_parts(u32::MAX));
        assert!(!t.close(whole), "not the open frame");
        assert_eq!(t.open_frame(), Some(parted));
        assert!(t.close(parted));
        assert_eq!(t.open_frame(), None);
        assert!(t.in_parts(parted), "closed, still in flight in parts");
        // Taking the open frame's entry closes it; taking another does not.
        assert!(t.open(parted));
        assert_eq!(t.take(whole), Some(10));
        assert_eq!(t.open_frame(), Some(parted));
        assert_eq!(t.take(parted), Some(11));
        assert_eq!(t.open_frame(), None);
        assert!(!t.in_parts(parted));
        // Teardown closes it too, and forgetting leaves the entry.
        let a = t.insert(2, 12).unwrap();
        assert!(t.open(a));
        t.forget_open();
        assert_eq!((t.open_frame(), t.in_parts(a)), (None, true));
        assert!(t.open(a));
        assert_eq!(t.take_any(), Some(12));
        assert_eq!(t.open_frame(), None);
    }
}
