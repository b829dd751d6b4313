//! The etcd state machine alone, one thread: load 1,000,000 keys in all (64-byte
//! keys, 256-byte values of random bytes, a fresh buffer per put as a decoded
//! request would have), then measure resident memory, put and point-read rates,
//! a sorted prefix range with limit 100 (over 10,000 and over 200,000 keys, to
//! show its cost does not grow with the range), and put latency while a
//! watcher catches up from 100,000 revisions back.
//!
//! `cargo bench --bench mvcc` prints a table and, last, one JSON line.
//! `BENCH_KEYS=N` changes the total number of keys (at least 420,000: 210,000
//! of them are the two range prefixes, the rest the bulk).

// A benchmark is a driver: it measures wall time, which the core never reads.
#![allow(clippy::disallowed_types)]

use std::time::Instant;

use bytes::Bytes;
use etcd_core::etcd::{EtcdConfig, EtcdState, Notification};
use etcd_core::mvcc::{PutRequest, RangeRequest, SortOrder, SortTarget};
use etcd_core::node::{PREFETCH_AHEAD, StateMachine};
use etcd_core::request::{Request, Response};
use etcd_core::types::LogIndex;
use etcd_core::watch::WatchCreate;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// 64-byte keys whose order differs from insertion order.
fn key(prefix: &str, i: u64) -> Bytes {
    let scrambled = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8;
    let s = format!("{prefix}{scrambled:016x}{i:010}");
    let mut k = s.into_bytes();
    k.resize(64, b'.');
    Bytes::from(k)
}

/// splitmix64: a fixed, cheap generator, so runs load the same bytes.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 256 random (incompressible, never shared) bytes.
fn value(state: &mut u64) -> Bytes {
    let mut v = Vec::with_capacity(256);
    for _ in 0..32 {
        v.extend_from_slice(&next_u64(state).to_le_bytes());
    }
    Bytes::from(v)
}

/// Requests built ahead of each timed stretch.
const BATCH: usize = 4096;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let n: u64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    const PREFIX_KEYS: u64 = 210_000;
    assert!(
        n >= 2 * PREFIX_KEYS,
        "BENCH_KEYS must be at least {}",
        2 * PREFIX_KEYS
    );
    let bulk = n - PREFIX_KEYS;
    let mut rng = 0x5eed_u64;
    let rss0 = rss_mb();
    let mut s = EtcdState::new(EtcdConfig::new(100, 10));
    let mut index = 0u64;

    // Load: the bulk, plus two prefixes for the range test, `n` keys in all.
    // Requests are built in untimed batches (in a server that is the gRPC
    // decoder's work); only `apply` is timed.
    let all: Vec<(&str, u64)> = (0..bulk)
        .map(|i| ("k/", i))
        .chain((0..10_000).map(|i| ("r10k/", i)))
        .chain((0..200_000).map(|i| ("r200k/", i)))
        .collect();
    let mut load_s = 0.0;
    for chunk in all.chunks(BATCH) {
        let reqs: Vec<Request> = chunk
            .iter()
            .map(|(p, i)| {
                Request::Put(PutRequest {
                    key: key(p, *i),
                    value: value(&mut rng),
                    ..PutRequest::default()
                })
            })
            .collect();
        let t = Instant::now();
        // As a member applies a log entry's requests: a few at a time, each
        // few announced first (`StateMachine::prefetch`).
        for w in reqs.chunks(PREFETCH_AHEAD) {
            s.prefetch(w);
            for req in w {
                index += 1;
                let r = s.apply(LogIndex(index), req);
                debug_assert!(matches!(r, Response::Put(_)));
            }
        }
        load_s += t.elapsed().as_secs_f64();
    }
    drop(all);
    let rss = rss_mb();
    let puts_per_s = n as f64 / load_s;

    // Point reads (single-key ranges) of random existing keys, requests
    // built in untimed batches and served as a member serves a batch of
    // reads: a few at a time, each few announced first.
    let reads = n.min(1_000_000);
    let mut read_s = 0.0;
    let mut found = 0u64;
    let order: Vec<u64> = (0..reads).collect();
    for chunk in order.chunks(BATCH) {
        let reqs: Vec<Request> = chunk
            .iter()
            .map(|i| {
                Request::Range(RangeRequest {
                    key: key("k/", i.wrapping_mul(7919) % bulk),
                    ..RangeRequest::default()
                })
            })
            .collect();
        let t = Instant::now();
        for w in reqs.chunks(PREFETCH_AHEAD) {
            s.prefetch(w);
            for req in w {
                if let Response::Range(r) = s.read(req) {
                    found += r.kvs.len() as u64;
                }
            }
        }
        read_s += t.elapsed().as_secs_f64();
    }
    let gets_per_s = reads as f64 / read_s;
    assert_eq!(found, reads);

    // A sorted prefix range with limit 100.
    let range_us = |s: &EtcdState, prefix: &str| {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("non-empty prefix") += 1;
        let req = Request::Range(RangeRequest {
            key: Bytes::from(prefix.to_string()),
            range_end: Bytes::from(end),
            limit: 100,
            sort_order: SortOrder::Ascend,
            sort_target: SortTarget::Key,
            ..RangeRequest::default()
        });
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let r = s.read(&req);
            times.push(t.elapsed().as_secs_f64() * 1e6);
            let Response::Range(rr) = r else {
                panic!("range failed")
            };
            assert_eq!(rr.kvs.len(), 100);
        }
        percentile(&mut times, 0.5)
    };
    // A snapshot: all at once, then in 16 KiB steps as a member takes it.
    let t = Instant::now();
    let whole = s.snapshot();
    let snapshot_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    assert!(s.begin_snapshot().is_none());
    let mut steps = 0u64;
    let stepped = loop {
        steps += 1;
        if let Some(b) = s.snapshot_step(16 * 1024) {
            break b;
        }
    };
    let stepped_s = t.elapsed().as_secs_f64();
    assert_eq!(stepped.len(), whole.len());
    let snapshot_mb = whole.len() as f64 / 1e6;
    drop(stepped);
    let t = Instant::now();
    let mut copy = EtcdState::new(EtcdConfig::new(100, 10));
    copy.restore(&whole).expect("the snapshot restores");
    let restore_s = t.elapsed().as_secs_f64();
    assert_eq!(copy.mvcc().current_revision(), s.mvcc().current_revision());
    drop((whole, copy));

    let range10k_us = range_us(&s, "r10k/");
    let range200k_us = range_us(&s, "r200k/");

    // Put latency without and then with a watcher catching up from 100,000
    // revisions back (on the bulk keys), pumped once per put as a server would.
    let lat = |s: &mut EtcdState,
               index: &mut u64,
               rng: &mut u64,
               count: u64,
               pump: bool|
     -> (Vec<f64>, u64) {
        let mut v = Vec::with_capacity(count as usize);
        let mut delivered = 0u64;
        for i in 0..count {
            *index += 1;
            let t = Instant::now();
            s.apply(
                LogIndex(*index),
                &Request::Put(PutRequest {
                    key: key("k/", i % bulk),
                    value: value(rng),
                    ..PutRequest::default()
                }),
            );
            if pump {
                for note in s.take_notifications() {
                    if let Notification::Watch(w) = note {
                        delivered += w.events.len() as u64;
                        s.local(&Request::WatchAck { stream: 1, n: 1 });
                    }
                }
            }
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        (v, delivered)
    };
    let mut idx = index;
    // The baseline has a synced watcher too (on keys nobody writes), so both
    // runs build their events and the difference is the catch-up alone.
    s.local(&Request::WatchCreate {
        stream: 2,
        create: WatchCreate {
            key: Bytes::from_static(b"none/"),
            range_end: Bytes::from_static(b"none0"),
            ..WatchCreate::default()
        },
    });
    let (mut base, _) = lat(&mut s, &mut idx, &mut rng, 50_000, true);
    let start = s.mvcc().current_revision() - 100_000;
    s.local(&Request::WatchCreate {
        stream: 1,
        create: WatchCreate {
            key: Bytes::from_static(b"k/"),
            range_end: Bytes::from_static(b"k0"),
            start_revision: start,
            ..WatchCreate::default()
        },
    });
    let t = Instant::now();
    let (mut during, delivered) = lat(&mut s, &mut idx, &mut rng, 50_000, true);
    let catchup_s = t.elapsed().as_secs_f64();
    let p99_base = percentile(&mut base, 0.99);
    let p99_during = percentile(&mut during, 0.99);

    println!("etcd state machine, one thread, {n} keys (64-byte keys, 256-byte values)");
    println!("{:<52} {:>14}", "metric", "value");
    println!("{:<52} {:>14.0}", "resident memory before load (MB)", rss0);
    println!("{:<52} {:>14.0}", "resident memory after load (MB)", rss);
    println!("{:<52} {:>14.0}", "puts/s (load)", puts_per_s);
    println!("{:<52} {:>14.0}", "point reads/s", gets_per_s);
    println!("{:<52} {:>14.0}", "snapshot size (MB)", snapshot_mb);
    println!(
        "{:<52} {:>14.0}",
        "snapshot encode, at once (MB/s)",
        snapshot_mb / snapshot_s
    );
    println!(
        "{:<52} {:>14.0}",
        "snapshot encode, 16 KiB steps (MB/s)",
        snapshot_mb / stepped_s
    );
    println!("{:<52} {:>14.2}", "snapshot restore (s)", restore_s);
    println!(
        "{:<52} {:>14.1}",
        "snapshot encode, one 16 KiB step (us)",
        stepped_s * 1e6 / steps as f64
    );
    println!(
        "{:<52} {:>14.1}",
        "range limit 100 sorted by key, 10k-key prefix (us)", range10k_us
    );
    println!(
        "{:<52} {:>14.1}",
        "range limit 100 sorted by key, 200k-key prefix (us)", range200k_us
    );
    println!(
        "{:<52} {:>14.2}",
        "put p99, a synced watcher, no catch-up (us)", p99_base
    );
    println!(
        "{:<52} {:>14.2}",
        "put p99 during catch-up from 100k revisions (us)", p99_during
    );
    println!(
        "{:<52} {:>14}",
        "events delivered during those 50k puts", delivered
    );
    println!("{:<52} {:>14.2}", "seconds for those 50k puts", catchup_s);
    println!(
        "{{\"bench\":\"mvcc\",\"keys\":{n},\"rss_mb\":{rss:.0},\"puts_per_s\":{puts_per_s:.0},\"gets_per_s\":{gets_per_s:.0},\"range_limit100_us\":{range10k_us:.1},\"range_limit100_us_200k\":{range200k_us:.1},\"watch_catchup_put_p99_ratio\":{:.2}}}",
        p99_during / p99_base
    );
}
