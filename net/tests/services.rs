//! Every v3 service of our `etcd` through its own generated tonic clients:
//! KV, Watch, Lease, Cluster, Maintenance, Auth and Health, each against a
//! fresh single member. The expected answers are etcd's: running with
//! `SERVICES_REFERENCE=1` points the same tests at Debian's etcd 3.4.23
//! instead (skipping what is ours only, or new in etcd 3.5), which is how
//! the expectations were checked.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use etcd_net::pb::authpb;
use etcd_net::pb::etcdserverpb as pb;
use etcd_net::pb::etcdserverpb::auth_client::AuthClient;
use etcd_net::pb::etcdserverpb::cluster_client::ClusterClient;
use etcd_net::pb::etcdserverpb::kv_client::KvClient;
use etcd_net::pb::etcdserverpb::lease_client::LeaseClient;
use etcd_net::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use etcd_net::pb::etcdserverpb::watch_client::WatchClient;
use etcd_net::pb::health;
use etcd_net::pb::mvccpb;
use mvccpb::event::EventType;
use pb::watch_request::RequestUnion;
use support::*;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

const OURS: &str = env!("CARGO_BIN_EXE_etcd");

/// The server under test: ours, or with `SERVICES_REFERENCE=1` etcd 3.4.23
/// (then `None` if it is missing: skip).
fn server_bin() -> Option<(PathBuf, bool)> {
    if std::env::var("SERVICES_REFERENCE").is_ok_and(|v| v == "1") {
        reference_etcd().map(|p| (p, false))
    } else {
        Some((PathBuf::from(OURS), true))
    }
}

/// A started member and a channel to it once it serves linearizable reads.
struct Member {
    proc: Proc,
    ch: Channel,
    /// Ours (else etcd 3.4.23).
    ours: bool,
    cluster_id: u64,
    member_id: u64,
}

async fn start(tag: &str) -> Option<Member> {
    let (bin, ours) = server_bin()?;
    let proc = single(Path::new(&bin), tag);
    let ch = connect_ready(&proc.client, || proc.log_text()).await;
    let ml = ClusterClient::new(ch.clone())
        .member_list(pb::MemberListRequest { linearizable: true })
        .await
        .expect("member list")
        .into_inner();
    let h = ml.header.expect("member list header");
    assert_eq!(ml.members.len(), 1, "{ml:?}");
    assert_ne!(h.cluster_id, 0, "{h:?}");
    assert_ne!(ml.members[0].id, 0, "{ml:?}");
    assert_eq!(h.member_id, ml.members[0].id, "{ml:?}");
    Some(Member {
        proc,
        ch,
        ours,
        cluster_id: h.cluster_id,
        member_id: h.member_id,
    })
}

impl Member {
    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.ch.clone())
    }
    fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.ch.clone())
    }
    fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.ch.clone())
    }

    /// A header as etcd gives it: this cluster and member, a term, and
    /// `revision`.
    #[track_caller]
    fn check_header(&self, h: Option<pb::ResponseHeader>, revision: i64) {
        let h = h.expect("a header");
        assert_eq!(h.cluster_id, self.cluster_id, "cluster_id in {h:?}");
        assert_eq!(h.member_id, self.member_id, "member_id in {h:?}");
        assert!(h.raft_term >= 1, "raft_term in {h:?}");
        assert_eq!(h.revision, revision, "revision in {h:?}");
    }

    async fn put(&self, key: &str, value: &str) -> i64 {
        put_revision(&self.ch, key, value).await
    }

    async fn revision(&self) -> i64 {
        self.kv()
            .range(pb::RangeRequest {
                key: b("any"),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner()
            .header
            .expect("header")
            .revision
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[track_caller]
fn check_error<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, message: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} \"{message}\", got {v:?}"),
        Err(s) => {
            assert_eq!(
                (s.code(), s.message()),
                (code, message),
                "unexpected status {s:?}"
            );
        }
    }
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: b(key),
        create_revision: create,
        mod_revision: modified,
        version,
        value: b(value),
        lease: 0,
    }
}

// ---- KV -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_range_put_delete_txn_compact() {
    let Some(m) = start("svc-kv").await else {
        return;
    };
    let mut c = m.kv();
    // A new cluster is at revision 1.
    assert_eq!(m.revision().await, 1);

    let r = c
        .put(pb::PutRequest {
            key: b("foo"),
            value: b("bar"),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    m.check_header(r.header, 2);
    assert_eq!(r.prev_kv, None);

    let r = c
        .put(pb::PutRequest {
            key: b("foo"),
            value: b("baz"),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    m.check_header(r.header, 3);
    assert_eq!(r.prev_kv, Some(kv("foo", "bar", 2, 2, 1)));

    // ignore_value keeps the value; a missing key is an error.
    let r = c
        .put(pb::PutRequest {
            key: b("foo"),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("put ignore_value")
        .into_inner();
    m.check_header(r.header, 4);
    assert_eq!(r.prev_kv, Some(kv("foo", "baz", 2, 3, 2)));
    check_error(
        c.put(pb::PutRequest {
            key: b("nothing"),
            ignore_value: true,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    check_error(
        c.put(pb::PutRequest {
            key: Bytes::new(),
            value: b("v"),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );

    assert_eq!(m.put("foo2", "x").await, 5);
    assert_eq!(m.put("fop", "y").await, 6);

    let r = c
        .range(pb::RangeRequest {
            key: b("foo"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    m.check_header(r.header, 6);
    assert_eq!(r.kvs, vec![kv("foo", "baz", 2, 4, 3)]);
    assert_eq!((r.count, r.more), (1, false));

    // A prefix, limited: `more` and the full count.
    let r = c
        .range(pb::RangeRequest {
            key: b("foo"),
            range_end: b("fop"),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("range prefix")
        .into_inner();
    m.check_header(r.header, 6);
    assert_eq!(r.kvs, vec![kv("foo", "baz", 2, 4, 3)]);
    assert_eq!((r.count, r.more), (2, true));

    // Everything from a key, keys only, descending.
    let r = c
        .range(pb::RangeRequest {
            key: b("foo2"),
            range_end: b("\0"),
            keys_only: true,
            sort_order: pb::range_request::SortOrder::Descend as i32,
            ..Default::default()
        })
        .await
        .expect("range from key")
        .into_inner();
    let keys: Vec<&[u8]> = r.kvs.iter().map(|k| k.key.as_ref()).collect();
    assert_eq!(keys, vec![b"fop".as_ref(), b"foo2"]);
    assert!(r.kvs.iter().all(|k| k.value.is_empty()), "{r:?}");

    // In the past, and in the future.
    let r = c
        .range(pb::RangeRequest {
            key: b("foo"),
            revision: 2,
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("range at 2")
        .into_inner();
    // The header carries the current revision, the data is of revision 2.
    m.check_header(r.header, 6);
    assert_eq!(r.kvs, vec![kv("foo", "bar", 2, 2, 1)]);
    check_error(
        c.range(pb::RangeRequest {
            key: b("foo"),
            revision: 100,
            ..Default::default()
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );

    // Deleting nothing changes no revision; deleting something does.
    let r = c
        .delete_range(pb::DeleteRangeRequest {
            key: b("nothing"),
            ..Default::default()
        })
        .await
        .expect("delete nothing")
        .into_inner();
    m.check_header(r.header, 6);
    assert_eq!(r.deleted, 0);
    let r = c
        .delete_range(pb::DeleteRangeRequest {
            key: b("foo2"),
            range_end: b("foo3"),
            prev_kv: true,
        })
        .await
        .expect("delete")
        .into_inner();
    m.check_header(r.header, 7);
    assert_eq!(r.deleted, 1);
    assert_eq!(r.prev_kvs, vec![kv("foo2", "x", 5, 5, 1)]);

    // A txn whose compare holds: its writes share one revision, its reads
    // see the state before them.
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    use pb::request_op::Request as Op;
    use pb::response_op::Response as R;
    let cas = |expect: &str| pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: b("foo"),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::Value(b(expect))),
        }],
        success: vec![
            pb::RequestOp {
                request: Some(Op::RequestRange(pb::RangeRequest {
                    key: b("foo"),
                    ..Default::default()
                })),
            },
            pb::RequestOp {
                request: Some(Op::RequestPut(pb::PutRequest {
                    key: b("foo"),
                    value: b("new"),
                    ..Default::default()
                })),
            },
            pb::RequestOp {
                request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: b("fop"),
                    ..Default::default()
                })),
            },
        ],
        failure: vec![pb::RequestOp {
            request: Some(Op::RequestRange(pb::RangeRequest {
                key: b("fop"),
                ..Default::default()
            })),
        }],
    };
    let r = c.txn(cas("baz")).await.expect("txn").into_inner();
    m.check_header(r.header, 8);
    assert!(r.succeeded);
    assert_eq!(r.responses.len(), 3, "{r:?}");
    match &r.responses[0].response {
        Some(R::ResponseRange(x)) => {
            assert_eq!(x.kvs, vec![kv("foo", "baz", 2, 4, 3)]);
            assert_eq!(x.header.map(|h| h.revision), Some(7));
        }
        other => panic!("{other:?}"),
    }
    match &r.responses[1].response {
        Some(R::ResponsePut(x)) => assert_eq!(x.header.map(|h| h.revision), Some(8)),
        other => panic!("{other:?}"),
    }
    match &r.responses[2].response {
        Some(R::ResponseDeleteRange(x)) => {
            assert_eq!(x.deleted, 1);
            assert_eq!(x.header.map(|h| h.revision), Some(8));
        }
        other => panic!("{other:?}"),
    }
    // The same compare now fails: the failure branch runs, nothing changes.
    let r = c.txn(cas("baz")).await.expect("txn").into_inner();
    m.check_header(r.header, 8);
    assert!(!r.succeeded);
    match r.responses.as_slice() {
        [
            pb::ResponseOp {
                response: Some(R::ResponseRange(x)),
            },
        ] => assert_eq!((x.count, x.kvs.len()), (0, 0)),
        other => panic!("{other:?}"),
    }
    // A put and a delete of one key in one txn: refused as etcd 3.4+ does.
    let mut dup = cas("new");
    dup.success[2] = pb::RequestOp {
        request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
            key: b("foo"),
            ..Default::default()
        })),
    };
    check_error(
        c.txn(dup).await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );

    // Compaction: the header is at the current revision; older revisions
    // are gone, the compaction revision itself stays readable.
    let r = c
        .compact(pb::CompactionRequest {
            revision: 4,
            physical: true,
        })
        .await
        .expect("compact")
        .into_inner();
    m.check_header(r.header, 8);
    check_error(
        c.range(pb::RangeRequest {
            key: b("foo"),
            revision: 3,
            ..Default::default()
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r = c
        .range(pb::RangeRequest {
            key: b("foo"),
            revision: 4,
            ..Default::default()
        })
        .await
        .expect("range at the compaction revision")
        .into_inner();
    assert_eq!(r.kvs, vec![kv("foo", "baz", 2, 4, 3)]);
    check_error(
        c.compact(pb::CompactionRequest {
            revision: 4,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    check_error(
        c.compact(pb::CompactionRequest {
            revision: 9,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
}

// ---- Watch ----------------------------------------------------------------------------

/// One watch stream: requests in through a channel, responses collected.
struct WatchStream {
    tx: mpsc::Sender<pb::WatchRequest>,
    rx: mpsc::UnboundedReceiver<Result<pb::WatchResponse, tonic::Status>>,
    seen: Vec<pb::WatchResponse>,
}

impl WatchStream {
    fn open(m: &Member) -> WatchStream {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        // grpc-go (etcd) sends the response headers only with the first
        // response, so the call is awaited in a task of its own.
        let mut client = WatchClient::new(m.ch.clone());
        tokio::spawn(async move {
            let stream = client
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    let _ = out_tx.send(Err(e));
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(r)) => {
                        if out_tx.send(Ok(r)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = out_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        WatchStream {
            tx,
            rx: out_rx,
            seen: Vec::new(),
        }
    }

    async fn send(&self, r: RequestUnion) {
        self.tx
            .send(pb::WatchRequest {
                request_union: Some(r),
            })
            .await
            .expect("stream open");
    }

    async fn create(&self, c: pb::WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    /// Reads responses until `done` holds for what was read so far.
    async fn until(&mut self, what: &str, done: impl Fn(&[pb::WatchResponse]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Ok(r))) => self.seen.push(r),
                Ok(other) => panic!("watch stream ended ({other:?}) waiting for {what}"),
                Err(_) => panic!("no {what} within 5 s; responses so far:\n{:#?}", self.seen),
            }
        }
    }

    /// Events delivered to `id` so far: (type, key, value, mod revision,
    /// previous value).
    fn events(&self, id: i64) -> Vec<(EventType, String, String, i64, Option<String>)> {
        let s = |x: &Bytes| String::from_utf8_lossy(x).to_string();
        self.seen
            .iter()
            .filter(|r| r.watch_id == id)
            .flat_map(|r| r.events.iter())
            .map(|e| {
                let kv = e.kv.clone().unwrap_or_default();
                (
                    EventType::try_from(e.r#type).expect("event type"),
                    s(&kv.key),
                    s(&kv.value),
                    kv.mod_revision,
                    e.prev_kv.as_ref().map(|p| s(&p.value)),
                )
            })
            .collect()
    }
}

fn count_events(rs: &[pb::WatchResponse], id: i64) -> usize {
    rs.iter()
        .filter(|r| r.watch_id == id)
        .map(|r| r.events.len())
        .sum()
}

fn is_progress(r: &pb::WatchResponse) -> bool {
    r.watch_id == -1 && !r.created && !r.canceled && r.events.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_many_watchers_on_one_stream() {
    use EventType::{Delete, Put};
    let Some(m) = start("svc-watch").await else {
        return;
    };
    assert_eq!(m.put("a", "1").await, 2);
    assert_eq!(m.put("a", "2").await, 3);
    assert_eq!(m.put("b", "1").await, 4);
    let r = m
        .kv()
        .delete_range(pb::DeleteRangeRequest {
            key: b("a"),
            ..Default::default()
        })
        .await
        .expect("delete");
    assert_eq!(r.into_inner().header.expect("header").revision, 5);

    let mut w = WatchStream::open(&m);
    let from =
        |id: i64, key: &str, end: &str, filters: Vec<i32>, prev_kv: bool| pb::WatchCreateRequest {
            key: b(key),
            range_end: b(end),
            start_revision: 2,
            filters,
            prev_kv,
            watch_id: id,
            ..Default::default()
        };
    let noput = pb::watch_create_request::FilterType::Noput as i32;
    let nodelete = pb::watch_create_request::FilterType::Nodelete as i32;
    // IDs of the client's choice, history from revision 2.
    w.create(from(10, "a", "", vec![], true)).await;
    w.create(from(11, "a", "c", vec![noput], false)).await;
    w.create(from(12, "a", "c", vec![nodelete], false)).await;
    // An ID of the server's choice, from the next revision on.
    w.create(pb::WatchCreateRequest {
        key: b("b"),
        ..Default::default()
    })
    .await;
    w.until("four created watchers and their history", |rs| {
        rs.iter().filter(|r| r.created).count() == 4
            && count_events(rs, 10) == 3
            && count_events(rs, 11) == 1
            && count_events(rs, 12) == 3
    })
    .await;
    let created: Vec<&pb::WatchResponse> = w.seen.iter().filter(|r| r.created).collect();
    for r in &created {
        assert!(!r.canceled && r.events.is_empty(), "{r:?}");
        // Created at the current revision.
        m.check_header(r.header, 5);
    }
    let ids: Vec<i64> = created.iter().map(|r| r.watch_id).collect();
    assert_eq!(&ids[..3], &[10, 11, 12], "created in order: {ids:?}");
    let auto = ids[3];
    assert!(auto >= 0 && ![10, 11, 12].contains(&auto), "{ids:?}");
    // A watcher's creation comes before its events.
    for id in [10, 11, 12] {
        let first = w.seen.iter().position(|r| r.watch_id == id);
        assert!(
            first.is_some_and(|i| w.seen[i].created),
            "watch {id}: {:#?}",
            w.seen
        );
    }
    assert_eq!(
        w.events(10),
        vec![
            (Put, "a".into(), "1".into(), 2, None),
            (Put, "a".into(), "2".into(), 3, Some("1".into())),
            (Delete, "a".into(), "".into(), 5, Some("2".into())),
        ]
    );
    assert_eq!(w.events(11), vec![(Delete, "a".into(), "".into(), 5, None)]);
    assert_eq!(
        w.events(12),
        vec![
            (Put, "a".into(), "1".into(), 2, None),
            (Put, "a".into(), "2".into(), 3, None),
            (Put, "b".into(), "1".into(), 4, None),
        ]
    );
    for r in w.seen.iter().filter(|r| !r.events.is_empty()) {
        let h = r.header.expect("header");
        assert_eq!((h.cluster_id, h.member_id), (m.cluster_id, m.member_id));
    }

    // A new revision reaches the watchers it matches, live.
    assert_eq!(m.put("b", "2").await, 6);
    w.until("b=2 on the server-chosen watcher and on 12", |rs| {
        count_events(rs, auto) == 1 && count_events(rs, 12) == 4
    })
    .await;
    assert_eq!(w.events(auto), vec![(Put, "b".into(), "2".into(), 6, None)]);
    let live = w
        .seen
        .iter()
        .rev()
        .find(|r| r.watch_id == auto && !r.events.is_empty())
        .expect("event");
    m.check_header(live.header, 6);

    // Progress: watch ID -1, at the current revision.
    w.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    w.until("a progress notification", |rs| rs.iter().any(is_progress))
        .await;
    let p = w.seen.iter().find(|r| is_progress(r)).expect("progress");
    m.check_header(p.header, 6);
    // NOPUT watcher 11 saw no put.
    assert_eq!(count_events(&w.seen, 11), 1);

    // Cancel 10: acknowledged, and nothing more arrives for it.
    w.send(RequestUnion::CancelRequest(pb::WatchCancelRequest {
        watch_id: 10,
    }))
    .await;
    w.until("the cancellation of 10", |rs| {
        rs.iter().any(|r| r.watch_id == 10 && r.canceled)
    })
    .await;
    assert_eq!(m.put("a", "3").await, 7);
    w.until("a=3 on watcher 12", |rs| count_events(rs, 12) == 5)
        .await;
    // A progress notification comes only after every event before it.
    let before = w.seen.len();
    w.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    w.until("a second progress notification", |rs| {
        rs[before..].iter().any(is_progress)
    })
    .await;
    let p = w.seen[before..]
        .iter()
        .find(|r| is_progress(r))
        .expect("progress");
    m.check_header(p.header, 7);
    assert_eq!(count_events(&w.seen, 10), 3, "10 was cancelled");
    assert_eq!(
        w.events(12).last(),
        Some(&(Put, "a".into(), "3".into(), 7, None))
    );

    // A start revision already compacted: created, then cancelled with the
    // compaction revision.
    m.kv()
        .compact(pb::CompactionRequest {
            revision: 5,
            physical: true,
        })
        .await
        .expect("compact");
    w.create(pb::WatchCreateRequest {
        key: b("a"),
        start_revision: 2,
        watch_id: 20,
        ..Default::default()
    })
    .await;
    w.until("watch 20 cancelled", |rs| {
        rs.iter().any(|r| r.watch_id == 20 && r.canceled)
    })
    .await;
    let of20: Vec<&pb::WatchResponse> = w.seen.iter().filter(|r| r.watch_id == 20).collect();
    assert!(of20[0].created, "{of20:?}");
    let cancel = of20.iter().find(|r| r.canceled).expect("cancel");
    // (etcd's header revision here is 0; ours is the current revision.)
    assert_eq!(cancel.compact_revision, 5, "{cancel:?}");
    assert!(cancel.events.is_empty(), "{cancel:?}");
    // The compaction revision itself can still be watched from. Its
    // deletion of `a` differs: etcd's compaction removes a tombstone at the
    // compaction revision, so etcd no longer sends that event; ours keeps
    // every event of that revision (ARCHITECTURE.md, MVCC).
    w.create(pb::WatchCreateRequest {
        key: b("a"),
        start_revision: 5,
        watch_id: 21,
        ..Default::default()
    })
    .await;
    let mut want = vec![(Put, "a".to_string(), "3".to_string(), 7, None)];
    if m.ours {
        want.insert(0, (Delete, "a".into(), "".into(), 5, None));
    }
    let n = want.len();
    w.until("watch 21's history", |rs| count_events(rs, 21) == n)
        .await;
    assert_eq!(w.events(21), want);
    assert!(
        !w.seen.iter().any(|r| r.watch_id == 21 && r.canceled),
        "{:#?}",
        w.seen
    );

    // An ID already in use on the stream: created and cancelled at once,
    // with etcd's reason; the stream goes on.
    let before = w.seen.len();
    w.create(pb::WatchCreateRequest {
        key: b("zzz"),
        watch_id: 12,
        ..Default::default()
    })
    .await;
    w.create(pb::WatchCreateRequest {
        key: b("zzz"),
        watch_id: 30,
        ..Default::default()
    })
    .await;
    w.until("watch 30 created", |rs| {
        rs[before..].iter().any(|r| r.watch_id == 30)
    })
    .await;
    let dup = &w.seen[before];
    assert_eq!(
        (
            dup.watch_id,
            dup.created,
            dup.canceled,
            dup.cancel_reason.as_str()
        ),
        (
            -1,
            true,
            true,
            "mvcc: duplicate watch ID provided on the WatchStream"
        ),
        "{dup:?}"
    );
    m.check_header(dup.header, 7);
    assert!(w.seen[before + 1].created && !w.seen[before + 1].canceled);
    // Cancelling an unknown watcher answers nothing: the next response is
    // the progress notification asked for after it.
    let before = w.seen.len();
    w.send(RequestUnion::CancelRequest(pb::WatchCancelRequest {
        watch_id: 999,
    }))
    .await;
    w.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    w.until("a progress notification", |rs| rs.len() > before)
        .await;
    assert!(is_progress(&w.seen[before]), "{:?}", w.seen[before]);
}

// ---- Lease ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keep_alive_time_to_live_revoke() {
    let Some(m) = start("svc-lease").await else {
        return;
    };
    let mut l = m.lease();
    let g = l
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    m.check_header(g.header, 1);
    assert!(g.id > 0, "{g:?}");
    assert_eq!((g.ttl, g.error.as_str()), (60, ""));
    let id = g.id;

    // An ID of the client's choice; granting it twice is an error.
    let g2 = l
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 777 })
        .await
        .expect("grant 777")
        .into_inner();
    assert_eq!((g2.id, g2.ttl), (777, 30));
    check_error(
        l.lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 777 })
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    check_error(
        l.lease_grant(pb::LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        })
        .await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );

    for k in ["k2", "k1"] {
        m.kv()
            .put(pb::PutRequest {
                key: b(k),
                value: b("v"),
                lease: id,
                ..Default::default()
            })
            .await
            .expect("put with lease");
    }
    let r = m
        .kv()
        .range(pb::RangeRequest {
            key: b("k1"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.kvs[0].lease, id);

    let t = l
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    m.check_header(t.header, 3);
    assert_eq!((t.id, t.granted_ttl), (id, 60));
    assert!((58..=60).contains(&t.ttl), "{t:?}");
    let mut keys = t.keys.clone();
    keys.sort();
    assert_eq!(keys, vec![b("k1"), b("k2")]);
    let t = l
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
        .await
        .expect("ttl")
        .into_inner();
    assert!(t.keys.is_empty(), "{t:?}");

    let all = l
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    m.check_header(all.header, 3);
    let mut ids: Vec<i64> = all.leases.iter().map(|s| s.id).collect();
    ids.sort();
    let mut want = vec![id, 777];
    want.sort();
    assert_eq!(ids, want);

    // Keep-alive: each request answered on the stream with the full TTL; an
    // unknown lease answered with TTL 0 without ending the stream.
    let (tx, rx) = mpsc::channel(4);
    // The first request goes before the call: grpc-go (etcd) sends the
    // response headers only with the first response.
    tx.send(pb::LeaseKeepAliveRequest { id })
        .await
        .expect("send");
    let mut ka = l
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keep-alive stream")
        .into_inner();
    for (i, (ask, want_ttl)) in [(id, 60), (4242, 0), (777, 30)].into_iter().enumerate() {
        if i > 0 {
            tx.send(pb::LeaseKeepAliveRequest { id: ask })
                .await
                .expect("send");
        }
        let r = tokio::time::timeout(Duration::from_secs(5), ka.message())
            .await
            .expect("keep-alive answer in time")
            .expect("keep-alive answer")
            .expect("stream open");
        assert_eq!((r.id, r.ttl), (ask, want_ttl), "{r:?}");
        m.check_header(r.header, 3);
    }
    drop(tx);

    // Revoking deletes the attached keys in one revision.
    let r = l
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .expect("revoke")
        .into_inner();
    m.check_header(r.header, 4);
    let r = m
        .kv()
        .range(pb::RangeRequest {
            key: b("k"),
            range_end: b("l"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.count, 0, "{r:?}");
    let t = l
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("ttl of a revoked lease")
        .into_inner();
    assert_eq!((t.id, t.ttl), (id, -1), "{t:?}");
    check_error(
        l.lease_revoke(pb::LeaseRevokeRequest { id }).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    check_error(
        m.kv()
            .put(pb::PutRequest {
                key: b("k1"),
                value: b("v"),
                lease: id,
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    let all = l
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    let ids: Vec<i64> = all.leases.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![777]);
}

// ---- Cluster, Maintenance, Health ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_maintenance_and_health() {
    let Some(m) = start("svc-maint").await else {
        return;
    };
    let mut cl = ClusterClient::new(m.ch.clone());
    // A member publishes its client URLs through the log, and (as etcd's
    // `ReadyNotify`) serves clients only after that: the very first member
    // list already shows them.
    let ml = cl
        .member_list(pb::MemberListRequest {
            linearizable: false,
        })
        .await
        .expect("member list")
        .into_inner();
    assert!(
        ml.members.iter().all(|x| !x.client_ur_ls.is_empty()),
        "served before publishing: {ml:?}"
    );
    for linearizable in [false, true] {
        let ml = cl
            .member_list(pb::MemberListRequest { linearizable })
            .await
            .expect("member list")
            .into_inner();
        let h = ml.header.expect("header");
        assert_eq!((h.cluster_id, h.member_id), (m.cluster_id, m.member_id));
        assert!(h.raft_term >= 1, "{h:?}");
        assert_eq!(
            ml.members,
            vec![pb::Member {
                id: m.member_id,
                name: "default".into(),
                peer_ur_ls: vec![m.proc.peer.clone()],
                client_ur_ls: vec![m.proc.client.clone()],
                is_learner: false,
            }]
        );
    }
    if m.ours {
        // Membership changes are not implemented yet: when they come, this
        // test must change with them.
        let add = cl
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: false,
            })
            .await;
        let remove = cl.member_remove(pb::MemberRemoveRequest { id: 1 }).await;
        let update = cl
            .member_update(pb::MemberUpdateRequest {
                id: m.member_id,
                peer_ur_ls: vec![m.proc.peer.clone()],
            })
            .await;
        let promote = cl.member_promote(pb::MemberPromoteRequest { id: 1 }).await;
        for (what, code) in [
            ("MemberAdd", add.map(|_| ()).map_err(|s| s.code())),
            ("MemberRemove", remove.map(|_| ()).map_err(|s| s.code())),
            ("MemberUpdate", update.map(|_| ()).map_err(|s| s.code())),
            ("MemberPromote", promote.map(|_| ()).map_err(|s| s.code())),
        ] {
            assert_eq!(code, Err(Code::Unimplemented), "{what}");
        }
    }

    let mut mt = m.maintenance();
    for i in 0..3 {
        m.put(&format!("k{i}"), "v").await;
    }
    let rev = m.revision().await;
    assert_eq!(rev, 4);
    let s = mt
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    m.check_header(s.header, rev);
    let h = s.header.expect("header");
    assert_eq!(s.version, if m.ours { "3.5.0" } else { "3.4.23" });
    assert_eq!(s.leader, m.member_id, "{s:?}");
    assert_eq!(s.raft_term, h.raft_term, "{s:?}");
    assert!(s.db_size > 0, "{s:?}");
    assert!(
        s.db_size_in_use > 0 && s.db_size_in_use <= s.db_size,
        "{s:?}"
    );
    // Three puts at least went through the log and were applied.
    assert!(s.raft_applied_index >= 3, "{s:?}");
    assert!(s.raft_index >= s.raft_applied_index, "{s:?}");
    assert!(s.errors.is_empty(), "{s:?}");
    assert!(!s.is_learner, "{s:?}");

    // Hash: the same while nothing is written, another after a write.
    let hash = |mut mt: MaintenanceClient<Channel>| async move {
        let r = mt
            .hash(pb::HashRequest {})
            .await
            .expect("hash")
            .into_inner();
        (r.hash, r.header.expect("header").revision)
    };
    let (h1, r1) = hash(mt.clone()).await;
    let (h2, r2) = hash(mt.clone()).await;
    assert_eq!((h1, r1), (h2, r2));
    assert_eq!(r1, rev);

    // HashKV: a revision's hash does not change with later writes, and
    // differs from a revision with other contents.
    let hash_kv = |mut mt: MaintenanceClient<Channel>, revision: i64| async move {
        mt.hash_kv(pb::HashKvRequest { revision })
            .await
            .expect("hash kv")
            .into_inner()
    };
    let at3 = hash_kv(mt.clone(), 3).await;
    let at4 = hash_kv(mt.clone(), 4).await;
    let now = hash_kv(mt.clone(), 0).await;
    m.check_header(at3.header, 4);
    assert_ne!(at3.hash, at4.hash);
    assert_eq!(now.hash, at4.hash, "revision 0 is the current one");
    assert_eq!(m.put("k9", "v").await, 5);
    let (h3, _) = hash(mt.clone()).await;
    assert_ne!(h3, h1, "a write changes the hash");
    let again = hash_kv(mt.clone(), 3).await;
    assert_eq!(again.hash, at3.hash);
    m.check_header(again.header, 5);
    check_error(
        mt.hash_kv(pb::HashKvRequest { revision: 99 }).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );

    // etcd answers a defragmentation with no header at all; so do we.
    let d = mt
        .defragment(pb::DefragmentRequest {})
        .await
        .expect("defragment")
        .into_inner();
    assert!(d.header.is_none(), "{d:?}");

    let a = mt
        .alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: 0,
        })
        .await
        .expect("alarm get")
        .into_inner();
    // etcd's answer has no header; neither has ours.
    assert!(a.alarms.is_empty() && a.header.is_none(), "{a:?}");

    // Moving leadership to the leader itself succeeds at once; to a member
    // that does not exist is refused.
    // (etcd's answer has no header, nor has ours.)
    mt.move_leader(pb::MoveLeaderRequest {
        target_id: m.member_id,
    })
    .await
    .expect("move leader to self");
    check_error(
        mt.move_leader(pb::MoveLeaderRequest {
            target_id: m.member_id ^ 1,
        })
        .await,
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee",
    );

    let mut hc = health::health_client::HealthClient::new(m.ch.clone());
    let r = hc
        .check(health::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        r.status,
        health::health_check_response::ServingStatus::Serving as i32
    );
    // grpc-go's health server, which etcd registers: an unknown service is
    // an error to Check, and a status on a Watch stream.
    check_error(
        hc.check(health::HealthCheckRequest {
            service: "nope".into(),
        })
        .await,
        Code::NotFound,
        "unknown service",
    );
    for (service, want) in [
        ("", health::health_check_response::ServingStatus::Serving),
        (
            "nope",
            health::health_check_response::ServingStatus::ServiceUnknown,
        ),
    ] {
        let mut stream = hc
            .watch(health::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health watch")
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a first status within 5 s")
            .expect("a status")
            .expect("the stream stays open");
        assert_eq!(first.status, want as i32, "watch of {service:?}");
    }
}

// ---- Auth -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_users_roles_and_permissions() {
    let Some(m) = start("svc-auth").await else {
        return;
    };
    let mut a = AuthClient::new(m.ch.clone());
    // etcd 3.4 has no AuthStatus (it came with 3.5).
    let status_before = if m.ours {
        let s = a
            .auth_status(pb::AuthStatusRequest {})
            .await
            .expect("auth status")
            .into_inner();
        assert!(!s.enabled, "{s:?}");
        Some(s.auth_revision)
    } else {
        None
    };

    let add = |name: &str| pb::AuthUserAddRequest {
        name: name.into(),
        password: "secret".into(),
        ..Default::default()
    };
    let r = a
        .user_add(add("alice"))
        .await
        .expect("user add")
        .into_inner();
    m.check_header(r.header, 1);
    a.user_add(add("bob")).await.expect("user add");
    check_error(
        a.user_add(add("alice")).await,
        Code::FailedPrecondition,
        "etcdserver: user name already exists",
    );
    check_error(
        a.user_add(add("")).await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );

    let r = a
        .role_add(pb::AuthRoleAddRequest {
            name: "reader".into(),
        })
        .await
        .expect("role add")
        .into_inner();
    m.check_header(r.header, 1);
    check_error(
        a.role_add(pb::AuthRoleAddRequest {
            name: "reader".into(),
        })
        .await,
        Code::FailedPrecondition,
        "etcdserver: role name already exists",
    );

    let perm = authpb::Permission {
        perm_type: authpb::permission::Type::Read as i32,
        key: b("foo"),
        range_end: b("fop"),
    };
    a.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
        name: "reader".into(),
        perm: Some(perm.clone()),
    })
    .await
    .expect("grant permission");
    check_error(
        a.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
            name: "nobody".into(),
            perm: Some(perm.clone()),
        })
        .await,
        Code::FailedPrecondition,
        "etcdserver: role name not found",
    );
    let r = a
        .role_get(pb::AuthRoleGetRequest {
            role: "reader".into(),
        })
        .await
        .expect("role get")
        .into_inner();
    m.check_header(r.header, 1);
    assert_eq!(r.perm, vec![perm]);

    // Before and after a role is granted.
    let r = a
        .user_get(pb::AuthUserGetRequest {
            name: "alice".into(),
        })
        .await
        .expect("user get")
        .into_inner();
    assert!(r.roles.is_empty(), "{r:?}");
    a.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "alice".into(),
        role: "reader".into(),
    })
    .await
    .expect("grant role");
    let r = a
        .user_get(pb::AuthUserGetRequest {
            name: "alice".into(),
        })
        .await
        .expect("user get")
        .into_inner();
    m.check_header(r.header, 1);
    assert_eq!(r.roles, vec!["reader".to_string()]);
    check_error(
        a.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "alice".into(),
            role: "writer".into(),
        })
        .await,
        Code::FailedPrecondition,
        "etcdserver: role name not found",
    );
    check_error(
        a.user_get(pb::AuthUserGetRequest {
            name: "carol".into(),
        })
        .await,
        Code::FailedPrecondition,
        "etcdserver: user name not found",
    );

    let r = a
        .user_list(pb::AuthUserListRequest {})
        .await
        .expect("user list")
        .into_inner();
    m.check_header(r.header, 1);
    assert_eq!(r.users, vec!["alice".to_string(), "bob".to_string()]);
    let r = a
        .role_list(pb::AuthRoleListRequest {})
        .await
        .expect("role list")
        .into_inner();
    assert_eq!(r.roles, vec!["reader".to_string()]);

    if let Some(before) = status_before {
        let s = a
            .auth_status(pb::AuthStatusRequest {})
            .await
            .expect("auth status")
            .into_inner();
        m.check_header(s.header, 1);
        assert!(!s.enabled, "{s:?}");
        // Every change above moved the auth revision on.
        assert!(s.auth_revision >= before + 5, "{before} then {s:?}");
    }
}
