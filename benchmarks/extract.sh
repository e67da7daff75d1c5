#!/bin/sh
# Issue 17 item 5: `mirrorcap extract` against `mergecap` on the same local
# inputs: 1M records (128-byte inner frames, 1 us apart, 1024 inner flows)
# split by flow between two targets, each written by `mirrorcap replay`
# with rotate_packets = 50000 (2 dirs x 10 files), then merged whole.
#
#   benchmarks/extract.sh [WORKDIR]   (default /var/tmp/mcextract; output on /dev/shm)
set -eu
W=${1:-/var/tmp/mcextract}
MC=${MC:-./target/release/mirrorcap}
mkdir -p "$W"
if [ ! -d "$W/a" ]; then
python3 - "$W" <<'PY'
import struct, sys
w = sys.argv[1]
T0 = 1_700_000_000 * 10**9
def frame(i, flow):
    eth = bytes([2,0,0,0,0,2, 2,0,0,0,0,1, 8,0])
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 114, 0, 0x4000, 64, 17, 0,
                     bytes([10,0,0,1]), bytes([10,0,flow >> 8, flow & 255]))
    udp = struct.pack('!HHHH', 40000 + flow, 53, 94, 0)
    return eth + ip + udp + struct.pack('!Q', i) + bytes(78)
def outer(inner):
    vx = bytes([8,0,0,0, 0,0,7,0]) + inner
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28 + len(vx), 0, 0, 255, 17, 0,
                     bytes([10,0,1,5]), bytes([172,31,17,188]))
    udp = struct.pack('!HHHH', 65000, 4789, 8 + len(vx), 0)
    return bytes([10,0,0,0,0,2, 10,0,0,0,0,1, 8,0]) + ip + udp + vx
hdr = struct.pack('<IHHiIII', 0xa1b23c4d, 2, 4, 0, 0, 262144, 1)
outs = [open(f'{w}/vx-{t}.pcap', 'wb') for t in 'ab']
for o in outs:
    o.write(hdr)
for i in range(1_000_000):
    flow = i % 1024
    p = outer(frame(i, flow))
    ts = T0 + i * 1000
    outs[(flow * 2654435761 >> 7) & 1].write(
        struct.pack('<IIII', ts // 10**9, ts % 10**9, len(p), len(p)) + p)
for o in outs:
    o.close()
PY
printf '[output]\nrotate_packets = 50000\nfsync = false\n' > "$W/c.toml"
for t in a b; do "$MC" replay --config "$W/c.toml" --dir "$W/$t" "$W/vx-$t.pcap" 2>/dev/null; done
fi
FILES=$(find "$W/a" "$W/b" -name '*.pcap' | sort | tr '\n' ' ')
echo "$(echo $FILES | wc -w) files"
hyperfine -w 1 -r 3 -N --prepare 'rm -f /dev/shm/mcx.pcap /dev/shm/mgc.pcapng' \
  -n extract "$MC extract -w /dev/shm/mcx.pcap $W/a $W/b" \
  -n mergecap "mergecap -w /dev/shm/mgc.pcapng $FILES" \
  --export-json "$W/result.json"
python3 - "$W/result.json" <<'PY'
import json, statistics, sys
r = {x['command']: statistics.median(x['times']) for x in json.load(open(sys.argv[1]))['results']}
print(f"median: extract {r['extract']*1000:.0f} ms, mergecap {r['mergecap']*1000:.0f} ms, "
      f"mergecap/extract {r['mergecap']/r['extract']:.2f}")
PY
