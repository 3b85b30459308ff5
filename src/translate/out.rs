//! The bounded JSON writer every translation writes through.
//!
//! Translation can make a payload much larger than it came: a one-byte CBOR
//! `false` used as a map key becomes `"false":`, a control character in a
//! text becomes `\u0000`, and a SenML base name is repeated in every
//! resolved record. A key that is itself a map whose keys are maps is
//! escaped once per level, which doubles its backslashes each time. So
//! nothing is written except through [`Out`], which refuses
//! ([`Refusal::TooLarge`]) as soon as the output passes its budget: memory
//! stays within the budget (plus one escaped string) whatever the input.
//!
//! Scalars are formatted by serde_json (strings escaped as RFC 8259 asks,
//! floats in their shortest round-trip form, non-finite floats as `null`).

use super::Refusal;

pub(super) struct Out {
    buf: Vec<u8>,
    max: usize,
}

impl Out {
    /// A writer that refuses to hold more than `max` bytes.
    pub(super) fn new(max: usize) -> Out {
        Out {
            buf: Vec::new(),
            max,
        }
    }

    /// The bytes written so far.
    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes this writer takes.
    pub(super) fn room(&self) -> usize {
        self.max - self.buf.len()
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Appends bytes that are already JSON (punctuation, a rendered key).
    pub(super) fn raw(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        if bytes.len() > self.room() {
            return Err(Refusal::TooLarge);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// A JSON string literal, escaped.
    pub(super) fn string(&mut self, text: &str) -> Result<(), Refusal> {
        // The literal is at least the text and two quotes: refuse early
        // what cannot fit, before escaping anything.
        if text.len().saturating_add(2) > self.room() {
            return Err(Refusal::TooLarge);
        }
        self.serialize(text)
    }

    pub(super) fn u64(&mut self, n: u64) -> Result<(), Refusal> {
        self.serialize(&n)
    }

    pub(super) fn i64(&mut self, n: i64) -> Result<(), Refusal> {
        self.serialize(&n)
    }

    /// A float in its shortest round-trip form; NaN and the infinities,
    /// which JSON cannot carry, become `null`.
    pub(super) fn f64(&mut self, x: f64) -> Result<(), Refusal> {
        self.serialize(&x)
    }

    fn serialize<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Refusal> {
        let start = self.buf.len();
        // Writing into a Vec cannot fail, and strings, integers and floats
        // always serialize.
        if serde_json::to_writer(&mut self.buf, value).is_err() || self.buf.len() > self.max {
            self.buf.truncate(start);
            return Err(Refusal::TooLarge);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_up_to_the_budget_and_refuses_past_it() {
        let mut out = Out::new(6);
        out.raw(b"[").expect("fits");
        out.u64(1234).expect("fits");
        assert_eq!(out.raw(b",5]"), Err(Refusal::TooLarge));
        out.raw(b"]").expect("fits");
        assert_eq!(out.bytes(), b"[1234]");
    }

    #[test]
    fn a_string_whose_escapes_pass_the_budget_is_refused_and_not_kept() {
        let mut out = Out::new(10);
        // Three NULs fit as text but take 6 bytes each escaped.
        assert_eq!(out.string("\0\0\0"), Err(Refusal::TooLarge));
        assert_eq!(out.len(), 0);
        out.string("ok").expect("fits");
        assert_eq!(out.bytes(), b"\"ok\"");
    }

    #[test]
    fn non_finite_floats_are_null() {
        let mut out = Out::new(100);
        out.f64(f64::NAN).expect("fits");
        out.raw(b",").expect("fits");
        out.f64(f64::NEG_INFINITY).expect("fits");
        assert_eq!(out.bytes(), b"null,null");
    }
}
