//! An obviously correct model of etcd's state machine, for tests and the
//! simulator's history checks: every version of every key is kept, every read
//! is answered by brute force (filter, sort, truncate), and compaction only
//! moves the point below which reads are refused. It shares no code with the
//! real store except the request types and `compare_kv`'s six-line table.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::error::EtcdError;
use crate::mvcc::store::compare_kv;
use crate::mvcc::types::*;
use crate::request::{Request, Response};

#[derive(Clone, Debug, Default)]
pub struct EtcdModel {
    rev: i64,
    compacted: i64,
    /// (store revision when applied, compaction revision), in log order.
    compactions: Vec<(i64, i64)>,
    /// key → (revision, key-value or deletion), in revision order.
    keys: BTreeMap<Bytes, Vec<(i64, Option<KeyValue>)>>,
    leases: BTreeMap<i64, BTreeSet<Bytes>>,
    /// Renew epochs, counted as the real lessor counts them.
    epochs: BTreeMap<i64, u64>,
    lease_ttls: BTreeMap<i64, i64>,
    min_lease_ttl_secs: i64,
    /// revision → events, in order.
    events: BTreeMap<i64, Vec<Event>>,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    KeyRange::new(key, end).contains(k)
}

impl EtcdModel {
    pub fn new(min_lease_ttl_secs: i64) -> EtcdModel {
        EtcdModel {
            rev: 1,
            min_lease_ttl_secs,
            ..EtcdModel::default()
        }
    }

    pub fn revision(&self) -> i64 {
        self.rev
    }

    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    pub fn events(&self) -> &BTreeMap<i64, Vec<Event>> {
        &self.events
    }

    pub fn lease_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.keys().copied()
    }

    pub fn lease_keys(&self, id: i64) -> Option<&BTreeSet<Bytes>> {
        self.leases.get(&id)
    }

    /// The compaction revision in force before and after everything applied
    /// while the store was at revision `h` (a read with header `h` may have
    /// seen either).
    pub fn compacted_around(&self, h: i64) -> (i64, i64) {
        let before = self
            .compactions
            .iter()
            .filter(|(at, _)| *at < h)
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        let after = self
            .compactions
            .iter()
            .filter(|(at, _)| *at <= h)
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        (before, after)
    }

    pub fn at(&self, k: &[u8], rev: i64) -> Option<KeyValue> {
        self.keys
            .get(k)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .and_then(|(_, kv)| kv.clone())
    }

    fn live_in(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.keys
            .keys()
            .filter(|k| in_range(k, key, end))
            .filter_map(|k| self.at(k, rev))
            .collect()
    }

    /// A range answered with the store at revision `current`, compaction at `compacted`.
    pub fn range_with(
        &self,
        r: &RangeRequest,
        current: i64,
        compacted: i64,
    ) -> Result<RangeResponse, EtcdError> {
        if r.revision > current {
            return Err(EtcdError::FutureRev);
        }
        let rev = if r.revision <= 0 { current } else { r.revision };
        if rev < compacted {
            return Err(EtcdError::Compacted);
        }
        let all = self.live_in(&r.key, &r.range_end, rev);
        let count = all.len() as i64;
        if r.count_only {
            return Ok(RangeResponse {
                revision: current,
                kvs: vec![],
                more: false,
                count,
            });
        }
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            .filter(|kv| r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            .filter(|kv| r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            .filter(|kv| r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
            .collect();
        let order = match (r.sort_order, r.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (o, _) => o,
        };
        let sort_key = |kv: &KeyValue| -> (Vec<u8>, Bytes) {
            let primary = match r.sort_target {
                SortTarget::Key => vec![],
                SortTarget::Version => kv.version.to_be_bytes().to_vec(),
                SortTarget::Create => kv.create_revision.to_be_bytes().to_vec(),
                SortTarget::Mod => kv.mod_revision.to_be_bytes().to_vec(),
                SortTarget::Value => kv.value.to_vec(),
            };
            (primary, kv.key.clone())
        };
        let filtered = r.max_mod_revision != 0
            || r.min_mod_revision != 0
            || r.max_create_revision != 0
            || r.min_create_revision != 0;
        if r.sort_order == SortOrder::None
            && r.sort_target != SortTarget::Key
            && !filtered
            && r.limit > 0
        {
            // etcd fetches `limit + 1` keys in key order before it sorts.
            kvs.truncate(r.limit as usize + 1);
        }
        if order != SortOrder::None {
            if r.sort_target == SortTarget::Key {
                kvs.sort_by_key(sort_key);
                if order == SortOrder::Descend {
                    kvs.reverse();
                }
            } else if order == SortOrder::Descend {
                // Ties stay in ascending key order (etcd's insertion sort).
                kvs.sort_by(|a, b| {
                    sort_key(b)
                        .0
                        .cmp(&sort_key(a).0)
                        .then_with(|| a.key.cmp(&b.key))
                });
            } else {
                kvs.sort_by_key(sort_key);
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        Ok(RangeResponse {
            revision: current,
            kvs,
            more,
            count,
        })
    }

    fn compare_at(&self, c: &Compare, rev: i64) -> bool {
        let kvs = self.live_in(&c.key, &c.range_end, rev);
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    fn path_at(&self, t: &TxnRequest, rev: i64, out: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare_at(c, rev));
        out.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(inner) = op {
                self.path_at(inner, rev, out);
            }
        }
    }

    /// etcd checks every put on the taken path first, then every range.
    fn check_ops(
        &self,
        t: &TxnRequest,
        path: &[bool],
        current: i64,
        compacted: i64,
    ) -> Result<(), EtcdError> {
        self.check_pass(t, path, &mut 0, current, compacted, true)?;
        self.check_pass(t, path, &mut 0, current, compacted, false)
    }

    fn check_pass(
        &self,
        t: &TxnRequest,
        path: &[bool],
        i: &mut usize,
        current: i64,
        compacted: i64,
        puts: bool,
    ) -> Result<(), EtcdError> {
        let ok = path[*i];
        *i += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(_) | RequestOp::Range(_)
                    if puts != matches!(op, RequestOp::Put(_)) => {}
                RequestOp::Put(p) => {
                    if (p.ignore_value || p.ignore_lease) && self.at(&p.key, current).is_none() {
                        return Err(EtcdError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(EtcdError::LeaseNotFound);
                    }
                }
                RequestOp::Range(r) => {
                    if r.revision > current {
                        return Err(EtcdError::FutureRev);
                    }
                    if r.revision != 0 && r.revision < compacted {
                        return Err(EtcdError::Compacted);
                    }
                }
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(inner) => {
                    self.check_pass(inner, path, i, current, compacted, puts)?
                }
            }
        }
        Ok(())
    }

    /// A read answered by a member whose store was at revision `h`, with
    /// compaction at `compacted` (see `compacted_around`).
    pub fn read_at(&self, req: &Request, h: i64, compacted: i64) -> Response {
        match req {
            Request::Range(r) => match self.range_with(r, h, compacted) {
                Ok(rr) => Response::Range(rr),
                Err(e) => Response::Error(e),
            },
            Request::Txn(t) if !t.has_writes() => {
                let mut path = vec![];
                self.path_at(t, h, &mut path);
                if let Err(e) = self.check_ops(t, &path, h, compacted) {
                    return Response::Error(e);
                }
                let mut cursor = 0;
                let mut resp = self.read_txn(t, &path, &mut cursor, h, compacted);
                resp.revision = h;
                Response::Txn(resp)
            }
            other => panic!("the model reads only ranges and read-only txns, not {other:?}"),
        }
    }

    fn read_txn(
        &self,
        t: &TxnRequest,
        path: &[bool],
        i: &mut usize,
        h: i64,
        compacted: i64,
    ) -> TxnResponse {
        let ok = path[*i];
        *i += 1;
        let mut responses = vec![];
        for op in if ok { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => {
                    ResponseOp::Range(self.range_with(r, h, compacted).unwrap_or_default())
                }
                RequestOp::Txn(inner) => {
                    let mut r = self.read_txn(inner, path, i, h, compacted);
                    r.revision = h;
                    ResponseOp::Txn(r)
                }
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => unreachable!("read-only txn"),
            });
        }
        TxnResponse {
            revision: 0,
            succeeded: ok,
            responses,
        }
    }

    /// Applies one request from the log, as every member must.
    pub fn apply(&mut self, req: &Request) -> Response {
        match req {
            Request::Range(_) => self.read_at(req, self.rev, self.compacted),
            Request::Txn(t) if !t.has_writes() => self.read_at(req, self.rev, self.compacted),
            Request::Put(p) => {
                let t = TxnRequest {
                    compare: vec![],
                    success: vec![RequestOp::Put(p.clone())],
                    failure: vec![],
                };
                // Alone, a put's lease is checked before its key.
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Response::Error(EtcdError::LeaseNotFound);
                }
                if let Err(e) = self.check_ops(&t, &[true], self.rev, self.compacted) {
                    return Response::Error(e);
                }
                let mut w = ModelWrite::new(self);
                let resp = w.put(p);
                w.finish();
                Response::Put(resp)
            }
            Request::DeleteRange(d) => {
                let mut w = ModelWrite::new(self);
                let prev = w.delete(&d.key, &d.range_end);
                let revision = w.read_rev();
                w.finish();
                Response::DeleteRange(DeleteRangeResponse {
                    revision,
                    deleted: prev.len() as i64,
                    prev_kvs: if d.prev_kv { prev } else { vec![] },
                })
            }
            Request::Txn(t) => {
                let mut path = vec![];
                self.path_at(t, self.rev, &mut path);
                if let Err(e) = self.check_ops(t, &path, self.rev, self.compacted) {
                    return Response::Error(e);
                }
                let mut w = ModelWrite::new(self);
                let mut resp = w.txn(t, &path, &mut 0);
                resp.revision = w.finish();
                Response::Txn(resp)
            }
            Request::Compact { revision, .. } => {
                if *revision <= self.compacted {
                    return Response::Error(EtcdError::Compacted);
                }
                if *revision > self.rev {
                    return Response::Error(EtcdError::FutureRev);
                }
                self.compacted = *revision;
                self.compactions.push((self.rev, *revision));
                Response::Compact { revision: self.rev }
            }
            Request::LeaseGrant { id, ttl } => {
                if self.leases.contains_key(id) {
                    return Response::Error(EtcdError::LeaseExist);
                }
                if *ttl > crate::lease::MAX_LEASE_TTL_SECS {
                    return Response::Error(EtcdError::LeaseTtlTooLarge);
                }
                let ttl = (*ttl).max(self.min_lease_ttl_secs);
                self.leases.insert(*id, BTreeSet::new());
                self.epochs.insert(*id, 0);
                self.lease_ttls.insert(*id, ttl);
                Response::LeaseGrant {
                    id: *id,
                    ttl,
                    revision: self.rev,
                }
            }
            Request::LeaseRevoke { id } | Request::LeaseExpire { id, .. } => {
                let expire = if let Request::LeaseExpire { epoch, .. } = req {
                    Some(*epoch)
                } else {
                    None
                };
                if !self.leases.contains_key(id) {
                    return Response::Error(EtcdError::LeaseNotFound);
                }
                if expire.is_some_and(|e| self.epochs.get(id) != Some(&e)) {
                    return Response::Internal;
                }
                let keys = self.leases.remove(id).expect("checked");
                self.epochs.remove(id);
                self.lease_ttls.remove(id);
                let mut w = ModelWrite::new(self);
                for k in keys {
                    w.delete(&k, &[]);
                }
                let revision = w.finish();
                if expire.is_some() {
                    Response::Internal
                } else {
                    Response::LeaseRevoke { revision }
                }
            }
            Request::LeaseRenew { id } => {
                let Some(e) = self.epochs.get_mut(id) else {
                    return Response::Error(EtcdError::LeaseNotFound);
                };
                *e += 1;
                Response::LeaseRenew {
                    id: *id,
                    ttl: self.lease_ttls[id],
                    revision: self.rev,
                }
            }
            Request::LeaseCheckpoint(_) => Response::Internal,
            other => panic!("not a log request: {other:?}"),
        }
    }
}

/// One request being applied at revision `rev`.
struct ModelWrite<'a> {
    m: &'a mut EtcdModel,
    rev: i64,
    events: Vec<Event>,
}

impl<'a> ModelWrite<'a> {
    fn new(m: &'a mut EtcdModel) -> ModelWrite<'a> {
        let rev = m.rev + 1;
        ModelWrite {
            m,
            rev,
            events: vec![],
        }
    }

    fn read_rev(&self) -> i64 {
        if self.events.is_empty() {
            self.rev - 1
        } else {
            self.rev
        }
    }

    fn put(&mut self, p: &PutRequest) -> PutResponse {
        let prev = self.m.at(&p.key, self.read_rev());
        let value = if p.ignore_value {
            prev.as_ref().map(|k| k.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.as_ref().map_or(0, |k| k.lease)
        } else {
            p.lease
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(self.rev, |k| k.create_revision),
            mod_revision: self.rev,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value,
            lease,
        };
        if let Some(old) = prev.as_ref().filter(|o| o.lease != 0)
            && let Some(s) = self.m.leases.get_mut(&old.lease)
        {
            s.remove(&p.key);
        }
        if let Some(s) = self.m.leases.get_mut(&lease) {
            s.insert(p.key.clone());
        }
        self.m
            .keys
            .entry(p.key.clone())
            .or_default()
            .push((self.rev, Some(kv.clone())));
        self.events.push(Event {
            kind: EventType::Put,
            kv,
            prev_kv: prev.clone(),
        });
        PutResponse {
            revision: self.rev,
            prev_kv: if p.prev_kv { prev } else { None },
        }
    }

    fn delete(&mut self, key: &[u8], end: &[u8]) -> Vec<KeyValue> {
        let victims = self.m.live_in(key, end, self.read_rev());
        for kv in &victims {
            if let Some(s) = self.m.leases.get_mut(&kv.lease) {
                s.remove(&kv.key);
            }
            self.m
                .keys
                .get_mut(&kv.key)
                .expect("live key")
                .push((self.rev, None));
            self.events.push(Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    key: kv.key.clone(),
                    mod_revision: self.rev,
                    ..KeyValue::default()
                },
                prev_kv: Some(kv.clone()),
            });
        }
        victims
    }

    fn txn(&mut self, t: &TxnRequest, path: &[bool], i: &mut usize) -> TxnResponse {
        let ok = path[*i];
        *i += 1;
        let mut responses = vec![];
        for op in if ok { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let rr = self.read_rev();
                    let compacted = self.m.compacted;
                    ResponseOp::Range(self.m.range_with(r, rr, compacted).unwrap_or_default())
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)),
                RequestOp::DeleteRange(d) => {
                    let prev = self.delete(&d.key, &d.range_end);
                    ResponseOp::DeleteRange(DeleteRangeResponse {
                        revision: self.read_rev(),
                        deleted: prev.len() as i64,
                        prev_kvs: if d.prev_kv { prev } else { vec![] },
                    })
                }
                RequestOp::Txn(inner) => {
                    let mut r = self.txn(inner, path, i);
                    r.revision = self.read_rev();
                    ResponseOp::Txn(r)
                }
            });
        }
        TxnResponse {
            revision: 0,
            succeeded: ok,
            responses,
        }
    }

    fn finish(self) -> i64 {
        if !self.events.is_empty() {
            self.m.rev = self.rev;
            self.m.events.insert(self.rev, self.events);
        }
        self.m.rev
    }
}
