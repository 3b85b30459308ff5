//! What a request asks for, read from its code and options: the method, the
//! Uri-Path, Block1 and Size1 (RFC 7959), No-Response (RFC 7967), and
//! whether the gateway may process it at all (RFC 7252 §5.4).
//!
//! Invariants:
//! - A critical option the gateway does not implement, repeats when it must
//!   not, or has a length outside its range (RFC 7252 §5.4.1, §5.4.3,
//!   §5.4.5) is reported in [`RequestOptions::unrecognized_critical`], never
//!   skipped: processing such a request would misread what the device meant.
//! - An elective option that is malformed or repeated is ignored, as the RFC
//!   asks; the first well-formed occurrence counts.

use super::wire::{decode_uint, option, CoapMessage, Code};
use crate::route::Method;

/// The method a request code names (RFC 7252 §12.1.1, RFC 8132).
pub fn method(code: Code) -> Option<Method> {
    match code.byte() {
        1 => Some(Method::Get),
        2 => Some(Method::Post),
        3 => Some(Method::Put),
        4 => Some(Method::Delete),
        5 => Some(Method::Fetch),
        6 => Some(Method::Patch),
        7 => Some(Method::IPatch),
        _ => None,
    }
}

/// The response classes a device said it does not want (RFC 7967 §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoResponse(u8);

impl NoResponse {
    const NOT_2XX: u8 = 2;
    const NOT_4XX: u8 = 8;
    const NOT_5XX: u8 = 16;

    /// An empty value or 0 means "interested in everything".
    pub fn from_value(value: &[u8]) -> Option<NoResponse> {
        match value {
            [] => Some(NoResponse(0)),
            [mask] => Some(NoResponse(*mask)),
            _ => None,
        }
    }

    /// The option's value as sent (kept with a stored request, see `recall.rs`).
    pub fn mask(self) -> u8 {
        self.0
    }

    pub fn from_mask(mask: u8) -> NoResponse {
        NoResponse(mask)
    }

    pub fn suppresses(self, code: Code) -> bool {
        let bit = match code.class() {
            2 => NoResponse::NOT_2XX,
            4 => NoResponse::NOT_4XX,
            5 => NoResponse::NOT_5XX,
            _ => return false,
        };
        self.0 & bit != 0
    }
}

/// The options of one request that the exchange acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions<'a> {
    /// The Uri-Path segments, still bytes: they must be UTF-8 (RFC 7252
    /// §5.10.1), which the exchange checks and answers 4.00 when not.
    pub uri_path: Vec<&'a [u8]>,
    /// The raw Block1 value, at most 3 bytes long.
    pub block1: Option<&'a [u8]>,
    /// The body size a block-wise upload announces (RFC 7959 §4).
    pub size1: Option<u32>,
    pub no_response: NoResponse,
    /// The Uri-Query items, still bytes.
    pub uri_query: Vec<&'a [u8]>,
    /// Content-Format (RFC 7252 §5.10.3), when present and well-formed.
    pub content_format: Option<u16>,
    /// The first critical option that makes the request unprocessable: 4.02.
    pub unrecognized_critical: Option<u16>,
    /// Proxy-Uri or Proxy-Scheme: this is not a proxy (5.05).
    pub proxy: bool,
}

/// Reads the options of a parsed message.
pub fn read_options<'a>(message: &CoapMessage<'a>) -> RequestOptions<'a> {
    let mut read = RequestOptions::default();
    let mut seen_size1 = false;
    let mut seen_no_response = false;
    let mut previous = None;
    for (number, value) in message.options() {
        let repeated = previous == Some(number);
        previous = Some(number);
        let len = value.len();
        let acceptable = match number {
            option::IF_MATCH => len <= 8,
            option::URI_HOST => !repeated && (1..=255).contains(&len),
            option::IF_NONE_MATCH => !repeated && len == 0,
            option::URI_PORT => !repeated && len <= 2,
            option::URI_PATH => {
                read.uri_path.push(value);
                len <= 255
            }
            option::URI_QUERY => {
                read.uri_query.push(value);
                len <= 255
            }
            option::CONTENT_FORMAT => {
                // Elective: a bad one is ignored, not refused.
                if !repeated && len <= 2 {
                    read.content_format = decode_uint(value).and_then(|v| u16::try_from(v).ok());
                }
                true
            }
            option::ACCEPT => !repeated && len <= 2,
            option::BLOCK2 => !repeated && len <= 3,
            option::BLOCK1 => {
                read.block1 = Some(value);
                !repeated && len <= 3
            }
            option::PROXY_URI | option::PROXY_SCHEME => {
                read.proxy = true;
                true
            }
            option::SIZE1 => {
                if !seen_size1 {
                    read.size1 = decode_uint(value);
                    seen_size1 = read.size1.is_some();
                }
                true
            }
            option::NO_RESPONSE => {
                if !seen_no_response {
                    if let Some(no_response) = NoResponse::from_value(value) {
                        read.no_response = no_response;
                        seen_no_response = true;
                    }
                }
                true
            }
            other => !option::is_critical(other),
        };
        if !acceptable && read.unrecognized_critical.is_none() {
            read.unrecognized_critical = Some(number);
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::wire::parse;

    /// Reads the options of a POST with these raw option bytes after its
    /// header, and hands them to `check`.
    fn with_options(raw_options: &[u8], check: impl FnOnce(RequestOptions<'_>)) {
        let datagram = [&[0x40, 0x02, 0, 1][..], raw_options].concat();
        check(read_options(&parse(&datagram).expect("well-formed")));
    }

    fn unrecognized(raw_options: &[u8]) -> Option<u16> {
        let mut found = None;
        with_options(raw_options, |read| found = read.unrecognized_critical);
        found
    }

    #[test]
    fn uri_host_port_and_query_are_accepted() {
        let raw = [
            0x31, b'h', 0x42, 0x16, 0x33, 0x44, b'a', b'b', b'c', b'd', 0x41, b'q',
        ];
        with_options(&raw, |read| {
            assert_eq!(read.unrecognized_critical, None);
            assert_eq!(read.uri_path, vec![&b"abcd"[..]]);
        });
    }

    #[test]
    fn an_unknown_odd_option_is_unrecognized_critical() {
        // Option 13 (delta 13 with an extended byte 0).
        assert_eq!(unrecognized(&[0xD0, 0x00]), Some(13));
    }

    #[test]
    fn an_unknown_even_option_is_ignored() {
        assert_eq!(unrecognized(&[0xD0, 0x01]), None);
    }

    #[test]
    fn a_repeated_uri_port_is_unrecognized_critical() {
        assert_eq!(unrecognized(&[0x71, 1, 0x01, 2]), Some(option::URI_PORT));
    }

    #[test]
    fn a_four_byte_block1_is_unrecognized_critical() {
        let block1 = unrecognized(&[0xD4, 14, 0, 0, 0, 0x08]);
        assert_eq!(block1, Some(option::BLOCK1));
    }

    #[test]
    fn proxy_uri_asks_for_a_proxy() {
        with_options(&[0xD1, 22, b'x'], |read| {
            assert!(read.proxy);
            assert_eq!(read.unrecognized_critical, None);
        });
    }

    #[test]
    fn the_first_well_formed_no_response_counts() {
        // Option 258 is delta 13 with the extended byte 258 - 13 = 245. The
        // first occurrence is 2 bytes long (malformed), the second says "no
        // 5.xx", the third (a repetition) is ignored.
        let raw = [0xD2, 245, 1, 1, 0x01, 16, 0x01, 8];
        with_options(&raw, |read| {
            assert!(read.no_response.suppresses(Code::SERVICE_UNAVAILABLE));
            assert!(!read.no_response.suppresses(Code::NOT_FOUND));
            assert_eq!(read.unrecognized_critical, None);
        });
    }

    #[test]
    fn no_response_bits_select_classes() {
        let none = NoResponse::from_value(&[]).expect("empty is valid");
        assert!(!none.suppresses(Code::CHANGED));
        let not_2xx = NoResponse::from_value(&[2]).expect("one byte");
        assert!(not_2xx.suppresses(Code::CHANGED));
        assert!(not_2xx.suppresses(Code::CONTINUE));
        assert!(!not_2xx.suppresses(Code::NOT_FOUND));
        let all = NoResponse::from_value(&[26]).expect("one byte");
        assert!(all.suppresses(Code::SERVICE_UNAVAILABLE));
        assert!(all.suppresses(Code::BAD_OPTION));
        assert_eq!(NoResponse::from_value(&[0, 2]), None);
    }

    #[test]
    fn methods_follow_the_code_registry() {
        assert_eq!(method(Code::new(0, 2)), Some(Method::Post));
        assert_eq!(method(Code::new(0, 7)), Some(Method::IPatch));
        assert_eq!(method(Code::new(0, 8)), None);
    }
}
