//! The uplink under network trouble that does not end the connection: a
//! broker link that stops taking bytes for a moment (the socket's send
//! buffer fills) while devices keep sending. Every acknowledged message
//! must arrive on the same connection once the link flows again, without a
//! reconnect to unstick anything.
//!
//! This is the case that caught the uplink dropping rumqttc's `poll()`
//! half-way (see `EventPump` in src/uplink/mod.rs): new messages woke the
//! session while rumqttc was blocked writing a publish, and the publish was
//! recorded as sent but never written, so its PUBACK never came.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::broker::Broker;
use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon};
use support::proxy::{FaultProxy, Mode};
use support::subscriber::Subscriber;
use support::{free_tcp_port, free_udp_port, WAIT};

/// Big enough that an in-flight window of them overfills the loopback
/// socket buffers while the link is stalled.
const PAYLOAD_BYTES: usize = 24 * 1024;
const DEVICES: usize = 4;
const PER_DEVICE: usize = 60;

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

fn payload(device: usize, n: usize) -> Vec<u8> {
    let mut p = format!("d{device}-m{n}-").into_bytes();
    p.resize(PAYLOAD_BYTES, b'x');
    p
}

#[test]
fn a_stalled_link_with_devices_sending_delivers_everything_on_the_same_connection() {
    let broker = Broker::start();
    let mut subscriber = Subscriber::start(broker.port(), "site/#");
    subscriber.wait_ready();
    let proxy = FaultProxy::start(broker.port());
    let coap_port = free_udp_port();
    let admin_port = free_tcp_port();
    let daemon = Daemon::start(&format!(
        r#"
[gateway]
id = "gw"
[coap]
listen = ["127.0.0.1:{coap_port}"]
[mqtt]
url = "mqtt://127.0.0.1:{proxy}"
status_topic = ""
inflight = 200
keep_alive_s = 120
[store]
path = "@STORE@"
[admin]
listen = "127.0.0.1:{admin_port}"
[[route]]
resource = "sensors/{{device}}"
topic = "site/{{device}}"
"#,
        proxy = proxy.port(),
    ));
    let coap = SocketAddr::from(([127, 0, 0, 1], coap_port));

    // Connected and delivering.
    let mut first = CoapClient::new(coap);
    assert!(first.con(&["sensors", "warm"], b"warm").is_success());
    subscriber.wait_for_count(1, WAIT);

    // The link stops taking bytes; devices keep sending, so the queue keeps
    // waking the uplink while rumqttc is stuck writing.
    proxy.set_mode(Mode::Stall);
    let forwarded_at_stall = proxy.stats().bytes_forwarded;
    let senders: Vec<_> = (0..DEVICES)
        .map(|device| {
            std::thread::spawn(move || {
                let mut client = CoapClient::new(coap);
                let mut acked = Vec::new();
                for n in 0..PER_DEVICE {
                    let outcome =
                        client.con(&["sensors", &format!("d{device}")], &payload(device, n));
                    if outcome.is_success() {
                        acked.push(format!("d{device}-m{n}"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                acked
            })
        })
        .collect();
    let acked: Vec<String> = senders
        .into_iter()
        .flat_map(|t| t.join().expect("device thread"))
        .collect();
    assert_eq!(acked.len(), DEVICES * PER_DEVICE, "every message is stored");
    // The connection survives the stall: rumqttc has no write timeout, and
    // keep-alive (120 s here) is the only thing that could end it.
    std::thread::sleep(Duration::from_millis(1500));
    // The stall really held the uplink: nothing went through meanwhile.
    assert_eq!(
        proxy.stats().bytes_forwarded,
        forwarded_at_stall,
        "the stalled proxy forwarded bytes"
    );
    assert_eq!(
        subscriber.count(),
        1,
        "messages reached the broker through a stalled link"
    );
    proxy.set_mode(Mode::Pass);

    let expected = 1 + acked.len();
    let got = subscriber.wait_for_count(expected, WAIT);
    let mut delivered: Vec<String> = got
        .iter()
        .map(|m| {
            let text = m.payload_str();
            let mut parts = text.splitn(3, '-');
            format!(
                "{}-{}",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            )
        })
        .filter(|id| id.starts_with('d'))
        .collect();
    delivered.sort();
    delivered.dedup();
    let mut want = acked.clone();
    want.sort();
    assert_eq!(delivered, want, "every acknowledged message arrives");

    // Per device, in the order the device was answered.
    for device in 0..DEVICES {
        let topic = format!("site/d{device}");
        let order: Vec<usize> = got
            .iter()
            .filter(|m| m.topic == topic)
            .filter_map(|m| {
                let text = m.payload_str();
                text.split('-').nth(1)?.strip_prefix('m')?.parse().ok()
            })
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{topic} out of order: {order:?}"
        );
    }
    let m = admin_get(admin_port, "/metrics").1;
    assert_eq!(
        sample(&m, "coap2mqtt_mqtt_connects_total"),
        1.0,
        "nothing needed a reconnect to get through:\n{}",
        daemon.log()
    );
    drop(daemon);
}
