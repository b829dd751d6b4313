//! The Lock and Election services and Maintenance.Snapshot, against the real
//! `etcd` binary: tonic clients for the services themselves, and Debian's
//! etcdctl 3.4 (if installed) for `lock`, `elect` and `snapshot save`, which
//! do the same dance client side over KV, Lease and Watch.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Code;
use tonic::transport::Channel;

use etcd_net::pb::etcdserverpb as pb;
use etcd_net::pb::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
};
use etcd_net::pb::v3electionpb::{self as epb, election_client::ElectionClient};
use etcd_net::pb::v3lockpb::{self as lpb, lock_client::LockClient};

use support::{Proc, connect_ready, etcdctl, put_revision, single};

const ETCD: &str = env!("CARGO_BIN_EXE_etcd");

/// How long a blocked call is watched to make sure it stays blocked.
const STAYS_BLOCKED: Duration = Duration::from_millis(700);
/// How long a call that should go through may take.
const GOES_THROUGH: Duration = Duration::from_secs(10);

/// Our server as a single member on free ports (`support::single`).
fn start(tag: &str) -> Proc {
    single(Path::new(ETCD), tag)
}

/// A channel once `srv` answers a Range.
async fn channel(srv: &Proc) -> Channel {
    connect_ready(&srv.client, || srv.log_text()).await
}

async fn grant(ch: &Channel, ttl: i64) -> i64 {
    LeaseClient::new(ch.clone())
        .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id
}

async fn revoke(ch: &Channel, id: i64) {
    LeaseClient::new(ch.clone())
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .expect("lease revoke");
}

async fn put(ch: &Channel, k: &str, v: &str) -> i64 {
    put_revision(ch, k, v).await
}

/// The keys under `prefix`, in key order.
async fn keys(ch: &Channel, prefix: &str) -> Vec<String> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    KvClient::new(ch.clone())
        .range(pb::RangeRequest {
            key: Bytes::copy_from_slice(prefix.as_bytes()),
            range_end: Bytes::from(end),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn lock_req(name: &str, lease: i64) -> lpb::LockRequest {
    lpb::LockRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
    }
}

fn key_of(name: &str, lease: i64) -> String {
    format!("{name}/{lease:x}")
}

type Pending<T> = tokio::task::JoinHandle<Result<tonic::Response<T>, tonic::Status>>;

fn spawn_lock(ch: &Channel, name: &str, lease: i64) -> Pending<lpb::LockResponse> {
    let mut c = LockClient::new(ch.clone());
    let r = lock_req(name, lease);
    tokio::spawn(async move { c.lock(r).await })
}

/// Asserts the call is still blocked after a while, and gives it back.
async fn still_blocked<T>(mut p: Pending<T>, what: &str) -> Pending<T> {
    assert!(
        tokio::time::timeout(STAYS_BLOCKED, &mut p).await.is_err(),
        "{what} should still be waiting"
    );
    p
}

async fn finishes<T>(p: Pending<T>, what: &str) -> T {
    tokio::time::timeout(GOES_THROUGH, p)
        .await
        .unwrap_or_else(|_| panic!("{what} should have finished"))
        .expect("task")
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
        .into_inner()
}

async fn unlock(ch: &Channel, key: Bytes) -> i64 {
    LockClient::new(ch.clone())
        .unlock(lpb::UnlockRequest { key })
        .await
        .expect("unlock")
        .into_inner()
        .header
        .expect("header")
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_is_taken_in_queue_order() {
    let srv = start("order");
    let ch = channel(&srv).await;
    let (a, b, c) = (
        grant(&ch, 60).await,
        grant(&ch, 60).await,
        grant(&ch, 60).await,
    );

    let la = finishes(spawn_lock(&ch, "mylock", a), "first lock").await;
    assert_eq!(la.key, key_of("mylock", a).as_bytes());
    let ha = la.header.expect("header");
    assert!(ha.revision > 0 && ha.cluster_id != 0 && ha.member_id != 0);

    let pb_ = still_blocked(spawn_lock(&ch, "mylock", b), "second lock").await;
    let pc = still_blocked(spawn_lock(&ch, "mylock", c), "third lock").await;
    // Waiters are queued under the lock's prefix.
    assert_eq!(
        keys(&ch, "mylock/").await.len(),
        3,
        "every contender has its key"
    );
    // Another name is independent.
    let other = finishes(spawn_lock(&ch, "other", b), "other lock").await;
    assert_eq!(other.key, key_of("other", b).as_bytes());

    let unlocked_at = unlock(&ch, la.key).await;
    let lb = finishes(pb_, "second lock").await;
    assert_eq!(lb.key, key_of("mylock", b).as_bytes());
    assert!(lb.header.expect("header").revision >= unlocked_at);
    let pc = still_blocked(pc, "third lock").await;

    // Locking again with the holder's lease is re-entrant: same key at once.
    let again = finishes(spawn_lock(&ch, "mylock", b), "re-lock").await;
    assert_eq!(again.key, lb.key);

    unlock(&ch, lb.key).await;
    let lc = finishes(pc, "third lock").await;
    assert_eq!(lc.key, key_of("mylock", c).as_bytes());
    unlock(&ch, lc.key).await;
    assert!(keys(&ch, "mylock/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_passes_on_when_the_holders_lease_is_revoked() {
    let srv = start("revoke");
    let ch = channel(&srv).await;
    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);
    let la = finishes(spawn_lock(&ch, "l", a), "first lock").await;
    let pb_ = still_blocked(spawn_lock(&ch, "l", b), "second lock").await;
    revoke(&ch, a).await;
    let lb = finishes(pb_, "second lock").await;
    assert_eq!(lb.key, key_of("l", b).as_bytes());
    assert_ne!(lb.key, la.key);
    assert_eq!(keys(&ch, "l/").await, vec![key_of("l", b)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_errors_and_cleanup() {
    let srv = start("lockerr");
    let ch = channel(&srv).await;

    // A lease that does not exist: etcd's error text, code Unknown (etcd's
    // handler returns its client's error, which grpc-go sends as Unknown).
    let e = LockClient::new(ch.clone())
        .lock(lock_req("x", 0x1234))
        .await
        .expect_err("unknown lease");
    assert_eq!(e.code(), Code::Unknown);
    assert_eq!(e.message(), "etcdserver: requested lease not found");

    // A waiter that gives up (deadline) leaves the queue.
    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);
    let la = finishes(spawn_lock(&ch, "x", a), "lock").await;
    let mut req = tonic::Request::new(lock_req("x", b));
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = LockClient::new(ch.clone())
        .lock(req)
        .await
        .expect_err("times out");
    assert!(started.elapsed() < GOES_THROUGH, "{e:?}");
    let deadline = Instant::now() + GOES_THROUGH;
    while keys(&ch, "x/").await.len() != 1 {
        assert!(Instant::now() < deadline, "the waiter's key stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keys(&ch, "x/").await, vec![key_of("x", a)]);

    // A waiter whose own lease ends keeps its place in etcd's algorithm
    // (its key is gone, so it no longer blocks anyone) and learns of it
    // once the lock is free.
    let c = grant(&ch, 60).await;
    let pc = still_blocked(spawn_lock(&ch, "x", c), "waiter").await;
    revoke(&ch, c).await;
    let pc = still_blocked(pc, "waiter without lease").await;
    unlock(&ch, la.key).await;
    let e = tokio::time::timeout(GOES_THROUGH, pc)
        .await
        .expect("in time")
        .expect("task")
        .expect_err("session expired");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unknown, "mutex: session is expired")
    );

    // Lease 0: the server grants the session a lease (60 s) of its own.
    let l0 = finishes(spawn_lock(&ch, "x", 0), "lock without lease").await;
    let key = String::from_utf8(l0.key.to_vec()).expect("utf-8");
    let hex = key.strip_prefix("x/").expect("prefix");
    let lease = i64::from_str_radix(hex, 16).expect("hex lease");
    let ttl = LeaseClient::new(ch.clone())
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .expect("ttl")
        .into_inner();
    assert!(ttl.granted_ttl == 60 && ttl.ttl > 0, "{ttl:?}");
    assert_eq!(ttl.keys, vec![l0.key.clone()]);

    // Unlock of a key that is not there is fine (a delete).
    unlock(&ch, Bytes::from_static(b"x/none")).await;
}

fn campaign_req(name: &str, lease: i64, value: &str) -> epb::CampaignRequest {
    epb::CampaignRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn spawn_campaign(
    ch: &Channel,
    name: &str,
    lease: i64,
    value: &str,
) -> Pending<epb::CampaignResponse> {
    let mut c = ElectionClient::new(ch.clone());
    let r = campaign_req(name, lease, value);
    tokio::spawn(async move { c.campaign(r).await })
}

async fn leader(ch: &Channel, name: &str) -> Result<(String, String), tonic::Status> {
    let r = ElectionClient::new(ch.clone())
        .leader(epb::LeaderRequest {
            name: Bytes::copy_from_slice(name.as_bytes()),
        })
        .await?
        .into_inner();
    let kv = r.kv.expect("kv");
    Ok((
        String::from_utf8_lossy(&kv.key).into_owned(),
        String::from_utf8_lossy(&kv.value).into_owned(),
    ))
}

async fn proclaim(
    ch: &Channel,
    l: &epb::LeaderKey,
    value: &str,
) -> Result<epb::ProclaimResponse, tonic::Status> {
    ElectionClient::new(ch.clone())
        .proclaim(epb::ProclaimRequest {
            leader: Some(l.clone()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .await
        .map(|r| r.into_inner())
}

async fn resign(ch: &Channel, l: Option<epb::LeaderKey>) -> Result<i64, tonic::Status> {
    ElectionClient::new(ch.clone())
        .resign(epb::ResignRequest { leader: l })
        .await
        .map(|r| r.into_inner().header.expect("header").revision)
}

/// The next (key, value) the observer reports.
async fn observed(s: &mut tonic::Streaming<epb::LeaderResponse>) -> (String, String) {
    let r = tokio::time::timeout(GOES_THROUGH, s.message())
        .await
        .expect("observe reports in time")
        .expect("observe stream")
        .expect("observe message");
    let kv = r.kv.expect("kv");
    assert!(r.header.expect("header").revision >= kv.mod_revision);
    (
        String::from_utf8_lossy(&kv.key).into_owned(),
        String::from_utf8_lossy(&kv.value).into_owned(),
    )
}

async fn nothing_observed(s: &mut tonic::Streaming<epb::LeaderResponse>) {
    if let Ok(m) = tokio::time::timeout(STAYS_BLOCKED, s.message()).await {
        panic!("unexpected observation {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_campaign_leader_proclaim_resign_observe() {
    let srv = start("elect");
    let ch = channel(&srv).await;
    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);

    let e = leader(&ch, "e").await.expect_err("no leader yet");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unknown, "election: no leader")
    );

    // Observe before anyone campaigns: it waits for the first leader.
    let mut obs = ElectionClient::new(ch.clone())
        .observe(epb::LeaderRequest {
            name: Bytes::from_static(b"e"),
        })
        .await
        .expect("observe")
        .into_inner();
    // A key of another election with a longer name is not ours.
    put(&ch, "e2/zzz", "other").await;
    nothing_observed(&mut obs).await;

    let ca = finishes(spawn_campaign(&ch, "e", a, "a"), "first campaign").await;
    let la = ca.leader.expect("leader key");
    assert_eq!(la.name, b"e"[..]);
    assert_eq!(la.key, key_of("e", a).as_bytes());
    assert_eq!(la.lease, a);
    assert_eq!(ca.header.expect("header").revision, la.rev);
    assert_eq!(observed(&mut obs).await, (key_of("e", a), "a".into()));
    assert_eq!(
        leader(&ch, "e").await.expect("leader"),
        (key_of("e", a), "a".into())
    );

    // A second candidate waits.
    let pb_ = still_blocked(spawn_campaign(&ch, "e", b, "b"), "second campaign").await;
    nothing_observed(&mut obs).await;

    // The leader proclaims; observers and Leader see it.
    proclaim(&ch, &la, "a2").await.expect("proclaim");
    assert_eq!(observed(&mut obs).await, (key_of("e", a), "a2".into()));
    assert_eq!(
        leader(&ch, "e").await.expect("leader"),
        (key_of("e", a), "a2".into())
    );

    // A stale leader key cannot proclaim.
    let stale = epb::LeaderKey {
        rev: la.rev + 1000,
        ..la.clone()
    };
    let e = proclaim(&ch, &stale, "nope").await.expect_err("stale");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unknown, "election: not leader")
    );
    // Resigning with a stale key changes nothing (and is no error).
    resign(&ch, Some(stale)).await.expect("stale resign");
    assert_eq!(leader(&ch, "e").await.expect("leader").1, "a2");

    // Missing leader field.
    let e = resign(&ch, None).await.expect_err("no leader field");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unknown, "\"leader\" field must be provided")
    );
    let e = ElectionClient::new(ch.clone())
        .proclaim(epb::ProclaimRequest {
            leader: None,
            value: Bytes::new(),
        })
        .await
        .expect_err("no leader field");
    assert_eq!(e.message(), "\"leader\" field must be provided");

    // The leader resigns: the second candidate leads.
    resign(&ch, Some(la.clone())).await.expect("resign");
    let cb = finishes(pb_, "second campaign").await;
    let lb = cb.leader.expect("leader key");
    assert_eq!(lb.key, key_of("e", b).as_bytes());
    assert!(lb.rev > la.rev);
    assert_eq!(observed(&mut obs).await, (key_of("e", b), "b".into()));
    assert_eq!(
        leader(&ch, "e").await.expect("leader"),
        (key_of("e", b), "b".into())
    );

    // The old leader is not leader any more.
    let e = proclaim(&ch, &la, "late").await.expect_err("resigned");
    assert_eq!(e.message(), "election: not leader");

    // Campaigning again with the leader's lease and a new value proclaims it
    // and keeps the same leadership.
    let again = finishes(spawn_campaign(&ch, "e", b, "b2"), "re-campaign").await;
    assert_eq!(again.leader.expect("leader key").rev, lb.rev);
    assert_eq!(observed(&mut obs).await, (key_of("e", b), "b2".into()));

    // The leader's lease ends: no leader; the observer waits for the next.
    revoke(&ch, b).await;
    let e = leader(&ch, "e").await.expect_err("no leader");
    assert_eq!(e.message(), "election: no leader");
    nothing_observed(&mut obs).await;
    let c = grant(&ch, 60).await;
    finishes(spawn_campaign(&ch, "e", c, "c"), "third campaign").await;
    assert_eq!(observed(&mut obs).await, (key_of("e", c), "c".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_campaign_withdraws() {
    let srv = start("cancel");
    let ch = channel(&srv).await;
    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);
    finishes(spawn_campaign(&ch, "c", a, "a"), "campaign").await;
    let mut req = tonic::Request::new(campaign_req("c", b, "b"));
    req.set_timeout(Duration::from_millis(300));
    ElectionClient::new(ch.clone())
        .campaign(req)
        .await
        .expect_err("times out");
    let deadline = Instant::now() + GOES_THROUGH;
    while keys(&ch, "c/").await != vec![key_of("c", a)] {
        assert!(Instant::now() < deadline, "the candidate's key stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole snapshot stream: (messages, data without the checksum).
async fn snapshot(ch: &Channel) -> Vec<pb::SnapshotResponse> {
    let mut s = MaintenanceClient::new(ch.clone())
        .snapshot(pb::SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut msgs = Vec::new();
    while let Some(m) = s.message().await.expect("snapshot stream") {
        msgs.push(m);
    }
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_streams_the_state_with_its_checksum() {
    let srv = start("snap");
    let ch = channel(&srv).await;
    let big = "v".repeat(10_000);
    let mut rev = 0;
    for i in 0..20 {
        rev = put(&ch, &format!("key{i}"), &big).await;
    }
    let msgs = snapshot(&ch).await;
    assert!(msgs.len() >= 3, "several chunks and the checksum");
    let (sum, body) = msgs.split_last().expect("messages");
    let total: usize = body.iter().map(|m| m.blob.len()).sum();
    assert!(total > 200_000, "the values are in it: {total} bytes");
    let mut data = Vec::new();
    for m in body {
        assert!(!m.blob.is_empty() && m.blob.len() <= 32 * 1024);
        data.extend_from_slice(&m.blob);
        assert_eq!(m.remaining_bytes as usize, total - data.len());
        assert!(m.header.as_ref().expect("header").revision >= rev);
    }
    assert_eq!(body.last().expect("data").remaining_bytes, 0);
    assert_eq!(sum.remaining_bytes, 0);
    assert_eq!(sum.blob.len(), 32);
    assert_eq!(&sum.blob[..], &etcd_net::sha256::digest(&data)[..]);
    assert_eq!((data.len() + 32) % 512, 32, "what etcdctl checks");
    // The values are in there, as is.
    let needle = big.as_bytes();
    assert!(data.windows(needle.len()).any(|w| w == needle));
}

// ---------------------------------------------------------------- etcdctl

fn ctl(etcdctl: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(etcdctl);
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A running etcdctl whose stdout lines arrive on a channel.
struct Ctl {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Ctl {
    fn spawn(etcdctl: &Path, url: &str, args: &[&str]) -> Ctl {
        let mut child = ctl(etcdctl, url, args).spawn().expect("run etcdctl");
        let out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ctl {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    fn line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    fn terminate(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// Waits for the exit; (success, rest of stdout, stderr).
    fn finish(mut self, within: Duration) -> (bool, Vec<String>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("etcdctl did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = self.lines.iter().collect();
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status.success(), rest, err)
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn etcdctl_lock_elect_and_snapshot_save() {
    let Some(bin) = etcdctl() else { return };
    let srv = start("ctl");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ch = rt.block_on(channel(&srv));
    let url = srv.client.clone();
    let wait = Duration::from_secs(10);

    // A holder without a command prints its key (and empty value) and holds
    // the lock until signalled.
    let mut holder = Ctl::spawn(&bin, &url, &["lock", "mylock"]);
    let key = holder.line(wait).expect("holder prints its key");
    assert!(key.starts_with("mylock/"), "{key:?}");
    // A second locker with a command waits, then runs it with the lock.
    let second = Ctl::spawn(
        &bin,
        &url,
        &[
            "lock",
            "mylock",
            "--",
            "sh",
            "-c",
            "echo \"$ETCD_LOCK_KEY\"; echo locked",
        ],
    );
    assert_eq!(second.line(Duration::from_secs(1)), None, "must wait");
    holder.terminate();
    let second_key = second.line(wait).expect("second gets the lock");
    assert!(
        second_key.starts_with("mylock/") && second_key != key,
        "{second_key:?}"
    );
    assert_eq!(second.line(wait).as_deref(), Some("locked"));
    let (ok, _, err) = second.finish(wait);
    assert!(ok, "{err}");
    let (ok, _, err) = holder.finish(wait);
    assert!(ok, "{err}");
    assert!(
        rt.block_on(keys(&ch, "mylock/")).is_empty(),
        "both unlocked"
    );

    // A plain `lock name -- cmd` prints the command's output.
    let out = ctl(&bin, &url, &["lock", "mylock", "--", "echo", "locked"])
        .output()
        .expect("etcdctl lock");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "locked\n");

    // elect: the campaigner prints its key and value once elected; an
    // observer sees it, then the next leader.
    let mut first = Ctl::spawn(&bin, &url, &["elect", "myelection", "p1"]);
    let k1 = first.line(wait).expect("elected");
    assert!(k1.starts_with("myelection/"), "{k1:?}");
    assert_eq!(first.line(wait).as_deref(), Some("p1"));
    let mut observer = Ctl::spawn(&bin, &url, &["elect", "-l", "myelection"]);
    assert_eq!(observer.line(wait), Some(k1.clone()));
    assert_eq!(observer.line(wait).as_deref(), Some("p1"));
    let second = Ctl::spawn(&bin, &url, &["elect", "myelection", "p2"]);
    assert_eq!(second.line(Duration::from_secs(1)), None, "must wait");
    // Our Leader agrees with etcdctl's view.
    let (lk, lv) = rt.block_on(leader(&ch, "myelection")).expect("leader");
    assert_eq!((lk, lv.as_str()), (k1.clone(), "p1"));
    first.terminate();
    let k2 = second.line(wait).expect("second elected");
    assert!(k2.starts_with("myelection/") && k2 != k1, "{k2:?}");
    assert_eq!(second.line(wait).as_deref(), Some("p2"));
    assert_eq!(observer.line(wait), Some(k2.clone()));
    assert_eq!(observer.line(wait).as_deref(), Some("p2"));
    let (ok, _, err) = first.finish(wait);
    assert!(ok, "{err}");
    observer.terminate();
    let (ok, _, err) = observer.finish(wait);
    assert!(ok, "{err}");
    drop(second);

    // snapshot save.
    rt.block_on(put(&ch, "snapkey", "snapvalue"));
    let path = srv.dir.join("f.db");
    let out = ctl(
        &bin,
        &url,
        &["snapshot", "save", &path.display().to_string()],
    )
    .output()
    .expect("etcdctl snapshot save");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout.trim_end(),
        format!("Snapshot saved at {}", path.display())
    );
    let file = std::fs::read(&path).expect("saved file");
    let (data, sum) = file.split_at(file.len() - 32);
    assert_eq!(sum, &etcd_net::sha256::digest(data)[..]);
    assert!(data.windows(9).any(|w| w == b"snapvalue"));
    // Cross-check the checksum with the system's sha256sum, if any.
    if let Ok(o) = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(data)?;
            c.wait_with_output()
        })
    {
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        assert!(String::from_utf8_lossy(&o.stdout).starts_with(&hex));
    }
}
