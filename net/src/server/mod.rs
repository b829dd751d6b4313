//! The `etcd` server: configuration in, a member out. One thread owns the core
//! (`core.rs`); tokio runs the gRPC services (`api.rs`, `watch.rs`), the peer
//! transport (`peer.rs`) and signal handling, and they reach the core only
//! through its channel.

pub mod api;
pub mod compactor;
pub mod convert;
pub mod core;
pub mod grpc;
pub mod lock;
pub mod peer;
pub mod watch;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use etcd_core::NodeId;
use etcd_core::cluster::{Member, encode_member};
use etcd_core::etcd::{EtcdConfig, EtcdState};
use etcd_core::node::{Node, NodeConfig};
use etcd_core::raft::RaftConfig;
use etcd_core::request::{ApiLimits, Request};

use crate::config::Config;
use crate::log::{self, V};
use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::pb::health::health_server::HealthServer;
use crate::pb::peer::raft_server::RaftServer;
use crate::wal::{Wal, WalOptions};

use self::core::{CoreHandle, CoreMsg, CoreParts};

/// gRPC adds framing around a request; etcd allows this much over
/// `--max-request-bytes` before grpc-go refuses a message.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub struct ServerError(pub String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(e: impl std::fmt::Display) -> ServerError {
    ServerError(e.to_string())
}

/// `http://host:port` → the socket addresses to bind.
pub fn bind_addrs(url: &str) -> Result<Vec<SocketAddr>, ServerError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err(format!("unsupported URL {url:?}: only http:// is served")))?;
    let hostport = rest.trim_end_matches('/');
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve {url:?}: {e}")))?
        .collect();
    // `localhost` binds its IPv4 address only, as etcd's listener does.
    let v4: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.is_ipv4()).collect();
    Ok(if v4.is_empty() {
        addrs
    } else {
        v4[..1].to_vec()
    })
}

fn seed_from_clock() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// Runs a member until SIGTERM / SIGINT. Returns the process exit code.
pub fn run(cfg: Config) -> Result<(), ServerError> {
    let ic = cfg.initial_cluster_ids().map_err(err)?;
    let local = ic.local_id;
    let cluster_id = ic.cluster_id;
    log::info(
        "etcdmain/etcd.go",
        "starting an etcd server",
        &[
            ("name", V::S(&cfg.name)),
            ("data-dir", V::S(&cfg.data_dir)),
            ("member-id", V::X(local)),
            ("cluster-id", V::X(cluster_id)),
            ("listen-client-urls", V::L(&cfg.listen_client_urls)),
            ("listen-peer-urls", V::L(&cfg.listen_peer_urls)),
            ("initial-cluster", V::S(&cfg.initial_cluster)),
            (
                "initial-cluster-state",
                V::S(cfg.initial_cluster_state.as_str()),
            ),
        ],
    );

    let data_dir = Path::new(&cfg.data_dir);
    let opts = WalOptions {
        max_snapshots: cfg.max_snapshots.max(1) as usize,
        wal_dir: (!cfg.wal_dir.is_empty()).then(|| cfg.wal_dir_path()),
        ..WalOptions::default()
    };
    let (wal, rec) = Wal::open(data_dir, NodeId(local), cluster_id, opts).map_err(err)?;
    let fresh = rec.snapshot.is_none() && rec.entries.is_empty() && rec.hard_state.term.0 == 0;

    let election_ticks = cfg.election_ticks().max(2) as u32;
    let mut raft = RaftConfig::new(NodeId(local), seed_from_clock());
    raft.election_timeout_ticks = election_ticks;
    raft.heartbeat_interval_ticks = 1;
    let mut ncfg = NodeConfig::new(raft);
    ncfg.snapshot_interval_entries = cfg.snapshot_count_effective();
    // etcd's request timeout: 5 s plus twice the election timeout.
    ncfg.request_timeout_ticks =
        (5_000 + 2 * cfg.election_timeout_ms) / cfg.heartbeat_interval_ms.max(1);
    let mut ecfg = EtcdConfig::new(cfg.heartbeat_interval_ms, election_ticks);
    ecfg.cluster_id = cluster_id;
    ecfg.limits = ApiLimits {
        max_txn_ops: cfg.max_txn_ops as usize,
        max_request_bytes: cfg.max_request_bytes as usize,
    };
    let sm = EtcdState::new(ecfg);

    let members: Vec<Member> = ic
        .members
        .iter()
        .map(|m| Member {
            id: m.id,
            name: if m.id == local {
                m.name.clone()
            } else {
                // etcd learns other members' names when they publish.
                String::new()
            },
            peer_urls: m.peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let node = if fresh {
        if !cfg.is_new_cluster() {
            return Err(err(
                "joining an existing cluster (--initial-cluster-state existing) is not supported yet",
            ));
        }
        cfg.verify_bootstrap().map_err(err)?;
        let voters: Vec<(NodeId, Bytes)> = members
            .iter()
            .map(|m| (NodeId(m.id), encode_member(m)))
            .collect();
        Node::bootstrap(ncfg, sm, &voters)
    } else {
        log::info(
            "etcdserver/server.go",
            "restarting local member",
            &[
                ("cluster-id", V::X(cluster_id)),
                ("local-member-id", V::X(local)),
                ("commit-index", V::U(rec.hard_state.commit.0)),
            ],
        );
        Node::restart(ncfg, sm, rec).map_err(|e| err(format!("cannot restart: {e:?}")))?
    };

    // Peers: from the membership the state machine knows, else the config.
    let mut peers: BTreeMap<u64, Vec<String>> = node
        .state_machine()
        .cluster()
        .members
        .values()
        .map(|m| (m.id, m.peer_urls.clone()))
        .collect();
    if peers.is_empty() {
        peers = members
            .iter()
            .map(|m| (m.id, m.peer_urls.clone()))
            .collect();
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // ETCDRS_IO_WORKERS (not an etcd setting, hence not ETCD_*) overrides
    // the choice, as GOMAXPROCS does for etcd: 0 is one thread for all.
    let workers = match std::env::var("ETCDRS_IO_WORKERS") {
        Err(_) => io_workers(cores),
        Ok(v) => match v.parse::<usize>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => {
                return Err(err(format!(
                    "ETCDRS_IO_WORKERS={v:?}: expected a number of threads"
                )));
            }
        },
    };
    let rt = match workers {
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .thread_name("etcd-io")
            .build(),
    }
    .map_err(err)?;
    let mut transport = peer::Transport::start(rt.handle(), local, cluster_id, &peers);

    let (tx, rx) = std::sync::mpsc::channel::<CoreMsg>();
    let outbox = Arc::new(core::Outbox::default());
    rt.spawn(outbox.clone().run());
    let (published_tx, published_rx) = tokio::sync::oneshot::channel();
    let handle = CoreHandle::new(tx);
    let term = Arc::new(AtomicU64::new(0));
    let db_size = Arc::new(AtomicU64::new(0));
    let parts = CoreParts {
        node,
        wal,
        tick: cfg.tick_interval(),
        peers: Box::new(move |msgs| transport.send(msgs)),
        publish: Some(Request::MemberPublish {
            id: local,
            name: cfg.name.clone(),
            client_urls: cfg.advertise_client_urls.clone(),
        }),
        term: term.clone(),
        db_size: db_size.clone(),
        campaign: fresh && members.len() == 1,
        published: Some(published_tx),
        outbox: outbox.clone(),
    };
    let core_thread = std::thread::Builder::new()
        .name("etcd-core".into())
        .spawn(move || core::run(parts, rx))
        .map_err(err)?;

    let api = Arc::new(api::Api {
        core: handle.clone(),
        cluster_id,
        member_id: local,
        term,
        db_size,
        quota_bytes: cfg.quota_backend_bytes_effective(),
    });

    let result = rt.block_on(serve(&cfg, api, handle.clone(), cluster_id, published_rx));
    // Stop the core whatever happened, and wait for it to sync.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    if handle.send(CoreMsg::Shutdown(done_tx)) {
        let _ = done_rx.blocking_recv();
    }
    drop(handle);
    let _ = core_thread.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    if result.is_ok() {
        log::info(
            "etcdserver/server.go",
            "stopped etcd server",
            &[("name", V::S(&cfg.name)), ("data-dir", V::S(&cfg.data_dir))],
        );
    }
    result
}

/// Binds every listener, serves until a signal, then returns.
async fn serve(
    cfg: &Config,
    api: api::Shared,
    core: CoreHandle,
    cluster_id: u64,
    published: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), ServerError> {
    let max_msg = cfg.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let mut servers = Vec::new();
    for url in &cfg.listen_peer_urls {
        for addr in bind_addrs(url)? {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| err(format!("listen tcp {addr}: bind: {e}")))?;
            log::info(
                "embed/etcd.go",
                "starting peer listener",
                &[("address", V::S(&addr.to_string()))],
            );
            let svc = RaftServer::new(peer::PeerService {
                core: core.clone(),
                cluster_id,
            })
            .max_decoding_message_size(peer::MAX_FRAME_BYTES);
            let mut stop = stop_rx.clone();
            servers.push(tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(
                        futures_util::StreamExt::map(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            nodelay,
                        ),
                        async move {
                            let _ = stop.changed().await;
                        },
                    )
                    .await;
            }));
        }
    }
    // As etcd: clients are served once this member has published itself
    // through the log (so every member list shows its client URLs), which
    // needs a quorum. A signal meanwhile still stops the server.
    tokio::select! {
        r = published => {
            if r.is_err() {
                return Err(err("the core stopped before this member was published"));
            }
        }
        _ = wait_for_signal() => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
    }
    for url in &cfg.listen_client_urls {
        for addr in bind_addrs(url)? {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| err(format!("listen tcp {addr}: bind: {e}")))?;
            let routes = tonic::service::Routes::new(
                // KV's calls are all answered by `grpc::route`; the limit
                // holds if one is ever bridged instead.
                KvServer::new(api::Kv(api.clone())).max_decoding_message_size(max_msg),
            )
            .add_service(WatchServer::new(watch::Watch(api.clone())))
            .add_service(LeaseServer::new(api::Lease(api.clone())))
            .add_service(ClusterServer::new(api::Cluster(api.clone())))
            .add_service(MaintenanceServer::new(api::Maintenance(api.clone())))
            .add_service(AuthServer::new(api::Auth(api.clone())))
            .add_service(HealthServer::new(api::Health(api.clone())))
            .add_service(lock::lock_service(api.clone()))
            .add_service(lock::election_service(api.clone(), max_msg))
            .prepare();
            let services = Arc::new(grpc::Services {
                api: api.clone(),
                routes,
                max_msg,
            });
            servers.push(tokio::spawn(grpc::serve(
                listener,
                services,
                stop_rx.clone(),
            )));
            log::info(
                "embed/serve.go",
                "serving client traffic insecurely; this is strongly discouraged!",
                &[("address", V::S(&addr.to_string()))],
            );
        }
    }
    let auto = cfg.auto_compaction().map_err(err)?;
    let compaction = tokio::spawn(compactor::run(api.clone(), auto));
    log::info("etcdmain/main.go", "ready to serve client requests", &[]);
    notify_systemd();

    wait_for_signal().await;
    log::info(
        "osutil/interrupt_unix.go",
        "received signal; shutting down",
        &[],
    );
    let _ = stop_tx.send(true);
    compaction.abort();
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
    }
    Ok(())
}

/// Accepted sockets send small answers at once. tonic's own `tcp_nodelay`
/// setting applies only to listeners it binds itself, not to a stream of
/// accepted connections: without this a unary answer waits ~40 ms for
/// Nagle and a delayed ACK.
fn nodelay(conn: std::io::Result<tokio::net::TcpStream>) -> std::io::Result<tokio::net::TcpStream> {
    let s = conn?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, serve until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Tells systemd the member is ready (`Type=notify` units), as etcd does.
fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    // Abstract sockets ("@name") are not supported by std's path API; the
    // common case is a filesystem path.
    if sock.send_to(b"READY=1", Path::new(&path)).is_ok() {
        log::info("etcdmain/etcd.go", "notified init daemon", &[]);
    }
}

/// The I/O runtime's worker threads for a machine with `cores` cores: `None`
/// for one thread running everything (the current-thread runtime). With one
/// or two cores a second I/O thread only adds wake-ups and work stealing
/// (measured: BENCHMARKS.md); with more, the I/O side gets all cores but the
/// core thread's.
fn io_workers(cores: usize) -> Option<usize> {
    (cores > 2).then(|| cores - 1)
}

#[cfg(test)]
mod tests {
    use super::io_workers;

    #[test]
    fn one_io_thread_on_small_machines_more_on_big_ones() {
        assert_eq!(io_workers(1), None);
        assert_eq!(io_workers(2), None);
        assert_eq!(io_workers(4), Some(3));
        assert_eq!(io_workers(16), Some(15));
    }
}
