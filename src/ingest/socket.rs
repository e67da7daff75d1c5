//! Stage 1, live: the UDP socket on port 4789 and batched receive
//! (blocking `recvmmsg` with `MSG_WAITFORONE`, one thread per socket).
//!
//! In: datagrams from the kernel. Out: `(payload, RecvMeta)` pairs handed to
//! a callback, a batch per `recvmmsg` call. Receive buffers (batch ×
//! [`SLOT_LEN`]) and control-message space are allocated once, at bind, and
//! reused; a batch allocates nothing.
//!
//! Kernel features used: `SO_TIMESTAMPNS` (each datagram's receive time, so
//! records carry the time the kernel got the packet, not the time the daemon
//! got to it), `SO_RXQ_OVFL` (the kernel's count of datagrams dropped because
//! the socket buffer was full, reported in the summary), and a large
//! `SO_RCVBUF` (raised with `SO_RCVBUFFORCE` when `net.core.rmem_max` caps it
//! and the process may; otherwise the size obtained and the sysctl that would
//! lift it are logged). A datagram larger than a slot (it cannot be: a slot
//! holds the largest UDP payload) would be counted as `datagram_truncated`.
//! A plain UDP socket: no root and no capability.
//!
//! The `recvmmsg` headers (`mmsghdr`, `iovec`) are built on the stack at
//! each call from slices borrowed from the receiver, as quinn-udp does: no
//! raw pointer outlives a call, so the receiver is `Send` by its fields.
//! Control messages land in [`cmsg::Aligned`] buffers and are read with the
//! safe [`cmsg::Iter`].

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use libc::{
    BPF_A, BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP,
    BPF_K, BPF_LD, BPF_LDX, BPF_LSH, BPF_MEM, BPF_MISC, BPF_MOD, BPF_RET, BPF_RSH, BPF_ST, BPF_TAX,
    BPF_W, BPF_X,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::ingest::cmsg;
use crate::pipeline::RecvMeta;

/// Bytes per receive slot: more than the largest UDP payload (65,527).
pub const SLOT_LEN: usize = 65_536;
pub use crate::config::{DEFAULT_BATCH, DEFAULT_RECV_BUFFER};
/// Most datagrams per receive call (the batch setting is clamped to it).
pub const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot set socket option {option} on UDP {addr}: {source}")]
    Option {
        addr: SocketAddr,
        option: &'static str,
        source: io::Error,
    },
}

/// A bound, blocking UDP socket (with a receive timeout) and its receive
/// buffers: one slot, one aligned control buffer and one address per
/// datagram of a batch.
pub struct Receiver {
    sock: UdpSocket,
    batch: usize,
    bufs: Vec<u8>,
    cmsgs: Vec<cmsg::Aligned>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Last SO_RXQ_OVFL value the kernel reported (cumulative), and the
    /// part of it already counted.
    kernel_drops: u32,
    kernel_drops_counted: u32,
}

impl Receiver {
    /// Binds `addr` and sets the socket options. `recv_buffer` is the
    /// SO_RCVBUF size wanted; `reuse_port` joins a SO_REUSEPORT group (one
    /// socket per worker).
    pub fn bind(
        addr: SocketAddr,
        recv_buffer: usize,
        batch: usize,
        reuse_port: bool,
    ) -> Result<Receiver, SocketError> {
        let domain = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let bind_err = |source| SocketError::Bind { addr, source };
        let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(bind_err)?;
        let opt = |option, source| SocketError::Option {
            addr,
            option,
            source,
        };
        set_int(&sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
            .map_err(|e| opt("SO_TIMESTAMPNS", e))?;
        if let Err(e) = set_int(&sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1) {
            tracing::debug!(error = %e, "SO_RXQ_OVFL not available; kernel drops are not counted");
        }
        set_recv_buffer(&sock, recv_buffer);
        sock.set_nonblocking(false)
            .map_err(|e| opt("O_NONBLOCK", e))?;
        if reuse_port {
            sock.set_reuse_port(true)
                .map_err(|e| opt("SO_REUSEPORT", e))?;
        }
        sock.bind(&addr.into()).map_err(bind_err)?;
        let batch = batch.clamp(1, MAX_BATCH);
        Ok(Receiver {
            sock: sock.into(),
            batch,
            bufs: vec![0u8; batch * SLOT_LEN],
            cmsgs: vec![cmsg::Aligned::default(); batch],
            // SAFETY: all-zero is a valid sockaddr_storage.
            addrs: vec![unsafe { zeroed() }; batch],
            kernel_drops: 0,
            kernel_drops_counted: 0,
        })
    }

    /// Makes the kernel hand each mirror session to one socket of the
    /// SO_REUSEPORT group of `workers` sockets: a classic BPF program
    /// (SO_ATTACH_REUSEPORT_CBPF) picks the socket from the mirrored ENI's
    /// address plus the VXLAN VNI (not the reserved byte after it, which
    /// the session key ignores too), instead of the default 4-tuple
    /// hash (AWS varies the outer source port per inner flow, which would
    /// spread one session over every worker). So a session's packets stay
    /// on one worker, in receive order, and go to one file set.
    ///
    /// `geneve`: the group receives GENEVE (`geneve_listen`). The outer
    /// source is then a Gateway Load Balancer node, and the mirrored ENI's
    /// address and the VNI are inside, after the GENEVE options (whose
    /// length varies) and the inner IPv4 header (whose length varies); an
    /// inner IPv6 packet is steered by its source alone (the VNI follows
    /// extension headers a BPF program cannot walk, and a session must not
    /// move with them). The endpoint ID is left out of the hash: the key
    /// (endpoint, source, VNI) is finer than (source, VNI), so a session
    /// still lands on one worker. Malformed GENEVE goes to the first
    /// socket, to be counted there.
    pub fn steer_sessions(&self, workers: u32, geneve: bool) -> io::Result<()> {
        let prog = if geneve {
            geneve_steering(workers)
        } else {
            vxlan_steering(workers)
        };
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: a valid program for the duration of the call.
        let r = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&fprog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as u32,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Datagrams per receive call.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// How long one receive call may wait for the first datagram.
    pub fn set_receive_timeout(&self, t: std::time::Duration) -> io::Result<()> {
        self.sock.set_read_timeout(Some(t))
    }

    /// Whether a receive call returns `WouldBlock` at once when nothing is
    /// queued (used to read the socket empty on stop).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.sock.set_nonblocking(on)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Datagrams the kernel dropped for this socket because its buffer was
    /// full, reported since the last call.
    pub fn new_kernel_drops(&mut self) -> u64 {
        let new = self.kernel_drops.wrapping_sub(self.kernel_drops_counted);
        self.kernel_drops_counted = self.kernel_drops;
        u64::from(new)
    }

    /// One `recvmmsg(MSG_WAITFORONE)` call: waits for the first datagram
    /// (up to the receive timeout), then takes what else is queued, up to a
    /// batch. Calls `f` for each datagram; returns how many there were, or
    /// `WouldBlock` when the timeout passed with none.
    pub fn recv_batch(&mut self, mut f: impl FnMut(&[u8], &RecvMeta, bool)) -> io::Result<usize> {
        let n = self.batch;
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        let slots = self.bufs.chunks_exact_mut(SLOT_LEN);
        let parts = slots.zip(&mut self.cmsgs).zip(&mut self.addrs);
        for (i, ((buf, ctl), addr)) in parts.enumerate() {
            let iov = iovs[i].write(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctl.0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = cmsg::LEN as _;
            hdrs[i].write(h);
        }
        // SAFETY: the first `n` headers are initialised and point into
        // slots, control buffers and addresses borrowed from self for the
        // call, with their lengths; nothing keeps the pointers after it.
        let got = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                n as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for (i, h) in hdrs.iter().enumerate().take(got.min(n)) {
            // SAFETY: initialised above (i < n).
            let h = unsafe { h.assume_init_ref() };
            let len = (h.msg_len as usize).min(SLOT_LEN);
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let mut ts = None;
            for c in cmsg::Iter::new(&self.cmsgs[i], h.msg_hdr.msg_controllen) {
                ts = ts.or(c.timestamp_ns());
                if let Some(d) = c.rxq_overflow() {
                    self.kernel_drops = d;
                }
            }
            let source = sockaddr_ip(&self.addrs[i]);
            let meta = RecvMeta {
                source,
                peer: source,
                endpoint: None,
                timestamp_ns: ts.unwrap_or_else(now_ns),
                orig_len: 0,
            };
            f(
                &self.bufs[i * SLOT_LEN..i * SLOT_LEN + len],
                &meta,
                truncated,
            );
        }
        Ok(got)
    }
}

/// One classic BPF instruction.
const fn ins(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The VNI of the VXLAN word 4..8, without the reserved byte after it: the
/// session key has the VNI only (reserved bits are ignored), so a sender
/// varying that byte within a session must not move it to another worker.
const VNI_MASK: u32 = 0xffff_ff00;

/// Steering for VXLAN (`listen`): (outer source address, or the last word
/// of an IPv6 one) + (the VNI, UDP payload bytes 4..7), modulo `workers`.
/// Loads before the UDP payload go through `SKF_NET_OFF` (the network
/// header).
fn vxlan_steering(workers: u32) -> Vec<libc::sock_filter> {
    const SKF_NET_OFF: u32 = (-0x100000i32) as u32;
    vec![
        // A = IP version
        ins(BPF_LD | BPF_B | BPF_ABS, 0, 0, SKF_NET_OFF),
        ins(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),
        ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 4),
        // IPv4: the source address
        ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_NET_OFF + 12),
        ins(BPF_JMP | BPF_JA, 0, 0, 1),
        // IPv6: the last word of the source address
        ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_NET_OFF + 20),
        ins(BPF_MISC | BPF_TAX, 0, 0, 0),
        // + VNI: UDP payload bytes 4..7 (the reserved byte 7 masked off)
        ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, 4),
        ins(BPF_ALU | BPF_AND | BPF_K, 0, 0, VNI_MASK),
        ins(BPF_ALU | BPF_ADD | BPF_X, 0, 0, 0),
        ins(BPF_ALU | BPF_MOD | BPF_K, 0, 0, workers),
        ins(BPF_RET | BPF_A, 0, 0, 0),
    ]
}

/// Steering for GENEVE (`geneve_listen`): (inner IPv4 source + the VXLAN
/// VNI), or (the last word of an inner IPv6 source) alone, modulo
/// `workers`. Offsets are from the UDP payload (the GENEVE header: 8 bytes
/// and the options); X holds the lengths that vary. IPv6 leaves the VNI out: it
/// sits after the extension headers, which a program without loops cannot
/// walk, and a fixed offset would read the UDP header of a packet with one
/// (its length varies per packet, so one session went to every worker).
/// Not IPv4 or IPv6 inside: socket 0.
fn geneve_steering(workers: u32) -> Vec<libc::sock_filter> {
    vec![
        // 0-3: X = option bytes (Opt Len, low 6 bits of byte 0, x 4)
        ins(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0),
        ins(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x3f),
        ins(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 2),
        ins(BPF_MISC | BPF_TAX, 0, 0, 0),
        // 4-6: the inner IP version; not 4: to 16
        ins(BPF_LD | BPF_B | BPF_IND, 0, 0, 8),
        ins(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),
        ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 9, 4),
        // 7-8: IPv4: M[0] = source (inner header byte 12)
        ins(BPF_LD | BPF_W | BPF_IND, 0, 0, 8 + 12),
        ins(BPF_ST, 0, 0, 0),
        // 9-13: X += IHL x 4
        ins(BPF_LD | BPF_B | BPF_IND, 0, 0, 8),
        ins(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x0f),
        ins(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 2),
        ins(BPF_ALU | BPF_ADD | BPF_X, 0, 0, 0),
        ins(BPF_MISC | BPF_TAX, 0, 0, 0),
        // 14-15: A = VNI word (after GENEVE 8, IP, UDP 8: VXLAN bytes 4..8); to 20
        ins(BPF_LD | BPF_W | BPF_IND, 0, 0, 8 + 8 + 4),
        ins(BPF_JMP | BPF_JA, 0, 0, 4),
        // 16: IPv6? else to 25
        ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 8, 6),
        // 17-19: M[0] = last word of the source (bytes 20..24), A = 0
        ins(BPF_LD | BPF_W | BPF_IND, 0, 0, 8 + 20),
        ins(BPF_ST, 0, 0, 0),
        ins(BPF_LD | BPF_IMM, 0, 0, 0),
        // 20-24: (source + VNI) mod workers
        ins(BPF_ALU | BPF_AND | BPF_K, 0, 0, VNI_MASK),
        ins(BPF_LDX | BPF_MEM, 0, 0, 0),
        ins(BPF_ALU | BPF_ADD | BPF_X, 0, 0, 0),
        ins(BPF_ALU | BPF_MOD | BPF_K, 0, 0, workers),
        ins(BPF_RET | BPF_A, 0, 0, 0),
        // 25: not IP inside
        ins(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

/// The wall clock in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn sockaddr_ip(a: &libc::sockaddr_storage) -> IpAddr {
    match i32::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(a as *const _ as *const libc::sockaddr_in) };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(a as *const _ as *const libc::sockaddr_in6) };
            let v6 = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

fn set_int(sock: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a plain int option on an open socket.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for `want` bytes of receive buffer; logs what was obtained.
fn set_recv_buffer(sock: &Socket, want: usize) {
    let _ = sock.set_recv_buffer_size(want);
    // Linux doubles the value asked for (bookkeeping overhead) and reports
    // the doubled figure.
    let got = sock.recv_buffer_size().unwrap_or(0) / 2;
    if got >= want {
        tracing::info!(bytes = got, "socket receive buffer");
        return;
    }
    let forced = set_int(
        sock,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        want.min(i32::MAX as usize) as i32,
    )
    .is_ok();
    let got = sock.recv_buffer_size().unwrap_or(0) / 2;
    if forced && got >= want {
        tracing::info!(bytes = got, "socket receive buffer (SO_RCVBUFFORCE)");
    } else {
        tracing::warn!(
            wanted = want,
            obtained = got,
            "socket receive buffer capped by net.core.rmem_max; to lift it: sysctl -w net.core.rmem_max={want}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Over loopback: every datagram gets the kernel's receive time, and
    /// datagrams dropped on a full socket buffer come back through the
    /// SO_RXQ_OVFL counter.
    #[test]
    fn loopback_timestamps_and_overflow_counter() {
        let mut rx = Receiver::bind("127.0.0.1:0".parse().unwrap(), 4096, 8, false).unwrap();
        rx.set_receive_timeout(Duration::from_millis(200)).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = now_ns();
        // Far more than a 4 KiB buffer holds: most are dropped.
        for i in 0..200u32 {
            let mut d = vec![0u8; 1000];
            d[..4].copy_from_slice(&i.to_be_bytes());
            tx.send_to(&d, to).unwrap();
        }
        let mut seen = 0;
        rx.set_nonblocking(true).unwrap();
        loop {
            let r = rx.recv_batch(|data, meta, truncated| {
                assert_eq!(data.len(), 1000);
                assert!(!truncated);
                assert_eq!(meta.source, IpAddr::V4(Ipv4Addr::LOCALHOST));
                assert!(meta.timestamp_ns >= before && meta.timestamp_ns <= now_ns());
                seen += 1;
            });
            match r {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(seen > 0 && seen < 200, "received {seen} of 200");
        // The drop count rides on the next datagram queued.
        rx.set_nonblocking(false).unwrap();
        tx.send_to(b"last", to).unwrap();
        let mut last = 0;
        rx.recv_batch(|data, _, _| last = data.len()).unwrap();
        assert_eq!(last, 4);
        assert_eq!(rx.new_kernel_drops(), 200 - seen as u64);
        assert_eq!(rx.new_kernel_drops(), 0);
    }
}
