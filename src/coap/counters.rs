//! What became of each datagram, as plain counters: the exchange's part of
//! docs/ARCHITECTURE.md invariant 6 (every drop is counted). The daemon exports them as
//! metrics; the exchange only ever increments them.
//!
//! A datagram may move more than one counter (a refused request counts in
//! `requests`, in its refusal, e.g. `not_found`, and in `responses_4xx`), but
//! every datagram that is not answered moves at least one counter that says
//! why.

/// Declares the counters once: the struct, how tasks add up, and how each
/// is exported (an event of `coap2mqtt_coap_exchange_events_total` or a
/// reason of `coap2mqtt_coap_refused_total`), so that no list elsewhere can
/// forget one.
macro_rules! exchange_counters {
    ($($(#[doc = $doc:literal])* $field:ident => $family:ident $label:literal;)*) => {
        /// How many datagrams met each fate. Plain counters, never reset.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct ExchangeCounters {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl ExchangeCounters {
            /// Adds `other`'s counts to these (to sum the tasks of a transport).
            pub fn add(&mut self, other: &ExchangeCounters) {
                $(self.$field += other.$field;)*
            }

            /// Every counter: how it is exported, its label and its value.
            pub fn exported(&self) -> Vec<(Family, &'static str, u64)> {
                vec![$((Family::$family, $label, self.$field)),*]
            }
        }
    };
}

/// Where a counter is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `coap2mqtt_coap_exchange_events_total{event=...}`
    Event,
    /// `coap2mqtt_coap_refused_total{reason=...}`
    Refused,
}

exchange_counters! {
    /// Datagrams handed to [`Exchange::on_datagram`](super::Exchange::on_datagram).
    datagrams => Event "datagrams";
    /// Shorter than the 4-byte header; ignored.
    undecodable => Event "undecodable";
    /// A CoAP version other than 1; ignored.
    wrong_version => Event "wrong_version";
    /// Message format errors: Confirmable ones were reset, the rest ignored.
    malformed => Event "malformed";
    /// ACK, RST and response messages; a Confirmable response was reset.
    not_requests => Event "not_requests";
    /// Empty Confirmable messages (CoAP ping), answered with RST.
    pings => Event "ping";
    /// Every Reset sent: pings, malformed and response Confirmables.
    resets_sent => Event "reset_sent";
    /// Requests seen for the first time.
    requests => Event "new_request";
    /// Confirmable retransmissions answered again with the remembered bytes.
    duplicates_answered => Event "duplicate_answered";
    /// Confirmable requests with a remembered Message ID but another token:
    /// taken as new requests, not as retransmissions.
    message_ids_reused => Event "message_id_reused";
    /// Confirmable retransmissions ignored while the store had not answered.
    duplicates_pending => Event "duplicate_pending";
    /// Non-confirmable duplicates ignored.
    duplicates_dropped => Event "duplicate_dropped";
    /// Messages handed out in [`Step::Store`](super::Step::Store).
    handed_to_store => Event "handed_to_store";
    /// [`StoreOutcome::Stored`](super::StoreOutcome::Stored) answers.
    stored => Event "stored";
    /// [`StoreOutcome::Full`](super::StoreOutcome::Full) answers (5.03).
    store_full => Refused "store_full";
    /// [`StoreOutcome::Failed`](super::StoreOutcome::Failed) answers (5.00).
    store_failed => Refused "store_failed";
    /// Responses sent by class (duplicates answered again not included).
    responses_2xx => Event "responses_2xx";
    responses_4xx => Event "responses_4xx";
    responses_5xx => Event "responses_5xx";
    /// Responses not sent because of No-Response.
    responses_suppressed => Event "response_suppressed";
    /// Empty ACKs sent in place of a suppressed response to a Confirmable.
    empty_acks_sent => Event "empty_ack_sent";
    /// 4.00: Uri-Path not UTF-8, Block1 SZX 7, wrong non-final block size.
    bad_requests => Refused "bad_request";
    /// Unrecognized critical options: 4.02 or a silently rejected NON.
    bad_options => Refused "bad_option";
    /// 5.05: Proxy-Uri or Proxy-Scheme.
    proxying_refused => Refused "proxying";
    /// 4.04: no route matches the path.
    not_found => Refused "not_found";
    /// 4.05: no route takes the method, or the method code is unknown.
    method_not_allowed => Refused "method_not_allowed";
    /// 4.03: a route's access control refused the peer.
    forbidden => Refused "forbidden";
    /// 4.00: the path would make an invalid MQTT topic.
    invalid_topics => Refused "invalid_topic";
    /// 4.13: the body (or a Block1 Size1) exceeds `max_payload`.
    too_large => Refused "too_large";
    /// 4.00 on a `payload = "json"` route: the body does not decode as its
    /// Content-Format (answered with a diagnostic payload).
    payload_malformed => Refused "payload_malformed";
    /// 4.15 on a `payload = "json"` route: no Content-Format, or one the
    /// gateway cannot translate.
    unsupported_content_format => Refused "unsupported_content_format";
    /// Requests translated to JSON and handed to the store.
    translated => Event "translated";
    /// Messages beyond the first that `split = true` made of one request.
    split_records => Event "split_record";
    /// 2.31: non-final blocks accepted.
    block_continues => Event "block_continue";
    /// 4.08: blocks that did not continue an upload.
    block_incomplete => Refused "block_incomplete";
    /// Uploads evicted to make room for another.
    block_evictions => Event "block_eviction";
    /// Uploads dropped after `block_lifetime` idle.
    block_expired => Event "block_expired";
    /// Deduplication entries evicted because the table was full.
    dedup_evictions => Event "dedup_eviction";
    /// Deduplication entries evicted because their peer held its share.
    dedup_peer_evictions => Event "dedup_peer_eviction";
}
