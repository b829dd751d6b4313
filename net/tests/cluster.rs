//! Three members from config files shaped like the seed's (`et_m1.yml` …),
//! on 127.0.0.1: the leader is killed with SIGKILL while a client writes,
//! a new one is elected, nothing acknowledged is lost, and the old leader
//! catches up when it comes back. Uses Debian's etcdctl as the client.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

const OURS: &str = env!("CARGO_BIN_EXE_etcd");

struct Cluster {
    members: Vec<Proc>,
}

impl Cluster {
    fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Writes the seed's three config files (ports of our choosing) and starts
/// one member on each.
fn start_cluster(tag: &str) -> Cluster {
    start_cluster_with(tag, "")
}

/// [`start_cluster`], with `extra` appended to every config file.
fn start_cluster_with(tag: &str, extra: &str) -> Cluster {
    let base = temp_dir(tag);
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("etcd-{}=http://127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let n = i + 1;
        let dir = base.join(format!("m{n}"));
        std::fs::create_dir_all(&dir).expect("member dir");
        // The seed creates the data directories by hand with mode 700.
        let data = dir.join("data");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&data)
            .expect("data dir");
        let yml = dir.join(format!("et_m{n}.yml"));
        std::fs::write(
            &yml,
            format!(
                "name: etcd-{n}\n\
                 data-dir: {data}\n\
                 log-level: debug\n\
                 listen-peer-urls: http://127.0.0.1:{p}\n\
                 listen-client-urls: 'http://127.0.0.1:{c}'\n\
                 initial-advertise-peer-urls: http://127.0.0.1:{p}\n\
                 advertise-client-urls: http://127.0.0.1:{c}\n\
                 initial-cluster-state: new\n\
                 initial-cluster-token: etcd-cluster\n\
                 initial-cluster: {initial}\n\
                 enable-v2: true\n\
                 {extra}",
                data = data.display()
            ),
        )
        .expect("config file");
        // The third member runs the multi-threaded I/O runtime that
        // machines with more than 2 cores get; the others the one thread
        // this machine gets.
        let env = if n == 3 {
            vec![("ETCDRS_IO_WORKERS".to_string(), "2".to_string())]
        } else {
            Vec::new()
        };
        members.push(Proc::start_env(
            Path::new(OURS),
            &dir,
            format!("http://127.0.0.1:{c}"),
            format!("http://127.0.0.1:{p}"),
            vec![format!("--config-file={}", yml.display())],
            env,
        ));
    }
    Cluster { members }
}

/// The member that says it leads, by `endpoint status`.
fn leader(etcdctl: &Path, c: &Cluster) -> Option<usize> {
    for (i, m) in c.members.iter().enumerate() {
        if m.child.is_none() {
            continue;
        }
        let (out, ok) = ctl(etcdctl, &m.client, &["endpoint", "status"], None);
        if ok && out.split(", ").nth(4) == Some("true") {
            return Some(i);
        }
    }
    None
}

fn wait_leader(etcdctl: &Path, c: &Cluster, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(l) = leader(etcdctl, c) {
            return l;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = c.members.iter().map(|m| m.log_text()).collect();
    panic!(
        "no leader within {within:?}; logs:\n{}",
        logs.join("\n----\n")
    );
}

/// A client writing `w/<n>` continuously through every endpoint; returns
/// the keys it was told are written.
fn writer(
    etcdctl: PathBuf,
    endpoints: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("w/{n:06}");
            let (out, ok) = ctl(&etcdctl, &endpoints, &["put", &key, "v"], None);
            if ok && out.trim() == "OK" {
                acked.push(key);
            }
        }
        acked
    })
}

/// Waits until all three members report the same KV hash.
fn wait_hashes_agree(etcdctl: &Path, endpoints: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (out, ok) = ctl(
            etcdctl,
            endpoints,
            &["endpoint", "hashkv", "--cluster"],
            None,
        );
        let hashes: BTreeSet<&str> = out.lines().filter_map(|l| l.split(", ").nth(1)).collect();
        if ok && out.lines().count() == 3 && hashes.len() == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "hashes never agreed: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn keys_on(etcdctl: &Path, endpoint: &str) -> BTreeSet<String> {
    let (out, ok) = ctl(
        etcdctl,
        endpoint,
        &["get", "w/", "--prefix", "--keys-only", "--consistency=s"],
        None,
    );
    assert!(ok, "{out}");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_killed_leader_is_replaced_and_catches_up_without_losing_writes() {
    let Some(etcdctl) = etcdctl() else { return };
    let mut c = start_cluster("cluster");
    let eps = c.endpoints();
    let first = wait_leader(&etcdctl, &c, Duration::from_secs(20));
    for m in &c.members {
        wait_ready(&etcdctl, &m.client, m);
    }

    // Writes through one member are read through another.
    let (out, ok) = ctl(
        &etcdctl,
        &c.members[1].client,
        &["put", "test", "1111"],
        None,
    );
    assert!(ok, "{out}");
    let (out, _) = ctl(&etcdctl, &c.members[2].client, &["get", "test"], None);
    assert_eq!(out, "test\n1111\n");
    let (out, ok) = ctl(&etcdctl, &eps, &["member", "list"], None);
    assert!(ok && out.lines().count() == 3, "{out}");
    for n in 1..=3 {
        assert!(out.contains(&format!(", started, etcd-{n}, ")), "{out}");
    }

    // Kill the leader under load.
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(etcdctl.clone(), eps.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(700));
    c.members[first].kill();
    let killed_at = Instant::now();
    let second = wait_leader(&etcdctl, &c, Duration::from_secs(15));
    assert_ne!(second, first);
    let elected_in = killed_at.elapsed();
    std::thread::sleep(Duration::from_millis(700));
    c.members[first].restart();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let acked = w.join().expect("writer");
    assert!(acked.len() > 5, "the client kept writing: {}", acked.len());

    // Every member, the restarted one too, ends with every acknowledged key
    // and the same KV hash.
    wait_ready(&etcdctl, &c.members[first].client, &c.members[first]);
    wait_hashes_agree(&etcdctl, &eps, Duration::from_secs(15));
    for m in &c.members {
        let have = keys_on(&etcdctl, &m.client);
        let lost: Vec<&String> = acked.iter().filter(|k| !have.contains(*k)).collect();
        assert!(
            lost.is_empty(),
            "{} lost acknowledged keys {lost:?}",
            m.client
        );
    }
    eprintln!(
        "{} writes acknowledged; a new leader {elected_in:?} after the kill",
        acked.len()
    );

    // Leadership moves on request.
    let now = wait_leader(&etcdctl, &c, Duration::from_secs(5));
    let target = (now + 1) % 3;
    let (status, _) = ctl(
        &etcdctl,
        &c.members[target].client,
        &["endpoint", "status"],
        None,
    );
    let target_id = status.split(", ").nth(1).expect("id").to_string();
    let (out, ok) = ctl(&etcdctl, &eps, &["move-leader", &target_id], None);
    assert!(ok && out.contains("Leadership transferred"), "{out}");
    assert_eq!(wait_leader(&etcdctl, &c, Duration::from_secs(5)), target);

    // A clean stop of all three.
    for m in &mut c.members {
        let s = m
            .terminate(Duration::from_secs(5))
            .expect("exits on SIGTERM");
        assert!(s.success(), "{s:?}");
    }
}

/// A member that missed more entries than the leader keeps for catching up
/// (5,000, as etcd) gets a snapshot, sent in parts (it is several MB), and
/// ends with the same data.
#[test]
fn a_member_far_behind_catches_up_from_a_snapshot_sent_in_parts() {
    use etcd_net::pb::etcdserverpb::{PutRequest, kv_client::KvClient};
    let Some(etcdctl) = etcdctl() else { return };
    let mut c = start_cluster_with("cluster-snap", "snapshot-count: 500\n");
    let leader = wait_leader(&etcdctl, &c, Duration::from_secs(20));
    for m in &c.members {
        wait_ready(&etcdctl, &m.client, m);
    }
    let behind = (leader + 1) % 3;
    c.members[behind].kill();

    // 6,000 puts one after another (one log entry each) of 1 KiB values:
    // the leader snapshots every 500 entries and keeps 5,000 behind its
    // latest snapshot, so the stopped member's next entry is gone.
    const KEYS: usize = 6_000;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = c.members[leader].client.clone();
    rt.block_on(async {
        let ch = connect_ready(&url, || c.members[leader].log_text()).await;
        let mut kv = KvClient::new(ch);
        for i in 0..KEYS {
            kv.put(PutRequest {
                key: format!("s/{i:05}").into_bytes().into(),
                value: vec![b'a' + (i % 26) as u8; 1024].into(),
                ..Default::default()
            })
            .await
            .expect("put");
        }
    });

    c.members[behind].restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.members[behind]
        .log_text()
        .contains("received database snapshot")
    {
        assert!(
            Instant::now() < deadline,
            "no snapshot received; its log:\n{}\nthe leader's:\n{}",
            c.members[behind].log_text(),
            c.members[leader].log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = c.members[leader].log_text();
    let size: u64 = sent
        .lines()
        .filter(|l| l.contains("sending database snapshot"))
        .filter_map(|l| l.split("\"snapshot-size-bytes\":").nth(1))
        .filter_map(|v| {
            let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .expect("the leader logged the snapshot it sent");
    assert!(
        size > 3 * etcd_net::server::peer::PART_BYTES as u64,
        "the snapshot ({size} bytes) is several parts"
    );

    wait_ready(&etcdctl, &c.members[behind].client, &c.members[behind]);
    let eps = c.endpoints();
    wait_hashes_agree(&etcdctl, &eps, Duration::from_secs(20));
    let (out, ok) = ctl(
        &etcdctl,
        &c.members[behind].client,
        &[
            "get",
            "s/",
            "--prefix",
            "--limit=1",
            "--consistency=s",
            "-w",
            "json",
        ],
        None,
    );
    assert!(ok && out.contains(&format!("\"count\":{KEYS}")), "{out}");
}
