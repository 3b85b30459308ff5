//! Specification tests for [`Exchange`]: one behaviour per test, driven by
//! bytes and instants only (`start + Duration`), asserting the bytes or the
//! decoded fields of what the exchange answers.
//!
//! Requests are encoded with coap-lite's `Packet`, an encoder independent of
//! `wire.rs`; malformed ones are written as raw bytes. Answers are decoded
//! with coap-lite too.

mod blockwise;
mod deduplication;
mod mailbox;
mod malformed;
mod no_response;
mod requests;
mod restart;
mod robustness;
mod translation;

use super::*;
use crate::message::{Message, Qos};
use crate::route::{Method, Route, RouteSpec, Router};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const FIRST_MESSAGE_ID: u16 = 0x7000;

/// `sensors/{device}` and `private/{device}` (only for the device itself)
/// take POST and PUT and publish to `site/gw1/...`.
pub fn router() -> Router {
    let post_put = [Method::Post, Method::Put];
    let spec = |resource, topic| RouteSpec {
        resource,
        topic,
        payload: crate::route::Payload::Raw,
        split: false,
        methods: &post_put,
        qos: Qos::AtLeastOnce,
        retain: false,
        identity: None,
        identities: &[],
        expiry_s: None,
    };
    let mut private = spec("private/{device}", "site/{gateway}/private/{device}");
    private.identity = Some("{device}");
    let routes = [spec("sensors/{device}", "site/{gateway}/{device}"), private]
        .iter()
        .map(|s| Route::new(s).expect("test routes are valid"))
        .collect();
    Router::new("gw1", routes)
}

pub fn peer(port: u16) -> Peer {
    Peer {
        addr: SocketAddr::from(([192, 0, 2, 10], port)),
        identity: None,
    }
}

pub fn peer_with_identity(port: u16, identity: &str) -> Peer {
    Peer {
        identity: Some(Arc::from(identity)),
        ..peer(port)
    }
}

/// An exchange, a router, a device and a clock that only moves when told.
pub struct Harness {
    pub exchange: Exchange,
    pub router: Router,
    pub peer: Peer,
    pub start: Instant,
    /// The latest time anything was sent: the store answers then, since
    /// the exchange's clock must not run backwards (the table would take
    /// an entry from "the future" for an expired one).
    latest: Duration,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(ExchangeConfig::default())
    }

    pub fn with_config(config: ExchangeConfig) -> Harness {
        Harness {
            exchange: Exchange::new(config, FIRST_MESSAGE_ID),
            router: router(),
            peer: peer(40_000),
            start: Instant::now(),
            latest: Duration::ZERO,
        }
    }

    /// The device sends `datagram` at `start + at`.
    pub fn send_at(&mut self, datagram: &[u8], at: Duration) -> Step {
        let peer = self.peer.clone();
        self.send_from(&peer, datagram, at)
    }

    pub fn send(&mut self, datagram: &[u8]) -> Step {
        self.send_at(datagram, Duration::ZERO)
    }

    pub fn send_from(&mut self, peer: &Peer, datagram: &[u8], at: Duration) -> Step {
        self.latest = self.latest.max(at);
        self.exchange
            .on_datagram(peer, datagram, &self.router, self.start + at, WALL_MS)
    }

    pub fn stored(&mut self, ticket: Ticket, outcome: StoreOutcome) -> Option<Vec<u8>> {
        self.exchange
            .on_stored(ticket, outcome, self.start + self.latest)
    }

    /// Sends a request that must be handed to the store, and answers it.
    pub fn store_and_answer(&mut self, datagram: &[u8], outcome: StoreOutcome) -> Option<Vec<u8>> {
        let (ticket, _) = expect_store(self.send(datagram));
        self.stored(ticket, outcome)
    }

    pub fn counters(&self) -> &ExchangeCounters {
        self.exchange.counters()
    }
}

/// A request under construction: CON POST to `sensors/d7`, token `a1 b2`.
pub struct Request(Packet);

impl Request {
    pub fn post(message_id: u16) -> Request {
        let mut packet = Packet::new();
        packet.header.set_type(MessageType::Confirmable);
        packet.header.code = MessageClass::Request(RequestType::Post);
        packet.header.message_id = message_id;
        packet.set_token(vec![0xa1, 0xb2]);
        Request(packet).path("sensors/d7")
    }

    pub fn non(mut self) -> Request {
        self.0.header.set_type(MessageType::NonConfirmable);
        self
    }

    pub fn method(mut self, method: RequestType) -> Request {
        self.0.header.code = MessageClass::Request(method);
        self
    }

    /// Any code, e.g. a response code or an unassigned method.
    pub fn code(mut self, class: u8, detail: u8) -> Request {
        self.0.header.code = MessageClass::from((class << 5) | detail);
        self
    }

    pub fn token(mut self, token: &[u8]) -> Request {
        self.0.set_token(token.to_vec());
        self
    }

    /// Replaces the Uri-Path; `""` sends none.
    pub fn path(mut self, path: &str) -> Request {
        self.0.clear_option(CoapOption::UriPath);
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            self.0
                .add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        self
    }

    pub fn option(mut self, number: u16, value: &[u8]) -> Request {
        self.0.add_option(CoapOption::from(number), value.to_vec());
        self
    }

    pub fn block1(self, num: u32, more: bool, szx: u8) -> Request {
        let value = (num << 4) | (u32::from(more) << 3) | u32::from(szx);
        let bytes = value.to_be_bytes();
        let skip = (value.leading_zeros() / 8) as usize;
        self.option(27, &bytes[skip..])
    }

    pub fn no_response(self, mask: u8) -> Request {
        self.option(258, &[mask])
    }

    pub fn payload(mut self, payload: &[u8]) -> Request {
        self.0.payload = payload.to_vec();
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0
            .to_bytes_with_limit(usize::MAX)
            .expect("test request encodes")
    }
}

/// An answer, decoded by coap-lite.
#[derive(Debug)]
pub struct Answer(Packet);

impl Answer {
    pub fn decode(bytes: &[u8]) -> Answer {
        Answer(Packet::from_bytes(bytes).expect("the exchange sends well-formed CoAP"))
    }

    pub fn message_type(&self) -> MessageType {
        self.0.header.get_type()
    }

    /// `"2.04"`, or `"0.00"` for an empty message.
    pub fn code(&self) -> String {
        self.0.header.get_code()
    }

    pub fn message_id(&self) -> u16 {
        self.0.header.message_id
    }

    pub fn token(&self) -> &[u8] {
        self.0.get_token()
    }

    pub fn uint_option(&self, number: u16) -> Option<u32> {
        let value = self.0.get_first_option(CoapOption::from(number))?;
        Some(value.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b)))
    }

    /// Block1 as (num, more, szx).
    pub fn block1(&self) -> Option<(u32, bool, u8)> {
        let value = self.uint_option(27)?;
        Some((value >> 4, value & 8 != 0, (value & 7) as u8))
    }

    pub fn option_numbers(&self) -> Vec<u16> {
        self.0.options().map(|(number, _)| *number).collect()
    }

    pub fn payload(&self) -> &[u8] {
        &self.0.payload
    }
}

pub fn expect_reply(step: Step) -> Answer {
    match step {
        Step::Reply(bytes) => Answer::decode(&bytes),
        other => panic!("expected a reply, got {other:?}"),
    }
}

pub fn expect_reply_bytes(step: Step) -> Vec<u8> {
    match step {
        Step::Reply(bytes) => bytes,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// The wall clock the harness's exchange sees (2023-11-14T22:13:20Z).
pub const WALL_MS: u64 = 1_700_000_000_000;

pub fn expect_store(step: Step) -> (Ticket, Message) {
    match expect_store_all(step) {
        (ticket, mut messages) if messages.len() == 1 => (ticket, messages.remove(0)),
        (_, messages) => panic!("expected one message to store, got {messages:?}"),
    }
}

pub fn expect_store_all(step: Step) -> (Ticket, Vec<Message>) {
    match step {
        Step::Store { ticket, messages } => (ticket, messages),
        other => panic!("expected messages to store, got {other:?}"),
    }
}

pub fn expect_ignored(step: Step) -> Ignored {
    match step {
        Step::Ignore(why) => why,
        other => panic!("expected nothing to be sent, got {other:?}"),
    }
}

/// Asserts `bytes` is a Reset for `message_id`: exactly 4 bytes, no token.
pub fn assert_reset(bytes: &[u8], message_id: u16) {
    let id = message_id.to_be_bytes();
    assert_eq!(
        bytes,
        [0x70, 0x00, id[0], id[1]],
        "RST for {message_id:#06x}"
    );
}

/// Asserts `answer` is a piggybacked ACK with `code` for the default request.
pub fn assert_ack(answer: &Answer, code: &str, message_id: u16) {
    assert_ack_with_token(answer, code, message_id, &[0xa1, 0xb2]);
}

/// Asserts `answer` is a piggybacked ACK with `code` for a request with
/// `token`.
pub fn assert_ack_with_token(answer: &Answer, code: &str, message_id: u16, token: &[u8]) {
    assert_eq!(answer.message_type(), MessageType::Acknowledgement);
    assert_eq!(answer.code(), code);
    assert_eq!(answer.message_id(), message_id);
    assert_eq!(answer.token(), token);
}

/// Sends a request and expects an immediate piggybacked answer.
pub fn answer_to(request: Request) -> Answer {
    expect_reply(Harness::new().send(&request.bytes()))
}
