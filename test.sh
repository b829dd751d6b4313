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

# Debian's etcd 3.4 (etcdctl, and the reference server for differential
# tests). Without them those tests skip with a message; under CI they fail.
# iproute2 (ip, tc) for the network-namespace test.
if ! command -v etcdctl >/dev/null 2>&1 || ! [ -x /usr/bin/etcd ] || ! command -v tc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing Debian's etcd-server and etcd-client" >&2
        apt-get install -y -q etcd-server etcd-client iproute2 >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 &&
              apt-get install -y -q etcd-server etcd-client iproute2 >/dev/null 2>&1; } ||
            echo "test.sh: could not install etcd-server/etcd-client" >&2
    else
        echo "test.sh: etcdctl or /usr/bin/etcd missing and cannot install them; those tests will skip" >&2
    fi
fi
# The Debian package may start its own etcd on 2379 (where systemd runs);
# the tests use other ports, but stop it so it holds no resources.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace "$@"
