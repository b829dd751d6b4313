//! The byte layout of stored versions. A key's record is one allocation
//! holding the key and its latest version; each older version is one
//! allocation of its own. Revisions, version and lease are LEB128 varints
//! (a fresh key's four numbers usually take 6 to 8 bytes, not 32), and the
//! create revision is stored as its distance below the mod revision, which
//! is 0 for a key's first version.
//!
//! ```text
//! record:  varint key_len | key | version
//! version: varint mod_rev | varint mod_rev - create_rev | varint version | varint lease | value
//! ```
//!
//! Numbers are stored as `u64` with wrapping arithmetic, so any `i64` round-
//! trips (a negative one just takes 10 bytes). Only this module writes these
//! bytes, so readers trust the layout; they still never index out of bounds.

/// A version's numbers. `version == 0` marks a deletion (tombstone).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub mod_rev: i64,
    pub create_rev: i64,
    pub version: i64,
    pub lease: i64,
}

/// A version read from its bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ver<'a> {
    pub meta: Meta,
    pub value: &'a [u8],
}

impl Ver<'_> {
    pub fn is_tombstone(&self) -> bool {
        self.meta.version == 0
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`; bytes this module wrote are always well formed,
/// and a short or overlong one reads as what it has (never out of bounds).
fn get_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    // At most ten bytes make a u64.
    for shift in (0..70).step_by(7) {
        let Some(&byte) = b.get(*pos) else { break };
        *pos += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

fn meta_words(m: &Meta) -> [u64; 4] {
    [
        m.mod_rev as u64,
        m.mod_rev.wrapping_sub(m.create_rev) as u64,
        m.version as u64,
        m.lease as u64,
    ]
}

fn meta_len(m: &Meta) -> usize {
    meta_words(m).iter().map(|&w| varint_len(w)).sum()
}

fn put_meta(out: &mut Vec<u8>, m: &Meta) {
    for w in meta_words(m) {
        put_varint(out, w);
    }
}

fn get_meta(b: &[u8], pos: &mut usize) -> Meta {
    let mod_rev = get_varint(b, pos) as i64;
    let below = get_varint(b, pos) as i64;
    let version = get_varint(b, pos) as i64;
    let lease = get_varint(b, pos) as i64;
    Meta {
        mod_rev,
        create_rev: mod_rev.wrapping_sub(below),
        version,
        lease,
    }
}

/// A key's record: the key and its latest version, in one exact allocation.
pub(crate) fn encode_record(key: &[u8], meta: &Meta, value: &[u8]) -> Box<[u8]> {
    let n = varint_len(key.len() as u64) + key.len() + meta_len(meta) + value.len();
    let mut out = Vec::with_capacity(n);
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    put_meta(&mut out, meta);
    out.extend_from_slice(value);
    debug_assert_eq!(out.len(), n);
    out.into_boxed_slice()
}

/// An older version, without the key.
pub(crate) fn encode_version(meta: &Meta, value: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(meta_len(meta) + value.len());
    put_meta(&mut out, meta);
    out.extend_from_slice(value);
    out.into_boxed_slice()
}

/// The key of a record, and where its version starts.
fn record_key_end(record: &[u8]) -> (usize, usize) {
    let mut pos = 0;
    let len = get_varint(record, &mut pos) as usize;
    let end = pos.saturating_add(len).min(record.len());
    (pos, end)
}

pub(crate) fn record_key(record: &[u8]) -> &[u8] {
    let (start, end) = record_key_end(record);
    &record[start..end]
}

/// The key of a record and its latest version.
pub(crate) fn split_record(record: &[u8]) -> (&[u8], Ver<'_>) {
    let (start, end) = record_key_end(record);
    (&record[start..end], decode_version(&record[end..]))
}

pub(crate) fn decode_version(b: &[u8]) -> Ver<'_> {
    let mut pos = 0;
    let meta = get_meta(b, &mut pos);
    Ver {
        meta,
        value: b.get(pos..).unwrap_or(&[]),
    }
}

/// Just the mod revision of an older version (for binary searches).
pub(crate) fn version_mod_rev(b: &[u8]) -> i64 {
    get_varint(b, &mut 0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_numbers() {
        for m in [
            Meta {
                mod_rev: 2,
                create_rev: 2,
                version: 1,
                lease: 0,
            },
            Meta {
                mod_rev: 9,
                create_rev: 0,
                version: 0,
                lease: 0,
            },
            Meta {
                mod_rev: i64::MAX,
                create_rev: i64::MIN,
                version: -1,
                lease: 0x694d_7a2c_3b5e_9f01,
            },
            Meta {
                mod_rev: -5,
                create_rev: 7,
                version: i64::MIN,
                lease: -1,
            },
        ] {
            for value in [&b""[..], b"v", &[0xff; 300]] {
                for key in [&b""[..], b"k", &[0x80; 200]] {
                    let rec = encode_record(key, &m, value);
                    assert_eq!(
                        rec.len(),
                        varint_len(key.len() as u64) + key.len() + meta_len(&m) + value.len()
                    );
                    let (k, v) = split_record(&rec);
                    assert_eq!((k, v.meta, v.value), (key, m, value));
                    assert_eq!(record_key(&rec), key);
                }
                let old = encode_version(&m, value);
                assert_eq!(decode_version(&old), Ver { meta: m, value });
                assert_eq!(version_mod_rev(&old), m.mod_rev);
            }
        }
    }

    #[test]
    fn a_fresh_key_costs_few_header_bytes() {
        let m = Meta {
            mod_rev: 1_000_000,
            create_rev: 1_000_000,
            version: 1,
            lease: 0,
        };
        assert_eq!(meta_len(&m), 6);
    }

    #[test]
    fn garbage_reads_without_panicking() {
        for b in [&b""[..], &[0x80], &[0xff; 12], &[5, 1]] {
            let _ = split_record(b);
            let _ = decode_version(b);
            let _ = version_mod_rev(b);
        }
    }
}
