//! The server shell, driven deterministically: an in-memory [`Link`] (the
//! test hands datagrams in and reads what the server sends) and the store's
//! channel held by the test, which answers each append when it chooses.
//! Nothing here uses a socket or a clock the test does not control; each
//! wait is on a channel the server must use.

use super::*;
use crate::coap::{Exchange, ExchangeConfig};
use crate::message::{Message, Qos};
use crate::metrics::TransportMetrics;
use crate::route::{Method, Route, RouteSpec, Router};
use std::io;
use std::net::SocketAddr;

/// A link whose datagrams come from, and whose answers go to, the test.
struct MemoryLink {
    inbound: mpsc::UnboundedReceiver<(Vec<u8>, Peer)>,
    outbound: mpsc::UnboundedSender<(Vec<u8>, Peer)>,
}

impl Link for MemoryLink {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, Peer)> {
        match self.inbound.recv().await {
            Some((bytes, peer)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok((n, peer))
            }
            None => std::future::pending().await,
        }
    }

    async fn send(&mut self, bytes: &[u8], to: &Peer) -> io::Result<()> {
        let _ = self.outbound.send((bytes.to_vec(), to.clone()));
        Ok(())
    }

    fn name(&self) -> &str {
        "memory"
    }
}

/// A running server and the test's ends of its link, store and shutdown.
struct Rig {
    device: Peer,
    datagrams: mpsc::UnboundedSender<(Vec<u8>, Peer)>,
    answers: mpsc::UnboundedReceiver<(Vec<u8>, Peer)>,
    store: mpsc::Receiver<Command<Receipt>>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    devices: SharedDevices,
}

impl Rig {
    fn start() -> Rig {
        let (datagrams, inbound) = mpsc::unbounded_channel();
        let (outbound, answers) = mpsc::unbounded_channel();
        let (store_tx, store) = mpsc::channel(16);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let post = [Method::Post];
        let route = Route::new(&RouteSpec {
            resource: "s/{device}",
            topic: "t/{device}",
            payload: crate::route::Payload::Raw,
            split: false,
            methods: &post,
            qos: Qos::AtLeastOnce,
            retain: false,
            identity: None,
            identities: &[],
            expiry_s: None,
        })
        .expect("route");
        let devices = crate::devices::shared(16);
        let (_routes_tx, routes) = watch::channel(Arc::new(Router::new("gw", vec![route])));
        let server = Server {
            link: MemoryLink { inbound, outbound },
            exchange: Exchange::new(ExchangeConfig::default(), 0x100),
            routes,
            store: store_tx,
            metrics: TransportMetrics::detached("udp"),
            devices: devices.clone(),
            commands: None,
        };
        // The routes sender may go: the receiver keeps the last value.
        let server = tokio::spawn(server.serve(shutdown_rx));
        Rig {
            device: Peer {
                addr: SocketAddr::from(([192, 0, 2, 1], 5683)),
                identity: None,
            },
            datagrams,
            answers,
            store,
            shutdown,
            server,
            devices,
        }
    }

    fn send(&self, bytes: Vec<u8>) {
        self.datagrams
            .send((bytes, self.device.clone()))
            .expect("server alive");
    }

    /// The next command the server hands to the store.
    async fn next_command(&mut self) -> Command<Receipt> {
        self.store.recv().await.expect("a command for the store")
    }

    /// The next datagram the server sends.
    async fn next_answer(&mut self) -> Vec<u8> {
        self.answers.recv().await.expect("an answer").0
    }

    /// Asserts the server has sent nothing. Called once the server has
    /// handed its work to the store, i.e. after its last chance to send.
    fn assert_silent(&mut self, why: &str) {
        let sent = self.answers.try_recv();
        assert!(sent.is_err(), "{why}: {sent:?}");
    }
}

/// A CON POST to s/d1 with `message_id` and the token 0xab.
fn con_post(message_id: u16, payload: &[u8]) -> Vec<u8> {
    let id = message_id.to_be_bytes();
    let mut bytes = vec![0x41, 0x02, id[0], id[1], 0xab, 0xb1, b's', 0x02, b'd', b'1'];
    bytes.push(0xff);
    bytes.extend_from_slice(payload);
    bytes
}

/// (type, code, message id) of an answer.
fn header(bytes: &[u8]) -> (u8, u8, u16) {
    (
        bytes[0] >> 4 & 3,
        bytes[1],
        u16::from_be_bytes([bytes[2], bytes[3]]),
    )
}

fn answer(command: Command<Receipt>, outcome: AppendOutcome) -> Message {
    match command {
        Command::Append {
            mut messages,
            receipt,
            reply,
            ..
        } => {
            reply.send((receipt, outcome)).expect("server waits");
            assert_eq!(messages.len(), 1, "one message per request here");
            messages.remove(0)
        }
        _ => panic!("expected an append"),
    }
}

const ACK: u8 = 2;
const CHANGED: u8 = 0x44;
const SERVICE_UNAVAILABLE: u8 = 0xa3;

#[tokio::test]
async fn a_device_is_answered_only_after_the_store_says_stored() {
    let mut rig = Rig::start();
    rig.send(con_post(7, b"21.5"));
    let command = rig.next_command().await;
    rig.assert_silent("nothing may be sent before the store's outcome");
    let message = answer(command, AppendOutcome::Stored);
    assert_eq!(
        (message.topic.as_str(), &message.payload[..]),
        ("t/d1", &b"21.5"[..])
    );
    assert_eq!(header(&rig.next_answer().await), (ACK, CHANGED, 7));
}

#[tokio::test]
async fn a_full_store_gets_5_03_and_nothing_else() {
    let mut rig = Rig::start();
    rig.send(con_post(8, b"x"));
    let command = rig.next_command().await;
    answer(command, AppendOutcome::Full);
    assert_eq!(
        header(&rig.next_answer().await),
        (ACK, SERVICE_UNAVAILABLE, 8)
    );
}

#[tokio::test]
async fn the_device_table_learns_what_was_stored_and_refused_once_the_store_answers() {
    let mut rig = Rig::start();
    rig.send(con_post(9, b"21.5"));
    let command = rig.next_command().await;
    assert!(
        rig.devices.lock().expect("lock").is_empty(),
        "nothing is stored yet"
    );
    answer(command, AppendOutcome::Stored);
    rig.next_answer().await;
    rig.send(con_post(10, b"x"));
    answer(rig.next_command().await, AppendOutcome::Full);
    rig.next_answer().await;
    let list = rig.devices.lock().expect("lock").list();
    assert_eq!(list.len(), 1, "{list:?}");
    let d1 = &list[0];
    assert_eq!(
        (d1.name.as_str(), d1.messages_stored, d1.bytes_stored),
        ("d1", 1, 4)
    );
    assert_eq!(d1.last_address, rig.device.addr);
    assert_eq!(d1.refusals.get("5.03"), Some(&1));
}

#[tokio::test]
async fn a_retransmission_while_the_store_works_is_not_answered_nor_stored_again() {
    let mut rig = Rig::start();
    rig.send(con_post(9, b"x"));
    let command = rig.next_command().await;
    rig.send(con_post(9, b"x"));
    // A second request after the retransmission: once it reaches the store,
    // the server has dealt with the retransmission before it.
    rig.send(con_post(10, b"y"));
    let second = rig.next_command().await;
    rig.assert_silent("a pending retransmission gets no answer");
    answer(command, AppendOutcome::Stored);
    answer(second, AppendOutcome::Stored);
    let mut ids = vec![
        header(&rig.next_answer().await).2,
        header(&rig.next_answer().await).2,
    ];
    ids.sort();
    assert_eq!(ids, vec![9, 10]);
    assert!(
        rig.store.try_recv().is_err(),
        "the retransmission was not stored again"
    );
}

#[tokio::test]
async fn shutdown_waits_for_the_store_then_answers_and_stops_reading() {
    let mut rig = Rig::start();
    rig.send(con_post(11, b"x"));
    let command = rig.next_command().await;
    rig.shutdown.send(true).expect("server listens");
    // Let the server see the shutdown: a datagram sent now must not be read.
    tokio::task::yield_now().await;
    rig.send(con_post(12, b"late"));
    tokio::task::yield_now().await;
    assert!(
        !rig.server.is_finished(),
        "it waits for the store's outcome"
    );
    answer(command, AppendOutcome::Stored);
    assert_eq!(header(&rig.next_answer().await), (ACK, CHANGED, 11));
    (&mut rig.server).await.expect("the server ends");
    assert!(
        rig.store.try_recv().is_err(),
        "nothing read after the shutdown reached the store"
    );
}

#[tokio::test]
async fn a_store_that_is_gone_stops_the_server_without_answering() {
    let mut rig = Rig::start();
    rig.store.close();
    rig.send(con_post(13, b"x"));
    (&mut rig.server).await.expect("the server ends");
    rig.assert_silent("nothing stored, nothing answered");
}
