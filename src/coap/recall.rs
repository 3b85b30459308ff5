//! Deduplication that survives a restart.
//!
//! A device that got no 2.04 (the answer was lost, or the gateway died
//! after the flush and before the answer left) retransmits its Confirmable
//! request with the same Message ID for up to EXCHANGE_LIFETIME. The
//! in-memory deduplication table dies with the process, so without help a
//! retransmission after a kill -9 or a power cut would be stored a second
//! time. So every stored request carries a [`Recall`]: what the table must
//! know to recognise a retransmission and answer it again (the peer, the
//! Message ID, the token, the Block1 to echo, No-Response). The store
//! writes it in the same commit as the message; at start-up the daemon hands
//! the recent ones back to each exchange ([`super::Exchange::recall`]), which
//! rebuilds the exact 2.04 it sent.
//!
//! The encoding is the store's business only as opaque bytes; it is
//! versioned (first byte) so a newer daemon can read an older queue's.
//!
//! Layout of version 1 (integers big-endian):
//! `1 | flags | no_response | message_id: u16 | port: u16 | ip (4 or 16) |
//!  token_len: u8 | token | [block1: u32] | [identity_len: u16 | identity]`
//! flags: bit 0 Confirmable, bit 1 IPv6, bit 2 Block1 present, bit 3
//! identity present.

use super::exchange::Peer;
use super::wire::Token;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

const VERSION_1: u8 = 1;
const CONFIRMABLE: u8 = 1;
const IPV6: u8 = 2;
const BLOCK1: u8 = 4;
const IDENTITY: u8 = 8;

/// What deduplication must know of one stored request after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recall {
    pub peer: Peer,
    pub message_id: u16,
    pub confirmable: bool,
    pub token: Token,
    /// The Block1 value the 2.04 echoed (the last block of an upload).
    pub block1: Option<u32>,
    /// The request's No-Response mask.
    pub no_response: u8,
}

impl Recall {
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.confirmable {
            flags |= CONFIRMABLE;
        }
        if self.peer.addr.is_ipv6() {
            flags |= IPV6;
        }
        if self.block1.is_some() {
            flags |= BLOCK1;
        }
        if self.peer.identity.is_some() {
            flags |= IDENTITY;
        }
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&[VERSION_1, flags, self.no_response]);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.peer.addr.port().to_be_bytes());
        match self.peer.addr.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        let token = self.token.as_bytes();
        out.push(token.len() as u8);
        out.extend_from_slice(token);
        if let Some(block1) = self.block1 {
            out.extend_from_slice(&block1.to_be_bytes());
        }
        if let Some(identity) = &self.peer.identity {
            // Identities are at most a few hundred bytes (PSK identities,
            // certificate CNs); a longer one is cut, which only means a
            // retransmission from it is not recognised.
            let bytes = &identity.as_bytes()[..identity.len().min(usize::from(u16::MAX))];
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// `None` for bytes this version cannot read (a newer format, damage).
    pub fn decode(bytes: &[u8]) -> Option<Recall> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION_1 {
            return None;
        }
        let flags = r.u8()?;
        let no_response = r.u8()?;
        let message_id = r.u16()?;
        let port = r.u16()?;
        let ip = if flags & IPV6 != 0 {
            let octets: [u8; 16] = r.take(16)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            let octets: [u8; 4] = r.take(4)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(octets))
        };
        let token_len = usize::from(r.u8()?);
        let token = Token::new(r.take(token_len)?)?;
        let block1 = match flags & BLOCK1 != 0 {
            true => Some(u32::from_be_bytes(r.take(4)?.try_into().ok()?)),
            false => None,
        };
        let identity = match flags & IDENTITY != 0 {
            true => {
                let len = usize::from(r.u16()?);
                let text = std::str::from_utf8(r.take(len)?).ok()?;
                Some(Arc::<str>::from(text))
            }
            false => None,
        };
        if !r.0.is_empty() {
            return None;
        }
        Some(Recall {
            peer: Peer {
                addr: SocketAddr::new(ip, port),
                identity,
            },
            message_id,
            confirmable: flags & CONFIRMABLE != 0,
            token,
            block1,
            no_response,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recall(addr: &str, identity: Option<&str>, block1: Option<u32>) -> Recall {
        Recall {
            peer: Peer {
                addr: addr.parse().expect("address"),
                identity: identity.map(Arc::from),
            },
            message_id: 0xbeef,
            confirmable: true,
            token: Token::new(&[1, 2, 3, 4, 5, 6, 7, 8]).expect("token"),
            block1,
            no_response: 2,
        }
    }

    #[test]
    fn round_trips_ipv4_ipv6_identity_and_block1() {
        for r in [
            recall("192.0.2.1:5683", None, None),
            recall("[2001:db8::1]:61616", Some("sensor-01"), Some(0x1e)),
            recall("10.1.2.3:1", Some(""), Some(0)),
        ] {
            assert_eq!(Recall::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn an_ipv4_recall_without_identity_is_small() {
        assert_eq!(recall("192.0.2.1:5683", None, None).encode().len(), 20);
    }

    #[test]
    fn truncated_extended_or_newer_bytes_are_refused_not_a_panic() {
        let bytes = recall("[2001:db8::1]:5683", Some("dev"), Some(7)).encode();
        for len in 0..bytes.len() {
            assert_eq!(Recall::decode(&bytes[..len]), None, "len {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Recall::decode(&longer), None);
        let mut newer = bytes;
        newer[0] = 2;
        assert_eq!(Recall::decode(&newer), None);
    }
}
