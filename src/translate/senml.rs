//! SenML (RFC 8428) packs resolved into self-contained records.
//!
//! A SenML pack is compact because its records lean on each other: a base
//! name, time, unit, value or sum applies to its record and every later one
//! until replaced, and times below 2^28 s count from "now". A consumer
//! reading one MQTT message cannot know "now" or the records before, so
//! the gateway resolves them (§4.6) as it receives the pack, with the time
//! of reception as "now" (a parameter: no clock is read here). Both
//! representations are read into the same [`Record`]s (`senml_json.rs`,
//! `senml_cbor.rs`) and resolved here, one record at a time, in order.
//!
//! Rules, each from the RFC unless marked as a choice:
//! - Name = base name + name; it must match §4.5.1: a letter or digit, then
//!   letters, digits, `-`, `:`, `.`, `/`, `_`.
//! - Unit = the record's unit, else the base unit, else none.
//! - Time = base time + time (a missing one is 0); below 2^28 it is
//!   relative and becomes `now + time`. Every resolved record has a time.
//! - Value: exactly one of v, vs, vb, vd, unless the record has a sum. The
//!   base value is added to `v` (choice: it does not give a value to a
//!   record that has none, or a string one).
//! - Sum = base sum + sum; a record has one when either is present (§4.5.4:
//!   so a base sum gives a sum to every later record).
//! - Version: `bver` is a base field, 10 by default; a pack whose records
//!   are not all of one version is refused (§4.4), as is a version above 10
//!   (§4.4: "MUST NOT use this object"). A version other than 10 is written
//!   in every resolved record (§4.6).
//! - A record with no value and no sum is refused, except one that carries
//!   only base fields (choice: RFC 8428's own §5.1.7 example begins with
//!   `{"bn": ...}` alone): it sets bases for the records after it and
//!   resolves to nothing. A pack with no record at all, or none that
//!   resolves, is refused.
//! - Unknown labels are ignored and not carried over; a label ending in `_`
//!   is refused (§4.4, see `labels.rs`). A label twice in a record is
//!   refused.
//! - Numbers must be finite. Integers stay integers while no float is
//!   added to them (so `"v":20` stays `20`); relative times are floats.
//! - The resolved records are sorted by time (§4.6: "in chronological order
//!   in the Pack"; stable, so records of the same time keep their order).
//!
//! Output: a JSON array of resolved records with RFC 8428's JSON labels, in
//! the order n, u, t, v|vs|vb|vd, s, ut, bver; `vd` is base64url without
//! padding. With `split`, each record is a message of its own, an array of
//! that one record (still a SenML pack), with its name for the topic.

use super::labels::Label;
use super::out::Out;
use super::{malformed, Refusal, Translated};
use base64::Engine;

/// Times below 2^28 s are relative to "now" (§4.5.3).
const RELATIVE_BELOW: f64 = 268_435_456.0;

/// The version of SenML that RFC 8428 defines (§4.1).
const VERSION: u64 = 10;

/// The least JSON a resolved record takes besides its strings: `{"n":"","t":0}`.
const RECORD_OVERHEAD: usize = 14;

/// A SenML number: an integer while it came as one, else a double.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    const ZERO: Num = Num::Int(0);

    fn to_f64(self) -> f64 {
        match self {
            Num::Int(n) => n as f64,
            Num::Float(x) => x,
        }
    }

    fn is_finite(self) -> bool {
        self.to_f64().is_finite()
    }

    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => match a.checked_add(b) {
                Some(sum) => Num::Int(sum),
                None => Num::Float(a as f64 + b as f64),
            },
            _ => Num::Float(self.to_f64() + other.to_f64()),
        }
    }
}

/// A field's value as read, before its type is checked against its label.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field {
    Text(String),
    Number(Num),
    Bool(bool),
    Bytes(Vec<u8>),
    /// Anything else (null, an array, a map, an unknown tag).
    Other,
}

/// One record as read: the fields of RFC 8428's labels, each at most once.
#[derive(Debug, Default)]
pub(super) struct Record {
    fields: [Option<Field>; Label::ALL.len()],
}

impl Record {
    /// Sets a field; refuses a label the record already has.
    pub(super) fn set(&mut self, label: Label, field: Field, index: usize) -> Result<(), Refusal> {
        let slot = &mut self.fields[label.index()];
        if slot.is_some() {
            return Err(malformed(format!(
                "senml record {index}: label {} twice",
                label.json()
            )));
        }
        *slot = Some(field);
        Ok(())
    }

    fn get(&self, label: Label) -> Option<&Field> {
        self.fields[label.index()].as_ref()
    }

    fn text(&self, label: Label, index: usize) -> Result<Option<&str>, Refusal> {
        match self.get(label) {
            None => Ok(None),
            Some(Field::Text(text)) => Ok(Some(text)),
            Some(_) => Err(wrong_type(index, label, "a string")),
        }
    }

    fn number(&self, label: Label, index: usize) -> Result<Option<Num>, Refusal> {
        match self.get(label) {
            None => Ok(None),
            Some(Field::Number(n)) if n.is_finite() => Ok(Some(*n)),
            Some(_) => Err(wrong_type(index, label, "a finite number")),
        }
    }

    fn boolean(&self, label: Label, index: usize) -> Result<Option<bool>, Refusal> {
        match self.get(label) {
            None => Ok(None),
            Some(Field::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(index, label, "a boolean")),
        }
    }

    fn data(&self, label: Label, index: usize) -> Result<Option<&[u8]>, Refusal> {
        match self.get(label) {
            None => Ok(None),
            Some(Field::Bytes(bytes)) => Ok(Some(bytes)),
            Some(_) => Err(wrong_type(index, label, "binary data")),
        }
    }

    fn version(&self, index: usize) -> Result<Option<u64>, Refusal> {
        match self.get(Label::BaseVersion) {
            None => Ok(None),
            Some(Field::Number(Num::Int(n))) if *n >= 1 => match u64::try_from(*n) {
                Ok(n) if n <= VERSION => Ok(Some(n)),
                _ => Err(malformed(format!(
                    "senml record {index}: version {n} is newer than {VERSION}"
                ))),
            },
            Some(_) => Err(wrong_type(index, Label::BaseVersion, "a positive integer")),
        }
    }
}

fn wrong_type(index: usize, label: Label, what: &str) -> Refusal {
    malformed(format!(
        "senml record {index}: {} must be {what}",
        label.json()
    ))
}

/// A record's value, resolved.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(Num),
    Text(String),
    Bool(bool),
    Data(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    name: String,
    unit: Option<String>,
    time: Num,
    value: Option<Value>,
    sum: Option<Num>,
    update_time: Option<Num>,
    version: u64,
}

/// Resolves the records of one pack, fed in order.
pub(super) struct Resolver {
    /// "Now", in seconds since the Unix epoch.
    now: f64,
    /// The output budget; resolved records are counted against it as they
    /// come, so a base name repeated in many records cannot grow memory.
    max_output: usize,
    estimated: usize,
    records: usize,
    base_name: String,
    base_time: Num,
    base_unit: Option<String>,
    base_value: Option<Num>,
    base_sum: Option<Num>,
    version: u64,
    pack_version: Option<u64>,
    resolved: Vec<Resolved>,
}

impl Resolver {
    pub(super) fn new(now_ms: u64, max_output: usize) -> Resolver {
        Resolver {
            now: now_ms as f64 / 1000.0,
            max_output,
            estimated: 0,
            records: 0,
            base_name: String::new(),
            base_time: Num::ZERO,
            base_unit: None,
            base_value: None,
            base_sum: None,
            version: VERSION,
            pack_version: None,
            resolved: Vec::new(),
        }
    }

    /// The next record of the pack; `index` counts records from 1.
    pub(super) fn push(&mut self, index: usize, record: &Record) -> Result<(), Refusal> {
        self.records = index;
        // Base fields apply to their own record too (§4.1).
        if let Some(base_name) = record.text(Label::BaseName, index)? {
            self.base_name = base_name.to_owned();
        }
        if let Some(base_time) = record.number(Label::BaseTime, index)? {
            self.base_time = base_time;
        }
        if let Some(base_unit) = record.text(Label::BaseUnit, index)? {
            self.base_unit = Some(base_unit.to_owned());
        }
        if let Some(base_value) = record.number(Label::BaseValue, index)? {
            self.base_value = Some(base_value);
        }
        if let Some(base_sum) = record.number(Label::BaseSum, index)? {
            self.base_sum = Some(base_sum);
        }
        if let Some(version) = record.version(index)? {
            self.version = version;
        }
        match self.pack_version {
            Some(pack) if pack != self.version => {
                return Err(malformed(format!(
                    "senml record {index}: version {} but the pack is {pack}",
                    self.version
                )));
            }
            _ => self.pack_version = Some(self.version),
        }

        let name = record.text(Label::Name, index)?;
        let unit = record.text(Label::Unit, index)?;
        let time = record.number(Label::Time, index)?;
        let update_time = record.number(Label::UpdateTime, index)?;
        let sum = record.number(Label::Sum, index)?;
        let number = record.number(Label::Value, index)?;
        let text = record.text(Label::StringValue, index)?;
        let boolean = record.boolean(Label::BoolValue, index)?;
        let data = record.data(Label::DataValue, index)?;

        let present = [
            number.is_some(),
            text.is_some(),
            boolean.is_some(),
            data.is_some(),
        ];
        if present.iter().filter(|&&p| p).count() > 1 {
            return Err(malformed(format!(
                "senml record {index}: more than one of v, vs, vb, vd"
            )));
        }
        let value = if let Some(v) = number {
            Some(Value::Number(self.base_value.unwrap_or(Num::ZERO).add(v)))
        } else if let Some(vs) = text {
            Some(Value::Text(vs.to_owned()))
        } else if let Some(vb) = boolean {
            Some(Value::Bool(vb))
        } else {
            data.map(|vd| Value::Data(vd.to_vec()))
        };
        let sum = match (self.base_sum, sum) {
            (None, None) => None,
            (base, sum) => Some(base.unwrap_or(Num::ZERO).add(sum.unwrap_or(Num::ZERO))),
        };
        if value.is_none() && sum.is_none() {
            if name.is_some() || unit.is_some() || time.is_some() || update_time.is_some() {
                return Err(malformed(format!(
                    "senml record {index}: no value and no sum"
                )));
            }
            // Only base fields: they serve the records after it.
            return Ok(());
        }

        let name = format!("{}{}", self.base_name, name.unwrap_or(""));
        if !valid_name(&name) {
            return Err(malformed(format!(
                "senml record {index}: name is empty or has characters RFC 8428 4.5.1 forbids"
            )));
        }
        let unit = unit.map(str::to_owned).or_else(|| self.base_unit.clone());
        let offset = self.base_time.add(time.unwrap_or(Num::ZERO));
        let time = match offset.to_f64() < RELATIVE_BELOW {
            true => Num::Float(self.now + offset.to_f64()),
            false => offset,
        };
        let numbers = [
            (Label::Time, Some(time)),
            (
                Label::Value,
                match &value {
                    Some(Value::Number(n)) => Some(*n),
                    _ => None,
                },
            ),
            (Label::Sum, sum),
        ];
        for (label, n) in numbers {
            if n.is_some_and(|n| !n.is_finite()) {
                return Err(malformed(format!(
                    "senml record {index}: resolved {} is out of range",
                    label.json()
                )));
            }
        }

        self.estimated += RECORD_OVERHEAD
            + name.len()
            + unit.as_ref().map_or(0, String::len)
            + match &value {
                Some(Value::Text(text)) => text.len(),
                Some(Value::Data(data)) => data.len(),
                _ => 0,
            };
        if self.estimated > self.max_output {
            return Err(Refusal::TooLarge);
        }
        self.resolved.push(Resolved {
            name,
            unit,
            time,
            value,
            sum,
            update_time,
            version: self.version,
        });
        Ok(())
    }

    /// The resolved pack: one message, or with `split` one per record.
    pub(super) fn finish(mut self, split: bool) -> Result<Vec<Translated>, Refusal> {
        if self.records == 0 {
            return Err(malformed("senml: the pack has no records"));
        }
        if self.resolved.is_empty() {
            return Err(malformed("senml: no record has a value or a sum"));
        }
        self.resolved
            .sort_by(|a, b| a.time.to_f64().total_cmp(&b.time.to_f64()));
        if !split {
            let mut out = Out::new(self.max_output);
            out.raw(b"[")?;
            for (i, record) in self.resolved.iter().enumerate() {
                if i > 0 {
                    out.raw(b",")?;
                }
                write_record(&mut out, record)?;
            }
            out.raw(b"]")?;
            return Ok(vec![Translated {
                json: out.into_bytes(),
                senml_name: None,
            }]);
        }
        let mut room = self.max_output;
        let mut messages = Vec::with_capacity(self.resolved.len());
        for record in self.resolved {
            let mut out = Out::new(room);
            out.raw(b"[")?;
            write_record(&mut out, &record)?;
            out.raw(b"]")?;
            room -= out.len();
            messages.push(Translated {
                json: out.into_bytes(),
                senml_name: Some(record.name),
            });
        }
        Ok(messages)
    }
}

/// RFC 8428 §4.5.1.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.' | b'/' | b'_'))
}

fn write_record(out: &mut Out, record: &Resolved) -> Result<(), Refusal> {
    out.raw(b"{")?;
    label(out, Label::Name, true)?;
    out.string(&record.name)?;
    if let Some(unit) = &record.unit {
        label(out, Label::Unit, false)?;
        out.string(unit)?;
    }
    label(out, Label::Time, false)?;
    number(out, record.time)?;
    match &record.value {
        None => {}
        Some(Value::Number(n)) => {
            label(out, Label::Value, false)?;
            number(out, *n)?;
        }
        Some(Value::Text(text)) => {
            label(out, Label::StringValue, false)?;
            out.string(text)?;
        }
        Some(Value::Bool(b)) => {
            label(out, Label::BoolValue, false)?;
            out.raw(if *b { b"true" } else { b"false" })?;
        }
        Some(Value::Data(data)) => {
            label(out, Label::DataValue, false)?;
            out.string(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data))?;
        }
    }
    if let Some(sum) = record.sum {
        label(out, Label::Sum, false)?;
        number(out, sum)?;
    }
    if let Some(update_time) = record.update_time {
        label(out, Label::UpdateTime, false)?;
        number(out, update_time)?;
    }
    if record.version != VERSION {
        label(out, Label::BaseVersion, false)?;
        out.u64(record.version)?;
    }
    out.raw(b"}")
}

/// `"n":`, preceded by a comma unless it is the record's first member.
fn label(out: &mut Out, label: Label, first: bool) -> Result<(), Refusal> {
    if !first {
        out.raw(b",")?;
    }
    out.raw(b"\"")?;
    out.raw(label.json().as_bytes())?;
    out.raw(b"\":")
}

fn number(out: &mut Out, n: Num) -> Result<(), Refusal> {
    match n {
        Num::Int(n) => {
            if let Ok(n) = u64::try_from(n) {
                out.u64(n)
            } else if let Ok(n) = i64::try_from(n) {
                out.i64(n)
            } else {
                out.f64(n as f64)
            }
        }
        Num::Float(x) => out.f64(x),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_json, hex};
    use super::super::{to_json, Options, SENML_CBOR, SENML_JSON};
    use super::*;

    /// 2023-11-14T22:13:20Z, the "now" of every test.
    const NOW_MS: u64 = 1_700_000_000_000;

    fn options(split: bool) -> Options {
        Options {
            split,
            now_ms: NOW_MS,
            max_output: 1 << 20,
        }
    }

    fn resolve(format: u16, payload: &[u8]) -> Result<String, Refusal> {
        let mut messages = to_json(Some(format), payload, &options(false))?;
        assert_eq!(messages.len(), 1);
        let message = messages.pop().expect("one");
        assert_eq!(message.senml_name, None);
        Ok(String::from_utf8(message.json).expect("UTF-8"))
    }

    #[track_caller]
    fn resolves(input: &str, expected: &str) {
        let json =
            resolve(SENML_JSON, input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e:?}"));
        assert_same_json(&json, expected, input);
    }

    #[track_caller]
    fn refused(input: &str) -> String {
        match resolve(SENML_JSON, input.as_bytes()) {
            Err(Refusal::Malformed(diagnostic)) => diagnostic,
            other => panic!("{input}: expected Malformed, got {other:?}"),
        }
    }

    // RFC 8428 §5.1.1.
    #[test]
    fn a_single_data_point_gets_the_time_of_reception() {
        resolves(
            r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#,
            r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","t":1.7e+09,"v":23.1}]"#,
        );
    }

    // RFC 8428 §5.1.2, first example.
    #[test]
    fn the_base_name_is_prepended_to_each_name() {
        resolves(
            r#"[
              {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
              {"n":"current","u":"A","v":1.2}
            ]"#,
            r#"[
              {"n":"urn:dev:ow:10e2073a01080063:voltage","u":"V","t":1.7e+09,"v":120.1},
              {"n":"urn:dev:ow:10e2073a01080063:current","u":"A","t":1.7e+09,"v":1.2}
            ]"#,
        );
    }

    // RFC 8428 §5.1.2, second example: base time, base unit, version 5,
    // relative times counted back from the base time, then sorted by time.
    const SECTION_5_1_2_RESOLVED: &str = r#"[
      {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1276020071.001,"v":1.2,"bver":5},
      {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1276020072.001,"v":1.3,"bver":5},
      {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1276020073.001,"v":1.4,"bver":5},
      {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1276020074.001,"v":1.5,"bver":5},
      {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1276020075.001,"v":1.6,"bver":5},
      {"n":"urn:dev:ow:10e2073a0108006:voltage","u":"V","t":1276020076.001,"v":120.1,"bver":5},
      {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1276020076.001,"v":1.7,"bver":5}
    ]"#;

    #[test]
    fn base_time_unit_and_version_apply_to_later_records() {
        resolves(
            r#"[
              {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
               "bu":"A","bver":5,
               "n":"voltage","u":"V","v":120.1},
              {"n":"current","t":-5,"v":1.2},
              {"n":"current","t":-4,"v":1.3},
              {"n":"current","t":-3,"v":1.4},
              {"n":"current","t":-2,"v":1.5},
              {"n":"current","t":-1,"v":1.6},
              {"n":"current","v":1.7}
            ]"#,
            SECTION_5_1_2_RESOLVED,
        );
    }

    // RFC 8428 §6: the same pack in CBOR, as the RFC's hex dump.
    #[test]
    fn the_cbor_example_resolves_like_its_json_twin() {
        let cbor = hex("87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a
             31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a
             22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00
             67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06
             66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06
             24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75
             72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc
             cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f
             f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e
             74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e
             74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67
             63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33
             33 33 33");
        assert_eq!(cbor.len(), 0xc3);
        let json = resolve(SENML_CBOR, &cbor).expect("resolves");
        assert_same_json(&json, SECTION_5_1_2_RESOLVED, "RFC 8428 section 6");
    }

    // RFC 8428 §5.1.2, the SensML example without its closing "...".
    #[test]
    fn positive_times_are_added_to_an_absolute_base_time() {
        resolves(
            r#"[
              {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":21.2},
              {"t":10,"v":21.3},
              {"t":20,"v":21.4}
            ]"#,
            r#"[
              {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":21.2},
              {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067474e+09,"v":21.3},
              {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067484e+09,"v":21.4}
            ]"#,
        );
    }

    // RFC 8428 §5.1.3 resolves to §5.1.4, which the RFC prints.
    #[test]
    fn the_multiple_measurements_example_resolves_to_the_rfc_resolved_example() {
        resolves(
            r#"[
              {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
               "bu":"%RH","v":20},
              {"u":"lon","v":24.30621},
              {"u":"lat","v":60.07965},
              {"t":60,"v":20.3},
              {"u":"lon","t":60,"v":24.30622},
              {"u":"lat","t":60,"v":60.07965},
              {"t":120,"v":20.7},
              {"u":"lon","t":120,"v":24.30623},
              {"u":"lat","t":120,"v":60.07966},
              {"u":"%EL","t":150,"v":98},
              {"t":180,"v":21.2},
              {"u":"lon","t":180,"v":24.30628},
              {"u":"lat","t":180,"v":60.07967}
            ]"#,
            r#"[
              {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
               "v":20},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
               "v":24.30621},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
               "v":60.07965},
              {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
               "v":20.3},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
               "v":24.30622},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
               "v":60.07965},
              {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
               "v":20.7},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
               "v":24.30623},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
               "v":60.07966},
              {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
               "v":98},
              {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
               "v":21.2},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
               "v":24.30628},
              {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
               "v":60.07967}
            ]"#,
        );
    }

    // RFC 8428 §5.1.5.
    #[test]
    fn string_boolean_and_data_values_are_kept() {
        resolves(
            r#"[
              {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
              {"n":"label","vs":"Machine Room"},
              {"n":"open","vb":false},
              {"n":"nfv-reader","vd":"aGkgCg"}
            ]"#,
            r#"[
              {"n":"urn:dev:ow:10e2073a01080063:temp","u":"Cel","t":1.7e+09,"v":23.1},
              {"n":"urn:dev:ow:10e2073a01080063:label","t":1.7e+09,"vs":"Machine Room"},
              {"n":"urn:dev:ow:10e2073a01080063:open","t":1.7e+09,"vb":false},
              {"n":"urn:dev:ow:10e2073a01080063:nfv-reader","t":1.7e+09,"vd":"aGkgCg"}
            ]"#,
        );
    }

    // RFC 8428 §5.1.6: the last record has the third's base name and the
    // first's base time.
    #[test]
    fn each_base_field_lasts_until_replaced() {
        resolves(
            r#"[
              {"bn":"2001:db8::2/","bt":1.320078429e+09,
               "n":"temperature","u":"Cel","v":25.2},
              {"n":"humidity","u":"%RH","v":30},
              {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
              {"n":"humidity","u":"%RH","v":67}
            ]"#,
            r#"[
              {"n":"2001:db8::2/temperature","u":"Cel","t":1.320078429e+09,"v":25.2},
              {"n":"2001:db8::2/humidity","u":"%RH","t":1.320078429e+09,"v":30},
              {"n":"2001:db8::1/temperature","u":"Cel","t":1.320078429e+09,"v":12.3},
              {"n":"2001:db8::1/humidity","u":"%RH","t":1.320078429e+09,"v":67}
            ]"#,
        );
    }

    // RFC 8428 §5.1.7: a first record with only a base name.
    #[test]
    fn a_record_of_base_fields_only_resolves_to_nothing() {
        resolves(
            r#"[
              {"bn":"urn:dev:ow:10e2073a01080063:"},
              {"n":"temp","u":"Cel","v":23.1},
              {"n":"heat","u":"/","v":1},
              {"n":"fan","u":"/","v":0}
            ]"#,
            r#"[
              {"n":"urn:dev:ow:10e2073a01080063:temp","u":"Cel","t":1.7e+09,"v":23.1},
              {"n":"urn:dev:ow:10e2073a01080063:heat","u":"/","t":1.7e+09,"v":1},
              {"n":"urn:dev:ow:10e2073a01080063:fan","u":"/","t":1.7e+09,"v":0}
            ]"#,
        );
    }

    // RFC 8428 §5.1.7, the two lighting examples.
    #[test]
    fn actuation_examples_resolve_with_the_base_unit() {
        resolves(
            r#"[
              {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},
              {"n":"2001:db8::4","v":1}
            ]"#,
            r#"[
              {"n":"2001:db8::3","u":"/","t":1.320078429e+09,"v":1},
              {"n":"2001:db8::4","u":"/","t":1.320078429e+09,"v":1}
            ]"#,
        );
        resolves(
            r#"[
              {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
              {"n":"2001:db8::4","v":0.5},
              {"n":"2001:db8::3","t":0.1,"v":0},
              {"n":"2001:db8::4","t":0.1,"v":0}
            ]"#,
            r#"[
              {"n":"2001:db8::3","u":"/","t":1.320078429e+09,"v":0.5},
              {"n":"2001:db8::4","u":"/","t":1.320078429e+09,"v":0.5},
              {"n":"2001:db8::3","u":"/","t":1320078429.1,"v":0},
              {"n":"2001:db8::4","u":"/","t":1320078429.1,"v":0}
            ]"#,
        );
    }

    #[test]
    fn relative_times_count_from_now_including_a_relative_base_time() {
        resolves(
            r#"[{"bn":"d","bt":-60,"n":"a","t":-0.5,"v":1},{"n":"b","t":60,"v":2}]"#,
            r#"[{"n":"da","t":1699999939.5,"v":1},{"n":"db","t":1.7e+09,"v":2}]"#,
        );
        // 2^28 - 1 is still relative, 2^28 is absolute.
        resolves(
            r#"[{"n":"a","t":268435455,"v":1},{"n":"b","t":268435456,"v":2}]"#,
            r#"[{"n":"b","t":268435456,"v":2},{"n":"a","t":1968435455.0,"v":1}]"#,
        );
    }

    #[test]
    fn base_value_and_base_sum_are_added() {
        resolves(
            r#"[{"bn":"m","bv":100,"bs":1000,"v":1,"s":5},{"v":2.5},{"vs":"x"}]"#,
            r#"[
              {"n":"m","t":1.7e+09,"v":101,"s":1005},
              {"n":"m","t":1.7e+09,"v":102.5,"s":1000},
              {"n":"m","t":1.7e+09,"vs":"x","s":1000}
            ]"#,
        );
    }

    #[test]
    fn a_record_with_a_sum_needs_no_value_and_keeps_its_update_time() {
        resolves(
            r#"[{"n":"energy","u":"J","s":42.5,"ut":60,"t":1.6e+09}]"#,
            r#"[{"n":"energy","u":"J","t":1.6e+09,"s":42.5,"ut":60}]"#,
        );
    }

    #[test]
    fn records_are_sorted_by_resolved_time_keeping_ties_in_order() {
        resolves(
            r#"[{"n":"c","t":-1,"v":3},{"n":"a","t":-3,"v":1},{"n":"x","t":-1,"v":4},{"n":"b","t":-2,"v":2}]"#,
            r#"[
              {"n":"a","t":1699999997.0,"v":1},
              {"n":"b","t":1699999998.0,"v":2},
              {"n":"c","t":1699999999.0,"v":3},
              {"n":"x","t":1699999999.0,"v":4}
            ]"#,
        );
        // The comparison above ignores nothing of an array's order; the
        // bytes say it too.
        let json = resolve(
            SENML_JSON,
            br#"[{"n":"c","t":-1,"v":3},{"n":"a","t":-3,"v":1},{"n":"x","t":-1,"v":4}]"#,
        )
        .expect("resolves");
        let at = |name: &str| json.find(&format!("\"n\":\"{name}\"")).expect("present");
        assert!(at("a") < at("c") && at("c") < at("x"), "{json}");
    }

    #[test]
    fn output_members_come_in_a_fixed_order() {
        assert_eq!(
            resolve(
                SENML_JSON,
                br#"[{"bver":3,"ut":5,"s":1,"v":2,"t":1600000000,"u":"W","n":"p","bn":"x"}]"#
            )
            .as_deref(),
            Ok(r#"[{"n":"xp","u":"W","t":1600000000,"v":2,"s":1,"ut":5,"bver":3}]"#)
        );
    }

    #[test]
    fn unknown_labels_are_ignored_and_mandatory_ones_refused() {
        resolves(
            r#"[{"n":"a","v":1,"foo":{"deep":[1,2]},"bfoo":"x"}]"#,
            r#"[{"n":"a","t":1.7e+09,"v":1}]"#,
        );
        assert_eq!(
            refused(r#"[{"n":"a","v":1,"foo_":1}]"#),
            "senml record 1: a label ending in _ is not understood"
        );
    }

    #[test]
    fn wrong_types_are_refused_with_the_label() {
        for (input, label) in [
            (r#"[{"n":5,"v":1}]"#, "n must be a string"),
            (r#"[{"n":"a","v":"1"}]"#, "v must be a finite number"),
            (r#"[{"n":"a","vb":1}]"#, "vb must be a boolean"),
            (r#"[{"n":"a","vs":true}]"#, "vs must be a string"),
            (
                r#"[{"n":"a","vd":"not base64!"}]"#,
                "vd must be binary data",
            ),
            (r#"[{"n":"a","vd":7}]"#, "vd must be binary data"),
            (
                r#"[{"n":"a","v":1,"t":"now"}]"#,
                "t must be a finite number",
            ),
            (r#"[{"bn":["a"],"n":"a","v":1}]"#, "bn must be a string"),
            (r#"[{"n":"a","v":1,"u":null}]"#, "u must be a string"),
            (
                r#"[{"bver":-1,"n":"a","v":1}]"#,
                "bver must be a positive integer",
            ),
            (
                r#"[{"bver":0,"n":"a","v":1}]"#,
                "bver must be a positive integer",
            ),
            (
                r#"[{"bver":5.0,"n":"a","v":1}]"#,
                "bver must be a positive integer",
            ),
        ] {
            let diagnostic = refused(input);
            assert_eq!(diagnostic, format!("senml record 1: {label}"), "{input}");
        }
    }

    #[test]
    fn invalid_names_are_refused() {
        for input in [
            r#"[{"n":"a b","v":1}]"#,
            r#"[{"n":"-a","v":1}]"#,
            r#"[{"n":"_a","v":1}]"#,
            r#"[{"n":"temp\u00b0","v":1}]"#,
            r#"[{"n":"a+b","v":1}]"#,
            r#"[{"n":"a#","v":1}]"#,
            r#"[{"v":1}]"#,
            r#"[{"bn":"","n":"","v":1}]"#,
            r#"[{"bn":":","n":"a","v":1}]"#,
        ] {
            let diagnostic = refused(input);
            assert!(diagnostic.contains("name"), "{input}: {diagnostic}");
        }
    }

    #[test]
    fn records_need_exactly_one_value_or_a_sum() {
        assert_eq!(
            refused(r#"[{"n":"a"}]"#),
            "senml record 1: no value and no sum"
        );
        assert_eq!(
            refused(r#"[{"n":"a","v":1},{"n":"b","t":-1}]"#),
            "senml record 2: no value and no sum"
        );
        assert_eq!(
            refused(r#"[{"n":"a","v":1,"vs":"1"}]"#),
            "senml record 1: more than one of v, vs, vb, vd"
        );
        assert_eq!(refused("[]"), "senml: the pack has no records");
        assert_eq!(
            refused(r#"[{"bn":"a"},{"bu":"W"}]"#),
            "senml: no record has a value or a sum"
        );
    }

    #[test]
    fn a_label_twice_in_a_record_is_refused() {
        assert_eq!(
            refused(r#"[{"n":"a","v":1,"v":2}]"#),
            "senml record 1: label v twice"
        );
    }

    #[test]
    fn versions_must_agree_and_not_exceed_10() {
        assert_eq!(
            refused(r#"[{"n":"a","v":1,"bver":11}]"#),
            "senml record 1: version 11 is newer than 10"
        );
        // The first record is version 10 by default.
        assert_eq!(
            refused(r#"[{"n":"a","v":1},{"bver":5,"n":"b","v":2}]"#),
            "senml record 2: version 5 but the pack is 10"
        );
        resolves(
            r#"[{"bver":10,"n":"a","v":1},{"n":"b","v":2}]"#,
            r#"[{"n":"a","t":1.7e+09,"v":1},{"n":"b","t":1.7e+09,"v":2}]"#,
        );
    }

    #[test]
    fn resolved_numbers_must_stay_finite() {
        assert_eq!(
            refused(r#"[{"bt":1e308,"n":"a","t":1e308,"v":1}]"#),
            "senml record 1: resolved t is out of range"
        );
        assert_eq!(
            refused(r#"[{"bv":1e308,"n":"a","v":1e308}]"#),
            "senml record 1: resolved v is out of range"
        );
    }

    #[test]
    fn split_gives_one_pack_per_record_with_its_name() {
        let messages = to_json(
            Some(SENML_JSON),
            br#"[{"bn":"dev1/","n":"temp","u":"Cel","v":23.1,"t":-10},{"n":"hum","u":"%RH","v":40}]"#,
            &options(true),
        )
        .expect("resolves");
        let names: Vec<Option<&str>> = messages.iter().map(|m| m.senml_name.as_deref()).collect();
        assert_eq!(names, [Some("dev1/temp"), Some("dev1/hum")]);
        assert_same_json(
            std::str::from_utf8(&messages[0].json).expect("UTF-8"),
            r#"[{"n":"dev1/temp","u":"Cel","t":1699999990.0,"v":23.1}]"#,
            "first",
        );
        assert_same_json(
            std::str::from_utf8(&messages[1].json).expect("UTF-8"),
            r#"[{"n":"dev1/hum","u":"%RH","t":1.7e+09,"v":40}]"#,
            "second",
        );
    }

    #[test]
    fn split_messages_follow_the_chronological_order() {
        let messages = to_json(
            Some(SENML_CBOR),
            // [{0: "b", 6: -1, 2: 1}, {0: "a", 6: -2, 2: 2}]
            &hex("82 a3 00 6162 06 20 02 01 a3 00 6161 06 21 02 02"),
            &options(true),
        )
        .expect("resolves");
        let names: Vec<&str> = messages
            .iter()
            .filter_map(|m| m.senml_name.as_deref())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_base_name_repeated_past_the_budget_is_too_large() {
        // 2,000 records, each a few bytes, each resolving to a 1,000-byte name.
        let mut pack = format!(r#"[{{"bn":"{}","v":0}}"#, "a".repeat(1000));
        for _ in 0..2000 {
            pack.push_str(r#",{"v":1}"#);
        }
        pack.push(']');
        let options = Options {
            split: false,
            now_ms: NOW_MS,
            max_output: 100_000,
        };
        assert_eq!(
            to_json(Some(SENML_JSON), pack.as_bytes(), &options),
            Err(Refusal::TooLarge)
        );
        let split = Options {
            split: true,
            ..options
        };
        assert_eq!(
            to_json(Some(SENML_JSON), pack.as_bytes(), &split),
            Err(Refusal::TooLarge)
        );
    }
}
