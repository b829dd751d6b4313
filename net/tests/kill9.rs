//! SIGKILL under load: clients write continuously through our own tonic
//! clients and record what was acknowledged; the member (alone, or the
//! leader of three) is killed at random moments and restarted. After every
//! restart every acknowledged write must be readable, and at the end the
//! members' KV hashes agree. `KILL9_KILLS=N` changes the number of kills
//! (default 50 each) for a longer soak.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_net::pb::etcdserverpb::kv_client::KvClient;
use etcd_net::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use etcd_net::pb::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest, StatusRequest};
use support::*;
use tonic::transport::Channel;

const OURS: &str = env!("CARGO_BIN_EXE_etcd");

fn kills() -> usize {
    std::env::var("KILL9_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// A tiny deterministic generator for kill timings (no `rand` needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

async fn connect(url: &str) -> Option<Channel> {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .ok()
}

/// Writes `k/<writer>/<n>` = n to any endpoint that answers; records each
/// acknowledged key until `stop`.
async fn write_loop(
    writer: usize,
    urls: Vec<String>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0u64;
    let mut i = writer;
    let mut client: Option<KvClient<Channel>> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if client.is_none() {
            i += 1;
            client = connect(&urls[i % urls.len()]).await.map(KvClient::new);
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        n += 1;
        let key = format!("k/{writer}/{n:08}");
        let value = n.to_string();
        let put = PutRequest {
            key: key.clone().into(),
            value: value.clone().into(),
            ..Default::default()
        };
        match client.as_mut().expect("connected").put(put).await {
            Ok(_) => {
                acked.lock().expect("not poisoned").insert(key, value);
            }
            Err(_) => {
                // Unknown outcome (killed mid-request) or refused: not
                // acknowledged, so it may or may not be there.
                client = None;
            }
        }
    }
}

type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Four writers for one round; set the flag to stop them.
fn spawn_writers(
    round: usize,
    urls: &[String],
    acked: &Acked,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = (0..4)
        .map(|w| {
            tokio::spawn(write_loop(
                w + 10 * round,
                urls.to_vec(),
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    (stop, writers)
}

/// Every acknowledged key must be on `url` with its value.
async fn check_all(url: &str, acked: &BTreeMap<String, String>, serializable: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = async {
            // Every acknowledged write in one answer: it outgrows tonic's
            // default 4 MiB limit when the server is fast (etcdctl allows 2 GiB).
            let mut c = KvClient::new(connect(url).await?).max_decoding_message_size(1 << 30);
            let r = c
                .range(RangeRequest {
                    key: "k/".into(),
                    range_end: "k0".into(),
                    serializable,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            Some(r)
        }
        .await;
        if let Some(r) = res {
            let have: BTreeMap<String, String> = r
                .kvs
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).to_string(),
                        String::from_utf8_lossy(&kv.value).to_string(),
                    )
                })
                .collect();
            let lost: Vec<&String> = acked
                .iter()
                .filter(|(k, v)| have.get(*k) != Some(*v))
                .map(|(k, _)| k)
                .collect();
            if lost.is_empty() {
                return;
            }
            // A follower may still be catching up; the answer must come.
            assert!(
                Instant::now() < deadline,
                "{url}: {} acknowledged writes missing, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            );
        } else {
            assert!(Instant::now() < deadline, "{url} never answered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hash_of(url: &str) -> Option<(u32, i64)> {
    let mut m = MaintenanceClient::new(connect(url).await?);
    let r = m
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .ok()?
        .into_inner();
    Some((r.hash, r.header?.revision))
}

async fn leader_of(members: &[Proc]) -> Option<usize> {
    for (i, m) in members.iter().enumerate() {
        if m.child.is_none() {
            continue;
        }
        let Some(ch) = connect(&m.client).await else {
            continue;
        };
        if let Ok(s) = MaintenanceClient::new(ch).status(StatusRequest {}).await {
            let s = s.into_inner();
            if s.leader != 0 && s.leader == s.header.map(|h| h.member_id).unwrap_or(0) {
                return Some(i);
            }
        }
    }
    None
}

fn fast_flags() -> Vec<String> {
    // Short timeouts keep 50 elections quick.
    vec![
        "--heartbeat-interval=20".into(),
        "--election-timeout=200".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_killed_50_times_under_load_loses_nothing() {
    let mut m = single(Path::new(OURS), "kill9-single");
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut rng = Lcg(0x5eed1);
    let urls = vec![m.client.clone()];
    for round in 0..kills() {
        let (stop, writers) = spawn_writers(round, &urls, &acked);
        tokio::time::sleep(Duration::from_millis(150 + rng.next(350))).await;
        m.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        m.restart();
        let snapshot = acked.lock().expect("not poisoned").clone();
        check_all(&m.client, &snapshot, false).await;
    }
    let n = acked.lock().expect("not poisoned").len();
    assert!(n > 100 * kills() / 10, "too few writes acknowledged: {n}");
    eprintln!("{} kills, {n} acknowledged writes, none lost", kills());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_of_three_killed_50_times_under_load_loses_nothing() {
    let base = temp_dir("kill9-three");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| {
            let dir = base.join(format!("m{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let client = format!("http://127.0.0.1:{c}");
            let peer = format!("http://127.0.0.1:{p}");
            let mut args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", dir.join("data").display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={initial}"),
            ];
            args.extend(fast_flags());
            Proc::start(Path::new(OURS), &dir, client, peer, args)
        })
        .collect();
    let urls: Vec<String> = members.iter().map(|m| m.client.clone()).collect();
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut rng = Lcg(0x5eed3);
    let mut elections = Vec::new();
    for round in 0..kills() {
        // Wait for a leader, write for a while, kill it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let leader = loop {
            if let Some(l) = leader_of(&members).await {
                break l;
            }
            assert!(Instant::now() < deadline, "round {round}: no leader");
            tokio::time::sleep(Duration::from_millis(30)).await;
        };
        let (stop, writers) = spawn_writers(round, &urls, &acked);
        tokio::time::sleep(Duration::from_millis(100 + rng.next(300))).await;
        members[leader].kill();
        let killed = Instant::now();
        loop {
            if leader_of(&members).await.is_some() {
                elections.push(killed.elapsed());
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(20), "no new leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        members[leader].restart();
    }
    // Everyone has everything, and the same hash at the same revision.
    let acked = acked.lock().expect("not poisoned").clone();
    for m in &members {
        check_all(&m.client, &acked, true).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut hs = Vec::new();
        for m in &members {
            hs.push(hash_of(&m.client).await);
        }
        if hs.iter().all(|h| h.is_some() && *h == hs[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "hashes differ: {hs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    elections.sort();
    eprintln!(
        "{} leader kills, {} acknowledged writes, none lost; new leader after p50 {:?}, max {:?}",
        kills(),
        acked.len(),
        elections[elections.len() / 2],
        elections.last()
    );
}
