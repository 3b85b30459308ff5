//! Payload translation at the edge: whatever a device sent, the message
//! published is JSON (routes with `payload = "json"`).
//!
//! Devices speak what is cheap for them (CBOR, SenML, a bare number as
//! text); consumers behind the broker want one format. Translating at the
//! gateway also lets it refuse, with a 4.xx the device sees, a payload that
//! does not decode, instead of storing it and leaving every consumer to
//! discover it. So [`to_json`] runs before the store: it either gives the
//! JSON message(s) to store or a [`Refusal`] to answer with, and nothing is
//! stored for a refused request.
//!
//! Like `coap/` this is sans-IO and pure: the reception time SenML needs is
//! a parameter ([`Options::now_ms`]), no clock is read. No input can make
//! it panic, recurse past [`MAX_DEPTH`] or allocate past
//! [`Options::max_output`] (plus copies of the payload).
//!
//! By Content-Format (RFC 7252 §12.3):
//! - none: refused as unsupported (4.15). A device must say what it sends:
//!   guessing (text if it happens to be UTF-8) would turn one device's
//!   readings into strings on some messages and refusals on others.
//! - 0 text/plain;charset=utf-8: must be UTF-8; becomes a JSON string.
//! - 50 application/json: checked and passed through unchanged (`json.rs`).
//! - 60 application/cbor: converted (`cbor.rs` has the rules).
//! - 110 application/senml+json, 112 application/senml+cbor: resolved
//!   records (`senml.rs`), one message per record with [`Options::split`].
//! - any other (42 octet-stream, 111/113 SensML, ...): refused as
//!   unsupported (4.15).
//!
//! `split` applies to SenML only; every other format is one message.

mod cbor;
mod json;
mod labels;
mod out;
mod senml;
mod senml_cbor;
mod senml_json;
#[cfg(test)]
mod testing;

use out::Out;
use senml::Resolver;

/// CoAP Content-Format numbers (IANA "CoAP Content-Formats").
pub const TEXT_PLAIN: u16 = 0;
pub const JSON: u16 = 50;
pub const CBOR: u16 = 60;
pub const SENML_JSON: u16 = 110;
pub const SENML_CBOR: u16 = 112;

/// How deep arrays and maps (JSON objects) may nest, in any format.
pub const MAX_DEPTH: usize = 32;

/// The longest diagnostic in a [`Refusal::Malformed`], in bytes.
pub const MAX_DIAGNOSTIC: usize = 99;

/// What a Content-Format number means here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Cbor,
    SenmlJson,
    SenmlCbor,
    /// A format this module does not convert.
    Other(u16),
}

impl Format {
    pub fn from_content_format(number: u16) -> Format {
        match number {
            TEXT_PLAIN => Format::Text,
            JSON => Format::Json,
            CBOR => Format::Cbor,
            SENML_JSON => Format::SenmlJson,
            SENML_CBOR => Format::SenmlCbor,
            other => Format::Other(other),
        }
    }

    pub fn content_format(self) -> u16 {
        match self {
            Format::Text => TEXT_PLAIN,
            Format::Json => JSON,
            Format::Cbor => CBOR,
            Format::SenmlJson => SENML_JSON,
            Format::SenmlCbor => SENML_CBOR,
            Format::Other(number) => number,
        }
    }
}

/// How to translate one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// SenML only: one message per resolved record, with its name.
    pub split: bool,
    /// When the payload was received, in milliseconds since the Unix epoch:
    /// "now" for SenML's relative times.
    pub now_ms: u64,
    /// The most JSON produced for one payload, all messages together; past
    /// it the payload is refused with [`Refusal::TooLarge`]. The exchange
    /// can pass its `max_packet_size`: an unsplit message larger than that
    /// would be refused anyway, and a split pack then costs no more memory.
    pub max_output: usize,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The payload: one JSON text, UTF-8.
    pub json: Vec<u8>,
    /// With `split`, the record's resolved SenML name, for `{senml_name}`
    /// in the topic template. It matches RFC 8428 §4.5.1 (letters, digits
    /// and `-:./_`): it may hold `/`, which adds topic levels, and it is
    /// the caller's to check the topic it makes.
    pub senml_name: Option<String>,
}

/// Why a payload is not translated; nothing is stored for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The payload does not decode as its Content-Format says: 4.00 Bad
    /// Request, with this diagnostic as its payload (ASCII, at most
    /// [`MAX_DIAGNOSTIC`] bytes; it quotes no part of the payload).
    Malformed(String),
    /// No Content-Format (`None`), or one this module does not convert:
    /// 4.15 Unsupported Content-Format.
    Unsupported(Option<u16>),
    /// The JSON would pass [`Options::max_output`]: 4.13 Request Entity
    /// Too Large.
    TooLarge,
}

/// Translates one request body to the JSON message(s) to publish.
pub fn to_json(
    content_format: Option<u16>,
    payload: &[u8],
    options: &Options,
) -> Result<Vec<Translated>, Refusal> {
    let Some(number) = content_format else {
        return Err(Refusal::Unsupported(None));
    };
    let json = match Format::from_content_format(number) {
        Format::Text => {
            let text =
                std::str::from_utf8(payload).map_err(|_| malformed("text: invalid UTF-8"))?;
            let mut out = Out::new(options.max_output);
            out.string(text)?;
            out.into_bytes()
        }
        Format::Json => json::pass_through(payload, options.max_output)?,
        Format::Cbor => {
            let mut out = Out::new(options.max_output);
            cbor::to_json(payload, &mut out)?;
            out.into_bytes()
        }
        Format::SenmlJson => {
            let mut resolver = Resolver::new(options.now_ms, options.max_output);
            senml_json::read(payload, &mut resolver)?;
            return resolver.finish(options.split);
        }
        Format::SenmlCbor => {
            let mut resolver = Resolver::new(options.now_ms, options.max_output);
            senml_cbor::read(payload, &mut resolver, options.max_output)?;
            return resolver.finish(options.split);
        }
        Format::Other(number) => return Err(Refusal::Unsupported(Some(number))),
    };
    Ok(vec![Translated {
        json,
        senml_name: None,
    }])
}

/// A [`Refusal::Malformed`] whose diagnostic is ASCII and short, whatever
/// it was built from.
fn malformed(diagnostic: impl Into<String>) -> Refusal {
    let mut text: String = diagnostic
        .into()
        .chars()
        .map(|c| match c.is_ascii() && !c.is_ascii_control() {
            true => c,
            false => '?',
        })
        .collect();
    text.truncate(MAX_DIAGNOSTIC);
    Refusal::Malformed(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: Options = Options {
        split: false,
        now_ms: 1_700_000_000_000,
        max_output: 1 << 20,
    };

    fn one(content_format: u16, payload: &[u8]) -> Result<String, Refusal> {
        let mut messages = to_json(Some(content_format), payload, &OPTIONS)?;
        assert_eq!(messages.len(), 1);
        let message = messages.remove(0);
        assert_eq!(message.senml_name, None);
        Ok(String::from_utf8(message.json).expect("UTF-8"))
    }

    #[test]
    fn content_format_numbers_map_to_formats_and_back() {
        for (number, format) in [
            (0, Format::Text),
            (50, Format::Json),
            (60, Format::Cbor),
            (110, Format::SenmlJson),
            (112, Format::SenmlCbor),
            (42, Format::Other(42)),
            (111, Format::Other(111)),
            (65535, Format::Other(65535)),
        ] {
            assert_eq!(Format::from_content_format(number), format);
            assert_eq!(format.content_format(), number);
        }
    }

    #[test]
    fn text_becomes_a_json_string() {
        assert_eq!(one(TEXT_PLAIN, b"23.5").as_deref(), Ok("\"23.5\""));
        assert_eq!(one(TEXT_PLAIN, b"").as_deref(), Ok("\"\""));
        assert_eq!(
            one(TEXT_PLAIN, "a \"b\"\n\u{0}\u{fc}".as_bytes()).as_deref(),
            Ok("\"a \\\"b\\\"\\n\\u0000\u{fc}\"")
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_malformed() {
        assert_eq!(
            one(TEXT_PLAIN, b"caf\xe9"),
            Err(Refusal::Malformed("text: invalid UTF-8".into()))
        );
    }

    #[test]
    fn json_is_passed_through_and_cbor_converted() {
        assert_eq!(one(JSON, b"{\"a\": 1}").as_deref(), Ok("{\"a\": 1}"));
        assert_eq!(
            one(CBOR, &[0xa1, 0x61, 0x61, 0x01]).as_deref(),
            Ok("{\"a\":1}")
        );
    }

    #[test]
    fn a_missing_or_unknown_content_format_is_unsupported() {
        assert_eq!(
            to_json(None, b"23.5", &OPTIONS),
            Err(Refusal::Unsupported(None))
        );
        for number in [42, 41, 51, 111, 113, 310, 11050, 65000] {
            assert_eq!(
                to_json(Some(number), b"{}", &OPTIONS),
                Err(Refusal::Unsupported(Some(number)))
            );
        }
    }

    #[test]
    fn split_applies_to_senml_only() {
        let split = Options {
            split: true,
            ..OPTIONS
        };
        let messages = to_json(Some(JSON), b"[1,2]", &split).expect("translates");
        assert_eq!(
            messages,
            [Translated {
                json: b"[1,2]".to_vec(),
                senml_name: None
            }]
        );
    }

    #[test]
    fn the_output_budget_holds_for_every_format() {
        let small = Options {
            max_output: 8,
            ..OPTIONS
        };
        // Ten NULs are 10 bytes of text, 62 of JSON.
        assert_eq!(
            to_json(Some(TEXT_PLAIN), &[0; 10], &small),
            Err(Refusal::TooLarge)
        );
        assert_eq!(
            to_json(Some(JSON), b"[1,2,3,4,5]", &small),
            Err(Refusal::TooLarge)
        );
        // {false: false} is 3 bytes of CBOR, 15 of JSON.
        assert_eq!(
            to_json(Some(CBOR), &[0xa1, 0xf4, 0xf4], &small),
            Err(Refusal::TooLarge)
        );
        assert_eq!(
            to_json(Some(SENML_JSON), br#"[{"n":"a","v":1}]"#, &small),
            Err(Refusal::TooLarge)
        );
        assert_eq!(
            to_json(
                Some(SENML_CBOR),
                &[0x81, 0xa2, 0x00, 0x61, 0x61, 0x02, 0x01],
                &small
            ),
            Err(Refusal::TooLarge)
        );
    }

    #[test]
    fn diagnostics_are_short_ascii() {
        let long = "\u{fc}x\n".repeat(100);
        let Refusal::Malformed(text) = malformed(long) else {
            panic!("malformed");
        };
        assert_eq!(text.len(), MAX_DIAGNOSTIC);
        assert!(text.starts_with("?x?"));
        assert!(text.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }
}
