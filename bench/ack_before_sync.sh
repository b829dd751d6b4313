#!/usr/bin/env bash
# Does a single-member server answer a put before the put is on disk?
#
# For each server (ours, Debian's etcd 3.4.23, etcd 3.5.1), one member on
# 127.0.0.1 takes PUTS sequential puts from one client (our `benchmark`),
# while `perf record -a` traces the server's sync calls (fdatasync, fsync,
# msync: enter and exit) and its writes (write, sendto). A put's answer is a write of
# 40-200 bytes to a descriptor the server never syncs. The script counts
# the answers written while a sync is still in flight. With one client and
# one member, the only write a sync can be in flight for is the put being
# answered, so every such answer was acknowledged before it was durable.
#
# etcd before 3.5.5 does this on one member (etcd-io/etcd#14370: the apply
# runs beside the WAL save). That overlap is the ~40 µs by which etcd 3.5.1
# beats a durable server's single-client put p50 (see BENCHMARKS.md).
#
#   bench/ack_before_sync.sh          # needs perf, /usr/bin/etcd, and etcd 3.5.1
#                                     # in target/bench-etcd (bench/side_by_side.sh
#                                     # fetches it)
# Environment: PUTS=2000, SERVERS="ours etcd34 etcd351", PORT=23790.
set -euo pipefail
cd "$(dirname "$0")/.."
PUTS=${PUTS:-2000}
SERVERS=${SERVERS:-"ours etcd34 etcd351"}
PORT=${PORT:-23790}
command -v perf >/dev/null || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/ack-before-sync.XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

cargo build --release -q -p etcd-net --bin etcd
cargo build --release -q -p etcd-cli --bin benchmark
BENCH=target/release/benchmark

server_bin() {
    case $1 in
        ours) echo target/release/etcd ;;
        etcd34) echo /usr/bin/etcd ;;
        etcd351) echo target/bench-etcd/etcd-3.5.1 ;;
        *) echo "unknown server $1" >&2; exit 1 ;;
    esac
}

printf '| server | puts | answered while their sync was in flight | after it |\n|---|---:|---:|---:|\n'
json="{\"bench\":\"ack_before_sync\",\"puts\":$PUTS"
for s in $SERVERS; do
    bin=$(server_bin "$s")
    [ -x "$bin" ] || { echo "$bin is missing (bench/side_by_side.sh fetches etcd 3.5.1)" >&2; exit 1; }
    rm -rf "$TMP/data"
    peer=$((PORT + 10))
    "$bin" --name default --data-dir "$TMP/data" \
        --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "default=http://127.0.0.1:$peer" >"$TMP/$s.log" 2>&1 &
    SERVER_PID=$!
    ready=0
    for _ in $(seq 100); do
        if "$BENCH" --endpoints "127.0.0.1:$PORT" --total=1 --histogram=false put >/dev/null 2>&1; then
            ready=1
            break
        fi
        sleep 0.1
    done
    [ "$ready" = 1 ] || { echo "$s did not start:" >&2; cat "$TMP/$s.log" >&2; exit 1; }
    perf record -a -q -o "$TMP/$s.data" \
        -e syscalls:sys_enter_fdatasync -e syscalls:sys_exit_fdatasync \
        -e syscalls:sys_enter_fsync -e syscalls:sys_exit_fsync \
        -e syscalls:sys_enter_msync -e syscalls:sys_exit_msync \
        -e syscalls:sys_enter_write -e syscalls:sys_enter_sendto \
        -- "$BENCH" --endpoints "127.0.0.1:$PORT" --conns=1 --clients=1 --total="$PUTS" \
        --key-size=8 --val-size=256 --histogram=false put >"$TMP/$s.bench" 2>&1
    # perf script names each event's thread, not its process: keep the
    # server's threads by their ids.
    tids=$(ls "/proc/$SERVER_PID/task" | tr '\n' ' ')
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    perf script -i "$TMP/$s.data" -F tid,event,trace 2>/dev/null >"$TMP/$s.txt"
    read -r during after < <(TIDS="$tids" python3 - "$TMP/$s.txt" <<'EOF'
import os, re, sys
tids = set(os.environ["TIDS"].split())
events = []
synced = set()
for line in open(sys.argv[1]):
    m = re.match(r"\s*(\d+)\s+syscalls:sys_(enter|exit)_(\w+):(.*)", line)
    if not m or m.group(1) not in tids:
        continue
    kind, call, rest = m.group(2), m.group(3), m.group(4)
    fd = re.search(r"fd: (0x[0-9a-f]+)", rest)
    size = re.search(r"(?:count|len): (0x[0-9a-f]+)", rest)
    fd = int(fd.group(1), 16) if fd else None
    if call in ("fdatasync", "fsync") and kind == "enter" and fd is not None:
        synced.add(fd)
    events.append((m.group(1), kind, call, fd, int(size.group(1), 16) if size else 0))
in_flight = 0
during = after = 0
for tid, kind, call, fd, size in events:
    if call in ("fdatasync", "fsync", "msync"):
        in_flight = in_flight + 1 if kind == "enter" else max(0, in_flight - 1)
    elif kind == "enter" and fd not in synced and 40 <= size <= 200:
        if in_flight:
            during += 1
        else:
            after += 1
print(during, after)
EOF
    )
    printf '| %s | %s | %s | %s |\n' "$s" "$PUTS" "$during" "$after"
    json="$json,\"${s}_answered_before_durable\":$during,\"${s}_answered_after\":$after"
done
echo "$json}"
