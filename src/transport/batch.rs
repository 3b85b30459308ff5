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
