//! Simulated clients: sequential etcd operations against one member at a
//! time, each recorded (invocation, answer) for the end-of-seed checks.
//!
//! Keys `r0..r2` only ever see register-shaped operations (put, linearizable
//! get, compare-and-set as a txn), so their history also goes to the WGL
//! linearizability checker. Keys `k*` get the whole API: puts with leases,
//! delete ranges, txns, ranges with every option at the latest or a past
//! revision (linearizable and serializable), compaction, and leases that are
//! granted, kept alive, revoked or left to expire.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;

use etcd_core::mvcc::*;
use etcd_core::node::{NodeError, Outcome};
use etcd_core::request::{Request, Response};
use etcd_core::{NodeId, ReqId};

use crate::history::{Mode, OpRecord};
use crate::linearizability::{Op, OpKind};
use crate::options::Draw;
use crate::world::{ClientReq, NodeState, Sim};

/// How long a client waits for an answer before giving up (the outcome is then unknown).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The keys of the register sub-workload.
pub const REGISTER_KEYS: u64 = 3;

/// The result of one request as a client sees it.
pub enum Answer {
    Ok(Response),
    /// Definitely not executed (no leader, refused, too many requests).
    Refused,
    /// May or may not have been executed.
    Unknown,
}

/// Sends one request and waits for its answer.
pub async fn call(
    sim: &Sim,
    rx: &mut mpsc::UnboundedReceiver<(ReqId, Outcome<Response>)>,
    client: u64,
    server: NodeId,
    rid: ReqId,
    req: ClientReq,
) -> Answer {
    sim.lock().send_request(sim, client, server, rid, req);
    let wait = async {
        while let Some((got, out)) = rx.next().await {
            if got == rid {
                return Some(out);
            }
        }
        None
    };
    match madsim::time::timeout(CLIENT_TIMEOUT, wait).await {
        Ok(Some(Outcome::Done(r))) => Answer::Ok(r),
        Ok(Some(Outcome::Failed(NodeError::Timeout))) => Answer::Unknown,
        Ok(Some(Outcome::Failed(_))) => Answer::Refused,
        Ok(Some(Outcome::ConfApplied(_))) | Ok(None) | Err(_) => Answer::Unknown,
    }
}

/// Picks a member to talk to: any that has not been removed.
pub fn pick_server(sim: &Sim) -> NodeId {
    let mut w = sim.lock();
    let ids: Vec<NodeId> = w
        .nodes
        .iter()
        .filter(|(_, s)| s.state != NodeState::Removed)
        .map(|(id, _)| *id)
        .collect();
    let k = w.rng.below(ids.len() as u64) as usize;
    ids[k]
}

fn b(s: String) -> Bytes {
    Bytes::from(s)
}

/// What one client remembers between operations.
#[derive(Default)]
struct State {
    seq: u64,
    /// Last value seen per register key (for CAS).
    register: BTreeMap<Bytes, Option<Bytes>>,
    /// Leases held: id → keep alive?
    leases: BTreeMap<i64, bool>,
    /// The newest header revision seen.
    last_rev: i64,
}

/// One planned operation: the request, how it is sent, and its register view.
struct Plan {
    req: Request,
    mode: Mode,
    register: Option<OpKind>,
}

fn plan(w: &mut crate::world::World, client: u64, st: &mut State) -> Plan {
    let rng = &mut w.rng;
    let keys = w.opts.keys.max(2);
    let value = b(format!("c{client}-{}", st.seq));
    let k = |rng: &mut rand_chacha::ChaCha8Rng| b(format!("k{}", rng.below(keys)));
    let write = |req| Plan {
        req,
        mode: Mode::Write,
        register: None,
    };
    match rng.below(100) {
        // --- the register keys ---
        0..=9 => {
            let key = b(format!("r{}", rng.below(REGISTER_KEYS)));
            let req = Request::Put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..PutRequest::default()
            });
            Plan {
                req,
                mode: Mode::Write,
                register: Some(OpKind::Put { key, value }),
            }
        }
        10..=19 => {
            let key = b(format!("r{}", rng.below(REGISTER_KEYS)));
            let req = Request::Range(RangeRequest {
                key: key.clone(),
                ..RangeRequest::default()
            });
            Plan {
                req,
                mode: Mode::Linearizable,
                register: Some(OpKind::Get { key, result: None }),
            }
        }
        20..=24 => {
            let key = b(format!("r{}", rng.below(REGISTER_KEYS)));
            let expect = st.register.get(&key).cloned().flatten();
            let compare = match &expect {
                Some(v) => Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Value(v.clone()),
                    key: key.clone(),
                    range_end: Bytes::new(),
                },
                None => Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Create(0),
                    key: key.clone(),
                    range_end: Bytes::new(),
                },
            };
            let put = RequestOp::Put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..PutRequest::default()
            });
            let req = Request::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![put],
                failure: vec![],
            });
            Plan {
                req,
                mode: Mode::Write,
                register: Some(OpKind::Cas {
                    key,
                    expect,
                    new: value,
                    result: None,
                }),
            }
        }
        // --- the general keys ---
        25..=41 => {
            let lease = if rng.chance(300) {
                let held: Vec<i64> = st.leases.keys().copied().collect();
                if held.is_empty() {
                    0
                } else {
                    held[rng.below(held.len() as u64) as usize]
                }
            } else {
                0
            };
            write(Request::Put(PutRequest {
                key: k(rng),
                value,
                lease,
                prev_kv: rng.chance(300),
                ..PutRequest::default()
            }))
        }
        42..=47 => {
            let (key, range_end) = if rng.chance(700) {
                (k(rng), Bytes::new())
            } else {
                (b("k".into()), b("l".into()))
            };
            write(Request::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: rng.chance(500),
            }))
        }
        48..=55 => {
            let target = match rng.below(3) {
                0 => CompareTarget::Version(rng.below(4) as i64),
                1 => CompareTarget::Mod(st.last_rev - rng.below(5) as i64),
                _ => CompareTarget::Value(b(format!(
                    "c{client}-{}",
                    st.seq.saturating_sub(rng.below(4))
                ))),
            };
            let result = [
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ][rng.below(4) as usize];
            let compare = Compare {
                result,
                target,
                key: k(rng),
                range_end: Bytes::new(),
            };
            let success = vec![RequestOp::Put(PutRequest {
                key: k(rng),
                value,
                ..PutRequest::default()
            })];
            let failure = vec![RequestOp::Range(RangeRequest {
                key: b("k".into()),
                range_end: b("l".into()),
                ..RangeRequest::default()
            })];
            let mut t = TxnRequest {
                compare: vec![compare],
                success,
                failure,
            };
            if rng.chance(200) {
                t.success.push(RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b("k9".into()),
                    ..DeleteRangeRequest::default()
                }));
            }
            write(Request::Txn(t))
        }
        56..=77 => {
            let single = rng.chance(400);
            let mut r = RangeRequest {
                key: if single { k(rng) } else { b("k".into()) },
                range_end: if single { Bytes::new() } else { b("l".into()) },
                limit: if rng.chance(400) {
                    rng.range(1, 3) as i64
                } else {
                    0
                },
                sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
                    [rng.below(3) as usize],
                sort_target: [
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][rng.below(5) as usize],
                keys_only: rng.chance(100),
                count_only: rng.chance(100),
                ..RangeRequest::default()
            };
            if rng.chance(150) {
                r.min_mod_revision = st.last_rev - rng.below(20) as i64;
            }
            let past = rng.chance(200);
            if past && st.last_rev > 1 {
                r.revision = (st.last_rev - rng.below(30) as i64).max(1);
            }
            let mode = if rng.chance(250) {
                Mode::Serializable
            } else {
                Mode::Linearizable
            };
            Plan {
                req: Request::Range(r),
                mode,
                register: None,
            }
        }
        78..=79 if st.last_rev > 20 => write(Request::Compact {
            revision: st.last_rev - rng.range(5, 20) as i64,
            physical: false,
        }),
        80..=85 if st.leases.len() < 2 => write(Request::LeaseGrant {
            id: 0,
            ttl: rng.range(2, 6) as i64,
        }),
        86..=95 if !st.leases.is_empty() => {
            let alive: Vec<i64> = st
                .leases
                .iter()
                .filter(|(_, keep)| **keep)
                .map(|(id, _)| *id)
                .collect();
            match alive.get(rng.below(alive.len().max(1) as u64) as usize) {
                Some(&id) => write(Request::LeaseRenew { id }),
                None => Plan {
                    req: Request::LeaseLeases,
                    mode: Mode::Linearizable,
                    register: None,
                },
            }
        }
        96 if !st.leases.is_empty() => {
            let ids: Vec<i64> = st.leases.keys().copied().collect();
            let id = ids[rng.below(ids.len() as u64) as usize];
            st.leases.remove(&id);
            write(Request::LeaseRevoke { id })
        }
        _ => {
            let id = st.leases.keys().next().copied().unwrap_or(1);
            Plan {
                req: Request::LeaseTimeToLive { id, keys: true },
                mode: Mode::Linearizable,
                register: None,
            }
        }
    }
}

fn header_revision(r: &Response) -> Option<i64> {
    match r {
        Response::Range(rr) => Some(rr.revision),
        Response::Put(p) => Some(p.revision),
        Response::DeleteRange(d) => Some(d.revision),
        Response::Txn(t) => Some(t.revision),
        Response::LeaseGrant { revision, .. }
        | Response::LeaseRenew { revision, .. }
        | Response::LeaseRevoke { revision } => Some(*revision),
        _ => None,
    }
}

pub async fn client_main(sim: Sim, client: u64) {
    let (tx, mut rx) = mpsc::unbounded();
    sim.lock().clients.insert(client, tx);
    let mut st = State::default();
    let mut server = pick_server(&sim);
    loop {
        let (p, think) = {
            let mut w = sim.lock();
            if w.stop_clients || w.failure.is_some() {
                break;
            }
            st.seq += 1;
            let p = plan(&mut w, client, &mut st);
            let think = Duration::from_millis(w.rng.range(1, 60));
            (p, think)
        };
        let rid = ReqId(client << 40 | st.seq);
        let call_ns = sim.lock().now_ns();
        let creq = match p.mode {
            Mode::Write => ClientReq::Write(p.req.clone()),
            Mode::Linearizable => ClientReq::Read(p.req.clone()),
            Mode::Serializable => ClientReq::Local(p.req.clone()),
        };
        let answer = call(&sim, &mut rx, client, server, rid, creq).await;
        let switch_server = {
            let mut w = sim.lock();
            let return_ns = w.now_ns();
            let (resp, ret) = match &answer {
                Answer::Ok(r) => (Some(r.clone()), Some(return_ns)),
                Answer::Unknown => (None, None),
                Answer::Refused => {
                    w.stats.ops_failed += 1;
                    (None, None)
                }
            };
            match &answer {
                Answer::Ok(_) => w.stats.ops_ok += 1,
                Answer::Unknown => w.stats.ops_unknown += 1,
                Answer::Refused => {}
            }
            if let Some(r) = &resp {
                if let Some(h) = header_revision(r) {
                    st.last_rev = st.last_rev.max(h);
                }
                if let Response::LeaseGrant { id, .. } = r {
                    let keep = w.rng.chance(600);
                    st.leases.insert(*id, keep);
                }
                if let (Request::LeaseRenew { id }, Response::Error(_)) = (&p.req, r) {
                    st.leases.remove(id);
                }
            }
            // The etcd history: every operation that was or may have been executed.
            let refused = matches!(answer, Answer::Refused);
            let unknown_read = resp.is_none() && p.mode != Mode::Write;
            if !refused && !unknown_read {
                w.ops.push(OpRecord {
                    client,
                    call_ns,
                    return_ns: ret,
                    mode: p.mode,
                    req: p.req.clone(),
                    resp: resp.clone(),
                });
            }
            // The register view of the r-keys.
            if let Some(kind) = p.register {
                let op = match (kind, &resp) {
                    (OpKind::Get { key, .. }, Some(Response::Range(rr))) => {
                        let v = rr.kvs.first().map(|kv| kv.value.clone());
                        st.register.insert(key.clone(), v.clone());
                        Some(OpKind::Get { key, result: v })
                    }
                    (k @ OpKind::Put { .. }, Some(Response::Put(_))) => Some(k),
                    (
                        OpKind::Cas {
                            key, expect, new, ..
                        },
                        Some(Response::Txn(t)),
                    ) => {
                        if t.succeeded {
                            st.register.insert(key.clone(), Some(new.clone()));
                        }
                        Some(OpKind::Cas {
                            key,
                            expect,
                            new,
                            result: Some(t.succeeded),
                        })
                    }
                    (k @ (OpKind::Put { .. } | OpKind::Cas { .. }), None) if !refused => Some(k),
                    _ => None,
                };
                if let Some(kind) = op {
                    w.history.push(Op {
                        client,
                        call_ns,
                        return_ns: resp.as_ref().map(|_| return_ns),
                        kind,
                    });
                }
            }
            !matches!(answer, Answer::Ok(_))
        };
        if switch_server {
            server = pick_server(&sim);
        }
        madsim::time::sleep(think).await;
    }
}
