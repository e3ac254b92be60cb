//! Internal keys: a user key plus the commit timestamp of the version and the
//! kind of entry. Versions of one user key sort newest first, which is what
//! lets a read at snapshot `s` stop at the first version with `ts <= s`.
//!
//! Encoded form (used in table files): `user_key ++ (u64::MAX - ts) as
//! big-endian u64 ++ kind`. Byte order of encoded keys is *not* internal
//! order when one user key is a prefix of another (`a` vs `a\0`), so table
//! files decode keys and compare them with [`compare_versions`], never as
//! raw bytes.

use std::cmp::Ordering;

use crate::error::{Error, Result};

/// A range of user keys: (lower, upper) bounds.
pub type KeyRange = (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>);

/// A commit timestamp. 0 is "before any commit"; the first commit gets 1.
pub type Timestamp = u64;

/// Largest accepted user key, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Largest accepted value, in bytes.
pub const MAX_VALUE_LEN: usize = 256 * 1024 * 1024;

/// What a version records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u8)]
pub enum ValueKind {
    /// A tombstone: the key was deleted at this timestamp.
    Delete = 0,
    /// A value was written at this timestamp.
    Put = 1,
}

impl ValueKind {
    pub fn from_u8(b: u8) -> Option<ValueKind> {
        match b {
            0 => Some(ValueKind::Delete),
            1 => Some(ValueKind::Put),
            _ => None,
        }
    }
}

/// Length of the suffix that follows the user key in an encoded internal key.
pub const INTERNAL_SUFFIX_LEN: usize = 9;

/// Appends the encoded internal key to `out`.
pub fn encode_internal(out: &mut Vec<u8>, user_key: &[u8], ts: Timestamp, kind: ValueKind) {
    out.extend_from_slice(user_key);
    out.extend_from_slice(&(u64::MAX - ts).to_be_bytes());
    out.push(kind as u8);
}

/// A decoded view of an encoded internal key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalKeyRef<'a> {
    pub user_key: &'a [u8],
    pub ts: Timestamp,
    pub kind: ValueKind,
}

pub fn decode_internal(encoded: &[u8]) -> Option<InternalKeyRef<'_>> {
    let split = encoded.len().checked_sub(INTERNAL_SUFFIX_LEN)?;
    let (user_key, suffix) = encoded.split_at(split);
    let inv = u64::from_be_bytes(suffix[..8].try_into().ok()?);
    let kind = ValueKind::from_u8(suffix[8])?;
    Some(InternalKeyRef {
        user_key,
        ts: u64::MAX - inv,
        kind,
    })
}

/// Internal order: user key ascending, then timestamp descending.
pub fn compare_versions(a_key: &[u8], a_ts: Timestamp, b_key: &[u8], b_ts: Timestamp) -> Ordering {
    a_key.cmp(b_key).then_with(|| b_ts.cmp(&a_ts))
}

/// Checks a user key against the engine's limits.
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument("key must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid_argument(format!(
            "key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

pub fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::invalid_argument(format!(
            "value is {} bytes; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut out = Vec::new();
        encode_internal(&mut out, b"user", 42, ValueKind::Put);
        let d = decode_internal(&out).expect("decodes");
        assert_eq!(d.user_key, b"user");
        assert_eq!(d.ts, 42);
        assert_eq!(d.kind, ValueKind::Put);
    }

    #[test]
    fn newer_versions_sort_first() {
        assert_eq!(compare_versions(b"a", 5, b"a", 3), Ordering::Less);
        assert_eq!(compare_versions(b"a", 1, b"b", 9), Ordering::Less);
    }

    #[test]
    fn limits() {
        assert!(check_key(b"").is_err());
        assert!(check_key(&vec![0; MAX_KEY_LEN + 1]).is_err());
        assert!(check_key(b"k").is_ok());
    }
}
