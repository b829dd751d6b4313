//! Seed corpora for the WAL and snapshot fuzz targets, written from the
//! real encoders (the core only encodes; writing files belongs here).

use bytes::Bytes;
use etcd_core::raft::{Entry, EntryKind, HardState};
use etcd_core::types::{LogIndex, NodeId, Term};
use etcd_core::wal::{WalRecord, encode_batch, snapfile};

/// Writes seed inputs for the fuzz targets:
/// `CORPUS_DIR=$PWD/fuzz/corpus cargo test -p etcd-net --test fuzz_corpus`.
/// Without `CORPUS_DIR` it writes nothing (and is not a check).
#[test]
fn write_fuzz_corpus() {
    let Ok(dir) = std::env::var("CORPUS_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let recs = vec![
        WalRecord::Meta {
            member: NodeId(1),
            cluster_id: 7,
        },
        WalRecord::Entry(Entry {
            term: Term(1),
            index: LogIndex(1),
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"abc"),
        }),
        WalRecord::HardState(HardState {
            term: Term(1),
            vote: NodeId(1),
            commit: LogIndex(1),
        }),
        WalRecord::Snapshot {
            index: LogIndex(1),
            term: Term(1),
        },
    ];
    let seg = encode_batch(&recs, 1, 0);
    std::fs::write(dir.join("wal_frame/batch"), &seg).unwrap();
    let mut two = seg.to_vec();
    two.extend_from_slice(&encode_batch(&recs[1..2], 1, seg.len() as u64));
    std::fs::write(dir.join("wal_segment/two_batches"), &two).unwrap();
    let snap = etcd_core::raft::Snapshot {
        meta: etcd_core::raft::SnapshotMeta {
            index: LogIndex(3),
            term: Term(1),
            conf: Default::default(),
        },
        data: <etcd_core::etcd::EtcdState as etcd_core::node::StateMachine>::snapshot(
            &etcd_core::etcd::EtcdState::default(),
        ),
    };
    std::fs::write(dir.join("snapshot/empty_state"), snapfile::encode(&snap)).unwrap();
}
