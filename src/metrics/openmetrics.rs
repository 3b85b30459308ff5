//! `/metrics`: the figures in the OpenMetrics text format, written by the
//! Prometheus project's own client library (prometheus-client).
//!
//! Nothing is registered figure by figure: the figures stay where they are
//! counted (the store's and the uplink's atomics, the transports'
//! snapshots), and one [`Collector`] reads them at each scrape. So the hot
//! path never touches the library, and a scrape costs what it did when the
//! text was written by hand.
//!
//! Names: the registry adds the `coap2mqtt_` prefix, and the encoder adds
//! `_total` to a counter's samples (OpenMetrics names a counter's family
//! without it), and `_seconds`/`_bytes` for a unit. So a family is declared
//! here as `queue_appended` and its sample is still
//! `coap2mqtt_queue_appended_total`, the name it had in 0.1. The test
//! `every_sample_name_of_0_1_is_still_exposed` holds that list.

use super::transport::{code_name, MESSAGE_TYPES};
use super::{Histogram, Metrics, TransportCounters, Verdict};
use crate::clock::now_ms;
use crate::coap::counters::Family;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Weak;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry `/metrics` is written from: one collector over `metrics`.
/// It holds a weak reference because `Metrics` owns the registry.
pub(super) fn registry(metrics: Weak<Metrics>) -> Registry {
    let mut registry = Registry::with_prefix("coap2mqtt");
    registry.register_collector(Box::new(Figures(metrics)));
    registry
}

/// Reads every figure at scrape time.
struct Figures(Weak<Metrics>);

impl fmt::Debug for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Figures")
    }
}

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let Some(m) = self.0.upgrade() else {
            return Ok(());
        };
        let verdict = m.check();
        daemon(&mut e, &m, &verdict)?;
        transports(&mut e, &m.transports())?;
        queue(&mut e, &m)?;
        uplink(&mut e, &m)?;
        devices(&mut e, &m)?;
        commands(&mut e, &m)
    }
}

/// The command mailboxes (only with command tables).
fn commands(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let Some(service) = m.commands() else {
        return Ok(());
    };
    let (pending, oldest) = service.pending();
    gauge(
        e,
        "commands_pending",
        None,
        "Commands waiting in device mailboxes.",
        pending as u64,
    )?;
    let age = oldest.map_or(0.0, |t| {
        crate::clock::now_ms().saturating_sub(t) as f64 / 1000.0
    });
    gauge(
        e,
        "commands_oldest_age",
        Some(&Unit::Seconds),
        "Age of the oldest pending command (0 when none).",
        age,
    )?;
    let c = &service.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    counters(
        e,
        "commands",
        "Commands by what became of them: queued (journaled, acknowledged to the broker), \
         delivered (handed to a device, repeats included), done, failed (the device said so), \
         expired, rejected (caps, size), unmatched (no table takes the topic).",
        [
            ("queued", load(&c.queued)),
            ("delivered", load(&c.delivered)),
            ("done", load(&c.done)),
            ("failed", load(&c.failed)),
            ("expired", load(&c.expired)),
            ("rejected", load(&c.rejected)),
            ("unmatched", load(&c.unmatched)),
        ]
        .map(|(outcome, n)| ([("outcome", outcome)], n)),
    )
}

/// Aggregates of the device table only: per-device figures would make one
/// label set per device (see `crate::devices`).
fn devices(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let Some(table) = m.devices() else {
        return Ok(());
    };
    let now = crate::clock::now_ms();
    let (known, recent, hour, evicted) = {
        let table = table.lock().unwrap_or_else(|p| p.into_inner());
        (
            table.len(),
            table.heard_since(now.saturating_sub(5 * 60 * 1000)),
            table.heard_since(now.saturating_sub(60 * 60 * 1000)),
            table.evicted(),
        )
    };
    gauge(
        e,
        "devices_known",
        None,
        "Devices in the device table (at most admin.max_devices).",
        known as u64,
    )?;
    let mut f = family(
        e,
        "devices_heard",
        None,
        MetricType::Gauge,
        "Devices heard from within the window (\"5m\" or \"1h\").",
    )?;
    for (window, n) in [("5m", recent), ("1h", hour)] {
        f.encode_family(&[("window", window)])?
            .encode_gauge(&(n as u64))?;
    }
    counter(
        e,
        "devices_evicted",
        "Devices pushed out of the full device table by newer ones.",
        evicted,
    )
}

/// One family: its `# HELP` and `# TYPE` (and `# UNIT`) lines.
fn family<'e>(
    e: &'e mut DescriptorEncoder,
    name: &'e str,
    unit: Option<&'e Unit>,
    kind: MetricType,
    help: &str,
) -> Result<MetricEncoder<'e>, fmt::Error> {
    e.encode_descriptor(name, help, unit, kind)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    family(e, name, unit, MetricType::Gauge, help)?.encode_gauge(&value)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    family(e, name, None, MetricType::Counter, help)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A family of counters, one sample per label set.
fn counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut f = family(e, name, None, MetricType::Counter, help)?;
    for (labels, n) in samples {
        f.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    Ok(())
}

/// A histogram whose bounds are integers: `scale` 1e6 writes microseconds
/// as seconds.
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    h: &Histogram,
    scale: f64,
) -> fmt::Result {
    let (cumulative, sum, count) = h.snapshot();
    // The encoder cumulates itself: give it each bucket's own count, and
    // the overflow as the +Inf bucket.
    let mut buckets = Vec::with_capacity(cumulative.len() + 1);
    let mut below = 0;
    for (bound, running) in cumulative {
        buckets.push((bound as f64 / scale, running.saturating_sub(below)));
        below = running;
    }
    buckets.push((f64::INFINITY, count.saturating_sub(below)));
    family(e, name, unit, MetricType::Histogram, help)?.encode_histogram::<NoLabelSet>(
        sum as f64 / scale,
        count.max(below),
        &buckets,
        None,
    )
}

fn daemon(e: &mut DescriptorEncoder, m: &Metrics, verdict: &Verdict) -> fmt::Result {
    family(e, "build", None, MetricType::Info, "The running version.")?
        .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
    gauge(
        e,
        "start_time",
        Some(&Unit::Seconds),
        "When the daemon started, in seconds since the Unix epoch.",
        m.started_ms as f64 / 1000.0,
    )?;
    gauge(
        e,
        "healthy",
        None,
        "1 when /healthz answers 200.",
        u32::from(verdict.healthy()),
    )?;
    gauge(
        e,
        "alive",
        None,
        "1 while the watchdog is fed: commit and publish make progress or are idle.",
        u32::from(verdict.alive()),
    )
}

fn transports(e: &mut DescriptorEncoder, all: &[TransportCounters]) -> fmt::Result {
    counters(
        e,
        "coap_datagrams",
        "Datagrams received, by transport and CoAP message type (\"short\": not even a CoAP header).",
        all.iter().flat_map(|t| {
            t.datagrams.iter().enumerate().map(|(i, n)| {
                let kind = MESSAGE_TYPES.get(i).copied().unwrap_or("short");
                ([("transport", t.kind), ("type", kind)], *n)
            })
        }),
    )?;
    counters(
        e,
        "coap_requests",
        "Datagrams holding a request, by transport and message type (retransmissions included).",
        all.iter().flat_map(|t| {
            t.requests
                .iter()
                .zip(MESSAGE_TYPES)
                .take(2)
                .map(|(n, kind)| ([("transport", t.kind), ("type", kind)], *n))
        }),
    )?;
    counters(
        e,
        "coap_responses",
        "Messages sent to devices, by transport, message type and code (RST and empty ACK are 0.00).",
        all.iter().flat_map(|t| {
            let mut sorted = t.responses.clone();
            sorted.sort();
            sorted.into_iter().map(|((kind, code), n)| {
                let labels = vec![
                    ("transport", t.kind.to_string()),
                    ("type", MESSAGE_TYPES[usize::from(kind & 3)].to_string()),
                    ("code", code_name(code)),
                ];
                (labels, n)
            })
        }),
    )?;
    counters(
        e,
        "coap_dropped",
        "Datagrams dropped without an answer, by transport and reason.",
        all.iter().flat_map(|t| {
            t.dropped
                .iter()
                .map(|(reason, n)| ([("transport", t.kind), ("reason", *reason)], *n))
        }),
    )?;
    counters(
        e,
        "coap_refused",
        "Requests refused with an error response, by transport and reason.",
        all.iter().flat_map(|t| {
            exported(t, Family::Refused)
                .map(|(reason, n)| ([("transport", t.kind), ("reason", reason)], n))
        }),
    )?;
    counters(
        e,
        "coap_exchange_events",
        "What the CoAP exchange did, by transport and event.",
        all.iter().flat_map(|t| {
            exported(t, Family::Event)
                .map(|(event, n)| ([("transport", t.kind), ("event", event)], n))
        }),
    )?;
    let mut tables = family(
        e,
        "table_entries",
        None,
        MetricType::Gauge,
        "Entries in the bounded per-peer tables, by transport and table (dedup, uploads, dtls_peers, dtls_handshaking).",
    )?;
    for t in all {
        for (table, n) in &t.tables {
            tables
                .encode_family(&[("transport", t.kind), ("table", *table)])?
                .encode_gauge(n)?;
        }
    }
    counters(
        e,
        "dtls_handshakes",
        "DTLS handshakes, by outcome.",
        all.iter().flat_map(|t| {
            t.handshakes
                .iter()
                .map(|(outcome, n)| ([("transport", t.kind), ("outcome", *outcome)], *n))
        }),
    )
}

/// The exchange's counters of one family (declared once, in
/// `coap::counters`): (label, value).
fn exported(t: &TransportCounters, family: Family) -> impl Iterator<Item = (&'static str, u64)> {
    t.exchange
        .exported()
        .into_iter()
        .filter(move |(f, _, _)| *f == family)
        .map(|(_, label, n)| (label, n))
}

fn queue(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let s = m.queue.stats();
    let (depth, bytes) = m.queue.depth();
    gauge(
        e,
        "queue_messages",
        None,
        "Messages waiting for the broker.",
        depth,
    )?;
    gauge(
        e,
        "queue",
        Some(&Unit::Bytes),
        "Bytes the queue's segment files take (what store.max_bytes limits).",
        bytes,
    )?;
    let age = m
        .queue
        .oldest_received_ms()
        .map(|t| now_ms().saturating_sub(t) as f64 / 1000.0)
        .unwrap_or(0.0);
    gauge(
        e,
        "queue_oldest_age",
        Some(&Unit::Seconds),
        "Age of the oldest waiting message; 0 when the queue is empty.",
        age,
    )?;
    gauge(
        e,
        "queue_disk",
        Some(&Unit::Bytes),
        "Bytes the store's files take on disk (segments are deleted once the broker has them).",
        m.queue.size_on_disk(),
    )?;
    gauge(
        e,
        "queue_dead_letters",
        None,
        "Messages in the dead-letter tree.",
        s.dead_letters.load(Relaxed),
    )?;
    for (name, help, n) in [
        ("queue_appended", "Messages made durable.", &s.appended),
        (
            "queue_removed",
            "Messages removed after the broker took them.",
            &s.removed,
        ),
        (
            "queue_rejected_full",
            "Messages refused because the queue was full (on_full = reject).",
            &s.rejected_full,
        ),
        (
            "queue_dropped_oldest",
            "Queued messages deleted to make room (on_full = drop-oldest).",
            &s.dropped_oldest,
        ),
        (
            "queue_lost_to_damage",
            "Queued messages that could not be read back (damage on disk) and were given up.",
            &s.lost_to_damage,
        ),
        (
            "queue_failed_appends",
            "Messages refused because their commit failed.",
            &s.failed_appends,
        ),
        (
            "queue_dead_letters_requeued",
            "Dead letters an operator put back at the tail of the queue.",
            &s.dead_letters_requeued,
        ),
        (
            "queue_dead_letters_purged",
            "Dead letters an operator deleted.",
            &s.dead_letters_purged,
        ),
        ("store_commits", "Commit batches applied.", &s.commits),
        (
            "store_commit_errors",
            "Commit batches that failed.",
            &s.commit_errors,
        ),
    ] {
        counter(e, name, help, n.load(Relaxed))?;
    }
    gauge(
        e,
        "store_writable",
        None,
        "0 when the last commit failed.",
        u32::from(s.commit.last_ok()),
    )?;
    histogram(
        e,
        "store_commit_batch_size",
        None,
        "Commands per commit batch.",
        &s.commit.batch_size,
        1.0,
    )?;
    histogram(
        e,
        "store_commit",
        Some(&Unit::Seconds),
        "Time to apply and flush one commit batch.",
        &s.commit.latency_us,
        1e6,
    )
}

fn uplink(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let Some(u) = m.uplink.get() else {
        return Ok(());
    };
    let s = &u.stats;
    gauge(
        e,
        "mqtt_connected",
        None,
        "1 while connected to the broker.",
        u32::from(s.connected.load(Relaxed)),
    )?;
    gauge(
        e,
        "mqtt_protocol_version",
        None,
        "The MQTT version of the current session: 4 (3.1.1) or 5; 0 when not connected.",
        u32::from(s.version.load(Relaxed)),
    )?;
    counters(
        e,
        "mqtt_puback_refusals",
        "MQTT 5 PUBACKs with a failing reason code, by reason (not acks: retried or dead-lettered).",
        s.nacks.iter().enumerate().map(|(i, n)| {
            let reason = crate::uplink::NACK_REASONS
                .get(i)
                .map_or("other", |code| crate::uplink::session::reason_name(*code));
            ([("reason", reason)], n.load(Relaxed))
        }),
    )?;
    for (name, help, n) in [
        (
            "mqtt_connects",
            "Successful connections (each one after the first is a reconnect).",
            &s.connects,
        ),
        (
            "mqtt_connect_failures",
            "Connection attempts that failed.",
            &s.connection_failures,
        ),
        (
            "mqtt_published",
            "PUBLISH packets written (status messages included).",
            &s.published,
        ),
        ("mqtt_acked", "Messages acknowledged by PUBACK.", &s.acked),
        (
            "mqtt_resent",
            "Messages published again after a reconnect (at-least-once retries).",
            &s.resent,
        ),
        (
            "mqtt_dead_lettered",
            "Messages the uplink moved to the dead letters.",
            &s.dead_lettered,
        ),
        (
            "mqtt_expired",
            "Messages removed unpublished: they waited longer than their route's expiry_s.",
            &s.expired,
        ),
        (
            "mqtt_failovers",
            "Sessions on a broker other than the previous session's.",
            &s.failovers,
        ),
    ] {
        counter(e, name, help, n.load(Relaxed))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Thresholds;
    use crate::store::{Limits, OnFull, Queue};
    use std::sync::Arc;

    /// Every sample name /metrics had in coap2mqtt 0.1 (its hand-written
    /// Prometheus text): dashboards and alerts written against 0.1 keep
    /// working. A name leaves this list only with a CHANGELOG entry.
    const NAMES_OF_0_1: &[&str] = &[
        "coap2mqtt_build_info",
        "coap2mqtt_start_time_seconds",
        "coap2mqtt_healthy",
        "coap2mqtt_alive",
        "coap2mqtt_coap_datagrams_total",
        "coap2mqtt_coap_requests_total",
        "coap2mqtt_coap_responses_total",
        "coap2mqtt_coap_dropped_total",
        "coap2mqtt_coap_refused_total",
        "coap2mqtt_coap_exchange_events_total",
        "coap2mqtt_table_entries",
        "coap2mqtt_dtls_handshakes_total",
        "coap2mqtt_queue_messages",
        "coap2mqtt_queue_bytes",
        "coap2mqtt_queue_oldest_age_seconds",
        "coap2mqtt_queue_disk_bytes",
        "coap2mqtt_queue_dead_letters",
        "coap2mqtt_queue_appended_total",
        "coap2mqtt_queue_removed_total",
        "coap2mqtt_queue_rejected_full_total",
        "coap2mqtt_queue_dropped_oldest_total",
        "coap2mqtt_queue_lost_to_damage_total",
        "coap2mqtt_queue_failed_appends_total",
        "coap2mqtt_store_commits_total",
        "coap2mqtt_store_commit_errors_total",
        "coap2mqtt_store_writable",
        "coap2mqtt_store_commit_batch_size_bucket",
        "coap2mqtt_store_commit_batch_size_sum",
        "coap2mqtt_store_commit_batch_size_count",
        "coap2mqtt_store_commit_seconds_bucket",
        "coap2mqtt_store_commit_seconds_sum",
        "coap2mqtt_store_commit_seconds_count",
        "coap2mqtt_mqtt_connected",
        "coap2mqtt_mqtt_protocol_version",
        "coap2mqtt_mqtt_puback_refusals_total",
        "coap2mqtt_mqtt_connects_total",
        "coap2mqtt_mqtt_connect_failures_total",
        "coap2mqtt_mqtt_published_total",
        "coap2mqtt_mqtt_acked_total",
        "coap2mqtt_mqtt_resent_total",
        "coap2mqtt_mqtt_dead_lettered_total",
        "coap2mqtt_mqtt_expired_total",
        "coap2mqtt_mqtt_failovers_total",
    ];

    /// A daemon's figures over a fresh queue, with an uplink and one
    /// transport task of each kind that has seen something of everything.
    fn figures(dir: &std::path::Path) -> Arc<Metrics> {
        let limits = Limits {
            max_messages: 100,
            max_bytes: 1 << 20,
            on_full: OnFull::Reject,
        };
        let queue = Queue::open(&dir.join("q"), limits).expect("opens").queue;
        let m = Metrics::new(queue, || Some(0), Thresholds::default());
        m.set_uplink(Arc::default(), "mqtt://127.0.0.1:1883".into());
        for kind in ["udp", "dtls"] {
            let mut t = m.transport(kind);
            t.datagram(&[0x40, 0x02, 0, 1]);
            t.response(&[0x60, 0x44, 0, 1]);
            t.dropped("duplicate");
            t.set_handshakes(vec![("ok", 1)]);
            t.set_tables(vec![("dedup", 1)]);
            t.publish(&Default::default());
        }
        m
    }

    fn sample_names(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split([' ', '{']).next())
            .collect()
    }

    #[test]
    fn every_sample_name_of_0_1_is_still_exposed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = figures(dir.path()).render();
        let exposed = sample_names(&text);
        for name in NAMES_OF_0_1 {
            assert!(exposed.contains(name), "{name} is gone from:\n{text}");
        }
    }

    #[test]
    fn an_operators_requeues_and_purges_of_dead_letters_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = figures(dir.path());
        let stats = m.queue.stats();
        stats.dead_letters_requeued.store(3, Relaxed);
        stats.dead_letters_purged.store(2, Relaxed);
        let text = m.render();
        assert!(
            text.contains("coap2mqtt_queue_dead_letters_requeued_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("coap2mqtt_queue_dead_letters_purged_total 2\n"),
            "{text}"
        );
    }

    #[test]
    fn the_exposition_is_openmetrics_and_ends_with_eof() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = figures(dir.path()).render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        // OpenMetrics names a counter's family without `_total`.
        assert!(
            text.contains("# TYPE coap2mqtt_queue_appended counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT coap2mqtt_store_commit_seconds seconds\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "coap2mqtt_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn commit_latency_buckets_are_cumulative_seconds_up_to_inf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = figures(dir.path());
        let latency = &m.queue.stats().commit.latency_us;
        latency.observe(40); // 50 µs bucket
        latency.observe(2_400); // 2.5 ms bucket
        latency.observe(60_000_000); // past the last bound: +Inf only
        let text = m.render();
        let bucket = |le: &str| format!("coap2mqtt_store_commit_seconds_bucket{{le=\"{le}\"}} ");
        for (le, n) in [("0.00005", 1), ("0.0025", 2), ("10.0", 2), ("+Inf", 3)] {
            assert!(
                text.contains(&format!("{}{n}\n", bucket(le))),
                "{le}:\n{text}"
            );
        }
        assert!(text.contains("coap2mqtt_store_commit_seconds_count 3\n"));
    }

    /// The transports' counters alone, in a registry of their own.
    #[derive(Debug)]
    struct Transports(Vec<TransportCounters>);

    impl Collector for Transports {
        fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
            transports(&mut e, &self.0)
        }
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
            message_ids_reused: 1044,
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
        let mut registry = Registry::with_prefix("coap2mqtt");
        registry.register_collector(Box::new(Transports(vec![total.clone()])));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let exported: Vec<&str> = text
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
}
