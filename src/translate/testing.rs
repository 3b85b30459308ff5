//! Test helpers: hex input, and comparing JSON by meaning.
//!
//! Expected JSON in the tests is written by hand from the RFCs, so it may
//! spell a number differently from serde_json (`1.0e+300` for `1e300`) or
//! order an object's members differently. Two texts are the same here when
//! they parse to the same values, with integers and floats kept apart
//! (`20` is not `20.0`) and floats equal to within two units in the last
//! place (sums such as base time + time round once in either direction).

use serde_json::Value;

pub(super) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex: {text}");
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII");
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("not hex: {pair}"))
        })
        .collect()
}

#[track_caller]
pub(super) fn assert_same_json(actual: &str, expected: &str, context: &str) {
    let got: Value = serde_json::from_str(actual)
        .unwrap_or_else(|e| panic!("{context}: output is not JSON ({e}): {actual}"));
    let want: Value = serde_json::from_str(expected)
        .unwrap_or_else(|e| panic!("{context}: expected is not JSON ({e}): {expected}"));
    assert!(
        same(&got, &want),
        "{context}:\n  got      {actual}\n  expected {expected}"
    );
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.is_f64(), y.is_f64()) {
            (true, true) => close(x.as_f64(), y.as_f64()),
            (false, false) => x == y,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same(x, y)))
        }
        _ => a == b,
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    if a.is_sign_negative() != b.is_sign_negative() {
        return false;
    }
    a.to_bits().abs_diff(b.to_bits()) <= 2
}

#[test]
fn same_json_tells_integers_from_floats_and_tolerates_the_last_bits() {
    assert!(same(
        &serde_json::json!({"a": [1, 1.5]}),
        &serde_json::from_str(r#"{ "a" : [1, 1.50] }"#).expect("JSON")
    ));
    assert!(!same(&serde_json::json!(20), &serde_json::json!(20.0)));
    assert!(!same(&serde_json::json!(0.0), &serde_json::json!(-0.0)));
    assert!(same(&serde_json::json!(0.1 + 0.2), &serde_json::json!(0.3)));
    assert!(!same(&serde_json::json!(1.0), &serde_json::json!(1.000001)));
    assert!(!same(
        &serde_json::json!({"a": 1}),
        &serde_json::json!({"b": 1})
    ));
}
