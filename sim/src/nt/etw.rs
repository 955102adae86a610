//! Event Tracing for Windows as the images use it: `EtwRegister`,
//! `EtwSetInformation`, `EtwWriteTransfer`, `EtwUnregister`, and a decoder
//! of the TraceLogging events they write into readable [`EtwRecord`]s.
//!
//! A trace session is modelled by [`EtwSession`]: which providers it
//! enables, at which level and keywords. Registering a provider that a
//! session enables calls the provider's enable callback in the guest
//! (`EVENT_CONTROL_CODE_ENABLE_PROVIDER`), as ETW does, so a TraceLogging
//! provider learns its level and keywords; events the session does not ask
//! for are dropped as ETW drops them.
//!
//! TraceLogging events are self-describing (TraceLoggingProvider.h,
//! "TraceLogging event layout"): the first data descriptor of each event is
//! the provider's metadata (`u16` size, the provider name, traits), the
//! second the event's (`u16` size, a 1-4 byte tag, the event name, then for
//! each field its name, in-type, optional out-type and tag, optional
//! constant count), the rest the field values in order. [`decode_event`]
//! reads them and refuses, with the reason, anything malformed.
//!
//! Checks: the IRQL of each DDI (`PASSIVE_LEVEL` for all but
//! `EtwWriteTransfer`, which any IRQL may call), the handle, the descriptor
//! count (at most 128), event data in paged pool above `APC_LEVEL`
//! (`ETW_PAGED_DATA`, 0xD1), and a provider still registered when its
//! image unloads ([`check_unload`]: `ETW_PROVIDER_NOT_UNREGISTERED`, 0xCE,
//! what Windows bugchecks with when ETW later calls the unloaded image's
//! enable callback).

use std::collections::BTreeMap;
use std::fmt;

use capdma_winvm::{Machine, Stop};

use super::layout::etw::{event_data_descriptor, event_descriptor};
use super::pool::POOL_FLAG_PAGED;
use super::{Ddi, Module, Nt, APC_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ntoskrnl, name: "EtwRegister", max_irql: PASSIVE_LEVEL, run: etw_register },
    Ddi { module: Module::Ntoskrnl, name: "EtwSetInformation", max_irql: PASSIVE_LEVEL, run: etw_set_information },
    Ddi { module: Module::Ntoskrnl, name: "EtwWriteTransfer", max_irql: HIGH_LEVEL, run: etw_write_transfer },
    Ddi { module: Module::Ntoskrnl, name: "EtwUnregister", max_irql: PASSIVE_LEVEL, run: etw_unregister },
];

/// `STATUS_SUCCESS`.
const STATUS_SUCCESS: u64 = 0;
/// `STATUS_INVALID_HANDLE`.
pub const STATUS_INVALID_HANDLE: u32 = 0xC000_0008;
/// `STATUS_INVALID_PARAMETER`.
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
/// `STATUS_INVALID_DEVICE_REQUEST`.
pub const STATUS_INVALID_DEVICE_REQUEST: u32 = 0xC000_0010;

/// Most `EVENT_DATA_DESCRIPTOR`s one event may have ("EtwWrite function").
pub const MAX_DATA_DESCRIPTORS: u32 = 128;
/// Largest event ETW records, bytes (larger ones are lost).
pub const MAX_EVENT_BYTES: u64 = 65_535;
/// `EVENT_CONTROL_CODE_ENABLE_PROVIDER`.
pub const EVENT_CONTROL_CODE_ENABLE_PROVIDER: u64 = 1;
/// `EventProviderSetTraits` (`EVENT_INFO_CLASS`).
pub const EVENT_PROVIDER_SET_TRAITS: u64 = 2;
/// `EventProviderUseDescriptorType` (`EVENT_INFO_CLASS`).
pub const EVENT_PROVIDER_USE_DESCRIPTOR_TYPE: u64 = 3;
/// `MaxEventInfo`: classes from here on are not supported.
const MAX_EVENT_INFO: u64 = 4;
/// `EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA`.
const TYPE_EVENT_METADATA: u8 = 1;
/// `EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA`.
const TYPE_PROVIDER_METADATA: u8 = 2;

/// A GUID as its 16 bytes in memory order (`Data1`..`Data3` little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (`{}` omitted).
    ///
    /// # Errors
    /// `None` when the text is not a GUID.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let hex: String = text.trim_matches(['{', '}']).chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok();
        let mut b = [0u8; 16];
        for (i, slot) in b.iter_mut().enumerate() {
            *slot = byte(i)?;
        }
        // Data1, Data2, Data3 are stored little-endian.
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Some(Self(b))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let d2 = u16::from_le_bytes([b[4], b[5]]);
        let d3 = u16::from_le_bytes([b[6], b[7]]);
        write!(f, "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-", b[8], b[9])?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

/// A trace session: the providers it enables and what it asks of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwSession {
    /// The providers enabled; empty: every provider.
    pub providers: Vec<Guid>,
    /// Highest level recorded (1 critical .. 5 verbose; 0 records every level).
    pub level: u8,
    /// `MatchAnyKeyword`: an event with keyword bits is recorded when it has one of these.
    pub match_any: u64,
    /// `MatchAllKeyword`: ... and all of these.
    pub match_all: u64,
}

impl EtwSession {
    /// Every provider, every level, every keyword.
    #[must_use]
    pub const fn everything() -> Self {
        Self { providers: Vec::new(), level: 5, match_any: u64::MAX, match_all: 0 }
    }

    /// Whether the session enables provider `id`.
    #[must_use]
    pub fn enables(&self, id: &Guid) -> bool {
        self.providers.is_empty() || self.providers.contains(id)
    }

    /// Whether it records an event of `level` and `keyword` (ETW's rule:
    /// the level at or below the session's, 0 always passing; a keyword of
    /// 0 always passing, else one bit of `match_any` and all of `match_all`).
    #[must_use]
    pub const fn wants(&self, level: u8, keyword: u64) -> bool {
        let level_ok = self.level == 0 || level <= self.level;
        let keyword_ok = keyword == 0 || (keyword & self.match_any != 0 && keyword & self.match_all == self.match_all);
        level_ok && keyword_ok
    }
}

/// One provider registration (`EtwRegister`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The provider GUID.
    pub id: Guid,
    /// The provider name from its traits (`EtwSetInformation`), once set.
    pub name: Option<String>,
    /// The image that registered it.
    pub image: String,
    /// The enable callback (0: none) and its context.
    pub callback: (u64, u64),
    /// Whether `EtwSetInformation(EventProviderSetTraits)` or
    /// `(EventProviderUseDescriptorType, TRUE)` made the descriptor types count.
    pub descriptor_types: bool,
    /// Still registered.
    pub live: bool,
}

/// A decoded field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// An unsigned integer shown in hexadecimal (`Hex32`/`Hex64`, or a hex out-type).
    Hex(u64),
    /// An NTSTATUS (out-type `NTSTATUS`).
    NtStatus(u32),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Str(String),
    /// A GUID.
    Guid(Guid),
    /// Bytes.
    Binary(Vec<u8>),
    /// An array of values.
    Array(Vec<Value>),
    /// A structure's fields.
    Struct(Vec<Field>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::UInt(v) => write!(f, "{v}"),
            Self::Hex(v) => write!(f, "{v:#x}"),
            Self::NtStatus(v) => write!(f, "{v:#010x}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::Str(v) => write!(f, "{v:?}"),
            Self::Guid(v) => write!(f, "{{{v}}}"),
            Self::Binary(v) => {
                f.write_str("0x")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Self::Array(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Self::Struct(v) => {
                f.write_str("{")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A decoded field: its name, TraceLogging in-type and out-type, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// The in-type (`TlgIn*`, low 5 bits of the metadata byte).
    pub in_type: u8,
    /// The out-type (`TlgOut*`; 0 when absent).
    pub out_type: u8,
    /// The value.
    pub value: Value,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// One event as a trace consumer reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct EtwRecord {
    /// Virtual time of the write, 100-ns units.
    pub time: u64,
    /// `EVENT_DESCRIPTOR.Level`.
    pub level: u8,
    /// `EVENT_DESCRIPTOR.Keyword`.
    pub keyword: u64,
    /// `EVENT_DESCRIPTOR.Opcode`.
    pub opcode: u8,
    /// The provider name (from the event's provider metadata).
    pub provider: String,
    /// The provider GUID (the registration's).
    pub provider_id: Guid,
    /// The event name.
    pub event: String,
    /// The fields in order.
    pub fields: Vec<Field>,
    /// IRQL of the writer.
    pub irql: u8,
}

impl EtwRecord {
    /// The field `name`, if the event has one.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|f| f.name == name).map(|f| &f.value)
    }
}

/// The name of an ETW level.
#[must_use]
pub const fn level_name(level: u8) -> &'static str {
    match level {
        0 => "always",
        1 => "critical",
        2 => "error",
        3 => "warning",
        4 => "info",
        _ => "verbose",
    }
}

impl fmt::Display for EtwRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.time / 10_000_000;
        let micros = (self.time % 10_000_000) / 10;
        write!(
            f,
            "{seconds}.{micros:06} {}/{} [{} kw={:#x}]",
            self.provider,
            self.event,
            level_name(self.level),
            self.keyword
        )?;
        for field in &self.fields {
            write!(f, " {field}")?;
        }
        Ok(())
    }
}

/// Why an event's metadata or data could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn bad<T>(why: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(why.into()))
}

/// A cursor over bytes that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    const fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, at: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return bad(format!("{}: {n} byte(s) needed at offset {}, {} left", self.what, self.at, self.bytes.len() - self.at));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A NUL-terminated UTF-8 string (the NUL consumed).
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return bad(format!("{}: a name at offset {} has no terminating NUL", self.what, self.at));
        };
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|_| DecodeError(format!("{}: the name at offset {} is not UTF-8", self.what, self.at)))?
            .to_owned();
        self.at += len + 1;
        Ok(text)
    }

    /// A TraceLogging tag: 1-4 bytes, each but the last with bit 7 set.
    fn tag(&mut self) -> Result<u32, DecodeError> {
        let mut tag = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            tag |= u32::from(b & 0x7F) << (21 - 7 * i);
            if b & 0x80 == 0 {
                return Ok(tag);
            }
        }
        bad(format!("{}: a tag longer than 4 bytes", self.what))
    }

    const fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// Checks a metadata block's leading `u16` size against its length.
fn sized<'a>(bytes: &'a [u8], what: &'static str) -> Result<Reader<'a>, DecodeError> {
    let mut r = Reader::new(bytes, what);
    let size = usize::from(r.u16()?);
    if size != bytes.len() {
        return bad(format!("{what}: its size field says {size} bytes, the block has {}", bytes.len()));
    }
    Ok(r)
}

/// The provider name from a TraceLogging provider metadata block (also
/// the `EventProviderSetTraits` buffer): `u16` size, the name, then traits
/// (each `u16` size, `u8` type, data), every one inside the block.
///
/// # Errors
/// A [`DecodeError`] naming what is malformed.
pub fn decode_provider_traits(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut r = sized(bytes, "provider metadata")?;
    let name = r.cstr()?;
    if name.is_empty() {
        return bad("provider metadata: empty provider name");
    }
    while !r.done() {
        let size = usize::from(r.u16()?);
        if size < 3 {
            return bad(format!("provider metadata: a trait of {size} bytes (at least 3)"));
        }
        r.take(size - 2)?;
    }
    Ok(name)
}

/// One field's metadata.
struct FieldMeta {
    name: String,
    in_type: u8,
    flags: u8,
    out_type: u8,
    constant_count: Option<u16>,
}

/// TraceLogging in-types (`TlgIn*`, TraceLoggingProvider.h): the low five
/// bits of a field's in-type byte in event metadata, with the count flags and
/// the chain bit above them. [`Field::in_type`] holds the low five bits.
pub mod in_type {
    /// `TlgInUNICODESTRING`: a NUL-terminated UTF-16 string.
    pub const CSTR16: u8 = 1;
    /// `TlgInANSISTRING`: a NUL-terminated 8-bit string.
    pub const CSTR8: u8 = 2;
    /// `TlgInINT8`.
    pub const I8: u8 = 3;
    /// `TlgInUINT8`.
    pub const U8: u8 = 4;
    /// `TlgInINT16`.
    pub const I16: u8 = 5;
    /// `TlgInUINT16`.
    pub const U16: u8 = 6;
    /// `TlgInINT32`.
    pub const I32: u8 = 7;
    /// `TlgInUINT32`.
    pub const U32: u8 = 8;
    /// `TlgInINT64`.
    pub const I64: u8 = 9;
    /// `TlgInUINT64`.
    pub const U64: u8 = 10;
    /// `TlgInFLOAT`: an IEEE single.
    pub const F32: u8 = 11;
    /// `TlgInDOUBLE`: an IEEE double.
    pub const F64: u8 = 12;
    /// `TlgInBOOL32`: a 4-byte boolean.
    pub const BOOL32: u8 = 13;
    /// `TlgInBINARY`: a `u16` byte count, then the bytes.
    pub const BINARY: u8 = 14;
    /// `TlgInGUID`: 16 bytes.
    pub const GUID: u8 = 15;
    /// `TlgInFILETIME`: a `u64` of 100-ns units since 1601.
    pub const FILETIME: u8 = 17;
    /// `TlgInSYSTEMTIME`: eight `u16`s.
    pub const SYSTEMTIME: u8 = 18;
    /// `TlgInSID`: a security identifier.
    pub const SID: u8 = 19;
    /// `TlgInHEXINT32`: a `u32` shown in hex.
    pub const HEX32: u8 = 20;
    /// `TlgInHEXINT64`: a `u64` shown in hex.
    pub const HEX64: u8 = 21;
    /// `TlgInCOUNTEDSTRING`: a `u16` byte count, then UTF-16.
    pub const STR16: u8 = 22;
    /// `TlgInCOUNTEDANSISTRING`: a `u16` byte count, then 8-bit text.
    pub const STR8: u8 = 23;
    /// `_TlgInSTRUCT`: the out-type byte gives the number of fields that follow.
    pub const STRUCT: u8 = 24;
    /// `TlgInCOUNTEDBINARY`: a `u16` byte count, then the bytes.
    pub const BINARYC: u8 = 25;
    /// `_TlgInCcount`: an array whose `u16` count is in the metadata.
    pub const CONSTANT_COUNT: u8 = 0x20;
    /// `TlgInVcount`: an array whose `u16` count precedes it in the data.
    pub const VARIABLE_COUNT: u8 = 0x40;
    /// `_TlgInFlagMask`: the count flags (both set: `_TlgInCustom`).
    pub const COUNT_MASK: u8 = 0x60;
    /// `_TlgInChain`: an out-type byte follows.
    pub const CHAIN: u8 = 0x80;
}

/// TraceLogging out-types (`TlgOut*`, TraceLoggingProvider.h) used in
/// decoding: the low seven bits of the byte after a chained in-type
/// ([`Field::out_type`]); its top bit says a field tag follows.
pub mod out_type {
    /// `TlgOutBOOLEAN`: a nonzero integer is true.
    pub const BOOLEAN: u8 = 3;
    /// `TlgOutHEX`: an integer shown in hex.
    pub const HEX: u8 = 4;
    /// `TlgOutNTSTATUS`: a `u32` NTSTATUS.
    pub const NTSTATUS: u8 = 14;
    /// `TlgOutHRESULT`: a `u32` HRESULT.
    pub const HRESULT: u8 = 15;
}

fn read_field_meta(r: &mut Reader<'_>) -> Result<FieldMeta, DecodeError> {
    let name = r.cstr()?;
    let in_byte = r.u8()?;
    let flags = in_byte & in_type::COUNT_MASK;
    if flags == in_type::COUNT_MASK {
        return bad(format!("event metadata: field {name:?} has a custom type, which this decoder does not read"));
    }
    let mut out_type = 0;
    if in_byte & in_type::CHAIN != 0 {
        let out_byte = r.u8()?;
        out_type = out_byte & 0x7F;
        if out_byte & 0x80 != 0 {
            r.tag()?;
        }
    }
    let constant_count = if flags == in_type::CONSTANT_COUNT { Some(r.u16()?) } else { None };
    Ok(FieldMeta { name, in_type: in_byte & 0x1F, flags, out_type, constant_count })
}

fn int_value(raw: u64, signed_bits: Option<u32>, out: u8) -> Value {
    match (out, signed_bits) {
        (out_type::NTSTATUS | out_type::HRESULT, _) => Value::NtStatus((raw & 0xFFFF_FFFF) as u32),
        (out_type::HEX, _) => Value::Hex(raw),
        (out_type::BOOLEAN, _) => Value::Bool(raw != 0),
        (_, Some(bits)) => {
            let shift = 64 - bits;
            Value::Int((raw << shift).cast_signed() >> shift)
        }
        (_, None) => Value::UInt(raw),
    }
}

fn scalar(r: &mut Reader<'_>, meta: &FieldMeta) -> Result<Value, DecodeError> {
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let out = meta.out_type;
    Ok(match meta.in_type {
        in_type::I8 => int_value(le(r.take(1)?), Some(8), out),
        in_type::U8 => int_value(le(r.take(1)?), None, out),
        in_type::I16 => int_value(le(r.take(2)?), Some(16), out),
        in_type::U16 => int_value(le(r.take(2)?), None, out),
        in_type::I32 => int_value(le(r.take(4)?), Some(32), out),
        in_type::U32 => int_value(le(r.take(4)?), None, out),
        in_type::I64 => int_value(le(r.take(8)?), Some(64), out),
        in_type::U64 | in_type::FILETIME => int_value(le(r.take(8)?), None, out),
        in_type::HEX32 => match out {
            // win_ntstatus / win_hresult: Hex32 with an NTSTATUS or HRESULT out-type.
            out_type::NTSTATUS | out_type::HRESULT => int_value(le(r.take(4)?), None, out),
            _ => Value::Hex(le(r.take(4)?)),
        },
        in_type::HEX64 => Value::Hex(le(r.take(8)?)),
        in_type::F32 => Value::Float(f64::from(f32::from_le_bytes(r.array::<4>()?))),
        in_type::F64 => Value::Float(f64::from_le_bytes(r.array::<8>()?)),
        in_type::BOOL32 => Value::Bool(le(r.take(4)?) != 0),
        in_type::GUID => Value::Guid(Guid(r.array::<16>()?)),
        in_type::SYSTEMTIME => Value::Binary(r.take(16)?.to_vec()),
        in_type::CSTR8 => {
            let rest = &r.bytes[r.at..];
            let Some(len) = rest.iter().position(|&b| b == 0) else {
                return bad(format!("event data: string field {:?} has no terminating NUL", meta.name));
            };
            let text = String::from_utf8_lossy(r.take(len)?).into_owned();
            r.take(1)?;
            Value::Str(text)
        }
        in_type::CSTR16 => {
            let mut units = Vec::new();
            loop {
                let u = r.u16()?;
                if u == 0 {
                    break;
                }
                units.push(u);
            }
            Value::Str(String::from_utf16_lossy(&units))
        }
        in_type::STR8 => {
            let n = usize::from(r.u16()?);
            Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned())
        }
        in_type::STR16 => {
            let n = usize::from(r.u16()?);
            if n % 2 != 0 {
                return bad(format!("event data: UTF-16 field {:?} of an odd {n} bytes", meta.name));
            }
            let units: Vec<u16> = r.take(n)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            Value::Str(String::from_utf16_lossy(&units))
        }
        in_type::BINARY | in_type::BINARYC => {
            let n = usize::from(r.u16()?);
            Value::Binary(r.take(n)?.to_vec())
        }
        in_type::SID => {
            let head = r.take(8)?;
            let sub_authorities = usize::from(head[1]);
            let mut sid = head.to_vec();
            sid.extend_from_slice(r.take(4 * sub_authorities)?);
            Value::Binary(sid)
        }
        other => return bad(format!("event metadata: field {:?} has in-type {other}, which is not a TraceLogging type", meta.name)),
    })
}

/// Decodes the fields described by `metas[*next..]` (one field, or a
/// structure and its members) from `data`.
fn decode_fields(metas: &[FieldMeta], next: &mut usize, data: &mut Reader<'_>) -> Result<Field, DecodeError> {
    let Some(meta) = metas.get(*next) else {
        return bad("event metadata: a structure claims more fields than the event has");
    };
    *next += 1;
    let count = match (meta.flags, meta.constant_count) {
        (in_type::VARIABLE_COUNT, _) => Some(data.u16()?),
        (_, Some(n)) => Some(n),
        _ => None,
    };
    // One value: a scalar, or a structure whose members are the next
    // `out_type` fields of the metadata (each possibly a structure itself).
    let one = |next: &mut usize, data: &mut Reader<'_>| -> Result<Value, DecodeError> {
        if meta.in_type == in_type::STRUCT {
            let members = usize::from(meta.out_type);
            if members == 0 {
                return bad(format!("event metadata: structure {:?} has no fields", meta.name));
            }
            let mut fields = Vec::with_capacity(members);
            for _ in 0..members {
                fields.push(decode_fields(metas, next, data)?);
            }
            Ok(Value::Struct(fields))
        } else {
            scalar(data, meta)
        }
    };
    let value = match count {
        None => one(next, data)?,
        Some(n) => {
            let after_struct = *next;
            let mut items = Vec::with_capacity(usize::from(n).min(4096));
            let mut end = after_struct;
            for _ in 0..n {
                let mut cursor = after_struct;
                items.push(one(&mut cursor, data)?);
                end = cursor;
            }
            if n == 0 && meta.in_type == in_type::STRUCT {
                // Skip the members' metadata of an empty array of structures.
                let mut skip = after_struct + usize::from(meta.out_type);
                skip = skip.min(metas.len());
                end = skip;
            }
            *next = end;
            Value::Array(items)
        }
    };
    let out_type = if meta.in_type == in_type::STRUCT { 0 } else { meta.out_type };
    Ok(Field { name: meta.name.clone(), in_type: meta.in_type, out_type, value })
}

/// A decoded TraceLogging event (without the descriptor's level and keyword).
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedEvent {
    /// The provider name.
    pub provider: String,
    /// The event name.
    pub event: String,
    /// The fields.
    pub fields: Vec<Field>,
}

/// Decodes a TraceLogging event: `provider_meta` (the provider metadata
/// block), `event_meta` (`u16` size, tag, event name, field metadata) and
/// `data` (the field values, the data descriptors' bytes concatenated).
/// Every length is checked against the bytes there are; every field's data
/// must be present and nothing may be left over.
///
/// # Errors
/// A [`DecodeError`] naming what is malformed; nothing is decoded then.
pub fn decode_event(provider_meta: &[u8], event_meta: &[u8], data: &[u8]) -> Result<DecodedEvent, DecodeError> {
    let provider = decode_provider_traits(provider_meta)?;
    let mut r = sized(event_meta, "event metadata")?;
    r.tag()?;
    let event = r.cstr()?;
    if event.is_empty() {
        return bad("event metadata: empty event name");
    }
    let mut metas = Vec::new();
    while !r.done() {
        metas.push(read_field_meta(&mut r)?);
    }
    let mut data = Reader::new(data, "event data");
    let mut fields = Vec::new();
    let mut next = 0;
    while next < metas.len() {
        fields.push(decode_fields(&metas, &mut next, &mut data)?);
    }
    if !data.done() {
        return bad(format!("event data: {} byte(s) left over after the last field", data.bytes.len() - data.at));
    }
    Ok(DecodedEvent { provider, event, fields })
}

/// The ETW state of the emulated kernel.
#[derive(Debug, Default)]
pub struct EtwState {
    /// The trace session running, if any (set with [`start_session`] or
    /// before the images load).
    pub session: Option<EtwSession>,
    /// Registrations by handle.
    pub registrations: BTreeMap<u64, Registration>,
    /// Events recorded, decoded, in order.
    pub records: Vec<EtwRecord>,
    /// Events refused by the decoder: `(provider, why)`.
    pub undecodable: Vec<(String, String)>,
    /// Events lost (larger than [`MAX_EVENT_BYTES`]).
    pub lost: u64,
    /// Kernel memory holding the session's GUID, passed to enable callbacks.
    session_guid_va: u64,
}

impl EtwState {
    /// The records of provider `name`.
    pub fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a EtwRecord> + 'a {
        self.records.iter().filter(move |r| r.provider == name)
    }

    /// Registrations of `image` still registered.
    pub fn live_of<'a>(&'a self, image: &'a str) -> impl Iterator<Item = &'a Registration> + 'a {
        self.registrations.values().filter(move |r| r.live && r.image == image)
    }
}

/// The image containing the current DDI's caller, or `"?"`.
fn caller_image(m: &Machine) -> String {
    m.caller()
        .ok()
        .and_then(|c| m.images().iter().find(|i| i.contains(c)).map(|i| i.name.clone()))
        .unwrap_or_else(|| "?".into())
}

/// Calls `registration`'s enable callback, if it has one, with
/// `EVENT_CONTROL_CODE_ENABLE_PROVIDER` and `session`'s level and keywords
/// (`PETWENABLECALLBACK`: SourceId, ControlCode, Level, MatchAnyKeyword,
/// MatchAllKeyword, FilterData = NULL, CallbackContext).
fn enable(nt: &mut Nt, m: &mut Machine, registration: &Registration, session: &EtwSession) -> Result<(), Stop> {
    let (callback, context) = registration.callback;
    if callback == 0 {
        return Ok(());
    }
    if nt.etw.session_guid_va == 0 {
        nt.etw.session_guid_va = nt.alloc_kernel(m, 16)?;
    }
    let args = [
        nt.etw.session_guid_va,
        EVENT_CONTROL_CODE_ENABLE_PROVIDER,
        u64::from(session.level),
        session.match_any,
        session.match_all,
        0,
        context,
    ];
    m.call(nt, callback, &args)?;
    Ok(())
}

/// Starts `session`: every registered provider it enables has its enable
/// callback called now (as ETW does when a session starts); providers
/// registered later are enabled as they register.
///
/// # Errors
/// A bugcheck or host error from a callback.
pub fn start_session(nt: &mut Nt, m: &mut Machine, session: &EtwSession) -> Result<(), Stop> {
    nt.etw.session = Some(session.clone());
    let live: Vec<Registration> = nt.etw.registrations.values().filter(|r| r.live && session.enables(&r.id)).cloned().collect();
    for registration in live {
        enable(nt, m, &registration, session)?;
    }
    Ok(())
}

/// Records a finding for every provider `image` still has registered: a
/// driver must `EtwUnregister` each before it unloads ("EtwUnregister
/// function"), else ETW later calls an enable callback that is gone.
/// Call it when the image unloads. Returns how many were left.
pub fn check_unload(nt: &mut Nt, m: &Machine, image: &str) -> usize {
    let left: Vec<Registration> = nt.etw.live_of(image).cloned().collect();
    nt.verifier.checks += 1;
    for registration in &left {
        let name = registration.name.clone().unwrap_or_else(|| "(no name)".into());
        nt.violation(
            m,
            "ETW_PROVIDER_NOT_UNREGISTERED",
            0xCE,
            None,
            format!("{image} unloads with ETW provider {name} {{{}}} still registered", registration.id),
        );
    }
    left.len()
}

/// `NTSTATUS EtwRegister(LPCGUID ProviderId, PETWENABLECALLBACK
/// EnableCallback, PVOID CallbackContext, PREGHANDLE RegHandle)`
/// ("EtwRegister function", PASSIVE_LEVEL): registers the provider and
/// writes its handle; a session that enables the provider calls the
/// callback before this returns. `STATUS_INVALID_PARAMETER` for a null
/// ProviderId or RegHandle.
fn etw_register(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [id_va, callback, context, handle_va] = m.args::<4>()?;
    if id_va == 0 || handle_va == 0 {
        return Ok(u64::from(STATUS_INVALID_PARAMETER));
    }
    let mut id = [0u8; 16];
    m.read(id_va, &mut id)?;
    let id = Guid(id);
    let handle = 0xE700_0000_0000_0000 | ((nt.etw.registrations.len() as u64 + 1) * 0x10);
    let registration =
        Registration { id, name: None, image: caller_image(m), callback: (callback, context), descriptor_types: false, live: true };
    m.write_u64(handle_va, handle)?;
    nt.etw.registrations.insert(handle, registration.clone());
    if let Some(session) = nt.etw.session.clone().filter(|s| s.enables(&id)) {
        enable(nt, m, &registration, &session)?;
    }
    Ok(STATUS_SUCCESS)
}

/// The live registration of `handle`.
fn live(nt: &mut Nt, handle: u64) -> Option<&mut Registration> {
    nt.etw.registrations.get_mut(&handle).filter(|r| r.live)
}

/// `NTSTATUS EtwSetInformation(REGHANDLE RegHandle, EVENT_INFO_CLASS
/// InformationClass, PVOID EventInformation, ULONG InformationLength)`
/// ("EtwSetInformation function", PASSIVE_LEVEL): `EventProviderSetTraits`
/// takes the provider traits (whose name the registration keeps) and makes
/// the descriptor types count; `EventProviderUseDescriptorType` a BOOLEAN;
/// `EventProviderBinaryTrackInfo` is accepted. `STATUS_INVALID_HANDLE` for
/// a handle not registered, `STATUS_INVALID_PARAMETER` for a NULL buffer
/// with a length or malformed traits, `STATUS_INVALID_DEVICE_REQUEST` for
/// an unknown class.
fn etw_set_information(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [handle, class, buffer, length] = m.args::<4>()?;
    let length = length & 0xFFFF_FFFF;
    let class = class & 0xFFFF_FFFF;
    if live(nt, handle).is_none() {
        return Ok(u64::from(STATUS_INVALID_HANDLE));
    }
    if class >= MAX_EVENT_INFO {
        return Ok(u64::from(STATUS_INVALID_DEVICE_REQUEST));
    }
    if buffer == 0 && length != 0 || length > MAX_EVENT_BYTES {
        return Ok(u64::from(STATUS_INVALID_PARAMETER));
    }
    let mut bytes = vec![0u8; length as usize];
    if length > 0 {
        m.read(buffer, &mut bytes)?;
    }
    match class {
        EVENT_PROVIDER_SET_TRAITS => {
            let Ok(name) = decode_provider_traits(&bytes) else {
                return Ok(u64::from(STATUS_INVALID_PARAMETER));
            };
            if let Some(r) = live(nt, handle) {
                r.name = Some(name);
                r.descriptor_types = true;
            }
        }
        EVENT_PROVIDER_USE_DESCRIPTOR_TYPE => {
            let [flag] = bytes[..] else {
                return Ok(u64::from(STATUS_INVALID_PARAMETER));
            };
            if let Some(r) = live(nt, handle) {
                r.descriptor_types = flag != 0;
            }
        }
        _ => {}
    }
    Ok(STATUS_SUCCESS)
}

/// `NTSTATUS EtwWriteTransfer(REGHANDLE RegHandle, PCEVENT_DESCRIPTOR
/// EventDescriptor, LPCGUID ActivityId, LPCGUID RelatedActivityId, ULONG
/// UserDataCount, PEVENT_DATA_DESCRIPTOR UserData)` ("EtwWriteTransfer
/// function": any IRQL, but above `APC_LEVEL` the data must not be
/// pageable). `STATUS_INVALID_HANDLE` for a handle not registered,
/// `STATUS_INVALID_PARAMETER` for more than 128 descriptors or a null
/// descriptor. An event no session asks for is dropped (success); one
/// larger than 64 KiB is lost; a TraceLogging event is decoded into an
/// [`EtwRecord`], or kept in [`EtwState::undecodable`] with the reason.
fn etw_write_transfer(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [handle, descriptor_va, _activity, _related] = m.args::<4>()?;
    let count = m.arg(4)? & 0xFFFF_FFFF;
    let data_va = m.arg(5)?;
    let Some(registration) = live(nt, handle).cloned() else {
        return Ok(u64::from(STATUS_INVALID_HANDLE));
    };
    if descriptor_va == 0 || count > u64::from(MAX_DATA_DESCRIPTORS) || (count > 0 && data_va == 0) {
        return Ok(u64::from(STATUS_INVALID_PARAMETER));
    }
    let level = m.read_u8(descriptor_va + event_descriptor::LEVEL)?;
    let keyword = m.read_u64(descriptor_va + event_descriptor::KEYWORD)?;
    let opcode = m.read_u8(descriptor_va + event_descriptor::OPCODE)?;
    let Some(session) = nt.etw.session.clone() else {
        return Ok(STATUS_SUCCESS);
    };
    if !session.enables(&registration.id) || !session.wants(level, keyword) {
        return Ok(STATUS_SUCCESS);
    }
    let mut blocks = Vec::new();
    let mut total = 0u64;
    for i in 0..count {
        let at = data_va + i * event_data_descriptor::SIZE;
        let ptr = m.read_u64(at + event_data_descriptor::PTR)?;
        let size = u64::from(m.read_u32(at + event_data_descriptor::SIZE_FIELD)?);
        let kind = (m.read_u32(at + event_data_descriptor::RESERVED)? & 0xFF) as u8;
        total += size;
        if total > MAX_EVENT_BYTES {
            nt.etw.lost += 1;
            return Ok(STATUS_SUCCESS);
        }
        if nt.irql > APC_LEVEL && size > 0 {
            check_nonpaged(nt, m, ptr, size);
        }
        let mut bytes = vec![0u8; size as usize];
        if size > 0 {
            m.read(ptr, &mut bytes)?;
        }
        blocks.push((if registration.descriptor_types { kind } else { 0 }, bytes));
    }
    let meta = |t: u8| blocks.iter().find(|(k, _)| *k == t).map(|(_, b)| b.as_slice());
    let provider_name = registration.name.clone().unwrap_or_else(|| registration.id.to_string());
    let (Some(provider_meta), Some(event_meta)) = (meta(TYPE_PROVIDER_METADATA), meta(TYPE_EVENT_METADATA)) else {
        nt.etw.undecodable.push((provider_name, "not a TraceLogging event (no provider or event metadata descriptor)".into()));
        return Ok(STATUS_SUCCESS);
    };
    let data: Vec<u8> = blocks.iter().filter(|(k, _)| *k == 0).flat_map(|(_, b)| b.iter().copied()).collect();
    match decode_event(provider_meta, event_meta, &data) {
        Ok(decoded) => nt.etw.records.push(EtwRecord {
            time: nt.time,
            level,
            keyword,
            opcode,
            provider: decoded.provider,
            provider_id: registration.id,
            event: decoded.event,
            fields: decoded.fields,
            irql: nt.irql,
        }),
        Err(why) => nt.etw.undecodable.push((provider_name, why.0)),
    }
    Ok(STATUS_SUCCESS)
}

/// Above `APC_LEVEL` the event data must be resident: data in a paged-pool
/// block is a finding (`ETW_PAGED_DATA`, 0xD1: a page fault at raised IRQL
/// is `DRIVER_IRQL_NOT_LESS_OR_EQUAL`).
fn check_nonpaged(nt: &mut Nt, m: &Machine, ptr: u64, size: u64) {
    nt.verifier.checks += 1;
    let paged = nt
        .pool
        .live
        .range(..=ptr)
        .next_back()
        .is_some_and(|(&va, block)| ptr < va + block.bytes && block.flags & POOL_FLAG_PAGED != 0);
    if paged {
        let irql = nt.irql;
        nt.violation(
            m,
            "ETW_PAGED_DATA",
            0xD1,
            Some(ptr),
            format!("EtwWriteTransfer at IRQL {irql} with {size} byte(s) of event data in paged pool at {ptr:#x}"),
        );
    }
}

/// `NTSTATUS EtwUnregister(REGHANDLE RegHandle)` ("EtwUnregister
/// function", PASSIVE_LEVEL): the registration ends; the callback is not
/// called again. `STATUS_INVALID_HANDLE` for a handle not registered.
fn etw_unregister(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let handle = m.arg(0)?;
    let Some(registration) = live(nt, handle) else {
        return Ok(u64::from(STATUS_INVALID_HANDLE));
    };
    registration.live = false;
    Ok(STATUS_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_filter_by_level_and_keyword() {
        let s = EtwSession { providers: Vec::new(), level: 2, match_any: 0x8, match_all: 0 };
        assert!(s.wants(2, 0x8) && s.wants(1, 0x9) && s.wants(2, 0));
        assert!(!s.wants(3, 0x8), "warning is above error");
        assert!(!s.wants(2, 0x20), "no keyword in common");
        let all = EtwSession { match_all: 0x3, ..EtwSession::everything() };
        assert!(all.wants(5, 0x7) && !all.wants(5, 0x1));
        let only = EtwSession { providers: vec![Guid([1; 16])], ..EtwSession::everything() };
        assert!(only.enables(&Guid([1; 16])) && !only.enables(&Guid([2; 16])));
    }
}
