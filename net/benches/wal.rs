//! The production storage on this machine's disk, all in one run:
//!
//! 1. the raw fdatasync rate (4 KiB pwrite + fdatasync, one file), the
//!    ceiling for everything below;
//! 2. WAL appends (one 256-byte entry each) by 1 writer, and by 100 writer
//!    threads sharing a group-committing appender: latency from submit to
//!    durable, p50 and p99;
//! 3. a single-member node (the real core) on the WAL, loaded with 1,000,000
//!    keys (64-byte keys, 256-byte values) and snapshotting every 100,000
//!    entries as etcd does by default: put latency one put at a time, during
//!    a snapshot of those keys (encoded a step at a time by the core, written
//!    to disk by a background thread) and without one (2,000 puts just
//!    before it and 2,000 just after);
//! 4. 100,000 more entries after the snapshot, then recovery of the data
//!    directory: open the WAL, restore the snapshot, apply the log.
//!
//! `cargo bench --bench wal` prints a table and, last, one JSON line.
//! `BENCH_KEYS=N` changes the number of keys, `BENCH_DIR` the directory
//! (default: a fresh one under the system's temporary directory, removed at
//! the end; the disk under it is what is measured), `BENCH_DEBUG=1` lists
//! the slowest puts during the snapshot.

// A benchmark is a driver: it measures wall time, which the core never reads.
#![allow(clippy::disallowed_types)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_core::etcd::{EtcdConfig, EtcdState};
use etcd_core::mvcc::PutRequest;
use etcd_core::node::{Input, Node, NodeConfig, Outcome, Persist};
use etcd_core::raft::{Entry, EntryKind, HardState, Role};
use etcd_core::request::{Request, Response};
use etcd_core::storage::Storage;
use etcd_core::{LogIndex, NodeId, RaftConfig, ReqId, Term};
use etcd_net::wal::{Wal, WalOptions};

const CLUSTER: u64 = 0x6265_6e63;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// 1. pwrite 4 KiB at offset 0 and fdatasync, for about two seconds.
fn fdatasync_rate(dir: &Path) -> f64 {
    let path = dir.join("fdatasync.probe");
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("create the probe file");
    let block = vec![0x5au8; 4096];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        f.write_all_at(&block, 0).expect("pwrite");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    rate
}

fn entry(index: u64, size: usize) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::from(vec![(index % 251) as u8; size]),
    }
}

fn hard_state(commit: u64) -> Option<HardState> {
    Some(HardState {
        term: Term(1),
        vote: NodeId(1),
        commit: LogIndex(commit),
    })
}

/// 2a. One writer: append one entry, sync, repeat.
fn appends_one_writer(dir: &Path, count: u64) -> Vec<f64> {
    let (mut wal, _) = Wal::open(dir, NodeId(1), CLUSTER, WalOptions::default()).expect("open");
    let mut lat = Vec::with_capacity(count as usize);
    for i in 1..=count {
        let t = Instant::now();
        wal.write(&Persist {
            number: i,
            hard_state: hard_state(i),
            entries: vec![entry(i, 256)],
            must_sync: true,
            ..Persist::default()
        })
        .expect("write");
        wal.sync().expect("sync");
        lat.push(ms(t.elapsed()));
    }
    lat
}

/// 2b. `writers` threads each append `each` entries, one at a time; one
/// appender thread takes whatever is queued, writes it as one batch and
/// syncs once (group commit), then answers every writer in it.
fn appends_many_writers(dir: &Path, writers: usize, each: usize) -> (Vec<f64>, f64, f64) {
    let (mut wal, _) = Wal::open(dir, NodeId(1), CLUSTER, WalOptions::default()).expect("open");
    type Job = (Bytes, mpsc::Sender<()>);
    let (tx, rx) = mpsc::channel::<Job>();
    let appender = std::thread::spawn(move || {
        let mut index = 0u64;
        let mut number = 0u64;
        let mut batches = 0u64;
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while let Ok(j) = rx.try_recv() {
                jobs.push(j);
            }
            let entries: Vec<Entry> = jobs
                .iter()
                .map(|(data, _)| {
                    index += 1;
                    Entry {
                        term: Term(1),
                        index: LogIndex(index),
                        kind: EntryKind::Normal,
                        data: data.clone(),
                    }
                })
                .collect();
            number += 1;
            wal.write(&Persist {
                number,
                hard_state: hard_state(index),
                entries,
                must_sync: true,
                ..Persist::default()
            })
            .expect("write");
            wal.sync().expect("sync");
            batches += 1;
            for (_, done) in jobs {
                let _ = done.send(());
            }
        }
        batches
    });
    let t = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let (done_tx, done_rx) = mpsc::channel();
                let mut lat = Vec::with_capacity(each);
                for i in 0..each {
                    let data = Bytes::from(vec![(w + i) as u8; 256]);
                    let t = Instant::now();
                    tx.send((data, done_tx.clone())).expect("appender alive");
                    done_rx.recv().expect("answered");
                    lat.push(ms(t.elapsed()));
                }
                lat
            })
        })
        .collect();
    drop(tx);
    let mut lat = Vec::new();
    for th in threads {
        lat.extend(th.join().expect("writer"));
    }
    let secs = t.elapsed().as_secs_f64();
    let batches = appender.join().expect("appender");
    let per_s = lat.len() as f64 / secs;
    let per_batch = lat.len() as f64 / batches as f64;
    (lat, per_s, per_batch)
}

/// A single-member node on the real WAL. Like a server's loop, it takes new
/// requests between any two `ready()`s, so a snapshot being encoded (one
/// step per `ready()`) is interleaved with them.
struct Member {
    node: Node<EtcdState>,
    wal: Wal,
    next_req: u64,
    /// Seconds spent in the core (`ready()`) and in the WAL (write + sync).
    core_s: f64,
    wal_s: f64,
}

fn node_config(snapshot_every: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(RaftConfig::new(NodeId(1), 7));
    cfg.snapshot_interval_entries = snapshot_every;
    // One request per entry: entries here are puts, as counted by the issue.
    cfg.limits.max_requests_per_entry = 1;
    cfg
}

impl Member {
    /// One `ready()` and its effects.
    fn drive(&mut self, replies: &mut Vec<(ReqId, Outcome<Response>)>) {
        if self.node.has_ready() {
            let t = Instant::now();
            let rd = self.node.ready();
            self.core_s += t.elapsed().as_secs_f64();
            replies.extend(rd.replies);
            if let Some(p) = rd.persist {
                let t = Instant::now();
                self.wal.write(&p).expect("write");
                if p.must_sync {
                    self.wal.sync().expect("sync");
                }
                self.wal_s += t.elapsed().as_secs_f64();
                self.node.step(Input::Persisted(p.number));
            }
        }
    }

    fn propose(&mut self, key: Bytes, value: Bytes) -> ReqId {
        self.next_req += 1;
        let id = ReqId(self.next_req);
        self.node.step(Input::Propose(
            id,
            Request::Put(PutRequest {
                key,
                value,
                ..PutRequest::default()
            }),
        ));
        id
    }

    /// Proposes the puts in rounds and waits for all of them.
    fn put_many(&mut self, puts: impl Iterator<Item = (Bytes, Bytes)>) {
        let mut replies = Vec::new();
        let mut outstanding = 0usize;
        for (k, v) in puts {
            self.propose(k, v);
            outstanding += 1;
            if outstanding == 5_000 {
                outstanding -= self.wait(&mut replies, outstanding);
            }
        }
        while outstanding > 0 {
            outstanding -= self.wait(&mut replies, outstanding);
        }
    }

    /// Drives until some replies come; returns how many.
    fn wait(&mut self, replies: &mut Vec<(ReqId, Outcome<Response>)>, want: usize) -> usize {
        replies.clear();
        while replies.len() < want {
            self.drive(replies);
            if !self.node.has_ready() && replies.len() < want {
                self.node.step(Input::Tick);
            }
        }
        for (_, out) in replies.iter() {
            assert!(
                matches!(out, Outcome::Done(Response::Put(_))),
                "put failed: {out:?}"
            );
        }
        replies.len()
    }

    /// One put, start to durable answer.
    fn put_one(&mut self, key: Bytes, value: Bytes) -> f64 {
        let t = Instant::now();
        self.propose(key, value);
        let mut replies = Vec::new();
        self.wait(&mut replies, 1);
        ms(t.elapsed())
    }
}

fn key(i: u64) -> Bytes {
    let scrambled = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8;
    let mut k = format!("k/{scrambled:016x}{i:010}").into_bytes();
    k.resize(64, b'.');
    Bytes::from(k)
}

fn value(i: u64) -> Bytes {
    let mut v = Vec::with_capacity(256);
    let mut x = i.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    for _ in 0..32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

fn dir_mb(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / 1e6
}

fn main() {
    let keys: u64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tail_entries: u64 = 100_000;
    let base: PathBuf = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("wal-bench-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("bench dir");

    // 1.
    let fsyncs = fdatasync_rate(&base);

    // 2.
    let mut one = appends_one_writer(&base.join("one"), 2_000);
    let (mut many, many_per_s, per_batch) = appends_many_writers(&base.join("many"), 100, 200);

    // 3. Load, snapshotting every 100,000 entries as etcd does by default.
    let baseline_puts = 2_000u64;
    let snapshot_every = 100_000u64;
    let dir = base.join("node");
    let (wal, _) = Wal::open(&dir, NodeId(1), CLUSTER, WalOptions::default()).expect("open");
    let member = etcd_core::cluster::Member {
        id: 1,
        name: "bench".into(),
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        client_urls: vec!["http://127.0.0.1:2379".into()],
        is_learner: false,
    };
    let voters = [(NodeId(1), etcd_core::cluster::encode_member(&member))];
    let mut m = Member {
        node: Node::bootstrap(
            node_config(snapshot_every),
            EtcdState::new(EtcdConfig::new(100, 10)),
            &voters,
        ),
        wal,
        next_req: 0,
        core_s: 0.0,
        wal_s: 0.0,
    };
    m.node.campaign();
    let mut replies = Vec::new();
    while m.node.raft().role() != Role::Leader {
        m.drive(&mut replies);
        m.node.step(Input::Tick);
    }
    while m.node.has_ready() {
        m.drive(&mut replies);
    }
    let t = Instant::now();
    m.put_many((0..keys).map(|i| (key(i), value(i))));
    let load_s = t.elapsed().as_secs_f64();

    let mut i = 0u64;
    let mut next_put = |m: &mut Member| {
        i += 1;
        let k = i.wrapping_mul(7919) % keys;
        m.put_one(key(k), value(k + i))
    };
    // Let the load's last snapshot finish, then fill the log up to a little
    // before the next one is due, and measure puts without a snapshot.
    while m.node.snapshot_in_progress() || m.wal.snapshot_in_progress() {
        next_put(&mut m);
    }
    let since = |m: &Member| {
        m.node
            .raft()
            .log()
            .applied()
            .0
            .saturating_sub(m.node.last_snapshot_index().0)
    };
    let fill = snapshot_every.saturating_sub(since(&m) + baseline_puts + 10);
    m.put_many((0..fill).map(|j| (key(j % keys), value(j))));
    let split = |m: &mut Member, puts: usize| {
        let per = |s: f64| s * 1e6 / puts.max(1) as f64;
        let r = (per(m.core_s), per(m.wal_s));
        (m.core_s, m.wal_s) = (0.0, 0.0);
        r
    };
    split(&mut m, 1);
    let mut without: Vec<f64> = (0..baseline_puts).map(|_| next_put(&mut m)).collect();
    let (core_without, wal_without) = split(&mut m, without.len());
    assert!(
        !m.node.snapshot_in_progress() && !m.wal.snapshot_in_progress(),
        "no snapshot during the baseline"
    );
    // Up to the snapshot.
    while !m.node.snapshot_in_progress() {
        next_put(&mut m);
    }
    let t = Instant::now();
    let mut during = Vec::new();
    let mut encode_s = None;
    let mut encode_at = None;
    while m.node.snapshot_in_progress() || m.wal.snapshot_in_progress() || during.len() < 100 {
        during.push(next_put(&mut m));
        if encode_s.is_none() && !m.node.snapshot_in_progress() {
            encode_s = Some(t.elapsed().as_secs_f64());
            encode_at = Some(during.len());
        }
    }
    let snapshot_s = t.elapsed().as_secs_f64();
    let (core_during, wal_during) = split(&mut m, during.len());
    m.wal.flush_snapshots().expect("snapshot written");
    if let Some(e) = m.wal.take_snapshot_error() {
        panic!("snapshot write failed: {e}");
    }
    // As many puts without a snapshot after it as before it: the disk's
    // latency drifts, and the comparison should not depend on which way.
    split(&mut m, 1);
    let after: Vec<f64> = (0..baseline_puts).map(|_| next_put(&mut m)).collect();
    let (core_after, wal_after) = split(&mut m, after.len());
    let (core_without, wal_without) = (
        (core_without + core_after) / 2.0,
        (wal_without + wal_after) / 2.0,
    );
    without.extend(after);
    if std::env::var("BENCH_DEBUG").is_ok() {
        let mut top: Vec<(usize, f64)> = during.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.partial_cmp(&a.1).expect("no NaN"));
        eprintln!(
            "slowest puts during the snapshot (position, ms): {:?}",
            &top[..top.len().min(8)]
        );
        eprintln!("encode done at put #{:?}", encode_at);
    }
    let p50_without = percentile(&mut without, 0.5);
    let p99_without = percentile(&mut without, 0.99);
    let p50_during = percentile(&mut during, 0.5);
    let p99_during = percentile(&mut during, 0.99);

    // 4. The log after the snapshot, then recovery.
    m.put_many((0..tail_entries).map(|j| {
        let k = j.wrapping_mul(104_729) % keys;
        (key(k), value(k ^ 0xabcd))
    }));
    let want_rev = m.node.state_machine().mvcc().current_revision();
    let want_index = m.node.raft().log().applied();
    // A clean shutdown: the last commit index (written without a sync of its
    // own, as Raft can relearn it) becomes durable too.
    m.wal.sync().expect("sync");
    drop(m);
    let data_mb = dir_mb(&dir);
    let t = Instant::now();
    let (wal, rec) = Wal::open(&dir, NodeId(1), CLUSTER, WalOptions::default()).expect("reopen");
    let open_s = t.elapsed().as_secs_f64();
    let snap_index = rec.snapshot.as_ref().map_or(0, |s| s.meta.index.0);
    let log_entries = rec.entries.len();
    let node = Node::restart(
        node_config(u64::MAX),
        EtcdState::new(EtcdConfig::new(100, 10)),
        rec,
    )
    .expect("restart");
    let restart_s = t.elapsed().as_secs_f64();
    let mut m = Member {
        node,
        wal,
        next_req: 0,
        core_s: 0.0,
        wal_s: 0.0,
    };
    while m.node.raft().log().applied() < want_index {
        assert!(m.node.has_ready(), "recovery stalled");
        m.drive(&mut replies);
    }
    let recovery_s = t.elapsed().as_secs_f64();
    assert_eq!(
        m.node.state_machine().mvcc().current_revision(),
        want_rev,
        "recovered to the same revision"
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&base);

    let p50_1 = percentile(&mut one, 0.5);
    let p99_1 = percentile(&mut one, 0.99);
    let p50_100 = percentile(&mut many, 0.5);
    let p99_100 = percentile(&mut many, 0.99);
    let ratio = p99_during / p99_without;

    println!("production storage on {}", base.display());
    println!("{:<58} {:>12}", "metric", "value");
    println!(
        "{:<58} {:>12.0}",
        "raw fdatasync/s (4 KiB pwrite + fdatasync)", fsyncs
    );
    println!(
        "{:<58} {:>12.3}",
        "WAL append+sync p50, 1 writer (ms)", p50_1
    );
    println!(
        "{:<58} {:>12.3}",
        "WAL append+sync p99, 1 writer (ms)", p99_1
    );
    println!(
        "{:<58} {:>12.3}",
        "WAL append+sync p50, 100 writers (ms)", p50_100
    );
    println!(
        "{:<58} {:>12.3}",
        "WAL append+sync p99, 100 writers (ms)", p99_100
    );
    println!("{:<58} {:>12.0}", "WAL appends/s, 100 writers", many_per_s);
    println!(
        "{:<58} {:>12.1}",
        "entries per group commit, 100 writers", per_batch
    );
    println!(
        "{:<58} {:>12.1}",
        format!("node: load {keys} keys (s)"),
        load_s
    );
    println!(
        "{:<58} {:>12.3}",
        "node: put p50 without a snapshot (ms)", p50_without
    );
    println!(
        "{:<58} {:>12.3}",
        "node: put p99 without a snapshot (ms)", p99_without
    );
    println!(
        "{:<58} {:>12.3}",
        "node: put p50 during the snapshot (ms)", p50_during
    );
    println!(
        "{:<58} {:>12.3}",
        "node: put p99 during the snapshot (ms)", p99_during
    );
    println!(
        "{:<58} {:>12}",
        "node: puts during the snapshot",
        during.len()
    );
    println!(
        "{:<58} {:>12}",
        "node: per put, core / WAL without a snapshot (us)",
        format!("{core_without:.0} / {wal_without:.0}")
    );
    println!(
        "{:<58} {:>12}",
        "node: per put, core / WAL during the snapshot (us)",
        format!("{core_during:.0} / {wal_during:.0}")
    );
    println!(
        "{:<58} {:>12.2}",
        "node: snapshot encoded by the core (s)",
        encode_s.unwrap_or(snapshot_s)
    );
    println!(
        "{:<58} {:>12.2}",
        "node: snapshot encoded and on disk (s)", snapshot_s
    );
    println!("{:<58} {:>12.0}", "data directory (MB)", data_mb);
    println!(
        "{:<58} {:>12}",
        "recovery: snapshot index, log entries after it",
        format!("{snap_index}, {log_entries}")
    );
    println!(
        "{:<58} {:>12.2}",
        "recovery: open the WAL and read the snapshot (s)", open_s
    );
    println!(
        "{:<58} {:>12.2}",
        "recovery: and restore the state machine (s)", restart_s
    );
    println!(
        "{:<58} {:>12.2}",
        "recovery: to serving, all applied (s)", recovery_s
    );
    println!(
        "{{\"bench\":\"wal\",\"keys\":{keys},\"fdatasync_per_s\":{fsyncs:.0},\"append_sync_p50_ms_1w\":{p50_1:.3},\"append_sync_p99_ms_1w\":{p99_1:.3},\"append_sync_p50_ms_100w\":{p50_100:.3},\"append_sync_p99_ms_100w\":{p99_100:.3},\"recovery_s\":{recovery_s:.2},\"put_p99_ratio_during_snapshot\":{ratio:.2}}}"
    );
}
