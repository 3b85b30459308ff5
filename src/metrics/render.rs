//! The figures as text: Prometheus exposition for machines, a short report
//! for people.

use super::transport::MESSAGE_TYPES;
use super::{Metrics, TransportCounters, Verdict};
use crate::clock::now_ms;
use crate::coap::counters::Family;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP coap2mqtt_{name} {help}");
        let _ = writeln!(self.0, "# TYPE coap2mqtt_{name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "coap2mqtt_{name} {value}");
        } else {
            let _ = writeln!(self.0, "coap2mqtt_{name}{{{labels}}} {value}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.value(name, "", value);
    }
}

fn code(byte: u8) -> String {
    format!("{}.{:02}", byte >> 5, byte & 0x1f)
}

pub(super) fn prometheus(m: &Metrics, verdict: &Verdict) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.head("build_info", "gauge", "The running version.");
    o.value(
        "build_info",
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    o.one(
        "start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch.",
        m.started_ms as f64 / 1000.0,
    );
    o.one(
        "healthy",
        "gauge",
        "1 when /healthz answers 200.",
        u8::from(verdict.healthy()),
    );
    o.one(
        "alive",
        "gauge",
        "1 while the watchdog is fed: commit and publish make progress or are idle.",
        u8::from(verdict.alive()),
    );

    transports(&mut o, &m.transports());
    queue(&mut o, m);
    uplink(&mut o, m);
    o.0
}

fn transports(o: &mut Out, all: &[TransportCounters]) {
    o.head(
        "coap_datagrams_total",
        "counter",
        "Datagrams received, by transport and CoAP message type (\"short\": not even a CoAP header).",
    );
    for t in all {
        for (i, n) in t.datagrams.iter().enumerate() {
            let kind = MESSAGE_TYPES.get(i).copied().unwrap_or("short");
            o.value(
                "coap_datagrams_total",
                &format!("transport=\"{}\",type=\"{kind}\"", t.kind),
                n,
            );
        }
    }
    o.head(
        "coap_requests_total",
        "counter",
        "Datagrams holding a request, by transport and message type (retransmissions included).",
    );
    for t in all {
        for (i, n) in t.requests.iter().enumerate().take(2) {
            o.value(
                "coap_requests_total",
                &format!("transport=\"{}\",type=\"{}\"", t.kind, MESSAGE_TYPES[i]),
                n,
            );
        }
    }
    o.head(
        "coap_responses_total",
        "counter",
        "Messages sent to devices, by transport, message type and code (RST and empty ACK are 0.00).",
    );
    for t in all {
        let mut sorted = t.responses.clone();
        sorted.sort();
        for ((kind, c), n) in sorted {
            o.value(
                "coap_responses_total",
                &format!(
                    "transport=\"{}\",type=\"{}\",code=\"{}\"",
                    t.kind,
                    MESSAGE_TYPES[usize::from(kind & 3)],
                    code(c)
                ),
                n,
            );
        }
    }
    o.head(
        "coap_dropped_total",
        "counter",
        "Datagrams dropped without an answer, by transport and reason.",
    );
    for t in all {
        for (reason, n) in &t.dropped {
            o.value(
                "coap_dropped_total",
                &format!("transport=\"{}\",reason=\"{reason}\"", t.kind),
                n,
            );
        }
    }
    o.head(
        "coap_refused_total",
        "counter",
        "Requests refused with an error response, by transport and reason.",
    );
    for t in all {
        for (_, reason, n) in exported(t, Family::Refused) {
            o.value(
                "coap_refused_total",
                &format!("transport=\"{}\",reason=\"{reason}\"", t.kind),
                n,
            );
        }
    }
    o.head(
        "coap_exchange_events_total",
        "counter",
        "What the CoAP exchange did, by transport and event.",
    );
    for t in all {
        for (_, event, n) in exported(t, Family::Event) {
            o.value(
                "coap_exchange_events_total",
                &format!("transport=\"{}\",event=\"{event}\"", t.kind),
                n,
            );
        }
    }
    o.head(
        "table_entries",
        "gauge",
        "Entries in the bounded per-peer tables, by transport and table (dedup, uploads, dtls_peers, dtls_handshaking).",
    );
    for t in all {
        for (table, n) in &t.tables {
            o.value(
                "table_entries",
                &format!("transport=\"{}\",table=\"{table}\"", t.kind),
                n,
            );
        }
    }
    o.head(
        "dtls_handshakes_total",
        "counter",
        "DTLS handshakes, by outcome.",
    );
    for t in all {
        for (outcome, n) in &t.handshakes {
            o.value(
                "dtls_handshakes_total",
                &format!("transport=\"{}\",outcome=\"{outcome}\"", t.kind),
                n,
            );
        }
    }
}

/// The exchange's counters of one family (see `coap::counters`).
fn exported(t: &TransportCounters, family: Family) -> Vec<(Family, &'static str, u64)> {
    let mut all = t.exchange.exported();
    all.retain(|(f, _, _)| *f == family);
    all
}

fn queue(o: &mut Out, m: &Metrics) {
    let s = m.queue.stats();
    let (depth, bytes) = m.queue.depth();
    o.one(
        "queue_messages",
        "gauge",
        "Messages waiting for the broker.",
        depth,
    );
    o.one(
        "queue_bytes",
        "gauge",
        "Bytes the queue's segment files take (what store.max_bytes limits).",
        bytes,
    );
    let age = m
        .queue
        .oldest_received_ms()
        .map(|t| now_ms().saturating_sub(t) as f64 / 1000.0)
        .unwrap_or(0.0);
    o.one(
        "queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest waiting message; 0 when the queue is empty.",
        age,
    );
    o.one(
        "queue_disk_bytes",
        "gauge",
        "Bytes the store's files take on disk (segments are deleted once the broker has them).",
        m.queue.size_on_disk(),
    );
    o.one(
        "queue_dead_letters",
        "gauge",
        "Messages in the dead-letter tree.",
        s.dead_letters.load(Relaxed),
    );
    for (name, help, n) in [
        (
            "queue_appended_total",
            "Messages made durable.",
            &s.appended,
        ),
        (
            "queue_removed_total",
            "Messages removed after the broker took them.",
            &s.removed,
        ),
        (
            "queue_rejected_full_total",
            "Messages refused because the queue was full (on_full = reject).",
            &s.rejected_full,
        ),
        (
            "queue_dropped_oldest_total",
            "Queued messages deleted to make room (on_full = drop-oldest).",
            &s.dropped_oldest,
        ),
        (
            "queue_lost_to_damage_total",
            "Queued messages that could not be read back (damage on disk) and were given up.",
            &s.lost_to_damage,
        ),
        (
            "queue_failed_appends_total",
            "Messages refused because their commit failed.",
            &s.failed_appends,
        ),
        ("store_commits_total", "Commit batches applied.", &s.commits),
        (
            "store_commit_errors_total",
            "Commit batches that failed.",
            &s.commit_errors,
        ),
    ] {
        o.one(name, "counter", help, n.load(Relaxed));
    }
    o.one(
        "store_writable",
        "gauge",
        "0 when the last commit failed.",
        u8::from(s.commit.last_ok()),
    );
    histogram(
        o,
        "store_commit_batch_size",
        "Commands per commit batch.",
        &s.commit.batch_size,
        0,
    );
    histogram(
        o,
        "store_commit_seconds",
        "Time to apply and flush one commit batch.",
        &s.commit.latency_us,
        6,
    );
}

/// `shift` decimal places: 6 renders microseconds as seconds.
fn histogram(o: &mut Out, name: &str, help: &str, h: &super::Histogram, shift: u32) {
    o.head(name, "histogram", help);
    let (buckets, sum, count) = h.snapshot();
    for (bound, n) in buckets {
        o.value(
            &format!("{name}_bucket"),
            &format!("le=\"{}\"", decimal(bound, shift)),
            n,
        );
    }
    o.value(&format!("{name}_bucket"), "le=\"+Inf\"", count);
    o.value(&format!("{name}_sum"), "", decimal(sum, shift));
    o.value(&format!("{name}_count"), "", count);
}

/// `value / 10^shift` written exactly: decimal(2500, 6) is "0.0025".
fn decimal(value: u64, shift: u32) -> String {
    let unit = 10u64.pow(shift);
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:0width$}", width = shift as usize);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn uplink(o: &mut Out, m: &Metrics) {
    let Some(u) = m.uplink.get() else { return };
    let s = &u.stats;
    o.one(
        "mqtt_connected",
        "gauge",
        "1 while connected to the broker.",
        u8::from(s.connected.load(Relaxed)),
    );
    o.one(
        "mqtt_protocol_version",
        "gauge",
        "The MQTT version of the current session: 4 (3.1.1) or 5; 0 when not connected.",
        s.version.load(Relaxed),
    );
    o.head(
        "mqtt_puback_refusals_total",
        "counter",
        "MQTT 5 PUBACKs with a failing reason code, by reason (not acks: retried or dead-lettered).",
    );
    for (i, n) in s.nacks.iter().enumerate() {
        let reason = crate::uplink::NACK_REASONS
            .get(i)
            .map_or("other", |code| crate::uplink::session::reason_name(*code));
        o.value(
            "mqtt_puback_refusals_total",
            &format!("reason=\"{reason}\""),
            n.load(Relaxed),
        );
    }
    for (name, help, n) in [
        (
            "mqtt_connects_total",
            "Successful connections (each one after the first is a reconnect).",
            &s.connects,
        ),
        (
            "mqtt_connect_failures_total",
            "Connection attempts that failed.",
            &s.connection_failures,
        ),
        (
            "mqtt_published_total",
            "PUBLISH packets written (status messages included).",
            &s.published,
        ),
        (
            "mqtt_acked_total",
            "Messages acknowledged by PUBACK.",
            &s.acked,
        ),
        (
            "mqtt_resent_total",
            "Messages published again after a reconnect (at-least-once retries).",
            &s.resent,
        ),
        (
            "mqtt_dead_lettered_total",
            "Messages the uplink moved to the dead letters.",
            &s.dead_lettered,
        ),
        (
            "mqtt_expired_total",
            "Messages removed unpublished: they waited longer than their route's expiry_s.",
            &s.expired,
        ),
        (
            "mqtt_failovers_total",
            "Sessions on a broker other than the previous session's.",
            &s.failovers,
        ),
    ] {
        o.one(name, "counter", help, n.load(Relaxed));
    }
}

/// 1.5 KiB, 3.2 MiB.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub(super) fn status(m: &Metrics, verdict: &Verdict) -> String {
    let mut o = String::new();
    let now = now_ms();
    let _ = writeln!(
        o,
        "coap2mqtt {}, up {}: {}",
        env!("CARGO_PKG_VERSION"),
        human_duration(now.saturating_sub(m.started_ms)),
        if verdict.healthy() {
            "healthy"
        } else {
            "UNHEALTHY"
        }
    );
    for reason in verdict.wedged.iter().chain(&verdict.degraded) {
        let _ = writeln!(o, "  ! {reason}");
    }

    let s = m.queue.stats();
    let (depth, bytes) = m.queue.depth();
    let oldest = match m.queue.oldest_received_ms() {
        Some(t) => format!(", oldest {} old", human_duration(now.saturating_sub(t))),
        None => String::new(),
    };
    let _ = writeln!(
        o,
        "\nqueue   {depth} messages ({}){oldest}; {} on disk; {} dead letters",
        human_bytes(bytes),
        human_bytes(m.queue.size_on_disk()),
        s.dead_letters.load(Relaxed)
    );
    let (_, sum_us, commits) = s.commit.latency_us.snapshot();
    let (_, sum_batch, _) = s.commit.batch_size.snapshot();
    let mean = |sum: u64| {
        if commits == 0 {
            0.0
        } else {
            sum as f64 / commits as f64
        }
    };
    let _ = writeln!(
        o,
        "store   {} stored, {} removed; {} commits ({} failed), {:.1} commands and {:.2} ms each on average{}",
        s.appended.load(Relaxed),
        s.removed.load(Relaxed),
        s.commits.load(Relaxed),
        s.commit_errors.load(Relaxed),
        mean(sum_batch),
        mean(sum_us) / 1000.0,
        if s.commit.last_ok() { "" } else { "; LAST COMMIT FAILED" }
    );
    let full = s.rejected_full.load(Relaxed) + s.dropped_oldest.load(Relaxed);
    if full > 0 {
        let _ = writeln!(
            o,
            "        queue full: {} refused, {} oldest dropped",
            s.rejected_full.load(Relaxed),
            s.dropped_oldest.load(Relaxed)
        );
    }

    match m.uplink.get() {
        Some(u) => {
            let us = &u.stats;
            let state = if us.connected.load(Relaxed) {
                "connected to"
            } else {
                "NOT connected to"
            };
            let _ = writeln!(
                o,
                "uplink  {state} {}; {} connects, {} failed attempts",
                u.broker,
                us.connects.load(Relaxed),
                us.connection_failures.load(Relaxed)
            );
            let _ = writeln!(
                o,
                "        {} published, {} acked, {} resent, {} dead-lettered",
                us.published.load(Relaxed),
                us.acked.load(Relaxed),
                us.resent.load(Relaxed),
                us.dead_lettered.load(Relaxed)
            );
            if let Some(error) = us
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                let _ = writeln!(o, "        last error: {error}");
            }
        }
        None => {
            let _ = writeln!(o, "uplink  starting");
        }
    }

    for t in m.transports() {
        let e = &t.exchange;
        let _ = writeln!(
            o,
            "coap    {}: {} datagrams, {} requests (CON {}, NON {}), {} stored",
            t.kind, e.datagrams, e.requests, t.requests[0], t.requests[1], e.stored
        );
        let mut responses = t.responses.clone();
        responses.sort();
        if !responses.is_empty() {
            let list: Vec<String> = responses
                .iter()
                .map(|((kind, c), n)| {
                    format!("{} {} x{n}", MESSAGE_TYPES[usize::from(kind & 3)], code(*c))
                })
                .collect();
            let _ = writeln!(o, "        answers: {}", list.join(", "));
        }
        if !t.dropped.is_empty() {
            let list: Vec<String> = t.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(o, "        dropped: {}", list.join(", "));
        }
        if !t.handshakes.is_empty() {
            let list: Vec<String> = t
                .handshakes
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(o, "        handshakes: {}", list.join(", "));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_duration(59_999), "59 s");
        assert_eq!(human_duration(3_600_000 + 120_000), "1 h 2 min");
    }

    /// Every field of the exchange's counters, with a value of its own:
    /// a struct literal without `..Default::default()`, so a new field
    /// fails to compile here until it is listed.
    fn every_counter_distinct() -> crate::coap::ExchangeCounters {
        crate::coap::ExchangeCounters {
            datagrams: 1001,
            undecodable: 1002,
            wrong_version: 1003,
            malformed: 1004,
            not_requests: 1005,
            pings: 1006,
            resets_sent: 1007,
            requests: 1008,
            duplicates_answered: 1009,
            duplicates_pending: 1010,
            duplicates_dropped: 1011,
            handed_to_store: 1012,
            stored: 1013,
            store_full: 1014,
            store_failed: 1015,
            responses_2xx: 1016,
            responses_4xx: 1017,
            responses_5xx: 1018,
            responses_suppressed: 1019,
            empty_acks_sent: 1020,
            bad_requests: 1021,
            bad_options: 1022,
            proxying_refused: 1023,
            not_found: 1024,
            method_not_allowed: 1025,
            forbidden: 1026,
            invalid_topics: 1027,
            too_large: 1028,
            payload_malformed: 1040,
            unsupported_content_format: 1041,
            translated: 1042,
            split_records: 1043,
            block_continues: 1029,
            block_incomplete: 1030,
            block_evictions: 1031,
            block_expired: 1032,
            dedup_evictions: 1033,
            dedup_peer_evictions: 1034,
        }
    }

    /// (field, value) pairs read from the Debug form: all fields, whatever
    /// their number.
    fn fields(counters: &crate::coap::ExchangeCounters) -> Vec<(String, u64)> {
        let text = format!("{counters:?}");
        let inner = text
            .split_once('{')
            .and_then(|(_, rest)| rest.rsplit_once('}'))
            .map(|(inner, _)| inner)
            .unwrap_or("");
        inner
            .split(',')
            .filter_map(|pair| {
                let (name, value) = pair.split_once(':')?;
                Some((name.trim().to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn every_exchange_counter_is_summed_across_tasks_and_exported_once() {
        let mut task = TransportCounters::new("udp");
        task.exchange = every_counter_distinct();
        let mut total = TransportCounters::new("udp");
        total.add(&task);
        total.add(&task);
        let mut out = Out(String::new());
        transports(&mut out, &[total.clone()]);
        let exported: Vec<&str> = out
            .0
            .lines()
            .filter(|l| {
                l.starts_with("coap2mqtt_coap_exchange_events_total")
                    || l.starts_with("coap2mqtt_coap_refused_total")
            })
            .collect();
        for (name, value) in fields(&task.exchange) {
            let summed = fields(&total.exchange)
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v);
            assert_eq!(summed, Some(2 * value), "{name} is not summed across tasks");
            let lines = exported
                .iter()
                .filter(|l| l.ends_with(&format!(" {}", 2 * value)))
                .count();
            assert_eq!(lines, 1, "{name} is exported {lines} times");
        }
    }

    #[test]
    fn histogram_bounds_are_exact_decimals() {
        assert_eq!(decimal(25_000, 6), "0.025");
        assert_eq!(decimal(2_500_000, 6), "2.5");
        assert_eq!(decimal(10_000_000, 6), "10");
        assert_eq!(decimal(1_083, 6), "0.001083");
        assert_eq!(decimal(64, 0), "64");
    }
}
