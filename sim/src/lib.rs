//! The deterministic cluster simulator: the real core, driven by madsim's
//! seeded scheduler and virtual clock, with a simulated network and disk that
//! inject faults drawn from the seed. See ARCHITECTURE.md.
//!
//! `SEED=1234 cargo test --features sim` (or `cargo test --features sim SEED=1234`)
//! replays one seed; without `SEED` the default sweep runs.

#[cfg(all(feature = "sim", not(madsim)))]
compile_error!(
    "the simulator needs `--cfg madsim`, which .cargo/config.toml sets; an exported \
     RUSTFLAGS replaces it (put lint levels in [workspace.lints] instead)"
);

pub mod checker;
pub mod history;
pub mod linearizability;
pub mod options;

#[cfg(all(feature = "sim", madsim))]
pub mod client;
#[cfg(all(feature = "sim", madsim))]
pub mod run;
#[cfg(all(feature = "sim", madsim))]
pub mod server;
#[cfg(all(feature = "sim", madsim))]
pub mod sweep;
#[cfg(all(feature = "sim", madsim))]
pub mod watcher;
#[cfg(all(feature = "sim", madsim))]
pub mod world;

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Panic reports of seed threads, by thread name, recorded by [`install_panic_hook`].
static PANICS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Records panics on seed threads (named `seed-…`) instead of printing them, so
/// a sweep can report them with their seed; other threads panic as usual.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        if name.starts_with("seed-") {
            let mut p = PANICS.lock().unwrap_or_else(|e| e.into_inner());
            p.entry(name).or_insert_with(|| info.to_string());
        } else {
            previous(info);
        }
    }));
}

/// The message of a panic payload, with its location when the hook saw it.
pub fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    let name = format!("seed-{}", current_seed_hint());
    if let Some(m) = PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&name)
    {
        return m;
    }
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

std::thread_local! {
    static SEED_HINT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Tells `panic_message` which seed thread the caller just joined.
pub fn set_seed_hint(seed: u64) {
    SEED_HINT.with(|s| s.set(seed));
}

fn current_seed_hint() -> u64 {
    SEED_HINT.with(|s| s.get())
}
