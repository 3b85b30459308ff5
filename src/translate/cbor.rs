//! application/cbor (Content-Format 60) to JSON.
//!
//! Follows RFC 8949 §6.1 (converting CBOR to JSON) where it decides, and
//! decides where it leaves a choice:
//! - Integers that fit in an i64 or a u64 are JSON numbers. Any other
//!   integer (major type 1 below -2^63, and bignums, tags 2 and 3) is a
//!   JSON string of its decimal digits: most JSON readers would silently
//!   round such a number to a double, a string keeps it exact and tells the
//!   reader to take care. (RFC 8949 suggests base64url for bignums; digits
//!   are as safe and readable.) A bignum that fits is a number, like any
//!   other integer of that value. Bignums over 1,024 bytes are refused.
//! - Floats are JSON numbers in their shortest round-trip form (a binary16
//!   1.5 is `1.5`, 1.0 stays `1.0`); NaN and the infinities are `null`.
//! - `undefined` and every simple value other than false/true/null are `null`.
//! - Byte strings are base64url strings without padding, unless enclosed in
//!   an expected-conversion tag: 22 base64 with padding, 23 base16 in upper
//!   case (RFC 8949 §3.4.5.2, the innermost such tag applies).
//! - Tags are dropped for their content (tag 1, epoch time, is thus its
//!   number). Tags 0, 1, 2 and 3 must hold what RFC 8949 §3.4 says (a text,
//!   a number, a byte string) or the payload is refused.
//! - Map keys: a key that converts to a JSON string (text, byte string,
//!   decimal integer) is that string; any other key is its JSON text as a
//!   string: `1` -> `"1"`, `true` -> `"true"`, `[1,2]` -> `"[1,2]"`. Keys
//!   that come out equal (twice `1`, or `1` and `"1"`) are refused: RFC 8949
//!   §5.6 makes duplicate keys invalid, and "last one wins" would drop a
//!   device's data without a word.
//! - Indefinite-length strings, arrays and maps are read like definite ones.
//! - Refused as not well-formed (RFC 8949 §3): truncation, bytes after the
//!   item (a CBOR sequence is another format), reserved initial bytes, a
//!   break outside an indefinite item, an indefinite string with a chunk of
//!   another type, a two-byte simple value below 32, invalid UTF-8.
//!
//! Arrays and maps nest at most [`MAX_DEPTH`] deep; the recursion below is
//! bounded by that, and a chain of tags is read in a loop. Nothing is
//! allocated from a declared length: minicbor reads from the payload slice,
//! so a length larger than the payload is a truncation.

use super::out::Out;
use super::{malformed, Refusal, MAX_DEPTH};
use base64::Engine;
use minicbor::data::Type;
use minicbor::Decoder;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// The largest bignum converted to decimal (the conversion is quadratic).
const MAX_BIGNUM_BYTES: usize = 1024;

/// The tag numbers given a meaning here.
const TAG_DATE_TIME: u64 = 0;
const TAG_EPOCH_TIME: u64 = 1;
const TAG_POSITIVE_BIGNUM: u64 = 2;
const TAG_NEGATIVE_BIGNUM: u64 = 3;
const TAG_TO_BASE64URL: u64 = 21;
const TAG_TO_BASE64: u64 = 22;
const TAG_TO_BASE16: u64 = 23;

/// How byte strings become JSON strings (RFC 8949 §3.4.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Base64Url,
    Base64,
    Base16,
}

/// Converts one whole CBOR data item to JSON.
pub(super) fn to_json(payload: &[u8], out: &mut Out) -> Result<(), Refusal> {
    let mut reader = Reader::new(payload);
    reader.item(out, 0)?;
    reader.end()
}

/// A CBOR decoder whose every failure is a [`Refusal`]; SenML CBOR reads
/// its records through it too.
pub(super) struct Reader<'b> {
    d: Decoder<'b>,
}

impl<'b> Reader<'b> {
    pub(super) fn new(bytes: &'b [u8]) -> Reader<'b> {
        Reader {
            d: Decoder::new(bytes),
        }
    }

    /// Refuses bytes after the item.
    pub(super) fn end(&self) -> Result<(), Refusal> {
        let at = self.d.position();
        if at != self.d.input().len() {
            return Err(malformed(format!(
                "cbor: bytes after the item at byte {at}"
            )));
        }
        Ok(())
    }

    pub(super) fn position(&self) -> usize {
        self.d.position()
    }

    /// The type of the next item.
    pub(super) fn ty(&self) -> Result<Type, Refusal> {
        self.d.datatype().map_err(decode_error)
    }

    /// One item, converted to JSON; `depth` is how many arrays and maps
    /// enclose it.
    pub(super) fn item(&mut self, out: &mut Out, depth: usize) -> Result<(), Refusal> {
        self.item_as(out, depth, Encoding::Base64Url)
    }

    /// One item, checked as [`Reader::item`] does, its JSON not kept
    /// (SenML's unknown fields); `room` bounds that JSON all the same.
    pub(super) fn skip(&mut self, depth: usize, room: usize) -> Result<(), Refusal> {
        self.item(&mut Out::new(room), depth)
    }

    /// Any integer, major type 0 or 1.
    pub(super) fn int(&mut self) -> Result<i128, Refusal> {
        self.d.int().map(i128::from).map_err(decode_error)
    }

    /// Any float, widened to f64 (exactly: every binary16 and binary32
    /// value is a binary64 value).
    pub(super) fn float(&mut self) -> Result<f64, Refusal> {
        self.d.f64().map_err(decode_error)
    }

    pub(super) fn bool(&mut self) -> Result<bool, Refusal> {
        self.d.bool().map_err(decode_error)
    }

    pub(super) fn tag(&mut self) -> Result<u64, Refusal> {
        self.d.tag().map(|t| t.as_u64()).map_err(decode_error)
    }

    /// A text string, definite or indefinite.
    pub(super) fn text(&mut self) -> Result<Cow<'b, str>, Refusal> {
        let mut chunks = self.d.str_iter().map_err(decode_error)?;
        let first = match chunks.next() {
            None => return Ok(Cow::Borrowed("")),
            Some(chunk) => chunk.map_err(decode_error)?,
        };
        let Some(second) = chunks.next() else {
            return Ok(Cow::Borrowed(first));
        };
        let mut all = String::from(first);
        all.push_str(second.map_err(decode_error)?);
        for chunk in chunks {
            all.push_str(chunk.map_err(decode_error)?);
        }
        Ok(Cow::Owned(all))
    }

    /// A byte string, definite or indefinite.
    pub(super) fn bytes(&mut self) -> Result<Cow<'b, [u8]>, Refusal> {
        let mut chunks = self.d.bytes_iter().map_err(decode_error)?;
        let first = match chunks.next() {
            None => return Ok(Cow::Borrowed(&[])),
            Some(chunk) => chunk.map_err(decode_error)?,
        };
        let Some(second) = chunks.next() else {
            return Ok(Cow::Borrowed(first));
        };
        let mut all = first.to_vec();
        all.extend_from_slice(second.map_err(decode_error)?);
        for chunk in chunks {
            all.extend_from_slice(chunk.map_err(decode_error)?);
        }
        Ok(Cow::Owned(all))
    }

    /// Begins an array: its length, `None` if indefinite.
    pub(super) fn array(&mut self) -> Result<Option<u64>, Refusal> {
        self.d.array().map_err(decode_error)
    }

    /// Begins a map: its number of pairs, `None` if indefinite.
    pub(super) fn map(&mut self) -> Result<Option<u64>, Refusal> {
        self.d.map().map_err(decode_error)
    }

    /// Whether another element follows in an array or map begun with
    /// `remaining` elements (or pairs); counts it, and consumes the break
    /// that ends an indefinite one.
    pub(super) fn more(&mut self, remaining: &mut Option<u64>) -> Result<bool, Refusal> {
        match remaining {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None if self.ty()? == Type::Break => {
                self.d.set_position(self.d.position() + 1);
                Ok(false)
            }
            None => Ok(true),
        }
    }

    fn item_as(&mut self, out: &mut Out, depth: usize, inherited: Encoding) -> Result<(), Refusal> {
        let at = self.d.position();
        let mut encoding = inherited;
        let mut tag = None;
        while self.ty()? == Type::Tag {
            if let Some(outer @ TAG_DATE_TIME..=TAG_NEGATIVE_BIGNUM) = tag {
                return Err(malformed(format!(
                    "cbor: tag {outer} at byte {at} holds a tag"
                )));
            }
            let number = self.tag()?;
            encoding = match number {
                TAG_TO_BASE64URL => Encoding::Base64Url,
                TAG_TO_BASE64 => Encoding::Base64,
                TAG_TO_BASE16 => Encoding::Base16,
                _ => encoding,
            };
            tag = Some(number);
        }
        let ty = self.ty()?;
        match tag {
            Some(TAG_DATE_TIME) if !matches!(ty, Type::String | Type::StringIndef) => {
                return Err(malformed(format!("cbor: tag 0 at byte {at} holds no text")));
            }
            Some(TAG_EPOCH_TIME) if !is_number(ty) => {
                return Err(malformed(format!(
                    "cbor: tag 1 at byte {at} holds no number"
                )));
            }
            Some(number @ (TAG_POSITIVE_BIGNUM | TAG_NEGATIVE_BIGNUM)) => {
                if !matches!(ty, Type::Bytes | Type::BytesIndef) {
                    return Err(malformed(format!(
                        "cbor: tag {number} at byte {at} holds no byte string"
                    )));
                }
                return self.bignum(out, number == TAG_NEGATIVE_BIGNUM);
            }
            _ => {}
        }
        match ty {
            Type::Bool => match self.bool()? {
                true => out.raw(b"true"),
                false => out.raw(b"false"),
            },
            Type::Null => {
                self.d.null().map_err(decode_error)?;
                out.raw(b"null")
            }
            Type::Undefined => {
                self.d.undefined().map_err(decode_error)?;
                out.raw(b"null")
            }
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64
            | Type::Int => {
                let n = self.int()?;
                integer(out, n)
            }
            Type::F16 | Type::F32 | Type::F64 => {
                let x = self.float()?;
                out.f64(x)
            }
            Type::Simple => {
                let start = self.d.position();
                let value = self.d.simple().map_err(decode_error)?;
                // RFC 8949 §3.3: the two-byte form carries 32..=255 only.
                if self.d.position() - start == 2 && value < 32 {
                    return Err(malformed(format!(
                        "cbor: two-byte simple value {value} at byte {start}"
                    )));
                }
                out.raw(b"null")
            }
            Type::Bytes | Type::BytesIndef => {
                let bytes = self.bytes()?;
                out.string(&encode(&bytes, encoding))
            }
            Type::String | Type::StringIndef => {
                let text = self.text()?;
                out.string(&text)
            }
            Type::Array | Type::ArrayIndef => self.array_json(out, depth, encoding),
            Type::Map | Type::MapIndef => self.map_json(out, depth, encoding),
            Type::Break => Err(malformed(format!("cbor: unexpected break at byte {at}"))),
            // The loop above read every tag.
            Type::Tag => Err(malformed(format!("cbor: invalid tag at byte {at}"))),
            Type::Unknown(byte) => Err(malformed(format!(
                "cbor: reserved initial byte 0x{byte:02x} at byte {}",
                self.d.position()
            ))),
        }
    }

    fn array_json(
        &mut self,
        out: &mut Out,
        depth: usize,
        encoding: Encoding,
    ) -> Result<(), Refusal> {
        let at = self.d.position();
        if depth >= MAX_DEPTH {
            return Err(too_deep(at));
        }
        let mut remaining = self.array()?;
        out.raw(b"[")?;
        let mut first = true;
        while self.more(&mut remaining)? {
            if !first {
                out.raw(b",")?;
            }
            first = false;
            self.item_as(out, depth + 1, encoding)?;
        }
        out.raw(b"]")
    }

    fn map_json(&mut self, out: &mut Out, depth: usize, encoding: Encoding) -> Result<(), Refusal> {
        let at = self.d.position();
        if depth >= MAX_DEPTH {
            return Err(too_deep(at));
        }
        let mut remaining = self.map()?;
        out.raw(b"{")?;
        let mut keys = BTreeSet::new();
        while self.more(&mut remaining)? {
            if !keys.is_empty() {
                out.raw(b",")?;
            }
            let key_at = self.d.position();
            let key = self.key(out.room(), depth + 1, encoding)?;
            out.raw(&key)?;
            if !keys.insert(key) {
                return Err(malformed(format!(
                    "cbor: duplicate map key at byte {key_at}"
                )));
            }
            out.raw(b":")?;
            self.item_as(out, depth + 1, encoding)?;
        }
        out.raw(b"}")
    }

    /// A map key as a JSON string literal, within `room` bytes.
    fn key(&mut self, room: usize, depth: usize, encoding: Encoding) -> Result<Vec<u8>, Refusal> {
        let mut rendered = Out::new(room);
        self.item_as(&mut rendered, depth, encoding)?;
        let rendered = rendered.into_bytes();
        if rendered.first() == Some(&b'"') {
            return Ok(rendered);
        }
        // JSON text is ASCII punctuation around what serde_json wrote: UTF-8.
        let text = String::from_utf8(rendered).map_err(|_| malformed("cbor: invalid key"))?;
        let mut literal = Out::new(room);
        literal.string(&text)?;
        Ok(literal.into_bytes())
    }

    fn bignum(&mut self, out: &mut Out, negative: bool) -> Result<(), Refusal> {
        let at = self.d.position();
        let bytes = self.bytes()?;
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let magnitude = &bytes[start..];
        if magnitude.len() > MAX_BIGNUM_BYTES {
            return Err(malformed(format!(
                "cbor: bignum at byte {at} over {MAX_BIGNUM_BYTES} bytes"
            )));
        }
        let small = match magnitude.len() {
            0..=8 => Some(magnitude.iter().fold(0u64, |n, &b| n << 8 | u64::from(b))),
            _ => None,
        };
        match (negative, small) {
            (false, Some(n)) => out.u64(n),
            (true, Some(n)) if n <= i64::MAX as u64 => out.i64(-1 - n as i64),
            _ => out.string(&decimal(magnitude, negative)),
        }
    }
}

fn is_number(ty: Type) -> bool {
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
            | Type::F16
            | Type::F32
            | Type::F64
    )
}

/// A JSON number when it fits a 64-bit integer, else its decimal string.
fn integer(out: &mut Out, n: i128) -> Result<(), Refusal> {
    if let Ok(n) = u64::try_from(n) {
        out.u64(n)
    } else if let Ok(n) = i64::try_from(n) {
        out.i64(n)
    } else {
        out.string(&n.to_string())
    }
}

fn encode(bytes: &[u8], encoding: Encoding) -> String {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    match encoding {
        Encoding::Base64Url => URL_SAFE_NO_PAD.encode(bytes),
        Encoding::Base64 => STANDARD.encode(bytes),
        Encoding::Base16 => {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            let mut text = String::with_capacity(bytes.len() * 2);
            for &b in bytes {
                text.push(char::from(DIGITS[usize::from(b >> 4)]));
                text.push(char::from(DIGITS[usize::from(b & 15)]));
            }
            text
        }
    }
}

/// The decimal digits of a big-endian magnitude `n`; of `-1 - n` when
/// `negative` (a tag 3 bignum).
fn decimal(magnitude: &[u8], negative: bool) -> String {
    const LIMB: u64 = 1_000_000_000;
    // Little-endian limbs of nine decimal digits each.
    let mut limbs: Vec<u64> = Vec::with_capacity(magnitude.len() / 3 + 1);
    for &byte in magnitude {
        let mut carry = u64::from(byte);
        for limb in limbs.iter_mut() {
            let v = *limb * 256 + carry;
            *limb = v % LIMB;
            carry = v / LIMB;
        }
        while carry > 0 {
            limbs.push(carry % LIMB);
            carry /= LIMB;
        }
    }
    if negative {
        let mut carry = 1;
        for limb in limbs.iter_mut() {
            let v = *limb + carry;
            *limb = v % LIMB;
            carry = v / LIMB;
            if carry == 0 {
                break;
            }
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut text = String::with_capacity(limbs.len() * 9 + 1);
    if negative {
        text.push('-');
    }
    match limbs.split_last() {
        None => text.push('0'),
        Some((top, rest)) => {
            text.push_str(&top.to_string());
            for limb in rest.iter().rev() {
                text.push_str(&format!("{limb:09}"));
            }
        }
    }
    text
}

fn too_deep(at: usize) -> Refusal {
    malformed(format!(
        "cbor: nesting deeper than {MAX_DEPTH} at byte {at}"
    ))
}

fn decode_error(error: minicbor::decode::Error) -> Refusal {
    if error.is_end_of_input() {
        return malformed("cbor: truncated");
    }
    match error.position() {
        Some(at) if error.is_type_mismatch() => {
            malformed(format!("cbor: unexpected item at byte {at}"))
        }
        Some(at) => malformed(format!("cbor: invalid text or length at byte {at}")),
        None => malformed("cbor: invalid item"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_json, hex};
    use super::*;

    fn convert(bytes: &[u8]) -> Result<String, Refusal> {
        let mut out = Out::new(1 << 20);
        to_json(bytes, &mut out)?;
        Ok(String::from_utf8(out.into_bytes()).expect("JSON is UTF-8"))
    }

    fn converts(encoded: &str, expected: &str) {
        let json = convert(&hex(encoded)).unwrap_or_else(|e| panic!("{encoded}: {e:?}"));
        assert_same_json(&json, expected, encoded);
    }

    fn refused(bytes: &[u8]) -> String {
        match convert(bytes) {
            Err(Refusal::Malformed(diagnostic)) => diagnostic,
            other => panic!("{bytes:02x?}: expected Malformed, got {other:?}"),
        }
    }

    // RFC 8949 Appendix A, with the JSON each item becomes under this
    // module's rules, written from the diagnostic notation.
    const APPENDIX_A: &[(&str, &str)] = &[
        ("00", "0"),
        ("01", "1"),
        ("0a", "10"),
        ("17", "23"),
        ("1818", "24"),
        ("1819", "25"),
        ("1864", "100"),
        ("1903e8", "1000"),
        ("1a000f4240", "1000000"),
        ("1b000000e8d4a51000", "1000000000000"),
        ("1bffffffffffffffff", "18446744073709551615"),
        ("c249010000000000000000", "\"18446744073709551616\""),
        ("3bffffffffffffffff", "\"-18446744073709551616\""),
        ("c349010000000000000000", "\"-18446744073709551617\""),
        ("20", "-1"),
        ("29", "-10"),
        ("3863", "-100"),
        ("3903e7", "-1000"),
        ("f90000", "0.0"),
        ("f98000", "-0.0"),
        ("f93c00", "1.0"),
        ("fb3ff199999999999a", "1.1"),
        ("f93e00", "1.5"),
        ("f97bff", "65504.0"),
        ("fa47c35000", "100000.0"),
        ("fa7f7fffff", "3.4028234663852886e+38"),
        ("fb7e37e43c8800759c", "1.0e+300"),
        ("f90001", "5.960464477539063e-8"),
        ("f90400", "0.00006103515625"),
        ("f9c400", "-4.0"),
        ("fbc010666666666666", "-4.1"),
        ("f97c00", "null"),
        ("f97e00", "null"),
        ("f9fc00", "null"),
        ("fa7f800000", "null"),
        ("fa7fc00000", "null"),
        ("faff800000", "null"),
        ("fb7ff0000000000000", "null"),
        ("fb7ff8000000000000", "null"),
        ("fbfff0000000000000", "null"),
        ("f4", "false"),
        ("f5", "true"),
        ("f6", "null"),
        ("f7", "null"),
        ("f0", "null"),
        ("f8ff", "null"),
        (
            "c074323031332d30332d32315432303a30343a30305a",
            "\"2013-03-21T20:04:00Z\"",
        ),
        ("c11a514b67b0", "1363896240"),
        ("c1fb41d452d9ec200000", "1363896240.5"),
        ("d74401020304", "\"01020304\""),
        ("d818456449455446", "\"ZElFVEY\""),
        (
            "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
            "\"http://www.example.com\"",
        ),
        ("40", "\"\""),
        ("4401020304", "\"AQIDBA\""),
        ("60", "\"\""),
        ("6161", "\"a\""),
        ("6449455446", "\"IETF\""),
        ("62225c", r#""\"\\""#),
        ("62c3bc", "\"\u{fc}\""),
        ("63e6b0b4", "\"\u{6c34}\""),
        ("64f0908591", "\"\u{10151}\""),
        ("80", "[]"),
        ("83010203", "[1,2,3]"),
        ("8301820203820405", "[1,[2,3],[4,5]]"),
        (
            "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25]",
        ),
        ("a0", "{}"),
        ("a201020304", r#"{"1":2,"3":4}"#),
        ("a26161016162820203", r#"{"a":1,"b":[2,3]}"#),
        ("826161a161626163", r#"["a",{"b":"c"}]"#),
        (
            "a56161614161626142616361436164614461656145",
            r#"{"a":"A","b":"B","c":"C","d":"D","e":"E"}"#,
        ),
        ("5f42010243030405ff", "\"AQIDBAU\""),
        ("7f657374726561646d696e67ff", "\"streaming\""),
        ("9fff", "[]"),
        ("9f018202039f0405ffff", "[1,[2,3],[4,5]]"),
        ("9f01820203820405ff", "[1,[2,3],[4,5]]"),
        ("83018202039f0405ff", "[1,[2,3],[4,5]]"),
        ("83019f0203ff820405", "[1,[2,3],[4,5]]"),
        (
            "9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25]",
        ),
        ("bf61610161629f0203ffff", r#"{"a":1,"b":[2,3]}"#),
        ("826161bf61626163ff", r#"["a",{"b":"c"}]"#),
        ("bf6346756ef563416d7421ff", r#"{"Fun":true,"Amt":-2}"#),
    ];

    #[test]
    fn rfc_8949_appendix_a_examples_convert_as_the_rules_say() {
        for (encoded, expected) in APPENDIX_A {
            converts(encoded, expected);
        }
    }

    #[test]
    fn every_truncation_of_the_appendix_a_examples_is_malformed() {
        for (encoded, _) in APPENDIX_A {
            let bytes = hex(encoded);
            for len in 0..bytes.len() {
                let diagnostic = refused(&bytes[..len]);
                assert!(
                    diagnostic.starts_with("cbor: "),
                    "{encoded} cut at {len}: {diagnostic}"
                );
            }
        }
    }

    #[test]
    fn map_keys_are_kept_in_order_and_arrays_compactly() {
        // Exact bytes: the order of the device's map, no whitespace.
        assert_eq!(
            convert(&hex("bf6346756ef563416d7421ff")).as_deref(),
            Ok(r#"{"Fun":true,"Amt":-2}"#)
        );
        assert_eq!(
            convert(&hex("a262010200616101")).as_deref(),
            Ok(r#"{"\u0001\u0002":0,"a":1}"#)
        );
    }

    #[test]
    fn non_string_keys_become_their_json_text() {
        // {1: "a", -1: "b", true: 1, null: 2, 1.5: 3, [1, 2]: 4, {"a": 1}: 5}
        converts(
            "a7016161206162f501f602f93e000382010204a161610105",
            r#"{"1":"a","-1":"b","true":1,"null":2,"1.5":3,"[1,2]":4,"{\"a\":1}":5}"#,
        );
        // A byte string key is its base64url string; a bignum key its digits.
        converts(
            "a2420102f4c249010000000000000000f5",
            r#"{"AQI":false,"18446744073709551616":true}"#,
        );
    }

    #[test]
    fn duplicate_keys_are_refused_even_across_types() {
        // {1: 2, 1: 3}
        assert!(refused(&hex("a201020103")).contains("duplicate map key"));
        // {1: 2, "1": 3}
        assert!(refused(&hex("a20102613103")).contains("duplicate map key"));
        // {_ "a": 1, "a": 2}
        assert!(refused(&hex("bf616101616102ff")).contains("duplicate map key"));
        // The same key in two different maps is fine.
        converts("82a10102a10103", r#"[{"1":2},{"1":3}]"#);
    }

    #[test]
    fn integers_beyond_64_bits_are_decimal_strings_and_the_rest_numbers() {
        converts("3b7fffffffffffffff", "-9223372036854775808");
        converts("3b8000000000000000", "\"-9223372036854775809\"");
        // Bignums are numbers when they fit, whatever their encoding.
        converts("c240", "0");
        converts("c3420100", "-257");
        converts("c248ffffffffffffffff", "18446744073709551615");
        converts("c348ffffffffffffffff", "\"-18446744073709551616\"");
        converts("c3487fffffffffffffff", "-9223372036854775808");
        converts(
            "c2510100000000000000000000000000000000",
            "\"340282366920938463463374607431768211456\"",
        );
        // An indefinite byte string is a bignum too: 2^64 in two chunks.
        converts("c25f4101480000000000000000ff", "\"18446744073709551616\"");
    }

    #[test]
    fn a_bignum_over_1024_bytes_is_refused() {
        let mut bytes = hex("c25904010100");
        bytes.extend(std::iter::repeat_n(0, 1024));
        let diagnostic = refused(&bytes);
        assert!(diagnostic.contains("bignum"), "{diagnostic}");
        // Leading zeros do not count.
        let mut zeros = hex("c2590401");
        zeros.extend(std::iter::repeat_n(0, 1024));
        zeros.push(7);
        assert_eq!(convert(&zeros).as_deref(), Ok("7"));
    }

    #[test]
    fn expected_conversion_tags_choose_the_byte_string_encoding() {
        // 22(h'fbff') is base64 with padding, 23 base16, 21 base64url.
        converts("d642fbff", "\"+/8=\"");
        converts("d742fbff", "\"FBFF\"");
        converts("d542fbff", "\"-_8\"");
        // The tag applies to byte strings inside the item, the innermost
        // tag winning, and not to text.
        converts("d78342fbffd642fbff6141", r#"["FBFF","+/8=","A"]"#);
        converts("d7a142fbff42fbff", r#"{"FBFF":"FBFF"}"#);
    }

    #[test]
    fn other_tags_are_dropped_for_their_content() {
        // 55799(1(2.5)), 24(h'01'), 4([-1, 15])
        converts("d9d9f7c1f94100", "2.5");
        converts("d8184101", "\"AQ\"");
        converts("c482200f", "[-1,15]");
    }

    #[test]
    fn tags_holding_the_wrong_type_are_refused() {
        for (encoded, why) in [
            ("c001", "tag 0"),
            ("c16161", "tag 1"),
            ("c201", "tag 2"),
            ("c36161", "tag 3"),
            ("c1c11a514b67b0", "tag 1"),
        ] {
            let diagnostic = refused(&hex(encoded));
            assert!(diagnostic.contains(why), "{encoded}: {diagnostic}");
        }
    }

    #[test]
    fn ill_formed_items_are_refused() {
        for encoded in [
            "1c",           // reserved additional information
            "3e",           // reserved additional information
            "1f",           // indefinite integer
            "dc01",         // reserved tag encoding
            "fc",           // reserved simple encoding
            "ff",           // break outside an indefinite item
            "8201ff",       // break inside a definite array
            "f800",         // two-byte simple value below 32
            "f81f",         // two-byte simple value below 32
            "c6f810",       // the same, tagged
            "5f6161ff",     // a text chunk inside a byte string
            "7f5f41ffff",   // an indefinite chunk
            "62c328",       // invalid UTF-8
            "7f61c361bcff", // a character split across chunks
            "0000",         // two items: a CBOR sequence
            "81",           // truncated array
            "a101",         // a map without the value of its key
        ] {
            refused(&hex(encoded));
        }
    }

    #[test]
    fn a_two_byte_simple_value_from_32_on_is_null() {
        converts("f820", "null");
        converts("83f0f820f7", "[null,null,null]");
    }

    #[test]
    fn nesting_is_bounded_at_32_without_overflowing_the_stack() {
        let mut ok = vec![0x81u8; 32];
        ok.push(0x00);
        let expected = format!("{}0{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(convert(&ok).as_deref(), Ok(expected.as_str()));
        let mut deep = vec![0x81u8; 33];
        deep.push(0x00);
        assert!(refused(&deep).contains("nesting deeper than 32"));
        // Maps, indefinite arrays and keys count the same; far past the
        // bound is refused as quickly.
        let mut keys = vec![0xa1u8; 1_000_000];
        keys.push(0x00);
        assert!(refused(&keys).contains("nesting"));
        let indefinite = vec![0x9fu8; 1_000_000];
        assert!(refused(&indefinite).contains("nesting"));
        // A long chain of tags is read in a loop.
        let mut tags = vec![0xc6u8; 1_000_000];
        tags.push(0x01);
        assert_eq!(convert(&tags).as_deref(), Ok("1"));
    }

    #[test]
    fn declared_lengths_larger_than_the_payload_are_truncations_not_allocations() {
        for encoded in [
            "5bffffffffffffffff",
            "9bffffffffffffffff",
            "bbffffffffffffffff00",
            "7bffffffffffffffff",
        ] {
            assert_eq!(refused(&hex(encoded)), "cbor: truncated", "{encoded}");
        }
    }

    #[test]
    fn a_map_used_as_a_key_is_its_json_text_escaped() {
        // {{"\"": 0}: 1}
        let json = convert(&hex("a1a161220001")).expect("converts");
        assert_eq!(json, r#"{"{\"\\\"\":0}":1}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let key = parsed.as_object().and_then(|o| o.keys().next().cloned());
        assert_eq!(key.as_deref(), Some(r#"{"\"":0}"#));
    }

    #[test]
    fn keys_escaped_within_keys_stay_within_the_budget() {
        // 30 maps, each the key of the next: every level escapes the
        // quotes of the one inside it, doubling the backslashes.
        let mut bytes = vec![0xa1; 30];
        bytes.extend(hex("612200")); // {"\"": 0}
        bytes.extend([0x01; 29]);
        let mut out = Out::new(100_000);
        assert_eq!(to_json(&bytes, &mut out), Err(Refusal::TooLarge));
        assert!(out.len() <= 100_000);
    }
}
