//! The simulator's entry point (`harness = false`, so it can read `SEED=…`
//! from the command line as well as the environment):
//!
//! - `SEED=1234 cargo test -p etcd-sim --test sweep` (or `cargo test --features sim SEED=1234`):
//!   replay exactly seed 1234, printing its options and what it went through;
//! - no `SEED`: the regression seeds, then seeds `SEED_BASE..SEED_BASE+SEEDS`
//!   (default 0..300), alternating 3- and 5-member clusters.

#[cfg(all(feature = "sim", madsim))]
fn main() {
    use etcd_sim::run::{RunConfig, run_seed};
    use etcd_sim::sweep::{self, Args, REGRESSION_SEEDS};

    etcd_sim::install_panic_hook();
    let args = Args::from_env_and_args(std::env::args().skip(1));
    let cfg = RunConfig::default();

    if let Some(seed) = args.seed {
        let nodes = sweep::nodes_for(seed);
        println!("replaying seed {seed} ({nodes} members)");
        match run_seed(seed, nodes, &cfg) {
            Ok(r) => {
                println!("  options: {}", r.opts);
                let o = sweep::Outcome {
                    reports: vec![r.clone()],
                    failures: vec![],
                    elapsed_s: 0.0,
                };
                print!("{}", sweep::summary_table(&o));
                println!(
                    "  trace digest {:016x}, {} client ops in history",
                    r.trace_digest, r.history_ops
                );
                println!("1 passed, 0 failed");
            }
            Err(f) => {
                println!("FAILED seed {seed}: {f}");
                println!("0 passed, 1 failed");
                std::process::exit(1);
            }
        }
        return;
    }

    let mut failed = 0;
    let mut passed = 0;
    let regression: Vec<u64> = REGRESSION_SEEDS.iter().map(|(s, _)| *s).collect();
    if !regression.is_empty() {
        let o = sweep::run_many(&regression, &cfg, args.jobs, false, false);
        for (seed, f) in &o.failures {
            let why = REGRESSION_SEEDS
                .iter()
                .find(|(s, _)| s == seed)
                .map_or("", |(_, w)| *w);
            println!(
                "FAILED regression seed {seed} (once found: {why}): {f}\n  replay: {}",
                sweep::replay_command(*seed)
            );
        }
        passed += o.reports.len();
        failed += o.failures.len();
    }
    let seeds: Vec<u64> = (args.base..args.base + args.seeds).collect();
    println!(
        "simulating {} seeds from {} on {} threads",
        seeds.len(),
        args.base,
        args.jobs
    );
    let o = sweep::run_many(&seeds, &cfg, args.jobs, false, true);
    for (seed, f) in &o.failures {
        println!(
            "FAILED seed {seed}: {f}\n  replay: {}",
            sweep::replay_command(*seed)
        );
    }
    print!("{}", sweep::summary_table(&o));
    passed += o.reports.len();
    failed += o.failures.len();
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

#[cfg(not(all(feature = "sim", madsim)))]
fn main() {
    println!("simulator not built (needs the `sim` feature and `--cfg madsim`)");
}
