#!/usr/bin/env bash
# geneve-live.sh - issue 14: mirrorcap's live loss and CPU per packet with
# GENEVE input (a Gateway Load Balancer's) next to direct VXLAN, in the
# same run, with the same sender, in run-peers.sh's topology: netns bsnd
# (sender, CPU 0) -> veth -> netns brcv (mirrorcap, CPU 1, RPS on CPU 1).
#
# Both streams are the same vxgen capture (sequence-stamped, N frames of
# SIZE bytes, VNI 42, 1024 inner flows): sent as is to listen (4789), and
# wrapped by geneve_wrap.py (GENEVE with the three Amazon options) to
# geneve_listen (6081), each by examples/gwlb_send at RATE packets/s.
# pcapcount checks the daemon's files (unique sequence stamps); CPU is the
# daemon's utime+stime over the run.
#
# Usage (root, from the repository): benchmarks/geneve-live.sh
# Environment: N=1000000 SIZE=128 RATES="100000 200000" REPEAT=2 RECV_BUFFER=32MiB
#   BENCH=../shared/bench (vxgen, pcapcount) OUT=/var/tmp/mcgeneve
set -eu -o pipefail

N=${N:-1000000} SIZE=${SIZE:-128} RATES=${RATES:-"100000 200000"} REPEAT=${REPEAT:-2}
BENCH=${BENCH:-../shared/bench} OUT=${OUT:-/var/tmp/mcgeneve}
BIN=$PWD/target/release/mirrorcap SEND=$PWD/target/release/examples/gwlb_send
SNS=bsnd RNS=brcv SND_IP=198.18.0.1 RCV_IP=198.18.0.2

cargo build --release --example gwlb_send >/dev/null 2>&1
mkdir -p "$OUT"
if [[ ! -x $BENCH/vxgen || ! -x $BENCH/pcapcount ]]; then   # built from ../shared/bench's sources
	rm -rf "$OUT/bench" && cp -r "$BENCH" "$OUT/bench" && make -s -C "$OUT/bench" >/dev/null
	BENCH=$OUT/bench
fi
if [[ ! -s $OUT/vx-$N-$SIZE.pcap ]]; then
	"$BENCH/vxgen" -n "$N" -s "$SIZE" -v 42 -f 1024 -S $SND_IP -d $RCV_IP -w "$OUT/vx-$N-$SIZE.pcap" >/dev/null
	python3 benchmarks/geneve_wrap.py "$OUT/vx-$N-$SIZE.pcap" "$OUT/gv-$N-$SIZE.pcap"
fi

ip netns del $SNS 2>/dev/null || true
ip netns del $RNS 2>/dev/null || true
trap 'ip netns del $SNS 2>/dev/null; ip netns del $RNS 2>/dev/null' EXIT
ip netns add $SNS
ip netns add $RNS
ip -n $SNS link add vxs type veth peer name vxr netns $RNS
for ns in $SNS $RNS; do
	ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	ip -n $ns link set lo up
done
ip -n $SNS addr add $SND_IP/30 dev vxs
ip -n $RNS addr add $RCV_IP/30 dev vxr
ip -n $SNS link set vxs mtu 9000 up
ip -n $RNS link set vxr mtu 9000 up
ip -n $SNS neigh replace $RCV_IP lladdr "$(ip netns exec $RNS cat /sys/class/net/vxr/address)" dev vxs nud permanent
ip -n $RNS neigh replace $SND_IP lladdr "$(ip netns exec $SNS cat /sys/class/net/vxs/address)" dev vxr nud permanent
ip netns exec $RNS sh -c 'for q in /sys/class/net/vxr/queues/rx-*/rps_cpus; do printf 2 > $q; done'

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
printf 'listen = "%s:4789"\ngeneve_listen = "%s:6081"\nworkers = 1\nrecv_buffer = "%s"\n' $RCV_IP $RCV_IP "${RECV_BUFFER:-32MiB}" > "$OUT/c.toml"
echo "mode,rate,sent,captured,loss_pct,dups,cpu_s,ns_per_pkt"
for rep in $(seq "$REPEAT"); do
	for rate in $RATES; do
		for mode in direct geneve; do
			rm -rf "$OUT/run"
			ip netns exec $RNS taskset -c 1 "$BIN" run --config "$OUT/c.toml" --dir "$OUT/run" 2>"$OUT/daemon.log" &
			pid=$!
			for _ in $(seq 100); do grep -q "listening on" "$OUT/daemon.log" && break; sleep 0.05; done
			sleep 0.5
			c0=$(cpu_ticks $pid)
			if [[ $mode == direct ]]; then
				sent=$(ip netns exec $SNS taskset -c 0 "$SEND" $RCV_IP:4789 "$OUT/vx-$N-$SIZE.pcap" -r "$rate")
			else
				sent=$(ip netns exec $SNS taskset -c 0 "$SEND" $RCV_IP:6081 "$OUT/gv-$N-$SIZE.pcap" -r "$rate")
			fi
			sleep 2
			c1=$(cpu_ticks $pid)
			kill -TERM $pid
			wait $pid || true
			n=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$sent")
			count=$("$BENCH/pcapcount" -e "$n" $(find "$OUT/run" -name '*.pcap') 2>&1 || true)
			uniq=$(sed -n 's/.*unique=\([0-9]*\).*/\1/p' <<<"$count" | head -1)
			dups=$(sed -n 's/.*dups=\([0-9]*\).*/\1/p' <<<"$count" | head -1)
			tck=$(getconf CLK_TCK)
			awk -v m=$mode -v r=$rate -v s="$n" -v u="${uniq:-0}" -v d="${dups:-0}" -v c=$((c1 - c0)) -v t=$tck \
				'BEGIN { cs = c / t; printf "%s,%s,%d,%d,%.3f,%d,%.2f,%.0f\n", m, r, s, u, 100 * (s - u) / s, d, cs, u ? cs * 1e9 / u : 0 }'
		done
	done
done
