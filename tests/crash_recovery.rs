//! kill -9 under load: every message a device was answered 2.04 for before
//! the crash (or after the restart) reaches the subscriber. Duplicates are
//! allowed (at-least-once) and counted.
//!
//! The uplink is down (a proxy refusing connections) from the start until
//! after the restart, and the test checks that nothing reached the broker
//! meanwhile: every message delivered afterwards can only have come from
//! the disk, so a daemon that answered before its flush fails here.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::broker::Broker;
use support::coap_client::{send_con_stream_with, Transmission};
use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::proxy::{FaultProxy, Mode};
use support::subscriber::Subscriber;
use support::{free_udp_port, wait_until, WAIT};

const MESSAGES: usize = 1500;
const KILL_AFTER: usize = 400;

#[test]
fn kill_9_under_con_load_loses_no_acknowledged_message() {
    let broker = Broker::start();
    let subscriber = Subscriber::start(broker.port(), "t/#");
    let proxy = FaultProxy::start(broker.port());
    proxy.set_mode(Mode::Refuse);
    let port = free_udp_port();
    let config = DaemonConfig::new(port, proxy.port()).route(RouteConfig::new("s/{d}", "t/{d}"));
    let mut daemon = Daemon::start_config(&config);
    let server = daemon.coap_addr();

    // Short retransmission, so the exchanges cut off by the kill end soon.
    let transmission = Transmission {
        ack_timeout: Duration::from_millis(200),
        ack_random_factor: 1.0,
        max_retransmit: 2,
        separate_response_timeout: Duration::from_secs(2),
    };
    let handed_out = AtomicUsize::new(0);
    let report = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            send_con_stream_with(server, MESSAGES, 4, transmission, |i| {
                handed_out.fetch_add(1, Ordering::SeqCst);
                (
                    vec!["s".into(), format!("dev{}", i % 4)],
                    format!("m{i}").into_bytes(),
                )
            })
        });
        wait_until(WAIT, "load is under way", || {
            handed_out.load(Ordering::SeqCst) >= KILL_AFTER
        });
        daemon.kill9();
        let at_kill = handed_out.load(Ordering::SeqCst);
        daemon.restart();
        (sender.join().expect("sender"), at_kill)
    });
    let (report, at_kill) = report;
    assert!(at_kill < MESSAGES, "the load was over before the kill");

    let acked: Vec<String> = report
        .acked_indexes()
        .into_iter()
        .map(|i| format!("m{i}"))
        .collect();
    assert!(
        acked.len() >= KILL_AFTER / 2,
        "too few acknowledged: {}",
        acked.len()
    );
    assert_eq!(
        subscriber.count(),
        0,
        "the uplink was down: nothing may have reached the broker yet"
    );
    assert_eq!(
        proxy.stats().bytes_forwarded,
        0,
        "the proxy forwarded bytes"
    );
    proxy.set_mode(Mode::Pass);
    wait_until(
        Duration::from_secs(60),
        "every acknowledged message arrives",
        || {
            let got: std::collections::HashSet<String> = subscriber
                .messages()
                .iter()
                .map(|m| m.payload_str())
                .collect();
            acked.iter().all(|p| got.contains(p))
        },
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in subscriber.messages() {
        *seen.entry(m.payload_str()).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 after {at_kill} of {MESSAGES} handed out: {} acknowledged, {} not acknowledged, {} delivered, {duplicates} duplicates",
        acked.len(),
        report.failed.len(),
        seen.len()
    );
}
