//! The command mailbox over CoAP (see `coap/mailbox.rs`): requests under
//! `cmd` go to the mailbox, and its answers carry a command the way a
//! device reads it (coap-lite decodes them here).

use super::*;
use crate::coap::exchange::MailboxTicket;
use crate::coap::mailbox::{Carried, MailboxAnswer, MailboxRequest};

fn harness() -> Harness {
    Harness::with_config(ExchangeConfig {
        mailbox: Some("cmd".into()),
        ..ExchangeConfig::default()
    })
}

fn expect_mailbox(step: Step) -> (MailboxTicket, MailboxRequest) {
    match step {
        Step::Mailbox { ticket, request } => (ticket, request),
        other => panic!("expected a mailbox request, got {other:?}"),
    }
}

fn options(answer: &Answer, number: u16) -> Vec<Vec<u8>> {
    answer
        .0
        .get_option(CoapOption::from(number))
        .map(|values| values.iter().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_poll_is_answered_with_the_command_its_id_and_resource() {
    let mut h = harness();
    let get = Request::post(0x3000)
        .method(RequestType::Get)
        .path("cmd")
        .option(15, b"device=valve-1")
        .bytes();
    let (ticket, request) = expect_mailbox(h.send(&get));
    assert_eq!(
        request,
        MailboxRequest::Poll {
            device: "valve-1".into()
        }
    );
    let resource = "config/".to_string() + &"r".repeat(300);
    let reply = h
        .exchange
        .on_mailbox(
            ticket,
            MailboxAnswer::Command(Carried {
                id: 42,
                resource: resource.clone(),
                payload: b"60".to_vec(),
            }),
        )
        .expect("answered");
    let answer = Answer::decode(&reply);
    assert_eq!(
        (answer.code(), answer.message_id(), answer.payload()),
        ("2.05".to_string(), 0x3000, &b"60"[..])
    );
    assert_eq!(options(&answer, 8), [b"cmd".to_vec(), b"42".to_vec()]);
    assert_eq!(options(&answer, 20), [resource.into_bytes()]);
    // Not remembered: a retransmission asks the mailbox again.
    expect_mailbox(h.send(&get));
}

#[test]
fn an_empty_mailbox_is_4_04_and_a_report_is_2_04() {
    let mut h = harness();
    let get = Request::post(0x3001)
        .method(RequestType::Get)
        .path("cmd")
        .option(15, b"device=v")
        .bytes();
    let (ticket, _) = expect_mailbox(h.send(&get));
    let reply = h.exchange.on_mailbox(ticket, MailboxAnswer::Empty);
    assert_eq!(Answer::decode(&reply.expect("answered")).code(), "4.04");
    let report = Request::post(0x3002)
        .path("cmd/7")
        .option(15, b"device=v")
        .payload(b"done")
        .bytes();
    let (ticket, request) = expect_mailbox(h.send(&report));
    assert!(matches!(request, MailboxRequest::Report { id: 7, .. }));
    let reply = h.exchange.on_mailbox(ticket, MailboxAnswer::Recorded);
    assert_eq!(Answer::decode(&reply.expect("answered")).code(), "2.04");
}

#[test]
fn a_poll_without_a_name_gets_4_00_with_a_diagnostic() {
    let mut h = harness();
    let get = Request::post(0x3003)
        .method(RequestType::Get)
        .path("cmd")
        .bytes();
    let answer = expect_reply(h.send(&get));
    assert_eq!(answer.code(), "4.00");
    assert!(String::from_utf8_lossy(answer.payload()).contains("device=NAME"));
}

#[test]
fn without_command_tables_cmd_is_an_ordinary_path() {
    let mut h = Harness::new();
    let get = Request::post(0x3004)
        .path("cmd")
        .option(15, b"device=v")
        .bytes();
    assert_eq!(expect_reply(h.send(&get)).code(), "4.04");
}

#[test]
fn a_piggybacked_command_rides_on_the_2_04_and_a_retransmission_gets_the_plain_one() {
    let mut h = harness();
    let post = Request::post(0x3005).payload(b"21.5").bytes();
    let (ticket, _) = expect_store(h.send(&post));
    assert_eq!(ticket.device(), Some("d7"));
    let reply = h
        .exchange
        .on_stored_carrying(
            ticket,
            StoreOutcome::Stored,
            h.start,
            Some(Carried {
                id: 3,
                resource: "relay".into(),
                payload: b"on".to_vec(),
            }),
        )
        .expect("answered");
    let answer = Answer::decode(&reply);
    assert_eq!(
        (answer.code(), answer.payload()),
        ("2.04".to_string(), &b"on"[..])
    );
    assert_eq!(options(&answer, 8), [b"cmd".to_vec(), b"3".to_vec()]);
    assert_eq!(options(&answer, 20), [b"relay".to_vec()]);
    let again = expect_reply(h.send(&post));
    assert_eq!(
        (again.code(), again.payload()),
        ("2.04".to_string(), &b""[..])
    );
}
