//! The etcd state machine: the MVCC store and the lease table, applied from
//! committed log entries. Every member applies the same entries to the same
//! state and gets the same responses; only the leader's lease clock is local.

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth::AuthStore;
use crate::cluster::ClusterInfo;
use crate::codec::{self, DecodeError, Reader};
use crate::error::EtcdError;
use crate::lease::{LeaseProposal, LeaseTiming, Lessor};
use crate::mvcc::store::{EncodeJob, MvccStore, Write};
use crate::mvcc::types::*;
use crate::node::{PREFETCH_AHEAD, StateMachine};
use crate::raft::ConfChange;
use crate::request::{
    self, AlarmAction, AlarmKind, ApiLimits, AuthRequest, AuthResponse, Request, Response,
};
use crate::types::LogIndex;
use crate::watch::{WatchLimits, WatchRegistry, WatchResponse};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    pub tick_ms: u64,
    pub election_timeout_ticks: u32,
    pub limits: ApiLimits,
    pub watch_limits: WatchLimits,
    /// This cluster's ID (the server derives it from the initial cluster).
    pub cluster_id: u64,
    /// Record each revision's events in `Notification::Committed` (for the
    /// simulator's history checks and, later, watches).
    pub observe_events: bool,
}

impl EtcdConfig {
    pub fn new(tick_ms: u64, election_timeout_ticks: u32) -> EtcdConfig {
        EtcdConfig {
            tick_ms,
            election_timeout_ticks,
            limits: ApiLimits::default(),
            watch_limits: WatchLimits::default(),
            cluster_id: 0,
            observe_events: false,
        }
    }
}

/// What the state machine tells its driver besides replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// The events of one revision, in order, as applied at log `index`.
    Committed {
        index: LogIndex,
        revision: i64,
        events: Vec<Event>,
    },
    /// A response for a client's watch stream.
    Watch(WatchResponse),
}

#[derive(Clone, Debug)]
pub struct EtcdState {
    cfg: EtcdConfig,
    timing: LeaseTiming,
    mvcc: MvccStore,
    lessor: Lessor,
    auth: AuthStore,
    cluster: ClusterInfo,
    /// Raised alarms (member, kind), replicated as etcd's alarm store is.
    alarms: std::collections::BTreeSet<(u64, AlarmKind)>,
    /// Local to this member: never replicated, never in a snapshot.
    watches: WatchRegistry,
    now_ticks: u64,
    notifications: Vec<Notification>,
    /// A snapshot being encoded a few keys at a time (`begin_snapshot`).
    snapshot_job: Option<SnapshotJob>,
    /// A snapshot for a client (Maintenance.Snapshot) under way, and the
    /// store revision it is of.
    client_snapshot: Option<(SnapshotJob, i64)>,
}

/// A snapshot in progress: the store's part so far, and the rest (leases,
/// auth, membership), encoded whole at the start.
#[derive(Clone, Debug)]
struct SnapshotJob {
    mvcc: EncodeJob,
    buf: BytesMut,
    rest: Bytes,
}

impl Default for EtcdState {
    /// 100 ms ticks and a 10-tick election timeout (etcd's defaults).
    fn default() -> Self {
        EtcdState::new(EtcdConfig::new(100, 10))
    }
}

impl EtcdState {
    pub fn new(cfg: EtcdConfig) -> EtcdState {
        EtcdState {
            timing: LeaseTiming::new(cfg.tick_ms, cfg.election_timeout_ticks),
            cfg,
            mvcc: MvccStore::new(),
            lessor: Lessor::new(),
            auth: AuthStore::new(),
            cluster: ClusterInfo {
                cluster_id: cfg.cluster_id,
                members: Default::default(),
            },
            alarms: Default::default(),
            watches: WatchRegistry::new(cfg.watch_limits),
            now_ticks: 0,
            notifications: Vec::new(),
            snapshot_job: None,
            client_snapshot: None,
        }
    }

    pub fn mvcc(&self) -> &MvccStore {
        &self.mvcc
    }

    /// The snapshot after the key-value store: leases, auth, membership.
    fn snapshot_rest(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.lessor.encode(&mut buf);
        codec::put_bytes(&mut buf, &self.auth.snapshot());
        self.cluster.encode(&mut buf);
        codec::put_uvarint(&mut buf, self.alarms.len() as u64);
        for (m, k) in &self.alarms {
            buf.put_u64_le(*m);
            buf.put_u8(*k as u8);
        }
        buf.freeze()
    }

    pub fn lessor(&self) -> &Lessor {
        &self.lessor
    }

    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    pub fn cluster(&self) -> &ClusterInfo {
        &self.cluster
    }

    /// The alarms raised, as (member, kind).
    pub fn alarms(&self) -> impl Iterator<Item = (u64, AlarmKind)> + '_ {
        self.alarms.iter().copied()
    }

    /// Whether a NOSPACE alarm holds writes that take space (etcd's capped
    /// applier).
    fn capped(&self) -> bool {
        self.alarms.iter().any(|(_, k)| *k == AlarmKind::NoSpace)
    }

    fn apply_alarm(&mut self, action: AlarmAction, member: u64, kind: AlarmKind) -> Response {
        let alarms = match action {
            AlarmAction::Get => self
                .alarms
                .iter()
                .copied()
                .filter(|(_, k)| kind == AlarmKind::None || *k == kind)
                .collect(),
            AlarmAction::Activate if kind == AlarmKind::None => Vec::new(),
            AlarmAction::Activate => {
                self.alarms.insert((member, kind));
                vec![(member, kind)]
            }
            AlarmAction::Deactivate => {
                if self.alarms.remove(&(member, kind)) {
                    vec![(member, kind)]
                } else {
                    Vec::new()
                }
            }
        };
        Response::Alarms {
            alarms,
            revision: self.header_rev(),
        }
    }

    pub fn watches(&self) -> &WatchRegistry {
        &self.watches
    }

    pub fn timing(&self) -> &LeaseTiming {
        &self.timing
    }

    fn header_rev(&self) -> i64 {
        self.mvcc.current_revision()
    }

    /// Whether a write's events have anyone to go to: a watcher, or the
    /// driver observing them.
    fn wants_events(&self) -> bool {
        self.cfg.observe_events || self.watches.watchers() > 0
    }

    /// Records a finished write's events; returns the store revision.
    fn record(&mut self, index: LogIndex, events: Vec<Event>) -> i64 {
        let rev = self.mvcc.current_revision();
        if events.is_empty() {
            return rev;
        }
        self.watches.on_commit(rev, &events);
        if self.cfg.observe_events {
            self.notifications.push(Notification::Committed {
                index,
                revision: rev,
                events,
            });
        }
        rev
    }

    fn apply_put(&mut self, index: LogIndex, p: &PutRequest) -> Response {
        // A put on its own checks its lease before its key (etcd's `Put`);
        // inside a txn the key comes first (`checkRequestPut`).
        if p.lease != 0 && !self.lessor.contains(p.lease) {
            return Response::Error(EtcdError::LeaseNotFound);
        }
        if let Err(e) = check_put(&self.mvcc, &self.lessor, p) {
            return Response::Error(e);
        }
        let events = self.wants_events();
        let mut w = self.mvcc.write_with(events);
        let resp = put_in(&mut w, &mut self.lessor, p);
        {
            let events = w.finish();
            self.record(index, events)
        };
        Response::Put(resp)
    }

    fn apply_delete(&mut self, index: LogIndex, d: &DeleteRangeRequest) -> Response {
        let events = self.wants_events();
        let mut w = self.mvcc.write_with(events);
        let resp = delete_in(&mut w, &mut self.lessor, d);
        {
            let events = w.finish();
            self.record(index, events)
        };
        Response::DeleteRange(resp)
    }

    fn apply_txn(&mut self, index: LogIndex, t: &TxnRequest) -> Response {
        // Every compare, nested ones too, sees the state before the txn.
        let path = compare_path(&self.mvcc, t);
        if let Err(e) = check_txn_ops(&self.lessor, &self.mvcc, t, &path) {
            return Response::Error(e);
        }
        let events = self.wants_events();
        let mut w = self.mvcc.write_with(events);
        let mut cursor = 0;
        let mut resp = txn_in(&mut w, &mut self.lessor, t, &path, &mut cursor);
        let rev = {
            let events = w.finish();
            self.record(index, events)
        };
        resp.revision = rev;
        Response::Txn(resp)
    }

    /// Revokes a lease: its keys go in one revision.
    fn apply_revoke(&mut self, index: LogIndex, id: i64, epoch: Option<u64>) -> Response {
        match self.lessor.revoke(id, epoch) {
            Err(e) => Response::Error(e),
            Ok(None) => Response::Internal,
            Ok(Some(keys)) => {
                let events = self.wants_events();
                let mut w = self.mvcc.write_with(events);
                for k in keys {
                    w.delete_range(&k, &[]);
                }
                let rev = {
                    let events = w.finish();
                    self.record(index, events)
                };
                if epoch.is_some() {
                    Response::Internal
                } else {
                    Response::LeaseRevoke { revision: rev }
                }
            }
        }
    }

    fn apply_auth(&mut self, a: &AuthRequest) -> Response {
        let a_ = &mut self.auth;
        let result = match a {
            AuthRequest::Enable => a_.auth_enable(),
            AuthRequest::Disable => {
                a_.auth_disable();
                Ok(())
            }
            AuthRequest::UserAdd {
                name,
                password_hash,
                no_password,
            } => a_.user_add(name, password_hash.clone(), *no_password),
            AuthRequest::UserDelete { name } => a_.user_delete(name),
            AuthRequest::UserChangePassword {
                name,
                password_hash,
            } => a_.user_change_password(name, password_hash.clone()),
            AuthRequest::UserGrantRole { user, role } => a_.user_grant_role(user, role),
            AuthRequest::UserRevokeRole { user, role } => a_.user_revoke_role(user, role),
            AuthRequest::RoleAdd { name } => a_.role_add(name),
            AuthRequest::RoleDelete { name } => a_.role_delete(name),
            AuthRequest::RoleGrantPermission { name, perm } => {
                a_.role_grant_permission(name, perm.clone())
            }
            AuthRequest::RoleRevokePermission {
                name,
                key,
                range_end,
            } => a_.role_revoke_permission(name, key, range_end),
            AuthRequest::Status
            | AuthRequest::UserGet { .. }
            | AuthRequest::UserList
            | AuthRequest::RoleGet { .. }
            | AuthRequest::RoleList => return self.read_auth(a),
        };
        match result {
            Ok(()) => Response::Auth {
                resp: AuthResponse::Done,
                revision: self.header_rev(),
            },
            Err(e) => Response::Error(EtcdError::Auth(e)),
        }
    }

    fn read_auth(&self, a: &AuthRequest) -> Response {
        let rev = self.header_rev();
        let ok = |resp| Response::Auth {
            resp,
            revision: rev,
        };
        match a {
            AuthRequest::Status => ok(AuthResponse::Status {
                enabled: self.auth.is_enabled(),
                auth_revision: self.auth.revision().0,
            }),
            AuthRequest::UserGet { name } => match self.auth.user_get(name) {
                Ok(roles) => ok(AuthResponse::User { roles }),
                Err(e) => Response::Error(EtcdError::Auth(e)),
            },
            AuthRequest::UserList => ok(AuthResponse::Users {
                names: self.auth.user_list(),
            }),
            AuthRequest::RoleGet { name } => match self.auth.role_get(name) {
                Ok(perms) => ok(AuthResponse::Role { perms }),
                Err(e) => Response::Error(EtcdError::Auth(e)),
            },
            AuthRequest::RoleList => ok(AuthResponse::Roles {
                names: self.auth.role_list(),
            }),
            _ => Response::Error(EtcdError::Unhealthy),
        }
    }

    fn read_txn(&self, t: &TxnRequest) -> Response {
        if t.has_writes() {
            // Writes go through the log; a driver that sends one here is wrong,
            // but the answer is an error, not a panic.
            return Response::Error(EtcdError::Unhealthy);
        }
        let path = compare_path(&self.mvcc, t);
        if let Err(e) = check_txn_ops(&self.lessor, &self.mvcc, t, &path) {
            return Response::Error(e);
        }
        let mut cursor = 0;
        let mut resp = read_txn_in(&self.mvcc, t, &path, &mut cursor);
        resp.revision = self.header_rev();
        Response::Txn(resp)
    }
}

/// etcd's `compareToPath`: the branch taken at each txn, depth first.
fn compare_path(store: &MvccStore, t: &TxnRequest) -> Vec<bool> {
    let ok = t.compare.iter().all(|c| store.compare(c));
    let mut path = vec![ok];
    for op in if ok { &t.success } else { &t.failure } {
        if let RequestOp::Txn(inner) = op {
            path.extend(compare_path(store, inner));
        }
    }
    path
}

fn check_put(store: &MvccStore, lessor: &Lessor, p: &PutRequest) -> Result<(), EtcdError> {
    if (p.ignore_value || p.ignore_lease) && store.get(&p.key).is_none() {
        return Err(EtcdError::KeyNotFound);
    }
    if p.lease != 0 && !lessor.contains(p.lease) {
        return Err(EtcdError::LeaseNotFound);
    }
    Ok(())
}

/// etcd's `checkRequests` along the taken path, in etcd's order: first
/// every put (its key, with ignore flags, then its lease), then every range
/// (an uncompacted, past revision). A failure aborts the whole txn before
/// anything is written.
fn check_txn_ops(
    lessor: &Lessor,
    store: &MvccStore,
    t: &TxnRequest,
    path: &[bool],
) -> Result<(), EtcdError> {
    fn walk(
        lessor: &Lessor,
        store: &MvccStore,
        t: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        puts: bool,
    ) -> Result<(), EtcdError> {
        let ok = path.get(*cursor).copied().unwrap_or(false);
        *cursor += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) if puts => check_put(store, lessor, p)?,
                RequestOp::Put(_) => {}
                RequestOp::Range(_) if puts => {}
                RequestOp::Range(r) => {
                    if r.revision != 0 {
                        if r.revision > store.current_revision() {
                            return Err(EtcdError::FutureRev);
                        }
                        if r.revision < store.first_revision() {
                            return Err(EtcdError::Compacted);
                        }
                    }
                }
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(inner) => walk(lessor, store, inner, path, cursor, puts)?,
            }
        }
        Ok(())
    }
    walk(lessor, store, t, path, &mut 0, true)?;
    walk(lessor, store, t, path, &mut 0, false)
}

fn put_in(w: &mut Write<'_>, lessor: &mut Lessor, p: &PutRequest) -> PutResponse {
    let existing = if p.ignore_value || p.ignore_lease || p.prev_kv {
        w.get(&p.key)
    } else {
        None
    };
    let kept;
    let value = if p.ignore_value {
        kept = existing
            .as_ref()
            .map(|kv| kv.value.clone())
            .unwrap_or_default();
        &kept
    } else {
        &p.value
    };
    let lease = if p.ignore_lease {
        existing.as_ref().map_or(0, |kv| kv.lease)
    } else {
        p.lease
    };
    let prev = w.put(&p.key, value, lease);
    if let Some(old) = prev
        .as_ref()
        .filter(|kv| kv.lease != 0 && kv.lease != lease)
    {
        lessor.detach(old.lease, &p.key);
    }
    if lease != 0 {
        lessor.attach(lease, p.key.clone());
    }
    PutResponse {
        revision: w.revision(),
        prev_kv: if p.prev_kv { prev } else { None },
    }
}

fn delete_in(
    w: &mut Write<'_>,
    lessor: &mut Lessor,
    d: &DeleteRangeRequest,
) -> DeleteRangeResponse {
    let deleted = w.delete_range(&d.key, &d.range_end);
    for kv in deleted.iter().filter(|kv| kv.lease != 0) {
        lessor.detach(kv.lease, &kv.key);
    }
    DeleteRangeResponse {
        // etcd: the new revision if this or an earlier op in the txn changed anything.
        revision: w.read_revision(),
        deleted: deleted.len() as i64,
        prev_kvs: if d.prev_kv { deleted } else { Vec::new() },
    }
}

fn txn_in(
    w: &mut Write<'_>,
    lessor: &mut Lessor,
    t: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
) -> TxnResponse {
    let ok = path.get(*cursor).copied().unwrap_or(false);
    *cursor += 1;
    let ops = if ok { &t.success } else { &t.failure };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(match op {
            RequestOp::Range(r) => match w.range(r) {
                Ok(rr) => ResponseOp::Range(rr),
                // Checked before the txn started; cannot fail now.
                Err(_) => ResponseOp::Range(RangeResponse {
                    revision: w.read_revision(),
                    ..RangeResponse::default()
                }),
            },
            RequestOp::Put(p) => ResponseOp::Put(put_in(w, lessor, p)),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(delete_in(w, lessor, d)),
            RequestOp::Txn(inner) => {
                let mut r = txn_in(w, lessor, inner, path, cursor);
                r.revision = w.read_revision();
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

fn read_txn_in(
    store: &MvccStore,
    t: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
) -> TxnResponse {
    let ok = path.get(*cursor).copied().unwrap_or(false);
    *cursor += 1;
    let ops = if ok { &t.success } else { &t.failure };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(match op {
            RequestOp::Range(r) => ResponseOp::Range(store.range(r).unwrap_or_default()),
            RequestOp::Txn(inner) => {
                let mut r = read_txn_in(store, inner, path, cursor);
                r.revision = store.current_revision();
                ResponseOp::Txn(r)
            }
            // Callers check `has_writes` first; keep the shape if one slips through.
            RequestOp::Put(_) => ResponseOp::Put(PutResponse::default()),
            RequestOp::DeleteRange(_) => ResponseOp::DeleteRange(DeleteRangeResponse::default()),
        });
    }
    TxnResponse {
        revision: 0,
        succeeded: ok,
        responses,
    }
}

const SNAPSHOT_VERSION: u8 = 1;

impl SnapshotJob {
    fn finish(mut self) -> Bytes {
        self.buf.extend_from_slice(&self.rest);
        self.buf.freeze()
    }
}

impl EtcdState {
    /// A snapshot encode started now, exactly what `snapshot` would give.
    fn start_snapshot_job(&mut self) -> SnapshotJob {
        let rest = self.snapshot_rest();
        // Reserved at once: growing a buffer of hundreds of megabytes would
        // copy it, all in one step.
        let size = usize::try_from(self.mvcc.encoded_size_hint()).unwrap_or(usize::MAX);
        let mut buf = BytesMut::with_capacity(size.saturating_add(rest.len() + 1));
        buf.put_u8(SNAPSHOT_VERSION);
        let mvcc = self.mvcc.begin_encode(&mut buf);
        SnapshotJob { mvcc, buf, rest }
    }

    /// Starts a snapshot of the whole state for a client
    /// (Maintenance.Snapshot), produced over `client_snapshot_step`s while
    /// requests go on, beside a member snapshot if one runs. False when one
    /// is already under way, or cannot start yet (a compaction waits for a
    /// running encode to end): ask again later.
    pub fn begin_client_snapshot(&mut self) -> bool {
        if self.client_snapshot.is_some() || !self.mvcc.can_begin_encode() {
            return false;
        }
        let revision = self.mvcc.current_revision();
        self.client_snapshot = Some((self.start_snapshot_job(), revision));
        true
    }

    /// Whether a client snapshot is under way (a restore from the leader
    /// drops it: the state it was of is gone).
    pub fn client_snapshot_running(&self) -> bool {
        self.client_snapshot.is_some()
    }

    /// Encodes about `budget` more bytes of the client snapshot; when it is
    /// complete, its bytes (what `snapshot` gave when it began) and the
    /// store revision it is of.
    pub fn client_snapshot_step(&mut self, budget: usize) -> Option<(Bytes, i64)> {
        let (job, _) = self.client_snapshot.as_mut()?;
        if !self.mvcc.encode_step(&mut job.mvcc, &mut job.buf, budget) {
            return None;
        }
        let (job, revision) = self.client_snapshot.take()?;
        Some((job.finish(), revision))
    }
}

impl StateMachine for EtcdState {
    type Request = Request;
    type Response = Response;
    type Notification = Notification;

    fn encode_request(req: &Request, buf: &mut BytesMut) {
        request::encode_request(req, buf);
    }

    fn decode_request(data: &[u8]) -> Result<Request, DecodeError> {
        request::decode_request(data)
    }

    fn prepare(&mut self, req: &mut Request, id_seed: u64) -> Result<(), Response> {
        request::validate(req, &self.cfg.limits).map_err(Response::Error)?;
        if let Request::LeaseGrant { id, .. } = req
            && *id == 0
        {
            // Positive, non-zero, unique per proposer incarnation and request.
            let mixed = id_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
            *id = (mixed >> 1).max(1) as i64;
        }
        Ok(())
    }

    fn apply(&mut self, index: LogIndex, req: &Request) -> Response {
        match req {
            // Out of space: what takes space is refused, as etcd's capped
            // applier does (deletes, compaction and revokes go on).
            Request::Put(_) | Request::LeaseGrant { .. } if self.capped() => {
                Response::Error(EtcdError::NoSpace)
            }
            Request::Txn(t) if self.capped() && t.has_puts() => Response::Error(EtcdError::NoSpace),
            Request::Put(p) => self.apply_put(index, p),
            Request::DeleteRange(d) => self.apply_delete(index, d),
            Request::Txn(t) if t.has_writes() => self.apply_txn(index, t),
            Request::Compact { revision, .. } => match self.mvcc.compact(*revision) {
                Ok(()) => Response::Compact {
                    revision: self.header_rev(),
                },
                Err(e) => Response::Error(e),
            },
            Request::LeaseGrant { id, ttl } => {
                match self.lessor.grant(*id, *ttl, &self.timing, self.now_ticks) {
                    Ok(ttl) => Response::LeaseGrant {
                        id: *id,
                        ttl,
                        revision: self.header_rev(),
                    },
                    Err(e) => Response::Error(e),
                }
            }
            Request::LeaseRevoke { id } => self.apply_revoke(index, *id, None),
            Request::LeaseExpire { id, epoch } => self.apply_revoke(index, *id, Some(*epoch)),
            Request::LeaseRenew { id } => {
                match self.lessor.renew(*id, &self.timing, self.now_ticks) {
                    Ok(ttl) => Response::LeaseRenew {
                        id: *id,
                        ttl,
                        revision: self.header_rev(),
                    },
                    Err(e) => Response::Error(e),
                }
            }
            Request::LeaseCheckpoint(v) => {
                self.lessor.checkpoint(v);
                Response::Internal
            }
            Request::Range(_)
            | Request::Txn(_)
            | Request::LeaseTimeToLive { .. }
            | Request::LeaseLeases
            | Request::HashKv { .. } => self.read(req),
            Request::Auth(a) => self.apply_auth(a),
            Request::MemberPublish {
                id,
                name,
                client_urls,
            } => {
                self.cluster.publish(*id, name, client_urls);
                Response::MemberPublish {
                    revision: self.header_rev(),
                }
            }
            Request::MemberList => self.read(req),
            Request::Alarm {
                action,
                member,
                kind,
            } => self.apply_alarm(*action, *member, *kind),
            Request::WatchCreate { .. }
            | Request::WatchCancel { .. }
            | Request::WatchProgress { .. }
            | Request::WatchAck { .. }
            | Request::WatchClose { .. } => Response::Error(EtcdError::Unhealthy),
        }
    }

    fn local(&mut self, req: &Request) -> Response {
        match req {
            Request::WatchCreate { stream, create } => {
                self.watches.create(*stream, create.clone(), &self.mvcc)
            }
            Request::WatchCancel { stream, watch_id } => {
                self.watches.cancel(*stream, *watch_id, &self.mvcc)
            }
            Request::WatchProgress { stream } => self.watches.request_progress(*stream, &self.mvcc),
            Request::WatchAck { stream, n } => self.watches.ack(*stream, *n as usize),
            Request::WatchClose { stream } => self.watches.close_stream(*stream),
            _ => return self.read(req),
        }
        Response::Internal
    }

    fn prefetch(&self, reqs: &[Request]) {
        let mut keys: [&[u8]; PREFETCH_AHEAD] = [&[]; PREFETCH_AHEAD];
        let mut n = 0;
        for req in reqs {
            keys[n] = match req {
                Request::Put(p) => &p.key,
                Request::Range(r) if r.range_end.is_empty() => &r.key,
                Request::DeleteRange(d) if d.range_end.is_empty() => &d.key,
                _ => continue,
            };
            n += 1;
            if n == keys.len() {
                self.mvcc.warm(&keys);
                n = 0;
            }
        }
        self.mvcc.warm(&keys[..n]);
    }

    fn read(&self, req: &Request) -> Response {
        match req {
            Request::Range(r) => match self.mvcc.range(r) {
                Ok(rr) => Response::Range(rr),
                Err(e) => Response::Error(e),
            },
            Request::Txn(t) => self.read_txn(t),
            Request::LeaseTimeToLive { id, keys } => {
                match self.lessor.time_to_live(*id, &self.timing, self.now_ticks) {
                    // etcd answers a missing lease with TTL -1 rather than an error.
                    None => Response::LeaseTimeToLive {
                        id: *id,
                        ttl: -1,
                        granted_ttl: 0,
                        keys: Vec::new(),
                        revision: self.header_rev(),
                    },
                    Some((granted_ttl, ttl)) => Response::LeaseTimeToLive {
                        id: *id,
                        ttl,
                        granted_ttl,
                        keys: if *keys {
                            self.lessor
                                .get(*id)
                                .map(|l| l.keys.iter().cloned().collect())
                                .unwrap_or_default()
                        } else {
                            Vec::new()
                        },
                        revision: self.header_rev(),
                    },
                }
            }
            Request::LeaseLeases => Response::LeaseLeases {
                ids: self.lessor.ids().collect(),
                revision: self.header_rev(),
            },
            Request::HashKv { revision } => match self.mvcc.hash_kv(*revision) {
                Ok((hash, _)) => Response::HashKv {
                    hash,
                    compact_revision: self.mvcc.compact_revision(),
                    revision: self.header_rev(),
                },
                Err(e) => Response::Error(e),
            },
            Request::Auth(a) => self.read_auth(a),
            Request::MemberList => Response::MemberList {
                cluster_id: self.cluster.cluster_id,
                members: self.cluster.members.values().cloned().collect(),
                revision: self.header_rev(),
            },
            Request::Alarm { kind, .. } => Response::Alarms {
                alarms: self
                    .alarms
                    .iter()
                    .copied()
                    .filter(|(_, k)| *kind == AlarmKind::None || k == kind)
                    .collect(),
                revision: self.header_rev(),
            },
            Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseRenew { .. }
            | Request::LeaseExpire { .. }
            | Request::LeaseCheckpoint(_)
            | Request::MemberPublish { .. }
            | Request::WatchCreate { .. }
            | Request::WatchCancel { .. }
            | Request::WatchProgress { .. }
            | Request::WatchAck { .. }
            | Request::WatchClose { .. } => Response::Error(EtcdError::Unhealthy),
        }
    }

    fn tick(&mut self, now_ticks: u64, leader_ready: bool) -> Vec<Request> {
        self.now_ticks = now_ticks;
        match (leader_ready, self.lessor.is_primary()) {
            (true, false) => self.lessor.promote(&self.timing, now_ticks),
            (false, true) => self.lessor.demote(),
            _ => {}
        }
        self.lessor
            .tick(&self.timing, now_ticks)
            .into_iter()
            .map(|p| match p {
                LeaseProposal::Revoke { id, epoch } => Request::LeaseExpire { id, epoch },
                LeaseProposal::Checkpoint(v) => Request::LeaseCheckpoint(v),
            })
            .collect()
    }

    fn take_notifications(&mut self) -> Vec<Notification> {
        self.watches.step(&self.mvcc, self.now_ticks);
        let mut out = std::mem::take(&mut self.notifications);
        out.extend(
            self.watches
                .take_responses()
                .into_iter()
                .map(Notification::Watch),
        );
        out
    }

    fn apply_conf_change(&mut self, _index: LogIndex, cc: &ConfChange) {
        self.cluster.apply_conf_change(cc);
    }

    fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(SNAPSHOT_VERSION);
        self.mvcc.encode(&mut buf);
        buf.extend_from_slice(&self.snapshot_rest());
        buf.freeze()
    }

    /// The key-value store is encoded over later `snapshot_step`s (its
    /// compactions wait meanwhile); the rest, small, is encoded now.
    fn begin_snapshot(&mut self) -> Option<Bytes> {
        self.abort_snapshot();
        if !self.mvcc.can_begin_encode() {
            // A client's snapshot holds a compaction back: encode at once
            // rather than wait (rare: both snapshots, and a compaction).
            return Some(self.snapshot());
        }
        self.snapshot_job = Some(self.start_snapshot_job());
        None
    }

    fn snapshot_step(&mut self, budget: usize) -> Option<Bytes> {
        let job = self.snapshot_job.as_mut()?;
        if !self.mvcc.encode_step(&mut job.mvcc, &mut job.buf, budget) {
            return None;
        }
        let job = self.snapshot_job.take()?;
        Some(job.finish())
    }

    fn abort_snapshot(&mut self) {
        if self.snapshot_job.take().is_some() {
            self.mvcc.abort_encode();
        }
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(data);
        let v = r.u8()?;
        if v != SNAPSHOT_VERSION {
            return Err(DecodeError::BadTag(v));
        }
        let mvcc = MvccStore::decode(&mut r)?;
        let lessor = Lessor::decode(&mut r)?;
        let auth = AuthStore::restore(r.bytes()?).map_err(|_| DecodeError::BadTag(0xa0))?;
        let cluster = ClusterInfo::decode(&mut r)?;
        // Snapshots from before alarms existed end here.
        let mut alarms = std::collections::BTreeSet::new();
        if !r.is_empty() {
            let n = r.count(9)?;
            for _ in 0..n {
                let m = r.u64_le()?;
                let k = r.u8()?;
                let kind = AlarmKind::from_i32(i32::from(k)).ok_or(DecodeError::BadTag(k))?;
                alarms.insert((m, kind));
            }
        }
        r.finish()?;
        // Snapshots in progress were of the state being replaced.
        self.snapshot_job = None;
        self.client_snapshot = None;
        self.mvcc = mvcc;
        self.lessor = lessor;
        self.auth = auth;
        self.cluster = cluster;
        self.alarms = alarms;
        // Watchers keep their place; they catch up from the restored history.
        self.watches.resync_all();
        Ok(())
    }
}
