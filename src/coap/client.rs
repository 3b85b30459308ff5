//! The gateway as a CoAP client: the requests it pushes to devices
//! (commands with `delivery = "push"`, see `crate::command`). Sans-IO like
//! the exchange beside it: requests, datagrams and the time in; bytes to
//! send and what became of each request out. The caller supplies what
//! would make it random (the Message ID, from the exchange's one space per
//! endpoint; the token; the retransmission jitter), so tests are exact.
//!
//! RFC 7252 §4.2 and §5.2: a Confirmable request is sent again after
//! ACK_TIMEOUT x jitter, doubling, until it is acknowledged or its window
//! closes (`give_up_at`: the device's awake window, at most
//! MAX_TRANSMIT_WAIT). An empty ACK means a separate response will follow
//! (matched by token, then acknowledged by us when Confirmable); a
//! piggybacked response settles it at once; a Reset is the device refusing.
//!
//! The server shell offers every datagram here first ([`Client::on_datagram`]);
//! what is not an answer to one of our requests goes to the exchange.

use super::exchange::Peer;
use super::wire::{self, option, Code, MessageType, Response, ResponseOptions, Token};
use crate::route::Method;
use std::time::{Duration, Instant};

/// RFC 7252 §4.8 defaults.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
pub const ACK_RANDOM_FACTOR: f64 = 1.5;
/// How many requests may wait for devices at once (per listener).
pub const MAX_OUTSTANDING: usize = 1_024;

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command it carries, to settle.
    pub command: u64,
    pub method: Method,
    /// Uri-Path, "/"-separated.
    pub resource: String,
    pub payload: Vec<u8>,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device answered with this code and body.
    Answered {
        command: u64,
        peer: Peer,
        code: (u8, u8),
        payload: Vec<u8>,
    },
    /// The device reset it: it does not take such requests.
    Reset { command: u64, peer: Peer },
    /// No answer within the window: the device sleeps again.
    GaveUp { command: u64, peer: Peer },
}

/// What one datagram came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Not an answer to any request of ours: the exchange's.
    NotOurs,
    /// Ours and handled; `ack` is an empty ACK to send (a Confirmable
    /// separate response); `outcome` when the request is settled.
    Ours {
        ack: Option<Vec<u8>>,
        outcome: Option<Outcome>,
    },
}

#[derive(Debug)]
struct Outstanding {
    command: u64,
    peer: Peer,
    message_id: u16,
    token: Token,
    bytes: Vec<u8>,
    /// Retransmissions stop once the device acknowledged.
    acknowledged: bool,
    timeout: Duration,
    next_at: Instant,
    give_up_at: Instant,
}

#[derive(Debug, Default)]
pub struct Client {
    outstanding: Vec<Outstanding>,
}

impl Client {
    pub fn new() -> Client {
        Client::default()
    }

    /// True when a request to this device's address is waiting.
    pub fn busy_with(&self, peer: &Peer) -> bool {
        self.outstanding.iter().any(|o| o.peer == *peer)
    }

    pub fn len(&self) -> usize {
        self.outstanding.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// A Confirmable request to `peer`: the bytes to send now, or `None`
    /// when too many wait already. `jitter` in [0, 1) spreads the first
    /// timeout over [ACK_TIMEOUT, ACK_TIMEOUT x ACK_RANDOM_FACTOR].
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        peer: Peer,
        request: &Request,
        message_id: u16,
        token: Token,
        jitter: f64,
        now: Instant,
        give_up_at: Instant,
    ) -> Option<Vec<u8>> {
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return None;
        }
        let head = Response {
            message_type: MessageType::Confirmable,
            code: method_code(request.method),
            message_id,
            token,
            options: ResponseOptions::default(),
        };
        let options: Vec<(u16, &[u8])> = request
            .resource
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| (option::URI_PATH, s.as_bytes()))
            .collect();
        let bytes = wire::message_with_options(&head, &options, &request.payload);
        let factor = 1.0 + jitter.clamp(0.0, 0.999) * (ACK_RANDOM_FACTOR - 1.0);
        let timeout = ACK_TIMEOUT.mul_f64(factor);
        self.outstanding.push(Outstanding {
            command: request.command,
            peer,
            message_id,
            token,
            bytes: bytes.clone(),
            acknowledged: false,
            timeout,
            next_at: now + timeout,
            give_up_at,
        });
        Some(bytes)
    }

    /// When [`Client::on_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding
            .iter()
            .map(|o| match o.acknowledged {
                true => o.give_up_at,
                false => o.next_at.min(o.give_up_at),
            })
            .min()
    }

    /// Retransmissions due at `now` (bytes and where), and the requests
    /// given up.
    pub fn on_timeout(&mut self, now: Instant) -> (Vec<(Vec<u8>, Peer)>, Vec<Outcome>) {
        let mut resend = Vec::new();
        let mut gave_up = Vec::new();
        self.outstanding.retain_mut(|o| {
            if now >= o.give_up_at {
                gave_up.push(Outcome::GaveUp {
                    command: o.command,
                    peer: o.peer.clone(),
                });
                return false;
            }
            if !o.acknowledged && now >= o.next_at {
                o.timeout *= 2;
                o.next_at = now + o.timeout;
                resend.push((o.bytes.clone(), o.peer.clone()));
            }
            true
        });
        (resend, gave_up)
    }

    /// A datagram from `peer`: an answer to one of our requests, or not.
    pub fn on_datagram(&mut self, peer: &Peer, datagram: &[u8]) -> Received {
        if self.outstanding.is_empty() {
            return Received::NotOurs;
        }
        let Ok(message) = wire::parse(datagram) else {
            return Received::NotOurs;
        };
        let header = message.header;
        let by_id = |o: &Outstanding| o.peer == *peer && o.message_id == header.message_id;
        match header.message_type {
            MessageType::Acknowledgement | MessageType::Reset => {
                let Some(i) = self.outstanding.iter().position(by_id) else {
                    return Received::NotOurs;
                };
                if header.message_type == MessageType::Reset {
                    let o = self.outstanding.swap_remove(i);
                    return Received::Ours {
                        ack: None,
                        outcome: Some(Outcome::Reset {
                            command: o.command,
                            peer: o.peer,
                        }),
                    };
                }
                if header.code == Code::EMPTY {
                    // A separate response will follow.
                    self.outstanding[i].acknowledged = true;
                    return Received::Ours {
                        ack: None,
                        outcome: None,
                    };
                }
                if message.token != self.outstanding[i].token {
                    return Received::NotOurs;
                }
                let o = self.outstanding.swap_remove(i);
                Received::Ours {
                    ack: None,
                    outcome: Some(answered(o, header.code, message.payload)),
                }
            }
            MessageType::Confirmable | MessageType::NonConfirmable
                if (2..=5).contains(&header.code.class()) =>
            {
                let Some(i) = self
                    .outstanding
                    .iter()
                    .position(|o| o.peer == *peer && o.token == message.token)
                else {
                    return Received::NotOurs;
                };
                let o = self.outstanding.swap_remove(i);
                let ack = (header.message_type == MessageType::Confirmable)
                    .then(|| wire::empty_message(MessageType::Acknowledgement, header.message_id));
                Received::Ours {
                    ack,
                    outcome: Some(answered(o, header.code, message.payload)),
                }
            }
            _ => Received::NotOurs,
        }
    }
}

fn answered(o: Outstanding, code: Code, payload: &[u8]) -> Outcome {
    Outcome::Answered {
        command: o.command,
        peer: o.peer,
        code: (code.class(), code.detail()),
        payload: payload.to_vec(),
    }
}

fn method_code(method: Method) -> Code {
    match method {
        Method::Get => Code::new(0, 1),
        Method::Post => Code::new(0, 2),
        Method::Put => Code::new(0, 3),
        Method::Delete => Code::new(0, 4),
        Method::Fetch => Code::new(0, 5),
        Method::Patch => Code::new(0, 6),
        Method::IPatch => Code::new(0, 7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::{MessageClass, Packet, ResponseType};

    fn device() -> Peer {
        Peer {
            addr: "192.0.2.5:5683".parse().expect("addr"),
            identity: None,
        }
    }

    fn request() -> Request {
        Request {
            command: 9,
            method: Method::Put,
            resource: "config/interval".into(),
            payload: b"60".to_vec(),
        }
    }

    fn token() -> Token {
        Token::new(&[1, 2, 3, 4]).expect("token")
    }

    fn reply(
        mtype: coap_lite::MessageType,
        mid: u16,
        token: &[u8],
        code: MessageClass,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_type(mtype);
        p.header.message_id = mid;
        p.header.code = code;
        p.set_token(token.to_vec());
        p.payload = payload.to_vec();
        p.to_bytes().expect("encodes")
    }

    #[test]
    fn the_request_is_what_a_device_reads() {
        let mut c = Client::new();
        let now = Instant::now();
        let bytes = c
            .send(
                device(),
                &request(),
                0x4000,
                token(),
                0.0,
                now,
                now + Duration::from_secs(30),
            )
            .expect("sent");
        let p = Packet::from_bytes(&bytes).expect("coap-lite reads it");
        assert_eq!(p.header.get_type(), coap_lite::MessageType::Confirmable);
        assert_eq!(
            p.header.code,
            MessageClass::Request(coap_lite::RequestType::Put)
        );
        assert_eq!(p.header.message_id, 0x4000);
        assert_eq!(p.get_token(), &[1, 2, 3, 4]);
        let path: Vec<Vec<u8>> = p
            .get_option(coap_lite::CoapOption::UriPath)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        assert_eq!(path, [b"config".to_vec(), b"interval".to_vec()]);
        assert_eq!(p.payload, b"60");
    }

    #[test]
    fn retransmissions_double_until_the_window_closes() {
        let mut c = Client::new();
        let t0 = Instant::now();
        let first = c
            .send(
                device(),
                &request(),
                1,
                token(),
                0.0,
                t0,
                t0 + Duration::from_secs(7),
            )
            .expect("sent");
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        let (resend, gave_up) = c.on_timeout(t0 + Duration::from_secs(2));
        assert_eq!((resend.len(), gave_up.len()), (1, 0));
        assert_eq!(resend[0].0, first, "the same bytes again");
        // Next after 4 s more: at 6 s.
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(6)));
        assert!(c.on_timeout(t0 + Duration::from_secs(5)).0.is_empty());
        let (_, gave_up) = c.on_timeout(t0 + Duration::from_secs(7));
        assert_eq!(
            gave_up,
            [Outcome::GaveUp {
                command: 9,
                peer: device()
            }]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn a_piggybacked_answer_settles_the_request() {
        let mut c = Client::new();
        let t0 = Instant::now();
        c.send(
            device(),
            &request(),
            7,
            token(),
            0.5,
            t0,
            t0 + Duration::from_secs(30),
        );
        let ack = reply(
            coap_lite::MessageType::Acknowledgement,
            7,
            &[1, 2, 3, 4],
            MessageClass::Response(ResponseType::Changed),
            b"ok",
        );
        let other = Peer {
            addr: "192.0.2.6:5683".parse().expect("addr"),
            identity: None,
        };
        assert_eq!(
            c.on_datagram(&other, &ack),
            Received::NotOurs,
            "another address"
        );
        assert_eq!(
            c.on_datagram(&device(), &ack),
            Received::Ours {
                ack: None,
                outcome: Some(Outcome::Answered {
                    command: 9,
                    peer: device(),
                    code: (2, 4),
                    payload: b"ok".to_vec()
                }),
            }
        );
        assert!(c.is_empty());
        assert_eq!(
            c.on_datagram(&device(), &ack),
            Received::NotOurs,
            "a duplicate ACK"
        );
    }

    #[test]
    fn an_empty_ack_stops_retransmission_and_a_separate_response_is_acknowledged() {
        let mut c = Client::new();
        let t0 = Instant::now();
        c.send(
            device(),
            &request(),
            7,
            token(),
            0.0,
            t0,
            t0 + Duration::from_secs(30),
        );
        let empty = wire::empty_message(MessageType::Acknowledgement, 7);
        assert_eq!(
            c.on_datagram(&device(), &empty),
            Received::Ours {
                ack: None,
                outcome: None
            }
        );
        assert!(
            c.on_timeout(t0 + Duration::from_secs(10)).0.is_empty(),
            "no resend once acknowledged"
        );
        let separate = reply(
            coap_lite::MessageType::Confirmable,
            0x9999,
            &[1, 2, 3, 4],
            MessageClass::Response(ResponseType::BadRequest),
            b"no",
        );
        match c.on_datagram(&device(), &separate) {
            Received::Ours {
                ack: Some(ack),
                outcome: Some(Outcome::Answered { code, .. }),
            } => {
                assert_eq!(code, (4, 0));
                assert_eq!(
                    ack,
                    wire::empty_message(MessageType::Acknowledgement, 0x9999)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reset_is_the_device_refusing_and_requests_of_devices_are_not_ours() {
        let mut c = Client::new();
        let t0 = Instant::now();
        c.send(
            device(),
            &request(),
            7,
            token(),
            0.0,
            t0,
            t0 + Duration::from_secs(30),
        );
        let post = reply(
            coap_lite::MessageType::Confirmable,
            7,
            &[1, 2, 3, 4],
            MessageClass::Request(coap_lite::RequestType::Post),
            b"21.5",
        );
        assert_eq!(c.on_datagram(&device(), &post), Received::NotOurs);
        let rst = wire::empty_message(MessageType::Reset, 7);
        assert_eq!(
            c.on_datagram(&device(), &rst),
            Received::Ours {
                ack: None,
                outcome: Some(Outcome::Reset {
                    command: 9,
                    peer: device()
                })
            }
        );
    }
}
