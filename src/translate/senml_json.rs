//! application/senml+json (Content-Format 110): reads a pack into
//! [`Record`]s for the [`Resolver`].
//!
//! serde_json parses each record as an ordered list of members (not a map,
//! which would keep only the last of a duplicated label); the labels of
//! RFC 8428 are typed here, the rest skipped. `vd` must be base64url
//! (§5; padding tolerated, the output drops it); a `vd` that does not
//! decode is refused as not binary data. Nesting is bounded by
//! [`super::MAX_DEPTH`] before serde_json builds anything.

use super::json::{check_depth, syntax};
use super::labels::{Key, Label};
use super::senml::{Field, Num, Record, Resolver};
use super::{malformed, Refusal};
use base64::Engine;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::fmt;

/// Feeds every record of the pack to `resolver`, in order.
pub(super) fn read(payload: &[u8], resolver: &mut Resolver) -> Result<(), Refusal> {
    let text = std::str::from_utf8(payload).map_err(|_| malformed("senml+json: invalid UTF-8"))?;
    check_depth(text)?;
    let pack: Vec<Members> = serde_json::from_str(text).map_err(|e| {
        match e.classify() {
            // The grammar held, the shape did not.
            serde_json::error::Category::Data => {
                malformed("senml+json: a pack is an array of objects")
            }
            _ => syntax("senml+json", &e),
        }
    })?;
    for (i, members) in pack.into_iter().enumerate() {
        let index = i + 1;
        let mut record = Record::default();
        for (name, value) in members.0 {
            match Label::from_json(&name) {
                Key::Known(label) => record.set(label, field(label, value), index)?,
                Key::Ignored => {}
                Key::MustUnderstand => return Err(must_understand(index)),
            }
        }
        resolver.push(index, &record)?;
    }
    Ok(())
}

pub(super) fn must_understand(index: usize) -> Refusal {
    malformed(format!(
        "senml record {index}: a label ending in _ is not understood"
    ))
}

fn field(label: Label, value: serde_json::Value) -> Field {
    use serde_json::Value;
    match value {
        Value::String(text) if label == Label::DataValue => {
            match base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
            {
                Ok(bytes) => Field::Bytes(bytes),
                Err(_) => Field::Other,
            }
        }
        Value::String(text) => Field::Text(text),
        Value::Bool(b) => Field::Bool(b),
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                Field::Number(Num::Int(i128::from(n)))
            } else if let Some(n) = n.as_i64() {
                Field::Number(Num::Int(i128::from(n)))
            } else {
                // Without arbitrary precision every JSON number is one of
                // u64, i64 or f64; serde_json refuses one out of f64 range.
                n.as_f64()
                    .map_or(Field::Other, |x| Field::Number(Num::Float(x)))
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => Field::Other,
    }
}

/// A JSON object's members in order, duplicates kept.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Members, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML record (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
            members.push(member);
        }
        Ok(Members(members))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{to_json, Options, SENML_JSON};
    use super::*;

    fn refusal(payload: &[u8]) -> Refusal {
        let options = Options {
            split: false,
            now_ms: 0,
            max_output: 1 << 20,
        };
        to_json(Some(SENML_JSON), payload, &options).expect_err("refused")
    }

    #[test]
    fn a_pack_must_be_an_array_of_objects() {
        for payload in [&br#"{"n":"a","v":1}"#[..], b"[1]", b"[[{}]]", b"\"x\""] {
            assert_eq!(
                refusal(payload),
                malformed("senml+json: a pack is an array of objects"),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn invalid_json_and_utf8_are_refused_with_where() {
        assert_eq!(
            refusal(b"[{\"n\":\"a\",\"v\":1},]"),
            malformed("senml+json: invalid JSON at line 1 column 18")
        );
        assert_eq!(
            refusal(b"[{\"n\":\"a\""),
            malformed("senml+json: truncated")
        );
        assert_eq!(
            refusal(b"[{\"n\":\"\xff\",\"v\":1}]"),
            malformed("senml+json: invalid UTF-8")
        );
    }

    #[test]
    fn deep_nesting_in_an_ignored_field_is_refused_before_parsing() {
        let payload = format!(
            "[{{\"n\":\"a\",\"v\":1,\"x\":{}1{}}}]",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(
            refusal(payload.as_bytes()),
            malformed("json: nesting deeper than 32")
        );
    }

    #[test]
    fn data_values_decode_with_or_without_padding() {
        assert_eq!(
            field(Label::DataValue, "aGk".into()),
            Field::Bytes(b"hi".to_vec())
        );
        assert_eq!(
            field(Label::DataValue, "aGk=".into()),
            Field::Bytes(b"hi".to_vec())
        );
        assert_eq!(
            field(Label::DataValue, "-_8".into()),
            Field::Bytes(vec![0xfb, 0xff])
        );
        // Standard base64's alphabet is not base64url's.
        assert_eq!(field(Label::DataValue, "+/8".into()), Field::Other);
        assert_eq!(
            field(Label::StringValue, "aGk".into()),
            Field::Text("aGk".into())
        );
    }

    #[test]
    fn json_numbers_keep_their_integer_or_float_kind() {
        let number = |text: &str| field(Label::Value, serde_json::from_str(text).expect("JSON"));
        assert_eq!(number("20"), Field::Number(Num::Int(20)));
        assert_eq!(number("-20"), Field::Number(Num::Int(-20)));
        assert_eq!(
            number("18446744073709551615"),
            Field::Number(Num::Int(i128::from(u64::MAX)))
        );
        assert_eq!(number("20.0"), Field::Number(Num::Float(20.0)));
        assert_eq!(number("1e3"), Field::Number(Num::Float(1000.0)));
    }
}
