//! Crash-test child: appends entries to a WAL under `argv[1]` as fast as it
//! can, group-committing batches, and prints "durable <index>" after each
//! sync returns. Every few thousand entries it writes a local snapshot. The
//! parent kills it with SIGKILL at random and checks that a restart recovers
//! every index reported durable.

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use etcd_core::node::Persist;
use etcd_core::raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use etcd_core::storage::Storage;
use etcd_core::{LogIndex, NodeId, Term};
use etcd_net::wal::{Wal, WalOptions};

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: wal-crash-child <dir> [segment-bytes]"),
    );
    let segment_bytes: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256 * 1024);
    let (mut wal, rec) = match Wal::open(
        &dir,
        NodeId(1),
        9,
        WalOptions {
            segment_bytes,
            max_snapshots: 2,
            wal_dir: None,
        },
    ) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(2);
        }
    };
    let mut next = rec
        .entries
        .last()
        .map_or(rec.snapshot.as_ref().map_or(0, |s| s.meta.index.0), |e| {
            e.index.0
        })
        + 1;
    let mut number = 0u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        // A batch of 1..64 entries of varying size.
        let n = 1 + (next * 2654435761 % 64);
        let entries: Vec<Entry> = (0..n)
            .map(|k| {
                let i = next + k;
                let size = (i * 7919 % 2000) as usize;
                Entry {
                    term: Term(1),
                    index: LogIndex(i),
                    kind: EntryKind::Normal,
                    data: Bytes::from(vec![(i % 251) as u8; size]),
                }
            })
            .collect();
        let last = next + n - 1;
        number += 1;
        let mut p = Persist {
            number,
            hard_state: Some(HardState {
                term: Term(1),
                vote: NodeId(1),
                commit: LogIndex(last),
            }),
            entries,
            must_sync: true,
            ..Persist::default()
        };
        if last / 5000 != (next - 1) / 5000 {
            let s = Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(last),
                    term: Term(1),
                    conf: ConfState::default(),
                },
                data: Bytes::from(format!("snapshot at {last}")),
            };
            p.local_snapshot = Some((s, LogIndex(last.saturating_sub(100))));
        }
        if let Err(e) = wal.write(&p).and_then(|()| wal.sync()) {
            eprintln!("write: {e}");
            std::process::exit(3);
        }
        // Only now is it durable: say so.
        if writeln!(out, "durable {last}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
        next = last + 1;
    }
}
