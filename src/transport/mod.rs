//! Datagrams in and out: plain UDP and DTLS. A transport knows sockets,
//! peers and sessions, never CoAP rules: those live in `coap`.
//!
//! Both transports end in the same place: a [`Link`] hands datagrams (with
//! the peer's address and, over DTLS, its authenticated identity) to one
//! [`server::Server`], which owns the CoAP exchange of that listener and
//! answers a device only after the store's outcome for its message. Only
//! how bytes arrive and leave differs, so only that is written twice.

pub mod batch;
pub mod dtls;
pub mod server;
pub mod udp;

use crate::coap::exchange::Peer;
use std::future::Future;
use std::io;
use std::time::Instant;

/// What the store hands back with the outcome of an append: a device's
/// request to answer, or a command's result, which nobody waits for.
#[derive(Debug)]
pub enum Receipt {
    Request(crate::coap::exchange::Ticket),
    CommandResult,
}

/// Where a [`server::Server`] gets its datagrams and sends its answers.
///
/// The server owns its link and drives it from its one task: a link may
/// keep state it changes on every call (DTLS: encryption, handshakes), and
/// its timers run when the server calls [`Link::handle_timeout`] at
/// [`Link::poll_timeout`], as quinn-proto's connections are driven.
///
/// `recv` must be cancel-safe: the server polls it in a `select!` and drops
/// it when an answer, a timer or shutdown comes first.
pub trait Link: Send {
    /// Waits for the next datagram, copies it into `buf` and says who sent it.
    fn recv(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, Peer)>> + Send;
    /// Sends one datagram to `to`.
    fn send(&mut self, bytes: &[u8], to: &Peer) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends `datagrams` in order, each to its peer; returns the ones that
    /// failed, by index, with why. A link that can hand the kernel several
    /// at once overrides this (plain UDP: `sendmmsg`).
    fn send_all(
        &mut self,
        datagrams: &[(Vec<u8>, Peer)],
    ) -> impl Future<Output = Vec<(usize, io::Error)>> + Send {
        async move {
            let mut failed = Vec::new();
            for (i, (bytes, to)) in datagrams.iter().enumerate() {
                if let Err(e) = self.send(bytes, to).await {
                    failed.push((i, e));
                }
            }
            failed
        }
    }
    /// For logs: `udp 127.0.0.1:5683`, `dtls 0.0.0.0:5684`.
    fn name(&self) -> &str;
    /// When [`Link::handle_timeout`] is next due; `None`: no timers.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// Runs the link's timers due at `now` (retransmissions, timeouts).
    fn handle_timeout(&mut self, _now: Instant) {}
    /// DTLS handshakes by outcome so far (plain UDP has none).
    fn handshakes(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The sizes of the link's own per-peer tables, by name (DTLS: its
    /// peers and, of them, those handshaking), for /metrics.
    fn tables(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Asked of the kernel for every listening socket, CoAP or DTLS: room for
/// bursts. With Linux's default (about 208 KiB, ~200 small datagrams, since
/// each costs about 1 KiB of buffer accounting) 256 devices answering at
/// once overflowed it in the benchmark, and the lost datagrams came back as
/// CON retransmissions seconds later. The kernel caps the request at
/// `net.core.rmem_max` (raise it to get all of it).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket bound to `addr` with [`RECEIVE_BUFFER`] asked.
pub fn bind_udp(addr: std::net::SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: less than asked is still a working socket.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}
