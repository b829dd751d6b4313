//! etcd's Watch service: one bidirectional stream carries many watchers. The
//! core's watch registry decides everything (catch-up, filters, progress,
//! fragments, cancellation); this only moves requests in and responses out,
//! and acknowledges responses once written, which bounds what the core
//! buffers for a slow client.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use etcd_core::request::Request as CoreRequest;
use etcd_core::watch::{StreamId, WatchCreate, WatchResponse};

use super::api::Shared;
use super::convert::event_out;
use super::core::{CoreHandle, CoreMsg};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::watch_server;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// A new core watch stream whose responses come to the receiver; `None` if
/// the core has stopped.
fn open_stream(core: &CoreHandle) -> Option<(StreamId, mpsc::UnboundedReceiver<WatchResponse>)> {
    let stream = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    core.send(CoreMsg::WatchOpen { stream, tx })
        .then_some((stream, rx))
}

/// A watch the server keeps for itself (the Lock and Election services wait
/// on keys with it): a core watch stream of its own holding one watcher.
/// Every response received is acknowledged to the core; dropping it closes
/// the stream (`WatchClose`).
pub(crate) struct CoreWatch {
    stream: StreamId,
    rx: mpsc::UnboundedReceiver<WatchResponse>,
    core: CoreHandle,
}

impl CoreWatch {
    /// Opens a stream and creates `create` on it; `None` if the core has
    /// stopped.
    pub(crate) fn open(core: &CoreHandle, create: WatchCreate) -> Option<CoreWatch> {
        let (stream, rx) = open_stream(core)?;
        let w = CoreWatch {
            stream,
            rx,
            core: core.clone(),
        };
        core.send(CoreMsg::Local(CoreRequest::WatchCreate { stream, create }))
            .then_some(w)
    }

    /// The next response (the creation answer first), or `None` once the
    /// core has dropped the stream.
    pub(crate) async fn recv(&mut self) -> Option<WatchResponse> {
        let w = self.rx.recv().await?;
        self.core.send(CoreMsg::Local(CoreRequest::WatchAck {
            stream: self.stream,
            n: 1,
        }));
        Some(w)
    }
}

impl Drop for CoreWatch {
    fn drop(&mut self) {
        self.core.send(CoreMsg::Local(CoreRequest::WatchClose {
            stream: self.stream,
        }));
    }
}

pub struct Watch(pub Shared);

type WatchStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

fn create_in(c: pb::WatchCreateRequest) -> WatchCreate {
    let no_put = c.filters.contains(&0);
    let no_delete = c.filters.contains(&1);
    WatchCreate {
        key: c.key,
        range_end: c.range_end,
        start_revision: c.start_revision,
        progress_notify: c.progress_notify,
        no_put,
        no_delete,
        prev_kv: c.prev_kv,
        watch_id: c.watch_id,
        fragment: c.fragment,
    }
}

fn response_out(api: &Shared, w: WatchResponse) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(api.header(w.revision, api.term.load(Ordering::Relaxed))),
        watch_id: w.watch_id,
        created: w.created,
        canceled: w.canceled,
        compact_revision: w.compact_revision,
        cancel_reason: w.cancel_reason,
        fragment: w.fragment,
        events: w.events.into_iter().map(event_out).collect(),
    }
}

#[tonic::async_trait]
impl watch_server::Watch for Watch {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (stream, mut core_rx) = open_stream(&self.0.core)
            .ok_or_else(|| Status::unavailable("etcdserver: server stopped"))?;
        let mut input = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(64);

        // Requests in.
        let core = self.0.core.clone();
        let reader = tokio::spawn(async move {
            use pb::watch_request::RequestUnion as U;
            while let Some(Ok(r)) = input.next().await {
                let req = match r.request_union {
                    Some(U::CreateRequest(c)) => CoreRequest::WatchCreate {
                        stream,
                        create: create_in(c),
                    },
                    Some(U::CancelRequest(c)) => CoreRequest::WatchCancel {
                        stream,
                        watch_id: c.watch_id,
                    },
                    Some(U::ProgressRequest(_)) => CoreRequest::WatchProgress { stream },
                    None => continue,
                };
                if !core.send(CoreMsg::Local(req)) {
                    break;
                }
            }
        });

        // Responses out; each written response is acknowledged to the core.
        let api = self.0.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    w = core_rx.recv() => {
                        let Some(w) = w else { break };
                        let mut batch = vec![w];
                        while let Ok(w) = core_rx.try_recv() {
                            batch.push(w);
                        }
                        let n = batch.len() as u64;
                        let mut closed = false;
                        for w in batch {
                            if out_tx.send(Ok(response_out(&api, w))).await.is_err() {
                                closed = true;
                                break;
                            }
                        }
                        if closed {
                            break;
                        }
                        api.core.send(CoreMsg::Local(CoreRequest::WatchAck { stream, n }));
                    }
                    _ = out_tx.closed() => break,
                }
            }
            reader.abort();
            api.core
                .send(CoreMsg::Local(CoreRequest::WatchClose { stream }));
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}
