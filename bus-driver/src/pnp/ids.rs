//! The child PDO's identity as the UTF-16 strings `IRP_MN_QUERY_ID` and
//! `IRP_MN_QUERY_DEVICE_TEXT` return, from [`capdma_interface::identity`].
//!
//! The builders never allocate: they write into a caller buffer and return
//! the length the answer needs, in UTF-16 code units **including** every
//! terminating NUL. They write only when the buffer is large enough, so the
//! glue calls them twice: once with an empty slice to learn the length,
//! then with the pool buffer it allocated (`ExAllocatePool2(POOL_FLAG_PAGED)`,
//! freed by the Plug and Play manager).
//!
//! | `BUS_QUERY_ID_TYPE` | answer | format |
//! |---|---|---|
//! | `BusQueryDeviceID` (0) | `CAPDMA\Channel` | `REG_SZ` |
//! | `BusQueryHardwareIDs` (1) | `CAPDMA\Channel` | `REG_MULTI_SZ` (double NUL) |
//! | `BusQueryCompatibleIDs` (2) | `CAPDMA\CaptureChannel` | `REG_MULTI_SZ` |
//! | `BusQueryInstanceID` (3) | the channel number in decimal | `REG_SZ` |
//! | others (serial number, container ID) | not answered: the IRP is completed untouched | — |
use capdma_interface::identity::{CHILD_COMPATIBLE_ID, CHILD_DEVICE_ID, CHILD_DEVICE_TEXT, CHILD_HARDWARE_ID};

/// The identifiers a child PDO answers (`Parameters.QueryId.IdType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildId {
    /// `BusQueryDeviceID`.
    DeviceId,
    /// `BusQueryHardwareIDs`.
    HardwareIds,
    /// `BusQueryCompatibleIDs`.
    CompatibleIds,
    /// `BusQueryInstanceID`.
    InstanceId,
}

impl ChildId {
    /// Decodes `BUS_QUERY_ID_TYPE`; `None` for the types a child does not
    /// answer (`BusQueryDeviceSerialNumber`, `BusQueryContainerID`, unknown).
    #[must_use]
    pub const fn from_bus_query_id_type(id_type: u32) -> Option<Self> {
        match id_type {
            0 => Some(Self::DeviceId),
            1 => Some(Self::HardwareIds),
            2 => Some(Self::CompatibleIds),
            3 => Some(Self::InstanceId),
            _ => None,
        }
    }
}

/// The texts a child PDO answers (`Parameters.QueryDeviceText.DeviceTextType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildText {
    /// `DeviceTextDescription`: [`CHILD_DEVICE_TEXT`].
    Description,
    /// `DeviceTextLocationInformation`: `Channel <n>`.
    LocationInformation,
}

impl ChildText {
    /// Decodes `DEVICE_TEXT_TYPE`; `None` for unknown types.
    #[must_use]
    pub const fn from_device_text_type(text_type: u32) -> Option<Self> {
        match text_type {
            0 => Some(Self::Description),
            1 => Some(Self::LocationInformation),
            _ => None,
        }
    }
}

/// Writes UTF-16 into a slice while counting what the whole answer needs.
struct Utf16Writer<'a> {
    out: &'a mut [u16],
    /// Code units the answer needs so far.
    needed: usize,
}

impl<'a> Utf16Writer<'a> {
    const fn new(out: &'a mut [u16]) -> Self {
        Self { out, needed: 0 }
    }

    fn unit(&mut self, unit: u16) {
        if let Some(slot) = self.out.get_mut(self.needed) {
            *slot = unit;
        }
        self.needed = self.needed.saturating_add(1);
    }

    fn str(&mut self, text: &str) {
        for unit in text.encode_utf16() {
            self.unit(unit);
        }
    }

    fn decimal(&mut self, value: u32) {
        let mut digits = [0u16; 10];
        let mut count = 0;
        let mut rest = value;
        loop {
            if let Some(slot) = digits.get_mut(count) {
                // `rest % 10` is below 10: the cast cannot truncate.
                #[allow(clippy::cast_possible_truncation, reason = "a decimal digit")]
                let digit = (rest % 10) as u16;
                *slot = u16::from(b'0') + digit;
            }
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for index in (0..count).rev() {
            if let Some(&digit) = digits.get(index) {
                self.unit(digit);
            }
        }
    }

    /// The length needed; the buffer holds the answer only if it is at
    /// least that long (a shorter buffer got a prefix, which the caller
    /// must not use).
    const fn finish(self) -> usize {
        self.needed
    }
}

/// Writes `text` as a `REG_SZ`/`REG_MULTI_SZ` into `out` when it fits;
/// returns the length needed. An empty `out` only measures.
fn answer(out: &mut [u16], fill: impl Fn(&mut Utf16Writer<'_>)) -> usize {
    let mut measure = Utf16Writer::new(&mut []);
    fill(&mut measure);
    let needed = measure.finish();
    if out.len() >= needed {
        let mut writer = Utf16Writer::new(out);
        fill(&mut writer);
        writer.finish()
    } else {
        needed
    }
}

/// Channel `channel`'s identifier `id` as UTF-16 into `out` (see the
/// module table). Returns the code units needed, terminators included;
/// `out` holds the answer if and only if `out.len() >=` the returned value.
#[must_use]
pub fn child_id(id: ChildId, channel: u32, out: &mut [u16]) -> usize {
    answer(out, |w| match id {
        ChildId::DeviceId => {
            w.str(CHILD_DEVICE_ID);
            w.unit(0);
        }
        ChildId::HardwareIds => {
            w.str(CHILD_HARDWARE_ID);
            w.unit(0);
            w.unit(0);
        }
        ChildId::CompatibleIds => {
            w.str(CHILD_COMPATIBLE_ID);
            w.unit(0);
            w.unit(0);
        }
        ChildId::InstanceId => {
            w.decimal(channel);
            w.unit(0);
        }
    })
}

/// Channel `channel`'s device text `text` as a UTF-16 `REG_SZ` into
/// `out`; the return value as for [`child_id`].
#[must_use]
pub fn child_text(text: ChildText, channel: u32, out: &mut [u16]) -> usize {
    answer(out, |w| {
        match text {
            ChildText::Description => w.str(CHILD_DEVICE_TEXT),
            ChildText::LocationInformation => {
                w.str("Channel ");
                w.decimal(channel);
            }
        }
        w.unit(0);
    })
}

/// Bytes of a pool buffer for `units` UTF-16 code units; `None` on overflow.
#[must_use]
pub const fn utf16_bytes(units: usize) -> Option<usize> {
    units.checked_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(units: &[u16]) -> String {
        String::from_utf16(units).unwrap()
    }

    fn full<F: Fn(&mut [u16]) -> usize>(f: F) -> Vec<u16> {
        let needed = f(&mut []);
        let mut buf = vec![0xAAAAu16; needed];
        assert_eq!(f(&mut buf), needed);
        buf
    }

    #[test]
    fn device_id_is_a_single_string() {
        let buf = full(|o| child_id(ChildId::DeviceId, 3, o));
        assert_eq!(text(&buf), "CAPDMA\\Channel\0");
    }

    #[test]
    fn hardware_and_compatible_ids_are_multi_sz() {
        let hw = full(|o| child_id(ChildId::HardwareIds, 0, o));
        assert_eq!(text(&hw), format!("{CHILD_HARDWARE_ID}\0\0"));
        assert_eq!(hw.iter().rev().take(2).copied().collect::<Vec<_>>(), [0, 0]);
        let compat = full(|o| child_id(ChildId::CompatibleIds, 0, o));
        assert_eq!(text(&compat), "CAPDMA\\CaptureChannel\0\0");
    }

    #[test]
    fn instance_id_is_the_channel_number() {
        for (channel, expected) in [(0, "0\0"), (7, "7\0"), (10, "10\0"), (u32::MAX, "4294967295\0")] {
            assert_eq!(text(&full(|o| child_id(ChildId::InstanceId, channel, o))), expected);
        }
    }

    #[test]
    fn device_texts() {
        assert_eq!(text(&full(|o| child_text(ChildText::Description, 1, o))), format!("{CHILD_DEVICE_TEXT}\0"));
        assert_eq!(text(&full(|o| child_text(ChildText::LocationInformation, 12, o))), "Channel 12\0");
    }

    #[test]
    fn a_short_buffer_is_measured_but_not_written() {
        let needed = child_id(ChildId::HardwareIds, 0, &mut []);
        let mut short = vec![0x5555u16; needed - 1];
        assert_eq!(child_id(ChildId::HardwareIds, 0, &mut short), needed);
        assert!(short.iter().all(|&u| u == 0x5555), "nothing written into a short buffer");
    }

    #[test]
    fn a_long_buffer_keeps_its_tail() {
        let needed = child_id(ChildId::DeviceId, 0, &mut []);
        let mut long = vec![0x7777u16; needed + 4];
        assert_eq!(child_id(ChildId::DeviceId, 0, &mut long), needed);
        assert!(long[needed..].iter().all(|&u| u == 0x7777));
    }

    #[test]
    fn decoders_follow_the_wdm_enumerations() {
        assert_eq!(ChildId::from_bus_query_id_type(0), Some(ChildId::DeviceId));
        assert_eq!(ChildId::from_bus_query_id_type(1), Some(ChildId::HardwareIds));
        assert_eq!(ChildId::from_bus_query_id_type(2), Some(ChildId::CompatibleIds));
        assert_eq!(ChildId::from_bus_query_id_type(3), Some(ChildId::InstanceId));
        assert_eq!(ChildId::from_bus_query_id_type(4), None, "BusQueryDeviceSerialNumber");
        assert_eq!(ChildId::from_bus_query_id_type(5), None, "BusQueryContainerID");
        assert_eq!(ChildText::from_device_text_type(0), Some(ChildText::Description));
        assert_eq!(ChildText::from_device_text_type(1), Some(ChildText::LocationInformation));
        assert_eq!(ChildText::from_device_text_type(2), None);
    }

    #[test]
    fn byte_sizes_check_overflow() {
        assert_eq!(utf16_bytes(16), Some(32));
        assert_eq!(utf16_bytes(usize::MAX), None);
    }
}
