//! `payload = "json"` end to end: libcoap's coap-client posts CBOR, SenML
//! JSON and SenML CBOR (with `-t` setting the Content-Format; libcoap
//! 4.3.1 knows "cbor" by name, the SenML formats by number only); an MQTT 5
//! subscriber (mosquitto_sub) reads what reached mosquitto. The expected
//! JSON is written here by hand from the RFCs' own examples, not produced
//! by the daemon's code; payloads that do not decode get 4.00 and nothing
//! reaches the broker.

mod support;

use serde_json::{json, Value};
use support::broker::Broker;
use support::coap_cli::{assert_code, coap_client};
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::subscriber::Subscriber;
use support::{free_tcp_port, free_udp_port, WAIT};

fn daemon(broker: &Broker) -> (Daemon, u16) {
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), broker.port())
        .route(RouteConfig::new("json/{d}", "j/{gateway}/{d}").set("payload", "json"))
        .route(
            RouteConfig::new("senml/{d}", "r/{d}/{senml_name}")
                .set("payload", "json")
                .set("split", true),
        )
        .route(RouteConfig::new("raw/{d}", "raw/{d}"));
    config.admin_port = Some(admin);
    (Daemon::start_config(&config), admin)
}

/// `coap-client-notls -m post -t FORMAT -f FILE coap://…/PATH`.
fn post_file(port: u16, path: &str, format: &str, body: &[u8]) -> support::coap_cli::CliOutcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("body");
    std::fs::write(&file, body).expect("write the body");
    let uri = format!("coap://127.0.0.1:{port}/{path}");
    let file = file.display().to_string();
    coap_client(
        "coap-client-notls",
        &["-B", "20", "-m", "post", "-t", format, "-f", &file, &uri],
    )
}

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(payload)))
}

fn refused_total(admin: u16, reason: &str) -> f64 {
    let metrics = admin_get(admin, "/metrics").1;
    let label = format!("reason=\"{reason}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("coap2mqtt_coap_refused_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn cbor_reaches_the_broker_as_json_with_the_device_s_content_format() {
    let broker = Broker::start();
    let subscriber = Subscriber::start_v5(broker.port(), "j/#");
    let (daemon, _) = daemon(&broker);
    // RFC 8949 Appendix A items in one map: {"a": 1, "b": [2, 3], "c":
    // h'0102', "d": 1(1363896240), "e": -1.5, "f": NaN}
    let cbor = [
        0xa6, 0x61, b'a', 0x01, 0x61, b'b', 0x82, 0x02, 0x03, 0x61, b'c', 0x42, 0x01, 0x02, 0x61,
        b'd', 0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0, 0x61, b'e', 0xf9, 0xbe, 0x00, 0x61, b'f', 0xf9,
        0x7e, 0x00,
    ];
    let port = daemon.coap_addr().port();
    assert_code(&post_file(port, "json/d1", "cbor", &cbor), "2.04");
    let got = subscriber.wait_for_count(1, WAIT);
    assert_eq!(got[0].topic, "j/test-gw/d1");
    assert_eq!(
        json_of(&got[0].payload),
        json!({"a": 1, "b": [2, 3], "c": "AQI", "d": 1363896240, "e": -1.5, "f": null})
    );
    let p = got[0].v5.as_ref().expect("MQTT 5 properties");
    assert_eq!(p.content_type, "application/json");
    assert_eq!(p.payload_format, "1");
    assert_eq!(p.user("content_format"), Some("60"), "the device's format");
}

#[test]
fn senml_json_and_senml_cbor_are_split_into_resolved_records() {
    let broker = Broker::start();
    let subscriber = Subscriber::start_v5(broker.port(), "r/#");
    let (daemon, _) = daemon(&broker);
    let port = daemon.coap_addr().port();
    // RFC 8428 §5.1.2's multiple-measurements pack (the first two records).
    let senml_json = br#"[
        {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"bu":"%RH","v":20},
        {"u":"lon","v":24.30621}
    ]"#;
    assert_code(&post_file(port, "senml/d1", "110", senml_json), "2.04");
    // RFC 8428 §6: the CBOR of §5.1.2's first pack: [{-2: "urn:dev:ow:
    // 10e2073a01080063", 0: "voltage", 1: "V", 2: 120.1}, {0: "current",
    // 6: -5, 2: 1.2}, {0: "current", 6: -4, 2: 1.3}] (the first two
    // records), with a base time added (-3: 1320067464).
    let mut senml_cbor = vec![0x82, 0xa5, 0x21];
    senml_cbor.extend(b"\x78\x1burn:dev:ow:10e2073a01080063");
    senml_cbor.extend([0x22, 0x1a, 0x4e, 0xae, 0xa1, 0x88]);
    senml_cbor.extend(b"\x00\x67voltage\x01\x61V\x02");
    senml_cbor.extend([0xfb, 0x40, 0x5e, 0x06, 0x66, 0x66, 0x66, 0x66, 0x66]);
    senml_cbor.extend(b"\xa3\x00\x67current\x06\x24\x02");
    senml_cbor.extend([0xfb, 0x3f, 0xf3, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
    assert_code(&post_file(port, "senml/d2", "112", &senml_cbor), "2.04");

    let got = subscriber.wait_for_count(4, WAIT);
    let by_topic = |topic: &str| {
        let m = got
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("nothing on {topic}; got {got:?}"));
        json_of(&m.payload)
    };
    // Base name, base time and base unit applied to each record (§4.6).
    assert_eq!(
        by_topic("r/d1/urn:dev:ow:10e2073a01080063:"),
        json!([{"n": "urn:dev:ow:10e2073a01080063:", "u": "%RH", "t": 1.320067464e9, "v": 20}])
    );
    // The second record has no name of its own: the base name alone.
    // Both records share it, so both went to that topic.
    let shared: Vec<Value> = got
        .iter()
        .filter(|m| m.topic == "r/d1/urn:dev:ow:10e2073a01080063:")
        .map(|m| json_of(&m.payload))
        .collect();
    assert_eq!(shared.len(), 2, "{got:?}");
    assert_eq!(
        shared[1],
        json!([{"n": "urn:dev:ow:10e2073a01080063:", "u": "lon", "t": 1.320067464e9, "v": 24.30621}])
    );
    let voltage = by_topic("r/d2/urn:dev:ow:10e2073a01080063voltage");
    assert_eq!(
        voltage,
        json!([{"n": "urn:dev:ow:10e2073a01080063voltage", "u": "V", "t": 1320067464, "v": 120.1}])
    );
    let current = by_topic("r/d2/urn:dev:ow:10e2073a01080063current");
    assert_eq!(
        current,
        json!([{"n": "urn:dev:ow:10e2073a01080063current", "t": 1320067459, "v": 1.2}])
    );
    for m in &got {
        let p = m.v5.as_ref().expect("properties");
        assert_eq!(p.content_type, "application/json", "{}", m.topic);
    }
}

#[test]
fn payloads_that_do_not_decode_get_4_00_and_reach_nobody() {
    let broker = Broker::start();
    let subscriber = Subscriber::start(broker.port(), "#");
    let (daemon, admin) = daemon(&broker);
    let port = daemon.coap_addr().port();
    // CBOR: a map announcing two pairs, holding one.
    let bad_cbor = post_file(port, "json/d1", "cbor", &[0xa2, 0x61, b'a', 0x01]);
    assert_code(&bad_cbor, "4.00");
    // SenML JSON: a record without a value.
    let bad_senml = post_file(port, "senml/d1", "110", br#"[{"n":"t"}]"#);
    assert_code(&bad_senml, "4.00");
    // SenML CBOR that is not CBOR at all.
    let bad_senml_cbor = post_file(port, "senml/d1", "112", &[0xff, 0xff]);
    assert_code(&bad_senml_cbor, "4.00");
    // A format the route cannot translate: 4.15.
    let octets = post_file(port, "json/d1", "octet-stream", &[1, 2, 3]);
    assert_code(&octets, "4.15");
    // libcoap prints the diagnostic payload of the 4.00.
    let line = bad_cbor.response_line.clone().unwrap_or_default();
    assert!(line.contains("::"), "a diagnostic payload: {line}");

    // The same device's good message still flows, and it is the only one.
    assert_code(&post_file(port, "raw/d1", "text", b"ok"), "2.04");
    let got = subscriber.wait_for_count(1, WAIT);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let topics: Vec<String> = subscriber
        .messages()
        .into_iter()
        .map(|m| m.topic)
        .filter(|t| !t.starts_with("coap2mqtt/"))
        .collect();
    assert_eq!(topics, vec!["raw/d1".to_string()], "{got:?}");
    assert_eq!(refused_total(admin, "payload_malformed"), 3.0);
    assert_eq!(refused_total(admin, "unsupported_content_format"), 1.0);
}
