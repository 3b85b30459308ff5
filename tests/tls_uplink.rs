//! The MQTT uplink over TLS against a real mosquitto with a TLS listener
//! and certificates made at test time: server authentication with
//! `ca_file`, a wrong CA (nothing delivered, nothing lost, the log says
//! why, a restart with the right CA delivers everything), mutual TLS, and
//! a missing client certificate where the broker requires one.

mod support;

use std::time::Duration;

use support::broker::Broker;
use support::certs::Certs;
use support::coap_cli::post_notls;
use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::subscriber::{Received, Subscriber};
use support::{free_udp_port, try_wait_until, WAIT};

/// How long a test waits to be sure that something did NOT arrive.
const QUIET: Duration = Duration::from_secs(3);

struct Setup {
    _dir: tempfile::TempDir,
    certs: Certs,
    broker: Broker,
    subscriber: Subscriber,
}

fn setup(require_client_cert: bool) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(&dir.path().join("pki"));
    let broker = Broker::start_tls(&certs, require_client_cert);
    let mut subscriber = Subscriber::start_tls(broker.port(), "#", &certs);
    subscriber.wait_ready();
    Setup {
        _dir: dir,
        certs,
        broker,
        subscriber,
    }
}

fn config(broker_port: u16, ca_file: &std::path::Path) -> DaemonConfig {
    let mut config = DaemonConfig::new(free_udp_port(), broker_port)
        .mqtts(broker_port, ca_file)
        .route(RouteConfig::new("s/{device}", "tls/{device}"));
    config.status_topic = Some(String::new());
    config
}

fn post_all(daemon: &Daemon, payloads: &[&str]) {
    for p in payloads {
        let outcome = post_notls(daemon.coap_addr().port(), "s/dev", p, &[]);
        assert_eq!(outcome.expect_code(), "2.04", "{}", outcome.output);
    }
}

fn payloads(messages: &[Received]) -> Vec<String> {
    messages.iter().map(Received::payload_str).collect()
}

/// Waits for exactly `expected` on tls/dev, in order.
fn expect_delivered(subscriber: &Subscriber, expected: &[&str]) {
    subscriber.wait_for_count(expected.len(), WAIT);
    std::thread::sleep(QUIET);
    let got = subscriber.messages();
    assert!(got.iter().all(|m| m.topic == "tls/dev"), "{got:?}");
    assert_eq!(payloads(&got), expected);
}

/// Waits for an uplink warning that it cannot connect and mentions all of
/// `needles`.
fn wait_connect_failure(daemon: &Daemon, needles: &[&str]) {
    let found = try_wait_until(WAIT, || {
        daemon.log().lines().any(|l| {
            l.contains("WARN")
                && l.contains("cannot connect to mqtts://")
                && needles.iter().all(|n| l.contains(n))
        })
    });
    assert!(
        found.is_ok(),
        "no uplink warning mentioning {needles:?}:\n{}",
        daemon.log()
    );
}

#[test]
fn mqtts_with_the_right_ca_delivers() {
    let s = setup(false);
    let daemon = Daemon::start_config(&config(s.broker.port(), &s.certs.ca_cert));
    post_all(&daemon, &["a", "b"]);
    expect_delivered(&s.subscriber, &["a", "b"]);
}

#[test]
fn a_wrong_ca_delivers_nothing_loses_nothing_and_says_why() {
    let s = setup(false);
    let wrong = config(s.broker.port(), &s.certs.wrong_ca_cert);
    let mut daemon = Daemon::start_config(&wrong);
    post_all(&daemon, &["q1", "q2", "q3"]);
    wait_connect_failure(&daemon, &["UnknownIssuer", "mqtt.ca_file"]);
    std::thread::sleep(QUIET);
    assert_eq!(
        s.subscriber.messages(),
        vec![],
        "nothing may pass a wrong CA"
    );

    daemon.terminate(WAIT);
    let right = DaemonConfig {
        ca_file: Some(s.certs.ca_cert.clone()),
        ..wrong
    };
    daemon.restart_with(&right.render());
    expect_delivered(&s.subscriber, &["q1", "q2", "q3"]);
}

#[test]
fn mutual_tls_delivers() {
    let s = setup(true);
    let config = config(s.broker.port(), &s.certs.ca_cert)
        .client_identity(&s.certs.client_cert, &s.certs.client_key);
    let daemon = Daemon::start_config(&config);
    post_all(&daemon, &["m1", "m2"]);
    expect_delivered(&s.subscriber, &["m1", "m2"]);
}

#[test]
fn a_missing_client_certificate_is_refused_and_logged_then_kept() {
    let s = setup(true);
    let without = config(s.broker.port(), &s.certs.ca_cert);
    let mut daemon = Daemon::start_config(&without);
    post_all(&daemon, &["k1", "k2"]);
    wait_connect_failure(
        &daemon,
        &["the broker requires a client certificate: set mqtt.client_cert and mqtt.client_key"],
    );
    std::thread::sleep(QUIET);
    assert_eq!(s.subscriber.messages(), vec![], "the broker must refuse it");

    daemon.terminate(WAIT);
    let with = without.client_identity(&s.certs.client_cert, &s.certs.client_key);
    daemon.restart_with(&with.render());
    expect_delivered(&s.subscriber, &["k1", "k2"]);
}
