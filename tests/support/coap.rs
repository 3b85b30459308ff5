//! An independent, minimal CoAP (RFC 7252) client for the tests: this file
//! is the message codec written from the RFC; the client with RFC
//! retransmission and the bulk senders live in coap_client.rs and are
//! re-exported here, so tests use `support::coap::*` for both.
//!
//! Why hand-written: the daemon parses with coap-lite; a test client built
//! on the same crate would share its bugs and agree with them. This one
//! shares nothing with the daemon. It encodes whatever it is told (options
//! are only sorted, never validated) so tests can also send nonsense; use
//! [`CoapClient::send_raw`] for datagrams that are not even that.
//!
//! Message layout (RFC 7252 §3):
//! ```text
//!  0                   1                   2                   3
//! |Ver| T |  TKL  |      Code     |          Message ID           |
//! |   Token (TKL bytes) ...  |  Options ...  | 0xFF |  Payload ...
//! ```
//! Each option is a byte `delta:4 | length:4`, then extended delta, then
//! extended length (nibble 13: one byte + 13; nibble 14: two bytes + 269;
//! nibble 15: reserved, only valid as the 0xFF payload marker), then value.

use std::fmt;

// Each test uses a few of these; unused ones are not an error.
#[allow(unused_imports)]
pub use super::coap_client::{
    send_con_stream, send_con_stream_with, send_non_stream, CoapClient, ConOutcome, StreamReport,
    Transmission,
};

/// CoAP option numbers used by the tests (RFC 7252 §12.2, RFC 7959, RFC 7967).
pub mod option {
    pub const IF_MATCH: u16 = 1;
    pub const URI_HOST: u16 = 3;
    pub const ETAG: u16 = 4;
    pub const IF_NONE_MATCH: u16 = 5;
    pub const OBSERVE: u16 = 6;
    pub const URI_PORT: u16 = 7;
    pub const LOCATION_PATH: u16 = 8;
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
    pub const ACCEPT: u16 = 17;
    pub const LOCATION_QUERY: u16 = 20;
    pub const BLOCK2: u16 = 23;
    pub const BLOCK1: u16 = 27;
    pub const SIZE2: u16 = 28;
    pub const PROXY_URI: u16 = 35;
    pub const PROXY_SCHEME: u16 = 39;
    pub const SIZE1: u16 = 60;
    pub const NO_RESPONSE: u16 = 258;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Con,
    Non,
    Ack,
    Rst,
}

impl MsgType {
    fn bits(self) -> u8 {
        match self {
            MsgType::Con => 0,
            MsgType::Non => 1,
            MsgType::Ack => 2,
            MsgType::Rst => 3,
        }
    }

    fn from_bits(bits: u8) -> MsgType {
        match bits & 0b11 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        }
    }
}

/// A code `class.detail`, stored as the wire byte `class << 5 | detail`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

impl Code {
    pub const EMPTY: Code = Code(0);
    pub const GET: Code = Code(1);
    pub const POST: Code = Code(2);
    pub const PUT: Code = Code(3);
    pub const DELETE: Code = Code(4);
    pub const CREATED: Code = Code::new(2, 1);
    pub const CHANGED: Code = Code::new(2, 4);
    pub const CONTINUE: Code = Code::new(2, 31);

    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1f))
    }

    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// 2.xx
    pub fn is_success(self) -> bool {
        self.class() == 2
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a datagram is not a CoAP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort(usize),
    BadVersion(u8),
    BadTokenLength(u8),
    /// An Empty (0.00) message with a token or bytes after the header.
    EmptyWithContent,
    /// Nibble 15 in an option header that is not the 0xFF payload marker.
    ReservedNibble {
        offset: usize,
    },
    Truncated {
        offset: usize,
    },
    OptionNumberOverflow {
        offset: usize,
    },
    /// RFC 7252 §3: a marker followed by a zero-length payload is an error.
    EmptyPayloadAfterMarker,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for DecodeError {}

/// One CoAP message, request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub mtype: MsgType,
    pub code: Code,
    pub mid: u16,
    pub token: Vec<u8>,
    /// (number, value) in the order given; [`Message::encode`] sorts them
    /// stably by number, as the delta encoding requires.
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn new(mtype: MsgType, code: Code, mid: u16, token: &[u8]) -> Message {
        Message {
            mtype,
            code,
            mid,
            token: token.to_vec(),
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// An Empty message (code 0.00, no token): ping, empty ACK, RST.
    pub fn empty(mtype: MsgType, mid: u16) -> Message {
        Message::new(mtype, Code::EMPTY, mid, &[])
    }

    pub fn with_option(mut self, number: u16, value: impl Into<Vec<u8>>) -> Message {
        self.options.push((number, value.into()));
        self
    }

    pub fn with_options(mut self, options: impl IntoIterator<Item = (u16, Vec<u8>)>) -> Message {
        self.options.extend(options);
        self
    }

    /// Appends one Uri-Path option per segment.
    pub fn with_path<S: AsRef<str>>(self, segments: &[S]) -> Message {
        self.with_options(uri_path(segments))
    }

    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Message {
        self.payload = payload.into();
        self
    }

    /// The first value of option `number`.
    pub fn option(&self, number: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, v)| v.as_slice())
    }

    /// All values of option `number`, in order.
    pub fn option_values(&self, number: u16) -> Vec<&[u8]> {
        self.options
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Uri-Path segments (lossy UTF-8).
    pub fn path(&self) -> Vec<String> {
        self.option_values(option::URI_PATH)
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn block1(&self) -> Option<Block> {
        self.option(option::BLOCK1).and_then(Block::decode)
    }

    pub fn block2(&self) -> Option<Block> {
        self.option(option::BLOCK2).and_then(Block::decode)
    }

    /// The wire bytes. Panics on what cannot be encoded at all (token > 8
    /// bytes, option value > 65804 bytes): those are bugs in the test.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.token.len() <= 8,
            "CoAP token longer than 8 bytes: {}",
            self.token.len()
        );
        let mut out = Vec::with_capacity(4 + self.token.len() + self.payload.len() + 16);
        out.push((1 << 6) | (self.mtype.bits() << 4) | self.token.len() as u8);
        out.push(self.code.0);
        out.extend_from_slice(&self.mid.to_be_bytes());
        out.extend_from_slice(&self.token);
        let mut options: Vec<&(u16, Vec<u8>)> = self.options.iter().collect();
        options.sort_by_key(|(number, _)| *number);
        let mut previous = 0u16;
        for (number, value) in options {
            let (delta_nibble, delta_ext) = nibble(u32::from(number - previous));
            let (length_nibble, length_ext) = nibble(value.len() as u32);
            out.push((delta_nibble << 4) | length_nibble);
            out.extend_from_slice(&delta_ext);
            out.extend_from_slice(&length_ext);
            out.extend_from_slice(value);
            previous = *number;
        }
        if !self.payload.is_empty() {
            out.push(0xff);
            out.extend_from_slice(&self.payload);
        }
        out
    }

    /// Parses a datagram strictly (see [`DecodeError`]); never panics.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() < 4 {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        let version = bytes[0] >> 6;
        if version != 1 {
            return Err(DecodeError::BadVersion(version));
        }
        let mtype = MsgType::from_bits(bytes[0] >> 4);
        let tkl = bytes[0] & 0x0f;
        if tkl > 8 {
            return Err(DecodeError::BadTokenLength(tkl));
        }
        let code = Code(bytes[1]);
        let mid = u16::from_be_bytes([bytes[2], bytes[3]]);
        let token_end = 4 + usize::from(tkl);
        let token = bytes
            .get(4..token_end)
            .ok_or(DecodeError::Truncated { offset: 4 })?
            .to_vec();
        if code == Code::EMPTY && bytes.len() > 4 {
            return Err(DecodeError::EmptyWithContent);
        }

        let mut message = Message::new(mtype, code, mid, &token);
        let mut at = token_end;
        let mut number = 0u32;
        while at < bytes.len() {
            let header = bytes[at];
            if header == 0xff {
                let payload = &bytes[at + 1..];
                if payload.is_empty() {
                    return Err(DecodeError::EmptyPayloadAfterMarker);
                }
                message.payload = payload.to_vec();
                return Ok(message);
            }
            let offset = at;
            at += 1;
            let delta = read_extended(bytes, &mut at, header >> 4, offset)?;
            let length = read_extended(bytes, &mut at, header & 0x0f, offset)? as usize;
            number += delta;
            let number16 =
                u16::try_from(number).map_err(|_| DecodeError::OptionNumberOverflow { offset })?;
            let value = bytes
                .get(at..at + length)
                .ok_or(DecodeError::Truncated { offset })?;
            message.options.push((number16, value.to_vec()));
            at += length;
        }
        Ok(message)
    }
}

/// Splits a delta or length into its 4-bit nibble and extension bytes.
fn nibble(value: u32) -> (u8, Vec<u8>) {
    match value {
        0..=12 => (value as u8, Vec::new()),
        13..=268 => (13, vec![(value - 13) as u8]),
        269..=65804 => (14, ((value - 269) as u16).to_be_bytes().to_vec()),
        _ => panic!("CoAP option delta or length {value} exceeds 65804"),
    }
}

fn read_extended(
    bytes: &[u8],
    at: &mut usize,
    nibble: u8,
    offset: usize,
) -> Result<u32, DecodeError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let b = *bytes.get(*at).ok_or(DecodeError::Truncated { offset })?;
            *at += 1;
            Ok(u32::from(b) + 13)
        }
        14 => {
            let b = bytes
                .get(*at..*at + 2)
                .ok_or(DecodeError::Truncated { offset })?;
            *at += 2;
            Ok(u32::from(u16::from_be_bytes([b[0], b[1]])) + 269)
        }
        _ => Err(DecodeError::ReservedNibble { offset }),
    }
}

/// An unsigned option value in the fewest bytes (0 is the empty value).
pub fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(4);
    bytes[first..].to_vec()
}

/// `None` for values longer than 4 bytes.
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// One Uri-Path option per segment.
pub fn uri_path<S: AsRef<str>>(segments: &[S]) -> Vec<(u16, Vec<u8>)> {
    segments
        .iter()
        .map(|s| (option::URI_PATH, s.as_ref().as_bytes().to_vec()))
        .collect()
}

pub fn content_format(format: u16) -> (u16, Vec<u8>) {
    (option::CONTENT_FORMAT, encode_uint(u32::from(format)))
}

/// No-Response (RFC 7967): bit 2 (2) suppresses 2.xx, bit 4 (8) 4.xx, bit 5 (16) 5.xx.
pub fn no_response(mask: u8) -> (u16, Vec<u8>) {
    (option::NO_RESPONSE, encode_uint(u32::from(mask)))
}

pub fn block1(num: u32, more: bool, szx: u8) -> (u16, Vec<u8>) {
    (option::BLOCK1, Block { num, more, szx }.encode())
}

/// A Block1/Block2 value (RFC 7959 §2.2): `NUM << 4 | M << 3 | SZX`, block
/// size `2^(SZX + 4)` (SZX 0..=6: 16..=1024 bytes; 7 is reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

impl Block {
    pub fn size(self) -> usize {
        1 << (u32::from(self.szx) + 4)
    }

    pub fn encode(self) -> Vec<u8> {
        assert!(
            self.num < (1 << 20),
            "block number {} needs more than 20 bits",
            self.num
        );
        encode_uint((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 0x07))
    }

    /// `None` if the value is longer than 3 bytes.
    pub fn decode(value: &[u8]) -> Option<Block> {
        if value.len() > 3 {
            return None;
        }
        let v = decode_uint(value)?;
        Some(Block {
            num: v >> 4,
            more: v & 0x08 != 0,
            szx: (v & 0x07) as u8,
        })
    }
}
