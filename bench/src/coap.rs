//! Just enough CoAP (RFC 7252) for a load generator: build requests, read
//! the header and token of responses.
//!
//! Written independently of the daemon's codec on purpose: a benchmark that
//! shared the daemon's parser would not notice the daemon and the client
//! agreeing on a mistake.

/// Message types (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Con = 0,
    Non = 1,
    Ack = 2,
    Rst = 3,
}

impl MsgType {
    fn from_bits(bits: u8) -> MsgType {
        match bits & 3 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        }
    }
}

pub const CODE_EMPTY: u8 = 0x00;
pub const CODE_POST: u8 = 0x02;
pub const CODE_PUT: u8 = 0x03;
/// 2.04 Changed.
pub const CODE_CHANGED: u8 = 0x44;

const OPTION_URI_PATH: u16 = 11;
/// RFC 7967.
const OPTION_NO_RESPONSE: u16 = 258;
const OPTION_CONTENT_FORMAT: u16 = 12;
/// No-Response value suppressing 2.xx, 4.xx and 5.xx.
pub const NO_RESPONSE_ALL: u8 = 2 | 8 | 16;

/// A request to encode.
pub struct Request<'a> {
    pub mtype: MsgType,
    pub code: u8,
    pub mid: u16,
    pub token: &'a [u8],
    pub path: &'a [&'a str],
    pub no_response: Option<u8>,
    /// Content-Format (12), when set.
    pub content_format: Option<u16>,
    pub payload: &'a [u8],
}

impl Request<'_> {
    /// Appends the encoded request to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        debug_assert!(self.token.len() <= 8);
        out.push(0x40 | ((self.mtype as u8) << 4) | self.token.len() as u8);
        out.push(self.code);
        out.extend_from_slice(&self.mid.to_be_bytes());
        out.extend_from_slice(self.token);
        let mut last = 0u16;
        for segment in self.path {
            put_option(out, &mut last, OPTION_URI_PATH, segment.as_bytes());
        }
        if let Some(format) = self.content_format {
            let bytes = format.to_be_bytes();
            let skip = usize::from(format < 256) + usize::from(format == 0);
            put_option(out, &mut last, OPTION_CONTENT_FORMAT, &bytes[skip..]);
        }
        if let Some(bits) = self.no_response {
            put_option(out, &mut last, OPTION_NO_RESPONSE, &[bits]);
        }
        if !self.payload.is_empty() {
            out.push(0xFF);
            out.extend_from_slice(self.payload);
        }
    }
}

/// An empty message (ping, ACK or RST).
pub fn empty(mtype: MsgType, mid: u16) -> [u8; 4] {
    let [hi, lo] = mid.to_be_bytes();
    [0x40 | ((mtype as u8) << 4), CODE_EMPTY, hi, lo]
}

fn put_option(out: &mut Vec<u8>, last: &mut u16, number: u16, value: &[u8]) {
    let delta = number - *last;
    *last = number;
    let (d, d_ext) = nibble(delta as usize);
    let (l, l_ext) = nibble(value.len());
    out.push((d << 4) | l);
    out.extend_from_slice(&d_ext);
    out.extend_from_slice(&l_ext);
    out.extend_from_slice(value);
}

/// The 4-bit field and its extension bytes for an option delta or length.
fn nibble(n: usize) -> (u8, Vec<u8>) {
    match n {
        0..=12 => (n as u8, Vec::new()),
        13..=268 => (13, vec![(n - 13) as u8]),
        _ => (14, ((n - 269) as u16).to_be_bytes().to_vec()),
    }
}

/// The parts of a received message the load generator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub mtype: MsgType,
    pub code: u8,
    pub mid: u16,
    pub token: &'a [u8],
}

/// Reads the fixed header and token; `None` if the datagram is not CoAP.
pub fn parse_header(datagram: &[u8]) -> Option<Header<'_>> {
    let first = *datagram.first()?;
    if first >> 6 != 1 {
        return None;
    }
    let tkl = usize::from(first & 0x0F);
    if tkl > 8 || datagram.len() < 4 + tkl {
        return None;
    }
    Some(Header {
        mtype: MsgType::from_bits(first >> 4),
        code: datagram[1],
        mid: u16::from_be_bytes([datagram[2], datagram[3]]),
        token: &datagram[4..4 + tkl],
    })
}

/// The payload of a well-formed message (after the options), empty if
/// none; `None` when the options run past the end.
pub fn payload(datagram: &[u8]) -> Option<&[u8]> {
    let h = parse_header(datagram)?;
    let mut at = 4 + h.token.len();
    while at < datagram.len() {
        let byte = datagram[at];
        if byte == 0xFF {
            return Some(&datagram[at + 1..]);
        }
        at += 1;
        let mut read = |nibble: u8| -> Option<usize> {
            Some(match nibble {
                0..=12 => usize::from(nibble),
                13 => {
                    at += 1;
                    usize::from(*datagram.get(at - 1)?) + 13
                }
                14 => {
                    at += 2;
                    usize::from(u16::from_be_bytes([
                        *datagram.get(at - 2)?,
                        *datagram.get(at - 1)?,
                    ])) + 269
                }
                _ => return None,
            })
        };
        read(byte >> 4)?;
        let len = read(byte & 0x0F)?;
        at += len;
    }
    (at == datagram.len()).then_some(&[][..])
}

/// An ACK with a code and no payload: the answer to a pushed request.
pub fn ack(mid: u16, token: &[u8], code: u8) -> Vec<u8> {
    let mut out = vec![0x40 | ((MsgType::Ack as u8) << 4) | token.len() as u8, code];
    out.extend_from_slice(&mid.to_be_bytes());
    out.extend_from_slice(token);
    out
}

/// "2.04" for 0x44.
pub fn code_name(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 0x1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_its_header_and_token() {
        let mut out = Vec::new();
        Request {
            mtype: MsgType::Con,
            code: CODE_POST,
            mid: 0x1234,
            token: &[1, 2, 3, 4],
            path: &["bench", "r1", "d17"],
            no_response: None,
            content_format: None,
            payload: b"hello",
        }
        .encode_into(&mut out);
        let h = parse_header(&out).unwrap();
        assert_eq!(h.mtype, MsgType::Con);
        assert_eq!(h.code, CODE_POST);
        assert_eq!(h.mid, 0x1234);
        assert_eq!(h.token, &[1, 2, 3, 4]);
        assert_eq!(&out[8..14], b"\xB5bench");
        assert!(out.ends_with(b"\xFFhello"));
    }

    #[test]
    fn no_response_uses_an_extended_delta() {
        let mut out = Vec::new();
        Request {
            mtype: MsgType::Non,
            code: CODE_PUT,
            mid: 1,
            token: &[],
            path: &["a"],
            no_response: Some(NO_RESPONSE_ALL),
            content_format: None,
            payload: b"",
        }
        .encode_into(&mut out);
        // Uri-Path "a" (delta 11), then No-Response: delta 247 = 13 + 234.
        assert_eq!(&out[4..], &[0xB1, b'a', 0xD1, 234, NO_RESPONSE_ALL]);
    }

    #[test]
    fn the_payload_follows_the_options() {
        let mut out = Vec::new();
        Request {
            mtype: MsgType::Con,
            code: CODE_PUT,
            mid: 7,
            token: &[9],
            path: &["a-rather-long-resource-name", "x"],
            no_response: None,
            content_format: None,
            payload: b"1700000000000000",
        }
        .encode_into(&mut out);
        assert_eq!(payload(&out), Some(&b"1700000000000000"[..]));
        assert_eq!(payload(&out[..out.len() - 17]), Some(&b""[..]));
        assert_eq!(payload(&out[..10]), None);
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert_eq!(parse_header(&[0x00, 0, 0, 0]), None);
        assert_eq!(parse_header(&[0x48, 0x44, 0]), None);
        assert_eq!(code_name(CODE_CHANGED), "2.04");
    }
}
