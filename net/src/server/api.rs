//! etcd's v3 gRPC services (KV, Lease, Cluster, Maintenance, Auth, Health)
//! on top of the core thread. Each handler turns a wire request into a core
//! request, waits for the answer, and turns it back; all the deciding is in
//! the core.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use etcd_core::auth::{PermType, Permission};
use etcd_core::node::Outcome;
use etcd_core::request::{self as req, AuthRequest, AuthResponse};

use super::convert::*;
use super::core::{CoreHandle, Mode, Reply};
use crate::pb::authpb;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::{
    auth_server, cluster_server, kv_server, lease_server, maintenance_server,
};
use crate::pb::health;

/// The version this server reports (etcd's API it implements).
pub const SERVER_VERSION: &str = "3.5.0";
/// The cluster version it reports.
pub const CLUSTER_VERSION: &str = "3.5.0";

/// What every service shares.
pub struct Api {
    pub core: CoreHandle,
    pub cluster_id: u64,
    pub member_id: u64,
    /// The Raft term as the core last published it.
    pub term: Arc<std::sync::atomic::AtomicU64>,
    /// The state's size in bytes as the core last published it.
    pub db_size: Arc<std::sync::atomic::AtomicU64>,
    /// `--quota-backend-bytes` in force (`None`: no quota).
    pub quota_bytes: Option<u64>,
}

pub type Shared = Arc<Api>;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Api {
    pub fn header(&self, revision: i64, term: u64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: term,
        }
    }

    /// Sends a request to the core; a failure becomes etcd's status.
    pub async fn call(&self, r: req::Request, mode: Mode) -> Result<(req::Response, u64), Status> {
        let Reply { outcome, term } = self.core.call(r, mode).await;
        match outcome {
            Outcome::Done(req::Response::Error(e)) => Err(etcd_status(&e)),
            Outcome::Done(resp) => Ok((resp, term)),
            Outcome::Failed(e) => Err(node_status(&e)),
            Outcome::ConfApplied(_) => Err(Status::internal("unexpected membership answer")),
        }
    }

    /// etcd's quota check before a write that takes space: over the quota,
    /// this member raises the NOSPACE alarm (through the log, so every
    /// member applies it) and the write is refused with etcd's error.
    pub async fn check_quota(&self, cost: usize) -> Result<(), Status> {
        let Some(quota) = self.quota_bytes else {
            return Ok(());
        };
        let size = self.db_size.load(std::sync::atomic::Ordering::Relaxed);
        if size.saturating_add(cost as u64) <= quota {
            return Ok(());
        }
        let raise = req::Request::Alarm {
            action: req::AlarmAction::Activate,
            member: self.member_id,
            kind: req::AlarmKind::NoSpace,
        };
        let _ = self.call(raise, Mode::Write).await;
        Err(etcd_status(&etcd_core::error::EtcdError::NoSpace))
    }

    /// The current revision and term, for answers that carry no revision.
    pub async fn current(&self) -> (i64, u64) {
        match self.core.status().await {
            Some(s) => (s.revision, s.term),
            None => (0, 0),
        }
    }
}

fn unexpected(r: &req::Response) -> Status {
    Status::internal(format!("etcdserver: unexpected answer {r:?}"))
}

pub struct Kv(pub Shared);

#[tonic::async_trait]
impl kv_server::Kv for Kv {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = range_in(request.into_inner());
        let mode = if r.serializable {
            Mode::Serializable
        } else {
            Mode::Linearizable
        };
        match self.0.call(req::Request::Range(r), mode).await? {
            (req::Response::Range(rr), term) => {
                let h = self.0.header(rr.revision, term);
                Ok(Response::new(range_out(rr, h)))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let p = put_in(request.into_inner());
        // etcd's cost of a put: key, value and a small overhead.
        self.0.check_quota(p.key.len() + p.value.len() + 32).await?;
        match self.0.call(req::Request::Put(p), Mode::Write).await? {
            (req::Response::Put(r), term) => {
                let h = self.0.header(r.revision, term);
                Ok(Response::new(put_out(r, h)))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let d = delete_in(request.into_inner());
        match self
            .0
            .call(req::Request::DeleteRange(d), Mode::Write)
            .await?
        {
            (req::Response::DeleteRange(r), term) => {
                let h = self.0.header(r.revision, term);
                Ok(Response::new(delete_out(r, h)))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let t = txn_in(request.into_inner())?;
        if t.has_puts() {
            self.0.check_quota(txn_put_bytes(&t)).await?;
        }
        // A read-only txn is a read: linearizable unless every range in it is
        // serializable (etcd's `isTxnSerializable`).
        let mode = if t.has_writes() {
            Mode::Write
        } else if txn_serializable(&t) {
            Mode::Serializable
        } else {
            Mode::Linearizable
        };
        match self.0.call(req::Request::Txn(t), mode).await? {
            (req::Response::Txn(r), term) => {
                let h = self.0.header(r.revision, term);
                Ok(Response::new(txn_out(r, h)))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let c = request.into_inner();
        let r = req::Request::Compact {
            revision: c.revision,
            physical: c.physical,
        };
        match self.0.call(r, Mode::Write).await? {
            (req::Response::Compact { revision }, term) => {
                Ok(Response::new(pb::CompactionResponse {
                    header: Some(self.0.header(revision, term)),
                }))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }
}

/// What a txn's puts would add (etcd's quota cost).
fn txn_put_bytes(t: &etcd_core::mvcc::types::TxnRequest) -> usize {
    use etcd_core::mvcc::types::RequestOp;
    t.success
        .iter()
        .chain(t.failure.iter())
        .map(|op| match op {
            RequestOp::Put(p) => p.key.len() + p.value.len() + 32,
            RequestOp::Txn(t) => txn_put_bytes(t),
            _ => 0,
        })
        .sum()
}

fn txn_serializable(t: &etcd_core::mvcc::types::TxnRequest) -> bool {
    use etcd_core::mvcc::types::RequestOp;
    t.success.iter().chain(t.failure.iter()).all(|op| match op {
        RequestOp::Range(r) => r.serializable,
        RequestOp::Txn(t) => txn_serializable(t),
        _ => false,
    })
}

pub struct Lease(pub Shared);

#[tonic::async_trait]
impl lease_server::Lease for Lease {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let g = request.into_inner();
        self.0.check_quota(32).await?;
        let r = req::Request::LeaseGrant {
            id: g.id,
            ttl: g.ttl,
        };
        match self.0.call(r, Mode::Write).await? {
            (req::Response::LeaseGrant { id, ttl, revision }, term) => {
                Ok(Response::new(pb::LeaseGrantResponse {
                    header: Some(self.0.header(revision, term)),
                    id,
                    ttl,
                    error: String::new(),
                }))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let r = req::Request::LeaseRevoke {
            id: request.into_inner().id,
        };
        match self.0.call(r, Mode::Write).await? {
            (req::Response::LeaseRevoke { revision }, term) => {
                Ok(Response::new(pb::LeaseRevokeResponse {
                    header: Some(self.0.header(revision, term)),
                }))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut input = request.into_inner();
        let api = self.0.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(k)) = input.next().await {
                let out = match api
                    .call(req::Request::LeaseRenew { id: k.id }, Mode::Write)
                    .await
                {
                    Ok((req::Response::LeaseRenew { id, ttl, revision }, term)) => {
                        Ok(pb::LeaseKeepAliveResponse {
                            header: Some(api.header(revision, term)),
                            id,
                            ttl,
                        })
                    }
                    // etcd answers a keep-alive of an unknown lease with TTL 0
                    // on the stream rather than breaking it.
                    Err(s) if s.message() == "etcdserver: requested lease not found" => {
                        let (rev, term) = api.current().await;
                        Ok(pb::LeaseKeepAliveResponse {
                            header: Some(api.header(rev, term)),
                            id: k.id,
                            ttl: 0,
                        })
                    }
                    Err(s) => Err(s),
                    Ok((other, _)) => Err(unexpected(&other)),
                };
                let stop = out.is_err();
                if tx.send(out).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let t = request.into_inner();
        let r = req::Request::LeaseTimeToLive {
            id: t.id,
            keys: t.keys,
        };
        match self.0.call(r, Mode::Linearizable).await? {
            (
                req::Response::LeaseTimeToLive {
                    id,
                    ttl,
                    granted_ttl,
                    keys,
                    revision,
                },
                term,
            ) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: Some(self.0.header(revision, term)),
                id,
                ttl,
                granted_ttl,
                keys,
            })),
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        match self
            .0
            .call(req::Request::LeaseLeases, Mode::Linearizable)
            .await?
        {
            (req::Response::LeaseLeases { ids, revision }, term) => {
                Ok(Response::new(pb::LeaseLeasesResponse {
                    header: Some(self.0.header(revision, term)),
                    leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
                }))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }
}

pub fn member_out(m: etcd_core::cluster::Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

pub struct Cluster(pub Shared);

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not supported yet (membership changes come with the cluster-operations work)"
    ))
}

#[tonic::async_trait]
impl cluster_server::Cluster for Cluster {
    async fn member_add(
        &self,
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(not_yet("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(not_yet("MemberRemove"))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(not_yet("MemberUpdate"))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let mode = if request.into_inner().linearizable {
            Mode::Linearizable
        } else {
            Mode::Serializable
        };
        match self.0.call(req::Request::MemberList, mode).await? {
            (
                req::Response::MemberList {
                    members, revision, ..
                },
                term,
            ) => Ok(Response::new(pb::MemberListResponse {
                // etcd's member list header carries no revision.
                header: Some({
                    let _ = revision;
                    self.0.header(0, term)
                }),
                members: members.into_iter().map(member_out).collect(),
            })),
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn member_promote(
        &self,
        _request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(not_yet("MemberPromote"))
    }
}

pub struct Maintenance(pub Shared);

#[tonic::async_trait]
impl maintenance_server::Maintenance for Maintenance {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let a = request.into_inner();
        let action = match a.action {
            0 => req::AlarmAction::Get,
            1 => req::AlarmAction::Activate,
            2 => req::AlarmAction::Deactivate,
            _ => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        let kind = req::AlarmKind::from_i32(a.alarm)
            .ok_or_else(|| Status::invalid_argument("etcdserver: unknown alarm type"))?;
        let mode = if action == req::AlarmAction::Get {
            Mode::Linearizable
        } else {
            Mode::Write
        };
        let r = req::Request::Alarm {
            action,
            member: a.member_id,
            kind,
        };
        match self.0.call(r, mode).await? {
            (req::Response::Alarms { alarms, revision }, term) => {
                // etcd 3.4 answers alarms without a header.
                let _ = (revision, term);
                Ok(Response::new(pb::AlarmResponse {
                    header: None,
                    alarms: alarms
                        .into_iter()
                        .map(|(member_id, k)| pb::AlarmMember {
                            member_id,
                            alarm: k as i32,
                        })
                        .collect(),
                }))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self
            .0
            .core
            .status()
            .await
            .ok_or_else(|| Status::unavailable("etcdserver: server stopped"))?;
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.0.header(s.revision, s.term)),
            version: SERVER_VERSION.into(),
            db_size: s.db_size,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors: s.errors,
            db_size_in_use: s.db_size,
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // Nothing to do: compaction frees memory at once and the WAL and
        // snapshots need no defragmentation.
        // etcd answers without a header.
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        // etcd hashes its whole backend file; ours is the KV hash at the
        // current revision (the same on every member at the same revision).
        match self
            .0
            .call(req::Request::HashKv { revision: 0 }, Mode::Serializable)
            .await?
        {
            (req::Response::HashKv { hash, revision, .. }, term) => {
                Ok(Response::new(pb::HashResponse {
                    header: Some(self.0.header(revision, term)),
                    hash,
                }))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let r = req::Request::HashKv {
            revision: request.into_inner().revision,
        };
        match self.0.call(r, Mode::Serializable).await? {
            (
                req::Response::HashKv {
                    hash,
                    compact_revision,
                    revision,
                },
                term,
            ) => Ok(Response::new(pb::HashKvResponse {
                header: Some(self.0.header(revision, term)),
                hash,
                compact_revision,
            })),
            (other, _) => Err(unexpected(&other)),
        }
    }

    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    /// Streams the member's whole state, as etcd's `maintenanceServer.Snapshot`
    /// streams its backend: see [`SnapshotChunks`] for what is sent.
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.0.core.send(super::core::CoreMsg::Snapshot(tx)) {
            return Err(Status::unavailable("etcdserver: server stopped"));
        }
        let (data, revision) = rx
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        let term = self.0.term.load(std::sync::atomic::Ordering::Relaxed);
        let chunks = SnapshotChunks::new(data, self.0.header(revision, term));
        crate::log::info(
            "v3rpc/maintenance.go",
            "sending database snapshot to client",
            &[
                ("total-bytes", crate::log::V::U(chunks.total as u64)),
                ("revision", crate::log::V::I(revision)),
            ],
        );
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.map(Ok::<_, Status>),
        ))))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self
            .0
            .core
            .send(super::core::CoreMsg::MoveLeader { target, reply: tx })
        {
            return Err(Status::unavailable("etcdserver: server stopped"));
        }
        match rx.await {
            Ok(Ok(())) => {
                // etcd answers without a header.
                Ok(Response::new(pb::MoveLeaderResponse { header: None }))
            }
            Ok(Err(why))
                if why == "etcdserver: not leader"
                    || why == "etcdserver: bad leader transferee" =>
            {
                Err(Status::failed_precondition(why))
            }
            Ok(Err(why)) => Err(Status::unavailable(why)),
            Err(_) => Err(Status::unavailable("etcdserver: server stopped")),
        }
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not supported"))
    }
}

/// etcd's snapshot send buffer (`snapshotSendBufferSize`).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// The messages of a snapshot stream, made as they are sent.
///
/// As etcd 3.4/3.5 does: the data in chunks of at most 32 KiB, each with the
/// bytes still to come after it in `remaining_bytes` (0 on the last), then
/// one more message (`remaining_bytes` 0) whose blob is the SHA-256 of all
/// the data sent before it. Every message also carries the response header
/// at the revision of the snapshot (etcd leaves it unset).
///
/// The data is this server's own snapshot encoding (`EtcdState::snapshot`:
/// the key-value store with its history, leases, auth and membership), then
/// zeros up to a multiple of 512 bytes: etcdctl's `snapshot save` only
/// accepts a stream whose size is 32 (the checksum) more than a multiple of
/// 512, which etcd's bbolt file always is. The file `etcdctl snapshot save`
/// writes is therefore not a bbolt database: `etcdctl snapshot status` and
/// `etcdctl snapshot restore` cannot read it.
pub struct SnapshotChunks {
    data: Bytes,
    /// The data's size with its padding.
    pub total: usize,
    sent: usize,
    hash: Option<crate::sha256::Sha256>,
    header: pb::ResponseHeader,
}

impl SnapshotChunks {
    pub fn new(data: Bytes, header: pb::ResponseHeader) -> SnapshotChunks {
        let total = data.len().div_ceil(512) * 512;
        SnapshotChunks {
            data,
            total,
            sent: 0,
            hash: Some(crate::sha256::Sha256::new()),
            header,
        }
    }
}

impl Iterator for SnapshotChunks {
    type Item = pb::SnapshotResponse;

    fn next(&mut self) -> Option<pb::SnapshotResponse> {
        let hash = self.hash.as_mut()?;
        if self.sent < self.total {
            let start = self.sent;
            let end = (start + SNAPSHOT_CHUNK_BYTES).min(self.total);
            let blob = if end <= self.data.len() {
                self.data.slice(start..end)
            } else {
                // The last chunk: the end of the data, then its padding.
                let mut b = bytes::BytesMut::with_capacity(end - start);
                b.extend_from_slice(&self.data[start.min(self.data.len())..]);
                b.resize(end - start, 0);
                b.freeze()
            };
            hash.update(&blob);
            self.sent = end;
            return Some(pb::SnapshotResponse {
                header: Some(self.header),
                remaining_bytes: (self.total - end) as u64,
                blob,
            });
        }
        let sum = self.hash.take()?.finalize();
        Some(pb::SnapshotResponse {
            header: Some(self.header),
            remaining_bytes: 0,
            blob: Bytes::copy_from_slice(&sum),
        })
    }
}

pub struct Auth(pub Shared);

impl Auth {
    async fn auth(&self, a: AuthRequest) -> Result<(AuthResponse, pb::ResponseHeader), Status> {
        let mode = if a.is_read_only() {
            Mode::Linearizable
        } else {
            Mode::Write
        };
        match self.0.call(req::Request::Auth(a), mode).await? {
            (req::Response::Auth { resp, revision }, term) => {
                Ok((resp, self.0.header(revision, term)))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }
}

/// Until password hashing comes with the security work, passwords are kept
/// as given (the auth store never compares them yet).
fn password_hash(p: &str) -> Bytes {
    Bytes::copy_from_slice(p.as_bytes())
}

fn perm_in(p: authpb::Permission) -> Result<Permission, Status> {
    let t = match p.perm_type {
        0 => PermType::Read,
        1 => PermType::Write,
        2 => PermType::ReadWrite,
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: invalid permission type",
            ));
        }
    };
    Ok(Permission::new(t, p.key, p.range_end))
}

fn perm_out(p: Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: match p.perm_type {
            PermType::Read => 0,
            PermType::Write => 1,
            PermType::ReadWrite => 2,
        },
        key: p.key,
        range_end: p.range_end,
    }
}

#[tonic::async_trait]
impl auth_server::Auth for Auth {
    async fn auth_enable(
        &self,
        _r: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let (_, h) = self.auth(AuthRequest::Enable).await?;
        Ok(Response::new(pb::AuthEnableResponse { header: Some(h) }))
    }

    async fn auth_disable(
        &self,
        _r: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let (_, h) = self.auth(AuthRequest::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse { header: Some(h) }))
    }

    async fn auth_status(
        &self,
        _r: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        match self.auth(AuthRequest::Status).await? {
            (
                AuthResponse::Status {
                    enabled,
                    auth_revision,
                },
                h,
            ) => Ok(Response::new(pb::AuthStatusResponse {
                header: Some(h),
                enabled,
                auth_revision,
            })),
            (other, _) => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }

    async fn authenticate(
        &self,
        _r: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(Status::unimplemented(
            "authentication comes with the security work",
        ))
    }

    async fn user_add(
        &self,
        r: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let u = r.into_inner();
        let no_password = u.options.map(|o| o.no_password).unwrap_or(false);
        let (_, h) = self
            .auth(AuthRequest::UserAdd {
                name: u.name,
                password_hash: password_hash(&u.password),
                no_password,
            })
            .await?;
        Ok(Response::new(pb::AuthUserAddResponse { header: Some(h) }))
    }

    async fn user_get(
        &self,
        r: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        match self
            .auth(AuthRequest::UserGet {
                name: r.into_inner().name,
            })
            .await?
        {
            (AuthResponse::User { roles }, h) => Ok(Response::new(pb::AuthUserGetResponse {
                header: Some(h),
                roles,
            })),
            (other, _) => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }

    async fn user_list(
        &self,
        _r: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        match self.auth(AuthRequest::UserList).await? {
            (AuthResponse::Users { names }, h) => Ok(Response::new(pb::AuthUserListResponse {
                header: Some(h),
                users: names,
            })),
            (other, _) => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }

    async fn user_delete(
        &self,
        r: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let (_, h) = self
            .auth(AuthRequest::UserDelete {
                name: r.into_inner().name,
            })
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Some(h),
        }))
    }

    async fn user_change_password(
        &self,
        r: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let c = r.into_inner();
        let (_, h) = self
            .auth(AuthRequest::UserChangePassword {
                name: c.name,
                password_hash: password_hash(&c.password),
            })
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: Some(h),
        }))
    }

    async fn user_grant_role(
        &self,
        r: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let g = r.into_inner();
        let (_, h) = self
            .auth(AuthRequest::UserGrantRole {
                user: g.user,
                role: g.role,
            })
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: Some(h),
        }))
    }

    async fn user_revoke_role(
        &self,
        r: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let g = r.into_inner();
        let (_, h) = self
            .auth(AuthRequest::UserRevokeRole {
                user: g.name,
                role: g.role,
            })
            .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: Some(h),
        }))
    }

    async fn role_add(
        &self,
        r: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let (_, h) = self
            .auth(AuthRequest::RoleAdd {
                name: r.into_inner().name,
            })
            .await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header: Some(h) }))
    }

    async fn role_get(
        &self,
        r: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        match self
            .auth(AuthRequest::RoleGet {
                name: r.into_inner().role,
            })
            .await?
        {
            (AuthResponse::Role { perms }, h) => Ok(Response::new(pb::AuthRoleGetResponse {
                header: Some(h),
                perm: perms.into_iter().map(perm_out).collect(),
            })),
            (other, _) => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }

    async fn role_list(
        &self,
        _r: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        match self.auth(AuthRequest::RoleList).await? {
            (AuthResponse::Roles { names }, h) => Ok(Response::new(pb::AuthRoleListResponse {
                header: Some(h),
                roles: names,
            })),
            (other, _) => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }

    async fn role_delete(
        &self,
        r: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let (_, h) = self
            .auth(AuthRequest::RoleDelete {
                name: r.into_inner().role,
            })
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Some(h),
        }))
    }

    async fn role_grant_permission(
        &self,
        r: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let g = r.into_inner();
        let perm = g
            .perm
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        let (_, h) = self
            .auth(AuthRequest::RoleGrantPermission {
                name: g.name,
                perm: perm_in(perm)?,
            })
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(h),
        }))
    }

    async fn role_revoke_permission(
        &self,
        r: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let g = r.into_inner();
        let (_, h) = self
            .auth(AuthRequest::RoleRevokePermission {
                name: g.role,
                key: g.key,
                range_end: g.range_end,
            })
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(h),
        }))
    }
}

pub struct Health(pub Shared);

/// How often a health watch looks at the member again.
const HEALTH_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

type Serving = health::health_check_response::ServingStatus;

impl Health {
    /// The status of `service`: the server as a whole is "" (the only
    /// service etcd registers), serving while it has a leader (as etcd 3.6
    /// reports it; 3.4 and 3.5 always say serving).
    async fn status_of(shared: &Shared, service: &str) -> Serving {
        if !service.is_empty() {
            return Serving::ServiceUnknown;
        }
        match shared.core.status().await {
            Some(s) if s.leader != 0 => Serving::Serving,
            _ => Serving::NotServing,
        }
    }
}

fn health_response(s: Serving) -> health::HealthCheckResponse {
    health::HealthCheckResponse { status: s as i32 }
}

#[tonic::async_trait]
impl health::health_server::Health for Health {
    async fn check(
        &self,
        r: Request<health::HealthCheckRequest>,
    ) -> Result<Response<health::HealthCheckResponse>, Status> {
        match Self::status_of(&self.0, &r.into_inner().service).await {
            // grpc-go's health server answers an unknown service this way.
            Serving::ServiceUnknown => Err(Status::not_found("unknown service")),
            s => Ok(Response::new(health_response(s))),
        }
    }

    type WatchStream = BoxStream<health::HealthCheckResponse>;

    /// The status now, then each change (grpc-go's behavior: an unknown
    /// service is reported as such on the stream, not as an error).
    async fn watch(
        &self,
        r: Request<health::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = r.into_inner().service;
        let shared = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = Self::status_of(&shared, &service).await;
                if last != Some(now) {
                    if tx.send(Ok(health_response(now))).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(HEALTH_WATCH_EVERY) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(len: usize) -> (Vec<u8>, Vec<pb::SnapshotResponse>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        let msgs =
            SnapshotChunks::new(Bytes::from(data.clone()), pb::ResponseHeader::default()).collect();
        (data, msgs)
    }

    #[test]
    fn snapshot_chunks_count_down_pad_and_end_with_the_checksum() {
        for len in [
            0,
            1,
            511,
            512,
            513,
            SNAPSHOT_CHUNK_BYTES,
            3 * SNAPSHOT_CHUNK_BYTES + 700,
        ] {
            let (data, msgs) = stream(len);
            let total = len.div_ceil(512) * 512;
            assert_eq!(
                msgs.len(),
                total.div_ceil(SNAPSHOT_CHUNK_BYTES) + 1,
                "len {len}"
            );
            let (sum, body) = msgs.split_last().expect("messages");
            let mut sent = Vec::new();
            for m in body {
                assert!(m.blob.len() <= SNAPSHOT_CHUNK_BYTES && !m.blob.is_empty());
                sent.extend_from_slice(&m.blob);
                assert_eq!(m.remaining_bytes as usize, total - sent.len());
                assert!(m.header.is_some());
            }
            assert_eq!(sent.len(), total);
            assert_eq!(&sent[..len], &data[..]);
            assert!(sent[len..].iter().all(|&b| b == 0));
            assert_eq!(sum.remaining_bytes, 0);
            assert_eq!(&sum.blob[..], &crate::sha256::digest(&sent)[..]);
            // What etcdctl's `snapshot save` checks (`hasChecksum`).
            assert_eq!((sent.len() + sum.blob.len()) % 512, 32);
        }
    }
}
