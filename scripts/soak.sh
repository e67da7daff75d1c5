#!/usr/bin/env bash
# Soak: mirrorcap under steady load for a long time (issue 12's check).
# vxgen (../shared/bench) sends RATE datagrams/s over loopback from
# 127.0.0.2 to the daemon for DUR seconds, VNIs 1..SESSIONS (one session
# each); the daemon rotates every 10 s and keeps 3 files per session.
# Every 30 s the daemon's RSS and open descriptors are sampled into
# OUT/samples.csv; at the end its summary is kept (OUT/summary.txt) and
# every file left is read by capinfos and tshark.
#
#   scripts/soak.sh                      # 600 s, 20,000/s, 100 sessions
#   DUR=60 RATE=5000 scripts/soak.sh     # a short one
#
# Environment: MIRRORCAP_BIN (target/release/mirrorcap), DUR (600), RATE
# (20000), SESSIONS (100), SIZE (128, inner frame bytes), OUT (a new temp
# dir), BENCH (../shared/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MIRRORCAP_BIN:-target/release/mirrorcap}
DUR=${DUR:-600}
RATE=${RATE:-20000}
SESSIONS=${SESSIONS:-100}
SIZE=${SIZE:-128}
BENCH=${BENCH:-../shared/bench}
OUT=${OUT:-$(mktemp -d /var/tmp/mirrorcap-soak.XXXXXX)}
mkdir -p "$OUT"
tools="$OUT/tools"
mkdir -p "$tools"
gcc -O2 -Wall -o "$tools/vxgen" "$BENCH/vxgen.c"

cat >"$OUT/soak.toml" <<TOML
[output]
rotate_interval = "10s"
max_files = 3
TOML
"$BIN" run --listen 127.0.0.1:0 --dir "$OUT/cap" --config "$OUT/soak.toml" 2>"$OUT/daemon.log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 100); do
  port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$OUT/daemon.log" | head -1 | cut -d: -f2 || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$OUT/daemon.log"; echo "soak: the daemon did not start" >&2; exit 1; }

echo "secs,rss_kib,hwm_kib,fds,files_on_disk" >"$OUT/samples.csv"
sample() {
  local rss hwm fds files
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM/{print $2}' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  files=$(find "$OUT/cap" -type f | wc -l)
  echo "$1,$rss,$hwm,$fds,$files" >>"$OUT/samples.csv"
}
count=$((RATE * DUR))
"$tools/vxgen" -d 127.0.0.1 -p "$port" -S 127.0.0.2 -n "$count" -r "$RATE" \
  -T $((DUR + 60)) -s "$SIZE" -v "1-$SESSIONS" >"$OUT/vxgen.log" 2>&1 &
gen=$!
start=$(date +%s)
while kill -0 $gen 2>/dev/null; do
  sample $(($(date +%s) - start))
  for _ in $(seq 30); do kill -0 $gen 2>/dev/null || break; sleep 1; done
done
wait $gen || { cat "$OUT/vxgen.log"; exit 1; }
sleep 2
sample $(($(date +%s) - start))
kill -TERM $pid
wait $pid || true
trap - EXIT
sed -n '/datagrams received/,$p' "$OUT/daemon.log" >"$OUT/summary.txt"

# Every file left opens without a warning in capinfos and tshark.
find "$OUT/cap" -type f -name '*.pcap' | sort >"$OUT/files.txt"
bad=0
while read -r f; do
  if ! capinfos -c "$f" >/dev/null 2>"$OUT/err" || grep -qv 'Running as user' "$OUT/err"; then
    bad=$((bad + 1)); echo "capinfos: $f: $(cat "$OUT/err")"
  fi
  if ! tshark -r "$f" -T fields -e frame.number >/dev/null 2>"$OUT/err" || grep -qv 'Running as user' "$OUT/err"; then
    bad=$((bad + 1)); echo "tshark: $f: $(cat "$OUT/err")"
  fi
done <"$OUT/files.txt"
left=$(find "$OUT/cap" -type f -name '*.part' | wc -l)

cat "$OUT/vxgen.log"
cat "$OUT/summary.txt" | grep -v '^  vni '
echo "samples (secs,rss_kib,hwm_kib,fds,files_on_disk):"
cat "$OUT/samples.csv"
echo "files read: $(wc -l <"$OUT/files.txt"), unreadable: $bad, .part left: $left"
echo "output kept in $OUT"
[ "$bad" = 0 ] && [ "$left" = 0 ]
