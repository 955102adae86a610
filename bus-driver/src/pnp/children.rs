//! The child PDOs: which exist, how `IRP_MN_QUERY_DEVICE_RELATIONS`
//! (`BusRelations`) reports them, and who deletes a child PDO when.
//!
//! One child PDO per channel of the board, created at the FDO's start and
//! reported by `BusRelations`. Deletion follows the WDM bus-driver rules:
//!
//! | event | child | action |
//! |---|---|---|
//! | child's `IRP_MN_REMOVE_DEVICE` | still present (reported in the last `BusRelations`) | stays, back to `NotStarted` ([`PnpEvent::RemoveKeep`]) |
//! | child's `IRP_MN_REMOVE_DEVICE` | reported missing | deletes itself ([`PnpEvent::Remove`]) |
//! | parent FDO's `IRP_MN_REMOVE_DEVICE` | surprise-removed, its own removal still to come | left to delete itself ([`ParentRemoval::LeaveToChild`]) |
//! | parent FDO's `IRP_MN_REMOVE_DEVICE` | any other state | the parent deletes it ([`ParentRemoval::DeleteNow`]) |
use super::state::{PnpEvent, PnpState};
use crate::device::MAX_CHANNELS;

/// A set of channels (bit `n` = channel `n`).
pub type ChildSet = u32;

const _: () = assert!(MAX_CHANNELS <= ChildSet::BITS as usize);

/// The channels `0..channel_count` (capped to [`MAX_CHANNELS`]).
#[must_use]
#[allow(clippy::cast_possible_truncation, reason = "MAX_CHANNELS is 8, asserted to fit a ChildSet")]
pub const fn channels(channel_count: u32) -> ChildSet {
    let count = if channel_count as usize > MAX_CHANNELS { MAX_CHANNELS as u32 } else { channel_count };
    if count >= ChildSet::BITS {
        ChildSet::MAX
    } else {
        (1 << count) - 1
    }
}

/// What a start must change in the child set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildPlan {
    /// Channels whose child PDO must be created.
    pub create: ChildSet,
    /// Children that must be marked not present (and reported missing by
    /// the next `BusRelations`): the board now has fewer channels.
    pub report_missing: ChildSet,
}

impl ChildPlan {
    /// Whether the child set changes (then `IoInvalidateDeviceRelations(BusRelations)`).
    #[must_use]
    pub const fn changes(self) -> bool {
        self.create != 0 || self.report_missing != 0
    }
}

/// The plan for a start that found `channel_count` channels while the
/// children in `present` exist and are present.
#[must_use]
pub const fn plan_children(present: ChildSet, channel_count: u32) -> ChildPlan {
    let wanted = channels(channel_count);
    ChildPlan { create: wanted & !present, report_missing: present & !wanted }
}

/// How a child PDO's `IRP_MN_REMOVE_DEVICE` ends: [`PnpEvent::Remove`]
/// (delete the PDO) once it was reported missing, else
/// [`PnpEvent::RemoveKeep`].
#[must_use]
pub const fn child_remove_event(reported_missing: bool) -> PnpEvent {
    if reported_missing {
        PnpEvent::Remove
    } else {
        PnpEvent::RemoveKeep
    }
}

/// What the parent FDO's removal does with one of its child PDOs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentRemoval {
    /// Delete the child PDO now (`IoDeleteDevice`).
    DeleteNow,
    /// Detach the child from the parent and mark it missing; its own
    /// pending `IRP_MN_REMOVE_DEVICE` deletes it.
    LeaveToChild,
    /// Already deleted: nothing to do.
    Gone,
}

/// The parent's decision for a child in `state` (see the module table).
#[must_use]
pub const fn on_parent_removal(state: PnpState) -> ParentRemoval {
    match state {
        PnpState::SurpriseRemoved => ParentRemoval::LeaveToChild,
        PnpState::Deleted => ParentRemoval::Gone,
        _ => ParentRemoval::DeleteNow,
    }
}

/// Bytes of a `DEVICE_RELATIONS` holding `count` device objects
/// (`FIELD_OFFSET(DEVICE_RELATIONS, Objects) + count * sizeof(PDEVICE_OBJECT)`,
/// at least `sizeof(DEVICE_RELATIONS)`); `None` on overflow or a count
/// that does not fit the structure's `ULONG Count`.
#[must_use]
pub const fn device_relations_bytes(count: usize) -> Option<usize> {
    let pointer = size_of::<usize>();
    // `ULONG Count` padded to the pointer alignment.
    let header = if pointer > 4 { pointer } else { 4 };
    if count > u32::MAX as usize {
        return None;
    }
    let slots = if count == 0 { 1 } else { count };
    match slots.checked_mul(pointer) {
        Some(objects) => header.checked_add(objects),
        None => None,
    }
}

/// The number of objects in a `BusRelations` answer that keeps the
/// `existing` entries an upper driver already put in the IRP and adds
/// `ours`; `None` on overflow.
#[must_use]
pub const fn merged_relations_count(existing: u32, ours: u32) -> Option<u32> {
    existing.checked_add(ours)
}

/// The channels in `set`, lowest first.
pub fn iter(set: ChildSet) -> impl Iterator<Item = u32> {
    (0..ChildSet::BITS).filter(move |bit| set & (1 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_sets() {
        assert_eq!(channels(0), 0);
        assert_eq!(channels(1), 0b1);
        assert_eq!(channels(4), 0b1111);
        assert_eq!(channels(100), channels(u32::try_from(MAX_CHANNELS).unwrap()), "capped");
        assert_eq!(iter(0b1010).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn first_start_creates_every_channel() {
        let plan = plan_children(0, 4);
        assert_eq!(plan, ChildPlan { create: 0b1111, report_missing: 0 });
        assert!(plan.changes());
    }

    #[test]
    fn restart_with_the_same_board_changes_nothing() {
        let plan = plan_children(0b11, 2);
        assert_eq!(plan, ChildPlan { create: 0, report_missing: 0 });
        assert!(!plan.changes());
    }

    #[test]
    fn fewer_or_more_channels_after_a_restart() {
        assert_eq!(plan_children(0b1111, 2), ChildPlan { create: 0, report_missing: 0b1100 });
        assert_eq!(plan_children(0b11, 3), ChildPlan { create: 0b100, report_missing: 0 });
    }

    #[test]
    fn child_removal_keeps_a_present_child() {
        assert_eq!(child_remove_event(false), PnpEvent::RemoveKeep);
        assert_eq!(child_remove_event(true), PnpEvent::Remove);
    }

    #[test]
    fn parent_removal_leaves_surprise_removed_children_to_themselves() {
        assert_eq!(on_parent_removal(PnpState::SurpriseRemoved), ParentRemoval::LeaveToChild);
        assert_eq!(on_parent_removal(PnpState::Deleted), ParentRemoval::Gone);
        for s in [PnpState::NotStarted, PnpState::Started, PnpState::Stopped, PnpState::RemovePending] {
            assert_eq!(on_parent_removal(s), ParentRemoval::DeleteNow, "{s:?}");
        }
    }

    #[test]
    fn device_relations_sizes_match_the_x64_structure() {
        // sizeof(DEVICE_RELATIONS) on x64 is 16: Count, padding, Objects[1].
        assert_eq!(device_relations_bytes(0), Some(16));
        assert_eq!(device_relations_bytes(1), Some(16));
        assert_eq!(device_relations_bytes(3), Some(8 + 3 * 8));
        assert_eq!(device_relations_bytes(usize::MAX), None);
        assert_eq!(device_relations_bytes(usize::try_from(u32::MAX).unwrap() + 1), None);
        assert_eq!(merged_relations_count(2, 4), Some(6));
        assert_eq!(merged_relations_count(u32::MAX, 1), None);
    }
}
