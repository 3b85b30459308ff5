//! The listener driven with bytes and time, against rtc-dtls clients: the
//! stateless cookie, handshakes through the handoff, bounds, timers.

use super::*;
use crate::config::CipherSuite;
use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{ConfigBuilder, HandshakeConfig};
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::endpoint::EndpointEvent;
use tokio::sync::watch;

const KEY: &[u8] = b"secretPSK-01";

fn server() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5684))
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], port))
}

fn limits() -> Limits {
    Limits {
        max_sessions: 16,
        max_handshakes: 4,
        new_peers_per_s: 1000,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(600),
    }
}

fn listener(limits: Limits, t0: Instant) -> (Listener, watch::Sender<Arc<PskKeys>>) {
    let keys = Arc::new(PskKeys::from_pairs(&[("sensor-01", KEY)]));
    let (tx, rx) = watch::channel(keys.clone());
    let credentials = Credentials::new(rx, &[CipherSuite::PskAes128Ccm8], None).expect("config");
    let mut n = 0u8;
    let cookies = CookieJar::new(
        t0,
        Box::new(move || {
            n += 1;
            [n; 32]
        }),
    );
    let listener = Listener::new(
        Arc::from("dtls test"),
        server(),
        credentials,
        cookies,
        limits,
        keys,
        t0,
    );
    (listener, tx)
}

fn client_config(identity: &str, key: &'static [u8]) -> Arc<HandshakeConfig> {
    Arc::new(
        ConfigBuilder::default()
            .with_crypto_provider(Arc::new(RingProvider::new()))
            .with_cipher_suites(vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8])
            .with_psk(Some(Arc::new(move |_: &[u8]| Ok(key.to_vec()))))
            .with_psk_identity_hint(Some(identity.as_bytes().to_vec()))
            .build(true, None)
            .expect("client config"),
    )
}

/// A device: an rtc-dtls client endpoint at `addr`.
struct Device {
    addr: SocketAddr,
    endpoint: Endpoint,
    connected: bool,
}

impl Device {
    fn connect(addr: SocketAddr, identity: &str, key: &'static [u8], now: Instant) -> Device {
        let mut endpoint = Endpoint::new(addr, TransportProtocol::UDP, None);
        endpoint
            .connect(now, server(), client_config(identity, key), None)
            .expect("connect");
        Device {
            addr,
            endpoint,
            connected: false,
        }
    }

    /// Exchanges datagrams until both sides are quiet.
    fn talk(&mut self, listener: &mut Listener, now: Instant) -> Vec<(Peer, BytesMut)> {
        let mut data = Vec::new();
        for _ in 0..16 {
            let mut quiet = true;
            while let Some(t) = self.endpoint.poll_transmit() {
                quiet = false;
                listener.on_datagram(now, self.addr, &t.message);
            }
            while let Some((to, d)) = listener.poll_transmit() {
                quiet = false;
                if to == self.addr {
                    if let Ok(events) = self.endpoint.read(now, server(), None, d) {
                        self.connected |= events
                            .iter()
                            .any(|e| matches!(e, EndpointEvent::HandshakeComplete));
                    }
                }
            }
            while let Some(d) = listener.poll_data() {
                data.push(d);
            }
            if quiet {
                break;
            }
        }
        data
    }

    fn send(
        &mut self,
        listener: &mut Listener,
        now: Instant,
        bytes: &[u8],
    ) -> Vec<(Peer, BytesMut)> {
        self.endpoint.write(now, server(), bytes).expect("write");
        self.talk(listener, now)
    }
}

#[test]
fn a_psk_device_gets_a_cookie_then_a_session_and_talks_both_ways() {
    let t0 = Instant::now();
    let (mut listener, _keys) = listener(limits(), t0);
    let placeholders = crate::transport::dtls::handoff::placeholders_made();
    let mut device = Device::connect(at(1), "sensor-01", KEY, t0);
    device.talk(&mut listener, t0);
    assert!(device.connected);
    // The PSK handshake's key pair was the placeholder, not a real one.
    assert_eq!(
        crate::transport::dtls::handoff::placeholders_made(),
        placeholders + 1
    );
    assert_eq!(listener.counts(), (1, 0));
    assert_eq!(listener.cookies_sent, 1);
    assert!(listener.handshakes().contains(&("ok", 1)));
    let got = device.send(&mut listener, t0, b"hello");
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].1[..], b"hello");
    assert_eq!(got[0].0.identity.as_deref(), Some("sensor-01"));
    listener.write(t0, &got[0].0, b"answer").expect("write");
    let (to, d) = listener.poll_transmit().expect("an answer");
    assert_eq!(to, device.addr);
    let events = device.endpoint.read(t0, server(), None, d).expect("read");
    assert!(events
        .iter()
        .any(|e| matches!(e, EndpointEvent::ApplicationData(d) if &d[..] == b"answer")));
    let stranger = Peer {
        addr: device.addr,
        identity: Some(Arc::from("sensor-02")),
    };
    assert!(
        listener.write(t0, &stranger, b"x").is_err(),
        "another identity's session"
    );
}

#[test]
fn spoofed_client_hellos_from_many_ports_get_answers_and_leave_no_state() {
    let t0 = Instant::now();
    let (mut listener, _keys) = listener(limits(), t0);
    let mut spoofer = Endpoint::new(at(1), TransportProtocol::UDP, None);
    spoofer
        .connect(t0, server(), client_config("x", KEY), None)
        .expect("connect");
    let hello = spoofer.poll_transmit().expect("a hello").message;
    for port in 1..=10_000u16 {
        listener.on_datagram(t0, at(port), &hello);
    }
    assert_eq!(listener.counts(), (0, 0));
    assert_eq!(listener.cookies_sent, 10_000);
    let mut answers = 0;
    while let Some((_, d)) = listener.poll_transmit() {
        assert_eq!(d[13], 3, "a HelloVerifyRequest");
        assert!(d.len() < 64, "no amplification: {} bytes", d.len());
        answers += 1;
    }
    assert_eq!(answers, 10_000);
    assert_eq!(
        listener.poll_timeout(),
        Some(t0 + REPORT_EVERY),
        "no timers"
    );
}

#[test]
fn a_wrong_key_fails_and_is_counted_and_the_table_empties() {
    let t0 = Instant::now();
    let (mut listener, _keys) = listener(limits(), t0);
    let mut device = Device::connect(at(1), "sensor-01", b"not-the-key", t0);
    device.talk(&mut listener, t0);
    assert!(!device.connected);
    assert_eq!(listener.counts(), (0, 0));
    assert!(listener.handshakes().contains(&("failed", 1)));
    let mut stranger = Device::connect(at(2), "sensor-99", KEY, t0);
    stranger.talk(&mut listener, t0);
    assert!(!stranger.connected);
    assert!(listener.handshakes().contains(&("failed", 2)));
}

#[test]
fn handshakes_are_bounded_and_a_silent_one_times_out() {
    let t0 = Instant::now();
    let (mut listener, _keys) = listener(
        Limits {
            max_handshakes: 2,
            ..limits()
        },
        t0,
    );
    // Devices that return the cookie, then fall silent.
    for port in 1..=3 {
        let mut device = Device::connect(at(port), "sensor-01", KEY, t0);
        let hello = device.endpoint.poll_transmit().expect("hello").message;
        listener.on_datagram(t0, device.addr, &hello);
        let (_, hvr) = listener.poll_transmit().expect("hvr");
        device.endpoint.read(t0, server(), None, hvr).expect("read");
        let second = device
            .endpoint
            .poll_transmit()
            .expect("hello with cookie")
            .message;
        listener.on_datagram(t0, device.addr, &second);
        while listener.poll_transmit().is_some() {}
    }
    assert_eq!(listener.counts(), (2, 2), "the third waits");
    assert!(listener.handshakes().contains(&("table_full", 1)));
    // The first flight is retransmitted on rtc-dtls's timer...
    let retransmit = listener.poll_timeout().expect("a timer");
    assert!(retransmit <= t0 + Duration::from_secs(1));
    listener.handle_timeout(t0 + Duration::from_secs(1));
    assert!(listener.poll_transmit().is_some(), "a retransmission");
    // ...until the handshake timeout ends it.
    let mut now = t0;
    while now < t0 + Duration::from_secs(11) {
        now += Duration::from_millis(500);
        listener.handle_timeout(now);
    }
    assert_eq!(listener.counts(), (0, 0));
    assert!(listener.handshakes().contains(&("timeout", 2)));
}

#[test]
fn a_forged_record_does_not_end_a_session_and_idle_does() {
    let t0 = Instant::now();
    let (mut listener, _keys) = listener(limits(), t0);
    let mut device = Device::connect(at(1), "sensor-01", KEY, t0);
    device.talk(&mut listener, t0);
    assert!(device.connected);
    // An application data record of epoch 1 with bad ciphertext.
    let mut forged = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 24];
    forged.extend_from_slice(&[0x55; 24]);
    listener.on_datagram(t0, device.addr, &forged);
    assert!(listener.poll_transmit().is_none(), "no alert to the device");
    assert_eq!(listener.counts(), (1, 0));
    let got = device.send(&mut listener, t0, b"still here");
    assert_eq!(got.len(), 1);
    // Silent for the idle timeout: closed with a close_notify.
    let later = t0 + Duration::from_secs(601);
    listener.handle_timeout(later);
    assert_eq!(listener.counts(), (0, 0));
    let (to, close_notify) = listener.poll_transmit().expect("close_notify");
    assert_eq!((to, close_notify[0]), (device.addr, 21));
}

#[test]
fn a_device_restarting_on_the_same_port_replaces_its_session_only_with_a_cookie() {
    let t0 = Instant::now();
    let (mut listener, _keys) = listener(limits(), t0);
    let mut before = Device::connect(at(1), "sensor-01", KEY, t0);
    before.talk(&mut listener, t0);
    // A spoofed first hello from its address does not touch the session.
    let mut spoof = Device::connect(at(1), "sensor-01", KEY, t0);
    let hello = spoof.endpoint.poll_transmit().expect("hello").message;
    listener.on_datagram(t0, at(1), &hello);
    assert_eq!(listener.counts(), (1, 0));
    while listener.poll_transmit().is_some() {}
    assert_eq!(before.send(&mut listener, t0, b"a").len(), 1);
    // The device itself, rebooted: a new handshake at once.
    let mut after = Device::connect(at(1), "sensor-01", KEY, t0);
    after.talk(&mut listener, t0);
    assert!(after.connected);
    assert_eq!(listener.counts(), (1, 0));
    assert_eq!(after.send(&mut listener, t0, b"b").len(), 1);
}

#[test]
fn a_removed_key_closes_its_sessions() {
    let t0 = Instant::now();
    let (mut listener, _keys) = listener(limits(), t0);
    let mut device = Device::connect(at(1), "sensor-01", KEY, t0);
    device.talk(&mut listener, t0);
    listener.set_keys(t0, Arc::new(PskKeys::from_pairs(&[("sensor-01", KEY)])));
    assert_eq!(listener.counts(), (1, 0), "same key: stays");
    listener.set_keys(t0, Arc::new(PskKeys::from_pairs(&[("sensor-01", b"new")])));
    assert_eq!(listener.counts(), (0, 0));
}
