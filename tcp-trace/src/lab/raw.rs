//! Hand-made TCP segments for the scenarios that need a peer with no socket: a raw
//! socket (`SOCK_RAW`, `IPPROTO_TCP`: the kernel adds the IP header, we write the TCP
//! header and its checksum) sends them, and a packet socket (`AF_PACKET`, bound to
//! the lab's veth, which sees a segment before nftables may drop it) reads the
//! answers. Both must be opened in the namespace they are to work in.
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

const TCP_HEADER: usize = 20;
const IPPROTO_TCP: u8 = 6;

/// One TCP segment, as written on or read from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Segment {
    /// The sequence space it occupies (SYN and FIN count one each).
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32
            + u32::from(self.flags & SYN != 0)
            + u32::from(self.flags & FIN != 0)
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn add_bytes(sum: &mut u32, b: &[u8]) {
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        *sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = it.remainder() {
        *sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
}

/// The ones'-complement sum of the pseudo-header (RFC 793 for IPv4, RFC 8200 §8.1
/// for IPv6) and `tcp`, not yet complemented. `None` for mixed families.
fn pseudo_sum(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> Option<u32> {
    let mut sum = 0u32;
    let len = u32::try_from(tcp.len()).ok()?;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add_bytes(&mut sum, &s.octets());
            add_bytes(&mut sum, &d.octets());
            sum += u32::from(IPPROTO_TCP);
            sum += len & 0xffff;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            add_bytes(&mut sum, &s.octets());
            add_bytes(&mut sum, &d.octets());
            sum += len >> 16;
            sum += len & 0xffff;
            sum += u32::from(IPPROTO_TCP);
        }
        _ => return None,
    }
    add_bytes(&mut sum, tcp);
    Some(sum)
}

/// The TCP checksum of `tcp` (header with a zero checksum field, then payload).
pub fn checksum(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> Option<u16> {
    pseudo_sum(src, dst, tcp).map(|s| !fold(s))
}

/// A received segment's checksum is right (the sum over everything, checksum
/// included, is all ones).
pub fn checksum_ok(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> bool {
    pseudo_sum(src, dst, tcp).is_some_and(|s| fold(s) == 0xffff)
}

/// The TCP header (no options, window 65535) and payload of `seg`, checksummed.
pub fn encode(seg: &Segment) -> io::Result<Vec<u8>> {
    let mut b = Vec::with_capacity(TCP_HEADER + seg.payload.len());
    b.extend_from_slice(&seg.src.port().to_be_bytes());
    b.extend_from_slice(&seg.dst.port().to_be_bytes());
    b.extend_from_slice(&seg.seq.to_be_bytes());
    b.extend_from_slice(&seg.ack.to_be_bytes());
    b.push(((TCP_HEADER / 4) as u8) << 4);
    b.push(seg.flags);
    b.extend_from_slice(&u16::MAX.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    b.extend_from_slice(&seg.payload);
    let sum = checksum(seg.src.ip(), seg.dst.ip(), &b).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("segment {} → {} mixes address families", seg.src, seg.dst),
        )
    })?;
    b[16..18].copy_from_slice(&sum.to_be_bytes());
    Ok(b)
}

/// Parses the TCP segment in an IPv4 or IPv6 packet (network header first, as a
/// `SOCK_DGRAM` packet socket delivers it). `None` for anything else, for IPv6
/// extension headers and truncated packets. The checksum is not checked: a veth
/// hands over segments whose checksum the sender left to offload.
pub fn decode_ip(pkt: &[u8]) -> Option<Segment> {
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
            if ihl < 20 || *pkt.get(9)? != IPPROTO_TCP || total < ihl || pkt.len() < total {
                return None;
            }
            let a: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            (a.into(), b.into(), &pkt[ihl..total])
        }
        6 => {
            let plen = usize::from(u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]));
            if *pkt.get(6)? != IPPROTO_TCP || pkt.len() < 40 + plen {
                return None;
            }
            let a: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            (a.into(), b.into(), &pkt[40..40 + plen])
        }
        _ => return None,
    };
    decode_tcp(src, dst, tcp)
}

/// Parses a TCP header and payload between `src` and `dst` (checksum not checked).
pub fn decode_tcp(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> Option<Segment> {
    let off = usize::from(tcp.get(12)? >> 4) * 4;
    if off < TCP_HEADER || tcp.len() < off {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    Some(Segment {
        src: SocketAddr::new(src, be16(0)),
        dst: SocketAddr::new(dst, be16(2)),
        seq: be32(4),
        ack: be32(8),
        flags: tcp[13],
        payload: tcp[off..].to_vec(),
    })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `sockaddr_in` / `sockaddr_in6` for `a` with port 0 (a raw socket has none).
fn sockaddr(a: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    sockaddr_of(SocketAddr::new(a, 0))
}

/// `sockaddr_in` / `sockaddr_in6` for `a`.
pub fn sockaddr_of(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a.ip() {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = v6.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A raw TCP socket bound to one local address: sends [`Segment`]s from it.
pub struct Injector {
    fd: OwnedFd,
    local: IpAddr,
}

impl Injector {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(local: IpAddr) -> io::Result<Injector> {
        let family = if local.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2) call.
        let raw = cvt(unsafe {
            libc::socket(
                family,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP,
            )
        })?;
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Every TCP segment arriving in the namespace is also queued on a raw TCP
        // socket; a small buffer bounds what we never read.
        let small: libc::c_int = 4096;
        // SAFETY: valid fd, pointer to a c_int of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let (sa, len) = sockaddr(local);
        // SAFETY: sa is a valid sockaddr of length len.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_storage).cast(),
                len,
            )
        })?;
        Ok(Injector { fd, local })
    }

    /// Sends `seg`, whose source address must be the bound one.
    pub fn send(&self, seg: &Segment) -> io::Result<()> {
        if seg.src.ip() != self.local {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "segment from {} on a raw socket bound to {}",
                    seg.src, self.local
                ),
            ));
        }
        let b = encode(seg)?;
        let (sa, len) = sockaddr(seg.dst.ip());
        // SAFETY: b is a valid buffer; sa a valid sockaddr of length len.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                b.as_ptr().cast(),
                b.len(),
                0,
                (&sa as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != b.len() {
            return Err(io::Error::other(format!(
                "raw send: {n} of {} bytes",
                b.len()
            )));
        }
        Ok(())
    }
}

/// A packet socket on one interface that returns the TCP segments arriving there.
pub struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    /// Opens it on `ifname` of the calling thread's network namespace, for IPv4 or
    /// IPv6 packets.
    pub fn open(ifname: &str, ipv6: bool) -> io::Result<Sniffer> {
        let proto = (if ipv6 {
            libc::ETH_P_IPV6
        } else {
            libc::ETH_P_IP
        } as u16)
            .to_be();
        // SAFETY: plain socket(2) call.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        })?;
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: name is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(Sniffer { fd })
    }

    /// The next incoming segment for which `want` is true, waiting up to `timeout`;
    /// `None` when none came in time. Outgoing packets are skipped.
    pub fn next(
        &self,
        timeout: Duration,
        want: impl Fn(&Segment) -> bool,
    ) -> io::Result<Option<Segment>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                continue;
            }
            // SAFETY: sockaddr_ll is plain data; all-zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut slen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and sll are valid for the given lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut slen,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(e);
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if let Some(seg) = decode_ip(&buf[..n as usize])
                && want(&seg)
            {
                return Ok(Some(seg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(src: &str, dst: &str, flags: u8, payload: &[u8]) -> Segment {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: 0x0102_0304,
            ack: 0xa0b0_c0d0,
            flags,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn ones_complement_sum_of_rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let mut sum = 0;
        add_bytes(&mut sum, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(fold(sum), 0xddf2);
        // An odd length pads with a zero byte.
        let mut sum = 0;
        add_bytes(&mut sum, &[0x12, 0x34, 0x56]);
        assert_eq!(fold(sum), 0x1234 + 0x5600);
    }

    #[test]
    fn encoded_segments_carry_a_valid_checksum() {
        for s in [
            seg("10.64.1.1:31001", "10.64.1.2:47108", SYN, &[]),
            seg("[fd00::1]:31001", "[fd00::2]:47108", ACK | PSH, b"odd"),
        ] {
            let b = encode(&s).unwrap();
            assert_eq!(b.len(), TCP_HEADER + s.payload.len());
            assert!(checksum_ok(s.src.ip(), s.dst.ip(), &b));
            // Any change of a byte or of the pseudo-header breaks it.
            let mut bad = b.clone();
            bad[4] ^= 0x01;
            assert!(!checksum_ok(s.src.ip(), s.dst.ip(), &bad));
            assert!(!checksum_ok(s.dst.ip(), s.dst.ip(), &b));
            assert_eq!(decode_tcp(s.src.ip(), s.dst.ip(), &b), Some(s));
        }
        // Mixed families are an error, not a panic.
        assert!(encode(&seg("10.0.0.1:1", "[fd00::2]:2", SYN, &[])).is_err());
    }

    #[test]
    fn decodes_ipv4_and_ipv6_packets() {
        let s4 = seg("10.64.1.2:47108", "10.64.1.1:31003", SYN | ACK, &[]);
        let t = encode(&s4).unwrap();
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
        p[2..4].copy_from_slice(&((20 + t.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[10, 64, 1, 2, 10, 64, 1, 1]);
        p.extend_from_slice(&t);
        assert_eq!(decode_ip(&p), Some(s4.clone()));
        // Truncated, not TCP, garbage: None, no panic.
        assert_eq!(decode_ip(&p[..p.len() - 1]), None);
        let mut udp = p.clone();
        udp[9] = 17;
        assert_eq!(decode_ip(&udp), None);
        assert_eq!(decode_ip(&[]), None);
        assert_eq!(decode_ip(&[0x45, 0]), None);

        let s6 = seg("[fd00::2]:47108", "[fd00::1]:31003", FIN | ACK, b"x");
        let t = encode(&s6).unwrap();
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(t.len() as u16).to_be_bytes());
        p.extend_from_slice(&[IPPROTO_TCP, 64]);
        p.extend_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&t);
        let got = decode_ip(&p).unwrap();
        assert_eq!(got, s6);
        assert_eq!(got.seq_len(), 2);
        assert_eq!(decode_ip(&p[..50]), None);
    }
}
