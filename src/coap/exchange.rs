//! The CoAP exchange: one datagram in, one decision out. This is the
//! message layer and the request/response layer of RFC 7252 for a server
//! that only accepts uploads, with Block1 (RFC 7959) and No-Response
//! (RFC 7967).
//!
//! It is sans-IO: no sockets, no clock, no randomness. The transport hands
//! in a datagram, its [`Peer`] and the time; [`Exchange::on_datagram`]
//! answers with a [`Step`]: bytes to send now, a [`Message`] to store with a
//! [`Ticket`] to redeem through [`Exchange::on_stored`] once the store has
//! answered, or nothing (and why). Every protocol rule is therefore tested
//! byte for byte, without sockets or timing.
//!
//! Invariants:
//! - A 2.xx for a stored message is built only by [`Exchange::on_stored`]
//!   with [`StoreOutcome::Stored`]: the answer follows the flush.
//! - While a (peer, Message ID) is remembered, its request is handed to the
//!   store at most once; a block-wise upload is handed out once, whole.
//! - A Confirmable request gets one answer; its retransmissions get the same
//!   bytes again, or nothing while the store has not answered.
//! - Nothing answers an Acknowledgement, a Reset, or a datagram without a
//!   valid version 1 header; a Non-confirmable message is never reset.
//! - Tables are bounded (see `dedup.rs`, `block.rs`) and every drop is
//!   counted in [`ExchangeCounters`].

use super::block::{Assemblies, AssemblyKey, BlockOption, BlockProgress};
pub use super::counters::ExchangeCounters;
use super::dedup::{DedupKey, DedupTable, Lifetime, Remembered, Reply, ReplyOption, Stamp};
use super::mailbox::{self, Carried, MailboxAnswer, MailboxRequest};
use super::recall::Recall;
use super::request::{self, NoResponse, RequestOptions};
use super::wire::{
    self, CoapMessage, Code, Header, MessageType, ParseError, Response, ResponseOptions, Token,
};
use crate::devices::{Event, Sighting};
use crate::message::{Message, Meta};
use crate::route::{Payload, Refusal, Router};
use crate::translate::{self, Translated};
use crate::uplink::properties::packet_size;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits of one exchange; see each field.
///
/// Worst-case memory follows from them: `block_capacity * max_payload` for
/// uploads under way (16 MiB by default) and, measured, 58 bytes per
/// deduplication entry when peers have many entries, 132 when each has one
/// (3.8 MB and 8.7 MB at the default 65,536).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// The largest request body accepted, after Block1 reassembly (4.13 past it).
    pub max_payload: usize,
    /// How many (peer, Message ID) pairs are remembered at most.
    pub dedup_capacity: usize,
    /// How many Block1 uploads may be under way at once.
    pub block_capacity: usize,
    /// An upload idle this long is dropped.
    pub block_lifetime: Duration,
    /// Max-Age of the 5.03 sent when the store is full: when to try again.
    pub full_retry_after_s: u32,
    /// `mqtt.max_packet_size`: a message whose PUBLISH (topic included)
    /// would not fit is refused with 4.13 now rather than acknowledged and
    /// then dead-lettered by the uplink.
    pub max_packet_size: usize,
    /// The command mailbox's resource (`commands.path`, "cmd"), when there
    /// are command tables; see `mailbox.rs`.
    pub mailbox: Option<String>,
}

impl Default for ExchangeConfig {
    fn default() -> ExchangeConfig {
        ExchangeConfig {
            max_payload: 64 * 1024,
            dedup_capacity: 65_536,
            block_capacity: 256,
            block_lifetime: Duration::from_secs(120),
            full_retry_after_s: 30,
            max_packet_size: 262_144,
            mailbox: None,
        }
    }
}

/// Who sent a datagram: transport address and, over DTLS, the authenticated identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Option<Arc<str>>,
}

/// What to do with one datagram.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes to the peer now.
    Reply(Vec<u8>),
    /// Persist the messages (one, or the records of a split SenML pack:
    /// all of them or none), then call [`Exchange::on_stored`] with the
    /// ticket.
    Store {
        ticket: Ticket,
        messages: Vec<Message>,
    },
    /// Ask the command mailbox, then call [`Exchange::on_mailbox`] with
    /// the ticket and its answer.
    Mailbox {
        ticket: MailboxTicket,
        request: MailboxRequest,
    },
    /// Nothing to send; why, for metrics and rate-limited logs.
    Ignore(Ignored),
}

/// What [`Exchange::on_mailbox`] needs to answer a mailbox request.
#[derive(Debug)]
pub struct MailboxTicket {
    peer: Peer,
    origin: Origin,
}

impl MailboxTicket {
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

/// The store's answer for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Flushed to disk: the device gets 2.04 Changed.
    Stored,
    /// The queue is full: 5.03 Service Unavailable with Max-Age.
    Full,
    /// The store failed: 5.00 Internal Server Error.
    Failed,
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// Shorter than the 4-byte header.
    Undecodable,
    /// A version other than 1 (RFC 7252 §3: silently ignored).
    WrongVersion,
    /// A message format error in a message that is not Confirmable.
    Malformed,
    /// An Acknowledgement, a Reset, or a Non-confirmable response: the
    /// gateway sends no requests, so there is nothing they could answer.
    NotARequest,
    /// A duplicate the gateway does not answer again (Non-confirmable).
    Duplicate,
    /// A retransmission of a Confirmable request the store has not answered
    /// yet: the answer will go to the first one, and the device retransmits.
    DuplicatePending,
    /// A Non-confirmable request with an unrecognized critical option,
    /// rejected silently (RFC 7252 §5.4.1).
    BadOption,
    /// A Non-confirmable request whose answer No-Response suppressed.
    ResponseSuppressed,
}

impl Ignored {
    /// A short stable name, for metric labels and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Ignored::Undecodable => "undecodable",
            Ignored::WrongVersion => "wrong_version",
            Ignored::Malformed => "malformed",
            Ignored::NotARequest => "not_a_request",
            Ignored::Duplicate => "duplicate",
            Ignored::DuplicatePending => "duplicate_pending",
            Ignored::BadOption => "bad_option",
            Ignored::ResponseSuppressed => "response_suppressed",
        }
    }
}

/// What [`Exchange::on_stored`] needs to answer a stored request: who asked,
/// how to address the answer, and which deduplication entry to complete.
/// Not `Clone`: a request is answered once.
///
/// A ticket dropped without an answer leaves its request pending: the
/// device's retransmissions are ignored until EXCHANGE_LIFETIME (or
/// NON_LIFETIME) has passed, and it gets no answer.
#[derive(Debug)]
pub struct Ticket {
    peer: Peer,
    origin: Origin,
    /// The Block1 to echo in the 2.04 of a block-wise upload (M = 0).
    block1: Option<BlockOption>,
    stamp: Stamp,
    /// For the device table once the store answers (boxed: tickets wait
    /// in channels by the thousand and stay small).
    seen: Box<Seen>,
}

/// What the device table learns of a stored request.
#[derive(Debug)]
struct Seen {
    device: Option<Box<str>>,
    messages: u32,
    bytes: u64,
}

impl Ticket {
    /// Where the answer goes.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The device's name for its mailbox: its identity, else the route's
    /// `{device}` capture.
    pub fn device(&self) -> Option<&str> {
        self.peer
            .identity
            .as_deref()
            .or(self.seen.device.as_deref())
    }

    /// A block-wise upload's answer carries Block1 and no command.
    pub fn can_carry(&self) -> bool {
        self.block1.is_none()
    }

    /// The request's Message ID, for logs.
    pub fn message_id(&self) -> u16 {
        self.origin.message_id
    }

    /// What deduplication must remember of this request across a restart
    /// once it is stored: the store writes it with the message.
    pub fn recall(&self) -> Recall {
        Recall {
            peer: self.peer.clone(),
            message_id: self.origin.message_id,
            confirmable: self.origin.confirmable,
            token: self.origin.token,
            block1: self.block1.map(BlockOption::value),
            no_response: self.origin.no_response.mask(),
        }
    }
}

/// How an answer is addressed: to the request it answers.
#[derive(Debug, Clone, Copy)]
struct Origin {
    confirmable: bool,
    message_id: u16,
    token: Token,
    no_response: NoResponse,
}

/// What the gateway says, before it is addressed.
#[derive(Debug, Clone)]
struct Answer {
    code: Code,
    options: ResponseOptions,
    /// A diagnostic payload (RFC 7252 §5.5.2) for a request the gateway
    /// could not read. Not remembered for retransmissions: they get the
    /// same code and options without it.
    diagnostic: Option<Box<str>>,
}

impl Answer {
    fn new(code: Code) -> Answer {
        Answer {
            code,
            options: ResponseOptions::default(),
            diagnostic: None,
        }
    }
}

/// What one new request comes to.
enum Decision {
    Answer(Answer),
    Store {
        messages: Vec<Message>,
        block1: Option<BlockOption>,
        device: Option<Box<str>>,
    },
    /// Non-confirmable with an unrecognized critical option: no answer.
    Reject,
    Mailbox(MailboxRequest),
}

/// The CoAP state of one listening socket, owned by one task.
#[derive(Debug)]
pub struct Exchange {
    config: ExchangeConfig,
    next_message_id: u16,
    dedup: DedupTable,
    assemblies: Assemblies,
    counters: ExchangeCounters,
    /// What devices did, for the device table; drained by the server
    /// through [`Exchange::take_sightings`] (bounded for callers that never
    /// drain).
    sightings: Vec<Sighting>,
    /// The `{device}` capture of the request being decided.
    deciding_for: Option<Box<str>>,
}

/// Sightings kept at most between two drains.
const MAX_SIGHTINGS: usize = 1_024;

impl Exchange {
    /// `first_message_id` should be random (RFC 7252 §4.4), chosen by the caller.
    pub fn new(config: ExchangeConfig, first_message_id: u16) -> Exchange {
        Exchange {
            dedup: DedupTable::new(config.dedup_capacity),
            assemblies: Assemblies::new(config.block_capacity, config.block_lifetime),
            config,
            next_message_id: first_message_id,
            counters: ExchangeCounters::default(),
            sightings: Vec::new(),
            deciding_for: None,
        }
    }

    pub fn config(&self) -> &ExchangeConfig {
        &self.config
    }

    pub fn counters(&self) -> &ExchangeCounters {
        &self.counters
    }

    /// What devices did since the last call: stored messages and refused
    /// requests, for the device table.
    pub fn take_sightings(&mut self) -> std::vec::Drain<'_, Sighting> {
        self.sightings.drain(..)
    }

    fn sighted(&mut self, peer: &Peer, device: Option<Box<str>>, event: Event) {
        if self.sightings.len() < MAX_SIGHTINGS {
            self.sightings.push(Sighting {
                peer: peer.clone(),
                device,
                event,
            });
        }
    }

    /// How many (peer, Message ID) pairs are remembered now.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// How many Block1 uploads are under way now.
    pub fn uploads_len(&self) -> usize {
        self.assemblies.len()
    }

    /// Remembers requests stored before a restart, each with how long ago
    /// it was stored, so that their retransmissions are answered again with
    /// the same 2.04 instead of being stored twice. Call before the first
    /// datagram. Those older than their lifetime are skipped. Returns how
    /// many were remembered.
    pub fn recall(&mut self, mut recalled: Vec<(Recall, Duration)>, now: Instant) -> usize {
        // Oldest first: the table expects insertions in time order.
        recalled.sort_by_key(|(_, age)| std::cmp::Reverse(*age));
        let mut remembered_now = 0;
        for (recall, age) in recalled {
            let lifetime = match recall.confirmable {
                true => Lifetime::Confirmable,
                false => Lifetime::NonConfirmable,
            };
            if age >= lifetime.duration() {
                continue;
            }
            let origin = Origin {
                confirmable: recall.confirmable,
                message_id: recall.message_id,
                token: recall.token,
                no_response: NoResponse::from_mask(recall.no_response),
            };
            let answer = Answer {
                code: Code::CHANGED,
                diagnostic: None,
                options: ResponseOptions {
                    block1: recall.block1,
                    ..ResponseOptions::default()
                },
            };
            let key = DedupKey {
                peer: recall.peer,
                message_id: recall.message_id,
            };
            // After a reboot the monotonic clock may be younger than the
            // entry: it is then remembered from now, a little longer than
            // needed, which is harmless.
            let since = now.checked_sub(age).unwrap_or(now);
            self.dedup
                .remember(key, remembered(&origin, &answer), lifetime, since);
            remembered_now += 1;
        }
        self.sync_table_counters();
        remembered_now
    }

    /// One datagram in; what to do now out. `now` drives the protocol's
    /// timers; `wall_ms` (milliseconds since the Unix epoch) is the time of
    /// receipt that SenML times relative to "now" resolve against.
    pub fn on_datagram(
        &mut self,
        peer: &Peer,
        datagram: &[u8],
        router: &Router,
        now: Instant,
        wall_ms: u64,
    ) -> Step {
        self.counters.datagrams += 1;
        self.dedup.purge(now);
        self.assemblies.expire(now);
        let step = self.receive(peer, datagram, router, now, wall_ms);
        self.sync_table_counters();
        step
    }

    /// The store's answer for a message handed out in [`Step::Store`]: the
    /// response to send (`None` if No-Response suppressed it on a NON); also
    /// remembers it for retransmissions of a Confirmable request.
    pub fn on_stored(
        &mut self,
        ticket: Ticket,
        outcome: StoreOutcome,
        now: Instant,
    ) -> Option<Vec<u8>> {
        self.on_stored_carrying(ticket, outcome, now, None)
    }

    /// [`Exchange::on_stored`], with a command riding on the 2.04
    /// (piggyback; see `mailbox.rs`). A retransmission of the request gets
    /// the plain 2.04: the command stays pending and comes again.
    pub fn on_stored_carrying(
        &mut self,
        ticket: Ticket,
        outcome: StoreOutcome,
        now: Instant,
        carried: Option<Carried>,
    ) -> Option<Vec<u8>> {
        self.dedup.purge(now);
        let answer = match outcome {
            StoreOutcome::Stored => {
                self.counters.stored += 1;
                Answer {
                    code: Code::CHANGED,
                    diagnostic: None,
                    options: ResponseOptions {
                        block1: ticket.block1.map(BlockOption::value),
                        ..ResponseOptions::default()
                    },
                }
            }
            StoreOutcome::Full => {
                self.counters.store_full += 1;
                Answer {
                    code: Code::SERVICE_UNAVAILABLE,
                    diagnostic: None,
                    options: ResponseOptions {
                        max_age: Some(self.config.full_retry_after_s),
                        ..ResponseOptions::default()
                    },
                }
            }
            StoreOutcome::Failed => {
                self.counters.store_failed += 1;
                Answer::new(Code::INTERNAL_SERVER_ERROR)
            }
        };
        let event = match outcome {
            StoreOutcome::Stored => Event::Stored {
                messages: ticket.seen.messages,
                bytes: ticket.seen.bytes,
            },
            _ => Event::Refused {
                code: (answer.code.class(), answer.code.detail()),
            },
        };
        self.sighted(&ticket.peer, ticket.seen.device, event);
        let bytes = match carried {
            Some(carried) if outcome == StoreOutcome::Stored && ticket.block1.is_none() => {
                self.address_carrying(&ticket.origin, answer.code, &carried)
            }
            _ => self.address(&ticket.origin, &answer),
        };
        let key = DedupKey {
            peer: ticket.peer,
            message_id: ticket.origin.message_id,
        };
        self.dedup
            .answer(&key, ticket.stamp, remembered(&ticket.origin, &answer));
        self.sync_table_counters();
        bytes
    }

    /// The mailbox's answer to a request handed out in [`Step::Mailbox`].
    pub fn on_mailbox(&mut self, ticket: MailboxTicket, answer: MailboxAnswer) -> Option<Vec<u8>> {
        let code = match answer {
            MailboxAnswer::Command(carried) => {
                return self.address_carrying(&ticket.origin, Code::CONTENT, &carried)
            }
            MailboxAnswer::Recorded => Code::CHANGED,
            MailboxAnswer::Empty | MailboxAnswer::Unknown => Code::NOT_FOUND,
            MailboxAnswer::Forbidden => Code::FORBIDDEN,
            MailboxAnswer::Failed => Code::INTERNAL_SERVER_ERROR,
        };
        self.address(&ticket.origin, &Answer::new(code))
    }

    /// An answer carrying a command: its body, Location-Path and
    /// Location-Query.
    fn address_carrying(
        &mut self,
        origin: &Origin,
        code: Code,
        carried: &Carried,
    ) -> Option<Vec<u8>> {
        if origin.no_response.suppresses(code) {
            return self.address(origin, &Answer::new(code));
        }
        self.counters.responses_2xx += 1;
        let (message_type, message_id) = match origin.confirmable {
            true => (MessageType::Acknowledgement, origin.message_id),
            false => (MessageType::NonConfirmable, self.take_message_id()),
        };
        let head = Response {
            message_type,
            code,
            message_id,
            token: origin.token,
            options: ResponseOptions::default(),
        };
        let path = self.config.mailbox.as_deref().unwrap_or("cmd");
        let options = mailbox::location(path, carried);
        let options: Vec<(u16, &[u8])> = options.iter().map(|(n, v)| (*n, &v[..])).collect();
        Some(wire::message_with_options(
            &head,
            &options,
            &carried.payload,
        ))
    }

    fn receive(
        &mut self,
        peer: &Peer,
        datagram: &[u8],
        router: &Router,
        now: Instant,
        wall_ms: u64,
    ) -> Step {
        let message = match wire::parse(datagram) {
            Ok(message) => message,
            Err(ParseError::TooShort(_)) => {
                self.counters.undecodable += 1;
                return Step::Ignore(Ignored::Undecodable);
            }
            Err(ParseError::WrongVersion(_)) => {
                self.counters.wrong_version += 1;
                return Step::Ignore(Ignored::WrongVersion);
            }
            Err(ParseError::Format { header, .. }) => {
                self.counters.malformed += 1;
                return self.reject(header, Ignored::Malformed);
            }
        };
        let header = message.header;
        match header.message_type {
            MessageType::Acknowledgement | MessageType::Reset => {
                self.counters.not_requests += 1;
                Step::Ignore(Ignored::NotARequest)
            }
            MessageType::Confirmable if header.code == Code::EMPTY => {
                self.counters.pings += 1;
                self.reset(header.message_id)
            }
            // RFC 7252 §4.3: a Non-confirmable message is never Empty.
            MessageType::NonConfirmable if header.code == Code::EMPTY => {
                self.counters.malformed += 1;
                Step::Ignore(Ignored::Malformed)
            }
            _ if header.code.is_request() => self.on_request(peer, &message, router, now, wall_ms),
            _ => {
                // A response (or a reserved class) the gateway never asked for.
                self.counters.not_requests += 1;
                self.reject(header, Ignored::NotARequest)
            }
        }
    }

    /// Rejects a message (RFC 7252 §4.2, §4.3): a Confirmable one with a
    /// Reset, anything else by ignoring it.
    fn reject(&mut self, header: Header, otherwise: Ignored) -> Step {
        if header.message_type == MessageType::Confirmable {
            self.reset(header.message_id)
        } else {
            Step::Ignore(otherwise)
        }
    }

    fn reset(&mut self, message_id: u16) -> Step {
        self.counters.resets_sent += 1;
        Step::Reply(wire::empty_message(MessageType::Reset, message_id))
    }

    fn on_request(
        &mut self,
        peer: &Peer,
        message: &CoapMessage<'_>,
        router: &Router,
        now: Instant,
        wall_ms: u64,
    ) -> Step {
        let confirmable = message.header.message_type == MessageType::Confirmable;
        let key = DedupKey {
            peer: peer.clone(),
            message_id: message.header.message_id,
        };
        match (confirmable, self.dedup.lookup(&key)) {
            (_, None) => {}
            // A retransmission is the same message, token and all; the same
            // Message ID with another token is a new request from a device
            // that reused the ID within EXCHANGE_LIFETIME (one that rebooted
            // and starts its IDs again, or another program given the same
            // port). Answering it with the earlier 2.04 would tell the
            // device "stored" for a reading that never was, so it is taken
            // as new and replaces the entry (Californium does the same).
            (true, Some(Remembered::Answered(reply))) if reply.token != message.token => {
                self.counters.message_ids_reused += 1;
            }
            (true, Some(Remembered::Answered(reply))) => {
                self.counters.duplicates_answered += 1;
                return Step::Reply(replay(message.header.message_id, reply));
            }
            (true, Some(Remembered::Pending)) => {
                self.counters.duplicates_pending += 1;
                return Step::Ignore(Ignored::DuplicatePending);
            }
            (_, Some(_)) => {
                self.counters.duplicates_dropped += 1;
                return Step::Ignore(Ignored::Duplicate);
            }
        }
        self.counters.requests += 1;
        let options = request::read_options(message);
        let origin = Origin {
            confirmable,
            message_id: message.header.message_id,
            token: message.token,
            no_response: options.no_response,
        };
        let lifetime = if confirmable {
            Lifetime::Confirmable
        } else {
            Lifetime::NonConfirmable
        };
        match self.decide(peer, message, &options, router, now, wall_ms) {
            Decision::Store {
                messages,
                block1,
                device,
            } => {
                let stamp = self.dedup.remember(key, Remembered::Pending, lifetime, now);
                self.counters.handed_to_store += 1;
                let ticket = Ticket {
                    peer: peer.clone(),
                    origin,
                    block1,
                    stamp,
                    seen: Box::new(Seen {
                        device,
                        messages: messages.len() as u32,
                        bytes: messages.iter().map(|m| m.payload.len() as u64).sum(),
                    }),
                };
                Step::Store { ticket, messages }
            }
            Decision::Answer(answer) => {
                if answer.code.class() >= 4 {
                    let device = self.deciding_for.take();
                    let code = (answer.code.class(), answer.code.detail());
                    self.sighted(peer, device, Event::Refused { code });
                }
                let bytes = self.address(&origin, &answer);
                self.dedup
                    .remember(key, remembered(&origin, &answer), lifetime, now);
                match bytes {
                    Some(bytes) => Step::Reply(bytes),
                    None => Step::Ignore(Ignored::ResponseSuppressed),
                }
            }
            Decision::Reject => {
                self.dedup.remember(key, Remembered::Seen, lifetime, now);
                Step::Ignore(Ignored::BadOption)
            }
            // Not remembered: mailbox requests are idempotent and answered
            // afresh (see mailbox.rs).
            Decision::Mailbox(request) => Step::Mailbox {
                ticket: MailboxTicket {
                    peer: peer.clone(),
                    origin,
                },
                request,
            },
        }
    }

    /// Decides what a new request comes to: validity first, then the route,
    /// then the body.
    fn decide(
        &mut self,
        peer: &Peer,
        message: &CoapMessage<'_>,
        options: &RequestOptions<'_>,
        router: &Router,
        now: Instant,
        wall_ms: u64,
    ) -> Decision {
        self.deciding_for = None;
        if options.unrecognized_critical.is_some() {
            self.counters.bad_options += 1;
            if message.header.message_type != MessageType::Confirmable {
                return Decision::Reject;
            }
            return Decision::Answer(Answer::new(Code::BAD_OPTION));
        }
        if options.proxy {
            self.counters.proxying_refused += 1;
            return Decision::Answer(Answer::new(Code::PROXYING_NOT_SUPPORTED));
        }
        let Some(method) = request::method(message.header.code) else {
            self.counters.method_not_allowed += 1;
            return Decision::Answer(Answer::new(Code::METHOD_NOT_ALLOWED));
        };
        let path: Result<Vec<&str>, _> = options
            .uri_path
            .iter()
            .map(|s| std::str::from_utf8(s))
            .collect();
        let Ok(path) = path else {
            self.counters.bad_requests += 1;
            return Decision::Answer(Answer::new(Code::BAD_REQUEST));
        };
        if let Some(mailbox) = self.config.mailbox.as_deref() {
            if path.first() == Some(&mailbox) {
                return match mailbox::read(peer, method, &path, &options.uri_query, message.payload)
                {
                    Ok(request) => Decision::Mailbox(request),
                    Err((code, why)) => {
                        let mut answer = Answer::new(code);
                        answer.diagnostic = Some(why.into());
                        Decision::Answer(answer)
                    }
                };
            }
        }
        // A Block1 longer than 3 bytes was refused above as a bad option.
        let block1 = match options.block1.map(BlockOption::decode).transpose() {
            Ok(block1) => block1,
            Err(_) => {
                self.counters.bad_requests += 1;
                return Decision::Answer(Answer::new(Code::BAD_REQUEST));
            }
        };
        let upload = block1.map(|block| {
            let key = AssemblyKey {
                peer: peer.clone(),
                path: path.iter().map(|s| s.to_string()).collect(),
            };
            (key, block)
        });
        let resolved = match router.resolve(&path, method, peer.identity.as_deref()) {
            Ok(resolved) => {
                self.deciding_for = resolved.device.as_deref().map(Box::from);
                resolved
            }
            Err(refusal) => {
                if let Some((key, _)) = &upload {
                    self.assemblies.abandon(key);
                }
                return Decision::Answer(self.refuse(refusal));
            }
        };
        let payload = match upload {
            None if message.payload.len() > self.config.max_payload => {
                return Decision::Answer(self.too_large());
            }
            None => message.payload.to_vec(),
            Some((key, block)) => {
                match self.receive_block(key, block, options.size1, message.payload, now) {
                    Ok(body) => body,
                    Err(answer) => return Decision::Answer(answer),
                }
            }
        };
        // What will be published: the device's bytes, or their JSON
        // translation (one per record when split), made now so that the
        // store holds what the broker gets and a 2.04 still means stored.
        let translated = resolved.payload == Payload::Json;
        let bodies = match resolved.payload {
            Payload::Raw => vec![Translated {
                json: payload,
                senml_name: None,
            }],
            Payload::Json => {
                let translation = translate::to_json(
                    options.content_format,
                    &payload,
                    &translate::Options {
                        split: resolved.split,
                        now_ms: wall_ms,
                        max_output: self.config.max_packet_size,
                    },
                );
                match translation {
                    Ok(bodies) => bodies,
                    Err(refusal) => return Decision::Answer(self.untranslatable(refusal)),
                }
            }
        };
        let meta = Meta {
            coap_path: path.join("/"),
            identity: peer.identity.clone(),
            content_format: options.content_format,
            expiry_s: resolved.expiry_s,
            translated,
            correlation: None,
        };
        let mut messages = Vec::with_capacity(bodies.len());
        for body in bodies {
            let topic = match resolved.topic.for_record(body.senml_name.as_deref()) {
                Ok(topic) => topic,
                Err(refusal) => return Decision::Answer(self.refuse(refusal)),
            };
            let message = Message {
                topic,
                payload: body.json,
                qos: resolved.qos,
                retain: resolved.retain,
                meta: meta.clone(),
            };
            // The PUBLISH as the largest protocol version would carry it
            // (MQTT 5 with this gateway's properties): refused now, while
            // the device listens, rather than acknowledged and then
            // dead-lettered.
            let packet = packet_size(&message, router.gateway());
            if packet > self.config.max_packet_size {
                // Size1: the payload this topic could carry.
                let room = self
                    .config
                    .max_packet_size
                    .saturating_sub(packet - message.payload.len());
                return Decision::Answer(self.too_large_for(room));
            }
            messages.push(message);
        }
        if translated {
            self.counters.translated += 1;
            self.counters.split_records += messages.len().saturating_sub(1) as u64;
        }
        Decision::Store {
            messages,
            block1: block1.map(|block| block.with_more(false)),
            device: self.deciding_for.take(),
        }
    }

    /// One block of an upload: `Ok` with the whole body once the last block
    /// is in; otherwise `Err` with the answer to send now instead of storing
    /// (2.31 Continue, or why the upload stops).
    fn receive_block(
        &mut self,
        key: AssemblyKey,
        block: BlockOption,
        size1: Option<u32>,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, Answer> {
        let max_payload = self.config.max_payload;
        if size1.is_some_and(|size| u64::from(size) > max_payload as u64) {
            self.assemblies.abandon(&key);
            return Err(self.too_large());
        }
        match self
            .assemblies
            .receive(key, block, payload, max_payload, now)
        {
            BlockProgress::Complete(body) => Ok(body),
            BlockProgress::Continue => {
                self.counters.block_continues += 1;
                Err(Answer {
                    code: Code::CONTINUE,
                    diagnostic: None,
                    options: ResponseOptions {
                        block1: Some(block.with_more(true).value()),
                        ..ResponseOptions::default()
                    },
                })
            }
            BlockProgress::Incomplete => {
                self.counters.block_incomplete += 1;
                Err(Answer::new(Code::REQUEST_ENTITY_INCOMPLETE))
            }
            BlockProgress::TooLarge => Err(self.too_large()),
            BlockProgress::WrongBlockSize => {
                self.counters.bad_requests += 1;
                Err(Answer::new(Code::BAD_REQUEST))
            }
        }
    }

    fn too_large(&mut self) -> Answer {
        self.too_large_for(self.config.max_payload)
    }

    /// 4.13 with Size1 = `limit`, the largest body that would be taken.
    fn too_large_for(&mut self, limit: usize) -> Answer {
        self.counters.too_large += 1;
        Answer {
            code: Code::REQUEST_ENTITY_TOO_LARGE,
            diagnostic: None,
            options: ResponseOptions {
                size1: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
                ..ResponseOptions::default()
            },
        }
    }

    /// A `payload = "json"` request whose body cannot be translated: 4.00
    /// with what is wrong (never quoting the payload), 4.15 for a format
    /// the gateway does not translate, 4.13 when the JSON would not fit.
    fn untranslatable(&mut self, refusal: translate::Refusal) -> Answer {
        match refusal {
            translate::Refusal::Malformed(why) => {
                self.counters.payload_malformed += 1;
                Answer {
                    diagnostic: Some(why.into()),
                    ..Answer::new(Code::BAD_REQUEST)
                }
            }
            translate::Refusal::Unsupported(_) => {
                self.counters.unsupported_content_format += 1;
                Answer::new(Code::UNSUPPORTED_CONTENT_FORMAT)
            }
            translate::Refusal::TooLarge => {
                // No Size1: the limit is on the JSON, not on the body.
                self.counters.too_large += 1;
                Answer::new(Code::REQUEST_ENTITY_TOO_LARGE)
            }
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> Answer {
        let (counter, code) = match refusal {
            Refusal::NotFound => (&mut self.counters.not_found, Code::NOT_FOUND),
            Refusal::MethodNotAllowed => (
                &mut self.counters.method_not_allowed,
                Code::METHOD_NOT_ALLOWED,
            ),
            Refusal::Forbidden => (&mut self.counters.forbidden, Code::FORBIDDEN),
            Refusal::InvalidTopic => (&mut self.counters.invalid_topics, Code::BAD_REQUEST),
        };
        *counter += 1;
        Answer::new(code)
    }

    /// Addresses an answer to its request: a piggybacked ACK for a
    /// Confirmable, a NON with a fresh Message ID for a Non-confirmable.
    /// No-Response (RFC 7967 §2) turns it into an empty ACK or nothing.
    fn address(&mut self, origin: &Origin, answer: &Answer) -> Option<Vec<u8>> {
        if origin.no_response.suppresses(answer.code) {
            self.counters.responses_suppressed += 1;
            if !origin.confirmable {
                return None;
            }
            self.counters.empty_acks_sent += 1;
            return Some(wire::empty_message(
                MessageType::Acknowledgement,
                origin.message_id,
            ));
        }
        match answer.code.class() {
            2 => self.counters.responses_2xx += 1,
            4 => self.counters.responses_4xx += 1,
            _ => self.counters.responses_5xx += 1,
        }
        let non_message_id = match origin.confirmable {
            true => 0,
            false => self.take_message_id(),
        };
        encode_answer(origin, answer, non_message_id)
    }

    /// A Message ID for a request the gateway sends from this endpoint
    /// (push commands): one space with the exchange's own (RFC 7252 §4.4).
    pub fn next_message_id(&mut self) -> u16 {
        self.take_message_id()
    }

    fn take_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = id.wrapping_add(1);
        id
    }

    fn sync_table_counters(&mut self) {
        self.counters.dedup_evictions = self.dedup.evicted;
        self.counters.dedup_peer_evictions = self.dedup.evicted_peer_share;
        self.counters.block_evictions = self.assemblies.evicted;
        self.counters.block_expired = self.assemblies.expired;
    }
}

/// The bytes of an answer to `origin`: a piggybacked ACK for a
/// Confirmable, a NON with `non_message_id` for a Non-confirmable;
/// No-Response turns it into an empty ACK or nothing.
fn encode_answer(origin: &Origin, answer: &Answer, non_message_id: u16) -> Option<Vec<u8>> {
    if origin.no_response.suppresses(answer.code) {
        return match origin.confirmable {
            true => Some(wire::empty_message(
                MessageType::Acknowledgement,
                origin.message_id,
            )),
            false => None,
        };
    }
    let (message_type, message_id) = match origin.confirmable {
        true => (MessageType::Acknowledgement, origin.message_id),
        false => (MessageType::NonConfirmable, non_message_id),
    };
    let response = Response {
        message_type,
        code: answer.code,
        message_id,
        token: origin.token,
        options: answer.options,
    };
    let mut bytes = response.encode();
    if let Some(diagnostic) = &answer.diagnostic {
        bytes.push(0xFF);
        bytes.extend_from_slice(diagnostic.as_bytes());
    }
    Some(bytes)
}

/// What deduplication keeps of an answered request: for a Confirmable,
/// what it was answered (a retransmission gets the same bytes, rebuilt by
/// [`replay`]); for the rest, the fact. An answer with more than one option
/// cannot be kept compactly (none of ours has more); it is kept as seen.
fn remembered(origin: &Origin, answer: &Answer) -> Remembered {
    if !origin.confirmable {
        return Remembered::Seen;
    }
    let o = answer.options;
    let option = match (o.max_age, o.block1, o.size1) {
        (None, None, None) => ReplyOption::None,
        (Some(v), None, None) => ReplyOption::MaxAge(v),
        (None, Some(v), None) => ReplyOption::Block1(v),
        (None, None, Some(v)) => ReplyOption::Size1(v),
        _ => return Remembered::Seen,
    };
    let code = match origin.no_response.suppresses(answer.code) {
        true => 0,
        false => answer.code.byte(),
    };
    Remembered::Answered(Reply {
        code,
        token: origin.token,
        option,
    })
}

/// The bytes a Confirmable request with `message_id` was answered with.
fn replay(message_id: u16, reply: Reply) -> Vec<u8> {
    if reply.code == 0 {
        return wire::empty_message(MessageType::Acknowledgement, message_id);
    }
    let mut options = ResponseOptions::default();
    match reply.option {
        ReplyOption::None => {}
        ReplyOption::MaxAge(v) => options.max_age = Some(v),
        ReplyOption::Block1(v) => options.block1 = Some(v),
        ReplyOption::Size1(v) => options.size1 = Some(v),
    }
    Response {
        message_type: MessageType::Acknowledgement,
        code: Code::from_byte(reply.code),
        message_id,
        token: reply.token,
        options,
    }
    .encode()
}
