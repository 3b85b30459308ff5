//! Deduplication survives a restart: a device whose CON was stored before
//! the gateway died, and which retransmits it to the restarted gateway,
//! gets the same 2.04 and its message is stored (and delivered) once.
//!
//! The uplink is held down (a refusing proxy) until the end, so the only
//! way the message can reach the broker is from the disk, and a second
//! copy would be queued behind the first.
//!
//! And the other side of it: a device that rebooted too and starts its
//! Message IDs again sends a new reading under a remembered ID with a new
//! token; that is a new request, stored and delivered, not a duplicate.

mod support;

use support::broker::Broker;
use support::coap::{Code, Message, MsgType};
use support::coap_client::CoapClient;
use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::proxy::{FaultProxy, Mode};
use support::subscriber::Subscriber;
use support::{free_udp_port, WAIT};

/// The daemon with the route `s/{d}` → `t/{d}`, its uplink through a
/// proxy that refuses until the test lets it pass, and a subscriber.
struct Gateway {
    _broker: Broker,
    subscriber: Subscriber,
    proxy: FaultProxy,
    daemon: Daemon,
}

impl Gateway {
    fn with_uplink_held_down() -> Gateway {
        let broker = Broker::start();
        let subscriber = Subscriber::start(broker.port(), "t/#");
        let proxy = FaultProxy::start(broker.port());
        proxy.set_mode(Mode::Refuse);
        let config = DaemonConfig::new(free_udp_port(), proxy.port())
            .route(RouteConfig::new("s/{d}", "t/{d}"));
        let daemon = Daemon::start_config(&config);
        Gateway {
            _broker: broker,
            subscriber,
            proxy,
            daemon,
        }
    }

    /// kill -9, a restart, and the restarted daemon's word that it
    /// remembers the one request stored before.
    fn kill9_and_restart_remembering_one(&mut self) {
        self.daemon.kill9();
        self.daemon.restart();
        self.daemon
            .wait_for_log("1 requests stored in the last 247s are remembered", WAIT);
    }

    /// Lets the uplink through, waits until `last` arrives, and returns
    /// every payload the subscriber got, in order.
    fn release_uplink_until_delivered(&self, last: &str) -> Vec<String> {
        self.proxy.set_mode(Mode::Pass);
        support::wait_until(WAIT, &format!("{last:?} is delivered"), || {
            self.subscriber
                .messages()
                .iter()
                .any(|m| m.payload_str() == last)
        });
        self.subscriber
            .messages()
            .iter()
            .map(|m| m.payload_str())
            .collect()
    }
}

#[test]
fn a_retransmission_after_kill_9_gets_the_same_answer_and_is_stored_once() {
    let mut g = Gateway::with_uplink_held_down();
    let mut device = CoapClient::new(g.daemon.coap_addr());

    let request = device.build(MsgType::Con, Code::POST, &["s", "dev1"], b"once");
    device.send(&request);
    let first = device
        .recv_raw(WAIT)
        .expect("a 2.04 for the first transmission");
    assert_eq!(
        support::coap::Message::decode(&first)
            .expect("decodes")
            .code,
        Code::CHANGED
    );

    g.kill9_and_restart_remembering_one();

    // The device did not get the answer (as far as it knows) and retransmits.
    device.send(&request);
    let again = device
        .recv_raw(WAIT)
        .expect("an answer to the retransmission");
    assert_eq!(again, first, "the retransmission gets the same bytes");

    assert!(device.con(&["s", "dev1"], b"after").is_success());
    let payloads = g.release_uplink_until_delivered("after");
    assert_eq!(payloads, ["once", "after"], "stored once, in order");
}

#[test]
fn a_device_that_reuses_a_message_id_after_both_restarted_has_its_new_reading_stored() {
    let mut g = Gateway::with_uplink_held_down();
    let mut device = CoapClient::new(g.daemon.coap_addr());

    let post = |token: &[u8], payload: &str| {
        Message::new(MsgType::Con, Code::POST, 0x4242, token)
            .with_path(&["s", "dev1"])
            .with_payload(payload.as_bytes())
    };
    let first = device
        .request(&post(&[1, 1, 1, 1], "before the reboot"), WAIT)
        .expect("an answer to the first reading");
    assert_eq!(first.code, Code::CHANGED);

    g.kill9_and_restart_remembering_one();

    // The same Message ID from the same address and port, another token.
    let reading = post(&[2, 2, 2, 2], "after the reboot");
    device.send(&reading);
    let answer = device.recv_raw(WAIT).expect("an answer to the new reading");
    let answer = Message::decode(&answer).expect("decodes");
    assert_eq!(
        (answer.code, answer.mid, answer.token.as_slice()),
        (Code::CHANGED, 0x4242, &[2u8, 2, 2, 2][..]),
        "the new reading is answered with its own token"
    );

    let payloads = g.release_uplink_until_delivered("after the reboot");
    assert_eq!(payloads, ["before the reboot", "after the reboot"]);
}
