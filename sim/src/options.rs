//! What a seed simulates: cluster size, workload and fault knobs, all drawn
//! from the seed (as TigerBeetle's VOPR draws its "swarm" options), so that
//! across a sweep some seeds are calm and others are storms.

use std::fmt;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Helpers for drawing from a seeded generator without `rand`'s distributions
/// (their output may change between versions; these never do).
pub trait Draw {
    fn below(&mut self, n: u64) -> u64;
    fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }
    /// True with probability `permille / 1000`.
    fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }
}

impl Draw for ChaCha8Rng {
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "empty range");
        // Rejection sampling keeps the draw unbiased.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub nodes: u64,
    pub clients: u64,
    pub keys: u64,
    /// Virtual milliseconds per Raft tick.
    pub tick_ms: u64,
    pub election_timeout_ticks: u32,
    /// How long faults are injected, in virtual seconds.
    pub fault_secs: u64,
    /// One-way message delay, virtual microseconds.
    pub net_delay_us: (u64, u64),
    /// Per-message loss and duplication, per mille.
    pub loss_permille: u64,
    pub dup_permille: u64,
    /// Fsync latency, virtual microseconds.
    pub fsync_us: (u64, u64),
    /// Per-node tick-rate drift, up to this percent either way.
    pub drift_pct: u64,
    /// Mean virtual milliseconds between nemesis actions.
    pub nemesis_interval_ms: u64,
    pub partitions: bool,
    pub crashes: bool,
    pub pauses: bool,
    pub client_cuts: bool,
    pub membership: bool,
    pub transfers: bool,
    pub weather: bool,
    /// Stall a member's disk (fsyncs wait) for a while.
    pub disk_stalls: bool,
    /// Flip bits in, or wipe, a crashed member's disk (a minority at a time).
    pub disk_faults: bool,
    pub snapshot_interval_entries: u64,
    pub snapshot_catchup_entries: u64,
    pub max_inflight_msgs: u32,
    pub max_msg_bytes: u64,
    /// Bytes encoded per step of a snapshot: small (a key or a few), so
    /// snapshots interleave with writes, compactions and restores.
    pub snapshot_step_budget: usize,
    /// A member's disk fills up for a while: its writes fail and are retried.
    pub disk_full: bool,
}

impl SimOptions {
    /// Draws everything from `seed`. `nodes` is 3 or 5 (the sweep alternates).
    pub fn from_seed(seed: u64, nodes: u64) -> SimOptions {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x0005_eed0_f0b7_10a5);
        let calm = r.chance(100);
        SimOptions {
            seed,
            nodes,
            clients: r.range(2, 6),
            keys: r.range(1, 5),
            tick_ms: 50,
            election_timeout_ticks: 10,
            fault_secs: r.range(10, 30),
            net_delay_us: {
                let lo = r.range(100, 2_000);
                (lo, lo + r.range(0, 30_000))
            },
            loss_permille: if calm || r.chance(400) {
                0
            } else {
                r.range(1, 80)
            },
            dup_permille: if calm || r.chance(500) {
                0
            } else {
                r.range(1, 50)
            },
            fsync_us: {
                let lo = r.range(50, 1_000);
                // Some seeds get a slow disk, so crashes catch writes in flight.
                let spread = if r.chance(250) {
                    r.range(20_000, 150_000)
                } else {
                    r.range(0, 20_000)
                };
                (lo, lo + spread)
            },
            drift_pct: if r.chance(300) { 0 } else { r.range(1, 30) },
            nemesis_interval_ms: r.range(300, 2_500),
            partitions: !calm && r.chance(750),
            crashes: !calm && r.chance(700),
            pauses: !calm && r.chance(500),
            client_cuts: !calm && r.chance(400),
            membership: !calm && r.chance(500),
            transfers: r.chance(500),
            weather: !calm && r.chance(400),
            disk_stalls: !calm && r.chance(300),
            disk_faults: !calm && r.chance(350),
            snapshot_interval_entries: r.range(10, 200),
            snapshot_catchup_entries: r.range(0, 20),
            max_inflight_msgs: r.range(1, 64) as u32,
            max_msg_bytes: r.range(200, 64 * 1024),
            snapshot_step_budget: r.range(1, 64) as usize,
            disk_full: !calm && r.chance(300),
        }
    }
}

impl fmt::Display for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} nodes={} clients={} keys={} faults={}s tick={}ms delay={}..{}us loss={}‰ dup={}‰ \
             fsync={}..{}us drift=±{}% nemesis_every~{}ms partitions={} crashes={} pauses={} \
             client_cuts={} membership={} transfers={} weather={} disk_stalls={} disk_faults={} snapshot_every={} catchup={} \
             inflight={} msg_bytes={} snapshot_step={} disk_full={}",
            self.seed,
            self.nodes,
            self.clients,
            self.keys,
            self.fault_secs,
            self.tick_ms,
            self.net_delay_us.0,
            self.net_delay_us.1,
            self.loss_permille,
            self.dup_permille,
            self.fsync_us.0,
            self.fsync_us.1,
            self.drift_pct,
            self.nemesis_interval_ms,
            self.partitions,
            self.crashes,
            self.pauses,
            self.client_cuts,
            self.membership,
            self.transfers,
            self.weather,
            self.disk_stalls,
            self.disk_faults,
            self.snapshot_interval_entries,
            self.snapshot_catchup_entries,
            self.max_inflight_msgs,
            self.max_msg_bytes,
            self.snapshot_step_budget,
            self.disk_full,
        )
    }
}
