#!/usr/bin/env bash
# How long a client's `etcdctl snapshot save` holds up other requests: loads
# 300,000 keys (16-byte keys, 256-byte values) into one fresh member of our
# etcd, then times single-client puts while the snapshot streams out.
#
#   bench/snapshot_stall.sh [path/to/etcd]    # default: target/release/etcd
#
# Prints the snapshot's size and time, and the puts' latencies (the slowest
# is the stall). Needs Debian's etcdctl (./test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ETCD=${1:-target/release/etcd}
cargo build --release -q -p etcd-net -p etcd-cli
B=target/release/benchmark
TMP=$(mktemp -d /tmp/snapshot-stall.XXXXXX)
PORT=${PORT:-43379}
"$ETCD" --data-dir "$TMP/data" --listen-client-urls "http://127.0.0.1:$PORT" \
    --advertise-client-urls "http://127.0.0.1:$PORT" \
    --listen-peer-urls "http://127.0.0.1:$((PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((PORT + 1))" >"$TMP/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 50); do
    etcdctl --endpoints "127.0.0.1:$PORT" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
$B --endpoints "127.0.0.1:$PORT" --conns 4 --clients 50 put --key-size 16 \
    --val-size 256 --total 300000 --key-space-size 300000 --sequential-keys |
    grep "Requests/sec" | sed 's/^ */load: /'
(
    sleep 0.5
    start=$(date +%s.%N)
    etcdctl --endpoints "127.0.0.1:$PORT" snapshot save "$TMP/snap.db" >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "snapshot save: $(echo "$end - $start" | bc) s, $(stat -c %s "$TMP/snap.db") bytes"
) &
SAVER=$!
$B --endpoints "127.0.0.1:$PORT" --conns 1 --clients 1 put --key-size 8 --val-size 64 \
    --total 3000 | grep -E "Slowest|Average|Requests/sec|99%|99.9%" | sed 's/^ */puts meanwhile: /'
wait $SAVER
