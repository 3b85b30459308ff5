//! MQTT 5 against a real mosquitto, read by an MQTT 5 subscriber
//! (mosquitto_sub -V mqttv5, which prints each message's properties):
//! every publish says where it came from, a PUBACK that refuses a message
//! is not an ack, a message that outlived its route's expiry_s is not
//! published, and `protocol = "3.1.1"` publishes without properties.

mod support;

use std::time::Duration;
use support::broker::{Broker, BrokerOptions};
use support::coap::{Code, MsgType};
use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::proxy::{FaultProxy, Mode};
use support::subscriber::Subscriber;
use support::{free_tcp_port, free_udp_port, wait_until, WAIT};

fn metric(admin: u16, line_start: &str) -> f64 {
    let m = admin_get(admin, "/metrics").1;
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in:\n{m}"))
}

#[test]
fn every_mqtt5_publish_carries_the_messages_origin() {
    let broker = Broker::start();
    let subscriber = Subscriber::start_v5(broker.port(), "site/#");
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), broker.port())
        .route(RouteConfig::new("s/{d}/{m}", "site/{gateway}/{d}/{m}").set("expiry_s", 3600));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);
    let mut device = CoapClient::new(daemon.coap_addr());
    let request = device
        .build(MsgType::Con, Code::POST, &["s", "d1", "t"], b"21.5")
        .with_option(12, vec![0]);
    let answer = device.request(&request, WAIT).expect("an answer");
    assert_eq!(answer.code, Code::CHANGED);
    assert!(device.con(&["s", "d1", "bin"], &[0xff, 0x00]).is_success());

    let got = subscriber.wait_for_count(2, WAIT);
    let text = got
        .iter()
        .find(|m| m.topic == "site/test-gw/d1/t")
        .expect("the text message");
    let p = text.v5.as_ref().expect("MQTT 5 properties");
    assert_eq!(p.user("gateway"), Some("test-gw"));
    assert_eq!(p.user("coap_path"), Some("s/d1/t"));
    assert_eq!(p.user("content_format"), Some("0"));
    assert_eq!(p.user("identity"), None, "plain UDP has no identity");
    let seq: u64 = p
        .user("seq")
        .and_then(|s| s.parse().ok())
        .expect("a numeric seq");
    let received_at = p.user("received_at").expect("received_at");
    assert!(
        received_at.len() == 24 && received_at.ends_with('Z'),
        "{received_at}"
    );
    assert_eq!(p.content_type, "text/plain;charset=utf-8");
    assert_eq!(p.payload_format, "1", "UTF-8 payload");
    let expiry: u32 = p.expiry.parse().expect("a Message Expiry");
    assert!((3590..=3600).contains(&expiry), "{expiry}");

    let binary = got
        .iter()
        .find(|m| m.topic == "site/test-gw/d1/bin")
        .expect("the binary one");
    let p = binary.v5.as_ref().expect("properties");
    assert_eq!(p.content_type, "application/octet-stream");
    assert_eq!(p.payload_format, "", "not UTF-8: no indicator");
    let next: u64 = p.user("seq").and_then(|s| s.parse().ok()).expect("seq");
    assert_eq!(next, seq + 1, "sequence numbers follow the queue");
    assert_eq!(metric(admin, "coap2mqtt_mqtt_protocol_version "), 5.0);
    // Stock mosquitto's CONNACK says Receive Maximum 20 (its
    // max_inflight_messages); the window follows it, below mqtt.inflight.
    daemon.wait_for_log("(MQTT 5, 20 in flight, the broker's Receive Maximum)", WAIT);
}

#[test]
fn a_puback_refusing_a_message_dead_letters_it_and_the_rest_flow() {
    // Anonymous clients may write everything under t/ but t/denied/.
    let broker = Broker::start_with(BrokerOptions {
        extra_config: "acl_file @DIR@/acl\n".into(),
        files: vec![(
            "acl".into(),
            "topic readwrite coap2mqtt/#\ntopic readwrite t/ok/#\ntopic read t/#\n\
             topic readwrite coap2mqtt-test/#\n"
                .into(),
        )],
        ..BrokerOptions::default()
    });
    let subscriber = Subscriber::start_v5(broker.port(), "t/#");
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), broker.port())
        .route(RouteConfig::new("s/{area}/{d}", "t/{area}/{d}"));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);
    let mut device = CoapClient::new(daemon.coap_addr());
    assert!(device.con(&["s", "ok", "a"], b"1").is_success());
    assert!(device.con(&["s", "denied", "b"], b"2").is_success());
    assert!(device.con(&["s", "ok", "c"], b"3").is_success());

    let got = subscriber.wait_for_count(2, WAIT);
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["t/ok/a", "t/ok/c"]);
    wait_until(WAIT, "the refused message is a dead letter", || {
        admin_get(admin, "/metrics")
            .1
            .contains("coap2mqtt_queue_dead_letters 1")
    });
    assert_eq!(
        metric(
            admin,
            "coap2mqtt_mqtt_puback_refusals_total{reason=\"not_authorized\"}"
        ),
        1.0
    );
    // The dead letter is written before its message leaves the queue (a
    // crash between keeps both, never neither): the queue empties a moment
    // after the dead letter shows.
    wait_until(WAIT, "the queue is empty", || {
        metric(admin, "coap2mqtt_queue_messages ") == 0.0
    });
    daemon.wait_for_log("PUBACK reason 0x87 (not_authorized)", WAIT);
}

#[test]
fn a_message_that_outlived_its_expiry_in_the_queue_is_not_published() {
    let broker = Broker::start();
    let subscriber = Subscriber::start_v5(broker.port(), "t/#");
    let proxy = FaultProxy::start(broker.port());
    proxy.set_mode(Mode::Refuse);
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), proxy.port())
        .route(RouteConfig::new("short/{d}", "t/short/{d}").set("expiry_s", 1))
        .route(RouteConfig::new("long/{d}", "t/long/{d}"));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);
    let mut device = CoapClient::new(daemon.coap_addr());
    assert!(device.con(&["short", "a"], b"stale").is_success());
    assert!(device.con(&["long", "a"], b"kept").is_success());
    std::thread::sleep(Duration::from_millis(1500));
    proxy.set_mode(Mode::Pass);
    let got = subscriber.wait_for_count(1, WAIT);
    assert_eq!(got[0].topic, "t/long/a");
    wait_until(WAIT, "the queue is empty", || {
        admin_get(admin, "/metrics")
            .1
            .contains("coap2mqtt_queue_messages 0")
    });
    assert_eq!(metric(admin, "coap2mqtt_mqtt_expired_total "), 1.0);
    assert_eq!(subscriber.count(), 1, "the expired one never arrives");
}

#[test]
fn protocol_3_1_1_publishes_without_properties() {
    let broker = Broker::start();
    let subscriber = Subscriber::start_v5(broker.port(), "t/#");
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), broker.port())
        .mqtt("protocol", "3.1.1")
        .route(RouteConfig::new("s/{d}", "t/{d}"));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);
    let mut device = CoapClient::new(daemon.coap_addr());
    assert!(device.con(&["s", "d1"], b"x").is_success());
    let got = subscriber.wait_for_count(1, WAIT);
    let p = got[0].v5.as_ref().expect("a v5 subscriber line");
    assert!(p.user.is_empty() && p.content_type.is_empty(), "{p:?}");
    assert_eq!(metric(admin, "coap2mqtt_mqtt_protocol_version "), 4.0);
    // No Receive Maximum under 3.1.1: the window is mqtt.inflight's default.
    daemon.wait_for_log("(MQTT 3.1.1, 256 in flight)", WAIT);
}
