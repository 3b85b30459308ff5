//! The command mailbox as devices see it over CoAP (see `crate::command`):
//!
//! - `GET cmd` asks for the device's oldest pending command: 2.05 Content
//!   with the command's body, its id in Location-Path (`cmd/<id>`) and its
//!   resource in Location-Query; 4.04 when there is none.
//! - `POST cmd/<id>` (or PUT) reports on it: the body is the device's
//!   answer, an optional `code=4.00` query gives the device's own result
//!   code (2.04 by default; 2.xx means done, anything else failed); 2.04
//!   once recorded, 4.04 for a command that is not pending (a repeated
//!   report included).
//! - A piggybacked command rides on the 2.04 of an upload the same way.
//!
//! Over DTLS the device is its identity; over plain CoAP it names itself
//! with a `device=NAME` query (as it would be named by a route's
//! `{device}`). These requests are idempotent on the mailbox's side (a
//! command stays pending until reported, a second report finds nothing),
//! so they are answered afresh each time rather than remembered for
//! deduplication (RFC 7252 §4.5 allows that for idempotent requests), and
//! a lost answer is repaired by the device asking again.
//!
//! Parsing here; the mailbox itself is the daemon's (`Step::Mailbox`).

use super::exchange::Peer;
use super::wire::{option, Code};
use crate::route::Method;

/// What a device asks of its mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxRequest {
    Poll {
        device: Box<str>,
    },
    Report {
        device: Box<str>,
        id: u64,
        /// The device's own result code, "2.04".
        code: Box<str>,
        payload: Vec<u8>,
    },
}

impl MailboxRequest {
    pub fn device(&self) -> &str {
        match self {
            MailboxRequest::Poll { device } | MailboxRequest::Report { device, .. } => device,
        }
    }
}

/// A command as it travels to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub id: u64,
    pub resource: String,
    pub payload: Vec<u8>,
}

/// What the mailbox answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxAnswer {
    Command(Carried),
    Empty,
    Recorded,
    /// No such pending command.
    Unknown,
    Forbidden,
    /// The mailbox could not record it; ask again.
    Failed,
}

/// Reads a request under the mailbox path (`path[0]` is it); `Err` is the
/// code and diagnostic to answer at once.
pub fn read(
    peer: &Peer,
    method: Method,
    path: &[&str],
    query: &[&[u8]],
    payload: &[u8],
) -> Result<MailboxRequest, (Code, &'static str)> {
    let mut named = None;
    let mut code = None;
    for item in query {
        let Ok(item) = std::str::from_utf8(item) else {
            return Err((Code::BAD_REQUEST, "a query that is not UTF-8"));
        };
        match item.split_once('=') {
            Some(("device", name)) if !name.is_empty() => named = Some(name),
            Some(("code", c)) if is_code(c) => code = Some(c),
            Some(("code", _)) => return Err((Code::BAD_REQUEST, "code=C.DD, like code=2.04")),
            _ => {}
        }
    }
    let device: Box<str> = match (&peer.identity, named) {
        (Some(identity), Some(name)) if **identity != *name => {
            return Err((
                Code::FORBIDDEN,
                "device= names another device than the identity",
            ))
        }
        (Some(identity), _) => Box::from(&**identity),
        (None, Some(name)) => Box::from(name),
        (None, None) => {
            return Err((
                Code::BAD_REQUEST,
                "name the device: ?device=NAME (or use DTLS)",
            ))
        }
    };
    match (method, path) {
        (Method::Get, [_]) => Ok(MailboxRequest::Poll { device }),
        (Method::Post | Method::Put, [_, id]) => match id.parse::<u64>() {
            Ok(id) => Ok(MailboxRequest::Report {
                device,
                id,
                code: Box::from(code.unwrap_or("2.04")),
                payload: payload.to_vec(),
            }),
            Err(_) => Err((Code::NOT_FOUND, "no such command")),
        },
        (_, [_] | [_, _]) => Err((Code::METHOD_NOT_ALLOWED, "GET cmd, or POST cmd/<id>")),
        _ => Err((Code::NOT_FOUND, "GET cmd, or POST cmd/<id>")),
    }
}

fn is_code(c: &str) -> bool {
    let b = c.as_bytes();
    b.len() == 4 && b[0].is_ascii_digit() && b[1] == b'.' && b[2..].iter().all(u8::is_ascii_digit)
}

/// The options of a carried command, in number order: Location-Path
/// `<mailbox>/<id>`, Location-Query `<resource>`.
pub fn location(mailbox: &str, carried: &Carried) -> Vec<(u16, Vec<u8>)> {
    vec![
        (option::LOCATION_PATH, mailbox.as_bytes().to_vec()),
        (option::LOCATION_PATH, carried.id.to_string().into_bytes()),
        (option::LOCATION_QUERY, carried.resource.as_bytes().to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn plain() -> Peer {
        Peer {
            addr: "192.0.2.1:5683".parse().expect("addr"),
            identity: None,
        }
    }

    #[test]
    fn a_poll_names_its_device_by_query_or_identity() {
        assert_eq!(
            read(&plain(), Method::Get, &["cmd"], &[b"device=v1"], b""),
            Ok(MailboxRequest::Poll {
                device: "v1".into()
            })
        );
        assert_eq!(
            read(&plain(), Method::Get, &["cmd"], &[], b"")
                .unwrap_err()
                .0,
            Code::BAD_REQUEST
        );
        let dtls = Peer {
            identity: Some(Arc::from("v2")),
            ..plain()
        };
        assert_eq!(
            read(&dtls, Method::Get, &["cmd"], &[], b""),
            Ok(MailboxRequest::Poll {
                device: "v2".into()
            })
        );
        assert_eq!(
            read(&dtls, Method::Get, &["cmd"], &[b"device=v1"], b"")
                .unwrap_err()
                .0,
            Code::FORBIDDEN
        );
    }

    #[test]
    fn a_report_carries_the_id_code_and_body() {
        assert_eq!(
            read(
                &plain(),
                Method::Post,
                &["cmd", "7"],
                &[b"device=v1", b"code=4.00"],
                b"no"
            ),
            Ok(MailboxRequest::Report {
                device: "v1".into(),
                id: 7,
                code: "4.00".into(),
                payload: b"no".to_vec(),
            })
        );
        let q: &[&[u8]] = &[b"device=v1"];
        assert_eq!(
            read(&plain(), Method::Post, &["cmd", "x"], q, b"")
                .unwrap_err()
                .0,
            Code::NOT_FOUND
        );
        assert_eq!(
            read(&plain(), Method::Delete, &["cmd"], q, b"")
                .unwrap_err()
                .0,
            Code::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            read(&plain(), Method::Get, &["cmd", "1", "2"], q, b"")
                .unwrap_err()
                .0,
            Code::NOT_FOUND
        );
        assert_eq!(
            read(
                &plain(),
                Method::Post,
                &["cmd", "1"],
                &[b"device=v1", b"code=ok"],
                b""
            )
            .unwrap_err()
            .0,
            Code::BAD_REQUEST
        );
    }
}
