//! How DTLS handshakes ended, counted by the listener (which refuses new
//! peers and sees each session's handshake finish or fail) and read by its
//! CoAP server, on the same task, for /metrics.

/// How one handshake ended; the discriminant indexes the counters.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A session was established (key or certificate and identity good).
    Ok,
    /// The handshake failed: unknown identity, wrong key, refused
    /// certificate, or a protocol error.
    Failed,
    /// It completed, but the identity is not acceptable (not UTF-8, no CN,
    /// characters a topic cannot hold).
    RefusedIdentity,
    /// It did not complete within `dtls.handshake_timeout_s`.
    Timeout,
    /// A new peer (its ClientHello returned our cookie) over
    /// `dtls.new_peers_per_s`: dropped; it retries.
    RateLimited,
    /// A new peer (its ClientHello returned our cookie) while the table was
    /// full: dropped; it retries.
    TableFull,
    /// A ClientHello without a valid cookie, answered with a
    /// HelloVerifyRequest and nothing kept: the first step of every real
    /// handshake, and all a spoofed one ever gets.
    CookieSent,
}

/// The metrics label of each [`Outcome`], in discriminant order.
const LABELS: [&str; 7] = [
    "ok",
    "failed",
    "refused_identity",
    "timeout",
    "rate_limited",
    "table_full",
    "cookie_sent",
];

#[derive(Debug, Default)]
pub struct HandshakeOutcomes {
    counts: [u64; LABELS.len()],
}

impl HandshakeOutcomes {
    pub fn count(&mut self, outcome: Outcome) {
        self.counts[outcome as usize] += 1;
    }

    /// Every outcome with its total so far, by its metrics label.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        LABELS
            .iter()
            .zip(&self.counts)
            .map(|(label, n)| (*label, *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_list_every_outcome_with_its_count() {
        let mut o = HandshakeOutcomes::default();
        o.count(Outcome::Ok);
        o.count(Outcome::Ok);
        o.count(Outcome::Timeout);
        let totals = o.totals();
        assert_eq!(totals.len(), 7);
        assert!(totals.contains(&("ok", 2)));
        assert!(totals.contains(&("timeout", 1)));
        assert!(totals.contains(&("failed", 0)));
        o.count(Outcome::CookieSent);
        assert!(
            o.totals().contains(&("cookie_sent", 1)),
            "the last label lines up"
        );
    }
}
