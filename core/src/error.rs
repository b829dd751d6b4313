//! etcd's errors, one variant each, with etcd's exact texts. The core owns the
//! text; the server maps each variant to its gRPC status code (`grpc_code`
//! names it here so one table test can check both against etcd's list).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdError {
    EmptyKey,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    TooManyOps,
    DuplicateKey,
    Compacted,
    FutureRev,
    NoSpace,
    LeaseNotFound,
    LeaseExist,
    LeaseTtlTooLarge,
    RequestTooLarge,
    TooManyRequests,
    NoLeader,
    Timeout,
    LeaderChanged,
    Unhealthy,
    MemberExist,
    PeerUrlExist,
    MemberNotFound,
    MemberNotLearner,
    LearnerNotReady,
    TooManyLearners,
    MemberBadUrls,
    /// Auth errors come from the auth store with their own texts.
    Auth(crate::auth::AuthError),
}

impl EtcdError {
    /// The gRPC status code name etcd uses for this error.
    pub fn grpc_code(&self) -> &'static str {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge | MemberBadUrls => "InvalidArgument",
            Compacted | FutureRev | LeaseTtlTooLarge => "OutOfRange",
            NoSpace | TooManyRequests => "ResourceExhausted",
            LeaseNotFound | MemberNotFound => "NotFound",
            LeaseExist | MemberExist | PeerUrlExist | MemberNotLearner | LearnerNotReady
            | TooManyLearners => "FailedPrecondition",
            NoLeader | Timeout | LeaderChanged | Unhealthy => "Unavailable",
            Auth(e) => e.grpc_code(),
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EtcdError::*;
        let s = match self {
            EmptyKey => "etcdserver: key is not provided",
            KeyNotFound => "etcdserver: key not found",
            ValueProvided => "etcdserver: value is provided",
            LeaseProvided => "etcdserver: lease is provided",
            TooManyOps => "etcdserver: too many operations in txn request",
            DuplicateKey => "etcdserver: duplicate key given in txn request",
            Compacted => "etcdserver: mvcc: required revision has been compacted",
            FutureRev => "etcdserver: mvcc: required revision is a future revision",
            NoSpace => "etcdserver: mvcc: database space exceeded",
            LeaseNotFound => "etcdserver: requested lease not found",
            LeaseExist => "etcdserver: lease already exists",
            LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            RequestTooLarge => "etcdserver: request is too large",
            TooManyRequests => "etcdserver: too many requests",
            NoLeader => "etcdserver: no leader",
            Timeout => "etcdserver: request timed out",
            LeaderChanged => "etcdserver: leader changed",
            Unhealthy => "etcdserver: unhealthy cluster",
            MemberExist => "etcdserver: member ID already exist",
            PeerUrlExist => "etcdserver: Peer URLs already exists",
            MemberNotFound => "etcdserver: member not found",
            MemberNotLearner => "etcdserver: can only promote a learner member",
            LearnerNotReady => {
                "etcdserver: can only promote a learner member which is in sync with leader"
            }
            TooManyLearners => "etcdserver: too many learner members in cluster",
            MemberBadUrls => "etcdserver: given member URLs are invalid",
            Auth(e) => return write!(f, "{e}"),
        };
        f.write_str(s)
    }
}

impl std::error::Error for EtcdError {}
