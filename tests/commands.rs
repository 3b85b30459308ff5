//! Commands to devices, end to end: a real mosquitto, commands published
//! with mosquitto_pub (MQTT 5, independent of the daemon), results read with
//! mosquitto_sub, and devices played by libcoap (coap-client uploading and
//! polling, coap-server taking a pushed request) and by the tests' own CoAP
//! codec (support/coap.rs, written apart from the daemon's) as a sleepy
//! device that listens only after its upload.

mod support;

use support::broker::Broker;
use support::coap::{option, CoapClient, Code, Message, MsgType};
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::subscriber::{mosquitto_pub, Received, Subscriber};
use support::{free_tcp_port, free_udp_port, wait_until, WAIT};

/// A daemon with one route and one command table.
fn config(coap: u16, broker: &Broker, admin: u16, table: &str) -> String {
    let mut config =
        DaemonConfig::new(coap, broker.port()).route(RouteConfig::new("s/{device}", "up/{device}"));
    config.admin_port = Some(admin);
    format!(
        "{}\n[commands]\nmax_per_device = 3\n\n[[command]]\n\
         topic = \"cmd/{{gateway}}/{{device}}/{{resource*}}\"\n\
         result_topic = \"cmdres/{{gateway}}/{{device}}\"\n{table}\n",
        config.render()
    )
}

/// Publishes a command with MQTT 5 (QoS 1), with Correlation Data.
fn command(broker: &Broker, device: &str, resource: &str, payload: &str, correlation: &str) {
    let topic = format!("cmd/test-gw/{device}/{resource}");
    let out = mosquitto_pub(
        broker.port(),
        &topic,
        payload.as_bytes(),
        &[
            "-q",
            "1",
            "-V",
            "mqttv5",
            "-D",
            "PUBLISH",
            "correlation-data",
            correlation,
        ],
    );
    assert!(out.success(), "mosquitto_pub: {out:?}");
}

/// The results so far, as (id, status) with the JSON and the message.
fn results(sub: &Subscriber) -> Vec<(String, String, serde_json::Value, Received)> {
    sub.messages()
        .into_iter()
        .filter(|m| m.topic.starts_with("cmdres/"))
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("result JSON");
            let id = v["id"].as_str().unwrap_or("?").to_string();
            let status = v["status"].as_str().unwrap_or("?").to_string();
            (id, status, v, m)
        })
        .collect()
}

fn wait_for_status(sub: &Subscriber, id: &str, status: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(WAIT, &format!("result {id} {status}"), || {
        found = results(sub)
            .into_iter()
            .find(|(i, s, _, _)| i == id && s == status)
            .map(|(_, _, v, _)| v);
        found.is_some()
    });
    found.expect("waited for")
}

/// `GET cmd?device=NAME` with the tests' own codec.
fn poll(client: &mut CoapClient, device: &str) -> Message {
    let mut request = client.build(MsgType::Con, Code::GET, &["cmd"], b"");
    request = request.with_option(option::URI_QUERY, format!("device={device}"));
    client
        .con_request(request)
        .response
        .expect("the gateway answers a poll")
}

fn report(client: &mut CoapClient, device: &str, id: &str, payload: &[u8]) -> Message {
    let mut request = client.build(MsgType::Con, Code::POST, &["cmd", id], payload);
    request = request.with_option(option::URI_QUERY, format!("device={device}"));
    client
        .con_request(request)
        .response
        .expect("the gateway answers a report")
}

fn text(values: Vec<&[u8]>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn a_polled_command_reaches_the_device_and_every_state_reaches_the_application() {
    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    let daemon = Daemon::start(&config(coap, &broker, admin, "delivery = \"poll\""));
    daemon.wait_for_log(
        "uplink: subscribed to the command topics cmd/test-gw/+/#",
        WAIT,
    );

    command(&broker, "valve-1", "config/interval", "60", "req-1");
    let queued = wait_for_status(&sub, "1", "queued");
    assert_eq!(queued["device"], "valve-1");
    assert_eq!(queued["resource"], "config/interval");
    let correlation = results(&sub)[0].3.v5.clone().expect("v5").correlation;
    assert_eq!(correlation, "req-1", "Correlation Data echoed");

    // libcoap's client, as a device would: the command's body.
    let out = support::coap_cli::coap_client(
        "coap-client-notls",
        &[
            "-m",
            "get",
            &format!("coap://127.0.0.1:{coap}/cmd?device=valve-1"),
        ],
    );
    assert!(out.output.contains("60"), "{out:?}");

    // The tests' codec: the id and resource in the options.
    let mut device = CoapClient::new(daemon.coap_addr());
    let answer = poll(&mut device, "valve-1");
    assert_eq!(answer.code, Code(0x45), "2.05: {answer:?}");
    assert_eq!(answer.payload, b"60");
    assert_eq!(
        text(answer.option_values(option::LOCATION_PATH)),
        ["cmd", "1"]
    );
    assert_eq!(
        text(answer.option_values(option::LOCATION_QUERY)),
        ["config/interval"]
    );
    wait_for_status(&sub, "1", "sent");

    let done = report(&mut device, "valve-1", "1", b"interval=60");
    assert_eq!(done.code, Code(0x44), "2.04: {done:?}");
    let result = wait_for_status(&sub, "1", "done");
    assert_eq!(
        (result["code"].as_str(), result["payload"].as_str()),
        (Some("2.04"), Some("interval=60"))
    );
    assert_eq!(
        poll(&mut device, "valve-1").code,
        Code(0x84),
        "4.04 once done"
    );
    assert_eq!(
        report(&mut device, "valve-1", "1", b"again").code,
        Code(0x84),
        "a repeated report finds nothing"
    );

    let (_, metrics) = admin_get(admin, "/metrics");
    assert!(
        metrics.contains("coap2mqtt_commands_total{outcome=\"done\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("coap2mqtt_commands_pending 0"),
        "{metrics}"
    );
}

#[test]
fn commands_published_while_the_gateway_is_down_arrive_in_order_after_it_reconnects() {
    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    let mut daemon = Daemon::start(&config(coap, &broker, admin, "delivery = \"poll\""));
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    // Its persistent session and subscription now live in the broker.
    daemon.terminate(WAIT);

    for (n, payload) in ["first", "second"].iter().enumerate() {
        command(&broker, "valve-2", "led", payload, &format!("c{n}"));
    }
    daemon.restart();
    wait_for_status(&sub, "2", "queued");

    let mut device = CoapClient::new(daemon.coap_addr());
    for (id, payload) in [("1", "first"), ("2", "second")] {
        let answer = poll(&mut device, "valve-2");
        assert_eq!(answer.payload, payload.as_bytes(), "{answer:?}");
        assert_eq!(
            text(answer.option_values(option::LOCATION_PATH)),
            ["cmd", id]
        );
        assert_eq!(report(&mut device, "valve-2", id, b"").code, Code(0x44));
    }
}

#[test]
fn a_command_acknowledged_to_the_broker_survives_kill_9_with_the_broker_down() {
    let mut broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    let mut daemon = Daemon::start(&config(coap, &broker, admin, "delivery = \"poll\""));
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    command(&broker, "valve-3", "relay", "on", "k");
    wait_for_status(&sub, "1", "queued");

    // Journaled and acknowledged: the broker will not send it again.
    daemon.kill9();
    broker.stop();
    daemon.restart();
    daemon.wait_for_log("commands: 1 pending commands restored", WAIT);
    let mut device = CoapClient::new(daemon.coap_addr());
    let answer = poll(&mut device, "valve-3");
    assert_eq!((answer.code, &answer.payload[..]), (Code(0x45), &b"on"[..]));
    assert_eq!(report(&mut device, "valve-3", "1", b"ok").code, Code(0x44));

    // The results waited in the queue for the broker.
    broker.start_again();
    wait_for_status(&sub, "1", "done");
    // Results are messages like any other, at least once: "queued" may
    // come twice (its PUBACK was not yet recorded at the kill), but the
    // command was queued once: no second id.
    let ids: Vec<String> = results(&sub).into_iter().map(|(id, _, _, _)| id).collect();
    assert!(ids.iter().all(|id| id == "1"), "{ids:?}");
}

#[test]
fn a_piggybacked_command_rides_on_the_answer_to_an_upload() {
    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    let daemon = Daemon::start(&config(coap, &broker, admin, "delivery = \"piggyback\""));
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    command(&broker, "meter-1", "interval", "300", "p");
    wait_for_status(&sub, "1", "queued");

    let mut device = CoapClient::new(daemon.coap_addr());
    let upload = device.con(&["s", "meter-1"], b"21.5");
    let answer = upload.response.expect("answered");
    assert_eq!(answer.code, Code(0x44), "{answer:?}");
    assert_eq!(answer.payload, b"300");
    assert_eq!(
        text(answer.option_values(option::LOCATION_PATH)),
        ["cmd", "1"]
    );
    assert_eq!(report(&mut device, "meter-1", "1", b"").code, Code(0x44));
    wait_for_status(&sub, "1", "done");
    // The next upload's answer is a plain 2.04.
    let next = device
        .con(&["s", "meter-1"], b"21.6")
        .response
        .expect("answered");
    assert_eq!((next.code, next.payload.len()), (Code(0x44), 0));
}

#[test]
fn expiry_the_per_device_cap_and_a_topic_no_table_takes_each_get_an_answer() {
    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    let daemon = Daemon::start(&config(
        coap,
        &broker,
        admin,
        "delivery = \"poll\"\nttl_s = 2",
    ));
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    for n in 0..4 {
        command(&broker, "sleepy", "x", &n.to_string(), "e");
    }
    // max_per_device = 3: the fourth is rejected, with the reason.
    let rejected = wait_for_status(&sub, "4", "rejected");
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|r| r.contains("max_per_device")),
        "{rejected}"
    );
    // Nobody polls within ttl_s: the three expire.
    for id in ["1", "2", "3"] {
        wait_for_status(&sub, id, "expired");
    }
    let mut device = CoapClient::new(daemon.coap_addr());
    assert_eq!(poll(&mut device, "sleepy").code, Code(0x84));

    let out = mosquitto_pub(
        broker.port(),
        "cmd/test-gw/x",
        b"no resource level",
        &["-q", "1"],
    );
    assert!(out.success());
    daemon.wait_for_log("no [[command]] table takes topic \"cmd/test-gw/x\"", WAIT);
    let (_, metrics) = admin_get(admin, "/metrics");
    for (outcome, n) in [("expired", 3), ("rejected", 1), ("unmatched", 1)] {
        assert!(
            metrics.contains(&format!(
                "coap2mqtt_commands_total{{outcome=\"{outcome}\"}} {n}"
            )),
            "{outcome}: {metrics}"
        );
    }
}

#[test]
fn an_unknown_delivery_is_refused_naming_the_table_and_key() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gw.toml");
    std::fs::write(
        &file,
        config(
            free_udp_port(),
            &broker,
            free_tcp_port(),
            "delivery = \"observe\"",
        )
        .replace("@STORE@", &dir.path().join("q").display().to_string()),
    )
    .expect("write");
    let out = support::daemon::run_binary(
        &["check-config", "--config", file.to_str().expect("utf-8")],
        WAIT,
    );
    assert!(!out.success(), "{out:?}");
    assert!(out.output.contains("command[1].delivery"), "{}", out.output);
    assert!(
        out.output.contains("\"push\", \"poll\" or \"piggyback\""),
        "{}",
        out.output
    );
}

/// The device side of a push: the next request the gateway sends to this
/// socket, answered with `code` (piggybacked on the ACK) and `payload`.
fn answer_push(device: &mut CoapClient, code: Code, payload: &[u8]) -> Message {
    let request = device
        .recv(WAIT)
        .expect("the gateway pushes a request")
        .expect("well-formed CoAP");
    assert_eq!(request.mtype, MsgType::Con, "{request:?}");
    let ack = Message::new(MsgType::Ack, code, request.mid, &request.token).with_payload(payload);
    device.send(&ack);
    request
}

#[test]
fn a_sleepy_device_gets_its_commands_pushed_in_order_in_the_window_after_its_upload() {
    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    // delivery = "push" is the default.
    let daemon = Daemon::start(&config(coap, &broker, admin, "method = \"POST\""));
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    // Published while the device sleeps.
    command(&broker, "sleepy-1", "config/interval", "60", "a");
    command(&broker, "sleepy-1", "led", "red", "b");
    wait_for_status(&sub, "2", "queued");

    // It wakes, uploads, and listens on the same socket.
    let mut device = CoapClient::new(daemon.coap_addr());
    let upload = device.con(&["s", "sleepy-1"], b"21.5");
    assert_eq!(upload.response.expect("answered").code, Code(0x44));
    let first = answer_push(&mut device, Code(0x44), b"ok");
    assert_eq!(first.code, Code::POST);
    assert_eq!(first.path(), ["config", "interval"]);
    assert_eq!(first.payload, b"60");
    // Its window is open: the next follows once the first is settled.
    let second = answer_push(&mut device, Code(0x80), b"no such led");
    assert_eq!(
        (second.path(), &second.payload[..]),
        (vec!["led".to_string()], &b"red"[..])
    );
    let done = wait_for_status(&sub, "1", "done");
    assert_eq!(
        (done["code"].as_str(), done["payload"].as_str()),
        (Some("2.04"), Some("ok"))
    );
    let failed = wait_for_status(&sub, "2", "failed");
    assert_eq!(failed["code"].as_str(), Some("4.00"));
}

#[test]
fn a_device_that_does_not_answer_keeps_its_command_for_its_next_upload() {
    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    let daemon = Daemon::start(&config(coap, &broker, admin, "awake_s = 3"));
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    command(&broker, "deaf-1", "relay", "on", "d");
    wait_for_status(&sub, "1", "queued");

    let mut device = CoapClient::new(daemon.coap_addr());
    device
        .con(&["s", "deaf-1"], b"1")
        .response
        .expect("answered");
    // Ignores the request and its retransmission(s), then the window closes.
    let ignored = device.recv(WAIT).expect("pushed").expect("CoAP");
    daemon.wait_for_log("did not answer command 1 in its window", WAIT);
    // The operator sees it waiting.
    let (_, devices) = admin_get(admin, "/devices");
    let devices: serde_json::Value = serde_json::from_str(&devices).expect("JSON");
    let deaf = devices["devices"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["name"] == "deaf-1"))
        .cloned()
        .expect("listed");
    assert_eq!(deaf["pending_commands"], 1, "{deaf}");
    // Next wake: the same command again, with the same id.
    device
        .con(&["s", "deaf-1"], b"2")
        .response
        .expect("answered");
    let again = answer_push(&mut device, Code(0x44), b"");
    assert_eq!(
        (again.path(), &again.payload[..]),
        (ignored.path(), &ignored.payload[..])
    );
    assert_ne!(again.mid, ignored.mid, "a new exchange");
    wait_for_status(&sub, "1", "done");
}

#[test]
fn libcoap_s_coap_server_as_an_awake_device_takes_a_pushed_command() {
    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let (coap, admin) = (free_udp_port(), free_tcp_port());
    let daemon = Daemon::start(&config(coap, &broker, admin, ""));
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    command(&broker, "lamp-1", "example_data", "on", "l");
    wait_for_status(&sub, "1", "queued");

    // The device uploads from its port, then serves on it (libcoap's
    // example server: example_data takes PUT; -e echoes the body).
    let port = free_udp_port();
    let up = support::coap_cli::coap_client(
        "coap-client-notls",
        &[
            "-m",
            "post",
            "-p",
            &port.to_string(),
            "-e",
            "1",
            &format!("coap://127.0.0.1:{coap}/s/lamp-1"),
        ],
    );
    support::coap_cli::assert_code(&up, "2.04");
    let mut server = std::process::Command::new("coap-server-notls")
        .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-e"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("coap-server-notls (libcoap3-bin)");
    let guard = KillOnDrop(&mut server);
    // The first send found no server yet; a retransmission reaches it.
    let done = wait_for_status(&sub, "1", "done");
    drop(guard);
    // 2.01 Created the first time example_data is written, 2.04 after.
    assert!(
        done["code"].as_str().is_some_and(|c| c.starts_with("2.0")),
        "{done}"
    );
    assert_eq!(done["payload"].as_str(), Some("on"), "echoed: {done}");
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_dtls_device_gets_its_pushed_command_on_its_own_session() {
    use std::net::SocketAddr;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use webrtc_dtls::cipher_suite::CipherSuiteId;
    use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
    use webrtc_util::Conn;
    const KEY: &str = "secret-key-01";

    let broker = Broker::start();
    let sub = Subscriber::start_v5(broker.port(), "cmdres/#");
    let files = tempfile::tempdir().expect("tempdir");
    let psk = files.path().join("psk.toml");
    std::fs::write(&psk, format!("[psk]\n\"sensor-01\" = \"{KEY}\"\n")).expect("psk");
    std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).expect("mode");
    let (dtls_port, admin) = (free_udp_port(), free_tcp_port());
    let config = config(free_udp_port(), &broker, admin, "identity = true")
        + &format!(
            "\n[dtls]\nlisten = [\"127.0.0.1:{dtls_port}\"]\npsk_file = \"{}\"\n\n\
             [[route]]\nresource = \"own/{{device}}\"\ntopic = \"own/{{device}}\"\nidentity = \"{{device}}\"\n",
            psk.display()
        );
    let daemon = Daemon::start(&config);
    daemon.wait_for_log("uplink: subscribed to the command topics", WAIT);
    command(&broker, "sensor-01", "relay", "on", "t");
    wait_for_status(&sub, "1", "queued");

    let target = SocketAddr::from(([127, 0, 0, 1], dtls_port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        socket.connect(target).await.expect("connect");
        let dtls = Config {
            psk: Some(Arc::new(|_: &[u8]| Ok(KEY.as_bytes().to_vec()))),
            psk_identity_hint: Some(b"sensor-01".to_vec()),
            cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
            extended_master_secret: ExtendedMasterSecretType::Request,
            ..Default::default()
        };
        let conn = webrtc_dtls::conn::DTLSConn::new(Arc::new(socket), dtls, true, None)
            .await
            .expect("handshake");
        let mut buf = vec![0u8; 2048];
        let upload = Message::new(MsgType::Con, Code::POST, 1, &[0x42])
            .with_path(&["own", "sensor-01"])
            .with_payload(b"21.5".to_vec());
        conn.send(&upload.encode()).await.expect("send");
        // The 2.04, then the pushed request, on the same session.
        let mut pushed = None;
        for _ in 0..2 {
            let n = tokio::time::timeout(WAIT, conn.recv(&mut buf))
                .await
                .expect("in time")
                .expect("a record");
            let message = Message::decode(&buf[..n]).expect("CoAP");
            if message.mtype == MsgType::Con {
                pushed = Some(message);
                break;
            }
            assert_eq!(message.code, Code(0x44), "{message:?}");
        }
        let pushed = pushed.expect("a pushed request");
        assert_eq!(
            (pushed.path(), &pushed.payload[..]),
            (vec!["relay".to_string()], &b"on"[..])
        );
        let ack = Message::new(MsgType::Ack, Code(0x44), pushed.mid, &pushed.token);
        conn.send(&ack.encode()).await.expect("send the answer");
    });
    wait_for_status(&sub, "1", "done");
}
