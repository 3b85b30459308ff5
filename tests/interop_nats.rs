//! The gateway against a three-node nats-server cluster (JetStream and
//! MQTT on every node; see tests/support/nats.rs for what NATS's MQTT is):
//! `mqtt.url` lists the three nodes, devices post under load, the node the
//! gateway is connected to is killed, and the gateway fails over to another
//! node. A QoS 1 subscriber on a third node must receive every message a
//! device was answered 2.04 for: duplicates are allowed (at least once),
//! losses are not. NATS speaks MQTT 3.1.1 only, so `protocol = "auto"` must
//! fall back, and say so.
//!
//! The figures (how long the failover took, how many duplicates) are
//! printed, never asserted: the machine is shared.
//!
//! How long the backlog takes after the failover is NATS's to decide: NATS
//! (2.9) stores every QoS 1 PUBLISH in JetStream before it answers PUBACK,
//! one at a time per connection, and in some runs the surviving nodes took
//! about 70 a second for minutes after the kill (the gateway's window full,
//! its PUBACKs coming steadily). So the devices slow down once the node is
//! killed, which keeps that backlog to a few thousand, and the test waits
//! for as long as deliveries keep coming, failing when none has come for
//! [`DRAIN_STALL`].

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::nats::NatsCluster;
use support::subscriber::Subscriber;
use support::{free_tcp_port, free_udp_port, try_wait_until, wait_until, WAIT};
use toml::Value;

/// Posting threads, each one device with one request outstanding.
const DEVICES: usize = 4;
/// Messages the subscriber must have seen before the kill, and devices must
/// have had acknowledged after the failover, so that the load spans it.
const BEFORE_KILL: usize = 200;
const AFTER_FAILOVER: usize = 200;
/// Patience for the first deliveries after the failover: JetStream elects
/// new stream and consumer leaders first.
const DRAIN: Duration = Duration::from_secs(180);
/// The backlog is delivered unless this long passes with no new delivery.
const DRAIN_STALL: Duration = Duration::from_secs(60);
/// And in any case within this: a backlog of a few thousand at 70 a
/// second takes about a minute; this is ten.
const DRAIN_MAX: Duration = Duration::from_secs(600);
/// What each device waits between requests once the node is killed.
const PACE_AFTER_KILL: Duration = Duration::from_millis(10);

fn metric(admin: u16, name: &str) -> f64 {
    let m = admin_get(admin, "/metrics").1;
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{m}"))
}

/// The broker URLs of the daemon's "uplink: connected to URL (...)" lines.
fn connections(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("uplink: connected to ")?.1.split_once(' '))
        .map(|(url, _)| url.to_string())
        .collect()
}

/// Devices posting CON requests until told to stop; every payload answered
/// with 2.xx is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    /// Microseconds each device waits between requests.
    pause_us: Arc<AtomicU64>,
    acked: Arc<Mutex<Vec<String>>>,
    unanswered: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(daemon: &Daemon) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let pause_us = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let unanswered = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..DEVICES)
            .map(|d| {
                let (stop, pause_us) = (stop.clone(), pause_us.clone());
                let (acked, unanswered) = (acked.clone(), unanswered.clone());
                let mut device = CoapClient::new(daemon.coap_addr());
                std::thread::spawn(move || {
                    let device_name = format!("d{d}");
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let payload = format!("{device_name}-{i:06}");
                        let outcome = device.con(&["s", &device_name], payload.as_bytes());
                        let list = if outcome.is_success() {
                            &acked
                        } else {
                            &unanswered
                        };
                        list.lock().expect("load lock").push(payload);
                        i += 1;
                        let pause = pause_us.load(Ordering::Relaxed);
                        if pause > 0 {
                            std::thread::sleep(Duration::from_micros(pause));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            pause_us,
            acked,
            unanswered,
            threads,
        }
    }

    /// From now on each device waits `pause` between requests.
    fn slow_down(&self, pause: Duration) {
        let us = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        self.pause_us.store(us, Ordering::Relaxed);
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().expect("load lock").len()
    }

    /// Stops the devices; returns (acknowledged, not acknowledged) payloads.
    fn finish(mut self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("a device thread panicked");
        }
        let acked = self.acked.lock().expect("load lock").clone();
        let unanswered = self.unanswered.lock().expect("load lock").clone();
        (acked, unanswered)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn killing_the_nats_node_the_gateway_uses_loses_no_acknowledged_message() {
    let mut cluster = NatsCluster::start(3);
    let urls: Vec<Value> = (0..cluster.len())
        .map(|i| Value::from(cluster.mqtt_url(i)))
        .collect();
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), cluster.mqtt_port(0))
        .mqtt("url", Value::Array(urls))
        .mqtt("protocol", "auto")
        .route(RouteConfig::new("s/{d}", "load/{d}").qos(1));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);

    // NATS refuses MQTT 5: `auto` falls back to 3.1.1 and says so.
    daemon.wait_for_log("uplink: connected to", WAIT);
    daemon.wait_for_log("does not speak MQTT 5", WAIT);
    assert_eq!(metric(admin, "coap2mqtt_mqtt_protocol_version"), 4.0);
    let first_url = connections(&daemon.log())[0].clone();
    let victim = cluster
        .node_of(&first_url)
        .unwrap_or_else(|| panic!("{first_url} is none of the cluster's nodes"));
    // The subscriber sits on a node that survives and that the gateway
    // will not fail over to first: its messages cross the cluster.
    let watcher = (victim + 2) % cluster.len();
    let subscriber = Subscriber::start(cluster.mqtt_port(watcher), "load/#");

    let load = Load::start(&daemon);
    if try_wait_until(WAIT * 2, || subscriber.count() >= BEFORE_KILL).is_err() {
        panic!(
            "only {} messages reached the subscriber before the kill; daemon log:\n{}\n{}",
            subscriber.count(),
            daemon.log(),
            cluster.logs()
        );
    }

    let sessions_before = connections(&daemon.log()).len();
    let killed_at = Instant::now();
    cluster.kill(victim);
    // Full speed up to the kill, so that the window is full of messages in
    // flight on the node that dies; slower after it, so that the backlog
    // the survivors must take one JetStream store at a time stays small.
    load.slow_down(PACE_AFTER_KILL);
    if try_wait_until(WAIT * 4, || {
        connections(&daemon.log()).len() > sessions_before
    })
    .is_err()
    {
        panic!(
            "the gateway did not connect to another node after the kill; daemon log:\n{}\n{}",
            daemon.log(),
            cluster.logs()
        );
    }
    let reconnected_after = killed_at.elapsed();
    let second_url = connections(&daemon.log())[sessions_before].clone();
    assert_ne!(second_url, first_url, "it connected to the dead node?");

    // Delivery has resumed when the subscriber (on a surviving node, whose
    // consumer may have lost its leader too) gets more than it had.
    let count_at_reconnect = subscriber.count();
    wait_until(DRAIN, "deliveries after the failover", || {
        subscriber.count() > count_at_reconnect
    });
    let delivering_after = killed_at.elapsed();

    let acked_at_failover = load.acked_count();
    wait_until(WAIT * 4, "devices answered after the failover", || {
        load.acked_count() >= acked_at_failover + AFTER_FAILOVER
    });
    let (acked, unanswered) = load.finish();

    let expected: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let drain_started = Instant::now();
    let all_arrived = wait_while_delivering(&subscriber, || {
        let got: HashSet<String> = subscriber
            .messages()
            .iter()
            .map(|m| m.payload_str())
            .collect();
        expected.iter().all(|p| got.contains(*p))
    });
    let drained_in = drain_started.elapsed();
    let received = subscriber.messages();
    let got: HashSet<String> = received.iter().map(|m| m.payload_str()).collect();
    let missing: Vec<&&str> = expected.iter().filter(|p| !got.contains(**p)).collect();
    assert!(
        all_arrived.is_ok(),
        "{} of {} acknowledged messages never reached the subscriber ({}), e.g. {:?}; metrics:\n{}\ndaemon log tail:\n{}",
        missing.len(),
        expected.len(),
        all_arrived.as_ref().err().map_or("", String::as_str),
        missing.iter().take(10).collect::<Vec<_>>(),
        admin_get(admin, "/metrics").1,
        tail(&daemon.log(), 80)
    );
    assert!(metric(admin, "coap2mqtt_mqtt_failovers_total") >= 1.0);
    assert_eq!(metric(admin, "coap2mqtt_mqtt_dead_lettered_total"), 0.0);

    // Per device, the order in which payloads first arrived.
    let mut inversions = 0usize;
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = HashSet::new();
    for m in &received {
        let payload = m.payload_str();
        if !seen.insert(payload.clone()) {
            continue;
        }
        if let Some(previous) = last.insert(m.topic.clone(), payload.clone()) {
            if previous > payload {
                inversions += 1;
            }
        }
    }
    eprintln!(
        "nats failover: killed node {victim} ({first_url}); gateway connected to {second_url} \
         {reconnected_after:.2?} after the kill; the subscriber got messages again \
         {delivering_after:.2?} after it; {} acknowledged, {} unanswered, {} received, {} duplicates, \
         {inversions} per-device order inversions; {} messages sent again after the failover; the backlog took {drained_in:.2?} after the load stopped",
        acked.len(),
        unanswered.len(),
        received.len(),
        received.len() - seen.len(),
        metric(admin, "coap2mqtt_mqtt_resent_total"),
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `done`, for as long as the subscriber keeps receiving:
/// `Err` after [`DRAIN_STALL`] with nothing new, or after [`DRAIN_MAX`].
fn wait_while_delivering(
    subscriber: &Subscriber,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let mut last_count = subscriber.count();
    let mut last_progress = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        let count = subscriber.count();
        if count != last_count {
            (last_count, last_progress) = (count, Instant::now());
        }
        if last_progress.elapsed() > DRAIN_STALL {
            return Err(format!(
                "no delivery for {DRAIN_STALL:?} ({count} received)"
            ));
        }
        if start.elapsed() > DRAIN_MAX {
            return Err(format!(
                "still delivering after {DRAIN_MAX:?} ({count} received)"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
