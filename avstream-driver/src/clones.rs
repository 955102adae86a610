//! The S/G pin's table of frames in flight: one `KsStreamPointerClone` per
//! frame posted with `ProgramFrame`, found again by the completion's tag.
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
}

/// The table; `P` is the port's `StreamPointer`.
#[derive(Debug)]
pub struct CloneTable<P: Copy> {
    entries: [Option<Entry<P>>; MAX_CLONES],
    generation: u32,
    in_flight: u32,
}

impl<P: Copy> CloneTable<P> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self { entries: [None; MAX_CLONES], generation: 0, in_flight: 0 }
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
        *slot = Some(Entry { pointer, tag });
        self.in_flight = self.in_flight.saturating_add(1);
        Some(tag)
    }

    /// Removes and returns the pointer stored under `tag` (any `u32`;
    /// `None` for a tag that is not in flight).
    pub fn take(&mut self, tag: u32) -> Option<P> {
        let index = usize::try_from(tag & INDEX_MASK).ok()?;
        let slot = self.entries.get_mut(index)?;
        match *slot {
            Some(e) if e.tag == tag => {
                *slot = None;
                self.in_flight = self.in_flight.saturating_sub(1);
                Some(e.pointer)
            }
            _ => None,
        }
    }

    /// Removes and returns any pointer still in flight (teardown).
    pub fn take_any(&mut self) -> Option<P> {
        let slot = self.entries.iter_mut().find(|e| e.is_some())?;
        let e = slot.take()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(e.pointer)
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
}
