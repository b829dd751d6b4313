//! Shared by the server's integration tests: members as real processes,
//! free ports, and Debian's etcd tools (etcdctl 3.4, etcd 3.4.23).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "etcd-rs-{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_nonce()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

fn rand_nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Debian's etcdctl, or `None` (then the caller skips). Under CI the test
/// command installs it, so there a missing etcdctl is a failure.
pub fn etcdctl() -> Option<PathBuf> {
    let found = which("etcdctl");
    if found.is_none() {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "etcdctl is missing under CI: ./test.sh installs Debian's etcd-client"
        );
        eprintln!("skipping: Debian's etcdctl is not installed (./test.sh installs etcd-client)");
    }
    found
}

/// Debian's etcd 3.4 server at /usr/bin/etcd, or `None` (then skip).
pub fn reference_etcd() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/etcd");
    let ok = Command::new(&p)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("etcd Version: 3.4"));
    if !ok {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "Debian's etcd 3.4 is missing under CI: ./test.sh installs etcd-server"
        );
        eprintln!("skipping: Debian's etcd 3.4 is not installed (./test.sh installs etcd-server)");
        return None;
    }
    Some(p)
}

/// A member process; killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Option<Child>,
    pub client: String,
    pub peer: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Proc {
    /// Starts `bin` with `args` in `dir`, output to `dir/log.N`.
    pub fn start(bin: &Path, dir: &Path, client: String, peer: String, args: Vec<String>) -> Proc {
        Proc::start_env(bin, dir, client, peer, args, Vec::new())
    }

    /// [`Proc::start`], with environment variables set for the process.
    pub fn start_env(
        bin: &Path,
        dir: &Path,
        client: String,
        peer: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Proc {
        let mut p = Proc {
            child: None,
            client,
            peer,
            dir: dir.to_path_buf(),
            log: dir.join("log"),
            bin: bin.to_path_buf(),
            args,
            env,
        };
        p.restart();
        p
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let n = std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0);
        self.log = self.dir.join(format!("log.{n}"));
        let out = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start member");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status (None if it did not exit in `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY-free: `kill` the command, no libc needed.
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // Data directories hold preallocated 64 MB segments: remove them,
        // unless the test failed (then the logs there explain why).
        if std::thread::panicking() {
            eprintln!("kept {} for the logs", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Our `etcd` as a single member on free ports.
pub fn single(bin: &Path, tag: &str) -> Proc {
    single_with(bin, tag, |_| Vec::new())
}

/// [`single`], with more flags, made from the member's directory.
pub fn single_with(bin: &Path, tag: &str, extra: impl FnOnce(&Path) -> Vec<String>) -> Proc {
    let dir = temp_dir(tag);
    let (c, p) = (free_port(), free_port());
    let client = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let mut args = vec![
        format!("--data-dir={}", dir.join("data").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
    ];
    args.extend(extra(&dir));
    Proc::start(bin, &dir, client, peer, args)
}

/// Runs etcdctl (API v3) against `endpoints`; returns (stdout+stderr, success).
pub fn ctl(etcdctl: &Path, endpoints: &str, args: &[&str], stdin: Option<&str>) -> (String, bool) {
    use std::io::Write;
    let mut cmd = Command::new(etcdctl);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run etcdctl");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("etcdctl output");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (text, out.status.success())
}

/// Runs etcdctl for `secs` and stops it (for `watch`); returns its output.
pub fn ctl_for(etcdctl: &Path, endpoints: &str, args: &[&str], d: Duration) -> String {
    let mut child = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    std::thread::sleep(d);
    let _ = child.kill();
    let out = child.wait_with_output().expect("etcdctl output");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// Waits until `endpoint` answers a linearizable read (so it has a leader).
pub fn wait_ready(etcdctl: &Path, endpoint: &str, p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (_, ok) = ctl(etcdctl, endpoint, &["get", "x"], None);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{endpoint} not ready; log:\n{}", p.log_text());
}

/// A gRPC channel to `url` once it answers a linearizable Range (so it has
/// a leader and serves); fails the test after 20 s, showing `log()`.
pub async fn connect_ready(url: &str, log: impl Fn() -> String) -> tonic::transport::Channel {
    use etcd_net::pb::etcdserverpb::{RangeRequest, kv_client::KvClient};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ch = tonic::transport::Endpoint::from_shared(url.to_string())
            .expect("url")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(10))
            .connect()
            .await;
        if let Ok(ch) = ch {
            let ready = KvClient::new(ch.clone())
                .range(RangeRequest {
                    key: bytes::Bytes::from_static(b"ready?"),
                    ..Default::default()
                })
                .await;
            if ready.is_ok() {
                return ch;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} never became ready:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `key` = `value` through `ch`; returns the revision it got.
pub async fn put_revision(ch: &tonic::transport::Channel, key: &str, value: &str) -> i64 {
    use etcd_net::pb::etcdserverpb::{PutRequest, kv_client::KvClient};
    KvClient::new(ch.clone())
        .put(PutRequest {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            value: bytes::Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("header")
        .revision
}
