//! docs/BENCHMARKS.md's generated section and the SVG plots in docs/bench/.
//!
//! The section sits between two marker comments so the hand-written text
//! around it survives every run.

use crate::harness::ceiling::PublisherRun;
use crate::results::{median, E2eRun, Results, ThroughputPoint};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

const BEGIN: &str = "<!-- bench:generated:begin -->";
const END: &str = "<!-- bench:generated:end -->";

/// Targets are read in MB of 10^6 bytes: the stricter reading.
const MB: f64 = 1e6;

struct Row {
    figure: String,
    measured: String,
    ceiling: String,
    ratio: String,
    target: String,
    verdict: String,
}

fn row(figure: impl Into<String>, measured: impl Into<String>) -> Row {
    Row {
        figure: figure.into(),
        measured: measured.into(),
        ceiling: String::new(),
        ratio: String::new(),
        target: String::new(),
        verdict: String::new(),
    }
}

impl Row {
    fn ceiling(mut self, ceiling: f64, measured: f64, what: &str) -> Row {
        self.ceiling = format!("{} ({what})", rate(ceiling));
        self.ratio = if ceiling > 0.0 {
            format!("{:.0}%", 100.0 * measured / ceiling)
        } else {
            "-".into()
        };
        self
    }

    /// A ceiling that is not a rate: `ceiling` already says its unit.
    fn compared_with(mut self, ceiling: String, ratio: f64) -> Row {
        self.ceiling = ceiling;
        self.ratio = format!("{:.3}x", ratio);
        self
    }

    fn target(mut self, target: impl Into<String>, pass: bool) -> Row {
        self.target = target.into();
        self.verdict = if pass { "PASS" } else { "MISS" }.into();
        self
    }
}

/// The daemon's and the load generator's median CPU per message at a
/// throughput point: `25.3 µs; 9.1 µs`.
fn cpu_split(p: &ThroughputPoint) -> String {
    format!(
        "{:.1} µs; {:.1} µs",
        per_message(p, |run| run.daemon_cpu_us),
        per_message(p, |run| run.load.cpu_us)
    )
}

/// The median over a point's runs of `of(run)` per delivered message.
fn per_message(p: &ThroughputPoint, of: impl Fn(&E2eRun) -> u64) -> f64 {
    median_per(&p.runs, |run| run.delivered, of)
}

/// The median over `runs` of `of(run) / count(run)`: a figure per message.
fn median_per<T>(runs: &[T], count: impl Fn(&T) -> u64, of: impl Fn(&T) -> u64) -> f64 {
    median(
        &runs
            .iter()
            .map(|run| of(run) as f64 / count(run).max(1) as f64)
            .collect::<Vec<_>>(),
    )
}

fn rate(r: f64) -> String {
    format!("{:.0}/s", r)
}

fn point<'a>(r: &'a Results, kind: &str, c: usize) -> Option<&'a ThroughputPoint> {
    r.throughput
        .iter()
        .find(|p| p.kind == kind && p.concurrency == c)
}

fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let mqtt = r.ceilings.mqtt_median;
    rows.push(row(
        "Ceiling: bare rumqttc QoS 1 publisher -> mosquitto -> subscriber",
        rate(mqtt),
    ));
    for e in &r.ceilings.udp_echo {
        rows.push(row(
            format!(
                "Ceiling: UDP echo round trips, {} concurrent",
                e.concurrency
            ),
            format!("{} (p99 {} µs)", rate(e.median), e.latency_us.p99),
        ));
    }
    for kind in ["CON", "NON"] {
        for &c in &r.settings.concurrencies {
            let Some(p) = point(r, kind, c) else { continue };
            let echo = r
                .ceilings
                .udp_echo
                .iter()
                .find(|e| e.concurrency == c)
                .map_or(0.0, |e| e.median);
            let mut x = row(
                format!("{kind} end to end, plain UDP, {c} concurrent"),
                format!(
                    "{} (2.04s {}, {:.0}% of UDP echo)",
                    rate(p.median_e2e),
                    rate(p.median_coap),
                    if echo > 0.0 {
                        100.0 * p.median_coap / echo
                    } else {
                        0.0
                    }
                ),
            )
            .ceiling(mqtt, p.median_e2e, "MQTT");
            if kind == "CON" && c == 64 {
                x = x.target(">= 90% of MQTT ceiling", p.median_e2e >= 0.9 * mqtt);
            }
            if kind == "NON" && c == 64 {
                let con = point(r, "CON", 64).map_or(f64::MAX, |p| p.median_e2e);
                x = x.target(
                    format!(">= CON figure ({})", rate(con)),
                    p.median_e2e >= con,
                );
            }
            rows.push(x);
        }
    }
    for c in [1, 16, 64, 256] {
        let dtls = r
            .dtls
            .as_ref()
            .and_then(|d| d.throughput.iter().find(|p| p.concurrency == c));
        let Some(p) = dtls else {
            rows.push(row(
                format!("DTLS-PSK CON end to end, {c} concurrent"),
                "not measured in this run",
            ));
            continue;
        };
        let plain = point(r, "CON", c).map_or(0.0, |p| p.median_e2e);
        let mut x = row(
            format!("DTLS-PSK CON end to end, {c} concurrent"),
            format!(
                "{} (2.04s {}, p99 {} µs)",
                rate(p.median_e2e),
                rate(p.median_coap),
                p.latency_us.p99
            ),
        )
        .ceiling(plain, p.median_e2e, "plain CON");
        if c == 64 {
            x = x.target(">= 90% of the plain figure", p.median_e2e >= 0.9 * plain);
        }
        rows.push(x);
        if let (64, Some(plain)) = (c, point(r, "CON", c)) {
            rows.push(row(
                "CPU per message, CON 64 concurrent, plain and DTLS-PSK (daemon; load generator, which shares the two cores)",
                format!(
                    "plain {}; DTLS {}",
                    cpu_split(plain),
                    cpu_split(p)
                ),
            ));
        }
    }
    if let Some(con) = point(r, "CON", 64) {
        let daemon = per_message(con, |run| run.daemon_cpu_us);
        let broker = per_message(con, |run| run.broker_cpu_us);
        if broker > 0.0 {
            rows.push(
                row(
                    "CPU per delivered message, CON 64 concurrent (daemon; broker)",
                    format!("{daemon:.1} µs; broker {broker:.1} µs"),
                )
                .compared_with(format!("{broker:.1} µs (broker)"), daemon / broker)
                .target("<= 1.2x the broker's", daemon <= 1.2 * broker),
            );
            // Everything that runs per message on this machine's cores,
            // and what the same costs per message would take at the MQTT
            // ceiling's rate (an extrapolation: costs per message change
            // with the rate).
            let load = per_message(con, |run| run.load.cpu_us);
            let driver = per_message(con, |run| run.subscriber_cpu_us);
            let all = daemon + broker + load + driver;
            let ceiling = r.ceilings.mqtt_median;
            rows.push(row(
                "CPU per delivered message, CON 64 concurrent, every process (daemon; broker; load generator; bench driver with its subscriber)",
                format!(
                    "{daemon:.1}; {broker:.1}; {load:.1}; {driver:.1} µs = {all:.1} µs: about {:.2} cores at the MQTT ceiling's {} at these costs, on a {}-core machine",
                    all * ceiling / 1e6,
                    rate(ceiling),
                    r.machine.nproc
                ),
            ));
        }
        let written = per_message(con, |run| run.daemon_write_bytes);
        rows.push(row(
            "Bytes written to disk per message, CON 64 concurrent, broker up",
            format!("{written:.0}"),
        ));
    }
    if let Some((p50, p99)) = r.commit_latency_us {
        rows.push(row(
            "Commit latency (write + fsync), the daemon's own histogram, throughput runs",
            format!("p50 <= {p50} µs, p99 <= {p99} µs (bucket bounds)"),
        ));
    }
    if let Some(d) = &r.durability {
        rows.push(row(
            "What durability costs: CON 64 with fsync, against fsync made a no-op",
            format!(
                "{} against {} ({:.0}%); commit p50 <= {} µs, p99 <= {} µs",
                rate(d.median_with),
                rate(d.median_without),
                100.0 * d.median_with / d.median_without.max(1.0),
                d.commit_p50_us,
                d.commit_p99_us
            ),
        ));
    }
    if let Some(c) = &r.mqtt_versions {
        let cpu = |runs: &[E2eRun], of: fn(&E2eRun) -> u64| median_per(runs, |r| r.delivered, of);
        rows.push(
            row(
                "MQTT 5 (every property) against MQTT 3.1.1, CON 64 concurrent, end to end; CPU per delivered message (daemon; broker)",
                format!(
                    "{} against {} ({:.1}%); {:.1}; {:.1} µs against {:.1}; {:.1} µs",
                    rate(c.median_a),
                    rate(c.median_b),
                    100.0 * c.ratio(),
                    cpu(&c.a_runs, |run| run.daemon_cpu_us),
                    cpu(&c.a_runs, |run| run.broker_cpu_us),
                    cpu(&c.b_runs, |run| run.daemon_cpu_us),
                    cpu(&c.b_runs, |run| run.broker_cpu_us),
                ),
            )
            .target("within 10% of 3.1.1", c.ratio() >= 0.9),
        );
    }
    if let Some(c) = &r.payload_formats {
        rows.push(
            row(
                "CBOR published as JSON (payload = \"json\") against as it is, CON 64 concurrent",
                format!(
                    "{} against {} ({:.0}%)",
                    rate(c.median_a),
                    rate(c.median_b),
                    100.0 * c.ratio()
                ),
            )
            .target("within 15% of raw", c.ratio() >= 0.85),
        );
    }
    if let Some(f) = r.dtls.as_ref().and_then(|d| d.flood.as_ref()) {
        let growth = f.rss_after.saturating_sub(f.rss_before) as f64 / 1e6;
        rows.push(
            row(
                "Spoofed ClientHellos from distinct sources, one real DTLS device posting 100/s meanwhile",
                format!(
                    "{} hellos in {:.1} s: RSS {:.1} -> {:.1} MB (+{:.2} MB); the device {} of {} answered",
                    f.hellos,
                    f.seconds,
                    f.rss_before as f64 / 1e6,
                    f.rss_after as f64 / 1e6,
                    growth,
                    f.device_ok,
                    f.device_sent
                ),
            )
            .target(
                "<= 2 MB growth, device served",
                growth <= 2.0 && f.device_ok > 0 && f.device_ok == f.device_sent,
            ),
        );
    }
    if let Some(c) = &r.commands {
        rows.push(
            row(
                format!(
                    "Commands pushed to 64 awake devices ({:.0}/s published) under CON 64 load: delivered, publish-to-device latency; the uplink with them against without",
                    c.offered_per_s
                ),
                format!(
                    "{:.0}/s delivered, p50 {:.1} ms, p99 {:.1} ms; uplink {} against {} ({:.0}%)",
                    c.delivered_per_s,
                    c.latency_p50_us as f64 / 1000.0,
                    c.latency_p99_us as f64 / 1000.0,
                    rate(c.uplink.median_a),
                    rate(c.uplink.median_b),
                    100.0 * c.uplink.ratio()
                ),
            )
            .target("uplink within 10% of without", c.uplink.ratio() >= 0.9),
        );
    }
    if let Some(f) = &r.dedup {
        rows.push(
            row(
                "Deduplication table, heap per entry (65,536 entries)",
                format!(
                    "{:.1} B with 64 peers; {:.1} B with one entry per peer",
                    f.bytes_per_entry_64_peers, f.bytes_per_entry_one_per_peer
                ),
            )
            .target("<= 64 B", f.bytes_per_entry_64_peers <= 64.0),
        );
    }
    for p in &r.latency.points {
        let mut x = row(
            format!(
                "CoAP response latency at {:.0}% of max ({} offered, {} answered)",
                p.fraction * 100.0,
                rate(p.offered),
                rate(p.achieved_median)
            ),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms (p99 from schedule {:.2} ms)",
                p.p50_us as f64 / 1e3,
                p.p99_us as f64 / 1e3,
                p.p999_us as f64 / 1e3,
                p.p99_from_schedule_us as f64 / 1e3
            ),
        );
        if (p.fraction - 0.5).abs() < 1e-9 {
            x = x.target("p99 <= 2 ms", p.p99_us <= 2000);
        }
        rows.push(x);
    }
    if let Some(d) = &r.drain {
        rows.push(
            row(
                format!("Drain after outage, {} queued", d.fill.ok),
                format!(
                    "{} ({} delivered in {:.2} s; empty {:.2} s after the broker came up)",
                    rate(d.drain_rate),
                    d.delivered,
                    d.drain_seconds,
                    d.time_to_empty_s
                ),
            )
            .ceiling(mqtt, d.drain_rate, "MQTT")
            .target(">= 95% of MQTT ceiling", d.drain_rate >= 0.95 * mqtt),
        );
        rows.push(
            row(
                "Bytes written to disk per message, draining",
                format!(
                    "{:.1} ({:.1} µs CPU per message)",
                    d.write_bytes_per_message, d.cpu_us_per_message
                ),
            )
            .target("<= 200", d.write_bytes_per_message <= 200.0),
        );
        let ceiling_per = |of: fn(&PublisherRun) -> u64| {
            median_per(&r.ceilings.mqtt_runs, |run| run.received, of)
        };
        let (cb, cd) = (
            ceiling_per(|run| run.broker_cpu_us),
            ceiling_per(|run| run.driver_cpu_us),
        );
        let drained =
            d.cpu_us_per_message + d.broker_cpu_us_per_message + d.driver_cpu_us_per_message;
        rows.push(row(
            "CPU per delivered message, the MQTT ceiling (broker; bench driver: bare publisher and subscriber) against the drain (daemon; broker; bench driver: subscriber)",
            format!(
                "ceiling {cb:.1}; {cd:.1} µs = {:.1} µs, about {:.2} cores at its {} at these costs; drain {:.1}; {:.1}; {:.1} µs = {drained:.1} µs, {:.2} cores in use over the drain",
                cb + cd,
                (cb + cd) * mqtt / 1e6,
                rate(mqtt),
                d.cpu_us_per_message,
                d.broker_cpu_us_per_message,
                d.driver_cpu_us_per_message,
                d.cores,
            ),
        ));
        rows.push(row(
            "Queueing with the broker down (CON, 64 concurrent)",
            rate(d.fill_rate),
        ));
    }
    let m = &r.memory;
    rows.push(
        row(
            "RSS idle (of it: anonymous; file-backed: binary and libraries)",
            format!(
                "{} ({}; {})",
                mb(m.rss_idle),
                mb(m.rss_idle_anon),
                mb(m.rss_idle_file)
            ),
        )
        .target("<= 8 MB", (m.rss_idle as f64) <= 8.0 * MB),
    );
    rows.push(
        row("RSS under full load (peak)", mb(m.rss_full_load))
            .target("<= 32 MB", (m.rss_full_load as f64) <= 32.0 * MB),
    );
    if let Some(q) = &r.queued {
        let worst = q.rss_after_fill.max(q.rss_after_restart);
        rows.push(
            row(
                format!("RSS with {} queued", q.messages),
                format!(
                    "{} after filling (peak {}), {} after a restart",
                    mb(q.rss_after_fill),
                    mb(q.rss_peak_fill),
                    mb(q.rss_after_restart)
                ),
            )
            .target(
                target_at("<= 32 MB", q.messages, 2_000_000),
                (worst as f64) <= 32.0 * MB,
            ),
        );
        let at = |depth: u64| {
            q.rss_by_depth
                .iter()
                .find(|(d, _)| *d >= depth)
                .map(|(_, rss)| *rss)
        };
        if let (Some(small), Some(&(deepest, large))) = (at(100_000), q.rss_by_depth.last()) {
            let grew = large.saturating_sub(small);
            rows.push(
                row(
                    format!("RSS growth from 100,000 to {deepest} queued"),
                    format!("+{} ({} -> {})", mb(grew), mb(small), mb(large)),
                )
                .target(
                    target_at("<= 4 MB", deepest, 2_000_000),
                    (grew as f64) <= 4.0 * MB,
                ),
            );
        }
        rows.push(
            row(
                "Bytes written to disk per message, filling with the broker down",
                format!(
                    "{:.1} ({:.1} µs CPU per message)",
                    q.write_bytes_per_message, q.cpu_us_per_message
                ),
            )
            .target("<= 200", q.write_bytes_per_message <= 200.0),
        );
        rows.push(
            row(
                format!("Start to ready with {} queued", q.messages),
                format!(
                    "{:.3} s (empty store: {:.3} s)",
                    q.ready_after_restart_s, m.ready_empty_s
                ),
            )
            .target(
                target_at("<= 1 s", q.messages, 2_000_000),
                q.ready_after_restart_s <= 1.0,
            ),
        );
        rows.push(row(
            "On-disk bytes per queued message",
            format!(
                "{:.0} ({} payload bytes; du {} for {} messages)",
                q.bytes_per_message,
                r.settings.payload_bytes,
                mb(q.disk_bytes),
                q.messages
            ),
        ));
    }
    if let Some(d) = &r.drain {
        rows.push(row(
            "Store files shrink after a drain",
            format!(
                "{}: {} full, {} drained, {} after stop (depth at stop: {})",
                if d.shrank { "yes" } else { "no" },
                mb(d.disk_full_bytes),
                mb(d.disk_after_drain_bytes),
                mb(d.disk_after_stop_bytes),
                d.depth_at_stop
                    .map_or("not logged".into(), |n| n.to_string())
            ),
        ));
    }
    let idle = |n: usize| {
        r.dtls
            .as_ref()
            .and_then(|d| d.idle.iter().find(|i| i.sessions == n))
    };
    match idle(1_000) {
        Some(i) => {
            rows.push(
                row(
                    "PSK handshakes per second (1,000 devices, 64 at a time)",
                    format!(
                        "{} ({} of {} in {:.2} s)",
                        rate(i.handshakes_per_s),
                        i.connected,
                        i.sessions,
                        i.connect_s
                    ),
                )
                .target(">= 4,000/s", i.handshakes_per_s >= 4_000.0),
            );
            let extra = i.rss_with_sessions.saturating_sub(i.rss_before);
            rows.push(
                row(
                    "RSS with 1,000 idle DTLS sessions",
                    format!(
                        "{} ({} before: +{}, {:.1} KB per session)",
                        mb(i.rss_with_sessions),
                        mb(i.rss_before),
                        mb(extra),
                        extra as f64 / 1e3 / i.connected.max(1) as f64
                    ),
                )
                .target(
                    "<= 9 KB per session",
                    (extra as f64) <= 9_000.0 * i.connected.max(1) as f64,
                ),
            );
        }
        None => {
            rows.push(row("PSK handshakes per second", "not measured in this run"));
            rows.push(row(
                "RSS with 1,000 idle DTLS sessions",
                "not measured in this run",
            ));
        }
    }
    match idle(10_000) {
        Some(i) => rows.push(
            row(
                "RSS with 10,000 idle DTLS sessions",
                format!(
                    "{} ({} connected, {} failed, {:.0} handshakes/s; {} before)",
                    mb(i.rss_with_sessions),
                    i.connected,
                    i.failed,
                    i.handshakes_per_s,
                    mb(i.rss_before)
                ),
            )
            .target("<= 100 MB", (i.rss_with_sessions as f64) <= 100.0 * MB),
        ),
        None => rows.push(row(
            "RSS with 10,000 idle DTLS sessions",
            "not measured in this run",
        )),
    }
    rows
}

fn target_at(target: &str, n: u64, spec: u64) -> String {
    if n < spec {
        format!("{target} (at {spec}; this run queued {n})")
    } else {
        target.into()
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MB)
}

/// The table as Markdown.
pub fn summary_table(r: &Results) -> String {
    let mut s = String::new();
    s.push_str("| figure | measured | ceiling | ratio | target | verdict |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for x in rows(r) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            x.figure, x.measured, x.ceiling, x.ratio, x.target, x.verdict
        );
    }
    s
}

fn section(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    if r.mode == "quick" {
        s.push_str("> **Quick run (`scripts/bench --quick`): short runs, one repeat, small queues, on a machine that may have been busy. These figures are noisy and only show that the instrument works; quote a full run.**\n\n");
    }
    let _ = writeln!(
        s,
        "Mode: **{}**, {} runs per point (medians quoted), {} s per throughput point, {}-byte payloads, mqtt.inflight {}, store.commit_max_batch {}; whole run {:.0} s.\n",
        r.mode,
        r.settings.repeats,
        r.settings.duration_s,
        r.settings.payload_bytes,
        r.settings.inflight,
        r.settings.commit_max_batch,
        r.total_seconds
    );
    if !r.settings.daemon_env.is_empty() {
        let _ = writeln!(
            s,
            "Daemon environment: `{}`.\n",
            r.settings.daemon_env.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "Machine: {} cores, {}, {:.1} GiB, {}; {}; {}; 1-minute load average at start {:.2}.\n",
        m.nproc, m.cpu_model, m.memory_gib, m.kernel, m.mosquitto, m.rustc, m.loadavg_at_start
    );
    s.push_str(&summary_table(r));
    s.push('\n');
    let mut issues = Vec::new();
    for p in &r.throughput {
        for run in &p.runs {
            if run.missing != 0
                || run.duplicates != 0
                || run.out_of_order != 0
                || run.load.timeouts != 0
            {
                issues.push(format!(
                    "{}: answered {}, delivered {}, missing {}, duplicates {}, out of order {}, CON timeouts {}, retransmissions {}",
                    run.run, run.load.ok, run.delivered, run.missing, run.duplicates, run.out_of_order, run.load.timeouts, run.load.retransmissions
                ));
            }
        }
    }
    if let Some(d) = &r.drain {
        if d.delivered != d.fill.ok || d.duplicates != 0 || d.out_of_order != 0 {
            issues.push(format!(
                "drain: answered {}, delivered {}, duplicates {}, out of order {}",
                d.fill.ok, d.delivered, d.duplicates, d.out_of_order
            ));
        }
    }
    if issues.is_empty() {
        s.push_str("Subscriber checks: every message answered 2.04 arrived, no duplicates, per-topic order kept.\n\n");
    } else {
        s.push_str("Subscriber checks found:\n\n");
        for i in issues {
            let _ = writeln!(s, "- {i}");
        }
        s.push('\n');
    }
    if !r.daemon_warnings.is_empty() {
        s.push_str("Daemon warnings during the run (first few):\n\n```\n");
        for w in r.daemon_warnings.iter().take(10) {
            let _ = writeln!(s, "{w}");
        }
        s.push_str("```\n\n");
    }
    s.push_str("![throughput against concurrency](bench/throughput.svg)\n\n");
    s.push_str("![latency percentiles at fixed offered rates](bench/latency.svg)\n\n");
    if r.queued.is_some() {
        s.push_str(
            "![RSS against queue depth, 0.1's sled store and this run](bench/rss-by-depth.svg)\n\n",
        );
    }
    s.push_str("Raw figures: `target/bench/results.json` of the run.\n");
    s
}

/// Rewrites the generated section of docs/BENCHMARKS.md and the plots.
pub fn write_docs(root: &Path, r: &Results) -> anyhow::Result<()> {
    let docs = root.join("docs");
    let plots = docs.join("bench");
    std::fs::create_dir_all(&plots)?;
    plot_throughput(&plots.join("throughput.svg"), r)?;
    plot_latency(&plots.join("latency.svg"), r)?;
    if let Some(q) = &r.queued {
        plot_rss_by_depth(&plots.join("rss-by-depth.svg"), &q.rss_by_depth)?;
    }
    let path = docs.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let body = format!("{BEGIN}\n{}{END}", section(r));
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &old[..b], body, &old[e + END.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), body),
    };
    std::fs::write(&path, new)?;
    Ok(())
}

fn plot_throughput(path: &Path, r: &Results) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut top = r.ceilings.mqtt_median;
    for p in &r.throughput {
        top = top.max(p.median_e2e);
    }
    for e in &r.ceilings.udp_echo {
        top = top.max(e.median);
    }
    let top = (top * 1.15).max(1.0);
    let title = format!("coap2mqtt throughput, plain UDP ({} run)", r.mode);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..256f64).log_scale(), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("concurrent devices (closed loop)")
        .y_desc("messages per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let series = |kind: &str| -> Vec<(f64, f64)> {
        r.throughput
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| (p.concurrency as f64, p.median_e2e))
            .collect()
    };
    let styles = [
        ("CON end to end", series("CON"), BLUE),
        ("NON end to end", series("NON"), GREEN),
        (
            "UDP echo ceiling",
            r.ceilings
                .udp_echo
                .iter()
                .map(|e| (e.concurrency as f64, e.median))
                .collect(),
            BLACK,
        ),
    ];
    for (name, data, color) in styles {
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(PointSeries::of_element(data, 4, color, &|c, s, st| {
            Circle::new(c, s, st.filled())
        }))?;
    }
    let mqtt = r.ceilings.mqtt_median;
    chart
        .draw_series(LineSeries::new(
            vec![(1.0, mqtt), (256.0, mqtt)],
            RED.stroke_width(1),
        ))?
        .label("MQTT QoS 1 ceiling")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    let half = mqtt * 0.5;
    chart
        .draw_series(LineSeries::new(
            vec![(1.0, half), (256.0, half)],
            MAGENTA.stroke_width(1),
        ))?
        .label("target: 50% of MQTT ceiling")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// RSS of 0.1 (its sled store) against queue depth, as measured for the
/// footprint issue (release build, 64 devices, 32-byte CON payloads, broker
/// unreachable): (messages queued, MB).
const SLED_RSS_BY_DEPTH: [(f64, f64); 4] = [
    (0.0, 7.3),
    (250_000.0, 83.0),
    (1_000_000.0, 106.0),
    (2_000_000.0, 127.0),
];

/// RSS against queue depth: 0.1's sled store, and this run.
fn plot_rss_by_depth(path: &Path, measured: &[(u64, u64)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let now: Vec<(f64, f64)> = measured
        .iter()
        .map(|(d, rss)| (*d as f64, *rss as f64 / MB))
        .collect();
    let deepest = now
        .iter()
        .map(|p| p.0)
        .chain(SLED_RSS_BY_DEPTH.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Daemon RSS against messages queued (broker down)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..deepest * 1.05, 0f64..140f64)?;
    chart
        .configure_mesh()
        .x_desc("messages queued")
        .y_desc("RSS, MB")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1e3))
        .draw()?;
    for (name, data, color) in [
        (
            "0.1 (sled store), measured for the issue",
            SLED_RSS_BY_DEPTH.to_vec(),
            RED,
        ),
        ("this run (segment log)", now, BLUE),
    ] {
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(PointSeries::of_element(data, 4, color, &|c, s, st| {
            Circle::new(c, s, st.filled())
        }))?;
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 32.0), (deepest * 1.05, 32.0)],
            BLACK.stroke_width(1),
        ))?
        .label("target: <= 32 MB")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_latency(path: &Path, r: &Results) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts = &r.latency.points;
    let mut top = 2.5f64;
    let mut bottom = 1.0f64;
    for p in pts {
        top = top.max(p.p999_us as f64 / 1e3);
        bottom = bottom.min((p.p50_us as f64 / 1e3).max(0.001));
    }
    let title = format!(
        "CoAP response latency at fixed offered rates (max {:.0}/s, {} run)",
        r.latency.max_rate, r.mode
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..100f64, (bottom * 0.8..top * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered load, % of the measured maximum")
        .y_desc("latency, ms")
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()?;
    let lines = [
        (
            "p50",
            pts.iter()
                .map(|p| (p.fraction * 100.0, p.p50_us as f64 / 1e3))
                .collect::<Vec<_>>(),
            BLUE,
        ),
        (
            "p99",
            pts.iter()
                .map(|p| (p.fraction * 100.0, p.p99_us as f64 / 1e3))
                .collect(),
            GREEN,
        ),
        (
            "p99.9",
            pts.iter()
                .map(|p| (p.fraction * 100.0, p.p999_us as f64 / 1e3))
                .collect(),
            BLACK,
        ),
    ];
    for (name, data, color) in lines {
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(PointSeries::of_element(data, 4, color, &|c, s, st| {
            Circle::new(c, s, st.filled())
        }))?;
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 2.0), (100.0, 2.0)],
            RED.stroke_width(1),
        ))?
        .label("target: p99 <= 2 ms at 50%")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
