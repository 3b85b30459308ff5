//! MQTT over WebSocket over TLS (`wss://`) through an HTTP CONNECT proxy,
//! the way out of a site that only lets HTTPS leave: mosquitto with a
//! websockets listener using the test CA's server certificate, tinyproxy as
//! the proxy (`mqtt.proxy`), with and without Basic credentials
//! (`mqtt.proxy_credentials_file`). The proxy's own log shows that it
//! carried the connection. A proxy that refuses the credentials leaves the
//! messages queued, the log and /status say why, and nothing is lost once
//! the credentials are fixed.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::broker::{Broker, BrokerOptions};
use support::certs::Certs;
use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::subscriber::Subscriber;
use support::tinyproxy::TinyProxy;
use support::{free_tcp_port, free_udp_port, try_wait_until, wait_until, WAIT};

/// How long a test waits to be sure that something did NOT arrive.
const QUIET: Duration = Duration::from_secs(3);

/// mosquitto with its plain listener (for the subscriber) and a websockets
/// listener over TLS (for the gateway).
struct WssBroker {
    _pki: tempfile::TempDir,
    certs: Certs,
    broker: Broker,
    ws_port: u16,
}

impl WssBroker {
    fn start() -> WssBroker {
        let pki = tempfile::tempdir().expect("tempdir");
        let certs = Certs::generate(pki.path());
        let ws_port = free_tcp_port();
        // Without `socket_domain ipv4`, mosquitto 2.0.11's websockets
        // listener ignores the address and listens on every interface.
        let broker = Broker::start_with(BrokerOptions {
            extra_config: format!(
                "listener {ws_port} 127.0.0.1\n\
                 socket_domain ipv4\n\
                 protocol websockets\n\
                 certfile {}\n\
                 keyfile {}\n",
                certs.server_cert.display(),
                certs.server_key.display()
            ),
            ..BrokerOptions::default()
        });
        WssBroker {
            _pki: pki,
            certs,
            broker,
            ws_port,
        }
    }

    /// The gateway's config: wss to the broker through `proxy`.
    fn gateway_config(&self, proxy: &TinyProxy, admin: u16) -> DaemonConfig {
        let mut config = DaemonConfig::new(free_udp_port(), self.broker.port())
            .mqtt("url", format!("wss://127.0.0.1:{}/mqtt", self.ws_port))
            .mqtt("proxy", proxy.url())
            .route(RouteConfig::new("s/{d}", "wss/{d}"));
        config.ca_file = Some(self.certs.ca_cert.clone());
        config.admin_port = Some(admin);
        config
    }
}

fn metric(admin: u16, name: &str) -> f64 {
    let m = admin_get(admin, "/metrics").1;
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{m}"))
}

fn post(daemon: &Daemon, payloads: &[&str]) {
    let mut device = CoapClient::new(daemon.coap_addr());
    for p in payloads {
        assert!(
            device.con(&["s", "d1"], p.as_bytes()).is_success(),
            "{p} not acknowledged"
        );
    }
}

fn received(subscriber: &Subscriber, n: usize) -> Vec<String> {
    subscriber
        .wait_for_count(n, WAIT)
        .iter()
        .map(|m| m.payload_str())
        .collect()
}

fn credentials_file(dir: &Path, line: &str) -> PathBuf {
    let path = dir.join("proxy-credentials");
    std::fs::write(&path, format!("{line}\n")).expect("write the credentials file");
    path
}

/// The proxy's log shows a CONNECT to the broker's websockets port.
fn assert_carried(proxy: &TinyProxy, ws_port: u16) {
    let needle = format!("CONNECT 127.0.0.1:{ws_port}");
    assert!(
        proxy.log().contains(&needle),
        "no {needle:?} in the proxy's log:\n{}",
        proxy.log()
    );
}

#[test]
fn wss_through_an_http_connect_proxy_delivers_and_the_proxy_carried_it() {
    let wss = WssBroker::start();
    let subscriber = Subscriber::start(wss.broker.port(), "wss/#");
    let proxy = TinyProxy::start(wss.ws_port, None);
    let admin = free_tcp_port();
    let daemon = Daemon::start_config(&wss.gateway_config(&proxy, admin));
    post(&daemon, &["a", "b", "c"]);
    assert_eq!(received(&subscriber, 3), ["a", "b", "c"]);
    assert_carried(&proxy, wss.ws_port);
    // mosquitto speaks MQTT 5 over websockets too.
    assert_eq!(metric(admin, "coap2mqtt_mqtt_protocol_version"), 5.0);
}

#[test]
fn proxy_credentials_from_the_file_open_the_proxy() {
    let wss = WssBroker::start();
    let subscriber = Subscriber::start(wss.broker.port(), "wss/#");
    let proxy = TinyProxy::start(wss.ws_port, Some(("gateway", "s3cret-pass")));
    let secrets = tempfile::tempdir().expect("tempdir");
    let admin = free_tcp_port();
    let config = wss.gateway_config(&proxy, admin).mqtt(
        "proxy_credentials_file",
        credentials_file(secrets.path(), "gateway:s3cret-pass")
            .display()
            .to_string(),
    );
    let daemon = Daemon::start_config(&config);
    post(&daemon, &["one", "two"]);
    assert_eq!(received(&subscriber, 2), ["one", "two"]);
    assert_carried(&proxy, wss.ws_port);
}

#[test]
fn a_proxy_refusing_the_credentials_is_reported_and_nothing_is_lost_once_fixed() {
    let wss = WssBroker::start();
    let subscriber = Subscriber::start(wss.broker.port(), "wss/#");
    let proxy = TinyProxy::start(wss.ws_port, Some(("gateway", "right-pass")));
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = credentials_file(secrets.path(), "gateway:wrong-pass");
    let admin = free_tcp_port();
    let config = wss
        .gateway_config(&proxy, admin)
        .mqtt("proxy_credentials_file", file.display().to_string());
    let mut daemon = Daemon::start_config(&config);
    post(&daemon, &["kept-1", "kept-2", "kept-3"]);

    // tinyproxy answers wrong credentials with 401 (a proxy should say 407).
    daemon.wait_for_log(
        "the HTTP proxy wants other credentials (HTTP 401): check mqtt.proxy_credentials_file",
        WAIT,
    );
    let status = admin_get(admin, "/status").1;
    assert!(
        status.contains("mqtt.proxy_credentials_file"),
        "/status does not say why:\n{status}"
    );
    assert_eq!(metric(admin, "coap2mqtt_mqtt_connected"), 0.0);
    assert!(metric(admin, "coap2mqtt_mqtt_connect_failures_total") >= 1.0);
    assert_eq!(metric(admin, "coap2mqtt_queue_messages"), 3.0);
    assert!(
        try_wait_until(QUIET, || subscriber.count() > 0).is_err(),
        "something got through a proxy that refused us"
    );

    credentials_file(secrets.path(), "gateway:right-pass");
    daemon.terminate(WAIT);
    daemon.restart();
    assert_eq!(received(&subscriber, 3), ["kept-1", "kept-2", "kept-3"]);
    wait_until(WAIT, "the queue drained", || {
        metric(admin, "coap2mqtt_queue_messages") == 0.0
    });
    assert_carried(&proxy, wss.ws_port);
}
