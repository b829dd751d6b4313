//! End-of-seed checks of an etcd workload, using etcd's revisions as the order.
//!
//! The committed log (every applied request, in index order) is replayed
//! through the reference model (`etcd_core::testing::etcd_model`), which gives
//! the state at every revision and the exact response every write must have
//! had. Then:
//! - every member's reported events per revision equal the model's;
//! - every acknowledged write's response equals the model's response to the
//!   same request at the revision it reports (so no acknowledged write is
//!   lost or changed);
//! - every read equals the model's answer at the read's header revision;
//! - real time: an operation that started after another finished sees a
//!   revision at least as new (strictly newer for a write that made one), and
//!   a linearizable read never sees a revision made by a write that started
//!   after the read finished;
//! - every watch is ordered, unique, atomic per revision and without gaps
//!   against the committed history, across reconnects.

use std::collections::BTreeMap;

use etcd_core::error::EtcdError;
use etcd_core::mvcc::{Event, EventType, KeyRange};
use etcd_core::request::{Request, Response};
use etcd_core::testing::etcd_model::EtcdModel;
use etcd_core::watch::{WatchCreate, WatchResponse};

/// How a client asked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Through the log.
    Write,
    /// ReadIndex.
    Linearizable,
    /// From the member's local state.
    Serializable,
}

#[derive(Clone, Debug)]
pub struct OpRecord {
    pub client: u64,
    pub call_ns: u64,
    /// None: no answer (may or may not have happened).
    pub return_ns: Option<u64>,
    pub mode: Mode,
    pub req: Request,
    pub resp: Option<Response>,
}

/// One logical watch as a client saw it, over reconnects.
#[derive(Clone, Debug)]
pub struct WatchRecord {
    pub client: u64,
    pub create: WatchCreate,
    /// The store revision when it was first created (for start_revision 0).
    pub created_at: i64,
    /// Everything received, in order, across reconnects.
    pub responses: Vec<WatchResponse>,
    /// The revision through which the client knows it has everything (from
    /// progress notifications or the end of the run), if any.
    pub complete_through: Option<i64>,
}

/// The response a write reports its revision in.
fn response_revision(r: &Response) -> Option<i64> {
    match r {
        Response::Put(p) => Some(p.revision),
        Response::DeleteRange(d) => Some(d.revision),
        Response::Txn(t) => Some(t.revision),
        Response::Compact { revision } => Some(*revision),
        Response::LeaseGrant { revision, .. }
        | Response::LeaseRevoke { revision }
        | Response::LeaseRenew { revision, .. }
        | Response::Auth { revision, .. }
        | Response::MemberPublish { revision } => Some(*revision),
        Response::Range(rr) => Some(rr.revision),
        Response::LeaseTimeToLive { revision, .. }
        | Response::LeaseLeases { revision, .. }
        | Response::HashKv { revision, .. }
        | Response::MemberList { revision, .. }
        | Response::Alarms { revision, .. } => Some(*revision),
        Response::Internal | Response::Error(_) => None,
    }
}

/// Errors the API layer gives before a request is proposed.
fn is_validation_error(e: &EtcdError) -> bool {
    matches!(
        e,
        EtcdError::EmptyKey
            | EtcdError::ValueProvided
            | EtcdError::LeaseProvided
            | EtcdError::TooManyOps
            | EtcdError::DuplicateKey
            | EtcdError::RequestTooLarge
            | EtcdError::LeaseTtlTooLarge
    )
}

pub struct Replay {
    pub model: EtcdModel,
    /// revision → (request, response, made it) of each applied request that
    /// reported that revision: the one write that made it, and those that
    /// changed nothing.
    pub by_revision: BTreeMap<i64, Vec<(Request, Response, bool)>>,
    /// Applied requests whose answer was an error (they report no revision).
    pub errors: Vec<(Request, Response)>,
}

/// Replays the committed log through the model.
pub fn replay(log: &[Request], min_lease_ttl_secs: i64) -> Replay {
    let mut model = EtcdModel::new(min_lease_ttl_secs);
    let mut by_revision: BTreeMap<i64, Vec<(Request, Response, bool)>> = BTreeMap::new();
    let mut errors = Vec::new();
    for req in log {
        let before = model.revision();
        let resp = model.apply(req);
        let made = model.revision() > before;
        match (&resp, response_revision(&resp)) {
            (Response::Error(_), _) => errors.push((req.clone(), resp)),
            (_, Some(rev)) => by_revision
                .entry(rev)
                .or_default()
                .push((req.clone(), resp, made)),
            // Internal requests (lease expiry) answer nobody but may make a revision.
            (_, None) => {
                by_revision
                    .entry(model.revision())
                    .or_default()
                    .push((req.clone(), resp, made))
            }
        }
    }
    Replay {
        model,
        by_revision,
        errors,
    }
}

/// The request as it was committed: a lease granted with id 0 got its id from
/// the member that proposed it.
fn committed_form(req: &Request, resp: &Response) -> Request {
    match (req, resp) {
        (Request::LeaseGrant { id: 0, ttl }, Response::LeaseGrant { id, .. }) => {
            Request::LeaseGrant { id: *id, ttl: *ttl }
        }
        (q, _) => q.clone(),
    }
}

/// Members' reported events of `revision` must be the model's.
pub fn check_events(replay: &Replay, revision: i64, events: &[Event]) -> Result<(), String> {
    match replay.model.events().get(&revision) {
        Some(want) if want.as_slice() == events => Ok(()),
        Some(want) => Err(format!(
            "revision {revision}: a member applied {events:?}\n  the model says {want:?}"
        )),
        None => Err(format!(
            "revision {revision}: a member reports events the committed log does not have: {events:?}"
        )),
    }
}

fn strip_prev(events: &[Event], keep: bool) -> Vec<Event> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if !keep {
                e.prev_kv = None;
            }
            e
        })
        .collect()
}

pub fn check_ops(replay: &Replay, ops: &[OpRecord]) -> Result<(), String> {
    // 1. Each answer agrees with the committed history.
    for op in ops {
        let Some(resp) = &op.resp else { continue };
        match op.mode {
            Mode::Write => {
                if let Response::Error(e) = resp
                    && is_validation_error(e)
                {
                    continue;
                }
                let req = committed_form(&op.req, resp);
                let found = match response_revision(resp) {
                    Some(rev) => replay
                        .by_revision
                        .get(&rev)
                        .is_some_and(|v| v.iter().any(|(q, r, _)| q == &req && r == resp)),
                    None => replay.errors.iter().any(|(q, r)| q == &req && r == resp),
                };
                if !found {
                    let rev = response_revision(resp);
                    let near = rev.and_then(|r| replay.by_revision.get(&r));
                    return Err(format!(
                        "client {} got {:?}\n  for {:?}\n  but the committed history at that revision has {:?}",
                        op.client, resp, op.req, near
                    ));
                }
            }
            Mode::Linearizable | Mode::Serializable => {
                let Some(h) = response_revision(resp) else {
                    if let Response::Error(e) = resp {
                        // A read refused for compaction or a future revision is
                        // checked with the revision bounds below; others are fine.
                        if !matches!(e, EtcdError::Compacted | EtcdError::FutureRev) {
                            continue;
                        }
                    }
                    continue;
                };
                if !matches!(op.req, Request::Range(_) | Request::Txn(_)) {
                    continue;
                }
                let (before, after) = replay.model.compacted_around(h);
                let a = replay.model.read_at(&op.req, h, before);
                let b = replay.model.read_at(&op.req, h, after);
                if resp != &a && resp != &b {
                    return Err(format!(
                        "client {} read {:?}\n  got {:?}\n  but at revision {h} the history says {:?}",
                        op.client, op.req, resp, a
                    ));
                }
            }
        }
    }
    // 2. Real-time order.
    let rev_of = |op: &OpRecord| -> Option<(i64, bool)> {
        let r = op.resp.as_ref()?;
        if matches!(r, Response::Error(_)) {
            return None;
        }
        let rev = response_revision(r)?;
        // Did this write make its revision? The replay knows which entry did.
        let made = op.mode == Mode::Write
            && replay.by_revision.get(&rev).is_some_and(|v| {
                let req = committed_form(&op.req, r);
                v.iter().any(|(q, rr, made)| *made && q == &req && rr == r)
            });
        Some((rev, made))
    };
    let mut done: Vec<(u64, i64)> = ops
        .iter()
        .filter(|o| o.mode != Mode::Serializable)
        .filter_map(|o| Some((o.return_ns?, rev_of(o)?.0)))
        .collect();
    done.sort_unstable();
    let mut by_call: Vec<&OpRecord> = ops
        .iter()
        .filter(|o| o.mode != Mode::Serializable)
        .collect();
    by_call.sort_by_key(|o| o.call_ns);
    let (mut k, mut max_before) = (0, 0i64);
    for op in &by_call {
        while k < done.len() && done[k].0 < op.call_ns {
            max_before = max_before.max(done[k].1);
            k += 1;
        }
        if let Some((rev, made)) = rev_of(op) {
            let ok = if made {
                rev > max_before
            } else {
                rev >= max_before
            };
            if !ok {
                return Err(format!(
                    "real-time order: client {} started after an operation at revision {max_before} finished, yet {} revision {rev}: {:?}",
                    op.client,
                    if made { "wrote" } else { "saw" },
                    op.req
                ));
            }
        }
    }
    // A linearizable read must not see a write that started after it ended.
    let mut made_writes: Vec<(u64, i64)> = ops
        .iter()
        .filter_map(|o| match rev_of(o) {
            Some((rev, true)) => Some((o.call_ns, rev)),
            _ => None,
        })
        .collect();
    made_writes.sort_unstable();
    for op in ops.iter().filter(|o| o.mode == Mode::Linearizable) {
        let (Some(ret), Some((h, _))) = (op.return_ns, rev_of(op)) else {
            continue;
        };
        if let Some((_, w)) = made_writes.iter().find(|(call, w)| *call > ret && *w <= h) {
            return Err(format!(
                "client {}'s read {:?} saw revision {h}, which includes revision {w} by a write that started after the read returned",
                op.client, op.req
            ));
        }
    }
    Ok(())
}

fn wanted(w: &WatchCreate, e: &Event) -> bool {
    let key = if w.key.is_empty() {
        &b"\0"[..]
    } else {
        &w.key[..]
    };
    KeyRange::new(key, &w.range_end).contains(&e.kv.key)
        && !(w.no_put && e.kind == EventType::Put)
        && !(w.no_delete && e.kind == EventType::Delete)
}

pub fn check_watch(replay: &Replay, w: &WatchRecord) -> Result<(), String> {
    let model = &replay.model;
    let start = if w.create.start_revision <= 0 {
        w.created_at + 1
    } else {
        w.create.start_revision
    };
    let mut next = start; // the first revision not yet accounted for
    let mut canceled_at = None;
    let mut pending_fragment: Option<(i64, Vec<Event>)> = None;
    for r in &w.responses {
        if r.canceled {
            if r.compact_revision > 0 {
                if r.compact_revision <= next {
                    return Err(format!(
                        "watch of client {} canceled for compaction at {} though it needed revision {next}",
                        w.client, r.compact_revision
                    ));
                }
                canceled_at = Some(r.compact_revision);
                break;
            }
            continue;
        }
        if r.events.is_empty() {
            // Progress: everything up to here must have been delivered.
            continue;
        }
        let rev = r.events[0].kv.mod_revision;
        if r.events.iter().any(|e| e.kv.mod_revision != rev) {
            return Err(format!(
                "watch of client {}: one response mixes revisions: {r:?}",
                w.client
            ));
        }
        let mut evs = r.events.clone();
        if let Some((frev, mut acc)) = pending_fragment.take() {
            if frev != rev {
                return Err(format!(
                    "watch of client {}: fragments of {frev} interrupted by {rev}",
                    w.client
                ));
            }
            acc.extend(evs);
            evs = acc;
        }
        if r.fragment {
            pending_fragment = Some((rev, evs));
            continue;
        }
        if rev < next {
            return Err(format!(
                "watch of client {}: revision {rev} delivered twice or out of order",
                w.client
            ));
        }
        if let Some((&gap, _)) = model
            .events()
            .range(next..rev)
            .find(|(_, evs)| evs.iter().any(|e| wanted(&w.create, e)))
        {
            return Err(format!(
                "watch of client {}: revision {gap} missing before {rev}",
                w.client
            ));
        }
        let want: Vec<Event> = model
            .events()
            .get(&rev)
            .map(|evs| {
                evs.iter()
                    .filter(|e| wanted(&w.create, e))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let got = strip_prev(&evs, w.create.prev_kv);
        let want_shaped = strip_prev(&want, w.create.prev_kv);
        // At a compaction point the previous values may be gone.
        let lenient = |v: &[Event]| strip_prev(v, false);
        if got != want_shaped && !(w.create.prev_kv && lenient(&got) == lenient(&want_shaped)) {
            return Err(format!(
                "watch of client {}: revision {rev} delivered {got:?}\n  but the history has {want_shaped:?}",
                w.client
            ));
        }
        next = rev + 1;
    }
    if canceled_at.is_none()
        && let Some(through) = w.complete_through.filter(|t| *t >= next)
        && let Some((&gap, _)) = model
            .events()
            .range(next..=through)
            .find(|(_, evs)| evs.iter().any(|e| wanted(&w.create, e)))
    {
        return Err(format!(
            "watch of client {}: revision {gap} never delivered (complete through {through})",
            w.client
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use etcd_core::mvcc::{PutRequest, RangeRequest};

    fn put(k: &str, v: &str) -> Request {
        Request::Put(PutRequest {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(v.to_string()),
            ..PutRequest::default()
        })
    }

    fn get(k: &str) -> Request {
        Request::Range(RangeRequest {
            key: Bytes::from(k.to_string()),
            ..RangeRequest::default()
        })
    }

    fn op(client: u64, call: u64, ret: u64, mode: Mode, req: Request, resp: Response) -> OpRecord {
        OpRecord {
            client,
            call_ns: call,
            return_ns: Some(ret),
            mode,
            req,
            resp: Some(resp),
        }
    }

    fn setup() -> (Replay, Vec<Response>) {
        let log = vec![put("a", "1"), put("a", "2"), put("b", "1")];
        let mut m = EtcdModel::new(2);
        let resps: Vec<Response> = log.iter().map(|r| m.apply(r)).collect();
        (replay(&log, 2), resps)
    }

    #[test]
    fn a_consistent_history_passes() {
        let (rp, w) = setup();
        let read = rp.model.read_at(&get("a"), 3, 0);
        let ops = vec![
            op(1, 0, 10, Mode::Write, put("a", "1"), w[0].clone()),
            op(1, 11, 20, Mode::Write, put("a", "2"), w[1].clone()),
            op(2, 21, 30, Mode::Linearizable, get("a"), read),
        ];
        check_ops(&rp, &ops).unwrap();
    }

    #[test]
    fn a_lost_or_altered_write_is_caught() {
        let (rp, w) = setup();
        // A write acknowledged at a revision where the history has something else.
        let ops = vec![op(1, 0, 10, Mode::Write, put("a", "9"), w[0].clone())];
        assert!(check_ops(&rp, &ops).is_err());
    }

    #[test]
    fn a_stale_read_is_caught() {
        let (rp, w) = setup();
        let stale = rp.model.read_at(&get("a"), 2, 0);
        let ops = vec![
            op(1, 0, 10, Mode::Write, put("a", "2"), w[1].clone()),
            // Started after the write at revision 3 finished, yet reads revision 2.
            op(2, 20, 30, Mode::Linearizable, get("a"), stale.clone()),
        ];
        assert!(check_ops(&rp, &ops).unwrap_err().contains("real-time"));
        // The same read served serializably may be stale.
        let ops = vec![
            op(1, 0, 10, Mode::Write, put("a", "2"), w[1].clone()),
            op(2, 20, 30, Mode::Serializable, get("a"), stale),
        ];
        check_ops(&rp, &ops).unwrap();
    }

    #[test]
    fn a_read_of_a_value_that_never_was_is_caught() {
        let (rp, _) = setup();
        let mut bogus = rp.model.read_at(&get("a"), 3, 0);
        if let Response::Range(rr) = &mut bogus {
            rr.kvs[0].value = Bytes::from_static(b"nope");
        }
        let ops = vec![op(2, 0, 30, Mode::Linearizable, get("a"), bogus)];
        assert!(check_ops(&rp, &ops).is_err());
    }

    #[test]
    fn a_read_seeing_a_later_write_is_caught() {
        let (rp, w) = setup();
        let future = rp.model.read_at(&get("a"), 3, 0);
        let ops = vec![
            op(2, 0, 10, Mode::Linearizable, get("a"), future),
            // The write that made revision 3 started after the read returned.
            op(1, 20, 30, Mode::Write, put("a", "2"), w[1].clone()),
        ];
        assert!(check_ops(&rp, &ops).is_err());
    }

    fn wresp(rev: i64, events: Vec<Event>) -> WatchResponse {
        WatchResponse {
            revision: rev,
            events,
            ..WatchResponse::default()
        }
    }

    #[test]
    fn watch_gaps_duplicates_and_wrong_events_are_caught() {
        let (rp, _) = setup();
        let ev = |rev: i64| rp.model.events()[&rev].clone();
        let create = WatchCreate {
            key: Bytes::from_static(b"a"),
            start_revision: 2,
            ..WatchCreate::default()
        };
        let mut w = WatchRecord {
            client: 1,
            create: create.clone(),
            created_at: 1,
            responses: vec![
                WatchResponse {
                    created: true,
                    ..WatchResponse::default()
                },
                wresp(2, strip_prev(&ev(2), false)),
                wresp(3, strip_prev(&ev(3), false)),
            ],
            complete_through: Some(4),
        };
        check_watch(&rp, &w).unwrap();
        // A gap.
        w.responses.remove(1);
        assert!(check_watch(&rp, &w).unwrap_err().contains("missing"));
        // A duplicate.
        w.responses.push(wresp(3, strip_prev(&ev(3), false)));
        assert!(check_watch(&rp, &w).is_err());
        // Never delivered, though complete through 3.
        let w2 = WatchRecord {
            responses: vec![WatchResponse {
                created: true,
                ..WatchResponse::default()
            }],
            complete_through: Some(3),
            ..w.clone()
        };
        assert!(check_watch(&rp, &w2).unwrap_err().contains("never"));
        // Events of another key.
        let w3 = WatchRecord {
            responses: vec![
                WatchResponse {
                    created: true,
                    ..WatchResponse::default()
                },
                wresp(4, strip_prev(&ev(4), false)),
            ],
            complete_through: None,
            ..w
        };
        assert!(check_watch(&rp, &w3).is_err());
    }
}
