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
//! - `block`: Block1 reassembly of uploads sent in pieces.
//! - `counters`: what became of each datagram, for metrics.
//!
//! What this module must never do: block, allocate without a bound that a
//! config value sets, or panic on any input. The tests in `tests/` drive
//! [`Exchange`] with bytes and instants only.

pub mod block;
pub mod counters;
pub mod dedup;
pub mod exchange;
pub mod request;
pub mod wire;

pub use exchange::{
    Exchange, ExchangeConfig, ExchangeCounters, Ignored, Peer, Step, StoreOutcome, Ticket,
};

#[cfg(test)]
mod tests;
