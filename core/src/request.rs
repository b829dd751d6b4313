//! What clients (and the leader itself) ask of the etcd state machine, how it
//! is encoded in log entries, and the checks etcd's API layer makes before a
//! request is proposed (`v3rpc/key.go`, `lease.go`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth::{PermType, Permission};
use crate::codec::{self, DecodeError, Reader};
use crate::error::EtcdError;
use crate::mvcc::types::*;
use crate::watch::{StreamId, WatchCreate};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: i64,
        physical: bool,
    },
    /// `id == 0`: the member that proposes it picks one.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A keep-alive.
    LeaseRenew {
        id: i64,
    },
    LeaseTimeToLive {
        id: i64,
        keys: bool,
    },
    LeaseLeases,
    HashKv {
        revision: i64,
    },
    /// Proposed by the leader: the lease expired at this renew epoch.
    LeaseExpire {
        id: i64,
        epoch: u64,
    },
    /// Proposed by the leader: remaining TTLs in milliseconds.
    LeaseCheckpoint(Vec<(i64, i64)>),
    /// Watch requests concern one member's streams and never enter the log.
    WatchCreate {
        stream: StreamId,
        create: WatchCreate,
    },
    WatchCancel {
        stream: StreamId,
        watch_id: i64,
    },
    WatchProgress {
        stream: StreamId,
    },
    /// The driver delivered `n` responses of the stream.
    WatchAck {
        stream: StreamId,
        n: u64,
    },
    WatchClose {
        stream: StreamId,
    },
    Auth(AuthRequest),
    /// A member announces its name and client URLs (etcd's attribute update).
    MemberPublish {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    MemberList,
    /// etcd's alarms (`Maintenance.Alarm`): list, raise or clear one.
    Alarm {
        action: AlarmAction,
        member: u64,
        kind: AlarmKind,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AlarmAction {
    Get,
    Activate,
    Deactivate,
}

/// etcd's `AlarmType` values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlarmKind {
    None = 0,
    NoSpace = 1,
    Corrupt = 2,
}

impl AlarmKind {
    pub fn from_i32(v: i32) -> Option<AlarmKind> {
        match v {
            0 => Some(AlarmKind::None),
            1 => Some(AlarmKind::NoSpace),
            2 => Some(AlarmKind::Corrupt),
            _ => None,
        }
    }

    /// The name etcd prints (`NOSPACE`, `CORRUPT`).
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::None => "NONE",
            AlarmKind::NoSpace => "NOSPACE",
            AlarmKind::Corrupt => "CORRUPT",
        }
    }
}

/// Auth management. Passwords arrive hashed (hashing lives with the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest {
    Enable,
    Disable,
    Status,
    UserAdd {
        name: String,
        password_hash: Bytes,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: Bytes,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    UserGet {
        name: String,
    },
    UserList,
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Permission,
    },
    RoleRevokePermission {
        name: String,
        key: Bytes,
        range_end: Bytes,
    },
    RoleGet {
        name: String,
    },
    RoleList,
}

impl AuthRequest {
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            AuthRequest::Status
                | AuthRequest::UserGet { .. }
                | AuthRequest::UserList
                | AuthRequest::RoleGet { .. }
                | AuthRequest::RoleList
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResponse {
    /// A change was made (or refused without error, as etcd does for some).
    Done,
    Status {
        enabled: bool,
        auth_revision: u64,
    },
    User {
        roles: Vec<String>,
    },
    Users {
        names: Vec<String>,
    },
    Role {
        perms: Vec<Permission>,
    },
    Roles {
        names: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
        revision: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    LeaseRenew {
        id: i64,
        ttl: i64,
        revision: i64,
    },
    LeaseTimeToLive {
        id: i64,
        ttl: i64,
        granted_ttl: i64,
        keys: Vec<Bytes>,
        revision: i64,
    },
    LeaseLeases {
        ids: Vec<i64>,
        revision: i64,
    },
    HashKv {
        hash: u32,
        compact_revision: i64,
        revision: i64,
    },
    Auth {
        resp: AuthResponse,
        revision: i64,
    },
    MemberPublish {
        revision: i64,
    },
    MemberList {
        cluster_id: u64,
        members: Vec<crate::cluster::Member>,
        revision: i64,
    },
    /// The alarms active after the request (for Get: all of them; for a
    /// change: the ones it changed, as etcd answers).
    Alarms {
        alarms: Vec<(u64, AlarmKind)>,
        revision: i64,
    },
    /// Internal requests (expiry, checkpoints) answer nothing.
    Internal,
    Error(EtcdError),
}

impl Request {
    /// Whether the request only reads (and so may be served by ReadIndex
    /// instead of through the log).
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Range(_)
            | Request::LeaseTimeToLive { .. }
            | Request::LeaseLeases
            | Request::HashKv { .. }
            | Request::WatchCreate { .. }
            | Request::WatchCancel { .. }
            | Request::WatchProgress { .. }
            | Request::WatchAck { .. }
            | Request::WatchClose { .. }
            | Request::MemberList => true,
            Request::Alarm { action, .. } => *action == AlarmAction::Get,
            Request::Auth(a) => a.is_read_only(),
            Request::Txn(t) => !t.has_writes(),
            Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseRenew { .. }
            | Request::LeaseExpire { .. }
            | Request::LeaseCheckpoint(_)
            | Request::MemberPublish { .. } => false,
        }
    }
}

/// Limits the API layer enforces (etcd flags of the same names).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_txn_ops: 128,
            max_request_bytes: 1_572_864,
        }
    }
}

/// etcd's checks before a request is proposed: empty keys, flags that
/// contradict values, too many txn operations, puts and deletes of the same
/// key in one txn branch, oversize requests.
pub fn validate(req: &Request, limits: &ApiLimits) -> Result<(), EtcdError> {
    match req {
        Request::Range(r) => check_range(r),
        Request::Put(p) => check_put(p),
        Request::DeleteRange(d) => check_delete(d),
        Request::Txn(t) => {
            check_txn(t, limits.max_txn_ops)?;
            check_intervals(&t.success)?;
            check_intervals(&t.failure)?;
            Ok(())
        }
        Request::LeaseGrant { ttl, .. } => {
            if *ttl > crate::lease::MAX_LEASE_TTL_SECS {
                Err(EtcdError::LeaseTtlTooLarge)
            } else {
                Ok(())
            }
        }
        Request::Compact { .. }
        | Request::LeaseRevoke { .. }
        | Request::LeaseRenew { .. }
        | Request::LeaseTimeToLive { .. }
        | Request::LeaseLeases
        | Request::HashKv { .. }
        | Request::LeaseExpire { .. }
        | Request::LeaseCheckpoint(_)
        | Request::WatchCreate { .. }
        | Request::WatchCancel { .. }
        | Request::WatchProgress { .. }
        | Request::WatchAck { .. }
        | Request::WatchClose { .. }
        | Request::Auth(_)
        | Request::MemberPublish { .. }
        | Request::MemberList
        | Request::Alarm { .. } => Ok(()),
    }
    .and_then(|()| {
        let mut buf = BytesMut::new();
        encode_request(req, &mut buf);
        if buf.len() > limits.max_request_bytes {
            Err(EtcdError::RequestTooLarge)
        } else {
            Ok(())
        }
    })
}

fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        Err(EtcdError::EmptyKey)
    } else {
        Ok(())
    }
}

fn check_put(p: &PutRequest) -> Result<(), EtcdError> {
    if p.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

fn check_delete(d: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if d.key.is_empty() {
        Err(EtcdError::EmptyKey)
    } else {
        Ok(())
    }
}

/// etcd's `checkTxnRequest`: each list at most `max_ops` long (nested txns get
/// what is left), and every compare names a key.
fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in t.success.iter().chain(t.failure.iter()) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => check_delete(d)?,
            RequestOp::Txn(inner) => check_txn(inner, max_ops - opc)?,
        }
    }
    Ok(())
}

/// A deleted span for duplicate detection: `[start, end)`, `None` unbounded.
type Span = (Bytes, Option<Bytes>);

fn span_of(key: &Bytes, range_end: &Bytes) -> Span {
    match range_end.as_ref() {
        [] => {
            let mut end = key.to_vec();
            end.push(0);
            (key.clone(), Some(Bytes::from(end)))
        }
        [0] => (key.clone(), None),
        _ => (key.clone(), Some(range_end.clone())),
    }
}

fn span_contains(span: &Span, k: &[u8]) -> bool {
    k >= span.0.as_ref() && span.1.as_ref().is_none_or(|e| k < e.as_ref())
}

/// Where an op sits: for each enclosing nested txn (numbered in walk order),
/// which branch it is in. Two ops can both run unless they sit in different
/// branches of the same nested txn.
type Path = Vec<(usize, bool)>;

fn exclusive(a: &Path, b: &Path) -> bool {
    a.iter()
        .any(|(ta, ba)| b.iter().any(|(tb, bb)| ta == tb && ba != bb))
}

fn collect_writes(
    ops: &[RequestOp],
    path: &Path,
    next_txn: &mut usize,
    puts: &mut Vec<(Bytes, Path)>,
    dels: &mut Vec<(Span, Path)>,
) {
    for op in ops {
        match op {
            RequestOp::Put(p) => puts.push((p.key.clone(), path.clone())),
            RequestOp::DeleteRange(d) => dels.push((span_of(&d.key, &d.range_end), path.clone())),
            RequestOp::Range(_) => {}
            RequestOp::Txn(t) => {
                let id = *next_txn;
                *next_txn += 1;
                for (branch, ops) in [(true, &t.success), (false, &t.failure)] {
                    let mut p = path.clone();
                    p.push((id, branch));
                    collect_writes(ops, &p, next_txn, puts, dels);
                }
            }
        }
    }
}

/// etcd's `checkIntervals`, made order-independent: among ops that can run
/// together (one branch, nested txns included), no key is put twice and no
/// put falls inside a deleted range.
///
/// Divergence from etcd, on purpose: etcd compares a nested txn's puts only
/// with deletes seen before it, and reads a from-key delete (`range_end`
/// "\0") as an empty interval, so it lets a txn change one key twice in one
/// revision. We refuse those txns with the same error.
fn check_intervals(ops: &[RequestOp]) -> Result<(), EtcdError> {
    let (mut puts, mut dels) = (Vec::new(), Vec::new());
    collect_writes(ops, &Vec::new(), &mut 0, &mut puts, &mut dels);
    for (i, (k, pa)) in puts.iter().enumerate() {
        if puts[i + 1..]
            .iter()
            .any(|(k2, pb)| k2 == k && !exclusive(pa, pb))
        {
            return Err(EtcdError::DuplicateKey);
        }
        if dels
            .iter()
            .any(|(span, pb)| span_contains(span, k) && !exclusive(pa, pb))
        {
            return Err(EtcdError::DuplicateKey);
        }
    }
    Ok(())
}

// ---- encoding in log entries ------------------------------------------------

fn put_i64(buf: &mut BytesMut, v: i64) {
    buf.put_i64_le(v);
}

fn put_bool(buf: &mut BytesMut, v: bool) {
    buf.put_u8(u8::from(v));
}

fn get_i64(r: &mut Reader<'_>) -> Result<i64, DecodeError> {
    Ok(r.u64_le()? as i64)
}

fn get_bool(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        t => Err(DecodeError::BadTag(t)),
    }
}

fn get_bytes(r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
    Ok(Bytes::copy_from_slice(r.bytes()?))
}

fn encode_range(r: &RangeRequest, buf: &mut BytesMut) {
    codec::put_bytes(buf, &r.key);
    codec::put_bytes(buf, &r.range_end);
    put_i64(buf, r.limit);
    put_i64(buf, r.revision);
    buf.put_u8(match r.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    buf.put_u8(match r.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    });
    buf.put_u8(u8::from(r.serializable) | u8::from(r.keys_only) << 1 | u8::from(r.count_only) << 2);
    for v in [
        r.min_mod_revision,
        r.max_mod_revision,
        r.min_create_revision,
        r.max_create_revision,
    ] {
        put_i64(buf, v);
    }
}

fn decode_range(r: &mut Reader<'_>) -> Result<RangeRequest, DecodeError> {
    let key = get_bytes(r)?;
    let range_end = get_bytes(r)?;
    let limit = get_i64(r)?;
    let revision = get_i64(r)?;
    let sort_order = match r.u8()? {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        2 => SortOrder::Descend,
        t => return Err(DecodeError::BadTag(t)),
    };
    let sort_target = match r.u8()? {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::Create,
        3 => SortTarget::Mod,
        4 => SortTarget::Value,
        t => return Err(DecodeError::BadTag(t)),
    };
    let flags = r.u8()?;
    if flags > 7 {
        return Err(DecodeError::BadTag(flags));
    }
    Ok(RangeRequest {
        key,
        range_end,
        limit,
        revision,
        sort_order,
        sort_target,
        serializable: flags & 1 != 0,
        keys_only: flags & 2 != 0,
        count_only: flags & 4 != 0,
        min_mod_revision: get_i64(r)?,
        max_mod_revision: get_i64(r)?,
        min_create_revision: get_i64(r)?,
        max_create_revision: get_i64(r)?,
    })
}

fn encode_put(p: &PutRequest, buf: &mut BytesMut) {
    codec::put_bytes(buf, &p.key);
    codec::put_bytes(buf, &p.value);
    put_i64(buf, p.lease);
    buf.put_u8(u8::from(p.prev_kv) | u8::from(p.ignore_value) << 1 | u8::from(p.ignore_lease) << 2);
}

fn decode_put(r: &mut Reader<'_>) -> Result<PutRequest, DecodeError> {
    let key = get_bytes(r)?;
    let value = get_bytes(r)?;
    let lease = get_i64(r)?;
    let flags = r.u8()?;
    if flags > 7 {
        return Err(DecodeError::BadTag(flags));
    }
    Ok(PutRequest {
        key,
        value,
        lease,
        prev_kv: flags & 1 != 0,
        ignore_value: flags & 2 != 0,
        ignore_lease: flags & 4 != 0,
    })
}

fn encode_delete(d: &DeleteRangeRequest, buf: &mut BytesMut) {
    codec::put_bytes(buf, &d.key);
    codec::put_bytes(buf, &d.range_end);
    put_bool(buf, d.prev_kv);
}

fn decode_delete(r: &mut Reader<'_>) -> Result<DeleteRangeRequest, DecodeError> {
    Ok(DeleteRangeRequest {
        key: get_bytes(r)?,
        range_end: get_bytes(r)?,
        prev_kv: get_bool(r)?,
    })
}

fn encode_compare(c: &Compare, buf: &mut BytesMut) {
    buf.put_u8(match c.result {
        CompareResult::Equal => 0,
        CompareResult::Greater => 1,
        CompareResult::Less => 2,
        CompareResult::NotEqual => 3,
    });
    match &c.target {
        CompareTarget::Version(v) => {
            buf.put_u8(0);
            put_i64(buf, *v);
        }
        CompareTarget::Create(v) => {
            buf.put_u8(1);
            put_i64(buf, *v);
        }
        CompareTarget::Mod(v) => {
            buf.put_u8(2);
            put_i64(buf, *v);
        }
        CompareTarget::Value(v) => {
            buf.put_u8(3);
            codec::put_bytes(buf, v);
        }
        CompareTarget::Lease(v) => {
            buf.put_u8(4);
            put_i64(buf, *v);
        }
    }
    codec::put_bytes(buf, &c.key);
    codec::put_bytes(buf, &c.range_end);
}

fn decode_compare(r: &mut Reader<'_>) -> Result<Compare, DecodeError> {
    let result = match r.u8()? {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        t => return Err(DecodeError::BadTag(t)),
    };
    let target = match r.u8()? {
        0 => CompareTarget::Version(get_i64(r)?),
        1 => CompareTarget::Create(get_i64(r)?),
        2 => CompareTarget::Mod(get_i64(r)?),
        3 => CompareTarget::Value(get_bytes(r)?),
        4 => CompareTarget::Lease(get_i64(r)?),
        t => return Err(DecodeError::BadTag(t)),
    };
    Ok(Compare {
        result,
        target,
        key: get_bytes(r)?,
        range_end: get_bytes(r)?,
    })
}

/// Nesting limit for txns inside txns when decoding, so hostile input cannot
/// exhaust the stack.
const MAX_TXN_DEPTH: usize = 32;

fn encode_txn(t: &TxnRequest, buf: &mut BytesMut) {
    codec::put_uvarint(buf, t.compare.len() as u64);
    for c in &t.compare {
        encode_compare(c, buf);
    }
    for ops in [&t.success, &t.failure] {
        codec::put_uvarint(buf, ops.len() as u64);
        for op in ops {
            match op {
                RequestOp::Range(r) => {
                    buf.put_u8(0);
                    encode_range(r, buf);
                }
                RequestOp::Put(p) => {
                    buf.put_u8(1);
                    encode_put(p, buf);
                }
                RequestOp::DeleteRange(d) => {
                    buf.put_u8(2);
                    encode_delete(d, buf);
                }
                RequestOp::Txn(inner) => {
                    buf.put_u8(3);
                    encode_txn(inner, buf);
                }
            }
        }
    }
}

fn decode_txn(r: &mut Reader<'_>, depth: usize) -> Result<TxnRequest, DecodeError> {
    if depth > MAX_TXN_DEPTH {
        return Err(DecodeError::BadLength(depth as u64));
    }
    let n = r.count(4)?;
    let mut compare = Vec::with_capacity(n);
    for _ in 0..n {
        compare.push(decode_compare(r)?);
    }
    let mut branches = [Vec::new(), Vec::new()];
    for ops in branches.iter_mut() {
        let n = r.count(3)?;
        ops.reserve(n);
        for _ in 0..n {
            let op = match r.u8()? {
                0 => RequestOp::Range(decode_range(r)?),
                1 => RequestOp::Put(decode_put(r)?),
                2 => RequestOp::DeleteRange(decode_delete(r)?),
                3 => RequestOp::Txn(decode_txn(r, depth + 1)?),
                t => return Err(DecodeError::BadTag(t)),
            };
            ops.push(op);
        }
    }
    let [success, failure] = branches;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

pub fn encode_request(req: &Request, buf: &mut BytesMut) {
    match req {
        Request::Range(r) => {
            buf.put_u8(1);
            encode_range(r, buf);
        }
        Request::Put(p) => {
            buf.put_u8(2);
            encode_put(p, buf);
        }
        Request::DeleteRange(d) => {
            buf.put_u8(3);
            encode_delete(d, buf);
        }
        Request::Txn(t) => {
            buf.put_u8(4);
            encode_txn(t, buf);
        }
        Request::Compact { revision, physical } => {
            buf.put_u8(5);
            put_i64(buf, *revision);
            put_bool(buf, *physical);
        }
        Request::LeaseGrant { id, ttl } => {
            buf.put_u8(6);
            put_i64(buf, *id);
            put_i64(buf, *ttl);
        }
        Request::LeaseRevoke { id } => {
            buf.put_u8(7);
            put_i64(buf, *id);
        }
        Request::LeaseRenew { id } => {
            buf.put_u8(8);
            put_i64(buf, *id);
        }
        Request::LeaseTimeToLive { id, keys } => {
            buf.put_u8(9);
            put_i64(buf, *id);
            put_bool(buf, *keys);
        }
        Request::LeaseLeases => buf.put_u8(10),
        Request::HashKv { revision } => {
            buf.put_u8(11);
            put_i64(buf, *revision);
        }
        Request::LeaseExpire { id, epoch } => {
            buf.put_u8(12);
            put_i64(buf, *id);
            buf.put_u64_le(*epoch);
        }
        Request::LeaseCheckpoint(v) => {
            buf.put_u8(13);
            codec::put_uvarint(buf, v.len() as u64);
            for (id, ms) in v {
                put_i64(buf, *id);
                put_i64(buf, *ms);
            }
        }
        Request::WatchCreate { stream, create: c } => {
            buf.put_u8(14);
            buf.put_u64_le(*stream);
            codec::put_bytes(buf, &c.key);
            codec::put_bytes(buf, &c.range_end);
            put_i64(buf, c.start_revision);
            buf.put_u8(
                u8::from(c.progress_notify)
                    | u8::from(c.no_put) << 1
                    | u8::from(c.no_delete) << 2
                    | u8::from(c.prev_kv) << 3
                    | u8::from(c.fragment) << 4,
            );
            put_i64(buf, c.watch_id);
        }
        Request::WatchCancel { stream, watch_id } => {
            buf.put_u8(15);
            buf.put_u64_le(*stream);
            put_i64(buf, *watch_id);
        }
        Request::WatchProgress { stream } => {
            buf.put_u8(16);
            buf.put_u64_le(*stream);
        }
        Request::WatchAck { stream, n } => {
            buf.put_u8(17);
            buf.put_u64_le(*stream);
            buf.put_u64_le(*n);
        }
        Request::WatchClose { stream } => {
            buf.put_u8(18);
            buf.put_u64_le(*stream);
        }
        Request::Auth(a) => {
            buf.put_u8(19);
            encode_auth(a, buf);
        }
        Request::MemberPublish {
            id,
            name,
            client_urls,
        } => {
            buf.put_u8(20);
            buf.put_u64_le(*id);
            put_str(buf, name);
            codec::put_uvarint(buf, client_urls.len() as u64);
            for u in client_urls {
                put_str(buf, u);
            }
        }
        Request::MemberList => buf.put_u8(21),
        Request::Alarm {
            action,
            member,
            kind,
        } => {
            buf.put_u8(22);
            buf.put_u8(*action as u8);
            buf.put_u64_le(*member);
            buf.put_u8(*kind as u8);
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    codec::put_bytes(buf, s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError::BadTag(0xfe))
}

fn encode_auth(a: &AuthRequest, buf: &mut BytesMut) {
    match a {
        AuthRequest::Enable => buf.put_u8(0),
        AuthRequest::Disable => buf.put_u8(1),
        AuthRequest::Status => buf.put_u8(2),
        AuthRequest::UserAdd {
            name,
            password_hash,
            no_password,
        } => {
            buf.put_u8(3);
            put_str(buf, name);
            codec::put_bytes(buf, password_hash);
            put_bool(buf, *no_password);
        }
        AuthRequest::UserDelete { name } => {
            buf.put_u8(4);
            put_str(buf, name);
        }
        AuthRequest::UserChangePassword {
            name,
            password_hash,
        } => {
            buf.put_u8(5);
            put_str(buf, name);
            codec::put_bytes(buf, password_hash);
        }
        AuthRequest::UserGrantRole { user, role } => {
            buf.put_u8(6);
            put_str(buf, user);
            put_str(buf, role);
        }
        AuthRequest::UserRevokeRole { user, role } => {
            buf.put_u8(7);
            put_str(buf, user);
            put_str(buf, role);
        }
        AuthRequest::UserGet { name } => {
            buf.put_u8(8);
            put_str(buf, name);
        }
        AuthRequest::UserList => buf.put_u8(9),
        AuthRequest::RoleAdd { name } => {
            buf.put_u8(10);
            put_str(buf, name);
        }
        AuthRequest::RoleDelete { name } => {
            buf.put_u8(11);
            put_str(buf, name);
        }
        AuthRequest::RoleGrantPermission { name, perm } => {
            buf.put_u8(12);
            put_str(buf, name);
            buf.put_u8(match perm.perm_type {
                PermType::Read => 0,
                PermType::Write => 1,
                PermType::ReadWrite => 2,
            });
            codec::put_bytes(buf, &perm.key);
            codec::put_bytes(buf, &perm.range_end);
        }
        AuthRequest::RoleRevokePermission {
            name,
            key,
            range_end,
        } => {
            buf.put_u8(13);
            put_str(buf, name);
            codec::put_bytes(buf, key);
            codec::put_bytes(buf, range_end);
        }
        AuthRequest::RoleGet { name } => {
            buf.put_u8(14);
            put_str(buf, name);
        }
        AuthRequest::RoleList => buf.put_u8(15),
    }
}

fn decode_auth(r: &mut Reader<'_>) -> Result<AuthRequest, DecodeError> {
    Ok(match r.u8()? {
        0 => AuthRequest::Enable,
        1 => AuthRequest::Disable,
        2 => AuthRequest::Status,
        3 => AuthRequest::UserAdd {
            name: get_str(r)?,
            password_hash: get_bytes(r)?,
            no_password: get_bool(r)?,
        },
        4 => AuthRequest::UserDelete { name: get_str(r)? },
        5 => AuthRequest::UserChangePassword {
            name: get_str(r)?,
            password_hash: get_bytes(r)?,
        },
        6 => AuthRequest::UserGrantRole {
            user: get_str(r)?,
            role: get_str(r)?,
        },
        7 => AuthRequest::UserRevokeRole {
            user: get_str(r)?,
            role: get_str(r)?,
        },
        8 => AuthRequest::UserGet { name: get_str(r)? },
        9 => AuthRequest::UserList,
        10 => AuthRequest::RoleAdd { name: get_str(r)? },
        11 => AuthRequest::RoleDelete { name: get_str(r)? },
        12 => {
            let name = get_str(r)?;
            let perm_type = match r.u8()? {
                0 => PermType::Read,
                1 => PermType::Write,
                2 => PermType::ReadWrite,
                t => return Err(DecodeError::BadTag(t)),
            };
            let key = get_bytes(r)?;
            let range_end = get_bytes(r)?;
            AuthRequest::RoleGrantPermission {
                name,
                perm: Permission {
                    key,
                    range_end,
                    perm_type,
                },
            }
        }
        13 => AuthRequest::RoleRevokePermission {
            name: get_str(r)?,
            key: get_bytes(r)?,
            range_end: get_bytes(r)?,
        },
        14 => AuthRequest::RoleGet { name: get_str(r)? },
        15 => AuthRequest::RoleList,
        t => return Err(DecodeError::BadTag(t)),
    })
}

pub fn decode_request(data: &[u8]) -> Result<Request, DecodeError> {
    let mut r = Reader::new(data);
    let req = match r.u8()? {
        1 => Request::Range(decode_range(&mut r)?),
        2 => Request::Put(decode_put(&mut r)?),
        3 => Request::DeleteRange(decode_delete(&mut r)?),
        4 => Request::Txn(decode_txn(&mut r, 0)?),
        5 => Request::Compact {
            revision: get_i64(&mut r)?,
            physical: get_bool(&mut r)?,
        },
        6 => Request::LeaseGrant {
            id: get_i64(&mut r)?,
            ttl: get_i64(&mut r)?,
        },
        7 => Request::LeaseRevoke {
            id: get_i64(&mut r)?,
        },
        8 => Request::LeaseRenew {
            id: get_i64(&mut r)?,
        },
        9 => Request::LeaseTimeToLive {
            id: get_i64(&mut r)?,
            keys: get_bool(&mut r)?,
        },
        10 => Request::LeaseLeases,
        11 => Request::HashKv {
            revision: get_i64(&mut r)?,
        },
        12 => Request::LeaseExpire {
            id: get_i64(&mut r)?,
            epoch: r.u64_le()?,
        },
        13 => {
            let n = r.count(16)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push((get_i64(&mut r)?, get_i64(&mut r)?));
            }
            Request::LeaseCheckpoint(v)
        }
        14 => {
            let stream = r.u64_le()?;
            let key = get_bytes(&mut r)?;
            let range_end = get_bytes(&mut r)?;
            let start_revision = get_i64(&mut r)?;
            let f = r.u8()?;
            if f > 31 {
                return Err(DecodeError::BadTag(f));
            }
            let watch_id = get_i64(&mut r)?;
            Request::WatchCreate {
                stream,
                create: WatchCreate {
                    key,
                    range_end,
                    start_revision,
                    progress_notify: f & 1 != 0,
                    no_put: f & 2 != 0,
                    no_delete: f & 4 != 0,
                    prev_kv: f & 8 != 0,
                    watch_id,
                    fragment: f & 16 != 0,
                },
            }
        }
        15 => Request::WatchCancel {
            stream: r.u64_le()?,
            watch_id: get_i64(&mut r)?,
        },
        16 => Request::WatchProgress {
            stream: r.u64_le()?,
        },
        17 => Request::WatchAck {
            stream: r.u64_le()?,
            n: r.u64_le()?,
        },
        18 => Request::WatchClose {
            stream: r.u64_le()?,
        },
        19 => Request::Auth(decode_auth(&mut r)?),
        20 => {
            let id = r.u64_le()?;
            let name = get_str(&mut r)?;
            let n = r.count(1)?;
            let mut client_urls = Vec::with_capacity(n);
            for _ in 0..n {
                client_urls.push(get_str(&mut r)?);
            }
            Request::MemberPublish {
                id,
                name,
                client_urls,
            }
        }
        21 => Request::MemberList,
        22 => {
            let action = match r.u8()? {
                0 => AlarmAction::Get,
                1 => AlarmAction::Activate,
                2 => AlarmAction::Deactivate,
                t => return Err(DecodeError::BadTag(t)),
            };
            let member = r.u64_le()?;
            let k = r.u8()?;
            let kind = AlarmKind::from_i32(i32::from(k)).ok_or(DecodeError::BadTag(k))?;
            Request::Alarm {
                action,
                member,
                kind,
            }
        }
        t => return Err(DecodeError::BadTag(t)),
    };
    r.finish()?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &'static str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: Bytes::from_static(k.as_bytes()),
            ..PutRequest::default()
        })
    }

    fn del(k: &'static str, end: &'static str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(k.as_bytes()),
            range_end: Bytes::from_static(end.as_bytes()),
            prev_kv: false,
        })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn check(t: TxnRequest) -> Result<(), EtcdError> {
        validate(&Request::Txn(t), &ApiLimits::default())
    }

    #[test]
    fn duplicate_keys_in_a_branch_are_refused_as_etcd_does() {
        assert_eq!(
            check(txn(vec![put("a"), put("a")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(txn(vec![put("b"), del("a", "c")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(txn(vec![put("a"), del("a", "")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        // Different branches never both run.
        assert_eq!(check(txn(vec![put("a")], vec![put("a")])), Ok(()));
        // Overlapping deletes are fine.
        assert_eq!(
            check(txn(vec![del("a", "c"), del("b", "d")], vec![])),
            Ok(())
        );
        // A nested txn's branches may both put a key, but not alongside the parent.
        let nested = RequestOp::Txn(txn(vec![put("x")], vec![put("x")]));
        assert_eq!(check(txn(vec![nested.clone()], vec![])), Ok(()));
        assert_eq!(
            check(txn(vec![nested, put("x")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        // Our divergences: a put inside a from-key delete, and a put in one
        // nested txn deleted by a later sibling, are refused.
        assert_eq!(
            check(txn(vec![put("b"), del("a", "\0")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        let put_a = RequestOp::Txn(txn(vec![put("a")], vec![]));
        let del_a = RequestOp::Txn(txn(vec![del("a", "")], vec![]));
        assert_eq!(
            check(txn(vec![put_a.clone(), del_a.clone()], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        // ...unless they are in the two branches of one nested txn.
        let either = RequestOp::Txn(txn(vec![put("a")], vec![del("a", "")]));
        assert_eq!(check(txn(vec![either], vec![])), Ok(()));
    }

    #[test]
    fn api_checks_match_etcd() {
        let empty = Request::Put(PutRequest::default());
        assert_eq!(
            validate(&empty, &ApiLimits::default()),
            Err(EtcdError::EmptyKey)
        );
        let p = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ignore_value: true,
            ..PutRequest::default()
        };
        assert_eq!(
            validate(&Request::Put(p), &ApiLimits::default()),
            Err(EtcdError::ValueProvided)
        );
        let p = PutRequest {
            key: Bytes::from_static(b"k"),
            lease: 5,
            ignore_lease: true,
            ..PutRequest::default()
        };
        assert_eq!(
            validate(&Request::Put(p), &ApiLimits::default()),
            Err(EtcdError::LeaseProvided)
        );
        let many = txn((0..129).map(|_| put("k")).collect(), vec![]);
        assert_eq!(check(many), Err(EtcdError::TooManyOps));
        let big = Request::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0u8; 2 * 1024 * 1024]),
            ..PutRequest::default()
        });
        assert_eq!(
            validate(&big, &ApiLimits::default()),
            Err(EtcdError::RequestTooLarge)
        );
    }
}
