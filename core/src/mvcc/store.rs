//! The revisioned key-value store: every key keeps its versions since the last
//! compaction, so reads at any uncompacted revision, watches from the past and
//! compaction all work on memory alone. Compaction frees old versions at once
//! (nothing to defragment later).
//!
//! Writes happen through a [`Write`]: all changes of one request (a put, a
//! delete, or a whole txn) share one new revision, in the order made.
//!
//! # Layout
//! Each key gets a 4-byte *handle*, a slot in `Records`: one allocation with
//! the key and its latest version (see [`super::record`]), plus a list of
//! older versions only for keys that have any. Three structures refer to keys
//! by handle:
//! - `index`, a B+tree in key order that counts, per subtree, the keys live
//!   at the current revision ([`super::index`]): ordered walks, and
//!   `RangeResponse.count` at the current revision in O(log n);
//! - `lookup`, a hash table from key to handle for point reads and writes.
//!   It is only ever probed, never iterated, so its order cannot leak;
//! - `log`, the handles changed at each revision, for watch catch-up and
//!   incremental compaction.
//!
//! A read at an older revision cannot use the index's counts (they describe
//! the current revision): it walks the whole range to count, O(keys in range).

use std::collections::{BinaryHeap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader};
use crate::error::EtcdError;
use crate::mvcc::index::{KeyIndex, KeySource, LIVE, MAX_HANDLE};
use crate::mvcc::record::{self, Meta, Ver};
use crate::mvcc::table::KeyTable;
use crate::mvcc::types::*;

/// A key's slot.
#[derive(Clone, Debug, Default)]
struct KeyRec {
    /// The key and its latest version ([`record::encode_record`]); empty:
    /// the slot is free.
    data: Box<[u8]>,
    /// Older versions, oldest first; `None` for the many keys with none.
    hist: Option<Box<History>>,
}

#[derive(Clone, Debug, Default)]
struct History {
    /// [`record::encode_version`] each, in revision order.
    versions: Vec<Box<[u8]>>,
}

/// Key slots by handle. Freed handles are reused, last freed first.
#[derive(Clone, Debug, Default)]
struct Records {
    recs: Vec<KeyRec>,
    free: Vec<u32>,
}

impl KeySource for Records {
    fn key(&self, handle: u32) -> &[u8] {
        record::record_key(&self.recs[handle as usize].data)
    }
}

impl Records {
    fn alloc(&mut self, data: Box<[u8]>) -> u32 {
        if let Some(h) = self.free.pop() {
            self.recs[h as usize] = KeyRec { data, hist: None };
            return h;
        }
        // 2^31 keys would take well over 50 GB; the index reserves the top bit.
        let h = u32::try_from(self.recs.len())
            .ok()
            .filter(|&h| h <= MAX_HANDLE)
            .expect("fewer than 2^31 keys");
        self.recs.push(KeyRec { data, hist: None });
        h
    }

    fn release(&mut self, h: u32) {
        self.recs[h as usize] = KeyRec::default();
        self.free.push(h);
    }

    fn latest(&self, h: u32) -> (&[u8], Ver<'_>) {
        record::split_record(&self.recs[h as usize].data)
    }

    fn history(&self, h: u32) -> &[Box<[u8]>] {
        self.recs[h as usize]
            .hist
            .as_ref()
            .map_or(&[], |hist| &hist.versions)
    }

    /// The key and the version visible at `rev`, if the key exists then.
    fn at(&self, h: u32, rev: i64) -> Option<(&[u8], Ver<'_>)> {
        let (key, latest) = self.latest(h);
        if latest.meta.mod_rev <= rev {
            return (!latest.is_tombstone()).then_some((key, latest));
        }
        let hist = self.history(h);
        let k = hist.partition_point(|v| record::version_mod_rev(v) <= rev);
        let v = record::decode_version(hist.get(k.checked_sub(1)?)?);
        (!v.is_tombstone()).then_some((key, v))
    }

    /// The version written exactly at `rev`, and the live one before it.
    fn written_at(&self, h: u32, rev: i64) -> Option<(Ver<'_>, Option<Ver<'_>>)> {
        let (_, latest) = self.latest(h);
        let hist = self.history(h);
        fn live(v: Ver<'_>) -> Option<Ver<'_>> {
            (!v.is_tombstone()).then_some(v)
        }
        if latest.meta.mod_rev == rev {
            return Some((
                latest,
                hist.last()
                    .map(|b| record::decode_version(b))
                    .and_then(live),
            ));
        }
        let k = hist
            .binary_search_by(|v| record::version_mod_rev(v).cmp(&rev))
            .ok()?;
        let prev = k
            .checked_sub(1)
            .and_then(|p| hist.get(p))
            .map(|b| record::decode_version(b))
            .and_then(live);
        Some((record::decode_version(&hist[k]), prev))
    }
}

fn to_kv(key: Bytes, v: &Ver<'_>) -> KeyValue {
    KeyValue {
        key,
        create_revision: v.meta.create_rev,
        mod_revision: v.meta.mod_rev,
        version: v.meta.version,
        value: Bytes::copy_from_slice(v.value),
        lease: v.meta.lease,
    }
}

/// Key-values of `picked`, their keys and values (none with `keys_only`)
/// copied into one shared buffer.
fn kvs_in_one_buffer(picked: &[(&[u8], Ver<'_>)], keys_only: bool) -> Vec<KeyValue> {
    let value_len = |v: &Ver<'_>| if keys_only { 0 } else { v.value.len() };
    let total: usize = picked.iter().map(|(k, v)| k.len() + value_len(v)).sum();
    let mut buf = BytesMut::with_capacity(total);
    for (k, v) in picked {
        buf.extend_from_slice(k);
        buf.extend_from_slice(&v.value[..value_len(v)]);
    }
    let all = buf.freeze();
    let mut at = 0;
    picked
        .iter()
        .map(|(k, v)| {
            let key = all.slice(at..at + k.len());
            at += k.len();
            let value = all.slice(at..at + value_len(v));
            at += value_len(v);
            to_kv_with(key, v, value)
        })
        .collect()
}

fn event_of(key: &[u8], v: &Ver<'_>, prev: Option<Ver<'_>>) -> Event {
    // One copy holds the key and both values; the event's fields share it
    // (two allocations in all, where separate copies would take four).
    let prev_value = prev.map_or(&[][..], |p| p.value);
    let mut buf = Vec::with_capacity(key.len() + v.value.len() + prev_value.len());
    buf.extend_from_slice(key);
    buf.extend_from_slice(v.value);
    buf.extend_from_slice(prev_value);
    let all = Bytes::from(buf);
    let (k, n) = (key.len(), v.value.len());
    let key = all.slice(..k);
    let value = all.slice(k..k + n);
    let prev_kv = prev.map(|p| to_kv_with(key.clone(), &p, all.slice(k + n..)));
    if v.is_tombstone() {
        Event {
            kind: EventType::Delete,
            kv: KeyValue {
                key,
                mod_revision: v.meta.mod_rev,
                ..KeyValue::default()
            },
            prev_kv,
        }
    } else {
        Event {
            kind: EventType::Put,
            kv: to_kv_with(key, v, value),
            prev_kv,
        }
    }
}

/// A fixed (never seeded) hash of a key, for the lookup table only: the
/// table is never iterated, so nothing observable depends on it but speed.
/// 16 bytes per round, folded 64x64->128-bit multiplies (as wyhash does).
fn hash_key(key: &[u8]) -> u32 {
    const K0: u64 = 0x9e37_79b9_7f4a_7c15;
    const K1: u64 = 0xa076_1d64_78bd_642f;
    const K2: u64 = 0xe703_7ed1_a0b4_28db;
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }
    let mut h = K0 ^ key.len() as u64;
    let mut chunks = key.chunks_exact(16);
    for c in &mut chunks {
        let (a, b) = c.split_at(8);
        let a = u64::from_le_bytes(a.try_into().expect("8 bytes by construction"));
        let b = u64::from_le_bytes(b.try_into().expect("8 bytes by construction"));
        h = fold(a ^ K1, b ^ h);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 16];
        buf[..rest.len()].copy_from_slice(rest);
        let (a, b) = buf.split_at(8);
        let a = u64::from_le_bytes(a.try_into().expect("8 bytes by construction"));
        let b = u64::from_le_bytes(b.try_into().expect("8 bytes by construction"));
        h = fold(a ^ K1, b ^ h);
    }
    let h = fold(h ^ K2, K0);
    (h ^ (h >> 32)) as u32
}

/// The handles changed at each revision. Revisions are dense: every write
/// that changes something takes the next one, and only such writes do.
#[derive(Clone, Debug, Default)]
struct ChangeLog {
    /// The revision of `ends[0]`.
    first: i64,
    /// Per revision from `first`: the running number of changes through it,
    /// modulo 2^32 (fewer than 2^32 changes are ever held at once, so the
    /// wrapping differences are exact).
    ends: VecDeque<u32>,
    /// The running number of changes before `first`.
    base: u32,
    /// Changed handles, revision after revision, each in change order.
    handles: VecDeque<u32>,
}

impl ChangeLog {
    fn last(&self) -> Option<i64> {
        (!self.ends.is_empty()).then(|| self.first + self.ends.len() as i64 - 1)
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The positions in `handles` of revision `first + i`.
    fn span(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1].wrapping_sub(self.base) as usize
        };
        start..self.ends[i].wrapping_sub(self.base) as usize
    }

    fn changes(&self, rev: i64) -> impl Iterator<Item = u32> + '_ {
        let i = rev
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.ends.len());
        let span = i.map_or(0..0, |i| self.span(i));
        self.handles.range(span).copied()
    }

    fn push(&mut self, rev: i64, changed: impl Iterator<Item = u32>) {
        match self.last() {
            None => self.first = rev,
            Some(last) => assert_eq!(rev, last + 1, "change log revisions must be dense"),
        }
        self.handles.extend(changed);
        assert!(
            self.handles.len() < u32::MAX as usize,
            "change log over 2^32 changes"
        );
        self.ends
            .push_back(self.base.wrapping_add(self.handles.len() as u32));
    }

    /// Drops the oldest revision, appending its handles to `out`.
    fn pop_front(&mut self, out: &mut Vec<u32>) {
        let Some(end) = self.ends.pop_front() else {
            return;
        };
        let n = end.wrapping_sub(self.base) as usize;
        out.extend(self.handles.drain(..n));
        self.base = end;
        self.first += 1;
    }

    /// Gives memory back after compaction emptied most of it.
    fn shrink(&mut self) {
        if self.ends.len() < self.ends.capacity() / 4 {
            self.ends.shrink_to_fit();
        }
        if self.handles.len() < self.handles.capacity() / 4 {
            self.handles.shrink_to_fit();
        }
    }
}

#[derive(Clone)]
pub struct MvccStore {
    recs: Records,
    /// Handle by key hash. Probed only, never iterated (so its order never
    /// matters); the hash is fixed, so it is the same on every member.
    lookup: KeyTable,
    index: KeyIndex,
    current: i64,
    compacted: i64,
    /// Changes at each revision after `compacted` (and at it, while the
    /// versions written there are retained), oldest first.
    log: ChangeLog,
    /// While an incremental encode runs ([`MvccStore::begin_encode`]),
    /// compaction moves `compacted` at once (every answer follows it) but
    /// frees nothing until the encode ends: the encoder is still walking
    /// versions that compaction would free.
    /// Incremental encodes under way (a member's snapshot, a client's).
    holds: u32,
    /// The compaction to carry out when the last hold ends.
    deferred: Option<i64>,
    /// About the size of `encode`'s output (a little over), kept as keys
    /// and versions come and go, so an encode can reserve its buffer once
    /// instead of growing (and copying) it while writes wait.
    encoded_size: u64,
    /// A finished write's `changed` list, kept (empty) for the next write so
    /// that a write allocates nothing for it.
    spare: Vec<Change>,
}

/// A handle changed by a write; for a put whose event is wanted, the key and
/// value as given, which the event shares instead of copying.
type Change = (u32, Option<(Bytes, Bytes)>);

/// What a key and a version add to the encoding: the bytes, and room for
/// the varints (revisions of up to 2^35 and a lease id; more is rare, and
/// then the buffer grows once).
fn key_cost(key: &[u8]) -> u64 {
    key.len() as u64 + 10
}

fn version_cost(value_len: usize) -> u64 {
    value_len as u64 + 30
}

/// An incremental encode in progress: the store as it was at
/// [`MvccStore::begin_encode`], produced a few keys at a time while writes go
/// on. The bytes are exactly what [`MvccStore::encode`] gave at the start.
#[derive(Clone, Debug)]
pub struct EncodeJob {
    /// The current revision at the start: later versions are left out.
    rev: i64,
    /// Keys at the start, and how many have been written.
    keys: usize,
    written: usize,
    /// The last key written; the walk resumes after it.
    after: Option<Box<[u8]>>,
    /// Position of each handle in the key list, for the change log.
    ordinal: Vec<u32>,
    /// Revisions of the change log at the start, and how many are written.
    log_revs: usize,
    log_started: bool,
    log_written: usize,
}

impl Default for MvccStore {
    fn default() -> Self {
        MvccStore::new()
    }
}

/// Orders key-values by a sort target alone (`Ranked` breaks ties by key).
fn sort_key_cmp(target: SortTarget, a: &KeyValue, b: &KeyValue) -> std::cmp::Ordering {
    match target {
        SortTarget::Key => std::cmp::Ordering::Equal,
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

/// A key-value in a bounded top-k heap, ordered so the heap's top is the one to evict.
struct Ranked {
    kv: KeyValue,
    target: SortTarget,
    descend: bool,
}

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // The target decides; ties go in ascending key order either way,
        // as etcd's (insertion) sort leaves them.
        let c = sort_key_cmp(self.target, &self.kv, &o.kv);
        let c = if self.descend { c.reverse() } else { c };
        c.then_with(|| self.kv.key.cmp(&o.kv.key))
    }
}

impl MvccStore {
    pub fn new() -> MvccStore {
        MvccStore {
            recs: Records::default(),
            lookup: KeyTable::default(),
            index: KeyIndex::new(),
            current: 1,
            compacted: 0,
            log: ChangeLog::default(),
            holds: 0,
            deferred: None,
            encoded_size: 0,
            spare: Vec::new(),
        }
    }

    /// About how many bytes `encode` writes (never much less).
    pub fn encoded_size_hint(&self) -> u64 {
        self.encoded_size + 64 + 8 * self.log.handles.len() as u64 + 10 * self.log.len() as u64
    }

    pub fn current_revision(&self) -> i64 {
        self.current
    }

    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    /// The oldest revision readable (etcd's `FirstRev`).
    pub fn first_revision(&self) -> i64 {
        self.compacted
    }

    /// Number of keys with any retained version (live or history).
    pub fn indexed_keys(&self) -> usize {
        self.index.len()
    }

    /// Resolves a requested read revision (0: current) or says why not.
    pub fn check_read_revision(&self, rev: i64) -> Result<i64, EtcdError> {
        if rev > self.current {
            return Err(EtcdError::FutureRev);
        }
        let rev = if rev <= 0 { self.current } else { rev };
        if rev < self.compacted {
            return Err(EtcdError::Compacted);
        }
        Ok(rev)
    }

    fn find_hashed(&self, key: &[u8], hash: u32) -> Option<u32> {
        let recs = &self.recs;
        self.lookup.find(hash, |h| recs.key(h) == key)
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(key, hash_key(key))
    }

    /// The key and latest version of `key`, if it is live.
    fn latest_live(&self, key: &[u8]) -> Option<(&[u8], Ver<'_>)> {
        let (k, v) = self.recs.latest(self.find(key)?);
        (!v.is_tombstone()).then_some((k, v))
    }

    /// Reads, for a few keys at a time, what looking them up or writing them
    /// will read: their lookup slots, their records, and for a key not stored
    /// yet the index leaf it goes into and the keys a search there compares.
    /// Each step's cache misses for the keys of a group overlap, where the
    /// lookups themselves take their misses one after another. Changes
    /// nothing; a driver calls it on requests it is about to apply or serve.
    pub fn warm(&self, keys: &[&[u8]]) {
        const GROUP: usize = 16;
        let mut sum = 0u64;
        for group in keys.chunks(GROUP) {
            let mut hashes = [0u32; GROUP];
            for (h, k) in hashes.iter_mut().zip(group) {
                *h = hash_key(k);
                sum = sum.wrapping_add(self.lookup.touch(*h));
            }
            // A 32-bit hash match is almost always the key; a wrong guess
            // only wastes the warming.
            let mut found = [None; GROUP];
            for (f, h) in found.iter_mut().zip(&hashes[..group.len()]) {
                *f = self.lookup.first_with_hash(*h);
                if let Some(h) = *f {
                    sum = sum.wrapping_add(self.recs.recs[h as usize].data.len() as u64);
                }
            }
            let mut leaves = [None; GROUP];
            for ((f, leaf), k) in found.iter().zip(&mut leaves).zip(group) {
                match *f {
                    Some(h) => {
                        for b in self.recs.recs[h as usize].data.iter().step_by(64) {
                            sum = sum.wrapping_add(u64::from(*b));
                        }
                    }
                    None => {
                        let (id, s) = self.index.touch_leaf(k);
                        *leaf = Some(id);
                        sum = sum.wrapping_add(s);
                    }
                }
            }
            for (leaf, k) in leaves.iter().zip(group) {
                if let Some(id) = *leaf {
                    sum = sum.wrapping_add(self.index.touch_search(&self.recs, id, k));
                }
            }
        }
        std::hint::black_box(sum);
    }

    /// The key-value of `key` at the current revision.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.latest_live(key)
            .map(|(k, v)| to_kv(Bytes::copy_from_slice(k), &v))
    }

    /// A range read, as etcd's `Range` with its filters, sort and limit, but
    /// never holding more than `limit + 1` key-values when a limit is given.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        let rev = self.check_read_revision(req.revision)?;
        Ok(self.range_at(req, rev, self.current, rev == self.current))
    }

    /// The slots (handle plus live bit) of the keys in `range`, in key order
    /// or reversed.
    fn slots<'a>(
        &'a self,
        range: &KeyRange<'_>,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = u32> + 'a> {
        match *range {
            KeyRange::Single(k) => {
                let slot = self.find(k).map(|h| {
                    if self.recs.latest(h).1.is_tombstone() {
                        h
                    } else {
                        h | LIVE
                    }
                });
                Box::new(slot.into_iter())
            }
            KeyRange::Span { start, end } => {
                let it = self.index.range(&self.recs, start, end);
                if reverse {
                    Box::new(it.rev())
                } else {
                    Box::new(it)
                }
            }
        }
    }

    /// Live keys in `range` at the current revision, from the index's counts.
    fn count_live(&self, range: &KeyRange<'_>) -> i64 {
        match *range {
            KeyRange::Single(k) => i64::from(self.latest_live(k).is_some()),
            KeyRange::Span { start, end } => self.index.count_live(&self.recs, start, end) as i64,
        }
    }

    /// The range at read revision `rev`; `header_rev` is reported as etcd does
    /// (the store's revision, not the read revision). `top`: `rev` sees the
    /// latest version of every key, so the index's live bits and counts apply;
    /// otherwise every key in the range is visited to count.
    fn range_at(&self, req: &RangeRequest, rev: i64, header_rev: i64, top: bool) -> RangeResponse {
        let range = KeyRange::new(&req.key, &req.range_end);
        let passes = |m: &Meta| {
            (req.max_mod_revision == 0 || m.mod_rev <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || m.mod_rev >= req.min_mod_revision)
                && (req.max_create_revision == 0 || m.create_rev <= req.max_create_revision)
                && (req.min_create_revision == 0 || m.create_rev >= req.min_create_revision)
        };
        let limit = if req.limit > 0 {
            Some(req.limit as usize)
        } else {
            None
        };
        // etcd sorts ascending by default when a non-key target is named.
        let order = match (req.sort_order, req.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (o, _) => o,
        };
        let by_key = req.sort_target == SortTarget::Key || order == SortOrder::None;
        let reverse = by_key && order == SortOrder::Descend;
        let filtered = req.max_mod_revision != 0
            || req.min_mod_revision != 0
            || req.max_create_revision != 0
            || req.min_create_revision != 0;
        // etcd's quirk: a target without an order (ascending implied) and no
        // filters fetches `limit + 1` keys in key order, then sorts those.
        let sort_first_keys = req.sort_order == SortOrder::None
            && req.sort_target != SortTarget::Key
            && !filtered
            && limit.is_some();

        let mut count: i64 = if top { self.count_live(&range) } else { 0 };
        if top && req.count_only {
            return RangeResponse {
                revision: header_rev,
                more: false,
                count,
                kvs: Vec::new(),
            };
        }
        let mut matched: usize = 0;
        // In key order the versions are picked first and copied out at the
        // end, all into one buffer: one allocation for the response's keys
        // and values instead of two per key-value.
        let mut picked: Vec<(&[u8], Ver<'_>)> = Vec::new();
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
        for slot in self.slots(&range, reverse) {
            if top && slot & LIVE == 0 {
                continue;
            }
            let Some((k, v)) = self.recs.at(slot & MAX_HANDLE, rev) else {
                continue;
            };
            if !top {
                count += 1;
            }
            if req.count_only {
                continue;
            }
            // Filters look at revisions only: build the key-value only when kept.
            if !passes(&v.meta) {
                continue;
            }
            matched += 1;
            if by_key {
                if limit.is_none_or(|l| picked.len() < l) {
                    picked.push((k, v));
                } else if top {
                    // The count is known and this match settles `more`.
                    break;
                }
            } else {
                if sort_first_keys && limit.is_some_and(|l| matched > l + 1) {
                    if top {
                        break;
                    }
                    continue;
                }
                let r = Ranked {
                    kv: to_kv(Bytes::copy_from_slice(k), &v),
                    target: req.sort_target,
                    descend: order == SortOrder::Descend,
                };
                match limit {
                    Some(l) if heap.len() >= l => {
                        // Keep the best `l`: replace the worst if this one is better.
                        if let Some(mut worst) = heap.peek_mut()
                            && r < *worst
                        {
                            *worst = r;
                        }
                    }
                    _ => heap.push(r),
                }
            }
        }
        let mut kvs = if by_key {
            kvs_in_one_buffer(&picked, req.keys_only)
        } else {
            heap.into_sorted_vec().into_iter().map(|r| r.kv).collect()
        };
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        RangeResponse {
            revision: header_rev,
            more: limit.is_some_and(|l| matched > l),
            count,
            kvs,
        }
    }

    /// Whether every key in `[key, range_end)` at the current revision passes
    /// `c` (etcd's `applyCompare`: an empty range compares against a zero
    /// key-value, except that a value compare on nothing fails).
    pub fn compare(&self, c: &Compare) -> bool {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut any = false;
        for slot in self.slots(&range, false) {
            if slot & LIVE == 0 {
                continue;
            }
            let (_, v) = self.recs.latest(slot & MAX_HANDLE);
            any = true;
            // compare_kv reads no key, and the value only for a value compare.
            let value = match c.target {
                CompareTarget::Value(_) => Bytes::copy_from_slice(v.value),
                _ => Bytes::new(),
            };
            if !compare_kv(c, &to_kv_with(Bytes::new(), &v, value)) {
                return false;
            }
        }
        if !any {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        true
    }

    /// Starts the writes of one request; they get revision `current + 1`.
    pub fn write(&mut self) -> Write<'_> {
        self.write_with(true)
    }

    /// [`MvccStore::write`], saying whether [`Write::finish`] should return
    /// the events (nobody watching, nobody needs them built).
    pub fn write_with(&mut self, events: bool) -> Write<'_> {
        let rev = self.current + 1;
        let changed = std::mem::take(&mut self.spare);
        Write {
            store: self,
            rev,
            changed,
            events,
        }
    }

    /// The events of revision `rev` (empty if it is compacted or has none),
    /// with previous key-values where still retained.
    pub fn events_at(&self, rev: i64) -> Vec<Event> {
        if rev < self.compacted {
            return Vec::new();
        }
        // At the compaction point the previous versions are compacted (even
        // while a deferred compaction still holds them).
        let at_floor = rev == self.compacted;
        self.log
            .changes(rev)
            .filter_map(|h| {
                let (v, prev) = self.recs.written_at(h, rev)?;
                Some(event_of(self.recs.key(h), &v, prev.filter(|_| !at_floor)))
            })
            .collect()
    }

    /// The revisions after `after` that have changes, oldest first (for watch catch-up).
    pub fn changed_revisions_after(&self, after: i64, max: usize) -> Vec<i64> {
        let Some(last) = self.log.last() else {
            return Vec::new();
        };
        let from = after
            .saturating_add(1)
            .max(self.log.first)
            .max(self.compacted);
        (from..=last).take(max).collect()
    }

    /// Compacts away everything only reads (or watches) below `rev` could
    /// see. Reads at `rev` and watches from `rev` keep working, as in etcd.
    pub fn compact(&mut self, rev: i64) -> Result<(), EtcdError> {
        if rev <= self.compacted {
            return Err(EtcdError::Compacted);
        }
        if rev > self.current {
            return Err(EtcdError::FutureRev);
        }
        self.compacted = rev;
        if self.holds > 0 {
            self.deferred = Some(rev);
        } else {
            self.free_compacted(rev);
        }
        Ok(())
    }

    /// Frees what compaction to `rev` leaves no reader: the physical half of
    /// [`MvccStore::compact`].
    fn free_compacted(&mut self, rev: i64) {
        // Only keys changed since the last compaction can hold anything to
        // drop: those in the log up to and including `rev`. Revisions before
        // `rev` leave the log; the one at `rev` stays for watches from `rev`.
        let mut visit: Vec<u32> = Vec::new();
        while self.log.last().is_some() && self.log.first < rev {
            self.log.pop_front(&mut visit);
        }
        visit.extend(self.log.changes(rev));
        visit.sort_unstable();
        visit.dedup();
        for h in visit {
            self.compact_key(h, rev);
        }
        self.log.shrink();
        self.lookup.shrink_if_sparse();
    }

    /// Of the key in slot `h`'s versions (oldest first), the position of the
    /// first one compaction to `rev` keeps: it drops the versions before the
    /// last one at or below `rev`, and that one too if it is a deletion made
    /// before `rev` (a deletion made exactly at `rev` is an event a watch from
    /// `rev` must still get). All of them: the key goes.
    fn retained_from(&self, h: u32, rev: i64) -> usize {
        let (_, latest) = self.recs.latest(h);
        let hist = self.recs.history(h);
        let total = hist.len() + 1;
        // Versions at or below `rev`.
        let k = if latest.meta.mod_rev <= rev {
            total
        } else {
            hist.partition_point(|v| record::version_mod_rev(v) <= rev)
        };
        if k == 0 {
            return 0;
        }
        let last = if k == total {
            latest
        } else {
            record::decode_version(&hist[k - 1])
        };
        if last.is_tombstone() && last.meta.mod_rev < rev {
            k
        } else {
            k - 1
        }
    }

    /// Drops what no read at `>= rev`, and no watch from `rev`, can see (see
    /// `retained_from`). A key left with nothing leaves the store.
    fn compact_key(&mut self, h: u32, rev: i64) {
        // A key removed earlier in this compaction (its handle was listed
        // at several revisions); no handle is reused while compacting.
        if self.recs.recs[h as usize].data.is_empty() {
            return;
        }
        let total = self.recs.history(h).len() + 1;
        let keep_from = self.retained_from(h, rev);
        let freed: u64 = self
            .versions(h)
            .take(keep_from)
            .map(|v| version_cost(v.value.len()))
            .sum::<u64>()
            + if keep_from == total {
                key_cost(self.recs.key(h))
            } else {
                0
            };
        self.encoded_size = self.encoded_size.saturating_sub(freed);
        if keep_from == total {
            let removed = self.index.remove(
                &self.recs,
                record::record_key(&self.recs.recs[h as usize].data),
            );
            assert!(
                removed.is_some_and(|s| s & MAX_HANDLE == h),
                "compacted key {h} missing from the index"
            );
            let hash = hash_key(self.recs.key(h));
            let removed = self.lookup.remove(hash, h);
            assert!(removed, "compacted key {h} missing from the lookup table");
            self.recs.release(h);
            return;
        }
        if keep_from == 0 {
            return;
        }
        let rec = &mut self.recs.recs[h as usize];
        let Some(hist) = rec.hist.as_mut() else {
            return;
        };
        hist.versions.drain(..keep_from);
        if hist.versions.is_empty() {
            rec.hist = None;
        } else if hist.versions.len() < hist.versions.capacity() / 4 {
            hist.versions.shrink_to_fit();
        }
    }

    /// A digest of every retained version up to `rev`, equal on members that
    /// applied the same writes (etcd's HashKV; the value differs from etcd's).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), EtcdError> {
        let rev = self.check_read_revision(rev)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.compacted.to_le_bytes());
        for slot in self.index.iter() {
            let h = slot & MAX_HANDLE;
            let (k, _) = self.recs.latest(h);
            // Only what compaction keeps (a deferred one may not have freed it yet).
            let keep_from = self.retained_from(h, self.compacted);
            for v in self
                .versions(h)
                .skip(keep_from)
                .filter(|v| v.meta.mod_rev <= rev)
            {
                hasher.update(&(k.len() as u64).to_le_bytes());
                hasher.update(k);
                let m = v.meta;
                for n in [
                    m.mod_rev,
                    m.create_rev,
                    m.version,
                    m.lease,
                    v.value.len() as i64,
                ] {
                    hasher.update(&n.to_le_bytes());
                }
                hasher.update(v.value);
            }
        }
        Ok((hasher.finalize(), rev))
    }

    /// Every version of the key in slot `h`, oldest first.
    fn versions(&self, h: u32) -> impl Iterator<Item = Ver<'_>> + '_ {
        let (_, latest) = self.recs.latest(h);
        self.recs
            .history(h)
            .iter()
            .map(|b| record::decode_version(b))
            .chain(std::iter::once(latest))
    }

    /// Version 2: varint numbers, and the change log names keys by their
    /// position in the key list instead of repeating them.
    const SNAPSHOT_VERSION: u8 = 2;

    /// Smallest encodings, for rejecting counts the input cannot hold: a key
    /// is a length, a version count and a version; a version is four varints
    /// and a value length; a revision of the log is a change count and a change.
    const MIN_KEY_BYTES: usize = 2 + Self::MIN_VERSION_BYTES;
    const MIN_VERSION_BYTES: usize = 5;
    const MIN_REVISION_BYTES: usize = 2;

    /// The whole store, at once.
    pub fn encode(&self, buf: &mut BytesMut) {
        if self.deferred.is_some() {
            // Encode what a reader sees: the compaction carried out.
            let mut copy = self.clone();
            copy.holds = 0;
            copy.release_deferred();
            return copy.encode(buf);
        }
        let mut job = self.start_encode(buf);
        while !self.encode_some(&mut job, buf, usize::MAX) {}
    }

    /// Whether an incremental encode may start now: not while a compaction
    /// waits for running encodes to end (a new one would see versions that
    /// compaction has already dropped from every answer).
    pub fn can_begin_encode(&self) -> bool {
        self.deferred.is_none()
    }

    /// Starts encoding the store as it is now, to be continued with
    /// [`MvccStore::encode_step`] while writes (and compactions, deferred
    /// until the last encode ends) go on. Several may run at once; each
    /// must end in `encode_step` returning true or in `abort_encode`.
    pub fn begin_encode(&mut self, buf: &mut BytesMut) -> EncodeJob {
        assert!(
            self.can_begin_encode(),
            "a compaction waits: no encode starts"
        );
        self.holds += 1;
        self.start_encode(buf)
    }

    /// Encodes about `budget` more bytes (at least one key or log revision);
    /// true when the encode is complete (and the hold on compaction released).
    pub fn encode_step(&mut self, job: &mut EncodeJob, buf: &mut BytesMut, budget: usize) -> bool {
        let done = self.encode_some(job, buf, budget.max(1));
        if done {
            self.end_hold();
        }
        done
    }

    /// Gives up an incremental encode: compaction proceeds.
    pub fn abort_encode(&mut self) {
        self.end_hold();
    }

    fn end_hold(&mut self) {
        self.holds = self.holds.saturating_sub(1);
        if self.holds == 0 {
            self.release_deferred();
        }
    }

    fn release_deferred(&mut self) {
        if let Some(rev) = self.deferred.take() {
            self.free_compacted(rev);
        }
    }

    fn start_encode(&self, buf: &mut BytesMut) -> EncodeJob {
        debug_assert!(self.deferred.is_none());
        buf.put_u8(Self::SNAPSHOT_VERSION);
        buf.put_i64_le(self.current);
        buf.put_i64_le(self.compacted);
        codec::put_uvarint(buf, self.index.len() as u64);
        EncodeJob {
            rev: self.current,
            keys: self.index.len(),
            written: 0,
            after: None,
            ordinal: vec![0u32; self.recs.recs.len()],
            log_revs: self.log.len(),
            log_started: false,
            log_written: 0,
        }
    }

    /// The encoder proper. While it runs nothing it reads changes: keys and
    /// versions are never freed (compaction waits), later writes only add
    /// versions above `job.rev` and keys whose versions all are, and the
    /// change log only grows at its end.
    fn encode_some(&self, job: &mut EncodeJob, buf: &mut BytesMut, budget: usize) -> bool {
        // Bytes written, plus a little per key looked at (keys created after
        // the start are skipped without writing anything).
        let start = buf.len();
        let mut looked = 0usize;
        let spent = |buf: &BytesMut, looked: usize| buf.len() - start + looked * 16;
        if job.written < job.keys {
            let walk = match &job.after {
                None => self.index.iter(),
                Some(k) => self.index.range(&self.recs, k, None),
            };
            let mut last: Option<&[u8]> = None;
            for slot in walk {
                let h = slot & MAX_HANDLE;
                let key = self.recs.key(h);
                if last.is_none() && job.after.as_deref() == Some(key) {
                    continue;
                }
                if spent(buf, looked) >= budget {
                    job.after = last.map(Into::into);
                    return false;
                }
                looked += 1;
                last = Some(key);
                let (_, latest) = self.recs.latest(h);
                let hist = self.recs.history(h);
                let n = if latest.meta.mod_rev <= job.rev {
                    hist.len() + 1
                } else {
                    hist.partition_point(|v| record::version_mod_rev(v) <= job.rev)
                };
                if n == 0 {
                    continue; // created after the start
                }
                job.ordinal[h as usize] = job.written as u32;
                job.written += 1;
                codec::put_bytes(buf, key);
                codec::put_uvarint(buf, n as u64);
                for v in self.versions(h).take(n) {
                    let m = v.meta;
                    for x in [m.mod_rev, m.create_rev, m.version, m.lease] {
                        codec::put_uvarint(buf, x as u64);
                    }
                    codec::put_bytes(buf, v.value);
                }
            }
            assert_eq!(
                job.written, job.keys,
                "the keys of an encode in progress changed"
            );
            job.after = None;
        }
        if !job.log_started {
            job.log_started = true;
            codec::put_uvarint(buf, job.log_revs as u64);
            if job.log_revs > 0 {
                codec::put_uvarint(buf, self.log.first as u64);
            }
        }
        while job.log_written < job.log_revs {
            if spent(buf, looked) >= budget {
                return false;
            }
            let span = self.log.span(job.log_written);
            codec::put_uvarint(buf, span.len() as u64);
            for &h in self.log.handles.range(span) {
                codec::put_uvarint(buf, u64::from(job.ordinal[h as usize]));
            }
            job.log_written += 1;
        }
        true
    }

    /// Decodes a store and checks its invariants; never panics on bad input,
    /// and allocates only in proportion to the input.
    pub fn decode(r: &mut Reader<'_>) -> Result<MvccStore, DecodeError> {
        let bad = || DecodeError::BadLength(0);
        let v = r.u8()?;
        if v != Self::SNAPSHOT_VERSION {
            return Err(DecodeError::BadTag(v));
        }
        let current = r.u64_le()? as i64;
        let compacted = r.u64_le()? as i64;
        if current < 1 || compacted < 0 || compacted > current {
            return Err(bad());
        }
        let mut store = MvccStore {
            current,
            compacted,
            ..MvccStore::new()
        };
        let n = r.count(Self::MIN_KEY_BYTES)?;
        if n > MAX_HANDLE as usize {
            return Err(bad());
        }
        let mut handles: Vec<u32> = Vec::with_capacity(n);
        // `count` bounded `n` by the input's size: reserving is safe, and
        // saves growing (and rehashing) a million times over.
        store.recs.recs.reserve(n);
        store.lookup.reserve(n);
        let mut prev_key: Option<&[u8]> = None;
        for _ in 0..n {
            let key = r.bytes()?;
            if prev_key.is_some_and(|p| p >= key) {
                return Err(bad());
            }
            prev_key = Some(key);
            let nv = r.count(Self::MIN_VERSION_BYTES)?;
            let mut older: Vec<Box<[u8]>> = Vec::with_capacity(nv.saturating_sub(1));
            let mut latest = None;
            let mut last_mod: Option<i64> = None;
            for j in 0..nv {
                let mod_rev = r.uvarint()? as i64;
                let create_rev = r.uvarint()? as i64;
                let version = r.uvarint()? as i64;
                let lease = r.uvarint()? as i64;
                let value = r.bytes()?;
                if last_mod.is_some_and(|m| m >= mod_rev) || mod_rev > current {
                    return Err(bad());
                }
                last_mod = Some(mod_rev);
                let meta = Meta {
                    mod_rev,
                    create_rev,
                    version,
                    lease,
                };
                if j + 1 < nv {
                    older.push(record::encode_version(&meta, value));
                } else {
                    latest = Some((meta, value));
                }
            }
            // A key with no version never exists in a store.
            let Some((meta, value)) = latest else {
                return Err(bad());
            };
            store.encoded_size += key_cost(key)
                + version_cost(value.len())
                + older
                    .iter()
                    .map(|b| version_cost(record::decode_version(b).value.len()))
                    .sum::<u64>();
            let hash = hash_key(key);
            let h = store.recs.alloc(record::encode_record(key, &meta, value));
            if !older.is_empty() {
                store.recs.recs[h as usize].hist = Some(Box::new(History { versions: older }));
            }
            store.lookup.insert_new(hash, h);
            // Keys arrive in order, so every insert appends and leaves fill up.
            let inserted = store.index.insert(&store.recs, key, h, meta.version != 0);
            debug_assert!(inserted, "keys are strictly increasing");
            handles.push(h);
        }
        let nrevs = r.count(Self::MIN_REVISION_BYTES)?;
        if nrevs == 0 {
            // Every revision after 1 has changes, and compaction keeps the
            // current one: only a store that never changed has no log.
            if current != 1 {
                return Err(bad());
            }
            return Ok(store);
        }
        let first = r.uvarint()? as i64;
        // Compaction to `rev` keeps revision `rev` (revision 1 has no changes).
        let last = first.checked_add(nrevs as i64 - 1).ok_or_else(bad)?;
        if first != compacted.max(2) || last != current {
            return Err(bad());
        }
        // The revision at which each key was last listed, to refuse a key
        // listed twice in one revision.
        let mut listed_at: Vec<i64> = vec![0; n];
        let mut listed: usize = 0;
        let mut changed: Vec<u32> = Vec::new();
        for rev in first..=last {
            let m = r.count(1)?;
            if m == 0 {
                return Err(bad());
            }
            changed.clear();
            for _ in 0..m {
                let i = usize::try_from(r.uvarint()?).map_err(|_| bad())?;
                let (Some(&h), Some(at)) = (handles.get(i), listed_at.get_mut(i)) else {
                    return Err(bad());
                };
                if *at == rev || store.recs.written_at(h, rev).is_none() {
                    return Err(bad());
                }
                *at = rev;
                changed.push(h);
            }
            listed += m;
            store.log.push(rev, changed.iter().copied());
        }
        // Each listed change is a distinct version written at its revision; the
        // log must list all of them.
        let versions_in_log: usize = handles
            .iter()
            .map(|&h| {
                store
                    .versions(h)
                    .filter(|v| v.meta.mod_rev >= first)
                    .count()
            })
            .sum();
        if versions_in_log != listed {
            return Err(bad());
        }
        Ok(store)
    }

    /// The versions of every key and the changes of every logged revision,
    /// by key bytes (what `PartialEq` and `Debug` compare and show).
    fn logical_keys(&self) -> impl Iterator<Item = (&[u8], Vec<Ver<'_>>)> + '_ {
        self.index.iter().map(move |slot| {
            let h = slot & MAX_HANDLE;
            (self.recs.key(h), self.versions(h).collect())
        })
    }

    fn logical_log(&self) -> impl Iterator<Item = (i64, Vec<&[u8]>)> + '_ {
        (0..self.log.len()).map(move |i| {
            let rev = self.log.first + i as i64;
            (
                rev,
                self.log.changes(rev).map(|h| self.recs.key(h)).collect(),
            )
        })
    }
}

/// Equal when the stores hold the same versions and change log, however
/// their handles and tree nodes happen to be laid out.
impl PartialEq for MvccStore {
    fn eq(&self, o: &Self) -> bool {
        self.current == o.current
            && self.compacted == o.compacted
            && self.index.len() == o.index.len()
            && self.log.len() == o.log.len()
            && self.logical_keys().eq(o.logical_keys())
            && self.logical_log().eq(o.logical_log())
    }
}

impl Eq for MvccStore {}

impl std::fmt::Debug for MvccStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Keys<'a>(&'a MvccStore);
        impl std::fmt::Debug for Keys<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .logical_keys()
                            .map(|(k, v)| (Bytes::copy_from_slice(k), v)),
                    )
                    .finish()
            }
        }
        struct Log<'a>(&'a MvccStore);
        impl std::fmt::Debug for Log<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map()
                    .entries(self.0.logical_log().map(|(rev, ks)| {
                        (
                            rev,
                            ks.into_iter()
                                .map(Bytes::copy_from_slice)
                                .collect::<Vec<_>>(),
                        )
                    }))
                    .finish()
            }
        }
        f.debug_struct("MvccStore")
            .field("current", &self.current)
            .field("compacted", &self.compacted)
            .field("keys", &Keys(self))
            .field("log", &Log(self))
            .finish()
    }
}

fn to_kv_with(key: Bytes, v: &Ver<'_>, value: Bytes) -> KeyValue {
    KeyValue {
        key,
        create_revision: v.meta.create_rev,
        mod_revision: v.meta.mod_rev,
        version: v.meta.version,
        value,
        lease: v.meta.lease,
    }
}

/// etcd's `compareKV`.
pub fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Version(r) => kv.version.cmp(r),
        CompareTarget::Lease(r) => kv.lease.cmp(r),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// The writes of one request. Each key may change at most once (the
/// request was validated); reads through it see its own changes.
pub struct Write<'a> {
    store: &'a mut MvccStore,
    rev: i64,
    /// Handles changed, in order.
    changed: Vec<Change>,
    /// Whether `finish` returns events.
    events: bool,
}

impl Write<'_> {
    /// The revision these writes get.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The revision a read made now sees: ours if we changed anything.
    pub fn read_revision(&self) -> i64 {
        if self.changed.is_empty() {
            self.rev - 1
        } else {
            self.rev
        }
    }

    /// Reads see the latest version of every key: nothing is newer than this
    /// write's own changes (or, before any, than the current revision).
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.store.get(key)
    }

    /// A range read inside the request (etcd reports this revision in its header).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        let read = self.read_revision();
        let rev = if req.revision > 0 { req.revision } else { read };
        if rev > read {
            return Err(EtcdError::FutureRev);
        }
        if rev < self.store.compacted {
            return Err(EtcdError::Compacted);
        }
        Ok(self.store.range_at(req, rev, read, rev == read))
    }

    /// Sets `key`; returns the previous key-value, if it existed.
    pub fn put(&mut self, key: &Bytes, value: &Bytes, lease: i64) -> Option<KeyValue> {
        let rev = self.rev;
        let st = &mut *self.store;
        let hash = hash_key(key);
        let recs = &st.recs;
        let (handle, prev) = match st.lookup.find(hash, |h| recs.key(h) == &key[..]) {
            Some(h) => {
                let rec = &mut st.recs.recs[h as usize];
                let (_, old) = record::split_record(&rec.data);
                debug_assert!(old.meta.mod_rev < rev, "key changed twice in one revision");
                let was_live = !old.is_tombstone();
                let (create_rev, version) = if was_live {
                    (old.meta.create_rev, old.meta.version + 1)
                } else {
                    (rev, 1)
                };
                let prev = was_live.then(|| to_kv(key.clone(), &old));
                let older = record::encode_version(&old.meta, old.value);
                rec.data = record::encode_record(
                    key,
                    &Meta {
                        mod_rev: rev,
                        create_rev,
                        version,
                        lease,
                    },
                    value,
                );
                rec.hist
                    .get_or_insert_with(Default::default)
                    .versions
                    .push(older);
                if !was_live {
                    let found = st.index.set_live(&st.recs, key, true);
                    assert!(found, "a key in the lookup table is in the index");
                }
                st.encoded_size += version_cost(value.len());
                (h, prev)
            }
            None => {
                let meta = Meta {
                    mod_rev: rev,
                    create_rev: rev,
                    version: 1,
                    lease,
                };
                let h = st.recs.alloc(record::encode_record(key, &meta, value));
                st.lookup.insert_new(hash, h);
                let inserted = st.index.insert(&st.recs, key, h, true);
                assert!(
                    inserted,
                    "a key missing from the lookup table is missing from the index"
                );
                st.encoded_size += key_cost(key) + version_cost(value.len());
                (h, None)
            }
        };
        let given = self.events.then(|| (key.clone(), value.clone()));
        self.changed.push((handle, given));
        prev
    }

    /// Deletes every live key in the range; returns their last key-values.
    pub fn delete_range(&mut self, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        let rev = self.rev;
        let range = KeyRange::new(key, range_end);
        let victims: Vec<u32> = self
            .store
            .slots(&range, false)
            .filter(|s| s & LIVE != 0)
            .map(|s| s & MAX_HANDLE)
            .collect();
        let st = &mut *self.store;
        let mut out = Vec::with_capacity(victims.len());
        for h in victims {
            let rec = &mut st.recs.recs[h as usize];
            let (k, old) = record::split_record(&rec.data);
            debug_assert!(old.meta.mod_rev < rev, "key changed twice in one revision");
            let key = Bytes::copy_from_slice(k);
            let prev = to_kv(key.clone(), &old);
            let older = record::encode_version(&old.meta, old.value);
            let tombstone = Meta {
                mod_rev: rev,
                create_rev: 0,
                version: 0,
                lease: 0,
            };
            rec.data = record::encode_record(&key, &tombstone, &[]);
            rec.hist
                .get_or_insert_with(Default::default)
                .versions
                .push(older);
            let found = st.index.set_live(&st.recs, &key, false);
            assert!(found, "a key in the lookup table is in the index");
            st.encoded_size += version_cost(0);
            self.changed.push((h, None));
            out.push(prev);
        }
        out
    }

    /// Commits: the store moves to this revision if anything changed. Returns
    /// the events in the order the changes were made.
    pub fn finish(self) -> Vec<Event> {
        let Write {
            store: st,
            rev,
            mut changed,
            events,
        } = self;
        if changed.is_empty() {
            st.spare = changed;
            return Vec::new();
        }
        st.log.push(rev, changed.iter().map(|c| c.0));
        let events: Vec<Event> = if !events {
            changed.clear();
            Vec::new()
        } else {
            changed
                .drain(..)
                .map(|(h, given)| {
                    let (v, prev) = st
                        .recs
                        .written_at(h, rev)
                        .expect("written at this revision");
                    match given {
                        Some((key, value)) => Event {
                            kind: EventType::Put,
                            prev_kv: prev.map(|p| to_kv(key.clone(), &p)),
                            kv: to_kv_with(key, &v, value),
                        },
                        None => event_of(st.recs.key(h), &v, prev),
                    }
                })
                .collect()
        };
        st.current = rev;
        st.spare = changed;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &mut MvccStore, k: &str, v: &str) -> Vec<Event> {
        let mut w = s.write();
        w.put(
            &Bytes::copy_from_slice(k.as_bytes()),
            &Bytes::copy_from_slice(v.as_bytes()),
            0,
        );
        w.finish()
    }

    fn del(s: &mut MvccStore, k: &str, end: &str) -> Vec<Event> {
        let mut w = s.write();
        w.delete_range(k.as_bytes(), end.as_bytes());
        w.finish()
    }

    fn range(s: &MvccStore, k: &str, end: &str, rev: i64, limit: i64) -> RangeResponse {
        s.range(&RangeRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            revision: rev,
            limit,
            ..RangeRequest::default()
        })
        .unwrap()
    }

    #[test]
    fn warming_changes_nothing() {
        let mut s = MvccStore::new();
        for i in 0..2000 {
            put(&mut s, &format!("k{i:05}"), "v");
        }
        del(&mut s, "k00010", "k00020");
        let before = s.clone();
        let keys: Vec<String> = (0..30).map(|i| format!("k{:05}", i * 97)).collect();
        let mut ks: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        ks.extend([&b""[..], b"absent", b"k00015", &[0xff; 300][..]]);
        s.warm(&ks);
        s.warm(&[]);
        assert_eq!(s, before);
        assert_eq!(s.get(b"k00097").map(|kv| kv.value), Some(Bytes::from("v")));
    }

    #[test]
    fn quiet_writes_give_no_events_but_the_same_store() {
        let mut loud = MvccStore::new();
        let mut quiet = MvccStore::new();
        for (i, events) in [(0, true), (1, false)] {
            let s = if i == 0 { &mut loud } else { &mut quiet };
            for round in 0..3 {
                let mut w = s.write_with(events);
                w.put(&Bytes::from("a"), &Bytes::from(format!("{round}")), 0);
                w.put(&Bytes::from("b"), &Bytes::from("x"), 0);
                let evs = w.finish();
                assert_eq!(evs.len(), if events { 2 } else { 0 });
            }
            let mut w = s.write_with(events);
            w.delete_range(b"a", b"");
            assert_eq!(w.finish().is_empty(), !events);
        }
        assert_eq!(loud, quiet);
        assert_eq!(loud.events_at(4), quiet.events_at(4));
        assert_eq!(quiet.events_at(5).len(), 1, "history still has the delete");
    }

    fn round_trip(s: &MvccStore) -> MvccStore {
        let mut buf = BytesMut::new();
        s.encode(&mut buf);
        let mut r = Reader::new(&buf);
        let d = MvccStore::decode(&mut r).unwrap();
        assert!(r.is_empty());
        d
    }

    #[test]
    fn counts_come_from_the_index_at_the_current_revision() {
        let mut s = MvccStore::new();
        for i in 0..1000 {
            put(&mut s, &format!("p/{i:04}"), "v");
        }
        del(&mut s, "p/0100", "p/0200");
        let r = range(&s, "p/", "p0", 0, 10);
        assert_eq!((r.count, r.kvs.len(), r.more), (900, 10, true));
        assert_eq!(r.kvs[0].key.as_ref(), b"p/0000");
        // The same range before the delete, counted by walking.
        let before = s.current_revision() - 1;
        let r = range(&s, "p/", "p0", before, 10);
        assert_eq!((r.count, r.kvs.len(), r.more), (1000, 10, true));
        let r = range(&s, "p/0150", "", 0, 0);
        assert_eq!(r.count, 0);
        let r = range(&s, "p/0150", "", before, 0);
        assert_eq!(r.count, 1);
    }

    #[test]
    fn compaction_frees_keys_and_round_trips() {
        let mut s = MvccStore::new();
        for i in 0..300 {
            put(&mut s, &format!("k{:03}", i % 100), &format!("{i}"));
        }
        del(&mut s, "k050", "k060");
        assert_eq!(s.indexed_keys(), 100);
        assert_eq!(round_trip(&s), s);
        let rev = s.current_revision();
        put(&mut s, "k000", "after");
        s.compact(rev).unwrap();
        // The deletion at `rev` is still an event for watches from `rev`.
        assert_eq!(s.indexed_keys(), 100);
        assert_eq!(s.events_at(rev).len(), 10);
        put(&mut s, "k001", "later");
        s.compact(s.current_revision()).unwrap();
        assert_eq!(s.indexed_keys(), 90);
        assert_eq!(range(&s, "k", "l", 0, 0).count, 90);
        let d = round_trip(&s);
        assert_eq!(d, s);
        assert_eq!(d.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
        // Freed handles are reused by new keys.
        for i in 0..10 {
            put(&mut s, &format!("n{i}"), "v");
        }
        assert_eq!(s.recs.recs.len(), 100);
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn decode_refuses_what_no_store_could_hold() {
        let mut s = MvccStore::new();
        put(&mut s, "a", "1");
        put(&mut s, "b", "2");
        let mut buf = BytesMut::new();
        s.encode(&mut buf);
        // Every truncation and every single-byte change either decodes to a
        // valid store or fails cleanly.
        for cut in 0..buf.len() {
            let _ = MvccStore::decode(&mut Reader::new(&buf[..cut]));
        }
        for i in 0..buf.len() {
            for b in [0u8, 1, 2, 3, 0x7f, 0x80, 0xff] {
                let mut bad = buf.to_vec();
                bad[i] = b;
                if let Ok(d) = MvccStore::decode(&mut Reader::new(&bad)) {
                    let _ = d.hash_kv(0);
                    let _ = d.events_at(2);
                }
            }
        }
    }

    /// Many keys with long shared prefixes (so the index splits, merges and
    /// rewrites hints) against a plain model of every version, through
    /// puts, deletes, range deletes and compactions.
    #[test]
    fn many_keys_match_a_plain_model() {
        use std::collections::BTreeMap;
        type Model = BTreeMap<Vec<u8>, Vec<(i64, Option<Vec<u8>>)>>;
        fn live_at(m: &Model, k: &[u8], rev: i64) -> bool {
            m.get(k)
                .and_then(|vs| vs.iter().rev().find(|(r, _)| *r <= rev))
                .is_some_and(|(_, v)| v.is_some())
        }
        let key = |i: u64| format!("/registry/pods/ns-{}/name-{:05}", i % 7, i).into_bytes();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut s = MvccStore::new();
        let mut m: Model = BTreeMap::new();
        for step in 0..30_000u64 {
            let r = next();
            let k = key(r % 4000);
            let rev = s.current_revision() + 1;
            match (r >> 20) % 16 {
                0 => {
                    let end = key(r % 4000 + 1 + (r >> 40) % 300);
                    let mut w = s.write();
                    let gone = w.delete_range(&k, &end);
                    w.finish();
                    let want: Vec<Vec<u8>> = m
                        .iter()
                        .filter(|(kk, _)| **kk >= k && **kk < end)
                        .filter(|(kk, _)| live_at(&m, kk, rev - 1))
                        .map(|(kk, _)| kk.clone())
                        .collect();
                    assert_eq!(
                        gone.iter().map(|kv| kv.key.to_vec()).collect::<Vec<_>>(),
                        want
                    );
                    for kk in want {
                        m.get_mut(&kk).expect("listed").push((rev, None));
                    }
                }
                1 => {
                    let mut w = s.write();
                    let gone = w.delete_range(&k, &[]);
                    w.finish();
                    assert_eq!(gone.len(), usize::from(live_at(&m, &k, rev - 1)));
                    if !gone.is_empty() {
                        m.get_mut(&k).expect("live").push((rev, None));
                    }
                }
                2 if step % 64 == 0 => {
                    let at = s.compact_revision().max(1)
                        + (r >> 30) as i64 % (s.current_revision() - s.compact_revision()).max(1);
                    if at > s.compact_revision() {
                        s.compact(at).unwrap();
                        // The model forgets what the store may drop.
                        for vs in m.values_mut() {
                            let k = vs.partition_point(|(r, _)| *r <= at);
                            if k > 0 {
                                let last_deleted = vs[k - 1].1.is_none() && vs[k - 1].0 < at;
                                vs.drain(..if last_deleted { k } else { k - 1 });
                            }
                        }
                        m.retain(|_, vs| !vs.is_empty());
                        assert_eq!(s.indexed_keys(), m.len());
                    }
                }
                _ => {
                    let v = format!("v{step}").into_bytes();
                    let mut w = s.write();
                    w.put(&Bytes::from(k.clone()), &Bytes::from(v.clone()), 0);
                    w.finish();
                    m.entry(k).or_default().push((rev, Some(v)));
                }
            }
            if step % 97 == 0 {
                let (a, b) = (key(r % 4000), key(r % 4000 + (r >> 32) % 900));
                let current = s.current_revision();
                let old = s.compact_revision().max(1)
                    + (r >> 12) as i64 % (current - s.compact_revision().max(1) + 1);
                for rev in [current, old] {
                    let want = m
                        .iter()
                        .filter(|(kk, _)| **kk >= a && **kk < b)
                        .filter(|(kk, _)| live_at(&m, kk, rev))
                        .count() as i64;
                    let got = s.range(&RangeRequest {
                        key: Bytes::from(a.clone()),
                        range_end: Bytes::from(b.clone()),
                        revision: rev,
                        limit: 3,
                        ..RangeRequest::default()
                    });
                    let got = got.unwrap();
                    assert_eq!(
                        got.count, want,
                        "count of {a:?}..{b:?} at {rev} (current {current})"
                    );
                    assert_eq!(got.kvs.len() as i64, want.min(3));
                    assert_eq!(got.more, want > 3);
                }
                assert_eq!(s.get(&a).is_some(), live_at(&m, &a, current));
            }
        }
        assert_eq!(s.indexed_keys(), m.len());
        let mut buf = BytesMut::new();
        s.encode(&mut buf);
        let hint = s.encoded_size_hint() as usize;
        assert!(
            hint >= buf.len() && hint < buf.len() * 3,
            "size hint {hint} for {}",
            buf.len()
        );
        let d = round_trip(&s);
        assert_eq!(d.encoded_size_hint(), s.encoded_size_hint());
        assert_eq!(d, s);
        assert_eq!(d.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
        s.compact(s.current_revision()).unwrap();
        let live = m
            .keys()
            .filter(|k| live_at(&m, k, s.current_revision()))
            .count();
        assert_eq!(s.indexed_keys(), live);
        assert_eq!(round_trip(&s), s);
    }

    mod incremental_encode {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Put(u8, u8),
            Delete(u8, u8),
            /// Compact to this fraction (of 256) of the way from the
            /// compaction point to the current revision.
            Compact(u8),
            /// Encode about this many more bytes.
            Step(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
                1 => (0u8..40, 0u8..8).prop_map(|(k, n)| Op::Delete(k, n)),
                1 => any::<u8>().prop_map(Op::Compact),
                3 => (1u8..40).prop_map(Op::Step),
            ]
        }

        fn key(k: u8) -> Bytes {
            Bytes::from(format!("k{k:02}"))
        }

        fn apply(s: &mut MvccStore, op: &Op) {
            match op {
                Op::Put(k, v) => {
                    let mut w = s.write();
                    w.put(&key(*k), &Bytes::from(vec![*v; 3]), 0);
                    w.finish();
                }
                Op::Delete(k, n) => {
                    let mut w = s.write();
                    w.delete_range(&key(*k), &key(k.saturating_add(*n)));
                    w.finish();
                }
                Op::Compact(f) => {
                    let (lo, hi) = (s.compact_revision(), s.current_revision());
                    let at = lo + (hi - lo) * i64::from(*f) / 255;
                    if at > lo {
                        s.compact(at).unwrap();
                    }
                }
                Op::Step(_) => {}
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 512,
                failure_persistence: Some(Box::new(
                    proptest::test_runner::FileFailurePersistence::Direct(
                        concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/mvcc_encode.txt")))),
                ..ProptestConfig::default()
            })]

            /// An encode spread over many steps, with writes and compactions
            /// in between, gives exactly the bytes an encode at its start
            /// gave; meanwhile every answer is what a store without the
            /// encode gives, and afterwards the two stores are equal.
            #[test]
            fn interleaved_encode_is_the_state_at_its_start(
                before in prop::collection::vec(op(), 0..80),
                during in prop::collection::vec(op(), 0..120),
            ) {
                let mut s = MvccStore::new();
                for o in &before {
                    apply(&mut s, o);
                }
                let mut want = BytesMut::new();
                s.encode(&mut want);
                prop_assert!(s.encoded_size_hint() as usize >= want.len(), "size hint {} < {}", s.encoded_size_hint(), want.len());
                let mut plain = s.clone();
                let mut got = BytesMut::new();
                let mut job = s.begin_encode(&mut got);
                let mut done = false;
                for o in &during {
                    apply(&mut s, o);
                    apply(&mut plain, o);
                    if let Op::Step(n) = o
                        && !done
                    {
                        done = s.encode_step(&mut job, &mut got, usize::from(*n));
                    }
                    prop_assert_eq!(s.compact_revision(), plain.compact_revision());
                    prop_assert_eq!(s.hash_kv(0), plain.hash_kv(0));
                    let rev = s.compact_revision().max(1);
                    prop_assert_eq!(s.events_at(rev), plain.events_at(rev));
                    prop_assert_eq!(
                        s.changed_revisions_after(0, 1000),
                        plain.changed_revisions_after(0, 1000)
                    );
                    let all = RangeRequest {
                        key: Bytes::from_static(b"\0"),
                        range_end: Bytes::from_static(b"\0"),
                        revision: rev,
                        ..RangeRequest::default()
                    };
                    prop_assert_eq!(s.range(&all), plain.range(&all));
                    let mut now = BytesMut::new();
                    s.encode(&mut now);
                    let mut plain_now = BytesMut::new();
                    plain.encode(&mut plain_now);
                    prop_assert_eq!(now, plain_now);
                }
                while !done {
                    done = s.encode_step(&mut job, &mut got, 3);
                }
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(&s, &plain);
                prop_assert_eq!(s.indexed_keys(), plain.indexed_keys());
                // A new encode may start once one is done.
                let mut again = BytesMut::new();
                let mut job = s.begin_encode(&mut again);
                while !s.encode_step(&mut job, &mut again, 1000) {}
                let mut direct = BytesMut::new();
                s.encode(&mut direct);
                prop_assert_eq!(again, direct);
            }
        }
    }
}
