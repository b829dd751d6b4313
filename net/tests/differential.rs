//! Randomized differential test: our `etcd` and Debian's etcd 3.4.23 run side
//! by side and receive the same random sequence of KV and lease operations
//! through tonic clients. Every answer must be the same, errors included
//! (gRPC code and message), apart from what differs between any two clusters:
//! cluster and member IDs and the Raft term in headers, and lease IDs (each
//! server's granted IDs are renamed to the number of the grant). A lease's
//! remaining TTL counts down in real time, so it may differ by a second.
//!
//! `DIFF_SEED=N` replays a sequence (the seed is printed on failure),
//! `DIFF_OPS=N` sets its length (default 600). Skips (with a message) where
//! Debian's etcd is missing; under CI it must exist.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use etcd_net::pb::etcdserverpb as pb;
use etcd_net::pb::etcdserverpb::kv_client::KvClient;
use etcd_net::pb::etcdserverpb::lease_client::LeaseClient;
use etcd_net::pb::mvccpb;
use pb::compare::TargetUnion;
use pb::request_op::Request as ReqOp;
use pb::response_op::Response as RespOp;
use support::*;
use tonic::transport::Channel;

const OURS: &str = env!("CARGO_BIN_EXE_etcd");

/// The keys written: a few share prefixes. At most 11 keys ever exist, so
/// etcd's `sort.Sort` (an insertion sort below 12 elements, hence stable)
/// orders ties by key and the order of a sorted range is deterministic.
const KEYS: [&str; 8] = ["a", "a/1", "a/2", "ab", "b", "b/x", "c", "zz"];
/// Extra keys ranges, compares and deletes may start at.
const READ_KEYS: [&str; 4] = ["\0", "a/", "b/", "d"];
const VALUES: [&str; 7] = ["", "v", "w", "xyz", "0", "10", "9"];
/// A lease nobody granted (on either server).
const BOGUS_LEASE: i64 = 0x0bad_1ea5_e000;
/// The TTL of every lease: longer than the test, so nothing expires.
const TTL: i64 = 100;

// ---- a small seeded generator ------------------------------------------------

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 11) % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick(&mut self, xs: &[&'static str]) -> &'static str {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// A value in `lo..=hi`.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }
}

// ---- operations ----------------------------------------------------------------

/// One operation. Lease IDs in it are symbolic: 0 is none, `-(n + 1)` is the
/// lease of the n-th grant, anything else is sent as is.
#[derive(Clone, Debug)]
enum Op {
    Put(pb::PutRequest),
    Range(pb::RangeRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    Grant(pb::LeaseGrantRequest),
    Revoke(pb::LeaseRevokeRequest),
    TimeToLive(pb::LeaseTimeToLiveRequest),
    Leases,
}

/// What the generator knows of the servers' state.
struct Gen {
    rng: Rng,
    /// The newest revision etcd reported.
    rev: i64,
    /// Grants sent so far (each one a symbolic lease, granted or not).
    grants: i64,
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// etcd's `GetPrefixRangeEnd`.
fn prefix_end(key: &[u8]) -> Bytes {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    b("\0")
}

impl Gen {
    fn write_key(&mut self) -> Bytes {
        if self.rng.chance(2) {
            Bytes::new() // etcd: "key is not provided"
        } else {
            b(self.rng.pick(&KEYS))
        }
    }

    fn read_key(&mut self) -> Bytes {
        match self.rng.below(50) {
            0 => Bytes::new(),
            1..=8 => b(self.rng.pick(&READ_KEYS)),
            _ => b(self.rng.pick(&KEYS)),
        }
    }

    fn range_end(&mut self, key: &[u8]) -> Bytes {
        match self.rng.below(10) {
            0..=4 => Bytes::new(),
            5 | 6 => prefix_end(key),
            7 => b("\0"),
            // Any key: often before `key` (an empty range).
            _ => b(self.rng.pick(&KEYS)),
        }
    }

    fn value(&mut self) -> Bytes {
        b(self.rng.pick(&VALUES))
    }

    /// A lease to use: mostly one granted before, sometimes one that never
    /// was.
    fn lease(&mut self) -> i64 {
        if self.grants > 0 && !self.rng.chance(10) {
            -(self.rng.below(self.grants as u64) as i64) - 1
        } else {
            BOGUS_LEASE
        }
    }

    /// A revision around the current one: old (maybe compacted), current,
    /// or future.
    fn revision(&mut self) -> i64 {
        match self.rng.below(10) {
            0 => self.rev,
            1 => self.rev + self.rng.between(1, 3),
            _ => self.rng.between(1, self.rev.max(1)),
        }
    }

    fn put(&mut self) -> pb::PutRequest {
        let ignore_value = self.rng.chance(10);
        let ignore_lease = self.rng.chance(10);
        let value = if ignore_value && !self.rng.chance(20) {
            Bytes::new()
        } else {
            self.value()
        };
        let lease = if ignore_lease {
            if self.rng.chance(20) { self.lease() } else { 0 }
        } else if self.rng.chance(30) {
            self.lease()
        } else {
            0
        };
        pb::PutRequest {
            key: self.write_key(),
            value,
            lease,
            prev_kv: self.rng.chance(40),
            ignore_value,
            ignore_lease,
        }
    }

    fn range(&mut self) -> pb::RangeRequest {
        let key = self.read_key();
        let range_end = if self.rng.chance(60) {
            self.range_end(&key)
        } else {
            Bytes::new()
        };
        let opt = |g: &mut Gen, p| {
            if g.rng.chance(p) {
                g.rng.between(1, g.rev + 1)
            } else {
                0
            }
        };
        pb::RangeRequest {
            key,
            range_end,
            limit: if self.rng.chance(25) {
                self.rng.between(0, 3)
            } else {
                0
            },
            revision: if self.rng.chance(25) {
                self.revision()
            } else {
                0
            },
            sort_order: if self.rng.chance(30) {
                self.rng.below(3) as i32
            } else {
                0
            },
            sort_target: if self.rng.chance(30) {
                self.rng.below(5) as i32
            } else {
                0
            },
            serializable: self.rng.chance(30),
            keys_only: self.rng.chance(15),
            count_only: self.rng.chance(10),
            min_mod_revision: opt(self, 8),
            max_mod_revision: opt(self, 8),
            min_create_revision: opt(self, 8),
            max_create_revision: opt(self, 8),
        }
    }

    fn delete(&mut self) -> pb::DeleteRangeRequest {
        let key = if self.rng.chance(20) {
            self.read_key()
        } else {
            self.write_key()
        };
        let range_end = if self.rng.chance(40) {
            self.range_end(&key)
        } else {
            Bytes::new()
        };
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.chance(50),
        }
    }

    fn compare(&mut self) -> pb::Compare {
        let key = if self.rng.chance(3) {
            Bytes::new()
        } else {
            b(self.rng.pick(&KEYS))
        };
        let range_end = if self.rng.chance(20) {
            self.range_end(&key)
        } else {
            Bytes::new()
        };
        let target = self.rng.below(5) as i32;
        let mut result = self.rng.below(4) as i32;
        let union = match target {
            0 => TargetUnion::Version(self.rng.between(0, 3)),
            1 => TargetUnion::CreateRevision(self.rng.between(0, self.rev + 1)),
            2 => TargetUnion::ModRevision(self.rng.between(0, self.rev + 1)),
            3 => TargetUnion::Value(self.value()),
            _ if self.rng.chance(40) => TargetUnion::Lease(0),
            _ => {
                // The two servers' IDs for one lease differ, so only
                // (in)equality with a lease means the same on both.
                result = *[0, 3].get(self.rng.below(2) as usize).unwrap_or(&0);
                TargetUnion::Lease(self.lease())
            }
        };
        pb::Compare {
            result,
            target,
            key,
            range_end,
            target_union: Some(union),
        }
    }

    fn request_op(&mut self, depth: u32) -> pb::RequestOp {
        let r = match self.rng.below(10) {
            0..=2 => ReqOp::RequestRange(self.range()),
            3..=5 => ReqOp::RequestPut(self.put()),
            6 | 7 => ReqOp::RequestDeleteRange(self.delete()),
            8 if depth < 2 && self.rng.chance(50) => ReqOp::RequestTxn(self.txn(depth + 1)),
            _ => ReqOp::RequestRange(self.range()),
        };
        pb::RequestOp { request: Some(r) }
    }

    fn txn(&mut self, depth: u32) -> pb::TxnRequest {
        let n = self.rng.below(3);
        let compare = (0..n).map(|_| self.compare()).collect();
        let n = self.rng.below(4);
        let success = (0..n).map(|_| self.request_op(depth)).collect();
        let n = self.rng.below(3);
        let failure = (0..n).map(|_| self.request_op(depth)).collect();
        pb::TxnRequest {
            compare,
            success,
            failure,
        }
    }

    fn op(&mut self) -> Op {
        match self.rng.below(100) {
            0..=24 => Op::Put(self.put()),
            25..=49 => Op::Range(self.range()),
            50..=57 => Op::Delete(self.delete()),
            58..=79 => Op::Txn(self.txn(0)),
            80..=83 => {
                let revision = match self.rng.below(10) {
                    // Not 0: etcd starts its compaction mark at -1 and takes
                    // one compaction at 0; ours starts at 0 and refuses it
                    // as compacted (a documented divergence, ARCHITECTURE.md).
                    0 => 1,
                    1 | 2 => self.rev,
                    3 | 4 => self.rev + self.rng.between(1, 3),
                    _ => self.rng.between(1, self.rev.max(1)),
                };
                Op::Compact(pb::CompactionRequest {
                    revision,
                    physical: self.rng.chance(50),
                })
            }
            84..=88 => {
                self.grants += 1;
                Op::Grant(pb::LeaseGrantRequest {
                    ttl: if self.rng.chance(5) {
                        9_000_000_001 // etcd: "too large lease TTL"
                    } else {
                        TTL
                    },
                    // Sometimes an ID of the client's choice (maybe taken).
                    id: if self.rng.chance(10) {
                        1000 + self.rng.between(0, 2)
                    } else {
                        0
                    },
                })
            }
            89..=92 => Op::Revoke(pb::LeaseRevokeRequest { id: self.lease() }),
            93..=97 => Op::TimeToLive(pb::LeaseTimeToLiveRequest {
                id: self.lease(),
                keys: self.rng.chance(50),
            }),
            98 => Op::Leases,
            _ => Op::Txn(self.divergent_txn()),
        }
    }

    /// A txn of the documented divergence (see `documented_divergence`),
    /// so that every run checks ours refuses it.
    fn divergent_txn(&mut self) -> pb::TxnRequest {
        let i = self.rng.below(KEYS.len() as u64 - 1) as usize;
        let put = |g: &mut Gen, k: &str| pb::RequestOp {
            request: Some(ReqOp::RequestPut(pb::PutRequest {
                key: b(k),
                value: g.value(),
                ..Default::default()
            })),
        };
        let del = |k: &str, end: &str| pb::RequestOp {
            request: Some(ReqOp::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b(k),
                range_end: b(end),
                prev_kv: true,
            })),
        };
        let nested = |success: Vec<pb::RequestOp>| pb::RequestOp {
            request: Some(ReqOp::RequestTxn(pb::TxnRequest {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            })),
        };
        let mut ops = if self.rng.chance(50) {
            // A put inside a from-key delete.
            let later = KEYS[self.rng.between(i as i64 + 1, KEYS.len() as i64 - 1) as usize];
            vec![del(KEYS[i], "\0"), put(self, later)]
        } else {
            // A nested txn's put, and a later nested txn's delete of it.
            vec![
                nested(vec![put(self, KEYS[i])]),
                nested(vec![del(KEYS[i], "")]),
            ]
        };
        if self.rng.chance(30) {
            ops.insert(0, self.request_op(1));
        }
        pb::TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    }
}

// ---- the documented txn divergence ---------------------------------------------

/// An interval of keys `[begin, end)`; `None` is unbounded.
type Iv = (Bytes, Option<Bytes>);

fn hits(ivs: &[Iv], k: &[u8]) -> bool {
    ivs.iter()
        .any(|(lo, hi)| lo.as_ref() <= k && hi.as_ref().is_none_or(|h| k < h.as_ref()))
}

/// etcd 3.4's `checkIntervals` (etcdserver/api/v3rpc/key.go), transcribed:
/// `Ok` with the branch's puts and deletes, `Err` for "duplicate key". etcd's
/// interval for a delete with `range_end` "\0" is `[key, "\0")`, which holds
/// no key; a nested txn's puts are checked against the deletes seen before
/// it only.
fn etcd_intervals(ops: &[pb::RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<Iv>), ()> {
    let mut dels: Vec<Iv> = Vec::new();
    for op in ops {
        if let Some(ReqOp::RequestDeleteRange(d)) = &op.request {
            match d.range_end.as_ref() {
                [] => dels.push(point(&d.key)),
                [0] => {} // [key, "\0"): empty
                end => dels.push((d.key.clone(), Some(Bytes::copy_from_slice(end)))),
            }
        }
    }
    let mut puts = BTreeSet::new();
    for op in ops {
        if let Some(ReqOp::RequestTxn(t)) = &op.request {
            let (then_puts, then_dels) = etcd_intervals(&t.success)?;
            let (else_puts, else_dels) = etcd_intervals(&t.failure)?;
            for k in &then_puts {
                if puts.contains(k) || hits(&dels, k) {
                    return Err(());
                }
                puts.insert(k.clone());
            }
            for k in &else_puts {
                if (puts.contains(k) && !then_puts.contains(k)) || hits(&dels, k) {
                    return Err(());
                }
                puts.insert(k.clone());
            }
            dels.extend(then_dels);
            dels.extend(else_dels);
        }
    }
    for op in ops {
        if let Some(ReqOp::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || hits(&dels, &p.key) {
                return Err(());
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

fn point(k: &Bytes) -> Iv {
    let mut end = k.to_vec();
    end.push(0);
    (k.clone(), Some(Bytes::from(end)))
}

/// The rule our server documents (core/src/request.rs `check_intervals`):
/// among the ops of one branch that can run together, nested txns included,
/// no key is put twice and no put falls in a deleted range, a from-key
/// delete (`range_end` "\0") covering every key from its start.
fn strict_intervals_ok(ops: &[pb::RequestOp]) -> bool {
    // (key or range, the branches it sits in: (nested txn number, then?))
    type Path = Vec<(usize, bool)>;
    fn walk(
        ops: &[pb::RequestOp],
        path: &Path,
        n: &mut usize,
        puts: &mut Vec<(Bytes, Path)>,
        dels: &mut Vec<(Iv, Path)>,
    ) {
        for op in ops {
            match &op.request {
                Some(ReqOp::RequestPut(p)) => puts.push((p.key.clone(), path.clone())),
                Some(ReqOp::RequestDeleteRange(d)) => {
                    let iv = match d.range_end.as_ref() {
                        [] => point(&d.key),
                        [0] => (d.key.clone(), None),
                        end => (d.key.clone(), Some(Bytes::copy_from_slice(end))),
                    };
                    dels.push((iv, path.clone()));
                }
                Some(ReqOp::RequestTxn(t)) => {
                    let id = *n;
                    *n += 1;
                    for (branch, ops) in [(true, &t.success), (false, &t.failure)] {
                        let mut p = path.clone();
                        p.push((id, branch));
                        walk(ops, &p, n, puts, dels);
                    }
                }
                _ => {}
            }
        }
    }
    let exclusive = |a: &Path, b: &Path| {
        a.iter()
            .any(|(ta, ba)| b.iter().any(|(tb, bb)| ta == tb && ba != bb))
    };
    let (mut puts, mut dels) = (Vec::new(), Vec::new());
    walk(ops, &Vec::new(), &mut 0, &mut puts, &mut dels);
    for (i, (k, pa)) in puts.iter().enumerate() {
        if puts[i + 1..]
            .iter()
            .any(|(k2, pb)| k2 == k && !exclusive(pa, pb))
        {
            return false;
        }
        if dels
            .iter()
            .any(|(iv, pb)| hits(std::slice::from_ref(iv), k) && !exclusive(pa, pb))
        {
            return false;
        }
    }
    true
}

/// Whether etcd's checks before `checkIntervals` (empty keys, a value or
/// lease given with `ignore_*`) pass.
fn prechecks_pass(t: &pb::TxnRequest) -> bool {
    t.compare.iter().all(|c| !c.key.is_empty())
        && t.success
            .iter()
            .chain(&t.failure)
            .all(|op| match &op.request {
                Some(ReqOp::RequestRange(r)) => !r.key.is_empty(),
                Some(ReqOp::RequestPut(p)) => {
                    // etcd: "value is provided", "lease is provided".
                    !p.key.is_empty()
                        && (!p.ignore_value || p.value.is_empty())
                        && (!p.ignore_lease || p.lease == 0)
                }
                Some(ReqOp::RequestDeleteRange(d)) => !d.key.is_empty(),
                Some(ReqOp::RequestTxn(t)) => prechecks_pass(t),
                None => false,
            })
}

/// Documented divergence (ARCHITECTURE.md "Txn", core/src/request.rs
/// `check_intervals`): etcd accepts two txn shapes that change one key twice
/// in one revision — a put inside a from-key delete, and a nested txn's put
/// with a delete of that key in a later nested txn — and we refuse them.
/// Such txns go to our server only, which must refuse them.
fn documented_divergence(t: &pb::TxnRequest) -> bool {
    prechecks_pass(t)
        && etcd_intervals(&t.success).is_ok()
        && etcd_intervals(&t.failure).is_ok()
        && !(strict_intervals_ok(&t.success) && strict_intervals_ok(&t.failure))
}

// ---- running ops on one server ---------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Put(pb::PutResponse),
    Range(pb::RangeResponse),
    Delete(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compact(pb::CompactionResponse),
    Grant(pb::LeaseGrantResponse),
    Revoke(pb::LeaseRevokeResponse),
    TimeToLive(pb::LeaseTimeToLiveResponse),
    Leases(pb::LeaseLeasesResponse),
    Error { code: tonic::Code, message: String },
}

struct Side {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    /// The lease each grant gave on this server.
    granted: Vec<Option<i64>>,
    /// Real lease ID → symbolic.
    symbolic: HashMap<i64, i64>,
}

async fn connect(url: &str) -> Channel {
    connect_ready(url, String::new).await
}

impl Side {
    async fn new(url: &str) -> Side {
        let ch = connect(url).await;
        Side {
            kv: KvClient::new(ch.clone()),
            lease: LeaseClient::new(ch),
            granted: Vec::new(),
            symbolic: HashMap::new(),
        }
    }

    /// A symbolic lease as this server knows it.
    fn real(&self, id: i64) -> i64 {
        if id >= 0 {
            id
        } else {
            self.granted
                .get((-id - 1) as usize)
                .copied()
                .flatten()
                .unwrap_or(BOGUS_LEASE)
        }
    }

    fn symbol(&self, id: i64) -> i64 {
        *self.symbolic.get(&id).unwrap_or(&id)
    }

    fn bind_txn(&self, t: &mut pb::TxnRequest) {
        for c in &mut t.compare {
            if let Some(TargetUnion::Lease(l)) = &mut c.target_union {
                *l = self.real(*l);
            }
        }
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            match &mut op.request {
                Some(ReqOp::RequestPut(p)) => p.lease = self.real(p.lease),
                Some(ReqOp::RequestTxn(t)) => self.bind_txn(t),
                _ => {}
            }
        }
    }

    async fn run(&mut self, op: &Op) -> Answer {
        let err = |s: tonic::Status| Answer::Error {
            code: s.code(),
            message: s.message().to_string(),
        };
        let a = match op.clone() {
            Op::Put(mut p) => {
                p.lease = self.real(p.lease);
                self.kv.put(p).await.map(|r| Answer::Put(r.into_inner()))
            }
            Op::Range(r) => self
                .kv
                .range(r)
                .await
                .map(|r| Answer::Range(r.into_inner())),
            Op::Delete(d) => self
                .kv
                .delete_range(d)
                .await
                .map(|r| Answer::Delete(r.into_inner())),
            Op::Txn(mut t) => {
                self.bind_txn(&mut t);
                self.kv.txn(t).await.map(|r| Answer::Txn(r.into_inner()))
            }
            Op::Compact(c) => self
                .kv
                .compact(c)
                .await
                .map(|r| Answer::Compact(r.into_inner())),
            Op::Grant(g) => {
                let r = self.lease.lease_grant(g).await;
                let id = r.as_ref().ok().map(|r| r.get_ref().id);
                self.granted.push(id);
                if let Some(id) = id {
                    self.symbolic.insert(id, -(self.granted.len() as i64));
                }
                r.map(|r| Answer::Grant(r.into_inner()))
            }
            Op::Revoke(mut r) => {
                r.id = self.real(r.id);
                self.lease
                    .lease_revoke(r)
                    .await
                    .map(|r| Answer::Revoke(r.into_inner()))
            }
            Op::TimeToLive(mut t) => {
                t.id = self.real(t.id);
                self.lease
                    .lease_time_to_live(t)
                    .await
                    .map(|r| Answer::TimeToLive(r.into_inner()))
            }
            Op::Leases => self
                .lease
                .lease_leases(pb::LeaseLeasesRequest {})
                .await
                .map(|r| Answer::Leases(r.into_inner())),
        };
        self.normalize(a.unwrap_or_else(err))
    }

    /// Zeroes what differs between any two clusters and renames leases.
    fn normalize(&self, mut a: Answer) -> Answer {
        fn top(h: &mut Option<pb::ResponseHeader>) {
            if let Some(h) = h {
                h.cluster_id = 0;
                h.member_id = 0;
                h.raft_term = 0;
            }
        }
        match &mut a {
            Answer::Put(r) => top(&mut r.header),
            Answer::Range(r) => top(&mut r.header),
            Answer::Delete(r) => top(&mut r.header),
            Answer::Txn(r) => top(&mut r.header),
            Answer::Compact(r) => top(&mut r.header),
            Answer::Grant(r) => {
                top(&mut r.header);
                r.id = self.symbol(r.id);
            }
            Answer::Revoke(r) => top(&mut r.header),
            Answer::TimeToLive(r) => {
                top(&mut r.header);
                r.id = self.symbol(r.id);
                // etcd lists a lease's keys from a Go map: in no order.
                r.keys.sort();
            }
            Answer::Leases(r) => {
                top(&mut r.header);
                for l in &mut r.leases {
                    l.id = self.symbol(l.id);
                }
                // etcd lists leases by expiry time, which depends on when
                // each was granted to the microsecond: compare as sets.
                r.leases.sort_by_key(|l| l.id);
            }
            Answer::Error { .. } => {}
        }
        self.rename_kvs(&mut a);
        a
    }

    fn rename_kvs(&self, a: &mut Answer) {
        let kv = |kv: &mut mvccpb::KeyValue| kv.lease = self.symbol(kv.lease);
        match a {
            Answer::Put(r) => r.prev_kv.iter_mut().for_each(kv),
            Answer::Range(r) => r.kvs.iter_mut().for_each(kv),
            Answer::Delete(r) => r.prev_kvs.iter_mut().for_each(kv),
            Answer::Txn(r) => {
                for op in &mut r.responses {
                    let mut inner = match op.response.take() {
                        Some(RespOp::ResponseRange(x)) => Answer::Range(x),
                        Some(RespOp::ResponsePut(x)) => Answer::Put(x),
                        Some(RespOp::ResponseDeleteRange(x)) => Answer::Delete(x),
                        Some(RespOp::ResponseTxn(x)) => Answer::Txn(x),
                        None => continue,
                    };
                    self.rename_kvs(&mut inner);
                    op.response = Some(match inner {
                        Answer::Range(x) => RespOp::ResponseRange(x),
                        Answer::Put(x) => RespOp::ResponsePut(x),
                        Answer::Delete(x) => RespOp::ResponseDeleteRange(x),
                        Answer::Txn(x) => RespOp::ResponseTxn(x),
                        _ => unreachable!("only KV answers in a txn"),
                    });
                }
            }
            _ => {}
        }
    }
}

/// Allows a second of difference in a remaining TTL (real-time countdown).
fn same(ours: &Answer, theirs: &Answer) -> bool {
    match (ours, theirs) {
        (Answer::TimeToLive(a), Answer::TimeToLive(b)) if (a.ttl - b.ttl).abs() <= 1 => {
            let mut a = a.clone();
            a.ttl = b.ttl;
            a == *b
        }
        _ => ours == theirs,
    }
}

// ---- describing ops compactly ----------------------------------------------------

fn s(x: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(x))
}

fn lease_name(id: i64) -> String {
    if id == BOGUS_LEASE {
        "never-granted".into()
    } else if id < 0 {
        format!("L{}", -id - 1)
    } else {
        id.to_string()
    }
}

fn describe_range(r: &pb::RangeRequest) -> String {
    let mut d = format!("range {}", s(&r.key));
    if !r.range_end.is_empty() {
        write!(d, "..{}", s(&r.range_end)).ok();
    }
    for (name, v) in [
        ("limit", r.limit),
        ("rev", r.revision),
        ("order", r.sort_order as i64),
        ("target", r.sort_target as i64),
        ("min_mod", r.min_mod_revision),
        ("max_mod", r.max_mod_revision),
        ("min_create", r.min_create_revision),
        ("max_create", r.max_create_revision),
    ] {
        if v != 0 {
            write!(d, " {name}={v}").ok();
        }
    }
    for (name, on) in [
        ("serializable", r.serializable),
        ("keys_only", r.keys_only),
        ("count_only", r.count_only),
    ] {
        if on {
            write!(d, " {name}").ok();
        }
    }
    d
}

fn describe_put(p: &pb::PutRequest) -> String {
    let mut d = format!("put {}={}", s(&p.key), s(&p.value));
    if p.lease != 0 {
        write!(d, " lease={}", lease_name(p.lease)).ok();
    }
    for (name, on) in [
        ("prev_kv", p.prev_kv),
        ("ignore_value", p.ignore_value),
        ("ignore_lease", p.ignore_lease),
    ] {
        if on {
            write!(d, " {name}").ok();
        }
    }
    d
}

fn describe_delete(x: &pb::DeleteRangeRequest) -> String {
    let mut d = format!("delete {}", s(&x.key));
    if !x.range_end.is_empty() {
        write!(d, "..{}", s(&x.range_end)).ok();
    }
    if x.prev_kv {
        d.push_str(" prev_kv");
    }
    d
}

fn describe_txn(t: &pb::TxnRequest) -> String {
    let cmp: Vec<String> = t
        .compare
        .iter()
        .map(|c| {
            let what = match &c.target_union {
                Some(TargetUnion::Version(v)) => format!("version {v}"),
                Some(TargetUnion::CreateRevision(v)) => format!("create {v}"),
                Some(TargetUnion::ModRevision(v)) => format!("mod {v}"),
                Some(TargetUnion::Value(v)) => format!("value {}", s(v)),
                Some(TargetUnion::Lease(v)) => format!("lease {}", lease_name(*v)),
                None => "?".into(),
            };
            let op = ["=", ">", "<", "!="][c.result as usize];
            let mut k = s(&c.key);
            if !c.range_end.is_empty() {
                write!(k, "..{}", s(&c.range_end)).ok();
            }
            let (name, v) = what.split_once(' ').unwrap_or((&what, ""));
            format!("{name}({k}) {op} {v}")
        })
        .collect();
    let ops = |ops: &[pb::RequestOp]| {
        ops.iter()
            .map(|o| match &o.request {
                Some(ReqOp::RequestRange(r)) => describe_range(r),
                Some(ReqOp::RequestPut(p)) => describe_put(p),
                Some(ReqOp::RequestDeleteRange(x)) => describe_delete(x),
                Some(ReqOp::RequestTxn(t)) => describe_txn(t),
                None => "nothing".into(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "txn {{ if [{}] then [{}] else [{}] }}",
        cmp.join(", "),
        ops(&t.success),
        ops(&t.failure)
    )
}

fn describe(op: &Op) -> String {
    match op {
        Op::Put(p) => describe_put(p),
        Op::Range(r) => describe_range(r),
        Op::Delete(x) => describe_delete(x),
        Op::Txn(t) => describe_txn(t),
        Op::Compact(c) => format!(
            "compact {}{}",
            c.revision,
            if c.physical { " physical" } else { "" }
        ),
        Op::Grant(g) => format!("grant ttl={} id={}", g.ttl, g.id),
        Op::Revoke(r) => format!("revoke {}", lease_name(r.id)),
        Op::TimeToLive(t) => format!(
            "timetolive {}{}",
            lease_name(t.id),
            if t.keys { " keys" } else { "" }
        ),
        Op::Leases => "leases".into(),
    }
}

// ---- the test ----------------------------------------------------------------------

fn seed() -> u64 {
    match std::env::var("DIFF_SEED") {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("DIFF_SEED={v} is not a number"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn ops_count() -> usize {
    std::env::var("DIFF_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600)
}

/// How many differences a failure shows (`DIFF_SHOW`, default 8).
fn show() -> usize {
    std::env::var("DIFF_SHOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

struct Difference {
    index: usize,
    ours: String,
    theirs: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_get_the_same_answers_as_from_etcd_3_4() {
    let Some(reference) = reference_etcd() else {
        return;
    };
    let seed = seed();
    let n = ops_count();
    eprintln!("DIFF_SEED={seed} DIFF_OPS={n}");
    let ours_proc = single(Path::new(OURS), "diff-ours");
    let etcd_proc = single(&reference, "diff-etcd");
    let (mut ours, mut etcd) =
        tokio::join!(Side::new(&ours_proc.client), Side::new(&etcd_proc.client));

    let started = Instant::now();
    let mut g = Gen {
        rng: Rng::new(seed),
        rev: 1,
        grants: 0,
    };
    let mut log: Vec<String> = Vec::new();
    let mut diffs: Vec<Difference> = Vec::new();
    let mut kinds: HashMap<&'static str, (usize, usize)> = HashMap::new();
    let mut divergent = 0;
    for i in 0..n {
        let op = g.op();
        log.push(describe(&op));
        let kind = match &op {
            Op::Put(_) => "put",
            Op::Range(_) => "range",
            Op::Delete(_) => "delete",
            Op::Txn(_) => "txn",
            Op::Compact(_) => "compact",
            Op::Grant(_) => "grant",
            Op::Revoke(_) => "revoke",
            Op::TimeToLive(_) => "timetolive",
            Op::Leases => "leases",
        };
        if let Op::Txn(t) = &op
            && documented_divergence(t)
        {
            // Ours only; it must refuse (see `documented_divergence`).
            divergent += 1;
            let a = ours.run(&op).await;
            let want = Answer::Error {
                code: tonic::Code::InvalidArgument,
                message: "etcdserver: duplicate key given in txn request".into(),
            };
            if a != want {
                diffs.push(Difference {
                    index: i,
                    ours: format!("{a:?}"),
                    theirs: format!(
                        "(not sent: etcd accepts this txn) expected from ours: {want:?}"
                    ),
                });
            }
            continue;
        }
        let (a, e) = tokio::join!(ours.run(&op), etcd.run(&op));
        let entry = kinds.entry(kind).or_default();
        entry.0 += 1;
        if matches!(e, Answer::Error { .. }) {
            entry.1 += 1;
        }
        let rev = match &e {
            Answer::Put(r) => r.header.map(|h| h.revision),
            Answer::Range(r) => r.header.map(|h| h.revision),
            Answer::Delete(r) => r.header.map(|h| h.revision),
            Answer::Txn(r) => r.header.map(|h| h.revision),
            Answer::Revoke(r) => r.header.map(|h| h.revision),
            _ => None,
        };
        g.rev = g.rev.max(rev.unwrap_or(0));
        if !same(&a, &e) {
            diffs.push(Difference {
                index: i,
                ours: format!("{a:?}"),
                theirs: format!("{e:?}"),
            });
        }
    }
    let mut summary: Vec<String> = kinds
        .iter()
        .map(|(k, (n, errs))| format!("{k} {n} ({errs} errors)"))
        .collect();
    summary.sort();
    eprintln!(
        "{n} operations in {:?}, final revision {}: {}; {divergent} txns of the documented divergence sent to ours only",
        started.elapsed(),
        g.rev,
        summary.join(", ")
    );
    if diffs.is_empty() {
        return;
    }
    let mut report = format!(
        "{} of {n} answers differ from etcd 3.4.23 (replay: DIFF_SEED={seed} DIFF_OPS={n})\n",
        diffs.len()
    );
    let first = diffs[0].index;
    report.push_str(
        "(leases: Ln is the lease of the n-th grant; in answers it shows as -(n+1))\n\
         operations up to the first difference:\n",
    );
    for (i, d) in log.iter().enumerate().take(first + 1) {
        writeln!(report, "  #{i} {d}").ok();
    }
    for d in diffs.iter().take(show()) {
        writeln!(
            report,
            "\n#{} {}\n  ours: {}\n  etcd: {}",
            d.index, log[d.index], d.ours, d.theirs
        )
        .ok();
    }
    panic!("{report}");
}

/// The two duplicate-key models tell the documented divergence from shapes
/// both servers refuse or both accept.
#[test]
fn the_txn_models_tell_the_documented_divergence() {
    let put = |k: &str| pb::RequestOp {
        request: Some(ReqOp::RequestPut(pb::PutRequest {
            key: b(k),
            ..Default::default()
        })),
    };
    let del = |k: &str, end: &str| pb::RequestOp {
        request: Some(ReqOp::RequestDeleteRange(pb::DeleteRangeRequest {
            key: b(k),
            range_end: b(end),
            prev_kv: false,
        })),
    };
    let nested = |success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>| pb::RequestOp {
        request: Some(ReqOp::RequestTxn(pb::TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        })),
    };
    let txn = |success: Vec<pb::RequestOp>| pb::TxnRequest {
        compare: Vec::new(),
        success,
        failure: Vec::new(),
    };
    // etcd accepts, we refuse.
    assert!(documented_divergence(&txn(vec![del("a", "\0"), put("b")])));
    assert!(documented_divergence(&txn(vec![
        nested(vec![put("a")], vec![]),
        nested(vec![del("a", "")], vec![]),
    ])));
    // Both refuse.
    assert!(!documented_divergence(&txn(vec![put("a"), del("a", "")])));
    assert!(!documented_divergence(&txn(vec![put("b"), del("a", "c")])));
    assert!(!documented_divergence(&txn(vec![
        nested(vec![del("a", "")], vec![]),
        nested(vec![put("a")], vec![]),
    ])));
    // Both accept.
    assert!(!documented_divergence(&txn(vec![put("a"), put("b")])));
    assert!(!documented_divergence(&txn(vec![del("c", "a"), put("b")])));
    assert!(!documented_divergence(&txn(vec![nested(
        vec![put("a")],
        vec![del("a", "")]
    )])));
    // etcd refuses before looking at intervals (empty key): not sent apart.
    assert!(!documented_divergence(&txn(vec![del("a", "\0"), put("")])));
}
