//! CoAP over DTLS: real libcoap clients (OpenSSL and GnuTLS builds) against
//! the real daemon, with PSK and with certificates made at test time, and
//! the bad cases: wrong key, unknown identity, unknown CA, a ClientHello
//! flood, a device rebooting on the same port, another device's path.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::broker::Broker;
use support::certs::{Certs, CLIENT_CN};
use support::coap::{Code, Message, MsgType};
use support::coap_cli::{assert_code, coap_client, CliOutcome};
use support::daemon::{admin_get, run_binary, Daemon};
use support::dtls_hello::client_hello;
use support::subscriber::Subscriber;
use support::{free_udp_port, WAIT};

const OPENSSL: &str = "coap-client-openssl";
const GNUTLS: &str = "coap-client-gnutls";
const KEY: &str = "secretPSK-01";

/// The daemon logs at debug, without rtc-dtls's per-packet chatter (and
/// the webrtc-dtls test clients' own).
fn quiet_dtls_logs() {
    std::env::set_var(
        "RUST_LOG",
        "debug,rtc_dtls=error,rtc_shared=error,webrtc_dtls=error,webrtc_util=error",
    );
}

/// A broker, a subscriber on `#`, and a daemon with DTLS on a free port.
struct Gateway {
    _broker: Broker,
    subscriber: Subscriber,
    daemon: Daemon,
    dtls_port: u16,
    _files: tempfile::TempDir,
    psk_file: PathBuf,
}

impl Gateway {
    /// `dtls` is the body of the `[dtls]` table, after `listen`; `psk_file`
    /// in it may be written `@PSK@`.
    fn start(dtls: &str, psk: &[(&str, &str)]) -> Gateway {
        quiet_dtls_logs();
        let files = tempfile::tempdir().expect("tempdir");
        let psk_file = files.path().join("psk.toml");
        write_psk_file(&psk_file, psk);
        let broker = Broker::start();
        let mut subscriber = Subscriber::start(broker.port(), "#");
        subscriber.wait_ready();
        let coap_port = free_udp_port();
        let dtls_port = free_udp_port();
        let config = format!(
            r#"
[gateway]
id = "gw"
[coap]
listen = ["127.0.0.1:{coap_port}"]
[dtls]
listen = ["127.0.0.1:{dtls_port}"]
{dtls}
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
status_topic = ""
[store]
path = "@STORE@"
[[route]]
resource = "sensors/{{device}}/{{metric}}"
topic = "site/{{identity}}/{{device}}/{{metric}}"
[[route]]
resource = "own/{{device}}/{{metric}}"
topic = "own/{{device}}/{{metric}}"
identity = "{{device}}"
"#,
            dtls = dtls.replace("@PSK@", &psk_file.display().to_string()),
            mqtt = broker.port(),
        );
        let daemon = Daemon::start(&config);
        daemon.wait_for_log(&format!("listening on dtls 127.0.0.1:{dtls_port}"), WAIT);
        Gateway {
            _broker: broker,
            subscriber,
            daemon,
            dtls_port,
            _files: files,
            psk_file,
        }
    }

    fn psk(psk: &[(&str, &str)]) -> Gateway {
        Gateway::start("psk_file = \"@PSK@\"", psk)
    }

    fn uri(&self, path: &str) -> String {
        format!("coaps://127.0.0.1:{}/{path}", self.dtls_port)
    }

    /// `binary -B 10 -k key -u identity -m post -e payload [extra] uri`.
    fn post_psk(
        &self,
        binary: &str,
        identity: &str,
        key: &str,
        path: &str,
        payload: &str,
        extra: &[&str],
    ) -> CliOutcome {
        let uri = self.uri(path);
        let mut args = vec![
            "-B", "10", "-k", key, "-u", identity, "-m", "post", "-e", payload,
        ];
        args.extend_from_slice(extra);
        args.push(&uri);
        coap_client(binary, &args)
    }

    fn hangup(&self) {
        let pid = self.daemon.pid().expect("daemon running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Nothing reached the broker (after giving the uplink time to send).
    fn assert_nothing_published(&self) {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            self.subscriber.messages(),
            vec![],
            "nothing may be published"
        );
    }
}

/// The key `psk add` printed: its first line (stdout; the usage follows on
/// stderr).
fn first_line(output: &str) -> String {
    output.lines().next().unwrap_or_default().trim().to_string()
}

fn write_psk_file(path: &Path, psk: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let mut text = String::from("[psk]\n");
    for (identity, key) in psk {
        text.push_str(&format!("\"{identity}\" = \"{key}\"\n"));
    }
    std::fs::write(path, text).expect("write the PSK file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

#[test]
fn psk_devices_post_con_non_and_block1_with_both_clients() {
    let gw = Gateway::psk(&[("sensor-01", KEY)]);
    let long = "x".repeat(300);
    for binary in [OPENSSL, GNUTLS] {
        gw.subscriber.clear();
        assert_code(
            &gw.post_psk(
                binary,
                "sensor-01",
                KEY,
                "sensors/sensor-01/temp",
                "21.5",
                &[],
            ),
            "2.04",
        );
        let non = gw.post_psk(
            binary,
            "sensor-01",
            KEY,
            "sensors/sensor-01/hum",
            "40",
            &["-N"],
        );
        assert_code(&non, "2.04");
        assert_eq!(non.response_type.as_deref(), Some("NON"), "{}", non.output);
        assert_code(
            &gw.post_psk(
                binary,
                "sensor-01",
                KEY,
                "sensors/sensor-01/log",
                &long,
                &["-b", "64"],
            ),
            "2.04",
        );
        let got = gw.subscriber.wait_for_count(3, WAIT);
        let topics: Vec<(&str, String)> = got
            .iter()
            .map(|m| (m.topic.as_str(), m.payload_str()))
            .collect();
        assert!(
            topics.contains(&("site/sensor-01/sensor-01/temp", "21.5".into())),
            "{binary}: {topics:?}"
        );
        assert!(
            topics.contains(&("site/sensor-01/sensor-01/hum", "40".into())),
            "{binary}: {topics:?}"
        );
        assert!(
            topics.contains(&("site/sensor-01/sensor-01/log", long.clone())),
            "{binary}: {topics:?}"
        );
    }
    assert!(gw
        .daemon
        .log()
        .contains("(sensor-01) connected with a pre-shared key"));
}

#[test]
fn a_server_offering_only_ccm_8_completes_handshakes_with_both_clients() {
    let gw = Gateway::start(
        "psk_file = \"@PSK@\"\ncipher_suites = [\"TLS_PSK_WITH_AES_128_CCM_8\"]",
        &[("sensor-01", KEY)],
    );
    for binary in [OPENSSL, GNUTLS] {
        assert_code(
            &gw.post_psk(binary, "sensor-01", KEY, "sensors/a/t", binary, &[]),
            "2.04",
        );
    }
    let got = gw.subscriber.wait_for_count(2, WAIT);
    assert!(
        got.iter().all(|m| m.topic == "site/sensor-01/a/t"),
        "{got:?}"
    );
}

#[test]
fn wrong_key_and_unknown_identity_are_refused_and_the_daemon_serves_on() {
    let gw = Gateway::psk(&[("sensor-01", KEY)]);
    for binary in [OPENSSL, GNUTLS] {
        let wrong = gw.post_psk(
            binary,
            "sensor-01",
            "not-the-key",
            "sensors/a/t",
            "1",
            &["-B", "3"],
        );
        assert_eq!(wrong.response_code, None, "{}", wrong.output);
        let unknown = gw.post_psk(binary, "sensor-99", KEY, "sensors/a/t", "1", &["-B", "3"]);
        assert_eq!(unknown.response_code, None, "{}", unknown.output);
    }
    gw.assert_nothing_published();
    gw.daemon
        .wait_for_log("failed (unknown identity or wrong key)", WAIT);
    assert!(gw
        .daemon
        .log()
        .contains("unknown PSK identity \"sensor-99\""));
    assert_code(
        &gw.post_psk(OPENSSL, "sensor-01", KEY, "sensors/a/t", "ok", &[]),
        "2.04",
    );
    let got = gw.subscriber.wait_for_count(1, WAIT);
    assert_eq!(got[0].payload, b"ok");
}

#[test]
fn handshakes_are_counted_by_outcome_in_the_metrics() {
    let admin = support::free_tcp_port();
    // The [dtls] body may end the table: the admin endpoint rides along.
    let gw = Gateway::start(
        &format!("psk_file = \"@PSK@\"\n[admin]\nlisten = \"127.0.0.1:{admin}\""),
        &[("sensor-01", KEY)],
    );
    assert_code(
        &gw.post_psk(OPENSSL, "sensor-01", KEY, "sensors/a/t", "ok", &[]),
        "2.04",
    );
    let wrong = gw.post_psk(
        OPENSSL,
        "sensor-01",
        "not-the-key",
        "sensors/a/t",
        "x",
        &["-B", "3"],
    );
    assert_eq!(wrong.response_code, None, "{}", wrong.output);
    let line = |outcome: &str| {
        format!("coap2mqtt_dtls_handshakes_total{{transport=\"dtls\",outcome=\"{outcome}\"}} 1")
    };
    support::wait_until(WAIT, "the handshake outcomes in /metrics", || {
        let m = admin_get(admin, "/metrics").1;
        m.contains(&line("ok")) && m.contains(&line("failed"))
    });
}

#[test]
fn a_device_may_not_publish_under_another_devices_path() {
    let gw = Gateway::psk(&[("sensor-01", KEY)]);
    for binary in [OPENSSL, GNUTLS] {
        assert_code(
            &gw.post_psk(binary, "sensor-01", KEY, "own/sensor-02/temp", "1", &[]),
            "4.03",
        );
    }
    gw.assert_nothing_published();
    assert_code(
        &gw.post_psk(OPENSSL, "sensor-01", KEY, "own/sensor-01/temp", "2", &[]),
        "2.04",
    );
    let got = gw.subscriber.wait_for_count(1, WAIT);
    assert_eq!(got[0].topic, "own/sensor-01/temp");
}

fn cert_gateway(dir: &Path) -> (Gateway, Certs) {
    let certs = Certs::generate(dir);
    let gw = Gateway::start(&cert_section(&certs, &certs.server_key), &[]);
    (gw, certs)
}

fn cert_section(certs: &Certs, server_key: &Path) -> String {
    format!(
        "certificate = \"{}\"\nprivate_key = \"{}\"\nclient_ca = \"{}\"",
        certs.server_cert.display(),
        server_key.display(),
        certs.ca_cert.display()
    )
}

#[test]
fn a_sec1_server_key_works_as_a_pkcs8_one_does() {
    // The same key as the PKCS#8 one of the other certificate tests, written
    // as `openssl ecparam -genkey` writes keys: "BEGIN EC PRIVATE KEY".
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let sec1 = dir.path().join("server-sec1.key");
    support::certs::openssl(&["ec", "-in", path(&certs.server_key), "-out", path(&sec1)]);
    let text = std::fs::read_to_string(&sec1).expect("read");
    assert!(text.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{text}");
    let gw = Gateway::start(&cert_section(&certs, &sec1), &[]);
    for binary in [OPENSSL, GNUTLS] {
        let outcome = post_cert(
            &gw,
            binary,
            &certs.client_cert,
            &certs.client_key,
            &certs.ca_cert,
            binary,
        );
        assert_code(&outcome, "2.04");
    }
    gw.subscriber.wait_for_count(2, WAIT);
}

#[test]
fn a_server_key_of_another_curve_or_type_is_refused_naming_what_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let p384 = dir.path().join("p384.key");
    support::certs::openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        path(&p384),
    ]);
    let rsa = dir.path().join("rsa.key");
    support::certs::openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path(&rsa),
    ]);
    for (key, found) in [(&p384, "an EC key on P-384"), (&rsa, "an RSA key")] {
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nid = \"gw\"\n[coap]\nlisten = [\"127.0.0.1:{}\"]\n[dtls]\nlisten = [\"127.0.0.1:{}\"]\n{}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[store]\npath = \"{}\"\n[[route]]\nresource = \"a\"\ntopic = \"a\"\n",
                free_udp_port(),
                free_udp_port(),
                cert_section(&certs, key),
                dir.path().join("store").display()
            ),
        )
        .expect("write config");
        let run = run_binary(&["run", "--config", path(&config)], WAIT);
        assert!(!run.success() && !run.timed_out(), "{}", run.output);
        assert!(run.output.contains(found), "{}", run.output);
        assert!(
            run.output.contains("P-256 (prime256v1, secp256r1)")
                && run.output.contains("BEGIN EC PRIVATE KEY")
                && run.output.contains("BEGIN PRIVATE KEY"),
            "{}",
            run.output
        );
    }
}

fn post_cert(
    gw: &Gateway,
    binary: &str,
    cert: &Path,
    key: &Path,
    ca: &Path,
    payload: &str,
) -> CliOutcome {
    let uri = gw.uri("sensors/dev/temp");
    let args = [
        "-B",
        "10",
        "-c",
        path(cert),
        "-j",
        path(key),
        "-C",
        path(ca),
        "-m",
        "post",
        "-e",
        payload,
        &uri,
    ];
    coap_client(binary, &args)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_client_certificate_from_our_ca_is_accepted_and_its_cn_is_the_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, certs) = cert_gateway(dir.path());
    for binary in [OPENSSL, GNUTLS] {
        let outcome = post_cert(
            &gw,
            binary,
            &certs.client_cert,
            &certs.client_key,
            &certs.ca_cert,
            binary,
        );
        assert_code(&outcome, "2.04");
    }
    let got = gw.subscriber.wait_for_count(2, WAIT);
    let topic = format!("site/{CLIENT_CN}/dev/temp");
    assert!(got.iter().all(|m| m.topic == topic), "{got:?}");
    assert!(gw
        .daemon
        .log()
        .contains(&format!("({CLIENT_CN}) connected with a certificate")));
}

#[test]
fn a_client_certificate_from_an_unknown_ca_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, certs) = cert_gateway(dir.path());
    for binary in [OPENSSL, GNUTLS] {
        let outcome = post_cert(
            &gw,
            binary,
            &certs.wrong_client_cert,
            &certs.wrong_client_key,
            &certs.ca_cert,
            "x",
        );
        assert_eq!(outcome.response_code, None, "{}", outcome.output);
    }
    gw.assert_nothing_published();
    gw.daemon
        .wait_for_log("failed (certificate refused?)", WAIT);
    let good = post_cert(
        &gw,
        OPENSSL,
        &certs.client_cert,
        &certs.client_key,
        &certs.ca_cert,
        "ok",
    );
    assert_code(&good, "2.04");
}

/// Sends ClientHellos from `sockets` source ports, round after round,
/// until dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    fn start(target: SocketAddr, sockets: usize, round_every: Duration) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let sockets: Vec<UdpSocket> = (0..sockets)
                .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a flood socket"))
                .collect();
            let mut sent = 0u64;
            // Bounded: at most two minutes, whatever happens to the test.
            for round in 0..(120_000 / round_every.as_millis().max(1) as u32) {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                for (i, socket) in sockets.iter().enumerate() {
                    let _ = socket.send_to(&client_hello(round << 16 | i as u32), target);
                    sent += 1;
                }
                std::thread::sleep(round_every);
            }
            sent
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("flood thread"))
            .unwrap_or(0)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (sessions, handshaking, hello verify requests sent) of every table
/// report in the log.
fn table_reports(log: &str) -> Vec<(usize, usize, u64)> {
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("] dtls 127.0.0.1:")?;
            let (_, rest) = rest.split_once(": ")?;
            let (sessions, rest) = rest.split_once(" sessions (")?;
            let (handshaking, rest) = rest.split_once(" handshaking); ")?;
            let (cookies, _) = rest.split_once(" hello verify requests sent")?;
            Some((
                sessions.parse().ok()?,
                handshaking.parse().ok()?,
                cookies.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn a_client_hello_flood_from_2000_ports_leaves_no_state_and_devices_are_served() {
    let gw = Gateway::start(
        "psk_file = \"@PSK@\"\nmax_sessions = 1024\nmax_handshakes = 512\nhandshake_timeout_s = 3\nnew_peers_per_s = 100000",
        &[("sensor-01", KEY)],
    );
    let target = SocketAddr::from(([127, 0, 0, 1], gw.dtls_port));
    let flood = Flood::start(target, 2000, Duration::from_secs(2));
    // Every spoofed hello is answered with a cookie, and nothing is kept.
    support::wait_until(WAIT, "2000 spoofed hellos answered", || {
        table_reports(&gw.daemon.log())
            .last()
            .is_some_and(|&(_, _, cookies)| cookies >= 2000)
    });
    for (i, binary) in [OPENSSL, GNUTLS, OPENSSL].into_iter().enumerate() {
        let payload = format!("during-{i}");
        assert_code(
            &gw.post_psk(binary, "sensor-01", KEY, "sensors/a/t", &payload, &[]),
            "2.04",
        );
    }
    let sent = flood.stop();
    assert!(sent >= 2000, "the flood sent {sent}");
    let got = gw.subscriber.wait_for_count(3, WAIT);
    assert_eq!(got.len(), 3, "only the device's messages: {got:?}");
    support::wait_until(WAIT, "the table to empty after the devices left", || {
        table_reports(&gw.daemon.log())
            .last()
            .is_some_and(|&(sessions, handshaking, _)| (sessions, handshaking) == (0, 0))
    });
    let reports = table_reports(&gw.daemon.log());
    assert!(!reports.is_empty());
    for (sessions, handshaking, _) in reports {
        // Only the real device ever held a place.
        assert!(
            sessions <= 1 && handshaking <= 1,
            "{sessions} sessions, {handshaking} handshaking"
        );
    }
}

/// A device on a fixed address and port that handshakes, posts, and then
/// loses power: no close_notify, its session stays at the gateway.
fn post_from_fixed_port(local: SocketAddr, target: SocketAddr, mid: u16, payload: &str) -> Code {
    use webrtc_dtls::cipher_suite::CipherSuiteId;
    use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
    use webrtc_dtls::conn::DTLSConn;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .expect("bind the fixed port");
        socket.connect(target).await.expect("connect");
        let config = Config {
            psk: Some(Arc::new(|_: &[u8]| Ok(KEY.as_bytes().to_vec()))),
            psk_identity_hint: Some(b"sensor-01".to_vec()),
            cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
            extended_master_secret: ExtendedMasterSecretType::Request,
            ..Default::default()
        };
        let handshake = DTLSConn::new(Arc::new(socket), config, true, None);
        let conn = tokio::time::timeout(WAIT, handshake)
            .await
            .expect("the handshake finishes")
            .expect("the handshake succeeds");
        let request = Message::new(MsgType::Con, Code::POST, mid, &[1, 2])
            .with_path(&["sensors", "sensor-01", "t"])
            .with_payload(payload.as_bytes().to_vec());
        conn.write(&request.encode(), None).await.expect("send");
        let mut buf = vec![0u8; 2048];
        let n = conn.read(&mut buf, Some(WAIT)).await.expect("an answer");
        let answer = Message::decode(&buf[..n]).expect("a CoAP answer");
        // Power cut: no close_notify; the socket goes with the runtime.
        drop(conn);
        answer.code
    })
}

#[test]
fn a_device_rebooting_on_the_same_address_and_port_gets_a_new_session_at_once() {
    let gw = Gateway::psk(&[("sensor-01", KEY)]);
    let target = SocketAddr::from(([127, 0, 0, 1], gw.dtls_port));
    let local = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    assert_eq!(
        post_from_fixed_port(local, target, 1, "before"),
        Code::CHANGED
    );
    // A new Message ID, as a device picks at boot: the same one would be
    // a duplicate of the same peer, answered again but not stored again.
    assert_eq!(
        post_from_fixed_port(local, target, 2, "after"),
        Code::CHANGED
    );
    let got = gw.subscriber.wait_for_count(2, WAIT);
    let payloads: Vec<String> = got.iter().map(|m| m.payload_str()).collect();
    assert_eq!(payloads, vec!["before", "after"]);
    assert!(gw
        .daemon
        .log()
        .contains("started a new handshake; replacing its session"));
}

#[test]
fn sighup_reloads_the_psk_file_and_refuses_a_broken_one() {
    let gw = Gateway::psk(&[("sensor-01", KEY)]);
    // libcoap 4.3.1 (Debian 12) takes a key only as text.
    let added = run_binary(
        &[
            "psk",
            "add",
            "sensor-02",
            "--ascii",
            "--psk-file",
            path(&gw.psk_file),
        ],
        WAIT,
    );
    assert!(added.success(), "{}", added.output);
    let key = first_line(&added.output);
    gw.hangup();
    gw.daemon
        .wait_for_log("reload: 2 PSK identities in force", WAIT);
    assert_code(
        &gw.post_psk(OPENSSL, "sensor-02", &key, "sensors/b/t", "new", &[]),
        "2.04",
    );

    std::fs::write(&gw.psk_file, "[psk]\n\"sensor-01\" = \"hex:zz\"\n").expect("break the file");
    gw.hangup();
    gw.daemon
        .wait_for_log("the PSK file is refused, the keys in force stay", WAIT);
    assert!(
        gw.daemon.log().contains("psk.sensor-01: is not valid hex"),
        "{}",
        gw.daemon.log()
    );
    assert_code(
        &gw.post_psk(GNUTLS, "sensor-02", &key, "sensors/b/t", "still", &[]),
        "2.04",
    );
    let got = gw.subscriber.wait_for_count(2, WAIT);
    assert!(
        got.iter().all(|m| m.topic == "site/sensor-02/b/t"),
        "{got:?}"
    );
}

#[test]
fn psk_add_prints_a_strong_key_once_writes_0600_and_list_shows_no_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("psk.toml");
    let added = run_binary(
        &["psk", "add", "sensor-01", "--psk-file", path(&file)],
        WAIT,
    );
    assert!(added.success(), "{}", added.output);
    // 16 random bytes in hex, then how each client takes them.
    let key = first_line(&added.output);
    assert_eq!(key.len(), 32, "{key:?}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
    assert!(
        added.output.contains(&format!("-k 0x{key}")),
        "{}",
        added.output
    );
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        text.contains(&format!("sensor-01 = \"hex:{key}\"")),
        "{text}"
    );
    let key = key.as_str();
    let mode = std::fs::metadata(&file)
        .expect("created")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let again = run_binary(
        &["psk", "add", "sensor-01", "--psk-file", path(&file)],
        WAIT,
    );
    assert_eq!(
        again.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        again.output
    );
    assert!(again.output.contains("already exists"), "{}", again.output);

    assert!(run_binary(
        &["psk", "add", "sensor-02", "--psk-file", path(&file)],
        WAIT
    )
    .success());
    let list = run_binary(&["psk", "list", "--psk-file", path(&file)], WAIT);
    assert!(list.success(), "{}", list.output);
    assert_eq!(list.output, "sensor-01\nsensor-02\n");
    assert!(!list.output.contains(key));
}

#[test]
fn a_psk_file_readable_by_others_refuses_to_start_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("psk.toml");
    std::fs::write(&file, "[psk]\na = \"b\"\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw\"\n[coap]\nlisten = [\"127.0.0.1:{}\"]\n[dtls]\nlisten = [\"127.0.0.1:{}\"]\npsk_file = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[store]\npath = \"{}\"\n[[route]]\nresource = \"a\"\ntopic = \"a\"\n",
            free_udp_port(),
            free_udp_port(),
            file.display(),
            dir.path().join("store").display()
        ),
    )
    .expect("write config");
    let run = run_binary(&["run", "--config", path(&config)], WAIT);
    assert!(!run.success() && !run.timed_out(), "{}", run.output);
    assert!(
        run.output.contains(&format!("{}", file.display())),
        "{}",
        run.output
    );
    assert!(run.output.contains("chmod 600"), "{}", run.output);
}

/// The Python of the venv holding aiocoap and DTLSSocket (tinydtls), made
/// by scripts/interop-setup (which scripts/test runs).
fn interop_python() -> PathBuf {
    std::env::var_os("COAP2MQTT_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python")
        })
}

#[test]
fn a_tinydtls_device_posts_with_a_key_made_by_psk_add_over_ccm_8() {
    let python = interop_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/interop-setup (scripts/test does)",
        python.display()
    );
    // CCM_8 only: all tinydtls has for PSK.
    let gw = Gateway::start(
        "psk_file = \"@PSK@\"\ncipher_suites = [\"TLS_PSK_WITH_AES_128_CCM_8\"]",
        &[],
    );
    let added = run_binary(
        &["psk", "add", "sensor-07", "--psk-file", path(&gw.psk_file)],
        WAIT,
    );
    assert!(added.success(), "{}", added.output);
    let key = first_line(&added.output);
    gw.hangup();
    gw.daemon
        .wait_for_log("reload: 1 PSK identities in force", WAIT);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_post.py");
    let uri = gw.uri("sensors/sensor-07/t");
    let run = support::run_with_timeout(
        path(&python),
        &[path(&script), &uri, "sensor-07", &key, "from tinydtls"],
        Duration::from_secs(60),
    );
    assert!(run.output.contains("2.04"), "{}", run.output);
    let got = gw.subscriber.wait_for_count(1, WAIT);
    assert_eq!(got[0].topic, "site/sensor-07/sensor-07/t");
    assert_eq!(got[0].payload, b"from tinydtls");
    assert!(gw
        .daemon
        .log()
        .contains("(sensor-07) connected with a pre-shared key"));
}

/// One CON POST as a DTLS record from a webrtc-dtls client (the same stack
/// as the daemon, used here only as a device that can send any size).
async fn post_over_dtls(
    conn: &webrtc_dtls::conn::DTLSConn,
    mid: u16,
    payload: &[u8],
) -> Option<Message> {
    use webrtc_util::Conn;
    let request = Message::new(MsgType::Con, Code::POST, mid, &[0x42])
        .with_path(&["sensors", "a", "t"])
        .with_payload(payload.to_vec());
    conn.send(&request.encode()).await.expect("send a record");
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(2), conn.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::decode(&buf[..n]).ok()
}

#[test]
fn a_record_over_4_kib_is_dropped_and_the_session_goes_on() {
    let gw = Gateway::psk(&[("sensor-01", KEY)]);
    let target = SocketAddr::from(([127, 0, 0, 1], gw.dtls_port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use webrtc_dtls::cipher_suite::CipherSuiteId;
        use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        socket.connect(target).await.expect("connect");
        let config = Config {
            psk: Some(Arc::new(|_: &[u8]| Ok(KEY.as_bytes().to_vec()))),
            psk_identity_hint: Some(b"sensor-01".to_vec()),
            cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
            extended_master_secret: ExtendedMasterSecretType::Request,
            ..Default::default()
        };
        let conn = webrtc_dtls::conn::DTLSConn::new(Arc::new(socket), config, true, None)
            .await
            .expect("handshake");
        // 5,000 bytes: over the session's 4 KiB, under the DTLS maximum.
        let big = post_over_dtls(&conn, 1, &[b'x'; 5000]).await;
        assert!(
            big.is_none(),
            "no answer to a record too large to read: {big:?}"
        );
        // No answer could mean any drop; the log says it was this one.
        gw.daemon
            .wait_for_log("dropped a record over 4096 bytes from", WAIT);
        // The same session still serves.
        let small = post_over_dtls(&conn, 2, b"after").await.expect("an answer");
        assert_eq!(small.code, Code::CHANGED);
    });
    gw.subscriber.wait_for_count(1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let got = gw.subscriber.messages();
    assert_eq!(got.len(), 1, "only the small one is stored: {got:?}");
    assert_eq!(got[0].payload, b"after");
}
