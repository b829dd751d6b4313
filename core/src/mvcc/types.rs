//! The KV API's data, field for field as etcd's `mvccpb` and `etcdserverpb`
//! messages, so the gRPC layer maps one to one.

use bytes::Bytes;

/// A store revision: the number of writes since the store was created, plus
/// one (an empty store is at revision 1). Not a Raft index.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Puts to this key since its creation (1 after the first); 0 means deleted.
    pub version: i64,
    pub value: Bytes,
    pub lease: i64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    /// For a delete: the key, with `mod_revision` the deleting revision and the
    /// other fields zero (as etcd sends it).
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Bytes,
    /// Empty: the single key. `[0]`: every key >= `key`. Else `[key, range_end)`.
    pub range_end: Bytes,
    pub limit: i64,
    /// 0: the current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Bytes),
    Lease(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Bytes,
    pub range_end: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub revision: i64,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

impl TxnRequest {
    /// Whether any branch, at any depth, puts (what etcd's quota counts).
    pub fn has_puts(&self) -> bool {
        self.success
            .iter()
            .chain(self.failure.iter())
            .any(|op| match op {
                RequestOp::Put(_) => true,
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
                RequestOp::Txn(t) => t.has_puts(),
            })
    }

    /// Whether any branch, at any depth, writes (etcd's `isTxnReadonly`, negated).
    pub fn has_writes(&self) -> bool {
        self.success
            .iter()
            .chain(self.failure.iter())
            .any(|op| match op {
                RequestOp::Range(_) => false,
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
                RequestOp::Txn(t) => t.has_writes(),
            })
    }
}

/// `[key, end)` as etcd reads `key`/`range_end`: `None` end is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    Single(&'a [u8]),
    Span {
        start: &'a [u8],
        end: Option<&'a [u8]>,
    },
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Span {
                start: key,
                end: None,
            },
            end => KeyRange::Span {
                start: key,
                end: Some(end),
            },
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(s) => *s == k,
            KeyRange::Span { start, end } => k >= *start && end.is_none_or(|e| k < e),
        }
    }
}
