//! The write-ahead log's byte format, and recovery from it, as pure functions:
//! the production WAL (`net/`) and the simulator's disk both write these bytes
//! and recover through this code.
//!
//! # Frames
//! A segment is a sequence of 8-byte-aligned frames, then zeros (segments are
//! preallocated):
//! ```text
//! u32 len | u8 type | 3 zero bytes | u32 crc | u32 zero | payload (len bytes) | zero padding to 8
//! ```
//! `crc` is CRC-32 over the segment number, the frame's offset, the type, the
//! length and the payload. A frame copied to the wrong place, or left over from
//! an older use of the space, does not check. A frame checks on its own, so a
//! reader can find valid frames after a damaged one.
//!
//! # Batches
//! Frames are written in batches (one group commit each) that end with a
//! `Commit` frame carrying the CRC of the batch's other frames and their
//! count. A batch counts only if its commit frame checks and covers exactly
//! the frames before it. Recovery reads complete batches in order. At the
//! first batch that is incomplete or damaged:
//! - if no complete batch follows anywhere in the segment, this is the torn
//!   tail of a write that was never acknowledged (its fsync never returned),
//!   and it is cut off;
//! - if a complete batch follows, data that was once durable is damaged
//!   (corruption in the middle), and recovery stops with the segment and
//!   offset: acknowledged entries are never dropped silently.
//!
//! This distinction holds only if at most one batch is ever unsynced: a
//! writer must not write batch N+1 before batch N's fsync has returned (pages
//! of two unsynced batches may reach the disk in any order). Group commit
//! keeps that cheap: everything that arrives during a sync goes into the
//! next batch.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader};
use crate::raft::{Entry, EntryKind, HardState};
use crate::types::{LogIndex, NodeId, Term};

/// Frames start on multiples of this.
pub const FRAME_ALIGN: usize = 8;
/// Header bytes before a frame's payload.
pub const FRAME_HEADER: usize = 16;
/// No frame payload may be larger (a bad length is caught before anything is
/// allocated). Must exceed the largest entry (`--max-request-bytes` plus a
/// batch's overhead) with room to spare.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalRecord {
    /// Who wrote this WAL; the first frame of every segment.
    Meta {
        member: NodeId,
        cluster_id: u64,
    },
    Entry(Entry),
    HardState(HardState),
    /// A snapshot at (index, term) is durable: earlier entries may be gone.
    Snapshot {
        index: LogIndex,
        term: Term,
    },
    /// Ends a batch: the CRC and count of the batch's other frames.
    Commit {
        batch_crc: u32,
        frames: u32,
    },
}

const T_META: u8 = 1;
const T_ENTRY: u8 = 2;
const T_HARD_STATE: u8 = 3;
const T_SNAPSHOT: u8 = 4;
const T_COMMIT: u8 = 5;

impl WalRecord {
    fn kind(&self) -> u8 {
        match self {
            WalRecord::Meta { .. } => T_META,
            WalRecord::Entry(_) => T_ENTRY,
            WalRecord::HardState(_) => T_HARD_STATE,
            WalRecord::Snapshot { .. } => T_SNAPSHOT,
            WalRecord::Commit { .. } => T_COMMIT,
        }
    }

    /// The length `encode_payload` writes.
    fn payload_len(&self) -> usize {
        match self {
            WalRecord::Meta { .. } => 16,
            WalRecord::Entry(e) => 17 + e.data.len(),
            WalRecord::HardState(_) => 24,
            WalRecord::Snapshot { .. } => 16,
            WalRecord::Commit { .. } => 8,
        }
    }

    fn encode_payload(&self, buf: &mut BytesMut) {
        match self {
            WalRecord::Meta { member, cluster_id } => {
                buf.put_u64_le(member.0);
                buf.put_u64_le(*cluster_id);
            }
            WalRecord::Entry(e) => {
                buf.put_u64_le(e.index.0);
                buf.put_u64_le(e.term.0);
                buf.put_u8(match e.kind {
                    EntryKind::Normal => 0,
                    EntryKind::ConfChange => 1,
                });
                buf.put_slice(&e.data);
            }
            WalRecord::HardState(hs) => {
                buf.put_u64_le(hs.term.0);
                buf.put_u64_le(hs.vote.0);
                buf.put_u64_le(hs.commit.0);
            }
            WalRecord::Snapshot { index, term } => {
                buf.put_u64_le(index.0);
                buf.put_u64_le(term.0);
            }
            WalRecord::Commit { batch_crc, frames } => {
                buf.put_u32_le(*batch_crc);
                buf.put_u32_le(*frames);
            }
        }
    }

    fn decode_payload(kind: u8, p: &[u8]) -> Result<WalRecord, DecodeError> {
        let mut r = Reader::new(p);
        let rec = match kind {
            T_META => WalRecord::Meta {
                member: NodeId(r.u64_le()?),
                cluster_id: r.u64_le()?,
            },
            T_ENTRY => {
                let index = LogIndex(r.u64_le()?);
                let term = Term(r.u64_le()?);
                let kind = match r.u8()? {
                    0 => EntryKind::Normal,
                    1 => EntryKind::ConfChange,
                    t => return Err(DecodeError::BadTag(t)),
                };
                let data = Bytes::copy_from_slice(r.take(r.remaining())?);
                return Ok(WalRecord::Entry(Entry {
                    term,
                    index,
                    kind,
                    data,
                }));
            }
            T_HARD_STATE => WalRecord::HardState(HardState {
                term: Term(r.u64_le()?),
                vote: NodeId(r.u64_le()?),
                commit: LogIndex(r.u64_le()?),
            }),
            T_SNAPSHOT => WalRecord::Snapshot {
                index: LogIndex(r.u64_le()?),
                term: Term(r.u64_le()?),
            },
            T_COMMIT => {
                let batch_crc =
                    u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes by construction"));
                let frames =
                    u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes by construction"));
                WalRecord::Commit { batch_crc, frames }
            }
            t => return Err(DecodeError::BadTag(t)),
        };
        r.finish()?;
        Ok(rec)
    }
}

fn frame_crc(segment: u64, offset: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&segment.to_le_bytes());
    h.update(&offset.to_le_bytes());
    h.update(&[kind]);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn padded(n: usize) -> usize {
    n.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// Appends one frame for `rec` at `offset` of `segment` to `out`; returns its CRC.
pub fn encode_frame(rec: &WalRecord, segment: u64, offset: u64, out: &mut BytesMut) -> u32 {
    debug_assert_eq!(offset as usize % FRAME_ALIGN, 0, "frames are aligned");
    let len = rec.payload_len();
    assert!(
        len <= MAX_FRAME_PAYLOAD,
        "frame payload of {len} bytes over the limit"
    );
    let kind = rec.kind();
    // The payload is encoded in place, after a header whose CRC is filled
    // in once the payload is there to hash.
    let head = out.len();
    out.reserve(FRAME_HEADER + padded(len));
    out.put_u32_le(len as u32);
    out.put_u8(kind);
    out.put_slice(&[0, 0, 0]);
    out.put_u32_le(0);
    out.put_u32_le(0);
    rec.encode_payload(out);
    let payload = &out[head + FRAME_HEADER..];
    debug_assert_eq!(payload.len(), len, "payload_len agrees with encode_payload");
    let crc = frame_crc(segment, offset, kind, payload);
    out[head + 8..head + 12].copy_from_slice(&crc.to_le_bytes());
    out.put_bytes(0, padded(len) - len);
    crc
}

/// The bytes one record's frame takes, padding included.
fn frame_len(rec: &WalRecord) -> usize {
    FRAME_HEADER + padded(rec.payload_len())
}

/// Encodes a batch (plus its commit frame) to go at `offset`. Returns the bytes.
pub fn encode_batch(records: &[WalRecord], segment: u64, offset: u64) -> BytesMut {
    let mut out = BytesMut::with_capacity(batch_len(records));
    let mut batch = crc32fast::Hasher::new();
    for rec in records {
        let crc = encode_frame(rec, segment, offset + out.len() as u64, &mut out);
        batch.update(&crc.to_le_bytes());
    }
    let commit = WalRecord::Commit {
        batch_crc: batch.finalize(),
        frames: records.len() as u32,
    };
    encode_frame(&commit, segment, offset + out.len() as u64, &mut out);
    out
}

/// The bytes a batch of `records` takes on disk, commit frame included.
pub fn batch_len(records: &[WalRecord]) -> usize {
    let commit = WalRecord::Commit {
        batch_crc: 0,
        frames: 0,
    };
    records.iter().map(frame_len).sum::<usize>() + frame_len(&commit)
}

/// Why one frame does not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame claims.
    Truncated,
    /// The length is over `MAX_FRAME_PAYLOAD`, or reserved bytes are not zero.
    BadHeader,
    BadCrc,
    /// The CRC checks but the payload does not decode: written by a different
    /// version, or a bug.
    BadPayload(DecodeError),
}

/// Reads the frame at `offset` of `buf` (the whole segment). `Ok(None)`: a
/// zero length, i.e. unwritten space.
pub fn decode_frame(
    buf: &[u8],
    segment: u64,
    offset: usize,
) -> Result<Option<(WalRecord, usize, u32)>, FrameError> {
    let Some(h) = buf.get(offset..offset + FRAME_HEADER) else {
        return if buf
            .get(offset..)
            .is_some_and(|rest| rest.iter().all(|&b| b == 0))
        {
            Ok(None)
        } else {
            Err(FrameError::Truncated)
        };
    };
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes by construction")) as usize;
    let kind = h[4];
    if len == 0 && kind == 0 {
        return Ok(None);
    }
    if len > MAX_FRAME_PAYLOAD || h[5..8] != [0, 0, 0] || h[12..16] != [0, 0, 0, 0] {
        return Err(FrameError::BadHeader);
    }
    let crc = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes by construction"));
    let start = offset + FRAME_HEADER;
    let Some(payload) = buf.get(start..start + len) else {
        return Err(FrameError::Truncated);
    };
    if frame_crc(segment, offset as u64, kind, payload) != crc {
        return Err(FrameError::BadCrc);
    }
    // The padding is outside the CRC; it must still be zero, or something
    // damaged the frame.
    let pad_end = start + padded(len);
    match buf.get(start + len..pad_end) {
        Some(pad) if pad.iter().all(|&b| b == 0) => {}
        Some(_) => return Err(FrameError::BadHeader),
        None => return Err(FrameError::Truncated),
    }
    let rec = WalRecord::decode_payload(kind, payload).map_err(FrameError::BadPayload)?;
    Ok(Some((rec, FRAME_HEADER + padded(len), crc)))
}

/// How a segment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Complete batches, then unwritten space at `offset`.
    Clean { offset: usize },
    /// An incomplete or damaged batch at `offset` with nothing complete after
    /// it: a write that never became durable. Cut here.
    TornTail { offset: usize },
    /// Damage at `offset` with a complete batch after it: durable data lost.
    Corrupt { offset: usize, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// Records of complete batches, with their offsets, in order.
    pub records: Vec<(usize, WalRecord)>,
    pub end: SegmentEnd,
}

/// A complete batch: its records with their offsets, and where the next
/// batch starts.
type ReadBatch = (Vec<(usize, WalRecord)>, usize);

/// Reads one complete batch at `offset`, or says why not.
fn read_batch(
    buf: &[u8],
    segment: u64,
    offset: usize,
) -> Result<Option<ReadBatch>, (usize, String)> {
    let mut at = offset;
    let mut recs = Vec::new();
    let mut batch = crc32fast::Hasher::new();
    let mut frames: u32 = 0;
    loop {
        match decode_frame(buf, segment, at) {
            Ok(None) if at == offset => return Ok(None),
            Ok(None) => return Err((at, "batch ends without its commit frame".into())),
            Err(e) => return Err((at, format!("{e:?}"))),
            Ok(Some((
                WalRecord::Commit {
                    batch_crc,
                    frames: n,
                },
                len,
                _,
            ))) => {
                if n != frames || batch_crc != batch.finalize() {
                    return Err((at, "commit frame does not cover the batch".into()));
                }
                return Ok(Some((recs, at + len)));
            }
            Ok(Some((rec, len, crc))) => {
                batch.update(&crc.to_le_bytes());
                frames = frames
                    .checked_add(1)
                    .ok_or((at, "too many frames".to_string()))?;
                recs.push((at, rec));
                at += len;
            }
        }
    }
}

/// Scans a segment: every complete batch, then how it ended (see the module docs).
pub fn scan_segment(buf: &[u8], segment: u64) -> SegmentScan {
    let mut records = Vec::new();
    let mut at = 0usize;
    loop {
        match read_batch(buf, segment, at) {
            Ok(None) => {
                return SegmentScan {
                    records,
                    end: SegmentEnd::Clean { offset: at },
                };
            }
            Ok(Some((recs, next))) => {
                records.extend(recs);
                at = next;
            }
            Err((bad, reason)) => {
                // Is there any complete batch later on? Look for a frame that
                // starts one: try every aligned offset after the damage.
                let mut probe = bad + FRAME_ALIGN;
                while probe + FRAME_HEADER <= buf.len() {
                    if let Ok(Some(_)) = read_batch(buf, segment, probe) {
                        return SegmentScan {
                            records,
                            end: SegmentEnd::Corrupt {
                                offset: bad,
                                reason: format!(
                                    "{reason}, yet a complete batch follows at offset {probe}"
                                ),
                            },
                        };
                    }
                    probe += FRAME_ALIGN;
                }
                return SegmentScan {
                    records,
                    end: SegmentEnd::TornTail { offset: at },
                };
            }
        }
    }
}

/// A snapshot file: a header, the snapshot metadata and state-machine bytes,
/// and a CRC over all of it.
pub mod snapfile {
    use super::*;
    use crate::raft::{ConfState, Snapshot, SnapshotMeta};

    const MAGIC: &[u8; 8] = b"ETCDRSN1";

    pub fn encode(s: &Snapshot) -> Bytes {
        let (head, crc) = encode_parts(s);
        let mut buf = BytesMut::with_capacity(head.len() + s.data.len() + 4);
        buf.put_slice(&head);
        buf.put_slice(&s.data);
        buf.put_u32_le(crc);
        buf.freeze()
    }

    /// The file as three pieces, so a big snapshot is written without
    /// copying it: `head`, then `s.data`, then the crc (little-endian).
    pub fn encode_parts(s: &Snapshot) -> (Bytes, u32) {
        let mut head = BytesMut::with_capacity(128);
        head.put_slice(MAGIC);
        head.put_u64_le(s.meta.index.0);
        head.put_u64_le(s.meta.term.0);
        for set in [&s.meta.conf.voters, &s.meta.conf.learners] {
            codec::put_uvarint(&mut head, set.len() as u64);
            for id in set {
                head.put_u64_le(id.0);
            }
        }
        codec::put_uvarint(&mut head, s.data.len() as u64);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&s.data);
        (head.freeze(), crc.finalize())
    }

    /// Decodes and checks a snapshot file; never panics, allocates only what
    /// the input justifies.
    pub fn decode(b: &[u8]) -> Result<Snapshot, DecodeError> {
        decode_with(b, Bytes::copy_from_slice)
    }

    /// As `decode`, but the snapshot's data is a slice of `b` (no copy).
    pub fn decode_owned(b: &Bytes) -> Result<Snapshot, DecodeError> {
        decode_with(b, |data| b.slice_ref(data))
    }

    fn decode_with(
        b: &[u8],
        data_of: impl FnOnce(&[u8]) -> Bytes,
    ) -> Result<Snapshot, DecodeError> {
        if b.len() < MAGIC.len() + 4 {
            return Err(DecodeError::Truncated);
        }
        let (body, tail) = b.split_at(b.len() - 4);
        let crc = u32::from_le_bytes(tail.try_into().expect("4 bytes by construction"));
        if crc32fast::hash(body) != crc {
            return Err(DecodeError::BadTag(0xcc));
        }
        let mut r = Reader::new(body);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(DecodeError::BadTag(0xaa));
        }
        let index = LogIndex(r.u64_le()?);
        let term = Term(r.u64_le()?);
        let mut conf = ConfState::default();
        for set in [&mut conf.voters, &mut conf.learners] {
            let n = r.count(8)?;
            for _ in 0..n {
                set.insert(NodeId(r.u64_le()?));
            }
        }
        let data = data_of(r.bytes()?);
        r.finish()?;
        Ok(Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ent(i: u64, t: u64, data: &[u8]) -> WalRecord {
        WalRecord::Entry(Entry {
            term: Term(t),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: Bytes::copy_from_slice(data),
        })
    }

    fn any_record() -> impl Strategy<Value = WalRecord> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(m, c)| WalRecord::Meta {
                member: NodeId(m),
                cluster_id: c,
            }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(|(i, t, conf, data)| WalRecord::Entry(Entry {
                    term: Term(t),
                    index: LogIndex(i),
                    kind: if conf {
                        EntryKind::ConfChange
                    } else {
                        EntryKind::Normal
                    },
                    data: Bytes::from(data),
                })),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(t, v, c)| {
                WalRecord::HardState(HardState {
                    term: Term(t),
                    vote: NodeId(v),
                    commit: LogIndex(c),
                })
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(i, t)| WalRecord::Snapshot {
                index: LogIndex(i),
                term: Term(t),
            }),
        ]
    }

    /// A segment of `n` batches of three records each, then zeros.
    fn segment(n: u64, extra_zeros: usize) -> (Vec<u8>, Vec<WalRecord>) {
        let mut buf = BytesMut::new();
        let mut all = vec![];
        for b in 0..n {
            let recs = vec![
                ent(b * 2 + 1, 1, b"hello"),
                ent(b * 2 + 2, 1, &[7u8; 100]),
                WalRecord::HardState(HardState {
                    term: Term(1),
                    vote: NodeId(1),
                    commit: LogIndex(b * 2 + 2),
                }),
            ];
            let off = buf.len() as u64;
            buf.extend_from_slice(&encode_batch(&recs, 3, off));
            all.extend(recs);
        }
        let mut v = buf.to_vec();
        v.extend(std::iter::repeat_n(0u8, extra_zeros));
        (v, all)
    }

    #[test]
    fn a_clean_segment_reads_back_every_record() {
        let (buf, all) = segment(5, 4096);
        let scan = scan_segment(&buf, 3);
        assert_eq!(
            scan.records
                .iter()
                .map(|(_, r)| r.clone())
                .collect::<Vec<_>>(),
            all
        );
        assert!(matches!(scan.end, SegmentEnd::Clean { .. }));
    }

    #[test]
    fn a_frame_checks_only_at_its_own_place() {
        let (buf, _) = segment(2, 0);
        assert!(decode_frame(&buf, 3, 0).unwrap().is_some());
        // The same bytes read as segment 4, or shifted, do not check.
        assert_eq!(decode_frame(&buf, 4, 0), Err(FrameError::BadCrc));
        let mut shifted = vec![0u8; 8];
        shifted.extend_from_slice(&buf);
        assert!(decode_frame(&shifted, 3, 8).is_err());
    }

    #[test]
    fn a_torn_last_batch_is_cut_and_damage_before_a_good_batch_is_corruption() {
        let (buf, all) = segment(4, 4096);
        let last_start = scan_segment(&buf, 3).records[9].0;
        // Tear the last batch: zero a sector-sized piece in its middle.
        let mut torn = buf.clone();
        for b in &mut torn[last_start + 8..last_start + 40] {
            *b = 0;
        }
        let scan = scan_segment(&torn, 3);
        assert_eq!(scan.records.len(), all.len() - 3);
        assert_eq!(scan.end, SegmentEnd::TornTail { offset: last_start });
        // Damage the first batch instead: three good batches follow.
        let mut rot = buf.clone();
        rot[20] ^= 0x40;
        let scan = scan_segment(&rot, 3);
        assert!(scan.records.is_empty());
        assert!(
            matches!(scan.end, SegmentEnd::Corrupt { offset: 0, .. }),
            "{:?}",
            scan.end
        );
    }

    #[test]
    fn a_batch_whose_commit_survived_but_a_middle_frame_did_not_is_torn() {
        let (buf, _) = segment(2, 1024);
        let second = scan_segment(&buf, 3).records[3].0;
        let mut torn = buf.clone();
        // The middle frame of the last batch is lost (a sector not written).
        let mid = scan_segment(&buf, 3).records[4].0;
        for b in &mut torn[mid..mid + 16] {
            *b = 0;
        }
        let scan = scan_segment(&torn, 3);
        assert_eq!(scan.end, SegmentEnd::TornTail { offset: second });
    }

    #[test]
    fn snapshot_files_round_trip_and_catch_damage() {
        let s = crate::raft::Snapshot {
            meta: crate::raft::SnapshotMeta {
                index: LogIndex(10),
                term: Term(2),
                conf: crate::raft::ConfState {
                    voters: [NodeId(1), NodeId(2)].into(),
                    learners: [NodeId(3)].into(),
                },
            },
            data: Bytes::from_static(b"state"),
        };
        let bytes = snapfile::encode(&s);
        assert_eq!(snapfile::decode(&bytes).unwrap(), s);
        let mut bad = bytes.to_vec();
        bad[12] ^= 1;
        assert!(snapfile::decode(&bad).is_err());
        assert!(snapfile::decode(&bad[..bad.len() - 1]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/wal.txt")))),
            ..ProptestConfig::default()
        })]

        /// Whatever happens to the bytes, scanning never panics, and every
        /// record it returns was written (at the same place).
        #[test]
        fn scanning_damaged_segments_never_panics_or_invents(
            batches in 1u64..6,
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        ) {
            let (mut buf, all) = segment(batches, 64);
            let n = cut.index(buf.len() + 1);
            buf.truncate(n);
            for (at, bit) in flips {
                if !buf.is_empty() {
                    let i = at.index(buf.len());
                    buf[i] ^= 1 << bit;
                }
            }
            let scan = scan_segment(&buf, 3);
            for (k, (_, rec)) in scan.records.iter().enumerate() {
                prop_assert_eq!(rec, &all[k]);
            }
        }

        /// Every kind of record: the batch is as long as `batch_len` says,
        /// and each frame reads back where it was put (its CRC included).
        #[test]
        fn batches_of_every_record_kind_read_back(
            recs in prop::collection::vec(any_record(), 0..6),
            segment in 0u64..1000,
            slot in 0u64..1000,
        ) {
            let offset = slot * FRAME_ALIGN as u64;
            let out = encode_batch(&recs, segment, offset);
            prop_assert_eq!(out.len(), batch_len(&recs));
            let mut buf = vec![0u8; offset as usize];
            buf.extend_from_slice(&out);
            let mut at = offset as usize;
            for rec in &recs {
                let (got, len, _) = decode_frame(&buf, segment, at)
                    .expect("frame reads")
                    .expect("frame is there");
                prop_assert_eq!(&got, rec);
                at += len;
            }
            let (commit, len, _) = decode_frame(&buf, segment, at).unwrap().unwrap();
            let is_commit = matches!(commit, WalRecord::Commit { .. });
            prop_assert!(is_commit);
            prop_assert_eq!(at + len, buf.len());
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300), off in 0usize..64) {
            let _ = decode_frame(&data, 0, off & !7);
            let _ = scan_segment(&data, 0);
            let _ = snapfile::decode(&data);
        }
    }
}

/// What a WAL's complete batches say, replayed in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalReplay {
    pub meta: Option<(NodeId, u64)>,
    pub hard_state: HardState,
    /// The newest durable snapshot the WAL knows of.
    pub snapshot: Option<(LogIndex, Term)>,
    /// Contiguous entries (a later entry at an index replaces the suffix from
    /// there, as Raft's truncation does).
    pub entries: Vec<Entry>,
}

impl WalReplay {
    /// What a restart recovers: the hard state, the snapshot the replay
    /// named (read by the caller), and the entries after that snapshot.
    pub fn into_recovered(self, snapshot: Option<crate::raft::Snapshot>) -> crate::raft::Recovered {
        let snap_index = snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.meta.index);
        crate::raft::Recovered {
            hard_state: self.hard_state,
            snapshot,
            entries: self
                .entries
                .into_iter()
                .filter(|e| e.index > snap_index)
                .collect(),
            lost_state: false,
        }
    }

    pub fn apply(&mut self, rec: WalRecord) -> Result<(), String> {
        match rec {
            WalRecord::Meta { member, cluster_id } => match self.meta {
                None => self.meta = Some((member, cluster_id)),
                Some(m) if m == (member, cluster_id) => {}
                Some(m) => {
                    return Err(format!(
                        "WAL of member {:?} in cluster {:x} has a segment of {member:?} in {cluster_id:x}",
                        m.0, m.1
                    ));
                }
            },
            WalRecord::Entry(e) => {
                if let Some(first) = self.entries.first().map(|f| f.index) {
                    let keep = e.index.0.saturating_sub(first.0) as usize;
                    // A snapshot from the leader may stand in for a gap.
                    let covered = self.snapshot.is_some_and(|(i, _)| i.0 + 1 >= e.index.0);
                    if e.index < first || (keep > self.entries.len() && covered) {
                        self.entries.clear();
                    } else if keep > self.entries.len() {
                        return Err(format!(
                            "WAL skips from entry {:?} to {:?}",
                            self.entries.last().map(|x| x.index),
                            e.index
                        ));
                    } else {
                        self.entries.truncate(keep);
                    }
                }
                self.entries.push(e);
            }
            WalRecord::HardState(hs) => self.hard_state = hs,
            WalRecord::Snapshot { index, term } => {
                if self.snapshot.is_none_or(|(i, _)| i < index) {
                    self.snapshot = Some((index, term));
                }
            }
            WalRecord::Commit { .. } => {}
        }
        Ok(())
    }
}

/// The WAL records that make a persist durable, in the order `Persist`
/// documents. Snapshot data itself goes to a snapshot file first; the WAL
/// only records that it exists.
pub fn records_of(p: &crate::node::Persist) -> Vec<WalRecord> {
    let mut out = Vec::with_capacity(p.entries.len() + 3);
    if let Some(s) = &p.snapshot {
        out.push(WalRecord::Snapshot {
            index: s.meta.index,
            term: s.meta.term,
        });
    }
    if let Some((s, _)) = &p.local_snapshot {
        out.push(WalRecord::Snapshot {
            index: s.meta.index,
            term: s.meta.term,
        });
    }
    out.extend(p.entries.iter().cloned().map(WalRecord::Entry));
    if let Some(hs) = p.hard_state {
        out.push(WalRecord::HardState(hs));
    }
    out
}
