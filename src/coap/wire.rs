//! The CoAP message format (RFC 7252 §3): reading one datagram in place, and
//! writing the few small responses the gateway ever sends.
//!
//! Why not coap-lite's `Packet::from_bytes`: it accepts version != 1 and a
//! payload marker with nothing after it, copies every option into a map of
//! linked lists (losing their order), and does not say what was wrong. The
//! exchange needs the header of a broken message (to reset a Confirmable
//! one), the exact error (to count it), and the options in order (RFC 7252
//! §5.4.5 repetition rules), so it reads the bytes itself. The tests build
//! their requests with coap-lite, which keeps this reader honest against an
//! independent encoder.
//!
//! Invariants:
//! - [`parse`] never panics and never allocates: every index is checked.
//! - A [`CoapMessage`] returned by [`parse`] has a well-formed option
//!   sequence, so [`CoapMessage::options`] yields every option, in order, and
//!   ends exactly where the payload begins.
//! - A [`Response`] encodes to at most [`MAX_RESPONSE_LEN`] bytes: no
//!   payload, a token of at most 8 bytes and three small uint options.

use std::fmt;

/// The only CoAP version (RFC 7252 §3).
pub const VERSION: u8 = 1;
/// Token lengths 9-15 are reserved (RFC 7252 §3).
pub const MAX_TOKEN_LEN: usize = 8;
/// Header 4 + token 8 + Max-Age 2+4 + Block1 2+3 + Size1 2+4 (each option
/// number is 13 or more past the previous one: one extended delta byte).
pub const MAX_RESPONSE_LEN: usize = 29;
const HEADER_LEN: usize = 4;
const PAYLOAD_MARKER: u8 = 0xFF;

/// The option numbers the gateway knows (RFC 7252 §5.10, RFC 7959 §2.1,
/// RFC 7967 §2). Odd numbers are critical (§5.4.1).
pub mod option {
    pub const IF_MATCH: u16 = 1;
    pub const URI_HOST: u16 = 3;
    pub const IF_NONE_MATCH: u16 = 5;
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
    pub const PROXY_URI: u16 = 35;
    pub const PROXY_SCHEME: u16 = 39;
    pub const SIZE1: u16 = 60;
    pub const NO_RESPONSE: u16 = 258;

    /// A recipient that does not understand a critical option must not
    /// process the message (RFC 7252 §5.4.1).
    pub fn is_critical(number: u16) -> bool {
        number & 1 == 1
    }
}

/// The message type (RFC 7252 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Confirmable,
    NonConfirmable,
    Acknowledgement,
    Reset,
}

impl MessageType {
    fn from_bits(bits: u8) -> MessageType {
        match bits & 0b11 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }

    fn bits(self) -> u8 {
        match self {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        }
    }
}

/// A message code: a 3-bit class and a 5-bit detail, written `c.dd`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(u8);

impl Code {
    pub const EMPTY: Code = Code::new(0, 0);
    pub const CHANGED: Code = Code::new(2, 4);
    pub const CONTENT: Code = Code::new(2, 5);
    pub const CONTINUE: Code = Code::new(2, 31);
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    pub const BAD_OPTION: Code = Code::new(4, 2);
    pub const FORBIDDEN: Code = Code::new(4, 3);
    pub const NOT_FOUND: Code = Code::new(4, 4);
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);

    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 0b111) << 5) | (detail & 0b1_1111))
    }

    pub const fn from_byte(byte: u8) -> Code {
        Code(byte)
    }

    pub const fn byte(self) -> u8 {
        self.0
    }

    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    pub const fn detail(self) -> u8 {
        self.0 & 0b1_1111
    }

    /// Class 0 with a non-zero detail: a method code (RFC 7252 §12.1.1).
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
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

/// The fixed 4-byte header, once the version is known to be 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub message_type: MessageType,
    pub code: Code,
    pub message_id: u16,
}

/// A token of 0 to 8 bytes, kept inline so tickets stay small and `Copy`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Token {
    bytes: [u8; MAX_TOKEN_LEN],
    len: u8,
}

impl Token {
    /// `None` when longer than 8 bytes.
    pub fn new(bytes: &[u8]) -> Option<Token> {
        let mut token = Token::default();
        token.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        token.len = bytes.len() as u8;
        Some(token)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// Why a datagram is not a CoAP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not even a header: there is nobody to answer (RFC 7252 §4.2).
    #[error("{0} bytes is shorter than the 4-byte CoAP header")]
    TooShort(usize),
    /// Must be silently ignored (RFC 7252 §3).
    #[error("CoAP version {0}; only version 1 exists")]
    WrongVersion(u8),
    /// A message format error after a valid header: a Confirmable message is
    /// rejected with a Reset carrying `header.message_id` (RFC 7252 §4.2).
    #[error("message {}: {error}", header.message_id)]
    Format { header: Header, error: FormatError },
}

/// A message format error (RFC 7252 §3, §3.1, §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("token length {0} is reserved; 0 to 8 are allowed")]
    ReservedTokenLength(u8),
    #[error("the datagram ends inside the token")]
    TruncatedToken,
    #[error("option delta 15 is reserved outside the payload marker")]
    ReservedOptionDelta,
    #[error("option length 15 is reserved")]
    ReservedOptionLength,
    #[error("the datagram ends inside an option")]
    TruncatedOption,
    #[error("option number beyond 65535")]
    OptionNumberOverflow,
    #[error("a payload marker with no payload after it")]
    EmptyPayload,
    #[error("an empty message (code 0.00) carrying a token, options or a payload")]
    NonEmptyEmptyMessage,
}

/// One datagram read as a CoAP message; borrows the datagram.
#[derive(Debug, Clone, Copy)]
pub struct CoapMessage<'a> {
    pub header: Header,
    pub token: Token,
    options: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> CoapMessage<'a> {
    /// The options in wire order, as (number, value).
    pub fn options(&self) -> Options<'a> {
        Options {
            bytes: self.options,
            position: 0,
            number: 0,
        }
    }
}

/// Reads a datagram. See [`ParseError`] for what each failure means.
pub fn parse(datagram: &[u8]) -> Result<CoapMessage<'_>, ParseError> {
    let [first, code, id_high, id_low] = match datagram.get(..HEADER_LEN) {
        Some(&[a, b, c, d]) => [a, b, c, d],
        _ => return Err(ParseError::TooShort(datagram.len())),
    };
    let version = first >> 6;
    if version != VERSION {
        return Err(ParseError::WrongVersion(version));
    }
    let header = Header {
        message_type: MessageType::from_bits(first >> 4),
        code: Code::from_byte(code),
        message_id: u16::from_be_bytes([id_high, id_low]),
    };
    let format_error = |error| ParseError::Format { header, error };

    let token_len = first & 0x0F;
    if usize::from(token_len) > MAX_TOKEN_LEN {
        return Err(format_error(FormatError::ReservedTokenLength(token_len)));
    }
    if header.code == Code::EMPTY && datagram.len() > HEADER_LEN {
        return Err(format_error(FormatError::NonEmptyEmptyMessage));
    }
    let token_end = HEADER_LEN + usize::from(token_len);
    let token = datagram
        .get(HEADER_LEN..token_end)
        .and_then(Token::new)
        .ok_or(format_error(FormatError::TruncatedToken))?;

    let rest = &datagram[token_end..];
    let mut walk = Options {
        bytes: rest,
        position: 0,
        number: 0,
    };
    while walk.read().map_err(format_error)?.is_some() {}
    let options_end = walk.position;
    let payload = match rest.get(options_end..) {
        Some([PAYLOAD_MARKER]) => return Err(format_error(FormatError::EmptyPayload)),
        Some([PAYLOAD_MARKER, payload @ ..]) => payload,
        _ => &[],
    };
    Ok(CoapMessage {
        header,
        token,
        options: &rest[..options_end],
        payload,
    })
}

/// Walks a sequence of options (RFC 7252 §3.1).
#[derive(Debug, Clone)]
pub struct Options<'a> {
    bytes: &'a [u8],
    position: usize,
    number: u16,
}

impl<'a> Options<'a> {
    /// The next option; `None` at the end of the bytes or at the payload
    /// marker, where `position` is left.
    fn read(&mut self) -> Result<Option<(u16, &'a [u8])>, FormatError> {
        let first = match self.bytes.get(self.position) {
            None | Some(&PAYLOAD_MARKER) => return Ok(None),
            Some(&byte) => byte,
        };
        let mut at = self.position + 1;
        let delta = self.extended(&mut at, first >> 4, FormatError::ReservedOptionDelta)?;
        let length = self.extended(&mut at, first & 0x0F, FormatError::ReservedOptionLength)?;
        let number = u16::try_from(u32::from(self.number) + delta)
            .map_err(|_| FormatError::OptionNumberOverflow)?;
        let end = at + length as usize;
        let value = self
            .bytes
            .get(at..end)
            .ok_or(FormatError::TruncatedOption)?;
        self.position = end;
        self.number = number;
        Ok(Some((number, value)))
    }

    /// Decodes a 4-bit delta or length and its extended bytes.
    fn extended(
        &self,
        at: &mut usize,
        nibble: u8,
        reserved: FormatError,
    ) -> Result<u32, FormatError> {
        let extra = match nibble {
            0..=12 => return Ok(u32::from(nibble)),
            13 => 1,
            14 => 2,
            _ => return Err(reserved),
        };
        let bytes = self
            .bytes
            .get(*at..*at + extra)
            .ok_or(FormatError::TruncatedOption)?;
        *at += extra;
        Ok(match bytes {
            [b] => u32::from(*b) + 13,
            [high, low] => u32::from(u16::from_be_bytes([*high, *low])) + 269,
            _ => 0,
        })
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // `parse` validated the sequence, so an error cannot occur here; if it
        // did, ending the walk is the safe reading.
        self.read().ok().flatten()
    }
}

/// Decodes an unsigned integer option value (RFC 7252 §3.2): big-endian,
/// leading zeros allowed, empty is 0. `None` when longer than 4 bytes.
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b)))
}

/// The shortest encoding of an unsigned integer option value.
fn encode_uint(value: u32) -> ([u8; 4], usize) {
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    let mut out = [0; 4];
    out[..4 - skip].copy_from_slice(&bytes[skip..]);
    (out, 4 - skip)
}

/// The options a response of ours may carry; all are unsigned integers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    /// Max-Age (14): with 5.03, when to try again (RFC 7252 §5.9.3.4).
    pub max_age: Option<u32>,
    /// Block1 (27), the encoded block value being acknowledged (RFC 7959).
    pub block1: Option<u32>,
    /// Size1 (60): with 4.13, the largest body we accept (RFC 7959 §4).
    pub size1: Option<u32>,
}

/// A response with no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub message_type: MessageType,
    pub code: Code,
    pub message_id: u16,
    pub token: Token,
    pub options: ResponseOptions,
}

impl Response {
    /// The number of the last option [`Response::encode`] writes (0: none).
    fn last_option(&self) -> u16 {
        [
            (option::SIZE1, self.options.size1),
            (option::BLOCK1, self.options.block1),
            (option::MAX_AGE, self.options.max_age),
        ]
        .iter()
        .find(|(_, v)| v.is_some())
        .map_or(0, |(n, _)| *n)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_RESPONSE_LEN);
        let token = self.token.as_bytes();
        out.push((VERSION << 6) | (self.message_type.bits() << 4) | token.len() as u8);
        out.push(self.code.byte());
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(token);
        let options = [
            (option::MAX_AGE, self.options.max_age),
            (option::BLOCK1, self.options.block1),
            (option::SIZE1, self.options.size1),
        ];
        let mut previous = 0;
        for (number, value) in options {
            if let Some(value) = value {
                let (bytes, len) = encode_uint(value);
                push_option_header(&mut out, number - previous, len);
                out.extend_from_slice(&bytes[..len]);
                previous = number;
            }
        }
        out
    }
}

/// A message with any options and a payload: the mailbox's answers, which
/// carry a command (Location-Path, Location-Query, its body), and the
/// requests the gateway sends devices (`head` then has a request code).
/// `options` must be in option-number order; values of any length.
pub fn message_with_options(head: &Response, options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut out = head.encode();
    let mut previous = head.last_option();
    for (number, value) in options {
        let delta = number.saturating_sub(previous);
        let (delta_nibble, delta_ext) = extended(delta as usize);
        let (len_nibble, len_ext) = extended(value.len());
        out.push((delta_nibble << 4) | len_nibble);
        out.extend_from_slice(&delta_ext);
        out.extend_from_slice(&len_ext);
        out.extend_from_slice(value);
        previous = *number;
    }
    if !payload.is_empty() {
        out.push(PAYLOAD_MARKER);
        out.extend_from_slice(payload);
    }
    out
}

/// An option delta or length: its nibble and extended bytes (RFC 7252 §3.1).
fn extended(n: usize) -> (u8, Vec<u8>) {
    match n {
        0..=12 => (n as u8, Vec::new()),
        13..=268 => (13, vec![(n - 13) as u8]),
        _ => (
            14,
            ((n.min(65_535 + 269) - 269) as u16).to_be_bytes().to_vec(),
        ),
    }
}

/// An empty message (code 0.00, no token): a Reset, or the empty
/// Acknowledgement that confirms a request without answering it.
pub fn empty_message(message_type: MessageType, message_id: u16) -> Vec<u8> {
    let id = message_id.to_be_bytes();
    vec![(VERSION << 6) | (message_type.bits() << 4), 0, id[0], id[1]]
}

/// Writes an option's delta/length byte and extended bytes. Deltas here are
/// below 269 and lengths at most 4, so the 2-byte forms are never needed.
fn push_option_header(out: &mut Vec<u8>, delta: u16, len: usize) {
    let (nibble, extended) = match delta {
        0..=12 => (delta as u8, None),
        _ => (13, Some((delta - 13) as u8)),
    };
    out.push((nibble << 4) | len as u8);
    out.extend(extended);
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::{CoapOption, MessageClass, Packet, RequestType};

    fn request_bytes() -> Vec<u8> {
        let mut packet = Packet::new();
        packet.header.message_id = 0x1234;
        packet.header.code = MessageClass::Request(RequestType::Post);
        packet.set_token(vec![1, 2, 3]);
        packet.add_option(CoapOption::UriPath, b"sensors".to_vec());
        packet.add_option(CoapOption::UriPath, b"a-rather-long-segment".to_vec());
        packet.add_option(CoapOption::NoResponse, vec![2]);
        packet.payload = b"21.5".to_vec();
        packet.to_bytes().expect("small packet")
    }

    #[test]
    fn reads_what_coap_lite_writes() {
        let bytes = request_bytes();
        let message = parse(&bytes).expect("valid");
        assert_eq!(message.header.message_type, MessageType::Confirmable);
        assert_eq!(message.header.code, Code::new(0, 2));
        assert_eq!(message.header.message_id, 0x1234);
        assert_eq!(message.token.as_bytes(), &[1, 2, 3]);
        let options: Vec<(u16, &[u8])> = message.options().collect();
        assert_eq!(
            options,
            vec![
                (option::URI_PATH, &b"sensors"[..]),
                (option::URI_PATH, &b"a-rather-long-segment"[..]),
                (option::NO_RESPONSE, &[2][..]),
            ]
        );
        assert_eq!(message.payload, b"21.5");
    }

    #[test]
    fn two_byte_extended_option_lengths_are_read() {
        let mut packet = Packet::new();
        packet.add_option(CoapOption::UriQuery, vec![b'q'; 300]);
        packet.header.code = MessageClass::Request(RequestType::Post);
        let bytes = packet.to_bytes().expect("fits");
        let message = parse(&bytes).expect("valid");
        let (number, value) = message.options().next().expect("one option");
        assert_eq!((number, value.len()), (option::URI_QUERY, 300));
    }

    #[test]
    fn every_truncation_of_a_request_is_an_error_or_a_shorter_message() {
        let bytes = request_bytes();
        for len in 0..bytes.len() {
            let _ = parse(&bytes[..len]);
        }
        assert!(matches!(parse(&bytes[..3]), Err(ParseError::TooShort(3))));
    }

    #[test]
    fn reserved_nibbles_are_format_errors() {
        let base = [0x40, 0x02, 0, 1];
        let cases: [(&[u8], FormatError); 5] = [
            (&[0xF1, 0], FormatError::ReservedOptionDelta),
            (&[0x1F], FormatError::ReservedOptionLength),
            (&[0xD1], FormatError::TruncatedOption),
            (&[0x13, 1], FormatError::TruncatedOption),
            (&[0xE0, 0xFF, 0xFF], FormatError::OptionNumberOverflow),
        ];
        for (tail, expected) in cases {
            let datagram = [&base[..], tail].concat();
            match parse(&datagram) {
                Err(ParseError::Format { error, .. }) => assert_eq!(error, expected, "{tail:?}"),
                other => panic!("{tail:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn uint_values_round_trip_in_shortest_form() {
        for value in [0, 1, 255, 256, 65_535, 65_536, u32::MAX] {
            let (bytes, len) = encode_uint(value);
            assert_eq!(decode_uint(&bytes[..len]), Some(value));
            assert!(len == 0 || bytes[0] != 0, "{value}: leading zero");
        }
        assert_eq!(decode_uint(&[0, 0, 1]), Some(1));
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }

    #[test]
    fn responses_are_read_back_by_coap_lite() {
        let response = Response {
            message_type: MessageType::Acknowledgement,
            code: Code::REQUEST_ENTITY_TOO_LARGE,
            message_id: 7,
            token: Token::new(&[9; 8]).expect("8 bytes"),
            options: ResponseOptions {
                max_age: Some(u32::MAX),
                block1: Some(0xFF_FFFF),
                size1: Some(u32::MAX),
            },
        };
        let bytes = response.encode();
        assert_eq!(bytes.len(), MAX_RESPONSE_LEN);
        let packet = Packet::from_bytes(&bytes).expect("coap-lite reads it");
        assert_eq!(
            packet.header.code,
            MessageClass::Response(coap_lite::ResponseType::RequestEntityTooLarge)
        );
        assert_eq!(packet.header.message_id, 7);
        assert_eq!(packet.get_token(), &[9; 8]);
        assert_eq!(
            packet.get_first_option(CoapOption::MaxAge),
            Some(&vec![0xFF; 4])
        );
        assert_eq!(
            packet.get_first_option(CoapOption::Block1),
            Some(&vec![0xFF; 3])
        );
        assert_eq!(
            packet.get_first_option(CoapOption::Size1),
            Some(&vec![0xFF; 4])
        );
    }

    #[test]
    fn code_display_is_class_dot_detail() {
        assert_eq!(Code::CONTINUE.to_string(), "2.31");
        assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.to_string(), "4.13");
    }
}
