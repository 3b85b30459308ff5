//! application/json (Content-Format 50): checked, then passed through as
//! the device sent it.
//!
//! The bytes are not re-serialized: a consumer gets exactly what the device
//! wrote (its number formatting, key order and whitespace). What is checked
//! is what a consumer could trip on: the payload is UTF-8 (RFC 8259 §8.1),
//! is one JSON text with nothing after it (serde_json's grammar: no comments,
//! no trailing commas, no raw control characters in strings), nests at most
//! [`MAX_DEPTH`] arrays and objects, the same bound CBOR and SenML get, and
//! has no number beyond the range of a double (`1e999`): RFC 8259 §6 lets a
//! reader limit that range, most do, and CBOR and SenML never produce one
//! (found by the `translate` fuzz target). A duplicate object name is not
//! refused here (RFC 8259 allows it; the bytes are the device's).

use super::{malformed, Refusal, MAX_DEPTH};

/// The payload, unchanged, once it is known to be JSON.
pub(super) fn pass_through(payload: &[u8], max_output: usize) -> Result<Vec<u8>, Refusal> {
    let text = std::str::from_utf8(payload).map_err(|_| malformed("json: invalid UTF-8"))?;
    check_depth(text)?;
    // Building a value checks every number's range too; the depth is
    // bounded above, so its recursion is.
    if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
        return Err(syntax("json", &e));
    }
    if payload.len() > max_output {
        return Err(Refusal::TooLarge);
    }
    Ok(payload.to_vec())
}

/// Refuses text nesting more than [`MAX_DEPTH`] arrays and objects. Run
/// before any parser builds values, so no parser recurses deeper.
pub(super) fn check_depth(text: &str) -> Result<(), Refusal> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(malformed(format!("json: nesting deeper than {MAX_DEPTH}")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A short diagnostic for a serde_json error: where, not the device's text.
pub(super) fn syntax(what: &str, error: &serde_json::Error) -> Refusal {
    use serde_json::error::Category;
    match error.classify() {
        Category::Eof => malformed(format!("{what}: truncated")),
        _ => malformed(format!(
            "{what}: invalid JSON at line {} column {}",
            error.line(),
            error.column()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(text: &[u8]) -> Result<Vec<u8>, Refusal> {
        pass_through(text, 1 << 20)
    }

    #[test]
    fn valid_json_is_passed_through_byte_for_byte() {
        for text in [
            &b"{ \"b\" : 1.50, \"a\" : [true, null, \"\\u00fc\"] }\n"[..],
            b"23.1",
            b"\"text\"",
            b"[123456789012345678901234567890, -1e308, 5e-324]",
            b"{\"a\":1,\"a\":2}",
        ] {
            assert_eq!(pass(text).as_deref(), Ok(text), "{text:?}");
        }
    }

    #[test]
    fn invalid_json_is_malformed() {
        for text in [
            &b""[..],
            b"   ",
            b"{\"a\":1,}",
            b"[1] [2]",
            b"{'a':1}",
            b"\"tab\there\"",
            b"\xef\xbb\xbf{}",
            b"NaN",
            b"[1, 2",
            b"[1e999]",
            // Found by the fuzz target: a number past a double's range.
            b"1.126666E66666666666666696",
        ] {
            assert!(matches!(pass(text), Err(Refusal::Malformed(_))), "{text:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_malformed_even_inside_a_string() {
        assert_eq!(
            pass(b"\"\xff\""),
            Err(Refusal::Malformed("json: invalid UTF-8".into()))
        );
    }

    #[test]
    fn nesting_is_bounded_at_32_without_recursion() {
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(pass(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert_eq!(
            pass(deep.as_bytes()),
            Err(Refusal::Malformed("json: nesting deeper than 32".into()))
        );
        let very_deep = "[{\"a\":".repeat(500_000);
        assert!(matches!(
            pass(very_deep.as_bytes()),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let text = format!("[\"{}\\\"{}\"]", "[".repeat(100), "{".repeat(100));
        assert!(pass(text.as_bytes()).is_ok());
    }

    #[test]
    fn a_payload_over_the_budget_is_too_large() {
        assert_eq!(pass_through(b"[1,2,3]", 6), Err(Refusal::TooLarge));
        assert!(pass_through(b"[1,2,3]", 7).is_ok());
    }
}
