//! The revisioned key-value store: every key keeps its versions since the last
//! compaction, so reads at any uncompacted revision, watches from the past and
//! compaction all work on memory alone. Compaction frees old versions at once
//! (nothing to defragment later).
//!
//! Writes happen through a [`Write`]: all changes of one request (a put, a
//! delete, or a whole txn) share one new revision, in the order made.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::ops::Bound;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader};
use crate::error::EtcdError;
use crate::mvcc::types::*;

/// One version of a key. `version == 0` marks a deletion (tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    mod_rev: i64,
    create_rev: i64,
    version: i64,
    lease: i64,
    value: Bytes,
}

impl Version {
    fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create_rev,
            mod_revision: self.mod_rev,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// A key's versions in revision order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct History {
    versions: Vec<Version>,
}

impl History {
    /// The version visible at `rev`, if the key exists then.
    fn at(&self, rev: i64) -> Option<&Version> {
        let k = self.versions.partition_point(|v| v.mod_rev <= rev);
        let v = self.versions.get(k.checked_sub(1)?)?;
        (!v.is_tombstone()).then_some(v)
    }

    fn latest(&self) -> Option<&Version> {
        self.versions.last().filter(|v| !v.is_tombstone())
    }

    /// The version written exactly at `rev`, and the one before it.
    fn written_at(&self, rev: i64) -> Option<(&Version, Option<&Version>)> {
        let k = self
            .versions
            .binary_search_by(|v| v.mod_rev.cmp(&rev))
            .ok()?;
        let prev = k
            .checked_sub(1)
            .and_then(|p| self.versions.get(p))
            .filter(|v| !v.is_tombstone());
        Some((&self.versions[k], prev))
    }

    /// Drops what no read at `>= rev`, and no watch from `rev`, can see:
    /// versions before the last one at or below `rev`, and that one too if it
    /// is a deletion made before `rev` (a deletion made exactly at `rev` is
    /// an event a watch from `rev` must still get). Returns whether the key
    /// has nothing left.
    fn compact(&mut self, rev: i64) -> bool {
        let k = self.versions.partition_point(|v| v.mod_rev <= rev);
        if k == 0 {
            return self.versions.is_empty();
        }
        let last = &self.versions[k - 1];
        let keep_from = if last.is_tombstone() && last.mod_rev < rev {
            k
        } else {
            k - 1
        };
        self.versions.drain(..keep_from);
        self.versions.is_empty()
    }
}

/// The keys changed at one revision, in the order they changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Changes {
    rev: i64,
    keys: Vec<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MvccStore {
    index: BTreeMap<Bytes, History>,
    current: i64,
    compacted: i64,
    /// Changes at each revision after `compacted`, oldest first.
    log: VecDeque<Changes>,
}

impl Default for MvccStore {
    fn default() -> Self {
        MvccStore::new()
    }
}

/// How a range may be walked: which keys, in which order.
fn scan<'a>(
    index: &'a BTreeMap<Bytes, History>,
    range: &KeyRange<'_>,
    reverse: bool,
) -> Box<dyn Iterator<Item = (&'a Bytes, &'a History)> + 'a> {
    let (lo, hi): (Bound<&[u8]>, Bound<&[u8]>) = match range {
        KeyRange::Single(k) => (Bound::Included(k), Bound::Included(k)),
        KeyRange::Span { start, end } => {
            if end.is_some_and(|e| e <= *start) {
                return Box::new(std::iter::empty());
            }
            (
                Bound::Included(start),
                end.map_or(Bound::Unbounded, Bound::Excluded),
            )
        }
    };
    let it = index.range::<[u8], _>((lo, hi));
    if reverse {
        Box::new(it.rev())
    } else {
        Box::new(it)
    }
}

/// Orders key-values for a sort target; ties break by key so results are deterministic.
fn sort_key_cmp(target: SortTarget, a: &KeyValue, b: &KeyValue) -> std::cmp::Ordering {
    let primary = match target {
        SortTarget::Key => std::cmp::Ordering::Equal,
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    primary.then_with(|| a.key.cmp(&b.key))
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
        let c = sort_key_cmp(self.target, &self.kv, &o.kv);
        if self.descend { c.reverse() } else { c }
    }
}

impl MvccStore {
    pub fn new() -> MvccStore {
        MvccStore {
            index: BTreeMap::new(),
            current: 1,
            compacted: 0,
            log: VecDeque::new(),
        }
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

    /// The key-value of `key` at the current revision.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        let (k, h) = self.index.get_key_value(key)?;
        h.latest().map(|v| v.to_kv(k))
    }

    /// A range read, as etcd's `Range` with its filters, sort and limit, but
    /// never holding more than `limit + 1` key-values when a limit is given.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        let rev = self.check_read_revision(req.revision)?;
        Ok(self.range_at(req, rev, self.current))
    }

    /// The range at read revision `rev`; `header_rev` is reported as etcd does
    /// (the store's revision, not the read revision).
    fn range_at(&self, req: &RangeRequest, rev: i64, header_rev: i64) -> RangeResponse {
        let range = KeyRange::new(&req.key, &req.range_end);
        let passes = |kv: &KeyValue| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
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

        let mut count: i64 = 0;
        let mut matched: usize = 0;
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
        for (k, h) in scan(&self.index, &range, reverse) {
            let Some(v) = h.at(rev) else { continue };
            count += 1;
            if req.count_only {
                continue;
            }
            // Filters look at revisions only: build the value only when kept.
            let probe = KeyValue {
                key: Bytes::new(),
                create_revision: v.create_rev,
                mod_revision: v.mod_rev,
                version: v.version,
                value: Bytes::new(),
                lease: v.lease,
            };
            if !passes(&probe) {
                continue;
            }
            matched += 1;
            if by_key {
                if limit.is_none_or(|l| kvs.len() < l) {
                    kvs.push(v.to_kv(k));
                }
            } else {
                let r = Ranked {
                    kv: v.to_kv(k),
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
        if !by_key {
            kvs = heap.into_sorted_vec().into_iter().map(|r| r.kv).collect();
        }
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
        for (k, h) in scan(&self.index, &range, false) {
            let Some(v) = h.latest() else { continue };
            any = true;
            if !compare_kv(c, &v.to_kv(k)) {
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
        let rev = self.current + 1;
        Write {
            store: self,
            rev,
            changed: Vec::new(),
        }
    }

    /// The events of revision `rev` (empty if it is compacted or has none),
    /// with previous key-values where still retained.
    pub fn events_at(&self, rev: i64) -> Vec<Event> {
        let Some(first) = self.log.front() else {
            return Vec::new();
        };
        if rev < first.rev {
            return Vec::new();
        }
        // Revisions in the log are dense except where a write changed nothing.
        let k = self.log.partition_point(|c| c.rev < rev);
        let Some(ch) = self.log.get(k).filter(|c| c.rev == rev) else {
            return Vec::new();
        };
        ch.keys
            .iter()
            .filter_map(|key| {
                let (key, h) = self.index.get_key_value(key)?;
                let (v, prev) = h.written_at(rev)?;
                Some(event_of(key, v, prev))
            })
            .collect()
    }

    /// The revisions after `after` that have changes, oldest first (for watch catch-up).
    pub fn changed_revisions_after(&self, after: i64, max: usize) -> Vec<i64> {
        let k = self.log.partition_point(|c| c.rev <= after);
        self.log.iter().skip(k).take(max).map(|c| c.rev).collect()
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
        // Only keys changed since the last compaction can hold anything to
        // drop: those in the log up to and including `rev`. Entries before
        // `rev` leave the log; the one at `rev` stays for watches from `rev`.
        let mut visit: Vec<Bytes> = Vec::new();
        while self.log.front().is_some_and(|c| c.rev < rev) {
            visit.extend(self.log.pop_front().expect("checked non-empty").keys);
        }
        if let Some(at) = self.log.front().filter(|c| c.rev == rev) {
            visit.extend(at.keys.iter().cloned());
        }
        for key in visit {
            if let Some(h) = self.index.get_mut(&key)
                && h.compact(rev)
            {
                self.index.remove(&key);
            }
        }
        self.compacted = rev;
        Ok(())
    }

    /// A digest of every retained version up to `rev`, equal on members that
    /// applied the same writes (etcd's HashKV; the value differs from etcd's).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), EtcdError> {
        let rev = self.check_read_revision(rev)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&self.compacted.to_le_bytes());
        for (k, hist) in &self.index {
            for v in hist.versions.iter().filter(|v| v.mod_rev <= rev) {
                h.update(&(k.len() as u64).to_le_bytes());
                h.update(k);
                for n in [
                    v.mod_rev,
                    v.create_rev,
                    v.version,
                    v.lease,
                    v.value.len() as i64,
                ] {
                    h.update(&n.to_le_bytes());
                }
                h.update(&v.value);
            }
        }
        Ok((h.finalize(), rev))
    }

    const SNAPSHOT_VERSION: u8 = 1;

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(Self::SNAPSHOT_VERSION);
        buf.put_i64_le(self.current);
        buf.put_i64_le(self.compacted);
        codec::put_uvarint(buf, self.index.len() as u64);
        for (k, h) in &self.index {
            codec::put_bytes(buf, k);
            codec::put_uvarint(buf, h.versions.len() as u64);
            for v in &h.versions {
                buf.put_i64_le(v.mod_rev);
                buf.put_i64_le(v.create_rev);
                buf.put_i64_le(v.version);
                buf.put_i64_le(v.lease);
                codec::put_bytes(buf, &v.value);
            }
        }
        codec::put_uvarint(buf, self.log.len() as u64);
        for c in &self.log {
            buf.put_i64_le(c.rev);
            codec::put_uvarint(buf, c.keys.len() as u64);
            for k in &c.keys {
                codec::put_bytes(buf, k);
            }
        }
    }

    /// Decodes a store and checks its invariants; never panics on bad input.
    pub fn decode(r: &mut Reader<'_>) -> Result<MvccStore, DecodeError> {
        let v = r.u8()?;
        if v != Self::SNAPSHOT_VERSION {
            return Err(DecodeError::BadTag(v));
        }
        let current = r.u64_le()? as i64;
        let compacted = r.u64_le()? as i64;
        let mut index = BTreeMap::new();
        let n = r.count(2)?;
        let mut prev_key: Option<Bytes> = None;
        for _ in 0..n {
            let k = Bytes::copy_from_slice(r.bytes()?);
            if prev_key.as_ref().is_some_and(|p| *p >= k) {
                return Err(DecodeError::BadLength(0));
            }
            let nv = r.count(33)?;
            let mut versions = Vec::with_capacity(nv);
            for _ in 0..nv {
                let mod_rev = r.u64_le()? as i64;
                let create_rev = r.u64_le()? as i64;
                let version = r.u64_le()? as i64;
                let lease = r.u64_le()? as i64;
                let value = Bytes::copy_from_slice(r.bytes()?);
                if versions
                    .last()
                    .is_some_and(|p: &Version| p.mod_rev >= mod_rev)
                    || mod_rev > current
                {
                    return Err(DecodeError::BadLength(0));
                }
                versions.push(Version {
                    mod_rev,
                    create_rev,
                    version,
                    lease,
                    value,
                });
            }
            prev_key = Some(k.clone());
            index.insert(k, History { versions });
        }
        let nlog = r.count(9)?;
        let mut log = VecDeque::with_capacity(nlog);
        for _ in 0..nlog {
            let rev = r.u64_le()? as i64;
            let nk = r.count(1)?;
            let mut keys = Vec::with_capacity(nk);
            for _ in 0..nk {
                keys.push(Bytes::copy_from_slice(r.bytes()?));
            }
            log.push_back(Changes { rev, keys });
        }
        if current < 1 || compacted < 0 || compacted > current {
            return Err(DecodeError::BadLength(0));
        }
        Ok(MvccStore {
            index,
            current,
            compacted,
            log,
        })
    }
}

fn event_of(key: &Bytes, v: &Version, prev: Option<&Version>) -> Event {
    if v.is_tombstone() {
        Event {
            kind: EventType::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: v.mod_rev,
                ..KeyValue::default()
            },
            prev_kv: prev.map(|p| p.to_kv(key)),
        }
    } else {
        Event {
            kind: EventType::Put,
            kv: v.to_kv(key),
            prev_kv: prev.map(|p| p.to_kv(key)),
        }
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
    changed: Vec<Bytes>,
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

    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        let (k, h) = self.store.index.get_key_value(key)?;
        h.at(self.read_revision()).map(|v| v.to_kv(k))
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
        Ok(self.store.range_at(req, rev, read))
    }

    /// Sets `key`; returns the previous key-value, if it existed.
    pub fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Option<KeyValue> {
        let rev = self.rev;
        let h = self.store.index.entry(key.clone()).or_default();
        let prev = h.latest().cloned();
        debug_assert!(
            h.versions.last().is_none_or(|v| v.mod_rev < rev),
            "key changed twice in one revision"
        );
        let (create_rev, version) = match &prev {
            Some(p) => (p.create_rev, p.version + 1),
            None => (rev, 1),
        };
        h.versions.push(Version {
            mod_rev: rev,
            create_rev,
            version,
            lease,
            value,
        });
        self.changed.push(key.clone());
        prev.map(|p| p.to_kv(&key))
    }

    /// Deletes every live key in the range; returns their last key-values.
    pub fn delete_range(&mut self, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        let rev = self.rev;
        let range = KeyRange::new(key, range_end);
        let victims: Vec<Bytes> = scan(&self.store.index, &range, false)
            .filter(|(_, h)| h.latest().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(victims.len());
        for k in victims {
            let h = self
                .store
                .index
                .get_mut(&k)
                .expect("collected from the index");
            let prev = h.latest().expect("filtered live").to_kv(&k);
            h.versions.push(Version {
                mod_rev: rev,
                create_rev: 0,
                version: 0,
                lease: 0,
                value: Bytes::new(),
            });
            self.changed.push(k);
            out.push(prev);
        }
        out
    }

    /// Commits: the store moves to this revision if anything changed. Returns
    /// the events in the order the changes were made.
    pub fn finish(self) -> Vec<Event> {
        if self.changed.is_empty() {
            return Vec::new();
        }
        let rev = self.rev;
        let events: Vec<Event> = self
            .changed
            .iter()
            .map(|k| {
                let (key, h) = self
                    .store
                    .index
                    .get_key_value(k)
                    .expect("changed key is indexed");
                let (v, prev) = h.written_at(rev).expect("written at this revision");
                event_of(key, v, prev)
            })
            .collect();
        self.store.current = rev;
        self.store.log.push_back(Changes {
            rev,
            keys: self.changed,
        });
        events
    }
}
