//! Peer messages as bytes, for the transport between members. The decoder
//! takes bytes from the network: it never panics and never allocates more
//! than the input justifies.
//!
//! A message is `u64 from | u64 to | uvarint term | u8 kind | body`. A
//! snapshot's body is the snapshot file format (`wal::snapfile`), which
//! carries its own checksum.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader};
use crate::raft::{Entry, EntryKind, Message, MsgBody, ReadCtx};
use crate::types::{LogIndex, NodeId, Term};

const APPEND: u8 = 1;
const APPEND_RESP: u8 = 2;
const HEARTBEAT: u8 = 3;
const HEARTBEAT_RESP: u8 = 4;
const VOTE: u8 = 5;
const VOTE_RESP: u8 = 6;
const SNAPSHOT: u8 = 7;
const TIMEOUT_NOW: u8 = 8;
const PROPOSE: u8 = 9;
const READ_INDEX: u8 = 10;
const READ_INDEX_RESP: u8 = 11;
const TRANSFER_LEADER: u8 = 12;

fn put_kind(buf: &mut BytesMut, k: EntryKind) {
    buf.put_u8(match k {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    });
}

fn get_kind(r: &mut Reader<'_>) -> Result<EntryKind, DecodeError> {
    match r.u8()? {
        0 => Ok(EntryKind::Normal),
        1 => Ok(EntryKind::ConfChange),
        t => Err(DecodeError::BadTag(t)),
    }
}

fn put_ctx(buf: &mut BytesMut, ctx: &ReadCtx) {
    codec::put_uvarint(buf, ctx.origin.0);
    codec::put_uvarint(buf, ctx.id);
}

fn get_ctx(r: &mut Reader<'_>) -> Result<ReadCtx, DecodeError> {
    Ok(ReadCtx {
        origin: NodeId(r.uvarint()?),
        id: r.uvarint()?,
    })
}

fn put_opt_ctx(buf: &mut BytesMut, ctx: &Option<ReadCtx>) {
    match ctx {
        None => buf.put_u8(0),
        Some(c) => {
            buf.put_u8(1);
            put_ctx(buf, c);
        }
    }
}

fn get_opt_ctx(r: &mut Reader<'_>) -> Result<Option<ReadCtx>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_ctx(r)?)),
        t => Err(DecodeError::BadTag(t)),
    }
}

fn get_bool(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        t => Err(DecodeError::BadTag(t)),
    }
}

/// Appends one message to `buf`.
pub fn encode_message(m: &Message, buf: &mut BytesMut) {
    buf.put_u64_le(m.from.0);
    buf.put_u64_le(m.to.0);
    codec::put_uvarint(buf, m.term.0);
    match &m.body {
        MsgBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            buf.put_u8(APPEND);
            codec::put_uvarint(buf, prev_index.0);
            codec::put_uvarint(buf, prev_term.0);
            codec::put_uvarint(buf, commit.0);
            codec::put_uvarint(buf, entries.len() as u64);
            for e in entries {
                codec::put_uvarint(buf, e.term.0);
                codec::put_uvarint(buf, e.index.0);
                put_kind(buf, e.kind);
                codec::put_bytes(buf, &e.data);
            }
        }
        MsgBody::AppendResp {
            index,
            reject,
            hint_index,
            hint_term,
        } => {
            buf.put_u8(APPEND_RESP);
            codec::put_uvarint(buf, index.0);
            buf.put_u8(u8::from(*reject));
            codec::put_uvarint(buf, hint_index.0);
            codec::put_uvarint(buf, hint_term.0);
        }
        MsgBody::Heartbeat { commit, ctx } => {
            buf.put_u8(HEARTBEAT);
            codec::put_uvarint(buf, commit.0);
            put_opt_ctx(buf, ctx);
        }
        MsgBody::HeartbeatResp { ctx } => {
            buf.put_u8(HEARTBEAT_RESP);
            put_opt_ctx(buf, ctx);
        }
        MsgBody::Vote {
            pre,
            last_index,
            last_term,
            transfer,
        } => {
            buf.put_u8(VOTE);
            buf.put_u8(u8::from(*pre));
            codec::put_uvarint(buf, last_index.0);
            codec::put_uvarint(buf, last_term.0);
            buf.put_u8(u8::from(*transfer));
        }
        MsgBody::VoteResp { pre, reject } => {
            buf.put_u8(VOTE_RESP);
            buf.put_u8(u8::from(*pre));
            buf.put_u8(u8::from(*reject));
        }
        MsgBody::Snapshot(s) => {
            buf.put_u8(SNAPSHOT);
            let (head, crc) = crate::wal::snapfile::encode_parts(s);
            codec::put_uvarint(buf, (head.len() + s.data.len() + 4) as u64);
            buf.put_slice(&head);
            buf.put_slice(&s.data);
            buf.put_u32_le(crc);
        }
        MsgBody::TimeoutNow => buf.put_u8(TIMEOUT_NOW),
        MsgBody::Propose { entries } => {
            buf.put_u8(PROPOSE);
            codec::put_uvarint(buf, entries.len() as u64);
            for (k, d) in entries {
                put_kind(buf, *k);
                codec::put_bytes(buf, d);
            }
        }
        MsgBody::ReadIndex { ctx } => {
            buf.put_u8(READ_INDEX);
            put_ctx(buf, ctx);
        }
        MsgBody::ReadIndexResp { ctx, index } => {
            buf.put_u8(READ_INDEX_RESP);
            put_ctx(buf, ctx);
            codec::put_uvarint(buf, index.0);
        }
        MsgBody::TransferLeader { target } => {
            buf.put_u8(TRANSFER_LEADER);
            codec::put_uvarint(buf, target.0);
        }
    }
}

/// Decodes one message from the front of `r`.
pub fn decode_message(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let from = NodeId(r.u64_le()?);
    let to = NodeId(r.u64_le()?);
    let term = Term(r.uvarint()?);
    let body = match r.u8()? {
        APPEND => {
            let prev_index = LogIndex(r.uvarint()?);
            let prev_term = Term(r.uvarint()?);
            let commit = LogIndex(r.uvarint()?);
            // An entry takes at least 4 bytes: term, index, kind, length.
            let n = r.count(4)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let term = Term(r.uvarint()?);
                let index = LogIndex(r.uvarint()?);
                let kind = get_kind(r)?;
                let data = Bytes::copy_from_slice(r.bytes()?);
                entries.push(Entry {
                    term,
                    index,
                    kind,
                    data,
                });
            }
            MsgBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            }
        }
        APPEND_RESP => MsgBody::AppendResp {
            index: LogIndex(r.uvarint()?),
            reject: get_bool(r)?,
            hint_index: LogIndex(r.uvarint()?),
            hint_term: Term(r.uvarint()?),
        },
        HEARTBEAT => MsgBody::Heartbeat {
            commit: LogIndex(r.uvarint()?),
            ctx: get_opt_ctx(r)?,
        },
        HEARTBEAT_RESP => MsgBody::HeartbeatResp {
            ctx: get_opt_ctx(r)?,
        },
        VOTE => MsgBody::Vote {
            pre: get_bool(r)?,
            last_index: LogIndex(r.uvarint()?),
            last_term: Term(r.uvarint()?),
            transfer: get_bool(r)?,
        },
        VOTE_RESP => MsgBody::VoteResp {
            pre: get_bool(r)?,
            reject: get_bool(r)?,
        },
        SNAPSHOT => {
            let bytes = r.bytes()?;
            let s = crate::wal::snapfile::decode(bytes)?;
            MsgBody::Snapshot(s)
        }
        TIMEOUT_NOW => MsgBody::TimeoutNow,
        PROPOSE => {
            let n = r.count(2)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let k = get_kind(r)?;
                entries.push((k, Bytes::copy_from_slice(r.bytes()?)));
            }
            MsgBody::Propose { entries }
        }
        READ_INDEX => MsgBody::ReadIndex { ctx: get_ctx(r)? },
        READ_INDEX_RESP => MsgBody::ReadIndexResp {
            ctx: get_ctx(r)?,
            index: LogIndex(r.uvarint()?),
        },
        TRANSFER_LEADER => MsgBody::TransferLeader {
            target: NodeId(r.uvarint()?),
        },
        t => return Err(DecodeError::BadTag(t)),
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

/// About how many bytes `m` encodes to: at least that, give or take the
/// varints. Enough to size a buffer once instead of growing it.
fn size_hint(m: &Message) -> usize {
    // Ids, term, kind and the fixed fields of the largest body.
    const HEAD: usize = 64;
    // An entry's term, index, kind and length prefix.
    const PER_ENTRY: usize = 32;
    HEAD + match &m.body {
        MsgBody::Append { entries, .. } => entries
            .iter()
            .map(|e| PER_ENTRY + e.data.len())
            .sum::<usize>(),
        MsgBody::Propose { entries } => entries
            .iter()
            .map(|(_, d)| PER_ENTRY + d.len())
            .sum::<usize>(),
        // The snapshot file's head (metadata, membership) is small.
        MsgBody::Snapshot(s) => s.data.len() + 256,
        _ => 0,
    }
}

/// Encodes a batch of messages (a count, then each message).
pub fn encode_batch(msgs: &[Message]) -> Bytes {
    let mut buf = BytesMut::with_capacity(10 + msgs.iter().map(size_hint).sum::<usize>());
    codec::put_uvarint(&mut buf, msgs.len() as u64);
    for m in msgs {
        encode_message(m, &mut buf);
    }
    buf.freeze()
}

/// Decodes a whole batch; any damage rejects all of it.
pub fn decode_batch(data: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut r = Reader::new(data);
    // A message takes at least 18 bytes (ids, term, kind).
    let n = r.count(18)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decode_message(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, Snapshot, SnapshotMeta};
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        let e = |i: u64| Entry {
            term: Term(3),
            index: LogIndex(i),
            kind: if i.is_multiple_of(2) {
                EntryKind::Normal
            } else {
                EntryKind::ConfChange
            },
            data: Bytes::from(vec![i as u8; i as usize]),
        };
        let ctx = ReadCtx {
            origin: NodeId(2),
            id: 99,
        };
        let mut conf = ConfState::default();
        conf.voters.insert(NodeId(1));
        conf.learners.insert(NodeId(4));
        let bodies = vec![
            MsgBody::Append {
                prev_index: LogIndex(7),
                prev_term: Term(2),
                entries: vec![e(8), e(9)],
                commit: LogIndex(6),
            },
            MsgBody::AppendResp {
                index: LogIndex(9),
                reject: true,
                hint_index: LogIndex(5),
                hint_term: Term(1),
            },
            MsgBody::Heartbeat {
                commit: LogIndex(4),
                ctx: Some(ctx),
            },
            MsgBody::HeartbeatResp { ctx: None },
            MsgBody::Vote {
                pre: true,
                last_index: LogIndex(10),
                last_term: Term(3),
                transfer: false,
            },
            MsgBody::VoteResp {
                pre: false,
                reject: true,
            },
            MsgBody::Snapshot(Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(100),
                    term: Term(4),
                    conf,
                },
                data: Bytes::from_static(b"state machine bytes"),
            }),
            MsgBody::TimeoutNow,
            MsgBody::Propose {
                entries: vec![(EntryKind::Normal, Bytes::from_static(b"x"))],
            },
            MsgBody::ReadIndex { ctx },
            MsgBody::ReadIndexResp {
                ctx,
                index: LogIndex(12),
            },
            MsgBody::TransferLeader { target: NodeId(3) },
        ];
        bodies
            .into_iter()
            .map(|body| Message {
                from: NodeId(0x8e9e05c52164694d),
                to: NodeId(2),
                term: Term(5),
                body,
            })
            .collect()
    }

    #[test]
    fn every_kind_round_trips() {
        let msgs = samples();
        let bytes = encode_batch(&msgs);
        assert_eq!(decode_batch(&bytes).unwrap(), msgs);
    }

    #[test]
    fn any_truncation_or_trailing_byte_is_an_error() {
        let bytes = encode_batch(&samples());
        for cut in 0..bytes.len() {
            assert!(decode_batch(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut more = bytes.to_vec();
        more.push(0);
        assert!(decode_batch(&more).is_err());
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let snap = samples().remove(6);
        let mut bytes = encode_batch(&[snap]).to_vec();
        let n = bytes.len();
        bytes[n - 10] ^= 0x40;
        assert!(decode_batch(&bytes).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/wire.txt")))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&data);
        }

        #[test]
        fn flipped_bytes_never_panic(i in 0usize..4096, bit in 0u8..8) {
            let mut bytes = encode_batch(&samples()).to_vec();
            let i = i % bytes.len();
            bytes[i] ^= 1 << bit;
            let _ = decode_batch(&bytes);
        }
    }
}
