//! CoAP (RFC 7252) as the gateway speaks it: the sans-IO exchange that turns
//! datagrams into decisions, and the pieces it is made of.
//!
//! Codemap:
//! - `exchange`: the state machine. Datagram + peer + time in, a [`Step`]
//!   out (reply now, store this message, or ignore it and why). Owns the
//!   tables below and the counters. Never touches a socket, a clock or a
//!   random number generator: the transport and the daemon do that.
//! - `wire`: the message format. Reads a datagram in place, writes responses.
//! - `request`: what a request's code and options ask for (method, path,
//!   Block1, Size1, No-Response) and whether the gateway may process it.
//! - `dedup`: which (peer, Message ID) pairs were seen and what was answered.
//! - `recall`: what deduplication keeps of a stored request across a restart.
//! - `block`: Block1 reassembly of uploads sent in pieces.
//! - `counters`: what became of each datagram, for metrics.
//!
//! Choices made where the RFCs (or the issue) leave room:
//! - A NON with an unrecognized critical option is rejected silently, as
//!   RFC 7252 §5.4.1 requires; only a CON gets 4.02.
//! - Block1: SZX 7 is 4.00 (RFC 7959 §2.2 says so); a Block1 longer than 3
//!   bytes is 4.02, the general rule for a critical option of a bad length
//!   (RFC 7252 §5.4.3). A block number cannot overflow (20 bits times 1024
//!   fits any usize); a number beyond the bytes received is a gap, 4.08.
//!   A non-final block must be exactly the block size (else 4.00); the
//!   final one may be shorter or longer. Size1 is honoured only with Block1.
//! - Uploads are keyed by (peer, Uri-Path); a refusal of any block drops the
//!   upload. A 5.03 or 5.00 for the final block ends it too: the device
//!   starts again from block 0.
//! - Whatever a route accepts is stored and answered 2.04 Changed, whatever
//!   the method (the router decides; usually only POST and PUT).
//! - Lifetimes are half-open: an entry remembered at `t` is a duplicate
//!   until just before `t + 247 s` (CON) or `t + 145 s` (NON); an upload
//!   idle for exactly `block_lifetime` is gone.
//! - A CON retransmission gets the first answer again, even a 5.03: the
//!   device asks anew, with a new Message ID, after Max-Age.
//! - A response class or reserved class in a CON is reset; an empty NON is
//!   a format error (RFC 7252 §4.3), ignored.
//!
//! What this module must never do: block, allocate without a bound that a
//! config value sets, or panic on any input. The tests in `tests/` drive
//! [`Exchange`] with bytes and instants only.

pub mod block;
pub mod client;
pub mod counters;
pub mod dedup;
pub mod exchange;
pub mod mailbox;
pub mod recall;
pub mod request;
pub mod wire;

pub use exchange::{
    Exchange, ExchangeConfig, ExchangeCounters, Ignored, Peer, Step, StoreOutcome, Ticket,
};

#[cfg(test)]
mod tests;
