#!/usr/bin/env python3
"""Wraps a capture of direct VXLAN mirror traffic in GENEVE, as a Gateway
Load Balancer endpoint delivers it to the appliances behind it (issue 14):

    Ethernet / IPv4 GWLB -> appliance / UDP 6081 / GENEVE + the three Amazon
    options / the original IP packet (IP / UDP 4789 / VXLAN / frame)

GENEVE: version 0, protocol type 0x0800 (or 0x86DD for an IPv6 record),
Opt Len 8 (32 bytes of options, class 0x0108): type 1 endpoint ID (8 bytes),
type 2 attachment ID (8 bytes), type 3 flow cookie (4 bytes). 68 bytes more
per packet than direct (outer IPv4 20 + UDP 8 + GENEVE 8 + options 32, the
inner IP/UDP being the original outer one), and the original record's
Ethernet header replaced by the new one.

Input: a classic pcap (microsecond or nanosecond, either byte order) of
Ethernet records, e.g. `vxgen -w`. Output: a classic pcap with the same
timestamps and resolution; captured and original lengths grow by the same
amount. Records that are not IPv4/IPv6 over Ethernet are copied unchanged.

    benchmarks/geneve_wrap.py IN.pcap OUT.pcap [--endpoint HEX] [--endpoints N]

`--endpoints N` spreads records round-robin over N endpoint IDs
(HEX, HEX+1, ...), so sessions multiply by N; the default is one.
Standard library only.
"""

import argparse
import struct
import sys

GWLB_SRC = bytes([198, 18, 0, 101])  # the GWLB node (outer source)
APPLIANCE = bytes([198, 18, 0, 2])  # the appliance (outer destination)
OUTER_MACS = bytes.fromhex("0200c6120002" "0200c6120065")
ATTACHMENT = 0x0A0B0C0D0E0F1011
FLOW_COOKIE = 0xC0FFEE01


def ip_checksum(h):
    s = sum(struct.unpack("!10H", h))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def aws_options(endpoint):
    return (
        struct.pack("!HBBQ", 0x0108, 1, 2, endpoint)
        + struct.pack("!HBBQ", 0x0108, 2, 2, ATTACHMENT)
        + struct.pack("!HBBI", 0x0108, 3, 1, FLOW_COOKIE)
    )


def headers(ethertype, inner_wire_len, options, ident, sport):
    """Outer Ethernet/IPv4/UDP 6081 and GENEVE for an inner IP packet of
    `inner_wire_len` bytes on the wire."""
    geneve = struct.pack("!BBHI", len(options) // 4, 0, ethertype, 0) + options
    udp_len = 8 + len(geneve) + inner_wire_len
    total = 20 + udp_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total & 0xFFFF, ident & 0xFFFF,
                     0x4000, 64, 17, 0, GWLB_SRC, APPLIANCE)
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", sport, 6081, udp_len & 0xFFFF, 0)
    return OUTER_MACS + b"\x08\x00" + ip + udp + geneve


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--endpoint", default="0123456789abcdef",
                    help="GWLB endpoint ID in hex (shown as vpce-<17 hex digits>)")
    ap.add_argument("--endpoints", type=int, default=1)
    a = ap.parse_args()
    base = int(a.endpoint, 16)
    opts = [aws_options((base + i) & 0xFFFFFFFFFFFFFFFF) for i in range(a.endpoints)]

    with open(a.input, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        sys.exit(f"{a.input}: not a classic pcap (magic {magic.hex()}); pcapng is not read here")
    linktype = struct.unpack(e + "I", data[20:24])[0] & 0xFFFF
    if linktype != 1:
        sys.exit(f"{a.input}: link type {linktype}, expected 1 (Ethernet)")
    rec = struct.Struct(e + "IIII")
    out = [data[:16] + struct.pack(e + "II", 0x40000, 1)]  # snaplen 256 KiB
    off, n, wrapped = 24, 0, 0
    while off + 16 <= len(data):
        ts_s, ts_frac, incl, orig = rec.unpack_from(data, off)
        body = data[off + 16:off + 16 + incl]
        off += 16 + incl
        et = struct.unpack("!H", body[12:14])[0] if len(body) >= 14 else 0
        if et in (0x0800, 0x86DD):
            o = opts[n % len(opts)]
            h = headers(et, orig - 14, o, n, 49152 + (n * 2654435761 >> 18) % 16384)
            body = h + body[14:]
            grow = len(h) - 14
            incl += grow
            orig += grow
            wrapped += 1
        out.append(rec.pack(ts_s, ts_frac, incl, orig))
        out.append(body)
        n += 1
    with open(a.output, "wb") as f:
        f.write(b"".join(out))
    print(f"geneve_wrap: records={n} wrapped={wrapped} endpoints={len(opts)} file={a.output}")


if __name__ == "__main__":
    main()
