//! The CoAP contract (README, "CoAP behaviour") against libcoap's own
//! client, coap-client-notls: an implementation nobody here wrote. Every
//! test checks both what the client was answered and what reached the
//! broker (a real mosquitto and mosquitto_sub), and for refusals that
//! nothing was stored or published.
//!
//! Cases the CLI cannot produce (a duplicate message id, a broken header)
//! use the raw codec of tests/support/coap.rs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::broker::Broker;
use support::coap::{option, CoapClient, Code, Message, MsgType};
use support::coap_cli::{coap_client, post_notls, CliOutcome};
use support::daemon::Daemon;
use support::subscriber::Subscriber;
use support::{free_udp_port, WAIT};

const CLIENT: &str = "coap-client-notls";
const MAX_PAYLOAD: usize = 256;

struct Gateway {
    broker: Broker,
    subscriber: Subscriber,
    _daemon: Daemon,
    port: u16,
}

impl Gateway {
    /// A broker, a subscriber on `#`, and the daemon with the routes below;
    /// `store` is extra lines for the `[store]` table.
    fn start_with(store: &str) -> Gateway {
        let broker = Broker::start();
        let mut subscriber = Subscriber::start(broker.port(), "#");
        subscriber.wait_ready();
        let port = free_udp_port();
        let daemon = Daemon::start(&format!(
            r#"
[gateway]
id = "gw"
[coap]
listen = ["127.0.0.1:{port}"]
max_payload = {MAX_PAYLOAD}
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
status_topic = ""
[store]
path = "@STORE@"
{store}
[[route]]
resource = "sensors/{{device}}/{{metric}}"
topic = "site/{{gateway}}/{{device}}/{{metric}}"
[[route]]
resource = "status/{{device}}"
topic = "site/{{gateway}}/{{device}}/status"
qos = 0
retain = true
[[route]]
resource = "raw/{{path*}}"
topic = "raw/{{path}}"
[[route]]
resource = "config/{{device}}"
topic = "config/{{device}}"
methods = ["PUT"]
"#,
            mqtt = broker.port(),
        ));
        Gateway {
            broker,
            subscriber,
            _daemon: daemon,
            port,
        }
    }

    fn start() -> Gateway {
        Gateway::start_with("")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn uri(&self, path: &str) -> String {
        format!("coap://127.0.0.1:{}/{path}", self.port)
    }

    fn request(&self, args: &[&str], path: &str) -> CliOutcome {
        let uri = self.uri(path);
        let mut all = vec!["-B", "5"];
        all.extend_from_slice(args);
        all.push(&uri);
        coap_client(CLIENT, &all)
    }

    /// Nothing reached the broker (after giving the uplink time to send).
    fn assert_nothing_published(&self) {
        std::thread::sleep(Duration::from_millis(500));
        let got = self.subscriber.messages();
        assert!(got.is_empty(), "nothing may be published: {got:?}");
    }

    /// (topic, payload) of what arrived, once `n` messages did.
    fn published(&self, n: usize) -> Vec<(String, String)> {
        self.subscriber
            .wait_for_count(n, WAIT)
            .into_iter()
            .map(|m| (m.topic.clone(), m.payload_str()))
            .collect()
    }
}

fn expect(outcome: &CliOutcome, code: &str) {
    assert_eq!(
        outcome.response_code.as_deref(),
        Some(code),
        "{}\n{}",
        outcome.command,
        outcome.output
    );
}

#[test]
fn con_post_and_put_on_a_route_are_answered_2_04_and_published_with_the_captures() {
    let gw = Gateway::start();
    let post = post_notls(gw.port, "sensors/dev-1/temp", "21.5", &[]);
    expect(&post, "2.04");
    assert_eq!(post.response_type.as_deref(), Some("ACK"), "piggybacked");
    let put = gw.request(&["-m", "put", "-e", "48"], "sensors/dev-2/humidity");
    expect(&put, "2.04");
    assert_eq!(
        gw.published(2),
        vec![
            ("site/gw/dev-1/temp".to_string(), "21.5".to_string()),
            ("site/gw/dev-2/humidity".to_string(), "48".to_string()),
        ]
    );
}

#[test]
fn a_non_request_is_answered_non_2_04_and_published() {
    let gw = Gateway::start();
    let outcome = gw.request(&["-N", "-m", "post", "-e", "n1"], "sensors/dev-1/temp");
    expect(&outcome, "2.04");
    assert_eq!(outcome.response_type.as_deref(), Some("NON"));
    assert_eq!(
        gw.published(1),
        vec![("site/gw/dev-1/temp".to_string(), "n1".to_string())]
    );
}

#[test]
fn no_response_suppresses_the_2_04_but_the_message_is_stored() {
    let gw = Gateway::start();
    // No-Response (RFC 7967) value 2: not interested in 2.xx.
    let outcome = gw.request(
        &["-N", "-m", "post", "-e", "quiet", "-O", "258,0x02"],
        "sensors/dev-1/temp",
    );
    assert_eq!(outcome.response_code, None, "{}", outcome.output);
    assert_eq!(
        gw.published(1),
        vec![("site/gw/dev-1/temp".to_string(), "quiet".to_string())]
    );
}

#[test]
fn a_path_no_route_matches_gets_4_04_and_nothing_is_stored() {
    let gw = Gateway::start();
    expect(&post_notls(gw.port, "nowhere/x", "p", &[]), "4.04");
    // Too few segments for sensors/{device}/{metric}.
    expect(&post_notls(gw.port, "sensors/dev-1", "p", &[]), "4.04");
    gw.assert_nothing_published();
}

#[test]
fn a_method_the_route_does_not_allow_gets_4_05() {
    let gw = Gateway::start();
    expect(&gw.request(&["-m", "get"], "sensors/dev-1/temp"), "4.05");
    expect(&gw.request(&["-m", "delete"], "sensors/dev-1/temp"), "4.05");
    expect(&post_notls(gw.port, "config/dev-1", "p", &[]), "4.05");
    expect(
        &gw.request(&["-m", "put", "-e", "on"], "config/dev-1"),
        "2.04",
    );
    assert_eq!(
        gw.published(1),
        vec![("config/dev-1".to_string(), "on".to_string())]
    );
}

#[test]
fn a_payload_over_max_payload_gets_4_13_with_size1() {
    let gw = Gateway::start();
    let big = "x".repeat(MAX_PAYLOAD + 1);
    let outcome = post_notls(gw.port, "sensors/dev-1/temp", &big, &[]);
    expect(&outcome, "4.13");
    let line = outcome.response_line.clone().unwrap_or_default();
    assert!(
        line.contains(&format!("Size1:{MAX_PAYLOAD}")),
        "Size1 must tell the limit: {line}"
    );
    gw.assert_nothing_published();
}

#[test]
fn an_unrecognised_critical_option_gets_4_02() {
    let gw = Gateway::start();
    // 65001 is odd: critical (RFC 7252 5.4.1), and unknown to the daemon.
    let outcome = gw.request(
        &["-m", "post", "-e", "p", "-O", "65001,x"],
        "sensors/dev-1/temp",
    );
    expect(&outcome, "4.02");
    gw.assert_nothing_published();
}

#[test]
fn a_block1_upload_is_continued_per_block_and_stored_once_whole() {
    let gw = Gateway::start();
    let payload: String = (0..200)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let outcome = gw.request(
        &["-m", "post", "-b", "16", "-e", &payload],
        "sensors/dev-1/blob",
    );
    expect(&outcome, "2.04");
    assert_eq!(
        gw.published(1),
        vec![("site/gw/dev-1/blob".to_string(), payload)]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gw.subscriber.count(), 1, "stored once");
}

#[test]
fn a_full_queue_with_on_full_reject_gets_5_03_with_max_age() {
    let mut gw = Gateway::start_with("max_messages = 2\non_full = \"reject\"");
    gw.broker.stop();
    expect(&post_notls(gw.port, "sensors/d/t", "1", &[]), "2.04");
    expect(&post_notls(gw.port, "sensors/d/t", "2", &[]), "2.04");
    let full = post_notls(gw.port, "sensors/d/t", "3", &[]);
    expect(&full, "5.03");
    let line = full.response_line.clone().unwrap_or_default();
    assert!(line.contains("Max-Age:"), "a retry hint: {line}");
    gw.broker.start_again();
    let got = gw.published(2);
    assert_eq!(
        got.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
        ["1", "2"]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gw.subscriber.count(), 2, "the refused one was not stored");
}

#[test]
fn a_multi_segment_capture_and_a_retained_qos_0_route() {
    let gw = Gateway::start();
    expect(&post_notls(gw.port, "raw/a/b/c", "deep", &[]), "2.04");
    expect(&post_notls(gw.port, "status/dev-9", "up", &[]), "2.04");
    let got = gw.published(2);
    assert!(got.contains(&("raw/a/b/c".to_string(), "deep".to_string())));
    assert!(got.contains(&("site/gw/dev-9/status".to_string(), "up".to_string())));
    // Retained: a subscriber arriving later still gets it, flagged.
    let mut late = Subscriber::start(gw.broker.port(), "site/gw/dev-9/status");
    late.wait_ready();
    let retained = late.wait_for_count(1, WAIT);
    assert_eq!(retained[0].payload_str(), "up");
    assert!(retained[0].retain, "published with retain");
    assert_eq!(retained[0].qos, 0, "route qos 0");
}

#[test]
fn a_duplicate_con_gets_the_same_answer_and_is_stored_once() {
    let gw = Gateway::start();
    let mut client = CoapClient::new(gw.addr());
    let request = client.build(
        MsgType::Con,
        Code::POST,
        &["sensors", "dev-1", "t"],
        b"once",
    );
    let first = client.request(&request, WAIT).expect("an answer");
    let again = client.request(&request, WAIT).expect("an answer again");
    assert_eq!(first.code, Code::CHANGED);
    assert_eq!(again.encode(), first.encode(), "the same response");
    assert_eq!(
        gw.published(1),
        vec![("site/gw/dev-1/t".to_string(), "once".to_string())]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gw.subscriber.count(), 1, "never stored twice");
}

#[test]
fn broken_datagrams_are_dropped_or_reset_and_never_stored() {
    let gw = Gateway::start();
    let client = CoapClient::new(gw.addr());
    // Version 2: dropped silently.
    client.send_raw(&[0x80, 0x02, 0x12, 0x34]);
    assert!(client.recv_raw(Duration::from_millis(300)).is_none());
    // Token length 9-15 is a format error: a CON gets RST.
    for tkl in 9u8..=15 {
        let mut datagram = vec![0x40 | tkl, 0x02, 0x20, tkl];
        datagram.resize(4 + usize::from(tkl), 0xab);
        client.send_raw(&datagram);
        let answer = client
            .recv_raw(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no RST for token length {tkl}"));
        let answer = Message::decode(&answer).expect("a valid RST");
        assert_eq!(answer.mtype, MsgType::Rst, "token length {tkl}");
        assert_eq!(answer.mid, u16::from_be_bytes([0x20, tkl]));
    }
    // A payload marker with no payload after it: RST.
    client.send_raw(&[0x40, 0x02, 0x30, 0x01, 0xb1, b's', 0xff]);
    let answer =
        Message::decode(&client.recv_raw(Duration::from_secs(2)).expect("RST")).expect("valid");
    assert_eq!(answer.mtype, MsgType::Rst);
    // An option running past the end of the datagram: RST.
    client.send_raw(&[0x40, 0x02, 0x30, 0x02, 0xbd, 0x05, b's']);
    let answer =
        Message::decode(&client.recv_raw(Duration::from_secs(2)).expect("RST")).expect("valid");
    assert_eq!(answer.mtype, MsgType::Rst);
    // A bogus Block1 (reserved SZX 7) on a route: refused, never stored.
    let mut raw = CoapClient::new(gw.addr());
    let bogus = raw
        .build(MsgType::Con, Code::POST, &["sensors", "d", "t"], b"x")
        .with_option(option::BLOCK1, vec![0x0f]);
    let refused = raw.request(&bogus, WAIT).expect("an answer");
    assert_eq!(refused.code.class(), 4, "bogus Block1: {:?}", refused.code);
    gw.assert_nothing_published();
    // And the daemon serves on.
    expect(&post_notls(gw.port, "sensors/d/t", "after", &[]), "2.04");
    assert_eq!(
        gw.published(1),
        vec![("site/gw/d/t".to_string(), "after".to_string())]
    );
}
