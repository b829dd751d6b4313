//! The `etcd` server binary: etcd's flags, `ETCD_*` variables and
//! `--config-file`, then a member (see `server/mod.rs`).

use etcd_net::config::{self, Action};
use etcd_net::log::{self, V};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let parsed = match config::parse(&args, &env) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(e.exit_code());
        }
    };
    match parsed.action {
        Action::Help => {
            print!("{}", config::usage());
            return;
        }
        Action::Version => {
            print!("{}", config::version_text());
            return;
        }
        Action::Run => {}
    }
    let cfg = parsed.config;
    if let Some(l) = log::Level::parse(cfg.log_level.as_str()) {
        log::set_level(l);
    }
    for w in &parsed.warnings {
        log::warn("etcdmain/config.go", w, &[]);
    }
    if let Err(e) = etcd_net::server::run(cfg) {
        log::error(
            "etcdmain/etcd.go",
            "failed to start etcd",
            &[("error", V::S(&e.0))],
        );
        eprintln!("etcd: {e}");
        std::process::exit(1);
    }
}
