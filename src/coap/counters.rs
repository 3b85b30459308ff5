//! What became of each datagram, as plain counters: the exchange's part of
//! DESIGN.md invariant 6 (every drop is counted). The daemon exports them as
//! metrics; the exchange only ever increments them.
//!
//! A datagram may move more than one counter (a refused request counts in
//! `requests`, in its refusal, e.g. `not_found`, and in `responses_4xx`), but
//! every datagram that is not answered moves at least one counter that says
//! why.

/// How many datagrams met each fate. Plain counters, never reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeCounters {
    /// Datagrams handed to [`Exchange::on_datagram`](super::Exchange::on_datagram).
    pub datagrams: u64,
    /// Shorter than the 4-byte header; ignored.
    pub undecodable: u64,
    /// A CoAP version other than 1; ignored.
    pub wrong_version: u64,
    /// Message format errors: Confirmable ones were reset, the rest ignored.
    pub malformed: u64,
    /// ACK, RST and response messages; a Confirmable response was reset.
    pub not_requests: u64,
    /// Empty Confirmable messages (CoAP ping), answered with RST.
    pub pings: u64,
    /// Every Reset sent: pings, malformed and response Confirmables.
    pub resets_sent: u64,
    /// Requests seen for the first time.
    pub requests: u64,
    /// Confirmable retransmissions answered again with the remembered bytes.
    pub duplicates_answered: u64,
    /// Confirmable retransmissions ignored while the store had not answered.
    pub duplicates_pending: u64,
    /// Non-confirmable duplicates ignored.
    pub duplicates_dropped: u64,
    /// Messages handed out in [`Step::Store`](super::Step::Store).
    pub handed_to_store: u64,
    /// [`StoreOutcome::Stored`](super::StoreOutcome::Stored) answers.
    pub stored: u64,
    /// [`StoreOutcome::Full`](super::StoreOutcome::Full) answers (5.03).
    pub store_full: u64,
    /// [`StoreOutcome::Failed`](super::StoreOutcome::Failed) answers (5.00).
    pub store_failed: u64,
    /// Responses sent by class (duplicates answered again not included).
    pub responses_2xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    /// Responses not sent because of No-Response.
    pub responses_suppressed: u64,
    /// Empty ACKs sent in place of a suppressed response to a Confirmable.
    pub empty_acks_sent: u64,
    /// 4.00: Uri-Path not UTF-8, Block1 SZX 7, wrong non-final block size.
    pub bad_requests: u64,
    /// Unrecognized critical options: 4.02 or a silently rejected NON.
    pub bad_options: u64,
    /// 5.05: Proxy-Uri or Proxy-Scheme.
    pub proxying_refused: u64,
    /// 4.04: no route matches the path.
    pub not_found: u64,
    /// 4.05: no route takes the method, or the method code is unknown.
    pub method_not_allowed: u64,
    /// 4.03: a route's access control refused the peer.
    pub forbidden: u64,
    /// 4.00: the path would make an invalid MQTT topic.
    pub invalid_topics: u64,
    /// 4.13: the body (or a Block1 Size1) exceeds `max_payload`.
    pub too_large: u64,
    /// 2.31: non-final blocks accepted.
    pub block_continues: u64,
    /// 4.08: blocks that did not continue an upload.
    pub block_incomplete: u64,
    /// Uploads evicted to make room for another.
    pub block_evictions: u64,
    /// Uploads dropped after `block_lifetime` idle.
    pub block_expired: u64,
    /// Deduplication entries evicted because the table was full.
    pub dedup_evictions: u64,
    /// Deduplication entries evicted because their peer held its share.
    pub dedup_peer_evictions: u64,
}
