//! The `etcdctl` client binary. Not built yet (it comes with the server); this
//! binary says so plainly rather than pretending to work.

fn main() {
    eprintln!("etcdctl: not implemented yet; see README.md for what runs today.");
    std::process::exit(2);
}
