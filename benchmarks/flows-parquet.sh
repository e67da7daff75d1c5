#!/usr/bin/env bash
# Issue 18: Parquet against gzip text flow records, from the same replay.
# Bytes per record, and DuckDB's time for the `mirrorcap flows` queries
# (sums by srcaddr/dstaddr, by dstport, rejected flows) over N records.
#
#   benchmarks/flows-parquet.sh            # N = 10M records (100k flows x 100 s)
#   FLOWS=10000 SECS=10 benchmarks/flows-parquet.sh    # a quick one
#
# The input is a pcap from ../shared/bench/vxgen (VXLAN, 64-byte inner
# TCP frames, FLOWS flows over 10 VNIs, FLOWS packets a second: every flow
# has one packet in every 1 s window, so FLOWS x SECS records). Needs gcc,
# python3 with duckdb (scripts/test installs it) and the release build.
# Run it on a quiet machine: the query times are wall-clock medians.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${FLOWS:-100000}
SECS=${SECS:-100}
RUNS=${RUNS:-5}
WORK=${WORK:-/var/tmp/flowbench}
VXGEN_SRC=${VXGEN_SRC:-../shared/bench/vxgen.c}
BIN=${BIN:-target/release/mirrorcap}
mkdir -p "$WORK"
[ -x "$BIN" ] || cargo build --release
gcc -O2 -o "$WORK/vxgen" "$VXGEN_SRC"
N=$((FLOWS * SECS))
"$WORK/vxgen" -n "$N" -f "$FLOWS" -N "$FLOWS" -r "$FLOWS" -s 64 -v 100-109 -w "$WORK/in.pcap" >&2

for mode in gzip parquet; do
  rm -rf "$WORK/$mode"
  cat > "$WORK/$mode.toml" <<TOML
[flows]
enabled = true
interval = "1s"
file_interval = "60s"
max_flows = 1000000
$mode = true
[[flows.session]]
source = "198.18.0.1"
account_id = "123456789012"
interface_id = "eni-0123456789abcdef0"
TOML
  start=$(date +%s.%N)
  "$BIN" replay --config "$WORK/$mode.toml" --dir "$WORK/$mode" "$WORK/in.pcap" 2> "$WORK/$mode.log"
  end=$(date +%s.%N)
  echo "replay $mode: $(echo "$end - $start" | bc) s" >&2
  # The capture files are not measured here.
  find "$WORK/$mode" -name '*.pcap' -delete
done

python3 - "$WORK" "$N" "$RUNS" <<'PY'
import duckdb, glob, os, statistics, sys, time
work, n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sources = {
    "gzip text": "read_csv('%s/gzip/flows/**/*.log.gz', delim=' ', header=true, nullstr='-', "
                 "columns={'version':'INTEGER','account-id':'VARCHAR','interface-id':'VARCHAR','srcaddr':'VARCHAR',"
                 "'dstaddr':'VARCHAR','srcport':'INTEGER','dstport':'INTEGER','protocol':'INTEGER','packets':'BIGINT',"
                 "'bytes':'BIGINT','start':'BIGINT','end':'BIGINT','action':'VARCHAR','log-status':'VARCHAR'})" % work,
    "parquet": "read_parquet('%s/parquet/flows/**/*.parquet')" % work,
}
queries = {
    "by srcaddr, dstaddr": "SELECT srcaddr, dstaddr, sum(bytes) AS b, sum(packets) FROM {src} GROUP BY ALL ORDER BY b DESC LIMIT 10",
    "by dstport": "SELECT dstport, sum(bytes) AS b, sum(packets) FROM {src} GROUP BY ALL ORDER BY b DESC LIMIT 10",
    "rejected flows": "SELECT count(*) FROM {src} WHERE action = 'REJECT'",
}
print("| | gzip text | parquet |")
print("|---|---|---|")
size = {}
for name, pat in (("gzip text", "gzip/flows/**/*.log.gz"), ("parquet", "parquet/flows/**/*.parquet")):
    files = glob.glob(os.path.join(work, pat), recursive=True)
    size[name] = (sum(os.path.getsize(f) for f in files), len(files))
con = duckdb.connect()
count = {k: con.sql("SELECT count(*) FROM " + s).fetchall()[0][0] for k, s in sources.items()}
print("| records | %d | %d |" % (count["gzip text"], count["parquet"]))
print("| files, bytes | %d, %d | %d, %d |" % (size["gzip text"][1], size["gzip text"][0], size["parquet"][1], size["parquet"][0]))
print("| bytes per record | %.2f | %.2f |" % (size["gzip text"][0] / count["gzip text"], size["parquet"][0] / count["parquet"]))
for q, sql in queries.items():
    times, answers = {}, {}
    for k, s in sources.items():
        t = []
        for _ in range(runs):
            t0 = time.perf_counter()
            answers[k] = con.sql(sql.format(src=s)).fetchall()
            t.append(time.perf_counter() - t0)
        times[k] = statistics.median(t)
    assert answers["gzip text"] == answers["parquet"], q
    print("| %s (s, median of %d) | %.3f | %.3f |" % (q, runs, times["gzip text"], times["parquet"]))
print("\nDuckDB %s, %d threads" % (duckdb.__version__, con.sql("SELECT current_setting('threads')").fetchall()[0][0]))
PY
