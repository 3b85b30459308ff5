//! Datagrams from several peers through the CoAP exchange, with the store
//! answering each message it is handed: nothing may panic, every table stays
//! within its bound, and every reply is a well-formed CoAP message; also
//! the command mailbox's answers and commands riding on a 2.04.
//!
//! Input framing (so one input is a whole conversation): repeated
//! `peer: u8, advance_ms: u8, outcome: u8, len: u16 BE, datagram[len]`.
//! The seed corpus holds real libcoap requests in this framing.
#![no_main]

use coap2mqtt::coap::mailbox::{Carried, MailboxAnswer};
use coap2mqtt::coap::{Exchange, ExchangeConfig, Peer, Step, StoreOutcome};
use coap2mqtt::message::Qos;
use coap2mqtt::route::{Method, Payload, Route, RouteSpec, Router};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn router() -> Router {
    let specs = [
        ("sensors/{device}/{metric}", "site/{gateway}/{device}/{metric}", None),
        ("raw/{path*}", "raw/{path}", None),
        ("dev/{device}", "d/{identity}/{device}", Some("{device}")),
        ("json/{device}", "j/{device}", None),
        ("split/{device}", "s/{device}/{senml_name}", None),
    ];
    let routes = specs
        .iter()
        .filter_map(|(resource, topic, identity)| {
            Route::new(&RouteSpec {
                resource,
                topic,
                methods: &[Method::Post, Method::Put],
                qos: Qos::AtLeastOnce,
                retain: false,
                identity: *identity,
                identities: &[],
                expiry_s: None,
                payload: if resource.starts_with("json") || resource.starts_with("split") {
                    Payload::Json
                } else {
                    Payload::Raw
                },
                split: resource.starts_with("split"),
            })
            .ok()
        })
        .collect();
    Router::new("gw", routes)
}

fuzz_target!(|data: &[u8]| {
    let config = ExchangeConfig {
        max_payload: 2048,
        dedup_capacity: 64,
        block_capacity: 4,
        block_lifetime: Duration::from_secs(5),
        full_retry_after_s: 30,
        // Below max_payload plus a topic: the packet-size refusal is reached.
        max_packet_size: 2048,
        // Requests under cmd/ go to the command mailbox.
        mailbox: Some("cmd".into()),
    };
    let mut exchange = Exchange::new(config, 0x1234);
    let router = router();
    let peers: Vec<Peer> = (0..4u16)
        .map(|i| Peer {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000 + i)),
            identity: (i % 2 == 1).then(|| Arc::from(format!("dev{i}"))),
        })
        .collect();
    let mut now = Instant::now();
    let mut rest = data;
    while rest.len() >= 5 {
        let peer = &peers[usize::from(rest[0]) % peers.len()];
        now += Duration::from_millis(u64::from(rest[1]) * 500);
        let outcome = match rest[2] % 3 {
            0 => StoreOutcome::Stored,
            1 => StoreOutcome::Full,
            _ => StoreOutcome::Failed,
        };
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        let datagram = &rest[5..5 + len];
        rest = &rest[5 + len..];
        let reply = match exchange.on_datagram(peer, datagram, &router, now, 1_700_000_000_000) {
            Step::Reply(bytes) => Some(bytes),
            Step::Store { ticket, messages } => {
                assert!(!messages.is_empty());
                for message in &messages {
                    assert!(!message.topic.contains(['+', '#', '\0']));
                    assert!(!message.meta.translated || serde_json::from_slice::<serde_json::Value>(&message.payload).is_ok());
                }
                // Now and then a command rides on the 2.04 (piggyback).
                let carried = (rest.len() % 2 == 0).then(|| Carried {
                    id: rest.len() as u64,
                    resource: "config/interval".into(),
                    payload: datagram.to_vec(),
                });
                exchange.on_stored_carrying(ticket, outcome, now, carried)
            }
            Step::Mailbox { ticket, request } => {
                assert!(!request.device().is_empty());
                let answer = match rest.len() % 4 {
                    0 => MailboxAnswer::Command(Carried {
                        id: u64::from(rest.first().copied().unwrap_or(0)),
                        resource: String::from_utf8_lossy(datagram).into_owned(),
                        payload: datagram.to_vec(),
                    }),
                    1 => MailboxAnswer::Empty,
                    2 => MailboxAnswer::Recorded,
                    _ => MailboxAnswer::Forbidden,
                };
                exchange.on_mailbox(ticket, answer)
            }
            Step::Ignore(_) => None,
        };
        if let Some(bytes) = reply {
            assert!(coap_lite::Packet::from_bytes(&bytes).is_ok(), "reply does not parse: {bytes:02x?}");
        }
        assert!(exchange.dedup_len() <= 64);
        assert!(exchange.uploads_len() <= 4);
    }
});
