#!/usr/bin/env python3
"""Peak RSS of `mirrorcap run` with 1, 100 and 1000 concurrent sessions.

For each count N it starts the daemon on a loopback port (output under
/dev/shm), sends 200 datagrams per session (N VNIs from 127.0.0.2, 1400-byte
inner frames, interleaved so every session has an open file at once), waits
for the writer, reads VmHWM from /proc, and stops the daemon with SIGTERM.
Loopback only, bounded traffic.

usage: scripts/bench-rss.py [path/to/mirrorcap]
"""
import os, re, shutil, signal, socket, subprocess, sys, threading, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/mirrorcap"
PER_SESSION = 200


def frame(seq, size):
    eth = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0])
    ip_len = size - 14
    ip = bytes([0x45, 0, ip_len >> 8, ip_len & 255, 0, 0, 0x40, 0, 64, 17, 0, 0,
                10, 0, 0, 1, 10, 0, 0, 2])
    udp = bytes([0x9c, 0x40, 0, 53, (ip_len - 20) >> 8, (ip_len - 20) & 255, 0, 0])
    body = seq.to_bytes(8, "big")
    f = eth + ip + udp + body
    return f + bytes(size - len(f))


def run(n):
    out = "/dev/shm/mirrorcap-rss"
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen([BIN, "run", "--listen", "127.0.0.1:0", "--dir", out],
                         stderr=subprocess.PIPE, text=True)
    port = None
    while port is None:
        line = p.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    # Drain stderr while sending, so the daemon never blocks on the pipe.
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    body = frame(0, 1400)
    sent = 0
    for k in range(PER_SESSION):
        for vni in range(1, n + 1):
            hdr = bytes([8, 0, 0, 0, vni >> 16, (vni >> 8) & 255, vni & 255, 0])
            s.sendto(hdr + body, ("127.0.0.1", port))
            sent += 1
            if sent % 500 == 0:
                time.sleep(0.005)
    time.sleep(2)
    with open(f"/proc/{p.pid}/status") as f:
        status = f.read()
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    p.send_signal(signal.SIGTERM)
    p.wait()
    reader.join()
    err = "".join(lines)
    written = re.search(r"(\d+) frames written", err).group(1)
    drops = re.findall(r"^\s+(\d+) (?:dropped|skipped) (\S+)", err, re.M)
    kernel = re.search(r"(\d+) datagrams dropped by kernel", err).group(1)
    if drops or kernel != "0":
        print(f"  N={n}: kernel drops {kernel}, mirrorcap drops {drops}", file=sys.stderr)
    files = sum(len(fs) for _, _, fs in os.walk(out))
    shutil.rmtree(out, ignore_errors=True)
    return hwm, sent, int(written), files


print("| sessions | datagrams sent | frames written | files | peak RSS (VmHWM) |")
print("|---:|---:|---:|---:|---:|")
for n in (1, 100, 1000):
    hwm, sent, written, files = run(n)
    print(f"| {n} | {sent} | {written} | {files} | {hwm / 1024:.1f} MiB |")
