#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this). It sets up what a
# fresh machine lacks, then runs every test: unit tests, proptests, protocol
# scenarios, and the simulator's default sweep of seeds.
set -euo pipefail
cd "$(dirname "$0")"

# An exported RUSTFLAGS would replace the `--cfg madsim` in .cargo/config.toml
# and silently turn the simulator off (see ARCHITECTURE.md).
if [ -n "${RUSTFLAGS:-}" ]; then
    echo "test.sh: unset RUSTFLAGS (it overrides .cargo/config.toml); lint levels live in Cargo.toml" >&2
    exit 1
fi

# madsim must never reach the production binaries, or they become simulators.
if cargo tree -p etcd-net -e normal --prefix none 2>/dev/null | grep -q madsim; then
    echo "test.sh: madsim is in the etcd server's dependency graph" >&2
    exit 1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace "$@"
