//! Datagrams in and out: plain UDP and DTLS. A transport knows sockets,
//! peers and sessions, never CoAP rules: those live in `coap`.
//!
//! Both transports end in the same place: a [`Link`] hands datagrams (with
//! the peer's address and, over DTLS, its authenticated identity) to one
//! [`server::Server`], which owns the CoAP exchange of that listener and
//! answers a device only after the store's outcome for its message. Only
//! how bytes arrive and leave differs, so only that is written twice.

pub mod dtls;
pub mod server;
pub mod udp;

use crate::coap::exchange::Peer;
use std::future::Future;
use std::io;

/// Where a [`server::Server`] gets its datagrams and sends its answers.
///
/// `recv` must be cancel-safe: the server polls it in a `select!` and drops
/// it when an answer or shutdown comes first.
pub trait Link: Send + Sync {
    /// Waits for the next datagram, copies it into `buf` and says who sent it.
    fn recv(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, Peer)>> + Send;
    /// Sends one datagram to `to`.
    fn send(&self, bytes: &[u8], to: &Peer) -> impl Future<Output = io::Result<()>> + Send;
    /// For logs: `udp 127.0.0.1:5683`, `dtls 0.0.0.0:5684`.
    fn name(&self) -> &str;
    /// DTLS handshakes by outcome so far (plain UDP has none).
    fn handshakes(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
