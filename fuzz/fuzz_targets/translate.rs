//! Payloads of every Content-Format through the translation to JSON:
//! nothing may panic, every translated message is one JSON text, all of
//! them together within the output budget, and a SenML name comes exactly
//! with split SenML and follows RFC 8428's name rules. A refusal says why
//! in a short ASCII diagnostic, or names the Content-Format it refuses.
//!
//! Input framing: `format: u8, flags: u8, payload...`. `format` picks the
//! Content-Format (mostly the five translated ones; else none, or the byte
//! itself as a number); bit 0 of `flags` asks for split, the rest moves
//! "now" by whole seconds.
#![no_main]

use coap2mqtt::translate::{
    to_json, Options, Refusal, CBOR, JSON, MAX_DIAGNOSTIC, SENML_CBOR, SENML_JSON, TEXT_PLAIN,
};
use libfuzzer_sys::fuzz_target;

const TRANSLATED: [u16; 5] = [TEXT_PLAIN, JSON, CBOR, SENML_JSON, SENML_CBOR];

fuzz_target!(|data: &[u8]| {
    let [format, flags, payload @ ..] = data else {
        return;
    };
    let content_format = match format % 8 {
        0 => Some(TEXT_PLAIN),
        1 => Some(JSON),
        2 | 3 => Some(CBOR),
        4 => Some(SENML_JSON),
        5 | 6 => Some(SENML_CBOR),
        _ if format & 0x80 != 0 => None,
        _ => Some(u16::from(*format)),
    };
    let options = Options {
        split: flags & 1 == 1,
        now_ms: 1_700_000_000_000 + u64::from(flags >> 1) * 1000,
        max_output: 64 * 1024,
    };
    let senml = matches!(content_format, Some(SENML_JSON | SENML_CBOR));
    match to_json(content_format, payload, &options) {
        Ok(messages) => {
            assert!(!messages.is_empty());
            if !(senml && options.split) {
                assert_eq!(messages.len(), 1);
            }
            let total: usize = messages.iter().map(|m| m.json.len()).sum();
            assert!(total <= options.max_output, "{total} bytes");
            for message in &messages {
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(&message.json) {
                    panic!(
                        "not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&message.json)
                    );
                }
                assert_eq!(message.senml_name.is_some(), senml && options.split);
                if let Some(name) = &message.senml_name {
                    let mut bytes = name.bytes();
                    assert!(
                        bytes.next().is_some_and(|b| b.is_ascii_alphanumeric()),
                        "{name:?}"
                    );
                    assert!(
                        bytes.all(|b| b.is_ascii_alphanumeric() || b"-:./_".contains(&b)),
                        "{name:?}"
                    );
                }
            }
            if content_format == Some(JSON) {
                assert_eq!(messages[0].json, payload);
            }
        }
        Err(Refusal::Malformed(diagnostic)) => {
            assert!(
                !diagnostic.is_empty() && diagnostic.len() <= MAX_DIAGNOSTIC,
                "{diagnostic:?}"
            );
            assert!(
                diagnostic
                    .bytes()
                    .all(|b| b.is_ascii_graphic() || b == b' '),
                "{diagnostic:?}"
            );
        }
        Err(Refusal::Unsupported(number)) => {
            assert_eq!(number, content_format);
            assert!(number.is_none_or(|n| !TRANSLATED.contains(&n)));
        }
        Err(Refusal::TooLarge) => {}
    }
});
