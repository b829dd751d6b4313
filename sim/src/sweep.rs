//! Runs seeds: one (replay), the regression list, or a sweep, in parallel on
//! the machine's cores; prints each failure with the command that replays it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::run::{Failure, Report, RunConfig, run_seed};
use crate::world::Stats;

/// Seeds that found bugs, each with what it found. Every run replays them.
/// Never delete one.
pub const REGRESSION_SEEDS: &[(u64, &str)] = &[
    (
        209108,
        "sim: reaping removed members before any member reported a membership shut every member down (also seed 213846)",
    ),
    (
        613,
        "checker: a paused term-3 candidate won late, after term 4 committed; leader completeness wrongly demanded term 4's entries",
    ),
    (
        85,
        "core/watch: a watch starting in the future, resynced by a snapshot restore below its start, had its start lowered and got an earlier revision",
    ),
    (
        0,
        "sim: a crashed member's watch streams were not broken, so a watcher silently missed events",
    ),
    (
        3,
        "checker: an empty range in the watch completeness check panicked",
    ),
    (
        27,
        "checker: a revision made by a lease expiry was attributed to the next write reporting it",
    ),
    (
        1,
        "sim/disk: a member restarted without its log after a bit flip; the amnesia guard must keep it out of elections until it has caught up",
    ),
    (
        63,
        "sim: a membership change while a member's disk was damaged",
    ),
    (
        135,
        "sim: a removed member was judged by a stale view of the membership and never reaped",
    ),
    (
        129,
        "sim/watcher: a progress answer from a member still catching up was taken to vouch for the final revision",
    ),
    (
        7,
        "checker: after a disk wipe, acknowledged entries held only before the loss were counted as lost",
    ),
];

/// Seeds in the default sweep (`SEEDS` overrides).
pub const DEFAULT_SEEDS: u64 = 300;

/// Which cluster size a seed runs: even seeds 3 members, odd seeds 5.
pub fn nodes_for(seed: u64) -> u64 {
    if seed.is_multiple_of(2) { 3 } else { 5 }
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("SEED={seed} cargo test -p etcd-sim --test sweep")
}

#[derive(Clone, Debug, Default)]
pub struct Args {
    pub seed: Option<u64>,
    pub seeds: u64,
    pub base: u64,
    pub jobs: usize,
}

fn parse_u64(name: &str, v: &str) -> u64 {
    let v = v.trim();
    let parsed = if let Some(hex) = v.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        v.parse()
    };
    parsed.unwrap_or_else(|_| panic!("{name}={v}: expected a number"))
}

impl Args {
    /// Reads `SEED`, `SEEDS`, `SEED_BASE` and `SIM_JOBS` from the environment,
    /// and `SEED=…` style words from the command line (as `cargo test … SEED=1234`
    /// passes them); the command line wins.
    pub fn from_env_and_args(args: impl Iterator<Item = String>) -> Args {
        let mut vars: Vec<(String, String)> = ["SEED", "SEEDS", "SEED_BASE", "SIM_JOBS"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        for a in args {
            if let Some((k, v)) = a.split_once('=')
                && ["SEED", "SEEDS", "SEED_BASE", "SIM_JOBS"].contains(&k)
            {
                vars.push((k.to_string(), v.to_string()));
            }
        }
        let mut out = Args {
            seed: None,
            seeds: DEFAULT_SEEDS,
            base: 0,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        for (k, v) in vars {
            match k.as_str() {
                "SEED" => out.seed = Some(parse_u64(&k, &v)),
                "SEEDS" => out.seeds = parse_u64(&k, &v),
                "SEED_BASE" => out.base = parse_u64(&k, &v),
                "SIM_JOBS" => out.jobs = parse_u64(&k, &v).max(1) as usize,
                _ => {}
            }
        }
        out
    }
}

pub struct Outcome {
    pub reports: Vec<Report>,
    pub failures: Vec<(u64, Box<Failure>)>,
    pub elapsed_s: f64,
}

impl Outcome {
    pub fn totals(&self) -> (Stats, u64) {
        let mut s = Stats::default();
        let mut elections = 0;
        for r in &self.reports {
            s.add(&r.stats);
            elections += r.elections;
        }
        (s, elections)
    }
}

/// Runs `seeds` on `jobs` threads. With `stop_early`, stops handing out seeds
/// after the first failure.
pub fn run_many(
    seeds: &[u64],
    cfg: &RunConfig,
    jobs: usize,
    stop_early: bool,
    progress: bool,
) -> Outcome {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    type Results = Vec<(u64, Result<Report, Box<Failure>>)>;
    let results: Arc<Mutex<Results>> = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let seeds = Arc::new(seeds.to_vec());
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (next, results, failed, seeds, cfg) = (
                next.clone(),
                results.clone(),
                failed.clone(),
                seeds.clone(),
                cfg.clone(),
            );
            std::thread::spawn(move || {
                loop {
                    if stop_early && failed.load(Ordering::SeqCst) > 0 {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&seed) = seeds.get(k) else { break };
                    let r = run_seed(seed, nodes_for(seed), &cfg);
                    if r.is_err() {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    if progress && (k + 1) % 50 == 0 {
                        eprintln!("  … {} of {} seeds", k + 1, seeds.len());
                    }
                    results.lock().expect("not poisoned").push((seed, r));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("sweep worker panicked outside a seed");
    }
    let mut all = std::mem::take(&mut *results.lock().expect("not poisoned"));
    all.sort_by_key(|(s, _)| *s);
    let mut out = Outcome {
        reports: Vec::new(),
        failures: Vec::new(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    for (seed, r) in all {
        match r {
            Ok(rep) => out.reports.push(rep),
            Err(f) => out.failures.push((seed, f)),
        }
    }
    out
}

/// A readable summary of what a set of runs went through.
pub fn summary_table(o: &Outcome) -> String {
    let (s, elections) = o.totals();
    let virtual_s: u64 = o.reports.iter().map(|r| r.virtual_ms).sum::<u64>() / 1000;
    let rows = [
        ("seeds passed", o.reports.len() as u64),
        ("seeds failed", o.failures.len() as u64),
        ("simulated seconds", virtual_s),
        ("elections won", elections),
        ("leader changes", s.leader_changes),
        ("partitions (incl. one-way, isolation)", s.partitions),
        ("crashes", s.crashes),
        ("unsynced writes lost in crashes", s.lost_unsynced_writes),
        ("pauses", s.pauses),
        ("client link cuts", s.client_cuts),
        ("network weather changes", s.weather_changes),
        ("leadership transfers asked", s.transfers),
        ("membership changes proposed", s.membership_changes),
        ("membership changes applied", s.membership_applied),
        ("disk stalls", s.disk_stalls),
        ("disks filled up", s.disk_fulls),
        (
            "syncs failed for lack of space (retried)",
            s.writes_failed_for_space,
        ),
        ("crashes that tore a write in flight", s.torn_writes),
        ("bit flips in durable data", s.bit_flips),
        ("disks wiped", s.disk_wipes),
        ("corrupt disks found and repaired", s.repairs),
        ("snapshots taken locally", s.local_snapshots),
        ("snapshots sent to followers", s.snapshots_sent),
        ("snapshots installed", s.snapshots_installed),
        ("messages sent", s.messages_sent),
        ("messages dropped", s.messages_dropped),
        ("messages duplicated", s.messages_duplicated),
        ("client ops ok", s.ops_ok),
        ("client ops refused", s.ops_failed),
        ("client ops with unknown outcome", s.ops_unknown),
    ];
    let mut t = String::new();
    for (k, v) in rows {
        t.push_str(&format!("  {k:<40} {v:>12}\n"));
    }
    t.push_str(&format!("  {:<40} {:>12.1}\n", "wall seconds", o.elapsed_s));
    t
}
