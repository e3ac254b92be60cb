//! The 64-byte footer at the end of every table file (docs/format-table.md,
//! "Footer"). The magic in the last 8 bytes says which version the file is:
//! `TOONSST1` for version 1, `TOONSST2` for version 2; the version field
//! must agree with it. Both footers end `version u32 | crc32 of bytes 0..52 | magic`.

use super::{FOOTER_LEN, FORMAT_VERSION};
use crate::coding::Reader;

pub(crate) const MAGIC_V1: &[u8; 8] = b"TOONSST1";
pub(crate) const MAGIC_V2: &[u8; 8] = b"TOONSST2";
/// Bytes of the footer covered by its CRC (everything before the CRC).
const FOOTER_CRC_COVERS: usize = 52;

/// Version 1: index and properties handles, a reserved filter pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FooterV1 {
    pub(crate) index_offset: u64,
    pub(crate) index_len: u64,
    pub(crate) props_offset: u64,
    pub(crate) props_len: u64,
    /// Reserved for bloom filters; (0, 0) in version 1 files.
    pub(crate) filter_offset: u64,
    pub(crate) filter_len: u64,
}

/// Version 2: index and metaindex handles and the table kind; everything
/// else is found by name through the metaindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FooterV2 {
    pub(crate) index_offset: u64,
    pub(crate) index_len: u64,
    pub(crate) metaindex_offset: u64,
    pub(crate) metaindex_len: u64,
    pub(crate) kind: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Footer {
    V1(FooterV1),
    V2(FooterV2),
}

/// Appends a version-2 footer: four u64 handles fields, the kind byte, 15
/// reserved zero bytes, version 2, CRC, magic.
pub(crate) fn encode_footer_v2(f: &FooterV2, out: &mut Vec<u8>) {
    let start = out.len();
    for v in [
        f.index_offset,
        f.index_len,
        f.metaindex_offset,
        f.metaindex_len,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(f.kind);
    out.extend_from_slice(&[0; 15]);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(MAGIC_V2);
}

/// Reads the footer at the end of `file`, checking length, magic, CRC and
/// version in that order (so a truncated file reports as such, not as a
/// checksum error).
pub(crate) fn decode_footer(file: &[u8]) -> Result<Footer, String> {
    let start = file.len().checked_sub(FOOTER_LEN).ok_or_else(|| {
        format!(
            "file is {} bytes, shorter than the {FOOTER_LEN}-byte footer (truncated?)",
            file.len()
        )
    })?;
    let footer = file.get(start..).unwrap_or_default();
    let mut r = Reader::new(footer);
    let mut field = || r.u64_le().ok_or("footer too short");
    let fields = [field()?, field()?, field()?, field()?, field()?, field()?];
    let (Some(version), Some(crc), Some(magic)) = (r.u32_le(), r.u32_le(), r.bytes(8)) else {
        return Err("footer too short".into());
    };
    let expected = match magic {
        m if m == MAGIC_V1 => 1,
        m if m == MAGIC_V2 => 2,
        _ => return Err("bad magic at the end of the file (not a table, or truncated)".into()),
    };
    if crc32fast::hash(footer.get(..FOOTER_CRC_COVERS).unwrap_or_default()) != crc {
        return Err("footer checksum mismatch".into());
    }
    if version != expected {
        return Err(format!(
            "format version {version} is not supported (this build reads 1 and 2; magic says {expected})"
        ));
    }
    let [a, b, c, d, e, f] = fields;
    Ok(if version == 1 {
        Footer::V1(FooterV1 {
            index_offset: a,
            index_len: b,
            props_offset: c,
            props_len: d,
            filter_offset: e,
            filter_len: f,
        })
    } else {
        Footer::V2(FooterV2 {
            index_offset: a,
            index_len: b,
            metaindex_offset: c,
            metaindex_len: d,
            // Byte 32: the low byte of the fifth field; bytes 33..48 reserved.
            kind: e as u8,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_v2_round_trip_and_layout() {
        let f = FooterV2 {
            index_offset: 1,
            index_len: 2,
            metaindex_offset: 3,
            metaindex_len: 4,
            kind: 5,
        };
        let mut out = vec![9; 5];
        encode_footer_v2(&f, &mut out);
        assert_eq!(out.len(), 5 + FOOTER_LEN);
        assert_eq!(&out[out.len() - 8..], MAGIC_V2);
        assert_eq!(out[5 + 32], 5);
        assert_eq!(&out[5 + 48..5 + 52], &2u32.to_le_bytes());
        assert_eq!(decode_footer(&out), Ok(Footer::V2(f)));
        assert!(decode_footer(&out[1..]).is_ok());
        assert!(decode_footer(&out[6..]).is_err());
        // Version 1 in a version-2 footer (CRC fixed up) is refused.
        let at = out.len() - FOOTER_LEN;
        out[at + 48] = 1;
        let crc = crc32fast::hash(&out[at..at + 52]);
        out[at + 52..at + 56].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_footer(&out).unwrap_err().contains("version 1"));
    }
}
