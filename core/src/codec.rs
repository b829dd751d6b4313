//! Small binary encodings for what the core itself puts in log entries and
//! snapshots. Decoders never panic and never allocate more than the input
//! justifies, whatever the bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::raft::{ConfChange, ConfChangeKind};
use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    Truncated,
    /// A tag byte had no meaning.
    BadTag(u8),
    /// A varint ran over ten bytes or past u64.
    BadVarint,
    /// A length field exceeds the remaining input.
    BadLength(u64),
    /// Bytes were left over after a complete value.
    TrailingBytes(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated input"),
            DecodeError::BadTag(t) => write!(f, "unknown tag {t}"),
            DecodeError::BadVarint => write!(f, "malformed varint"),
            DecodeError::BadLength(n) => write!(f, "length {n} exceeds input"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends an unsigned LEB128 varint.
pub fn put_uvarint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(buf: &mut impl BufMut, b: &[u8]) {
    put_uvarint(buf, b.len() as u64);
    buf.put_slice(b);
}

/// A cursor over input bytes that never reads past the end.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().expect("8 bytes by construction"),
        ))
    }

    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            // A u64's tenth byte holds one bit; a last byte of zero after
            // the first is an overlong encoding, which we never write (so
            // every input that decodes re-encodes to itself).
            if (shift == 63 && b > 1) || (shift > 0 && b == 0) {
                return Err(DecodeError::BadVarint);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A length-prefixed byte string; the length is checked against the input
    /// before anything is allocated.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.uvarint()?;
        if n > self.buf.len() as u64 {
            return Err(DecodeError::BadLength(n));
        }
        self.take(n as usize)
    }

    /// A count of items that each take at least `min_item_bytes`; rejects counts
    /// the remaining input cannot hold, so callers may reserve capacity for it.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.uvarint()?;
        let max = (self.buf.len() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(DecodeError::BadLength(n));
        }
        Ok(n as usize)
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

pub fn encode_conf_change(cc: &ConfChange) -> Bytes {
    let mut buf = BytesMut::with_capacity(24 + cc.context.len());
    buf.put_u8(match cc.kind {
        ConfChangeKind::AddVoter => 1,
        ConfChangeKind::AddLearner => 2,
        ConfChangeKind::Remove => 3,
    });
    buf.put_u64_le(cc.id);
    buf.put_u64_le(cc.node.0);
    put_bytes(&mut buf, &cc.context);
    buf.freeze()
}

pub fn decode_conf_change(data: &[u8]) -> Result<ConfChange, DecodeError> {
    let mut r = Reader::new(data);
    let kind = match r.u8()? {
        1 => ConfChangeKind::AddVoter,
        2 => ConfChangeKind::AddLearner,
        3 => ConfChangeKind::Remove,
        t => return Err(DecodeError::BadTag(t)),
    };
    let id = r.u64_le()?;
    let node = NodeId(r.u64_le()?);
    let context = Bytes::copy_from_slice(r.bytes()?);
    r.finish()?;
    Ok(ConfChange {
        id,
        kind,
        node,
        context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_canonical_varints_decode() {
        let decode = |b: &[u8]| Reader::new(b).uvarint();
        assert_eq!(decode(&[0x00]), Ok(0));
        assert_eq!(decode(&[0x82, 0x01]), Ok(130));
        // 2 and 0 written with a needless continuation byte.
        assert_eq!(decode(&[0x82, 0x00]), Err(DecodeError::BadVarint));
        assert_eq!(decode(&[0x80, 0x80, 0x00]), Err(DecodeError::BadVarint));
        // u64::MAX takes ten bytes, the last holding one bit.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(decode(&max), Ok(u64::MAX));
        max[9] = 0x02;
        assert_eq!(decode(&max), Err(DecodeError::BadVarint));
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/codec.txt")))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, v);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.uvarint().unwrap(), v);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn conf_change_round_trips(kind in 0u8..3, id in any::<u64>(), node in any::<u64>(), ctx in proptest::collection::vec(any::<u8>(), 0..64)) {
            let kind = [ConfChangeKind::AddVoter, ConfChangeKind::AddLearner, ConfChangeKind::Remove][kind as usize];
            let cc = ConfChange { id, kind, node: NodeId(node), context: Bytes::from(ctx) };
            prop_assert_eq!(decode_conf_change(&encode_conf_change(&cc)).unwrap(), cc);
        }

        #[test]
        fn conf_change_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_conf_change(&data);
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let buf = [0xffu8; 11];
        assert_eq!(Reader::new(&buf).uvarint(), Err(DecodeError::BadVarint));
        let buf = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(Reader::new(&buf).uvarint(), Err(DecodeError::BadVarint));
    }

    #[test]
    fn huge_length_is_rejected_without_allocating() {
        let mut buf = Vec::new();
        put_uvarint(&mut buf, u64::MAX);
        assert_eq!(
            Reader::new(&buf).bytes(),
            Err(DecodeError::BadLength(u64::MAX))
        );
        assert_eq!(
            Reader::new(&buf).count(1),
            Err(DecodeError::BadLength(u64::MAX))
        );
    }
}
