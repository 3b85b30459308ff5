//! application/senml+cbor (Content-Format 112): reads a pack into
//! [`Record`]s for the [`Resolver`], one record at a time.
//!
//! RFC 8428 §6: the same data model as JSON with integer labels (Table 4);
//! numbers may be integers, floats or decimal fractions (tag 4, read as
//! `mantissa * 10^exponent` rounded once to a double); `vd` is a byte
//! string. Choices: indefinite-length arrays, maps and strings are read
//! like definite ones (the RFC asks senders for definite ones outside
//! SensML); text labels are extensions (see `labels.rs`); a label of any
//! other type is refused. Fields this gateway ignores are still read
//! through the CBOR converter, so they must be well-formed and nest at most
//! [`super::MAX_DEPTH`] deep.

use super::cbor::Reader;
use super::labels::{extension, Key, Label};
use super::senml::{Field, Num, Record, Resolver};
use super::senml_json::must_understand;
use super::{malformed, Refusal};
use minicbor::data::Type;

/// Decimal fraction (RFC 8949 §3.4.4).
const TAG_DECIMAL_FRACTION: u64 = 4;

/// How deep a record's fields sit: inside the pack and the record.
const FIELD_DEPTH: usize = 2;

/// Feeds every record of the pack to `resolver`, in order. `room` bounds
/// the JSON that skipping an ignored field may render.
pub(super) fn read(payload: &[u8], resolver: &mut Resolver, room: usize) -> Result<(), Refusal> {
    let mut reader = Reader::new(payload);
    if !matches!(reader.ty()?, Type::Array | Type::ArrayIndef) {
        return Err(malformed("senml+cbor: a pack is an array of maps"));
    }
    let mut records = reader.array()?;
    let mut index = 0;
    while reader.more(&mut records)? {
        index += 1;
        if !matches!(reader.ty()?, Type::Map | Type::MapIndef) {
            return Err(malformed(format!("senml record {index}: not a map")));
        }
        let mut pairs = reader.map()?;
        let mut record = Record::default();
        while reader.more(&mut pairs)? {
            let key = match reader.ty()? {
                ty if is_integer(ty) => Label::from_cbor(reader.int()?),
                Type::String | Type::StringIndef => extension(&reader.text()?),
                _ => {
                    return Err(malformed(format!(
                        "senml record {index}: a label is neither an integer nor a text"
                    )));
                }
            };
            match key {
                Key::Known(label) => {
                    let field = field(&mut reader, room)?;
                    record.set(label, field, index)?;
                }
                Key::Ignored => reader.skip(FIELD_DEPTH, room)?,
                Key::MustUnderstand => return Err(must_understand(index)),
            }
        }
        resolver.push(index, &record)?;
    }
    reader.end()
}

/// A field's value. Tags are dropped for their content, as the CBOR
/// converter drops them, except a decimal fraction's.
fn field(reader: &mut Reader<'_>, room: usize) -> Result<Field, Refusal> {
    let mut tag = None;
    while reader.ty()? == Type::Tag {
        tag = Some((reader.position(), reader.tag()?));
    }
    if let Some((at, TAG_DECIMAL_FRACTION)) = tag {
        return decimal_fraction(reader, at);
    }
    let ty = reader.ty()?;
    Ok(match ty {
        Type::String | Type::StringIndef => Field::Text(reader.text()?.into_owned()),
        Type::Bytes | Type::BytesIndef => Field::Bytes(reader.bytes()?.into_owned()),
        Type::Bool => Field::Bool(reader.bool()?),
        Type::F16 | Type::F32 | Type::F64 => Field::Number(Num::Float(reader.float()?)),
        _ if is_integer(ty) => Field::Number(Num::Int(reader.int()?)),
        _ => {
            reader.skip(FIELD_DEPTH, room)?;
            Field::Other
        }
    })
}

/// `4([exponent, mantissa])`, both integers (bignum mantissas are not read).
fn decimal_fraction(reader: &mut Reader<'_>, at: usize) -> Result<Field, Refusal> {
    let invalid = || malformed(format!("senml+cbor: invalid decimal fraction at byte {at}"));
    if !matches!(reader.ty()?, Type::Array | Type::ArrayIndef) {
        return Err(invalid());
    }
    let mut items = reader.array()?;
    let mut parts = [0i128; 2];
    for part in parts.iter_mut() {
        if !reader.more(&mut items)? || !is_integer(reader.ty()?) {
            return Err(invalid());
        }
        *part = reader.int()?;
    }
    if reader.more(&mut items)? {
        return Err(invalid());
    }
    let [exponent, mantissa] = parts;
    // Rust's parser rounds correctly and saturates huge exponents to 0 or
    // infinity (then refused as not finite).
    let value: f64 = format!("{mantissa}e{exponent}")
        .parse()
        .map_err(|_| invalid())?;
    Ok(Field::Number(Num::Float(value)))
}

fn is_integer(ty: Type) -> bool {
    matches!(
        ty,
        Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64
            | Type::Int
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_json, hex};
    use super::super::{to_json, Options, SENML_CBOR};
    use super::*;

    fn translate(encoded: &str) -> Result<String, Refusal> {
        let options = Options {
            split: false,
            now_ms: 1_700_000_000_000,
            max_output: 1 << 20,
        };
        let mut messages = to_json(Some(SENML_CBOR), &hex(encoded), &options)?;
        Ok(String::from_utf8(messages.remove(0).json).expect("UTF-8"))
    }

    #[track_caller]
    fn resolves(encoded: &str, expected: &str) {
        let json = translate(encoded).unwrap_or_else(|e| panic!("{encoded}: {e:?}"));
        assert_same_json(&json, expected, encoded);
    }

    #[track_caller]
    fn refused(encoded: &str) -> String {
        match translate(encoded) {
            Err(Refusal::Malformed(diagnostic)) => diagnostic,
            other => panic!("{encoded}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn integer_labels_name_the_fields() {
        // [{-2: "d/", -3: 1600000000, -4: "W", -5: 10, -6: 100,
        //   0: "p", 2: 1, 5: 2, 7: 60}, {0: "q", 3: "on"}, {0: "r", 4: true},
        //  {0: "s", 8: h'6869'}]
        resolves(
            "84 a9 21 62642f 22 1a5f5e1000 23 6157 24 0a 25 1864
                 00 6170 02 01 05 02 07 183c
                a2 00 6171 03 626f6e
                a2 00 6172 04 f5
                a2 00 6173 08 426869",
            r#"[
              {"n":"d/p","u":"W","t":1600000000,"v":11,"s":102,"ut":60},
              {"n":"d/q","u":"W","t":1600000000,"vs":"on","s":100},
              {"n":"d/r","u":"W","t":1600000000,"vb":true,"s":100},
              {"n":"d/s","u":"W","t":1600000000,"vd":"aGk","s":100}
            ]"#,
        );
    }

    #[test]
    fn indefinite_arrays_maps_and_strings_are_read() {
        // [_ {_ 0: (_ "te", "mp"), 2: 21.5}]
        resolves(
            "9f bf 00 7f 627465 626d70 ff 02 f94d60 ff ff",
            r#"[{"n":"temp","t":1.7e+09,"v":21.5}]"#,
        );
    }

    #[test]
    fn decimal_fractions_are_numbers() {
        // [{0: "a", 2: 4([-2, 27315])}]
        resolves(
            "81 a2 00 6161 02 c4 82 21 196ab3",
            r#"[{"n":"a","t":1.7e+09,"v":273.15}]"#,
        );
        for bad in [
            "81 a2 00 6161 02 c4 81 21",        // one part
            "81 a2 00 6161 02 c4 83 21 01 01",  // three parts
            "81 a2 00 6161 02 c4 82 21 f93c00", // a float mantissa
            "81 a2 00 6161 02 c4 01",           // not an array
        ] {
            assert!(refused(bad).contains("decimal fraction"), "{bad}");
        }
        assert_eq!(
            refused("81 a2 00 6161 02 c4 82 1903e8 01"),
            "senml record 1: v must be a finite number"
        );
    }

    #[test]
    fn text_labels_are_extensions() {
        // [{"n": "a", 0: "b", 2: 1}]: the text "n" is ignored.
        resolves(
            "81 a3 616e 6161 00 6162 02 01",
            r#"[{"n":"b","t":1.7e+09,"v":1}]"#,
        );
        // [{"x_": 1, 0: "b", 2: 1}]
        assert_eq!(
            refused("81 a3 62785f 01 00 6162 02 01"),
            "senml record 1: a label ending in _ is not understood"
        );
    }

    #[test]
    fn ignored_fields_are_skipped_whatever_their_shape_but_must_be_well_formed() {
        // [{9: [1, {"a": h'00'}], 0: "b", 2: 1, 6: 1(5)}]: tag 1 on t is dropped.
        resolves(
            "81 a4 09 8201a1616141 00 00 6162 02 01 06 c1 05",
            r#"[{"n":"b","t":1700000005.0,"v":1}]"#,
        );
        // An ignored field that is truncated, or too deep.
        assert_eq!(refused("81 a2 09 82 01"), "cbor: truncated");
        let mut deep = String::from("81 a3 09");
        deep.push_str(&" 81".repeat(31));
        deep.push_str(" 00 00 6162 02 01");
        assert!(refused(&deep).contains("nesting deeper than 32"));
    }

    #[test]
    fn labels_of_other_types_and_records_that_are_not_maps_are_refused() {
        assert_eq!(
            refused("81 a1 f5 01"),
            "senml record 1: a label is neither an integer nor a text"
        );
        assert_eq!(
            refused("82 a2 00 6161 02 01 01"),
            "senml record 2: not a map"
        );
        assert_eq!(refused("a0"), "senml+cbor: a pack is an array of maps");
    }

    #[test]
    fn a_label_twice_and_wrong_types_are_refused() {
        assert_eq!(
            refused("81 a3 00 6161 02 01 02 02"),
            "senml record 1: label v twice"
        );
        // vd as text, n as bytes, v as NaN.
        assert_eq!(
            refused("81 a2 00 6161 08 6161"),
            "senml record 1: vd must be binary data"
        );
        assert_eq!(
            refused("81 a2 00 4161 02 01"),
            "senml record 1: n must be a string"
        );
        assert_eq!(
            refused("81 a2 00 6161 02 f97e00"),
            "senml record 1: v must be a finite number"
        );
    }

    #[test]
    fn truncations_and_trailing_bytes_are_refused() {
        let pack = hex("81 a2 00 6161 02 01");
        for len in 0..pack.len() {
            let options = Options {
                split: false,
                now_ms: 0,
                max_output: 1 << 20,
            };
            assert!(
                matches!(
                    to_json(Some(SENML_CBOR), &pack[..len], &options),
                    Err(Refusal::Malformed(_))
                ),
                "cut at {len}"
            );
        }
        assert!(refused("81 a2 00 6161 02 01 00").contains("bytes after"));
    }
}
