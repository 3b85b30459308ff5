//! The uplink over TLS to a real mosquitto with a TLS listener, certificates
//! made at test time with openssl: server authentication with `ca_file`,
//! mutual TLS with `client_cert`/`client_key`, and the failures an operator
//! meets (wrong CA, missing client certificate): not connected, explained
//! in the log, and nothing lost once the config is fixed.

mod support;

use support::broker::Broker;
use support::certs::Certs;
use support::coap::CoapClient;
use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::subscriber::Subscriber;
use support::{free_udp_port, wait_until, WAIT};

fn post(daemon: &Daemon, n: usize) {
    let mut client = CoapClient::new(daemon.coap_addr());
    let outcome = client.con(&["s", "dev"], format!("m{n}").as_bytes());
    assert!(outcome.is_success(), "message {n}: {:?}", outcome.response);
}

fn payloads(subscriber: &Subscriber, n: usize) -> Vec<String> {
    subscriber
        .wait_for_count(n, WAIT)
        .iter()
        .map(|m| m.payload_str())
        .collect()
}

#[test]
fn mqtts_with_the_brokers_ca_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let broker = Broker::start_tls(&certs, false);
    let subscriber = Subscriber::start_tls(broker.port(), "t/#", &certs);
    let config = DaemonConfig::new(free_udp_port(), 0)
        .mqtts(broker.port(), &certs.ca_cert)
        .route(RouteConfig::new("s/{d}", "t/{d}"));
    let daemon = Daemon::start_config(&config);
    post(&daemon, 1);
    assert_eq!(payloads(&subscriber, 1), ["m1"]);
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused_explained_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let broker = Broker::start_tls(&certs, false);
    let subscriber = Subscriber::start_tls(broker.port(), "t/#", &certs);
    let wrong = DaemonConfig::new(free_udp_port(), 0)
        .mqtts(broker.port(), &certs.wrong_ca_cert)
        .route(RouteConfig::new("s/{d}", "t/{d}"));
    let mut daemon = Daemon::start_config(&wrong);
    post(&daemon, 1);
    post(&daemon, 2);
    daemon.wait_for_log("TLS handshake failed", WAIT);
    assert!(
        daemon.log().contains("mqtt.ca_file"),
        "the log must point at the setting:\n{}",
        daemon.log()
    );
    assert!(subscriber.messages().is_empty(), "nothing got through");

    // The operator fixes the CA; the queue was kept.
    let right = DaemonConfig {
        ca_file: Some(certs.ca_cert.clone()),
        ..wrong
    };
    daemon.terminate(WAIT);
    daemon.restart_with(&right.render());
    assert_eq!(payloads(&subscriber, 2), ["m1", "m2"]);
}

#[test]
fn mutual_tls_with_a_client_certificate_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let broker = Broker::start_tls(&certs, true);
    let subscriber = Subscriber::start_tls(broker.port(), "t/#", &certs);
    let config = DaemonConfig::new(free_udp_port(), 0)
        .mqtts(broker.port(), &certs.ca_cert)
        .client_identity(&certs.client_cert, &certs.client_key)
        .route(RouteConfig::new("s/{d}", "t/{d}"));
    let daemon = Daemon::start_config(&config);
    post(&daemon, 1);
    assert_eq!(payloads(&subscriber, 1), ["m1"]);
}

#[test]
fn a_broker_that_requires_a_client_certificate_refuses_a_daemon_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let broker = Broker::start_tls(&certs, true);
    let subscriber = Subscriber::start_tls(broker.port(), "t/#", &certs);
    let config = DaemonConfig::new(free_udp_port(), 0)
        .mqtts(broker.port(), &certs.ca_cert)
        .route(RouteConfig::new("s/{d}", "t/{d}"));
    let daemon = Daemon::start_config(&config);
    post(&daemon, 1);
    // mosquitto ends the handshake; the daemon keeps retrying, says so, and
    // keeps the message queued.
    wait_until(WAIT, "the daemon to report failed connections", || {
        daemon.log().matches("uplink: cannot connect").count() >= 2
    });
    assert!(
        daemon.log().contains(
            "the broker requires a client certificate: set mqtt.client_cert and mqtt.client_key"
        ),
        "the log must say what to set:\n{}",
        daemon.log()
    );
    assert!(subscriber.messages().is_empty(), "nothing got through");
    assert!(
        !daemon.log().contains("connected to mqtts"),
        "{}",
        daemon.log()
    );
}
