//! Size/Version negotiation of an `IRP_MN_QUERY_INTERFACE` for
//! [`crate::GUID_CAPDMA_BUS_INTERFACE`].
//!
//! Versions only append functions, so a table of version `n` is a prefix of
//! every later one. The bus serves the highest version both sides know:
//!
//! | request | answer |
//! |---|---|
//! | `Version == 0` | `STATUS_REVISION_MISMATCH` |
//! | `Size` smaller than the table of the version served | `STATUS_BUFFER_TOO_SMALL` |
//! | `Version` newer than the bus's | success, the bus's version: `Size`/`Version` of the answer say what was filled |
//! | otherwise | success |
use crate::status::{NtStatus, STATUS_BUFFER_TOO_SMALL, STATUS_REVISION_MISMATCH};
use crate::table::{CAPDMA_BUS_INTERFACE_SIZE_V1, CAPDMA_BUS_INTERFACE_SIZE_V2, CAPDMA_BUS_INTERFACE_VERSION};

/// What the bus will fill: the version served and its table size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Version to write into the answer's header.
    pub version: u16,
    /// Bytes to fill; written into the answer's header `Size`.
    pub size: u16,
}

/// Table size in bytes of a version this crate knows.
#[must_use]
pub const fn table_size(version: u16) -> Option<u16> {
    match version {
        1 => Some(CAPDMA_BUS_INTERFACE_SIZE_V1),
        2 => Some(CAPDMA_BUS_INTERFACE_SIZE_V2),
        _ => None,
    }
}

/// Negotiates a request (`Parameters.QueryInterface.Size` and `.Version`)
/// against the bus's highest version `served`.
///
/// # Errors
/// `STATUS_REVISION_MISMATCH` for version 0 (or a `served` this crate does
/// not know); `STATUS_BUFFER_TOO_SMALL` when `requested_size` is smaller than
/// the table of the version that would be served.
pub const fn negotiate(requested_size: u16, requested_version: u16, served: u16) -> Result<Negotiated, NtStatus> {
    if requested_version == 0 {
        return Err(STATUS_REVISION_MISMATCH);
    }
    let version = if requested_version < served { requested_version } else { served };
    let Some(size) = table_size(version) else {
        return Err(STATUS_REVISION_MISMATCH);
    };
    if requested_size < size {
        return Err(STATUS_BUFFER_TOO_SMALL);
    }
    Ok(Negotiated { version, size })
}

/// [`negotiate`] against this crate's [`CAPDMA_BUS_INTERFACE_VERSION`].
///
/// # Errors
/// As [`negotiate`].
pub const fn negotiate_current(requested_size: u16, requested_version: u16) -> Result<Negotiated, NtStatus> {
    negotiate(requested_size, requested_version, CAPDMA_BUS_INTERFACE_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: u16 = CAPDMA_BUS_INTERFACE_SIZE_V1;
    const V2: u16 = CAPDMA_BUS_INTERFACE_SIZE_V2;

    #[test]
    fn exact_request_is_served() {
        assert_eq!(negotiate_current(V1, 1), Ok(Negotiated { version: 1, size: V1 }));
        assert_eq!(negotiate_current(V2, 2), Ok(Negotiated { version: 2, size: V2 }));
    }

    #[test]
    fn newer_client_gets_the_common_prefix() {
        assert_eq!(negotiate(V1 + 64, 3, 1), Ok(Negotiated { version: 1, size: V1 }));
        assert_eq!(negotiate_current(V2 + 64, 3), Ok(Negotiated { version: 2, size: V2 }));
    }

    #[test]
    fn an_older_client_gets_its_version() {
        assert_eq!(negotiate_current(V1, 1), Ok(Negotiated { version: 1, size: V1 }));
        assert_eq!(negotiate_current(V2, 1), Ok(Negotiated { version: 1, size: V1 }), "a larger buffer, version 1");
    }

    #[test]
    fn short_size_is_refused() {
        assert_eq!(negotiate_current(V1, 2), Err(STATUS_BUFFER_TOO_SMALL), "version 2 needs its table");
        assert_eq!(negotiate_current(V1 - 8, 1), Err(STATUS_BUFFER_TOO_SMALL));
        assert_eq!(negotiate_current(0, 1), Err(STATUS_BUFFER_TOO_SMALL));
    }

    #[test]
    fn version_zero_is_refused() {
        assert_eq!(negotiate_current(V1, 0), Err(STATUS_REVISION_MISMATCH));
    }
}
