#!/usr/bin/env bash
# s3-upload.sh - issue 16: mirrorcap's S3 upload throughput next to the aws
# CLI's `s3 cp --recursive` of the same files to the same local S3 server
# (moto_server), and the capture loss at 128 B / 200k pps while uploading
# next to the same stream with no upload; in the same run. Everything runs
# in a network namespace of its own with only loopback (nothing can reach
# AWS or instance metadata).
#
#   1. moto down: the daemon captures FILES_N frames of 1400 B (vxgen, VNI
#      42, 100k pps) into 64 MiB files; their uploads fail, so they stay
#      journaled (the set is copied for step 4).
#   2. moto up: a second daemon start uploads the journaled set; timed from
#      its start to an empty journal -> MB/s.
#   3. `aws s3 cp --recursive` of the same files to another prefix -> MB/s.
#   4. loss: 1M frames of 128 B at 200k pps (VNI 43) into a daemon with no
#      pending upload, then into a daemon uploading the copied set; pcapcount
#      checks vxgen's sequence stamps in the VNI 43 files.
# Daemon pinned to CPU 1, vxgen to CPU 0, moto (Python) and the CLI unpinned.
#
# Usage (root, from the repository): benchmarks/s3-upload.sh
# Environment: FILES_N=750000 BENCH=../shared/bench OUT=/var/tmp/mcs3
set -eu -o pipefail

FILES_N=${FILES_N:-750000} BENCH=${BENCH:-../shared/bench} OUT=${OUT:-/var/tmp/mcs3}
BIN=$PWD/target/release/mirrorcap NS=bs3 PORT=5000
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
	AWS_EC2_METADATA_DISABLED=true
rm -rf "$OUT" && mkdir -p "$OUT"
cp -r "$BENCH" "$OUT/bench" && make -s -C "$OUT/bench" >/dev/null
ip netns del $NS 2>/dev/null || true
ip netns add $NS
MOTO=""
cleanup() { [[ -n $MOTO ]] && kill "$MOTO" 2>/dev/null; ip netns del $NS 2>/dev/null; true; }
trap cleanup EXIT
ip -n $NS link set lo up
E="ip netns exec $NS"
S3="http://127.0.0.1:$PORT"
cat >"$OUT/c.toml" <<T
listen = "127.0.0.1:4789"
host_id = "bench"
[output]
rotate_size = "64MiB"
[output.s3]
bucket = "bench"
prefix = "mc"
region = "us-east-1"
endpoint = "$S3"
keep_local = true
stop_wait = "1s"
T

start_daemon() {   # DIR LOG: starts the daemon on CPU 1, waits for "listening on"
	$E taskset -c 1 "$BIN" run --config "$OUT/c.toml" --dir "$1" 2>"$2" &
	DAEMON=$!
	for _ in $(seq 200); do grep -q "listening on" "$2" && return; sleep 0.05; done
	echo "daemon did not start: $(cat "$2")" >&2; exit 1
}
stop_daemon() { kill -TERM "$DAEMON"; wait "$DAEMON" || true; }
journal() { find "$1/.uploads" -type f 2>/dev/null | wc -l; }
vxgen() { $E taskset -c 0 "$OUT/bench/vxgen" -d 127.0.0.1 -S 127.0.0.1 "$@" >/dev/null; }
loss() {   # DIR: unique stamps of VNI 43 out of 1M
	"$OUT/bench/pcapcount" -e 1000000 $(find "$1/43" -name '*.pcap') 2>&1 | sed -n 's/.*unique=\([0-9]*\).*/\1/p' | head -1
}

# 1. the set to upload, journaled while S3 is down
start_daemon "$OUT/d" "$OUT/d1.log"
vxgen -n "$FILES_N" -s 1400 -r 100000 -v 42
sleep 1
stop_daemon
bytes=$(find "$OUT/d" -name '*.pcap' -printf '%s\n' | awk '{ s += $1 } END { print s }')
files=$(find "$OUT/d" -name '*.pcap' | wc -l)
echo "set: $files files, $bytes bytes, $(journal "$OUT/d") journaled"
cp -a "$OUT/d" "$OUT/d4"

$E moto_server -H 127.0.0.1 -p $PORT >"$OUT/moto.log" 2>&1 &
MOTO=$!
for _ in $(seq 100); do $E curl -s -o /dev/null "$S3" && break; sleep 0.1; done
$E aws --endpoint-url "$S3" s3 mb s3://bench >/dev/null

# 2. mirrorcap uploads the journaled set
t0=$(date +%s.%N)
start_daemon "$OUT/d" "$OUT/d2.log"
while (($(journal "$OUT/d") > 0)); do sleep 0.05; done
t1=$(date +%s.%N)
stop_daemon
echo "mirrorcap: $(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f s, %.1f MB/s", z - a, b / (z - a) / 1e6 }')"
stored=$($E aws --endpoint-url "$S3" s3 ls --recursive s3://bench/mc/ | wc -l)
echo "objects under mc/: $stored"

# 3. the aws CLI, same files, same server
t0=$(date +%s.%N)
$E aws --endpoint-url "$S3" s3 cp --recursive --quiet --exclude '.uploads/*' "$OUT/d" s3://bench/cli/
t1=$(date +%s.%N)
echo "aws s3 cp: $(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f s, %.1f MB/s", z - a, b / (z - a) / 1e6 }')"

# 4. capture loss at 128 B / 200k pps, without and with uploads under way
start_daemon "$OUT/quiet" "$OUT/q.log"
vxgen -n 1000000 -s 128 -r 200000 -v 43
sleep 2
stop_daemon
echo "loss, no upload: $((1000000 - $(loss "$OUT/quiet"))) of 1000000"
start_daemon "$OUT/d4" "$OUT/d4.log"
vxgen -n 1000000 -s 128 -r 200000 -v 43
left=$(journal "$OUT/d4")
sleep 2
stop_daemon
echo "loss, uploading: $((1000000 - $(loss "$OUT/d4"))) of 1000000 ($left of $files uploads still pending when the stream ended)"
