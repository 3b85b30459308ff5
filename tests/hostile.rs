//! Hostile traffic from the whole 127.0.0.0/8 range: 100,000 distinct source
//! endpoints, each sending one datagram that is garbage, the first block of
//! a block-wise upload that never finishes, or a DTLS ClientHello. The
//! daemon must keep every per-peer table within its configured bound, stay
//! within a stated memory bound, store nothing of it, and keep answering a
//! legitimate device 2.04 throughout.
//!
//! Why one datagram per source: a real attack spreads over many addresses
//! precisely so that per-peer state grows; each new source is a new entry in
//! the dedup cache, the block-wise assemblies and the DTLS peer table.
//!
//! Each table is checked where the daemon reports it (`/metrics`): its size
//! at the end within its configured bound (the DTLS tables empty: a
//! ClientHello is answered with a cookie and nothing is kept), and its eviction count showing
//! that the attack really pressed on the bound: every upload that reached
//! the exchange (the kernel drops part of the flood) beyond the 256 slots
//! evicted one, and every request beyond the 4,096 dedup entries (a
//! sixteenth of the default, so that the bound is surely reached) evicted
//! one.
//!
//! The memory bound (see docs/RELIABILITY.md) is derived from the tables'
//! bounds, not from a measurement of today's build: 16 MiB of assemblies at
//! most (256 of at most `max_payload`, 64 KiB; here each holds 1 KiB) plus
//! the dedup entries and 256 handshakes, under [`RSS_GROWTH_BOUND_KB`].

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::broker::Broker;
use support::coap::{option, Block, Code, Message, MsgType};
use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon};
use support::dtls_hello::client_hello;
use support::subscriber::Subscriber;
use support::{free_tcp_port, free_udp_port, WAIT};

/// Distinct source endpoints of the attack.
const SOURCES: u32 = 100_000;

/// How much the daemon's RSS may grow under the attack.
const RSS_GROWTH_BOUND_KB: u64 = 48 * 1024;

/// The nth attacker address: 127.1.0.0 upwards, never 127.0.0.x, so the
/// legitimate device on 127.0.0.1 is never mistaken for one.
fn attacker(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + n)
}

/// The first 1 KiB block of a 4 KiB upload that never continues.
fn half_finished_block1(n: u32) -> Vec<u8> {
    Message::new(MsgType::Con, Code::POST, n as u16, &n.to_be_bytes())
        .with_path(&["sensors", "attacker", "t"])
        .with_option(
            option::BLOCK1,
            Block {
                num: 0,
                more: true,
                szx: 6,
            }
            .encode(),
        )
        .with_option(option::SIZE1, 4096u32.to_be_bytes().to_vec())
        .with_payload(vec![b'x'; 1024])
        .encode()
}

/// Datagrams no RFC 7252 endpoint accepts: version 2, a token length of 9
/// to 15, a truncated option, a payload marker with no payload, random
/// bytes. None may be stored; each is dropped, rejected or reset.
fn garbage(n: u32) -> Vec<u8> {
    let mid = (n as u16).to_be_bytes();
    match n % 5 {
        0 => vec![0x80, 0x02, mid[0], mid[1]],
        1 => {
            let tkl = 9 + (n % 7) as u8;
            let mut d = vec![0x40 | tkl, 0x02, mid[0], mid[1]];
            d.resize(4 + usize::from(tkl), 0xab);
            d
        }
        2 => vec![0x40, 0x02, mid[0], mid[1], 0xbd, 0x05, b's'],
        3 => vec![
            0x40, 0x02, mid[0], mid[1], 0xb7, b's', b'e', b'n', b's', b'o', b'r', b's', 0xff,
        ],
        _ => n.to_le_bytes().repeat(1 + (n % 9) as usize),
    }
}

/// Sends one datagram from each of `SOURCES` endpoints, a third each of
/// garbage, half-finished Block1 uploads and ClientHellos.
fn attack(coap: SocketAddr, dtls: SocketAddr) -> u32 {
    let mut sent = 0;
    for n in 0..SOURCES {
        let Ok(socket) = UdpSocket::bind((attacker(n), 0)) else {
            continue;
        };
        let (datagram, target) = match n % 3 {
            0 => (garbage(n / 3), coap),
            1 => (half_finished_block1(n), coap),
            _ => (client_hello(n), dtls),
        };
        if socket.send_to(&datagram, target).is_ok() {
            sent += 1;
        }
    }
    sent
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The sum of every sample of `name` whose labels contain `label`.
fn sample_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_hundred_thousand_hostile_sources_stay_bounded_and_a_device_is_served_throughout() {
    std::env::set_var("RUST_LOG", "info,rtc_dtls=error,rtc_shared=error");
    let files = tempfile::tempdir().expect("tempdir");
    let psk_file = files.path().join("psk.toml");
    std::fs::write(&psk_file, "[psk]\n\"sensor-01\" = \"secretPSK-01\"\n").expect("psk");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&psk_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let broker = Broker::start();
    let mut subscriber = Subscriber::start(broker.port(), "#");
    subscriber.wait_ready();
    let coap_port = free_udp_port();
    let dtls_port = free_udp_port();
    let admin_port = free_tcp_port();
    let config = format!(
        r#"
[gateway]
id = "gw"
[coap]
listen = ["127.0.0.1:{coap_port}"]
dedup_capacity = 4096
block_capacity = 256
block_lifetime_s = 120
[dtls]
listen = ["127.0.0.1:{dtls_port}"]
psk_file = "{psk}"
max_sessions = 1024
max_handshakes = 256
handshake_timeout_s = 3
new_peers_per_s = 1000
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
status_topic = ""
[store]
path = "@STORE@"
[admin]
listen = "127.0.0.1:{admin_port}"
[[route]]
resource = "sensors/{{device}}/{{metric}}"
topic = "site/{{device}}/{{metric}}"
"#,
        psk = psk_file.display(),
        mqtt = broker.port(),
    );
    let daemon = Daemon::start(&config);
    daemon.wait_for_log(&format!("listening on dtls 127.0.0.1:{dtls_port}"), WAIT);
    let pid = daemon.pid().expect("daemon running");
    let coap = SocketAddr::from(([127, 0, 0, 1], coap_port));
    let dtls = SocketAddr::from(([127, 0, 0, 1], dtls_port));

    // Warm up, so the baseline includes the runtime's and the uplink's own
    // allocations.
    let mut device = CoapClient::new(coap);
    for i in 0..20 {
        let outcome = device.con(&["sensors", "good", "t"], format!("warm-{i}").as_bytes());
        assert!(outcome.is_success(), "warm-up {i}: {:?}", outcome.response);
    }
    subscriber.wait_for_count(20, WAIT);
    let rss_before = rss_kb(pid);

    // The legitimate device posts all through the attack.
    let stop = Arc::new(AtomicBool::new(false));
    let device_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answered = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) || n < 50 {
                let payload = format!("during-{n}");
                let outcome = device.con(&["sensors", "good", "t"], payload.as_bytes());
                answered.push((payload, outcome.code()));
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            answered
        })
    };
    let sent = attack(coap, dtls);
    stop.store(true, Ordering::Relaxed);
    let answered = device_thread.join().expect("device thread");
    assert!(
        sent >= SOURCES * 99 / 100,
        "only {sent} of {SOURCES} attack datagrams could be sent"
    );

    // Every request of the device was answered 2.04 and delivered, once.
    let refused: Vec<_> = answered
        .iter()
        .filter(|(_, code)| *code != Some(Code::CHANGED))
        .collect();
    assert!(refused.is_empty(), "the device was refused: {refused:?}");
    let expected = 20 + answered.len();
    let got = subscriber.wait_for_count(expected, WAIT);
    let mut payloads: Vec<String> = got.iter().map(|m| m.payload_str()).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), expected, "delivered: {payloads:?}");
    assert!(
        got.iter().all(|m| m.topic == "site/good/t"),
        "nothing of the attacker may be published: {:?}",
        got.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );

    // Memory stayed within its bound, and the tables within theirs.
    let rss_after = rss_kb(pid);
    assert!(
        rss_after <= rss_before + RSS_GROWTH_BOUND_KB,
        "RSS grew from {rss_before} kB to {rss_after} kB under the attack"
    );
    let m = admin_get(admin_port, "/metrics").1;
    let stored = sample_sum(&m, "coap2mqtt_queue_appended_total", "");
    assert_eq!(
        stored, expected as f64,
        "only the device's messages may be stored:\n{m}"
    );
    // Each kind of attack reached the code meant for it: garbage was
    // dropped and counted, uploads reached the Block1 assemblies (2.31
    // Continue; the table stays within its bound by eviction), and
    // ClientHellos were answered with a cookie, and nothing kept.
    let dropped = sample_sum(&m, "coap2mqtt_coap_dropped_total", "");
    let continued = sample_sum(&m, "coap2mqtt_coap_responses_total", "code=\"2.31\"");
    let cookies = sample_sum(
        &m,
        "coap2mqtt_dtls_handshakes_total",
        "outcome=\"cookie_sent\"",
    );
    eprintln!("hostile: dropped {dropped}, 2.31 sent {continued}, hellos answered {cookies}");
    assert!(
        dropped >= 1_000.0,
        "the garbage must be counted as dropped:\n{m}"
    );
    assert!(
        continued >= 256.0,
        "the Block1 uploads must reach the assemblies:\n{m}"
    );
    assert!(
        cookies >= 1_000.0,
        "the ClientHellos must reach the DTLS cookie exchange:\n{m}"
    );
    // The tables stayed within their bounds, and the attack reached them.
    let table = |transport: &str, name: &str| {
        sample_sum(
            &m,
            "coap2mqtt_table_entries",
            &format!("transport=\"{transport}\",table=\"{name}\""),
        )
    };
    let event = |name: &str| {
        sample_sum(
            &m,
            "coap2mqtt_coap_exchange_events_total",
            &format!("transport=\"udp\",event=\"{name}\""),
        )
    };
    eprintln!(
        "hostile: tables dedup {} uploads {} dtls_peers {} dtls_handshaking {}; evicted dedup {} uploads {}",
        table("udp", "dedup"),
        table("udp", "uploads"),
        table("dtls", "dtls_peers"),
        table("dtls", "dtls_handshaking"),
        event("dedup_eviction"),
        event("block_eviction"),
    );
    assert!(
        table("udp", "dedup") <= 4_096.0,
        "dedup table over its bound:\n{m}"
    );
    assert!(
        table("udp", "uploads") <= 256.0,
        "uploads over their bound:\n{m}"
    );
    // A spoofed ClientHello gets a cookie and leaves nothing behind.
    assert!(
        table("dtls", "dtls_peers") == 0.0 && table("dtls", "dtls_handshaking") == 0.0,
        "spoofed ClientHellos must leave no DTLS state:\n{m}"
    );
    assert!(
        event("block_eviction") >= continued - 256.0,
        "every upload beyond the 256 slots must have evicted one:\n{m}"
    );
    assert!(
        continued > 4_096.0 && event("dedup_eviction") >= continued - 4_096.0,
        "the dedup table must have evicted past its bound:\n{m}"
    );
    eprintln!(
        "hostile: {sent} datagrams from {SOURCES} sources; device {} requests all 2.04; \
         RSS {rss_before} kB -> {rss_after} kB",
        answered.len()
    );
    drop(daemon);
    drop(broker);
}
