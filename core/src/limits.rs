//! Every bound the core enforces, in one place. Each queue has a capacity and
//! a defined behaviour when full (an etcd error, never silent growth).

/// Limits a member enforces on its clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests accepted and not yet answered; beyond it new requests get
    /// `etcdserver: too many requests`.
    pub max_pending_requests: usize,
    /// Writes proposed together in one log entry at most.
    pub max_requests_per_entry: usize,
    /// Entry bytes applied per `ready()` (at least one entry), so a long backlog
    /// cannot stall the driver's loop.
    pub max_apply_bytes_per_ready: u64,
    /// Committed entries not yet applied beyond which new writes are
    /// refused with `etcdserver: too many requests` (etcd's
    /// `maxGapBetweenApplyAndCommitIndex`).
    pub max_apply_backlog_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_requests: 10_000,
            max_requests_per_entry: 1_000,
            max_apply_bytes_per_ready: 64 * 1024 * 1024,
            max_apply_backlog_entries: 5_000,
        }
    }
}
