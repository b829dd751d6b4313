//! The `etcd` server binary. The network server (v3 gRPC API, peer transport,
//! WAL, configuration) is not built yet; see ARCHITECTURE.md for the plan. This
//! binary says so plainly rather than pretending to serve.

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    if std::env::args().any(|a| a == "--version") {
        println!("etcd Version: {version} (etcd-rs; server not yet implemented)");
        return;
    }
    eprintln!(
        "etcd {version}: the server is not implemented yet. What exists today is the Raft core \
         and its simulator: run `cargo test` (see README.md)."
    );
    std::process::exit(2);
}
