//! `benchmark`: a low-level load generator for etcd's v3 gRPC API, modeled on
//! etcd's `tools/benchmark` (same subcommands, flag names, defaults and
//! report layout). It talks to the server through the generated tonic
//! clients of `etcd-net`, not through a client library.
//!
//! Besides etcd's figures it reports the load generator's own CPU time per
//! request (`getrusage(RUSAGE_SELF)`, user + system, around the measured
//! phase): on a small machine the client often bounds the throughput, and
//! this says by how much. `--json` adds one JSON object with every figure
//! as the last line of standard output.
//!
//! Differences from etcd's tool, all deliberate:
//! - the flags are global (they may stand before or after the subcommand);
//! - `--key-size=0` with `--key-space-size=1` makes the key exactly
//!   `--prefix` (handy to write the key a `range` run reads);
//! - `watch` and `watch-latency` time each event from the send of the put
//!   that caused it (matched by revision) to its arrival;
//! - `lease-keepalive` keeps one `LeaseKeepAlive` stream per client
//!   (`--once` opens one per request, as etcd's `KeepAliveOnce` does);
//! - every request has a timeout (`--request-timeout`): a server that stops
//!   answering shows up as counted errors, not as a hung benchmark;
//! - the exit status is 2 when any request failed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use etcd_net::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest, WatchCreateRequest,
    WatchRequest, WatchResponse, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, request_op, watch_client::WatchClient, watch_request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codec::Streaming;
use tonic::transport::{Channel, Endpoint};

// ------------------------------------------------------------------ flags

#[derive(Parser)]
#[command(
    name = "benchmark",
    about = "A low-level benchmark tool for etcd3 (modeled on etcd's tools/benchmark)",
    long_about = "A low-level benchmark tool for etcd3. It uses gRPC clients directly \
                  and does not depend on an etcd client library.\n\nIt also reports its \
                  own CPU time per request, since the load generator often bounds the \
                  throughput on small machines."
)]
struct Cli {
    #[command(flatten)]
    g: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Debug)]
struct Global {
    /// gRPC endpoints, comma separated (`http://` optional)
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// Total number of gRPC connections (round-robin over the endpoints)
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Total number of concurrent clients (sharing the connections)
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// Total number of requests (put, range, txn-put, lease-keepalive)
    #[arg(long, global = true, default_value_t = 10000)]
    total: u64,
    /// Key size of a put request (0: the key is exactly --prefix)
    #[arg(long, global = true, default_value_t = 8)]
    key_size: usize,
    /// Value size of a put request
    #[arg(long, global = true, default_value_t = 8)]
    val_size: usize,
    /// Maximum possible keys
    #[arg(long, global = true, default_value_t = 1)]
    key_space_size: u64,
    /// Use sequential keys
    #[arg(long, global = true)]
    sequential_keys: bool,
    /// Prefix for keys
    #[arg(long, global = true, default_value = "")]
    prefix: String,
    /// Maximum requests per second (0 is no limit)
    #[arg(long, global = true, default_value_t = 0.0)]
    rate: f64,
    /// Also print every figure as one JSON object, on the last line
    #[arg(long, global = true)]
    json: bool,
    /// Use full floating point precision
    #[arg(long, global = true)]
    precise: bool,
    /// Print the response time histogram
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set)]
    histogram: bool,
    /// Threads of the client runtime (0: one per core; 1: a single thread)
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// Dial timeout, seconds
    #[arg(long, global = true, default_value_t = 5.0)]
    dial_timeout: f64,
    /// Timeout of one request, seconds (0: none); a timed-out request counts as an error
    #[arg(long, global = true, default_value_t = 30.0)]
    request_timeout: f64,
    /// Connect only to the leader (found through Maintenance.Status)
    #[arg(long, global = true)]
    target_leader: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Benchmark put
    Put,
    /// Benchmark range
    Range {
        key: String,
        end: Option<String>,
        /// Linearizable(l) or Serializable(s)
        #[arg(long, default_value = "l")]
        consistency: String,
        /// Maximum number of results to return from range request (0 is no limit)
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Only returns the count of keys
        #[arg(long)]
        count_only: bool,
        /// Only returns the keys
        #[arg(long)]
        keys_only: bool,
    },
    /// Benchmark txn-put
    TxnPut {
        /// Number of puts per txn
        #[arg(long, default_value_t = 1)]
        txn_ops: u64,
    },
    /// Benchmark watch: watchers are created, then puts change the watched
    /// keys and every event is timed from its put's send
    Watch {
        /// Total watch streams
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Total watchers per stream
        #[arg(long, default_value_t = 100)]
        watch_per_stream: usize,
        /// Total number of keys to be watched
        #[arg(long, default_value_t = 1)]
        watched_key_total: usize,
        /// Number of keys to put per second (0 is no limit)
        #[arg(long, default_value_t = 0.0)]
        put_rate: f64,
        /// Number of put requests
        #[arg(long, default_value_t = 1000)]
        put_total: u64,
    },
    /// Benchmark watch latency: one key, puts at a steady rate, the time
    /// between each put and each watcher's event
    WatchLatency {
        /// Total watch streams
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Total watchers per stream
        #[arg(long, default_value_t = 10)]
        watchers_per_stream: usize,
        /// PrevKV enabled on watch requests
        #[arg(long)]
        prevkv: bool,
        /// Total number of put requests
        #[arg(long, default_value_t = 1000)]
        put_total: u64,
        /// Number of keys to put per second
        #[arg(long, default_value_t = 100.0)]
        put_rate: f64,
    },
    /// Benchmark lease keepalive
    LeaseKeepalive {
        /// Open a new LeaseKeepAlive stream for every request (etcd's KeepAliveOnce)
        #[arg(long)]
        once: bool,
    },
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("benchmark: {msg}");
    std::process::exit(1);
}

// ------------------------------------------------------------- main

fn main() {
    let cli = Cli::parse();
    let g = cli.g.clone();
    if g.conns == 0 || g.clients == 0 {
        fail("--conns and --clients must be positive");
    }
    if g.key_space_size == 0 {
        fail(format!(
            "expected positive --key-space-size, got ({})",
            g.key_space_size
        ));
    }
    if g.key_size == 0 && g.key_space_size != 1 {
        fail("--key-size=0 (the key is --prefix) needs --key-space-size=1");
    }
    if g.key_size > 0 && varint_len(g.key_space_size - 1) > g.key_size {
        fail(format!(
            "--key-size={} cannot hold {} distinct keys (varint of {} needs {} bytes)",
            g.key_size,
            g.key_space_size,
            g.key_space_size - 1,
            varint_len(g.key_space_size - 1)
        ));
    }
    let rt = if g.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if g.threads > 1 {
            b.worker_threads(g.threads);
        }
        b.enable_all().build()
    }
    .unwrap_or_else(|e| fail(format!("tokio runtime: {e}")));
    let failed = rt.block_on(async move {
        match cli.cmd {
            Cmd::Put => put(&g).await,
            Cmd::Range {
                key,
                end,
                consistency,
                limit,
                count_only,
                keys_only,
            } => {
                let serializable = match consistency.as_str() {
                    "l" => {
                        println!("bench with linearizable range");
                        false
                    }
                    "s" => {
                        println!("bench with serializable range");
                        true
                    }
                    other => fail(format!("--consistency must be l or s, not {other:?}")),
                };
                if count_only && keys_only {
                    fail("`--keys-only` and `--count-only` cannot be set at the same time");
                }
                let req = RangeRequest {
                    key: Bytes::from(key.into_bytes()),
                    range_end: end.map(|e| Bytes::from(e.into_bytes())).unwrap_or_default(),
                    limit,
                    serializable,
                    keys_only,
                    count_only,
                    ..Default::default()
                };
                range(&g, req).await
            }
            Cmd::TxnPut { txn_ops } => {
                if txn_ops == 0 || txn_ops > g.key_space_size {
                    fail(format!(
                        "expected --txn-ops between 1 and --key-space-size, got txn-ops({txn_ops}) key-space-size({})",
                        g.key_space_size
                    ));
                }
                txn_put(&g, txn_ops).await
            }
            Cmd::Watch {
                streams,
                watch_per_stream,
                watched_key_total,
                put_rate,
                put_total,
            } => {
                if streams == 0 || watch_per_stream == 0 || watched_key_total == 0 {
                    fail("--streams, --watch-per-stream and --watched-key-total must be positive");
                }
                watch(
                    &g,
                    streams,
                    watch_per_stream,
                    watched_key_total,
                    put_rate,
                    put_total,
                )
                .await
            }
            Cmd::WatchLatency {
                streams,
                watchers_per_stream,
                prevkv,
                put_total,
                put_rate,
            } => {
                if streams == 0 || watchers_per_stream == 0 {
                    fail("--streams and --watchers-per-stream must be positive");
                }
                watch_latency(
                    &g,
                    streams,
                    watchers_per_stream,
                    prevkv,
                    put_total,
                    put_rate,
                )
                .await
            }
            Cmd::LeaseKeepalive { once } => lease_keepalive(&g, once).await,
        }
    });
    if failed {
        std::process::exit(2);
    }
}

// ------------------------------------------------------------- connections

fn url_of(ep: &str) -> String {
    let ep = ep.trim();
    if ep.contains("://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    }
}

async fn connect(g: &Global, url: &str) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_string())
        .unwrap_or_else(|e| fail(format!("bad endpoint {url:?}: {e}")))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs_f64(g.dial_timeout));
    match tokio::time::timeout(Duration::from_secs_f64(g.dial_timeout), endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => fail(format!("dial error: {url}: {e}")),
        Err(_) => fail(format!("dial error: {url}: timed out")),
    }
}

/// The endpoints to load: all of them, or with `--target-leader` the one
/// whose member id is the leader every member reports.
async fn targets(g: &Global) -> Vec<String> {
    let urls: Vec<String> = g.endpoints.iter().map(|e| url_of(e)).collect();
    if urls.is_empty() {
        fail("no --endpoints");
    }
    if !g.target_leader {
        return urls;
    }
    for url in &urls {
        let mut m = MaintenanceClient::new(connect(g, url).await);
        match m.status(StatusRequest {}).await {
            Ok(r) => {
                let r = r.into_inner();
                let me = r.header.map(|h| h.member_id).unwrap_or(0);
                if r.leader != 0 && r.leader == me {
                    return vec![url.clone()];
                }
            }
            Err(s) => eprintln!("benchmark: status of {url}: {}", status_text(&s)),
        }
    }
    fail("--target-leader: no endpoint is the leader")
}

async fn dial(g: &Global) -> Vec<Channel> {
    let urls = targets(g).await;
    let mut conns = Vec::with_capacity(g.conns);
    for i in 0..g.conns {
        conns.push(connect(g, &urls[i % urls.len()]).await);
    }
    conns
}

/// `clients` channels over the connections, client i on connection i % conns.
async fn clients(g: &Global) -> Vec<Channel> {
    let conns = dial(g).await;
    (0..g.clients)
        .map(|i| conns[i % conns.len()].clone())
        .collect()
}

fn status_text(s: &Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

// ------------------------------------------------------------- keys

/// Go's `binary.PutVarint`: zig-zag, then base-128 little-endian.
fn put_varint(buf: &mut [u8; 10], n: i64) -> usize {
    let mut ux = ((n << 1) ^ (n >> 63)) as u64;
    let mut i = 0;
    while ux >= 0x80 {
        buf[i] = (ux as u8) | 0x80;
        ux >>= 7;
        i += 1;
    }
    buf[i] = ux as u8;
    i + 1
}

fn varint_len(n: u64) -> usize {
    let mut buf = [0u8; 10];
    put_varint(&mut buf, n as i64)
}

/// xorshift64*: a cheap per-client random stream.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn seeded(i: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut s = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t;
        if s == 0 {
            s = 1;
        }
        Rng(s)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// etcd's keys: `prefix` + `binary.PutVarint(n)` in `key-size` bytes.
#[derive(Clone)]
struct Keys {
    prefix: Vec<u8>,
    size: usize,
    space: u64,
    sequential: bool,
    rng: Rng,
}

impl Keys {
    fn new(g: &Global, worker: u64) -> Keys {
        Keys {
            prefix: g.prefix.as_bytes().to_vec(),
            size: g.key_size,
            space: g.key_space_size,
            sequential: g.sequential_keys,
            rng: Rng::seeded(worker),
        }
    }
    /// The key of request `i`.
    fn next(&mut self, i: u64) -> Bytes {
        let n = if self.sequential {
            i % self.space
        } else {
            self.rng.next() % self.space
        };
        self.of(n)
    }
    fn of(&self, n: u64) -> Bytes {
        let mut k = Vec::with_capacity(self.prefix.len() + self.size);
        k.extend_from_slice(&self.prefix);
        if self.size > 0 {
            let mut buf = [0u8; 10];
            let len = put_varint(&mut buf, n as i64);
            k.extend_from_slice(&buf[..len.min(self.size)]);
            k.resize(self.prefix.len() + self.size, 0);
        }
        Bytes::from(k)
    }
}

// ------------------------------------------------------------- CPU

#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    sys: f64,
}

fn cpu_now() -> Cpu {
    // SAFETY: getrusage fills the zeroed struct we own; RUSAGE_SELF covers
    // every thread of this process.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Cpu::default();
        }
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu {
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
    }
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            sys: self.sys - before.sys,
        }
    }
}

// ------------------------------------------------------------- report

/// The results of one measured phase, printed the way etcd's `pkg/report` does.
struct Report {
    name: String,
    /// Latencies of the successful requests, seconds, sorted by `finish`.
    lats: Vec<f64>,
    errors: BTreeMap<String, u64>,
    total: Duration,
}

const PCTLS: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

struct Stats {
    ok: u64,
    errors: u64,
    total_s: f64,
    rps: f64,
    average: f64,
    stddev: f64,
    fastest: f64,
    slowest: f64,
    pct: [f64; 8],
}

impl Report {
    fn new(name: &str) -> Report {
        Report {
            name: name.to_string(),
            lats: Vec::new(),
            errors: BTreeMap::new(),
            total: Duration::ZERO,
        }
    }

    fn error(&mut self, e: String, n: u64) {
        *self.errors.entry(e).or_default() += n;
    }

    fn finish(&mut self, total: Duration) {
        self.total = total;
        self.lats.sort_by(|a, b| a.total_cmp(b));
    }

    fn stats(&self) -> Stats {
        let n = self.lats.len();
        let sum: f64 = self.lats.iter().sum();
        let average = if n > 0 { sum / n as f64 } else { 0.0 };
        let var = if n > 0 {
            self.lats
                .iter()
                .map(|l| (l - average) * (l - average))
                .sum::<f64>()
                / n as f64
        } else {
            0.0
        };
        // etcd's percentiles: the first latency at or past the rank.
        let mut pct = [0.0; 8];
        let mut j = 0;
        for (i, l) in self.lats.iter().enumerate() {
            if j >= PCTLS.len() {
                break;
            }
            let current = i as f64 * 100.0 / n as f64;
            while j < PCTLS.len() && current >= PCTLS[j] {
                pct[j] = *l;
                j += 1;
            }
        }
        // Too few samples to reach the top ranks (etcd leaves them out):
        // they are the slowest.
        while n > 0 && j < PCTLS.len() {
            pct[j] = self.lats[n - 1];
            j += 1;
        }
        let total_s = self.total.as_secs_f64();
        Stats {
            ok: n as u64,
            errors: self.errors.values().sum(),
            total_s,
            rps: if total_s > 0.0 {
                n as f64 / total_s
            } else {
                0.0
            },
            average,
            stddev: var.sqrt(),
            fastest: self.lats.first().copied().unwrap_or(0.0),
            slowest: self.lats.last().copied().unwrap_or(0.0),
            pct,
        }
    }

    fn print(&self, g: &Global) {
        let f = |x: f64| {
            if g.precise {
                format!("{x}")
            } else {
                format!("{x:.4}")
            }
        };
        let s = self.stats();
        let mut out = String::new();
        if s.ok > 0 {
            out += "\nSummary:\n";
            out += &format!("  Total:\t{} secs.\n", f(s.total_s));
            out += &format!("  Slowest:\t{} secs.\n", f(s.slowest));
            out += &format!("  Fastest:\t{} secs.\n", f(s.fastest));
            out += &format!("  Average:\t{} secs.\n", f(s.average));
            out += &format!("  Stddev:\t{} secs.\n", f(s.stddev));
            out += &format!("  Requests/sec:\t{}\n", f(s.rps));
            if g.histogram {
                out += &self.histogram(&f, &s);
            }
            out += "\nLatency distribution:\n";
            for (p, v) in PCTLS.iter().zip(s.pct.iter()) {
                if *v > 0.0 {
                    out += &format!("  {p}% in {} secs.\n", f(*v));
                }
            }
            out += &format!("  max in {} secs.\n", f(s.slowest));
        }
        out += &format!(
            "\nRequests: {} succeeded, {} failed ({}).\n",
            s.ok, s.errors, self.name
        );
        if !self.errors.is_empty() {
            out += "\nError distribution:\n";
            for (e, n) in &self.errors {
                out += &format!("  [{n}]\t{e}\n");
            }
        }
        print!("{out}");
    }

    fn histogram(&self, f: &dyn Fn(f64) -> String, s: &Stats) -> String {
        const BC: usize = 10;
        let mut buckets = [0.0f64; BC + 1];
        let mut counts = [0usize; BC + 1];
        let bs = (s.slowest - s.fastest) / BC as f64;
        for (i, b) in buckets.iter_mut().enumerate().take(BC) {
            *b = s.fastest + bs * i as f64;
        }
        buckets[BC] = s.slowest;
        let mut bi = 0;
        let mut i = 0;
        while i < self.lats.len() {
            if self.lats[i] <= buckets[bi] || bi == BC {
                counts[bi] += 1;
                i += 1;
            } else {
                bi += 1;
            }
        }
        let max = counts.iter().copied().max().unwrap_or(0);
        let mut out = String::from("\nResponse time histogram:\n");
        for (b, c) in buckets.iter().zip(counts.iter()) {
            let bar = (c * 40).checked_div(max).unwrap_or(0);
            out += &format!("  {} [{c}]\t|{}\n", f(*b), "∎".repeat(bar));
        }
        out
    }

    /// The figures as JSON members (no braces), times in milliseconds.
    fn json_fields(&self) -> String {
        let s = self.stats();
        let ms = |x: f64| format!("{:.4}", x * 1e3);
        let mut out = format!(
            "\"ok\":{},\"errors\":{},\"total_s\":{:.4},\"rps\":{:.1},\"avg_ms\":{},\"stddev_ms\":{},\"fastest_ms\":{},\"slowest_ms\":{}",
            s.ok,
            s.errors,
            s.total_s,
            s.rps,
            ms(s.average),
            ms(s.stddev),
            ms(s.fastest),
            ms(s.slowest)
        );
        for (p, v) in PCTLS.iter().zip(s.pct.iter()) {
            out += &format!(",\"p{}_ms\":{}", p.to_string().replace('.', "_"), ms(*v));
        }
        out += &format!(",\"max_ms\":{}", ms(s.slowest));
        out += ",\"error_dist\":{";
        for (i, (e, n)) in self.errors.iter().enumerate() {
            if i > 0 {
                out += ",";
            }
            out += &format!("{}:{n}", json_str(e));
        }
        out += "}";
        out
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prints the client's CPU and, with `--json`, the JSON line; returns whether
/// any request failed.
fn conclude(g: &Global, bench: &str, main: &Report, extra: &[&Report], cpu: Cpu) -> bool {
    let s = main.stats();
    let reqs = s.ok + s.errors;
    let per_req_us = if reqs > 0 {
        (cpu.user + cpu.sys) / reqs as f64 * 1e6
    } else {
        0.0
    };
    println!(
        "\nClient CPU ({} threads):\n  user {:.3} s, sys {:.3} s, {:.1} us per request ({} requests).",
        if g.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            g.threads
        },
        cpu.user,
        cpu.sys,
        per_req_us,
        reqs
    );
    let mut failed = s.errors > 0;
    for r in extra {
        failed |= !r.errors.is_empty();
    }
    if g.json {
        let mut out = format!("{{\"bench\":{},", json_str(bench));
        out += &main.json_fields();
        out += &format!(
            ",\"client_user_s\":{:.4},\"client_sys_s\":{:.4},\"client_cpu_us_per_req\":{:.2},\"conns\":{},\"clients\":{}",
            cpu.user, cpu.sys, per_req_us, g.conns, g.clients
        );
        for r in extra {
            out += &format!(",{}:{{{}}}", json_str(&r.name), r.json_fields());
        }
        out += "}";
        println!("{out}");
    }
    failed
}

// ------------------------------------------------------------- the load loop

/// One client: a request by its index, answering the revision it produced.
trait Worker: Send + 'static {
    fn call(&mut self, i: u64) -> impl Future<Output = Result<i64, Status>> + Send + '_;
}

struct Load {
    report: Report,
    cpu: Cpu,
    /// (revision, send instant) of every successful request, when asked for.
    revs: Vec<(i64, Instant)>,
}

/// Runs `total` requests over the workers (each takes the next index until
/// none is left), at most `rate` per second when positive, each under the
/// request timeout.
async fn drive<W: Worker>(
    g: &Global,
    name: &str,
    workers: Vec<W>,
    total: u64,
    rate: f64,
    keep_revs: bool,
) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let timeout = (g.request_timeout > 0.0).then(|| Duration::from_secs_f64(g.request_timeout));
    let cpu0 = cpu_now();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(workers.len());
    for mut w in workers {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            let mut revs = Vec::new();
            let mut errors: HashMap<String, u64> = HashMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if rate > 0.0 {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                let st = Instant::now();
                let r = match timeout {
                    Some(t) => match tokio::time::timeout(t, w.call(i)).await {
                        Ok(r) => r,
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "no answer within --request-timeout={}s (client side)",
                            t.as_secs_f64()
                        ))),
                    },
                    None => w.call(i).await,
                };
                let d = st.elapsed();
                match r {
                    Ok(rev) => {
                        lats.push(d.as_secs_f64());
                        if keep_revs {
                            revs.push((rev, st));
                        }
                    }
                    Err(s) => *errors.entry(status_text(&s)).or_default() += 1,
                }
            }
            (lats, revs, errors)
        }));
    }
    let mut report = Report::new(name);
    let mut revs = Vec::new();
    for t in tasks {
        match t.await {
            Ok((l, r, e)) => {
                report.lats.extend(l);
                revs.extend(r);
                for (k, n) in e {
                    report.error(k, n);
                }
            }
            Err(e) => report.error(format!("client task failed: {e}"), 1),
        }
    }
    let total_time = start.elapsed();
    let cpu = cpu_now().since(cpu0);
    report.finish(total_time);
    Load { report, cpu, revs }
}

// ------------------------------------------------------------- put

struct PutWorker {
    kv: KvClient<Channel>,
    keys: Keys,
    value: Bytes,
}

impl Worker for PutWorker {
    fn call(&mut self, i: u64) -> impl Future<Output = Result<i64, Status>> + Send + '_ {
        let req = PutRequest {
            key: self.keys.next(i),
            value: self.value.clone(),
            ..Default::default()
        };
        async move {
            let r = self.kv.put(req).await?.into_inner();
            Ok(r.header.map(|h| h.revision).unwrap_or(0))
        }
    }
}

fn value(g: &Global) -> Bytes {
    Bytes::from(Rng::seeded(u64::MAX / 3).bytes(g.val_size))
}

async fn put(g: &Global) -> bool {
    let value = value(g);
    let workers: Vec<PutWorker> = clients(g)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, c)| PutWorker {
            kv: KvClient::new(c),
            keys: Keys::new(g, i as u64),
            value: value.clone(),
        })
        .collect();
    let load = drive(g, "put", workers, g.total, g.rate, false).await;
    load.report.print(g);
    conclude(g, "put", &load.report, &[], load.cpu)
}

// ------------------------------------------------------------- range

struct RangeWorker {
    kv: KvClient<Channel>,
    req: RangeRequest,
}

impl Worker for RangeWorker {
    fn call(&mut self, _i: u64) -> impl Future<Output = Result<i64, Status>> + Send + '_ {
        let req = self.req.clone();
        async move {
            let r = self.kv.range(req).await?.into_inner();
            Ok(r.header.map(|h| h.revision).unwrap_or(0))
        }
    }
}

async fn range(g: &Global, req: RangeRequest) -> bool {
    let workers: Vec<RangeWorker> = clients(g)
        .await
        .into_iter()
        .map(|c| RangeWorker {
            kv: KvClient::new(c),
            req: req.clone(),
        })
        .collect();
    let load = drive(g, "range", workers, g.total, g.rate, false).await;
    load.report.print(g);
    conclude(g, "range", &load.report, &[], load.cpu)
}

// ------------------------------------------------------------- txn-put

struct TxnPutWorker {
    kv: KvClient<Channel>,
    keys: Keys,
    value: Bytes,
    ops: u64,
}

impl Worker for TxnPutWorker {
    fn call(&mut self, i: u64) -> impl Future<Output = Result<i64, Status>> + Send + '_ {
        // As etcd: the keys of txn i are (i * ops + j) % key-space-size.
        let success = (0..self.ops)
            .map(|j| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: self.keys.of((i * self.ops + j) % self.keys.space),
                    value: self.value.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        let req = TxnRequest {
            success,
            ..Default::default()
        };
        async move {
            let r = self.kv.txn(req).await?.into_inner();
            Ok(r.header.map(|h| h.revision).unwrap_or(0))
        }
    }
}

async fn txn_put(g: &Global, ops: u64) -> bool {
    let value = value(g);
    let workers: Vec<TxnPutWorker> = clients(g)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, c)| TxnPutWorker {
            kv: KvClient::new(c),
            keys: Keys::new(g, i as u64),
            value: value.clone(),
            ops,
        })
        .collect();
    let load = drive(g, "txn-put", workers, g.total, g.rate, false).await;
    load.report.print(g);
    conclude(g, "txn-put", &load.report, &[], load.cpu)
}

// ------------------------------------------------------------- lease-keepalive

struct LeaseWorker {
    lease: LeaseClient<Channel>,
    id: i64,
    /// The open stream (unless `--once`).
    stream: Option<(
        mpsc::Sender<LeaseKeepAliveRequest>,
        Streaming<LeaseKeepAliveResponse>,
    )>,
}

impl Worker for LeaseWorker {
    async fn call(&mut self, _i: u64) -> Result<i64, Status> {
        {
            let req = LeaseKeepAliveRequest { id: self.id };
            let resp = match &mut self.stream {
                Some((tx, rx)) => {
                    tx.send(req)
                        .await
                        .map_err(|_| Status::unavailable("keepalive stream closed"))?;
                    rx.message().await?
                }
                None => {
                    let mut rx = self
                        .lease
                        .lease_keep_alive(tokio_stream::once(req))
                        .await?
                        .into_inner();
                    rx.message().await?
                }
            };
            match resp {
                Some(r) if r.ttl > 0 => Ok(r.header.map(|h| h.revision).unwrap_or(0)),
                Some(r) => Err(Status::not_found(format!(
                    "lease {:x} expired or not found (TTL {})",
                    r.id, r.ttl
                ))),
                None => Err(Status::unavailable("keepalive stream ended")),
            }
        }
    }
}

async fn lease_keepalive(g: &Global, once: bool) -> bool {
    let mut workers = Vec::new();
    let chans = clients(g).await;
    let mut revoker = LeaseClient::new(chans[0].clone());
    for c in chans {
        let mut lease = LeaseClient::new(c);
        let id = match lease
            .lease_grant(LeaseGrantRequest { ttl: 100, id: 0 })
            .await
        {
            Ok(r) => r.into_inner().id,
            Err(s) => fail(format!("lease grant: {}", status_text(&s))),
        };
        let stream = if once {
            None
        } else {
            let (tx, rx) = mpsc::channel(1);
            match lease.lease_keep_alive(ReceiverStream::new(rx)).await {
                Ok(r) => Some((tx, r.into_inner())),
                Err(s) => fail(format!("lease keepalive stream: {}", status_text(&s))),
            }
        };
        workers.push(LeaseWorker { lease, id, stream });
    }
    let ids: Vec<i64> = workers.iter().map(|w| w.id).collect();
    let load = drive(g, "lease-keepalive", workers, g.total, g.rate, false).await;
    load.report.print(g);
    // Revoke what we granted (best effort, after the measured phase).
    for id in ids {
        let _ = revoker.lease_revoke(LeaseRevokeRequest { id }).await;
    }
    conclude(g, "lease-keepalive", &load.report, &[], load.cpu)
}

// ------------------------------------------------------------- watch

/// One watch stream: its watchers, created one after the other as etcd's
/// client does (each waits for its `created` answer).
struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

async fn open_watch_stream(c: Channel) -> WatchStream {
    let (tx, rx) = mpsc::channel(16);
    match WatchClient::new(c).watch(ReceiverStream::new(rx)).await {
        Ok(r) => WatchStream {
            tx,
            rx: r.into_inner(),
        },
        Err(s) => fail(format!("watch stream: {}", status_text(&s))),
    }
}

/// Creates a watcher on `key` and waits for its `created` answer.
async fn create_watch(s: &mut WatchStream, key: Bytes, prev_kv: bool) -> Result<i64, String> {
    let req = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                prev_kv,
                ..Default::default()
            },
        )),
    };
    s.tx.send(req)
        .await
        .map_err(|_| "watch stream closed".to_string())?;
    loop {
        match s.rx.message().await {
            Ok(Some(r)) if r.created => {
                if r.canceled {
                    return Err(format!("watch canceled: {}", r.cancel_reason));
                }
                return Ok(r.watch_id);
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err("watch stream ended".to_string()),
            Err(s) => return Err(status_text(&s)),
        }
    }
}

/// What one watch stream saw: (mod revision, arrival) of each event, and
/// the errors met.
type StreamEvents = (Vec<(i64, Instant)>, Vec<String>);

/// Reads a stream until `expected` events arrived (or it stays silent for
/// the request timeout); answers (mod revision, arrival) of each event and
/// the errors met.
async fn collect_events(mut s: WatchStream, expected: u64, idle: Option<Duration>) -> StreamEvents {
    let mut got = Vec::with_capacity(expected as usize);
    let mut errors = Vec::new();
    while (got.len() as u64) < expected {
        let m = match idle {
            Some(t) => match tokio::time::timeout(t, s.rx.message()).await {
                Ok(m) => m,
                Err(_) => {
                    errors.push(format!(
                        "watch events missing: no event within --request-timeout={}s",
                        t.as_secs_f64()
                    ));
                    break;
                }
            },
            None => s.rx.message().await,
        };
        match m {
            Ok(Some(r)) => {
                let now = Instant::now();
                if r.canceled {
                    errors.push(format!("watch canceled: {}", r.cancel_reason));
                }
                for e in &r.events {
                    got.push((e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0), now));
                }
            }
            Ok(None) => {
                errors.push("watch stream ended".to_string());
                break;
            }
            Err(st) => {
                errors.push(status_text(&st));
                break;
            }
        }
    }
    drop(s.tx);
    (got, errors)
}

/// Event latencies: arrival minus the send of the put with that revision.
fn event_report(
    name: &str,
    puts: &[(i64, Instant)],
    events: Vec<StreamEvents>,
    expected: u64,
    first_put: Instant,
) -> Report {
    let sent: HashMap<i64, Instant> = puts.iter().copied().collect();
    let mut r = Report::new(name);
    let mut last = first_put;
    let mut received = 0u64;
    for (evs, errs) in events {
        for e in errs {
            r.error(e, 1);
        }
        for (rev, at) in evs {
            received += 1;
            last = last.max(at);
            match sent.get(&rev) {
                Some(st) => r.lats.push(at.saturating_duration_since(*st).as_secs_f64()),
                None => r.error(format!("event of an unknown revision {rev}"), 1),
            }
        }
    }
    if received < expected {
        r.error(
            "watch events never received".to_string(),
            expected - received,
        );
    }
    r.finish(last.duration_since(first_put));
    r
}

async fn watch(
    g: &Global,
    streams: usize,
    per_stream: usize,
    key_total: usize,
    put_rate: f64,
    put_total: u64,
) -> bool {
    let grpc_conns = g.clients.min(g.conns);
    let wanted = 1 + streams / 100;
    if grpc_conns < wanted {
        eprintln!(
            "warning: grpc limits 100 streams per client connection, have {grpc_conns} but need {wanted}"
        );
    }
    let chans = clients(g).await;
    let mut keys = Keys::new(g, 7);
    let watched: Vec<Bytes> = (0..key_total as u64).map(|i| keys.next(i)).collect();

    // Watch creation: every stream in parallel, watchers one by one.
    let cpu0 = cpu_now();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for si in 0..streams {
        let c = chans[si % chans.len()].clone();
        let my_keys: Vec<Bytes> = (0..per_stream)
            .map(|j| watched[(si * per_stream + j) % watched.len()].clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut s = open_watch_stream(c).await;
            let mut lats = Vec::new();
            let mut errs = Vec::new();
            let mut ok_keys = Vec::new();
            for k in my_keys {
                let st = Instant::now();
                match create_watch(&mut s, k.clone(), false).await {
                    Ok(_) => {
                        lats.push(st.elapsed().as_secs_f64());
                        ok_keys.push(k);
                    }
                    Err(e) => errs.push(e),
                }
            }
            (s, lats, errs, ok_keys)
        }));
    }
    let mut make = Report::new("watch-make");
    let mut opened = Vec::new();
    for t in tasks {
        let (s, lats, errs, ok_keys) = t.await.unwrap_or_else(|e| fail(e));
        make.lats.extend(lats);
        for e in errs {
            make.error(e, 1);
        }
        opened.push((s, ok_keys));
    }
    make.finish(start.elapsed());
    println!("Watch creation summary:");
    make.print(g);

    // How many events each stream should see.
    let mut watchers_of: HashMap<Bytes, u64> = HashMap::new();
    for (_, ks) in &opened {
        for k in ks {
            *watchers_of.entry(k.clone()).or_default() += 1;
        }
    }
    let mut puts_of: HashMap<Bytes, u64> = HashMap::new();
    for i in 0..put_total {
        *puts_of
            .entry(watched[i as usize % watched.len()].clone())
            .or_default() += 1;
    }
    let idle = (g.request_timeout > 0.0).then(|| Duration::from_secs_f64(g.request_timeout));
    let mut expected_total = 0;
    let mut readers = Vec::new();
    for (s, ks) in opened {
        let expected: u64 = ks
            .iter()
            .map(|k| puts_of.get(k).copied().unwrap_or(0))
            .sum();
        expected_total += expected;
        readers.push(tokio::spawn(collect_events(s, expected, idle)));
    }

    // Puts on the watched keys.
    struct WatchPut {
        kv: KvClient<Channel>,
        keys: Arc<Vec<Bytes>>,
    }
    impl Worker for WatchPut {
        fn call(&mut self, i: u64) -> impl Future<Output = Result<i64, Status>> + Send + '_ {
            let req = PutRequest {
                key: self.keys[i as usize % self.keys.len()].clone(),
                value: Bytes::from_static(b"data"),
                ..Default::default()
            };
            async move {
                let r = self.kv.put(req).await?.into_inner();
                Ok(r.header.map(|h| h.revision).unwrap_or(0))
            }
        }
    }
    let keys = Arc::new(watched);
    let workers: Vec<WatchPut> = chans
        .iter()
        .map(|c| WatchPut {
            kv: KvClient::new(c.clone()),
            keys: keys.clone(),
        })
        .collect();
    let put_start = Instant::now();
    let load = drive(g, "watch-put", workers, put_total, put_rate, true).await;
    let mut events = Vec::new();
    for r in readers {
        events.push(r.await.unwrap_or_else(|e| fail(e)));
    }
    let cpu = cpu_now().since(cpu0);
    let ev = event_report(
        "watch-events",
        &load.revs,
        events,
        expected_total,
        put_start,
    );
    println!("\nPut summary:");
    load.report.print(g);
    println!("\nWatch events received summary (latency from the put's send):");
    ev.print(g);
    conclude(g, "watch", &ev, &[&make, &load.report], cpu)
}

async fn watch_latency(
    g: &Global,
    streams: usize,
    per_stream: usize,
    prevkv: bool,
    put_total: u64,
    put_rate: f64,
) -> bool {
    let chans = clients(g).await;
    let key = Bytes::from(Rng::seeded(11).bytes(g.key_size.max(1)));
    let mut readers = Vec::new();
    let mut make_errors = Vec::new();
    let mut expected = 0;
    for si in 0..streams {
        let mut s = open_watch_stream(chans[si % chans.len()].clone()).await;
        let mut n = 0;
        for _ in 0..per_stream {
            match create_watch(&mut s, key.clone(), prevkv).await {
                Ok(_) => n += 1,
                Err(e) => make_errors.push(e),
            }
        }
        expected += n * put_total;
        readers.push((s, n * put_total));
    }
    let idle = (g.request_timeout > 0.0).then(|| Duration::from_secs_f64(g.request_timeout));
    let cpu0 = cpu_now();
    let readers: Vec<_> = readers
        .into_iter()
        .map(|(s, n)| tokio::spawn(collect_events(s, n, idle)))
        .collect();

    struct LatPut {
        kv: KvClient<Channel>,
        key: Bytes,
        value: Bytes,
    }
    impl Worker for LatPut {
        fn call(&mut self, _i: u64) -> impl Future<Output = Result<i64, Status>> + Send + '_ {
            let req = PutRequest {
                key: self.key.clone(),
                value: self.value.clone(),
                ..Default::default()
            };
            async move {
                let r = self.kv.put(req).await?.into_inner();
                Ok(r.header.map(|h| h.revision).unwrap_or(0))
            }
        }
    }
    // One put client, as etcd's.
    let put_client = LatPut {
        kv: KvClient::new(chans[0].clone()),
        key,
        value: value(g),
    };
    let put_start = Instant::now();
    let load = drive(
        g,
        "watch-latency-put",
        vec![put_client],
        put_total,
        put_rate,
        true,
    )
    .await;
    let mut events = Vec::new();
    for r in readers {
        events.push(r.await.unwrap_or_else(|e| fail(e)));
    }
    let cpu = cpu_now().since(cpu0);
    let mut ev = event_report(
        "watch-latency-watch",
        &load.revs,
        events,
        expected,
        put_start,
    );
    for e in make_errors {
        ev.error(format!("watch create: {e}"), 1);
    }
    println!("\nPut summary:");
    load.report.print(g);
    println!("\nWatch events summary (latency from the put's send):");
    ev.print(g);
    conclude(g, "watch-latency", &ev, &[&load.report], cpu)
}
