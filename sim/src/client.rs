//! A simulated client: sequential operations against one member at a time,
//! recording each invocation and response for the linearizability check.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;

use etcd_core::node::{NodeError, Outcome};
use etcd_core::register::{RegisterRequest, RegisterResponse};
use etcd_core::{NodeId, ReqId};

use crate::linearizability::{Op, OpKind};
use crate::options::Draw;
use crate::world::{ClientReq, NodeState, Sim};

/// How long a client waits for an answer before giving up (the outcome is then unknown).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The result of one request as a client sees it.
pub enum Answer {
    Ok(RegisterResponse),
    /// Definitely not executed (no leader, refused, too many requests).
    Refused,
    /// May or may not have been executed.
    Unknown,
}

/// Sends one request and waits for its answer.
pub async fn call(
    sim: &Sim,
    rx: &mut mpsc::UnboundedReceiver<(ReqId, Outcome<RegisterResponse>)>,
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

/// Picks a member to talk to: any live-looking member.
fn pick_server(sim: &Sim) -> NodeId {
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

pub async fn client_main(sim: Sim, client: u64) {
    let (tx, mut rx) = mpsc::unbounded();
    sim.lock().clients.insert(client, tx);
    let mut seq: u64 = 0;
    let mut server = pick_server(&sim);
    // The last value this client saw per key, for compare-and-set.
    let mut last_seen: std::collections::BTreeMap<Bytes, Option<Bytes>> = Default::default();
    loop {
        let (key, choice, think) = {
            let mut w = sim.lock();
            if w.stop_clients || w.failure.is_some() {
                break;
            }
            let keys = w.opts.keys;
            let k = w.rng.below(keys);
            (
                Bytes::from(format!("k{k}")),
                w.rng.below(10),
                Duration::from_millis(w.rng.range(1, 60)),
            )
        };
        seq += 1;
        let rid = ReqId(client << 40 | seq);
        let value = Bytes::from(format!("c{client}-{seq}"));
        let (req, kind) = match choice {
            0..=3 => (
                ClientReq::Write(RegisterRequest::Put {
                    key: key.clone(),
                    value: value.clone(),
                }),
                OpKind::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
            ),
            4..=7 => (
                ClientReq::Read(RegisterRequest::Get { key: key.clone() }),
                OpKind::Get {
                    key: key.clone(),
                    result: None,
                },
            ),
            _ => {
                let expect = last_seen.get(&key).cloned().flatten();
                (
                    ClientReq::Write(RegisterRequest::Cas {
                        key: key.clone(),
                        expect: expect.clone(),
                        new: value.clone(),
                    }),
                    OpKind::Cas {
                        key: key.clone(),
                        expect,
                        new: value.clone(),
                        result: None,
                    },
                )
            }
        };
        let call_ns = sim.lock().now_ns();
        let answer = call(&sim, &mut rx, client, server, rid, req).await;
        let return_ns = sim.lock().now_ns();
        let switch_server = {
            let mut w = sim.lock();
            match (answer, kind) {
                (Answer::Ok(RegisterResponse::Get(v)), OpKind::Get { key, .. }) => {
                    last_seen.insert(key.clone(), v.clone());
                    w.stats.ops_ok += 1;
                    w.history.push(Op {
                        client,
                        call_ns,
                        return_ns: Some(return_ns),
                        kind: OpKind::Get { key, result: v },
                    });
                    false
                }
                (Answer::Ok(RegisterResponse::Put), kind @ OpKind::Put { .. }) => {
                    w.stats.ops_ok += 1;
                    w.history.push(Op {
                        client,
                        call_ns,
                        return_ns: Some(return_ns),
                        kind,
                    });
                    false
                }
                (
                    Answer::Ok(RegisterResponse::Cas { succeeded }),
                    OpKind::Cas {
                        key, expect, new, ..
                    },
                ) => {
                    if succeeded {
                        last_seen.insert(key.clone(), Some(new.clone()));
                    }
                    w.stats.ops_ok += 1;
                    w.history.push(Op {
                        client,
                        call_ns,
                        return_ns: Some(return_ns),
                        kind: OpKind::Cas {
                            key,
                            expect,
                            new,
                            result: Some(succeeded),
                        },
                    });
                    false
                }
                (Answer::Ok(other), kind) => {
                    w.fail(format!(
                        "client {client}: answer {other:?} does not fit request {kind:?}"
                    ));
                    false
                }
                (Answer::Refused, _) => {
                    w.stats.ops_failed += 1;
                    true
                }
                (Answer::Unknown, kind) => {
                    w.stats.ops_unknown += 1;
                    // A read with no answer constrains nothing; a write may still happen.
                    if !matches!(kind, OpKind::Get { .. }) {
                        w.history.push(Op {
                            client,
                            call_ns,
                            return_ns: None,
                            kind,
                        });
                    }
                    true
                }
            }
        };
        if switch_server {
            server = pick_server(&sim);
        }
        madsim::time::sleep(think).await;
    }
}
