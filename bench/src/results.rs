//! The bench driver's results: what target/bench/results.json holds and
//! what docs/BENCHMARKS.md's generated section is made from.

use crate::harness::ceiling::PublisherRun;
use crate::harness::machine::Machine;
use crate::load::{Latency, LoadReport};
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Results {
    /// "quick" (smoke test, noisy, small counts) or "full".
    pub mode: String,
    pub started_unix_s: u64,
    pub total_seconds: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub ceilings: Ceilings,
    /// End to end, plain UDP, closed loop.
    pub throughput: Vec<ThroughputPoint>,
    pub latency: LatencyPhase,
    pub drain: Option<Drain>,
    pub memory: Memory,
    pub queued: Option<Queued>,
    pub dtls: Option<DtlsPhase>,
    pub durability: Option<DurabilityCost>,
    /// MQTT 5 (with every property) against MQTT 3.1.1, end to end.
    pub mqtt_versions: Option<Comparison>,
    /// CBOR published as JSON (`payload = "json"`) against as it is.
    pub payload_formats: Option<Comparison>,
    /// Commands pushed to awake devices under upload load.
    pub commands: Option<CommandsPhase>,
    pub dedup: Option<DedupFootprint>,
    /// The main daemon's commit latency over the throughput runs (its own
    /// histogram): p50, p99 as bucket bounds in µs.
    pub commit_latency_us: Option<(u64, u64)>,
    /// Figures the instrument cannot measure yet, and why.
    pub not_measured: Vec<(String, String)>,
    /// Warnings and errors the daemon logged during the run.
    pub daemon_warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    pub duration_s: f64,
    pub repeats: usize,
    pub concurrencies: Vec<usize>,
    pub payload_bytes: usize,
    pub inflight: u16,
    pub commit_max_batch: usize,
    pub latency_devices: usize,
    pub latency_duration_s: f64,
    pub drain_messages: u64,
    pub queued_messages: u64,
    /// Extra environment the daemon ran with (--daemon-env).
    pub daemon_env: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ceilings {
    /// Bare rumqttc QoS 1 publisher -> mosquitto -> subscriber.
    pub mqtt_runs: Vec<PublisherRun>,
    pub mqtt_median: f64,
    /// UDP echo round trips per second, per concurrency (CON).
    pub udp_echo: Vec<EchoPoint>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EchoPoint {
    pub concurrency: usize,
    pub runs: Vec<f64>,
    pub median: f64,
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct E2eRun {
    pub run: String,
    pub load: LoadReport,
    /// Distinct messages the subscriber received for this run.
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Answered 2.04 but never seen by the subscriber.
    pub missing: i64,
    /// Delivered within the load window / window.
    pub e2e_rate: f64,
    /// UDP receive-buffer drops on this machine during the run (kernel
    /// counter, /proc/net/snmp RcvbufErrors): datagrams a socket had no
    /// room for.
    pub rcvbuf_errors: u64,
    /// 2.04s per second at the device.
    pub coap_rate: f64,
    /// CPU time (user + system) of the daemon and of the broker during the
    /// run, and bytes the daemon wrote to disk (/proc/PID/stat, /proc/PID/io).
    pub daemon_cpu_us: u64,
    pub broker_cpu_us: u64,
    pub daemon_write_bytes: u64,
    /// CPU time of the bench driver during the run: mostly its MQTT
    /// subscriber, which counts every delivered message, and its RSS
    /// sampler (throughput runs only).
    #[serde(default)]
    pub subscriber_cpu_us: u64,
}

impl E2eRun {
    /// CPU µs per delivered message: (daemon, broker).
    pub fn cpu_per_message(&self) -> (f64, f64) {
        let n = self.delivered.max(1) as f64;
        (self.daemon_cpu_us as f64 / n, self.broker_cpu_us as f64 / n)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ThroughputPoint {
    /// "CON" or "NON".
    pub kind: String,
    pub concurrency: usize,
    pub runs: Vec<E2eRun>,
    pub median_e2e: f64,
    pub median_coap: f64,
    /// Of the median run.
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyPhase {
    /// The maximum the offered rates are fractions of: the best median CON
    /// end-to-end rate over the concurrencies.
    pub max_rate: f64,
    pub points: Vec<LatencyPoint>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyPoint {
    pub fraction: f64,
    pub offered: f64,
    pub achieved_median: f64,
    /// Median over repeats of each percentile, µs.
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// p99 measured from the scheduled send time (generator lateness and
    /// backlog included).
    pub p99_from_schedule_us: u64,
    pub runs: Vec<LoadReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Drain {
    pub messages: u64,
    /// CON 2.04s per second while filling with the broker down.
    pub fill_rate: f64,
    pub fill: LoadReport,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// First to last delivery.
    pub drain_seconds: f64,
    pub drain_rate: f64,
    /// Bytes the daemon wrote to disk per message while draining.
    pub write_bytes_per_message: f64,
    pub cpu_us_per_message: f64,
    /// Mosquitto's CPU and the bench driver's (its subscriber), per
    /// message, from the broker's start to the last delivery and the acks
    /// after it (the daemon's figure spans the same).
    pub broker_cpu_us_per_message: f64,
    pub driver_cpu_us_per_message: f64,
    /// The three's CPU over that span / its wall time: cores in use.
    pub cores: f64,
    /// Broker accepting TCP to last delivery (includes reconnect backoff).
    pub time_to_empty_s: f64,
    pub disk_full_bytes: u64,
    pub disk_after_drain_bytes: u64,
    pub disk_after_stop_bytes: u64,
    pub shrank: bool,
    /// Depth the daemon logged at shutdown after the drain.
    pub depth_at_stop: Option<u64>,
    pub rss_peak_drain: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub rss_idle: u64,
    /// Of `rss_idle`: the process's own memory (heap, stacks) and the
    /// pages of files it maps (its binary and libraries; shared, clean,
    /// and the kernel's to drop under pressure).
    pub rss_idle_anon: u64,
    pub rss_idle_file: u64,
    pub rss_full_load: u64,
    pub ready_empty_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Queued {
    pub messages: u64,
    pub fill_rate: f64,
    pub fill: LoadReport,
    pub rss_peak_fill: u64,
    pub rss_after_fill: u64,
    pub rss_after_restart: u64,
    pub ready_after_restart_s: f64,
    pub disk_bytes: u64,
    pub disk_apparent_bytes: u64,
    pub bytes_per_message: f64,
    /// (messages queued, daemon RSS) sampled while filling.
    pub rss_by_depth: Vec<(u64, u64)>,
    /// Bytes the daemon wrote to disk per message while filling.
    pub write_bytes_per_message: f64,
    pub cpu_us_per_message: f64,
}

/// What durability costs: the same CON load against a daemon whose
/// fsync/fdatasync are no-ops (an LD_PRELOAD shim), alternating with the
/// real one; never a way to run the daemon, only a measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DurabilityCost {
    pub devices: usize,
    pub with_fsync: Vec<E2eRun>,
    pub without_fsync: Vec<E2eRun>,
    pub median_with: f64,
    pub median_without: f64,
    /// The daemon's commit latency (its own histogram) with fsync: p50, p99 (µs, bucket bounds).
    pub commit_p50_us: u64,
    pub commit_p99_us: u64,
}

/// Two setups measured in alternating runs of CON at `devices`, end to end:
/// `a` is the one a target is about, `b` what it is held against.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub devices: usize,
    pub a_runs: Vec<E2eRun>,
    pub b_runs: Vec<E2eRun>,
    pub median_a: f64,
    pub median_b: f64,
}

impl Comparison {
    /// `a`'s median as a share of `b`'s.
    pub fn ratio(&self) -> f64 {
        self.median_a / self.median_b.max(1.0)
    }
}

/// Commands pushed to devices that post CON in a closed loop, against the
/// same load without commands (`uplink`: a = with, b = without).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandsPhase {
    /// Commands published per second.
    pub offered_per_s: f64,
    /// Per run with commands: (published, received by the devices).
    pub runs: Vec<(u64, u64)>,
    /// Median commands received per second of load.
    pub delivered_per_s: f64,
    /// Publish to device, of the median run (µs).
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub uplink: Comparison,
}

/// The deduplication table's heap per entry (bench/src/bin/dedup-footprint.rs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DedupFootprint {
    pub entries: u64,
    pub bytes_per_entry_64_peers: f64,
    pub bytes_per_entry_one_per_peer: f64,
}

impl ThroughputPoint {
    /// The medians over `runs` (at least one), and the latency of the run
    /// whose end-to-end rate is the median.
    pub fn of(kind: &str, concurrency: usize, runs: Vec<E2eRun>) -> ThroughputPoint {
        let median_e2e = median(&runs.iter().map(|r| r.e2e_rate).collect::<Vec<_>>());
        let median_coap = median(&runs.iter().map(|r| r.coap_rate).collect::<Vec<_>>());
        let latency_us = runs
            .iter()
            .find(|r| r.e2e_rate == median_e2e)
            .map(|r| r.load.latency_us.clone())
            .unwrap_or_default();
        ThroughputPoint {
            kind: kind.into(),
            concurrency,
            runs,
            median_e2e,
            median_coap,
            latency_us,
        }
    }
}

/// The median of some numbers (the lower middle for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() - 1) / 2]
}

pub fn median_u64(values: &[u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

/// DTLS-PSK: end to end, handshakes, and what idle sessions cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DtlsPhase {
    /// Kind "DTLS CON", closed loop, one session per device.
    pub throughput: Vec<ThroughputPoint>,
    pub idle: Vec<IdleSessions>,
    pub flood: Option<HelloFlood>,
}

/// Spoofed ClientHellos from distinct sources against a DTLS daemon while
/// one real device posts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HelloFlood {
    pub hellos: u32,
    pub seconds: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    /// The real device: requests answered 2.04, and sent.
    pub device_ok: u64,
    pub device_sent: u64,
}

/// One fresh DTLS daemon holding `sessions` idle sessions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleSessions {
    pub sessions: usize,
    pub connected: u64,
    pub failed: u64,
    /// Seconds to complete every handshake, 64 under way at a time.
    pub connect_s: f64,
    pub handshakes_per_s: f64,
    pub rss_before: u64,
    pub rss_with_sessions: u64,
}
