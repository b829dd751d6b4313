//! The peer transport: one outgoing gRPC stream per peer carrying batches of
//! Raft messages, reconnecting with backoff; incoming streams feed the core.
//!
//! Delivery is at most once: a batch that failed to send is dropped, never
//! resent. Raft recovers lost messages itself, and a proposal forwarded to
//! the leader must never be applied twice (see ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use etcd_core::raft::Message;
use etcd_core::raft::wire;

use crate::log::{self, V};
use crate::pb::peer::raft_client::RaftClient;
use crate::pb::peer::raft_server::Raft;
use crate::pb::peer::{Ack, Frame};
use crate::server::core::{CoreHandle, CoreMsg};

/// Batches queued per peer before new ones are dropped (Raft retries).
const QUEUE_BATCHES: usize = 4096;
/// Snapshots travel as one message: allow big frames.
pub const MAX_FRAME_BYTES: usize = 1 << 30;

/// Receives peer streams.
pub struct PeerService {
    pub core: CoreHandle,
    pub cluster_id: u64,
}

#[tonic::async_trait]
impl Raft for PeerService {
    async fn stream(&self, req: Request<Streaming<Frame>>) -> Result<Response<Ack>, Status> {
        let mut s = req.into_inner();
        while let Some(frame) = s.next().await {
            let frame = frame?;
            if frame.cluster_id != self.cluster_id {
                log::warn(
                    "rafthttp/http.go",
                    "rejected stream from remote peer because it was from a different cluster",
                    &[
                        ("local-member-cluster-id", V::X(self.cluster_id)),
                        ("remote-peer-cluster-id", V::X(frame.cluster_id)),
                    ],
                );
                return Err(Status::failed_precondition("cluster ID mismatch"));
            }
            match wire::decode_batch(&frame.messages) {
                Ok(msgs) => {
                    for m in msgs {
                        if !self.core.send(CoreMsg::Peer(m)) {
                            return Err(Status::unavailable("etcdserver: server stopped"));
                        }
                    }
                }
                Err(e) => {
                    log::warn(
                        "rafthttp/stream.go",
                        "dropped an undecodable frame from a peer",
                        &[("error", V::S(&e.to_string()))],
                    );
                    return Err(Status::invalid_argument("undecodable frame"));
                }
            }
        }
        Ok(Response::new(Ack {}))
    }
}

/// Sends to every peer: one task and queue each.
pub struct Transport {
    queues: BTreeMap<u64, mpsc::Sender<Bytes>>,
}

impl Transport {
    /// Starts a sender task per peer (`id → peer URLs`).
    pub fn start(
        rt: &tokio::runtime::Handle,
        local: u64,
        cluster_id: u64,
        peers: &BTreeMap<u64, Vec<String>>,
    ) -> Transport {
        let mut queues = BTreeMap::new();
        for (&id, urls) in peers {
            if id == local || urls.is_empty() {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
            rt.spawn(sender(local, id, urls.clone(), cluster_id, rx));
            queues.insert(id, tx);
        }
        Transport { queues }
    }

    /// Queues messages for their peers, one batch per peer.
    pub fn send(&mut self, msgs: Vec<Message>) {
        let mut by_peer: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for m in msgs {
            by_peer.entry(m.to.0).or_default().push(m);
        }
        for (to, batch) in by_peer {
            if let Some(q) = self.queues.get(&to) {
                // A full queue (the peer is down or slow) drops the batch.
                let _ = q.try_send(wire::encode_batch(&batch));
            }
        }
    }
}

async fn sender(
    local: u64,
    peer: u64,
    urls: Vec<String>,
    cluster_id: u64,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut url_i = 0usize;
    let mut was_active = false;
    loop {
        let url = urls[url_i % urls.len().max(1)].clone();
        url_i += 1;
        let client = match tonic::transport::Endpoint::from_shared(url.clone()) {
            Ok(ep) => ep
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect()
                .await
                .ok(),
            Err(_) => None,
        };
        let Some(channel) = client else {
            if was_active {
                log::warn(
                    "rafthttp/peer_status.go",
                    "peer became inactive (message send to peer failed)",
                    &[("peer-id", V::X(peer)), ("local-member-id", V::X(local))],
                );
                was_active = false;
            }
            // Drop what queued while the peer was away: it is stale.
            while rx.try_recv().is_ok() {}
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            if rx.is_closed() {
                return;
            }
            continue;
        };
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_FRAME_BYTES)
            .max_encoding_message_size(MAX_FRAME_BYTES);
        let (ftx, frx) = mpsc::channel::<Frame>(64);
        let call = tokio::spawn(async move {
            client
                .stream(tokio_stream::wrappers::ReceiverStream::new(frx))
                .await
        });
        if !was_active {
            log::info(
                "rafthttp/peer_status.go",
                "peer became active",
                &[("peer-id", V::X(peer)), ("local-member-id", V::X(local))],
            );
            was_active = true;
        }
        backoff = Duration::from_millis(50);
        // Forward batches until the stream breaks; the batch in hand then
        // is dropped, never resent.
        loop {
            let Some(b) = rx.recv().await else {
                return;
            };
            if call.is_finished() {
                break;
            }
            let frame = Frame {
                messages: b,
                cluster_id,
            };
            if ftx.send(frame).await.is_err() {
                break;
            }
        }
        drop(ftx);
        let _ = call.await;
    }
}
