//! etcd's `v3lock` and `v3election` services.
//!
//! etcd serves both with its own client library running inside the server
//! (`server/etcdserver/api/v3lock/lock.go` and `v3election/election.go` over
//! `client/v3/concurrency`: `Mutex`, `Election`, `waitDeletes`, `Session`).
//! These take the same steps against the core: the same transactions,
//! ranges and watches, in the same order, with the same results and errors.
//!
//! The queue discipline of both: each contender owns the key
//! `name/<lease in hex>`; the one whose key has the lowest create revision
//! holds the lock (leads). A contender waits until no key under the prefix
//! was created before its own (`waitDeletes`): it finds the latest such key
//! and watches it for a delete, and repeats.
//!
//! Errors come as etcd's do. etcd's handlers return plain Go errors (and the
//! client library's `EtcdError`, which is not a gRPC status), so grpc-go
//! sends all of them with code `Unknown` and the error's text: for example
//! `election: not leader`, `election: no leader`, `mutex: session is
//! expired`, `etcdserver: requested lease not found`.

use std::future::Future;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use etcd_core::mvcc::types as m;
use etcd_core::request as req;
use etcd_core::watch::{WatchCreate, WatchResponse};

use super::api::Shared;
use super::convert::kv_out;
use super::core::Mode;
use super::watch::CoreWatch;
use crate::pb::etcdserverpb as pb;
use crate::pb::v3electionpb::{self as epb, election_server};
use crate::pb::v3lockpb::{self as lpb, lock_server};

/// `concurrency.ErrElectionNotLeader`.
pub const ERR_ELECTION_NOT_LEADER: &str = "election: not leader";
/// `concurrency.ErrElectionNoLeader`.
pub const ERR_ELECTION_NO_LEADER: &str = "election: no leader";
/// `concurrency.ErrSessionExpired`: the lock was reached but our key (and
/// so its lease) was gone.
pub const ERR_SESSION_EXPIRED: &str = "mutex: session is expired";
/// `v3election.ErrMissingLeaderKey`.
pub const ERR_MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// `waitDelete`: the watch ended without the delete.
const ERR_LOST_WATCHER: &str = "lost watcher waiting for delete";
/// `rpctypes.ErrCompacted`, as a watch reports it.
const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// `rpctypes.ErrFutureRev`, as a watch reports a cancel without a reason.
const ERR_FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
/// `concurrency.defaultSessionTTL`: the lease a session grants itself when
/// the request names none.
const DEFAULT_SESSION_TTL: i64 = 60;

type BoxStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn stopped() -> Status {
    Status::unavailable("etcdserver: server stopped")
}

fn unexpected(r: &req::Response) -> Status {
    Status::internal(format!("etcdserver: unexpected answer {r:?}"))
}

/// What etcd's client sees: every error with code `Unknown` (see the module
/// documentation).
fn as_etcd(s: Status) -> Status {
    Status::unknown(s.message().to_string())
}

/// `fmt.Sprintf("%s%x", pfx, lease)`: Go prints a negative number as `-`
/// and the hex of its magnitude.
fn lease_key(pfx: &[u8], lease: i64) -> Bytes {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    concat(pfx, hex.as_bytes())
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut v = BytesMut::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v.freeze()
}

/// `clientv3.GetPrefixRangeEnd`.
fn prefix_end(pfx: &[u8]) -> Bytes {
    let mut end = pfx.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    Bytes::from_static(&[0])
}

/// `Get(key)`.
fn get_key(key: &Bytes) -> m::RangeRequest {
    m::RangeRequest {
        key: key.clone(),
        ..m::RangeRequest::default()
    }
}

/// `Get(pfx, WithFirstCreate()...)`: the oldest key under the prefix.
fn first_create(pfx: &Bytes) -> m::RangeRequest {
    m::RangeRequest {
        key: pfx.clone(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_order: m::SortOrder::Ascend,
        sort_target: m::SortTarget::Create,
        ..m::RangeRequest::default()
    }
}

/// `Get(pfx, WithLastCreate()..., WithMaxCreateRev(max))`: the newest key
/// under the prefix created at or before `max`.
fn last_create_up_to(pfx: &Bytes, max: i64) -> m::RangeRequest {
    m::RangeRequest {
        key: pfx.clone(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_order: m::SortOrder::Descend,
        sort_target: m::SortTarget::Create,
        max_create_revision: max,
        ..m::RangeRequest::default()
    }
}

/// `Compare(CreateRevision(key), "=", rev)`.
fn created_at(key: &Bytes, rev: i64) -> m::Compare {
    m::Compare {
        result: m::CompareResult::Equal,
        target: m::CompareTarget::Create(rev),
        key: key.clone(),
        range_end: Bytes::new(),
    }
}

/// `OpPut(key, value, WithLease(lease))`.
fn put(key: &Bytes, value: Bytes, lease: i64) -> m::RequestOp {
    m::RequestOp::Put(m::PutRequest {
        key: key.clone(),
        value,
        lease,
        ..m::PutRequest::default()
    })
}

/// The first key-value of the `i`th response of a txn, if it is a range.
fn txn_kv(t: &m::TxnResponse, i: usize) -> Option<&m::KeyValue> {
    match t.responses.get(i) {
        Some(m::ResponseOp::Range(r)) => r.kvs.first(),
        _ => None,
    }
}

/// The KV and Lease calls etcd's concurrency package makes, through the core.
struct Kv<'a>(&'a Shared);

impl Kv<'_> {
    fn header(&self, revision: i64, term: u64) -> pb::ResponseHeader {
        self.0.header(revision, term)
    }

    /// A client `Get` (linearizable).
    async fn get(
        &self,
        r: m::RangeRequest,
    ) -> Result<(m::RangeResponse, pb::ResponseHeader), Status> {
        match self
            .0
            .call(req::Request::Range(r), Mode::Linearizable)
            .await?
        {
            (req::Response::Range(rr), term) => {
                let h = self.header(rr.revision, term);
                Ok((rr, h))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, t: m::TxnRequest) -> Result<(m::TxnResponse, pb::ResponseHeader), Status> {
        let mode = if t.has_writes() {
            Mode::Write
        } else {
            Mode::Linearizable
        };
        match self.0.call(req::Request::Txn(t), mode).await? {
            (req::Response::Txn(tr), term) => {
                let h = self.header(tr.revision, term);
                Ok((tr, h))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn delete(&self, key: Bytes) -> Result<pb::ResponseHeader, Status> {
        let d = m::DeleteRangeRequest {
            key,
            ..m::DeleteRangeRequest::default()
        };
        match self
            .0
            .call(req::Request::DeleteRange(d), Mode::Write)
            .await?
        {
            (req::Response::DeleteRange(r), term) => Ok(self.header(r.revision, term)),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// The lease of `concurrency.NewSession(WithLease(lease))` as etcd's
    /// servers make one: lease 0 (`NoLease`) makes the session grant itself
    /// a lease of 60 seconds. The servers orphan the session at once, so
    /// nothing keeps that lease alive.
    async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let g = req::Request::LeaseGrant {
            id: 0,
            ttl: DEFAULT_SESSION_TTL,
        };
        match self.0.call(g, Mode::Write).await? {
            (req::Response::LeaseGrant { id, .. }, _) => Ok(id),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// `waitDeletes`: until no key under `pfx` created at or before
    /// `max_create_rev` is left.
    async fn wait_deletes(&self, pfx: &Bytes, max_create_rev: i64) -> Result<(), Status> {
        loop {
            let (r, _) = self.get(last_create_up_to(pfx, max_create_rev)).await?;
            let Some(last) = r.kvs.into_iter().next() else {
                return Ok(());
            };
            self.wait_delete(last.key, r.revision).await?;
        }
    }

    /// `waitDelete`: watches `key` from `rev` until it is deleted.
    async fn wait_delete(&self, key: Bytes, rev: i64) -> Result<(), Status> {
        let create = WatchCreate {
            key,
            start_revision: rev,
            // Only a delete ends the wait.
            no_put: true,
            ..WatchCreate::default()
        };
        let mut w = CoreWatch::open(&self.0.core, create).ok_or_else(stopped)?;
        while let Some(r) = w.recv().await {
            if r.events.iter().any(|e| e.kind == m::EventType::Delete) {
                return Ok(());
            }
            if r.canceled {
                return Err(watch_error(&r));
            }
        }
        Err(Status::unknown(ERR_LOST_WATCHER))
    }

    /// `Election.Proclaim` of a resumed election.
    async fn proclaim(
        &self,
        key: &Bytes,
        rev: i64,
        lease: i64,
        value: Bytes,
    ) -> Result<pb::ResponseHeader, Status> {
        let t = m::TxnRequest {
            compare: vec![created_at(key, rev)],
            success: vec![put(key, value, lease)],
            failure: Vec::new(),
        };
        let (r, h) = self.txn(t).await?;
        if !r.succeeded {
            return Err(Status::unknown(ERR_ELECTION_NOT_LEADER));
        }
        Ok(h)
    }

    /// `Election.Resign`: deletes the key if it is still the one created at
    /// `rev`; not an error if it is not.
    async fn resign(&self, key: &Bytes, rev: i64) -> Result<pb::ResponseHeader, Status> {
        let t = m::TxnRequest {
            compare: vec![created_at(key, rev)],
            success: vec![m::RequestOp::DeleteRange(m::DeleteRangeRequest {
                key: key.clone(),
                ..m::DeleteRangeRequest::default()
            })],
            failure: Vec::new(),
        };
        Ok(self.txn(t).await?.1)
    }
}

/// `clientv3.WatchResponse.Err()` of a cancelled watch.
fn watch_error(r: &WatchResponse) -> Status {
    if r.compact_revision != 0 {
        Status::unknown(ERR_COMPACTED)
    } else if !r.cancel_reason.is_empty() {
        Status::unknown(r.cancel_reason.clone())
    } else {
        Status::unknown(ERR_FUTURE_REV)
    }
}

/// Tells the work of a request whether its caller is still there. tonic
/// drops a handler when its client cancels or its deadline passes, which
/// would stop the work anywhere; so the work runs in a task of its own and
/// learns of the caller leaving through this, as etcd's does through the
/// request context, and cleans up.
struct Caller(oneshot::Sender<()>);

impl Caller {
    /// Resolves once the caller has gone.
    async fn gone(&mut self) {
        self.0.closed().await
    }

    fn is_gone(&self) -> bool {
        self.0.is_closed()
    }
}

/// The status of a request whose caller went away (nobody reads it).
fn canceled() -> Status {
    Status::cancelled("context canceled")
}

/// Runs `work` in a task and waits for its answer; if this future is dropped
/// the work is told through its `Caller` and finishes on its own.
async fn detached<R, F, Fut>(work: F) -> Result<R, Status>
where
    R: Send + 'static,
    F: FnOnce(Caller) -> Fut,
    Fut: Future<Output = Result<R, Status>> + Send + 'static,
{
    let (present, presence) = oneshot::channel::<()>();
    let (tx, rx) = oneshot::channel();
    let fut = work(Caller(present));
    tokio::spawn(async move {
        let _ = tx.send(fut.await);
    });
    let out = rx.await.unwrap_or_else(|_| Err(stopped()));
    drop(presence);
    out
}

/// `Mutex.Lock` with the session of `lockServer.Lock`.
async fn lock(
    api: Shared,
    r: lpb::LockRequest,
    mut caller: Caller,
) -> Result<lpb::LockResponse, Status> {
    let kv = Kv(&api);
    let lease = kv.session_lease(r.lease).await?;
    let pfx = concat(&r.name, b"/");
    let my_key = lease_key(&pfx, lease);

    // tryAcquire: join the queue (or find our key already in it) and read
    // the current holder in one txn.
    let owner = m::RequestOp::Range(first_create(&pfx));
    let t = m::TxnRequest {
        compare: vec![created_at(&my_key, 0)],
        success: vec![put(&my_key, Bytes::new(), lease), owner.clone()],
        failure: vec![m::RequestOp::Range(get_key(&my_key)), owner],
    };
    let (resp, hdr) = kv.txn(t).await?;
    let my_rev = if resp.succeeded {
        resp.revision
    } else {
        txn_kv(&resp, 0)
            .map(|k| k.create_revision)
            .ok_or_else(|| Status::internal("lock key vanished inside a txn"))?
    };
    if txn_kv(&resp, 1).is_none_or(|o| o.create_revision == my_rev) {
        return Ok(lpb::LockResponse {
            header: Some(hdr),
            key: my_key,
        });
    }

    // Wait for every earlier contender; on failure give up our place.
    let waited = tokio::select! {
        w = kv.wait_deletes(&pfx, my_rev - 1) => w,
        _ = caller.gone() => Err(canceled()),
    };
    if let Err(e) = waited {
        let _ = kv.delete(my_key).await;
        return Err(e);
    }
    // Make sure our key (so our lease) is still there.
    let got = if caller.is_gone() {
        Err(canceled())
    } else {
        kv.get(get_key(&my_key)).await
    };
    let (g, hdr) = match got {
        Ok(x) => x,
        Err(e) => {
            let _ = kv.delete(my_key).await;
            return Err(e);
        }
    };
    if g.kvs.is_empty() {
        return Err(Status::unknown(ERR_SESSION_EXPIRED));
    }
    Ok(lpb::LockResponse {
        header: Some(hdr),
        key: my_key,
    })
}

/// `Election.Campaign` with the session of `electionServer.Campaign`.
async fn campaign(
    api: Shared,
    r: epb::CampaignRequest,
    mut caller: Caller,
) -> Result<epb::CampaignResponse, Status> {
    let kv = Kv(&api);
    let lease = kv.session_lease(r.lease).await?;
    let pfx = concat(&r.name, b"/");
    let key = lease_key(&pfx, lease);

    let t = m::TxnRequest {
        compare: vec![created_at(&key, 0)],
        success: vec![put(&key, r.value.clone(), lease)],
        failure: vec![m::RequestOp::Range(get_key(&key))],
    };
    let (resp, hdr) = kv.txn(t).await?;
    let mut rev = resp.revision;
    if !resp.succeeded {
        let existing = txn_kv(&resp, 0)
            .ok_or_else(|| Status::internal("election key vanished inside a txn"))?;
        rev = existing.create_revision;
        if existing.value != r.value
            && let Err(e) = kv.proclaim(&key, rev, lease, r.value.clone()).await
        {
            let _ = kv.resign(&key, rev).await;
            return Err(e);
        }
    }

    let waited = tokio::select! {
        w = kv.wait_deletes(&pfx, rev - 1) => w,
        _ = caller.gone() => Err(canceled()),
    };
    if let Err(e) = waited {
        // Only a cancelled campaign withdraws (etcd: `case <-ctx.Done()`).
        if caller.is_gone() {
            let _ = kv.resign(&key, rev).await;
        }
        return Err(e);
    }
    Ok(epb::CampaignResponse {
        header: Some(hdr),
        leader: Some(epb::LeaderKey {
            name: r.name,
            key,
            rev,
            lease,
        }),
    })
}

/// `Election.observe`: sends the leader, then every new value it
/// proclaims; when it goes, the next leader, and so on. Ends (the stream
/// closes with OK, as etcd's) if a read or a watch fails, or when the
/// client leaves.
async fn observe(api: Shared, pfx: Bytes, out: mpsc::Sender<Result<epb::LeaderResponse, Status>>) {
    let kv = Kv(&api);
    let term = || api.term.load(Ordering::Relaxed);
    loop {
        let got = tokio::select! {
            g = kv.get(first_create(&pfx)) => g,
            _ = out.closed() => return,
        };
        let Ok((resp, hdr)) = got else { return };
        let (hdr, leader) = match resp.kvs.into_iter().next() {
            Some(k) => (hdr, k),
            None => {
                // Wait for the first key put under the prefix.
                let create = WatchCreate {
                    key: pfx.clone(),
                    range_end: prefix_end(&pfx),
                    start_revision: resp.revision,
                    ..WatchCreate::default()
                };
                let Some(mut w) = CoreWatch::open(&api.core, create) else {
                    return;
                };
                loop {
                    let r = tokio::select! {
                        r = w.recv() => r,
                        _ = out.closed() => return,
                    };
                    let Some(r) = r else { return };
                    if r.canceled {
                        return;
                    }
                    let revision = r.revision;
                    if let Some(e) = r.events.into_iter().find(|e| e.kind == m::EventType::Put) {
                        // The header at the put's own revision, in case the
                        // response holds several.
                        let mut h = kv.header(revision, term());
                        h.revision = e.kv.mod_revision;
                        break (h, e.kv);
                    }
                }
            }
        };
        let next = hdr.revision + 1;
        let key = leader.key.clone();
        let msg = epb::LeaderResponse {
            header: Some(hdr),
            kv: Some(kv_out(leader)),
        };
        if out.send(Ok(msg)).await.is_err() {
            return;
        }

        // Follow the leader's key until it is deleted.
        let create = WatchCreate {
            key,
            start_revision: next,
            ..WatchCreate::default()
        };
        let Some(mut w) = CoreWatch::open(&api.core, create) else {
            return;
        };
        'follow: loop {
            let r = tokio::select! {
                r = w.recv() => r,
                _ = out.closed() => return,
            };
            let Some(r) = r else { return };
            for e in r.events {
                if e.kind == m::EventType::Delete {
                    break 'follow;
                }
                let msg = epb::LeaderResponse {
                    header: Some(kv.header(r.revision, term())),
                    kv: Some(kv_out(e.kv)),
                };
                if out.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            // etcd's watch channel closes after a cancelled response.
            if r.canceled {
                return;
            }
        }
    }
}

/// The Lock service, as `serve` registers it.
pub fn lock_service(api: Shared) -> lock_server::LockServer<Lock> {
    lock_server::LockServer::new(Lock(api))
}

/// The Election service, as `serve` registers it: a campaign or a
/// proclamation carries a value, so it takes messages as large as a put.
pub fn election_service(
    api: Shared,
    max_message_bytes: usize,
) -> election_server::ElectionServer<Election> {
    election_server::ElectionServer::new(Election(api)).max_decoding_message_size(max_message_bytes)
}

/// etcd's Lock service.
pub struct Lock(pub Shared);

#[tonic::async_trait]
impl lock_server::Lock for Lock {
    async fn lock(
        &self,
        request: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let r = request.into_inner();
        let api = self.0.clone();
        detached(move |caller| lock(api, r, caller))
            .await
            .map(Response::new)
            .map_err(as_etcd)
    }

    async fn unlock(
        &self,
        request: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let key = request.into_inner().key;
        let header = Kv(&self.0).delete(key).await.map_err(as_etcd)?;
        Ok(Response::new(lpb::UnlockResponse {
            header: Some(header),
        }))
    }
}

/// etcd's Election service.
pub struct Election(pub Shared);

fn leader_key(k: Option<epb::LeaderKey>) -> Result<epb::LeaderKey, Status> {
    k.ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))
}

#[tonic::async_trait]
impl election_server::Election for Election {
    async fn campaign(
        &self,
        request: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let r = request.into_inner();
        let api = self.0.clone();
        detached(move |caller| campaign(api, r, caller))
            .await
            .map(Response::new)
            .map_err(as_etcd)
    }

    async fn proclaim(
        &self,
        request: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let r = request.into_inner();
        let l = leader_key(r.leader)?;
        let kv = Kv(&self.0);
        let lease = kv.session_lease(l.lease).await.map_err(as_etcd)?;
        let header = kv
            .proclaim(&l.key, l.rev, lease, r.value)
            .await
            .map_err(as_etcd)?;
        Ok(Response::new(epb::ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let pfx = concat(&request.into_inner().name, b"/");
        let (r, header) = Kv(&self.0).get(first_create(&pfx)).await.map_err(as_etcd)?;
        let leader = r
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| Status::unknown(ERR_ELECTION_NO_LEADER))?;
        Ok(Response::new(epb::LeaderResponse {
            header: Some(header),
            kv: Some(kv_out(leader)),
        }))
    }

    type ObserveStream = BoxStream<epb::LeaderResponse>;

    async fn observe(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let pfx = concat(&request.into_inner().name, b"/");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(observe(self.0.clone(), pfx, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        request: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let l = leader_key(request.into_inner().leader)?;
        let kv = Kv(&self.0);
        kv.session_lease(l.lease).await.map_err(as_etcd)?;
        let header = kv.resign(&l.key, l.rev).await.map_err(as_etcd)?;
        Ok(Response::new(epb::ResignResponse {
            header: Some(header),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_as_etcd_computes_them() {
        assert_eq!(&prefix_end(b"a/")[..], b"a0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"\xff\xff")[..], b"\0");
        assert_eq!(&prefix_end(b"")[..], b"\0");
    }

    #[test]
    fn lease_keys_print_the_lease_as_go_does() {
        assert_eq!(&lease_key(b"l/", 0x694d_77a1_b2c3)[..], b"l/694d77a1b2c3");
        assert_eq!(&lease_key(b"l/", -26)[..], b"l/-1a");
    }
}
