//! The CoAP contract of issue #2, row by row, against the real daemon, a
//! real mosquitto and libcoap's own `coap-client-notls`: each test checks
//! the code the device sees and what reaches (or does not reach) the
//! broker. Cases the CLI cannot produce (a duplicate message id, a bad
//! version, a token length of 9..=15, garbage) use the raw codec.

mod support;

use std::time::Duration;

use support::broker::Broker;
use support::coap::{self, decode_uint, Code, Message, MsgType};
use support::coap_cli::{assert_code, coap_client, post_notls, CliOutcome};
use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::subscriber::{Received, Subscriber};
use support::{free_tcp_port, free_udp_port, try_wait_until, WAIT};

const CLI: &str = "coap-client-notls";

/// How long a test waits to be sure that something did NOT arrive.
const QUIET: Duration = Duration::from_secs(2);

/// A broker, a subscriber on `#`, and a daemon.
struct Gateway {
    subscriber: Subscriber,
    daemon: Daemon,
    admin: u16,
    _broker: Broker,
}

impl Gateway {
    /// The default routes: `sensors/{device}/{metric}` (POST, PUT) to
    /// `site/{gateway}/{device}/{metric}`.
    fn start() -> Gateway {
        Gateway::with(|c| c)
    }

    fn with(edit: impl FnOnce(DaemonConfig) -> DaemonConfig) -> Gateway {
        let broker = Broker::start();
        let mut subscriber = Subscriber::start(broker.port(), "#");
        subscriber.wait_ready();
        let mut config = DaemonConfig::new(free_udp_port(), broker.port());
        config.status_topic = Some(String::new());
        let config = edit(config);
        let config = if config.routes.is_empty() {
            config.route(
                RouteConfig::new(
                    "sensors/{device}/{metric}",
                    "site/{gateway}/{device}/{metric}",
                )
                .methods(&["POST", "PUT"]),
            )
        } else {
            config
        };
        let admin = free_tcp_port();
        let config = DaemonConfig {
            admin_port: Some(admin),
            ..config
        };
        let daemon = Daemon::start_config(&config);
        Gateway {
            subscriber,
            daemon,
            admin,
            _broker: broker,
        }
    }

    fn port(&self) -> u16 {
        self.daemon.coap_addr().port()
    }

    fn client(&self) -> CoapClient {
        CoapClient::new(self.daemon.coap_addr())
    }

    /// Waits for exactly `n` messages (ignoring the subscriber's probes).
    fn expect_messages(&self, n: usize) -> Vec<Received> {
        let got = self.subscriber.wait_for_count(n, WAIT);
        std::thread::sleep(QUIET);
        let all = self.subscriber.messages();
        assert_eq!(all.len(), n, "expected {n} messages, got {all:?}");
        assert_eq!(got.len(), n);
        all
    }

    /// Nothing reaches the broker, and the daemon forwards nothing later.
    fn expect_nothing(&self) {
        std::thread::sleep(QUIET);
        assert_eq!(
            self.subscriber.messages(),
            vec![],
            "nothing should reach the broker"
        );
        let metrics = self.metrics();
        assert!(
            metrics
                .lines()
                .any(|l| l == "coap2mqtt_queue_appended_total 0"),
            "nothing should have been stored:\n{metrics}"
        );
    }

    fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").1
    }
}

fn cli(args: &[&str]) -> CliOutcome {
    coap_client(CLI, args)
}

fn uri(port: u16, path: &str) -> String {
    format!("coap://127.0.0.1:{port}/{path}")
}

fn topic_payload(m: &Received) -> (&str, String) {
    (m.topic.as_str(), m.payload_str())
}

#[test]
fn con_post_on_a_route_is_changed_and_published_with_captures_and_gateway() {
    let gw = Gateway::start();
    let outcome = post_notls(gw.port(), "sensors/dev1/temp", "21.5", &[]);
    assert_code(&outcome, "2.04");
    assert_eq!(outcome.response_type.as_deref(), Some("ACK"));
    let got = gw.expect_messages(1);
    assert_eq!(
        topic_payload(&got[0]),
        ("site/test-gw/dev1/temp", "21.5".into())
    );
}

#[test]
fn con_put_on_a_route_is_changed_and_published() {
    let gw = Gateway::start();
    let u = uri(gw.port(), "sensors/dev2/hum");
    let outcome = cli(&["-B", "20", "-m", "put", "-e", "55", &u]);
    assert_code(&outcome, "2.04");
    let got = gw.expect_messages(1);
    assert_eq!(
        topic_payload(&got[0]),
        ("site/test-gw/dev2/hum", "55".into())
    );
}

#[test]
fn non_post_is_delivered() {
    let gw = Gateway::start();
    let u = uri(gw.port(), "sensors/dev3/temp");
    let outcome = cli(&["-B", "3", "-N", "-m", "post", "-e", "non-1", &u]);
    assert!(outcome.exited, "{}", outcome.output);
    let got = gw.expect_messages(1);
    assert_eq!(
        topic_payload(&got[0]),
        ("site/test-gw/dev3/temp", "non-1".into())
    );
}

#[test]
fn no_response_2xx_suppresses_the_reply_but_stores() {
    let gw = Gateway::start();
    let mut client = gw.client();
    // NON with No-Response 2: no answer at all.
    let non = client
        .build(
            MsgType::Non,
            Code::POST,
            &["sensors", "d", "a"],
            b"quiet-non",
        )
        .with_option(coap::option::NO_RESPONSE, vec![2u8]);
    client.send(&non);
    assert!(
        client.recv(QUIET).is_none(),
        "a suppressed NON answer was sent"
    );
    // CON with No-Response 2: an empty ACK instead of 2.04.
    let con = client
        .build(
            MsgType::Con,
            Code::POST,
            &["sensors", "d", "b"],
            b"quiet-con",
        )
        .with_option(coap::option::NO_RESPONSE, vec![2u8]);
    client.send(&con);
    let answer = client.recv(WAIT).expect("an empty ACK").expect("decodable");
    assert_eq!((answer.mtype, answer.code), (MsgType::Ack, Code::EMPTY));
    assert_eq!(answer.mid, con.mid);
    assert!(client.recv(QUIET).is_none(), "no separate response either");
    let mut got: Vec<_> = gw
        .expect_messages(2)
        .iter()
        .map(|m| (m.topic.clone(), m.payload_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("site/test-gw/d/a".to_string(), "quiet-non".to_string()),
            ("site/test-gw/d/b".to_string(), "quiet-con".to_string()),
        ]
    );
}

#[test]
fn no_route_is_4_04_and_nothing_is_forwarded() {
    let gw = Gateway::start();
    let outcome = post_notls(gw.port(), "nowhere/x", "lost", &[]);
    assert_code(&outcome, "4.04");
    gw.expect_nothing();
}

#[test]
fn method_not_in_route_is_4_05_and_nothing_is_forwarded() {
    let gw = Gateway::start();
    let u = uri(gw.port(), "sensors/dev1/temp");
    let outcome = cli(&["-B", "20", "-m", "delete", &u]);
    assert_code(&outcome, "4.05");
    gw.expect_nothing();
}

#[test]
fn payload_over_max_payload_is_4_13_with_size1() {
    let gw = Gateway::with(|mut c| {
        c.max_payload = Some(16);
        c
    });
    let big = "x".repeat(40);
    let outcome = post_notls(gw.port(), "sensors/dev1/temp", &big, &[]);
    assert_code(&outcome, "4.13");
    let mut client = gw.client();
    let request = client.build(
        MsgType::Con,
        Code::POST,
        &["sensors", "a", "b"],
        big.as_bytes(),
    );
    let answer = client.request(&request, WAIT).expect("an answer");
    assert_eq!(answer.code, Code::new(4, 13));
    let size1 = answer.option(coap::option::SIZE1).and_then(decode_uint);
    assert_eq!(size1, Some(16), "Size1 should state max_payload");
    gw.expect_nothing();
}

#[test]
fn unknown_critical_option_is_4_02_and_nothing_is_forwarded() {
    let gw = Gateway::start();
    let outcome = post_notls(gw.port(), "sensors/dev1/temp", "x", &["-O", "65001,x"]);
    assert_code(&outcome, "4.02");
    gw.expect_nothing();
}

#[test]
fn unknown_elective_option_is_ignored() {
    let gw = Gateway::start();
    let outcome = post_notls(
        gw.port(),
        "sensors/dev1/temp",
        "elective",
        &["-O", "65000,x"],
    );
    assert_code(&outcome, "2.04");
    let got = gw.expect_messages(1);
    assert_eq!(got[0].payload_str(), "elective");
}

/// A daemon whose broker is a closed port, so everything stays queued.
fn offline_gateway(max_messages: u64, on_full: &str) -> Gateway {
    Gateway::with(|mut c| {
        c.mqtt_url = format!("mqtt://127.0.0.1:{}", free_tcp_port());
        c.max_messages = Some(max_messages);
        c.on_full = Some(on_full.into());
        c
    })
}

#[test]
fn queue_full_with_reject_is_5_03_with_max_age() {
    let gw = offline_gateway(2, "reject");
    for i in 0..2 {
        let outcome = post_notls(gw.port(), "sensors/d/m", &format!("m{i}"), &[]);
        assert_code(&outcome, "2.04");
    }
    let outcome = post_notls(gw.port(), "sensors/d/m", "m2", &[]);
    assert_code(&outcome, "5.03");
    let mut client = gw.client();
    let request = client.build(MsgType::Con, Code::POST, &["sensors", "d", "m"], b"m3");
    let answer = client.request(&request, WAIT).expect("an answer");
    assert_eq!(answer.code, Code::new(5, 3));
    let max_age = answer.option(coap::option::MAX_AGE).and_then(decode_uint);
    assert_eq!(max_age, Some(30), "Max-Age should be full_retry_after_s");
    let metrics = gw.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("coap2mqtt_queue_messages ") && l.ends_with(" 2")),
        "two messages should be queued:\n{metrics}"
    );
}

#[test]
fn queue_full_with_drop_oldest_keeps_the_newest() {
    let broker = Broker::start();
    let mut subscriber = Subscriber::start(broker.port(), "#");
    subscriber.wait_ready();
    let mut config = DaemonConfig::new(free_udp_port(), free_tcp_port()).route(RouteConfig::new(
        "sensors/{device}/{metric}",
        "t/{device}/{metric}",
    ));
    config.status_topic = Some(String::new());
    config.max_messages = Some(2);
    config.on_full = Some("drop-oldest".into());
    let mut daemon = Daemon::start_config(&config);
    let port = daemon.coap_addr().port();
    for i in 0..4 {
        let outcome = post_notls(port, "sensors/d/m", &format!("m{i}"), &[]);
        assert_code(&outcome, "2.04");
    }
    // Now let the daemon reach the broker with the same store.
    config.mqtt_url = format!("mqtt://127.0.0.1:{}", broker.port());
    daemon.terminate(WAIT);
    daemon.restart_with(&config.render());
    subscriber.wait_for_count(2, WAIT);
    std::thread::sleep(QUIET);
    let got: Vec<String> = subscriber
        .messages()
        .iter()
        .map(Received::payload_str)
        .collect();
    assert_eq!(
        got,
        vec!["m2", "m3"],
        "the two oldest should have been dropped"
    );
}

#[test]
fn block1_upload_is_stored_once_and_whole() {
    let gw = Gateway::start();
    let payload: String = (0..10).map(|i| format!("block-{i:02}-data;")).collect();
    assert!(payload.len() > 100);
    let u = uri(gw.port(), "sensors/big/blob");
    let outcome = cli(&["-B", "20", "-m", "post", "-b", "16", "-e", &payload, &u]);
    assert_code(&outcome, "2.04");
    let got = gw.expect_messages(1);
    assert_eq!(topic_payload(&got[0]), ("site/test-gw/big/blob", payload));
}

#[test]
fn uri_port_and_uri_host_of_a_non_default_port_are_accepted() {
    let gw = Gateway::start();
    let outcome = post_notls(gw.port(), "sensors/p/q", "with-uri-port", &[]);
    assert!(outcome.output.contains("Uri-Port"), "{}", outcome.output);
    assert_code(&outcome, "2.04");
    let u = uri(gw.port(), "sensors/p/q");
    let outcome = cli(&["-B", "20", "-U", "-m", "post", "-e", "without", &u]);
    assert_code(&outcome, "2.04");
    let got: Vec<String> = gw
        .expect_messages(2)
        .iter()
        .map(Received::payload_str)
        .collect();
    assert_eq!(got, vec!["with-uri-port", "without"]);
}

#[test]
fn empty_con_ping_gets_rst() {
    let gw = Gateway::start();
    let mut client = gw.client();
    let ping = Message::empty(MsgType::Con, client.next_mid());
    let answer = client.request(&ping, WAIT).expect("an answer to a ping");
    assert_eq!(
        (answer.mtype, answer.code, answer.mid),
        (MsgType::Rst, Code::EMPTY, ping.mid)
    );
    gw.expect_nothing();
}

#[test]
fn qos0_and_retain_routes_publish_accordingly() {
    let gw = Gateway::with(|c| {
        c.route(RouteConfig::new("q0/{d}", "q0/{d}").qos(0))
            .route(RouteConfig::new("keep/{d}", "keep/{d}").retain(true))
            .route(RouteConfig::new("q1/{d}", "q1/{d}"))
    });
    assert_code(&post_notls(gw.port(), "q0/a", "zero", &[]), "2.04");
    assert_code(&post_notls(gw.port(), "q1/a", "one", &[]), "2.04");
    assert_code(&post_notls(gw.port(), "keep/a", "kept", &[]), "2.04");
    let got = gw.expect_messages(3);
    let find = |t: &str| got.iter().find(|m| m.topic == t).cloned().expect(t);
    assert_eq!(find("q0/a").qos, 0);
    assert_eq!(find("q1/a").qos, 1);
    // A late subscriber gets the retained message, flagged retained.
    let late = Subscriber::start(gw._broker.port(), "keep/#");
    let kept = late.wait_for_count(1, WAIT);
    assert_eq!(
        (kept[0].payload_str(), kept[0].retain),
        ("kept".into(), true)
    );
    let late_q1 = Subscriber::start(gw._broker.port(), "q1/#");
    std::thread::sleep(QUIET);
    assert_eq!(late_q1.messages(), vec![], "q1 is not retained");
}

#[test]
fn multi_segment_capture_takes_the_rest_of_the_path() {
    let gw = Gateway::with(|c| c.route(RouteConfig::new("fleet/{device*}", "fleet/{device}/up")));
    assert_code(&post_notls(gw.port(), "fleet/a/b/c", "deep", &[]), "2.04");
    let got = gw.expect_messages(1);
    assert_eq!(topic_payload(&got[0]), ("fleet/a/b/c/up", "deep".into()));
}

#[test]
fn routes_are_tried_in_order() {
    let gw = Gateway::with(|c| {
        c.route(RouteConfig::new("s/special", "first/special"))
            .route(RouteConfig::new("s/{x}", "second/{x}"))
    });
    assert_code(&post_notls(gw.port(), "s/special", "a", &[]), "2.04");
    assert_code(&post_notls(gw.port(), "s/other", "b", &[]), "2.04");
    let got: Vec<_> = gw
        .expect_messages(2)
        .iter()
        .map(|m| (m.topic.clone(), m.payload_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("first/special".to_string(), "a".to_string()),
            ("second/other".to_string(), "b".to_string())
        ]
    );
}

#[test]
fn duplicate_con_gets_the_same_response_and_is_stored_once() {
    let gw = Gateway::start();
    let mut client = gw.client();
    let request = client.build(MsgType::Con, Code::POST, &["sensors", "dup", "m"], b"once");
    let first = client.request(&request, WAIT).expect("first answer");
    let second = client.request(&request, WAIT).expect("second answer");
    assert_eq!(first.code, Code::CHANGED);
    assert_eq!(
        first.encode(),
        second.encode(),
        "the duplicate must get the same bytes"
    );
    let got = gw.expect_messages(1);
    assert_eq!(got[0].payload_str(), "once");
}

fn dropped_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("coap2mqtt_coap_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn garbage_and_bad_version_are_dropped_silently_and_counted() {
    let gw = Gateway::start();
    let client = gw.client();
    let before = dropped_total(&gw.metrics());
    client.send_raw(b"\x01");
    // Version 0, and a datagram shorter than a header.
    client.send_raw(b"\x00\x02garbage garbage");
    client.send_raw(b"\x40\x02");
    // Version 2 (0x80), CON, POST.
    client.send_raw(&[0x80, 0x02, 0x12, 0x34]);
    let answer = client.recv(QUIET);
    assert!(answer.is_none(), "garbage must not be answered: {answer:?}");
    let counted = try_wait_until(WAIT, || dropped_total(&gw.metrics()) >= before + 4);
    assert!(counted.is_ok(), "drops not counted:\n{}", gw.metrics());
    gw.expect_nothing();
}

#[test]
fn con_with_a_format_error_after_a_valid_header_gets_rst() {
    let gw = Gateway::start();
    let client = gw.client();
    for tkl in 9u8..=15 {
        let mid = 0x4200 + u16::from(tkl);
        let mut bytes = vec![0x40 | tkl, 0x02, (mid >> 8) as u8, mid as u8];
        bytes.extend_from_slice(&[0xAA; 15]);
        client.send_raw(&bytes);
        let answer = client
            .recv(WAIT)
            .unwrap_or_else(|| panic!("no answer to token length {tkl}"))
            .expect("decodable answer");
        assert_eq!(
            (answer.mtype, answer.code, answer.mid),
            (MsgType::Rst, Code::EMPTY, mid),
            "token length {tkl}"
        );
    }
    // Option delta 15 without the payload marker meaning: a format error.
    let mid = 0x4300;
    client.send_raw(&[0x40, 0x02, (mid >> 8) as u8, mid as u8, 0xF1, 0x00]);
    let answer = client.recv(WAIT).expect("an answer").expect("decodable");
    assert_eq!((answer.mtype, answer.mid), (MsgType::Rst, mid));
    gw.expect_nothing();
}

#[test]
fn a_payload_marker_with_no_payload_and_a_reserved_block_size_are_refused() {
    let gw = Gateway::start();
    let client = gw.client();
    // A payload marker with nothing after it is a format error: RST.
    client.send_raw(&[0x40, 0x02, 0x30, 0x01, 0xb1, b's', 0xff]);
    let answer = Message::decode(&client.recv_raw(WAIT).expect("an RST")).expect("valid CoAP");
    assert_eq!((answer.mtype, answer.mid), (MsgType::Rst, 0x3001));
    // Block1 with the reserved SZX 7 on a route: refused with 4.xx.
    let mut raw = gw.client();
    let bogus = raw
        .build(MsgType::Con, Code::POST, &["sensors", "d", "t"], b"x")
        .with_option(coap::option::BLOCK1, vec![0x0f]);
    let refused = raw.request(&bogus, WAIT).expect("an answer");
    assert_eq!(refused.code.class(), 4, "reserved SZX: {:?}", refused.code);
    gw.expect_nothing();
}
