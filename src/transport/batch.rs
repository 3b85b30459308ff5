//! Several datagrams in one system call: `sendmmsg`.
//!
//! Under load a commit answers dozens of devices at once, and every
//! `sendto` costs its entry, exit and file lookup whatever it carries; one
//! `sendmmsg` hands the kernel up to [`SEND_BATCH`] datagrams, each with
//! its own destination. Both transports send their answers this way (plain
//! UDP from the tokio socket, DTLS from its synchronous second handle).
//! nix's `sendmmsg` is the safe wrapper; the kernel still runs its UDP
//! send path once per datagram.

use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Most datagrams handed to the kernel in one call (Linux caps a call at
/// `UIO_MAXIOV`, 1,024).
pub const SEND_BATCH: usize = 64;

/// Sends the first [`SEND_BATCH`] of `datagrams` (at least one) in one
/// call; how many the kernel took (at least one), or the first one's error
/// (the kernel reports an error only for a call's first datagram; the
/// caller skips that one and goes on).
pub fn send<'a>(
    fd: RawFd,
    datagrams: impl Iterator<Item = (&'a [u8], SocketAddr)>,
) -> io::Result<usize> {
    let (slices, addrs): (Vec<[IoSlice<'a>; 1]>, Vec<Option<SockaddrStorage>>) = datagrams
        .take(SEND_BATCH)
        .map(|(bytes, to)| ([IoSlice::new(bytes)], Some(SockaddrStorage::from(to))))
        .unzip();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
    let sent = sendmmsg(fd, &mut headers, &slices, &addrs, [], MsgFlags::empty())
        .map_err(io::Error::from)?
        .count();
    match sent {
        // Nothing to send, or a kernel that took none without saying why.
        0 => Err(io::Error::other("sendmmsg sent no datagram")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair() -> (UdpSocket, UdpSocket) {
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        (sender, receiver)
    }

    #[test]
    fn every_datagram_of_a_call_arrives_in_order_at_its_own_destination() {
        let (sender, a) = pair();
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let (to_a, to_b) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let datagrams: [(&[u8], SocketAddr); 3] =
            [(b"one", to_a), (b"two", to_b), (b"three", to_a)];
        let sent = send(sender.as_raw_fd(), datagrams.into_iter()).expect("sent");
        assert_eq!(sent, 3);
        let mut buf = [0u8; 16];
        let mut read = |s: &UdpSocket| {
            let n = s.recv(&mut buf).expect("a datagram");
            buf[..n].to_vec()
        };
        assert_eq!(read(&a), b"one");
        assert_eq!(read(&a), b"three");
        assert_eq!(read(&b), b"two");
    }

    #[test]
    fn a_call_takes_at_most_a_batch_and_says_how_many() {
        let (sender, receiver) = pair();
        let to = receiver.local_addr().expect("addr");
        let payloads: Vec<[u8; 2]> = (0..SEND_BATCH as u16 + 10).map(u16::to_be_bytes).collect();
        let sent = send(sender.as_raw_fd(), payloads.iter().map(|p| (&p[..], to))).expect("sent");
        assert_eq!(sent, SEND_BATCH);
        let mut buf = [0u8; 4];
        for i in 0..SEND_BATCH as u16 {
            let n = receiver.recv(&mut buf).expect("a datagram");
            assert_eq!(&buf[..n], &i.to_be_bytes());
        }
    }

    #[test]
    fn nothing_to_send_is_an_error_not_zero_sent() {
        // A caller that loops until everything is sent would spin on 0.
        let (sender, _) = pair();
        let none = std::iter::empty::<(&[u8], SocketAddr)>();
        assert!(send(sender.as_raw_fd(), none).is_err());
    }

    #[test]
    fn the_first_datagrams_error_is_the_calls() {
        let (sender, receiver) = pair();
        let good = receiver.local_addr().expect("addr");
        // Port 0 is no destination: the kernel refuses it.
        let bad: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let datagrams: [(&[u8], SocketAddr); 2] = [(b"x", bad), (b"y", good)];
        assert!(send(sender.as_raw_fd(), datagrams.into_iter()).is_err());
        // What follows a refused first datagram goes in the next call.
        let sent = send(sender.as_raw_fd(), datagrams[1..].iter().copied()).expect("sent");
        assert_eq!(sent, 1);
    }
}
