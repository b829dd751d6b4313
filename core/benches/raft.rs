//! Raft core throughput: a 3-member in-process cluster driven directly on one
//! thread (no I/O: storage is in memory, messages go through a queue). Each
//! round the leader takes a batch of small proposals, and the cluster runs
//! until they are committed and applied everywhere.
//!
//! `cargo bench --bench raft` prints a table and, last, one JSON line.

// A benchmark is a driver: it measures wall time, which the core itself never reads.
#![allow(clippy::disallowed_types)]

use std::time::Instant;

use bytes::Bytes;
use etcd_core::node::{Input, Outcome};
use etcd_core::register::{Register, RegisterRequest};
use etcd_core::testing::Cluster;
use etcd_core::{NodeId, ReqId};

struct Row {
    batch: usize,
    proposals: u64,
    secs: f64,
    entries: u64,
    messages: u64,
}

fn run(batch: usize, total: u64) -> Row {
    let mut c: Cluster<Register> = Cluster::new(3);
    let leader = c.elect_any();
    c.run_ticks(2);
    let value = Bytes::from_static(b"0123456789abcdef");
    let keys: Vec<Bytes> = (0..1024)
        .map(|i| Bytes::from(format!("key{i:05}")))
        .collect();
    let start_entries = c.node(leader).raft().log().last_index();
    let start_msgs = c.delivered;
    let mut next = 0u64;
    let mut done = 0u64;
    let t = Instant::now();
    while done < total {
        for _ in 0..batch {
            next += 1;
            let key = keys[(next % 1024) as usize].clone();
            c.step(
                leader,
                Input::Propose(
                    ReqId(next),
                    RegisterRequest::Put {
                        key,
                        value: value.clone(),
                    },
                ),
            );
        }
        c.stabilize();
        for (_, _, out) in c.replies.drain(..) {
            assert!(matches!(out, Outcome::Done(_)), "proposal failed: {out:?}");
            done += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // Every member applied everything.
    let applied = c.node(leader).raft().log().applied();
    for id in 1..=3 {
        assert_eq!(c.node(NodeId(id)).raft().log().applied(), applied);
    }
    Row {
        batch,
        proposals: done,
        secs,
        entries: c.node(leader).raft().log().last_index().0 - start_entries.0,
        messages: c.delivered - start_msgs,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let total: u64 = if quick { 200_000 } else { 3_000_000 };
    let mut rows = Vec::new();
    for batch in [1usize, 16, 256, 1024] {
        let n = if batch == 1 { total / 20 } else { total };
        rows.push(run(batch, n));
    }
    println!("raft core, 3 members in one thread, in-memory storage, 24-byte puts");
    println!(
        "{:>10} {:>12} {:>10} {:>14} {:>12} {:>12}",
        "batch", "proposals", "secs", "commits/s", "entries", "messages"
    );
    for r in &rows {
        println!(
            "{:>10} {:>12} {:>10.3} {:>14.0} {:>12} {:>12}",
            r.batch,
            r.proposals,
            r.secs,
            r.proposals as f64 / r.secs,
            r.entries,
            r.messages
        );
    }
    let best = rows
        .iter()
        .map(|r| r.proposals as f64 / r.secs)
        .fold(0.0, f64::max);
    let single = rows[0].proposals as f64 / rows[0].secs;
    println!(
        "{{\"bench\":\"raft\",\"commits_per_s\":{best:.0},\"commits_per_s_unbatched\":{single:.0},\"members\":3}}"
    );
}
