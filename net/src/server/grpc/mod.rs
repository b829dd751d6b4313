//! The client port's gRPC server: our own HTTP/2 (RFC 9113) instead of
//! hyper's, so that a unary call costs one task poll, one decode and one
//! encode, and the answers of a turn leave in one write.
//!
//! - `conn.rs`: a connection on one task; frames, HPACK decoding (the
//!   `hpack` crate, with the client's dynamic table), flow control.
//! - `frame.rs`: frame and header-block encoding.
//! - `bridge.rs`: every call that is not one of the unary calls listed in
//!   `route` runs through tonic's generated services (`Routes`) on a task
//!   of its own: the streaming calls (Watch, LeaseKeepAlive, Snapshot,
//!   Observe, Health.Watch) and the services that are not hot.
//!
//! Both paths call the same handlers (`api.rs`), so an answer does not
//! depend on the path it took.

mod bridge;
mod conn;
pub mod frame;
mod hpack;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Status};

use super::api::{self, Shared};
use crate::log::{self, V};
use crate::pb::etcdserverpb::{kv_server::Kv as _, lease_server::Lease as _};

/// What every connection of a client listener shares.
pub struct Services {
    pub api: Shared,
    /// tonic's services, for the calls that are bridged.
    pub routes: tonic::service::Routes,
    /// The largest request message accepted (`--max-request-bytes` and
    /// gRPC's overhead, as etcd sets grpc-go's limit).
    pub max_msg: usize,
}

/// A unary call's answer: the gRPC-framed response message.
pub type Answer = Result<Vec<u8>, Status>;
/// A unary call running: its stream and, once done, its answer.
pub type UnaryFuture = Pin<Box<dyn Future<Output = (u32, Answer)> + Send>>;
/// A unary call: the stream and request message in, its answer out.
pub type UnaryFn = fn(&Shared, u32, Bytes) -> UnaryFuture;

pub enum Route {
    Unary(UnaryFn),
    Bridge,
}

/// Defines a unary call answered in the connection task: decode the
/// request, run the service's handler, encode the answer.
macro_rules! unary {
    ($service:path, $method:ident, $req:ty) => {{
        fn call(api: &Shared, stream: u32, msg: Bytes) -> UnaryFuture {
            let service = $service(api.clone());
            Box::pin(async move {
                let answer = async {
                    let req = <$req>::decode(msg).map_err(decode_error)?;
                    let resp = service.$method(Request::new(req)).await?;
                    Ok(frame_message(resp.get_ref()))
                };
                (stream, answer.await)
            })
        }
        Route::Unary(call)
    }};
}

/// Where a call goes, by its `:path`.
pub fn route(path: &[u8]) -> Route {
    use crate::pb::etcdserverpb as pb;
    match path {
        b"/etcdserverpb.KV/Range" => unary!(api::Kv, range, pb::RangeRequest),
        b"/etcdserverpb.KV/Put" => unary!(api::Kv, put, pb::PutRequest),
        b"/etcdserverpb.KV/DeleteRange" => unary!(api::Kv, delete_range, pb::DeleteRangeRequest),
        b"/etcdserverpb.KV/Txn" => unary!(api::Kv, txn, pb::TxnRequest),
        b"/etcdserverpb.KV/Compact" => unary!(api::Kv, compact, pb::CompactionRequest),
        b"/etcdserverpb.Lease/LeaseGrant" => {
            unary!(api::Lease, lease_grant, pb::LeaseGrantRequest)
        }
        b"/etcdserverpb.Lease/LeaseRevoke" => {
            unary!(api::Lease, lease_revoke, pb::LeaseRevokeRequest)
        }
        b"/etcdserverpb.Lease/LeaseTimeToLive" => {
            unary!(api::Lease, lease_time_to_live, pb::LeaseTimeToLiveRequest)
        }
        b"/etcdserverpb.Lease/LeaseLeases" => {
            unary!(api::Lease, lease_leases, pb::LeaseLeasesRequest)
        }
        _ => Route::Bridge,
    }
}

/// grpc-go's answer to a request it cannot decode.
fn decode_error(e: prost::DecodeError) -> Status {
    Status::internal(format!("grpc: error unmarshalling request: {e}"))
}

/// grpc-go's answer to a message over the server's limit.
pub fn too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({len} vs. {max})"
    ))
}

/// A message with gRPC's 5-byte prefix (uncompressed, its length).
pub fn frame_message(m: &impl Message) -> Vec<u8> {
    let len = m.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    m.encode_raw(&mut out);
    out
}

/// The length a gRPC message prefix declares, once its 5 bytes are there.
pub fn declared_len(b: &[u8]) -> Option<usize> {
    let p = b.get(..5)?;
    Some(u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize)
}

/// The one message of a unary request body.
pub fn unframe(mut body: Bytes, max: usize) -> Result<Bytes, Status> {
    if body.len() < 5 {
        return Err(Status::internal(
            "grpc: the request ended before its message",
        ));
    }
    let compressed = body[0];
    let len = declared_len(&body).unwrap_or(0);
    if len > max {
        return Err(too_large(len, max));
    }
    if compressed != 0 {
        return Err(Status::unimplemented(
            "grpc: Decompressor is not installed for grpc-encoding",
        ));
    }
    body.advance(5);
    if body.len() != len {
        return Err(Status::internal(
            "grpc: a unary request must hold exactly one message",
        ));
    }
    Ok(body)
}

/// Serves gRPC on `listener` until `stop` changes, then waits for the
/// connections: each sends GOAWAY, finishes the calls it has and closes
/// (the caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            c = listener.accept() => match c {
                Ok((sock, _)) => {
                    // Small answers leave at once (no Nagle delay).
                    let _ = sock.set_nodelay(true);
                    conns.spawn(conn::Conn::new(sock, services.clone(), stop.clone()).run());
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    log::warn(
                        "embed/serve.go",
                        "failed to accept a client connection",
                        &[("error", V::S(&e.to_string()))],
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unframe_takes_exactly_one_uncompressed_message() {
        let m = frame_message(&crate::pb::etcdserverpb::PutRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        });
        assert_eq!(&unframe(Bytes::from(m.clone()), 100).unwrap()[..], &m[5..]);
        assert_eq!(
            unframe(Bytes::from(m.clone()), 2).unwrap_err().message(),
            "grpc: received message larger than max (3 vs. 2)"
        );
        let mut two = m.clone();
        two.extend_from_slice(&m);
        assert_eq!(
            unframe(Bytes::from(two), 100).unwrap_err().code(),
            tonic::Code::Internal
        );
        let mut compressed = m.clone();
        compressed[0] = 1;
        assert_eq!(
            unframe(Bytes::from(compressed), 100).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            unframe(Bytes::from_static(b"\0\0"), 100)
                .unwrap_err()
                .code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn hot_unary_calls_stay_in_the_connection_and_the_rest_is_bridged() {
        assert!(matches!(route(b"/etcdserverpb.KV/Range"), Route::Unary(_)));
        assert!(matches!(route(b"/etcdserverpb.Watch/Watch"), Route::Bridge));
        assert!(matches!(
            route(b"/etcdserverpb.Lease/LeaseKeepAlive"),
            Route::Bridge
        ));
        assert!(matches!(route(b"/nope"), Route::Bridge));
    }
}
