//! Per-transport-task counters: counted without locks by the task that owns
//! them, copied into a shared snapshot now and then.

use crate::coap::ExchangeCounters;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a busy transport task copies its counters out.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// CoAP message types, by their 2-bit value.
pub const MESSAGE_TYPES: [&str; 4] = ["CON", "NON", "ACK", "RST"];

/// A CoAP code byte as people write it: 0x44 is "2.04".
pub(super) fn code_name(byte: u8) -> String {
    format!("{}.{:02}", byte >> 5, byte & 0x1f)
}

/// One transport task's figures (or, summed, all tasks of a kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// "udp" or "dtls".
    pub kind: &'static str,
    /// The exchange's own counters, as of the last copy.
    pub exchange: ExchangeCounters,
    /// Datagrams received, by CoAP message type; index 4: shorter than a
    /// CoAP header.
    pub datagrams: [u64; 5],
    /// Datagrams holding a request (code 0.01 to 0.31), by message type,
    /// retransmissions included.
    pub requests: [u64; 4],
    /// Messages sent: (message type, code byte) -> count.
    pub responses: Vec<((u8, u8), u64)>,
    /// Datagrams dropped, by `coap::Ignored::reason()`.
    pub dropped: Vec<(&'static str, u64)>,
    /// DTLS handshakes by outcome ("ok", "timeout", "bad_identity", ...):
    /// for the DTLS transport to fill.
    pub handshakes: Vec<(&'static str, u64)>,
    /// Entries in the bounded per-peer tables now, by table: the exchange's
    /// `dedup` and `uploads`, and the link's own (DTLS peers).
    pub tables: Vec<(&'static str, u64)>,
}

impl TransportCounters {
    pub fn new(kind: &'static str) -> TransportCounters {
        TransportCounters {
            kind,
            ..Default::default()
        }
    }

    /// Adds `other`'s counts to these (to sum tasks of one kind).
    pub fn add(&mut self, other: &TransportCounters) {
        self.exchange.add(&other.exchange);
        for (mine, theirs) in self.datagrams.iter_mut().zip(other.datagrams) {
            *mine += theirs;
        }
        for (mine, theirs) in self.requests.iter_mut().zip(other.requests) {
            *mine += theirs;
        }
        for (key, n) in &other.responses {
            bump(&mut self.responses, *key, *n);
        }
        for (key, n) in &other.dropped {
            bump(&mut self.dropped, *key, *n);
        }
        for (key, n) in &other.handshakes {
            bump(&mut self.handshakes, *key, *n);
        }
        for (key, n) in &other.tables {
            bump(&mut self.tables, *key, *n);
        }
    }
}

/// Adds `n` to `key`'s count in a short list (a handful of distinct keys:
/// a linear search beats a map).
fn bump<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, count)) => *count += n,
        None => list.push((key, n)),
    }
}

/// Owned by one transport task: counts without locks, publishes now and then.
pub struct TransportMetrics {
    local: TransportCounters,
    shared: Arc<Mutex<TransportCounters>>,
    last_publish: Instant,
}

impl TransportMetrics {
    pub(super) fn new(kind: &'static str, shared: Arc<Mutex<TransportCounters>>) -> Self {
        TransportMetrics {
            local: TransportCounters::new(kind),
            shared,
            last_publish: Instant::now(),
        }
    }

    /// Counters that belong to no daemon, for tests and tools.
    pub fn detached(kind: &'static str) -> TransportMetrics {
        Self::new(kind, Arc::new(Mutex::new(TransportCounters::new(kind))))
    }

    /// A datagram arrived.
    pub fn datagram(&mut self, bytes: &[u8]) {
        if bytes.len() < 4 {
            self.local.datagrams[4] += 1;
            return;
        }
        let kind = usize::from((bytes[0] >> 4) & 0x03);
        self.local.datagrams[kind] += 1;
        let code = bytes[1];
        if code != 0 && code >> 5 == 0 {
            self.local.requests[kind] += 1;
        }
    }

    /// A message is being sent to a device.
    pub fn response(&mut self, bytes: &[u8]) {
        if let [first, code, ..] = bytes {
            bump(&mut self.local.responses, ((first >> 4) & 0x03, *code), 1);
        }
    }

    /// A datagram was dropped; `reason` is `coap::Ignored::reason()`.
    pub fn dropped(&mut self, reason: &'static str) {
        bump(&mut self.local.dropped, reason, 1);
    }

    /// The DTLS handshake totals by outcome, as the listener counts them.
    pub fn set_handshakes(&mut self, totals: Vec<(&'static str, u64)>) {
        self.local.handshakes = totals;
    }

    /// The sizes of the per-peer tables now (see [`TransportCounters::tables`]).
    pub fn set_tables(&mut self, tables: Vec<(&'static str, u64)>) {
        self.local.tables = tables;
    }

    /// Publishes when the last copy is older than [`PUBLISH_EVERY`].
    pub fn maybe_publish(&mut self, exchange: &ExchangeCounters, now: Instant) {
        if now.saturating_duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.publish(exchange);
            self.last_publish = now;
        }
    }

    /// Copies the counters into the shared snapshot.
    pub fn publish(&mut self, exchange: &ExchangeCounters) {
        self.local.exchange.clone_from(exchange);
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.clone_from(&self.local);
    }

    /// The shared snapshot, as the metrics see it.
    pub fn snapshot(&self) -> TransportCounters {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_counted_by_type_and_requests_apart() {
        let mut m = TransportMetrics::detached("udp");
        m.datagram(&[0x40, 0x02, 0, 1]); // CON POST
        m.datagram(&[0x50, 0x03, 0, 2]); // NON PUT
        m.datagram(&[0x40, 0x00, 0, 3]); // CON empty (ping)
        m.datagram(&[0x60, 0x44, 0, 4]); // ACK 2.04
        m.datagram(&[0x40]);
        m.publish(&ExchangeCounters::default());
        let s = m.snapshot();
        assert_eq!(s.datagrams, [2, 1, 1, 0, 1]);
        assert_eq!(s.requests, [1, 1, 0, 0]);
    }

    #[test]
    fn nothing_is_shared_until_published_and_then_all_of_it() {
        let mut m = TransportMetrics::detached("udp");
        let start = m.last_publish;
        m.response(&[0x60, 0x44, 0, 1]);
        m.response(&[0x60, 0x44, 0, 2]);
        m.dropped("duplicate");
        let exchange = ExchangeCounters {
            datagrams: 3,
            ..Default::default()
        };
        m.maybe_publish(&exchange, start + Duration::from_millis(10));
        assert_eq!(m.snapshot().responses, vec![]);
        m.maybe_publish(&exchange, start + PUBLISH_EVERY);
        let s = m.snapshot();
        assert_eq!(s.responses, vec![((2, 0x44), 2)]);
        assert_eq!(s.dropped, vec![("duplicate", 1)]);
        assert_eq!(s.exchange.datagrams, 3);
    }

    #[test]
    fn tasks_of_one_kind_add_up() {
        let mut a = TransportCounters::new("udp");
        a.exchange.requests = 2;
        a.dropped = vec![("malformed", 1)];
        let mut b = a.clone();
        b.dropped = vec![("duplicate", 4), ("malformed", 2)];
        a.add(&b);
        assert_eq!(a.exchange.requests, 4);
        assert_eq!(a.dropped, vec![("malformed", 3), ("duplicate", 4)]);
    }
}
