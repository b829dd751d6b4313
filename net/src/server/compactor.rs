//! Auto compaction as etcd 3.5 does it (`--auto-compaction-mode` and
//! `--auto-compaction-retention`), run by the leader only. The compaction
//! itself goes through the log like a client's.
//!
//! - periodic, retention P: the revision is sampled every P/10 (at most every
//!   6 minutes); once P has passed, the store is compacted to the revision of
//!   P ago, and again every min(P, 1 h).
//! - revision, retention N: every 5 minutes, compact to `current - N`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etcd_core::request::{Request, Response};

use super::api::Shared;
use super::core::Mode;
use crate::config::AutoCompaction;
use crate::log::{self, V};

const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(300);

/// The sampling interval and how many samples cover a retention period.
fn periodic_plan(period: Duration) -> (Duration, Duration, usize) {
    let compact_every = period.min(Duration::from_secs(3600));
    let sample_every = compact_every / 10;
    let samples = (period.as_nanos() / sample_every.as_nanos().max(1)) as usize + 1;
    (
        compact_every,
        sample_every.max(Duration::from_millis(1)),
        samples,
    )
}

async fn leads(api: &Shared) -> Option<i64> {
    let s = api.core.status().await?;
    (s.leader == s.member_id).then_some(s.revision)
}

async fn compact(api: &Shared, revision: i64, mode: &str, retention: &str) -> bool {
    log::info(
        "v3compactor/compactor.go",
        &format!("starting auto {mode} compaction"),
        &[
            ("revision", V::I(revision)),
            ("compact-period", V::S(retention)),
        ],
    );
    let r = Request::Compact {
        revision,
        physical: false,
    };
    match api.call(r, Mode::Write).await {
        Ok((Response::Compact { .. }, _)) => {
            log::info(
                "v3compactor/compactor.go",
                &format!("completed auto {mode} compaction"),
                &[
                    ("revision", V::I(revision)),
                    ("compact-period", V::S(retention)),
                ],
            );
            true
        }
        // Already compacted there (by a client, or before a leader change).
        Err(s) if s.message().contains("required revision has been compacted") => true,
        Err(s) => {
            log::warn(
                "v3compactor/compactor.go",
                &format!("failed auto {mode} compaction"),
                &[("revision", V::I(revision)), ("error", V::S(s.message()))],
            );
            false
        }
        Ok(_) => false,
    }
}

/// Runs until the process stops.
pub async fn run(api: Shared, mode: AutoCompaction) {
    match mode {
        AutoCompaction::Disabled => {}
        AutoCompaction::Revision(keep) => {
            let retention = keep.to_string();
            let mut last = 0i64;
            loop {
                tokio::time::sleep(REVISION_MODE_INTERVAL).await;
                let Some(rev) = leads(&api).await else {
                    continue;
                };
                let target = rev - keep as i64;
                if target <= 0 || target == last {
                    continue;
                }
                if compact(&api, target, "revision", &retention).await {
                    last = target;
                }
            }
        }
        AutoCompaction::Periodic(period) => {
            let (compact_every, sample_every, samples) = periodic_plan(period);
            let retention = format!("{period:?}");
            let mut revs: VecDeque<i64> = VecDeque::new();
            let mut last_success = Instant::now();
            let mut wait_for = period;
            loop {
                match leads(&api).await {
                    Some(rev) => {
                        revs.push_back(rev);
                        if revs.len() > samples {
                            revs.pop_front();
                        }
                    }
                    None => {
                        // Not the leader: start over when we become one.
                        revs.clear();
                        last_success = Instant::now();
                        wait_for = period;
                    }
                }
                tokio::time::sleep(sample_every).await;
                if last_success.elapsed() < wait_for || revs.is_empty() {
                    continue;
                }
                wait_for = compact_every;
                let target = revs[0];
                if target > 0 && compact(&api, target, "periodic", &retention).await {
                    last_success = Instant::now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_periodic_plan_is_etcds() {
        // One hour: compact hourly, sample every 6 minutes, 11 samples.
        let (c, s, n) = periodic_plan(Duration::from_secs(3600));
        assert_eq!(
            (c, s, n),
            (Duration::from_secs(3600), Duration::from_secs(360), 11)
        );
        // Ten hours: still hourly, sampled every 6 minutes over 10 hours.
        let (c, s, n) = periodic_plan(Duration::from_secs(36_000));
        assert_eq!(
            (c, s, n),
            (Duration::from_secs(3600), Duration::from_secs(360), 101)
        );
        // Ten seconds: every 10 s, sampled every second.
        let (c, s, n) = periodic_plan(Duration::from_secs(10));
        assert_eq!(
            (c, s, n),
            (Duration::from_secs(10), Duration::from_secs(1), 11)
        );
    }
}
