//! The peer transport: one outgoing gRPC stream per peer carrying batches of
//! Raft messages, reconnecting with backoff; incoming streams feed the core.
//! A batch bigger than [`PART_BYTES`] (a snapshot) goes in numbered parts,
//! and whole batches (heartbeats, appends, votes) are sent between its parts
//! rather than waiting behind it.
//!
//! Delivery is at most once: a batch that failed to send is dropped, never
//! resent. Raft recovers lost messages itself, and a proposal forwarded to
//! the leader must never be applied twice (see ARCHITECTURE.md).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use etcd_core::raft::wire;
use etcd_core::raft::{Message, MsgBody};

use crate::log::{self, V};
use crate::pb::peer::raft_client::RaftClient;
use crate::pb::peer::raft_server::Raft;
use crate::pb::peer::{Ack, Frame};
use crate::server::core::{CoreHandle, CoreMsg};

/// Batches queued per peer before new ones are dropped (Raft retries).
const QUEUE_BATCHES: usize = 4096;
/// The size of a part of a big batch.
pub const PART_BYTES: usize = 1 << 20;
/// The largest frame: a whole batch is at most `PART_BYTES`, plus the frame's
/// own fields.
pub const MAX_FRAME_BYTES: usize = 2 * PART_BYTES;
/// The largest batch reassembled from parts: a snapshot of a store at the
/// largest quota etcd suggests (8 GiB), with room to spare.
const MAX_BATCH_BYTES: usize = 16 << 30;
/// Frames queued on a stream: few, so a heartbeat is never far behind the
/// parts of a snapshot already queued.
const STREAM_FRAMES: usize = 8;

/// Reassembles the parts of big batches from one stream.
#[derive(Default)]
struct Assembly {
    buf: BytesMut,
    /// The last part taken; 0 between big batches.
    part: u32,
}

impl Assembly {
    /// Takes one frame; returns a whole batch when it has one.
    fn take(&mut self, f: Frame) -> Result<Option<Bytes>, &'static str> {
        if f.part == 0 {
            return Ok(Some(f.messages));
        }
        if f.part != self.part.wrapping_add(1) {
            return Err("a part of a big batch is out of order");
        }
        if self.buf.len() + f.messages.len() > MAX_BATCH_BYTES {
            return Err("a big batch is larger than the largest allowed");
        }
        self.buf.extend_from_slice(&f.messages);
        self.part = f.part;
        if !f.last {
            return Ok(None);
        }
        self.part = 0;
        Ok(Some(std::mem::take(&mut self.buf).freeze()))
    }
}

/// Big batches waiting to be sent in parts, the first one under way.
#[derive(Default)]
struct Parts {
    queue: VecDeque<Bytes>,
    /// Bytes of the first batch already sent, and its parts so far.
    sent: usize,
    part: u32,
}

impl Parts {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(&mut self, batch: Bytes) {
        self.queue.push_back(batch);
    }

    /// The next part: its bytes, its number, and whether it is the last.
    fn next(&mut self) -> Option<(Bytes, u32, bool)> {
        let batch = self.queue.front()?;
        let end = (self.sent + PART_BYTES).min(batch.len());
        let bytes = batch.slice(self.sent..end);
        self.part += 1;
        let part = self.part;
        let last = end == batch.len();
        if last {
            self.queue.pop_front();
            self.sent = 0;
            self.part = 0;
        } else {
            self.sent = end;
        }
        Some((bytes, part, last))
    }
}

/// The snapshot in a batch, if any: its index and size.
fn snapshot_in(msgs: &[Message]) -> Option<(u64, usize)> {
    msgs.iter().find_map(|m| match &m.body {
        MsgBody::Snapshot(s) => Some((s.meta.index.0, s.data.len())),
        _ => None,
    })
}

/// Receives peer streams.
pub struct PeerService {
    pub core: CoreHandle,
    pub cluster_id: u64,
}

#[tonic::async_trait]
impl Raft for PeerService {
    async fn stream(&self, req: Request<Streaming<Frame>>) -> Result<Response<Ack>, Status> {
        let mut s = req.into_inner();
        let mut assembly = Assembly::default();
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
            let batch = match assembly.take(frame) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(why) => {
                    log::warn(
                        "rafthttp/stream.go",
                        "dropped a stream from a peer",
                        &[("error", V::S(why))],
                    );
                    return Err(Status::invalid_argument(why));
                }
            };
            match wire::decode_batch(&batch) {
                Ok(msgs) => {
                    if let Some((index, size)) = snapshot_in(&msgs) {
                        log::info(
                            "rafthttp/http.go",
                            "received database snapshot",
                            &[
                                ("remote-snapshot-sender-id", V::X(msgs[0].from.0)),
                                ("incoming-snapshot-index", V::U(index)),
                                ("incoming-snapshot-size-bytes", V::U(size as u64)),
                            ],
                        );
                    }
                    // With the client requests and other peers' messages
                    // of this turn: the core wakes once for all of them.
                    for m in msgs {
                        self.core.send_soon(CoreMsg::Peer(m));
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
                if let Some((index, size)) = snapshot_in(&batch) {
                    log::info(
                        "rafthttp/snapshot_sender.go",
                        "sending database snapshot",
                        &[
                            ("remote-peer-id", V::X(to)),
                            ("snapshot-index", V::U(index)),
                            ("snapshot-size-bytes", V::U(size as u64)),
                        ],
                    );
                }
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
        let (ftx, frx) = mpsc::channel::<Frame>(STREAM_FRAMES);
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
        // is dropped (with any big one under way), never resent. Whole
        // batches go first; parts of big ones when nothing else waits.
        let mut parts = Parts::default();
        loop {
            let next = if parts.is_empty() {
                match rx.recv().await {
                    Some(b) => Some(b),
                    None => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            };
            if call.is_finished() {
                break;
            }
            let frame = match next {
                Some(b) if b.len() > PART_BYTES => {
                    parts.push(b);
                    continue;
                }
                Some(b) => Frame {
                    messages: b,
                    cluster_id,
                    part: 0,
                    last: false,
                },
                None => {
                    let (messages, part, last) = parts.next().expect("parts are queued");
                    Frame {
                        messages,
                        cluster_id,
                        part,
                        last,
                    }
                }
            };
            if ftx.send(frame).await.is_err() {
                break;
            }
        }
        drop(ftx);
        let _ = call.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(messages: Bytes, part: u32, last: bool) -> Frame {
        Frame {
            messages,
            cluster_id: 7,
            part,
            last,
        }
    }

    #[test]
    fn big_batches_go_in_parts_and_come_back_whole() {
        let big: Bytes = (0..(2 * PART_BYTES + 123)).map(|i| i as u8).collect();
        let other: Bytes = (0..PART_BYTES + 1).map(|i| (i * 7) as u8).collect();
        let mut parts = Parts::default();
        parts.push(big.clone());
        parts.push(other.clone());
        let mut asm = Assembly::default();
        let mut whole = Vec::new();
        let mut numbers = Vec::new();
        while let Some((b, part, last)) = parts.next() {
            assert!(b.len() <= PART_BYTES);
            numbers.push((part, last));
            // A whole batch between parts passes straight through.
            let small = Bytes::from_static(b"heartbeat");
            assert_eq!(asm.take(frame(small.clone(), 0, false)), Ok(Some(small)));
            if let Some(done) = asm.take(frame(b, part, last)).expect("in order") {
                whole.push(done);
            }
        }
        assert_eq!(
            numbers,
            vec![(1, false), (2, false), (3, true), (1, false), (2, true)]
        );
        assert_eq!(whole, vec![big, other]);
        assert!(parts.is_empty());
    }

    #[test]
    fn parts_out_of_order_are_refused() {
        let b = Bytes::from_static(b"x");
        let mut asm = Assembly::default();
        assert!(asm.take(frame(b.clone(), 2, false)).is_err(), "no part 1");
        let mut asm = Assembly::default();
        assert_eq!(asm.take(frame(b.clone(), 1, false)), Ok(None));
        assert!(
            asm.take(frame(b.clone(), 1, false)).is_err(),
            "part 1 twice"
        );
        let mut asm = Assembly::default();
        assert_eq!(asm.take(frame(b.clone(), 1, false)), Ok(None));
        assert!(
            asm.take(frame(b.clone(), 3, true)).is_err(),
            "part 2 missing"
        );
        let mut asm = Assembly::default();
        assert_eq!(asm.take(frame(b.clone(), 1, false)), Ok(None));
        assert_eq!(
            asm.take(frame(b.clone(), 2, true)),
            Ok(Some(Bytes::from_static(b"xx")))
        );
        // After a last part, numbering starts again at 1.
        assert_eq!(asm.take(frame(b.clone(), 1, true)), Ok(Some(b)));
    }
}
