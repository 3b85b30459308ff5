//! The gateway against RabbitMQ's MQTT plugin (Debian's rabbitmq-server
//! 3.10, a private node started by the test; see tests/support/rabbitmq.rs).
//! That plugin speaks MQTT 3.1.1 only: with `protocol = "auto"` the gateway
//! must find that out, say so once, and deliver in 3.1.1.
//!
//! The node's boot time is printed, never asserted.

mod support;

use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::rabbitmq::RabbitMq;
use support::subscriber::Subscriber;
use support::{free_tcp_port, free_udp_port, WAIT};

const MESSAGES: usize = 20;

fn metric(admin: u16, name: &str) -> f64 {
    let m = admin_get(admin, "/metrics").1;
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{m}"))
}

#[test]
fn auto_falls_back_to_3_1_1_with_rabbitmq_and_delivers_in_order() {
    let rabbit = RabbitMq::start();
    eprintln!("rabbitmq: booted with MQTT in {:.1?}", rabbit.boot_time());
    let subscriber = Subscriber::start(rabbit.mqtt_port(), "site/#");
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), rabbit.mqtt_port())
        .mqtt("protocol", "auto")
        .route(RouteConfig::new("s/{d}", "site/{gateway}/{d}"));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);
    daemon.wait_for_log("does not speak MQTT 5", WAIT);
    daemon.wait_for_log("uplink: connected to", WAIT);
    assert_eq!(metric(admin, "coap2mqtt_mqtt_protocol_version"), 4.0);

    let mut device = CoapClient::new(daemon.coap_addr());
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("reading-{i:03}")).collect();
    for payload in &sent {
        assert!(
            device.con(&["s", "d1"], payload.as_bytes()).is_success(),
            "{payload} not acknowledged"
        );
    }
    let got = subscriber.wait_for_count(MESSAGES, WAIT);
    let topics_ok = got.iter().all(|m| m.topic == "site/test-gw/d1");
    assert!(topics_ok, "{got:?}");
    let payloads: Vec<String> = got.iter().map(|m| m.payload_str()).collect();
    assert_eq!(payloads, sent, "every message, once, in order");
    assert_eq!(
        daemon.log().matches("does not speak MQTT 5").count(),
        1,
        "the fallback is said once"
    );
}
