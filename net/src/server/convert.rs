//! Between etcd's wire messages (`pb`) and the core's types, field for field,
//! and from the core's errors to etcd's gRPC statuses.

use bytes::Bytes;
use tonic::{Code, Status};

use etcd_core::error::EtcdError;
use etcd_core::mvcc::types as m;
use etcd_core::node::NodeError;
use etcd_core::raft::ProposeError;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

pub fn code_of(name: &str) -> Code {
    match name {
        "InvalidArgument" => Code::InvalidArgument,
        "OutOfRange" => Code::OutOfRange,
        "ResourceExhausted" => Code::ResourceExhausted,
        "NotFound" => Code::NotFound,
        "FailedPrecondition" => Code::FailedPrecondition,
        "Unavailable" => Code::Unavailable,
        "PermissionDenied" => Code::PermissionDenied,
        "Unauthenticated" => Code::Unauthenticated,
        "AlreadyExists" => Code::AlreadyExists,
        "DeadlineExceeded" => Code::DeadlineExceeded,
        "Canceled" => Code::Cancelled,
        _ => Code::Unknown,
    }
}

pub fn etcd_status(e: &EtcdError) -> Status {
    Status::new(code_of(e.grpc_code()), e.to_string())
}

pub fn node_status(e: &NodeError) -> Status {
    let code = match e {
        NodeError::NoLeader | NodeError::Timeout => Code::Unavailable,
        NodeError::TooManyRequests | NodeError::NoSpace => Code::ResourceExhausted,
        NodeError::Rejected(ProposeError::NoLeader) => Code::Unavailable,
        NodeError::Rejected(ProposeError::TransferInProgress) => Code::Unavailable,
        NodeError::Rejected(ProposeError::ConfChangePending) => Code::Unavailable,
        NodeError::Rejected(ProposeError::InvalidConfChange(_)) => Code::FailedPrecondition,
        NodeError::StorageFailed => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

pub fn kv_out(kv: m::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event_out(e: m::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            m::EventType::Put => mvccpb::event::EventType::Put as i32,
            m::EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_out(e.kv)),
        prev_kv: e.prev_kv.map(kv_out),
    }
}

/// Unknown sort values read as the defaults, as etcd's server reads them.
pub fn range_in(r: pb::RangeRequest) -> m::RangeRequest {
    let sort_order = match r.sort_order {
        1 => m::SortOrder::Ascend,
        2 => m::SortOrder::Descend,
        _ => m::SortOrder::None,
    };
    let sort_target = match r.sort_target {
        0 => m::SortTarget::Key,
        1 => m::SortTarget::Version,
        2 => m::SortTarget::Create,
        3 => m::SortTarget::Mod,
        4 => m::SortTarget::Value,
        _ => m::SortTarget::Key,
    };
    m::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn put_in(p: pb::PutRequest) -> m::PutRequest {
    m::PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub fn delete_in(d: pb::DeleteRangeRequest) -> m::DeleteRangeRequest {
    m::DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

fn compare_in(c: pb::Compare) -> Result<m::Compare, Status> {
    use pb::compare::TargetUnion as U;
    let result = match c.result {
        0 => m::CompareResult::Equal,
        1 => m::CompareResult::Greater,
        2 => m::CompareResult::Less,
        3 => m::CompareResult::NotEqual,
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare result",
            ));
        }
    };
    // etcd reads the value of the union member named by `target`; a missing
    // member compares against the zero value.
    let target = match c.target {
        0 => m::CompareTarget::Version(match c.target_union {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        1 => m::CompareTarget::Create(match c.target_union {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        2 => m::CompareTarget::Mod(match c.target_union {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        3 => m::CompareTarget::Value(match c.target_union {
            Some(U::Value(v)) => v,
            _ => Bytes::new(),
        }),
        4 => m::CompareTarget::Lease(match c.target_union {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare target",
            ));
        }
    };
    Ok(m::Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    })
}

fn op_in(op: pb::RequestOp) -> Result<m::RequestOp, Status> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => Ok(m::RequestOp::Range(range_in(r))),
        Some(R::RequestPut(p)) => Ok(m::RequestOp::Put(put_in(p))),
        Some(R::RequestDeleteRange(d)) => Ok(m::RequestOp::DeleteRange(delete_in(d))),
        Some(R::RequestTxn(t)) => Ok(m::RequestOp::Txn(txn_in(t)?)),
        // etcd: a RequestOp with nothing set.
        None => Err(Status::invalid_argument("etcdserver: key is not provided")),
    }
}

pub fn txn_in(t: pb::TxnRequest) -> Result<m::TxnRequest, Status> {
    Ok(m::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare_in)
            .collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(op_in).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(op_in).collect::<Result<_, _>>()?,
    })
}

pub fn range_out(r: m::RangeResponse, h: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(h),
        kvs: r.kvs.into_iter().map(kv_out).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_out(r: m::PutResponse, h: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(h),
        prev_kv: r.prev_kv.map(kv_out),
    }
}

pub fn delete_out(r: m::DeleteRangeResponse, h: pb::ResponseHeader) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(h),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_out).collect(),
    }
}

/// A txn's answer. As in etcd, the responses inside it carry a header with
/// only their own revision: a read's is the revision it read at (before the
/// txn's writes), a write's the txn's revision.
pub fn txn_out(r: m::TxnResponse, h: pb::ResponseHeader) -> pb::TxnResponse {
    pb::TxnResponse {
        header: Some(h),
        succeeded: r.succeeded,
        responses: r.responses.into_iter().map(op_out).collect(),
    }
}

fn op_out(op: m::ResponseOp) -> pb::ResponseOp {
    use pb::response_op::Response as R;
    let only = |revision: i64| pb::ResponseHeader {
        revision,
        ..Default::default()
    };
    pb::ResponseOp {
        response: Some(match op {
            m::ResponseOp::Range(x) => {
                let h = only(x.revision);
                R::ResponseRange(range_out(x, h))
            }
            m::ResponseOp::Put(x) => {
                let h = only(x.revision);
                R::ResponsePut(put_out(x, h))
            }
            m::ResponseOp::DeleteRange(x) => {
                let h = only(x.revision);
                R::ResponseDeleteRange(delete_out(x, h))
            }
            m::ResponseOp::Txn(x) => {
                // etcd's `newTxnResp` leaves a nested txn's header empty.
                let h = only(0);
                R::ResponseTxn(txn_out(x, h))
            }
        }),
    }
}
