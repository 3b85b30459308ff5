//! How DTLS handshakes ended, counted where they end (the demultiplexer
//! refuses new peers, each session task finishes or fails its own
//! handshake) and read by the listener's CoAP server for /metrics.
//!
//! Atomics rather than the server's lock-free local counters because the
//! outcomes happen in many tasks; they are rare next to datagrams.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct HandshakeOutcomes {
    /// A session was established (key or certificate and identity good).
    ok: AtomicU64,
    /// The handshake failed: unknown identity, wrong key, refused
    /// certificate, or a protocol error.
    failed: AtomicU64,
    /// It completed, but the identity is not acceptable (not UTF-8, no CN,
    /// characters a topic cannot hold).
    refused_identity: AtomicU64,
    /// It did not complete within `dtls.handshake_timeout_s`.
    timeout: AtomicU64,
    /// A new peer over `dtls.new_peers_per_s`: its ClientHello was dropped.
    rate_limited: AtomicU64,
    /// A new peer while the table was full: its ClientHello was dropped.
    table_full: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Ok,
    Failed,
    RefusedIdentity,
    Timeout,
    RateLimited,
    TableFull,
}

impl HandshakeOutcomes {
    pub fn count(&self, outcome: Outcome) {
        self.counter(outcome).fetch_add(1, Ordering::Relaxed);
    }

    /// Every outcome with its total so far, by its metrics label.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        [
            (Outcome::Ok, "ok"),
            (Outcome::Failed, "failed"),
            (Outcome::RefusedIdentity, "refused_identity"),
            (Outcome::Timeout, "timeout"),
            (Outcome::RateLimited, "rate_limited"),
            (Outcome::TableFull, "table_full"),
        ]
        .into_iter()
        .map(|(o, label)| (label, self.counter(o).load(Ordering::Relaxed)))
        .collect()
    }

    fn counter(&self, outcome: Outcome) -> &AtomicU64 {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Failed => &self.failed,
            Outcome::RefusedIdentity => &self.refused_identity,
            Outcome::Timeout => &self.timeout,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::TableFull => &self.table_full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_list_every_outcome_with_its_count() {
        let o = HandshakeOutcomes::default();
        o.count(Outcome::Ok);
        o.count(Outcome::Ok);
        o.count(Outcome::Timeout);
        let totals = o.totals();
        assert_eq!(totals.len(), 6);
        assert!(totals.contains(&("ok", 2)));
        assert!(totals.contains(&("timeout", 1)));
        assert!(totals.contains(&("failed", 0)));
    }
}
