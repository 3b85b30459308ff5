//! Tests of the test harness itself (tests/support/), against real
//! mosquitto and libcoap but without the daemon: if these fail, the
//! integration tests built on the harness cannot be trusted.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use support::broker::Broker;
use support::certs::Certs;
use support::coap::{
    self, option, Block, CoapClient, Code, DecodeError, Message, MsgType, Transmission,
};
use support::coap_cli::{self, post_notls};
use support::daemon::{DaemonConfig, RouteConfig, STORE_PLACEHOLDER};
use support::proxy::{FaultProxy, Mode};
use support::subscriber::{mosquitto_pub, publish_at, ClientTls, MqttEndpoint, Subscriber};
use support::{free_udp_port, wait_until, ChildGuard, WAIT};

fn payloads(subscriber: &Subscriber) -> Vec<String> {
    subscriber
        .messages()
        .iter()
        .map(|m| m.payload_str())
        .collect()
}

/// A mosquitto_pub that runs in the background (it may hang on purpose).
fn spawn_pub(port: u16, topic: &str, payload: &str) -> ChildGuard {
    ChildGuard::spawn(
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                payload,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

// ---- broker, subscriber, proxy ----

#[test]
fn publish_and_subscribe_round_trip_through_a_passing_proxy() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    // Both clients go through the proxy: both directions are forwarded.
    let subscriber = Subscriber::start(proxy.port(), "smoke/#");

    let outcome = mosquitto_pub(proxy.port(), "smoke/a b", b"hello\nworld", &["-q", "1"]);
    assert!(outcome.success(), "mosquitto_pub via proxy: {outcome:?}");

    let got = subscriber.wait_for_count(1, WAIT);
    assert_eq!(got[0].topic, "smoke/a b");
    assert_eq!(got[0].payload, b"hello\nworld");
    assert_eq!(got[0].qos, 1);
    assert!(proxy.connections_accepted() >= 2, "{:?}", proxy.stats());
    assert!(proxy.stats().bytes_forwarded > 0);
}

#[test]
fn blackhole_forwards_nothing_and_pass_works_for_new_connections() {
    let broker = Broker::start();
    let subscriber = Subscriber::start(broker.port(), "bh/#");
    let proxy = FaultProxy::start(broker.port());
    proxy.set_mode(Mode::Blackhole);

    let mut blackholed = spawn_pub(proxy.port(), "bh/t", "lost");
    wait_until(WAIT, "the proxy to discard the blackholed CONNECT", || {
        proxy.stats().bytes_discarded > 0
    });
    // mosquitto_pub publishes only after a CONNACK, which cannot come.
    assert_eq!(
        blackholed.try_status(),
        None,
        "mosquitto_pub finished through a blackhole"
    );
    assert_eq!(proxy.stats().bytes_forwarded, 0);
    drop(blackholed);

    proxy.set_mode(Mode::Pass);
    let outcome = mosquitto_pub(proxy.port(), "bh/t", b"arrives", &["-q", "1"]);
    assert!(outcome.success(), "mosquitto_pub after Pass: {outcome:?}");
    subscriber.wait_for_count(1, WAIT);
    assert_eq!(payloads(&subscriber), ["arrives"]);
}

#[test]
fn stall_holds_bytes_and_delivers_them_on_the_same_connection_after_pass() {
    let broker = Broker::start();
    let subscriber = Subscriber::start(broker.port(), "stall/#");
    let proxy = FaultProxy::start(broker.port());
    proxy.set_mode(Mode::Stall);

    let mut publisher = spawn_pub(proxy.port(), "stall/t", "held");
    wait_until(WAIT, "the proxy to accept the stalled connection", || {
        proxy.connections_accepted() == 1
    });
    assert_eq!(publisher.try_status(), None);
    assert_eq!(subscriber.count(), 0);

    proxy.set_mode(Mode::Pass);
    let status = publisher
        .wait_timeout(WAIT)
        .expect("mosquitto_pub finishes once the stall ends");
    assert!(status.success(), "mosquitto_pub after the stall: {status}");
    subscriber.wait_for_count(1, WAIT);
    assert_eq!(payloads(&subscriber), ["held"]);
    assert_eq!(
        proxy.connections_accepted(),
        1,
        "the held bytes went over the original connection"
    );
}

#[test]
fn refuse_closes_open_connections_and_refuses_new_ones_until_pass() {
    // The kernel completes connects into the backlog: no accept loop needed.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind an upstream listener");
    let upstream_port = upstream.local_addr().expect("upstream addr").port();
    let proxy = FaultProxy::start(upstream_port);

    let mut open = TcpStream::connect(proxy.addr()).expect("connect through the passing proxy");
    wait_until(WAIT, "the proxy to register the connection", || {
        proxy.stats().open == 1
    });

    proxy.set_mode(Mode::Refuse);
    open.set_read_timeout(Some(WAIT))
        .expect("set a read timeout");
    let mut buffer = [0u8; 16];
    match open.read(&mut buffer) {
        Ok(0) => {}
        Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut => {}
        other => panic!("an open connection survived Refuse: {other:?}"),
    }
    let refused = TcpStream::connect(proxy.addr()).expect_err("connect while refusing");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");

    proxy.set_mode(Mode::Pass);
    let _again =
        TcpStream::connect(proxy.addr()).expect("connect after Pass (listener bound again)");
    wait_until(WAIT, "the proxy to register the new connection", || {
        proxy.stats().open == 1
    });
}

#[test]
fn subscriber_with_a_persistent_session_gets_messages_published_during_a_broker_restart() {
    let mut broker = Broker::start();
    let subscriber = Subscriber::start(broker.port(), "restart/#");
    assert!(mosquitto_pub(broker.port(), "restart/1", b"before", &["-q", "1"]).success());
    subscriber.wait_for_count(1, WAIT);

    broker.stop();
    broker.start_again();
    // Published at once: mosquitto_sub is most likely still reconnecting
    // (it retries about once a second), so this is queued in its session.
    let outcome = mosquitto_pub(broker.port(), "restart/2", b"after", &["-q", "1"]);
    assert!(
        outcome.success(),
        "publish after restart: {outcome:?}\n{}",
        broker.log()
    );

    subscriber.wait_for_count(2, WAIT);
    assert_eq!(payloads(&subscriber), ["before", "after"]);
    let resumed = format!("Sending CONNACK to {} (1, 0)", subscriber.client_id());
    wait_until(WAIT, "the broker log to show the resumed session", || {
        broker.log().contains(&resumed)
    });
}

#[test]
fn tls_broker_accepts_the_test_client_certificate_and_rejects_others() {
    let dir = tempfile::tempdir().expect("temp dir for certificates");
    let certs = Certs::generate(dir.path());
    let broker = Broker::start_tls(&certs, true);
    let subscriber = Subscriber::start_tls(broker.port(), "tls/#", &certs);

    let right = MqttEndpoint::tls(broker.port(), &certs);
    let outcome = publish_at(&right, "tls/t", b"secure", &["-q", "1"]);
    assert!(
        outcome.success(),
        "publish with the right certificate: {outcome:?}\n{}",
        broker.log()
    );
    subscriber.wait_for_count(1, WAIT);
    assert_eq!(payloads(&subscriber), ["secure"]);

    let endpoint = |ca: &std::path::Path,
                    identity: Option<(&std::path::Path, &std::path::Path)>| {
        MqttEndpoint {
            port: broker.port(),
            tls: Some(ClientTls {
                ca_file: ca.to_path_buf(),
                cert_and_key: identity.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
            }),
        }
    };
    let client = Some((certs.client_cert.as_path(), certs.client_key.as_path()));
    let wrong_client = Some((
        certs.wrong_client_cert.as_path(),
        certs.wrong_client_key.as_path(),
    ));
    let cases = [
        (
            "trusting the wrong CA",
            endpoint(&certs.wrong_ca_cert, client),
        ),
        (
            "client certificate from the wrong CA",
            endpoint(&certs.ca_cert, wrong_client),
        ),
        ("no client certificate", endpoint(&certs.ca_cert, None)),
    ];
    for (what, endpoint) in cases {
        let outcome = publish_at(&endpoint, "tls/t", b"rejected", &["-q", "1"]);
        assert!(
            !outcome.timed_out() && !outcome.success(),
            "{what}: {outcome:?}"
        );
    }
    assert_eq!(payloads(&subscriber), ["secure"]);
}

// ---- CoAP codec ----

#[test]
fn encodes_the_rfc7252_get_temperature_request_byte_exactly() {
    // RFC 7252 Figure 16: CON [0x7d34] GET /temperature, no token.
    let request = Message::new(MsgType::Con, Code::GET, 0x7d34, &[]).with_path(&["temperature"]);
    let mut expected = vec![0x40, 0x01, 0x7d, 0x34, 0xbb];
    expected.extend_from_slice(b"temperature");
    assert_eq!(request.encode(), expected);
}

#[test]
fn decodes_a_piggybacked_response() {
    // RFC 7252 Figure 16: ACK [0x7d34] 2.05 "22.3 C".
    let mut bytes = vec![0x60, 0x45, 0x7d, 0x34, 0xff];
    bytes.extend_from_slice(b"22.3 C");
    let response = Message::decode(&bytes).expect("decode the RFC example response");
    assert_eq!(response.mtype, MsgType::Ack);
    assert_eq!(response.code.to_string(), "2.05");
    assert_eq!(response.mid, 0x7d34);
    assert!(response.token.is_empty() && response.options.is_empty());
    assert_eq!(response.payload, b"22.3 C");
}

#[test]
fn encodes_extended_option_deltas_and_lengths() {
    let request = Message::new(MsgType::Con, Code::POST, 0x1234, &[0xab])
        // Deliberately unsorted: encode sorts by option number.
        .with_options([
            coap::no_response(26),
            coap::content_format(0),
            coap::block1(1, true, 2),
        ])
        .with_path(&["s"])
        .with_option(600, vec![b'a'; 14])
        .with_payload(&b"hi"[..]);
    let mut expected = vec![
        0x41, 0x02, 0x12, 0x34, 0xab, // CON, TKL 1, POST, mid, token
        0xb1, b's', // Uri-Path (11): delta 11, length 1
        0x10, // Content-Format (12) = 0: delta 1, empty value
        0xd1, 0x02, 0x1a, // Block1 (27): delta 15 = 13+2; NUM 1, M, SZX 2
        0xd1, 0xda, 0x1a, // No-Response (258): delta 231 = 13+218; value 26
        0xed, 0x00, 0x49, 0x01, // option 600: delta 342 = 269+73, length 14 = 13+1
    ];
    expected.extend_from_slice(&[b'a'; 14]);
    expected.extend_from_slice(&[0xff, b'h', b'i']);
    assert_eq!(request.encode(), expected);

    let decoded = Message::decode(&expected).expect("decode what we encoded");
    assert_eq!(decoded.path(), ["s"]);
    assert_eq!(
        decoded.block1(),
        Some(Block {
            num: 1,
            more: true,
            szx: 2
        })
    );
    assert_eq!(decoded.option(option::NO_RESPONSE), Some(&[26u8][..]));
    assert_eq!(decoded.option(600).map(<[u8]>::len), Some(14));
    assert_eq!(decoded.payload, b"hi");
}

#[test]
fn option_lengths_round_trip_across_every_extension_boundary() {
    for length in [0, 12, 13, 268, 269, 1000] {
        let message = Message::new(MsgType::Non, Code::PUT, 7, &[1, 2, 3, 4, 5, 6, 7, 8])
            .with_option(option::URI_PATH, vec![b'x'; length])
            .with_option(65000, vec![1]);
        assert_eq!(
            Message::decode(&message.encode()),
            Ok(message),
            "length {length}"
        );
    }
}

#[test]
fn block_values_follow_rfc7959() {
    assert_eq!(
        Block {
            num: 0,
            more: false,
            szx: 0
        }
        .encode(),
        Vec::<u8>::new()
    );
    assert_eq!(
        Block {
            num: 0,
            more: true,
            szx: 6
        }
        .encode(),
        [0x0e]
    );
    assert_eq!(
        Block {
            num: 20,
            more: false,
            szx: 2
        }
        .encode(),
        [0x01, 0x42]
    );
    assert_eq!(
        Block {
            num: 0,
            more: false,
            szx: 6
        }
        .size(),
        1024
    );
    assert_eq!(
        Block::decode(&[0x01, 0x42]),
        Some(Block {
            num: 20,
            more: false,
            szx: 2
        })
    );
}

#[test]
fn rejects_malformed_datagrams_with_an_error() {
    let cases: [(&[u8], DecodeError); 7] = [
        (&[0x40, 0x01], DecodeError::TooShort(2)),
        (&[0x80, 0x01, 0, 1], DecodeError::BadVersion(2)),
        (&[0x49, 0x01, 0, 1], DecodeError::BadTokenLength(9)),
        (
            &[0x42, 0x01, 0, 1, 0xaa],
            DecodeError::Truncated { offset: 4 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xf1, 0x00],
            DecodeError::ReservedNibble { offset: 4 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xff],
            DecodeError::EmptyPayloadAfterMarker,
        ),
        (
            &[0x60, 0x00, 0, 1, 0xff, 0x01],
            DecodeError::EmptyWithContent,
        ),
    ];
    for (bytes, error) in cases {
        assert_eq!(Message::decode(bytes), Err(error), "{bytes:02x?}");
    }
    assert!(matches!(
        Message::decode(&[0x40, 0x01, 0, 1, 0xb5, b'a']),
        Err(DecodeError::Truncated { .. })
    ));
}

// ---- CoAP client against an in-test server ----

/// A UDP server on 127.0.0.1 answering each decodable datagram with the
/// messages `answer(request, n)` returns (n counts datagrams from 0).
/// Stops on drop.
struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(answer: impl Fn(&Message, usize) -> Vec<Message> + Send + 'static) -> TestServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the test server");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set a read timeout");
        let addr = socket.local_addr().expect("test server addr");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let count = AtomicUsize::new(0);
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, peer)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    let Ok(request) = Message::decode(&buffer[..n]) else {
                        continue;
                    };
                    let index = count.fetch_add(1, Ordering::SeqCst);
                    for response in answer(&request, index) {
                        socket
                            .send_to(&response.encode(), peer)
                            .expect("test server send");
                    }
                }
            })
        };
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn piggybacked(request: &Message, code: Code) -> Message {
    Message::new(MsgType::Ack, code, request.mid, &request.token)
}

fn fast() -> Transmission {
    Transmission {
        ack_timeout: Duration::from_millis(50),
        ..Transmission::default()
    }
}

#[test]
fn ping_is_answered_by_rst() {
    let server = TestServer::start(|request, _| {
        (request.code == Code::EMPTY)
            .then(|| Message::empty(MsgType::Rst, request.mid))
            .into_iter()
            .collect()
    });
    assert!(CoapClient::new(server.addr).ping(WAIT));
}

#[test]
fn con_retransmits_the_same_message_until_answered() {
    // Drops the first two datagrams, answers the third.
    let server = TestServer::start(|request, n| {
        (n >= 2)
            .then(|| piggybacked(request, Code::CHANGED))
            .into_iter()
            .collect()
    });
    let mut client = CoapClient::new(server.addr).with_transmission(fast());
    let outcome = client.con(&["a", "b"], b"x");
    assert_eq!(outcome.code(), Some(Code::CHANGED));
    assert_eq!(outcome.retransmissions, 2);
}

#[test]
fn con_gives_up_after_max_retransmit() {
    let server = TestServer::start(|_, _| vec![]);
    let mut client = CoapClient::new(server.addr).with_transmission(fast());
    let outcome = client.con(&["a"], b"x");
    assert!(outcome.response.is_none());
    assert_eq!(outcome.retransmissions, 4);
}

#[test]
fn con_waits_for_a_separate_response_after_an_empty_ack() {
    let acked_by_client = Arc::new(AtomicBool::new(false));
    let server = {
        let acked_by_client = Arc::clone(&acked_by_client);
        TestServer::start(move |request, _| match (request.mtype, request.mid) {
            (MsgType::Con, _) => vec![
                Message::empty(MsgType::Ack, request.mid),
                Message::new(MsgType::Con, Code::CHANGED, 0xbeef, &request.token),
            ],
            (MsgType::Ack, 0xbeef) => {
                acked_by_client.store(true, Ordering::SeqCst);
                vec![]
            }
            _ => vec![],
        })
    };
    let mut client = CoapClient::new(server.addr).with_transmission(fast());
    let outcome = client.con(&["a"], b"x");
    let response = outcome.response.as_ref().expect("the separate response");
    assert_eq!(
        (response.mtype, response.code),
        (MsgType::Con, Code::CHANGED)
    );
    assert_eq!(outcome.retransmissions, 0);
    wait_until(WAIT, "the client to ACK the separate response", || {
        acked_by_client.load(Ordering::SeqCst)
    });
}

#[test]
fn con_stream_counts_only_2xx_answers_as_acknowledged() {
    let server = TestServer::start(|request, _| {
        let code = if request.path() == ["ok"] {
            Code::CHANGED
        } else {
            Code::new(4, 4)
        };
        vec![piggybacked(request, code)]
    });
    let report = coap::send_con_stream(server.addr, 20, 4, |i| {
        let path = if i % 2 == 0 { "ok" } else { "missing" };
        (vec![path.to_string()], format!("m{i}").into_bytes())
    });
    assert_eq!(
        report.acked_indexes(),
        (0..20).step_by(2).collect::<Vec<_>>()
    );
    assert_eq!(report.failed, (1..20).step_by(2).collect::<Vec<_>>());
    assert!(report
        .rejected
        .iter()
        .all(|(_, code)| code.to_string() == "4.04"));
}

#[test]
fn non_stream_sends_every_message() {
    let received = Arc::new(AtomicUsize::new(0));
    let server = {
        let received = Arc::clone(&received);
        TestServer::start(move |request, _| {
            assert_eq!(request.mtype, MsgType::Non);
            received.fetch_add(1, Ordering::SeqCst);
            vec![]
        })
    };
    let sent = coap::send_non_stream(server.addr, 10, |i| (vec!["n".into()], vec![i as u8]));
    assert_eq!(sent.len(), 10);
    // Loopback UDP does not drop 10 datagrams to a reading socket.
    wait_until(WAIT, "the server to receive all NON messages", || {
        received.load(Ordering::SeqCst) == 10
    });
}

// ---- libcoap client wrapper ----

#[test]
fn coap_cli_reports_no_answer_as_no_response_code() {
    let port = free_udp_port();
    let outcome = post_notls(port, "nobody/home", "x", &["-B", "1"]);
    assert!(outcome.exited, "{}", outcome.output);
    assert_eq!(outcome.response_code, None, "{}", outcome.output);
    assert!(
        outcome.gave_up,
        "libcoap reports its timeout: {}",
        outcome.output
    );
    assert!(
        outcome.output.contains("c:POST"),
        "the request line is printed: {}",
        outcome.output
    );
}

#[test]
fn coap_cli_reads_the_response_code_and_our_codec_reads_libcoaps_request() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let server = {
        let seen = Arc::clone(&seen);
        TestServer::start(move |request, _| {
            *seen.lock().expect("seen lock") = Some(request.clone());
            vec![piggybacked(request, Code::CHANGED)]
        })
    };
    let outcome = post_notls(server.addr.port(), "sensors/t1", "21.5", &[]);
    assert_eq!(
        outcome.response_code.as_deref(),
        Some("2.04"),
        "{}",
        outcome.output
    );
    assert_eq!(outcome.response_type.as_deref(), Some("ACK"));

    let request = seen
        .lock()
        .expect("seen lock")
        .clone()
        .expect("the server saw libcoap's request");
    assert_eq!((request.mtype, request.code), (MsgType::Con, Code::POST));
    assert_eq!(request.path(), ["sensors", "t1"]);
    assert_eq!(request.payload, b"21.5");
    // libcoap names a non-default port in Uri-Port.
    assert_eq!(
        request.option(option::URI_PORT).and_then(coap::decode_uint),
        Some(u32::from(server.addr.port()))
    );
}

#[test]
fn coap_cli_reports_rst_and_non_responses() {
    let server = TestServer::start(|request, _| match request.mtype {
        MsgType::Con => vec![Message::empty(MsgType::Rst, request.mid)],
        _ => vec![Message::new(MsgType::Non, Code::CHANGED, 1, &request.token)],
    });
    let rst = post_notls(server.addr.port(), "r", "x", &["-B", "5"]);
    assert!(rst.got_rst && rst.response_code.is_none(), "{}", rst.output);
    let non = post_notls(server.addr.port(), "r", "x", &["-N", "-B", "5"]);
    assert_eq!(non.response_code.as_deref(), Some("2.04"), "{}", non.output);
    assert_eq!(non.response_type.as_deref(), Some("NON"));
    assert_eq!(
        coap_cli::parse_output(String::new(), true, String::new()).response_code,
        None
    );
}

// ---- daemon config ----

#[test]
fn daemon_config_renders_the_contract_keys() {
    let mut config = DaemonConfig::new(5683, 1883).route(
        RouteConfig::new("sensors/+id", "gw/{id}")
            .methods(&["POST", "PUT"])
            .qos(1)
            .retain(false),
    );
    config.max_messages = Some(1000);
    config.on_full = Some("reject".into());
    let text = config.render();
    let table: toml::Table = text.parse().expect("rendered config is TOML");
    assert_eq!(table["coap"]["listen"][0].as_str(), Some("127.0.0.1:5683"));
    assert_eq!(table["mqtt"]["url"].as_str(), Some("mqtt://127.0.0.1:1883"));
    assert_eq!(table["store"]["path"].as_str(), Some(STORE_PLACEHOLDER));
    assert_eq!(table["store"]["max_messages"].as_integer(), Some(1000));
    assert_eq!(table["route"][0]["methods"][1].as_str(), Some("PUT"));
    assert_eq!(table["route"][0]["qos"].as_integer(), Some(1));
    assert!(
        table["mqtt"].get("ca_file").is_none(),
        "unset keys are left out:\n{text}"
    );
}
