//! The simulator must catch a broken core. Each test switches on one
//! deliberate bug (compiled in only through the `bug-injection` feature, which
//! only these tests enable) and requires the default sweep to find a seed that
//! fails. Also: a seed replays to the same trace.
#![cfg(all(feature = "sim", madsim))]

use etcd_core::raft::Bugs;
use etcd_sim::run::{RunConfig, run_seed};
use etcd_sim::sweep::{self, DEFAULT_SEEDS};

fn first_failure(bugs: Bugs) -> String {
    etcd_sim::install_panic_hook();
    let seeds: Vec<u64> = (0..DEFAULT_SEEDS).collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let o = sweep::run_many(&seeds, &RunConfig { bugs }, jobs, true, false);
    match o.failures.first() {
        Some((seed, f)) => format!("seed {seed}: {} {}", f.kind, f.message),
        None => panic!(
            "{} seeds ran with {bugs:?} and none failed: the checkers missed the bug",
            o.reports.len()
        ),
    }
}

#[test]
fn leader_counting_old_term_entries_is_caught() {
    let f = first_failure(Bugs {
        commit_old_term_by_count: true,
        ..Bugs::default()
    });
    println!("caught: {f}");
}

#[test]
fn voting_twice_in_a_term_is_caught() {
    let f = first_failure(Bugs {
        vote_twice: true,
        ..Bugs::default()
    });
    println!("caught: {f}");
}

#[test]
fn acknowledging_before_durable_is_caught() {
    let f = first_failure(Bugs {
        ack_before_durable: true,
        ..Bugs::default()
    });
    println!("caught: {f}");
}

#[test]
fn same_seed_replays_the_same_trace_and_another_seed_differs() {
    let cfg = RunConfig::default();
    for seed in [7u64, 8] {
        let a = run_seed(seed, sweep::nodes_for(seed), &cfg).expect("seed passes");
        let b = run_seed(seed, sweep::nodes_for(seed), &cfg).expect("seed passes");
        assert_eq!(a.trace_digest, b.trace_digest, "seed {seed} did not replay");
        assert_eq!(a.history_ops, b.history_ops);
        assert_eq!(a.stats.messages_sent, b.stats.messages_sent);
    }
    let a = run_seed(7, 3, &cfg).expect("seed passes");
    let c = run_seed(9, 3, &cfg).expect("seed passes");
    assert_ne!(a.trace_digest, c.trace_digest);
}
