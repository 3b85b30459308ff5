//! Deduplication survives a restart: a device whose CON was stored before
//! the gateway died, and which retransmits it to the restarted gateway,
//! gets the same 2.04 and its message is stored (and delivered) once.
//!
//! The uplink is held down (a refusing proxy) until the end, so the only
//! way the message can reach the broker is from the disk, and a second
//! copy would be queued behind the first.

mod support;

use support::broker::Broker;
use support::coap::{Code, MsgType};
use support::coap_client::CoapClient;
use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::proxy::{FaultProxy, Mode};
use support::subscriber::Subscriber;
use support::{free_udp_port, WAIT};

#[test]
fn a_retransmission_after_kill_9_gets_the_same_answer_and_is_stored_once() {
    let broker = Broker::start();
    let subscriber = Subscriber::start(broker.port(), "t/#");
    let proxy = FaultProxy::start(broker.port());
    proxy.set_mode(Mode::Refuse);
    let config =
        DaemonConfig::new(free_udp_port(), proxy.port()).route(RouteConfig::new("s/{d}", "t/{d}"));
    let mut daemon = Daemon::start_config(&config);
    let mut device = CoapClient::new(daemon.coap_addr());

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

    daemon.kill9();
    daemon.restart();
    daemon.wait_for_log("1 requests stored in the last 247s are remembered", WAIT);

    // The device did not get the answer (as far as it knows) and retransmits.
    device.send(&request);
    let again = device
        .recv_raw(WAIT)
        .expect("an answer to the retransmission");
    assert_eq!(again, first, "the retransmission gets the same bytes");

    assert!(device.con(&["s", "dev1"], b"after").is_success());
    proxy.set_mode(Mode::Pass);
    subscriber.wait_for_count(2, WAIT);
    support::wait_until(WAIT, "\"after\" is delivered", || {
        subscriber
            .messages()
            .iter()
            .any(|m| m.payload_str() == "after")
    });
    let payloads: Vec<String> = subscriber
        .messages()
        .iter()
        .map(|m| m.payload_str())
        .collect();
    assert_eq!(payloads, ["once", "after"], "stored once, in order");
}
