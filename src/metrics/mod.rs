//! The daemon's figures: what the admin endpoint serves as `/metrics`
//! (OpenMetrics text, written by prometheus-client), `/healthz` and `/status`, and what the
//! watchdog looks at before it tells systemd the daemon is alive.
//!
//! Where the figures live, and why they cost nothing on the hot path:
//! - The store and the uplink keep their own atomics (`store::Stats`,
//!   `uplink::Stats`); this module only reads them.
//! - Each transport task owns its `Exchange` and its counters without locks.
//!   It also owns a [`TransportMetrics`], which counts what the exchange does
//!   not (datagrams by type, responses by code, drops by reason, DTLS
//!   handshakes) in plain integers, and copies everything into a shared
//!   snapshot at most every [`PUBLISH_EVERY`] (and on a timer when idle): one
//!   uncontended lock per 100 ms, never one per datagram.
//! - The commit thread records its batch sizes and latencies in
//!   [`CommitStats`]: a few relaxed atomic adds per batch.
//!
//! Codemap: `crate::histogram` (atomic fixed-bucket histograms; the
//! store records its commits in them), `transport.rs` (the per-task
//! counters), `health.rs` (the verdict: wedged, degraded or healthy),
//! `openmetrics.rs` (`/metrics`: one prometheus-client collector that reads
//! all of the above at scrape time), `status.rs` (the report for a person),
//! `status_json.rs` (the same for the status page).

mod health;
mod openmetrics;
mod status;
mod status_json;
mod transport;

pub use crate::histogram::Histogram;
pub use crate::store::CommitStats;
pub use health::{Thresholds, Verdict};
pub use openmetrics::CONTENT_TYPE;
pub use transport::{TransportCounters, TransportMetrics, PUBLISH_EVERY};

use crate::clock::now_ms;
use crate::store::Queue;
use crate::uplink;
use std::sync::{Arc, Mutex, OnceLock};

/// Every figure the daemon exports, shared by the admin endpoint and the
/// watchdog. Built at start-up, then only read.
pub struct Metrics {
    queue: Queue,
    started_ms: u64,
    transports: Mutex<Vec<Arc<Mutex<TransportCounters>>>>,
    uplink: OnceLock<UplinkFigures>,
    /// The devices heard from (see [`crate::devices`]).
    devices: OnceLock<crate::devices::SharedDevices>,
    /// The command mailboxes, when there are command tables.
    commands: OnceLock<Arc<crate::command::service::Service>>,
    /// How many commands wait for the committer; `None` once it is gone.
    store_pending: Box<dyn Fn() -> Option<usize> + Send + Sync>,
    health: health::Monitor,
    /// What `/metrics` is written from (a collector reading the above).
    registry: prometheus_client::registry::Registry,
}

struct UplinkFigures {
    stats: Arc<uplink::Stats>,
    broker: String,
}

impl Metrics {
    /// `store_pending` tells how many commands wait in the committer's
    /// channel (it must not keep the channel open: see the daemon).
    pub fn new(
        queue: Queue,
        store_pending: impl Fn() -> Option<usize> + Send + Sync + 'static,
        thresholds: Thresholds,
    ) -> Arc<Metrics> {
        let started_ms = now_ms();
        Arc::new_cyclic(|me| Metrics {
            queue,
            started_ms,
            transports: Mutex::new(Vec::new()),
            uplink: OnceLock::new(),
            devices: OnceLock::new(),
            commands: OnceLock::new(),
            store_pending: Box::new(store_pending),
            health: health::Monitor::new(thresholds, started_ms),
            registry: openmetrics::registry(me.clone()),
        })
    }

    /// Counters for one transport task (`kind` is "udp" or "dtls").
    pub fn transport(&self, kind: &'static str) -> TransportMetrics {
        let shared = Arc::new(Mutex::new(TransportCounters::new(kind)));
        self.transports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shared.clone());
        TransportMetrics::new(kind, shared)
    }

    /// Registers the uplink's figures; once.
    pub fn set_uplink(&self, stats: Arc<uplink::Stats>, broker: String) {
        let _ = self.uplink.set(UplinkFigures { stats, broker });
    }

    /// Registers the device table; once.
    pub fn set_devices(&self, devices: crate::devices::SharedDevices) {
        let _ = self.devices.set(devices);
    }

    /// Registers the command service; once.
    pub fn set_commands(&self, service: Arc<crate::command::service::Service>) {
        let _ = self.commands.set(service);
    }

    /// The command service, when there are command tables.
    pub fn commands(&self) -> Option<&Arc<crate::command::service::Service>> {
        self.commands.get()
    }

    /// The device table, once registered.
    pub fn devices(&self) -> Option<&crate::devices::SharedDevices> {
        self.devices.get()
    }

    /// The transports' latest snapshots, summed per kind.
    fn transports(&self) -> Vec<TransportCounters> {
        let all = self.transports.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_kind: Vec<TransportCounters> = Vec::new();
        for shared in all.iter() {
            let snapshot = shared.lock().unwrap_or_else(|p| p.into_inner());
            match by_kind.iter_mut().find(|t| t.kind == snapshot.kind) {
                Some(sum) => sum.add(&snapshot),
                None => by_kind.push(snapshot.clone()),
            }
        }
        by_kind
    }

    /// Samples the pipeline and judges it; call it regularly (the watchdog
    /// does, every second at least) so that progress is seen.
    pub fn check(&self) -> Verdict {
        let stats = self.queue.stats();
        let commit = &stats.commit;
        let (connected, acked) = match self.uplink.get() {
            Some(u) => (
                u.stats.connected.load(std::sync::atomic::Ordering::Relaxed),
                u.stats.acked.load(std::sync::atomic::Ordering::Relaxed),
            ),
            None => (false, 0),
        };
        self.health.judge(&health::Probe {
            now_ms: now_ms(),
            store_available: self.queue.is_available(),
            last_commit_ok: commit.last_ok(),
            commit_running_since_ms: commit.running_since_ms(),
            last_commit_done_ms: commit.last_done_ms(),
            store_pending: (self.store_pending)(),
            depth: self.queue.depth().0,
            connected,
            acked,
        })
    }

    /// `/metrics`: OpenMetrics text 1.0.0, ending with `# EOF` (served as
    /// [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8192);
        // Writing to a String cannot fail, nor can the collector.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// `/status`: the figures for a person.
    pub fn status(&self) -> (Verdict, String) {
        let verdict = self.check();
        let text = status::status(self, &verdict);
        (verdict, text)
    }

    /// `/status.json`: the figures for the status page (reads the newest
    /// dead letters from disk: call it off the async runtime).
    pub fn status_json(&self) -> (Verdict, serde_json::Value) {
        let verdict = self.check();
        let value = status_json::status_json(self, &verdict);
        (verdict, value)
    }

    /// `STATUS=` for systemd: one short line.
    pub fn status_line(&self) -> String {
        let (depth, bytes) = self.queue.depth();
        let uplink = match self.uplink.get() {
            Some(u) if u.stats.connected.load(std::sync::atomic::Ordering::Relaxed) => {
                let current = u
                    .stats
                    .broker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let version = match u.stats.version.load(std::sync::atomic::Ordering::Relaxed) {
                    5 => "MQTT 5",
                    _ => "MQTT 3.1.1",
                };
                format!("connected to {current} ({version})")
            }
            Some(u) => format!("not connected to {}", u.broker),
            None => "starting".into(),
        };
        format!(
            "queue: {depth} messages ({}); uplink: {uplink}",
            status::human_bytes(bytes)
        )
    }
}
