#!/usr/bin/env bash
# stream-peers.sh - issue 15: run-peers.sh (../shared/bench, unchanged) with
# the peer "mirrorcap" twice per pass: the daemon alone, then the daemon
# with one live subscriber following every session (`mirrorcap stream -w
# /dev/null`, no selection), started by benchmarks/stream-subscribed (the
# MIRRORCAP_BIN of the second run) before the traffic. run-peers counts the
# CPU of the receiver's whole process tree, so the subscribed row includes
# the subscriber's CPU as well as the daemon's; both run pinned to the
# receiver's CPU. Loss is from the daemon's files (vxgen's sequence stamps).
# Each subscribed run appends the subscriber's own summary (frames written,
# frames not delivered to it) to $OUT/stream.log.
#
# Usage (root, from the repository): benchmarks/stream-peers.sh
# Environment: N=1000000 SIZE=128 RATES=200000 REPEAT=3 BENCH=../shared/bench
#   OUT=/var/tmp/mcstream (CSV: $OUT/peers.csv); other run-peers variables
#   (QUIET_PCT, RPS, ...) pass through.
set -eu -o pipefail

N=${N:-1000000} SIZE=${SIZE:-128} RATES=${RATES:-200000} REPEAT=${REPEAT:-3}
BENCH=${BENCH:-../shared/bench} OUT=${OUT:-/var/tmp/mcstream}
cargo build --release >/dev/null 2>&1
mkdir -p "$OUT"
rm -rf "$OUT/bench" && cp -r "$BENCH" "$OUT/bench"   # run-peers builds its tools beside itself
printf 'control_socket = "%s"\n' "$OUT/control.sock" >"$OUT/c.toml"
: >"$OUT/stream.log"
export MIRRORCAP_ARGS="--config $OUT/c.toml" STREAM_SOCKET=$OUT/control.sock STREAM_LOG=$OUT/stream.log
export MIRRORCAP_REAL=$PWD/target/release/mirrorcap
for rep in $(seq "$REPEAT"); do
	for bin in "$MIRRORCAP_REAL" "$PWD/benchmarks/stream-subscribed"; do
		MIRRORCAP_BIN=$bin "$OUT/bench/run-peers.sh" -n "$N" -s "$SIZE" -r "$RATES" -p mirrorcap \
			-o "$OUT/run" -c "$OUT/peers.csv" >/dev/null
		echo "pass $rep: $(basename "$bin") done; $(tail -1 "$OUT/peers.csv")"
	done
done
