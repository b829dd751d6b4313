//! Calls that are not answered inside the connection task (the streaming
//! ones, and the services that are not hot) run through tonic's generated
//! services on a task of their own. The request body comes from the
//! connection on a channel; the response comes back as `Event`s. A stream
//! that the client reads slowly stops polling its service once a bounded
//! amount waits unwritten (`Credit`), as hyper would.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tower_service::Service;

use super::Services;
use super::frame::{GRPC_RESPONSE_HEADERS, INTERNAL_ERROR, put_literal, status_block};

/// What a bridged call sends back to its connection.
pub enum Event {
    Headers {
        stream: u32,
        block: Vec<u8>,
        end: bool,
    },
    Data {
        stream: u32,
        data: Bytes,
        end: bool,
    },
    /// The service has taken `n` bytes of the request body.
    Consumed {
        stream: u32,
        n: usize,
    },
    Reset {
        stream: u32,
        code: u32,
    },
}

/// Bytes a bridged stream has produced that the connection has not yet
/// written (they wait for the client's flow-control window).
#[derive(Default)]
pub struct Credit {
    queued: AtomicUsize,
    notify: Notify,
}

/// A bridged stream stops polling its service beyond this much unwritten.
const CREDIT_LIMIT: usize = 256 << 10;

impl Credit {
    /// The connection wrote `n` of the stream's bytes.
    pub fn written(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.notify.notify_one();
    }

    async fn wait(&self) {
        while self.queued.load(Ordering::Acquire) > CREDIT_LIMIT {
            // `notify_one` keeps a permit if nobody waits, so a write
            // between the check and the wait is not lost.
            self.notify.notified().await;
        }
    }
}

/// The request body of a bridged call: the DATA payloads as they arrive.
struct ChanBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::UnboundedSender<Event>,
    stream: u32,
}

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                let _ = self.events.send(Event::Consumed {
                    stream: self.stream,
                    n: b.len(),
                });
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs one call through tonic and sends its response to the connection.
pub async fn run(
    services: Arc<Services>,
    stream: u32,
    path: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    body: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::UnboundedSender<Event>,
    credit: Arc<Credit>,
) {
    let send = |ev| events.send(ev).is_ok();
    let Ok(uri) = http::Uri::try_from(path) else {
        let block = status_block(tonic::Code::Unimplemented as i32, "malformed path", true);
        send(Event::Headers {
            stream,
            block,
            end: true,
        });
        return;
    };
    let mut req = http::Request::new(ChanBody {
        rx: body,
        events: events.clone(),
        stream,
    });
    *req.method_mut() = http::Method::POST;
    *req.version_mut() = http::Version::HTTP_2;
    *req.uri_mut() = uri;
    for (name, value) in fields {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(&name),
            http::HeaderValue::from_bytes(&value),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    let mut routes = services.routes.clone();
    let Ok(resp) = routes.call(req).await;
    let (parts, mut body) = resp.into_parts();
    let mut block = Vec::with_capacity(64);
    if parts.status == http::StatusCode::OK
        && parts.headers.get(http::header::CONTENT_TYPE)
            == Some(&http::HeaderValue::from_static("application/grpc"))
    {
        block.extend_from_slice(GRPC_RESPONSE_HEADERS);
    } else {
        put_literal(&mut block, b":status", parts.status.as_str().as_bytes());
        if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
            put_literal(&mut block, b"content-type", ct.as_bytes());
        }
    }
    put_fields(&mut block, &parts.headers, true);
    let end = http_body::Body::is_end_stream(&body);
    if !send(Event::Headers { stream, block, end }) || end {
        return;
    }
    loop {
        credit.wait().await;
        match body.frame().await {
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    credit.queued.fetch_add(data.len(), Ordering::AcqRel);
                    if !send(Event::Data {
                        stream,
                        data,
                        end: false,
                    }) {
                        return;
                    }
                }
                Err(f) => {
                    let mut block = Vec::with_capacity(32);
                    if let Ok(trailers) = f.into_trailers() {
                        put_fields(&mut block, &trailers, false);
                    }
                    send(Event::Headers {
                        stream,
                        block,
                        end: true,
                    });
                    return;
                }
            },
            Some(Err(_)) => {
                send(Event::Reset {
                    stream,
                    code: INTERNAL_ERROR,
                });
                return;
            }
            None => {
                send(Event::Data {
                    stream,
                    data: Bytes::new(),
                    end: true,
                });
                return;
            }
        }
    }
}

/// Appends header fields as literals (`skip_content_type`: it is already in
/// the block).
fn put_fields(block: &mut Vec<u8>, headers: &http::HeaderMap, skip_content_type: bool) {
    for (name, value) in headers {
        if skip_content_type && name == http::header::CONTENT_TYPE {
            continue;
        }
        put_literal(block, name.as_str().as_bytes(), value.as_bytes());
    }
}
